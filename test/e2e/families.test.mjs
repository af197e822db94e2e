// End-to-end: a Llama-family checkpoint in a real VS Code (code-server + Chromium). A tiny random Llama (grouped-query
// attention, a tokenizer whose post-processor adds BOS) with circuit-tracer-layout transcoders reading mlp.hook_in is
// written by the engine's own generator; the memory estimate is made to refuse it (RESIDUAL_AVAILABLE_MEMORY), the
// modal offers "Load Anyway", then Analyze Selection, the Inspector and Trace Circuit are read from their webviews.
// Expected tokens and predictions come from the `residual` CLI on the same folder.
//
//   npm run build && RESIDUAL_DEV_PATH=$PWD node --test --test-concurrency=1 test/e2e/families.test.mjs
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it as nodeIt } from 'node:test';
import { tsImport } from 'tsx/esm/api';
import {
  contextMenu, failureScreenshots, openFile, REPO_ROOT, residualExtension, runCommand, screenshot, selectLines, startVSCode, webview,
} from './harness.mjs';

const ext = residualExtension();
const PROMPT = 'def add(a, b):\n    return a + b\n';
// Each read-out × position of the lens costs 2·64·4096 FLOPs and there are 4 read-outs: this budget fits 3 positions.
const LENS_GFLOP = (3.5 * 4 * 2 * 64 * 4096) / 1e9;
const CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}User: {{ m.content | trim }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
const visible = (s) => s.replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '→').replace(/\r/g, '␍') || '∅';

