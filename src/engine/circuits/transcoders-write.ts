/**
 * Writes transcoders in the SAELens or circuit-tracer layout, and deterministic random ones for tests and benchmarks
 * (in memory with `randomTranscoderWeights`, or drawn while written, one layer at a time, with
 * `writeRandomTranscoders`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { heldTensor, NormalStream, randomTensor, STREAM_CHUNK, writeStreamedSafetensors, type NormalSampler, type StreamedTensor } from '../checkpoint/random';
import type { SafeDtype } from '../checkpoint/safetensors';
import { writeSafetensors, type TensorToWrite } from '../checkpoint/write';
import type { TranscoderInput } from './transcoders';

/** One layer's weights in SAELens orientation: wEnc_DF [d_in, d_sae], wDec_FD [d_sae, d_out]. */
export interface TranscoderWeights {
  wEnc_DF: Float32Array;
  bEnc_F: Float32Array;
  wDec_FD: Float32Array;
  bDec_D: Float32Array;
  threshold_F?: Float32Array;
  /** A skip transcoder's W_skip [d_out, d_in] (written as SAELens `skip_transcoder` / circuit-tracer `W_skip`). */
  wSkip_DD?: Float32Array;
  dIn: number;
  dSae: number;
}

/** One layer l of an L-layer cross-layer transcoder: wDec_FKD [d_sae, L − l, d_out] replaces wDec_FD. */
export interface CrossLayerWeights extends Omit<TranscoderWeights, 'wDec_FD' | 'wSkip_DD'> {
  wDec_FKD: Float32Array;
  outLayers: number;
}

export type WriteActivation = 'relu' | 'jumprelu' | 'topk';

export interface WriteOptions {
  activation: WriteActivation;
  k?: number;
  input?: TranscoderInput;
  dtype?: SafeDtype;
  /** SAELens cfg.json flavour: v6 (hooks under `metadata`) or pre-6 (flat). Default v6. */
  cfgVersion?: 'v6' | 'pre6';
  /** Layer of `layers[0]` (default 0), to write a large set one layer at a time. */
  firstLayer?: number;
}

/** SAELens layout: `dir/layer_{l}/cfg.json` + `sae_weights.safetensors`, one subfolder per layer. */
export function writeSaeLensTranscoders(dir: string, layers: TranscoderWeights[], opts: WriteOptions): void {
  layers.forEach((w, i) => {
    const sub = saeLensLayerDir(dir, i + (opts.firstLayer ?? 0), w.dIn, w.dSae, opts, !!w.wSkip_DD);
    writeSafetensors(path.join(sub, 'sae_weights.safetensors'), saeLensTensors(w, opts.activation), opts.dtype ?? 'F32');
  });
}

/** The tensors of a SAELens `sae_weights.safetensors` (W_dec written [d_sae, d_in]; the threshold for JumpReLU). */
function saeLensTensors(w: TranscoderWeights, activation: WriteActivation): TensorToWrite[] {
  const tensors: TensorToWrite[] = [
    { name: 'W_enc', shape: [w.dIn, w.dSae], data: w.wEnc_DF },
    { name: 'b_enc', shape: [w.dSae], data: w.bEnc_F },
    { name: 'W_dec', shape: [w.dSae, w.dIn], data: w.wDec_FD },
    { name: 'b_dec', shape: [w.dIn], data: w.bDec_D },
  ];
  if (activation === 'jumprelu') tensors.push({ name: 'threshold', shape: [w.dSae], data: w.threshold_F! });
  if (w.wSkip_DD) tensors.push({ name: 'W_skip', shape: [w.dIn, w.dIn], data: w.wSkip_DD });
  return tensors;
}

