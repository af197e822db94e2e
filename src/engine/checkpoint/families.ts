/**
 * The rotary decoder families: Llama, Qwen2, Qwen3, Gemma-2 and GPT-NeoX/Pythia. Parses their Hugging Face
 * `config.json` into the engine's configuration and says which weights (canonical names, shapes) each one needs.
 * Options that change the forward pass and are not implemented are refused, never ignored.
 */
import { ResidualError } from '../errors';
import type { Activation, FamilyConfig, ModelConfig, RopeConfig } from './config';

export const FAMILY_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3', 'gemma2', 'gpt_neox'] as const;
export type FamilyModelType = (typeof FAMILY_MODEL_TYPES)[number];

const ACTIVATIONS: Record<string, Activation> = {
  silu: 'silu',
  swish: 'silu',
  gelu: 'gelu',
  gelu_new: 'gelu_new',
  gelu_fast: 'gelu_fast',
  gelu_pytorch_tanh: 'gelu_pytorch_tanh',
  relu: 'relu',
};

export function parseFamilyConfig(raw: Record<string, unknown>, type: FamilyModelType, file: string): ModelConfig {
  const has = (k: string) => raw[k] !== undefined && raw[k] !== null;
  const int = (key: string, fallback?: number): number => {
    const v = raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ResidualError(`"${key}" is missing`, file);
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new ResidualError(`"${key}" must be a positive integer, got ${JSON.stringify(v)}`, file);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ResidualError(`"${key}" must be a positive number, got ${JSON.stringify(v)}`, file);
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'boolean') throw new ResidualError(`"${key}" must be true or false, got ${JSON.stringify(v)}`, file);
    return v;
  };
  const refuse = (what: string) => {
    throw new ResidualError(`${what} is not supported for model_type "${type}"`, file, 'unsupported');
  };

  const neox = type === 'gpt_neox';
  const nLayers = int('num_hidden_layers');
  const dModel = int('hidden_size');
  const nHeads = int('num_attention_heads');
  const nKvHeads = neox ? nHeads : int('num_key_value_heads', nHeads);
  if (nHeads % nKvHeads !== 0) throw new ResidualError(`num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`, file);
  if (!has('head_dim') && dModel % nHeads !== 0) throw new ResidualError(`hidden_size ${dModel} is not divisible by num_attention_heads ${nHeads} and there is no head_dim`, file);
  const dHead = int('head_dim', dModel / nHeads);
  if (neox && dHead * nHeads !== dModel) throw new ResidualError(`GPT-NeoX needs head_dim × num_attention_heads = hidden_size`, file);
  const dMlp = int('intermediate_size', neox ? 4 * dModel : undefined);
  const nCtx = int('max_position_embeddings');
  const vocabSize = int('vocab_size');
  const lnEps = neox ? num('layer_norm_eps', 1e-5) : num('rms_norm_eps', 1e-6);

  const actName = raw.hidden_activation ?? raw.hidden_act ?? (type === 'gemma2' ? 'gelu_pytorch_tanh' : neox ? 'gelu' : 'silu');
  const act = typeof actName === 'string' ? ACTIVATIONS[actName] : undefined;
  if (!act) throw new ResidualError(`hidden_act ${JSON.stringify(actName)} is not supported; supported: ${Object.keys(ACTIVATIONS).join(', ')}`, file, 'unsupported');

  // Rotary embeddings.
  // GPT-NeoX rotates the first quarter of each head unless rotary_pct (newer: partial_rotary_factor) says otherwise.
  const partial = neox ? num(has('rotary_pct') ? 'rotary_pct' : 'partial_rotary_factor', 0.25) : num('partial_rotary_factor', 1);
  const ropeDims = Math.floor(dHead * Math.min(1, partial));
  if (ropeDims < 2 || ropeDims % 2 !== 0) throw new ResidualError(`rotary dims ${ropeDims} (head_dim ${dHead} × ${partial}) must be even and at least 2`, file, 'unsupported');
  const theta = num(neox && has('rotary_emb_base') ? 'rotary_emb_base' : 'rope_theta', 10000);
  const rope: RopeConfig = { dims: ropeDims, theta, scaling: parseRopeScaling(raw.rope_scaling, file, nCtx) };

  if (type === 'qwen2' && raw.use_sliding_window === true) refuse('"use_sliding_window": true (Qwen2 sliding-window layers)');
  if ((type === 'llama' || type === 'qwen3') && raw.use_sliding_window === true) refuse('"use_sliding_window": true');

  let window = new Array<number>(nLayers).fill(0);
  // Mistral: Llama's layout; a sliding window (when set) on every layer.
  if (type === 'mistral' && has('sliding_window')) window.fill(int('sliding_window'));
  if (type === 'gemma2') {
    const sw = int('sliding_window', 4096);
    const types = raw.layer_types;
    if (Array.isArray(types)) {
      if (types.length !== nLayers) throw new ResidualError(`"layer_types" has ${types.length} entries for ${nLayers} layers`, file);
      window = types.map((t) => {
        if (t === 'sliding_attention') return sw;
        if (t === 'full_attention') return 0;
        throw new ResidualError(`"layer_types" entry ${JSON.stringify(t)} is not sliding_attention or full_attention`, file, 'unsupported');
      });
    } else {
      // Gemma-2 as released: even layers slide, odd layers attend globally.
      window = window.map((_, l) => (l % 2 === 0 ? sw : 0));
    }
  }

  const attnBias = type === 'qwen2' ? true : neox ? bool('attention_bias', true) : bool('attention_bias', false);
  const family: FamilyConfig = {
    norm: neox ? 'layernorm' : 'rmsnorm',
    normOffset: type === 'gemma2' ? 1 : 0,
    rope,
    gatedMlp: !neox,
    parallel: neox ? bool('use_parallel_residual', true) : false,
    bias: {
      qkv: attnBias,
      o: neox ? attnBias : type === 'qwen2' ? false : attnBias,
      mlp: neox ? true : bool('mlp_bias', false),
      norm: neox,
    },
    attnScale: type === 'gemma2' ? 1 / Math.sqrt(num('query_pre_attn_scalar', dHead)) : 1 / Math.sqrt(dHead),
    qkNorm: type === 'qwen3',
    postNorms: type === 'gemma2',
    embedScale: type === 'gemma2' ? Math.sqrt(dModel) : 1,
    attnSoftcap: type === 'gemma2' && has('attn_logit_softcapping') ? num('attn_logit_softcapping', 50) : undefined,
    finalSoftcap: type === 'gemma2' && has('final_logit_softcapping') ? num('final_logit_softcapping', 30) : undefined,
    window,
    tiedEmbeddings: bool('tie_word_embeddings', type === 'gemma2'),
  };

  const nameOrPath = raw._name_or_path;
  return {
    architecture: type,
    nLayers,
    dModel,
    nHeads,
    nKvHeads,
    dHead,
    dMlp,
    nCtx,
    vocabSize,
    lnEps,
    act,
    name: typeof nameOrPath === 'string' && nameOrPath.trim() !== '' ? nameOrPath : '',
    family,
  };
}

