/**
 * Attribution graphs for per-layer transcoders, as circuit-tracer defines them.
 *
 * Replacement model: every MLP is replaced by its transcoder plus an error node per (layer, position) (error = real
 * hook_mlp_out − reconstruction); attention patterns and all LayerNorm scales are frozen at this prompt's values, so
 * every target is linear in the sources. Edge A[t, s] = the direct effect of source s on target t through the
 * residual stream and the frozen attention OV paths (MLPs are not on the path: their contributions are the feature
 * and error nodes). It is computed by propagating each target's direction backwards through the frozen attention
 * blocks (ONNX MatMuls, targets batched) and reading out the sources where they enter the residual stream.
 *
 * Cross-layer transcoders (CLT): a feature of layer l writes every later MLP output, so it is a column of the sources
 * of every layer from l on; its edge is the sum over them (accumulated per row, `acc` in `propagate`). Skip
 * transcoders add a linear path from resid_mid to the MLP output, which the backward sweep carries (backward.ts).
 *
 * Cost: a target at position q only has gradient at positions ≤ q, so targets are swept per position over exactly
 * q + 1 positions, joining the sweep at their own block (their first W_Oᵀ product is one row). A row costs about
 * 4·D²·(q + 1) FLOP per block below the target; rows are computed for the logits and, by default, the
 * `DEFAULT_MAX_FEATURE_NODES` most influential features (circuit-tracer's `max_feature_nodes`), which bounds the
 * cost whatever the number of active features.
 */
import { hookName, type HookName } from '../hooks';
import type { Model } from '../model';
import { ResidualError, throwIfCancelled, type CancelToken } from '../errors';
import type { SessionOptions } from '../runtime/session';
import { AttentionBackward, type SkipBackward } from './backward';
import { FeatureEncoder, type LayerActivations } from './features';
import { centerRows, constantForward, normFrozen, readFrozenWeights, skipBackward, type FrozenState, type FrozenWeights, type SkipWeights } from './frozen';
import { errorNode, logitNode, tokenNode, type AttributionGraph, type AttributionTarget, type GraphTarget } from './graph';
import { newSparseRow, pushSource, rowsInfluence, type SparseRow } from './prune';
import { ASSUMED_ACTIVE_PER_TOKEN, backwardWorkBytes, defaultBatchRows, estimateCircuit, planFeatureRows, type CircuitEstimate } from './estimate';
import { checkpointParams } from '../memory';
import { firstCountedPosition, fractionUnexplained, poorReconstruction, replacementError, tryOtherInputs, type Reconstruction } from './reconstruction';
import { extremes, softmax } from '../numeric';
import { RESID_POINTS, type ResidPoint } from '../../protocol/results';
import { readDecoderInto, readDecoderRows, readEncoderColumns, readFiniteVector, readRows, readSkip, writersOf, type TranscoderSet } from './transcoders';

export interface AttributionOptions {
  /** At most this many logit targets (default 10). */
  maxNLogits?: number;
  /** Take logits, most likely first, until their probabilities sum to this (default 0.95). */
  desiredLogitProb?: number;
  /** Rows (targets × positions) per backward batch (default 16384). */
  batchRows?: number;
  /**
   * Compute incoming edges for at most this many features (default `DEFAULT_MAX_FEATURE_NODES`; `Infinity` for
   * all). As circuit-tracer does (its `max_feature_nodes`), the logit rows come first, then features in order of
   * their current influence on the logits, in rounds of `featureBatch`. Every computed row is exact; features without
   * computed rows stay in the graph as sources (their outgoing edges are all there), their rows are zero (see
   * `rowComputed`).
   */
  maxFeatureNodes?: number;
  /** Features per selection round when `maxFeatureNodes` applies (default `DEFAULT_FEATURE_BATCH`). */
  featureBatch?: number;
  /**
   * Peak process memory (resident bytes) the graph may take, the model already loaded included. The feature-row
   * count is lowered until the plan fits (the graph then says so: `memoryLimited`, `influenceCovered`); a budget too
   * small for even the logit rows is refused with the numbers before the backward work starts.
   */
  maxMemoryBytes?: number;
  /** What the graph explains (default: the most likely next tokens, `maxNLogits` / `desiredLogitProb`). */
  target?: AttributionTarget;
  cancel?: CancelToken;
  progress?: (message: string, fraction: number) => void;
}

/**
 * Default feature-row budget. A row costs one backward sweep over the target's position prefix through every block
 * below it (two D×D products per position and block), so the graph's cost is bounded by this number, not by how many
 * features are active; 1024 keeps GPT-2 small with 12 × 24576-wide transcoders on 32 tokens under 10 s on 2 CPU
 * cores (bench/attribution.ts), where the full graph of ~12k features takes about a minute.
 */
export const DEFAULT_MAX_FEATURE_NODES = 1024;
/**
 * Encoder sessions (float32 copies of W_enc) are kept between prompts while the whole set is at most this size, and
 * created per layer and released after use above it, so a large set never sits in memory whole.
 */
export const KEEP_ENCODERS_BYTES = 256e6;
/** Features chosen per influence round (circuit-tracer's `batch_size` is 512). */
export const DEFAULT_FEATURE_BATCH = 512;

/** One direction row of `directionRows`: v · the residual at `blocks.layer.hook`, at `position`. */
export interface DirectionItem {
  vector: Float32Array;
  layer: number;
  hook: ResidPoint;
  position: number;
}

/** A source node of the replacement model: an active feature, an error node or a token (embedding + position). */
export type SourceNode =
  | { kind: 'feature'; layer: number; pos: number; index: number; act: number }
  | { kind: 'error'; layer: number; pos: number }
  | { kind: 'token'; pos: number };

export interface DirectionRows {
  /** Sources, numbered 0..nSources − 1 (features by layer, position and index; then errors; then tokens). */
  nSources: number;
  source(n: number): SourceNode;
  /** Per direction, in order: each source's contribution, the constant (bias terms), and v · the real residual. */
  rows: { values: Float64Array; constant: number; actual: number }[];
  active: LayerActivations[];
  timings_ms: Record<string, number>;
}

/**
 * A row to compute at position q: a feature's pre-activation (reads blocks.{level}.hook_resid_mid through ln2) or a
 * graph target. Targets read the residual before block `level` (`entry` pre: the logits read the final residual,
 * level L; a direction at hook_resid_post of layer l has level l + 1) or after its attention (`entry` mid).
 */
