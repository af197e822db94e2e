/**
 * `npm run bench`: a GPT-2-small-shaped checkpoint with random weights (12 layers, d_model 768, 12 heads, vocab
 * 50257), generated once into bench/.cache. Measures session creation (cold, in a fresh process, for both ways of
 * handing ONNX Runtime the weights), then forward passes with every hook and with logits only at 32/128/512 tokens
 * (warm-up, then medians), the machine's MatMul peak through ONNX Runtime, and peak resident memory.
 * Prints a table and writes JSON (`--json FILE`, default bench/results/latest.json).
 *
 * `--providers LIST` (e.g. `webgpu` or `cuda`) also runs the forward passes on the first of those that starts (float32,
 * as the CPU figures) and prints its medians beside the CPU's with the speed-up; when none starts, the JSON and the
 * table say why, provider by provider (the GPU check's causes).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeRandomGpt2 } from '../src/engine/checkpoint/random';
import { allHookNames, type HookName } from '../src/engine/hooks';
import { Model } from '../src/engine/model';
import { GraphBuilder } from '../src/engine/onnx/builder';
import { ort, silenceOrt } from '../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../tools/gpt2-tokenizer';

const SHAPE = { nLayers: 12, dModel: 768, nHeads: 12, dMlp: 3072, nCtx: 1024, vocabSize: 50257 };
const root = path.join(__dirname, '.cache');
const modelDir = path.join(root, 'gpt2-small-random');

function ensureModel(): void {
  if (fs.existsSync(path.join(modelDir, 'model.safetensors'))) return;
  console.error('generating the GPT-2-small-shaped random checkpoint (once)…');
  writeRandomGpt2(modelDir, SHAPE, { seed: 1, tokenizerJson: gpt2TokenizerJSON() });
}

/** FLOPs of one forward pass (multiply-adds × 2), attention included, logits over `logitRows` positions. */
function forwardFlops(P: number, logitRows = P): number {
  const { nLayers: L, dModel: D, dMlp: M, vocabSize: V } = SHAPE;
  const perLayer = 2 * P * D * 3 * D + 2 * 2 * P * P * D + 2 * P * D * D + 2 * 2 * P * D * M;
  return L * perLayer + 2 * logitRows * D * V;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timeIt(fn: () => Promise<unknown>, warm: number, runs: number) {
  for (let i = 0; i < warm; i++) await fn();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    t.push((performance.now() - t0) / 1000);
  }
  return { median_s: median(t), min_s: Math.min(...t), max_s: Math.max(...t), runs };
}

