/**
 * Logit attribution tab: direct logit attribution at the chosen position — what each embedding, attention head,
 * attention bias and MLP writes straight into the logit of a target token (or the difference target − contrast),
 * through the final norm with its scale frozen. Those parts sum to the logit; the largest neurons, which are parts of
 * their MLP, are listed apart and not added.
 */
import { formatDeviation, type Analysis, type DlaComponent, type DlaResult, type DlaTabState } from '../../src/protocol';
import { colours, drawChart } from '../charts';
import { failureText, type Pending } from '../host';
import { button, divergingHeat, el, scroller, showToken, spinner, textField } from '../ui';
import { section, tokensView } from './overview';
import { getState, host, update } from './store';

/** How many of the parts that sum to the logit the bar list shows. */
const TOP_PARTS = 12;

/** What an attribution is asked for: the position and the tokens as typed. */
interface Ask {
  position: number;
  target: string;
  contrast: string;
}
const sameAsk = (a: Ask, b: Ask) => a.position === b.position && a.target === b.target && a.contrast === b.contrast;

/** The request on its way, and the last failure (not persisted: asking again is the way back). */
let pending: { ask: Ask; run: Pending<DlaResult> } | undefined;
let failed: { ask: Ask; message: string } | undefined;

/** A new analysis: what was asked or failed belonged to the previous text. */
export function resetDla(): void {
  pending?.run.cancel();
  pending = undefined;
  failed = undefined;
}

function tabState(): DlaTabState {
  return getState().dla ?? { target: '', contrast: '' };
}

function attribute(ask: Ask): void {
  // The host cancels the previous attribution itself (its scope); a late reply of it is dropped below.
  const run = host.request('dla/compute', { position: ask.position, target: ask.target || undefined, contrast: ask.contrast || undefined });
  pending = { ask, run };
  failed = undefined;
  run.result.then(
    (result) => {
      if (pending?.run !== run) return; // superseded, or its analysis was replaced
      pending = undefined;
      update({ dla: { ...tabState(), shown: { ...ask, result } } });
    },
    (e) => {
      if (pending?.run !== run) return;
      pending = undefined;
      failed = { ask, message: failureText(e, 'Logit attribution') };
      update({});
    },
  );
}

export function dlaView(a: Analysis, pos: number): HTMLElement {
  const root = el('div', 'dla');
  const d = tabState();
  const ask: Ask = { position: pos, target: d.target, contrast: d.contrast };
  const current = d.shown && sameAsk(d.shown, ask) ? d.shown.result : undefined;
  const busy = pending !== undefined && sameAsk(pending.ask, ask);
  const error = failed && sameAsk(failed.ask, ask) ? failed.message : undefined;
  // The attribution follows the chosen position and tokens: asked for when the tab shows something else.
  if (!current && !busy && !error) attribute(ask);

  root.append(section('Position', tokensView(a, pos), 'Click a token to attribute the prediction made there (the next token after it); double-click to select it in the editor.'));
  root.append(section('Logit attribution', form(d)));
  const status = el('div');
  status.id = 'dla-status';
  root.append(status);
  if (pending && sameAsk(pending.ask, ask)) {
    const run = pending.run;
    status.className = 'notice info';
    status.append(spinner(), el('span', 'notice-text', `Attributing the prediction at position ${pos}…`), button('Cancel', () => run.cancel()));
  } else if (error) {
    status.className = 'notice error';
    status.id = 'dla-error';
    status.textContent = error;
    return root;
  }
  const result = current ?? d.shown?.result;
  if (!result) return root;
  const body = el('div');
  body.id = 'dla-result';
  body.dataset.position = String(result.position);
  body.dataset.current = String(!!current);
  // An attribution asked for something else (another position or tokens) stays visible, greyed, until the new one lands.
  if (!current) body.style.opacity = '0.55';
  body.append(summaryView(a, result, !(current ? d.target : d.shown?.target)), headsView(a, result), topView(result), layersView(a, result), neuronsView(result));
  root.append(body);
  return root;
}

