/**
 * GPU-path lane: which provider runs when the only WebGPU adapter is a software one (Mesa's lavapipe here), what the
 * user is told, that the terminal gets only Residual's lines, and the automatic float16 with its deviation measured.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { FLOAT16_PROBE_TEXT, Model } from '../../src/engine/model';
import { probeProviders, resetProviderProbe } from '../../src/engine/runtime/providerProbe';
import { runCli } from '../helpers/catalogue';
import { laneFixture, skipWithoutWebgpu } from './lane';

const DEMO = path.join(__dirname, '..', '..', 'models', 'demo');
const lane = laneFixture('residual-gpu-choice-');
const { root } = lane;

interface AnalyzeJson {
  provider: string;
  model: { precision: string; precision_reason?: string; float16_max_abs_dlogit?: number | null };
  adapter: { vendor: string; description: string; software: boolean; type?: string; shaderF16: boolean } | null;
  attempts: { provider: string; ok: boolean; reason?: string; warning?: string }[];
}

describe('a machine whose only WebGPU adapter is a software one', () => {
  it('the GPU check reports the adapter as software (vendor, architecture, description)', async (t) => {
    if (skipWithoutWebgpu(t, lane.unavailable)) return;
    resetProviderProbe();
    const webgpu = (await probeProviders(['webgpu'])).get('webgpu')!;
    assert.equal(webgpu.ok, true, webgpu.reason);
    assert.equal(webgpu.adapter?.software, true);
    assert.equal(webgpu.adapter?.type, 'cpu');
    assert.match(webgpu.adapter!.description, /llvmpipe/);
  });

  it('default order: the cpu provider runs, webgpu is skipped with the reason, and stderr is empty', async (t) => {
    if (skipWithoutWebgpu(t, lane.unavailable)) return;
    const cache = path.join(root, 'default');
    const r = await runCli(['analyze', '--model', DEMO, '--text', 'The cat sat on the', '--json'], { env: { RESIDUAL_CACHE_DIR: cache }, timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const a = JSON.parse(r.stdout) as AnalyzeJson;
    assert.equal(a.provider, 'cpu');
    assert.equal(a.adapter, null);
    assert.equal(a.model.precision, 'float32', 'auto precision on the cpu provider is float32');
    const webgpu = a.attempts.find((x) => x.provider === 'webgpu')!;
    assert.equal(webgpu.ok, false);
    assert.match(webgpu.reason!, /software adapter \(llvmpipe.*\), a CPU emulation slower than the cpu provider; name webgpu/);
  });

  it('named: webgpu runs there with one warning line on stderr, the adapter in --json, Dawn\'s own warnings in the log only', async (t) => {
    if (skipWithoutWebgpu(t, lane.unavailable)) return;
    const cache = path.join(root, 'named');
    const r = await runCli(['analyze', '--model', DEMO, '--text', 'The cat sat on the', '--providers', 'webgpu', '--precision', 'float32', '--json'], {
      env: { RESIDUAL_CACHE_DIR: cache },
      timeoutMs: 180_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^residual: warning: webgpu runs on a software adapter \(llvmpipe[^\n]*\), a CPU emulation slower than the cpu provider\n$/);
    const a = JSON.parse(r.stdout) as AnalyzeJson;
    assert.equal(a.provider, 'webgpu');
    assert.equal(a.adapter?.software, true);
    assert.equal(a.adapter?.vendor, 'mesa');
    assert.match(a.attempts[0].warning ?? '', /software adapter/);
    const log = fs.readFileSync(path.join(cache, 'logs', 'cli.log'), 'utf8');
    // lavapipe reports limits Dawn has to lower, which Dawn prints on fd 2: kept in the log, not on the terminal.
    assert.match(log, /artificially reduced/);
    assert.doesNotMatch(r.stderr, /artificially reduced/);
  });
});

describe('precision auto: float16 on an adapter with shader-f16', () => {
  it('loads float16, says why, and the deviation it shows is max |logit(float16) − logit(float32)| on the probe prompt', async (t) => {
    if (skipWithoutWebgpu(t, lane.unavailable)) return;
    const cacheDir = path.join(root, 'auto');
    const auto = await Model.load(DEMO, { providers: ['webgpu'], cacheDir });
    try {
      assert.equal(auto.provider, 'webgpu');
      if (!auto.adapter?.shaderF16) return t.skip('this adapter has no shader-f16');
      const info = auto.info;
      assert.equal(info.precision, 'float16');
      assert.match(info.precision_reason ?? '', /shader-f16/);
      assert.equal(typeof info.float16_max_abs_dlogit, 'number');
      // Independently: the same prompt through a float16 and a float32 model loaded by name.
      const ids = auto.tokenizer.encode(FLOAT16_PROBE_TEXT).ids.slice(0, 32);
      const half = await Model.load(DEMO, { providers: ['webgpu'], cacheDir, precision: 'float16' });
      const full = await Model.load(DEMO, { providers: ['webgpu'], cacheDir, precision: 'float32' });
      try {
        const x = (await half.run({ ids, hooks: ['logits'] })).activations.get('logits')!.data;
        const y = (await full.run({ ids, hooks: ['logits'] })).activations.get('logits')!.data;
        let worst = 0;
        for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
        assert.ok(worst > 0, 'float16 differs from float32 somewhere (it really ran in half precision)');
        assert.ok(Math.abs(worst - info.float16_max_abs_dlogit!) <= 1e-6 * Math.max(1, worst), `shown ${info.float16_max_abs_dlogit}, measured ${worst}`);
      } finally {
        await half.dispose();
        await full.dispose();
      }
    } finally {
      await auto.dispose();
    }
  });
});

