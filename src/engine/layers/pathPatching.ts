/**
 * Path patching (Wang et al. 2022, the IOI circuit): how much of the corruption's effect on the logit difference
 * flows from a sender (an attention head or an MLP) to a receiver (a later head's query, key or value input, or the
 * logits) along the direct path between them only.
 *
 * For a sender S and the clean/corrupted pair of the Patching tab:
 * 1. Everything but S is frozen at its clean value, S takes its corrupted output: the residual stream then differs
 *    from the clean one by Δ_S = S(corrupted) − S(clean) at every later point, and nothing else.
 * 2. Receiver = logits: the final residual is clean + Δ_S; the final norm and unembedding read it (one run, with Δ_S
 *    added at the last block's resid_post).
 *    Receiver = head h at layer l′: its q (or k, or v) is recomputed from the residual clean + Δ_S at l′ (one run with
 *    Δ_S added at blocks.l′.hook_resid_pre; its other heads' inputs are not used). Head h's pattern and output are
 *    recomputed with that input and the other two clean; the change of its output, ΔR = (z′ − z) W_O^h, is then put
 *    into the clean run (added where attention joins the residual), and everything after it runs freely.
 * The result is the logit difference of that last run: `delta` = patched − clean, `fraction` = delta / (corrupted −
 * clean), i.e. the share of the full corruption effect that this path carries.
 *
 * The recomputed pattern of the receiver is checked against the model's own clean pattern, so an attention this code
 * does not reproduce is refused rather than measured wrongly. Models with norms after attention or the MLP (Gemma-2)
 * are refused: what a sender writes into the residual there depends on every other head, so Δ_S is not its own.
 */
import type { CancelToken } from '../errors';
import { ResidualError, throwIfCancelled } from '../errors';
import { layerWeights } from '../dla';
import { readTensorF32 } from '../checkpoint/safetensors';
import { hookName, type HookName } from '../hooks';
import type { Model } from '../model';
import type { PathPatchingResult, PathReceiver, PathSender, PathSenderEffect } from '../results';
import { preparePatching } from './patching';

export type { PathPatchingResult, PathReceiver, PathSender, PathSenderEffect };

export interface PathPatchingRequest {
  clean: string;
  corrupted: string;
  cleanAnswer?: string;
  corruptedAnswer?: string;
  receiver: PathReceiver;
  /** Default: every head and MLP before the receiver (every one, for the logits). */
  senders?: PathSender[];
}

export interface PathPatchingOptions {
  cancel?: CancelToken;
  onProgress?: (done: number, total: number) => void;
}

/** A receiver's recomputed pattern must match the model's own to this (probabilities). */
const PATTERN_CHECK = 1e-3;

export function senderName(s: PathSender): string {
  return s.head === undefined ? `blocks.${s.layer}.mlp` : `blocks.${s.layer}.attn.head.${s.head}`;
}

export function receiverName(r: PathReceiver): string {
  return r.kind === 'logits' ? 'logits' : `blocks.${r.layer}.attn.head.${r.head}.${r.input}`;
}

/** Every head and MLP whose output can reach the receiver directly, in layer order (heads, then the MLP). */
export function sendersBefore(model: Model, r: PathReceiver): PathSender[] {
  const c = model.config;
  const until = r.kind === 'logits' ? c.nLayers : r.layer;
  const out: PathSender[] = [];
  for (let l = 0; l < until; l++) {
    for (let h = 0; h < c.nHeads; h++) out.push({ layer: l, head: h });
    out.push({ layer: l });
  }
  return out;
}

function checkRequest(model: Model, req: PathPatchingRequest, senders: PathSender[]): void {
  const c = model.config;
  const { nLayers: L, nHeads: H } = c;
  if (c.family?.postNorms) {
    throw new ResidualError(
      'path patching is not available for models with norms after attention and the MLP (Gemma-2): what one head writes into the residual depends on all the others there',
      'path patching',
      'unsupported',
    );
  }
  const r = req.receiver;
  if (r.kind === 'head') {
    if (!Number.isInteger(r.layer) || r.layer < 1 || r.layer >= L) throw new ResidualError(`receiver layer ${r.layer} must be 1..${L - 1} (a head with something before it)`, 'path patching');
    if (!Number.isInteger(r.head) || r.head < 0 || r.head >= H) throw new ResidualError(`receiver head ${r.head} does not exist (heads 0..${H - 1})`, 'path patching');
    if (!['q', 'k', 'v'].includes(r.input)) throw new ResidualError(`receiver input must be q, k or v, got ${String(r.input)}`, 'path patching');
  }
  if (senders.length === 0) throw new ResidualError('no senders: give at least one head or MLP before the receiver', 'path patching');
  const until = r.kind === 'logits' ? L : r.layer;
  for (const s of senders) {
    if (!Number.isInteger(s.layer) || s.layer < 0 || s.layer >= until) {
      throw new ResidualError(`sender ${senderName(s)} is not before the receiver ${receiverName(r)} (senders are in layers 0..${until - 1})`, 'path patching');
    }
    if (s.head !== undefined && (!Number.isInteger(s.head) || s.head < 0 || s.head >= H)) throw new ResidualError(`sender head ${s.head} does not exist (heads 0..${H - 1})`, 'path patching');
  }
}

