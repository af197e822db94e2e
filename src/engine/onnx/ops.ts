/**
 * The pieces every model graph is built from, whatever the family: GPT-2's graph (gpt2.ts), the rotary families'
 * (decoder.ts) and the logit lens (lens.ts) share the steering inputs and hook outputs, how weights are read at each
 * precision, the norms, the MLP activations, soft-capping, and the final norm + unembedding.
 */
import type { ModelConfig } from '../checkpoint/config';
import { familyWeightNames } from '../checkpoint/families';
import type { TensorEntry } from '../checkpoint/safetensors';
import { hookName, type BlockHook, type HookName } from '../hooks';
import { tensorAttrF32, type Dim, type ElemType, type GraphBuilder } from './builder';
import { RESID_POINTS, type ResidPoint } from '../../protocol/results';

/** Names of the additive residual inputs: `blocks.{l}.hook_resid_pre.add` etc. ([B|1, P|1, D]; zeros: no effect). */
/** The residual points with an additive input in every block (steering and patching), as the protocol names them. */
export type SteerPoint = ResidPoint;
export const STEER_POINTS: readonly SteerPoint[] = RESID_POINTS;
export function steerInputName(layer: number, point: SteerPoint): string {
  return `blocks.${layer}.${point}.add`;
}

/**
 * Names of the projection inputs: `blocks.{l}.hook_resid_pre.project` etc. ([1, P|1, D+2]: a unit direction û, then
 * c, then lo). The residual becomes x − max(x·û − c, lo) · û: ablate (c = 0, lo = −∞) removes the component along û,
 * set (c = v, lo = −∞) makes it v, cap (c = v, lo = 0) lowers it to v where it is above. Zeros: no effect.
 */
export function projectInputName(layer: number, point: SteerPoint): string {
  return `blocks.${layer}.${point}.project`;
}

/** The graph input holding the token embedding rows [B, P, D] (what TransformerLens calls hook_embed). */
export const EMBEDDINGS_INPUT = 'input_embeds';

export interface BuiltGraph {
  bytes: Uint8Array;
  /** Every output the graph offers, by hook name, with its dims letters. */
  outputs: Map<HookName, string>;
  /** External files the graph references (relative location → absolute path). */
  externalFiles: Map<string, string>;
}

/**
 * 'float32' (default): weights are cast to float32 once at session creation. 'float16': the graph hands its matrix
 * products float16 weights and float16 inputs (every tensor must be F16, see half-copy.ts), which GPU providers run
 * natively in half the memory. ONNX Runtime's x86 CPU provider has no float16 matrix product: it casts back and
 * folds the casts, so there the result is float32 arithmetic on float16-rounded weights (measured: within 4e-6 of
 * the reference on those weights) and the memory saving is small (memory.ts). Hook outputs are float32 either way.
 */
export type WeightPrecision = 'float32' | 'float16';
export interface GraphOptions {
  precision?: WeightPrecision;
}

/** Names a value as a TransformerLens hook and makes it a graph output (see hookPoints). */
export type HookFn = (name: HookName, value: string, dims: Dim[]) => string;

/**
 * Hook points and steering inputs: `hook` names a value as a TransformerLens hook and makes it a graph output
 * (recorded in `outputs`); `steer` adds the block's additive input at one residual point, then applies its projection
 * input (projectInputName).
 */
