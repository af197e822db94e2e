/**
 * What an attribution graph will cost, before any work: seconds and peak process memory from the prompt length, the
 * model's and the transcoders' shapes and this machine's cores, with rates calibrated by `npm run bench:circuits`
 * (2-core machine, CPU provider). And the plan the Attributor follows at run time: how many feature rows fit a
 * memory budget, with the real active-feature count and row sizes of this prompt.
 *
 * Memory of a graph, beyond the loaded model:
 *   forward    the hooks the graph reads (attention patterns H·P² per layer dominate long prompts) and ONNX Runtime's
 *              working memory for one forward;
 *   encoders   one layer's encoder at a time as float32 (sets too large to keep are released per layer);
 *   sources    U_l [P, D, K_l]: each position's error and feature contributions per layer (K_l = most active + 1);
 *   rows       computed rows, sparse: 8 bytes per (target, source) pair the row can have, i.e. sources below the
 *              target's layer at positions up to its own;
 *   backward   one batch of gradients [rows, S, D] and ONNX Runtime's intermediates for it;
 *   graph      the kept graph's dense adjacency (N_kept²) and what pruning allocates per non-zero edge.
 */
import * as os from 'node:os';
import { ResidualError } from '../errors';
import { availableMemory, formatBytes } from '../memory';

/**
 * Rates measured by bench:circuits on 2 cores (CPU provider; bench/results/circuits.json), scaled by the core count up
 * to `MAX_SCALED_CORES`. The backward rate was fitted on GPT-2 small at 128 tokens and the Llama-3.2-1B shape at 64
 * (both 71 GFLOP/s effective); the others are close enough that the total stays within ±30 %.
 */
export const CIRCUIT_CALIBRATION = {
  /** Model forward (GFLOP/s, all hooks the graph needs). */
  forwardGflops: 40,
  /** Transcoder encoders (GFLOP/s, one Gemm + activation per layer). */
  encoderGflops: 80,
  /** Creating a streamed encoder's session: seconds per byte of its float32 weights (read, cast, pack). */
  encoderLoadSecondsPerByte: 1e-9,
  /** Backward steps through the frozen attention (GFLOP/s, batched MatMuls). */
  backwardGflops: 71,
  /** Reading weights from the page cache / disk (bytes/s): decoder rows, encoder columns, the unembedding's mean. */
  readBytesPerS: 1.5e9,
  /** Building the sources U_l: seconds per element (strided writes; slower as d_model grows). */
  sourceSecondsPerElement: 15e-9,
  /** JavaScript loops over edges (influence rounds, read-outs, the kept graph, pruning): seconds per edge touched. */
  edgeSeconds: 4e-9,
  /** ONNX Runtime's working memory for a forward, as a multiple of the hook bytes the graph fetches. */
  forwardWorkFactor: 2,
  /** Fixed seconds (session runs, JSON, small loops). */
  fixedSeconds: 0.5,
  /**
   * Measured peak over the sum of the parts' bytes: freed buffers that V8's collector and malloc have not yet handed
   * back, and allocator fragmentation (1.4–1.6 on the benchmark's shapes).
   */
  memorySlack: 1.5,
};
const CALIBRATION_CORES = 2;
const MAX_SCALED_CORES = 8;

/** Longest prompt a graph is built for unless the caller says otherwise (residual.circuitMaxTokens, --max-tokens). */
export const DEFAULT_CIRCUIT_MAX_TOKENS = 256;

/** The default memory budget: what this process holds now plus 90% of what the machine has free. */
export function defaultCircuitBudget(): number {
  return process.memoryUsage().rss + 0.9 * availableMemory();
}

/** Rows (targets × positions) per backward batch: the gradient tensor stays near 16 MB whatever the width. */
export function defaultBatchRows(D: number, X: number): number {
  return Math.max(256, Math.min(16384, Math.floor(16e6 / (4 * Math.max(D, X)))));
}

/** Peak bytes of one backward batch: the gradients, their W_Oᵀ and per-head images, the new gradients, the read-out. */
export function backwardWorkBytes(batchRows: number, D: number, X: number, K: number): number {
  return 4 * batchRows * (3 * D + 3 * X + K);
}

export interface FeatureRowPlan {
  featureRows: number;
  memoryLimited: boolean;
  /** Estimated peak bytes of the plan (including `usedBytes`). */
  peakBytes: number;
}

/**
 * How many feature rows to compute: `requested`, lowered until the rows (each at most `rowBytes` of the largest
 * candidates), the kept graph and the backward work fit `budgetBytes − usedBytes`. Throws with the numbers when even
 * the logit rows do not fit.
 */
