/**
 * Activation patching (issue 6): for every block l and position p, rerun the corrupted prompt with the clean
 * prompt's residual vector at `blocks.{l}.{point}`, position p, put in its place, and measure how much of the logit
 * difference logit[clean answer] − logit[corrupted answer] at the last position comes back.
 *
 * The patch is a per-position steering addition (clean − corrupted at p, zeros elsewhere) at exactly that hook, so the
 * patched run sees the clean vector there (up to float32 rounding of corrupted + (clean − corrupted)). Where the two
 * vectors are identical (positions before the first differing token, at every layer: attention is causal) the
 * addition is zero, which changes nothing bit for bit, so that run is skipped and its restored fraction is exactly 0.
 *
 * Every restored fraction divides by LD_clean − LD_corrupted. When that gap is small next to the spread of the logits
 * (under NEAR_ZERO_GAP of their standard deviation), a patch anywhere moves the logit difference by as much as the gap
 * itself and the fractions land anywhere (2.0, −1.2, …): the report's notes then say the fractions are meaningless, and
 * fractions far outside 0–1 are pointed out in any case.
 */
import type { CancelToken } from '../errors';
import { ResidualError, throwIfCancelled } from '../errors';
import { hookName, type HookName } from '../hooks';
import type { Model, RunResult } from '../model';
import { argmax } from '../numeric';
import { STEER_POINTS, type SteerPoint } from '../onnx/ops';
import type { PatchingResult, TokenSpan } from '../results';

export type PatchPoint = SteerPoint;

export interface PatchingRequest {
  clean: string;
  corrupted: string;
  /** Answer texts; each defaults to its own run's top-1 prediction at the last position. Only the first token counts. */
  cleanAnswer?: string;
  corruptedAnswer?: string;
  /** Which residual point of each block to patch (default hook_resid_pre). */
  point?: PatchPoint;
}

export interface PatchingOptions {
  cancel?: CancelToken;
  /** Called after each (layer, position) with the number done out of L × P. */
  onProgress?: (done: number, total: number) => void;
}

/** `hook` is the patched point of every block (e.g. "hook_resid_pre": `blocks.{l}.hook_resid_pre`). */
export type PatchingReport = PatchingResult & { notes: string[] };

/** A clean–corrupted gap under this fraction of the logits' standard deviation makes the restored fractions noise. */
export const NEAR_ZERO_GAP = 0.05;

/** Standard deviation of a logit row, in float64. */
function logitSpread(row: Float32Array): number {
  let mean = 0;
  for (const x of row) mean += x;
  mean /= row.length;
  let v = 0;
  for (const x of row) v += (x - mean) ** 2;
  return Math.sqrt(v / row.length);
}

/** A clean/corrupted pair tokenized, both run once with the logits and `hooks`, and the logit difference each gives (shared with path patching). */
export interface PatchingSetup {
  clean: { ids: number[]; tokens: TokenSpan[] };
  corrupted: { ids: number[]; tokens: TokenSpan[] };
  P: number;
  cleanRun: RunResult;
  corrRun: RunResult;
  answers: PatchingResult['answers'];
  /** logit[clean answer] − logit[corrupted answer] of a last-position logit row. */
  ld: (logits: Float32Array) => number;
  ldClean: number;
  ldCorrupted: number;
  /** ldClean − ldCorrupted. */
  span: number;
  gapIsNoise: boolean;
  notes: string[];
}

