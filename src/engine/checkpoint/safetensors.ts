/**
 * Safetensors reader: an 8-byte little-endian header length, a JSON header, then raw little-endian tensor bytes.
 * Only the header is read up front; each tensor is read on demand at its own offset, so a multi-gigabyte checkpoint
 * costs its header's size until weights are asked for.
 */
import * as fs from 'fs';
import * as os from 'os';
import { ResidualError } from '../errors';
import { checkInputFile } from '../files';
import { f16Lookup } from './half';

export type SafeDtype = 'F32' | 'F16' | 'BF16';

export interface TensorEntry {
  name: string;
  /** Absolute path of the file holding the tensor. */
  file: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the tensor in the file: 8 + headerLength + begin. */
  dataOffset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  /** Sorted by dataOffset. */
  entries: TensorEntry[];
  metadata?: Record<string, string>;
  /** Length in bytes of the JSON header (excluding the 8-byte length prefix). */
  headerLength: number;
  fileSize: number;
  /** Non-fatal findings (unused bytes between or after tensors). */
  warnings: string[];
}

/** Bytes per element of every dtype the safetensors format defines. */
export const DTYPE_SIZES: Readonly<Record<string, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

export const FLOAT_DTYPES: readonly SafeDtype[] = ['F32', 'F16', 'BF16'];

/** Largest JSON header accepted; the reference implementation uses the same bound. */
export const MAX_HEADER_BYTES = 100_000_000;

const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

