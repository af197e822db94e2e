/**
 * Steering operators beyond addition (ablate, set, cap along a direction) against the reference forward with the same
 * operator written from its definition, on a tiny GPT-2: every hook and the logits to 1e-4; the component along the
 * direction afterwards is what the operator promises (0 / v / min(a, v)); positions left alone are untouched;
 * steering only the generated tokens gives the same text with and without the KV cache.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hookName, type HookName } from '../../src/engine/hooks';
import type { Model } from '../../src/engine/model';
import { referenceForward, type Weights } from '../../src/engine/reference/gpt2';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import type { SteeringSpec, SteerOp, SteerPointName } from '../../src/engine/results';
import { generate, meanResidNorm, nextTokenEffect, steerAdds } from '../../src/engine/steering/steer';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

const TOL = 1e-4;
const D = 16;
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13];
let tiny: TinyModel;
let model: Model;
let W: Weights;
let cfg: ModelConfig;
before(async () => {
  tiny = await loadTinyModel('steering-ops', { nLayers: 3, dModel: D, nHeads: 4, dMlp: 48, nCtx: 40, vocabSize: 50257 }, { seed: 77, std: 0.3 });
  ({ model, weights: W, cfg } = tiny);
});
after(() => tiny?.dispose());

const direction = Float32Array.from({ length: D }, (_, i) => Math.cos(i * 0.9 + 0.3) * 2.5); // not unit length on purpose
const unit = (() => {
  const n = Math.hypot(...direction);
  return Float32Array.from(direction, (x) => x / n);
})();

/** The reference's operator input: the unit direction on the positions steered, zero rows elsewhere. */
function referenceOp(op: SteerOp, value: number, layer: number, point: SteerPointName, positions: number[] | 'all', P: number) {
  const dir = new Float32Array(P * D);
  for (let p = 0; p < P; p++) if (positions === 'all' || positions.includes(p)) dir.set(unit, p * D);
  const floor = op === 'cap' ? 0 : -Infinity;
  return new Map([[`${layer}:${point}`, { dir, value: op === 'ablate' ? 0 : value, floor }]]);
}

const along = (x: Float32Array, p: number) => {
  let a = 0;
  for (let d = 0; d < D; d++) a += x[p * D + d] * unit[d];
  return a;
};