export async function pathPatching(model: Model, req: PathPatchingRequest, opts: PathPatchingOptions = {}): Promise<PathPatchingResult> {
  const t0 = performance.now();
  const c = model.config;
  const { nLayers: L, dModel: D, nHeads: H, dHead: E, vocabSize: V } = c;
  const G = c.nKvHeads ?? H;
  const r = req.receiver;
  const senders = req.senders ?? sendersBefore(model, r);
  checkRequest(model, req, senders);

  const hooks = new Set<HookName>();
  for (const s of senders) hooks.add(hookName(s.layer, s.head === undefined ? 'hook_mlp_out' : 'attn.hook_z'));
  const rot = model.hooks.has(hookName(0, 'attn.hook_rot_q'));
  const qHook = (l: number) => hookName(l, rot ? 'attn.hook_rot_q' : 'attn.hook_q');
  const kHook = (l: number) => hookName(l, rot ? 'attn.hook_rot_k' : 'attn.hook_k');
  if (r.kind === 'head') for (const h of [qHook(r.layer), kHook(r.layer), hookName(r.layer, 'attn.hook_v'), hookName(r.layer, 'attn.hook_pattern')]) hooks.add(h);
  const setup = await preparePatching(model, req, [...hooks], opts.cancel);
  const { P, cleanRun, corrRun, ld, ldClean, ldCorrupted } = setup;
  const clean = (h: HookName) => cleanRun.activations.get(h)!.data;
  const corr = (h: HookName) => corrRun.activations.get(h)!.data;
  const last = [P - 1];
  const lastLd = (run: { activations: Map<HookName, { data: Float32Array }> }) => ld(run.activations.get('logits')!.data.subarray(0, V));

  // W_O of the layers involved, read once.
  const wo = new Map<number, { w: Float32Array; inOut: boolean }>();
  const woOf = (l: number) => {
    let e = wo.get(l);
    if (!e) {
      const lw = layerWeights(model, l);
      e = { w: readTensorF32(lw.o), inOut: lw.oInOut };
      wo.set(l, e);
    }
    return e;
  };
  /** out[p, :] += Σ_e dz[p, e] W_O[h·E + e, :] (the head's share of the output projection). */
  const headOut = (l: number, h: number, dz: Float64Array, out: Float32Array) => {
    const { w, inOut } = woOf(l);
    const X = H * E;
    for (let p = 0; p < P; p++)
      for (let e = 0; e < E; e++) {
        const v = dz[p * E + e];
        if (v === 0) continue;
        const x = h * E + e;
        if (inOut) for (let d = 0; d < D; d++) out[p * D + d] += v * w[x * D + d];
        else for (let d = 0; d < D; d++) out[p * D + d] += v * w[d * X + x];
      }
  };
  /** One head's rows [P, E] of a [P, heads, E] activation, in float64. */
  const headRows = (data: Float32Array, heads: number, h: number) => {
    const out = new Float64Array(P * E);
    for (let p = 0; p < P; p++) for (let e = 0; e < E; e++) out[p * E + e] = data[(p * heads + h) * E + e];
    return out;
  };
  /** Δ_S: what the sender writes into the residual on the corrupted prompt minus on the clean one, [P, D]. */
  const senderDelta = (s: PathSender): Float32Array => {
    const out = new Float32Array(P * D);
    if (s.head === undefined) {
      const a = corr(hookName(s.layer, 'hook_mlp_out'));
      const b = clean(hookName(s.layer, 'hook_mlp_out'));
      for (let i = 0; i < P * D; i++) out[i] = a[i] - b[i];
      return out;
    }
    const dz = headRows(corr(hookName(s.layer, 'attn.hook_z')), H, s.head);
    const zb = headRows(clean(hookName(s.layer, 'attn.hook_z')), H, s.head);
    for (let i = 0; i < P * E; i++) dz[i] -= zb[i];
    headOut(s.layer, s.head, dz, out);
    return out;
  };

  // The receiver head: its attention, recomputed from its q, k, v rows (float64) on the clean prompt, where its key and
  // value rows are those of its key/value head under grouped-query attention.
  let receiver: { attend: ReturnType<typeof receiverAttention>; kvHead: number; hooks: Record<'q' | 'k' | 'v', HookName>; rows: Record<'q' | 'k' | 'v', Float64Array>; z: Float64Array } | undefined;
  let receiverCheck: number | undefined;
  if (r.kind === 'head') {
    const hooks = { q: qHook(r.layer), k: kHook(r.layer), v: hookName(r.layer, 'attn.hook_v') };
    const kvHead = Math.floor(r.head / (H / G));
    const rows = { q: headRows(clean(hooks.q), H, r.head), k: headRows(clean(hooks.k), G, kvHead), v: headRows(clean(hooks.v), G, kvHead) };
    const attend = receiverAttention(model, r.layer, P);
    // z as recomputed here (not the model's hook_z): an input that does not change gives exactly ΔR = 0.
    const { pattern, z } = attend(rows.q, rows.k, rows.v);
    receiver = { attend, kvHead, hooks, rows, z };
    // The check: the clean pattern as recomputed here against the model's own.
    const own = clean(hookName(r.layer, 'attn.hook_pattern'));
    let worst = 0;
    for (let qi = 0; qi < P; qi++) for (let s = 0; s < P; s++) worst = Math.max(worst, Math.abs(pattern[qi * P + s] - own[(r.head * P + qi) * P + s]));
    receiverCheck = worst;
    if (!(worst <= PATTERN_CHECK)) {
      const why = model.precision === 'float16' ? ': the model runs in float16; load it in float32 (residual.precision, --precision float32) to patch paths to heads' : '; path patching to heads is not available for it';
      throw new ResidualError(`the receiver's attention pattern could not be reproduced on this model (off by ${worst.toExponential(2)})${why}`, 'path patching', 'unsupported');
    }
  }
  // Where attention's output joins the residual: resid_mid, or resid_post in parallel blocks (the MLP reads resid_pre).
  const joinPoint = c.family?.parallel ? 'hook_resid_post' : 'hook_resid_mid';

  const effects: PathSenderEffect[] = [];
  let done = 0;
  for (const s of senders) {
    throwIfCancelled(opts.cancel);
    const delta = senderDelta(s);
    let patched: number;
    if (!delta.some((x) => x !== 0)) {
      patched = ldClean; // the sender is the same on both prompts: nothing flows
    } else if (r.kind === 'logits') {
      const run = await model.run({ ids: setup.clean.ids, hooks: ['logits'], steer: [{ layer: L - 1, point: 'hook_resid_post', add: delta }], logitPositions: last, cancel: opts.cancel });
      patched = lastLd(run);
    } else {
      const { attend, kvHead, hooks: inputHooks, rows, z } = receiver!;
      const input = r.input;
      const moved = await model.run({ ids: setup.clean.ids, hooks: [inputHooks[input]], steer: [{ layer: r.layer, point: 'hook_resid_pre', add: delta }], logitPositions: last, cancel: opts.cancel });
      const fresh = { ...rows, [input]: headRows(moved.activations.get(inputHooks[input])!.data, input === 'q' ? H : G, input === 'q' ? r.head : kvHead) };
      const { z: z2 } = attend(fresh.q, fresh.k, fresh.v);
      const dz = new Float64Array(P * E);
      for (let i = 0; i < P * E; i++) dz[i] = z2[i] - z[i];
      const add = new Float32Array(P * D);
      headOut(r.layer, r.head, dz, add);
      const run = await model.run({ ids: setup.clean.ids, hooks: ['logits'], steer: [{ layer: r.layer, point: joinPoint, add }], logitPositions: last, cancel: opts.cancel });
      patched = lastLd(run);
    }
    effects.push({ ...s, name: senderName(s), ld: patched, delta: patched - ldClean, fraction: (patched - ldClean) / (ldCorrupted - ldClean) });
    opts.onProgress?.(++done, senders.length);
  }
  return {
    receiver: r,
    receiverName: receiverName(r),
    clean: { text: req.clean, tokens: setup.clean.tokens },
    corrupted: { text: req.corrupted, tokens: setup.corrupted.tokens },
    answers: setup.answers,
    ldClean,
    ldCorrupted,
    senders: effects,
    nLayers: L,
    nHeads: H,
    ...(receiverCheck !== undefined ? { patternCheck: receiverCheck } : {}),
    ms: performance.now() - t0,
    notes: setup.notes,
  };
}

