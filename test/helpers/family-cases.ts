/**
 * The tiny random checkpoints of the rotary families that the oracle tests run (test/oracle/families.test.ts, and the
 * GPU lane's test/gpu/oracle.test.ts on the same shapes): one shared base shape, each case's changes to it.
 */
import type { FamilyModelType } from '../../src/engine/checkpoint/families';
import type { RandomFamilyShape, RandomGpt2Options } from '../../src/engine/checkpoint/random';

export const FAMILY_BASE: RandomFamilyShape = {
  num_hidden_layers: 2,
  hidden_size: 32,
  num_attention_heads: 4,
  intermediate_size: 40,
  max_position_embeddings: 64,
  vocab_size: 50257,
};

export interface FamilyCase {
  name: string;
  type: FamilyModelType;
  shape: Partial<RandomFamilyShape>;
  opts?: Partial<RandomGpt2Options>;
}

export const FAMILY_CASES: FamilyCase[] = [
  {
    name: 'llama, grouped-query attention, llama3 rope scaling (all three frequency bands), tied',
    type: 'llama',
    shape: {
      num_key_value_heads: 2,
      tie_word_embeddings: true,
      rope_theta: 10000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    },
  },
  {
    name: 'llama, head_dim ≠ hidden/heads, attention and MLP biases, linear rope scaling, untied, BF16, 3 shards',
    type: 'llama',
    shape: { num_key_value_heads: 4, head_dim: 12, attention_bias: true, mlp_bias: true, rope_scaling: { type: 'linear', factor: 2 }, tie_word_embeddings: false },
    opts: { dtype: 'BF16', shards: 3 },
  },
  { name: 'qwen2, q/k/v biases, GQA, untied', type: 'qwen2', shape: { num_key_value_heads: 1, tie_word_embeddings: false, rope_theta: 1000000 } },
  { name: 'qwen3, QK-norm, head_dim 16, tied', type: 'qwen3', shape: { num_key_value_heads: 2, head_dim: 16, tie_word_embeddings: true } },
  {
    name: 'gemma2, sandwich norms, embedding scale, attention and final soft-caps, sliding window 3 on even layers',
    type: 'gemma2',
    shape: {
      num_hidden_layers: 3,
      num_key_value_heads: 2,
      head_dim: 16,
      query_pre_attn_scalar: 24,
      attn_logit_softcapping: 1.5,
      final_logit_softcapping: 3,
      sliding_window: 3,
      hidden_activation: 'gelu_pytorch_tanh',
    },
  },
  { name: 'gpt_neox (Pythia), parallel residual, rotary_pct 0.25, untied', type: 'gpt_neox', shape: { rotary_pct: 0.25, use_parallel_residual: true, hidden_act: 'gelu' } },
  { name: 'gpt_neox, sequential residual, rotary_pct 0.5, F16', type: 'gpt_neox', shape: { rotary_pct: 0.5, use_parallel_residual: false }, opts: { dtype: 'F16' } },
  { name: 'mistral, GQA, sliding window 4 on every layer, untied', type: 'mistral', shape: { num_key_value_heads: 2, sliding_window: 4, tie_word_embeddings: false, rope_theta: 1000000 } },
];
