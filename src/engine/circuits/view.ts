/**
 * The Circuit panel's view of a graph, made in the engine: a live graph (pruned at the user's thresholds) goes through
 * the same graph JSON as an export, so what the panel shows is what a file would hold; an imported file is shown as
 * read. Feature nodes are labelled with the token their decoder pushes up most (W_dec · W_U).
 */
import type { CircuitTargetRequest, CircuitView } from '../../protocol';
import { ResidualError } from '../errors';
import type { Model } from '../model';
import type { Attributor } from './attribution';
import { describeTarget, type AttributionGraph, type GraphTarget } from './graph';
import { isPlainObject } from '../checkpoint/safetensors';
import { labelKey, type FeatureLabels } from './labels';
import { reconstructionWarning } from './reconstruction';
import { parseGraphJson, toGraphJson, type GraphJson, type ImportedGraph } from './graph-json';
import type { PruneResult } from './prune';

/** A graph computed here, with what the panel set on it. */
export interface LiveGraph {
  model: Model;
  attributor: Attributor;
  graph: AttributionGraph;
  prune: PruneResult;
  /** The text the graph is of (a chat prompt: the rendered turn). */
  prompt: string;
  /** The text that was selected: `prompt` before any chat template. */
  selection: string;
  /** The target as the panel asked for it (absent: the most likely tokens). */
  target?: CircuitTargetRequest;
  tokens: string[];
  nodeThreshold: number;
  edgeThreshold: number;
  ms: number;
  /** The memory budget the graph was computed under (MB). */
  budgetMB: number;
  /** Names this graph (export, and the panel's zoom and card belong to it) for as long as it is shown. */
  slug: string;
  /** Feature labels ("layer:index" → label), written into the graph's feature nodes. */
  labels?: FeatureLabels;
}

/** The graph JSON of a live graph at its current thresholds, with the panel's pins and supernodes. */
export function liveGraphJson(l: LiveGraph, pinned: string[] = [], supernodes: string[][] = []): GraphJson {
  const json = toGraphJson(l.graph, l.prune, {
    slug: l.slug,
    scan: l.attributor.transcoders.scan,
    promptTokens: l.tokens,
    prompt: l.prompt,
    tokenText: (id) => l.model.tokenizer.tokenText(id),
    featureLabel: (layer, index) => l.labels?.get(labelKey(layer, index)),
    nodeThreshold: l.nodeThreshold,
    edgeThreshold: l.edgeThreshold,
    info: { description: `Residual attribution graph (${l.model.config.name}, transcoders ${l.attributor.transcoders.dir})` },
  });
  json.qParams = { pinnedIds: pinned, supernodes, linkType: 'both', clickedId: '', sg_pos: '' };
  return json;
}

/** An imported file's JSON with the panel's pins and supernodes. */
export function importedGraphJson(g: ImportedGraph, pinned: string[] = [], supernodes: string[][] = []): GraphJson {
  return { ...g.json, qParams: { ...g.json.qParams, pinnedIds: pinned, supernodes } };
}

