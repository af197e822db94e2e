/**
 * Per-layer transcoders (MLP input → MLP output) from disk, in either layout reference/formats.md describes:
 *  - SAELens: a folder of subfolders, each `cfg.json` + `sae_weights.safetensors` (pre-6 flat cfg or v6 with
 *    `metadata.hook_name`/`hook_name_out`); W_enc [d_in, d_sae], W_dec [d_sae, d_out].
 *  - circuit-tracer: `config.yaml` + `layer_<i>.safetensors`; W_enc [d_sae, d_model] (transposed).
 * Only headers are read here; weights are read on demand (`readVector`, `readRows`, `readEncoderColumns`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../checkpoint/config';
import { readRows, isPlainObject, readSafetensorsHeader, readTensorF32, type TensorEntry } from '../checkpoint/safetensors';
import { ResidualError } from '../errors';
import { parseSimpleYaml } from './yaml';

/** What the transcoder reads: TransformerLens hook names (without the `blocks.{l}.` prefix). */
export type TranscoderInput = 'ln2.hook_normalized' | 'hook_resid_mid' | 'mlp.hook_in';
export const SUPPORTED_INPUTS: readonly TranscoderInput[] = ['ln2.hook_normalized', 'hook_resid_mid', 'mlp.hook_in'];

export type TranscoderActivation =
  | { kind: 'relu' }
  /** `pre · [pre > threshold]` (strict). */
  | { kind: 'jumprelu' }
  /** Keep the k largest pre-activations; `relu` as SAELens does (circuit-tracer's TopK has none). */
  | { kind: 'topk'; k: number; relu: boolean };

export interface Transcoder {
  layer: number;
  input: TranscoderInput;
  activation: TranscoderActivation;
  dIn: number;
  dSae: number;
  dOut: number;
  /** 'DF': [d_in, d_sae] (SAELens); 'FD': [d_sae, d_in] (circuit-tracer). */
  encLayout: 'DF' | 'FD';
  wEnc: TensorEntry;
  bEnc: TensorEntry;
  wDec: TensorEntry;
  bDec: TensorEntry;
  threshold?: TensorEntry;
  /** The config file that described this layer (for messages). */
  source: string;
}

export interface TranscoderSet {
  dir: string;
  format: 'saelens' | 'circuit-tracer';
  /** Index = layer; every model layer has one. */
  layers: Transcoder[];
  dSae: number;
  /** Id for graph metadata (`scan`): the folder name, or config's model_name/scan. */
  scan: string;
}

/** Loads every layer's transcoder from `dir` and checks it against the model. */
export function loadTranscoders(dir: string, cfg: ModelConfig): TranscoderSet {
  const abs = path.resolve(dir);
  if (!fs.existsSync(abs)) throw new ResidualError('transcoders folder not found', abs, 'missing');
  if (!fs.statSync(abs).isDirectory()) throw new ResidualError('expected a folder of transcoders', abs);
  const set = fs.existsSync(path.join(abs, 'config.yaml')) ? loadCircuitTracer(abs) : loadSaeLens(abs);
  validate(set, cfg);
  return set;
}

function loadSaeLens(dir: string): TranscoderSet {
  const subs = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(dir, e.name, 'cfg.json')))
    .map((e) => path.join(dir, e.name));
  if (fs.existsSync(path.join(dir, 'cfg.json'))) subs.push(dir);
  if (subs.length === 0) {
    throw new ResidualError(
      'no transcoders found: expected subfolders with cfg.json + sae_weights.safetensors (SAELens) or config.yaml + layer_<i>.safetensors (circuit-tracer)',
      dir,
      'missing',
    );
  }
  const layers: Transcoder[] = [];
  for (const sub of subs) {
    const t = loadSaeLensOne(sub);
    if (layers[t.layer]) throw new ResidualError(`layer ${t.layer} has two transcoders (${layers[t.layer].source} and ${t.source})`, dir);
    layers[t.layer] = t;
  }
  return finish(dir, 'saelens', layers, path.basename(dir));
}

