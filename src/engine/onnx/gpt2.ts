/**
 * Builds the ONNX graph of a GPT-2-family model from its checkpoint, with every TransformerLens hook point available
 * as a graph output and additive steering inputs on the residual stream of every block.
 *
 * Batch-first shapes as in TransformerLens: input_embeds [B,P,D] (the token embedding rows, read by the engine);
 * resid [B,P,D]; q/k/v/z [B,P,H,E]; scores/pattern
 * [B,H,Q,S]; LN scales [B,P,1]; logits [B,K,V] for the K positions in the `logit_positions` input.
 */
import type { ModelConfig } from '../checkpoint/config';
import type { TensorEntry } from '../checkpoint/safetensors';
import { hookName, type BlockHook, type HookName } from '../hooks';
import { GraphBuilder, tensorAttrF32, type Dim, type ElemType } from './builder';

/** Names of the additive residual inputs: `blocks.{l}.hook_resid_pre.add` etc. ([B|1, P|1, D]; zeros: no effect). */
export type SteerPoint = 'hook_resid_pre' | 'hook_resid_mid' | 'hook_resid_post';
export const STEER_POINTS: SteerPoint[] = ['hook_resid_pre', 'hook_resid_mid', 'hook_resid_post'];
export function steerInputName(layer: number, point: SteerPoint): string {
  return `blocks.${layer}.${point}.add`;
}

export interface BuiltGraph {
  bytes: Uint8Array;
  /** Every output the graph offers, by hook name, with its dims letters. */
  outputs: Map<HookName, string>;
  /** External files the graph references (relative location → absolute path). */
  externalFiles: Map<string, string>;
}

const DTYPE_ELEM: Record<string, ElemType> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

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

/**
 * `locate(absPath)` returns the `location` string to write for an external file; the runtime decides how ONNX Runtime
 * will find it (beside the .onnx, or passed as external data bytes).
 */
