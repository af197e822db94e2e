/**
 * The Circuit panel: the pruned attribution graph (graphView.ts: layers bottom to top, positions left to right, zoom
 * and pan), hover to name a node's strongest inputs and outputs, click a feature for its card, shift-click to pin,
 * group pinned nodes, thresholds live, interventions. The layout is fixed by (layer, position), so no general
 * graph-layout library is needed: nodes sharing a cell are spread by importance.
 */
import { CIRCUIT_STATE_VERSION, unreachable, type CircuitTargetRequest, type PickedVector, type CircuitEstimateView, type CircuitEvent, type CircuitNode, type CircuitNotification, type CircuitRequests, type CircuitView, type FeatureCard, type InterventionResult, type Method, type ParamsOf, type ResultOf } from '../../src/protocol';
import { BusyNotice, failureText, hostClient, RequestError } from '../host';
import { button, dropdown, el, showToken, spinner, textField, onThemeChange } from '../ui';
import { featureCardBody } from '../featureCard';
import { graphView, type Edge, type GraphViewState } from './graphView';

interface Persisted {
  pinned: string[];
  groups: string[][];
  onlyPinned: boolean;
}
const host = hostClient<CircuitRequests, CircuitEvent, CircuitNotification, Persisted>(CIRCUIT_STATE_VERSION);
const app = document.getElementById('app')!;

let view: CircuitView | undefined;
let card: FeatureCard | undefined;
let intervention: InterventionResult | undefined;
const busy = new BusyNotice();
let busyFraction: number | undefined;
/** The trace job the notices belong to (Start and Cancel name it). */
let traceJob: number | undefined;
let error = '';
/** The estimate of the graph being traced (or waiting for Start); cleared when its graph or an error arrives. */
let estimate: CircuitEstimateView | undefined;
let selected: string | undefined;
let p: Persisted = host.getState() ?? { pinned: [], groups: [], onlyPinned: false };
let thresholdTimer: ReturnType<typeof setTimeout> | undefined;
/** The clamp factor last used on a card. */
let clampFactor = 3;
/** Zoom, pan and edge count of the graph on screen; kept across re-renders (clicks, pins), reset for a new graph. */
let graphState: GraphViewState = { slug: '', edges: 400 };
/** The Target row being edited (undefined: as the graph on screen was traced). */
let targetKind: CircuitTargetRequest['kind'] | undefined;
/** What is typed in the target's fields and not yet traced: kept when the panel redraws (a graph or its labels arriving). */
const targetDraft: { token?: string; contrast?: string; layer?: string; position?: string } = {};
/** The saved vector picked for a direction target. */
let pickedVector: PickedVector | undefined;
/** Text searched for in the graph's feature labels and output tokens (matching nodes are marked). */
let search = '';
/** What the last label import did, and for which transcoder set. */
let labelsNote = '';
let labelsScan: string | undefined;

host.onEvent((m) => {
  switch (m.type) {
    case 'circuit/busy':
      traceJob = m.jobId;
      busy.show(m.what, () => host.cancelJob(m.jobId));
      busyFraction = m.fraction;
      error = '';
      if (document.getElementById('busy')) {
        document.getElementById('busy')!.textContent = `${busy.text}…`;
        const bar = document.getElementById('busy-progress') as HTMLProgressElement | null;
        if (bar && m.fraction !== undefined) {
          bar.value = m.fraction;
          return;
        }
        if (view && m.fraction === undefined) return;
      }
      break;
    case 'circuit/estimate':
      traceJob = m.jobId;
      estimate = m.estimate;
      if (m.estimate.awaitingStart) busy.clear();
      error = '';
      break;
    case 'circuit/view':
      busy.clear();
      estimate = undefined;
      error = '';
      // Another graph (a new trace or an imported file): the old card, intervention and selection belong to the old one.
      if (view && view.slug !== m.view.slug) {
        card = undefined;
        intervention = undefined;
        selected = undefined;
        // Pins and groups name nodes of the old graph: a new graph starts with its own (an imported file's, or none).
        p = { ...p, pinned: m.view.pinned ?? [], groups: m.view.supernodes ?? [] };
        save();
      } else if (m.view.pinned?.length || m.view.supernodes?.length) p = { ...p, pinned: m.view.pinned ?? [], groups: m.view.supernodes ?? [] };
      view = m.view;
      break;
    case 'circuit/error':
      busy.clear();
      estimate = undefined;
      error = m.message;
      break;
    default:
      unreachable(m);
  }
  render();
});

