/**
 * The input-convention check of attribution graphs (reconstruction.ts), against plain loops. The fixture's
 * transcoders are its own MLPs (a ReLU GPT-2: W_enc = c_fc, W_dec = c_proj), so read at `mlp.hook_in` they
 * reconstruct exactly; the same files declaring `ln2.hook_normalized` (before ln_2's gain and bias, which are made
 * large) are the wrong convention. The FVU per layer is computed here from the reference forward's hooks, and the
 * graph must give the same numbers, try the other inputs and name `mlp.hook_in` as the one that fits.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readSafetensorsHeader, readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { writeSafetensors } from '../../src/engine/checkpoint/write';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { referenceForward } from '../../src/engine/reference/gpt2';
import { silenceOrt } from '../../src/engine/runtime/session';
import { Attributor } from '../../src/engine/circuits/attribution';
import { toGraphJson } from '../../src/engine/circuits/graph-json';
import { pruneGraph } from '../../src/engine/circuits/prune';
import { fractionUnexplained, FVU_LIMIT, poorReconstruction, reconstructionWarning } from '../../src/engine/circuits/reconstruction';
import { loadTranscoders } from '../../src/engine/circuits/transcoders';
import { writeSaeLensTranscoders, type TranscoderWeights } from '../../src/engine/circuits/transcoders-write';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-recon-'));
const SHAPE = { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257, act: 'relu' as const };
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931];
const cleanup: (() => Promise<void>)[] = [];
before(() => silenceOrt());
after(async () => {
  for (const c of cleanup) await c();
  fs.rmSync(root, { recursive: true, force: true });
});

/** A ReLU GPT-2 whose ln_2 biases are large, so the two conventions differ by much. */
function model(): string {
  const dir = path.join(root, 'model');
  if (fs.existsSync(dir)) return dir;
  writeRandomGpt2(dir, SHAPE, { seed: 11, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
  const file = path.join(dir, 'model.safetensors');
  const tensors = readSafetensorsHeader(file).entries.map((e) => ({ name: e.name, shape: e.shape, data: readTensorF32(e) }));
  for (const t of tensors) if (/ln_2\.bias$/.test(t.name)) t.data = Float32Array.from(t.data, (_, d) => 2 * Math.sin(3.1 * d + 1));
  writeSafetensors(file, tensors, 'F32');
  return dir;
}

/** Each layer's MLP as a transcoder (exact when it reads the MLP's real input). */
function mlpAsTranscoders(): TranscoderWeights[] {
  const ckpt = openCheckpoint(model());
  const get = (n: string) => readTensorF32(ckpt.tensors.get(n)!);
  return Array.from({ length: SHAPE.nLayers }, (_, l) => ({
    wEnc_DF: get(`h.${l}.mlp.c_fc.weight`),
    bEnc_F: get(`h.${l}.mlp.c_fc.bias`),
    wDec_FD: get(`h.${l}.mlp.c_proj.weight`),
    bDec_D: get(`h.${l}.mlp.c_proj.bias`),
    dIn: SHAPE.dModel,
    dSae: SHAPE.dMlp,
  }));
}

/** FVU per layer of the MLP-as-transcoder reading `input`, in plain loops on the reference forward. */
function oracleFvu(input: 'ln2.hook_normalized' | 'mlp.hook_in'): number[] {
  const ckpt = openCheckpoint(model());
  const W = new Map([...ckpt.tensors].map(([n, e]) => [n, readTensorF32(e)]));
  const ref = referenceForward(ckpt.config, W, IDS);
  const { dModel: D, dMlp: M } = SHAPE;
  const P = IDS.length;
  return Array.from({ length: SHAPE.nLayers }, (_, l) => {
    const xhat = ref.get(`blocks.${l}.ln2.hook_normalized` as HookName)!.data;
    const y = ref.get(`blocks.${l}.hook_mlp_out` as HookName)!.data;
    const [g, b, wi, bi, wo, bo] = ['ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias'].map((n) => W.get(`h.${l}.${n}`)!);
    let num = 0;
    let den = 0;
    const mean = new Float64Array(D);
    for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) mean[d] += y[p * D + d] / P;
    for (let p = 0; p < P; p++) {
      const x = Array.from({ length: D }, (_, d) => (input === 'mlp.hook_in' ? xhat[p * D + d] * g[d] + b[d] : xhat[p * D + d]));
      const h = Array.from({ length: M }, (_, m) => Math.max(0, x.reduce((s, v, d) => s + v * wi[d * M + m], bi[m])));
      for (let d = 0; d < D; d++) {
        const yhat = h.reduce((s, v, m) => s + v * wo[m * D + d], bo[d]);
        num += (y[p * D + d] - yhat) ** 2;
        den += (y[p * D + d] - mean[d]) ** 2;
      }
    }
    return num / den;
  });
}

async function graphWith(input: 'ln2.hook_normalized' | 'mlp.hook_in', metricsFvu?: number) {
  const dir = path.join(root, `tc-${input}-${metricsFvu ?? 'none'}`);
  writeSaeLensTranscoders(dir, mlpAsTranscoders(), { activation: 'relu', input });
  if (metricsFvu !== undefined) {
    for (let l = 0; l < SHAPE.nLayers; l++) {
      const cfgFile = path.join(dir, fs.readdirSync(dir).sort()[l], 'cfg.json');
      fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), metrics: { fvu: metricsFvu } }));
    }
  }
  const m = await Model.load(model(), { providers: ['cpu'] });
  const attributor = new Attributor(m, loadTranscoders(dir, m.config));
  cleanup.push(async () => {
    await attributor.dispose();
    await m.dispose();
  });
  return attributor.attribute(IDS, { maxFeatureNodes: 40 });
}

