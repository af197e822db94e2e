/**
 * The Circuit panel: the pruned attribution graph drawn as SVG in layers (embeddings at the bottom, logits at the
 * top, token positions left to right), edges by signed weight, hover to highlight a node's strongest inputs and
 * outputs, click a feature for its card, shift-click to pin, group pinned nodes, thresholds live, interventions.
 * The layout is fixed by (layer, position), so no general graph-layout library is needed: nodes sharing a cell are
 * spread by importance.
 */
import type { CircuitEstimateView, CircuitNode, CircuitView, FeatureCard, FromCircuit, InterventionRow, ToCircuit } from '../../src/protocol';
import { button, el, hostBridge, showToken, spinner, textField } from '../ui';

interface Persisted {
  pinned: string[];
  groups: string[][];
  onlyPinned: boolean;
}
const host = hostBridge<FromCircuit, Persisted>();
const app = document.getElementById('app')!;
const SVG = 'http://www.w3.org/2000/svg';

let view: CircuitView | undefined;
let card: FeatureCard | undefined;
let intervention: { description: string; rows: InterventionRow[]; notInGraph: number } | undefined;
let busy = '';
let busyFraction: number | undefined;
let error = '';
/** The estimate of the graph being traced (or waiting for Start); cleared when its graph or an error arrives. */
let estimate: CircuitEstimateView | undefined;
let selected: string | undefined;
let p: Persisted = host.getState() ?? { pinned: [], groups: [], onlyPinned: false };
let thresholdTimer: ReturnType<typeof setTimeout> | undefined;

window.addEventListener('message', (ev: MessageEvent<ToCircuit>) => {
  const m = ev.data;
  switch (m.type) {
    case 'circuit/busy':
      busy = m.what;
      busyFraction = m.fraction;
      error = '';
      if (document.getElementById('busy')) {
        document.getElementById('busy')!.textContent = `${busy}…`;
        const bar = document.getElementById('busy-progress') as HTMLProgressElement | null;
        if (bar && m.fraction !== undefined) {
          bar.value = m.fraction;
          return;
        }
        if (view && m.fraction === undefined) return;
      }
      break;
    case 'circuit/estimate':
      estimate = m.estimate;
      busy = m.estimate.awaitingStart ? '' : busy;
      error = '';
      break;
    case 'circuit/view':
      busy = '';
      estimate = undefined;
      error = '';
      view = m.view;
      if (m.view.pinned?.length || m.view.supernodes?.length) p = { ...p, pinned: m.view.pinned ?? [], groups: m.view.supernodes ?? [] };
      break;
    case 'circuit/card':
      busy = '';
      card = m.card;
      intervention = undefined;
      break;
    case 'circuit/intervention':
      busy = '';
      intervention = m;
      break;
    case 'circuit/error':
      busy = '';
      estimate = undefined;
      error = m.message;
      break;
  }
  render();
});

function save(): void {
  host.setState(p);
}

