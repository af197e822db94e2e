/**
 * Parity, shown: a short probe prompt through the model as loaded (ONNX Runtime, this provider, this precision) and
 * through an independent float64 plain-loop forward written from each architecture's definition (reference/), and the
 * largest differences. The same reference code the oracle tests hold the graph to, so the user sees the number the
 * tests check, on their own model and machine.
 *
 * The reference runs in a worker thread (reference/worker.ts) and reads the weights from the checkpoint as stored,
 * one tensor at a time as it needs them; a model whose full check would cost more than the budget is checked over its
 * first layers only, and says so.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Tensor32 } from './dims';
import { ResidualError, throwIfCancelled, type CancelToken } from './errors';
import { allHookNames, parseHookName } from './hooks';
import type { Model } from './model';
import type { ReferenceJob, ReferenceReply } from './reference/worker';
import { formatDeviation, type ParityReport } from './results';

/** The probe prompt: ordinary prose with a number, a name and punctuation (a handful of tokens in any vocabulary). */
const PARITY_PROBE_TEXT = 'The capital of France is Paris. In 1905, Einstein wrote';
/** At most this many probe tokens (the reference is plain loops). */
const PROBE_TOKENS = 12;
/** The reference's arithmetic the check may spend by default: a few seconds of float64 loops in a worker thread (GPT-2 small in full). */
const DEFAULT_PARITY_FLOPS = 4e9;

export interface ParityOptions {
  /** FLOPs the reference may spend; fewer layers are checked when the whole model would cost more. */
  maxFlops?: number;
  cancel?: CancelToken;
  /** The checkpoint the reference reads (tests give a tampered copy to show the check can fail). Default: the model's. */
  referenceDir?: string;
}

/** FLOPs of the reference's forward over P tokens: per block, the projections and the attention; then the unembedding. */
export function referenceFlops(model: Model, P: number): { perLayer: number; logits: number } {
  const c = model.config;
  const G = c.nKvHeads ?? c.nHeads;
  const proj = 2 * P * c.dModel * (c.nHeads * c.dHead * 2 + G * c.dHead * 2); // q, o and k, v
  const attn = 2 * 2 * P * P * c.nHeads * c.dHead;
  const mlp = 2 * P * c.dModel * c.dMlp * (c.family?.gatedMlp ? 3 : 2);
  return { perLayer: proj + attn + mlp, logits: 2 * P * c.dModel * c.vocabSize };
}

/** How to start the worker: the bundled file beside this bundle, or the TypeScript source through tsx (tests). */
function workerSource(): { file: string; eval?: boolean } {
  const bundled = path.join(__dirname, 'reference-worker.js');
  if (fs.existsSync(bundled)) return { file: bundled };
  const source = path.join(__dirname, 'reference', 'worker.ts');
  return { file: `require('tsx/cjs'); require(${JSON.stringify(source)});`, eval: true };
}

/** The reference's hooks for `ids`, computed in a worker thread over the checkpoint in `dir`; stopped on cancel. */
function referenceInWorker(job: ReferenceJob, cancel?: CancelToken): Promise<Map<string, Tensor32>> {
  const src = workerSource();
  throwIfCancelled(cancel);
  return new Promise((resolve, reject) => {
    const worker = new Worker(src.file, { eval: !!src.eval, workerData: job });
    // Settled once, whichever comes first: the answer, an error, the worker's exit, or a cancel (which stops it).
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      void worker.terminate();
      f();
    };
    const poll = setInterval(() => cancel?.isCancellationRequested && settle(() => reject(new ResidualError('cancelled', undefined, 'cancelled'))), 100);
    worker.once('message', (reply: ReferenceReply) =>
      settle(() => (reply.ok ? resolve(new Map(reply.hooks.map(([name, dims, data]) => [name, { dims, data }]))) : reject(new ResidualError(`the parity check's reference forward failed: ${reply.error}`, 'parity')))),
    );
    worker.once('error', (e) => settle(() => reject(new ResidualError(`the parity check's reference forward failed: ${e.message}`, 'parity'))));
    worker.once('exit', (code) => settle(() => reject(new ResidualError(`the parity check's reference forward ended (exit code ${code}) without an answer`, 'parity'))));
  });
}

/**
 * Runs the probe through the model and the float64 reference and compares every hook of the layers checked (and the
 * logits when every layer is). `worst_hook` is the hook with the largest difference relative to its own scale.
 */
