/**
 * Attribution-graph benchmark: the GPT-2-small-shaped random checkpoint of bench/bench.ts (12 layers, d_model 768,
 * generated once into bench/.cache) with 12 random TopK transcoders (k = 32, width 24576, SAELens layout, also
 * generated once) on a 32-token prompt. Times the real forward + feature encoders, the graph (backward propagation
 * through the frozen attention), pruning, and JSON export; median of `--runs` (default 3) after one warm-up.
 * `--max-feature-nodes N|all`: feature rows to compute (default: the Attributor's default, DEFAULT_MAX_FEATURE_NODES;
 * `all` = the full graph). `--tokens P`: prompt length. `--json FILE` writes the figures (default
 * bench/results/attribution.json).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeRandomGpt2 } from '../src/engine/checkpoint/random';
import { Attributor } from '../src/engine/circuits/attribution';
import { toGraphJson } from '../src/engine/circuits/graph-json';
import { pruneGraph } from '../src/engine/circuits/prune';
import { loadTranscoders } from '../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeSaeLensTranscoders } from '../src/engine/circuits/transcoders-write';
import { Model } from '../src/engine/model';
import { silenceOrt } from '../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../tools/gpt2-tokenizer';

const SHAPE = { nLayers: 12, dModel: 768, nHeads: 12, dMlp: 3072, nCtx: 1024, vocabSize: 50257 };
const WIDTH = 24576;
const K = 32;
const root = path.join(__dirname, '.cache');
const modelDir = path.join(root, 'gpt2-small-random');
const tcDir = path.join(root, `transcoders-topk${K}-${WIDTH}`);

function ensureFixtures(): void {
  if (!fs.existsSync(path.join(modelDir, 'model.safetensors'))) {
    console.error('generating the GPT-2-small-shaped random checkpoint (once)…');
    writeRandomGpt2(modelDir, SHAPE, { seed: 1, tokenizerJson: gpt2TokenizerJSON() });
  }
  for (let l = 0; l < SHAPE.nLayers; l++) {
    if (fs.existsSync(path.join(tcDir, `layer_${l}`, 'sae_weights.safetensors'))) continue;
    console.error(`generating random transcoder ${l} (width ${WIDTH}, once)…`);
    const [w] = randomTranscoderWeights(1, SHAPE.dModel, WIDTH, { seed: 100 + l });
    writeSaeLensTranscoders(tcDir, [w], { activation: 'topk', k: K, firstLayer: l });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 3;
  const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : path.join(__dirname, 'results', 'attribution.json');
  const P = args.includes('--tokens') ? Number(args[args.indexOf('--tokens') + 1]) : 32;
  // `--max-feature-nodes all` computes every feature's row (the full graph); without the flag, the default applies.
  const mfnArg = args.includes('--max-feature-nodes') ? args[args.indexOf('--max-feature-nodes') + 1] : undefined;
  const maxFeatureNodes = mfnArg === undefined ? undefined : mfnArg === 'all' ? Infinity : Number(mfnArg);
  ensureFixtures();
  silenceOrt();
  const model = await Model.load(modelDir, { providers: ['cpu'], cacheDir: path.join(root, 'onnx') });
  const set = loadTranscoders(tcDir, model.config);
  const attributor = new Attributor(model, set, { cacheDir: path.join(root, 'onnx') });
  const ids = Array.from({ length: P }, (_, i) => (i * 7919 + 11) % SHAPE.vocabSize);
  const tSetup = performance.now();
  await attributor.prepare();
  await attributor.attribute(ids.slice(0, 4)); // warm-up: creates every session
  const setupS = (performance.now() - tSetup) / 1000;
  const rows: Record<string, number>[] = [];
  let last;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    const g = await attributor.attribute(ids, { maxFeatureNodes });
    const t1 = performance.now();
    const pr = pruneGraph(g);
    const t2 = performance.now();
    const json = JSON.stringify(toGraphJson(g, pr, { slug: 'bench', scan: 'bench', promptTokens: ids.map(String), prompt: '', tokenText: String, nodeThreshold: 0.8, edgeThreshold: 0.98 }));
    const t3 = performance.now();
    rows.push({ ...Object.fromEntries(Object.entries(g.timings_ms).map(([k, v]) => [`graph_${k}_s`, v / 1000])), graph_s: (t1 - t0) / 1000, prune_s: (t2 - t1) / 1000, export_s: (t3 - t2) / 1000, total_s: (t3 - t0) / 1000 });
    last = { nFeatures: g.nFeatures, N: g.N, logits: g.logitIds.length, json_bytes: json.length };
    console.error(`run ${r + 1}: ${JSON.stringify(rows[r])}`);
  }
  await attributor.dispose();
  await model.dispose();
  const med = Object.fromEntries(Object.keys(rows[0]).map((k) => [k, median(rows.map((x) => x[k]))]));
  const result = {
    name: 'attribution_graph',
    model: SHAPE,
    transcoders: { width: WIDTH, activation: `topk k=${K}`, layers: SHAPE.nLayers },
    tokens: P,
    max_feature_nodes: maxFeatureNodes === undefined ? 'default' : Number.isFinite(maxFeatureNodes) ? maxFeatureNodes : 'all',
    threads: os.cpus().length,
    provider: model.provider,
    setup_s: setupS,
    median_s: med.total_s,
    median: med,
    runs: rows,
    graph: last,
    rss_peak_mb: process.resourceUsage().maxRSS / 1024,
    date: new Date().toISOString(),
  };
  fs.mkdirSync(path.dirname(jsonOut), { recursive: true });
  fs.writeFileSync(jsonOut, JSON.stringify(result, null, 1));
  console.log(JSON.stringify({ median: med, graph: last, setup_s: setupS, rss_peak_mb: result.rss_peak_mb }, null, 1));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