function loadSaeLensOne(sub: string): Transcoder {
  const cfgPath = path.join(sub, 'cfg.json');
  const cfg = readJson(cfgPath);
  const meta = isPlainObject(cfg.metadata) ? cfg.metadata : {};
  const hookIn = str(meta.hook_name ?? cfg.hook_name ?? cfg.hook_point, cfgPath, 'hook_name');
  const hookOut = str(meta.hook_name_out ?? cfg.hook_name_out, cfgPath, 'hook_name_out');
  const { layer, input } = parseHooks(hookIn, hookOut, cfgPath);
  const arch = String(cfg.architecture ?? (cfg.activation_fn ?? cfg.activation_fn_str) ?? 'standard');
  if (/skip/.test(arch)) throw new ResidualError(`architecture "${arch}" (skip connection) is not supported for attribution`, cfgPath, 'unsupported');
  const norm = cfg.normalize_activations;
  if (norm !== undefined && norm !== null && norm !== 'none' && norm !== false) {
    throw new ResidualError(`normalize_activations "${String(norm)}" is not supported; fold the scaling into the weights`, cfgPath, 'unsupported');
  }
  if (cfg.apply_b_dec_to_input === true) {
    throw new ResidualError('apply_b_dec_to_input is true, which transcoders do not allow (SAELens refuses it too)', cfgPath, 'unsupported');
  }
  const weightsPath = path.join(sub, 'sae_weights.safetensors');
  const tensors = entries(weightsPath);
  const kwargs = isPlainObject(cfg.activation_fn_kwargs) ? cfg.activation_fn_kwargs : {};
  const actName = String(cfg.activation_fn ?? cfg.activation_fn_str ?? '');
  let activation: TranscoderActivation;
  if (arch === 'topk' || actName === 'topk') {
    const k = Number(cfg.k ?? kwargs.k);
    if (!Number.isInteger(k) || k <= 0) throw new ResidualError('TopK transcoder without a positive integer "k"', cfgPath);
    activation = { kind: 'topk', k, relu: true };
  } else if (/jumprelu/.test(arch) || tensors.has('threshold')) {
    activation = { kind: 'jumprelu' };
  } else if (arch === 'standard' || arch === 'transcoder') {
    activation = { kind: 'relu' };
  } else {
    throw new ResidualError(`architecture "${arch}" is not supported (standard, transcoder, jumprelu, jumprelu_transcoder, topk)`, cfgPath, 'unsupported');
  }
  if (activation.kind === 'jumprelu' && !tensors.has('threshold')) {
    throw new ResidualError(`JumpReLU transcoder without a "threshold" tensor`, weightsPath, 'invalid');
  }
  const t = (name: string) => need(tensors, name, weightsPath);
  return {
    layer,
    input,
    activation,
    dIn: 0,
    dSae: 0,
    dOut: 0,
    encLayout: 'DF',
    wEnc: t('W_enc'),
    bEnc: t('b_enc'),
    wDec: t('W_dec'),
    bDec: t('b_dec'),
    threshold: activation.kind === 'jumprelu' ? t('threshold') : undefined,
    source: cfgPath,
  };
}

export interface CircuitTracerFile {
  layer: number;
  file: string;
  /** The hf:// path config.yaml gave, when it named a Hub file. */
  hubPath?: string;
}

/** Throws, saying how to fetch it, when a file config.yaml names on the Hub is not in the folder. */
export function requireDownloaded(f: CircuitTracerFile, cfgPath: string): void {
  if (f.hubPath && !fs.existsSync(f.file)) {
    throw new ResidualError(`"${f.hubPath}" is on the Hugging Face Hub and not in this folder; fetch the transcoder set with "Residual: Download Model…" (or residual download --transcoders)`, cfgPath, 'missing');
  }
}

/**
 * The per-layer files of a circuit-tracer folder: the `transcoders:` list of config.yaml (strings or {filepath,
 * layer}; index = layer unless given) when there is one, else every `layer_<i>.safetensors` beside it. circuit-tracer's
 * published configs name their files on the Hub (hf://owner/name/path); after a download of the repository
 * (Residual: Download Model…) they are the same paths inside this folder.
 */
