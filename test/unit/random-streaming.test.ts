/**
 * The streamed random writers: the default sampler reproduces `gaussian(mulberry32(seed))` across chunk and tensor
 * boundaries, so streamed checkpoints and transcoders are byte-identical to ones built in memory; the fast 'table'
 * sampler is deterministic and normal to its moments; streamed files load (Model.load, loadTranscoders).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { expectedFamilyShapes, familyPrefixes, parseFamilyConfig } from '../../src/engine/checkpoint/families';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { gaussian, mulberry32, NormalStream, STREAM_CHUNK, writeRandomFamily, type RandomFamilyShape } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { writeSafetensors } from '../../src/engine/checkpoint/write';
import { loadTranscoders, readVector } from '../../src/engine/circuits/transcoders';
import {
  randomTranscoderWeights,
  writeCircuitTracerTranscoders,
  writeRandomTranscoders,
  writeSaeLensTranscoders,
  type RandomTranscoderSetOptions,
} from '../../src/engine/circuits/transcoders-write';
import { Model } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-stream-'));
before(() => silenceOrt());
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** Every file under `dir`, relative path → bytes. */
function files(dir: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(dir, p), readBytes(p));
    }
  };
  walk(dir);
  return out;
}

const readBytes = (file: string): Uint8Array => new Uint8Array(fs.readFileSync(file));
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

function assertSameFiles(a: string, b: string): void {
  const fa = files(a);
  const fb = files(b);
  assert.deepEqual([...fa.keys()].sort(), [...fb.keys()].sort());
  for (const [name, bytes] of fa) assert.ok(sameBytes(bytes, fb.get(name)!), `${name} differs`);
}

// Llama with grouped-query attention and an untied unembedding; the [vocab, hidden] embedding (70000 × 16) spans two
// chunks, and the odd intermediate size puts Box–Muller's spare sample across tensor boundaries.
const SHAPE: RandomFamilyShape = {
  num_hidden_layers: 2,
  hidden_size: 16,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  intermediate_size: 7,
  max_position_embeddings: 64,
  vocab_size: 70000,
  tie_word_embeddings: false,
};

describe('normal samples', () => {
  it("'box-muller' is gaussian(mulberry32(seed)), whatever the fill sizes", () => {
    const normal = gaussian(mulberry32(42));
    const expected = Float32Array.from({ length: 1001 }, () => 0.5 + 2 * normal());
    const stream = new NormalStream(42);
    const got = new Float32Array(1001);
    for (const [a, b] of [[0, 3], [3, 3], [3, 10], [10, 501], [501, 1001]]) stream.fill(got.subarray(a, b), 0.5, 2);
    assert.deepEqual(got, expected);
  });

  it("'table' is deterministic, differs by seed, and has the normal's moments", () => {
    const draw = (seed: number, n: number) => {
      const a = new Float32Array(n);
      new NormalStream(seed, 'table').fill(a, 0, 1);
      return a;
    };
    assert.deepEqual(draw(7, 1000), draw(7, 1000));
    assert.notDeepEqual(draw(7, 1000), draw(8, 1000));
    const n = 1 << 21;
    const z = draw(3, n);
    let m1 = 0;
    let m2 = 0;
    let m4 = 0;
    let beyond2 = 0;
    for (const x of z) {
      m1 += x;
      m2 += x * x;
      m4 += x ** 4;
      if (Math.abs(x) > 2) beyond2++;
      assert.ok(Math.abs(x) < 4);
    }
    // Sampling error at 2M samples: mean ±0.0007, variance ±0.001, fourth moment ±0.007, tail ±0.0001 (1σ).
    assert.ok(Math.abs(m1 / n) < 0.004, `mean ${m1 / n}`);
    assert.ok(Math.abs(m2 / n - 1) < 0.005, `variance ${m2 / n}`);
    assert.ok(Math.abs(m4 / n - 3) < 0.04, `fourth moment ${m4 / n}`);
    assert.ok(Math.abs(beyond2 / n - 0.0455) < 0.001, `P(|z| > 2) ${beyond2 / n}`);
  });
});

