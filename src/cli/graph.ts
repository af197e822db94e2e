/**
 * `residual graph --model DIR --transcoders DIR --text TEXT [--node-threshold X] [--edge-threshold X]
 * [--max-feature-nodes N|all] [--max-memory MB] [--max-tokens N] [--estimate] [--target TOKEN [--contrast TOKEN] |
 * --direction FILE --layer L [--hook H] [--position P]] --out FILE`: computes the attribution graph of the text's
 * next-token prediction (or of the target named), prunes it and writes the circuit-tracer / Neuronpedia graph JSON.
 * `--max-feature-nodes` bounds the feature rows computed (default `DEFAULT_MAX_FEATURE_NODES`, the most influential
 * first; `all` for every active feature); `--max-memory` is the peak memory allowed (default: what the machine has
 * free), under which fewer feature rows are computed and the summary says so. `--estimate` prints the estimated time
 * and memory (JSON with `--json`) and exits without computing. One summary line on stdout; progress on stderr when it
 * is a terminal; errors are ResidualErrors (the caller prints them). Ctrl-C stops the run and writes nothing.
 * `--out` is checked before any work (a device, FIFO, socket or folder is refused by name and never replaced; a
 * missing folder is named; a file must be creatable there) and written atomically (temporary file beside + rename).
 * Every flag is listed in GRAPH (the usage text is made from it).
 */
import * as path from 'node:path';
import { ResidualError } from '../engine/errors';
import { checkInputFolder } from '../engine/files';
import { Attributor } from '../engine/circuits/attribution';
import { defaultCircuitBudget, DEFAULT_CIRCUIT_MAX_TOKENS, describeEstimate } from '../engine/circuits/estimate';
import { formatBytes } from '../engine/memory';
import { checkGraphOutput, toGraphJson, writeGraphFiles } from '../engine/circuits/graph-json';
import { pruneGraph } from '../engine/circuits/prune';
import { reconstructionWarning } from '../engine/circuits/reconstruction';
import { describeTarget, type AttributionGraph, type AttributionTarget } from '../engine/circuits/graph';
import type { Model } from '../engine/model';
import type { ResidPoint } from '../protocol/results';
import type { CircuitTargetRequest } from '../protocol';
import { resolveTarget } from '../engine/circuits/targets';
import { loadTranscoders } from '../engine/circuits/transcoders';
import { parseFlags, usageOf, type CommandSpec, type Flags } from './args';
import { checkOutFlag, loadModel, MODEL_FLAGS, promptOf, processIo, readText, release, type Io } from './common';

export const GRAPH: CommandSpec = {
  name: 'graph',
  synopsis: '--model DIR --transcoders DIR --text TEXT --out FILE [flags]',
  summary:
    "Computes the attribution graph of the text's next-token prediction, prunes it and writes it as the circuit-tracer / Neuronpedia graph JSON to FILE (written whole or not at all).",
  flags: {
    model: MODEL_FLAGS.model,
    transcoders: { value: 'DIR', help: 'the transcoder folder (SAELens or circuit-tracer layout) — required' },
    text: MODEL_FLAGS.text,
    chat: MODEL_FLAGS.chat,
    out: { value: 'FILE', help: 'the graph JSON to write — required unless --estimate; a new file, or a regular file to replace' },
    'node-threshold': { value: 'X', help: 'keep the nodes that carry this fraction of the influence, 0 to 1 (default 0.8)' },
    'edge-threshold': { value: 'X', help: 'keep the edges that carry this fraction of the influence, 0 to 1 (default 0.98)' },
    'max-feature-nodes': { value: 'N|all', help: 'feature rows to compute, most influential first (default: a bound that keeps the run short; all: every active feature)' },
    'max-memory': { value: 'MB', help: 'peak memory allowed for the attribution (default: what the machine has free)' },
    'max-tokens': { value: 'N', help: `refuse texts longer than N tokens (default ${DEFAULT_CIRCUIT_MAX_TOKENS}, at most the model context)` },
    target: { value: 'TOKEN', help: 'trace this next token\'s logit (one token of the vocabulary, often with its leading space) instead of the most likely ones' },
    contrast: { value: 'TOKEN', help: 'with --target: trace the logit difference target − contrast' },
    direction: { value: 'FILE', help: "trace a saved vector's dot product with the residual stream (.json + .safetensors, as the Steering panel saves them); needs --layer" },
    layer: { value: 'L', help: 'with --direction: the block whose residual it reads' },
    hook: { value: 'resid_pre|resid_mid|resid_post', help: 'with --direction: where in the block (default resid_pre)' },
    position: { value: 'P', help: 'with --direction: the token position (default the last)' },
    slug: { value: 'NAME', help: "the graph's slug: must equal the --out file's name (the viewer opens <slug>.json)" },
    estimate: { help: 'print the estimated time and memory and exit without computing' },
    json: { help: 'with --estimate: print the estimate as JSON' },
    providers: MODEL_FLAGS.providers,
    'skip-memory-check': MODEL_FLAGS['skip-memory-check'],
    'check-memory': MODEL_FLAGS['check-memory'],
  },
};

