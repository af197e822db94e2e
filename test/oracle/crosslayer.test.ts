/**
 * Oracle tests of attribution graphs with cross-layer transcoders (CLT: a feature of layer l writes every MLP output
 * from l on) and skip transcoders (the output gains x·W_skipᵀ of the input x), on tiny random GPT-2 checkpoints.
 *
 * The oracle is written here from the definitions, independently of the engine: the plain-loop reference forward (real
 * model), the encoders and decoders in plain loops, and a plain-loop forward of the frozen replacement model — patterns
 * and LayerNorm scales fixed, each MLP replaced by what its writers' features write into it, b_dec, its error, and for a
 * skip transcoder W_skip applied to the frozen model's own input hook (so the skip is a path, not a constant).
 *
 * Checks, as for per-layer transcoders: (1) completeness — Σ incoming edges + constant = the real value; (2) every edge =
 * the change of every target when its source is removed from the frozen model (a CLT feature from every layer it
 * writes); (3) the constants = the frozen model with every source removed; (4) the frozen model reproduces the real
 * logits; and interventions on a CLT feature against the reference forward with every layer's write added.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { NormalStream, writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import type { Tensor32 } from '../../src/engine/dims';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { referenceForward } from '../../src/engine/reference/gpt2';
import { silenceOrt } from '../../src/engine/runtime/session';
import { Attributor } from '../../src/engine/circuits/attribution';
import { errorNode, logitNode, tokenNode, type AttributionGraph, type AttributionTarget } from '../../src/engine/circuits/graph';
import { intervene } from '../../src/engine/circuits/interventions';
import { qkAttribution } from '../../src/engine/circuits/qk';
import { loadTranscoders } from '../../src/engine/circuits/transcoders';
import {
  randomCrossLayerWeights,
  randomTranscoderWeights,
  writeCircuitTracerTranscoders,
  writeCrossLayerTranscoder,
  writeSaeLensTranscoders,
  type WriteActivation,
} from '../../src/engine/circuits/transcoders-write';
import { featureVector } from '../../src/engine/steering/vectors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { addFrozenAttention, frozenFinalLogits } from './frozen-gpt2';

const TOL = 1e-4;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-clt-'));
const cacheDir = path.join(root, 'cache');
const SHAPE = { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 24, vocabSize: 50257 };
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13];
const P = IDS.length;
const F = 32;
const cleanup: (() => Promise<void>)[] = [];

before(() => silenceOrt());
after(async () => {
  for (const c of cleanup) await c();
  fs.rmSync(root, { recursive: true, force: true });
});

type Input = 'ln2.hook_normalized' | 'hook_resid_mid' | 'mlp.hook_in';

/** One layer as the oracle sees it: encoder [D, F], decoder into each output layer k ≥ own ([F, D] per k), W_skip. */
interface OracleLayer {
  wEnc_DF: Float32Array;
  bEnc_F: Float32Array;
  bDec_D: Float32Array;
  threshold_F?: Float32Array;
  /** decInto[j] for output layers j (undefined for layers it does not write). */
  decInto: (Float32Array | undefined)[];
  wSkip_DD?: Float32Array;
}

interface Fixture {
  name: string;
  dir: string;
  cfg: ModelConfig;
  W: Map<string, Float32Array>;
  layers: OracleLayer[];
  ref: Map<HookName, Tensor32>;
  attributor: Attributor;
  graph: AttributionGraph;
  activation: WriteActivation;
  k: number;
  relu: boolean;
  input: Input;
  tdir: string;
}

interface Case {
  name: string;
  kind: 'clt' | 'skip-saelens' | 'skip-circuit-tracer';
  activation: WriteActivation;
  input: Input;
}