interface Target {
  level: number;
  entry: 'pre' | 'mid';
  /** A graph target (logit node), not a feature. */
  output: boolean;
  /** Node in the full numbering (every active feature). */
  row: number;
  q: number;
  /** Direction at the read point; features get it when their row is computed. */
  dir?: Float32Array;
}

/** Holds the sessions (encoders, attention backward) for one model + transcoder set; `attribute` per prompt. */
export class Attributor {
  readonly encoder: FeatureEncoder;
  readonly weights: FrozenWeights;
  private readonly backward: AttentionBackward;
  /** Per layer, a skip transcoder's W_skip (constant forward) and its backward path (joining targets). */
  private readonly skips: (SkipWeights | undefined)[];
  private readonly skipPaths: (SkipBackward | undefined)[];
  private unembedMean?: Float64Array;

  constructor(
    readonly model: Model,
    readonly transcoders: TranscoderSet,
    sessionOptions: SessionOptions = {},
  ) {
    if (transcoders.layers.length !== model.config.nLayers) {
      throw new ResidualError(`${transcoders.layers.length} transcoders for a ${model.config.nLayers}-layer model`, transcoders.dir);
    }
    const opts = { ...sessionOptions, providers: sessionOptions.providers ?? [model.provider] };
    this.encoder = new FeatureEncoder(transcoders, opts);
    this.weights = readFrozenWeights(model.checkpoint);
    this.skips = transcoders.layers.map((t) => (t.skip ? { wSkip_DD: readSkip(t), input: t.input } : undefined));
    this.skipPaths = this.skips.map((s, l) => s && skipBackward(this.weights, l, s));
    // The skip paths are part of the backward graphs, so their sessions are this set's own.
    const key = `${model.checkpoint.dir}|${model.config.name}${this.skips.some((x) => x) ? `|skip:${transcoders.dir}` : ''}`;
    this.backward = new AttentionBackward(this.weights, key, { ...opts, cpuMemArena: false }, this.skipPaths);
  }

  /** A set whose encoders are large (Gemma Scope: 26 × 151 MB as float32) is streamed: one layer's session at a time. */
  private get keepEncoders(): boolean {
    return this.transcoders.layers.reduce((s, t) => s + 4 * t.dIn * t.dSae, 0) <= KEEP_ENCODERS_BYTES;
  }

  /** Real forward with the hooks the graph needs, and the active features of every layer. */
  async features(ids: number[], cancel?: CancelToken, extraHooks: HookName[] = []) {
    const L = this.model.config.nLayers;
    const hooks: HookName[] = ['hook_embed', 'ln_final.hook_scale', 'logits'];
    // Learned position embeddings (GPT-2) are part of each token's source; rotary models have none.
    if (this.model.hooks.has('hook_pos_embed')) hooks.push('hook_pos_embed');
    for (let l = 0; l < L; l++) {
      hooks.push(
        hookName(l, 'attn.hook_pattern'),
        hookName(l, 'ln1.hook_scale'),
        hookName(l, 'ln2.hook_scale'),
        hookName(l, this.transcoders.layers[l].input),
        hookName(l, 'hook_mlp_out'),
      );
      // Gemma-2: the frozen scale of the norm after attention.
      if (this.model.hooks.has(hookName(l, 'ln1_post.hook_scale'))) hooks.push(hookName(l, 'ln1_post.hook_scale'));
    }
    // With a final soft-cap the logit targets are the logits before it, computed from the final residual.
    if (this.model.config.family?.finalSoftcap) hooks.push(hookName(L - 1, 'hook_resid_post'));
    for (const h of extraHooks) if (!hooks.includes(h)) hooks.push(h);
    // The graph's logit targets are at the last position only.
    const run = await this.model.run({ ids, hooks, logitPositions: [ids.length - 1], cancel });
    const act = (h: HookName) => run.activations.get(h)!.data;
    const P = ids.length;
    const layers: LayerActivations[] = [];
    for (let l = 0; l < L; l++) {
      throwIfCancelled(cancel);
      layers.push(await this.encoder.encode(l, act(hookName(l, this.transcoders.layers[l].input)), P));
      if (!this.keepEncoders) await this.encoder.release(l);
    }
    return { act, layers };
  }

  async attribute(ids: number[], opts: AttributionOptions = {}): Promise<AttributionGraph> {
    return (await this.compute(ids, opts)) as AttributionGraph;
  }

  /**
   * Exact rows of several direction targets (v · the residual at a hook and position) over every source of the
   * replacement model — each active feature, error and token — without feature rows or a graph: what QK attribution
   * needs (qk.ts). Row values plus the row's constant equal the real value of v · x (the errors make it exact).
   */
  async directionRows(ids: number[], directions: DirectionItem[], opts: { cancel?: CancelToken; batchRows?: number } = {}): Promise<DirectionRows> {
    if (directions.length === 0) throw new ResidualError('no directions to attribute', 'attribution');
    return (await this.compute(ids, { ...opts, maxFeatureNodes: 0, target: { kind: 'direction', name: 'directions', ...directions[0] } }, directions)) as DirectionRows;
  }

