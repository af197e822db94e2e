/**
 * The Steering panel: pick a direction (a transcoder feature, contrastive pairs, a saved vector), say where and how
 * much to add it, and see the next-token effect, baseline vs steered generation, and a layer × strength sweep.
 * Results stay on screen when a later request fails, so the baseline never disappears.
 */
import { RESID_POINTS, STEERING_STATE_VERSION, unreachable, type GenerationComparison, type Method, type NextTokenEffect, type ParamsOf, type ResultOf, type SteerOp, type SteerSettings, type SteeringEvent, type SteeringRequests, type SteeringState, type SweepResult } from '../../src/protocol';
import { BusyNotice, failureText, hostClient, RequestError } from '../host';
import { colours, drawChart } from '../charts';
import { button, dropdown, el, showToken, spinner, textArea, textField, onThemeChange } from '../ui';

interface Persisted {
  settings: SteerSettings;
  gen: { maxNewTokens: number; temperature: number; topP: number; seed: number };
  sweep: { strengths: string; target: string; neutral: string };
  feature: { layer: number; index: string };
  /** The strength field as typed. */
  strengthText?: string;
  /** The operator's value as typed. */
  valueText?: string;
}

const host = hostClient<SteeringRequests, SteeringEvent, { type: 'ready' }, Persisted>(STEERING_STATE_VERSION);
const app = document.getElementById('app')!;
let state: SteeringState = {};
const p: Persisted = host.getState() ?? {
  settings: { layer: 0, point: 'hook_resid_pre', strength: 4, relative: false, positions: 'all' },
  gen: { maxNewTokens: 24, temperature: 0, topP: 0.9, seed: 1 },
  sweep: { strengths: '-16, -8, -4, -2, 0, 2, 4, 8, 16', target: '', neutral: 'The quick brown fox jumps over the lazy dog.\nfor i in range(10):\n    print(i)\n' },
  feature: { layer: 0, index: '0' },
};
const busy = new BusyNotice();
let progress = '';
let error = '';
let effect: { effect: NextTokenEffect; settings: SteerSettings } | undefined;
let generation: { result: GenerationComparison; settings: SteerSettings } | undefined;
let sweep: SweepResult | undefined;

const save = () => host.setState(p);

host.onEvent((m) => {
  switch (m.type) {
    case 'steer/state': {
      const before = state;
      state = m.state;
      const newVector = !!m.state.vector && JSON.stringify(m.state.vector) !== JSON.stringify(before.vector);
      // Results belong to one prompt and one vector: a new one of either clears them (and any old error).
      if (newVector || (before.prompt !== undefined && m.state.prompt !== before.prompt)) {
        effect = undefined;
        generation = undefined;
        sweep = undefined;
        error = '';
      }
      if (newVector && m.state.vector) {
        p.settings = { ...p.settings, layer: m.state.vector.layer, point: m.state.vector.point };
        // The feature row shows the feature the vector came from.
        const index = m.state.vector.provenance.index;
        if (m.state.vector.source === 'feature') p.feature = { layer: m.state.vector.layer, index: typeof index === 'number' ? String(index) : p.feature.index };
        save();
      }
      break;
    }
    default:
      unreachable(m.type);
  }
  render();
});

/**
 * Sends a request; with `busyText`, shows it as busy (its Cancel cancels this request) until the reply. A failure or
 * cancellation shows in the error notice; earlier results stay on screen.
 */
function ask<M extends Method<SteeringRequests>>(method: M, params: ParamsOf<SteeringRequests, M>, busyText: string | undefined, onResult: (r: ResultOf<SteeringRequests, M>) => void = () => undefined): void {
  const req = host.request(method, params, (pr) => {
    progress = `${pr.done} / ${pr.total}`;
    const el2 = document.getElementById('steer-progress');
    if (el2) el2.textContent = progress;
  });
  const result = busyText ? busy.track(req, busyText) : req.result;
  progress = '';
  error = '';
  render();
  result.then(
    (r) => {
      onResult(r);
      render();
    },
    (e) => {
      // A run replaced by a newer one says nothing: the newer one owns the notice.
      if (!(e instanceof RequestError && e.cancelled && busy.text)) error = failureText(e);
      render();
    },
  );
}

