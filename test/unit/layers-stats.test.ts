/**
 * layerDetail(): attention head summaries, MLP sparsity, massive activations, spectra and voids, each checked against
 * a straightforward loop over the plain-loop reference forward's activations, on a tiny random GPT-2 with a planted
 * massive value (wpe[3][5] = 1000) and a planted void (block 1 writes nothing to the residual stream).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { analyze } from '../../src/engine/analysis';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { gaussian, mulberry32, writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { layerDetailHooks, layerDetail, spectralStats } from '../../src/engine/layers/stats';
import type { Tensor32 } from '../../src/engine/dims';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { referenceForward, type Weights } from '../../src/engine/reference/gpt2';
import type { LayerDetail } from '../../src/engine/results';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-depth-'));
const SHAPE = { nLayers: 3, dModel: 24, nHeads: 4, dMlp: 64, nCtx: 32, vocabSize: 50257 };
const MASSIVE = { pos: 3, dim: 5, value: 1000 };
const VOID_LAYER = 1;
const TEXT = 'The quick brown fox jumps over the lazy dog.';
let model: Model;
let weights: Weights;
let cfg: ModelConfig;
let ids: number[];
let ref: Map<HookName, Tensor32>;

/** Overwrites F32 values of one tensor in a safetensors file in place (the file's own header gives the offsets). */
function patchTensor(file: string, name: string, edit: (a: Float32Array) => void): void {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const e = header[name];
  assert.ok(e && e.dtype === 'F32', `${name} in ${file}`);
  const start = 8 + n + e.data_offsets[0];
  const a = new Float32Array((e.data_offsets[1] - e.data_offsets[0]) / 4);
  for (let i = 0; i < a.length; i++) a[i] = buf.readFloatLE(start + 4 * i);
  edit(a);
  for (let i = 0; i < a.length; i++) buf.writeFloatLE(a[i], start + 4 * i);
  fs.writeFileSync(file, Uint8Array.from(buf));
}

before(async () => {
  silenceOrt();
  const dir = path.join(root, 'm');
  writeRandomGpt2(dir, SHAPE, { seed: 11, tokenizerJson: gpt2TokenizerJSON(), std: 0.4 });
  const file = path.join(dir, 'model.safetensors');
  patchTensor(file, 'transformer.wpe.weight', (a) => (a[MASSIVE.pos * SHAPE.dModel + MASSIVE.dim] = MASSIVE.value));
  for (const part of ['attn.c_proj.weight', 'attn.c_proj.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias']) {
    patchTensor(file, `transformer.h.${VOID_LAYER}.${part}`, (a) => a.fill(0));
  }
  model = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
  const ckpt = openCheckpoint(dir);
  cfg = ckpt.config;
  weights = new Map([...ckpt.tensors].map(([k, e]) => [k, readTensorF32(e)]));
  ids = model.tokenizer.encode(TEXT).ids;
  assert.ok(ids.length > MASSIVE.pos && ids.length <= 16, `${ids.length} tokens`);
  ref = referenceForward(cfg, weights, ids);
});
after(async () => {
  await model.dispose();
  fs.rmSync(root, { recursive: true, force: true });
});

const close = (got: number, want: number, tol: number, what: string) =>
  assert.ok(Math.abs(got - want) <= tol * (1 + Math.abs(want)), `${what}: got ${got}, want ${want}`);

const readouts = () => [...Array.from({ length: cfg.nLayers }, (_, l) => `blocks.${l}.hook_resid_pre`), `blocks.${cfg.nLayers - 1}.hook_resid_post`] as HookName[];

/** layerDetail of the reference activations, with the analysis's own layer statistics. */
async function refDepth(opts?: Parameters<typeof layerDetail>[3]): Promise<LayerDetail> {
  const a = await analyze(model, TEXT);
  return layerDetail(ref, cfg, a.stats, opts);
}

