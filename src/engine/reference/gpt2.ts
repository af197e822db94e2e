/**
 * An independent GPT-2 forward pass in plain loops over Float32Array, written from the architecture's definition
 * (not from the ONNX graph). It is slow and meant for tiny configs: the oracle tests compare every hook of the ONNX
 * graph against it. Accumulates in float64 so its own rounding error is far below the tolerance under test.
 */
import type { ModelConfig } from '../checkpoint/config';
import type { Tensor32 } from '../dims';
import type { HookName } from '../hooks';
import type { SteerPoint } from '../onnx/ops';

export type Weights = Map<string, Float32Array>;

/** Additive inputs: key `${layer}:${point}`, value [P,D] or [D] (broadcast over positions). */
export type ReferenceSteer = Map<string, Float32Array>;

export interface ReferenceOptions {
  /** Run only the first this many blocks (no final norm, no logits): a check of the first layers of a large model. */
  layers?: number;
  /** Operators after the additions, key `${layer}:${point}`: a unit direction ([D] or [P·D], zero rows: left alone). */
  project?: Map<string, { dir: Float32Array; value: number; floor: number }>;
  /**
   * Called with the values at `blocks.L.attn.hook_q/k/v` ([P, heads, E]), `blocks.L.attn.hook_z` and
   * `blocks.L.hook_mlp_out` before the forward uses them, to read or overwrite them in place (path-patching checks).
   */
  hook?: (name: string, data: Float64Array) => void;
}

