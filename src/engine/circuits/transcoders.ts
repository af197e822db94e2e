/**
 * Transcoder folders, read one way for every feature that uses them (attribution graphs, feature cards, steering by
 * a feature's decoder row), in either layout reference/formats.md describes:
 *  - SAELens: a folder of subfolders, each `cfg.json` + `sae_weights.safetensors` (or `sae.safetensors`), or one
 *    such folder; pre-6 flat cfg or v6 with `metadata.hook_name`/`hook_name_out`; W_enc [d_in, d_sae],
 *    W_dec [d_sae, d_out]. A subfolder's layer is its hook name's `blocks.<l>.`, else cfg's hook_layer.
 *  - circuit-tracer: `config.yaml` + `layer_<i>.safetensors` (or the files its `transcoders:` list names, hf:// paths
 *    included); W_enc [d_sae, d_model] (transposed).
 *  - circuit-tracer cross-layer transcoder (CLT, `model_kind: cross_layer_transcoder`): `W_enc_<i>.safetensors`
 *    ({W_enc_i [d_sae, d_model], b_enc_i, b_dec_i, threshold_i}) and `W_dec_<i>.safetensors` ({W_dec_i [d_sae, L − i,
 *    d_model]}) per layer i; feature f of layer i writes W_dec_i[f, k] into layer i + k's MLP output. Its tensors are
 *    read under the per-layer names (W_enc, b_enc, b_dec, threshold, W_dec), each entry keeping its own name.
 * Skip transcoders (SAELens `skip_transcoder`/`jumprelu_skip_transcoder`, circuit-tracer's `W_skip`) add x·W_skipᵀ,
 * W_skip [d_out, d_in], to the output: a linear path from the input that attribution carries (backward.ts).
 *
 * Three steps, so a caller that needs one layer reads one layer's header:
 *  - `openTranscoderFolder(dir)`: the layout and the files of each layer (`layerFiles`), from the config files alone.
 *  - `readStoredTranscoder(folder, layer)`: that layer's safetensors header, checked (the decoder is there, the
 *    tensors' sizes agree). Steering reads one decoder row from it.
 *  - `loadTranscoders(dir, cfg)`: every layer, plus what attribution needs on top: hooks it can read, an activation
 *    it can compute, one transcoder per model layer, d_model wide (a CLT: as many layers as the model).
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
/** One transcoder per MLP, or a cross-layer transcoder: layer l's features write every MLP output from l on. */
export type TranscoderKind = 'per-layer' | 'cross-layer';

/** Where one layer's transcoder is, as the folder's configs say (no weights read yet). */
export interface TranscoderFiles {
  layer: number;
  /** The transcoder folder every file of the set must stay inside. */
  root: string;
  /** The config describing it: its cfg.json (SAELens) or the folder's config.yaml (circuit-tracer). */
  config: string;
  /** The safetensors file with its weights (checked when the layer is read); a CLT's encoder side (W_enc_<i>). */
  weights: string;
  /** A CLT: the file of its decoder (W_dec_<i>.safetensors). */
  decoder?: string;
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
  kind: TranscoderKind;
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
  /** [d_sae, d_out] in both layouts; a CLT's [d_sae, outLayers, d_out]. */
  wDec: TensorEntry;
  dSae: number;
  dOut: number;
  /** How many MLP outputs a feature writes, from its own layer on: 1, or L − i for layer i of a CLT. */
  outLayers: number;
  /** Input width, from W_enc (undefined when the file has no W_enc, e.g. a decoder-only file). */
  dIn?: number;
  /** W_skip [d_out, d_in], when the file has one. */
  skip?: TensorEntry;
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
  /** [d_sae, d_out]; a CLT's [d_sae, outLayers, d_out] (row f, block k: what f writes into layer `layer + k`). */
  wDec: TensorEntry;
  /** Bias of this layer's MLP output (a CLT's b_dec_i is layer i's, whichever features write there). */
  bDec: TensorEntry;
  threshold?: TensorEntry;
  /** MLP outputs each feature writes, from this layer on (1, or L − layer in a CLT). */
  outLayers: number;
  /** A skip transcoder's W_skip [d_out, d_in]: the output gains x·W_skipᵀ of the input x. */
  skip?: TensorEntry;
  /** The config file that described this layer (SAELens) or its weights file (circuit-tracer), for messages. */
  source: string;
  /** The transcoder folder (files read beside `source`, such as a feature index, must stay inside it). */
  root?: string;
}

