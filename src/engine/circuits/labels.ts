/**
 * Feature labels: what a person (or an auto-interpretation run) says a transcoder feature means, keyed by layer and
 * feature index. They are read from explanation files — a JSON array or JSONL of `{layer, index, description}`, or
 * Neuronpedia's explanation export, whose `layer` is a source id such as `"5-gemmascope-transcoder-16k"` and whose
 * `index` is a string — and written into a graph's feature nodes as `clerp`, the field circuit-tracer's and
 * Neuronpedia's viewers show, so they travel with an exported graph and come back when it is opened.
 */
import * as fs from 'node:fs';
import { ResidualError } from '../errors';
import { checkInputFile } from '../files';
import { isPlainObject } from '../checkpoint/safetensors';

/** "layer:index" → label. */
export type FeatureLabels = Map<string, string>;

export const labelKey = (layer: number, index: number): string => `${layer}:${index}`;

/** Explanation files are text; larger than this is not a label file. */
export const MAX_LABEL_FILE_BYTES = 256 * 1024 * 1024;

/**
 * Reads an explanation file and checks every entry against the transcoder set's shape (`dSae[layer]` features per
 * layer): a feature that does not exist refuses the file, naming the entry. When a feature has several descriptions
 * (Neuronpedia exports one per explainer model), the first is kept.
 */
export function readLabelFile(file: string, dSae: readonly number[]): FeatureLabels {
  const size = checkInputFile(file, 'label file');
  if (size > MAX_LABEL_FILE_BYTES) throw new ResidualError(`the file is ${(size / 1e6).toFixed(0)} MB; label files are limited to ${MAX_LABEL_FILE_BYTES / 2 ** 20} MiB`, file);
  const text = fs.readFileSync(file, 'utf8');
  return parseLabels(text, file, dSae);
}

export function parseLabels(text: string, file: string, dSae: readonly number[]): FeatureLabels {
  let entries: unknown[];
  const trimmed = text.trimStart();
  /** The whole text as one JSON value, or undefined when it is not one (JSONL). */
  const whole = (): unknown => {
    try {
      return JSON.parse(text);
    } catch (e) {
      if (trimmed.startsWith('[')) throw new ResidualError(`not valid JSON (${(e as Error).message})`, file);
      return undefined;
    }
  };
  const one = trimmed.startsWith('[') || trimmed.startsWith('{') ? whole() : undefined;
  if (Array.isArray(one)) entries = one;
  else if (isPlainObject(one)) {
    // One object: a single entry, or a list wrapped as {"explanations": [...]} (as Neuronpedia's exports do).
    const list = one.explanations ?? one.features ?? [one];
    if (!Array.isArray(list)) throw new ResidualError('expected a list of {layer, index, description}, or {"explanations": [...]}', file);
    entries = list;
  } else {
    entries = [];
    text.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      try {
        entries.push(JSON.parse(line));
      } catch (e) {
        throw new ResidualError(`line ${i + 1} is not valid JSON (${(e as Error).message}); expected one {layer, index, description} per line`, file);
      }
    });
  }
  if (!Array.isArray(entries)) throw new ResidualError('expected a list of {layer, index, description}', file);
  const labels: FeatureLabels = new Map();
  entries.forEach((e, i) => {
    const where = `entry ${i + 1}`;
    if (!isPlainObject(e)) throw new ResidualError(`${where} is not an object {layer, index, description}`, file);
    const layer = layerOf(e.layer);
    if (layer === undefined) throw new ResidualError(`${where}: "layer" must be a layer number (or a Neuronpedia source id such as "5-gemmascope-transcoder-16k"), got ${JSON.stringify(e.layer)}`, file);
    const index = typeof e.index === 'string' && /^\d+$/.test(e.index) ? Number(e.index) : e.index;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0) throw new ResidualError(`${where}: "index" must be a whole number ≥ 0, got ${JSON.stringify(e.index)}`, file);
    const description = e.description ?? e.explanation ?? e.label;
    if (typeof description !== 'string') throw new ResidualError(`${where}: "description" must be a string`, file);
    if (layer >= dSae.length) throw new ResidualError(`${where} names layer ${layer}, but the transcoders have layers 0..${dSae.length - 1}`, file);
    if (index >= dSae[layer]) throw new ResidualError(`${where} names feature ${index} of layer ${layer}, but that layer has ${dSae[layer]} features (0..${dSae[layer] - 1})`, file);
    const key = labelKey(layer, index);
    if (!labels.has(key)) labels.set(key, description.trim());
  });
  return labels;
}

/** A layer number, or the leading number of a Neuronpedia source id ("12-gemmascope-transcoder-16k"). */
function layerOf(x: unknown): number | undefined {
  if (typeof x === 'number') return Number.isInteger(x) && x >= 0 ? x : undefined;
  if (typeof x !== 'string') return undefined;
  const m = /^(\d+)(?:-|$)/.exec(x);
  return m ? Number(m[1]) : undefined;
}