describe('streamed random checkpoints', () => {
  it('writeRandomFamily (streamed, BF16) is byte-identical to the same draws written in memory', () => {
    const dir = path.join(root, 'llama');
    writeRandomFamily(dir, 'llama', SHAPE, { seed: 5, tokenizerJson: gpt2TokenizerJSON(), dtype: 'BF16', std: 0.3 });
    assert.ok(SHAPE.vocab_size * SHAPE.hidden_size > STREAM_CHUNK);
    // The in-memory reference: every tensor drawn in the order expectedFamilyShapes gives, then the unembedding.
    const cfg = parseFamilyConfig({ model_type: 'llama', ...SHAPE }, 'llama', 'config.json');
    const normal = gaussian(mulberry32(5));
    const gains = /(layernorm|norm)\.weight$/;
    const tensors = [...expectedFamilyShapes(cfg)].map(([name, shape]) => {
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      for (let i = 0; i < data.length; i++) data[i] = (gains.test(name) ? 1 : 0) + (gains.test(name) ? 0.1 : 0.3) * normal();
      return { name: familyPrefixes(cfg)[0] + name, shape, data };
    });
    const unembed = new Float32Array(SHAPE.vocab_size * SHAPE.hidden_size);
    for (let i = 0; i < unembed.length; i++) unembed[i] = 0.3 * normal();
    tensors.push({ name: 'lm_head.weight', shape: [SHAPE.vocab_size, SHAPE.hidden_size], data: unembed });
    const ref = path.join(root, 'llama-ref.safetensors');
    writeSafetensors(ref, tensors, 'BF16', { format: 'pt' });
    assert.ok(sameBytes(readBytes(path.join(dir, 'model.safetensors')), readBytes(ref)));
  });

  it('shards hold the same tensors as one file, and a table-sampled BF16 checkpoint loads and runs', async () => {
    const one = path.join(root, 'gemma-one');
    const three = path.join(root, 'gemma-three');
    const shape: RandomFamilyShape = { ...SHAPE, head_dim: 8, vocab_size: 50257, tie_word_embeddings: true, query_pre_attn_scalar: 8, attn_logit_softcapping: 50, final_logit_softcapping: 30 };
    const opts = { seed: 9, tokenizerJson: gpt2TokenizerJSON(), dtype: 'BF16' as const, sampler: 'table' as const };
    let calls = 0;
    let last = 0;
    writeRandomFamily(one, 'gemma2', shape, { ...opts, progress: (_, f) => ((last = f), calls++) });
    assert.ok(calls > 1 && last === 1, `progress: ${calls} calls, last ${last}`);
    writeRandomFamily(three, 'gemma2', shape, { ...opts, shards: 3 });
    assert.ok(fs.existsSync(path.join(three, 'model-00003-of-00003.safetensors')));
    const a = openCheckpoint(one);
    const b = openCheckpoint(three);
    assert.deepEqual([...a.tensors.keys()].sort(), [...b.tensors.keys()].sort());
    for (const [name, e] of a.tensors) assert.deepEqual(readTensorF32(b.tensors.get(name)!), readTensorF32(e), name);
    const model = await Model.load(three, { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
    try {
      const run = await model.run({ ids: [1, 50256, 7, 1000], hooks: ['logits'] });
      const logits = run.activations.get('logits')!;
      assert.deepEqual(logits.dims, [1, 4, 50257]);
      assert.ok(logits.data.every(Number.isFinite));
    } finally {
      await model.dispose();
    }
  });
});

describe('streamed random transcoders', () => {
  // 64 × 20000 = 1.28M values: the encoder spans two chunks and two blocks of its transpose.
  const [L, D, F] = [2, 64, 20000];
  const cfg = { nLayers: L, dModel: D } as ModelConfig;
  const cases: [string, Omit<RandomTranscoderSetOptions, 'seed'>][] = [
    ['saelens-topk-f32', { layout: 'saelens', activation: 'topk', k: 8 }],
    ['saelens-jumprelu-bf16', { layout: 'saelens', activation: 'jumprelu', dtype: 'BF16', input: 'mlp.hook_in' }],
    ['circuit-tracer-topk-bf16', { layout: 'circuit-tracer', activation: 'topk', k: 8, dtype: 'BF16', input: 'mlp.hook_in' }],
    ['circuit-tracer-jumprelu-f16-table', { layout: 'circuit-tracer', activation: 'jumprelu', dtype: 'F16', sampler: 'table' }],
  ];
  for (const [name, o] of cases) {
    it(`${name}: byte-identical to randomTranscoderWeights + the in-memory writer, and loads`, () => {
      const streamed = path.join(root, `tc-${name}`);
      const inMemory = path.join(root, `tc-${name}-ref`);
      const opts = { ...o, seed: 11, bEncMean: -0.1 };
      writeRandomTranscoders(streamed, L, D, F, opts);
      const weights = randomTranscoderWeights(L, D, F, opts);
      (o.layout === 'saelens' ? writeSaeLensTranscoders : writeCircuitTracerTranscoders)(inMemory, weights, opts);
      assertSameFiles(streamed, inMemory);
      const set = loadTranscoders(streamed, cfg);
      assert.equal(set.format, o.layout);
      assert.equal(set.dSae, F);
      assert.deepEqual(set.layers[1].wEnc.shape, o.layout === 'saelens' ? [D, F] : [F, D]);
      assert.equal(set.layers[1].wEnc.dtype, o.dtype ?? 'F32');
      assert.equal(set.layers[1].activation.kind, o.activation);
      if (!o.dtype) assert.deepEqual(readVector(set.layers[1].bEnc), weights[1].bEnc_F);
    });
  }
});
