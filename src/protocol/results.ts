/**
 * The engine's results that cross to the webviews, as plain data. No imports here (and so no Node types): the
 * webviews type-check these without seeing the engine, and the engine re-exports them (src/engine/results.ts).
 */

/** A token and the exact range of the analysed text it covers (JavaScript string indices). */
export interface TokenSpan {
  id: number;
  text: string;
  start: number;
  end: number;
  /** Added by the chat template (the text was wrapped as a user turn): covers none of the selection (start = end). */
  template?: boolean;
}

export interface ModelInfo {
  name: string;
  architecture: string;
  n_layers: number;
  d_model: number;
  n_heads: number;
  vocab_size: number;
  n_ctx: number;
  /** Storage dtype of the checkpoint's weights (F32, F16, BF16). */
  dtype: string;
  dir: string;
  /** Key/value heads (grouped-query attention); equal to n_heads otherwise. */
  n_kv_heads?: number;
  /** The weights' precision inside ONNX Runtime: float32, or float16 when loaded in half precision. */
  precision?: string;
  /** Why this precision, when Residual chose it (precision 'auto': float16 on a GPU adapter with shader-f16). */
  precision_reason?: string;
  /**
   * In float16 chosen automatically: the largest |logit(float16) − logit(float32)| over a short probe prompt, both run
   * on the same provider at load time (null when the float32 graph was too large to measure).
   */
  float16_max_abs_dlogit?: number | null;
  /** Why float16_max_abs_dlogit is null. */
  float16_deviation_note?: string;
}

export interface ProviderAttempt {
  provider: string;
  ok: boolean;
  /** Why it was not used (a failure, or why it was skipped without being tried). */
  reason?: string;
  /** Set when it was not tried: the GPU check ruled it out beforehand. */
  skipped?: boolean;
  /** What the user should know about the one in use (it runs on a CPU emulation of a GPU). */
  warning?: string;
  /** The WebGPU adapter, when the provider is webgpu. */
  adapter?: AdapterInfo;
  ms: number;
}

/** A WebGPU adapter as Dawn reports it (the fields of WebGPU's GPUAdapterInfo, plus what Residual reads from them). */
export interface AdapterInfo {
  vendor: string;
  architecture: string;
  description: string;
  /** 'cpu' for a software adapter; absent where the driver does not say. */
  type?: 'cpu';
  /** A CPU emulation of a GPU (lavapipe/llvmpipe, SwiftShader, WARP): slower than the cpu provider. */
  software: boolean;
  /** Whether the adapter offers WebGPU's shader-f16 feature (half-precision arithmetic in shaders). */
  shaderF16: boolean;
}

export interface TopToken {
  id: number;
  text: string;
  prob: number;
  logit?: number;
}

/** A residual-stream read-out point: resid_pre of every block, then resid_post of the last. */
export interface Readout {
  layer: number;
  hook: string;
}

export interface LayerStats {
  layer: number;
  /** ‖resid_post − resid_pre‖₂ / ‖resid_pre‖₂ per position. */
  update_norm: number[];
  /** cos(resid_pre, resid_post) per position. */
  drift_cos: number[];
  /** ‖hook_attn_out‖₂ and ‖hook_mlp_out‖₂ per position. */
  attn_norm: number[];
  mlp_norm: number[];
}

export interface Analysis {
  model: ModelInfo;
  provider: string;
  /** The WebGPU adapter it ran on (webgpu only). */
  adapter?: AdapterInfo;
  /** Every provider considered, in order, with why the ones before it were not used. */
  attempts?: ProviderAttempt[];
  text: string;
  tokens: TokenSpan[];
  /**
   * Set when the text had more tokens than allowed: only the last `kept` tokens, starting at character `firstChar`,
   * were analysed. `total` is the full token count when it was computed (very long texts are cut before tokenizing).
   */
  truncated?: { kept: number; firstChar: number; total?: number };
  /**
   * Set when the text was wrapped as a user turn in the model's chat template: the file the template came from and
   * how many tokens it added (those have `template: true`). Token offsets still refer to `text`, the selection.
   */
  chat?: { template: string; added: number };
  top: TopToken[];
  readouts: Readout[];
  /** ‖resid‖₂ per readout and position: [readout][pos]. */
  residNorm: number[][];
  /** Logit-lens top tokens: [readout][pos][k]; empty at positions outside `lensFrom..P−1`. */
  lens: TopToken[][][];
  /**
   * The first position the lens was computed for (0: all). Every read-out × position costs an unembedding
   * (2·d_model·vocab FLOPs), so for large vocabularies the lens covers the last positions within a FLOP budget.
   */
  lensFrom: number;
  /**
   * The final prediction at each position (the last read-out through ln_final and the unembedding, i.e. the real
   * logits' argmax) and its prob/rank at every readout; id −1 and NaN outside the lens positions.
   */
  target: { ids: number[]; texts: string[]; prob: number[][]; rank: number[][] };
  stats: LayerStats[];
  /** Attention, MLP sparsity, massive activations, spectra, voids (absent when not requested). */
  perLayer?: LayerDetail;
  timings: { tokenizeMs: number; forwardMs: number; lensMs: number; totalMs: number };
}

