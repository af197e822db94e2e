/**
 * Features tab: a residual-stream SAE (SAELens, at blocks.L.hook_resid_*) read at every token of the analysis — the
 * strongest features at the chosen position, the strongest over the whole prompt as a feature × token heatmap, and a
 * feature's card (activation on the prompt, the tokens its decoder pushes, contexts) with Steer.
 */
import type { Analysis, FeatureCard, SaeFeatureReading } from '../../src/protocol';
import { featureCardBody } from '../featureCard';
import { failureText, type Pending } from '../host';
import { button, dropdown, el, heat, scroller, showToken, spinner } from '../ui';
import { section, tokensView } from './overview';
import { getState, host, update } from './store';

/** The reading shown (null: no SAE chosen), what is on its way, the last failure, and the open card. */
let reading: SaeFeatureReading | null | undefined;
let pending: { layer?: number; run: Pending<SaeFeatureReading | null> } | undefined;
let failed: string | undefined;
let card: { layer: number; index: number; result?: FeatureCard; error?: string } | undefined;

/** A new analysis: the reading and card belonged to the previous text. */
export function resetFeatures(): void {
  pending?.run.cancel();
  pending = undefined;
  reading = undefined;
  failed = undefined;
  card = undefined;
}

function read(layer?: number): void {
  const run = host.request('sae/read', { layer });
  pending = { layer, run };
  failed = undefined;
  run.result.then(
    (r) => {
      if (pending?.run !== run) return;
      pending = undefined;
      reading = r;
      if (r) update({ features: { layer: r.sae.layer } });
      else update({});
    },
    (e) => {
      if (pending?.run !== run) return;
      pending = undefined;
      failed = failureText(e, 'Reading the SAE');
      update({});
    },
  );
}

function openCard(layer: number, index: number): void {
  card = { layer, index };
  update({});
  host.request('sae/card', { layer, index }).result.then(
    (result) => {
      if (card?.layer !== layer || card.index !== index) return;
      card = { layer, index, result };
      update({});
    },
    (e) => {
      if (card?.layer !== layer || card.index !== index) return;
      card = { layer, index, error: failureText(e) };
      update({});
    },
  );
}

function chooseFolder(): void {
  host.request('sae/choose', {}).result.then(
    (r) => {
      if (!r.dir) return;
      card = undefined;
      reading = undefined;
      read(undefined);
      update({});
    },
    (e) => {
      failed = failureText(e);
      update({});
    },
  );
}

export function featuresView(a: Analysis, pos: number): HTMLElement {
  const root = el('div', 'features');
  const wanted = getState().features?.layer;
  if (reading === undefined && !pending && failed === undefined) read(wanted);

  root.append(section('Residual-stream SAE', saeRow()));
  const status = el('div');
  status.id = 'sae-status';
  root.append(status);
  if (pending) {
    const run = pending.run;
    status.className = 'notice info';
    status.append(spinner(), el('span', 'notice-text', 'Reading the SAE’s features on this text…'), button('Cancel', () => run.cancel()));
  } else if (failed !== undefined) {
    status.className = 'notice error';
    status.textContent = failed;
  }
  const r = reading;
  if (!r) return root;

  const fit = el('p', 'hint');
  fit.id = 'sae-fvu';
  fit.dataset.fvu = String(r.fvu);
  const meanL0 = r.l0.reduce((s, x) => s + x, 0) / Math.max(1, r.l0.length);
  fit.textContent = `Reconstruction on this prompt: FVU ${r.fvu.toPrecision(3)}${r.reportedFvu !== undefined ? ` (its own evaluation: ${r.reportedFvu.toPrecision(2)})` : ''}${r.skipped ? ', the leading BOS left out' : ''} · mean L0 ${meanL0.toFixed(1)} features per token.`;
  root.append(fit);
  if (r.warning) {
    const w = el('div', 'notice warning', r.warning);
    w.id = 'sae-warning';
    root.append(w);
  }
  root.append(section('Position', tokensView(a, pos), 'Click a token to list the features active there.'));
  root.append(section(`Features at position ${pos} ${JSON.stringify(a.tokens[pos]?.text ?? '')}`, topList(r, pos), `${r.l0[pos] ?? 0} active; the ${Math.min(r.top[pos]?.length ?? 0, 8)} strongest. Click one for its card.`));
  root.append(section('Strongest features on this prompt', strongestTable(a, r, pos), 'Each feature’s activation at every token (colour: its own maximum). Click a row for its card.'));
  if (card && card.layer === r.sae.layer) root.append(cardView(r));
  return root;
}

