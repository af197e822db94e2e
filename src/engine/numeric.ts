/**
 * Numeric helpers over one row of numbers (a logit row, an attention row, a spectrum), the one copy the engine uses.
 * Sums and results are float64 whatever the input type. The maximum of a row skips NaN entries (a NaN then reaches
 * every result through the sum instead); an exponential is always taken of x − max, so nothing overflows.
 */

/** Largest entry, NaN entries skipped; −∞ for an empty or all-NaN row. */
function rowMax(row: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  return max;
}

/**
 * The index of the largest entry, the lowest index on ties; 0 for an empty row. A NaN entry never wins (a NaN at
 * index 0 is returned only if nothing beats it, which nothing can).
 */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/**
 * Unnormalised softmax(row / T): weights[i] = exp((row[i] − max) / T) and their float64 sum, summed in index order.
 * Callers that compare cumulative mass (the top-p nucleus) use these, so that dividing by the sum does not round two
 * different weights to one probability. A row whose maximum is not finite (all −∞, or a +∞ entry) gives NaN weights.
 */
export function softmaxWeights(row: ArrayLike<number>, temperature = 1): { weights: Float64Array; sum: number } {
  const max = rowMax(row);
  const weights = new Float64Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += weights[i] = Math.exp((row[i] - max) / temperature);
  return { weights, sum };
}

/** softmax(row / T) in float64 (see softmaxWeights): −∞ entries get 0; a NaN entry makes every probability NaN. */
export function softmax(row: ArrayLike<number>, temperature = 1): Float64Array {
  const { weights, sum } = softmaxWeights(row, temperature);
  for (let i = 0; i < weights.length; i++) weights[i] /= sum;
  return weights;
}

/**
 * ln Σ exp(row[i]) in float64, shifted by the maximum. −∞ for an empty or all −∞ row, +∞ when an entry is +∞, NaN when
 * an entry is NaN.
 */
export function logSumExp(row: ArrayLike<number>): number {
  const max = rowMax(row);
  if (max === -Infinity || max === Infinity) {
    // No finite shift: the sum is 0 or +∞, unless a NaN (which the maximum skipped) makes it NaN.
    for (let i = 0; i < row.length; i++) if (Number.isNaN(row[i])) return NaN;
    return max;
  }
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  return max + Math.log(sum);
}

/** log softmax of one row in float64; undefined when any entry is not finite (NaN or ±∞). */
export function logSoftmax(row: ArrayLike<number>): Float64Array | undefined {
  for (let i = 0; i < row.length; i++) if (!Number.isFinite(row[i])) return undefined;
  const lse = logSumExp(row);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i] - lse;
  return out;
}

/**
 * KL(p ‖ q) in nats from log-probabilities of the same length, summed in index order; terms with p = 0 contribute 0,
 * and rounding below 0 is clipped to 0.
 */
export function klDivergence(logP: ArrayLike<number>, logQ: ArrayLike<number>): number {
  let kl = 0;
  for (let i = 0; i < logP.length; i++) {
    const p = Math.exp(logP[i]);
    if (p > 0) kl += p * (logP[i] - logQ[i]);
  }
  return Math.max(0, kl);
}

/**
 * The k largest entries of a logit row, largest first (lower id first on ties), with their softmax probabilities over
 * the whole row (see softmax). Fewer than k when the row is shorter.
 */
export function topK(logits: ArrayLike<number>, k: number): { id: number; logit: number; prob: number }[] {
  const probs = softmax(logits);
  // Insertion into a sorted list of at most k ids: one pass over the row, no sort of all V entries.
  const best: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    if (best.length < k || logits[i] > logits[best[best.length - 1]]) {
      best.push(i);
      best.sort((a, b) => logits[b] - logits[a] || a - b);
      if (best.length > k) best.pop();
    }
  }
  return best.map((id) => ({ id, logit: logits[id], prob: probs[id] }));
}

/**
 * Shannon entropy in nats, −Σ p ln p, of `p[start..end)` (the whole array by default), summed in index order.
 * Entries that are not > 0 contribute nothing (0 · ln 0 = 0); the entries are not renormalised.
 */
export function entropy(p: ArrayLike<number>, start = 0, end = p.length): number {
  let h = 0;
  for (let i = start; i < end; i++) {
    const x = p[i];
    if (x > 0) h -= x * Math.log(x);
  }
  return h;
}

/** Euclidean norm. */
export function l2(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

/**
 * The `k` largest values of `z` (largest first) and the `k` smallest (smallest first), as [index, value]; ties in
 * index order.
 */
export function extremes(z: ArrayLike<number>, k: number): { top: [number, number][]; bottom: [number, number][] } {
  const order = Array.from({ length: z.length }, (_, i) => i).sort((a, b) => z[b] - z[a] || a - b);
  const pick = (ids: number[]) => ids.map((v) => [v, z[v]] as [number, number]);
  return { top: pick(order.slice(0, k)), bottom: pick(order.slice(-k).reverse()) };
}