/** ONNX Runtime's own MatMul throughput on this machine (2048² · 2048²), the peak the forward is compared to. */
async function matmulPeak(): Promise<number> {
  const n = 2048;
  const g = new GraphBuilder('peak');
  const a = g.input('a', 'float32', [n, n]);
  const b = g.constF32('b', [n, n], Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 13) / 13 - 0.5));
  g.op('MatMul', [a, b], undefined, 'c');
  g.output('c', 'float32', [n, n]);
  const s = await ort().InferenceSession.create(g.encode(), { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
  const x = new (ort().Tensor)('float32', new Float32Array(n * n).fill(0.5), [n, n]);
  const r = await timeIt(() => s.run({ a: x }), 2, 7);
  await s.release();
  return (2 * n ** 3) / r.median_s / 1e9;
}

/** Child-process mode: create a session cold and report time and peak RSS (one process per measurement). */
async function childCreate(mode: 'link' | 'buffer'): Promise<void> {
  silenceOrt();
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-bench-'));
  const t0 = performance.now();
  const m = await Model.load(modelDir, { providers: ['cpu'], externalMode: mode, cacheDir });
  const createS = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  await m.run({ ids: Array.from({ length: 32 }, (_, i) => 100 + i), hooks: ['logits'] });
  const firstS = (performance.now() - t1) / 1000;
  const rss = process.resourceUsage().maxRSS / 1024;
  await m.dispose();
  fs.rmSync(cacheDir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify({ mode, create_s: createS, first_run_s: firstS, rss_peak_mb: rss }));
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child-create') return childCreate(args[1] as 'link' | 'buffer');
  const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : path.join(__dirname, 'results', 'latest.json');
  const quick = args.includes('--quick');
  ensureModel();
  silenceOrt();

  const sessions = (['link', 'buffer'] as const).map((mode) =>
    JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child-create', mode], { encoding: 'utf8' })),
  );

  const peak = await matmulPeak();
  const all = allHookNames(SHAPE.nLayers);
  const measureForward = async (model: Model) => {
    const rows = [];
    for (const P of quick ? [32, 128] : [32, 128, 512]) {
      const ids = Array.from({ length: P }, (_, i) => (i * 7919) % SHAPE.vocabSize);
      // "-last": logits for the last position only (what Analyze Selection, patching and steering ask for).
      for (const [mode, hooks, last] of [
        ['logits', ['logits'], false],
        ['all-hooks', all, false],
        ['logits-last', ['logits'], true],
        ['all-hooks-last', all, true],
      ] as [string, HookName[], boolean][]) {
        const r = await timeIt(() => model.run({ ids, hooks, logitPositions: last ? [P - 1] : undefined }), 1, P >= 512 ? 3 : 5);
        const gflop = forwardFlops(P, last ? 1 : P) / 1e9;
        rows.push({ mode, tokens: P, ...r, gflop, fraction_of_peak: gflop / r.median_s / peak });
      }
    }
    return rows;
  };
  const model = await Model.load(modelDir, { providers: ['cpu'], cacheDir: path.join(root, 'onnx') });
  const forward = await measureForward(model);
  await model.dispose();
  // The same forward passes on a GPU provider, when asked for: the speed-up is against the CPU rows just measured.
  let gpu: Record<string, unknown> | undefined;
  const gpuList = args.includes('--providers') ? (args[args.indexOf('--providers') + 1] ?? '').split(',').filter((p) => p && p !== 'cpu') : [];
  if (args.includes('--providers') && !gpuList.length) throw new Error('--providers needs a GPU provider or more (e.g. --providers webgpu or cuda,webgpu)');
  if (gpuList.length) {
    try {
      const g = await Model.load(modelDir, { providers: gpuList, precision: 'float32', cacheDir: path.join(root, 'onnx') });
      const rows = await measureForward(g);
      gpu = {
        provider: g.provider,
        adapter: g.adapter ?? null,
        attempts: g.attempts,
        forward: rows.map((r) => ({ ...r, speedup_vs_cpu: forward.find((c) => c.mode === r.mode && c.tokens === r.tokens)!.median_s / r.median_s })),
      };
      await g.dispose();
    } catch (e) {
      gpu = { provider: null, error: e instanceof Error ? e.message : String(e) };
    }
  }
  // The attribution graph and steered generation, each in its own process (bench/attribution.ts, bench/generation.ts).
  const extra: Record<string, unknown> = {};
  if (!quick) {
    for (const [name, script, flags] of [
      ['attribution_graph', 'attribution.ts', ['--runs', '3']],
      ['generation', 'generation.ts', ['--runs', '3', '--tokens', '32']],
    ] as const) {
      const out = path.join(os.tmpdir(), `residual-bench-${name}-${process.pid}.json`);
      console.error(`running bench/${script}…`);
      execFileSync(process.execPath, ['--import', 'tsx', path.join(__dirname, script), ...flags, '--json', out], { stdio: ['ignore', 'ignore', 'inherit'] });
      extra[name] = JSON.parse(fs.readFileSync(out, 'utf8'));
      fs.rmSync(out, { force: true });
    }
  }
  const result = {
    provider: model.provider,
    threads: os.cpus().length,
    peak_gflops: peak,
    rss_peak_mb: process.resourceUsage().maxRSS / 1024,
    model: { ...SHAPE, params_m: 124.4 },
    session_create: sessions,
    forward,
    ...(gpu ? { gpu } : {}),
    ...extra,
    date: new Date().toISOString(),
  };
  fs.mkdirSync(path.dirname(jsonOut), { recursive: true });
  fs.writeFileSync(jsonOut, JSON.stringify(result, null, 1));

  console.log(`provider ${result.provider} · ${result.threads} threads · MatMul peak ${peak.toFixed(1)} GFLOP/s · peak RSS ${result.rss_peak_mb.toFixed(0)} MB`);
  console.log('\nsession creation (fresh process, GPT-2 small, F32):');
  for (const s of sessions) console.log(`  ${s.mode.padEnd(7)} create ${s.create_s.toFixed(2)} s · first 32-token run ${s.first_run_s.toFixed(3)} s · peak RSS ${s.rss_peak_mb.toFixed(0)} MB`);
  console.log('\nforward                tokens   median s   min s    GFLOP   of peak   all-hooks / logits');
  for (const f of forward) {
    const base = forward.find((x) => x.mode === f.mode.replace('all-hooks', 'logits') && x.tokens === f.tokens)!;
    console.log(
      `  ${f.mode.padEnd(20)} ${String(f.tokens).padStart(6)} ${f.median_s.toFixed(3).padStart(10)} ${f.min_s.toFixed(3).padStart(7)} ${f.gflop.toFixed(1).padStart(8)} ${(f.fraction_of_peak * 100).toFixed(0).padStart(8)}%   ${f.mode.startsWith('all-hooks') ? (f.median_s / base.median_s).toFixed(2) + '×' : ''}`,
    );
  }
  if (gpu?.provider) {
    const ad = gpu.adapter as { description: string } | null;
    console.log(`\nthe same on ${gpu.provider}${ad ? ` (${ad.description})` : ''}: median s and speed-up over the CPU rows above`);
    for (const f of gpu.forward as { mode: string; tokens: number; median_s: number; speedup_vs_cpu: number }[]) {
      console.log(`  ${f.mode.padEnd(20)} ${String(f.tokens).padStart(6)} ${f.median_s.toFixed(4).padStart(10)}   ${f.speedup_vs_cpu.toPrecision(2)}×`);
    }
  } else if (gpu) console.log(`\nno GPU provider of ${gpuList.join(', ')} could run: ${gpu.error}`);
  const attr = extra.attribution_graph as { median_s: number; tokens: number; max_feature_nodes: unknown } | undefined;
  if (attr) console.log(`\nattribution graph (12 × 24576 TopK transcoders, ${attr.tokens} tokens, max_feature_nodes ${attr.max_feature_nodes}): median ${attr.median_s.toFixed(2)} s`);
  const gen = extra.generation as { results: { rows: { model: string; cache: boolean; median_tokens_per_s: number }[] }[] } | undefined;
  for (const r of gen?.results.flatMap((x) => x.rows) ?? []) console.log(`steered generation, ${r.model}, ${r.cache ? 'KV cache' : 'no cache'}: ${r.median_tokens_per_s.toFixed(1)} tokens/s`);
  console.log(`\nJSON: ${path.relative(process.cwd(), jsonOut)}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
