/**
 * The attribution graph as SVG, laid out by (layer, position) as circuit-tracer's and Neuronpedia's viewers do:
 * embeddings at the bottom, logits on top, positions left to right. The view fits its box and zooms (wheel, + / −)
 * and pans (drag) by changing the viewBox; row names and token labels stay on the edges of the box whatever the zoom;
 * nodes and edge widths keep a readable size on screen. Feature nodes are sized by influence and labelled with the
 * token they push up; only the strongest edges are drawn (a node's own edges appear on hover).
 */
import type { CircuitNode, CircuitView } from '../../src/protocol';
import { button, el, showToken } from '../ui';

const SVG = 'http://www.w3.org/2000/svg';
/** Content units per position column and per layer row. */
const COL_W = 90;
const ROW_H = 64;
const LEFT = 12;
/** Below this many screen pixels per content unit, feature labels are hidden (they would overlap); token and logit boxes keep theirs down to `BOX_LABEL_SCALE`. */
const LABEL_SCALE = 0.9;
const BOX_LABEL_SCALE = 0.35;
/** The initial view shows every position when each gets at least this many pixels, else the last positions. */
const MIN_FIT_COL_PX = 14;

export interface ViewBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface GraphViewState {
  /** The graph the zoom belongs to (a new graph starts from the fitted view). */
  slug: string;
  box?: ViewBox;
  /** The viewport's height in pixels when fitting shrank it to the content (a wide graph). */
  height?: number;
  /** The view came from fitting, not from the user's zoom or pan: a resized panel fits again. */
  auto?: boolean;
  /** How many of the strongest edges to draw (0 = all). */
  edges: number;
}

export interface GraphCallbacks {
  visible: (n: CircuitNode) => boolean;
  classOf: (n: CircuitNode) => string;
  onHover: (n: CircuitNode | undefined, ins: Edge[], outs: Edge[]) => void;
  onClick: (n: CircuitNode, shift: boolean) => void;
  /** Called with the new state after every zoom or pan (kept across re-renders). */
  onState: (s: GraphViewState) => void;
  /** The user picked how many edges to draw: the caller redraws with the new state. */
  onEdges: (s: GraphViewState) => void;
}

export interface Edge {
  s: string;
  t: string;
  w: number;
}

interface Placed {
  node: CircuitNode;
  x: number;
  y: number;
  r: number;
}

