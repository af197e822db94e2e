/**
 * Influence and pruning exactly as circuit-tracer's `graph.py` (reference/formats.md §2): node influence by repeated
 * wᵀÂ on the row-normalised |A|, `find_threshold` on cumulative fractions, node mask, edge scores on the pruned
 * matrix, and the clean-up loop. Works on any adjacency in the node order of graph.ts.
 */
import { ResidualError } from '../errors';
import { logitNode, tokenNode, type AttributionGraph } from './graph';

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
  return powerSeries(N, w, (v, out) => matvecT(Ahat, v, N, out));
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


/**
 * |A| in compressed rows (only the non-zero entries: causality leaves most of A empty — no source at a later position
 * or layer feeds a target, and non-target rows are empty), with each row's Σ|A|. Columns ascend within a row.
 */
export interface AbsRows {
  N: number;
  rowPtr: Float64Array;
  col: Int32Array;
  val: Float32Array;
  rowSum: Float64Array;
}

/** Compresses |A| (N×N dense, rows = targets). Rows flagged 0 in `rows` (when given) are known to be empty. */
export function absRows(A: Float32Array, N: number, rows?: Uint8Array): AbsRows {
  const rowPtr = new Float64Array(N + 1);
  let nnz = 0;
  for (let t = 0; t < N; t++) {
    if (!rows || rows[t]) {
      const off = t * N;
      for (let s = 0; s < N; s++) if (A[off + s] !== 0) nnz++;
    }
    rowPtr[t + 1] = nnz;
  }
  const col = new Int32Array(nnz);
  const val = new Float32Array(nnz);
  const rowSum = new Float64Array(N);
  let k = 0;
  for (let t = 0; t < N; t++) {
    if (rowPtr[t + 1] === rowPtr[t]) continue;
    const off = t * N;
    let sum = 0;
    for (let s = 0; s < N; s++) {
      const a = A[off + s];
      if (a !== 0) {
        const v = Math.abs(a);
        col[k] = s;
        val[k++] = v;
        sum += v;
      }
    }
    rowSum[t] = sum;
  }
  return { N, rowPtr, col, val, rowSum };
}

/**
 * One computed row of the attribution matrix, sparse: the sources it can have (below its layer, at positions up to
 * its own) with their edge values, in the order computed, and Σ|value|. Rows whose sources are the same (same top
 * block and position) share one `col` array: every such row writes the same sources in the same order.
 */
export interface SparseRow {
  col: Int32Array;
  val: Float32Array;
  n: number;
  absSum: number;
}

export function newSparseRow(col: Int32Array): SparseRow {
  return { col, val: new Float32Array(col.length), n: 0, absSum: 0 };
}

export function pushSource(row: SparseRow, col: number, value: number): void {
  row.col[row.n] = col;
  row.val[row.n++] = value;
  row.absSum += Math.abs(value);
}

/**
 * Influence I = Σ_{k≥1} wᵀÂᵏ over the rows computed so far (the others count as empty), Â the row-normalised |A| —
 * what circuit-tracer's feature selection ranks the not-yet-computed features by.
 */
export function rowsInfluence(N: number, rows: Map<number, SparseRow>, w: Float64Array): Float64Array {
  const step = (v: Float64Array, out: Float64Array) => {
    for (const [t, r] of rows) {
      const vt = v[t];
      if (vt === 0 || r.absSum === 0) continue;
      const f = vt / Math.max(r.absSum, 1e-10);
      for (let k = 0; k < r.n; k++) out[r.col[k]] += f * Math.abs(r.val[k]);
    }
  };
  return powerSeries(N, w, step);
}

/** Σ_{k≥1} wᵀÂᵏ given `step` (out += vᵀÂ), iterated until the vector is all zero (the graph is acyclic). */
function powerSeries(N: number, w: Float64Array, step: (v: Float64Array, out: Float64Array) => void): Float64Array {
  let c = new Float64Array(N);
  step(w, c);
  const total = Float64Array.from(c);
  for (let iter = 0; ; iter++) {
    if (!c.some((x) => x !== 0)) break;
    if (iter >= 1000) throw new ResidualError('influence did not converge after 1000 iterations (is the graph acyclic?)', 'pruning', 'numeric');
    const next = new Float64Array(N);
    step(c, next);
    for (let i = 0; i < N; i++) total[i] += next[i];
    c = next;
  }
  return total;
}