/**
 * Sends a request; with `busyText`, shows it as busy (its Cancel cancels the request) until the reply. A failure
 * shows in the error notice; a cancellation clears the busy notice only.
 */
function ask<M extends Method<CircuitRequests>>(method: M, params: ParamsOf<CircuitRequests, M>, busyText: string | undefined, onResult: (r: ResultOf<CircuitRequests, M>) => void = () => undefined): void {
  const req = host.request(method, params);
  const result = busyText ? busy.track(req, busyText) : req.result;
  if (busyText) {
    busyFraction = undefined;
    error = '';
    render();
  }
  result.then(
    (r) => {
      onResult(r);
      render();
    },
    (e) => {
      if (!(e instanceof RequestError && e.cancelled)) error = failureText(e);
      render();
    },
  );
}

function save(): void {
  host.setState(p);
}

function render(): void {
  app.replaceChildren();
  const awaiting = !busy.text && !error && estimate?.awaitingStart;
  app.dataset.state = awaiting ? 'awaiting-start' : busy.text ? 'running' : error ? 'error' : view ? 'ready' : 'empty';
  // Which graph is on screen (each trace has its own), so a caller can wait for a new one.
  if (view) app.dataset.slug = view.slug;
  if (awaiting && estimate) {
    const n = el('div', 'notice estimate');
    n.id = 'circuit-estimate';
    const over = estimate.peakMB > estimate.budgetMB;
    n.append(
      el('span', undefined, `${estimateText(estimate)}.${over ? ` That is over the memory budget of ${mbText(estimate.budgetMB)}: fewer feature rows will be computed, and the graph will say how much of the influence they cover.` : ''} `),
      withId(button('Start', () => {
        estimate = { ...estimate!, awaitingStart: false };
        busy.show('Starting', () => traceJob !== undefined && host.cancelJob(traceJob));
        render();
        if (traceJob !== undefined) host.notify({ type: 'circuit/start', jobId: traceJob });
      }, 'primary'), 'circuit-start'),
      withId(button('Cancel', () => traceJob !== undefined && host.cancelJob(traceJob)), 'circuit-cancel-start'),
    );
    app.append(n);
    // The graph on screen is another prompt's: only the decision is shown, at the top.
    window.scrollTo(0, 0);
    return;
  }
  if (busy.text) {
    const n = el('div', 'notice running');
    const t = el('span', undefined, `${busy.text}…`);
    t.id = 'busy';
    n.append(spinner(), t);
    if (busyFraction !== undefined || estimate) {
      const bar = document.createElement('progress');
      bar.id = 'busy-progress';
      bar.max = 1;
      if (busyFraction !== undefined) bar.value = busyFraction;
      n.append(bar);
    }
    n.append(button('Cancel', () => busy.cancel()));
    if (estimate) n.append(el('span', 'muted', ` Estimated: ${estimateText(estimate)}.`));
    app.append(n);
  }
  if (error) {
    const e = el('div', 'notice error', error);
    e.id = 'circuit-error';
    app.append(e);
  }
  if (!view) {
    app.append(el('p', 'empty', 'Select a prompt in an editor and run “Residual: Trace Circuit for Selection”, or open a graph JSON file.'), button('Open graph JSON…', () => ask('circuit/import', {}, undefined)));
    return;
  }
  app.append(header(view), controls(view));
  if (view.live) app.append(targetRow(view));
  app.append(labelRow(view));
  const layout = el('div', 'circuit-layout');
  const graphBox = el('div', 'graph-box');
  if (graphState.slug !== view.slug) graphState = { slug: view.slug, edges: graphState.edges };
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
  if (v.reconstruction) wrap.append(reconstructionLine(v.reconstruction));
  wrap.append(prompt);
  return wrap;
}

/**
 * Each layer's reconstruction (FVU: the share of the MLP output's variance the transcoder misses on this prompt),
 * beside the set's own report; a warning when a layer is poor, naming the input hook that fits when one does.
 */
