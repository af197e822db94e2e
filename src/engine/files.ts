/**
 * The file-system rules every reader and writer in Residual follows (issue 14):
 * - an input is checked to be a regular file (symlinks followed) before it is opened, so a FIFO never hangs a read
 *   and a folder is named as a folder;
 * - an output is written to a temporary file beside it and renamed over it, so a failed write leaves nothing, and a
 *   path that is a device, a FIFO or a folder is refused, never replaced;
 * - a file or folder being written holds a lock that names its holder, so two writers cannot interleave (see
 *   `acquireLock`: created whole, taken over atomically when its holder is gone).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResidualError } from './errors';

/** What a path is, in words (every file check names a FIFO, a socket or a device the same way). */
export function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFile()) return 'a regular file';
  return 'not a regular file';
}

/**
 * Checks that `file` exists and is (or links to) a regular file; returns its size. `what` names it in messages
 * (e.g. "tokenizer.json").
 */
export function checkInputFile(file: string, what = path.basename(file)): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      const dangling = (() => {
        try {
          return fs.lstatSync(file).isSymbolicLink();
        } catch {
          return false;
        }
      })();
      throw new ResidualError(dangling ? `${what} is a symbolic link to a file that does not exist (${fs.readlinkSync(file)})` : `${what} not found`, file, 'missing');
    }
    if (code === 'ELOOP') throw new ResidualError(`${what} is a symbolic link that loops`, file);
    if (code === 'EACCES') throw new ResidualError(`${what} cannot be read (permission denied)`, file);
    throw new ResidualError(`${what} cannot be read (${code ?? (e as Error).message})`, file);
  }
  if (!st.isFile()) throw new ResidualError(`${what} is ${kindOf(st)}, not a regular file`, file);
  return st.size;
}

/** Checks that `dir` exists and is (or links to) a folder. */
export function checkInputFolder(dir: string, what = 'folder'): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new ResidualError(`${what} not found`, dir, 'missing');
  }
  if (!st.isDirectory()) throw new ResidualError(`${what} is ${kindOf(st)}, not a folder`, dir);
}

/**
 * Checks that `file` may be written: a new path in an existing folder, or an existing regular file (to be replaced).
 * A device, FIFO, socket or folder is refused by name, never replaced.
 */
export function checkOutputFile(file: string, what = 'output'): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(file);
  } catch {
    st = undefined;
  }
  if (st?.isSymbolicLink()) {
    try {
      st = fs.statSync(file);
    } catch {
      throw new ResidualError(`${what} is a symbolic link to a missing target; give the real path`, file);
    }
  }
  if (st && !st.isFile()) throw new ResidualError(`${what} is ${kindOf(st)}: give the path of a regular file to write (it is never replaced)`, file);
  const dir = path.dirname(path.resolve(file));
  let dst: fs.Stats;
  try {
    dst = fs.statSync(dir);
  } catch {
    throw new ResidualError(`${what}'s folder ${dir} does not exist`, file, 'missing');
  }
  if (!dst.isDirectory()) throw new ResidualError(`${what}'s parent ${dir} is not a folder`, file);
}

/** This machine's name as it appears in file names: letters, digits, '-' and '_' (at most 64). */
export function hostTag(): string {
  return os.hostname().replace(/[^A-Za-z0-9-]/g, '_').slice(0, 64) || 'host';
}

/**
 * `<host>-<pid>`: names a temporary file or marker of this process, so a reader on a shared disk judges only its own
 * machine's ones by their process (a pid means nothing on another machine).
 */
export function processTag(): string {
  return `${hostTag()}-${process.pid}`;
}

