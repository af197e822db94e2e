/**
 * A loaded model: checkpoint + tokenizer + ONNX Runtime sessions (the forward graph with every hook point, and a
 * small logit-lens graph). `run` is the one call everything else builds on; runs are queued so two requests never
 * race on one session.
 */
import * as path from 'node:path';
import type * as ortTypes from 'onnxruntime-common';
import { openCheckpoint, type Checkpoint } from './checkpoint/load';
import { kvHeads, type ModelConfig } from './checkpoint/config';
import { assertDims, numel, type Tensor32 } from './dims';
import { errorMessage, ResidualError, throwIfCancelled, type CancelToken } from './errors';
import { HOOK_DIMS, parseHookName, suggestHooks, type HookName } from './hooks';
import { buildDecoderGraph } from './onnx/decoder';
import { readRows, readTensorF32, type TensorEntry } from './checkpoint/safetensors';
import { buildGpt2Graph } from './onnx/gpt2';
import { estimateMemory, memoryAdvice, type MemoryAdviceHints } from './memory';
import { halfPrecisionCopy } from './checkpoint/half-copy';
import { defaultCacheDir, HALF_KIND } from './cache';
import { buildLensGraph } from './onnx/lens';
import { EMBEDDINGS_INPUT, projectInputName, STEER_POINTS, steerInputName, type SteerPoint, type WeightPrecision } from './onnx/ops';
import { createSession, DEFAULT_PROVIDERS, ort, type ProviderAttempt, type SessionOptions } from './runtime/session';
import { firstGpuProvider } from './runtime/providerProbe';
import type { AdapterInfo, ModelInfo } from './results';
import { Tokenizer } from './tokenizer';

export type { ModelInfo };

/**
 * A steering input at one hook point: `add_XD` is [D] (all positions) or [P,D] (per position). With `project`, the
 * rows are unit directions instead (zero rows: positions left alone) and the residual becomes
 * x − max(x·û − value, floor) · û (onnx/ops.ts projectInputName): ablate, set or cap the component along û.
 */
export interface SteerAdd {
  layer: number;
  point: SteerPoint;
  add: Float32Array;
  project?: { value: number; floor: number };
}

/** Keys and values of earlier positions, per block: [1,H,S,E] each. */
export interface KvCache {
  length: number;
  keys: Tensor32[];
  values: Tensor32[];
}

/** The prompt the float16 deviation is measured on (precision 'auto'): ordinary prose, numbers, a name. */
export const FLOAT16_PROBE_TEXT = 'The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein published four papers that';
/** Above this many bytes of float32 weights the deviation is not measured: the float32 graph would sit beside the float16 one. */
const FLOAT16_CHECK_MAX_BYTES = 8e9;

export interface ModelLoadOptions extends SessionOptions {
  /**
   * 'float16' keeps weights in half precision (half the memory; matrix products in float16). 'auto' (the default):
   * float16 when the provider that will run is webgpu on an adapter with shader-f16, float32 otherwise.
   */
  precision?: WeightPrecision | 'auto';
  /**
   * Estimate the memory needed from the checkpoint's header (memory.ts) and refuse, with code 'memory', when it
   * will not fit in the memory the CPU provider would use; the host then offers to load anyway, the CLI names
   * --skip-memory-check. On unless `false` (the explicit override).
   */
  memoryCheck?: boolean;
  /** Bytes of memory to assume available for memoryCheck (default: what the system reports). */
  availableMemory?: number;
  /** How the refusal names half precision and the override (default: the extension's setting and button). */
  memoryAdvice?: MemoryAdviceHints;
}

export interface RunRequest {
  ids: number[];
  hooks: readonly HookName[];
  steer?: readonly SteerAdd[];
  /** Continue after these cached positions (the new tokens get positions past.length …). */
  past?: KvCache;
  /** Also return the cache extended by this call's positions. */
  wantCache?: boolean;
  /**
   * Positions (of this call's tokens) whose logits to compute, in order; default all. `logits` is then [1, K, V].
   * The unembedding is the forward pass's largest product, so callers needing only the last position say so.
   */
  logitPositions?: readonly number[];
  cancel?: CancelToken;
}

export interface RunResult {
  activations: Map<HookName, Tensor32>;
  cache?: KvCache;
  ms: number;
}

export interface LensRequest {
  /** Residual vectors [N,D] to read out through ln_final and the unembedding. */
  resid_ND: Float32Array;
  /** Token id per row whose probability and rank to report. */
  targets: number[];
  k: number;
}

