/**
 * A typed target token tracked through the logit lens: its probability and rank at every read-out of an analysis,
 * at one position (what TransformerLens users do with `accumulated_resid` + `logit_lens` for a chosen token).
 */
import { ResidualError } from './errors';
import type { HookName } from './hooks';
import type { Model } from './model';
import type { Analysis, LensTarget } from './results';
import { unescapeTokenInput } from './tokenizer';

export async function trackLensTarget(model: Model, analysis: Analysis, position: number, text: string): Promise<LensTarget> {
  const ids = text ? model.tokenizer.encode(unescapeTokenInput(text)).ids : [];
  if (ids.length === 0) throw new ResidualError('Type the token to track (for example " the", with its leading space; \\n or ⏎ for a newline, \\t for a tab).');
  if (!(Number.isInteger(position) && position >= 0 && position < analysis.tokens.length)) {
    throw new ResidualError(`position ${position} is outside the analysed text (0–${analysis.tokens.length - 1})`, 'lens target');
  }
  const hooks = analysis.readouts.map((r) => r.hook as HookName);
  const analysed = analysis.tokens.map((t) => t.id);
  const run = await model.run({ ids: analysed, hooks });
  const D = model.config.dModel;
  const resid_ND = new Float32Array(hooks.length * D);
  hooks.forEach((h, i) => resid_ND.set(run.activations.get(h)!.data.subarray(position * D, (position + 1) * D), i * D));
  const lens = await model.lens({ resid_ND, targets: hooks.map(() => ids[0]), k: 1 });
  if (!lens.targetProb_N.every(Number.isFinite)) throw await model.nonFiniteError(analysed, 'logit-lens read-outs');
  const tokenText = model.tokenizer.tokenDisplay(ids[0]);
  return {
    position,
    text,
    tokenId: ids[0],
    tokenText,
    prob: Array.from(lens.targetProb_N),
    rank: Array.from(lens.targetRank_N),
    note: ids.length > 1 ? `“${text}” is ${ids.length} tokens; tracking its first, ${JSON.stringify(tokenText)}.` : undefined,
  };
}