export async function preparePatching(model: Model, req: Omit<PatchingRequest, 'point'>, hooks: readonly HookName[], cancel?: CancelToken): Promise<PatchingSetup> {
  const c = model.config;
  const V = c.vocabSize;
  if (!req.clean) throw new ResidualError('the clean prompt is empty', 'patching');
  if (!req.corrupted) throw new ResidualError('the corrupted prompt is empty', 'patching');
  const clean = model.tokenizer.encodeForModel(req.clean);
  const corrupted = model.tokenizer.encodeForModel(req.corrupted);
  const P = clean.ids.length;
  if (P === 0) throw new ResidualError('the clean prompt produced no tokens', 'patching');
  if (corrupted.ids.length !== P) {
    throw new ResidualError(
      `the clean prompt has ${P} tokens but the corrupted prompt has ${corrupted.ids.length}; patching compares position by position, ` +
        'so edit the corrupted prompt until it has the same number of tokens (swap words for words of the same token length)',
      'patching',
    );
  }
  if (P > c.nCtx) throw new ResidualError(`the prompts have ${P} tokens, more than the model's context of ${c.nCtx}`, 'patching');

  // Only the last position's logits are measured: every run computes just that row of the unembedding.
  const last = [P - 1];
  const runHooks: HookName[] = ['logits', ...hooks];
  const cleanRun = await model.run({ ids: clean.ids, hooks: runHooks, logitPositions: last, cancel });
  const corrRun = await model.run({ ids: corrupted.ids, hooks: runHooks, logitPositions: last, cancel });
  const lastRow = (logits: Float32Array) => logits.subarray(0, V);
  const cleanLogits = lastRow(cleanRun.activations.get('logits')!.data);
  const corrLogits = lastRow(corrRun.activations.get('logits')!.data);
  for (const [name, row, ids] of [['clean', cleanLogits, clean.ids], ['corrupted', corrLogits, corrupted.ids]] as const) {
    if (!row.every(Number.isFinite)) throw await model.nonFiniteError(ids, `logits on the ${name} prompt`, cancel);
  }

  const notes: string[] = [];
  const answer = (text: string | undefined, logits: Float32Array, which: string): { id: number; text: string } => {
    if (text === undefined || text === '') {
      const id = argmax(logits);
      return { id, text: model.tokenizer.tokenText(id) };
    }
    const enc = model.tokenizer.encode(text);
    if (enc.ids.length === 0) throw new ResidualError(`the ${which} answer "${text}" produced no tokens`, 'patching');
    const id = enc.ids[0];
    const tokenText = model.tokenizer.tokenText(id);
    if (enc.ids.length > 1) {
      notes.push(`the ${which} answer ${JSON.stringify(text)} is ${enc.ids.length} tokens; only its first token ${JSON.stringify(tokenText)} is measured`);
    }
    return { id, text: tokenText };
  };
  const answers = {
    clean: answer(req.cleanAnswer, cleanLogits, 'clean'),
    corrupted: answer(req.corruptedAnswer, corrLogits, 'corrupted'),
  };
  if (answers.clean.id === answers.corrupted.id) {
    const how = req.cleanAnswer || req.corruptedAnswer ? 'both answers are' : 'both prompts predict';
    throw new ResidualError(
      `${how} the same token ${JSON.stringify(answers.clean.text)}, so the logit difference would be 0 everywhere; ` +
        'give two different answers, or edit the corrupted prompt so that it predicts something else',
      'patching',
    );
  }
  const ld = (logits: Float32Array) => logits[answers.clean.id] - logits[answers.corrupted.id];
  const ldClean = ld(cleanLogits);
  const ldCorrupted = ld(corrLogits);
  const span = ldClean - ldCorrupted;
  if (!(Math.abs(span) > 1e-6)) {
    throw new ResidualError(
      `the logit difference is the same on both prompts (${ldClean.toFixed(6)}), so there is nothing to restore; edit the corrupted prompt`,
      'patching',
    );
  }
  const spread = Math.max(logitSpread(cleanLogits), logitSpread(corrLogits));
  const f = (x: number) => x.toFixed(4);
  const gapIsNoise = Math.abs(span) < NEAR_ZERO_GAP * spread;
  if (gapIsNoise) {
    notes.push(
      `the logit difference barely changes between the prompts (clean ${f(ldClean)}, corrupted ${f(ldCorrupted)}: a gap of ${f(span)}, next to a spread of ${f(spread)} in the logits), ` +
        'and every restored fraction is divided by that gap — the fractions are dominated by noise and meaningless; choose a corrupted prompt (or answers) that change the logit difference more',
    );
  }

  return { clean, corrupted, P, cleanRun, corrRun, answers, ld, ldClean, ldCorrupted, span, gapIsNoise, notes };
}

