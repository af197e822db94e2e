/**
 * Steering effects: what adding a direction to the residual stream does to the next-token distribution, to
 * generated text (with a KV cache), and across a layer × strength grid. Everything builds on `steerAdds`, which turns
 * a SteeringSpec into the model's per-call additive inputs for the positions a call covers, so a cached call (one
 * new token at position n) and a full recomputation add exactly the same values at the same positions.
 *
 * Conventions:
 *  - absolute strength: the vector as stored × strength; relative (`relative: true`): the vector normalised to unit
 *    length × strength × the mean ‖resid‖₂ at that hook on the analysed prompt (positions 1…P−1 — position 0 is left
 *    out because GPT-2-style models keep an outsized norm on the first token; all positions when P = 1).
 *  - positions: 'all' = every position, generated ones included; 'from' = absolute positions ≥ pos (generated ones
 *    included); 'set' = exactly those positions, all inside the prompt. Positions a call can never reach are refused
 *    (checkPositions).
 *  - a steered run whose additions or outputs are not finite, or whose residual stream grows so large that a norm's
 *    sum of squares overflows float32 (the norm then divides by Inf and every layer after it sees zeros: finite
 *    numbers, but meaningless), is reported (`nonFinite`, with `nonFiniteReason` naming the strength and the norm),
 *    never thrown and never shown as an ordinary result.
 *  - positions the prompt does not have are refused (they would steer nothing and report KL 0); in generation,
 *    `from:N` may start among the generated tokens that are read again.
 *  - an unsteered model that outputs NaN/Inf is an error saying where it starts (Model.nonFiniteError).
 */
import { mulberry32 } from '../checkpoint/random';
import { ResidualError, throwIfCancelled, type CancelToken } from '../errors';
import { hookName, type HookName } from '../hooks';
import type { KvCache, Model, SteerAdd } from '../model';
import { argmax, klDivergence, l2, logSoftmax, softmaxWeights, topK } from '../numeric';
import {
  RESID_POINTS,
  STEER_OPS,
  type GeneratedText,
  type GenerationComparison,
  type GenerationSettings,
  type NextTokenEffect,
  type SteeringSpec,
  type SteerPointName,
  type SweepResult,
  type TokenDelta,
  type TopToken,
} from '../results';
import { unescapeTokenInput } from '../tokenizer';

export type { GeneratedText, GenerationComparison, GenerationSettings, NextTokenEffect, SteeringSpec, SweepResult };

// ---- Additions ---------------------------------------------------------------------------------------------------

/** The absolute multiplier applied to `spec.vector` (strength, or strength × meanNorm / ‖v‖ when relative). */
export function steerScale(spec: SteeringSpec, meanNorm?: number): number {
  if (!Number.isFinite(spec.strength)) throw new ResidualError(`strength must be a finite number, got ${spec.strength}`, 'steering');
  if (!spec.relative) return spec.strength;
  if (meanNorm === undefined || !Number.isFinite(meanNorm)) {
    throw new ResidualError('relative strength needs the mean residual norm at the hook (meanResidNorm)', 'steering');
  }
  const n = l2(spec.vector);
  return n === 0 ? 0 : (spec.strength * meanNorm) / n;
}

/**
 * The model inputs that add `spec` to a call covering absolute positions startPos … startPos+P−1: none when the
 * call covers no steered position, one [D] addition when it steers all of them, else one [P·D] addition with zero
 * rows at the positions left alone.
 */
export function steerAdds(spec: SteeringSpec, startPos: number, P: number, meanNorm?: number): SteerAdd[] {
  validateSpec(spec);
  const D = spec.vector.length;
  const op = spec.op ?? 'add';
  // add: the vector times the strength; the other operators: the unit direction, with value and floor (model.ts).
  const scale = op === 'add' ? steerScale(spec, meanNorm) : 1 / l2(spec.vector);
  const project = op === 'add' ? undefined : { value: op === 'ablate' ? 0 : spec.value!, floor: op === 'cap' ? 0 : -Infinity };
  const row = new Float32Array(D);
  for (let d = 0; d < D; d++) row[d] = spec.vector[d] * scale;
  const steered: boolean[] = [];
  const pos = spec.positions;
  for (let p = 0; p < P; p++) {
    const abs = startPos + p;
    steered.push(pos.kind === 'all' ? true : pos.kind === 'from' ? abs >= pos.pos : pos.positions.includes(abs));
  }
  const count = steered.filter(Boolean).length;
  if (count === 0) return [];
  const base = { layer: spec.layer, point: spec.point, ...(project ? { project } : {}) };
  if (count === P) return [{ ...base, add: row }];
  const add = new Float32Array(P * D);
  for (let p = 0; p < P; p++) if (steered[p]) add.set(row, p * D);
  return [{ ...base, add }];
}