describe('reconstruction: each layer\'s FVU on the prompt, and the input convention checked on the data', () => {
  it('the right input: FVU as the plain loops give it (≈ 0: the transcoder is the MLP), nothing else tried', async () => {
    const g = await graphWith('mlp.hook_in');
    const want = oracleFvu('mlp.hook_in');
    const r = g.reconstruction!;
    assert.equal(r.input, 'mlp.hook_in');
    r.fvu.forEach((x, l) => assert.ok(Math.abs(x - want[l]) <= 1e-5, `layer ${l}: ${x} vs ${want[l]}`));
    assert.ok(r.fvu.every((x) => x < 1e-6), `exact reconstruction: ${r.fvu}`);
    assert.equal(r.alternatives, undefined);
    assert.equal(reconstructionWarning(r), undefined);
  });

  it('the wrong input: FVU as the plain loops give it, above the limit; the other inputs are tried and mlp.hook_in is named', async () => {
    const g = await graphWith('ln2.hook_normalized');
    const wrong = oracleFvu('ln2.hook_normalized');
    const right = oracleFvu('mlp.hook_in');
    const r = g.reconstruction!;
    r.fvu.forEach((x, l) => assert.ok(Math.abs(x - wrong[l]) <= 1e-4 * Math.max(1, wrong[l]), `layer ${l}: ${x} vs ${wrong[l]}`));
    assert.ok(wrong.some((x) => x > FVU_LIMIT), `the fixture's wrong convention is poor: ${wrong}`);
    const alt = r.alternatives!.find((a) => a.input === 'mlp.hook_in')!;
    alt.fvu.forEach((x, l) => assert.ok(Math.abs(x - right[l]) <= 1e-5, `mlp.hook_in layer ${l}: ${x} vs ${right[l]}`));
    assert.deepEqual(r.alternatives!.map((a) => a.input).sort(), ['hook_resid_mid', 'mlp.hook_in']);
    assert.equal(r.better, 'mlp.hook_in');
    assert.match(reconstructionWarning(r)!, /^layer \d's transcoder reconstructs its MLP output poorly on this prompt: FVU \d+\.\d\d reading blocks\.\d\.ln2\.hook_normalized, 0\.00 reading blocks\.\d\.mlp\.hook_in: the set was most likely trained on mlp\.hook_in/);
    const json = toGraphJson(g, pruneGraph(g), { slug: 's', scan: 'x', promptTokens: IDS.map(String), prompt: 'p', tokenText: String, nodeThreshold: 0.8, edgeThreshold: 0.98 });
    const meta = json.metadata.reconstruction as { input_hook: string; fvu: number[]; better_input_hook: string };
    assert.equal(meta.input_hook, 'ln2.hook_normalized');
    assert.equal(meta.better_input_hook, 'mlp.hook_in');
    assert.equal(meta.fvu.length, SHAPE.nLayers);
  });

  it('a set that reports its own FVU: a prompt far worse than the report is checked, even under the limit', async () => {
    const g = await graphWith('mlp.hook_in', 0);
    assert.deepEqual(g.reconstruction!.reported, [0, 0]);
    assert.equal(g.reconstruction!.alternatives, undefined, 'exact reconstruction: nothing to check');
    assert.equal(poorReconstruction(0.3, 0.02), true, '0.3 against a report of 0.02');
    assert.equal(poorReconstruction(0.2, 0.07), false, '0.2 against a report of 0.07: one prompt varies that much');
    assert.equal(poorReconstruction(0.6), true);
    assert.equal(poorReconstruction(NaN), true);
    assert.equal(
      reconstructionWarning({ input: 'ln2.hook_normalized', fvu: [0.1, 0.4], reported: [0.08, 0.05], skipped: 0 }),
      "layer 1's transcoder reconstructs its MLP output poorly on this prompt: FVU 0.40 (the set reports 0.05) reading blocks.1.ln2.hook_normalized; no other input hook fits better, so the transcoders may not match this model (or this prompt is far from their training data)",
    );
  });

  it('fractionUnexplained: Σ‖error‖² / Σ‖y − mean‖² over the counted positions', () => {
    const y = [1, 2, 3, 6, 100, 100]; // P = 3, D = 2
    const err = [0.5, 0, 0, 1, 50, 50];
    // Positions 1 and 2 only: mean (51.5, 53).
    const den = (3 - 51.5) ** 2 + (6 - 53) ** 2 + (100 - 51.5) ** 2 + (100 - 53) ** 2;
    assert.ok(Math.abs(fractionUnexplained(y, err, 3, 2, 1) - (1 + 2500 + 2500) / den) < 1e-12);
    assert.equal(fractionUnexplained([3, 4], [3, 4], 1, 2), 1, 'one position: its squared norm is the variance');
  });
});
