/**
 * Oracle tests of the attribution graph on tiny random GPT-2 checkpoints with random transcoders of every
 * activation kind and both layouts. The oracle is written here from the definitions, independently of the engine:
 * the plain-loop reference forward (real model), the transcoder maths in plain loops, and a plain-loop forward of the
 * frozen linear replacement model (patterns and LayerNorm scales fixed, MLPs replaced by their source vectors).
 *
 * Checks: (1) completeness — each target's real value = Σ incoming edges + its constant term; (2) every edge = the
 * change of the target when its source is removed from the frozen model; (3) the frozen replacement model with all
 * sources at their actual values reproduces the real logits. Tolerance: 1e-4 relative to max(1, |value|).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import type { Tensor32 } from '../../src/engine/dims';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { referenceForward } from '../../src/engine/reference/gpt2';
import { silenceOrt } from '../../src/engine/runtime/session';
import { Attributor } from '../../src/engine/circuits/attribution';
import { activeActivation, type AttributionGraph, type AttributionTarget, errorNode, logitNode, tokenNode } from '../../src/engine/circuits/graph';
import { loadTranscoders } from '../../src/engine/circuits/transcoders';
import {
  randomTranscoderWeights,
  writeCircuitTracerTranscoders,
  writeSaeLensTranscoders,
  type TranscoderWeights,
  type WriteActivation,
} from '../../src/engine/circuits/transcoders-write';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import Ajv from 'ajv';
import { graphCommand } from '../../src/cli/graph';
import { importedToJson, parseGraphJson, toGraphJson, type GraphJson } from '../../src/engine/circuits/graph-json';
import { intervene } from '../../src/engine/circuits/interventions';
import { pruneGraph } from '../../src/engine/circuits/prune';
import { qkAttribution, type QkSource } from '../../src/engine/circuits/qk';
import { addFrozenAttention, frozenFinalLogits } from './frozen-gpt2';

const TOL = 1e-4;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-attr-'));
const cacheDir = path.join(root, 'cache');
const SHAPE = { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 24, vocabSize: 50257 };
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13];
const F = 40;
const cleanup: (() => Promise<void>)[] = [];

before(() => silenceOrt());
after(async () => {
  for (const c of cleanup) await c();
  fs.rmSync(root, { recursive: true, force: true });
});

interface Fixture {
  cfg: ModelConfig;
  W: Map<string, Float32Array>;
  tc: TranscoderWeights[];
  ref: Map<HookName, Tensor32>;
  attributor: Attributor;
  graph: AttributionGraph;
  activation: WriteActivation;
  k: number;
  input: 'ln2.hook_normalized' | 'hook_resid_mid';
  relu: boolean;
}

async function fixture(name: string, activation: WriteActivation, layout: 'saelens' | 'circuit-tracer', input: Fixture['input'] = 'ln2.hook_normalized'): Promise<Fixture> {
  const dir = path.join(root, name);
  writeRandomGpt2(path.join(dir, 'model'), SHAPE, { seed: name.length * 31 + 7, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
  const tc = randomTranscoderWeights(SHAPE.nLayers, SHAPE.dModel, F, { seed: name.length + 3, bEncMean: activation === 'relu' ? -0.6 : 0, threshold: 0.4 });
  const k = 6;
  const tdir = path.join(dir, 'transcoders');
  if (layout === 'saelens') writeSaeLensTranscoders(tdir, tc, { activation, k, input, cfgVersion: name.includes('pre6') ? 'pre6' : 'v6' });
  else writeCircuitTracerTranscoders(tdir, tc, { activation, k, input });
  const model = await Model.load(path.join(dir, 'model'), { providers: ['cpu'], cacheDir });
  const set = loadTranscoders(tdir, model.config);
  const attributor = new Attributor(model, set, { cacheDir });
  cleanup.push(async () => {
    await attributor.dispose();
    await model.dispose();
  });
  const graph = await attributor.attribute(IDS);
  const ckpt = openCheckpoint(path.join(dir, 'model'));
  const W = new Map([...ckpt.tensors].map(([n, e]) => [n, readTensorF32(e)]));
  const ref = referenceForward(ckpt.config, W, IDS);
  return { cfg: ckpt.config, W, tc, ref, attributor, graph, activation, k, input, relu: layout === 'saelens' };
}

/** Plain-loop transcoder activations from the reference hooks: [layer][pos] → Map(feature → act), and pre-activations. */
function oracleFeatures(fx: Fixture) {
  const { cfg, tc, ref } = fx;
  const D = cfg.dModel;
  const P = IDS.length;
  const acts: Map<number, number>[][] = [];
  const pres: Float64Array[][] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    const x = ref.get(`blocks.${l}.${fx.input}` as HookName)!.data;
    const w = tc[l];
    acts.push([]);
    pres.push([]);
    for (let p = 0; p < P; p++) {
      const pre = new Float64Array(F);
      for (let f = 0; f < F; f++) {
        let s = w.bEnc_F[f];
        for (let d = 0; d < D; d++) s += x[p * D + d] * w.wEnc_DF[d * F + f];
        pre[f] = s;
      }
      const m = new Map<number, number>();
      if (fx.activation === 'relu') pre.forEach((v, f) => v > 0 && m.set(f, v));
      else if (fx.activation === 'jumprelu') pre.forEach((v, f) => v > w.threshold_F![f] && m.set(f, v));
      else {
        const top = Array.from(pre.keys()).sort((a, b) => pre[b] - pre[a]).slice(0, fx.k);
        for (const f of top) {
          const v = fx.relu ? Math.max(0, pre[f]) : pre[f];
          if (v !== 0) m.set(f, v);
        }
      }
      acts[l].push(m);
      pres[l].push(pre);
    }
  }
  return { acts, pres };
}

/**
 * The frozen linear replacement model, in plain loops: embeddings `emb_PD` in, block l's MLP replaced by `mlp_LPD[l]`
 * (all its sources + b_dec), patterns and LN scales from the reference run. Returns each target level's residual.
 */
function frozenForward(fx: Fixture, emb_PD: Float64Array, mlp_LPD: Float64Array[]) {
  const P = IDS.length;
  const resid = Float64Array.from(emb_PD);
  const mids: Float64Array[] = [];
  const pres: Float64Array[] = [];
  for (let l = 0; l < fx.cfg.nLayers; l++) {
    pres.push(Float64Array.from(resid));
    addFrozenAttention(fx.cfg, fx.W, fx.ref, l, resid, P);
    mids.push(Float64Array.from(resid));
    for (let i = 0; i < P * fx.cfg.dModel; i++) resid[i] += mlp_LPD[l][i];
  }
  return { mids, pres, final: resid };
}

