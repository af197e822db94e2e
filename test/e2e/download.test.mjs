// End-to-end: Residual: Download Model… in a real VS Code (code-server + Chromium) against the mock Hub on 127.0.0.1
// (test/helpers/mock-hub.ts; never the real network). `residual.hub.endpoint` points at the mock; the test types the
// repository into the palette's input boxes, waits for the progress notification to finish, clicks "Use this model"
// and checks that the files are byte-identical, that the setting points at them and that the model loads.
//
//   npm run build && RESIDUAL_DEV_PATH=$PWD node --test --test-concurrency=1 test/e2e/download.test.mjs
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it as nodeIt } from 'node:test';
import { tsImport } from 'tsx/esm/api';
import {
  failureScreenshots, REPO_ROOT, residualExtension, runCommand, screenshot, startVSCode,
} from './harness.mjs';

const ext = residualExtension();
const REPO = 'acme/e2e-model';
const bundled = ['demo', 'tiny-gpt2'].map((n) => path.join(REPO_ROOT, 'models', n)).find((d) => fs.existsSync(path.join(d, 'model.safetensors')));
const sha = (b) => createHash('sha256').update(b).digest('hex');

describe('Download Model… in a real VS Code', { skip: ext ? false : 'RESIDUAL_VSIX / RESIDUAL_DEV_PATH not set (run scripts/e2e/run.sh)' }, () => {
  let vs;
  const it = failureScreenshots(nodeIt, () => vs?.page);
  let hub;
  const served = new Map();

  before(async () => {
    const { MockHub } = await tsImport('../helpers/mock-hub.ts', import.meta.url);
    // The bundled model's top-level files, served as a Hub repository.
    for (const name of ['config.json', 'model.safetensors', 'tokenizer.json']) served.set(name, new Uint8Array(fs.readFileSync(path.join(bundled, name))));
    hub = await new MockHub(new Map([[REPO, { files: served }]])).start();
    // Drop the weights once mid-file: the extension resumes with Range by itself.
    hub.faults.dropAfter.set('model.safetensors', 1_000_000);
    vs = await startVSCode({ ...ext, name: 'download', workspaceFiles: { 'notes.txt': 'hello\n' }, settings: { 'residual.hub.endpoint': hub.url } });
  });
  after(async () => {
    await vs?.stop();
    await hub?.close();
  });

  it('downloads from the palette, resumes a dropped connection, and "Use this model" loads it', async () => {
    const { page } = vs;
    const input = page.locator('.quick-input-widget input.input');
    const t0 = Date.now();
    await runCommand(page, 'Residual: Download Model…', { opensQuickInput: true });
    await input.waitFor();
    await page.keyboard.type('not a repo');
    await page.locator('.quick-input-widget .quick-input-message', { hasText: 'owner/name' }).waitFor();
    await input.fill(REPO);
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget', { hasText: 'revision' }).waitFor();
    assert.equal(await input.inputValue(), 'main');
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget .monaco-list-row', { hasText: 'Model only' }).click();

    const done = page.locator('.notifications-toasts .notification-list-item', { hasText: `downloaded ${REPO}` }).first();
    await done.waitFor({ timeout: 60_000 });
    const downloadMs = Date.now() - t0;
    await screenshot(page, 'download-done.png');
    await done.locator('.monaco-button', { hasText: 'Use this model' }).click();
    await page.locator('.notifications-toasts .notification-list-item-message', { hasText: 'Residual: loaded' }).first().waitFor({ timeout: 60_000 });

    const log = await vs.outputLog('Residual');
    const dir = /into (\S+)/.exec(log)?.[1];
    assert.ok(dir && dir.endsWith(path.join('models', 'acme--e2e-model')), log);
    for (const [name, bytes] of served) assert.equal(sha(fs.readFileSync(path.join(dir, name))), sha(bytes), name);
    // The choice goes to the user settings (the workspace's stay untouched: using the product dirties no project file).
    const settings = JSON.parse(fs.readFileSync(path.join(vs.userData, 'User', 'settings.json'), 'utf8'));
    assert.equal(settings['residual.modelPath'], dir);
    assert.ok(!fs.existsSync(path.join(vs.workspace, '.vscode', 'settings.json')) || !('residual.modelPath' in JSON.parse(fs.readFileSync(path.join(vs.workspace, '.vscode', 'settings.json'), 'utf8'))));
    const cdn = hub.requests.filter((r) => r.path.startsWith('/cdn/'));
    assert.equal(cdn.length, 2, JSON.stringify(cdn));
    assert.match(cdn[1].range ?? '', /^bytes=[1-9]\d*-$/);
    assert.match(log, /download: 3 files verified/);
    console.log(`# download via the palette: ${downloadMs} ms; resumed at ${cdn[1].range}`);
  });
});
