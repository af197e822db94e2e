/**
 * Residual's cache (issue 14, class 5). Two kinds of entries live under one root folder:
 *
 *   <root>/onnx/<24 hex>/                 an ONNX graph (model.onnx) beside hard links to the weights it reads
 *   <root>/half/half-<20 hex>.safetensors  a float16 copy of a checkpoint's weights
 *
 * Beside each entry `E`: `E.entry.json`, its record (which source files it was made from, by path, device, inode,
 * size and mtime; its mtime is the entry's last use), and `E.in-use-<host>-<pid>`, one marker per process using it
 * (`E.in-use-<pid>` from older versions). Leftovers of interrupted writes are named after the entry or its record:
 * `E.tmp-<host>-<pid>`, `E.entry.json.tmp-<host>-<pid>`, `.E.<host>-<pid>.<hex>.tmp` (without `<host>-` from older
 * writers), and `.E.removing-<host>-<pid>` is an entry being removed.
 *
 * - An entry is checked before it is reused (by its maker: session.ts, half-copy.ts); a damaged one is rebuilt.
 * - An entry whose source file was deleted or replaced is removed, so a hard link never keeps a deleted model's
 *   bytes on disk; so is an entry without a record (left by an older version or a crash).
 * - The cache is kept under a size limit (`cacheLimitBytes`), least recently used entries removed first.
 * - An entry in use (a live marker: a session or model of a running process) is never removed, nor is a live marker
 *   (see `removeEntry`). A marker, temporary file or entry being removed is judged by its process only when it names
 *   this machine; another machine's (a shared cache) is live, or for temporary files stale after an hour, as is one
 *   that names no machine.
 * - Only names of the shapes above (`onnx/` and `half/` entries and the files named after them) are ever removed: a
 *   cache folder pointed at the wrong place loses nothing else.
 * - Nothing waits: a kind folder another process is pruning is skipped (`PruneReport.skipped`), and marking an entry
 *   in use takes no lock.
 *
 * The root: the caller's `cacheDir`, else what the host set (`setDefaultCacheDir`: the extension's global storage),
 * else $RESIDUAL_CACHE_DIR, else $XDG_CACHE_HOME/residual or ~/.cache/residual (%LOCALAPPDATA%\residual\cache on
 * Windows).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResidualError } from './errors';
import { acquireLock, hostTag, processAlive, processTag, type Lock } from './files';
import { formatBytes } from './memory';

/** Sizes in messages: memory.ts's one way (re-exported for the host's Clear Cache message). */
export { formatBytes } from './memory';

export const CACHE_DIR_ENV = 'RESIDUAL_CACHE_DIR';
export const CACHE_LIMIT_ENV = 'RESIDUAL_CACHE_LIMIT_GB';
/** The default size limit of the cache: 20 GiB (the float16 copy of a 7B model is ~14 GB). */
export const DEFAULT_CACHE_LIMIT_BYTES = 20e9;

export const ONNX_KIND = 'onnx';
export const HALF_KIND = 'half';
const ENTRY_NAME: Record<string, RegExp> = {
  [ONNX_KIND]: /^[0-9a-f]{24}$/,
  [HALF_KIND]: /^half-[0-9a-f]{20}\.safetensors$/,
};
const RECORD_SUFFIX = '.entry.json';
/** `<host>-<pid>` (the host as in `hostTag`), or `<pid>` alone from older writers. */
const OWNER = '(?:([A-Za-z0-9_-]+)-)?(\\d+)';
/** `<entry>.in-use-<owner>`. */
const MARKER = new RegExp(`^(.+)\\.in-use-${OWNER}$`);
/** Leftovers named after an entry or its record (group 1): `<name>.tmp-<owner>` (safetensors, records),
 * `.<name>.<owner>.<hex>.tmp` (files.ts's atomic writes), `.<name>.removing-<owner>` (an entry being removed). */
const LEFTOVERS = [new RegExp(`^(.+)\\.tmp-${OWNER}$`), new RegExp(`^\\.(.+)\\.${OWNER}\\.[0-9a-f]+\\.tmp$`), new RegExp(`^\\.(.+)\\.removing-${OWNER}$`)];
const TMP_MAX_AGE_MS = 3600_000;
/** Entries without a record younger than this may be being made by an older Residual: left alone by pruning. */
const UNRECORDED_GRACE_MS = 600_000;

let hostDefault: string | undefined;

/** The host (the extension) sets its own cache folder; the engine then uses it wherever a caller gives none. */
export function setDefaultCacheDir(dir: string | undefined): void {
  hostDefault = dir;
}

