/**
 * Steering vectors: where a direction in the residual stream comes from.
 *  - `featureVector`: the decoder row of one transcoder feature (SAELens or circuit-tracer layout), read alone from
 *    the safetensors file at its header offset, so a 100k-feature dictionary costs one row.
 *  - `parsePairs` + `contrastiveVector`: Contrastive Activation Addition, the mean over prompt pairs of
 *    activation(positive) − activation(negative) at one hook point.
 *  - `saveVectorFile` / `loadVectorFile`: the workspace format, `<name>.safetensors` (tensor `vector` [d_model], F32)
 *    beside `<name>.json` (what it is, where it came from, for which model).
 *
 * ## Pairs format (`*.pairs` files written in the editor)
 * ```
 * # Python vs JavaScript function headers       ← a comment (whole line, `#` first)
 * + def add(a, b):\n                             ← the positive prompt: "+", one optional space, then the text
 * - function add(a, b) {\n                       ← the negative prompt: "-", one optional space, then the text
 *                                                ← a blank line ends the pair
 * + ...
 * - ...
 * ```
 * Each pair is one `+` line and one `-` line, in either order, with no blank line between them. The text after the
 * marker is taken verbatim (trailing spaces included) except for the escapes `\n` (newline), `\t` (tab) and `\\`
 * (a backslash), so a prompt can end in a newline or indentation.
 */
import { l2 } from '../numeric';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isPlainObject, readSafetensorsHeader, readTensorF32 } from '../checkpoint/safetensors';
import { ResidualError, throwIfCancelled, type CancelToken } from '../errors';
import { acquireLock, checkOutputFile, writeFileAtomic } from '../files';
import { openTranscoderFolder, readDecoderInto, readStoredTranscoder } from '../circuits/transcoders';
import { hookName } from '../hooks';
import type { Model } from '../model';
import { RESID_POINTS, type SteerPointName, type SteeringVector } from '../results';

export type { SteeringVector, SteerPointName };



// ---- Transcoder features ---------------------------------------------------------------------------------------

/**
 * The decoder direction of feature `index` of the layer-`layer` transcoder in `transcodersDir`: row `index` of
 * W_dec [d_sae, d_model], as stored. The vector's default point is the block's hook_resid_post (the transcoder
 * replaces the MLP, whose output lands there), or, for a residual-stream SAE, the hook it reads and reconstructs. The folder is read by the same loader as attribution's
 * (`openTranscoderFolder`: SAELens subfolders or one SAELens folder, or a circuit-tracer folder), so a folder's
 * faults read the same here and in Trace Circuit; only this layer's header and the one row are read.
 */
export function featureVector(transcodersDir: string, layer: number, index: number): SteeringVector {
  const folder = openTranscoderFolder(transcodersDir);
  if (!Number.isInteger(layer) || layer < 0) throw new ResidualError(`layer must be a non-negative integer, got ${layer}`, folder.dir);
  if (!Number.isInteger(index) || index < 0) throw new ResidualError(`feature index must be a non-negative integer, got ${index}`, folder.dir);
  const t = readStoredTranscoder(folder, layer);
  if (index >= t.dSae) throw new ResidualError(`feature ${index} does not exist: the layer-${layer} transcoder has features 0..${t.dSae - 1}`, t.weights);
  // The same check (and message: layer, tensor, element) as attribution's decoder reads. A cross-layer transcoder's
  // feature writes every layer from its own; the vector is what it writes into its own layer (W_dec_l[f, 0]), one
  // vector at one point as Steering takes it (interventions on the graph add every layer's part).
  const vector = readDecoderInto({ layer, wDec: t.wDec, outLayers: t.outLayers, dOut: t.dOut }, [index], layer);
  // A residual-stream SAE (no output hook) writes back where it reads; a transcoder's output lands in resid_post.
  const read = !t.hookOut && t.hookIn ? /^blocks\.\d+\.(hook_resid_pre|hook_resid_mid|hook_resid_post)$/.exec(t.hookIn)?.[1] : undefined;
  return {
    vector,
    layer,
    point: (read as SteerPointName | undefined) ?? 'hook_resid_post',
    label: `L${layer}/${index}`,
    source: 'feature',
    provenance: {
      kind: read ? 'SAE feature' : t.outLayers > 1 ? 'cross-layer transcoder feature' : 'transcoder feature',
      file: t.decoder ?? t.weights,
      config: t.config,
      tensor: t.wDec.name,
      layer,
      index,
      d_sae: t.dSae,
      hook_out: t.hookOut,
      // Which of a CLT feature's decoder rows this is, and how many layers it writes.
      ...(t.outLayers > 1 ? { writes_layers: `${layer}..${layer + t.outLayers - 1}`, row: `[${index}, 0, :]` } : {}),
    },
  };
}

