/**
 * analyze(): tokens and offsets, next-token top-k, per-layer statistics and the logit lens, each checked against an
 * independent float64 computation from the reference forward's activations.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { analyze } from '../../src/engine/analysis';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { ResidualError } from '../../src/engine/errors';
import { Model } from '../../src/engine/model';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { pokeTensor, writePaddedLlama } from '../catalogue/numbers.cases';
import { referenceForward, type Weights } from '../../src/engine/reference/gpt2';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

let model: Model;
let weights: Weights;
let cfg: ModelConfig;

let tiny: TinyModel;
before(async () => {
  tiny = await loadTinyModel('analysis', { nLayers: 3, dModel: 24, nHeads: 4, dMlp: 64, nCtx: 32, vocabSize: 50257 }, { seed: 7, std: 0.4 });
  ({ model, weights, cfg } = tiny);
});
after(() => tiny?.dispose());

/** Independent logit lens for one residual vector: LayerNorm (float64) → unembedding → softmax. */
function lensProbs(x: Float32Array): Float64Array {
  const D = cfg.dModel;
  const mean = x.reduce((a, b) => a + b, 0) / D;
  const v = x.reduce((a, b) => a + (b - mean) ** 2, 0) / D;
  const s = Math.sqrt(v + cfg.lnEps);
  const w = weights.get('ln_f.weight')!;
  const b = weights.get('ln_f.bias')!;
  const xf = Array.from(x, (xi, d) => ((xi - mean) / s) * w[d] + b[d]);
  const U = weights.get('wte.weight')!;
  const logits = new Float64Array(cfg.vocabSize);
  for (let t = 0; t < cfg.vocabSize; t++) {
    let acc = 0;
    for (let d = 0; d < D; d++) acc += xf[d] * U[t * D + d];
    logits[t] = acc;
  }
  const max = Math.max(...logits);
  let sum = 0;
  for (const l of logits) sum += Math.exp(l - max);
  return logits.map((l) => Math.exp(l - max) / sum);
}

const TEXT = 'def add(a, b):\n    return a + b  # 日本 🙂';

