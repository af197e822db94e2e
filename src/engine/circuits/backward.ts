/**
 * Backward propagation of target directions through one frozen attention block, as an ONNX graph (the heavy
 * products are MatMuls), plus the read-out of the sources that enter the residual stream just below it.
 *
 * For gradients G at blocks.a.hook_resid_mid (targets × positions × D), the gradient at blocks.a.hook_resid_pre is
 *   G + (Aᵀ-mixing of (G·W_Oᵀ) per head) · M ⊙ 1/scale₁,   M = W_Vᵀ · diag(w_ln1) · C
 * (C = centering for LayerNorm, folded into M; the identity for RMSNorm). W_O is [X, D] and W_V [D, X] with
 * X = heads × d_head. Gemma-2's frozen norm after attention (gain g, scale s_post) multiplies G by g / s_post before
 * W_Oᵀ: g is folded into W_Oᵀ, 1/s_post is the `inv_post` input (ones elsewhere). hook_resid_pre of block a is hook_resid_post of block a−1, where the sources of
 * layer a−1 (feature contributions and the error) were added, so the read-out R[s,t,k] = G_pre[t,s,:] · U[s,:,k].
 * With a skip transcoder at layer a−1, its linear path from blocks.a−1.hook_resid_mid is part of the frozen model:
 * the gradient handed on to block a−1 is G_next = G_pre + (G_pre · M_skip) ⊙ 1/scale₂ (frozen.ts skipBackward).
 */
import type * as ortTypes from 'onnxruntime-common';
import { GraphBuilder } from '../onnx/builder';
import { createSession, ort, type SessionOptions } from '../runtime/session';
import type { AttnWeights, FrozenWeights } from './frozen';

/** A skip transcoder's path backwards (frozen.ts skipBackward): G + (G · M) / scale₂, or without the scale. */
export interface SkipBackward {
  M_DD: Float32Array;
  scaled: boolean;
}

/**
 * Graph for one block. Inputs: G [T₁,S,D] (gradients of targets already in the sweep), N [T₂,D] (targets joining
 * here: a direction at the last position S−1 only, so W_Oᵀ touches one row each), pattern [H,S,S], invScale [S,1],
 * U [S,D,K]. Outputs: Gpre [T₁+T₂,S,D] (joiners after the others) and R [S,T₁+T₂,K]. T₁ or T₂ may be 0. With
 * `skipBelow` (the layer below has a skip transcoder), also the input inv_scale2 [S,1] and the output Gnext: the
 * gradient at the layer below's hook_resid_mid.
 */
