/**
 * What can go wrong talking to a Hub, as one error type with a reason the host, the CLI and the tests can tell apart
 * (`HubError` is a `ResidualError`, so everything that shows a ResidualError verbatim shows these too).
 */
import { ResidualError, type ResidualErrorCode } from '../errors';

export type HubFailure =
  | 'offline' // the network is unreachable (no route, the name server does not answer)
  | 'dns' // the endpoint's host name does not exist
  | 'refused' // nothing listens at the endpoint
  | 'tls' // the certificate is not trusted, or the TLS handshake failed
  | 'timeout' // no answer within the answer deadline (connect + headers)
  | 'closed' // the server closed the connection without answering
  | 'stalled' // the answer started, then no data came for the stall deadline
  | 'redirect' // a redirect loop, or too many redirects
  | 'interrupted' // the connection broke in the middle of a file
  | 'busy' // another process is writing the destination
  | 'gated' // 401/403 on a gated repository
  | 'unauthorized' // 401 with a token the Hub refused
  | 'not-found' // repository, revision, folder or file does not exist (or is private)
  | 'checksum' // the bytes do not hash to the listing's oid
  | 'disk' // writing the destination failed (full, read-only, permissions)
  | 'hostile' // the server named a file outside the destination, or answered something malformed
  | 'http' // any other HTTP status
  | 'no-weights' // the repository holds nothing Residual can load
  | 'cancelled';

const CODES: Record<HubFailure, ResidualErrorCode> = {
  offline: 'missing',
  dns: 'missing',
  refused: 'missing',
  tls: 'invalid',
  timeout: 'missing',
  closed: 'missing',
  stalled: 'missing',
  redirect: 'invalid',
  interrupted: 'missing',
  busy: 'invalid',
  gated: 'unsupported',
  unauthorized: 'unsupported',
  'not-found': 'missing',
  checksum: 'invalid',
  disk: 'invalid',
  hostile: 'invalid',
  http: 'invalid',
  'no-weights': 'unsupported',
  cancelled: 'cancelled',
};

export class HubError extends ResidualError {
  constructor(
    readonly reason: HubFailure,
    message: string,
    file?: string,
  ) {
    super(message, file, CODES[reason]);
  }
}

/** The palette command that stores a token, named in every message that asks for one. */
export const TOKEN_HINT = "set a token with 'Residual: Set Hugging Face Token…' (command line: the HF_TOKEN environment variable)";

export interface ErrorContext {
  endpoint: string;
  repo: string;
  revision: string;
  hasToken: boolean;
}

/**
 * Turns a non-2xx answer into a HubError. The Hub says which case it is in `X-Error-Code` (GatedRepo,
 * RepoNotFound, RevisionNotFound, EntryNotFound); the status alone is ambiguous, because the Hub answers 401 both
 * for a gated repository and for one that does not exist (so as not to reveal private names).
 */
export async function httpError(res: Response, ctx: ErrorContext, file?: string): Promise<HubError> {
  const code = res.headers.get('x-error-code') ?? '';
  let detail = '';
  try {
    const text = (await res.text()).slice(0, 2000);
    try {
      const j = JSON.parse(text) as { error?: unknown; message?: unknown };
      detail = String(j.error ?? j.message ?? '');
    } catch {
      detail = text;
    }
  } catch {
    // the body is only for the message
  }
  detail = detail.replace(/\s+/g, ' ').trim().slice(0, 300);
  const page = `${ctx.endpoint.replace(/\/+$/, '')}/${ctx.repo}`;
  const where = file ? `${ctx.repo}/${file}` : ctx.repo;
  const s = res.status;
  const gated = code === 'GatedRepo' || /\bgated\b|restricted|accept the (conditions|licen[cs]e)/i.test(detail);
  if ((s === 401 || s === 403) && gated) {
    return new HubError(
      'gated',
      ctx.hasToken
        ? `${ctx.repo} is gated and the token has no access to it: accept the licence on ${page} with the account the token belongs to, then run the download again`
        : `${ctx.repo} is gated: accept the licence on ${page} and ${TOKEN_HINT}`,
      where,
    );
  }
  if (code === 'RevisionNotFound') return new HubError('not-found', `revision '${ctx.revision}' not found in ${ctx.repo} on ${ctx.endpoint}`, where);
  if (code === 'EntryNotFound' || (s === 404 && file)) return new HubError('not-found', `not found in ${ctx.repo} at revision '${ctx.revision}'`, where);
  if (code === 'RepoNotFound' || s === 404 || (s === 401 && !ctx.hasToken)) {
    return new HubError(
      'not-found',
      `repository ${ctx.repo} not found on ${ctx.endpoint}` + (ctx.hasToken ? ' (or the token cannot see it)' : `; if it is private or gated, ${TOKEN_HINT}`),
      where,
    );
  }
  if (s === 401) return new HubError('unauthorized', `the Hub refused the token (invalid or expired): ${TOKEN_HINT.replace('set a token', 'set a new token')}`, where);
  if (s === 403) return new HubError('unauthorized', `access to ${ctx.repo} is forbidden for this token${detail ? ` (${detail})` : ''}; check its permissions on ${ctx.endpoint}/settings/tokens`, where);
  if (s === 429) return new HubError('http', `${ctx.endpoint} is rate-limiting requests (HTTP 429); wait a few minutes and run the download again (it resumes)`, where);
  return new HubError('http', `HTTP ${s} ${res.statusText} from ${ctx.endpoint}${detail ? `: ${detail}` : ''}`, where);
}

