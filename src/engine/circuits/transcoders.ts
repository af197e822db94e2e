/**
 * Transcoder folders, read one way for every feature that uses them (attribution graphs, feature cards, steering by
 * a feature's decoder row), in either layout reference/formats.md describes:
 *  - SAELens: a folder of subfolders, each `cfg.json` + `sae_weights.safetensors` (or `sae.safetensors`), or one
 *    such folder; pre-6 flat cfg or v6 with `metadata.hook_name`/`hook_name_out`; W_enc [d_in, d_sae],
 *    W_dec [d_sae, d_out]. A subfolder's layer is its hook name's `blocks.<l>.`, else cfg's hook_layer.
 *  - circuit-tracer: `config.yaml` + `layer_<i>.safetensors` (or the files its `transcoders:` list names, hf:// paths
 *    included); W_enc [d_sae, d_model] (transposed).
 *
 * Three steps, so a caller that needs one layer reads one layer's header:
 *  - `openTranscoderFolder(dir)`: the layout and the files of each layer (`layerFiles`), from the config files alone.
 *  - `readStoredTranscoder(folder, layer)`: that layer's safetensors header, checked (the decoder is there, the
 *    tensors' sizes agree). Steering reads one decoder row from it.
 *  - `loadTranscoders(dir, cfg)`: every layer, plus what attribution needs on top: hooks it can read, an activation
 *    it can compute, no skip connection, one transcoder per model layer, d_model wide.
 * A fault of the folder or of a layer's files gives the same message whichever feature reads it. Only headers are
 * read; weights are read on demand (`readVector`, `readRows`, `readEncoderColumns`), and the readers attribution,
 * cards and interventions use refuse NaN/Inf naming the layer, tensor and element (`readFiniteVector`,
 * `readDecoderRows`, `readEncoderColumns`; W_enc is checked through the encoder's pre-activations, features.ts).
 * Every file the folder leads to stays inside it (contain.ts): config.yaml's paths, linked subfolders and files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../checkpoint/config';
import { readRows, isPlainObject, readSafetensorsHeader, readTensorF32, type TensorEntry } from '../checkpoint/safetensors';
import { ResidualError } from '../errors';
import { checkInputFile, checkInputFolder } from '../files';
import { checkContained, resolveContained } from './contain';
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

export type TranscoderFormat = 'saelens' | 'circuit-tracer';

/** Where one layer's transcoder is, as the folder's configs say (no weights read yet). */
export interface TranscoderFiles {
  layer: number;
  /** The transcoder folder every file of the set must stay inside. */
  root: string;
  /** The config describing it: its cfg.json (SAELens) or the folder's config.yaml (circuit-tracer). */
  config: string;
  /** The safetensors file with its weights (checked when the layer is read). */
  weights: string;
  /** The hf:// path config.yaml gave, when it named a Hub file. */
  hubPath?: string;
  /** Hook names the config gives (`blocks.{l}.…`), when it gives them. */
  hookIn?: string;
  hookOut?: string;
  /** The config itself: cfg.json's object, or config.yaml's mapping. */
  settings: Record<string, unknown>;
}

/** A transcoder folder's layout and the files of each layer. */
export interface TranscoderFolder {
  dir: string;
  format: TranscoderFormat;
  /** The transcoder set's id, for graph metadata (`scan`): see `transcoderSetId`. */
  scan: string;
  /** Every layer the folder has, ascending. */
  layers: TranscoderFiles[];
  /** circuit-tracer: config.yaml lists the files (else `layer_<i>.safetensors` were found beside it). */
  listed: boolean;
}

/** One layer's files with its tensor headers, checked: W_dec is there and the sizes of the tensors present agree. */
export interface StoredTranscoder extends TranscoderFiles {
  format: TranscoderFormat;
  tensors: Map<string, TensorEntry>;
  /** [d_sae, d_out] in both layouts. */
  wDec: TensorEntry;
  dSae: number;
  dOut: number;
  /** Input width, from W_enc (undefined when the file has no W_enc, e.g. a decoder-only file). */
  dIn?: number;
}

