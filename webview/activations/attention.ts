/**
 * Attention tab: one head's query × key pattern on a canvas (exact value on hover; a click picks the cell), why the
 * head attends there (QK attribution of the picked cell: its score split into query-side × key-side sources), and a
 * layer × head summary grid.
 */
import type { Analysis, ActivationsState, QkSourceView, QkView } from '../../src/protocol';
import { failureText, type Pending } from '../host';
import { button, divergingHeat, dropdown, el, heat, scroller, showToken, spinner, themeColor } from '../ui';
import { section } from './overview';
import { getState, host, update } from './store';

/** What a QK attribution is asked for. */
interface QkAsk {
  layer: number;
  head: number;
  query: number;
  key: number;
}
const sameQk = (a: QkAsk, b: QkAsk) => a.layer === b.layer && a.head === b.head && a.query === b.query && a.key === b.key;
let qkPending: { ask: QkAsk; run: Pending<QkView> } | undefined;
let qkShown: { ask: QkAsk; result?: QkView; error?: string } | undefined;

/** A new analysis: the attribution shown belonged to the previous text. */
export function resetQk(): void {
  qkPending?.run.cancel();
  qkPending = undefined;
  qkShown = undefined;
}

function attributeQk(ask: QkAsk): void {
  const run = host.request('qk/attribute', ask);
  qkPending = { ask, run };
  update({});
  run.result.then(
    (result) => {
      if (qkPending?.run !== run) return;
      qkPending = undefined;
      qkShown = { ask, result };
      update({});
    },
    (e) => {
      if (qkPending?.run !== run) return;
      qkPending = undefined;
      qkShown = { ask, error: failureText(e, 'QK attribution') };
      update({});
    },
  );
}

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
  const cell = sel.cell && sel.cell.query < P && sel.cell.key <= sel.cell.query ? sel.cell : undefined;
  const pick = (query: number, key: number) => update({ attention: { ...sel, layer, head, cell: { query, key } } });
  requestAnimationFrame(() => drawPattern(canvas, tip, a, d.attention.data.subarray(offset, offset + P * P), P, cell, pick));
  root.append(section(`Pattern of blocks.${layer}.attn head ${head} (rows: queries, columns: keys)`, body, 'Click a cell to ask why the head attends there.'));
  root.append(section('Why this attention? (QK attribution)', qkView(a, { layer, head, query: cell?.query ?? -1, key: cell?.key ?? -1 })));

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

/**
 * Query × key heatmap with token labels; the value under the pointer is shown exactly in `tip`, a click on a cell at
 * or before its query calls `pick`, and the picked cell is outlined. The canvas carries its geometry (data-label,
 * data-cell) so a test can click a given cell.
 */
function drawPattern(canvas: HTMLCanvasElement, tip: HTMLElement, a: Analysis, pattern: Float32Array, P: number, picked: { query: number; key: number } | undefined, pick: (query: number, key: number) => void): void {
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
  if (picked) {
    ctx.strokeStyle = themeColor('focusBorder', '#007fd4');
    ctx.lineWidth = 2;
    ctx.strokeRect(label + picked.key * cell - 1, label + picked.query * cell - 1, cell + 1, cell + 1);
  }
  canvas.dataset.label = String(label);
  canvas.dataset.cell = String(cell);
  const cellAt = (ev: MouseEvent) => {
    const r = canvas.getBoundingClientRect();
    const s = Math.floor((ev.clientX - r.left - label) / cell);
    const q = Math.floor((ev.clientY - r.top - label) / cell);
    return q < 0 || s < 0 || q >= P || s >= P ? undefined : { q, s };
  };
  canvas.onmousemove = (ev) => {
    const c = cellAt(ev);
    if (!c) return;
    const { q, s } = c;
    tip.textContent = `query ${q} ${JSON.stringify(a.tokens[q].text)} → key ${s} ${JSON.stringify(a.tokens[s].text)}: ${s > q ? 'masked (causal)' : pattern[q * P + s].toFixed(4)}`;
  };
  canvas.onclick = (ev) => {
    const c = cellAt(ev);
    if (c && c.s <= c.q) pick(c.q, c.s);
  };
}

