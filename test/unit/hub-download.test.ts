/**
 * Hub download against the mock Hub on 127.0.0.1 (test/helpers/mock-hub.ts; never the real network): complete and
 * repeated downloads, resume after a dropped or stalled connection, a server that ignores Range, checksum failures,
 * gated repositories, offline, hostile listings, cancellation, transcoder sets, and the CLI.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { loadTranscoders } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeSaeLensTranscoders } from '../../src/engine/circuits/transcoders-write';
import { isCancelled } from '../../src/engine/errors';
import { lockPath } from '../../src/engine/files';
import { DEFAULT_ANSWER_TIMEOUT_S, DEFAULT_STALL_TIMEOUT_S, downloadFromHub, downloadRepo, hubTimeouts, type DownloadProgress, type WaitingProgress } from '../../src/engine/hub/download';
import { HubError } from '../../src/engine/hub/errors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { closedPort, MockHub, readTree } from '../helpers/mock-hub';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-hub-'));
const MODEL = 'acme/tiny-gpt2';
const GATED = 'acme/gated-gpt2';
const PICKLE = 'acme/pickle-only';
const TRANSCODERS = 'acme/tiny-transcoders';
const TOKEN = 'hf_mocktoken123';
const WEIGHTS = 'model.safetensors';

// The served model: a tiny random GPT-2 (3.3 MB of weights, most of it the 50257 × 16 embedding, so a file spans
// many chunks), plus files the download must leave alone.
const src = path.join(root, 'src-model');
writeRandomGpt2(src, { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257 }, { seed: 3, tokenizerJson: gpt2TokenizerJSON() });
const modelFiles = readTree(src);
modelFiles.set('generation_config.json', new TextEncoder().encode('{"bos_token_id": 50256}\n'));
const served = new Map(modelFiles);
served.set('pytorch_model.bin', new Uint8Array(1000).fill(7));
served.set('onnx/model.onnx', new Uint8Array(100).fill(1));
const weightsSize = modelFiles.get(WEIGHTS)!.length;

const tsrc = path.join(root, 'src-transcoders');
writeSaeLensTranscoders(tsrc, randomTranscoderWeights(2, 16, 32, { seed: 1 }), { activation: 'relu' });
const transcoderFiles = new Map([...readTree(tsrc)].map(([p, b]) => [`sets/relu/${p}`, b]));
transcoderFiles.set('sets/other/layer_0/sae_weights.safetensors', new Uint8Array(64));

const hub = new MockHub(
  new Map([
    [MODEL, { files: served }],
    [GATED, { files: new Map(modelFiles), gated: { token: TOKEN } }],
    [PICKLE, { files: new Map([['config.json', modelFiles.get('config.json')!], ['pytorch_model.bin', new Uint8Array(10)]]) }],
    [TRANSCODERS, { files: transcoderFiles }],
  ]),
);

let n = 0;
const freshDir = () => path.join(root, `dest-${++n}`);
const expectHub = (reason: string, re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof HubError, `expected a HubError, got ${String(e)}`);
  assert.equal(e.reason, reason, e.message);
  if (re) assert.match(e.message, re);
  return true;
};
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const sameBytes = (dir: string, files: Map<string, Uint8Array>) => {
  for (const [p, b] of files) assert.equal(sha(new Uint8Array(fs.readFileSync(path.join(dir, p)))), sha(b), `${p} differs`);
};
/** A second run resumes the weights from the `kept` bytes of the .part file: one Range request for the rest. */
async function resumesFrom(dest: string, kept: number): Promise<void> {
  hub.requests.length = 0;
  const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
  const f = s.files.find((x) => x.path === WEIGHTS)!;
  assert.equal(f.status, 'resumed');
  assert.equal(f.resumedFrom, kept);
  assert.equal(f.fetchedBytes, weightsSize - kept);
  assert.equal(hub.fileRequests(WEIGHTS).find((r) => r.path.startsWith('/cdn/'))!.range, `bytes=${kept}-`);
  sameBytes(dest, modelFiles);
}
const leftovers = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.part')) : []);

