/**
 * "Analyze Selection" as plain data: tokens with offsets, the next-token prediction, per-layer residual statistics
 * and the logit lens at every layer and position. Both the extension and the CLI return exactly this.
 */
import { chatSpans, renderChatPrompt, templateTokenCount, type ChatTemplate } from './chat';
import type { CancelToken } from './errors';
import { ResidualError, throwIfCancelled } from './errors';
import { hookName, type HookName } from './hooks';
import { row, type Model } from './model';
import { layerDetailHooks, layerDetail, type LayerDetailOptions } from './layers/stats';
import { topK } from './numeric';
import type { Analysis, LayerStats, Readout, TopToken } from './results';

export type { Analysis, LayerStats, Readout, TopToken };

export interface AnalyzeOptions {
  maxTokens?: number;
  /** Also compute attention, MLP sparsity, massive activations, spectra and voids (default true). */
  perLayer?: boolean | LayerDetailOptions;
  topK?: number;
  lensK?: number;
  /**
   * FLOPs the logit lens may spend (default DEFAULT_LENS_GFLOP · 1e9; Infinity: every position). Each read-out ×
   * position costs 2·d_model·vocab; over budget, the lens covers the last positions that fit (at least one).
   */
  lensFlops?: number;
  cancel?: CancelToken;
  /** Wrap the text as a user turn in this chat template (see chat.ts); template tokens are marked in `tokens`. */
  chat?: ChatTemplate;
}

/** Default lens budget in GFLOP: about a second on two CPU cores; all 128 positions of GPT-2 small fit. */
export const DEFAULT_LENS_GFLOP = 150;