function form(d: DlaTabState): HTMLElement {
  const wrap = el('div');
  wrap.append(
    el(
      'p',
      'hint',
      'What each part of the model writes directly into one logit at the chosen position (the final norm’s scale frozen at this prompt). Target: one token, with its leading space where it has one (\\n for a newline); empty = the top prediction. With a contrast token, the difference target − contrast is attributed.',
    ),
  );
  const target = textField(d.target, 'top prediction', 'dla-target');
  const contrast = textField(d.contrast, 'none', 'dla-contrast');
  // Kept as typed (without redrawing, which would ask at every key); Enter or Attribute asks.
  const typed = () => update({ dla: { ...tabState(), target: target.value, contrast: contrast.value } }, false);
  const go = () => {
    typed();
    failed = undefined; // asked again on purpose: try again even what failed
    update({});
  };
  for (const f of [target, contrast]) {
    f.addEventListener('input', typed);
    f.addEventListener('keydown', (e) => (e as KeyboardEvent).key === 'Enter' && go());
  }
  const row = el('div', 'row');
  row.append(labelled('Target', target), labelled('Contrast', contrast), button('Attribute', go, 'primary'));
  if (d.target || d.contrast) {
    row.append(
      button('Top prediction, no contrast', () => {
        failed = undefined;
        update({ dla: { ...tabState(), target: '', contrast: '' } });
      }),
    );
  }
  wrap.append(row);
  return wrap;
}

function labelled(label: string, control: HTMLElement): HTMLElement {
  const f = el('label', 'field');
  const name = el('span', 'field-label', label);
  name.style.minWidth = '4.5em'; // the two fields line up when they wrap onto lines of their own
  f.append(name, control);
  return f;
}

const isNeuron = (c: DlaComponent) => c.name.includes('.neuron.');

/** A value as shown (four decimals, signed), the exact one in `data-value` and on hover. */
function signed(v: number, digits = 4): string {
  return `${v > 0 ? '+' : ''}${v.toFixed(digits)}`;
}

function summaryView(a: Analysis, r: DlaResult, topPrediction: boolean): HTMLElement {
  const box = el('div');
  box.id = 'dla-summary';
  const what = el('p');
  const tok = (t: { id: number; text: string }, id: string) => {
    const c = el('code', 'tok', showToken(t.text));
    c.id = id;
    c.dataset.tokenId = String(t.id);
    c.title = `token id ${t.id}: ${JSON.stringify(t.text)}`;
    return c;
  };
  const after = a.tokens[r.position]?.text ?? '';
  what.append(r.contrast ? 'Logit difference of ' : 'Logit of ', tok(r.target, 'dla-target-token'));
  if (r.contrast) what.append(' − ', tok(r.contrast, 'dla-contrast-token'));
  what.append(` at position ${r.position} (the prediction after ${JSON.stringify(after)})${topPrediction ? ', the target being the top prediction there' : ''}:`);
  const logit = el('div', 'model-name', `${r.contrast ? 'logit difference' : 'logit'} ${signed(r.logit)}`);
  logit.id = 'dla-logit';
  logit.dataset.value = String(r.logit);
  logit.title = String(r.logit);
  const summed = r.components.filter((c) => !isNeuron(c)).length;
  const residual = el('p', 'hint', `${summed} parts sum to it within ${formatDeviation(Math.abs(r.residual))} (residual: the logit − the sum of the parts, float32 rounding).`);
  residual.id = 'dla-residual';
  residual.dataset.value = String(r.residual);
  box.append(what, logit, residual);
  if (r.softcap) box.append(el('p', 'notice info', `This model soft-caps its logits at ${r.softcap}: the attribution is of the logit before the cap.`));
  return section('Attributed', box);
}