function saeRow(): HTMLElement {
  const row = el('div', 'row');
  const info = el('span');
  info.id = 'sae-info';
  const s = reading?.sae;
  if (s) {
    info.dataset.hook = s.hook;
    const extras = [s.applyBDecToInput ? 'b_dec subtracted from the input' : '', s.normalize !== 'none' ? `input normalised (${s.normalize})` : ''].filter(Boolean);
    info.append(el('strong', undefined, s.scan), el('span', 'muted', ` · ${s.hook} · ${s.dSae.toLocaleString('en-US')} features · ${s.activation}${extras.length ? ` · ${extras.join(', ')}` : ''}`));
    info.title = s.dir;
  } else if (reading === null) {
    info.append(el('span', 'muted', 'No SAE chosen. Pick a SAELens residual-stream SAE folder (cfg.json + sae_weights.safetensors reading blocks.L.hook_resid_pre, _mid or _post; or one subfolder per layer), or set residual.saePath.'));
  }
  row.append(info);
  const chooseButton = button(s ? 'Another SAE…' : 'Choose SAE folder…', chooseFolder, s ? 'secondary' : 'primary');
  chooseButton.id = 'sae-choose';
  row.append(chooseButton);
  if (s && s.layers.length > 1) {
    row.append(
      dropdown(
        s.layers.map((l) => ({ value: String(l), label: `layer ${l}` })),
        String(s.layer),
        (v) => {
          card = undefined;
          read(Number(v));
          update({ features: { layer: Number(v) } });
        },
        'sae-layer',
      ),
    );
  }
  return row;
}

function topList(r: SaeFeatureReading, pos: number): HTMLElement {
  const list = el('ol');
  list.id = 'sae-top';
  const top = r.top[pos] ?? [];
  const max = Math.max(1e-9, ...top.map(([, v]) => v));
  if (!top.length) list.append(el('li', 'muted', 'no feature is active here'));
  for (const [index, act] of top) {
    const li = el('li', 'clickable');
    li.dataset.feature = String(index);
    const bar = el('span', 'bar');
    bar.style.width = `${Math.max(1, (act / max) * 100).toFixed(1)}%`;
    li.append(el('code', 'tok', `#${index}`), el('span', 'barbox'), el('span', 'num', act.toPrecision(3)));
    li.children[1].append(bar);
    li.title = `feature ${index}: ${act}`;
    li.addEventListener('click', () => openCard(r.sae.layer, index));
    list.append(li);
  }
  return list;
}

function strongestTable(a: Analysis, r: SaeFeatureReading, pos: number): HTMLElement {
  const table = el('table', 'grid');
  table.id = 'sae-strongest';
  const hr = el('tr');
  hr.append(el('th', undefined, 'feature'));
  a.tokens.forEach((t, i) => {
    const th = el('th', `col${i === pos ? ' selected' : ''}`, showToken(t.text));
    th.title = `position ${i}`;
    hr.append(th);
  });
  table.append(hr);
  for (const f of r.strongest) {
    const tr = el('tr', 'clickable');
    tr.dataset.feature = String(f.index);
    tr.append(el('th', 'rowlabel', `#${f.index}`));
    f.acts.forEach((v, i) => {
      const td = el('td', 'cell', v ? v.toFixed(1) : '');
      td.dataset.value = String(v);
      if (v > 0) heat(td, v / f.max);
      td.title = `feature ${f.index} at position ${i} ${JSON.stringify(a.tokens[i]?.text ?? '')}: ${v}`;
      tr.append(td);
    });
    tr.addEventListener('click', () => openCard(r.sae.layer, f.index));
    table.append(tr);
  }
  return scroller(table);
}

function cardView(r: SaeFeatureReading): HTMLElement {
  const c = card!;
  const s = el('section', 'card');
  s.id = 'sae-card';
  s.dataset.feature = String(c.index);
  const output = c.result?.output;
  s.append(el('h2', undefined, `Feature ${c.index} · ${r.sae.hook}${output !== undefined ? ` → ${showToken(output)}` : ''}`));
  if (c.error) {
    s.append(el('div', 'notice error', c.error));
    return s;
  }
  if (!c.result) {
    s.append(spinner());
    return s;
  }
  s.append(...featureCardBody(c.result));
  const row = el('div', 'row');
  const steer = button('Steer with this feature…', () => {
    host.request('sae/steer', { layer: c.layer, index: c.index }).result.catch((e) => {
      if (card === c) card = { ...c, error: failureText(e) };
      update({});
    });
  });
  steer.id = 'sae-steer';
  row.append(steer, el('span', 'muted', `adds its decoder row at ${r.sae.hook} in the Steering panel`));
  s.append(row);
  return s;
}
