/** src/engine/files.ts: locks (created whole, taken over atomically, inside a folder whose parent is read-only) and atomic writes. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it, mock } from 'node:test';
import { acquireLock, folderLockPath, lockPath, writeFileAtomic } from '../../src/engine/files';

/** A pid above Linux's largest (2^22): never a running process. */
const DEAD_PID = 4194305;
/** A process that runs as long as this test does: the test runner. */
const LIVE_PID = process.ppid;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-files-'));
fs.chmodSync(root, 0o755); // readable by the unprivileged child of the read-only-parent test
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => path.join(root, `${++n}-${name}`);
const holder = (pid: number, what: string) => JSON.stringify({ pid, host: os.hostname(), what, since: '2025-01-01T00:00:00.000Z' });
/** What is left in `dir` besides `keep` (temporary and moved-aside files must not be). */
const litter = (dir: string, keep: string[]) => fs.readdirSync(dir).filter((f) => !keep.includes(f));

describe('locks', () => {
  it('are taken and released; a live holder is named', () => {
    const target = fresh('plain');
    const lock = acquireLock(target, 'first');
    assert.match(fs.readFileSync(lockPath(target), 'utf8'), /"what":"first"/);
    assert.throws(() => acquireLock(target, 'second'), /is being written by process \d+ on .* \(first, since /);
    lock.release();
    assert.equal(fs.existsSync(lockPath(target)), false);
    assert.deepEqual(litter(root, [path.basename(target)]).filter((f) => f.includes('plain')), []);
  });

  it("a stale lock taken over by another process meanwhile is not taken again (that process's fresh lock stays)", () => {
    const target = fresh('race');
    const file = lockPath(target);
    fs.writeFileSync(file, holder(DEAD_PID, 'crashed'));
    const other = holder(LIVE_PID, 'the other process');
    const readFileSync = fs.readFileSync;
    let raced = false;
    // This process reads the dead holder's lock; before it acts, another process takes that lock over (removes it
    // and creates its own): what both would do at once.
    mock.method(fs, 'readFileSync', (...args: Parameters<typeof fs.readFileSync>) => {
      const text = readFileSync.apply(fs, args);
      if (!raced && args[0] === file) {
        raced = true;
        fs.rmSync(file);
        fs.writeFileSync(file, other);
      }
      return text;
    });
    try {
      assert.throws(() => acquireLock(target, 'me'), new RegExp(`is being written by process ${LIVE_PID} on .*\\(the other process, `));
    } finally {
      mock.restoreAll();
    }
    assert.ok(raced);
    assert.equal(fs.readFileSync(file, 'utf8'), other, "the other process's lock is still there");
    assert.deepEqual(litter(root, []).filter((f) => f.includes('race') && f !== path.basename(file)), [], 'nothing moved aside is left');
  });

  it('a lock of a process that exited is taken over, and released by its new holder', () => {
    const target = fresh('stale');
    fs.writeFileSync(lockPath(target), holder(DEAD_PID, 'crashed'));
    const lock = acquireLock(target, 'new');
    assert.match(fs.readFileSync(lockPath(target), 'utf8'), /"what":"new"/);
    lock.release();
    assert.equal(fs.existsSync(lockPath(target)), false);
  });

  it('a crash while a lock is created never leaves an empty lock behind', () => {
    const target = fresh('crash');
    const writeFileSync = fs.writeFileSync;
    // The process dies (here: the write fails) after the lock's file is created and before its text is in it.
    mock.method(fs, 'writeFileSync', (...args: Parameters<typeof fs.writeFileSync>) => {
      if (typeof args[0] === 'string' && args[0].includes('.residual-lock')) {
        fs.closeSync(fs.openSync(args[0], 'wx'));
        throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
      }
      return writeFileSync.apply(fs, args);
    });
    try {
      assert.throws(() => acquireLock(target, 'me'), /cannot take the lock .*\(EIO\)/);
    } finally {
      mock.restoreAll();
    }
    assert.equal(fs.existsSync(lockPath(target)), false, 'no lock file: the name appears only with its text in it');
    assert.deepEqual(litter(root, []).filter((f) => f.includes('crash')), [], 'no temporary file left');
    acquireLock(target, 'again').release();
  });

  it('an unparsable lock is busy while young (being written), stale after 10 s (a crash)', () => {
    const target = fresh('garbage');
    fs.writeFileSync(lockPath(target), '');
    assert.throws(() => acquireLock(target, 'me'), /is being written by another process \(lock file .*garbage\.residual-lock\)/);
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lockPath(target), old, old);
    const lock = acquireLock(target, 'me');
    assert.match(fs.readFileSync(lockPath(target), 'utf8'), /"what":"me"/);
    lock.release();
  });

  it("a lock naming this process that it no longer holds is stale (a failed takeover put back a released lock)", () => {
    const target = fresh('own');
    fs.writeFileSync(lockPath(target), JSON.stringify({ pid: process.pid, host: os.hostname(), what: 'gone', since: '2025-01-01T00:00:00.000Z', token: 'released' }));
    acquireLock(target, 'me').release();
    assert.equal(fs.existsSync(lockPath(target)), false);
  });

  it("another machine's lock is never judged by its pid", () => {
    const target = fresh('remote');
    fs.writeFileSync(lockPath(target), JSON.stringify({ pid: DEAD_PID, host: 'build-server-7', what: 'download', since: '2025-01-01T00:00:00.000Z' }));
    assert.throws(() => acquireLock(target, 'me'), new RegExp(`process ${DEAD_PID} on build-server-7`));
  });
});

