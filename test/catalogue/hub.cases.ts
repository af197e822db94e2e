/**
 * Bad inputs of the Hub download and the vector files (issue 14): two writers at once (class 2) and the Hub's
 * faults (class 10): no answer, a stalled transfer, redirect loops and redirects to file://, DNS, refused
 * connections, TLS, a captive portal, a listing that never ends, bad timeout settings. Every case talks to a mock Hub
 * on 127.0.0.1 (test/helpers/mock-hub.ts; never the network), through the engine (`downloadRepo`, with 1 s deadlines)
 * or, where the process is the point, the real CLI. Nothing runs at import: servers, folders and processes are made
 * inside the cases (`untouched` runs first, so the cases that need a file in place before the snapshot make it there).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { errorMessage, isCancelled } from '../../src/engine/errors';
import { lockPath } from '../../src/engine/files';
import type { DownloadOptions, WaitingProgress } from '../../src/engine/hub/download';
import { runCli, type BadInputCase } from '../helpers/catalogue';
import type { MockHub, MockRepo } from '../helpers/mock-hub';

const REPO = 'acme/tiny';
const OTHER = 'acme/other';
const TC = 'acme/tiny-transcoders';
const SHA = '0123456789abcdef0123456789abcdef01234567';
const WEIGHTS = 'model.safetensors';
const RESOLVE = `/${REPO}/resolve/${SHA}/${WEIGHTS}`;
/** Deadlines short enough for tests (the defaults are 20 s and 30 s). */
const FAST: DownloadOptions = { answerTimeoutMs: 1000, idleTimeoutMs: 1000 };
/** A failure must come within this, or the case fails (the deadline is 1 s; a hang would be minutes). */
const BOUND_MS = 6000;

let rootDir: string | undefined;
/** The catalogue's temporary folder, made on first use and removed at exit. */
function root(): string {
  if (!rootDir) {
    rootDir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cat-hub-'));
    const dir = rootDir;
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return rootDir;
}
const at = (...p: string[]) => path.join(root(), ...p);

/** Deterministic bytes (a model's weights need not parse: the download verifies checksums only). */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let block = new Uint8Array(createHash('sha256').update(String(seed)).digest());
  for (let i = 0; i < n; i += 32) {
    out.set(block.subarray(0, Math.min(32, n - i)), i);
    block = new Uint8Array(createHash('sha256').update(block).digest());
  }
  return out;
}

let served: Map<string, MockRepo> | undefined;
/** The served repositories: a tiny model (weights first in the listing), another model, a transcoder set. */
function repos(): Map<string, MockRepo> {
  served ??= new Map<string, MockRepo>([
    [REPO, { sha: SHA, files: new Map([[WEIGHTS, bytes(300_000, 1)], ['config.json', new TextEncoder().encode('{"model_type": "gpt2"}\n')], ['tokenizer.json', new TextEncoder().encode('{}\n')]]) }],
    [OTHER, { files: new Map([[WEIGHTS, bytes(200_000, 2)], ['config.json', new TextEncoder().encode('{"model_type": "llama"}\n')]]) }],
    [TC, { files: new Map([['layer_0/cfg.json', new TextEncoder().encode('{}\n')], ['layer_0/sae_weights.safetensors', bytes(1000, 3)]]) }],
  ]);
  return served;
}

/** Runs `fn` against a fresh mock Hub set up by `setup`, and closes it. */
async function withHub<T>(setup: (hub: MockHub) => void, fn: (hub: MockHub) => Promise<T>, tls = false): Promise<T> {
  const { MockHub } = await import('../helpers/mock-hub');
  const hub = new MockHub(repos(), { tls });
  setup(hub);
  await hub.start();
  try {
    return await fn(hub);
  } finally {
    await hub.close();
  }
}

