/** Overview tab: tokens, next-token prediction, residual heatmap, logit lens and the prediction trajectory. */
import type { Analysis, HeatMeasure } from '../../src/protocol';
import { badge, button, dropdown, el, heat, scroller, showToken, textField } from '../ui';
import { failureText, RequestError } from '../host';
import { getState, host, notice, update } from './store';
import { drawTrajectory } from './trajectory';
import { chooseLensCell, patchscopeView } from './patchscope';

const MEASURES: { value: HeatMeasure; label: string }[] = [
  { value: 'resid_norm', label: 'Residual norm ‖x‖' },
  { value: 'update_norm', label: 'Layer update ‖Δ‖/‖x‖' },
  { value: 'drift_cos', label: 'Drift cos(pre, post)' },
  { value: 'attn_norm', label: 'Attention output norm' },
  { value: 'mlp_norm', label: 'MLP output norm' },
];

export function overview(a: Analysis, pos: number): HTMLElement {
  const root = el('div', 'overview');
  const chatNote = a.chat ? ` Run as a user turn of the model's chat template: the ${a.chat.added} dashed tokens were added by it and are in no editor.` : '';
  root.append(section('Tokens', tokensView(a, pos), `Click a token to choose the position below; double-click to select it in the editor.${chatNote}`));
  root.append(section('Next token', topView(a)));
  root.append(section('Residual stream by layer', heatmapView(a, pos)));
  root.append(section('Logit lens (top token per layer and position)', lensView(a, pos)));
  root.append(section('Patchscope of a lens cell', patchscopeView(a, pos)));
  root.append(section(`Prediction across layers at position ${pos}`, trajectoryView(a, pos)));
  return root;
}

export function section(title: string, body: HTMLElement, hint?: string): HTMLElement {
  const s = el('section');
  s.append(el('h2', undefined, title));
  if (hint) s.append(el('p', 'hint', hint));
  s.append(body);
  return s;
}

export function header(a: Analysis, file?: string): HTMLElement {
  const h = el('header', 'summary');
  const title = el('div', 'title');
  title.append(el('strong', undefined, a.model.name), el('span', 'muted', ` ${a.model.architecture} · ${a.model.n_layers} layers · d_model ${a.model.d_model} · ${a.model.n_heads} heads · ${a.model.dtype}`));
  const meta = el('div', 'meta');
  const prov = badge(a.provider.toUpperCase());
  prov.id = 'provider';
  meta.append(prov, el('span', 'muted', ` ${a.tokens.length} tokens · ${a.timings.totalMs.toFixed(0)} ms${file ? ` · ${file}` : ''} `));
  meta.append(button('Re-run', () => host.notify({ type: 'analysis/rerun' })));
  h.append(title, meta);
  return h;
}

/** The analysed tokens as chips: a click chooses the position (shared by the tabs that work at one position). */
export function tokensView(a: Analysis, pos: number): HTMLElement {
  const box = el('div');
  box.id = 'tokens';
  a.tokens.forEach((t, i) => {
    const chip = el('span', `token${t.template ? ' template' : ''}${i === pos ? ' selected' : ''}`, showToken(t.text));
    chip.dataset.pos = String(i);
    const where = t.template ? 'added by the chat template' : `chars ${t.start}–${t.end}`;
    chip.title = `position ${i} · id ${t.id} · ${where}\nnext: ${a.target.texts[i] === undefined ? '' : JSON.stringify(a.target.texts[i])}`;
    chip.addEventListener('click', () => setPosition(i));
    // The template's tokens are in no editor: nothing to select.
    if (!t.template) chip.addEventListener('dblclick', () => host.notify({ type: 'token/reveal', start: t.start, end: t.end }));
    box.append(chip);
  });
  return box;
}

function topView(a: Analysis): HTMLElement {
  const list = el('ol');
  list.id = 'top';
  for (const t of a.top) {
    const li = el('li');
    const bar = el('span', 'bar');
    bar.style.width = `${Math.max(1, t.prob * 100).toFixed(1)}%`;
    li.append(el('code', 'tok', showToken(t.text)), el('span', 'barbox'), el('span', 'num', `${(t.prob * 100).toFixed(2)}%`));
    li.children[1].append(bar);
    li.title = `id ${t.id} · logit ${t.logit?.toFixed(3)}`;
    list.append(li);
  }
  return list;
}

function heatValues(a: Analysis, measure: HeatMeasure): { labels: string[]; values: number[][] } {
  if (measure === 'resid_norm') return { labels: a.readouts.map((r) => r.hook), values: a.residNorm };
  return { labels: a.stats.map((s) => `blocks.${s.layer}`), values: a.stats.map((s) => s[measure]) };
}

