/** The Activations panel: analyses, logit-lens targets, activation patching, logit attribution and comparison. */
import type { Analysis, DlaResult, LayerComparison, LensTarget, PathPatchingResult, PathReceiver, PatchingResult, PatchscopeResult, ResidPoint } from './results';
import type { FeatureCard } from './circuit';
import type { HostMessage } from './requests';

export interface PatchingRequest {
  corrupted: string;
  cleanAnswer?: string;
  corruptedAnswer?: string;
  point: ResidPoint;
}

export interface CorruptionSuggestion {
  corrupted: string;
  change: string;
  changesPrediction: boolean;
}

/** The residual-stream SAE the Features tab reads (the chosen layer of an SAE folder). */
export interface SaeInfo {
  dir: string;
  /** The set's id (hub repo, Neuronpedia id or folder name). */
  scan: string;
  layer: number;
  /** Every layer the folder has an SAE for. */
  layers: number[];
  /** `blocks.L.hook_resid_*`. */
  hook: string;
  dSae: number;
  /** "TopK 32", "JumpReLU", "ReLU". */
  activation: string;
  normalize: string;
  applyBDecToInput: boolean;
}

/** What the SAE finds on the shown analysis. */
export interface SaeFeatureReading {
  sae: SaeInfo;
  /** Per position: the strongest active features, [index, activation], strongest first. */
  top: [number, number][][];
  /** Per position: how many features are active. */
  l0: number[];
  /** The features with the largest activation anywhere on the prompt, with their activation at every position. */
  strongest: { index: number; max: number; acts: number[] }[];
  /** Fraction of the hook's variance left unexplained on this prompt (a leading BOS left out: `skipped`). */
  fvu: number;
  reportedFvu?: number;
  skipped: number;
  /** Set when the reconstruction is poor (another model, hook or normalisation). */
  warning?: string;
}

/** One source of a QK split, named for display (`L1/123 @4 " the"`, `error L0 @2 …`, `token @3 …`, `bias terms`). */
export interface QkSourceView {
  kind: 'feature' | 'error' | 'token' | 'bias';
  label: string;
  /** A feature's layer and index (its card). */
  layer?: number;
  index?: number;
  pos?: number;
}

/** QK attribution of one head, query and key (engine/circuits/qk.ts), as the Attention tab shows it. */
export interface QkView {
  layer: number;
  head: number;
  query: number;
  key: number;
  dHead: number;
  score: number;
  realScore: number;
  pattern: number;
  querySide: { source: QkSourceView; value: number }[];
  keySide: { source: QkSourceView; value: number }[];
  pairs: { query: QkSourceView; key: QkSourceView; value: number }[];
  pairsListed: number;
  byKind: { query: string; key: string; value: number }[];
  nQuerySources: number;
  nKeySources: number;
  /** The transcoder set the features come from. */
  transcoders: string;
  ms: number;
}

/** What the panel can ask the host (see requests.ts for the contract). */
export type ActivationsRequests = {
  /** Probability and rank of a typed token at every read-out, at one position of the shown analysis. */
  'lens/target': { params: { position: number; text: string }; result: LensTarget };
  /** Patchscopes: the residual at read-out `readout` (Analysis.readouts) and `position`, decoded through a target prompt. */
  'patchscope/run': { params: { readout: number; position: number; targetPrompt: string; targetLayer?: number }; result: PatchscopeResult };
  /** Activation patching with the analysed text as the clean prompt (progress: runs done). */
  'patching/run': { params: PatchingRequest; result: { result: PatchingResult; notes: string[] } };
  /** Path patching from every earlier head and MLP to `receiver`, with the analysed text as the clean prompt (progress: senders done). */
  'pathpatching/run': { params: { corrupted: string; cleanAnswer?: string; corruptedAnswer?: string; receiver: PathReceiver }; result: PathPatchingResult };
  /** A corrupted prompt to start from (undefined: no word or number could be swapped at the same token length). */
  'patching/suggest': { params: Record<string, never>; result: { forText: string; suggestion?: CorruptionSuggestion } };
  /** How many tokens a prompt has as the model will see it. */
  'patching/count': { params: { text: string }; result: { tokens: number } };
  /**
   * Direct logit attribution at one position of the shown analysis: of `target` (one typed token; default the top
   * prediction there), or of the difference target − `contrast`.
   */
  'dla/compute': { params: { target?: string; contrast?: string; position: number }; result: DlaResult };
  /** Picks the residual-stream SAE folder (VS Code's folder dialog); `dir` undefined: the dialog was closed. */
  'sae/choose': { params: Record<string, never>; result: { dir?: string } };
  /**
   * The SAE's features on the shown analysis, at `layer` (default: the folder's last; the panel keeps the layer it
   * shows and asks for it); null when no SAE folder is chosen.
   */
  'sae/read': { params: { layer?: number }; result: SaeFeatureReading | null };
  /** The card of one SAE feature on the shown analysis. */
  'sae/card': { params: { layer: number; index: number }; result: FeatureCard };
  /** Opens Steering with the feature's decoder row, added at the SAE's hook. */
  'sae/steer': { params: { layer: number; index: number }; result: void };
  /** Why a head attends from `query` to `key` on the shown analysis: its score split into query × key sources. */
  'qk/attribute': { params: { layer: number; head: number; query: number; key: number }; result: QkView };
};

