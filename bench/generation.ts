/**
 * `node --import tsx bench/generation.ts [--tokens N] [--runs R] [--json FILE]`: tokens/s of steered greedy
 * generation with the KV cache (prompt once, then one token per forward) vs without it (the whole sequence every
 * step), on the demo model (models/demo, when present) and on the GPT-2-small-shaped random checkpoint that
 * bench/bench.ts generates into bench/.cache (generated here if missing). Medians over R runs after one warm-up.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeRandomGpt2 } from '../src/engine/checkpoint/random';
import { Model } from '../src/engine/model';
import type { SteeringSpec } from '../src/engine/results';
import { silenceOrt } from '../src/engine/runtime/session';
import { generate } from '../src/engine/steering/steer';
import { gpt2TokenizerJSON } from '../tools/gpt2-tokenizer';

const SHAPE = { nLayers: 12, dModel: 768, nHeads: 12, dMlp: 3072, nCtx: 1024, vocabSize: 50257 };
const cacheRoot = path.join(__dirname, '.cache');
const randomDir = path.join(cacheRoot, 'gpt2-small-random');
const demoDir = path.join(__dirname, '..', 'models', 'demo');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function benchModel(label: string, dir: string, prompt: string, tokens: number, runs: number) {
  const model = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(cacheRoot, 'onnx') });
  try {
    const D = model.config.dModel;
    const spec: SteeringSpec = {
      vector: Float32Array.from({ length: D }, (_, i) => Math.sin(i * 0.37)),
      layer: Math.floor(model.config.nLayers / 2),
      point: 'hook_resid_pre',
      strength: 0.5,
      relative: true,
      positions: { kind: 'all' },
    };
    const ids = model.tokenizer.encode(prompt).ids;
    const settings = { maxNewTokens: tokens, temperature: 0, topP: 1, seed: 0 };
    const rows = [];
    let same = true;
    let reference: number[] | undefined;
    for (const useCache of [true, false]) {
      await generate(model, ids, { ...settings, maxNewTokens: 4 }, spec, { useCache }); // warm-up
      const tps: number[] = [];
      let n = 0;
      for (let r = 0; r < runs; r++) {
        const g = await generate(model, ids, settings, spec, { useCache });
        n = g.ids.length;
        tps.push(g.ids.length / (g.ms / 1000));
        if (reference === undefined) reference = g.ids;
        else if (g.ids.join() !== reference.join()) same = false;
      }
      rows.push({ model: label, cache: useCache, prompt_tokens: ids.length, new_tokens: n, median_tokens_per_s: median(tps), min: Math.min(...tps), max: Math.max(...tps), runs });
    }
    const speedup = rows[0].median_tokens_per_s / rows[1].median_tokens_per_s;
    for (const r of rows) {
      console.log(
        `${r.model.padEnd(22)} ${r.cache ? 'KV cache ' : 'no cache '} prompt ${String(r.prompt_tokens).padStart(3)} + ${r.new_tokens} tokens: median ${r.median_tokens_per_s.toFixed(1).padStart(7)} tok/s (min ${r.min.toFixed(1)}, max ${r.max.toFixed(1)})`,
      );
    }
    console.log(`${label.padEnd(22)} speed-up ${speedup.toFixed(2)}×; cached and uncached tokens identical: ${same}`);
    return { rows, speedup, identical: same, provider: model.provider };
  } finally {
    await model.dispose();
  }
}

async function main(): Promise<void> {
  silenceOrt();
  const tokens = Number(arg('--tokens', '64'));
  const runs = Number(arg('--runs', '5'));
  const prompt = 'def parse_args(argv):\n    """Parse the command line and return the options."""\n    parser = argparse.ArgumentParser(description=__doc__)\n';
  const results = [];
  if (fs.existsSync(path.join(demoDir, 'model.safetensors'))) results.push(await benchModel('demo (4L, d256)', demoDir, prompt, tokens, runs));
  else console.log('models/demo is missing; skipping it');
  if (!fs.existsSync(path.join(randomDir, 'model.safetensors'))) {
    console.error('generating the GPT-2-small-shaped random checkpoint (once)…');
    writeRandomGpt2(randomDir, SHAPE, { seed: 1, tokenizerJson: gpt2TokenizerJSON() });
  }
  results.push(await benchModel('gpt2-small random', randomDir, prompt, tokens, runs));
  const out = arg('--json', '');
  if (out) fs.writeFileSync(out, JSON.stringify({ name: 'generation', tokens, runs, results, date: new Date().toISOString() }, null, 1));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