export function buildGpt2Graph(cfg: ModelConfig, tensors: Map<string, TensorEntry>, locate: (file: string) => string, opts: GraphOptions = {}): BuiltGraph {
  const g = new GraphBuilder(`residual-gpt2-${cfg.name}`);
  const { nLayers: L, dModel: D, nHeads: H, dHead: E, vocabSize: V } = cfg;
  const externalFiles = new Map<string, string>();
  const outputs = new Map<HookName, string>();
  const B: Dim = 'batch';
  const P: Dim = 'pos';

  // Weights: external data straight into the safetensors bytes; half precision is cast to float32 once at session
  // creation (ONNX Runtime folds the Cast of a constant).
  const weights = weightAccess(g, tensors, locate, externalFiles, opts.precision ?? 'float32');
  const w = weights.f32;
  const mm = weights.matmul;
  const { hook, blockHook, steer } = hookPoints(g, outputs, D);

  // Small constants shared by all layers.
  const ones_D = g.constF32('ones_D', [D], new Float32Array(D).fill(1));
  const zeros_D = g.constF32('zeros_D', [D], new Float32Array(D));
  const shapeBPHE = g.constI64('shape_BPHE', [0, 0, H, E]);
  const shapeBPD = g.constI64('shape_BPD', [0, 0, D]);
  const split3 = g.constI64('split3', [D, D, D]);
  const invSqrtE = g.constF32('inv_sqrt_E', [], [1 / Math.sqrt(E)]);
  const negInf = g.constF32('neg_inf', [], [-Infinity]);
  const axis0 = g.constI64('axis0', [0]);
  const idx1 = g.constI64('idx1', [1]);

  // Token embeddings arrive as rows the engine reads from the checkpoint (EMBEDDINGS_INPUT, also hook_embed), so the
  // embedding table never enters ONNX Runtime's memory unless the unembedding is tied to it.
  const embed = g.input(EMBEDDINGS_INPUT, 'float32', [B, P, D]);
  const nPos = g.op('Gather', [g.op('Shape', [embed]), idx1], { axis: 0 }); // [1]
  // KV cache: every block takes the keys/values of earlier positions ([B,H,S_past,E]; S_past = 0 without a cache)
  // and returns them extended by this call's positions (present_key.{l}), so generation does not recompute the
  // prompt. Positions continue after the cached ones (S_past .. S_past+P-1).
  const pastKey = (l: number) => g.input(`past_key.${l}`, 'float32', [B, H, 'past', E]);
  const pastValue = (l: number) => g.input(`past_value.${l}`, 'float32', [B, H, 'past', E]);
  const past0 = pastKey(0);
  const nPast = g.op('Gather', [g.op('Shape', [past0]), g.constI64('idx2', [2])], { axis: 0 }); // [1]
  const start = g.op('Squeeze', [nPast, axis0]);
  const stop = g.op('Add', [start, g.op('Squeeze', [nPos, axis0])]);
  const posIds = g.op('Range', [start, stop, g.scalarI64('one', 1)]); // [P]
  const posEmbed1 = weights.gather('wpe.weight', posIds); // [P,D]
  const posEmbed = hook('hook_pos_embed', g.op('Expand', [g.op('Unsqueeze', [posEmbed1, axis0]), g.op('Shape', [embed])]), [B, P, D]);
  let resid = g.op('Add', [embed, posEmbed]);

  // Causal mask [P, S_past+P]: query i (absolute position S_past+i) sees keys j <= S_past+i.
  const ps = g.op('Concat', [nPos, g.op('Add', [nPast, nPos])], { axis: 0 });
  const onesPS = g.op('ConstantOfShape', [ps], { value: tensorAttrF32(1) });
  const causal = g.op('Cast', [g.op('Trilu', [onesPS, g.op('Squeeze', [nPast, axis0])], { upper: 0 })], { to: onnx_BOOL });

  /** LayerNorm with its scale and normalized value exposed (TransformerLens: scale = sqrt(var + eps)). */
  const layerNorm = (x: string, weight: string, bias: string, scaleHook: HookName, normHook: HookName | null): string => {
    const [normalized, , invStd] = g.node('LayerNormalization', [x, ones_D, zeros_D], {
      nOut: 3,
      attrs: { axis: -1, epsilon: { float: cfg.lnEps } },
    });
    hook(scaleHook, g.op('Reciprocal', [invStd]), [B, P, 1]);
    const norm = normHook ? hook(normHook, normalized, [B, P, D]) : normalized;
    return g.op('Add', [g.op('Mul', [norm, w(weight)]), w(bias)]);
  };

  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    resid = blockHook(l, 'hook_resid_pre', steer(l, 'hook_resid_pre', resid), [B, P, D]);
    const x1 = layerNorm(resid, p + 'ln_1.weight', p + 'ln_1.bias', hookName(l, 'ln1.hook_scale'), hookName(l, 'ln1.hook_normalized'));

    // Attention: fused QKV projection (Conv1D weights are [in, out], so a plain MatMul).
    const qkv = g.op('Add', [mm(x1, p + 'attn.c_attn.weight'), w(p + 'attn.c_attn.bias')]);
    const [qf, kf, vf] = g.node('Split', [qkv, split3], { nOut: 3, attrs: { axis: -1 } });
    const q = blockHook(l, 'attn.hook_q', g.op('Reshape', [qf, shapeBPHE]), [B, P, H, E]);
    const k = blockHook(l, 'attn.hook_k', g.op('Reshape', [kf, shapeBPHE]), [B, P, H, E]);
    const v = blockHook(l, 'attn.hook_v', g.op('Reshape', [vf, shapeBPHE]), [B, P, H, E]);
    const qT = g.op('Transpose', [q], { perm: [0, 2, 1, 3] }); // [B,H,Q,E]
    const kAll = g.op('Concat', [l === 0 ? past0 : pastKey(l), g.op('Transpose', [k], { perm: [0, 2, 1, 3] })], { axis: 2 }, `present_key.${l}`); // [B,H,S,E]
    const vAll = g.op('Concat', [pastValue(l), g.op('Transpose', [v], { perm: [0, 2, 1, 3] })], { axis: 2 }, `present_value.${l}`);
    g.output(`present_key.${l}`, 'float32', [B, H, 'total', E]);
    g.output(`present_value.${l}`, 'float32', [B, H, 'total', E]);
    const kT = g.op('Transpose', [kAll], { perm: [0, 1, 3, 2] }); // [B,H,E,S]
    const rawScores = g.op('Mul', [g.op('MatMul', [qT, kT]), invSqrtE]);
    const scores = blockHook(l, 'attn.hook_attn_scores', g.op('Where', [causal, rawScores, negInf]), [B, H, P, 'total']);
    const pattern = blockHook(l, 'attn.hook_pattern', g.op('Softmax', [scores], { axis: -1 }), [B, H, P, 'total']);
    const z = blockHook(l, 'attn.hook_z', g.op('Transpose', [g.op('MatMul', [pattern, vAll])], { perm: [0, 2, 1, 3] }), [B, P, H, E]);
    const zFlat = g.op('Reshape', [z, shapeBPD]);
    const attnOut = blockHook(l, 'hook_attn_out', g.op('Add', [mm(zFlat, p + 'attn.c_proj.weight'), w(p + 'attn.c_proj.bias')]), [B, P, D]);

    resid = blockHook(l, 'hook_resid_mid', steer(l, 'hook_resid_mid', g.op('Add', [resid, attnOut])), [B, P, D]);
    // mlp.hook_in: what the MLP reads (ln_2's output, gain and bias applied), as circuit-tracer's transcoders read it.
    const x2 = blockHook(l, 'mlp.hook_in', layerNorm(resid, p + 'ln_2.weight', p + 'ln_2.bias', hookName(l, 'ln2.hook_scale'), hookName(l, 'ln2.hook_normalized')), [B, P, D]);
    const pre = blockHook(l, 'mlp.hook_pre', g.op('Add', [mm(x2, p + 'mlp.c_fc.weight'), w(p + 'mlp.c_fc.bias')]), [B, P, cfg.dMlp]);
    const post = blockHook(l, 'mlp.hook_post', activation(g, cfg.act, pre), [B, P, cfg.dMlp]);
    const mlpOut = blockHook(l, 'hook_mlp_out', g.op('Add', [mm(post, p + 'mlp.c_proj.weight'), w(p + 'mlp.c_proj.bias')]), [B, P, D]);
    resid = blockHook(l, 'hook_resid_post', steer(l, 'hook_resid_post', g.op('Add', [resid, mlpOut])), [B, P, D]);
  }

  const xf = layerNorm(resid, 'ln_f.weight', 'ln_f.bias', 'ln_final.hook_scale', null);
  // Unembedding: lm_head [V,D] or the tied wte [V,D]; Gemm with transB reads it in place (no transposed copy).
  const sel = logitRows(g, xf, D, V);
  const logits2 = weights.gemmT(sel.rows, tensors.has('lm_head.weight') ? 'lm_head.weight' : 'wte.weight');
  hook('logits', g.op('Reshape', [logits2, sel.shape]), [B, 'logit_pos', V]);

  return { bytes: g.encode(), outputs, externalFiles };
}

