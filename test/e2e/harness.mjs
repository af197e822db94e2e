// End-to-end harness: runs a real VS Code (code-server's web build, VS Code 1.100.3) offline and
// drives it with playwright-core in Debian's Chromium. Install once with scripts/e2e/install.sh.
//
//   import { startVSCode, openFile, runCommand, webview, screenshot } from './harness.mjs';
//   const vs = await startVSCode({ extensionVsix, workspaceFiles: { 'a.ts': '...' }, artifactsDir });
//   after(() => vs.stop());
//
// Everything a run writes lives in a throwaway dir /tmp/rse2e-XXXXXX (short on purpose: unix socket
// paths under $TMPDIR must stay below 108 bytes): user data, extensions, workspace, XDG dirs, TMPDIR,
// the Chromium profile. Only loopback is used: code-server binds 127.0.0.1 and the browser aborts
// (and counts) every request to another host. Logs and screenshots are copied to artifactsDir.
//
// Env:
//   E2E_HOME        where install.sh put code-server (default /tmp/vscode-e2e)
//   CHROMIUM        browser binary (default /usr/bin/chromium)
//   E2E_KEEP_RUN=1  keep the run dir after stop() (for debugging; it is deleted by default)
//   RESIDUAL_VSIX / RESIDUAL_DEV_PATH  read by residualExtension(), set by scripts/e2e/run.sh
//
// The selectors used below are VS Code internals that are stable for the pinned code-server
// version (4.100.3); re-check them when that version changes.
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const E2E_HOME = process.env.E2E_HOME || '/tmp/vscode-e2e';
export const CODE_SERVER = path.join(E2E_HOME, 'code-server/node_modules/.bin/code-server');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEFAULT_ARTIFACTS_DIR = path.join(REPO_ROOT, '.e2e-artifacts');

// Generous on purpose: the Residual VSIX carries a ~30 MB native binary, and CI machines are slow.
const INSTALL_TIMEOUT_MS = 300_000;
const SERVER_START_TIMEOUT_MS = 60_000;
const WORKBENCH_TIMEOUT_MS = 120_000;
const UI_TIMEOUT_MS = 30_000;

const RUN_MARKER = 'RESIDUAL_E2E_RUN'; // env var carried by every process a run starts (see sweep())

const BASE_SETTINGS = {
  'workbench.startupEditor': 'none',
  'security.workspace.trust.enabled': false,
  'security.workspace.trust.startupPrompt': 'never',
  'telemetry.telemetryLevel': 'off',
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'extensions.ignoreRecommendations': true,
  'update.mode': 'none',
  'workbench.enableExperiments': false,
  'workbench.tips.enabled': false,
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  // Built-ins that would otherwise reach the network from the extension host.
  'typescript.disableAutomaticTypeAcquisition': true,
  'npm.fetchOnlinePackageInfo': false,
  'git.enabled': false,
  'git.autoRepositoryDetection': false,
};

const live = new Set(); // running instances, for the exit-time safety net
const pageInfo = new WeakMap(); // page -> { artifactsDir, name }

/**
 * Which build of Residual the e2e tests should load, from the env that scripts/e2e/run.sh sets:
 * { extensionVsix } (RESIDUAL_VSIX), { extensionDevPath } (RESIDUAL_DEV_PATH), or null (neither set:
 * Residual tests should skip themselves).
 */
export function residualExtension() {
  if (process.env.RESIDUAL_VSIX) return { extensionVsix: path.resolve(process.env.RESIDUAL_VSIX) };
  if (process.env.RESIDUAL_DEV_PATH) return { extensionDevPath: path.resolve(process.env.RESIDUAL_DEV_PATH) };
  return null;
}

/**
 * Starts code-server in a throwaway dir, opens the workbench on a fresh workspace in Chromium and
 * waits until it is usable.
 *
 * @param {object} o
 * @param {string} [o.extensionVsix]     .vsix installed with `code-server --install-extension` into this run's own extensions dir
 * @param {string} [o.extensionDevPath]  unpacked extension folder loaded like F5 does (Extension Development Host window)
 * @param {Record<string, string|Buffer>} [o.workspaceFiles]  relative path -> content, written into the workspace
 * @param {object} [o.settings]          merged over the harness' default user settings
 * @param {string} [o.artifactsDir]      where screenshots and logs go (default <repo>/.e2e-artifacts)
 * @param {string} [o.name]              prefix for artifact names (default "vscode")
 * @param {{width:number,height:number}} [o.viewport]
 * @returns {Promise<{page, context, port, url, workspace, userData, extensionsDir, runDir, artifactsDir,
 *   blockedRequests: string[], pageErrors: string[], timings: Record<string, number>,
 *   outputLog(channelName: string): Promise<string>,
 *   waitForOutput(channelName: string, pattern: string|RegExp, timeoutMs?: number): Promise<string>,
 *   stop(): Promise<void>}>}
 */