function headsView(a: Analysis, r: DlaResult): HTMLElement {
  const L = a.model.n_layers;
  const H = a.model.n_heads;
  const value = new Map(r.components.map((c) => [c.name, c.value]));
  const heads = Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => value.get(`blocks.${l}.attn.head.${h}`) ?? NaN));
  const maxAbs = Math.max(1e-12, ...heads.flat().filter(Number.isFinite).map(Math.abs));
  const table = el('table', 'grid heads');
  table.id = 'dla-heads';
  const hr = el('tr');
  hr.append(el('th'));
  for (let h = 0; h < H; h++) hr.append(el('th', 'col', `H${h}`));
  table.append(hr);
  heads.forEach((row, l) => {
    const tr = el('tr');
    tr.dataset.layer = String(l);
    tr.append(el('th', 'rowlabel', `L${l}`));
    row.forEach((v, h) => {
      const td = el('td', 'cell', Number.isFinite(v) ? v.toFixed(2) : '—');
      td.dataset.value = String(v);
      if (Number.isFinite(v)) divergingHeat(td, v / maxAbs);
      td.title = `blocks.${l}.attn.head.${h}: ${signed(v, 5)}${share(v, r.logit)}\nclick: its pattern in the Attention tab`;
      td.addEventListener('click', () => update({ tab: 'attention', attention: { ...(getState().attention ?? { metric: 'prevToken' }), layer: l, head: h } }));
      tr.append(td);
    });
    table.append(tr);
  });
  const wrap = el('div');
  wrap.append(scroller(table), divergingBar(maxAbs), el('p', 'hint', 'Each head’s output (its z times its slice of W_O) along the logit direction. Red raises the logit, blue lowers it; one colour range, ±the largest |value|. Hover a cell for its value; click it to see that head’s pattern.'));
  return section('Attention heads (layer × head)', wrap);
}

/** The share of the logit, for hovers (left out when the logit is about 0 and a share would mislead). */
function share(v: number, logit: number): string {
  return Math.abs(logit) > 1e-6 ? ` (${((v / logit) * 100).toFixed(1)}% of the logit)` : '';
}

/** The diverging colour range: −max (blue) through 0 to +max (red). */
function divergingBar(maxAbs: number): HTMLElement {
  const bar = el('div', 'colour-bar');
  bar.id = 'dla-colour-bar';
  const ramp = el('div', 'ramp');
  for (let i = -5; i <= 5; i++) {
    const step = el('span');
    divergingHeat(step, i / 5);
    ramp.append(step);
  }
  bar.append(el('span', 'muted', (-maxAbs).toPrecision(3)), ramp, el('span', 'muted', `+${maxAbs.toPrecision(3)}`));
  return bar;
}

function topView(r: DlaResult): HTMLElement {
  const top = r.components
    .filter((c) => !isNeuron(c))
    .sort((x, y) => Math.abs(y.value) - Math.abs(x.value))
    .slice(0, TOP_PARTS);
  return section(`Largest parts (top ${top.length} by |value|)`, barList(top, r.logit, 'dla-top'));
}

/** Name, a bar from zero (right and red: raises the logit; left and blue: lowers it), and the signed value. */
function barList(items: DlaComponent[], logit: number, id: string): HTMLElement {
  const maxAbs = Math.max(1e-12, ...items.map((c) => Math.abs(c.value)));
  const { red, blue } = colours();
  const table = el('table', 'grid plain');
  table.id = id;
  for (const c of items) {
    const tr = el('tr');
    tr.dataset.name = c.name;
    tr.dataset.value = String(c.value);
    tr.title = `${c.name}: ${signed(c.value, 6)}${share(c.value, logit)}`;
    const track = el('div', 'barbox');
    track.style.width = '240px';
    track.style.position = 'relative';
    const fill = el('span', 'bar');
    const w = (Math.abs(c.value) / maxAbs) * 50;
    fill.style.position = 'absolute';
    fill.style.top = '0';
    fill.style.left = `${c.value >= 0 ? 50 : 50 - w}%`;
    fill.style.width = `${Math.max(w, 0.5)}%`;
    fill.style.background = c.value >= 0 ? red : blue;
    const zero = el('span');
    zero.style.position = 'absolute';
    zero.style.left = '50%';
    zero.style.top = '-2px';
    zero.style.bottom = '-2px';
    zero.style.borderLeft = '1px solid var(--vscode-descriptionForeground)';
    track.append(fill, zero);
    const bar = el('td');
    bar.append(track);
    tr.append(el('td', 'mono', c.name), bar, el('td', 'num', signed(c.value)));
    table.append(tr);
  }
  return scroller(table);
}