export interface TranscoderSet {
  dir: string;
  format: TranscoderFormat;
  kind: TranscoderKind;
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
  return { dir, format: 'saelens', kind: 'per-layer', scan: transcoderSetId(dir, 'saelens', layers.map((l) => l.settings)), layers, listed: false };
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
  if (y.model_kind !== undefined && y.model_kind !== null && y.model_kind !== 'transcoder_set' && y.model_kind !== 'cross_layer_transcoder') {
    throw new ResidualError(`model_kind "${String(y.model_kind)}" is not supported ("transcoder_set" or "cross_layer_transcoder")`, config, 'unsupported');
  }
  const kind: TranscoderKind = y.model_kind === 'cross_layer_transcoder' ? 'cross-layer' : 'per-layer';
  const { listed, files } = kind === 'cross-layer' ? crossLayerFiles(dir, config, y) : circuitTracerFiles(dir, config, y);
  if (files.length === 0) {
    throw new ResidualError(kind === 'cross-layer' ? 'no W_enc_<i>.safetensors files beside config.yaml' : 'no layer_<i>.safetensors files beside config.yaml', dir, 'missing');
  }
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
      decoder: f.decoder,
      hubPath: f.hubPath,
      hookIn: inHook && `blocks.${f.layer}.${inHook}`,
      hookOut: outHook && `blocks.${f.layer}.${outHook}`,
      settings: y,
    });
  }
  const hubRepo = files.map((f) => f.hubPath && /^hf:\/\/([^/]+\/[^/]+)\//.exec(f.hubPath)?.[1]).find((r) => !!r);
  const scan = transcoderSetId(dir, 'circuit-tracer', [hubRepo ? { ...y, hub_repo: hubRepo } : y]);
  return { dir, format: 'circuit-tracer', kind, scan, layers: [...byLayer.values()].sort((a, b) => a.layer - b.layer), listed };
}

interface CircuitTracerFile {
  layer: number;
  file: string;
  /** The hf:// path config.yaml gave, when it named a Hub file. */
  hubPath?: string;
  /** A CLT: its W_dec_<i> file. */
  decoder?: string;
}

/**
 * The files of a cross-layer transcoder: `W_enc_<i>.safetensors` and `W_dec_<i>.safetensors` for i = 0..n−1, found
 * beside config.yaml or named by its `transcoders:` list (the layer from each file's name). n is the number of
 * W_enc files, as circuit-tracer counts it; a gap or a missing decoder is refused here, naming the file.
 */
