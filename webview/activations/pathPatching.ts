/**
 * Path patching, in the Patching tab under activation patching: with the same clean/corrupted prompts and answers, how
 * much of the corruption's effect flows from each earlier head and MLP directly into one receiver — a later head's
 * query, key or value input, or the logits. A layer × head heatmap (plus an MLP column) of the share of the effect.
 */
import type { Analysis, PathPatchingResult, PathReceiver } from '../../src/protocol';
import { button, dropdown, el, fractionCell, scroller } from '../ui';
import { PanelJob } from './job';
import { section } from './overview';
import { host, update } from './store';

let receiverLayer = 'logits';
let receiverHead = '0';
let receiverInput: 'q' | 'k' | 'v' = 'q';
const job = new PanelJob<PathPatchingResult>('Path patching', 'path-progress', 'senders');

/** A new analysis: the last run belonged to the previous clean prompt. */
export function resetPathPatching(): void {
  job.reset();
}

function receiverOf(): PathReceiver {
  return receiverLayer === 'logits' ? { kind: 'logits' } : { kind: 'head', layer: Number(receiverLayer), head: Number(receiverHead), input: receiverInput };
}

/** `pair`: the Patching tab's corrupted prompt and answers, as typed above. */
export function pathPatchingView(a: Analysis, pair: () => { corrupted: string; cleanAnswer?: string; corruptedAnswer?: string }): HTMLElement {
  const form = el('div', 'form');
  const L = a.model.n_layers;
  const H = a.model.n_heads;
  const row = el('div', 'row');
  row.append(
    el('span', undefined, 'Receiver'),
    dropdown(
      [{ value: 'logits', label: 'the logits' }, ...Array.from({ length: L - 1 }, (_, i) => ({ value: String(i + 1), label: `a head of block ${i + 1}` }))],
      receiverLayer,
      (v) => {
        receiverLayer = v;
        update({});
      },
      'path-receiver',
    ),
  );
  if (receiverLayer !== 'logits') {
    row.append(
      dropdown(Array.from({ length: H }, (_, h) => ({ value: String(h), label: `head ${h}` })), receiverHead, (v) => (receiverHead = v), 'path-head'),
      dropdown(
        [
          { value: 'q', label: 'query input' },
          { value: 'k', label: 'key input' },
          { value: 'v', label: 'value input' },
        ],
        receiverInput,
        (v) => (receiverInput = v as 'q' | 'k' | 'v'),
        'path-input',
      ),
    );
  }
  if (job.running) row.append(...job.runningControls());
  else {
    row.append(
      button('Run path patching', () => {
        const params = { ...pair(), receiver: receiverOf() };
        job.start((onProgress) => host.request('pathpatching/run', params, onProgress), () => update({ tab: 'patching' }));
        update({});
      }),
    );
  }
  form.append(row);
  const root = el('div');
  root.append(
    section(
      'Path patching',
      form,
      'The corrupted prompt and answers above. For each earlier head and MLP: its output from the corrupted prompt, every other head and MLP frozen at its clean output, reaching only the receiver — the share of the whole corruption effect on the logit difference that flows along that direct path.',
    ),
  );
  if (job.error) {
    const e = el('div', 'notice error', job.error);
    e.id = 'path-error';
    root.append(e);
  }
  if (job.result) root.append(resultView(job.result));
  return root;
}

function resultView(r: PathPatchingResult): HTMLElement {
  const wrap = el('div');
  wrap.id = 'path-result';
  wrap.dataset.receiver = r.receiverName;
  wrap.append(
    el(
      'p',
      'hint',
      `Paths into ${r.receiverName}. Logit difference ${JSON.stringify(r.answers.clean.text)} − ${JSON.stringify(r.answers.corrupted.text)}: clean ${r.ldClean.toFixed(3)}, corrupted ${r.ldCorrupted.toFixed(3)}. ${r.senders.length} senders in ${r.ms.toFixed(0)} ms.` +
        (r.patternCheck !== undefined ? ` The receiver's attention, recomputed, matches the model's within ${r.patternCheck.toExponential(1)}.` : ''),
    ),
  );
  for (const n of r.notes) wrap.append(el('p', 'notice warning', n));
  const table = el('table', 'grid heat');
  table.id = 'path-grid';
  const hr = el('tr');
  hr.append(el('th'));
  for (let h = 0; h < r.nHeads; h++) hr.append(el('th', 'col', `head ${h}`));
  hr.append(el('th', 'col', 'MLP'));
  table.append(hr);
  const layers = [...new Set(r.senders.map((s) => s.layer))].sort((x, y) => x - y);
  for (const l of layers) {
    const tr = el('tr');
    tr.dataset.layer = String(l);
    tr.append(el('th', 'rowlabel', `blocks.${l}`));
    for (let h = 0; h <= r.nHeads; h++) {
      const s = r.senders.find((x) => x.layer === l && (h === r.nHeads ? x.head === undefined : x.head === h));
      const td = s ? fractionCell(s.fraction) : el('td', 'cell');
      if (s) {
        td.dataset.sender = s.name;
        td.title = `${s.name} → ${r.receiverName}: logit difference ${s.ld.toFixed(4)} (${s.delta >= 0 ? '+' : ''}${s.delta.toFixed(4)} from clean), ${(s.fraction * 100).toFixed(1)}% of the corruption effect`;
      }
      tr.append(td);
    }
    table.append(tr);
  }
  wrap.append(scroller(table), el('p', 'hint', 'Red: this path carries the corruption (the share of corrupted − clean it moves); blue: it pushes the other way. Hover a cell for the logit difference.'));
  return wrap;
}