describe('steering operators against the reference', () => {
  const cases: { op: SteerOp; value?: number; point: SteerPointName; layer: number; positions: number[] | 'all' }[] = [
    { op: 'ablate', point: 'hook_resid_post', layer: 0, positions: 'all' },
    { op: 'set', value: 3, point: 'hook_resid_mid', layer: 1, positions: 'all' },
    { op: 'cap', value: 0.5, point: 'hook_resid_pre', layer: 2, positions: 'all' },
    { op: 'set', value: -2, point: 'hook_resid_pre', layer: 1, positions: [2, 5, 9] },
  ];
  for (const c of cases) {
    it(`${c.op}${c.value !== undefined ? ` ${c.value}` : ''} at blocks.${c.layer}.${c.point}, positions ${c.positions}`, async () => {
      const spec: SteeringSpec = {
        vector: direction,
        layer: c.layer,
        point: c.point,
        strength: 123, // ignored by these operators
        positions: c.positions === 'all' ? { kind: 'all' } : { kind: 'set', positions: c.positions },
        op: c.op,
        value: c.value,
      };
      const at = hookName(c.layer, c.point);
      const hooks: HookName[] = [at, 'logits', hookName(cfg.nLayers - 1, 'hook_resid_post')];
      const P = IDS.length;
      const plain = await model.run({ ids: IDS, hooks });
      const got = await model.run({ ids: IDS, hooks, steer: steerAdds(spec, 0, P) });
      const want = referenceForward(cfg, W, IDS, new Map(), { project: referenceOp(c.op, c.value ?? 0, c.layer, c.point, c.positions, P) });
      for (const h of hooks) {
        const a = got.activations.get(h)!.data;
        const b = want.get(h)!.data;
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
        assert.ok(worst <= TOL, `${h}: ${worst}`);
      }
      // What the operator promises, at the hook it acts on.
      const before = plain.activations.get(at)!.data;
      const after = got.activations.get(at)!.data;
      let moved = false;
      for (let p = 0; p < P; p++) {
        const on = c.positions === 'all' || c.positions.includes(p);
        const a0 = along(before, p);
        const a1 = along(after, p);
        if (!on) {
          for (let d = 0; d < D; d++) assert.equal(after[p * D + d], before[p * D + d], `position ${p} is left alone`);
          continue;
        }
        const expected = c.op === 'ablate' ? 0 : c.op === 'set' ? c.value! : Math.min(a0, c.value!);
        assert.ok(Math.abs(a1 - expected) <= 1e-5 * Math.max(1, Math.abs(expected)), `position ${p}: component ${a1}, expected ${expected} (was ${a0})`);
        if (Math.abs(a1 - a0) > 1e-6) moved = true;
        // Only the component along the direction changed.
        for (let d = 0; d < D; d++) assert.ok(Math.abs(after[p * D + d] - (before[p * D + d] + (a1 - a0) * unit[d])) <= 1e-5, `position ${p}, d ${d}`);
      }
      assert.ok(moved, 'the operator changed something on this prompt');
    });
  }

  it('only the generated tokens (positions from the prompt length): the same text with and without the KV cache', async () => {
    const settings = { maxNewTokens: 10, temperature: 0, topP: 1, seed: 0 };
    const spec: SteeringSpec = { vector: direction, layer: 1, point: 'hook_resid_post', strength: 0, positions: { kind: 'from', pos: IDS.length }, op: 'set', value: 6 };
    const cached = await generate(model, IDS, settings, spec, { useCache: true });
    const full = await generate(model, IDS, settings, spec, { useCache: false });
    const plain = await generate(model, IDS, settings);
    assert.deepEqual(cached.ids, full.ids);
    assert.equal(cached.ids[0], plain.ids[0], 'the first token comes from the prompt alone, which is not steered');
    assert.notDeepEqual(cached.ids, plain.ids, 'setting the component on the generated tokens changes the text');
  });

  it('the next-token effect when only generated tokens are steered: the baseline itself, with the scale generation applies', async () => {
    const text = model.tokenizer.decode(IDS);
    const spec: SteeringSpec = { vector: direction, layer: 1, point: 'hook_resid_pre', strength: 3, positions: { kind: 'from', pos: IDS.length } };
    const e = await nextTokenEffect(model, text, spec, 5, { generated: 1 });
    assert.equal(e.kl, 0);
    assert.deepEqual(e.steered, e.baseline);
    assert.equal(e.scale, 3);
    const norm = await meanResidNorm(model, model.tokenizer.encodeForModel(text).ids, 1, 'hook_resid_pre');
    const rel = await nextTokenEffect(model, text, { ...spec, relative: true, strength: 0.5 }, 5, { generated: 1 });
    assert.ok(Math.abs(rel.scale - (0.5 * norm) / Math.hypot(...direction)) <= 1e-6 * rel.scale, `${rel.scale}`);
    assert.equal((await nextTokenEffect(model, text, { ...spec, op: 'ablate' }, 5, { generated: 1 })).scale, 0);
  });

  it('an operator that needs a value without one, a zero vector, two operators at one point: refused by name', async () => {
    const base: SteeringSpec = { vector: direction, layer: 0, point: 'hook_resid_post', strength: 1, positions: { kind: 'all' } };
    assert.throws(() => steerAdds({ ...base, op: 'set' }, 0, 3), /the set operator needs a value .*got undefined/);
    assert.throws(() => steerAdds({ ...base, op: 'cap', value: NaN }, 0, 3), /the cap operator needs a value/);
    assert.throws(() => steerAdds({ ...base, op: 'ablate', vector: new Float32Array(D) }, 0, 3), /the vector is zero: it has no direction to ablate along/);
    assert.throws(() => steerAdds({ ...base, op: 'scale' as SteerOp }, 0, 3), /unknown operator "scale"; use add, ablate, cap, set/);
    const one = steerAdds({ ...base, op: 'ablate' }, 0, IDS.length);
    await assert.rejects(model.run({ ids: IDS, hooks: ['logits'], steer: [...one, ...one] }), /two projections at blocks\.0\.hook_resid_post; one operator per point/);
  });
});