  private async compute(ids: number[], opts: AttributionOptions, directions?: DirectionItem[]): Promise<AttributionGraph | DirectionRows> {
    const t0 = performance.now();
    const timings_ms: Record<string, number> = {};
    const lap = (name: string, since: number) => (timings_ms[name] = performance.now() - since);
    const progress = opts.progress ?? (() => undefined);
    const cfg = this.model.config;
    const w = this.weights;
    const { D, L } = w;
    const P = ids.length;
    const V = cfg.vocabSize;

    const spec = checkTarget(opts.target ?? { kind: 'top' }, { D, L, P, V });
    // 1. Real forward + feature activations.
    progress('attribution: forward pass and transcoder features', 0);
    // Every direction row (one graph target, or the rows asked of directionRows), checked as a target is.
    const items: Extract<GraphTarget, { kind: 'direction' }>[] =
      directions?.map((d) => checkTarget({ kind: 'direction', name: 'directions', ...d }, { D, L, P, V }) as Extract<GraphTarget, { kind: 'direction' }>) ?? (spec.kind === 'direction' ? [spec] : []);
    const { act, layers } = await this.features(ids, opts.cancel, [...new Set(items.map((d) => hookName(d.layer, d.hook)))]);
    lap('forward_and_features', t0);
    const frozen: FrozenState = {
      P,
      pattern_LHQS: Array.from({ length: L }, (_, l) => act(hookName(l, 'attn.hook_pattern'))),
      ln1Scale_LP: Array.from({ length: L }, (_, l) => act(hookName(l, 'ln1.hook_scale'))),
      ln2Scale_LP: Array.from({ length: L }, (_, l) => act(hookName(l, 'ln2.hook_scale'))),
      lnfScale_P: act('ln_final.hook_scale'),
      postScale_LP: w.blocks[0].postW_D ? Array.from({ length: L }, (_, l) => act(hookName(l, 'ln1_post.hook_scale'))) : undefined,
    };

    // 2. Nodes of the full graph (every active feature). Rows are computed for the logits and the chosen features
    //    only; the graph returned keeps just those features (step 6), so nothing here is N × N.
    const featStart = [0];
    for (const la of layers) featStart.push(featStart[featStart.length - 1] + la.feature.length);
    const nActive = featStart[L];
    const logitsAll = act('logits').subarray(0, V);
    /**
     * The target nodes: vocabulary id (vocab_size when not one token), weight in the influence, and for a logit the
     * tokens whose unembedding rows make its direction (`plus` − `minus`; no `minus`: the mean over the vocabulary).
     */
    const targetNodes: { id: number; weight: number; plus?: number; minus?: number }[] =
      spec.kind === 'top'
        ? (() => {
            const { logitIds: picked, logitProbs: p } = pickLogits(logitsAll, opts.maxNLogits ?? 10, opts.desiredLogitProb ?? 0.95);
            return picked.map((id, i) => ({ id, weight: p[i], plus: id }));
          })()
        : spec.kind === 'token'
          ? [{ id: spec.id, weight: softmax(logitsAll)[spec.id], plus: spec.id }]
          : spec.kind === 'contrast'
            ? [{ id: V, weight: 1, plus: spec.id, minus: spec.contrastId }]
            : items.map(() => ({ id: V, weight: 1 }));
    const logitIds = targetNodes.map((t) => t.id);
    const logitProbs = Float32Array.from(targetNodes, (t) => t.weight);
    const logitValues = new Float32Array(targetNodes.length);
    const nLogits = logitIds.length;
    /** Where the target reads the residual stream (level and entry as in Target), and at which position. */
    const targetAt =
      spec.kind === 'direction'
        ? { level: spec.hook === 'hook_resid_post' ? spec.layer + 1 : spec.layer, entry: spec.hook === 'hook_resid_mid' ? ('mid' as const) : ('pre' as const), q: spec.position }
        : { level: L, entry: 'pre' as const, q: P - 1 };
    // Features that can reach the target: written below the level it reads, at or before its position.
    const eligible = (level: number, q: number) => level < targetAt.level && q <= targetAt.q;
    const geom = { nFeatures: nActive, nPos: P, nLayers: L };
    const N = nActive + L * P + P + nLogits;
    /** Sources are every node but the logits: a row holds one value per source. */
    const nSources = N - nLogits;
    const constAll = new Float64Array(N);
    const actualAll = new Float64Array(N);

    // 3. Source vectors per layer: U_l [P, D, K_l], column 0 = the error, then what each active feature writes into
    //    layer l's MLP output (act × its decoder row into l): layer l's features, or in a CLT those of layers 0..l.
    const t3 = performance.now();
    const set = this.transcoders;
    const crossLayer = set.kind === 'cross-layer';
    const U: Float32Array[] = [];
    const K: number[] = [];
    const bDec: Float32Array[] = [];
    const fvu: number[] = [];
    /** The node of each feature column (k ≥ 1) of U_l at each position (a CLT's come from several layers). */
    const columnNodes: Int32Array[][] = [];
    const counted = firstCountedPosition(this.model, ids);
    for (let l = 0; l < L; l++) {
      throwIfCancelled(opts.cancel);
      const tc = set.layers[l];
      const writers = writersOf(set, l);
      // What each writer's active features write into layer l ([n_w, D] each), read for this layer only.
      const into = writers.map((w) => readDecoderInto(set.layers[w], layers[w].feature, l));
      bDec.push(readFiniteVector(l, tc.bDec));
      const count = (p: number) => writers.reduce((n, w) => n + layers[w].start[p + 1] - layers[w].start[p], 1);
      let Kl = 1;
      for (let p = 0; p < P; p++) Kl = Math.max(Kl, count(p));
      const Ul = new Float32Array(P * D * Kl);
      const mlpOut = act(hookName(l, 'hook_mlp_out'));
      // error = real MLP output − everything the replacement writes there
      const err = replacementError(set, l, layers, into, mlpOut, tc.skip ? act(hookName(l, tc.input)) : undefined, P, this.skips[l]?.wSkip_DD);
      columnNodes.push(Array.from({ length: P }, (_, p) => new Int32Array(count(p) - 1)));
      for (let p = 0; p < P; p++) {
        let col = 1;
        writers.forEach((w, wi) => {
          const la = layers[w];
          for (let j = la.start[p]; j < la.start[p + 1]; j++, col++) {
            const a = la.act[j];
            const row = into[wi];
            for (let d = 0; d < D; d++) Ul[(p * D + d) * Kl + col] = a * row[j * D + d];
            columnNodes[l][p][col - 1] = featStart[w] + j;
          }
        });
        for (let d = 0; d < D; d++) Ul[(p * D + d) * Kl] = err[p * D + d];
      }
      fvu.push(fractionUnexplained(mlpOut, err, P, D, counted));
      U.push(Ul);
      K.push(Kl);
    }
    const embed = act('hook_embed');
    const Uemb = Float32Array.from(embed.subarray(0, P * D));
    if (this.model.hooks.has('hook_pos_embed')) {
      const posEmbed = act('hook_pos_embed');
      for (let i = 0; i < P * D; i++) Uemb[i] += posEmbed[i];
    }
    /** Node of column k at position s of the sources read out below block a (a = 0: embeddings). */
    const sourceNode = (a: number, s: number, k: number): number => {
      if (a === 0) return tokenNode(geom, s);
      return k === 0 ? errorNode(geom, a - 1, s) : columnNodes[a - 1][s][k - 1];
    };
    const sourceCount = (a: number, s: number): number => (a === 0 ? 1 : 1 + columnNodes[a - 1][s].length);
    // The set's input convention, checked on the data: a layer reconstructed poorly is encoded through the other inputs.
    // Only a graph reports it; direction rows (QK attribution) do not, so they skip the extra encoding.
    const reported = this.transcoders.layers.map((t) => t.reportedFvu ?? null);
    const replacement = crossLayer ? ('cross-layer transcoder' as const) : this.skips.some((x) => x) ? ('skip transcoders' as const) : undefined;
    let reconstruction: Reconstruction = { input: this.transcoders.layers[0].input, fvu, reported, skipped: counted, ...(replacement ? { replacement } : {}) };
    if (!directions && fvu.some((x, l) => poorReconstruction(x, reported[l] ?? undefined))) {
      progress('attribution: a transcoder reconstructs poorly; trying the other input hooks', 0);
      reconstruction = await tryOtherInputs(this.model, this.transcoders, this.encoder, ids, reconstruction, {
        cancel: opts.cancel,
        release: this.keepEncoders ? undefined : (l) => this.encoder.release(l),
        skips: this.skips.map((x) => x?.wSkip_DD),
      });
    }
    lap('sources', t3);

    // 4. Targets: every active feature (its direction is read when its row is computed) and the logits.
    const t4 = performance.now();
    const consts = await constantForward(w, frozen, bDec, (...a) => this.backward.gemm(...a), this.skips);
    const featureTargets: Target[] = [];
    let nEligible = 0;
    for (let l = 0; l < L; l++) {
      const la = layers[l];
      for (let p = 0; p < P; p++)
        for (let j = la.start[p]; j < la.start[p + 1]; j++) {
          featureTargets.push({ level: l, entry: 'mid', output: false, row: featStart[l] + j, q: p });
          if (eligible(l, p)) nEligible++;
        }
    }
    const logitTargets: Target[] = [];
    if (spec.kind === 'direction') {
      // v · x at the hook: the direction as given; its constant is v · the constant residual there.
      items.forEach((item, i) => {
        const level = item.hook === 'hook_resid_post' ? item.layer + 1 : item.layer;
        const entry = item.hook === 'hook_resid_mid' ? ('mid' as const) : ('pre' as const);
        const q = item.position;
        const row = logitNode(geom, i);
        const dir = Float32Array.from(item.vector);
        const constResid = entry === 'mid' ? consts.residMid_LPD[level] : level === L ? consts.final_PD : consts.residPre_LPD[level];
        const x = act(hookName(item.layer, item.hook));
        let c = 0;
        let real = 0;
        for (let d = 0; d < D; d++) {
          if (constResid) c += dir[d] * constResid[q * D + d];
          real += dir[d] * x[q * D + d];
        }
        constAll[row] = c;
        actualAll[row] = logitValues[i] = real;
        logitTargets.push({ level, entry, output: true, row, q, dir });
      });
    } else {
      const Ubar = this.meanUnembedding();
      const plusRows = readRows(w.unembed, targetNodes.map((t) => t.plus!));
      const minusRows = spec.kind === 'contrast' ? readRows(w.unembed, [spec.contrastId]) : undefined;
      let meanLogit = 0;
      for (let v = 0; v < V; v++) meanLogit += logitsAll[v];
      meanLogit /= V;
      const sf = frozen.lnfScale_P[P - 1];
      // Gemma-2 soft-caps the logits (cap·tanh(z/cap)); the targets are z, the linear read-out of the final residual:
      // z[id] − mean z = (final norm of the residual) · (U[id] − mean U).
      const softcap = cfg.family?.finalSoftcap;
      let xf: Float64Array | undefined;
      if (softcap) {
        xf = new Float64Array(D);
        normFrozen(act(hookName(L - 1, 'hook_resid_post')), (P - 1) * D, D, sf, w.lnfW_D, w.lnfB_D, w.center, xf);
      }
      targetNodes.forEach((t, i) => {
        const row = logitNode(geom, i);
        // The demeaned unembedding direction; a contrast's difference (the mean cancels).
        const u = new Float64Array(D);
        for (let d = 0; d < D; d++) u[d] = plusRows[i * D + d] - (minusRows ? minusRows[d] : Ubar[d]);
        const dir = new Float32Array(D);
        let c = 0;
        for (let d = 0; d < D; d++) {
          dir[d] = w.lnfW_D[d] * u[d];
          c += w.lnfB_D[d] * u[d];
        }
        if (w.center) centerRows(dir, D);
        for (let d = 0; d < D; d++) {
          dir[d] /= sf;
          c += dir[d] * consts.final_PD[(P - 1) * D + d];
        }
        constAll[row] = c;
        const minus = t.minus === undefined ? meanLogit : logitsAll[t.minus];
        actualAll[row] = xf ? xf.reduce((acc, x, d) => acc + x * u[d], 0) : logitsAll[t.plus!] - minus;
        // The model's own output: the logit, or the difference of the two logits.
        logitValues[i] = t.minus === undefined ? logitsAll[t.plus!] : logitsAll[t.plus!] - logitsAll[t.minus];
        logitTargets.push({ level: L, entry: 'pre', output: true, row, q: P - 1, dir });
      });
    }
    /**
     * Reads the encoder columns of the feature targets in `targets` that have none yet (one read per layer) and
     * sets their directions at resid_mid, constants and real pre-activations.
     */
    const fillDirections = (targets: Target[]) => {
      const byLayer = new Map<number, Target[]>();
      for (const t of targets) {
        if (t.dir) continue;
        let g = byLayer.get(t.level);
        if (!g) byLayer.set(t.level, (g = []));
        g.push(t);
      }
      for (const [l, group] of byLayer) {
        const tc = this.transcoders.layers[l];
        const la = layers[l];
        const enc = readEncoderColumns(tc, group.map((t) => la.feature[t.row - featStart[l]])); // [n, D]
        const bEnc = this.bEnc(l);
        const x = act(hookName(l, tc.input));
        const s2 = frozen.ln2Scale_LP[l];
        const rm = consts.residMid_LPD[l];
        group.forEach((t, i) => {
          const p = t.q;
          const f = la.feature[t.row - featStart[l]];
          const col = enc.subarray(i * D, (i + 1) * D);
          const dir = Float32Array.from(col);
          let real = bEnc[f];
          for (let d = 0; d < D; d++) real += x[p * D + d] * col[d];
          // Through the frozen ln2 back to resid_mid: its gain (mlp.hook_in reads after it), the centering
          // (LayerNorm only) and the frozen scale.
          if (tc.input !== 'hook_resid_mid') {
            if (tc.input === 'mlp.hook_in') for (let d = 0; d < D; d++) dir[d] *= w.blocks[l].ln2W_D[d];
            if (w.center) centerRows(dir, D);
            for (let d = 0; d < D; d++) dir[d] /= s2[p];
          }
          let c = bEnc[f];
          // mlp.hook_in includes ln2's bias: a constant input to the encoder.
          if (tc.input === 'mlp.hook_in') for (let d = 0; d < D; d++) c += col[d] * w.blocks[l].ln2B_D[d];
          for (let d = 0; d < D; d++) c += dir[d] * rm[p * D + d];
          constAll[t.row] = c;
          actualAll[t.row] = real;
          t.dir = dir;
        });
      }
    };
    lap('targets', t4);

    /** The highest block a target's gradient passes (the logits read the final residual, past block L−1's MLP). */
    const topBlock = (t: Target) => (t.entry === 'pre' ? t.level - 1 : t.level);
    /** The sources entering the residual below block a (a = 0: the embeddings), and their column count. */
    const sourcesBelow = (a: number) => (a === 0 ? Uemb : U[a - 1]);
    const columnsBelow = (a: number) => (a === 0 ? 1 : K[a - 1]);
    /**
     * Whether a feature of layer l at position p reaches target t: below it, at or before its position. A row before
     * block `level` (entry pre) reads layer level − 1's sources at its own position only (the attention of block
     * `level` is above it).
     */
    const reaches = (t: Target, l: number, p: number) => p <= t.q && (t.entry === 'mid' ? l < t.level : l < t.level - 1 || (l === t.level - 1 && p === t.q));
    /** Sources a row can have: one error or token per position ≤ its own and block passed, and every feature reaching it. */
    const rowCapacity = (t: Target) => {
      let n = (t.entry === 'pre' ? 1 : 0) + (topBlock(t) + 1) * (t.q + 1);
      for (let l = 0; l < t.level; l++) n += t.entry === 'mid' || l < t.level - 1 ? layers[l].start[t.q + 1] : layers[l].start[t.q + 1] - layers[l].start[t.q];
      return n;
    };
    // A CLT's feature is a column below several blocks: its values are summed per row (`acc`) over features at
    // positions ≤ q, numbered position by position ("slots"), and pushed once when the row is done.
    const slotBase = new Int32Array(P + 1);
    const nodeOfSlot = new Int32Array(crossLayer ? nActive : 0);
    const slotOf = new Int32Array(crossLayer ? nActive : 0);
    if (crossLayer) {
      let c = 0;
      for (let p = 0; p < P; p++) {
        for (let l = 0; l < L; l++)
          for (let j = layers[l].start[p]; j < layers[l].start[p + 1]; j++, c++) {
            nodeOfSlot[c] = featStart[l] + j;
            slotOf[featStart[l] + j] = c;
          }
        slotBase[p + 1] = c;
      }
    }
    // 5. The plan: how many feature rows, and rows per backward batch, within the memory budget.
    const batchRows = opts.batchRows ?? defaultBatchRows(D, w.X);
    const plan = planFeatureRows({
      nActive: nEligible,
      nSources,
      nLogits,
      errorsAndTokens: L * P + P,
      requested: Math.min(opts.maxFeatureNodes ?? DEFAULT_MAX_FEATURE_NODES, nEligible),
      // A CLT's rows also sum their features' values (8 bytes each, about the widest layer's columns per position).
      workBytes: backwardWorkBytes(batchRows, D, w.X, Math.max(...K)) + (crossLayer ? 8 * batchRows * Math.max(...K) : 0),
      budgetBytes: opts.maxMemoryBytes,
      usedBytes: process.memoryUsage().rss,
      // Directions (float32, D each) exist for the features of one propagate call: a round, or every feature at once.
      directionBytes: (F) => 4 * D * (F >= nEligible ? F : Math.min(F, opts.featureBatch ?? DEFAULT_FEATURE_BATCH)),
      rowBytesDescending:
        opts.maxMemoryBytes === undefined
          ? undefined
          : Float64Array.from(
              featureTargets.filter((t) => eligible(t.level, t.q)),
              (t) => 8 * rowCapacity(t),
            )
              .sort()
              .reverse(),
    });
    const maxFeatures = plan.featureRows;
    const keptNodes = maxFeatures + L * P + P + nLogits;
    // The kept graph is one dense float32 array; refused here, before the backward work, when it cannot be one.
    if (keptNodes * keptNodes >= 2 ** 32) {
      throw new ResidualError(`a graph of ${keptNodes} nodes is too large for a dense adjacency matrix; lower the feature rows (maxFeatureNodes, --max-feature-nodes) or shorten the prompt`, 'attribution');
    }

    // 6. Backward propagation, one level at a time; each batch walks down every block below its level.
    const t5 = performance.now();
    const invScale1 = frozen.ln1Scale_LP.map((s) => s.map((x) => 1 / x));
    const invScale2 = frozen.ln2Scale_LP.map((s) => s.map((x) => 1 / x));
    const invPost = frozen.postScale_LP?.map((s) => s.map((x) => 1 / x));
    const crops = new Map<string, Float32Array>();
    /** Computed rows (full numbering → its sources and values), in the order computed. */
    const rows = new Map<number, SparseRow>();
    const sharedCols = new Map<string, Int32Array>();
    const cropPattern = (a: number, S: number): Float32Array => {
      const key = `${a}:${S}`;
      let c = crops.get(key);
      if (!c) {
        const H = w.H;
        const A = frozen.pattern_LHQS[a];
        c = new Float32Array(H * S * S);
        for (let h = 0; h < H; h++) for (let q = 0; q < S; q++) c.set(A.subarray((h * P + q) * P, (h * P + q) * P + S), (h * S + q) * S);
        crops.set(key, c);
      }
      return c;
    };
    const totalTargets = maxFeatures + nLogits;
    let rowsDone = 0;
    let tInfluence = 0;
    let tSteps = 0;
    const tBackward = performance.now();
    /**
     * Rows of `targets`, in sweeps per target position q: a target at q only has gradient at positions ≤ q, so a
     * sweep works on exactly S = q + 1 positions (no padding). Within a sweep, targets join at their own block on the
     * way down, so every block is one batched step for all targets at q that pass it.
     */
    const propagate = async (targets: Target[]) => {
      fillDirections(targets);
      const byQ = new Map<number, Target[]>();
      for (const t of targets) {
        const key = `${topBlock(t)}:${t.entry}:${t.q}`;
        let cols = sharedCols.get(key);
        if (!cols) sharedCols.set(key, (cols = new Int32Array(rowCapacity(t))));
        rows.set(t.row, newSparseRow(cols));
        let g = byQ.get(t.q);
        if (!g) byQ.set(t.q, (g = []));
        g.push(t);
      }
      for (const q of [...byQ.keys()].sort((x, y) => y - x)) {
        const S = q + 1;
        const group = byQ.get(q)!.sort((x, y) => topBlock(y) - topBlock(x));
        const perChunk = Math.max(1, Math.floor(batchRows / S));
        const nSlots = slotBase[S];
        for (let c0 = 0; c0 < group.length; c0 += perChunk) {
          const chunk = group.slice(c0, c0 + perChunk);
          const chunkRows = chunk.map((t) => rows.get(t.row)!);
          const acc = crossLayer ? new Float64Array(chunk.length * nSlots) : undefined;
          /** Source `node`'s value `v` in row i of the chunk: pushed, or for a CLT's feature summed in `acc`. */
          const put = (i: number, node: number, v: number) => {
            if (acc && node < nActive) acc[i * nSlots + slotOf[node]] += v;
            else pushSource(chunkRows[i], node, v);
          };
          chunk.forEach((t, i) => {
            if (t.entry !== 'pre') return;
            // A target before block `level` (the logits: the final residual) reads the sources below it directly.
            const Ua = sourcesBelow(t.level);
            const Ka = columnsBelow(t.level);
            for (let k = 0; k < sourceCount(t.level, t.q); k++) {
              let e = 0;
              for (let d = 0; d < D; d++) e += t.dir![d] * Ua[(t.q * D + d) * Ka + k];
              put(i, sourceNode(t.level, t.q, k), e);
            }
          });
          let G: Float32Array | undefined;
          let T = 0;
          let joined = 0;
          for (let a = topBlock(chunk[0]); a >= 0; a--) {
            throwIfCancelled(opts.cancel);
            let j1 = joined;
            while (j1 < chunk.length && topBlock(chunk[j1]) === a) j1++;
            // Targets joining at this block enter as one direction row each (all at q = S − 1): at its resid_mid, so
            // one read after the MLP (entry pre) first goes back through a skip transcoder's path of layer a.
            const Nj = new Float32Array((j1 - joined) * D);
            for (let i = joined; i < j1; i++) {
              const t = chunk[i];
              const skip = t.entry === 'pre' ? this.skipPaths[a] : undefined;
              Nj.set(skip ? throughSkip(t.dir!, skip, skip.scaled ? 1 / frozen.ln2Scale_LP[a][q] : 1, D) : t.dir!, (i - joined) * D);
            }
            const Ua = sourcesBelow(a);
            const Ka = columnsBelow(a);
            const ts = performance.now();
            // (ONNX Runtime's batched MatMul refuses an empty batch: a sweep starts with one all-zero gradient.)
            const pad = T === 0 ? 1 : 0;
            const below = a > 0 && this.skipPaths[a - 1]?.scaled ? invScale2[a - 1].subarray(0, S) : undefined;
            const { R_STK, Gnext_TSD } = await this.backward.step(a, G ?? new Float32Array(S * D), T + pad, S, cropPattern(a, S), invScale1[a].subarray(0, S), Ua.subarray(0, S * D * Ka), Ka, Nj, j1 - joined, invPost?.[a].subarray(0, S), below);
            T = joined = j1;
            tSteps += performance.now() - ts;
            const Tp = T + pad;
            for (let s = 0; s < S; s++) {
              // Column k of U is the error (k = 0, or the token for a = 0), then the position's features.
              const n = sourceCount(a, s);
              const first = sourceNode(a, s, 0);
              const nodes = a > 0 ? columnNodes[a - 1][s] : undefined;
              for (let i = 0; i < T; i++) {
                const row = chunkRows[i];
                const rOff = (s * Tp + i + pad) * Ka;
                pushSource(row, first, R_STK[rOff]);
                // As `put`, written out: this loop is the graph's hottest.
                if (acc) {
                  const base = i * nSlots;
                  for (let k = 1; k < n; k++) acc[base + slotOf[nodes![k - 1]]] += R_STK[rOff + k];
                } else for (let k = 1; k < n; k++) pushSource(row, nodes![k - 1], R_STK[rOff + k]);
              }
            }
            G = pad ? Gnext_TSD.subarray(S * D) : Gnext_TSD;
          }
          if (acc) {
            // Every feature reaching the row, once, in slot order (the same order for every row sharing its columns).
            chunk.forEach((t, i) => {
              for (let c = 0; c < nSlots; c++) {
                const { level, q } = featureTargets[nodeOfSlot[c]];
                if (reaches(t, level, q)) pushSource(chunkRows[i], nodeOfSlot[c], acc[i * nSlots + c]);
              }
            });
          }
          // Directions are only needed while a row is computed.
          for (const t of chunk) if (!t.output) t.dir = undefined;
          rowsDone += chunk.length;
          const done = rowsDone;
          const elapsed = (performance.now() - tBackward) / 1000;
          const left = done > 0 ? (elapsed / done) * (totalTargets - done) : 0;
          progress(`attribution: ${done} of ${totalTargets} rows, about ${Math.ceil(left)} s left`, done / totalTargets);
        }
      }
    };
    // circuit-tracer's order: logit rows, then the most influential features not yet expanded, round by round.
    await propagate(logitTargets);
    if (directions) {
      const source = (n: number): SourceNode => {
        if (n < nActive) {
          const { level: layer, q: pos } = featureTargets[n];
          const j = n - featStart[layer];
          return { kind: 'feature', layer, pos, index: layers[layer].feature[j], act: layers[layer].act[j] };
        }
        const m = n - nActive;
        return m < L * P ? { kind: 'error', layer: Math.floor(m / P), pos: m % P } : { kind: 'token', pos: m - L * P };
      };
      return {
        nSources,
        source,
        rows: logitTargets.map((t) => {
          const r = rows.get(t.row)!;
          const values = new Float64Array(nSources);
          for (let i = 0; i < r.n; i++) values[r.col[i]] += r.val[i];
          return { values, constant: constAll[t.row], actual: actualAll[t.row] };
        }),
        active: layers,
        timings_ms: { ...timings_ms, backward: performance.now() - t5, total: performance.now() - t0 },
      };
    }
    const weights_N = new Float64Array(N);
    logitProbs.forEach((p, i) => (weights_N[logitNode(geom, i)] = p));
    /** Influence on the logits of every node, estimated from the rows computed so far. */
    const estimateInfluence = () => {
      const ti = performance.now();
      const infl = rowsInfluence(N, rows, weights_N);
      tInfluence += performance.now() - ti;
      return infl;
    };
    const selected = new Uint8Array(nActive);
    let expanded = 0;
    if (maxFeatures >= nEligible) {
      featureTargets.forEach((t, i) => (selected[i] = eligible(t.level, t.q) ? 1 : 0));
      await propagate(featureTargets.filter((_, i) => selected[i]));
      expanded = nEligible;
    } else {
      while (expanded < maxFeatures) {
        const infl = estimateInfluence();
        const pick = Array.from({ length: nActive }, (_, i) => i)
          .filter((i) => !selected[i] && eligible(featureTargets[i].level, featureTargets[i].q))
          .sort((a, b) => infl[b] - infl[a])
          .slice(0, Math.min(opts.featureBatch ?? DEFAULT_FEATURE_BATCH, maxFeatures - expanded));
        for (const i of pick) selected[i] = 1;
        await propagate(pick.map((i) => featureTargets[i]));
        expanded += pick.length;
      }
    }
    // The share of the features' estimated influence that the kept features carry (1 when every feature is kept).
    let influenceCovered = 1;
    if (expanded < nEligible) {
      const infl = estimateInfluence();
      let all = 0;
      let kept = 0;
      for (let i = 0; i < nActive; i++) {
        if (!eligible(featureTargets[i].level, featureTargets[i].q)) continue;
        all += infl[i];
        if (selected[i]) kept += infl[i];
      }
      influenceCovered = all > 0 ? kept / all : 1;
    }
    lap('backward', t5);
    timings_ms.backward_influence = tInfluence;
    timings_ms.backward_steps = tSteps;

    // 7. The graph: kept features + errors + tokens + logits; every row written is exact.
    const keptAll: number[] = [];
    for (let i = 0; i < nActive; i++) if (selected[i]) keptAll.push(i);
    const nFeatures = keptAll.length;
    const Nk = nFeatures + L * P + P + nLogits;
    const shift = nFeatures - nActive; // errors, tokens and logits move down by the dropped features
    /** Full numbering → kept numbering (−1 for a dropped feature). */
    const keptOf = new Int32Array(nSources).fill(-1);
    keptAll.forEach((n, i) => (keptOf[n] = i));
    for (let n = nActive; n < nSources; n++) keptOf[n] = n + shift;
    const adjacency_NN = new Float32Array(Nk * Nk);
    const constant_N = new Float64Array(Nk);
    const actual_N = new Float64Array(Nk);
    const rowComputed = new Uint8Array(Nk);
    for (const [n, row] of rows) {
      const t = n < nActive ? keptOf[n] : n + shift;
      rowComputed[t] = 1;
      constant_N[t] = constAll[n];
      actual_N[t] = actualAll[n];
      const off = t * Nk;
      for (let i = 0; i < row.n; i++) {
        const k = keptOf[row.col[i]];
        if (k >= 0) adjacency_NN[off + k] = row.val[i];
      }
    }
    rows.clear();
    const featLayer = new Int32Array(nFeatures);
    const featPos = new Int32Array(nFeatures);
    const featIndex = new Int32Array(nFeatures);
    const featAct = new Float32Array(nFeatures);
    keptAll.forEach((n, i) => {
      const { level: l, q } = featureTargets[n];
      const la = layers[l];
      const j = n - featStart[l];
      featLayer[i] = l;
      featPos[i] = q;
      featIndex[i] = la.feature[j];
      featAct[i] = la.act[j];
    });
    timings_ms.total = performance.now() - t0;
    return {
      ids: [...ids],
      nLayers: L,
      nPos: P,
      dSae: this.transcoders.dSae,
      nFeatures,
      nActiveFeatures: nEligible,
      target: spec,
      targetPos: targetAt.q,
      reconstruction,
      influenceCovered,
      memoryLimited: plan.memoryLimited,
      settings: {
        maxNLogits: opts.maxNLogits ?? 10,
        desiredLogitProb: opts.desiredLogitProb ?? 0.95,
        maxFeatureNodes: Number.isFinite(opts.maxFeatureNodes ?? DEFAULT_MAX_FEATURE_NODES) ? (opts.maxFeatureNodes ?? DEFAULT_MAX_FEATURE_NODES) : null,
        featureBatch: opts.featureBatch ?? DEFAULT_FEATURE_BATCH,
      },
      active: layers,
      featLayer,
      featPos,
      featIndex,
      featAct,
      logitIds,
      logitProbs,
      logitValues,
      N: Nk,
      adjacency_NN,
      constant_N,
      actual_N,
      rowComputed,
      timings_ms,
    };
  }