function render(): void {
  app.replaceChildren();
  const awaiting = !busy && !error && estimate?.awaitingStart;
  app.dataset.state = awaiting ? 'awaiting-start' : busy ? 'running' : error ? 'error' : view ? 'ready' : 'empty';
  if (awaiting && estimate) {
    const n = el('div', 'notice estimate');
    n.id = 'circuit-estimate';
    const over = estimate.peakMB > estimate.budgetMB;
    n.append(
      el('span', undefined, `${estimateText(estimate)}.${over ? ` That is over the memory budget of ${mbText(estimate.budgetMB)}: fewer feature rows will be computed, and the graph will say how much of the influence they cover.` : ''} `),
      withId(button('Start', () => {
        estimate = { ...estimate!, awaitingStart: false };
        busy = 'Starting';
        render();
        host.post({ type: 'circuit/start' });
      }, 'primary'), 'circuit-start'),
      withId(button('Cancel', () => host.post({ type: 'circuit/cancel' })), 'circuit-cancel-start'),
    );
    app.append(n);
    // The graph on screen is another prompt's: only the decision is shown, at the top.
    window.scrollTo(0, 0);
    return;
  }
  if (busy) {
    const n = el('div', 'notice running');
    const t = el('span', undefined, `${busy}…`);
    t.id = 'busy';
    n.append(spinner(), t);
    if (busyFraction !== undefined || estimate) {
      const bar = document.createElement('progress');
      bar.id = 'busy-progress';
      bar.max = 1;
      if (busyFraction !== undefined) bar.value = busyFraction;
      n.append(bar);
    }
    n.append(button('Cancel', () => host.post({ type: 'circuit/cancel' })));
    if (estimate) n.append(el('span', 'muted', ` Estimated: ${estimateText(estimate)}.`));
    app.append(n);
  }
  if (error) {
    const e = el('div', 'notice error', error);
    e.id = 'circuit-error';
    app.append(e);
  }
  if (!view) {
    app.append(el('p', 'empty', 'Select a prompt in an editor and run “Residual: Trace Circuit for Selection”, or open a graph JSON file.'), button('Open graph JSON…', () => host.post({ type: 'circuit/import' })));
    return;
  }
  app.append(header(view), controls(view));
  const layout = el('div', 'circuit-layout');
  const graphBox = el('div', 'graph-box');
  graphBox.append(drawGraph(view));
  const tip = el('div', 'tooltip', 'Hover a node; click a feature for its card; shift-click to pin.');
  tip.id = 'graph-tip';
  graphBox.append(tip);
  layout.append(graphBox, sidebar(view));
  app.append(layout);
}

function withId<T extends HTMLElement>(e: T, id: string): T {
  e.id = id;
  return e;
}

function mbText(mb: number): string {
  return mb >= 1000 ? `${(mb / 1000).toFixed(1)} GB` : `${Math.ceil(mb)} MB`;
}

function estimateText(e: CircuitEstimateView): string {
  const s = e.seconds < 10 ? e.seconds.toFixed(1) : String(Math.round(e.seconds));
  return `${e.tokens} tokens: about ${s} s and ${mbText(e.peakMB)} peak memory (budget ${mbText(e.budgetMB)}), ${e.featureRows.toLocaleString('en-US')} feature rows of ~${e.activeFeatures.toLocaleString('en-US')} active features`;
}

function header(v: CircuitView): HTMLElement {
  const h = el('header', 'summary');
  const s = v.scores ? ` · replacement score ${v.scores.replacement.toFixed(3)} · completeness ${v.scores.completeness.toFixed(3)}` : '';
  h.append(
    el('strong', undefined, v.live ? 'Attribution graph' : `Imported graph ${v.slug}`),
    el('span', 'muted', ` ${v.counts.nodes} nodes · ${v.counts.links} links · ${v.counts.activeFeatures} active features${s}${v.ms ? ` · ${(v.ms / 1000).toFixed(2)} s` : ''}`),
  );
  const prompt = el('pre', 'preview', v.prompt);
  prompt.id = 'circuit-prompt';
  const wrap = el('div');
  wrap.append(h);
  if (v.coverage) {
    const c = v.coverage;
    const why = c.memoryLimited ? `the memory budget (${mbText(c.budgetMB)}) allowed rows for` : 'rows were computed for';
    const cov = el(
      'div',
      'notice coverage',
      `Partial graph: ${why} the ${c.keptFeatures.toLocaleString('en-US')} most influential of ${c.activeFeatures.toLocaleString('en-US')} active features, ` +
        `${(100 * c.influenceCovered).toFixed(1)}% of the features' estimated influence on the logits. Every edge shown is exact.`,
    );
    cov.id = 'circuit-coverage';
    wrap.append(cov);
  }
  wrap.append(prompt);
  return wrap;
}