/** Target values of the graph's targets from a frozen forward's residuals. */
function targetValues(fx: Fixture, g: AttributionGraph, r: ReturnType<typeof frozenForward>): Float64Array {
  const { cfg, W, ref, tc } = fx;
  const D = cfg.dModel;
  const P = IDS.length;
  const out = new Float64Array(g.N);
  for (let n = 0; n < g.nFeatures; n++) {
    const l = g.featLayer[n];
    const p = g.featPos[n];
    const f = g.featIndex[n];
    const x = r.mids[l].subarray(p * D, (p + 1) * D);
    let mean = 0;
    for (const v of x) mean += v / D;
    const s2 = ref.get(`blocks.${l}.ln2.hook_scale` as HookName)!.data[p];
    let s = tc[l].bEnc_F[f];
    for (let d = 0; d < D; d++) s += (fx.input === 'ln2.hook_normalized' ? (x[d] - mean) / s2 : x[d]) * tc[l].wEnc_DF[d * F + f];
    out[n] = s;
  }
  // Logits at the last position, demeaned over the whole vocabulary.
  const logits = frozenFinalLogits(cfg, W, ref, r.final, P);
  const lm = logits.reduce((s, v) => s + v, 0) / cfg.vocabSize;
  g.logitIds.forEach((id, i) => (out[logitNode(g, i)] = logits[id] - lm));
  return out;
}

/**
 * Every source's vector, keyed by node index, plus the per-layer MLP replacement sums with all sources present.
 * `keptOnly`: active features the graph does not hold (they cannot reach its target) stay in the MLP sums only.
 */
function oracleSources(fx: Fixture, g: AttributionGraph, keptOnly = false) {
  const { cfg, W, ref, tc } = fx;
  const D = cfg.dModel;
  const P = IDS.length;
  const { acts } = oracleFeatures(fx);
  const vectors = new Map<number, { layer: number; pos: number; v: Float64Array }>();
  const mlp: Float64Array[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    const real = ref.get(`blocks.${l}.hook_mlp_out` as HookName)!.data;
    const m = new Float64Array(P * D);
    for (let p = 0; p < P; p++) {
      const err = new Float64Array(D);
      for (let d = 0; d < D; d++) {
        m[p * D + d] = tc[l].bDec_D[d];
        err[d] = real[p * D + d] - tc[l].bDec_D[d];
      }
      for (const [f, a] of acts[l][p]) {
        const v = Float64Array.from({ length: D }, (_, d) => a * tc[l].wDec_FD[f * D + d]);
        if (!keptOnly || hasFeature(g, l, p, f)) vectors.set(findFeature(g, l, p, f), { layer: l, pos: p, v });
        for (let d = 0; d < D; d++) (m[p * D + d] += v[d]), (err[d] -= v[d]);
      }
      for (let d = 0; d < D; d++) m[p * D + d] += err[d];
      vectors.set(errorNode(g, l, p), { layer: l, pos: p, v: err });
    }
    mlp.push(m);
  }
  const emb = new Float64Array(P * D);
  const wte = W.get('wte.weight')!;
  const wpe = W.get('wpe.weight')!;
  for (let p = 0; p < P; p++) {
    const v = Float64Array.from({ length: D }, (_, d) => wte[IDS[p] * D + d] + wpe[p * D + d]);
    emb.set(v, p * D);
    vectors.set(tokenNode(g, p), { layer: -1, pos: p, v });
  }
  return { vectors, mlp, emb, acts };
}

function hasFeature(g: AttributionGraph, l: number, p: number, f: number): boolean {
  for (let n = 0; n < g.nFeatures; n++) if (g.featLayer[n] === l && g.featPos[n] === p && g.featIndex[n] === f) return true;
  return false;
}

function findFeature(g: AttributionGraph, l: number, p: number, f: number): number {
  for (let n = 0; n < g.nFeatures; n++) if (g.featLayer[n] === l && g.featPos[n] === p && g.featIndex[n] === f) return n;
  throw new Error(`feature ${l}/${p}/${f} active in the oracle but missing from the graph`);
}

const CASES: [string, WriteActivation, 'saelens' | 'circuit-tracer', Fixture['input']?][] = [
  ['relu-saelens', 'relu', 'saelens'],
  ['jumprelu-saelens', 'jumprelu', 'saelens'],
  ['topk-saelens-pre6', 'topk', 'saelens'],
  ['topk-circuit-tracer', 'topk', 'circuit-tracer'],
  ['jumprelu-circuit-tracer', 'jumprelu', 'circuit-tracer'],
  ['relu-residmid-saelens', 'relu', 'saelens', 'hook_resid_mid'],
];