/** Reads and validates the header of a .safetensors file, without reading any tensor data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  // A FIFO would block the open forever, a folder fails the read: refused by name first (symlinks followed).
  checkInputFile(path);
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new ResidualError('file not found', path, 'missing');
    throw new ResidualError(`cannot open: ${err.message}`, path, 'invalid');
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) {
      throw new ResidualError(
        `not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length prefix (truncated download?)`,
        path,
      );
    }
    const prefix = readExact(fd, path, 0, 8);
    const headerLen64 = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
    if (headerLen64 > BigInt(fileSize - 8)) {
      throw new ResidualError(
        `header length ${headerLen64} runs past the end of the ${fileSize}-byte file; the file is truncated or not safetensors`,
        path,
      );
    }
    const headerLength = Number(headerLen64);
    if (headerLength > MAX_HEADER_BYTES) {
      throw new ResidualError(`header is ${headerLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit`, path);
    }
    if (headerLength < 2) throw new ResidualError(`header length ${headerLength} is too short to hold a JSON object`, path);
    const headerBytes = readExact(fd, path, 8, headerLength);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      throw new ResidualError('header is not valid UTF-8; the file is corrupt or not safetensors', path);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new ResidualError(`header is not valid JSON (${(e as Error).message}); the file is corrupt or not safetensors`, path);
    }
    if (!isPlainObject(json)) throw new ResidualError('header is not a JSON object', path);

    const dataStart = 8 + headerLength;
    const dataSize = fileSize - dataStart;
    const entries: TensorEntry[] = [];
    let metadata: Record<string, string> | undefined;
    for (const [name, raw] of Object.entries(json)) {
      if (name === '__metadata__') {
        metadata = parseMetadata(raw, path);
        continue;
      }
      entries.push(parseEntry(name, raw, path, dataStart, dataSize));
    }

    entries.sort((a, b) => a.dataOffset - b.dataOffset || a.byteLength - b.byteLength);
    const warnings: string[] = [];
    let cursor = dataStart;
    let prev: TensorEntry | undefined;
    for (const t of entries) {
      if (t.dataOffset < cursor) {
        throw new ResidualError(
          `tensors "${prev!.name}" and "${t.name}" overlap (bytes ${prev!.dataOffset - dataStart}..${prev!.dataOffset - dataStart + prev!.byteLength} and ${t.dataOffset - dataStart}..${t.dataOffset - dataStart + t.byteLength} of the data section); the file is corrupt`,
          path,
        );
      }
      if (t.dataOffset > cursor) {
        warnings.push(`${path}: ${t.dataOffset - cursor} unused bytes before tensor "${t.name}"`);
      }
      if (t.byteLength > 0) {
        cursor = t.dataOffset + t.byteLength;
        prev = t;
      }
    }
    if (cursor < fileSize) warnings.push(`${path}: ${fileSize - cursor} unused bytes after the last tensor`);
    return { entries, metadata, headerLength, fileSize, warnings };
  } finally {
    fs.closeSync(fd);
  }
}

function parseMetadata(raw: unknown, path: string): Record<string, string> {
  if (!isPlainObject(raw)) throw new ResidualError('"__metadata__" in the header is not an object', path);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') {
      throw new ResidualError(`"__metadata__.${k}" is ${JSON.stringify(v)}; safetensors metadata values must be strings`, path);
    }
    out[k] = v;
  }
  return out;
}

function parseEntry(name: string, raw: unknown, path: string, dataStart: number, dataSize: number): TensorEntry {
  const where = `tensor "${name}"`;
  if (!isPlainObject(raw)) throw new ResidualError(`${where}: header entry is not an object`, path);
  const { dtype, shape, data_offsets: offsets } = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof dtype !== 'string') throw new ResidualError(`${where}: "dtype" is missing or not a string`, path);
  const size = DTYPE_SIZES[dtype];
  if (size === undefined) {
    throw new ResidualError(`${where}: unknown dtype "${dtype}" (safetensors defines ${Object.keys(DTYPE_SIZES).join(', ')})`, path);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ResidualError(`${where}: "shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`, path);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
  ) {
    throw new ResidualError(`${where}: "data_offsets" must be [begin, end] non-negative integers, got ${JSON.stringify(offsets)}`, path);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw new ResidualError(`${where}: data_offsets [${begin}, ${end}] end before they begin`, path);
  let count = 1;
  for (const d of shape as number[]) count *= d;
  const expected = count * size;
  if (!Number.isSafeInteger(expected)) throw new ResidualError(`${where}: shape [${shape.join(', ')}] is too large`, path);
  const byteLength = end - begin;
  if (byteLength !== expected) {
    throw new ResidualError(
      `${where}: data_offsets [${begin}, ${end}] span ${byteLength} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${expected}; the header is corrupt`,
      path,
    );
  }
  if (end > dataSize) {
    throw new ResidualError(
      `${where}: data_offsets [${begin}, ${end}] run past the end of the ${dataSize}-byte data section; the file is truncated (re-download it)`,
      path,
    );
  }
  return { name, file: path, dtype, shape: shape as number[], dataOffset: dataStart + begin, byteLength };
}

/** Reads one tensor's bytes and converts them to float32 (F32 as is, F16 and BF16 exactly). */
export function readTensorF32(entry: TensorEntry): Float32Array {
  const elemSize = entry.dtype === 'F32' ? 4 : entry.dtype === 'F16' || entry.dtype === 'BF16' ? 2 : 0;
  if (!elemSize) {
    throw new ResidualError(
      `tensor "${entry.name}" has dtype ${entry.dtype}; only F32, F16 and BF16 can be read as float weights`,
      entry.file,
      'unsupported',
    );
  }
  const count = entry.byteLength / elemSize;
  if (!Number.isInteger(count)) {
    throw new ResidualError(`tensor "${entry.name}": ${entry.byteLength} bytes is not a whole number of ${entry.dtype} values`, entry.file);
  }
  const out = new Float32Array(count);
  const fd = openForTensor(entry);
  try {
    if (entry.dtype === 'F32') {
      readRange(fd, entry, new Uint8Array(out.buffer), 0, entry.byteLength);
      if (!LITTLE_ENDIAN_HOST) swapBytes(new Uint8Array(out.buffer), 4);
    } else {
      readHalves(fd, entry, out);
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

function readHalves(fd: number, entry: TensorEntry, out: Float32Array): void {
  const count = out.length;
  // Half precision: read through a bounded scratch buffer and widen chunk by chunk, so the peak is the float32
  // result plus at most HALF_CHUNK bytes, not result + the whole 16-bit copy.
  const halves = new Uint16Array(Math.min(count, HALF_CHUNK / 2));
  const bytes = new Uint8Array(halves.buffer);
  const table = entry.dtype === 'F16' ? f16Lookup() : undefined;
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let start = 0; start < count; start += halves.length) {
    const n = Math.min(halves.length, count - start);
    readRange(fd, entry, bytes, start * 2, n * 2);
    if (!LITTLE_ENDIAN_HOST) swapBytes(bytes.subarray(0, n * 2), 2);
    if (table) for (let i = 0; i < n; i++) out[start + i] = table[halves[i]];
    else for (let i = 0; i < n; i++) outBits[start + i] = halves[i] << 16; // bfloat16 is the top half of a float32
  }
}

const HALF_CHUNK = 8 << 20;

/**
 * Before a tensor read: a path that now holds a FIFO or a folder is refused by name (a FIFO would block the open);
 * a missing file is left to the open, whose message (and the callers' handling of it) names the tensor.
 */
function checkStillRegular(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return;
  }
  if (!st.isFile()) checkInputFile(file);
}

function openForTensor(entry: TensorEntry): number {
  checkStillRegular(entry.file);
  try {
    return fs.openSync(entry.file, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ResidualError(
      `cannot open to read tensor "${entry.name}": ${err.message}`,
      entry.file,
      err.code === 'ENOENT' ? 'missing' : 'invalid',
    );
  }
}

/** Reads `length` bytes of the tensor, starting `from` bytes into it, into `dst[0..length)`. */
function readRange(fd: number, entry: TensorEntry, dst: Uint8Array, from: number, length: number): void {
  const CHUNK = 1 << 30; // readSync takes at most 2^31-1 bytes per call
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, dst, done, Math.min(CHUNK, length - done), entry.dataOffset + from + done);
    if (n === 0) {
      throw new ResidualError(
        `tensor "${entry.name}": file ended after ${from + done} of its ${entry.byteLength} bytes (was the file truncated or replaced since its header was read?)`,
        entry.file,
      );
    }
    done += n;
  }
}

