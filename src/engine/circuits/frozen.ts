/**
 * The frozen replacement model's linear pieces: the weights of the attention OV path and the LayerNorms, and the
 * constant (bias) forward pass — the frozen linear model run with every source (embeddings, feature contributions,
 * errors) at zero, which gives each target's constant term independently of the edges.
 *
 * Frozen means: attention patterns and every norm's scale fixed at this prompt's values, so LayerNorm is the
 * linear map x ↦ C·x / scale ⊙ w + b (C = centering; RMSNorm: no centering, no bias) and attention is linear in its
 * values.
 */
import { familyWeightNames } from '../checkpoint/families';
import type { Checkpoint } from '../checkpoint/load';
import { readTensorF32 } from '../checkpoint/safetensors';
import { ResidualError } from '../errors';
import type { TranscoderInput } from './transcoders';

/**
 * One block's attention-path weights, row-major, x·W orientation. X = heads × d_head (= D for GPT-2; may differ for
 * Qwen3 and Gemma). Grouped-query attention is expanded: query head h's value columns are its key/value head's.
 */
export interface AttnWeights {
  /** ln1's gain (with Gemma's offset applied) and bias (zeros for RMSNorm). */
  ln1W_D: Float32Array;
  ln1B_D: Float32Array;
  /** ln2's gain and bias, for transcoders reading mlp.hook_in. */
  ln2W_D: Float32Array;
  ln2B_D: Float32Array;
  /** W_V [D, X] (head h = columns h·E..(h+1)·E) and its bias [X]. */
  wV_DD: Float32Array;
  bV_D: Float32Array;
  /** W_O [X, D] and its bias [D]. */
  wO_DD: Float32Array;
  bO_D: Float32Array;
  /** Gemma-2: the gain of the norm applied to the attention output (frozen scale: ln1_post.hook_scale). */
  postW_D?: Float32Array;
}

export interface FrozenWeights {
  D: number;
  H: number;
  E: number;
  L: number;
  /** H·E, the width of the attention's value space. */
  X: number;
  /** LayerNorm subtracts the mean (GPT-2, GPT-NeoX); RMSNorm does not (Llama, Qwen). */
  center: boolean;
  blocks: AttnWeights[];
  lnfW_D: Float32Array;
  lnfB_D: Float32Array;
  /** The unembedding entry ([V, D]: lm_head.weight, embed_out.weight or the tied embedding). */
  unembed: import('../checkpoint/safetensors').TensorEntry;
}

/**
 * Why a model's attribution graph cannot be built (undefined when it can). The frozen replacement model here is a
 * sequential block; parallel blocks (GPT-NeoX/Pythia use_parallel_residual) do not fit it. Gemma-2 does: its norm
 * after attention is frozen like every other norm, the norm after the MLP is inside what the transcoder replaces
 * (it writes hook_mlp_out), the attention soft-cap only shapes the frozen patterns, and logit targets are taken
 * before the final soft-cap (a monotonic map, so their order is the model's).
 */
export function attributionUnsupported(ckpt: Checkpoint): string | undefined {
  const f = ckpt.config.family;
  if (f?.parallel) return `${ckpt.config.architecture} blocks run attention and the MLP in parallel (use_parallel_residual); attribution graphs are built for sequential blocks`;
  return undefined;
}

