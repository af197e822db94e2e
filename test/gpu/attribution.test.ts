/**
 * GPU-path lane: an attribution graph built on the WebGPU provider (model forward, transcoder encoders and attention
 * backward sweeps all run there: the Attributor's sessions take the model's provider) against the same graph built on
 * the CPU provider, which test/oracle/attribution.test.ts checks against an independent frozen replacement model.
 * Same nodes exactly; activations, constants, values and every link weight within a tight tolerance.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { Attributor } from '../../src/engine/circuits/attribution';
import type { AttributionGraph } from '../../src/engine/circuits/graph';
import { loadTranscoders } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeSaeLensTranscoders } from '../../src/engine/circuits/transcoders-write';
import { Model } from '../../src/engine/model';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { closeness } from '../helpers/closeness';
import { laneFixture, loadOnWebgpu, skipWithoutWebgpu } from './lane';

const lane = laneFixture('residual-gpu-attr-');
const { root, cacheDir } = lane;

// The CPU attribution test's fixture: a 3-layer GPT-2 with ReLU transcoders (SAELens layout) on ln2's output.
const SHAPE = { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 24, vocabSize: 50257 };
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13];
const F = 40;
/** float32 on both sides (lavapipe agrees with the CPU provider to ~5e-6): anything above 1e-4 is a real difference. */
const TOL = 1e-4;

async function graphOn(provider: 'cpu' | 'webgpu'): Promise<AttributionGraph> {
  const modelDir = path.join(root, 'model');
  const model =
    provider === 'webgpu' ? await loadOnWebgpu(modelDir, { cacheDir, precision: 'float32' }) : await Model.load(modelDir, { providers: ['cpu'], cacheDir, precision: 'float32' });
  const attributor = new Attributor(model, loadTranscoders(path.join(root, 'transcoders'), model.config), { cacheDir });
  lane.cleanup.push(async () => {
    await attributor.dispose();
    await model.dispose();
  });
  return attributor.attribute(IDS);
}

describe('attribution graph on WebGPU', () => {
  it('has the CPU provider\'s nodes, and its activations, constants and link weights within 1e-4', async (t) => {
    if (skipWithoutWebgpu(t, lane.unavailable)) return;
    writeRandomGpt2(path.join(root, 'model'), SHAPE, { seed: 'relu-saelens'.length * 31 + 7, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
    const tc = randomTranscoderWeights(SHAPE.nLayers, SHAPE.dModel, F, { seed: 'relu-saelens'.length + 3, bEncMean: -0.6, threshold: 0.4 });
    writeSaeLensTranscoders(path.join(root, 'transcoders'), tc, { activation: 'relu', k: 6, input: 'ln2.hook_normalized', cfgVersion: 'v6' });
    const cpu = await graphOn('cpu');
    const gpu = await graphOn('webgpu');

    // Same nodes: which features are active where, which logits are targets, which rows were computed.
    assert.ok(cpu.nFeatures > 10, `enough features to compare (${cpu.nFeatures})`);
    for (const k of ['ids', 'nLayers', 'nPos', 'nFeatures', 'nActiveFeatures', 'N', 'logitIds'] as const) assert.deepEqual(gpu[k], cpu[k], k);
    for (const k of ['featLayer', 'featPos', 'featIndex', 'rowComputed'] as const) assert.deepEqual(gpu[k], cpu[k], k);

    // Values, each relative to its own scale (closeness: |a − b| ≤ tol · (|b| + rms(b))).
    const f32 = (x: Float64Array) => Float32Array.from(x);
    const errors = {
      featAct: closeness(gpu.featAct, cpu.featAct),
      logitValues: closeness(gpu.logitValues, cpu.logitValues),
      logitProbs: closeness(gpu.logitProbs, cpu.logitProbs),
      constant_N: closeness(f32(gpu.constant_N), f32(cpu.constant_N)),
      actual_N: closeness(f32(gpu.actual_N), f32(cpu.actual_N)),
      adjacency_NN: closeness(gpu.adjacency_NN, cpu.adjacency_NN),
    };
    // Link weights also against the largest one, so a small link cannot hide behind the many zeros' small rms.
    let maxLink = 0;
    let maxDiff = 0;
    for (let i = 0; i < cpu.adjacency_NN.length; i++) {
      maxLink = Math.max(maxLink, Math.abs(cpu.adjacency_NN[i]));
      maxDiff = Math.max(maxDiff, Math.abs(gpu.adjacency_NN[i] - cpu.adjacency_NN[i]));
    }
    t.diagnostic(
      `${cpu.nFeatures} features, ${cpu.logitIds.length} logits, N=${cpu.N}; worst relative errors vs CPU: ` +
        Object.entries(errors).map(([k, e]) => `${k} ${e.toExponential(2)}`).join(', ') +
        `; largest link difference ${maxDiff.toExponential(2)} (largest link ${maxLink.toFixed(3)})`,
    );
    for (const [k, e] of Object.entries(errors)) assert.ok(e <= TOL, `${k}: worst relative error ${e.toExponential(2)} > ${TOL}`);
    assert.ok(maxDiff <= TOL * maxLink, `largest link difference ${maxDiff.toExponential(2)} > ${TOL} × largest link ${maxLink.toFixed(3)}`);
  });
});