/** Builds the graph's box: toolbar, viewport with the SVG and its sticky labels, legend. */
export function graphView(v: CircuitView, initial: GraphViewState, cb: GraphCallbacks): HTMLElement {
  let state = initial;
  const P = v.tokens.length;
  const L = v.nLayers;
  const W = LEFT + COL_W * P + 40;
  const H = (L + 2) * ROW_H + 16;
  const rowY = (layer: number) => H - 8 - (layer + 1.5) * ROW_H + ROW_H / 2; // tokens (−1) at the bottom, logits (L) on top
  const colX = (pos: number) => LEFT + (pos + 0.5) * COL_W;

  const box = document.createElement('div');
  box.className = 'graph-viewport';
  if (state.height) box.style.height = `${state.height}px`;
  const svg = document.createElementNS(SVG, 'svg');
  svg.id = 'graph';
  svg.setAttribute('preserveAspectRatio', 'xMinYMid meet');
  svg.dataset.nodeThreshold = String(v.nodeThreshold);
  svg.dataset.edgeThreshold = String(v.edgeThreshold);
  const rowLabels = el('div', 'row-labels');
  const posLabels = el('div', 'pos-labels');
  box.append(svg, rowLabels, posLabels);

  for (let r = -1; r <= L; r++) svg.append(svgEl('line', { x1: 0, x2: W, y1: rowY(r), y2: rowY(r), class: 'guide' }));

  // Place nodes: a cell per (row, position); within a cell, most influential first from the centre out.
  const cells = new Map<string, CircuitNode[]>();
  for (const n of v.nodes) {
    if (!cb.visible(n)) continue;
    // The logits sit on the top row; a direction target where it reads the residual (its layer and position).
    const key = `${n.layer}:${n.kind === 'logit' && n.layer === L ? 'logit' : n.pos}`;
    (cells.get(key) ?? cells.set(key, []).get(key)!).push(n);
  }
  const rank = (n: CircuitNode) => n.influence ?? (n.prob !== null ? -n.prob : 1);
  const placed = new Map<string, Placed>();
  for (const [key, nodes] of cells) {
    nodes.sort((a, b) => rank(a) - rank(b));
    const isLogit = key.endsWith(':logit');
    // Logits sit above the last positions (the prediction is made there), right-aligned.
    const span = isLogit ? Math.max(COL_W, Math.min(W - LEFT - 40, nodes.length * 106)) : COL_W - 8;
    const pitch = isLogit ? Math.max(60, Math.min(110, span / nodes.length)) : 14;
    const perRow = Math.max(1, Math.floor(span / pitch));
    const subRows = Math.min(3, Math.ceil(nodes.length / perRow));
    const cx = isLogit ? W - 20 - span / 2 : colX(nodes[0].pos);
    nodes.forEach((n, i) => {
      const r = Math.floor(i / perRow) % subRows;
      const j = i % perRow;
      const off = (j % 2 === 0 ? 1 : -1) * Math.ceil(j / 2) * pitch + (Math.floor(i / (perRow * subRows)) * pitch) / 3;
      // Feature radius by influence: circuit-tracer's cumulative influence is small for the most important nodes.
      const radius = n.kind === 'feature' ? 3 + 5 * (1 - Math.min(1, Math.max(0, n.influence ?? 1))) : 4;
      placed.set(n.id, { node: n, x: cx + off, y: rowY(n.layer) + (r - (subRows - 1) / 2) * 17, r: radius });
    });
  }

  // Edges: the strongest `state.edges` by |weight| (all when 0; none when −1: only a hovered node's), under the
  // nodes; blue excitatory, red inhibitory.
  const byId = (i: number) => v.nodes[i].id;
  const all: Edge[] = v.links.map((k) => ({ s: byId(k.s), t: byId(k.t), w: k.w })).filter((e) => placed.has(e.s) && placed.has(e.t));
  // (A loop: spreading 10⁵ links into Math.max overflows the call stack.)
  let maxW = 1e-12;
  for (const e of all) maxW = Math.max(maxW, Math.abs(e.w));
  const shown = state.edges < 0 ? [] : state.edges > 0 ? [...all].sort((a, b) => Math.abs(b.w) - Math.abs(a.w)).slice(0, state.edges) : all;
  svg.dataset.edgesShown = String(shown.length);
  svg.dataset.edgesTotal = String(all.length);
  const line = (e: Edge, cls: string) => {
    const a = placed.get(e.s)!;
    const b = placed.get(e.t)!;
    return svgEl('line', {
      x1: a.x,
      y1: a.y,
      x2: b.x,
      y2: b.y,
      class: `edge ${e.w >= 0 ? 'pos' : 'neg'}${cls}`,
      'stroke-width': (0.6 + 3.4 * Math.sqrt(Math.abs(e.w) / maxW)).toFixed(2),
    });
  };
  const edgeLayer = document.createElementNS(SVG, 'g');
  for (const e of shown) edgeLayer.append(line(e, ''));
  const hlLayer = document.createElementNS(SVG, 'g');
  svg.append(edgeLayer, hlLayer);

  const nodeEls: { el: SVGElement; p: Placed }[] = [];
  const labelEls: SVGElement[] = [];
  for (const p of placed.values()) {
    const n = p.node;
    const g = document.createElementNS(SVG, 'g');
    g.setAttribute('class', cb.classOf(n));
    g.dataset.id = n.id;
    g.dataset.kind = n.kind;
    if (n.kind === 'feature') {
      const c = svgEl('circle', { cx: p.x, cy: p.y, r: p.r });
      g.append(c);
      nodeEls.push({ el: c, p });
      // A label a person gave (or imported) first; else the token the decoder pushes up.
      if (n.explanation !== undefined || n.output !== undefined) {
        const t = svgText(n.explanation !== undefined ? n.explanation.slice(0, 16) : showToken(n.output!).slice(0, 10), p.x + p.r + 2, p.y - p.r, n.explanation !== undefined ? 'flabel labelled' : 'flabel');
        g.append(t);
        labelEls.push(t);
      }
    } else if (n.kind === 'error') {
      const rect = svgEl('rect', { x: p.x - 4, y: p.y - 4, width: 8, height: 8 });
      g.append(rect);
      nodeEls.push({ el: rect, p });
    } else {
      const text = n.kind === 'logit' ? `${showToken(n.label.replace(/^Output "(.*)" \(p=.*\)$/s, '$1'))} ${n.prob !== null ? (n.prob * 100).toFixed(0) + '%' : ''}` : showToken(v.tokens[n.pos] ?? n.label);
      const w = Math.min(n.kind === 'logit' ? 104 : COL_W - 6, 10 + 7 * text.length);
      g.append(svgEl('rect', { x: p.x - w / 2, y: p.y - 9, width: w, height: 18, rx: 3 }), svgText(text.slice(0, Math.floor(w / 7)), p.x, p.y + 4, 'nodelabel', 'middle'));
    }
    g.addEventListener('mouseenter', () => {
      const ins = all.filter((e) => e.t === n.id).sort((a, b) => Math.abs(b.w) - Math.abs(a.w)).slice(0, 6);
      const outs = all.filter((e) => e.s === n.id).sort((a, b) => Math.abs(b.w) - Math.abs(a.w)).slice(0, 6);
      hlLayer.replaceChildren(...[...ins, ...outs].map((e) => line(e, ' hl')));
      svg.classList.add('focused');
      cb.onHover(n, ins, outs);
    });
    g.addEventListener('mouseleave', () => {
      hlLayer.replaceChildren();
      svg.classList.remove('focused');
      cb.onHover(undefined, [], []);
    });
    g.addEventListener('click', (ev) => cb.onClick(n, (ev as MouseEvent).shiftKey));
    svg.append(g);
  }

  // Sticky labels: row names on the left, tokens along the bottom, placed from the current viewBox.
  const rows: { el: HTMLElement; y: number }[] = [];
  for (let r = -1; r <= L; r++) {
    const e = el('div', 'row-label', r === -1 ? 'tokens' : r === L ? 'logits' : `L${r}`);
    rowLabels.append(e);
    rows.push({ el: e, y: rowY(r) });
  }
  const cols: { el: HTMLElement; x: number }[] = v.tokens.map((t, pos) => {
    const e = el('div', 'pos-label', showToken(t));
    e.title = `position ${pos}: ${JSON.stringify(t)}`;
    posLabels.append(e);
    return { el: e, x: colX(pos) };
  });

  let vb: ViewBox = state.box ?? { x: 0, y: 0, w: W, h: H };
  svg.setAttribute('viewBox', `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
  /** Screen pixels per content unit and the offsets of `meet` (the content is centred vertically). */
  const geometry = () => {
    const rect = svg.getBoundingClientRect();
    const scale = Math.min(rect.width / vb.w, rect.height / vb.h) || 1;
    return { rect, scale, dx: 0, dy: (rect.height - vb.h * scale) / 2 };
  };
  const apply = () => {
    svg.setAttribute('viewBox', `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
    const { rect, scale, dy } = geometry();
    if (!rect.width) return;
    svg.classList.toggle('labels-hidden', scale < LABEL_SCALE);
    svg.classList.toggle('box-labels-hidden', scale < BOX_LABEL_SCALE);
    svg.dataset.scale = scale.toFixed(3);
    // Nodes at least 2.5 px on screen, however far out the view is.
    for (const { el, p } of nodeEls) {
      const r = Math.max(p.r, 2.5 / scale);
      if (el.tagName === 'circle') el.setAttribute('r', r.toFixed(2));
      else {
        const half = Math.max(4, 3 / scale);
        el.setAttribute('x', (p.x - half).toFixed(1));
        el.setAttribute('y', (p.y - half).toFixed(1));
        el.setAttribute('width', (2 * half).toFixed(1));
        el.setAttribute('height', (2 * half).toFixed(1));
      }
    }
    for (const { el, y } of rows) {
      const sy = (y - vb.y) * scale + dy;
      el.style.top = `${sy.toFixed(0)}px`;
      el.hidden = sy < -8 || sy > rect.height + 8;
    }
    const every = Math.max(1, Math.ceil(40 / (COL_W * scale))); // at most one token label per 40 px
    // The bottom strip repeats the tokens only while their own row is out of sight (or too small to read).
    const tokenRowY = (rowY(-1) - vb.y) * scale + dy;
    const stripNeeded = tokenRowY > rect.height - 10 || scale < BOX_LABEL_SCALE;
    posLabels.hidden = !stripNeeded;
    cols.forEach(({ el, x }, pos) => {
      const sx = (x - vb.x) * scale;
      el.style.left = `${sx.toFixed(0)}px`;
      el.style.maxWidth = `${Math.max(20, COL_W * scale * every - 4).toFixed(0)}px`;
      el.hidden = sx < 0 || sx > rect.width || (P - 1 - pos) % every !== 0;
    });
  };
  const set = (next: ViewBox) => {
    vb = next;
    apply();
    cb.onState({ ...state, box: vb });
  };
  /**
   * All positions when they get MIN_FIT_COL_PX each; else every layer at the box's height and the last positions
   * (where most of a prediction's features sit): Fit and the wheel show the rest.
   */
  const fit = () => {
    const rect = svg.getBoundingClientRect();
    if (!rect.width) return;
    // Every position when each gets MIN_FIT_COL_PX; else every layer and as many columns from the right as the box
    // holds at its height (at least six).
    const w = (rect.width / W) * COL_W >= MIN_FIT_COL_PX ? W : Math.min(W, Math.max((H * rect.width) / rect.height, 6 * COL_W));
    // A view wider than the box's shape leaves empty bands above and below: the box takes the content's height.
    const contentPx = (H * rect.width) / w;
    const height = contentPx < rect.height ? Math.max(240, Math.ceil(contentPx) + 24) : undefined;
    if (height) box.style.height = `${height}px`;
    state = { ...state, height, auto: true };
    set({ x: W - w, y: 0, w, h: H });
  };
  const zoom = (factor: number, cx?: number, cy?: number) => {
    state = { ...state, auto: false };
    const { rect, scale, dy } = geometry();
    const px = cx ?? rect.width / 2;
    const py = cy ?? rect.height / 2;
    // The content point under the cursor stays put.
    const ux = vb.x + px / scale;
    const uy = vb.y + (py - dy) / scale;
    const w = Math.min(W * 1.2, Math.max(COL_W * 1.5, vb.w * factor));
    const h = (vb.h * w) / vb.w;
    set({ x: ux - (ux - vb.x) * (w / vb.w), y: uy - (uy - vb.y) * (h / vb.h), w, h });
  };

  svg.addEventListener(
    'wheel',
    (ev) => {
      ev.preventDefault();
      const rect = svg.getBoundingClientRect();
      zoom(Math.exp(ev.deltaY * 0.0015), ev.clientX - rect.left, ev.clientY - rect.top);
    },
    { passive: false },
  );
  let drag: { x: number; y: number; vb: ViewBox } | undefined;
  svg.addEventListener('pointerdown', (ev) => {
    if ((ev.target as Element).closest('.node')) return;
    drag = { x: ev.clientX, y: ev.clientY, vb };
    state = { ...state, auto: false };
    svg.setPointerCapture(ev.pointerId);
    svg.classList.add('dragging');
  });
  svg.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const { scale } = geometry();
    set({ ...drag.vb, x: drag.vb.x - (ev.clientX - drag.x) / scale, y: drag.vb.y - (ev.clientY - drag.y) / scale });
  });
  const endDrag = () => {
    drag = undefined;
    svg.classList.remove('dragging');
  };
  svg.addEventListener('pointerup', endDrag);
  svg.addEventListener('pointercancel', endDrag);

  // Laid out once the box is in the page; refitted when the panel is resized and the view was never moved.
  let moved = !!state.box && !state.auto;
  new ResizeObserver(() => {
    if (!moved) fit();
    else apply();
  }).observe(box);

  const toolbar = el('div', 'graph-toolbar');
  const tool = (label: string, title: string, id: string, fn: () => void) => {
    // Any button is the user's choice of view (Fit included): a resize keeps it rather than refitting.
    const b = button(label, () => {
      moved = true;
      state = { ...state, auto: false };
      fn();
    }, 'icon');
    b.id = id;
    b.title = title;
    return b;
  };
  const edgesSelect = document.createElement('select');
  edgesSelect.id = 'graph-edges';
  for (const [value, text] of [
    ['150', 'strongest 150 edges'],
    ['400', 'strongest 400 edges'],
    ['1500', 'strongest 1,500 edges'],
    ['0', `all ${all.length.toLocaleString('en-US')} edges`],
    ['-1', 'edges on hover only'],
  ]) {
    const o = document.createElement('option');
    o.value = value;
    o.textContent = text;
    o.selected = Number(value) === state.edges;
    edgesSelect.append(o);
  }
  edgesSelect.addEventListener('change', () => cb.onEdges({ ...state, box: moved ? vb : undefined, edges: Number(edgesSelect.value) }));
  toolbar.append(
    tool('Fit', 'Fit the whole graph (every layer and position) in the view', 'graph-fit', () => {
      if (state.height) box.style.height = `${state.height}px`;
      set({ x: 0, y: 0, w: W, h: H });
    }),
    tool('+', 'Zoom in (or use the mouse wheel)', 'graph-zoom-in', () => zoom(1 / 1.5)),
    tool('−', 'Zoom out', 'graph-zoom-out', () => zoom(1.5)),
    edgesSelect,
    el('div', 'muted', `${shown.length.toLocaleString('en-US')} of ${all.length.toLocaleString('en-US')} edges drawn · drag to pan, wheel to zoom`),
  );
  svg.addEventListener('wheel', () => (moved = true), { passive: true });
  svg.addEventListener('pointerdown', () => (moved = true));

  const legend = el('div', 'graph-legend');
  legend.id = 'graph-legend';
  legend.append(
    legendItem('feature', '● feature (size: influence; label: the token it pushes up)'),
    legendItem('error', '■ MLP error (what the transcoder misses)'),
    legendItem('token', '▭ token / logit'),
    legendItem('pos', '— excites'),
    legendItem('neg', '— inhibits (width: |weight|)'),
  );
  const wrap = el('div', 'graph-wrap');
  wrap.append(toolbar, box, legend);
  if (!state.box) requestAnimationFrame(() => (box.isConnected ? fit() : undefined));
  else requestAnimationFrame(apply);
  return wrap;
}

function legendItem(kind: string, text: string): HTMLElement {
  return el('div', `legend-item ${kind}`, text);
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