export async function checkParity(model: Model, opts: ParityOptions = {}): Promise<ParityReport> {
  const t0 = performance.now();
  const c = model.config;
  const ids = model.tokenizer.encode(PARITY_PROBE_TEXT).ids.slice(0, Math.min(PROBE_TOKENS, c.nCtx));
  const P = ids.length;
  const budget = opts.maxFlops ?? DEFAULT_PARITY_FLOPS;
  const cost = referenceFlops(model, P);
  const full = c.nLayers * cost.perLayer + cost.logits <= budget;
  const layers = full ? c.nLayers : Math.min(c.nLayers, Math.floor(budget / cost.perLayer));
  /** What every report says: the reference, the probe, the model as loaded and the time taken. */
  const about = () => ({
    reference: 'float64 plain-loop forward (src/engine/reference)',
    tokens: P,
    n_layers: c.nLayers,
    provider: model.provider,
    precision: model.precision,
    ms: performance.now() - t0,
  });
  // A model whose single block costs more than the budget is not checked at all (it would stall for minutes).
  if (layers === 0) {
    return {
      ...about(),
      max_abs_dlogit: null,
      worst_hook: '',
      worst_hook_max_abs: 0,
      worst_hook_relative: 0,
      layers_checked: 0,
      hooks_checked: 0,
      skipped: `one block costs ${(cost.perLayer / 1e9).toFixed(1)} GFLOP of reference arithmetic, over the ${(budget / 1e9).toFixed(0)} GFLOP budget`,
    };
  }
  const hooks = allHookNames(c.nLayers).filter((h) => {
    if (!model.hooks.has(h)) return false;
    if (h === 'logits' || h.startsWith('ln_final')) return full;
    const layer = parseHookName(h)?.layer ?? null;
    return layer === null || layer < layers;
  });
  const run = await model.run({ ids, hooks, cancel: opts.cancel });
  throwIfCancelled(opts.cancel);
  const reference = await referenceInWorker({ dir: opts.referenceDir ?? model.checkpoint.dir, ids, layers, withLogits: full }, opts.cancel);
  let worst = { hook: '', relative: -1, abs: 0 };
  let maxAbsDlogit: number | null = null;
  let compared = 0;
  for (const h of hooks) {
    const got = run.activations.get(h);
    const want = reference.get(h);
    if (!got || !want) continue;
    compared++;
    const { abs, scale } = difference(got, want);
    const relative = abs / Math.max(scale, 1e-12);
    if (relative > worst.relative) worst = { hook: h, relative, abs };
    if (h === 'logits') maxAbsDlogit = abs;
  }
  return {
    ...about(),
    max_abs_dlogit: maxAbsDlogit,
    worst_hook: worst.hook,
    worst_hook_max_abs: worst.abs,
    worst_hook_relative: worst.relative,
    layers_checked: layers,
    hooks_checked: compared,
  };
}

/** Largest absolute difference, and the reference's largest magnitude (the hook's scale). */
function difference(got: Tensor32, want: Tensor32): { abs: number; scale: number } {
  if (got.data.length !== want.data.length) throw new Error(`parity: ${got.dims} vs ${want.dims}`);
  let abs = 0;
  let scale = 0;
  for (let i = 0; i < got.data.length; i++) {
    abs = Math.max(abs, Math.abs(got.data[i] - want.data[i]));
    scale = Math.max(scale, Math.abs(want.data[i]));
  }
  return { abs, scale };
}


/** The parity check in one line: "parity: max |Δlogit| 9.5e-6 vs the float64 … on 12 probe tokens; worst hook …". */
export function parityLine(p: ParityReport): string {
  if (p.skipped) return `parity: not checked: ${p.skipped}\n`;
  const scope = p.max_abs_dlogit === null ? `the first ${p.layers_checked} of ${p.n_layers} layers (the whole model would take too long), ` : '';
  const head = p.max_abs_dlogit === null ? 'parity:' : `parity: max |Δlogit| ${formatDeviation(p.max_abs_dlogit)}`;
  return (
    `${head} vs the ${p.reference} on ${scope}${p.tokens} probe tokens (${p.provider}, ${p.precision}); ` +
    `worst hook ${p.worst_hook} (max |Δ| ${formatDeviation(p.worst_hook_max_abs)}, ${formatDeviation(p.worst_hook_relative)} of its scale)\n`
  );
}
