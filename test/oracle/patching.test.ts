/**
 * Activation patching against the plain-loop reference forward: every patched logit difference equals a reference
 * run of the corrupted prompt with the same per-position addition (clean − corrupted, computed from the reference's
 * own activations), and the cases whose answer is known exactly: the last position at the last block's resid_post
 * restores everything; earlier positions there (and at resid_mid) restore nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { activationPatching, suggestCorruption, type PatchPoint } from '../../src/engine/layers/patching';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { referenceForward, type Weights } from '../../src/engine/reference/gpt2';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

let model: Model;
let weights: Weights;
let cfg: ModelConfig;

const CLEAN = 'The cat sat on the mat and';
const CORRUPTED = 'The dog sat on the mat and';
const ANSWERS = { cleanAnswer: ' slept', corruptedAnswer: ' ran' };

let tiny: TinyModel;
before(async () => {
  tiny = await loadTinyModel('patching', { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 24, vocabSize: 50257 }, { seed: 3, std: 0.4 });
  ({ model, weights, cfg } = tiny);
});
after(() => tiny?.dispose());

const ids = (text: string) => model.tokenizer.encode(text).ids;
const firstId = (text: string) => ids(text)[0];

/** logit[a] − logit[b] at the last position of a reference run. */
function refLD(logits: Float32Array, a: number, b: number): number {
  const V = cfg.vocabSize;
  const P = logits.length / V;
  return logits[(P - 1) * V + a] - logits[(P - 1) * V + b];
}