function controls(v: CircuitView): HTMLElement {
  const row = el('div', 'row');
  const slider = (id: string, label: string, value: number, min: number) => {
    const input = document.createElement('input');
    input.type = 'range';
    input.id = id;
    input.min = String(min);
    input.max = '1';
    input.step = '0.01';
    input.value = String(value);
    input.disabled = !v.live;
    const out = el('span', 'num', value.toFixed(2));
    input.addEventListener('input', () => {
      out.textContent = Number(input.value).toFixed(2);
      if (thresholdTimer) clearTimeout(thresholdTimer);
      thresholdTimer = setTimeout(() => {
        const node = Number((document.getElementById('node-threshold') as HTMLInputElement).value);
        const edge = Number((document.getElementById('edge-threshold') as HTMLInputElement).value);
        host.post({ type: 'circuit/thresholds', node, edge });
      }, 250);
    });
    const wrap = el('label', 'slider');
    wrap.append(el('span', undefined, label), input, out);
    return wrap;
  };
  row.append(
    slider('node-threshold', 'Node threshold', v.nodeThreshold, 0.1),
    slider('edge-threshold', 'Edge threshold', v.edgeThreshold, 0.5),
    button('Export JSON…', () => host.post({ type: 'circuit/export', pinned: p.pinned, supernodes: p.groups })),
    button('Open JSON…', () => host.post({ type: 'circuit/import' })),
  );
  if (!v.live) row.append(el('span', 'muted', 'Imported: thresholds, cards and interventions need a graph traced here.'));
  return row;
}

interface Placed {
  node: CircuitNode;
  x: number;
  y: number;
}

