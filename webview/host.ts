/**
 * The webview's half of the request contract (src/protocol/requests.ts): requests return promises that settle with
 * the host's one reply (a failure rejects with a RequestError, `cancelled` set when it was cancelled), progress goes to
 * the caller, events go to one handler, and persisted state carries a version so a restored panel never reads state
 * of another shape.
 */
import type { HostMessage, Method, ParamsOf, Persisted, ProgressMessage, ReplyMessage, RequestMap, ResultOf, WebviewMessage } from '../src/protocol';

interface VsCodeApi {
  postMessage(message: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

export class RequestError extends Error {
  constructor(
    message: string,
    readonly cancelled: boolean,
  ) {
    super(message);
  }
}

/** A request on its way: its id (to cancel it) and its result. */
export interface Pending<T> {
  id: number;
  result: Promise<T>;
  cancel(): void;
}

interface Waiting {
  resolve(result: unknown): void;
  reject(e: RequestError): void;
  onProgress?: (p: ProgressMessage) => void;
}

export interface HostClient<R extends RequestMap, E extends { type: string }, N extends { type: string }, S> {
  request<M extends Method<R>>(method: M, params: ParamsOf<R, M>, onProgress?: (p: ProgressMessage) => void): Pending<ResultOf<R, M>>;
  /** Cancels a job the host started (its id came in an event). */
  cancelJob(id: number): void;
  notify(m: N): void;
  /** Takes the host's events (one handler; replies and progress are handled here). */
  onEvent(handler: (e: E) => void): void;
  /** The persisted state, if it was written by this `version`. */
  getState(): S | undefined;
  setState(state: S): void;
}

export function hostClient<R extends RequestMap, E extends { type: string }, N extends { type: string }, S>(stateVersion: number): HostClient<R, E, N, S> {
  const api = acquireVsCodeApi();
  const post = (m: WebviewMessage<R, N>) => api.postMessage(m);
  const waiting = new Map<number, Waiting>();
  let nextId = 0;
  let eventHandler: (e: E) => void = () => undefined;

  window.addEventListener('message', (ev: MessageEvent<HostMessage<E>>) => {
    const m = ev.data as ReplyMessage | ProgressMessage | { type: 'event' };
    if (m.type === 'reply') {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      if (!w) return;
      if (m.ok) w.resolve(m.result);
      else w.reject(new RequestError(m.message, m.cancelled));
    } else if (m.type === 'progress') waiting.get(m.id)?.onProgress?.(m);
    else eventHandler(ev.data as E);
  });

  // The first message: the host drops what an earlier webview of this panel asked and replays the state. Sent before
  // any request (a first render may ask for something) and after the listener above, so the replay is not missed.
  post({ type: 'ready' } as N);

  return {
    request(method, params, onProgress) {
      const id = ++nextId;
      const result = new Promise<never>((resolve, reject) => waiting.set(id, { resolve: resolve as (r: unknown) => void, reject, onProgress }));
      post({ type: 'request', id, method, params } as WebviewMessage<R, N>);
      return { id, result, cancel: () => post({ type: 'cancel', id }) };
    },
    cancelJob: (id) => post({ type: 'cancel', id, job: true }),
    notify: (m) => post(m),
    onEvent: (handler) => (eventHandler = handler),
    getState() {
      const saved = api.getState() as Partial<Persisted<S>> | undefined;
      return saved && saved.version === stateVersion ? saved.state : undefined;
    },
    setState: (state) => api.setState({ version: stateVersion, state } satisfies Persisted<S>),
  };
}

/** The message to show for a failed request ("<what> cancelled." for a cancelled one, when `what` is given). */
export function failureText(e: unknown, what?: string): string {
  if (e instanceof RequestError) return e.cancelled && what ? `${what} cancelled.` : e.message;
  return e instanceof Error ? e.message : String(e);
}

/**
 * What a panel's busy notice shows: one piece of work at a time (a request or a host job), its text and the Cancel
 * for it. A newer piece takes the notice over; an older one ending then leaves the notice alone.
 */
export class BusyNotice {
  text = '';
  private owner: object | undefined;
  private cancelFn: (() => void) | undefined;

  /** Shows `text` (with `cancel` behind the Cancel button); returns the token that `clear` takes. */
  show(text: string, cancel?: () => void): object {
    this.text = text;
    this.cancelFn = cancel;
    this.owner = {};
    return this.owner;
  }

  /** Clears the notice; with `owner`, only if that piece of work still holds it. */
  clear(owner?: object): void {
    if (owner !== undefined && owner !== this.owner) return;
    this.text = '';
    this.cancelFn = undefined;
    this.owner = undefined;
  }

  cancel(): void {
    this.cancelFn?.();
  }

  /** Shows `text` until `pending` settles (its Cancel cancels that request); returns its result. */
  track<T>(pending: Pending<T>, text: string): Promise<T> {
    const owner = this.show(text, pending.cancel);
    return pending.result.finally(() => this.clear(owner));
  }
}
