/**
 * The Activations panel: tokens, next-token prediction, a token × layer heatmap of a residual-stream measure, the
 * logit-lens grid, and the final prediction's probability and rank across layers at a chosen position.
 */
import type { Analysis, ActivationsState, FromActivations, HeatMeasure, ToActivations } from '../../src/protocol';
import { badge, button, dropdown, el, hostBridge, showToken, spinner } from '../ui';
import { drawTrajectory } from './trajectory';

const host = hostBridge<FromActivations, ActivationsState>();
let state: ActivationsState = host.getState() ?? {};
const app = document.getElementById('app')!;

const MEASURES: { value: HeatMeasure; label: string; rows: 'readouts' | 'layers' }[] = [
  { value: 'resid_norm', label: 'Residual norm ‖x‖', rows: 'readouts' },
  { value: 'update_norm', label: 'Layer update ‖Δ‖/‖x‖', rows: 'layers' },
  { value: 'drift_cos', label: 'Drift cos(pre, post)', rows: 'layers' },
  { value: 'attn_norm', label: 'Attention output norm', rows: 'layers' },
  { value: 'mlp_norm', label: 'MLP output norm', rows: 'layers' },
];

window.addEventListener('message', (ev: MessageEvent<ToActivations>) => {
  const m = ev.data;
  switch (m.type) {
    case 'analysis/started':
      app.dataset.state = 'running';
      notice('running', `Analysing “${m.preview}”${m.file ? ` from ${m.file}` : ''}…`, true);
      break;
    case 'analysis/result':
      app.dataset.request = String(m.requestId);
      state = { ...state, analysis: m.analysis, file: m.file, position: m.analysis.tokens.length - 1 };
      host.setState(state);
      render();
      break;
    case 'analysis/error':
      app.dataset.state = 'error';
      notice('error', m.message);
      break;
    case 'analysis/cancelled':
      app.dataset.state = state.analysis ? 'ready' : 'empty';
      notice('info', 'Analysis cancelled.');
      break;
  }
});

function notice(kind: 'running' | 'error' | 'info' | 'warning', text: string, busy = false): void {
  let n = document.getElementById('notice');
  if (!n) {
    n = el('div');
    n.id = 'notice';
    app.prepend(n);
  }
  n.className = `notice ${kind}`;
  n.replaceChildren();
  if (busy) n.append(spinner());
  n.append(el('span', 'notice-text', text));
  if (!state.analysis && kind !== 'running') app.dataset.state = kind === 'error' ? 'error' : 'empty';
}

function render(): void {
  const a = state.analysis;
  app.replaceChildren();
  if (!a) {
    app.dataset.state = 'empty';
    app.append(el('p', 'empty', 'Select text in an editor and run “Residual: Analyze Selection” (editor context menu or command palette).'));
    return;
  }
  app.dataset.state = 'ready';
  const pos = clampPos(state.position ?? a.tokens.length - 1, a);
  app.append(header(a));
  if (a.truncated) {
    const t = a.truncated;
    app.append(el('div', 'notice warning', `Analysed only the last ${t.kept} tokens${t.total ? ` of ${t.total}` : ''} (from character ${t.firstChar}): the selection is longer than residual.maxTokens or the model context.`));
  }
  app.append(section('Tokens', tokensView(a, pos), 'Click a token to choose the position below; double-click to select it in the editor.'));
  app.append(section('Next token', topView(a)));
  app.append(section('Residual stream by layer', heatmapView(a, pos)));
  app.append(section('Logit lens (top token per layer and position)', lensView(a, pos)));
  app.append(section(`Prediction across layers at position ${pos}`, trajectoryView(a, pos)));
}

function header(a: Analysis): HTMLElement {
  const h = el('header', 'summary');
  const title = el('div', 'title');
  title.append(el('strong', undefined, a.model.name), el('span', 'muted', ` ${a.model.n_layers} layers · d_model ${a.model.d_model} · ${a.model.n_heads} heads · ${a.model.dtype}`));
  const meta = el('div', 'meta');
  const prov = badge(a.provider.toUpperCase());
  prov.id = 'provider';
  meta.append(prov, el('span', 'muted', ` ${a.tokens.length} tokens · ${a.timings.totalMs.toFixed(0)} ms${state.file ? ` · ${state.file}` : ''} `));
  meta.append(button('Re-run', () => host.post({ type: 'analysis/rerun' })));
  h.append(title, meta);
  return h;
}

function section(title: string, body: HTMLElement, hint?: string): HTMLElement {
  const s = el('section');
  s.append(el('h2', undefined, title));
  if (hint) s.append(el('p', 'hint', hint));
  s.append(body);
  return s;
}