// ---- Contrastive pairs -----------------------------------------------------------------------------------------

export interface ContrastPair {
  positive: string;
  negative: string;
  /** 1-based line of the pair's first line in the file. */
  line: number;
}

/** Parses the pairs format (see the module comment). `file` names the source in errors. */
export function parsePairs(text: string, file: string): ContrastPair[] {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const pairs: ContrastPair[] = [];
  let cur: { positive?: string; negative?: string; line: number } | undefined;
  const close = (endLine: number) => {
    if (!cur) return;
    if (cur.positive === undefined || cur.negative === undefined) {
      const missing = cur.positive === undefined ? "'+ positive prompt'" : "'- negative prompt'";
      throw new ResidualError(`line ${cur.line}: the pair starting here has no ${missing} line before line ${endLine}`, file);
    }
    pairs.push({ positive: cur.positive, negative: cur.negative, line: cur.line });
    cur = undefined;
  };
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const line = lines[i];
    if (line.trim() === '') {
      close(n);
      continue;
    }
    if (/^\s*#/.test(line)) continue;
    const m = /^([+-]) ?(.*)$/.exec(line);
    if (!m) {
      throw new ResidualError(`line ${n}: expected '+ positive prompt', '- negative prompt', a '# comment' or a blank line, found ${JSON.stringify(line.slice(0, 40))}`, file);
    }
    const prompt = unescape(m[2], file, n);
    if (prompt.length === 0) throw new ResidualError(`line ${n}: the prompt after '${m[1]}' is empty`, file);
    cur ??= { line: n };
    const key = m[1] === '+' ? 'positive' : 'negative';
    if (cur[key] !== undefined) {
      throw new ResidualError(`line ${n}: a second '${m[1]}' line in the pair starting at line ${cur.line}; separate pairs with a blank line`, file);
    }
    cur[key] = prompt;
  }
  close(lines.length + 1);
  if (pairs.length === 0) throw new ResidualError("no pairs: write '+ positive prompt' and '- negative prompt' lines, one pair per block", file);
  return pairs;
}

function unescape(s: string, file: string, line: number): string {
  return s.replace(/\\(.?)/g, (_, c: string) => {
    if (c === 'n') return '\n';
    if (c === 't') return '\t';
    if (c === '\\') return '\\';
    throw new ResidualError(`line ${line}: unknown escape "\\${c}" (use \\n, \\t or \\\\)`, file);
  });
}

export interface ContrastiveOptions {
  /** Which positions' activations to compare: the last token's (default) or the mean over the prompt. */
  position?: 'last' | 'mean';
  cancel?: CancelToken;
}

/**
 * Contrastive Activation Addition: mean over pairs of activation(positive) − activation(negative) at
 * `blocks.{layer}.{point}`, each side read at its last position (or averaged over its positions).
 */
