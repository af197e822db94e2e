/**
 * Hugging Face `config.json` → the engine's model configuration: GPT-2 here, the rotary families (Llama, Qwen2/3,
 * Gemma-2, GPT-NeoX/Pythia) in families.ts.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { ResidualError } from '../errors';
import { FAMILY_MODEL_TYPES, parseFamilyConfig } from './families';
import { isPlainObject } from './safetensors';

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

export const SUPPORTED_MODEL_TYPES = ['gpt2', 'llama', 'mistral', 'qwen2', 'qwen3', 'gemma2', 'gpt_neox'] as const;
export const SUPPORTED_ACTIVATIONS: readonly Gpt2Activation[] = ['gelu_new', 'gelu', 'relu', 'gelu_fast', 'gelu_pytorch_tanh'];

/**
 * Parses a GPT-2-family `config.json`. `path` is the file, or a folder holding `config.json`.
 * Refuses (rather than silently mis-computing) options our GPT-2 forward pass does not implement.
 */
export function parseConfig(path: string): ModelConfig {
  let file = nodePath.resolve(path);
  try {
    if (fs.statSync(file).isDirectory()) file = nodePath.join(file, 'config.json');
  } catch {
    // fall through: reported as missing below
  }
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') {
      throw new ResidualError(
        'config.json not found; a Hugging Face model folder needs its config.json next to the weights (download it from the model page)',
        file,
        'missing',
      );
    }
    throw new ResidualError(`cannot read: ${err.message}`, file);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ResidualError(`not valid JSON (${(e as Error).message}); re-download config.json`, file);
  }
  if (!isPlainObject(raw)) throw new ResidualError('not a JSON object; re-download config.json', file);

  const modelType = raw.model_type;
  if (modelType === undefined) {
    throw new ResidualError(
      `has no "model_type"; Residual supports model_type ${SUPPORTED_MODEL_TYPES.map((t) => `"${t}"`).join(', ')}`,
      file,
    );
  }
  if (modelType !== 'gpt2') {
    if (typeof modelType === 'string' && (FAMILY_MODEL_TYPES as readonly string[]).includes(modelType)) {
      const cfg = parseFamilyConfig(raw, modelType as (typeof FAMILY_MODEL_TYPES)[number], file);
      return { ...cfg, name: cfg.name || nodePath.basename(nodePath.dirname(file)) };
    }
    throw new ResidualError(
      `model_type ${JSON.stringify(modelType)} is not supported; Residual supports ${SUPPORTED_MODEL_TYPES.map((t) => `"${t}"`).join(', ')} (GPT-2, Llama, Mistral, Qwen2/Qwen3, Gemma-2, GPT-NeoX/Pythia)`,
      file,
      'unsupported',
    );
  }

  const size = (key: string, value: unknown = raw[key]): number => {
    if (value === undefined || value === null) throw new ResidualError(`"${key}" is missing`, file);
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      throw new ResidualError(`"${key}" must be a positive integer, got ${JSON.stringify(value)}`, file);
    }
    return value;
  };

  const nLayers = size('n_layer');
  const dModel = size('n_embd');
  const nHeads = size('n_head');
  const ctxKey = raw.n_positions !== undefined && raw.n_positions !== null ? 'n_positions' : 'n_ctx';
  const nCtx = size(ctxKey);
  const vocabSize = size('vocab_size');
  const dMlp = raw.n_inner === undefined || raw.n_inner === null ? 4 * dModel : size('n_inner');
  if (dModel % nHeads !== 0) {
    throw new ResidualError(`n_embd ${dModel} is not divisible by n_head ${nHeads}, so heads cannot split the model width`, file);
  }

  const lnEps = raw.layer_norm_epsilon ?? 1e-5;
  if (typeof lnEps !== 'number' || !Number.isFinite(lnEps) || lnEps <= 0) {
    throw new ResidualError(`"layer_norm_epsilon" must be a positive number, got ${JSON.stringify(lnEps)}`, file);
  }
  const act = raw.activation_function ?? 'gelu_new';
  if (typeof act !== 'string' || !(SUPPORTED_ACTIVATIONS as readonly string[]).includes(act)) {
    throw new ResidualError(
      `activation_function ${JSON.stringify(act)} is not supported; supported: ${SUPPORTED_ACTIVATIONS.join(', ')}`,
      file,
      'unsupported',
    );
  }

  // GPT-2 options that change the forward pass; refuse instead of computing something else.
  if (raw.scale_attn_weights === false) {
    throw new ResidualError('"scale_attn_weights": false (unscaled attention) is not supported', file, 'unsupported');
  }
  if (raw.scale_attn_by_inverse_layer_idx === true) {
    throw new ResidualError('"scale_attn_by_inverse_layer_idx": true is not supported', file, 'unsupported');
  }
  if (raw.add_cross_attention === true) {
    throw new ResidualError('"add_cross_attention": true (encoder-decoder GPT-2) is not supported', file, 'unsupported');
  }

  const nameOrPath = raw._name_or_path;
  const name =
    typeof nameOrPath === 'string' && nameOrPath.trim() !== '' ? nameOrPath : nodePath.basename(nodePath.dirname(file));

  return {
    architecture: 'gpt2',
    nLayers,
    dModel,
    nHeads,
    dHead: dModel / nHeads,
    dMlp,
    nCtx,
    vocabSize,
    lnEps,
    act: act as Gpt2Activation,
    name,
  };
}