export function readFrozenWeights(ckpt: Checkpoint): FrozenWeights {
  const c = ckpt.config;
  const why = attributionUnsupported(ckpt);
  if (why) throw new ResidualError(why, ckpt.dir, 'unsupported');
  const D = c.dModel;
  const get = (n: string) => readTensorF32(ckpt.tensors.get(n)!);
  const blocks: AttnWeights[] = [];
  if (!c.family) {
    for (let l = 0; l < c.nLayers; l++) {
      const p = `h.${l}.`;
      const cAttn = get(p + 'attn.c_attn.weight'); // [D, 3D]
      const cAttnB = get(p + 'attn.c_attn.bias');
      const wV = new Float32Array(D * D);
      for (let i = 0; i < D; i++) wV.set(cAttn.subarray(i * 3 * D + 2 * D, i * 3 * D + 3 * D), i * D);
      blocks.push({
        ln1W_D: get(p + 'ln_1.weight'),
        ln1B_D: get(p + 'ln_1.bias'),
        ln2W_D: get(p + 'ln_2.weight'),
        ln2B_D: get(p + 'ln_2.bias'),
        wV_DD: wV,
        bV_D: cAttnB.slice(2 * D, 3 * D),
        wO_DD: get(p + 'attn.c_proj.weight'),
        bO_D: get(p + 'attn.c_proj.bias'),
      });
    }
    return { D, H: c.nHeads, E: c.dHead, L: c.nLayers, X: D, center: true, blocks, lnfW_D: get('ln_f.weight'), lnfB_D: get('ln_f.bias'), unembed: ckpt.tensors.get(ckpt.unembedName)! };
  }
  const f = c.family;
  const names = familyWeightNames(c);
  const { nHeads: H, dHead: E } = c;
  const G = c.nKvHeads ?? H;
  const X = H * E;
  const gain = (n: string) => {
    const w = get(n);
    return f.normOffset ? w.map((x) => x + f.normOffset) : w;
  };
  const biasOr0 = (n: string | undefined, len: number) => (n ? get(n) : new Float32Array(len));
  for (let l = 0; l < c.nLayers; l++) {
    const b = names.block(l);
    const wVraw = b.qkv ? get(b.qkv) : get(b.v!); // Linear [out, in]
    const bVraw = b.qkv ? biasOr0(b.qkvBias, 3 * X) : biasOr0(b.vBias, G * E);
    const wV = new Float32Array(D * X);
    const bV = new Float32Array(X);
    for (let h = 0; h < H; h++)
      for (let e = 0; e < E; e++) {
        // Output row of the value projection feeding query head h, dim e.
        const r = b.qkv ? h * 3 * E + 2 * E + e : Math.floor(h / (H / G)) * E + e;
        bV[h * E + e] = bVraw[r];
        for (let d = 0; d < D; d++) wV[d * X + h * E + e] = wVraw[r * D + d];
      }
    const o = get(b.o); // [D, X]
    const wO = new Float32Array(X * D);
    for (let i = 0; i < X; i++) for (let d = 0; d < D; d++) wO[i * D + d] = o[d * X + i];
    blocks.push({
      ln1W_D: gain(b.ln1),
      ln1B_D: biasOr0(b.ln1Bias, D),
      ln2W_D: gain(b.ln2),
      ln2B_D: biasOr0(b.ln2Bias, D),
      wV_DD: wV,
      bV_D: bV,
      wO_DD: wO,
      bO_D: biasOr0(b.oBias, D),
      postW_D: b.postAttnNorm ? gain(b.postAttnNorm) : undefined,
    });
  }
  return {
    D,
    H,
    E,
    L: c.nLayers,
    X,
    center: f.norm === 'layernorm',
    blocks,
    lnfW_D: gain(names.finalNorm),
    lnfB_D: biasOr0(names.finalNormBias, D),
    unembed: ckpt.tensors.get(ckpt.unembedName)!,
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
  /** Gemma-2: the scale of the norm after attention, per layer [P]. */
  postScale_LP?: Float32Array[];
}

/** A skip transcoder's W_skip [d_out, d_in] and the hook it reads, for the frozen model. */
export interface SkipWeights {
  wSkip_DD: Float32Array;
  input: TranscoderInput;
}

/** A skip transcoder's term x·W_skipᵀ at every position: [P, d_out] from x [P, d_in] and W_skip [d_out, d_in]. */
export function skipProduct(wSkip: Float32Array, x_PD: ArrayLike<number>, P: number, dIn: number, dOut: number): Float64Array {
  const out = new Float64Array(P * dOut);
  for (let p = 0; p < P; p++)
    for (let d = 0; d < dOut; d++) {
      let s = 0;
      for (let e = 0; e < dIn; e++) s += wSkip[d * dIn + e] * x_PD[p * dIn + e];
      out[p * dOut + d] = s;
    }
  return out;
}

/**
 * A skip transcoder's input, frozen: what `input` holds given the residual `x` at hook_resid_mid (ln2 with its frozen
 * scale: ln2.hook_normalized without gain and bias, mlp.hook_in with them).
 */
export function skipInput(w: FrozenWeights, l: number, input: TranscoderInput, x: Float64Array, off: number, scale: number, out: Float64Array): void {
  const b = w.blocks[l];
  if (input === 'hook_resid_mid') for (let d = 0; d < w.D; d++) out[d] = x[off + d];
  else if (input === 'mlp.hook_in') normFrozen(x, off, w.D, scale, b.ln2W_D, b.ln2B_D, w.center, out);
  else normFrozen(x, off, w.D, scale, new Float32Array(w.D).fill(1), new Float32Array(w.D), w.center, out);
}

/**
 * The skip path backwards: a gradient g at blocks.l.hook_resid_post reaches hook_resid_mid as g + (g · M) / scale₂
 * (`scaled`; the identity scale for hook_resid_mid), M = W_skip · diag(gain) · C [d_out, d_model] (gain: ln2's for
 * mlp.hook_in, else ones; C the centering, LayerNorm only; none of it for hook_resid_mid).
 */
export function skipBackward(w: FrozenWeights, l: number, skip: SkipWeights): { M_DD: Float32Array; scaled: boolean } {
  const D = w.D;
  if (skip.input === 'hook_resid_mid') return { M_DD: skip.wSkip_DD, scaled: false };
  const g = skip.input === 'mlp.hook_in' ? w.blocks[l].ln2W_D : undefined;
  const M = new Float32Array(D * D);
  for (let d = 0; d < D; d++) {
    let mean = 0;
    for (let e = 0; e < D; e++) mean += skip.wSkip_DD[d * D + e] * (g ? g[e] : 1);
    mean = w.center ? mean / D : 0;
    for (let e = 0; e < D; e++) M[d * D + e] = skip.wSkip_DD[d * D + e] * (g ? g[e] : 1) - mean;
  }
  return { M_DD: M, scaled: true };
}

/**
 * Constant forward: the frozen linear model with all sources at zero. Only biases flow: LayerNorm biases through
 * the OV path, b_V, b_O, each layer's transcoder b_dec, and a skip transcoder's W_skip applied to what reaches its
 * input. Returns the residual stream read by each target level: `residPre_LPD[l]` and `residMid_LPD[l]` for l < L
 * (blocks.l.hook_resid_pre / hook_resid_mid) and `final_PD` (the input of ln_final).
 */
export async function constantForward(
  w: FrozenWeights,
  s: FrozenState,
  bDec_LD: Float32Array[],
  gemm: (X: Float32Array, R: number, C: number, W: Float32Array, M: number, b: Float32Array) => Promise<Float32Array> = jsGemm,
  skips: (SkipWeights | undefined)[] = [],
): Promise<{ residPre_LPD: Float64Array[]; residMid_LPD: Float64Array[]; final_PD: Float64Array }> {
  const { D, H, E, L, X } = w;
  const P = s.P;
  const resid = new Float64Array(P * D);
  const residMid_LPD: Float64Array[] = [];
  const residPre_LPD: Float64Array[] = [];
  const x1 = new Float32Array(P * D);
  const z = new Float32Array(P * X);
  const row = new Float64Array(D);
  for (let l = 0; l < L; l++) {
    residPre_LPD.push(Float64Array.from(resid));
    const b = w.blocks[l];
    const scale = s.ln1Scale_LP[l];
    for (let p = 0; p < P; p++) {
      normFrozen(resid, p * D, D, scale[p], b.ln1W_D, b.ln1B_D, w.center, row);
      x1.set(row, p * D);
    }
    const v = await gemm(x1, P, D, b.wV_DD, X, b.bV_D);
    const A = s.pattern_LHQS[l];
    for (let q = 0; q < P; q++)
      for (let h = 0; h < H; h++) {
        const zo = q * X + h * E;
        for (let e = 0; e < E; e++) {
          let acc = 0;
          for (let k = 0; k <= q; k++) acc += A[(h * P + q) * P + k] * v[k * X + h * E + e];
          z[zo + e] = acc;
        }
      }
    const attn = await gemm(z, P, X, b.wO_DD, D, b.bO_D);
    const post = s.postScale_LP?.[l];
    if (b.postW_D && post) for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) attn[p * D + d] *= b.postW_D[d] / post[p];
    for (let i = 0; i < P * D; i++) resid[i] += attn[i];
    const mid = Float64Array.from(resid);
    residMid_LPD.push(mid);
    const bd = bDec_LD[l];
    for (let p = 0; p < P; p++) for (let j = 0; j < D; j++) resid[p * D + j] += bd[j];
    const skip = skips[l];
    if (skip) {
      const x = new Float64Array(P * D);
      for (let p = 0; p < P; p++) skipInput(w, l, skip.input, mid, p * D, s.ln2Scale_LP[l][p], x.subarray(p * D, (p + 1) * D));
      const add = skipProduct(skip.wSkip_DD, x, P, D, D);
      for (let i = 0; i < P * D; i++) resid[i] += add[i];
    }
  }
  return { residPre_LPD, residMid_LPD, final_PD: resid };
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

/** out = C·x[off..off+D) / scale ⊙ w + b (C = centering for LayerNorm, identity for RMSNorm). */
export function normFrozen(x: Float64Array | Float32Array, off: number, D: number, scale: number, w: Float32Array, b: Float32Array, center: boolean, out: Float64Array): void {
  let mean = 0;
  if (center) for (let d = 0; d < D; d++) mean += x[off + d];
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
