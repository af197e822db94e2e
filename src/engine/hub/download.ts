/**
 * Downloads a model checkpoint (and optionally a transcoder set) from a Hugging Face Hub, or any server that speaks
 * its API (a mirror, the tests' mock on 127.0.0.1).
 *
 * `@huggingface/hub` does the metadata: `modelInfo` pins the revision to a commit (so every file, and every resumed
 * file, comes from one commit even if the branch moves) and `listFiles` lists the files with their checksums (LFS
 * sha256, git blob sha1). The bytes are fetched here with Node's fetch, because the library's downloads
 * (`downloadFile` → `WebBlob`, `downloadFileToCacheDir`) cannot resume: they write `.incomplete` from byte 0 each
 * time, take no AbortSignal, and a `WebBlob.slice(n)` answered with 200 instead of 206 would silently hand over the
 * whole file as if it were the tail. Here a file goes to `<file>.part`, continues with `Range: bytes=N-`, restarts
 * when the server ignores the range, is hashed while it streams, and is renamed into place only when its hash
 * matches the listing. No `vscode` import: the extension, the CLI and the tests all call this.
 *
 * Every request (the library's too) goes through {@link send}: redirects are followed by hand (at most
 * {@link MAX_REDIRECTS}, only to http(s), a loop named as a loop, the token dropped when the origin changes), the
 * answer (connect, TLS and headers) must come within the answer deadline (`HF_HUB_ETAG_TIMEOUT`, default 20 s), and
 * a body that sends nothing for the stall deadline (`HF_HUB_DOWNLOAD_TIMEOUT`, default 30 s) is reported as stalled
 * (a file's `.part` is kept for the next run). While nothing comes, `onWaiting` hears about it once a second.
 * The destination folders are locked for the whole run (src/engine/files.ts `acquireLock`), so two downloads into
 * one folder cannot interleave their bytes.
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { listFiles, modelInfo } from '@huggingface/hub';
import { ResidualError, type CancelToken } from '../errors';
import { acquireLock, type Lock } from '../files';
import { causeCode, connectError, diskError, fmtSeconds, HubError, httpError, keptNote, timeoutError, type ErrorContext } from './errors';
import { checkListEntry, checkRepoId, checkRepoPath, checkRevision, resolveInside, selectModelFiles, selectTranscoderFiles, type ListedFile } from './files';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** Seconds the Hub has to answer a request (connect, TLS, headers) unless `HF_HUB_ETAG_TIMEOUT` says otherwise. */
export const DEFAULT_ANSWER_TIMEOUT_S = 20;
/** Seconds a transfer may send nothing before it counts as stalled unless `HF_HUB_DOWNLOAD_TIMEOUT` says otherwise. */
export const DEFAULT_STALL_TIMEOUT_S = 30;
/** After this long without an answer or a byte, progress says it is waiting (or half the deadline, if shorter). */
export const WAIT_NOTICE_MS = 3000;
/** Redirects followed for one request (the Hub needs one: resolve → CDN; a renamed repository adds one). */
export const MAX_REDIRECTS = 10;
/** The most an API answer (model info, one page of a listing) may weigh. */
const MAX_API_BYTES = 64 << 20;
/** The most pages a listing may have (the Hub gives 1000 entries a page). */
const MAX_LIST_PAGES = 1000;