describe('analyze', () => {
  it('tokens carry exact offsets into the analysed text', async () => {
    const a = await analyze(model, TEXT);
    assert.equal(a.tokens.map((t) => t.text).join(''), TEXT);
    for (const t of a.tokens) assert.equal(TEXT.slice(t.start, t.end), t.text);
    assert.equal(a.truncated, undefined);
  });

  it('next-token top-k equals the softmax of the reference logits', async () => {
    const a = await analyze(model, TEXT, { topK: 5 });
    const ids = a.tokens.map((t) => t.id);
    const ref = referenceForward(cfg, weights, ids).get('logits')!;
    const V = cfg.vocabSize;
    const last = Array.from(ref.data.subarray((ids.length - 1) * V));
    const max = Math.max(...last);
    const z = last.reduce((s, l) => s + Math.exp(l - max), 0);
    const order = last.map((l, i) => [l, i]).sort((x, y) => y[0] - x[0]);
    assert.deepEqual(a.top.map((t) => t.id), order.slice(0, 5).map((x) => x[1]));
    for (const t of a.top) assert.ok(Math.abs(t.prob - Math.exp(last[t.id] - max) / z) < 1e-5, `prob of ${t.id}`);
  });

  it('layer statistics equal an independent computation from the reference activations', async () => {
    const a = await analyze(model, TEXT);
    const ids = a.tokens.map((t) => t.id);
    const ref = referenceForward(cfg, weights, ids);
    const D = cfg.dModel;
    for (let l = 0; l < cfg.nLayers; l++) {
      const pre = ref.get(`blocks.${l}.hook_resid_pre`)!.data;
      const post = ref.get(`blocks.${l}.hook_resid_post`)!.data;
      for (let p = 0; p < ids.length; p++) {
        let dd = 0, nn = 0, qq = 0, dot = 0;
        for (let d = 0; d < D; d++) {
          const x = pre[p * D + d], y = post[p * D + d];
          dd += (y - x) ** 2; nn += x * x; qq += y * y; dot += x * y;
        }
        assert.ok(Math.abs(a.stats[l].update_norm[p] - Math.sqrt(dd / nn)) < 1e-4, `update_norm l${l} p${p}`);
        assert.ok(Math.abs(a.stats[l].drift_cos[p] - dot / Math.sqrt(nn * qq)) < 1e-4, `drift_cos l${l} p${p}`);
        assert.ok(Math.abs(a.residNorm[l][p] - Math.sqrt(nn)) < 1e-4 * Math.sqrt(nn), `resid norm l${l} p${p}`);
      }
    }
  });

  it('the logit lens top-k, target probability and rank match an independent lens', async () => {
    const a = await analyze(model, TEXT, { lensK: 3 });
    const ids = a.tokens.map((t) => t.id);
    const ref = referenceForward(cfg, weights, ids);
    const D = cfg.dModel;
    assert.equal(a.readouts.length, cfg.nLayers + 1);
    assert.equal(a.readouts.at(-1)!.hook, `blocks.${cfg.nLayers - 1}.hook_resid_post`);
    for (const [r, readout] of a.readouts.entries()) {
      for (const p of [0, Math.floor(ids.length / 2), ids.length - 1]) {
        const x = ref.get(readout.hook as `blocks.${number}.hook_resid_pre`)!.data.subarray(p * D, (p + 1) * D);
        const probs = lensProbs(x);
        const order = Array.from(probs, (pr, i) => [pr, i]).sort((u, v) => v[0] - u[0]);
        assert.deepEqual(a.lens[r][p].map((t) => t.id), order.slice(0, 3).map((o) => o[1]), `lens ${readout.hook} p${p}`);
        for (const t of a.lens[r][p]) assert.ok(Math.abs(t.prob - probs[t.id]) < 1e-5);
        const target = a.target.ids[p];
        assert.ok(Math.abs(a.target.prob[r][p] - probs[target]) < 1e-5);
        assert.equal(a.target.rank[r][p], order.findIndex((o) => o[1] === target), `rank ${readout.hook} p${p}`);
      }
    }
    // The last read-out is the real output: its top token is the final prediction with rank 0.
    const last = a.readouts.length - 1;
    for (let p = 0; p < ids.length; p++) {
      assert.equal(a.lens[last][p][0].id, a.target.ids[p]);
      assert.equal(a.target.rank[last][p], 0);
    }
  });

  it('over the lens budget, the lens covers the last positions that fit, identical to the full lens there', async () => {
    const full = await analyze(model, TEXT, { lensK: 3, lensFlops: Infinity });
    assert.equal(full.lensFrom, 0);
    const P = full.tokens.length;
    const R = full.readouts.length;
    const perPosition = R * 2 * cfg.dModel * cfg.vocabSize;
    const part = await analyze(model, TEXT, { lensK: 3, lensFlops: 4.5 * perPosition });
    assert.equal(part.lensFrom, P - 4, 'four positions fit');
    for (let r = 0; r < R; r++) {
      for (let p = 0; p < P; p++) {
        if (p < part.lensFrom) {
          assert.deepEqual(part.lens[r][p], []);
          assert.ok(Number.isNaN(part.target.prob[r][p]));
        } else {
          assert.deepEqual(part.lens[r][p].map((t) => t.id), full.lens[r][p].map((t) => t.id));
          assert.ok(Math.abs(part.target.prob[r][p] - full.target.prob[r][p]) < 1e-6);
          assert.equal(part.target.rank[r][p], full.target.rank[r][p]);
        }
      }
    }
    assert.deepEqual(part.target.ids.slice(0, part.lensFrom), new Array(part.lensFrom).fill(-1));
    assert.deepEqual(part.target.ids.slice(part.lensFrom), full.target.ids.slice(part.lensFrom));
    // At least the last position, whatever the budget.
    assert.equal((await analyze(model, TEXT, { lensFlops: 1 })).lensFrom, P - 1);
  });

  it('keeps the last tokens of a selection longer than the limit and says so', async () => {
    const long = 'x = 1\n'.repeat(40);
    const a = await analyze(model, long, { maxTokens: 10 });
    assert.equal(a.tokens.length, 10);
    assert.ok(a.truncated);
    assert.equal(a.truncated.kept, 10);
    assert.equal(a.truncated.total, model.tokenizer.encode(long).ids.length);
    assert.equal(a.tokens.at(-1)!.end, long.length);
    for (const t of a.tokens) assert.equal(long.slice(t.start, t.end), t.text);
    // Longer than the model's context (32) even without a limit.
    const b = await analyze(model, long);
    assert.equal(b.tokens.length, 32);
  });

  it('cuts a huge selection before tokenizing, with offsets still exact', async () => {
    const huge = 'word '.repeat(200_000); // 1 MB
    const a = await analyze(model, huge, { maxTokens: 8 });
    assert.equal(a.tokens.length, 8);
    assert.equal(a.truncated?.total, undefined);
    for (const t of a.tokens) assert.equal(huge.slice(t.start, t.end), t.text);
    assert.equal(a.tokens.at(-1)!.end, huge.length);
  });

  it('refuses an empty selection clearly', async () => {
    await assert.rejects(analyze(model, ''), /selection is empty/);
  });

  it('stops with a cancellation error when cancelled', async () => {
    await assert.rejects(analyze(model, TEXT, { cancel: { isCancellationRequested: true } }), /cancelled/);
  });
});