export async function startVSCode(o = {}) {
  const {
    extensionVsix,
    extensionDevPath,
    workspaceFiles = {},
    settings = {},
    artifactsDir = DEFAULT_ARTIFACTS_DIR,
    name = 'vscode',
    viewport = { width: 1400, height: 850 },
  } = o;
  if (extensionVsix && extensionDevPath) throw new Error('startVSCode: pass extensionVsix or extensionDevPath, not both');
  if (extensionVsix && !fs.existsSync(extensionVsix)) throw new Error(`startVSCode: no such VSIX: ${extensionVsix}`);
  const devPath = extensionDevPath && path.resolve(extensionDevPath);
  if (devPath && !fs.existsSync(path.join(devPath, 'package.json'))) {
    throw new Error(`startVSCode: no package.json in extensionDevPath ${devPath}`);
  }
  if (!fs.existsSync(CODE_SERVER)) {
    throw new Error(`code-server is not installed at ${CODE_SERVER}; run scripts/e2e/install.sh (E2E_HOME=${E2E_HOME})`);
  }

  const t0 = Date.now();
  const timings = {};
  const mark = (what) => { timings[what] = Date.now() - t0; };

  const runDir = fs.mkdtempSync('/tmp/rse2e-');
  // Under scripts/e2e/run.sh, record the run dir so that run.sh's trap can delete it even when this
  // process is SIGKILLed (then neither stop() nor the exit handler below runs).
  if (process.env.RESIDUAL_E2E_SESSION) {
    try { fs.appendFileSync(path.join(process.env.RESIDUAL_E2E_SESSION, 'run-dirs.txt'), `${runDir}\n`); } catch { /* best effort */ }
  }
  const dirs = {
    userData: path.join(runDir, 'ud'),
    extensions: path.join(runDir, 'ext'),
    workspace: path.join(runDir, 'ws'),
    xdg: path.join(runDir, 'xdg'),
    tmp: path.join(runDir, 'tmp'),
    profile: path.join(runDir, 'chromium'),
  };
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true });
  fs.mkdirSync(artifactsDir, { recursive: true });
  fs.mkdirSync(path.join(dirs.userData, 'User'), { recursive: true });
  const configFile = path.join(runDir, 'config.yaml');
  fs.writeFileSync(configFile, ''); // an empty --config stops code-server writing ~/.config/code-server/config.yaml
  fs.writeFileSync(path.join(dirs.userData, 'User', 'settings.json'),
    JSON.stringify({ ...BASE_SETTINGS, ...settings }, null, 2));
  for (const [rel, content] of Object.entries(workspaceFiles)) {
    const file = path.join(dirs.workspace, rel);
    if (!file.startsWith(dirs.workspace + path.sep)) throw new Error(`workspace file outside the workspace: ${rel}`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content);
  }

  // Env for code-server, its extension hosts and Chromium: nothing is written under $HOME or /tmp at large.
  const env = {
    ...process.env,
    XDG_CONFIG_HOME: path.join(dirs.xdg, 'config'),
    XDG_DATA_HOME: path.join(dirs.xdg, 'data'),
    XDG_CACHE_HOME: path.join(dirs.xdg, 'cache'),
    TMPDIR: dirs.tmp, // extension hosts leave vscode-ipc-*.sock etc. in $TMPDIR
    EXTENSIONS_GALLERY: '{}', // no marketplace: the workbench never contacts open-vsx.org
    [RUN_MARKER]: runDir,
  };
  delete env.VSCODE_IPC_HOOK_CLI; // if the tests run inside a VS Code terminal, do not talk to that VS Code
  const csArgs = ['--config', configFile, '--user-data-dir', dirs.userData, '--extensions-dir', dirs.extensions];
  const logFile = path.join(runDir, 'code-server.log');
  const browserLog = path.join(runDir, 'browser.log');
  const blockedRequests = [];
  const pageErrors = [];

  const inst = {
    port: 0, url: '', page: null, context: null, server: null,
    workspace: dirs.workspace, userData: dirs.userData, extensionsDir: dirs.extensions, runDir, artifactsDir,
    blockedRequests, pageErrors, timings, stopped: false,
  };
  live.add(inst);

  inst.stop = async () => {
    if (inst.stopped) return;
    inst.stopped = true;
    if (inst.page && !inst.page.isClosed()) {
      await inst.page.screenshot({ path: path.join(artifactsDir, `${name}-at-stop.png`), timeout: 5000 }).catch(() => {});
    }
    await inst.context?.close().catch(() => {});
    await stopServer(inst.server);
    sweep(runDir); // anything still carrying this run's marker (grandchildren that outlived their parent)
    live.delete(inst);
    if (blockedRequests.length) {
      console.log(`[e2e:${name}] blocked ${blockedRequests.length} non-loopback request(s): ${[...new Set(blockedRequests)].join(' ')}`);
    }
    collectLogs(runDir, dirs.userData, path.join(artifactsDir, `${name}-logs`));
    if (process.env.E2E_KEEP_RUN === '1') console.log(`[e2e:${name}] run dir kept: ${runDir}`);
    else fs.rmSync(runDir, { recursive: true, force: true, maxRetries: 3 });
  };

  const channelLogs = async (channel) => {
    const root = path.join(dirs.userData, 'logs');
    if (!fs.existsSync(root)) return '';
    // OutputChannel: .../exthost1/output_logging_<ts>/<n>-<name>.log; LogOutputChannel: .../exthost1/<ext id>/<name>.log
    const files = fs.readdirSync(root, { recursive: true }).map(String)
      .filter((f) => f.endsWith(`-${channel}.log`) || path.basename(f) === `${channel}.log`).sort();
    return files.map((f) => fs.readFileSync(path.join(root, f), 'utf8')).join('');
  };
  inst.outputLog = channelLogs;
  inst.waitForOutput = async (channel, pattern, timeoutMs = UI_TIMEOUT_MS) => {
    const test = typeof pattern === 'string' ? (s) => s.includes(pattern) : (s) => pattern.test(s);
    let text = '';
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      text = await channelLogs(channel);
      if (test(text)) return text;
      await sleep(200);
    }
    throw new Error(`output channel "${channel}" did not show ${pattern} within ${timeoutMs} ms; it has:\n${text.slice(-2000)}`);
  };

  try {
    // 1. VSIX: install into this run's own, empty extensions dir.
    if (extensionVsix) {
      await execFileP(CODE_SERVER, [...csArgs, '--install-extension', path.resolve(extensionVsix), '--force'],
        { env, timeout: INSTALL_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, logFile);
      mark('vsixInstalled');
    }

    // 2. code-server on loopback only. detached: its own process group, so stop() can signal the whole tree.
    inst.port = await freePort();
    const out = fs.openSync(logFile, 'a');
    inst.server = spawn(CODE_SERVER, [
      ...csArgs,
      '--bind-addr', `127.0.0.1:${inst.port}`,
      '--auth', 'none',
      '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override',
      dirs.workspace,
    ], { env, stdio: ['ignore', out, out], detached: true });
    fs.closeSync(out);
    fs.writeFileSync(path.join(runDir, 'code-server.pid'), String(inst.server.pid));
    await waitUntil(async () => {
      if (inst.server.exitCode !== null || inst.server.signalCode) {
        throw new Error(`code-server exited early (${inst.server.exitCode ?? inst.server.signalCode}); see ${logFile}`);
      }
      return (await fetch(`http://127.0.0.1:${inst.port}/healthz`).catch(() => null))?.ok;
    }, 'code-server /healthz', SERVER_START_TIMEOUT_MS);
    mark('serverUp');

    // 3. Chromium with its profile inside the run dir. Headless, no sandbox (root), nothing phoning home.
    inst.context = await chromium.launchPersistentContext(dirs.profile, {
      executablePath: CHROMIUM,
      headless: true,
      env,
      viewport,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--disable-default-apps'],
    });
    await inst.context.route((u) => !isLoopback(u) && /^(https?|wss?):$/.test(u.protocol), (route) => {
      blockedRequests.push(new URL(route.request().url()).host);
      return route.abort('blockedbyclient');
    });
    const page = inst.context.pages()[0] ?? (await inst.context.newPage());
    inst.page = page;
    pageInfo.set(page, { artifactsDir, name });
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    page.on('pageerror', (e) => {
      pageErrors.push(e.message);
      console.log(`[e2e:${name}] pageerror: ${e.message}`);
      fs.appendFileSync(browserLog, `pageerror: ${e.stack || e.message}\n`);
    });
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') fs.appendFileSync(browserLog, `console.${m.type()}: ${m.text()}\n`);
    });
    mark('browserUp');

    // 4. The workbench. With extensionDevPath the `payload` parameter makes this window an
    //    "[Extension Development Host]" that loads the unpacked folder through the server.
    let url = `http://127.0.0.1:${inst.port}/?folder=${encodeURIComponent(dirs.workspace)}`;
    if (devPath) {
      const payload = [['extensionDevelopmentPath', `vscode-remote://127.0.0.1:${inst.port}${devPath}`]];
      url += `&payload=${encodeURIComponent(JSON.stringify(payload))}`;
    }
    inst.url = url;
    await page.goto(url, { timeout: WORKBENCH_TIMEOUT_MS });
    await page.locator('.monaco-workbench').waitFor({ timeout: WORKBENCH_TIMEOUT_MS });
    // `.monaco-workbench` appears before keybindings and the remote file system work. An explorer row for a
    // workspace entry means the browser talks to the server's file system.
    const firstEntry = Object.keys(workspaceFiles).map((f) => f.split(/[\\/]/)[0]).sort()[0];
    if (firstEntry) {
      await page.locator('.explorer-folders-view .monaco-list-row', { hasText: firstEntry }).first()
        .waitFor({ timeout: WORKBENCH_TIMEOUT_MS });
    } else {
      await page.locator('.part.sidebar .explorer-folders-view, .part.sidebar .explorer-viewlet').first()
        .waitFor({ timeout: WORKBENCH_TIMEOUT_MS });
    }
    mark('workbenchReady');
  } catch (e) {
    if (inst.page) {
      await inst.page.screenshot({ path: path.join(artifactsDir, `${name}-startup-failure.png`), timeout: 5000 }).catch(() => {});
    }
    const tail = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-3000) : '';
    await inst.stop();
    e.message += `\n[e2e:${name}] code-server log tail:\n${tail}`;
    throw e;
  }

  return {
    page: inst.page,
    context: inst.context,
    port: inst.port,
    url: inst.url,
    workspace: inst.workspace,
    userData: inst.userData,
    extensionsDir: inst.extensionsDir,
    runDir,
    artifactsDir,
    blockedRequests,
    pageErrors,
    timings,
    outputLog: inst.outputLog,
    waitForOutput: inst.waitForOutput,
    stop: inst.stop,
  };
}

