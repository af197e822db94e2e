/**
 * config.json parsing and checkpoint checks of the rotary families: the fields each family implies, and clear
 * refusals for what the engine does not implement or checkpoints that do not match their config.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/engine/checkpoint/parse-config';
import { ropeInvFreq } from '../../src/engine/checkpoint/families';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily, type RandomFamilyShape } from '../../src/engine/checkpoint/random';
import { ResidualError } from '../../src/engine/errors';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'residual-fam-'));
const BASE: RandomFamilyShape = { num_hidden_layers: 2, hidden_size: 16, num_attention_heads: 4, intermediate_size: 24, max_position_embeddings: 32, vocab_size: 64 };
const TOKENIZER = { model: { type: 'BPE', vocab: {}, merges: [] } };

function writeConfig(obj: Record<string, unknown>): string {
  const f = path.join(tmp(), 'config.json');
  fs.writeFileSync(f, JSON.stringify(obj));
  return f;
}

function throwsResidual(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ResidualError, `not a ResidualError: ${String(e)}`);
    for (const p of parts) assert.ok(typeof p === 'string' ? e.message.includes(p) : p.test(e.message), `message should mention ${p}: ${e.message}`);
    return true;
  });
}

describe('family config.json', () => {
  test('Llama-3.2-1B-shaped config: GQA, head_dim, llama3 rope, tied', () => {
    const c = parseConfig(
      writeConfig({
        model_type: 'llama',
        hidden_size: 2048,
        num_hidden_layers: 16,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        intermediate_size: 8192,
        max_position_embeddings: 131072,
        vocab_size: 128256,
        rms_norm_eps: 1e-5,
        rope_theta: 500000,
        rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
        tie_word_embeddings: true,
        hidden_act: 'silu',
      }),
    );
    assert.equal(c.architecture, 'llama');
    assert.equal(c.nKvHeads, 8);
    assert.equal(c.dHead, 64);
    assert.equal(c.act, 'silu');
    assert.equal(c.family!.norm, 'rmsnorm');
    assert.equal(c.family!.rope.dims, 64);
    assert.deepEqual(c.family!.rope.scaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
    assert.equal(c.family!.tiedEmbeddings, true);
    // llama3 scaling: the highest frequency is kept, the lowest divided by the factor.
    const inv = ropeInvFreq(c.family!.rope);
    assert.equal(inv[0], 1);
    assert.ok(Math.abs(inv[31] - Math.pow(500000, -62 / 64) / 32) < 1e-15);
  });

  test('Gemma-2 defaults: even layers slide, scale from query_pre_attn_scalar, √d embedding, 1 + w norms', () => {
    const c = parseConfig(writeConfig({ ...BASE, model_type: 'gemma2', num_key_value_heads: 2, head_dim: 8, query_pre_attn_scalar: 16, sliding_window: 5, final_logit_softcapping: 30, attn_logit_softcapping: 50 }));
    assert.deepEqual(c.family!.window, [5, 0]);
    assert.equal(c.family!.attnScale, 0.25);
    assert.equal(c.family!.embedScale, 4);
    assert.equal(c.family!.normOffset, 1);
    assert.equal(c.family!.finalSoftcap, 30);
    assert.equal(c.act, 'gelu_pytorch_tanh');
    const withTypes = parseConfig(writeConfig({ ...BASE, model_type: 'gemma2', sliding_window: 5, layer_types: ['full_attention', 'sliding_attention'] }));
    assert.deepEqual(withTypes.family!.window, [0, 5]);
  });

  test('Mistral: a sliding window on every layer when set, none when null', () => {
    assert.deepEqual(parseConfig(writeConfig({ ...BASE, model_type: 'mistral', sliding_window: 4096 })).family!.window, [4096, 4096]);
    assert.deepEqual(parseConfig(writeConfig({ ...BASE, model_type: 'mistral', sliding_window: null })).family!.window, [0, 0]);
  });

  test('Pythia defaults: parallel residual, a quarter of each head rotates, LayerNorm with biases', () => {
    const c = parseConfig(writeConfig({ ...BASE, hidden_size: 32, model_type: 'gpt_neox', rotary_emb_base: 10000 }));
    assert.equal(c.family!.parallel, true);
    assert.equal(c.family!.rope.dims, 2);
    assert.equal(c.family!.norm, 'layernorm');
    assert.deepEqual(c.family!.bias, { qkv: true, o: true, mlp: true, norm: true });
    assert.equal(c.family!.tiedEmbeddings, false);
  });

  test('refusals name the option and what is supported', () => {
    throwsResidual(() => parseConfig(writeConfig({ ...BASE, model_type: 'llama', rope_scaling: { rope_type: 'yarn', factor: 4 } })), '"yarn"', 'linear, llama3');
    throwsResidual(() => parseConfig(writeConfig({ ...BASE, model_type: 'qwen2', use_sliding_window: true })), 'use_sliding_window');
    throwsResidual(() => parseConfig(writeConfig({ ...BASE, model_type: 'llama', num_key_value_heads: 3 })), 'not a multiple of num_key_value_heads 3');
    throwsResidual(() => parseConfig(writeConfig({ ...BASE, model_type: 'llama', hidden_act: 'xielu' })), '"xielu"', 'silu');
    throwsResidual(() => parseConfig(writeConfig({ ...BASE, model_type: 'gemma2', layer_types: ['full_attention'] })), '"layer_types" has 1 entries for 2 layers');
    throwsResidual(() => parseConfig(writeConfig({ ...BASE, model_type: 'llama', rope_scaling: { rope_type: 'llama3', factor: 8 } })), 'low_freq_factor');
  });
});

describe('family checkpoints', () => {
  test('untied config without its lm_head is refused; a tied one uses the embedding', () => {
    const dir = path.join(tmp(), 'm');
    writeRandomFamily(dir, 'llama', { ...BASE, tie_word_embeddings: true }, { seed: 1, tokenizerJson: TOKENIZER });
    const ck = openCheckpoint(dir);
    assert.equal(ck.tiedUnembed, true);
    assert.equal(ck.unembedName, 'embed_tokens.weight');
    const cfgPath = path.join(dir, 'config.json');
    fs.writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgPath, 'utf8')), tie_word_embeddings: false }));
    throwsResidual(() => openCheckpoint(dir), 'missing weight lm_head.weight', '"tie_word_embeddings": false');
  });

  test('a config that does not belong to the weights names the tensor and the config fields', () => {
    const dir = path.join(tmp(), 'm');
    writeRandomFamily(dir, 'qwen2', { ...BASE, num_key_value_heads: 2 }, { seed: 2, tokenizerJson: TOKENIZER });
    const cfgPath = path.join(dir, 'config.json');
    fs.writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgPath, 'utf8')), num_key_value_heads: 4 }));
    throwsResidual(() => openCheckpoint(dir), 'model.layers.0.self_attn.k_proj', 'num_key_value_heads 4', 'does not belong');
    fs.writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgPath, 'utf8')), num_key_value_heads: 2, num_hidden_layers: 1 }));
    throwsResidual(() => openCheckpoint(dir), 'belongs to layer 1', 'num_hidden_layers 1');
  });

  test('GPT-NeoX checkpoints keep embed_out unprefixed and ignore cached rotary buffers', () => {
    const dir = path.join(tmp(), 'm');
    writeRandomFamily(dir, 'gpt_neox', { ...BASE, hidden_size: 32 }, { seed: 3, tokenizerJson: TOKENIZER });
    const ck = openCheckpoint(dir);
    assert.equal(ck.unembedName, 'embed_out.weight');
    assert.ok(ck.tensors.has('layers.1.attention.query_key_value.weight'));
    assert.equal(ck.warnings.length, 0);
  });
});