export async function activationPatching(model: Model, req: PatchingRequest, opts: PatchingOptions = {}): Promise<PatchingReport> {
  const t0 = performance.now();
  const c = model.config;
  const L = c.nLayers;
  const D = c.dModel;
  const V = c.vocabSize;
  const point: PatchPoint = req.point ?? 'hook_resid_pre';
  if (!STEER_POINTS.includes(point)) {
    throw new ResidualError(`cannot patch at "${point}"; choose hook_resid_pre, hook_resid_mid or hook_resid_post`, 'patching');
  }
  const hooks = Array.from({ length: L }, (_, l) => hookName(l, point));
  const { clean, corrupted, P, cleanRun, corrRun, answers, ld, ldClean, ldCorrupted, span, gapIsNoise, notes } = await preparePatching(model, req, hooks, opts.cancel);
  const last = [P - 1];
  const lastRow = (logits: Float32Array) => logits.subarray(0, V);
  const f = (x: number) => x.toFixed(4);

  const restored: number[][] = [];
  const total = L * P;
  let done = 0;
  const add = new Float32Array(P * D);
  for (let l = 0; l < L; l++) {
    const name = hookName(l, point);
    const cleanX = cleanRun.activations.get(name)!.data;
    const corrX = corrRun.activations.get(name)!.data;
    const rowOut: number[] = [];
    for (let p = 0; p < P; p++) {
      throwIfCancelled(opts.cancel);
      let differs = false;
      for (let d = 0; d < D; d++) {
        const v = cleanX[p * D + d] - corrX[p * D + d];
        add[p * D + d] = v;
        if (v !== 0) differs = true;
      }
      if (!differs) {
        rowOut.push(0);
      } else {
        const run = await model.run({ ids: corrupted.ids, hooks: ['logits'], steer: [{ layer: l, point, add }], logitPositions: last, cancel: opts.cancel });
        rowOut.push((ld(lastRow(run.activations.get('logits')!.data)) - ldCorrupted) / span);
      }
      add.fill(0, p * D, (p + 1) * D);
      opts.onProgress?.(++done, total);
    }
    restored.push(rowOut);
  }
  throwIfCancelled(opts.cancel);
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of restored) {
    for (const x of r) {
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
    }
  }
  if (!gapIsNoise && (lo < -1 || hi > 2)) {
    notes.push(
      `restored fractions range from ${lo.toFixed(2)} to ${hi.toFixed(2)}, well outside 0–1: some patches move the logit difference by more than the clean–corrupted gap (${f(span)}) — read them as "overshoots", not as shares of the effect`,
    );
  }

  return {
    hook: point,
    clean: { text: req.clean, tokens: clean.tokens },
    corrupted: { text: req.corrupted, tokens: corrupted.tokens },
    answers,
    ldClean,
    ldCorrupted,
    restored,
    ms: performance.now() - t0,
    notes,
  };
}

/** Replacement words tried for a word of the clean prompt (capitalised ones for names, others for identifiers). */
const NAME_SWAPS = ['Mary', 'John', 'Alice', 'Bob', 'Paris', 'London', 'Tom', 'Anna'];
const WORD_SWAPS = ['x', 'y', 'j', 'k', 'value', 'item', 'count', 'total', 'name', 'data', 'cat', 'dog', 'red', 'blue'];
/** At most this many candidates are run through the model (the rest are checked by token count only). */
const SUGGEST_RUNS = 8;

export interface CorruptionSuggestion {
  corrupted: string;
  /** What was replaced, e.g. `"10" → "11"`. */
  change: string;
  /** Whether the model's top next token differs between the two (a pair patching can say something about). */
  changesPrediction: boolean;
}

/**
 * A corrupted prompt to start from: the last number or word of `clean` replaced by another one of the same token
 * length (positions must line up), preferring a replacement that changes the model's next-token prediction.
 * Undefined when no replacement keeps the token count. `asRun` gives the text the model runs for a prompt (the chat
 * form wraps it); token counts and predictions are of that text.
 */
export async function suggestCorruption(
  model: Model,
  clean: string,
  opts: { cancel?: CancelToken; asRun?: (text: string) => string } = {},
): Promise<CorruptionSuggestion | undefined> {
  const { cancel, asRun = (t: string) => t } = opts;
  const tok = model.tokenizer;
  const count = (text: string) => tok.encodeForModel(asRun(text)).ids.length;
  const P = count(clean);
  if (P === 0) return undefined;
  const spans = [...clean.matchAll(/\d+|[A-Za-z_][A-Za-z0-9_]*/g)].reverse().slice(0, 12);
  const candidates: CorruptionSuggestion[] = [];
  for (const m of spans) {
    const word = m[0];
    const at = m.index!;
    const options = /^\d+$/.test(word)
      ? [1, 2, 3, -1, 5, 7].map((d) => String(Number(word) + d)).filter((w) => w.length === word.length && !w.startsWith('-'))
      : (/^[A-Z]/.test(word) ? NAME_SWAPS : WORD_SWAPS).filter((w) => w !== word);
    for (const w of options) {
      const corrupted = clean.slice(0, at) + w + clean.slice(at + word.length);
      if (count(corrupted) === P) candidates.push({ corrupted, change: `${JSON.stringify(word)} → ${JSON.stringify(w)}`, changesPrediction: false });
    }
    if (candidates.length >= SUGGEST_RUNS) break;
  }
  if (candidates.length === 0) return undefined;
  const top = async (text: string) => {
    const ids = tok.encodeForModel(asRun(text)).ids;
    const run = await model.run({ ids, hooks: ['logits'], logitPositions: [ids.length - 1], cancel });
    return argmax(run.activations.get('logits')!.data.subarray(0, model.config.vocabSize));
  };
  const cleanTop = await top(clean);
  for (const c of candidates.slice(0, SUGGEST_RUNS)) {
    throwIfCancelled(cancel);
    if ((await top(c.corrupted)) !== cleanTop) return { ...c, changesPrediction: true };
  }
  return candidates[0];
}