// ---------------------------------------------------------------------------------------------------
// Page helpers. All take the Playwright page returned by startVSCode.

const quickInput = (page) => page.locator('.quick-input-widget input.input');
const quickRows = (page) => page.locator('.quick-input-widget .quick-input-list .monaco-list-row');

/**
 * Opens Quick Open and types `text` into it (">" prefix = commands, ":" = go to line). Ctrl+P first; if
 * the keystroke did not reach the workbench (focus inside a webview or another iframe), clicks the
 * title bar's command center instead. Note: blurring a focused webview iframe from the test does NOT
 * give the workbench focus back (VS Code hands focus to a webview again), so it is not used.
 */
async function quickOpen(page, text, timeout) {
  const widget = page.locator('.quick-input-widget');
  if (!(await widget.isVisible())) {
    await page.keyboard.press('Control+P');
    try {
      await quickInput(page).waitFor({ timeout: 2000 });
    } catch {
      await page.locator('.part.titlebar .command-center .command-center-quick-pick').first().click();
      await quickInput(page).waitFor({ timeout });
    }
  }
  await quickInput(page).fill(text);
}

/**
 * Answers VS Code's own file dialog (the quick-input form a remote workbench shows) with `file`. The dialog fills its
 * box with the folder it starts in a moment after it appears, so the answer is typed only once that start path is
 * there, and Enter is pressed only once the box keeps exactly `file`; resolves when the dialog has closed.
 */