export interface LensResult {
  topProbs_NK: Float32Array;
  topIds_NK: Int32Array;
  targetProb_N: Float32Array;
  targetRank_N: Int32Array;
}

export class Model {
  private queue: Promise<unknown> = Promise.resolve();
  private disposed = false;
  private lensSession: Promise<ortTypes.InferenceSession> | undefined;

  private constructor(
    readonly checkpoint: Checkpoint,
    readonly tokenizer: Tokenizer,
    private readonly session: ortTypes.InferenceSession,
    /** Creates the logit-lens session on first use: a graph that never uses the lens (attribution) does not hold a second copy of the unembedding. */
    private readonly createLensSession: () => Promise<ortTypes.InferenceSession>,
    readonly provider: string,
    readonly attempts: ProviderAttempt[],
    readonly loadMs: number,
    /** Every hook point this model's graph offers (families differ: no hook_pos_embed for rotary models, …). */
    readonly hooks: ReadonlySet<HookName>,
    /** The weights' precision inside ONNX Runtime. */
    readonly precision: WeightPrecision,
    /** Where the token embedding rows are read (the float16 copy in half precision, like every other weight). */
    private readonly embedEntry: TensorEntry,
  ) {}

  static async load(dir: string, opts: ModelLoadOptions = {}): Promise<Model> {
    if ((opts.precision ?? 'auto') !== 'auto') return Model.loadAt(dir, { ...opts, precision: opts.precision as WeightPrecision });
    // A wrong folder is said at once, before any GPU check (which may wait on a driver).
    openCheckpoint(dir);
    // 'auto': half precision where a GPU computes it natively (WebGPU's shader-f16): half the memory and bandwidth.
    const gpu = await firstGpuProvider(opts.providers, DEFAULT_PROVIDERS, opts.log);
    if (gpu?.provider === 'webgpu' && gpu.adapter?.shaderF16) {
      const reason = 'auto: the WebGPU adapter has shader-f16';
      try {
        const half = await Model.loadAt(dir, { ...opts, precision: 'float16', providers: ['webgpu'] }, gpu.skipped, reason);
        try {
          half.float16Deviation = await half.measureFloat16Deviation(opts);
          if (half.float16Deviation === null) half.float16Note = 'not measured: the float32 graph would not fit beside the float16 one';
        } catch (e) {
          half.float16Deviation = null;
          half.float16Note = `not measured: ${errorMessage(e)}`;
          opts.log?.(`float16 deviation ${half.float16Note}`);
        }
        return half;
      } catch (e) {
        if (e instanceof ResidualError && (e.code === 'memory' || e.code === 'cancelled')) throw e;
        opts.log?.(`float16 on webgpu failed (${errorMessage(e)}); loading in float32`);
      }
    }
    return Model.loadAt(dir, { ...opts, precision: 'float32' });
  }

  /**
   * The largest |logit(float16) − logit(float32)| over a short probe prompt, the float32 graph run on the same
   * provider for it and released; null when that graph would be too large to hold beside this one.
   */
  private async measureFloat16Deviation(opts: ModelLoadOptions): Promise<number | null> {
    const f32Bytes = [...this.checkpoint.tensors.values()].reduce((n, t) => n + numel(t.shape) * 4, 0);
    if (f32Bytes > FLOAT16_CHECK_MAX_BYTES) return null;
    const ids = this.tokenizer.encode(FLOAT16_PROBE_TEXT).ids.slice(0, Math.min(32, this.config.nCtx));
    const full = await Model.loadAt(this.checkpoint.dir, { ...opts, precision: 'float32', providers: [this.provider], memoryCheck: false });
    try {
      const [a, b] = [await this.run({ ids, hooks: ['logits'] }), await full.run({ ids, hooks: ['logits'] })];
      const x = a.activations.get('logits')!.data;
      const y = b.activations.get('logits')!.data;
      let worst = 0;
      for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
      opts.log?.(`float16 vs float32 on ${this.provider}: max |Δlogit| ${worst.toPrecision(3)} over ${ids.length} probe tokens`);
      return worst;
    } finally {
      await full.dispose();
    }
  }

  /** Set when float16 was chosen automatically (Model.load with precision 'auto'). */
  private float16Deviation?: number | null;
  /** Why the deviation is null (too large to measure, or the measurement failed). */
  private float16Note?: string;
  private precisionReason?: string;