function drawGraph(v: CircuitView): SVGSVGElement {
  const P = v.tokens.length;
  const L = v.nLayers;
  const left = 70;
  const colW = Math.max(70, Math.min(140, 1100 / Math.max(1, P)));
  const rowH = 64;
  const W = left + colW * P + 20;
  const H = (L + 2) * rowH + 40;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('width', String(W));
  svg.setAttribute('height', String(H));
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.id = 'graph';
  svg.dataset.nodeThreshold = String(v.nodeThreshold);
  svg.dataset.edgeThreshold = String(v.edgeThreshold);
  const pinned = new Set(p.pinned);
  const visible = (n: CircuitNode) => !p.onlyPinned || pinned.has(n.id) || n.kind === 'token' || n.kind === 'logit';
  const rowY = (layer: number) => H - 30 - (layer + 1) * rowH; // tokens (-1) at the bottom, logits (L) on top
  // Row labels and guides.
  for (let r = -1; r <= L; r++) {
    const y = rowY(r);
    svg.append(svgEl('line', { x1: left - 6, x2: W - 10, y1: y, y2: y, class: 'guide' }));
    svg.append(svgText(r === -1 ? 'tokens' : r === L ? 'logits' : `L${r}`, 8, y + 4, 'rowlabel'));
  }
  // Place nodes: cells by (row, position); within a cell, most influential first from the centre out.
  const cells = new Map<string, CircuitNode[]>();
  v.nodes.forEach((n) => {
    if (!visible(n)) return;
    const key = `${n.layer}:${n.kind === 'logit' ? 'logit' : n.pos}`;
    (cells.get(key) ?? cells.set(key, []).get(key)!).push(n);
  });
  const placed = new Map<string, Placed>();
  for (const [key, nodes] of cells) {
    nodes.sort((a, b) => (a.influence ?? (a.prob !== null ? -a.prob : 1)) - (b.influence ?? (b.prob !== null ? -b.prob : 1)));
    const isLogit = key.endsWith(':logit');
    const span = isLogit ? W - left - 40 : colW - 10;
    // Many nodes in one cell wrap into sub-rows inside the layer's band, so none hides another.
    const pitch = isLogit ? 110 : 15;
    const perRow = Math.max(1, Math.floor(span / pitch));
    const subRows = Math.min(3, Math.ceil(nodes.length / perRow));
    const cx = isLogit ? left + span / 2 + 10 : left + (nodes[0].pos + 0.5) * colW;
    nodes.forEach((n, i) => {
      const r = Math.floor(i / perRow) % subRows;
      const j = i % perRow;
      const off = (j % 2 === 0 ? 1 : -1) * Math.ceil(j / 2) * pitch + (Math.floor(i / (perRow * subRows)) * pitch) / 3;
      placed.set(n.id, { node: n, x: cx + off, y: rowY(n.layer) + (r - (subRows - 1) / 2) * 17 });
    });
  }
  // Edges under nodes; width and colour by signed weight (blue excitatory, red inhibitory).
  const maxW = Math.max(1e-12, ...v.links.map((k) => Math.abs(k.w)));
  const edgeEls: { el: SVGLineElement; s: string; t: string; w: number }[] = [];
  const edgeLayer = document.createElementNS(SVG, 'g');
  for (const k of v.links) {
    const a = placed.get(v.nodes[k.s].id);
    const b = placed.get(v.nodes[k.t].id);
    if (!a || !b) continue;
    const line = svgEl('line', {
      x1: a.x,
      y1: a.y,
      x2: b.x,
      y2: b.y,
      class: `edge ${k.w >= 0 ? 'pos' : 'neg'}`,
      'stroke-width': (0.4 + 4.6 * Math.sqrt(Math.abs(k.w) / maxW)).toFixed(2),
    }) as SVGLineElement;
    edgeLayer.append(line);
    edgeEls.push({ el: line, s: a.node.id, t: b.node.id, w: k.w });
  }
  svg.append(edgeLayer);
  const groupOf = new Map<string, number>();
  p.groups.forEach((g, gi) => g.slice(1).forEach((id) => groupOf.set(id, gi)));
  const maxAct = Math.max(1e-9, ...v.nodes.map((n) => Math.abs(n.activation ?? 0)));
  for (const { node: n, x, y } of placed.values()) {
    const g = document.createElementNS(SVG, 'g');
    g.setAttribute('class', `node ${n.kind}${pinned.has(n.id) ? ' pinned' : ''}${selected === n.id ? ' selected' : ''}${groupOf.has(n.id) ? ` group${groupOf.get(n.id)! % 6}` : ''}`);
    g.dataset.id = n.id;
    g.dataset.kind = n.kind;
    if (n.kind === 'feature') g.append(svgEl('circle', { cx: x, cy: y, r: (3.5 + 3.5 * Math.abs(n.activation ?? 0) / maxAct).toFixed(1) }));
    else if (n.kind === 'error') g.append(svgEl('rect', { x: x - 4, y: y - 4, width: 8, height: 8 }));
    else {
      const text = n.kind === 'logit' ? `${showToken(n.label.replace(/^Output "(.*)" \(p=.*\)$/s, '$1'))} ${n.prob !== null ? (n.prob * 100).toFixed(0) + '%' : ''}` : showToken(v.tokens[n.pos] ?? n.label);
      // Logits share one row at a 110 px pitch; tokens have a column each.
      const w = Math.min(n.kind === 'logit' ? 104 : colW - 6, 10 + 7 * text.length);
      g.append(svgEl('rect', { x: x - w / 2, y: y - 9, width: w, height: 18, rx: 3 }), svgText(text.slice(0, Math.floor(w / 7)), x, y + 4, 'nodelabel', 'middle'));
    }
    g.addEventListener('mouseenter', () => focus(svg, edgeEls, n, true));
    g.addEventListener('mouseleave', () => focus(svg, edgeEls, n, false));
    g.addEventListener('click', (ev) => {
      if ((ev as MouseEvent).shiftKey) {
        p.pinned = pinned.has(n.id) ? p.pinned.filter((x) => x !== n.id) : [...p.pinned, n.id];
        save();
        render();
        return;
      }
      selected = n.id;
      if (n.kind === 'feature' && n.index !== null && v.live) {
        busy = 'Loading the feature card';
        host.post({ type: 'circuit/card', layer: n.layer, index: n.index });
      }
      render();
    });
    svg.append(g);
  }
  return svg;
}