function render(): void {
  app.replaceChildren();
  app.dataset.state = busy.text ? 'running' : error ? 'error' : 'ready';
  const head = el('header', 'summary');
  head.append(el('strong', undefined, 'Steering'), el('span', 'muted', state.model ? ` ${state.model.name} · ${state.model.nLayers} layers · d_model ${state.model.dModel}` : ' model not loaded yet'));
  app.append(head);
  if (busy.text) {
    const n = el('div', 'notice running');
    const pr = el('span', 'muted', progress);
    pr.id = 'steer-progress';
    n.append(spinner(), el('span', undefined, `${busy.text}… `), pr, button('Cancel', () => busy.cancel()));
    app.append(n);
  }
  if (error) {
    const e = el('div', 'notice error', error);
    e.id = 'steer-error';
    app.append(e);
  }
  app.append(vectorSection(), whereSection(), promptSection(), effectSection(), generationSection(), sweepSection());
}

/** A label and its controls that wrap as one piece, so a narrow panel never puts a label beside another field. */
function field(label: string, ...controls: HTMLElement[]): HTMLElement {
  const f = el('span', 'field');
  f.append(el('span', 'field-label', label), ...controls);
  return f;
}

/** Whether the form's numbers are numbers; otherwise says which is not (the results on screen stay). */
function checked(): boolean {
  const op = p.settings.op ?? 'add';
  if (op === 'set' || op === 'cap') {
    const v = (p.valueText ?? (p.settings.value === undefined ? '' : String(p.settings.value))).trim();
    if (v === '' || !Number.isFinite(Number(v))) {
      error = `the ${op} operator needs a value (the component along the unit vector), got ${JSON.stringify(v)}`;
      render();
      return false;
    }
    p.settings.value = Number(v);
    return true;
  }
  if (op === 'ablate') return true;
  const text = (p.strengthText ?? String(p.settings.strength)).trim();
  if (text === '' || !Number.isFinite(Number(text))) {
    error = `strength must be a number, got ${JSON.stringify(text)}`;
    render();
    return false;
  }
  p.settings.strength = Number(text);
  return true;
}

function section(title: string, ...children: (HTMLElement | string)[]): HTMLElement {
  const s = el('section');
  s.append(el('h2', undefined, title), ...children);
  return s;
}

function vectorSection(): HTMLElement {
  const v = state.vector;
  const info = el('div', v ? 'vector-info' : 'muted', v ? `${v.label} · ${v.source} · made at blocks.${v.layer}.${v.point} · ‖v‖ = ${v.norm.toPrecision(4)} · d_model ${v.dModel}` : 'No vector yet: build one below.');
  info.id = 'vector-info';
  const L = state.model?.nLayers ?? 1;
  const feature = el('div', 'row');
  const fIndex = textField(p.feature.index, 'feature index', 'feature-index');
  feature.append(
    el('span', undefined, 'Transcoder feature: layer'),
    dropdown(layerOptions(L), String(p.feature.layer), (x) => ((p.feature.layer = Number(x)), save()), 'feature-layer'),
    fIndex,
    button('Use feature', () => {
      p.feature.index = fIndex.value;
      save();
      ask('steer/vectorFromFeature', { layer: p.feature.layer, index: Number(fIndex.value) }, undefined);
    }),
  );
  if (state.transcoders) feature.append(el('span', 'muted', state.transcoders));
  const pairs = el('div', 'row');
  pairs.append(
    el('span', undefined, 'Contrastive pairs:'),
    button('From the active editor', () => ask('steer/vectorFromPairs', { layer: p.settings.layer, point: p.settings.point }, 'Averaging the pairs')),
    el('span', 'muted', `(mean difference at blocks.${p.settings.layer}.${p.settings.point}; lines "+ positive" / "- negative", a blank line between pairs)`),
  );
  const files = el('div', 'row');
  files.append(el('span', undefined, 'Saved vector:'), button('Open…', () => ask('steer/openVector', {}, undefined)), button('Save…', () => ask('steer/saveVector', {}, undefined)),
    button('Export for llama.cpp…', () => checked() && ask('steer/exportGguf', { settings: p.settings }, undefined)),
  );
  return section('Vector', info, feature, pairs, files);
}