/** True when every addition is finite (otherwise the steered model would see Inf/NaN in its residual stream). */
export function addsFinite(adds: readonly SteerAdd[]): boolean {
  return adds.every((a) => a.add.every(Number.isFinite));
}

function validateSpec(spec: SteeringSpec): void {
  if (!(spec.vector instanceof Float32Array) || spec.vector.length === 0) throw new ResidualError('the steering vector is empty', 'steering');
  if (!spec.vector.every(Number.isFinite)) throw new ResidualError('the steering vector contains NaN or Inf', 'steering');
  const op = spec.op ?? 'add';
  if (!STEER_OPS.includes(op)) throw new ResidualError(`unknown operator "${op}"; use ${STEER_OPS.join(', ')}`, 'steering');
  if ((op === 'set' || op === 'cap') && !Number.isFinite(spec.value)) throw new ResidualError(`the ${op} operator needs a value (the component along the vector to ${op === 'set' ? 'set' : 'cap at'}), got ${spec.value}`, 'steering');
  if (op !== 'add' && l2(spec.vector) === 0) throw new ResidualError(`the vector is zero: it has no direction to ${op} along`, 'steering');
  if (!Number.isInteger(spec.layer) || spec.layer < 0) throw new ResidualError(`layer must be a non-negative integer, got ${spec.layer}`, 'steering');
  if (!RESID_POINTS.includes(spec.point)) throw new ResidualError(`unknown point "${spec.point}"; use ${RESID_POINTS.join(', ')}`, 'steering');
  const p = spec.positions;
  if (p.kind === 'from' && !(Number.isInteger(p.pos) && p.pos >= 0)) throw new ResidualError(`positions from ${p.pos}: expected a non-negative integer`, 'steering');
  if (p.kind === 'set' && !p.positions.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new ResidualError(`positions ${p.positions.join(',')}: expected non-negative integers`, 'steering');
  }
  if (p.kind !== 'all' && p.kind !== 'from' && p.kind !== 'set') throw new ResidualError(`unknown positions kind "${(p as { kind: string }).kind}"`, 'steering');
}

/** `all`, `from:N` or `i,j,k`, as parsePositions reads them. */
export function positionsText(p: SteeringSpec['positions']): string {
  return p.kind === 'all' ? 'all' : p.kind === 'from' ? `from:${p.pos}` : p.positions.join(',');
}

/**
 * Refuses positions past the end of a text of P tokens (positions 0…P−1): `from:N` with N ≥ P steers nothing, and so
 * does a listed position ≥ P. `extra` more positions may follow (generated tokens, which `from` reaches); `what` names
 * the text.
 */
export function checkPositions(spec: SteeringSpec, P: number, what = 'the prompt', extra = 0): void {
  const p = spec.positions;
  const end = `the end of ${what}, which has ${P} token${P === 1 ? '' : 's'} (positions 0–${P - 1})`;
  if (p.kind === 'from' && p.pos >= P + extra) {
    throw new ResidualError(
      `positions from:${p.pos} start past ${end}${extra ? `, and generation adds only ${extra} more that are read again` : ''}, so nothing would be steered; start below ${P + extra}`,
      'steering',
    );
  }
  if (p.kind === 'set') {
    const past = p.positions.filter((x) => x >= P);
    if (past.length > 0) {
      const which = past.length === p.positions.length ? '' : `position${past.length === 1 ? '' : 's'} ${past.slice(0, 8).join(',')}${past.length > 8 ? ',…' : ''} `;
      throw new ResidualError(`positions ${positionsText(p)}: ${which}past ${end}; a position the text does not have would steer nothing`, 'steering');
    }
  }
}

function checkSpecAgainstModel(model: Model, spec: SteeringSpec): void {
  const c = model.config;
  if (spec.vector.length !== c.dModel) {
    throw new ResidualError(`the vector has ${spec.vector.length} values but the model's d_model is ${c.dModel}`, 'steering');
  }
  if (spec.layer >= c.nLayers) throw new ResidualError(`layer ${spec.layer} does not exist (the model has layers 0..${c.nLayers - 1})`, 'steering');
}

