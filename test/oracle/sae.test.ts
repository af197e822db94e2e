/**
 * Residual-stream SAEs as a lens (src/engine/sae.ts) against plain loops written from SAELens' definition: the
 * residual from the independent reference forward, norm_in, the b_dec subtraction, the encoder and each activation,
 * then every (position, feature) activation, the FVU and the decoder's logit lists compared with the engine's.
 * Steering from a card uses the decoder row at the SAE's own hook. Bad folders are refused with their file named.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { writeResidualSae, type ResidualSaeWriteOptions, type TranscoderWeights } from '../../src/engine/circuits/transcoders-write';
import type { HookName } from '../../src/engine/hooks';
import { Model } from '../../src/engine/model';
import { referenceForward } from '../../src/engine/reference/gpt2';
import { silenceOrt } from '../../src/engine/runtime/session';
import { activationsOf, decoderLogits, openResidualSaes, readSaeFeatures, saeEncoder, saeWarning, strongestFeatures, topAt } from '../../src/engine/sae';
import { featureVector } from '../../src/engine/steering/vectors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-sae-'));
const SHAPE = { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257 };
const D = SHAPE.dModel;
const F = 48;
const IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 13];
let model: Model;
before(async () => {
  silenceOrt();
  writeRandomGpt2(path.join(root, 'model'), SHAPE, { seed: 5, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
  model = await Model.load(path.join(root, 'model'), { providers: ['cpu'] });
});
after(async () => {
  await model.dispose();
  fs.rmSync(root, { recursive: true, force: true });
});

/** Deterministic values in [-1, 1). */
function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2 * scale;
  });
}

function weights(seed: number, bEnc = 0): TranscoderWeights {
  return {
    wEnc_DF: values(D * F, seed, 0.6),
    bEnc_F: values(F, seed + 1, 0.3).map((v) => v + bEnc),
    wDec_FD: values(F * D, seed + 2, 0.5),
    bDec_D: values(D, seed + 3, 0.4),
    threshold_F: values(F, seed + 4, 0.3).map((v) => Math.abs(v) + 0.1),
    dIn: D,
    dSae: F,
  };
}

/** The residual at `hook` from the independent reference forward. */
function residual(hook: string): Float32Array {
  const ckpt = openCheckpoint(path.join(root, 'model'));
  const W = new Map([...ckpt.tensors].map(([n, e]) => [n, readTensorF32(e)]));
  return referenceForward(ckpt.config, W, IDS).get(hook as HookName)!.data;
}

/** SAELens' forward in plain loops: activations [P][F] and norm_in(x) [P][D]. */
function oracle(w: TranscoderWeights, opts: ResidualSaeWriteOptions): { acts: number[][]; xin: number[][] } {
  const x = residual(opts.hook);
  const acts: number[][] = [];
  const xin: number[][] = [];
  for (let p = 0; p < IDS.length; p++) {
    let v = Array.from(x.subarray(p * D, (p + 1) * D));
    if (opts.normalize === 'constant_norm_rescale') {
      const norm = Math.sqrt(v.reduce((s, a) => s + a * a, 0));
      v = v.map((a) => (a * Math.sqrt(D)) / norm);
    } else if (opts.normalize === 'layer_norm') {
      const mean = v.reduce((s, a) => s + a, 0) / D;
      const std = Math.sqrt(v.reduce((s, a) => s + (a - mean) ** 2, 0) / (D - 1));
      v = v.map((a) => (a - mean) / (std + 1e-5));
    }
    xin.push(v);
    const u = opts.applyBDecToInput ? v.map((a, d) => a - w.bDec_D[d]) : v;
    const pre = Array.from({ length: F }, (_, f) => u.reduce((s, a, d) => s + a * w.wEnc_DF[d * F + f], w.bEnc_F[f]));
    let a: number[];
    if (opts.activation === 'relu') a = pre.map((z) => Math.max(0, z));
    else if (opts.activation === 'jumprelu') a = pre.map((z, f) => (z > w.threshold_F![f] ? Math.max(0, z) : 0));
    else {
      const keep = new Set(pre.map((z, f) => [z, f]).sort((m, n) => n[0] - m[0]).slice(0, opts.k!).map(([, f]) => f));
      a = pre.map((z, f) => (keep.has(f) ? Math.max(0, z) : 0));
    }
    acts.push(a);
  }
  return { acts, xin };
}

