/**
 * compareAnalyses(): per-block means of two analyses side by side, each checked against loops over the reference
 * forward's activations (update norm, drift, resid norm, MLP active fraction, lens probability of the prediction).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { analyze } from '../../src/engine/analysis';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { compareAnalyses } from '../../src/engine/layers/compare';
import { layerDetailHooks, layerDetail } from '../../src/engine/layers/stats';
import { Model } from '../../src/engine/model';
import { referenceForward, type Weights } from '../../src/engine/reference/gpt2';
import type { Analysis } from '../../src/engine/results';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

let model: Model;
let weights: Weights;
let cfg: ModelConfig;

let tiny: TinyModel;
before(async () => {
  tiny = await loadTinyModel('compare', { nLayers: 3, dModel: 24, nHeads: 4, dMlp: 64, nCtx: 32, vocabSize: 50257 }, { seed: 21, std: 0.4 });
  ({ model, weights, cfg } = tiny);
});
after(() => tiny?.dispose());

async function analyzeWithDepth(text: string): Promise<Analysis> {
  const a = await analyze(model, text);
  const run = await model.run({ ids: a.tokens.map((t) => t.id), hooks: layerDetailHooks(cfg.nLayers) });
  return { ...a, perLayer: layerDetail(run.activations, cfg, a.stats) };
}

/** Expected comparison side for block l of `text`, from the reference forward with plain loops. */
function expected(text: string, l: number) {
  const ids = model.tokenizer.encode(text).ids;
  const P = ids.length;
  const D = cfg.dModel;
  const M = cfg.dMlp;
  const V = cfg.vocabSize;
  const ref = referenceForward(cfg, weights, ids);
  const pre = ref.get(`blocks.${l}.hook_resid_pre`)!.data;
  const post = ref.get(`blocks.${l}.hook_resid_post`)!.data;
  const mlp = ref.get(`blocks.${l}.mlp.hook_post`)!.data;
  let upd = 0, drift = 0, resid = 0, active = 0;
  for (let p = 0; p < P; p++) {
    let dd = 0, nn = 0, qq = 0, dot = 0;
    for (let d = 0; d < D; d++) {
      const x = pre[p * D + d], y = post[p * D + d];
      dd += (y - x) ** 2; nn += x * x; qq += y * y; dot += x * y;
    }
    upd += Math.sqrt(dd / nn);
    drift += dot / Math.sqrt(nn * qq);
    resid += Math.sqrt(nn);
    for (let m = 0; m < M; m++) if (mlp[p * M + m] > 0.1) active += 1 / M;
  }
  // Final prediction at the last position, and its lens probability at this block's resid_pre.
  const logits = ref.get('logits')!.data.subarray((P - 1) * V);
  let target = 0;
  for (let i = 1; i < V; i++) if (logits[i] > logits[target]) target = i;
  const x = pre.subarray((P - 1) * D, P * D);
  const mean = x.reduce((s, v) => s + v, 0) / D;
  const sd = Math.sqrt(x.reduce((s, v) => s + (v - mean) ** 2, 0) / D + cfg.lnEps);
  const w = weights.get('ln_f.weight')!;
  const b = weights.get('ln_f.bias')!;
  const xf = Array.from(x, (v, d) => ((v - mean) / sd) * w[d] + b[d]);
  const U = weights.get('wte.weight')!;
  const lens = new Float64Array(V);
  for (let t = 0; t < V; t++) for (let d = 0; d < D; d++) lens[t] += xf[d] * U[t * D + d];
  const max = Math.max(...lens);
  const z = lens.reduce((s, v) => s + Math.exp(v - max), 0);
  return { updateNorm: upd / P, driftCos: drift / P, residNorm: resid / P, mlpActive: active / P, targetProb: Math.exp(lens[target] - max) / z };
}

describe('compareAnalyses', () => {
  const A = 'The quick brown fox jumps over the lazy dog.';
  const B = 'for (let i = 0; i < n; i++) sum += i;';

  it('an analysis against itself gives equal sides', async () => {
    const a = await analyzeWithDepth(A);
    const rows = compareAnalyses(a, a);
    assert.equal(rows.length, cfg.nLayers);
    for (const [l, r] of rows.entries()) {
      assert.equal(r.layer, l);
      assert.deepEqual(r.a, r.b);
      for (const v of Object.values(r.a)) assert.ok(Number.isFinite(v));
    }
  });

  it('each side equals per-block means computed from the reference forward', async () => {
    const a = await analyzeWithDepth(A);
    const b = await analyzeWithDepth(B);
    assert.notEqual(a.tokens.length, b.tokens.length);
    const rows = compareAnalyses(a, b);
    for (let l = 0; l < cfg.nLayers; l++) {
      for (const [side, text] of [['a', A], ['b', B]] as const) {
        const want = expected(text, l);
        const got = rows[l][side];
        for (const k of Object.keys(want) as (keyof typeof want)[]) {
          const tol = k === 'mlpActive' ? 2 / cfg.dMlp : 1e-4 * (1 + Math.abs(want[k]));
          assert.ok(Math.abs(got[k] - want[k]) <= tol, `block ${l} side ${side} ${k}: got ${got[k]}, want ${want[k]}`);
        }
      }
      assert.notDeepEqual(rows[l].a, rows[l].b);
    }
  });

  it('mlpActive is NaN without per-layer detail; analyses of different depths are refused', async () => {
    const plain: Analysis = { ...(await analyzeWithDepth(A)), perLayer: undefined };
    const rows = compareAnalyses(plain, await analyzeWithDepth(A));
    for (const r of rows) {
      assert.ok(Number.isNaN(r.a.mlpActive));
      assert.ok(Number.isFinite(r.b.mlpActive));
      assert.equal(r.a.updateNorm, r.b.updateNorm);
    }
    assert.throws(() => compareAnalyses(plain, { ...plain, stats: plain.stats.slice(1) }), /3-layer analysis with a 2-layer one/);
  });
});