// ---- Norms -------------------------------------------------------------------------------------------------------

/** Mean ‖x_p‖₂ of a [1,P,D] activation over positions 1…P−1 (all positions when P = 1). */
export function meanRowNorm(data: Float32Array, P: number, D: number): number {
  const first = P > 1 ? 1 : 0;
  let s = 0;
  for (let p = first; p < P; p++) {
    let q = 0;
    for (let d = 0; d < D; d++) q += data[p * D + d] ** 2;
    s += Math.sqrt(q);
  }
  return s / (P - first);
}

/** The unsteered model's mean residual norm at `blocks.{layer}.{point}` on `ids` (see the module comment). */
export async function meanResidNorm(model: Model, ids: number[], layer: number, point: SteerPointName, cancel?: CancelToken): Promise<number> {
  const hook = hookName(layer, point);
  const r = await model.run({ ids, hooks: [hook], cancel });
  return meanRowNorm(r.activations.get(hook)!.data, ids.length, model.config.dModel);
}

// ---- Distributions -----------------------------------------------------------------------------------------------

/** Mean over positions 0…P−2 of −log p(ids[p+1] | ≤ p), from [P,V] logits; NaN when any row is not finite. */
export function meanNextTokenLoss(logits: Float32Array, ids: number[], V: number): number {
  const P = ids.length;
  if (P < 2) return NaN;
  let s = 0;
  for (let p = 0; p < P - 1; p++) {
    const lp = logSoftmax(logits.subarray(p * V, (p + 1) * V));
    if (!lp) return NaN;
    s -= lp[ids[p + 1]];
  }
  return s / (P - 1);
}

/** The token's text; an id the tokenizer lacks (a padded embedding row) is `<unused N>`. */
function tokText(model: Model, id: number): string {
  return model.tokenizer.tokenText(id);
}

/**
 * The norm scales (one number per position: √(var + ε) or √(mean(x²) + ε)) of every norm from block `layer` on and the
 * final norm. A steered residual so large that its sum of squares overflows float32 makes one of them Inf (the norm
 * then divides by Inf and outputs zeros, and the logits stay finite but mean nothing), so these tell an overflowing
 * strength apart from an ordinary result at the cost of P numbers per norm.
 */
function normScaleHooks(model: Model, layer: number): HookName[] {
  return [...model.hooks].filter((h) => {
    if (h === 'ln_final.hook_scale') return true;
    const m = /^blocks\.(\d+)\..*\.hook_scale$/.exec(h);
    return m !== null && Number(m[1]) >= layer;
  });
}

/** The first norm scale hook of a steered run whose values are not finite, or undefined. */
function overflowedNorm(run: { activations: Map<HookName, { data: Float32Array }> }, hooks: readonly HookName[]): HookName | undefined {
  return hooks.find((h) => !run.activations.get(h)!.data.every(Number.isFinite));
}

/** Why a steered run is not a result: the strength, what it adds, and where the model overflowed. */
function overflowReason(spec: SteeringSpec, scale: number, where: HookName | 'additions' | 'logits'): string {
  const num = (x: number) => (x !== 0 && (Math.abs(x) >= 1e6 || Math.abs(x) < 1e-4) ? x.toExponential() : String(x));
  const strength = `strength ${num(spec.strength)}${spec.relative ? ' (relative)' : ''}`;
  const added = l2(spec.vector) * Math.abs(scale);
  const size = `adds a vector of norm ${added.toPrecision(3)} at blocks.${spec.layer}.${spec.point}`;
  if (where === 'additions') return `${strength} overflows float32: strength × the vector is not finite (${l2(spec.vector).toPrecision(3)} × ${Math.abs(scale).toPrecision(3)}); lower the strength`;
  if (where === 'logits') return `${strength} ${size}, and the steered model's logits are NaN or Inf; lower the strength`;
  const norm = where.replace(/\.hook_scale$/, '');
  return (
    `${strength} ${size}, which overflows the model's normalisation at ${norm}: the sum of squares of the steered residual exceeds float32's range (about 3.4e38), ` +
    'so the norm divides by Inf and every layer after it sees zeros — the steered distribution would be meaningless; lower the strength (an addition of norm above about 1e19 overflows)'
  );
}

function topTokens(model: Model, logits: Float32Array, k: number): TopToken[] {
  return topK(logits, k).map(({ id, logit, prob }) => ({ id, text: tokText(model, id), prob, logit }));
}

