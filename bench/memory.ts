/**
 * `npm run bench:memory`: peak resident memory of loading a model and running one all-hooks forward, in a fresh
 * process per (model, precision), against memory.ts's estimate. Models: the GPT-2-small-shaped random checkpoint
 * of bench.ts (F32) and a Llama-shaped one (BF16, grouped-query attention, untied). Prints a table; the factors in
 * memory.ts come from these runs.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../src/engine/checkpoint/load';
import { writeRandomFamily, writeRandomGpt2 } from '../src/engine/checkpoint/random';
import { estimateMemory } from '../src/engine/memory';
import { Model } from '../src/engine/model';
import type { WeightPrecision } from '../src/engine/onnx/ops';
import { silenceOrt } from '../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../tools/gpt2-tokenizer';

const root = path.join(__dirname, '.cache');
const MODELS: Record<string, () => void> = {
  'gpt2-small-random': () => writeRandomGpt2(path.join(root, 'gpt2-small-random'), { nLayers: 12, dModel: 768, nHeads: 12, dMlp: 3072, nCtx: 1024, vocabSize: 50257 }, { seed: 1, tokenizerJson: gpt2TokenizerJSON() }),
  'llama-400m-random': () =>
    writeRandomFamily(
      path.join(root, 'llama-400m-random'),
      'llama',
      { num_hidden_layers: 12, hidden_size: 1024, num_attention_heads: 16, num_key_value_heads: 4, intermediate_size: 4096, max_position_embeddings: 2048, vocab_size: 50257, tie_word_embeddings: false },
      { seed: 2, tokenizerJson: gpt2TokenizerJSON(), dtype: 'BF16' },
    ),
};

async function child(name: string, precision: WeightPrecision): Promise<void> {
  silenceOrt();
  const dir = path.join(root, name);
  const model = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'onnx'), precision });
  const ids = Array.from({ length: 128 }, (_, i) => (i * 37) % 50000);
  await model.run({ ids, hooks: [...model.hooks] });
  const est = estimateMemory(openCheckpoint(dir), { tokens: 128 });
  process.stdout.write(JSON.stringify({ params: est.params, estimate: est.cpuBytes }) + '\n');
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child(process.argv[3], process.argv[4] as WeightPrecision);
  const rows: string[] = ['| model | precision | parameters | peak RSS | estimate | bytes/param (RSS − 0.3 GB) |', '|---|---|---:|---:|---:|---:|'];
  for (const [name, make] of Object.entries(MODELS)) {
    if (!fs.existsSync(path.join(root, name, 'config.json'))) {
      console.error(`generating ${name} (once)…`);
      make();
    }
    for (const precision of ['float32', 'float16'] as const) {
      // Peak RSS from GNU time (what the kernel saw), not from inside the process.
      const res = spawnSync('/usr/bin/time', ['-f', 'RSS %M', process.execPath, '--import', 'tsx', __filename, '--child', name, precision], { encoding: 'utf8' });
      const rssKb = Number(/RSS (\d+)/.exec(res.stderr)?.[1]);
      if (res.status !== 0 || !rssKb) throw new Error(`child failed: ${res.stderr.slice(-500)}`);
      const r = JSON.parse(res.stdout.trim().split('\n').pop()!);
      const rss = rssKb * 1024;
      rows.push(`| ${name} | ${precision} | ${(r.params / 1e6).toFixed(0)}M | ${(rss / 1e9).toFixed(2)} GB | ${(r.estimate / 1e9).toFixed(2)} GB | ${((rss - 0.3e9) / r.params).toFixed(2)} |`);
    }
  }
  console.log(rows.join('\n'));
}

void main();
