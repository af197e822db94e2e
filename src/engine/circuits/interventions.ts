/**
 * Interventions on transcoder features: ablate (value 0) or clamp features at chosen positions, rerun the real model,
 * and put the graph's prediction next to the actual change of the logit targets.
 *
 * The real rerun replaces the intervened layer's MLP output by its transcoder reconstruction with the new
 * activations, i.e. adds (new − old activation) × W_dec[f] at blocks.{l}.hook_resid_post at that position (the MLP's
 * error term is kept as it was). Everything downstream — attention, LayerNorms, later MLPs — is recomputed for real.
 * A cross-layer transcoder's feature writes every MLP output from its layer on: (new − old) × W_dec[f, k] is added at
 * blocks.{l + k}.hook_resid_post for each k.
 */
import { ResidualError } from '../errors';
import type { SteerAdd } from '../model';
import { softmax } from '../numeric';
import type { Attributor } from './attribution';
import { hookName, type HookName } from '../hooks';
import { activeActivation, describeTarget, logitNode, type AttributionGraph } from './graph';
import { readDecoderInto } from './transcoders';

export interface FeatureIntervention {
  layer: number;
  pos: number;
  feature: number;
  /** New activation; 0 ablates. */
  value: number;
}

export interface LogitChange {
  /** Vocabulary id; vocab_size for a target that is not one token (see `label`). */
  id: number;
  /** A contrast's or a direction's words (describeTarget); absent for a token's logit. */
  label?: string;
  /** The target's value before and after: the logit, the logit difference, the direction's dot product. */
  baseLogit: number;
  newLogit: number;
  /** The token's probability before and after (null for a contrast or a direction). */
  baseProb: number | null;
  newProb: number | null;
  /** Actual change of the target (a logit minus the mean logit) — what the graph's edges predict. */
  actualDemeaned: number;
  /** Σ over intervened features of their direct edge × (new − old)/old. */
  predictedDirect: number;
  /**
   * Direct plus indirect paths through other active features, each responding linearly (slope 1, as ReLU, JumpReLU
   * and TopK are above threshold); errors and attention stay frozen.
   */
  predictedPaths: number;
}

export interface InterventionResult {
  logits: LogitChange[];
  /** Interventions on features that are not in the graph (inactive, or active but not kept): no prediction for them; the rerun includes them. */
  notInGraph: FeatureIntervention[];
}

export async function intervene(attributor: Attributor, g: AttributionGraph, interventions: FeatureIntervention[]): Promise<InterventionResult> {
  const model = attributor.model;
  const { dModel: D, vocabSize: V, nLayers: L } = model.config;
  const P = g.nPos;
  const N = g.N;
  const nodeOf = new Map<string, number>();
  for (let n = 0; n < g.nFeatures; n++) nodeOf.set(`${g.featLayer[n]}:${g.featPos[n]}:${g.featIndex[n]}`, n);
  const delta = new Float64Array(N); // Δ activation of feature nodes
  const notInGraph: FeatureIntervention[] = [];
  const adds = new Map<number, Float32Array>();
  for (const iv of interventions) {
    if (!(iv.layer >= 0 && iv.layer < L) || !(iv.pos >= 0 && iv.pos < P)) throw new ResidualError(`no layer ${iv.layer} / position ${iv.pos} in this graph`, 'intervention');
    const tc = attributor.transcoders.layers[iv.layer];
    if (!(iv.feature >= 0 && iv.feature < tc.dSae)) throw new ResidualError(`feature ${iv.feature} is outside 0..${tc.dSae - 1}`, tc.source);
    if (!Number.isFinite(iv.value)) throw new ResidualError('the new activation must be a finite number', 'intervention');
    const n = nodeOf.get(`${iv.layer}:${iv.pos}:${iv.feature}`);
    // A feature outside the kept graph may still be active: the rerun changes it from its real activation.
    const old = n === undefined ? activeActivation(g, iv.layer, iv.pos, iv.feature) : g.featAct[n];
    if (n === undefined) notInGraph.push(iv);
    else delta[n] = iv.value - old;
    for (let out = iv.layer; out < iv.layer + tc.outLayers; out++) {
      const row = readDecoderInto(tc, [iv.feature], out);
      let add = adds.get(out);
      if (!add) adds.set(out, (add = new Float32Array(P * D)));
      for (let d = 0; d < D; d++) add[iv.pos * D + d] += (iv.value - old) * row[d];
    }
  }
  const steer: SteerAdd[] = [...adds].map(([layer, add]) => ({ layer, point: 'hook_resid_post', add }));
  const target = g.target ?? { kind: 'top' };
  const targetHook = target.kind === 'direction' ? hookName(target.layer, target.hook) : undefined;
  const hooks: HookName[] = targetHook ? ['logits', targetHook] : ['logits'];
  const [base, after] = await Promise.all([
    model.run({ ids: g.ids, hooks, logitPositions: [P - 1] }),
    model.run({ ids: g.ids, hooks, steer, logitPositions: [P - 1] }),
  ]);
  const last = (r: typeof base) => r.activations.get('logits')!.data.subarray(0, V);
  const b = last(base);
  const a = last(after);
  const stats = (x: Float32Array) => {
    let mean = 0;
    for (const v of x) mean += v / V;
    return { probs: softmax(x), mean };
  };
  const sb = stats(b);
  const sa = stats(a);

  // Linear propagation through the graph: features in node order (layer-sorted), so sources come first.
  const paths = Float64Array.from(delta);
  for (let n = 0; n < g.nFeatures; n++) {
    if (delta[n] !== 0) continue;
    let s = 0;
    for (let src = 0; src < n; src++) if (paths[src] !== 0) s += (g.adjacency_NN[n * N + src] / g.featAct[src]) * paths[src];
    paths[n] = s;
  }
  const logits = g.logitIds.map((id, i): LogitChange => {
    const t = logitNode(g, i);
    let direct = 0;
    let viaPaths = 0;
    for (let s = 0; s < g.nFeatures; s++) {
      const perUnit = g.adjacency_NN[t * N + s] / g.featAct[s];
      if (delta[s] !== 0) direct += perUnit * delta[s];
      if (paths[s] !== 0) viaPaths += perUnit * paths[s];
    }
    const predicted = { predictedDirect: direct, predictedPaths: viaPaths };
    const label = describeTarget(target, (v) => model.tokenizer.tokenText(v));
    if (target.kind === 'contrast') {
      const diff = (x: Float32Array) => x[target.id] - x[target.contrastId];
      return { id, label, baseLogit: diff(b), newLogit: diff(a), baseProb: null, newProb: null, actualDemeaned: diff(a) - diff(b), ...predicted };
    }
    if (target.kind === 'direction') {
      const dot = (r: typeof base) => {
        const x = r.activations.get(targetHook!)!.data;
        let y = 0;
        for (let d = 0; d < D; d++) y += target.vector[d] * x[target.position * D + d];
        return y;
      };
      return { id, label, baseLogit: dot(base), newLogit: dot(after), baseProb: null, newProb: null, actualDemeaned: dot(after) - dot(base), ...predicted };
    }
    return {
      id,
      baseLogit: b[id],
      newLogit: a[id],
      baseProb: sb.probs[id],
      newProb: sa.probs[id],
      actualDemeaned: a[id] - sa.mean - (b[id] - sb.mean),
      ...predicted,
    };
  });
  return { logits, notInGraph };
}
