/**
 * Steering on tiny random GPT-2 checkpoints against the independent plain-loop reference forward: the positions
 * logic of steerAdds ('all', 'from', 'set', relative strength), KL and the degradation loss, contrastive vectors,
 * KV-cached generation against full recomputation, zero vectors and overflowing strengths.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { Model } from '../../src/engine/model';
import { referenceForward, type Weights } from '../../src/engine/reference/gpt2';
import type { GenerationSettings, SteeringSpec, SteerPointName } from '../../src/engine/results';
import { generate, meanResidNorm, nextTokenEffectIds, sampleToken, steerAdds, sweep } from '../../src/engine/steering/steer';
import { contrastiveVector } from '../../src/engine/steering/vectors';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

const TOL = 1e-4;
let model: Model;
let W: Weights;
let cfg: ModelConfig;

let tiny: TinyModel;
before(async () => {
  tiny = await loadTinyModel('steering', { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 32, vocabSize: 50257 }, { seed: 4242, std: 0.3 });
  ({ model, weights: W, cfg } = tiny);
});
after(() => tiny?.dispose());

const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13];
const D = 16;
const V = 50257;

function vec(seed: number, scale = 1): Float32Array {
  return Float32Array.from({ length: D }, (_, i) => Math.sin(seed * 13.1 + i * 1.7) * scale);
}

/** Hand-built [P·D] additions for a spec (independent of steerAdds): the rule each position kind states. */
function handAdds(spec: SteeringSpec, P: number, scale: number): Float32Array {
  const out = new Float32Array(P * D);
  for (let p = 0; p < P; p++) {
    const on = spec.positions.kind === 'all' || (spec.positions.kind === 'from' ? p >= spec.positions.pos : spec.positions.positions.includes(p));
    if (on) for (let d = 0; d < D; d++) out[p * D + d] = spec.vector[d] * scale;
  }
  return out;
}

function worstRel(a: Float32Array, b: Float32Array): number {
  let ss = 0;
  for (const x of b) ss += x * x;
  const rms = Math.sqrt(ss / b.length) || 1;
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (Math.abs(b[i]) + rms));
  return worst;
}

/** log softmax in float64, written out here so the tests do not lean on the code under test. */
function logProbs(logits: Float32Array, p: number): Float64Array {
  const row = logits.subarray(p * V, (p + 1) * V);
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  let s = 0;
  for (const x of row) s += Math.exp(x - max);
  return Float64Array.from(row, (x) => x - max - Math.log(s));
}

function refRowNorms(ids: number[], hook: string): number[] {
  const act = referenceForward(cfg, W, ids).get(hook as never)!.data;
  return ids.map((_, p) => Math.hypot(...act.subarray(p * D, (p + 1) * D)));
}