export async function answerFileDialog(page, file, { timeout = UI_TIMEOUT_MS } = {}) {
  const input = quickInput(page);
  await input.waitFor({ state: 'visible', timeout });
  const until = async (pred, what) => {
    for (const end = Date.now() + timeout; !(await pred()); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > end) throw new Error(`file dialog: ${what}`);
    }
  };
  await until(async () => (await input.inputValue()).startsWith('/'), 'its start folder never appeared');
  // The dialog may set its start folder more than once (it lists the folder, then fills the box again): typed
  // again until the box keeps the answer.
  await until(async () => {
    if ((await input.inputValue()) !== file) await input.fill(file);
    await new Promise((r) => setTimeout(r, 150));
    return (await input.inputValue()) === file;
  }, `the box does not hold ${file}`);
  await input.press('Enter');
  await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout });
}

/**
 * Quick Open (Ctrl+P) a workspace file by name or relative path, in the first editor group; resolves when its tab is
 * the active tab of the active editor group and its editor has focus. (Tabs are matched by file name, so avoid opening two
 * files with the same name at once.)
 */
export async function openFile(page, name, { timeout = UI_TIMEOUT_MS } = {}) {
  const base = path.posix.basename(name.replace(/\\/g, '/'));
  // Quick Open opens the file in the active group. After a click in a panel, that is the panels' group, where the
  // file would cover the panel; the first group is where files live.
  if (await page.locator('.part.editor .editor-group-container').count() > 1) await runCommand(page, 'View: Focus First Editor Group', { timeout });
  await quickOpen(page, name, timeout);
  // Enter opens the focused row: wait until that is the file (the list still shows the recent files for a moment,
  // where a row of the same name further down would match too early).
  await quickRows(page).and(page.locator('.focused')).filter({ has: page.locator('.label-name', { hasText: exactText(base) }) }).first().waitFor({ timeout });
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout });
  // When focus was in a webview, VS Code may reveal the file in another group and hand focus back to
  // the webview, leaving a different group active. Clicking the file's tab activates its group and
  // focuses the editor, so the other helpers (which act on the active editor) hit this file.
  const tab = page.locator('.part.editor .editor-group-container .tab.active', {
    has: page.locator('.label-name', { hasText: exactText(base) }),
  }).first();
  await tab.waitFor({ timeout });
  await tab.click();
  await page.locator('.part.editor .editor-group-container.active .tab.active .label-name', { hasText: exactText(base) }).waitFor({ timeout });
  await activeEditor(page).waitFor({ timeout });
}