/** Highlights the node's 6 strongest inputs and outputs, dims the rest, and describes the node. */
function focus(svg: SVGSVGElement, edges: { el: SVGLineElement; s: string; t: string; w: number }[], n: CircuitNode, on: boolean): void {
  const tip = document.getElementById('graph-tip');
  svg.classList.toggle('focused', on);
  for (const e of edges) e.el.classList.remove('hl');
  if (!on) return;
  const ins = edges.filter((e) => e.t === n.id).sort((a, b) => Math.abs(b.w) - Math.abs(a.w)).slice(0, 6);
  const outs = edges.filter((e) => e.s === n.id).sort((a, b) => Math.abs(b.w) - Math.abs(a.w)).slice(0, 6);
  for (const e of [...ins, ...outs]) e.el.classList.add('hl');
  if (tip) {
    const kind = n.kind === 'feature' ? `feature ${n.index} of layer ${n.layer}` : n.kind === 'error' ? `MLP error node, layer ${n.layer}` : n.kind;
    const fmt = (e: { w: number }) => (e.w >= 0 ? '+' : '') + e.w.toPrecision(3);
    tip.textContent = `${kind} at position ${n.pos} ${JSON.stringify(view?.tokens[n.pos] ?? '')}${n.activation !== null ? ` · activation ${n.activation.toPrecision(4)}` : ''}${n.influence !== null ? ` · influence ${n.influence.toFixed(3)}` : ''}${n.prob !== null ? ` · p ${(n.prob * 100).toFixed(1)}%` : ''} · strongest in: ${ins.map(fmt).join(' ') || '—'} · out: ${outs.map(fmt).join(' ') || '—'}`;
  }
}

function sidebar(v: CircuitView): HTMLElement {
  const side = el('div', 'side-panel');
  // Pins and groups.
  const pins = el('section');
  pins.append(el('h2', undefined, `Pinned (${p.pinned.length})`));
  const only = document.createElement('input');
  only.type = 'checkbox';
  only.id = 'only-pinned';
  only.checked = p.onlyPinned;
  only.addEventListener('change', () => {
    p.onlyPinned = only.checked;
    save();
    render();
  });
  const onlyLabel = el('label', 'row');
  onlyLabel.append(only, el('span', undefined, 'Show only pinned nodes (with tokens and logits)'));
  pins.append(onlyLabel);
  const list = el('ul', 'pins');
  for (const id of p.pinned) {
    const n = v.nodes.find((x) => x.id === id);
    list.append(el('li', 'mono', n ? `${n.label} @${n.pos}` : id));
  }
  pins.append(list);
  const name = textField('', 'group name', 'group-name');
  const groupRow = el('div', 'row');
  groupRow.append(
    name,
    button('Group pinned', () => {
      if (p.pinned.length < 2) return;
      p.groups = [...p.groups, [name.value || `group ${p.groups.length + 1}`, ...p.pinned]];
      p.pinned = [];
      save();
      render();
    }),
    button('Clear pins', () => {
      p.pinned = [];
      save();
      render();
    }),
  );
  pins.append(groupRow);
  if (p.groups.length) {
    const gl = el('ul', 'groups');
    p.groups.forEach((g, i) => {
      const li = el('li', `group${i % 6}`, `${g[0]}: ${g.length - 1} nodes `);
      li.append(button('×', () => {
        p.groups = p.groups.filter((_, j) => j !== i);
        save();
        render();
      }, 'icon'));
      gl.append(li);
    });
    pins.append(gl);
  }
  side.append(pins);
  if (card) side.append(cardView(card));
  if (intervention) side.append(interventionView(intervention));
  return side;
}