describe('steerAdds against the reference forward', () => {
  const cases: [string, SteeringSpec][] = [
    ['all', { vector: vec(1), layer: 1, point: 'hook_resid_pre', strength: 1.5, positions: { kind: 'all' } }],
    ['from:4', { vector: vec(2), layer: 0, point: 'hook_resid_mid', strength: 2, positions: { kind: 'from', pos: 4 } }],
    ['set 1,5,7', { vector: vec(3), layer: 2, point: 'hook_resid_post', strength: -3, positions: { kind: 'set', positions: [1, 5, 7] } }],
    ['relative, all', { vector: vec(4, 0.2), layer: 1, point: 'hook_resid_mid', strength: 0.8, relative: true, positions: { kind: 'all' } }],
    ['relative, from:3', { vector: vec(5), layer: 2, point: 'hook_resid_pre', strength: 1.2, relative: true, positions: { kind: 'from', pos: 3 } }],
  ];
  for (const [name, spec] of cases) {
    it(`steered logits and activations equal the reference with the same per-position additions (${name})`, async () => {
      const P = IDS.length;
      let scale = spec.strength;
      let meanNorm: number | undefined;
      if (spec.relative) {
        // Independent: mean of the reference's row norms over positions 1..P-1, then strength × that / ‖v‖.
        const norms = refRowNorms(IDS, `blocks.${spec.layer}.${spec.point}`).slice(1);
        const want = norms.reduce((a, b) => a + b, 0) / norms.length;
        meanNorm = await meanResidNorm(model, IDS, spec.layer, spec.point);
        assert.ok(Math.abs(meanNorm - want) <= TOL * want, `mean norm ${meanNorm} vs reference ${want}`);
        scale = (spec.strength * want) / Math.hypot(...spec.vector);
      }
      const adds = steerAdds(spec, 0, P, meanNorm);
      const got = await model.run({ ids: IDS, hooks: ['logits', `blocks.${cfg.nLayers - 1}.hook_resid_post`], steer: adds });
      const want = referenceForward(cfg, W, IDS, new Map([[`${spec.layer}:${spec.point}`, handAdds(spec, P, scale)]]));
      for (const h of ['logits', `blocks.${cfg.nLayers - 1}.hook_resid_post`] as const) {
        const w = worstRel(got.activations.get(h)!.data, want.get(h)!.data);
        assert.ok(w <= TOL, `${h}: worst relative error ${w.toExponential(2)}`);
      }
      // And steering did change the output (the additions are not accidentally empty).
      const base = referenceForward(cfg, W, IDS).get('logits')!.data;
      assert.ok(worstRel(base, want.get('logits')!.data) > 1e-3, 'steering changed the logits');
    });
  }

  it('a call that covers no steered position gets no addition; one that covers all gets a single [D] row', () => {
    const spec: SteeringSpec = { vector: vec(1), layer: 0, point: 'hook_resid_pre', strength: 1, positions: { kind: 'from', pos: 10 } };
    assert.deepEqual(steerAdds(spec, 0, 10), []);
    assert.equal(steerAdds(spec, 10, 1)[0].add.length, D);
    assert.equal(steerAdds(spec, 8, 4)[0].add.length, 4 * D);
    assert.deepEqual(steerAdds({ ...spec, positions: { kind: 'set', positions: [3] } }, 4, 1), []);
  });
});

