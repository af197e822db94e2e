/**
 * Steering vectors as llama.cpp control vectors (`llama-cli --control-vector FILE`, `--control-vector-scaled FILE S`).
 *
 * The file is GGUF (version 3, little-endian) with `general.architecture = "controlvector"`, `controlvector.model_hint`
 * (the llama.cpp architecture name), `controlvector.layer_count` (how many directions the file holds) and one float32
 * tensor `direction.<k>` of n_embd values per layer. llama.cpp adds `direction.<k>` to the output of block k (0-based,
 * its layer loop index), k ≥ 1 — in TransformerLens terms `blocks.k.hook_resid_post`, which is also
 * `blocks.(k+1).hook_resid_pre`. A Residual vector at `resid_post` of block L becomes `direction.L`; at `resid_pre` of
 * block L, `direction.(L−1)`; `resid_mid` (inside a block) and the first block's input have no control-vector slot.
 *
 * Written here (a few dozen bytes of header); read with @huggingface/gguf's parser, which the tests also hold the
 * writer to.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gguf } from '@huggingface/gguf';
import { ResidualError } from '../errors';
import { acquireLock, checkInputFile, checkOutputFile, writeFileAtomic } from '../files';
import type { SteerPointName } from '../results';
import { l2 } from '../numeric';

const GGUF_VERSION = 3;
const ALIGNMENT = 32;
const GGML_TYPE_F32 = 0;
const GGUF_TYPE_UINT32 = 4;
const GGUF_TYPE_STRING = 8;
const MAX_CONTROL_VECTOR_BYTES = 512 * 1024 * 1024;

/** llama.cpp's architecture name for each of Residual's (`controlvector.model_hint`). */
const LLAMA_CPP_ARCH: Record<string, string> = { gpt2: 'gpt2', llama: 'llama', mistral: 'llama', qwen2: 'qwen2', qwen3: 'qwen3', gemma2: 'gemma2', gpt_neox: 'gptneox' };

/** The control-vector layer k a Residual (layer, point) adds at, or why there is none. */
export function controlVectorLayer(layer: number, point: SteerPointName): number {
  if (point === 'hook_resid_mid') throw new ResidualError('a llama.cpp control vector adds to a block\'s output; hook_resid_mid is inside a block, so it has no control-vector layer', 'control vector');
  const k = point === 'hook_resid_post' ? layer : layer - 1;
  if (k < 1) {
    throw new ResidualError(
      `llama.cpp control vectors start at the output of block 1 (direction.1 = blocks.1.hook_resid_post); blocks.${layer}.${point} is before it`,
      'control vector',
    );
  }
  return k;
}

/** The GGUF bytes of a control vector: `directions` maps k → n_embd values. */
export function controlVectorBytes(directions: ReadonlyMap<number, Float32Array>, modelHint: string): Uint8Array {
  const chunks: Uint8Array[] = [];
  const enc = new TextEncoder();
  const u32 = (v: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    chunks.push(b);
  };
  const u64 = (v: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    chunks.push(b);
  };
  const str = (s: string) => {
    const bytes = enc.encode(s);
    u64(bytes.length);
    chunks.push(bytes);
  };
  const entries = [...directions].sort((a, b) => a[0] - b[0]);
  const width = entries[0]?.[1].length ?? 0;
  // Header: magic, version, tensor count, key-value count.
  chunks.push(enc.encode('GGUF'));
  u32(GGUF_VERSION);
  u64(entries.length);
  u64(3);
  str('general.architecture');
  u32(GGUF_TYPE_STRING);
  str('controlvector');
  str('controlvector.model_hint');
  u32(GGUF_TYPE_STRING);
  str(modelHint);
  str('controlvector.layer_count');
  u32(GGUF_TYPE_UINT32);
  u32(entries.length);
  // Tensor infos: name, dimensions, type, offset into the (aligned) data section.
  entries.forEach(([k], i) => {
    str(`direction.${k}`);
    u32(1);
    u64(width);
    u32(GGML_TYPE_F32);
    u64(i * alignUp(4 * width));
  });
  let headerLength = chunks.reduce((n, c) => n + c.length, 0);
  const pad = alignUp(headerLength) - headerLength;
  chunks.push(new Uint8Array(pad));
  headerLength += pad;
  const out = new Uint8Array(headerLength + entries.length * alignUp(4 * width));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  const view = new DataView(out.buffer);
  entries.forEach(([, v], i) => {
    const base = headerLength + i * alignUp(4 * width);
    for (let j = 0; j < v.length; j++) view.setFloat32(base + 4 * j, v[j], true);
  });
  return out;
}