/** Creates `dir/layer_{l}` with its cfg.json (weights not yet written) and returns the subfolder. */
function saeLensLayerDir(dir: string, l: number, dIn: number, dSae: number, opts: WriteOptions, skip = false): string {
  const input = opts.input ?? 'ln2.hook_normalized';
  const sub = path.join(dir, `layer_${l}`);
  fs.mkdirSync(sub, { recursive: true });
  const hookName = `blocks.${l}.${input}`;
  const hookOut = `blocks.${l}.hook_mlp_out`;
  if (skip && opts.activation === 'topk') throw new Error('SAELens has no TopK skip transcoder architecture');
  const arch = opts.activation === 'topk' ? 'topk' : `${opts.activation === 'jumprelu' ? 'jumprelu_' : ''}${skip ? 'skip_' : ''}transcoder`;
  const common = { d_in: dIn, d_sae: dSae, d_out: dIn, dtype: 'float32', device: 'cpu', apply_b_dec_to_input: false };
  const cfg =
    (opts.cfgVersion ?? 'v6') === 'v6'
      ? {
          ...common,
          architecture: arch,
          normalize_activations: 'none',
          reshape_activations: 'none',
          ...(opts.activation === 'topk' ? { k: opts.k, rescale_acts_by_decoder_norm: false } : {}),
          metadata: { sae_lens_version: '6.18.0', model_name: 'random', hook_name: hookName, hook_name_out: hookOut, hook_head_index: null },
        }
      : {
          ...common,
          architecture: opts.activation === 'topk' ? 'standard' : arch,
          hook_name: hookName,
          hook_layer: l,
          hook_name_out: hookOut,
          activation_fn_str: opts.activation === 'topk' ? 'topk' : 'relu',
          activation_fn_kwargs: opts.activation === 'topk' ? { k: opts.k } : {},
          normalize_activations: 'none',
          model_name: 'random',
        };
  fs.writeFileSync(path.join(sub, 'cfg.json'), JSON.stringify(cfg, null, 1));
  return sub;
}

/** circuit-tracer layout: `config.yaml` + `layer_{l}.safetensors` with W_enc transposed to [d_sae, d_model]. */
export function writeCircuitTracerTranscoders(dir: string, layers: TranscoderWeights[], opts: WriteOptions): void {
  writeCircuitTracerConfig(dir, opts);
  layers.forEach((w, l) => {
    const tensors: TensorToWrite[] = [
      { name: 'W_enc', shape: [w.dSae, w.dIn], data: transpose(w.wEnc_DF, w.dIn, w.dSae) },
      { name: 'W_dec', shape: [w.dSae, w.dIn], data: w.wDec_FD },
      { name: 'b_enc', shape: [w.dSae], data: w.bEnc_F },
      { name: 'b_dec', shape: [w.dIn], data: w.bDec_D },
    ];
    if (opts.activation === 'jumprelu') tensors.push({ name: 'activation_function.threshold', shape: [w.dSae], data: w.threshold_F! });
    if (w.wSkip_DD) tensors.push({ name: 'W_skip', shape: [w.dIn, w.dIn], data: w.wSkip_DD });
    writeSafetensors(path.join(dir, `layer_${l}.safetensors`), tensors, opts.dtype ?? 'F32');
  });
}

/**
 * circuit-tracer's cross-layer layout: `config.yaml` (model_kind cross_layer_transcoder) + per layer i
 * `W_enc_<i>.safetensors` {W_enc_i [d_sae, d_model], b_enc_i, b_dec_i, threshold_i} and `W_dec_<i>.safetensors`
 * {W_dec_i [d_sae, L − i, d_model]}.
 */
export function writeCrossLayerTranscoder(dir: string, layers: CrossLayerWeights[], opts: WriteOptions): void {
  writeCircuitTracerConfig(dir, opts, 'cross_layer_transcoder');
  layers.forEach((w, i) => {
    const enc: TensorToWrite[] = [
      { name: `W_enc_${i}`, shape: [w.dSae, w.dIn], data: transpose(w.wEnc_DF, w.dIn, w.dSae) },
      { name: `b_enc_${i}`, shape: [w.dSae], data: w.bEnc_F },
      { name: `b_dec_${i}`, shape: [w.dIn], data: w.bDec_D },
    ];
    if (opts.activation === 'jumprelu') enc.push({ name: `threshold_${i}`, shape: [w.dSae], data: w.threshold_F! });
    writeSafetensors(path.join(dir, `W_enc_${i}.safetensors`), enc, opts.dtype ?? 'F32');
    writeSafetensors(path.join(dir, `W_dec_${i}.safetensors`), [{ name: `W_dec_${i}`, shape: [w.dSae, w.outLayers, w.dIn], data: w.wDec_FKD }], opts.dtype ?? 'F32');
  });
}