export function circuitTracerFiles(dir: string, cfgPath: string, y: Record<string, unknown>): { listed: boolean; files: CircuitTracerFile[] } {
  const hub = (p: string): string | undefined => {
    const m = /^hf:\/\/[^/]+\/[^/]+\/(.+)$/.exec(p);
    if (!m) {
      if (p.startsWith('hf://')) throw new ResidualError(`"${p}" is not an hf://owner/name/file path`, cfgPath, 'invalid');
      return undefined;
    }
    const local = path.resolve(dir, m[1]);
    if (path.relative(dir, local).startsWith('..') || path.isAbsolute(m[1])) throw new ResidualError(`"${p}" points outside the transcoder folder`, cfgPath, 'invalid');
    return local;
  };
  if (Array.isArray(y.transcoders) && y.transcoders.length > 0) {
    const files = y.transcoders.map((item, i) => {
      const p = typeof item === 'string' ? item : isPlainObject(item) ? String(item.filepath ?? '') : '';
      const layer = isPlainObject(item) && typeof item.layer === 'number' ? item.layer : i;
      if (!p) throw new ResidualError(`transcoders[${i}] has no file path`, cfgPath, 'invalid');
      const local = hub(p);
      return { layer, file: local ?? path.resolve(dir, p), hubPath: local ? p : undefined };
    });
    return { listed: true, files };
  }
  const files = fs
    .readdirSync(dir)
    .map((f) => /^layer_(\d+)\.safetensors$/.exec(f))
    .filter((m): m is RegExpExecArray => !!m)
    .map((m) => ({ layer: Number(m[1]), file: path.join(dir, m[0]) }));
  return { listed: false, files };
}

function loadCircuitTracer(dir: string): TranscoderSet {
  const cfgPath = path.join(dir, 'config.yaml');
  const y = parseSimpleYaml(fs.readFileSync(cfgPath, 'utf8'), cfgPath);
  if (y.model_kind !== undefined && y.model_kind !== 'transcoder_set') {
    throw new ResidualError(`model_kind "${String(y.model_kind)}" is not supported; only per-layer transcoders ("transcoder_set")`, cfgPath, 'unsupported');
  }
  const inHook = str(y.feature_input_hook, cfgPath, 'feature_input_hook');
  const outHook = str(y.feature_output_hook, cfgPath, 'feature_output_hook');
  const { files } = circuitTracerFiles(dir, cfgPath, y);
  if (files.length === 0) throw new ResidualError('no layer_<i>.safetensors files beside config.yaml', dir, 'missing');
  const layers: Transcoder[] = [];
  for (const f of files) requireDownloaded(f, cfgPath);
  for (const { layer, file } of files) {
    const { input } = parseHooks(`blocks.${layer}.${inHook}`, `blocks.${layer}.${outHook}`, cfgPath);
    const tensors = entries(file);
    const thr = tensors.get('activation_function.threshold') ?? tensors.get('threshold');
    if (tensors.has('W_skip')) throw new ResidualError('W_skip (skip connection) is not supported for attribution', file, 'unsupported');
    let activation: TranscoderActivation;
    if (y.activation === 'topk') {
      const k = Number(y.k);
      if (!Number.isInteger(k) || k <= 0) throw new ResidualError('activation "topk" needs a positive integer "k"', cfgPath);
      activation = { kind: 'topk', k, relu: false };
    } else if (y.activation === 'relu') activation = { kind: 'relu' };
    else if (y.activation === undefined || y.activation === null || y.activation === 'jumprelu') activation = thr ? { kind: 'jumprelu' } : { kind: 'relu' };
    else throw new ResidualError(`activation "${String(y.activation)}" is not supported (relu, topk, or none = JumpReLU when a threshold exists)`, cfgPath, 'unsupported');
    const t = (name: string) => need(tensors, name, file);
    if (layers[layer]) throw new ResidualError(`layer ${layer} is listed twice`, cfgPath);
    layers[layer] = {
      layer,
      input,
      activation,
      dIn: 0,
      dSae: 0,
      dOut: 0,
      encLayout: 'FD',
      wEnc: t('W_enc'),
      bEnc: t('b_enc'),
      wDec: t('W_dec'),
      bDec: t('b_dec'),
      threshold: activation.kind === 'jumprelu' ? thr : undefined,
      source: file,
    };
  }
  const scan = typeof y.scan === 'string' ? y.scan : typeof y.model_name === 'string' ? `${y.model_name}/${path.basename(dir)}` : path.basename(dir);
  return finish(dir, 'circuit-tracer', layers, scan);
}