/**
 * Runs a command from the command palette by its palette title ("Category: Title"), matched exactly.
 * Retries with a fresh palette while the command is not registered yet (extension still activating).
 * `opensQuickInput`: the command shows a quick pick or input box of its own (see below).
 */
export async function runCommand(page, paletteTitle, { timeout = UI_TIMEOUT_MS, opensQuickInput = false } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    await quickOpen(page, `>${paletteTitle}`, timeout);
    const row = quickRows(page).filter({ has: page.locator('.label-name', { hasText: exactText(paletteTitle) }) }).first();
    try {
      await row.waitFor({ timeout: Math.max(1000, Math.min(5000, end - Date.now())) });
    } catch {
      await page.keyboard.press('Escape');
      if (Date.now() >= end) throw new Error(`command "${paletteTitle}" not found in the palette within ${timeout} ms`);
      continue;
    }
    await row.click();
    // A command that asks for input (a quick pick, an input box) reuses the widget at once, so it may never be hidden
    // in between: then the palette's row going away is the sign the command ran.
    if (opensQuickInput) await row.waitFor({ state: 'detached', timeout });
    else await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout });
    return;
  }
}

/** The active editor group's visible text editor area (Monaco `.view-lines`). */
export function activeEditor(page) {
  return page.locator('.part.editor .editor-group-container.active .editor-instance .monaco-editor .view-lines')
    .filter({ visible: true }).first();
}

/**
 * Makes sure the active editor group shows a text editor. When a webview panel (or another non-text
 * editor) is the active editor, e.g. right after a command opened a panel beside the file, this
 * clicks the active tab of the first group that shows a text editor, which activates that group.
 */
export async function focusTextEditor(page, { timeout = UI_TIMEOUT_MS } = {}) {
  if (await activeEditor(page).count()) return;
  const group = page.locator('.part.editor .editor-group-container', {
    has: page.locator('.editor-instance .monaco-editor .view-lines').filter({ visible: true }),
  }).first();
  await group.waitFor({ timeout });
  await group.locator('.tab.active').first().click();
  await activeEditor(page).waitFor({ timeout });
}