function reconstructionLine(r: NonNullable<CircuitView['reconstruction']>): HTMLElement {
  const box = el('div');
  const line = el('div', 'muted');
  line.id = 'circuit-fvu';
  const cells = r.fvu.map((x, l) => `L${l} ${x === null ? '—' : x.toFixed(2)}${r.reported[l] != null ? ` (set ${r.reported[l]!.toFixed(2)})` : ''}`);
  line.textContent = `Transcoder reconstruction on this prompt (FVU, lower is better; ${r.replacement ? `${r.replacement}, ` : ''}input ${r.input}): ${cells.join(' · ')}`;
  line.title = "Fraction of variance unexplained: ‖MLP output − transcoder output‖² / ‖MLP output − its mean‖² over this prompt's tokens (a leading BOS left out). In brackets: the set's own report, where its files have one.";
  box.append(line);
  if (r.warning) {
    const w = el('div', 'notice error', `Check the transcoders: ${r.warning}.`);
    w.id = 'circuit-fvu-warning';
    box.append(w);
  }
  return box;
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
        ask('circuit/thresholds', { node, edge }, undefined);
      }, 250);
    });
    const wrap = el('label', 'slider');
    wrap.append(el('span', undefined, label), input, out);
    return wrap;
  };
  const nodeSlider = slider('node-threshold', 'Node threshold', v.nodeThreshold, 0.1);
  nodeSlider.title = "Keep the most influential nodes until they carry this share of all influence on the logits (circuit-tracer's node_threshold; 0.8 by default). Higher: more nodes.";
  const edgeSlider = slider('edge-threshold', 'Edge threshold', v.edgeThreshold, 0.5);
  edgeSlider.title = "Among the kept nodes, keep the strongest edges until they carry this share of the edge influence (circuit-tracer's edge_threshold; 0.98 by default). Higher: more edges.";
  // circuit-tracer's defaults in the middle; sparser and denser graphs one choice away.
  const presets: [string, string, number, number][] = [
    ['sparse', 'Sparse (0.6 / 0.9)', 0.6, 0.9],
    ['default', 'Default (0.8 / 0.98)', 0.8, 0.98],
    ['dense', 'Dense (0.95 / 0.99)', 0.95, 0.99],
  ];
  const current = presets.find(([, , n, e]) => Math.abs(n - v.nodeThreshold) < 1e-9 && Math.abs(e - v.edgeThreshold) < 1e-9)?.[0] ?? 'custom';
  const presetMenu = dropdown(
    [...presets.map(([value, label]) => ({ value, label })), ...(current === 'custom' ? [{ value: 'custom', label: `Custom (${v.nodeThreshold.toFixed(2)} / ${v.edgeThreshold.toFixed(2)})` }] : [])],
    current,
    (value) => {
      const p = presets.find(([k]) => k === value);
      if (p) ask('circuit/thresholds', { node: p[2], edge: p[3] }, undefined);
    },
    'prune-preset',
  );
  presetMenu.title = 'Pruning presets: node threshold / edge threshold';
  if (!v.live) (presetMenu as HTMLElement & { disabled: boolean }).disabled = true;
  row.append(
    presetMenu,
    nodeSlider,
    edgeSlider,
    button('Export JSON…', () => ask('circuit/export', { pinned: p.pinned, supernodes: p.groups }, undefined)),
    button('Open JSON…', () => ask('circuit/import', {}, undefined)),
  );
  if (!v.live) row.append(el('span', 'muted', 'Imported: thresholds, cards and interventions need a graph traced here.'));
  const help = el('div', 'hint', 'Node threshold: the share of the total influence on the logits that the kept nodes carry. Edge threshold: the share of the edge influence that the kept edges carry. Higher values keep more.');
  help.id = 'threshold-help';
  const wrap = el('div');
  wrap.append(row, help);
  return wrap;
}

/**
 * What the graph traces: the most likely tokens, one token, a logit difference, or a saved vector's dot product with
 * the residual at a layer, hook and position. Trace sends it to the host, which checks it and retraces the selection.
 */
