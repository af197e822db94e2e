// Correctness at research scale: GPT-2 small's shape (12 layers, d_model 768, 12 heads) with 12 random TopK
// transcoders of width 24,576 (k = 64, the paper's sparsity) on a 128-token prompt — tens of thousands of active
// features, so the graph keeps the most influential 1,024 (the default). A fixed sample of its rows (two logits and
// three features: the top layer at the last position, a middle layer, the earliest position kept) is recomputed here by an independent backward pass in plain float64 loops,
// written from the definition of the frozen replacement model, and every value the graph wrote in those rows is
// compared; the rows' full sums (all active features, not only the kept ones) plus the constant must give the real
// target value. The frozen state (attention patterns, norm scales, MLP outputs, active features) is the model's own:
// the small oracle tests check it against the reference forward.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readRows, readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { Attributor } from '../../src/engine/circuits/attribution';
import { errorNode, logitNode, tokenNode, type AttributionGraph } from '../../src/engine/circuits/graph';
import { loadTranscoders } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeSaeLensTranscoders } from '../../src/engine/circuits/transcoders-write';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const SHAPE = { nLayers: 12, dModel: 768, nHeads: 12, dMlp: 3072, nCtx: 256, vocabSize: 50257 };
const WIDTH = 24576;
const K = 64;
const P = 128;
const IDS = Array.from({ length: P }, (_, i) => (i * 7919 + 11) % SHAPE.vocabSize);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-attr-scale-'));

let model: Model;
let attributor: Attributor;
let graph: AttributionGraph;