/** The view of a live graph (`live`) or an imported one. */
export function circuitView(source: { live: LiveGraph } | { imported: ImportedGraph }): CircuitView {
  const live = 'live' in source ? source.live : undefined;
  const g = live ? parseGraphJson(liveGraphJson(live)) : (source as { imported: ImportedGraph }).imported;
  const json = g.json;
  const L = live?.graph.nLayers ?? Math.max(0, ...g.nodes.filter((n) => n.kind === 'feature' || n.kind === 'error').map((n) => (n.layer ?? 0) + 1));
  const graph = live?.graph;
  // A live graph shows its tokens raw (the panel draws its own glyphs); the file has the viewer's (⏎ → ↵).
  const tokens = live ? live.tokens : json.metadata.prompt_tokens;
  // A token's logit with its raw text; a contrast or direction target (virtual index) as the file says it.
  const tokenTarget = ['top', 'token'].includes(live?.graph.target?.kind ?? 'top');
  const logitLabel = (n: ImportedGraph['nodes'][number]) =>
    live && tokenTarget && n.index !== null && n.tokenProb !== null ? `Output "${live.model.tokenizer.tokenText(n.index)}" (p=${n.tokenProb.toFixed(3)})` : n.clerp;
  return {
    slug: json.metadata.slug,
    ...(typeof json.metadata.scan === 'string' ? { scan: json.metadata.scan } : {}),
    prompt: json.metadata.prompt,
    tokens,
    nLayers: L,
    nodes: g.nodes.map((n) => ({
      id: n.id,
      kind: n.kind,
      layer: n.kind === 'token' ? -1 : n.kind === 'logit' ? targetRow(L, graph?.target) : (n.layer ?? 0),
      pos: n.pos,
      index: n.index,
      activation: n.activation,
      influence: n.influence,
      prob: n.tokenProb,
      explanation: n.kind === 'feature' && n.clerp ? n.clerp : undefined,
      label: n.kind === 'feature' ? `L${n.layer} #${n.index}` : n.kind === 'error' ? `err L${n.layer}` : (n.kind === 'logit' ? logitLabel(n) : n.clerp) || tokens[n.pos] || n.id,
    })),
    links: g.links.map((k) => ({ s: k.source, t: k.target, w: k.weight })),
    nodeThreshold: live?.nodeThreshold ?? Number(json.metadata.node_threshold ?? 0.8),
    edgeThreshold: live?.edgeThreshold ?? 0.98,
    live: !!live,
    scores: live ? { replacement: live.prune.replacementScore, completeness: live.prune.completenessScore } : undefined,
    counts: { activeFeatures: graph ? graph.nActiveFeatures : g.nodes.filter((n) => n.kind === 'feature').length, nodes: g.nodes.length, links: g.links.length },
    coverage:
      live && graph && graph.nFeatures < graph.nActiveFeatures
        ? { keptFeatures: graph.nFeatures, activeFeatures: graph.nActiveFeatures, influenceCovered: graph.influenceCovered, memoryLimited: graph.memoryLimited, budgetMB: live.budgetMB }
        : undefined,
    ms: live?.ms,
    reconstruction: reconstructionView(graph, json.metadata.reconstruction),
    target:
      live && graph
        ? {
            request: live.target ?? { kind: 'top' },
            text: describeTarget(graph.target ?? { kind: 'top' }, (id) => live.model.tokenizer.tokenText(id)),
            value: (graph.target?.kind ?? 'top') === 'top' ? undefined : graph.logitValues[0],
          }
        : undefined,
    pinned: (json.qParams.pinnedIds as string[] | undefined) ?? [],
    supernodes: (json.qParams.supernodes as string[][] | undefined) ?? [],
  };
}

/** The reconstruction line of a live graph, or as an imported file records it (a Residual field; absent elsewhere). */
function reconstructionView(graph: AttributionGraph | undefined, recorded: unknown): CircuitView['reconstruction'] {
  const r = graph?.reconstruction;
  if (r) return { input: r.input, replacement: r.replacement, fvu: r.fvu.map((x) => (Number.isFinite(x) ? x : null)), reported: r.reported, warning: reconstructionWarning(r) };
  if (!isPlainObject(recorded) || !Array.isArray(recorded.fvu)) return undefined;
  const nums = (x: unknown) => (Array.isArray(x) ? x.map((v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)) : []);
  const replacement = typeof recorded.replacement === 'string' ? recorded.replacement : undefined;
  return { input: String(recorded.input_hook ?? ''), ...(replacement ? { replacement } : {}), fvu: nums(recorded.fvu), reported: nums(recorded.reported_fvu) };
}

/**
 * The row a target node is drawn on: the logits on top (row L); a direction where it reads the residual, between
 * the rows of the features that write before it and after it (feature row l holds what block l's MLP writes).
 */
function targetRow(L: number, t: GraphTarget | undefined): number {
  if (t?.kind !== 'direction') return L;
  return t.hook === 'hook_resid_post' ? t.layer + 0.5 : t.hook === 'hook_resid_mid' ? t.layer - 0.25 : t.layer - 0.5;
}

/**
 * Sets `output` on the view's feature nodes: the token W_dec · W_U pushes up most (one pass over the unembedding for
 * the features not in `known`, which is updated: "layer:index" → token text).
 */
export async function labelFeatureOutputs(view: CircuitView, live: LiveGraph, known: Map<string, string>): Promise<void> {
  const missing: { layer: number; index: number }[] = [];
  const wanted = new Set<string>();
  for (const n of view.nodes) {
    if (n.kind !== 'feature' || n.index === null) continue;
    const key = `${n.layer}:${n.index}`;
    if (known.has(key) || wanted.has(key)) continue;
    wanted.add(key);
    missing.push({ layer: n.layer, index: n.index });
  }
  if (missing.length) {
    const ids = await live.attributor.topOutputTokens(missing);
    if (ids.length !== missing.length) throw new ResidualError(`${ids.length} output tokens for ${missing.length} features`, 'feature labels');
    missing.forEach((m, i) => known.set(`${m.layer}:${m.index}`, live.model.tokenizer.tokenDisplay(ids[i])));
  }
  for (const n of view.nodes) if (n.kind === 'feature' && n.index !== null) n.output = known.get(`${n.layer}:${n.index}`);
}
