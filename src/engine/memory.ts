/**
 * How much memory loading a model will take, estimated from the checkpoint's header alone (no weight is read), so
 * a model that does not fit is refused before the machine starts swapping, with what would fit instead.
 *
 * Measured with `npm run bench:memory` (peak RSS of a fresh process: load + one all-hooks forward at 128 tokens):
 * - CPU provider, bytes per parameter: 6.9 for a GPT-2-small shape (tied: its embedding is the unembedding, kept
 *   in the main session and again in the lens session), 5.2 for an untied Llama shape (the embedding table is not in
 *   ONNX Runtime at all: the engine reads the rows it needs). Half-precision weights save nothing on the CPU: ONNX
 *   Runtime's x86 CPU kernels have no float16 matrix product, so it inserts casts and folds them into float32
 *   copies of the weights.
 * - GPU providers hold the weights in device memory: 4 bytes per parameter in float32, 2 in float16 (not measured
 *   here: no GPU was lent to this project's sessions so far), so half precision is what makes a model fit there.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { Checkpoint } from './checkpoint/load';
import type { WeightPrecision } from './onnx/ops';

/** CPU: process bytes per parameter (measured, see above). */
export const CPU_BYTES_PER_PARAM = { gpt2: 7.0, family: 5.3 } as const;
/** Node.js, ONNX Runtime's library and the extension host's own share. */
export const BASE_BYTES = 300e6;

export interface MemoryEstimate {
  name: string;
  /** Parameters of the weights the model uses. */
  params: number;
  /** Bytes of those weights as stored. */
  storedBytes: number;
  /** Estimated process memory to load it on the CPU provider and run an analysis at `tokens` tokens. */
  cpuBytes: number;
  /** Estimated GPU memory for the weights, by precision. */
  gpuBytes: Record<WeightPrecision, number>;
  tokens: number;
  /** Bytes the system can give without swapping (MemAvailable on Linux, free memory elsewhere). */
  availableBytes: number;
  fitsCpu: boolean;
}

export function availableMemory(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return os.freemem();
}

/** Activations of one all-hooks forward at P tokens (float32): residual-sized hooks, MLP hooks, attention, logits. */
export function activationBytes(ckpt: Checkpoint, P: number): number {
  const c = ckpt.config;
  return 4 * (c.nLayers * P * (16 * c.dModel + 4 * c.dMlp + 2 * c.nHeads * P) + P * c.vocabSize);
}

export function estimateMemory(ckpt: Checkpoint, opts: { tokens?: number; available?: number } = {}): MemoryEstimate {
  const params = checkpointParams(ckpt);
  const tokens = Math.min(ckpt.config.nCtx, opts.tokens ?? 256);
  const perParam = ckpt.config.family ? CPU_BYTES_PER_PARAM.family : CPU_BYTES_PER_PARAM.gpt2;
  const cpuBytes = BASE_BYTES + perParam * params + activationBytes(ckpt, tokens);
  const availableBytes = opts.available ?? availableMemory();
  return {
    name: ckpt.config.name,
    params,
    storedBytes: ckpt.totalBytes,
    cpuBytes,
    gpuBytes: { float32: 4 * params, float16: 2 * params },
    tokens,
    availableBytes,
    fitsCpu: cpuBytes <= availableBytes,
  };
}

/** Bytes for people: "1.3 GB", "420 MB". */
export function formatBytes(b: number): string {
  return b >= 1e9 ? `${(b / 1e9).toFixed(1)} GB` : `${Math.ceil(b / 1e6)} MB`;
}

/** Parameters of every tensor in the checkpoint. */
export function checkpointParams(ckpt: Checkpoint): number {
  let params = 0;
  for (const e of ckpt.tensors.values()) params += e.shape.reduce((a, b) => a * b, 1);
  return params;
}

export function formatParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  return n >= 1e6 ? `${(n / 1e6).toFixed(0)}M` : `${(n / 1e3).toFixed(0)}K`;
}

/** How the message names the ways out: the half-precision setting and the override (they differ by caller). */
export interface MemoryAdviceHints {
  /** How to ask for half precision (default the extension's setting); null when the caller has none. */
  precision?: string | null;
  /** How to load anyway (default "load anyway", the extension's button). */
  override?: string;
}

/** The message when a model does not fit in the memory the CPU provider would use. */
export function memoryAdvice(e: MemoryEstimate, hints: MemoryAdviceHints = {}): string {
  const precision = hints.precision === undefined ? 'residual.precision "float16"' : hints.precision;
  return (
    `${e.name} (${formatParams(e.params)} parameters) needs about ${formatBytes(e.cpuBytes)} of memory on the CPU and ${formatBytes(e.availableBytes)} is available. ` +
    `On a GPU its weights take about ${formatBytes(e.gpuBytes.float32)} of GPU memory, or ${formatBytes(e.gpuBytes.float16)} in half precision${precision ? ` (${precision})` : ''}; ` +
    `on the CPU half precision saves little (ONNX Runtime computes in float32 there). Choose a smaller model, free memory, or ${hints.override ?? 'load anyway'}.`
  );
}
