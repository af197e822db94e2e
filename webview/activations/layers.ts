/**
 * Layers tab: how much each block updates the stream (candidate "voids" flagged), MLP sparsity per layer and token,
 * massive activations, and spectral statistics of each read-out against a Marchenko–Pastur baseline.
 */
import type { Analysis } from '../../src/protocol';
import { dropdown, el, heat, scroller, showToken } from '../ui';
import { colours, drawChart } from '../charts';
import { section } from './overview';
import { getState, update } from './store';

export function layersView(a: Analysis): HTMLElement {
  const root = el('div', 'layers');
  const d = a.perLayer;
  if (!d) {
    root.append(el('p', 'empty', 'Layer statistics were not computed for this analysis.'));
    return root;
  }
  root.append(section('Layer update size', voidsView(a), `Mean over tokens of ‖resid_post − resid_pre‖ / ‖resid_pre‖ per block; blocks below ${d.voids.threshold} are flagged as candidate voids (they barely change the stream).`));
  root.append(section('MLP sparsity', sparsityView(a), `Fraction of MLP neurons whose post-activation exceeds ${d.mlpSparsity.threshold}, per block and token.`));
  root.append(section('Massive activations', massiveView(a), `Dimensions whose |value| exceeds ${d.massive.ratio}× the read-out's median |value|, with the token that carries them.`));
  root.append(section('Spectral statistics', spectralView(a), 'Eigenvalues of each read-out\'s token Gram matrix X·Xᵀ/D (rows centred), against the Marchenko–Pastur upper edge of a random matrix of the same shape and variance.'));
  return root;
}

function voidsView(a: Analysis): HTMLElement {
  const d = a.perLayer!;
  const wrap = el('div');
  const flagged = d.voids.layers;
  const p = el('p', flagged.length ? 'notice warning' : 'hint', flagged.length ? `Candidate voids: ${flagged.map((l) => `blocks.${l}`).join(', ')}` : 'No block is below the threshold.');
  p.id = 'voids';
  p.dataset.layers = flagged.join(',');
  wrap.append(p);
  const box = el('div', 'chartbox small');
  const canvas = el('canvas');
  canvas.id = 'voids-chart';
  box.append(canvas);
  wrap.append(box);
  const { blue, red } = colours();
  barsWithLine(canvas, d.voids.meanUpdate.map((_, l) => `blocks.${l}`), 'mean ‖Δ‖/‖x‖', d.voids.meanUpdate, d.voids.meanUpdate.map((_, l) => (flagged.includes(l) ? red : blue)), 'void threshold', d.voids.threshold);
  return wrap;
}

function sparsityView(a: Analysis): HTMLElement {
  const d = a.perLayer!;
  const table = el('table', 'grid heat');
  table.id = 'sparsity';
  const hr = el('tr');
  hr.append(el('th'));
  a.tokens.forEach((t) => hr.append(el('th', 'col', showToken(t.text))));
  table.append(hr);
  d.mlpSparsity.activeFraction.forEach((row, l) => {
    const tr = el('tr');
    tr.dataset.layer = String(l);
    tr.append(el('th', 'rowlabel', `blocks.${l}.mlp`));
    row.forEach((v, p) => {
      const td = el('td', 'cell');
      heat(td, v / Math.max(1e-9, ...d.mlpSparsity.activeFraction.flat()), 'green');
      td.title = `blocks.${l}.mlp.hook_post at ${p} ${JSON.stringify(a.tokens[p].text)}: ${(v * 100).toFixed(2)}% of neurons > ${d.mlpSparsity.threshold}`;
      tr.append(td);
    });
    table.append(tr);
  });
  return scroller(table);
}

