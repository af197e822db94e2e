/**
 * Attribution graphs on the rotary families (Llama with grouped-query attention, Qwen2 with biases, Qwen3 whose
 * head space is wider than the model, sequential GPT-NeoX with LayerNorm biases and a fused projection), against an
 * independent frozen replacement model written here in plain loops from Hugging Face's weight names: completeness,
 * every edge by removing its source, the replacement model's logits equal the real ones. Transcoders read
 * mlp.hook_in (circuit-tracer's Llama transcoders), ln2.hook_normalized or hook_resid_mid.
 * Gemma-2 (norm after attention, soft-caps; logit targets before the final soft-cap, Gemma Scope-style transcoders
 * reading ln2.hook_normalized) too. Parallel blocks (Pythia) do not fit the frozen model and are refused.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import type { FamilyModelType } from '../../src/engine/checkpoint/families';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily, type RandomFamilyShape } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { Attributor } from '../../src/engine/circuits/attribution';
import { errorNode, logitNode, tokenNode, type AttributionGraph } from '../../src/engine/circuits/graph';
import { loadTranscoders, type TranscoderInput } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeCircuitTracerTranscoders, writeSaeLensTranscoders, type TranscoderWeights, type WriteActivation } from '../../src/engine/circuits/transcoders-write';
import type { Tensor32 } from '../../src/engine/dims';
import { Model } from '../../src/engine/model';
import { referenceDecoderForward } from '../../src/engine/reference/decoder';
import { silenceOrt } from '../../src/engine/runtime/session';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const TOL = 1e-4;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-attr-fam-'));
const cacheDir = path.join(root, 'cache');
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931];
const F = 40;
const cleanup: (() => Promise<void>)[] = [];
before(() => silenceOrt());
after(async () => {
  for (const c of cleanup) await c();
  fs.rmSync(root, { recursive: true, force: true });
});

const BASE: RandomFamilyShape = { num_hidden_layers: 3, hidden_size: 16, num_attention_heads: 4, intermediate_size: 24, max_position_embeddings: 32, vocab_size: 50257 };

interface Fx {
  cfg: ModelConfig;
  W: Map<string, Float32Array>;
  ref: Map<string, Tensor32>;
  tc: TranscoderWeights[];
  input: TranscoderInput;
  activation: WriteActivation;
  relu: boolean;
  graph: AttributionGraph;
}

async function fixture(name: string, type: FamilyModelType, shape: Partial<RandomFamilyShape>, activation: WriteActivation, layout: 'saelens' | 'circuit-tracer', input: TranscoderInput): Promise<Fx> {
  const dir = path.join(root, name);
  writeRandomFamily(path.join(dir, 'model'), type, { ...BASE, ...shape } as RandomFamilyShape, { seed: name.length * 17 + 5, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
  const D = (shape.hidden_size as number | undefined) ?? BASE.hidden_size;
  const tc = randomTranscoderWeights(BASE.num_hidden_layers, D, F, { seed: name.length + 11, bEncMean: activation === 'relu' ? -0.6 : 0, threshold: 0.4 });
  const tdir = path.join(dir, 'transcoders');
  if (layout === 'saelens') writeSaeLensTranscoders(tdir, tc, { activation, k: 6, input });
  else writeCircuitTracerTranscoders(tdir, tc, { activation, k: 6, input });
  const model = await Model.load(path.join(dir, 'model'), { providers: ['cpu'], cacheDir });
  const attributor = new Attributor(model, loadTranscoders(tdir, model.config), { cacheDir });
  cleanup.push(async () => {
    await attributor.dispose();
    await model.dispose();
  });
  const graph = await attributor.attribute(IDS);
  const ckpt = openCheckpoint(path.join(dir, 'model'));
  const W = new Map([...ckpt.tensors].map(([n, e]) => [n, readTensorF32(e)]));
  const ref = referenceDecoderForward(ckpt.config, W, IDS) as Map<string, Tensor32>;
  return { cfg: ckpt.config, W, ref, tc, input, activation, relu: layout === 'saelens', graph };
}

const neoxOf = (fx: Fx) => fx.cfg.architecture === 'gpt_neox';
const gemmaOf = (fx: Fx) => fx.cfg.architecture === 'gemma2';
/** A norm's gain as the model applies it: Gemma stores gain − 1. */
const gain = (fx: Fx, name: string) => {
  const w = fx.W.get(name)!;
  return gemmaOf(fx) ? w.map((x) => x + 1) : w;
};
const h = (fx: Fx, l: number, n: string) => fx.ref.get(`blocks.${l}.${n}`)!.data;

