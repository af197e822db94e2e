/**
 * Per-layer detail of one forward pass: attention head summaries, MLP sparsity, massive
 * activations, spectra of the read-outs against a Marchenko–Pastur baseline, and candidate "voids". Pure functions of
 * the activations (no model calls), so they are cheap and testable on any activation map.
 *
 * Degenerate inputs never produce NaN:
 * - one position (P = 1): `prevToken` has no query and is 0; the spectrum is the single value ‖x‖²/D (entropy 0,
 *   normalised entropy 0);
 * - an all-zero read-out (median |x| = 0): no massive hits (the ratio is undefined), spectrum of zeros, entropy 0;
 * - a non-finite relative update (a zero resid_pre) is left out of the void mean; a block with no finite value at all
 *   has mean update 0 and is not flagged.
 */
import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import type { ModelConfig } from '../checkpoint/config';
import type { Tensor32 } from '../dims';
import { ResidualError } from '../errors';
import { hookName, type HookName } from '../hooks';
import { entropy } from '../numeric';
import type { LayerDetail, HeadSummary, LayerStats, MassiveHit, SpectralLayer } from '../results';

export interface LayerDetailOptions {
  /** A neuron is active where its MLP post-activation exceeds this (default 0.1). */
  mlpThreshold?: number;
  /** A value is massive where |x| exceeds this many times the read-out's median |x| (default 100). */
  massiveRatio?: number;
  /** A block is a candidate void where its mean relative update is below this (default 0.05). */
  voidThreshold?: number;
}

/** At most this many massive hits per read-out (the largest ratios). */
export const MAX_MASSIVE_HITS = 8;
/** At most this many eigenvalues per read-out are reported (entropy and `aboveEdge` use all of them). */
export const MAX_EIGENVALUES = 16;

/** The residual read-outs, in Analysis.readouts order: resid_pre of every block, then the last block's resid_post. */
export function readoutHooks(nLayers: number): HookName[] {
  const out: HookName[] = [];
  for (let l = 0; l < nLayers; l++) out.push(hookName(l, 'hook_resid_pre'));
  out.push(hookName(nLayers - 1, 'hook_resid_post'));
  return out;
}

/** Every hook `layerDetail` reads: attention patterns, MLP post-activations and the residual read-outs. */
export function layerDetailHooks(nLayers: number): HookName[] {
  const out: HookName[] = [];
  for (let l = 0; l < nLayers; l++) out.push(hookName(l, 'attn.hook_pattern'), hookName(l, 'mlp.hook_post'));
  return [...out, ...readoutHooks(nLayers)];
}

export function layerDetail(act: Map<HookName, Tensor32>, cfg: ModelConfig, stats: LayerStats[], opts: LayerDetailOptions = {}): LayerDetail {
  const L = cfg.nLayers;
  const H = cfg.nHeads;
  const D = cfg.dModel;
  const M = cfg.dMlp;
  const mlpThreshold = opts.mlpThreshold ?? 0.1;
  const massiveRatio = opts.massiveRatio ?? 100;
  const voidThreshold = opts.voidThreshold ?? 0.05;
  const need = (name: HookName): Tensor32 => {
    const t = act.get(name);
    if (!t) throw new ResidualError('activation missing: layerDetail needs every hook of layerDetailHooks(nLayers)', name);
    return t;
  };
  const P = need(hookName(0, 'hook_resid_pre')).dims[1];

  // Attention: all patterns in one [L,H,P,P] array, and per-head summaries.
  const attention = new Float32Array(L * H * P * P);
  const heads: HeadSummary[] = [];
  for (let l = 0; l < L; l++) {
    const pat = need(hookName(l, 'attn.hook_pattern'));
    checkSize(pat, H * P * P, hookName(l, 'attn.hook_pattern'));
    attention.set(pat.data.subarray(0, H * P * P), l * H * P * P);
    for (let h = 0; h < H; h++) heads.push({ layer: l, head: h, ...headSummary(pat.data.subarray(h * P * P, (h + 1) * P * P), P) });
  }

  // MLP sparsity: fraction of neurons above the threshold, per layer and position.
  const activeFraction: number[][] = [];
  for (let l = 0; l < L; l++) {
    const post = need(hookName(l, 'mlp.hook_post'));
    checkSize(post, P * M, hookName(l, 'mlp.hook_post'));
    const rowFrac: number[] = [];
    for (let p = 0; p < P; p++) {
      let n = 0;
      for (let m = 0; m < M; m++) if (post.data[p * M + m] > mlpThreshold) n++;
      rowFrac.push(n / M);
    }
    activeFraction.push(rowFrac);
  }

  // Massive activations and spectra, per read-out.
  const massive: LayerDetail['massive']['layers'] = [];
  const spectral: SpectralLayer[] = [];
  for (const hook of readoutHooks(L)) {
    const x = need(hook);
    checkSize(x, P * D, hook);
    const data = x.data.subarray(0, P * D);
    massive.push({ hook, ...massiveHits(data, D, massiveRatio) });
    spectral.push(spectralStats(data, P, D, hook));
  }

  // Voids: blocks whose mean relative update over positions is below the threshold.
  const meanUpdate: number[] = [];
  const voidLayers: number[] = [];
  for (let l = 0; l < L; l++) {
    const s = stats[l];
    if (!s) throw new ResidualError(`layer statistics missing for block ${l}`, 'layerDetail');
    const finite = s.update_norm.filter(Number.isFinite);
    const mean = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : 0;
    meanUpdate.push(mean);
    if (finite.length && mean < voidThreshold) voidLayers.push(l);
  }

  return {
    attention: { dims: [L, H, P, P], data: attention },
    heads,
    mlpSparsity: { threshold: mlpThreshold, activeFraction },
    massive: { ratio: massiveRatio, layers: massive },
    spectral,
    voids: { threshold: voidThreshold, layers: voidLayers, meanUpdate },
  };
}

