/**
 * The logit-lens graph: residual vectors [N,D] → ln_final (each vector's own mean and scale) → unembedding →
 * softmax, returning only the top-k and one target token's probability and rank per row, so the full [N,V] logits
 * never leave ONNX Runtime.
 */
import type { ModelConfig } from '../checkpoint/config';
import { familyWeightNames } from '../checkpoint/families';
import type { TensorEntry } from '../checkpoint/safetensors';
import { GraphBuilder } from './builder';
import { weightAccess, type GraphOptions } from './gpt2';

export function buildLensGraph(cfg: ModelConfig, tensors: Map<string, TensorEntry>, unembedName: string, locate: (file: string) => string, opts: GraphOptions = {}) {
  const g = new GraphBuilder('residual-lens');
  const externalFiles = new Map<string, string>();
  const weights = weightAccess(g, tensors, locate, externalFiles, opts.precision ?? 'float32');
  const w = weights.f32;
  const D = cfg.dModel;
  const resid = g.input('resid', 'float32', ['n', D]);
  const target = g.input('target', 'int64', ['n']);
  const k = g.input('k', 'int64', [1]);
  // The model's own final norm (LayerNorm or RMSNorm, Gemma's 1 + w gain) and final soft-cap.
  const f = cfg.family;
  let xf: string;
  if (!f) {
    xf = g.op('LayerNormalization', [resid, w('ln_f.weight'), w('ln_f.bias')], { axis: -1, epsilon: { float: cfg.lnEps } });
  } else {
    const names = familyWeightNames(cfg);
    const gain = f.normOffset ? g.op('Add', [w(names.finalNorm), g.constF32('offset', [], [f.normOffset])]) : w(names.finalNorm);
    if (f.norm === 'layernorm') {
      xf = g.op('LayerNormalization', [resid, gain, w(names.finalNormBias!)], { axis: -1, epsilon: { float: cfg.lnEps } });
    } else {
      const ms = g.op('ReduceMean', [g.op('Mul', [resid, resid]), g.constI64('axis_last', [-1])], { keepdims: 1 });
      const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, g.constF32('eps', [], [cfg.lnEps])])])]);
      xf = g.op('Mul', [g.op('Mul', [resid, inv]), gain]);
    }
  }
  let logits = weights.gemmT(xf, unembedName);
  if (f?.finalSoftcap) {
    const cap = g.constF32('softcap', [], [f.finalSoftcap]);
    logits = g.op('Mul', [g.op('Tanh', [g.op('Div', [logits, cap])]), cap]);
  }
  const probs = g.op('Softmax', [logits], { axis: -1 });
  g.node('TopK', [probs, k], { outputs: ['top_probs', 'top_ids'], attrs: { axis: -1, largest: 1, sorted: 1 } });
  const target2 = g.op('Unsqueeze', [target, g.constI64('axis1', [1])]);
  const tLogit = g.op('GatherElements', [logits, target2], { axis: 1 }); // [N,1]
  g.op('Squeeze', [g.op('GatherElements', [probs, target2], { axis: 1 }), g.constI64('axis1b', [1])], undefined, 'target_prob');
  // Rank = how many tokens have a strictly larger logit (0 = top).
  const above = g.op('Cast', [g.op('Greater', [logits, tLogit])], { to: 7 });
  g.op('ReduceSum', [above, g.constI64('axis1c', [1])], { keepdims: 0 }, 'target_rank');
  g.output('top_probs', 'float32', ['n', 'k']);
  g.output('top_ids', 'int64', ['n', 'k']);
  g.output('target_prob', 'float32', ['n']);
  g.output('target_rank', 'int64', ['n']);
  return { bytes: g.encode(), externalFiles };
}