export async function contrastiveVector(
  model: Model,
  pairs: ContrastPair[],
  layer: number,
  point: SteerPointName,
  opts: ContrastiveOptions = {},
): Promise<SteeringVector> {
  const c = model.config;
  if (pairs.length === 0) throw new ResidualError('no pairs to contrast', 'steering');
  if (!Number.isInteger(layer) || layer < 0 || layer >= c.nLayers) {
    throw new ResidualError(`layer ${layer} does not exist (the model has layers 0..${c.nLayers - 1})`, 'steering');
  }
  if (!RESID_POINTS.includes(point)) throw new ResidualError(`unknown point "${point}"; use ${RESID_POINTS.join(', ')}`, 'steering');
  const position = opts.position ?? 'last';
  const hook = hookName(layer, point);
  const D = c.dModel;
  const sum = new Float64Array(D);
  const read = async (prompt: string, where: string): Promise<Float64Array> => {
    const ids = model.tokenizer.encodeForModel(prompt).ids;
    if (ids.length === 0) throw new ResidualError(`${where}: the prompt produced no tokens`, 'steering');
    if (ids.length > c.nCtx) throw new ResidualError(`${where}: ${ids.length} tokens exceed the model's context of ${c.nCtx}`, 'steering');
    const act = (await model.run({ ids, hooks: [hook], cancel: opts.cancel })).activations.get(hook)!.data;
    const P = ids.length;
    const out = new Float64Array(D);
    if (position === 'last') for (let d = 0; d < D; d++) out[d] = act[(P - 1) * D + d];
    else {
      for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) out[d] += act[p * D + d];
      for (let d = 0; d < D; d++) out[d] /= P;
    }
    return out;
  };
  for (const [i, pair] of pairs.entries()) {
    throwIfCancelled(opts.cancel);
    const where = `pair ${i + 1}${pair.line ? ` (line ${pair.line})` : ''}`;
    const pos = await read(pair.positive, where);
    const neg = await read(pair.negative, where);
    for (let d = 0; d < D; d++) sum[d] += pos[d] - neg[d];
  }
  const vector = Float32Array.from(sum, (x) => x / pairs.length);
  if (!vector.every(Number.isFinite)) throw new ResidualError('the contrastive vector contains NaN or Inf (the model produced non-finite activations)', 'steering', 'numeric');
  return {
    vector,
    layer,
    point,
    label: `contrast ${hook} (${pairs.length} pair${pairs.length === 1 ? '' : 's'})`,
    source: 'contrastive',
    provenance: {
      kind: 'contrastive activation addition',
      model: c.name,
      hook,
      position,
      pairs: pairs.map((p) => ({ positive: p.positive, negative: p.negative })),
    },
  };
}

// ---- Vector files ----------------------------------------------------------------------------------------------

export const VECTOR_FORMAT = 'residual-steering-vector';
export const VECTOR_FORMAT_VERSION = 1;

/** The JSON half of a saved vector (`<name>.json`). */
export interface VectorFileJson {
  format: typeof VECTOR_FORMAT;
  version: number;
  label: string;
  source: SteeringVector['source'];
  layer: number;
  point: SteerPointName;
  model: { name: string | null; d_model: number };
  /** ‖vector‖₂ when saved (a check against the tensor). */
  norm: number;
  provenance: Record<string, unknown>;
  created: string;
  /** The tensor file beside it and the tensor's name in it. */
  tensor_file: string;
  tensor: 'vector';
}

export interface LoadedVector extends SteeringVector {
  /** The two files read. */
  files: { json: string; tensor: string };
  modelName: string | null;
  created: string;
  /** Non-fatal findings (saved for another model name, norm differs from the JSON's). */
  warnings: string[];
}

/** `<name>.safetensors` and `<name>.json` for a path naming either of them, or the bare `<name>`. */
export function vectorFilePaths(file: string): { json: string; tensor: string } {
  const abs = path.resolve(file);
  const base = abs.replace(/\.(safetensors|json)$/i, '');
  return { json: `${base}.json`, tensor: `${base}.safetensors` };
}

/**
 * Writes `v` as `<name>.safetensors` + `<name>.json` (`file` may name either or neither extension). `modelName`
 * defaults to `provenance.model` when that is a string. Returns the two paths. The pair is locked while it is written
 * (a second writer is refused, naming the first), both paths are checked before either is written, and each file is
 * written beside itself and renamed into place, so a reader never sees half a file.
 */
