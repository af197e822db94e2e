/**
 * `residual analyze`: logit lens, residual statistics and per-layer detail of one text (JSON fields: CLI.md).
 */
import { analyze, type Analysis } from '../engine/analysis';
import { checkParity, parityLine } from '../engine/parity';
import { parseFlags, usageOf, type CommandSpec, type Flags } from './args';
import { chatTemplateOf, loadModel, MODEL_FLAGS, precisionOf, processIo, readText, release, type Io } from './common';

export const ANALYZE: CommandSpec = {
  name: 'analyze',
  synopsis: '--model DIR --text TEXT [--json] [flags]',
  summary: 'Runs the text through the model: tokens, the next-token prediction, per-layer statistics and the logit lens (JSON fields: CLI.md).',
  flags: {
    model: MODEL_FLAGS.model,
    text: MODEL_FLAGS.text,
    chat: MODEL_FLAGS.chat,
    json: { help: 'print the JSON of CLI.md instead of a text summary' },
    'max-tokens': { value: 'N', help: 'analyse at most the last N tokens (default: the model context)' },
    top: { value: 'K', help: 'next tokens and logit-lens tokens per position to show (default 5)' },
    'lens-gflop': { value: 'G', help: 'compute budget of the per-position logit lens in GFLOP (0: no limit); beyond it the lens covers the last positions only' },
    parity: { help: 'also run a short probe prompt through an independent float64 reference forward and print the largest differences (JSON: parity)' },
    precision: MODEL_FLAGS.precision,
    providers: MODEL_FLAGS.providers,
    'skip-memory-check': MODEL_FLAGS['skip-memory-check'],
    'check-memory': MODEL_FLAGS['check-memory'],
  },
};

export async function analyzeCommand(args: string[], io: Io = processIo()): Promise<number> {
  const parsed = parseFlags(ANALYZE, args);
  if (parsed === 'help') {
    io.out(usageOf(ANALYZE));
    return 0;
  }
  const f: Flags = parsed;
  f.required('model');
  const maxTokens = f.int('max-tokens', { min: 1 });
  const k = f.int('top', { min: 1 }) ?? 5;
  const lensGflop = f.num('lens-gflop', { min: 0, note: '0: no limit' });
  const precision = precisionOf(f);
  const text = readText(f, io);
  const model = await loadModel(f, io, { precision });
  // Set once the result is printed: a failure to dispose after that is a warning, not a failed run (common.ts release).
  let done = false;
  try {
    const V = model.config.vocabSize;
    if (k > V) f.fail(`--top ${k} is more than the model's vocabulary (${V} tokens)`);
    const a = await analyze(model, text, {
      chat: chatTemplateOf(f, model),
      maxTokens,
      topK: k,
      lensK: k,
      lensFlops: lensGflop === undefined ? undefined : lensGflop > 0 ? lensGflop * 1e9 : Infinity,
    });
    const parity = f.bool('parity') ? await checkParity(model) : undefined;
    if (a.truncated) io.err(`residual: analysed only the last ${a.truncated.kept} tokens${a.truncated.total ? ` of ${a.truncated.total}` : ''}, from character ${a.truncated.firstChar} (model context or --max-tokens)\n`);
    io.out(f.bool('json') ? JSON.stringify({ ...toJson(a), ...(parity ? { parity } : {}) }, null, 1) + '\n' : toText(a) + (parity ? parityLine(parity) : ''));
    done = true;
  } finally {
    await release(io, done, model);
  }
  return 0;
}

/** The JSON of `analyze` as CLI.md defines it (plus a few extra fields). */
export function toJson(a: Analysis) {
  return {
    model: a.model,
    provider: a.provider,
    adapter: a.adapter ?? null,
    attempts: (a.attempts ?? []).map(({ provider, ok, reason, warning }) => ({ provider, ok, ...(reason ? { reason } : {}), ...(warning ? { warning } : {}) })),
    tokens: a.tokens,
    truncated: a.truncated ?? null,
    // With --chat: the template's file and how many tokens it added (marked `template: true` in tokens).
    chat: a.chat ?? null,
    top: a.top,
    // Per block: the statistics of analysis.ts plus MLP sparsity, and the spectral entropy and massive activations
    // of the block's output (its resid_post read-out).
    stats: a.stats.map((s, l) => ({
      ...s,
      mlp_active: a.perLayer?.mlpSparsity.activeFraction[l],
      spectral_entropy: a.perLayer?.spectral[l + 1]?.entropy,
      massive: a.perLayer?.massive.layers[l + 1]?.hits,
      void: a.perLayer ? a.perLayer.voids.layers.includes(l) : undefined,
    })),
    heads: a.perLayer?.heads,
    spectral: a.perLayer?.spectral,
    lens: a.readouts.map((r, i) => ({ layer: r.layer, hook: r.hook, top: a.lens[i] })),
    lens_from: a.lensFrom,
    resid_norm: a.readouts.map((r, i) => ({ layer: r.layer, hook: r.hook, norm: a.residNorm[i] })),
    target: a.target,
    timings_ms: a.timings,
  };
}

function toText(a: Analysis): string {
  const lines = [
    `model ${a.model.name} (${a.model.n_layers} layers, d_model ${a.model.d_model}) on ${a.provider}`,
    `tokens (${a.tokens.length}): ${a.tokens.map((t) => (t.template ? `[${JSON.stringify(t.text)}]` : JSON.stringify(t.text))).join(' ')}`,
    ...(a.chat ? [`chat template: ${a.chat.added} tokens added (in brackets), from ${a.chat.template}`] : []),
    `next token: ${a.top.map((t) => `${JSON.stringify(t.text)} ${(t.prob * 100).toFixed(1)}%`).join(', ')}`,
    'logit lens at the last position:',
    ...a.readouts.map((r, i) => `  ${r.hook.padEnd(26)} ${a.lens[i][a.tokens.length - 1].map((t) => JSON.stringify(t.text)).join(' ')}`),
  ];
  return lines.join('\n') + '\n';
}