/**
 * Opens the active text editor's context menu (see focusTextEditor) from the keyboard and clicks the entry whose label
 * is exactly itemTitle (a contributed command shows its `title`, without the category). Shift+F10 opens the menu at
 * the cursor without moving it, so the selection is kept; a right-click could land off the selection under load and
 * move the cursor (the command would then see another line).
 */
export async function contextMenu(page, itemTitle, { timeout = UI_TIMEOUT_MS } = {}) {
  await focusTextEditor(page, { timeout });
  const focused = page.locator('.part.editor .editor-group-container.active .monaco-editor.focused');
  if (!(await focused.count())) {
    // Clicking the group's active tab gives its editor keyboard focus without touching the cursor or the selection.
    await page.locator('.part.editor .editor-group-container.active .tab.active').first().click();
    await focused.first().waitFor({ timeout });
  }
  await page.keyboard.press('Shift+F10');
  // The menu is rendered in a shadow root; Playwright's CSS engine pierces open shadow roots.
  const item = page.locator('.monaco-menu .action-item .action-label', { hasText: exactText(itemTitle) }).first();
  await item.waitFor({ timeout });
  // Observed: a plain click on a freshly opened Monaco menu is often ignored (the menu stays open);
  // hovering the entry first (which focuses it) makes the click work. Still check that the menu
  // closed and retry; the last try presses Enter on the hovered (= focused) entry.
  const menu = page.locator('.monaco-menu').first();
  for (let attempt = 1; ; attempt++) {
    if (attempt < 4) {
      await item.hover();
      await item.click();
    } else {
      await item.hover();
      await page.keyboard.press('Enter');
    }
    try {
      await menu.waitFor({ state: 'hidden', timeout: 1500 });
      return;
    } catch {
      if (attempt >= 4) throw new Error(`context menu entry "${itemTitle}" did not run (menu stayed open)`);
    }
  }
}

/**
 * Selects whole lines `from`..`to` (1-based, inclusive) in the active text editor (see focusTextEditor): Go to Line (":from:1" in
 * Quick Open), then Shift+Down and Shift+End. The selection ends at the end of line `to` (no trailing
 * newline). Assumes word wrap is off (the default).
 */
export async function selectLines(page, from, to = from, { timeout = UI_TIMEOUT_MS } = {}) {
  if (!(from >= 1 && to >= from)) throw new Error(`selectLines: bad range ${from}..${to}`);
  // Under load, Enter can reach Quick Open before it has parsed ":line:col", and the cursor stays put; the status
  // bar's "Ln N, Col 1" confirms the jump, and the jump is retried until it does.
  const cursorAt = page.locator('.statusbar-item', { hasText: new RegExp(`^\\s*Ln ${from}, Col 1\\s*$`) });
  for (let attempt = 1; ; attempt++) {
    await focusTextEditor(page, { timeout });
    await quickOpen(page, `:${from}:1`, timeout);
    await sleep(150);
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout });
    try {
      await cursorAt.first().waitFor({ timeout: 3000 });
      break;
    } catch {
      if (attempt >= 4) throw new Error(`selectLines: the cursor did not move to line ${from}`);
    }
  }
  for (let i = from; i < to; i++) await page.keyboard.press('Shift+ArrowDown');
  await page.keyboard.press('Shift+End');
  // Wait until the editor reports the selection (status bar "Ln to, Col c (n selected)"), so the next command sees it
  // even when the keystrokes lag under load. An empty line selects nothing: then the cursor on line `to` is enough.
  const selectedOnTo = page.locator('.statusbar-item', { hasText: new RegExp(`^\\s*Ln ${to}, Col \\d+ \\(\\d+ selected\\)\\s*$`) });
  const cursorOnTo = page.locator('.statusbar-item', { hasText: new RegExp(`^\\s*Ln ${to}, Col \\d+`) });
  await selectedOnTo.first().waitFor({ timeout: 3000 }).catch(async () => { await cursorOnTo.first().waitFor({ timeout }); });
}

/** Selects everything in the active editor (click into it, Ctrl+A). */
export async function selectAll(page, { timeout = UI_TIMEOUT_MS } = {}) {
  await focusTextEditor(page, { timeout });
  const editor = activeEditor(page);
  await editor.click({ position: { x: 40, y: 8 } });
  await page.keyboard.press('Control+A');
}

