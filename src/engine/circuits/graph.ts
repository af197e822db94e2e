/**
 * The attribution graph as plain data, and its node numbering: what attribution.ts computes and pruning, the JSON
 * export, interventions and the panels read.
 */
import type { ResidPoint } from '../../protocol/results';
import type { LayerActivations } from './features';
import type { Reconstruction } from './reconstruction';

/**
 * What a graph explains (circuit-tracer's attribution targets). `top`: the most likely next tokens, each a logit node
 * weighted by its probability. The others are one target node of weight 1: one token's logit; the logit difference
 * `id` − `contrastId` (both demeaned, so the mean cancels); or a direction's dot product with the residual stream at
 * `blocks.{layer}.{hook}`, position `position`. A target that is not one vocabulary token has the virtual index
 * vocab_size in `logitIds`, as circuit-tracer numbers custom targets.
 */
export type GraphTarget =
  | { kind: 'top' }
  | { kind: 'token'; id: number }
  | { kind: 'contrast'; id: number; contrastId: number }
  /** `vector`: d_model values; `name`: where it came from (a file). */
  | { kind: 'direction'; name: string; vector: Float32Array; layer: number; hook: ResidPoint; position: number };

/** A graph target as asked for: a direction's position defaults to the last. */
export type AttributionTarget = Exclude<GraphTarget, { kind: 'direction' }> | (Omit<Extract<GraphTarget, { kind: 'direction' }>, 'position'> & { position?: number });

/**
 * The graph as plain data (circuit-tracer's `Graph`). It holds the features whose incoming edges were computed (all
 * active features when they fit `maxFeatureNodes` and the memory budget; else the most influential, chosen as
 * circuit-tracer does), every error and token node and the logit targets. Node order, which is also the row/column
 * order of `adjacency_NN` (rows = targets, columns = sources):
 *   [0, nFeatures)                      kept features, sorted by (layer, position, feature index)
 *   nFeatures + layer·P + pos           error nodes (layer-major)
 *   nFeatures + L·P + pos               token embeddings (token + position embedding)
 *   nFeatures + L·P + P + i             logit targets, most likely first
 */
export interface AttributionGraph {
  ids: number[];
  nLayers: number;
  nPos: number;
  dSae: number;
  nFeatures: number;
  /** Active features at this prompt (every layer and position); `nFeatures` of them are in the graph. */
  nActiveFeatures: number;
  /**
   * Share of the active features' influence on the logits (estimated from the computed rows) that the kept features
   * carry; 1 when every active feature is kept.
   */
  influenceCovered: number;
  /** True when the memory budget, not `maxFeatureNodes`, set how many feature rows were computed. */
  memoryLimited: boolean;
  /**
   * The settings the graph was made with (what circuit-tracer records as `generation_settings`): the limits asked
   * for, not the counts they gave (`maxFeatureNodes` null = every active feature).
   */
  settings?: { maxNLogits: number; desiredLogitProb: number; maxFeatureNodes: number | null; featureBatch: number };
  /** Every active feature of every layer (kept or not), for activations outside the kept graph (see activeActivation). */
  active?: LayerActivations[];
  featLayer: Int32Array;
  featPos: Int32Array;
  featIndex: Int32Array;
  /** Post-activation value of each feature (the source scale of its outgoing edges). */
  featAct: Float32Array;
  /** What the logit nodes are (absent: `top`, as graphs made before targets existed). */
  target?: GraphTarget;
  /** Each layer's reconstruction of its MLP on this prompt, and the input-convention check (reconstruction.ts). */
  reconstruction?: Reconstruction;
  /** Position of the logit nodes (the last, except for a direction target at another position). */
  targetPos?: number;
  /** Vocabulary id of each logit node; vocab_size for a target that is not one token (contrast, direction). */
  logitIds: number[];
  /** Each logit node's weight in the influence: its probability (`top`, `token`), else 1. */
  logitProbs: Float32Array;
  /**
   * The real value of each target: the logit (not demeaned); a contrast's logit difference; a direction's dot
   * product with the residual.
   */
  logitValues: Float32Array;
  N: number;
  adjacency_NN: Float32Array;
  /**
   * Target constant term: what the target reads when every source is zero (biases of LayerNorms, attention, the
   * transcoders' b_dec and b_enc; for logits the ln_final bias through the demeaned unembedding). 0 for non-targets.
   */
  constant_N: Float64Array;
  /** The target's value in the real model: a feature's pre-activation, a logit minus the mean logit. */
  actual_N: Float64Array;
  /** 1 where the node's incoming edges were computed (every feature and logit; errors and tokens are sources only). */
  rowComputed: Uint8Array;
  timings_ms: Record<string, number>;
}

export function errorNode(g: { nFeatures: number; nPos: number }, layer: number, pos: number): number {
  return g.nFeatures + layer * g.nPos + pos;
}
export function tokenNode(g: { nFeatures: number; nPos: number; nLayers: number }, pos: number): number {
  return g.nFeatures + g.nLayers * g.nPos + pos;
}
export function logitNode(g: { nFeatures: number; nPos: number; nLayers: number }, i: number): number {
  return g.nFeatures + g.nLayers * g.nPos + g.nPos + i;
}
/** Position of the graph's target nodes. */
export function targetPosition(g: AttributionGraph): number {
  return g.targetPos ?? g.nPos - 1;
}

/**
 * Words for a target: `logit " Paris"`, `logit " Paris" − logit " London"`, `steer.json · blocks.3.hook_resid_post[5]`.
 * `tokenText` gives a vocabulary token's text.
 */
export function describeTarget(t: GraphTarget, tokenText: (id: number) => string): string {
  const q = (id: number) => JSON.stringify(tokenText(id));
  switch (t.kind) {
    case 'top':
      return 'the most likely next tokens';
    case 'token':
      return `logit ${q(t.id)}`;
    case 'contrast':
      return `logit ${q(t.id)} − logit ${q(t.contrastId)}`;
    case 'direction':
      return `${t.name} · blocks.${t.layer}.${t.hook}[${t.position}]`;
  }
}

/** The activation of a feature at a position on the graph's prompt, kept in the graph or not (0 when inactive). */
export function activeActivation(g: AttributionGraph, layer: number, pos: number, feature: number): number {
  const la = g.active?.[layer];
  if (la) {
    // Features ascend within a position: binary search.
    let lo = la.start[pos];
    let hi = la.start[pos + 1];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (la.feature[mid] < feature) lo = mid + 1;
      else hi = mid;
    }
    return lo < la.start[pos + 1] && la.feature[lo] === feature ? la.act[lo] : 0;
  }
  for (let n = 0; n < g.nFeatures; n++) if (g.featLayer[n] === layer && g.featPos[n] === pos && g.featIndex[n] === feature) return g.featAct[n];
  return 0;
}

export type NodeKind = 'feature' | 'error' | 'token' | 'logit';
export function nodeKind(g: AttributionGraph, n: number): NodeKind {
  if (n < g.nFeatures) return 'feature';
  if (n < g.nFeatures + g.nLayers * g.nPos) return 'error';
  if (n < g.nFeatures + g.nLayers * g.nPos + g.nPos) return 'token';
  return 'logit';
}
