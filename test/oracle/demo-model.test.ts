/**
 * The bundled demo model through the engine: its greedy next tokens equal the PyTorch model's (computed when the
 * report was made, in models/demo/expected-completions.json), and it completes a handful of simple code prompts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { analyze } from '../../src/engine/analysis';
import { Model } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';

const DIR = path.join(__dirname, '..', '..', 'models', 'demo');
const expected = JSON.parse(fs.readFileSync(path.join(DIR, 'expected-completions.json'), 'utf8')) as {
  completions: { prompt: string; prompt_ids: number[]; greedy_ids: number[]; first_prob: number }[];
};
let model: Model;

before(async () => {
  silenceOrt();
  model = await Model.load(DIR, { providers: ['cpu'] });
});
after(() => model?.dispose());

describe('bundled demo model', () => {
  it('tokenizes and predicts exactly as the PyTorch model that was exported', async () => {
    assert.ok(expected.completions.length >= 10);
    for (const c of expected.completions) {
      assert.deepEqual(model.tokenizer.encode(c.prompt).ids, c.prompt_ids, `tokens of ${JSON.stringify(c.prompt)}`);
      const a = await analyze(model, c.prompt, { perLayer: false });
      assert.equal(a.top[0].id, c.greedy_ids[0], `greedy next token after ${JSON.stringify(c.prompt)}`);
      assert.ok(Math.abs(a.top[0].prob - c.first_prob) < 1e-3, `probability ${a.top[0].prob} vs ${c.first_prob}`);
    }
  });

  // Structural completions a code model must get right; the prediction is the top-1 token.
  const CASES: [string, RegExp][] = [
    ['def f(x):', /^\n +$/], // a new, indented line after a Python block opener
    ['class Foo:', /^\n/],
    ['function f(a, b) {', /^\n +$/],
    ['const x = 1;\nconst y = 2', /^;$/],
    ['x = [1, 2, 3', /^,$/],
    ['import os\nimport', /^ (os|sys)$/],
  ];
  for (const [prompt, want] of CASES) {
    it(`completes ${JSON.stringify(prompt)}`, async () => {
      const a = await analyze(model, prompt, { perLayer: false });
      assert.match(a.top[0].text, want, `top-1 after ${JSON.stringify(prompt)} was ${JSON.stringify(a.top[0].text)}`);
    });
  }
});
