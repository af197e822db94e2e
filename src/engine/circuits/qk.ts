/**
 * QK attribution: why head h of layer l attends from query position q to key position k.
 *
 * In the replacement model (transcoders for the MLPs, attention patterns and norm scales frozen at this prompt) the
 * residual before block l is a sum over sources — tokens, active features, error nodes — each carried forward
 * linearly through the frozen attention of the blocks below, plus bias terms. The head's query and key are linear
 * in that residual (ln1 with its scale frozen, then W_Q or W_K), so
 *     q = Σ_s q_s + q_bias,   k = Σ_t k_t + k_bias,   score = q · k / √d_head
 * splits exactly into pairs (s, t): q_s · k_t / √d_head, bias pairs included. Each q_s is a d_head-vector: its
 * component e is the exact attribution row of the direction "query dim e", so 2·d_head direction rows of the
 * backward sweep (Attributor.directionRows) give every source's query and key vectors at once.
 *
 * Reported: the score and its real value, the pattern weight, every source's share on the query side (q_s · k) and
 * on the key side (q · k_t), the largest pairs, and the 4 × 4 sums by kind (feature, error, token, bias) — each a
 * complete split of the score.
 *
 * Built for GPT-2-style blocks (learned positions, no rotary embedding, LayerNorm); others are refused.
 */
import { readTensorF32 } from '../checkpoint/safetensors';
import { ResidualError, type CancelToken } from '../errors';
import { hookName } from '../hooks';
import type { Attributor, SourceNode } from './attribution';
import { centerRows } from './frozen';

export type QkSource = SourceNode | { kind: 'bias' };
export type QkKind = QkSource['kind'];
export const QK_KINDS: readonly QkKind[] = ['feature', 'error', 'token', 'bias'];

export interface QkRequest {
  layer: number;
  head: number;
  /** Query position (default: the last). */
  query?: number;
  /** Key position (default: where the head attends most from the query). */
  key?: number;
  /** How many sources per side and pairs to list (default 20). */
  top?: number;
  cancel?: CancelToken;
}

export interface QkShare {
  source: QkSource;
  value: number;
}

export interface QkAttribution {
  layer: number;
  head: number;
  query: number;
  key: number;
  dHead: number;
  /** q · k / √d_head from the split (Σ of every pair). */
  score: number;
  /** The model's own score at this head, query and key (blocks.l.attn.hook_attn_scores). */
  realScore: number;
  /** The attention weight (blocks.l.attn.hook_pattern). */
  pattern: number;
  /** Σ of every source's query-side share q_s · k / √d (bias included): equals `score`. */
  querySum: number;
  keySum: number;
  /** The largest query-side shares (q_s · k / √d), key-side shares (q · k_t / √d) and pairs (q_s · k_t / √d). */
  querySide: QkShare[];
  keySide: QkShare[];
  pairs: { query: QkSource; key: QkSource; value: number }[];
  /** The sum of the pairs listed; the rest of the score is in the pairs not listed. */
  pairsListed: number;
  /** Score by kind of query source × kind of key source (each kind's vectors summed first); sums to `score`. */
  byKind: { query: QkKind; key: QkKind; value: number }[];
  /** Sources with a non-zero share on each side. */
  nQuerySources: number;
  nKeySources: number;
  ms: number;
}

/** Why QK attribution cannot run on this model, or undefined. */
export function qkUnsupported(a: Attributor): string | undefined {
  const c = a.model.config;
  if (c.family) return `QK attribution is built for GPT-2-style blocks (learned positions, no rotary embedding); ${c.architecture} is not one yet`;
  return undefined;
}

