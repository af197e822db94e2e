/**
 * `npm run bench:circuits`: attribution graphs at research scale, on random checkpoints and transcoders of published
 * shapes (generated once into bench/.cache, streamed: a few MB of memory whatever the size):
 *   a  GPT-2 small (bench.ts's checkpoint, F32) + 12 SAELens transcoders × 24,576, TopK k = 64, F32; 32/128/256 tokens
 *   b  Llama-3.2-1B shape (BF16, tied, GQA 32/8, llama3 rope) + 16 circuit-tracer transcoders × 16,384 reading
 *      mlp.hook_in, TopK k = 64, BF16; 64 tokens
 *   c  Gemma-2-2B shape (BF16, 3 shards, soft-caps, sliding window) + 26 SAELens transcoders × 16,384 reading
 *      ln2.hook_normalized (Gemma Scope's shape; TopK k = 64 for a controlled 64 active features per token and
 *      layer where Gemma Scope uses JumpReLU), BF16; 64 tokens
 *   d  GPT-2 small (as a) + a cross-layer transcoder, circuit-tracer's CLT layout, 12 layers × 8,192, TopK k = 64,
 *      F32 (layer l's features write layers l..11: 78 decoder blocks); 32 tokens
 * Weights are N(0, 0.02) (norm gains N(1, 0.1)) from the 'table' sampler (random.ts); the tokenizer is GPT-2's
 * (ids are fed directly, modulo the vocabulary).
 *
 * Each (case, length) runs in its own process: load (float16 weights for b and c), the Attributor's estimate (before
 * its sessions exist), its sessions (a: plus a 4-token warm-up), then `--runs` graphs (default 1, so the figures are
 * medians of one run): attribute, prune, JSON export. Peak RSS is measured for the load and, after resetting the
 * kernel's high-water mark (Linux), for the graph runs; the graph peak is what the estimate (which includes the memory
 * already in use) is compared with, and the graph's wall time (attribute + prune + export) is compared with the
 * estimate's seconds. A process that crashes or is killed (out of memory) is reported as failed with its last lines.
 *
 *   node --import tsx bench/circuits.ts [--case a|b|c|d[,…]]… [--tokens P[,…]] [--runs N] [--precision float32|float16]
 *                                       [--json FILE] [--generate-only]
 * JSON: bench/results/circuits.json unless --json.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FamilyModelType } from '../src/engine/checkpoint/families';
import { writeRandomFamily, writeRandomGpt2, type RandomFamilyShape } from '../src/engine/checkpoint/random';
import { Attributor } from '../src/engine/circuits/attribution';
import { toGraphJson } from '../src/engine/circuits/graph-json';
import { pruneGraph } from '../src/engine/circuits/prune';
import { loadTranscoders } from '../src/engine/circuits/transcoders';
import { writeRandomTranscoders, type RandomTranscoderSetOptions } from '../src/engine/circuits/transcoders-write';
import { Model } from '../src/engine/model';
import type { WeightPrecision } from '../src/engine/onnx/ops';
import { silenceOrt } from '../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../tools/gpt2-tokenizer';

const root = path.join(__dirname, '.cache');
const onnxCache = path.join(root, 'onnx');
const PROGRESS_EVERY_MS = 10_000;
const K = 64;

type CaseId = 'a' | 'b' | 'c' | 'd';

interface BenchCase {
  id: CaseId;
  name: string;
  modelDir: string;
  transcoderDir: string;
  vocabSize: number;
  tokens: number[];
  precision: WeightPrecision;
  /** One 4-token graph before the timed runs (every session created); too slow for the large shapes. */
  warmUp: boolean;
  nLayers: number;
  dModel: number;
  dSae: number;
  transcoders: Omit<RandomTranscoderSetOptions, 'progress'>;
  writeModel(progress: (message: string, fraction: number) => void): void;
}

const GPT2_SMALL = { nLayers: 12, dModel: 768, nHeads: 12, dMlp: 3072, nCtx: 1024, vocabSize: 50257 };

