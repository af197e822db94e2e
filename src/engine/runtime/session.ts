/**
 * ONNX Runtime sessions: execution providers tried one at a time (each failure logged with its reason), and external
 * weights that point into the checkpoint's own safetensors files.
 *
 * ONNX Runtime resolves an external-data `location` relative to the .onnx file and refuses paths that escape its
 * folder (symlinks resolved), so the graph is written into a cache entry (cache.ts: `<root>/onnx/<id>/`) beside hard
 * links to the real files behind the safetensors paths (no bytes copied; a Hugging Face cache snapshot's symlinks
 * into `blobs/` are resolved first). Where a hard link is impossible (another file system), the files are handed
 * over as in-memory external data. A cached entry is checked before it is reused (the .onnx must hold exactly this
 * graph, each link must be the source file's inode) and repaired when it is not; it is marked in use until its
 * session is released.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as ortTypes from 'onnxruntime-common';
import { cacheLimitBytes, defaultCacheDir, maybePrune, ONNX_KIND, recordEntry, sourceRecord, useEntry, type SourceRecord } from '../cache';
import { ResidualError } from '../errors';
import { checkInputFile } from '../files';
import type { ProviderAttempt } from '../results';
import { ortSentence, probeProviders, providerDecision, skippedAttempt } from './providerProbe';

// onnxruntime-node is loaded lazily: the native binding costs time and some hosts (tests of pure maths) never need it.
let ortModule: typeof import('onnxruntime-node') | undefined;
export function ort(): typeof import('onnxruntime-node') {
  // onnxruntime-node 1.30 collects usage telemetry (a device id and events in ~/.cache/Microsoft/DeveloperTools/
  // .onnxruntime, uploaded over HTTPS when it can). Residual makes no network request the user did not ask for,
  // so it is switched off before the native library starts.
  process.env.ORT_DISABLE_TELEMETRY = '1';
  ortModule ??= require('onnxruntime-node') as typeof import('onnxruntime-node');
  return ortModule;
}

export type ProviderName = 'cuda' | 'webgpu' | 'cpu' | 'dml' | 'coreml';
export const DEFAULT_PROVIDERS: ProviderName[] = ['cuda', 'webgpu', 'cpu'];

export type { ProviderAttempt };

export interface SessionOptions {
  /**
   * Providers in order of preference; the first that creates a session wins. Absent: DEFAULT_PROVIDERS, where a GPU
   * provider is used only on a real GPU; a list given here is the user's choice and is tried as given.
   */
  providers?: readonly string[];
  /**
   * Root of Residual's cache (cache.ts): graphs go to `<cacheDir>/onnx/`. Default: the host's folder (the
   * extension's global storage), else $RESIDUAL_CACHE_DIR, else ~/.cache/residual.
   */
  cacheDir?: string;
  /** Called for every provider attempt and other notable events. */
  log?: (message: string) => void;
  /** Intra-op threads (0 = ONNX Runtime's default: one per core). */
  threads?: number;
  /** 'link' (default): .onnx beside hard links; 'buffer': external files read into memory. */
  externalMode?: 'link' | 'buffer';
  /**
   * ONNX Runtime's CPU arena (default on). Off for graphs run at many different shapes (the attribution's backward
   * sweeps): the arena keeps every size it ever grew to, so process memory would only climb.
   */
  cpuMemArena?: boolean;
}

export interface CreatedSession {
  session: ortTypes.InferenceSession;
  provider: string;
  /** Every provider considered; the one in use carries its WebGPU adapter (webgpu only). */
  attempts: ProviderAttempt[];
  externalMode: 'link' | 'buffer';
  onnxPath?: string;
}

/**
 * Creates a session for `graphBytes` whose external data `location`s are the keys of `externalFiles`.
 * `key` names the graph in the cache (callers include what makes it unique: checkpoint identity, graph kind).
 */