/**
 * Â on the compressed |A| (circuit-tracer's row normalisation, values rounded to float32 as the dense version does),
 * restricted to the nodes in `mask` when given (rows and columns of other nodes count as zero, as in the pruned
 * matrix). Entries outside the mask are 0.
 */
export function normalizeRows(R: AbsRows, mask?: Uint8Array): Float32Array {
  const { N, rowPtr, col, val } = R;
  const out = new Float32Array(val.length);
  for (let t = 0; t < N; t++) {
    if (mask && !mask[t]) continue;
    let sum = 0;
    for (let k = rowPtr[t]; k < rowPtr[t + 1]; k++) if (!mask || mask[col[k]]) sum += val[k];
    if (sum === 0) continue;
    const inv = 1 / Math.max(sum, 1e-10);
    for (let k = rowPtr[t]; k < rowPtr[t + 1]; k++) if (!mask || mask[col[k]]) out[k] = val[k] * inv;
  }
  return out;
}

/** Influence I = Σ_{k≥1} wᵀÂᵏ with Â given per stored entry of `R` (see `normalizeRows`). */
export function sparseInfluence(R: AbsRows, Ahat: Float32Array, w: Float64Array): Float64Array {
  const { N, rowPtr, col } = R;
  const step = (v: Float64Array, out: Float64Array) => {
    for (let t = 0; t < N; t++) {
      const vt = v[t];
      if (vt === 0) continue;
      for (let k = rowPtr[t], e = rowPtr[t + 1]; k < e; k++) {
        const m = Ahat[k];
        if (m !== 0) out[col[k]] += vt * m;
      }
    }
  };
  return powerSeries(N, w, step);
}

/**
 * `findThreshold` over scores of which only `values` (the first `n`, all positive) are non-zero, at least one score
 * being zero, without sorting: a quickselect on cumulative sums finds the same s_{j*} in linear expected time.
 * `values` is reordered.
 */
export function findThresholdOfNonzeros(values: Float64Array, n: number, theta: number): number {
  if (n === 0) return 0;
  let total = 0;
  for (let i = 0; i < n; i++) total += values[i];
  let lo = 0;
  let hi = n; // candidates values[lo..hi), every value above them already counted in `acc`
  let acc = 0;
  while (hi > lo) {
    // Three-way partition of [lo, hi) around a pivot: > pivot first, then == pivot, then < pivot.
    const pivot = median3(values[lo], values[(lo + hi) >> 1], values[hi - 1]);
    let gt = lo;
    let i = lo;
    let lt = hi;
    while (i < lt) {
      const x = values[i];
      if (x > pivot) {
        values[i] = values[gt];
        values[gt++] = x;
        i++;
      } else if (x < pivot) {
        values[i] = values[--lt];
        values[lt] = x;
      } else i++;
    }
    let sumGt = 0;
    for (let j = lo; j < gt; j++) sumGt += values[j];
    if (gt > lo && (acc + sumGt) / total >= theta) {
      hi = gt;
      continue;
    }
    const sumEq = pivot * (lt - gt);
    if ((acc + sumGt + sumEq) / total >= theta) return pivot;
    acc += sumGt + sumEq;
    lo = lt;
  }
  // θ ≤ 1 not reached only by rounding (summed in another order than the sorted one, which ends exactly at the
  // total): the last non-zero is where the sorted cumulative sum reaches it.
  let min = Infinity;
  for (let i = 0; i < n; i++) min = Math.min(min, values[i]);
  return min;
}

function median3(a: number, b: number, c: number): number {
  return a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
}

