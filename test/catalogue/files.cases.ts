/**
 * Bad inputs of the files area (issue 14): inputs that are not regular files (class 3: FIFOs, folders, devices and
 * dangling or looping symlinks where a model's files should be), symlinks and the Hugging Face cache layout (class 4:
 * must load, or say exactly what is wrong), and Residual's cache (class 5: damaged entries rebuilt, stale ones
 * removed, the size limit, entries in use kept, the cache folder and limit settings). Fixtures (a tiny random GPT-2
 * and copies of it) are made on first use under one temporary folder; `disposeFixtures` (called by files.test.ts)
 * removes it. Nothing is done at import.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CACHE_DIR_ENV, CACHE_LIMIT_ENV, clearCache, HALF_KIND, ONNX_KIND, pruneCache, recordEntry, sourceRecord } from '../../src/engine/cache';
import { hostTag } from '../../src/engine/files';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { writeSafetensors } from '../../src/engine/checkpoint/write';
import { Model, type ModelLoadOptions } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';
import { Tokenizer } from '../../src/engine/tokenizer';
import { runCli, type BadInputCase } from '../helpers/catalogue';

// ---- Fixtures (lazy) -------------------------------------------------------------------------------------------

const SHAPE = { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 16 };
const TOKENIZER = { model: { type: 'BPE', vocab: { a: 0, b: 1 }, merges: [] } };
const IDS = [0, 1, 0];
/** A pid above Linux's largest (2^22): never a running process. */
const DEAD_PID = 4194305;

let rootDir: string | undefined;
function root(): string {
  rootDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cat-files-'));
  return rootDir;
}
let counter = 0;
/** A fresh path (not created) under the fixtures' root. */
function fresh(name: string): string {
  return path.join(root(), `${++counter}-${name}`);
}

/** The plain model folder every copy comes from. */
function plain(): string {
  const dir = path.join(root(), 'plain');
  if (!fs.existsSync(dir)) writeRandomGpt2(dir, SHAPE, { seed: 3, tokenizerJson: TOKENIZER });
  return dir;
}

/** The same model in two shards (same values: the seed draws the same stream). */
function plainSharded(): string {
  const dir = path.join(root(), 'plain-sharded');
  if (!fs.existsSync(dir)) writeRandomGpt2(dir, SHAPE, { seed: 3, tokenizerJson: TOKENIZER, shards: 2 });
  return dir;
}

/** A copy of the plain model in a new folder. */
function copy(name: string, from = plain()): string {
  const dir = fresh(name);
  fs.cpSync(from, dir, { recursive: true });
  return dir;
}

function mkfifo(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
  execFileSync('mkfifo', [p]);
}

/** A copy whose `file` is replaced by what `make` puts at its path. */
function withReplaced(name: string, file: string, make: (p: string) => void): string {
  const dir = copy(name);
  const p = path.join(dir, file);
  fs.rmSync(p, { force: true });
  make(p);
  return dir;
}

/**
 * A repository folder as huggingface_hub lays it out: `blobs/<sha256>` holds the files, `snapshots/<rev>/<name>`
 * are symlinks to them (relative `../../blobs/<sha>` as the Hub writes them, or absolute), `refs/main` names `rev`.
 */
function hubRepo(name: string, opts: { from?: string; absolute?: boolean; revs?: string[]; refMain?: string | false } = {}): { repo: string; snap: string } {
  const from = opts.from ?? plain();
  const repo = path.join(fresh('hub'), `models--org--${name}`);
  const revs = opts.revs ?? ['0123456789abcdef0123456789abcdef01234567'];
  fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  for (const rev of revs) {
    const snap = path.join(repo, 'snapshots', rev);
    fs.mkdirSync(snap, { recursive: true });
    for (const f of fs.readdirSync(from)) {
      const bytes = new Uint8Array(fs.readFileSync(path.join(from, f)));
      const sha = crypto.createHash('sha256').update(bytes).digest('hex');
      const blob = path.join(repo, 'blobs', sha);
      if (!fs.existsSync(blob)) fs.writeFileSync(blob, bytes);
      fs.symlinkSync(opts.absolute ? blob : `../../blobs/${sha}`, path.join(snap, f));
    }
  }
  if (opts.refMain !== false) {
    fs.mkdirSync(path.join(repo, 'refs'));
    fs.writeFileSync(path.join(repo, 'refs', 'main'), opts.refMain ?? revs[0]);
  }
  return { repo, snap: path.join(repo, 'snapshots', revs[0]) };
}

const disposers: (() => Promise<void>)[] = [];

async function load(dir: string, opts: ModelLoadOptions = {}): Promise<Model> {
  silenceOrt();
  return Model.load(dir, { providers: ['cpu'], cacheDir: fresh('cache'), ...opts });
}

async function logitsOf(dir: string, opts: ModelLoadOptions = {}): Promise<Float32Array> {
  const m = await load(dir, opts);
  try {
    return (await m.run({ ids: IDS, hooks: ['logits'] })).activations.get('logits')!.data.slice();
  } finally {
    await m.dispose();
  }
}

