/**
 * ONNX Runtime sessions: execution providers tried one at a time (each failure logged with its reason), and external
 * weights that point into the checkpoint's own safetensors files.
 *
 * ONNX Runtime resolves an external-data `location` relative to the .onnx file and refuses paths that escape its
 * folder, so the graph is written into a cache folder beside hard links to the safetensors files (no bytes copied).
 * Where a hard link is impossible (another file system), the files are handed over as in-memory external data.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as ortTypes from 'onnxruntime-common';
import { ResidualError } from '../errors';
import type { ProviderAttempt } from '../results';

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
  /** Providers in order of preference; the first that creates a session wins. */
  providers?: readonly string[];
  /** Folder for generated .onnx files (the extension passes its global storage). */
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
  const providers = opts.providers?.length ? opts.providers : DEFAULT_PROVIDERS;
  const log = opts.log ?? (() => undefined);
  const attempts: ProviderAttempt[] = [];
  let mode = opts.externalMode ?? 'link';
  let onnxPath: string | undefined;
  if (mode === 'link') {
    onnxPath = prepareLinkedFolder(graphBytes, externalFiles, key, opts.cacheDir, log);
    if (!onnxPath) mode = 'buffer';
  }
  for (const provider of providers) {
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
      attempts.push({ provider, ok: true, ms });
      log(`provider ${provider}: session created in ${ms.toFixed(0)} ms (${mode})`);
      return { session, provider, attempts, externalMode: mode, onnxPath };
    } catch (e) {
      const reason = cleanReason(e);
      attempts.push({ provider, ok: false, reason, ms: performance.now() - t0 });
      log(`provider ${provider} unavailable: ${reason}`);
    }
  }
  throw new ResidualError(
    `no execution provider could run the model (tried ${attempts.map((a) => `${a.provider}: ${a.reason}`).join('; ')})`,
    'residual.providers',
    'provider',
  );
}

/** Writes `<cache>/<hash>/model.onnx` and hard-links each external file beside it; undefined when linking fails. */
function prepareLinkedFolder(
  graphBytes: Uint8Array,
  externalFiles: Map<string, string>,
  key: string,
  cacheDir: string | undefined,
  log: (m: string) => void,
): string | undefined {
  const root = cacheDir ?? path.join(os.tmpdir(), 'residual-onnx-cache');
  const h = crypto.createHash('sha256').update(key).update(graphBytes);
  for (const [loc, file] of [...externalFiles].sort()) {
    const st = fs.statSync(file);
    // The link shares the inode, so identity (inode, size, mtime) keys the folder; a replaced file gets a new one.
    h.update(`${loc}\0${st.ino}\0${st.size}\0${st.mtimeMs}\0`);
  }
  const dir = path.join(root, h.digest('hex').slice(0, 24));
  const onnxPath = path.join(dir, 'model.onnx');
  try {
    fs.mkdirSync(dir, { recursive: true });
    for (const [loc, file] of externalFiles) {
      const link = path.join(dir, loc);
      if (path.dirname(link) !== dir) throw new Error(`external location ${loc} must be a plain file name`);
      if (fs.existsSync(link)) {
        if (fs.statSync(link).ino === fs.statSync(file).ino) continue;
        fs.unlinkSync(link);
      }
      fs.linkSync(file, link);
    }
    if (!fs.existsSync(onnxPath)) {
      const tmp = `${onnxPath}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, graphBytes);
      fs.renameSync(tmp, onnxPath);
    }
    return onnxPath;
  } catch (e) {
    log(`cannot hard-link weights into ${dir} (${(e as Error).message}); passing them as in-memory external data`);
    return undefined;
  }
}

/**
 * Keeps ONNX Runtime's own native log quiet (a missing CUDA library prints a multi-line error on every attempt);
 * call before the first session. Failures are still reported through `SessionOptions.log`.
 */
export function silenceOrt(): void {
  ort().env.logLevel = 'fatal';
}

/** ONNX Runtime's messages start with a source path and a C++ lambda; keep the sentence a user can act on. */
function cleanReason(e: unknown): string {
  const msg = (e instanceof Error ? e.message : String(e)).split('\n')[0];
  const i = msg.search(/Failed to |Could not |cannot |not supported/i);
  return i > 0 ? msg.slice(i) : msg;
}