/** A typed target token tracked through the logit lens at one position. */
export interface LensTarget {
  position: number;
  text: string;
  tokenId: number;
  tokenText: string;
  /** Probability and rank at every read-out (the order of `Analysis.readouts`). */
  prob: number[];
  rank: number[];
  note?: string;
}

// ---- Per-layer detail ---------------------------------------------------------------------------------

/** Mean/peak summaries of one attention head over the prompt's query positions. */
export interface HeadSummary {
  layer: number;
  head: number;
  /** Mean over queries of the pattern row's entropy, in nats. */
  entropy: number;
  /** Mean attention from each query to the previous position (queries 1..P-1). */
  prevToken: number;
  /** Mean attention to position 0. */
  firstToken: number;
  /** Mean attention of each query to itself. */
  self: number;
}

export interface MassiveHit {
  pos: number;
  dim: number;
  value: number;
  /** |value| / median |x| over that read-out's positions and dims. */
  ratio: number;
}

export interface SpectralLayer {
  hook: string;
  /** Eigenvalues of the read-out's Gram matrix X Xᵀ / D (X = [P, D], rows centred over d), largest first (at most 16). */
  eigenvalues: number[];
  /** −Σ pᵢ ln pᵢ with pᵢ = λᵢ / Σλ, over all eigenvalues; and that divided by ln(rank). */
  entropy: number;
  normalizedEntropy: number;
  /** Marchenko–Pastur upper edge σ²(1+√γ)² for an i.i.d. matrix of the same shape and entry variance σ², γ = P/D. */
  mpEdge: number;
  sigma2: number;
  gamma: number;
  /** How many eigenvalues exceed the MP edge. */
  aboveEdge: number;
}

export interface LayerDetail {
  /** Attention patterns of every layer and head, [L, H, P, P] row-major (query × key). */
  attention: { dims: number[]; data: Float32Array };
  heads: HeadSummary[];
  /** Fraction of MLP neurons with post-activation > threshold, [layer][pos]. */
  mlpSparsity: { threshold: number; activeFraction: number[][] };
  /** Per read-out (same order as Analysis.readouts): median |x| and the hits above `ratio` × median. */
  massive: { ratio: number; layers: { hook: string; median: number; hits: MassiveHit[] }[] };
  spectral: SpectralLayer[];
  /** Blocks whose mean relative update ‖Δ‖/‖x‖ over positions is below `threshold`: candidate "voids". */
  voids: { threshold: number; layers: number[]; meanUpdate: number[] };
}

export interface PatchingResult {
  hook: string;
  clean: { text: string; tokens: TokenSpan[] };
  corrupted: { text: string; tokens: TokenSpan[] };
  /** The answer tokens whose logit difference is measured at the last position. */
  answers: { clean: { id: number; text: string }; corrupted: { id: number; text: string } };
  /** logit[clean answer] − logit[corrupted answer] on the clean and on the corrupted run. */
  ldClean: number;
  ldCorrupted: number;
  /** (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted) for each block's hook and position: [layer][pos]. */
  restored: number[][];
  ms: number;
}

/** A path-patching sender: attention head `head` of block `layer`, or that block's MLP when `head` is absent. */
export interface PathSender {
  layer: number;
  head?: number;
}

/** Where the path ends: the logits, or one input (query, key or value) of a head of a later block. */
export type PathReceiver = { kind: 'logits' } | { kind: 'head'; layer: number; head: number; input: 'q' | 'k' | 'v' };

export interface PathSenderEffect extends PathSender {
  /** `blocks.L.attn.head.H` or `blocks.L.mlp`. */
  name: string;
  /** The logit difference with only this path corrupted. */
  ld: number;
  /** ld − ldClean. */
  delta: number;
  /** delta / (ldCorrupted − ldClean): the share of the whole corruption effect that flows along this path. */
  fraction: number;
}

export interface PathPatchingResult {
  receiver: PathReceiver;
  receiverName: string;
  clean: { text: string; tokens: TokenSpan[] };
  corrupted: { text: string; tokens: TokenSpan[] };
  answers: { clean: { id: number; text: string }; corrupted: { id: number; text: string } };
  ldClean: number;
  ldCorrupted: number;
  senders: PathSenderEffect[];
  nLayers: number;
  nHeads: number;
  /** Largest difference between the receiver's pattern as recomputed and the model's own (head receivers). */
  patternCheck?: number;
  ms: number;
  notes: string[];
}

export interface LayerComparison {
  layer: number;
  a: { updateNorm: number; driftCos: number; residNorm: number; mlpActive: number; targetProb: number };
  b: { updateNorm: number; driftCos: number; residNorm: number; mlpActive: number; targetProb: number };
}

// ---- Steering (issue 5) ----------------------------------------------------------------------------------------

