/**
 * Side-by-side per-block comparison of two analyses (issue 6), e.g. of two selections on the same model.
 */
import { ResidualError } from '../errors';
import type { Analysis, LayerComparison } from '../results';

type Side = LayerComparison['a'];

/**
 * One row per block l (0..L−1), each side the mean over that analysis's positions of:
 * - `updateNorm`, `driftCos`: the block's LayerStats.update_norm and drift_cos;
 * - `residNorm`: ‖resid‖₂ at the block's own read-out (blocks.{l}.hook_resid_pre);
 * - `mlpActive`: the block's MLP active fraction from `perLayer.mlpSparsity`; NaN when the analysis has no `perLayer`;
 * and `targetProb`: the logit-lens probability, at the block's resid_pre read-out, of the final prediction at the
 * last position (target.prob[l][P−1]).
 * The two analyses must come from models with the same number of blocks (else a ResidualError).
 */
export function compareAnalyses(a: Analysis, b: Analysis): LayerComparison[] {
  const L = a.stats.length;
  if (b.stats.length !== L) {
    throw new ResidualError(`cannot compare a ${L}-layer analysis with a ${b.stats.length}-layer one; analyse both with the same model`, 'comparison');
  }
  const out: LayerComparison[] = [];
  for (let l = 0; l < L; l++) out.push({ layer: l, a: side(a, l), b: side(b, l) });
  return out;
}

function side(x: Analysis, l: number): Side {
  const P = x.tokens.length;
  return {
    updateNorm: mean(x.stats[l].update_norm),
    driftCos: mean(x.stats[l].drift_cos),
    residNorm: mean(x.residNorm[l]),
    mlpActive: x.perLayer ? mean(x.perLayer.mlpSparsity.activeFraction[l]) : NaN,
    targetProb: x.target.prob[l][P - 1],
  };
}

function mean(v: readonly number[]): number {
  if (v.length === 0) return NaN;
  let s = 0;
  for (const x of v) s += x;
  return s / v.length;
}
