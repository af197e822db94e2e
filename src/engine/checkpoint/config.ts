/**
 * The engine's model configuration: what every part of the engine reads about a model, for every supported family.
 * parse-config.ts makes one from a Hugging Face `config.json`.
 */

export type Gpt2Activation = 'gelu_new' | 'gelu' | 'relu' | 'gelu_fast' | 'gelu_pytorch_tanh';
export type Activation = Gpt2Activation | 'silu';
export type Architecture = 'gpt2' | 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gemma2' | 'gpt_neox';

/** Rotary position embeddings (rotate-half layout, as every supported family uses). */
export interface RopeConfig {
  /** Leading dims of each head that rotate (d_head, or less for partial rotary). Even. */
  dims: number;
  theta: number;
  scaling:
    | { type: 'none' }
    | { type: 'linear'; factor: number }
    | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };
}

/** What a non-GPT-2 decoder does differently; absent for GPT-2 (learned positions, LayerNorm, plain GELU MLP). */
export interface FamilyConfig {
  norm: 'layernorm' | 'rmsnorm';
  /** RMSNorm multiplies by (offset + w): 1 for Gemma, 0 elsewhere. */
  normOffset: number;
  rope: RopeConfig;
  /** act(gate(x)) ⊙ up(x), then down (Llama, Qwen, Gemma); else act(fc(x)) then proj (NeoX). */
  gatedMlp: boolean;
  /** Attention and MLP both read resid_pre (GPT-NeoX use_parallel_residual). */
  parallel: boolean;
  /** Biases present: q/k/v projections, output projection, MLP projections, norms. */
  bias: { qkv: boolean; o: boolean; mlp: boolean; norm: boolean };
  /** Multiplier of q·k (1/√d_head, or Gemma's query_pre_attn_scalar^-½). */
  attnScale: number;
  /** Qwen3: RMSNorm of each query and key head before the rotation. */
  qkNorm: boolean;
  /** Gemma-2: norms after attention and after the MLP, before they join the residual stream. */
  postNorms: boolean;
  /** Gemma: token embeddings are multiplied by √d_model. */
  embedScale: number;
  /** Gemma-2: cap·tanh(x/cap) on attention scores and on the final logits. */
  attnSoftcap?: number;
  finalSoftcap?: number;
  /** Per layer: the sliding attention window (keys within this many positions), or 0 for global attention. */
  window: number[];
  /** tie_word_embeddings as config.json states it (the loader still checks which tensor exists). */
  tiedEmbeddings: boolean;
}

/** The engine's model configuration, for every supported family (GPT-2's fields, plus `family` for the others). */
export interface ModelConfig {
  architecture: Architecture;
  nLayers: number;
  dModel: number;
  nHeads: number;
  dHead: number;
  dMlp: number;
  nCtx: number;
  vocabSize: number;
  lnEps: number;
  act: Activation;
  name: string;
  /** Key/value heads (grouped-query attention); absent means nHeads. */
  nKvHeads?: number;
  /** Absent for GPT-2. */
  family?: FamilyConfig;
}

export function kvHeads(c: ModelConfig): number {
  return c.nKvHeads ?? c.nHeads;
}