let plainLogitsP: Promise<Float32Array> | undefined;
const plainLogits = () => (plainLogitsP ??= logitsOf(plain()));

/** "<what> loaded; logits equal the plain copy's" when they do. */
async function loadsLikePlain(what: string, dir: string, opts: ModelLoadOptions = {}): Promise<string> {
  const [a, b] = await Promise.all([logitsOf(dir, opts), plainLogits()]);
  const same = a.length === b.length && a.every((v, i) => v === b[i]);
  return `${what} loaded; logits ${same ? 'equal' : 'DIFFER from'} the plain copy's`;
}

/** The graph entries (`<cache>/onnx/<id>`) of a cache folder. */
function onnxEntries(cache: string): string[] {
  const dir = path.join(cache, ONNX_KIND);
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => /^[0-9a-f]{24}$/.test(n)).map((n) => path.join(dir, n)) : [];
}

function halfFiles(cache: string): string[] {
  const dir = path.join(cache, HALF_KIND);
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => /^half-[0-9a-f]{20}\.safetensors$/.test(n)).map((n) => path.join(dir, n)) : [];
}

/**
 * Loads `dir` with cache `cache` once (making its entry), lets `damage` change the cache, loads again with a log
 * and runs: returns the second load's cache lines and whether the run's logits equal the plain copy's.
 */
async function reloadAfter(cache: string, damage: () => void, opts: ModelLoadOptions = {}, dir = plain()): Promise<string> {
  await (await load(dir, { cacheDir: cache, ...opts })).dispose();
  damage();
  const logs: string[] = [];
  const m = await load(dir, { cacheDir: cache, log: (l) => logs.push(l), ...opts });
  try {
    const got = (await m.run({ ids: IDS, hooks: ['logits'] })).activations.get('logits')!.data;
    const want = opts.precision === 'float16' ? got : await plainLogits();
    const same = got.length === want.length && got.every((v, i) => v === want[i]);
    return `${logs.filter((l) => l.startsWith('cache:')).join(' | ')} → runs; logits ${same ? 'equal' : 'DIFFER'}`;
  } finally {
    await m.dispose();
  }
}

/** A recorded graph entry of `bytes` bytes made from `source`, last used `ago` seconds ago. */
function fakeEntry(cache: string, bytes: number, ago: number, source = path.join(plain(), 'config.json')): string {
  const dir = path.join(cache, ONNX_KIND, crypto.randomBytes(12).toString('hex'));
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model.onnx'), new Uint8Array(bytes).fill(1));
  recordEntry(dir, 'test', [sourceRecord(source)]);
  const t = new Date(Date.now() - ago * 1000);
  fs.utimesSync(`${dir}.entry.json`, t, t);
  return dir;
}

