/**
 * The attribution-graph JSON that circuit-tracer writes and its frontend and Neuronpedia read (reference/formats.md
 * §1): export from an AttributionGraph + PruneResult, and import of such files (any generator: node ids are opaque,
 * the kind comes from `feature_type`; old and new error ids and Neuronpedia's converter ids are all accepted).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResidualError } from '../errors';
import { acquireLock, checkInputFile, checkOutputFile, writeFileAtomic } from '../files';
import { isPlainObject } from '../checkpoint/safetensors';
import { l2 } from '../numeric';
import { describeTarget, errorNode, logitNode, targetPosition, tokenNode, type AttributionGraph, type GraphTarget } from './graph';
import type { PruneResult } from './prune';
import type { Reconstruction } from './reconstruction';

export interface GraphJsonNode {
  node_id: string;
  feature: number | null;
  layer: string | number;
  ctx_idx: number;
  feature_type: string;
  jsNodeId: string;
  clerp: string;
  influence?: number | null;
  activation?: number | null;
  token_prob?: number;
  is_target_logit?: boolean;
  run_idx?: number;
  reverse_ctx_idx?: number;
  [extra: string]: unknown;
}

export interface GraphJsonLink {
  source: string;
  target: string;
  weight: number;
}

export interface GraphJson {
  metadata: {
    slug: string;
    scan: string;
    prompt_tokens: string[];
    prompt: string;
    transcoder_list?: string[];
    node_threshold?: number | null;
    schema_version?: number | null;
    feature_details?: Record<string, string>;
    [extra: string]: unknown;
  };
  qParams: Record<string, unknown>;
  nodes: GraphJsonNode[];
  links: GraphJsonLink[];
  [extra: string]: unknown;
}

/** Cantor pairing of (layer, feature index), as schema_version 1 stores `feature`. */
export function cantor(x: number, y: number): number {
  return ((x + y) * (x + y + 1)) / 2 + y;
}

export function cantorUnpair(z: number): [number, number] {
  const w = Math.floor((Math.sqrt(8 * z + 1) - 1) / 2);
  const t = (w * (w + 1)) / 2;
  const y = z - t;
  return [w - y, y];
}

export interface ExportOptions {
  slug: string;
  scan: string;
  /** Decoded prompt tokens, one per position. */
  promptTokens: string[];
  prompt: string;
  /** Text of each logit target's token (by vocabulary id). */
  tokenText: (id: number) => string;
  nodeThreshold: number;
  edgeThreshold: number;
  transcoderList?: string[];
  featureDetails?: Record<string, string>;
  /** A feature's label, written as its nodes' `clerp` (the field the viewers show). */
  featureLabel?: (layer: number, index: number) => string | undefined;
  /** Extra `info` fields (description, creator…); `generator` and `create_time_ms` are filled in. */
  info?: Record<string, unknown>;
}

/**
 * A token as circuit-tracer's viewer can show it: a newline, tab or carriage return is drawn as ⏎, → or ↵ (the viewer
 * shows the raw characters as blanks; circuit-tracer wrote its files with these glyphs until 2025-08 and its newer
 * viewer maps prompt tokens the same way), any other control character as its Unicode control picture (␀ … ␟, ␡).
 */
export function viewerToken(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => {
    if (c === '\n') return '⏎';
    if (c === '\t') return '→';
    if (c === '\r') return '↵';
    const code = c.charCodeAt(0);
    return code === 0x7f ? '␡' : String.fromCharCode(0x2400 + code);
  });
}

/** `scan` as Neuronpedia accepts it ([a-zA-Z0-9_.-]; circuit-tracer's `owner/name//subfolder` ids lose their slashes). */
export function scanSlug(id: string): string {
  return id.replace(/[^a-zA-Z0-9_.-]+/g, '-').replace(/^-+|-+$/g, '') || 'transcoders';
}