function whereSection(): HTMLElement {
  const s = p.settings;
  const L = state.model?.nLayers ?? 1;
  const row = el('div', 'row');
  // Kept as typed, so a mistake stays visible to correct (a number field would show NaN).
  const strength = textField(p.strengthText ?? String(s.strength), 'strength', 'strength');
  strength.addEventListener('input', () => {
    p.strengthText = strength.value;
    s.strength = Number(strength.value);
    save();
  });
  const positions = textField(s.positions, 'all | from:N | 3,4,5 | generated', 'positions');
  positions.addEventListener('input', () => ((s.positions = positions.value), save()));
  const op = s.op ?? 'add';
  // The value of set/cap: the component along the unit vector, in the residual's units. Kept as typed, like strength.
  const value = textField(p.valueText ?? (s.value === undefined ? '' : String(s.value)), 'value', 'op-value');
  value.addEventListener('input', () => {
    p.valueText = value.value;
    s.value = value.value.trim() === '' ? undefined : Number(value.value);
    save();
  });
  if (op !== 'set' && op !== 'cap') value.setAttribute('disabled', '');
  if (op !== 'add') strength.setAttribute('disabled', '');
  row.append(
    field(
      'Layer',
      dropdown(layerOptions(L), String(s.layer), (x) => ((s.layer = Number(x)), save()), 'steer-layer'),
      dropdown(RESID_POINTS.map((x) => ({ value: x, label: x })), s.point, (x) => ((s.point = x as SteerSettings['point']), save()), 'steer-point'),
    ),
    field(
      'Strength',
      strength,
      dropdown([{ value: 'abs', label: '× vector as stored' }, { value: 'rel', label: '× mean residual norm (unit vector)' }], s.relative ? 'rel' : 'abs', (x) => ((s.relative = x === 'rel'), save()), 'strength-kind'),
    ),
    field(
      'Operator',
      dropdown(
        [
          { value: 'add', label: 'add × strength' },
          { value: 'ablate', label: 'ablate the component along it' },
          { value: 'set', label: 'set the component to' },
          { value: 'cap', label: 'cap the component at' },
        ],
        op,
        (x) => ((s.op = x as SteerOp), save(), render()),
        'steer-op',
      ),
      value,
    ),
    field('Positions', positions),
  );
  return section('Where and how much', row);
}

function promptSection(): HTMLElement {
  const pre = el('pre', 'preview', state.prompt ?? 'No prompt: analyse a selection, or use the current selection.');
  pre.id = 'steer-prompt';
  const row = el('div', 'row');
  row.append(button('Use current selection', () => ask('steer/useSelection', {}, undefined)));
  if (!state.chatTemplate || state.prompt === undefined) return section('Prompt', pre, row);
  const note = el('p', 'hint', 'Runs as a user turn of the model\'s chat template, with the assistant prompt after it (residual.chat).');
  note.id = 'steer-chat';
  note.title = state.chatTemplate;
  return section('Prompt', pre, note, row);
}

