/** The Activations panel's state (persisted with setState so a restored panel shows its last analysis) and host client. */
import { ACTIVATIONS_STATE_VERSION, type ActivationsEvent, type ActivationsNotification, type ActivationsRequests, type ActivationsState } from '../../src/protocol';
import { hostClient } from '../host';
import { button, el, spinner } from '../ui';

export const host = hostClient<ActivationsRequests, ActivationsEvent, ActivationsNotification, ActivationsState>(ACTIVATIONS_STATE_VERSION);
let state: ActivationsState = host.getState() ?? {};
let rerender: () => void = () => undefined;

export function getState(): ActivationsState {
  return state;
}

/** Merges `patch` into the state, persists it, and re-renders unless told not to. */
export function update(patch: Partial<ActivationsState>, render = true): void {
  state = { ...state, ...patch };
  host.setState(state);
  if (render) rerender();
}

export function onRender(fn: () => void): void {
  rerender = fn;
}

/** The one-line notice at the top of the panel (running, error, info). */
export function notice(kind: 'running' | 'error' | 'info' | 'warning', text: string, busy = false, cancel?: () => void): void {
  const app = document.getElementById('app')!;
  let n = document.getElementById('notice');
  if (!n) {
    n = el('div');
    n.id = 'notice';
    app.prepend(n);
  }
  n.className = `notice ${kind}`;
  n.replaceChildren();
  if (busy) n.append(spinner());
  n.append(el('span', 'notice-text', text));
  if (cancel) n.append(button('Cancel', cancel));
  if (!getState().analysis && kind !== 'running') app.dataset.state = kind === 'error' ? 'error' : 'empty';
}