function cardView(c: FeatureCard): HTMLElement {
  const s = el('section', 'card');
  s.id = 'feature-card';
  s.append(el('h2', undefined, `Feature ${c.index} · layer ${c.layer}`));
  if (c.frequency !== undefined) s.append(el('div', 'muted', `fires on ${(c.frequency * 100).toFixed(2)}% of tokens · max activation ${c.maxAct?.toPrecision(3)}`));
  s.append(el('h3', undefined, 'Activation on this prompt'));
  const bars = el('div', 'actbars');
  const max = Math.max(1e-9, ...c.activations.map(Math.abs));
  c.activations.forEach((a, i) => {
    const b = el('div', 'actbar');
    const fill = el('div', 'fill');
    fill.style.height = `${((Math.abs(a) / max) * 100).toFixed(0)}%`;
    b.append(fill, el('span', 'tok', showToken(c.tokens[i] ?? '')));
    b.title = `position ${i} ${JSON.stringify(c.tokens[i])}: ${a.toPrecision(4)}`;
    bars.append(b);
  });
  s.append(bars);
  const logits = el('div', 'pair');
  const col = (title: string, items: [string, number][]) => {
    const d = el('div');
    d.append(el('h3', undefined, title));
    const ul = el('ul', 'toks');
    for (const [t, v] of items) ul.append(el('li', 'mono', `${showToken(t)}  ${v.toPrecision(3)}`));
    d.append(ul);
    return d;
  };
  logits.append(col('Pushes up', c.top), col('Pushes down', c.bottom));
  s.append(logits, el('p', 'hint', `Output tokens from the ${c.source}.`));
  if (c.contexts?.length) {
    s.append(el('h3', undefined, 'Top activating contexts'));
    const ul = el('ul', 'contexts');
    for (const x of c.contexts) {
      const li = el('li', 'mono');
      li.append(el('span', undefined, x.before), el('mark', undefined, x.peak), el('span', undefined, x.after), el('span', 'muted', `  ${x.act.toPrecision(3)}`));
      ul.append(li);
    }
    s.append(ul);
  }
  const active = c.activations.map((a, i) => [a, i] as const).filter(([a]) => a !== 0);
  const row = el('div', 'row');
  row.append(
    button('Ablate on this prompt', () => {
      busy = 'Intervening';
      host.post({ type: 'circuit/intervene', description: `ablate feature ${c.index} of layer ${c.layer} at ${active.length} positions`, items: active.map(([, pos]) => ({ layer: c.layer, pos, feature: c.index, value: 0 })) });
      render();
    }),
    button('Clamp ×3', () => {
      busy = 'Intervening';
      host.post({ type: 'circuit/intervene', description: `clamp feature ${c.index} of layer ${c.layer} to 3× its activation`, items: active.map(([a, pos]) => ({ layer: c.layer, pos, feature: c.index, value: 3 * a })) });
      render();
    }),
    button('Steer with this feature…', () => host.post({ type: 'circuit/steer', layer: c.layer, index: c.index })),
  );
  if (!active.length) row.append(el('span', 'muted', '(not active on this prompt: ablating changes nothing)'));
  s.append(row);
  return s;
}

function interventionView(r: { description: string; rows: InterventionRow[]; notInGraph: number }): HTMLElement {
  const s = el('section');
  s.id = 'intervention';
  s.append(el('h2', undefined, 'Intervention'), el('p', 'hint', `${r.description}. Predicted from the graph (direct edges, and all paths through active features with attention frozen) next to the real model's change of each logit (minus the mean logit).`));
  const table = el('table', 'grid plain');
  const hr = el('tr');
  for (const h of ['token', 'p before', 'p after', 'actual Δ', 'graph: direct', 'graph: paths']) hr.append(el('th', undefined, h));
  table.append(hr);
  for (const x of r.rows) {
    const tr = el('tr');
    tr.append(el('td', 'mono', showToken(x.token)), el('td', 'num', pct(x.baseProb)), el('td', 'num', pct(x.newProb)), el('td', 'num', x.actual.toPrecision(3)), el('td', 'num', x.predictedDirect.toPrecision(3)), el('td', 'num', x.predictedPaths.toPrecision(3)));
    table.append(tr);
  }
  s.append(table);
  if (r.notInGraph) s.append(el('p', 'muted', `${r.notInGraph} intervened feature(s) were not in the graph: the rerun includes them, the prediction does not.`));
  return s;
}

function svgEl(tag: string, attrs: Record<string, string | number>): SVGElement {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}
function svgText(text: string, x: number, y: number, cls: string, anchor = 'start'): SVGElement {
  const t = svgEl('text', { x, y, class: cls, 'text-anchor': anchor });
  t.textContent = text;
  return t;
}
function pct(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}

render();
host.post({ type: 'ready' });