describe('a Llama-family model in a real VS Code', { skip: ext ? false : 'RESIDUAL_VSIX / RESIDUAL_DEV_PATH not set (run scripts/e2e/run.sh)' }, () => {
  let vs;
  const it = failureScreenshots(nodeIt, () => vs?.page);
  let root;
  let modelDir;
  let cliTokens = 0;
  const savedEnv = process.env.RESIDUAL_AVAILABLE_MEMORY;

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-e2e-llama-'));
    modelDir = path.join(root, 'tiny-llama');
    const { writeRandomFamily } = await tsImport('../../src/engine/checkpoint/random.ts', import.meta.url);
    const { randomTranscoderWeights, writeCircuitTracerTranscoders } = await tsImport('../../src/engine/circuits/transcoders-write.ts', import.meta.url);
    // The bundled model's tokenizer with a Llama-3-style post-processor that puts BOS (<|endoftext|>, 4095) in front.
    const tok = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'models', 'demo', 'tokenizer.json'), 'utf8'));
    const bos = tok.added_tokens[0];
    tok.post_processor = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos.content, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { [bos.content]: { id: bos.content, ids: [bos.id], tokens: [bos.content] } },
    };
    writeRandomFamily(
      modelDir,
      'llama',
      { num_hidden_layers: 3, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 128, max_position_embeddings: 256, vocab_size: 4096, tie_word_embeddings: true, _name_or_path: 'tiny-llama-e2e' },
      { seed: 7, tokenizerJson: tok, std: 0.2, dtype: 'BF16' },
    );
    writeCircuitTracerTranscoders(path.join(modelDir, 'transcoders'), randomTranscoderWeights(3, 64, 256, { seed: 3 }), { activation: 'topk', k: 8, input: 'mlp.hook_in' });
    // A Llama-3-like chat template in plain words of the demo vocabulary, with the tokenizer's BOS from bos_token.
    fs.writeFileSync(path.join(modelDir, 'tokenizer_config.json'), JSON.stringify({ bos_token: bos.content, chat_template: CHAT_TEMPLATE }));
    process.env.RESIDUAL_AVAILABLE_MEMORY = '1000000'; // 1 MB: every model "does not fit"
    vs = await startVSCode({ ...ext, name: 'families', workspaceFiles: { 'prompt.py': PROMPT }, settings: { 'residual.modelPath': modelDir, 'residual.lensGflop': LENS_GFLOP } });
  });
  after(async () => {
    if (savedEnv === undefined) delete process.env.RESIDUAL_AVAILABLE_MEMORY;
    else process.env.RESIDUAL_AVAILABLE_MEMORY = savedEnv;
    await vs?.stop();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('the memory estimate refuses before loading; "Load Anyway" loads it and the analysis shows BOS and the CLI\'s prediction', async () => {
    const { page } = vs;
    const cli = JSON.parse(
      execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'analyze', '--model', modelDir, '--text', 'def add(a, b):', '--json', '--providers', 'cpu', '--skip-memory-check'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }),
    );
    assert.equal(cli.model.architecture, 'llama');
    assert.equal(cli.tokens[0].text, '', 'the CLI shows the BOS token first');
    await openFile(page, 'prompt.py');
    await selectLines(page, 1);
    await contextMenu(page, 'Analyze Selection');
    const dialog = page.locator('.monaco-dialog-box');
    await dialog.waitFor({ timeout: 60_000 });
    const text = await dialog.textContent();
    assert.match(text, /tiny-llama-e2e \(\d+K parameters\) needs about \d+ MB of memory on the CPU and 1 MB is available/);
    await screenshot(page, 'families-memory-dialog.png');
    await dialog.locator('.monaco-button', { hasText: 'Load Anyway' }).click();

    const wv = await webview(page, { title: 'Residual: Activations' });
    await wv.locator('#app[data-state="ready"]').waitFor({ timeout: 60_000 });
    const tokens = await wv.locator('#tokens .token').allTextContents();
    assert.deepEqual(tokens, cli.tokens.map((t) => visible(t.text)));
    assert.equal(tokens[0], '∅', 'BOS covers no text');
    // The lens budget: the last 3 positions are computed, the others are marked and the panel says why.
    await wv.locator('#lens-partial', { hasText: 'The lens covers the last 3 of' }).waitFor();
    assert.equal(await wv.locator('#lens-grid tr[data-layer="0"] td.cell.skipped').count(), tokens.length - 3);
    assert.equal(await wv.locator('#lens-grid tr[data-layer="3"] td.cell:not(.skipped)').count(), 3);
    await wv.locator('#lens-partial').scrollIntoViewIfNeeded();
    await screenshot(page, 'families-lens.png');
    assert.equal(await wv.locator('#top li code.tok').first().textContent(), visible(cli.top[0].text), 'top prediction as the CLI computes it');
    cliTokens = cli.tokens.length;
    await screenshot(page, 'families-activations.png');

    await runCommand(page, 'Residual: Open Inspector');
    const insp = await webview(page, { title: 'Inspector', purpose: 'webviewView' });
    await insp.locator('#model-info', { hasText: 'llama · 3 layers · d_model 64 · 4 heads (2 key/value)' }).waitFor({ timeout: 30_000 });
    assert.match(await insp.locator('#model-info').textContent(), /BF16/);
  });

  it('Trace Circuit builds the attribution graph with transcoders reading mlp.hook_in', async () => {
    const { page } = vs;
    await openFile(page, 'prompt.py');
    await selectLines(page, 1);
    await contextMenu(page, 'Trace Circuit for Selection');
    const wv = await webview(page, { title: 'Residual: Circuit' });
    await wv.locator('#app[data-state="ready"] svg#graph').waitFor({ timeout: 120_000 });
    // One embedding node per token, BOS included.
    assert.equal(await wv.locator('#graph .node.token').count(), cliTokens);
    assert.ok((await wv.locator('#graph .node.logit').count()) >= 1);
    // Random transcoders reconstruct badly, so error nodes carry most influence; keep everything to see features.
    await wv.locator('#node-threshold').evaluate((el) => { el.value = '1'; el.dispatchEvent(new Event('input')); });
    await wv.locator('svg#graph[data-node-threshold="1"]').waitFor({ timeout: 30_000 });
    assert.ok((await wv.locator('#graph .node.feature').count()) > 0, 'feature nodes are drawn');
    await screenshot(page, 'families-circuit.png');
  });
  it('chat form: the Inspector\'s switch wraps the selection as a user turn; template tokens are marked, one BOS, as the CLI\'s --chat', async () => {
    const { page } = vs;
    const cli = JSON.parse(
      execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'residual.js'), 'analyze', '--model', modelDir, '--text', 'def add(a, b):', '--chat', '--json', '--providers', 'cpu', '--skip-memory-check'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }),
    );
    assert.ok(cli.chat.added >= 4, JSON.stringify(cli.chat));
    await runCommand(page, 'Residual: Open Inspector');
    const insp = await webview(page, { title: 'Inspector', purpose: 'webviewView' });
    await insp.locator('#chat', { hasText: 'Chat template available (tokenizer_config.json)' }).waitFor({ timeout: 30_000 });
    await insp.locator('#chat-toggle').click();
    await insp.locator('#chat', { hasText: 'Chat form: selections run as a user turn' }).waitFor({ timeout: 30_000 });
    await screenshot(page, 'families-chat-inspector.png');

    await openFile(page, 'prompt.py');
    await selectLines(page, 1);
    await contextMenu(page, 'Analyze Selection');
    const wv = await webview(page, { title: 'Residual: Activations' });
    await wv.locator('#app[data-state="ready"] #tokens .token.template').first().waitFor({ timeout: 60_000 });
    const chips = await wv.locator('#tokens .token').evaluateAll((els) => els.map((e) => ({ text: e.textContent, template: e.classList.contains('template') })));
    assert.deepEqual(chips, cli.tokens.map((t) => ({ text: visible(t.text), template: !!t.template })));
    assert.equal(chips.filter((c) => c.text === visible(cli.tokens[0].text)).length, 1, 'one BOS');
    assert.equal(await wv.locator('#top li code.tok').first().textContent(), visible(cli.top[0].text), 'the prediction after "Assistant:", as the CLI computes it');
    await wv.locator('section', { hasText: `the ${cli.chat.added} dashed tokens were added by it` }).first().waitFor();
    await wv.locator('#tokens').scrollIntoViewIfNeeded();
    await screenshot(page, 'families-chat-tokens.png');

    // Steering runs the same wrapped prompt, and says so.
    await runCommand(page, 'Residual: Open Steering Panel');
    const steer = await webview(page, { title: 'Residual: Steering' });
    await steer.locator('#steer-chat', { hasText: 'Runs as a user turn' }).waitFor({ timeout: 30_000 });
    await steer.locator('vscode-button', { hasText: 'Use current selection' }).waitFor();

    // Back to plain text for what follows.
    await runCommand(page, 'Residual: Toggle Chat Form (wrap the selection as a user turn)');
    await insp.locator('#chat', { hasText: 'selections run as plain text' }).waitFor({ timeout: 30_000 });
  });
});
