import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ResidualError, type ResidualErrorCode } from '../../src/engine/errors';
import {
  bf16ArrayToF32,
  bf16ToF32,
  f16ArrayToF32,
  f16ToF32,
  f32ArrayToBf16,
  f32ArrayToF16,
  f32ToBf16,
  f32ToF16,
} from '../../src/engine/checkpoint/half';
import { readSafetensorsHeader, readTensorF32, type SafeDtype } from '../../src/engine/checkpoint/safetensors';
import { writeSafetensors } from '../../src/engine/checkpoint/write';
import { parseConfig } from '../../src/engine/checkpoint/parse-config';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2, type RandomGpt2Shape } from '../../src/engine/checkpoint/random';

// ---------------------------------------------------------------------------------------------------------------
// Helpers

const roots: string[] = [];
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-ckpt-'));
  roots.push(d);
  return d;
}
after(() => {
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

const TOKENIZER = { model: { type: 'BPE', vocab: { a: 0 }, merges: [] } };
const SMALL: RandomGpt2Shape = { nLayers: 2, dModel: 8, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 11 };

/** Asserts `fn` throws a ResidualError with `code`, about `file`, whose message mentions every one of `parts`. */
function throwsResidual(fn: () => unknown, code: ResidualErrorCode, file: string, ...parts: string[]): ResidualError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ResidualError, `expected a ResidualError, got ${String(caught)}`);
  const err = caught;
  assert.equal(err.code, code, `code of: ${err.message}`);
  assert.equal(err.file, file, `file of: ${err.message}`);
  assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`);
  for (const p of parts) assert.ok(err.message.includes(p), `message should mention ${JSON.stringify(p)}: ${err.message}`);
  return err;
}

/** Writes a safetensors file by hand: `header` as JSON (or raw text), padded to 8 bytes, then `data`. */
function rawSafetensors(file: string, header: object | string, data: Uint8Array, lengthOverride?: bigint): void {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const enc = new TextEncoder().encode(text);
  const json = new Uint8Array(Math.ceil(enc.length / 8) * 8).fill(0x20);
  json.set(enc);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  const all = new Uint8Array(8 + json.length + data.length);
  all.set(prefix, 0);
  all.set(json, 8);
  all.set(data, 8 + json.length);
  fs.writeFileSync(file, all);
}

/** Re-writes a safetensors file with its header changed by `mutate`, keeping the data section byte for byte. */
function rewriteHeader(file: string, mutate: (h: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>) => void): void {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  mutate(header);
  rawSafetensors(file, header, bytes.subarray(8 + n));
}

function sameBytes(p: string, q: string): boolean {
  const a = new Uint8Array(fs.readFileSync(p));
  const b = new Uint8Array(fs.readFileSync(q));
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function f32Bits(x: number): number {
  const v = new DataView(new ArrayBuffer(4));
  v.setFloat32(0, x, true);
  return v.getUint32(0, true);
}
function bitsF32(b: number): number {
  const v = new DataView(new ArrayBuffer(4));
  v.setUint32(0, b >>> 0, true);
  return v.getFloat32(0, true);
}

/**
 * Independent reference: rounds the float32 value `x` to a binary format with `mantBits` fraction bits, smallest
 * normal exponent `minExp` and largest exponent `maxExp`, to nearest with ties to even, by exact arithmetic on
 * doubles (x / ulp is exact because x has 24 significant bits and ulp is a power of two).
 */
function refRound(x: number, mantBits: number, minExp: number, maxExp: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  e = Math.max(e, minExp);
  const ulp = 2 ** (e - mantBits);
  const q = a / ulp;
  let r = Math.floor(q);
  const frac = q - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  const v = r * ulp;
  return v >= 2 ** (maxExp + 1) ? sign * Infinity : sign * v;
}
const refF16 = (x: number): number => refRound(x, 10, -14, 15);
const refBf16 = (x: number): number => refRound(x, 7, -126, 127);

/** Float32 test values: specials, ties, subnormals, overflow edges, and many random bit patterns (no NaN). */
function testValues(count: number): Float32Array {
  const vals: number[] = [
    0, -0, 1, -1, 0.5, 2, 3.14159, 65504, 65519, 65520, 70000, -65520, 2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -25,
    2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 2 ** -126, 2 ** -149, 3.4028234663852886e38,
    Infinity, -Infinity, 1e-8, -1e-8, 123456.789,
  ];
  let s = 12345;
  const next = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
  while (vals.length < count) {
    const r = next();
    if (vals.length % 2) {
      // Anywhere in float32.
      const x = bitsF32(r);
      if (!Number.isNaN(x)) vals.push(x);
    } else {
      // Concentrated where half precision lives: exponents 2^-27 .. 2^16.
      const exp = (next() % 44) - 27 + 127;
      vals.push(bitsF32((r & 0x80000000) | (exp << 23) | (r & 0x7fffff)));
    }
  }
  return Float32Array.from(vals);
}

// ---------------------------------------------------------------------------------------------------------------

describe('half floats', () => {
  test('f16ToF32 decodes every bit pattern exactly, and f32ToF16 inverts it', () => {
    for (let h = 0; h < 0x10000; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 31;
      const m = h & 1023;
      const want = e === 31 ? (m ? NaN : sign * Infinity) : e === 0 ? sign * m * 2 ** -24 : sign * 2 ** (e - 15) * (1 + m / 1024);
      const got = f16ToF32(h);
      assert.ok(Object.is(got, want), `f16 ${h.toString(16)}: ${got} vs ${want}`);
      if (!Number.isNaN(want)) assert.equal(f32ToF16(got), h, `round trip of ${h.toString(16)}`);
      else assert.ok(Number.isNaN(f16ToF32(f32ToF16(got))));
    }
  });

  test('f32ToF16 known bit patterns (ties to even, subnormals, overflow)', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65519, 0x7bff],
      [65520, 0x7c00], // halfway to 2^16 rounds to even → Inf
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal → 0 (even)
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units → 2
      [2 ** -14 - 2 ** -25, 0x0400], // tie between the largest subnormal and the smallest normal → normal (even)
      [1 + 2 ** -11, 0x3c00], // tie → even mantissa 0
      [1 + 3 * 2 ** -11, 0x3c02], // tie → even mantissa 2
      [-0, 0x8000],
      [Infinity, 0x7c00],
    ];
    for (const [x, h] of cases) assert.equal(f32ToF16(x), h, `f32ToF16(${x})`);
    assert.equal(f32ToF16(NaN) & 0x7c00, 0x7c00);
    assert.notEqual(f32ToF16(NaN) & 0x3ff, 0);
  });

  test('f32ToF16 and f32ToBf16 round to nearest even, against an independent reference', () => {
    for (const x of testValues(20000)) {
      assert.ok(Object.is(f16ToF32(f32ToF16(x)), refF16(x)), `f16 of ${x}`);
      assert.ok(Object.is(bf16ToF32(f32ToBf16(x)), refBf16(x)), `bf16 of ${x}`);
    }
  });

  test('bulk converters agree with the scalar ones', () => {
    const all = Uint16Array.from({ length: 0x10000 }, (_, i) => i);
    const f16 = f16ArrayToF32(all);
    const bf16 = bf16ArrayToF32(all);
    for (let h = 0; h < 0x10000; h++) {
      assert.ok(Object.is(f16[h], Math.fround(f16ToF32(h))) || Number.isNaN(f16[h]));
      assert.ok(Object.is(bf16[h], bf16ToF32(h)) || Number.isNaN(bf16[h]));
    }
    const xs = testValues(2000);
    const h16 = f32ArrayToF16(xs);
    const b16 = f32ArrayToBf16(xs);
    xs.forEach((x, i) => {
      assert.equal(h16[i], f32ToF16(x));
      assert.equal(b16[i], f32ToBf16(x));
    });
  });

  test('bf16 decode is the top half of a float32, known encodings', () => {
    for (let b = 0; b < 0x10000; b += 7) {
      const want = bitsF32(b << 16);
      const got = bf16ToF32(b);
      assert.ok(Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)));
    }
    assert.equal(f32ToBf16(1), 0x3f80);
    assert.equal(f32ToBf16(bitsF32(0x3f808000)), 0x3f80); // tie, even stays
    assert.equal(f32ToBf16(bitsF32(0x3f818000)), 0x3f82); // tie, odd rounds up
    assert.equal(f32ToBf16(bitsF32(0x3f808001)), 0x3f81);
    assert.equal(f32ToBf16(bitsF32(0x7f7fffff)), 0x7f80); // max float32 → Inf
    const nan = f32ToBf16(NaN);
    assert.ok(Number.isNaN(bf16ToF32(nan)));
    assert.equal(f32Bits(bf16ToF32(0x8000)), 0x80000000); // -0
  });
});

describe('safetensors read/write', () => {
  for (const dtype of ['F32', 'F16', 'BF16'] as SafeDtype[]) {
    test(`round trip ${dtype}`, () => {
      const dir = tmpDir();
      const file = path.join(dir, `t-${dtype}.safetensors`);
      const a = testValues(4000);
      const b = Float32Array.from({ length: 6 }, (_, i) => i - 2.5);
      writeSafetensors(
        file,
        [
          { name: 'a', shape: [40, 100], data: a },
          { name: 'b.weight', shape: [2, 3], data: b },
          { name: 'empty', shape: [0, 5], data: new Float32Array(0) },
          { name: 'scalar', shape: [], data: new Float32Array([7]) },
        ],
        dtype,
        { format: 'pt', note: 'ünïcode' },
      );
      const raw = fs.readFileSync(file);
      const h = readSafetensorsHeader(file);
      assert.equal(h.fileSize, raw.length);
      assert.equal(h.headerLength % 8, 0, 'header padded to a multiple of 8');
      assert.equal(Number(raw.readBigUInt64LE(0)), h.headerLength);
      assert.equal(raw[8 + h.headerLength - 1] === 0x20 || raw[8 + h.headerLength - 1] === 0x7d, true);
      assert.deepEqual(h.metadata, { format: 'pt', note: 'ünïcode' });
      assert.deepEqual(h.warnings, []);
      const byName = new Map(h.entries.map((e) => [e.name, e]));
      assert.deepEqual([...byName.keys()].sort(), ['a', 'b.weight', 'empty', 'scalar']);
      const size = dtype === 'F32' ? 4 : 2;
      const ea = byName.get('a')!;
      assert.equal(ea.file, file);
      assert.equal(ea.dtype, dtype);
      assert.deepEqual(ea.shape, [40, 100]);
      assert.equal(ea.dataOffset, 8 + h.headerLength); // first tensor, begin = 0
      assert.equal(ea.byteLength, 4000 * size);
      assert.equal(byName.get('b.weight')!.dataOffset, 8 + h.headerLength + 4000 * size);
      assert.deepEqual(byName.get('scalar')!.shape, []);

      const ra = readTensorF32(ea);
      assert.equal(ra.length, a.length);
      const ref = dtype === 'F32' ? (x: number) => x : dtype === 'F16' ? refF16 : refBf16;
      for (let i = 0; i < a.length; i++) assert.ok(Object.is(ra[i], Math.fround(ref(a[i]))), `${dtype} a[${i}]: ${a[i]} → ${ra[i]}`);
      assert.deepEqual(Array.from(readTensorF32(byName.get('b.weight')!)), Array.from(b));
      assert.equal(readTensorF32(byName.get('empty')!).length, 0);
      assert.deepEqual(Array.from(readTensorF32(byName.get('scalar')!)), [7]);
      if (dtype !== 'F32') {
        // Stored bits are exactly the independent RNE result.
        const bits = new Uint16Array(raw.buffer.slice(raw.byteOffset + ea.dataOffset, raw.byteOffset + ea.dataOffset + ea.byteLength));
        for (let i = 0; i < a.length; i++) {
          const want = ref(a[i]);
          const decoded = dtype === 'F16' ? f16ToF32(bits[i]) : bitsF32(bits[i] << 16);
          assert.ok(Object.is(decoded, want), `stored bits of a[${i}]`);
        }
      }
    });
  }

  test('reads a tensor beyond 4 GiB in a sparse file without reading the rest', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'sparse.safetensors');
    const big = 5_000_000_000;
    const header = {
      big: { dtype: 'U8', shape: [big], data_offsets: [0, big] },
      small: { dtype: 'F32', shape: [4], data_offsets: [big, big + 16] },
    };
    rawSafetensors(file, header, new Uint8Array(0));
    const hl = fs.statSync(file).size - 8;
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, new Uint8Array(new Float32Array([1.5, -2, 3, 4e-3]).buffer), 0, 16, 8 + hl + big);
    fs.closeSync(fd);
    const t0 = performance.now();
    const h = readSafetensorsHeader(file);
    const small = h.entries.find((e) => e.name === 'small')!;
    assert.equal(small.dataOffset, 8 + hl + big);
    assert.deepEqual(Array.from(readTensorF32(small)), [1.5, -2, 3, Math.fround(4e-3)]);
    assert.ok(performance.now() - t0 < 1000);
    throwsResidual(() => readTensorF32(h.entries.find((e) => e.name === 'big')!), 'unsupported', file, '"big"', 'U8');
  });

  test('bad files are refused naming the file and tensor', () => {
    const dir = tmpDir();
    const f = (n: string) => path.join(dir, n);
    const sixteen = new Uint8Array(16);

    fs.writeFileSync(f('short.safetensors'), new Uint8Array([1, 2, 3, 4, 5]));
    throwsResidual(() => readSafetensorsHeader(f('short.safetensors')), 'invalid', f('short.safetensors'), '5 bytes');

    rawSafetensors(f('longhdr.safetensors'), { x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, sixteen, 1000n);
    throwsResidual(() => readSafetensorsHeader(f('longhdr.safetensors')), 'invalid', f('longhdr.safetensors'), 'header length 1000');

    rawSafetensors(f('hugehdr.safetensors'), '{}', new Uint8Array(0), 200_000_000n);
    fs.truncateSync(f('hugehdr.safetensors'), 200_000_100); // sparse, so the length fits in the file
    throwsResidual(() => readSafetensorsHeader(f('hugehdr.safetensors')), 'invalid', f('hugehdr.safetensors'), '100000000');

    rawSafetensors(f('notjson.safetensors'), '{"x": {dtype: F32', sixteen);
    throwsResidual(() => readSafetensorsHeader(f('notjson.safetensors')), 'invalid', f('notjson.safetensors'), 'not valid JSON');

    rawSafetensors(f('array.safetensors'), '[1, 2]', sixteen);
    throwsResidual(() => readSafetensorsHeader(f('array.safetensors')), 'invalid', f('array.safetensors'), 'not a JSON object');

    rawSafetensors(f('past.safetensors'), { w: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, sixteen);
    throwsResidual(() => readSafetensorsHeader(f('past.safetensors')), 'invalid', f('past.safetensors'), '"w"', 'past the end');

    rawSafetensors(
      f('overlap.safetensors'),
      { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } },
      sixteen,
    );
    throwsResidual(() => readSafetensorsHeader(f('overlap.safetensors')), 'invalid', f('overlap.safetensors'), '"a"', '"b"', 'overlap');

    rawSafetensors(f('len.safetensors'), { w: { dtype: 'F16', shape: [3], data_offsets: [0, 8] } }, sixteen);
    throwsResidual(() => readSafetensorsHeader(f('len.safetensors')), 'invalid', f('len.safetensors'), '"w"', '[3]', '6');

    rawSafetensors(f('dtype.safetensors'), { w: { dtype: 'F33', shape: [4], data_offsets: [0, 16] } }, sixteen);
    throwsResidual(() => readSafetensorsHeader(f('dtype.safetensors')), 'invalid', f('dtype.safetensors'), '"w"', 'F33');

    rawSafetensors(f('shape.safetensors'), { w: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, sixteen);
    throwsResidual(() => readSafetensorsHeader(f('shape.safetensors')), 'invalid', f('shape.safetensors'), '"w"', 'shape');

    rawSafetensors(f('order.safetensors'), { w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, sixteen);
    throwsResidual(() => readSafetensorsHeader(f('order.safetensors')), 'invalid', f('order.safetensors'), '"w"', '[8, 4]');

    rawSafetensors(f('meta.safetensors'), { __metadata__: { n: 3 } }, new Uint8Array(0));
    throwsResidual(() => readSafetensorsHeader(f('meta.safetensors')), 'invalid', f('meta.safetensors'), '__metadata__');

    throwsResidual(() => readSafetensorsHeader(f('nope.safetensors')), 'missing', f('nope.safetensors'));

    // A gap is a warning, not a failure.
    rawSafetensors(f('gap.safetensors'), { w: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, sixteen);
    const g = readSafetensorsHeader(f('gap.safetensors'));
    assert.equal(g.warnings.length, 1);
    assert.match(g.warnings[0], /8 unused bytes before tensor "w"/);

    // The file shrinking after its header was read.
    writeSafetensors(f('shrink.safetensors'), [{ name: 'w', shape: [4], data: new Float32Array(4) }], 'F32');
    const e = readSafetensorsHeader(f('shrink.safetensors')).entries[0];
    fs.truncateSync(f('shrink.safetensors'), e.dataOffset + 4);
    throwsResidual(() => readTensorF32(e), 'invalid', f('shrink.safetensors'), '"w"', 'truncated');

    // The writer refuses data that does not match the shape.
    throwsResidual(
      () => writeSafetensors(f('w.safetensors'), [{ name: 'w', shape: [2, 2], data: new Float32Array(3) }], 'F32'),
      'invalid',
      f('w.safetensors'),
      '"w"',
    );
  });
});

describe('config.json', () => {
  const write = (obj: unknown): string => {
    const dir = tmpDir();
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, typeof obj === 'string' ? obj : JSON.stringify(obj));
    return file;
  };
  const base = { model_type: 'gpt2', n_layer: 2, n_embd: 8, n_head: 2, n_positions: 16, vocab_size: 11 };

  test('defaults and fields', () => {
    const file = write(base);
    const c = parseConfig(file);
    assert.deepEqual(c, {
      architecture: 'gpt2',
      nLayers: 2,
      dModel: 8,
      nHeads: 2,
      dHead: 4,
      dMlp: 32,
      nCtx: 16,
      vocabSize: 11,
      lnEps: 1e-5,
      act: 'gelu_new',
      name: path.basename(path.dirname(file)),
    });
    assert.deepEqual(parseConfig(path.dirname(file)), c, 'a folder means its config.json');
    const { n_positions: _drop, ...noPositions } = base;
    const c2 = parseConfig(
      write({ ...noPositions, n_ctx: 32, n_inner: 20, layer_norm_epsilon: 1e-6, activation_function: 'relu', _name_or_path: 'gpt2' }),
    );
    assert.equal(c2.nCtx, 32);
    assert.equal(c2.dMlp, 20);
    assert.equal(c2.lnEps, 1e-6);
    assert.equal(c2.act, 'relu');
    assert.equal(c2.name, 'gpt2');
    assert.equal(parseConfig(write({ ...base, n_inner: null })).dMlp, 32);
  });

  test('refusals', () => {
    const missingDir = tmpDir();
    throwsResidual(() => parseConfig(path.join(missingDir, 'config.json')), 'missing', path.join(missingDir, 'config.json'), 'not found');
    let f = write('{"model_type": "gpt2",');
    throwsResidual(() => parseConfig(f), 'invalid', f, 'not valid JSON');
    f = write({ ...base, model_type: 'mamba' });
    throwsResidual(() => parseConfig(f), 'unsupported', f, '"mamba"', '"gpt2"', '"llama"', '"gemma2"');
    // A supported family with GPT-2's keys: its own keys are required, by name.
    f = write({ ...base, model_type: 'llama' });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'num_hidden_layers');
    f = write({ ...base, model_type: undefined });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'model_type');
    f = write({ ...base, n_embd: 9 });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'n_embd 9', 'n_head 2');
    f = write({ ...base, n_layer: 2.5 });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'n_layer', '2.5');
    f = write({ ...base, vocab_size: -3 });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'vocab_size', '-3');
    f = write({ ...base, n_head: '2' });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'n_head');
    f = write({ ...base, n_inner: 0 });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'n_inner');
    f = write({ ...base, n_layer: undefined });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'n_layer', 'missing');
    f = write({ ...base, activation_function: 'swish' });
    throwsResidual(() => parseConfig(f), 'unsupported', f, 'swish', 'gelu_new');
    f = write({ ...base, layer_norm_epsilon: 0 });
    throwsResidual(() => parseConfig(f), 'invalid', f, 'layer_norm_epsilon');
    f = write({ ...base, scale_attn_by_inverse_layer_idx: true });
    throwsResidual(() => parseConfig(f), 'unsupported', f, 'scale_attn_by_inverse_layer_idx');
  });
});

describe('openCheckpoint', () => {
  test('single-file F32, tied unembedding, deterministic', () => {
    const dir = tmpDir();
    writeRandomGpt2(dir, SMALL, { seed: 7, tokenizerJson: TOKENIZER });
    const ck = openCheckpoint(dir);
    assert.equal(ck.dir, dir);
    assert.equal(ck.config.nLayers, 2);
    assert.equal(ck.config.dHead, 4);
    assert.equal(ck.config.name, 'random-gpt2-seed7');
    assert.deepEqual(ck.files, [path.join(dir, 'model.safetensors')]);
    assert.equal(ck.tokenizerPath, path.join(dir, 'tokenizer.json'));
    assert.equal(ck.tiedUnembed, true);
    assert.equal(ck.dtype, 'F32');
    assert.equal(ck.tensors.size, 2 + 12 * 2 + 2, 'masked_bias buffers are not weights');
    assert.ok(!ck.tensors.has('lm_head.weight'));
    assert.ok(!ck.tensors.has('h.0.attn.masked_bias'));
    assert.deepEqual(ck.tensors.get('h.1.attn.c_attn.weight')!.shape, [8, 24]);
    assert.deepEqual(ck.tensors.get('h.1.mlp.c_proj.weight')!.shape, [32, 8]);
    assert.equal(ck.tensors.get('wte.weight')!.name, 'transformer.wte.weight');
    const params = 11 * 8 + 16 * 8 + 2 * (4 * 8 + 8 * 24 + 24 + 64 + 8 + 8 * 32 + 32 + 32 * 8 + 8) + 16;
    assert.equal(ck.totalBytes, params * 4);
    assert.deepEqual(ck.warnings, []);
    const ln = readTensorF32(ck.tensors.get('h.0.ln_1.weight')!);
    const bias = readTensorF32(ck.tensors.get('h.0.attn.c_attn.bias')!);
    const mean = ln.reduce((a, b) => a + b, 0) / ln.length;
    assert.ok(Math.abs(mean - 1) < 0.2 && ln.some((v) => v !== 1), 'LayerNorm weights near 1, not exactly 1');
    assert.ok(bias.every((v) => v !== 0 && Math.abs(v) < 0.1), 'biases small and nonzero');

    const again = tmpDir();
    writeRandomGpt2(again, SMALL, { seed: 7, tokenizerJson: TOKENIZER });
    assert.ok(sameBytes(path.join(dir, 'model.safetensors'), path.join(again, 'model.safetensors')), 'same seed, same bytes');
    const other = tmpDir();
    writeRandomGpt2(other, SMALL, { seed: 8, tokenizerJson: TOKENIZER });
    assert.ok(!sameBytes(path.join(dir, 'model.safetensors'), path.join(other, 'model.safetensors')), 'other seed, other bytes');
  });

  for (const [dtype, shards, ref] of [
    ['F16', 3, refF16],
    ['BF16', 1, refBf16],
    ['F32', 4, (x: number) => x],
  ] as [SafeDtype, number, (x: number) => number][]) {
    test(`${dtype} in ${shards} shard(s), untied: values are the F32 weights rounded to nearest even`, () => {
      const f32Dir = tmpDir();
      writeRandomGpt2(f32Dir, SMALL, { seed: 3, tokenizerJson: TOKENIZER, tiedUnembed: false });
      const dir = tmpDir();
      writeRandomGpt2(dir, SMALL, { seed: 3, tokenizerJson: TOKENIZER, tiedUnembed: false, dtype, shards });
      const ck = openCheckpoint(dir);
      const ref32 = openCheckpoint(f32Dir);
      assert.equal(ck.dtype, dtype);
      assert.equal(ck.tiedUnembed, false);
      assert.equal(ck.files.length, shards);
      assert.equal(ck.tensors.size, 2 + 12 * 2 + 2 + 1);
      assert.equal(ck.totalBytes, (ref32.totalBytes / 4) * (dtype === 'F32' ? 4 : 2));
      if (shards > 1) {
        assert.deepEqual(
          ck.files.map((f) => path.basename(f)),
          Array.from({ length: shards }, (_, i) => `model-0000${i + 1}-of-0000${shards}.safetensors`),
        );
        const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
        for (const [name, e] of ck.tensors) assert.equal(path.basename(e.file), index.weight_map[e.name], name);
        assert.equal(new Set([...ck.tensors.values()].map((e) => e.file)).size, shards);
      }
      for (const [name, e] of ck.tensors) {
        const got = readTensorF32(e);
        const want = readTensorF32(ref32.tensors.get(name)!);
        assert.equal(got.length, want.length);
        for (let i = 0; i < got.length; i++) assert.ok(Object.is(got[i], Math.fround(ref(want[i]))), `${name}[${i}]`);
      }
    });
  }

  test('bad folders are refused with the file, the tensor and a fix', () => {
    const make = (opts: Partial<Parameters<typeof writeRandomGpt2>[2]> = {}): string => {
      const d = tmpDir();
      writeRandomGpt2(d, SMALL, { seed: 1, tokenizerJson: TOKENIZER, ...opts });
      return d;
    };

    // Folder missing, or a file.
    const gone = path.join(tmpDir(), 'no-such-model');
    throwsResidual(() => openCheckpoint(gone), 'missing', gone, 'not found');
    let d = make();
    throwsResidual(() => openCheckpoint(path.join(d, 'config.json')), 'invalid', path.join(d, 'config.json'), 'not a model folder');

    // Pickle only.
    d = tmpDir();
    fs.writeFileSync(path.join(d, 'config.json'), '{}');
    fs.writeFileSync(path.join(d, 'pytorch_model.bin'), 'PK\x03\x04 pretend pickle');
    throwsResidual(() => openCheckpoint(d), 'unsupported', d, 'pytorch_model.bin', 'pickle', 'arbitrary code', 'safetensors');

    // No weights at all.
    d = tmpDir();
    throwsResidual(() => openCheckpoint(d), 'missing', d, 'model.safetensors');

    // config.json missing / broken.
    d = make();
    fs.rmSync(path.join(d, 'config.json'));
    throwsResidual(() => openCheckpoint(d), 'missing', path.join(d, 'config.json'), 'config.json');
    d = make();
    fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": "gpt2", "n_layer": ');
    throwsResidual(() => openCheckpoint(d), 'invalid', path.join(d, 'config.json'), 'not valid JSON');

    // tokenizer.json missing.
    d = make();
    fs.rmSync(path.join(d, 'tokenizer.json'));
    throwsResidual(() => openCheckpoint(d), 'missing', path.join(d, 'tokenizer.json'), 'tokenizer.json');

    // Shape contradicting config.json.
    d = make();
    const cfgFile = path.join(d, 'config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, n_positions: 32 }));
    throwsResidual(() => openCheckpoint(d), 'invalid', path.join(d, 'model.safetensors'), 'transformer.wpe.weight', '[16, 8]', '[32, 8]', 'config.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, n_inner: 16 }));
    throwsResidual(() => openCheckpoint(d), 'invalid', path.join(d, 'model.safetensors'), 'transformer.h.0.mlp.c_fc.weight', '[8, 32]', '[8, 16]');
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, n_layer: 1 }));
    throwsResidual(() => openCheckpoint(d), 'invalid', path.join(d, 'model.safetensors'), 'transformer.h.1.', 'n_layer 1');

    // Missing tensor (leaves a gap in the data section: still a valid file).
    d = make();
    const model = path.join(d, 'model.safetensors');
    rewriteHeader(model, (h) => delete h['transformer.ln_f.bias']);
    throwsResidual(() => openCheckpoint(d), 'invalid', model, 'ln_f.bias', 'missing');

    // Unsupported dtype for a weight (I32 has the same size as F32, so the file itself is valid).
    d = make();
    rewriteHeader(path.join(d, 'model.safetensors'), (h) => (h['transformer.h.0.ln_1.weight'].dtype = 'I32'));
    throwsResidual(() => openCheckpoint(d), 'unsupported', path.join(d, 'model.safetensors'), 'transformer.h.0.ln_1.weight', 'I32', 'F32');

    // A corrupt weights file surfaces the reader's message.
    d = make();
    fs.truncateSync(path.join(d, 'model.safetensors'), 1000);
    throwsResidual(() => openCheckpoint(d), 'invalid', path.join(d, 'model.safetensors'), 'past the end');

    // Shards: escaping paths, missing shard, index listing a tensor its shard lacks, broken index.
    d = make({ shards: 2 });
    const indexFile = path.join(d, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
    for (const evil of ['../model-00001-of-00002.safetensors', '/etc/passwd', 'sub/../../x.safetensors']) {
      fs.writeFileSync(indexFile, JSON.stringify({ ...index, weight_map: { ...index.weight_map, 'transformer.wte.weight': evil } }));
      throwsResidual(() => openCheckpoint(d), 'invalid', indexFile, 'transformer.wte.weight', evil, 'outside the model folder');
    }
    fs.writeFileSync(indexFile, JSON.stringify({ ...index, weight_map: { ...index.weight_map, 'transformer.wte.weight': 'model-00009-of-00009.safetensors' } }));
    throwsResidual(() => openCheckpoint(d), 'missing', indexFile, 'model-00009-of-00009.safetensors', 'transformer.wte.weight');
    fs.writeFileSync(indexFile, JSON.stringify({ ...index, weight_map: { ...index.weight_map, 'transformer.wte.weight': 'model-00002-of-00002.safetensors' } }));
    throwsResidual(() => openCheckpoint(d), 'invalid', path.join(d, 'model-00002-of-00002.safetensors'), 'transformer.wte.weight', 'index');
    fs.writeFileSync(indexFile, JSON.stringify({ metadata: {} }));
    throwsResidual(() => openCheckpoint(d), 'invalid', indexFile, 'weight_map');
    fs.writeFileSync(indexFile, JSON.stringify(index));
    fs.rmSync(path.join(d, 'model-00002-of-00002.safetensors'));
    throwsResidual(() => openCheckpoint(d), 'missing', indexFile, 'model-00002-of-00002.safetensors');
  });

  test('inputs that are not regular files are named before anything opens them (a FIFO never hangs a read)', () => {
    const make = (opts: Partial<Parameters<typeof writeRandomGpt2>[2]> = {}): string => {
      const d = tmpDir();
      writeRandomGpt2(d, SMALL, { seed: 1, tokenizerJson: TOKENIZER, ...opts });
      return d;
    };
    const replace = (d: string, name: string, how: 'fifo' | 'folder' | 'dangling') => {
      const p = path.join(d, name);
      fs.rmSync(p, { force: true });
      if (how === 'fifo') execFileSync('mkfifo', [p]);
      else if (how === 'folder') fs.mkdirSync(p);
      else fs.symlinkSync('nowhere', p);
      return p;
    };
    for (const name of ['model.safetensors', 'config.json', 'tokenizer.json']) {
      let d = make();
      throwsResidual(() => openCheckpoint(d), 'invalid', replace(d, name, 'fifo'), `${name} is a FIFO (named pipe), not a regular file`);
      d = make();
      throwsResidual(() => openCheckpoint(d), 'invalid', replace(d, name, 'folder'), `${name} is a folder, not a regular file`);
      d = make();
      throwsResidual(() => openCheckpoint(d), 'missing', replace(d, name, 'dangling'), `${name} is a symbolic link to a file that does not exist (nowhere)`);
    }
    let d = make({ shards: 2 });
    throwsResidual(() => openCheckpoint(d), 'invalid', replace(d, 'model.safetensors.index.json', 'fifo'), 'is a FIFO');
    d = make({ shards: 2 });
    throwsResidual(() => openCheckpoint(d), 'invalid', replace(d, 'model-00001-of-00002.safetensors', 'folder'), 'shard "model-00001-of-00002.safetensors" is a folder');
    const pipe = path.join(tmpDir(), 'pipe');
    execFileSync('mkfifo', [pipe]);
    throwsResidual(() => openCheckpoint(pipe), 'invalid', pipe, 'model folder is a FIFO (named pipe), not a folder');
    throwsResidual(() => readSafetensorsHeader(pipe), 'invalid', pipe, 'is a FIFO');
    throwsResidual(() => parseConfig(pipe), 'invalid', pipe, 'is a FIFO');
  });
});