export function buildBackwardGraph(b: AttnWeights, D: number, H: number, X = D, center = true, skipBelow?: SkipBackward): Uint8Array {
  const E = X / H;
  const g = new GraphBuilder('residual-attn-backward');
  // W_Oᵀ [D, X] and M = W_Vᵀ·diag(w)·C [X, D] as initializers.
  const wOT = new Float32Array(D * X);
  for (let i = 0; i < X; i++) for (let j = 0; j < D; j++) wOT[j * X + i] = b.wO_DD[i * D + j] * (b.postW_D ? b.postW_D[j] : 1);
  const M = new Float32Array(X * D);
  for (let j = 0; j < X; j++) {
    let mean = 0;
    if (center) for (let d = 0; d < D; d++) mean += b.wV_DD[d * X + j] * b.ln1W_D[d];
    mean /= D;
    for (let d = 0; d < D; d++) M[j * D + d] = b.wV_DD[d * X + j] * b.ln1W_D[d] - mean;
  }
  const G = g.input('G', 'float32', ['T1', 'S', D]);
  const Nw = g.input('N', 'float32', ['T2', D]);
  const A = g.input('pattern', 'float32', [H, 'S', 'S']);
  const inv = g.input('inv_scale', 'float32', ['S', 1]);
  const U = g.input('U', 'float32', ['S', D, 'K']);
  const invPost = g.input('inv_post', 'float32', ['S', 1]);
  const WOT = g.constF32('wOT', [D, X], wOT);
  // Targets already in the sweep: W_Oᵀ on every position, then the transposed pattern mixes positions per head.
  const dz = g.op('MatMul', [g.op('Mul', [G, invPost]), WOT]);
  const dzH = g.op('Transpose', [g.op('Reshape', [dz, g.constI64('shape_TSHE', [0, 0, H, E])])], { perm: [0, 2, 1, 3] }); // [T,H,Q,E]
  const AT = g.op('Transpose', [A], { perm: [0, 2, 1] }); // [H,S,Q]
  const dvOld = g.op('MatMul', [AT, dzH]); // [T1,H,S,E]
  // Joiners: one row through W_Oᵀ, spread by the pattern's last row: dv[h,s] = A[h,S−1,s]·dz[h].
  const invPostLast = g.op('Slice', [invPost, g.constI64('post_start', [-1]), g.constI64('post_end', [2 ** 31 - 1]), g.constI64('post_axis', [0])]); // [1,1]
  const dzN = g.op('Reshape', [g.op('MatMul', [g.op('Mul', [Nw, invPostLast]), WOT]), g.constI64('shape_T1HE', [0, 1, H, E])]); // [T2,1,H,E]
  const lastRow = g.op('Slice', [A, g.constI64('last_start', [-1]), g.constI64('last_end', [2 ** 31 - 1]), g.constI64('last_axis', [1])]); // [H,1,S]
  const Acol = g.op('Unsqueeze', [g.op('Transpose', [lastRow], { perm: [2, 0, 1] }), g.constI64('unsq_axis', [0])]); // [1,S,H,1]
  const dvNew = g.op('Mul', [Acol, dzN]); // [T2,S,H,E]
  const dvOldS = g.op('Transpose', [dvOld], { perm: [0, 2, 1, 3] }); // [T1,S,H,E]
  const dv = g.op('Concat', [dvOldS, dvNew], { axis: 0 });
  const dvFlat = g.op('Reshape', [dv, g.constI64('shape_TSX', [0, 0, X])]);
  const dx = g.op('Mul', [g.op('MatMul', [dvFlat, g.constF32('M', [X, D], M)]), inv]);
  // The joiners' own gradient (direction at position S−1) enters Gpre through the residual path.
  const S = g.op('Shape', [A], { start: 1, end: 2 }); // [S]
  const padBefore = g.op('Sub', [S, g.constI64('one', [1])]);
  const pads = g.op('Concat', [g.constI64('zero2', [0]), padBefore, g.constI64('zero3', [0, 0, 0, 0])], { axis: 0 });
  const Gnew = g.op('Pad', [g.op('Unsqueeze', [Nw, g.constI64('unsq1', [1])]), pads]); // [T2,S,D]
  const Gpre = g.op('Add', [g.op('Concat', [G, Gnew], { axis: 0 }), dx], undefined, 'Gpre');
  g.output('Gpre', 'float32', ['T', 'S', D]);
  g.op('MatMul', [g.op('Transpose', [Gpre], { perm: [1, 0, 2] }), U], undefined, 'R');
  g.output('R', 'float32', ['S', 'T', 'K']);
  if (skipBelow) {
    let through = g.op('MatMul', [Gpre, g.constF32('M_skip', [D, D], skipBelow.M_DD)]);
    if (skipBelow.scaled) through = g.op('Mul', [through, g.input('inv_scale2', 'float32', ['S', 1])]);
    g.op('Add', [Gpre, through], undefined, 'Gnext');
    g.output('Gnext', 'float32', ['T', 'S', D]);
  }
  return g.encode();
}

/** Graph for a plain product: X [R, C] · W [C, M] + b [M] (weights as inputs, for the constant forward). */
export function buildGemmGraph(): Uint8Array {
  const g = new GraphBuilder('residual-gemm');
  const X = g.input('X', 'float32', ['R', 'C']);
  const W = g.input('W', 'float32', ['C', 'M']);
  const b = g.input('b', 'float32', ['M']);
  g.op('Add', [g.op('MatMul', [X, W]), b], undefined, 'Y');
  g.output('Y', 'float32', ['R', 'M']);
  return g.encode();
}

/** One session per block, created on first use. */
export class AttentionBackward {
  private readonly sessions = new Map<number, Promise<ortTypes.InferenceSession>>();
  private gemmSession?: Promise<ortTypes.InferenceSession>;