/** Builds the JSON object (write it with JSON.stringify). Nodes: kept nodes with a kept edge, plus all tokens and logits. */
export function toGraphJson(g: AttributionGraph, pr: PruneResult, o: ExportOptions): GraphJson {
  const { N, nLayers: L, nPos: P } = g;
  if (o.promptTokens.length !== P) throw new ResidualError(`${o.promptTokens.length} prompt tokens for a graph of ${P} positions`, 'graph export');
  if (!/^[a-zA-Z0-9_.-]+$/.test(o.slug)) throw new ResidualError(`slug "${o.slug}" may only contain letters, digits, _ . -`, 'graph export');
  const touches = new Uint8Array(N);
  for (let t = 0; t < N; t++) {
    if (!pr.nodeMask[t]) continue;
    const off = t * N;
    for (let s = 0; s < N; s++) if (pr.edgeMask[off + s] && g.adjacency_NN[off + s] !== 0 && pr.nodeMask[s]) touches[t] = touches[s] = 1;
  }
  const ids: (string | undefined)[] = new Array(N);
  const nodes: GraphJsonNode[] = [];
  const round = (x: number) => Number(x.toPrecision(7));
  for (let n = 0; n < g.nFeatures; n++) {
    if (!pr.nodeMask[n] || !touches[n]) continue;
    const [l, f, p] = [g.featLayer[n], g.featIndex[n], g.featPos[n]];
    ids[n] = `${l}_${f}_${p}`;
    nodes.push(node(ids[n]!, cantor(l, f), String(l), p, 'cross layer transcoder', `${l}_${f}-0`, o.featureLabel?.(l, f) ?? '', pr.cumulativeInfluence[n], round(g.featAct[n])));
  }
  for (let l = 0; l < L; l++)
    for (let p = 0; p < P; p++) {
      const n = errorNode(g, l, p);
      if (!pr.nodeMask[n] || !touches[n]) continue;
      ids[n] = `${l}_-1_${p}`;
      nodes.push(node(ids[n]!, -1, String(l), p, 'mlp reconstruction error', `${l}_-1-${p}`, '', pr.cumulativeInfluence[n], null));
    }
  for (let p = 0; p < P; p++) {
    const n = tokenNode(g, p);
    const tok = g.ids[p];
    ids[n] = `E_${tok}_${p}`;
    nodes.push(node(ids[n]!, p, 'E', p, 'embedding', `E_${tok}-${p}`, '', pr.cumulativeInfluence[n], null));
  }
  // Logits in ascending vocabulary order (Neuronpedia's scores assume it); the most likely one is the target logit.
  // A custom target (a logit difference, a direction) is one node with circuit-tracer's virtual index vocab_size.
  const logitOrder = g.logitIds.map((id, i) => ({ id, i })).sort((a, b) => a.id - b.id);
  const target = g.target ?? { kind: 'top' };
  const q = targetPosition(g);
  for (const { id, i } of logitOrder) {
    const n = logitNode(g, i);
    ids[n] = `${L + 1}_${id}_${q}`;
    const prob = g.logitProbs[i];
    const clerp = target.kind === 'top' || target.kind === 'token' ? `Output "${viewerToken(o.tokenText(id))}" (p=${prob.toFixed(3)})` : `Target: ${viewerToken(describeTarget(target, o.tokenText))}`;
    const x = node(ids[n]!, id, String(L + 1), q, 'logit', `L_${id}-${q}`, clerp, null, null);
    x.token_prob = round(prob);
    x.is_target_logit = i === 0;
    nodes.push(x);
  }
  const links: GraphJsonLink[] = [];
  for (let t = 0; t < N; t++) {
    if (!ids[t]) continue;
    const off = t * N;
    for (let s = 0; s < N; s++) {
      if (!pr.edgeMask[off + s]) continue;
      const wgt = g.adjacency_NN[off + s];
      if (wgt !== 0 && ids[s]) links.push({ source: ids[s]!, target: ids[t]!, weight: round(wgt) });
    }
  }
  return {
    metadata: {
      slug: o.slug,
      scan: scanSlug(o.scan),
      prompt_tokens: o.promptTokens.map(viewerToken),
      prompt: o.prompt,
      transcoder_list: o.transcoderList ?? [],
      node_threshold: o.nodeThreshold,
      schema_version: 1,
      feature_details: o.featureDetails ?? {},
      info: { ...o.info, transcoder_set: o.scan, generator: { name: 'residual', version: '1', url: '', email: '' }, create_time_ms: Date.now() },
      // The settings asked for (circuit-tracer's attribute() arguments), not the counts they gave; no
      // max_feature_nodes when every active feature was asked for (circuit-tracer's None).
      generation_settings: g.settings
        ? {
            max_n_logits: g.settings.maxNLogits,
            desired_logit_prob: g.settings.desiredLogitProb,
            batch_size: g.settings.featureBatch,
            ...(g.settings.maxFeatureNodes === null ? {} : { max_feature_nodes: g.settings.maxFeatureNodes }),
          }
        : {},
      pruning_settings: { node_threshold: o.nodeThreshold, edge_threshold: o.edgeThreshold },
      target: targetJson(target, g.logitValues[0], o.tokenText),
      // Each transcoder's fraction of the MLP output's variance unexplained on this prompt (a Residual field).
      ...(g.reconstruction ? { reconstruction: reconstructionJson(g.reconstruction) } : {}),
    },
    qParams: { pinnedIds: [], supernodes: [], linkType: 'both', clickedId: '', sg_pos: '' },
    nodes,
    links,
  };
}

