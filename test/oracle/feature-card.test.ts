/**
 * Feature cards (engine/circuits/featureCard.ts) on a tiny random GPT-2 with random ReLU transcoders. Oracles written
 * here from the definitions: activations = ReLU(x·W_enc + b_enc) in plain loops on the reference forward's
 * ln2.hook_normalized (and the graph's own values); top/bottom tokens = a plain-loop W_dec[f]·W_U over the whole
 * vocabulary; contexts, frequency and maximum = what a written feature_index.json says. Also: a missing, unreadable
 * or other-layer index, and the refusals.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { Attributor } from '../../src/engine/circuits/attribution';
import { FeatureIndex, featureCard } from '../../src/engine/circuits/featureCard';
import type { AttributionGraph } from '../../src/engine/circuits/graph';
import { loadTranscoders } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeCircuitTracerTranscoders, writeSaeLensTranscoders, type TranscoderWeights } from '../../src/engine/circuits/transcoders-write';
import { ResidualError } from '../../src/engine/errors';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';
import { referenceForward } from '../../src/engine/reference/gpt2';

const SHAPE = { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 24, vocabSize: 50257 };
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13];
const F = 40;
const LAYER = 1;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-card-'));
const tdir = path.join(root, 'transcoders');

let tiny: TinyModel;
let tc: TranscoderWeights[];
let attributor: Attributor;
let graph: AttributionGraph;
/** Plain-loop activations [layer][pos][feature]. */
let acts: Float64Array[][];
/** The layer-1 feature active at the most positions (so the card's activations are not all zero). */
let feature: number;

before(async () => {
  tiny = await loadTinyModel('card', SHAPE, { seed: 11, std: 0.3 });
  tc = randomTranscoderWeights(SHAPE.nLayers, SHAPE.dModel, F, { seed: 5, bEncMean: -0.6 });
  writeSaeLensTranscoders(tdir, tc, { activation: 'relu' });
  attributor = new Attributor(tiny.model, loadTranscoders(tdir, tiny.model.config), { cacheDir: path.join(root, 'cache') });
  graph = await attributor.attribute(IDS);
  const ref = referenceForward(tiny.cfg, tiny.weights, IDS);
  const D = SHAPE.dModel;
  acts = tc.map((w, l) => {
    const x = ref.get(`blocks.${l}.ln2.hook_normalized` as HookName)!.data;
    return IDS.map((_, p) =>
      Float64Array.from({ length: F }, (_, f) => {
        let s = w.bEnc_F[f];
        for (let d = 0; d < D; d++) s += x[p * D + d] * w.wEnc_DF[d * F + f];
        return Math.max(0, s);
      }),
    );
  });
  const count = (f: number) => acts[LAYER].filter((a) => a[f] > 0).length;
  feature = Array.from({ length: F }, (_, f) => f).sort((a, b) => count(b) - count(a))[0];
  assert.ok(count(feature) > 0, 'some layer-1 feature fires on the prompt');
});

after(async () => {
  await attributor?.dispose();
  await tiny?.dispose();
  fs.rmSync(root, { recursive: true, force: true });
});

const near = (a: number, b: number, rel: number) => Math.abs(a - b) <= rel * Math.max(1, Math.abs(b));

