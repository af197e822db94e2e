/**
 * Deterministic random checkpoints in Hugging Face layout, for tests and benchmarks. The same seed, sampler and
 * config always give byte-identical files. Weights are drawn and written one chunk at a time (`StreamedTensor`), so
 * a model of billions of parameters is written in a few megabytes of memory; the draws follow the file order, so the
 * values do not depend on the chunk size.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { ResidualError } from '../errors';
import type { Gpt2Activation } from './config';
import { expectedFamilyShapes, familyPrefixes, familyWeightNames, parseFamilyConfig, type FamilyModelType } from './families';
import type { SafeDtype } from './safetensors';
import { heldTensor, writeStreamedSafetensors, type StreamedTensor } from './write';

export { heldTensor, writeStreamedSafetensors, type StreamedTensor };

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
  /** How normal samples are drawn (default 'box-muller'; 'table' is several times faster, see NormalStream). */
  sampler?: NormalSampler;
  /** Called after each chunk written: the tensor being written and the fraction of all values done. */
  progress?: (message: string, fraction: number) => void;
}

/** mulberry32: a tiny 32-bit seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    return mulberry32Output(a) / 4294967296;
  };
}

/** mulberry32's output (32 bits) for state `a`. */
function mulberry32Output(a: number): number {
  let t = a;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
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
 * - 'box-muller': exactly the values of `gaussian(mulberry32(seed))` (log, sqrt, sin and cos per pair; 30–40 ns a
 *   sample).
 * - 'table': one mulberry32 draw per sample read as a quantile: its top 12 bits pick one of 4096 cells of equal
 *   probability, its low 20 bits interpolate linearly between the cell's bounds (the two tail cells end, at ±3.99,
 *   where their mean is the tail's true mean). Mean, variance and kurtosis match the normal's to 1e-4; about 6×
 *   faster; other values than 'box-muller' for the same seed.
 */
export type NormalSampler = 'box-muller' | 'table';

const TABLE_CELLS = 4096;
let quantileTable: { at: Float64Array; slope: Float64Array } | undefined;

/** The normal quantiles at i / TABLE_CELLS, from Φ integrated by Simpson's rule on a fine grid (no erf in JS). */
function normalQuantiles(): { at: Float64Array; slope: Float64Array } {
  if (quantileTable) return quantileTable;
  const n = TABLE_CELLS;
  const pdf = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
  const at = new Float64Array(n + 1);
  const h = 1 / 4096;
  let x = 0;
  let mass = 0; // Φ(x) − 1/2
  for (let i = n / 2 + 1; i < n; i++) {
    const target = i / n - 0.5;
    for (;;) {
      const step = (h / 6) * (pdf(x) + 4 * pdf(x + h / 2) + pdf(x + h));
      if (mass + step >= target) {
        at[i] = x + (h * (target - mass)) / step;
        break;
      }
      mass += step;
      x += h;
    }
    at[n - i] = -at[i];
  }
  // Last cell: a ramp from its lower bound q to the end point that gives it the tail's mean E[X | X > q] = φ(q)·n.
  at[n] = 2 * pdf(at[n - 1]) * n - at[n - 1];
  at[0] = -at[n];
  const slope = new Float64Array(n);
  for (let i = 0; i < n; i++) slope[i] = at[i + 1] - at[i];
  quantileTable = { at, slope };
  return quantileTable;
}

/** A seeded stream of normal samples, drawn in bulk; consecutive `fill` calls continue the same stream. */
export class NormalStream {
  private state: number;
  private spare = 0;
  private hasSpare = false;

  constructor(
    seed: number,
    readonly sampler: NormalSampler = 'box-muller',
  ) {
    this.state = seed >>> 0;
  }

  /** Fills `out` with mean + sd · z, z standard normal. */
  fill(out: Float32Array, mean: number, sd: number): void {
    const n = out.length;
    let a = this.state;
    let i = 0;
    if (this.sampler === 'table') {
      const { at, slope } = normalQuantiles();
      for (; i < n; i++) {
        a = (a + 0x6d2b79f5) >>> 0;
        const bits = mulberry32Output(a);
        const cell = bits >>> 20;
        out[i] = mean + sd * (at[cell] + ((bits & 0xfffff) + 0.5) * (1 / 1048576) * slope[cell]);
      }
      this.state = a;
      return;
    }
    if (this.hasSpare && n > 0) {
      out[i++] = mean + sd * this.spare;
      this.hasSpare = false;
    }
    while (i < n) {
      a = (a + 0x6d2b79f5) >>> 0;
      const u = 1 - mulberry32Output(a) / 4294967296; // (0, 1]: log stays finite
      a = (a + 0x6d2b79f5) >>> 0;
      const v = mulberry32Output(a) / 4294967296;
      const r = Math.sqrt(-2 * Math.log(u));
      const angle = 2 * Math.PI * v;
      const second = r * Math.sin(angle);
      out[i++] = mean + sd * (r * Math.cos(angle));
      if (i < n) out[i++] = mean + sd * second;
      else {
        this.spare = second;
        this.hasSpare = true;
      }
    }
    this.state = a;
  }
}

/** Values per chunk of a streamed random tensor (4 MB of float32). */
export const STREAM_CHUNK = 1 << 20;

/** A tensor of mean + sd · N(0, 1) drawn from `normal` when written (absolute values when `abs`). */
export function randomTensor(name: string, shape: number[], normal: NormalStream, mean: number, sd: number, abs = false): StreamedTensor {
  const count = shape.reduce((a, b) => a * b, 1);
  return {
    name,
    shape,
    *chunks() {
      const buf = new Float32Array(Math.min(count, STREAM_CHUNK));
      for (let done = 0; done < count; ) {
        const part = buf.subarray(0, Math.min(buf.length, count - done));
        normal.fill(part, mean, sd);
        if (abs) for (let i = 0; i < part.length; i++) part[i] = Math.abs(part[i]);
        done += part.length;
        yield part;
      }
    },
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
  const normal = new NormalStream(opts.seed, opts.sampler);

  const tensors: StreamedTensor[] = [];
  const add = (name: string, shape: number[], mean: number, sd: number): void => {
    tensors.push(randomTensor(name, shape, normal, mean, sd));
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
    tensors.push(heldTensor({ name: `${p}attn.masked_bias`, shape: [], data: new Float32Array([-1e4]) }));
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

  writeStreamedShards(dir, tensors, dtype, shards, opts.progress);
}

/**
 * Writes streamed `tensors` as model.safetensors, or as `shards` files model-0000i-of-0000n.safetensors plus
 * model.safetensors.index.json (split in order into groups of roughly equal size, from the shapes alone), as
 * transformers saves them.
 */
export function writeStreamedShards(dir: string, tensors: StreamedTensor[], dtype: SafeDtype, shards: number, progress?: (message: string, fraction: number) => void): void {
  if (!Number.isSafeInteger(shards) || shards < 1) throw new ResidualError(`shards must be a positive integer, got ${shards}`, dir);
  const counts = tensors.map((t) => t.shape.reduce((a, b) => a * b, 1));
  const total = counts.reduce((s, c) => s + c, 0);
  let written = 0;
  const onValues = progress && ((name: string, n: number) => progress(name, (written += n) / Math.max(1, total)));
  const metadata = { format: 'pt' };
  if (shards === 1) {
    writeStreamedSafetensors(nodePath.join(dir, 'model.safetensors'), tensors, dtype, metadata, onValues);
    return;
  }
  // Split in order into `shards` groups of roughly equal size; every shard gets at least one tensor.
  if (shards > tensors.length) throw new ResidualError(`${shards} shards for only ${tensors.length} tensors`, dir);
  const groups: StreamedTensor[][] = [];
  let acc = 0;
  tensors.forEach((t, i) => {
    const toOpen = shards - groups.length; // groups not yet started
    const left = tensors.length - i; // tensors not yet placed, this one included
    if (groups.length === 0 || (toOpen > 0 && (acc >= (total * groups.length) / shards || left === toOpen))) groups.push([]);
    groups[groups.length - 1].push(t);
    acc += counts[i];
  });
  const weightMap: Record<string, string> = {};
  const pad = (n: number): string => String(n).padStart(5, '0');
  groups.forEach((group, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(shards)}.safetensors`;
    writeStreamedSafetensors(nodePath.join(dir, file), group, dtype, metadata, onValues);
    for (const t of group) weightMap[t.name] = file;
  });
  fs.writeFileSync(
    nodePath.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: { total_size: total * (dtype === 'F32' ? 4 : 2) }, weight_map: weightMap }, null, 2) + '\n',
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
  const normal = new NormalStream(opts.seed, opts.sampler);
  const prefix = familyPrefixes(cfg)[0];
  const gains = new Set<string>();
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = names.block(l);
    for (const n of [b.ln1, b.ln2, b.postAttnNorm, b.postMlpNorm, b.qNorm, b.kNorm]) if (n) gains.add(n);
  }
  gains.add(names.finalNorm);
  const tensors: StreamedTensor[] = [];
  for (const [name, shp] of expectedFamilyShapes(cfg)) {
    // Norm gains around 1 (Gemma stores gain − 1, so around 0); biases small; matrices N(0, std).
    const isGain = gains.has(name);
    const mean = isGain ? 1 - cfg.family!.normOffset : 0;
    const sd = isGain ? 0.1 : name.endsWith('.bias') ? std / 2 : std;
    tensors.push(randomTensor(prefix + name, shp, normal, mean, sd));
  }
  if (!cfg.family!.tiedEmbeddings || opts.tiedUnembed === false) {
    tensors.push(randomTensor(names.unembed, [cfg.vocabSize, cfg.dModel], normal, 0, std));
  }
  writeStreamedShards(dir, tensors, opts.dtype ?? 'F32', opts.shards ?? 1, opts.progress);
}