  private static async loadAt(dir: string, opts: ModelLoadOptions & { precision: WeightPrecision }, skippedBefore: ProviderAttempt[] = [], precisionReason?: string): Promise<Model> {
    const t0 = performance.now();
    const ckpt = openCheckpoint(dir);
    const precision = opts.precision;
    // Before any weight is read: refuse a model that will not fit, with the numbers and what would fit.
    if (opts.memoryCheck !== false) {
      const est = estimateMemory(ckpt, { available: opts.availableMemory });
      if (!est.fitsCpu) throw new ResidualError(memoryAdvice(est, opts.memoryAdvice), ckpt.dir, 'memory');
    }
    const tokenizer = await Tokenizer.fromFile(ckpt.tokenizerPath);
    if (tokenizer.vocabSize > ckpt.config.vocabSize) {
      throw new ResidualError(
        `tokenizer has ${tokenizer.vocabSize} tokens but config.json says vocab_size ${ckpt.config.vocabSize}`,
        ckpt.tokenizerPath,
      );
    }
    // Each external file gets a plain, unique location name (shards keep their own names).
    const locate = (file: string) => path.basename(file);
    // The float16 copy lives in the cache (<root>/half/) and stays marked in use while this model reads it.
    const cacheDir = opts.cacheDir ?? defaultCacheDir();
    const half = precision === 'float16' ? halfPrecisionCopy(ckpt.tensors, path.join(cacheDir, HALF_KIND), opts.log) : undefined;
    const tensors = half?.tensors ?? ckpt.tensors;
    const graphOpts = { precision };
    const main = ckpt.config.family
      ? buildDecoderGraph(ckpt.config, tensors, ckpt.unembedName, locate, graphOpts)
      : buildGpt2Graph(ckpt.config, tensors, ckpt.unembedName, locate, graphOpts);
    const ident = `${ckpt.dir}|${ckpt.config.name}|${precision}`;
    const created = await createSession(main.bytes, main.externalFiles, `${ckpt.config.architecture}|${ident}`, { ...opts, cacheDir }).catch((e: unknown) => {
      half?.release();
      throw e;
    });
    // The lens graph runs on the provider that won; no second round of fallbacks.
    const createLensSession = async () => {
      const lens = buildLensGraph(ckpt.config, tensors, ckpt.unembedName, locate, graphOpts);
      return (await createSession(lens.bytes, lens.externalFiles, `lens|${ident}`, { ...opts, cacheDir, providers: [created.provider] })).session;
    };
    // hook_embed is the graph's input (the rows run() reads), not one of its outputs.
    const hooks = new Set<HookName>(['hook_embed', ...main.outputs.keys()]);
    const embedEntry = tensors.get(ckpt.embedName)!;
    const attempts = [...skippedBefore, ...created.attempts];
    const model = new Model(ckpt, tokenizer, created.session, createLensSession, created.provider, attempts, performance.now() - t0, hooks, precision, embedEntry);
    model.releaseCache = half?.release ?? (() => undefined);
    model.precisionReason = precisionReason;
    return model;
  }

  /** The WebGPU adapter the model runs on (webgpu only). */
  get adapter(): AdapterInfo | undefined {
    return this.attempts.find((a) => a.ok)?.adapter;
  }

  /** Ends this model's use of its cache entries (the float16 copy) on dispose. */
  private releaseCache: () => void = () => undefined;

  get config(): ModelConfig {
    return this.checkpoint.config;
  }

  get info(): ModelInfo {
    const c = this.config;
    return {
      name: c.name,
      architecture: c.architecture,
      n_layers: c.nLayers,
      d_model: c.dModel,
      n_heads: c.nHeads,
      vocab_size: c.vocabSize,
      n_ctx: c.nCtx,
      dtype: this.checkpoint.dtype,
      dir: this.checkpoint.dir,
      n_kv_heads: kvHeads(c),
      precision: this.precision,
      ...(this.precisionReason
        ? { precision_reason: this.precisionReason, float16_max_abs_dlogit: this.float16Deviation ?? null, ...(this.float16Note ? { float16_deviation_note: this.float16Note } : {}) }
        : {}),
    };
  }

  /** Runs the forward pass for one sequence and returns the requested hook activations (batch axis of size 1). */
  run(req: RunRequest): Promise<RunResult> {
    const job = this.queue.then(() => this.runNow(req));
    this.queue = job.catch(() => undefined);
    return job;
  }