/** Prunes `g` with circuit-tracer's rules; thresholds in [0, 1] (defaults 0.8 and 0.98). */
export function pruneGraph(g: AttributionGraph, nodeThreshold = 0.8, edgeThreshold = 0.98): PruneResult {
  for (const [name, v] of [['node threshold', nodeThreshold], ['edge threshold', edgeThreshold]] as const) {
    if (!(v >= 0 && v <= 1)) throw new ResidualError(`${name} must be in [0, 1], got ${v}`, 'pruning');
  }
  const N = g.N;
  const w = new Float64Array(N);
  g.logitIds.forEach((_, i) => (w[logitNode(g, i)] = g.logitProbs[i]));
  const isAlwaysKept = (n: number) => n >= tokenNode(g, 0);

  // Everything below works on the non-zero entries only (the dense matrix is read once).
  const R = absRows(g.adjacency_NN, N, g.rowComputed);
  const { rowPtr, col, val } = R;
  const Ahat = normalizeRows(R);
  const influence = sparseInfluence(R, Ahat, w);
  const nodeThr = findThreshold(influence, nodeThreshold);
  const nodeMask = new Uint8Array(N);
  for (let n = 0; n < N; n++) nodeMask[n] = isAlwaysKept(n) || influence[n] >= nodeThr ? 1 : 0;

  // Pruned matrix (rows and columns of dropped nodes zeroed), its normalisation and edge scores E = P̂[t,s]·I'[t].
  const E = normalizeRows(R, nodeMask); // P̂ per stored entry, scaled in place below: E = P̂[t,s]·I'[t] (float32)
  const infl2 = sparseInfluence(R, E, w);
  for (let i = 0; i < N; i++) infl2[i] += w[i];
  let nE = 0;
  for (let t = 0; t < N; t++) {
    const f = infl2[t];
    for (let k = rowPtr[t]; k < rowPtr[t + 1]; k++) if (E[k] !== 0 && (E[k] *= f) !== 0) nE++;
  }
  const scratch = new Float64Array(nE);
  nE = 0;
  for (let k = 0; k < E.length; k++) if (E[k] !== 0) scratch[nE++] = E[k];
  const edgeThr = nE === N * N ? findThreshold(scratch, edgeThreshold) : findThresholdOfNonzeros(scratch, nE, edgeThreshold);
  const edgeMask = new Uint8Array(N * N);
  const firstToken = tokenNode(g, 0);
  if (edgeThr === 0) {
    // Every entry of the N² passes E ≥ 0, so every node has kept edges and the clean-up changes nothing.
    edgeMask.fill(1);
  } else {
    const kept = new Uint8Array(val.length);
    for (let k = 0; k < E.length; k++) kept[k] = E[k] >= edgeThr ? 1 : 0;
    const rowOf = new Int32Array(val.length);
    for (let t = 0; t < N; t++) for (let k = rowPtr[t]; k < rowPtr[t + 1]; k++) rowOf[k] = t;
    // Clean-up: drop nodes with no kept outgoing edge (features, errors), features also without a kept incoming edge.
    for (;;) {
      let changed = false;
      const hasOut = new Uint8Array(N);
      const hasIn = new Uint8Array(N);
      for (let k = 0; k < kept.length; k++)
        if (kept[k]) {
          hasOut[col[k]] = 1;
          hasIn[rowOf[k]] = 1;
        }
      for (let n = 0; n < firstToken; n++) {
        if (!nodeMask[n]) continue;
        if (!hasOut[n] || (n < g.nFeatures && !hasIn[n])) {
          nodeMask[n] = 0;
          changed = true;
        }
      }
      if (!changed) break;
      for (let k = 0; k < kept.length; k++) if (kept[k] && (!nodeMask[rowOf[k]] || !nodeMask[col[k]])) kept[k] = 0;
    }
    for (let k = 0; k < kept.length; k++) if (kept[k]) edgeMask[rowOf[k] * N + col[k]] = 1;
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
    for (let k = rowPtr[n]; k < rowPtr[n + 1]; k++) if (col[k] >= errStart && col[k] < firstToken) errFrac += Ahat[k];
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
