/**
 * Transcoder feature activations as ONNX work: one small graph per layer computing `pre = x·W_enc + b_enc` and the
 * activation (ReLU, JumpReLU, TopK), with the weights as external data pointing into the transcoder's safetensors
 * file. Sessions are created on first use and kept until `dispose`.
 */
import * as path from 'node:path';
import type * as ortTypes from 'onnxruntime-common';
import { ResidualError } from '../errors';
import { GraphBuilder } from '../onnx/builder';
import { weightAccess } from '../onnx/ops';
import { createSession, ort, type SessionOptions } from '../runtime/session';
import type { TensorEntry } from '../checkpoint/safetensors';
import { checkFiniteTensor, firstNonFinite, readFiniteVector, type Transcoder } from './transcoders';

/**
 * What an encoder graph needs of a transcoder or a residual-stream SAE (sae.ts): its encoder tensors, activation and
 * sizes; `input` names the hook it reads (without `blocks.{l}.`), for messages.
 */
export type EncoderSpec = Pick<Transcoder, 'layer' | 'activation' | 'dIn' | 'dSae' | 'encLayout' | 'wEnc' | 'bEnc' | 'threshold' | 'source'> & { input: string };

/** Active features of one layer, position-major (CSR): features of position p are `start[p]..start[p+1]`. */
export interface LayerActivations {
  layer: number;
  /** [P+1] offsets into `feature`/`act`. */
  start: Int32Array;
  /** Feature indices, ascending within a position. */
  feature: Int32Array;
  act: Float32Array;
}

/**
 * Builds the encoder graph of one transcoder: input `x` [P, d_in]; outputs `acts` [P, F] or `values`/`indices` [P, k],
 * and `pre_sum`, the sum of every pre-activation: not finite when W_enc, b_enc or the input holds NaN/Inf (which the
 * activation would otherwise hide as zeros).
 */
export function buildEncoderGraph(t: EncoderSpec): { bytes: Uint8Array; externalFiles: Map<string, string> } {
  const g = new GraphBuilder(`residual-transcoder-${t.layer}`);
  const externalFiles = new Map<string, string>();
  // The weights stay in the transcoder's files (located beside the graph by base name), read as float32.
  const entries = new Map([t.wEnc, t.bEnc, t.threshold].filter((e) => e !== undefined).map((e) => [e.name, e]));
  const weights = weightAccess(g, entries, (file) => path.basename(file), externalFiles, 'float32');
  const w = (e: TensorEntry): string => weights.f32(e.name);
  const x = g.input('x', 'float32', ['pos', t.dIn]);
  const pre = g.op('Gemm', [x, w(t.wEnc), w(t.bEnc)], { transB: t.encLayout === 'FD' ? 1 : 0 });
  g.op('ReduceSum', [pre], { keepdims: 0 }, 'pre_sum');
  g.output('pre_sum', 'float32', []);
  const a = t.activation;
  if (a.kind === 'topk') {
    const [values, indices] = g.node('TopK', [pre, g.constI64('k', [a.k])], { nOut: 2, attrs: { axis: -1, largest: 1, sorted: 1 } });
    g.op('Identity', [a.relu ? g.op('Relu', [values]) : values], undefined, 'values');
    g.op('Identity', [indices], undefined, 'indices');
    g.output('values', 'float32', ['pos', a.k]);
    g.output('indices', 'int64', ['pos', a.k]);
  } else {
    const acts =
      a.kind === 'relu'
        ? g.op('Relu', [pre])
        : g.op('Where', [g.op('Greater', [pre, w(t.threshold!)]), pre, g.constF32('zero', [], [0])]);
    g.op('Identity', [acts], undefined, 'acts');
    g.output('acts', 'float32', ['pos', t.dSae]);
  }
  return { bytes: g.encode(), externalFiles };
}

export class FeatureEncoder {
  private readonly sessions = new Map<number, Promise<ortTypes.InferenceSession>>();