export interface Transcoder {
  layer: number;
  /** The FVU the set reports for this layer on its own evaluation data, when its config has one. */
  reportedFvu?: number;
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
  /** The config file that described this layer (SAELens) or its weights file (circuit-tracer), for messages. */
  source: string;
  /** The transcoder folder (files read beside `source`, such as a feature index, must stay inside it). */
  root?: string;
}

export interface TranscoderSet {
  dir: string;
  format: TranscoderFormat;
  /** Index = layer; every model layer has one. */
  layers: Transcoder[];
  dSae: number;
  /** The transcoder set's id, for graph metadata (`scan`): see `transcoderSetId`. */
  scan: string;
}

// ---- The layout ------------------------------------------------------------------------------------------------

/** Finds the layout of `dir` and the files of each layer, reading the config files only. */
export function openTranscoderFolder(dir: string): TranscoderFolder {
  const abs = path.resolve(dir);
  checkInputFolder(abs, 'transcoders folder');
  return fs.existsSync(path.join(abs, 'config.yaml')) ? openCircuitTracer(abs) : openSaeLens(abs);
}

function openSaeLens(dir: string): TranscoderFolder {
  // Subfolders with a cfg.json; a linked subfolder counts too, when it stays inside the folder.
  const subs = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => (e.isDirectory() || (e.isSymbolicLink() && isFolder(path.join(dir, e.name)))) && fs.existsSync(path.join(dir, e.name, 'cfg.json')))
    .map((e) => path.join(dir, e.name))
    .sort();
  // One SAELens folder on its own is a set of one layer.
  if (fs.existsSync(path.join(dir, 'cfg.json'))) subs.push(dir);
  if (subs.length === 0) {
    throw new ResidualError(
      'no transcoders found: expected subfolders with cfg.json + sae_weights.safetensors (SAELens) or config.yaml + layer_<i>.safetensors (circuit-tracer)',
      dir,
      'missing',
    );
  }
  const byLayer = new Map<number, TranscoderFiles>();
  for (const sub of subs) {
    const config = path.join(sub, 'cfg.json');
    checkContained(dir, config, sub === dir ? 'cfg.json' : `${path.basename(sub)}/cfg.json`, config);
    const cfg = readJson(config);
    const meta = isPlainObject(cfg.metadata) ? cfg.metadata : {};
    const hookIn = nonEmpty(meta.hook_name ?? cfg.hook_name ?? cfg.hook_point);
    const hookOut = nonEmpty(meta.hook_name_out ?? cfg.hook_name_out);
    const layerOf = (h: string | undefined) => (h ? /^blocks\.(\d+)\./.exec(h)?.[1] : undefined);
    const raw = layerOf(hookIn) ?? layerOf(hookOut) ?? cfg.hook_layer ?? cfg.hook_point_layer;
    const layer = Number(raw);
    if (raw === undefined || raw === null || !Number.isInteger(layer) || layer < 0) {
      throw new ResidualError('cannot tell the layer: no hook_name like "blocks.<l>.…" and no hook_layer', config);
    }
    const prev = byLayer.get(layer);
    if (prev) throw new ResidualError(`layer ${layer} has two transcoders (${prev.config} and ${config})`, dir);
    // SAELens saves sae_weights.safetensors; other trainers' SAELens-style folders have sae.safetensors.
    const weights = ['sae_weights.safetensors', 'sae.safetensors'].map((f) => path.join(sub, f)).find((f) => fs.existsSync(f)) ?? path.join(sub, 'sae_weights.safetensors');
    checkContained(dir, weights, path.relative(dir, weights), config);
    byLayer.set(layer, { layer, root: dir, config, weights, hookIn, hookOut, settings: cfg });
  }
  const layers = [...byLayer.values()].sort((a, b) => a.layer - b.layer);
  return { dir, format: 'saelens', scan: transcoderSetId(dir, 'saelens', layers.map((l) => l.settings)), layers, listed: false };
}