function effectSection(): HTMLElement {
  const row = el('div', 'row');
  row.append(button('Next-token effect', () => checked() && ask('steer/effect', { settings: p.settings }, 'Computing the next-token effect', (r) => (effect = r)), 'primary'));
  const body = el('div');
  if (effect) {
    const e = effect.effect;
    const summary = el('p', e.nonFinite ? 'notice warning' : 'hint', e.nonFinite ? (e.nonFiniteReason ? `The steered model overflowed, so the baseline stands: ${e.nonFiniteReason}.` : 'The steered model produced NaN/Inf at this strength: the baseline stands. Lower the strength.') : `KL(baseline ‖ steered) = ${e.kl.toFixed(4)} nats · ${opText(effect.settings, e.scale)} at blocks.${effect.settings.layer}.${effect.settings.point}${effect.settings.positions.trim() === 'generated' ? ' (only generated tokens are steered: the next token after the prompt is unchanged)' : ''}`);
    summary.id = 'effect-summary';
    body.append(summary);
    const table = el('table', 'grid plain');
    table.id = 'effect-table';
    const hr = el('tr');
    for (const h of ['token', 'baseline', 'steered', 'change']) hr.append(el('th', undefined, h));
    table.append(hr);
    for (const d of e.deltas) {
      const tr = el('tr');
      const change = d.steered - d.base;
      tr.append(el('td', 'mono', showToken(d.text)), el('td', 'num', pct(d.base)), el('td', 'num', pct(d.steered)), el('td', `num ${change >= 0 ? 'up' : 'down'}`, `${change >= 0 ? '+' : ''}${(change * 100).toFixed(2)} pp`));
      table.append(tr);
    }
    body.append(table);
  }
  return section('Next-token effect', row, body);
}

function generationSection(): HTMLElement {
  const g = p.gen;
  const row = el('div', 'row');
  const n = textField(String(g.maxNewTokens), 'tokens', 'gen-tokens');
  const t = textField(String(g.temperature), 'temperature (0 = greedy)', 'gen-temperature');
  const tp = textField(String(g.topP), 'top-p', 'gen-top-p');
  const seed = textField(String(g.seed), 'seed', 'gen-seed');
  row.append(field('Tokens', n), field('Temperature', t), field('Top-p', tp), field('Seed', seed));
  row.append(
    button('Generate', () => {
      p.gen = { maxNewTokens: Number(n.value), temperature: Number(t.value), topP: Number(tp.value), seed: Number(seed.value) };
      save();
      if (checked()) ask('steer/generate', { settings: p.settings, ...p.gen }, 'Generating', (r) => (generation = r));
    }, 'primary'),
  );
  const body = el('div', 'pair');
  if (generation) {
    const r = generation.result;
    const side = (label: string, text: string, id: string, warn?: boolean) => {
      const d = el('div', 'side');
      const pre = el('pre', 'generated', text);
      pre.id = id;
      d.append(el('strong', undefined, label), pre);
      if (warn) d.append(el('div', 'notice warning', 'Stopped: the model produced NaN/Inf.'));
      return d;
    };
    body.append(side('Baseline', r.baseline.text, 'gen-baseline', r.baseline.nonFinite), side(`Steered (${steeredLabel(generation.settings)})`, r.steered.text, 'gen-steered', r.steered.nonFinite));
    const meta = el('p', 'hint', `${r.settings.temperature === 0 ? 'greedy' : `temperature ${r.settings.temperature}, top-p ${r.settings.topP}`}, seed ${r.settings.seed}, ${r.tokensPerSecond.toFixed(1)} tokens/s with the KV cache`);
    const wrap = el('div');
    wrap.append(body, meta);
    return section('Generation, baseline vs steered', row, wrap);
  }
  return section('Generation, baseline vs steered', row, body);
}

function sweepSection(): HTMLElement {
  const s = p.sweep;
  const row = el('div', 'row');
  const strengths = textField(s.strengths, 'strengths, comma-separated', 'sweep-strengths');
  const target = textField(s.target, 'target token (optional), e.g. " def" or \\n', 'sweep-target');
  row.append(field('Strengths', strengths), field('Target', target));
  const neutral = textArea(s.neutral, 'sweep-neutral', 3);
  const go = el('div', 'row');
  go.append(
    button('Sweep all layers', () => {
      p.sweep = { strengths: strengths.value, target: target.value, neutral: neutral.value };
      save();
      const list = strengths.value.split(',').map((x) => Number(x.trim())).filter((x) => Number.isFinite(x));
      const L = state.model?.nLayers ?? 1;
      if (checked()) ask('steer/sweep', { settings: p.settings, layers: Array.from({ length: L }, (_, i) => i), strengths: list, target: target.value, neutral: neutral.value }, 'Sweeping', (r) => (sweep = r));
    }, 'primary'),
  );
  const body = el('div');
  if (sweep) body.append(sweepCharts(sweep));
  return section('Sweep: layer × strength', row, el('p', 'hint', 'Neutral text for the degradation measure (the steered model\'s mean next-token loss on it):'), neutral, go, body);
}