  constructor(
    /** Index = layer (a transcoder set, or the SAEs of a folder). */
    readonly set: { layers: EncoderSpec[] },
    private readonly opts: SessionOptions = {},
  ) {}

  private session(layer: number): Promise<ortTypes.InferenceSession> {
    let s = this.sessions.get(layer);
    if (!s) {
      const t = this.set.layers[layer];
      // The small tensors the encoder reads are checked whole (W_enc through the pre-activations, see encode).
      readFiniteVector(t.layer, t.bEnc);
      if (t.threshold) readFiniteVector(t.layer, t.threshold);
      const { bytes, externalFiles } = buildEncoderGraph(t);
      s = createSession(bytes, externalFiles, `transcoder|${t.source}|${t.layer}`, this.opts).then((c) => c.session);
      this.sessions.set(layer, s);
    }
    return s;
  }

  /** Active features at every position of `x_PD` (the transcoder's input hook for this prompt). */
  async encode(layer: number, x_PD: Float32Array, P: number): Promise<LayerActivations> {
    const t = this.set.layers[layer];
    if (x_PD.length !== P * t.dIn) throw new ResidualError(`input has ${x_PD.length} values, expected ${P}×${t.dIn}`, t.source);
    const s = await this.session(layer);
    const out = await s.run({ x: new (ort().Tensor)('float32', x_PD, [P, t.dIn]) });
    if (!Number.isFinite((out.pre_sum.data as Float32Array)[0])) throw this.nonFinite(t, x_PD);
    const feature: number[] = [];
    const act: number[] = [];
    const start = new Int32Array(P + 1);
    if (t.activation.kind === 'topk') {
      const k = t.activation.k;
      const v = out.values.data as Float32Array;
      const idx = out.indices.data as BigInt64Array;
      for (let p = 0; p < P; p++) {
        const pairs: [number, number][] = [];
        for (let j = 0; j < k; j++) if (v[p * k + j] !== 0) pairs.push([Number(idx[p * k + j]), v[p * k + j]]);
        pairs.sort((a, b) => a[0] - b[0]);
        for (const [f, a] of pairs) feature.push(f), act.push(a);
        start[p + 1] = feature.length;
      }
    } else {
      const F = t.dSae;
      const acts = out.acts.data as Float32Array;
      for (let p = 0; p < P; p++) {
        for (let f = 0; f < F; f++) {
          const a = acts[p * F + f];
          if (a !== 0) feature.push(f), act.push(a);
        }
        start[p + 1] = feature.length;
      }
    }
    return { layer, start, feature: Int32Array.from(feature), act: Float32Array.from(act) };
  }

  /** Why the pre-activations of `t` on `x_PD` are not finite: the model's input, or which weight holds NaN/Inf. */
  private nonFinite(t: EncoderSpec, x_PD: Float32Array): ResidualError {
    const i = firstNonFinite(x_PD);
    if (i >= 0) {
      return new ResidualError(
        `the model's activations hold ${x_PD[i]} at position ${Math.floor(i / t.dIn)} (the layer-${t.layer} ${t.input.includes('resid') ? 'SAE' : 'transcoder'}'s input); the model's weights or this prompt give NaN/Inf`,
        `blocks.${t.layer}.${t.input}`,
        'numeric',
      );
    }
    try {
      readFiniteVector(t.layer, t.bEnc);
      checkFiniteTensor(t.layer, t.wEnc);
    } catch (e) {
      return e as ResidualError;
    }
    return new ResidualError(`layer ${t.layer} ${t.input.includes('resid') ? 'SAE' : 'transcoder'}: the pre-activations overflow float32 on this prompt (weights too large)`, t.source, 'numeric');
  }

  /** Releases one layer's session (its float32 encoder copy); the next `encode` of that layer creates it again. */
  async release(layer: number): Promise<void> {
    const s = this.sessions.get(layer);
    this.sessions.delete(layer);
    if (s) await (await s).release();
  }

  async dispose(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
