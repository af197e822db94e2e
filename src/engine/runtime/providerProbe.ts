/**
 * Which GPU execution providers can run here, on what device, and if not, why: checked once per process in a child
 * process (probeWorker.ts) whose stderr is captured, so the native libraries' own diagnostics go to the log instead of
 * the user's terminal, and give the real cause of a failure (the missing library by name, the Vulkan loader missing, a
 * driver too old) where ONNX Runtime's error only says "Failed to load shared library" or "No supported adapters".
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AdapterInfo, ProviderAttempt } from '../results';

/** What the child reports of Dawn's adapter. */
export interface ProbedAdapter {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Dawn's "fallback adapter": a CPU implementation (SwiftShader, lavapipe/llvmpipe). */
  fallback: boolean;
  shaderF16: boolean;
}

/** The child's stdout: one entry per provider asked about. */
export interface ProbeReport {
  results: { provider: string; ok: boolean; error?: string; adapter?: ProbedAdapter; adapterError?: string }[];
}

/** One provider's verdict. */
export interface ProviderProbe {
  provider: string;
  /** Whether a session on it started and computed. */
  ok: boolean;
  /** Why not, in words a user can act on. */
  reason?: string;
  /** For webgpu: the adapter Dawn picks. */
  adapter?: AdapterInfo;
  /** False when the check itself could not run (so nothing is known about the provider). */
  checked: boolean;
}

/**
 * Whether to try `provider`, given its check: `skip` is the reason it is not tried. A provider named by the user
 * (`explicit`) is tried even on a software adapter, with a warning; from the default order it is skipped, because a
 * CPU emulation of a GPU is slower than the cpu provider. One whose check could not run is tried only when named.
 */
export function providerDecision(provider: string, probe: ProviderProbe | undefined, explicit: boolean): { skip?: string; warning?: string } {
  if (provider === 'cpu' || !probe) return {};
  if (!probe.checked) return explicit ? {} : { skip: probe.reason ?? 'the GPU check gave no answer' };
  if (!probe.ok) return { skip: probe.reason ?? 'unavailable' };
  const a = probe.adapter;
  if (a?.software) {
    const what = `a software adapter (${a.description}), a CPU emulation slower than the cpu provider`;
    return explicit ? { warning: `webgpu runs on ${what}` } : { skip: `the only WebGPU adapter is ${what}; name webgpu in the providers to use it anyway` };
  }
  return {};
}

const PROBE_TIMEOUT_MS = 60_000;
/** The line the child writes on stderr before each provider's check. */
export const PROBE_MARK = '@@residual-probe ';
const probed = new Map<string, Promise<ProviderProbe>>();

/** Forgets earlier verdicts (tests; a settings change that may bring a driver in). */
export function resetProviderProbe(): void {
  probed.clear();
}

/**
 * The verdict for each of `providers` (GPU providers; 'cpu' needs no check), each checked at most once per process.
 * `log` receives the child's native output line by line.
 */
export async function probeProviders(providers: readonly string[], log: (m: string) => void = () => undefined): Promise<Map<string, ProviderProbe>> {
  const missing = [...new Set(providers)].filter((p) => p !== 'cpu' && !probed.has(p));
  if (missing.length) {
    const batch = runProbe(missing, log);
    for (const p of missing) probed.set(p, batch.then((m) => m.get(p)!));
  }
  const out = new Map<string, ProviderProbe>();
  for (const p of providers) if (p !== 'cpu') out.set(p, await probed.get(p)!);
  return out;
}

/** How to start the child: the bundled dist/probe.js beside this bundle, or the TypeScript source under tsx (tests). */
function workerCommand(): string[] | undefined {
  const bundled = path.join(__dirname, 'probe.js');
  if (fs.existsSync(bundled)) return [bundled];
  const source = path.join(__dirname, 'probeWorker.ts');
  if (fs.existsSync(source)) return ['--import', 'tsx', source];
  return undefined;
}