export type ActivationsEvent =
  /** Analysis job `requestId` began; the panel keeps the previous result visible, greyed, until it lands. */
  | { type: 'analysis/started'; requestId: number; preview: string; file?: string }
  /** The result of job `requestId`. */
  | { type: 'analysis/result'; requestId: number; analysis: Analysis; file?: string }
  /** The job failed; `message` names the file/hook and the problem. */
  | { type: 'analysis/error'; requestId: number; message: string }
  /** The job was cancelled (by the user or by a newer one). */
  | { type: 'analysis/cancelled'; requestId: number }
  /** Two analyses side by side (A = the earlier, B = the newer selection). */
  | { type: 'compare/result'; a: Analysis; b: Analysis; layers: LayerComparison[]; fileA?: string; fileB?: string };

export type ActivationsNotification =
  /** The webview's script is up and can take messages (the host then replays the last state). */
  | { type: 'ready' }
  /** Select the token's text in the editor it came from. */
  | { type: 'token/reveal'; start: number; end: number }
  /** The result of job `requestId` is drawn (the host logs the time from the command to this point). */
  | { type: 'analysis/rendered'; requestId: number }
  /** Re-run the analysis of the shown text. */
  | { type: 'analysis/rerun' }
  /** Colour the analysed tokens in the editor by a measure at a layer (or clear it). */
  | { type: 'heat/show'; measure: HeatMeasure | 'mlp_active' | 'target_prob'; layer: number }
  | { type: 'heat/clear' };

export type ToActivations = HostMessage<ActivationsEvent>;

/** Bumped when `ActivationsState` changes shape: a panel restored with an older state starts empty. */
export const ACTIVATIONS_STATE_VERSION = 3;

/** State the panel persists through `setState` so a restored panel shows its last analysis at once. */
export interface ActivationsState {
  analysis?: Analysis;
  file?: string;
  position?: number;
  measure?: HeatMeasure;
  /** Heatmap colour scale: each row from its own min to max (default), or one scale for the whole map. */
  heatScale?: 'row' | 'global';
  tab?: ActivationsTab;
  attention?: { layer: number; head: number; metric: 'entropy' | 'prevToken' | 'firstToken' | 'self'; cell?: { query: number; key: number } };
  spectralReadout?: number;
  corrupted?: string;
  /** A typed target token tracked through the lens at `position`. */
  customTarget?: LensTarget;
  dla?: DlaTabState;
  /** The lens cell read with Patchscopes, the target prompt as typed, and the reading shown (a new analysis clears it). */
  patchscope?: { readout: number; position: number; targetPrompt: string; targetLayer?: number; result?: PatchscopeResult };
  /** The Features tab: the SAE layer asked for and the feature whose card is open. */
  features?: { layer?: number; card?: { layer: number; index: number } };
}

/** The Logit attribution tab: the typed tokens and the attribution last shown. */
export interface DlaTabState {
  /** As typed ('' = the top prediction at the position / no contrast). */
  target: string;
  contrast: string;
  /** The last attribution and what it was asked for (a new analysis clears it). */
  shown?: { position: number; target: string; contrast: string; result: DlaResult };
}

export type ActivationsTab = 'overview' | 'attention' | 'layers' | 'patching' | 'dla' | 'features' | 'compare';

export type HeatMeasure = 'resid_norm' | 'update_norm' | 'drift_cos' | 'attn_norm' | 'mlp_norm';
