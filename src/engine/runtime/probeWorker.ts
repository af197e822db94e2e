/**
 * The GPU check's child process (started by providerProbe.ts; built as dist/probe.js). It asks Dawn which WebGPU
 * adapter it would pick and ONNX Runtime whether each GPU provider starts, and prints one JSON line on stdout.
 *
 * It runs apart from the extension host or the CLI because the native libraries print their diagnostics (Dawn's
 * "Couldn't load Vulkan", ONNX Runtime's missing CUDA library, Mesa's warnings) straight onto stderr: here that stderr
 * is captured by the parent, which keeps it for the log and reads the real cause of a failure from it. A driver that
 * crashes or hangs takes down only this process.
 *
 * Usage: node probe.js '["cuda","webgpu"]'
 */
import * as path from 'node:path';
import { GraphBuilder } from '../onnx/builder';
import { PROBE_MARK, type ProbeReport, type ProbedAdapter } from './providerProbe';
import { ort } from './session';

interface DawnAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter?: boolean;
}
interface DawnAdapter {
  info: DawnAdapterInfo;
  features: Set<string>;
}
interface DawnGpu {
  requestAdapter(opts: { powerPreference?: 'high-performance' | 'low-power' }): Promise<DawnAdapter | null>;
}

/** Dawn's node binding (the `webgpu` package), loaded from its per-platform folder: only the adapter query is used. */
function loadDawn(): { create(flags: string[]): DawnGpu } {
  const pkg = path.dirname(require.resolve('webgpu/package.json'));
  const arch = process.platform === 'darwin' ? 'universal' : process.arch;
  // A native add-on loaded by its path (the package's own index is an ES module that also patches devices).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(pkg, 'dist', `${process.platform}-${arch}`, 'dawn.node')) as { create(flags: string[]): DawnGpu };
}

/** The adapter Dawn picks with ONNX Runtime's own preference (high performance: a discrete GPU before anything else). */
async function webgpuAdapter(): Promise<ProbedAdapter | { error: string }> {
  try {
    const adapter = await loadDawn().create([]).requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { error: 'no WebGPU adapter' };
    const { vendor, architecture, device, description, isFallbackAdapter } = adapter.info;
    return { vendor, architecture, device, description, fallback: !!isFallbackAdapter, shaderF16: adapter.features.has('shader-f16') };
  } catch (e) {
    return { error: `the WebGPU adapter query failed: ${(e as Error).message}` };
  }
}

/** A one-node graph (y = x + x): enough for a provider to start, select its device and compile a kernel. */
function tinyGraph(): Uint8Array {
  const g = new GraphBuilder('residual-probe');
  const x = g.input('x', 'float32', [4]);
  g.node('Add', [x, x], { outputs: ['y'] });
  g.output('y', 'float32', [4]);
  return g.encode();
}

async function ortStarts(provider: string, graph: Uint8Array): Promise<{ ok: boolean; error?: string }> {
  try {
    const o = ort();
    const session = await o.InferenceSession.create(graph, { executionProviders: [provider], logSeverityLevel: 2 });
    const out = await session.run({ x: new o.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]) });
    const y = out.y.data as Float32Array;
    await session.release();
    if (y[3] !== 8) return { ok: false, error: `the ${provider} provider computed ${y[3]} for 4 + 4` };
    return { ok: true };
  } catch (e) {
    return { ok: false, error: (e instanceof Error ? e.message : String(e)).split('\n')[0] };
  }
}

async function main(): Promise<void> {
  const providers = JSON.parse(process.argv[2] ?? '[]') as string[];
  // Warnings and errors of ONNX Runtime go to this process's stderr, which the parent reads for the causes.
  ort().env.logLevel = 'warning';
  const graph = tinyGraph();
  const report: ProbeReport = { results: [] };
  for (const provider of providers) {
    // Marks where this provider's native output starts, so each failure is explained by its own lines.
    process.stderr.write(`${PROBE_MARK}${provider}\n`);
    const adapter = provider === 'webgpu' ? await webgpuAdapter() : undefined;
    const started = await ortStarts(provider, graph);
    report.results.push({ provider, ...started, ...(adapter ? ('error' in adapter ? { adapterError: adapter.error } : { adapter }) : {}) });
  }
  process.stdout.write(JSON.stringify(report) + '\n');
  // Dawn and ONNX Runtime may keep threads alive; the answer is out, so end now.
  process.exit(0);
}

void main();