describe('attribution graph vs an independent frozen replacement model', () => {
  for (const [name, activation, layout, input] of CASES) {
    it(`${name}: same active features, completeness, every edge by perturbation, exact logits`, async () => {
      const fx = await fixture(name, activation, layout, input);
      const g = fx.graph;
      const { vectors, mlp, emb, acts } = oracleSources(fx, g);
      // Same active feature set with the same activations.
      let nActive = 0;
      for (const layer of acts) for (const m of layer) nActive += m.size;
      assert.equal(g.nFeatures, nActive, 'number of active features');
      assert.ok(g.nFeatures > 10, `enough features to test (${g.nFeatures})`);
      for (let n = 0; n < g.nFeatures; n++) {
        const want = acts[g.featLayer[n]][g.featPos[n]].get(g.featIndex[n])!;
        assert.ok(Math.abs(g.featAct[n] - want) <= TOL * Math.max(1, Math.abs(want)), `activation of feature node ${n}`);
      }
      const targets = [...Array.from({ length: g.nFeatures }, (_, i) => i), ...g.logitIds.map((_, i) => logitNode(g, i))];

      // (3) All sources at their actual values: the frozen model reproduces the real logits (all of them) and pre-activations.
      const base = frozenForward(fx, emb, mlp);
      const baseVals = targetValues(fx, g, base);
      const P = IDS.length;
      const V = fx.cfg.vocabSize;
      const realLogits = fx.ref.get('logits')!.data.subarray((P - 1) * V, P * V);
      const { oracleFinalLogits } = finalLogits(fx, base.final);
      let worstLogit = 0;
      for (let t = 0; t < V; t++) worstLogit = Math.max(worstLogit, Math.abs(oracleFinalLogits[t] - realLogits[t]) / Math.max(1, Math.abs(realLogits[t])));
      assert.ok(worstLogit <= TOL, `replacement model logits vs real: ${worstLogit.toExponential(2)}`);
      const { pres } = oracleFeatures(fx);
      let worstPre = 0;
      for (let n = 0; n < g.nFeatures; n++) {
        const want = pres[g.featLayer[n]][g.featPos[n]][g.featIndex[n]];
        worstPre = Math.max(worstPre, Math.abs(baseVals[n] - want) / Math.max(1, Math.abs(want)));
      }
      assert.ok(worstPre <= TOL, `replacement model pre-activations vs real: ${worstPre.toExponential(2)}`);

      // (1) Completeness: Σ incoming edges + constant = the real value (pre-activation; demeaned logit).
      let worstComplete = 0;
      let realLogitMean = 0;
      for (let t = 0; t < V; t++) realLogitMean += realLogits[t] / V;
      for (const t of targets) {
        let sum = g.constant_N[t];
        for (let s = 0; s < g.N; s++) sum += g.adjacency_NN[t * g.N + s];
        const want = t < g.nFeatures ? pres[g.featLayer[t]][g.featPos[t]][g.featIndex[t]] : realLogits[g.logitIds[t - logitNode(g, 0)]] - realLogitMean;
        worstComplete = Math.max(worstComplete, Math.abs(sum - want) / Math.max(1, Math.abs(want)));
      }
      assert.ok(worstComplete <= TOL, `completeness: ${worstComplete.toExponential(2)}`);
      // The constant term is independent: the frozen model with every source removed gives the same.
      const zero = targetValues(fx, g, frozenForward(fx, new Float64Array(emb.length), mlp.map((_, l) => bDecOnly(fx, l))));
      let worstConst = 0;
      for (const t of targets) worstConst = Math.max(worstConst, Math.abs(zero[t] - g.constant_N[t]) / Math.max(1, Math.abs(zero[t])));
      assert.ok(worstConst <= TOL, `constant terms vs all-sources-removed forward: ${worstConst.toExponential(2)}`);

      // (2) Every edge: remove one source from the frozen model; the change of every target is that source's column.
      let worstEdge = 0;
      let checked = 0;
      for (const [s, src] of vectors) {
        const emb2 = Float64Array.from(emb);
        const mlp2 = mlp.map((m) => Float64Array.from(m));
        const D = fx.cfg.dModel;
        const into = src.layer < 0 ? emb2 : mlp2[src.layer];
        for (let d = 0; d < D; d++) into[src.pos * D + d] -= src.v[d];
        const vals = targetValues(fx, g, frozenForward(fx, emb2, mlp2));
        for (const t of targets) {
          const want = baseVals[t] - vals[t];
          const got = g.adjacency_NN[t * g.N + s];
          worstEdge = Math.max(worstEdge, Math.abs(got - want) / Math.max(1, Math.abs(baseVals[t])));
          checked++;
        }
      }
      assert.ok(worstEdge <= TOL, `edges vs perturbation: ${worstEdge.toExponential(2)} over ${checked} entries`);
      console.log(
        `  ${name}: ${g.nFeatures} features, ${g.logitIds.length} logits, N=${g.N}; max rel. errors: logits ${worstLogit.toExponential(1)}, ` +
          `pre ${worstPre.toExponential(1)}, completeness ${worstComplete.toExponential(1)}, constants ${worstConst.toExponential(1)}, edges ${worstEdge.toExponential(1)} (${checked} entries)`,
      );
    });
  }
});

/**
 * Custom targets, checked as the top logits are: each target's value from its definition on the frozen plain-loop
 * model (a logit difference from the plain-loop logits; a direction's dot product with the plain-loop residual at its
 * hook and position), then completeness against the real model, constants, and every edge by perturbation.
 */