async function runProbe(providers: string[], log: (m: string) => void): Promise<Map<string, ProviderProbe>> {
  const t0 = performance.now();
  const all = (reason: string) => new Map(providers.map((p) => [p, { provider: p, ok: false, checked: false, reason }]));
  const command = workerCommand();
  if (!command) return all('the GPU check (probe.js) is missing from this installation; rebuild with npm run build');
  const { stdout, stderr, code, signal, timedOut, spawnError } = await new Promise<{
    stdout: string;
    stderr: string;
    code: number | null;
    signal: NodeJS.Signals | null;
    timedOut: boolean;
    spawnError?: Error;
  }>((resolve) => {
    // In VS Code the extension host's executable is Electron: ELECTRON_RUN_AS_NODE makes it plain Node.
    const child = spawn(process.execPath, [...command, JSON.stringify(providers)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
      windowsHide: true,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, PROBE_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: null, signal: null, timedOut, spawnError: e });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code, signal, timedOut });
    });
  });
  const native = stderr.split('\n').map(stripAnsi).filter((l) => l.trim());
  // Each provider's own lines (after its mark), so one provider's failure is not explained by another's output.
  const linesOf = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of native) {
    if (line.startsWith(PROBE_MARK)) linesOf.set(line.slice(PROBE_MARK.length).trim(), (current = []));
    else {
      current.push(line);
      log(`native (GPU check): ${line}`);
    }
  }
  log(`GPU check of ${providers.join(', ')}: ${(performance.now() - t0).toFixed(0)} ms`);
  if (spawnError) return all(`the GPU check could not start (${spawnError.message})`);
  if (timedOut) return all(`the GPU check did not finish in ${PROBE_TIMEOUT_MS / 1000} s (a driver that hangs?)`);
  let report: ProbeReport | undefined;
  try {
    report = JSON.parse(stdout.trim().split('\n').pop() ?? '') as ProbeReport;
  } catch {
    report = undefined;
  }
  if (!report) {
    const last = native.filter((l) => !l.startsWith(PROBE_MARK)).at(-1);
    return all(`the GPU check ended ${signal ? `by ${signal}` : `with status ${code}`} before answering${last ? `: ${last.trim()}` : ''} (a driver crash?)`);
  }
  const verdicts = new Map<string, ProviderProbe>();
  for (const r of report.results) {
    const adapter = r.adapter ? adapterInfo(r.adapter) : undefined;
    const reason = r.ok ? undefined : explainFailure(r.provider, r.error ?? r.adapterError ?? 'failed', linesOf.get(r.provider) ?? []);
    verdicts.set(r.provider, { provider: r.provider, ok: r.ok, checked: true, adapter, ...(reason ? { reason } : {}) });
  }
  for (const p of providers) if (!verdicts.has(p)) verdicts.set(p, { provider: p, ok: false, checked: false, reason: 'the GPU check gave no answer for it' });
  return verdicts;
}

function adapterInfo(a: ProbedAdapter): AdapterInfo {
  const software = isSoftwareAdapter(a);
  return {
    vendor: a.vendor,
    architecture: a.architecture,
    description: a.description || a.device,
    ...(software ? { type: 'cpu' as const } : {}),
    software,
    shaderF16: a.shaderF16,
  };
}

/** A CPU emulation of a GPU: Dawn's fallback flag, or a software rasteriser by name (Mesa's llvmpipe/lavapipe, SwiftShader, WARP). */
export function isSoftwareAdapter(a: Pick<ProbedAdapter, 'vendor' | 'architecture' | 'device' | 'description' | 'fallback'>): boolean {
  if (a.fallback) return true;
  if (/^(software|cpu)$/i.test(a.architecture)) return true;
  return /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render|\bwarp\b/i.test(`${a.vendor} ${a.device} ${a.description}`);
}

/**
 * The cause of a provider's failure, from ONNX Runtime's error and the native output: the specific line when one says
 * more (which library is missing, what the driver lacks), else ONNX Runtime's own sentence.
 */