export async function qkAttribution(a: Attributor, ids: number[], req: QkRequest): Promise<QkAttribution> {
  const t0 = performance.now();
  const why = qkUnsupported(a);
  if (why) throw new ResidualError(why, a.model.info.dir, 'unsupported');
  const cfg = a.model.config;
  const { dModel: D, nHeads: H, dHead: E, nLayers: L } = cfg;
  const P = ids.length;
  const { layer, head } = req;
  if (!(Number.isInteger(layer) && layer >= 0 && layer < L)) throw new ResidualError(`layer ${layer} does not exist (the model has layers 0..${L - 1})`, 'qk');
  if (!(Number.isInteger(head) && head >= 0 && head < H)) throw new ResidualError(`head ${head} does not exist (layer ${layer} has heads 0..${H - 1})`, 'qk');
  const query = req.query ?? P - 1;
  if (!(Number.isInteger(query) && query >= 0 && query < P)) throw new ResidualError(`query position ${query} does not exist: the prompt has ${P} tokens (0..${P - 1})`, 'qk');
  // The frozen pattern and scales, and the model's own score to check the split against.
  const hooks = [hookName(layer, 'attn.hook_pattern'), hookName(layer, 'attn.hook_attn_scores'), hookName(layer, 'ln1.hook_scale')];
  const run = await a.model.run({ ids, hooks, logitPositions: [P - 1], cancel: req.cancel });
  const pattern = run.activations.get(hooks[0])!.data;
  const row = (h: number, q: number) => pattern.subarray((h * P + q) * P, (h * P + q + 1) * P);
  let key = req.key;
  if (key === undefined) {
    const r = row(head, query);
    key = 0;
    for (let s = 1; s <= query; s++) if (r[s] > r[key]) key = s;
  }
  if (!(Number.isInteger(key) && key >= 0 && key < P)) throw new ResidualError(`key position ${key} does not exist: the prompt has ${P} tokens (0..${P - 1})`, 'qk');
  if (key > query) throw new ResidualError(`key position ${key} is after the query (${query}): a causal head cannot attend there`, 'qk');
  const realScore = run.activations.get(hooks[1])!.data[(head * P + query) * P + key];
  const scale1 = run.activations.get(hooks[2])!.data;

  // q[e] = Σ_d W_Q[d, hE+e] · (g_d (x_d − mean x)/σ + b_d) + b_Q[hE+e] = u_e · x + c[e], u_e centred and scaled.
  const ckpt = a.model.checkpoint;
  const cAttn = readTensorF32(ckpt.tensors.get(`h.${layer}.attn.c_attn.weight`)!); // [D, 3D]: q | k | v
  const cAttnB = readTensorF32(ckpt.tensors.get(`h.${layer}.attn.c_attn.bias`)!);
  const { ln1W_D: g, ln1B_D: b } = a.weights.blocks[layer];
  const side = (offset: number, pos: number) => {
    const dirs: Float32Array[] = [];
    const c = new Float64Array(E);
    for (let e = 0; e < E; e++) {
      const col = offset + head * E + e;
      const u = new Float32Array(D);
      let ce = cAttnB[col];
      for (let d = 0; d < D; d++) {
        u[d] = cAttn[d * 3 * D + col] * g[d];
        ce += cAttn[d * 3 * D + col] * b[d];
      }
      centerRows(u, D);
      for (let d = 0; d < D; d++) u[d] /= scale1[pos];
      dirs.push(u);
      c[e] = ce;
    }
    return { dirs, c };
  };
  const qSide = side(0, query);
  const kSide = side(D, key);
  const items = [...qSide.dirs.map((vector) => ({ vector, layer, hook: 'hook_resid_pre' as const, position: query })), ...kSide.dirs.map((vector) => ({ vector, layer, hook: 'hook_resid_pre' as const, position: key! }))];
  const rows = await a.directionRows(ids, items, { cancel: req.cancel });
  const N = rows.nSources;

  // Source vectors: Qs[n·E + e] (query side), Ks (key side); bias vectors add the rows' constants to W·b + b_Q/K.
  const Qs = new Float64Array(N * E);
  const Ks = new Float64Array(N * E);
  const qBias = new Float64Array(E);
  const kBias = new Float64Array(E);
  const qVec = new Float64Array(E);
  const kVec = new Float64Array(E);
  for (let e = 0; e < E; e++) {
    const rq = rows.rows[e];
    const rk = rows.rows[E + e];
    for (let n = 0; n < N; n++) {
      Qs[n * E + e] = rq.values[n];
      Ks[n * E + e] = rk.values[n];
      qVec[e] += rq.values[n];
      kVec[e] += rk.values[n];
    }
    qBias[e] = rq.constant + qSide.c[e];
    kBias[e] = rk.constant + kSide.c[e];
    qVec[e] += qBias[e];
    kVec[e] += kBias[e];
  }
  const inv = 1 / Math.sqrt(E);
  const dot = (x: Float64Array, xo: number, y: Float64Array, yo: number) => {
    let s = 0;
    for (let e = 0; e < E; e++) s += x[xo + e] * y[yo + e];
    return s * inv;
  };
  const score = dot(qVec, 0, kVec, 0);
  const BIAS = N; // the bias "source" index on both sides
  const vecQ = (n: number) => (n === BIAS ? { a: qBias, o: 0 } : { a: Qs, o: n * E });
  const vecK = (n: number) => (n === BIAS ? { a: kBias, o: 0 } : { a: Ks, o: n * E });
  const shareQ = Float64Array.from({ length: N + 1 }, (_, n) => dot(vecQ(n).a, vecQ(n).o, kVec, 0));
  const shareK = Float64Array.from({ length: N + 1 }, (_, n) => dot(qVec, 0, vecK(n).a, vecK(n).o));
  const describe = (n: number): QkSource => (n === BIAS ? { kind: 'bias' } : rows.source(n));
  const nonZero = (v: Float64Array) => Array.from(v.keys()).filter((n) => v[n] !== 0);
  const byShare = (v: Float64Array) => nonZero(v).sort((x, y) => Math.abs(v[y]) - Math.abs(v[x]) || x - y);
  const top = req.top ?? 20;
  const qOrder = byShare(shareQ);
  const kOrder = byShare(shareK);
  // Pairs among the strongest sources of each side (a source with a small share can still pair strongly with one
  // source; 2·top per side keeps those in view without N² work).
  const qTop = qOrder.slice(0, 2 * top);
  const kTop = kOrder.slice(0, 2 * top);
  const pairs: { q: number; k: number; value: number }[] = [];
  for (const i of qTop) for (const j of kTop) pairs.push({ q: i, k: j, value: dot(vecQ(i).a, vecQ(i).o, vecK(j).a, vecK(j).o) });
  pairs.sort((x, y) => Math.abs(y.value) - Math.abs(x.value));
  const listed = pairs.slice(0, top);
  // By kind: each kind's vectors summed on each side, then every kind pair.
  const kindOf = (n: number): QkKind => (n === BIAS ? 'bias' : rows.source(n).kind);
  const sumQ = new Map(QK_KINDS.map((k) => [k, new Float64Array(E)]));
  const sumK = new Map(QK_KINDS.map((k) => [k, new Float64Array(E)]));
  for (let n = 0; n <= N; n++) {
    const kind = kindOf(n);
    const q = vecQ(n);
    const k = vecK(n);
    const sq = sumQ.get(kind)!;
    const sk = sumK.get(kind)!;
    for (let e = 0; e < E; e++) (sq[e] += q.a[q.o + e]), (sk[e] += k.a[k.o + e]);
  }
  const byKind = QK_KINDS.flatMap((qk) => QK_KINDS.map((kk) => ({ query: qk, key: kk, value: dot(sumQ.get(qk)!, 0, sumK.get(kk)!, 0) })));
  return {
    layer,
    head,
    query,
    key,
    dHead: E,
    score,
    realScore,
    pattern: row(head, query)[key],
    querySum: shareQ.reduce((s, x) => s + x, 0),
    keySum: shareK.reduce((s, x) => s + x, 0),
    querySide: qOrder.slice(0, top).map((n) => ({ source: describe(n), value: shareQ[n] })),
    keySide: kOrder.slice(0, top).map((n) => ({ source: describe(n), value: shareK[n] })),
    pairs: listed.map((p) => ({ query: describe(p.q), key: describe(p.k), value: p.value })),
    pairsListed: listed.reduce((s, p) => s + p.value, 0),
    byKind,
    nQuerySources: qOrder.length,
    nKeySources: kOrder.length,
    ms: performance.now() - t0,
  };
}

/** A source in words: `L1/123 @4 " the"`, `error L0 @2`, `token @3 " cat"`, `bias terms`. */
export function describeQkSource(s: QkSource, tokenText: (pos: number) => string): string {
  switch (s.kind) {
    case 'feature':
      return `L${s.layer}/${s.index} @${s.pos} ${JSON.stringify(tokenText(s.pos))}`;
    case 'error':
      return `error L${s.layer} @${s.pos} ${JSON.stringify(tokenText(s.pos))}`;
    case 'token':
      return `token @${s.pos} ${JSON.stringify(tokenText(s.pos))}`;
    case 'bias':
      return 'bias terms';
  }
}
