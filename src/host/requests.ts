/**
 * The host's half of the request contract (src/protocol/requests.ts), shared by every panel and the Inspector:
 * each request gets exactly one reply, errors go back as messages (and to the log), any request or job can be
 * cancelled by id, and a new request in a cancellation scope (one per kind of job) cancels the one before it.
 * No `vscode` import, so the contract is unit-tested in plain Node (test/unit/requests.test.ts).
 */

import { errorMessage, isCancelled, ResidualError, type CancelToken } from '../engine/errors';
import type { CancelMessage, Method, ParamsOf, ProgressMessage, ReplyMessage, RequestMap, RequestMessage, ResultOf, WebviewMessage } from '../protocol';

/** A cancellation token the engine accepts (CancelToken) that can also notify, like VS Code's. */
export interface JobToken extends CancelToken {
  onCancellationRequested(listener: () => void): { dispose(): void };
}

class Cancellation implements JobToken {
  isCancellationRequested = false;
  private readonly listeners = new Set<() => void>();

  cancel(): void {
    if (this.isCancellationRequested) return;
    this.isCancellationRequested = true;
    for (const l of [...this.listeners]) l();
    this.listeners.clear();
  }

  onCancellationRequested(listener: () => void): { dispose(): void } {
    if (this.isCancellationRequested) {
      queueMicrotask(listener);
      return { dispose: () => undefined };
    }
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  }
}

/** Where the router writes what failed (an OutputChannel in the extension). */
export interface RequestLog {
  appendLine(line: string): void;
}

/** A running request or host-started job. */
export interface Job {
  readonly id: number;
  /** Passed to the engine, which checks it between steps. */
  readonly token: JobToken;
  /** False once cancelled or superseded: a stale job must not touch the panel any more. */
  readonly current: boolean;
  /** Reports progress to the webview (requests only; a host job reports through its own events). */
  progress(done: number, total: number, message?: string): void;
}

/** A job the host started itself: it cancels and finishes it too. */
export interface HostJob extends Job {
  cancel(): void;
  finish(): void;
}

export interface Handler<R extends RequestMap, M extends Method<R>> {
  /** Requests of one scope run one at a time: a new one cancels the running one. None: never cancelled by others. */
  scope?: string;
  run(params: ParamsOf<R, M>, job: Job): Promise<ResultOf<R, M>>;
}

/** One handler per method: a method the protocol adds without a handler fails to compile. */
export type Handlers<R extends RequestMap> = { [M in Method<R>]: Handler<R, M> };

interface Running {
  cts: Cancellation;
  scope?: string;
  /** Asked by a webview that is gone (reloaded or closed): its reply must not reach the next one. */
  orphaned?: boolean;
}

export class RequestRouter<R extends RequestMap> {
  private readonly running = new Map<number, Running>();
  /** Host-started jobs, numbered apart from the webview's request ids. */
  private readonly jobs = new Map<number, Running>();
  private nextJob = 0;

  constructor(
    /** Names the panel in the log. */
    private readonly name: string,
    private readonly handlers: Handlers<R>,
    private readonly post: (m: ReplyMessage | ProgressMessage) => void,
    private readonly log: RequestLog,
  ) {}

  /** Takes a request or cancel message; returns false for anything else (events and notifications). */
  handle<N extends { type: string }>(m: WebviewMessage<R, N>): m is RequestMessage<R> | CancelMessage {
    if (m.type === 'cancel') {
      const c = m as CancelMessage;
      (c.job ? this.jobs : this.running).get(c.id)?.cts.cancel();
      return true;
    }
    if (m.type !== 'request') return false;
    void this.serve(m as RequestMessage<R>);
    return true;
  }

  private async serve(m: RequestMessage<R>): Promise<void> {
    const handler = (this.handlers as Record<string, Handler<R, Method<R>> | undefined>)[m.method];
    if (!handler) {
      this.post({ type: 'reply', id: m.id, ok: false, message: `internal error: unknown request ${m.method}`, cancelled: false });
      return;
    }
    const entry = this.enter(this.running, m.id, handler.scope);
    const job: Job = {
      id: m.id,
      token: entry.cts,
      get current() {
        return !entry.cts.isCancellationRequested;
      },
      progress: (done, total, message) => job.current && !entry.orphaned && this.post({ type: 'progress', id: m.id, done, total, message }),
    };
    try {
      const result = await handler.run(m.params, job);
      // A request that finished its work although cancelled still reports as cancelled: its caller has moved on.
      if (entry.cts.isCancellationRequested) throw new ResidualError('cancelled', undefined, 'cancelled');
      if (!entry.orphaned) this.post({ type: 'reply', id: m.id, ok: true, result });
    } catch (e) {
      const cancelled = isCancelled(e) || entry.cts.isCancellationRequested;
      this.logError(`${this.name} ${m.method}`, e, cancelled);
      if (!entry.orphaned) this.post({ type: 'reply', id: m.id, ok: false, message: cancelled ? 'Cancelled.' : errorMessage(e), cancelled });
    } finally {
      this.leave(this.running, m.id, entry);
    }
  }

  /**
   * Starts a job of `scope` the host runs itself (cancelling the scope's running request or job). Call `finish()`
   * when it is over; the webview cancels it with `{ type: 'cancel', id, job: true }`.
   */
  begin(scope: string): HostJob {
    const id = ++this.nextJob;
    const entry = this.enter(this.jobs, id, scope);
    return {
      id,
      token: entry.cts,
      get current() {
        return !entry.cts.isCancellationRequested;
      },
      progress: () => undefined,
      cancel: () => entry.cts.cancel(),
      finish: () => this.leave(this.jobs, id, entry),
    };
  }

  /** Cancels everything running in `scope` (requests and jobs). */
  cancelScope(scope: string): void {
    for (const r of [...this.running.values(), ...this.jobs.values()]) if (r.scope === scope) r.cts.cancel();
  }

  /** True while a request or job of `scope` runs. */
  busy(scope: string): boolean {
    return [...this.running.values(), ...this.jobs.values()].some((r) => r.scope === scope && !r.cts.isCancellationRequested);
  }

  /**
   * The webview that asked is gone (reloaded or closed): its requests are cancelled and their replies dropped, since
   * a new webview numbers its requests from 1 again. Host jobs run on.
   */
  reset(): void {
    for (const r of this.running.values()) {
      r.orphaned = true;
      r.cts.cancel();
    }
    this.running.clear();
  }

  cancelAll(): void {
    for (const r of [...this.running.values(), ...this.jobs.values()]) r.cts.cancel();
  }

  private enter(table: Map<number, Running>, id: number, scope: string | undefined): Running {
    if (scope) this.cancelScope(scope);
    const entry = { cts: new Cancellation(), scope };
    table.set(id, entry);
    return entry;
  }

  private leave(table: Map<number, Running>, id: number, entry: Running): void {
    if (table.get(id) === entry) table.delete(id);
  }

  /** Logs a failed request: a cancellation in one line, an internal error with its stack. */
  logError(what: string, e: unknown, cancelled = isCancelled(e)): void {
    if (cancelled) {
      this.log.appendLine(`${what}: cancelled`);
      return;
    }
    this.log.appendLine(`${what}: ${errorMessage(e)}`);
    if (e instanceof Error && !(e instanceof ResidualError) && e.stack) this.log.appendLine(e.stack);
  }

  dispose(): void {
    this.cancelAll();
  }
}