function crossLayerFiles(dir: string, cfgPath: string, y: Record<string, unknown>): { listed: boolean; files: CircuitTracerFile[] } {
  const listed = Array.isArray(y.transcoders) && y.transcoders.length > 0;
  const all: CircuitTracerFile[] = listed
    ? circuitTracerFiles(dir, cfgPath, y).files
    : fs
        .readdirSync(dir)
        .filter((f) => /^W_(?:enc|dec)_\d+\.safetensors$/.test(f))
        .map((f) => {
          const file = path.join(dir, f);
          checkContained(dir, file, f, file);
          return { layer: -1, file };
        });
  const enc = new Map<number, CircuitTracerFile>();
  const dec = new Map<number, CircuitTracerFile>();
  for (const f of all) {
    const m = /^W_(enc|dec)_(\d+)\.safetensors$/.exec(path.basename(f.file));
    if (!m) throw new ResidualError(`"${f.hubPath ?? path.basename(f.file)}" in the transcoders list is not a W_enc_<i> or W_dec_<i> .safetensors file`, cfgPath, 'invalid');
    (m[1] === 'enc' ? enc : dec).set(Number(m[2]), f);
  }
  const n = enc.size;
  const files: CircuitTracerFile[] = [];
  for (let i = 0; i < n; i++) {
    const e = enc.get(i);
    if (!e) throw new ResidualError(`W_enc_${i}.safetensors is missing: a cross-layer transcoder of ${n} layers has W_enc_0 … W_enc_${n - 1}`, dir, 'missing');
    const d = dec.get(i);
    if (!d) throw new ResidualError(`W_dec_${i}.safetensors is missing beside W_enc_${i}.safetensors`, dir, 'missing');
    files.push({ layer: i, file: e.file, hubPath: e.hubPath, decoder: d.file });
  }
  const stray = [...dec.keys()].find((i) => !enc.has(i));
  if (stray !== undefined) throw new ResidualError(`W_dec_${stray}.safetensors has no W_enc_${stray}.safetensors beside it`, dir, 'missing');
  return { listed, files };
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
  const header = (file: string) => {
    if (files.hubPath && !fs.existsSync(file)) {
      throw new ResidualError(`"${files.hubPath}" is on the Hugging Face Hub and not in this folder; fetch the transcoder set with "Residual: Download Model…" (or residual download --transcoders)`, files.config, 'missing');
    }
    if (!fs.existsSync(file)) {
      if (folder.format === 'saelens') throw new ResidualError('sae_weights.safetensors not found beside cfg.json', path.dirname(files.config), 'missing');
      throw new ResidualError('weights file not found', file, 'missing');
    }
    checkInputFile(file, path.basename(file));
    checkContained(files.root, file, path.relative(files.root, file) || path.basename(file), files.config);
    return new Map(readSafetensorsHeader(file).entries.map((e) => [e.name, e]));
  };
  const file = files.weights;
  let tensors = header(file);
  const crossLayer = folder.kind === 'cross-layer';
  if (crossLayer) {
    // A CLT layer's tensors under the per-layer names; each entry keeps its own name (and file) for messages.
    const decoderFile = files.decoder!;
    const decoder = header(decoderFile);
    const i = layer;
    const renamed = new Map<string, TensorEntry>();
    for (const [name, own] of [['W_enc', `W_enc_${i}`], ['b_enc', `b_enc_${i}`], ['b_dec', `b_dec_${i}`], ['threshold', `threshold_${i}`]]) {
      const e = tensors.get(own);
      if (e) renamed.set(name, e);
    }
    for (const name of tensors.keys()) {
      if (/skip/i.test(name)) throw new ResidualError(`tensor "${name}": a skip connection in a cross-layer transcoder is not read (circuit-tracer's CLT loader does not read one either)`, file, 'unsupported');
    }
    renamed.set('W_dec', need(decoder, `W_dec_${i}`, decoderFile));
    for (const name of ['W_enc', 'b_enc', 'b_dec']) if (!renamed.has(name)) need(tensors, `${name}_${i}`, file);
    tensors = renamed;
  }
  const wDec = need(tensors, 'W_dec', file);
  const wEnc = tensors.get('W_enc');
  const bEnc = tensors.get('b_enc');
  const bDec = tensors.get('b_dec');
  const skip = crossLayer ? undefined : tensors.get('W_skip');
  const shape = (e: TensorEntry, rank: number) => {
    if (e.shape.length !== rank) throw new ResidualError(`tensor "${e.name}" should have ${rank} dims, has [${e.shape.join(', ')}]`, e.file);
    return e.shape;
  };
  let dIn: number | undefined;
  let fEnc: number | undefined;
  if (wEnc) {
    const [a, b] = shape(wEnc, 2);
    [dIn, fEnc] = folder.format === 'saelens' ? [a, b] : [b, a];
  }
  let F: number;
  let dOut: number;
  let outLayers = 1;
  if (crossLayer) {
    [F, outLayers, dOut] = shape(wDec, 3);
    // Layer i of an n-layer CLT writes layers i..n−1.
    const n = folder.layers.length;
    if (outLayers !== n - layer) {
      throw new ResidualError(
        `${wDec.name} [${wDec.shape.join(', ')}] writes ${outLayers} layer${outLayers === 1 ? '' : 's'}; in a cross-layer transcoder of ${n} layers (W_enc_0 … W_enc_${n - 1}), layer ${layer} writes layers ${layer}..${n - 1} (${n - layer})`,
        wDec.file,
      );
    }
  } else [F, dOut] = shape(wDec, 2);
  const fBias = bEnc && shape(bEnc, 1)[0];
  if ((fEnc !== undefined && fEnc !== F) || (fBias !== undefined && fBias !== F)) {
    const parts = [wEnc && `${wEnc.name} [${wEnc.shape.join(', ')}]`, `${wDec.name} [${wDec.shape.join(', ')}]`, bEnc && `${bEnc.name} [${fBias}]`].filter(Boolean);
    throw new ResidualError(`dictionary sizes disagree: ${parts.join(', ')}`, file);
  }
  if (bDec) {
    const [dOut2] = shape(bDec, 1);
    if (dOut2 !== dOut) throw new ResidualError(`${bDec.name} has ${dOut2} values but ${wDec.name} writes ${dOut}`, file);
  }
  if (skip) {
    const [r, c] = shape(skip, 2);
    if (r !== dOut || (dIn !== undefined && c !== dIn)) throw new ResidualError(`W_skip should be [d_out, d_in] = [${dOut}, ${dIn ?? c}], is [${skip.shape.join(', ')}]`, file);
  }
  for (const e of [wEnc, bEnc, wDec, bDec, skip]) {
    if (e && !['F32', 'F16', 'BF16'].includes(e.dtype)) throw new ResidualError(`tensor "${e.name}" has dtype ${e.dtype}; expected F32, F16 or BF16`, e.file, 'unsupported');
  }
  return { ...files, format: folder.format, tensors, wDec, dSae: F, dOut, dIn, outLayers, skip };
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
  const set: TranscoderSet = { dir: folder.dir, format: folder.format, kind: folder.kind, layers, dSae, scan: folder.scan };
  validate(set, cfg);
  return set;
}