/** The cache root used when a caller gives none (see the module comment). */
export function defaultCacheDir(): string {
  if (hostDefault) return hostDefault;
  const env = process.env[CACHE_DIR_ENV]?.trim();
  if (env) return path.resolve(env);
  if (process.platform === 'win32' && process.env.LOCALAPPDATA) return path.join(process.env.LOCALAPPDATA, 'residual', 'cache');
  const xdg = process.env.XDG_CACHE_HOME?.trim();
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'residual');
  return path.join(os.homedir(), '.cache', 'residual');
}

/** The size limit: $RESIDUAL_CACHE_LIMIT_GB (GB, as sizes are shown; may be fractional; 0 keeps only what is in use), else 20 GB. */
export function cacheLimitBytes(): number {
  const raw = process.env[CACHE_LIMIT_ENV]?.trim();
  if (!raw) return DEFAULT_CACHE_LIMIT_BYTES;
  const gb = Number(raw);
  if (!/^[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?$/.test(raw) || !Number.isFinite(gb) || gb < 0) {
    throw new ResidualError(`must be a number of GB (0 or more), got ${JSON.stringify(raw)}`, CACHE_LIMIT_ENV);
  }
  return Math.floor(gb * 1e9);
}

// ── Entries in use ────────────────────────────────────────────────────────────────────────────────────────────────

/** Entries this process uses → how many users (sessions, models). */
const inProcess = new Map<string, number>();
let exitHook = false;

function markerPath(entry: string): string {
  return `${entry}.in-use-${processTag()}`;
}

/**
 * Takes the lock of a kind folder (the lock file sits beside it) if it is free; undefined when another process
 * holds it (or it cannot be taken). Never waits: the extension host must not block.
 */
function lockKind(kindDir: string): Lock | undefined {
  try {
    return acquireLock(kindDir, 'residual cache');
  } catch {
    return undefined;
  }
}

/**
 * Marks `entry` in use by this process until the returned function is called (or the process exits): pruning and
 * Clear Cache, in any process, leave it alone. Call before checking or making the entry, so it cannot be removed
 * in between. Takes no lock: a pruner looks for live markers again after moving an entry aside, and puts it back
 * when one appeared (`removeEntry`).
 */
export function useEntry(entry: string): () => void {
  const n = inProcess.get(entry) ?? 0;
  inProcess.set(entry, n + 1);
  if (n === 0) {
    try {
      fs.mkdirSync(path.dirname(entry), { recursive: true });
      fs.writeFileSync(markerPath(entry), JSON.stringify({ pid: process.pid, host: os.hostname(), since: new Date().toISOString() }));
    } catch {
      // An unwritable cache: the caller's own writes fail and say so. Within this process the entry is protected.
    }
  }
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const e of inProcess.keys()) removeQuietly(markerPath(e));
    });
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const left = (inProcess.get(entry) ?? 1) - 1;
    if (left > 0) {
      inProcess.set(entry, left);
      return;
    }
    inProcess.delete(entry);
    removeQuietly(markerPath(entry));
  };
}

function removeQuietly(p: string): void {
  try {
    fs.rmSync(p, { force: true });
  } catch {
    // nothing to remove, or a folder we cannot write: nothing left by us either
  }
}

/**
 * Whether a marker's process still runs: `host` is the host in its name (undefined in an older marker's, whose
 * text may name it). A marker from another machine counts as live.
 */
function markerLive(file: string, host: string | undefined, pid: number): boolean {
  if (host !== undefined) return host !== hostTag() || pid === process.pid || processAlive(pid);
  if (pid === process.pid) return true;
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as { host?: string };
    if (m.host && m.host !== os.hostname()) return true;
  } catch {
    // unreadable: judge by the pid
  }
  return processAlive(pid);
}

/** The live markers of entry `name` in `kindDir` (this process's use counts), read now. */
function liveMarkers(kindDir: string, name: string): string[] {
  const live: string[] = [];
  if (inProcess.has(path.join(kindDir, name))) live.push(markerPath(path.join(kindDir, name)));
  for (const n of safeReaddir(kindDir)) {
    const m = MARKER.exec(n);
    if (m && m[1] === name && markerLive(path.join(kindDir, n), m[2], Number(m[3]))) live.push(path.join(kindDir, n));
  }
  return live;
}

/**
 * Whether a leftover (temporary file, entry being removed) of `host`/`pid`, last changed `ageMs` ago, is stale:
 * one of this machine's when its process is gone (or, except for Clear Cache, after an hour); another machine's, or
 * one naming no machine, only after an hour.
 */