export function hookPoints(g: GraphBuilder, outputs: Map<HookName, string>, D: number) {
  const hook: HookFn = (name, value, dims) => {
    const out = g.rename(value, name);
    g.output(name, 'float32', dims);
    outputs.set(name, dims.map((d) => (typeof d === 'number' ? String(d) : d)).join(','));
    return out;
  };
  const blockHook = (l: number, h: BlockHook, value: string, dims: Dim[]) => hook(hookName(l, h), value, dims);
  const steer = (l: number, point: SteerPoint, x: string): string => {
    const name = steerInputName(l, point);
    // A required input: onnxruntime-node cannot feed initializer-backed (overridable) inputs, so callers always
    // pass one; [1,1,D] zeros when not steering.
    g.input(name, 'float32', ['steer_batch', 'steer_pos', D]);
    const added = g.op('Add', [x, name]);
    const proj = g.input(projectInputName(l, point), 'float32', ['project_batch', 'project_pos', D + 2]);
    const last = g.constI64('last_axis', [-1]);
    const slice = (from: number, to: number) => g.op('Slice', [proj, g.constI64('from', [from]), g.constI64('to', [to]), last]);
    const u = slice(0, D);
    const along = g.op('ReduceSum', [g.op('Mul', [added, u]), last], { keepdims: 1 }); // x·û [B, P, 1]
    const amount = g.op('Max', [g.op('Sub', [along, slice(D, D + 1)]), slice(D + 1, D + 2)]);
    return g.op('Sub', [added, g.op('Mul', [amount, u])]);
  };
  return { hook, blockHook, steer };
}

/**
 * Where this call's P positions sit after the S_past cached ones (the KV cache), read from the shapes of the
 * embeddings [B, P, D] and of the first block's cached keys [B, heads, S_past, E] (S_past = 0 without a cache):
 * `ids` [P] are the absolute positions S_past .. S_past+P−1. `mask(window)` is the attention mask [P, S_past+P]:
 * causal (query i, at absolute position S_past+i, sees keys j ≤ S_past+i) and, for a window w > 0, also i − j < w;
 * one per window.
 */
export function cachePositions(g: GraphBuilder, embeds_BPD: string, pastKey0: string) {
  const axis0 = g.constI64('axis0', [0]);
  const nPos = g.op('Gather', [g.op('Shape', [embeds_BPD]), g.constI64('idx1', [1])], { axis: 0 }); // [1]
  const nPast = g.op('Gather', [g.op('Shape', [pastKey0]), g.constI64('idx2', [2])], { axis: 0 }); // [1]
  const start = g.op('Squeeze', [nPast, axis0]);
  const stop = g.op('Add', [start, g.op('Squeeze', [nPos, axis0])]);
  const ids = g.op('Range', [start, stop, g.scalarI64('one', 1)]);
  const onesPS = g.op('ConstantOfShape', [g.op('Concat', [nPos, g.op('Add', [nPast, nPos])], { axis: 0 })], { value: tensorAttrF32(1) });
  const causal = g.cast(g.op('Trilu', [onesPS, start], { upper: 0 }), 'bool');
  const windowed = new Map<number, string>();
  const mask = (window = 0): string => {
    if (!window) return causal;
    let m = windowed.get(window);
    if (!m) {
      const tooFar = g.cast(g.op('Trilu', [onesPS, g.op('Sub', [start, g.scalarI64('window', window)])], { upper: 0 }), 'bool');
      m = g.op('And', [causal, g.op('Not', [tooFar])]);
      windowed.set(window, m);
    }
    return m;
  };
  return { ids, mask };
}

/** Safetensors dtypes a graph reads weights in, as element types. */
const DTYPE_ELEM: Record<string, ElemType> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * How a graph reads its weights, by precision: `f32(name)` a float32 value (vectors, norm gains, biases);
 * `matmul(x, name)` x·W for W [in, out]; `gemmT(x2d, name)` x·Wᵀ for W [out, in] (Linear layout, unembeddings);
 * `gather(name, ids)` embedding rows as float32. Weights are external data straight into the safetensors bytes; half
 * precision is cast to float32 once at session creation (ONNX Runtime folds the Cast of a constant). In float16 mode
 * the products cast their input to float16 and the result back, so no float32 copy of a matrix is ever made.
 */