  private readonly bEncCache = new Map<number, Float32Array>();
  /** b_enc of layer l (read once: it is small and every target reads it). */
  private bEnc(l: number): Float32Array {
    let b = this.bEncCache.get(l);
    if (!b) this.bEncCache.set(l, (b = readFiniteVector(l, this.transcoders.layers[l].bEnc)));
    return b;
  }

  /**
   * For each feature, the vocabulary id its decoder row pushes up most directly: argmax over v of W_dec[f] · W_U[v]
   * (the mean over the vocabulary does not change the argmax).
   */
  async topOutputTokens(features: { layer: number; index: number }[]): Promise<number[]> {
    const best = new Float64Array(features.length).fill(-Infinity);
    const arg = new Array<number>(features.length).fill(0);
    await this.decoderTimesUnembedding(features, (i, v, y) => {
      if (y > best[i]) (best[i] = y), (arg[i] = v);
    });
    return arg;
  }

  /** The k tokens one feature's decoder row pushes up and down most directly (W_dec[f] · W_U[v]), with the values. */
  async decoderLogits(layer: number, index: number, k = 10): Promise<{ top: [number, number][]; bottom: [number, number][] }> {
    const z = new Float32Array(this.weights.unembed.shape[0]);
    await this.decoderTimesUnembedding([{ layer, index }], (_, v, y) => (z[v] = y));
    return extremes(z, k);
  }

