/**
 * GPU-path lane: steered generation on the WebGPU provider (the KV-cached path and full recomputation) against the
 * CPU provider with the same steering, token for token, and the steered logits against the CPU provider and the
 * float64 plain-loop reference. The tiny GPT-2 of test/oracle/steering.test.ts.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import type { GenerationSettings, SteeringSpec } from '../../src/engine/results';
import { generate, meanResidNorm, steerAdds } from '../../src/engine/steering/steer';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { closeness } from '../helpers/closeness';
import { referenceForward } from '../../src/engine/reference/gpt2';
import { laneFixture, loadOnWebgpu, skipWithoutWebgpu } from './lane';

const lane = laneFixture('residual-gpu-steer-');
const { root, cacheDir } = lane;

const SHAPE = { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 32, vocabSize: 50257 };
const PROMPT = [464, 2068, 7586, 21831, 18045, 625];
const GREEDY: GenerationSettings = { maxNewTokens: 14, temperature: 0, topP: 1, seed: 0 };
const TOL = 1e-4;
const vector = Float32Array.from({ length: SHAPE.dModel }, (_, i) => Math.sin(13.1 + i * 1.7));
const SPECS: [string, SteeringSpec][] = [
  ['absolute, every position', { vector, layer: 1, point: 'hook_resid_pre', strength: 2, positions: { kind: 'all' } }],
  // Relative: the scale comes from a mean residual norm, itself read on the provider under test.
  ['relative, from a generated position', { vector, layer: 2, point: 'hook_resid_mid', strength: 1.5, relative: true, positions: { kind: 'from', pos: 8 } }],
  // An operator: the graph's projection input (x − max(x·û − v, floor)·û) on the provider under test.
  ['set the component along the vector, every position', { vector, layer: 1, point: 'hook_resid_post', strength: 0, positions: { kind: 'all' }, op: 'set', value: 2 }],
];

/** One checkpoint, loaded on both providers, shared by the tests. */
async function loadFixture() {
  const dir = path.join(root, 'model');
  writeRandomGpt2(dir, SHAPE, { seed: 4242, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
  const gpu = await loadOnWebgpu(dir, { cacheDir, precision: 'float32' });
  const cpu = await Model.load(dir, { providers: ['cpu'], cacheDir, precision: 'float32' });
  lane.cleanup.push(() => gpu.dispose(), () => cpu.dispose());
  const ckpt = openCheckpoint(dir);
  return { gpu, cpu, ckpt, weights: new Map([...ckpt.tensors].map(([k, e]) => [k, readTensorF32(e)])) };
}
let fixture: ReturnType<typeof loadFixture> | undefined;

describe('steered generation on WebGPU', () => {
  for (const [name, spec] of SPECS) {
    it(`generates the CPU provider's tokens, and steered logits match it and the reference (${name})`, async (t) => {
      if (skipWithoutWebgpu(t, lane.unavailable)) return;
      const { gpu, cpu, ckpt, weights } = await (fixture ??= loadFixture());

      const onCpu = await generate(cpu, PROMPT, GREEDY, spec);
      const onGpu = await generate(gpu, PROMPT, GREEDY, spec);
      const onGpuFull = await generate(gpu, PROMPT, GREEDY, spec, { useCache: false });
      const unsteered = await generate(gpu, PROMPT, GREEDY);
      assert.equal(onCpu.ids.length, GREEDY.maxNewTokens, 'no early stop: every step is compared');
      assert.deepEqual(onGpu.ids, onCpu.ids, 'WebGPU (KV cache) generates the CPU provider\'s tokens');
      assert.deepEqual(onGpuFull.ids, onCpu.ids, 'WebGPU (full recomputation) generates the CPU provider\'s tokens');
      assert.deepEqual(unsteered.ids, (await generate(cpu, PROMPT, GREEDY)).ids, 'unsteered, too');
      assert.notDeepEqual(onGpu.ids, unsteered.ids, 'the steering changed the generated text');

      // Steered logits over the whole generated sequence, every position.
      const ids = [...PROMPT, ...onCpu.ids];
      const P = ids.length;
      const meanNorm = spec.relative ? await meanResidNorm(gpu, PROMPT, spec.layer, spec.point) : undefined;
      const cpuNorm = spec.relative ? await meanResidNorm(cpu, PROMPT, spec.layer, spec.point) : undefined;
      if (meanNorm !== undefined) assert.ok(Math.abs(meanNorm - cpuNorm!) <= TOL * cpuNorm!, `mean residual norm ${meanNorm} vs CPU ${cpuNorm}`);
      const adds = steerAdds(spec, 0, P, meanNorm);
      const hooks: HookName[] = ['logits', `blocks.${SHAPE.nLayers - 1}.hook_resid_post`];
      const got = await gpu.run({ ids, hooks, steer: adds });
      const fromCpu = await cpu.run({ ids, hooks, steer: adds });
      const key = (a: (typeof adds)[number]) => `${a.layer}:${a.point}`;
      const want = referenceForward(ckpt.config, weights, ids, new Map(adds.filter((a) => !a.project).map((a) => [key(a), a.add])), {
        project: new Map(adds.filter((a) => a.project).map((a) => [key(a), { dir: a.add, ...a.project! }])),
      });
      const errors: string[] = [];
      for (const h of hooks) {
        const vsCpu = closeness(got.activations.get(h)!.data, fromCpu.activations.get(h)!.data);
        const vsRef = closeness(got.activations.get(h)!.data, want.get(h)!.data);
        assert.ok(vsCpu <= TOL, `${h}: worst relative error vs CPU ${vsCpu.toExponential(2)}`);
        assert.ok(vsRef <= TOL, `${h}: worst relative error vs reference ${vsRef.toExponential(2)}`);
        errors.push(`${h} ${vsCpu.toExponential(2)} (CPU), ${vsRef.toExponential(2)} (reference)`);
      }
      t.diagnostic(`${onGpu.ids.length} tokens equal; steered ${errors.join('; ')}`);
    });
  }
});
