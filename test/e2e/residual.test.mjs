// End-to-end: Residual in a real VS Code (code-server 4.100.3 + Chromium). Right-click Analyze Selection on a sample
// file, read the Activations panel from inside its webview, use the palette and the Inspector, and check bad input
// (empty line, missing model folder) is reported while the extension host keeps working. Screenshots are kept in
// .e2e-artifacts/. Expected values come from the `residual` CLI on the same bundled model, not from this file.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it as nodeIt } from 'node:test';
import {
  answerFileDialog, contextMenu, failureScreenshots, openFile, openViewContainer, REPO_ROOT, residualExtension, runCommand, screenshot, selectAll, selectLines, startVSCode, webview,
} from './harness.mjs';

const ext = residualExtension();
const SAMPLE = fs.readFileSync(path.join(REPO_ROOT, 'demo-workspace', 'prompt.py'), 'utf8');
const LINES = SAMPLE.split('\n');
const bundledModel = ['demo', 'tiny-gpt2'].map((n) => path.join(REPO_ROOT, 'models', n)).find((d) => fs.existsSync(path.join(d, 'model.safetensors')));

/** The CLI's analysis of `text` on the bundled model: the independent expectation for what the panel shows. */
function cliAnalyze(text) {
  const out = execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'analyze', '--model', bundledModel, '--text', text, '--json', '--providers', 'cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return JSON.parse(out);
}
const visible = (s) => s.replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '→').replace(/\r/g, '␍') || '∅';