async function fixture(c: Case): Promise<Fixture> {
  const dir = path.join(root, c.name);
  const seed = c.name.length * 17 + 5;
  writeRandomGpt2(path.join(dir, 'model'), SHAPE, { seed, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
  const { nLayers: L, dModel: D } = SHAPE;
  const opts = { seed: seed + 1, bEncMean: c.activation === 'relu' ? -0.6 : 0, threshold: 0.4 };
  const k = 5;
  const tdir = path.join(dir, 'transcoders');
  const layers: OracleLayer[] = [];
  if (c.kind === 'clt') {
    const w = randomCrossLayerWeights(L, D, F, { ...opts, decStd: 0.6 / Math.sqrt(F) });
    writeCrossLayerTranscoder(tdir, w, { activation: c.activation, k, input: c.input });
    for (let l = 0; l < L; l++) {
      const decInto: (Float32Array | undefined)[] = [];
      for (let j = l; j < L; j++) {
        const m = new Float32Array(F * D);
        for (let f = 0; f < F; f++) for (let d = 0; d < D; d++) m[f * D + d] = w[l].wDec_FKD[(f * (L - l) + (j - l)) * D + d];
        decInto[j] = m;
      }
      layers.push({ wEnc_DF: w[l].wEnc_DF, bEnc_F: w[l].bEnc_F, bDec_D: w[l].bDec_D, threshold_F: w[l].threshold_F, decInto });
    }
  } else {
    const w = randomTranscoderWeights(L, D, F, opts);
    const normal = new NormalStream(seed + 2);
    for (const t of w) {
      t.wSkip_DD = new Float32Array(D * D);
      normal.fill(t.wSkip_DD, 0, 0.5 / Math.sqrt(D));
    }
    if (c.kind === 'skip-saelens') writeSaeLensTranscoders(tdir, w, { activation: c.activation, k, input: c.input });
    else writeCircuitTracerTranscoders(tdir, w, { activation: c.activation, k, input: c.input });
    w.forEach((t, l) => layers.push({ ...t, decInto: Object.assign([], { [l]: t.wDec_FD }) }));
  }
  const model = await Model.load(path.join(dir, 'model'), { providers: ['cpu'], cacheDir });
  const set = loadTranscoders(tdir, model.config);
  const attributor = new Attributor(model, set, { cacheDir });
  cleanup.push(async () => {
    await attributor.dispose();
    await model.dispose();
  });
  const graph = await attributor.attribute(IDS, { maxFeatureNodes: Infinity });
  const ckpt = openCheckpoint(path.join(dir, 'model'));
  const W = new Map([...ckpt.tensors].map(([n, e]) => [n, readTensorF32(e)]));
  const ref = referenceForward(ckpt.config, W, IDS);
  return { name: c.name, dir, cfg: ckpt.config, W, layers, ref, attributor, graph, activation: c.activation, k, relu: c.kind === 'skip-saelens', input: c.input, tdir };
}

/** The input hook's value from the residual at hook_resid_mid, frozen ln2 scale `s2` (plain loops). */
function inputOf(fx: Fixture, l: number, x: ArrayLike<number>, s2: number): Float64Array {
  const D = fx.cfg.dModel;
  let mean = 0;
  for (let d = 0; d < D; d++) mean += x[d] / D;
  const w = fx.W.get(`h.${l}.ln_2.weight`)!;
  const b = fx.W.get(`h.${l}.ln_2.bias`)!;
  return Float64Array.from({ length: D }, (_, d) =>
    fx.input === 'hook_resid_mid' ? x[d] : fx.input === 'ln2.hook_normalized' ? (x[d] - mean) / s2 : ((x[d] - mean) / s2) * w[d] + b[d],
  );
}

/** Active features per layer and position from the reference run's input hooks, and every pre-activation. */
function oracleFeatures(fx: Fixture) {
  const D = fx.cfg.dModel;
  const acts: Map<number, number>[][] = [];
  const pres: Float64Array[][] = [];
  for (let l = 0; l < fx.cfg.nLayers; l++) {
    const x = fx.ref.get(`blocks.${l}.${fx.input}` as HookName)!.data;
    const t = fx.layers[l];
    acts.push([]);
    pres.push([]);
    for (let p = 0; p < P; p++) {
      const pre = Float64Array.from({ length: F }, (_, f) => {
        let s = t.bEnc_F[f];
        for (let d = 0; d < D; d++) s += x[p * D + d] * t.wEnc_DF[d * F + f];
        return s;
      });
      const m = new Map<number, number>();
      if (fx.activation === 'relu') pre.forEach((v, f) => v > 0 && m.set(f, v));
      else if (fx.activation === 'jumprelu') pre.forEach((v, f) => v > t.threshold_F![f] && m.set(f, v));
      else
        for (const f of Array.from(pre.keys()).sort((a, b) => pre[b] - pre[a]).slice(0, fx.k)) {
          const v = fx.relu ? Math.max(0, pre[f]) : pre[f];
          if (v !== 0) m.set(f, v);
        }
      acts[l].push(m);
      pres[l].push(pre);
    }
  }
  return { acts, pres };
}

/** A source: the vector it adds to the MLP output of each layer it writes (layer −1: the embeddings). */
interface Source {
  writes: Map<number, Float64Array>;
  pos: number;
}

/**
 * Every source (feature → all its writes; error of layer j; token) keyed by node, and `fixed[j]`: what layer j's MLP
 * output holds apart from the skip path (every source's write + b_dec). The error is real − (writes + b_dec + skip of
 * the real input).
 */
function oracleSources(fx: Fixture, g: AttributionGraph) {
  const { cfg, W, ref } = fx;
  const D = cfg.dModel;
  const L = cfg.nLayers;
  const { acts } = oracleFeatures(fx);
  const sources = new Map<number, Source>();
  const fixed = Array.from({ length: L }, (_, j) => {
    const m = new Float64Array(P * D);
    for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) m[p * D + d] = fx.layers[j].bDec_D[d];
    return m;
  });
  for (let l = 0; l < L; l++)
    for (let p = 0; p < P; p++)
      for (const [f, a] of acts[l][p]) {
        const writes = new Map<number, Float64Array>();
        for (let j = l; j < L; j++) {
          const dec = fx.layers[l].decInto[j];
          if (!dec) continue;
          const v = Float64Array.from({ length: D }, (_, d) => a * dec[f * D + d]);
          writes.set(j, v);
          for (let d = 0; d < D; d++) fixed[j][p * D + d] += v[d];
        }
        // A graph for a direction target keeps only the features that can reach it; the others stay in the sums.
        const n = findFeature(g, l, p, f);
        if (n >= 0) sources.set(n, { writes, pos: p });
      }
  for (let j = 0; j < L; j++) {
    const real = ref.get(`blocks.${j}.hook_mlp_out` as HookName)!.data;
    const xIn = ref.get(`blocks.${j}.${fx.input}` as HookName)!.data;
    for (let p = 0; p < P; p++) {
      const skip = skipOf(fx, j, xIn.subarray(p * D, (p + 1) * D));
      const err = Float64Array.from({ length: D }, (_, d) => real[p * D + d] - fixed[j][p * D + d] - skip[d]);
      for (let d = 0; d < D; d++) fixed[j][p * D + d] += err[d];
      sources.set(errorNode(g, j, p), { writes: new Map([[j, err]]), pos: p });
    }
  }
  const emb = new Float64Array(P * D);
  const [wte, wpe] = [W.get('wte.weight')!, W.get('wpe.weight')!];
  for (let p = 0; p < P; p++) {
    const v = Float64Array.from({ length: D }, (_, d) => wte[IDS[p] * D + d] + wpe[p * D + d]);
    emb.set(v, p * D);
    sources.set(tokenNode(g, p), { writes: new Map([[-1, v]]), pos: p });
  }
  return { sources, fixed, emb, acts };
}

/** x·W_skipᵀ of layer j (zeros without a skip). */
function skipOf(fx: Fixture, j: number, x: ArrayLike<number>): Float64Array {
  const D = fx.cfg.dModel;
  const w = fx.layers[j].wSkip_DD;
  return Float64Array.from({ length: D }, (_, d) => {
    if (!w) return 0;
    let s = 0;
    for (let e = 0; e < D; e++) s += w[d * D + e] * x[e];
    return s;
  });
}

/**
 * The frozen replacement model in plain loops: embeddings `emb`, layer j's MLP output = `fixed[j]` + the skip of the
 * input hook computed from this forward's own resid_mid (frozen ln2 scale). Returns the residual before each block,
 * after each attention, and the final one.
 */
function frozenForward(fx: Fixture, emb: Float64Array, fixed: Float64Array[]) {
  const { cfg, ref } = fx;
  const D = cfg.dModel;
  const resid = Float64Array.from(emb);
  const pres: Float64Array[] = [];
  const mids: Float64Array[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    pres.push(Float64Array.from(resid));
    addFrozenAttention(cfg, fx.W, ref, l, resid, P);
    mids.push(Float64Array.from(resid));
    const s2 = ref.get(`blocks.${l}.ln2.hook_scale` as HookName)!.data;
    for (let p = 0; p < P; p++) {
      const skip = skipOf(fx, l, inputOf(fx, l, mids[l].subarray(p * D, (p + 1) * D), s2[p]));
      for (let d = 0; d < D; d++) resid[p * D + d] += fixed[l][p * D + d] + skip[d];
    }
  }
  return { pres, mids, final: resid };
}

/** Every target of `g` from a frozen forward: features' pre-activations; logits demeaned; or the direction's dot product. */
function targetValues(fx: Fixture, g: AttributionGraph, r: ReturnType<typeof frozenForward>, target?: AttributionTarget): Float64Array {
  const { cfg, W, ref } = fx;
  const D = cfg.dModel;
  const out = new Float64Array(g.N);
  for (let n = 0; n < g.nFeatures; n++) {
    const [l, p, f] = [g.featLayer[n], g.featPos[n], g.featIndex[n]];
    const x = inputOf(fx, l, r.mids[l].subarray(p * D, (p + 1) * D), ref.get(`blocks.${l}.ln2.hook_scale` as HookName)!.data[p]);
    let s = fx.layers[l].bEnc_F[f];
    for (let d = 0; d < D; d++) s += x[d] * fx.layers[l].wEnc_DF[d * F + f];
    out[n] = s;
  }
  if (target?.kind === 'direction') {
    const at = target.hook === 'hook_resid_pre' ? r.pres[target.layer] : target.hook === 'hook_resid_mid' ? r.mids[target.layer] : target.layer + 1 < cfg.nLayers ? r.pres[target.layer + 1] : r.final;
    const q = target.position ?? P - 1;
    out[logitNode(g, 0)] = target.vector.reduce((s, v, d) => s + v * at[q * D + d], 0);
    return out;
  }
  const logits = frozenFinalLogits(cfg, W, ref, r.final, P);
  const lm = logits.reduce((s, v) => s + v, 0) / cfg.vocabSize;
  g.logitIds.forEach((id, i) => (out[logitNode(g, i)] = logits[id] - lm));
  return out;
}

function findFeature(g: AttributionGraph, l: number, p: number, f: number): number {
  for (let n = 0; n < g.nFeatures; n++) if (g.featLayer[n] === l && g.featPos[n] === p && g.featIndex[n] === f) return n;
  return -1;
}

/** Removes `src` from copies of the embeddings and MLP outputs. */
function without(fx: Fixture, emb: Float64Array, fixed: Float64Array[], src: Source) {
  const D = fx.cfg.dModel;
  const emb2 = Float64Array.from(emb);
  const fixed2 = fixed.map((m) => Float64Array.from(m));
  for (const [j, v] of src.writes) {
    const into = j < 0 ? emb2 : fixed2[j];
    for (let d = 0; d < D; d++) into[src.pos * D + d] -= v[d];
  }
  return { emb2, fixed2 };
}

/** Checks (1)–(4) of the module comment on graph `g` (built for `target`), returning the worst errors. */
function checkGraph(fx: Fixture, g: AttributionGraph, target?: AttributionTarget) {
  const D = fx.cfg.dModel;
  const V = fx.cfg.vocabSize;
  const { sources, fixed, emb, acts } = oracleSources(fx, g);
  // Every active feature is in the graph (for a direction target: every one that can reach it, and no other).
  let nActive = 0;
  for (let l = 0; l < acts.length; l++)
    for (let p = 0; p < P; p++)
      for (const f of acts[l][p].keys()) {
        const reaches = target?.kind !== 'direction' || (p <= (target.position ?? P - 1) && l < (target.hook === 'hook_resid_post' ? target.layer + 1 : target.layer));
        if (reaches) nActive++;
        assert.equal(findFeature(g, l, p, f) >= 0, reaches, `feature ${l}/${p}/${f} in the graph`);
      }
  assert.equal(g.nFeatures, nActive, 'number of features');
  for (let n = 0; n < g.nFeatures; n++) {
    const want = acts[g.featLayer[n]][g.featPos[n]].get(g.featIndex[n])!;
    assert.ok(Math.abs(g.featAct[n] - want) <= TOL * Math.max(1, Math.abs(want)), `activation of feature node ${n}`);
  }
  const { pres } = oracleFeatures(fx);
  const base = frozenForward(fx, emb, fixed);
  const baseVals = targetValues(fx, g, base, target);
  const rel = (got: number, want: number, scale = want) => Math.abs(got - want) / Math.max(1, Math.abs(scale));
  // (4) With every source at its value the frozen model is the real one: logits and pre-activations.
  const realLogits = fx.ref.get('logits')!.data.subarray((P - 1) * V, P * V);
  let realMean = 0;
  for (let t = 0; t < V; t++) realMean += realLogits[t] / V;
  let worstReal = 0;
  for (let n = 0; n < g.nFeatures; n++) worstReal = Math.max(worstReal, rel(baseVals[n], pres[g.featLayer[n]][g.featPos[n]][g.featIndex[n]]));
  if (!target) g.logitIds.forEach((id, i) => (worstReal = Math.max(worstReal, rel(baseVals[logitNode(g, i)], realLogits[id] - realMean))));
  else {
    const tgt = target as Extract<AttributionTarget, { kind: 'direction' }>;
    const x = fx.ref.get(`blocks.${tgt.layer}.${tgt.hook}` as HookName)!.data;
    const q = tgt.position ?? P - 1;
    worstReal = Math.max(worstReal, rel(baseVals[logitNode(g, 0)], tgt.vector.reduce((s, v, d) => s + v * x[q * D + d], 0)));
  }
  assert.ok(worstReal <= TOL, `frozen replacement model vs the real model: ${worstReal.toExponential(2)}`);
  const targets = [...Array.from({ length: g.nFeatures }, (_, i) => i), ...g.logitIds.map((_, i) => logitNode(g, i))];
  // (1) Completeness.
  let worstComplete = 0;
  for (const t of targets) {
    let sum = g.constant_N[t];
    for (let s = 0; s < g.N; s++) sum += g.adjacency_NN[t * g.N + s];
    worstComplete = Math.max(worstComplete, rel(sum, baseVals[t]));
  }
  assert.ok(worstComplete <= TOL, `completeness: ${worstComplete.toExponential(2)}`);
  // (3) Constants: every source removed (the skip path stays: it is part of the frozen model).
  const zero = targetValues(fx, g, frozenForward(fx, new Float64Array(emb.length), fixed.map((_, j) => fixedBiasOnly(fx, j))), target);
  let worstConst = 0;
  for (const t of targets) worstConst = Math.max(worstConst, rel(g.constant_N[t], zero[t]));
  assert.ok(worstConst <= TOL, `constants vs the all-sources-removed forward: ${worstConst.toExponential(2)}`);
  // (2) Every edge by removing its source.
  let worstEdge = 0;
  let checked = 0;
  for (const [s, src] of sources) {
    const { emb2, fixed2 } = without(fx, emb, fixed, src);
    const vals = targetValues(fx, g, frozenForward(fx, emb2, fixed2), target);
    for (const t of targets) {
      worstEdge = Math.max(worstEdge, rel(g.adjacency_NN[t * g.N + s], baseVals[t] - vals[t], baseVals[t]));
      checked++;
    }
  }
  assert.ok(worstEdge <= TOL, `edges vs perturbation: ${worstEdge.toExponential(2)} over ${checked} entries`);
  return { worstReal, worstComplete, worstConst, worstEdge, checked };
}

function fixedBiasOnly(fx: Fixture, j: number): Float64Array {
  const D = fx.cfg.dModel;
  const m = new Float64Array(P * D);
  for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) m[p * D + d] = fx.layers[j].bDec_D[d];
  return m;
}