  private async runNow(req: RunRequest): Promise<RunResult> {
    if (this.disposed) throw new ResidualError('the model was unloaded', this.checkpoint.dir);
    throwIfCancelled(req.cancel);
    const c = this.config;
    const P = req.ids.length;
    if (P === 0) throw new ResidualError('nothing to analyse: the text has no tokens', 'input');
    const offset = req.past?.length ?? 0;
    if (offset + P > c.nCtx) {
      throw new ResidualError(`${offset + P} positions exceed the model's context of ${c.nCtx}`, 'input');
    }
    for (const id of req.ids) {
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new ResidualError(`token id ${id} is outside the vocabulary (0..${c.vocabSize - 1})`, 'input');
    }
    for (const h of req.hooks) {
      const parsed = parseHookName(h);
      if (!parsed || (parsed.layer !== null && parsed.layer >= c.nLayers)) {
        throw new ResidualError(`unknown hook point; did you mean ${suggestHooks(h, c.nLayers).join(', ')}?`, h);
      }
      if (!this.hooks.has(h)) throw new ResidualError(`${c.architecture} models have no such hook point (${this.hookAbsentReason(h)})`, h);
    }
    const T = ort().Tensor;
    // The token embeddings: the rows of these ids, read from the checkpoint file (Gemma: scaled by √d_model).
    let embeds_PD: Float32Array;
    try {
      embeds_PD = readRows(this.embedEntry, req.ids);
    } catch (e) {
      if (e instanceof ResidualError && e.code !== 'missing') throw e;
      // The rows are read from the checkpoint on every run: say so when its file went away after loading.
      throw new ResidualError(`cannot read the token embeddings (${(e as Error).message}); the weights file was moved or deleted after the model was loaded — select the model again`, this.embedEntry.file, 'missing');
    }
    const embedScale = Math.fround(c.family?.embedScale ?? 1); // a float32 product, as the model computes it
    if (embedScale !== 1) for (let i = 0; i < embeds_PD.length; i++) embeds_PD[i] = Math.fround(embeds_PD[i] * embedScale);
    const feeds: Record<string, ortTypes.Tensor> = {
      [EMBEDDINGS_INPUT]: new T('float32', embeds_PD, [1, P, c.dModel]),
    };
    const empty = new T('float32', new Float32Array(0), [1, kvHeads(c), 0, c.dHead]);
    for (let l = 0; l < c.nLayers; l++) {
      const k = req.past?.keys[l];
      const v = req.past?.values[l];
      feeds[`past_key.${l}`] = k ? new T('float32', k.data, k.dims) : empty;
      feeds[`past_value.${l}`] = v ? new T('float32', v.data, v.dims) : empty;
    }
    for (const s of req.steer ?? []) {
      if (!Number.isInteger(s.layer) || s.layer < 0 || s.layer >= c.nLayers) {
        throw new ResidualError(`layer ${s.layer} does not exist (the model has layers 0..${c.nLayers - 1})`, 'steering');
      }
      const perPos = s.add.length === P * c.dModel;
      if (!perPos && s.add.length !== c.dModel) {
        throw new ResidualError(`vector has ${s.add.length} values; the model's d_model is ${c.dModel} (or ${P}×${c.dModel} per position)`, 'steering');
      }
      if (!s.add.every(Number.isFinite)) throw new ResidualError('vector contains NaN or Inf', 'steering');
      if (s.project) {
        if (!Number.isFinite(s.project.value)) throw new ResidualError(`the operator's value must be a finite number, got ${s.project.value}`, 'steering');
        const name = projectInputName(s.layer, s.point);
        if (feeds[name]) throw new ResidualError(`two projections at blocks.${s.layer}.${s.point}; one operator per point`, 'steering');
        const rows = s.add.length / c.dModel;
        const packed = new Float32Array(rows * (c.dModel + 2));
        for (let r = 0; r < rows; r++) {
          const row = s.add.subarray(r * c.dModel, (r + 1) * c.dModel);
          packed.set(row, r * (c.dModel + 2));
          // A zero row leaves its position alone whatever value and floor say; they are zeroed too for clarity.
          const on = row.some((x) => x !== 0);
          packed[r * (c.dModel + 2) + c.dModel] = on ? s.project.value : 0;
          packed[r * (c.dModel + 2) + c.dModel + 1] = on ? s.project.floor : 0;
        }
        feeds[name] = new T('float32', packed, [1, rows, c.dModel + 2]);
        continue;
      }
      const name = steerInputName(s.layer, s.point);
      const prev = feeds[name];
      const data = Float32Array.from(s.add);
      if (prev) {
        // Two additions at one point sum; broadcast a [D] one over the other's positions.
        const pd = prev.data as Float32Array;
        const sum = pd.length >= data.length ? Float32Array.from(pd) : Float32Array.from(data);
        const other = pd.length >= data.length ? data : pd;
        for (let i = 0; i < sum.length; i++) sum[i] += other[i % other.length];
        feeds[name] = new T('float32', sum, [1, sum.length / c.dModel, c.dModel]);
      } else {
        feeds[name] = new T('float32', data, [1, perPos ? P : 1, c.dModel]);
      }
    }
    const logitPos = req.logitPositions ?? Array.from({ length: P }, (_, i) => i);
    if (logitPos.length === 0 || logitPos.some((p) => !Number.isInteger(p) || p < 0 || p >= P)) {
      throw new ResidualError(`logit positions must be 0..${P - 1}, got [${logitPos.slice(0, 8).join(', ')}]`, 'logits');
    }
    feeds.logit_positions = new T('int64', BigInt64Array.from(logitPos, (i) => BigInt(i)), [logitPos.length]);
    // Every steering input is required by the graph; unused ones get zeros (adding +0 leaves values bit-identical).
    const zeros = new T('float32', new Float32Array(c.dModel), [1, 1, c.dModel]);
    const noProjection = new T('float32', new Float32Array(c.dModel + 2), [1, 1, c.dModel + 2]);
    for (let l = 0; l < c.nLayers; l++) {
      for (const point of STEER_POINTS) {
        feeds[steerInputName(l, point)] ??= zeros;
        feeds[projectInputName(l, point)] ??= noProjection;
      }
    }
    const t0 = performance.now();
    const fetches: string[] = [...new Set(req.hooks)].filter((h) => h !== 'hook_embed');
    if (req.wantCache) for (let l = 0; l < c.nLayers; l++) fetches.push(`present_key.${l}`, `present_value.${l}`);
    const out = await this.session.run(feeds, fetches);
    const ms = performance.now() - t0;
    throwIfCancelled(req.cancel);
    const activations = new Map<HookName, Tensor32>();
    for (const name of new Set(req.hooks)) {
      if (name === 'hook_embed') {
        activations.set(name, { dims: [1, P, c.dModel], data: embeds_PD.slice() });
        continue;
      }
      const t = out[name];
      const parsed = parseHookName(name)!;
      const tensor: Tensor32 = { dims: t.dims.map(Number), data: t.data as Float32Array };
      assertDims(tensor, HOOK_DIMS[parsed.hook], { ...dimSizes(c, name === 'logits' ? logitPos.length : P), S: offset + P }, name);
      activations.set(name, tensor);
    }
    let cache: KvCache | undefined;
    if (req.wantCache) {
      const get = (n: string): Tensor32 => ({ dims: out[n].dims.map(Number), data: out[n].data as Float32Array });
      cache = {
        length: offset + P,
        keys: Array.from({ length: c.nLayers }, (_, l) => get(`present_key.${l}`)),
        values: Array.from({ length: c.nLayers }, (_, l) => get(`present_value.${l}`)),
      };
    }
    return { activations, cache, ms };
  }