  /** `skips[l]`: layer l's skip transcoder path, where it has one (block l + 1's graph carries it). */
  constructor(
    private readonly w: FrozenWeights,
    private readonly key: string,
    private readonly opts: SessionOptions = {},
    private readonly skips: (SkipBackward | undefined)[] = [],
  ) {}

  /** Whether every block's session exists (their weight copies are then part of the process already). */
  get prepared(): boolean {
    return this.sessions.size === this.w.L;
  }

  private session(layer: number): Promise<ortTypes.InferenceSession> {
    let s = this.sessions.get(layer);
    if (!s) {
      const bytes = buildBackwardGraph(this.w.blocks[layer], this.w.D, this.w.H, this.w.X, this.w.center, this.skips[layer - 1]);
      s = createSession(bytes, new Map(), `attn-backward|${this.key}|${layer}`, this.opts).then((c) => c.session);
      this.sessions.set(layer, s);
    }
    return s;
  }

  /** Warms all sessions (so timings of the first prompt do not include creation). */
  async prepare(): Promise<void> {
    for (let l = 0; l < this.w.L; l++) await this.session(l);
    await this.gemm(new Float32Array(1), 1, 1, new Float32Array(1), 1, new Float32Array(1));
  }

  /** X [R, C] · W [C, M] + b → [R, M] (float32). */
  async gemm(X: Float32Array, R: number, C: number, W: Float32Array, M: number, b: Float32Array): Promise<Float32Array> {
    this.gemmSession ??= createSession(buildGemmGraph(), new Map(), 'gemm', this.opts).then((c) => c.session);
    const s = await this.gemmSession;
    const Tn = ort().Tensor;
    const out = await s.run({ X: new Tn('float32', X, [R, C]), W: new Tn('float32', W, [C, M]), b: new Tn('float32', b, [M]) });
    return out.Y.data as Float32Array;
  }

  /**
   * G_TSD (T targets already in the sweep) at block `layer`'s resid_mid, plus `T2` targets joining here with
   * direction rows `N_T2D` at position S−1 → { Gpre at its resid_pre ([T + T2, S, D], joiners last), R_STK = Gpre·U }.
   * `pattern_HSS` and `invScale_S` are already cropped to the S positions of this batch; `U_SDK` likewise. Also
   * `Gnext_TSD`, the gradient to hand to block `layer − 1` (Gpre, plus the skip path of layer − 1 when it has one;
   * `invScale2_S` is that layer's 1/ln2 scale).
   */
  async step(layer: number, G_TSD: Float32Array, T: number, S: number, pattern_HSS: Float32Array, invScale_S: Float32Array, U_SDK: Float32Array, K: number, N_T2D = new Float32Array(0), T2 = 0, invPost_S = new Float32Array(S).fill(1), invScale2_S?: Float32Array) {
    const s = await this.session(layer);
    const Tn = ort().Tensor;
    const D = this.w.D;
    const skip = this.skips[layer - 1];
    const feeds: Record<string, ortTypes.Tensor> = {
      G: new Tn('float32', G_TSD.subarray(0, T * S * D), [T, S, D]),
      N: new Tn('float32', N_T2D.subarray(0, T2 * D), [T2, D]),
      pattern: new Tn('float32', pattern_HSS, [this.w.H, S, S]),
      inv_scale: new Tn('float32', invScale_S, [S, 1]),
      U: new Tn('float32', U_SDK, [S, D, K]),
      inv_post: new Tn('float32', invPost_S, [S, 1]),
    };
    if (skip?.scaled) feeds.inv_scale2 = new Tn('float32', invScale2_S!, [S, 1]);
    const out = await s.run(feeds);
    const Gpre_TSD = out.Gpre.data as Float32Array;
    return { Gpre_TSD, R_STK: out.R.data as Float32Array, Gnext_TSD: skip ? (out.Gnext.data as Float32Array) : Gpre_TSD };
  }

  async dispose(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
    if (this.gemmSession) await (await this.gemmSession).release();
    this.gemmSession = undefined;
  }
}