before(async () => {
  silenceOrt();
  writeRandomGpt2(path.join(root, 'model'), SHAPE, { seed: 3, tokenizerJson: gpt2TokenizerJSON(), std: 0.05 });
  for (let l = 0; l < SHAPE.nLayers; l++) {
    const [w] = randomTranscoderWeights(1, SHAPE.dModel, WIDTH, { seed: 40 + l });
    writeSaeLensTranscoders(path.join(root, 'tc'), [w], { activation: 'topk', k: K, firstLayer: l });
  }
  model = await Model.load(path.join(root, 'model'), { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
  attributor = new Attributor(model, loadTranscoders(path.join(root, 'tc'), model.config), { cacheDir: path.join(root, 'cache') });
  graph = await attributor.attribute(IDS);
});
after(async () => {
  await attributor?.dispose();
  await model?.dispose();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('attribution at GPT-2-small scale (128 tokens, 12 × 24,576 TopK-64 transcoders)', () => {
  it('keeps 1,024 of the active features; a sample of rows equals an independent float64 backward pass', async () => {
    const { nLayers: L, dModel: D, nHeads: H } = SHAPE;
    const E = D / H;
    const g = graph;
    assert.equal(g.nActiveFeatures, L * P * K, 'TopK: k active features per token and layer');
    assert.equal(g.nFeatures, 1024);
    assert.equal(g.N, 1024 + L * P + P + g.logitIds.length);
    assert.ok(g.influenceCovered > 0 && g.influenceCovered < 1);

    // The frozen state and every active feature, from the model's own run.
    const hooks: HookName[] = ['hook_embed', 'hook_pos_embed', 'ln_final.hook_scale', 'logits'];
    for (let l = 0; l < L; l++) {
      for (const h of ['attn.hook_pattern', 'ln1.hook_scale', 'ln2.hook_scale', 'hook_mlp_out']) hooks.push(`blocks.${l}.${h}` as HookName);
    }
    const run = await model.run({ ids: IDS, hooks });
    const hook = (h: string) => run.activations.get(h as HookName)!.data;
    const { layers } = await attributor.features(IDS);
    const ckpt = model.checkpoint;
    const t = (n: string) => readTensorF32(ckpt.tensors.get(n)!);
    const set = attributor.transcoders;

    // Sources per layer and position: feature contributions act·W_dec[f] (decoder rows kept as read) and the error.
    const decoder: Float32Array[] = [];
    const errVec: Float64Array[][] = [];
    for (let l = 0; l < L; l++) {
      const la = layers[l];
      const dec = readRows(set.layers[l].wDec, la.feature);
      decoder.push(dec);
      const bDec = readTensorF32(set.layers[l].bDec);
      const mlp = hook(`blocks.${l}.hook_mlp_out`);
      errVec.push([]);
      for (let p = 0; p < P; p++) {
        const err = Float64Array.from({ length: D }, (_, d) => mlp[p * D + d] - bDec[d]);
        for (let j = la.start[p]; j < la.start[p + 1]; j++) for (let d = 0; d < D; d++) err[d] -= la.act[j] * dec[j * D + d];
        errVec[l].push(err);
      }
    }
    const embed = hook('hook_embed');
    const posEmbed = hook('hook_pos_embed');

    /** Gradient at resid_pre of block a from the gradient at its resid_mid, through frozen ln1 and the OV path. */
    const attnBackward = (a: number, gMid: Float64Array[], S: number): Float64Array[] => {
      const cAttn = t(`h.${a}.attn.c_attn.weight`); // [D, 3D]; W_V = columns 2D..3D
      const wO = t(`h.${a}.attn.c_proj.weight`); // [D, D]
      const lnW = t(`h.${a}.ln_1.weight`);
      const A = hook(`blocks.${a}.attn.hook_pattern`); // [H, P, P]
      const s1 = hook(`blocks.${a}.ln1.hook_scale`);
      const gz = gMid.map((gq) => Float64Array.from({ length: D }, (_, i) => {
        let s = 0;
        for (let j = 0; j < D; j++) s += wO[i * D + j] * gq[j];
        return s;
      }));
      const out: Float64Array[] = [];
      for (let k = 0; k < S; k++) {
        const gv = new Float64Array(D);
        for (let h = 0; h < H; h++)
          for (let q = k; q < S; q++) {
            const a_ = A[(h * P + q) * P + k];
            for (let e = 0; e < E; e++) gv[h * E + e] += a_ * gz[q][h * E + e];
          }
        const gy = Float64Array.from({ length: D }, (_, d) => {
          let s = 0;
          for (let j = 0; j < D; j++) s += cAttn[d * 3 * D + 2 * D + j] * gv[j];
          return s * lnW[d];
        });
        let mean = 0;
        for (const x of gy) mean += x / D;
        out.push(Float64Array.from({ length: D }, (_, d) => gMid[k][d] + (gy[d] - mean) / s1[k]));
      }
      return out;
    };
    const dot = (x: Float64Array, y: Float64Array) => x.reduce((s, v, i) => s + v * y[i], 0);

    /**
     * The row of a target whose gradient at `level`'s resid_mid (level = L: the final residual) is `dir` at
     * position q: edge value per source, keyed "f:l:p:index", "e:l:p", "t:p".
     */
    const referenceRow = (level: number, q: number, dir: Float64Array) => {
      const S = q + 1;
      const row = new Map<string, number>();
      let gArr: Float64Array[] = Array.from({ length: S }, (_, p) => (p === q ? dir : new Float64Array(D)));
      const readOut = (l: number) => {
        const la = layers[l];
        for (let p = 0; p < S; p++) {
          row.set(`e:${l}:${p}`, dot(gArr[p], errVec[l][p]));
          for (let j = la.start[p]; j < la.start[p + 1]; j++) {
            let s = 0;
            for (let d = 0; d < D; d++) s += gArr[p][d] * decoder[l][j * D + d];
            row.set(`f:${l}:${p}:${la.feature[j]}`, la.act[j] * s);
          }
        }
      };
      if (level === L) readOut(L - 1);
      for (let a = Math.min(level, L - 1); a >= 0; a--) {
        gArr = attnBackward(a, gArr, S);
        if (a > 0) readOut(a - 1);
      }
      for (let p = 0; p < S; p++) row.set(`t:${p}`, dot(gArr[p], Float64Array.from({ length: D }, (_, d) => embed[p * D + d] + posEmbed[p * D + d])));
      return row;
    };

    const keyOf = (n: number): string => {
      if (n < g.nFeatures) return `f:${g.featLayer[n]}:${g.featPos[n]}:${g.featIndex[n]}`;
      if (n < tokenNode(g, 0)) {
        const e = n - errorNode(g, 0, 0);
        return `e:${Math.floor(e / P)}:${e % P}`;
      }
      return `t:${n - tokenNode(g, 0)}`;
    };
    const check = (node: number, ref: Map<string, number>, what: string) => {
      let worst = 0;
      let scale = 0;
      for (const v of ref.values()) scale = Math.max(scale, Math.abs(v));
      let compared = 0;
      for (let s = 0; s < logitNode(g, 0); s++) {
        const want = ref.get(keyOf(s)) ?? 0;
        worst = Math.max(worst, Math.abs(g.adjacency_NN[node * g.N + s] - want));
        compared++;
      }
      assert.ok(worst <= 1e-4 * scale, `${what}: worst |Δ| ${worst.toExponential(2)} of max |edge| ${scale.toExponential(2)} over ${compared} sources`);
      // Completeness: every active source (kept or not) plus the constant gives the real target value.
      let sum = g.constant_N[node];
      for (const v of ref.values()) sum += v;
      assert.ok(Math.abs(sum - g.actual_N[node]) <= 1e-3 * Math.max(1, Math.abs(g.actual_N[node])), `${what}: Σ edges + constant ${sum} vs actual ${g.actual_N[node]}`);
      return worst / scale;
    };

    const report: string[] = [];
    // Two logits: u = W_U[id] − mean_v W_U[v] through the frozen final LayerNorm.
    const wte = t('wte.weight');
    const lnfW = t('ln_f.weight');
    const uMean = new Float64Array(D);
    for (let v = 0; v < SHAPE.vocabSize; v++) for (let d = 0; d < D; d++) uMean[d] += wte[v * D + d] / SHAPE.vocabSize;
    const sf = hook('ln_final.hook_scale')[P - 1];
    for (const i of [0, g.logitIds.length - 1]) {
      const id = g.logitIds[i];
      const y = Float64Array.from({ length: D }, (_, d) => lnfW[d] * (wte[id * D + d] - uMean[d]));
      let mean = 0;
      for (const x of y) mean += x / D;
      const dir = y.map((x) => (x - mean) / sf);
      report.push(`logit ${i}: ${check(logitNode(g, i), referenceRow(L, P - 1, dir), `logit ${id}`).toExponential(1)}`);
    }
    // Three kept features of different shapes: the longest row (top layer, last position), the latest one in a middle
    // layer, and the highest one at the earliest kept position.
    const kept = Array.from({ length: g.nFeatures }, (_, n) => n);
    const by = (score: (n: number) => number) => kept.reduce((a, b) => (score(b) > score(a) ? b : a));
    const feats = [
      by((n) => g.featLayer[n] * P + g.featPos[n]),
      by((n) => (g.featLayer[n] === 6 ? 1e6 : 0) + g.featPos[n] * L - Math.abs(g.featLayer[n] - 6)),
      by((n) => -g.featPos[n] * L + g.featLayer[n]),
    ];
    assert.equal(new Set(feats).size, 3, 'three different rows');
    for (const n of feats) {
      const l = g.featLayer[n];
      const p = g.featPos[n];
      const wEnc = readTensorF32(set.layers[l].wEnc); // [D, WIDTH] (SAELens)
      const col = Float64Array.from({ length: D }, (_, d) => wEnc[d * WIDTH + g.featIndex[n]]);
      // ln2.hook_normalized: (x − mean) / scale, so the gradient at resid_mid is the centred column over the scale.
      let mean = 0;
      for (const x of col) mean += x / D;
      const s2 = hook(`blocks.${l}.ln2.hook_scale`)[p];
      const dir = col.map((x) => (x - mean) / s2);
      report.push(`feature L${l}/p${p}: ${check(n, referenceRow(l, p, dir), `feature ${g.featIndex[n]} of layer ${l} at ${p}`).toExponential(1)}`);
    }
    console.log(`  ${g.nFeatures} of ${g.nActiveFeatures} features kept (${(100 * g.influenceCovered).toFixed(1)}% of their influence), ${(g.timings_ms.total / 1000).toFixed(1)} s; worst relative errors: ${report.join(', ')}`);
  });
});