const WHAT = 'residual graph';

export async function graphCommand(args: string[], io: Io = processIo()): Promise<number> {
  const parsed = parseFlags(GRAPH, args);
  if (parsed === 'help') {
    io.out(usageOf(GRAPH));
    return 0;
  }
  const f: Flags = parsed;
  f.required('model');
  const transcoders = f.required('transcoders');
  const outFile = f.str('out');
  if (!outFile && !f.bool('estimate')) f.fail('--out FILE is required (or --estimate)');
  if (f.bool('json') && !f.bool('estimate')) f.fail('--json goes with --estimate (the graph itself is written to --out)');
  const nodeThreshold = f.num('node-threshold', { min: 0, max: 1 }) ?? 0.8;
  const edgeThreshold = f.num('edge-threshold', { min: 0, max: 1 }) ?? 0.98;
  const maxFeatureNodes = f.str('max-feature-nodes') === 'all' ? Infinity : f.int('max-feature-nodes', { min: 0, or: '"all"' });
  const maxMemoryMb = f.num('max-memory', { min: 0, minExclusive: true, note: 'MB' });
  const maxMemoryBytes = maxMemoryMb === undefined ? undefined : maxMemoryMb * 1e6;
  const maxTokensArg = f.int('max-tokens', { min: 1 });
  const slugArg = f.str('slug');
  const targetText = f.str('target');
  const contrastText = f.str('contrast');
  const directionFile = f.str('direction');
  if (contrastText !== undefined && targetText === undefined) f.fail('--contrast needs --target (the difference is target − contrast)');
  if (directionFile !== undefined && targetText !== undefined) f.fail('give --target (a logit) or --direction (a vector), not both');
  for (const flag of ['layer', 'hook', 'position'] as const) if (f.str(flag) !== undefined && directionFile === undefined) f.fail(`--${flag} goes with --direction FILE`);
  if (directionFile !== undefined && f.str('layer') === undefined) f.fail('--direction needs --layer L (the block whose residual the vector reads)');
  const directionLayer = f.int('layer', { min: 0 });
  const directionHook = `hook_${f.choice('hook', ['resid_pre', 'resid_mid', 'resid_post'] as const) ?? 'resid_pre'}` as const;
  const directionPosition = f.int('position', { min: 0 });
  if (directionFile !== undefined && /\.gguf$/i.test(directionFile)) f.fail('--direction reads a saved vector (.json + .safetensors); a llama.cpp control vector steers (residual steer --vector), it is not a graph target');
  if (outFile && !f.bool('estimate')) {
    checkOutFlag(f, outFile);
    // The viewer opens <slug>.json from the folder's graph-metadata.json: the slug is the file's name.
    const { slug } = checkGraphOutput(outFile);
    if (slugArg !== undefined && slugArg !== slug) f.fail(`--slug must match the --out file's name ("${slug}"): circuit-tracer's viewer opens <slug>.json`);
  }
  checkInputFolder(transcoders, 'transcoders folder');
  const selection = readText(f, io);

  // float32 always: the graph's exactness (links summing to the logit) holds for float32 activations.
  const model = await loadModel(f, io, { precision: 'float32' });
  let attributor: Attributor | undefined;
  // Set once the result is complete (the estimate printed, or the graph written and its line printed): a failure to
  // dispose after that is a warning, not a failed run (common.ts release).
  let done = false;
  try {
    // With --chat, the model runs the text as a user turn of its chat template.
    const text = promptOf(f, model, selection);
    const ids = model.tokenizer.encodeForModel(text).ids;
    if (ids.length === 0) throw new ResidualError('the text produced no tokens', WHAT);
    const max = Math.min(model.config.nCtx, maxTokensArg ?? DEFAULT_CIRCUIT_MAX_TOKENS);
    if (ids.length > max) throw new ResidualError(`the text has ${ids.length} tokens; graphs are limited to ${max} (raise --max-tokens up to ${model.config.nCtx})`, WHAT);
    // The target's flags are checked before the transcoders load.
    const target = targetOf(f, model, ids.length, { targetText, contrastText, directionFile, directionLayer, directionHook, directionPosition });
    const set = loadTranscoders(transcoders, model.config);
    attributor = new Attributor(model, set);
    const estimate = attributor.estimate(ids.length, { maxFeatureNodes });
    if (f.bool('estimate')) {
      const out = { tokens: ids.length, seconds: estimate.seconds, peak_mb: estimate.peakBytes / 1e6, active_features: estimate.activeFeatures, feature_rows: estimate.featureRows, parts: estimate.parts.map((p) => ({ name: p.name, seconds: p.seconds, mb: p.bytes / 1e6 })) };
      io.out(f.bool('json') ? JSON.stringify(out) + '\n' : `${ids.length} tokens: ${describeEstimate(estimate)}\n`);
      done = true;
      return 0;
    }
    const budget = maxMemoryBytes ?? defaultCircuitBudget();
    const cancel = { isCancellationRequested: false };
    const onSigint = () => (cancel.isCancellationRequested = true);
    process.once('SIGINT', onSigint);
    const tty = io.errIsTTY;
    let lastProgress = 0;
    const progress = (message: string) => {
      if (!tty || performance.now() - lastProgress < 1000) return;
      lastProgress = performance.now();
      io.err(`\r${message}\x1b[K`);
    };
    if (tty) io.err(`${ids.length} tokens: ${describeEstimate(estimate)}\n`);
    const t0 = performance.now();
    let g;
    try {
      g = await attributor.attribute(ids, { maxFeatureNodes, maxMemoryBytes: budget, target, cancel, progress });
    } finally {
      process.removeListener('SIGINT', onSigint);
      if (tty) io.err('\r\x1b[K');
    }
    const pr = pruneGraph(g, nodeThreshold, edgeThreshold);
    const tok = (id: number) => model.tokenizer.tokenText(id);
    const json = toGraphJson(g, pr, {
      slug: checkGraphOutput(outFile!).slug,
      scan: set.scan,
      promptTokens: ids.map(tok),
      prompt: text,
      tokenText: tok,
      nodeThreshold,
      edgeThreshold,
      info: { description: `Residual attribution graph (${model.config.name}, transcoders ${set.dir})` },
    });
    const { metadataFile } = writeGraphFiles(outFile!, json);
    // A transcoder that reconstructs its MLP poorly (the wrong input hook, most often) is said, whatever the run.
    const warning = g.reconstruction && reconstructionWarning(g.reconstruction);
    if (warning) io.err(`${WHAT}: warning: ${warning}\n`);
    const s = ((performance.now() - t0) / 1000).toFixed(2);
    const partial =
      g.nFeatures < g.nActiveFeatures
        ? `; ${g.nFeatures} of ${g.nActiveFeatures} active features kept${g.memoryLimited ? ` (memory budget ${formatBytes(budget)})` : ''}, ${(100 * g.influenceCovered).toFixed(1)}% of their influence`
        : '';
    io.out(
      `${outFile} (listed in ${path.basename(metadataFile)}): ${json.nodes.length} nodes, ${json.links.length} links (of ${g.nActiveFeatures} active features, ${whatTarget(g, tok)}; ` +
        `replacement ${pr.replacementScore.toFixed(3)}, completeness ${pr.completenessScore.toFixed(3)}${fvuText(g)}${partial}) in ${s} s\n`,
    );
    done = true;
  } finally {
    await release(io, done, attributor, model);
  }
  return 0;
}


