/**
 * `residual analyze`: logit lens, residual statistics and per-layer detail of one text (JSON fields: CLI.md).
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { analyze, type Analysis } from '../engine/analysis';
import { ResidualError } from '../engine/errors';
import { Model } from '../engine/model';
import { silenceOrt } from '../engine/runtime/session';

export async function analyzeCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      text: { type: 'string' },
      json: { type: 'boolean', default: false },
      'max-tokens': { type: 'string' },
      providers: { type: 'string' },
      top: { type: 'string', default: '5' },
      precision: { type: 'string', default: 'float32' },
      'check-memory': { type: 'boolean', default: false },
      'lens-gflop': { type: 'string' },
    },
    strict: true,
  });
  if (!values.model) throw new ResidualError('--model DIR is required', 'residual analyze');
  if (values.precision !== 'float32' && values.precision !== 'float16') throw new ResidualError(`--precision must be float32 or float16, got "${values.precision}"`, 'residual analyze');
  if (values.text === undefined) throw new ResidualError('--text TEXT is required (use --text - for standard input)', 'residual analyze');
  const text = values.text === '-' ? fs.readFileSync(0, 'utf8') : values.text;
  silenceOrt();
  const model = await Model.load(values.model, {
    providers: values.providers?.split(',').map((s) => s.trim()),
    precision: values.precision,
    memoryCheck: values['check-memory'],
  });
  try {
    const a = await analyze(model, text, {
      maxTokens: values['max-tokens'] ? Number(values['max-tokens']) : undefined,
      topK: Number(values.top),
      lensK: Number(values.top),
      lensFlops: values['lens-gflop'] === undefined ? undefined : Number(values['lens-gflop']) > 0 ? Number(values['lens-gflop']) * 1e9 : Infinity,
    });
    if (a.truncated) process.stderr.write(`residual: analysed only the last ${a.truncated.kept} tokens${a.truncated.total ? ` of ${a.truncated.total}` : ''}, from character ${a.truncated.firstChar} (model context or --max-tokens)\n`);
    process.stdout.write(values.json ? JSON.stringify(toJson(a), null, 1) + '\n' : toText(a));
  } finally {
    await model.dispose();
  }
  return 0;
}

/** The JSON of `analyze` as CLI.md defines it (plus a few extra fields). */
export function toJson(a: Analysis) {
  return {
    model: a.model,
    provider: a.provider,
    tokens: a.tokens,
    truncated: a.truncated ?? null,
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
    `tokens (${a.tokens.length}): ${a.tokens.map((t) => JSON.stringify(t.text)).join(' ')}`,
    `next token: ${a.top.map((t) => `${JSON.stringify(t.text)} ${(t.prob * 100).toFixed(1)}%`).join(', ')}`,
    'logit lens at the last position:',
    ...a.readouts.map((r, i) => `  ${r.hook.padEnd(26)} ${a.lens[i][a.tokens.length - 1].map((t) => JSON.stringify(t.text)).join(' ')}`),
  ];
  return lines.join('\n') + '\n';
}