  /**
   * Calls `visit(i, v, W_dec[f_i] · W_U[v])` for every feature i and vocabulary id v. The unembedding is read in
   * chunks and multiplied in ONNX Runtime, so a few hundred features cost one pass over it.
   */
  private async decoderTimesUnembedding(features: { layer: number; index: number }[], visit: (i: number, v: number, y: number) => void): Promise<void> {
    const D = this.weights.D;
    const n = features.length;
    if (n === 0) return;
    const X = new Float32Array(n * D);
    const byLayer = new Map<number, number[]>();
    features.forEach((f, i) => {
      if (!this.transcoders.layers[f.layer] || !(f.index >= 0 && f.index < this.transcoders.layers[f.layer].dSae)) {
        throw new ResidualError(`no feature ${f.index} in layer ${f.layer}`, this.transcoders.dir);
      }
      let list = byLayer.get(f.layer);
      if (!list) byLayer.set(f.layer, (list = []));
      list.push(i);
    });
    for (const [l, idx] of byLayer) {
      const t = this.transcoders.layers[l];
      const rows = readDecoderRows(t, idx.map((i) => features[i].index));
      // A CLT feature's direct effect on the final residual: what it writes into every layer, summed.
      const K = t.outLayers;
      idx.forEach((i, j) => {
        for (let k = 0; k < K; k++) for (let d = 0; d < D; d++) X[i * D + d] += rows[(j * K + k) * D + d];
      });
    }
    const U = this.weights.unembed;
    const V = U.shape[0];
    const CHUNK = 8192;
    for (let v0 = 0; v0 < V; v0 += CHUNK) {
      const m = Math.min(CHUNK, V - v0);
      const rows = readRows(U, Array.from({ length: m }, (_, i) => v0 + i)); // [m, D]
      const Wt = new Float32Array(D * m);
      for (let v = 0; v < m; v++) for (let d = 0; d < D; d++) Wt[d * m + v] = rows[v * D + d];
      const Y = await this.backward.gemm(X, n, D, Wt, m, new Float32Array(m));
      for (let i = 0; i < n; i++) for (let v = 0; v < m; v++) visit(i, v0 + v, Y[i * m + v]);
    }
  }