/** Whether process `pid` runs on this machine (one we may not signal counts as running). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Writes `data` to `file` atomically: into a temporary file beside it, then renamed over it. On any failure the
 * temporary file is removed and `file` is as it was. A symlinked `file` is written through (its target is replaced).
 * The new file gets the replaced one's permissions (and, where allowed, its owner and group). Being a new file, it
 * is not the old one's inode: hard links to the old file keep the old content (inherent to an atomic replace).
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, what = 'output'): void {
  checkOutputFile(file, what);
  const target = fs.existsSync(file) ? fs.realpathSync(file) : path.resolve(file);
  let old: fs.Stats | undefined;
  try {
    old = fs.statSync(target);
  } catch {
    old = undefined; // a new file: default permissions
  }
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${processTag()}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  try {
    const fd = fs.openSync(tmp, 'wx', old ? old.mode & 0o777 : 0o666);
    try {
      if (old) {
        fs.fchmodSync(fd, old.mode & 0o777); // the mode given to open is cut by the umask
        try {
          const mine = fs.fstatSync(fd);
          if (old.uid !== mine.uid || old.gid !== mine.gid) fs.fchownSync(fd, old.uid, old.gid);
        } catch {
          // only root may give a file away: the new file is ours, with the old one's permissions
        }
      }
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    if (e instanceof ResidualError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new ResidualError(`cannot write ${what} (${code === 'ENOSPC' ? 'the disk is full' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (code ?? (e as Error).message)})`, file);
  }
}

/** Who holds a lock (written into the lock file). */
export interface LockHolder {
  pid: number;
  host: string;
  /** What it is doing, e.g. "residual download gpt2". */
  what: string;
  since: string;
  /** Random, unique to this hold: tells one hold from another of the same process. */
  token?: string;
}

export interface Lock {
  release(): void;
}

const LOCK_SUFFIX = '.residual-lock';
/** The lock inside a folder whose parent cannot be written (see `acquireLock`). */
export const FOLDER_LOCK_NAME = '.residual-folder-lock';
/** A lock file that does not parse and is older than this was left by a crash (see `acquireLock`). */
const UNPARSABLE_STALE_MS = 10_000;

/** The lock file that guards `target` (a file or a folder): beside it, named after it. */
export function lockPath(target: string): string {
  const abs = path.resolve(target);
  return path.join(path.dirname(abs), `.${path.basename(abs)}${LOCK_SUFFIX}`);
}

/** The lock inside folder `target`, used when its parent cannot be written (see `acquireLock`). */
export function folderLockPath(target: string): string {
  return path.join(path.resolve(target), FOLDER_LOCK_NAME);
}

/** Tokens of the locks this process holds, shared by every copy of this module loaded in the process. */
const HELD_KEY = Symbol.for('residual.files.heldLocks');
const held: Set<string> = ((globalThis as Record<symbol, unknown>)[HELD_KEY] as Set<string> | undefined) ?? new Set<string>();
(globalThis as Record<symbol, unknown>)[HELD_KEY] = held;

interface LockState {
  /** The file's text, exactly. */
  raw: string;
  holder?: LockHolder;
  /** Its holder is gone: a process of this machine that no longer runs, or a crash while it was written. */
  stale: boolean;
}

/** The lock file's state; undefined when there is none. */
function readLock(file: string): LockState | undefined {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (errCode(e) === 'ENOENT') return undefined;
    return { raw: '', stale: false }; // unreadable: someone's, judged busy
  }
  let holder: LockHolder | undefined;
  try {
    const h = JSON.parse(raw) as LockHolder;
    if (h && typeof h === 'object' && Number.isInteger(h.pid) && typeof h.host === 'string') holder = h;
  } catch {
    holder = undefined;
  }
  if (!holder) {
    let age = 0;
    try {
      age = Date.now() - fs.statSync(file).mtimeMs;
    } catch {
      return undefined;
    }
    return { raw, stale: age > UNPARSABLE_STALE_MS };
  }
  let stale = false;
  if (holder.host === os.hostname()) {
    // This process's own lock is stale when it no longer holds it (its release was undone by a failed takeover).
    stale = holder.pid === process.pid ? !!holder.token && !held.has(holder.token) : !processAlive(holder.pid);
  }
  return { raw, holder, stale };
}

/**
 * Creates `file` holding `content`, whole: written to a temporary file, then hard-linked to its name (a link fails
 * when the name exists, so only one process creates it). False when it exists. Where hard links are not supported it
 * is created with O_EXCL and then written (a crash in between leaves an unparsable lock: stale after 10 s).
 */
