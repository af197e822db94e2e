/**
 * Dimension key, one letter per dimension; tensor variables carry these as suffixes (`residPost_BPD`, `pattern_BHQS`).
 * B batch · P position · Q query position · S key position · D d_model · H head · G key/value head · E d_head ·
 * M d_mlp · V vocab ·
 * L layer · F dictionary feature · N graph node · 1 a kept singleton axis.
 */
import { ResidualError } from './errors';

/** A dense float tensor as the engine passes it around: row-major, no strides. */
export interface Tensor32 {
  dims: number[];
  data: Float32Array;
}

export interface DimSizes {
  B?: number;
  P?: number;
  Q?: number;
  S?: number;
  D?: number;
  H?: number;
  G?: number;
  E?: number;
  M?: number;
  V?: number;
  L?: number;
  F?: number;
  N?: number;
}

/** Checks a tensor's rank and every dimension whose size is known; throws naming `what` (e.g. a hook name). */
export function assertDims(t: { dims: readonly number[] }, key: string, sizes: DimSizes, what: string): void {
  if (t.dims.length !== key.length) {
    throw new ResidualError(`expected ${key.length} dims [${key.split('').join(', ')}], got [${t.dims.join(', ')}]`, what);
  }
  for (let i = 0; i < key.length; i++) {
    const letter = key[i];
    const want = letter === '1' ? 1 : sizes[letter as keyof DimSizes];
    if (want !== undefined && t.dims[i] !== want) {
      throw new ResidualError(`axis ${i} (${letter}) should be ${want}, got ${t.dims[i]} (dims [${t.dims.join(', ')}])`, what);
    }
  }
}

export function numel(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}
