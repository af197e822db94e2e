/**
 * The Circuit panel: attribution graphs pruned in the host, feature cards, interventions, graph JSON export/import.
 * A trace is a job the host starts (Trace Circuit for Selection); the panel starts it past the cost gate and cancels it.
 */
import type { HostMessage } from './requests';
import type { ResidPoint } from './results';

/**
 * What a graph traces, as the panel asks for it: the most likely next tokens; one token's logit; a logit difference;
 * or a saved vector's dot product with the residual at `blocks.{layer}.{hook}` (position: the last when absent).
 */
export type CircuitTargetRequest =
  | { kind: 'top' }
  | { kind: 'token'; token: string }
  | { kind: 'contrast'; token: string; contrast: string }
  | { kind: 'direction'; file: string; layer: number; hook: ResidPoint; position?: number };

/** A saved vector picked for a direction target: its file, label and where it was made. */
export interface PickedVector {
  file: string;
  label: string;
  layer: number;
  hook: ResidPoint;
}

export type CircuitNodeKind = 'feature' | 'error' | 'token' | 'logit' | 'other';

export interface CircuitNode {
  id: string;
  kind: CircuitNodeKind;
  /** Feature/error layer; −1 for embeddings; nLayers for logits; a direction target: between rows (view.ts targetRow). */
  layer: number;
  pos: number;
  /** Feature index (features), vocabulary id (logits). */
  index: number | null;
  activation: number | null;
  /** Cumulative influence (smaller = more important), as circuit-tracer writes it. */
  influence: number | null;
  /** Features: the output token the decoder pushes up most (from the feature index, else W_dec·W_U), when known. */
  output?: string;
  /** Features: the label a person gave it, or an imported explanation (the graph JSON's `clerp`). */
  explanation?: string;
  prob: number | null;
  label: string;
}

export interface CircuitView {
  slug: string;
  /** The transcoder set's id (graph metadata `scan`): labels and their import belong to one set. */
  scan?: string;
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
  /**
   * Each transcoder's fraction of its MLP output's variance unexplained on this prompt (per layer), the set's own
   * report where it has one, the input hook read, and a warning when a layer is too poor (reconstruction.ts).
   */
  reconstruction?: { input: string; replacement?: string; fvu: (number | null)[]; reported: (number | null)[]; warning?: string };
  /** What the graph traces (a live graph): the request, in words, and the target's real value (not for `top`). */
  target?: { request: CircuitTargetRequest; text: string; value?: number };
  pinned?: string[];
  supernodes?: string[][];
}

export interface FeatureCard {
  layer: number;
  index: number;
  /** Its label (edited here or imported), if any. */
  label?: string;
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
  /** The token, or the target's words (a contrast, a direction). */
  token: string;
  /** Null for a target that is not one token's logit. */
  baseProb: number | null;
  newProb: number | null;
  /** The target's value before and after. */
  base: number;
  after: number;
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

export interface InterventionResult {
  description: string;
  rows: InterventionRow[];
  /** Intervened features the graph does not hold (their effect is measured, not predicted). */
  notInGraph: number;
}

export type CircuitRequests = {
  /** Re-prunes the live graph; the new view follows as an event. */
  'circuit/thresholds': { params: { node: number; edge: number }; result: void };
  'circuit/card': { params: { layer: number; index: number }; result: FeatureCard };
  'circuit/intervene': { params: { items: { layer: number; pos: number; feature: number; value: number }[]; description: string }; result: InterventionResult };
  /** Resolves false when the user dismissed the dialog. */
  'circuit/export': { params: { pinned: string[]; supernodes: string[][] }; result: boolean };
  'circuit/import': { params: Record<string, never>; result: boolean };
  'circuit/steer': { params: { layer: number; index: number }; result: void };
  /** Sets the target of the next traces and retraces the last selection with it (the reply comes once it is checked). */
  'circuit/target': { params: CircuitTargetRequest; result: void };
  /** Sets (or, empty, clears) the label of a feature; the view follows as an event. */
  'circuit/label': { params: { layer: number; index: number; label: string }; result: void };
  /** Imports labels from an explanation file (JSON, JSONL, Neuronpedia export); resolves how many, or null when dismissed. */
  'circuit/importLabels': { params: Record<string, never>; result: { count: number; file: string } | null };
  /** Opens a file dialog for a saved vector (in .residual/vectors); null when dismissed. */
  'circuit/pickVector': { params: Record<string, never>; result: PickedVector | null };
};

export type CircuitEvent =
  /** Trace job `jobId` is running (cancel it by that id). */
  | { type: 'circuit/busy'; jobId: number; what: string; fraction?: number }
  | { type: 'circuit/estimate'; jobId: number; estimate: CircuitEstimateView }
  | { type: 'circuit/view'; view: CircuitView }
  /** A trace or an import failed (or was cancelled); the previous view stays. */
  | { type: 'circuit/error'; message: string };

export type CircuitNotification =
  | { type: 'ready' }
  /** Go past the cost gate of trace job `jobId`. */
  | { type: 'circuit/start'; jobId: number };

export type ToCircuit = HostMessage<CircuitEvent>;

export const CIRCUIT_STATE_VERSION = 1;
