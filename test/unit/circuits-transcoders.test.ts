/**
 * Transcoder loading: both layouts, both SAELens cfg flavours, the YAML subset, and refusals that name the file;
 * attribution and steering reading every layout variant alike.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { writeSafetensors } from '../../src/engine/checkpoint/write';
import { loadTranscoders, readDecoderInto, readDecoderRows, readEncoderColumns, readRows, readSkip } from '../../src/engine/circuits/transcoders';
import {
  randomCrossLayerWeights,
  randomTranscoderWeights,
  writeCircuitTracerTranscoders,
  writeCrossLayerTranscoder,
  writeSaeLensTranscoders,
} from '../../src/engine/circuits/transcoders-write';
import { parseSimpleYaml } from '../../src/engine/circuits/yaml';
import { featureVector } from '../../src/engine/steering/vectors';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tc-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const cfg = { nLayers: 2, dModel: 8, nHeads: 2, dHead: 4, dMlp: 32, nCtx: 16, vocabSize: 100, lnEps: 1e-5, act: 'gelu_new', name: 't', architecture: 'gpt2' } as ModelConfig;
const W = randomTranscoderWeights(2, 8, 12, { seed: 1 });

describe('transcoder loading', () => {
  it('reads SAELens v6 and pre-6 folders and circuit-tracer folders, with the same encoder columns', () => {
    const a = path.join(root, 'v6');
    const b = path.join(root, 'pre6');
    const c = path.join(root, 'ct');
    writeSaeLensTranscoders(a, W, { activation: 'jumprelu' });
    writeSaeLensTranscoders(b, W, { activation: 'topk', k: 3, cfgVersion: 'pre6' });
    writeCircuitTracerTranscoders(c, W, { activation: 'topk', k: 3 });
    const sa = loadTranscoders(a, cfg);
    const sb = loadTranscoders(b, cfg);
    const sc = loadTranscoders(c, cfg);
    assert.deepEqual([sa.format, sb.format, sc.format], ['saelens', 'saelens', 'circuit-tracer']);
    assert.deepEqual(sa.layers[1].activation, { kind: 'jumprelu' });
    assert.deepEqual(sb.layers[0].activation, { kind: 'topk', k: 3, relu: true });
    assert.deepEqual(sc.layers[0].activation, { kind: 'topk', k: 3, relu: false });
    assert.equal(sc.layers[1].encLayout, 'FD');
    assert.deepEqual(readEncoderColumns(sa.layers[1], [2, 7]), readEncoderColumns(sc.layers[1], [2, 7]));
    const col = readEncoderColumns(sa.layers[1], [7]);
    for (let d = 0; d < 8; d++) assert.equal(col[d], W[1].wEnc_DF[d * 12 + 7]);
  });

  it('refuses with the file named: missing layer, wrong width, unsupported hooks and architectures', () => {
    const d = path.join(root, 'bad');
    writeSaeLensTranscoders(d, W.slice(0, 1), { activation: 'relu' });
    assert.throws(() => loadTranscoders(d, cfg), /no transcoder for layer 1; attribution needs one per layer \(found layers 0\)/);
    assert.throws(() => loadTranscoders(d, { ...cfg, nLayers: 1, dModel: 16 }), /layer_0\/cfg\.json: d_in 8 \/ d_out 8 do not match the model's d_model 16/);
    const cfgFile = path.join(d, 'layer_0', 'cfg.json');
    const j = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    j.metadata.hook_name = 'blocks.0.hook_resid_pre';
    fs.writeFileSync(cfgFile, JSON.stringify(j));
    assert.throws(() => loadTranscoders(d, { ...cfg, nLayers: 1 }), /cfg\.json: input hook "blocks\.0\.hook_resid_pre" is not supported/);
    j.metadata.hook_name = 'blocks.0.ln2.hook_normalized';
    j.architecture = 'skip_transcoder';
    fs.writeFileSync(cfgFile, JSON.stringify(j));
    assert.throws(() => loadTranscoders(d, { ...cfg, nLayers: 1 }), /layer_0\/sae_weights\.safetensors: architecture "skip_transcoder" without a "W_skip" tensor/);
    assert.throws(() => loadTranscoders(path.join(root, 'nothing-here'), cfg), /transcoders folder not found/);
    const ct = path.join(root, 'ct-clt');
    writeCircuitTracerTranscoders(ct, W, { activation: 'relu' });
    fs.appendFileSync(path.join(ct, 'config.yaml'), 'model_kind: cross_layer_transcoder\n');
    assert.throws(() => loadTranscoders(ct, cfg), /ct-clt: no W_enc_<i>\.safetensors files beside config\.yaml/);
    fs.appendFileSync(path.join(ct, 'config.yaml'), 'model_kind: crosscoder\n');
    assert.throws(() => loadTranscoders(ct, cfg), /config\.yaml: model_kind "crosscoder" is not supported \("transcoder_set" or "cross_layer_transcoder"\)/);
  });

  it('parses the YAML subset circuit-tracer configs use', () => {
    const y = parseSimpleYaml(
      ['model_kind: transcoder_set # per layer', 'model_name: "google/gemma-2-2b"', 'feature_input_hook: ln2.hook_normalized', 'k: 64', 'transcoders:', '  - layer_0.safetensors', "  - 'layer_1.safetensors'", 'scan: [a, 2]'].join('\n'),
      'config.yaml',
    );
    assert.deepEqual(y, {
      model_kind: 'transcoder_set',
      model_name: 'google/gemma-2-2b',
      feature_input_hook: 'ln2.hook_normalized',
      k: 64,
      transcoders: ['layer_0.safetensors', 'layer_1.safetensors'],
      scan: ['a', 2],
    });
    assert.throws(() => parseSimpleYaml('a:\n  b: 1', 'c.yaml'), /c\.yaml: line 2: nested mappings/);
  });
});

describe('circuit-tracer configs naming their files on the Hub', () => {
  it('hf://owner/name/file resolves to the downloaded file in the folder; a missing one says how to fetch it', () => {
    const dir = path.join(root, 'ct-hf');
    writeCircuitTracerTranscoders(dir, W, { activation: 'relu', k: 0, input: 'mlp.hook_in' });
    const yaml = fs.readFileSync(path.join(dir, 'config.yaml'), 'utf8').replace('feature_output_hook: hook_mlp_out', 'feature_output_hook: mlp.hook_out');
    fs.writeFileSync(path.join(dir, 'config.yaml'), yaml + 'transcoders:\n  - hf://mntss/transcoder-test/layer_0.safetensors\n  - hf://mntss/transcoder-test/layer_1.safetensors\n');
    const set = loadTranscoders(dir, cfg);
    assert.equal(set.layers.length, 2);
    assert.equal(set.layers[1].input, 'mlp.hook_in');
    fs.rmSync(path.join(dir, 'layer_1.safetensors'));
    assert.throws(() => loadTranscoders(dir, cfg), /is on the Hugging Face Hub and not in this folder; fetch the transcoder set with "Residual: Download Model…"/);
    fs.writeFileSync(path.join(dir, 'config.yaml'), yaml + 'transcoders:\n  - hf://mntss/transcoder-test/../../etc/passwd\n');
    assert.throws(() => loadTranscoders(dir, cfg), /outside the transcoder folder/);
  });
});

/**
 * Attribution (`loadTranscoders`) and steering (`featureVector`) read transcoder folders through one loader: every
 * layout variant either accepted before is accepted by both and gives the same decoder row, and a bad folder gives
 * both the same message.
 */
