/**
 * The file-system rules every reader and writer in Residual follows (issue 14):
 * - an input is checked to be a regular file (symlinks followed) before it is opened, so a FIFO never hangs a read
 *   and a folder is named as a folder;
 * - an output is written to a temporary file beside it and renamed over it, so a failed write leaves nothing, and a
 *   path that is a device, a FIFO or a folder is refused, never replaced;
 * - a file or folder being written holds a lock that names its holder, so two writers cannot interleave.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResidualError } from './errors';

/** What a non-regular path is, in words. */
function kindOf(st: fs.Stats): string {
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

/**
 * Writes `data` to `file` atomically: into a temporary file beside it, then renamed over it. On any failure the
 * temporary file is removed and `file` is as it was. A symlinked `file` is written through (its target is replaced).
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, what = 'output'): void {
  checkOutputFile(file, what);
  const target = fs.existsSync(file) ? fs.realpathSync(file) : path.resolve(file);
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  try {
    const fd = fs.openSync(tmp, 'wx');
    try {
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
}

export interface Lock {
  release(): void;
}

const LOCK_SUFFIX = '.residual-lock';

/** The lock file that guards `target` (a file or a folder): beside it, named after it. */
export function lockPath(target: string): string {
  const abs = path.resolve(target);
  return path.join(path.dirname(abs), `.${path.basename(abs)}${LOCK_SUFFIX}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lock on `target` for `what`, or throws a ResidualError naming the holder. A lock left by a process that
 * no longer runs (on this machine) is taken over. Released by `release()` or when the process exits.
 */
export function acquireLock(target: string, what: string): Lock {
  const file = lockPath(target);
  const me: LockHolder = { pid: process.pid, host: os.hostname(), what, since: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify(me), { flag: 'wx' });
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        process.off('exit', release);
        try {
          // Only our own lock: a stale-lock takeover by another process must not be undone by us.
          const held = JSON.parse(fs.readFileSync(file, 'utf8')) as LockHolder;
          if (held.pid === me.pid && held.host === me.host && held.since === me.since) fs.rmSync(file, { force: true });
        } catch {
          // already gone
        }
      };
      process.on('exit', release);
      return { release };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new ResidualError(`cannot take the lock ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, target);
      }
      let holder: LockHolder | undefined;
      try {
        holder = JSON.parse(fs.readFileSync(file, 'utf8')) as LockHolder;
      } catch {
        holder = undefined;
      }
      if (holder && holder.host === os.hostname() && !alive(holder.pid)) {
        fs.rmSync(file, { force: true }); // stale: its process is gone
        continue;
      }
      const who = holder ? `process ${holder.pid} on ${holder.host} (${holder.what}, since ${holder.since})` : `another process (lock file ${file})`;
      throw new ResidualError(`is being written by ${who}; wait for it to finish, or delete ${file} if that process is gone`, target, 'invalid');
    }
  }
  throw new ResidualError(`cannot take the lock ${file}`, target);
}
