/**
 * How well each transcoder reconstructs its MLP on this prompt, and whether the set reads the input it says it reads.
 *
 * A transcoder predicts `blocks.l.hook_mlp_out` from an input hook. Which vector that hook holds depends on how the
 * model was processed when the set was trained: `ln2.hook_normalized` is (x − mean)/scale with LayerNorm folded
 * (TransformerLens's default, and what Residual computes) but the same name held the output after gain and bias in an
 * unfolded model; `mlp.hook_in` is after them; `hook_resid_mid` is before the norm. A set read through the wrong one
 * still yields active features and an exact-looking graph: only the reconstruction shows it. So every graph measures
 * the fraction of the MLP output's variance its transcoder leaves unexplained (FVU) per layer and, when a layer is
 * worse than `FVU_LIMIT`, encodes the same prompt through the other inputs and says which one fits.
 */
import { hookName, type HookName } from '../hooks';
import type { Model } from '../model';
import { throwIfCancelled, type CancelToken } from '../errors';
import type { FeatureEncoder, LayerActivations } from './features';
import { skipProduct } from './frozen';
import { readDecoderInto, readFiniteVector, readSkip, SUPPORTED_INPUTS, writersOf, type TranscoderInput, type TranscoderSet } from './transcoders';

/** Above this FVU a layer's reconstruction is too poor to trust the set's input convention unchecked. */
export const FVU_LIMIT = 0.5;
/** A layer this much (absolute FVU) above the set's own report is checked too: one prompt varies, not by this much. */
export const FVU_ABOVE_REPORT = 0.25;

/** Whether a layer's FVU on this prompt calls for the check: above FVU_LIMIT, or far above the set's report. */
export function poorReconstruction(fvu: number, reported?: number): boolean {
  return !(fvu <= FVU_LIMIT) || (reported !== undefined && fvu > reported + FVU_ABOVE_REPORT);
}

export interface Reconstruction {
  /** The input hook the set's files name. */
  input: TranscoderInput;
  /** What replaces the MLPs when it is not one plain transcoder per layer. */
  replacement?: 'cross-layer transcoder' | 'skip transcoders';
  /** Per layer: ‖mlp_out − reconstruction‖² / ‖mlp_out − its mean over positions‖² on this prompt. */
  fvu: number[];
  /** Per layer: the FVU the set reports on its own data (null where it reports none). */
  reported: (number | null)[];
  /** Positions left out of the sums (a leading BOS, whose MLP output transcoders are not trained to reproduce). */
  skipped: number;
  /** When a layer is above FVU_LIMIT: the FVU per layer with each other input hook. */
  alternatives?: { input: TranscoderInput; fvu: number[] }[];
  /** The input hook that fits clearly better than the set's own (lower FVU on most layers and on average), if any. */
  better?: TranscoderInput;
}

/**
 * FVU of one layer: Σ ‖y_p − ŷ_p‖² / Σ ‖y_p − ȳ‖² over positions p ≥ `from` (ȳ: the mean over those positions).
 * `err_PD` is y − ŷ. With one position the variance is that position's squared norm (ȳ = 0), so a single token still
 * gets a number.
 */
export function fractionUnexplained(y_PD: ArrayLike<number>, err_PD: ArrayLike<number>, P: number, D: number, from = 0): number {
  const n = P - from;
  if (n <= 0) return NaN;
  const mean = new Float64Array(D);
  if (n > 1) for (let p = from; p < P; p++) for (let d = 0; d < D; d++) mean[d] += y_PD[p * D + d] / n;
  let num = 0;
  let den = 0;
  for (let p = from; p < P; p++)
    for (let d = 0; d < D; d++) {
      const e = err_PD[p * D + d];
      const c = y_PD[p * D + d] - mean[d];
      num += e * e;
      den += c * c;
    }
  return den > 0 ? num / den : num > 0 ? Infinity : 0;
}

/**
 * y − (Σ act · W_dec[f] + b_dec) at every position: what a transcoder misses. `dec_nD` holds the decoder rows of
 * `la`'s active features in order (readDecoderRows), `bDec_D` its b_dec.
 */
export function reconstructionError(la: LayerActivations, dec_nD: Float32Array, bDec_D: Float32Array, mlpOut_PD: Float32Array, P: number, D: number): Float64Array {
  const err = new Float64Array(P * D);
  for (let p = 0; p < P; p++) {
    for (let d = 0; d < D; d++) err[p * D + d] = mlpOut_PD[p * D + d] - bDec_D[d];
    for (let j = la.start[p]; j < la.start[p + 1]; j++) {
      const a = la.act[j];
      for (let d = 0; d < D; d++) err[p * D + d] -= a * dec_nD[j * D + d];
    }
  }
  return err;
}

/**
 * y − (what the replacement writes into layer `j`'s MLP output) at every position: b_dec, every writing layer's
 * active features (act × its decoder row into j: layer j's own, or in a CLT those of every layer up to j), and a skip
 * transcoder's x·W_skipᵀ. `into[i]` holds what the active features of the i-th layer of `writersOf(set, j)` write into
 * j (readDecoderInto), `input_PD` layer j's input hook and `wSkip` its W_skip (a skip transcoder only; W_skip is read
 * from the file when not given).
 */