/**
 * Opens a view container from the activity bar by its title (e.g. "Explorer", or an extension's
 * `viewsContainers.activitybar[].title`). Does nothing if it is already the visible one (clicking the
 * active entry would close the side bar).
 */
export async function openViewContainer(page, title, { timeout = UI_TIMEOUT_MS } = {}) {
  const entry = page.locator('.part.activitybar .action-item', {
    has: page.locator(`a.action-label[aria-label="${cssString(title)}"], a.action-label[aria-label^="${cssString(title)} ("]`),
  }).first();
  await entry.waitFor({ timeout });
  // The side-bar header reads "TITLE" or, when the container holds a single view, "TITLE: VIEW NAME".
  const sidebarTitle = page.locator('.part.sidebar .composite.title h2', {
    hasText: new RegExp(`^\\s*${escapeRegExp(title)}(\\s*:.*)?\\s*$`, 'i'),
  });
  const alreadyOpen = (await entry.getAttribute('class'))?.split(/\s+/).includes('checked') && (await sidebarTitle.isVisible());
  if (!alreadyOpen) await entry.locator('a.action-label').click();
  await sidebarTitle.waitFor({ timeout });
}

/**
 * Describes the webviews in the page: one entry per outer `iframe.webview` (ready or not).
 * `title` is the webview's title (the panel title for a WebviewPanel, the view name for a
 * WebviewView), taken from the inner `iframe#active-frame[title]`; `name` is the webview's unique id.
 */
export async function listWebviews(page) {
  const outers = page.locator('iframe.webview');
  const n = await outers.count();
  const result = [];
  for (let i = 0; i < n; i++) {
    const el = outers.nth(i);
    const [name, src, cls] = await Promise.all([el.getAttribute('name'), el.getAttribute('src'), el.getAttribute('class')]);
    const params = src ? new URL(src, 'http://x').searchParams : new URLSearchParams();
    const inner = el.contentFrame().locator('iframe#active-frame');
    const title = (await inner.count().catch(() => 0)) ? await inner.getAttribute('title', { timeout: 1000 }).catch(() => null) : null;
    result.push({
      name, title,
      extensionId: params.get('extensionId') || null,
      purpose: params.get('purpose') || null, // "webviewView" for side-bar/panel views, null for WebviewPanels
      ready: /\bready\b/.test(cls || ''),
      visible: await el.isVisible().catch(() => false),
    });
  }
  return result;
}

/**
 * A FrameLocator for the extension's HTML inside the webview whose title matches: the inner
 * `iframe#active-frame` of the outer `iframe.webview.ready`. Several webviews can be open at once
 * (panels, side-bar views); they are told apart by title (string = exact, or RegExp) and optionally
 * extensionId ("publisher.name") and purpose ("webviewView" for WebviewViews), then addressed by the
 * outer iframe's unique `name` attribute, so later webviews opening or closing do not shift it.
 * Waits until exactly one webview matches. Without any filter, there must be exactly one webview.
 */
export async function webview(page, { title, extensionId, purpose, timeout = UI_TIMEOUT_MS } = {}) {
  const end = Date.now() + timeout;
  let seen = [];
  for (;;) {
    seen = (await listWebviews(page)).filter((w) => w.ready);
    const matches = seen.filter((w) =>
      (title === undefined || (title instanceof RegExp ? title.test(w.title ?? '') : w.title === title))
      && (extensionId === undefined || w.extensionId?.toLowerCase() === extensionId.toLowerCase())
      && (purpose === undefined || w.purpose === purpose));
    if (matches.length === 1) {
      return page.frameLocator(`iframe.webview.ready[name="${cssString(matches[0].name)}"]`).frameLocator('iframe#active-frame');
    }
    if (Date.now() >= end) {
      throw new Error(`webview ${JSON.stringify({ title: String(title), extensionId, purpose })}: ${matches.length} matches `
        + `after ${timeout} ms; open webviews: ${JSON.stringify(seen.map(({ title: t, extensionId: x, purpose: p }) => ({ title: t, extensionId: x, purpose: p })))}`);
    }
    await sleep(250);
  }
}

/** PNG of the whole page. A relative path goes into the run's artifactsDir. Returns the absolute path. */
export async function screenshot(page, file) {
  const info = pageInfo.get(page);
  const target = path.isAbsolute(file) ? file : path.join(info?.artifactsDir ?? DEFAULT_ARTIFACTS_DIR, file);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  await page.screenshot({ path: target });
  return target;
}

