/**
 * The engine's numeric helpers (src/engine/numeric.ts) against plain loops written from the definitions, on random
 * rows and on the edge cases the callers rely on: −∞ entries, NaN rows, ties, k beyond the row, float64 sums.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { argmax, entropy, klDivergence, logSoftmax, logSumExp, softmax, softmaxWeights, topK } from '../../src/engine/numeric';

/** Deterministic rows of moderate values (no overflow of a plain exp), as float32 like the model's logits. */
function randomRow(n: number, seed: number, scale = 4): Float32Array {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return Float32Array.from({ length: n }, () => (next() * 2 - 1) * scale);
}

// References straight from the definitions (no max shift: the rows above keep exp finite).
function refSoftmax(row: ArrayLike<number>, T = 1): number[] {
  let z = 0;
  for (let i = 0; i < row.length; i++) z += Math.exp(row[i] / T);
  return Array.from(row, (x) => Math.exp(x / T) / z);
}
function refLogSumExp(row: ArrayLike<number>): number {
  let z = 0;
  for (let i = 0; i < row.length; i++) z += Math.exp(row[i]);
  return Math.log(z);
}
function refTopIds(row: ArrayLike<number>, k: number): number[] {
  const ids = Array.from({ length: row.length }, (_, i) => i);
  ids.sort((a, b) => (row[b] > row[a] ? 1 : row[b] < row[a] ? -1 : a - b));
  return ids.slice(0, k);
}
function refEntropy(p: ArrayLike<number>): number {
  let h = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) h += -p[i] * Math.log(p[i]);
  return h;
}

function close(actual: number, expected: number, what: string, rel = 1e-12, abs = 1e-15): void {
  assert.ok(Math.abs(actual - expected) <= abs + rel * Math.abs(expected), `${what}: ${actual} vs ${expected}`);
}
function closeAll(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rel?: number): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) close(actual[i], expected[i], `${what}[${i}]`, rel);
}

describe('argmax', () => {
  it('is the index of the largest entry, the lowest one on ties', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const row = randomRow(257, seed);
      let want = 0;
      for (let i = 0; i < row.length; i++) if (row[i] > row[want]) want = i;
      assert.equal(argmax(row), want);
    }
    assert.equal(argmax([1, 5, 2, 5, 5]), 1);
    assert.equal(argmax([-Infinity, -Infinity]), 0);
    assert.equal(argmax([-Infinity, -3, Infinity, Infinity]), 2);
  });
  it('never picks a NaN after the first index, and is 0 for an empty row', () => {
    assert.equal(argmax([1, NaN, 3, NaN]), 2);
    assert.equal(argmax([NaN, 7, 9]), 0, 'a NaN at 0 is never beaten (every comparison with it is false)');
    assert.equal(argmax([]), 0);
  });
});

describe('softmax', () => {
  it('equals exp(x/T) / Σ exp(x/T) on random rows, at several temperatures', () => {
    for (let seed = 1; seed <= 4; seed++) {
      const row = randomRow(1000, seed);
      for (const T of [1, 0.7, 2.5]) {
        const p = softmax(row, T);
        assert.ok(p instanceof Float64Array);
        closeAll(p, refSoftmax(row, T), `seed ${seed}, T ${T}`);
        const { weights, sum } = softmaxWeights(row, T);
        let max = -Infinity;
        for (const x of row) max = Math.max(max, x);
        for (let i = 0; i < row.length; i++) close(weights[i], Math.exp((row[i] - max) / T), `weight ${i}`);
        let s = 0;
        for (const w of weights) s += w;
        assert.equal(sum, s, 'the sum is of the weights, in index order');
      }
    }
  });
  it('does not overflow: it depends only on differences', () => {
    closeAll(softmax([1000, 1001]), [1 / (1 + Math.E), Math.E / (1 + Math.E)], '[1000, 1001]');
    closeAll(softmax([-1000, -1001, -1000]), [1 / (2 + 1 / Math.E), 1 / Math.E / (2 + 1 / Math.E), 1 / (2 + 1 / Math.E)], 'large negative');
    assert.equal(softmaxWeights([3e38, -3e38]).weights[0], 1, 'the largest weight is exactly 1');
  });
  it('gives −∞ entries probability 0 and the rest the softmax of the finite ones', () => {
    const row = [0.5, -Infinity, 2, -Infinity, -1];
    const p = softmax(row);
    assert.equal(p[1], 0);
    assert.equal(p[3], 0);
    const finite = refSoftmax([0.5, 2, -1]);
    closeAll([p[0], p[2], p[4]], finite, 'finite entries');
  });
  it('is NaN everywhere for a row with a NaN, an all −∞ row, or a +∞ entry', () => {
    for (const row of [[1, NaN, 2], [-Infinity, -Infinity], [0, Infinity, 1], [NaN]]) {
      assert.ok(softmax(row).every(Number.isNaN), JSON.stringify(row.map(String)));
    }
  });
  it('sums in float64 (a float32 sum of these weights would round to the largest alone)', () => {
    const n = 100_000;
    const row = new Float32Array(n + 1).fill(-20);
    row[0] = 0;
    const p = softmax(row);
    closeAll(p, refSoftmax(row), 'against the plain float64 loop');
    close(p[0], 1 / (1 + n * Math.exp(Math.fround(-20))), 'p[0] in closed form', 1e-10);
    assert.ok(p[0] < 1 - 1e-4);
  });
});