/** Llama-3.2-1B's config.json, less the token ids and training-only keys. */
const LLAMA_3_2_1B: RandomFamilyShape = {
  num_hidden_layers: 16,
  hidden_size: 2048,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  vocab_size: 128256,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  rope_scaling: { factor: 32, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  tie_word_embeddings: true,
  attention_bias: false,
  mlp_bias: false,
};

/** Gemma-2-2B's config.json, less the token ids and training-only keys. */
const GEMMA_2_2B: RandomFamilyShape = {
  num_hidden_layers: 26,
  hidden_size: 2304,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  intermediate_size: 9216,
  max_position_embeddings: 8192,
  vocab_size: 256000,
  hidden_activation: 'gelu_pytorch_tanh',
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  query_pre_attn_scalar: 256,
  attn_logit_softcapping: 50,
  final_logit_softcapping: 30,
  sliding_window: 4096,
  tie_word_embeddings: true,
  attention_bias: false,
};

function familyCase(id: CaseId, name: string, type: FamilyModelType, shape: RandomFamilyShape, seed: number, shards: number, transcoders: BenchCase['transcoders']): BenchCase {
  const modelDir = path.join(root, `${name}-random-bf16`);
  return {
    id,
    name,
    modelDir,
    transcoderDir: path.join(root, `transcoders-${name}-topk${K}-16384-bf16`),
    vocabSize: shape.vocab_size,
    tokens: [64],
    precision: 'float16',
    warmUp: false,
    nLayers: shape.num_hidden_layers,
    dModel: shape.hidden_size,
    dSae: 16384,
    transcoders,
    writeModel: (progress) => writeRandomFamily(modelDir, type, shape, { seed, dtype: 'BF16', shards, sampler: 'table', tokenizerJson: gpt2TokenizerJSON(), progress }),
  };
}

const CASES: Record<CaseId, BenchCase> = {
  a: {
    id: 'a',
    name: 'gpt2-small',
    modelDir: path.join(root, 'gpt2-small-random'),
    transcoderDir: path.join(root, `transcoders-gpt2-small-topk${K}-24576`),
    vocabSize: GPT2_SMALL.vocabSize,
    tokens: [32, 128, 256],
    precision: 'float32',
    warmUp: true,
    nLayers: 12,
    dModel: 768,
    dSae: 24576,
    transcoders: { layout: 'saelens', activation: 'topk', k: K, seed: 100, sampler: 'table' },
    // Exactly bench.ts's checkpoint, so either script can reuse the other's.
    writeModel: (progress) => writeRandomGpt2(path.join(root, 'gpt2-small-random'), GPT2_SMALL, { seed: 1, tokenizerJson: gpt2TokenizerJSON(), progress }),
  },
  b: familyCase('b', 'llama-3.2-1b', 'llama', LLAMA_3_2_1B, 3, 1, { layout: 'circuit-tracer', activation: 'topk', k: K, input: 'mlp.hook_in', dtype: 'BF16', seed: 200, sampler: 'table' }),
  c: familyCase('c', 'gemma-2-2b', 'gemma2', GEMMA_2_2B, 4, 3, { layout: 'saelens', activation: 'topk', k: K, input: 'ln2.hook_normalized', dtype: 'BF16', seed: 300, sampler: 'table' }),
  d: {
    id: 'd',
    name: 'gpt2-small-clt',
    modelDir: path.join(root, 'gpt2-small-random'),
    transcoderDir: path.join(root, `clt-gpt2-small-topk${K}-8192`),
    vocabSize: GPT2_SMALL.vocabSize,
    tokens: [32],
    precision: 'float32',
    warmUp: true,
    nLayers: 12,
    dModel: 768,
    dSae: 8192,
    transcoders: { layout: 'cross-layer', activation: 'topk', k: K, seed: 400, sampler: 'table' },
    writeModel: (progress) => writeRandomGpt2(path.join(root, 'gpt2-small-random'), GPT2_SMALL, { seed: 1, tokenizerJson: gpt2TokenizerJSON(), progress }),
  },
};

/** Progress lines at most every PROGRESS_EVERY_MS (and the first one at once). */
function throttled(prefix: string): (message: string, fraction: number) => void {
  const t0 = performance.now();
  let last = -Infinity;
  return (message, fraction) => {
    const now = performance.now();
    if (now - last < PROGRESS_EVERY_MS) return;
    last = now;
    console.error(`${prefix} ${((now - t0) / 1000).toFixed(0)} s · ${(100 * fraction).toFixed(0)}% · ${message}`);
  };
}

function diskBytes(p: string): number {
  if (!fs.existsSync(p)) return 0;
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.size;
  return fs.readdirSync(p).reduce((s, name) => s + diskBytes(path.join(p, name)), 0);
}

const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;

/** Generates what is missing. The last file each writer renames into place marks a finished fixture. */
function ensureFixtures(c: BenchCase): void {
  const modelDone = ['model.safetensors', 'model.safetensors.index.json'].some((f) => fs.existsSync(path.join(c.modelDir, f)));
  if (!modelDone) {
    console.error(`[${c.id}] generating the ${c.name} random checkpoint (once) into ${path.relative(process.cwd(), c.modelDir)}…`);
    const t0 = performance.now();
    c.writeModel(throttled(`[${c.id}] model`));
    console.error(`[${c.id}] checkpoint written in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${gb(diskBytes(c.modelDir))}`);
  }
  const lastLayer = c.nLayers - 1;
  const last =
    c.transcoders.layout === 'saelens'
      ? path.join(c.transcoderDir, `layer_${lastLayer}`, 'sae_weights.safetensors')
      : c.transcoders.layout === 'cross-layer'
        ? path.join(c.transcoderDir, `W_dec_${lastLayer}.safetensors`)
        : path.join(c.transcoderDir, `layer_${lastLayer}.safetensors`);
  if (!fs.existsSync(last)) {
    console.error(`[${c.id}] generating ${c.nLayers} random transcoders × ${c.dSae} (once) into ${path.relative(process.cwd(), c.transcoderDir)}…`);
    const t0 = performance.now();
    writeRandomTranscoders(c.transcoderDir, c.nLayers, c.dModel, c.dSae, { ...c.transcoders, progress: throttled(`[${c.id}] transcoders`) });
    console.error(`[${c.id}] transcoders written in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${gb(diskBytes(c.transcoderDir))}`);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Peak resident MB since the process started or since the last `resetPeakRss`. */
const peakRssMb = () => process.resourceUsage().maxRSS / 1024;

/** Resets the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0); false where that is not possible. */
function resetPeakRss(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** What Attributor.estimate returns. */
interface EstimateLike {
  seconds: number;
  peakBytes: number;
  activeFeatures: number;
  featureRows: number;
  parts: { name: string; seconds: number; bytes: number }[];
}

interface ChildSpec {
  id: CaseId;
  tokens: number;
  runs: number;
  precision: WeightPrecision;
}

/** One (case, length) in this process; prints its result as the last line of stdout. */
async function child(spec: ChildSpec): Promise<void> {
  const c = CASES[spec.id];
  const tag = `[${c.id}·${spec.tokens}]`;
  silenceOrt();
  const t0 = performance.now();
  console.error(`${tag} loading ${c.name} (${spec.precision})…`);
  const model = await Model.load(c.modelDir, { providers: ['cpu'], cacheDir: onnxCache, precision: spec.precision });
  const loadS = (performance.now() - t0) / 1000;
  const rssAfterLoad = process.memoryUsage().rss / 1048576;
  console.error(`${tag} loaded in ${loadS.toFixed(1)} s, RSS ${rssAfterLoad.toFixed(0)} MB`);
  const t1 = performance.now();
  const set = loadTranscoders(c.transcoderDir, model.config);
  const attributor = new Attributor(model, set, { cacheDir: onnxCache });
  // Before prepare(): the estimate then counts the backward sessions it has yet to create, as a first graph would.
  // Read defensively: the method is new, and this script also measures engines without it.
  const estimator = attributor as unknown as { estimate?: (tokens: number) => EstimateLike };
  const te = performance.now();
  const est = typeof estimator.estimate === 'function' ? estimator.estimate(spec.tokens) : null;
  const estimateMs = performance.now() - te;
  if (est) console.error(`${tag} estimate: ${est.seconds.toFixed(1)} s, ${(est.peakBytes / 1048576).toFixed(0)} MB, ${est.featureRows} feature rows of ${est.activeFeatures} active`);
  await attributor.prepare();
  const ids = Array.from({ length: spec.tokens }, (_, i) => (i * 7919 + 11) % c.vocabSize);
  if (c.warmUp) await attributor.attribute(ids.slice(0, 4));
  const setupS = (performance.now() - t1) / 1000;
  const rssPeakLoad = peakRssMb();
  const rssBeforeGraph = process.memoryUsage().rss / 1048576;
  const canReset = resetPeakRss();

  const runs: Record<string, number>[] = [];
  let graph: Record<string, unknown> = {};
  for (let r = 0; r < spec.runs; r++) {
    console.error(`${tag} run ${r + 1}/${spec.runs}: attributing ${spec.tokens} tokens…`);
    const ta = performance.now();
    const g = await attributor.attribute(ids, { progress: throttled(tag) });
    const tb = performance.now();
    const pr = pruneGraph(g);
    const tc = performance.now();
    const json = toGraphJson(g, pr, { slug: 'bench', scan: 'bench', promptTokens: ids.map(String), prompt: '', tokenText: String, nodeThreshold: 0.8, edgeThreshold: 0.98 });
    const text = JSON.stringify(json);
    const td = performance.now();
    let featureRows = 0;
    for (let n = 0; n < g.nFeatures; n++) featureRows += g.rowComputed[n];
    // Fields being added to the graph now; read whatever this engine has.
    const extra = g as unknown as { nActiveFeatures?: number; influenceCovered?: number; memoryLimited?: boolean };
    graph = {
      n_features: g.nFeatures,
      n_active_features: extra.nActiveFeatures ?? null,
      feature_rows: featureRows,
      influence_covered: extra.influenceCovered ?? null,
      memory_limited: extra.memoryLimited ?? null,
      nodes: g.N,
      logits: g.logitIds.length,
      json_nodes: json.nodes.length,
      json_links: json.links.length,
      json_bytes: text.length,
    };
    runs.push({
      ...Object.fromEntries(Object.entries(g.timings_ms).map(([k, v]) => [`graph_${k}_s`, v / 1000])),
      attribute_s: (tb - ta) / 1000,
      prune_s: (tc - tb) / 1000,
      export_s: (td - tc) / 1000,
      total_s: (td - ta) / 1000,
    });
    console.error(`${tag} run ${r + 1}: ${((td - ta) / 1000).toFixed(1)} s, ${g.nFeatures} features, ${json.nodes.length} nodes / ${json.links.length} links kept`);
  }
  const rssPeakGraph = peakRssMb();
  await attributor.dispose();
  await model.dispose();
  const med = Object.fromEntries(Object.keys(runs[0]).map((k) => [k, median(runs.map((x) => x[k]))]));
  const estMb = est ? est.peakBytes / 1048576 : null;
  const graphPeak = canReset ? rssPeakGraph : Math.max(rssPeakLoad, rssPeakGraph);
  const result = {
    case: c.id,
    name: c.name,
    tokens: spec.tokens,
    status: 'ok',
    precision: spec.precision,
    provider: model.provider,
    runs: spec.runs,
    load_s: loadS,
    setup_s: setupS,
    wall_s: med.total_s,
    median: med,
    per_run: runs,
    rss_after_load_mb: rssAfterLoad,
    rss_peak_load_mb: rssPeakLoad,
    // Sessions created (and for case a, warmed up): what the graph runs start from.
    rss_before_graph_mb: rssBeforeGraph,
    // With the mark reset after setup: the peak while the graphs ran (the memory already held included).
    rss_peak_graph_mb: canReset ? rssPeakGraph : null,
    rss_peak_mb: Math.max(rssPeakLoad, rssPeakGraph),
    estimate: est ? { seconds: est.seconds, mb: estMb, active_features: est.activeFeatures, feature_rows: est.featureRows, parts: est.parts, call_ms: estimateMs } : null,
    ratio_s: est ? med.total_s / est.seconds : null,
    ratio_mb: estMb ? graphPeak / estMb : null,
    graph,
  };
  process.stdout.write('\n' + JSON.stringify(result) + '\n');
}

interface Failure {
  case: CaseId;
  name: string;
  tokens: number;
  status: 'failed';
  exit_code: number | null;
  signal: string | null;
  stderr_tail: string[];
}

/** Runs one (case, length) in a fresh process; its stderr goes through (progress), its last stdout line is the result. */
function runChild(spec: ChildSpec): Promise<Record<string, unknown> | Failure> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', __filename, '--child', JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const tail: string[] = [];
    let partial = '';
    p.stdout.setEncoding('utf8');
    p.stderr.setEncoding('utf8');
    p.stdout.on('data', (s: string) => (out += s));
    p.stderr.on('data', (s: string) => {
      process.stderr.write(s);
      const lines = (partial + s).split('\n');
      partial = lines.pop()!;
      tail.push(...lines);
      tail.splice(0, Math.max(0, tail.length - 20));
    });
    p.on('close', (code, signal) => {
      if (partial) tail.push(partial);
      const last = out.trim().split('\n').pop() ?? '';
      if (code === 0 && last.startsWith('{')) return resolve(JSON.parse(last));
      const c = CASES[spec.id];
      resolve({ case: spec.id, name: c.name, tokens: spec.tokens, status: 'failed', exit_code: code, signal, stderr_tail: tail.slice(-12) });
    });
  });
}

function argList(args: string[], name: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === name && args[i + 1] !== undefined) out.push(...args[i + 1].split(',').filter(Boolean));
  });
  return out;
}