/** Frozen norm of one row: (x − mean?) / scale ⊙ gain + bias (gain and bias as stored in the checkpoint). */
function frozenNorm(fx: Fx, x: ArrayLike<number>, scale: number, gain: Float32Array, bias?: Float32Array): Float64Array {
  const D = fx.cfg.dModel;
  let mean = 0;
  if (neoxOf(fx)) for (let d = 0; d < D; d++) mean += x[d] / D;
  return Float64Array.from({ length: D }, (_, d) => ((x[d] - mean) / scale) * gain[d] + (bias ? bias[d] : 0));
}

/** Gemma-2's final soft-cap (identity elsewhere). */
const capped = (fx: Fx, z: number) => (fx.cfg.family?.finalSoftcap ? fx.cfg.family.finalSoftcap * Math.tanh(z / fx.cfg.family.finalSoftcap) : z);

/** The frozen replacement model: embeddings in, block l's MLP replaced by mlp_LPD[l]; returns resid_mid per layer and the final residual. */
function frozenForward(fx: Fx, emb: Float64Array, mlp: Float64Array[]) {
  const { cfg, W } = fx;
  const { dModel: D, nHeads: H, dHead: E } = cfg;
  const G = cfg.nKvHeads ?? H;
  const P = IDS.length;
  const resid = Float64Array.from(emb);
  const mids: Float64Array[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `layers.${l}.`;
    const s1 = h(fx, l, 'ln1.hook_scale');
    const A = h(fx, l, 'attn.hook_pattern');
    // value of head h at position k, dim e
    const value = (x1: Float64Array, head: number, e: number): number => {
      let s: number;
      let row: Float32Array;
      let r: number;
      if (neoxOf(fx)) {
        r = head * 3 * E + 2 * E + e;
        row = W.get(p + 'attention.query_key_value.weight')!;
        s = W.get(p + 'attention.query_key_value.bias')![r];
      } else {
        r = Math.floor(head / (H / G)) * E + e;
        row = W.get(p + 'self_attn.v_proj.weight')!;
        s = W.get(p + 'self_attn.v_proj.bias')?.[r] ?? 0;
      }
      for (let d = 0; d < D; d++) s += x1[d] * row[r * D + d];
      return s;
    };
    const x1s = Array.from({ length: P }, (_, q) =>
      frozenNorm(fx, resid.subarray(q * D, (q + 1) * D), s1[q], gain(fx, p + 'input_layernorm.weight'), W.get(p + 'input_layernorm.bias')),
    );
    const v = Array.from({ length: P }, (_, k) => Array.from({ length: H * E }, (_, i) => value(x1s[k], Math.floor(i / E), i % E)));
    const wo = W.get(p + (neoxOf(fx) ? 'attention.dense.weight' : 'self_attn.o_proj.weight'))!; // [D, H·E]
    const bo = W.get(p + (neoxOf(fx) ? 'attention.dense.bias' : 'self_attn.o_proj.bias'));
    for (let q = 0; q < P; q++) {
      const z = new Float64Array(H * E);
      for (let hh = 0; hh < H; hh++) for (let k = 0; k <= q; k++) for (let e = 0; e < E; e++) z[hh * E + e] += A[(hh * P + q) * P + k] * v[k][hh * E + e];
      // Gemma-2: the attention output goes through its own norm (frozen scale) before joining the residual.
      const post = gemmaOf(fx) ? { g: gain(fx, p + 'post_attention_layernorm.weight'), s: h(fx, l, 'ln1_post.hook_scale')[q] } : undefined;
      for (let d = 0; d < D; d++) {
        let s = bo ? bo[d] : 0;
        for (let i = 0; i < H * E; i++) s += z[i] * wo[d * H * E + i];
        resid[q * D + d] += post ? (s / post.s) * post.g[d] : s;
      }
    }
    mids.push(Float64Array.from(resid));
    for (let i = 0; i < P * D; i++) resid[i] += mlp[l][i];
  }
  return { mids, final: resid };
}

