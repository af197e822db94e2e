/** Compare tab: two analysed selections side by side, per block, with their differences. */
import type { Analysis, LayerComparison } from '../../src/protocol';
import { dropdown, el, scroller, showToken } from '../ui';
import { colours, drawChart } from '../charts';
import { section } from './overview';

let data: { a: Analysis; b: Analysis; layers: LayerComparison[]; fileA?: string; fileB?: string } | undefined;
let metric: keyof LayerComparison['a'] = 'updateNorm';

const METRICS: { value: keyof LayerComparison['a']; label: string }[] = [
  { value: 'updateNorm', label: 'Layer update ‖Δ‖/‖x‖' },
  { value: 'driftCos', label: 'Drift cos(pre, post)' },
  { value: 'residNorm', label: 'Residual norm at resid_pre' },
  { value: 'mlpActive', label: 'MLP active fraction' },
  { value: 'targetProb', label: 'p(final prediction) in the lens' },
];

export function setComparison(d: typeof data): void {
  data = d;
}

export function hasComparison(): boolean {
  return !!data;
}

export function compareView(rerender: () => void): HTMLElement {
  const root = el('div', 'compare');
  if (!data) {
    root.append(el('p', 'empty', 'Select a second text in an editor and run “Residual: Compare Selection with Last Analysis” to see the two side by side.'));
    return root;
  }
  const { a, b, layers } = data;
  const head = el('div', 'pair');
  const side = (label: string, x: Analysis, file?: string) => {
    const d = el('div', 'side');
    d.append(el('strong', undefined, label), el('pre', 'preview', x.text), el('div', 'muted', `${file ?? ''} · ${x.tokens.length} tokens · next: ${x.top.map((t) => showToken(t.text)).slice(0, 3).join(' ')}`));
    return d;
  };
  head.append(side('A (earlier)', a, data.fileA), side('B (newer)', b, data.fileB));
  root.append(head);

  const table = el('table', 'grid plain');
  table.id = 'compare-table';
  const h1 = el('tr');
  const h2 = el('tr');
  h1.append(el('th', undefined, 'block'));
  h2.append(el('th'));
  for (const m of METRICS) {
    const th = el('th', undefined, m.label);
    th.colSpan = 3;
    h1.append(th);
    h2.append(el('th', 'sub', 'A'), el('th', 'sub', 'B'), el('th', 'sub', 'B − A'));
  }
  table.append(h1, h2);
  for (const c of layers) {
    const tr = el('tr');
    tr.dataset.layer = String(c.layer);
    tr.append(el('th', 'rowlabel', `blocks.${c.layer}`));
    for (const m of METRICS) {
      const va = c.a[m.value];
      const vb = c.b[m.value];
      for (const [v, signed] of [[va, false], [vb, false], [vb - va, true]] as [number, boolean][]) {
        const td = el('td', signed ? 'num delta' : 'num', fmt(v, signed));
        td.title = `${m.label}, blocks.${c.layer}: A = ${va}, B = ${vb}, B − A = ${vb - va}`;
        tr.append(td);
      }
    }
    table.append(tr);
  }
  root.append(section('Per block', scroller(table), 'Means over each text\'s tokens; target probability is the logit-lens probability of each text\'s own final prediction at its last position.'));

  const chartWrap = el('div');
  chartWrap.append(dropdown(METRICS.map((m) => ({ value: m.value, label: m.label })), metric, (v) => {
    metric = v as typeof metric;
    rerender();
  }, 'compare-metric'));
  const box = el('div', 'chartbox small');
  const canvas = el('canvas');
  canvas.id = 'compare-chart';
  box.append(canvas);
  chartWrap.append(box);
  root.append(section('Chart', chartWrap));
  const { fg, grid, blue, orange } = colours();
  // Values spanning orders of magnitude (the first block's update is often 10× the rest) go on a log axis, so the
  // later blocks are not flattened to nothing.
  const shown = layers.flatMap((c) => [c.a[metric], c.b[metric]]).filter((v) => Number.isFinite(v));
  const positive = shown.length > 0 && shown.every((v) => v > 0);
  const logAxis = positive && Math.max(...shown) / Math.min(...shown) > 30;
  canvas.dataset.axis = logAxis ? 'log' : 'linear';
  requestAnimationFrame(() =>
    drawChart(canvas, {
      type: 'bar',
      data: {
        labels: layers.map((c) => `blocks.${c.layer}`),
        datasets: [
          { label: 'A', data: layers.map((c) => c.a[metric]), backgroundColor: blue },
          { label: 'B', data: layers.map((c) => c.b[metric]), backgroundColor: orange },
        ],
      },
      options: { animation: false, maintainAspectRatio: false, plugins: { legend: { labels: { color: fg } } }, scales: { x: { ticks: { color: fg }, grid: { color: grid } }, y: { type: logAxis ? 'logarithmic' : 'linear', ticks: { color: fg }, grid: { color: grid }, title: { display: logAxis, text: 'log scale', color: fg } } } },
    }),
  );
  return root;
}

function fmt(v: number, signed = false): string {
  if (!Number.isFinite(v)) return '—';
  const s = Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
  return signed && v > 0 ? `+${s}` : s;
}
