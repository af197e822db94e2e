/**
 * Writes transcoders in the SAELens or circuit-tracer layout, and deterministic random ones for tests and benchmarks.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gaussian, mulberry32 } from '../checkpoint/random';
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
  dIn: number;
  dSae: number;
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
  const input = opts.input ?? 'ln2.hook_normalized';
  layers.forEach((w, i) => {
    const l = i + (opts.firstLayer ?? 0);
    const sub = path.join(dir, `layer_${l}`);
    fs.mkdirSync(sub, { recursive: true });
    const hookName = `blocks.${l}.${input}`;
    const hookOut = `blocks.${l}.hook_mlp_out`;
    const architecture = opts.activation === 'relu' ? 'transcoder' : opts.activation === 'jumprelu' ? 'jumprelu_transcoder' : 'topk';
    const common = { d_in: w.dIn, d_sae: w.dSae, d_out: w.dIn, dtype: 'float32', device: 'cpu', apply_b_dec_to_input: false };
    const cfg =
      (opts.cfgVersion ?? 'v6') === 'v6'
        ? {
            ...common,
            architecture,
            normalize_activations: 'none',
            reshape_activations: 'none',
            ...(opts.activation === 'topk' ? { k: opts.k, rescale_acts_by_decoder_norm: false } : {}),
            metadata: { sae_lens_version: '6.18.0', model_name: 'random', hook_name: hookName, hook_name_out: hookOut, hook_head_index: null },
          }
        : {
            ...common,
            architecture: opts.activation === 'topk' ? 'standard' : architecture,
            hook_name: hookName,
            hook_layer: l,
            hook_name_out: hookOut,
            activation_fn_str: opts.activation === 'topk' ? 'topk' : 'relu',
            activation_fn_kwargs: opts.activation === 'topk' ? { k: opts.k } : {},
            normalize_activations: 'none',
            model_name: 'random',
          };
    fs.writeFileSync(path.join(sub, 'cfg.json'), JSON.stringify(cfg, null, 1));
    const tensors: TensorToWrite[] = [
      { name: 'W_enc', shape: [w.dIn, w.dSae], data: w.wEnc_DF },
      { name: 'b_enc', shape: [w.dSae], data: w.bEnc_F },
      { name: 'W_dec', shape: [w.dSae, w.dIn], data: w.wDec_FD },
      { name: 'b_dec', shape: [w.dIn], data: w.bDec_D },
    ];
    if (opts.activation === 'jumprelu') tensors.push({ name: 'threshold', shape: [w.dSae], data: w.threshold_F! });
    writeSafetensors(path.join(sub, 'sae_weights.safetensors'), tensors, opts.dtype ?? 'F32');
  });
}

/** circuit-tracer layout: `config.yaml` + `layer_{l}.safetensors` with W_enc transposed to [d_sae, d_model]. */
export function writeCircuitTracerTranscoders(dir: string, layers: TranscoderWeights[], opts: WriteOptions): void {
  fs.mkdirSync(dir, { recursive: true });
  const input = opts.input ?? 'ln2.hook_normalized';
  const lines = [
    '# written by Residual (test fixture)',
    'model_kind: transcoder_set',
    'model_name: random',
    `feature_input_hook: ${input}`,
    'feature_output_hook: hook_mlp_out',
  ];
  if (opts.activation === 'topk') lines.push('activation: topk', `k: ${opts.k}`);
  if (opts.activation === 'relu') lines.push('activation: relu');
  fs.writeFileSync(path.join(dir, 'config.yaml'), lines.join('\n') + '\n');
  layers.forEach((w, l) => {
    const encT = new Float32Array(w.dSae * w.dIn);
    for (let d = 0; d < w.dIn; d++) for (let f = 0; f < w.dSae; f++) encT[f * w.dIn + d] = w.wEnc_DF[d * w.dSae + f];
    const tensors: TensorToWrite[] = [
      { name: 'W_enc', shape: [w.dSae, w.dIn], data: encT },
      { name: 'W_dec', shape: [w.dSae, w.dIn], data: w.wDec_FD },
      { name: 'b_enc', shape: [w.dSae], data: w.bEnc_F },
      { name: 'b_dec', shape: [w.dIn], data: w.bDec_D },
    ];
    if (opts.activation === 'jumprelu') tensors.push({ name: 'activation_function.threshold', shape: [w.dSae], data: w.threshold_F! });
    writeSafetensors(path.join(dir, `layer_${l}.safetensors`), tensors, opts.dtype ?? 'F32');
  });
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
}

/** Random weights for `nLayers` transcoders of width `dSae` on a `dIn`-wide model. */
export function randomTranscoderWeights(nLayers: number, dIn: number, dSae: number, o: RandomTranscoderOptions): TranscoderWeights[] {
  const normal = gaussian(mulberry32(o.seed));
  const fill = (n: number, mean: number, sd: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = mean + sd * normal();
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
