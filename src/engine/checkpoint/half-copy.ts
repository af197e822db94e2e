/**
 * Half-precision weights: ONNX Runtime keeps every initializer in the dtype the graph gives it, so a model whose
 * float32 copy does not fit in memory can run with float16 weights instead (the matrix products then take float16
 * inputs; everything else stays float32). F16 tensors are used in place; F32 and BF16 tensors are converted once into
 * a cache file (one safetensors file per checkpoint and content, reused while the checkpoint's files are unchanged).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResidualError } from '../errors';
import { f32ArrayToF16 } from './half';
import { readSafetensorsHeader, readTensorF32, type TensorEntry } from './safetensors';
import { writeSafetensorsFile } from './write';

/**
 * The same tensors, every one F16: F16 entries as they are, the others from the cache file in `cacheDir` (written
 * now if missing, atomically). Throws when a weight does not fit float16's range (|x| > 65504).
 */
export function halfPrecisionTensors(tensors: Map<string, TensorEntry>, cacheDir: string, log: (m: string) => void = () => undefined): Map<string, TensorEntry> {
  const convert = [...tensors].filter(([, e]) => e.dtype !== 'F16');
  if (convert.length === 0) return tensors;
  const files = [...new Set(convert.map(([, e]) => e.file))].sort();
  const identity = files.map((f) => {
    const st = fs.statSync(f);
    return `${path.resolve(f)}|${st.size}|${st.mtimeMs}`;
  });
  const key = crypto.createHash('sha256').update(JSON.stringify([identity, convert.map(([n, e]) => [n, e.name, e.dataOffset])])).digest('hex').slice(0, 20);
  fs.mkdirSync(cacheDir, { recursive: true });
  const file = path.join(cacheDir, `half-${key}.safetensors`);
  let header: ReturnType<typeof readSafetensorsHeader> | undefined;
  if (fs.existsSync(file)) {
    try {
      header = readSafetensorsHeader(file);
    } catch {
      fs.rmSync(file, { force: true }); // a damaged cache is rebuilt
    }
  }
  if (!header) {
    const t0 = performance.now();
    writeHalfCopy(file, convert);
    log(`converted ${convert.length} tensors to float16 in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${file}`);
    header = readSafetensorsHeader(file);
  }
  const byName = new Map(header.entries.map((e) => [e.name, e]));
  const out = new Map<string, TensorEntry>();
  for (const [name, e] of tensors) {
    if (e.dtype === 'F16') out.set(name, e);
    else {
      const h = byName.get(name);
      if (!h) throw new ResidualError(`the float16 cache has no tensor "${name}"; delete it to rebuild`, file);
      out.set(name, h);
    }
  }
  return out;
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
  writeSafetensorsFile(file, header, (function* () {
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
  })());
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
