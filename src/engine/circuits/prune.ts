/**
 * Influence and pruning exactly as circuit-tracer's `graph.py` (reference/formats.md §2): node influence by repeated
 * wᵀÂ on the row-normalised |A|, `find_threshold` on cumulative fractions, node mask, edge scores on the pruned
 * matrix, and the clean-up loop. Works on any adjacency in the node order of attribution.ts.
 */
import { ResidualError } from '../errors';
import { logitNode, tokenNode, type AttributionGraph } from './attribution';

export interface PruneResult {
  nodeMask: Uint8Array;
  /** N×N, 1 = edge kept (rows = targets, columns = sources). */
  edgeMask: Uint8Array;
  /** Influence I = Σ_{k≥1} wᵀÂᵏ on the unpruned graph. */
  influence: Float64Array;
  /** Cumulative influence fraction at each node's rank (what the JSON writes as `influence`). */
  cumulativeInfluence: Float64Array;
  /** circuit-tracer's graph scores on the unpruned graph. */
  replacementScore: number;
  completenessScore: number;
}

/** Â[t,s] = |A[t,s]| / max(Σ_s |A[t,s]|, 1e-10). */
export function normalizeMatrix(A: Float32Array, N: number): Float32Array {
  const out = new Float32Array(N * N);
  for (let t = 0; t < N; t++) {
    let sum = 0;
    const off = t * N;
    for (let s = 0; s < N; s++) sum += Math.abs(A[off + s]);
    const inv = 1 / Math.max(sum, 1e-10);
    if (sum === 0) continue;
    for (let s = 0; s < N; s++) {
      const a = A[off + s];
      if (a !== 0) out[off + s] = Math.abs(a) * inv;
    }
  }
  return out;
}

/** I = Σ_{k≥1} wᵀÂᵏ, iterated until the vector is all zero (the graph is acyclic). */
export function computeInfluence(Ahat: Float32Array, w: Float64Array, N: number): Float64Array {
  let c = new Float64Array(N);
  matvecT(Ahat, w, N, c);
  const total = Float64Array.from(c);
  for (let iter = 0; ; iter++) {
    if (!c.some((x) => x !== 0)) break;
    if (iter >= 1000) throw new ResidualError('influence did not converge after 1000 iterations (is the graph acyclic?)', 'pruning', 'numeric');
    const next = new Float64Array(N);
    matvecT(Ahat, c, N, next);
    for (let i = 0; i < N; i++) total[i] += next[i];
    c = next;
  }
  return total;
}

/** out[s] = Σ_t v[t] · M[t,s], skipping rows whose weight is zero. */
function matvecT(M: Float32Array, v: Float64Array, N: number, out: Float64Array): void {
  for (let t = 0; t < N; t++) {
    const vt = v[t];
    if (vt === 0) continue;
    const off = t * N;
    for (let s = 0; s < N; s++) {
      const m = M[off + s];
      if (m !== 0) out[s] += vt * m;
    }
  }
}

/**
 * circuit-tracer's `find_threshold`: sort descending, cumulative fractions c_j, j* = first j with c_j ≥ θ (clamped
 * to the last index); returns s_{j*}. Zeros never change the cumulative sum, so only non-zero scores are sorted.
 */
export function findThreshold(scores: ArrayLike<number>, theta: number): number {
  let n = 0;
  for (let i = 0; i < scores.length; i++) if (scores[i] !== 0) n++;
  if (n === 0) return 0;
  const s = new Float64Array(n);
  n = 0;
  for (let i = 0; i < scores.length; i++) if (scores[i] !== 0) s[n++] = scores[i];
  s.sort().reverse();
  let total = 0;
  for (const x of s) total += x;
  if (n < scores.length) {
    // With zeros present the clamped index can only reach a zero when θ exceeds what the non-zeros reach.
    let cum = 0;
    for (let j = 0; j < n; j++) {
      cum += s[j];
      if (cum / total >= theta) return s[j];
    }
    return 0;
  }
  let cum = 0;
  for (let j = 0; j < n; j++) {
    cum += s[j];
    if (cum / total >= theta) return s[j];
  }
  return s[n - 1];
}