export function weightAccess(g: GraphBuilder, tensors: Map<string, TensorEntry>, locate: (file: string) => string, externalFiles: Map<string, string>, precision: WeightPrecision) {
  const raws = new Map<string, string>();
  const f32s = new Map<string, string>();
  const raw = (name: string): string => {
    const hit = raws.get(name);
    if (hit) return hit;
    const t = tensors.get(name);
    if (!t) throw new Error(`internal: checkpoint tensor ${name} missing after validation`);
    if (precision === 'float16' && t.dtype !== 'F16') throw new Error(`internal: ${name} is ${t.dtype} in a float16 graph`);
    const location = locate(t.file);
    externalFiles.set(location, t.file);
    const v = g.external(`w.${name}`, DTYPE_ELEM[t.dtype], t.shape, { location, offset: t.dataOffset, length: t.byteLength });
    raws.set(name, v);
    return v;
  };
  const f32 = (name: string): string => {
    const hit = f32s.get(name);
    if (hit) return hit;
    const t = tensors.get(name);
    const v = t?.dtype === 'F32' ? raw(name) : g.cast(raw(name), 'float32');
    f32s.set(name, v);
    return v;
  };
  const half = precision === 'float16';
  const toF16 = (x: string) => g.cast(x, 'float16');
  const toF32 = (x: string) => g.cast(x, 'float32');
  return {
    f32,
    matmul: (x: string, name: string): string => (half ? toF32(g.op('MatMul', [toF16(x), raw(name)])) : g.op('MatMul', [x, f32(name)])),
    gemmT: (x: string, name: string): string =>
      half ? toF32(g.op('Gemm', [toF16(x), raw(name)], { transB: 1 })) : g.op('Gemm', [x, f32(name)], { transB: 1 }),
    gather: (name: string, ids: string): string => (half ? toF32(g.op('Gather', [raw(name), ids], { axis: 0 })) : g.op('Gather', [f32(name), ids], { axis: 0 })),
  };
}
export type WeightAccess = ReturnType<typeof weightAccess>;

/** Which of a norm's values to expose as hook points: its scale and (optionally) its normalized value. */
export interface NormHooks {
  scale?: HookName;
  normalized?: HookName | null;
}

/**
 * The model's norm over the last axis: LayerNorm (GPT-2, GPT-NeoX) or RMSNorm, then the gain (Gemma's offset + w) and
 * the bias when there is one. Hook points as TransformerLens defines them: the scale is √(var + ε) (LayerNorm) or
 * √(mean(x²) + ε) (RMSNorm), shaped [...lead, 1]; the normalized value is before the gain, [...lead, D]. `hook` is
 * needed only when a call asks for hooks; `lead` are the dims before the last (e.g. [B, P]). `.final(x)` applies the
 * final norm, the one before the unembedding.
 */
export function modelNorm(g: GraphBuilder, cfg: ModelConfig, w: (name: string) => string, hook?: HookFn, lead: Dim[] = []) {
  const kind = cfg.family?.norm ?? 'layernorm';
  const offset = cfg.family?.normOffset ?? 0;
  const D = cfg.dModel;
  // Constants shared by every norm of the graph, made on first use.
  let ones_D: string | undefined;
  let zeros_D: string | undefined;
  let axisLast: string | undefined;
  let eps: string | undefined;
  const hooked = (name: HookName | null | undefined, value: string, dims: Dim[]): string => {
    if (!name) return value;
    if (!hook) throw new Error(`internal: norm hook ${name} asked for without a hook function`);
    return hook(name, value, dims);
  };
  const apply = (x: string, weight: string, bias: string | undefined, hooks: NormHooks = {}): string => {
    let normalized: string;
    if (kind === 'layernorm') {
      ones_D ??= g.constF32('ones_D', [D], new Float32Array(D).fill(1));
      zeros_D ??= g.constF32('zeros_D', [D], new Float32Array(D));
      const [n, , invStd] = g.node('LayerNormalization', [x, ones_D, zeros_D], {
        nOut: hooks.scale ? 3 : 1,
        attrs: { axis: -1, epsilon: { float: cfg.lnEps } },
      });
      if (hooks.scale) hooked(hooks.scale, g.op('Reciprocal', [invStd]), [...lead, 1]);
      normalized = n;
    } else {
      axisLast ??= g.constI64('axis_last', [-1]);
      eps ??= g.constF32('eps', [], [cfg.lnEps]);
      const meanSquare = g.op('ReduceMean', [g.op('Mul', [x, x]), axisLast], { keepdims: 1 });
      const scale = hooked(hooks.scale, g.op('Sqrt', [g.op('Add', [meanSquare, eps])]), [...lead, 1]);
      normalized = g.op('Div', [x, scale]);
    }
    const n = hooked(hooks.normalized, normalized, [...lead, D]);
    const gain = offset ? g.op('Add', [w(weight), g.constF32('norm_offset', [], [offset])]) : w(weight);
    const y = g.op('Mul', [n, gain]);
    return bias ? g.op('Add', [y, w(bias)]) : y;
  };
  // The final norm (before the unembedding): GPT-2's ln_f, a family's final norm.
  const finalNames = cfg.family ? familyWeightNames(cfg) : { finalNorm: 'ln_f.weight', finalNormBias: 'ln_f.bias' };
  const final = (x: string, hooks: NormHooks = {}): string => apply(x, finalNames.finalNorm, finalNames.finalNormBias, hooks);
  return Object.assign(apply, { final });
}