/**
 * The graph's target as metadata records it (a Residual field; the viewers ignore it): `kind` and what it names
 * (tokens with their ids and text, a direction's file, hook, position and norm) and `value`, the target's real value
 * (the logit difference, the dot product; for `top`, the top logit).
 */
export function targetJson(t: GraphTarget, value: number, tokenText: (id: number) => string): Record<string, unknown> {
  const v = Number(value.toPrecision(7));
  switch (t.kind) {
    case 'top':
      return { kind: 'top' };
    case 'token':
      return { kind: 'token', id: t.id, token: tokenText(t.id), value: v };
    case 'contrast':
      return { kind: 'contrast', id: t.id, token: tokenText(t.id), contrast_id: t.contrastId, contrast: tokenText(t.contrastId), value: v };
    case 'direction':
      return { kind: 'direction', file: t.name, layer: t.layer, hook: `blocks.${t.layer}.${t.hook}`, position: t.position, norm: Number(l2(t.vector).toPrecision(7)), value: v };
  }
}

function reconstructionJson(r: Reconstruction): Record<string, unknown> {
  const round = (x: number[]) => x.map((v) => (Number.isFinite(v) ? Number(v.toPrecision(4)) : null));
  return {
    input_hook: r.input,
    ...(r.replacement ? { replacement: r.replacement } : {}),
    fvu: round(r.fvu),
    reported_fvu: r.reported,
    skipped_positions: r.skipped,
    ...(r.alternatives ? { alternatives: r.alternatives.map((a) => ({ input_hook: a.input, fvu: round(a.fvu) })) } : {}),
    ...(r.better ? { better_input_hook: r.better } : {}),
  };
}

function node(
  node_id: string,
  feature: number,
  layer: string,
  ctx_idx: number,
  feature_type: string,
  jsNodeId: string,
  clerp: string,
  influence: number | null,
  activation: number | null,
): GraphJsonNode {
  return { node_id, feature, layer, ctx_idx, feature_type, jsNodeId, clerp, influence, activation, token_prob: 0, is_target_logit: false, run_idx: 0, reverse_ctx_idx: 0 };
}

export type ImportedKind = 'feature' | 'error' | 'token' | 'logit' | 'other';

export interface ImportedNode {
  id: string;
  kind: ImportedKind;
  /** Layer of features and errors; −1 for embeddings; the written layer for logits; null if unknown. */
  layer: number | null;
  pos: number;
  /** Feature index within its layer (features), vocabulary id (logits), token id (embeddings, when known). */
  index: number | null;
  activation: number | null;
  influence: number | null;
  tokenProb: number | null;
  isTargetLogit: boolean;
  clerp: string;
  raw: GraphJsonNode;
}