function parseRopeScaling(v: unknown, file: string, nCtx: number): RopeConfig['scaling'] {
  if (v === undefined || v === null) return { type: 'none' };
  if (typeof v !== 'object' || Array.isArray(v)) throw new ResidualError(`"rope_scaling" must be an object or null`, file);
  const r = v as Record<string, unknown>;
  const type = r.rope_type ?? r.type;
  const factor = typeof r.factor === 'number' && r.factor > 0 ? r.factor : undefined;
  if (type === 'default') return { type: 'none' };
  if (type === 'linear') {
    if (!factor) throw new ResidualError('"rope_scaling" (linear) needs a positive "factor"', file);
    return { type: 'linear', factor };
  }
  if (type === 'llama3') {
    const n = (k: string) => {
      const x = r[k];
      if (typeof x !== 'number' || !(x > 0)) throw new ResidualError(`"rope_scaling" (llama3) needs a positive "${k}"`, file);
      return x;
    };
    if (!factor) throw new ResidualError('"rope_scaling" (llama3) needs a positive "factor"', file);
    return {
      type: 'llama3',
      factor,
      lowFreqFactor: n('low_freq_factor'),
      highFreqFactor: n('high_freq_factor'),
      originalMaxPositions: typeof r.original_max_position_embeddings === 'number' ? r.original_max_position_embeddings : nCtx,
    };
  }
  throw new ResidualError(
    `"rope_scaling" type ${JSON.stringify(type)} is not supported (supported: default, linear, llama3); long-context variants (yarn, dynamic, longrope) change the positions' rotation`,
    file,
    'unsupported',
  );
}