/** Random cross-layer transcoder weights: `randomTranscoderWeights`' encoders, then decoders into every later layer. */
export function randomCrossLayerWeights(nLayers: number, dIn: number, dSae: number, o: RandomTranscoderOptions): CrossLayerWeights[] {
  const normal = new NormalStream(o.seed + 1, o.sampler);
  return randomTranscoderWeights(nLayers, dIn, dSae, o).map(({ wDec_FD: _, ...w }, l) => {
    const outLayers = nLayers - l;
    const wDec_FKD = new Float32Array(dSae * outLayers * dIn);
    normal.fill(wDec_FKD, 0, o.decStd ?? 1 / Math.sqrt(dSae));
    return { ...w, outLayers, wDec_FKD };
  });
}

function writeCircuitTracerConfig(dir: string, opts: WriteOptions, modelKind = 'transcoder_set'): void {
  fs.mkdirSync(dir, { recursive: true });
  const input = opts.input ?? 'ln2.hook_normalized';
  const lines = [
    '# written by Residual (test fixture)',
    `model_kind: ${modelKind}`,
    'model_name: random',
    `feature_input_hook: ${input}`,
    'feature_output_hook: hook_mlp_out',
  ];
  if (opts.activation === 'topk') lines.push('activation: topk', `k: ${opts.k}`);
  if (opts.activation === 'relu') lines.push('activation: relu');
  fs.writeFileSync(path.join(dir, 'config.yaml'), lines.join('\n') + '\n');
}

/** [rows, cols] → [cols, rows]. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
  return t;
}

export interface RandomTranscoderOptions {
  seed: number;
  /** Encoder weight std (default 1/sqrt(d_in)). */
  encStd?: number;
  /** Decoder weight std (default 1/sqrt(d_sae)). */
  decStd?: number;
  /** Mean of b_enc (negative makes ReLU features sparse); default 0. */
  bEncMean?: number;
  threshold?: number;
  /** How normal samples are drawn (default 'box-muller'; 'table' is several times faster, see NormalStream). */
  sampler?: NormalSampler;
}

/**
 * Random weights for `nLayers` transcoders of width `dSae` on a `dIn`-wide model. One stream of samples in the order
 * W_enc, b_enc, W_dec, b_dec, threshold, layer after layer.
 */
export function randomTranscoderWeights(nLayers: number, dIn: number, dSae: number, o: RandomTranscoderOptions): TranscoderWeights[] {
  const normal = new NormalStream(o.seed, o.sampler);
  const fill = (n: number, mean: number, sd: number) => {
    const a = new Float32Array(n);
    normal.fill(a, mean, sd);
    return a;
  };
  const out: TranscoderWeights[] = [];
  for (let l = 0; l < nLayers; l++) {
    out.push({
      dIn,
      dSae,
      wEnc_DF: fill(dIn * dSae, 0, o.encStd ?? 1 / Math.sqrt(dIn)),
      bEnc_F: fill(dSae, o.bEncMean ?? 0, 0.1),
      wDec_FD: fill(dSae * dIn, 0, o.decStd ?? 1 / Math.sqrt(dSae)),
      bDec_D: fill(dIn, 0, 0.05),
      threshold_F: fill(dSae, o.threshold ?? 0.3, 0.05).map(Math.abs),
    });
  }
  return out;
}