function heatmapView(a: Analysis, pos: number): HTMLElement {
  const wrap = el('div');
  const measure = getState().measure ?? 'resid_norm';
  const pick = dropdown(MEASURES.map((m) => ({ value: m.value, label: m.label })), measure, (v) => {
    update({ measure: v as HeatMeasure });
  }, 'measure');
  // Per row by default: one block (often the first) can be orders of magnitude above the others, and one global scale
  // then shows only that block.
  const scaleMode = getState().heatScale ?? 'row';
  const scalePick = dropdown(
    [
      { value: 'row', label: 'colour: each row its own range' },
      { value: 'global', label: 'colour: one range for all rows' },
    ],
    scaleMode,
    (v) => update({ heatScale: v as 'row' | 'global' }),
    'heat-scale',
  );
  const bar = el('div', 'row');
  bar.append(pick, scalePick, button('Clear editor heat', () => host.notify({ type: 'heat/clear' })));
  wrap.append(bar);
  const { labels, values } = heatValues(a, measure);
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of values) for (const v of row) if (Number.isFinite(v)) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
  // A global range that spans orders of magnitude is coloured on a log scale.
  const logScale = scaleMode === 'global' && lo > 0 && hi / lo > 30;
  const rowRange = values.map((row) => {
    let a0 = Infinity;
    let b0 = -Infinity;
    for (const v of row) if (Number.isFinite(v)) (a0 = Math.min(a0, v)), (b0 = Math.max(b0, v));
    return [a0, b0] as const;
  });
  const scaleOf = (r: number) => {
    const [a0, b0] = scaleMode === 'row' ? rowRange[r] : [lo, hi];
    return (v: number) => (b0 <= a0 ? 0.5 : logScale ? Math.log(v / a0) / Math.log(b0 / a0) : (v - a0) / (b0 - a0));
  };
  const table = el('table', 'grid heat');
  table.id = 'heatmap';
  table.dataset.layers = String(labels.length);
  table.dataset.measure = measure;
  table.append(columnHeader(a, pos));
  labels.forEach((label, r) => {
    const tr = el('tr');
    tr.dataset.layer = String(r);
    const th = el('th', 'rowlabel clickable', label);
    th.title = 'Click: colour the analysed text in the editor by this row';
    th.addEventListener('click', () => host.notify({ type: 'heat/show', measure, layer: r }));
    tr.append(th);
    const scale = scaleOf(r);
    th.title += scaleMode === 'row' ? `\nthis row: ${rowRange[r][0].toPrecision(3)} (faint) to ${rowRange[r][1].toPrecision(3)} (strong)` : '';
    values[r].forEach((v, p) => {
      const td = el('td', p === pos ? 'cell selected' : 'cell');
      heat(td, scale(v));
      td.title = `${label} · position ${p} ${JSON.stringify(a.tokens[p].text)}\n${measure} = ${v.toPrecision(5)}`;
      td.dataset.value = String(v);
      td.addEventListener('click', () => setPosition(p));
      tr.append(td);
    });
    table.append(tr);
  });
  wrap.append(scroller(table), colourBar(scaleMode === 'row' ? ['row min', 'row max'] : [lo.toPrecision(3), hi.toPrecision(3)]));
  wrap.append(
    el(
      'p',
      'hint',
      scaleMode === 'row'
        ? `Each row is coloured from its own minimum (faint) to its maximum (strong): compare positions within a layer; hover a row name for its range, a cell for its value. Overall ${lo.toPrecision(3)} to ${hi.toPrecision(3)}. Click a row name to show it in the editor.`
        : `One colour range for all rows${logScale ? ' (log scale: the values span orders of magnitude)' : ''}: ${lo.toPrecision(3)} (faint) to ${hi.toPrecision(3)} (strong); hover a cell for its value; click a row name to show it in the editor.`,
    ),
  );
  return wrap;
}

/** A colour bar for `heat`: the colour from 0 (faint) to 1 (strong), with its two ends named. */
function colourBar([low, high]: [string, string]): HTMLElement {
  const bar = el('div', 'colour-bar');
  bar.id = 'heat-colour-bar';
  const ramp = el('div', 'ramp');
  for (let i = 0; i <= 10; i++) {
    const step = el('span');
    heat(step, i / 10);
    ramp.append(step);
  }
  bar.append(el('span', 'muted', low), ramp, el('span', 'muted', high));
  return bar;
}

