/**
 * Half-precision weights: ONNX Runtime keeps every initializer in the dtype the graph gives it, so a model whose
 * float32 copy does not fit in memory can run with float16 weights instead (the matrix products then take float16
 * inputs; everything else stays float32). F16 tensors are used in place; F32 and BF16 tensors are converted once into
 * a cache file (one safetensors file per checkpoint and content, reused while the checkpoint's files are unchanged).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CACHE_DIR_ENV, recordEntry, sourceRecord, useEntry } from '../cache';
import { ResidualError } from '../errors';
import { f32ArrayToF16 } from './half';
import { readSafetensorsHeader, readTensorF32, type TensorEntry } from './safetensors';
import { writeSafetensorsFile } from './write';

/**
 * The same tensors, every one F16: F16 entries as they are, the others from the cache file in `cacheDir` (written
 * now if missing, atomically). Throws when a weight does not fit float16's range (|x| > 65504). The cache file is
 * not marked in use after the call: a caller that keeps reading it uses `halfPrecisionCopy`.
 */
export function halfPrecisionTensors(tensors: Map<string, TensorEntry>, cacheDir: string, log: (m: string) => void = () => undefined): Map<string, TensorEntry> {
  const copy = halfPrecisionCopy(tensors, cacheDir, log);
  copy.release();
  return copy.tensors;
}

export interface HalfCopy {
  tensors: Map<string, TensorEntry>;
  /** Ends this caller's use of the cache file (until then no pruning or Clear Cache removes it). */
  release: () => void;
}

/**
 * `halfPrecisionTensors`, with the cache file (`<cacheDir>/half-<key>.safetensors`, see cache.ts) marked in use
 * until `release()`. A cached copy is checked before it is reused (its header must hold every tensor as F16 with
 * the source's shape, within the file's length) and rebuilt when it does not.
 */
export function halfPrecisionCopy(tensors: Map<string, TensorEntry>, cacheDir: string, log: (m: string) => void = () => undefined): HalfCopy {
  const convert = [...tensors].filter(([, e]) => e.dtype !== 'F16');
  if (convert.length === 0) return { tensors, release: () => undefined };
  const files = [...new Set(convert.map(([, e]) => e.file))].sort();
  const sources = files.map((f) => sourceRecord(f));
  const identity = sources.map((s) => `${s.path}|${s.dev}|${s.ino}|${s.size}|${s.mtimeMs}`);
  const key = crypto.createHash('sha256').update(JSON.stringify([identity, convert.map(([n, e]) => [n, e.name, e.dataOffset])])).digest('hex').slice(0, 20);
  try {
    fs.mkdirSync(cacheDir, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ResidualError(
      `cannot create the cache folder for float16 weights (${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : (code ?? (e as Error).message)}); set ${CACHE_DIR_ENV} to a writable folder`,
      cacheDir,
    );
  }
  const file = path.join(cacheDir, `half-${key}.safetensors`);
  const release = useEntry(file); // before looking: no pruning in any process removes it from now on
  try {
    let byName = validCopy(file, convert, log);
    if (!byName) {
      const t0 = performance.now();
      writeHalfCopy(file, convert);
      log(`converted ${convert.length} tensors to float16 in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${file}`);
      byName = validCopy(file, convert, log);
      if (!byName) throw new ResidualError('the float16 copy just written does not read back; the disk may be failing', file);
    }
    recordEntry(file, `half|${key}`, sources);
    const out = new Map<string, TensorEntry>();
    for (const [name, e] of tensors) out.set(name, e.dtype === 'F16' ? e : byName.get(name)!);
    return { tensors: out, release };
  } catch (e) {
    release();
    throw e;
  }
}

/** The cached copy's tensors by name when it holds every one as F16 with the right shape; else undefined (removed). */
function validCopy(file: string, convert: [string, TensorEntry][], log: (m: string) => void): Map<string, TensorEntry> | undefined {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return undefined;
  }
  let problem: string | undefined;
  let byName: Map<string, TensorEntry> | undefined;
  if (!st.isFile()) problem = 'not a regular file';
  else {
    try {
      byName = new Map(readSafetensorsHeader(file).entries.map((e) => [e.name, e]));
      for (const [name, e] of convert) {
        const h = byName.get(name);
        if (!h || h.dtype !== 'F16' || h.shape.join() !== e.shape.join()) {
          problem = `tensor "${name}" ${h ? 'has the wrong dtype or shape' : 'is missing'}`;
          break;
        }
      }
    } catch (e) {
      problem = (e as Error).message;
    }
  }
  if (!problem) return byName;
  log(`cache: ${file} is damaged (${problem}); rebuilding it`);
  fs.rmSync(file, { recursive: true, force: true });
  return undefined;
}

/** Streams the conversion tensor by tensor, so peak memory is one tensor, not the model. */
function writeHalfCopy(file: string, tensors: [string, TensorEntry][]): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', residual: 'float16 copy' } };
  let offset = 0;
  for (const [name, e] of tensors) {
    const bytes = numel(e.shape) * 2;
    header[name] = { dtype: 'F16', shape: e.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  try {
    writeSafetensorsFile(file, header, halves(tensors));
  } catch (e) {
    if (e instanceof ResidualError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new ResidualError(
      `cannot write the float16 copy of the weights (${code === 'ENOSPC' ? 'the disk is full: free space, lower the cache limit or run "Residual: Clear Cache"' : code === 'EACCES' || code === 'EPERM' ? `permission denied; set ${CACHE_DIR_ENV} to a writable folder` : (code ?? (e as Error).message)})`,
      file,
    );
  }
}

function halves(tensors: [string, TensorEntry][]): Iterable<Uint8Array> {
  return (function* () {
    for (const [name, e] of tensors) {
      const f32 = readTensorF32(e);
      const h = f32ArrayToF16(f32);
      for (let i = 0; i < h.length; i++) {
        // 0x7c00 / 0xfc00: ±Inf from a finite weight beyond float16's range.
        if ((h[i] & 0x7fff) === 0x7c00 && Number.isFinite(f32[i])) {
          throw new ResidualError(`weight ${name} holds ${f32[i]}, beyond float16's range (±65504); this model cannot run with half-precision weights`, e.file, 'unsupported');
        }
      }
      yield new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
    }
  })();
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