describe('logSumExp and logSoftmax', () => {
  it('equal ln Σ exp(x) and x − ln Σ exp(x) on random rows', () => {
    for (let seed = 1; seed <= 4; seed++) {
      const row = randomRow(777, seed, 8);
      const lse = refLogSumExp(row);
      close(logSumExp(row), lse, `lse seed ${seed}`);
      const lp = logSoftmax(row)!;
      assert.ok(lp instanceof Float64Array);
      closeAll(lp, Array.from(row, (x) => x - lse), `log softmax seed ${seed}`);
      const p = refSoftmax(row);
      for (let i = 0; i < row.length; i++) close(Math.exp(lp[i]), p[i], `exp(log p)[${i}]`, 1e-12);
    }
  });
  it('logSumExp: shifted by the maximum, and the limits of rows without a finite one', () => {
    close(logSumExp([1000, 1000]), 1000 + Math.LN2, '[1000, 1000]');
    close(logSumExp([-Infinity, 0, -Infinity]), 0, 'one finite entry');
    close(logSumExp([-1e4, 2]), 2, 'a negligible entry');
    assert.equal(logSumExp([]), -Infinity);
    assert.equal(logSumExp([-Infinity, -Infinity]), -Infinity);
    assert.equal(logSumExp([1, Infinity]), Infinity);
    assert.ok(Number.isNaN(logSumExp([1, NaN])));
    assert.ok(Number.isNaN(logSumExp([Infinity, NaN])));
    assert.ok(Number.isNaN(logSumExp([NaN, -Infinity])));
  });
  it('logSoftmax is undefined for any non-finite entry', () => {
    for (const row of [[1, NaN], [1, Infinity], [1, -Infinity], [NaN, NaN]]) assert.equal(logSoftmax(Float32Array.from(row)), undefined, String(row));
    assert.deepEqual(Array.from(logSoftmax([0])!), [0]);
  });
});

describe('klDivergence', () => {
  it('equals Σ p (ln p − ln q) on random distributions, and 0 against itself', () => {
    for (let seed = 1; seed <= 4; seed++) {
      const lp = logSoftmax(randomRow(500, seed))!;
      const lq = logSoftmax(randomRow(500, seed + 100))!;
      let want = 0;
      for (let i = 0; i < lp.length; i++) want += Math.exp(lp[i]) * (lp[i] - lq[i]);
      close(klDivergence(lp, lq), want, `seed ${seed}`, 1e-11);
      assert.equal(klDivergence(lp, lp), 0);
    }
  });
  it('drops p = 0 terms (even where q = 0 too) and clips rounding below 0', () => {
    const lp = [Math.log(0.5), -Infinity, Math.log(0.5)];
    const lq = [Math.log(0.25), -Infinity, Math.log(0.75)];
    close(klDivergence(lp, lq), 0.5 * Math.log(2) + 0.5 * Math.log(2 / 3), 'with a zero');
    assert.equal(klDivergence([Math.log(0.5), Math.log(0.5)], [Math.log(0.5) + 1e-17, Math.log(0.5) + 1e-17]), 0);
  });
});

describe('topK', () => {
  it('gives the k largest entries, largest first, with their softmax probabilities', () => {
    for (let seed = 1; seed <= 4; seed++) {
      const row = randomRow(3000, seed);
      const p = refSoftmax(row);
      for (const k of [1, 5, 37]) {
        const top = topK(row, k);
        assert.deepEqual(top.map((t) => t.id), refTopIds(row, k), `ids seed ${seed}, k ${k}`);
        for (const t of top) {
          assert.equal(t.logit, row[t.id]);
          close(t.prob, p[t.id], `prob of ${t.id}`);
        }
      }
    }
  });
  it('orders ties by id', () => {
    assert.deepEqual(topK([1, 3, 3, 2, 3], 2).map((t) => t.id), [1, 2]);
    assert.deepEqual(topK([0, 0, 0, 0], 3).map((t) => t.id), [0, 1, 2]);
    for (const t of topK([0, 0, 0, 0], 4)) assert.equal(t.prob, 0.25);
  });
  it('returns the whole row, sorted, when k exceeds it, and nothing for k = 0', () => {
    const row = [0.1, -2, 5, 0.1, -Infinity];
    const top = topK(row, 10);
    assert.deepEqual(top.map((t) => t.id), [2, 0, 3, 1, 4]);
    const p = softmax(row);
    for (const t of top) assert.equal(t.prob, p[t.id]);
    assert.equal(top[4].prob, 0, 'a −∞ entry has probability 0');
    assert.deepEqual(topK(row, 0), []);
    assert.deepEqual(topK([], 3), []);
  });
  it('with a NaN in the row: the probabilities are NaN; a NaN never displaces a held entry', () => {
    const top = topK([1, NaN, 3], 1);
    assert.equal(top.length, 1);
    assert.equal(top[0].id, 2);
    assert.ok(Number.isNaN(top[0].prob));
  });
});

describe('entropy', () => {
  it('equals −Σ p ln p over a distribution and over a sub-range', () => {
    for (let seed = 1; seed <= 4; seed++) {
      const p = refSoftmax(randomRow(300, seed));
      close(entropy(p), refEntropy(p), `seed ${seed}`);
      close(entropy(p, 100, 200), refEntropy(p.slice(100, 200)), `range seed ${seed}`);
    }
    close(entropy(new Float64Array(8).fill(1 / 8)), Math.log(8), 'uniform');
  });
  it('counts 0 · ln 0 as 0 and skips entries that are not > 0 (negative, NaN)', () => {
    assert.equal(entropy([1, 0, 0]), 0);
    assert.equal(entropy([]), 0);
    close(entropy([0.5, 0, -0.1, NaN, 0.5]), Math.LN2, 'skipped entries');
  });
});
