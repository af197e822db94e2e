/**
 * Feature cards: what one transcoder feature does, as the Circuit panel shows it — its activation at every position
 * of the graph's prompt, the tokens its decoder row pushes up and down directly (W_dec · W_U), and, when the
 * transcoder has a feature index beside its config, its top activating contexts.
 *
 * ## Feature index (`feature_index.json`, written by tools/demo-model/feature_index.py)
 * Beside the config that describes the layer: in the SAELens subfolder with its cfg.json, or beside config.yaml.
 * ```
 * { "format": "residual-feature-index/1", "layer": l, "d_sae": F, ...,
 *   "features": [ { "id": i, "freq": …, "mean": …, "max": …,
 *                   "ctx": [[before, peak token, after, activation], …], "top": […], "bottom": […] }, … ] }
 * ```
 * Only live features are listed. A missing index is normal (the card has no contexts); an unreadable one, or one
 * made for another layer, is reported through `onWarning` and the card is made without it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FeatureCard } from '../../protocol';
import { isPlainObject } from '../checkpoint/safetensors';
import { ResidualError } from '../errors';
import { checkInputFile } from '../files';
import type { Tokenizer } from '../tokenizer';
import type { Attributor } from './attribution';
import { checkContained } from './contain';
import { activeActivation, type AttributionGraph } from './graph';
import type { Transcoder } from './transcoders';

export const FEATURE_INDEX_FILE = 'feature_index.json';

/** One feature of a feature index. */
export interface FeatureIndexEntry {
  id: number;
  /** Fraction of the scanned tokens where it is active. */
  freq?: number;
  mean?: number;
  max?: number;
  /** Strongest activating contexts: [text before, peak token, text after, activation]. */
  ctx: [string, string, string, number][];
  top?: [string, number][];
  bottom?: [string, number][];
}

/** A feature index as read: the layer it says it is for, and its entries by feature id. */
export interface FeatureIndexFile {
  layer?: number;
  features: Map<number, FeatureIndexEntry>;
}

/** Where the feature index of transcoder `t` is: beside the config file that described it. */
export function featureIndexPath(t: Pick<Transcoder, 'source'>): string {
  return path.join(path.dirname(t.source), FEATURE_INDEX_FILE);
}

/** Whether anything (a file, a dangling link) is at `p`. */
function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Reads a feature index; throws (a plain Error with the reason) when it is not one. */
export function readFeatureIndex(file: string): FeatureIndexFile {
  const j: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!isPlainObject(j)) throw new Error('not a JSON object');
  const list = j.features ?? [];
  if (!Array.isArray(list)) throw new Error('"features" is not a list');
  const features = new Map<number, FeatureIndexEntry>();
  list.forEach((e: unknown, i) => {
    if (!isPlainObject(e) || !Number.isInteger(e.id) || (e.id as number) < 0) throw new Error(`features[${i}] has no integer "id"`);
    const ctx = e.ctx ?? [];
    const isContext = (c: unknown) =>
      Array.isArray(c) && c.length === 4 && c.slice(0, 3).every((s) => typeof s === 'string') && typeof c[3] === 'number';
    if (!Array.isArray(ctx) || !ctx.every(isContext)) throw new Error(`features[${i}].ctx is not a list of [before, peak, after, activation]`);
    const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
    features.set(e.id as number, {
      id: e.id as number,
      freq: num(e.freq),
      mean: num(e.mean),
      max: num(e.max),
      ctx: ctx as FeatureIndexEntry['ctx'],
      top: Array.isArray(e.top) ? (e.top as [string, number][]) : undefined,
      bottom: Array.isArray(e.bottom) ? (e.bottom as [string, number][]) : undefined,
    });
  });
  return { layer: Number.isInteger(j.layer) ? (j.layer as number) : undefined, features };
}

/**
 * Feature indexes read so far, each file read once (keep one per transcoder set: a file edited later is not read
 * again). Files that are missing or unreadable are remembered as absent.
 */
export class FeatureIndex {
  private readonly files = new Map<string, FeatureIndexFile | null>();
  private readonly warned = new Set<string>();