function withEnv<T>(vars: Record<string, string | undefined>, f: () => Promise<T>): Promise<T> {
  const old = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const restore = () => {
    for (const [k, v] of Object.entries(old)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  return f().finally(restore);
}

const reasons = (r: ReturnType<typeof pruneCache>) => `removed ${r.removed.length}: ${r.removed.map((x) => `${path.basename(x.path)} (${x.reason})`).join('; ')}; kept in use ${r.inUse.length}`;

export async function disposeFixtures(): Promise<void> {
  for (const d of disposers.splice(0)) await d();
  if (rootDir) fs.rmSync(rootDir, { recursive: true, force: true });
  rootDir = undefined;
}

// ---- Class 3: inputs that are not regular files ------------------------------------------------------------------

let lastDir = '';
/** openCheckpoint of a folder made by `make`; the folder must be untouched. */
function checkpointCase(name: string, make: () => string, expect: RegExp): BadInputCase {
  return {
    class: 3,
    name,
    run: async () => {
      openCheckpoint(lastDir);
      return 'opened';
    },
    expect,
    untouched: () => [(lastDir = make())],
  };
}

const class3: BadInputCase[] = [
  checkpointCase('a FIFO as model.safetensors', () => withReplaced('fifo-weights', 'model.safetensors', mkfifo), /model\.safetensors: model\.safetensors is a FIFO \(named pipe\), not a regular file/),
  checkpointCase('a FIFO as tokenizer.json', () => withReplaced('fifo-tok', 'tokenizer.json', mkfifo), /tokenizer\.json: tokenizer\.json is a FIFO \(named pipe\), not a regular file/),
  checkpointCase('a FIFO as config.json', () => withReplaced('fifo-config', 'config.json', mkfifo), /config\.json: config\.json is a FIFO \(named pipe\), not a regular file/),
  checkpointCase(
    'a FIFO as model.safetensors.index.json',
    () => {
      const dir = copy('fifo-index', plainSharded());
      mkfifo(path.join(dir, 'model.safetensors.index.json'));
      return dir;
    },
    /model\.safetensors\.index\.json: model\.safetensors\.index\.json is a FIFO/,
  ),
  checkpointCase(
    'a FIFO as one shard of a sharded checkpoint',
    () => {
      const dir = copy('fifo-shard', plainSharded());
      mkfifo(path.join(dir, 'model-00002-of-00002.safetensors'));
      return dir;
    },
    /model-00002-of-00002\.safetensors: shard "model-00002-of-00002\.safetensors" is a FIFO/,
  ),
  checkpointCase('a folder named model.safetensors', () => withReplaced('dir-weights', 'model.safetensors', (p) => fs.mkdirSync(p)), /model\.safetensors: model\.safetensors is a folder, not a regular file/),
  checkpointCase('a folder named tokenizer.json', () => withReplaced('dir-tok', 'tokenizer.json', (p) => fs.mkdirSync(p)), /tokenizer\.json: tokenizer\.json is a folder, not a regular file/),
  checkpointCase('a folder named config.json', () => withReplaced('dir-config', 'config.json', (p) => fs.mkdirSync(p)), /config\.json: config\.json is a folder, not a regular file/),
  checkpointCase(
    'a folder named like a shard',
    () => {
      const dir = copy('dir-shard', plainSharded());
      fs.rmSync(path.join(dir, 'model-00001-of-00002.safetensors'));
      fs.mkdirSync(path.join(dir, 'model-00001-of-00002.safetensors'));
      return dir;
    },
    /shard "model-00001-of-00002\.safetensors" is a folder, not a regular file/,
  ),
  checkpointCase(
    'model.safetensors a symlink to a character device (/dev/null)',
    () => withReplaced('dev-weights', 'model.safetensors', (p) => fs.symlinkSync('/dev/null', p)),
    /model\.safetensors: model\.safetensors is a character device, not a regular file/,
  ),
  checkpointCase(
    'model.safetensors a dangling symlink',
    () => withReplaced('dangling-weights', 'model.safetensors', (p) => fs.symlinkSync('gone.safetensors', p)),
    /model\.safetensors: model\.safetensors is a symbolic link to a file that does not exist \(gone\.safetensors\)/,
  ),
  checkpointCase(
    'tokenizer.json a dangling symlink',
    () => withReplaced('dangling-tok', 'tokenizer.json', (p) => fs.symlinkSync('/nonexistent/tokenizer.json', p)),
    /tokenizer\.json: tokenizer\.json is a symbolic link to a file that does not exist \(\/nonexistent\/tokenizer\.json\)/,
  ),
  checkpointCase(
    'config.json a dangling symlink',
    () => withReplaced('dangling-config', 'config.json', (p) => fs.symlinkSync('../elsewhere/config.json', p)),
    /config\.json: config\.json is a symbolic link to a file that does not exist \(\.\.\/elsewhere\/config\.json\)/,
  ),
  checkpointCase(
    'model.safetensors a symlink to itself (a loop)',
    () => withReplaced('loop-weights', 'model.safetensors', (p) => fs.symlinkSync('model.safetensors', p)),
    /model\.safetensors: model\.safetensors is a symbolic link that loops/,
  ),
  {
    class: 3,
    name: 'the model folder is a FIFO',
    run: async () => {
      openCheckpoint(lastDir);
      return 'opened';
    },
    expect: /model folder is a FIFO \(named pipe\), not a folder/,
    untouched: () => {
      lastDir = fresh('fifo-folder');
      mkfifo(lastDir);
      return [lastDir];
    },
  },
  {
    class: 3,
    name: 'the model folder is a dangling symlink',
    run: async () => {
      openCheckpoint(lastDir);
      return 'opened';
    },
    expect: /model folder is a symbolic link to .*moved-away, which does not exist/,
    untouched: () => {
      lastDir = fresh('dangling-folder');
      fs.symlinkSync(path.join(root(), 'moved-away'), lastDir);
      return [lastDir];
    },
  },
  {
    class: 3,
    name: 'a FIFO given to the tokenizer reader directly',
    run: async () => {
      const p = path.join(fresh('tok-fifo'), 'tokenizer.json');
      fs.mkdirSync(path.dirname(p));
      mkfifo(p);
      await Tokenizer.fromFile(p);
      return 'read';
    },
    expect: /tokenizer\.json: tokenizer\.json is a FIFO \(named pipe\), not a regular file/,
  },
  {
    class: 3,
    name: 'model.safetensors replaced by a FIFO while the model is loaded',
    run: async () => {
      const dir = copy('fifo-later');
      const m = await load(dir);
      try {
        await m.run({ ids: IDS, hooks: ['logits'] });
        mkfifo(path.join(dir, 'model.safetensors'));
        await m.run({ ids: IDS, hooks: ['logits'] });
        return 'ran';
      } finally {
        await m.dispose();
      }
    },
    expect: /model\.safetensors: model\.safetensors is a FIFO \(named pipe\), not a regular file/,
  },
  {
    class: 3,
    name: 'model.safetensors replaced by a folder while the model is loaded',
    run: async () => {
      const dir = copy('dir-later');
      const m = await load(dir);
      try {
        fs.rmSync(path.join(dir, 'model.safetensors'));
        fs.mkdirSync(path.join(dir, 'model.safetensors'));
        await m.run({ ids: IDS, hooks: ['logits'] });
        return 'ran';
      } finally {
        await m.dispose();
      }
    },
    expect: /model\.safetensors: model\.safetensors is a folder, not a regular file/,
  },
  {
    class: 3,
    name: 'residual analyze on a model whose tokenizer.json is a FIFO (the CLI does not hang)',
    run: async () => {
      const dir = withReplaced('cli-fifo', 'tokenizer.json', mkfifo);
      const r = await runCli(['analyze', '--model', dir, '--text', 'ab'], { timeoutMs: 30_000, env: { [CACHE_DIR_ENV]: fresh('cli-cache') } });
      return `${r.stderr.trim()} (exit ${r.code})`;
    },
    expect: /tokenizer\.json is a FIFO \(named pipe\), not a regular file \(exit [1-9]\d*\)$/,
  },
];

// ---- Class 4: symlinks and the Hugging Face cache -----------------------------------------------------------------

const class4: BadInputCase[] = [
  {
    class: 4,
    name: 'a snapshot folder of the Hugging Face cache (relative symlinks into blobs/)',
    run: async () => loadsLikePlain('snapshots/<rev>', hubRepo('snap').snap),
    expect: /snapshots\/<rev> loaded; logits equal the plain copy's/,
  },
  {
    class: 4,
    name: "a Hugging Face cache repository folder (models--org--name) stands for refs/main's snapshot",
    run: async () => {
      const { repo } = hubRepo('repo', { revs: ['1111111111111111111111111111111111111111', '2222222222222222222222222222222222222222'], refMain: '2222222222222222222222222222222222222222' });
      const dir = openCheckpoint(repo).dir;
      return `${await loadsLikePlain('models--org--repo', repo)}; folder ${path.relative(repo, dir)}`;
    },
    expect: /models--org--repo loaded; logits equal the plain copy's; folder snapshots\/2{40}$/,
  },
  {
    class: 4,
    name: 'a Hugging Face cache repository folder with two snapshots and no refs/main',
    run: async () => {
      openCheckpoint(hubRepo('two', { revs: ['aaaa', 'bbbb'], refMain: false }).repo);
      return 'opened';
    },
    expect: /models--org--two: is a Hugging Face cache folder with 2 snapshots \(aaaa, bbbb\) and no refs\/main naming one; pass the folder snapshots\/<revision> you want/,
  },
  {
    class: 4,
    name: 'a Hugging Face cache repository folder whose refs/main names a snapshot that is not there',
    run: async () => {
      openCheckpoint(hubRepo('stale-ref', { revs: ['aaaa', 'bbbb'], refMain: 'cccc' }).repo);
      return 'opened';
    },
    expect: /models--org--stale-ref: is a Hugging Face cache folder with 2 snapshots \(aaaa, bbbb\) and no refs\/main naming one/,
  },
  {
    class: 4,
    name: 'a Hugging Face cache repository folder with no snapshots',
    run: async () => {
      const { repo } = hubRepo('empty');
      fs.rmSync(path.join(repo, 'snapshots'), { recursive: true });
      fs.mkdirSync(path.join(repo, 'snapshots'));
      openCheckpoint(repo);
      return 'opened';
    },
    expect: /models--org--empty: is a Hugging Face cache folder with no snapshots; download the model again/,
  },
  {
    class: 4,
    name: 'a model folder of absolute symlinks',
    run: async () => loadsLikePlain('absolute links', hubRepo('abs', { absolute: true }).snap),
    expect: /absolute links loaded; logits equal the plain copy's/,
  },
  {
    class: 4,
    name: 'a symlinked model folder',
    run: async () => {
      const link = fresh('linked-folder');
      fs.symlinkSync(copy('link-target'), link);
      return loadsLikePlain('linked folder', link);
    },
    expect: /linked folder loaded; logits equal the plain copy's/,
  },
  {
    class: 4,
    name: 'a sharded checkpoint in the Hugging Face cache layout',
    run: async () => loadsLikePlain('sharded snapshot', hubRepo('sharded', { from: plainSharded() }).snap),
    expect: /sharded snapshot loaded; logits equal the plain copy's/,
  },
  {
    class: 4,
    name: 'a chain of symlinks (link to a link to the file)',
    run: async () => {
      const dir = copy('chain');
      const real = path.join(root(), `${++counter}-weights.bin`);
      fs.renameSync(path.join(dir, 'model.safetensors'), real);
      fs.symlinkSync(real, `${real}.link`);
      fs.symlinkSync(`${real}.link`, path.join(dir, 'model.safetensors'));
      return loadsLikePlain('chained links', dir);
    },
    expect: /chained links loaded; logits equal the plain copy's/,
  },
  {
    class: 4,
    name: 'a Hugging Face cache snapshot in half precision',
    run: async () => {
      const cache = fresh('cache-half-hub');
      const m = await load(hubRepo('half').snap, { precision: 'float16', cacheDir: cache });
      try {
        const r = await m.run({ ids: IDS, hooks: ['logits'] });
        return `float16 snapshot loaded; ${r.activations.get('logits')!.data.every(Number.isFinite) ? 'finite logits' : 'NaN logits'}; ${halfFiles(cache).length} float16 copy in the cache`;
      } finally {
        await m.dispose();
      }
    },
    expect: /float16 snapshot loaded; finite logits; 1 float16 copy in the cache/,
  },
  {
    class: 4,
    name: 'a Hugging Face cache snapshot with the weights handed over in memory',
    run: async () => loadsLikePlain('snapshot (in-memory external data)', hubRepo('buffer').snap, { externalMode: 'buffer' }),
    expect: /snapshot \(in-memory external data\) loaded; logits equal the plain copy's/,
  },
  {
    class: 4,
    name: 'a Hugging Face cache snapshot whose weights blob was deleted',
    run: async () => {
      const { snap } = hubRepo('gone-blob');
      fs.rmSync(fs.realpathSync(path.join(snap, 'model.safetensors')));
      openCheckpoint(snap);
      return 'opened';
    },
    expect: /model\.safetensors: model\.safetensors is a symbolic link to a file that does not exist \(\.\.\/\.\.\/blobs\/[0-9a-f]{64}\)/,
  },
  {
    class: 4,
    name: 'residual analyze on a Hugging Face cache snapshot, cache in $RESIDUAL_CACHE_DIR',
    run: async () => {
      const cache = fresh('cli-hub-cache');
      const r = await runCli(['analyze', '--model', hubRepo('cli').snap, '--text', 'ab', '--json'], { timeoutMs: 60_000, env: { [CACHE_DIR_ENV]: cache } });
      let tokens = -1;
      try {
        tokens = (JSON.parse(r.stdout) as { tokens: unknown[] }).tokens.length;
      } catch {
        // not JSON: reported below
      }
      return `exit ${r.code}; ${tokens} tokens analysed; ${onnxEntries(cache).length} graph(s) cached in ${CACHE_DIR_ENV}${r.stderr ? `; stderr: ${r.stderr.trim()}` : ''}`;
    },
    expect: /^exit 0; 2 tokens analysed; [1-9]\d* graph\(s\) cached in RESIDUAL_CACHE_DIR/,
  },
];

// ---- Class 5: caches ---------------------------------------------------------------------------------------------

const class5: BadInputCase[] = [
  {
    class: 5,
    name: 'a truncated cached model.onnx',
    run: async () => {
      const cache = fresh('cache-trunc');
      return reloadAfter(cache, () => {
        const f = path.join(onnxEntries(cache)[0], 'model.onnx');
        fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2));
      });
    },
    expect: /cache: .*onnx\/[0-9a-f]{24}\/model\.onnx was damaged \(not the graph it should hold\); rebuilt → runs; logits equal/,
  },
  {
    class: 5,
    name: 'a cached model.onnx overwritten with other bytes of the same length',
    run: async () => {
      const cache = fresh('cache-garbled');
      return reloadAfter(cache, () => {
        const f = path.join(onnxEntries(cache)[0], 'model.onnx');
        fs.writeFileSync(f, new Uint8Array(fs.statSync(f).size).fill(7));
      });
    },
    expect: /model\.onnx was damaged \(not the graph it should hold\); rebuilt → runs; logits equal/,
  },
  {
    class: 5,
    name: 'a folder in place of the cached model.onnx',
    run: async () => {
      const cache = fresh('cache-onnx-dir');
      return reloadAfter(cache, () => {
        const f = path.join(onnxEntries(cache)[0], 'model.onnx');
        fs.rmSync(f);
        fs.mkdirSync(f);
      });
    },
    expect: /model\.onnx was damaged \(not the graph it should hold\); rebuilt → runs; logits equal/,
  },
  {
    class: 5,
    name: 'a cached hard link replaced by a copy (another inode)',
    run: async () => {
      const cache = fresh('cache-copy-link');
      const out = await reloadAfter(cache, () => {
        const f = path.join(onnxEntries(cache)[0], 'model.safetensors');
        const bytes = new Uint8Array(fs.readFileSync(f));
        fs.rmSync(f);
        fs.writeFileSync(f, bytes);
      });
      const linked = fs.statSync(path.join(onnxEntries(cache)[0], 'model.safetensors')).ino === fs.statSync(path.join(plain(), 'model.safetensors')).ino;
      return `${out}; ${linked ? 'a hard link again' : 'still a copy'}`;
    },
    expect: /model\.safetensors no longer links to .*plain\/model\.safetensors; relinked → runs; logits equal; a hard link again/,
  },
  {
    class: 5,
    name: 'a cached hard link replaced by a dangling symlink',
    run: async () => {
      const cache = fresh('cache-symlink-link');
      return reloadAfter(cache, () => {
        const f = path.join(onnxEntries(cache)[0], 'model.safetensors');
        fs.rmSync(f);
        fs.symlinkSync('../../blobs/nothing', f);
      });
    },
    expect: /model\.safetensors no longer links to .*; relinked → runs; logits equal/,
  },
  {
    class: 5,
    name: 'a model deleted after use: its cache entry (a hard link to its weights) is removed',
    run: async () => {
      const cache = fresh('cache-deleted-model');
      const dir = copy('deleted-model');
      await (await load(dir, { cacheDir: cache })).dispose();
      const entry = onnxEntries(cache)[0];
      fs.rmSync(dir, { recursive: true });
      const r = pruneCache(cache);
      return `${reasons(r)}; entry ${fs.existsSync(entry) ? 'still there' : 'gone'}`;
    },
    expect: /removed 1: [0-9a-f]{24} \(its source .*deleted-model\/model\.safetensors was deleted\); kept in use 0; entry gone/,
  },
  {
    class: 5,
    name: 'a model re-downloaded (a new weights file at the same path): the old entry is removed',
    run: async () => {
      const cache = fresh('cache-redownload');
      const dir = copy('redownload');
      await (await load(dir, { cacheDir: cache })).dispose();
      const f = path.join(dir, 'model.safetensors');
      const bytes = new Uint8Array(fs.readFileSync(f));
      fs.rmSync(f);
      fs.writeFileSync(f, bytes);
      const logs: string[] = [];
      await (await load(dir, { cacheDir: cache, log: (l) => logs.push(l) })).dispose();
      return `${logs.filter((l) => l.startsWith('cache: removed')).join(' | ')}; ${onnxEntries(cache).length} entry left`;
    },
    expect: /cache: removed .*onnx\/[0-9a-f]{24} \(its source .*redownload\/model\.safetensors was replaced or changed\); 1 entry left/,
  },
  {
    class: 5,
    name: 'a cache entry without a record (left by an older version)',
    run: async () => {
      const cache = fresh('cache-legacy');
      const dir = path.join(cache, ONNX_KIND, 'abcdefabcdefabcdefabcdef');
      fs.mkdirSync(dir, { recursive: true });
      fs.linkSync(path.join(plain(), 'model.safetensors'), path.join(dir, 'model.safetensors'));
      const old = new Date(Date.now() - 3600_000);
      fs.utimesSync(dir, old, old);
      return reasons(pruneCache(cache));
    },
    expect: /removed 1: abcdefabcdefabcdefabcdef \(no record of what it was made from\)/,
  },
  {
    class: 5,
    name: 'a cache over its size limit: least recently used entries go first',
    run: async () => {
      const cache = fresh('cache-lru');
      const oldest = fakeEntry(cache, 1 << 20, 300);
      const middle = fakeEntry(cache, 1 << 20, 200);
      const newest = fakeEntry(cache, 1 << 20, 100);
      const r = pruneCache(cache, { limit: 3e6 });
      const left = (['oldest', 'middle', 'newest'] as const).filter((_, i) => fs.existsSync([oldest, middle, newest][i]));
      return `${reasons(r)}; left: ${left.join(', ')}; ${(r.totalBytes / 2 ** 20).toFixed(1)} MiB`;
    },
    expect: /removed 1: [0-9a-f]{24} \(least recently used; the cache is over its 3 MB limit\); kept in use 0; left: middle, newest; 2\.0 MiB/,
  },
  {
    class: 5,
    name: "Clear Cache while a model is loaded: the model's entry is kept and it still runs",
    run: async () => {
      const cache = fresh('cache-in-use');
      const m = await load(plain(), { cacheDir: cache });
      try {
        const stale = fakeEntry(cache, 1000, 50);
        const r = clearCache(cache);
        await m.run({ ids: IDS, hooks: ['logits'] });
        return `${reasons(r)}; ${fs.existsSync(stale) ? 'unused entry left' : 'unused entry removed'}; model runs`;
      } finally {
        await m.dispose();
      }
    },
    expect: /removed 1: [0-9a-f]{24} \(Clear Cache\); kept in use 1; unused entry removed; model runs/,
  },
  {
    class: 5,
    name: 'an entry in use by another running process is kept',
    run: async () => {
      const cache = fresh('cache-other-process');
      const e = fakeEntry(cache, 1000, 50);
      fs.writeFileSync(`${e}.in-use-${process.ppid}`, JSON.stringify({ pid: process.ppid, host: os.hostname() }));
      return reasons(clearCache(cache));
    },
    expect: /^removed 0: ; kept in use 1$/,
  },
  {
    class: 5,
    name: 'an in-use marker left by a process that exited',
    run: async () => {
      const cache = fresh('cache-dead-marker');
      const e = fakeEntry(cache, 1000, 50);
      fs.writeFileSync(`${e}.in-use-${DEAD_PID}`, JSON.stringify({ pid: DEAD_PID, host: os.hostname() }));
      const r = clearCache(cache);
      return `${reasons(r)}; marker ${fs.existsSync(`${e}.in-use-${DEAD_PID}`) ? 'left' : 'removed'}`;
    },
    expect: /removed 1: [0-9a-f]{24} \(Clear Cache\); kept in use 0; marker removed/,
  },
  {
    class: 5,
    name: 'the cache lock left by a process that crashed',
    run: async () => {
      const cache = fresh('cache-dead-lock');
      fakeEntry(cache, 1000, 50);
      fs.writeFileSync(path.join(cache, `.${ONNX_KIND}.residual-lock`), JSON.stringify({ pid: DEAD_PID, host: os.hostname(), what: 'residual cache', since: '2020-01-01' }));
      return reasons(clearCache(cache));
    },
    expect: /removed 1: [0-9a-f]{24} \(Clear Cache\); kept in use 0/,
  },
  {
    class: 5,
    name: 'a temporary file left by an interrupted float16 conversion',
    run: async () => {
      const cache = fresh('cache-tmp');
      const tmp = path.join(cache, HALF_KIND, `half-${'0'.repeat(20)}.safetensors.tmp-${hostTag()}-${DEAD_PID}`);
      fs.mkdirSync(path.dirname(tmp), { recursive: true });
      fs.writeFileSync(tmp, 'partial');
      pruneCache(cache);
      return `temporary file ${fs.existsSync(tmp) ? 'left' : 'removed'}`;
    },
    expect: /temporary file removed/,
  },
  {
    class: 5,
    name: "a shared cache: another machine's temporary files and markers are not judged by their pid",
    run: async () => {
      const cache = fresh('cache-shared');
      const half = path.join(cache, HALF_KIND);
      fs.mkdirSync(half, { recursive: true });
      const base = path.join(half, `half-${'1'.repeat(20)}.safetensors`);
      const old = new Date(Date.now() - 2 * 3600_000);
      const files = {
        'its conversion': `${base}.tmp-build_server_7-${DEAD_PID}`,
        'its record write': `${base}.entry.json.tmp-build_server_7-${DEAD_PID}`,
        'its atomic write': path.join(half, `.${path.basename(base)}.build_server_7-${DEAD_PID}.0a1b2c3d.tmp`),
        'a write naming no machine': `${base}.tmp-${DEAD_PID}`,
        'an old one of another machine': `${base}.tmp-other-${DEAD_PID}`,
        'an old one naming no machine': path.join(half, `.${path.basename(base)}.${DEAD_PID}.0a1b2c3d.tmp`),
      };
      for (const f of Object.values(files)) fs.writeFileSync(f, 'partial');
      for (const f of [files['an old one of another machine'], files['an old one naming no machine']]) fs.utimesSync(f, old, old);
      const e = fakeEntry(cache, 1000, 50);
      fs.writeFileSync(`${e}.in-use-build_server_7-${DEAD_PID}`, '');
      const r = pruneCache(cache, { limit: 0 });
      const left = Object.entries(files).map(([k, f]) => `${k} ${fs.existsSync(f) ? 'kept' : 'removed'}`);
      return `${left.join(', ')}; ${reasons(r)}`;
    },
    expect:
      /^its conversion kept, its record write kept, its atomic write kept, a write naming no machine kept, an old one of another machine removed, an old one naming no machine removed; removed 0: ; kept in use 1$/,
  },
  {
    class: 5,
    name: 'files in a cache folder that only look like leftovers (not named after an entry) are left alone',
    run: async () => {
      const cache = fresh('cache-lookalikes');
      const half = path.join(cache, HALF_KIND);
      fs.mkdirSync(half, { recursive: true });
      const old = new Date(Date.now() - 2 * 3600_000);
      const files = [`notes.txt.tmp-${DEAD_PID}`, `.notes.${DEAD_PID}.abcdef.tmp`, `notes.in-use-${DEAD_PID}`, `.notes.removing-${hostTag()}-${DEAD_PID}`].map((n) => path.join(half, n));
      for (const f of files) {
        fs.writeFileSync(f, 'keep me');
        fs.utimesSync(f, old, old);
      }
      clearCache(cache);
      pruneCache(cache);
      return `${files.filter((f) => fs.existsSync(f)).length} of ${files.length} kept`;
    },
    expect: /^4 of 4 kept$/,
  },
  {
    class: 5,
    name: 'a truncated cached float16 copy',
    run: async () => {
      const cache = fresh('cache-half-trunc');
      return reloadAfter(
        cache,
        () => {
          const f = halfFiles(cache)[0];
          fs.truncateSync(f, fs.statSync(f).size - 100);
        },
        { precision: 'float16' },
      );
    },
    expect: /cache: .*half\/half-[0-9a-f]{20}\.safetensors is damaged \(.*run past the end.*\); rebuilding it.* → runs/,
  },
  {
    class: 5,
    name: 'a cached float16 copy holding other tensors',
    run: async () => {
      const cache = fresh('cache-half-wrong');
      return reloadAfter(cache, () => writeSafetensors(halfFiles(cache)[0], [{ name: 'other', shape: [2], data: Float32Array.of(1, 2) }], 'F16'), { precision: 'float16' });
    },
    expect: /half-[0-9a-f]{20}\.safetensors is damaged \(tensor ".*" is missing\); rebuilding it.* → runs/,
  },
  {
    class: 5,
    name: 'RESIDUAL_CACHE_LIMIT_GB that is not a number',
    run: async () => withEnv({ [CACHE_LIMIT_ENV]: 'lots' }, async () => (await load(plain())).dispose().then(() => 'loaded')),
    expect: /RESIDUAL_CACHE_LIMIT_GB: must be a number of GB \(0 or more\), got "lots"/,
  },
  {
    class: 5,
    name: 'a negative RESIDUAL_CACHE_LIMIT_GB',
    run: async () => withEnv({ [CACHE_LIMIT_ENV]: '-1' }, async () => (await load(plain())).dispose().then(() => 'loaded')),
    expect: /RESIDUAL_CACHE_LIMIT_GB: must be a number of GB \(0 or more\), got "-1"/,
  },
  {
    class: 5,
    name: 'RESIDUAL_CACHE_DIR naming a regular file, in half precision',
    run: async () => {
      await withEnv({ [CACHE_DIR_ENV]: lastDir }, async () => (await Model.load(plain(), { providers: ['cpu'], precision: 'float16' })).dispose());
      return 'loaded';
    },
    expect: /half: cannot create the cache folder for float16 weights \(a file is in the way\); set RESIDUAL_CACHE_DIR to a writable folder/,
    untouched: () => {
      lastDir = fresh('not-a-folder');
      fs.writeFileSync(lastDir, 'my notes');
      return [lastDir];
    },
  },
  {
    class: 5,
    name: 'RESIDUAL_CACHE_DIR naming a regular file: graphs fall back to in-memory weights',
    run: async () => {
      const logs: string[] = [];
      await withEnv({ [CACHE_DIR_ENV]: lastDir }, async () => {
        const m = await Model.load(plain(), { providers: ['cpu'], log: (l) => logs.push(l) });
        await m.run({ ids: IDS, hooks: ['logits'] });
        await m.dispose();
      });
      return `${logs.find((l) => l.includes('in-memory')) ?? 'no fallback'}; runs`;
    },
    expect: /cannot hard-link weights into .*not-a-file-cache\/onnx\/[0-9a-f]{24} \(.*\); passing them as in-memory external data; runs/,
    untouched: () => {
      lastDir = fresh('not-a-file-cache');
      fs.writeFileSync(lastDir, 'my notes');
      return [lastDir];
    },
  },
  {
    class: 5,
    name: 'Clear Cache on a folder that also holds files that are not cache entries',
    run: async () => {
      fakeEntry(lastDir, 1000, 50);
      return reasons(clearCache(lastDir));
    },
    expect: /^removed 1: [0-9a-f]{24} \(Clear Cache\); kept in use 0$/,
    untouched: () => {
      lastDir = fresh('mixed-cache');
      fs.mkdirSync(path.join(lastDir, ONNX_KIND, 'not-an-entry'), { recursive: true });
      fs.mkdirSync(path.join(lastDir, HALF_KIND), { recursive: true });
      fs.writeFileSync(path.join(lastDir, 'notes.txt'), 'keep me');
      fs.writeFileSync(path.join(lastDir, ONNX_KIND, 'readme.md'), 'keep me');
      fs.writeFileSync(path.join(lastDir, ONNX_KIND, 'not-an-entry', 'model.onnx'), 'keep me');
      fs.writeFileSync(path.join(lastDir, HALF_KIND, 'model.safetensors'), 'keep me');
      return ['notes.txt', `${ONNX_KIND}/readme.md`, `${ONNX_KIND}/not-an-entry`, `${HALF_KIND}/model.safetensors`].map((p) => path.join(lastDir, p));
    },
  },
  {
    class: 5,
    name: 'a model in use while its weights file is deleted: its entry waits until the model is released',
    run: async () => {
      const cache = fresh('cache-deleted-in-use');
      const dir = copy('deleted-in-use');
      const m = await load(dir, { cacheDir: cache });
      fs.rmSync(path.join(dir, 'model.safetensors'));
      const during = pruneCache(cache);
      await m.dispose();
      const after = pruneCache(cache);
      return `while loaded: ${reasons(during)}; after release: ${reasons(after)}`;
    },
    expect: /while loaded: removed 0: ; kept in use 1; after release: removed 1: [0-9a-f]{24} \(its source .*deleted-in-use\/model\.safetensors was deleted\)/,
  },
];

export const cases: BadInputCase[] = [...class3, ...class4, ...class5];