function readExact(fd: number, path: string, position: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new ResidualError(`file ended while reading bytes ${position}..${position + length}`, path);
    done += n;
  }
  return buf;
}

function swapBytes(bytes: Uint8Array, width: number): void {
  for (let i = 0; i + width <= bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Rows `rows` of a tensor [R, …] → [rows.length, C] (C = the product of the other dims), reading only those rows. */
export function readRows(e: TensorEntry, rows: ArrayLike<number>): Float32Array {
  // A row is everything after the first dimension (a cross-layer decoder's row is [layers, d_model]).
  const C = e.shape.slice(1).reduce((a, b) => a * b, 1);
  if (e.dtype !== 'F32' && e.dtype !== 'F16' && e.dtype !== 'BF16') {
    throw new ResidualError(`tensor "${e.name}" has dtype ${e.dtype}; only F32, F16 and BF16 are read`, e.file, 'unsupported');
  }
  const elem = e.dtype === 'F32' ? 4 : 2;
  const rowBytes = C * elem;
  const out = new Float32Array(rows.length * C);
  const table = e.dtype === 'F16' ? f16Lookup() : undefined;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (!(r >= 0 && r < e.shape[0] && Number.isInteger(r))) throw new ResidualError(`row ${r} is outside "${e.name}" [${e.shape.join(', ')}]`, e.file);
  }
  // Requested rows in file order, read in runs: rows closer than GAP bytes apart share one read (one read of a
  // few MB is far cheaper than hundreds of small ones).
  const GAP = 256 * 1024;
  const MAX = 8 * 1024 * 1024;
  const order = Array.from({ length: rows.length }, (_, i) => i).sort((x, y) => rows[x] - rows[y]);
  // The buffer spans at most the requested rows (one row for a single feature), and at most MAX bytes.
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < rows.length; i++) (lo = Math.min(lo, rows[i])), (hi = Math.max(hi, rows[i]));
  const buf = new Uint8Array(Math.max(rowBytes, Math.min(MAX, (hi - lo + 1) * rowBytes)) + 8);
  checkStillRegular(e.file);
  const fd = fs.openSync(e.file, 'r');
  try {
    for (let i0 = 0; i0 < order.length; ) {
      const first = rows[order[i0]];
      let i1 = i0 + 1;
      while (i1 < order.length) {
        const r = rows[order[i1]];
        if ((r - rows[order[i1 - 1]] - 1) * rowBytes > GAP || (r - first + 1) * rowBytes > buf.length - 8) break;
        i1++;
      }
      const last = rows[order[i1 - 1]];
      const bytes = (last - first + 1) * rowBytes;
      // Keep the view aligned for Float32Array/Uint16Array.
      const shift = buf.byteOffset % 4;
      let got = 0;
      while (got < bytes) {
        const n = fs.readSync(fd, buf, shift + got, bytes - got, e.dataOffset + first * rowBytes + got);
        if (n <= 0) throw new ResidualError(`"${e.name}" ends early`, e.file);
        got += n;
      }
      for (let i = i0; i < i1; i++) {
        const k = order[i];
        const at = shift + (rows[k] - first) * rowBytes;
        const dst = out.subarray(k * C, (k + 1) * C);
        if (elem === 4) dst.set(new Float32Array(buf.buffer, buf.byteOffset + at, C));
        else {
          const h = new Uint16Array(buf.buffer, buf.byteOffset + at, C);
          if (table) for (let c = 0; c < C; c++) dst[c] = table[h[c]];
          else {
            const bits = new Uint32Array(dst.buffer, dst.byteOffset, C);
            for (let c = 0; c < C; c++) bits[c] = h[c] << 16;
          }
        }
      }
      i0 = i1;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}
