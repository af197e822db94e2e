// The cost model of attribution graphs: the feature-row plan under a memory budget and the estimate's arithmetic.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backwardWorkBytes, estimateCircuit, keptGraphBytes, planFeatureRows } from '../../src/engine/circuits/estimate';

describe('planFeatureRows', () => {
  const base = { nActive: 10_000, nSources: 12_000, nLogits: 10, errorsAndTokens: 1_000, requested: 1024, workBytes: 50e6, usedBytes: 1e9 };
  /** What the plan must fit, written out from its definition. */
  const need = (F: number, rowBytes: number[]) =>
    base.usedBytes + base.nLogits * 8 * base.nSources + rowBytes.slice(0, F).reduce((a, b) => a + b, 0) + Math.max(base.workBytes, keptGraphBytes(F, 1_000, 10));

  it('without a budget, the requested rows (at most the active features)', () => {
    assert.deepEqual({ ...planFeatureRows(base), peakBytes: 0 }, { featureRows: 1024, memoryLimited: false, peakBytes: 0 });
    assert.equal(planFeatureRows({ ...base, requested: 1e9 }).featureRows, 10_000);
  });

  it('under a budget, the largest row count whose largest rows fit', () => {
    const rowBytes = Array.from({ length: base.nActive }, (_, i) => 8 * (base.nSources - i)); // descending
    const budget = need(300, rowBytes) + 1;
    const plan = planFeatureRows({ ...base, budgetBytes: budget, rowBytesDescending: rowBytes });
    assert.equal(plan.featureRows, 300);
    assert.equal(plan.memoryLimited, true);
    assert.ok(plan.peakBytes <= budget);
    assert.ok(need(301, rowBytes) > budget);
  });

  it('target directions held at once count against the budget', () => {
    const rowBytes = Array.from({ length: base.nActive }, () => 8 * base.nSources);
    const directionBytes = (F: number) => 4 * 768 * F;
    const budget = need(300, rowBytes) + directionBytes(300) + 1;
    const plan = planFeatureRows({ ...base, budgetBytes: budget, rowBytesDescending: rowBytes, directionBytes });
    assert.equal(plan.featureRows, 300);
    assert.ok(need(301, rowBytes) + directionBytes(301) > budget);
  });

  it('a budget below the logit rows is refused with the numbers', () => {
    assert.throws(() => planFeatureRows({ ...base, budgetBytes: base.usedBytes + 1e6 }), (e: Error) => {
      assert.match(e.message, /memory budget of 1\.0 GB is too small even for the logit rows: 1\.0 GB is in use already and the graph needs at least \d+ MB more \(10000 active features, 12000 sources\)/);
      return true;
    });
  });
});

describe('estimateCircuit', () => {
  const gpt2 = {
    nLayers: 12, dModel: 768, nHeads: 12, dAttn: 768, dMlp: 3072, vocabSize: 50257, params: 124e6, dSae: 24576,
    transcoderElemBytes: 4, activePerToken: 64, encoderColumnsStrided: true, encodersStreamed: true, unembedElemBytes: 4, maxFeatureNodes: 1024, baseBytes: 1e9,
    backwardSessionsPending: false, cores: 2,
  };
  it('counts the active features and rows, and grows with the prompt', () => {
    const e32 = estimateCircuit({ ...gpt2, tokens: 32 });
    const e128 = estimateCircuit({ ...gpt2, tokens: 128 });
    assert.equal(e32.activeFeatures, 12 * 32 * 64);
    assert.equal(e32.featureRows, 1024);
    assert.ok(e128.seconds > e32.seconds && e128.peakBytes > e32.peakBytes);
    assert.ok(Math.abs(e32.seconds - 0.5 - e32.parts.reduce((s, p) => s + p.seconds, 0)) < 1e-9, 'seconds = fixed + parts');
    // Twice the cores, (nearly) half the compute time.
    const fast = estimateCircuit({ ...gpt2, tokens: 128, cores: 4 });
    assert.ok(fast.seconds < e128.seconds * 0.75);
    assert.equal(estimateCircuit({ ...gpt2, tokens: 4, activePerToken: 64, maxFeatureNodes: 1e9 }).featureRows, 12 * 4 * 64);
  });
  it('backward work scales with the batch', () => {
    assert.equal(backwardWorkBytes(100, 10, 20, 5), 4 * 100 * (30 + 60 + 5));
  });
});
