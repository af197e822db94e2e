/**
 * Shared by the GPU-path lane (test/gpu/*.test.ts, run by `npm run test:gpu`): models loaded on ONNX Runtime's WebGPU
 * provider only, and what happens when no WebGPU adapter can be had. Inside the lane (RESIDUAL_GPU_LANE=1, set by
 * scripts/gpu/lane.sh after it has set up Mesa's lavapipe) that is a failure: a lane that quietly ran nothing, or
 * ran on the CPU, would prove nothing. Outside it (a file run directly, without the driver) the tests skip, saying how
 * to run them.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before } from 'node:test';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { Model, type ModelLoadOptions } from '../../src/engine/model';
import type { WeightPrecision } from '../../src/engine/onnx/ops';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

export const IN_LANE = process.env.RESIDUAL_GPU_LANE === '1';
const HOW = 'run `npm run test:gpu`: it fetches a software Vulkan driver (Mesa lavapipe) and runs these tests on it';

/**
 * Loads `dir` on the WebGPU provider alone (named explicitly: the default order skips software adapters), in the
 * precision named (the default, 'auto', would pick float16 wherever the adapter computes it).
 */
export async function loadOnWebgpu(dir: string, opts: Omit<ModelLoadOptions, 'providers' | 'precision'> & { precision: WeightPrecision }): Promise<Model> {
  const model = await Model.load(dir, { ...opts, providers: ['webgpu'] });
  assert.equal(model.provider, 'webgpu', 'the model runs on the WebGPU provider, not a fallback');
  assert.equal(model.info.precision, opts.precision, 'the weights are in the precision asked for');
  return model;
}

/** Whether this process gets a WebGPU adapter, by loading a one-layer model on it: undefined when it does, else why not. */
export async function webgpuUnavailable(): Promise<string | undefined> {
  silenceOrt();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-gpu-probe-'));
  try {
    writeRandomGpt2(path.join(root, 'model'), { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 50257 }, { seed: 1, tokenizerJson: gpt2TokenizerJSON() });
    const model = await loadOnWebgpu(path.join(root, 'model'), { cacheDir: path.join(root, 'cache'), precision: 'float32' });
    await model.dispose();
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/**
 * Call first in every lane test. Without an adapter (`unavailable` holds the reason): inside the lane the test fails
 * (throws); outside it the test is marked skipped, saying how to run it, and true is returned (return at once).
 */
export function skipWithoutWebgpu(t: { skip(message: string): void }, unavailable: string | undefined): boolean {
  if (unavailable === undefined) return false;
  if (IN_LANE) throw new Error(`RESIDUAL_GPU_LANE=1 but no model runs on the WebGPU provider: ${unavailable}`);
  t.skip(`no WebGPU adapter (${unavailable.slice(0, 200)}); ${HOW}`);
  return true;
}

/**
 * One lane file's fixture: a temporary root with a cache folder, the adapter check before its tests (`unavailable`,
 * for skipWithoutWebgpu) and, after them, the clean-ups registered (models to dispose) and the root removed.
 */
export function laneFixture(prefix: string) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const fixture = {
    root,
    cacheDir: path.join(root, 'cache'),
    unavailable: undefined as string | undefined,
    cleanup: [] as (() => Promise<void>)[],
  };
  before(async () => {
    fixture.unavailable = await webgpuUnavailable();
  });
  after(async () => {
    for (const c of fixture.cleanup) await c();
    fs.rmSync(root, { recursive: true, force: true });
  });
  return fixture;
}