/** The message of a download that must fail within {@link BOUND_MS} (else a line that matches no expectation). */
async function failure(p: Promise<unknown>): Promise<string> {
  const t0 = performance.now();
  try {
    await p;
    return 'the download succeeded';
  } catch (e) {
    const ms = performance.now() - t0;
    return ms > BOUND_MS ? `took ${ms.toFixed(0)} ms, more than ${BOUND_MS} ms` : isCancelled(e) ? (e as Error).message : errorMessage(e);
  }
}

async function download(repo: string, dest: string, opts: DownloadOptions) {
  const { downloadRepo } = await import('../../src/engine/hub/download');
  return downloadRepo({ kind: 'model', repo, destDir: dest }, opts);
}

/** A model download of {@link REPO} into `at(name)` from a mock Hub with `setup`'s faults; its error message. */
function hubFailure(name: string, setup: (hub: MockHub) => void, opts: DownloadOptions = {}, tls = false): Promise<string> {
  return withHub(setup, (hub) => failure(download(REPO, at(name), { endpoint: hub.url, ...FAST, ...opts })), tls);
}

/** The same against an endpoint that is not the mock Hub. */
function endpointFailure(name: string, endpoint: string): Promise<string> {
  return failure(download(REPO, at(name), { endpoint, ...FAST }));
}

/** Whether the lock beside `target` is gone, in words. */
const lockState = (target: string) => (fs.existsSync(lockPath(target)) ? 'lock left behind' : 'lock released');

/** A process that runs until killed: a live holder of a lock. */
function liveProcess(): ChildProcess {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 120000)'], { stdio: 'ignore' });
  child.unref();
  return child;
}
const holders = new Map<string, ChildProcess>();
/** Writes a lock file on `target` held by a live process (made once per target; killed by `release`). */
function holdLock(target: string, what: string): ChildProcess {
  let child = holders.get(target);
  if (!child) {
    child = liveProcess();
    holders.set(target, child);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(lockPath(target), JSON.stringify({ pid: child.pid, host: os.hostname(), what, since: '2025-01-01T00:00:00.000Z' }));
  }
  return child;
}
function release(target: string): void {
  holders.get(target)?.kill();
  holders.delete(target);
}
/** The pid of a process that has exited. */
const deadPid = () => spawnSync(process.execPath, ['-e', '']).pid!;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** Whether `dir` holds exactly the bytes the Hub serves for `repo`. */
function intact(dir: string, repo: string): string {
  const files = repos().get(repo)!.files;
  for (const [p, b] of files) {
    const f = path.join(dir, p);
    if (!fs.existsSync(f) || sha(new Uint8Array(fs.readFileSync(f))) !== sha(b)) return `${p} differs from the Hub's`;
  }
  return 'bytes intact';
}

const vector = (label: string, fill: number) => ({
  vector: new Float32Array(16).fill(fill),
  layer: 0,
  point: 'hook_resid_pre' as const,
  source: 'contrastive' as const,
  label,
  provenance: { model: 'random' },
});

