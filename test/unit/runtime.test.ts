/** Hook-name vocabulary and execution-provider fallback. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it, mock } from 'node:test';
import * as crypto from 'node:crypto';
import realFs from 'node:fs';
import * as cacheModule from '../../src/engine/cache';
import { clearCache, pruneCache, recordEntry, sourceRecord, useEntry } from '../../src/engine/cache';
import { hostTag, lockPath } from '../../src/engine/files';
import { formatBytes } from '../../src/engine/memory';
import { allHookNames, hookName, parseHookName, suggestHooks } from '../../src/engine/hooks';
import { Model, type ModelLoadOptions } from '../../src/engine/model';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { silenceOrt } from '../../src/engine/runtime/session';

describe('hook names', () => {
  it('are TransformerLens names, parsed back exactly', () => {
    const names = allHookNames(2);
    assert.equal(names[0], 'hook_embed');
    assert.ok(names.includes('blocks.1.attn.hook_pattern'));
    assert.ok(names.includes('blocks.0.ln2.hook_normalized'));
    assert.equal(names.at(-1), 'logits');
    for (const n of names) assert.ok(parseHookName(n), n);
    assert.deepEqual(parseHookName(hookName(3, 'hook_resid_pre')), { layer: 3, hook: 'hook_resid_pre' });
    assert.equal(parseHookName('blocks.0.resid_pre'), undefined);
    assert.equal(parseHookName('blocks.x.hook_resid_pre'), undefined);
  });
  it('suggest the closest valid names for a typo', () => {
    assert.equal(suggestHooks('blocks.1.hook_resid_pst', 2)[0], 'blocks.1.hook_resid_post');
    assert.equal(suggestHooks('blocks.0.attn.hook_patern', 2)[0], 'blocks.0.attn.hook_pattern');
  });
});

describe('execution providers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-ep-'));
  writeRandomGpt2(dir, { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 16 }, { seed: 3, tokenizerJson: { model: { type: 'BPE', vocab: { a: 0, b: 1 }, merges: [] } } });
  silenceOrt();

  it('are tried one at a time; each failure is recorded with its reason and the CPU runs', async () => {
    const logs: string[] = [];
    const m = await Model.load(dir, { providers: ['cuda', 'webgpu', 'cpu'], log: (s) => logs.push(s), cacheDir: path.join(dir, 'c') });
    try {
      // Without a GPU here, CUDA and WebGPU fail; where one works, it is the one in use.
      assert.ok(['cuda', 'webgpu', 'cpu'].includes(m.provider));
      const last = m.attempts.at(-1)!;
      assert.equal(last.ok, true);
      assert.equal(last.provider, m.provider);
      for (const a of m.attempts.slice(0, -1)) {
        assert.equal(a.ok, false);
        assert.ok(a.reason && a.reason.length > 5, `reason for ${a.provider}`);
        // Ruled out by the GPU check (not tried in this process) or failed when tried: either way, logged with the reason.
        assert.ok(logs.some((l) => l.includes(a.skipped ? `provider ${a.provider} not tried: ${a.reason}` : `provider ${a.provider} unavailable: ${a.reason}`)));
      }
    } finally {
      await m.dispose();
    }
  });

  it('an unknown provider fails with a message listing every attempt', async () => {
    await assert.rejects(Model.load(dir, { providers: ['nonesuch'], cacheDir: path.join(dir, 'c') }), (e: Error) => {
      assert.match(e.message, /no execution provider could run the model/);
      assert.match(e.message, /nonesuch/);
      return true;
    });
  });

  it('the in-memory external-data mode gives the same logits as the hard-linked one', async () => {
    const a = await Model.load(dir, { providers: ['cpu'], externalMode: 'link', cacheDir: path.join(dir, 'c') });
    const b = await Model.load(dir, { providers: ['cpu'], externalMode: 'buffer' });
    try {
      const ra = await a.run({ ids: [0, 1, 0], hooks: ['logits'] });
      const rb = await b.run({ ids: [0, 1, 0], hooks: ['logits'] });
      assert.deepEqual(ra.activations.get('logits')!.data, rb.activations.get('logits')!.data);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });
});

describe('symlinked checkpoints and the Hugging Face cache layout', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-links-'));
  const plain = path.join(root, 'plain');
  writeRandomGpt2(plain, { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 16 }, { seed: 4, tokenizerJson: { model: { type: 'BPE', vocab: { a: 0, b: 1 }, merges: [] } } });
  silenceOrt();
  let n = 0;
  const logits = async (dir: string, opts: ModelLoadOptions = {}) => {
    const m = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, `cache-${++n}`), ...opts });
    try {
      return (await m.run({ ids: [0, 1, 1, 0], hooks: ['logits'] })).activations.get('logits')!.data.slice();
    } finally {
      await m.dispose();
    }
  };

  /** models--org--tiny/{blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/<sha256>, refs/main}, as huggingface_hub writes it. */
  const hubRepo = (name: string, absolute: boolean) => {
    const repo = path.join(root, name, 'models--org--tiny');
    const snap = path.join(repo, 'snapshots', 'f00dfeedf00dfeedf00dfeedf00dfeedf00dfeed');
    fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    fs.mkdirSync(snap, { recursive: true });
    fs.mkdirSync(path.join(repo, 'refs'));
    fs.writeFileSync(path.join(repo, 'refs', 'main'), path.basename(snap));
    for (const f of fs.readdirSync(plain)) {
      const bytes = new Uint8Array(fs.readFileSync(path.join(plain, f)));
      const blob = path.join(repo, 'blobs', crypto.createHash('sha256').update(bytes).digest('hex'));
      fs.writeFileSync(blob, bytes);
      fs.symlinkSync(absolute ? blob : path.relative(snap, blob), path.join(snap, f));
    }
    return { repo, snap };
  };

  it('a snapshot folder of the Hub cache (relative symlinks into blobs/) loads, in both external-data modes, with the logits of the plain copy', async () => {
    const want = await logits(plain);
    const { repo, snap } = hubRepo('hub', false);
    assert.equal(fs.readlinkSync(path.join(snap, 'model.safetensors')).startsWith('../../blobs/'), true);
    assert.deepEqual(await logits(snap), want, 'hard-linked (the real blob is linked, not the relative symlink)');
    assert.deepEqual(await logits(snap, { externalMode: 'buffer' }), want, 'in-memory external data');
    assert.deepEqual(await logits(repo), want, "the repository folder stands for refs/main's snapshot");
  });

  it('absolute symlinks and a symlinked model folder load with the same logits', async () => {
    const want = await logits(plain);
    assert.deepEqual(await logits(hubRepo('abs', true).snap), want);
    const linked = path.join(root, 'linked');
    fs.symlinkSync(plain, linked);
    assert.deepEqual(await logits(linked), want);
  });

  it('a float16 copy is made from a symlinked checkpoint', async () => {
    const got = await logits(hubRepo('half', false).snap, { precision: 'float16' });
    assert.ok(got.every(Number.isFinite));
  });
});