export async function createSession(
  graphBytes: Uint8Array,
  externalFiles: Map<string, string>,
  key: string,
  opts: SessionOptions = {},
): Promise<CreatedSession> {
  const explicit = !!opts.providers?.length;
  const providers = explicit ? opts.providers! : DEFAULT_PROVIDERS;
  const log = opts.log ?? (() => undefined);
  const attempts: ProviderAttempt[] = [];
  let mode = opts.externalMode ?? 'link';
  // Every weights file is a regular file (or a link to one) before anything opens it: a FIFO would hang the read.
  for (const [location, file] of externalFiles) checkInputFile(file, `weights file ${location}`);
  const root = opts.cacheDir ?? defaultCacheDir();
  cacheLimitBytes(); // a malformed $RESIDUAL_CACHE_LIMIT_GB is refused by name before anything is written
  let onnxPath: string | undefined;
  let release: () => void = () => undefined;
  if (mode === 'link') {
    const prepared = prepareLinkedFolder(graphBytes, externalFiles, key, root, log);
    if (prepared) {
      onnxPath = prepared.onnxPath;
      release = prepared.release;
      maybePrune(root, prepared.wrote, log);
    } else mode = 'buffer';
  }
  // GPU providers are checked in a child process first: one that cannot start is not tried here (its native library
  // would print onto this process's stderr), and the reason recorded is the real cause the child's output gives.
  const probes = await probeProviders(providers, log);
  for (const provider of providers) {
    const probe = probes.get(provider);
    const { skip, warning } = providerDecision(provider, probe, explicit);
    if (skip) {
      attempts.push(skippedAttempt(provider, skip, probe));
      log(`provider ${provider} not tried: ${skip}`);
      continue;
    }
    if (warning) log(`warning: ${warning}`);
    const t0 = performance.now();
    try {
      const sessionOptions: ortTypes.InferenceSession.SessionOptions = {
        executionProviders: [provider as ortTypes.InferenceSession.ExecutionProviderConfig],
        graphOptimizationLevel: 'all',
        intraOpNumThreads: opts.threads ?? 0,
        logSeverityLevel: 3,
        ...(opts.cpuMemArena === false ? { enableCpuMemArena: false } : {}),
      };
      let session: ortTypes.InferenceSession;
      if (mode === 'link' && onnxPath) {
        session = await ort().InferenceSession.create(onnxPath, sessionOptions);
      } else {
        const externalData = [...externalFiles].map(([location, file]) => ({ path: location, data: new Uint8Array(fs.readFileSync(file)) }));
        session = await ort().InferenceSession.create(graphBytes, { ...sessionOptions, externalData });
      }
      const ms = performance.now() - t0;
      const adapter = provider === 'webgpu' ? probe?.adapter : undefined;
      attempts.push({ provider, ok: true, ms, ...(adapter ? { adapter } : {}), ...(warning ? { warning } : {}) });
      log(`provider ${provider}: session created in ${ms.toFixed(0)} ms (${mode})${adapter ? ` on ${adapter.description} (${adapter.vendor}, ${adapter.architecture})` : ''}`);
      // The cache entry stays in use (never pruned or cleared) until the session is released.
      const releaseSession = session.release.bind(session);
      session.release = async () => {
        try {
          await releaseSession();
        } finally {
          release();
        }
      };
      return { session, provider, attempts, externalMode: mode, onnxPath };
    } catch (e) {
      const reason = cleanReason(e);
      attempts.push({ provider, ok: false, reason, ms: performance.now() - t0 });
      log(`provider ${provider} unavailable: ${reason}`);
    }
  }
  release();
  throw new ResidualError(
    `no execution provider could run the model (tried ${attempts.map((a) => `${a.provider}: ${a.reason}`).join('; ')})`,
    'residual.providers',
    'provider',
  );
}

interface PreparedFolder {
  onnxPath: string;
  /** Ends this process's use of the entry. */
  release: () => void;
  /** Whether anything was written (a new or repaired entry). */
  wrote: boolean;
}

/**
 * Makes (or checks and reuses) `<root>/onnx/<id>/`: model.onnx holding exactly `graphBytes`, and beside it a hard
 * link named by each external `location` to the real file behind its path. Undefined when linking is impossible.
 */