export async function analyze(model: Model, text: string, opts: AnalyzeOptions = {}): Promise<Analysis> {
  const t0 = performance.now();
  const c = model.config;
  if (text.length === 0) throw new ResidualError('the selection is empty: select some text, or put the cursor on a non-empty line', 'input');
  // Numbers from the panels and the command line reach here as numbers: NaN or Infinity must not become a silent 0.
  if (opts.maxTokens !== undefined && !(opts.maxTokens >= 1)) throw new ResidualError(`maxTokens must be a number ≥ 1, got ${opts.maxTokens}`, 'analysis');
  for (const [name, v] of [['topK', opts.topK], ['lensK', opts.lensK]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new ResidualError(`${name} must be a positive integer, got ${v}`, 'analysis');
  }
  if (opts.lensFlops !== undefined && !(opts.lensFlops > 0)) throw new ResidualError(`the logit-lens budget must be a positive number of FLOPs (Infinity: no limit), got ${opts.lensFlops}`, 'analysis');
  // The beginning-of-sequence token (when the tokenizer adds one) takes one position of the context.
  const bos = model.tokenizer.prependsBos ? 1 : 0;
  const limit = Math.max(1, Math.floor(Math.min(opts.maxTokens ?? c.nCtx, c.nCtx)) - bos);
  // A huge selection is cut before tokenizing (no token is longer than this many characters in practice); the
  // first token of the cut text may be a fragment, so it is dropped.
  const maxChars = limit * 64;
  const cut = text.length > maxChars ? text.length - maxChars : 0;
  const kept = cut ? text.slice(cut) : text;
  // In chat form the template's tokens come first; the selection's offsets are mapped back from the rendered text.
  const prompt = opts.chat ? renderChatPrompt(opts.chat, kept) : undefined;
  const enc = model.tokenizer.encode(prompt ? prompt.text : kept);
  let tokens = (prompt ? chatSpans(prompt, enc.tokens) : enc.tokens).map((t) => (cut ? { ...t, start: t.start + cut, end: t.end + cut } : t));
  if (cut) {
    const fragment = tokens.findIndex((t) => !t.template);
    tokens = tokens.filter((_, i) => i !== fragment);
  }
  const tokenizeMs = performance.now() - t0;
  if (tokens.length === 0) throw new ResidualError('the selection produced no tokens', 'input');
  let truncated: Analysis['truncated'];
  if (tokens.length > limit || cut) {
    // Keep the end: the prediction after the last token is what the panels are about.
    const total = cut ? undefined : tokens.length;
    tokens = tokens.slice(Math.max(0, tokens.length - limit));
    truncated = { kept: tokens.length, firstChar: (tokens.find((t) => !t.template) ?? tokens[0]).start, total };
  }
  if (bos) {
    // withBos adds none when the text (or the chat template) starts with it; one it adds to a chat prompt is the template's.
    const withBos = model.tokenizer.withBos({ ids: [], tokens }).tokens;
    if (prompt && withBos !== tokens) withBos[0] = { ...withBos[0], template: true };
    tokens = withBos;
  }
  const ids = tokens.map((t) => t.id);
  const P = ids.length;
  const L = c.nLayers;
  const D = c.dModel;

  const readouts: { layer: number; hook: HookName }[] = [];
  for (let l = 0; l < L; l++) readouts.push({ layer: l, hook: hookName(l, 'hook_resid_pre') });
  readouts.push({ layer: L, hook: hookName(L - 1, 'hook_resid_post') });
  const hooks: HookName[] = ['logits', ...readouts.map((r) => r.hook)];
  for (let l = 0; l < L; l++) hooks.push(hookName(l, 'hook_attn_out'), hookName(l, 'hook_mlp_out'));
  const wantPerLayer = opts.perLayer !== false;
  if (wantPerLayer) for (const h of layerDetailHooks(L)) if (!hooks.includes(h)) hooks.push(h);

  // Real logits only at the last position (the prediction the panels are about): the unembedding over every position
  // is the largest product of the forward pass, and the per-position predictions come from the lens below.
  const run = await model.run({ ids, hooks, logitPositions: [P - 1], cancel: opts.cancel });
  throwIfCancelled(opts.cancel);
  const act = run.activations;
  const logits = act.get('logits')!;
  const V = c.vocabSize;
  const lastLogits = logits.data.subarray(0, V);
  // NaN/Inf anywhere is a broken model (or one that overflows): say where it starts and which weight, not garbage.
  if (!lastLogits.every(Number.isFinite)) throw await model.nonFiniteError(ids, 'logits', opts.cancel);
  // Ids the tokenizer lacks (padded embedding rows) read as `<unused N>` (tokenText); they never stop the analysis.
  const top = topK(lastLogits, opts.topK ?? 5).map(({ id, logit, prob }) => ({ id, text: model.tokenizer.tokenText(id), prob, logit }));

  const residNorm = readouts.map((r) => range(P).map((p) => norm(row(act.get(r.hook)!, p))));
  if (!residNorm.every((r) => r.every(Number.isFinite))) throw await model.nonFiniteError(ids, 'activations', opts.cancel);
  const stats: LayerStats[] = [];
  for (let l = 0; l < L; l++) {
    const pre = act.get(readouts[l].hook)!;
    const post = act.get(readouts[l + 1].hook)!;
    const s: LayerStats = { layer: l, update_norm: [], drift_cos: [], attn_norm: [], mlp_norm: [] };
    for (let p = 0; p < P; p++) {
      const a = row(pre, p);
      const b = row(post, p);
      let diff = 0;
      for (let d = 0; d < D; d++) diff += (b[d] - a[d]) ** 2;
      s.update_norm.push(Math.sqrt(diff) / norm(a));
      s.drift_cos.push(dot(a, b) / (norm(a) * norm(b)));
      s.attn_norm.push(norm(row(act.get(hookName(l, 'hook_attn_out'))!, p)));
      s.mlp_norm.push(norm(row(act.get(hookName(l, 'hook_mlp_out'))!, p)));
    }
    stats.push(s);
  }

  const perLayer = wantPerLayer ? layerDetail(act, c, stats, typeof opts.perLayer === 'object' ? opts.perLayer : {}) : undefined;

  // Logit lens over the read-outs × positions within the budget.
  const t1 = performance.now();
  const R = readouts.length;
  const K = opts.lensK ?? 5;
  // Positions lensFrom..P−1 (Q of them) within the budget.
  const perPosition = R * 2 * D * c.vocabSize;
  const budget = opts.lensFlops ?? DEFAULT_LENS_GFLOP * 1e9;
  const Q = Math.max(1, Math.min(P, Math.floor(budget / perPosition)));
  const lensFrom = P - Q;
  const rows = (hook: HookName) => act.get(hook)!.data.subarray(lensFrom * D, P * D);
  // The last read-out through ln_final and the unembedding is the model's own prediction at every position: it gives
  // the per-position targets (top-1) whose probability and rank every earlier read-out reports.
  const finalOut = await model.lens({ resid_ND: rows(readouts[R - 1].hook), targets: new Array(Q).fill(0), k: K });
  const kf = finalOut.topIds_NK.length / Q;
  const lensTargets = Array.from({ length: Q }, (_, q) => finalOut.topIds_NK[q * kf]);
  const targetIds = [...new Array<number>(lensFrom).fill(-1), ...lensTargets];
  const resid_ND = new Float32Array((R - 1) * Q * D);
  readouts.slice(0, R - 1).forEach((r, i) => resid_ND.set(rows(r.hook), i * Q * D));
  const early = await model.lens({ resid_ND, targets: readouts.slice(0, R - 1).flatMap(() => lensTargets), k: K });
  const concat = <T extends Float32Array | Int32Array>(a: T, b: T): T => {
    const out = new (a.constructor as { new (n: number): T })(a.length + b.length);
    out.set(a);
    out.set(b, a.length);
    return out;
  };
  const lensOut = {
    topIds_NK: concat(early.topIds_NK, finalOut.topIds_NK),
    topProbs_NK: concat(early.topProbs_NK, finalOut.topProbs_NK),
    targetProb_N: concat(early.targetProb_N, Float32Array.from({ length: Q }, (_, q) => finalOut.topProbs_NK[q * kf])),
    targetRank_N: concat(early.targetRank_N, new Int32Array(Q)),
  };
  const lensMs = performance.now() - t1;
  const lens: TopToken[][][] = [];
  const prob: number[][] = [];
  const rank: number[][] = [];
  for (let r = 0; r < R; r++) {
    lens.push([]);
    prob.push([]);
    rank.push([]);
    for (let p = 0; p < P; p++) {
      if (p < lensFrom) {
        lens[r].push([]);
        prob[r].push(NaN);
        rank[r].push(NaN);
        continue;
      }
      const n = r * Q + (p - lensFrom);
      const ks = Math.min(K, lensOut.topIds_NK.length / (R * Q));
      const tops: TopToken[] = [];
      for (let j = 0; j < ks; j++) {
        const id = lensOut.topIds_NK[n * ks + j];
        tops.push({ id, text: model.tokenizer.tokenText(id), prob: lensOut.topProbs_NK[n * ks + j] });
      }
      lens[r].push(tops);
      prob[r].push(lensOut.targetProb_N[n]);
      rank[r].push(lensOut.targetRank_N[n]);
    }
  }
  return {
    model: model.info,
    provider: model.provider,
    ...(model.adapter ? { adapter: model.adapter } : {}),
    attempts: model.attempts,
    text,
    tokens,
    truncated,
    ...(prompt ? { chat: { template: prompt.source, added: templateTokenCount(tokens) } } : {}),
    top,
    readouts,
    residNorm,
    lens,
    lensFrom,
    target: { ids: targetIds, texts: targetIds.map((i) => (i < 0 ? '' : model.tokenizer.tokenText(i))), prob, rank },
    stats,
    perLayer,
    timings: { tokenizeMs, forwardMs: run.ms, lensMs, totalMs: performance.now() - t0 },
  };
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
function norm(a: Float32Array): number {
  return Math.sqrt(dot(a, a));
}
function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