describe('the ONNX graph cache', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cache-'));
  const model = path.join(root, 'model');
  writeRandomGpt2(model, { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 16 }, { seed: 5, tokenizerJson: { model: { type: 'BPE', vocab: { a: 0, b: 1 }, merges: [] } } });
  silenceOrt();
  const entries = (cache: string) => fs.readdirSync(path.join(cache, 'onnx')).filter((e) => /^[0-9a-f]{24}$/.test(e)).map((e) => path.join(cache, 'onnx', e));
  const run = async (m: Model) => (await m.run({ ids: [0, 1], hooks: ['logits'] })).activations.get('logits')!.data.slice();

  it('a damaged cached graph and a hard link to the wrong inode are repaired, not reused', async () => {
    const cache = path.join(root, 'c1');
    const first = await Model.load(model, { providers: ['cpu'], cacheDir: cache });
    const want = await run(first);
    await first.dispose();
    const [entry] = entries(cache);
    fs.truncateSync(path.join(entry, 'model.onnx'), 10);
    const link = path.join(entry, 'model.safetensors');
    const bytes = new Uint8Array(fs.readFileSync(link));
    fs.rmSync(link);
    fs.writeFileSync(link, bytes); // a copy: another inode
    const logs: string[] = [];
    const again = await Model.load(model, { providers: ['cpu'], cacheDir: cache, log: (l) => logs.push(l) });
    assert.deepEqual(await run(again), want);
    await again.dispose();
    assert.ok(logs.some((l) => /model\.onnx was damaged .*; rebuilt/.test(l)), logs.join('\n'));
    assert.ok(logs.some((l) => /no longer links to .*; relinked/.test(l)), logs.join('\n'));
    assert.equal(fs.statSync(link).ino, fs.statSync(path.join(model, 'model.safetensors')).ino);
    assert.deepEqual(entries(cache), [entry]);
  });

  it('an entry in use is never removed; once released, the entry of a deleted model is (no hard link keeps its bytes)', async () => {
    const cache = path.join(root, 'c2');
    const dir = path.join(root, 'doomed');
    fs.cpSync(model, dir, { recursive: true });
    const m = await Model.load(dir, { providers: ['cpu'], cacheDir: cache });
    const [entry] = entries(cache);
    assert.deepEqual(clearCache(cache).inUse, [entry], 'Clear Cache keeps what a loaded model uses');
    assert.deepEqual(pruneCache(cache, { limit: 0 }).removed, [], 'so does the size limit');
    assert.equal((await run(m)).length, 2 * 16, 'and the model still runs');
    fs.rmSync(dir, { recursive: true });
    assert.deepEqual(pruneCache(cache).removed, [], 'a deleted model still loaded keeps its entry');
    await m.dispose();
    const r = pruneCache(cache);
    assert.deepEqual(r.removed.map((x) => x.path), [entry]);
    assert.match(r.removed[0].reason, /doomed\/model\.safetensors was deleted/);
    assert.ok(r.freedBytes > 1000, 'the last link to the weights was in the cache');
    assert.equal(fs.existsSync(entry), false);
  });

  it('over the size limit, least recently used entries go first', async () => {
    const cache = path.join(root, 'c3');
    const made: string[] = [];
    for (const seed of [1, 2, 3]) {
      const dir = path.join(root, `m${seed}`);
      writeRandomGpt2(dir, { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 16 }, { seed, tokenizerJson: { model: { type: 'BPE', vocab: { a: 0, b: 1 }, merges: [] } } });
      await (await Model.load(dir, { providers: ['cpu'], cacheDir: cache })).dispose();
      made.push(entries(cache).find((e) => !made.includes(e))!);
      const t = new Date(Date.now() - (10 - seed) * 60_000);
      fs.utimesSync(`${made.at(-1)}.entry.json`, t, t);
    }
    const size = fs.statSync(path.join(made[0], 'model.onnx')).size;
    const r = pruneCache(cache, { limit: 2 * size + 100 });
    assert.deepEqual(r.removed.map((x) => x.path), [made[0]]);
    assert.match(r.removed[0].reason, /least recently used/);
    assert.deepEqual(entries(cache).sort(), made.slice(1).sort());
  });
});