function targetRow(v: CircuitView): HTMLElement {
  const now = v.target?.request ?? { kind: 'top' };
  const kind = targetKind ?? now.kind;
  const wrap = el('div', 'row target-row');
  wrap.id = 'circuit-target';
  wrap.append(el('span', undefined, 'Target'));
  wrap.append(
    dropdown(
      [
        { value: 'top', label: 'Most likely tokens' },
        { value: 'token', label: 'One token' },
        { value: 'contrast', label: 'Logit difference' },
        { value: 'direction', label: 'Saved vector' },
      ],
      kind,
      (k) => {
        targetKind = k as CircuitTargetRequest['kind'];
        render();
      },
      'target-kind',
    ),
  );
  const dir = now.kind === 'direction' ? now : undefined;
  const vec = pickedVector ?? (dir ? { file: dir.file, label: dir.file.split(/[\\/]/).pop()!, layer: dir.layer, hook: dir.hook } : undefined);
  const draftField = (key: keyof typeof targetDraft, value: string, placeholder: string, id: string) => {
    const f = textField(targetDraft[key] ?? value, placeholder, id);
    f.addEventListener('input', () => (targetDraft[key] = f.value));
    return f;
  };
  const tokenField = draftField('token', now.kind === 'token' || now.kind === 'contrast' ? now.token : '', 'token, e.g. " Paris"', 'target-token');
  const contrastField = draftField('contrast', now.kind === 'contrast' ? now.contrast : '', 'minus token, e.g. " London"', 'target-contrast');
  const layerField = draftField('layer', String(dir?.layer ?? vec?.layer ?? ''), 'layer', 'target-layer');
  const positionField = draftField('position', dir?.position === undefined ? '' : String(dir.position), 'position (last)', 'target-position');
  let hook = dir?.hook ?? vec?.hook ?? 'hook_resid_pre';
  if (kind === 'token' || kind === 'contrast') wrap.append(tokenField);
  if (kind === 'contrast') wrap.append(el('span', undefined, '−'), contrastField);
  if (kind === 'direction') {
    const label = el('span', 'mono', vec ? vec.label : 'no vector chosen');
    label.id = 'target-vector';
    wrap.append(
      button('Choose vector…', () => ask('circuit/pickVector', {}, undefined, (r) => r && (pickedVector = r))),
      label,
      el('span', undefined, 'layer'),
      layerField,
      el('span', undefined, 'hook'),
      dropdown(
        ['hook_resid_pre', 'hook_resid_mid', 'hook_resid_post'].map((h) => ({ value: h, label: h.replace('hook_', '') })),
        hook,
        (h) => (hook = h as typeof hook),
        'target-hook',
      ),
      el('span', undefined, 'position'),
      positionField,
    );
  }
  const trace = () => {
    const num = (f: { value: string }) => (f.value.trim() === '' ? undefined : Number(f.value));
    let request: CircuitTargetRequest;
    if (kind === 'token') request = { kind, token: tokenField.value };
    else if (kind === 'contrast') request = { kind, token: tokenField.value, contrast: contrastField.value };
    else if (kind === 'direction') {
      if (!vec) {
        error = 'Choose a saved vector first (the Steering panel saves them in .residual/vectors).';
        render();
        return;
      }
      const layer = num(layerField);
      const position = num(positionField);
      if (layer === undefined || !Number.isInteger(layer) || (position !== undefined && !Number.isInteger(position))) {
        error = 'The layer and the position are whole numbers (leave the position empty for the last token).';
        render();
        return;
      }
      request = { kind, file: vec.file, layer, hook, position };
    } else request = { kind: 'top' };
    targetKind = undefined;
    for (const k of Object.keys(targetDraft) as (keyof typeof targetDraft)[]) delete targetDraft[k];
    ask('circuit/target', request, undefined);
  };
  wrap.append(withId(button('Trace', trace, 'primary'), 'target-trace'));
  const shown = el('span', 'muted', v.target ? ` Now: ${v.target.text}${v.target.value !== undefined ? ` = ${v.target.value.toPrecision(4)}` : ''}` : '');
  shown.id = 'target-now';
  wrap.append(shown);
  return wrap;
}

/** Whether a node matches the search: its label, its output token or its name, case-insensitively. */
function matches(n: CircuitNode): boolean {
  const q = search.trim().toLowerCase();
  if (!q || n.kind !== 'feature') return false;
  return [n.explanation, n.output, n.label].some((t) => t !== undefined && t.toLowerCase().includes(q));
}