function targetValues(fx: Fx, g: AttributionGraph, r: ReturnType<typeof frozenForward>): Float64Array {
  const { cfg, W, tc } = fx;
  const D = cfg.dModel;
  const out = new Float64Array(g.N);
  for (let n = 0; n < g.nFeatures; n++) {
    const [l, p, f] = [g.featLayer[n], g.featPos[n], g.featIndex[n]];
    const x = r.mids[l].subarray(p * D, (p + 1) * D);
    const s2 = h(fx, l, 'ln2.hook_scale')[p];
    const ones = new Float32Array(D).fill(1);
    const ln = `layers.${l}.${gemmaOf(fx) ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.`;
    const input =
      fx.input === 'hook_resid_mid' ? Float64Array.from(x) : fx.input === 'ln2.hook_normalized' ? frozenNorm(fx, x, s2, ones) : frozenNorm(fx, x, s2, gain(fx, ln + 'weight'), W.get(ln + 'bias'));
    let s = tc[l].bEnc_F[f];
    for (let d = 0; d < D; d++) s += input[d] * tc[l].wEnc_DF[d * F + f];
    out[n] = s;
  }
  const logits = finalLogits(fx, r.final);
  const mean = logits.reduce((a, b) => a + b, 0) / cfg.vocabSize;
  g.logitIds.forEach((id, i) => (out[logitNode(g, i)] = logits[id] - mean));
  return out;
}

function finalLogits(fx: Fx, final: Float64Array): Float64Array {
  const { cfg, W } = fx;
  const D = cfg.dModel;
  const P = IDS.length;
  const sf = fx.ref.get('ln_final.hook_scale')!.data[P - 1];
  const xf = neoxOf(fx)
    ? frozenNorm(fx, final.subarray((P - 1) * D), sf, W.get('final_layer_norm.weight')!, W.get('final_layer_norm.bias'))
    : frozenNorm(fx, final.subarray((P - 1) * D), sf, gain(fx, 'norm.weight'));
  const U = W.get(neoxOf(fx) ? 'embed_out.weight' : 'lm_head.weight') ?? W.get('embed_tokens.weight')!;
  return Float64Array.from({ length: cfg.vocabSize }, (_, t) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += xf[d] * U[t * D + d];
    return s;
  });
}

/** Source vectors by node, and the per-layer MLP replacement (features + error + b_dec) and embeddings. */
function sources(fx: Fx, g: AttributionGraph) {
  const D = fx.cfg.dModel;
  const P = IDS.length;
  const vectors = new Map<number, { layer: number; pos: number; v: Float64Array }>();
  const mlp: Float64Array[] = [];
  for (let l = 0; l < fx.cfg.nLayers; l++) {
    const real = h(fx, l, 'hook_mlp_out');
    const m = Float64Array.from(real);
    for (let p = 0; p < P; p++) {
      const err = Float64Array.from({ length: D }, (_, d) => real[p * D + d] - fx.tc[l].bDec_D[d]);
      for (let n = 0; n < g.nFeatures; n++) {
        if (g.featLayer[n] !== l || g.featPos[n] !== p) continue;
        const v = Float64Array.from({ length: D }, (_, d) => g.featAct[n] * fx.tc[l].wDec_FD[g.featIndex[n] * D + d]);
        vectors.set(n, { layer: l, pos: p, v });
        for (let d = 0; d < D; d++) err[d] -= v[d];
      }
      vectors.set(errorNode(g, l, p), { layer: l, pos: p, v: err });
    }
    mlp.push(m);
  }
  const emb = Float64Array.from(fx.ref.get('hook_embed')!.data);
  for (let p = 0; p < P; p++) vectors.set(tokenNode(g, p), { layer: -1, pos: p, v: emb.slice(p * D, (p + 1) * D) });
  return { vectors, mlp, emb };
}

const CASES: [string, FamilyModelType, Partial<RandomFamilyShape>, WriteActivation, 'saelens' | 'circuit-tracer', TranscoderInput][] = [
  ['llama-gqa-mlp-hook-in', 'llama', { num_key_value_heads: 2 }, 'topk', 'circuit-tracer', 'mlp.hook_in'],
  ['qwen2-biases-resid-mid', 'qwen2', { num_key_value_heads: 2, tie_word_embeddings: false }, 'relu', 'saelens', 'hook_resid_mid'],
  ['qwen3-wide-heads-normalized', 'qwen3', { num_key_value_heads: 2, head_dim: 8 }, 'jumprelu', 'saelens', 'ln2.hook_normalized'],
  ['neox-sequential-mlp-hook-in', 'gpt_neox', { hidden_size: 32, use_parallel_residual: false, rotary_pct: 0.25 }, 'jumprelu', 'circuit-tracer', 'mlp.hook_in'],
  [
    'gemma2-post-norms-softcaps-gemma-scope-style',
    'gemma2',
    { num_key_value_heads: 2, head_dim: 8, query_pre_attn_scalar: 8, attn_logit_softcapping: 5, final_logit_softcapping: 3, sliding_window: 4 },
    'jumprelu',
    'saelens',
    'ln2.hook_normalized',
  ],
];