export function referenceForward(cfg: ModelConfig, W: Weights, ids: number[], steer: ReferenceSteer = new Map(), opts: ReferenceOptions = {}): Map<HookName, Tensor32> {
  const { dModel: D, nHeads: H, dHead: E, dMlp: M, vocabSize: V, nLayers: L } = cfg;
  const P = ids.length;
  const out = new Map<HookName, Tensor32>();
  const put = (name: HookName, dims: number[], data: Float64Array | Float32Array) =>
    out.set(name, { dims: [1, ...dims], data: Float32Array.from(data) });
  const get = (n: string) => {
    const t = W.get(n);
    if (!t) throw new Error(`reference: missing weight ${n}`);
    return t;
  };

  const wte = get('wte.weight');
  const wpe = get('wpe.weight');
  const embed = new Float64Array(P * D);
  const pos = new Float64Array(P * D);
  for (let p = 0; p < P; p++)
    for (let d = 0; d < D; d++) {
      embed[p * D + d] = wte[ids[p] * D + d];
      pos[p * D + d] = wpe[p * D + d];
    }
  put('hook_embed', [P, D], embed);
  put('hook_pos_embed', [P, D], pos);
  const resid = new Float64Array(P * D);
  for (let i = 0; i < P * D; i++) resid[i] = embed[i] + pos[i];

  const addSteer = (l: number, point: SteerPoint, x: Float64Array) => steerAt(`${l}:${point}`, x, P, D, steer, opts);

  /** Returns [normalized, scale]; TransformerLens: scale = sqrt(mean((x-mean)^2) + eps). */
  const layerNorm = (x: Float64Array): [Float64Array, Float64Array] => {
    const norm = new Float64Array(P * D);
    const scale = new Float64Array(P);
    for (let p = 0; p < P; p++) {
      let mean = 0;
      for (let d = 0; d < D; d++) mean += x[p * D + d];
      mean /= D;
      let v = 0;
      for (let d = 0; d < D; d++) v += (x[p * D + d] - mean) ** 2;
      scale[p] = Math.sqrt(v / D + cfg.lnEps);
      for (let d = 0; d < D; d++) norm[p * D + d] = (x[p * D + d] - mean) / scale[p];
    }
    return [norm, scale];
  };
  const affine = (x: Float64Array, w: Float32Array, b: Float32Array) => {
    const y = new Float64Array(x.length);
    for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) y[p * D + d] = x[p * D + d] * w[d] + b[d];
    return y;
  };
  /** y[P,O] = x[P,I] · w[I,O] + b[O] (Conv1D layout). */
  const linear = (x: Float64Array, I: number, w: Float32Array, b: Float32Array, O: number) => {
    const y = new Float64Array(P * O);
    for (let p = 0; p < P; p++)
      for (let o = 0; o < O; o++) {
        let s = b[o];
        for (let i = 0; i < I; i++) s += x[p * I + i] * w[i * O + o];
        y[p * O + o] = s;
      }
    return y;
  };

  const blocks = Math.min(L, opts.layers ?? L);
  for (let l = 0; l < blocks; l++) {
    const pre = `h.${l}.`;
    addSteer(l, 'hook_resid_pre', resid);
    put(`blocks.${l}.hook_resid_pre`, [P, D], resid);
    const [n1, s1] = layerNorm(resid);
    put(`blocks.${l}.ln1.hook_scale`, [P, 1], s1);
    put(`blocks.${l}.ln1.hook_normalized`, [P, D], n1);
    const x1 = affine(n1, get(pre + 'ln_1.weight'), get(pre + 'ln_1.bias'));
    const qkv = linear(x1, D, get(pre + 'attn.c_attn.weight'), get(pre + 'attn.c_attn.bias'), 3 * D);
    // q/k/v [P,H,E]: head h uses columns h*E..(h+1)*E of each third.
    const q = new Float64Array(P * D);
    const k = new Float64Array(P * D);
    const v = new Float64Array(P * D);
    for (let p = 0; p < P; p++)
      for (let d = 0; d < D; d++) {
        q[p * D + d] = qkv[p * 3 * D + d];
        k[p * D + d] = qkv[p * 3 * D + D + d];
        v[p * D + d] = qkv[p * 3 * D + 2 * D + d];
      }
    for (const [n, x] of [['q', q], ['k', k], ['v', v]] as const) opts.hook?.(`blocks.${l}.attn.hook_${n}`, x);
    put(`blocks.${l}.attn.hook_q`, [P, H, E], q);
    put(`blocks.${l}.attn.hook_k`, [P, H, E], k);
    put(`blocks.${l}.attn.hook_v`, [P, H, E], v);
    const scores = new Float64Array(H * P * P);
    const pattern = new Float64Array(H * P * P);
    const z = new Float64Array(P * D);
    for (let h = 0; h < H; h++)
      for (let qi = 0; qi < P; qi++) {
        let max = -Infinity;
        for (let si = 0; si < P; si++) {
          let s = -Infinity;
          if (si <= qi) {
            s = 0;
            for (let e = 0; e < E; e++) s += q[qi * D + h * E + e] * k[si * D + h * E + e];
            s /= Math.sqrt(E);
          }
          scores[(h * P + qi) * P + si] = s;
          max = Math.max(max, s);
        }
        let sum = 0;
        for (let si = 0; si <= qi; si++) sum += Math.exp(scores[(h * P + qi) * P + si] - max);
        for (let si = 0; si < P; si++) {
          const a = si <= qi ? Math.exp(scores[(h * P + qi) * P + si] - max) / sum : 0;
          pattern[(h * P + qi) * P + si] = a;
          for (let e = 0; e < E; e++) z[qi * D + h * E + e] += a * v[si * D + h * E + e];
        }
      }
    put(`blocks.${l}.attn.hook_attn_scores`, [H, P, P], scores);
    put(`blocks.${l}.attn.hook_pattern`, [H, P, P], pattern);
    opts.hook?.(`blocks.${l}.attn.hook_z`, z);
    put(`blocks.${l}.attn.hook_z`, [P, H, E], z);
    const attnOut = linear(z, D, get(pre + 'attn.c_proj.weight'), get(pre + 'attn.c_proj.bias'), D);
    put(`blocks.${l}.hook_attn_out`, [P, D], attnOut);
    for (let i = 0; i < P * D; i++) resid[i] += attnOut[i];
    addSteer(l, 'hook_resid_mid', resid);
    put(`blocks.${l}.hook_resid_mid`, [P, D], resid);
    const [n2, s2] = layerNorm(resid);
    put(`blocks.${l}.ln2.hook_scale`, [P, 1], s2);
    put(`blocks.${l}.ln2.hook_normalized`, [P, D], n2);
    const x2 = affine(n2, get(pre + 'ln_2.weight'), get(pre + 'ln_2.bias'));
    put(`blocks.${l}.mlp.hook_in`, [P, D], x2);
    const mlpPre = linear(x2, D, get(pre + 'mlp.c_fc.weight'), get(pre + 'mlp.c_fc.bias'), M);
    put(`blocks.${l}.mlp.hook_pre`, [P, M], mlpPre);
    const mlpPost = mlpPre.map((x) => act(cfg.act, x));
    put(`blocks.${l}.mlp.hook_post`, [P, M], mlpPost);
    const mlpOut = linear(mlpPost, M, get(pre + 'mlp.c_proj.weight'), get(pre + 'mlp.c_proj.bias'), D);
    opts.hook?.(`blocks.${l}.hook_mlp_out`, mlpOut);
    put(`blocks.${l}.hook_mlp_out`, [P, D], mlpOut);
    for (let i = 0; i < P * D; i++) resid[i] += mlpOut[i];
    addSteer(l, 'hook_resid_post', resid);
    put(`blocks.${l}.hook_resid_post`, [P, D], resid);
  }
  if (blocks < L) return out;
  const [nf, sf] = layerNorm(resid);
  put('ln_final.hook_scale', [P, 1], sf);
  const xf = affine(nf, get('ln_f.weight'), get('ln_f.bias'));
  const U = W.get('lm_head.weight') ?? wte; // [V,D]
  const logits = new Float64Array(P * V);
  for (let p = 0; p < P; p++)
    for (let t = 0; t < V; t++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += xf[p * D + d] * U[t * D + d];
      logits[p * V + t] = s;
    }
  put('logits', [P, V], logits);
  return out;
}