/** The endpoint to use: an explicit one, else `HF_ENDPOINT` (as huggingface_hub reads it), else huggingface.co. */
export function resolveEndpoint(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  const raw = (explicit?.trim() || env.HF_ENDPOINT?.trim() || DEFAULT_ENDPOINT).replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new HubError('not-found', `"${raw}" is not a URL; the Hub endpoint should look like ${DEFAULT_ENDPOINT}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new HubError('not-found', `the Hub endpoint must be http(s), not ${url.protocol}`, raw);
  return raw;
}

/**
 * The two deadlines, from the environment variables huggingface_hub reads (seconds): `HF_HUB_ETAG_TIMEOUT` for an
 * answer to come (connect + headers), `HF_HUB_DOWNLOAD_TIMEOUT` for a transfer that sends nothing. A value that is not
 * a positive number of seconds is refused, naming the variable.
 */
export function hubTimeouts(env: NodeJS.ProcessEnv = process.env): { answerMs: number; stallMs: number } {
  const read = (name: string, fallback: number): number => {
    const raw = env[name]?.trim();
    if (!raw) return fallback * 1000;
    const s = Number(raw);
    if (!Number.isFinite(s) || s <= 0 || s > 86_400) {
      throw new ResidualError(`must be a number of seconds greater than 0 (at most 86400), got ${JSON.stringify(env[name])}`, name);
    }
    return s * 1000;
  };
  return { answerMs: read('HF_HUB_ETAG_TIMEOUT', DEFAULT_ANSWER_TIMEOUT_S), stallMs: read('HF_HUB_DOWNLOAD_TIMEOUT', DEFAULT_STALL_TIMEOUT_S) };
}

export interface HubSource {
  kind: 'model' | 'transcoders';
  /** `owner/name`. */
  repo: string;
  /** Branch, tag or commit; default `main`. */
  revision?: string;
  /** Transcoders only: the folder of the repository that holds the set (its structure below is kept). */
  subfolder?: string;
  /** Where the files go (created if missing). */
  destDir: string;
}

export interface DownloadProgress {
  /** `owner/name/path` of the file being fetched or verified. */
  file: string;
  phase: 'verify' | 'download';
  bytes: number;
  total: number;
  overallBytes: number;
  overallTotal: number;
}

/** Nothing has come from the Hub for a while (see {@link DownloadOptions.onWaiting} and {@link describeWaiting}). */
export interface WaitingProgress {
  /** `owner/name/path` of the file being fetched, or `owner/name` while the repository is asked about. */
  file: string;
  /** The request, e.g. "the model-info request for owner/name", "the request for owner/name/model.safetensors". */
  waitingFor: string;
  /** An answer to a request, or more bytes of one already answered. */
  kind: 'answer' | 'data';
  /** How long nothing has come. */
  waitingMs: number;
  /** When the wait is given up (the deadline). */
  giveUpMs: number;
  /** Bytes of the file so far, and its size (0 for API requests). */
  bytes: number;
  total: number;
}

/** The line to show while waiting (the CLI prints it to stderr, the extension in its progress notification). */
export function describeWaiting(w: WaitingProgress): string {
  const waited = w.waitingMs < 10_000 ? (w.waitingMs / 1000).toFixed(1) : String(Math.round(w.waitingMs / 1000));
  const limit = `; gives up after ${fmtSeconds(w.giveUpMs / 1000)}`;
  if (w.kind === 'data') return `waiting for the Hub… no data for ${waited} s on ${w.waitingFor} (${mb(w.bytes)} of ${mb(w.total)} so far${limit})`;
  return `waiting for the Hub… no answer for ${waited} s to ${w.waitingFor}${limit}`;
}

export interface DownloadOptions {
  /** Default: {@link resolveEndpoint}(). */
  endpoint?: string;
  /** Bearer token for gated or private repositories. */
  token?: string;
  signal?: AbortSignal;
  cancel?: CancelToken;
  onProgress?: (p: DownloadProgress) => void;
  /** Called about once a second while nothing has come from the Hub for `waitNoticeMs` (an answer, or bytes). */
  onWaiting?: (w: WaitingProgress) => void;
  /** Automatic resumes of one file after a broken or stalled connection that made no progress (default 3). */
  retries?: number;
  /** The Hub must answer a request (connect, TLS, headers) within this (default: {@link hubTimeouts}, 20 s). */
  answerTimeoutMs?: number;
  /** A transfer that delivers nothing for this long is stalled (default: {@link hubTimeouts}, 30 s). */
  idleTimeoutMs?: number;
  /** Progress says it is waiting after this long without an answer or a byte (default 3 s or half the deadline). */
  waitNoticeMs?: number;
  /** Where `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT` are read when the deadlines are not given (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** What the destination's lock says the holder is doing (default `residual download <repo>`). */
  lockLabel?: string;
  /** Default: the global fetch. */
  fetch?: typeof fetch;
}

export interface FileOutcome {
  repo: string;
  /** Path in the repository. */
  path: string;
  /** Absolute path written. */
  dest: string;
  size: number;
  status: 'downloaded' | 'resumed' | 'skipped';
  /** Bytes fetched over the network in this run. */
  fetchedBytes: number;
  /** Bytes of an earlier `.part` that were kept (0 when none). */
  resumedFrom: number;
  /** How often the file started again from byte 0 (server ignored Range, stale partial file). */
  restarts: number;
  verifiedBy: 'sha256' | 'git-sha1';
}

export interface DownloadSummary {
  endpoint: string;
  sources: { kind: HubSource['kind']; repo: string; revision: string; commit: string; subfolder?: string; destDir: string }[];
  files: FileOutcome[];
  fetchedBytes: number;
  totalBytes: number;
  ms: number;
}

interface Planned {
  source: HubSource & { revision: string; commit: string };
  file: ListedFile;
  dest: string;
  url: string;
  ctx: ErrorContext;
}

/** What the run waits for from the network right now. */
interface Waiting {
  kind: 'answer' | 'data';
  /** "the model-info request for owner/name", "owner/name/model.safetensors". */
  what: string;
  /** For progress: the file (or repository) and its bytes so far. */
  file: string;
  bytes: number;
  total: number;
  since: number;
  limitMs: number;
}

/** State shared by one run. */
interface Run {
  endpoint: string;
  token?: string;
  fetch: typeof fetch;
  signal: AbortSignal;
  retries: number;
  answerMs: number;
  stallMs: number;
  noticeMs: number;
  onProgress?: (p: DownloadProgress) => void;
  onWaiting?: (w: WaitingProgress) => void;
  doneBytes: number;
  totalBytes: number;
  /** Whether anything on disk was written yet (for the offline message). */
  changed: boolean;
  wait?: Waiting;
  lastNotice: number;
}

/** Downloads one source; see {@link downloadFromHub}. */
export function downloadRepo(source: HubSource, opts: DownloadOptions = {}): Promise<DownloadSummary> {
  return downloadFromHub([source], opts);
}

/**
 * Locks the destination folders, lists every source (so progress knows the total), checks free disk space, then
 * fetches the files one after another. Verified files already in place are skipped; `.part` files are resumed.
 * Throws a {@link HubError}.
 */
export async function downloadFromHub(sources: HubSource[], opts: DownloadOptions = {}): Promise<DownloadSummary> {
  const t0 = performance.now();
  const master = new AbortController();
  const unlink: (() => void)[] = [];
  const locks: Lock[] = [];
  const timeouts = opts.answerTimeoutMs !== undefined && opts.idleTimeoutMs !== undefined ? undefined : hubTimeouts(opts.env);
  const answerMs = opts.answerTimeoutMs ?? timeouts!.answerMs;
  const stallMs = opts.idleTimeoutMs ?? timeouts!.stallMs;
  const run: Run = {
    endpoint: resolveEndpoint(opts.endpoint),
    token: opts.token?.trim() || undefined,
    fetch: opts.fetch ?? fetch,
    signal: master.signal,
    retries: opts.retries ?? 3,
    answerMs,
    stallMs,
    noticeMs: opts.waitNoticeMs ?? Math.min(WAIT_NOTICE_MS, Math.min(answerMs, stallMs) / 2),
    onProgress: opts.onProgress,
    onWaiting: opts.onWaiting,
    doneBytes: 0,
    totalBytes: 0,
    changed: false,
    lastNotice: 0,
  };
  // Checked before the lock, so a mistyped name takes no lock and creates no folder.
  for (const s of sources) {
    checkRepoId(s.repo);
    checkRevision(s.revision || 'main');
  }
  if (opts.signal) {
    if (opts.signal.aborted) master.abort();
    const onAbort = () => master.abort();
    opts.signal.addEventListener('abort', onAbort, { once: true });
    unlink.push(() => opts.signal!.removeEventListener('abort', onAbort));
  }
  if (opts.cancel) {
    // The engine's CancelToken is polled; a timer turns it into an abort so a stalled read stops too.
    const timer = setInterval(() => opts.cancel!.isCancellationRequested && master.abort(), 50);
    timer.unref?.();
    unlink.push(() => clearInterval(timer));
  }
  if (run.onWaiting) {
    const timer = setInterval(() => noticeWaiting(run), 250);
    timer.unref?.();
    unlink.push(() => clearInterval(timer));
  }
  try {
    const label = opts.lockLabel ?? `residual download ${sources.map((s) => s.repo.trim()).join(' + ')}`;
    for (const t of lockTargets(sources)) locks.push(lockFolder(t.dir, t.create, label));
    const plans: Planned[] = [];
    const summary: DownloadSummary = { endpoint: run.endpoint, sources: [], files: [], fetchedBytes: 0, totalBytes: 0, ms: 0 };
    for (const s of sources) {
      const { source, files } = await plan(run, s);
      summary.sources.push({ kind: source.kind, repo: source.repo, revision: source.revision, commit: source.commit, subfolder: source.subfolder, destDir: nodePath.resolve(source.destDir) });
      plans.push(...files);
    }
    const seen = new Set<string>();
    for (const p of plans) {
      if (seen.has(p.dest)) throw new HubError('hostile', `two files of the download would be written to ${p.dest}`);
      seen.add(p.dest);
    }
    run.totalBytes = summary.totalBytes = plans.reduce((a, p) => a + p.file.size, 0);
    checkFreeSpace(plans);
    for (const p of plans) {
      checkAbort(run);
      const outcome = await fetchFile(run, p);
      run.doneBytes += p.file.size;
      summary.files.push(outcome);
      summary.fetchedBytes += outcome.fetchedBytes;
    }
    summary.ms = performance.now() - t0;
    return summary;
  } finally {
    for (const l of locks) l.release();
    for (const f of unlink) f();
  }
}

/**
 * The destination folders to lock, outermost first. A folder inside another one of the run (transcoders inside the
 * model folder) is locked too when its parent exists already; when it does not, nobody else can be writing it and
 * the outer lock covers it (so a failed run creates no folder).
 */
function lockTargets(sources: HubSource[]): { dir: string; create: boolean }[] {
  const dirs = [...new Set(sources.map((s) => nodePath.resolve(s.destDir)))].sort((a, b) => a.length - b.length);
  return dirs
    .map((dir, i) => ({ dir, create: !dirs.slice(0, i).some((outer) => dir.startsWith(outer + nodePath.sep)) }))
    .filter((t) => t.create || fs.existsSync(nodePath.dirname(t.dir)));
}

/**
 * Takes the lock beside `dir` (its parent folder is created if missing and `create`); a held lock is a `busy`
 * HubError naming the holder.
 */
function lockFolder(dir: string, create: boolean, label: string): Lock {
  const parent = nodePath.dirname(dir);
  if (create) {
    try {
      fs.mkdirSync(parent, { recursive: true });
    } catch (e) {
      throw diskError(e, parent);
    }
  }
  try {
    return acquireLock(dir, label);
  } catch (e) {
    if (e instanceof ResidualError && / is being written by /.test(e.message)) {
      throw new HubError('busy', e.message.slice(e.file ? e.file.length + 2 : 0), dir);
    }
    throw e;
  }
}

/** Tells `onWaiting`, once a second, while nothing has come for the notice time. */
function noticeWaiting(run: Run): void {
  const w = run.wait;
  if (!w || !run.onWaiting) return;
  const now = performance.now();
  const idle = now - w.since;
  if (idle < run.noticeMs || now - run.lastNotice < 1000) return;
  run.lastNotice = now;
  run.onWaiting({ file: w.file, waitingFor: w.what, kind: w.kind, waitingMs: idle, giveUpMs: w.limitMs, bytes: w.bytes, total: w.total });
}

function checkAbort(run: Run, what?: string): void {
  if (run.signal.aborted) throw cancelledError(what);
}

function cancelledError(detail?: string): ResidualError {
  return new HubError('cancelled', `download cancelled${detail ? `; ${detail}` : ''}`);
}

/** A request under way: its final answer (after redirects), and the controller that ends it. */
interface Sent {
  res: Response;
  url: string;
  ac: AbortController;
  desc: Omit<Waiting, 'kind' | 'since' | 'limitMs'>;
  /** Stops listening for the run's abort; call once the body is read or dropped. */
  done(): void;
}

const isHttp = (u: URL) => u.protocol === 'http:' || u.protocol === 'https:';
const shortUrl = (u: string) => (u.length > 120 ? u.slice(0, 117) + '…' : u);

/**
 * Sends one GET and follows its redirects by hand: only to http(s) URLs, at most {@link MAX_REDIRECTS}, a URL seen
 * twice is a loop, and the token is dropped when the origin changes. The answer must come within the answer deadline
 * (one deadline for the whole chain). Failures are HubErrors with their true cause; `changed` is whether anything
 * is already on disk (for the message's last sentence).
 */
async function send(run: Run, url: string, headers: Headers, desc: Sent['desc'], changed: boolean): Promise<Sent> {
  checkAbort(run);
  const ac = new AbortController();
  const onAbort = () => ac.abort();
  run.signal.addEventListener('abort', onAbort, { once: true });
  const done = () => run.signal.removeEventListener('abort', onAbort);
  let timedOut = false;
  const timer = setTimeout(() => ((timedOut = true), ac.abort()), run.answerMs);
  run.wait = { ...desc, kind: 'answer', since: performance.now(), limitMs: run.answerMs };
  const chain: string[] = [];
  try {
    for (let current = new URL(url); ; ) {
      if (!isHttp(current)) {
        throw new HubError('hostile', `${desc.what} leads to ${shortUrl(current.href)} (scheme ${current.protocol}); only http and https are followed, so it was refused`, desc.file);
      }
      chain.push(current.href);
      let res: Response;
      try {
        res = await run.fetch(current.href, { headers, signal: ac.signal, redirect: 'manual' });
      } catch (e) {
        if (run.signal.aborted) throw cancelledError();
        if (timedOut) throw timeoutError(run.endpoint, desc.what, run.answerMs / 1000, 'HF_HUB_ETAG_TIMEOUT', changed);
        throw connectError(e, current.href, run.endpoint, changed);
      }
      const location = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
      if (location === null) {
        clearTimeout(timer);
        run.wait = undefined;
        return { res, url: current.href, ac, desc, done };
      }
      await res.body?.cancel().catch(() => undefined);
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        throw new HubError('hostile', `${desc.what} was redirected to ${JSON.stringify(shortUrl(location))}, which is not a URL; nothing was downloaded from it`, desc.file);
      }
      if (!isHttp(next)) {
        throw new HubError(
          'hostile',
          `${current.host} redirected ${desc.what} to ${shortUrl(next.href)} (scheme ${next.protocol}); only http and https redirects are followed, so it was refused`,
          desc.file,
        );
      }
      if (chain.includes(next.href)) {
        const hops = [...chain.slice(chain.indexOf(next.href)), next.href].map((u) => new URL(u).pathname);
        throw new HubError('redirect', `${current.host} redirects ${desc.what} in a loop (${hops.join(' → ')}); the server is misconfigured, nothing was downloaded`, desc.file);
      }
      if (chain.length > MAX_REDIRECTS) {
        throw new HubError('redirect', `${current.host} redirected ${desc.what} more than ${MAX_REDIRECTS} times (last to ${shortUrl(next.href)}); giving up, nothing was downloaded`, desc.file);
      }
      if (next.origin !== current.origin) headers.delete('authorization');
      current = next;
    }
  } catch (e) {
    clearTimeout(timer);
    done();
    run.wait = undefined;
    throw e;
  }
}

/** A body that sent nothing for the stall deadline. */
class Stall extends Error {
  constructor() {
    super('stalled');
  }
}

/**
 * Reads `sent`'s body chunk by chunk; a read that brings nothing for the stall deadline aborts the request and
 * throws {@link Stall}. The run's `wait` shows what is awaited meanwhile.
 */
async function readBody(run: Run, sent: Sent, bytesSoFar: number, onChunk: (c: Uint8Array) => Promise<void> | void): Promise<void> {
  const body = sent.res.body;
  if (!body) return;
  const reader = body.getReader();
  let stalled = false;
  let finished = false;
  let bytes = bytesSoFar;
  try {
    for (;;) {
      run.wait = { ...sent.desc, bytes, kind: 'data', since: performance.now(), limitMs: run.stallMs };
      const timer = setTimeout(() => ((stalled = true), sent.ac.abort()), run.stallMs);
      let r: Awaited<ReturnType<typeof reader.read>>;
      try {
        r = await reader.read();
      } catch (e) {
        if (stalled && !run.signal.aborted) throw new Stall();
        throw e;
      } finally {
        clearTimeout(timer);
      }
      if (r.done) {
        finished = true;
        return;
      }
      bytes += r.value.length;
      await onChunk(r.value);
    }
  } finally {
    run.wait = undefined;
    if (!finished) await reader.cancel().catch(() => undefined);
  }
}

/**
 * The fetch handed to `@huggingface/hub`: every request through {@link send} with the token, the body read here
 * under the stall deadline and handed back whole, failures as HubErrors. `what` names the request in messages.
 */
function libraryFetch(run: Run, ctx: ErrorContext, what: string, file?: string): typeof fetch {
  const asked = new Set<string>();
  return async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    // The listing's pages link to each other; a server that links back, or never ends, is refused.
    if (asked.has(url)) throw new HubError('hostile', `${what}: the server's next page (${shortUrl(url)}) was already fetched; refusing to loop`, ctx.repo);
    if (asked.size >= MAX_LIST_PAGES) throw new HubError('hostile', `${what}: the server gives more than ${MAX_LIST_PAGES} pages; refusing to go on`, ctx.repo);
    asked.add(url);
    const headers = new Headers(init?.headers);
    // Set here rather than through the library's accessToken, which rejects tokens not starting with "hf_" (mirrors
    // may issue others).
    if (run.token) headers.set('Authorization', `Bearer ${run.token}`);
    const sent = await send(run, url, headers, { what, file: ctx.repo, bytes: 0, total: 0 }, run.changed);
    let answer: { res: Response; body: Uint8Array };
    try {
      answer = await bufferAnswer(run, sent, ctx.repo);
    } finally {
      sent.done();
    }
    const { res, body } = answer;
    if (!res.ok) throw await httpError(res, ctx, file);
    const head = new TextDecoder().decode(body.subarray(0, 512)).trimStart().toLowerCase();
    if (head.startsWith('<!doctype html') || head.startsWith('<html') || (/text\/html/i.test(res.headers.get('content-type') ?? '') && head.startsWith('<'))) {
      throw new HubError(
        'http',
        `${run.endpoint} answered ${what} with an HTML page, not the Hub's JSON: a captive portal or a proxy's login page, or an endpoint that is not a Hugging Face Hub (check HF_ENDPOINT)`,
        ctx.repo,
      );
    }
    return res;
  };
}