/** Inverse frequencies of the rotary pairs (length dims/2), with the configured scaling applied, in float64. */
export function ropeInvFreq(rope: RopeConfig): Float64Array {
  const half = rope.dims / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(rope.theta, (2 * i) / rope.dims);
  const s = rope.scaling;
  if (s.type === 'linear') for (let i = 0; i < half; i++) inv[i] /= s.factor;
  if (s.type === 'llama3') {
    // Llama 3.1's rule: long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositions / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen) inv[i] /= s.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}

/** Canonical weight names of one block (prefix `layers.{l}.`), by role. Absent roles are undefined. */
export interface BlockWeightNames {
  ln1: string;
  ln1Bias?: string;
  ln2: string;
  ln2Bias?: string;
  /** Gemma-2's norms applied to the attention and MLP outputs. */
  postAttnNorm?: string;
  postMlpNorm?: string;
  /** GPT-NeoX's fused [3·D, D] projection, rows grouped per head as [H, 3, E]. */
  qkv?: string;
  qkvBias?: string;
  q?: string;
  k?: string;
  v?: string;
  qBias?: string;
  kBias?: string;
  vBias?: string;
  qNorm?: string;
  kNorm?: string;
  o: string;
  oBias?: string;
  /** Gated MLP: gate and up [M, D]; plain MLP: up is the [M, D] input projection. down [D, M]. */
  gate?: string;
  up: string;
  upBias?: string;
  gateBias?: string;
  down: string;
  downBias?: string;
}

export interface FamilyWeightNames {
  embed: string;
  unembed: string;
  finalNorm: string;
  finalNormBias?: string;
  block(l: number): BlockWeightNames;
}

export function familyWeightNames(cfg: ModelConfig): FamilyWeightNames {
  const f = cfg.family!;
  if (cfg.architecture === 'gpt_neox') {
    return {
      embed: 'embed_in.weight',
      unembed: 'embed_out.weight',
      finalNorm: 'final_layer_norm.weight',
      finalNormBias: 'final_layer_norm.bias',
      block: (l) => {
        const p = `layers.${l}.`;
        return {
          ln1: p + 'input_layernorm.weight',
          ln1Bias: p + 'input_layernorm.bias',
          ln2: p + 'post_attention_layernorm.weight',
          ln2Bias: p + 'post_attention_layernorm.bias',
          qkv: p + 'attention.query_key_value.weight',
          qkvBias: f.bias.qkv ? p + 'attention.query_key_value.bias' : undefined,
          o: p + 'attention.dense.weight',
          oBias: f.bias.o ? p + 'attention.dense.bias' : undefined,
          up: p + 'mlp.dense_h_to_4h.weight',
          upBias: p + 'mlp.dense_h_to_4h.bias',
          down: p + 'mlp.dense_4h_to_h.weight',
          downBias: p + 'mlp.dense_4h_to_h.bias',
        };
      },
    };
  }
  const gemma = cfg.architecture === 'gemma2';
  return {
    embed: 'embed_tokens.weight',
    unembed: 'lm_head.weight',
    finalNorm: 'norm.weight',
    block: (l) => {
      const p = `layers.${l}.`;
      const a = p + 'self_attn.';
      const m = p + 'mlp.';
      const b = (name: string, on: boolean) => (on ? name : undefined);
      return {
        ln1: p + 'input_layernorm.weight',
        // Llama's "post_attention_layernorm" is the MLP's input norm; Gemma-2 renamed that one pre_feedforward.
        ln2: p + (gemma ? 'pre_feedforward_layernorm.weight' : 'post_attention_layernorm.weight'),
        postAttnNorm: gemma ? p + 'post_attention_layernorm.weight' : undefined,
        postMlpNorm: gemma ? p + 'post_feedforward_layernorm.weight' : undefined,
        q: a + 'q_proj.weight',
        k: a + 'k_proj.weight',
        v: a + 'v_proj.weight',
        qBias: b(a + 'q_proj.bias', f.bias.qkv),
        kBias: b(a + 'k_proj.bias', f.bias.qkv),
        vBias: b(a + 'v_proj.bias', f.bias.qkv),
        qNorm: b(a + 'q_norm.weight', f.qkNorm),
        kNorm: b(a + 'k_norm.weight', f.qkNorm),
        o: a + 'o_proj.weight',
        oBias: b(a + 'o_proj.bias', f.bias.o),
        gate: m + 'gate_proj.weight',
        up: m + 'up_proj.weight',
        down: m + 'down_proj.weight',
        gateBias: b(m + 'gate_proj.bias', f.bias.mlp),
        upBias: b(m + 'up_proj.bias', f.bias.mlp),
        downBias: b(m + 'down_proj.bias', f.bias.mlp),
      };
    },
  };
}

/** Every weight the config implies (canonical name → shape), the unembedding excluded (it may be tied). */
export function expectedFamilyShapes(cfg: ModelConfig): Map<string, number[]> {
  const n = familyWeightNames(cfg);
  const { dModel: D, dHead: E, nHeads: H, dMlp: M, vocabSize: V } = cfg;
  const G = cfg.nKvHeads ?? H;
  const m = new Map<string, number[]>();
  const set = (name: string | undefined, shape: number[]) => {
    if (name) m.set(name, shape);
  };
  set(n.embed, [V, D]);
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = n.block(l);
    set(b.ln1, [D]);
    set(b.ln1Bias, [D]);
    set(b.ln2, [D]);
    set(b.ln2Bias, [D]);
    set(b.postAttnNorm, [D]);
    set(b.postMlpNorm, [D]);
    set(b.qkv, [3 * H * E, D]);
    set(b.qkvBias, [3 * H * E]);
    set(b.q, [H * E, D]);
    set(b.k, [G * E, D]);
    set(b.v, [G * E, D]);
    set(b.qBias, [H * E]);
    set(b.kBias, [G * E]);
    set(b.vBias, [G * E]);
    set(b.qNorm, [E]);
    set(b.kNorm, [E]);
    set(b.o, [D, H * E]);
    set(b.oBias, [D]);
    set(b.gate, [M, D]);
    set(b.gateBias, [M]);
    set(b.up, [M, D]);
    set(b.upBias, [M]);
    set(b.down, [D, M]);
    set(b.downBias, [D]);
  }
  set(n.finalNorm, [D]);
  set(n.finalNormBias, [D]);
  return m;
}

/** Stored-name prefixes transformers adds (stripped to get canonical names). */
export function familyPrefixes(cfg: ModelConfig): string[] {
  return cfg.architecture === 'gpt_neox' ? ['gpt_neox.'] : ['model.'];
}

/** Non-weight buffers some checkpoints carry (causal masks, cached rotary frequencies); ignored. */
export const FAMILY_IGNORED_BUFFER = /^layers\.\d+\.(attention\.(bias|masked_bias|rotary_emb\.inv_freq)|self_attn\.rotary_emb\.inv_freq)$/;
