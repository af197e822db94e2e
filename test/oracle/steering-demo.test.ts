/**
 * Behavioural test on the bundled demo model (models/demo, a small GPT-2 trained mostly on Python and JavaScript).
 *
 * Design. The concept is the quote style of string literals: single (`'`) vs double (`"`) quotes, something a model
 * trained on code must track, since a file usually sticks to one style. Each contrastive pair is the same snippet
 * written both ways and ending at an assignment `name =`, so the two sides differ only in the quote character and
 * the next token is where a string literal would open. The vector is the CAA mean difference (single − double) of
 * blocks.2.hook_resid_pre at the last token, added at strength 1 (the mean difference as is) at every position.
 * Held-out prompts are different, quote-free assignments (`title =`, `url =`, …; none of their text occurs in the
 * pairs), so there is no quote in the context to copy. Expected: the probability of the next token ` '` rises on
 * ≥ 80% of the held-out prompts, the log-odds of ` '` over ` "` rises on ≥ 80%, and the negated vector makes ` "`
 * more likely on ≥ 80% (the effect follows the direction, not just any perturbation). As a sanity check the
 * layer-0 resid_pre vector is exactly zero: both sides end in the same token and resid_pre of block 0 is only its
 * embedding. Skipped, with the reason, when models/demo is missing.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Model } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';
import { logSoftmax } from '../../src/engine/numeric';
import { steerAdds } from '../../src/engine/steering/steer';
import { contrastiveVector, parsePairs } from '../../src/engine/steering/vectors';

const DEMO = path.join(__dirname, '..', '..', 'models', 'demo');
const present = fs.existsSync(path.join(DEMO, 'model.safetensors')) && fs.existsSync(path.join(DEMO, 'tokenizer.json'));
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-steer-demo-'));
let model: Model | undefined;

before(async () => {
  if (!present) return;
  silenceOrt();
  model = await Model.load(DEMO, { providers: ['cpu'], cacheDir: root });
});
after(async () => {
  await model?.dispose();
  fs.rmSync(root, { recursive: true, force: true });
});

export const QUOTE_PAIRS = `# single (+) vs double (-) quotes; each pair ends where a string literal would open
+ name = 'alice'\\ncity = 'paris'\\nkey =
- name = "alice"\\ncity = "paris"\\nkey =

+ mode = 'r'\\npath = 'data.txt'\\nsep =
- mode = "r"\\npath = "data.txt"\\nsep =

+ print('hello')\\nlabel =
- print("hello")\\nlabel =

+ x = {'a': 1, 'b': 2}\\ny =
- x = {"a": 1, "b": 2}\\ny =

+ s = 'foo' + 'bar'\\nt =
- s = "foo" + "bar"\\nt =

+ os.path.join('src', 'lib')\\nroot =
- os.path.join("src", "lib")\\nroot =
`;

const HELD_OUT = ['title =', 'msg =', 'url =', 'color =', 'greeting =', 'suffix =', 'user_name =', 'ext =', 'prefix =', 'header =', 'text =', 'lang =', 'word =', 'def f():\n    return'];

describe('behaviour on the demo model: a quote-style vector', () => {
  it('moves the next token towards single quotes on held-out prompts (and the negated vector towards double)', async (t) => {
    if (!model) return t.skip('models/demo is missing (model.safetensors + tokenizer.json); build it with tools/demo-model/build.sh');
    const m = model;
    const tk = m.tokenizer;
    const SQ = tk.encode(" '").ids;
    const DQ = tk.encode(' "').ids;
    assert.equal(SQ.length, 1, "' ' is one token");
    assert.equal(DQ.length, 1, "' \"' is one token");
    const pairs = parsePairs(QUOTE_PAIRS, 'quotes.pairs');
    assert.equal(pairs.length, 6);
    for (const h of HELD_OUT) for (const p of pairs) assert.ok(!p.positive.includes(h) && !p.negative.includes(h), `held-out prompt ${JSON.stringify(h)} is not in the pairs`);

    const zero = await contrastiveVector(m, pairs, 0, 'hook_resid_pre');
    assert.ok(zero.vector.every((x) => x === 0), 'layer-0 resid_pre difference is exactly zero (same last token)');

    const v = await contrastiveVector(m, pairs, 2, 'hook_resid_pre', { position: 'last' });
    const V = m.config.vocabSize;
    const last = async (ids: number[], vector?: Float32Array) => {
      const steer = vector ? steerAdds({ vector, layer: 2, point: 'hook_resid_pre', strength: 1, positions: { kind: 'all' } }, 0, ids.length) : [];
      const r = await m.run({ ids, hooks: ['logits'], steer });
      return logSoftmax(r.activations.get('logits')!.data.subarray((ids.length - 1) * V, ids.length * V))!;
    };
    const neg = v.vector.map((x) => -x);
    let sqUp = 0;
    let oddsUp = 0;
    let dqUpNeg = 0;
    const rows: string[] = [];
    let sumBase = 0;
    let sumSteered = 0;
    for (const h of HELD_OUT) {
      const ids = tk.encode(h).ids;
      const b = await last(ids);
      const s = await last(ids, v.vector);
      const n = await last(ids, neg);
      if (s[SQ[0]] > b[SQ[0]]) sqUp++;
      if (s[SQ[0]] - s[DQ[0]] > b[SQ[0]] - b[DQ[0]]) oddsUp++;
      if (n[DQ[0]] > b[DQ[0]]) dqUpNeg++;
      sumBase += Math.exp(b[SQ[0]]);
      sumSteered += Math.exp(s[SQ[0]]);
      rows.push(`${JSON.stringify(h)}: p(' ') ${Math.exp(b[SQ[0]]).toFixed(3)} → ${Math.exp(s[SQ[0]]).toFixed(3)}, p(' "') ${Math.exp(b[DQ[0]]).toFixed(3)} → ${Math.exp(s[DQ[0]]).toFixed(3)} (negated: ${Math.exp(n[DQ[0]]).toFixed(3)})`);
    }
    const N = HELD_OUT.length;
    t.diagnostic(`‖v‖ = ${Math.hypot(...v.vector).toFixed(2)}; p(' ') rose on ${sqUp}/${N}, log-odds ' vs " rose on ${oddsUp}/${N}, negated vector raised p(' "') on ${dqUpNeg}/${N}; mean p(' ') ${(sumBase / N).toFixed(3)} → ${(sumSteered / N).toFixed(3)}`);
    for (const r of rows) t.diagnostic(r);
    assert.ok(sqUp >= 0.8 * N, `p(' ') rose on only ${sqUp}/${N}`);
    assert.ok(oddsUp >= 0.8 * N, `log-odds rose on only ${oddsUp}/${N}`);
    assert.ok(dqUpNeg >= 0.8 * N, `negated vector raised p(' "') on only ${dqUpNeg}/${N}`);
  });
});
