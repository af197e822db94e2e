/**
 * The oracle tests' plain-loop attention block of a frozen GPT-2 (test/oracle/attribution.test.ts,
 * crosslayer.test.ts): written from the definition, independently of the engine.
 */
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import type { Tensor32 } from '../../src/engine/dims';
import type { HookName } from '../../src/engine/hooks';

/**
 * resid += block l's attention output with its patterns and ln1 scale frozen at the reference run's values: ln1 with
 * the frozen scale, the value projection, the pattern-weighted sum per head, W_O. `resid` is [P, d_model].
 */
export function addFrozenAttention(cfg: ModelConfig, W: Map<string, Float32Array>, ref: Map<HookName, Tensor32>, l: number, resid: Float64Array, P: number): void {
  const { dModel: D, nHeads: H, dHead: E } = cfg;
  const g = (n: string) => W.get(`h.${l}.${n}`)!;
  const s1 = ref.get(`blocks.${l}.ln1.hook_scale` as HookName)!.data;
  const A = ref.get(`blocks.${l}.attn.hook_pattern` as HookName)!.data;
  const [lw, lb, ca, cab, cp, cpb] = [g('ln_1.weight'), g('ln_1.bias'), g('attn.c_attn.weight'), g('attn.c_attn.bias'), g('attn.c_proj.weight'), g('attn.c_proj.bias')];
  const v = new Float64Array(P * D);
  for (let p = 0; p < P; p++) {
    let mean = 0;
    for (let d = 0; d < D; d++) mean += resid[p * D + d] / D;
    for (let j = 0; j < D; j++) {
      let s = cab[2 * D + j];
      for (let d = 0; d < D; d++) s += (((resid[p * D + d] - mean) / s1[p]) * lw[d] + lb[d]) * ca[d * 3 * D + 2 * D + j];
      v[p * D + j] = s;
    }
  }
  const out = new Float64Array(P * D);
  for (let q = 0; q < P; q++) {
    const z = new Float64Array(D);
    for (let h = 0; h < H; h++) for (let k = 0; k <= q; k++) for (let e = 0; e < E; e++) z[h * E + e] += A[(h * P + q) * P + k] * v[k * D + h * E + e];
    for (let j = 0; j < D; j++) {
      let s = cpb[j];
      for (let i = 0; i < D; i++) s += z[i] * cp[i * D + j];
      out[q * D + j] = s;
    }
  }
  for (let i = 0; i < P * D; i++) resid[i] += out[i];
}

/** Every logit at the last position from the final residual `final` [P, d_model]: ln_final with its frozen scale, W_U. */
export function frozenFinalLogits(cfg: ModelConfig, W: Map<string, Float32Array>, ref: Map<HookName, Tensor32>, final: Float64Array, P: number): Float64Array {
  const D = cfg.dModel;
  const x = final.subarray((P - 1) * D, P * D);
  let mean = 0;
  for (const v of x) mean += v / D;
  const sf = ref.get('ln_final.hook_scale')!.data[P - 1];
  const [lw, lb, U] = [W.get('ln_f.weight')!, W.get('ln_f.bias')!, W.get('wte.weight')!];
  const xf = Array.from(x, (v, d) => ((v - mean) / sf) * lw[d] + lb[d]);
  const logits = new Float64Array(cfg.vocabSize);
  for (let t = 0; t < cfg.vocabSize; t++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += xf[d] * U[t * D + d];
    logits[t] = s;
  }
  return logits;
}