/** Certificate problems (the server's certificate is not trusted here). */
const CERT_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

/** The innermost `code` of a fetch failure (`TypeError: fetch failed` wraps the socket error in `cause`). */
export function causeCode(e: unknown): string | undefined {
  for (let x: unknown = e, i = 0; x && i < 5; x = (x as { cause?: unknown }).cause, i++) {
    const c = (x as { code?: unknown }).code;
    if (typeof c === 'string') return c;
  }
  return undefined;
}

/** The innermost message of a fetch failure, on one line. */
function causeMessage(e: unknown): string {
  let msg = '';
  for (let x: unknown = e, i = 0; x && i < 5; x = (x as { cause?: unknown }).cause, i++) {
    if (x instanceof Error && x.message) msg = x.message;
    else if (typeof x === 'string') msg = x;
  }
  return msg.replace(/\s+/g, ' ').trim().slice(0, 200);
}

/** What is kept after a failure, for the end of a message. */
export function keptNote(changed: boolean): string {
  return changed
    ? '. Files already complete are kept, partial files (.part) are kept and the download resumes where it stopped next time'
    : '; nothing was changed, partial files are kept and the download resumes next time';
}

/**
 * A request that failed before any answer came, with its true cause: the host name does not resolve, the connection
 * is refused, TLS fails (certificate or protocol), the connection closes or times out, or the network is unreachable
 * (the only case called offline). `url` is the address asked, `endpoint` the Hub's.
 */
export function connectError(e: unknown, url: string, endpoint: string, changed: boolean): HubError {
  const code = causeCode(e);
  const detail = causeMessage(e);
  let host = endpoint;
  try {
    host = new URL(url).host;
  } catch {
    // keep the endpoint
  }
  const tail = keptNote(changed);
  const why = code ? (detail && !detail.includes(code) ? `${code}: ${detail}` : code) : detail || String(e);
  if (code === 'ENOTFOUND') {
    return new HubError('dns', `cannot resolve the host name ${new URL(url).hostname} (ENOTFOUND: no such host in DNS): check the endpoint's spelling (HF_ENDPOINT, --endpoint or residual.hub.endpoint) and your DNS` + tail);
  }
  if (code === 'EAI_AGAIN') {
    return new HubError('offline', `cannot resolve the host name ${new URL(url).hostname} (EAI_AGAIN: the name server did not answer): you appear to be offline, or DNS is down` + tail);
  }
  if (code === 'ECONNREFUSED') {
    return new HubError('refused', `${host} refused the connection (ECONNREFUSED): no server is listening there; check the endpoint, or the server is down` + tail);
  }
  if (code && CERT_CODES.has(code)) {
    return new HubError(
      'tls',
      `TLS with ${host} failed: its certificate is not trusted (${why}); behind a proxy that inspects TLS, set NODE_EXTRA_CA_CERTS to the proxy's CA certificate` + tail,
    );
  }
  if (code && (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code === 'EPROTO')) {
    // OpenSSL's own text (a record of file names and line numbers) says nothing more than the code.
    return new HubError('tls', `TLS handshake with ${host} failed (${code}); if the endpoint is a plain-HTTP server, write it as http://` + tail);
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT') {
    return new HubError('timeout', `could not connect to ${host} (${code}): the host does not answer, or a firewall drops the connection` + tail);
  }
  if (code === 'ENETUNREACH' || code === 'EHOSTUNREACH' || code === 'ENETDOWN' || code === 'EHOSTDOWN') {
    return new HubError('offline', `cannot reach ${host} (${code}: the network has no route to it): you appear to be offline` + tail);
  }
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE' || code === 'UND_ERR_CLOSED') {
    return new HubError('closed', `${host} closed the connection without answering (${why}); a proxy or firewall may be cutting it, or the server is failing` + tail);
  }
  return new HubError('offline', `cannot reach ${host} (${why})` + tail);
}

/**
 * No answer within the deadline. `what` names the request ("the model-info request for owner/name", "the request for
 * owner/name/model.safetensors"), `variable` the setting that lengthens the deadline.
 */
export function timeoutError(endpoint: string, what: string, seconds: number, variable: string, changed: boolean): HubError {
  return new HubError(
    'timeout',
    `${endpoint} did not answer ${what} within ${fmtSeconds(seconds)}: the Hub is down or overloaded, or a proxy or firewall holds the connection; ` +
      `try again later (set ${variable} to wait longer)` +
      keptNote(changed),
  );
}

export function fmtSeconds(s: number): string {
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

export function diskError(e: unknown, file: string): HubError {
  const code = causeCode(e);
  if (code === 'ENOSPC') return new HubError('disk', 'the disk is full; free some space and run the download again (the partial file is kept)', file);
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new HubError('disk', `cannot write here (${code}); choose another destination`, file);
  return new HubError('disk', `cannot write (${code ?? (e instanceof Error ? e.message : String(e))})`, file);
}