function createLockFile(file: string, content: string): boolean {
  const tmp = `${file}.${processTag()}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  try {
    fs.writeFileSync(tmp, content, { flag: 'wx' });
    try {
      fs.linkSync(tmp, file);
      return true;
    } catch (e) {
      const code = errCode(e);
      if (code === 'EEXIST') return false;
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
    }
    try {
      fs.writeFileSync(file, content, { flag: 'wx' });
      return true;
    } catch (e) {
      if (errCode(e) === 'EEXIST') return false;
      throw e;
    }
  } finally {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // not made, or gone
    }
  }
}

/**
 * Moves the stale lock `file` (text `staleRaw`) out of the way. A rename is atomic, so of the processes that judged
 * it stale only one moves it; the one that moved a different lock (another process took the stale one over first)
 * puts it back, with a hard link that fails rather than replace a lock made meanwhile.
 */
function takeOver(file: string, staleRaw: string): void {
  const aside = `${file}.${processTag()}.${crypto.randomBytes(4).toString('hex')}.stale`;
  try {
    fs.renameSync(file, aside);
  } catch (e) {
    if (errCode(e) === 'ENOENT') return; // already moved or released: try again to create it
    throw e;
  }
  let raw: string | undefined;
  try {
    raw = fs.readFileSync(aside, 'utf8');
  } catch {
    raw = undefined;
  }
  if (raw !== staleRaw) {
    try {
      fs.linkSync(aside, file);
    } catch (e) {
      // EEXIST: a third process made a lock in the instant the name was free; the moved one cannot come back.
      if (errCode(e) !== 'EEXIST' && !fs.existsSync(file)) fs.renameSync(aside, file);
    }
  }
  fs.rmSync(aside, { force: true });
}

function isFolder(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function busyError(target: string, file: string, state: LockState): ResidualError {
  const h = state.holder;
  const who = h ? `process ${h.pid} on ${h.host} (${h.what}, since ${h.since})` : `another process (lock file ${file})`;
  return new ResidualError(`is being written by ${who}; wait for it to finish, or delete ${file} if that process is gone`, target, 'invalid');
}

/**
 * Takes the lock on `target` for `what`, or throws a ResidualError naming the holder. Released by `release()` or when
 * the process exits.
 *
 * - The lock file (`lockPath`) is created whole (`createLockFile`), so a live holder's lock always parses; one that
 *   does not parse and is older than 10 s was left by a crash and is stale.
 * - A stale lock (its holder a process of this machine that no longer runs, or unparsable and old) is taken over
 *   (`takeOver`: renamed aside, so two processes never both take over the same lock), then created anew. A lock held
 *   from another machine is never judged: its holder is named.
 * - A folder whose parent cannot be written (`download --out /scratch` where `/` is read-only to the user) is locked
 *   from inside instead: `<folder>/.residual-folder-lock` (`folderLockPath`). Since another user may be able to
 *   write the parent, a folder's lock may be in either place: whoever creates one then looks at the other, and
 *   gives way (releasing its own) when a live lock is there, so two holders never coexist (both may give way).
 */
export function acquireLock(target: string, what: string): Lock {
  const abs = path.resolve(target);
  const beside = lockPath(abs);
  const inside = folderLockPath(abs);
  const token = crypto.randomBytes(8).toString('hex');
  const me: LockHolder = { pid: process.pid, host: os.hostname(), what, since: new Date().toISOString(), token };
  const content = JSON.stringify(me);
  let file = beside;
  for (let attempt = 0; attempt < 8; attempt++) {
    let created: boolean;
    try {
      created = createLockFile(file, content);
    } catch (e) {
      const code = errCode(e);
      if (file === beside && (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') && isFolder(abs)) {
        file = inside; // the parent cannot be written: lock from inside the folder
        continue;
      }
      throw new ResidualError(`cannot take the lock ${file} (${code ?? (e as Error).message})`, target);
    }
    if (created) {
      held.add(token);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        process.off('exit', release);
        try {
          // Only our own lock: one put in its place after a takeover is not ours to remove.
          if (fs.readFileSync(file, 'utf8') === content) fs.rmSync(file, { force: true });
        } catch {
          // already gone
        }
        held.delete(token);
      };
      process.on('exit', release);
      const other = file === beside ? inside : beside;
      const there = isFolder(abs) ? readLock(other) : undefined;
      if (there && !there.stale) {
        release();
        throw busyError(target, other, there);
      }
      return { release };
    }
    const state = readLock(file);
    if (!state) continue; // released meanwhile
    if (!state.stale) throw busyError(target, file, state);
    try {
      takeOver(file, state.raw);
    } catch (e) {
      throw new ResidualError(`cannot take over the stale lock ${file} (${errCode(e) ?? (e as Error).message})`, target);
    }
  }
  throw new ResidualError(`cannot take the lock ${file}: it keeps changing hands; try again`, target, 'invalid');
}