describe('feature card', () => {
  it('activations: every position, equal to the graph and to the plain-loop encoder', async () => {
    const card = await featureCard(attributor, graph, LAYER, feature);
    assert.equal(card.layer, LAYER);
    assert.equal(card.index, feature);
    assert.equal(card.activations.length, IDS.length);
    assert.deepEqual(card.tokens, IDS.map((id) => tiny.model.tokenizer.tokenDisplay(id)));
    for (let p = 0; p < IDS.length; p++) assert.ok(near(card.activations[p], acts[LAYER][p][feature], 1e-4), `pos ${p}: ${card.activations[p]} vs ${acts[LAYER][p][feature]}`);
    // The graph's own values: its kept nodes and its record of every active feature.
    let kept = 0;
    for (let n = 0; n < graph.nFeatures; n++) {
      if (graph.featLayer[n] === LAYER && graph.featIndex[n] === feature) {
        assert.equal(card.activations[graph.featPos[n]], graph.featAct[n]);
        kept++;
      }
    }
    assert.ok(kept > 0, 'the feature is in the graph');
    const la = graph.active![LAYER];
    for (let p = 0; p < IDS.length; p++) {
      let want = 0;
      for (let i = la.start[p]; i < la.start[p + 1]; i++) if (la.feature[i] === feature) want = la.act[i];
      assert.equal(card.activations[p], want);
    }
  });

  it('top and bottom tokens: a plain-loop W_dec·W_U over the whole vocabulary', async () => {
    const D = SHAPE.dModel;
    const wte = tiny.weights.get('wte.weight')!;
    const row = tc[LAYER].wDec_FD.subarray(feature * D, (feature + 1) * D);
    const z = Array.from({ length: SHAPE.vocabSize }, (_, v) => {
      let s = 0;
      for (let d = 0; d < D; d++) s += row[d] * wte[v * D + d];
      return s;
    });
    const order = Array.from(z.keys()).sort((a, b) => z[b] - z[a]);
    const card = await featureCard(attributor, graph, LAYER, feature, { topK: 7 });
    const tok = (v: number) => tiny.model.tokenizer.tokenDisplay(v);
    const expect = (ids: number[]) => ids.map((v) => [tok(v), z[v]] as const);
    for (const [got, want] of [
      [card.top, expect(order.slice(0, 7))],
      [card.bottom, expect(order.slice(-7).reverse())],
    ] as const) {
      assert.deepEqual(got.map((x) => x[0]), want.map((x) => x[0]));
      // Values to 4 significant digits, from a float32 product.
      got.forEach(([, y], i) => assert.ok(near(y, want[i][1], 1e-3), `${y} vs ${want[i][1]}`));
    }
    assert.equal(card.output, tok(order[0]));
    assert.equal(card.contexts, undefined);
    assert.equal(card.source, 'decoder × unembedding (no feature index)');
  });

  it('contexts, frequency and maximum from the feature_index.json beside the layer’s cfg.json', async () => {
    const file = path.join(tdir, `layer_${LAYER}`, 'feature_index.json');
    const ctx = [
      ['x = ', '"', 'hello', 3.25],
      ['', '\n', '\tif', 1.5],
    ];
    fs.writeFileSync(
      file,
      JSON.stringify({
        format: 'residual-feature-index/1',
        layer: LAYER,
        d_sae: F,
        features: [{ id: feature, freq: 0.0125, mean: 1.1, max: 3.25, ctx, top: [['a', 0.1]], bottom: [['b', -0.1]] }],
      }),
    );
    const index = new FeatureIndex();
    const warnings: string[] = [];
    const card = await featureCard(attributor, graph, LAYER, feature, { index, onWarning: (m) => warnings.push(m) });
    assert.deepEqual(card.contexts, ctx.map(([before, peak, after, act]) => ({ before, peak, after, act })));
    assert.equal(card.frequency, 0.0125);
    assert.equal(card.maxAct, 3.25);
    assert.equal(card.source, 'decoder × unembedding; contexts from the feature index');
    // A feature the index does not list (dead on its corpus) has no contexts.
    const other = await featureCard(attributor, graph, LAYER, (feature + 1) % F, { index, onWarning: (m) => warnings.push(m) });
    assert.equal(other.contexts, undefined);
    assert.deepEqual(warnings, []);
    // Read once per FeatureIndex: a later edit is not seen by the same cache, and is by a new one.
    fs.writeFileSync(file, JSON.stringify({ layer: LAYER, features: [] }));
    assert.equal((await featureCard(attributor, graph, LAYER, feature, { index })).maxAct, 3.25);
    assert.equal((await featureCard(attributor, graph, LAYER, feature, { index: new FeatureIndex() })).maxAct, undefined);
  });

  it('an unreadable index, or one for another layer, is a warning and the card has no contexts', async () => {
    const bad = path.join(tdir, 'layer_2', 'feature_index.json');
    fs.writeFileSync(bad, '{"features": [');
    const index = new FeatureIndex();
    const warnings: string[] = [];
    const onWarning = (m: string) => warnings.push(m);
    for (let i = 0; i < 2; i++) {
      const card = await featureCard(attributor, graph, 2, 3, { index, onWarning });
      assert.equal(card.contexts, undefined);
      assert.equal(card.source, 'decoder × unembedding (no feature index)');
    }
    assert.equal(warnings.length, 1, 'warned once per file');
    assert.ok(warnings[0].startsWith(`feature index ${bad} unreadable (`) && warnings[0].endsWith('); cards use the decoder instead'), warnings[0]);
    fs.writeFileSync(bad, JSON.stringify({ features: [{ id: 3, ctx: [['a', 'b']] }] }));
    await featureCard(attributor, graph, 2, 3, { index: new FeatureIndex(), onWarning });
    assert.match(warnings[1], /features\[0\]\.ctx is not a list of \[before, peak, after, activation\]/);
    const wrong = path.join(tdir, 'layer_0', 'feature_index.json');
    fs.writeFileSync(wrong, JSON.stringify({ layer: 2, features: [{ id: 3, ctx: [['a', 'b', 'c', 1]] }] }));
    const card = await featureCard(attributor, graph, 0, 3, { index: new FeatureIndex(), onWarning });
    assert.equal(card.contexts, undefined);
    assert.match(warnings[2], /feature_index\.json is for layer 2, not layer 0/);
  });

  it('refuses a layer the set lacks and a feature the layer lacks, naming both', async () => {
    const refuses = async (layer: number, index: number, re: RegExp) =>
      assert.rejects(featureCard(attributor, graph, layer, index), (e: unknown) => e instanceof ResidualError && re.test(e.message));
    await refuses(7, 0, /no feature 0 in layer 7: the transcoder set has layers 0\.\.2/);
    await refuses(-1, 0, /no feature 0 in layer -1: the transcoder set has layers 0\.\.2/);
    await refuses(1.5, 0, /no feature 0 in layer 1\.5: the transcoder set has layers 0\.\.2/);
    await refuses(1, F, new RegExp(`no feature ${F} in layer 1$`));
    await refuses(1, 2.5, /no feature 2\.5 in layer 1$/);
  });
});