function encodePrompt(model: Model, text: string, what = 'input'): number[] {
  if (text.length === 0) throw new ResidualError('the text is empty', what);
  const ids = model.tokenizer.encodeForModel(text).ids;
  if (ids.length === 0) throw new ResidualError('the text produced no tokens', what);
  if (ids.length > model.config.nCtx) throw new ResidualError(`the text has ${ids.length} tokens, more than the model's context of ${model.config.nCtx}`, what);
  return ids;
}

// ---- Next-token effect -------------------------------------------------------------------------------------------

export interface NextTokenEffectOptions {
  cancel?: CancelToken;
  /**
   * How many generated tokens follow the prompt (default 0): positions past the prompt may then be steered, as in
   * generation. Steering only those (from:P) leaves the next token as the baseline's; `scale` is still the one
   * generation applies.
   */
  generated?: number;
}

/**
 * The next-token distribution at the last position of `text`, unsteered and steered: top-k of each, KL(baseline ‖
 * steered), and both probabilities of every token in either top-k. A steered run that produces NaN/Inf (or whose
 * additions overflow) gives `nonFinite: true`, an empty `steered` and kl NaN; the baseline is always returned.
 */
export async function nextTokenEffect(model: Model, text: string, spec: SteeringSpec, k = 10, opts: NextTokenEffectOptions = {}): Promise<NextTokenEffect> {
  // nextTokenEffectIds validates the spec against the model.
  return nextTokenEffectIds(model, encodePrompt(model, text), spec, k, opts);
}

/** `nextTokenEffect` for token ids. */
export async function nextTokenEffectIds(model: Model, ids: number[], spec: SteeringSpec, k = 10, opts: NextTokenEffectOptions = {}): Promise<NextTokenEffect> {
  validateSpec(spec);
  checkSpecAgainstModel(model, spec);
  if (!(Number.isInteger(k) && k >= 1)) throw new ResidualError(`the number of next tokens to show must be a positive integer, got ${k}`, 'steering');
  const P = ids.length;
  checkPositions(spec, P, 'the prompt', opts.generated ?? 0);
  const V = model.config.vocabSize;
  const hook = hookName(spec.layer, spec.point);
  const hooks: HookName[] = spec.relative ? ['logits', hook] : ['logits'];
  const base = await model.run({ ids, hooks, logitPositions: [P - 1], cancel: opts.cancel });
  const baseLast = base.activations.get('logits')!.data.subarray(0, V);
  const baseLog = logSoftmax(baseLast);
  if (!baseLog) throw await model.nonFiniteError(ids, 'logits (unsteered)', opts.cancel);
  const baseline = topTokens(model, baseLast, k);
  const meanNorm = spec.relative ? meanRowNorm(base.activations.get(hook)!.data, P, model.config.dModel) : undefined;
  // The operators other than add use the unit direction: no strength applies to them.
  const scale = (spec.op ?? 'add') === 'add' ? steerScale(spec, meanNorm) : 0;
  const adds = steerAdds(spec, 0, P, meanNorm);
  if (adds.length === 0) {
    // Nothing of the prompt is steered (only generated tokens are): the next token is the baseline's.
    const deltas = baseline.map((t) => ({ id: t.id, text: t.text, base: Math.exp(baseLog[t.id]), steered: Math.exp(baseLog[t.id]) }));
    return { baseline, steered: baseline, kl: 0, deltas, scale, nonFinite: false };
  }
  const broken = (where: HookName | 'additions' | 'logits'): NextTokenEffect => ({
    baseline,
    steered: [],
    kl: NaN,
    deltas: baseline.map((t) => ({ id: t.id, text: t.text, base: t.prob, steered: NaN })),
    scale,
    nonFinite: true,
    nonFiniteReason: overflowReason(spec, scale, where),
  });
  if (!addsFinite(adds)) return broken('additions');
  const norms = normScaleHooks(model, spec.layer);
  const st = await model.run({ ids, hooks: ['logits', ...norms], steer: adds, logitPositions: [P - 1], cancel: opts.cancel });
  const overflow = overflowedNorm(st, norms);
  if (overflow) return broken(overflow);
  const stLast = st.activations.get('logits')!.data.subarray(0, V);
  const stLog = logSoftmax(stLast);
  if (!stLog) return broken('logits');
  const steered = topTokens(model, stLast, k);
  const seen = new Set<number>();
  const deltas: TokenDelta[] = [];
  for (const t of [...baseline, ...steered]) {
    if (seen.has(t.id)) continue;
    seen.add(t.id);
    deltas.push({ id: t.id, text: t.text, base: Math.exp(baseLog[t.id]), steered: Math.exp(stLog[t.id]) });
  }
  return { baseline, steered, kl: klDivergence(baseLog, stLog), deltas, scale, nonFinite: false };
}

