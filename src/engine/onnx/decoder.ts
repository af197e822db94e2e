/**
 * The ONNX graph of the rotary decoder families (Llama, Qwen2, Qwen3, Gemma-2, GPT-NeoX/Pythia), with the same
 * hook outputs, steering inputs and KV cache as the GPT-2 graph (gpt2.ts), plus the hooks these families add
 * (`attn.hook_rot_q/k`, `mlp.hook_pre_linear`, Gemma-2's `ln1_post/ln2_post.hook_scale`).
 *
 * Conventions that differ from GPT-2, following TransformerLens:
 * - no `hook_pos_embed` (positions enter as rotations of q and k); `hook_embed` (the input rows) is what enters the
 *   residual stream (Gemma's √d_model scaling included);
 * - `attn.hook_k/v` and the cache have G key/value heads (grouped-query attention); `hook_attn_scores` and
 *   `hook_pattern` have all H query heads;
 * - `hook_q/hook_k` are the projections, `hook_rot_q/hook_rot_k` after the (Qwen3) head norm and the rotation;
 * - RMSNorm's `hook_scale` is √(mean(x²) + ε) and `hook_normalized` is x / scale (before the weight);
 * - `mlp.hook_in` is what the MLP reads (ln2's output with its gain), as circuit-tracer's transcoders read it;
 * - gated MLPs: `mlp.hook_pre` = gate(x), `mlp.hook_pre_linear` = up(x), `mlp.hook_post` = act(gate) ⊙ up;
 * - parallel blocks (GPT-NeoX use_parallel_residual): both branches read resid_pre; `hook_resid_mid` is
 *   resid_pre + attn_out (the MLP does not read it), so steering there adds to the block's output.
 */
import type { ModelConfig } from '../checkpoint/config';
import { familyWeightNames, ropeInvFreq } from '../checkpoint/families';
import type { TensorEntry } from '../checkpoint/safetensors';
import { hookName, type HookName } from '../hooks';
import { GraphBuilder, type Dim } from './builder';
import {
  activation,
  cachePositions,
  EMBEDDINGS_INPUT,
  hookPoints,
  logitsOutput,
  modelNorm,
  softcap,
  weightAccess,
  type BuiltGraph,
  type GraphOptions,
} from './ops';

