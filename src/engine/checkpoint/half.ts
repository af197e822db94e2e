/**
 * 16-bit float conversions, in one place. Decoding (F16/BF16 → float32) is exact; encoding (float32 → F16/BF16)
 * rounds to nearest, ties to even, as PyTorch and NumPy do. All functions work on raw bit patterns held in numbers.
 */

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE binary16 bits → the exactly equal float32 value (returned as a JS number). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero or subnormal
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** bfloat16 bits → the exactly equal float32 value: bfloat16 is the top half of a float32. */
export function bf16ToF32(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0];
}

/**
 * float32 → IEEE binary16 bits, round to nearest, ties to even. `x` is first rounded to float32 (a no-op for values
 * that come from a Float32Array). Overflow gives ±Inf, underflow gives ±0 or a subnormal, NaN stays NaN (quiet).
 */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero). The value is m·2^(e-14) units of 2^-24, with m the 24-bit significand.
    if (exp === 0) return sign; // float32 zero or subnormal: far below half the smallest half subnormal
    const shift = 14 - e;
    if (shift > 24) return sign; // below 2^-25: rounds to zero
    const m = mant | 0x800000;
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && q & 1)) q++;
    return sign | q; // q may carry into 0x400, the smallest normal: still the right encoding
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && q & 1)) q++; // a carry may reach 0x7c00 (Inf): correct
  return sign | q;
}

/** float32 → bfloat16 bits, round to nearest, ties to even; NaN stays NaN (quiet). */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return (b >>> 16) | 0x40;
  // No wrap-around: the largest non-NaN pattern 0xff800000 + 0x8000 stays below 2^32.
  return (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
}

let f16Table: Float32Array | undefined;

/** Every half-precision bit pattern decoded once (256 KiB), so bulk conversion is a table lookup. */
export function f16Lookup(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32(h);
  }
  return f16Table;
}

/** Bulk exact F16 → float32. `out` defaults to a new array of the same length. */
export function f16ArrayToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const table = f16Lookup();
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

/** Bulk exact BF16 → float32. `out` defaults to a new array of the same length. */
export function bf16ArrayToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** Bulk float32 → F16 bits (RNE). */
export function f32ArrayToF16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]);
  return out;
}

/** Bulk float32 → BF16 bits (RNE). */
export function f32ArrayToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16(src[i]);
  return out;
}