before(async () => {
  await hub.start();
});
after(async () => {
  await hub.close();
  fs.rmSync(root, { recursive: true, force: true });
});
beforeEach(() => {
  hub.requests.length = 0;
  hub.faults.dropAfter.clear();
  hub.faults.stallAfter.clear();
  hub.faults.corrupt.clear();
  hub.faults.ignoreRange = false;
  hub.faults.listing = undefined;
  hub.faults.hang.clear();
  hub.faults.stallAt.clear();
  hub.faults.redirects.clear();
  hub.faults.close.clear();
  hub.faults.hold.clear();
  hub.faults.answer.clear();
  hub.faults.listingLinksToItself = false;
});

describe('hub download', () => {
  it('downloads config, tokenizer and weights byte-identical (nothing else), the checkpoint loader opens them, and a re-run fetches nothing', async () => {
    const dest = freshDir();
    const events: DownloadProgress[] = [];
    const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url, onProgress: (p) => events.push(p) });
    assert.deepEqual(fs.readdirSync(dest).sort(), [...modelFiles.keys()].sort());
    sameBytes(dest, modelFiles);
    const total = [...modelFiles.values()].reduce((a, b) => a + b.length, 0);
    assert.equal(s.totalBytes, total);
    assert.equal(s.fetchedBytes, total);
    assert.equal(s.sources[0].commit.length, 40, 'pinned to the commit');
    assert.ok(hub.requests.some((r) => r.path.includes(`/resolve/${s.sources[0].commit}/`)), 'files fetched at the commit');
    assert.deepEqual(new Set(s.files.map((f) => f.verifiedBy)), new Set(['sha256', 'git-sha1']));
    assert.equal(s.files.find((f) => f.path === WEIGHTS)!.verifiedBy, 'sha256');
    const last = events.at(-1)!;
    assert.equal(last.overallBytes, total);
    assert.equal(last.overallTotal, total);
    for (let i = 1; i < events.length; i++) assert.ok(events[i].overallBytes >= events[i - 1].overallBytes, 'progress never goes back');
    const ckpt = openCheckpoint(dest);
    assert.equal(ckpt.config.nLayers, 2);
    assert.equal(ckpt.config.dModel, 16);

    hub.requests.length = 0;
    const again = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
    assert.equal(again.fetchedBytes, 0);
    assert.ok(again.files.every((f) => f.status === 'skipped'));
    assert.equal(hub.requests.filter((r) => r.path.includes('/resolve/') || r.path.startsWith('/cdn/')).length, 0, 'no file requests on a re-run');
  });

  it('a file changed on disk is fetched again on the next run', async () => {
    const dest = freshDir();
    await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
    const cfg = path.join(dest, 'config.json');
    fs.writeFileSync(cfg, fs.readFileSync(cfg, 'utf8').replace('"n_layer": 2', '"n_layer": 3'));
    const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
    assert.equal(s.files.find((f) => f.path === 'config.json')!.status, 'downloaded');
    sameBytes(dest, modelFiles);
  });

  it('a connection dropped mid-file resumes with Range in the same run and fetches only the rest', async () => {
    const dest = freshDir();
    const drop = 1_000_000;
    hub.faults.dropAfter.set(WEIGHTS, drop);
    const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
    const reqs = hub.fileRequests(WEIGHTS).filter((r) => r.path.startsWith('/cdn/'));
    assert.equal(reqs.length, 2, JSON.stringify(reqs));
    assert.equal(reqs[0].range, undefined);
    const from = Number(/^bytes=(\d+)-$/.exec(reqs[1].range ?? '')?.[1]);
    assert.ok(from > 0 && from <= drop, `resumed from ${reqs[1].range}`);
    assert.equal(reqs[1].status, 206);
    assert.equal(reqs[1].sent, weightsSize - from);
    const f = s.files.find((x) => x.path === WEIGHTS)!;
    assert.equal(f.fetchedBytes, weightsSize, 'no byte fetched twice');
    sameBytes(dest, modelFiles);
    assert.deepEqual(leftovers(dest), []);
  });

  it('without retries a dropped connection fails with a resumable error; the next run fetches only the rest', async () => {
    const dest = freshDir();
    hub.faults.dropAfter.set(WEIGHTS, 700_000);
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url, retries: 0 }),
      expectHub('interrupted', /model\.safetensors.*broke.*resumes there next time/),
    );
    assert.equal(fs.existsSync(path.join(dest, WEIGHTS)), false, 'no final file before verification');
    const kept = fs.statSync(path.join(dest, WEIGHTS + '.part')).size;
    assert.ok(kept > 0 && kept <= 700_000, `kept ${kept}`);

    await resumesFrom(dest, kept);
    assert.deepEqual(leftovers(dest), []);
  });

  it('a server that ignores Range (200) restarts the file from byte 0 and still ends correct', async () => {
    const dest = freshDir();
    hub.faults.dropAfter.set(WEIGHTS, 500_000);
    await assert.rejects(downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url, retries: 0 }), expectHub('interrupted'));
    hub.faults.ignoreRange = true;
    hub.requests.length = 0;
    const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
    const f = s.files.find((x) => x.path === WEIGHTS)!;
    assert.equal(f.restarts, 1);
    assert.equal(f.fetchedBytes, weightsSize);
    const cdn = hub.fileRequests(WEIGHTS).filter((r) => r.path.startsWith('/cdn/'));
    assert.ok(cdn[0].range?.startsWith('bytes='), 'it asked for a range');
    assert.equal(cdn[0].status, 200);
    sameBytes(dest, modelFiles);
  });

  it('a stale .part (another version or damaged) fails its checksum once, then downloads from scratch', async () => {
    const dest = freshDir();
    fs.mkdirSync(dest, { recursive: true });
    fs.writeFileSync(path.join(dest, WEIGHTS + '.part'), new Uint8Array(4096).fill(9));
    const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
    const f = s.files.find((x) => x.path === WEIGHTS)!;
    assert.equal(f.restarts, 1);
    assert.equal(f.status, 'downloaded');
    sameBytes(dest, modelFiles);
  });

  for (const [file, algo] of [
    [WEIGHTS, 'sha256'],
    ['tokenizer.json', 'git-sha1'],
  ] as const) {
    it(`corrupted bytes in ${file} (${algo}) give a checksum error naming the file and leave no file behind`, async () => {
      const dest = freshDir();
      hub.faults.corrupt.add(file);
      await assert.rejects(
        downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url }),
        expectHub('checksum', new RegExp(`${MODEL}/${file.replace('.', '\\.')}: checksum mismatch.*${algo}.*nothing was installed`)),
      );
      assert.equal(fs.existsSync(path.join(dest, file)), false);
      assert.equal(fs.existsSync(path.join(dest, file + '.part')), false);
    });
  }

  it('a gated repository: 401 without a token and 403 with a wrong one give the licence page and the token command; the right token works', async () => {
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: GATED, destDir: freshDir() }, { endpoint: hub.url }),
      expectHub('gated', new RegExp(`acme/gated-gpt2 is gated: accept the licence on ${hub.url}/acme/gated-gpt2 and set a token with 'Residual: Set Hugging Face Token…'`)),
    );
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: GATED, destDir: freshDir() }, { endpoint: hub.url, token: 'hf_wrong' }),
      expectHub('gated', /token has no access.*accept the licence on/),
    );
    hub.requests.length = 0;
    const dest = freshDir();
    await downloadRepo({ kind: 'model', repo: GATED, destDir: dest }, { endpoint: hub.url, token: TOKEN });
    sameBytes(dest, modelFiles);
    const resolves = hub.requests.filter((r) => r.path.includes('/resolve/'));
    assert.ok(resolves.length >= modelFiles.size);
    assert.ok(resolves.every((r) => r.authorization === `Bearer ${TOKEN}`), 'every file request carries the token');
  });

  it('a refused connection (nothing listens on the port) says so, not "offline", and changes nothing', async () => {
    const dest = freshDir();
    const port = await closedPort();
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: `http://127.0.0.1:${port}` }),
      expectHub('refused', new RegExp(`^127\\.0\\.0\\.1:${port} refused the connection \\(ECONNREFUSED\\): no server is listening there.*; nothing was changed`)),
    );
    assert.equal(fs.existsSync(dest), false);
  });

  it('the server going away mid-file keeps the .part and says the download resumes', async () => {
    const dest = freshDir();
    const port = await closedPort();
    hub.faults.dropAfter.set(WEIGHTS, 300_000);
    let redirected = false;
    // After the drop, the retry goes to a closed port: as if the network went down mid-download.
    const flaky: typeof fetch = (input, init) => {
      const u = String(input instanceof Request ? input.url : input);
      if (redirected && u.includes('/resolve/')) return fetch(u.replace(hub.url, `http://127.0.0.1:${port}`), init);
      if (u.includes(`/resolve/`) && u.endsWith(WEIGHTS)) redirected = true;
      return fetch(input, init);
    };
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url, fetch: flaky }),
      expectHub('refused', /refused the connection \(ECONNREFUSED\).*\. Files already complete are kept, partial files \(\.part\) are kept/),
    );
    assert.ok(fs.statSync(path.join(dest, WEIGHTS + '.part')).size > 0);
  });

  it('refuses hostile listings (../, absolute, drive letters) before writing anything', async () => {
    for (const bad of ['../escape.json', '/tmp/abs.json', 'C:/x.json', 'a/../../escape.json']) {
      const dest = freshDir();
      hub.faults.listing = (entries) => [...entries, { type: 'file', oid: 'a'.repeat(40), size: 2, path: bad }];
      await assert.rejects(downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url }), expectHub('hostile', /unsafe file path/));
      assert.equal(fs.existsSync(dest), false, bad);
      assert.equal(fs.existsSync(path.join(root, 'escape.json')), false);
    }
  });

  it('refuses an invalid repository id before any request', async () => {
    await assert.rejects(downloadRepo({ kind: 'model', repo: '../etc', destDir: freshDir() }, { endpoint: hub.url }), /expected owner\/name|not a valid/);
    assert.equal(hub.requests.length, 0);
  });

  it('a missing repository, revision or folder says which', async () => {
    await assert.rejects(downloadRepo({ kind: 'model', repo: 'acme/nope', destDir: freshDir() }, { endpoint: hub.url }), expectHub('not-found', /repository acme\/nope not found/));
    await assert.rejects(downloadRepo({ kind: 'model', repo: MODEL, revision: 'v9', destDir: freshDir() }, { endpoint: hub.url }), expectHub('not-found', /revision 'v9' not found in acme\/tiny-gpt2/));
    await assert.rejects(
      downloadRepo({ kind: 'transcoders', repo: TRANSCODERS, subfolder: 'sets/none', destDir: freshDir() }, { endpoint: hub.url }),
      expectHub('not-found', /sets\/none: not found/),
    );
  });

  it('a pickle-only repository is refused without downloading the pickle', async () => {
    await assert.rejects(downloadRepo({ kind: 'model', repo: PICKLE, destDir: freshDir() }, { endpoint: hub.url }), expectHub('no-weights', /pickle/));
    assert.equal(hub.requests.filter((r) => r.path.includes('/resolve/')).length, 0);
  });

  it('cancelling (AbortSignal) mid-file stops, keeps the .part, and the next run resumes it', async () => {
    const dest = freshDir();
    const ac = new AbortController();
    // The mock holds the file after 1 MB, so the cancel lands mid-file.
    hub.faults.stallAfter.set(WEIGHTS, 1_000_000);
    let armed = false;
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, {
        endpoint: hub.url,
        signal: ac.signal,
        onProgress: (p) => p.file.endsWith(WEIGHTS) && !armed && (armed = true) && setTimeout(() => ac.abort(), 300),
      }),
      (e) => isCancelled(e) && /cancelled; \d+ of \d+ bytes are kept in .*model\.safetensors\.part/.test((e as Error).message),
    );
    const kept = fs.statSync(path.join(dest, WEIGHTS + '.part')).size;
    assert.ok(kept > 0 && kept <= 1_000_000, `kept ${kept}`);
    await resumesFrom(dest, kept);
  });

  it('cancelling (CancelToken) a stalled download returns within a fraction of a second', async () => {
    const dest = freshDir();
    hub.faults.stallAfter.set(WEIGHTS, 200_000);
    const token = { isCancellationRequested: false };
    let cancelledAt = 0;
    const p = downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, {
      endpoint: hub.url,
      cancel: token,
      onProgress: (e) => {
        if (e.file.endsWith(WEIGHTS) && !cancelledAt) {
          cancelledAt = -1;
          setTimeout(() => ((token.isCancellationRequested = true), (cancelledAt = performance.now())), 300);
        }
      },
    });
    await assert.rejects(p, (e) => isCancelled(e));
    const ms = performance.now() - cancelledAt;
    assert.ok(cancelledAt > 0 && ms < 500, `stopped ${ms.toFixed(0)} ms after the cancel`);
    assert.ok(fs.statSync(path.join(dest, WEIGHTS + '.part')).size > 0);
  });

  it('a stalled connection times out and resumes', async () => {
    const dest = freshDir();
    hub.faults.stallAfter.set(WEIGHTS, 400_000);
    const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url, idleTimeoutMs: 500 });
    const cdn = hub.fileRequests(WEIGHTS).filter((r) => r.path.startsWith('/cdn/'));
    assert.ok(cdn.length >= 2, 'reconnected after the stall');
    assert.equal(cdn[0].sent, 400_000);
    assert.match(cdn[1].range ?? '', /^bytes=[1-9]\d*-$/);
    assert.equal(s.files.find((x) => x.path === WEIGHTS)!.fetchedBytes, weightsSize);
    sameBytes(dest, modelFiles);
  });

  it('a model with a transcoder subfolder lands in <model>/transcoders, where the circuits loader finds it', async () => {
    const dest = freshDir();
    const s = await downloadFromHub(
      [
        { kind: 'model', repo: MODEL, destDir: dest },
        { kind: 'transcoders', repo: TRANSCODERS, subfolder: 'sets/relu', destDir: path.join(dest, 'transcoders') },
      ],
      { endpoint: hub.url },
    );
    assert.deepEqual(s.sources.map((x) => x.kind), ['model', 'transcoders']);
    const tdir = path.join(dest, 'transcoders');
    assert.deepEqual(fs.readdirSync(tdir).sort(), ['layer_0', 'layer_1']);
    sameBytes(tdir, readTree(tsrc));
    const set = loadTranscoders(tdir, openCheckpoint(dest).config);
    assert.equal(set.layers.length, 2);
    assert.ok(hub.requests.some((r) => r.path.includes('/tree/') && r.path.endsWith('/sets/relu')), 'listed only the subfolder');
  });

  it('residual download (CLI): JSON summary on stdout, progress on stderr, one-line error with exit 2', async () => {
    const cli = (args: string[], env: Record<string, string> = {}) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const c = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', '..', 'src', 'cli', 'main.ts'), 'download', ...args], { env: { ...process.env, HF_TOKEN: '', HF_ENDPOINT: '', ...env } });
        let out = '';
        let err = '';
        c.stdout.on('data', (d) => (out += d));
        c.stderr.on('data', (d) => (err += d));
        c.on('close', (code) => resolve({ code, out, err }));
      });
    const dest = freshDir();
    const r = await cli(['--repo', GATED, '--out', dest, '--transcoders', `${TRANSCODERS}:sets/relu`, '--json'], { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN });
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.equal(j.model_dir, dest);
    assert.equal(j.transcoders_dir, path.join(dest, 'transcoders'));
    assert.equal(j.files.length, modelFiles.size + readTree(tsrc).size);
    assert.match(r.err, /model\.safetensors/);
    sameBytes(dest, modelFiles);

    const bad = await cli(['--repo', GATED, '--out', freshDir(), '--endpoint', hub.url]);
    assert.equal(bad.code, 2);
    assert.equal(bad.out, '');
    assert.match(bad.err.trim().split('\n').at(-1)!, /^residual: .*gated-gpt2 is gated: accept the licence .*HF_TOKEN/);
  });

  it('two residual download processes into one folder: the second is refused naming the first, whose files verify', async () => {
    const dest = freshDir();
    let letGo = () => {};
    hub.faults.hold.set('cdn', new Promise<void>((r) => (letGo = r)));
    const cli = (args: string[]) => {
      const c = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', '..', 'src', 'cli', 'main.ts'), 'download', ...args], {
        env: { ...process.env, HF_TOKEN: '', HF_ENDPOINT: hub.url },
      });
      let out = '';
      let err = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (err += d));
      return { pid: c.pid!, done: new Promise<{ code: number | null; out: string; err: string }>((resolve) => c.on('close', (code) => resolve({ code, out, err }))) };
    };
    const first = cli(['--repo', MODEL, '--out', dest, '--json']);
    // The first holds the lock and waits for the weights' bytes (held by the mock) when the second starts.
    while (!hub.requests.some((r) => r.path.startsWith('/cdn/'))) await new Promise((r) => setTimeout(r, 20));
    const second = await cli(['--repo', MODEL, '--out', dest]).done;
    letGo();
    const a = await first.done;
    assert.equal(second.code, 2, second.err);
    assert.equal(second.out, '');
    assert.match(second.err.trim(), new RegExp(`^residual: ${dest.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: is being written by process ${first.pid} on .* \\(residual download ${MODEL}, since \\d{4}-`));
    assert.equal(a.code, 0, a.err);
    assert.equal(JSON.parse(a.out).files.length, modelFiles.size);
    sameBytes(dest, modelFiles);
    assert.equal(fs.existsSync(lockPath(dest)), false, 'the lock is released');
  });

  it('a lock file naming a process that is gone is taken over', async () => {
    const dest = freshDir();
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    fs.writeFileSync(lockPath(dest), JSON.stringify({ pid: dead, host: os.hostname(), what: `residual download ${MODEL}`, since: '2025-01-01T00:00:00.000Z' }));
    const s = await downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url });
    assert.equal(s.files.length, modelFiles.size);
    sameBytes(dest, modelFiles);
    assert.equal(fs.existsSync(lockPath(dest)), false);
  });

  it('a redirect to another origin does not carry the token; same-origin requests do', async () => {
    const other = new MockHub(new Map([[GATED, { files: new Map(modelFiles), sha: 'b'.repeat(40) }]]));
    await other.start();
    try {
      const w = modelFiles.get(WEIGHTS)!;
      hub.faults.redirects.set(`/cdn/${sha(w)}`, `${other.url}/cdn/${sha(w)}`);
      const dest = freshDir();
      await downloadRepo({ kind: 'model', repo: GATED, destDir: dest }, { endpoint: hub.url, token: TOKEN });
      sameBytes(dest, modelFiles);
      assert.ok(other.requests.length > 0, 'the other origin was asked');
      assert.ok(other.requests.every((r) => r.authorization === undefined), JSON.stringify(other.requests));
      assert.ok(hub.requests.filter((r) => r.path.includes('/resolve/')).every((r) => r.authorization === `Bearer ${TOKEN}`));
    } finally {
      await other.close();
    }
  });

  it('a model-info request never answered fails after the answer deadline, saying so while it waits', async () => {
    hub.faults.hang.set('info', -1);
    const waits: WaitingProgress[] = [];
    const t0 = performance.now();
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: MODEL, destDir: freshDir() }, { endpoint: hub.url, answerTimeoutMs: 1200, idleTimeoutMs: 1000, waitNoticeMs: 100, onWaiting: (w) => waits.push(w) }),
      expectHub('timeout', /did not answer the model-info request for acme\/tiny-gpt2 within 1\.2 s/),
    );
    const ms = performance.now() - t0;
    assert.ok(ms >= 1100 && ms < 3000, `${ms} ms`);
    assert.ok(waits.length >= 1 && waits.every((w) => w.kind === 'answer' && w.file === MODEL && w.giveUpMs === 1200), JSON.stringify(waits));
  });

  it('a transfer that keeps stalling at the same byte fails as stalled after one resume, keeping the .part', async () => {
    const dest = freshDir();
    hub.faults.stallAt.set(WEIGHTS, 500_000);
    await assert.rejects(
      downloadRepo({ kind: 'model', repo: MODEL, destDir: dest }, { endpoint: hub.url, idleTimeoutMs: 400 }),
      expectHub('stalled', /model\.safetensors: the transfer stalled: no data from .* for 0\.4 s after 500000 of \d+ bytes/),
    );
    assert.equal(hub.fileRequests(WEIGHTS).filter((r) => r.path.startsWith('/cdn/')).length, 2, 'one resume, then it gives up');
    assert.equal(fs.statSync(path.join(dest, WEIGHTS + '.part')).size, 500_000);
    hub.faults.stallAt.clear();
    await resumesFrom(dest, 500_000);
  });

  it('deadlines come from HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT (seconds), default 20 s and 30 s', () => {
    assert.deepEqual(hubTimeouts({}), { answerMs: DEFAULT_ANSWER_TIMEOUT_S * 1000, stallMs: DEFAULT_STALL_TIMEOUT_S * 1000 });
    assert.deepEqual(hubTimeouts({ HF_HUB_ETAG_TIMEOUT: '2.5', HF_HUB_DOWNLOAD_TIMEOUT: ' 60 ' }), { answerMs: 2500, stallMs: 60_000 });
    for (const bad of ['abc', '-1', '0', 'Infinity', '1e9']) assert.throws(() => hubTimeouts({ HF_HUB_ETAG_TIMEOUT: bad }), /HF_HUB_ETAG_TIMEOUT: must be a number of seconds/);
  });
});
