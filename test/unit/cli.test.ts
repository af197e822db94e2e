/** The `residual` command (needs `npm run build`): JSON shape of `analyze`, and one-line errors with exit status 2. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const BIN = path.join(__dirname, '..', '..', 'bin', 'residual.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-'));
const model = path.join(dir, 'm');
writeRandomGpt2(model, { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257 }, { seed: 5, tokenizerJson: gpt2TokenizerJSON() });

function cli(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', env: { ...process.env, TMPDIR: dir } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('residual analyze', () => {
  it('prints tokens with offsets, top-5, stats and the per-layer lens as JSON', () => {
    const text = 'print("hello"';
    const r = cli(['analyze', '--model', model, '--text', text, '--json', '--providers', 'cpu']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.deepEqual(Object.keys(j.model).sort(), ['architecture', 'd_model', 'dir', 'dtype', 'n_ctx', 'n_heads', 'n_kv_heads', 'n_layers', 'name', 'precision', 'vocab_size']);
    assert.deepEqual([j.model.n_kv_heads, j.model.precision], [j.model.n_heads, 'float32']);
    assert.equal(j.provider, 'cpu');
    assert.equal(j.tokens.map((t: { text: string }) => t.text).join(''), text);
    for (const t of j.tokens) assert.equal(text.slice(t.start, t.end), t.text);
    assert.equal(j.top.length, 5);
    for (const k of ['id', 'text', 'prob', 'logit']) assert.ok(k in j.top[0], k);
    assert.equal(j.stats.length, 2);
    assert.equal(j.stats[0].update_norm.length, j.tokens.length);
    assert.equal(j.lens.length, 3);
    assert.deepEqual(j.lens.map((l: { hook: string }) => l.hook), ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre', 'blocks.1.hook_resid_post']);
    assert.equal(j.lens[2].top[j.tokens.length - 1][0].id, j.top[0].id);
  });

  it('leaves no ONNX Runtime telemetry behind (no device id, no event database)', () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-home-'));
    const r = spawnSync(process.execPath, [BIN, 'analyze', '--model', model, '--text', 'x', '--json', '--providers', 'cpu'], {
      encoding: 'utf8',
      env: { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, '.cache'), ORT_DISABLE_TELEMETRY: '' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.existsSync(path.join(home, '.cache', 'Microsoft')), false, 'ONNX Runtime wrote telemetry under ~/.cache/Microsoft');
  });

  it('reads --text - from standard input', () => {
    const r = cli(['analyze', '--model', model, '--text', '-', '--json', '--providers', 'cpu'], 'a b c');
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).tokens.length, 3);
  });

  it('fails with one clear line and nothing on stdout', () => {
    const missing = cli(['analyze', '--model', path.join(dir, 'nope'), '--text', 'x', '--json']);
    assert.equal(missing.code, 2);
    assert.equal(missing.out, '');
    assert.match(missing.err, /residual: .*nope.*(does not exist|not found|missing)/i);
    const noText = cli(['analyze', '--model', model]);
    assert.equal(noText.code, 2);
    assert.match(noText.err, /--text TEXT is required/);
    const unknown = cli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.err, /unknown subcommand 'frobnicate'/);
  });
});
