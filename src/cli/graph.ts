/**
 * `residual graph --model DIR --transcoders DIR --text TEXT [--node-threshold X] [--edge-threshold X]
 * [--max-feature-nodes N|all] [--max-memory MB] [--max-tokens N] [--estimate] --out FILE`: computes the attribution
 * graph of the text's next-token prediction, prunes it and writes the circuit-tracer / Neuronpedia graph JSON.
 * `--max-feature-nodes` bounds the feature rows computed (default `DEFAULT_MAX_FEATURE_NODES`, the most influential
 * first; `all` for every active feature); `--max-memory` is the peak memory allowed (default: what the machine has
 * free), under which fewer feature rows are computed and the summary says so. `--estimate` prints the estimated time
 * and memory (JSON with `--json`) and exits without computing. One summary line on stdout; progress on stderr when it
 * is a terminal; errors are ResidualErrors (the caller prints them). Ctrl-C stops the run and writes nothing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ResidualError } from '../engine/errors';
import { Model } from '../engine/model';
import { silenceOrt } from '../engine/runtime/session';
import { Attributor } from '../engine/circuits/attribution';
import { defaultCircuitBudget, DEFAULT_CIRCUIT_MAX_TOKENS, describeEstimate } from '../engine/circuits/estimate';
import { formatBytes } from '../engine/memory';
import { toGraphJson } from '../engine/circuits/graph-json';
import { pruneGraph } from '../engine/circuits/prune';
import { loadTranscoders } from '../engine/circuits/transcoders';

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
        'max-memory': { type: 'string' },
        estimate: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    throw new ResidualError((e as Error).message, WHAT);
  }
  if (!values.model) throw new ResidualError('--model DIR is required', WHAT);
  if (!values.transcoders) throw new ResidualError('--transcoders DIR is required', WHAT);
  if (values.text === undefined) throw new ResidualError('--text TEXT is required (use --text - for standard input)', WHAT);
  if (!values.out && !values.estimate) throw new ResidualError('--out FILE is required', WHAT);
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
  let maxMemoryBytes: number | undefined;
  if (values['max-memory'] !== undefined) {
    const m = Number(values['max-memory']);
    if (!(Number.isFinite(m) && m > 0)) throw new ResidualError(`--max-memory must be a positive number of MB, got "${values['max-memory']}"`, WHAT);
    maxMemoryBytes = m * 1e6;
  }
  const maxTokensArg = values['max-tokens'];
  if (maxTokensArg !== undefined && !(Number.isInteger(Number(maxTokensArg)) && Number(maxTokensArg) > 0)) {
    throw new ResidualError(`--max-tokens must be a positive whole number, got "${maxTokensArg}"`, WHAT);
  }
  if (values.out) {
    const outDir = path.dirname(path.resolve(values.out));
    if (!fs.existsSync(outDir)) throw new ResidualError('the folder for --out does not exist', outDir, 'missing');
  }
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
    const max = Math.min(model.config.nCtx, maxTokensArg ? Number(maxTokensArg) : DEFAULT_CIRCUIT_MAX_TOKENS);
    if (ids.length > max) throw new ResidualError(`the text has ${ids.length} tokens; graphs are limited to ${max} (raise --max-tokens up to ${model.config.nCtx})`, WHAT);
    const estimate = attributor.estimate(ids.length, { maxFeatureNodes });
    if (values.estimate) {
      const out = { tokens: ids.length, seconds: estimate.seconds, peak_mb: estimate.peakBytes / 1e6, active_features: estimate.activeFeatures, feature_rows: estimate.featureRows, parts: estimate.parts.map((p) => ({ name: p.name, seconds: p.seconds, mb: p.bytes / 1e6 })) };
      process.stdout.write(values.json ? JSON.stringify(out) + '\n' : `${ids.length} tokens: ${describeEstimate(estimate)}\n`);
      return 0;
    }
    const budget = maxMemoryBytes ?? defaultCircuitBudget();
    const cancel = { isCancellationRequested: false };
    const onSigint = () => (cancel.isCancellationRequested = true);
    process.once('SIGINT', onSigint);
    const tty = process.stderr.isTTY;
    let lastProgress = 0;
    const progress = (message: string) => {
      if (!tty || performance.now() - lastProgress < 1000) return;
      lastProgress = performance.now();
      process.stderr.write(`\r${message}\x1b[K`);
    };
    if (tty) process.stderr.write(`${ids.length} tokens: ${describeEstimate(estimate)}\n`);
    const t0 = performance.now();
    let g;
    try {
      g = await attributor.attribute(ids, { maxFeatureNodes, maxMemoryBytes: budget, cancel, progress });
    } finally {
      process.removeListener('SIGINT', onSigint);
      if (tty) process.stderr.write('\r\x1b[K');
    }
    const pr = pruneGraph(g, nodeThreshold, edgeThreshold);
    const tok = (id: number) => model.tokenizer.tokenText(id);
    const outFile = values.out!;
    const slug = values.slug ?? slugOf(path.basename(outFile, '.json'));
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
    const tmp = `${outFile}.${process.pid}.tmp`;
    try {
      fs.writeFileSync(tmp, JSON.stringify(json));
      fs.renameSync(tmp, outFile);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    const s = ((performance.now() - t0) / 1000).toFixed(2);
    const partial =
      g.nFeatures < g.nActiveFeatures
        ? `; ${g.nFeatures} of ${g.nActiveFeatures} active features kept${g.memoryLimited ? ` (memory budget ${formatBytes(budget)})` : ''}, ${(100 * g.influenceCovered).toFixed(1)}% of their influence`
        : '';
    process.stdout.write(
      `${outFile}: ${json.nodes.length} nodes, ${json.links.length} links (of ${g.nActiveFeatures} active features, ${g.logitIds.length} logits; ` +
        `replacement ${pr.replacementScore.toFixed(3)}, completeness ${pr.completenessScore.toFixed(3)}${partial}) in ${s} s\n`,
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