// ---- Generation --------------------------------------------------------------------------------------------------

export interface GenerateOptions {
  /** Feed the prompt once and then one token per call, reusing keys/values (default true). */
  useCache?: boolean;
  cancel?: CancelToken;
  onToken?: (id: number, text: string, index: number) => void;
  /** For relative strength: the mean residual norm to use (default: measured on the prompt, unsteered). */
  meanNorm?: number;
}

export interface GenerationRun extends GeneratedText {
  /** Wall time of the generation (forward passes and sampling), ms. */
  ms: number;
  /** Number of forward calls. */
  calls: number;
}

/**
 * The smallest temperature sampled with. Below it, logit / T is so large that the draw is the argmax except on exact
 * ties — and for T under about 1e-300 (denormals included) logit / T overflows to ±Inf, so the "sample" would be the
 * first token with a positive logit, not the argmax: such temperatures are refused (0 is greedy) rather than giving
 * something that silently differs from greedy.
 */
export const MIN_TEMPERATURE = 1e-6;

export function validateSettings(s: GenerationSettings): void {
  if (!Number.isInteger(s.maxNewTokens) || s.maxNewTokens < 0) throw new ResidualError(`maxNewTokens must be a non-negative integer, got ${s.maxNewTokens}`, 'generation');
  if (!(Number.isFinite(s.temperature) && s.temperature >= 0)) throw new ResidualError(`temperature must be a finite number ≥ 0 (0 = greedy), got ${s.temperature}`, 'generation');
  if (s.temperature > 0 && s.temperature < MIN_TEMPERATURE) {
    throw new ResidualError(
      `temperature ${s.temperature} is too small to sample with: below ${MIN_TEMPERATURE.toExponential()} the draw is the argmax up to rounding, and logits ÷ ${s.temperature} ${Math.abs(1 / s.temperature) === Infinity || 1 / s.temperature > 1e300 ? 'overflow to Inf (the draw would not even be the argmax)' : 'lose every difference but the largest'}; use 0 for greedy decoding, or a temperature ≥ ${MIN_TEMPERATURE.toExponential()}`,
      'generation',
    );
  }
  if (!(s.topP > 0 && s.topP <= 1)) throw new ResidualError(`top-p must be a number in (0, 1], got ${s.topP}`, 'generation');
  if (!(Number.isInteger(s.seed) && s.seed >= 0 && s.seed <= 0xffffffff)) {
    throw new ResidualError(`seed must be an integer from 0 to 4294967295 (it seeds a 32-bit generator), got ${s.seed}`, 'generation');
  }
}

/**
 * The token drawn from one logit row: argmax (lowest id on ties) at temperature 0; otherwise a draw from
 * softmax(logits / T) restricted to the top-p nucleus (the most probable tokens whose mass first reaches p, at least
 * one). The draw uses the Gumbel-max trick — argmax over the nucleus of logit/T + Gumbel noise, one noise value per
 * vocabulary id from `rng` — which samples exactly that distribution and, unlike inverting a cumulative sum over tens
 * of thousands of tokens, does not flip when the logits move by float rounding (cached vs recomputed forwards).
 */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, rng: () => number): number {
  const N = logits.length;
  // Below MIN_TEMPERATURE (which validateSettings refuses) the draw would be the argmax, or worse: take the argmax.
  if (!(temperature >= MIN_TEMPERATURE)) return argmax(logits);
  let inNucleus: Uint8Array | undefined;
  if (topP < 1) {
    const { weights: w, sum: total } = softmaxWeights(logits, temperature);
    const order = Array.from({ length: N }, (_, i) => i).sort((a, b) => w[b] - w[a] || a - b);
    inNucleus = new Uint8Array(N);
    let cum = 0;
    for (let j = 0; j < N && (j === 0 || cum < topP * total); j++) {
      inNucleus[order[j]] = 1;
      cum += w[order[j]];
    }
  }
  let best = -1;
  let bestScore = -Infinity;
  for (let i = 0; i < N; i++) {
    const u = rng();
    if (inNucleus && !inNucleus[i]) continue;
    const score = logits[i] / temperature - Math.log(-Math.log(u || Number.MIN_VALUE));
    if (score > bestScore) {
      bestScore = score;
      best = i;
    }
  }
  return best < 0 ? 0 : best;
}

