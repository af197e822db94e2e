/**
 * Direct logit attribution (engine/dla.ts) against an independent computation from the definition: every part's
 * vector in the residual stream is formed explicitly from the float64 reference forward's hooks and the stored
 * weights (a head: Σ_e z[h, e] · W_O[h·E + e, :]; Gemma-2's norm after attention applied to it with its frozen scale),
 * the vectors are checked to add up to the final residual, and each is read through the final norm with its scale
 * frozen. GPT-2, Llama (grouped-query, biases), GPT-NeoX (parallel residual) and Gemma-2 (sandwich norms, soft-cap).
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import type { FamilyModelType } from '../../src/engine/checkpoint/families';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily, writeRandomGpt2, type RandomFamilyShape } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { directLogitAttribution, tokenIdOf } from '../../src/engine/dla';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { referenceDecoderForward } from '../../src/engine/reference/decoder';
import { referenceForward } from '../../src/engine/reference/gpt2';
import { FAMILY_BASE } from '../helpers/family-cases';
import { modelFolders } from '../helpers/model-folders';

const folders = modelFolders('residual-dla-');
const { root, cacheDir, loaded } = folders;

const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290];
const CASES: { name: string; type: FamilyModelType | 'gpt2'; shape?: Partial<RandomFamilyShape> }[] = [
  { name: 'GPT-2 (LayerNorm, Conv1D weights, attention bias)', type: 'gpt2' },
  { name: 'Llama, grouped-query attention, attention and MLP biases, untied', type: 'llama', shape: { num_key_value_heads: 2, attention_bias: true, mlp_bias: true, tie_word_embeddings: false } },
  { name: 'GPT-NeoX, parallel residual, LayerNorm with bias', type: 'gpt_neox', shape: { rotary_pct: 0.25, use_parallel_residual: true, hidden_act: 'gelu' } },
  {
    name: 'Gemma-2, norms after attention and MLP, embedding scale, final soft-cap',
    type: 'gemma2',
    shape: { num_hidden_layers: 3, num_key_value_heads: 2, head_dim: 16, query_pre_attn_scalar: 24, attn_logit_softcapping: 1.5, final_logit_softcapping: 3, sliding_window: 3 },
  },
];

async function fixture(c: (typeof CASES)[number]) {
  const dir = path.join(root, `${c.type}-${CASES.indexOf(c)}`);
  if (c.type === 'gpt2') writeRandomGpt2(dir, { nLayers: 2, dModel: 32, nHeads: 4, dMlp: 40, nCtx: 64, vocabSize: 50257 }, { seed: 11, tokenizerJson: folders.tokenizerJson, std: 0.3 });
  else writeRandomFamily(dir, c.type, { ...FAMILY_BASE, ...c.shape } as RandomFamilyShape, { seed: CASES.indexOf(c) * 7919 + 5, tokenizerJson: folders.tokenizerJson, std: 0.3 });
  const model = await Model.load(dir, { providers: ['cpu'], cacheDir, precision: 'float32' });
  loaded.push(model);
  const ckpt = openCheckpoint(dir);
  const W = new Map([...ckpt.tensors].map(([k, e]) => [k, readTensorF32(e)]));
  return { model, W, cfg: ckpt.config, unembed: ckpt.unembedName };
}

/**
 * The parts' values from the definition: explicit residual-stream vectors, checked to sum to the final residual, then
 * each read through the frozen final norm. Returns name → value (neurons included) and the pre-cap logit.
 */