describe('a folder whose parent cannot be written', () => {
  /** The parent of `target` read-only to the one who locks: as root, an unprivileged child does; else this process. */
  const asRoot = process.getuid?.() === 0;
  const NOBODY = 65534;
  const setup = () => {
    const parent = fresh('ro-parent');
    const target = path.join(parent, 'scratch');
    fs.mkdirSync(target, { recursive: true });
    if (asRoot) {
      fs.chmodSync(parent, 0o755);
      fs.chownSync(target, NOBODY, NOBODY);
    } else {
      fs.chmodSync(parent, 0o555);
    }
    return { parent, target };
  };
  /** acquireLock(target) by one who cannot write its parent: 'held <lock file>' or the error's message. */
  const lockAs = (target: string): string => {
    const script = `const f = require(${JSON.stringify(path.resolve(__dirname, '../../src/engine/files.ts'))});
      try { const l = f.acquireLock(${JSON.stringify(target)}, 'download'); const where = [f.lockPath, f.folderLockPath].map((p) => p(${JSON.stringify(target)})).find((p) => require('fs').existsSync(p)); l.release(); console.log('held ' + where); }
      catch (e) { console.log(e.message); }`;
    if (!asRoot) {
      try {
        const l = acquireLock(target, 'download');
        const where = [lockPath(target), folderLockPath(target)].find((p) => fs.existsSync(p));
        l.release();
        return `held ${where}`;
      } catch (e) {
        return (e as Error).message;
      }
    }
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { uid: NOBODY, gid: NOBODY, cwd: path.resolve(__dirname, '../..'), encoding: 'utf8', env: { ...process.env, HOME: os.tmpdir() } });
    if (r.status !== 0) throw new Error(`the unprivileged child failed: ${r.stderr}`);
    return r.stdout.trim();
  };
  const usable = (() => {
    if (asRoot) return spawnSync(process.execPath, ['--import', 'tsx', '-e', `require(${JSON.stringify(path.resolve(__dirname, '../../src/engine/errors.ts'))})`], { uid: NOBODY, gid: NOBODY, cwd: path.resolve(__dirname, '../..'), env: { ...process.env, HOME: os.tmpdir() } }).status === 0;
    const { parent } = setup();
    try {
      fs.accessSync(parent, fs.constants.W_OK);
      return false; // permissions are not enforced here
    } catch {
      return true;
    }
  })();
  const skip = usable ? false : 'cannot make a folder read-only to the locking process here';

  it('is locked from inside it, and the lock is released', { skip }, () => {
    const { target } = setup();
    assert.equal(lockAs(target), `held ${folderLockPath(target)}`);
    assert.equal(fs.existsSync(folderLockPath(target)), false);
    assert.equal(path.basename(folderLockPath(target)), '.residual-folder-lock');
  });

  it('a live lock beside it (taken by one who can write the parent) makes it busy', { skip }, () => {
    const { target } = setup();
    fs.chmodSync(path.dirname(target), 0o755);
    fs.writeFileSync(lockPath(target), holder(LIVE_PID, 'residual download gpt2'));
    if (!asRoot) fs.chmodSync(path.dirname(target), 0o555);
    assert.match(lockAs(target), new RegExp(`is being written by process ${LIVE_PID} .*residual download gpt2`));
  });

  it('a live lock inside it makes it busy for one who could lock beside it', () => {
    const target = fresh('inside-held');
    fs.mkdirSync(target);
    fs.writeFileSync(folderLockPath(target), holder(LIVE_PID, 'residual download gpt2'));
    assert.throws(() => acquireLock(target, 'me'), new RegExp(`is being written by process ${LIVE_PID} .*residual download gpt2.*; wait for it to finish, or delete .*inside-held/\\.residual-folder-lock if`));
    assert.equal(fs.existsSync(lockPath(target)), false, 'the lock it took beside is given back');
  });

  after(() => {
    for (const d of fs.readdirSync(root)) if (d.includes('ro-parent')) fs.chmodSync(path.join(root, d), 0o755);
  });
});

describe('writeFileAtomic', () => {
  it("keeps the replaced file's permissions", () => {
    for (const mode of [0o600, 0o640, 0o755]) {
      const f = fresh(`mode-${mode.toString(8)}`);
      fs.writeFileSync(f, 'old');
      fs.chmodSync(f, mode);
      writeFileAtomic(f, 'new');
      assert.equal(fs.readFileSync(f, 'utf8'), 'new');
      assert.equal(fs.statSync(f).mode & 0o777, mode, mode.toString(8));
    }
  });

  it('gives a new file the default permissions and leaves no temporary file', () => {
    const f = fresh('new-file');
    writeFileAtomic(f, 'x');
    const plain = fresh('plain-file');
    fs.writeFileSync(plain, 'x');
    assert.equal(fs.statSync(f).mode & 0o777, fs.statSync(plain).mode & 0o777);
    assert.deepEqual(litter(root, []).filter((x) => x.includes('new-file') && x !== path.basename(f)), []);
  });
});