export function buildDecoderGraph(cfg: ModelConfig, tensors: Map<string, TensorEntry>, unembedName: string, locate: (file: string) => string, opts: GraphOptions = {}): BuiltGraph {
  const f = cfg.family;
  if (!f) throw new Error('internal: buildDecoderGraph needs a family config');
  const names = familyWeightNames(cfg);
  const g = new GraphBuilder(`residual-${cfg.architecture}-${cfg.name}`);
  const { nLayers: L, dModel: D, nHeads: H, dHead: E, dMlp: M } = cfg;
  const G = cfg.nKvHeads ?? H;
  const R = f.rope.dims;
  const externalFiles = new Map<string, string>();
  const outputs = new Map<HookName, string>();
  const B: Dim = 'batch';
  const P: Dim = 'pos';

  const weights = weightAccess(g, tensors, locate, externalFiles, opts.precision ?? 'float32');
  const w = weights.f32;
  // Hugging Face Linear weights are [out, in]: Gemm with transB reads them in place (no transposed copy); the
  // [B, P, in] input is flattened to rows and the result reshaped back.
  const linear = (x: string, weight: string, bias?: string): string => {
    const out = tensors.get(weight)!.shape[0];
    const rows = g.op('Reshape', [x, g.constI64('shape_rows', [-1, tensors.get(weight)!.shape[1]])]);
    const y = g.op('Reshape', [weights.gemmT(rows, weight), g.op('Concat', [bpShape, g.constI64('out', [out])], { axis: 0 })]);
    return bias ? g.op('Add', [y, w(bias)]) : y;
  };
  const { hook, blockHook, steer } = hookPoints(g, outputs, D);
  const norm = modelNorm(g, cfg, w, hook, [B, P]);

  const shapeBPHE = g.constI64('shape_BPHE', [0, 0, H, E]);
  const shapeBPGE = g.constI64('shape_BPGE', [0, 0, G, E]);
  const shapeBPX = g.constI64('shape_BPX', [0, 0, H * E]);
  const negInf = g.constF32('neg_inf', [], [-Infinity]);

  // Token embeddings arrive as rows read by the engine, Gemma's √d_model scale applied (see gpt2.ts).
  const embeds = g.input(EMBEDDINGS_INPUT, 'float32', [B, P, D]);
  const bpShape = g.op('Shape', [embeds], { start: 0, end: 2 }); // [B, P]
  const pastKey = (l: number) => g.input(`past_key.${l}`, 'float32', [B, G, 'past', E]);
  const pastValue = (l: number) => g.input(`past_value.${l}`, 'float32', [B, G, 'past', E]);
  const past0 = pastKey(0);
  // Positions after the cached ones, and the attention masks (causal; sliding layers also i − j < window).
  const positions = cachePositions(g, embeds, past0);

  // Rotary tables for absolute positions S_past .. S_past+P−1: angle[p, i] = pos · invFreq[i], duplicated over the
  // two halves (rotate-half layout), shaped [1, P, 1, R] to broadcast over batch and heads.
  const posF = g.cast(positions.ids, 'float32'); // [P]
  const invFreq = ropeInvFreq(f.rope);
  const angles = g.op('Mul', [g.op('Unsqueeze', [posF, g.constI64('axis1', [1])]), g.constF32('inv_freq', [1, R / 2], invFreq)]); // [P, R/2]
  const angles2 = g.op('Concat', [angles, angles], { axis: 1 }); // [P, R]
  const shape1P1R = g.constI64('shape_1P1R', [1, -1, 1, R]);
  const cos = g.op('Reshape', [g.op('Cos', [angles2]), shape1P1R]);
  const sin = g.op('Reshape', [g.op('Sin', [angles2]), shape1P1R]);
  const rotate = (x: string): string => {
    // x [B,P,heads,E]: the first R dims rotate in pairs (i, i + R/2); the rest pass through (partial rotary).
    const parts = R === E ? [x] : g.node('Split', [x, g.constI64('split_rope', [R, E - R])], { nOut: 2, attrs: { axis: -1 } });
    const [x1, x2] = g.node('Split', [parts[0], g.constI64('split_half', [R / 2, R / 2])], { nOut: 2, attrs: { axis: -1 } });
    const rotHalf = g.op('Concat', [g.op('Neg', [x2]), x1], { axis: -1 });
    const rotated = g.op('Add', [g.op('Mul', [parts[0], cos]), g.op('Mul', [rotHalf, sin])]);
    return R === E ? rotated : g.op('Concat', [rotated, parts[1]], { axis: -1 });
  };

  let resid = embeds;

  const attnScale = g.constF32('attn_scale', [], [f.attnScale]);
  for (let l = 0; l < L; l++) {
    const n = names.block(l);
    resid = blockHook(l, 'hook_resid_pre', steer(l, 'hook_resid_pre', resid), [B, P, D]);
    const x1 = norm(resid, n.ln1, n.ln1Bias, { scale: hookName(l, 'ln1.hook_scale'), normalized: hookName(l, 'ln1.hook_normalized') });

    let qf: string, kf: string, vf: string;
    if (n.qkv) {
      // GPT-NeoX: one projection whose output is [H, 3, E] per position.
      const qkv = g.op('Reshape', [linear(x1, n.qkv, n.qkvBias), g.constI64('shape_BPH3E', [0, 0, H, 3 * E])]);
      [qf, kf, vf] = g.node('Split', [qkv, g.constI64('split_qkv', [E, E, E])], { nOut: 3, attrs: { axis: -1 } });
    } else {
      qf = g.op('Reshape', [linear(x1, n.q!, n.qBias), shapeBPHE]);
      kf = g.op('Reshape', [linear(x1, n.k!, n.kBias), shapeBPGE]);
      vf = g.op('Reshape', [linear(x1, n.v!, n.vBias), shapeBPGE]);
    }
    let q = blockHook(l, 'attn.hook_q', qf, [B, P, H, E]);
    let k = blockHook(l, 'attn.hook_k', kf, [B, P, G, E]);
    const v = blockHook(l, 'attn.hook_v', vf, [B, P, G, E]);
    if (n.qNorm && n.kNorm) {
      // Qwen3: the family's RMSNorm of each head's vector (weight [E]).
      q = norm(q, n.qNorm, undefined);
      k = norm(k, n.kNorm, undefined);
    }
    const qRot = blockHook(l, 'attn.hook_rot_q', rotate(q), [B, P, H, E]);
    const kRot = blockHook(l, 'attn.hook_rot_k', rotate(k), [B, P, G, E]);

    const qT = g.op('Transpose', [qRot], { perm: [0, 2, 1, 3] }); // [B,H,Q,E]
    const kAll = g.op('Concat', [l === 0 ? past0 : pastKey(l), g.op('Transpose', [kRot], { perm: [0, 2, 1, 3] })], { axis: 2 }, `present_key.${l}`); // [B,G,S,E]
    const vAll = g.op('Concat', [pastValue(l), g.op('Transpose', [v], { perm: [0, 2, 1, 3] })], { axis: 2 }, `present_value.${l}`);
    g.output(`present_key.${l}`, 'float32', [B, G, 'total', E]);
    g.output(`present_value.${l}`, 'float32', [B, G, 'total', E]);
    // Grouped-query attention: query head h reads key/value head h / (H/G); the G heads are repeated, not copied
    // per query, by an Expand over a group axis.
    const expandKv = (x: string): string => {
      if (G === H) return x;
      const x5 = g.op('Unsqueeze', [x, g.constI64('axis2', [2])]); // [B,G,1,S,E]
      const shape = g.op('Shape', [x5]);
      const target = g.op('Concat', [g.op('Slice', [shape, g.constI64('s0', [0]), g.constI64('s2', [2])]), g.constI64('group', [H / G]), g.op('Slice', [shape, g.constI64('s3', [3]), g.constI64('s5', [5])])], { axis: 0 });
      return g.op('Reshape', [g.op('Expand', [x5, target]), g.constI64('shape_BHSE', [0, H, -1, E])]);
    };
    const kH = expandKv(kAll);
    const vH = expandKv(vAll);
    let scores = g.op('Mul', [g.op('MatMul', [qT, g.op('Transpose', [kH], { perm: [0, 1, 3, 2] })]), attnScale]);
    if (f.attnSoftcap) scores = softcap(g, scores, f.attnSoftcap);
    const masked = blockHook(l, 'attn.hook_attn_scores', g.op('Where', [positions.mask(f.window[l]), scores, negInf]), [B, H, P, 'total']);
    const pattern = blockHook(l, 'attn.hook_pattern', g.op('Softmax', [masked], { axis: -1 }), [B, H, P, 'total']);
    const z = blockHook(l, 'attn.hook_z', g.op('Transpose', [g.op('MatMul', [pattern, vH])], { perm: [0, 2, 1, 3] }), [B, P, H, E]);
    let attnOut = linear(g.op('Reshape', [z, shapeBPX]), n.o, n.oBias);
    if (n.postAttnNorm) attnOut = norm(attnOut, n.postAttnNorm, undefined, { scale: hookName(l, 'ln1_post.hook_scale') });
    attnOut = blockHook(l, 'hook_attn_out', attnOut, [B, P, D]);

    const mid = blockHook(l, 'hook_resid_mid', steer(l, 'hook_resid_mid', g.op('Add', [resid, attnOut])), [B, P, D]);
    const x2 = blockHook(l, 'mlp.hook_in', norm(f.parallel ? resid : mid, n.ln2, n.ln2Bias, { scale: hookName(l, 'ln2.hook_scale'), normalized: hookName(l, 'ln2.hook_normalized') }), [B, P, D]);
    let post: string;
    if (n.gate) {
      const pre = blockHook(l, 'mlp.hook_pre', linear(x2, n.gate, n.gateBias), [B, P, M]);
      const preLinear = blockHook(l, 'mlp.hook_pre_linear', linear(x2, n.up, n.upBias), [B, P, M]);
      post = g.op('Mul', [activation(g, cfg.act, pre), preLinear]);
    } else {
      const pre = blockHook(l, 'mlp.hook_pre', linear(x2, n.up, n.upBias), [B, P, M]);
      post = activation(g, cfg.act, pre);
    }
    post = blockHook(l, 'mlp.hook_post', post, [B, P, M]);
    let mlpOut = linear(post, n.down, n.downBias);
    if (n.postMlpNorm) mlpOut = norm(mlpOut, n.postMlpNorm, undefined, { scale: hookName(l, 'ln2_post.hook_scale') });
    mlpOut = blockHook(l, 'hook_mlp_out', mlpOut, [B, P, D]);
    resid = blockHook(l, 'hook_resid_post', steer(l, 'hook_resid_post', g.op('Add', [mid, mlpOut])), [B, P, D]);
  }

  const xf = norm.final(resid, { scale: 'ln_final.hook_scale' });
  logitsOutput(g, cfg, weights, hook, xf, unembedName);

  return { bytes: g.encode(), outputs, externalFiles };
}
