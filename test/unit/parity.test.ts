/**
 * Parity (engine/parity.ts): the model as loaded against the float64 reference forward, run in a worker thread. It
 * agrees on a sound model, names the layer of a weight that differs, checks the first layers only under a small
 * budget and says so, stops on cancel, and `analyze --parity` prints it.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readSafetensorsHeader } from '../../src/engine/checkpoint/safetensors';
import { Model } from '../../src/engine/model';
import { checkParity, referenceFlops } from '../../src/engine/parity';
import { runCli } from '../helpers/catalogue';

const DEMO = path.join(__dirname, '..', '..', 'models', 'demo');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-parity-'));
let model: Model;

before(async () => {
  model = await Model.load(DEMO, { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
});
after(async () => {
  await model.dispose();
  fs.rmSync(root, { recursive: true, force: true });
});

/** A copy of the demo model with `delta` added to element 0 of one tensor (the reference then reads a different model). */
function tamperedCopy(tensor: string, delta: number): string {
  const dir = path.join(root, `tampered-${tensor}`);
  fs.cpSync(DEMO, dir, { recursive: true });
  const file = path.join(dir, 'model.safetensors');
  const header = readSafetensorsHeader(file);
  const entry = header.entries.find((e) => e.name === tensor)!;
  const fd = fs.openSync(file, 'r+');
  try {
    const b = new Uint8Array(4);
    fs.readSync(fd, b, 0, 4, entry.dataOffset);
    const v = new DataView(b.buffer);
    v.setFloat32(0, v.getFloat32(0, true) + delta, true);
    fs.writeSync(fd, b, 0, 4, entry.dataOffset);
  } finally {
    fs.closeSync(fd);
  }
  return dir;
}

describe('parity against the float64 reference', () => {
  it('a sound model: every hook and the logits agree to float32 rounding', async () => {
    const r = await checkParity(model);
    assert.equal(r.layers_checked, model.config.nLayers);
    assert.equal(r.n_layers, model.config.nLayers);
    assert.equal(r.hooks_checked, model.hooks.size, 'every hook the model offers is compared');
    assert.ok(r.max_abs_dlogit !== null && r.max_abs_dlogit <= 1e-4, `max |Δlogit| ${r.max_abs_dlogit}`);
    assert.ok(r.max_abs_dlogit! > 0, 'float32 against float64 differs somewhere: the two really ran');
    assert.ok(r.worst_hook_relative <= 1e-5, `${r.worst_hook}: ${r.worst_hook_relative}`);
    assert.equal(r.provider, 'cpu');
    assert.equal(r.tokens, model.tokenizer.encode('The capital of France is Paris. In 1905, Einstein wrote').ids.slice(0, 12).length);
  });

  it('a weight that differs is found, at its layer: the first hook it reaches is the worst', async () => {
    const r = await checkParity(model, { referenceDir: tamperedCopy('h.2.mlp.c_proj.bias', 0.5) });
    assert.equal(r.worst_hook, 'blocks.2.hook_mlp_out');
    assert.ok(Math.abs(r.worst_hook_max_abs - 0.5) < 1e-3, `${r.worst_hook_max_abs}`);
    assert.ok(r.max_abs_dlogit! > 1e-3, 'the logits move too');
  });

  it('under a small budget only the first layers are checked, and the report says so (no logits)', async () => {
    const per = referenceFlops(model, 12).perLayer;
    const r = await checkParity(model, { maxFlops: 2.5 * per });
    assert.equal(r.layers_checked, 2);
    assert.equal(r.max_abs_dlogit, null);
    assert.match(r.worst_hook, /^(hook_|blocks\.[01]\.)/);
    // A difference beyond the layers checked is not seen; one inside them is.
    const late = await checkParity(model, { maxFlops: 2.5 * per, referenceDir: tamperedCopy('h.3.mlp.c_proj.bias', 0.5) });
    assert.ok(late.worst_hook_max_abs < 1e-4);
    const early = await checkParity(model, { maxFlops: 2.5 * per, referenceDir: tamperedCopy('h.1.attn.c_proj.bias', 0.5) });
    assert.equal(early.worst_hook, 'blocks.1.hook_attn_out');
    // Not even one block within the budget: nothing is run, and the report says why.
    const none = await checkParity(model, { maxFlops: 0.5 * per });
    assert.equal(none.layers_checked, 0);
    assert.match(none.skipped ?? '', /one block costs [\d.]+ GFLOP of reference arithmetic, over the \d+ GFLOP budget/);
  });

  it('cancel stops it, before the run or while the worker computes, and leaves no timer behind', async () => {
    const token = { isCancellationRequested: false };
    const pending = checkParity(model, { cancel: token });
    token.isCancellationRequested = true;
    await assert.rejects(pending, /cancelled/);
    // A token that turns once the model's run has read it: the cancel comes while the worker is at work.
    // Node's own list of what keeps the process alive (not in this project's @types/node 20 typings).
    const active = () => (process as unknown as { getActiveResourcesInfo(): string[] }).getActiveResourcesInfo();
    const timers = () => active().filter((r) => r === 'Timeout').length;
    const before = timers();
    let reads = 0;
    const late = { get isCancellationRequested() { return ++reads > 3; } };
    await assert.rejects(checkParity(model, { cancel: late }), /cancelled/);
    assert.ok(reads > 3, 'the cancel was seen after the run');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(timers(), before, 'the poll is cleared');
  });

  it('a reference that cannot read its checkpoint fails with the reason, named', async () => {
    const dir = path.join(root, 'empty');
    fs.mkdirSync(dir);
    await assert.rejects(checkParity(model, { referenceDir: dir }), (e: Error) => /parity check's reference forward failed: .*no model\.safetensors/.test(e.message));
  });

  it('analyze --parity: the JSON field and the text line', async () => {
    const json = await runCli(['analyze', '--model', DEMO, '--text', 'hello', '--providers', 'cpu', '--parity', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const p = JSON.parse(json.stdout).parity;
    assert.equal(p.layers_checked, p.n_layers);
    assert.ok(p.max_abs_dlogit <= 1e-4);
    assert.match(p.reference, /float64/);
    const text = await runCli(['analyze', '--model', DEMO, '--text', 'hello', '--providers', 'cpu', '--parity']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /\nparity: max \|Δlogit\| [\d.e-]+ vs the float64 plain-loop forward .* on \d+ probe tokens \(cpu, float32\); worst hook \S+/);
  });
});