describe('analyze on checkpoints that are not healthy (issue 14)', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-analysis-bad-'));
  const models: Model[] = [];
  after(async () => {
    for (const m of models) await m.dispose();
    fs.rmSync(root, { recursive: true, force: true });
  });
  const load = async (dir: string) => {
    const m = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
    models.push(m);
    return m;
  };

  it('a model whose embedding is padded past the tokenizer: padded ids read as <unused N> in the prediction and every lens read-out', async () => {
    const dir = path.join(root, 'padded');
    const { vocab, tokens } = writePaddedLlama(dir, gpt2TokenizerJSON());
    const m = await load(dir);
    assert.equal(m.config.vocabSize, vocab);
    assert.equal(m.tokenizer.vocabSize, tokens);
    const a = await analyze(m, TEXT);
    assert.ok(a.top[0].id >= tokens && a.top[0].id < vocab, `a padded id wins (${a.top[0].id})`);
    assert.equal(a.top[0].text, `<unused ${a.top[0].id}>`);
    const last = a.tokens.length - 1;
    for (const [r, row] of a.lens.entries()) {
      const top = row[last][0];
      assert.ok(top.id >= tokens, `read-out ${r}: a padded id`);
      assert.equal(top.text, `<unused ${top.id}>`);
    }
    assert.equal(a.target.texts[last], `<unused ${a.target.ids[last]}>`);
  });

  it('NaN in a weight: the error names where the values stop being finite and the tensor that holds the NaN', async () => {
    const dir = path.join(root, 'nan');
    writeRandomGpt2(dir, { nLayers: 3, dModel: 24, nHeads: 4, dMlp: 64, nCtx: 32, vocabSize: 50257 }, { seed: 7, std: 0.4, tokenizerJson: gpt2TokenizerJSON() });
    pokeTensor(dir, 'transformer.h.1.mlp.c_proj.weight', (w) => (w[5] = NaN));
    const m = await load(dir);
    await assert.rejects(analyze(m, TEXT), (e: unknown) => {
      assert.ok(e instanceof ResidualError && e.code === 'numeric', String(e));
      assert.match(e.message, /the model produced NaN or Inf logits: the values first stop being finite at blocks\.2\.hook_resid_pre \(position 0, token "def"\), the output of block 1; tensor "transformer\.h\.1\.mlp\.c_proj\.weight" holds NaN \(element 5 of \[64, 24\], model\.safetensors\)/);
      return true;
    });
  });
});