function saeLensTranscoder(s: StoredTranscoder): Transcoder {
  const cfg = s.settings;
  const cfgPath = s.config;
  const { input } = parseHooks(str(s.hookIn, cfgPath, 'hook_name'), str(s.hookOut, cfgPath, 'hook_name_out'), s.layer, cfgPath);
  const arch = String(cfg.architecture ?? (cfg.activation_fn ?? cfg.activation_fn_str) ?? 'standard');
  // skip_transcoder / jumprelu_skip_transcoder: a (JumpReLU) transcoder plus W_skip. SAELens reads W_skip only for them.
  const skipArch = /skip/.test(arch);
  if (skipArch && !s.skip) throw new ResidualError(`architecture "${arch}" without a "W_skip" tensor`, s.weights, 'invalid');
  const norm = cfg.normalize_activations;
  if (norm !== undefined && norm !== null && norm !== 'none' && norm !== false) {
    throw new ResidualError(`normalize_activations "${String(norm)}" is not supported; fold the scaling into the weights`, cfgPath, 'unsupported');
  }
  if (cfg.apply_b_dec_to_input === true) {
    throw new ResidualError('apply_b_dec_to_input is true, which transcoders do not allow (SAELens refuses it too)', cfgPath, 'unsupported');
  }
  const activation = saeLensActivation(s, skipArch ? arch.replace('skip_', '') : arch, 'transcoder');
  const t = transcoder(s, input, activation, 'DF', activation.kind === 'jumprelu' ? s.tensors.get('threshold') : undefined, cfgPath);
  return skipArch ? t : { ...t, skip: undefined };
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
  return { layer: s.layer, input, activation, dIn: s.dIn!, dSae: s.dSae, dOut: s.dOut, encLayout, wDec: s.wDec, outLayers: s.outLayers, skip: s.skip, source, root: s.root, ...e };
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
  if (set.kind === 'cross-layer' && set.layers.length !== cfg.nLayers) {
    const n = set.layers.length;
    throw new ResidualError(
      `a cross-layer transcoder of ${n} layers (W_enc_0 … W_enc_${n - 1}) for a ${cfg.nLayers}-layer model (${cfg.name}); its features write the MLP outputs of ${n} layers, so it fits only a model with that many; use the set made for this model`,
      path.join(set.dir, 'config.yaml'),
    );
  }
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

/**
 * Decoder rows of `features` ([n, d_out]; a CLT's whole rows [n, outLayers · d_out]), refused when one holds NaN or
 * Inf (named by its feature).
 */
export function readDecoderRows(t: Pick<Transcoder, 'layer' | 'wDec'>, features: ArrayLike<number>): Float32Array {
  const rows = readRows(t.wDec, features);
  const i = firstNonFinite(rows);
  if (i >= 0) {
    const D = t.wDec.shape[t.wDec.shape.length - 1];
    const row = rows.length / features.length;
    const at = t.wDec.shape.length === 3 ? [Math.floor((i % row) / D), i % D] : [i % D];
    throw nonFiniteWeight(t.layer, t.wDec, [features[Math.floor(i / row)], ...at], rows[i]);
  }
  return rows;
}

/**
 * What `features` of layer `t.layer` write into layer `outLayer`'s MLP output: [n, d_out], refused with NaN or Inf as
 * readDecoderRows. A per-layer transcoder writes its own layer only. A CLT writes every layer from its own; its
 * W_dec_l[f, outLayer − l, :] is one contiguous row of the [d_sae · outLayers, d_out] view of the tensor and is read
 * alone, so a CLT's whole rows (outLayers × larger) are never held.
 */
export function readDecoderInto(t: Pick<Transcoder, 'layer' | 'wDec' | 'outLayers' | 'dOut'>, features: ArrayLike<number>, outLayer: number): Float32Array {
  const k = outLayer - t.layer;
  if (!(k >= 0 && k < t.outLayers)) throw new Error(`layer ${t.layer}'s features do not write layer ${outLayer}`);
  if (t.outLayers === 1) return readDecoderRows(t, features);
  const F = t.wDec.shape[0];
  const D = t.dOut;
  for (let i = 0; i < features.length; i++) {
    const f = features[i];
    if (!(f >= 0 && f < F && Number.isInteger(f))) throw new ResidualError(`feature ${f} is outside "${t.wDec.name}" [${t.wDec.shape.join(', ')}]`, t.wDec.file);
  }
  const rows = readRows({ ...t.wDec, shape: [F * t.outLayers, D] }, Array.from(features, (f) => f * t.outLayers + k));
  const i = firstNonFinite(rows);
  if (i >= 0) throw nonFiniteWeight(t.layer, t.wDec, [features[Math.floor(i / D)], k, i % D], rows[i]);
  return rows;
}

/** The layers whose features write layer `outLayer`'s MLP output: that layer alone, or in a CLT every layer up to it. */
export function writersOf(set: Pick<TranscoderSet, 'kind'>, outLayer: number): number[] {
  return set.kind === 'cross-layer' ? Array.from({ length: outLayer + 1 }, (_, l) => l) : [outLayer];
}

/** A skip transcoder's W_skip [d_out, d_in], whole, refused when it holds NaN or Inf. */
export function readSkip(t: Pick<Transcoder, 'layer' | 'skip'>): Float32Array {
  const e = t.skip!;
  const v = readTensorF32(e);
  const i = firstNonFinite(v);
  if (i >= 0) throw nonFiniteWeight(t.layer, e, [Math.floor(i / e.shape[1]), i % e.shape[1]], v[i]);
  return v;
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
