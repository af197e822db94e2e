/**
 * `residual graph --model DIR --transcoders DIR --text TEXT [--node-threshold X] [--edge-threshold X]
 * [--max-feature-nodes N|all] --out FILE`: computes the attribution graph of the text's next-token prediction, prunes
 * it and writes the circuit-tracer / Neuronpedia graph JSON. `--max-feature-nodes` bounds the feature rows computed
 * (default `DEFAULT_MAX_FEATURE_NODES`, the most influential first; `all` for every active feature). One summary line on stdout; errors are ResidualErrors (the caller prints them).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ResidualError } from '../errors';
import { Model } from '../model';
import { silenceOrt } from '../runtime/session';
import { Attributor } from './attribution';
import { toGraphJson } from './graph-json';
import { pruneGraph } from './prune';
import { loadTranscoders } from './transcoders';

const WHAT = 'residual graph';

export async function graphCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: 'string' },
        transcoders: { type: 'string' },
        text: { type: 'string' },
        'node-threshold': { type: 'string', default: '0.8' },
        'edge-threshold': { type: 'string', default: '0.98' },
        out: { type: 'string' },
        slug: { type: 'string' },
        providers: { type: 'string' },
        'max-tokens': { type: 'string' },
        'max-feature-nodes': { type: 'string' },
      },
      strict: true,
    }));
  } catch (e) {
    throw new ResidualError((e as Error).message, WHAT);
  }
  if (!values.model) throw new ResidualError('--model DIR is required', WHAT);
  if (!values.transcoders) throw new ResidualError('--transcoders DIR is required', WHAT);
  if (values.text === undefined) throw new ResidualError('--text TEXT is required (use --text - for standard input)', WHAT);
  if (!values.out) throw new ResidualError('--out FILE is required', WHAT);
  const threshold = (name: 'node-threshold' | 'edge-threshold') => {
    const v = Number(values[name]);
    if (!(v >= 0 && v <= 1)) throw new ResidualError(`--${name} must be a number in [0, 1], got "${values[name]}"`, WHAT);
    return v;
  };
  const nodeThreshold = threshold('node-threshold');
  const edgeThreshold = threshold('edge-threshold');
  const mfn = values['max-feature-nodes'];
  const maxFeatureNodes = mfn === undefined ? undefined : mfn === 'all' ? Infinity : Number(mfn);
  if (maxFeatureNodes !== undefined && !(maxFeatureNodes === Infinity || (Number.isInteger(maxFeatureNodes) && maxFeatureNodes >= 0))) {
    throw new ResidualError(`--max-feature-nodes must be a whole number or "all", got "${mfn}"`, WHAT);
  }
  const outDir = path.dirname(path.resolve(values.out));
  if (!fs.existsSync(outDir)) throw new ResidualError('the folder for --out does not exist', outDir, 'missing');
  const text = values.text === '-' ? fs.readFileSync(0, 'utf8') : values.text;
  if (text.length === 0) throw new ResidualError('--text is empty', WHAT);

  silenceOrt();
  const model = await Model.load(values.model, { providers: values.providers?.split(',').map((s) => s.trim()) });
  let attributor: Attributor | undefined;
  try {
    const set = loadTranscoders(values.transcoders, model.config);
    attributor = new Attributor(model, set);
    const ids = model.tokenizer.encodeForModel(text).ids;
    if (ids.length === 0) throw new ResidualError('the text produced no tokens', WHAT);
    const max = Math.min(model.config.nCtx, values['max-tokens'] ? Number(values['max-tokens']) : 64);
    if (ids.length > max) throw new ResidualError(`the text has ${ids.length} tokens; graphs are limited to ${max} (raise --max-tokens up to ${model.config.nCtx})`, WHAT);
    const t0 = performance.now();
    const g = await attributor.attribute(ids, { maxFeatureNodes });
    const pr = pruneGraph(g, nodeThreshold, edgeThreshold);
    const tok = (id: number) => model.tokenizer.tokenText(id);
    const slug = values.slug ?? slugOf(path.basename(values.out, '.json'));
    const json = toGraphJson(g, pr, {
      slug,
      scan: set.scan,
      promptTokens: ids.map(tok),
      prompt: text,
      tokenText: tok,
      nodeThreshold,
      edgeThreshold,
      info: { description: `Residual attribution graph (${model.config.name}, transcoders ${set.dir})` },
    });
    const tmp = `${values.out}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(json));
    fs.renameSync(tmp, values.out);
    const s = ((performance.now() - t0) / 1000).toFixed(2);
    process.stdout.write(
      `${values.out}: ${json.nodes.length} nodes, ${json.links.length} links (of ${g.nFeatures} active features, ${g.logitIds.length} logits; ` +
        `replacement ${pr.replacementScore.toFixed(3)}, completeness ${pr.completenessScore.toFixed(3)}) in ${s} s\n`,
    );
  } finally {
    await attributor?.dispose();
    await model.dispose();
  }
  return 0;
}

function slugOf(name: string): string {
  return name.replace(/[^a-zA-Z0-9_.-]+/g, '-') || 'graph';
}