/**
 * The whole answer of `sent` (at most 64 MiB), read under the stall deadline: as a Response the library (or
 * {@link httpError}) can read at leisure, and as bytes. `file` names the repository or file in messages.
 */
async function bufferAnswer(run: Run, sent: Sent, file: string): Promise<{ res: Response; body: Uint8Array }> {
  const what = sent.desc.what;
  const parts: Uint8Array[] = [];
  let n = 0;
  try {
    await readBody(run, sent, 0, (c) => {
      n += c.length;
      if (n > MAX_API_BYTES) throw new HubError('hostile', `${what}: the answer exceeds ${MAX_API_BYTES >> 20} MiB; refusing it`, file);
      parts.push(c);
    });
  } catch (e) {
    if (run.signal.aborted) throw cancelledError();
    if (e instanceof ResidualError) throw e;
    if (e instanceof Stall) {
      throw new HubError(
        'stalled',
        `${run.endpoint} stopped sending its answer to ${what} after ${n} bytes: no data for ${fmtSeconds(run.stallMs / 1000)} (set HF_HUB_DOWNLOAD_TIMEOUT to wait longer)` +
          keptNote(run.changed),
        file,
      );
    }
    throw new HubError('interrupted', `the connection to ${new URL(sent.url).host} broke while it sent ${what} (${causeCode(e) ?? (e as Error).message})` + keptNote(run.changed), file);
  }
  const body = new Uint8Array(n);
  let at = 0;
  for (const c of parts) (body.set(c, at), (at += c.length));
  const status = sent.res.status;
  return { res: new Response([101, 204, 205, 304].includes(status) ? null : body, { status, statusText: sent.res.statusText, headers: sent.res.headers }), body };
}