/** The residual-stream points a direction can be added at or patched into (TransformerLens hook names). */
export type ResidPoint = 'hook_resid_pre' | 'hook_resid_mid' | 'hook_resid_post';
export const RESID_POINTS: readonly ResidPoint[] = ['hook_resid_pre', 'hook_resid_mid', 'hook_resid_post'];
/** Steering's name for a residual point (the same three). */
export type SteerPointName = ResidPoint;

/** What steering does along its vector: add it (times the strength), or ablate, set or cap the residual's component along it. */
export type SteerOp = 'add' | 'ablate' | 'cap' | 'set';
export const STEER_OPS: readonly SteerOp[] = ['add', 'ablate', 'cap', 'set'];

export interface TokenDelta {
  id: number;
  text: string;
  base: number;
  steered: number;
}

export interface NextTokenEffect {
  baseline: TopToken[];
  steered: TopToken[];
  /** KL(baseline ‖ steered) of the next-token distributions at the last position, in nats. */
  kl: number;
  /** The union of both top-k lists with both probabilities. */
  deltas: TokenDelta[];
  /** The absolute multiplier that was applied to the vector (= strength, or strength × mean norm / ‖v‖). */
  scale: number;
  /** True when the steered model produced NaN/Inf (then `steered` is empty and the baseline stands). */
  nonFinite: boolean;
  /** Why, when `nonFinite`: the strength, the norm it added and where the steered model overflowed. */
  nonFiniteReason?: string;
}

export interface GenerationSettings {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  seed: number;
}

export interface GeneratedText {
  ids: number[];
  tokens: string[];
  text: string;
  /** Stopped early because the model produced NaN/Inf. */
  nonFinite?: boolean;
  /** Why, when `nonFinite`. */
  nonFiniteReason?: string;
}

export interface GenerationComparison {
  prompt: string;
  baseline: GeneratedText;
  steered: GeneratedText;
  settings: GenerationSettings;
  tokensPerSecond: number;
}

export interface SweepResult {
  layers: number[];
  strengths: number[];
  point: SteerPointName;
  relative: boolean;
  /** [layer index][strength index] */
  kl: number[][];
  /** Probability of `target` at the last position (NaN when no target). */
  targetProb: number[][];
  /** Mean next-token loss (nats) of the steered model on the neutral text: how much it degrades. */
  neutralLoss: number[][];
  baselineNeutralLoss: number;
  baselineTargetProb: number;
  target?: { id: number; text: string };
  neutralText: string;
  ms: number;
}

/**
 * The model as loaded against the independent float64 reference forward, on a short probe prompt: what the oracle
 * tests check, measured on the user's model, provider and precision.
 */
export interface ParityReport {
  /** Largest |logit − reference logit| over the probe; null when only the first layers were checked. */
  max_abs_dlogit: number | null;
  /** The hook with the largest difference relative to its own scale, its largest absolute and relative difference. */
  worst_hook: string;
  worst_hook_max_abs: number;
  worst_hook_relative: number;
  /** What the run was compared with. */
  reference: string;
  tokens: number;
  /** Blocks compared (all of them, or the first ones when the whole model would take too long). */
  layers_checked: number;
  n_layers: number;
  hooks_checked: number;
  provider: string;
  precision: string;
  ms: number;
  /** Why nothing was compared (a model too large for the budget). */
  skipped?: string;
}

/** A deviation as people read them: 9.5e-6, 0.044, 1.2 (two significant digits). */
export function formatDeviation(x: number): string {
  if (x === 0) return '0';
  return Math.abs(x) < 1e-3 ? x.toExponential(1) : x.toPrecision(2);
}

/** One part of the model and what it writes directly into the attributed logit. */
export interface DlaComponent {
  /** `embed`, `pos_embed`, `blocks.L.attn.head.H`, `blocks.L.attn.bias`, `blocks.L.mlp`, `blocks.L.mlp.neuron.N`, `final_norm.bias`. */
  name: string;
  value: number;
}

/** Direct logit attribution of a target token (or a logit difference) at one position (CLI.md: `residual dla`). */
export interface DlaResult {
  target: { id: number; text: string };
  contrast?: { id: number; text: string };
  position: number;
  /** The logit (difference) attributed, before any final soft-cap, computed from the final residual. */
  logit: number;
  /**
   * Every part that adds up to the logit, then the largest neurons (`blocks.L.mlp.neuron.N`), which are not added:
   * together they make their MLP's output without its bias.
   */
  components: DlaComponent[];
  /** logit − the sum of the components that add up (float32 rounding: about 1e-6 of the logit's scale). */
  residual: number;
  /** The model's final soft-cap, when it has one (the attribution is of the logit before it). */
  softcap?: number;
}

/** A Patchscope reading: the hidden state at (layer, position, point) decoded through a target prompt (engine/patchscope.ts). */
export interface PatchscopeResult {
  layer: number;
  position: number;
  point: ResidPoint;
  targetPrompt: string;
  targetLayer: number;
  /** The placeholder's token position in the target prompt. */
  placeholder: number;
  /** The greedy continuation of the patched target prompt: its ids, tokens and text. */
  ids: number[];
  text: string;
  tokens: string[];
}