export interface RandomTranscoderSetOptions extends RandomTranscoderOptions, WriteOptions {
  /** 'cross-layer': circuit-tracer's CLT files (W_enc_<i>, W_dec_<i> [d_sae, L − i, d_in]), not byte-equal to any other writer. */
  layout: 'saelens' | 'circuit-tracer' | 'cross-layer';
  /** Called after each chunk written: the file being written and the fraction of all values done. */
  progress?: (message: string, fraction: number) => void;
}

/**
 * Random transcoders drawn while they are written, one layer at a time: the same files as
 * `writeSaeLensTranscoders` / `writeCircuitTracerTranscoders(dir, randomTranscoderWeights(nLayers, dIn, dSae, o), o)`,
 * byte for byte, without holding the set. Memory: one chunk of values (SAELens) or one layer's encoder, which the
 * circuit-tracer layout stores transposed (d_in · d_sae float32, twice).
 */
export function writeRandomTranscoders(dir: string, nLayers: number, dIn: number, dSae: number, o: RandomTranscoderSetOptions): void {
  const normal = new NormalStream(o.seed, o.sampler);
  const encStd = o.encStd ?? 1 / Math.sqrt(dIn);
  const decStd = o.decStd ?? 1 / Math.sqrt(dSae);
  const drawn = (n: number, mean: number, sd: number) => {
    const a = new Float32Array(n);
    normal.fill(a, mean, sd);
    return a;
  };
  const jump = o.activation === 'jumprelu';
  const perLayer = 2 * dIn * dSae + dSae + dIn + (jump ? dSae : 0);
  if (o.layout === 'cross-layer') {
    writeCircuitTracerConfig(dir, o, 'cross_layer_transcoder');
    const total = nLayers * (dIn * dSae + dSae + dIn) + ((nLayers * (nLayers + 1)) / 2) * dSae * dIn;
    let done = 0;
    const onValues = (file: string) => o.progress && ((_: string, n: number) => o.progress!(file, (done += n) / total));
    for (let l = 0; l < nLayers; l++) {
      const enc = path.join(dir, `W_enc_${l}.safetensors`);
      const tensors = [
        randomTensor(`W_enc_${l}`, [dSae, dIn], normal, 0, encStd),
        randomTensor(`b_enc_${l}`, [dSae], normal, o.bEncMean ?? 0, 0.1),
        randomTensor(`b_dec_${l}`, [dIn], normal, 0, 0.05),
      ];
      if (jump) tensors.push(randomTensor(`threshold_${l}`, [dSae], normal, o.threshold ?? 0.3, 0.05, true));
      writeStreamedSafetensors(enc, tensors, o.dtype ?? 'F32', undefined, onValues(enc));
      const dec = path.join(dir, `W_dec_${l}.safetensors`);
      writeStreamedSafetensors(dec, [randomTensor(`W_dec_${l}`, [dSae, nLayers - l, dIn], normal, 0, decStd)], o.dtype ?? 'F32', undefined, onValues(dec));
    }
    return;
  }
  if (o.layout === 'circuit-tracer') writeCircuitTracerConfig(dir, o);
  for (let l = 0; l < nLayers; l++) {
    let file: string;
    let tensors: StreamedTensor[];
    if (o.layout === 'saelens') {
      const sub = saeLensLayerDir(dir, l + (o.firstLayer ?? 0), dIn, dSae, o);
      file = path.join(sub, 'sae_weights.safetensors');
      tensors = [
        randomTensor('W_enc', [dIn, dSae], normal, 0, encStd),
        randomTensor('b_enc', [dSae], normal, o.bEncMean ?? 0, 0.1),
        randomTensor('W_dec', [dSae, dIn], normal, 0, decStd),
        randomTensor('b_dec', [dIn], normal, 0, 0.05),
      ];
      if (jump) tensors.push(randomTensor('threshold', [dSae], normal, o.threshold ?? 0.3, 0.05, true));
    } else {
      // The file starts with the transposed encoder, so the encoder and b_enc (drawn before W_dec) are held.
      file = path.join(dir, `layer_${l}.safetensors`);
      const wEnc_DF = drawn(dIn * dSae, 0, encStd);
      const bEnc_F = drawn(dSae, o.bEncMean ?? 0, 0.1);
      tensors = [
        { name: 'W_enc', shape: [dSae, dIn], chunks: () => transposedRows(wEnc_DF, dIn, dSae) },
        randomTensor('W_dec', [dSae, dIn], normal, 0, decStd),
        heldTensor({ name: 'b_enc', shape: [dSae], data: bEnc_F }),
        randomTensor('b_dec', [dIn], normal, 0, 0.05),
      ];
      if (jump) tensors.push(randomTensor('activation_function.threshold', [dSae], normal, o.threshold ?? 0.3, 0.05, true));
    }
    let done = 0;
    const onValues = o.progress && ((_: string, n: number) => o.progress!(file, (l * perLayer + (done += n)) / (nLayers * perLayer)));
    writeStreamedSafetensors(file, tensors, o.dtype ?? 'F32', undefined, onValues);
    // The threshold is drawn for every activation, so layer l + 1 starts at the same point of the stream.
    if (!jump) drawn(dSae, 0, 1);
  }
}

