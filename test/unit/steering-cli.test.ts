/**
 * `residual steer` (steerCommand) on a tiny random checkpoint with a saved vector, and on the demo model's
 * transcoders when present: the JSON shape CLI.md gives, generation, overflow, and one-line errors.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { ResidualError } from '../../src/engine/errors';
import { steerCommand } from '../../src/cli/steer';
import { saveVectorFile } from '../../src/engine/steering/vectors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-steer-cli-'));
const modelDir = path.join(root, 'model');
const D = 16;

before(() => {
  writeRandomGpt2(modelDir, { nLayers: 2, dModel: D, nHeads: 4, dMlp: 32, nCtx: 32, vocabSize: 50257 }, { seed: 77, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
  const base = { layer: 1, point: 'hook_resid_pre' as const, source: 'contrastive' as const, provenance: { model: 'random' } };
  saveVectorFile(path.join(root, 'v.json'), { ...base, vector: Float32Array.from({ length: D }, (_, i) => Math.cos(i)), label: 'v' });
  saveVectorFile(path.join(root, 'wide.json'), { ...base, vector: new Float32Array(D + 1).fill(1), label: 'wide' });
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

async function capture(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const w1 = process.stdout.write.bind(process.stdout);
  const w2 = process.stderr.write.bind(process.stderr);
  // Only strings are ours: the test runner streams its own binary reports through stdout meanwhile.
  process.stdout.write = ((s: string | Uint8Array, ...rest: never[]) => (typeof s === 'string' ? (out.push(s), true) : w1(s, ...rest))) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array, ...rest: never[]) => (typeof s === 'string' ? (err.push(s), true) : w2(s, ...rest))) as typeof process.stderr.write;
  try {
    const code = await steerCommand(args);
    return { code, out: out.join(''), err: err.join('') };
  } finally {
    process.stdout.write = w1;
    process.stderr.write = w2;
  }
}

const base = () => ['--model', modelDir, '--text', 'The quick brown fox', '--vector', path.join(root, 'v.json'), '--providers', 'cpu'];

describe('residual steer', () => {
  it('prints the JSON of CLI.md, with generation', async () => {
    const r = await capture([...base(), '--layer', '1', '--strength', '4', '--generate', '5', '--seed', '3', '--temperature', '0.8', '--json']);
    assert.equal(r.code, 0);
    const j = JSON.parse(r.out);
    assert.equal(j.hook, 'blocks.1.hook_resid_pre');
    assert.equal(j.strength, 4);
    assert.equal(j.baseline.top.length, 10);
    for (const t of [...j.baseline.top, ...j.steered.top]) assert.deepEqual(Object.keys(t).sort(), ['id', 'logit', 'prob', 'text']);
    assert.equal(typeof j.baseline.text, 'string');
    assert.equal(typeof j.steered.text, 'string');
    assert.ok(j.kl > 0);
    assert.equal(j.non_finite, false);
  });
  it('--relative, --hook and --positions; text output', async () => {
    const r = await capture([...base(), '--layer', '0', '--strength', '0.5', '--relative', '--hook', 'resid_mid', '--positions', 'from:2']);
    assert.equal(r.code, 0);
    assert.match(r.out, /at blocks\.0\.hook_resid_mid, strength 0\.5 × mean norm/);
    assert.match(r.out, /KL\(baseline ‖ steered\) = \d/);
  });
  it('an overflowing strength reports non_finite, keeps the baseline and exits 0', async () => {
    const r = await capture([...base(), '--layer', '1', '--strength', '1e40', '--json']);
    assert.equal(r.code, 0);
    const j = JSON.parse(r.out);
    assert.equal(j.non_finite, true);
    assert.deepEqual(j.steered.top, []);
    assert.equal(j.kl, null);
    assert.equal(j.baseline.top.length, 10);
    assert.match(r.err, /residual steer: --strength: strength 1e\+40 overflows float32: .*; only the baseline is shown/);
  });
  const bad: [string, string[], RegExp][] = [
    ['both sources', ['--feature', '0:1', '--transcoders', root, '--strength', '1'], /exactly one of --feature/],
    ['a bad hook', ['--strength', '1', '--hook', 'attn_out'], /--hook must be resid_pre, resid_mid or resid_post/],
    ['bad positions', ['--strength', '1', '--positions', 'some'], /--positions must be all, from:N, generated or a list of positions like 0,3,4, got "some"/],
    ['a bad strength', ['--strength', 'lots'], /--strength must be a finite number, got "lots"/],
    ['an unknown layer', ['--strength', '1', '--layer', '5'], /--layer 5 does not exist \(the model has layers 0\.\.1\)/],
    ['an unknown flag', ['--strength', '1', '--frobnicate'], /unknown flag --frobnicate; see residual steer --help/],
    ['a negative seed', ['--strength', '1', '--seed', '-1'], /--seed must be a whole number from 0 to 4294967295, got "-1"/],
    ['a --top beyond the vocabulary', ['--strength', '1', '--top', '60000'], /--top 60000 is more than the model's vocabulary \(50257 tokens\)/],
  ];
  for (const [name, extra, re] of bad) {
    it(`refuses ${name}`, async () => {
      await assert.rejects(capture([...base(), ...extra]), (e: unknown) => e instanceof ResidualError && re.test(e.message));
    });
  }
  it('refuses a vector of the wrong width and a missing vector file, naming the file', async () => {
    const args = (v: string) => ['--model', modelDir, '--text', 'hi', '--vector', v, '--strength', '1', '--providers', 'cpu'];
    await assert.rejects(capture(args(path.join(root, 'wide.json'))), /wide\.safetensors: the vector has 17 values but the model's d_model is 16/);
    await assert.rejects(capture(args(path.join(root, 'none.json'))), /none\.json: vector file not found/);
  });
  it('steers along a demo transcoder feature when models/demo is present', async (t) => {
    const demo = path.join(__dirname, '..', '..', 'models', 'demo');
    if (!fs.existsSync(path.join(demo, 'model.safetensors'))) return t.skip('models/demo is missing');
    const r = await capture(['--model', demo, '--text', 'def add(a, b):\n    return', '--feature', '2:7', '--transcoders', path.join(demo, 'transcoders'), '--layer', '2', '--strength', '10', '--hook', 'resid_post', '--providers', 'cpu', '--json']);
    const j = JSON.parse(r.out);
    assert.equal(j.hook, 'blocks.2.hook_resid_post');
    assert.equal(j.vector.source, 'feature');
    assert.ok(j.kl >= 0);
    await assert.rejects(
      capture(['--model', demo, '--text', 'x', '--feature', '2:999999', '--transcoders', path.join(demo, 'transcoders'), '--strength', '1', '--providers', 'cpu']),
      /feature 999999 does not exist/,
    );
  });
});
