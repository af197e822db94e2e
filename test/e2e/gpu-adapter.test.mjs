// End-to-end: the WebGPU path in a real VS Code. The extension host gets Mesa's software Vulkan driver (lavapipe,
// fetched privately by scripts/gpu/lavapipe.sh, as the GPU-path lane does) and residual.providers names webgpu, so the
// model runs there: the Activations panel, the Inspector and the status bar must say so, name the adapter, warn that it
// is a CPU emulation, and show the float16 that precision auto chose with its measured deviation. The expected
// deviation comes from the CLI on the same model and driver, not from this file.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it as nodeIt } from 'node:test';
import { failureScreenshots, openFile, REPO_ROOT, residualExtension, runCommand, screenshot, selectLines, startVSCode, webview } from './harness.mjs';

const ext = residualExtension();
const SAMPLE = fs.readFileSync(path.join(REPO_ROOT, 'demo-workspace', 'prompt.py'), 'utf8');
const LINES = SAMPLE.split('\n');
const bundledModel = path.join(REPO_ROOT, 'models', 'demo');

/** The driver's environment (LD_LIBRARY_PATH, VK_DRIVER_FILES, …) from lavapipe.sh's last line; throws when it cannot be had. */
function lavapipeEnv() {
  const out = execFileSync('bash', [path.join(REPO_ROOT, 'scripts', 'gpu', 'lavapipe.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const line = out.trim().split('\n').pop() ?? '';
  assert.match(line, /^export LD_LIBRARY_PATH=/, `lavapipe.sh gave no environment (${line})`);
  return Object.fromEntries([...line.slice('export '.length).matchAll(/(\w+)='([^']*)'/g)].map((m) => [m[1], m[2]]));
}

describe('Residual on a WebGPU adapter in a real VS Code', { skip: ext ? false : 'RESIDUAL_VSIX / RESIDUAL_DEV_PATH not set (run scripts/e2e/run.sh)' }, () => {
  let vs;
  const it = failureScreenshots(nodeIt, () => vs?.page);
  let driverEnv;

  before(async () => {
    driverEnv = lavapipeEnv();
    // code-server (and so the extension host and its GPU check) inherits this process's environment.
    Object.assign(process.env, driverEnv);
    vs = await startVSCode({ ...ext, name: 'gpu', workspaceFiles: { 'prompt.py': SAMPLE }, settings: { 'residual.providers': ['webgpu', 'cpu'] } });
  });
  after(async () => {
    await vs?.stop();
  });

  it('the model runs on webgpu; the Inspector names the adapter, warns it is software, and shows float16 with its deviation', async () => {
    const { page } = vs;
    // What the CLI finds on the same driver with the same choice: the deviation the Inspector must show.
    const cli = JSON.parse(
      execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'analyze', '--model', bundledModel, '--text', 'x', '--providers', 'webgpu', '--json'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ...driverEnv },
      }),
    );
    assert.equal(cli.provider, 'webgpu');
    assert.equal(cli.model.precision, 'float16');
    const line = LINES.findIndex((l) => l.includes('print("hello"')) + 1;
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Analyze Selection');
    const wv = await webview(page, { title: 'Residual: Activations' });
    await wv.locator('#provider', { hasText: 'WEBGPU' }).waitFor({ timeout: 180_000 });

    await runCommand(page, 'Residual: Open Inspector');
    const insp = await webview(page, { title: 'Inspector', purpose: 'webviewView' });
    await insp.locator('#provider', { hasText: 'WEBGPU' }).waitFor({ timeout: 60_000 });
    const adapter = await insp.locator('#adapter').textContent();
    assert.match(adapter, /^Adapter: llvmpipe: Mesa .* \(mesa, software, cpu\) · shader-f16$/);
    const attempts = await insp.locator('#attempts li').allTextContents();
    assert.equal(attempts[0], 'webgpu: in use');
    assert.match(attempts[1], /^webgpu runs on a software adapter \(llvmpipe.*\), a CPU emulation slower than the cpu provider$/);
    const precision = await insp.locator('#precision').textContent();
    assert.equal(precision, `float16 (auto: the WebGPU adapter has shader-f16) · max |Δlogit| vs float32 ${cli.model.float16_max_abs_dlogit.toPrecision(2)} on a probe prompt`);
    // Parity against the float64 reference shows the float16 model's real deviation (far above float32's 1e-5).
    const parity = insp.locator('#parity', { hasText: 'max |Δlogit|' });
    await parity.waitFor({ timeout: 120_000 });
    const dlogit = Number(/max \|Δlogit\| ([\d.e+-]+)/.exec(await parity.textContent())[1]);
    assert.ok(dlogit > 1e-3 && dlogit < 1, `float16 parity ${dlogit}`);
    // The status bar and the warning shown once when the model loaded.
    await page.locator('.statusbar-item', { hasText: 'WEBGPU (software)' }).first().waitFor();
    const log = await vs.outputLog('Residual');
    assert.match(log, /GPU check of webgpu: \d+ ms/);
    assert.match(log, /warning: webgpu runs on a software adapter/);
    assert.match(log, /float16 vs float32 on webgpu: max \|Δlogit\| /);
    await screenshot(page, 'gpu-inspector.png');
  });
});
