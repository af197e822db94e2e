/**
 * `residual dla`: direct logit attribution of a target token (or a logit difference) at one position, through the
 * final norm with its scale frozen (engine/dla.ts; JSON shape: CLI.md).
 */
import { directLogitAttribution, tokenIdOf } from '../engine/dla';
import type { DlaResult } from '../engine/results';
import { parseFlags, usageOf, type CommandSpec, type Flags } from './args';
import { loadModel, MODEL_FLAGS, promptOf, precisionOf, processIo, readText, release, type Io } from './common';

export const DLA: CommandSpec = {
  name: 'dla',
  synopsis: '--model DIR --text TEXT [--target TOKEN [--contrast TOKEN]] [--position P] [--json]',
  summary: 'Direct logit attribution: what each head, MLP, neuron and embedding writes into one logit (or a logit difference) at one position; the parts sum to the logit.',
  flags: {
    model: MODEL_FLAGS.model,
    text: MODEL_FLAGS.text,
    chat: MODEL_FLAGS.chat,
    target: { value: 'TOKEN', help: 'the token whose logit is attributed, as text (one token, often with its leading space); default the top prediction' },
    contrast: { value: 'TOKEN', help: 'attribute the logit difference target − contrast (needs --target)' },
    position: { value: 'P', help: 'the position whose prediction is attributed, 0-based (default: the last)' },
    'top-neurons': { value: 'K', help: 'how many of the largest MLP neurons to list (default 10; not added to the sum)' },
    json: { help: 'print the JSON of CLI.md instead of a table' },
    precision: MODEL_FLAGS.precision,
    providers: MODEL_FLAGS.providers,
    'skip-memory-check': MODEL_FLAGS['skip-memory-check'],
    'check-memory': MODEL_FLAGS['check-memory'],
  },
};

export async function dlaCommand(args: string[], io: Io = processIo()): Promise<number> {
  const parsed = parseFlags(DLA, args);
  if (parsed === 'help') {
    io.out(usageOf(DLA));
    return 0;
  }
  const f: Flags = parsed;
  f.required('model');
  const targetText = f.str('target');
  const contrastText = f.str('contrast');
  if (contrastText !== undefined && targetText === undefined) f.fail('--contrast needs --target (the difference is target − contrast)');
  const position = f.int('position', { min: 0 });
  const topNeurons = f.int('top-neurons', { min: 0 }) ?? 10;
  const precision = precisionOf(f);
  const selection = readText(f, io);
  const model = await loadModel(f, io, { precision });
  let done = false;
  try {
    // With --chat, the model runs the text as a user turn of its chat template.
    const text = promptOf(f, model, selection);
    const ids = model.tokenizer.encodeForModel(text).ids;
    if (ids.length > model.config.nCtx) f.fail(`--text is ${ids.length} tokens, more than the model's context of ${model.config.nCtx}`);
    if (position !== undefined && position >= ids.length) f.fail(`--position ${position} does not exist: the text has ${ids.length} tokens (positions 0..${ids.length - 1})`);
    // A token the vocabulary does not hold as one piece is a flag error: "residual dla: --target …".
    const idOf = (text: string, flag: string): number => {
      try {
        return tokenIdOf(model, text, flag);
      } catch (e) {
        return f.fail(`${flag} ${(e as Error).message.slice(flag.length + 2)}`);
      }
    };
    const target = targetText === undefined ? undefined : idOf(targetText, '--target');
    const contrast = contrastText === undefined ? undefined : idOf(contrastText, '--contrast');
    if (contrast !== undefined && contrast === target) f.fail(`--contrast ${JSON.stringify(contrastText)} is the target itself: the difference would be 0`);
    const r = await directLogitAttribution(model, ids, { target, contrast, position, topNeurons });
    io.out(f.bool('json') ? JSON.stringify(r, null, 1) + '\n' : toText(r));
    done = true;
  } finally {
    await release(io, done, model);
  }
  return 0;
}

function toText(r: DlaResult): string {
  const what = r.contrast ? `logit(${JSON.stringify(r.target.text)}) − logit(${JSON.stringify(r.contrast.text)})` : `logit(${JSON.stringify(r.target.text)})`;
  const summed = r.components.filter((c) => !c.name.includes('.neuron.'));
  const neurons = r.components.filter((c) => c.name.includes('.neuron.'));
  const top = [...summed].sort((a, b) => Math.abs(b.value) - Math.abs(a.value)).slice(0, 15);
  const row = (c: { name: string; value: number }) => `  ${c.name.padEnd(28)} ${c.value >= 0 ? ' ' : ''}${c.value.toFixed(4)}`;
  return [
    `${what} at position ${r.position} = ${r.logit.toFixed(4)}${r.softcap ? ` (before the final soft-cap of ${r.softcap})` : ''}`,
    `${summed.length} parts sum to it (left over: ${r.residual.toExponential(1)}); the largest:`,
    ...top.map(row),
    ...(neurons.length ? ['largest neurons (inside their MLP; not added again):', ...neurons.map(row)] : []),
  ].join('\n') + '\n';
}