export function planFeatureRows(p: {
  nActive: number;
  nSources: number;
  nLogits: number;
  errorsAndTokens: number;
  requested: number;
  workBytes: number;
  budgetBytes?: number;
  usedBytes: number;
  /** Bytes of one computed row, largest first (default: every row can have every source). */
  rowBytesDescending?: ArrayLike<number>;
  /** Bytes of the target directions held at once when F feature rows are computed (default none). */
  directionBytes?: (F: number) => number;
}): FeatureRowPlan {
  const logitRowBytes = 8 * p.nSources;
  const need = (F: number) => {
    let rows = p.nLogits * logitRowBytes;
    if (p.rowBytesDescending) for (let i = 0; i < F; i++) rows += p.rowBytesDescending[i];
    else rows += F * 8 * p.nSources;
    return p.usedBytes + rows + (p.directionBytes?.(F) ?? 0) + Math.max(p.workBytes, keptGraphBytes(F, p.errorsAndTokens, p.nLogits));
  };
  const requested = Math.min(p.requested, p.nActive);
  if (p.budgetBytes === undefined || need(requested) <= p.budgetBytes) {
    return { featureRows: requested, memoryLimited: false, peakBytes: need(requested) };
  }
  if (need(0) > p.budgetBytes) {
    throw new ResidualError(
      `the memory budget of ${formatBytes(p.budgetBytes)} is too small even for the logit rows: ${formatBytes(p.usedBytes)} is in use already and ` +
        `the graph needs at least ${formatBytes(need(0) - p.usedBytes)} more (${p.nActive} active features, ${p.nSources} sources); ` +
        `raise the budget (residual.circuitMemoryMB, --max-memory) or shorten the prompt`,
      'attribution',
      'memory',
    );
  }
  let lo = 0;
  let hi = requested;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (need(mid) <= p.budgetBytes) lo = mid;
    else hi = mid;
  }
  return { featureRows: lo, memoryLimited: true, peakBytes: need(lo) };
}

/** The kept graph: dense adjacency (float32) and masks, plus pruning's per-edge arrays over its non-zeros. */
export function keptGraphBytes(F: number, errorsAndTokens: number, nLogits: number): number {
  const Nk = F + errorsAndTokens + nLogits;
  const nnz = (F + nLogits) * Nk * 0.5;
  return 5 * Nk * Nk + 29 * nnz;
}

export interface CircuitShape {
  nLayers: number;
  dModel: number;
  nHeads: number;
  /** heads × d_head. */
  dAttn: number;
  dMlp: number;
  vocabSize: number;
  /** Model parameters (for the forward's FLOPs). */
  params: number;
  tokens: number;
  /** Transcoder width per layer, and bytes per stored weight (4 for F32, 2 for F16/BF16). */
  dSae: number;
  transcoderElemBytes: number;
  /** Active features per token per layer: TopK's k, else an assumed typical count. */
  activePerToken: number;
  /** Whether the encoder columns are strided in the file (SAELens [d_in, d_sae]: reading them scans the matrix). */
  encoderColumnsStrided: boolean;
  /** Whether each layer's encoder session is created per graph (a set too large to keep, see KEEP_ENCODERS_BYTES). */
  encodersStreamed: boolean;
  /** Bytes per stored value of the unembedding (its mean over the vocabulary is read once per graph). */
  unembedElemBytes: number;
  maxFeatureNodes: number;
  nLogits?: number;
  /** Resident bytes before the graph starts (the loaded model). */
  baseBytes: number;
  /** Backward sessions not yet created (their weight copies count). */
  backwardSessionsPending: boolean;
  /** A cross-layer transcoder: layer l's sources hold the features of layers 0..l. */
  crossLayer?: boolean;
  cores?: number;
}

export interface CircuitEstimate {
  seconds: number;
  peakBytes: number;
  activeFeatures: number;
  featureRows: number;
  /** Per phase: seconds and the bytes it holds at its peak. */
  parts: { name: string; seconds: number; bytes: number }[];
}

/** Active features per token assumed for ReLU / JumpReLU transcoders (typical L0 of public transcoders). */
export const ASSUMED_ACTIVE_PER_TOKEN = 64;

