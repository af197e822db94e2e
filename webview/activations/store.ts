/** The Activations panel's state (persisted with setState so a restored panel shows its last analysis) and host bridge. */
import type { ActivationsState, FromActivations } from '../../src/protocol';
import { hostBridge } from '../ui';

export const host = hostBridge<FromActivations, ActivationsState>();
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
