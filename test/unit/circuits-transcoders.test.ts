/**
 * Transcoder loading: both layouts, both SAELens cfg flavours, the YAML subset, and refusals that name the file.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { loadTranscoders, readEncoderColumns } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeCircuitTracerTranscoders, writeSaeLensTranscoders } from '../../src/engine/circuits/transcoders-write';
import { parseSimpleYaml } from '../../src/engine/circuits/yaml';

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
    assert.throws(() => loadTranscoders(d, { ...cfg, nLayers: 1 }), /skip connection\) is not supported/);
    assert.throws(() => loadTranscoders(path.join(root, 'nothing-here'), cfg), /transcoders folder not found/);
    const ct = path.join(root, 'ct-clt');
    writeCircuitTracerTranscoders(ct, W, { activation: 'relu' });
    fs.appendFileSync(path.join(ct, 'config.yaml'), 'model_kind: cross_layer_transcoder\n');
    assert.throws(() => loadTranscoders(ct, cfg), /config\.yaml: model_kind "cross_layer_transcoder" is not supported/);
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