describe('attribution graphs on the rotary families vs an independent frozen replacement model', () => {
  for (const [name, type, shape, activation, layout, input] of CASES) {
    it(`${name}: completeness, every edge by perturbation, exact logits`, async () => {
      const fx = await fixture(name, type, shape, activation, layout, input);
      const g = fx.graph;
      assert.ok(g.nFeatures > 10, `enough features (${g.nFeatures})`);
      const { vectors, mlp, emb } = sources(fx, g);
      const targets = [...Array.from({ length: g.nFeatures }, (_, i) => i), ...g.logitIds.map((_, i) => logitNode(g, i))];
      const base = frozenForward(fx, emb, mlp);
      const P = IDS.length;
      const V = fx.cfg.vocabSize;
      const real = fx.ref.get('logits')!.data.subarray((P - 1) * V);
      const frozenLogits = finalLogits(fx, base.final);
      let worstLogit = 0;
      // The graph's logit targets are before the final soft-cap (Gemma-2); the model's logits are after it.
      for (let t = 0; t < V; t++) worstLogit = Math.max(worstLogit, Math.abs(capped(fx, frozenLogits[t]) - real[t]) / Math.max(1, Math.abs(real[t])));
      assert.ok(worstLogit <= TOL, `replacement logits vs real: ${worstLogit}`);
      const baseVals = targetValues(fx, g, base);
      let worstComplete = 0;
      for (const t of targets) {
        let sum = g.constant_N[t];
        for (let s = 0; s < g.N; s++) sum += g.adjacency_NN[t * g.N + s];
        worstComplete = Math.max(worstComplete, Math.abs(sum - g.actual_N[t]) / Math.max(1, Math.abs(g.actual_N[t])));
        worstComplete = Math.max(worstComplete, Math.abs(baseVals[t] - g.actual_N[t]) / Math.max(1, Math.abs(g.actual_N[t])));
      }
      assert.ok(worstComplete <= TOL, `completeness: ${worstComplete}`);
      let worstEdge = 0;
      let checked = 0;
      const D = fx.cfg.dModel;
      for (const [s, src] of vectors) {
        const emb2 = Float64Array.from(emb);
        const mlp2 = mlp.map((m) => Float64Array.from(m));
        const into = src.layer < 0 ? emb2 : mlp2[src.layer];
        for (let d = 0; d < D; d++) into[src.pos * D + d] -= src.v[d];
        const vals = targetValues(fx, g, frozenForward(fx, emb2, mlp2));
        for (const t of targets) {
          worstEdge = Math.max(worstEdge, Math.abs(g.adjacency_NN[t * g.N + s] - (baseVals[t] - vals[t])) / Math.max(1, Math.abs(baseVals[t])));
          checked++;
        }
      }
      assert.ok(worstEdge <= TOL, `edges vs perturbation: ${worstEdge} over ${checked} entries`);
      console.log(`  ${name}: ${g.nFeatures} features, N=${g.N}; logits ${worstLogit.toExponential(1)}, completeness ${worstComplete.toExponential(1)}, edges ${worstEdge.toExponential(1)} (${checked} entries)`);
    });
  }

  for (const [type, shape, why] of [
    ['gpt_neox', { hidden_size: 32, use_parallel_residual: true }, /in parallel \(use_parallel_residual\)/],
  ] as const) {
    it(`refuses ${type} (${why.source}) with the reason`, async () => {
      const dir = path.join(root, `refuse-${type}`);
      writeRandomFamily(path.join(dir, 'model'), type, { ...BASE, ...shape } as RandomFamilyShape, { seed: 3, tokenizerJson: gpt2TokenizerJSON() });
      const D = (shape as { hidden_size?: number } & Record<string, unknown>).hidden_size ?? BASE.hidden_size;
      writeSaeLensTranscoders(path.join(dir, 'tc'), randomTranscoderWeights(BASE.num_hidden_layers, D, F, { seed: 1 }), { activation: 'relu', k: 6, input: 'mlp.hook_in' });
      const model = await Model.load(path.join(dir, 'model'), { providers: ['cpu'], cacheDir });
      cleanup.push(() => model.dispose());
      assert.throws(() => new Attributor(model, loadTranscoders(path.join(dir, 'tc'), model.config), { cacheDir }), why);
    });
  }
});