function fromDefinition(cfg: ModelConfig, W: Map<string, Float32Array>, unembed: string, ids: number[], pos: number, target: number, contrast?: number) {
  const { dModel: D, nHeads: H, dHead: E, dMlp: M, nLayers: L } = cfg;
  const hooks = cfg.family ? referenceDecoderForward(cfg, W, ids) : referenceForward(cfg, W, ids);
  const at = (h: string) => hooks.get(h as HookName)!.data;
  const row = (h: string, width = D) => Array.from(at(h).subarray(pos * width, (pos + 1) * width));
  const gpt2 = !cfg.family;
  const neox = cfg.architecture === 'gpt_neox';
  const gemma = cfg.architecture === 'gemma2';
  const off = cfg.family?.normOffset ?? 0;
  const vectors = new Map<string, number[]>();
  vectors.set('embed', row('hook_embed'));
  if (gpt2) vectors.set('pos_embed', row('hook_pos_embed'));
  const neurons = new Map<string, number[]>();
  for (let l = 0; l < L; l++) {
    const p = gpt2 ? `h.${l}.` : `layers.${l}.`;
    const oName = gpt2 ? p + 'attn.c_proj.weight' : neox ? p + 'attention.dense.weight' : p + 'self_attn.o_proj.weight';
    const Wo = W.get(oName)!;
    // W_O[x, d]: GPT-2 stores [X, D] (Conv1D); the others a Linear [D, X].
    const wo = (x: number, d: number) => (gpt2 ? Wo[x * D + d] : Wo[d * H * E + x]);
    const z = row(`blocks.${l}.attn.hook_z`, H * E);
    const post = (v: number[], norm: string, scaleHook: string) => {
      if (!gemma) return v;
      const g = W.get(p + norm)!;
      const s = at(`blocks.${l}.${scaleHook}`)[pos];
      return v.map((x, d) => (x / s) * (off + g[d]));
    };
    for (let h = 0; h < H; h++) {
      const v = Array.from({ length: D }, (_, d) => {
        let s = 0;
        for (let e = 0; e < E; e++) s += z[h * E + e] * wo(h * E + e, d);
        return s;
      });
      vectors.set(`blocks.${l}.attn.head.${h}`, post(v, 'post_attention_layernorm.weight', 'ln1_post.hook_scale'));
    }
    const oBias = W.get(gpt2 ? p + 'attn.c_proj.bias' : neox ? p + 'attention.dense.bias' : p + 'self_attn.o_proj.bias');
    if (oBias) vectors.set(`blocks.${l}.attn.bias`, Array.from(oBias));
    vectors.set(`blocks.${l}.mlp`, row(`blocks.${l}.hook_mlp_out`));
    const Wd = W.get(gpt2 ? p + 'mlp.c_proj.weight' : neox ? p + 'mlp.dense_4h_to_h.weight' : p + 'mlp.down_proj.weight')!;
    const act = row(`blocks.${l}.mlp.hook_post`, M);
    for (let n = 0; n < M; n++) {
      const v = Array.from({ length: D }, (_, d) => act[n] * (gpt2 ? Wd[n * D + d] : Wd[d * M + n]));
      neurons.set(`blocks.${l}.mlp.neuron.${n}`, post(v, 'post_feedforward_layernorm.weight', 'ln2_post.hook_scale'));
    }
  }
  // The parts add up to the final residual.
  const final = row(`blocks.${L - 1}.hook_resid_post`);
  for (let d = 0; d < D; d++) {
    let s = 0;
    for (const v of vectors.values()) s += v[d];
    assert.ok(Math.abs(s - final[d]) <= 1e-4 * Math.max(1, Math.abs(final[d])), `the parts sum to resid_post at d=${d}: ${s} vs ${final[d]}`);
  }
  // Through the final norm, scale frozen.
  const U = W.get(unembed) ?? W.get(gpt2 ? 'wte.weight' : neox ? 'embed_in.weight' : 'embed_tokens.weight')!;
  const u = Array.from({ length: D }, (_, d) => U[target * D + d] - (contrast === undefined ? 0 : U[contrast * D + d]));
  const gain = W.get(gpt2 ? 'ln_f.weight' : neox ? 'final_layer_norm.weight' : 'norm.weight')!;
  const bias = W.get(gpt2 ? 'ln_f.bias' : neox ? 'final_layer_norm.bias' : '');
  const s = at('ln_final.hook_scale')[pos];
  const layerNorm = gpt2 || neox;
  const read = (v: number[]) => {
    const mean = layerNorm ? v.reduce((a, b) => a + b, 0) / D : 0;
    let r = 0;
    for (let d = 0; d < D; d++) r += ((v[d] - mean) / s) * (off + gain[d]) * u[d];
    return r;
  };
  const values = new Map<string, number>();
  for (const [k, v] of vectors) values.set(k, read(v));
  for (const [k, v] of neurons) values.set(k, read(v));
  let logit = read(final);
  if (bias) {
    let b = 0;
    for (let d = 0; d < D; d++) b += bias[d] * u[d];
    values.set('final_norm.bias', b);
    logit += b;
  }
  return { values, logit, logits: at('logits') };
}

