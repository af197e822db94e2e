/**
 * Deterministic random GPT-2 checkpoints in Hugging Face layout, for tests and benchmarks. The same seed and
 * config always give byte-identical files.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { ResidualError } from '../errors';
import type { Gpt2Activation } from './config';
import { expectedFamilyShapes, familyPrefixes, familyWeightNames, parseFamilyConfig, type FamilyModelType } from './families';
import type { SafeDtype } from './safetensors';
import { writeSafetensors, type TensorToWrite } from './write';

export interface RandomGpt2Shape {
  nLayers: number;
  dModel: number;
  nHeads: number;
  dMlp: number;
  nCtx: number;
  vocabSize: number;
  lnEps?: number;
  act?: Gpt2Activation;
}

export interface RandomGpt2Options {
  seed: number;
  /** Storage dtype, default F32. */
  dtype?: SafeDtype;
  /** Number of safetensors shards, default 1 (a single model.safetensors). */
  shards?: number;
  /** Written verbatim as tokenizer.json. */
  tokenizerJson: object;
  /** Standard deviation of weight matrices, default 0.02 (GPT-2's initializer range). */
  std?: number;
  /** Default true: no lm_head.weight, the unembedding is wte. */
  tiedUnembed?: boolean;
}

/** mulberry32: a tiny 32-bit seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples by Box–Muller over `uniform`. */
export function gaussian(uniform: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = 1 - uniform(); // (0, 1]: log stays finite
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

/**
 * Writes config.json, model.safetensors (or model-0000i-of-0000n.safetensors + model.safetensors.index.json) and
 * tokenizer.json into `dir` (created if needed). Tensors carry the `transformer.` prefix as transformers saves them.
 */
export function writeRandomGpt2(dir: string, cfg: RandomGpt2Shape, opts: RandomGpt2Options): void {
  const { nLayers, dModel: D, nHeads, dMlp: M, nCtx, vocabSize: V } = cfg;
  for (const [k, v] of Object.entries({ nLayers, dModel: D, nHeads, dMlp: M, nCtx, vocabSize: V })) {
    if (!Number.isSafeInteger(v) || v <= 0) throw new ResidualError(`${k} must be a positive integer, got ${v}`, dir);
  }
  if (D % nHeads !== 0) throw new ResidualError(`dModel ${D} is not divisible by nHeads ${nHeads}`, dir);
  const shards = opts.shards ?? 1;
  if (!Number.isSafeInteger(shards) || shards < 1) throw new ResidualError(`shards must be a positive integer, got ${shards}`, dir);
  const dtype = opts.dtype ?? 'F32';
  const std = opts.std ?? 0.02;
  const tied = opts.tiedUnembed ?? true;
  const normal = gaussian(mulberry32(opts.seed));

  const fill = (shape: number[], mean: number, sd: number): Float32Array => {
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
    for (let i = 0; i < a.length; i++) a[i] = mean + sd * normal();
    return a;
  };
  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], mean: number, sd: number): void => {
    tensors.push({ name, shape, data: fill(shape, mean, sd) });
  };
  const biasSd = std / 2;
  add('transformer.wte.weight', [V, D], 0, std);
  add('transformer.wpe.weight', [nCtx, D], 0, std / 2);
  for (let l = 0; l < nLayers; l++) {
    const p = `transformer.h.${l}.`;
    add(`${p}ln_1.weight`, [D], 1, 0.1);
    add(`${p}ln_1.bias`, [D], 0, biasSd);
    add(`${p}attn.c_attn.weight`, [D, 3 * D], 0, std);
    add(`${p}attn.c_attn.bias`, [3 * D], 0, biasSd);
    add(`${p}attn.c_proj.weight`, [D, D], 0, std / Math.sqrt(2 * nLayers));
    add(`${p}attn.c_proj.bias`, [D], 0, biasSd);
    add(`${p}ln_2.weight`, [D], 1, 0.1);
    add(`${p}ln_2.bias`, [D], 0, biasSd);
    add(`${p}mlp.c_fc.weight`, [D, M], 0, std);
    add(`${p}mlp.c_fc.bias`, [M], 0, biasSd);
    add(`${p}mlp.c_proj.weight`, [M, D], 0, std / Math.sqrt(2 * nLayers));
    add(`${p}mlp.c_proj.bias`, [D], 0, biasSd);
    // The non-weight buffer older transformers versions saved; loaders must ignore it.
    tensors.push({ name: `${p}attn.masked_bias`, shape: [], data: new Float32Array([-1e4]) });
  }
  add('transformer.ln_f.weight', [D], 1, 0.1);
  add('transformer.ln_f.bias', [D], 0, biasSd);
  if (!tied) add('lm_head.weight', [V, D], 0, std);

  fs.mkdirSync(dir, { recursive: true });
  const config = {
    _name_or_path: `random-gpt2-seed${opts.seed}`,
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    activation_function: cfg.act ?? 'gelu_new',
    layer_norm_epsilon: cfg.lnEps ?? 1e-5,
    n_layer: nLayers,
    n_embd: D,
    n_head: nHeads,
    n_inner: M,
    n_positions: nCtx,
    n_ctx: nCtx,
    vocab_size: V,
    tie_word_embeddings: tied,
    torch_dtype: dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16',
  };
  fs.writeFileSync(nodePath.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  fs.writeFileSync(nodePath.join(dir, 'tokenizer.json'), JSON.stringify(opts.tokenizerJson));

  writeShards(dir, tensors, dtype, shards);
}