/** `%2e%2e`-style escapes decoded (an hf:// path is a URL), so they cannot hide a climb out of the folder. */
function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function isFolder(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function openCircuitTracer(dir: string): TranscoderFolder {
  const config = path.join(dir, 'config.yaml');
  checkInputFile(config, 'config.yaml');
  checkContained(dir, config, 'config.yaml', config);
  const y = parseSimpleYaml(fs.readFileSync(config, 'utf8'), config);
  // Absent in circuit-tracer's configs from before 2025-08 (they were all per-layer sets).
  if (y.model_kind !== undefined && y.model_kind !== null && y.model_kind !== 'transcoder_set') {
    throw new ResidualError(`model_kind "${String(y.model_kind)}" is not supported; only per-layer transcoders ("transcoder_set")`, config, 'unsupported');
  }
  const { listed, files } = circuitTracerFiles(dir, config, y);
  if (files.length === 0) throw new ResidualError('no layer_<i>.safetensors files beside config.yaml', dir, 'missing');
  const inHook = nonEmpty(y.feature_input_hook);
  const outHook = nonEmpty(y.feature_output_hook);
  const byLayer = new Map<number, TranscoderFiles>();
  for (const f of files) {
    if (byLayer.has(f.layer)) throw new ResidualError(`layer ${f.layer} is listed twice`, config);
    byLayer.set(f.layer, {
      layer: f.layer,
      root: dir,
      config,
      weights: f.file,
      hubPath: f.hubPath,
      hookIn: inHook && `blocks.${f.layer}.${inHook}`,
      hookOut: outHook && `blocks.${f.layer}.${outHook}`,
      settings: y,
    });
  }
  const hubRepo = files.map((f) => f.hubPath && /^hf:\/\/([^/]+\/[^/]+)\//.exec(f.hubPath)?.[1]).find((r) => !!r);
  const scan = transcoderSetId(dir, 'circuit-tracer', [hubRepo ? { ...y, hub_repo: hubRepo } : y]);
  return { dir, format: 'circuit-tracer', scan, layers: [...byLayer.values()].sort((a, b) => a.layer - b.layer), listed };
}

interface CircuitTracerFile {
  layer: number;
  file: string;
  /** The hf:// path config.yaml gave, when it named a Hub file. */
  hubPath?: string;
}

/**
 * The per-layer files of a circuit-tracer folder: the `transcoders:` list of config.yaml (strings or {filepath,
 * layer}; index = layer unless given) when there is one, else every `layer_<i>.safetensors` beside it. circuit-tracer's
 * published configs name their files on the Hub (hf://owner/name/path); after a download of the repository
 * (Residual: Download Model…) they are the same paths inside this folder.
 */
function circuitTracerFiles(dir: string, cfgPath: string, y: Record<string, unknown>): { listed: boolean; files: CircuitTracerFile[] } {
  if (Array.isArray(y.transcoders) && y.transcoders.length > 0) {
    const files = y.transcoders.map((item, i) => {
      const key = isPlainObject(item) ? `transcoders[${i}].filepath` : `transcoders[${i}]`;
      const p = typeof item === 'string' ? item : isPlainObject(item) && typeof item.filepath === 'string' ? item.filepath : '';
      const layer = isPlainObject(item) && typeof item.layer === 'number' ? item.layer : i;
      if (!p) throw new ResidualError(`${key} has no file path`, cfgPath, 'invalid');
      if (p.startsWith('hf://')) {
        // hf://owner/name/path[?revision=…]: after a download of the repository, the same path inside this folder.
        const m = /^hf:\/\/[^/?#]+\/[^/?#]+\/([^?#]+)(?:[?#].*)?$/.exec(p);
        if (!m) throw new ResidualError(`${key} "${p}" is not an hf://owner/name/file path`, cfgPath, 'invalid');
        return { layer, file: resolveContained(dir, decodeURIComponentSafe(m[1]), key, cfgPath, p), hubPath: p };
      }
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p)) throw new ResidualError(`${key} "${p}" is a URL; only paths inside the folder and hf:// paths are read`, cfgPath, 'unsupported');
      return { layer, file: resolveContained(dir, p, key, cfgPath) };
    });
    return { listed: true, files };
  }
  const files = fs
    .readdirSync(dir)
    .map((f) => /^layer_(\d+)\.safetensors$/.exec(f))
    .filter((m): m is RegExpExecArray => !!m)
    .map((m) => ({ layer: Number(m[1]), file: path.join(dir, m[0]) }));
  for (const f of files) checkContained(dir, f.file, path.basename(f.file), f.file);
  return { listed: false, files };
}

/** The files of `layer`, or a message saying which layers the folder has. */
export function layerFiles(folder: TranscoderFolder, layer: number): TranscoderFiles {
  const found = folder.layers.find((f) => f.layer === layer);
  if (found) return found;
  const have = folder.layers.map((f) => f.layer).join(', ') || 'none';
  if (folder.format === 'saelens') throw new ResidualError(`no transcoder for layer ${layer} (found layers ${have})`, folder.dir, 'missing');
  const config = path.join(folder.dir, 'config.yaml');
  if (folder.listed) throw new ResidualError(`no transcoder for layer ${layer}: the transcoders list has ${folder.layers.length} entries`, config, 'missing');
  throw new ResidualError(`no transcoder for layer ${layer}: layer_${layer}.safetensors is missing (found layers ${have})`, folder.dir, 'missing');
}

/** Folder names that say nothing about which set they hold. */
const GENERIC_FOLDER = /^(?:transcoders?|saes?|weights|snapshots?|[0-9a-f]{40})$/i;

/**
 * The transcoder set's id, as circuit-tracer puts it in a graph's `metadata.scan` (the viewer's title and the key of
 * its saved labels), from what the configs say, in this order:
 *  - circuit-tracer: config.yaml's `scan`, else its `repo_id` (+ `//subfolder`, `@revision`, as circuit-tracer's
 *    loader writes them), else the Hub repository its `hf://` paths name;
 *  - SAELens: cfg.json's `release` or `sae_set` (top level or in `metadata`), else the source set of its
 *    `neuronpedia_id` (`<model>/<layer>-<set>` → `<model>/<set>`);
 *  - then the Hub repository when the folder is a Hub cache snapshot (`models--owner--name/snapshots/<rev>`);
 *  - then circuit-tracer's `model_name` (with the folder's name when that says more than "transcoders");
 *  - else the folder's name, with its parent's when it is a generic one ("transcoders" → "gpt2-small-transcoders").
 * The export makes it safe for Neuronpedia (`[a-zA-Z0-9_.-]`); this is the id as read.
 */
export function transcoderSetId(dir: string, format: TranscoderFormat, configs: Record<string, unknown>[]): string {
  const abs = path.resolve(dir);
  const base = path.basename(abs);
  const str = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim() : undefined);
  const first = <T>(f: (c: Record<string, unknown>) => T | undefined) => configs.map(f).find((v) => v !== undefined);
  if (format === 'circuit-tracer') {
    const y = configs[0] ?? {};
    const repo = str(y.repo_id);
    const id =
      str(y.scan) ??
      (repo && `${repo}${str(y.subfolder) ? `//${str(y.subfolder)}` : ''}${str(y.revision) && y.revision !== 'main' ? `@${str(y.revision)}` : ''}`) ??
      str(y.hub_repo);
    if (id) return id;
  } else {
    const meta = (c: Record<string, unknown>) => (isPlainObject(c.metadata) ? c.metadata : {});
    const id = first((c) => str(c.release) ?? str(meta(c).release) ?? str(c.sae_set) ?? str(meta(c).sae_set));
    if (id) return id;
    const np = first((c) => str(meta(c).neuronpedia_id) ?? str(c.neuronpedia_id));
    const m = np && /^([^/]+)\/(?:\d+-)?(.+)$/.exec(np);
    if (m) return `${m[1]}/${m[2]}`;
  }
  const hub = /[\\/](?:models|datasets)--([^\\/]+?)--([^\\/]+)[\\/]snapshots[\\/][^\\/]+((?:[\\/][^\\/]+)*)$/.exec(abs);
  if (hub) return `${hub[1]}/${hub[2]}${hub[3] ? `//${hub[3].slice(1).replace(/\\/g, '/')}` : ''}`;
  const parent = path.basename(path.dirname(abs));
  const named = GENERIC_FOLDER.test(base) && parent ? `${parent}-${base}` : base;
  const modelName = format === 'circuit-tracer' ? str(configs[0]?.model_name) : undefined;
  if (modelName) return GENERIC_FOLDER.test(base) ? modelName : `${modelName}/${base}`;
  return named;
}

// ---- One layer's tensors ---------------------------------------------------------------------------------------

/** Reads and checks the safetensors header of `layer`'s transcoder (no weights). */
export function readStoredTranscoder(folder: TranscoderFolder, layer: number): StoredTranscoder {
  const files = layerFiles(folder, layer);
  const file = files.weights;
  if (files.hubPath && !fs.existsSync(file)) {
    throw new ResidualError(`"${files.hubPath}" is on the Hugging Face Hub and not in this folder; fetch the transcoder set with "Residual: Download Model…" (or residual download --transcoders)`, files.config, 'missing');
  }
  if (!fs.existsSync(file)) {
    if (folder.format === 'saelens') throw new ResidualError('sae_weights.safetensors not found beside cfg.json', path.dirname(files.config), 'missing');
    throw new ResidualError('weights file not found', file, 'missing');
  }
  checkInputFile(file, path.basename(file));
  checkContained(files.root, file, path.relative(files.root, file) || path.basename(file), files.config);
  const tensors = new Map(readSafetensorsHeader(file).entries.map((e) => [e.name, e]));
  const wDec = need(tensors, 'W_dec', file);
  const wEnc = tensors.get('W_enc');
  const bEnc = tensors.get('b_enc');
  const bDec = tensors.get('b_dec');
  const shape = (e: TensorEntry, rank: number) => {
    if (e.shape.length !== rank) throw new ResidualError(`tensor "${e.name}" should have ${rank} dims, has [${e.shape.join(', ')}]`, file);
    return e.shape;
  };
  let dIn: number | undefined;
  let fEnc: number | undefined;
  if (wEnc) {
    const [a, b] = shape(wEnc, 2);
    [dIn, fEnc] = folder.format === 'saelens' ? [a, b] : [b, a];
  }
  const [F, dOut] = shape(wDec, 2);
  const fBias = bEnc && shape(bEnc, 1)[0];
  if ((fEnc !== undefined && fEnc !== F) || (fBias !== undefined && fBias !== F)) {
    const parts = [wEnc && `W_enc [${wEnc.shape.join(', ')}]`, `W_dec [${wDec.shape.join(', ')}]`, bEnc && `b_enc [${fBias}]`].filter(Boolean);
    throw new ResidualError(`dictionary sizes disagree: ${parts.join(', ')}`, file);
  }
  if (bDec) {
    const [dOut2] = shape(bDec, 1);
    if (dOut2 !== dOut) throw new ResidualError(`b_dec has ${dOut2} values but W_dec writes ${dOut}`, file);
  }
  for (const e of [wEnc, bEnc, wDec, bDec]) {
    if (e && !['F32', 'F16', 'BF16'].includes(e.dtype)) throw new ResidualError(`tensor "${e.name}" has dtype ${e.dtype}; expected F32, F16 or BF16`, e.file, 'unsupported');
  }
  return { ...files, format: folder.format, tensors, wDec, dSae: F, dOut, dIn };
}

// ---- What attribution needs ------------------------------------------------------------------------------------

/** Loads every layer's transcoder from `dir` and checks it against the model. */
export function loadTranscoders(dir: string, cfg: ModelConfig): TranscoderSet {
  const folder = openTranscoderFolder(dir);
  const layers: Transcoder[] = [];
  let dSae = 0;
  for (const { layer } of folder.layers) {
    const stored = readStoredTranscoder(folder, layer);
    const t = folder.format === 'saelens' ? saeLensTranscoder(stored) : circuitTracerTranscoder(stored);
    layers[layer] = t;
    dSae = Math.max(dSae, t.dSae);
  }
  const set: TranscoderSet = { dir: folder.dir, format: folder.format, layers, dSae, scan: folder.scan };
  validate(set, cfg);
  return set;
}

function saeLensTranscoder(s: StoredTranscoder): Transcoder {
  const cfg = s.settings;
  const cfgPath = s.config;
  const { input } = parseHooks(str(s.hookIn, cfgPath, 'hook_name'), str(s.hookOut, cfgPath, 'hook_name_out'), s.layer, cfgPath);
  const arch = String(cfg.architecture ?? (cfg.activation_fn ?? cfg.activation_fn_str) ?? 'standard');
  if (/skip/.test(arch)) throw new ResidualError(`architecture "${arch}" (skip connection) is not supported for attribution`, cfgPath, 'unsupported');
  const norm = cfg.normalize_activations;
  if (norm !== undefined && norm !== null && norm !== 'none' && norm !== false) {
    throw new ResidualError(`normalize_activations "${String(norm)}" is not supported; fold the scaling into the weights`, cfgPath, 'unsupported');
  }
  if (cfg.apply_b_dec_to_input === true) {
    throw new ResidualError('apply_b_dec_to_input is true, which transcoders do not allow (SAELens refuses it too)', cfgPath, 'unsupported');
  }
  const activation = saeLensActivation(s, arch, 'transcoder');
  return transcoder(s, input, activation, 'DF', activation.kind === 'jumprelu' ? s.tensors.get('threshold') : undefined, cfgPath);
}

/**
 * The activation a SAELens cfg.json describes (`architecture`, `activation_fn`/`activation_fn_str` and `k`, old or
 * v6), for transcoders and residual-stream SAEs alike; `what` names the kind in messages.
 */
export function saeLensActivation(s: StoredTranscoder, arch: string, what: string): TranscoderActivation {
  const cfg = s.settings;
  const cfgPath = s.config;
  const kwargs = isPlainObject(cfg.activation_fn_kwargs) ? cfg.activation_fn_kwargs : {};
  const actName = String(cfg.activation_fn ?? cfg.activation_fn_str ?? '');
  let activation: TranscoderActivation;
  if (arch === 'topk' || actName === 'topk') {
    const k = Number(cfg.k ?? kwargs.k);
    if (!Number.isInteger(k) || k <= 0) throw new ResidualError(`TopK ${what} without a positive integer "k"`, cfgPath);
    activation = { kind: 'topk', k, relu: true };
  } else if (/jumprelu/.test(arch) || s.tensors.has('threshold')) {
    activation = { kind: 'jumprelu' };
  } else if (arch === 'standard' || arch === 'transcoder') {
    activation = { kind: 'relu' };
  } else {
    const known = what === 'transcoder' ? 'standard, transcoder, jumprelu, jumprelu_transcoder, topk' : 'standard, jumprelu, topk';
    throw new ResidualError(`architecture "${arch}" is not supported (${known})`, cfgPath, 'unsupported');
  }
  if (activation.kind === 'jumprelu' && !s.tensors.has('threshold')) {
    throw new ResidualError(`JumpReLU ${what} without a "threshold" tensor`, s.weights, 'invalid');
  }
  return activation;
}

function circuitTracerTranscoder(s: StoredTranscoder): Transcoder {
  const y = s.settings;
  const cfgPath = s.config;
  const file = s.weights;
  const { input } = parseHooks(str(s.hookIn, cfgPath, 'feature_input_hook'), str(s.hookOut, cfgPath, 'feature_output_hook'), s.layer, cfgPath);
  const thr = s.tensors.get('activation_function.threshold') ?? s.tensors.get('threshold');
  if (s.tensors.has('W_skip')) throw new ResidualError('W_skip (skip connection) is not supported for attribution', file, 'unsupported');
  let activation: TranscoderActivation;
  if (y.activation === 'topk') {
    const k = Number(y.k);
    if (!Number.isInteger(k) || k <= 0) throw new ResidualError('activation "topk" needs a positive integer "k"', cfgPath);
    activation = { kind: 'topk', k, relu: false };
  } else if (y.activation === 'relu') activation = { kind: 'relu' };
  else if (y.activation === undefined || y.activation === null || y.activation === 'jumprelu') activation = thr ? { kind: 'jumprelu' } : { kind: 'relu' };
  else throw new ResidualError(`activation "${String(y.activation)}" is not supported (relu, topk, or none = JumpReLU when a threshold exists)`, cfgPath, 'unsupported');
  return transcoder(s, input, activation, 'FD', activation.kind === 'jumprelu' ? thr : undefined, file);
}

/** The attribution view of a checked layer: the encoder tensors it needs, the threshold's and k's sizes. */
function transcoder(
  s: StoredTranscoder,
  input: TranscoderInput,
  activation: TranscoderActivation,
  encLayout: Transcoder['encLayout'],
  threshold: TensorEntry | undefined,
  source: string,
): Transcoder {
  const e = encoderTensors(s, activation, threshold, source);
  return { layer: s.layer, input, activation, dIn: s.dIn!, dSae: s.dSae, dOut: s.dOut, encLayout, wDec: s.wDec, source, root: s.root, ...e };
}

/**
 * The encoder side of a stored layer, checked, for transcoders and residual-stream SAEs alike: W_enc, b_enc and b_dec
 * present, the threshold's size and dtype, k ≤ d_sae, and the FVU its config reports (`metrics.fvu`), if any.
 */
export function encoderTensors(
  s: StoredTranscoder,
  activation: TranscoderActivation,
  threshold: TensorEntry | undefined,
  source: string,
): { wEnc: TensorEntry; bEnc: TensorEntry; bDec: TensorEntry; threshold?: TensorEntry; reportedFvu?: number } {
  const t = (name: string) => need(s.tensors, name, s.weights);
  const [wEnc, bEnc, bDec] = [t('W_enc'), t('b_enc'), t('b_dec')];
  const F = s.dSae;
  if (threshold && (threshold.shape.length !== 1 || threshold.shape[0] !== F)) {
    throw new ResidualError(`threshold should be [${F}], is [${threshold.shape.join(', ')}]`, s.weights);
  }
  if (threshold && !['F32', 'F16', 'BF16'].includes(threshold.dtype)) {
    throw new ResidualError(`tensor "${threshold.name}" has dtype ${threshold.dtype}; expected F32, F16 or BF16`, threshold.file, 'unsupported');
  }
  if (activation.kind === 'topk' && activation.k > F) throw new ResidualError(`k = ${activation.k} exceeds d_sae = ${F}`, source);
  // A set may report its own reconstruction (cfg.json `metrics.fvu`, as Residual's demo set does): a prompt far worse
  // than that points at the input convention (reconstruction.ts).
  const metrics = s.settings.metrics as Record<string, unknown> | undefined;
  const reportedFvu = typeof metrics?.fvu === 'number' && Number.isFinite(metrics.fvu) && metrics.fvu >= 0 ? metrics.fvu : undefined;
  return { wEnc, bEnc, bDec, threshold, reportedFvu };
}

function validate(set: TranscoderSet, cfg: ModelConfig): void {
  const D = cfg.dModel;
  // A layer the model does not have first: it names the file, not a gap below it.
  const beyond = set.layers.find((t, l) => t && l >= cfg.nLayers);
  if (beyond) {
    const n = cfg.nLayers;
    throw new ResidualError(`a transcoder for layer ${beyond.layer}, but the model (${cfg.name}) has ${n} layer${n === 1 ? '' : 's'} (0..${n - 1}); use the transcoder set made for this model`, beyond.source);
  }
  for (let l = 0; l < cfg.nLayers; l++) {
    const t = set.layers[l];
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
  }
}

function parseHooks(hookIn: string, hookOut: string, layer: number, file: string): { input: TranscoderInput } {
  const m = /^blocks\.(\d+)\.(.+)$/.exec(hookIn);
  const supported = SUPPORTED_INPUTS.map((h) => `blocks.{l}.${h}`).join(' or ');
  if (!m || Number(m[1]) !== layer || !(SUPPORTED_INPUTS as readonly string[]).includes(m[2])) {
    throw new ResidualError(`input hook "${hookIn}" is not supported; transcoders must read ${supported}`, file, 'unsupported');
  }
  // circuit-tracer names the MLP's output `mlp.hook_out`; it is TransformerLens's hook_mlp_out.
  if (hookOut !== `blocks.${layer}.hook_mlp_out` && hookOut !== `blocks.${layer}.mlp.hook_out`) {
    throw new ResidualError(`output hook "${hookOut}" is not supported; expected blocks.${layer}.hook_mlp_out (same layer as the input)`, file, 'unsupported');
  }
  return { input: m[2] as TranscoderInput };
}

function readJson(file: string): Record<string, unknown> {
  checkInputFile(file, path.basename(file));
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ResidualError(`cannot read JSON: ${(e as Error).message}`, file);
  }
  if (!isPlainObject(v)) throw new ResidualError('expected a JSON object', file);
  return v;
}

