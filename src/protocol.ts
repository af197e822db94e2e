/**
 * Every message between the extension host and the webviews: one union per direction and per view, with
 * `noun/verb` discriminants. Imported (types only) by both sides; the webview never imports `vscode`.
 */
import type {
  Analysis,
  GenerationComparison,
  LayerComparison,
  ModelInfo,
  NextTokenEffect,
  PatchingResult,
  ProviderAttempt,
  SteerPointName,
  SweepResult,
} from './engine/results';

export type { Analysis, GenerationComparison, LayerComparison, ModelInfo, NextTokenEffect, PatchingResult, ProviderAttempt, SteerPointName, SweepResult };

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
  /** A corrupted prompt to start from (undefined: no word or number could be swapped at the same token length). */
  | { type: 'patching/suggestion'; forText: string; suggestion?: { corrupted: string; change: string; changesPrediction: boolean } }
  /** How many tokens a prompt has (the patching form shows both counts). */
  | { type: 'patching/count'; text: string; tokens: number }
  /** Two analyses side by side (A = the earlier, B = the newer selection). */
  | { type: 'compare/result'; a: Analysis; b: Analysis; layers: LayerComparison[]; fileA?: string; fileB?: string };

export type FromActivations =
  /** The webview's script is up and can take messages (the host then replays the last state). */
  | { type: 'ready' }
  /** Select the token's text in the editor it came from. */
  | { type: 'token/reveal'; start: number; end: number }
  /** The result of request `requestId` is drawn (the host logs the time from the command to this point). */
  | { type: 'analysis/rendered'; requestId: number }
  /** Re-run the analysis of the current editor selection. */
  | { type: 'analysis/rerun' }
  /** Track a typed target token through the logit lens at a position. */
  | { type: 'lens/target'; position: number; text: string }
  /** Run activation patching with the analysed text as the clean prompt. */
  | { type: 'patching/run'; corrupted: string; cleanAnswer?: string; corruptedAnswer?: string; point: 'hook_resid_pre' | 'hook_resid_mid' | 'hook_resid_post' }
  | { type: 'patching/cancel' }
  /** Suggest a corrupted prompt for the analysed text. */
  | { type: 'patching/suggest' }
  /** Count the tokens of a prompt as the model will see it. */
  | { type: 'patching/count'; text: string }
  /** Colour the analysed tokens in the editor by a measure at a layer (or clear it). */
  | { type: 'heat/show'; measure: HeatMeasure | 'mlp_active' | 'target_prob'; layer: number }
  | { type: 'heat/clear' };