export function act(kind: ModelConfig['act'], x: number): number {
  switch (kind) {
    case 'relu':
      return Math.max(0, x);
    case 'silu':
      return x / (1 + Math.exp(-x));
    case 'gelu':
      return 0.5 * x * (1 + erf(x / Math.SQRT2));
    default: // gelu_new / gelu_fast / gelu_pytorch_tanh: the tanh approximation
      return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  }
}

/** erf by Abramowitz–Stegun 7.1.26 is too coarse for 1e-4; use the series / continued fraction pair. */
function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // Maclaurin series: erf x = 2/sqrt(pi) Σ (-1)^n x^(2n+1) / (n! (2n+1)).
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 60; n++) {
      term *= (-ax * ax) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction for large |x|.
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (ax + f);
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
  return Math.sign(x) * (1 - erfc);
}

/**
 * What the steering inputs do at one point (key `${layer}:${point}`), from their definitions: the addition ([D] for
 * every position, or [P·D]), then the operator, under which the component along û (a = x·û) becomes
 * a − max(a − value, floor). Shared by both reference forwards.
 */
export function steerAt(key: string, x: Float64Array, P: number, D: number, steer: ReferenceSteer, opts: ReferenceOptions): void {
  const s = steer.get(key);
  if (s) for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) x[p * D + d] += s.length === D ? s[d] : s[p * D + d];
  const op = opts.project?.get(key);
  if (!op) return;
  for (let p = 0; p < P; p++) {
    const u = op.dir.length === D ? op.dir : op.dir.subarray(p * D, (p + 1) * D);
    if (!u.some((v) => v !== 0)) continue;
    let a = 0;
    for (let d = 0; d < D; d++) a += x[p * D + d] * u[d];
    const remove = Math.max(a - op.value, op.floor);
    for (let d = 0; d < D; d++) x[p * D + d] -= remove * u[d];
  }
}
