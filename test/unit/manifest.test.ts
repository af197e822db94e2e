/** package.json is the one declaration of contributions; the code's ids must agree with it. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { COMMANDS } from '../../src/host/commandIds';
import { INSPECTOR_COMMANDS } from '../../src/protocol';

const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));

describe('package.json contributions', () => {
  it('declares exactly the commands the code registers', () => {
    const declared = pkg.contributes.commands.map((c: { command: string }) => c.command).sort();
    assert.deepEqual(declared, Object.values(COMMANDS).sort());
  });

  it('has the three user-facing titles the issue names, under the Residual category', () => {
    const titles = pkg.contributes.commands.map((c: { category: string; title: string }) => `${c.category}: ${c.title}`);
    for (const t of ['Residual: Analyze Selection', 'Residual: Open Inspector', 'Residual: Select Model…']) assert.ok(titles.includes(t), t);
  });

  it('has Residual: Clear Cache (issue 14), registered as residual.clearCache', () => {
    const c = pkg.contributes.commands.find((x: { command: string }) => x.command === COMMANDS.clearCache);
    assert.equal(COMMANDS.clearCache, 'residual.clearCache');
    assert.equal(`${c?.category}: ${c?.title}`, 'Residual: Clear Cache');
    const ext = fs.readFileSync(path.join(__dirname, '..', '..', 'src', 'host', 'extension.ts'), 'utf8');
    assert.match(ext, /registerCommand\(COMMANDS\.clearCache,/);
  });

  it('menus and the inspector only reference declared commands', () => {
    const ids = new Set(Object.values(COMMANDS));
    for (const items of Object.values(pkg.contributes.menus) as { command: string }[][]) for (const m of items) assert.ok(ids.has(m.command as never), m.command);
    for (const c of INSPECTOR_COMMANDS) assert.ok(ids.has(c as never), c);
    assert.ok(pkg.contributes.menus['editor/context'].some((m: { command: string }) => m.command === COMMANDS.analyzeSelection));
  });

  it('contributes the Residual container with the Inspector webview view, and the settings', () => {
    assert.equal(pkg.contributes.viewsContainers.activitybar[0].id, 'residual');
    assert.ok(fs.existsSync(path.join(__dirname, '..', '..', pkg.contributes.viewsContainers.activitybar[0].icon)));
    assert.deepEqual(pkg.contributes.views.residual, [{ type: 'webview', id: 'residual.inspector', name: 'Inspector' }]);
    const props = Object.keys(pkg.contributes.configuration.properties);
    for (const k of ['residual.modelPath', 'residual.providers', 'residual.maxTokens']) assert.ok(props.includes(k), k);
    assert.deepEqual(pkg.contributes.configuration.properties['residual.providers'].default, ['cuda', 'webgpu', 'cpu']);
  });

  it('runs as a workspace extension (beside the model on a Remote-SSH / Tunnels / Codespaces / code-server host)', () => {
    assert.deepEqual(pkg.extensionKind, ['workspace']);
  });

  it('keeps engines.vscode within the VS Code the end-to-end test runs (1.100)', () => {
    assert.equal(pkg.engines.vscode, '^1.100.0');
  });
});