describe('direct logit attribution against the definition', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const { model, W, cfg, unembed } = await fixture(c);
      const pos = IDS.length - 1;
      const r = await directLogitAttribution(model, IDS, { topNeurons: 8 });
      const ref = fromDefinition(cfg, W, unembed, IDS, pos, r.target.id);
      // The default target is the model's top prediction; the logit is the one before any soft-cap.
      const V = cfg.vocabSize;
      const refLogits = ref.logits.subarray(pos * V, (pos + 1) * V);
      assert.equal(r.target.id, refLogits.indexOf(Math.max(...refLogits)));
      assert.ok(Math.abs(r.logit - ref.logit) <= 1e-4, `logit ${r.logit} vs ${ref.logit}`);
      const cap = cfg.family?.finalSoftcap;
      if (cap) {
        assert.equal(r.softcap, cap);
        assert.ok(Math.abs(cap * Math.tanh(r.logit / cap) - refLogits[r.target.id]) <= 1e-4, 'capped, it is the model\'s logit');
      } else assert.ok(Math.abs(r.logit - refLogits[r.target.id]) <= 1e-4);
      // Every part the definition has, with its value; nothing else; the sum is the logit.
      const summed = r.components.filter((x) => !x.name.includes('.neuron.'));
      assert.deepEqual(new Set(summed.map((x) => x.name)), new Set([...ref.values.keys()].filter((k) => !k.includes('.neuron.'))));
      for (const x of r.components) assert.ok(Math.abs(x.value - ref.values.get(x.name)!) <= 1e-4 * Math.max(1, Math.abs(x.value)), `${x.name}: ${x.value} vs ${ref.values.get(x.name)}`);
      const sum = summed.reduce((a, x) => a + x.value, 0);
      assert.ok(Math.abs(sum + r.residual - r.logit) <= 1e-9 && Math.abs(r.residual) <= 1e-5 * Math.max(1, Math.abs(r.logit)), `residual ${r.residual}`);
      // The neurons listed are the largest by |value|, in order.
      const neurons = r.components.filter((x) => x.name.includes('.neuron.'));
      assert.equal(neurons.length, 8);
      const allNeurons = [...ref.values].filter(([k]) => k.includes('.neuron.')).map(([, v]) => Math.abs(v)).sort((a, b) => b - a);
      neurons.forEach((x, i) => assert.ok(Math.abs(Math.abs(x.value) - allNeurons[i]) <= 1e-4, `neuron ${i}`));
    });
  }

  it('a logit difference at an earlier position: target − contrast, each part the difference of its two values', async () => {
    const { model, W, cfg, unembed } = await fixture(CASES[1]);
    const target = 3290;
    const contrast = 16931;
    const r = await directLogitAttribution(model, IDS, { target, contrast, position: 4 });
    const ref = fromDefinition(cfg, W, unembed, IDS, 4, target, contrast);
    assert.equal(r.position, 4);
    assert.deepEqual([r.target.id, r.contrast?.id], [target, contrast]);
    assert.ok(Math.abs(r.logit - ref.logit) <= 1e-4);
    for (const x of r.components) assert.ok(Math.abs(x.value - ref.values.get(x.name)!) <= 1e-4 * Math.max(1, Math.abs(x.value)), x.name);
  });

  it('bad input: a token of several pieces, the contrast equal to the target, a position or id out of range', async () => {
    const { model } = await fixture(CASES[0]);
    assert.throws(() => tokenIdOf(model, ' Paris and London', 'target'), /" Paris and London" is \d+ tokens \(.*\), not one/);
    assert.throws(() => tokenIdOf(model, '', 'target'), /empty/);
    await assert.rejects(directLogitAttribution(model, IDS, { target: 5, contrast: 5 }), /the contrast token is the target itself/);
    await assert.rejects(directLogitAttribution(model, IDS, { position: IDS.length }), /position 9 does not exist \(the text has positions 0\.\.8\)/);
    await assert.rejects(directLogitAttribution(model, IDS, { target: 50257 }), /target token id 50257 is not in the vocabulary/);
  });
});
