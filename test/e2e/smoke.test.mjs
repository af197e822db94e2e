// Proves the e2e harness on its own, independently of Residual's extension: the test writes a tiny
// extension into a temp folder, packages it with vsce (and also loads it unpacked, dev mode), and drives
// it in a real VS Code: command palette, editor context menu with a selection, a webview panel and a
// webview view in its own activity-bar container (two webviews open at once), the output channel.
//
//   node --test test/e2e/smoke.test.mjs        (after scripts/e2e/install.sh; or via scripts/e2e/run.sh)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  startVSCode, openFile, runCommand, contextMenu, selectLines, selectAll, webview, listWebviews,
  openViewContainer, screenshot, REPO_ROOT, DEFAULT_ARTIFACTS_DIR,
} from './harness.mjs';

const ARTIFACTS = process.env.E2E_ARTIFACTS_DIR || DEFAULT_ARTIFACTS_DIR;
const HELLO = 'export function greet(name: string): string {\n  return `hello ${name}`;\n}\n';

let extDir;
let vsix;
before(() => {
  const t0 = Date.now();
  extDir = fs.mkdtempSync('/tmp/rse2e-smoke-ext-');
  writeSmokeExtension(extDir);
  vsix = path.join(extDir, '..', `${path.basename(extDir)}.vsix`);
  execFileSync(path.join(REPO_ROOT, 'node_modules/.bin/vsce'),
    ['package', '--no-dependencies', '--allow-missing-repository', '--skip-license', '--out', vsix],
    { cwd: extDir, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  console.log(`smoke extension packaged in ${Date.now() - t0} ms: ${vsix}`);
});
after(() => {
  if (extDir) fs.rmSync(extDir, { recursive: true, force: true });
  if (vsix) fs.rmSync(vsix, { force: true });
});

test('harness: VSIX install, palette, context menu, panel + view webviews, output channel', { timeout: 240_000 }, async (t) => {
  const t0 = Date.now();
  const vs = await startVSCode({
    extensionVsix: vsix,
    workspaceFiles: { 'hello.ts': HELLO, 'notes/readme.md': '# notes\n' },
    settings: { 'editor.fontSize': 14 },
    artifactsDir: ARTIFACTS,
    name: 'smoke-vsix',
  });
  t.after(() => vs.stop());
  const { page } = vs;
  console.log(`VS Code ready in ${Date.now() - t0} ms ${JSON.stringify(vs.timings)}`);

  // Editor context menu with a selection: the command receives the selected line.
  await openFile(page, 'hello.ts');
  await selectLines(page, 2, 2);
  await contextMenu(page, 'Open Panel');
  const panel = await webview(page, { title: 'Smoke Panel' });
  await panel.locator('#msg', { hasText: 'Hello from the smoke panel' }).waitFor();
  assert.equal(await panel.locator('#sel').textContent(), '  return `hello ${name}`;'); // whole line 2, indent included
  assert.equal(await panel.locator('#count').textContent(), '1');
  await screenshot(page, 'smoke-panel.png');

  // The new panel now is the active editor (its group has focus): the helpers go back to the text editor.
  await selectLines(page, 1, 1);
  await contextMenu(page, 'Open Panel');
  await panel.locator('#count', { hasText: /^2$/ }).waitFor();
  assert.equal(await panel.locator('#sel').textContent(), HELLO.split('\n')[0]);

  // A second webview: a WebviewView in the extension's own activity-bar container.
  await openViewContainer(page, 'Smoke Views');
  const view = await webview(page, { title: 'Smoke View' });
  await view.locator('#msg', { hasText: 'Hello from the smoke view' }).waitFor();
  const open = await listWebviews(page);
  console.log(`webviews open: ${JSON.stringify(open)}`);
  assert.equal(open.filter((w) => w.ready).length, 2);
  assert.deepEqual(open.map((w) => w.purpose).sort(), [null, 'webviewView'].sort());
  // Both are addressable at once, by title (or purpose).
  assert.match(await (await webview(page, { purpose: 'webviewView' })).locator('#msg').textContent(), /smoke view/);

  // Command palette, after Select All: the (reused) panel now shows the whole file.
  await openFile(page, 'hello.ts');
  await selectAll(page);
  await runCommand(page, 'Smoke: Open Panel');
  const panel2 = await webview(page, { title: 'Smoke Panel', extensionId: 'residual-e2e.smoke' });
  await panel2.locator('#count', { hasText: /^3$/ }).waitFor();
  assert.equal(await panel2.locator('#sel').textContent(), HELLO);
  await screenshot(page, 'smoke-two-webviews.png');

  // Extension-host state through the output channel's log file.
  const log = await vs.waitForOutput('Smoke', /webview ready: Smoke Panel[\s\S]*webview ready: Smoke View/);
  assert.match(log, /activated/);

  assert.deepEqual(vs.blockedRequests, [], 'no non-loopback requests');
  assert.deepEqual(vs.pageErrors, []);
  const runDir = vs.runDir;
  await vs.stop();
  assert.deepEqual(processesWithMarker(runDir), [], 'stop() leaves no process behind');
  assert.equal(fs.existsSync(runDir), false, 'run dir removed');
  console.log(`smoke (vsix) test body took ${Date.now() - t0} ms`);
});

test('harness: unpacked extension (extensionDevPath) runs from the palette', { timeout: 180_000 }, async (t) => {
  const t0 = Date.now();
  const vs = await startVSCode({
    extensionDevPath: extDir,
    workspaceFiles: { 'hello.ts': HELLO },
    artifactsDir: ARTIFACTS,
    name: 'smoke-dev',
  });
  t.after(() => vs.stop());
  const { page } = vs;
  await page.locator('.monaco-workbench').waitFor();
  assert.match(await page.title(), /Extension Development Host/);
  await runCommand(page, 'Smoke: Open Panel');
  const panel = await webview(page, { title: 'Smoke Panel' });
  await panel.locator('#msg', { hasText: 'Hello from the smoke panel' }).waitFor();
  assert.equal(await panel.locator('#sel').textContent(), '(no editor)');
  await screenshot(page, 'smoke-dev.png');
  assert.deepEqual(vs.blockedRequests, []);
  const runDir = vs.runDir;
  await vs.stop();
  assert.deepEqual(processesWithMarker(runDir), []);
  console.log(`smoke (dev) test body took ${Date.now() - t0} ms`);
});

function processesWithMarker(runDir) {
  const want = `RESIDUAL_E2E_RUN=${runDir}`;
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return fs.readFileSync(`/proc/${p}/environ`, 'latin1').split('\0').includes(want); } catch { return false; }
  });
}