export function saveVectorFile(file: string, v: SteeringVector, modelName?: string): { json: string; tensor: string } {
  const paths = vectorFilePaths(file);
  if (v.vector.length === 0) throw new ResidualError('the vector is empty', paths.tensor);
  if (!v.vector.every(Number.isFinite)) throw new ResidualError('the vector contains NaN or Inf; not saving it', paths.tensor, 'numeric');
  if (!RESID_POINTS.includes(v.point)) throw new ResidualError(`unknown point "${v.point}"`, paths.json);
  const dir = path.dirname(paths.json);
  if (!fs.existsSync(dir)) throw new ResidualError('the folder does not exist', dir, 'missing');
  const name = modelName ?? (typeof v.provenance.model === 'string' ? v.provenance.model : null);
  const json: VectorFileJson = {
    format: VECTOR_FORMAT,
    version: VECTOR_FORMAT_VERSION,
    label: v.label,
    source: v.source,
    layer: v.layer,
    point: v.point,
    model: { name, d_model: v.vector.length },
    norm: l2(v.vector),
    provenance: v.provenance,
    created: new Date().toISOString(),
    tensor_file: path.basename(paths.tensor),
    tensor: 'vector',
  };
  // The safetensors bytes (as checkpoint/write.ts lays them out): u64 header length, the header padded with spaces
  // to a multiple of 8, then the F32 values little-endian.
  const n = v.vector.length;
  const header = {
    __metadata__: { format: VECTOR_FORMAT, label: v.label, layer: String(v.layer), point: v.point },
    vector: { dtype: 'F32', shape: [n], data_offsets: [0, 4 * n] },
  };
  const text = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(text.length / 8) * 8;
  const tensorBytes = new Uint8Array(8 + headerLength + 4 * n);
  const view = new DataView(tensorBytes.buffer);
  view.setBigUint64(0, BigInt(headerLength), true);
  tensorBytes.fill(0x20, 8, 8 + headerLength);
  tensorBytes.set(text, 8);
  for (let i = 0; i < n; i++) view.setFloat32(8 + headerLength + 4 * i, v.vector[i], true);

  const lock = acquireLock(paths.json.replace(/\.json$/, ''), `saving the steering vector ${path.basename(paths.json, '.json')}`);
  try {
    checkOutputFile(paths.tensor, path.basename(paths.tensor));
    checkOutputFile(paths.json, path.basename(paths.json));
    writeFileAtomic(paths.tensor, tensorBytes, path.basename(paths.tensor));
    writeFileAtomic(paths.json, JSON.stringify(json, null, 1) + '\n', path.basename(paths.json));
  } finally {
    lock.release();
  }
  return paths;
}

/**
 * Reads a saved vector from either file of the pair. With `model`, checks its width against d_model and its layer
 * against the model's layers (a bare number checks the width only). Every problem is a ResidualError naming the file.
 */
