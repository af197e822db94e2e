/**
 * GPU-path lane: the ONNX graph on the WebGPU provider against the independent float64 plain-loop references, for
 * every hook point, on tiny random GPT-2, Llama and Gemma-2 checkpoints; in float32 (the CPU lane's tolerance) and in
 * float16, where the matrix products really run in half precision (the CPU provider casts back to float32).
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import type { FamilyModelType } from '../../src/engine/checkpoint/families';
import { halfPrecisionTensors } from '../../src/engine/checkpoint/half-copy';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily, writeRandomGpt2, type RandomFamilyShape, type RandomGpt2Shape } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import type { Tensor32 } from '../../src/engine/dims';
import { allHookNames, type HookName } from '../../src/engine/hooks';
import type { Model } from '../../src/engine/model';
import type { WeightPrecision } from '../../src/engine/onnx/ops';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { assertMatches, closeness } from '../helpers/closeness';
import { referenceDecoderForward } from '../../src/engine/reference/decoder';
import { referenceForward } from '../../src/engine/reference/gpt2';
import { FAMILY_BASE, FAMILY_CASES } from '../helpers/family-cases';
import { laneFixture, loadOnWebgpu, skipWithoutWebgpu } from './lane';

const lane = laneFixture('residual-gpu-oracle-');
const { root, cacheDir } = lane;

const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 198, 50256];

// The shapes of the CPU lane's cases (test/oracle/gpt2.test.ts; the first Llama and the Gemma-2 case of
// test/helpers/family-cases.ts): GPT-2 with gelu_new; Llama with grouped-query attention and llama3 rope scaling;
// Gemma-2 with sandwich norms, both soft-caps and a sliding window.
const GPT2: RandomGpt2Shape = { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 24, vocabSize: 50257, act: 'gelu_new' };

type Family = 'gpt2' | FamilyModelType;

/** A tiny random checkpoint of `family` on WebGPU, and the reference forward on the weights the graph really holds. */
async function fixture(family: Family, precision: WeightPrecision) {
  const dir = path.join(root, `${family}-${precision}`);
  const seed = family.length * 7919 + 13;
  const opts = { seed, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 };
  if (family === 'gpt2') writeRandomGpt2(dir, GPT2, opts);
  else writeRandomFamily(dir, family, { ...FAMILY_BASE, ...FAMILY_CASES.find((f) => f.type === family)!.shape } as RandomFamilyShape, opts);
  const model = await loadOnWebgpu(dir, { cacheDir, precision });
  lane.cleanup.push(() => model.dispose());
  const ckpt = openCheckpoint(dir);
  // In float16 the reference gets the same float16-rounded weights, so only the arithmetic differs.
  const tensors = precision === 'float16' ? halfPrecisionTensors(ckpt.tensors, path.join(cacheDir, 'half')) : ckpt.tensors;
  const weights = new Map([...tensors].map(([k, e]) => [k, readTensorF32(e)]));
  const reference = (cfg: ModelConfig, ids: number[]): Map<HookName, Tensor32> =>
    family === 'gpt2' ? referenceForward(cfg, weights, ids) : referenceDecoderForward(cfg, weights, ids);
  return { model, cfg: ckpt.config, want: reference(ckpt.config, IDS) };
}

/** Every hook point the graph offers (the CPU lane checks the same ones), and that they are the reference's. */
function hooksOf(family: Family, model: Model, cfg: ModelConfig, want: Map<HookName, Tensor32>): HookName[] {
  const hooks = family === 'gpt2' ? allHookNames(cfg.nLayers) : [...model.hooks];
  assert.deepEqual([...want.keys()].sort(), [...hooks].sort(), 'the graph offers every hook point the reference computes');
  for (let l = 0; l < cfg.nLayers; l++) for (const h of ['hook_resid_pre', 'hook_resid_post', 'attn.hook_pattern']) assert.ok(hooks.includes(`blocks.${l}.${h}` as HookName));
  assert.ok(hooks.includes('logits'));
  return hooks;
}

