/**
 * Patchscopes (engine/patchscope.ts) against the reference forward: the source's hidden state put in place of the
 * target's at the placeholder, then greedy decoding, every step recomputed from scratch by the reference (no cache),
 * gives the same tokens. Patching the target's own state changes nothing; bad requests are named.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { hookName } from '../../src/engine/hooks';
import type { Model } from '../../src/engine/model';
import { patchscope } from '../../src/engine/patchscope';
import { referenceForward, type Weights } from '../../src/engine/reference/gpt2';
import { generate } from '../../src/engine/steering/steer';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

let tiny: TinyModel;
let model: Model;
let W: Weights;
let cfg: ModelConfig;
before(async () => {
  tiny = await loadTinyModel('patchscope', { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 64, vocabSize: 50257 }, { seed: 31, std: 0.4 });
  ({ model, weights: W, cfg } = tiny);
});
after(() => tiny?.dispose());

const SOURCE = [464, 2068, 7586, 21831, 18045, 625, 262];

/** Greedy decoding by the reference, with h_source written at the placeholder of the target at (layer, point). */
function referencePatchscope(target: number[], placeholder: number, layer: number, srcPos: number, n: number, targetLayer = layer): number[] {
  const D = cfg.dModel;
  const V = cfg.vocabSize;
  const point = 'hook_resid_post';
  const src = referenceForward(cfg, W, SOURCE).get(hookName(layer, point))!.data;
  const tgt = referenceForward(cfg, W, target).get(hookName(targetLayer, point))!.data;
  const out: number[] = [];
  for (let step = 0; step < n; step++) {
    const ids = [...target, ...out];
    const add = new Float32Array(ids.length * D);
    for (let d = 0; d < D; d++) add[placeholder * D + d] = src[srcPos * D + d] - tgt[placeholder * D + d];
    const logits = referenceForward(cfg, W, ids, new Map([[`${targetLayer}:${point}`, add]])).get('logits')!.data;
    const last = logits.subarray((ids.length - 1) * V, ids.length * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (last[v] > last[best]) best = v;
    out.push(best);
  }
  return out;
}

describe('patchscopes', () => {
  it('the identity prompt, each layer: the same tokens as the reference decoding from scratch', async () => {
    for (const layer of [0, 1, 2]) {
      const r = await patchscope(model, { sourceIds: SOURCE, layer, position: 4, maxNewTokens: 5 });
      const target = model.tokenizer.encodeForModel(r.targetPrompt).ids;
      assert.equal(model.tokenizer.decode([target[r.placeholder]]).includes('?'), true, 'the placeholder is the "?" token');
      assert.deepEqual(r.ids, referencePatchscope(target, r.placeholder, layer, 4, 5), `layer ${layer}`);
    }
  });

  it('into another layer and another prompt', async () => {
    const r = await patchscope(model, { sourceIds: SOURCE, layer: 2, position: 6, targetLayer: 0, targetPrompt: 'The word ? means', maxNewTokens: 4 });
    const target = model.tokenizer.encodeForModel('The word ? means').ids;
    assert.deepEqual(r.ids, referencePatchscope(target, r.placeholder, 2, 6, 4, 0));
  });

  it("patching the target's own state changes nothing", async () => {
    const prompt = 'one two ? three';
    const ids = model.tokenizer.encodeForModel(prompt).ids;
    const q = model.tokenizer.encodeForModel(prompt).tokens.findIndex((t) => t.text.includes('?'));
    const r = await patchscope(model, { sourceIds: ids, layer: 1, position: q, targetPrompt: prompt, maxNewTokens: 6 });
    const plain = await generate(model, ids, { maxNewTokens: 6, temperature: 0, topP: 1, seed: 0 });
    assert.deepEqual(r.ids, plain.ids);
  });

  it('bad requests are named', async () => {
    await assert.rejects(patchscope(model, { sourceIds: SOURCE, layer: 3, position: 0 }), /layer 3 does not exist \(the model has layers 0\.\.2\)/);
    await assert.rejects(patchscope(model, { sourceIds: SOURCE, layer: 0, position: 7 }), /position 7 is not in the source \(positions 0\.\.6\)/);
    await assert.rejects(patchscope(model, { sourceIds: SOURCE, layer: 0, position: 0, targetPrompt: 'no placeholder' }), /has no "\?" to put the hidden state in/);
  });
});