/** Fills the sizes from the tensor shapes and checks each layer is self-consistent. */
function finish(dir: string, format: TranscoderSet['format'], layers: Transcoder[], scan: string): TranscoderSet {
  let dSae = 0;
  for (const t of layers) {
    if (!t) continue;
    const file = t.wEnc.file;
    const shape = (e: TensorEntry, rank: number) => {
      if (e.shape.length !== rank) throw new ResidualError(`tensor "${e.name}" should have ${rank} dims, has [${e.shape.join(', ')}]`, file);
      return e.shape;
    };
    const [a, b] = shape(t.wEnc, 2);
    const [dIn, F] = t.encLayout === 'DF' ? [a, b] : [b, a];
    const [F2, dOut] = shape(t.wDec, 2);
    const [F3] = shape(t.bEnc, 1);
    const [dOut2] = shape(t.bDec, 1);
    if (F2 !== F || F3 !== F) {
      throw new ResidualError(`dictionary sizes disagree: W_enc [${t.wEnc.shape.join(', ')}], W_dec [${t.wDec.shape.join(', ')}], b_enc [${F3}]`, file);
    }
    if (dOut2 !== dOut) throw new ResidualError(`b_dec has ${dOut2} values but W_dec writes ${dOut}`, file);
    if (t.threshold && (t.threshold.shape.length !== 1 || t.threshold.shape[0] !== F)) {
      throw new ResidualError(`threshold should be [${F}], is [${t.threshold.shape.join(', ')}]`, file);
    }
    if (t.activation.kind === 'topk' && t.activation.k > F) throw new ResidualError(`k = ${t.activation.k} exceeds d_sae = ${F}`, t.source);
    Object.assign(t, { dIn, dSae: F, dOut });
    dSae = Math.max(dSae, F);
  }
  return { dir, format, layers, dSae, scan };
}

function validate(set: TranscoderSet, cfg: ModelConfig): void {
  const D = cfg.dModel;
  for (let l = 0; l < Math.max(set.layers.length, cfg.nLayers); l++) {
    const t = set.layers[l];
    if (l >= cfg.nLayers) throw new ResidualError(`a transcoder for layer ${l}, but the model has layers 0..${cfg.nLayers - 1}`, t.source);
    if (!t) {
      const have = set.layers.map((x, i) => (x ? i : -1)).filter((i) => i >= 0);
      throw new ResidualError(
        `no transcoder for layer ${l}; attribution needs one per layer (found layers ${have.join(', ') || 'none'})`,
        set.dir,
        'missing',
      );
    }
    if (t.dIn !== D || t.dOut !== D) {
      throw new ResidualError(`d_in ${t.dIn} / d_out ${t.dOut} do not match the model's d_model ${D}`, t.source);
    }
    for (const e of [t.wEnc, t.bEnc, t.wDec, t.bDec, t.threshold]) {
      if (e && !['F32', 'F16', 'BF16'].includes(e.dtype)) throw new ResidualError(`tensor "${e.name}" has dtype ${e.dtype}; expected F32, F16 or BF16`, e.file, 'unsupported');
    }
  }
}

