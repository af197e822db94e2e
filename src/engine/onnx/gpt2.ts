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
import { hookName, type HookName } from '../hooks';
import { GraphBuilder, type Dim } from './builder';
import {
  activation,
  cachePositions,
  EMBEDDINGS_INPUT,
  hookPoints,
  logitsOutput,
  modelNorm,
  weightAccess,
  type BuiltGraph,
  type GraphOptions,
} from './ops';

/**
 * `locate(absPath)` returns the `location` string to write for an external file; the runtime decides how ONNX Runtime
 * will find it (beside the .onnx, or passed as external data bytes).
 */
export function buildGpt2Graph(cfg: ModelConfig, tensors: Map<string, TensorEntry>, unembedName: string, locate: (file: string) => string, opts: GraphOptions = {}): BuiltGraph {
  const g = new GraphBuilder(`residual-gpt2-${cfg.name}`);
  const { nLayers: L, dModel: D, nHeads: H, dHead: E } = cfg;
  const externalFiles = new Map<string, string>();
  const outputs = new Map<HookName, string>();
  const B: Dim = 'batch';
  const P: Dim = 'pos';

  const weights = weightAccess(g, tensors, locate, externalFiles, opts.precision ?? 'float32');
  const w = weights.f32;
  const mm = weights.matmul;
  const { hook, blockHook, steer } = hookPoints(g, outputs, D);
  const norm = modelNorm(g, cfg, w, hook, [B, P]);

  // Small constants shared by all layers.
  const shapeBPHE = g.constI64('shape_BPHE', [0, 0, H, E]);
  const shapeBPD = g.constI64('shape_BPD', [0, 0, D]);
  const split3 = g.constI64('split3', [D, D, D]);
  const invSqrtE = g.constF32('inv_sqrt_E', [], [1 / Math.sqrt(E)]);
  const negInf = g.constF32('neg_inf', [], [-Infinity]);
  const axis0 = g.constI64('axis0', [0]);

  // Token embeddings arrive as rows the engine reads from the checkpoint (EMBEDDINGS_INPUT, also hook_embed), so the
  // embedding table never enters ONNX Runtime's memory unless the unembedding is tied to it.
  const embed = g.input(EMBEDDINGS_INPUT, 'float32', [B, P, D]);
  // KV cache: every block takes the keys/values of earlier positions ([B,H,S_past,E]; S_past = 0 without a cache)
  // and returns them extended by this call's positions (present_key.{l}), so generation does not recompute the
  // prompt. Positions continue after the cached ones (S_past .. S_past+P-1).
  const pastKey = (l: number) => g.input(`past_key.${l}`, 'float32', [B, H, 'past', E]);
  const pastValue = (l: number) => g.input(`past_value.${l}`, 'float32', [B, H, 'past', E]);
  const past0 = pastKey(0);
  const positions = cachePositions(g, embed, past0);
  const posEmbed1 = weights.gather('wpe.weight', positions.ids); // [P,D]
  const posEmbed = hook('hook_pos_embed', g.op('Expand', [g.op('Unsqueeze', [posEmbed1, axis0]), g.op('Shape', [embed])]), [B, P, D]);
  let resid = g.op('Add', [embed, posEmbed]);
  const causal = positions.mask();

  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    resid = blockHook(l, 'hook_resid_pre', steer(l, 'hook_resid_pre', resid), [B, P, D]);
    const x1 = norm(resid, p + 'ln_1.weight', p + 'ln_1.bias', { scale: hookName(l, 'ln1.hook_scale'), normalized: hookName(l, 'ln1.hook_normalized') });

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
    const x2 = blockHook(l, 'mlp.hook_in', norm(resid, p + 'ln_2.weight', p + 'ln_2.bias', { scale: hookName(l, 'ln2.hook_scale'), normalized: hookName(l, 'ln2.hook_normalized') }), [B, P, D]);
    const pre = blockHook(l, 'mlp.hook_pre', g.op('Add', [mm(x2, p + 'mlp.c_fc.weight'), w(p + 'mlp.c_fc.bias')]), [B, P, cfg.dMlp]);
    const post = blockHook(l, 'mlp.hook_post', activation(g, cfg.act, pre), [B, P, cfg.dMlp]);
    const mlpOut = blockHook(l, 'hook_mlp_out', g.op('Add', [mm(post, p + 'mlp.c_proj.weight'), w(p + 'mlp.c_proj.bias')]), [B, P, D]);
    resid = blockHook(l, 'hook_resid_post', steer(l, 'hook_resid_post', g.op('Add', [resid, mlpOut])), [B, P, D]);
  }

  const xf = norm.final(resid, { scale: 'ln_final.hook_scale' });
  logitsOutput(g, cfg, weights, hook, xf, unembedName);

  return { bytes: g.encode(), outputs, externalFiles };
}