describe('feature card of a tied-embedding Llama (no lm_head.weight, no feature index)', () => {
  // The card once looked for lm_head.weight / wte.weight by name and failed ("reading 'dtype'") on tied Llama, Qwen3
  // and Gemma-2 checkpoints; it reads the checkpoint's own unembedding, here model.embed_tokens.weight.
  const dir = path.join(root, 'tied-llama');
  let model: Model;
  let llama: Attributor;
  let tied: TranscoderWeights[];
  let embed: Float32Array;
  before(async () => {
    const D = 16;
    writeRandomFamily(
      path.join(dir, 'model'),
      'llama',
      { num_hidden_layers: 2, hidden_size: D, num_attention_heads: 4, intermediate_size: 24, max_position_embeddings: 32, vocab_size: 50257, tie_word_embeddings: true },
      { seed: 13, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 },
    );
    const ckpt = openCheckpoint(path.join(dir, 'model'));
    assert.ok(ckpt.tiedUnembed && !ckpt.tensors.has('lm_head.weight'));
    embed = readTensorF32(ckpt.tensors.get(ckpt.embedName)!);
    tied = randomTranscoderWeights(2, D, F, { seed: 8, bEncMean: -0.6 });
    writeCircuitTracerTranscoders(path.join(dir, 'tc'), tied, { activation: 'relu', input: 'mlp.hook_in' });
    model = await Model.load(path.join(dir, 'model'), { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
    llama = new Attributor(model, loadTranscoders(path.join(dir, 'tc'), model.config), { cacheDir: path.join(root, 'cache') });
  });
  after(async () => {
    await llama?.dispose();
    await model?.dispose();
  });

  it('top and bottom tokens and the output labels: a plain-loop W_dec·W_E over the whole vocabulary', async () => {
    const D = 16;
    const g = await llama.attribute(IDS.slice(0, 6));
    const feats = [3, 17];
    const z = feats.map((f) => {
      const row = tied[1].wDec_FD.subarray(f * D, (f + 1) * D);
      return Array.from({ length: 50257 }, (_, v) => {
        let s = 0;
        for (let d = 0; d < D; d++) s += row[d] * embed[v * D + d];
        return s;
      });
    });
    const card = await featureCard(llama, g, 1, feats[0], { topK: 5, index: new FeatureIndex() });
    const order = Array.from(z[0].keys()).sort((a, b) => z[0][b] - z[0][a]);
    const tok = (v: number) => model.tokenizer.tokenDisplay(v);
    assert.deepEqual(card.top.map((x) => x[0]), order.slice(0, 5).map(tok));
    assert.deepEqual(card.bottom.map((x) => x[0]), order.slice(-5).reverse().map(tok));
    card.top.forEach(([, y], i) => assert.ok(near(y, z[0][order[i]], 1e-3), `${y} vs ${z[0][order[i]]}`));
    assert.equal(card.source, 'decoder × unembedding (no feature index)');
    const argmax = (a: number[]) => a.reduce((best, x, i) => (x > a[best] ? i : best), 0);
    assert.deepEqual(await llama.topOutputTokens(feats.map((index) => ({ layer: 1, index }))), z.map(argmax));
  });
});