function oracleFvu(w: TranscoderWeights, o: { acts: number[][]; xin: number[][] }): number {
  const P = IDS.length;
  const mean = Array.from({ length: D }, (_, d) => o.xin.reduce((s, v) => s + v[d], 0) / P);
  let num = 0;
  let den = 0;
  for (let p = 0; p < P; p++)
    for (let d = 0; d < D; d++) {
      const rec = o.acts[p].reduce((s, a, f) => s + a * w.wDec_FD[f * D + d], w.bDec_D[d]);
      num += (o.xin[p][d] - rec) ** 2;
      den += (o.xin[p][d] - mean[d]) ** 2;
    }
  return num / den;
}

const CASES: { name: string; seed: number; bEnc?: number; opts: ResidualSaeWriteOptions }[] = [
  { name: 'ReLU at resid_post, b_dec subtracted (v6 cfg)', seed: 1, opts: { hook: 'blocks.1.hook_resid_post', activation: 'relu', applyBDecToInput: true } },
  { name: 'JumpReLU at resid_pre, constant_norm_rescale (pre-6 cfg)', seed: 2, bEnc: 0.2, opts: { hook: 'blocks.1.hook_resid_pre', activation: 'jumprelu', applyBDecToInput: false, normalize: 'constant_norm_rescale', cfgVersion: 'pre6' } },
  { name: 'TopK 5 at resid_mid, layer_norm', seed: 3, opts: { hook: 'blocks.0.hook_resid_mid', activation: 'topk', k: 5, applyBDecToInput: true, normalize: 'layer_norm' } },
];

describe('residual-stream SAEs: every activation, the FVU and the logit lists as SAELens defines them', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const dir = path.join(root, `sae-${c.seed}`);
      const w = weights(c.seed, c.bEnc);
      writeResidualSae(dir, w, c.opts);
      const set = openResidualSaes(dir, model.config);
      const layer = Number(/blocks\.(\d+)/.exec(c.opts.hook)![1]);
      assert.deepEqual(set.available, [layer]);
      const sae = set.layers[layer];
      assert.equal(sae.hook, c.opts.hook);
      const enc = saeEncoder(set);
      try {
        const r = await readSaeFeatures(model, sae, enc, IDS);
        const o = oracle(w, c.opts);
        let active = 0;
        for (let f = 0; f < F; f++) {
          const got = activationsOf(r, f);
          for (let p = 0; p < IDS.length; p++) {
            const want = o.acts[p][f];
            if (want !== 0) active++;
            assert.ok(Math.abs(got[p] - want) <= 2e-5 * Math.max(1, Math.abs(want)), `feature ${f} at ${p}: ${got[p]} vs ${want}`);
          }
        }
        assert.ok(active >= IDS.length, `the fixture fires features (${active} active)`);
        assert.deepEqual(r.l0, o.acts.map((a) => a.filter((v) => v !== 0).length));
        const fvu = oracleFvu(w, o);
        assert.ok(Math.abs(r.fvu - fvu) <= 1e-4 * Math.max(1, fvu), `FVU ${r.fvu} vs ${fvu}`);
        assert.equal(r.skipped, 0, 'no BOS in this prompt');
        // A random SAE reconstructs nothing: said, not hidden.
        assert.ok(fvu > 0.5 && saeWarning(sae, r)!.includes(c.opts.hook), saeWarning(sae, r));
        // Per-token tops and the strongest features are orderings of the same numbers.
        const p = IDS.length - 1;
        const want = o.acts[p].map((a, f) => [f, a] as [number, number]).filter(([, a]) => a > 0).sort((m, n) => n[1] - m[1]).slice(0, 4);
        assert.deepEqual(topAt(r, p, 4).map(([f]) => f), want.map(([f]) => f));
        const maxOf = (f: number) => Math.max(...o.acts.map((a) => a[f]));
        const strongest = strongestFeatures(r, 3);
        const wantStrongest = Array.from({ length: F }, (_, f) => f).filter((f) => maxOf(f) > 0).sort((m, n) => maxOf(n) - maxOf(m)).slice(0, 3);
        assert.deepEqual(strongest.map(([f]) => f), wantStrongest);
      } finally {
        await enc.dispose();
      }
    });
  }

  it('the card\'s logit lists are W_dec[f] · W_U over the whole vocabulary; steering uses that row at the SAE\'s hook', () => {
    const dir = path.join(root, 'sae-1');
    const set = openResidualSaes(dir, model.config);
    const sae = set.layers[1];
    const f = 7;
    const ckpt = openCheckpoint(path.join(root, 'model'));
    const U = readTensorF32(ckpt.tensors.get(ckpt.unembedName)!);
    const w = weights(1);
    const z = Array.from({ length: SHAPE.vocabSize }, (_, v) => {
      let s = 0;
      for (let d = 0; d < D; d++) s += w.wDec_FD[f * D + d] * U[v * D + d];
      return s;
    });
    const order = z.map((y, v) => [v, y]).sort((a, b) => b[1] - a[1]);
    const got = decoderLogits(model, sae, f, 5);
    assert.deepEqual(got.top.map(([v]) => v), order.slice(0, 5).map(([v]) => v));
    assert.deepEqual(got.bottom.map(([v]) => v), order.slice(-5).reverse().map(([v]) => v));
    got.top.forEach(([v, y]) => assert.ok(Math.abs(y - z[v]) <= 1e-5, `${y} vs ${z[v]}`));
    // Steering from the card: the row as stored, added where the SAE reads (resid_post here, resid_pre for sae-2).
    const vec = featureVector(dir, 1, f);
    assert.deepEqual([...vec.vector], [...w.wDec_FD.subarray(f * D, (f + 1) * D)]);
    assert.equal(vec.point, 'hook_resid_post');
    assert.equal(featureVector(path.join(root, 'sae-2'), 1, 0).point, 'hook_resid_pre');
    assert.throws(() => decoderLogits(model, sae, F, 5), /no feature 48: the SAE has features 0\.\.47/);
  });

  it('a folder of several layers lists them; each reads its own hook', () => {
    const dir = path.join(root, 'multi');
    writeResidualSae(path.join(dir, 'blocks.0.hook_resid_post'), weights(4), { hook: 'blocks.0.hook_resid_post', activation: 'relu', applyBDecToInput: false });
    writeResidualSae(path.join(dir, 'blocks.1.hook_resid_post'), weights(5), { hook: 'blocks.1.hook_resid_post', activation: 'relu', applyBDecToInput: false });
    const set = openResidualSaes(dir, model.config);
    assert.deepEqual(set.available, [0, 1]);
    assert.deepEqual(set.layers.map((s) => s.hook), ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']);
  });
});