function table(results: (Record<string, unknown> | Failure)[]): string {
  const head = ['case', 'tokens', 'wall s', 'est s', 'ratio', 'peak RSS MB', 'graph RSS MB', 'est MB', 'ratio', 'feature rows', 'active', 'covered'];
  const rows = results.map((r) => {
    if (r.status !== 'ok') {
      const f = r as Failure;
      return [`${f.case} ${f.name}`, String(f.tokens), `FAILED (${f.signal ?? `exit ${f.exit_code}`}${f.signal === 'SIGKILL' ? ': out of memory?' : ''})`];
    }
    const x = r as { case: string; name: string; tokens: number; wall_s: number; rss_peak_mb: number; rss_peak_graph_mb: number | null; estimate: { seconds: number; mb: number; feature_rows: number } | null; ratio_s: number | null; ratio_mb: number | null; graph: Record<string, number | boolean | null> };
    const n = (v: number | null | undefined, d = 0) => (v === null || v === undefined ? '–' : v.toFixed(d));
    const g = x.graph;
    const active = (g.n_active_features ?? g.n_features) as number;
    const covered = g.influence_covered === null ? '–' : `${(100 * (g.influence_covered as number)).toFixed(1)}%${g.memory_limited ? ' (memory)' : ''}`;
    return [`${x.case} ${x.name}`, String(x.tokens), n(x.wall_s, 1), n(x.estimate?.seconds, 1), n(x.ratio_s, 2), n(x.rss_peak_mb), n(x.rss_peak_graph_mb), n(x.estimate?.mb), n(x.ratio_mb, 2), `${g.feature_rows}${x.estimate ? ` (est ${x.estimate.feature_rows})` : ''}`, String(active), covered];
  });
  // Failed rows are [case, tokens, message]: their message runs past the columns instead of widening one.
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r.length === 3 && i >= 2 ? 0 : r[i].length))));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ');
  return [line(head), ...rows.map((r) => (r.length === 3 ? `${r[0].padEnd(width[0])}  ${r[1].padStart(width[1])}  ${r[2]}` : line(r)))].join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return child(JSON.parse(args[1]) as ChildSpec);
  const ids = (argList(args, '--case').length ? argList(args, '--case') : ['a', 'b', 'c']) as CaseId[];
  for (const id of ids) if (!CASES[id]) throw new Error(`unknown case "${id}"; cases: a (GPT-2 small), b (Llama-3.2-1B shape), c (Gemma-2-2B shape), d (GPT-2 small + a cross-layer transcoder)`);
  const tokens = argList(args, '--tokens').map(Number);
  if (tokens.some((t) => !Number.isInteger(t) || t < 1)) throw new Error(`--tokens takes positive integers, got ${argList(args, '--tokens').join(',')}`);
  const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 1;
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs takes a positive integer');
  const precisionArg = args.includes('--precision') ? (args[args.indexOf('--precision') + 1] as WeightPrecision) : undefined;
  const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : path.join(__dirname, 'results', 'circuits.json');

  const cases = ids.map((id) => CASES[id]);
  for (const c of cases) ensureFixtures(c);
  if (args.includes('--generate-only')) return;

  const results: (Record<string, unknown> | Failure)[] = [];
  for (const c of cases) {
    for (const P of tokens.length ? tokens : c.tokens) {
      const r = await runChild({ id: c.id, tokens: P, runs, precision: precisionArg ?? c.precision });
      if (r.status !== 'ok') console.error(`[${c.id}·${P}] FAILED (${(r as Failure).signal ?? `exit ${(r as Failure).exit_code}`})`);
      results.push({ ...r, fixture_gb: { model: diskBytes(c.modelDir) / 1e9, transcoders: diskBytes(c.transcoderDir) / 1e9 } });
    }
  }
  const out = { name: 'attribution_circuits', threads: os.cpus().length, date: new Date().toISOString(), runs, cases: results };
  fs.mkdirSync(path.dirname(jsonOut), { recursive: true });
  fs.writeFileSync(jsonOut, JSON.stringify(out, null, 1));

  console.log(`\nattribution graphs · ${out.threads} threads · ${runs === 1 ? 'one run each (medians of 1)' : `medians of ${runs} runs`}`);
  console.log('wall = attribute + prune + export; graph RSS = peak while the graph ran (memory already held included), compared with the estimate\n');
  console.log(table(results));
  for (const r of results) {
    if (r.status === 'ok') continue;
    const f = r as Failure;
    console.log(`\n${f.case} ${f.name} · ${f.tokens} tokens: ${f.signal ? `killed by ${f.signal}` : `exit code ${f.exit_code}`}; last lines:\n  ${f.stderr_tail.join('\n  ')}`);
  }
  console.log(`\nJSON: ${path.relative(process.cwd(), jsonOut)}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
