/**
 * A long request of the Activations panel (a patching run): running with a progress line and a Cancel button, then
 * its result or its error. Only the latest start may finish it; a reset (a new analysis) drops a run in flight.
 */
import type { ProgressMessage } from '../../src/protocol';
import { failureText, type Pending } from '../host';
import { button, el, spinner } from '../ui';

export class PanelJob<T> {
  running = false;
  progress = '';
  result: T | undefined;
  error = '';
  private pending: Pending<T> | undefined;

  /** `what` names the job in error messages; `progressId` is the id of its progress line; `unit` counts its steps. */
  constructor(
    private readonly what: string,
    private readonly progressId: string,
    private readonly unit: string,
  ) {}

  reset(): void {
    this.pending?.cancel();
    this.pending = undefined;
    this.running = false;
    this.progress = '';
    this.result = undefined;
    this.error = '';
  }

  /** Starts `request` (given the progress handler); `redraw` runs when it finishes. */
  start(request: (onProgress: (m: ProgressMessage) => void) => Pending<T>, redraw: () => void): void {
    this.running = true;
    this.progress = 'starting…';
    this.error = '';
    const run = request((m) => {
      this.progress = `${m.done} / ${m.total} ${this.unit}`;
      const p = document.getElementById(this.progressId);
      if (p) p.textContent = this.progress;
    });
    this.pending = run;
    const finish = (outcome: { result: T } | { error: unknown }) => {
      if (this.pending !== run) return; // superseded, or its analysis was replaced
      this.running = false;
      this.pending = undefined;
      if ('result' in outcome) {
        this.result = outcome.result;
        this.error = '';
      } else this.error = failureText(outcome.error, this.what);
      redraw();
    };
    run.result.then(
      (result) => finish({ result }),
      (error) => finish({ error }),
    );
  }

  /** The spinner, the progress line and Cancel, while running. */
  runningControls(): HTMLElement[] {
    const p = el('span', 'muted', this.progress);
    p.id = this.progressId;
    return [spinner(), p, button('Cancel', () => this.pending?.cancel())];
  }
}
