/**
 * Result types that cross to the webviews. No imports here (and so no Node types): the webview type-checks these
 * through src/protocol.ts without seeing the engine.
 */

/** A token and the exact range of the analysed text it covers (JavaScript string indices). */
export interface TokenSpan {
  id: number;
  text: string;
  start: number;
  end: number;
}

export interface ModelInfo {
  name: string;
  architecture: string;
  n_layers: number;
  d_model: number;
  n_heads: number;
  vocab_size: number;
  n_ctx: number;
  dtype: string;
  dir: string;
}

export interface ProviderAttempt {
  provider: string;
  ok: boolean;
  reason?: string;
  ms: number;
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
  text: string;
  tokens: TokenSpan[];
  /**
   * Set when the text had more tokens than allowed: only the last `kept` tokens, starting at character `firstChar`,
   * were analysed. `total` is the full token count when it was computed (very long texts are cut before tokenizing).
   */
  truncated?: { kept: number; firstChar: number; total?: number };
  top: TopToken[];
  readouts: Readout[];
  /** ‖resid‖₂ per readout and position: [readout][pos]. */
  residNorm: number[][];
  /** Logit-lens top tokens: [readout][pos][k]. */
  lens: TopToken[][][];
  /** The final prediction at each position (argmax of the real logits) and its prob/rank at every readout. */
  target: { ids: number[]; texts: string[]; prob: number[][]; rank: number[][] };
  stats: LayerStats[];
  timings: { tokenizeMs: number; forwardMs: number; lensMs: number; totalMs: number };
}