describe('one loader for attribution and steering', () => {
  const shared = path.join(root, 'shared');
  const cfg1 = { ...cfg, nLayers: 1 } as ModelConfig;
  /** The message `f` throws (fails the test if it returns). */
  const messageOf = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      return (e as Error).message;
    }
    assert.fail('expected an error');
  };
  const variants: { name: string; model: ModelConfig; write: (dir: string) => void }[] = [
    { name: 'SAELens v6 subfolders', model: cfg, write: (d) => writeSaeLensTranscoders(d, W, { activation: 'jumprelu' }) },
    { name: 'SAELens pre-6 subfolders', model: cfg, write: (d) => writeSaeLensTranscoders(d, W, { activation: 'topk', k: 3, cfgVersion: 'pre6' }) },
    { name: 'SAELens, F16 weights', model: cfg, write: (d) => writeSaeLensTranscoders(d, W, { activation: 'relu', dtype: 'F16' }) },
    {
      name: 'SAELens subfolders with sae.safetensors',
      model: cfg,
      write: (d) => {
        writeSaeLensTranscoders(d, W, { activation: 'relu' });
        for (const l of [0, 1]) fs.renameSync(path.join(d, `layer_${l}`, 'sae_weights.safetensors'), path.join(d, `layer_${l}`, 'sae.safetensors'));
      },
    },
    {
      name: 'one SAELens folder',
      model: cfg1,
      write: (d) => {
        writeSaeLensTranscoders(`${d}.tmp`, W.slice(0, 1), { activation: 'relu' });
        fs.renameSync(path.join(`${d}.tmp`, 'layer_0'), d);
        fs.rmSync(`${d}.tmp`, { recursive: true });
      },
    },
    { name: 'circuit-tracer layer_<i> files', model: cfg, write: (d) => writeCircuitTracerTranscoders(d, W, { activation: 'jumprelu' }) },
    {
      name: 'circuit-tracer, files listed in config.yaml',
      model: cfg,
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        fs.renameSync(path.join(d, 'layer_0.safetensors'), path.join(d, 'first.safetensors'));
        fs.renameSync(path.join(d, 'layer_1.safetensors'), path.join(d, 'second.safetensors'));
        fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - first.safetensors\n  - "second.safetensors"\n');
      },
    },
    {
      name: 'circuit-tracer, hf:// files downloaded',
      model: cfg,
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - hf://mntss/tc/layer_0.safetensors\n  - hf://mntss/tc/layer_1.safetensors\n');
      },
    },
    {
      name: 'circuit-tracer, old format ({id, layer, filepath}, no model_kind)',
      model: cfg,
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        const yaml = fs.readFileSync(path.join(d, 'config.yaml'), 'utf8').replace('model_kind: transcoder_set\n', '');
        const list = 'transcoders:\n  - id: b\n    layer: 1\n    filepath: layer_1.safetensors\n  - id: a\n    layer: 0\n    filepath: layer_0.safetensors\n';
        fs.writeFileSync(path.join(d, 'config.yaml'), yaml + list);
      },
    },
  ];
  for (const v of variants) {
    it(`${v.name}: both accept it and read the same decoder rows`, () => {
      const dir = path.join(shared, v.name.replace(/[^a-z0-9]+/gi, '-'));
      v.write(dir);
      const set = loadTranscoders(dir, v.model);
      for (let l = 0; l < v.model.nLayers; l++) {
        for (const i of [0, 5, 11]) {
          const steer = featureVector(dir, l, i);
          assert.deepEqual(steer.vector, readRows(set.layers[l].wDec, [i]));
          assert.equal(steer.provenance.file, set.layers[l].wDec.file);
          if (!v.name.includes('F16')) assert.deepEqual(steer.vector, W[l].wDec_FD.subarray(i * 8, (i + 1) * 8));
        }
      }
      assert.match(messageOf(() => featureVector(dir, 0, 12)), /feature 12 does not exist: the layer-0 transcoder has features 0\.\.11/);
    });
  }

  /** Each writes a folder whose layer 1 (or whole layout) is at fault, and the message both must give. */
  const faults: { name: string; write: (dir: string) => void; message: RegExp }[] = [
    { name: 'no folder', write: () => undefined, message: /transcoders folder not found/ },
    { name: 'a file, not a folder', write: (d) => fs.writeFileSync(d, 'x'), message: /transcoders folder is a regular file, not a folder/ },
    { name: 'an empty folder', write: (d) => fs.mkdirSync(d), message: /no transcoders found: expected subfolders with cfg\.json/ },
    {
      name: 'cfg.json not JSON',
      write: (d) => {
        writeSaeLensTranscoders(d, W, { activation: 'relu' });
        fs.writeFileSync(path.join(d, 'layer_1', 'cfg.json'), '{"d_in": 8,');
      },
      message: /layer_1\/cfg\.json: cannot read JSON/,
    },
    {
      name: 'cfg.json without a layer',
      write: (d) => {
        writeSaeLensTranscoders(d, W, { activation: 'relu' });
        fs.writeFileSync(path.join(d, 'layer_1', 'cfg.json'), JSON.stringify({ d_in: 8, d_sae: 12 }));
      },
      message: /layer_1\/cfg\.json: cannot tell the layer: no hook_name like "blocks\.<l>\.…" and no hook_layer/,
    },
    {
      name: 'two subfolders for one layer',
      write: (d) => {
        writeSaeLensTranscoders(d, W, { activation: 'relu' });
        fs.cpSync(path.join(d, 'layer_1'), path.join(d, 'layer_1_copy'), { recursive: true });
      },
      message: /layer 1 has two transcoders \(.*layer_1\/cfg\.json and .*layer_1_copy\/cfg\.json\)/,
    },
    {
      name: 'a subfolder without weights',
      write: (d) => {
        writeSaeLensTranscoders(d, W, { activation: 'relu' });
        fs.rmSync(path.join(d, 'layer_1', 'sae_weights.safetensors'));
      },
      message: /layer_1: sae_weights\.safetensors not found beside cfg\.json/,
    },
    {
      name: 'weights without W_dec',
      write: (d) => {
        writeSaeLensTranscoders(d, W, { activation: 'relu' });
        writeSafetensors(path.join(d, 'layer_1', 'sae_weights.safetensors'), [{ name: 'W_enc', shape: [8, 12], data: W[1].wEnc_DF }], 'F32');
      },
      message: /layer_1\/sae_weights\.safetensors: tensor "W_dec" is missing \(has W_enc\)/,
    },
    {
      name: 'W_dec and W_enc of different widths',
      write: (d) => {
        writeSaeLensTranscoders(d, W, { activation: 'relu' });
        const w = { ...W[1], dSae: 6, wDec_FD: W[1].wDec_FD.subarray(0, 48) };
        writeSafetensors(path.join(d, 'layer_1', 'sae_weights.safetensors'), [
          { name: 'W_enc', shape: [8, 12], data: w.wEnc_DF },
          { name: 'b_enc', shape: [12], data: w.bEnc_F },
          { name: 'W_dec', shape: [6, 8], data: w.wDec_FD },
          { name: 'b_dec', shape: [8], data: w.bDec_D },
        ], 'F32');
      },
      message: /dictionary sizes disagree: W_enc \[8, 12\], W_dec \[6, 8\], b_enc \[12\]/,
    },
    {
      name: 'a circuit-tracer file in the SAELens orientation',
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        writeSafetensors(path.join(d, 'layer_1.safetensors'), [
          { name: 'W_enc', shape: [8, 12], data: W[1].wEnc_DF },
          { name: 'W_dec', shape: [12, 8], data: W[1].wDec_FD },
          { name: 'b_enc', shape: [12], data: W[1].bEnc_F },
          { name: 'b_dec', shape: [8], data: W[1].bDec_D },
        ], 'F32');
      },
      message: /layer_1\.safetensors: dictionary sizes disagree: W_enc \[8, 12\], W_dec \[12, 8\]/,
    },
    {
      name: 'a truncated weights file',
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        const f = path.join(d, 'layer_1.safetensors');
        fs.writeFileSync(f, new Uint8Array(fs.readFileSync(f).subarray(0, 20)));
      },
      message: /layer_1\.safetensors: .*/,
    },
    {
      name: 'a cross-layer transcoder without its decoder for layer 1',
      write: (d) => {
        writeCrossLayerTranscoder(d, randomCrossLayerWeights(2, 8, 12, { seed: 4 }), { activation: 'relu' });
        fs.rmSync(path.join(d, 'W_dec_1.safetensors'));
      },
      message: /W_dec_1\.safetensors is missing beside W_enc_1\.safetensors/,
    },
    {
      name: 'a cross-layer transcoder with a gap in its layers',
      write: (d) => {
        writeCrossLayerTranscoder(d, randomCrossLayerWeights(3, 8, 12, { seed: 4 }), { activation: 'relu' });
        for (const f of ['W_enc_1.safetensors', 'W_dec_1.safetensors']) fs.rmSync(path.join(d, f));
      },
      message: /W_enc_1\.safetensors is missing: a cross-layer transcoder of 2 layers has W_enc_0 … W_enc_1/,
    },
    {
      name: 'a cross-layer decoder writing the wrong number of layers',
      write: (d) => {
        const w = randomCrossLayerWeights(2, 8, 12, { seed: 4 });
        w[1] = { ...w[1], outLayers: 2, wDec_FKD: new Float32Array(12 * 2 * 8) };
        writeCrossLayerTranscoder(d, w, { activation: 'relu' });
      },
      message: /W_dec_1\.safetensors: W_dec_1 \[12, 2, 8\] writes 2 layers; in a cross-layer transcoder of 2 layers \(W_enc_0 … W_enc_1\), layer 1 writes layers 1\.\.1 \(1\)/,
    },
    {
      name: 'config.yaml without layer files',
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        for (const l of [0, 1]) fs.rmSync(path.join(d, `layer_${l}.safetensors`));
      },
      message: /no layer_<i>\.safetensors files beside config\.yaml/,
    },
    {
      name: 'a layer listed twice',
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - filepath: layer_0.safetensors\n    layer: 1\n  - filepath: layer_1.safetensors\n    layer: 1\n');
      },
      message: /config\.yaml: layer 1 is listed twice/,
    },
    {
      name: 'a listed file that is not there',
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - layer_0.safetensors\n  - elsewhere.safetensors\n');
      },
      message: /elsewhere\.safetensors: weights file not found/,
    },
    {
      name: 'an hf:// file not downloaded',
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - hf://mntss/tc/layer_0.safetensors\n  - hf://mntss/tc/sub/layer_1.safetensors\n');
      },
      message: /config\.yaml: "hf:\/\/mntss\/tc\/sub\/layer_1\.safetensors" is on the Hugging Face Hub and not in this folder/,
    },
    {
      name: 'an hf:// path outside the folder',
      write: (d) => {
        writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
        fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - hf://mntss/tc/layer_0.safetensors\n  - hf://mntss/tc/../../x.safetensors\n');
      },
      message: /config\.yaml: transcoders\[1\] "hf:\/\/mntss\/tc\/\.\.\/\.\.\/x\.safetensors" points outside the transcoder folder/,
    },
  ];
  for (const f of faults) {
    it(`${f.name}: both refuse it with the same message`, () => {
      const dir = path.join(shared, `bad-${f.name.replace(/[^a-z0-9]+/gi, '-')}`);
      f.write(dir);
      const attribution = messageOf(() => loadTranscoders(dir, cfg));
      const steering = messageOf(() => featureVector(dir, 1, 0));
      assert.match(attribution, f.message);
      assert.equal(steering, attribution);
    });
  }

  it('what only attribution needs (hooks it reads, every layer) refuses with attribution named', () => {
    // Steering adds a decoder row; attribution also encodes, so it needs the input hook and the activation.
    const sae = path.join(shared, 'resid-sae');
    writeSaeLensTranscoders(sae, W, { activation: 'relu' });
    for (const l of [0, 1]) {
      const f = path.join(sae, `layer_${l}`, 'cfg.json');
      fs.writeFileSync(f, fs.readFileSync(f, 'utf8').replace('ln2.hook_normalized', 'hook_resid_pre'));
    }
    assert.equal(featureVector(sae, 1, 2).vector.length, 8);
    assert.match(messageOf(() => loadTranscoders(sae, cfg)), /input hook "blocks\.0\.hook_resid_pre" is not supported; transcoders must read/);
    const skip = path.join(shared, 'skip');
    writeCircuitTracerTranscoders(skip, W, { activation: 'relu' });
    writeSafetensors(path.join(skip, 'layer_0.safetensors'), [
      { name: 'W_enc', shape: [12, 8], data: new Float32Array(96) },
      { name: 'W_dec', shape: [12, 8], data: W[0].wDec_FD },
      { name: 'b_enc', shape: [12], data: W[0].bEnc_F },
      { name: 'b_dec', shape: [8], data: W[0].bDec_D },
      { name: 'W_skip', shape: [8, 8], data: new Float32Array(64) },
    ], 'F32');
    assert.deepEqual(featureVector(skip, 0, 3).vector, W[0].wDec_FD.subarray(24, 32));
    // A skip transcoder loads for attribution too (its path is carried, test/oracle/crosslayer.test.ts).
    assert.equal(loadTranscoders(skip, cfg).layers[0].skip?.name, 'W_skip');
    const partial = path.join(shared, 'partial');
    writeSaeLensTranscoders(partial, W.slice(0, 1), { activation: 'relu' });
    assert.match(messageOf(() => featureVector(partial, 1, 0)), /no transcoder for layer 1 \(found layers 0\)/);
    assert.match(messageOf(() => loadTranscoders(partial, cfg)), /no transcoder for layer 1; attribution needs one per layer \(found layers 0\)/);
  });
});