  /** Mean over the vocabulary of the unembedding rows (for demeaned logit directions), computed once. */
  private meanUnembedding(): Float64Array {
    if (this.unembedMean) return this.unembedMean;
    const e = this.weights.unembed;
    const [V, D] = e.shape;
    const mean = new Float64Array(D);
    const chunk = 4096;
    for (let v0 = 0; v0 < V; v0 += chunk) {
      const rows = readRows(e, Array.from({ length: Math.min(chunk, V - v0) }, (_, i) => v0 + i));
      for (let i = 0; i < rows.length; i++) mean[i % D] += rows[i];
    }
    for (let d = 0; d < D; d++) mean[d] /= V;
    this.unembedMean = mean;
    return mean;
  }

  /**
   * What a graph of `tokens` tokens will cost on this machine (seconds, peak resident bytes), before any work. The
   * active-feature count is TopK's k per token and layer, else `ASSUMED_ACTIVE_PER_TOKEN`.
   */
  estimate(tokens: number, opts: Pick<AttributionOptions, 'maxFeatureNodes' | 'maxNLogits'> = {}): CircuitEstimate {
    const c = this.model.config;
    const t0 = this.transcoders.layers[0];
    return estimateCircuit({
      nLayers: c.nLayers,
      dModel: c.dModel,
      nHeads: c.nHeads,
      dAttn: this.weights.X,
      dMlp: c.dMlp,
      vocabSize: c.vocabSize,
      params: checkpointParams(this.model.checkpoint),
      tokens,
      dSae: this.transcoders.dSae,
      transcoderElemBytes: t0.wEnc.dtype === 'F32' ? 4 : 2,
      activePerToken: t0.activation.kind === 'topk' ? t0.activation.k : ASSUMED_ACTIVE_PER_TOKEN,
      encoderColumnsStrided: t0.encLayout === 'DF',
      encodersStreamed: !this.keepEncoders,
      unembedElemBytes: this.weights.unembed.dtype === 'F32' ? 4 : 2,
      maxFeatureNodes: opts.maxFeatureNodes ?? DEFAULT_MAX_FEATURE_NODES,
      nLogits: opts.maxNLogits ?? 10,
      baseBytes: process.memoryUsage().rss,
      backwardSessionsPending: !this.backward.prepared,
      crossLayer: this.transcoders.kind === 'cross-layer',
    });
  }

