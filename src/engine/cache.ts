/**
 * Residual's cache (issue 14, class 5). Two kinds of entries live under one root folder:
 *
 *   <root>/onnx/<24 hex>/                 an ONNX graph (model.onnx) beside hard links to the weights it reads
 *   <root>/half/half-<20 hex>.safetensors  a float16 copy of a checkpoint's weights
 *
 * Beside each entry `E`: `E.entry.json`, its record (which source files it was made from, by path, device, inode,
 * size and mtime; its mtime is the entry's last use), and `E.in-use-<pid>`, one marker per process using it.
 *
 * - An entry is checked before it is reused (by its maker: session.ts, half-copy.ts); a damaged one is rebuilt.
 * - An entry whose source file was deleted or replaced is removed, so a hard link never keeps a deleted model's
 *   bytes on disk; so is an entry without a record (left by an older version or a crash).
 * - The cache is kept under a size limit (`cacheLimitBytes`), least recently used entries removed first.
 * - An entry in use (a live marker: a session or model of a running process) is never removed.
 * - Only names of the shapes above are ever removed: a cache folder pointed at the wrong place loses nothing else.
 *
 * The root: the caller's `cacheDir`, else what the host set (`setDefaultCacheDir`: the extension's global storage),
 * else $RESIDUAL_CACHE_DIR, else $XDG_CACHE_HOME/residual or ~/.cache/residual (%LOCALAPPDATA%\residual\cache on
 * Windows).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResidualError } from './errors';
import { acquireLock, type Lock } from './files';

export const CACHE_DIR_ENV = 'RESIDUAL_CACHE_DIR';
export const CACHE_LIMIT_ENV = 'RESIDUAL_CACHE_LIMIT_GB';
/** The default size limit of the cache: 20 GiB (the float16 copy of a 7B model is ~14 GB). */
export const DEFAULT_CACHE_LIMIT_BYTES = 20 * 2 ** 30;

export const ONNX_KIND = 'onnx';
export const HALF_KIND = 'half';
const ENTRY_NAME: Record<string, RegExp> = {
  [ONNX_KIND]: /^[0-9a-f]{24}$/,
  [HALF_KIND]: /^half-[0-9a-f]{20}\.safetensors$/,
};
const RECORD_SUFFIX = '.entry.json';
const MARKER = /\.in-use-(\d+)$/;
/** Temporary files of an interrupted write: `<name>.tmp-<pid>` (safetensors) or `.<name>.<pid>.<hex>.tmp` (atomic writes). */
const TMP = /(\.tmp-(\d+)$)|(^\..*\.(\d+)\.[0-9a-f]+\.tmp$)/;
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

/** The size limit: $RESIDUAL_CACHE_LIMIT_GB (GiB, may be fractional; 0 keeps only what is in use), else 20 GiB. */
export function cacheLimitBytes(): number {
  const raw = process.env[CACHE_LIMIT_ENV]?.trim();
  if (!raw) return DEFAULT_CACHE_LIMIT_BYTES;
  const gb = Number(raw);
  if (!/^[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?$/.test(raw) || !Number.isFinite(gb) || gb < 0) {
    throw new ResidualError(`must be a number of GiB (0 or more), got ${JSON.stringify(raw)}`, CACHE_LIMIT_ENV);
  }
  return Math.floor(gb * 2 ** 30);
}

// ── Entries in use ────────────────────────────────────────────────────────────────────────────────────────────────

/** Entries this process uses → how many users (sessions, models). */
const inProcess = new Map<string, number>();
let exitHook = false;

function markerPath(entry: string, pid = process.pid): string {
  return `${entry}.in-use-${pid}`;
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Takes the lock of a kind folder (the lock file sits beside it), waiting up to `waitMs` for another process's
 * short hold; undefined when it cannot be had.
 */
function lockKind(kindDir: string, waitMs: number): Lock | undefined {
  const until = Date.now() + waitMs;
  for (;;) {
    try {
      return acquireLock(kindDir, 'residual cache');
    } catch (e) {
      if (!(e instanceof ResidualError) || !/is being written by/.test(e.message) || Date.now() >= until) return undefined;
      sleep(25);
    }
  }
}

/**
 * Marks `entry` in use by this process until the returned function is called (or the process exits): pruning and
 * Clear Cache, in any process, leave it alone. Call before checking or making the entry, so it cannot be removed
 * in between.
 */
export function useEntry(entry: string): () => void {
  const n = inProcess.get(entry) ?? 0;
  inProcess.set(entry, n + 1);
  if (n === 0) {
    const kindDir = path.dirname(entry);
    let lock: Lock | undefined;
    try {
      fs.mkdirSync(kindDir, { recursive: true });
      lock = lockKind(kindDir, 5000);
      fs.writeFileSync(markerPath(entry), JSON.stringify({ pid: process.pid, host: os.hostname(), since: new Date().toISOString() }));
    } catch {
      // An unwritable cache: the caller's own writes fail and say so. Within this process the entry is protected.
    } finally {
      lock?.release();
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether a marker's process still runs (a marker from another machine counts as live). */
function markerLive(file: string, pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as { host?: string };
    if (m.host && m.host !== os.hostname()) return true;
  } catch {
    // unreadable: judge by the pid
  }
  return alive(pid);
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
  const tmp = `${file}.tmp-${process.pid}`;
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

function removeEntry(e: Scanned): void {
  fs.rmSync(e.path, { recursive: true, force: true });
  fs.rmSync(e.path + RECORD_SUFFIX, { force: true });
  for (const n of safeReaddir(e.kindDir)) if (n.startsWith(`${e.name}.in-use-`)) fs.rmSync(path.join(e.kindDir, n), { force: true });
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
  const report: PruneReport = { removed: [], inUse: [], freedBytes: 0, totalBytes: 0 };
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
      const lock = lockKind(kindDir, opts.all ? 5000 : 0);
      if (!lock) {
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
        removeEntry(e);
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

/** Lists a kind folder's entries; removes leftovers (dead markers, orphan records, old temporary files). */
function scanKind(kindDir: string, kind: string, all: boolean): Scanned[] {
  const names = safeReaddir(kindDir);
  const isEntry = ENTRY_NAME[kind];
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
    if (marker) {
      // A live marker protects its entry (or one about to be made); a dead process's marker is removed.
      const owner = entries.get(name.slice(0, marker.index));
      if (!markerLive(file, Number(marker[1]))) fs.rmSync(file, { force: true });
      else if (owner) owner.inUse = true;
      continue;
    }
    if (name.endsWith(RECORD_SUFFIX)) {
      if (!entries.has(name.slice(0, -RECORD_SUFFIX.length)) && isEntry.test(name.slice(0, -RECORD_SUFFIX.length))) fs.rmSync(file, { force: true });
      continue;
    }
    const tmp = TMP.exec(name);
    if (tmp) {
      const pid = Number(tmp[2] ?? tmp[4]);
      try {
        const age = Date.now() - fs.lstatSync(file).mtimeMs;
        if ((pid !== process.pid && !alive(pid)) || (!all && age > TMP_MAX_AGE_MS)) fs.rmSync(file, { force: true });
      } catch {
        // vanished
      }
    }
  }
  return [...entries.values()];
}

/** Clear Cache: removes every entry no running process uses. */
export function clearCache(root: string, log?: (message: string) => void): PruneReport {
  return pruneCache(root, { limit: 0, all: true, log });
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return 'unlimited';
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(n >= 10 * 2 ** 30 ? 0 : 1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
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