/** State the panel persists through `setState` so a restored panel shows its last analysis at once. */
export interface ActivationsState {
  analysis?: Analysis;
  file?: string;
  position?: number;
  measure?: HeatMeasure;
  /** Heatmap colour scale: each row from its own min to max (default), or one scale for the whole map. */
  heatScale?: 'row' | 'global';
  tab?: ActivationsTab;
  attention?: { layer: number; head: number; metric: 'entropy' | 'prevToken' | 'firstToken' | 'self' };
  spectralReadout?: number;
  corrupted?: string;
  /** A typed target token tracked through the lens at `position`. */
  customTarget?: { position: number; text: string; tokenId?: number; tokenText: string; prob: number[]; rank: number[]; note?: string };
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

export type InspectorCommand =
  | 'residual.analyzeSelection'
  | 'residual.traceCircuit'
  | 'residual.selectModel'
  | 'residual.showActivations'
  | 'residual.openSteering'
  | 'residual.showLog';
export const INSPECTOR_COMMANDS: readonly InspectorCommand[] = [
  'residual.analyzeSelection',
  'residual.traceCircuit',
  'residual.selectModel',
  'residual.showActivations',
  'residual.openSteering',
  'residual.showLog',
];

// ---- Steering panel ----------------------------------------------------------------------------------------------


/** What the panel knows about the current vector (the values stay in the host). */
export interface VectorInfo {
  label: string;
  source: 'feature' | 'contrastive' | 'file';
  layer: number;
  point: SteerPointName;
  norm: number;
  dModel: number;
  provenance: Record<string, unknown>;
}

/** Where and how much, as the user set it. `positions`: "all", "from:N", or "i,j,k" (prompt positions). */
export interface SteerSettings {
  layer: number;
  point: SteerPointName;
  strength: number;
  relative: boolean;
  positions: string;
}

export interface SteeringState {
  model?: { name: string; nLayers: number; dModel: number };
  prompt?: string;
  vector?: VectorInfo;
  transcoders?: string;
}

export type ToSteering =
  | { type: 'steer/state'; state: SteeringState }
  | { type: 'steer/busy'; what: string }
  | { type: 'steer/progress'; done: number; total: number }
  | { type: 'steer/effect'; effect: NextTokenEffect; settings: SteerSettings }
  | { type: 'steer/generation'; result: GenerationComparison; settings: SteerSettings }
  | { type: 'steer/sweep'; result: SweepResult }
  /** A request failed; the previous results stay shown. */
  | { type: 'steer/error'; message: string };

export type FromSteering =
  | { type: 'ready' }
  | { type: 'steer/useSelection' }
  | { type: 'steer/vectorFromFeature'; layer: number; index: number }
  | { type: 'steer/vectorFromPairs'; layer: number; point: SteerPointName }
  | { type: 'steer/openVector' }
  | { type: 'steer/saveVector' }
  | { type: 'steer/effect'; settings: SteerSettings }
  | { type: 'steer/generate'; settings: SteerSettings; maxNewTokens: number; temperature: number; topP: number; seed: number }
  | { type: 'steer/sweep'; settings: SteerSettings; layers: number[]; strengths: number[]; target: string; neutral: string }
  | { type: 'steer/cancel' };

// ---- Circuit (attribution graph) panel ---------------------------------------------------------------------------

export type CircuitNodeKind = 'feature' | 'error' | 'token' | 'logit' | 'other';

export interface CircuitNode {
  id: string;
  kind: CircuitNodeKind;
  /** Feature/error layer; −1 for embeddings; nLayers for logits. */
  layer: number;
  pos: number;
  /** Feature index (features), vocabulary id (logits). */
  index: number | null;
  activation: number | null;
  /** Cumulative influence (smaller = more important), as circuit-tracer writes it. */
  influence: number | null;
  /** Features: the output token the decoder pushes up most (from the feature index, else W_dec·W_U), when known. */
  output?: string;
  prob: number | null;
  label: string;
}

export interface CircuitView {
  slug: string;
  prompt: string;
  tokens: string[];
  nLayers: number;
  nodes: CircuitNode[];
  /** Links by node index: s → t with the signed direct effect w. */
  links: { s: number; t: number; w: number }[];
  nodeThreshold: number;
  edgeThreshold: number;
  /** False for an imported file: thresholds, cards and interventions need the live graph. */
  live: boolean;
  scores?: { replacement: number; completeness: number };
  counts: { activeFeatures: number; nodes: number; links: number };
  /**
   * A live graph that keeps fewer features than are active (the feature-row limit or the memory budget): how many,
   * and the share of the active features' influence they carry.
   */
  coverage?: { keptFeatures: number; activeFeatures: number; influenceCovered: number; memoryLimited: boolean; budgetMB: number };
  ms?: number;
  pinned?: string[];
  supernodes?: string[][];
}

export interface FeatureCard {
  layer: number;
  index: number;
  /** The token the decoder pushes up most (the feature's label when none is given). */
  output?: string;
  /** Activation at every position of this prompt. */
  activations: number[];
  tokens: string[];
  /** Direct effect of the decoder row on the logits (W_dec·W_U): strongest up- and down-weighted tokens. */
  top: [string, number][];
  bottom: [string, number][];
  /** Top activating contexts from the feature index, when there is one. */
  contexts?: { before: string; peak: string; after: string; act: number }[];
  frequency?: number;
  maxAct?: number;
  source: string;
}

export interface InterventionRow {
  token: string;
  baseProb: number;
  newProb: number;
  actual: number;
  predictedDirect: number;
  predictedPaths: number;
}

/** What a graph will cost, shown before it starts (and kept on screen while it runs). */
export interface CircuitEstimateView {
  tokens: number;
  seconds: number;
  peakMB: number;
  budgetMB: number;
  activeFeatures: number;
  featureRows: number;
  /** True when the panel waits for Start (the estimate is above residual.circuitConfirmSeconds or over the budget). */
  awaitingStart: boolean;
}

export type ToCircuit =
  | { type: 'circuit/busy'; what: string; fraction?: number }
  | { type: 'circuit/estimate'; estimate: CircuitEstimateView }
  | { type: 'circuit/view'; view: CircuitView }
  | { type: 'circuit/card'; card: FeatureCard }
  | { type: 'circuit/intervention'; description: string; rows: InterventionRow[]; notInGraph: number }
  | { type: 'circuit/error'; message: string };

export type FromCircuit =
  | { type: 'ready' }
  | { type: 'circuit/thresholds'; node: number; edge: number }
  | { type: 'circuit/card'; layer: number; index: number }
  | { type: 'circuit/intervene'; items: { layer: number; pos: number; feature: number; value: number }[]; description: string }
  | { type: 'circuit/export'; pinned: string[]; supernodes: string[][] }
  | { type: 'circuit/import' }
  | { type: 'circuit/steer'; layer: number; index: number }
  | { type: 'circuit/start' }
  | { type: 'circuit/cancel' };