  private hookAbsentReason(h: string): string {
    if (h === 'hook_pos_embed') return 'positions are rotations of queries and keys, see attn.hook_rot_q/k';
    if (/ln[12]_post/.test(h)) return 'only Gemma-2 has norms after attention and the MLP';
    if (/hook_rot_/.test(h)) return 'GPT-2 has learned position embeddings, see hook_pos_embed';
    if (/hook_pre_linear/.test(h)) return 'only gated MLPs have a linear branch';
    return 'not in this model';
  }

  /** Logit lens: each row through ln_final (its own statistics) and the unembedding; top-k and a target's prob/rank. */
  lens(req: LensRequest): Promise<LensResult> {
    const job = this.queue.then(async () => {
      const D = this.config.dModel;
      const N = req.resid_ND.length / D;
      if (!Number.isInteger(N) || N !== req.targets.length) throw new ResidualError(`lens input must be [N,${D}] with N targets`, 'lens');
      const T = ort().Tensor;
      this.lensSession ??= this.createLensSession();
      // A session that failed to start is not kept: the next lens call tries again.
      const session = await this.lensSession.catch((e: unknown) => {
        this.lensSession = undefined;
        throw e;
      });
      const out = await session.run({
        resid: new T('float32', req.resid_ND, [N, D]),
        target: new T('int64', BigInt64Array.from(req.targets, (i) => BigInt(i)), [N]),
        k: new T('int64', BigInt64Array.of(BigInt(Math.min(req.k, this.config.vocabSize))), [1]),
      });
      return {
        topProbs_NK: out.top_probs.data as Float32Array,
        topIds_NK: Int32Array.from(out.top_ids.data as BigInt64Array, Number),
        targetProb_N: out.target_prob.data as Float32Array,
        targetRank_N: Int32Array.from(out.target_rank.data as BigInt64Array, Number),
      };
    });
    this.queue = job.catch(() => undefined);
    return job;
  }