/** The [cols, rows] transpose of `a_RC`, a block of rows at a time. */
function* transposedRows(a_RC: Float32Array, rows: number, cols: number): Iterable<Float32Array> {
  const per = Math.max(1, Math.floor(STREAM_CHUNK / rows));
  const buf = new Float32Array(Math.min(cols, per) * rows);
  for (let c0 = 0; c0 < cols; c0 += per) {
    const c1 = Math.min(cols, c0 + per);
    for (let r = 0; r < rows; r++) for (let c = c0; c < c1; c++) buf[(c - c0) * rows + r] = a_RC[r * cols + c];
    yield buf.subarray(0, (c1 - c0) * rows);
  }
}

export interface ResidualSaeWriteOptions {
  /** `blocks.L.hook_resid_pre|mid|post`. */
  hook: string;
  activation: WriteActivation;
  k?: number;
  applyBDecToInput: boolean;
  normalize?: 'none' | 'constant_norm_rescale' | 'layer_norm';
  /** SAELens cfg.json flavour: v6 (hook under `metadata`) or pre-6 (flat). Default v6. */
  cfgVersion?: 'v6' | 'pre6';
  /** Extra cfg.json keys (e.g. `metrics`), merged last. */
  extra?: Record<string, unknown>;
}

/** One residual-stream SAE in the SAELens layout: `dir/cfg.json` + `dir/sae_weights.safetensors` (W_dec [d_sae, d_in]). */
export function writeResidualSae(dir: string, w: TranscoderWeights, opts: ResidualSaeWriteOptions): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'sae_weights.safetensors'), saeLensTensors(w, opts.activation), 'F32');
  const architecture = opts.activation === 'relu' ? 'standard' : opts.activation;
  const common = { d_in: w.dIn, d_sae: w.dSae, dtype: 'float32', device: 'cpu', apply_b_dec_to_input: opts.applyBDecToInput, normalize_activations: opts.normalize ?? 'none' };
  const layer = Number(/^blocks\.(\d+)\./.exec(opts.hook)?.[1]);
  const cfg =
    (opts.cfgVersion ?? 'v6') === 'v6'
      ? { ...common, architecture, reshape_activations: 'none', ...(opts.activation === 'topk' ? { k: opts.k, rescale_acts_by_decoder_norm: false } : {}), metadata: { sae_lens_version: '6.18.0', model_name: 'random', hook_name: opts.hook, hook_head_index: null } }
      : { ...common, architecture: opts.activation === 'topk' ? 'standard' : architecture, hook_name: opts.hook, hook_layer: layer, activation_fn_str: opts.activation === 'topk' ? 'topk' : 'relu', activation_fn_kwargs: opts.activation === 'topk' ? { k: opts.k } : {}, model_name: 'random' };
  fs.writeFileSync(path.join(dir, 'cfg.json'), JSON.stringify({ ...cfg, ...opts.extra }, null, 1));
}
