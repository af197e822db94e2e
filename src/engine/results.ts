/**
 * The engine's result types. Those that cross to the webviews are defined in src/protocol/results.ts (plain data,
 * no imports) and re-exported here; the ones below stay in the extension host (they hold the vectors' values).
 */
import type { SteerOp, SteerPointName } from '../protocol/results';

export * from '../protocol/results';

/** Where along the sequence a steering vector is added. */
export type SteerPositions = { kind: 'all' } | { kind: 'from'; pos: number } | { kind: 'set'; positions: number[] };
/** A direction in the residual stream with where it came from. */
export interface SteeringVector {
  /** [d_model] values, as stored (not normalised). */
  vector: Float32Array;
  /** Layer and point it was made for (a default; the user may add it elsewhere). */
  layer: number;
  point: SteerPointName;
  label: string;
  source: 'feature' | 'contrastive' | 'file';
  /** Free-form provenance: transcoder file and feature index, the pairs used, the model, the date… */
  provenance: Record<string, unknown>;
}

export interface SteeringSpec {
  vector: Float32Array;
  layer: number;
  point: SteerPointName;
  /** Multiplier of the vector; with `relative`, a multiple of the mean residual norm at that point (vector normalised). */
  strength: number;
  relative?: boolean;
  positions: SteerPositions;
  /**
   * What is done along the vector (default 'add'): 'ablate' removes the residual's component along it, 'set' makes
   * that component `value`, 'cap' lowers it to `value` where it is above (the vector's direction, unit length; strength
   * does not apply to them).
   */
  op?: SteerOp;
  /** The component's target for 'set' and 'cap', in the residual's units (its projection on the unit vector). */
  value?: number;
}