describe('next-token effect', () => {
  it('a zero vector gives KL exactly 0 and identical top tokens', async () => {
    const e = await nextTokenEffectIds(model, IDS, { vector: new Float32Array(D), layer: 1, point: 'hook_resid_pre', strength: 5, positions: { kind: 'all' } });
    assert.equal(e.kl, 0);
    assert.equal(e.nonFinite, false);
    assert.deepEqual(e.steered, e.baseline);
    for (const d of e.deltas) assert.equal(d.base, d.steered);
  });

  it('KL(baseline ‖ steered) and the deltas equal an independent computation from the reference logits', async () => {
    const spec: SteeringSpec = { vector: vec(7), layer: 1, point: 'hook_resid_post', strength: 2, positions: { kind: 'all' } };
    const e = await nextTokenEffectIds(model, IDS, spec, 10);
    const P = IDS.length;
    const lb = logProbs(referenceForward(cfg, W, IDS).get('logits')!.data, P - 1);
    const add = Float32Array.from(spec.vector, (x) => x * 2);
    const ls = logProbs(referenceForward(cfg, W, IDS, new Map([['1:hook_resid_post', add]])).get('logits')!.data, P - 1);
    let kl = 0;
    for (let i = 0; i < V; i++) kl += Math.exp(lb[i]) * (lb[i] - ls[i]);
    assert.ok(kl > 0.01, `the steering is strong enough to measure (KL ${kl})`);
    assert.ok(Math.abs(e.kl - kl) <= 1e-4 * Math.max(1, kl), `KL ${e.kl} vs reference ${kl}`);
    assert.equal(e.scale, 2);
    for (const d of e.deltas) {
      assert.ok(Math.abs(d.base - Math.exp(lb[d.id])) <= 1e-5, `base prob of ${d.id}`);
      assert.ok(Math.abs(d.steered - Math.exp(ls[d.id])) <= 1e-5, `steered prob of ${d.id}`);
    }
    // The steered top token is the reference's argmax.
    let arg = 0;
    for (let i = 1; i < V; i++) if (ls[i] > ls[arg]) arg = i;
    assert.equal(e.steered[0].id, arg);
  });

  it('a strength so large that the additions overflow gives nonFinite, an empty steered list and the baseline — no throw', async () => {
    const e = await nextTokenEffectIds(model, IDS, { vector: vec(1), layer: 1, point: 'hook_resid_pre', strength: 1e40, positions: { kind: 'all' } });
    assert.equal(e.nonFinite, true);
    assert.deepEqual(e.steered, []);
    assert.ok(Number.isNaN(e.kl));
    assert.equal(e.baseline.length, 10);
    assert.match(e.nonFiniteReason!, /strength 1e\+40 overflows float32/);
  });

  it('a strength whose addition overflows the norms (finite logits, but every later layer sees zeros) is nonFinite, naming the norm — not an ordinary result', async () => {
    // 1e30 is finite in float32 after scaling, and ORT's LayerNorm then divides by Inf: the logits stay finite.
    for (const strength of [1e20, 1e30, -1e30]) {
      const big = await nextTokenEffectIds(model, IDS, { vector: vec(1), layer: 1, point: 'hook_resid_pre', strength, positions: { kind: 'all' } });
      assert.equal(big.nonFinite, true, `strength ${strength}`);
      assert.deepEqual(big.steered, []);
      assert.ok(Number.isNaN(big.kl));
      assert.equal(big.baseline.length, 10);
      assert.match(big.nonFiniteReason!, /strength -?1e\+(20|30) adds a vector of norm .* which overflows the model's normalisation at blocks\.1\.ln1/);
    }
    // Large but representable: an ordinary result (the vector drowns the residual, which is a legitimate effect).
    const large = await nextTokenEffectIds(model, IDS, { vector: vec(1), layer: 1, point: 'hook_resid_pre', strength: 1e15, positions: { kind: 'all' } });
    assert.equal(large.nonFinite, false);
    assert.ok(large.kl > 0);
  });

  it('positions past the end of the prompt are refused, naming them and the prompt length (they would steer nothing)', async () => {
    const base = { vector: vec(1), layer: 1, point: 'hook_resid_pre' as const, strength: 2 };
    await assert.rejects(nextTokenEffectIds(model, IDS, { ...base, positions: { kind: 'set', positions: [50] } }), /positions 50: past the end of the prompt, which has 10 tokens \(positions 0–9\)/);
    await assert.rejects(nextTokenEffectIds(model, IDS, { ...base, positions: { kind: 'set', positions: [2, 10, 12] } }), /positions 2,10,12: positions 10,12 past the end of the prompt/);
    await assert.rejects(nextTokenEffectIds(model, IDS, { ...base, positions: { kind: 'from', pos: 99 } }), /positions from:99 start past the end of the prompt, which has 10 tokens/);
    await assert.rejects(nextTokenEffectIds(model, IDS, { ...base, positions: { kind: 'from', pos: 10 } }), /from:10/);
    // The last position is fine.
    assert.equal((await nextTokenEffectIds(model, IDS, { ...base, positions: { kind: 'from', pos: 9 } })).nonFinite, false);
  });
});

describe('contrastive vectors', () => {
  const pairs = [
    { positive: 'The cat sat on the mat', negative: 'The dog ran in the park', line: 1 },
    { positive: 'I love this', negative: 'I hate that thing', line: 4 },
  ];
  for (const position of ['last', 'mean'] as const) {
    for (const point of ['hook_resid_pre', 'hook_resid_mid'] as SteerPointName[]) {
      it(`equals the hand-computed mean difference of reference activations (${position}, ${point})`, async () => {
        const v = await contrastiveVector(model, pairs, 1, point, { position });
        const read = (text: string) => {
          const ids = model.tokenizer.encode(text).ids;
          const a = referenceForward(cfg, W, ids).get(`blocks.1.${point}` as never)!.data;
          const P = ids.length;
          const out = new Float64Array(D);
          for (let d = 0; d < D; d++) {
            if (position === 'last') out[d] = a[(P - 1) * D + d];
            else for (let p = 0; p < P; p++) out[d] += a[p * D + d] / P;
          }
          return out;
        };
        const want = new Float32Array(D);
        for (const p of pairs) {
          const a = read(p.positive);
          const b = read(p.negative);
          for (let d = 0; d < D; d++) want[d] += (a[d] - b[d]) / pairs.length;
        }
        const w = worstRel(v.vector, want);
        assert.ok(w <= TOL, `worst relative error ${w.toExponential(2)}`);
        assert.equal(v.source, 'contrastive');
        assert.equal(v.layer, 1);
        assert.equal(v.point, point);
      });
    }
  }
});

describe('generation with the KV cache', () => {
  const prompt = IDS.slice(0, 6);
  const greedy: GenerationSettings = { maxNewTokens: 14, temperature: 0, topP: 1, seed: 0 };
  const sampled: GenerationSettings = { maxNewTokens: 14, temperature: 0.9, topP: 0.9, seed: 1234 };
  const specs: [string, SteeringSpec | undefined][] = [
    ['unsteered', undefined],
    ['all', { vector: vec(1), layer: 1, point: 'hook_resid_pre', strength: 2, positions: { kind: 'all' } }],
    ['from a generated position', { vector: vec(2), layer: 0, point: 'hook_resid_post', strength: 3, positions: { kind: 'from', pos: 8 } }],
    ['set of prompt positions', { vector: vec(3), layer: 2, point: 'hook_resid_mid', strength: 3, positions: { kind: 'set', positions: [1, 3, 5] } }],
    ['relative', { vector: vec(4), layer: 1, point: 'hook_resid_mid', strength: 1, relative: true, positions: { kind: 'all' } }],
  ];
  for (const [name, spec] of specs) {
    for (const [mode, settings] of [['greedy', greedy], ['sampled', sampled]] as const) {
      it(`equals full recomputation token for token (${mode}, ${name})`, async () => {
        const cached = await generate(model, prompt, settings, spec, { useCache: true });
        const full = await generate(model, prompt, settings, spec, { useCache: false });
        assert.deepEqual(cached.ids, full.ids);
        assert.equal(cached.text, full.text);
        assert.ok(cached.ids.length > 0);
        if (cached.ids.length === settings.maxNewTokens) assert.equal(cached.calls, settings.maxNewTokens);
      });
    }
  }

  it('the cached greedy tokens are the reference forward’s argmax at every step (steered, from a generated position)', async () => {
    const spec = specs[2][1]!;
    const g = await generate(model, prompt, { ...greedy, maxNewTokens: 6 }, spec);
    const seq = [...prompt];
    for (const id of g.ids) {
      const P = seq.length;
      const logits = referenceForward(cfg, W, seq, new Map([[`${spec.layer}:${spec.point}`, handAdds(spec, P, spec.strength)]])).get('logits')!.data;
      const lp = logProbs(logits, P - 1);
      let arg = 0;
      for (let i = 1; i < V; i++) if (lp[i] > lp[arg]) arg = i;
      assert.equal(id, arg, `step at position ${P}`);
      seq.push(id);
    }
  });

  it('a zero vector generates exactly the unsteered text; steering changes it; the same seed repeats', async () => {
    const zero: SteeringSpec = { vector: new Float32Array(D), layer: 1, point: 'hook_resid_pre', strength: 3, positions: { kind: 'all' } };
    for (const s of [greedy, sampled]) {
      const a = await generate(model, prompt, s);
      const b = await generate(model, prompt, s, zero);
      assert.deepEqual(b.ids, a.ids);
      assert.deepEqual((await generate(model, prompt, s)).ids, a.ids, 'same seed, same tokens');
    }
    const steered = await generate(model, prompt, greedy, { ...zero, vector: vec(1, 3) });
    assert.notDeepEqual(steered.ids, (await generate(model, prompt, greedy)).ids);
  });

  it('an overflowing strength stops with nonFinite instead of throwing', async () => {
    const g = await generate(model, prompt, greedy, { vector: vec(1), layer: 0, point: 'hook_resid_pre', strength: 1e40, positions: { kind: 'all' } });
    assert.equal(g.nonFinite, true);
    assert.deepEqual(g.ids, []);
    // Overflowing a norm stops it too, with the reason, instead of generating from zeros.
    const n = await generate(model, prompt, greedy, { vector: vec(1), layer: 1, point: 'hook_resid_mid', strength: 1e30, positions: { kind: 'all' } });
    assert.equal(n.nonFinite, true);
    assert.match(n.nonFiniteReason!, /overflows the model's normalisation at blocks\.1\.ln2/);
  });

  it('refuses steering positions generation never reads, and temperatures that underflow, naming the setting', async () => {
    const base = { vector: vec(1), layer: 1, point: 'hook_resid_pre' as const, strength: 2 };
    // from:N may start among generated tokens (all but the last are read again), not beyond them.
    await assert.rejects(generate(model, prompt, { ...greedy, maxNewTokens: 4 }, { ...base, positions: { kind: 'from', pos: 9 } }), /from:9 start past the end of the prompt, which has 6 tokens .* generation adds only 3 more/);
    assert.ok((await generate(model, prompt, { ...greedy, maxNewTokens: 4 }, { ...base, positions: { kind: 'from', pos: 8 } })).ids.length > 0);
    await assert.rejects(generate(model, prompt, greedy, { ...base, positions: { kind: 'set', positions: [1, 7] } }), /positions 1,7: position 7 past the end of the prompt, which has 6 tokens/);
    for (const t of [1e-320, 5e-324, 1e-7]) {
      await assert.rejects(generate(model, prompt, { ...greedy, temperature: t }), /temperature .* is too small to sample with: .*use 0 for greedy/);
    }
    for (const [k, v] of [['temperature', NaN], ['temperature', Infinity], ['topP', NaN], ['topP', 0], ['seed', NaN], ['seed', -1], ['seed', 2 ** 32], ['maxNewTokens', Infinity]] as const) {
      await assert.rejects(generate(model, prompt, { ...greedy, [k]: v }), new RegExp(k === 'topP' ? 'top-p' : k), `${k} = ${v}`);
    }
    // A temperature at the threshold still samples; sampleToken itself treats anything below it as greedy.
    const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const arg = logits.indexOf(Math.max(...logits));
    for (const t of [1e-320, 1e-300, 1e-9]) assert.equal(sampleToken(logits, t, 1, () => 0.5), arg);
  });

  it('stops at the context length', async () => {
    const g = await generate(model, IDS, { ...greedy, maxNewTokens: 100 });
    assert.ok(IDS.length + g.ids.length <= cfg.nCtx + 1);
    assert.ok(g.ids.length < 100);
  });
});

describe('sweeps', () => {
  it('KL, target probability and neutral-text loss equal independent computations; overflow gives NaN', async () => {
    const text = 'The quick brown fox jumps';
    const neutral = 'It was a sunny day and we went outside.';
    const v = vec(9);
    const r = await sweep(model, text, v, { layers: [0, 2], strengths: [0, 1.5, 1e40], point: 'hook_resid_mid', relative: false, targetText: ' over', neutralText: neutral });
    const ids = model.tokenizer.encode(text).ids;
    const nIds = model.tokenizer.encode(neutral).ids;
    const target = model.tokenizer.encode(' over').ids[0];
    assert.equal(r.target!.id, target);
    const P = ids.length;
    const lb = logProbs(referenceForward(cfg, W, ids).get('logits')!.data, P - 1);
    const loss = (logits: Float32Array) => {
      let s = 0;
      for (let p = 0; p < nIds.length - 1; p++) s -= logProbs(logits, p)[nIds[p + 1]];
      return s / (nIds.length - 1);
    };
    const baseLoss = loss(referenceForward(cfg, W, nIds).get('logits')!.data);
    assert.ok(Math.abs(r.baselineNeutralLoss - baseLoss) <= 1e-4 * baseLoss, `baseline loss ${r.baselineNeutralLoss} vs ${baseLoss}`);
    assert.ok(Math.abs(r.baselineTargetProb - Math.exp(lb[target])) <= 1e-6);
    for (const [li, layer] of r.layers.entries()) {
      for (const [si, strength] of r.strengths.entries()) {
        if (strength > 1e30) {
          assert.ok(Number.isNaN(r.kl[li][si]) && Number.isNaN(r.targetProb[li][si]) && Number.isNaN(r.neutralLoss[li][si]), 'overflow → NaN');
          continue;
        }
        const add = Float32Array.from(v, (x) => x * strength);
        const steer = new Map([[`${layer}:hook_resid_mid`, add]]);
        const ls = logProbs(referenceForward(cfg, W, ids, steer).get('logits')!.data, P - 1);
        let kl = 0;
        for (let i = 0; i < V; i++) kl += Math.exp(lb[i]) * (lb[i] - ls[i]);
        const nl = loss(referenceForward(cfg, W, nIds, steer).get('logits')!.data);
        assert.ok(Math.abs(r.kl[li][si] - kl) <= 1e-4 * Math.max(1, kl), `kl [${layer}, ${strength}] ${r.kl[li][si]} vs ${kl}`);
        assert.ok(Math.abs(r.targetProb[li][si] - Math.exp(ls[target])) <= 1e-5, `target prob [${layer}, ${strength}]`);
        assert.ok(Math.abs(r.neutralLoss[li][si] - nl) <= 1e-4 * nl, `neutral loss [${layer}, ${strength}] ${r.neutralLoss[li][si]} vs ${nl}`);
        if (strength === 0) assert.equal(r.kl[li][si], 0);
      }
    }
  });
});
