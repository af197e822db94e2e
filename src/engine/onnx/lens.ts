/**
 * The logit-lens graph: residual vectors [N,D] → ln_final (each vector's own mean and scale) → unembedding →
 * softmax, returning only the top-k and one target token's probability and rank per row, so the full [N,V] logits
 * never leave ONNX Runtime.
 */
import type { ModelConfig } from '../checkpoint/config';
import type { TensorEntry } from '../checkpoint/safetensors';
import { GraphBuilder } from './builder';
import { modelNorm, unembed, weightAccess, type GraphOptions } from './ops';

export function buildLensGraph(cfg: ModelConfig, tensors: Map<string, TensorEntry>, unembedName: string, locate: (file: string) => string, opts: GraphOptions = {}) {
  const g = new GraphBuilder('residual-lens');
  const externalFiles = new Map<string, string>();
  const weights = weightAccess(g, tensors, locate, externalFiles, opts.precision ?? 'float32');
  const D = cfg.dModel;
  const resid = g.input('resid', 'float32', ['n', D]);
  const target = g.input('target', 'int64', ['n']);
  const k = g.input('k', 'int64', [1]);
  // The model's own final norm and unembedding, soft-cap included, exactly as its forward pass computes them.
  const xf = modelNorm(g, cfg, weights.f32).final(resid);
  const logits = unembed(g, cfg, weights, xf, unembedName);
  const probs = g.op('Softmax', [logits], { axis: -1 });
  g.node('TopK', [probs, k], { outputs: ['top_probs', 'top_ids'], attrs: { axis: -1, largest: 1, sorted: 1 } });
  const target2 = g.op('Unsqueeze', [target, g.constI64('axis1', [1])]);
  const tLogit = g.op('GatherElements', [logits, target2], { axis: 1 }); // [N,1]
  g.op('Squeeze', [g.op('GatherElements', [probs, target2], { axis: 1 }), g.constI64('axis1b', [1])], undefined, 'target_prob');
  // Rank = how many tokens have a strictly larger logit (0 = top).
  const above = g.cast(g.op('Greater', [logits, tLogit]), 'int64');
  g.op('ReduceSum', [above, g.constI64('axis1c', [1])], { keepdims: 0 }, 'target_rank');
  g.output('top_probs', 'float32', ['n', 'k']);
  g.output('top_ids', 'int64', ['n', 'k']);
  g.output('target_prob', 'float32', ['n']);
  g.output('target_rank', 'int64', ['n']);
  return { bytes: g.encode(), externalFiles };
}