  /** The entry of feature `index` of transcoder `t`, when its folder has a usable feature index listing it. */
  entry(t: Pick<Transcoder, 'source' | 'layer' | 'root'>, index: number, onWarning?: (message: string) => void): FeatureIndexEntry | undefined {
    const file = featureIndexPath(t);
    let read = this.files.get(file);
    if (read === undefined) {
      read = null;
      try {
        if (exists(file)) {
          // Read only when it is a regular file inside the transcoder folder (a link out of it is refused).
          checkInputFile(file, FEATURE_INDEX_FILE);
          checkContained(t.root ?? path.dirname(file), file, FEATURE_INDEX_FILE);
          read = readFeatureIndex(file);
        }
      } catch (e) {
        onWarning?.(e instanceof ResidualError ? `${e.message}; cards use the decoder instead` : `feature index ${file} unreadable (${(e as Error).message}); cards use the decoder instead`);
      }
      this.files.set(file, read);
    }
    if (!read) return undefined;
    // A circuit-tracer folder keeps every layer beside one config.yaml, so one index file may be another layer's.
    if (read.layer !== undefined && read.layer !== t.layer) {
      const key = `${file}|${t.layer}`;
      if (!this.warned.has(key)) {
        this.warned.add(key);
        onWarning?.(`feature index ${file} is for layer ${read.layer}, not layer ${t.layer}; cards of layer ${t.layer} use the decoder instead`);
      }
      return undefined;
    }
    return read.features.get(index);
  }
}

export interface FeatureCardOptions {
  /** Shows the tokens (default: the tokenizer of the attributor's model). */
  tokenizer?: Pick<Tokenizer, 'tokenDisplay'>;
  /** Feature indexes already read; pass one kept with the transcoder set so each file is read once. */
  index?: FeatureIndex;
  /** Output tokens listed each way (default 10). */
  topK?: number;
  /** Why the card has no contexts when a feature index exists but cannot be used. */
  onWarning?: (message: string) => void;
}

/**
 * The card of feature `index` of layer `layer`: its activation at every position of `graph`'s prompt (also where the
 * graph did not keep its node), the tokens its decoder row pushes up and down most (W_dec · W_U, byte-exact token
 * display; values to 4 significant digits), and the feature index's contexts, frequency and maximum when there are.
 */
export async function featureCard(attributor: Attributor, graph: AttributionGraph, layer: number, index: number, opts: FeatureCardOptions = {}): Promise<FeatureCard> {
  const set = attributor.transcoders;
  const t = Number.isInteger(layer) && layer >= 0 ? set.layers[layer] : undefined;
  if (!t) throw new ResidualError(`no feature ${index} in layer ${layer}: the transcoder set has layers 0..${set.layers.length - 1}`, set.dir);
  if (!(Number.isInteger(index) && index >= 0 && index < t.dSae)) throw new ResidualError(`no feature ${index} in layer ${layer}`, set.dir);
  if (graph.nLayers !== set.layers.length) {
    throw new ResidualError(`the graph has ${graph.nLayers} layers but the transcoder set ${set.layers.length}; it was made with other transcoders`, set.dir);
  }
  const activations = Array.from({ length: graph.nPos }, (_, p) => activeActivation(graph, layer, p, index));
  const entry = (opts.index ?? new FeatureIndex()).entry(t, index, opts.onWarning);
  const logits = await attributor.decoderLogits(layer, index, opts.topK ?? 10);
  const tokenizer = opts.tokenizer ?? attributor.model.tokenizer;
  return cardOf({ layer, index, activations, ids: graph.ids, logits, entry, tokenDisplay: (v) => tokenizer.tokenDisplay(v) });
}

/**
 * A card from what any dictionary feature has (a transcoder's, a residual-stream SAE's): its activations on the
 * prompt, the ids of the prompt, its decoder's logit lists ([id, value]) and its feature-index entry, if any. The
 * output tokens always come from the weights, shown byte-exact; the index's strings lose bytes.
 */
export function cardOf(f: {
  layer: number;
  index: number;
  activations: number[];
  ids: number[];
  logits: { top: [number, number][]; bottom: [number, number][] };
  entry?: FeatureIndexEntry;
  tokenDisplay: (id: number) => string;
}): FeatureCard {
  const tok = f.tokenDisplay;
  const named = (xs: [number, number][]) => xs.map(([v, y]) => [tok(v), Number(y.toPrecision(4))] as [string, number]);
  const entry = f.entry;
  return {
    layer: f.layer,
    index: f.index,
    output: f.logits.top.length ? tok(f.logits.top[0][0]) : undefined,
    activations: f.activations,
    tokens: f.ids.map(tok),
    top: named(f.logits.top),
    bottom: named(f.logits.bottom),
    contexts: entry?.ctx.map(([before, peak, after, act]) => ({ before, peak, after, act })),
    frequency: entry?.freq,
    maxAct: entry?.max,
    source: entry ? 'decoder × unembedding; contexts from the feature index' : 'decoder × unembedding (no feature index)',
  };
}
