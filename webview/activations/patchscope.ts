/**
 * Patchscopes in the Overview, under the logit lens: the hidden state of a lens cell (a read-out at a position) put in
 * place of the "?" of a target prompt and decoded, as the Patchscopes paper does with its identity prompt. The lens
 * says which token a state is closest to at the unembedding; a Patchscope lets the model itself say what it encodes.
 */
import type { Analysis } from '../../src/protocol';
import { failureText, RequestError } from '../host';
import { button, dropdown, el, showToken, spinner, textField } from '../ui';
import { getState, host, update } from './store';

const IDENTITY_PROMPT = 'cat → cat; 1135 → 1135; hello → hello; ? →';
let running: { cancel(): void } | undefined;
let error = '';

/** The lens cell chosen for a Patchscope (a click on a lens cell sets it; default: the last read-out, the chosen position). */
export function patchscopeCell(a: Analysis, pos: number): { readout: number; position: number } {
  const ps = getState().patchscope;
  return ps && ps.readout < a.readouts.length && ps.position < a.tokens.length ? { readout: ps.readout, position: ps.position } : { readout: a.readouts.length - 1, position: pos };
}

/** A new analysis: a reading in flight is for the old one, and so is an error shown. */
export function resetPatchscope(): void {
  running?.cancel();
  running = undefined;
  error = '';
}

export function chooseLensCell(readout: number, position: number): void {
  const ps = getState().patchscope;
  error = '';
  update({ position, patchscope: { readout, position, targetPrompt: ps?.targetPrompt ?? IDENTITY_PROMPT, targetLayer: ps?.targetLayer } });
}

export function patchscopeView(a: Analysis, pos: number): HTMLElement {
  const wrap = el('div', 'patchscope');
  wrap.id = 'patchscope';
  const cell = patchscopeCell(a, pos);
  const ps = getState().patchscope;
  const readout = a.readouts[cell.readout];
  wrap.append(
    el(
      'p',
      'hint',
      `Reads ${readout.hook} at position ${cell.position} (after ${JSON.stringify(a.tokens[cell.position].text)}) by writing it in place of the "?" of the target prompt, at the target layer, and letting the model continue (greedy). Click a lens cell to choose another.`,
    ),
  );
  const prompt = textField(ps?.targetPrompt ?? IDENTITY_PROMPT, 'a prompt with a "?" placeholder', 'patchscope-prompt');
  // Where the state is written in the target: its own layer (default) or another; kept with the cell's state.
  let targetLayer = ps?.targetLayer;
  const target = dropdown(
    [{ value: '', label: 'same layer' }, ...Array.from({ length: a.model.n_layers }, (_, l) => ({ value: String(l), label: `into layer ${l}` }))],
    targetLayer === undefined ? '' : String(targetLayer),
    (x) => {
      targetLayer = x === '' ? undefined : Number(x);
      // Kept with the cell's state, so a redraw or another lens cell keeps the choice.
      update({ patchscope: { ...cell, targetPrompt: prompt.value, targetLayer, result: ps?.result } }, false);
    },
    'patchscope-layer',
  );
  const run = () => {
    running?.cancel();
    error = '';
    const targetPrompt = prompt.value;
    const shown = getState().analysis;
    update({ patchscope: { ...cell, targetPrompt, targetLayer } });
    const req = host.request('patchscope/run', { readout: cell.readout, position: cell.position, targetPrompt, ...(targetLayer !== undefined ? { targetLayer } : {}) });
    running = req;
    req.result.then(
      (result) => {
        if (running !== req) return; // superseded by a newer reading
        running = undefined;
        // For the analysis it was asked about only; either way the spinner goes.
        update(getState().analysis === shown ? { patchscope: { ...cell, targetPrompt, targetLayer, result } } : {});
      },
      (e) => {
        if (running !== req) return;
        running = undefined;
        // Cancelled here only by its Cancel button (a new reading or analysis replaces `running` first).
        if (getState().analysis !== shown) return;
        if (!(e instanceof RequestError && e.cancelled)) error = failureText(e);
        update({});
      },
    );
    update({});
  };
  prompt.addEventListener('keydown', (e) => (e as KeyboardEvent).key === 'Enter' && run());
  // Kept as typed across re-renders (without one: the field is being typed in).
  prompt.addEventListener('input', () => update({ patchscope: { ...cell, targetPrompt: prompt.value, targetLayer, result: ps?.result } }, false));
  const row = el('div', 'row');
  row.append(prompt, target, button('Read with Patchscope', run, 'primary'));
  wrap.append(row);
  if (running) wrap.append(spinner(), button('Cancel', () => running?.cancel()));
  if (error) {
    const e = el('p', 'notice error', error);
    e.id = 'patchscope-error';
    wrap.append(e);
  }
  const r = ps?.result;
  if (r && r.position === cell.position && a.readouts[cell.readout].hook === `blocks.${r.layer}.${r.point}`) {
    const out = el('div', 'patchscope-result');
    out.id = 'patchscope-result';
    out.append(el('span', 'muted', `→ layer ${r.targetLayer}, "?" at token ${r.placeholder}: `));
    // The continuation decoded as a whole (a character split over byte tokens reads right only together).
    const chip = el('code', 'tok', showToken(r.text));
    chip.title = `${r.tokens.length} tokens: ${r.tokens.map((t) => JSON.stringify(t)).join(' ')}`;
    out.append(chip);
    wrap.append(out);
  }
  return wrap;
}
