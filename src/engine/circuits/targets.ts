/**
 * A graph target as a person names it — typed tokens, a saved vector's file and where it reads — resolved against the
 * model: each token must be one vocabulary token, a contrast differ from its target, the layer (and, when the prompt
 * is known, the position) exist, the vector fit d_model. One resolver for the CLI's flags and the panel's Target row;
 * errors carry the caller's name for each field (`names`) as their source, so the CLI can word them as flag errors.
 */
import * as path from 'node:path';
import type { CircuitTargetRequest } from '../../protocol';
import { tokenIdOf } from '../dla';
import { ResidualError } from '../errors';
import type { Model } from '../model';
import { loadVectorFile } from '../steering/vectors';
import { unescapeTokenInput } from '../tokenizer';
import type { AttributionTarget } from './graph';

/** What each field is called where the request came from (a flag, a field of the panel). */
export interface TargetFieldNames {
  target: string;
  contrast: string;
  layer: string;
  position: string;
}

export function resolveTarget(
  model: Model,
  r: CircuitTargetRequest,
  names: TargetFieldNames,
  opts: { nTokens?: number; typed?: boolean } = {},
): AttributionTarget {
  // Typed into a field: \n, ⏎ and the like are the characters they show (tokenizer.ts unescapeTokenInput).
  const tokenId = (text: string, what: string) => tokenIdOf(model, opts.typed ? unescapeTokenInput(text) : text, what);
  const c = model.config;
  switch (r.kind) {
    case 'top':
      return r;
    case 'token':
      return { kind: 'token', id: tokenId(r.token, names.target) };
    case 'contrast': {
      const id = tokenId(r.token, names.target);
      const contrastId = tokenId(r.contrast, names.contrast);
      if (id === contrastId) throw new ResidualError(`${JSON.stringify(r.contrast)} is the target itself: the difference would be 0`, names.contrast);
      return { kind: 'contrast', id, contrastId };
    }
    case 'direction': {
      if (!(Number.isInteger(r.layer) && r.layer >= 0 && r.layer < c.nLayers)) throw new ResidualError(`${r.layer} does not exist: the model has layers 0..${c.nLayers - 1}`, names.layer);
      const n = opts.nTokens;
      if (n !== undefined && r.position !== undefined && !(r.position >= 0 && r.position < n)) {
        throw new ResidualError(`${r.position} does not exist: the text has ${n} tokens (positions 0..${n - 1})`, names.position);
      }
      // The width is checked against d_model here, naming the file.
      const v = loadVectorFile(r.file, { dModel: c.dModel, nLayers: c.nLayers, name: c.name });
      return { kind: 'direction', name: path.basename(r.file), vector: v.vector, layer: r.layer, hook: r.hook, position: r.position };
    }
  }
}