const onnx_BOOL = 9;

/** The graph input holding the token embedding rows [B, P, D] (what TransformerLens calls hook_embed). */
export const EMBEDDINGS_INPUT = 'input_embeds';

/**
 * Hook points and steering inputs, shared by every graph builder: `hook` names a value as a TransformerLens hook and
 * makes it a graph output (recorded in `outputs`); `steer` adds the block's additive input at one residual point.
 */
export function hookPoints(g: GraphBuilder, outputs: Map<HookName, string>, D: number) {
  const hook = (name: HookName, value: string, dims: Dim[]): string => {
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
    return g.op('Add', [x, name]);
  };
  return { hook, blockHook, steer };
}

/**
 * The final residual rows whose logits the graph computes: input `logit_positions` [K] (0..P−1 for all of them).
 * The unembedding is the largest product of a forward pass (a third of GPT-2 small's FLOPs at 128 tokens), and ONNX
 * Runtime runs every node whatever is fetched, so callers that need only the last position's logits ask for that.
 * Returns the rows as [B·K, D] and the [B, K, V] shape of their logits.
 */
export function logitRows(g: GraphBuilder, xf_BPD: string, D: number, V: number): { rows: string; shape: string } {
  const pos = g.input('logit_positions', 'int64', ['logit_pos']);
  const sel = g.op('Gather', [xf_BPD, pos], { axis: 1 }); // [B, K, D]
  const rows = g.op('Reshape', [sel, g.constI64('shape_ND', [-1, D])]);
  const shape = g.op('Concat', [g.op('Shape', [sel], { start: 0, end: 2 }), g.constI64('V', [V])], { axis: 0 });
  return { rows, shape };
}

/**
 * How a graph reads its weights, by precision: `f32(name)` a float32 value (vectors, norm gains, biases);
 * `matmul(x, name)` x·W for W [in, out]; `gemmT(x2d, name)` x·Wᵀ for W [out, in] (Linear layout, unembeddings);
 * `gather(name, ids)` embedding rows as float32. In float16 mode the products cast their input to float16 and the
 * result back, so no float32 copy of a matrix is ever made.
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
    const v = t?.dtype === 'F32' ? raw(name) : g.op('Cast', [raw(name)], { to: 1 });
    f32s.set(name, v);
    return v;
  };
  const half = precision === 'float16';
  const toF16 = (x: string) => g.op('Cast', [x], { to: 10 });
  const toF32 = (x: string) => g.op('Cast', [x], { to: 1 });
  return {
    f32,
    matmul: (x: string, name: string): string => (half ? toF32(g.op('MatMul', [toF16(x), raw(name)])) : g.op('MatMul', [x, f32(name)])),
    gemmT: (x: string, name: string): string =>
      half ? toF32(g.op('Gemm', [toF16(x), raw(name)], { transB: 1 })) : g.op('Gemm', [x, f32(name)], { transB: 1 }),
    gather: (name: string, ids: string): string => (half ? toF32(g.op('Gather', [raw(name), ids], { axis: 0 })) : g.op('Gather', [f32(name), ids], { axis: 0 })),
  };
}

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