const twoWriters: BadInputCase[] = [
  {
    class: 2,
    name: 'hub: a second download into a folder while the first is mid-transfer',
    expect: new RegExp(
      `^busy: is being written by process ${process.pid} on .* \\(residual download acme/tiny, since \\d{4}-\\d\\d-\\d\\dT.*\\); ` +
        'wait for it to finish.*\\| first download: 3 files verified, bytes intact, lock released$',
    ),
    run: async () => {
      const dest = at('concurrent');
      let release = () => {};
      return withHub(
        (hub) => hub.faults.hold.set('cdn', new Promise<void>((r) => (release = r))),
        async (hub) => {
          const first = download(REPO, dest, { endpoint: hub.url, ...FAST, answerTimeoutMs: 10_000 });
          // Wait until the first has asked for the weights (its lock is long held by then), then start the second.
          while (!hub.requests.some((r) => r.path.startsWith('/cdn/'))) await new Promise((r) => setTimeout(r, 10));
          const second = (await failure(download(REPO, dest, { endpoint: hub.url, ...FAST }))).replace(dest, 'busy');
          release();
          const s = await first;
          return `${second} | first download: ${s.files.length} files verified, ${intact(dest, REPO)}, ${lockState(dest)}`;
        },
      );
    },
  },
  {
    class: 2,
    name: 'hub: a download of another repository into a folder being downloaded into',
    expect: /other-into-same.*is being written by process \d+ .*\(residual download acme\/tiny,.*\| first: bytes intact/,
    run: async () => {
      const dest = at('other-into-same');
      return withHub(
        () => {},
        async (hub) => {
          const first = download(REPO, dest, { endpoint: hub.url, ...FAST });
          const second = await failure(download(OTHER, dest, { endpoint: hub.url, ...FAST }));
          await first;
          return `${second} | first: ${intact(dest, REPO)}`;
        },
      );
    },
  },
  {
    class: 2,
    name: 'hub: a lock left by a download whose process died is taken over',
    expect: /^3 files verified, bytes intact, lock released$/,
    run: async () => {
      const dest = at('stale-lock');
      fs.writeFileSync(lockPath(dest), JSON.stringify({ pid: deadPid(), host: os.hostname(), what: `residual download ${REPO}`, since: '2025-01-01T00:00:00.000Z' }));
      return withHub(
        () => {},
        async (hub) => {
          const s = await download(REPO, dest, { endpoint: hub.url, ...FAST });
          return `${s.files.length} files verified, ${intact(dest, REPO)}, ${lockState(dest)}`;
        },
      );
    },
  },
  {
    class: 2,
    name: 'hub: a download into a folder another live process holds',
    expect: /live-holder: is being written by process \d+ on .*\(residual download acme\/tiny, since 2025-01-01T00:00:00\.000Z\); wait for it to finish, or delete .*\.live-holder\.residual-lock if that process is gone/,
    untouched: () => {
      holdLock(at('live-holder'), `residual download ${REPO}`);
      return [at('live-holder'), lockPath(at('live-holder'))];
    },
    run: async () => {
      try {
        return await hubFailure('live-holder', () => {});
      } finally {
        release(at('live-holder'));
      }
    },
  },
  {
    class: 2,
    name: 'hub: a download into a folder locked from another machine (shared disk)',
    expect: /other-host: .*is being written by process 4242 on build-server-7 \(residual download acme\/tiny, since .*\)/,
    untouched: () => {
      fs.writeFileSync(lockPath(at('other-host')), JSON.stringify({ pid: 4242, host: 'build-server-7', what: `residual download ${REPO}`, since: '2025-01-01T00:00:00.000Z' }));
      return [at('other-host'), lockPath(at('other-host'))];
    },
    run: () => hubFailure('other-host', () => {}),
  },
  {
    class: 2,
    name: 'hub: a download into a folder whose lock file is garbage',
    expect: /garbage-lock: .*is being written by another process \(lock file .*\.garbage-lock\.residual-lock\); wait for it to finish, or delete/,
    untouched: () => {
      fs.writeFileSync(lockPath(at('garbage-lock')), 'not json\n');
      return [at('garbage-lock'), lockPath(at('garbage-lock'))];
    },
    run: () => hubFailure('garbage-lock', () => {}),
  },
  {
    class: 2,
    name: 'hub: a download into a transcoders folder another process is writing',
    expect: /transcoders: is being written by process \d+ .*\(residual download acme\/tiny-transcoders/,
    untouched: () => {
      fs.mkdirSync(at('tc-held'), { recursive: true });
      holdLock(at('tc-held', 'transcoders'), `residual download ${TC}`);
      return [at('tc-held')];
    },
    run: async () => {
      try {
        return await withHub(
          () => {},
          async (hub) => {
            const { downloadFromHub } = await import('../../src/engine/hub/download');
            const dest = at('tc-held');
            return failure(
              downloadFromHub(
                [
                  { kind: 'model', repo: REPO, destDir: dest },
                  { kind: 'transcoders', repo: TC, destDir: path.join(dest, 'transcoders') },
                ],
                { endpoint: hub.url, ...FAST },
              ),
            );
          },
        );
      } finally {
        release(at('tc-held', 'transcoders'));
      }
    },
  },
  {
    class: 2,
    name: 'hub: a download that fails (no such repository) leaves no lock behind',
    expect: /repository acme\/nope not found .*; lock released$/,
    run: async () => {
      const dest = at('failed-release');
      const msg = await withHub(
        () => {},
        async (hub) => failure(download('acme/nope', dest, { endpoint: hub.url, ...FAST })),
      );
      return `${msg}; ${lockState(dest)}`;
    },
  },
  {
    class: 2,
    name: 'hub: a cancelled download leaves no lock behind and keeps its partial file',
    expect: /^download cancelled; [1-9]\d* of 300000 bytes are kept in .*model\.safetensors\.part.*; lock released, \.part kept$/,
    run: async () => {
      const dest = at('cancelled-release');
      const ac = new AbortController();
      const msg = await withHub(
        (hub) => hub.faults.stallAt.set(WEIGHTS, 50_000),
        async (hub) =>
          failure(
            download(REPO, dest, {
              endpoint: hub.url,
              ...FAST,
              idleTimeoutMs: 5000,
              signal: ac.signal,
              onProgress: (p) => p.phase === 'download' && p.bytes > 0 && ac.abort(),
            }),
          ),
      );
      return `${msg}; ${lockState(dest)}, .part ${fs.existsSync(path.join(dest, WEIGHTS + '.part')) ? 'kept' : 'lost'}`;
    },
  },
  {
    class: 2,
    name: 'hub: residual download (CLI) into a folder another process holds',
    expect: /^exit 2: residual: .*cli-held: is being written by process \d+ .*\(residual download acme\/tiny, since/,
    untouched: () => {
      holdLock(at('cli-held'), `residual download ${REPO}`);
      return [at('cli-held'), lockPath(at('cli-held'))];
    },
    run: async () => {
      try {
        const r = await runCli(['download', '--repo', REPO, '--out', at('cli-held'), '--endpoint', 'http://127.0.0.1:9'], { env: { HF_ENDPOINT: '' } });
        return `exit ${r.code}: ${r.stderr.trim()}`;
      } finally {
        release(at('cli-held'));
      }
    },
  },
  {
    class: 2,
    name: 'vectors: saving a steering vector while another process saves the same one',
    expect: /held-vector: is being written by process \d+ on .* \(saving the steering vector held-vector, since .*\); wait for it to finish/,
    untouched: () => {
      if (!fs.existsSync(at('held-vector.json'))) {
        fs.writeFileSync(at('held-vector.json'), '{"old": true}\n');
        fs.writeFileSync(at('held-vector.safetensors'), 'old');
      }
      holdLock(at('held-vector'), 'saving the steering vector held-vector');
      return [at('held-vector.json'), at('held-vector.safetensors'), lockPath(at('held-vector'))];
    },
    run: async () => {
      const { saveVectorFile } = await import('../../src/engine/steering/vectors');
      try {
        saveVectorFile(at('held-vector.json'), vector('new', 0.5));
        return 'saved over a held lock';
      } finally {
        release(at('held-vector'));
      }
    },
  },
  {
    class: 2,
    name: 'vectors: a vector lock left by a process that died is taken over',
    expect: /^saved stale-vector\.json \+ stale-vector\.safetensors \(norm 2\), lock released$/,
    run: async () => {
      const { loadVectorFile, saveVectorFile } = await import('../../src/engine/steering/vectors');
      fs.writeFileSync(lockPath(at('stale-vector')), JSON.stringify({ pid: deadPid(), host: os.hostname(), what: 'saving', since: '2025-01-01T00:00:00.000Z' }));
      const p = saveVectorFile(at('stale-vector'), vector('v', 0.5));
      const v = loadVectorFile(p.json, 16);
      return `saved ${path.basename(p.json)} + ${path.basename(p.tensor)} (norm ${Math.hypot(...v.vector)}), ${lockState(at('stale-vector'))}`;
    },
  },
  {
    class: 1,
    name: 'vectors: saving a steering vector whose .json path is a folder writes neither file',
    expect: /folder-vector\.json: folder-vector\.json is a folder: give the path of a regular file to write/,
    untouched: () => {
      fs.mkdirSync(at('folder-vector.json'), { recursive: true });
      return [at('folder-vector.json'), at('folder-vector.safetensors'), lockPath(at('folder-vector'))];
    },
    run: async () => {
      const { saveVectorFile } = await import('../../src/engine/steering/vectors');
      saveVectorFile(at('folder-vector'), vector('v', 0.5));
      return 'saved';
    },
  },
];

/** The lines `onWaiting` produced (described), and the final error, for the waiting cases. */
async function waitingLines(name: string, setup: (hub: MockHub) => void, opts: DownloadOptions): Promise<string> {
  const { describeWaiting } = await import('../../src/engine/hub/download');
  const seen: WaitingProgress[] = [];
  const msg = await hubFailure(name, setup, { ...opts, waitNoticeMs: 200, onWaiting: (w) => seen.push(w) });
  return `${seen.length ? describeWaiting(seen[0]) : 'no waiting notice'} | ${msg}`;
}

const hubFaults: BadInputCase[] = [
  {
    class: 10,
    name: 'hub: the model-info request is never answered',
    expect: /^(?!.*offline)http:\/\/127\.0\.0\.1:\d+ did not answer the model-info request for acme\/tiny within 1 s: the Hub is down or overloaded.*set HF_HUB_ETAG_TIMEOUT to wait longer.*nothing was changed/,
    untouched: () => [at('no-answer-info')],
    run: () => hubFailure('no-answer-info', (hub) => hub.faults.hang.set('info', -1)),
  },
  {
    class: 10,
    name: 'hub: the model-info answer stops after its first bytes',
    expect: /^acme\/tiny: http:\/\/127\.0\.0\.1:\d+ stopped sending its answer to the model-info request for acme\/tiny after 10 bytes: no data for 1 s \(set HF_HUB_DOWNLOAD_TIMEOUT/,
    untouched: () => [at('stalled-info')],
    run: () => hubFailure('stalled-info', (hub) => hub.faults.hang.set('info', 10)),
  },
  {
    class: 10,
    name: 'hub: the file listing is never answered',
    expect: /did not answer the file listing of acme\/tiny within 1 s/,
    untouched: () => [at('no-answer-tree')],
    run: () => hubFailure('no-answer-tree', (hub) => hub.faults.hang.set('tree', -1)),
  },
  {
    class: 10,
    name: 'hub: a file request is never answered',
    expect: /did not answer the request for acme\/tiny\/model\.safetensors within 1 s/,
    run: () => hubFailure('no-answer-file', (hub) => hub.faults.hang.set('resolve', -1)),
  },
  {
    class: 10,
    name: 'hub: a transfer stalls mid-file and stays stalled on resume',
    expect:
      /^acme\/tiny\/model\.safetensors: the transfer stalled: no data from 127\.0\.0\.1:\d+ for 1 s after 100000 of 300000 bytes \(set HF_HUB_DOWNLOAD_TIMEOUT to wait longer\); 100000 of 300000 bytes are kept in .*model\.safetensors\.part and the download resumes there next time \| part: 100000 bytes$/,
    run: async () => {
      const msg = await hubFailure('stall-mid-file', (hub) => hub.faults.stallAt.set(WEIGHTS, 100_000));
      return `${msg} | part: ${fs.statSync(at('stall-mid-file', WEIGHTS + '.part')).size} bytes`;
    },
  },
  {
    class: 10,
    name: 'hub: the file server answers its headers and never sends a byte',
    expect: /the transfer stalled: no data from 127\.0\.0\.1:\d+ for 1 s after 0 of 300000 bytes/,
    run: () => hubFailure('stall-headers-only', (hub) => hub.faults.hang.set('cdn', 0)),
  },
  {
    class: 10,
    name: 'hub: a redirect loop on the model-info request',
    expect: /^acme\/tiny: 127\.0\.0\.1:\d+ redirects the model-info request for acme\/tiny in a loop \(\/hop\/a → \/hop\/b → \/hop\/a\); the server is misconfigured/,
    untouched: () => [at('loop-info')],
    run: () =>
      hubFailure('loop-info', (hub) => {
        hub.faults.redirects.set(`/api/models/${REPO}/revision/main`, '/hop/a');
        hub.faults.redirects.set('/hop/a', '/hop/b');
        hub.faults.redirects.set('/hop/b', '/hop/a');
      }),
  },
  {
    class: 10,
    name: 'hub: a redirect loop between a file and the CDN',
    expect: /acme\/tiny\/model\.safetensors: 127\.0\.0\.1:\d+ redirects the request for acme\/tiny\/model\.safetensors in a loop \(\/acme\/tiny\/resolve\/.* → \/cdn\/.* → \/acme\/tiny\/resolve\//,
    run: () => hubFailure('loop-file', (hub) => hub.faults.redirects.set(`/cdn/${sha(repos().get(REPO)!.files.get(WEIGHTS)!)}`, RESOLVE)),
  },
  {
    class: 10,
    name: 'hub: a file redirected to file:///etc/passwd',
    expect: /acme\/tiny\/model\.safetensors: 127\.0\.0\.1:\d+ redirected the request for acme\/tiny\/model\.safetensors to file:\/\/\/etc\/passwd \(scheme file:\); only http and https redirects are followed, so it was refused/,
    untouched: () => [at('file-scheme', WEIGHTS)],
    run: () => hubFailure('file-scheme', (hub) => hub.faults.redirects.set(RESOLVE, 'file:///etc/passwd')),
  },
  {
    class: 10,
    name: 'hub: the model-info request redirected to a file:// URL',
    expect: /redirected the model-info request for acme\/tiny to file:\/\/\/home\/user\/\.cache\/huggingface\/token \(scheme file:\); only http and https redirects are followed/,
    untouched: () => [at('file-scheme-info')],
    run: () => hubFailure('file-scheme-info', (hub) => hub.faults.redirects.set(`/api/models/${REPO}/revision/main`, 'file:///home/user/.cache/huggingface/token')),
  },
  {
    class: 10,
    name: 'hub: a file redirected to an ftp:// server',
    expect: /redirected the request for acme\/tiny\/model\.safetensors to ftp:\/\/mirror\.example\/model\.safetensors \(scheme ftp:\); only http and https/,
    run: () => hubFailure('ftp-scheme', (hub) => hub.faults.redirects.set(RESOLVE, 'ftp://mirror.example/model.safetensors')),
  },
  {
    class: 10,
    name: 'hub: a chain of more than ten redirects (no loop)',
    expect: /127\.0\.0\.1:\d+ redirected the model-info request for acme\/tiny more than 10 times \(last to http:\/\/127\.0\.0\.1:\d+\/r\/10\); giving up/,
    untouched: () => [at('redirect-chain')],
    run: () =>
      hubFailure('redirect-chain', (hub) => {
        hub.faults.redirects.set(`/api/models/${REPO}/revision/main`, '/r/0');
        for (let i = 0; i < 20; i++) hub.faults.redirects.set(`/r/${i}`, `/r/${i + 1}`);
      }),
  },
  {
    class: 10,
    name: 'hub: a redirect whose Location is not a URL',
    expect: /the model-info request for acme\/tiny was redirected to "http:\/\/\[::1", which is not a URL; nothing was downloaded from it/,
    untouched: () => [at('bad-location')],
    run: () => hubFailure('bad-location', (hub) => hub.faults.redirects.set(`/api/models/${REPO}/revision/main`, 'http://[::1')),
  },
  {
    class: 10,
    name: 'hub: the endpoint host name does not resolve (DNS)',
    expect: /^cannot resolve the host name residual-test\.invalid \(ENOTFOUND: no such host in DNS\): check the endpoint's spelling.*nothing was changed/,
    untouched: () => [at('dns')],
    run: () => endpointFailure('dns', 'http://residual-test.invalid'),
  },
  {
    class: 10,
    name: 'hub: nothing listens at the endpoint (connection refused)',
    expect: /^(?!.*offline)127\.0\.0\.1:\d+ refused the connection \(ECONNREFUSED\): no server is listening there/,
    untouched: () => [at('refused')],
    run: async () => {
      const { closedPort } = await import('../helpers/mock-hub');
      return endpointFailure('refused', `http://127.0.0.1:${await closedPort()}`);
    },
  },
  {
    class: 10,
    name: "hub: the server's TLS certificate is self-signed",
    expect: /^TLS with 127\.0\.0\.1:\d+ failed: its certificate is not trusted \((DEPTH_ZERO_SELF_SIGNED_CERT|CERT_NOT_YET_VALID)\b.*set NODE_EXTRA_CA_CERTS/,
    untouched: () => [at('self-signed')],
    run: () => hubFailure('self-signed', () => {}, {}, true),
  },
  {
    class: 10,
    name: 'hub: an https:// endpoint that speaks plain HTTP',
    expect: /^TLS handshake with 127\.0\.0\.1:\d+ failed \((ERR_SSL_\w+|EPROTO)\); if the endpoint is a plain-HTTP server, write it as http:\/\//,
    untouched: () => [at('tls-on-http')],
    run: () => withHub(() => {}, (hub) => endpointFailure('tls-on-http', hub.url.replace('http:', 'https:'))),
  },
  {
    class: 10,
    name: 'hub: a server that accepts the connection and never completes TLS',
    expect: /^https:\/\/127\.0\.0\.1:\d+ did not answer the model-info request for acme\/tiny within 1 s/,
    untouched: () => [at('tls-silent')],
    run: async () => {
      const { silentServer } = await import('../helpers/mock-hub');
      const s = await silentServer();
      try {
        return await endpointFailure('tls-silent', `https://127.0.0.1:${s.port}`);
      } finally {
        await s.close();
      }
    },
  },
  {
    class: 10,
    name: 'hub: the server closes the connection without answering',
    expect: /^127\.0\.0\.1:\d+ closed the connection without answering \(\w+.*\); a proxy or firewall may be cutting it/,
    untouched: () => [at('closed')],
    run: () => hubFailure('closed', (hub) => hub.faults.close.add('info')),
  },
  {
    class: 10,
    name: "hub: a captive portal answers the model-info request with its login page",
    expect: /acme\/tiny: http:\/\/127\.0\.0\.1:\d+ answered the model-info request for acme\/tiny with an HTML page, not the Hub's JSON: a captive portal/,
    untouched: () => [at('captive')],
    run: () =>
      hubFailure('captive', (hub) =>
        hub.faults.answer.set('info', { status: 200, headers: { 'Content-Type': 'text/html' }, body: '<!DOCTYPE html><html><body>Please log in to the hotel Wi-Fi</body></html>' }),
      ),
  },
  {
    class: 10,
    name: 'hub: the file listing names itself as its next page',
    expect: /acme\/tiny: the file listing of acme\/tiny: the server's next page \(http:\/\/127\.0\.0\.1:\d+\/api\/models\/acme\/tiny\/tree\/.*\) was already fetched; refusing to loop/,
    untouched: () => [at('listing-loop')],
    run: () => hubFailure('listing-loop', (hub) => (hub.faults.listingLinksToItself = true)),
  },
  {
    class: 10,
    name: 'hub: the Hub answers 503 Service Unavailable',
    expect: /acme\/tiny: HTTP 503 Service Unavailable from http:\/\/127\.0\.0\.1:\d+: down for maintenance/,
    untouched: () => [at('503')],
    run: () => hubFailure('503', (hub) => hub.faults.answer.set('info', { status: 503, headers: { 'Content-Type': 'application/json' }, body: '{"error": "down for maintenance"}' })),
  },
  {
    class: 10,
    name: 'hub: a file request answered 500 whose error page never ends',
    expect: /^acme\/tiny\/model\.safetensors: http:\/\/127\.0\.0\.1:\d+ stopped sending its answer to the request for acme\/tiny\/model\.safetensors after 16 bytes: no data for 1 s/,
    run: () => hubFailure('error-body-stalls', (hub) => hub.faults.answer.set('resolve', { status: 500, body: '{"error": "oops"', thenHang: true })),
  },
  {
    class: 10,
    name: 'hub: progress says it is waiting while the model-info request goes unanswered',
    expect: /^waiting for the Hub… no answer for \d\.\d s to the model-info request for acme\/tiny; gives up after 1\.5 s \| .*did not answer/,
    run: () => waitingLines('waiting-answer', (hub) => hub.faults.hang.set('info', -1), { answerTimeoutMs: 1500 }),
  },
  {
    class: 10,
    name: 'hub: progress says it is waiting while a transfer is stalled',
    expect: /^waiting for the Hub… no data for \d\.\d s on the request for acme\/tiny\/model\.safetensors \(0\.1 MB of 0\.3 MB so far; gives up after 1 s\) \| .*the transfer stalled/,
    run: () => waitingLines('waiting-data', (hub) => hub.faults.stallAt.set(WEIGHTS, 100_000), { retries: 0 }),
  },
  {
    class: 10,
    name: 'hub: HF_HUB_DOWNLOAD_TIMEOUT is zero',
    expect: /^HF_HUB_DOWNLOAD_TIMEOUT: must be a number of seconds greater than 0 \(at most 86400\), got "0"$/,
    run: async () => {
      const { hubTimeouts } = await import('../../src/engine/hub/download');
      hubTimeouts({ HF_HUB_DOWNLOAD_TIMEOUT: '0' });
      return 'accepted';
    },
  },
  {
    class: 10,
    name: 'hub: residual download (CLI) with HF_HUB_ETAG_TIMEOUT=abc',
    expect: /^exit 2: residual: HF_HUB_ETAG_TIMEOUT: must be a number of seconds greater than 0 \(at most 86400\), got "abc"$/,
    untouched: () => [at('cli-bad-timeout')],
    run: async () => {
      const r = await runCli(['download', '--repo', REPO, '--out', at('cli-bad-timeout'), '--endpoint', 'http://127.0.0.1:9'], { env: { HF_HUB_ETAG_TIMEOUT: 'abc' } });
      return `exit ${r.code}: ${r.stderr.trim()}`;
    },
  },
  {
    class: 10,
    name: 'hub: residual download (CLI) against a Hub that never answers gives up in the stated time',
    expect: /^exit 2 within the bound: residual: http:\/\/127\.0\.0\.1:\d+ did not answer the model-info request for acme\/tiny within 1 s.*HF_HUB_ETAG_TIMEOUT/,
    untouched: () => [at('cli-no-answer')],
    run: () =>
      withHub(
        (hub) => hub.faults.hang.set('info', -1),
        async (hub) => {
          const t0 = performance.now();
          const r = await runCli(['download', '--repo', REPO, '--out', at('cli-no-answer'), '--endpoint', hub.url], { env: { HF_HUB_ETAG_TIMEOUT: '1', HF_ENDPOINT: '' }, timeoutMs: 30_000 });
          const ms = performance.now() - t0;
          return `exit ${r.code} ${ms < 15_000 ? 'within the bound' : `after ${ms.toFixed(0)} ms`}: ${r.stderr.trim().split('\n').at(-1)}`;
        },
      ),
  },
];

export const cases: BadInputCase[] = [...twoWriters, ...hubFaults];