/** Anything the library throws that is not already ours means the server answered something malformed. */
function libraryError(e: unknown, run: Run, ctx: ErrorContext): unknown {
  if (e instanceof ResidualError) return e;
  if (run.signal.aborted) return cancelledError();
  return new HubError('hostile', `unexpected answer from ${run.endpoint}: ${e instanceof Error ? e.message : String(e)}`, ctx.repo);
}

async function plan(run: Run, s: HubSource): Promise<{ source: Planned['source']; files: Planned[] }> {
  const repo = checkRepoId(s.repo);
  const revision = checkRevision(s.revision || 'main');
  const subfolder = s.subfolder ? checkRepoPath(s.subfolder.replace(/^\/+|\/+$/g, ''), repo) : undefined;
  const ctx: ErrorContext = { endpoint: run.endpoint, repo, revision, hasToken: !!run.token };
  let commit = revision;
  let listed: ListedFile[] = [];
  try {
    const info = await modelInfo({ name: repo, revision, additionalFields: ['sha'], hubUrl: run.endpoint, fetch: libraryFetch(run, ctx, `the model-info request for ${repo}`) });
    // Pin to the commit so files (and resumes) cannot mix two versions; a mirror without `sha` keeps the revision.
    if (typeof info.sha === 'string' && /^[0-9a-f]{40}$/.test(info.sha)) commit = info.sha;
    const listing = libraryFetch(run, { ...ctx }, `the file listing of ${repo}${subfolder ? `/${subfolder}` : ''}`, subfolder);
    for await (const e of listFiles({ repo, revision: commit, path: subfolder, recursive: true, hubUrl: run.endpoint, fetch: listing })) {
      const f = checkListEntry(e, repo);
      if (f) listed.push(f);
    }
  } catch (e) {
    throw libraryError(e, run, ctx);
  }
  const source = { ...s, repo, revision, commit, subfolder };
  const picked =
    s.kind === 'model' ? selectModelFiles(listed, repo).map((file) => ({ file, local: file.path })) : selectTranscoderFiles(listed, repo, subfolder ?? '');
  listed = [];
  const base = `${run.endpoint}/${repo}/resolve/${encodeURIComponent(commit)}/`;
  return {
    source,
    files: picked.map(({ file, local }) => ({
      source,
      file,
      dest: resolveInside(s.destDir, local, repo),
      url: base + file.path.split('/').map(encodeURIComponent).join('/'),
      ctx,
    })),
  };
}