describe('attribution graph targets: one token, a logit difference, a direction at a hook and position', () => {
  type TargetCase = { name: string; target: AttributionTarget };
  const D = SHAPE.dModel;
  const direction = Float32Array.from({ length: D }, (_, d) => Math.sin(1.7 * d + 0.3));
  const CASES_T: TargetCase[] = [
    { name: 'token', target: { kind: 'token', id: 262 } },
    { name: 'contrast', target: { kind: 'contrast', id: 262, contrastId: 13 } },
    { name: 'direction resid_pre 1, position 6', target: { kind: 'direction', name: 'sin.json', vector: direction, layer: 1, hook: 'hook_resid_pre', position: 6 } },
    { name: 'direction resid_mid 1', target: { kind: 'direction', name: 'sin.json', vector: direction, layer: 1, hook: 'hook_resid_mid' } },
    { name: 'direction resid_post 2 (the final residual)', target: { kind: 'direction', name: 'sin.json', vector: direction, layer: 2, hook: 'hook_resid_post', position: 4 } },
    { name: 'direction resid_pre 0 (embeddings only)', target: { kind: 'direction', name: 'sin.json', vector: direction, layer: 0, hook: 'hook_resid_pre', position: 3 } },
  ];
  /** The target's value from a frozen forward (or the real reference forward: `real`). */
  const valueOf = (fx: Fixture, t: AttributionTarget, r: ReturnType<typeof frozenForward>): number => {
    const P = IDS.length;
    if (t.kind === 'direction') {
      const pos = t.position ?? P - 1;
      const x = t.hook === 'hook_resid_pre' ? r.pres[t.layer] : t.hook === 'hook_resid_mid' ? r.mids[t.layer] : t.layer + 1 < fx.cfg.nLayers ? r.pres[t.layer + 1] : r.final;
      let y = 0;
      for (let d = 0; d < D; d++) y += t.vector[d] * x[pos * D + d];
      return y;
    }
    const { oracleFinalLogits: z } = finalLogits(fx, r.final);
    if (t.kind === 'contrast') return z[t.id] - z[t.contrastId];
    if (t.kind === 'token') return z[t.id] - z.reduce((a, b) => a + b, 0) / z.length;
    throw new Error('top is tested above');
  };
  const realValue = (fx: Fixture, t: AttributionTarget): number => {
    const P = IDS.length;
    const V = fx.cfg.vocabSize;
    if (t.kind === 'direction') {
      const x = fx.ref.get(`blocks.${t.layer}.${t.hook}` as HookName)!.data;
      const pos = t.position ?? P - 1;
      let y = 0;
      for (let d = 0; d < D; d++) y += t.vector[d] * x[pos * D + d];
      return y;
    }
    const z = fx.ref.get('logits')!.data.subarray((P - 1) * V, P * V);
    if (t.kind === 'contrast') return z[t.id] - z[t.contrastId];
    if (t.kind === 'token') return z[t.id] - z.reduce((a, b) => a + b, 0) / V;
    throw new Error('top is tested above');
  };

  for (const { name, target } of CASES_T) {
    it(`${name}: completeness against the real model, constant, every edge by perturbation, only features that can reach it`, async () => {
      const fx = await fixture('targets-relu', 'relu', 'saelens');
      const g = await fx.attributor.attribute(IDS, { target, maxFeatureNodes: Infinity });
      const t = logitNode(g, 0);
      assert.equal(g.logitIds.length, 1, 'one target node');
      assert.equal(g.target?.kind, target.kind);
      // Features kept: exactly those written below the level the target reads, at or before its position.
      const P = IDS.length;
      const pos = target.kind === 'direction' ? (target.position ?? P - 1) : P - 1;
      const level = target.kind === 'direction' ? (target.hook === 'hook_resid_post' ? target.layer + 1 : target.layer) : fx.cfg.nLayers;
      const { acts } = oracleFeatures(fx);
      let eligible = 0;
      acts.forEach((layer, l) => layer.forEach((m, p) => l < level && p <= pos && (eligible += m.size)));
      assert.equal(g.nFeatures, eligible, 'features that can reach the target');
      assert.equal(g.nActiveFeatures, eligible);
      for (let n = 0; n < g.nFeatures; n++) assert.ok(g.featLayer[n] < level && g.featPos[n] <= pos, `feature node ${n} can reach the target`);

      const { vectors, mlp, emb } = oracleSources(fx, g, true);
      const base = valueOf(fx, target, frozenForward(fx, emb, mlp));
      const real = realValue(fx, target);
      assert.ok(Math.abs(base - real) <= TOL * Math.max(1, Math.abs(real)), `frozen model ${base} vs real ${real}`);
      assert.ok(Math.abs(g.actual_N[t] - real) <= TOL * Math.max(1, Math.abs(real)), `actual_N ${g.actual_N[t]} vs real ${real}`);
      let sum = g.constant_N[t];
      for (let s = 0; s < g.N; s++) sum += g.adjacency_NN[t * g.N + s];
      assert.ok(Math.abs(sum - real) <= TOL * Math.max(1, Math.abs(real)), `completeness: Σ edges + constant = ${sum}, real ${real}`);
      const zero = valueOf(fx, target, frozenForward(fx, new Float64Array(emb.length), mlp.map((_, l) => bDecOnly(fx, l))));
      assert.ok(Math.abs(zero - g.constant_N[t]) <= TOL * Math.max(1, Math.abs(zero)), `constant ${g.constant_N[t]} vs all sources removed ${zero}`);
      let worst = 0;
      let nonzero = 0;
      for (const [s, src] of vectors) {
        const emb2 = Float64Array.from(emb);
        const mlp2 = mlp.map((m) => Float64Array.from(m));
        const into = src.layer < 0 ? emb2 : mlp2[src.layer];
        for (let d = 0; d < D; d++) into[src.pos * D + d] -= src.v[d];
        const want = base - valueOf(fx, target, frozenForward(fx, emb2, mlp2));
        if (Math.abs(want) > 1e-6) nonzero++;
        worst = Math.max(worst, Math.abs(g.adjacency_NN[t * g.N + s] - want) / Math.max(1, Math.abs(base)));
      }
      assert.ok(worst <= TOL, `edges into the target vs perturbation: ${worst.toExponential(2)}`);
      assert.ok(nonzero > 0, 'some source reaches the target');
      // Feature rows are exact too: each kept feature's incoming edges sum to its pre-activation.
      const { pres } = oracleFeatures(fx);
      for (let n = 0; n < g.nFeatures; n++) {
        let s = g.constant_N[n];
        for (let k = 0; k < g.N; k++) s += g.adjacency_NN[n * g.N + k];
        const want = pres[g.featLayer[n]][g.featPos[n]][g.featIndex[n]];
        assert.ok(Math.abs(s - want) <= TOL * Math.max(1, Math.abs(want)), `feature ${n} completeness`);
      }
      // Pruned and exported: one target node at its position, the target in the metadata.
      const json = toGraphJson(g, pruneGraph(g), { slug: 'fx', scan: 'random/fixture', promptTokens: IDS.map(String), prompt: 'p', tokenText: (i) => `t${i}`, nodeThreshold: 0.8, edgeThreshold: 0.98 });
      const logits = json.nodes.filter((n) => n.feature_type === 'logit');
      assert.equal(logits.length, 1);
      assert.equal(logits[0].ctx_idx, pos);
      const meta = json.metadata.target as Record<string, unknown>;
      assert.equal(meta.kind, target.kind);
      assert.ok(Math.abs((meta.value as number) - (target.kind === 'token' ? g.logitValues[0] : real)) <= 1e-4 * Math.max(1, Math.abs(real)));
      if (target.kind === 'direction') {
        assert.equal(meta.hook, `blocks.${target.layer}.${target.hook}`);
        assert.equal(logits[0].feature, SHAPE.vocabSize, 'virtual index vocab_size, as circuit-tracer numbers custom targets');
      }
      if (target.kind === 'contrast') assert.equal(logits[0].clerp, 'Target: logit "t262" − logit "t13"');
      console.log(`  ${name}: value ${real.toFixed(4)}, ${g.nFeatures} features, worst edge error ${worst.toExponential(1)}`);
    });
  }

  it('interventions report the target: a contrast and a direction, against the reference forward', async () => {
    const fx = await fixture('targets-relu', 'relu', 'saelens');
    const P = IDS.length;
    for (const target of [CASES_T[1].target, CASES_T[3].target]) {
      const g = await fx.attributor.attribute(IDS, { target, maxFeatureNodes: Infinity });
      const n = Array.from({ length: g.nFeatures }, (_, i) => i).find((i) => g.featLayer[i] === 0 && g.featPos[i] === P - 1)!;
      const [l, p, f, a] = [g.featLayer[n], g.featPos[n], g.featIndex[n], g.featAct[n]];
      const r = await intervene(fx.attributor, g, [{ layer: l, pos: p, feature: f, value: 0 }]);
      const add = new Float32Array(P * D);
      for (let d = 0; d < D; d++) add[p * D + d] = -a * fx.tc[l].wDec_FD[f * D + d];
      const steered = referenceForward(fx.cfg, fx.W, IDS, new Map([[`${l}:hook_resid_post`, add]]));
      const after = realValue({ ...fx, ref: steered }, target);
      const before = realValue(fx, target);
      const c = r.logits[0];
      assert.equal(c.baseProb, null);
      assert.ok(c.label && c.label.length > 0);
      assert.ok(Math.abs(c.baseLogit - before) <= TOL * Math.max(1, Math.abs(before)) + (target.kind === 'contrast' ? 0 : 0), `before ${c.baseLogit} vs ${before}`);
      assert.ok(Math.abs(c.actualDemeaned - (after - before)) <= TOL * Math.max(1, Math.abs(before)), `change ${c.actualDemeaned} vs ${after - before}`);
    }
  });

  it('a feature-row limit picks, round by round, only features that can reach a direction target', async () => {
    const fx = await fixture('targets-relu', 'relu', 'saelens');
    const target = CASES_T[3].target; // resid_mid of layer 1: only layer-0 features reach it
    const full = await fx.attributor.attribute(IDS, { target, maxFeatureNodes: Infinity });
    const cut = await fx.attributor.attribute(IDS, { target, maxFeatureNodes: 30, featureBatch: 10 });
    assert.equal(cut.nFeatures, 30);
    assert.equal(cut.nActiveFeatures, full.nFeatures);
    assert.ok(Array.from(cut.featLayer).every((l) => l === 0), 'only layer-0 features');
    assert.ok(cut.influenceCovered > 0 && cut.influenceCovered < 1, `influence covered ${cut.influenceCovered}`);
    const t = logitNode(cut, 0);
    for (let n = 0; n < cut.nFeatures; n++) {
      const m = findFeature(full, cut.featLayer[n], cut.featPos[n], cut.featIndex[n]);
      assert.ok(Math.abs(cut.adjacency_NN[t * cut.N + n] - full.adjacency_NN[logitNode(full, 0) * full.N + m]) <= 1e-5, `edge of kept feature ${n}`);
    }
  });

  it('refusals: a contrast that is the target, a direction of the wrong width, a layer or position that does not exist', async () => {
    const fx = await fixture('targets-relu', 'relu', 'saelens');
    await assert.rejects(fx.attributor.attribute(IDS, { target: { kind: 'contrast', id: 262, contrastId: 262 } }), /contrast: the contrast token is the target itself/);
    await assert.rejects(fx.attributor.attribute(IDS, { target: { kind: 'direction', name: 'v.json', vector: new Float32Array(D + 1), layer: 0, hook: 'hook_resid_post' } }), /v\.json: the direction has 17 values but the model's d_model is 16/);
    await assert.rejects(fx.attributor.attribute(IDS, { target: { kind: 'direction', name: 'v.json', vector: direction, layer: 3, hook: 'hook_resid_post' } }), /layer 3 does not exist/);
    await assert.rejects(fx.attributor.attribute(IDS, { target: { kind: 'direction', name: 'v.json', vector: direction, layer: 0, hook: 'hook_resid_post', position: 10 } }), /position 10 does not exist: the prompt has 10 tokens/);
    await assert.rejects(fx.attributor.attribute(IDS, { target: { kind: 'token', id: SHAPE.vocabSize } }), /outside the vocabulary/);
  });
});

function bDecOnly(fx: Fixture, l: number): Float64Array {
  const D = fx.cfg.dModel;
  const m = new Float64Array(IDS.length * D);
  for (let p = 0; p < IDS.length; p++) for (let d = 0; d < D; d++) m[p * D + d] = fx.tc[l].bDec_D[d];
  return m;
}

function finalLogits(fx: Fixture, final: Float64Array) {
  return { oracleFinalLogits: frozenFinalLogits(fx.cfg, fx.W, fx.ref, final, IDS.length) };
}

describe('graph export, interventions and the graph command on a fixture', () => {
  it('every exported graph validates against the graph schema and round-trips', async () => {
    const fx = await fixture('export-topk', 'topk', 'saelens');
    const validate = new Ajv({ strict: false, allErrors: true }).compile(JSON.parse(fs.readFileSync(path.join(__dirname, '../../src/engine/circuits/graph-schema.json'), 'utf8')));
    for (const [nt, et] of [[0.8, 0.98], [1, 1], [0.5, 0.9]]) {
      const pr = pruneGraph(fx.graph, nt, et);
      const json: GraphJson = JSON.parse(JSON.stringify(toGraphJson(fx.graph, pr, { slug: 'fx', scan: 'random/fixture', promptTokens: IDS.map(String), prompt: 'p', tokenText: (i) => `t${i}`, nodeThreshold: nt, edgeThreshold: et })));
      assert.ok(validate(json), JSON.stringify(validate.errors));
      assert.equal(json.nodes.filter((n: { feature_type: string }) => n.feature_type === 'embedding').length, IDS.length);
      assert.ok(json.links.length > 0);
      assert.deepEqual(JSON.parse(JSON.stringify(importedToJson(parseGraphJson(json)))), json);
      // Links carry the raw adjacency entries.
      const imp = parseGraphJson(json);
      for (const l of imp.links.slice(0, 50)) {
        const s = imp.nodes[l.source];
        const t = imp.nodes[l.target];
        if (s.kind !== 'feature' || t.kind !== 'feature') continue;
        const sn = findFeature(fx.graph, s.layer!, s.pos, s.index!);
        const tn = findFeature(fx.graph, t.layer!, t.pos, t.index!);
        assert.ok(Math.abs(fx.graph.adjacency_NN[tn * fx.graph.N + sn] - l.weight) <= 1e-6 * Math.max(1, Math.abs(l.weight)));
      }
    }
  });

  it('interventions: the rerun matches the reference forward with the reconstruction delta; predictions match the frozen model', async () => {
    const fx = await fixture('intervene-relu', 'relu', 'saelens');
    const g = fx.graph;
    const D = fx.cfg.dModel;
    const V = fx.cfg.vocabSize;
    const P = IDS.length;
    const t0 = logitNode(g, 0);
    let best = -1;
    for (let n = 0; n < g.nFeatures; n++) if (g.featLayer[n] === 1 && (best < 0 || Math.abs(g.adjacency_NN[t0 * g.N + n]) > Math.abs(g.adjacency_NN[t0 * g.N + best]))) best = n;
    const [l, p, f, a] = [g.featLayer[best], g.featPos[best], g.featIndex[best], g.featAct[best]];
    const iv = { layer: l, pos: p, feature: f, value: a * 1.5 };
    const r = await intervene(fx.attributor, g, [iv]);
    // Actual: the plain-loop reference forward with (new − old)·W_dec[f] added at blocks.l.hook_resid_post.
    const add = new Float32Array(P * D);
    for (let d = 0; d < D; d++) add[p * D + d] = (iv.value - a) * fx.tc[l].wDec_FD[f * D + d];
    const steered = referenceForward(fx.cfg, fx.W, IDS, new Map([[`${l}:hook_resid_post`, add]])).get('logits')!.data.subarray((P - 1) * V);
    const base = fx.ref.get('logits')!.data.subarray((P - 1) * V);
    const mean = (x: Float32Array) => x.reduce((s, v) => s + v, 0) / V;
    const [mb, ms] = [mean(base), mean(steered)];
    // Predicted (direct): the frozen replacement model with that source scaled by 1.5, other sources fixed.
    const { mlp, emb, vectors } = oracleSources(fx, g);
    const mlp2 = mlp.map((m) => Float64Array.from(m));
    for (let d = 0; d < D; d++) mlp2[l][p * D + d] += 0.5 * vectors.get(best)!.v[d];
    const before = targetValues(fx, g, frozenForward(fx, emb, mlp));
    const afterFrozen = targetValues(fx, g, frozenForward(fx, emb, mlp2));
    r.logits.forEach((c, i) => {
      const actual = steered[c.id] - ms - (base[c.id] - mb);
      assert.ok(Math.abs(c.actualDemeaned - actual) <= TOL * Math.max(1, Math.abs(base[c.id])), `actual change of logit ${c.id}: ${c.actualDemeaned} vs reference ${actual}`);
      const frozenDelta = afterFrozen[logitNode(g, i)] - before[logitNode(g, i)];
      assert.ok(Math.abs(c.predictedDirect - frozenDelta) <= TOL * Math.max(1, Math.abs(before[logitNode(g, i)])), `direct prediction ${c.predictedDirect} vs frozen ${frozenDelta}`);
    });
    console.log(`  intervention (layer ${l}, ×1.5): ` + r.logits.slice(0, 3).map((c) => `logit ${c.id}: predicted direct ${c.predictedDirect.toFixed(4)}, paths ${c.predictedPaths.toFixed(4)}, actual ${c.actualDemeaned.toFixed(4)}`).join('; '));
    // Ablating an early feature: paths include downstream features; an inactive feature is reported as such.
    const early = Array.from({ length: g.nFeatures }, (_, i) => i).find((n) => g.featLayer[n] === 0 && g.featPos[n] === IDS.length - 1)!;
    const inactive = Array.from({ length: F }, (_, f) => f).find((f) => !Array.from(g.featIndex).some((x, n) => x === f && g.featLayer[n] === 0 && g.featPos[n] === 0))!;
    const r2 = await intervene(fx.attributor, g, [
      { layer: 0, pos: g.featPos[early], feature: g.featIndex[early], value: 0 },
      { layer: 0, pos: 0, feature: inactive, value: 1 },
    ]);
    assert.equal(r2.notInGraph.length, 1);
    assert.ok(r2.logits.every((c) => Number.isFinite(c.actualDemeaned) && Number.isFinite(c.predictedPaths)));
    await assert.rejects(intervene(fx.attributor, g, [{ layer: 9, pos: 0, feature: 0, value: 0 }]), /no layer 9/);
  });

  it('maxFeatureNodes: the graph keeps the chosen features; every row and column it writes equals the full graph', async () => {
    const fx = await fixture('maxnodes-jump', 'jumprelu', 'saelens');
    const full = fx.graph;
    const cut = await fx.attributor.attribute(IDS, { maxFeatureNodes: 50, featureBatch: 20 });
    assert.equal(cut.nFeatures, 50, 'kept features');
    assert.equal(cut.nActiveFeatures, full.nFeatures, 'active features');
    assert.equal(cut.N, 50 + full.N - full.nFeatures, 'kept features + errors + tokens + logits');
    assert.ok(cut.influenceCovered > 0 && cut.influenceCovered < 1, `influence covered ${cut.influenceCovered}`);
    assert.equal(cut.memoryLimited, false);
    // Each node of the cut graph → the same node of the full graph (features by layer, position and index).
    const fullOf = Array.from({ length: cut.N }, (_, n) =>
      n < cut.nFeatures ? findFeature(full, cut.featLayer[n], cut.featPos[n], cut.featIndex[n]) : n - cut.nFeatures + full.nFeatures,
    );
    assert.ok(fullOf.every((n) => n >= 0), 'every kept feature is active in the full graph');
    let worst = 0;
    for (let t = 0; t < cut.N; t++) {
      assert.equal(cut.rowComputed[t], t < cut.nFeatures || t >= logitNode(cut, 0) ? 1 : 0, `row ${t} computed`);
      for (let s = 0; s < cut.N; s++) worst = Math.max(worst, Math.abs(cut.adjacency_NN[t * cut.N + s] - full.adjacency_NN[fullOf[t] * full.N + fullOf[s]]));
      assert.ok(Math.abs(cut.actual_N[t] - full.actual_N[fullOf[t]]) <= 1e-9 * Math.max(1, Math.abs(full.actual_N[fullOf[t]])));
      assert.ok(Math.abs(cut.constant_N[t] - full.constant_N[fullOf[t]]) <= 1e-9 * Math.max(1, Math.abs(full.constant_N[fullOf[t]])));
    }
    assert.ok(worst <= 1e-5, `rows differ by ${worst}`);
    // The kept features are the most influential ones: circuit-tracer's selection keeps the top of the full graph.
    const pr = pruneGraph(full);
    const rank = Array.from({ length: full.nFeatures }, (_, i) => i).sort((x, y) => pr.influence[y] - pr.influence[x]);
    const kept = new Set(fullOf.slice(0, cut.nFeatures));
    const top10 = rank.slice(0, 10).filter((n) => kept.has(n)).length;
    assert.ok(top10 >= 8, `${top10} of the full graph's 10 most influential features kept`);
    // A feature the cut graph dropped is still active: its activation is known, and an intervention on it changes the
    // real model exactly as on the full graph (from its real activation, not from 0).
    const dropped = Array.from({ length: full.nFeatures }, (_, n) => n).find((n) => !kept.has(n))!;
    const [l, p, f] = [full.featLayer[dropped], full.featPos[dropped], full.featIndex[dropped]];
    assert.equal(activeActivation(cut, l, p, f), full.featAct[dropped]);
    assert.equal(activeActivation(cut, l, p, (f + 1) % F === f ? f : -1), 0);
    const iv = [{ layer: l, pos: p, feature: f, value: 0 }];
    const [onCut, onFull] = [await intervene(fx.attributor, cut, iv), await intervene(fx.attributor, full, iv)];
    assert.equal(onCut.notInGraph.length, 1);
    onCut.logits.forEach((c, i) => assert.ok(Math.abs(c.actualDemeaned - onFull.logits[i].actualDemeaned) <= 1e-6, `logit ${c.id}`));
  });

  it('topOutputTokens and decoderLogits: W_dec[f] · W_U over the vocabulary, as a plain loop gives it', async () => {
    const fx = await fixture('maxnodes-jump', 'jumprelu', 'saelens');
    const U = fx.W.get('wte.weight')!;
    const D = SHAPE.dModel;
    const features = [{ layer: 0, index: 3 }, { layer: 2, index: 17 }, { layer: 1, index: F - 1 }];
    const got = await fx.attributor.topOutputTokens(features);
    features.forEach((f, i) => {
      let best = -Infinity;
      let arg = -1;
      for (let v = 0; v < SHAPE.vocabSize; v++) {
        let z = 0;
        for (let d = 0; d < D; d++) z += fx.tc[f.layer].wDec_FD[f.index * D + d] * U[v * D + d];
        if (z > best) (best = z), (arg = v);
      }
      assert.equal(got[i], arg, `feature ${f.index} of layer ${f.layer}`);
    });
    assert.deepEqual(await fx.attributor.topOutputTokens([]), []);
    // decoderLogits: the extremes with their values.
    const f = features[1];
    const z = Array.from({ length: SHAPE.vocabSize }, (_, v) => {
      let acc = 0;
      for (let d = 0; d < D; d++) acc += fx.tc[f.layer].wDec_FD[f.index * D + d] * U[v * D + d];
      return acc;
    });
    const order = z.map((_, v) => v).sort((a, b) => z[b] - z[a]);
    const { top, bottom } = await fx.attributor.decoderLogits(f.layer, f.index, 3);
    assert.deepEqual(top.map(([v]) => v), order.slice(0, 3));
    assert.deepEqual(bottom.map(([v]) => v), order.slice(-3).reverse());
    for (const [v, y] of [...top, ...bottom]) assert.ok(Math.abs(y - z[v]) <= 1e-5 * Math.max(1, Math.abs(z[v])), `value of ${v}`);
    await assert.rejects(fx.attributor.decoderLogits(0, F + 5), /no feature \d+ in layer 0/);
  });

  it('a memory budget with room keeps the graph as it is; one too small for the logit rows is refused with the numbers', async () => {
    const fx = await fixture('maxnodes-jump', 'jumprelu', 'saelens');
    const full = fx.graph;
    const g = await fx.attributor.attribute(IDS, { maxFeatureNodes: Infinity, maxMemoryBytes: process.memoryUsage().rss + 2e9 });
    assert.equal(g.memoryLimited, false);
    assert.equal(g.nFeatures, full.nFeatures);
    assert.deepEqual(g.adjacency_NN, full.adjacency_NN);
    const used = process.memoryUsage().rss;
    await assert.rejects(fx.attributor.attribute(IDS, { maxMemoryBytes: used / 2 }), (e: Error) => {
      assert.match(e.message, /memory budget of \d+(\.\d)? (MB|GB) is too small even for the logit rows: \d+(\.\d)? (MB|GB) is in use already/);
      return true;
    });
  });

  it('residual graph writes a valid file; refusals are ResidualErrors naming the problem', async () => {
    const dir = path.join(root, 'cli-graph');
    writeRandomGpt2(path.join(dir, 'model'), SHAPE, { seed: 5, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
    writeSaeLensTranscoders(path.join(dir, 'tc'), randomTranscoderWeights(SHAPE.nLayers, SHAPE.dModel, F, { seed: 9 }), { activation: 'topk', k: 4 });
    const out = path.join(dir, 'g.json');
    const args = ['--model', path.join(dir, 'model'), '--transcoders', path.join(dir, 'tc'), '--text', 'The quick brown fox', '--out', out, '--providers', 'cpu'];
    const write = process.stdout.write;
    let said = '';
    process.stdout.write = ((s: string) => (s.includes("g.json") ? ((said += s), true) : write.call(process.stdout, s))) as typeof process.stdout.write;
    try {
      assert.equal(await graphCommand(args), 0);
    } finally {
      process.stdout.write = write;
    }
    assert.match(said, /g\.json \(listed in graph-metadata\.json\): \d+ nodes, \d+ links/);
    const json = JSON.parse(fs.readFileSync(out, 'utf8'));
    assert.equal(json.metadata.slug, 'g');
    assert.equal(json.metadata.prompt, 'The quick brown fox');
    // circuit-tracer's viewer lists a folder's graphs from graph-metadata.json and opens <slug>.json.
    const index = JSON.parse(fs.readFileSync(path.join(path.dirname(out), 'graph-metadata.json'), 'utf8'));
    assert.deepEqual(index.graphs.map((g: { slug: string }) => g.slug), ['g']);
    assert.equal(index.graphs[0].prompt, 'The quick brown fox');
    await assert.rejects(graphCommand([...args, '--node-threshold', '2']), /--node-threshold must be a number in \[0, 1\]/);
    await assert.rejects(graphCommand(args.slice(2)), /--model DIR is required/);
    await assert.rejects(graphCommand([...args.slice(0, 2), '--transcoders', path.join(dir, 'nope'), ...args.slice(4)]), /transcoders folder not found/);
  });
});

describe('QK attribution vs the frozen replacement model, each source carried forward on its own', () => {
  /**
   * Every source's query and key vectors at (layer, head), in plain loops: the source alone through the frozen
   * forward (minus the all-sources-removed forward), then ln1 with its frozen scale and W_Q / W_K of the head. The
   * bias vectors are the all-sources-removed residual's, plus ln1's bias and b_Q / b_K.
   */
  function oracleQk(fx: Fixture, layer: number, head: number, query: number, key: number) {
    const g = fx.graph;
    const { cfg, W, ref } = fx;
    const { dModel: D, dHead: E } = cfg;
    const P = IDS.length;
    const { vectors } = oracleSources(fx, g);
    const zeroEmb = new Float64Array(P * D);
    const constMlp = Array.from({ length: cfg.nLayers }, (_, l) => bDecOnly(fx, l));
    const base = frozenForward(fx, zeroEmb, constMlp).pres[layer];
    const ca = W.get(`h.${layer}.attn.c_attn.weight`)!;
    const cab = W.get(`h.${layer}.attn.c_attn.bias`)!;
    const lw = W.get(`h.${layer}.ln_1.weight`)!;
    const lb = W.get(`h.${layer}.ln_1.bias`)!;
    const s1 = ref.get(`blocks.${layer}.ln1.hook_scale` as HookName)!.data;
    const project = (x: ArrayLike<number>, pos: number, offset: number, bias: boolean) => {
      let mean = 0;
      for (let d = 0; d < D; d++) mean += x[pos * D + d] / D;
      return Float64Array.from({ length: E }, (_, e) => {
        const col = offset + head * E + e;
        let s = bias ? cab[col] : 0;
        for (let d = 0; d < D; d++) s += (((x[pos * D + d] - mean) / s1[pos]) * lw[d] + (bias ? lb[d] : 0)) * ca[d * 3 * D + col];
        return s;
      });
    };
    const qOf = new Map<number, Float64Array>();
    const kOf = new Map<number, Float64Array>();
    for (const [node, src] of vectors) {
      const emb = new Float64Array(P * D);
      const mlp = constMlp.map((m) => Float64Array.from(m));
      if (src.layer < 0) emb.set(src.v, src.pos * D);
      else for (let d = 0; d < D; d++) mlp[src.layer][src.pos * D + d] += src.v[d];
      const pre = frozenForward(fx, emb, mlp).pres[layer];
      const alone = Float64Array.from(pre, (x, i) => x - base[i]);
      qOf.set(node, project(alone, query, 0, false));
      kOf.set(node, project(alone, key, D, false));
    }
    const qBias = project(base, query, 0, true);
    const kBias = project(base, key, D, true);
    const sum = (m: Map<number, Float64Array>, b: Float64Array) => {
      const v = Float64Array.from(b);
      for (const x of m.values()) for (let e = 0; e < E; e++) v[e] += x[e];
      return v;
    };
    return { qOf, kOf, qBias, kBias, qVec: sum(qOf, qBias), kVec: sum(kOf, kBias), E };
  }

  const nodeOf = (g: AttributionGraph, s: QkSource): number | 'bias' =>
    s.kind === 'bias' ? 'bias' : s.kind === 'feature' ? findFeature(g, s.layer, s.pos, s.index) : s.kind === 'error' ? errorNode(g, s.layer, s.pos) : tokenNode(g, s.pos);

  for (const [layer, head, query, key] of [[2, 1, 9, undefined], [1, 3, 6, 2]] as const) {
    it(`layer ${layer} head ${head}, query ${query}, key ${key ?? 'where it attends most'}: score, every listed share and pair, the kind sums`, async () => {
      const fx = await fixture('relu-saelens-qk', 'relu', 'saelens');
      const g = fx.graph;
      const r = await qkAttribution(fx.attributor, IDS, { layer, head, query, key, top: 12 });
      const P = IDS.length;
      const H = fx.cfg.nHeads;
      const pattern = fx.ref.get(`blocks.${layer}.attn.hook_pattern` as HookName)!.data;
      if (key === undefined) {
        const row = Array.from(pattern.subarray((head * P + query) * P, (head * P + query) * P + query + 1));
        assert.equal(r.key, row.indexOf(Math.max(...row)), 'the key it attends to most');
      }
      const realScore = fx.ref.get(`blocks.${layer}.attn.hook_attn_scores` as HookName)!.data[(head * P + query) * P + r.key];
      const close = (got: number, want: number, what: string) => assert.ok(Math.abs(got - want) <= TOL * Math.max(1, Math.abs(want)), `${what}: ${got} vs ${want}`);
      close(r.realScore, realScore, 'the model\'s score');
      close(r.score, realScore, 'the split adds up to the real score');
      close(r.querySum, realScore, 'query-side shares add up');
      close(r.keySum, realScore, 'key-side shares add up');
      close(r.pattern, pattern[(head * P + query) * P + r.key], 'pattern');
      assert.ok(H > head);
      const o = oracleQk(fx, layer, head, query, r.key);
      const inv = 1 / Math.sqrt(o.E);
      const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, x, e) => s + x * b[e], 0) * inv;
      close(dot(o.qVec, o.kVec), realScore, 'the oracle\'s own split adds up');
      const qv = (s: QkSource) => (nodeOf(g, s) === 'bias' ? o.qBias : o.qOf.get(nodeOf(g, s) as number)!);
      const kv = (s: QkSource) => (nodeOf(g, s) === 'bias' ? o.kBias : o.kOf.get(nodeOf(g, s) as number)!);
      for (const x of r.querySide) close(x.value, dot(qv(x.source), o.kVec), `query share of ${JSON.stringify(x.source)}`);
      for (const x of r.keySide) close(x.value, dot(o.qVec, kv(x.source)), `key share of ${JSON.stringify(x.source)}`);
      for (const x of r.pairs) close(x.value, dot(qv(x.query), kv(x.key)), `pair ${JSON.stringify(x)}`);
      // The listed shares are the largest: none left out is larger.
      const allQ = [...o.qOf.values(), o.qBias].map((v) => Math.abs(dot(v, o.kVec))).sort((a, b) => b - a);
      close(Math.abs(r.querySide[0].value), allQ[0], 'the largest query-side share');
      assert.ok(r.querySide.length === 12 && r.pairs.length === 12);
      // Sources after the query, or in layers at or above this one, cannot reach it.
      for (const x of [...r.querySide, ...r.keySide]) if (x.source.kind !== 'bias') assert.ok(x.source.pos <= query && (x.source.kind === 'token' || x.source.layer < layer), JSON.stringify(x.source));
      // By kind: each kind's vectors summed, then paired.
      const kindSum = (m: Map<number, Float64Array>, bias: Float64Array, kind: string) => {
        const v = new Float64Array(o.E);
        if (kind === 'bias') return Float64Array.from(bias);
        for (const [n, x] of m) {
          const k = n < g.nFeatures ? 'feature' : n < tokenNode(g, 0) ? 'error' : 'token';
          if (k === kind) for (let e = 0; e < o.E; e++) v[e] += x[e];
        }
        return v;
      };
      for (const c of r.byKind) close(c.value, dot(kindSum(o.qOf, o.qBias, c.query), kindSum(o.kOf, o.kBias, c.key)), `${c.query} × ${c.key}`);
      close(r.byKind.reduce((s, c) => s + c.value, 0), realScore, 'the kind sums add up');
    });
  }

  it('refusals: a key after the query, a head or layer that does not exist', async () => {
    const fx = await fixture('relu-saelens-qk', 'relu', 'saelens');
    await assert.rejects(qkAttribution(fx.attributor, IDS, { layer: 1, head: 0, query: 3, key: 5 }), /key position 5 is after the query \(3\): a causal head cannot attend there/);
    await assert.rejects(qkAttribution(fx.attributor, IDS, { layer: 1, head: 4, query: 3 }), /head 4 does not exist \(layer 1 has heads 0\.\.3\)/);
    await assert.rejects(qkAttribution(fx.attributor, IDS, { layer: 3, head: 0 }), /layer 3 does not exist \(the model has layers 0\.\.2\)/);
    await assert.rejects(qkAttribution(fx.attributor, IDS, { layer: 1, head: 0, query: 10 }), /query position 10 does not exist: the prompt has 10 tokens/);
  });
});