export function explainFailure(provider: string, error: string, native: readonly string[]): string {
  const text = native.join('\n');
  if (/backend not found/i.test(error)) return `this build of onnxruntime-node has no ${provider} provider`;
  if (provider === 'cuda' || provider === 'tensorrt') {
    // "Failed to load library …/libonnxruntime_providers_cuda.so with error: libcublasLt.so.12: cannot open shared object file"
    // Only ONNX Runtime's own "Failed to load library" lines: a Vulkan loader's missing library says nothing of CUDA.
    const missing = [...text.matchAll(/Failed to load library .* with error: (?:\S*\/)?([^\s/:]+\.so(?:\.[\d.]+)?): cannot open shared object file/g)].map((m) => m[1]);
    const lib = missing.at(-1);
    if (lib === 'libonnxruntime_providers_shared.so' || lib === 'libonnxruntime_providers_cuda.so') {
      return `${lib} is missing: onnxruntime-node was installed without its CUDA provider (reinstall it online, without ONNXRUNTIME_NODE_INSTALL=skip)`;
    }
    if (lib) return `the CUDA provider needs ${lib}, which is not installed or not on the library path (CUDA 12 and cuDNN 9)`;
    if (/CUDA driver version is insufficient|cudaErrorInsufficientDriver/i.test(text)) return 'the NVIDIA driver is too old for this CUDA runtime';
    if (/no CUDA-capable device|cudaErrorNoDevice/i.test(text)) return 'no CUDA-capable GPU was found';
  }
  if (provider === 'webgpu') {
    if (/Couldn't load Vulkan: libvulkan\.so/i.test(text)) return 'the Vulkan loader (libvulkan.so.1) is not installed (Debian/Ubuntu: apt install libvulkan1)';
    if (/Found no drivers|VK_ERROR_INCOMPATIBLE_DRIVER/i.test(text)) return 'no Vulkan driver is installed (the Vulkan loader found none)';
    // Dawn names what an adapter lacks: "Vulkan shaderUniform*ArrayDynamicIndexing required", "… is not supported".
    const lacking = text.match(/Vulkan\s+([\w*]+)\s+required/i) ?? text.match(/(\w+ (?:feature|extension) [\w*]+ (?:is )?(?:not supported|required))/i);
    if (lacking) return `the Vulkan driver is too old for WebGPU (it lacks ${lacking[1]})`;
    if (/No supported adapters|no WebGPU adapter/i.test(error)) return 'no WebGPU adapter (no GPU with a Vulkan, Metal or Direct3D 12 driver)';
  }
  return ortSentence(error);
}

/** ONNX Runtime's messages start with a source path and a C++ lambda; keep the sentence a user can act on. */
export function ortSentence(message: string): string {
  const first = message.split('\n')[0];
  const i = first.search(/Failed to |Could not |cannot |not supported/i);
  return i > 0 ? first.slice(i) : first;
}

/** ONNX Runtime colours its log lines for a terminal; the log keeps the text. */
function stripAnsi(s: string): string {
  return s.replace(/\u001b\[[0-9;]*m/g, '');
}

/** The attempt of a provider the checks rule out: not tried, with the reason (and the adapter the check found). */
export function skippedAttempt(provider: string, reason: string, probe: ProviderProbe | undefined): ProviderAttempt {
  return { provider, ok: false, skipped: true, reason, ms: 0, ...(probe?.adapter ? { adapter: probe.adapter } : {}) };
}

/**
 * The first provider of `providers` (DEFAULT order when absent) that the checks allow, with the attempts of those
 * ruled out before it; undefined when only the cpu provider is left.
 */
export async function firstGpuProvider(
  providers: readonly string[] | undefined,
  defaults: readonly string[],
  log?: (m: string) => void,
): Promise<{ provider: string; adapter?: AdapterInfo; skipped: ProviderAttempt[] } | undefined> {
  const explicit = !!providers?.length;
  const list = explicit ? providers! : defaults;
  const probes = await probeProviders(list, log);
  const skipped: ProviderAttempt[] = [];
  for (const provider of list) {
    if (provider === 'cpu') return undefined;
    const probe = probes.get(provider);
    const { skip } = providerDecision(provider, probe, explicit);
    if (!skip) return { provider, adapter: probe?.adapter, skipped };
    skipped.push(skippedAttempt(provider, skip, probe));
  }
  return undefined;
}