function alignUp(n: number): number {
  return Math.ceil(n / ALIGNMENT) * ALIGNMENT;
}

/**
 * Writes `vector` (as stored, times `scale`) as a llama.cpp control vector at the slot of (layer, point). The output is
 * checked before it is written and written atomically (files.ts).
 */
export function writeControlVector(file: string, vector: Float32Array, layer: number, point: SteerPointName, opts: { architecture: string; scale?: number }): { layer: number } {
  const k = controlVectorLayer(layer, point);
  if (vector.length === 0) throw new ResidualError('the vector is empty', file);
  const scale = opts.scale ?? 1;
  const scaled = Float32Array.from(vector, (x) => x * scale);
  if (!scaled.every(Number.isFinite)) throw new ResidualError('the vector (times the scale) contains NaN or Inf; not writing it', file, 'numeric');
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir)) throw new ResidualError('the folder does not exist', dir, 'missing');
  const hint = LLAMA_CPP_ARCH[opts.architecture] ?? opts.architecture;
  const lock = acquireLock(file, `writing the control vector ${path.basename(file)}`);
  try {
    checkOutputFile(file, path.basename(file));
    writeFileAtomic(file, controlVectorBytes(new Map([[k, scaled]]), hint), path.basename(file));
  } finally {
    lock.release();
  }
  return { layer: k };
}

export interface ControlVector {
  modelHint: string;
  /** k → values, for every `direction.<k>` in the file. */
  directions: Map<number, Float32Array>;
}

/** Reads a llama.cpp control vector; every problem is a ResidualError naming the file. `dModel` checks the width. */
export async function readControlVector(file: string, dModel?: number): Promise<ControlVector> {
  const abs = path.resolve(file);
  const size = checkInputFile(abs, path.basename(abs));
  // A control vector is n_layer × n_embd floats: megabytes. Anything far larger is not one (or is hostile).
  if (size > MAX_CONTROL_VECTOR_BYTES) throw new ResidualError(`${(size / 1e6).toFixed(0)} MB is far larger than a control vector (n_layer × n_embd floats)`, abs);
  const buf = fs.readFileSync(abs);
  if (buf.length < 4 || buf.toString('latin1', 0, 4) !== 'GGUF') throw new ResidualError('not a GGUF file (it does not start with "GGUF")', abs);
  // The counts the header declares must fit in the file (a tensor's description is at least 33 bytes, a key-value 13),
  // so a corrupt count is refused here rather than parsed for seconds.
  if (buf.length < 24) throw new ResidualError('the GGUF header is cut short; the file is truncated', abs);
  const view = new DataView(buf.buffer, buf.byteOffset, 24);
  const tensors = Number(view.getBigUint64(8, true));
  const kvs = Number(view.getBigUint64(16, true));
  if (tensors * 33 + kvs * 13 > size) throw new ResidualError(`the header declares ${tensors} tensors and ${kvs} keys, more than ${size} bytes can hold; the file is corrupt`, abs);
  let parsed: Awaited<ReturnType<typeof gguf>>;
  try {
    parsed = await gguf(abs, { allowLocalFile: true });
  } catch (e) {
    throw new ResidualError(`not a readable GGUF file (${(e as Error).message})`, abs);
  }
  const meta = parsed.metadata as Record<string, unknown>;
  const arch = meta['general.architecture'];
  if (arch !== 'controlvector') {
    throw new ResidualError(`general.architecture is ${JSON.stringify(arch)}: this GGUF is ${arch ? 'a model' : 'not a control vector'}, not a llama.cpp control vector`, abs);
  }
  const directions = new Map<number, Float32Array>();
  for (const t of parsed.tensorInfos) {
    const m = /^direction\.(\d+)$/.exec(t.name);
    if (!m) throw new ResidualError(`tensor "${t.name}" is not a direction (expected direction.<layer>)`, abs);
    const k = Number(m[1]);
    if (directions.has(k)) throw new ResidualError(`tensor "${t.name}": a second direction for layer ${k}`, abs);
    if (k < 1) throw new ResidualError(`tensor "${t.name}": llama.cpp numbers control-vector layers from 1`, abs);
    if (Number(t.dtype) !== GGML_TYPE_F32) throw new ResidualError(`tensor "${t.name}" is of GGML type ${t.dtype}; control vectors are float32 (type 0)`, abs);
    const n = t.shape.reduce((a, b) => a * Number(b), 1);
    if (t.shape.length !== 1 && !(t.shape.length === 2 && t.shape.some((d) => Number(d) === 1))) {
      throw new ResidualError(`tensor "${t.name}" has shape [${t.shape.join(', ')}]; a direction is [n_embd]`, abs);
    }
    if (dModel !== undefined && n !== dModel) throw new ResidualError(`tensor "${t.name}" has ${n} values but the model's d_model is ${dModel}: this control vector is for another model`, abs);
    const start = Number(parsed.tensorDataOffset + t.offset);
    if (start + 4 * n > buf.length) throw new ResidualError(`tensor "${t.name}" runs past the end of the file; the file is truncated`, abs);
    const v = new Float32Array(n);
    const view = new DataView(buf.buffer, buf.byteOffset + start, 4 * n);
    for (let i = 0; i < n; i++) v[i] = view.getFloat32(4 * i, true);
    const bad = v.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new ResidualError(`tensor "${t.name}" contains ${Number.isNaN(v[bad]) ? 'NaN' : 'Inf'} (at index ${bad})`, abs, 'numeric');
    directions.set(k, v);
  }
  if (directions.size === 0) throw new ResidualError('the control vector holds no direction tensors', abs);
  return { modelHint: typeof meta['controlvector.model_hint'] === 'string' ? (meta['controlvector.model_hint'] as string) : '', directions };
}