/**
 * One head's causal attention at layer l from its (rotated) q and k and its v rows ([P, E], float64): the model's
 * score scale, soft-cap and sliding window. Returns the pattern [P, P] and z [P, E].
 */
function receiverAttention(model: Model, l: number, P: number) {
  const c = model.config;
  const E = c.dHead;
  const scale = c.family ? c.family.attnScale : 1 / Math.sqrt(E);
  const cap = c.family?.attnSoftcap;
  const window = c.family?.window[l] ?? 0;
  return (q: Float64Array, k: Float64Array, v: Float64Array) => {
    const pattern = new Float64Array(P * P);
    const z = new Float64Array(P * E);
    const row = new Float64Array(P);
    for (let qi = 0; qi < P; qi++) {
      const from = window > 0 ? Math.max(0, qi - window + 1) : 0;
      let max = -Infinity;
      for (let s = from; s <= qi; s++) {
        let x = 0;
        for (let e = 0; e < E; e++) x += q[qi * E + e] * k[s * E + e];
        x *= scale;
        if (cap) x = cap * Math.tanh(x / cap);
        row[s] = x;
        max = Math.max(max, x);
      }
      let sum = 0;
      for (let s = from; s <= qi; s++) sum += Math.exp(row[s] - max);
      for (let s = from; s <= qi; s++) {
        const a = Math.exp(row[s] - max) / sum;
        pattern[qi * P + s] = a;
        for (let e = 0; e < E; e++) z[qi * E + e] += a * v[s * E + e];
      }
    }
    return { pattern, z };
  };
}