/**
 * Wraps node:test's `it` so that a failing test first saves a screenshot of the page as `FAILED-<test name>.png` in
 * the artifacts folder (the state the failure left on screen is what explains it). `getPage` is called at failure time.
 */
export function failureScreenshots(it, getPage) {
  return (name, ...rest) => {
    const fn = rest.pop();
    return it(name, ...rest, async (t) => {
      try {
        await fn(t);
      } catch (err) {
        const page = getPage();
        const file = `FAILED-${name.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 80)}.png`;
        if (page) await screenshot(page, file).then((p) => console.log(`# failure screenshot: ${p}`), () => undefined);
        throw err;
      }
    });
  };
}

// ---------------------------------------------------------------------------------------------------
// Internals

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function isLoopback(u) { return u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]'; }

/** A regexp matching exactly `s` (whitespace-trimmed), for Playwright's hasText. */
function exactText(s, flags = '') { return new RegExp(`^\\s*${escapeRegExp(s)}\\s*$`, flags); }

function escapeRegExp(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

function cssString(s) { return s.replace(/["\\]/g, '\\$&'); }

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitUntil(fn, what, timeoutMs, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

function execFileP(cmd, args, opts, logFile) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, opts, (err, stdout, stderr) => {
      fs.appendFileSync(logFile, `$ ${path.basename(cmd)} ${args.join(' ')}\n${stdout}${stderr}\n`);
      if (err) reject(new Error(`${path.basename(cmd)} ${args.slice(-2).join(' ')} failed: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

async function stopServer(child) {
  if (!child || child.exitCode !== null || child.signalCode) return;
  const exited = new Promise((r) => child.once('exit', r));
  signalGroup(child.pid, 'SIGTERM');
  const timer = (ms) => new Promise((r) => setTimeout(r, ms).unref());
  if ((await Promise.race([exited.then(() => true), timer(5000).then(() => false)])) === false) {
    signalGroup(child.pid, 'SIGKILL');
    await Promise.race([exited, timer(2000)]);
  }
  signalGroup(child.pid, 'SIGKILL'); // stragglers left in the group after the leader exited
}

function signalGroup(pid, sig) {
  try { process.kill(-pid, sig); } catch { /* group gone */ }
}

/** SIGKILLs every process (other than this one) whose environment carries this run's marker. */
function sweep(runDir) {
  const want = `${RUN_MARKER}=${runDir}`;
  let killed = 0;
  let pids = [];
  try { pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid); } catch { return 0; }
  for (const pid of pids) {
    let envText;
    try { envText = fs.readFileSync(`/proc/${pid}/environ`, 'latin1'); } catch { continue; }
    if (envText.split('\0').includes(want)) {
      try { process.kill(Number(pid), 'SIGKILL'); killed++; } catch { /* already gone */ }
    }
  }
  if (killed) console.log(`[e2e] killed ${killed} leftover process(es) of ${runDir}`);
  return killed;
}

function collectLogs(runDir, userData, dest) {
  try {
    fs.rmSync(dest, { recursive: true, force: true });
    fs.mkdirSync(dest, { recursive: true });
    for (const f of ['code-server.log', 'browser.log']) {
      if (fs.existsSync(path.join(runDir, f))) fs.copyFileSync(path.join(runDir, f), path.join(dest, f));
    }
    const logs = path.join(userData, 'logs');
    if (fs.existsSync(logs)) fs.cpSync(logs, path.join(dest, 'vscode'), { recursive: true });
  } catch (e) {
    console.log(`[e2e] could not copy logs to ${dest}: ${e.message}`);
  }
}

// Safety net: if the test process exits without stop() (crash, uncaught error, signal), kill what we
// started. Only synchronous work is possible here. Playwright kills its own browsers on exit as well.
function killAllSync() {
  for (const inst of live) {
    if (inst.server?.pid) signalGroup(inst.server.pid, 'SIGKILL');
    sweep(inst.runDir);
    if (process.env.E2E_KEEP_RUN !== '1') {
      try { fs.rmSync(inst.runDir, { recursive: true, force: true, maxRetries: 2 }); } catch { /* best effort */ }
    }
  }
  live.clear();
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAllSync(); process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 })[sig]); });
}