export function loadVectorFile(file: string, modelOrWidth?: number | { dModel: number; nLayers?: number; name?: string }): LoadedVector {
  const model = typeof modelOrWidth === 'number' ? { dModel: modelOrWidth } : modelOrWidth;
  const paths = vectorFilePaths(file);
  if (!fs.existsSync(paths.json) && !fs.existsSync(paths.tensor)) throw new ResidualError('vector file not found', path.resolve(file), 'missing');
  if (!fs.existsSync(paths.json)) {
    throw new ResidualError(`the vector's JSON file is missing (a saved vector is ${path.basename(paths.tensor)} + ${path.basename(paths.json)})`, paths.json, 'missing');
  }
  if (!fs.existsSync(paths.tensor)) {
    throw new ResidualError(`the vector's tensor file is missing (a saved vector is ${path.basename(paths.tensor)} + ${path.basename(paths.json)})`, paths.tensor, 'missing');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(paths.json, 'utf8'));
  } catch (e) {
    throw new ResidualError(`not valid JSON (${(e as Error).message}); the file is corrupt`, paths.json);
  }
  if (!isPlainObject(raw)) throw new ResidualError('not a JSON object', paths.json);
  if (raw.format !== VECTOR_FORMAT) throw new ResidualError(`"format" is ${JSON.stringify(raw.format)}; expected "${VECTOR_FORMAT}"`, paths.json);
  if (typeof raw.version !== 'number' || raw.version > VECTOR_FORMAT_VERSION) {
    throw new ResidualError(`format version ${JSON.stringify(raw.version)} is not supported (this version reads ${VECTOR_FORMAT_VERSION})`, paths.json, 'unsupported');
  }
  const layer = raw.layer;
  if (typeof layer !== 'number' || !Number.isInteger(layer) || layer < 0) throw new ResidualError(`"layer" must be a non-negative integer, got ${JSON.stringify(layer)}`, paths.json);
  const point = raw.point as SteerPointName;
  if (!RESID_POINTS.includes(point)) throw new ResidualError(`"point" is ${JSON.stringify(point)}; expected one of ${RESID_POINTS.join(', ')}`, paths.json);
  const source = raw.source as SteeringVector['source'];
  const m = isPlainObject(raw.model) ? raw.model : {};
  const jsonWidth = typeof m.d_model === 'number' ? m.d_model : undefined;

  const header = readSafetensorsHeader(paths.tensor);
  const entry = header.entries.find((e) => e.name === 'vector');
  if (!entry) throw new ResidualError(`no tensor named "vector" (found ${header.entries.map((e) => `"${e.name}"`).join(', ') || 'none'})`, paths.tensor);
  const width = entry.shape.reduce((a, b) => a * b, 1);
  if (!(entry.shape.length === 1 || (entry.shape.length === 2 && entry.shape[0] === 1))) {
    throw new ResidualError(`tensor "vector" has shape [${entry.shape.join(', ')}]; expected [d_model]`, paths.tensor);
  }
  const vector = readTensorF32(entry);
  const bad = vector.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) throw new ResidualError(`the vector contains ${Number.isNaN(vector[bad]) ? 'NaN' : 'Inf'} (at index ${bad}); it cannot steer`, paths.tensor, 'numeric');
  if (jsonWidth !== undefined && jsonWidth !== width) {
    throw new ResidualError(`the JSON says d_model ${jsonWidth} but the tensor has ${width} values; the pair does not match`, paths.json);
  }
  const warnings: string[] = [];
  const modelName = typeof m.name === 'string' ? m.name : null;
  if (model) {
    if (width !== model.dModel) {
      throw new ResidualError(
        `the vector has ${width} values but the model's d_model is ${model.dModel}${modelName ? ` (it was made for ${modelName})` : ''}`,
        paths.tensor,
      );
    }
    if (model.nLayers !== undefined && layer >= model.nLayers) throw new ResidualError(`layer ${layer} does not exist (the model has layers 0..${model.nLayers - 1})`, paths.json);
    if (model.name && modelName && model.name !== modelName) warnings.push(`${paths.json}: saved for model "${modelName}", used with "${model.name}"`);
  }
  if (typeof raw.norm === 'number' && Math.abs(raw.norm - l2(vector)) > 1e-4 * Math.max(1, raw.norm)) {
    warnings.push(`${paths.json}: the tensor's norm ${l2(vector).toPrecision(6)} differs from the saved ${raw.norm} (edited since?)`);
  }
  return {
    vector,
    layer,
    point,
    label: typeof raw.label === 'string' ? raw.label : path.basename(paths.json, '.json'),
    source: source === 'feature' || source === 'contrastive' ? source : 'file',
    provenance: isPlainObject(raw.provenance) ? raw.provenance : {},
    files: paths,
    modelName,
    created: typeof raw.created === 'string' ? raw.created : '',
    warnings,
  };
}