/** Refuses to start when the files still missing do not fit on the destination's disk. */
function checkFreeSpace(plans: Planned[]): void {
  const need = new Map<string, number>();
  for (const p of plans) {
    const have = sizeOf(p.dest) === p.file.size ? p.file.size : Math.min(sizeOf(p.dest + '.part') ?? 0, p.file.size);
    let dir = nodePath.dirname(p.dest);
    while (!fs.existsSync(dir) && nodePath.dirname(dir) !== dir) dir = nodePath.dirname(dir);
    need.set(dir, (need.get(dir) ?? 0) + p.file.size - have);
  }
  for (const [dir, bytes] of need) {
    let free: number;
    try {
      const st = fs.statfsSync(dir);
      free = st.bavail * st.bsize;
    } catch {
      continue; // statfs unsupported here: the write itself reports a full disk
    }
    if (bytes > free) {
      throw new HubError('disk', `the download needs ${mb(bytes)} more but only ${mb(free)} is free; free some space or choose another destination`, dir);
    }
  }
}

function sizeOf(p: string): number | undefined {
  try {
    const st = fs.statSync(p);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

export function mb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** The hash the listing gives for a file: sha256 of the content for LFS files, git's blob sha1 for the others. */
class ContentHash {
  readonly algo: 'sha256' | 'git-sha1';
  readonly expected: string;
  private h!: Hash;

  constructor(private readonly f: ListedFile) {
    this.algo = f.sha256 ? 'sha256' : 'git-sha1';
    this.expected = (f.sha256 ?? f.oid)!;
    this.reset();
  }

  reset(): void {
    this.h = createHash(this.algo === 'sha256' ? 'sha256' : 'sha1');
    if (this.algo === 'git-sha1') this.h.update(`blob ${this.f.size}\0`);
  }

  update(b: Uint8Array): void {
    this.h.update(b);
  }

  digest(): string {
    return this.h.digest('hex');
  }
}

/** Feeds the first `bytes` of `file` to `hash`, in 4 MiB reads, stopping on abort. */
async function hashPrefix(run: Run, file: string, bytes: number, hash: ContentHash, onBytes?: (n: number) => void): Promise<void> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = new Uint8Array(Math.min(4 << 20, Math.max(bytes, 1)));
    for (let pos = 0; pos < bytes; ) {
      checkAbort(run, `verifying ${file}`);
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, bytes - pos), pos);
      if (bytesRead === 0) throw new HubError('disk', `the file shrank while it was read`, file);
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
      onBytes?.(pos);
    }
  } finally {
    await fh.close();
  }
}

