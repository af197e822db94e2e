/**
 * Hugging Face `config.json` → the engine's model configuration (config.ts): GPT-2 here, the rotary families (Llama,
 * Qwen2/3, Gemma-2, GPT-NeoX/Pythia) in families.ts.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { ResidualError } from '../errors';
import { checkInputFile } from '../files';
import type { Gpt2Activation, ModelConfig } from './config';
import { FAMILY_MODEL_TYPES, parseFamilyConfig } from './families';
import { isPlainObject } from './safetensors';

export const SUPPORTED_MODEL_TYPES = ['gpt2', 'llama', 'mistral', 'qwen2', 'qwen3', 'gemma2', 'gpt_neox'] as const;
export const SUPPORTED_ACTIVATIONS: readonly Gpt2Activation[] = ['gelu_new', 'gelu', 'relu', 'gelu_fast', 'gelu_pytorch_tanh'];

/**
 * Parses a `config.json` (GPT-2 here, the other families by parseFamilyConfig). `path` is the file, or a folder
 * holding `config.json`. Refuses (rather than silently mis-computing) options the forward pass does not implement.
 */
export function parseConfig(path: string): ModelConfig {
  let file = nodePath.resolve(path);
  try {
    if (fs.statSync(file).isDirectory()) file = nodePath.join(file, 'config.json');
  } catch {
    // fall through: reported as missing below
  }
  if (!lexists(file)) {
    throw new ResidualError(
      'config.json not found; a Hugging Face model folder needs its config.json next to the weights (download it from the model page)',
      file,
      'missing',
    );
  }
  // A FIFO would block the read forever, a folder fails it; a dangling symlink is named as one.
  checkInputFile(file, nodePath.basename(file));
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ResidualError(`cannot read: ${err.code === 'EACCES' ? 'permission denied' : err.message}`, file);
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

/** Whether anything (a file, a folder, a symlink even if it dangles) is at `p`. */
export function lexists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