/** The id that ends generation: `<|endoftext|>` (or another eos spelling) when the tokenizer has one. */
export function eosId(model: Model): number | undefined {
  for (const s of ['<|endoftext|>', '</s>', '<eos>', '<|end_of_text|>']) {
    const id = model.tokenizer.idOf(s);
    if (id !== undefined) return id;
  }
  return undefined;
}

/**
 * Continues `promptIds` by up to `maxNewTokens` tokens, greedy or sampled from a PRNG seeded with `settings.seed`,
 * steered by `spec` when given. With the cache, the prompt is fed once and then one token per call; without it,
 * every step recomputes the whole sequence. Both add the same values at the same positions, so they agree token
 * for token. Stops at eos, at the model's context, or when the model outputs NaN/Inf (`nonFinite`).
 */
export async function generate(
  model: Model,
  promptIds: number[],
  settings: GenerationSettings,
  spec?: SteeringSpec,
  opts: GenerateOptions = {},
): Promise<GenerationRun> {
  validateSettings(settings);
  const c = model.config;
  const V = c.vocabSize;
  if (promptIds.length === 0) throw new ResidualError('the prompt has no tokens', 'generation');
  if (promptIds.length > c.nCtx) throw new ResidualError(`the prompt has ${promptIds.length} tokens, more than the model's context of ${c.nCtx}`, 'generation');
  const t0 = performance.now();
  const promptLen = promptIds.length;
  let effSpec: SteeringSpec | undefined;
  let meanNorm = opts.meanNorm;
  if (spec) {
    validateSpec(spec);
    checkSpecAgainstModel(model, spec);
    // 'set' steers prompt positions only (a listed position past the prompt is refused); 'from' may start in the
    // generated tokens, as long as one that is read again (all but the last) is reached.
    checkPositions(spec, promptLen, 'the prompt', Math.max(0, Math.min(settings.maxNewTokens - 1, c.nCtx - promptLen)));
    effSpec = spec;
    if (spec.relative && meanNorm === undefined) meanNorm = await meanResidNorm(model, promptIds, spec.layer, spec.point, opts.cancel);
  }
  const addsFor = (start: number, P: number) => (effSpec ? steerAdds(effSpec, start, P, meanNorm) : []);
  const norms = effSpec ? normScaleHooks(model, effSpec.layer) : [];
  const rng = mulberry32(settings.seed >>> 0);
  const seq = [...promptIds];
  const out: number[] = [];
  const eos = eosId(model);
  const useCache = opts.useCache ?? true;
  let cache: KvCache | undefined;
  let calls = 0;
  let nonFinite = false;
  let nonFiniteReason: string | undefined;
  const finish = (): GenerationRun => {
    const tokens = out.map((id) => tokText(model, id));
    // Ids the tokenizer lacks decode as `<unused N>`.
    const text = model.tokenizer.decode(out);
    return { ids: out, tokens, text, ...(nonFinite ? { nonFinite, nonFiniteReason } : {}), ms: performance.now() - t0, calls };
  };
  const stop = (where: HookName | 'additions' | 'logits'): GenerationRun => {
    nonFinite = true;
    nonFiniteReason = overflowReason(effSpec!, steerScale(effSpec!, meanNorm), where);
    return finish();
  };
  if (settings.maxNewTokens === 0) return finish();

  // The first forward covers the whole prompt in both modes.
  let start = 0;
  let feed = seq.slice();
  for (;;) {
    throwIfCancelled(opts.cancel);
    const adds = useCache ? addsFor(start, feed.length) : addsFor(0, seq.length);
    if (!addsFinite(adds)) return stop('additions');
    const r = await model.run({
      ids: useCache ? feed : seq,
      hooks: ['logits', ...(adds.length ? norms : [])],
      steer: adds,
      past: useCache ? cache : undefined,
      wantCache: useCache,
      logitPositions: [(useCache ? feed.length : seq.length) - 1],
      cancel: opts.cancel,
    });
    calls++;
    cache = r.cache;
    const overflow = adds.length ? overflowedNorm(r, norms) : undefined;
    if (overflow) return stop(overflow);
    const last = r.activations.get('logits')!.data.subarray(0, V);
    if (!last.every(Number.isFinite)) {
      // Unsteered, the model itself is broken: say where it goes non-finite. Steered, the strength is to blame.
      if (!effSpec) throw await model.nonFiniteError(seq, 'logits', opts.cancel);
      return stop('logits');
    }
    const id = sampleToken(last, settings.temperature, settings.topP, rng);
    if (id === eos) return finish();
    out.push(id);
    seq.push(id);
    opts.onToken?.(id, tokText(model, id), out.length - 1);
    if (out.length >= settings.maxNewTokens || seq.length >= c.nCtx) return finish();
    start = seq.length - 1;
    feed = [id];
  }
}