/** Search over feature labels (found nodes are ringed) and label import. */
function labelRow(v: CircuitView): HTMLElement {
  const row = el('div', 'row');
  row.id = 'label-row';
  const field = textField(search, 'search labels and output tokens', 'node-search');
  field.addEventListener('change', () => {
    search = field.value;
    render();
  });
  row.append(field);
  if (search.trim()) {
    const n = v.nodes.filter(matches).length;
    row.append(withId(el('span', 'muted', `${n} feature node${n === 1 ? '' : 's'} match`), 'search-count'));
  }
  if (v.live) {
    row.append(
      button('Import labels…', () =>
        ask('circuit/importLabels', {}, undefined, (r) => {
          if (r) {
            labelsNote = `${r.count} label${r.count === 1 ? '' : 's'} imported from ${r.file}.`;
            labelsScan = view?.scan;
          }
        }),
      ),
    );
  }
  // Labels belong to one transcoder set: the note goes with a graph of another set.
  if (labelsNote && v.scan !== labelsScan) labelsNote = '';
  if (labelsNote) row.append(withId(el('span', 'muted', labelsNote), 'labels-note'));
  return row;
}

function drawGraph(v: CircuitView): HTMLElement {
  const pinned = new Set(p.pinned);
  const groupOf = new Map<string, number>();
  p.groups.forEach((g, gi) => g.slice(1).forEach((id) => groupOf.set(id, gi)));
  return graphView(v, graphState, {
    visible: (n) => !p.onlyPinned || pinned.has(n.id) || n.kind === 'token' || n.kind === 'logit',
    classOf: (n) =>
      `node ${n.kind}${pinned.has(n.id) ? ' pinned' : ''}${selected === n.id ? ' selected' : ''}${groupOf.has(n.id) ? ` group${groupOf.get(n.id)! % 6}` : ''}${matches(n) ? ' match' : ''}`,
    onHover: describe,
    onClick: (n, shift) => {
      if (shift) {
        p.pinned = pinned.has(n.id) ? p.pinned.filter((x) => x !== n.id) : [...p.pinned, n.id];
        save();
        render();
        return;
      }
      selected = n.id;
      if (n.kind === 'feature' && n.index !== null && v.live) {
        ask('circuit/card', { layer: n.layer, index: n.index }, 'Loading the feature card', (c) => {
          card = c;
          intervention = undefined;
        });
      }
      render();
    },
    onState: (s) => (graphState = s),
    onEdges: (s) => {
      graphState = s;
      render();
    },
  });
}

