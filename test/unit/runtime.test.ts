/** Hook-name vocabulary and execution-provider fallback. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { allHookNames, hookName, parseHookName, suggestHooks } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { silenceOrt } from '../../src/engine/runtime/session';

describe('hook names', () => {
  it('are TransformerLens names, parsed back exactly', () => {
    const names = allHookNames(2);
    assert.equal(names[0], 'hook_embed');
    assert.ok(names.includes('blocks.1.attn.hook_pattern'));
    assert.ok(names.includes('blocks.0.ln2.hook_normalized'));
    assert.equal(names.at(-1), 'logits');
    for (const n of names) assert.ok(parseHookName(n), n);
    assert.deepEqual(parseHookName(hookName(3, 'hook_resid_pre')), { layer: 3, hook: 'hook_resid_pre' });
    assert.equal(parseHookName('blocks.0.resid_pre'), undefined);
    assert.equal(parseHookName('blocks.x.hook_resid_pre'), undefined);
  });
  it('suggest the closest valid names for a typo', () => {
    assert.equal(suggestHooks('blocks.1.hook_resid_pst', 2)[0], 'blocks.1.hook_resid_post');
    assert.equal(suggestHooks('blocks.0.attn.hook_patern', 2)[0], 'blocks.0.attn.hook_pattern');
  });
});

describe('execution providers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-ep-'));
  writeRandomGpt2(dir, { nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 8, vocabSize: 16 }, { seed: 3, tokenizerJson: { model: { type: 'BPE', vocab: { a: 0, b: 1 }, merges: [] } } });
  silenceOrt();

  it('are tried one at a time; each failure is recorded with its reason and the CPU runs', async () => {
    const logs: string[] = [];
    const m = await Model.load(dir, { providers: ['cuda', 'webgpu', 'cpu'], log: (s) => logs.push(s), cacheDir: path.join(dir, 'c') });
    try {
      // Without a GPU here, CUDA and WebGPU fail; where one works, it is the one in use.
      assert.ok(['cuda', 'webgpu', 'cpu'].includes(m.provider));
      const last = m.attempts.at(-1)!;
      assert.equal(last.ok, true);
      assert.equal(last.provider, m.provider);
      for (const a of m.attempts.slice(0, -1)) {
        assert.equal(a.ok, false);
        assert.ok(a.reason && a.reason.length > 5, `reason for ${a.provider}`);
        assert.ok(logs.some((l) => l.includes(`provider ${a.provider} unavailable`)));
      }
    } finally {
      await m.dispose();
    }
  });

  it('an unknown provider fails with a message listing every attempt', async () => {
    await assert.rejects(Model.load(dir, { providers: ['nonesuch'], cacheDir: path.join(dir, 'c') }), (e: Error) => {
      assert.match(e.message, /no execution provider could run the model/);
      assert.match(e.message, /nonesuch/);
      return true;
    });
  });

  it('the in-memory external-data mode gives the same logits as the hard-linked one', async () => {
    const a = await Model.load(dir, { providers: ['cpu'], externalMode: 'link', cacheDir: path.join(dir, 'c') });
    const b = await Model.load(dir, { providers: ['cpu'], externalMode: 'buffer' });
    try {
      const ra = await a.run({ ids: [0, 1, 0], hooks: ['logits'] });
      const rb = await b.run({ ids: [0, 1, 0], hooks: ['logits'] });
      assert.deepEqual(ra.activations.get('logits')!.data, rb.activations.get('logits')!.data);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });
});
