/**
 * Residual-stream SAEs as a lens: which dictionary features a SAELens SAE finds at every token of a prompt.
 *
 * An SAE folder in the SAELens layout (reference/formats.md §3) — one folder with `cfg.json` +
 * `sae_weights.safetensors`, or a folder of such subfolders, one per layer — whose `hook_name` is
 * `blocks.L.hook_resid_pre|mid|post`. SAELens' forward, on the residual x at that hook:
 *   x' = norm_in(x) − (apply_b_dec_to_input ? b_dec : 0),   pre = x'·W_enc + b_enc,   acts = activation(pre)
 * with `normalize_activations` "none", "constant_norm_rescale" (x·√d_in/‖x‖) or "layer_norm" ((x − mean)/(std + 1e-5),
 * std with N − 1) and the activations of `saeLensActivation` (ReLU, JumpReLU, TopK). The reconstruction
 * acts·W_dec + b_dec is compared with norm_in(x), so a lens on the wrong hook or model shows as a poor FVU.
 *
 * The encoder runs in ONNX Runtime (features.ts, the graph transcoders use); the folder is read by the transcoders'
 * loader, so a folder's faults read the same in every panel.
 */
import type { ModelConfig } from './checkpoint/config';
import { readRows, type TensorEntry } from './checkpoint/safetensors';
import { ResidualError, throwIfCancelled, type CancelToken } from './errors';
import { hookName, type HookName } from './hooks';
import type { Model } from './model';
import { extremes } from './numeric';
import type { ResidPoint } from './results';
import { FeatureEncoder, type EncoderSpec, type LayerActivations } from './circuits/features';
import { firstCountedPosition, fractionUnexplained, poorReconstruction, reconstructionError } from './circuits/reconstruction';
import { encoderTensors, openTranscoderFolder, readDecoderRows, readFiniteVector, readStoredTranscoder, saeLensActivation, type StoredTranscoder, type TranscoderActivation } from './circuits/transcoders';

export type SaeNormalization = 'none' | 'constant_norm_rescale' | 'layer_norm';

export interface ResidualSae extends EncoderSpec {
  /** `blocks.L.hook_resid_*`, the hook it reads and reconstructs. */
  hook: HookName;
  point: ResidPoint;
  wDec: TensorEntry;
  bDec: TensorEntry;
  applyBDecToInput: boolean;
  normalize: SaeNormalization;
  /** cfg.json's `architecture` (or activation), for display. */
  architecture: string;
  /** The folder every file stays inside, and the cfg.json (feature indexes are read beside it). */
  root: string;
  config: string;
  weights: string;
  /** The FVU the SAE's config reports (`metrics.fvu`), when it has one. */
  reportedFvu?: number;
}

export interface ResidualSaeSet {
  dir: string;
  /** The set's id, as transcoder sets have (hub repo, Neuronpedia id, or folder name). */
  scan: string;
  /** Index = layer; only the layers the folder has are set. */
  layers: ResidualSae[];
  /** The layers present, ascending. */
  available: number[];
}

const RESID_HOOK = /^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post)$/;

/** Opens an SAE folder and checks every SAE in it against the model (shapes, hooks, what it can compute). */
export function openResidualSaes(dir: string, cfg: ModelConfig): ResidualSaeSet {
  const folder = openTranscoderFolder(dir);
  if (folder.format !== 'saelens') {
    throw new ResidualError('a circuit-tracer folder (config.yaml) holds transcoders, not residual-stream SAEs: use it for Trace Circuit (residual.transcodersPath)', folder.dir, 'unsupported');
  }
  const layers: ResidualSae[] = [];
  for (const files of folder.layers) layers[files.layer] = residualSae(readStoredTranscoder(folder, files.layer), cfg);
  return { dir: folder.dir, scan: folder.scan, layers, available: folder.layers.map((f) => f.layer) };
}

