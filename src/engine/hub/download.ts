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
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { listFiles, modelInfo } from '@huggingface/hub';
import { ResidualError, type CancelToken } from '../errors';
import { causeCode, diskError, HubError, httpError, offlineError, type ErrorContext } from './errors';
import { checkListEntry, checkRepoId, checkRepoPath, checkRevision, resolveInside, selectModelFiles, selectTranscoderFiles, type ListedFile } from './files';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

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

export interface DownloadOptions {
  /** Default: {@link resolveEndpoint}(). */
  endpoint?: string;
  /** Bearer token for gated or private repositories. */
  token?: string;
  signal?: AbortSignal;
  cancel?: CancelToken;
  onProgress?: (p: DownloadProgress) => void;
  /** Automatic resumes of one file after a broken or stalled connection that made no progress (default 3). */
  retries?: number;
  /** A connection that delivers nothing for this long counts as broken (default 60 s). */
  idleTimeoutMs?: number;
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

/** State shared by one run. */
interface Run {
  endpoint: string;
  token?: string;
  fetch: typeof fetch;
  signal: AbortSignal;
  retries: number;
  idleTimeoutMs: number;
  onProgress?: (p: DownloadProgress) => void;
  doneBytes: number;
  totalBytes: number;
  /** Whether anything on disk was written yet (for the offline message). */
  changed: boolean;
}

/** Downloads one source; see {@link downloadFromHub}. */
export function downloadRepo(source: HubSource, opts: DownloadOptions = {}): Promise<DownloadSummary> {
  return downloadFromHub([source], opts);
}

/**
 * Lists every source first (so progress knows the total), checks free disk space, then fetches the files one after
 * another. Verified files already in place are skipped; `.part` files are resumed. Throws a {@link HubError}.
 */
export async function downloadFromHub(sources: HubSource[], opts: DownloadOptions = {}): Promise<DownloadSummary> {
  const t0 = performance.now();
  const master = new AbortController();
  const unlink: (() => void)[] = [];
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
  const run: Run = {
    endpoint: resolveEndpoint(opts.endpoint),
    token: opts.token?.trim() || undefined,
    fetch: opts.fetch ?? fetch,
    signal: master.signal,
    retries: opts.retries ?? 3,
    idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
    onProgress: opts.onProgress,
    doneBytes: 0,
    totalBytes: 0,
    changed: false,
  };
  try {
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
    for (const f of unlink) f();
  }
}

function checkAbort(run: Run, what?: string): void {
  if (run.signal.aborted) throw cancelledError(what);
}

function cancelledError(detail?: string): ResidualError {
  return new HubError('cancelled', `download cancelled${detail ? `; ${detail}` : ''}`);
}

/** The fetch handed to `@huggingface/hub`: adds the token and the abort signal and turns failures into HubErrors. */
function libraryFetch(run: Run, ctx: ErrorContext, file?: string): typeof fetch {
  return async (input, init) => {
    const headers = new Headers(init?.headers);
    // Set here rather than through the library's accessToken, which rejects tokens not starting with "hf_" (mirrors
    // may issue others).
    if (run.token) headers.set('Authorization', `Bearer ${run.token}`);
    let res: Response;
    try {
      res = await run.fetch(input, { ...init, headers, signal: run.signal });
    } catch (e) {
      throw run.signal.aborted ? cancelledError() : offlineError(e, run.endpoint, run.changed);
    }
    if (!res.ok) throw await httpError(res, ctx, file);
    return res;
  };
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
    const info = await modelInfo({ name: repo, revision, additionalFields: ['sha'], hubUrl: run.endpoint, fetch: libraryFetch(run, ctx) });
    // Pin to the commit so files (and resumes) cannot mix two versions; a mirror without `sha` keeps the revision.
    if (typeof info.sha === 'string' && /^[0-9a-f]{40}$/.test(info.sha)) commit = info.sha;
    for await (const e of listFiles({ repo, revision: commit, path: subfolder, recursive: true, hubUrl: run.endpoint, fetch: libraryFetch(run, { ...ctx }, subfolder) })) {
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
    const headers: Record<string, string> = { 'Accept-Encoding': 'identity' };
    if (have > 0) headers.Range = `bytes=${have}-`;
    if (run.token) headers.Authorization = `Bearer ${run.token}`;
    const req = new AbortController();
    let stalled = false;
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ((stalled = true), req.abort()), run.idleTimeoutMs);
    };
    const onAbort = () => req.abort();
    run.signal.addEventListener('abort', onAbort, { once: true });
    const before = have;
    let broken: unknown;
    try {
      arm();
      let res: Response;
      try {
        res = await run.fetch(p.url, { headers, signal: req.signal, redirect: 'follow' });
      } catch (e) {
        if (run.signal.aborted) throw cancelledError(kept());
        if (stalled) throw Object.assign(new Error('no answer'), { code: 'stalled' });
        throw offlineError(e, run.endpoint, run.changed || have > 0);
      }
      if (res.status === 416 && have > 0) {
        // The range starts past the server's end: this `.part` belongs to another version.
        await res.body?.cancel();
        await restart();
        continue;
      }
      if (!res.ok) throw await httpError(res, p.ctx, p.file.path);
      if (have > 0 && res.status === 200) {
        // The server ignored Range and sends the whole file: take it from byte 0.
        await restart();
      } else if (res.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        if (m && m[3] !== '*' && Number(m[3]) !== size) {
          await res.body?.cancel();
          throw new HubError('checksum', `the server's file has ${m[3]} bytes but the listing says ${size}; nothing was installed`, name);
        }
        if (!m || Number(m[1]) !== have) {
          // Not the range asked for: ask again for the whole file.
          await res.body?.cancel();
          if (outcome.restarts >= 3) throw new HubError('hostile', `the server keeps answering the wrong byte range (${res.headers.get('content-range')})`, name);
          await restart();
          continue;
        }
      } else if (res.status !== 200) {
        await res.body?.cancel();
        throw new HubError('http', `unexpected HTTP ${res.status} for a file download`, name);
      }
      if (!res.body) throw new HubError('hostile', 'the server sent no body', name);
      const fh = await openPart(part, have);
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          arm();
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
        }
      } finally {
        await fh.close();
      }
    } catch (e) {
      if (run.signal.aborted) throw cancelledError(kept());
      if (e instanceof ResidualError) {
        if (e instanceof HubError && e.reason === 'checksum') await fs.promises.rm(part, { force: true });
        throw e;
      }
      broken = e;
    } finally {
      clearTimeout(idle);
      run.signal.removeEventListener('abort', onAbort);
    }
    if (have >= size) break;
    // The body ended early, the connection broke or stalled: resume from `have`, a few times in a row at most.
    // `retries` counts resumes in a row that brought nothing new; a connection that keeps making progress goes on.
    failures = have > before ? 1 : failures + 1;
    if (failures > run.retries || (broken === undefined && have === before)) {
      const code = stalled ? `no data for ${(run.idleTimeoutMs / 1000).toFixed(0)} s` : (causeCode(broken) ?? 'the body ended early');
      throw new HubError('interrupted', `the connection to ${run.endpoint} broke (${code}) after ${have} of ${size} bytes; ${kept()}`, name);
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