function leftoverStale(host: string | undefined, pid: number, ageMs: number, all: boolean): boolean {
  if (host === hostTag()) return (pid !== process.pid && !processAlive(pid)) || (!all && ageMs > TMP_MAX_AGE_MS);
  return ageMs > TMP_MAX_AGE_MS;
}

// ── Records ───────────────────────────────────────────────────────────────────────────────────────────────────────

export interface SourceRecord {
  /** Real path (symlinks resolved) of a file the entry was made from. */
  path: string;
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

interface EntryRecord {
  format: 'residual-cache-entry/1';
  key: string;
  created: string;
  sources: SourceRecord[];
}

/** Identity of a source file now (its real path, device, inode, size, mtime). */
export function sourceRecord(file: string): SourceRecord {
  const real = fs.realpathSync(file);
  const st = fs.statSync(real);
  return { path: real, dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
}

/** Why a recorded source no longer matches the file at its path; undefined when it does. */
function sourceChanged(s: SourceRecord): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(s.path);
  } catch {
    return `its source ${s.path} was deleted`;
  }
  if (st.dev !== s.dev || st.ino !== s.ino || st.size !== s.size || st.mtimeMs !== s.mtimeMs) return `its source ${s.path} was replaced or changed`;
  return undefined;
}

function readRecord(entry: string): EntryRecord | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(entry + RECORD_SUFFIX, 'utf8')) as EntryRecord;
    return r && r.format === 'residual-cache-entry/1' && Array.isArray(r.sources) ? r : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Records what `entry` was made from (written when missing or different) and marks it used now (the record's mtime
 * is the entry's last use). Best effort: an entry left without a record is removed by a later pruning, never reused
 * wrongly (its maker checks it before each use).
 */
export function recordEntry(entry: string, key: string, sources: SourceRecord[]): void {
  const file = entry + RECORD_SUFFIX;
  const tmp = `${file}.tmp-${processTag()}`;
  try {
    const old = readRecord(entry);
    const same = old && old.key === key && JSON.stringify(old.sources) === JSON.stringify(sources);
    if (!same) {
      const rec: EntryRecord = { format: 'residual-cache-entry/1', key, created: new Date().toISOString(), sources };
      fs.writeFileSync(tmp, JSON.stringify(rec, null, 1));
      fs.renameSync(tmp, file);
    } else {
      const now = new Date();
      fs.utimesSync(file, now, now);
    }
  } catch {
    removeQuietly(tmp);
  }
}

// ── Pruning ───────────────────────────────────────────────────────────────────────────────────────────────────────

export interface RemovedEntry {
  path: string;
  reason: string;
}

export interface PruneReport {
  /** Entries removed, with why. */
  removed: RemovedEntry[];
  /** Entries kept because a running process uses them. */
  inUse: string[];
  /** Kind folders not pruned because another process was pruning them (nothing waits for it). */
  skipped: string[];
  /** Bytes the removals freed (files whose last link was in the cache). */
  freedBytes: number;
  /** Bytes the cache still holds on disk (hard links to live weights files count nothing). */
  totalBytes: number;
}

interface FileInfo {
  id: string;
  size: number;
  nlink: number;
}

interface Scanned {
  kindDir: string;
  name: string;
  path: string;
  inUse: boolean;
  record?: EntryRecord;
  lastUsed: number;
  files: FileInfo[];
}

function fileInfo(st: fs.Stats): FileInfo {
  return { id: `${st.dev}:${st.ino}`, size: st.size, nlink: st.nlink };
}

function entryFiles(p: string): FileInfo[] {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return [];
  }
  if (!st.isDirectory()) return st.isFile() ? [fileInfo(st)] : [];
  const out: FileInfo[] = [];
  for (const n of safeReaddir(p)) {
    try {
      const s = fs.lstatSync(path.join(p, n));
      if (s.isFile()) out.push(fileInfo(s));
    } catch {
      // vanished
    }
  }
  return out;
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Puts a moved-aside entry or record back, unless something new was made at its name meanwhile. */
function restore(aside: string, to: string): void {
  try {
    if (fs.lstatSync(aside).isDirectory()) {
      fs.renameSync(aside, to); // fails onto a folder with files: a new entry
    } else {
      try {
        fs.linkSync(aside, to); // fails onto an existing file: a new entry
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST' || fs.existsSync(to)) throw e;
        fs.renameSync(aside, to); // a file system without hard links
      }
    }
  } catch {
    // gone, or a new one in its place: the new one stays
  }
  fs.rmSync(aside, { recursive: true, force: true });
}

/**
 * Removes an entry and its record unless it is in use; false when it is (a live marker, looked for right before).
 * Markers are written without a lock (`useEntry`), so one may appear after that look: the entry is moved aside (a
 * rename: at once), the markers looked for again, and the entry put back when one appeared. A process that marks
 * the entry after the second look then finds it missing and makes it again. Only dead markers are removed.
 */
function removeEntry(e: Scanned): boolean {
  if (liveMarkers(e.kindDir, e.name).length) return false;
  const record = e.path + RECORD_SUFFIX;
  const aside = path.join(e.kindDir, `.${e.name}.removing-${processTag()}`);
  const recordAside = path.join(e.kindDir, `.${e.name}${RECORD_SUFFIX}.removing-${processTag()}`);
  let moved = false;
  try {
    fs.renameSync(e.path, aside);
    moved = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  let recordMoved = false;
  try {
    fs.renameSync(record, recordAside);
    recordMoved = true;
  } catch {
    // no record
  }
  if (liveMarkers(e.kindDir, e.name).length) {
    if (moved) restore(aside, e.path);
    if (recordMoved) restore(recordAside, record);
    return false;
  }
  fs.rmSync(aside, { recursive: true, force: true });
  fs.rmSync(recordAside, { force: true });
  for (const n of safeReaddir(e.kindDir)) {
    const m = MARKER.exec(n);
    const file = path.join(e.kindDir, n);
    if (m && m[1] === e.name && !markerLive(file, m[2], Number(m[3]))) fs.rmSync(file, { force: true });
  }
  return true;
}

export interface PruneOptions {
  /** Bytes to keep the cache under (default `cacheLimitBytes()`). */
  limit?: number;
  log?: (message: string) => void;
  /** Clear Cache: remove every entry not in use, records or not, and every leftover temporary file. */
  all?: boolean;
}

/**
 * Removes stale entries (source deleted or replaced, no record, leftovers of interrupted writes), then the least
 * recently used ones until the cache is under the limit. Entries in use are kept. Each kind folder is locked while
 * it is pruned; a folder another process is pruning is skipped.
 */
export function pruneCache(root: string, opts: PruneOptions = {}): PruneReport {
  const limit = opts.limit ?? cacheLimitBytes();
  const log = opts.log ?? (() => undefined);
  const report: PruneReport = { removed: [], inUse: [], skipped: [], freedBytes: 0, totalBytes: 0 };
  const locks: Lock[] = [];
  try {
    const entries: Scanned[] = [];
    for (const kind of [HALF_KIND, ONNX_KIND]) {
      const kindDir = path.join(root, kind);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(kindDir);
      } catch {
        continue;
      }
      if (!st.isDirectory()) continue;
      const lock = lockKind(kindDir);
      if (!lock) {
        report.skipped.push(kindDir);
        log(`cache: ${kindDir} is being pruned by another process; skipped`);
        continue;
      }
      locks.push(lock);
      entries.push(...scanKind(kindDir, kind, !!opts.all));
    }
    const now = Date.now();

    // Inode accounting: a file costs disk space only when every link to it is in the cache.
    const count = new Map<string, number>();
    for (const e of entries) for (const f of e.files) count.set(f.id, (count.get(f.id) ?? 0) + 1);
    const counted = new Map<string, number>();
    for (const e of entries) for (const f of e.files) if (f.nlink <= (count.get(f.id) ?? 0)) counted.set(f.id, f.size);
    let total = [...counted.values()].reduce((a, b) => a + b, 0);
    const drop = (e: Scanned) => {
      for (const f of e.files) {
        const left = (count.get(f.id) ?? 1) - 1;
        count.set(f.id, left);
        if (left === 0 && counted.has(f.id)) {
          total -= counted.get(f.id)!;
          report.freedBytes += counted.get(f.id)!;
        }
      }
    };
    const gone = new Set<string>();
    const remove = (e: Scanned, reason: string) => {
      try {
        if (!removeEntry(e)) {
          e.inUse = true;
          report.inUse.push(e.path);
          log(`cache: kept ${e.path} (a process started using it)`);
          return;
        }
      } catch (err) {
        log(`cache: cannot remove ${e.path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); left as it is`);
        return;
      }
      report.removed.push({ path: e.path, reason });
      log(`cache: removed ${e.path} (${reason})`);
      drop(e);
      gone.add(e.path);
    };

    const kept: Scanned[] = [];
    for (const e of entries) {
      if (e.inUse) {
        report.inUse.push(e.path);
        kept.push(e);
        continue;
      }
      let reason: string | undefined;
      if (opts.all) reason = 'Clear Cache';
      else if (!e.record) reason = now - e.lastUsed > UNRECORDED_GRACE_MS ? 'no record of what it was made from' : undefined;
      else for (const s of e.record.sources) reason ??= sourceChanged(s);
      if (reason) remove(e, reason);
      else kept.push(e);
    }
    // Least recently used first, until under the limit.
    const candidates = kept.filter((e) => !e.inUse).sort((a, b) => a.lastUsed - b.lastUsed);
    for (const e of candidates) {
      if (total <= limit) break;
      remove(e, `least recently used; the cache is over its ${formatBytes(limit)} limit`);
    }
    // A graph made from a float16 copy that is now gone is stale too.
    for (const e of kept) {
      if (e.inUse || gone.has(e.path)) continue;
      const from = e.record?.sources.find((s) => gone.has(s.path));
      if (from) remove(e, `its source ${from.path} was removed`);
    }
    report.totalBytes = total;
    return report;
  } finally {
    for (const l of locks.reverse()) l.release();
  }
}

/** Lists a kind folder's entries; removes leftovers (dead markers, orphan records, stale temporary files). */
function scanKind(kindDir: string, kind: string, all: boolean): Scanned[] {
  const names = safeReaddir(kindDir);
  const isEntry = ENTRY_NAME[kind];
  const namedAfterEntry = (n: string) => isEntry.test(n) || (n.endsWith(RECORD_SUFFIX) && isEntry.test(n.slice(0, -RECORD_SUFFIX.length)));
  const entries = new Map<string, Scanned>();
  for (const name of names) {
    if (!isEntry.test(name)) continue;
    const p = path.join(kindDir, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      continue;
    }
    if (kind === ONNX_KIND ? !st.isDirectory() : !st.isFile()) continue;
    const record = readRecord(p);
    let lastUsed = st.mtimeMs;
    try {
      lastUsed = fs.statSync(p + RECORD_SUFFIX).mtimeMs;
    } catch {
      // no record: the entry's own mtime
    }
    entries.set(name, { kindDir, name, path: p, inUse: inProcess.has(p), record, lastUsed, files: entryFiles(p) });
  }
  for (const name of names) {
    const file = path.join(kindDir, name);
    const marker = MARKER.exec(name);
    if (marker && isEntry.test(marker[1])) {
      // A live marker protects its entry (or one about to be made); a dead process's marker is removed.
      const owner = entries.get(marker[1]);
      if (!markerLive(file, marker[2], Number(marker[3]))) fs.rmSync(file, { force: true });
      else if (owner) owner.inUse = true;
      continue;
    }
    if (name.endsWith(RECORD_SUFFIX)) {
      if (!entries.has(name.slice(0, -RECORD_SUFFIX.length)) && isEntry.test(name.slice(0, -RECORD_SUFFIX.length))) fs.rmSync(file, { force: true });
      continue;
    }
    for (const re of LEFTOVERS) {
      const m = re.exec(name);
      if (!m || !namedAfterEntry(m[1])) continue;
      try {
        if (leftoverStale(m[2], Number(m[3]), Date.now() - fs.lstatSync(file).mtimeMs, all)) fs.rmSync(file, { recursive: true, force: true });
      } catch {
        // vanished
      }
      break;
    }
  }
  return [...entries.values()];
}

/** Clear Cache: removes every entry no running process uses. */
export function clearCache(root: string, log?: (message: string) => void): PruneReport {
  return pruneCache(root, { limit: 0, all: true, log });
}

// ── Throttled pruning after a session or copy is made ────────────────────────────────────────────────────────────

const lastPrune = new Map<string, number>();
const PRUNE_INTERVAL_MS = 60_000;

/**
 * Prunes `root` when something new was written into it, or when it was not pruned in the last minute. Never throws:
 * a failed pruning is logged and the cache is left as it is.
 */
export function maybePrune(root: string, wrote: boolean, log: (m: string) => void = () => undefined): void {
  const last = lastPrune.get(root) ?? 0;
  if (!wrote && Date.now() - last < PRUNE_INTERVAL_MS) return;
  lastPrune.set(root, Date.now());
  try {
    const r = pruneCache(root, { log });
    if (r.removed.length) log(`cache ${root}: ${r.removed.length} entries removed, ${formatBytes(r.freedBytes)} freed; ${formatBytes(r.totalBytes)} kept`);
  } catch (e) {
    log(`cache ${root}: not pruned (${(e as Error).message})`);
  }
}