/**
 * Float16 tolerances, both relative to the reference's scale. The matrix products take float16 inputs (rounded to
 * 2⁻¹¹ ≈ 4.9e-4 relative), accumulate and return float16, so each product is off by ~1e-3 of its scale; two or three
 * blocks of random weights at std 0.3 (gain ~0.3·√d per product) and gated MLPs compound it. Measured on lavapipe
 * over 10 seeds: the whole-tensor error ‖got − want‖/‖want‖ of the worst hook is 2.3–3.2e-3 (GPT-2), 3.0–6.0e-3
 * (Llama), 2.2–3.2e-3 (Gemma-2); the worst single element (closeness: |a − b| / (|b| + rms(b))) reaches 4.2e-2
 * (Llama's gated MLP output, where a small value inherits the error of two large factors). Each bound is 2.5
 * times the worst measured; the mistakes this lane is for (a swapped or missing weight, a missed norm, a wrong mask)
 * change the hooks by order 1.
 */
const F16_TENSOR_TOL = 1.5e-2;
const F16_ELEMENT_TOL = 1e-1;

/** ‖a − b‖ / ‖b‖ over the whole tensor; equal elements (masked −∞ scores) count as no difference, like closeness. */
function tensorError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isFinite(b[i])) norm += b[i] ** 2;
    if (a[i] !== b[i]) diff += (a[i] - b[i]) ** 2;
  }
  return Math.sqrt(diff / (norm || 1));
}

describe('WebGPU provider vs plain-loop reference (float32)', () => {
  for (const family of ['gpt2', 'llama', 'gemma2'] as const) {
    it(`matches logits and every hook point: ${family}`, async (t) => {
      if (skipWithoutWebgpu(t, lane.unavailable)) return;
      const { model, cfg, want } = await fixture(family, 'float32');
      const hooks = hooksOf(family, model, cfg, want);
      const got = await model.run({ ids: IDS, hooks });
      for (const h of hooks) assertMatches(h, got.activations.get(h), want.get(h));
      const worst = Math.max(...hooks.map((h) => closeness(got.activations.get(h)!.data, want.get(h)!.data)));
      t.diagnostic(`${family} float32 on webgpu: ${hooks.length} hook points, worst relative error ${worst.toExponential(2)}`);
    });
  }
});

describe('WebGPU provider vs plain-loop reference (float16 weights and products)', () => {
  for (const family of ['gpt2', 'llama', 'gemma2'] as const) {
    it(`every hook within ${F16_TENSOR_TOL} (whole tensor) and ${F16_ELEMENT_TOL} (each element) of the reference on the float16-rounded weights: ${family}`, async (t) => {
      if (skipWithoutWebgpu(t, lane.unavailable)) return;
      const { model, cfg, want } = await fixture(family, 'float16');
      const hooks = hooksOf(family, model, cfg, want);
      const got = await model.run({ ids: IDS, hooks });
      let worstTensor = 0;
      let worstElement = 0;
      for (const h of hooks) {
        assertMatches(h, got.activations.get(h), want.get(h), F16_ELEMENT_TOL);
        const e = tensorError(got.activations.get(h)!.data, want.get(h)!.data);
        assert.ok(e <= F16_TENSOR_TOL, `${h}: ‖got − want‖/‖want‖ = ${e.toExponential(2)} > ${F16_TENSOR_TOL}`);
        worstTensor = Math.max(worstTensor, e);
        worstElement = Math.max(worstElement, closeness(got.activations.get(h)!.data, want.get(h)!.data));
      }
      // Half precision really ran: float32 arithmetic on the rounded weights agrees to ~5e-6.
      assert.ok(worstTensor > 1e-4, `float16 run agrees with float32 arithmetic to ${worstTensor.toExponential(2)}: were the products in float32?`);
      t.diagnostic(`${family} float16 on webgpu: worst hook ${worstTensor.toExponential(2)} (whole tensor), ${worstElement.toExponential(2)} (element)`);
    });
  }
});