function parseHooks(hookIn: string, hookOut: string, file: string): { layer: number; input: TranscoderInput } {
  const m = /^blocks\.(\d+)\.(.+)$/.exec(hookIn);
  const supported = SUPPORTED_INPUTS.map((h) => `blocks.{l}.${h}`).join(' or ');
  if (!m || !(SUPPORTED_INPUTS as readonly string[]).includes(m[2])) {
    throw new ResidualError(`input hook "${hookIn}" is not supported; transcoders must read ${supported}`, file, 'unsupported');
  }
  const layer = Number(m[1]);
  // circuit-tracer names the MLP's output `mlp.hook_out`; it is TransformerLens's hook_mlp_out.
  if (hookOut !== `blocks.${layer}.hook_mlp_out` && hookOut !== `blocks.${layer}.mlp.hook_out`) {
    throw new ResidualError(`output hook "${hookOut}" is not supported; expected blocks.${layer}.hook_mlp_out (same layer as the input)`, file, 'unsupported');
  }
  return { layer, input: m[2] as TranscoderInput };
}

function readJson(file: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ResidualError(`cannot read JSON: ${(e as Error).message}`, file);
  }
  if (!isPlainObject(v)) throw new ResidualError('expected a JSON object', file);
  return v;
}

function str(v: unknown, file: string, key: string): string {
  if (typeof v !== 'string' || !v) throw new ResidualError(`"${key}" is missing or not a string`, file);
  return v;
}

function entries(file: string): Map<string, TensorEntry> {
  if (!fs.existsSync(file)) throw new ResidualError('weights file not found', file, 'missing');
  return new Map(readSafetensorsHeader(file).entries.map((e) => [e.name, e]));
}

function need(tensors: Map<string, TensorEntry>, name: string, file: string): TensorEntry {
  const e = tensors.get(name);
  if (!e) throw new ResidualError(`tensor "${name}" is missing (has ${[...tensors.keys()].join(', ')})`, file);
  return e;
}

/** Rows of a 2-D tensor, read from the file (shared with the engine's embedding lookup). */
export { readRows };

/** A whole 1-D tensor (biases, thresholds). */
export function readVector(e: TensorEntry): Float32Array {
  return readTensorF32(e);
}


/** Encoder directions of `features` → [features.length, d_in] (a column of W_enc in SAELens layout). */
export function readEncoderColumns(t: Transcoder, features: ArrayLike<number>): Float32Array {
  if (t.encLayout === 'FD') return readRows(t.wEnc, features);
  // [D, F]: read blocks of whole rows (a few MB each, into one reused buffer) and gather the requested columns.
  const D = t.dIn;
  const F = t.dSae;
  for (let i = 0; i < features.length; i++) {
    const f = features[i];
    if (!(f >= 0 && f < F && Number.isInteger(f))) throw new ResidualError(`feature ${f} is outside "${t.wEnc.name}" [${t.wEnc.shape.join(', ')}]`, t.wEnc.file);
  }
  const out = new Float32Array(features.length * D);
  const per = Math.max(1, Math.floor((4 * 1024 * 1024) / (F * 4)));
  const e = t.wEnc;
  const buf = e.dtype === 'F32' ? new Float32Array(per * F) : undefined;
  const fd = buf ? fs.openSync(e.file, 'r') : -1;
  try {
    for (let d0 = 0; d0 < D; d0 += per) {
      const d1 = Math.min(D, d0 + per);
      let block: Float32Array;
      if (buf) {
        const bytes = new Uint8Array(buf.buffer, 0, (d1 - d0) * F * 4);
        for (let got = 0; got < bytes.length; ) {
          const n = fs.readSync(fd, bytes, got, bytes.length - got, e.dataOffset + d0 * F * 4 + got);
          if (n <= 0) throw new ResidualError(`"${e.name}" ends early`, e.file);
          got += n;
        }
        block = buf;
      } else block = readRows(e, Array.from({ length: d1 - d0 }, (_, i) => d0 + i)); // [d1−d0, F]
      for (let i = 0; i < features.length; i++) {
        const f = features[i];
        for (let d = d0; d < d1; d++) out[i * D + d] = block[(d - d0) * F + f];
      }
    }
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
  return out;
}