describe('residual-stream SAEs: bad folders are refused, naming the file and the problem', () => {
  const bad = (name: string, opts: Partial<ResidualSaeWriteOptions>, edit: (cfg: Record<string, unknown>) => void, pattern: RegExp, w = weights(9)) => {
    it(name, () => {
      const dir = path.join(root, `bad-${name.replace(/\W+/g, '-')}`);
      writeResidualSae(dir, w, { hook: 'blocks.1.hook_resid_post', activation: 'relu', applyBDecToInput: false, ...opts });
      const cfgFile = path.join(dir, 'cfg.json');
      const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
      edit(cfg);
      fs.writeFileSync(cfgFile, JSON.stringify(cfg));
      assert.throws(
        () => openResidualSaes(dir, model.config),
        (e: Error & { file?: string }) => {
          assert.match(e.message, pattern);
          assert.ok(e.file === cfgFile || e.file === path.join(dir, 'sae_weights.safetensors') || e.file === dir, `names the file: ${e.file}`);
          return true;
        },
      );
    });
  };
  bad('a transcoder', {}, (c) => ((c.metadata as Record<string, unknown>).hook_name_out = 'blocks.1.hook_mlp_out'), /this is a transcoder \(reads blocks\.1\.hook_resid_post, writes blocks\.1\.hook_mlp_out\), not a residual-stream SAE/);
  bad('an MLP-output SAE', { hook: 'blocks.1.hook_mlp_out' }, () => {}, /hook_name "blocks\.1\.hook_mlp_out" is not a residual-stream hook/);
  bad('a layer the model lacks', { hook: 'blocks.5.hook_resid_post' }, () => {}, /an SAE for layer 5, but the model \(.*\) has 2 layers \(0\.\.1\)/);
  bad('another model\'s width', {}, () => {}, /the SAE reads 12 values but the model's d_model is 16: it was made for another model/, { ...weights(9), wEnc_DF: values(12 * F, 1), wDec_FD: values(F * 12, 2), bDec_D: values(12, 3), dIn: 12 });
  bad('a dataset-normalised SAE', {}, (c) => (c.normalize_activations = 'expected_average_only_in'), /expected_average_only_in" needs the dataset's scaling factor/);
  bad('a gated SAE', {}, (c) => (c.architecture = 'gated'), /architecture "gated" is not supported/);
  bad('no hook name', {}, (c) => delete (c.metadata as Record<string, unknown>).hook_name, /cannot tell the layer|"hook_name" is missing/);

  it('a circuit-tracer folder', () => {
    const dir = path.join(root, 'ct');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'config.yaml'), 'model_kind: transcoder_set\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\n');
    fs.writeFileSync(path.join(dir, 'layer_0.safetensors'), '');
    assert.throws(() => openResidualSaes(dir, model.config), /a circuit-tracer folder \(config\.yaml\) holds transcoders, not residual-stream SAEs/);
  });
});