export interface ImportedGraph {
  json: GraphJson;
  nodes: ImportedNode[];
  /** Links whose ends both exist (others are dropped, as Neuronpedia does). */
  links: { source: number; target: number; weight: number }[];
  droppedLinks: number;
}

/** Reads a graph file's object; throws a ResidualError naming `file` when required fields are missing. */
export function parseGraphJson(json: unknown, file = 'graph JSON'): ImportedGraph {
  const obj = json as GraphJson;
  if (!obj || typeof obj !== 'object') throw new ResidualError('not a JSON object', file);
  for (const k of ['metadata', 'qParams', 'nodes', 'links'] as const) if (!(k in obj)) throw new ResidualError(`missing top-level "${k}"`, file);
  if (!Array.isArray(obj.nodes) || !Array.isArray(obj.links)) throw new ResidualError('"nodes" and "links" must be arrays', file);
  const schema = obj.metadata?.schema_version ?? 0;
  const byId = new Map<string, number>();
  const nodes = obj.nodes.map((n, i): ImportedNode => {
    if (typeof n?.node_id !== 'string') throw new ResidualError(`nodes[${i}] has no string "node_id"`, file);
    if (byId.has(n.node_id)) throw new ResidualError(`node id "${n.node_id}" appears twice`, file);
    byId.set(n.node_id, i);
    const ft = String(n.feature_type ?? '');
    const kind: ImportedKind =
      ft === 'cross layer transcoder' || ft === 'unexplored node' ? 'feature' : ft === 'mlp reconstruction error' ? 'error' : ft === 'embedding' ? 'token' : ft === 'logit' ? 'logit' : 'other';
    const layerNum = n.layer === 'E' ? -1 : Number.isFinite(Number(n.layer)) ? Number(n.layer) : null;
    const parts = n.node_id.split('_');
    let index: number | null = null;
    let layer = layerNum;
    if (kind === 'feature') {
      if (schema >= 1 && typeof n.feature === 'number') {
        const [l, f] = cantorUnpair(n.feature);
        index = f;
        layer ??= l;
      } else if (parts.length === 3 && /^\d+$/.test(parts[1])) index = Number(parts[1]); // {layer}_{idx}_{pos}
      else if (/_cro_/.test(n.node_id)) index = Number(parts[2]); // Neuronpedia converter: {layer}_cro_{idx}_{pos}
      else index = typeof n.feature === 'number' ? n.feature : null;
    } else if (kind === 'logit') index = typeof n.feature === 'number' ? n.feature : Number(parts[1]);
    else if (kind === 'token') index = parts[0] === 'E' && /^\d+$/.test(parts[1] ?? '') ? Number(parts[1]) : null;
    else if (kind === 'error' && layer === null && parts.length === 3) layer = Number(parts[0] === '0' ? parts[1] : parts[0]);
    return {
      id: n.node_id,
      kind,
      layer,
      pos: Number(n.ctx_idx),
      index,
      activation: typeof n.activation === 'number' ? n.activation : null,
      influence: typeof n.influence === 'number' ? n.influence : null,
      tokenProb: typeof n.token_prob === 'number' ? n.token_prob : null,
      isTargetLogit: n.is_target_logit === true,
      clerp: typeof n.clerp === 'string' ? n.clerp : '',
      raw: n,
    };
  });
  const links: ImportedGraph['links'] = [];
  let droppedLinks = 0;
  for (const l of obj.links) {
    const s = byId.get(l.source);
    const t = byId.get(l.target);
    if (s === undefined || t === undefined || typeof l.weight !== 'number') droppedLinks++;
    else links.push({ source: s, target: t, weight: l.weight });
  }
  return { json: obj, nodes, links, droppedLinks };
}