function sweepCharts(r: SweepResult): HTMLElement {
  const wrap = el('div', 'sweep');
  wrap.append(el('p', 'hint', `${r.layers.length} layers × ${r.strengths.length} strengths at ${r.point}${r.relative ? ' (× mean residual norm)' : ''} in ${(r.ms / 1000).toFixed(1)} s. Baseline neutral loss ${r.baselineNeutralLoss.toFixed(3)} nats${r.target ? `; baseline p(${showToken(r.target.text)}) = ${pct(r.baselineTargetProb)} (token id ${r.target.id})` : ''}. Gaps: the model produced NaN/Inf there.`));
  const charts: { id: string; title: string; data: number[][]; log?: boolean }[] = [
    { id: 'sweep-kl', title: 'KL(baseline ‖ steered), nats', data: r.kl },
    { id: 'sweep-loss', title: 'Loss on the neutral text, nats (degradation)', data: r.neutralLoss },
  ];
  if (r.target) charts.splice(1, 0, { id: 'sweep-target', title: `p(${showToken(r.target.text)}) at the last position`, data: r.targetProb });
  const { fg, grid } = colours();
  const palette = ['charts-blue', 'charts-orange', 'charts-green', 'charts-purple', 'charts-red', 'charts-yellow'];
  for (const c of charts) {
    const box = el('div', 'chartbox small');
    const canvas = el('canvas');
    canvas.id = c.id;
    box.append(canvas);
    wrap.append(el('h3', undefined, c.title), box);
    requestAnimationFrame(() =>
      drawChart(canvas, {
        type: 'line',
        data: {
          labels: r.strengths.map(String),
          datasets: r.layers.map((l, i) => {
            const colour = getComputedStyle(document.body).getPropertyValue(`--vscode-${palette[i % palette.length]}`).trim() || fg;
            return { label: `blocks.${l}`, data: c.data[i].map((v) => (Number.isFinite(v) ? v : null)), borderColor: colour, backgroundColor: colour, spanGaps: false };
          }),
        },
        options: {
          animation: false,
          maintainAspectRatio: false,
          plugins: { legend: { labels: { color: fg } }, tooltip: { callbacks: { title: (items) => `strength ${items[0]?.label}` } } },
          scales: { x: { title: { display: true, text: 'strength', color: fg }, ticks: { color: fg }, grid: { color: grid } }, y: { ticks: { color: fg }, grid: { color: grid } } },
        },
      }),
    );
  }
  return wrap;
}

function layerOptions(L: number) {
  return Array.from({ length: L }, (_, l) => ({ value: String(l), label: `blocks.${l}` }));
}
function pct(x: number): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(2)}%` : '—';
}

onThemeChange(render);
render();

/** What was applied, in words: "applied scale 4.000", "ablated the component along the vector", "component set to 3". */
function opText(s: SteerSettings, scale: number): string {
  switch (s.op ?? 'add') {
    case 'add':
      return `applied scale ${scale.toPrecision(4)}`;
    case 'ablate':
      return 'the component along the vector ablated';
    case 'set':
      return `the component along the vector set to ${s.value}`;
    case 'cap':
      return `the component along the vector capped at ${s.value}`;
  }
}

/** The steered side's heading: "×4 at blocks.3", "×0.5 mean norm at blocks.3", "ablated at blocks.3", "set to 2 at blocks.3". */
function steeredLabel(s: SteerSettings): string {
  const at = `at blocks.${s.layer}${s.positions.trim() === 'generated' ? ', generated tokens' : ''}`;
  switch (s.op ?? 'add') {
    case 'add':
      return `×${s.strength}${s.relative ? ' mean norm' : ''} ${at}`;
    case 'ablate':
      return `ablated ${at}`;
    case 'set':
      return `set to ${s.value} ${at}`;
    case 'cap':
      return `capped at ${s.value} ${at}`;
  }
}