describe('cache entries in use, and no waiting for the cache lock', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cache-use-'));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const source = path.join(root, 'source.bin');
  fs.writeFileSync(source, 'weights');
  /** A process that runs as long as this test does: the test runner. */
  const LIVE_PID = process.ppid;
  let n = 0;
  /** An ONNX entry with a record, last used `ago` s ago. */
  const fakeEntry = (cache: string, ago = 60) => {
    const dir = path.join(cache, 'onnx', crypto.randomBytes(12).toString('hex'));
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'model.onnx'), 'graph');
    recordEntry(dir, 'test', [sourceRecord(source)]);
    const t = new Date(Date.now() - ago * 1000);
    fs.utimesSync(`${dir}.entry.json`, t, t);
    return dir;
  };
  const liveMarker = (entry: string) => {
    const m = `${entry}.in-use-${hostTag()}-${LIVE_PID}`;
    fs.writeFileSync(m, JSON.stringify({ pid: LIVE_PID, host: os.hostname() }));
    return m;
  };

  it('an entry marked in use while Clear Cache runs is kept, and so is its marker', () => {
    const cache = path.join(root, `c${++n}`);
    const made = [fakeEntry(cache), fakeEntry(cache)];
    const markers: string[] = [];
    // After the first removal, another process starts using the other entry (it was scanned as unused).
    const r = clearCache(cache, (m) => {
      if (m.startsWith('cache: removed') && !markers.length) for (const e of made) if (fs.existsSync(e)) markers.push(liveMarker(e));
    });
    assert.equal(r.removed.length, 1);
    const kept = made.find((e) => fs.existsSync(e))!;
    assert.deepEqual(r.inUse, [kept]);
    assert.ok(fs.existsSync(path.join(kept, 'model.onnx')) && fs.existsSync(`${kept}.entry.json`), 'entry and record kept');
    assert.ok(markers.length === 1 && fs.existsSync(markers[0]), 'the live marker is never removed');
  });

  it('an entry marked in use just as it is being removed is put back whole', () => {
    const cache = path.join(root, `c${++n}`);
    const entry = fakeEntry(cache);
    const renameSync = realFs.renameSync;
    let marker = '';
    // The marker appears after the pruner's last look and before it moves the entry away.
    mock.method(realFs, 'renameSync', (...args: Parameters<typeof realFs.renameSync>) => {
      if (args[0] === entry && !marker) marker = liveMarker(entry);
      return renameSync.apply(realFs, args);
    });
    let r: ReturnType<typeof clearCache>;
    try {
      r = clearCache(cache);
    } finally {
      mock.restoreAll();
    }
    assert.ok(marker, 'the entry was being removed');
    assert.deepEqual(r.removed, []);
    assert.deepEqual(r.inUse, [entry]);
    assert.equal(fs.readFileSync(path.join(entry, 'model.onnx'), 'utf8'), 'graph');
    assert.ok(fs.existsSync(`${entry}.entry.json`) && fs.existsSync(marker));
    assert.deepEqual(fs.readdirSync(path.join(cache, 'onnx')).filter((f) => f.includes('removing')), [], 'nothing left aside');
  });

  it('marking an entry in use never waits for the cache lock, and is seen by pruning', () => {
    const cache = path.join(root, `c${++n}`);
    const entry = fakeEntry(cache);
    const kindDir = path.dirname(entry);
    fs.writeFileSync(lockPath(kindDir), JSON.stringify({ pid: LIVE_PID, host: os.hostname(), what: 'residual cache', since: new Date().toISOString() }));
    const t0 = performance.now();
    const release = useEntry(entry);
    assert.ok(performance.now() - t0 < 1000, `useEntry took ${(performance.now() - t0).toFixed(0)} ms`);
    const marker = `${entry}.in-use-${hostTag()}-${process.pid}`;
    assert.ok(fs.existsSync(marker), 'the marker names this machine and process');
    fs.rmSync(lockPath(kindDir));
    assert.deepEqual(clearCache(cache).inUse, [entry]);
    release();
    assert.equal(fs.existsSync(marker), false);
    assert.equal(clearCache(cache).removed.length, 1);
  });

  it('Clear Cache and pruning never wait for a cache folder another process holds: it is skipped at once', () => {
    const cache = path.join(root, `c${++n}`);
    const entry = fakeEntry(cache);
    const kindDir = path.dirname(entry);
    fs.writeFileSync(lockPath(kindDir), JSON.stringify({ pid: LIVE_PID, host: os.hostname(), what: 'residual cache', since: new Date().toISOString() }));
    const logs: string[] = [];
    const t0 = performance.now();
    const r = clearCache(cache, (m) => logs.push(m));
    assert.ok(performance.now() - t0 < 1000, `Clear Cache took ${(performance.now() - t0).toFixed(0)} ms`);
    assert.deepEqual(r.skipped, [kindDir]);
    assert.deepEqual(r.removed, []);
    assert.ok(fs.existsSync(entry));
    assert.ok(logs.some((l) => /is being pruned by another process; skipped/.test(l)), logs.join('\n'));
    assert.deepEqual(pruneCache(cache, { limit: 0 }).skipped, [kindDir]);
  });

  it("sizes are written by memory.ts's formatBytes (one way for the whole engine)", () => {
    assert.equal(cacheModule.formatBytes, formatBytes);
  });
});