/** cap · tanh(x / cap): Gemma-2's soft-capping of attention scores and final logits. */
export function softcap(g: GraphBuilder, x: string, cap: number): string {
  const c = g.constF32('softcap', [], [cap]);
  return g.op('Mul', [g.op('Tanh', [g.op('Div', [x, c])]), c]);
}

/** Logits [N, V] of final-normed rows [N, D]: the unembedding [V, D] read in place, then the final soft-cap if any. */
export function unembed(g: GraphBuilder, cfg: ModelConfig, weights: WeightAccess, xf_ND: string, unembedName: string): string {
  const logits_NV = weights.gemmT(xf_ND, unembedName);
  const cap = cfg.family?.finalSoftcap;
  return cap ? softcap(g, logits_NV, cap) : logits_NV;
}

/**
 * The `logits` output [B, K, V] of a model graph from its final-normed residual [B, P, D], for the K positions in the
 * `logit_positions` input (0..P−1 for all of them). The unembedding is the largest product of a forward pass (a third
 * of GPT-2 small's FLOPs at 128 tokens), and ONNX Runtime runs every node whatever is fetched, so callers that need
 * only the last position's logits ask for that.
 */
export function logitsOutput(g: GraphBuilder, cfg: ModelConfig, weights: WeightAccess, hook: HookFn, xf_BPD: string, unembedName: string): void {
  const { dModel: D, vocabSize: V } = cfg;
  const pos = g.input('logit_positions', 'int64', ['logit_pos']);
  const sel_BKD = g.op('Gather', [xf_BPD, pos], { axis: 1 });
  const rows_ND = g.op('Reshape', [sel_BKD, g.constI64('shape_ND', [-1, D])]);
  const shape_BKV = g.op('Concat', [g.op('Shape', [sel_BKD], { start: 0, end: 2 }), g.constI64('V', [V])], { axis: 0 });
  hook('logits', g.op('Reshape', [unembed(g, cfg, weights, rows_ND, unembedName), shape_BKV]), ['batch', 'logit_pos', V]);
}

/** The MLP activation (hidden_act / activation_function) of x. */
export function activation(g: GraphBuilder, act: ModelConfig['act'], x: string): string {
  switch (act) {
    case 'gelu_new':
    case 'gelu_fast':
    case 'gelu_pytorch_tanh':
      return g.op('Gelu', [x], { approximate: 'tanh' });
    case 'gelu':
      return g.op('Gelu', [x]);
    case 'relu':
      return g.op('Relu', [x]);
    case 'silu':
      return g.op('Mul', [x, g.op('Sigmoid', [x])]);
  }
}