  /**
   * Why a run of `ids` gave NaN or Inf (`what`: what went non-finite, e.g. "logits"), as an error to throw: the first
   * point of the forward pass where the residual stream stops being finite — read from the norms' scales, one number
   * per position, so this costs one unsteered forward and no large fetch — and the weight tensor that made it so when
   * the checkpoint holds a NaN/Inf there (the token's embedding row, that block's weights, or the final norm and the
   * unembedding row of the token that went non-finite). Called only after a run went non-finite, so a healthy model
   * pays nothing.
   */
  async nonFiniteError(ids: number[], what: string, cancel?: CancelToken): Promise<ResidualError> {
    const c = this.config;
    const L = c.nLayers;
    const order = [...this.hooks].filter((h) => h === 'hook_embed' || h === 'hook_pos_embed' || h.endsWith('.hook_scale'));
    let run: RunResult;
    try {
      run = await this.run({ ids, hooks: [...order, 'logits'], cancel });
    } catch (e) {
      if (e instanceof ResidualError) return e;
      throw e;
    }
    const badRow = (t: Tensor32): number => {
      const width = numel(t.dims.slice(2));
      const i = t.data.findIndex((x) => !Number.isFinite(x));
      return i < 0 ? -1 : Math.floor(i / width);
    };
    const tokenAt = (p: number) => `position ${p}, token ${JSON.stringify(this.tokenizer.tokenDisplay(ids[p]))}`;
    const weightsHint = this.precision === 'float16' ? '; in float16 precision, values beyond ±65504 overflow — load the model in float32' : '';
    const stored = (name: string) => this.checkpoint.tensors.get(name);
    const scan = (names: string[]): string | undefined => {
      for (const n of names) {
        const e = stored(n);
        const bad = e ? firstNonFiniteValue(e) : undefined;
        if (bad) return `tensor "${e!.name}" holds ${bad.value} (element ${bad.index} of [${e!.shape.join(', ')}], ${path.basename(e!.file)}): the checkpoint is damaged — download it again`;
      }
      return undefined;
    };
    const blockTensors = (l: number) => [...this.checkpoint.tensors.keys()].filter((n) => new RegExp(`(^|\\.)(h|layers|layer|blocks)\\.${l}\\.`).test(n));
    const make = (where: string, culprit: string | undefined) =>
      new ResidualError(
        `the model produced NaN or Inf ${what}: the values first stop being finite ${where}; ${culprit ?? `no weight read there holds NaN or Inf, so the values overflowed float32 (weights or inputs far too large)${weightsHint}`}`,
        this.checkpoint.dir,
        'numeric',
      );
    for (const hook of order) {
      const t = run.activations.get(hook)!;
      const p = badRow(t);
      if (p < 0) continue;
      if (hook === 'hook_embed') {
        const row = stored(this.checkpoint.embedName) ? readRows(stored(this.checkpoint.embedName)!, [ids[p]]) : undefined;
        const bad = row?.findIndex((x) => !Number.isFinite(x)) ?? -1;
        const e = stored(this.checkpoint.embedName)!;
        return make(
          `at hook_embed (${tokenAt(p)})`,
          bad >= 0 ? `row ${ids[p]} of tensor "${e.name}" holds ${Number.isNaN(row![bad]) ? 'NaN' : 'Inf'} (${path.basename(e.file)}): the checkpoint is damaged — download it again` : undefined,
        );
      }
      if (hook === 'hook_pos_embed') return make(`at hook_pos_embed (${tokenAt(p)})`, scan([...this.checkpoint.tensors.keys()].filter((n) => /(^|\.)wpe\./.test(n))));
      const m = /^blocks\.(\d+)\.(\w+)\.hook_scale$/.exec(hook);
      if (m) {
        const l = Number(m[1]);
        const norm = m[2];
        // ln1 reads the block's input (the previous block's output); every later norm of a block reads what this
        // block has computed so far.
        const from = norm === 'ln1' ? l - 1 : l;
        const where =
          norm === 'ln1' ? `at blocks.${l}.hook_resid_pre (${tokenAt(p)}), the output of ${l === 0 ? 'the embeddings' : `block ${l - 1}`}` : `inside block ${l}, at the input of its ${norm} norm (${hook}, ${tokenAt(p)})`;
        return make(where, from >= 0 ? scan(blockTensors(from)) : scan([this.checkpoint.embedName]));
      }
      if (hook === 'ln_final.hook_scale') return make(`at blocks.${L - 1}.hook_resid_post (${tokenAt(p)}), the output of the last block`, scan(blockTensors(L - 1)));
    }
    // The residual stream stays finite: the final norm or the unembedding row of the first non-finite logit.
    const logits = run.activations.get('logits')!.data;
    const V = c.vocabSize;
    const i = logits.findIndex((x) => !Number.isFinite(x));
    if (i < 0) return make('nowhere on a rerun (the NaN/Inf came from what was added to the run, not from the model)', undefined);
    const id = i % V;
    const p = Math.floor(i / V);
    // The final norm: whatever belongs to no block and is neither an embedding nor the unembedding.
    const { embedName, unembedName } = this.checkpoint;
    const finals = [...this.checkpoint.tensors.keys()].filter((n) => n !== unembedName && n !== embedName && !/(^|\.)((h|layers|layer|blocks)\.\d+|wpe)\./.test(n));
    let culprit = scan(finals);
    const u = stored(this.checkpoint.unembedName);
    if (!culprit && u) {
      const row = readRows(u, [id]);
      const bad = row.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) culprit = `row ${id} of tensor "${u.name}" (the unembedding) holds ${Number.isNaN(row[bad]) ? 'NaN' : 'Inf'} (${path.basename(u.file)}): the checkpoint is damaged — download it again`;
    }
    return make(`at the logits (${tokenAt(p)}, token id ${id}), after the final norm and the unembedding`, culprit);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.queue;
    try {
      await this.session.release();
      if (this.lensSession) await (await this.lensSession.catch(() => undefined))?.release();
    } finally {
      this.releaseCache();
    }
  }
}