function layersView(a: Analysis, r: DlaResult): HTMLElement {
  const L = a.model.n_layers;
  const value = new Map(r.components.map((c) => [c.name, c.value]));
  const attn = Array.from({ length: L }, (_, l) => r.components.filter((c) => c.name.startsWith(`blocks.${l}.attn.`)).reduce((s, c) => s + c.value, 0));
  const mlp = Array.from({ length: L }, (_, l) => value.get(`blocks.${l}.mlp`) ?? 0);
  const wrap = el('div');
  const table = el('table', 'grid plain');
  table.id = 'dla-layers';
  const hr = el('tr');
  for (const h of ['', 'attention (heads + bias)', 'MLP', 'block']) hr.append(el('th', undefined, h));
  table.append(hr);
  const maxAbs = Math.max(1e-12, ...attn.map(Math.abs), ...mlp.map(Math.abs));
  const cell = (v: number | undefined, what: string) => {
    const td = el('td', 'num', v === undefined ? '' : signed(v, 3));
    if (v === undefined) return td;
    td.dataset.value = String(v);
    td.title = `${what}: ${signed(v, 6)}${share(v, r.logit)}`;
    divergingHeat(td, Math.max(-1, Math.min(1, v / maxAbs)));
    return td;
  };
  // Outside the blocks: the embeddings before, the final norm's bias after, so the rows add up to the logit.
  const outside = (name: string) => {
    const v = value.get(name);
    if (v === undefined) return;
    const tr = el('tr');
    tr.dataset.name = name;
    tr.append(el('th', 'rowlabel', name), el('td'), el('td'), cell(v, name));
    table.append(tr);
  };
  outside('embed');
  outside('pos_embed');
  for (let l = 0; l < L; l++) {
    const tr = el('tr');
    tr.dataset.layer = String(l);
    tr.append(el('th', 'rowlabel', `blocks.${l}`), cell(attn[l], `blocks.${l}.attn`), cell(mlp[l], `blocks.${l}.mlp`), cell(attn[l] + mlp[l], `blocks.${l}`));
    table.append(tr);
  }
  outside('final_norm.bias');
  const sum = r.components.filter((c) => !isNeuron(c)).reduce((t, c) => t + c.value, 0);
  const total = el('tr');
  total.append(el('th', 'rowlabel', 'sum (the logit)'), el('td'), el('td'), el('td', 'num', signed(sum, 3)));
  table.append(total);
  const box = el('div', 'chartbox small');
  const canvas = el('canvas');
  canvas.id = 'dla-layers-chart';
  box.append(canvas);
  wrap.append(box, scroller(table));
  const { fg, grid, purple, green } = colours();
  requestAnimationFrame(() =>
    drawChart(canvas, {
      type: 'bar',
      data: {
        labels: attn.map((_, l) => `blocks.${l}`),
        datasets: [
          { label: 'attention (heads + bias)', data: attn, backgroundColor: purple },
          { label: 'MLP', data: mlp, backgroundColor: green },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { labels: { color: fg } } },
        scales: { x: { ticks: { color: fg }, grid: { color: grid } }, y: { ticks: { color: fg }, grid: { color: grid }, title: { display: true, text: 'into the logit', color: fg } } },
      },
    }),
  );
  return section('By block', wrap);
}

function neuronsView(r: DlaResult): HTMLElement {
  const neurons = r.components.filter(isNeuron);
  const wrap = el('div');
  wrap.append(el('p', 'hint', 'Post-activation times the neuron’s row of W_out, along the same direction. Each is already inside its block’s MLP above (with the MLP’s bias they make it), so these are not added to the sum.'));
  if (neurons.length) wrap.append(barList(neurons, r.logit, 'dla-neurons'));
  else wrap.append(el('p', 'muted', 'No neurons listed.'));
  return section('Largest neurons — not added to the sum', wrap);
}