export function estimateCircuit(c: CircuitShape): CircuitEstimate {
  const cal = CIRCUIT_CALIBRATION;
  const cores = Math.max(1, Math.min(MAX_SCALED_CORES, c.cores ?? os.cpus().length));
  const speed = cores / CALIBRATION_CORES;
  const { nLayers: L, dModel: D, nHeads: H, dAttn: X, tokens: P, dSae: F } = c;
  const nLogits = c.nLogits ?? 10;
  const kPer = Math.min(c.activePerToken, F);
  const activeFeatures = L * P * kPer;
  const featureRows = Math.min(c.maxFeatureNodes, activeFeatures);
  const nSources = activeFeatures + L * P + P;
  const parts: CircuitEstimate['parts'] = [];

  // Forward with the graph's hooks: 2 FLOPs per parameter and token plus attention, one logit row.
  const fwdFlops = 2 * P * (c.params - c.vocabSize * D) + L * 4 * P * P * X + 2 * D * c.vocabSize;
  const hookBytes = 4 * (L * (H * P * P + 4 * P * D) + 2 * P * D);
  parts.push({ name: 'forward', seconds: fwdFlops / (cal.forwardGflops * 1e9 * speed), bytes: hookBytes * (1 + cal.forwardWorkFactor) });

  // Encoders: one Gemm over the prompt per layer; a set too large to keep creates each layer's session per graph.
  const encFlops = L * 2 * P * D * F;
  const encLoad = c.encodersStreamed ? L * 4 * D * F * cal.encoderLoadSecondsPerByte : 0;
  parts.push({ name: 'encoders', seconds: encFlops / (cal.encoderGflops * 1e9 * speed) + encLoad, bytes: 4 * D * F + 4 * 2 * P * F });

  // Sources: the active features' decoder rows, U_l; the unembedding's mean for the logit directions.
  // Columns per layer and position: the error and the features writing there (a CLT: those of every layer up to it).
  const kMean = c.crossLayer ? (kPer * (L + 1)) / 2 : kPer;
  const uElements = L * P * D * (kMean + 1);
  const decRead = activeFeatures * D * c.transcoderElemBytes;
  const unembedRead = c.vocabSize * D * c.unembedElemBytes;
  parts.push({ name: 'sources', seconds: (decRead + unembedRead) / cal.readBytesPerS + uElements * cal.sourceSecondsPerElement, bytes: 4 * uElements });

  // Backward. Rows: the logits (S = P through every block) and the features, taken as spread evenly over layers and
  // positions. A row through one block of S positions: W_Oᵀ (2·S·D·X), the pattern (2·S²·X), W_V (2·S·X·D), the
  // read-out (2·S·D·K).
  const blockFlops = (S: number, S2: number) => 4 * S * D * X + 2 * S2 * X + 2 * S * D * (kMean + 1);
  const meanS = (P + 1) / 2;
  const meanS2 = ((P + 1) * (2 * P + 1)) / 6;
  const featBlocks = (L + 1) / 2;
  const bwdFlops = nLogits * L * blockFlops(P, P * P) + featureRows * featBlocks * blockFlops(meanS, meanS2);
  // A row's sources: features of layers below it at positions up to its own — a quarter of all sources on average
  // for features, all of them for logits.
  const rowPairs = nLogits * nSources + featureRows * nSources * 0.25;
  const rounds = Math.ceil(featureRows / 512) + 1;
  const influenceEdges = rounds * rowPairs * (L / 2);
  const colRead = c.encoderColumnsStrided ? L * D * F * c.transcoderElemBytes : featureRows * D * c.transcoderElemBytes;
  const sessionBytes = c.backwardSessionsPending ? L * 2 * D * X * 4 : 0;
  const batchRows = defaultBatchRows(D, X);
  parts.push({
    name: 'backward',
    seconds: bwdFlops / (cal.backwardGflops * 1e9 * speed) + (influenceEdges + rowPairs) * cal.edgeSeconds + colRead / cal.readBytesPerS,
    bytes: 8 * rowPairs + backwardWorkBytes(batchRows, D, X, (c.crossLayer ? kPer * L : kPer) + 1) + sessionBytes,
  });

  // The kept graph and its pruning.
  const Nk = featureRows + L * P + P + nLogits;
  parts.push({ name: 'graph', seconds: (Nk * Nk + 4 * (featureRows + nLogits) * Nk) * cal.edgeSeconds, bytes: keptGraphBytes(featureRows, L * P + P, nLogits) });

  const seconds = cal.fixedSeconds + parts.reduce((s, p) => s + p.seconds, 0);
  // The forward's hooks, U and the rows are all alive at the backward's peak; the encoders come and go before it.
  const byName = (n: string): number => parts.find((p) => p.name === n)!.bytes;
  const peakBytes =
    c.baseBytes + cal.memorySlack * Math.max(byName('forward') + byName('encoders'), hookBytes + byName('sources') + byName('backward') + byName('graph'));
  return { seconds, peakBytes, activeFeatures, featureRows, parts };
}

/** One line for people: "about 12 s and 2.1 GB peak (1,034 rows of 86,016 active features)". */
export function describeEstimate(e: CircuitEstimate): string {
  const s = e.seconds < 10 ? e.seconds.toFixed(1) : Math.round(e.seconds).toString();
  return `about ${s} s and ${formatBytes(e.peakBytes)} peak (${e.featureRows.toLocaleString('en-US')} feature rows of ~${e.activeFeatures.toLocaleString('en-US')} active features)`;
}