const CASES: Case[] = [
  { name: 'clt-jumprelu', kind: 'clt', activation: 'jumprelu', input: 'ln2.hook_normalized' },
  { name: 'clt-relu-residmid', kind: 'clt', activation: 'relu', input: 'hook_resid_mid' },
  { name: 'skip-saelens-relu', kind: 'skip-saelens', activation: 'relu', input: 'ln2.hook_normalized' },
  { name: 'skip-ct-topk-mlpin', kind: 'skip-circuit-tracer', activation: 'topk', input: 'mlp.hook_in' },
];
const fixtures = new Map<string, Promise<Fixture>>();
const fixtureOf = (name: string) => {
  let f = fixtures.get(name);
  if (!f) fixtures.set(name, (f = fixture(CASES.find((c) => c.name === name)!)));
  return f;
};

describe('cross-layer and skip transcoders: attribution vs an independent frozen replacement model', () => {
  for (const c of CASES) {
    it(`${c.name}: same active features, exact logits, completeness, constants, every edge by perturbation`, async () => {
      const fx = await fixtureOf(c.name);
      const g = fx.graph;
      assert.ok(g.nFeatures > 10, `enough features to test (${g.nFeatures})`);
      const r = checkGraph(fx, g);
      console.log(
        `  ${c.name}: ${g.nFeatures} features, N=${g.N}; max rel. errors: real ${r.worstReal.toExponential(1)}, completeness ${r.worstComplete.toExponential(1)}, ` +
          `constants ${r.worstConst.toExponential(1)}, edges ${r.worstEdge.toExponential(1)} (${r.checked} entries)`,
      );
    });
  }

  it('a CLT feature of layer 0 has edges through every layer it writes: its logit edge is the sum, not layer 0 alone', async () => {
    // Without the later layers' writes the edge would differ: the oracle above removes every write, so this checks the
    // test can tell (a feature whose later writes matter).
    const fx = await fixtureOf('clt-jumprelu');
    const g = fx.graph;
    const D = fx.cfg.dModel;
    const { sources, fixed, emb } = oracleSources(fx, g);
    const t0 = logitNode(g, 0);
    const base = targetValues(fx, g, frozenForward(fx, emb, fixed))[t0];
    let differs = 0;
    for (let n = 0; n < g.nFeatures; n++) {
      if (g.featLayer[n] !== 0) continue;
      const src = sources.get(n)!;
      const first = { writes: new Map([[0, src.writes.get(0)!]]), pos: src.pos };
      const { emb2, fixed2 } = without(fx, emb, fixed, first);
      const onlyFirst = base - targetValues(fx, g, frozenForward(fx, emb2, fixed2))[t0];
      if (Math.abs(onlyFirst - g.adjacency_NN[t0 * g.N + n]) > 1e-3 * Math.max(1, Math.abs(base))) differs++;
    }
    assert.ok(differs > 0, 'some layer-0 feature whose later writes change its logit edge');
    assert.equal(D, SHAPE.dModel);
  });

  it('direction targets at hook_resid_pre / hook_resid_post read the skip path and the CLT writes below them', async () => {
    for (const name of ['skip-saelens-relu', 'clt-relu-residmid']) {
      const fx = await fixtureOf(name);
      const normal = new NormalStream(11);
      for (const [layer, hook] of [[2, 'hook_resid_pre'], [2, 'hook_resid_post']] as const) {
        const vector = new Float32Array(fx.cfg.dModel);
        normal.fill(vector, 0, 1);
        const target: AttributionTarget = { kind: 'direction', name: 'v', vector, layer, hook, position: 6 };
        const g = await fx.attributor.attribute(IDS, { target, maxFeatureNodes: Infinity });
        const r = checkGraph(fx, g, target);
        console.log(`  ${name} direction at blocks.${layer}.${hook}: completeness ${r.worstComplete.toExponential(1)}, edges ${r.worstEdge.toExponential(1)}`);
      }
    }
  });

  it('a feature-row limit on a CLT and on a skip set: every row and column the smaller graph writes equals the full graph', async () => {
    for (const name of ['clt-jumprelu', 'skip-ct-topk-mlpin']) {
      const fx = await fixtureOf(name);
      const full = fx.graph;
      const cut = await fx.attributor.attribute(IDS, { maxFeatureNodes: 40, featureBatch: 16 });
      assert.equal(cut.nFeatures, 40, 'kept features');
      const fullOf = Array.from({ length: cut.N }, (_, n) =>
        n < cut.nFeatures ? findFeature(full, cut.featLayer[n], cut.featPos[n], cut.featIndex[n]) : n - cut.nFeatures + full.nFeatures,
      );
      assert.ok(fullOf.every((n) => n >= 0), 'every kept feature is in the full graph');
      let worst = 0;
      for (let t = 0; t < cut.N; t++) {
        if (!cut.rowComputed[t]) continue;
        for (let s = 0; s < cut.N; s++) worst = Math.max(worst, Math.abs(cut.adjacency_NN[t * cut.N + s] - full.adjacency_NN[fullOf[t] * full.N + fullOf[s]]));
      }
      assert.ok(worst <= 1e-5, `${name}: rows differ by ${worst}`);
    }
  });

  it('the decoder logits of a CLT feature (its card): the sum of its writes · W_U, as a plain loop gives it', async () => {
    const fx = await fixtureOf('clt-jumprelu');
    const D = fx.cfg.dModel;
    const U = fx.W.get('wte.weight')!;
    const got = await fx.attributor.decoderLogits(0, 4, 5);
    const sum = Float64Array.from({ length: D }, (_, d) => [0, 1, 2].reduce((s, j) => s + fx.layers[0].decInto[j]![4 * D + d], 0));
    const logits = Array.from({ length: fx.cfg.vocabSize }, (_, v) => sum.reduce((s, x, d) => s + x * U[v * D + d], 0));
    const top = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, 5);
    assert.deepEqual(got.top.map(([id]) => id), top);
    got.top.forEach(([id, value], i) => assert.ok(Math.abs(value - logits[top[i]]) <= 1e-4, `logit of ${id}`));
  });

  it('interventions on a CLT feature add its write into every layer; the rerun matches the reference forward', async () => {
    const fx = await fixtureOf('clt-jumprelu');
    const g = fx.graph;
    const D = fx.cfg.dModel;
    const V = fx.cfg.vocabSize;
    const n = Array.from({ length: g.nFeatures }, (_, i) => i).find((i) => g.featLayer[i] === 0 && g.featPos[i] === P - 1)!;
    const [l, p, f, a] = [g.featLayer[n], g.featPos[n], g.featIndex[n], g.featAct[n]];
    const r = await intervene(fx.attributor, g, [{ layer: l, pos: p, feature: f, value: 0 }]);
    const adds = new Map<string, Float32Array>();
    for (let j = l; j < fx.cfg.nLayers; j++) {
      const add = new Float32Array(P * D);
      for (let d = 0; d < D; d++) add[p * D + d] = -a * fx.layers[l].decInto[j]![f * D + d];
      adds.set(`${j}:hook_resid_post`, add);
    }
    const steered = referenceForward(fx.cfg, fx.W, IDS, adds).get('logits')!.data.subarray((P - 1) * V);
    const baseLogits = fx.ref.get('logits')!.data.subarray((P - 1) * V);
    const mean = (x: Float32Array) => x.reduce((s, v) => s + v, 0) / V;
    for (const c of r.logits) {
      const actual = steered[c.id] - mean(steered) - (baseLogits[c.id] - mean(baseLogits));
      assert.ok(Math.abs(c.actualDemeaned - actual) <= TOL * Math.max(1, Math.abs(baseLogits[c.id])), `actual change of logit ${c.id}: ${c.actualDemeaned} vs ${actual}`);
      // The direct prediction is the feature's (whole) edge times −1.
      const edge = g.adjacency_NN[logitNode(g, r.logits.indexOf(c)) * g.N + n];
      assert.ok(Math.abs(c.predictedDirect + edge) <= 1e-6 * Math.max(1, Math.abs(edge)), 'direct prediction = −edge');
    }
  });

  it('QK attribution on a CLT and a skip set: the parts add up to the model\'s attention score', async () => {
    for (const name of ['clt-jumprelu', 'skip-saelens-relu']) {
      const fx = await fixtureOf(name);
      const r = await qkAttribution(fx.attributor, IDS, { layer: 2, head: 1, query: 8, key: 3, top: 5 });
      const E = fx.cfg.dHead;
      const scores = fx.ref.get('blocks.2.attn.hook_attn_scores' as HookName)!.data;
      const want = scores[(1 * P + 8) * P + 3];
      assert.ok(Math.abs(r.score - want) <= TOL * Math.max(1, Math.abs(want)), `score ${r.score} vs ${want}`);
      const kinds = r.byKind.reduce((acc, x) => acc + x.value, 0);
      assert.ok(Math.abs(kinds - r.score) <= TOL * Math.max(1, Math.abs(want)), `kind sums ${kinds} vs score ${r.score}`);
      assert.ok(E > 0);
    }
  });

  it('steering by a CLT feature: its decoder row into its own layer, at that layer\'s hook_resid_post; a skip feature as stored', async () => {
    const fx = await fixtureOf('clt-jumprelu');
    const v = featureVector(fx.tdir, 1, 7);
    const D = fx.cfg.dModel;
    assert.equal(v.point, 'hook_resid_post');
    assert.equal(v.layer, 1);
    assert.deepEqual(Array.from(v.vector), Array.from(fx.layers[1].decInto[1]!.subarray(7 * D, 8 * D)));
    assert.equal(v.provenance.kind, 'cross-layer transcoder feature');
    assert.equal(v.provenance.writes_layers, '1..2');
    const s = await fixtureOf('skip-saelens-relu');
    assert.deepEqual(Array.from(featureVector(s.tdir, 2, 3).vector), Array.from(s.layers[2].decInto[2]!.subarray(3 * D, 4 * D)));
  });
});