/** Summary of one head's [P,P] pattern (query × key). Entropy uses 0·ln 0 = 0; prevToken is 0 when P = 1. */
export function headSummary(pattern_QS: ArrayLike<number>, P: number): Omit<HeadSummary, 'layer' | 'head'> {
  let entropySum = 0;
  let prev = 0;
  let first = 0;
  let self = 0;
  for (let q = 0; q < P; q++) {
    entropySum += entropy(pattern_QS, q * P, (q + 1) * P);
    if (q > 0) prev += pattern_QS[q * P + q - 1];
    first += pattern_QS[q * P];
    self += pattern_QS[q * P + q];
  }
  return { entropy: entropySum / P, prevToken: P > 1 ? prev / (P - 1) : 0, firstToken: first / P, self: self / P };
}

/**
 * Values of one read-out [P,D] whose magnitude exceeds `ratio` × the median |x| over all P·D entries; the
 * MAX_MASSIVE_HITS largest, sorted by ratio (then position, then dim). No hits when the median is 0.
 */
export function massiveHits(x_PD: ArrayLike<number>, D: number, ratio: number): { median: number; hits: MassiveHit[] } {
  const n = x_PD.length;
  const abs = new Float64Array(n);
  for (let i = 0; i < n; i++) abs[i] = Math.abs(x_PD[i]);
  const sorted = Float64Array.from(abs).sort();
  const median = n === 0 ? 0 : n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  const hits: MassiveHit[] = [];
  if (!(median > 0) || !Number.isFinite(median)) return { median, hits };
  const cut = ratio * median;
  for (let i = 0; i < n; i++) {
    if (abs[i] > cut && Number.isFinite(abs[i])) hits.push({ pos: Math.floor(i / D), dim: i % D, value: x_PD[i], ratio: abs[i] / median });
  }
  hits.sort((a, b) => b.ratio - a.ratio || a.pos - b.pos || a.dim - b.dim);
  return { median, hits: hits.slice(0, MAX_MASSIVE_HITS) };
}

/**
 * Spectrum of X X^T / D for a read-out X = [P,D] with each row centred over d. Eigenvalues come from ml-matrix's
 * symmetric eigendecomposition; rounding-level negatives are clipped to 0. The entropy is over the eigenvalues above
 * a relative tolerance (λ > 1e-10 · λ_max), `normalizedEntropy` divides by ln of their count (0 when the count is
 * ≤ 1). σ² is the mean squared entry of the centred X, γ = P/D and the MP edge σ²(1+√γ)².
 */
export function spectralStats(x_PD: ArrayLike<number>, P: number, D: number, hook: string): SpectralLayer {
  const X = new Float64Array(P * D);
  let sumSq = 0;
  for (let p = 0; p < P; p++) {
    let mean = 0;
    for (let d = 0; d < D; d++) mean += x_PD[p * D + d];
    mean /= D;
    for (let d = 0; d < D; d++) {
      const v = x_PD[p * D + d] - mean;
      X[p * D + d] = v;
      sumSq += v * v;
    }
  }
  const G: number[][] = [];
  for (let i = 0; i < P; i++) G.push(new Array<number>(P).fill(0));
  for (let i = 0; i < P; i++)
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += X[i * D + d] * X[j * D + d];
      G[i][j] = G[j][i] = s / D;
    }
  const lambda = symmetricEigenvalues(G);
  const max = lambda[0] ?? 0;
  const positive = max > 0 ? lambda.filter((v) => v > max * 1e-10) : [];
  const total = positive.reduce((a, b) => a + b, 0);
  const spectralEntropy = entropy(positive.map((v) => v / total));
  const normalizedEntropy = positive.length > 1 ? spectralEntropy / Math.log(positive.length) : 0;
  const sigma2 = P * D > 0 ? sumSq / (P * D) : 0;
  const gamma = P / D;
  const mpEdge = sigma2 * (1 + Math.sqrt(gamma)) ** 2;
  return {
    hook,
    eigenvalues: lambda.slice(0, MAX_EIGENVALUES),
    entropy: spectralEntropy,
    normalizedEntropy,
    mpEdge,
    sigma2,
    gamma,
    aboveEdge: lambda.filter((v) => v > mpEdge).length,
  };
}

/** Eigenvalues of a symmetric matrix, largest first, rounding-level negatives clipped to 0. */
export function symmetricEigenvalues(G: number[][]): number[] {
  if (G.length === 0) return [];
  if (G.length === 1) return [Math.max(0, G[0][0])];
  const evd = new EigenvalueDecomposition(new Matrix(G), { assumeSymmetric: true });
  return evd.realEigenvalues.map((v) => Math.max(0, v)).sort((a, b) => b - a);
}

function checkSize(t: Tensor32, want: number, name: string): void {
  if (t.data.length < want) throw new ResidualError(`expected ${want} values, got ${t.data.length} (dims [${t.dims.join(', ')}])`, name);
}
