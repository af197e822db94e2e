/**
 * Memory estimates from the header, the refusal before loading, and half-precision weights (the float16 cache file).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { halfPrecisionTensors } from '../../src/engine/checkpoint/half-copy';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily, writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readSafetensorsHeader, readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { writeSafetensors } from '../../src/engine/checkpoint/write';
import { ResidualError } from '../../src/engine/errors';
import { estimateMemory, memoryAdvice } from '../../src/engine/memory';
import { Model } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { f32ArrayToF16, f16ArrayToF32 } from '../../src/engine/checkpoint/half';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-mem-'));
before(() => silenceOrt());
after(() => fs.rmSync(root, { recursive: true, force: true }));

describe('memory estimate', () => {
  it('counts the parameters from the header and compares with what is available', () => {
    const dir = path.join(root, 'llama');
    writeRandomFamily(dir, 'llama', { num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 48, max_position_embeddings: 64, vocab_size: 1000, tie_word_embeddings: false }, { seed: 1, tokenizerJson: gpt2TokenizerJSON(), dtype: 'BF16' });
    const ck = openCheckpoint(dir);
    // embed + lm_head + per layer (2 norms, q, k, v, o, gate, up, down) + final norm
    const perLayer = 32 + 32 + 32 * 32 + 2 * (16 * 32) + 32 * 32 + 3 * 48 * 32;
    const params = 2 * 1000 * 32 + 2 * perLayer + 32;
    const e = estimateMemory(ck, { available: 1e12 });
    assert.equal(e.params, params);
    assert.equal(e.storedBytes, params * 2);
    assert.equal(e.gpuBytes.float16, params * 2);
    assert.ok(e.fitsCpu);
    const tight = estimateMemory(ck, { available: 1e6 });
    assert.equal(tight.fitsCpu, false);
    const msg = memoryAdvice({ ...tight, params: 2.6e9, cpuBytes: 16.3e9, gpuBytes: { float32: 10.4e9, float16: 5.2e9 }, availableBytes: 7.9e9 });
    assert.match(msg, /2\.60B parameters\) needs about 16\.3 GB of memory on the CPU and 7\.9 GB is available/);
    assert.match(msg, /about 10\.4 GB of GPU memory, or 5\.2 GB in half precision/);
  });

  it('Model.load with memoryCheck refuses before reading any weight, naming the numbers; with room it loads', async () => {
    const dir = path.join(root, 'gpt2');
    writeRandomGpt2(dir, { nLayers: 1, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257 }, { seed: 2, tokenizerJson: gpt2TokenizerJSON() });
    await assert.rejects(Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'c'), memoryCheck: true, availableMemory: 100e6 }), (e: unknown) => {
      assert.ok(e instanceof ResidualError);
      assert.equal(e.code, 'memory');
      assert.match(e.message, /needs about \d+ MB of memory on the CPU and 100 MB is available/);
      return true;
    });
    const m = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'c'), memoryCheck: true, availableMemory: 100e9 });
    assert.equal(m.info.precision, 'float32');
    await m.dispose();
  });

  it('the check is on by default; memoryCheck: false is the override; the message names the caller\'s ways out', async () => {
    const dir = path.join(root, 'gpt2-default');
    writeRandomGpt2(dir, { nLayers: 1, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257 }, { seed: 2, tokenizerJson: gpt2TokenizerJSON() });
    await assert.rejects(Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'c'), availableMemory: 100e6 }), (e: unknown) => {
      assert.ok(e instanceof ResidualError && e.code === 'memory');
      assert.match(e.message, /in half precision \(residual\.precision "float16"\);.*or load anyway\.$/);
      return true;
    });
    await assert.rejects(
      Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'c'), availableMemory: 100e6, memoryAdvice: { precision: null, override: 'pass --skip-memory-check to load anyway' } }),
      /in half precision; on the CPU.*or pass --skip-memory-check to load anyway\.$/,
    );
    const m = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'c'), availableMemory: 100e6, memoryCheck: false });
    await m.dispose();
  });
});

describe('half-precision weights', () => {
  it('converts F32 and BF16 tensors once into a cached F16 file, keeps F16 ones in place, reuses the cache', () => {
    const dir = path.join(root, 'half');
    writeRandomGpt2(dir, { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 300 }, { seed: 3, tokenizerJson: gpt2TokenizerJSON(), tiedUnembed: false });
    const ck = openCheckpoint(dir);
    const cache = path.join(root, 'halfcache');
    const logs: string[] = [];
    const half = halfPrecisionTensors(ck.tensors, cache, (m) => logs.push(m));
    assert.equal(logs.length, 1);
    for (const [name, e] of half) {
      assert.equal(e.dtype, 'F16', name);
      const want = f16ArrayToF32(f32ArrayToF16(readTensorF32(ck.tensors.get(name)!)));
      assert.deepEqual(readTensorF32(e), want, name);
    }
    halfPrecisionTensors(ck.tensors, cache, (m) => logs.push(m));
    assert.equal(logs.length, 1, 'second call reuses the cache');
    assert.equal(fs.readdirSync(cache).filter((f) => f.endsWith('.safetensors')).length, 1);
  });

  it('refuses a weight beyond float16 range with its name', () => {
    const f = path.join(root, 'big.safetensors');
    writeSafetensors(f, [{ name: 'w', shape: [2], data: Float32Array.of(1, 1e6) }], 'F32');
    const entry = readSafetensorsHeader(f).entries[0];
    assert.throws(() => halfPrecisionTensors(new Map([['w', entry]]), path.join(root, 'hc2')), /weight w holds 1000000, beyond float16's range/);
    assert.equal(fs.readdirSync(path.join(root, 'hc2')).length, 0, 'no partial cache file left');
  });
});

describe('weights file removed after loading', () => {
  it('a run says the embeddings cannot be read and what to do; nothing crashes', async () => {
    const dir = path.join(root, 'gone');
    writeRandomGpt2(dir, { nLayers: 1, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257 }, { seed: 5, tokenizerJson: gpt2TokenizerJSON() });
    const m = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'c-gone') });
    assert.equal((await m.run({ ids: [1, 2], hooks: ['logits'] })).activations.get('logits')!.dims[1], 2);
    fs.renameSync(path.join(dir, 'model.safetensors'), path.join(dir, 'moved.safetensors'));
    await assert.rejects(m.run({ ids: [1, 2], hooks: ['logits'] }), /weights file was moved or deleted after the model was loaded — select the model again/);
    await m.dispose();
  });
});