  async prepare(): Promise<void> {
    await this.backward.prepare();
  }

  async dispose(): Promise<void> {
    await this.encoder.dispose();
    await this.backward.dispose();
  }
}

/**
 * The target checked against the model and prompt (a ResidualError naming what is wrong); a direction's position
 * defaults to the last.
 */
function checkTarget(t: AttributionTarget, m: { D: number; L: number; P: number; V: number }): GraphTarget {
  const tokenOk = (id: number, what: string) => {
    if (!(Number.isInteger(id) && id >= 0 && id < m.V)) throw new ResidualError(`token id ${id} is outside the vocabulary (0..${m.V - 1})`, what);
  };
  switch (t.kind) {
    case 'top':
      return t;
    case 'token':
      tokenOk(t.id, 'target');
      return t;
    case 'contrast':
      tokenOk(t.id, 'target');
      tokenOk(t.contrastId, 'contrast');
      if (t.id === t.contrastId) throw new ResidualError('the contrast token is the target itself: the difference would be 0', 'contrast');
      return t;
    case 'direction': {
      if (t.vector.length !== m.D) throw new ResidualError(`the direction has ${t.vector.length} values but the model's d_model is ${m.D}`, t.name);
      const bad = t.vector.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) throw new ResidualError(`the direction holds a non-finite value at index ${bad}`, t.name, 'numeric');
      if (!(Number.isInteger(t.layer) && t.layer >= 0 && t.layer < m.L)) throw new ResidualError(`layer ${t.layer} does not exist (the model has layers 0..${m.L - 1})`, 'direction target');
      if (!RESID_POINTS.includes(t.hook)) throw new ResidualError(`hook ${t.hook} is not a residual point (${RESID_POINTS.join(', ')})`, 'direction target');
      const position = t.position ?? m.P - 1;
      if (!(Number.isInteger(position) && position >= 0 && position < m.P)) throw new ResidualError(`position ${position} does not exist: the prompt has ${m.P} tokens (0..${m.P - 1})`, 'direction target');
      return { ...t, vector: Float32Array.from(t.vector), position };
    }
  }
}

/** v at a layer's hook_resid_post taken back to its hook_resid_mid through a skip transcoder: v + (v · M) · inv. */
function throughSkip(v: Float32Array, skip: SkipBackward, inv: number, D: number): Float32Array {
  const out = Float32Array.from(v);
  for (let d = 0; d < D; d++) {
    const x = v[d] * inv;
    if (x === 0) continue;
    for (let e = 0; e < D; e++) out[e] += x * skip.M_DD[d * D + e];
  }
  return out;
}

/** Most likely tokens first until their probabilities reach `desired`, at most `max`. */
export function pickLogits(logits_V: Float32Array, max: number, desired: number): { logitIds: number[]; logitProbs: Float32Array } {
  const probs_V = softmax(logits_V);
  const order = Array.from(logits_V.keys()).sort((a, b) => logits_V[b] - logits_V[a]);
  const logitIds: number[] = [];
  const probs: number[] = [];
  let cum = 0;
  for (const id of order) {
    if (logitIds.length >= max || cum >= desired) break;
    const p = probs_V[id];
    logitIds.push(id);
    probs.push(p);
    cum += p;
  }
  return { logitIds, logitProbs: Float32Array.from(probs) };
}