export function dimSizes(c: ModelConfig, P: number) {
  return { B: 1, P, Q: P, S: P, D: c.dModel, H: c.nHeads, G: kvHeads(c), E: c.dHead, M: c.dMlp, V: c.vocabSize };
}

/**
 * The first NaN or ±Inf stored in a tensor, read a slice at a time (2-D tensors a block of rows at a time, so a large
 * matrix never sits in memory whole); undefined when every value is finite or the dtype is not a float.
 */
export function firstNonFiniteValue(e: TensorEntry): { index: number; value: 'NaN' | 'Inf' | '-Inf' } | undefined {
  if (e.dtype !== 'F32' && e.dtype !== 'F16' && e.dtype !== 'BF16') return undefined;
  const found = (data: Float32Array, offset: number) => {
    const i = data.findIndex((x) => !Number.isFinite(x));
    if (i < 0) return undefined;
    return { index: offset + i, value: Number.isNaN(data[i]) ? ('NaN' as const) : data[i] > 0 ? ('Inf' as const) : ('-Inf' as const) };
  };
  if (e.shape.length !== 2) return found(readTensorF32(e), 0);
  const [R, C] = e.shape;
  const step = Math.max(1, Math.floor((1 << 20) / Math.max(1, C)));
  for (let r = 0; r < R; r += step) {
    const rows = Array.from({ length: Math.min(step, R - r) }, (_, k) => r + k);
    const hit = found(readRows(e, rows), r * C);
    if (hit) return hit;
  }
  return undefined;
}

/** Row `p` of a [1,P,X] tensor, as a view. */
export function row(t: Tensor32, p: number): Float32Array {
  const width = numel(t.dims.slice(2));
  return t.data.subarray(p * width, (p + 1) * width);
}