/** Baseline and steered continuations of `text` with the same settings and seed. */
export async function compareGeneration(
  model: Model,
  text: string,
  settings: GenerationSettings,
  spec: SteeringSpec,
  opts: Omit<GenerateOptions, 'onToken'> & { onToken?: (which: 'baseline' | 'steered', id: number, text: string, index: number) => void } = {},
): Promise<GenerationComparison> {
  validateSettings(settings);
  validateSpec(spec);
  checkSpecAgainstModel(model, spec);
  const ids = encodePrompt(model, text);
  const common = { useCache: opts.useCache, cancel: opts.cancel, meanNorm: opts.meanNorm };
  const baseline = await generate(model, ids, settings, undefined, { ...common, onToken: (i, t, n) => opts.onToken?.('baseline', i, t, n) });
  const steered = await generate(model, ids, settings, spec, { ...common, onToken: (i, t, n) => opts.onToken?.('steered', i, t, n) });
  const tokens = baseline.ids.length + steered.ids.length;
  const seconds = (baseline.ms + steered.ms) / 1000;
  const strip = (g: GenerationRun): GeneratedText => ({ ids: g.ids, tokens: g.tokens, text: g.text, ...(g.nonFinite ? { nonFinite: true, nonFiniteReason: g.nonFiniteReason } : {}) });
  return { prompt: text, baseline: strip(baseline), steered: strip(steered), settings, tokensPerSecond: seconds > 0 ? tokens / seconds : 0 };
}

// ---- Sweeps ------------------------------------------------------------------------------------------------------

export interface SweepSettings {
  layers: number[];
  strengths: number[];
  point: SteerPointName;
  relative: boolean;
  /** The token whose probability at the last position is tracked: the first token of this text. */
  targetText?: string;
  /** Text on which the steered model's mean next-token loss measures degradation (at least 2 tokens). */
  neutralText: string;
  /** Where the vector is added, in the prompt and in the neutral text alike (default all positions). */
  positions?: SteeringSpec['positions'];
}

/**
 * KL from the baseline, the target token's probability and the steered model's loss on a neutral text, for every
 * layer × strength, with the vector added at `positions` (default all; refused when past the end of the prompt or
 * the neutral text). Non-finite outputs, and strengths that overflow a norm (see normScaleHooks), are recorded as NaN.
 */
