/**
 * Direct logit attribution: how much each part of the model writes, directly, into one logit (or a logit difference)
 * at one position, through the final norm with its scale frozen at this prompt's value.
 *
 * The final residual is a sum of what every part wrote: the embeddings, each attention head (its z times its slice of
 * W_O), each attention output bias, each MLP's output. With the final norm's scale s frozen, the logit is linear in
 * that residual: LayerNorm gives logit = Σ_d (x_d − mean(x)) · w_d · U_d / s + b · U, RMSNorm logit = x · ((k + w) ⊙ U)
 * / s. So each part's contribution is its vector dotted with one direction, and the contributions sum to the logit
 * (LayerNorm's bias term, `final_norm.bias`, is the remainder). Gemma-2's norms after attention and after the MLP are
 * frozen the same way, so heads and neurons stay separate there. Neurons (post-activation times their row of the MLP's
 * output matrix) are listed for the largest ones but are not added: their sum is the MLP's output without its bias.
 * With a final soft-cap (Gemma-2) the logit attributed is the one before the cap.
 */
import type { Tensor32 } from './dims';
import { ResidualError, throwIfCancelled, type CancelToken } from './errors';
import { familyWeightNames } from './checkpoint/families';
import { readRows, readTensorF32, type TensorEntry } from './checkpoint/safetensors';
import { hookName, type HookName } from './hooks';
import { centerRows } from './circuits/frozen';
import type { Model } from './model';
import { argmax } from './numeric';
import type { DlaComponent, DlaResult } from './results';

export interface DlaOptions {
  /** The token attributed (default: the model's top prediction at the position). */
  target?: number;
  /** With a contrast token, the logit difference target − contrast is attributed. */
  contrast?: number;
  /** Position whose prediction is attributed (default: the last). */
  position?: number;
  /** How many of the largest neurons (by |value|) to list (default 10). */
  topNeurons?: number;
  cancel?: CancelToken;
}

/** A token the user typed, as the one vocabulary id it must be. */
export function tokenIdOf(model: Model, text: string, what: string): number {
  const { ids, tokens } = model.tokenizer.encode(text);
  if (ids.length === 1) return ids[0];
  if (ids.length === 0) throw new ResidualError('empty: give one token of the vocabulary', what);
  throw new ResidualError(
    `${JSON.stringify(text)} is ${ids.length} tokens (${tokens.map((t) => JSON.stringify(t.text)).join(' ')}), not one; give a single token of the vocabulary (often with its leading space)`,
    what,
  );
}

export interface LayerWeights {
  /** W_O as stored and whether it is [X, D] (GPT-2's Conv1D) or [D, X] (a Linear). */
  o: TensorEntry;
  oInOut: boolean;
  oBias?: TensorEntry;
  down: TensorEntry;
  downInOut: boolean;
  /** Gemma-2: the gains of the norms after attention and after the MLP. */
  postAttnNorm?: TensorEntry;
  postMlpNorm?: TensorEntry;
}

export function layerWeights(model: Model, l: number): LayerWeights {
  const t = model.checkpoint.tensors;
  const need = (name: string) => {
    const e = t.get(name);
    if (!e) throw new ResidualError(`weight ${name} is missing`, model.checkpoint.dir);
    return e;
  };
  const c = model.config;
  if (!c.family) {
    const p = `h.${l}.`;
    return { o: need(p + 'attn.c_proj.weight'), oInOut: true, oBias: t.get(p + 'attn.c_proj.bias'), down: need(p + 'mlp.c_proj.weight'), downInOut: true };
  }
  const n = familyWeightNames(c).block(l);
  return {
    o: need(n.o),
    oInOut: false,
    oBias: n.oBias ? t.get(n.oBias) : undefined,
    down: need(n.down),
    downInOut: false,
    postAttnNorm: n.postAttnNorm ? need(n.postAttnNorm) : undefined,
    postMlpNorm: n.postMlpNorm ? need(n.postMlpNorm) : undefined,
  };
}