function progressEmitter(run: Run, p: Planned) {
  let last = 0;
  const name = `${p.source.repo}/${p.file.path}`;
  return (phase: DownloadProgress['phase'], bytes: number, force = false) => {
    if (!run.onProgress) return;
    const now = performance.now();
    if (!force && now - last < 100) return;
    last = now;
    run.onProgress({ file: name, phase, bytes, total: p.file.size, overallBytes: run.doneBytes + (phase === 'download' ? bytes : 0), overallTotal: run.totalBytes });
  };
}

async function fetchFile(run: Run, p: Planned): Promise<FileOutcome> {
  const name = `${p.source.repo}/${p.file.path}`;
  const part = p.dest + '.part';
  const progress = progressEmitter(run, p);
  const outcome: FileOutcome = {
    repo: p.source.repo,
    path: p.file.path,
    dest: p.dest,
    size: p.file.size,
    status: 'downloaded',
    fetchedBytes: 0,
    resumedFrom: 0,
    restarts: 0,
    verifiedBy: p.file.sha256 ? 'sha256' : 'git-sha1',
  };

  // A complete file from an earlier run is kept when it still hashes to the listing.
  if (sizeOf(p.dest) === p.file.size) {
    const hash = new ContentHash(p.file);
    await hashPrefix(run, p.dest, p.file.size, hash, (n) => progress('verify', n));
    if (hash.digest() === hash.expected) {
      progress('download', p.file.size, true);
      outcome.status = 'skipped';
      return outcome;
    }
  }
  try {
    fs.mkdirSync(nodePath.dirname(p.dest), { recursive: true });
  } catch (e) {
    throw diskError(e, nodePath.dirname(p.dest));
  }
  for (let fromScratch = false; ; fromScratch = true) {
    const r = await fetchPart(run, p, part, progress, outcome);
    if (r.digest === r.hash.expected) break;
    await fs.promises.rm(part, { force: true });
    // A `.part` left by an earlier run may be damaged or from another version: one more try from byte 0.
    if (r.resumedFrom > 0 && !fromScratch) {
      outcome.restarts++;
      continue;
    }
    throw new HubError(
      'checksum',
      `checksum mismatch: the downloaded bytes hash to ${r.hash.algo} ${r.digest.slice(0, 16)}… but the Hub lists ${r.hash.expected.slice(0, 16)}…; ` +
        'the damaged file was deleted and nothing was installed. Run the download again; if it fails again, something between you and the server alters the file',
      name,
    );
  }
  try {
    await fs.promises.rename(part, p.dest);
  } catch (e) {
    throw diskError(e, p.dest);
  }
  run.changed = true;
  if (outcome.resumedFrom > 0 && outcome.restarts === 0) outcome.status = 'resumed';
  progress('download', p.file.size, true);
  return outcome;
}