function residualSae(s: StoredTranscoder, model: ModelConfig): ResidualSae {
  const cfg = s.settings;
  const file = s.config;
  const arch = String(cfg.architecture ?? cfg.activation_fn ?? cfg.activation_fn_str ?? 'standard');
  if (!s.hookIn) throw new ResidualError('"hook_name" is missing: cannot tell which hook the SAE reads', file);
  if (s.hookOut || /transcoder/.test(arch) || cfg.d_out !== undefined) {
    throw new ResidualError(`this is a transcoder (reads ${s.hookIn}${s.hookOut ? `, writes ${s.hookOut}` : ''}), not a residual-stream SAE: trace circuits with it (residual.transcodersPath)`, file, 'unsupported');
  }
  const m = RESID_HOOK.exec(s.hookIn);
  if (!m) throw new ResidualError(`hook_name "${s.hookIn}" is not a residual-stream hook; SAEs read here must read blocks.<l>.hook_resid_pre, hook_resid_mid or hook_resid_post`, file, 'unsupported');
  const layer = Number(m[1]);
  const n = model.nLayers;
  if (layer >= n) throw new ResidualError(`an SAE for layer ${layer}, but the model (${model.name}) has ${n} layer${n === 1 ? '' : 's'} (0..${n - 1}); use an SAE made for this model`, file);
  if (/gated|skip/.test(arch)) throw new ResidualError(`architecture "${arch}" is not supported (standard, jumprelu, topk)`, file, 'unsupported');
  const normalize = normalization(cfg.normalize_activations, file);
  if (cfg.rescale_acts_by_decoder_norm === true) {
    throw new ResidualError('rescale_acts_by_decoder_norm is true, which is not supported; fold the decoder norms into W_enc and W_dec', file, 'unsupported');
  }
  if (cfg.reshape_activations !== undefined && cfg.reshape_activations !== null && cfg.reshape_activations !== 'none') {
    throw new ResidualError(`reshape_activations "${String(cfg.reshape_activations)}" is not supported for a residual-stream SAE`, file, 'unsupported');
  }
  const activation = saeLensActivation(s, arch, 'SAE');
  const enc = encoderTensors(s, activation, activation.kind === 'jumprelu' ? s.tensors.get('threshold') : undefined, file);
  const D = model.dModel;
  if (s.dIn !== D) throw new ResidualError(`the SAE reads ${s.dIn} values but the model's d_model is ${D}: it was made for another model`, s.weights);
  if (s.dOut !== D) throw new ResidualError(`W_dec writes ${s.dOut} values but the SAE reads ${s.dIn}; a residual-stream SAE reconstructs its input`, s.weights);
  return {
    layer,
    input: m[2],
    hook: hookName(layer, m[2] as ResidPoint),
    point: m[2] as ResidPoint,
    activation,
    dIn: D,
    dSae: s.dSae,
    encLayout: 'DF',
    wDec: s.wDec,
    ...enc,
    source: file,
    // SAELens' default when a config does not say (pre-6 configs were converted with it).
    applyBDecToInput: cfg.apply_b_dec_to_input !== false,
    normalize,
    architecture: arch,
    root: s.root,
    config: file,
    weights: s.weights,
  };
}

function normalization(v: unknown, file: string): SaeNormalization {
  if (v === undefined || v === null || v === false || v === 'none') return 'none';
  if (v === 'constant_norm_rescale' || v === 'layer_norm') return v;
  if (v === true || v === 'expected_average_only_in') {
    throw new ResidualError(
      'normalize_activations "expected_average_only_in" needs the dataset\'s scaling factor, which SAELens folds into the weights when it loads them; save the SAE after loading (its cfg then says "none")',
      file,
      'unsupported',
    );
  }
  throw new ResidualError(`normalize_activations "${String(v)}" is not supported (none, constant_norm_rescale, layer_norm)`, file, 'unsupported');
}

/** How an activation reads in the panel: "TopK 32", "JumpReLU", "ReLU". */
export function activationName(a: TranscoderActivation): string {
  return a.kind === 'topk' ? `TopK ${a.k}` : a.kind === 'jumprelu' ? 'JumpReLU' : 'ReLU';
}

/** norm_in(x) at every position (SAELens' `run_time_activation_norm_fn_in`). */
export function normalizeInput(sae: Pick<ResidualSae, 'normalize'>, x_PD: Float32Array, P: number, D: number): Float32Array {
  if (sae.normalize === 'none') return x_PD;
  const out = new Float32Array(P * D);
  for (let p = 0; p < P; p++) {
    const x = x_PD.subarray(p * D, (p + 1) * D);
    if (sae.normalize === 'constant_norm_rescale') {
      let ss = 0;
      for (let d = 0; d < D; d++) ss += x[d] * x[d];
      const scale = Math.sqrt(D) / Math.sqrt(ss);
      for (let d = 0; d < D; d++) out[p * D + d] = x[d] * scale;
    } else {
      let mean = 0;
      for (let d = 0; d < D; d++) mean += x[d] / D;
      let v = 0;
      for (let d = 0; d < D; d++) v += (x[d] - mean) ** 2;
      const std = Math.sqrt(v / (D - 1));
      for (let d = 0; d < D; d++) out[p * D + d] = (x[d] - mean) / (std + 1e-5);
    }
  }
  return out;
}

/** What an SAE finds on one prompt. */
export interface SaeReading {
  layer: number;
  hook: HookName;
  /** Active features per position (CSR). */
  acts: LayerActivations;
  /** Per position: how many features are active. */
  l0: number[];
  /** ‖x' − reconstruction‖² / ‖x' − its mean‖² over the positions counted (x' = norm_in(x)). */
  fvu: number;
  /** Positions left out of the FVU (a leading BOS). */
  skipped: number;
}

/**
 * Runs the model on `ids`, reads the SAE's hook and encodes it. `encoder` keeps the SAEs' sessions (one per set).
 * A poor FVU is reported (`saeWarning`), never hidden.
 */
