/**
 * Patchscopes (Ghandeharioun et al., 2024): read a hidden state by letting the model say what it is. The residual
 * stream at (layer, position) of the source prompt replaces the residual at the placeholder of a target prompt, at a
 * target layer, and the model continues the target prompt greedily. With the identity prompt ("cat → cat; 1135 →
 * 1135; hello → hello; ? →") the continuation tends to name what the hidden state encodes.
 *
 * The replacement is an addition of (h_source − h_target) at that one position and point, so it rides on the model's
 * steering inputs, and only the target prompt's forward carries it: the generated tokens attend to the patched
 * position through the KV cache, as in the paper.
 */
import { ResidualError, type CancelToken } from './errors';
import { hookName } from './hooks';
import type { Model } from './model';
import type { PatchscopeResult, ResidPoint } from './results';
import { generate } from './steering/steer';

/** The identity prompt of the Patchscopes paper; the hidden state goes in place of "?". */
export const IDENTITY_PROMPT = 'cat → cat; 1135 → 1135; hello → hello; ? →';

export interface PatchscopeRequest {
  /** Token ids of the source prompt (as analysed). */
  sourceIds: number[];
  layer: number;
  position: number;
  /** Which residual point is read and written (default hook_resid_post: the block's output). */
  point?: ResidPoint;
  /** The prompt to patch into (default the identity prompt); its last "?" is the placeholder. */
  targetPrompt?: string;
  /** The layer written in the target (default: the layer read). */
  targetLayer?: number;
  /** Tokens to generate (default 8). */
  maxNewTokens?: number;
  cancel?: CancelToken;
}


export type { PatchscopeResult };

export async function patchscope(model: Model, req: PatchscopeRequest): Promise<PatchscopeResult> {
  const c = model.config;
  const point = req.point ?? 'hook_resid_post';
  const targetLayer = req.targetLayer ?? req.layer;
  for (const [what, l] of [['layer', req.layer], ['target layer', targetLayer]] as const) {
    if (!Number.isInteger(l) || l < 0 || l >= c.nLayers) throw new ResidualError(`${what} ${l} does not exist (the model has layers 0..${c.nLayers - 1})`, 'patchscope');
  }
  if (!Number.isInteger(req.position) || req.position < 0 || req.position >= req.sourceIds.length) {
    throw new ResidualError(`position ${req.position} is not in the source (positions 0..${req.sourceIds.length - 1})`, 'patchscope');
  }
  const targetPrompt = req.targetPrompt ?? IDENTITY_PROMPT;
  const target = model.tokenizer.encodeForModel(targetPrompt);
  const q = targetPrompt.lastIndexOf('?');
  if (q < 0) throw new ResidualError(`the target prompt has no "?" to put the hidden state in: ${JSON.stringify(targetPrompt)}`, 'patchscope');
  const placeholder = target.tokens.findIndex((t) => t.start <= q && q < t.end);
  if (placeholder < 0) throw new ResidualError('the target prompt\'s "?" is not a token of its own', 'patchscope');
  const D = c.dModel;
  const read = hookName(req.layer, point);
  const written = hookName(targetLayer, point);
  // The source's hidden state, and the target's own state at the placeholder (what the addition replaces).
  const src = (await model.run({ ids: req.sourceIds, hooks: [read], cancel: req.cancel })).activations.get(read)!.data;
  const tgt = (await model.run({ ids: target.ids, hooks: [written], cancel: req.cancel })).activations.get(written)!.data;
  const delta = new Float32Array(D);
  for (let d = 0; d < D; d++) delta[d] = src[req.position * D + d] - tgt[placeholder * D + d];
  const run = await generate(
    model,
    target.ids,
    { maxNewTokens: req.maxNewTokens ?? 8, temperature: 0, topP: 1, seed: 0 },
    { vector: delta, layer: targetLayer, point, strength: 1, positions: { kind: 'set', positions: [placeholder] } },
    { cancel: req.cancel },
  );
  return { layer: req.layer, position: req.position, point, targetPrompt, targetLayer, placeholder, ids: run.ids, text: run.text, tokens: run.tokens };
}