describe('Residual in a real VS Code', { skip: ext ? false : 'RESIDUAL_VSIX / RESIDUAL_DEV_PATH not set (run scripts/e2e/run.sh)' }, () => {
  let vs;
  const it = failureScreenshots(nodeIt, () => vs?.page);
  const consoleProblems = [];
  const timings = {};

  before(async () => {
    vs = await startVSCode({ ...ext, name: 'residual', workspaceFiles: { 'prompt.py': SAMPLE } });
    vs.page.on('console', (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) consoleProblems.push(`${m.text().slice(0, 60)} @ ${m.location().url}:${m.location().lineNumber}:${m.location().columnNumber}`);
    });
  });
  after(async () => {
    console.log(`# timings (ms): ${JSON.stringify(timings)}`);
    await vs?.stop();
  });

  const activations = () => webview(vs.page, { title: 'Residual: Activations' });

  /** Writes the workspace settings and waits until the extension has seen them (it logs each settings change). */
  async function writeSettings(obj) {
    const settingsFile = path.join(vs.workspace, '.vscode', 'settings.json');
    fs.mkdirSync(path.dirname(settingsFile), { recursive: true });
    const changes = async () => ((await vs.outputLog('Residual')).match(/settings changed/g) ?? []).length;
    const n = await changes();
    fs.writeFileSync(settingsFile, JSON.stringify(obj));
    const end = Date.now() + 30_000;
    while ((await changes()) <= n) {
      if (Date.now() > end) throw new Error('the extension did not see the settings change');
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** The CLI's attribution graph of `text` on the bundled model: its summary line. */
  function cliGraph(text) {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'residual-e2e-graph-')), 'g.json');
    return execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'graph', '--model', bundledModel, '--transcoders', path.join(bundledModel, 'transcoders'), '--text', text, '--out', out, '--providers', 'cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  }

  /** The extension's own log of the time from the command to the drawn panel, for the request the panel shows. */
  async function loggedLatency(wv) {
    const id = await wv.locator('#app').getAttribute('data-request');
    const re = new RegExp(`\\[${id}\\] command to rendered panel: (\\d+) ms`);
    return Number(re.exec(await vs.waitForOutput('Residual', re, 30_000))[1]);
  }

  /** Waits until the panel shows exactly these tokens (a previous analysis may still be on screen meanwhile). */
  async function waitForTokens(wv, expected, timeout = 60_000) {
    const want = expected.tokens.map((t) => visible(t.text));
    const end = Date.now() + timeout;
    let got = [];
    while (Date.now() < end) {
      if ((await wv.locator('#app').getAttribute('data-state')) === 'ready') {
        got = await wv.locator('#tokens .token').allTextContents();
        if (JSON.stringify(got) === JSON.stringify(want)) return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(got, want, 'tokens shown in the Activations panel');
  }

  it('right-click Analyze Selection shows tokens, every layer, the lens and the chart', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.includes('print("hello"')) + 1;
    const text = LINES[line - 1];
    const expected = cliAnalyze(text);
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    const t0 = Date.now();
    await contextMenu(page, 'Analyze Selection');
    const wv = await activations();
    await waitForTokens(wv, expected);
    timings.analyzeCold = Date.now() - t0;
    timings.analyzeColdLogged = await loggedLatency(wv);
    const L = expected.model.n_layers;
    // Heatmap and lens: one row per read-out (resid_pre of each block + the last resid_post), one column per token.
    assert.equal(await wv.locator('#heatmap tr[data-layer]').count(), L + 1);
    assert.equal(await wv.locator('#heatmap tr[data-layer="0"] td.cell').count(), expected.tokens.length);
    assert.equal(await wv.locator('#lens-grid tr[data-layer]').count(), L + 1);
    const lensRowLabels = await wv.locator('#lens-grid th.rowlabel').allTextContents();
    assert.deepEqual(lensRowLabels, expected.lens.map((l) => l.hook));
    // The lens cell at the last layer and position is the final prediction, as the CLI computes it.
    const lastCell = wv.locator(`#lens-grid tr[data-layer="${L}"] td.cell`).nth(expected.tokens.length - 1);
    assert.equal(await lastCell.textContent(), visible(expected.top[0].text));
    assert.equal((await wv.locator('#top li code.tok').first().textContent()), visible(expected.top[0].text));
    assert.equal((await wv.locator('#provider').textContent()).trim(), expected.provider.toUpperCase());
    // chart.js drew into the canvas (non-zero size, and the peak layer recorded).
    const canvas = wv.locator('canvas#trajectory');
    await canvas.waitFor();
    const box = await canvas.boundingBox();
    assert.ok(box && box.width > 100 && box.height > 100, `chart canvas ${JSON.stringify(box)}`);
    assert.match((await canvas.getAttribute('data-peak')) ?? '', /^\d+$/);
    await screenshot(page, 'residual-activations.png');
    await canvas.scrollIntoViewIfNeeded();
    await screenshot(page, 'residual-chart.png');
  });

  it('clicking a token moves the chart to that position; the measure selector redraws the heatmap', async () => {
    const wv = await activations();
    await wv.locator('#tokens .token').first().click();
    await wv.locator('h2', { hasText: 'Prediction across layers at position 0' }).waitFor();
    await wv.locator('#tokens .token.selected[data-pos="0"]').waitFor();
    await wv.locator('#measure').click();
    await wv.locator('vscode-option', { hasText: 'Layer update' }).click();
    await wv.locator('#heatmap[data-measure="update_norm"]').waitFor();
    // Re-run from the panel (no editor has focus then): the same tokens come back as a new result.
    const before = await wv.locator('#app').getAttribute('data-request');
    const chips = await wv.locator('#tokens .token').allTextContents();
    await wv.locator('vscode-button', { hasText: 'Re-run' }).click();
    await wv.locator(`#app[data-state="ready"]:not([data-request="${before}"])`).waitFor({ timeout: 30_000 });
    assert.deepEqual(await wv.locator('#tokens .token').allTextContents(), chips);
    await wv.locator('vscode-panel-tab#tab-overview').click();
    await wv.locator('#measure').click();
    await wv.locator('vscode-option', { hasText: 'Layer update' }).click();
    // Per-block statistics: one row per block.
    const L = Number(await wv.locator('#lens-grid tr[data-layer]').count()) - 1;
    assert.equal(await wv.locator('#heatmap tr[data-layer]').count(), L);
    // Colour per row by default: every row's largest value gets the strongest colour, and a colour bar explains it.
    const strongest = async () => wv.locator('#heatmap tr[data-layer]').evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll('td.cell')].filter((td) => td.style.background.includes(' 85%')).length));
    const perRow = await strongest();
    assert.ok(perRow.every((n) => n >= 1), 'each row reaches the top of its own scale');
    await wv.locator('#heat-colour-bar', { hasText: 'row max' }).waitFor();
    // One range for all rows: only the row with the overall maximum reaches it.
    await wv.locator('#heat-scale').click();
    await wv.locator('vscode-option', { hasText: 'one range for all rows' }).click();
    await wv.locator('#heat-colour-bar:not(:has-text("row max"))').waitFor();
    const globalRows = (await strongest()).filter((n) => n >= 1).length;
    assert.ok(globalRows >= 1 && globalRows < perRow.length, `one range: ${globalRows} of ${perRow.length} rows reach the top`);
    await wv.locator('#heat-scale').click();
    await wv.locator('vscode-option', { hasText: 'each row its own range' }).click();
    await wv.locator('#heat-colour-bar', { hasText: 'row max' }).waitFor();
  });

  it('the palette command analyses the new selection; a second request replaces the first', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('total = sum')) + 1;
    const expected = cliAnalyze(LINES[line - 1]);
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    const t0 = Date.now();
    await runCommand(page, 'Residual: Analyze Selection');
    const wv = await activations();
    await waitForTokens(wv, expected);
    timings.analyzeWarm = Date.now() - t0;
    timings.analyzeWarmLogged = await loggedLatency(wv);

    // Two requests at once: the later selection wins and the panel ends in a clean state.
    const l1 = LINES.findIndex((l) => l.startsWith('numbers')) + 1;
    const l2 = LINES.findIndex((l) => l.startsWith('for i in')) + 1;
    const exp2 = cliAnalyze(LINES[l2 - 1]);
    await openFile(page, 'prompt.py');
    await selectLines(page, l1);
    await runCommand(page, 'Residual: Analyze Selection');
    await selectLines(page, l2);
    await runCommand(page, 'Residual: Analyze Selection');
    await waitForTokens(wv, exp2);
  });

  it('the Inspector shows the model, the provider and the last analysis', async () => {
    const { page } = vs;
    const expected = cliAnalyze('x');
    await runCommand(page, 'Residual: Open Inspector');
    const wv = await webview(page, { title: 'Inspector', purpose: 'webviewView' });
    await wv.locator('#model-name', { hasText: expected.model.name }).waitFor();
    assert.equal((await wv.locator('#provider').textContent()).trim(), expected.provider.toUpperCase());
    await wv.locator('#last-analysis .preview', { hasText: 'for i in range(10):' }).waitFor();
    // Every provider tried before the one in use is listed with its reason: the same causes, in the same order, as
    // the CLI finds with the default order on this machine (the GPU check runs in a child of the extension host).
    const attempts = await wv.locator('ul.attempts li').allTextContents();
    assert.ok(attempts.at(-1).startsWith(`${expected.provider}: in use`), attempts.join(' | '));
    const cliDefault = JSON.parse(execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'analyze', '--model', bundledModel, '--text', 'x', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    assert.deepEqual(
      attempts.filter((t) => !t.includes(': in use')),
      cliDefault.attempts.filter((a) => !a.ok).map((a) => `${a.provider}: not tried: ${a.reason}`),
    );
    assert.match(await vs.outputLog('Residual'), /GPU check of cuda, webgpu: \d+ ms/);
    // Parity, checked in the background after the load: the figure the CLI's analyze --parity finds on this model.
    const parityCli = JSON.parse(execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'analyze', '--model', bundledModel, '--text', 'x', '--json', '--parity', '--providers', 'cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })).parity;
    const parityLine = wv.locator('#parity', { hasText: 'max |Δlogit|' });
    await parityLine.waitFor({ timeout: 60_000 });
    const m = /^Parity: max \|Δlogit\| ([\d.e+-]+) vs float64 reference \((\d+) tokens\) · worst hook (\S+) ([\d.e+-]+)$/.exec(await parityLine.textContent());
    assert.ok(m, await parityLine.textContent());
    assert.equal(Number(m[2]), parityCli.tokens);
    assert.ok(Number(m[1]) <= 1e-4 && Math.abs(Number(m[1]) - parityCli.max_abs_dlogit) <= 0.1 * parityCli.max_abs_dlogit + 1e-7, `${m[1]} vs ${parityCli.max_abs_dlogit}`);
    assert.match(m[3], /^(hook_\w+|logits|ln_final\.hook_\w+|blocks\.\d+\.[\w.]+)$/);
    await screenshot(page, 'residual-inspector.png');
    await openViewContainer(page, 'Explorer');
  });

  it('Clear Cache empties the cache, keeps what the loaded model uses, and analysis still works', async () => {
    const { page } = vs;
    await runCommand(page, 'Residual: Clear Cache');
    // The loaded model's graphs are in use: they are kept (and said to be), whatever else was removed.
    const toast = page.locator('.notifications-toasts .notification-list-item-message', { hasText: /Residual: (cleared the cache: \d+ entr(y|ies) removed, .* freed|the cache is already empty)\. \d+ in use by the loaded model were kept/ });
    await toast.first().waitFor({ timeout: 15_000 });
    assert.match(await vs.outputLog('Residual'), /Residual: (cleared the cache|the cache is already empty).*\(.*cache\)/);
    const line = LINES.findIndex((l) => l.startsWith('numbers')) + 1;
    const expected = cliAnalyze(LINES[line - 1]);
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Analyze Selection');
    await waitForTokens(await activations(), expected);
  });

  it('an empty line gives a clear message and nothing breaks', async () => {
    const { page } = vs;
    const empty = LINES.findIndex((l) => l === '') + 1;
    await openFile(page, 'prompt.py');
    await selectLines(page, empty);
    await runCommand(page, 'Residual: Analyze Selection');
    await page.locator('.notifications-toasts .notification-list-item-message', { hasText: 'selection is empty' }).first().waitFor({ timeout: 15_000 });
  });

  it('a missing model folder is named in the error, which offers the bundled model; Select Model… lists it', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('total = sum')) + 1;
    const wv = await activations();
    const settingsFile = path.join(vs.workspace, '.vscode', 'settings.json');
    const loaded = async () => ((await vs.outputLog('Residual')).match(/ready on \w+ in \d+ ms/g) ?? []).length;
    const waitLoaded = async (n) => {
      for (const end = Date.now() + 60_000; (await loaded()) <= n; await new Promise((r) => setTimeout(r, 200))) if (Date.now() > end) throw new Error('no model loaded');
    };
    try {
      await writeSettings({ 'residual.modelPath': '/nonexistent/model-folder' });
      await openFile(page, 'prompt.py');
      await selectLines(page, line);
      await runCommand(page, 'Residual: Analyze Selection');
      await wv.locator('#notice.error', { hasText: '/nonexistent/model-folder' }).waitFor({ timeout: 30_000 });
      await screenshot(page, 'residual-error.png');
      // The error's own way back: the bundled model, with the setting removed where it was set.
      const n = await loaded();
      const toast = page.locator('.notifications-toasts .notification-list-item', { hasText: '/nonexistent/model-folder' }).first();
      await toast.locator('.monaco-button', { hasText: 'Use Bundled Model' }).click();
      await waitLoaded(n);
      assert.ok(!('residual.modelPath' in JSON.parse(fs.readFileSync(settingsFile, 'utf8'))), 'the broken setting is gone');
    } finally {
      if ('residual.modelPath' in JSON.parse(fs.readFileSync(settingsFile, 'utf8'))) await writeSettings({});
    }
    // Select Model…: the bundled model, recent and downloaded ones, and Browse….
    const n = await loaded();
    await runCommand(page, 'Residual: Select Model…', { opensQuickInput: true });
    const rows = page.locator('.quick-input-widget .quick-input-list .monaco-list-row');
    await rows.filter({ hasText: 'Browse…' }).waitFor();
    await rows.filter({ hasText: 'Bundled demo model' }).click();
    await waitLoaded(n);
    assert.ok(!fs.existsSync(settingsFile) || !('residual.modelPath' in JSON.parse(fs.readFileSync(settingsFile, 'utf8'))), 'the workspace settings stay clean');
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Analyze Selection');
    await wv.locator('#app[data-state="ready"]').waitFor({ timeout: 60_000 });
    assert.equal(await wv.locator('#notice.error').count(), 0);
  });

  it('per-layer depth: attention, layers, typed target, patching, editor heat with hover, comparison', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.includes('print("hello"')) + 1;
    const text = LINES[line - 1];
    const expected = cliAnalyze(text);
    const L = expected.model.n_layers;
    const H = expected.model.n_heads;
    const P = expected.tokens.length;
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Analyze Selection');
    const wv = await activations();
    await waitForTokens(wv, expected);

    // Token heat in the editor, and the hover with the token's per-layer summary.
    const tokenSpan = page.locator('.part.editor .view-lines span', { hasText: 'hello' }).first();
    await tokenSpan.hover();
    const hover = page.locator('.monaco-hover', { hasText: 'Residual' });
    await hover.waitFor({ timeout: 15_000 });
    assert.match(await hover.textContent(), /block/);
    await screenshot(page, 'residual-editor-heat.png');
    await page.keyboard.press('Escape');

    // A typed target token tracked through the lens.
    await wv.locator('#target-input input, #target-input').first().click();
    await page.keyboard.type(' world');
    await wv.locator('vscode-button', { hasText: 'Track token' }).click();
    await wv.locator('.trajectory .hint', { hasText: '(typed)' }).waitFor();
    // \n is the newline token, not a backslash: the panel says which token id it resolved to.
    const newlineId = cliAnalyze('\n').tokens[0].id;
    await wv.locator('#target-input').evaluate((el) => { el.value = '\\n'; el.dispatchEvent(new Event('input')); });
    await wv.locator('vscode-button', { hasText: 'Track token' }).click();
    await wv.locator('.trajectory .hint', { hasText: `"\\n" (token id ${newlineId})` }).waitFor();

    await wv.locator('vscode-panel-tab#tab-attention').click();
    await wv.locator('canvas#attn-pattern').waitFor();
    assert.equal(await wv.locator('#head-grid tr[data-layer]').count(), L);
    assert.equal(await wv.locator('#head-grid tr[data-layer="0"] td.cell').count(), H);
    const box = await wv.locator('canvas#attn-pattern').boundingBox();
    await wv.locator('canvas#attn-pattern').hover({ position: { x: box.width - 6, y: box.height - 6 } });
    await wv.locator('#attn-tooltip', { hasText: /query \d+ .*→ key \d+ .*: 0\.\d{4}/ }).waitFor();
    await screenshot(page, 'residual-attention.png');

    await wv.locator('vscode-panel-tab#tab-layers').click();
    await wv.locator('canvas#voids-chart').waitFor();
    assert.equal(await wv.locator('#sparsity tr[data-layer]').count(), L);
    assert.equal(await wv.locator('#sparsity tr[data-layer="0"] td.cell').count(), P);
    assert.equal(await wv.locator('#spectral tr').count(), L + 2); // header + one row per read-out
    await wv.locator('#massive').waitFor();
    await screenshot(page, 'residual-layers.png');

    // Patching: change one token; patching block 0's resid_pre at that position restores everything.
    // A corrupted prompt with the same number of tokens: the first replacement word that keeps the count.
    const clean = cliAnalyze(text).tokens.map((t) => t.text);
    const corrupted = ['user', 'self', 'data', 'key', 'value', 'item', 'x']
      .map((w) => text.replace(', name)', `, ${w})`))
      .find((c) => {
        const toks = cliAnalyze(c).tokens.map((t) => t.text);
        return toks.length === clean.length && toks.filter((t, i) => t !== clean[i]).length === 1;
      });
    assert.ok(corrupted, 'fixture: a corrupted prompt differing from the clean one in exactly one token');
    const corr = cliAnalyze(corrupted).tokens.map((t) => t.text);
    const differs = clean.findIndex((t, i) => t !== corr[i]);
    await wv.locator('vscode-panel-tab#tab-patching').click();
    await wv.locator('#corrupted').waitFor();
    // The form starts from a suggested corruption with the same token count, and shows both counts.
    await wv.locator('.patching .hint', { hasText: /Suggested corruption: ".+" → ".+"/ }).waitFor({ timeout: 30_000 });
    const suggestion = await wv.locator('#corrupted').evaluate((el) => el.value);
    assert.notEqual(suggestion, text, 'the corrupted prompt starts from a suggestion, not a copy');
    await wv.locator('#patch-counts', { hasText: `clean: ${clean.length} tokens · corrupted: ${clean.length} tokens` }).waitFor();
    const setValue = (sel, v) => wv.locator(sel).evaluate((el, x) => { el.value = x; el.dispatchEvent(new Event('input')); }, v);
    await setValue('#corrupted', `${text} and more`);
    await wv.locator('#patch-counts', { hasText: 'must be equal' }).waitFor();
    await setValue('#corrupted', corrupted);
    await wv.locator('#patch-counts', { hasText: `corrupted: ${clean.length} tokens` }).waitFor();
    // Explicit answers: the two prompts may well predict the same token, which the panel reports as an error.
    await setValue('#clean-answer', ')');
    await setValue('#corrupted-answer', ',');
    await wv.locator('vscode-button', { hasText: 'Run patching' }).click();
    await wv.locator('#patch-grid tr[data-layer]').first().waitFor({ timeout: 60_000 });
    assert.equal(await wv.locator('#patch-grid tr[data-layer]').count(), L);
    const v = Number(await wv.locator('#patch-grid tr[data-layer="0"] td.cell').nth(differs).getAttribute('data-value'));
    assert.ok(Math.abs(v - 1) < 1e-3, `patching the differing token at block 0 restores ${v}`);
    await wv.locator('#patch-counts', { hasText: `corrupted: ${clean.length} tokens` }).waitFor();
    await screenshot(page, 'residual-patching.png');

    // Path patching with the same prompts and answers: into the logits, then into the last block's head 0 query.
    // Expected values: the engine in another process (the oracle test holds it to the definition).
    const pathExpected = (receiver) => {
      const script = `const { Model } = require('./src/engine/model'); const { pathPatching } = require('./src/engine/layers/pathPatching');
        (async () => { const m = await Model.load(${JSON.stringify(bundledModel)}, { providers: ['cpu'] });
          const r = await pathPatching(m, { clean: ${JSON.stringify(text)}, corrupted: ${JSON.stringify(corrupted)}, cleanAnswer: ')', corruptedAnswer: ',', receiver: ${JSON.stringify(receiver)} });
          process.stdout.write(JSON.stringify(Object.fromEntries(r.senders.map((s) => [s.name, s.fraction])))); await m.dispose(); })();`;
      return JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    };
    const shownFractions = async () => Object.fromEntries(await wv.locator('#path-grid td.cell[data-sender]').evaluateAll((tds) => tds.map((td) => [td.dataset.sender, Number(td.dataset.value)])));
    const sameFractions = (shown, want) => {
      assert.deepEqual(Object.keys(shown).sort(), Object.keys(want).sort());
      for (const k of Object.keys(want)) assert.ok(Math.abs(shown[k] - want[k]) < 1e-6 * (1 + Math.abs(want[k])), `${k}: ${shown[k]} vs ${want[k]}`);
    };
    await wv.locator('vscode-button', { hasText: 'Run path patching' }).click();
    await wv.locator('#path-result[data-receiver="logits"] #path-grid').waitFor({ timeout: 60_000 });
    const intoLogits = await shownFractions();
    assert.equal(Object.keys(intoLogits).length, L * (H + 1), 'every head and MLP sends to the logits');
    sameFractions(intoLogits, pathExpected({ kind: 'logits' }));
    await wv.locator('#path-receiver').evaluate((el, v) => { el.value = v; el.dispatchEvent(new Event('change')); }, String(L - 1));
    await wv.locator('#path-input').waitFor();
    await wv.locator('vscode-button', { hasText: 'Run path patching' }).click();
    await wv.locator(`#path-result[data-receiver="blocks.${L - 1}.attn.head.0.q"] #path-grid`).waitFor({ timeout: 60_000 });
    sameFractions(await shownFractions(), pathExpected({ kind: 'head', layer: L - 1, head: 0, input: 'q' }));
    await wv.locator('#path-result').scrollIntoViewIfNeeded();
    await screenshot(page, 'residual-path-patching.png');

    // Compare with a second selection.
    const line2 = LINES.findIndex((l) => l.startsWith('total = sum')) + 1;
    await openFile(page, 'prompt.py');
    await selectLines(page, line2);
    await runCommand(page, 'Residual: Compare Selection with Last Analysis');
    await wv.locator('#compare-table').waitFor({ timeout: 60_000 });
    assert.equal(await wv.locator('#compare-table tr[data-layer]').count(), L);
    await screenshot(page, 'residual-compare.png');
    // A new analysis leaves the Compare tab (its pair is the old one).
    await openFile(page, 'prompt.py');
    await selectLines(page, line2);
    await runCommand(page, 'Residual: Analyze Selection');
    await wv.locator('vscode-panels[activeid="tab-overview"]').waitFor({ timeout: 60_000 });
    await runCommand(page, 'Residual: Clear Token Heat');
    await wv.locator('vscode-panel-tab#tab-overview').click();
  });

  it('logit attribution: the prediction at the chosen position, a typed contrast, and a bad target shown in the view', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('def greet')) + 1;
    const text = LINES[line - 1];
    const expected = cliAnalyze(text);
    const L = expected.model.n_layers;
    const H = expected.model.n_heads;
    const P = expected.tokens.length;
    /** The CLI's attribution of `text` (the independent expectation), and its largest part that adds up. */
    const cliDla = (...flags) => JSON.parse(execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'dla', '--model', bundledModel, '--text', text, '--json', '--providers', 'cpu', ...flags], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    const largest = (r) => r.components.filter((c) => !c.name.includes('.neuron.')).sort((a, b) => Math.abs(b.value) - Math.abs(a.value))[0];
    // Shown with four decimals.
    const shownNumber = (s) => Number(/[+-]?\d+\.\d+/.exec(s)[0]);
    const close = (shown, want, what) => assert.ok(Math.abs(shown - want) <= 5e-5 + 1e-5 * Math.abs(want), `${what}: shown ${shown}, CLI ${want}`);

    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Analyze Selection');
    const wv = await activations();
    await waitForTokens(wv, expected);
    await wv.locator('vscode-panel-tab#tab-dla').click();

    /** Waits for the attribution at `position` and checks it against the CLI's. */
    const matchesCli = async (position, cli) => {
      await wv.locator(`#dla-result[data-current="true"][data-position="${position}"] #dla-target-token[data-token-id="${cli.target.id}"]`).waitFor({ timeout: 60_000 });
      close(shownNumber(await wv.locator('#dla-logit').textContent()), cli.logit, 'logit');
      const top = largest(cli);
      const row = wv.locator('#dla-top tr').first();
      assert.equal(await row.locator('td.mono').textContent(), top.name);
      close(shownNumber(await row.locator('td.num').textContent()), top.value, top.name);
    };

    // The last position and its top prediction by default: the heads as a layer × head map, the blocks, the neurons.
    const byDefault = cliDla();
    await matchesCli(P - 1, byDefault);
    assert.equal(await wv.locator('#dla-heads tr[data-layer]').count(), L);
    assert.equal(await wv.locator('#dla-heads tr[data-layer="0"] td.cell').count(), H);
    assert.equal(await wv.locator('#dla-layers tr[data-layer]').count(), L);
    assert.ok(Math.abs(Number(await wv.locator('#dla-residual').getAttribute('data-value'))) <= 1e-5, 'the parts sum to the logit');
    assert.equal(await wv.locator('#dla-neurons tr').count(), byDefault.components.filter((c) => c.name.includes('.neuron.')).length);
    await wv.locator('canvas#dla-layers-chart').waitFor();
    await screenshot(page, 'residual-dla.png');
    await wv.locator('#dla-top').scrollIntoViewIfNeeded();
    await screenshot(page, 'residual-dla-parts.png');

    // Another position: a click on its token.
    const position = Math.floor(P / 2);
    await wv.locator(`#tokens .token[data-pos="${position}"]`).click();
    await matchesCli(position, cliDla('--position', String(position)));

    // A contrast token: the logit difference from the top prediction (the CLI names both tokens).
    await wv.locator(`#tokens .token[data-pos="${P - 1}"]`).click();
    await matchesCli(P - 1, byDefault);
    const contrast = expected.top.slice(1).find((t) => !/[\\⏎↵→␍]/.test(t.text) && cliAnalyze(t.text).tokens.length === 1);
    assert.ok(contrast, 'fixture: a runner-up prediction that is one token');
    const setValue = (sel, v) => wv.locator(sel).evaluate((el, x) => { el.value = x; el.dispatchEvent(new Event('input')); }, v);
    await setValue('#dla-contrast', contrast.text);
    await wv.locator('vscode-button', { hasText: 'Attribute' }).click();
    const withContrast = cliDla('--target', expected.top[0].text, '--contrast', contrast.text);
    await wv.locator(`#dla-result[data-current="true"] #dla-contrast-token[data-token-id="${withContrast.contrast.id}"]`).waitFor({ timeout: 60_000 });
    await matchesCli(P - 1, withContrast);
    assert.match(await wv.locator('#dla-logit').textContent(), /^logit difference /);

    // Errors are shown in the view: a target of several tokens, and a contrast that is the target itself.
    const multi = ' Paris and';
    await setValue('#dla-contrast', '');
    await setValue('#dla-target', multi);
    await wv.locator('vscode-button', { hasText: 'Attribute' }).click();
    const n = cliAnalyze(multi).tokens.length;
    await wv.locator('#dla-error', { hasText: new RegExp(`target:? ${JSON.stringify(multi)} is ${n} tokens`) }).waitFor({ timeout: 30_000 });
    await screenshot(page, 'residual-dla-error.png');
    await setValue('#dla-target', contrast.text);
    await setValue('#dla-contrast', contrast.text);
    await wv.locator('vscode-button', { hasText: 'Attribute' }).click();
    await wv.locator('#dla-error', { hasText: 'is the target itself' }).waitFor({ timeout: 30_000 });
    // The host survived both: back to the top prediction, attributed again.
    await wv.locator('vscode-button', { hasText: 'Top prediction, no contrast' }).click();
    await matchesCli(P - 1, byDefault);
    await wv.locator('vscode-panel-tab#tab-overview').click();
  });

  it('Patchscope of a lens cell: the tokens the engine decodes for that hidden state, shown under the lens', async () => {
    const wv = await activations();
    const text = LINES[LINES.findIndex((l) => l.startsWith('def greet'))];
    await wv.locator('#lens-grid tr[data-layer="2"] td.cell').nth(3).click();
    await wv.locator('#patchscope .hint', { hasText: 'Reads blocks.2.hook_resid_pre at position 3' }).waitFor({ timeout: 30_000 });
    await wv.locator('#patchscope vscode-button', { hasText: 'Read with Patchscope' }).click();
    const result = wv.locator('#patchscope-result');
    await result.waitFor({ timeout: 60_000 });
    // The same reading by the engine in another process (the oracle test holds the engine to the reference).
    const script = `const { Model } = require('./src/engine/model'); const { patchscope } = require('./src/engine/patchscope');
      (async () => { const m = await Model.load(${JSON.stringify(bundledModel)}, { providers: ['cpu'] });
        const ids = m.tokenizer.encodeForModel(${JSON.stringify(text)}).ids;
        const r = await patchscope(m, { sourceIds: ids, layer: 2, point: 'hook_resid_pre', position: 3 });
        process.stdout.write(JSON.stringify(r.text)); await m.dispose(); })();`;
    const decoded = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    assert.deepEqual(await result.locator('code.tok').allTextContents(), [visible(decoded)]);
    await screenshot(vs.page, 'residual-patchscope.png');
    // Bad input: a target prompt without its "?" is named in the view; the reading shown before stays.
    await wv.locator('#patchscope-prompt').evaluate((el) => { el.value = 'no placeholder here'; el.dispatchEvent(new Event('input')); });
    await wv.locator('#patchscope vscode-button', { hasText: 'Read with Patchscope' }).click();
    await wv.locator('#patchscope-error', { hasText: 'has no "?" to put the hidden state in' }).waitFor({ timeout: 30_000 });
  });

  it('Features tab: a residual-stream SAE read at every token, its card, another layer, steering from the card; a transcoder folder refused', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('def greet')) + 1;
    const text = LINES[line - 1];
    // Two SAEs for the bundled model in the workspace: layer 1 an exact one (features ±e_d: acts = relu(±x), FVU 0),
    // layer 2 a random TopK one (reconstructs nothing: the panel must say so).
    const saes = path.join(vs.workspace, 'saes');
    const make = `const { writeResidualSae } = require('./src/engine/circuits/transcoders-write');
      const D = ${JSON.stringify(cliAnalyze('a').model.d_model)}; const F = 2 * D;
      const eye = new Float32Array(D * F); const dec = new Float32Array(F * D);
      for (let d = 0; d < D; d++) { eye[d * F + d] = 1; eye[d * F + D + d] = -1; dec[d * D + d] = 1; dec[(D + d) * D + d] = -1; }
      writeResidualSae(${JSON.stringify(path.join(saes, 'L1'))}, { wEnc_DF: eye, bEnc_F: new Float32Array(F), wDec_FD: dec, bDec_D: new Float32Array(D), dIn: D, dSae: F }, { hook: 'blocks.1.hook_resid_post', activation: 'relu', applyBDecToInput: false });
      let s = 7; const r = (n) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5));
      writeResidualSae(${JSON.stringify(path.join(saes, 'L2'))}, { wEnc_DF: r(D * 512), bEnc_F: r(512), wDec_FD: r(512 * D), bDec_D: r(D), dIn: D, dSae: 512 }, { hook: 'blocks.2.hook_resid_post', activation: 'topk', k: 8, applyBDecToInput: true });`;
    execFileSync(process.execPath, ['--import', 'tsx', '-e', make], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    /** The engine's reading in another process (the oracle test holds it to SAELens' definition in plain loops). */
    const engineReading = (layer) => {
      const script = `const { Model } = require('./src/engine/model'); const sae = require('./src/engine/sae');
        (async () => { const m = await Model.load(${JSON.stringify(bundledModel)}, { providers: ['cpu'] });
          const set = sae.openResidualSaes(${JSON.stringify(saes)}, m.config); const enc = sae.saeEncoder(set);
          const ids = m.tokenizer.encodeForModel(${JSON.stringify(text)}).ids;
          const r = await sae.readSaeFeatures(m, set.layers[${layer}], enc, ids);
          process.stdout.write(JSON.stringify({ fvu: r.fvu, top: ids.map((_, p) => sae.topAt(r, p, 8)), strongest: sae.strongestFeatures(r, 12) }));
          await enc.dispose(); await m.dispose(); })();`;
      return JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    };
    const expected = cliAnalyze(text);
    const P = expected.tokens.length;
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Analyze Selection');
    const wv = await activations();
    await waitForTokens(wv, expected);
    await wv.locator('vscode-panel-tab#tab-features').click();
    await wv.locator('#sae-info', { hasText: 'No SAE chosen' }).waitFor({ timeout: 30_000 });

    // Bad input: a transcoder folder is not a residual-stream SAE; said in the tab, nothing else changes.
    await wv.locator('#sae-choose').click();
    await answerFileDialog(page, path.join(bundledModel, 'transcoders', 'layer_0'));
    await wv.locator('#sae-status.error', { hasText: 'this is a transcoder (reads blocks.0.ln2.hook_normalized, writes blocks.0.hook_mlp_out), not a residual-stream SAE' }).waitFor({ timeout: 30_000 });

    // The SAE folder: its last layer (2) first, read at every token; the numbers are the engine's.
    await wv.locator('#sae-choose').click();
    await answerFileDialog(page, saes);
    await wv.locator('#sae-info[data-hook="blocks.2.hook_resid_post"]').waitFor({ timeout: 60_000 });
    const want2 = engineReading(2);
    const shownTop = async () => wv.locator('#sae-top li').evaluateAll((lis) => lis.map((li) => [Number(li.dataset.feature), Number(li.querySelector('.num').textContent)]));
    const sameTop = (got, want, what) => {
      assert.deepEqual(got.map(([f]) => f), want.map(([f]) => f), `${what}: features`);
      got.forEach(([, a], i) => assert.ok(Math.abs(a - want[i][1]) <= 5e-3 * Math.max(1, Math.abs(want[i][1])), `${what}: ${a} vs ${want[i][1]}`));
    };
    sameTop(await shownTop(), want2.top[P - 1], 'last position');
    assert.equal(Number(await wv.locator('#sae-fvu').getAttribute('data-fvu')).toPrecision(6), want2.fvu.toPrecision(6));
    await wv.locator('#sae-warning', { hasText: 'unexplained on this prompt' }).waitFor();
    assert.deepEqual(await wv.locator('#sae-strongest tr[data-feature]').evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.feature))), want2.strongest.map(([f]) => f));
    // Another position: a click on its token.
    await wv.locator('#tokens .token[data-pos="2"]').click();
    await wv.locator('section h2', { hasText: 'Features at position 2' }).waitFor();
    sameTop(await shownTop(), want2.top[2], 'position 2');

    // Layer 1, the exact SAE: no warning, FVU 0, and a feature's card.
    await wv.locator('#sae-layer').evaluate((el) => { el.value = '1'; el.dispatchEvent(new Event('change')); });
    await wv.locator('#sae-info[data-hook="blocks.1.hook_resid_post"]').waitFor({ timeout: 60_000 });
    const want1 = engineReading(1);
    sameTop(await shownTop(), want1.top[2], 'layer 1, position 2');
    assert.ok(Number(await wv.locator('#sae-fvu').getAttribute('data-fvu')) < 1e-6, 'the exact SAE reconstructs the residual');
    assert.equal(await wv.locator('#sae-warning').count(), 0);
    const feature = want1.top[2][0][0];
    await wv.locator(`#sae-top li[data-feature="${feature}"]`).click();
    const card = wv.locator(`#sae-card[data-feature="${feature}"]`);
    await card.locator('.actbars').waitFor({ timeout: 30_000 });
    assert.equal(await card.locator('.actbar').count(), P, 'one bar per token');
    assert.equal(await card.locator('ul.toks').first().locator('li').count(), 10, 'ten tokens pushed up');
    await card.scrollIntoViewIfNeeded();
    await screenshot(page, 'residual-features.png');

    // Steer from the card: the feature's decoder row, at the SAE's own hook.
    await card.locator('#sae-steer').click();
    const swv = await webview(page, { title: 'Residual: Steering' });
    await swv.locator('#vector-info', { hasText: `L1/${feature} · feature · made at blocks.1.hook_resid_post` }).waitFor({ timeout: 30_000 });
    assert.equal(await swv.locator('#steer-point').evaluate((el) => el.value), 'hook_resid_post');
    assert.equal(await swv.locator('#steer-layer').evaluate((el) => el.value), '1');
    // Back to the Activations panel's overview (later tests read its charts).
    await runCommand(page, 'Residual: Show Activations Panel');
    await (await activations()).locator('vscode-panel-tab#tab-overview').click();
    await (await activations()).locator('canvas[data-fg]').first().waitFor({ timeout: 30_000 });
  });

  it('QK attribution beside the pattern: a picked cell\'s score split into query × key sources, as the CLI splits it; a missing transcoder folder named', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('def greet')) + 1;
    const text = LINES[line - 1];
    const expected = cliAnalyze(text);
    const P = expected.tokens.length;
    const wv = await activations();
    await waitForTokens(wv, expected);
    await wv.locator('vscode-panel-tab#tab-attention').click();
    const choose = (sel, v) => wv.locator(sel).evaluate((el, x) => { el.value = x; el.dispatchEvent(new Event('change')); }, v);
    await choose('#attn-layer', '2');
    await choose('#attn-head', '1');
    await wv.locator('#qk .hint', { hasText: 'Pick a cell of the pattern' }).waitFor({ timeout: 30_000 });
    // A click on the cell (query P−1, key 2) of the pattern.
    const query = P - 1;
    const key = 2;
    const canvas = wv.locator('canvas#attn-pattern[data-cell]');
    await canvas.waitFor();
    const [label, cell] = await canvas.evaluate((c) => [Number(c.dataset.label), Number(c.dataset.cell)]);
    await canvas.click({ position: { x: label + key * cell + cell / 2, y: label + query * cell + cell / 2 } });
    await wv.locator('#qk', { hasText: `Query ${query} ` }).waitFor({ timeout: 10_000 });
    await wv.locator('#qk-run').click();
    await wv.locator('#qk-score').waitFor({ timeout: 60_000 });
    const cli = JSON.parse(execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'qk', '--model', bundledModel, '--transcoders', path.join(bundledModel, 'transcoders'), '--text', text, '--layer', '2', '--head', '1', '--query', String(query), '--key', String(key), '--json', '--providers', 'cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    const close = (got, want, what) => assert.ok(Math.abs(got - want) <= 1e-4 * Math.max(1, Math.abs(want)), `${what}: panel ${got}, CLI ${want}`);
    close(Number(await wv.locator('#qk-score').getAttribute('data-score')), cli.score, 'score');
    close(Number(await wv.locator('#qk-score').getAttribute('data-real')), cli.real_score, 'the model\'s score');
    close(cli.score, cli.real_score, 'the split adds up');
    const kinds = await wv.locator('#qk-kinds td.cell').evaluateAll((tds) => tds.map((td) => Number(td.dataset.value)));
    assert.equal(kinds.length, 16);
    close(kinds.reduce((s, x) => s + x, 0), cli.score, 'the kind cells sum to the score');
    const rows = await wv.locator('#qk-query tr').evaluateAll((trs) => trs.map((tr) => [tr.dataset.kind, Number(tr.querySelector('td.num').textContent)]));
    assert.deepEqual(rows.map(([k]) => k), cli.query_side.map((x) => x.source.kind));
    rows.forEach(([, v], i) => assert.ok(Math.abs(v - cli.query_side[i].value) <= 1e-4, `query side row ${i}: ${v} vs ${cli.query_side[i].value}`));
    assert.equal(await wv.locator('#qk-pairs tr').count(), cli.pairs.length);
    await wv.locator('#qk').scrollIntoViewIfNeeded();
    await screenshot(page, 'residual-qk.png');
    // Bad input: a transcoder folder that does not exist is named in the view; the panel keeps working.
    await writeSettings({ 'residual.transcodersPath': path.join(vs.workspace, 'no-such-transcoders') });
    await wv.locator('#qk-run').click();
    await wv.locator('#qk-error', { hasText: 'no-such-transcoders' }).waitFor({ timeout: 30_000 });
    await writeSettings({});
    await wv.locator('#qk-run').click();
    await wv.locator('#qk-score').waitFor({ timeout: 60_000 });
    await wv.locator('vscode-panel-tab#tab-overview').click();
  });

  it('circuits: trace the selection, live thresholds, feature card, ablation, pins and groups', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('def greet')) + 1;
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await contextMenu(page, 'Trace Circuit for Selection');
    const wv = await webview(page, { title: 'Residual: Circuit' });
    await wv.locator('#app[data-state="ready"] svg#graph').waitFor({ timeout: 120_000 });
    assert.equal(await wv.locator('#circuit-prompt').textContent(), LINES[line - 1], 'the traced text is the selected line');
    const tokens = await wv.locator('#graph .node.token').count();
    assert.equal(tokens, cliAnalyze(LINES[line - 1]).tokens.length, 'one embedding node per token');
    assert.ok((await wv.locator('#graph .node.logit').count()) >= 1);
    const edges0 = await wv.locator('#graph .edge').count();
    // Raise the node threshold live: the graph keeps more of its influence, so more nodes and edges.
    const setThreshold = (v) => wv.locator('#node-threshold').evaluate((el, x) => { el.value = x; el.dispatchEvent(new Event('input')); }, v);
    await setThreshold('0.99');
    await wv.locator('svg#graph[data-node-threshold="0.99"]').waitFor({ timeout: 30_000 });
    assert.ok((await wv.locator('#graph .edge').count()) >= edges0, 'a higher node threshold keeps at least as many edges');
    assert.ok((await wv.locator('#graph .node.feature').count()) > 0, 'feature nodes are drawn');
    await screenshot(page, 'residual-circuit.png');

    // Hover highlights the strongest edges; click opens the card.
    // The last feature drawn is on top of any neighbour.
    // Its circle, not the group: a group's box includes its label, whose centre can lie on a neighbour.
    const feature = wv.locator('#graph .node.feature circle').last();
    await feature.hover();
    await wv.locator('#graph-tip', { hasText: /feature \d+ of layer \d+/ }).waitFor();
    assert.ok((await wv.locator('#graph .edge.hl').count()) > 0);
    await feature.click();
    await wv.locator('#feature-card h2', { hasText: /Feature \d+ · layer \d+/ }).waitFor({ timeout: 30_000 });
    await wv.locator('#feature-card .actbar').first().waitFor();
    await screenshot(page, 'residual-feature-card.png');
    await wv.locator('#feature-card vscode-button', { hasText: 'Ablate on this prompt' }).click();
    await wv.locator('#intervention table tr').nth(1).waitFor({ timeout: 60_000 });
    // The card names the token the feature pushes up; its token lists have no replacement characters (bytes of a
    // cut character show as <0xNN>); the clamp factor is the user's.
    assert.match(await wv.locator('#feature-card h2').textContent(), /^Feature \d+ · layer \d+ → \S/);
    const listed = await wv.locator('#feature-card ul.toks li').allTextContents();
    assert.equal(listed.length, 20, 'ten tokens up, ten down');
    assert.ok(listed.every((t) => !t.includes('\uFFFD')), listed.join(' | '));
    await wv.locator('#clamp-factor').evaluate((el) => { el.value = '2'; el.dispatchEvent(new Event('input')); });
    await wv.locator('#feature-card vscode-button', { hasText: 'Clamp' }).click();
    await wv.locator('#intervention', { hasText: 'to 2× its activation' }).waitFor({ timeout: 60_000 });

    // Feature nodes are labelled with the token they push up (the demo model's feature index has them).
    assert.ok((await wv.locator('#graph .node.feature text.flabel').count()) > 0, 'feature labels');
    await wv.locator('#graph-legend', { hasText: 'excites' }).waitFor();
    // Zoom: + narrows the view; a click that redraws the panel keeps it; Fit shows the whole graph again.
    const viewBox = async () => (await wv.locator('svg#graph').getAttribute('viewBox')).split(' ').map(Number);
    const until = async (pred) => {
      for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (await pred()) return;
      throw new Error('condition not reached');
    };
    const fitted = await viewBox();
    await wv.locator('#graph-zoom-in').click();
    await until(async () => (await viewBox())[2] < fitted[2] * 0.9);
    const zoomed = await viewBox();
    await wv.locator('#graph .node.token').first().evaluate((g) => g.dispatchEvent(new MouseEvent('click', { bubbles: true })));
    await until(async () => (await wv.locator('#graph .node.token.selected').count()) === 1);
    assert.deepEqual(await viewBox(), zoomed, 'the zoom survives a redraw');
    await wv.locator('#graph-fit').click();
    await until(async () => JSON.stringify(await viewBox()) === JSON.stringify(fitted));
    // Fewer edges on request; every one of them still there to count.
    const total = Number(await wv.locator('svg#graph').getAttribute('data-edges-total'));
    await wv.locator('#graph-edges').selectOption('150');
    await wv.locator('svg#graph[data-edges-shown]').first().waitFor();
    await until(async () => Number(await wv.locator('svg#graph').getAttribute('data-edges-shown')) === Math.min(150, total));
    assert.equal(await wv.locator('#graph > g > line.edge').count(), Math.min(150, total));

    // Pin two nodes with shift-click and group them.
    await wv.locator('#graph .node.feature circle').last().click({ modifiers: ['Shift'] });
    await wv.locator('#graph .node.token').nth(0).click({ modifiers: ['Shift'] });
    await wv.locator('h2', { hasText: 'Pinned (2)' }).waitFor();
    await wv.locator('vscode-button', { hasText: 'Group pinned' }).click();
    await wv.locator('ul.groups li').first().waitFor();
    await screenshot(page, 'residual-circuit-pinned.png');
  });

  it('steering: a feature from the card, next-token effect, generation and a sweep', async () => {
    const { page } = vs;
    const cwv = await webview(page, { title: 'Residual: Circuit' });
    await cwv.locator('#feature-card vscode-button', { hasText: 'Steer with this feature' }).click();
    const wv = await webview(page, { title: 'Residual: Steering' });
    await wv.locator('#vector-info', { hasText: /feature/i }).waitFor({ timeout: 30_000 });
    await wv.locator('#steer-prompt', { hasText: /\S/ }).waitFor();
    await wv.locator('vscode-button', { hasText: 'Next-token effect' }).click();
    await wv.locator('#effect-table tr').nth(1).waitFor({ timeout: 60_000 });
    await wv.locator('vscode-button', { hasText: 'Generate' }).click();
    await wv.locator('#gen-steered').waitFor({ timeout: 60_000 });
    assert.ok((await wv.locator('#gen-baseline').textContent()).length > 0);
    await wv.locator('#sweep-strengths').evaluate((el) => { el.value = '-8, 0, 8'; el.dispatchEvent(new Event('input')); });
    await wv.locator('vscode-button', { hasText: 'Sweep all layers' }).click();
    await wv.locator('canvas#sweep-kl').waitFor({ timeout: 120_000 });
    await screenshot(page, 'residual-steering.png');
    // Operators: ablating the feature's direction gives the KL the CLI finds for the same feature, place and prompt.
    const [, fLayer, fIndex] = /^L(\d+)\/(\d+)/.exec(await wv.locator('#vector-info').textContent());
    const layer = await wv.locator('#steer-layer').evaluate((el) => el.value);
    const point = await wv.locator('#steer-point').evaluate((el) => el.value);
    const promptText = await wv.locator('#steer-prompt').textContent();
    const setOp = (op) => wv.locator('#steer-op').evaluate((el, v) => { el.value = v; el.dispatchEvent(new Event('change')); }, op);
    await setOp('ablate');
    await wv.locator('vscode-button', { hasText: 'Next-token effect' }).click();
    const summary = wv.locator('#effect-summary', { hasText: 'ablated' });
    await summary.waitFor({ timeout: 60_000 });
    const cliOp = JSON.parse(execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'steer', '--model', bundledModel, '--text', promptText, '--feature', `${fLayer}:${fIndex}`, '--transcoders', path.join(bundledModel, 'transcoders'), '--op', 'ablate', '--layer', layer, '--hook', point.replace('hook_', ''), '--providers', 'cpu', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    assert.equal(await summary.textContent(), `KL(baseline ‖ steered) = ${cliOp.kl.toFixed(4)} nats · the component along the vector ablated at blocks.${layer}.${point}`);
    // Export for llama.cpp: an ablation has no control-vector form, said in the panel; added, it is exported. VS Code's
    // save dialog (in the page) offers <workspace>/<label>.gguf, accepted as offered.
    await wv.locator('vscode-button', { hasText: 'Export for llama.cpp…' }).click();
    await wv.locator('#steer-error', { hasText: 'the ablate operator has no llama.cpp form: set the operator to add to export' }).waitFor({ timeout: 30_000 });
    await setOp('add');
    await wv.locator('vscode-button', { hasText: 'Export for llama.cpp…' }).click();
    const dialogInput = page.locator('.quick-input-widget input');
    await dialogInput.waitFor({ state: 'visible', timeout: 30_000 });
    await dialogInput.press('Enter');
    const toast = page.locator('.notifications-toasts .notification-list-item-message', { hasText: /wrote \S+\.gguf \(direction\.\d+\)/ }).first();
    await toast.waitFor({ timeout: 30_000 });
    const [, name, k] = /wrote (\S+\.gguf) \(direction\.(\d+)\)\. In llama\.cpp: --control-vector-scaled \S+ [-\d.]+/.exec(await toast.textContent());
    assert.equal(Number(k), point === 'hook_resid_post' ? Number(layer) : Number(layer) - 1, 'the slot of the panel\'s layer and point');
    const bytes = fs.readFileSync(path.join(vs.workspace, name));
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'GGUF');
    assert.ok(bytes.includes(Buffer.from('controlvector')), 'a llama.cpp control vector');
    // Bad input: a strength that is not a number is refused, and the results stay.
    await wv.locator('#strength').evaluate((el) => { el.value = 'lots'; el.dispatchEvent(new Event('input')); });
    await wv.locator('vscode-button', { hasText: 'Next-token effect' }).click();
    await wv.locator('#steer-error', { hasText: 'strength must be a number, got "lots"' }).waitFor();
    assert.ok(await wv.locator('#effect-table').count());
    assert.equal(await wv.locator('#strength').evaluate((el) => el.value), 'lots', 'the field keeps what was typed');
    // The feature row names the feature the vector came from (not layer 0).
    const [, vLayer, vIndex] = /^L(\d+)\/(\d+)/.exec(await wv.locator('#vector-info').textContent());
    assert.equal(await wv.locator('#feature-layer').evaluate((el) => el.value), vLayer);
    assert.equal(await wv.locator('#feature-index').evaluate((el) => el.value), vIndex);
    // A new prompt clears the old results and the old error.
    await openFile(page, 'prompt.py');
    await selectLines(page, LINES.findIndex((l) => l.startsWith('numbers =')) + 1);
    await wv.locator('vscode-button', { hasText: 'Use current selection' }).click();
    await wv.locator('#steer-prompt', { hasText: 'numbers =' }).waitFor({ timeout: 30_000 });
    assert.equal(await wv.locator('#effect-table').count(), 0, 'old results cleared');
    assert.equal(await wv.locator('#steer-error').count(), 0, 'old error cleared');
    // Every label sits on the line of its own field, however narrow the column.
    const split = await wv.locator('.field').evaluateAll((fields) => fields.filter((f) => {
      const [label, control] = f.children;
      return Math.abs(label.getBoundingClientRect().top - control.getBoundingClientRect().top) > 12;
    }).length);
    assert.equal(split, 0, 'no label wrapped away from its field');
    // The Activations, Circuit and Steering panels share one editor group instead of a new column each.
    const groups = page.locator('.part.editor .editor-group-container').filter({ has: page.locator('.tab[aria-label^="Residual: "]') });
    assert.equal(await groups.count(), 1, 'Residual panels in one editor group');
  });

  it('circuit targets: a logit difference and a saved vector, each the value the CLI computes; a bad contrast is named', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('def greet')) + 1;
    const text = LINES[line - 1];
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Trace Circuit for Selection');
    const wv = await webview(page, { title: 'Residual: Circuit' });
    await wv.locator('#app[data-state="ready"] #circuit-target').waitFor({ timeout: 120_000 });
    const setKind = (k) => wv.locator('#target-kind').evaluate((el, v) => { el.value = v; el.dispatchEvent(new Event('change')); }, k);
    const type = (id, v) => wv.locator(id).evaluate((el, x) => { el.value = x; el.dispatchEvent(new Event('input')); }, v);
    const cli = (...args) => execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), ...args, '--model', bundledModel, '--text', text, '--providers', 'cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    // A logit difference between the two most likely tokens (each one token of the vocabulary).
    const top = cliAnalyze(text).top;
    await setKind('contrast');
    await wv.locator('#target-contrast').waitFor();
    await type('#target-token', top[0].text);
    await type('#target-contrast', top[1].text);
    // The panel redraws (here: a new node threshold) while the target is typed but not traced: what was typed stays.
    const threshold = async (v) => {
      await wv.locator('#node-threshold').evaluate((el, x) => { el.value = x; el.dispatchEvent(new Event('input')); }, v);
      await wv.locator(`svg#graph[data-node-threshold="${v}"]`).waitFor({ timeout: 30_000 });
    };
    const typed = () => Promise.all(['#target-token', '#target-contrast'].map((id) => wv.locator(id).evaluate((el) => el.value)));
    const previous = await wv.locator('svg#graph').getAttribute('data-node-threshold');
    await threshold(previous === '0.85' ? '0.9' : '0.85');
    assert.deepEqual(await typed(), [top[0].text, top[1].text]);
    await threshold(previous);
    assert.deepEqual(await typed(), [top[0].text, top[1].text]);
    await wv.locator('#target-trace').click();
    const want = `logit ${JSON.stringify(top[0].text)} − logit ${JSON.stringify(top[1].text)}`;
    const now = wv.locator('#app[data-state="ready"] #target-now', { hasText: want });
    await now.waitFor({ timeout: 120_000 });
    const dla = JSON.parse(cli('dla', '--target', top[0].text, '--contrast', top[1].text, '--json'));
    assert.equal(await now.textContent(), ` Now: ${want} = ${dla.logit.toPrecision(4)}`);
    assert.equal(await wv.locator('#graph .node.logit').count(), 1, 'one target node');
    await screenshot(page, 'residual-circuit-target.png');
    // Bad input: the contrast is the target itself; the graph on screen stays.
    await type('#target-contrast', top[0].text);
    await wv.locator('#target-trace').click();
    await wv.locator('#circuit-error', { hasText: 'is the target itself: the difference would be 0' }).waitFor({ timeout: 30_000 });
    assert.equal(await wv.locator('#graph .node.logit').count(), 1);
    // A saved vector at blocks.1.hook_resid_mid, position 2, picked in the open dialog.
    const vectorFile = path.join(vs.workspace, '.residual', 'vectors', 'probe.json');
    const dModel = cliAnalyze('x').model.d_model;
    fs.mkdirSync(path.dirname(vectorFile), { recursive: true });
    execFileSync(process.execPath, ['--import', 'tsx', '-e', `require('./src/engine/steering/vectors').saveVectorFile(${JSON.stringify(vectorFile)}, { vector: Float32Array.from({ length: ${dModel} }, (_, d) => Math.cos(d)), layer: 1, point: 'hook_resid_mid', source: 'contrastive', label: 'probe', provenance: {} })`], { cwd: REPO_ROOT });
    await setKind('direction');
    await wv.locator('#target-kind').evaluate((el) => el.value).then((v) => assert.equal(v, 'direction'));
    await wv.locator('vscode-button', { hasText: 'Choose vector…' }).click();
    await answerFileDialog(page, vectorFile);
    await wv.locator('#target-vector', { hasText: 'probe' }).waitFor({ timeout: 30_000 });
    assert.equal(await wv.locator('#target-layer').evaluate((el) => el.value), '1', 'the layer the vector was made for');
    await type('#target-position', '2');
    await wv.locator('#target-hook').evaluate((el) => { el.value = 'hook_resid_mid'; el.dispatchEvent(new Event('change')); });
    await wv.locator('#target-trace').click();
    const dirNow = wv.locator('#app[data-state="ready"] #target-now', { hasText: 'probe.json · blocks.1.hook_resid_mid[2]' });
    await dirNow.waitFor({ timeout: 120_000 });
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'residual-e2e-target-')), 'g.json');
    cli('graph', '--transcoders', path.join(bundledModel, 'transcoders'), '--direction', vectorFile, '--layer', '1', '--hook', 'resid_mid', '--position', '2', '--out', out);
    const meta = JSON.parse(fs.readFileSync(out, 'utf8')).metadata;
    assert.equal(await dirNow.textContent(), ` Now: probe.json · blocks.1.hook_resid_mid[2] = ${meta.target.value.toPrecision(4)}`);
    // Each layer's reconstruction on this prompt, as the CLI's graph records it; no warning for the demo's set.
    const fvuLine = await wv.locator('#circuit-fvu').textContent();
    const shown = [...fvuLine.matchAll(/L(\d+) ([\d.]+) \(set ([\d.]+)\)/g)].map((m) => [Number(m[2]), Number(m[3])]);
    assert.equal(shown.length, meta.reconstruction.fvu.length, fvuLine);
    shown.forEach(([fvu, set], l) => {
      assert.ok(Math.abs(fvu - meta.reconstruction.fvu[l]) <= 0.006, `layer ${l}: ${fvu} vs ${meta.reconstruction.fvu[l]}`);
      assert.ok(Math.abs(set - meta.reconstruction.reported_fvu[l]) <= 0.006);
    });
    assert.equal(await wv.locator('#circuit-fvu-warning').count(), 0);
    await screenshot(page, 'residual-circuit-direction.png');
    // Back to the most likely tokens for the tests that follow.
    await setKind('top');
    await wv.locator('#target-trace').click();
    await wv.locator('#app[data-state="ready"] #target-now', { hasText: 'the most likely next tokens' }).waitFor({ timeout: 120_000 });
  });

  it('feature labels: edited on the card, drawn on the nodes, searched, imported from a file (a bad one named), exported as clerp', async () => {
    const { page } = vs;
    const wv = await webview(page, { title: 'Residual: Circuit' });
    await wv.locator('#app[data-state="ready"] svg#graph').waitFor({ timeout: 120_000 });
    const feature = wv.locator('#graph .node.feature').last();
    const [layer, index] = await feature.evaluate((g) => g.dataset.id.split('_').map(Number));
    await feature.locator('circle').click();
    await wv.locator('#feature-card h2', { hasText: `Feature ${index} · layer ${layer}` }).waitFor({ timeout: 30_000 });
    await wv.locator('#feature-label').evaluate((el) => { el.value = 'greeting words'; el.dispatchEvent(new Event('input')); });
    await wv.locator('#save-label').click();
    const labelled = wv.locator(`#graph .node.feature[data-id^="${layer}_${index}_"] text.flabel.labelled`, { hasText: 'greeting words' });
    // Drawn (shown once zoomed in far enough for feature labels not to overlap).
    await labelled.first().waitFor({ state: 'attached', timeout: 30_000 });
    // Search: every node of that feature is ringed, and counted.
    const nodesOfFeature = await wv.locator(`#graph .node.feature[data-id^="${layer}_${index}_"]`).count();
    await wv.locator('#node-search').evaluate((el) => { el.value = 'GREETING'; el.dispatchEvent(new Event('change')); });
    await wv.locator('#search-count', { hasText: `${nodesOfFeature} feature node${nodesOfFeature === 1 ? '' : 's'} match` }).waitFor({ timeout: 10_000 });
    assert.equal(await wv.locator('#graph .node.feature.match').count(), nodesOfFeature);
    // Import: a JSONL file of {layer, index, description} for two of the graph's features.
    const others = (await wv.locator('#graph .node.feature').evaluateAll((gs) => gs.map((g) => g.dataset.id))).map((id) => id.split('_').map(Number)).filter(([l, i]) => !(l === layer && i === index));
    const [a, b] = [others[0], others.find(([l, i]) => l !== others[0][0] || i !== others[0][1])];
    const good = path.join(vs.workspace, 'labels.jsonl');
    fs.writeFileSync(good, [a, b].map(([l, i], k) => JSON.stringify({ layer: l, index: i, description: `imported ${k}` })).join('\n') + '\n');
    const pick = async (file) => {
      await wv.locator('vscode-button', { hasText: 'Import labels…' }).click();
      await answerFileDialog(page, file);
    };
    await pick(good);
    await wv.locator('#labels-note', { hasText: '2 labels imported from labels.jsonl.' }).waitFor({ timeout: 30_000 });
    await wv.locator(`#graph .node.feature[data-id^="${a[0]}_${a[1]}_"] text.flabel.labelled`, { hasText: 'imported 0' }).first().waitFor({ state: 'attached' });
    await screenshot(page, 'residual-circuit-labels.png');
    // A file naming a feature the set does not have is refused by name; the labels stay.
    const bad = path.join(vs.workspace, 'bad-labels.json');
    fs.writeFileSync(bad, JSON.stringify([{ layer: 0, index: 999999, description: 'nope' }]));
    await pick(bad);
    await wv.locator('#circuit-error', { hasText: /bad-labels\.json: entry 1 names feature 999999 of layer 0, but that layer has \d+ features/ }).waitFor({ timeout: 30_000 });
    assert.ok(await labelled.count() > 0, 'the label is still drawn');
    // Export: the save dialog offers <workspace>/<slug>.json; the file's feature nodes carry the labels as clerp.
    const before = new Set(fs.readdirSync(vs.workspace));
    await wv.locator('vscode-button', { hasText: 'Export JSON…' }).click();
    const save = page.locator('.quick-input-widget input');
    await save.waitFor({ state: 'visible', timeout: 30_000 });
    // The dialog fills in the offered path a moment after it opens: Enter once it is there.
    for (const end = Date.now() + 30_000; !(await save.inputValue()).endsWith('.json'); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > end) throw new Error('the save dialog offered no path');
    }
    await save.press('Enter');
    let written;
    for (const end = Date.now() + 30_000; !written && Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      written = fs.readdirSync(vs.workspace).find((f) => f.startsWith('residual-') && f.endsWith('.json') && !before.has(f));
    }
    assert.ok(written, 'the graph file was written');
    const exported = JSON.parse(fs.readFileSync(path.join(vs.workspace, written), 'utf8'));
    const clerp = (l, i) => exported.nodes.filter((n) => n.feature_type === 'cross layer transcoder' && n.layer === String(l) && n.node_id.startsWith(`${l}_${i}_`)).map((n) => n.clerp);
    assert.ok(clerp(layer, index).length > 0 && clerp(layer, index).every((c) => c === 'greeting words'));
    assert.ok(clerp(a[0], a[1]).every((c) => c === 'imported 0'));
    await wv.locator('#node-search').evaluate((el) => { el.value = ''; el.dispatchEvent(new Event('change')); });
  });

  it('a long selection shows its cost first: Cancel stops it, Start traces it, and a partial graph says what it covers', async () => {
    const { page } = vs;
    const last = 7;
    const text = LINES.slice(0, last).join('\n');
    // The CLI on the same text: how many features are active, and how many rows the default computes.
    const m = /\((?:of )?(\d+) active features.*; (\d+) of \1 active features kept, ([\d.]+)% of their influence\)/.exec(cliGraph(text));
    assert.ok(m, 'the CLI keeps part of the active features on this text');
    try {
      await writeSettings({ 'residual.circuitConfirmSeconds': 0 });
      await openFile(page, 'prompt.py');
      await selectLines(page, 1, last);
      await runCommand(page, 'Residual: Trace Circuit for Selection');
      const wv = await webview(page, { title: 'Residual: Circuit' });
      const est = wv.locator('#app[data-state="awaiting-start"] #circuit-estimate');
      await est.waitFor({ timeout: 60_000 });
      assert.match(await est.textContent(), /^\d+ tokens: about [\d.]+ s and \d+(\.\d)? (MB|GB) peak memory \(budget [\d.]+ (MB|GB)\), 1,024 feature rows of ~[\d,]+ active features/);
      await screenshot(page, 'residual-circuit-estimate.png');
      await wv.locator('#circuit-cancel-start').click();
      await wv.locator('#app[data-state="error"] #circuit-error', { hasText: 'Cancelled.' }).waitFor({ timeout: 30_000 });

      await openFile(page, 'prompt.py');
      await selectLines(page, 1, last);
      await runCommand(page, 'Residual: Trace Circuit for Selection');
      await est.waitFor({ timeout: 60_000 });
      await wv.locator('#circuit-start').click();
      await wv.locator('#app[data-state="ready"] svg#graph').waitFor({ timeout: 120_000 });
      assert.equal(await wv.locator('#circuit-prompt').textContent(), text);
      const coverage = await wv.locator('#circuit-coverage').textContent();
      const kept = Number(m[2]).toLocaleString('en-US');
      const active = Number(m[1]).toLocaleString('en-US');
      assert.ok(coverage.includes(`the ${kept} most influential of ${active} active features, ${m[3]}% of the features' estimated influence`), coverage);
      // Too many positions for the column: the graph opens on every layer and the last positions, the tokens below.
      for (const end = Date.now() + 10_000; ; await new Promise((r) => setTimeout(r, 100))) {
        const [x] = (await wv.locator('svg#graph').getAttribute('viewBox')).split(' ').map(Number);
        if (x > 0) break;
        if (Date.now() > end) throw new Error('the long graph did not open on its last positions');
      }
      const lastTokenInView = await wv.locator('#graph .node.token').last().evaluate((g) => {
        const r = g.getBoundingClientRect();
        const box = g.ownerSVGElement.getBoundingClientRect();
        return r.left >= box.left && r.right <= box.right + 1 && r.width > 0;
      });
      assert.ok(lastTokenInView, 'the last token is in view');
      await screenshot(page, 'residual-circuit-partial.png');
    } finally {
      await writeSettings({});
    }
  });

  it('graphs of 32 and 128 tokens: every position in the grid, pruning presets, edges on hover only', async () => {
    const { page } = vs;
    const prose = Array.from({ length: 5 }, (_, i) => `The river ${['ran', 'turned', 'slowed', 'rose'][i % 4]} past the old mill, and the miller counted ${i + 2} sacks of grain before noon.`).join(' ');
    const analysed = cliAnalyze(prose);
    assert.ok(!analysed.truncated, 'the whole prose analysed');
    const toks = analysed.tokens;
    const wv = await webview(page, { title: 'Residual: Circuit' });
    for (const n of [32, 128]) {
      assert.ok(toks.length >= n, `${toks.length} tokens of prose`);
      const file = `graph-${n}.txt`;
      fs.writeFileSync(path.join(vs.workspace, file), prose.slice(0, toks[n - 1].end));
      await openFile(page, file);
      await selectAll(page);
      await runCommand(page, 'Residual: Trace Circuit for Selection');
      // A graph estimated to take long waits for Start.
      const ready = wv.locator('#app[data-state="ready"] svg#graph');
      const start = wv.locator('#app[data-state="awaiting-start"] #circuit-start');
      await Promise.race([ready.waitFor({ timeout: 300_000 }), start.waitFor({ timeout: 300_000 }).then(() => start.click())]);
      await wv.locator(`#app[data-state="ready"] #circuit-prompt`, { hasText: prose.slice(0, 40) }).waitFor({ timeout: 300_000 });
      await ready.waitFor({ timeout: 300_000 });
      await wv.locator(`#graph .node.token`).nth(n - 1).waitFor({ state: 'attached', timeout: 30_000 });
      assert.equal(await wv.locator('#graph .node.token').count(), n, `${n} token nodes`);
      // As it opens: every layer, and as many of the last positions as the panel shows readably (drag for the rest).
      await wv.locator('#graph').scrollIntoViewIfNeeded();
      await screenshot(page, `residual-circuit-${n}-tokens.png`);
    }
    // Presets set both thresholds.
    await wv.locator('#prune-preset').evaluate((el) => { el.value = 'sparse'; el.dispatchEvent(new Event('change')); });
    await wv.locator('svg#graph[data-node-threshold="0.6"][data-edge-threshold="0.9"]').waitFor({ timeout: 60_000 });
    const sparse = await wv.locator('#graph .node.feature').count();
    await wv.locator('#prune-preset').evaluate((el) => { el.value = 'dense'; el.dispatchEvent(new Event('change')); });
    await wv.locator('svg#graph[data-node-threshold="0.95"][data-edge-threshold="0.99"]').waitFor({ timeout: 60_000 });
    assert.ok((await wv.locator('#graph .node.feature').count()) > sparse, 'the dense preset keeps more features');
    // Edges on hover only: none drawn until a node is hovered, then its strongest ones.
    await wv.locator('#graph-edges').selectOption('-1');
    await wv.locator('svg#graph[data-edges-shown="0"]').waitFor({ timeout: 10_000 });
    assert.equal(await wv.locator('#graph > g > line.edge').count(), 0);
    await wv.locator('#graph .node.token').last().hover();
    await wv.locator('#graph line.edge.hl').first().waitFor({ timeout: 10_000 });
    await screenshot(page, 'residual-circuit-hover-edges.png');
    await wv.locator('#graph-edges').selectOption('400');
    await wv.locator('#prune-preset').evaluate((el) => { el.value = 'default'; el.dispatchEvent(new Event('change')); });
    await wv.locator('svg#graph[data-node-threshold="0.8"]').waitFor({ timeout: 60_000 });
  });

  it('a cross-layer transcoder: traced as the CLI traces it, its card and ablation; one made for another layer count is named', async () => {
    const { page } = vs;
    const line = LINES.findIndex((l) => l.startsWith('def greet')) + 1;
    const text = LINES[line - 1];
    const { n_layers: L, d_model: D } = cliAnalyze('x').model;
    // Random CLTs for the bundled model: one of its layer count, and one with a layer more.
    const clt = path.join(vs.workspace, 'clt');
    const clt5 = path.join(vs.workspace, 'clt-more-layers');
    const make = `const w = require('./src/engine/circuits/transcoders-write');
      w.writeCrossLayerTranscoder(${JSON.stringify(clt)}, w.randomCrossLayerWeights(${L}, ${D}, 512, { seed: 7, bEncMean: -0.2 }), { activation: 'topk', k: 12 });
      w.writeCrossLayerTranscoder(${JSON.stringify(clt5)}, w.randomCrossLayerWeights(${L + 1}, ${D}, 64, { seed: 7 }), { activation: 'relu' });`;
    execFileSync(process.execPath, ['--import', 'tsx', '-e', make], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    await writeSettings({ 'residual.transcodersPath': clt });
    await openFile(page, 'prompt.py');
    await selectLines(page, line);
    await runCommand(page, 'Residual: Trace Circuit for Selection');
    const wv = await webview(page, { title: 'Residual: Circuit' });
    const fvu = wv.locator('#app[data-state="ready"] #circuit-fvu', { hasText: 'cross-layer transcoder' });
    await fvu.waitFor({ timeout: 120_000 });
    // The same graph as the CLI's on this set: each layer's reconstruction, one embedding node per token.
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'residual-e2e-clt-')), 'g.json');
    const summary = execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'graph', '--model', bundledModel, '--transcoders', clt, '--text', text, '--out', out, '--providers', 'cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    assert.match(summary, /cross-layer transcoder FVU ≤/);
    const meta = JSON.parse(fs.readFileSync(out, 'utf8')).metadata;
    const shown = [...(await fvu.textContent()).matchAll(/L(\d+) ([\d.]+)/g)].map((m) => Number(m[2]));
    assert.equal(shown.length, L);
    shown.forEach((x, l) => assert.ok(Math.abs(x - meta.reconstruction.fvu[l]) <= 0.006, `layer ${l}: ${x} vs ${meta.reconstruction.fvu[l]}`));
    assert.equal(await wv.locator('#graph .node.token').count(), cliAnalyze(text).tokens.length);
    assert.ok((await wv.locator('#graph .node.feature').count()) > 0, 'feature nodes are drawn');
    // The labels imported for the demo set (an earlier test) do not belong to this set: their note is gone.
    assert.equal(await wv.locator('#labels-note').count(), 0);
    await screenshot(page, 'residual-circuit-clt.png');
    // A feature's card, and its ablation: the rerun takes its write out of every layer it writes.
    await wv.locator('#graph .node.feature circle').last().click();
    await wv.locator('#feature-card h2', { hasText: /Feature \d+ · layer \d+/ }).waitFor({ timeout: 30_000 });
    await wv.locator('#feature-card vscode-button', { hasText: 'Ablate on this prompt' }).click();
    await wv.locator('#intervention table tr').nth(1).waitFor({ timeout: 60_000 });
    // Bad input: a CLT with a layer more than the model is named, with both counts; the panel keeps working.
    await writeSettings({ 'residual.transcodersPath': clt5 });
    await selectLines(page, line);
    await runCommand(page, 'Residual: Trace Circuit for Selection');
    await wv.locator('#circuit-error', { hasText: `a cross-layer transcoder of ${L + 1} layers (W_enc_0 … W_enc_${L}) for a ${L}-layer model` }).waitFor({ timeout: 60_000 });
    assert.match(await wv.locator('#circuit-error').textContent(), /clt-more-layers/);
    await writeSettings({});
    await selectLines(page, line);
    await runCommand(page, 'Residual: Trace Circuit for Selection');
    await wv.locator('#app[data-state="ready"] #circuit-fvu', { hasNotText: 'cross-layer' }).waitFor({ timeout: 120_000 });
    assert.doesNotMatch(await wv.locator('#circuit-fvu').textContent(), /cross-layer/);
  });

  it('follows the colour theme (dark)', async () => {
    const { page } = vs;
    const wv = await activations();
    const colour = () => wv.locator('body').evaluate((b) => getComputedStyle(b).color);
    const light = await colour();
    const chartFg = () => wv.locator('canvas[data-fg]').first().getAttribute('data-fg');
    const lightChart = await chartFg();
    const settingsFile = path.join(vs.workspace, '.vscode', 'settings.json');
    fs.writeFileSync(settingsFile, JSON.stringify({ 'workbench.colorTheme': 'Default Dark Modern' }));
    const end = Date.now() + 20_000;
    while (((await colour()) === light || (await chartFg()) === lightChart) && Date.now() < end) await new Promise((r) => setTimeout(r, 250));
    assert.notEqual(await colour(), light, 'webview text colour follows the theme');
    assert.notEqual(await chartFg(), lightChart, 'charts are redrawn in the new theme without a re-run');
    await screenshot(page, 'residual-dark.png');
  });

  it('made no network request and broke no CSP rule', () => {
    assert.deepEqual(vs.blockedRequests, []);
    assert.deepEqual(consoleProblems, []);
    assert.deepEqual(vs.pageErrors.filter((e) => !/vsda/.test(e)), []);
  });
});