function massiveView(a: Analysis): HTMLElement {
  const d = a.perLayer!;
  const table = el('table', 'grid plain');
  table.id = 'massive';
  const hr = el('tr');
  for (const h of ['read-out', 'median |x|', 'dimension', 'token', 'value', '× median']) hr.append(el('th', undefined, h));
  table.append(hr);
  for (const layer of d.massive.layers) {
    if (!layer.hits.length) {
      const tr = el('tr');
      tr.append(el('td', 'mono', layer.hook), el('td', 'num', layer.median.toPrecision(3)), el('td', 'muted', 'none'), el('td'), el('td'), el('td'));
      table.append(tr);
      continue;
    }
    for (const [i, h] of layer.hits.entries()) {
      const tr = el('tr', 'hit');
      tr.append(
        el('td', 'mono', i === 0 ? layer.hook : ''),
        el('td', 'num', i === 0 ? layer.median.toPrecision(3) : ''),
        el('td', 'num', String(h.dim)),
        el('td', 'mono', `${h.pos} ${showToken(a.tokens[h.pos]?.text ?? '')}`),
        el('td', 'num', h.value.toPrecision(4)),
        el('td', 'num', h.ratio.toFixed(0)),
      );
      table.append(tr);
    }
  }
  return scroller(table);
}

function spectralView(a: Analysis): HTMLElement {
  const d = a.perLayer!;
  const wrap = el('div');
  const table = el('table', 'grid plain');
  table.id = 'spectral';
  const hr = el('tr');
  for (const h of ['read-out', 'spectral entropy', 'normalised', 'λ₁', 'MP edge', 'λ₁ / edge', 'above edge']) hr.append(el('th', undefined, h));
  table.append(hr);
  d.spectral.forEach((s) => {
    const tr = el('tr');
    tr.append(
      el('td', 'mono', s.hook),
      el('td', 'num', s.entropy.toFixed(3)),
      el('td', 'num', s.normalizedEntropy.toFixed(3)),
      el('td', 'num', (s.eigenvalues[0] ?? 0).toPrecision(4)),
      el('td', 'num', s.mpEdge.toPrecision(4)),
      el('td', 'num', s.mpEdge > 0 ? ((s.eigenvalues[0] ?? 0) / s.mpEdge).toFixed(2) : '—'),
      el('td', 'num', String(s.aboveEdge)),
    );
    table.append(tr);
  });
  wrap.append(table);
  const idx = Math.min(getState().spectralReadout ?? d.spectral.length - 1, d.spectral.length - 1);
  wrap.append(
    el('p', 'hint', 'Eigenvalues of one read-out (log scale) with the Marchenko–Pastur edge:'),
    dropdown(d.spectral.map((s, i) => ({ value: String(i), label: s.hook })), String(idx), (v) => update({ spectralReadout: Number(v) }), 'spectral-readout'),
  );
  const box = el('div', 'chartbox small');
  const canvas = el('canvas');
  canvas.id = 'spectral-chart';
  box.append(canvas);
  wrap.append(box);
  const s = d.spectral[idx];
  barsWithLine(canvas, s.eigenvalues.map((_, i) => `λ${i + 1}`), s.hook, s.eigenvalues.map((v) => Math.max(v, 1e-12)), colours().purple, 'Marchenko–Pastur edge', s.mpEdge);
  return wrap;
}

/** Bars on a log axis with a dashed horizontal reference line (a threshold or a baseline). */
function barsWithLine(canvas: HTMLCanvasElement, labels: string[], barLabel: string, values: number[], barColour: string | string[], lineLabel: string, lineValue: number): void {
  const { fg, grid, orange } = colours();
  requestAnimationFrame(() =>
    drawChart(canvas, {
      type: 'bar',
      data: {
        labels,
        datasets: [
          { type: 'bar', label: barLabel, data: values, backgroundColor: barColour },
          { type: 'line', label: lineLabel, data: values.map(() => lineValue), borderColor: orange, borderDash: [4, 3], pointRadius: 0 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { labels: { color: fg } } },
        scales: { x: { ticks: { color: fg }, grid: { color: grid } }, y: { type: 'logarithmic', ticks: { color: fg }, grid: { color: grid } } },
      },
    }),
  );
}