/** Prunes `g` with circuit-tracer's rules; thresholds in [0, 1] (defaults 0.8 and 0.98). */
export function pruneGraph(g: AttributionGraph, nodeThreshold = 0.8, edgeThreshold = 0.98): PruneResult {
  for (const [name, v] of [['node threshold', nodeThreshold], ['edge threshold', edgeThreshold]] as const) {
    if (!(v >= 0 && v <= 1)) throw new ResidualError(`${name} must be in [0, 1], got ${v}`, 'pruning');
  }
  const N = g.N;
  const A = g.adjacency_NN;
  const w = new Float64Array(N);
  g.logitIds.forEach((_, i) => (w[logitNode(g, i)] = g.logitProbs[i]));
  const isAlwaysKept = (n: number) => n >= tokenNode(g, 0);

  const Ahat = normalizeMatrix(A, N);
  const influence = computeInfluence(Ahat, w, N);
  const nodeThr = findThreshold(influence, nodeThreshold);
  const nodeMask = new Uint8Array(N);
  for (let n = 0; n < N; n++) nodeMask[n] = isAlwaysKept(n) || influence[n] >= nodeThr ? 1 : 0;

  // Pruned matrix, its normalisation and edge scores.
  const Pm = new Float32Array(N * N);
  for (let t = 0; t < N; t++) {
    if (!nodeMask[t]) continue;
    for (let s = 0; s < N; s++) if (nodeMask[s]) Pm[t * N + s] = A[t * N + s];
  }
  const Phat = normalizeMatrix(Pm, N);
  const infl2 = computeInfluence(Phat, w, N);
  for (let i = 0; i < N; i++) infl2[i] += w[i];
  const E = Phat; // scaled in place: E[t,s] = P̂[t,s] · I'[t]
  for (let t = 0; t < N; t++) {
    const f = infl2[t];
    const off = t * N;
    for (let s = 0; s < N; s++) if (E[off + s] !== 0) E[off + s] *= f;
  }
  const edgeThr = findThreshold(E, edgeThreshold);
  const edgeMask = new Uint8Array(N * N);
  for (let i = 0; i < N * N; i++) edgeMask[i] = E[i] >= edgeThr ? 1 : 0;

  // Clean-up: drop nodes with no kept outgoing edge (features, errors), features also without a kept incoming edge.
  const firstToken = tokenNode(g, 0);
  for (;;) {
    let changed = false;
    const hasOut = new Uint8Array(N);
    const hasIn = new Uint8Array(N);
    for (let t = 0; t < N; t++) {
      const off = t * N;
      for (let s = 0; s < N; s++)
        if (edgeMask[off + s]) {
          hasOut[s] = 1;
          hasIn[t] = 1;
        }
    }
    for (let n = 0; n < firstToken; n++) {
      if (!nodeMask[n]) continue;
      if (!hasOut[n] || (n < g.nFeatures && !hasIn[n])) {
        nodeMask[n] = 0;
        changed = true;
      }
    }
    if (!changed) break;
    for (let t = 0; t < N; t++)
      for (let s = 0; s < N; s++) if (!nodeMask[t] || !nodeMask[s]) edgeMask[t * N + s] = 0;
  }

  // Cumulative influence at each node's rank.
  const order = Array.from(influence.keys()).sort((a, b) => influence[b] - influence[a]);
  let total = 0;
  for (const x of influence) total += x;
  const cumulativeInfluence = new Float64Array(N);
  let cum = 0;
  for (const n of order) {
    cum += influence[n];
    cumulativeInfluence[n] = total > 0 ? cum / total : 0;
  }

  // Graph scores (circuit-tracer compute_graph_scores) on the unpruned graph.
  const errStart = g.nFeatures;
  let tokenInf = 0;
  let errInf = 0;
  for (let n = errStart; n < firstToken; n++) errInf += influence[n];
  for (let n = firstToken; n < logitNode(g, 0); n++) tokenInf += influence[n];
  let num = 0;
  let den = 0;
  for (let n = 0; n < N; n++) {
    let errFrac = 0;
    for (let s = errStart; s < firstToken; s++) errFrac += Ahat[n * N + s];
    const weight = influence[n] + w[n];
    num += (1 - errFrac) * weight;
    den += weight;
  }
  return {
    nodeMask,
    edgeMask,
    influence,
    cumulativeInfluence,
    replacementScore: tokenInf + errInf > 0 ? tokenInf / (tokenInf + errInf) : 0,
    completenessScore: den > 0 ? num / den : 0,
  };
}