/** The hovered node in words, with its strongest inputs and outputs named. */
function describe(n: CircuitNode | undefined, ins: Edge[], outs: Edge[]): void {
  const tip = document.getElementById('graph-tip');
  if (!tip || !n || !view) return;
  const v = view;
  const name = (id: string): string => {
    const m = v.nodes.find((x) => x.id === id);
    if (!m) return id;
    if (m.kind === 'feature') return `L${m.layer}#${m.index}${m.output !== undefined ? `→${showToken(m.output)}` : ''}@${m.pos}`;
    if (m.kind === 'error') return `err L${m.layer}@${m.pos}`;
    if (m.kind === 'token') return `tok ${showToken(v.tokens[m.pos] ?? '')}@${m.pos}`;
    return `logit ${showToken(m.label.replace(/^Output "(.*)" \(p=.*\)$/s, '$1'))}`;
  };
  const fmt = (e: Edge, other: string) => `${name(other)} ${e.w >= 0 ? '+' : ''}${e.w.toPrecision(3)}`;
  const kind =
    n.kind === 'feature'
      ? `feature ${n.index} of layer ${n.layer}${n.output !== undefined ? ` (pushes up ${JSON.stringify(n.output)})` : ''}`
      : n.kind === 'error'
        ? `MLP error node, layer ${n.layer}`
        : n.kind;
  // circuit-tracer's node influence is cumulative: the share of all influence held by this node and every node
  // ranked above it; the top node of a graph has the smallest value.
  const infl = n.influence !== null ? ` · cumulative influence ${(n.influence * 100).toFixed(1)}%` : '';
  const prob = n.kind === 'logit' && n.prob !== null ? ` · p ${(n.prob * 100).toFixed(1)}%` : '';
  tip.textContent =
    `${kind} at position ${n.pos} ${JSON.stringify(v.tokens[n.pos] ?? '')}${n.activation !== null ? ` · activation ${n.activation.toPrecision(4)}` : ''}${infl}${prob}` +
    ` · strongest in: ${ins.map((e) => fmt(e, e.s)).join(', ') || '—'} · out: ${outs.map((e) => fmt(e, e.t)).join(', ') || '—'}`;
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
  s.append(el('h2', undefined, `Feature ${c.index} · layer ${c.layer}${c.output !== undefined ? ` → ${showToken(c.output)}` : ''}`));
  // The label: shown on the graph's nodes, searched, and written as `clerp` on export.
  const labelField = textField(c.label ?? '', 'label (what this feature means)', 'feature-label');
  const labelRow = el('div', 'row');
  labelRow.append(
    labelField,
    withId(
      button('Save label', () =>
        ask('circuit/label', { layer: c.layer, index: c.index, label: labelField.value }, undefined, () => {
          if (card === c) card = { ...c, label: labelField.value.trim() || undefined };
        }),
      ),
      'save-label',
    ),
  );
  s.append(labelRow);
  s.append(...featureCardBody(c));
  const active = c.activations.map((a, i) => [a, i] as const).filter(([a]) => a !== 0);
  const clampField = textField(String(clampFactor), '×', 'clamp-factor');
  clampField.title = 'Clamp: set the feature to this multiple of its activation at every position where it fires';
  const row = el('div', 'row');
  row.append(
    button('Ablate on this prompt', () => {
      ask('circuit/intervene', { description: `ablate feature ${c.index} of layer ${c.layer} at ${active.length} positions`, items: active.map(([, pos]) => ({ layer: c.layer, pos, feature: c.index, value: 0 })) }, 'Rerunning the model with the intervention', (r) => (intervention = r));
    }),
    clampField,
    button('Clamp', () => {
      const factor = Number(clampField.value);
      if (!Number.isFinite(factor)) {
        error = `clamp factor must be a number, got "${clampField.value}"`;
        render();
        return;
      }
      clampFactor = factor;
      ask('circuit/intervene', { description: `clamp feature ${c.index} of layer ${c.layer} to ${factor}× its activation`, items: active.map(([a, pos]) => ({ layer: c.layer, pos, feature: c.index, value: factor * a })) }, 'Rerunning the model with the intervention', (r) => (intervention = r));
    }),
    button('Steer with this feature…', () => ask('circuit/steer', { layer: c.layer, index: c.index }, undefined)),
  );
  if (!active.length) row.append(el('span', 'muted', '(not active on this prompt: ablating changes nothing)'));
  s.append(row);
  return s;
}

function interventionView(r: InterventionResult): HTMLElement {
  const s = el('section');
  s.id = 'intervention';
  s.append(el('h2', undefined, 'Intervention'), el('p', 'hint', `${r.description}. Predicted from the graph (direct edges, and all paths through the graph's features with attention frozen) next to the real model's change of each logit (minus the mean logit).`));
  const table = el('table', 'grid plain');
  const hr = el('tr');
  // A token's logit shows its probability; a contrast or a direction its value.
  const probs = r.rows.every((x) => x.baseProb !== null);
  for (const h of [probs ? 'token' : 'target', probs ? 'p before' : 'before', probs ? 'p after' : 'after', 'actual Δ', 'graph: direct', 'graph: paths']) hr.append(el('th', undefined, h));
  table.append(hr);
  for (const x of r.rows) {
    const tr = el('tr');
    const before = x.baseProb === null ? x.base.toPrecision(4) : pct(x.baseProb);
    const after = x.newProb === null ? x.after.toPrecision(4) : pct(x.newProb);
    tr.append(el('td', 'mono', x.baseProb === null ? x.token : showToken(x.token)), el('td', 'num', before), el('td', 'num', after), el('td', 'num', x.actual.toPrecision(3)), el('td', 'num', x.predictedDirect.toPrecision(3)), el('td', 'num', x.predictedPaths.toPrecision(3)));
    table.append(tr);
  }
  s.append(table);
  if (r.notInGraph) s.append(el('p', 'muted', `${r.notInGraph} intervened feature(s) were not in the graph: the rerun includes them, the prediction does not.`));
  return s;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}

onThemeChange(render);
render();
