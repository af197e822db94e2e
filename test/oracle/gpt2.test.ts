/**
 * Oracle tests: the ONNX graph against the independent plain-loop reference forward, for every hook point, on tiny
 * random GPT-2 checkpoints (activations, tied/untied unembedding, F32/F16/BF16, sharded), with and without steering.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2, type RandomGpt2Options, type RandomGpt2Shape } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { allHookNames, type HookName } from '../../src/engine/hooks';
import { Model, type SteerAdd } from '../../src/engine/model';
import { referenceForward, type ReferenceSteer } from '../../src/engine/reference/gpt2';
import { assertMatches, closeness } from '../helpers/closeness';
import { modelFolders } from '../helpers/model-folders';

const folders = modelFolders('residual-oracle-');
const { root, cacheDir, loaded } = folders;

const SHAPE: RandomGpt2Shape = { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 24, vocabSize: 50257 };

async function fixture(name: string, shape: Partial<RandomGpt2Shape>, opts: Partial<RandomGpt2Options> = {}) {
  const dir = path.join(root, name);
  writeRandomGpt2(dir, { ...SHAPE, ...shape }, { seed: name.length * 7919 + 13, tokenizerJson: folders.tokenizerJson, std: 0.3, ...opts });
  const model = await Model.load(dir, { providers: ['cpu'], cacheDir });
  loaded.push(model);
  const ckpt = openCheckpoint(dir);
  const weights = new Map([...ckpt.tensors].map(([k, e]) => [k, readTensorF32(e)]));
  return { model, weights, cfg: ckpt.config };
}

const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 198, 50256];

describe('ONNX graph vs plain-loop reference', () => {
  for (const act of ['gelu_new', 'gelu', 'relu'] as const) {
    it(`matches logits and every hook point (${act})`, async () => {
      const { model, weights, cfg } = await fixture(`act-${act}`, { act });
      const hooks = allHookNames(cfg.nLayers);
      const got = await model.run({ ids: IDS, hooks });
      const want = referenceForward(cfg, weights, IDS);
      assert.equal(got.activations.size, hooks.length, 'every hook name was returned');
      for (const h of hooks) assertMatches(h, got.activations.get(h), want.get(h));
    });
  }

  it('matches with an untied unembedding (lm_head.weight)', async () => {
    const { model, weights, cfg } = await fixture('untied', {}, { tiedUnembed: false });
    assert.ok(weights.has('lm_head.weight'));
    const got = await model.run({ ids: IDS, hooks: ['logits'] });
    assertMatches('logits', got.activations.get('logits'), referenceForward(cfg, weights, IDS).get('logits'));
  });

  for (const dtype of ['F16', 'BF16'] as const) {
    it(`matches with ${dtype} weights (same rounded weights in both; tolerance unchanged)`, async () => {
      const { model, weights, cfg } = await fixture(`dtype-${dtype}`, {}, { dtype });
      const hooks = allHookNames(cfg.nLayers);
      const got = await model.run({ ids: IDS, hooks });
      const want = referenceForward(cfg, weights, IDS);
      for (const h of hooks) assertMatches(h, got.activations.get(h), want.get(h));
      assert.equal(model.info.dtype, dtype);
    });
  }

  it('matches a sharded checkpoint', async () => {
    const { model, weights, cfg } = await fixture('sharded', {}, { shards: 3 });
    const got = await model.run({ ids: IDS, hooks: ['logits', 'blocks.2.hook_resid_post'] });
    const want = referenceForward(cfg, weights, IDS);
    assertMatches('logits', got.activations.get('logits'), want.get('logits'));
    assertMatches('blocks.2.hook_resid_post', got.activations.get('blocks.2.hook_resid_post'), want.get('blocks.2.hook_resid_post'));
  });
});

describe('steering inputs on the residual stream', () => {
  it('match the reference with the same vectors added (broadcast and per position, three hook points)', async () => {
    const { model, weights, cfg } = await fixture('steer', {});
    const D = cfg.dModel;
    const P = IDS.length;
    const vec = (seed: number, n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 31 + i * 1.7) * 2);
    const steer: SteerAdd[] = [
      { layer: 1, point: 'hook_resid_pre', add: vec(1, D) },
      { layer: 1, point: 'hook_resid_mid', add: vec(2, P * D) },
      { layer: 2, point: 'hook_resid_post', add: vec(3, D) },
    ];
    const refSteer: ReferenceSteer = new Map(steer.map((s) => [`${s.layer}:${s.point}`, s.add]));
    const hooks = allHookNames(cfg.nLayers);
    const got = await model.run({ ids: IDS, hooks, steer });
    const want = referenceForward(cfg, weights, IDS, refSteer);
    for (const h of hooks) assertMatches(h, got.activations.get(h), want.get(h));
    // And the steering really changed something downstream.
    const base = await model.run({ ids: IDS, hooks: ['logits'] });
    assert.ok(closeness(base.activations.get('logits')!.data, got.activations.get('logits')!.data) > 1e-3);
  });

  it('a zero vector changes nothing, bit for bit', async () => {
    const { model, cfg } = await fixture('steer-zero', {});
    const hooks = allHookNames(cfg.nLayers);
    const base = await model.run({ ids: IDS, hooks });
    const zero = await model.run({ ids: IDS, hooks, steer: [{ layer: 1, point: 'hook_resid_pre', add: new Float32Array(cfg.dModel) }] });
    for (const h of hooks) assert.deepEqual(zero.activations.get(h)!.data, base.activations.get(h)!.data, h);
  });

  it('steering at layer l changes no activation before layer l', async () => {
    const { model, cfg } = await fixture('steer-causal', {});
    const hooks = allHookNames(cfg.nLayers);
    const base = await model.run({ ids: IDS, hooks });
    const add = Float32Array.from({ length: cfg.dModel }, (_, i) => (i % 3) - 1);
    const steered = await model.run({ ids: IDS, hooks, steer: [{ layer: 2, point: 'hook_resid_pre', add }] });
    const before = hooks.filter((h) => h.startsWith('hook_') || /^blocks\.[01]\./.test(h));
    assert.ok(before.length > 30);
    for (const h of before) assert.deepEqual(steered.activations.get(h)!.data, base.activations.get(h)!.data, h);
    assert.notDeepEqual(steered.activations.get('blocks.2.hook_resid_pre')!.data, base.activations.get('blocks.2.hook_resid_pre')!.data);
  });

  it('refuses bad steering vectors and bad requests with clear messages', async () => {
    const { model, cfg } = await fixture('steer-bad', {});
    const D = cfg.dModel;
    await assert.rejects(model.run({ ids: IDS, hooks: ['logits'], steer: [{ layer: 0, point: 'hook_resid_pre', add: new Float32Array(D + 1) }] }), /d_model is 16/);
    await assert.rejects(model.run({ ids: IDS, hooks: ['logits'], steer: [{ layer: 7, point: 'hook_resid_pre', add: new Float32Array(D) }] }), /layer 7 does not exist/);
    const nan = new Float32Array(D);
    nan[3] = NaN;
    await assert.rejects(model.run({ ids: IDS, hooks: ['logits'], steer: [{ layer: 0, point: 'hook_resid_pre', add: nan }] }), /NaN or Inf/);
    await assert.rejects(model.run({ ids: IDS, hooks: ['blocks.0.hook_resid_pree' as HookName] }), /did you mean blocks\.0\.hook_resid_pre/);
    await assert.rejects(model.run({ ids: [1, 60000], hooks: ['logits'] }), /token id 60000 is outside the vocabulary/);
    await assert.rejects(model.run({ ids: Array(30).fill(1), hooks: ['logits'] }), /exceed the model's context of 24/);
    await assert.rejects(model.run({ ids: [], hooks: ['logits'] }), /no tokens/);
    // The model still works after all of that.
    const ok = await model.run({ ids: IDS, hooks: ['logits'] });
    assert.equal(ok.activations.get('logits')!.dims[1], IDS.length);
  });

  it('two concurrent runs both complete with their own results', async () => {
    const { model } = await fixture('concurrent', {});
    const [a, b] = await Promise.all([model.run({ ids: IDS, hooks: ['logits'] }), model.run({ ids: IDS.slice(0, 5), hooks: ['logits'] })]);
    assert.equal(a.activations.get('logits')!.dims[1], IDS.length);
    assert.equal(b.activations.get('logits')!.dims[1], 5);
    // Causal: the first 5 positions agree.
    const V = 50257;
    assert.ok(closeness(a.activations.get('logits')!.data.subarray(0, 5 * V), b.activations.get('logits')!.data) < 1e-5);
  });
});

describe('logit positions', () => {
  it('logits at chosen positions equal those rows of the full run, in the order asked; bad positions are refused', async () => {
    const { model, cfg } = await fixture('logit-positions', {});
    const V = cfg.vocabSize;
    const P = IDS.length;
    const full = (await model.run({ ids: IDS, hooks: ['logits'] })).activations.get('logits')!;
    const some = (await model.run({ ids: IDS, hooks: ['logits'], logitPositions: [P - 1, 2, 0] })).activations.get('logits')!;
    assert.deepEqual(some.dims, [1, 3, V]);
    [P - 1, 2, 0].forEach((p, i) => assert.ok(closeness(some.data.subarray(i * V, (i + 1) * V), full.data.subarray(p * V, (p + 1) * V)) < 1e-6, `row ${p}`));
    await assert.rejects(model.run({ ids: IDS, hooks: ['logits'], logitPositions: [P] }), /logit positions must be 0\.\.11/);
    await assert.rejects(model.run({ ids: IDS, hooks: ['logits'], logitPositions: [] }), /logit positions/);
  });
});