function lensView(a: Analysis, pos: number): HTMLElement {
  const table = el('table', 'grid lens');
  table.id = 'lens-grid';
  table.append(columnHeader(a, pos));
  a.readouts.forEach((r, i) => {
    const tr = el('tr');
    tr.dataset.layer = String(i);
    tr.append(el('th', 'rowlabel', r.hook));
    a.lens[i].forEach((tops, p) => {
      const best = tops[0];
      const td = el('td', `cell${p === pos ? ' selected' : ''}${best ? '' : ' skipped'}`, best ? showToken(best.text) : '');
      if (!best) {
        td.title = `${r.hook} · position ${p}: not computed (the lens covers positions ${a.lensFrom}–${a.tokens.length - 1}; see residual.lensGflop)`;
        td.addEventListener('click', () => setPosition(p));
        tr.append(td);
        return;
      }
      const isFinal = best && best.id === a.target.ids[p];
      td.style.background = `color-mix(in srgb, var(--vscode-charts-${isFinal ? 'green' : 'blue'}) ${((best?.prob ?? 0) * 80).toFixed(0)}%, transparent)`;
      td.title = `${r.hook} · position ${p}\n${tops.map((t) => `${JSON.stringify(t.text)} ${(t.prob * 100).toFixed(2)}%`).join('\n')}`;
      // A lens cell also chooses the hidden state the Patchscope below reads.
      td.addEventListener('click', () => chooseLensCell(i, p));
      tr.append(td);
    });
    table.append(tr);
  });
  const wrap = el('div');
  if (a.lensFrom > 0) {
    const n = a.tokens.length - a.lensFrom;
    const note = el('p', 'notice info', `The lens covers the last ${n} of ${a.tokens.length} positions: every read-out × position is an unembedding over ${a.model.vocab_size.toLocaleString('en-US')} tokens. Raise residual.lensGflop (0 = no limit) to cover more; “Track token” computes any position.`);
    note.id = 'lens-partial';
    wrap.append(note);
  }
  wrap.append(scroller(table), el('p', 'hint', 'Shade: probability of the top token; green where it equals the final prediction at that position.'));
  return wrap;
}

function trajectoryView(a: Analysis, pos: number): HTMLElement {
  const wrap = el('div', 'trajectory');
  const custom = getState().customTarget;
  const useCustom = custom && custom.position === pos;
  const targetText = useCustom ? custom.tokenText : a.target.texts[pos];
  wrap.append(
    el(
      'p',
      'hint',
      `Target ${useCustom ? '(typed)' : '(the final prediction)'} after ${JSON.stringify(a.tokens[pos].text)}: ${JSON.stringify(targetText)}${useCustom && custom.tokenId !== undefined ? ` (token id ${custom.tokenId})` : ''}. Its probability (left axis) and rank (right axis, 0 = top) when each read-out of the residual stream goes through the final LayerNorm and unembedding; the larger dot marks the layer where the probability peaks (early excitation).`,
    ),
  );
  const form = el('div', 'row');
  const field = textField(useCustom ? custom.text : '', 'any token, e.g. " the" or \\n', 'target-input');
  const go = () => {
    const shown = getState().analysis;
    host.request('lens/target', { position: pos, text: field.value }).result.then(
      // Only for the analysis it was asked about (a newer analysis or Track replaces it).
      (customTarget) => getState().analysis === shown && update({ customTarget }),
      (e) => !(e instanceof RequestError && e.cancelled) && notice('error', failureText(e)),
    );
  };
  field.addEventListener('keydown', (e) => (e as KeyboardEvent).key === 'Enter' && go());
  form.append(field, button('Track token', go));
  if (useCustom) form.append(button('Back to the prediction', () => update({ customTarget: undefined })));
  wrap.append(form);
  if (useCustom && custom.note) wrap.append(el('p', 'hint', custom.note));
  const box = el('div', 'chartbox');
  const canvas = el('canvas');
  canvas.id = 'trajectory';
  box.append(canvas);
  wrap.append(box);
  if (!useCustom && pos < a.lensFrom) {
    wrap.append(el('p', 'notice info', `The lens was not computed at position ${pos} (it covers ${a.lensFrom}–${a.tokens.length - 1}); type a token above and Track token to follow it here.`));
    return wrap;
  }
  const series = useCustom
    ? { label: custom.tokenText, prob: custom.prob, rank: custom.rank }
    : { label: a.target.texts[pos], prob: a.readouts.map((_, r) => a.target.prob[r][pos]), rank: a.readouts.map((_, r) => a.target.rank[r][pos]) };
  requestAnimationFrame(() => drawTrajectory(canvas, a.readouts.map((r) => r.hook), series));
  return wrap;
}

function columnHeader(a: Analysis, pos: number): HTMLElement {
  const tr = el('tr');
  tr.append(el('th'));
  a.tokens.forEach((t, p) => {
    const th = el('th', p === pos ? 'col selected' : 'col', showToken(t.text));
    th.title = `position ${p}`;
    tr.append(th);
  });
  return tr;
}

export function setPosition(p: number): void {
  update({ position: p });
}

