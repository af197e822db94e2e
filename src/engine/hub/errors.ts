/**
 * What can go wrong talking to a Hub, as one error type with a reason the host, the CLI and the tests can tell apart
 * (`HubError` is a `ResidualError`, so everything that shows a ResidualError verbatim shows these too).
 */
import { ResidualError, type ResidualErrorCode } from '../errors';

export type HubFailure =
  | 'offline' // no connection to the endpoint at all (DNS, refused, unreachable, timeout)
  | 'interrupted' // the connection broke or stalled in the middle of a file
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
  interrupted: 'missing',
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

const OFFLINE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENETDOWN',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
]);

/** The innermost `code` of a fetch failure (`TypeError: fetch failed` wraps the socket error in `cause`). */
export function causeCode(e: unknown): string | undefined {
  for (let x: unknown = e, i = 0; x && i < 5; x = (x as { cause?: unknown }).cause, i++) {
    const c = (x as { code?: unknown }).code;
    if (typeof c === 'string') return c;
  }
  return undefined;
}

/** A fetch that failed before any answer came: the endpoint is unreachable. */
export function offlineError(e: unknown, endpoint: string, changed: boolean): HubError {
  const code = causeCode(e);
  const why = code && !OFFLINE_CODES.has(code) ? `${code}` : code ?? (e instanceof Error ? e.message : String(e));
  return new HubError(
    'offline',
    `cannot reach ${endpoint} (${why}): you appear to be offline` +
      (changed
        ? '. Files already complete are kept, partial files (.part) are kept and the download resumes where it stopped next time'
        : '; nothing was changed, partial files are kept and the download resumes next time'),
  );
}

export function diskError(e: unknown, file: string): HubError {
  const code = causeCode(e);
  if (code === 'ENOSPC') return new HubError('disk', 'the disk is full; free some space and run the download again (the partial file is kept)', file);
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new HubError('disk', `cannot write here (${code}); choose another destination`, file);
  return new HubError('disk', `cannot write (${code ?? (e instanceof Error ? e.message : String(e))})`, file);
}