/** Writes an imported graph back out (node ids, metadata and qParams as read; links that resolved). */
export function importedToJson(g: ImportedGraph): GraphJson {
  return {
    ...g.json,
    nodes: g.nodes.map((n) => ({ ...n.raw })),
    links: g.links.map((l) => ({ source: g.nodes[l.source].id, target: g.nodes[l.target].id, weight: l.weight })),
  };
}

// ---- A folder of graphs, as circuit-tracer's viewer opens it -------------------------------------------------------

/** circuit-tracer's index of a folder of graphs: `{"graphs": [<metadata of each graph>, …]}`. */
export const GRAPH_METADATA_FILE = 'graph-metadata.json';

export interface GraphMetadataIndex {
  graphs: Record<string, unknown>[];
  [extra: string]: unknown;
}

/** Reads a folder's graph-metadata.json (absent: an empty index); a file that is not one is refused by name. */
export function readGraphMetadata(file: string): GraphMetadataIndex {
  try {
    fs.lstatSync(file);
  } catch {
    return { graphs: [] };
  }
  checkInputFile(file, `${GRAPH_METADATA_FILE} (the viewer's index of this folder's graphs)`);
  let j: unknown;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ResidualError(`not valid JSON (${(e as Error).message}); it is circuit-tracer's index of the graphs in this folder: fix or remove it`, file);
  }
  if (!isPlainObject(j) || !Array.isArray(j.graphs) || !j.graphs.every(isPlainObject)) {
    throw new ResidualError('not a graph index: circuit-tracer\'s viewer expects {"graphs": [<graph metadata>, …]} here; fix or remove it', file);
  }
  return j as GraphMetadataIndex;
}

/**
 * The folder's index and the slug a graph written to `file` gets: circuit-tracer's viewer opens `<slug>.json`, so the
 * slug is the file's name (without `.json`). Checks both paths can be written, before any work is done.
 */
export function checkGraphOutput(file: string): { metadataFile: string; slug: string } {
  checkOutputFile(file, 'graph file');
  const abs = path.resolve(file);
  if (path.basename(abs) === GRAPH_METADATA_FILE) throw new ResidualError(`the graph cannot be written to ${GRAPH_METADATA_FILE}: that is the viewer's index of the folder`, file);
  const metadataFile = path.join(path.dirname(abs), GRAPH_METADATA_FILE);
  readGraphMetadata(metadataFile);
  checkOutputFile(metadataFile, GRAPH_METADATA_FILE);
  const name = path.basename(abs).replace(/\.json$/i, '');
  if (!/^[a-zA-Z0-9_.-]+$/.test(name)) {
    throw new ResidualError(`the file name "${path.basename(abs)}" cannot be a graph's slug (letters, digits, _ . - only); circuit-tracer's viewer opens <slug>.json`, file);
  }
  return { metadataFile, slug: name };
}

/**
 * Writes graph `json` to `file` (its slug set to the file's name) and adds it to graph-metadata.json beside it,
 * replacing an entry with the same slug, as circuit-tracer's `create_graph_files` does; so a folder of exported graphs
 * opens in its viewer as it is. Both files are written atomically under a lock on the index; a damaged index is
 * refused before anything is written. Returns the index's path and the slug.
 */
export function writeGraphFiles(file: string, json: GraphJson): { metadataFile: string; slug: string } {
  const { metadataFile, slug } = checkGraphOutput(file);
  const lock = acquireLock(metadataFile, `residual: writing graph ${slug}`);
  try {
    const index = readGraphMetadata(metadataFile);
    const out: GraphJson = { ...json, metadata: { ...json.metadata, slug } };
    writeFileAtomic(file, JSON.stringify(out), 'graph file');
    index.graphs = [...index.graphs.filter((g) => g.slug !== slug), out.metadata];
    writeFileAtomic(metadataFile, JSON.stringify(index, null, 2) + '\n', GRAPH_METADATA_FILE);
  } finally {
    lock.release();
  }
  return { metadataFile, slug };
}