function tokensView(a: Analysis, pos: number): HTMLElement {
  const box = el('div');
  box.id = 'tokens';
  a.tokens.forEach((t, i) => {
    const chip = el('span', i === pos ? 'token selected' : 'token', showToken(t.text));
    chip.dataset.pos = String(i);
    chip.title = `position ${i} · id ${t.id} · chars ${t.start}–${t.end}\nnext: ${a.target.texts[i] === undefined ? '' : JSON.stringify(a.target.texts[i])}`;
    chip.addEventListener('click', () => setPosition(i));
    chip.addEventListener('dblclick', () => host.post({ type: 'token/reveal', start: t.start, end: t.end }));
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
  const measure = state.measure ?? 'resid_norm';
  const pick = dropdown(MEASURES.map((m) => ({ value: m.value, label: m.label })), measure, (v) => {
    state = { ...state, measure: v as HeatMeasure };
    host.setState(state);
    render();
  }, 'measure');
  wrap.append(pick);
  const { labels, values } = heatValues(a, measure);
  const flat = values.flat().filter(Number.isFinite);
  const lo = Math.min(...flat);
  const hi = Math.max(...flat);
  // Norms span orders of magnitude (the first block's update dwarfs the rest): colour on a log scale then.
  const logScale = lo > 0 && hi / lo > 30;
  const scale = (v: number) => (hi <= lo ? 0.5 : logScale ? Math.log(v / lo) / Math.log(hi / lo) : (v - lo) / (hi - lo));
  const table = el('table', 'grid heat');
  table.id = 'heatmap';
  table.dataset.layers = String(labels.length);
  table.dataset.measure = measure;
  table.append(columnHeader(a, pos));
  labels.forEach((label, r) => {
    const tr = el('tr');
    tr.dataset.layer = String(r);
    tr.append(el('th', 'rowlabel', label));
    values[r].forEach((v, p) => {
      const td = el('td', p === pos ? 'cell selected' : 'cell');
      const f = scale(v);
      td.style.background = `color-mix(in srgb, var(--vscode-charts-orange) ${(f * 85).toFixed(0)}%, transparent)`;
      td.title = `${label} · position ${p} ${JSON.stringify(a.tokens[p].text)}\n${measure} = ${v.toPrecision(5)}`;
      td.dataset.value = String(v);
      td.addEventListener('click', () => setPosition(p));
      tr.append(td);
    });
    table.append(tr);
  });
  wrap.append(scroller(table), el('p', 'hint', `colour${logScale ? ' (log scale)' : ''}: ${lo.toPrecision(3)} (light) to ${hi.toPrecision(3)} (dark); hover a cell for its value`));
  return wrap;
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
      const td = el('td', p === pos ? 'cell selected' : 'cell', best ? showToken(best.text) : '');
      const isFinal = best && best.id === a.target.ids[p];
      td.style.background = `color-mix(in srgb, var(--vscode-charts-${isFinal ? 'green' : 'blue'}) ${((best?.prob ?? 0) * 80).toFixed(0)}%, transparent)`;
      td.title = `${r.hook} · position ${p}\n${tops.map((t) => `${JSON.stringify(t.text)} ${(t.prob * 100).toFixed(2)}%`).join('\n')}`;
      td.addEventListener('click', () => setPosition(p));
      tr.append(td);
    });
    table.append(tr);
  });
  const wrap = el('div');
  wrap.append(scroller(table), el('p', 'hint', 'Shade: probability of the top token; green where it equals the final prediction at that position.'));
  return wrap;
}

function trajectoryView(a: Analysis, pos: number): HTMLElement {
  const wrap = el('div', 'trajectory');
  const target = a.target.texts[pos];
  wrap.append(el('p', 'hint', `Target: the final prediction after ${JSON.stringify(a.tokens[pos].text)}, ${JSON.stringify(target)}; its probability (left axis) and rank (right axis, 0 = top) when each layer's residual stream is read through the final LayerNorm and unembedding.`));
  const box = el('div', 'chartbox');
  const canvas = el('canvas');
  canvas.id = 'trajectory';
  box.append(canvas);
  wrap.append(box);
  requestAnimationFrame(() => drawTrajectory(canvas, a, pos));
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

function scroller(child: HTMLElement): HTMLElement {
  const s = el('div', 'scroller');
  s.append(child);
  return s;
}

function setPosition(p: number): void {
  state = { ...state, position: p };
  host.setState(state);
  render();
}

function clampPos(p: number, a: Analysis): number {
  return Math.max(0, Math.min(a.tokens.length - 1, p));
}

render();
host.post({ type: 'ready' });