export async function readSaeFeatures(model: Model, sae: ResidualSae, encoder: FeatureEncoder, ids: number[], cancel?: CancelToken): Promise<SaeReading> {
  if (!model.hooks.has(sae.hook)) throw new ResidualError(`the model (${model.info.name}) has no hook ${sae.hook}`, sae.config, 'unsupported');
  const P = ids.length;
  const D = model.config.dModel;
  const run = await model.run({ ids, hooks: [sae.hook], logitPositions: [P - 1], cancel });
  throwIfCancelled(cancel);
  const x = normalizeInput(sae, run.activations.get(sae.hook)!.data, P, D);
  const bDec = readFiniteVector(sae.layer, sae.bDec);
  let input = x;
  if (sae.applyBDecToInput) {
    input = new Float32Array(P * D);
    for (let i = 0; i < P * D; i++) input[i] = x[i] - bDec[i % D];
  }
  const acts = await encoder.encode(sae.layer, input, P);
  throwIfCancelled(cancel);
  const dec = readDecoderRows(sae, acts.feature);
  const from = firstCountedPosition(model, ids);
  const fvu = fractionUnexplained(x, reconstructionError(acts, dec, bDec, x, P, D), P, D, from);
  const l0 = Array.from({ length: P }, (_, p) => acts.start[p + 1] - acts.start[p]);
  return { layer: sae.layer, hook: sae.hook, acts, l0, fvu, skipped: from };
}

/** A sentence when the SAE reconstructs this prompt poorly (wrong hook, model or normalisation), else undefined. */
export function saeWarning(sae: ResidualSae, r: SaeReading): string | undefined {
  const reported = sae.reportedFvu;
  if (!poorReconstruction(r.fvu, reported)) return undefined;
  const fvu = Number.isFinite(r.fvu) ? r.fvu.toPrecision(3) : String(r.fvu);
  return `The SAE leaves ${fvu} of the variance of ${sae.hook} unexplained on this prompt${reported !== undefined ? ` (its own evaluation: ${reported.toPrecision(2)})` : ''}: it may have been trained on another model, hook or normalisation, so its features here mean little.`;
}

/** The `n` strongest features at position `p`, strongest first: [index, activation]. */
export function topAt(r: SaeReading, p: number, n: number): [number, number][] {
  const out: [number, number][] = [];
  for (let j = r.acts.start[p]; j < r.acts.start[p + 1]; j++) out.push([r.acts.feature[j], r.acts.act[j]]);
  return out.sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, n);
}

/** Feature `index`'s activation at every position (0 where it is not active). */
export function activationsOf(r: SaeReading, index: number): number[] {
  const P = r.acts.start.length - 1;
  const out = new Array<number>(P).fill(0);
  for (let p = 0; p < P; p++) for (let j = r.acts.start[p]; j < r.acts.start[p + 1]; j++) if (r.acts.feature[j] === index) out[p] = r.acts.act[j];
  return out;
}

/** The `n` features with the largest activation anywhere on the prompt, strongest first, with their maxima. */
export function strongestFeatures(r: SaeReading, n: number): [number, number][] {
  const best = new Map<number, number>();
  for (let j = 0; j < r.acts.feature.length; j++) {
    const f = r.acts.feature[j];
    best.set(f, Math.max(best.get(f) ?? -Infinity, r.acts.act[j]));
  }
  return [...best].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, n);
}

/**
 * The tokens feature `index`'s decoder row pushes up and down most, straight through the unembedding (W_dec[f] · W_U,
 * no final norm, as the circuit cards and Neuronpedia's logit lists): [token id, value], `k` each way.
 */
export function decoderLogits(model: Model, sae: ResidualSae, index: number, k = 10): { top: [number, number][]; bottom: [number, number][] } {
  if (!(Number.isInteger(index) && index >= 0 && index < sae.dSae)) throw new ResidualError(`no feature ${index}: the SAE has features 0..${sae.dSae - 1}`, sae.config);
  const row = readDecoderRows(sae, [index]);
  const U = model.checkpoint.tensors.get(model.checkpoint.unembedName)!;
  const [V, D] = U.shape;
  const z = new Float64Array(V);
  const CHUNK = 4096;
  for (let v0 = 0; v0 < V; v0 += CHUNK) {
    const m = Math.min(CHUNK, V - v0);
    const rows = readRows(U, Array.from({ length: m }, (_, i) => v0 + i));
    for (let v = 0; v < m; v++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += row[d] * rows[v * D + d];
      z[v0 + v] = s;
    }
  }
  return extremes(z, k);
}

/** One encoder (ONNX sessions) per SAE folder. */
export function saeEncoder(set: ResidualSaeSet, opts?: ConstructorParameters<typeof FeatureEncoder>[1]): FeatureEncoder {
  return new FeatureEncoder(set, opts);
}
