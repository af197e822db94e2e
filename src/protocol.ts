/**
 * Every message between the extension host and the webviews: one union per direction and per view, with
 * `noun/verb` discriminants. Imported (types only) by both sides; the webview never imports `vscode`.
 */
import type { Analysis, ModelInfo, ProviderAttempt } from './engine/results';

export type { Analysis, ModelInfo, ProviderAttempt };

// ---- Activations panel -------------------------------------------------------------------------------------------

export type ToActivations =
  /** A new analysis began; the panel keeps the previous result visible, greyed, until the new one lands. */
  | { type: 'analysis/started'; requestId: number; preview: string; file?: string }
  /** The result of request `requestId`. */
  | { type: 'analysis/result'; requestId: number; analysis: Analysis; file?: string }
  /** The request failed; `message` names the file/hook and the problem. */
  | { type: 'analysis/error'; requestId: number; message: string }
  /** The request was cancelled (by the user or by a newer request). */
  | { type: 'analysis/cancelled'; requestId: number };

export type FromActivations =
  /** The webview's script is up and can take messages (the host then replays the last state). */
  | { type: 'ready' }
  /** Select the token's text in the editor it came from. */
  | { type: 'token/reveal'; start: number; end: number }
  /** Re-run the analysis of the current editor selection. */
  | { type: 'analysis/rerun' };

/** State the panel persists through `setState` so a restored panel shows its last analysis at once. */
export interface ActivationsState {
  analysis?: Analysis;
  file?: string;
  position?: number;
  measure?: HeatMeasure;
}

export type HeatMeasure = 'resid_norm' | 'update_norm' | 'drift_cos' | 'attn_norm' | 'mlp_norm';

// ---- Inspector view ----------------------------------------------------------------------------------------------

export interface InspectorState {
  status: 'idle' | 'loading' | 'ready' | 'error' | 'running';
  modelDir?: string;
  model?: ModelInfo;
  provider?: string;
  attempts?: ProviderAttempt[];
  loadMs?: number;
  error?: string;
  last?: {
    preview: string;
    file?: string;
    tokens: number;
    top: { text: string; prob: number }[];
    ms: number;
    truncated?: string;
  };
}

export type ToInspector = { type: 'inspector/state'; state: InspectorState };

export type FromInspector =
  | { type: 'ready' }
  /** Runs one of the extension's commands (only the ones listed: the webview cannot run arbitrary commands). */
  | { type: 'command/run'; command: InspectorCommand };

export type InspectorCommand = 'residual.analyzeSelection' | 'residual.selectModel' | 'residual.showActivations' | 'residual.showLog';
export const INSPECTOR_COMMANDS: readonly InspectorCommand[] = [
  'residual.analyzeSelection',
  'residual.selectModel',
  'residual.showActivations',
  'residual.showLog',
];
