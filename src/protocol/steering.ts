/**
 * The Steering panel: the vector's values stay in the host; the panel sees what it is and sends settings.
 * Runs (effect, generation, sweep) share one cancellation scope, building a vector another: a new run cancels the
 * previous run only.
 */
import type { GenerationComparison, NextTokenEffect, SteerOp, SteerPointName, SweepResult } from './results';
import type { HostMessage } from './requests';

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
  /** `all`, `from:N`, `i,j,k`, or `generated` (only the tokens generation adds). */
  positions: string;
  /** What is done along the vector (absent: add). */
  op?: SteerOp;
  /** The component's target for set and cap. */
  value?: number;
}

export interface SteeringState {
  model?: { name: string; nLayers: number; dModel: number };
  prompt?: string;
  /** Set when residual.chat wraps the prompt as a user turn of the model's chat template (the file it is read from). */
  chatTemplate?: string;
  vector?: VectorInfo;
  transcoders?: string;
}

export interface GenerateRequest {
  settings: SteerSettings;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
}

export interface SweepRequest {
  settings: SteerSettings;
  layers: number[];
  strengths: number[];
  target: string;
  neutral: string;
}

export type SteeringRequests = {
  /** Takes the prompt from the current editor selection (else its line). */
  'steer/useSelection': { params: Record<string, never>; result: void };
  /** Building the current vector (the new state follows as an event). */
  'steer/vectorFromFeature': { params: { layer: number; index: number }; result: void };
  'steer/vectorFromPairs': { params: { layer: number; point: SteerPointName }; result: void };
  'steer/openVector': { params: Record<string, never>; result: void };
  'steer/saveVector': { params: Record<string, never>; result: void };
  /** Writes the vector as a llama.cpp control vector (GGUF) for the slot of (layer, point). */
  'steer/exportGguf': { params: { settings: SteerSettings }; result: void };
  /** Runs with the current vector and prompt (progress: sweep cells done). */
  'steer/effect': { params: { settings: SteerSettings }; result: { effect: NextTokenEffect; settings: SteerSettings } };
  'steer/generate': { params: GenerateRequest; result: { result: GenerationComparison; settings: SteerSettings } };
  'steer/sweep': { params: SweepRequest; result: SweepResult };
};

export type SteeringEvent = { type: 'steer/state'; state: SteeringState };

export type ToSteering = HostMessage<SteeringEvent>;

export const STEERING_STATE_VERSION = 1;
