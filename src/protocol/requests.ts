/**
 * The request contract between a webview and the extension host, the same for every panel and the Inspector.
 *
 * - A webview asks with `{ type: 'request', id, method, params }`; `id` is unique within that webview.
 * - The host answers every request exactly once with a `reply`: `ok` with the result, or not `ok` with the message
 *   to show (and `cancelled` when it was cancelled, by `{ type: 'cancel', id }` or by a newer request of its kind).
 * - Long requests may send `progress` for their id before the reply.
 * - Jobs the host starts itself (Analyze Selection, Trace Circuit) announce their id in an event; the webview cancels
 *   them by that id too (`{ type: 'cancel', id, job: true }`).
 * Everything else is an event (host → webview) or a notification (webview → host) that needs no answer.
 */

/** What one method takes and gives. */
export interface RequestSpec {
  params: unknown;
  result: unknown;
}

export type RequestMap = Record<string, RequestSpec>;

export type Method<R extends RequestMap> = keyof R & string;
export type ParamsOf<R extends RequestMap, M extends Method<R>> = R[M]['params'];
export type ResultOf<R extends RequestMap, M extends Method<R>> = R[M]['result'];

/** A request message for each method of `R`. */
export type RequestMessage<R extends RequestMap> = { [M in Method<R>]: { type: 'request'; id: number; method: M; params: R[M]['params'] } }[Method<R>];

/** Cancels request `id` (or, with `job`, the host-started job `id`). Unknown or finished ids are ignored. */
export interface CancelMessage {
  type: 'cancel';
  id: number;
  job?: boolean;
}

export type ReplyMessage =
  | { type: 'reply'; id: number; ok: true; result: unknown }
  | { type: 'reply'; id: number; ok: false; message: string; cancelled: boolean };

export interface ProgressMessage {
  type: 'progress';
  id: number;
  done: number;
  total: number;
  message?: string;
}

/** Everything a webview may send: its requests, cancels, and its notifications `N`. */
export type WebviewMessage<R extends RequestMap, N extends { type: string }> = RequestMessage<R> | CancelMessage | N;

/** Everything the host may send a webview: replies, progress, and its events `E`. */
export type HostMessage<E extends { type: string }> = ReplyMessage | ProgressMessage | E;

/** Versioned state a webview persists with `setState`: a restored panel drops state written by another version. */
export interface Persisted<S> {
  version: number;
  state: S;
}

/** For the `default` of a switch over a union: a new member that is not handled fails to compile. */
export function unreachable(x: never): never {
  throw new Error(`unhandled message ${JSON.stringify(x)}`);
}