/**
 * A llama.cpp control vector as a Residual steering vector. With `at` (where it will be added), the direction for that
 * slot is taken and must be in the file; without, a file of one direction gives it at its own slot (resid_post of
 * block k), and a file of several gives its largest, saying so.
 */
export async function steeringVectorFromGguf(
  file: string,
  model: { dModel: number; nLayers: number; name?: string; architecture?: string },
  at?: { layer: number; point: SteerPointName },
): Promise<{ vector: Float32Array; layer: number; point: SteerPointName; label: string; warnings: string[]; modelHint: string }> {
  const abs = path.resolve(file);
  const cv = await readControlVector(abs, model.dModel);
  const ks = [...cv.directions.keys()].sort((a, b) => a - b);
  const slots = ks.map((k) => `direction.${k} = blocks.${k}.hook_resid_post`).join(', ');
  const warnings: string[] = [];
  const hint = model.architecture ? (LLAMA_CPP_ARCH[model.architecture] ?? model.architecture) : undefined;
  if (cv.modelHint && hint && cv.modelHint !== hint) warnings.push(`${abs}: made for a ${cv.modelHint} model, used with ${model.name ?? hint} (${hint})`);
  let k: number;
  if (at) {
    k = controlVectorLayer(at.layer, at.point);
    if (!cv.directions.has(k)) throw new ResidualError(`no direction for blocks.${at.layer}.${at.point} (direction.${k}); the file holds ${slots}`, abs);
  } else if (ks.length === 1) {
    k = ks[0];
  } else {
    k = ks.reduce((best, x) => (l2(cv.directions.get(x)!) > l2(cv.directions.get(best)!) ? x : best), ks[0]);
    warnings.push(`${abs}: holds ${ks.length} directions (layers ${ks[0]}..${ks.at(-1)}); using direction.${k}, the largest`);
  }
  if (k >= model.nLayers) throw new ResidualError(`direction.${k} is for block ${k}, but the model has blocks 0..${model.nLayers - 1}`, abs);
  return { vector: cv.directions.get(k)!, layer: at?.layer ?? k, point: at?.point ?? 'hook_resid_post', label: `${path.basename(abs, '.gguf')} (direction.${k})`, warnings, modelHint: cv.modelHint };
}
