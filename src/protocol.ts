/**
 * Every message between the extension host and the webviews: one union per direction and per view, with
 * `noun/verb` discriminants. Imported (types only) by both sides; the webview never imports `vscode`.
 */
import type { Analysis, LayerComparison, ModelInfo, PatchingResult, ProviderAttempt } from './engine/results';

export type { Analysis, LayerComparison, ModelInfo, PatchingResult, ProviderAttempt };

// ---- Activations panel -------------------------------------------------------------------------------------------

export type ToActivations =
  /** A new analysis began; the panel keeps the previous result visible, greyed, until the new one lands. */
  | { type: 'analysis/started'; requestId: number; preview: string; file?: string }
  /** The result of request `requestId`. */
  | { type: 'analysis/result'; requestId: number; analysis: Analysis; file?: string }
  /** The request failed; `message` names the file/hook and the problem. */
  | { type: 'analysis/error'; requestId: number; message: string }
  /** The request was cancelled (by the user or by a newer request). */
  | { type: 'analysis/cancelled'; requestId: number }
  /** Probability and rank of a user-typed target token at every read-out, for one position. */
  | { type: 'lens/targetResult'; position: number; text: string; tokenId: number; tokenText: string; prob: number[]; rank: number[]; note?: string }
  | { type: 'lens/targetError'; message: string }
  /** Activation patching progress and result. */
  | { type: 'patching/progress'; done: number; total: number }
  | { type: 'patching/result'; result: PatchingResult; notes: string[] }
  | { type: 'patching/error'; message: string }
  /** Two analyses side by side (A = the earlier, B = the newer selection). */
  | { type: 'compare/result'; a: Analysis; b: Analysis; layers: LayerComparison[]; fileA?: string; fileB?: string };

export type FromActivations =
  /** The webview's script is up and can take messages (the host then replays the last state). */
  | { type: 'ready' }
  /** Select the token's text in the editor it came from. */
  | { type: 'token/reveal'; start: number; end: number }
  /** Re-run the analysis of the current editor selection. */
  | { type: 'analysis/rerun' }
  /** Track a typed target token through the logit lens at a position. */
  | { type: 'lens/target'; position: number; text: string }
  /** Run activation patching with the analysed text as the clean prompt. */
  | { type: 'patching/run'; corrupted: string; cleanAnswer?: string; corruptedAnswer?: string; point: 'hook_resid_pre' | 'hook_resid_mid' | 'hook_resid_post' }
  | { type: 'patching/cancel' }
  /** Colour the analysed tokens in the editor by a measure at a layer (or clear it). */
  | { type: 'heat/show'; measure: HeatMeasure | 'mlp_active' | 'target_prob'; layer: number }
  | { type: 'heat/clear' };

/** State the panel persists through `setState` so a restored panel shows its last analysis at once. */
export interface ActivationsState {
  analysis?: Analysis;
  file?: string;
  position?: number;
  measure?: HeatMeasure;
  tab?: ActivationsTab;
  attention?: { layer: number; head: number; metric: 'entropy' | 'prevToken' | 'firstToken' | 'self' };
  spectralReadout?: number;
  corrupted?: string;
  /** A typed target token tracked through the lens at `position`. */
  customTarget?: { position: number; text: string; tokenText: string; prob: number[]; rank: number[]; note?: string };
}

export type ActivationsTab = 'overview' | 'attention' | 'layers' | 'patching' | 'compare';

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
