/**
 * The frozen replacement model's linear pieces: the weights of the attention OV path and the LayerNorms, and the
 * constant (bias) forward pass — the frozen linear model run with every source (embeddings, feature contributions,
 * errors) at zero, which gives each target's constant term independently of the edges.
 *
 * Frozen means: attention patterns and every LayerNorm scale fixed at this prompt's values, so LayerNorm is the
 * linear map x ↦ C·x / scale ⊙ w + b (C = centering) and attention is linear in its values.
 */
import type { Checkpoint } from '../checkpoint/load';
import { readTensorF32 } from '../checkpoint/safetensors';

/** One block's attention-path weights, row-major, Conv1D orientation (x·W). */
export interface AttnWeights {
  ln1W_D: Float32Array;
  ln1B_D: Float32Array;
  /** W_V = c_attn.weight[:, 2D:3D] → [D, D] (head h = columns h·E..(h+1)·E). */
  wV_DD: Float32Array;
  bV_D: Float32Array;
  /** c_proj.weight [D(=H·E), D]. */
  wO_DD: Float32Array;
  bO_D: Float32Array;
}

export interface FrozenWeights {
  D: number;
  H: number;
  E: number;
  L: number;
  blocks: AttnWeights[];
  lnfW_D: Float32Array;
  lnfB_D: Float32Array;
  /** The unembedding entry ([V, D]: lm_head.weight or tied wte). */
  unembed: import('../checkpoint/safetensors').TensorEntry;
}

export function readFrozenWeights(ckpt: Checkpoint): FrozenWeights {
  const c = ckpt.config;
  const D = c.dModel;
  const get = (n: string) => readTensorF32(ckpt.tensors.get(n)!);
  const blocks: AttnWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `h.${l}.`;
    const cAttn = get(p + 'attn.c_attn.weight'); // [D, 3D]
    const cAttnB = get(p + 'attn.c_attn.bias');
    const wV = new Float32Array(D * D);
    for (let i = 0; i < D; i++) wV.set(cAttn.subarray(i * 3 * D + 2 * D, i * 3 * D + 3 * D), i * D);
    blocks.push({
      ln1W_D: get(p + 'ln_1.weight'),
      ln1B_D: get(p + 'ln_1.bias'),
      wV_DD: wV,
      bV_D: cAttnB.slice(2 * D, 3 * D),
      wO_DD: get(p + 'attn.c_proj.weight'),
      bO_D: get(p + 'attn.c_proj.bias'),
    });
  }
  return {
    D,
    H: c.nHeads,
    E: c.dHead,
    L: c.nLayers,
    blocks,
    lnfW_D: get('ln_f.weight'),
    lnfB_D: get('ln_f.bias'),
    unembed: ckpt.tensors.get('lm_head.weight') ?? ckpt.tensors.get('wte.weight')!,
  };
}

/** The prompt-specific frozen quantities. */
export interface FrozenState {
  P: number;
  /** Per layer [H, P, P] (query, key). */
  pattern_LHQS: Float32Array[];
  ln1Scale_LP: Float32Array[];
  ln2Scale_LP: Float32Array[];
  lnfScale_P: Float32Array;
}

/**
 * Constant forward: the frozen linear model with all sources at zero. Only biases flow: LayerNorm biases through
 * the OV path, b_V, b_O, and each layer's transcoder b_dec. Returns the residual stream read by each target level:
 * `residMid_LPD[l]` for l < L (blocks.l.hook_resid_mid) and `final_PD` (the input of ln_final).
 */
export async function constantForward(
  w: FrozenWeights,
  s: FrozenState,
  bDec_LD: Float32Array[],
  gemm: (X: Float32Array, R: number, C: number, W: Float32Array, M: number, b: Float32Array) => Promise<Float32Array> = jsGemm,
): Promise<{ residMid_LPD: Float64Array[]; final_PD: Float64Array }> {
  const { D, H, E, L } = w;
  const P = s.P;
  const resid = new Float64Array(P * D);
  const residMid_LPD: Float64Array[] = [];
  const x1 = new Float32Array(P * D);
  const z = new Float32Array(P * D);
  const row = new Float64Array(D);
  for (let l = 0; l < L; l++) {
    const b = w.blocks[l];
    const scale = s.ln1Scale_LP[l];
    for (let p = 0; p < P; p++) {
      layerNormFrozen(resid, p * D, D, scale[p], b.ln1W_D, b.ln1B_D, row);
      x1.set(row, p * D);
    }
    const v = await gemm(x1, P, D, b.wV_DD, D, b.bV_D);
    const A = s.pattern_LHQS[l];
    for (let q = 0; q < P; q++)
      for (let h = 0; h < H; h++) {
        const zo = q * D + h * E;
        for (let e = 0; e < E; e++) {
          let acc = 0;
          for (let k = 0; k <= q; k++) acc += A[(h * P + q) * P + k] * v[k * D + h * E + e];
          z[zo + e] = acc;
        }
      }
    const attn = await gemm(z, P, D, b.wO_DD, D, b.bO_D);
    for (let i = 0; i < P * D; i++) resid[i] += attn[i];
    residMid_LPD.push(Float64Array.from(resid));
    const bd = bDec_LD[l];
    for (let p = 0; p < P; p++) for (let j = 0; j < D; j++) resid[p * D + j] += bd[j];
  }
  return { residMid_LPD, final_PD: resid };
}

/** X [R, C] · W [C, M] + b in plain loops (float64 accumulation), each row of W reused for every row of X. */
export async function jsGemm(X: Float32Array, R: number, C: number, W: Float32Array, M: number, b: Float32Array): Promise<Float32Array> {
  const out = new Float64Array(R * M);
  for (let r = 0; r < R; r++) for (let j = 0; j < M; j++) out[r * M + j] = b[j];
  for (let i = 0; i < C; i++) {
    const wo = i * M;
    for (let r = 0; r < R; r++) {
      const xi = X[r * C + i];
      if (xi === 0) continue;
      const oo = r * M;
      for (let j = 0; j < M; j++) out[oo + j] += xi * W[wo + j];
    }
  }
  return Float32Array.from(out);
}

/** out = C·x[off..off+D) / scale ⊙ w + b. */
function layerNormFrozen(x: Float64Array, off: number, D: number, scale: number, w: Float32Array, b: Float32Array, out: Float64Array): void {
  let mean = 0;
  for (let d = 0; d < D; d++) mean += x[off + d];
  mean /= D;
  for (let d = 0; d < D; d++) out[d] = ((x[off + d] - mean) / scale) * w[d] + b[d];
}

/** In place: v ← v − mean(v) over each row of width D. */
export function centerRows(v: Float32Array | Float64Array, D: number): void {
  for (let off = 0; off < v.length; off += D) {
    let m = 0;
    for (let d = 0; d < D; d++) m += v[off + d];
    m /= D;
    for (let d = 0; d < D; d++) v[off + d] -= m;
  }
}