function prepareLinkedFolder(
  graphBytes: Uint8Array,
  externalFiles: Map<string, string>,
  key: string,
  root: string,
  log: (m: string) => void,
): PreparedFolder | undefined {
  const sources = new Map<string, SourceRecord>();
  const h = crypto.createHash('sha256').update(key).update(graphBytes);
  for (const [loc, file] of [...externalFiles].sort()) {
    // Real path: a symlink (the Hub cache's snapshots/<rev>/model.safetensors -> ../../blobs/<sha>, an absolute
    // link, a linked model folder) is resolved, so the link in the entry is to the file itself, not to a relative
    // symlink that would dangle there. The identity (device, inode, size, mtime) keys the entry: a replaced file
    // gets a new one.
    const src = sourceRecord(file);
    sources.set(loc, src);
    h.update(`${loc}\0${src.dev}\0${src.ino}\0${src.size}\0${src.mtimeMs}\0`);
  }
  const dir = path.join(root, ONNX_KIND, h.digest('hex').slice(0, 24));
  const onnxPath = path.join(dir, 'model.onnx');
  let release: () => void = () => undefined;
  try {
    release = useEntry(dir); // before looking: no pruning in any process removes it from now on
    let wrote = false;
    fs.mkdirSync(dir, { recursive: true });
    for (const [loc, src] of sources) {
      const link = path.join(dir, loc);
      if (path.dirname(link) !== dir) throw new Error(`external location ${loc} must be a plain file name`);
      if (linkMatches(link, src)) continue;
      if (fs.existsSync(link) || isSymlink(link)) {
        log(`cache: ${link} no longer links to ${src.path}; relinked`);
        fs.rmSync(link, { recursive: true, force: true });
      }
      try {
        fs.linkSync(src.path, link);
      } catch (e) {
        // Another process made the same link meanwhile: fine if it is the right file.
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !linkMatches(link, src)) throw e;
      }
      wrote = true;
    }
    if (!holdsExactly(onnxPath, graphBytes)) {
      if (fs.existsSync(onnxPath) || isSymlink(onnxPath)) log(`cache: ${onnxPath} was damaged (not the graph it should hold); rebuilt`);
      const tmp = `${onnxPath}.${process.pid}.tmp`;
      fs.rmSync(onnxPath, { recursive: true, force: true }); // a folder or link in its place
      fs.writeFileSync(tmp, graphBytes);
      fs.renameSync(tmp, onnxPath);
      wrote = true;
    }
    recordEntry(dir, key, [...sources.values()]);
    return { onnxPath, release, wrote };
  } catch (e) {
    release();
    log(`cannot hard-link weights into ${dir} (${(e as Error).message}); passing them as in-memory external data`);
    return undefined;
  }
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Whether `link` is a regular file sharing the source's inode (a hard link to it, not a copy, not a symlink). */
function linkMatches(link: string, src: SourceRecord): boolean {
  try {
    const st = fs.lstatSync(link);
    return st.isFile() && st.ino === src.ino && st.dev === src.dev && st.size === src.size;
  } catch {
    return false;
  }
}

/** Whether `file` is a regular file with exactly these bytes (a truncated or altered cached graph is not). */
function holdsExactly(file: string, bytes: Uint8Array): boolean {
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile() || st.size !== bytes.byteLength) return false;
    const onDisk = new Uint8Array(fs.readFileSync(file));
    for (let i = 0; i < onDisk.length; i++) if (onDisk[i] !== bytes[i]) return false;
    return true;
  } catch {
    return false;
  }
}

/**
 * Keeps ONNX Runtime's own native log quiet (a missing CUDA library prints a multi-line error on every attempt);
 * call before the first session. Failures are still reported through `SessionOptions.log`.
 */
export function silenceOrt(): void {
  ort().env.logLevel = 'fatal';
}

function cleanReason(e: unknown): string {
  return ortSentence(e instanceof Error ? e.message : String(e));
}