function nonEmpty(v: unknown): string | undefined {
  return typeof v === 'string' && v ? v : undefined;
}

function str(v: unknown, file: string, key: string): string {
  if (typeof v !== 'string' || !v) throw new ResidualError(`"${key}" is missing or not a string`, file);
  return v;
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

// ---- NaN and Inf in the weights ----------------------------------------------------------------------------------
// A transcoder with NaN/Inf weights gives no usable features (a NaN pre-activation never passes ReLU or a threshold),
// so a graph would silently lose them. Each read that attribution, cards and interventions make is checked: the small
// vectors whole, decoder rows and encoder columns as they are read, W_enc through the encoder's pre-activations.

/** Index of the first NaN or ±Inf in `v`, or −1. */
export function firstNonFinite(v: ArrayLike<number>): number {
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) return i;
  return -1;
}

/** The refusal for a non-finite value of tensor `e` of layer `layer`'s transcoder, at element `at` ([row, col] or [i]). */
export function nonFiniteWeight(layer: number, e: TensorEntry, at: number[], value: number): ResidualError {
  return new ResidualError(
    `layer ${layer} transcoder: tensor "${e.name}" [${e.shape.join(', ')}] holds ${value} at [${at.join(', ')}]; ` +
      'NaN/Inf weights would silently drop features from every graph (the file is damaged, or was saved from a diverged training run)',
    e.file,
    'numeric',
  );
}