// The throwaway extension: plain CommonJS, no build step.
function writeSmokeExtension(dir) {
  const pkg = {
    name: 'smoke',
    displayName: 'Residual E2E Smoke',
    description: 'Throwaway extension written by test/e2e/smoke.test.mjs to prove the e2e harness.',
    version: '0.0.1',
    publisher: 'residual-e2e',
    license: 'MIT',
    engines: { vscode: '^1.100.0' },
    main: './extension.js',
    activationEvents: [],
    contributes: {
      commands: [{ command: 'smoke.openPanel', title: 'Open Panel', category: 'Smoke' }],
      menus: { 'editor/context': [{ command: 'smoke.openPanel', group: 'navigation' }] },
      viewsContainers: { activitybar: [{ id: 'smokeViews', title: 'Smoke Views', icon: 'media/smoke.svg' }] },
      views: { smokeViews: [{ type: 'webview', id: 'smoke.view', name: 'Smoke View' }] },
    },
  };
  fs.mkdirSync(path.join(dir, 'media'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
  fs.writeFileSync(path.join(dir, 'README.md'), '# Residual E2E Smoke\n\nThrowaway test extension.\n');
  fs.writeFileSync(path.join(dir, 'media/smoke.svg'),
    '<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24"><circle cx="12" cy="12" r="8" fill="none" stroke="currentColor" stroke-width="2"/></svg>\n');
  fs.writeFileSync(path.join(dir, 'extension.js'), `'use strict';
const vscode = require('vscode');

function page(webview, heading, extra) {
  const nonce = Math.random().toString(36).slice(2);
  const esc = (s) => String(s).replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c]);
  return '<!DOCTYPE html><html><head><meta charset="UTF-8">'
    + '<meta http-equiv="Content-Security-Policy" content="default-src \\'none\\'; style-src ' + webview.cspSource
    + ' \\'unsafe-inline\\'; script-src \\'nonce-' + nonce + '\\';"></head><body>'
    + '<h1 id="msg">' + esc(heading) + '</h1>'
    + Object.entries(extra).map(([k, v]) => '<pre id="' + k + '">' + esc(v) + '</pre>').join('')
    + '<script nonce="' + nonce + '">const api = acquireVsCodeApi(); api.postMessage({ type: "ready" });</script>'
    + '</body></html>';
}

exports.activate = function activate(context) {
  const log = vscode.window.createOutputChannel('Smoke');
  context.subscriptions.push(log);
  log.appendLine('activated');
  let panel;
  let count = 0;
  context.subscriptions.push(vscode.commands.registerCommand('smoke.openPanel', () => {
    count++;
    const ed = vscode.window.activeTextEditor;
    const sel = ed ? ed.document.getText(ed.selection) : '(no editor)';
    if (!panel) {
      panel = vscode.window.createWebviewPanel('smokePanel', 'Smoke Panel', vscode.ViewColumn.Beside, { enableScripts: true });
      panel.onDidDispose(() => { panel = undefined; });
      panel.webview.onDidReceiveMessage((m) => log.appendLine('webview ready: Smoke Panel ' + JSON.stringify(m)));
    }
    panel.webview.html = page(panel.webview, 'Hello from the smoke panel', { sel, count: String(count) });
    panel.reveal(vscode.ViewColumn.Beside, true);
    log.appendLine('command ran ' + count);
  }));
  context.subscriptions.push(vscode.window.registerWebviewViewProvider('smoke.view', {
    resolveWebviewView(view) {
      view.webview.options = { enableScripts: true };
      view.webview.onDidReceiveMessage((m) => log.appendLine('webview ready: Smoke View ' + JSON.stringify(m)));
      view.webview.html = page(view.webview, 'Hello from the smoke view', {});
    },
  }));
};
exports.deactivate = function deactivate() {};
`);
}