/** Brings `part` to the file's full size, resuming what is there; returns the digest of the whole content. */
async function fetchPart(
  run: Run,
  p: Planned,
  part: string,
  progress: (phase: DownloadProgress['phase'], bytes: number, force?: boolean) => void,
  outcome: FileOutcome,
): Promise<{ digest: string; hash: ContentHash; resumedFrom: number }> {
  const size = p.file.size;
  const name = `${p.source.repo}/${p.file.path}`;
  const hash = new ContentHash(p.file);
  let have = sizeOf(part) ?? 0;
  if (have > size) have = 0; // longer than the file: not ours to continue
  if (have > 0) await hashPrefix(run, part, have, hash, (n) => progress('verify', n));
  else await writeEmpty(part);
  const resumedFrom = have;
  outcome.resumedFrom = Math.max(outcome.resumedFrom, have);
  const restart = async () => {
    have = 0;
    hash.reset();
    outcome.restarts++;
    await writeEmpty(part);
  };
  const kept = () => `${have} of ${size} bytes are kept in ${part} and the download resumes there next time`;

  for (let failures = 0; have < size; ) {
    checkAbort(run, kept());
    const headers = new Headers({ 'Accept-Encoding': 'identity' });
    if (have > 0) headers.set('Range', `bytes=${have}-`);
    if (run.token) headers.set('Authorization', `Bearer ${run.token}`);
    const before = have;
    let broken: unknown;
    let stalled = false;
    let sent: Sent | undefined;
    try {
      // No answer in time, a refused connection, a bad redirect: a HubError, thrown on (the .part stays).
      sent = await send(run, p.url, headers, { what: `the request for ${name}`, file: name, bytes: have, total: size }, run.changed || have > 0);
      const res = sent.res;
      const drop = () => res.body?.cancel().catch(() => undefined);
      if (res.status === 416 && have > 0) {
        // The range starts past the server's end: this `.part` belongs to another version.
        await drop();
        await restart();
        continue;
      }
      // An error's body (the Hub's reason) is read under the stall deadline too.
      if (!res.ok) throw await httpError((await bufferAnswer(run, sent, name)).res, p.ctx, p.file.path);
      if (have > 0 && res.status === 200) {
        // The server ignored Range and sends the whole file: take it from byte 0.
        await restart();
      } else if (res.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        if (m && m[3] !== '*' && Number(m[3]) !== size) {
          await drop();
          throw new HubError('checksum', `the server's file has ${m[3]} bytes but the listing says ${size}; nothing was installed`, name);
        }
        if (!m || Number(m[1]) !== have) {
          // Not the range asked for: ask again for the whole file.
          await drop();
          if (outcome.restarts >= 3) throw new HubError('hostile', `the server keeps answering the wrong byte range (${res.headers.get('content-range')})`, name);
          await restart();
          continue;
        }
      } else if (res.status !== 200) {
        await drop();
        throw new HubError('http', `unexpected HTTP ${res.status} for a file download`, name);
      }
      if (!res.body) throw new HubError('hostile', 'the server sent no body', name);
      const fh = await openPart(part, have);
      try {
        await readBody(run, sent, have, async (chunk) => {
          if (have + chunk.length > size) throw new HubError('checksum', `the server sent more than the ${size} bytes the listing gives; nothing was installed`, name);
          try {
            await fh.write(chunk);
          } catch (e) {
            throw diskError(e, part);
          }
          hash.update(chunk);
          have += chunk.length;
          outcome.fetchedBytes += chunk.length;
          run.changed = true;
          progress('download', have);
        });
      } finally {
        await fh.close();
      }
    } catch (e) {
      if (run.signal.aborted) throw cancelledError(kept());
      if (e instanceof ResidualError) {
        if (e instanceof HubError && e.reason === 'checksum') await fs.promises.rm(part, { force: true });
        throw e;
      }
      if (e instanceof Stall) stalled = true;
      else broken = e;
    } finally {
      sent?.done();
    }
    if (have >= size) break;
    const host = sent ? new URL(sent.url).host : run.endpoint;
    const stallError = () =>
      new HubError(
        'stalled',
        `the transfer stalled: no data from ${host} for ${fmtSeconds(run.stallMs / 1000)} after ${have} of ${size} bytes (set HF_HUB_DOWNLOAD_TIMEOUT to wait longer); ${kept()}`,
        name,
      );
    // A stall that brought nothing new since the last try ends the download (each try costs the stall deadline).
    if (stalled && have === before) throw stallError();
    // The body ended early, the connection broke or stalled: resume from `have`, a few times in a row at most.
    // `retries` counts resumes in a row that brought nothing new; a connection that keeps making progress goes on.
    failures = have > before ? 1 : failures + 1;
    if (failures > run.retries || (broken === undefined && !stalled && have === before)) {
      if (stalled) throw stallError();
      const code = causeCode(broken) ?? 'the body ended early';
      throw new HubError('interrupted', `the connection to ${host} broke (${code}) after ${have} of ${size} bytes; ${kept()}`, name);
    }
    progress('download', have, true);
    try {
      await sleep(Math.min(250 * failures, 2000), undefined, { signal: run.signal });
    } catch {
      throw cancelledError(kept());
    }
  }
  return { digest: hash.digest(), hash, resumedFrom };
}

async function writeEmpty(part: string): Promise<void> {
  try {
    await fs.promises.writeFile(part, new Uint8Array(0));
  } catch (e) {
    throw diskError(e, part);
  }
}

async function openPart(part: string, have: number): Promise<fs.promises.FileHandle> {
  try {
    // Append after what is verified; `have` is exactly the part's size here (restart() truncates).
    const fh = await fs.promises.open(part, have === 0 ? 'w' : 'a');
    return fh;
  } catch (e) {
    throw diskError(e, part);
  }
}
