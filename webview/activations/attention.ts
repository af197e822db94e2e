/** Attention tab: one head's query × key pattern on a canvas (exact value on hover) and a layer × head summary grid. */
import type { Analysis, ActivationsState } from '../../src/protocol';
import { dropdown, el, heat, showToken, themeColor } from '../ui';
import { section } from './overview';
import { getState, update } from './store';

type Metric = NonNullable<ActivationsState['attention']>['metric'];
const METRICS: { value: Metric; label: string; hint: string }[] = [
  { value: 'prevToken', label: 'Previous-token attention', hint: 'mean attention from each query to the position before it' },
  { value: 'firstToken', label: 'First-token attention', hint: 'mean attention to position 0 (an attention sink when high)' },
  { value: 'self', label: 'Self attention', hint: 'mean attention of each query to itself' },
  { value: 'entropy', label: 'Pattern entropy (nats)', hint: 'mean entropy of the query rows: low = focused, high = diffuse' },
];

export function attentionView(a: Analysis): HTMLElement {
  const root = el('div', 'attention');
  const d = a.perLayer;
  if (!d) {
    root.append(el('p', 'empty', 'Attention patterns were not computed for this analysis.'));
    return root;
  }
  const [L, H, P] = d.attention.dims;
  const sel = getState().attention ?? { layer: 0, head: 0, metric: 'prevToken' as Metric };
  const layer = Math.min(sel.layer, L - 1);
  const head = Math.min(sel.head, H - 1);

  const pickers = el('div', 'row');
  pickers.append(
    el('span', undefined, 'Layer'),
    dropdown(Array.from({ length: L }, (_, l) => ({ value: String(l), label: String(l) })), String(layer), (v) => update({ attention: { ...sel, layer: Number(v) } }), 'attn-layer'),
    el('span', undefined, 'Head'),
    dropdown(Array.from({ length: H }, (_, h) => ({ value: String(h), label: String(h) })), String(head), (v) => update({ attention: { ...sel, head: Number(v) } }), 'attn-head'),
  );
  const body = el('div');
  body.append(pickers);
  const canvas = el('canvas', 'attn-canvas');
  canvas.id = 'attn-pattern';
  const tip = el('div', 'tooltip', 'hover a cell');
  tip.id = 'attn-tooltip';
  body.append(canvas, tip);
  const offset = ((layer * H + head) * P) * P;
  requestAnimationFrame(() => drawPattern(canvas, tip, a, d.attention.data.subarray(offset, offset + P * P), P));
  root.append(section(`Pattern of blocks.${layer}.attn head ${head} (rows: queries, columns: keys)`, body));

  const metric = sel.metric;
  const grid = el('div');
  grid.append(dropdown(METRICS.map((m) => ({ value: m.value, label: m.label })), metric, (v) => update({ attention: { ...sel, metric: v as Metric } }), 'attn-metric'));
  grid.append(el('p', 'hint', `${METRICS.find((m) => m.value === metric)!.hint}. Click a cell to show that head above.`));
  const table = el('table', 'grid heads');
  table.id = 'head-grid';
  const hr = el('tr');
  hr.append(el('th'));
  for (let h = 0; h < H; h++) hr.append(el('th', 'col', `H${h}`));
  table.append(hr);
  const values = d.heads.map((s) => s[metric]);
  const max = metric === 'entropy' ? Math.max(...values, 1e-9) : 1;
  for (let l = 0; l < L; l++) {
    const tr = el('tr');
    tr.dataset.layer = String(l);
    tr.append(el('th', 'rowlabel', `L${l}`));
    for (let h = 0; h < H; h++) {
      const s = d.heads.find((x) => x.layer === l && x.head === h)!;
      const v = s[metric];
      const td = el('td', l === layer && h === head ? 'cell selected' : 'cell', v.toFixed(2));
      heat(td, v / max, 'purple');
      td.title = `blocks.${l}.attn head ${h}\nprevious-token ${s.prevToken.toFixed(4)} · first-token ${s.firstToken.toFixed(4)} · self ${s.self.toFixed(4)} · entropy ${s.entropy.toFixed(4)} nats`;
      td.addEventListener('click', () => update({ attention: { ...sel, layer: l, head: h } }));
      tr.append(td);
    }
    table.append(tr);
  }
  grid.append(table);
  root.append(section('Head summary (layer × head)', grid));
  return root;
}

/** Query × key heatmap with token labels; the value under the pointer is shown exactly in `tip`. */
function drawPattern(canvas: HTMLCanvasElement, tip: HTMLElement, a: Analysis, pattern: Float32Array, P: number): void {
  const cell = Math.max(6, Math.min(22, Math.floor(640 / P)));
  const label = Math.min(110, 8 + 7 * Math.max(...a.tokens.map((t) => showToken(t.text).length)));
  const ratio = window.devicePixelRatio || 1;
  const W = label + cell * P + 4;
  const Hh = label + cell * P + 4;
  canvas.width = W * ratio;
  canvas.height = Hh * ratio;
  canvas.style.width = `${W}px`;
  canvas.style.height = `${Hh}px`;
  const ctx = canvas.getContext('2d')!;
  ctx.scale(ratio, ratio);
  const fg = themeColor('editor-foreground', '#888');
  const accent = themeColor('charts-purple', '#b180d7');
  ctx.font = `${Math.min(12, cell)}px ${getComputedStyle(document.body).getPropertyValue('--vscode-editor-font-family') || 'monospace'}`;
  ctx.fillStyle = fg;
  ctx.textBaseline = 'middle';
  a.tokens.forEach((t, i) => {
    const text = showToken(t.text).slice(0, 14);
    ctx.textAlign = 'right';
    ctx.fillText(text, label - 4, label + i * cell + cell / 2);
    ctx.save();
    ctx.translate(label + i * cell + cell / 2, label - 4);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = 'left';
    ctx.fillText(text, 0, 0);
    ctx.restore();
  });
  for (let q = 0; q < P; q++)
    for (let s = 0; s < P; s++) {
      const v = pattern[q * P + s];
      ctx.globalAlpha = s > q ? 0.06 : 0.08 + 0.92 * v;
      ctx.fillStyle = s > q ? fg : accent;
      ctx.fillRect(label + s * cell, label + q * cell, cell - 1, cell - 1);
    }
  ctx.globalAlpha = 1;
  canvas.onmousemove = (ev) => {
    const r = canvas.getBoundingClientRect();
    const s = Math.floor((ev.clientX - r.left - label) / cell);
    const q = Math.floor((ev.clientY - r.top - label) / cell);
    if (q < 0 || s < 0 || q >= P || s >= P) return;
    tip.textContent = `query ${q} ${JSON.stringify(a.tokens[q].text)} → key ${s} ${JSON.stringify(a.tokens[s].text)}: ${s > q ? 'masked (causal)' : pattern[q * P + s].toFixed(4)}`;
  };
}
