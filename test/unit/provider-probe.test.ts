/**
 * The GPU check (engine/runtime/providerProbe.ts): the causes read from the native output, the software-adapter rule,
 * the decision per provider, and, on this machine, the real check and the CLI's quiet stderr with the default order.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { explainFailure, isSoftwareAdapter, probeProviders, providerDecision, resetProviderProbe, type ProviderProbe } from '../../src/engine/runtime/providerProbe';
import { runCli } from '../helpers/catalogue';

// Lines as the native libraries print them (captured on this machine kind and from ../shared/gpu-testing.md).
const ORT_CUDA_MISSING =
  '2026-11-30 05:43:33.173 [E:onnxruntime:onnxruntime-node, provider_bridge_ort.cc:2146 Create] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/bin/napi-v6/linux/x64/libonnxruntime_providers_shared.so with error: /x/bin/napi-v6/linux/x64/libonnxruntime_providers_shared.so: cannot open shared object file: No such file or directory';
const ORT_CUBLAS_MISSING =
  '[E:onnxruntime:onnxruntime-node, provider_bridge_ort.cc:2146 Create] … FAIL : Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.12: cannot open shared object file: No such file or directory';
const DAWN_NO_LOADER = "Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory";
const DAWN_OLD_DRIVER = 'Warning: Vulkan shaderUniform*ArrayDynamicIndexing required.';
const ORT_NO_ADAPTER =
  '/onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize() adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters';

const LAVAPIPE = { vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1', fallback: true };
const NVIDIA = { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H200', fallback: false };

describe('the cause of a provider failure', () => {
  test('CUDA: the missing library is named, and what to do', () => {
    const r = explainFailure('cuda', 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library', [ORT_CUDA_MISSING]);
    assert.match(r, /^libonnxruntime_providers_shared\.so is missing: onnxruntime-node was installed without its CUDA provider/);
    const r2 = explainFailure('cuda', 'Failed to load shared library', [ORT_CUBLAS_MISSING]);
    assert.match(r2, /needs libcublasLt\.so\.12, which is not installed/);
  });
  test('WebGPU: loader missing, no driver, driver too old, no adapter', () => {
    assert.match(explainFailure('webgpu', ORT_NO_ADAPTER, [DAWN_NO_LOADER]), /Vulkan loader \(libvulkan\.so\.1\) is not installed/);
    assert.match(explainFailure('webgpu', ORT_NO_ADAPTER, ['Warning: vkCreateInstance: Found no drivers!']), /no Vulkan driver is installed/);
    assert.match(explainFailure('webgpu', ORT_NO_ADAPTER, [DAWN_OLD_DRIVER]), /too old for WebGPU \(it lacks shaderUniform\*ArrayDynamicIndexing\)/);
    assert.match(explainFailure('webgpu', ORT_NO_ADAPTER, []), /^no WebGPU adapter/);
  });
  test("a Vulkan line does not explain a CUDA failure; without a better line, ONNX Runtime's sentence stays, minus its source frame", () => {
    const r = explainFailure('cuda', '/src/x.cc:12 Foo() Failed to create the thing', [DAWN_NO_LOADER]);
    assert.equal(r, 'Failed to create the thing');
    assert.match(explainFailure('dml', 'no available backend found. ERR: [dml] backend not found.', []), /no dml provider/);
  });
});

describe('software adapters', () => {
  test('Dawn fallback, "software" architecture or a software rasteriser by name', () => {
    assert.equal(isSoftwareAdapter(LAVAPIPE), true);
    assert.equal(isSoftwareAdapter({ ...LAVAPIPE, fallback: false }), true);
    assert.equal(isSoftwareAdapter({ vendor: 'google', architecture: '', device: '', description: 'SwiftShader Device (Subzero)', fallback: false }), true);
    assert.equal(isSoftwareAdapter(NVIDIA), false);
    assert.equal(isSoftwareAdapter({ vendor: 'intel', architecture: 'gen-12lp', device: '', description: 'Intel(R) UHD Graphics 770', fallback: false }), false);
  });
});

describe('which providers are tried', () => {
  const soft: ProviderProbe = { provider: 'webgpu', ok: true, checked: true, adapter: { vendor: 'mesa', architecture: 'software', description: 'llvmpipe', type: 'cpu', software: true, shaderF16: true } };
  const hard: ProviderProbe = { provider: 'webgpu', ok: true, checked: true, adapter: { vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H200', software: false, shaderF16: true } };
  const failed: ProviderProbe = { provider: 'cuda', ok: false, checked: true, reason: 'libcudart.so.12 missing' };
  const unchecked: ProviderProbe = { provider: 'webgpu', ok: false, checked: false, reason: 'the GPU check could not start' };
  test('the default order skips a software adapter; a named webgpu uses it with a warning', () => {
    assert.match(providerDecision('webgpu', soft, false).skip ?? '', /software adapter \(llvmpipe\), a CPU emulation slower than the cpu provider; name webgpu/);
    const named = providerDecision('webgpu', soft, true);
    assert.equal(named.skip, undefined);
    assert.match(named.warning ?? '', /webgpu runs on a software adapter \(llvmpipe\)/);
  });
  test('a real GPU is used either way; a failed check is never tried; an unchecked one only when named', () => {
    assert.deepEqual(providerDecision('webgpu', hard, false), {});
    assert.deepEqual(providerDecision('cuda', failed, true), { skip: 'libcudart.so.12 missing' });
    assert.match(providerDecision('webgpu', unchecked, false).skip ?? '', /^the GPU check could not start/);
    assert.deepEqual(providerDecision('webgpu', unchecked, true), {});
    assert.deepEqual(providerDecision('cpu', undefined, false), {});
  });
});

describe('on this machine', () => {
  test('the check runs in a child process, once per provider, and every failure names a cause', async () => {
    resetProviderProbe();
    const logged: string[] = [];
    const first = await probeProviders(['cuda', 'webgpu', 'cpu'], (m) => logged.push(m));
    assert.deepEqual([...first.keys()], ['cuda', 'webgpu']);
    for (const [p, r] of first) {
      assert.equal(r.checked, true, `${p}: the check itself ran`);
      if (r.ok) continue;
      // Never ONNX Runtime's bare sentences: the cause, from the native output.
      assert.doesNotMatch(r.reason ?? '', /^Failed to load shared library$|No supported adapters/, `${p}: ${r.reason}`);
      assert.match(r.reason ?? '', p === 'cuda' ? /\.so/ : /Vulkan|adapter/, `${p}: ${r.reason}`);
    }
    assert.ok(logged.some((l) => l.startsWith('GPU check of cuda, webgpu')), 'the check is logged');
    const again = await probeProviders(['webgpu'], (m) => logged.push(m));
    assert.equal(again.get('webgpu'), first.get('webgpu'), 'memoized: the second question does not start another child');
    assert.equal(logged.filter((l) => l.startsWith('GPU check')).length, 1);
  });

  test('CLI, default order: only Residual lines on stderr (none), the causes in --json attempts, the native output in the log', async () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-probe-'));
    try {
      const r = await runCli(['analyze', '--model', 'models/demo', '--text', 'The cat sat', '--json'], { env: { RESIDUAL_CACHE_DIR: cache }, timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '', 'nothing but Residual lines, and there is nothing to say');
      const a = JSON.parse(r.stdout) as { provider: string; attempts: { provider: string; ok: boolean; reason?: string }[]; adapter: unknown };
      assert.deepEqual(
        a.attempts.map((x) => x.provider),
        ['cuda', 'webgpu', 'cpu'].slice(0, a.attempts.findIndex((x) => x.ok) + 1),
      );
      assert.equal(a.attempts.at(-1)!.provider, a.provider);
      for (const x of a.attempts.filter((x) => !x.ok)) assert.ok(x.reason && x.reason.length > 10, `${x.provider} has a reason`);
      const log = fs.readFileSync(path.join(cache, 'logs', 'cli.log'), 'utf8');
      assert.match(log, /== .* residual analyze/);
      assert.match(log, /GPU check of cuda, webgpu/);
      if (a.provider === 'cpu') assert.match(log, /native \(GPU check\): /, 'what the native libraries printed is kept in the log');
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });

  test('CLI, --providers named: each one not used is one line saying why; none usable is one error line, nothing on stdout', async () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-probe-'));
    try {
      const probe = await probeProviders(['cuda']);
      if (probe.get('cuda')!.ok) return; // a machine with CUDA: nothing to refuse
      const r = await runCli(['analyze', '--model', 'models/demo', '--text', 'The cat sat', '--providers', 'cuda,cpu'], { env: { RESIDUAL_CACHE_DIR: cache }, timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, `residual: cuda not used: ${probe.get('cuda')!.reason}\n`);
      const none = await runCli(['analyze', '--model', 'models/demo', '--text', 'The cat sat', '--providers', 'cuda', '--json'], { env: { RESIDUAL_CACHE_DIR: cache }, timeoutMs: 120_000 });
      assert.equal(none.code, 2);
      assert.equal(none.stdout, '');
      assert.equal(none.stderr.split('\n').filter(Boolean).length, 1, none.stderr);
      assert.match(none.stderr, /no execution provider could run the model \(tried cuda: .*\.so/);
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});