/** The --target/--contrast/--direction flags as an attribution target, checked against the model and the text. */
function targetOf(
  f: Flags,
  model: Model,
  nTokens: number,
  a: { targetText?: string; contrastText?: string; directionFile?: string; directionLayer?: number; directionHook: ResidPoint; directionPosition?: number },
): AttributionTarget | undefined {
  const request: CircuitTargetRequest | undefined =
    a.targetText !== undefined
      ? a.contrastText === undefined
        ? { kind: 'token', token: a.targetText }
        : { kind: 'contrast', token: a.targetText, contrast: a.contrastText }
      : a.directionFile !== undefined
        ? { kind: 'direction', file: a.directionFile, layer: a.directionLayer!, hook: a.directionHook, position: a.directionPosition }
        : undefined;
  if (!request) return undefined;
  const flags = { target: '--target', contrast: '--contrast', layer: '--layer', position: '--position' };
  try {
    return resolveTarget(model, request, flags, { nTokens });
  } catch (e) {
    // A value that does not fit is a flag error: "residual graph: --target …" (file problems name the file).
    if (e instanceof ResidualError && e.file && Object.values(flags).includes(e.file)) f.fail(`${e.file} ${e.message.slice(e.file.length + 2)}`);
    throw e;
  }
}

/** The summary's words for what the graph traced. */
function whatTarget(g: AttributionGraph, tokenText: (id: number) => string): string {
  const t = g.target ?? { kind: 'top' };
  return t.kind === 'top' ? `${g.logitIds.length} logits` : `target ${describeTarget(t, tokenText)} = ${g.logitValues[0].toPrecision(5)}`;
}

/** The worst layer's reconstruction, for the summary line. */
function fvuText(g: AttributionGraph): string {
  const f = g.reconstruction?.fvu;
  if (!f?.length) return '';
  let worst = 0;
  f.forEach((x, l) => (x > f[worst] ? (worst = l) : undefined));
  const what = g.reconstruction?.replacement;
  return `, ${what ? `${what} ` : ''}FVU ≤ ${f[worst].toFixed(3)} (layer ${worst})`;
}