function qkView(a: Analysis, ask: QkAsk): HTMLElement {
  const box = el('div');
  box.id = 'qk';
  if (ask.query < 0) {
    box.append(el('p', 'hint', 'Pick a cell of the pattern above (a query row and a key column at or before it).'));
    return box;
  }
  const tok = (p: number) => JSON.stringify(a.tokens[p]?.text ?? '');
  const row = el('div', 'row');
  row.append(el('span', undefined, `Query ${ask.query} ${tok(ask.query)} → key ${ask.key} ${tok(ask.key)}`));
  const busy = qkPending && sameQk(qkPending.ask, ask);
  const run = button('Attribute', () => attributeQk(ask), 'primary');
  run.id = 'qk-run';
  row.append(run);
  box.append(row, el('p', 'hint', 'Splits the head’s score q·k/√d_head exactly into pairs of sources — tokens, transcoder features, error nodes and bias terms — carried to the query and the key through the frozen attention below (the transcoder folder of Trace Circuit).'));
  if (busy) {
    const n = el('div', 'notice info');
    n.append(spinner(), el('span', 'notice-text', 'Attributing the score…'), button('Cancel', () => qkPending?.run.cancel()));
    box.append(n);
    return box;
  }
  const shown = qkShown && sameQk(qkShown.ask, ask) ? qkShown : undefined;
  if (shown?.error) {
    const e = el('div', 'notice error', shown.error);
    e.id = 'qk-error';
    box.append(e);
  }
  const r = shown?.result;
  if (!r) return box;
  const f4 = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(4)}`;
  const summary = el('p');
  summary.id = 'qk-score';
  summary.dataset.score = String(r.score);
  summary.dataset.real = String(r.realScore);
  summary.textContent = `score q·k/√${r.dHead} = ${r.score.toFixed(4)} (the model’s ${r.realScore.toFixed(4)}) · attention weight ${r.pattern.toFixed(4)} · ${r.nQuerySources} query-side and ${r.nKeySources} key-side sources · features from ${r.transcoders}`;
  box.append(summary);
  // Kinds: query kind (rows) × key kind (columns); the 16 cells sum to the score.
  const kinds = ['feature', 'error', 'token', 'bias'];
  const max = Math.max(1e-12, ...r.byKind.map((c) => Math.abs(c.value)));
  const table = el('table', 'grid');
  table.id = 'qk-kinds';
  const hr = el('tr');
  hr.append(el('th', undefined, 'query \\ key'));
  for (const k of kinds) hr.append(el('th', 'col', k));
  table.append(hr);
  for (const q of kinds) {
    const tr = el('tr');
    tr.append(el('th', 'rowlabel', q));
    for (const k of kinds) {
      const v = r.byKind.find((c) => c.query === q && c.key === k)?.value ?? 0;
      const td = el('td', 'cell', v.toFixed(3));
      td.dataset.value = String(v);
      divergingHeat(td, v / max);
      td.title = `${q} sources of the query × ${k} sources of the key: ${v}`;
      tr.append(td);
    }
    table.append(tr);
  }
  box.append(section('By kind (rows: query side, columns: key side; they sum to the score)', table));
  const list = (id: string, items: { source: QkSourceView; value: number }[]) => {
    const t = el('table', 'grid plain');
    t.id = id;
    for (const x of items) {
      const tr = el('tr');
      tr.dataset.kind = x.source.kind;
      tr.append(el('td', 'mono', x.source.label), el('td', 'num', f4(x.value)));
      t.append(tr);
    }
    return t;
  };
  const pair = el('div', 'pair');
  const qCol = el('div');
  qCol.append(el('h3', undefined, 'Query side (q_s · k)'), list('qk-query', r.querySide));
  const kCol = el('div');
  kCol.append(el('h3', undefined, 'Key side (q · k_t)'), list('qk-key', r.keySide));
  pair.append(qCol, kCol);
  box.append(pair);
  const pairs = el('table', 'grid plain');
  pairs.id = 'qk-pairs';
  for (const x of r.pairs) {
    const tr = el('tr');
    tr.append(el('td', 'mono', x.query.label), el('td', 'muted', '×'), el('td', 'mono', x.key.label), el('td', 'num', f4(x.value)));
    pairs.append(tr);
  }
  box.append(section(`Largest pairs (q_s · k_t): ${r.pairs.length} listed, summing to ${r.pairsListed.toFixed(4)} of ${r.score.toFixed(4)}`, scroller(pairs)));
  return box;
}