describe('cross-layer and skip transcoders: loading and refusals', () => {
  const dir = (name: string) => path.join(root, 'clt', name);
  const clt = randomCrossLayerWeights(2, 8, 12, { seed: 9 });

  it('a CLT: layer l writes layers l..L−1; its encoder columns and every decoder row are read as stored', () => {
    const d = dir('ok');
    writeCrossLayerTranscoder(d, clt, { activation: 'jumprelu' });
    const set = loadTranscoders(d, cfg);
    assert.equal(set.kind, 'cross-layer');
    assert.deepEqual(set.layers.map((t) => [t.outLayers, t.wDec.name, t.wEnc.name, t.bDec.name, t.threshold?.name]), [
      [2, 'W_dec_0', 'W_enc_0', 'b_dec_0', 'threshold_0'],
      [1, 'W_dec_1', 'W_enc_1', 'b_dec_1', 'threshold_1'],
    ]);
    // Feature 5 of layer 0: its row into layer 1 is W_dec_0[5, 1, :].
    assert.deepEqual(readDecoderInto(set.layers[0], [5, 2], 1), Float32Array.from([...clt[0].wDec_FKD.subarray((5 * 2 + 1) * 8, (5 * 2 + 2) * 8), ...clt[0].wDec_FKD.subarray((2 * 2 + 1) * 8, (2 * 2 + 2) * 8)]));
    assert.deepEqual(readDecoderRows(set.layers[0], [5]), clt[0].wDec_FKD.subarray(5 * 2 * 8, 6 * 2 * 8), 'a whole row: every layer it writes');
    assert.throws(() => readDecoderInto(set.layers[0], [12], 1), /feature 12 is outside "W_dec_0" \[12, 2, 8\]/);
    // NaN in what a feature writes into a later layer is named by feature, layer offset and element.
    const nan = dir('nan');
    const broken = clt.map((w) => ({ ...w, wDec_FKD: Float32Array.from(w.wDec_FKD) }));
    broken[0].wDec_FKD[(3 * 2 + 1) * 8 + 2] = NaN;
    writeCrossLayerTranscoder(nan, broken, { activation: 'relu' });
    const nanSet = loadTranscoders(nan, cfg);
    assert.equal(readDecoderInto(nanSet.layers[0], [3], 0).length, 8, 'its write into its own layer is finite');
    assert.throws(() => readDecoderInto(nanSet.layers[0], [3], 1), /layer 0 transcoder: tensor "W_dec_0" \[12, 2, 8\] holds NaN at \[3, 1, 2\]/);
    assert.deepEqual(readEncoderColumns(set.layers[1], [3]), Float32Array.from({ length: 8 }, (_, i) => clt[1].wEnc_DF[i * 12 + 3]));
    // Steering takes its write into its own layer, from the decoder file.
    const v = featureVector(d, 0, 5);
    assert.deepEqual(v.vector, clt[0].wDec_FKD.subarray(5 * 2 * 8, (5 * 2 + 1) * 8));
    assert.equal(v.provenance.file, path.join(d, 'W_dec_0.safetensors'));
    // Listed in config.yaml (hf:// paths after a download) reads the same.
    fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n' + ['W_enc_0', 'W_dec_0', 'W_enc_1', 'W_dec_1'].map((f) => `  - hf://mntss/clt/${f}.safetensors\n`).join(''));
    assert.deepEqual(loadTranscoders(d, cfg).layers.map((t) => t.outLayers), [2, 1]);
  });

  it('refuses a CLT whose layer count or width is not the model\'s, a listed file that is not a CLT file, a skip tensor in it', () => {
    const three = dir('three');
    writeCrossLayerTranscoder(three, randomCrossLayerWeights(3, 8, 12, { seed: 2 }), { activation: 'relu' });
    assert.throws(
      () => loadTranscoders(three, cfg),
      /three\/config\.yaml: a cross-layer transcoder of 3 layers \(W_enc_0 … W_enc_2\) for a 2-layer model \(t\); its features write the MLP outputs of 3 layers/,
    );
    const wide = dir('wide');
    writeCrossLayerTranscoder(wide, randomCrossLayerWeights(2, 16, 12, { seed: 2 }), { activation: 'relu' });
    assert.throws(() => loadTranscoders(wide, cfg), /W_enc_0\.safetensors: d_in 16 \/ d_out 16 do not match the model's d_model 8/);
    const listed = dir('listed');
    writeCrossLayerTranscoder(listed, clt, { activation: 'relu' });
    fs.appendFileSync(path.join(listed, 'config.yaml'), 'transcoders:\n  - W_enc_0.safetensors\n  - layer_1.safetensors\n');
    assert.throws(() => loadTranscoders(listed, cfg), /config\.yaml: "layer_1\.safetensors" in the transcoders list is not a W_enc_<i> or W_dec_<i> \.safetensors file/);
    const noBias = dir('no-bias');
    writeCrossLayerTranscoder(noBias, clt, { activation: 'relu' });
    writeSafetensors(path.join(noBias, 'W_enc_1.safetensors'), [{ name: 'W_enc_1', shape: [12, 8], data: new Float32Array(96) }, { name: 'b_dec_1', shape: [8], data: new Float32Array(8) }], 'F32');
    assert.throws(() => loadTranscoders(noBias, cfg), /W_enc_1\.safetensors: tensor "b_enc_1" is missing/);
    writeSafetensors(
      path.join(noBias, 'W_enc_1.safetensors'),
      [
        { name: 'W_enc_1', shape: [12, 8], data: new Float32Array(96) },
        { name: 'b_enc_1', shape: [12], data: new Float32Array(12) },
        { name: 'b_dec_1', shape: [8], data: new Float32Array(8) },
        { name: 'W_skip_1', shape: [8, 8], data: new Float32Array(64) },
      ],
      'F32',
    );
    assert.throws(() => loadTranscoders(noBias, cfg), /tensor "W_skip_1": a skip connection in a cross-layer transcoder is not read/);
  });

  it('a skip transcoder: W_skip [d_out, d_in] read in both layouts; a wrong shape, a missing W_skip and NaN are refused', () => {
    const Ws = randomTranscoderWeights(2, 8, 12, { seed: 3 }).map((w, l) => ({ ...w, wSkip_DD: Float32Array.from({ length: 64 }, (_, i) => i * 0.01 + l) }));
    const sl = dir('skip-saelens');
    writeSaeLensTranscoders(sl, Ws, { activation: 'jumprelu' });
    const set = loadTranscoders(sl, cfg);
    assert.equal(JSON.parse(fs.readFileSync(path.join(sl, 'layer_1', 'cfg.json'), 'utf8')).architecture, 'jumprelu_skip_transcoder');
    assert.deepEqual(set.layers.map((t) => t.activation.kind), ['jumprelu', 'jumprelu']);
    assert.deepEqual(readSkip(set.layers[1]), Ws[1].wSkip_DD);
    const ct = dir('skip-ct');
    writeCircuitTracerTranscoders(ct, Ws, { activation: 'relu' });
    assert.deepEqual(readSkip(loadTranscoders(ct, cfg).layers[0]), Ws[0].wSkip_DD);
    // A SAELens folder whose architecture has no skip ignores a stray W_skip, as SAELens does.
    const plain = JSON.parse(fs.readFileSync(path.join(sl, 'layer_0', 'cfg.json'), 'utf8'));
    fs.writeFileSync(path.join(sl, 'layer_0', 'cfg.json'), JSON.stringify({ ...plain, architecture: 'jumprelu_transcoder' }));
    assert.equal(loadTranscoders(sl, cfg).layers[0].skip, undefined);
    // Layer 1 rewritten with the given W_skip.
    const withSkip = (shape: number[], data: Float32Array) =>
      writeSafetensors(
        path.join(ct, 'layer_1.safetensors'),
        [
          { name: 'W_enc', shape: [12, 8], data: new Float32Array(96) },
          { name: 'W_dec', shape: [12, 8], data: Ws[1].wDec_FD },
          { name: 'b_enc', shape: [12], data: Ws[1].bEnc_F },
          { name: 'b_dec', shape: [8], data: Ws[1].bDec_D },
          { name: 'W_skip', shape, data },
        ],
        'F32',
      );
    withSkip([8, 4], new Float32Array(32));
    assert.throws(() => loadTranscoders(ct, cfg), /layer_1\.safetensors: W_skip should be \[d_out, d_in\] = \[8, 8\], is \[8, 4\]/);
    const nan = new Float32Array(64);
    nan[9] = NaN;
    withSkip([8, 8], nan);
    assert.throws(() => readSkip(loadTranscoders(ct, cfg).layers[1]), /layer 1 transcoder: tensor "W_skip" \[8, 8\] holds NaN at \[1, 1\]/);
  });
});