describe('activationPatching', () => {
  for (const point of ['hook_resid_pre', 'hook_resid_mid', 'hook_resid_post'] as PatchPoint[]) {
    it(`every patched logit difference equals the reference forward with the same addition (${point})`, async () => {
      const r = await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS, point });
      const cleanIds = ids(CLEAN);
      const corrIds = ids(CORRUPTED);
      const P = cleanIds.length;
      const D = cfg.dModel;
      const a = firstId(ANSWERS.cleanAnswer);
      const b = firstId(ANSWERS.corruptedAnswer);
      assert.equal(r.hook, point);
      assert.deepEqual(r.answers, { clean: { id: a, text: ' slept' }, corrupted: { id: b, text: ' ran' } });
      assert.deepEqual(r.clean.tokens.map((t) => t.id), cleanIds);
      assert.deepEqual(r.corrupted.tokens.map((t) => t.id), corrIds);
      const refClean = referenceForward(cfg, weights, cleanIds);
      const refCorr = referenceForward(cfg, weights, corrIds);
      const ldClean = refLD(refClean.get('logits')!.data, a, b);
      const ldCorr = refLD(refCorr.get('logits')!.data, a, b);
      assert.ok(Math.abs(r.ldClean - ldClean) < 1e-4 * (1 + Math.abs(ldClean)), `ldClean ${r.ldClean} vs ${ldClean}`);
      assert.ok(Math.abs(r.ldCorrupted - ldCorr) < 1e-4 * (1 + Math.abs(ldCorr)), `ldCorrupted ${r.ldCorrupted} vs ${ldCorr}`);
      assert.ok(Math.abs(ldClean - ldCorr) > 0.05, `the prompts differ enough (${ldClean} vs ${ldCorr})`);
      assert.equal(r.restored.length, cfg.nLayers);
      let nonTrivial = 0;
      for (let l = 0; l < cfg.nLayers; l++) {
        assert.equal(r.restored[l].length, P);
        const hook = `blocks.${l}.${point}` as HookName;
        const c = refClean.get(hook)!.data;
        const k = refCorr.get(hook)!.data;
        for (let p = 0; p < P; p++) {
          const add = new Float32Array(P * D);
          for (let d = 0; d < D; d++) add[p * D + d] = c[p * D + d] - k[p * D + d];
          const patched = referenceForward(cfg, weights, corrIds, new Map([[`${l}:${point}`, add]]));
          const want = refLD(patched.get('logits')!.data, a, b);
          const got = r.ldCorrupted + r.restored[l][p] * (r.ldClean - r.ldCorrupted);
          assert.ok(Math.abs(got - want) < 1e-4 * (1 + Math.abs(want)), `l${l} p${p}: patched LD ${got} vs reference ${want}`);
          const wantRestored = (want - ldCorr) / (ldClean - ldCorr);
          assert.ok(Math.abs(r.restored[l][p] - wantRestored) < 1e-3, `l${l} p${p}: restored ${r.restored[l][p]} vs ${wantRestored}`);
          if (Math.abs(wantRestored) > 0.01 && Math.abs(wantRestored - 1) > 0.01) nonTrivial++;
        }
      }
      if (point === 'hook_resid_pre') assert.ok(nonTrivial > 0, 'some patch restores part of the difference');
    });
  }

  it('at the last block: the last position restores exactly 1, earlier positions exactly 0', async () => {
    const P = ids(CLEAN).length;
    const L = cfg.nLayers;
    const post = await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS, point: 'hook_resid_post' });
    assert.ok(Math.abs(post.restored[L - 1][P - 1] - 1) < 1e-5, `restored ${post.restored[L - 1][P - 1]}`);
    // resid_post of the last block at position p < P−1 reaches only position p's own logits.
    for (let p = 0; p < P - 1; p++) assert.ok(Math.abs(post.restored[L - 1][p]) < 1e-6, `resid_post p${p}: ${post.restored[L - 1][p]}`);
    // resid_mid of the last block at p < P−1 goes through that position's MLP only: it cannot reach the last position.
    const mid = await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS, point: 'hook_resid_mid' });
    for (let p = 0; p < P - 1; p++) assert.ok(Math.abs(mid.restored[L - 1][p]) < 1e-6, `resid_mid p${p}: ${mid.restored[L - 1][p]}`);
    assert.ok(Math.abs(mid.restored[L - 1][P - 1] - 1) < 1e-5);
    // Position 0 is the same token in both prompts: identical at every layer (causal), so nothing to restore.
    const pre = await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS });
    for (let l = 0; l < L; l++) assert.equal(pre.restored[l][0], 0);
    // Block 0's resid_pre at the differing token carries the whole difference into the run: restores everything.
    assert.ok(Math.abs(pre.restored[0][1] - 1) < 1e-4, `block 0 p1: ${pre.restored[0][1]}`);
  });

  it('answers default to each prompt’s top-1 prediction, or refuse clearly when both predict the same token', async () => {
    const top = (text: string) => {
      const logits = referenceForward(cfg, weights, ids(text)).get('logits')!.data;
      const V = cfg.vocabSize;
      const last = logits.subarray(logits.length - V);
      let best = 0;
      for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
      return best;
    };
    const pairs: [string, string][] = [
      [CLEAN, CORRUPTED],
      ['I like green tea', 'I like black tea'],
      ['one two three four', 'five six seven eight'],
    ];
    let differing = 0;
    for (const [clean, corrupted] of pairs) {
      const a = top(clean);
      const b = top(corrupted);
      if (a === b) {
        await assert.rejects(activationPatching(model, { clean, corrupted }), /both prompts predict the same token .*logit difference would be 0/);
        continue;
      }
      differing++;
      const r = await activationPatching(model, { clean, corrupted });
      assert.deepEqual([r.answers.clean.id, r.answers.corrupted.id], [a, b]);
      assert.equal(r.answers.clean.text, model.tokenizer.tokenText(a));
      assert.deepEqual(r.notes, []);
    }
    assert.ok(differing > 0, 'at least one pair exercises the default answers');
    // The same prompt twice always predicts the same token.
    await assert.rejects(activationPatching(model, { clean: CLEAN, corrupted: CLEAN }), /both prompts predict the same token/);
    await assert.rejects(activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, cleanAnswer: ' x', corruptedAnswer: ' x' }), /both answers are the same token " x"/);
  });

  it('a multi-token answer uses its first token and says so', async () => {
    const text = ' purringly';
    assert.ok(ids(text).length > 1);
    const r = await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, cleanAnswer: text, corruptedAnswer: ' ran' });
    assert.equal(r.answers.clean.id, firstId(text));
    assert.equal(r.notes.length, 1);
    assert.match(r.notes[0], /clean answer " purringly" is \d tokens; only its first token " pur+" is measured/);
  });

  it('says the restored fractions are meaningless when the clean–corrupted gap is near zero next to the logits', async () => {
    const V = cfg.vocabSize;
    const lastRow = (text: string) => referenceForward(cfg, weights, ids(text)).get('logits')!.data.slice(-V);
    const a = lastRow(CLEAN);
    const b = lastRow(CORRUPTED);
    const mean = a.reduce((x, y) => x + y, 0) / V;
    const spread = Math.sqrt(a.reduce((x, y) => x + (y - mean) ** 2, 0) / V);
    // Two single-token words whose logit difference moves by a hair between the prompts (but not by nothing).
    const words = [];
    for (let id = 300; id < 6000; id++) {
      const t = model.tokenizer.tokenText(id);
      if (/^ [a-z]{3,}$/.test(t) && firstId(t) === id && ids(t).length === 1) words.push({ id, t, d: a[id] - b[id] });
    }
    words.sort((x, y) => x.d - y.d);
    let pair: [typeof words[0], typeof words[0]] | undefined;
    for (let i = 1; i < words.length && !pair; i++) {
      const gap = Math.abs(words[i].d - words[i - 1].d);
      if (gap > 1e-4 && gap < 0.01 * spread) pair = [words[i], words[i - 1]];
    }
    assert.ok(pair, 'a pair of answers with a near-zero gap');
    const r = await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, cleanAnswer: pair[0].t, corruptedAnswer: pair[1].t });
    assert.ok(Math.abs(r.ldClean - r.ldCorrupted) < 0.05 * spread);
    assert.equal(r.notes.length, 1, r.notes.join('\n'));
    assert.match(r.notes[0], /the logit difference barely changes between the prompts \(clean -?\d+\.\d+, corrupted -?\d+\.\d+: a gap of -?\d+\.\d+, next to a spread of \d+\.\d+ in the logits\).*meaningless/);
    // An ordinary pair gets no such note.
    assert.deepEqual((await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS })).notes, []);
  });

  it('refuses prompts of different token counts, naming both counts', async () => {
    const corrupted = 'The hippopotamus sat on the mat and';
    const n = ids(corrupted).length;
    assert.notEqual(n, 7);
    await assert.rejects(
      activationPatching(model, { clean: CLEAN, corrupted, ...ANSWERS }),
      new RegExp(`clean prompt has 7 tokens but the corrupted prompt has ${n}.*edit the corrupted prompt`),
    );
    await assert.rejects(activationPatching(model, { clean: '', corrupted: CORRUPTED }), /clean prompt is empty/);
  });

  it('reports progress after each (layer, position) and stops between runs when cancelled', async () => {
    const total = cfg.nLayers * ids(CLEAN).length;
    const seen: [number, number][] = [];
    await activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS }, { onProgress: (d, t) => seen.push([d, t]) });
    assert.deepEqual(seen, Array.from({ length: total }, (_, i) => [i + 1, total]));
    const cancel = { isCancellationRequested: false };
    let calls = 0;
    await assert.rejects(
      activationPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS }, {
        cancel,
        onProgress: () => {
          if (++calls === 4) cancel.isCancellationRequested = true;
        },
      }),
      /cancelled/,
    );
    assert.equal(calls, 4);
  });

  it('suggests a corruption: the last word or number swapped for one of the same token length; none when there is nothing to swap', async () => {
    const top = async (text: string) => {
      const r = await model.run({ ids: ids(text), hooks: ['logits'] });
      const V = model.config.vocabSize;
      const last = r.activations.get('logits')!.data.subarray((ids(text).length - 1) * V, ids(text).length * V);
      return last.indexOf(Math.max(...last));
    };
    for (const clean of [CLEAN, 'total = 10 + 25', 'Mary gave the book to John because']) {
      const s = await suggestCorruption(model, clean);
      assert.ok(s, `a suggestion for ${JSON.stringify(clean)}`);
      assert.equal(ids(s.corrupted).length, ids(clean).length, 'same number of tokens');
      assert.notEqual(s.corrupted, clean);
      // Exactly one word or number differs, and the change names it.
      const [from, to] = s.change.split(' → ').map((x) => JSON.parse(x) as string);
      assert.ok(clean.includes(from) && s.corrupted.includes(to));
      assert.equal(s.changesPrediction, (await top(s.corrupted)) !== (await top(clean)));
    }
    assert.equal(await suggestCorruption(model, '!!! ...'), undefined);
  });
});