export async function sweep(
  model: Model,
  text: string,
  vector: Float32Array,
  s: SweepSettings,
  opts: { cancel?: CancelToken; onProgress?: (done: number, total: number) => void } = {},
): Promise<SweepResult> {
  const t0 = performance.now();
  const c = model.config;
  const V = c.vocabSize;
  if (vector.length !== c.dModel) throw new ResidualError(`the vector has ${vector.length} values but the model's d_model is ${c.dModel}`, 'steering');
  if (s.layers.length === 0 || s.strengths.length === 0) throw new ResidualError('a sweep needs at least one layer and one strength', 'steering');
  for (const l of s.layers) {
    if (!Number.isInteger(l) || l < 0 || l >= c.nLayers) throw new ResidualError(`layer ${l} does not exist (the model has layers 0..${c.nLayers - 1})`, 'steering');
  }
  for (const x of s.strengths) if (!Number.isFinite(x)) throw new ResidualError(`strength ${x} is not a finite number`, 'steering');
  const ids = encodePrompt(model, text);
  const neutral = encodePrompt(model, s.neutralText, 'neutral text');
  if (neutral.length < 2) throw new ResidualError('the neutral text needs at least 2 tokens to measure a loss', 'neutral text');
  const P = ids.length;
  if (s.positions) {
    const probe: SteeringSpec = { vector, layer: s.layers[0], point: s.point, strength: 0, positions: s.positions };
    validateSpec(probe);
    checkPositions(probe, P);
    checkPositions(probe, neutral.length, 'the neutral text');
  }
  let target: SweepResult['target'];
  if (s.targetText !== undefined) {
    const t = model.tokenizer.encode(unescapeTokenInput(s.targetText)).ids;
    if (t.length === 0) throw new ResidualError('the target text produced no tokens', 'target');
    target = { id: t[0], text: tokText(model, t[0]) };
  }
  const hooks: HookName[] = ['logits', ...(s.relative ? s.layers.map((l) => hookName(l, s.point)) : [])];
  const base = await model.run({ ids, hooks, logitPositions: [P - 1], cancel: opts.cancel });
  const baseLog = logSoftmax(base.activations.get('logits')!.data.subarray(0, V));
  if (!baseLog) throw await model.nonFiniteError(ids, 'logits (unsteered)', opts.cancel);
  const baseNeutral = await model.run({ ids: neutral, hooks: ['logits'], cancel: opts.cancel });
  const baselineNeutralLoss = meanNextTokenLoss(baseNeutral.activations.get('logits')!.data, neutral, V);

  const kl: number[][] = [];
  const targetProb: number[][] = [];
  const neutralLoss: number[][] = [];
  const total = s.layers.length * s.strengths.length;
  let done = 0;
  for (const layer of s.layers) {
    const meanNorm = s.relative ? meanRowNorm(base.activations.get(hookName(layer, s.point))!.data, P, c.dModel) : undefined;
    const klRow: number[] = [];
    const tpRow: number[] = [];
    const nlRow: number[] = [];
    for (const strength of s.strengths) {
      throwIfCancelled(opts.cancel);
      const spec: SteeringSpec = { vector, layer, point: s.point, strength, relative: s.relative, positions: s.positions ?? { kind: 'all' } };
      const adds = steerAdds(spec, 0, P, meanNorm);
      const neutralAdds = steerAdds(spec, 0, neutral.length, meanNorm);
      let k = NaN;
      let tp = NaN;
      let nl = NaN;
      if (addsFinite(adds) && addsFinite(neutralAdds)) {
        // A norm that overflowed (see normScaleHooks) makes the cell NaN like NaN logits do: not a result.
        const norms = normScaleHooks(model, layer);
        const r = await model.run({ ids, hooks: ['logits', ...norms], steer: adds, logitPositions: [P - 1], cancel: opts.cancel });
        const lg = overflowedNorm(r, norms) ? undefined : logSoftmax(r.activations.get('logits')!.data.subarray(0, V));
        if (lg) {
          k = klDivergence(baseLog, lg);
          if (target) tp = Math.exp(lg[target.id]);
        }
        const rn = await model.run({ ids: neutral, hooks: ['logits', ...norms], steer: neutralAdds, cancel: opts.cancel });
        if (!overflowedNorm(rn, norms)) nl = meanNextTokenLoss(rn.activations.get('logits')!.data, neutral, V);
      }
      klRow.push(k);
      tpRow.push(tp);
      nlRow.push(nl);
      opts.onProgress?.(++done, total);
    }
    kl.push(klRow);
    targetProb.push(tpRow);
    neutralLoss.push(nlRow);
  }
  return {
    layers: [...s.layers],
    strengths: [...s.strengths],
    point: s.point,
    relative: s.relative,
    kl,
    targetProb,
    neutralLoss,
    baselineNeutralLoss,
    baselineTargetProb: target ? Math.exp(baseLog[target.id]) : NaN,
    target,
    neutralText: s.neutralText,
    ms: performance.now() - t0,
  };
}

/**
 * Parses `all`, `from:N`, `i,j,k` or `generated` (CLI and settings). `generated` is from the first position after the
 * prompt, so only what generation adds is steered: it needs `promptTokens`, the prompt's token count (asked only then).
 */
export function parsePositions(text: string, promptTokens?: () => number): SteeringSpec['positions'] {
  const t = text.trim();
  if (t === 'all') return { kind: 'all' };
  if (t === 'generated' && promptTokens) return { kind: 'from', pos: promptTokens() };
  const from = /^from:(\d+)$/.exec(t);
  if (from) return { kind: 'from', pos: Number(from[1]) };
  if (/^\d+(\s*,\s*\d+)*$/.test(t)) return { kind: 'set', positions: t.split(',').map((x) => Number(x.trim())) };
  throw new ResidualError(`positions "${text}": expected all, from:N or a list like 0,3,4`, 'steering');
}