export function replacementError(
  set: TranscoderSet,
  j: number,
  acts: LayerActivations[],
  into: Float32Array[],
  mlpOut_PD: Float32Array,
  input_PD: ArrayLike<number> | undefined,
  P: number,
  wSkip?: Float32Array,
): Float64Array {
  const t = set.layers[j];
  const D = t.dOut;
  const writers = writersOf(set, j);
  const err = reconstructionError(acts[j], into[writers.indexOf(j)], readFiniteVector(j, t.bDec), mlpOut_PD, P, D);
  for (const [wi, l] of writers.entries()) {
    if (l === j) continue;
    const la = acts[l];
    const rows = into[wi];
    for (let p = 0; p < P; p++)
      for (let i = la.start[p]; i < la.start[p + 1]; i++) {
        const a = la.act[i];
        for (let d = 0; d < D; d++) err[p * D + d] -= a * rows[i * D + d];
      }
  }
  if (t.skip) {
    const skip = skipProduct(wSkip ?? readSkip(t), input_PD!, P, t.dIn, D);
    for (let i = 0; i < P * D; i++) err[i] -= skip[i];
  }
  return err;
}

/** The first position the sums count: 1 when the prompt starts with the tokenizer's BOS and has more than it. */
export function firstCountedPosition(model: Model, ids: number[]): number {
  return ids.length > 1 && model.tokenizer.bosId !== undefined && ids[0] === model.tokenizer.bosId ? 1 : 0;
}

/**
 * Encodes the prompt through every other input hook and measures each one's FVU per layer; `better` names the one
 * that fits: FVU at most FVU_LIMIT on average, half the set's own input's or less, and lower on most layers.
 */
export async function tryOtherInputs(
  model: Model,
  set: TranscoderSet,
  encoder: FeatureEncoder,
  ids: number[],
  own: Reconstruction,
  opts: { release?: (layer: number) => Promise<void>; cancel?: CancelToken; skips?: (Float32Array | undefined)[] } = {},
): Promise<Reconstruction> {
  const L = set.layers.length;
  const P = ids.length;
  const others = SUPPORTED_INPUTS.filter((i) => i !== own.input);
  const hooks: HookName[] = [];
  for (let l = 0; l < L; l++) {
    hooks.push(hookName(l, 'hook_mlp_out'));
    for (const i of others) hooks.push(hookName(l, i));
  }
  const run = await model.run({ ids, hooks, logitPositions: [P - 1], cancel: opts.cancel });
  const from = firstCountedPosition(model, ids);
  const alternatives = others.map((input) => ({ input, fvu: [] as number[], acts: [] as LayerActivations[] }));
  // Layer by layer, each layer's encoder serving every other input before it is released (a streamed set loads it once).
  for (let l = 0; l < L; l++) {
    for (const alt of alternatives) {
      throwIfCancelled(opts.cancel);
      alt.acts.push(await encoder.encode(l, run.activations.get(hookName(l, alt.input))!.data, P));
    }
    await opts.release?.(l);
  }
  // Then each layer's error: a CLT's layer is written by the features of every layer up to it.
  for (const alt of alternatives) {
    for (let l = 0; l < L; l++) {
      const y = run.activations.get(hookName(l, 'hook_mlp_out'))!.data;
      const into = writersOf(set, l).map((w) => readDecoderInto(set.layers[w], alt.acts[w].feature, l));
      const err = replacementError(set, l, alt.acts, into, y, run.activations.get(hookName(l, alt.input))!.data, P, opts.skips?.[l]);
      alt.fvu.push(fractionUnexplained(y, err, P, set.layers[l].dOut, from));
    }
  }
  const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
  const best = alternatives.reduce((a, b) => (mean(b.fvu) < mean(a.fvu) ? b : a));
  const wins = best.fvu.filter((x, l) => x < own.fvu[l]).length;
  // It must fit, not merely be less bad: a set that matches no input (another model's) names none.
  const better = mean(best.fvu) <= FVU_LIMIT && mean(best.fvu) * 2 <= mean(own.fvu) && wins * 2 > L ? best.input : undefined;
  return { ...own, alternatives: alternatives.map(({ input, fvu }) => ({ input, fvu })), better };
}

/** One sentence on a reconstruction that is too poor, naming the worst layer, the numbers and the input that fits. */
export function reconstructionWarning(r: Reconstruction): string | undefined {
  const poor = r.fvu.map((_, l) => l).filter((l) => poorReconstruction(r.fvu[l], r.reported[l] ?? undefined));
  if (!poor.length) return undefined;
  const excess = (l: number) => (Number.isNaN(r.fvu[l]) ? Infinity : r.fvu[l] - (r.reported[l] ?? 0));
  const worst = poor.reduce((a, b) => (excess(b) > excess(a) ? b : a));
  const fvu = (x: number) => (!Number.isFinite(x) ? String(x) : x < 10 ? x.toFixed(2) : x.toPrecision(3));
  const report = r.reported[worst];
  let s = `layer ${worst}'s transcoder reconstructs its MLP output poorly on this prompt: FVU ${fvu(r.fvu[worst])}${report !== null ? ` (the set reports ${fvu(report)})` : ''} reading blocks.${worst}.${r.input}`;
  if (r.better) {
    const alt = r.alternatives!.find((a) => a.input === r.better)!;
    s += `, ${fvu(alt.fvu[worst])} reading blocks.${worst}.${r.better}: the set was most likely trained on ${r.better} (its files name ${r.input}), so this graph's features are not the set's`;
  } else s += '; no other input hook fits better, so the transcoders may not match this model (or this prompt is far from their training data)';
  return s;
}