/** Every number anywhere in `v` is finite (typed arrays included). */
function assertAllFinite(v: unknown, where: string): void {
  if (typeof v === 'number') assert.ok(Number.isFinite(v), `${where} is ${v}`);
  else if (v instanceof Float32Array) v.forEach((x, i) => assert.ok(Number.isFinite(x), `${where}[${i}]`));
  else if (Array.isArray(v)) v.forEach((x, i) => assertAllFinite(x, `${where}[${i}]`));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) assertAllFinite(x, `${where}.${k}`);
}

describe('layerDetail', () => {
  it('layerDetailHooks lists exactly what it reads, and model.run with them matches the reference', async () => {
    const hooks = layerDetailHooks(cfg.nLayers);
    assert.equal(new Set(hooks).size, hooks.length);
    assert.equal(hooks.length, 3 * cfg.nLayers + 1);
    const run = await model.run({ ids, hooks });
    const a = await analyze(model, TEXT);
    const got = layerDetail(run.activations, cfg, a.stats);
    const want = layerDetail(ref, cfg, a.stats);
    assert.deepEqual(got.attention.dims, want.attention.dims);
    for (let i = 0; i < want.attention.data.length; i++) close(got.attention.data[i], want.attention.data[i], 1e-4, `attention[${i}]`);
    for (const [i, h] of want.heads.entries()) close(got.heads[i].entropy, h.entropy, 1e-4, `entropy ${i}`);
    for (const [r, s] of want.spectral.entries()) close(got.spectral[r].entropy, s.entropy, 1e-3, `spectral entropy ${r}`);
    assert.deepEqual(got.massive.layers.map((m) => m.hits.map((h) => [h.pos, h.dim])), want.massive.layers.map((m) => m.hits.map((h) => [h.pos, h.dim])));
  });

  it('head summaries equal loops over the reference attention patterns', async () => {
    const d = await refDepth();
    const P = ids.length;
    const H = cfg.nHeads;
    assert.deepEqual(d.attention.dims, [cfg.nLayers, H, P, P]);
    assert.equal(d.heads.length, cfg.nLayers * H);
    for (let l = 0; l < cfg.nLayers; l++) {
      const pat = ref.get(`blocks.${l}.attn.hook_pattern`)!.data;
      for (let h = 0; h < H; h++) {
        const a = (q: number, s: number) => pat[(h * P + q) * P + s];
        let ent = 0, prev = 0, first = 0, self = 0;
        for (let q = 0; q < P; q++) {
          for (let s = 0; s <= q; s++) if (a(q, s) > 0) ent -= a(q, s) * Math.log(a(q, s));
          if (q >= 1) prev += a(q, q - 1);
          first += a(q, 0);
          self += a(q, q);
        }
        const got = d.heads.find((x) => x.layer === l && x.head === h)!;
        close(got.entropy, ent / P, 1e-9, `entropy l${l} h${h}`);
        close(got.prevToken, prev / (P - 1), 1e-9, `prevToken l${l} h${h}`);
        close(got.firstToken, first / P, 1e-9, `firstToken l${l} h${h}`);
        close(got.self, self / P, 1e-9, `self l${l} h${h}`);
        for (let q = 0; q < P; q++) for (let s = 0; s < P; s++) assert.equal(d.attention.data[((l * H + h) * P + q) * P + s], a(q, s));
      }
    }
    // Not vacuous: heads differ from one another.
    assert.ok(new Set(d.heads.map((h) => h.entropy.toFixed(6))).size > 1);
  });

  it('MLP sparsity counts post-activations above the threshold', async () => {
    for (const threshold of [0.1, 0.5]) {
      const d = await refDepth({ mlpThreshold: threshold });
      assert.equal(d.mlpSparsity.threshold, threshold);
      const M = cfg.dMlp;
      let between = 0;
      for (let l = 0; l < cfg.nLayers; l++) {
        const post = ref.get(`blocks.${l}.mlp.hook_post`)!.data;
        for (let p = 0; p < ids.length; p++) {
          let n = 0;
          for (let m = 0; m < M; m++) if (post[p * M + m] > threshold) n++;
          assert.equal(d.mlpSparsity.activeFraction[l][p], n / M, `l${l} p${p}`);
          if (n > 0 && n < M) between++;
        }
      }
      assert.ok(between > 0, 'some rows are partly active');
    }
  });

  it('finds the planted massive activation at its (position, dim), and every hit matches an independent search', async () => {
    const d = await refDepth();
    assert.equal(d.massive.ratio, 100);
    assert.deepEqual(d.massive.layers.map((m) => m.hook), readouts());
    const top = d.massive.layers[0].hits[0];
    assert.equal(top.pos, MASSIVE.pos);
    assert.equal(top.dim, MASSIVE.dim);
    assert.ok(top.value > MASSIVE.value * 0.99 && top.value < MASSIVE.value * 1.01, `value ${top.value}`);
    // The residual stream carries it to every read-out.
    for (const m of d.massive.layers) assert.deepEqual([m.hits[0].pos, m.hits[0].dim], [MASSIVE.pos, MASSIVE.dim], m.hook);
    for (const [r, hook] of readouts().entries()) {
      const x = ref.get(hook)!.data;
      const abs = Array.from(x, Math.abs).sort((u, v) => u - v);
      const median = (abs[abs.length / 2 - 1] + abs[abs.length / 2]) / 2;
      const want: [number, number, number][] = [];
      for (let i = 0; i < x.length; i++) if (Math.abs(x[i]) > 100 * median) want.push([Math.floor(i / cfg.dModel), i % cfg.dModel, x[i]]);
      want.sort((u, v) => Math.abs(v[2]) - Math.abs(u[2]));
      const got = d.massive.layers[r];
      close(got.median, median, 1e-12, `median ${hook}`);
      assert.deepEqual(got.hits.map((h) => [h.pos, h.dim, h.value]), want.slice(0, 8), hook);
      for (const h of got.hits) close(h.ratio, Math.abs(h.value) / median, 1e-12, `ratio ${hook}`);
    }
    // A lower ratio finds more, capped at 8 per read-out and sorted by ratio.
    const low = await refDepth({ massiveRatio: 2 });
    for (const m of low.massive.layers) {
      assert.ok(m.hits.length === 8, `${m.hook}: ${m.hits.length} hits`);
      for (let i = 1; i < m.hits.length; i++) assert.ok(m.hits[i - 1].ratio >= m.hits[i].ratio);
    }
  });

  it('spectra: eigenvalues satisfy the trace identities of the centred Gram matrix, and σ², γ, the MP edge follow', async () => {
    const d = await refDepth();
    const P = ids.length;
    const D = cfg.dModel;
    for (const [r, hook] of readouts().entries()) {
      const x = ref.get(hook)!.data;
      const X = Array.from({ length: P }, (_, p) => {
        const rowv = Array.from(x.subarray(p * D, (p + 1) * D));
        const mean = rowv.reduce((s, v) => s + v, 0) / D;
        return rowv.map((v) => v - mean);
      });
      const G = X.map((u) => X.map((v) => u.reduce((s, ui, i) => s + ui * v[i], 0) / D));
      const trace = G.reduce((s, rowv, i) => s + rowv[i], 0);
      const frob2 = G.reduce((s, rowv) => s + rowv.reduce((t, v) => t + v * v, 0), 0);
      const s = d.spectral[r];
      assert.equal(s.hook, hook);
      assert.equal(s.eigenvalues.length, P, 'all eigenvalues reported for P ≤ 16');
      for (let i = 1; i < P; i++) assert.ok(s.eigenvalues[i - 1] >= s.eigenvalues[i], 'sorted, largest first');
      close(s.eigenvalues.reduce((a, v) => a + v, 0), trace, 1e-9, `Σλ ${hook}`);
      close(s.eigenvalues.reduce((a, v) => a + v * v, 0), frob2, 1e-9, `Σλ² ${hook}`);
      const sigma2 = X.reduce((a, rowv) => a + rowv.reduce((t, v) => t + v * v, 0), 0) / (P * D);
      close(s.sigma2, sigma2, 1e-12, `σ² ${hook}`);
      close(s.gamma, P / D, 1e-15, 'γ');
      close(s.mpEdge, sigma2 * (1 + Math.sqrt(P / D)) ** 2, 1e-12, 'MP edge');
      assert.equal(s.aboveEdge, s.eigenvalues.filter((v) => v > s.mpEdge).length);
      const pos = s.eigenvalues.filter((v) => v > 1e-10 * s.eigenvalues[0]);
      const tot = pos.reduce((a, v) => a + v, 0);
      const H = -pos.reduce((a, v) => a + (v / tot) * Math.log(v / tot), 0);
      close(s.entropy, H, 1e-12, `entropy ${hook}`);
      close(s.normalizedEntropy, H / Math.log(pos.length), 1e-12, `normalized entropy ${hook}`);
      assert.ok(s.normalizedEntropy > 0 && s.normalizedEntropy <= 1);
    }
  });

  it('spectra of hand-computed 2×2 and 3×3 cases (rows centred first)', () => {
    // Rows already centred: G = [[2, 2], [2, 8]] / 4; λ = (2.5 ± √3.25) / 2.
    const two = spectralStats([1, -1, 0, 0, 2, 0, -2, 0], 2, 4, 'two');
    close(two.eigenvalues[0], (2.5 + Math.sqrt(3.25)) / 2, 1e-12, 'λ1');
    close(two.eigenvalues[1], (2.5 - Math.sqrt(3.25)) / 2, 1e-12, 'λ2');
    close(two.sigma2, 10 / 8, 1e-15, 'σ²');
    close(two.gamma, 0.5, 0, 'γ');
    close(two.mpEdge, 1.25 * (1 + Math.SQRT1_2) ** 2, 1e-12, 'edge');
    // Orthogonal rows of squared norms 2, 2, 4, each shifted by a constant that centring removes: λ = 1, 0.5, 0.5.
    const three = spectralStats([1 + 5, -1 + 5, 5, 5, -3, -3, 1 - 3, -1 - 3, 1.5, 1.5, -0.5, -0.5], 3, 4, 'three');
    assert.equal(three.eigenvalues.length, 3);
    [1, 0.5, 0.5].forEach((want, i) => close(three.eigenvalues[i], want, 1e-12, `λ${i}`));
    close(three.entropy, 1.5 * Math.LN2, 1e-12, 'entropy');
    close(three.normalizedEntropy, (1.5 * Math.LN2) / Math.log(3), 1e-12, 'normalized entropy');
    close(three.sigma2, 8 / 12, 1e-15, 'σ²');
    close(three.mpEdge, (8 / 12) * (1 + Math.sqrt(0.75)) ** 2, 1e-12, 'edge');
    assert.equal(three.aboveEdge, 0); // edge ≈ 2.33 > 1
  });

  it('MP edge: an i.i.d. Gaussian matrix stays near the edge; a planted rank-1 spike rises above it', () => {
    const P = 120, D = 480;
    const normal = gaussian(mulberry32(5));
    const x = Float64Array.from({ length: P * D }, () => 0.7 * normal());
    const noise = spectralStats(x, P, D, 'noise');
    close(noise.gamma, 0.25, 0, 'γ');
    close(noise.mpEdge, noise.sigma2 * 2.25, 1e-12, 'edge');
    close(noise.sigma2, 0.49, 0.03, 'σ² of N(0, 0.7²)');
    assert.ok(Math.abs(noise.eigenvalues[0] / noise.mpEdge - 1) < 0.1, `λmax ${noise.eigenvalues[0]} vs edge ${noise.mpEdge}`);
    assert.ok(noise.aboveEdge <= 2, `${noise.aboveEdge} above the edge`);
    const sign = mulberry32(9);
    const u = Array.from({ length: P }, () => (sign() < 0.5 ? -1 : 1));
    const v = Array.from({ length: D }, () => (sign() < 0.5 ? -1 : 1));
    const spiked = spectralStats(x.map((xi, i) => xi + u[Math.floor(i / D)] * v[i % D]), P, D, 'spike');
    assert.ok(spiked.eigenvalues[0] > 50, `spike λ ${spiked.eigenvalues[0]}`);
    assert.ok(spiked.aboveEdge >= 1 && spiked.aboveEdge <= 3, `${spiked.aboveEdge} above the edge`);
    assert.ok(spiked.normalizedEntropy < noise.normalizedEntropy);
  });

  it('voids: mean relative update per block from the reference; the planted silent block is flagged', async () => {
    const d = await refDepth();
    const D = cfg.dModel;
    const want: number[] = [];
    for (let l = 0; l < cfg.nLayers; l++) {
      const pre = ref.get(`blocks.${l}.hook_resid_pre`)!.data;
      const post = ref.get(`blocks.${l}.hook_resid_post`)!.data;
      let sum = 0;
      for (let p = 0; p < ids.length; p++) {
        let dd = 0, nn = 0;
        for (let k = 0; k < D; k++) (dd += (post[p * D + k] - pre[p * D + k]) ** 2), (nn += pre[p * D + k] ** 2);
        sum += Math.sqrt(dd / nn);
      }
      want.push(sum / ids.length);
    }
    assert.equal(d.voids.threshold, 0.05);
    d.voids.meanUpdate.forEach((m, l) => close(m, want[l], 1e-4, `mean update l${l}`));
    assert.equal(d.voids.meanUpdate[VOID_LAYER], 0);
    assert.deepEqual(d.voids.layers, want.flatMap((m, l) => (m < 0.05 ? [l] : [])));
    assert.ok(d.voids.layers.includes(VOID_LAYER));
    assert.ok(d.voids.layers.length < cfg.nLayers, 'not every block is a void');
    // A threshold above every mean flags every block; 0 flags none.
    assert.deepEqual((await refDepth({ voidThreshold: 1e9 })).voids.layers, [0, 1, 2]);
    assert.deepEqual((await refDepth({ voidThreshold: 0 })).voids.layers, []);
  });

  it('one and two positions give finite values everywhere (prevToken 0 for one position)', async () => {
    for (const text of ['Hello', 'Hello world']) {
      const a = await analyze(model, text);
      const run = await model.run({ ids: a.tokens.map((t) => t.id), hooks: layerDetailHooks(cfg.nLayers) });
      const d = layerDetail(run.activations, cfg, a.stats);
      assertAllFinite(d, text);
      if (a.tokens.length === 1) {
        for (const h of d.heads) assert.deepEqual([h.entropy, h.prevToken, h.firstToken, h.self], [0, 0, 1, 1]);
        for (const s of d.spectral) assert.deepEqual([s.eigenvalues.length, s.entropy, s.normalizedEntropy], [1, 0, 0]);
      } else {
        for (const h of d.heads) close(h.prevToken, d.attention.data[(h.layer * cfg.nHeads + h.head) * 4 + 2], 1e-12, 'prevToken P=2');
      }
    }
    // An all-zero read-out: no massive hits, zero spectrum.
    const zero = spectralStats(new Float32Array(3 * 4), 3, 4, 'zero');
    assertAllFinite(zero, 'zero');
    assert.deepEqual(zero.eigenvalues, [0, 0, 0]);
  });

  it('refuses an activation map without the hooks it needs, naming the hook', () => {
    const partial = new Map(ref);
    partial.delete('blocks.1.mlp.hook_post');
    assert.throws(() => layerDetail(partial, cfg, []), /blocks\.1\.mlp\.hook_post.*layerDetailHooks/);
  });
});