/** A whole 1-D tensor of `layer`'s transcoder, refused when it holds NaN or Inf. */
export function readFiniteVector(layer: number, e: TensorEntry): Float32Array {
  const v = readTensorF32(e);
  const i = firstNonFinite(v);
  if (i >= 0) throw nonFiniteWeight(layer, e, [i], v[i]);
  return v;
}

/** Decoder rows of `features` ([n, d_out]), refused when one holds NaN or Inf (named by its feature). */
export function readDecoderRows(t: Pick<Transcoder, 'layer' | 'wDec'>, features: ArrayLike<number>): Float32Array {
  const rows = readRows(t.wDec, features);
  const i = firstNonFinite(rows);
  if (i >= 0) {
    const D = t.wDec.shape[1];
    throw nonFiniteWeight(t.layer, t.wDec, [features[Math.floor(i / D)], i % D], rows[i]);
  }
  return rows;
}

/**
 * Scans every value of `e` (in blocks of rows, a few MB at a time) and throws at the first NaN or Inf. For finding
 * which tensor is bad once something is, not for every read.
 */
export function checkFiniteTensor(layer: number, e: TensorEntry): void {
  if (e.shape.length !== 2) {
    readFiniteVector(layer, e);
    return;
  }
  const [R, C] = e.shape;
  const per = Math.max(1, Math.floor((4 * 1024 * 1024) / (4 * Math.max(1, C))));
  for (let r0 = 0; r0 < R; r0 += per) {
    const n = Math.min(per, R - r0);
    const rows = readRows(e, Array.from({ length: n }, (_, i) => r0 + i));
    const i = firstNonFinite(rows);
    if (i >= 0) throw nonFiniteWeight(layer, e, [r0 + Math.floor(i / C), i % C], rows[i]);
  }
}


/** Encoder directions of `features` → [features.length, d_in] (a column of W_enc in SAELens layout). */
export function readEncoderColumns(t: Transcoder, features: ArrayLike<number>): Float32Array {
  if (t.encLayout === 'FD') {
    const rows = readRows(t.wEnc, features);
    const bad = firstNonFinite(rows);
    if (bad >= 0) throw nonFiniteWeight(t.layer, t.wEnc, [features[Math.floor(bad / t.dIn)], bad % t.dIn], rows[bad]);
    return rows;
  }
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
  const bad = firstNonFinite(out);
  if (bad >= 0) throw nonFiniteWeight(t.layer, t.wEnc, [bad % D, features[Math.floor(bad / D)]], out[bad]);
  return out;
}