/**
 * Writes `tensors` as model.safetensors, or as `shards` files model-0000i-of-0000n.safetensors plus
 * model.safetensors.index.json (split in order into groups of roughly equal size), as transformers saves them.
 */
export function writeShards(dir: string, tensors: TensorToWrite[], dtype: SafeDtype, shards: number): void {
  if (!Number.isSafeInteger(shards) || shards < 1) throw new ResidualError(`shards must be a positive integer, got ${shards}`, dir);
  const metadata = { format: 'pt' };
  if (shards === 1) {
    writeSafetensors(nodePath.join(dir, 'model.safetensors'), tensors, dtype, metadata);
    return;
  }
  // Split in order into `shards` groups of roughly equal size; every shard gets at least one tensor.
  if (shards > tensors.length) throw new ResidualError(`${shards} shards for only ${tensors.length} tensors`, dir);
  const total = tensors.reduce((s, t) => s + t.data.length, 0);
  const groups: TensorToWrite[][] = [];
  let acc = 0;
  tensors.forEach((t, i) => {
    const toOpen = shards - groups.length; // groups not yet started
    const left = tensors.length - i; // tensors not yet placed, this one included
    if (groups.length === 0 || (toOpen > 0 && (acc >= (total * groups.length) / shards || left === toOpen))) groups.push([]);
    groups[groups.length - 1].push(t);
    acc += t.data.length;
  });
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  const pad = (n: number): string => String(n).padStart(5, '0');
  groups.forEach((group, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(shards)}.safetensors`;
    writeSafetensors(nodePath.join(dir, file), group, dtype, metadata);
    for (const t of group) {
      weightMap[t.name] = file;
      totalSize += t.data.length * (dtype === 'F32' ? 4 : 2);
    }
  });
  fs.writeFileSync(
    nodePath.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n',
  );
}

/** Hugging Face config.json keys of a rotary-family model (written verbatim; the family's defaults fill the rest). */
export interface RandomFamilyShape {
  num_hidden_layers: number;
  hidden_size: number;
  num_attention_heads: number;
  intermediate_size: number;
  max_position_embeddings: number;
  vocab_size: number;
  [key: string]: unknown;
}

const ARCH_CLASS: Record<FamilyModelType, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  gemma2: 'Gemma2ForCausalLM',
  gpt_neox: 'GPTNeoXForCausalLM',
};

/**
 * A deterministic random checkpoint of a rotary family (Llama, Qwen2, Qwen3, Gemma-2, GPT-NeoX) in Hugging Face
 * layout: config.json from `shape`, every weight that config implies under transformers' stored names
 * (`model.…` / `gpt_neox.…`, the unembedding unless tied), tokenizer.json verbatim.
 */
export function writeRandomFamily(dir: string, modelType: FamilyModelType, shape: RandomFamilyShape, opts: RandomGpt2Options): void {
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    _name_or_path: `random-${modelType}-seed${opts.seed}`,
    architectures: [ARCH_CLASS[modelType]],
    model_type: modelType,
    torch_dtype: (opts.dtype ?? 'F32') === 'F32' ? 'float32' : opts.dtype === 'F16' ? 'float16' : 'bfloat16',
    ...shape,
  };
  const configPath = nodePath.join(dir, 'config.json');
  fs.writeFileSync(configPath, JSON.stringify(config, null, 2) + '\n');
  fs.writeFileSync(nodePath.join(dir, 'tokenizer.json'), JSON.stringify(opts.tokenizerJson));
  const cfg = parseFamilyConfig(config as Record<string, unknown>, modelType, configPath);
  const names = familyWeightNames(cfg);
  const std = opts.std ?? 0.02;
  const normal = gaussian(mulberry32(opts.seed));
  const prefix = familyPrefixes(cfg)[0];
  const gains = new Set<string>();
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = names.block(l);
    for (const n of [b.ln1, b.ln2, b.postAttnNorm, b.postMlpNorm, b.qNorm, b.kNorm]) if (n) gains.add(n);
  }
  gains.add(names.finalNorm);
  const tensors: TensorToWrite[] = [];
  for (const [name, shp] of expectedFamilyShapes(cfg)) {
    const data = new Float32Array(shp.reduce((a, b) => a * b, 1));
    // Norm gains around 1 (Gemma stores gain − 1, so around 0); biases small; matrices N(0, std).
    const isGain = gains.has(name);
    const mean = isGain ? 1 - cfg.family!.normOffset : 0;
    const sd = isGain ? 0.1 : name.endsWith('.bias') ? std / 2 : std;
    for (let i = 0; i < data.length; i++) data[i] = mean + sd * normal();
    tensors.push({ name: prefix + name, shape: shp, data });
  }
  if (!cfg.family!.tiedEmbeddings || opts.tiedUnembed === false) {
    const data = new Float32Array(cfg.vocabSize * cfg.dModel);
    for (let i = 0; i < data.length; i++) data[i] = std * normal();
    tensors.push({ name: names.unembed, shape: [cfg.vocabSize, cfg.dModel], data });
  }
  writeShards(dir, tensors, opts.dtype ?? 'F32', opts.shards ?? 1);
}
