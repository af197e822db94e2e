/**
 * Safetensors writer for tests and model generators. Layout follows the reference implementation: 8-byte
 * little-endian header length, JSON header padded with spaces to a multiple of 8 bytes, then the tensors back to back.
 */
import * as fs from 'fs';
import * as os from 'os';
import { ResidualError } from '../errors';
import { processTag } from '../files';
import { f32ArrayToBf16, f32ArrayToF16 } from './half';
import type { SafeDtype } from './safetensors';

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/**
 * A tensor produced in pieces: `chunks()` yields its float32 values in order. The writer encodes and writes each
 * chunk before asking for the next, so a producer may reuse one buffer.
 */
export interface StreamedTensor {
  name: string;
  shape: number[];
  chunks(): Iterable<Float32Array>;
}

/**
 * Writes `tensors` (float32 values) as one safetensors file in `dtype` (F16/BF16 round to nearest even). The file
 * is written beside `path` and renamed into place, so a reader never sees half a file.
 */
export function writeSafetensors(
  path: string,
  tensors: TensorToWrite[],
  dtype: SafeDtype,
  metadata?: Record<string, string>,
): void {
  for (const t of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) && count !== t.data.length) {
      throw new ResidualError(`tensor "${t.name}": shape [${t.shape.join(', ')}] holds ${count} values but data has ${t.data.length}`, path);
    }
  }
  writeStreamedSafetensors(path, tensors.map(heldTensor), dtype, metadata);
}

/** A tensor whose values are already in memory. */
export function heldTensor(t: TensorToWrite): StreamedTensor {
  return { name: t.name, shape: t.shape, chunks: () => [t.data] };
}

/**
 * Writes streamed tensors as one safetensors file in `dtype` (F16/BF16 round to nearest even): the header from the
 * shapes, then each chunk encoded as it comes. Byte-identical to `writeSafetensors` for the same values.
 * `onValues` is told how many values of which tensor were just written.
 */
export function writeStreamedSafetensors(
  path: string,
  tensors: StreamedTensor[],
  dtype: SafeDtype,
  metadata?: Record<string, string>,
  onValues?: (tensor: string, values: number) => void,
): void {
  const elem = dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 0;
  if (!elem) throw new ResidualError(`cannot write dtype ${String(dtype)}; use F32, F16 or BF16`, path, 'unsupported');
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const seen = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || seen.has(t.name)) throw new ResidualError(`tensor name "${t.name}" is reserved or used twice`, path);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new ResidualError(`tensor "${t.name}": shape [${t.shape.join(', ')}] is not non-negative integers`, path);
    }
    seen.add(t.name);
    const bytes = t.shape.reduce((a, b) => a * b, 1) * elem;
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  writeSafetensorsFile(path, header, (function* () {
    for (const t of tensors) {
      const count = t.shape.reduce((a, b) => a * b, 1);
      let done = 0;
      for (const c of t.chunks()) {
        done += c.length;
        if (done > count) break;
        yield encode(c, dtype);
        onValues?.(t.name, c.length);
      }
      if (done !== count) throw new ResidualError(`tensor "${t.name}": shape [${t.shape.join(', ')}] holds ${count} values but ${done > count ? 'more' : done} were produced`, path);
    }
  })());
}

/**
 * Writes a safetensors file from its header (data offsets already set) and the tensors' bytes in order, produced
 * lazily so a caller can convert one tensor at a time. Written beside `path` and renamed into place; an error while
 * producing bytes removes the partial file.
 */
export function writeSafetensorsFile(path: string, header: Record<string, unknown>, bodies: Iterable<Uint8Array>): void {
  const text = new TextEncoder().encode(JSON.stringify(header));
  const json = new Uint8Array(Math.ceil(text.length / 8) * 8).fill(0x20); // pad with spaces to a multiple of 8
  json.set(text);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(json.length), true);

  const tmp = `${path}.tmp-${processTag()}`; // host and pid: the cache judges leftovers by them
  const fd = fs.openSync(tmp, 'w');
  try {
    writeAll(fd, prefix);
    writeAll(fd, json);
    for (const b of bodies) writeAll(fd, b);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, path);
}

const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

function encode(data: Float32Array, dtype: SafeDtype): Uint8Array {
  if (dtype === 'F32') {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (LITTLE_ENDIAN_HOST) return bytes;
    const out = new Uint8Array(data.byteLength);
    const view = new DataView(out.buffer);
    for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i], true);
    return out;
  }
  const halves = dtype === 'F16' ? f32ArrayToF16(data) : f32ArrayToBf16(data);
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(halves.buffer);
  const out = new Uint8Array(halves.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < halves.length; i++) view.setUint16(i * 2, halves[i], true);
  return out;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  const CHUNK = 1 << 30;
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, Math.min(CHUNK, bytes.length - done));
}
