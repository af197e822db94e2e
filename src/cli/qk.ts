/**
 * `residual qk`: why one attention head attends from a query position to a key position — its score split exactly
 * into the query side's sources (tokens, transcoder features, errors, bias terms) times the key side's
 * (engine/circuits/qk.ts).
 */
import { Attributor } from '../engine/circuits/attribution';
import { describeQkSource, qkAttribution, type QkAttribution, type QkSource } from '../engine/circuits/qk';
import { loadTranscoders } from '../engine/circuits/transcoders';
import { ResidualError } from '../engine/errors';
import { checkInputFolder } from '../engine/files';
import type { Model } from '../engine/model';
import { parseFlags, usageOf, type CommandSpec, type Flags } from './args';
import { loadModel, MODEL_FLAGS, promptOf, processIo, readText, release, type Io } from './common';

export const QK: CommandSpec = {
  name: 'qk',
  synopsis: '--model DIR --transcoders DIR --text TEXT --layer L --head H [--query P] [--key P] [--json]',
  summary: 'QK attribution: one head\'s attention score from a query to a key position, split exactly into pairs of sources (tokens, transcoder features, errors, bias terms) on the query and key sides.',
  flags: {
    model: MODEL_FLAGS.model,
    transcoders: { value: 'DIR', help: 'the transcoder folder (SAELens or circuit-tracer layout) — required' },
    text: MODEL_FLAGS.text,
    chat: MODEL_FLAGS.chat,
    layer: { value: 'L', help: 'the attention layer — required' },
    head: { value: 'H', help: 'the head — required' },
    query: { value: 'P', help: 'the query position, 0-based (default: the last)' },
    key: { value: 'P', help: 'the key position (default: where the head attends most from the query)' },
    top: { value: 'N', help: 'sources per side and pairs to list (default 20)' },
    json: { help: 'print JSON instead of a table' },
    providers: MODEL_FLAGS.providers,
    'skip-memory-check': MODEL_FLAGS['skip-memory-check'],
    'check-memory': MODEL_FLAGS['check-memory'],
  },
};

export async function qkCommand(args: string[], io: Io = processIo()): Promise<number> {
  const parsed = parseFlags(QK, args);
  if (parsed === 'help') {
    io.out(usageOf(QK));
    return 0;
  }
  const f: Flags = parsed;
  f.required('model');
  const transcoders = f.required('transcoders');
  const layer = f.int('layer', { min: 0 });
  const head = f.int('head', { min: 0 });
  if (layer === undefined) f.fail('--layer is required');
  if (head === undefined) f.fail('--head is required');
  const query = f.int('query', { min: 0 });
  const key = f.int('key', { min: 0 });
  const top = f.int('top', { min: 1 }) ?? 20;
  checkInputFolder(transcoders, 'transcoders folder');
  const selection = readText(f, io);
  // float32: the split is exact for float32 activations, as graphs are.
  const model = await loadModel(f, io, { precision: 'float32' });
  let attributor: Attributor | undefined;
  let done = false;
  try {
    const text = promptOf(f, model, selection);
    const ids = model.tokenizer.encodeForModel(text).ids;
    if (ids.length === 0) throw new ResidualError('the text produced no tokens', 'qk');
    if (ids.length > model.config.nCtx) f.fail(`--text is ${ids.length} tokens, more than the model's context of ${model.config.nCtx}`);
    const L = model.config.nLayers;
    const H = model.config.nHeads;
    if (layer! >= L) f.fail(`--layer ${layer} does not exist (the model has layers 0..${L - 1})`);
    if (head! >= H) f.fail(`--head ${head} does not exist (the model has heads 0..${H - 1})`);
    const last = ids.length - 1;
    if (query !== undefined && query > last) f.fail(`--query ${query} does not exist: the text has ${ids.length} tokens (positions 0..${last})`);
    if (key !== undefined && key > (query ?? last)) f.fail(`--key ${key} is after the query (${query ?? last}): a causal head cannot attend there`);
    attributor = new Attributor(model, loadTranscoders(transcoders, model.config));
    const r = await qkAttribution(attributor, ids, { layer: layer!, head: head!, query, key, top });
    io.out(f.bool('json') ? JSON.stringify(toJson(r, model, ids), null, 1) + '\n' : toText(r, model, ids));
    done = true;
  } finally {
    await attributor?.dispose();
    await release(io, done, model);
  }
  return 0;
}

function tokenTexts(model: Model, ids: number[]): (pos: number) => string {
  return (pos) => model.tokenizer.tokenDisplay(ids[pos]);
}

function toJson(r: QkAttribution, model: Model, ids: number[]) {
  const text = tokenTexts(model, ids);
  const src = (s: QkSource) => ({ ...s, label: describeQkSource(s, text) });
  return {
    layer: r.layer,
    head: r.head,
    query: { position: r.query, token: text(r.query) },
    key: { position: r.key, token: text(r.key) },
    d_head: r.dHead,
    score: r.score,
    real_score: r.realScore,
    pattern: r.pattern,
    query_side: r.querySide.map((x) => ({ source: src(x.source), value: x.value })),
    key_side: r.keySide.map((x) => ({ source: src(x.source), value: x.value })),
    pairs: r.pairs.map((x) => ({ query: src(x.query), key: src(x.key), value: x.value })),
    pairs_listed_sum: r.pairsListed,
    by_kind: r.byKind,
    n_query_sources: r.nQuerySources,
    n_key_sources: r.nKeySources,
  };
}

function toText(r: QkAttribution, model: Model, ids: number[]): string {
  const text = tokenTexts(model, ids);
  const v = (x: number) => `${x >= 0 ? ' ' : ''}${x.toFixed(4)}`;
  const lines = [
    `blocks.${r.layer}.attn head ${r.head}: query ${r.query} ${JSON.stringify(text(r.query))} → key ${r.key} ${JSON.stringify(text(r.key))}`,
    `score q·k/√${r.dHead} = ${r.score.toFixed(4)} (the model's: ${r.realScore.toFixed(4)}), attention weight ${r.pattern.toFixed(4)}`,
    `by kind (query × key), summing to the score:`,
    ...r.byKind.filter((c) => c.value !== 0).map((c) => `  ${`${c.query} × ${c.key}`.padEnd(22)} ${v(c.value)}`),
    `query side (q_s · k), ${r.nQuerySources} sources; the largest:`,
    ...r.querySide.map((x) => `  ${describeQkSource(x.source, text).padEnd(36)} ${v(x.value)}`),
    `key side (q · k_t), ${r.nKeySources} sources; the largest:`,
    ...r.keySide.map((x) => `  ${describeQkSource(x.source, text).padEnd(36)} ${v(x.value)}`),
    `largest pairs (q_s · k_t), ${r.pairs.length} listed summing to ${r.pairsListed.toFixed(4)}:`,
    ...r.pairs.map((x) => `  ${describeQkSource(x.query, text)} × ${describeQkSource(x.key, text)}  ${v(x.value)}`),
  ];
  return lines.join('\n') + '\n';
}
