/**
 * Oracle tests for the rotary families (Llama, Qwen2, Qwen3, Gemma-2, GPT-NeoX/Pythia): every hook point of the
 * ONNX graph against the independent plain-loop reference (decoder-reference.ts) on tiny random checkpoints —
 * grouped-query attention, rope scaling, biases, QK-norm, Gemma's sandwich norms, soft-caps and sliding windows,
 * parallel and sequential NeoX blocks with partial rotary, BF16 and sharded files — plus steering, the KV cache
 * (rotary positions continue after the cache) and the logit lens.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily, type RandomFamilyShape } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import type { Tensor32 } from '../../src/engine/dims';
import type { HookName } from '../../src/engine/hooks';
import { Model, type SteerAdd } from '../../src/engine/model';
import { referenceDecoderForward } from '../../src/engine/reference/decoder';
import type { ReferenceSteer } from '../../src/engine/reference/gpt2';
import { assertMatches, closeness } from '../helpers/closeness';
import { FAMILY_BASE, FAMILY_CASES, type FamilyCase } from '../helpers/family-cases';
import { modelFolders } from '../helpers/model-folders';

const folders = modelFolders('residual-families-');
const { root, cacheDir, loaded } = folders;

async function fixture(c: FamilyCase, tag = '') {
  const dir = path.join(root, `${c.type}-${FAMILY_CASES.indexOf(c)}${tag}`);
  writeRandomFamily(dir, c.type, { ...FAMILY_BASE, ...c.shape } as RandomFamilyShape, { seed: FAMILY_CASES.indexOf(c) * 7919 + 13, tokenizerJson: folders.tokenizerJson, std: 0.3, ...c.opts });
  const model = await Model.load(dir, { providers: ['cpu'], cacheDir });
  loaded.push(model);
  const ckpt = openCheckpoint(dir);
  const weights = new Map([...ckpt.tensors].map(([k, e]) => [k, readTensorF32(e)]));
  return { model, weights, cfg: ckpt.config, ckpt };
}

const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 198, 50256];

describe('rotary families: ONNX graph vs plain-loop reference', () => {
  for (const c of FAMILY_CASES) {
    it(`matches logits and every hook point: ${c.name}`, async () => {
      const { model, weights, cfg } = await fixture(c);
      const hooks = [...model.hooks];
      assert.ok(hooks.length >= 2 + cfg.nLayers * 19, `${hooks.length} hook points`);
      const got = await model.run({ ids: IDS, hooks });
      const want = referenceDecoderForward(cfg, weights, IDS);
      for (const h of hooks) assertMatches(h, got.activations.get(h), want.get(h));
      const worst = Math.max(...hooks.map((h) => closeness(got.activations.get(h)!.data, want.get(h)!.data)));
      console.log(`  ${c.type}: ${hooks.length} hook points, worst relative error ${worst.toExponential(1)}`);
      // Everything the reference computes is offered by the graph, and vice versa.
      assert.deepEqual([...want.keys()].sort(), [...hooks].sort());
    });
  }

  it('the sliding window really masks (Gemma-2 layer 0 attends to 3 keys, layer 1 to all earlier ones)', async () => {
    const { model } = await fixture(FAMILY_CASES[4], '-mask');
    const r = await model.run({ ids: IDS, hooks: ['blocks.0.attn.hook_pattern', 'blocks.1.attn.hook_pattern'] });
    const P = IDS.length;
    const nonzero = (t: Tensor32, q: number) => Array.from(t.data.subarray(q * P, (q + 1) * P)).filter((x) => x > 0).length;
    assert.equal(nonzero(r.activations.get('blocks.0.attn.hook_pattern')!, P - 1), 3);
    assert.equal(nonzero(r.activations.get('blocks.1.attn.hook_pattern')!, P - 1), P);
  });

  it('refuses hook points the family does not have, saying why', async () => {
    const { model } = await fixture(FAMILY_CASES[0], '-hooks');
    await assert.rejects(model.run({ ids: IDS, hooks: ['hook_pos_embed'] }), /no such hook point \(positions are rotations/);
    await assert.rejects(model.run({ ids: IDS, hooks: ['blocks.0.ln1_post.hook_scale' as HookName] }), /only Gemma-2/);
  });
});

describe('rotary families: steering, KV cache, logit lens', () => {
  for (const c of [FAMILY_CASES[0], FAMILY_CASES[4], FAMILY_CASES[5], FAMILY_CASES[7]]) {
    it(`steering at three points matches the reference: ${c.type}`, async () => {
      const { model, weights, cfg } = await fixture(c, '-steer');
      const D = cfg.dModel;
      const P = IDS.length;
      const vec = (seed: number, n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 31 + i * 1.7) * 2);
      const steer: SteerAdd[] = [
        { layer: 0, point: 'hook_resid_pre', add: vec(1, D) },
        { layer: 1, point: 'hook_resid_mid', add: vec(2, P * D) },
        { layer: 1, point: 'hook_resid_post', add: vec(3, D) },
      ];
      const refSteer: ReferenceSteer = new Map(steer.map((s) => [`${s.layer}:${s.point}`, s.add]));
      const hooks = [...model.hooks];
      const got = await model.run({ ids: IDS, hooks, steer });
      const want = referenceDecoderForward(cfg, weights, IDS, refSteer);
      for (const h of hooks) assertMatches(h, got.activations.get(h), want.get(h));
      const base = await model.run({ ids: IDS, hooks: ['logits'] });
      assert.ok(closeness(base.activations.get('logits')!.data, got.activations.get('logits')!.data) > 1e-3);
    });

    it(`the KV cache continues positions (and windows) exactly: ${c.type}`, async () => {
      const { model, cfg } = await fixture(c, '-cache');
      const V = cfg.vocabSize;
      const full = await model.run({ ids: IDS, hooks: ['logits'] });
      const split = 5;
      const first = await model.run({ ids: IDS.slice(0, split), hooks: ['logits'], wantCache: true });
      assert.equal(first.cache!.keys[0].dims[1], cfg.nKvHeads ?? cfg.nHeads, 'the cache holds the key/value heads');
      const rest = await model.run({ ids: IDS.slice(split), hooks: ['logits'], past: first.cache });
      const worst = closeness(rest.activations.get('logits')!.data, full.activations.get('logits')!.data.subarray(split * V));
      assert.ok(worst < 1e-4, `cached continuation differs from the full run by ${worst}`);
    });

    it(`the logit lens reads the last residual like the model's own head (final norm, soft-cap): ${c.type}`, async () => {
      const { model, cfg } = await fixture(c, '-lens');
      const L = cfg.nLayers;
      const r = await model.run({ ids: IDS, hooks: ['logits', `blocks.${L - 1}.hook_resid_post` as HookName] });
      const logits = r.activations.get('logits')!;
      const P = IDS.length;
      const V = cfg.vocabSize;
      const lens = await model.lens({ resid_ND: r.activations.get(`blocks.${L - 1}.hook_resid_post` as HookName)!.data, targets: IDS, k: 3 });
      for (let p = 0; p < P; p++) {
        const row = logits.data.subarray(p * V, (p + 1) * V);
        let max = -Infinity;
        let arg = 0;
        for (let t = 0; t < V; t++) if (row[t] > max) (max = row[t]), (arg = t);
        let z = 0;
        for (let t = 0; t < V; t++) z += Math.exp(row[t] - max);
        assert.equal(lens.topIds_NK[p * 3], arg, `position ${p}: lens top-1`);
        const want = Math.exp(row[IDS[p]] - max) / z;
        assert.ok(Math.abs(lens.targetProb_N[p] - want) <= 1e-5 + 1e-3 * want, `position ${p}: target prob ${lens.targetProb_N[p]} vs ${want}`);
      }
    });
  }
});

describe('rotary families through the rest of the engine', () => {
  it('analysis (with the tokenizer\'s BOS), depth statistics, patching, steering and cached generation run on Llama with a BOS-adding tokenizer', async () => {
    // A Llama-3-style tokenizer.json: the post-processor puts BOS in front.
    const dir = path.join(root, 'llama-bos');
    const EOT = 50256;
    const tok = {
      ...(folders.tokenizerJson as Record<string, unknown>),
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
        pair: [],
        special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [EOT], tokens: ['<|endoftext|>'] } },
      },
    };
    writeRandomFamily(dir, 'llama', { ...FAMILY_BASE, num_key_value_heads: 2 }, { seed: 99, tokenizerJson: tok, std: 0.3 });
    const model = await Model.load(dir, { providers: ['cpu'], cacheDir });
    loaded.push(model);
    const { analyze } = await import('../../src/engine/analysis');
    const { activationPatching } = await import('../../src/engine/layers/patching');
    const { nextTokenEffect, compareGeneration } = await import('../../src/engine/steering/steer');

    const text = 'The cat sat on the';
    const a = await analyze(model, text, { perLayer: true });
    assert.equal(a.tokens[0].id, EOT, 'BOS first');
    assert.deepEqual([a.tokens[0].start, a.tokens[0].end], [0, 0]);
    assert.equal(a.tokens.length, 1 + model.tokenizer.encode(text).ids.length);
    const run = await model.run({ ids: a.tokens.map((t) => t.id), hooks: ['logits'] });
    const V = model.config.vocabSize;
    const last = run.activations.get('logits')!.data.subarray((a.tokens.length - 1) * V);
    let arg = 0;
    for (let t = 1; t < V; t++) if (last[t] > last[arg]) arg = t;
    assert.equal(a.top[0].id, arg, 'top prediction is the logits argmax of the BOS-prefixed run');
    assert.equal(a.lens.length, model.config.nLayers + 1);
    assert.deepEqual(a.perLayer?.attention.dims, [model.config.nLayers, model.config.nHeads, a.tokens.length, a.tokens.length]);

    const patch = await activationPatching(model, { clean: 'The cat sat on the', corrupted: 'The dog sat on the' });
    assert.equal(patch.restored.length, model.config.nLayers);
    assert.equal(patch.restored[0].length, a.tokens.length);
    assert.equal(patch.clean.tokens[0].id, EOT, 'patching prompts get the BOS too');

    const vector = Float32Array.from({ length: model.config.dModel }, (_, i) => Math.cos(i));
    const spec = { vector, layer: 1, point: 'hook_resid_pre' as const, strength: 4, positions: { kind: 'all' as const } };
    const effect = await nextTokenEffect(model, text, spec);
    assert.ok(effect.kl > 0);
    const gen = await compareGeneration(model, text, { maxNewTokens: 4, temperature: 0, topP: 1, seed: 1 }, spec);
    assert.equal(gen.baseline.ids.length, 4);
  });
});

describe('half-precision weights (float16 matrix products)', () => {
  for (const c of [FAMILY_CASES[0], FAMILY_CASES[4], FAMILY_CASES[5]]) {
    it(`every hook within 5e-3 of the reference on the float16-rounded weights: ${c.type}`, async () => {
      const dir = path.join(root, `${c.type}-half`);
      writeRandomFamily(dir, c.type, { ...FAMILY_BASE, ...c.shape } as RandomFamilyShape, { seed: 4242, tokenizerJson: folders.tokenizerJson, std: 0.3, ...c.opts });
      const model = await Model.load(dir, { providers: ['cpu'], cacheDir, precision: 'float16' });
      loaded.push(model);
      assert.equal(model.info.precision, 'float16');
      const ckpt = openCheckpoint(dir);
      const { halfPrecisionTensors } = await import('../../src/engine/checkpoint/half-copy');
      const half = halfPrecisionTensors(ckpt.tensors, path.join(cacheDir, 'half'));
      const weights = new Map([...half].map(([k, e]) => [k, readTensorF32(e)]));
      const hooks = [...model.hooks];
      const got = await model.run({ ids: IDS, hooks });
      const want = referenceDecoderForward(ckpt.config, weights, IDS);
      let worst = 0;
      for (const h of hooks) worst = Math.max(worst, closeness(got.activations.get(h)!.data, want.get(h)!.data));
      assert.ok(worst <= 5e-3, `worst relative error ${worst}`);
      // The float32 load of the same checkpoint differs by the weights' rounding only.
      const f32 = await Model.load(dir, { providers: ['cpu'], cacheDir });
      loaded.push(f32);
      const full = await f32.run({ ids: IDS, hooks: ['logits'] });
      const diff = closeness(got.activations.get('logits')!.data, full.activations.get('logits')!.data);
      assert.ok(diff > 0 && diff < 0.05, `float16 vs float32 logits: ${diff}`);
      console.log(`  ${c.type} float16: worst hook error vs the rounded-weight reference ${worst.toExponential(2)}; logits vs float32 weights ${diff.toExponential(2)}`);
    });
  }
});

describe('rotary families: logit positions', () => {
  it('the last position alone equals the last row of the full logits (Gemma-2, with the final soft-cap)', async () => {
    const { model, cfg } = await fixture(FAMILY_CASES[4], '-logitpos');
    const V = cfg.vocabSize;
    const P = IDS.length;
    const full = (await model.run({ ids: IDS, hooks: ['logits'] })).activations.get('logits')!;
    const last = (await model.run({ ids: IDS, hooks: ['logits'], logitPositions: [P - 1] })).activations.get('logits')!;
    assert.deepEqual(last.dims, [1, 1, V]);
    assert.ok(closeness(last.data, full.data.subarray((P - 1) * V)) < 1e-6);
  });
});