/** (W · v) over the matrix's input side: for [X, D] stored in→out, Σ_d W[x, d] v[d]; for [D, X] (Linear), Σ_d W[d, x] v[d]. */
function projectBack(w: Float32Array, inOut: boolean, X: number, D: number, v: Float64Array): Float64Array {
  const out = new Float64Array(X);
  if (inOut) {
    for (let x = 0; x < X; x++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += w[x * D + d] * v[d];
      out[x] = s;
    }
  } else {
    for (let d = 0; d < D; d++) {
      const vd = v[d];
      if (vd === 0) continue;
      for (let x = 0; x < X; x++) out[x] += w[d * X + x] * vd;
    }
  }
  return out;
}

const dot = (a: ArrayLike<number>, aOff: number, b: ArrayLike<number>, n: number): number => {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[aOff + i] * b[i];
  return s;
};

export async function directLogitAttribution(model: Model, ids: number[], opts: DlaOptions = {}): Promise<DlaResult> {
  const c = model.config;
  const { dModel: D, nHeads: H, dHead: E, dMlp: M, nLayers: L, vocabSize: V } = c;
  const P = ids.length;
  if (P === 0) throw new ResidualError('nothing to attribute: the text has no tokens', 'input');
  const pos = opts.position ?? P - 1;
  if (!Number.isInteger(pos) || pos < 0 || pos >= P) throw new ResidualError(`position ${pos} does not exist (the text has positions 0..${P - 1})`, 'position');
  for (const [what, id] of [['target', opts.target], ['contrast', opts.contrast]] as const) {
    if (id !== undefined && (!Number.isInteger(id) || id < 0 || id >= V)) throw new ResidualError(`${what} token id ${id} is not in the vocabulary (0..${V - 1})`, what);
  }
  const postNorms = !!c.family?.postNorms; // Gemma-2's norms after attention and the MLP
  const hooks: HookName[] = ['hook_embed', 'ln_final.hook_scale', 'logits', hookName(L - 1, 'hook_resid_post')];
  if (model.hooks.has('hook_pos_embed')) hooks.push('hook_pos_embed');
  for (let l = 0; l < L; l++) {
    hooks.push(hookName(l, 'attn.hook_z'), hookName(l, 'hook_mlp_out'), hookName(l, 'mlp.hook_post'));
    if (postNorms) hooks.push(hookName(l, 'ln1_post.hook_scale'), hookName(l, 'ln2_post.hook_scale'));
  }
  const run = await model.run({ ids, hooks, logitPositions: [pos], cancel: opts.cancel });
  const act = (h: HookName): Tensor32 => run.activations.get(h)!;
  const target = opts.target ?? argmax(act('logits').data.subarray(0, V));
  const contrast = opts.contrast;
  // After the default target is known: a contrast equal to the top prediction is as empty as one equal to a given target.
  if (contrast === target) throw new ResidualError(`the contrast token is the target itself (${JSON.stringify(model.tokenizer.decode([target]))}): the difference would be 0`, 'contrast');

  // The direction in the final residual: u = gain ⊙ (U_target − U_contrast), centred for LayerNorm, over the scale.
  const ckpt = model.checkpoint;
  const U = ckpt.tensors.get(ckpt.unembedName)!;
  const rows = readRows(U, contrast === undefined ? [target] : [target, contrast]);
  const uRow = new Float64Array(D);
  for (let d = 0; d < D; d++) uRow[d] = rows[d] - (contrast === undefined ? 0 : rows[D + d]);
  const names = c.family ? familyWeightNames(c) : { finalNorm: 'ln_f.weight', finalNormBias: 'ln_f.bias' };
  const gain = readTensorF32(ckpt.tensors.get(names.finalNorm)!);
  const biasEntry = names.finalNormBias ? ckpt.tensors.get(names.finalNormBias) : undefined;
  const layerNorm = !c.family || c.family.norm === 'layernorm';
  const offset = c.family?.normOffset ?? 0;
  const scale = act('ln_final.hook_scale').data[pos];
  const dir = new Float64Array(D);
  for (let d = 0; d < D; d++) dir[d] = (offset + gain[d]) * uRow[d];
  if (layerNorm) centerRows(dir, D);
  for (let d = 0; d < D; d++) dir[d] /= scale;

  const components: DlaComponent[] = [];
  const add = (name: string, value: number) => components.push({ name, value });
  const rowAt = (h: HookName) => act(h).data;
  add('embed', dot(rowAt('hook_embed'), pos * D, dir, D));
  if (model.hooks.has('hook_pos_embed')) add('pos_embed', dot(rowAt('hook_pos_embed'), pos * D, dir, D));
  // Every neuron's value, layer by layer; only the largest get a name (a 7B model has about 350k of them).
  const neuronValues = new Float64Array(L * M);
  const X = H * E;
  for (let l = 0; l < L; l++) {
    // Each layer reads W_O and the MLP's output matrix: let other work (and a cancel) in between.
    await new Promise((resolve) => setImmediate(resolve));
    throwIfCancelled(opts.cancel);
    const w = layerWeights(model, l);
    // Gemma-2: what attention writes is normed after it, (Σ_h z_h W_O^h) / s ⊙ (1 + g); frozen, a rescaled direction.
    let attnDir = dir;
    if (w.postAttnNorm) {
      const g = readTensorF32(w.postAttnNorm);
      const s = rowAt(hookName(l, 'ln1_post.hook_scale'))[pos];
      attnDir = dir.map((v, d) => (v * (offset + g[d])) / s);
    }
    const oDir = projectBack(readTensorF32(w.o), w.oInOut, X, D, attnDir); // [X]: W_O · direction
    const z = rowAt(hookName(l, 'attn.hook_z'));
    for (let h = 0; h < H; h++) add(`blocks.${l}.attn.head.${h}`, dot(z, pos * X + h * E, oDir.subarray(h * E, (h + 1) * E), E));
    if (w.oBias) add(`blocks.${l}.attn.bias`, dot(readTensorF32(w.oBias), 0, attnDir, D));
    add(`blocks.${l}.mlp`, dot(rowAt(hookName(l, 'hook_mlp_out')), pos * D, dir, D));
    let mlpDir = dir;
    if (w.postMlpNorm) {
      const g = readTensorF32(w.postMlpNorm);
      const s = rowAt(hookName(l, 'ln2_post.hook_scale'))[pos];
      mlpDir = dir.map((v, d) => (v * (offset + g[d])) / s);
    }
    const downDir = projectBack(readTensorF32(w.down), w.downInOut, M, D, mlpDir); // [M]
    const post = rowAt(hookName(l, 'mlp.hook_post'));
    for (let n = 0; n < M; n++) neuronValues[l * M + n] = post[pos * M + n] * downDir[n];
  }
  const biasTerm = biasEntry ? dot(readTensorF32(biasEntry), 0, uRow, D) : undefined;
  if (biasTerm !== undefined) add('final_norm.bias', biasTerm);

  // The logit itself (before any soft-cap), from the final residual through the final norm: what the parts sum to.
  const x = rowAt(hookName(L - 1, 'hook_resid_post'));
  let mean = 0;
  for (let d = 0; d < D; d++) mean += x[pos * D + d];
  mean = layerNorm ? mean / D : 0;
  let logit = biasTerm ?? 0;
  for (let d = 0; d < D; d++) logit += ((x[pos * D + d] - mean) / scale) * (offset + gain[d]) * uRow[d];
  const sum = components.reduce((s, k) => s + k.value, 0);
  const neurons = largestByMagnitude(neuronValues, opts.topNeurons ?? 10).map((i) => ({ name: `blocks.${Math.floor(i / M)}.mlp.neuron.${i % M}`, value: neuronValues[i] }));
  const tokenOf = (id: number) => ({ id, text: model.tokenizer.decode([id]) });
  return {
    target: tokenOf(target),
    ...(contrast !== undefined ? { contrast: tokenOf(contrast) } : {}),
    position: pos,
    logit,
    components: [...components, ...neurons],
    residual: logit - sum,
    ...(c.family?.finalSoftcap ? { softcap: c.family.finalSoftcap } : {}),
  };
}

/** Indices of the k entries of largest |value|, largest first; among equal magnitudes the earlier index first. */
function largestByMagnitude(values: Float64Array, k: number): number[] {
  const top: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const m = Math.abs(values[i]);
    if (top.length === k && !(m > Math.abs(values[top[k - 1]]))) continue;
    let at = top.length;
    while (at > 0 && m > Math.abs(values[top[at - 1]])) at--;
    top.splice(at, 0, i);
    if (top.length > k) top.pop();
  }
  return top;
}
