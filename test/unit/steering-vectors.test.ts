/**
 * Steering vectors without a model: the pairs format, saved vector files (round trip and every bad input),
 * transcoder decoder rows in both layouts, and the pure helpers (positions, sampling, KL, loss).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { writeSafetensors } from '../../src/engine/checkpoint/write';
import { mulberry32 } from '../../src/engine/checkpoint/random';
import type { SteeringVector } from '../../src/engine/results';
import { klDivergence, logSoftmax } from '../../src/engine/numeric';
import { meanNextTokenLoss, parsePositions, sampleToken, steerAdds } from '../../src/engine/steering/steer';
import { featureVector, loadVectorFile, parsePairs, saveVectorFile, vectorFilePaths } from '../../src/engine/steering/vectors';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-steer-unit-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

describe('pairs format', () => {
  it('parses blocks of + / − lines with comments, escapes and either order', () => {
    const text = ['# quotes', '+ a = \'x\'\\n', "- a = \"x\"\\n", '', '', '- neg two', '+ pos two\\tend \\\\ ', '   # indented comment', ''].join('\n');
    const pairs = parsePairs(text, 'q.pairs');
    assert.deepEqual(pairs, [
      { positive: "a = 'x'\n", negative: 'a = "x"\n', line: 2 },
      { positive: 'pos two\tend \\ ', negative: 'neg two', line: 6 },
    ]);
  });
  const bad: [string, string, RegExp][] = [
    ['missing negative', '+ only\n\n+ a\n- b', /q\.pairs: line 1: the pair starting here has no '- negative prompt' line before line 2/],
    ['missing positive at end', '+ a\n- b\n\n- c', /line 4: .*no '\+ positive prompt'/],
    ['two positives', '+ a\n+ b\n- c', /line 2: a second '\+' line in the pair starting at line 1/],
    ['stray text', '+ a\n- b\nhello', /line 3: expected '\+ positive prompt'/],
    ['empty prompt', '+ \n- b', /line 1: the prompt after '\+' is empty/],
    ['bad escape', '+ a\\q\n- b', /line 1: unknown escape "\\q"/],
    ['nothing', '# just a comment\n\n', /no pairs/],
  ];
  for (const [name, text, re] of bad) it(`refuses ${name} with the line number`, () => assert.throws(() => parsePairs(text, 'q.pairs'), re));
});

describe('vector files', () => {
  const v: SteeringVector = {
    vector: Float32Array.from({ length: 8 }, (_, i) => i - 3.5),
    layer: 2,
    point: 'hook_resid_mid',
    label: 'quotes',
    source: 'contrastive',
    provenance: { model: 'tiny', pairs: 3 },
  };
  it('round-trips through either file of the pair', () => {
    const paths = saveVectorFile(path.join(root, 'quotes.json'), v);
    assert.deepEqual(paths, vectorFilePaths(path.join(root, 'quotes')));
    for (const f of [paths.json, paths.tensor, path.join(root, 'quotes')]) {
      const got = loadVectorFile(f, { dModel: 8, nLayers: 4, name: 'tiny' });
      assert.deepEqual(got.vector, v.vector);
      assert.equal(got.layer, 2);
      assert.equal(got.point, 'hook_resid_mid');
      assert.equal(got.label, 'quotes');
      assert.equal(got.source, 'contrastive');
      assert.deepEqual(got.provenance, v.provenance);
      assert.equal(got.modelName, 'tiny');
      assert.deepEqual(got.warnings, []);
    }
    const json = JSON.parse(fs.readFileSync(paths.json, 'utf8'));
    assert.equal(json.format, 'residual-steering-vector');
    assert.equal(json.version, 1);
    assert.equal(json.model.d_model, 8);
    assert.ok(Math.abs(json.norm - Math.hypot(...v.vector)) < 1e-9);
    assert.ok(!Number.isNaN(Date.parse(json.created)));
    // A bare width is accepted as the model check; another model's name is a warning, not an error.
    assert.equal(loadVectorFile(paths.json, 8).vector.length, 8);
    assert.equal(loadVectorFile(paths.json, { dModel: 8, nLayers: 4, name: 'other' }).warnings.length, 1);
  });

  const make = (name: string) => saveVectorFile(path.join(root, name), v);
  it('refuses a vector of the wrong width, naming the file and both widths', () => {
    const p = make('w');
    assert.throws(() => loadVectorFile(p.json, { dModel: 16, nLayers: 4 }), (e: Error) => e.message.includes(p.tensor) && /8 values but the model's d_model is 16 \(it was made for tiny\)/.test(e.message));
  });
  it('refuses an unknown layer', () => {
    const p = make('l');
    assert.throws(() => loadVectorFile(p.json, { dModel: 8, nLayers: 2 }), /w?l\.json: layer 2 does not exist \(the model has layers 0\.\.1\)/);
  });
  for (const [bad, word] of [[NaN, 'NaN'], [Infinity, 'Inf']] as const) {
    it(`refuses ${word} in the tensor file`, () => {
      const p = make(`nan-${word}`);
      const data = Float32Array.from(v.vector);
      data[5] = bad;
      writeSafetensors(p.tensor, [{ name: 'vector', shape: [8], data }], 'F32');
      assert.throws(() => loadVectorFile(p.json), new RegExp(`nan-${word}\\.safetensors: the vector contains ${word} \\(at index 5\\)`));
    });
  }
  it('refuses a truncated tensor file', () => {
    const p = make('trunc');
    const bytes = fs.readFileSync(p.tensor);
    fs.writeFileSync(p.tensor, new Uint8Array(bytes.subarray(0, bytes.length - 7)));
    assert.throws(() => loadVectorFile(p.json), /trunc\.safetensors: .*truncated/);
  });
  it('refuses a missing JSON, a missing tensor file and a missing pair', () => {
    const p = make('miss');
    fs.rmSync(p.json);
    assert.throws(() => loadVectorFile(p.tensor), /miss\.json: the vector's JSON file is missing/);
    const q = make('miss2');
    fs.rmSync(q.tensor);
    assert.throws(() => loadVectorFile(q.json), /miss2\.safetensors: the vector's tensor file is missing/);
    assert.throws(() => loadVectorFile(path.join(root, 'nothing.json')), /nothing\.json: vector file not found/);
  });
  it('refuses corrupt JSON, a foreign JSON, a bad point, a mismatched width and a missing tensor name', () => {
    const p = make('corrupt');
    fs.writeFileSync(p.json, '{"format": "residual-steering-vector", ');
    assert.throws(() => loadVectorFile(p.json), /corrupt\.json: not valid JSON/);
    const q = make('foreign');
    fs.writeFileSync(q.json, JSON.stringify({ hello: 1 }));
    assert.throws(() => loadVectorFile(q.json), /foreign\.json: "format" is undefined/);
    const r = make('point');
    fs.writeFileSync(r.json, fs.readFileSync(r.json, 'utf8').replace('hook_resid_mid', 'hook_attn_out'));
    assert.throws(() => loadVectorFile(r.json), /point\.json: "point" is "hook_attn_out"/);
    const s = make('width');
    fs.writeFileSync(s.json, fs.readFileSync(s.json, 'utf8').replace('"d_model": 8', '"d_model": 9'));
    assert.throws(() => loadVectorFile(s.json), /width\.json: the JSON says d_model 9 but the tensor has 8 values/);
    const t = make('name');
    writeSafetensors(t.tensor, [{ name: 'vec', shape: [8], data: v.vector }], 'F32');
    assert.throws(() => loadVectorFile(t.json), /name\.safetensors: no tensor named "vector" \(found "vec"\)/);
  });
  it('refuses to save NaN', () => {
    const nan = { ...v, vector: Float32Array.of(1, NaN) };
    assert.throws(() => saveVectorFile(path.join(root, 'x'), nan), /NaN or Inf/);
  });
});

describe('transcoder decoder rows', () => {
  const dSae = 6;
  const dModel = 4;
  const wDec = (layer: number) => Float32Array.from({ length: dSae * dModel }, (_, i) => layer * 100 + i);
  // W_enc is [d_model, d_sae] in SAELens files and [d_sae, d_model] in circuit-tracer's.
  const tensors = (layer: number, layout: 'saelens' | 'circuit-tracer' = 'saelens') => [
    { name: 'W_enc', shape: layout === 'saelens' ? [dModel, dSae] : [dSae, dModel], data: new Float32Array(dModel * dSae) },
    { name: 'b_enc', shape: [dSae], data: new Float32Array(dSae) },
    { name: 'W_dec', shape: [dSae, dModel], data: wDec(layer) },
    { name: 'b_dec', shape: [dModel], data: new Float32Array(dModel) },
  ];
  it('reads row `index` of W_dec in the SAELens layout (v6 metadata and pre-6 flat cfg)', () => {
    const dir = path.join(root, 'saelens');
    for (const layer of [0, 1]) {
      const sub = path.join(dir, `whatever_${layer}`);
      fs.mkdirSync(sub, { recursive: true });
      const cfg = layer === 0 ? { d_in: 4, d_sae: 6, metadata: { hook_name: 'blocks.0.ln2.hook_normalized', hook_name_out: 'blocks.0.hook_mlp_out' } } : { d_in: 4, d_sae: 6, hook_name: 'blocks.1.hook_resid_mid', hook_layer: 1 };
      fs.writeFileSync(path.join(sub, 'cfg.json'), JSON.stringify(cfg));
      writeSafetensors(path.join(sub, 'sae_weights.safetensors'), tensors(layer), layer === 1 ? 'F16' : 'F32');
    }
    const v0 = featureVector(dir, 0, 3);
    assert.deepEqual([...v0.vector], [12, 13, 14, 15]);
    assert.equal(v0.source, 'feature');
    assert.equal(v0.layer, 0);
    assert.equal(v0.point, 'hook_resid_post');
    assert.deepEqual([...featureVector(dir, 1, 5).vector], [120, 121, 122, 123]); // F16 holds these integers exactly
    assert.throws(() => featureVector(dir, 0, 6), /feature 6 does not exist: the layer-0 transcoder has features 0\.\.5/);
    assert.throws(() => featureVector(dir, 3, 0), /no transcoder for layer 3 \(found layers 0, 1\)/);
    assert.throws(() => featureVector(path.join(root, 'absent'), 0, 0), /transcoders folder not found/);
  });
  it('reads the circuit-tracer layout (globbed layer files and an explicit list)', () => {
    const dir = path.join(root, 'ct');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'config.yaml'), 'model_kind: transcoder_set\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\n');
    for (const layer of [0, 1, 2]) writeSafetensors(path.join(dir, `layer_${layer}.safetensors`), tensors(layer, 'circuit-tracer'), 'F32');
    assert.deepEqual([...featureVector(dir, 2, 1).vector], [204, 205, 206, 207]);
    assert.throws(() => featureVector(dir, 5, 0), /layer_5\.safetensors is missing \(found layers 0, 1, 2\)/);
    fs.writeFileSync(path.join(dir, 'config.yaml'), 'model_kind: transcoder_set\ntranscoders:\n  - layer_2.safetensors\n  - "layer_0.safetensors"\n');
    assert.deepEqual([...featureVector(dir, 1, 0).vector], [0, 1, 2, 3]);
    assert.throws(() => featureVector(dir, 2, 0), /the transcoders list has 2 entries/);
    // circuit-tracer's published configs name Hub files: after a download they are read from this folder, as the
    // circuit loader does.
    fs.writeFileSync(path.join(dir, 'config.yaml'), 'model_kind: transcoder_set\ntranscoders:\n  - hf://mntss/tc/layer_1.safetensors\n  - hf://mntss/tc/layer_9.safetensors\n');
    assert.deepEqual([...featureVector(dir, 0, 0).vector], [100, 101, 102, 103]);
    assert.throws(() => featureVector(dir, 1, 0), /is on the Hugging Face Hub and not in this folder/);
    fs.writeFileSync(path.join(dir, 'config.yaml'), 'model_kind: cross_layer_transcoder\n');
    assert.throws(() => featureVector(dir, 0, 0), /no W_enc_<i>\.safetensors files beside config\.yaml/);
  });
  it('reads the bundled demo transcoders when present', (t) => {
    const dir = path.join(__dirname, '..', '..', 'models', 'demo', 'transcoders');
    if (!fs.existsSync(dir)) return t.skip('models/demo/transcoders is not present');
    const v = featureVector(dir, 2, 7);
    assert.equal(v.vector.length, 256);
    assert.ok(v.vector.every(Number.isFinite));
  });
});

describe('helpers', () => {
  it('steerAdds lays out rows per position', () => {
    const vector = Float32Array.of(1, 2);
    const adds = steerAdds({ vector, layer: 0, point: 'hook_resid_pre', strength: 2, positions: { kind: 'set', positions: [1, 3] } }, 1, 3);
    assert.deepEqual([...adds[0].add], [2, 4, 0, 0, 2, 4]);
    const rel = steerAdds({ vector: Float32Array.of(3, 4), layer: 0, point: 'hook_resid_pre', strength: 2, relative: true, positions: { kind: 'all' } }, 0, 5, 10);
    assert.deepEqual([...rel[0].add], [12, 16]); // 2 × 10 × v/‖v‖ = 20 × (0.6, 0.8)
    assert.throws(() => steerAdds({ vector, layer: 0, point: 'hook_resid_pre', strength: 1, relative: true, positions: { kind: 'all' } }, 0, 1), /relative strength needs/);
  });
  it('parsePositions', () => {
    assert.deepEqual(parsePositions('all'), { kind: 'all' });
    assert.deepEqual(parsePositions('from:3'), { kind: 'from', pos: 3 });
    assert.deepEqual(parsePositions('1, 4,7'), { kind: 'set', positions: [1, 4, 7] });
    assert.throws(() => parsePositions('from:-1'), /expected all, from:N/);
  });
  it('sampling: greedy is the argmax; sampled frequencies follow softmax(logits/T); top-p keeps the nucleus', () => {
    const logits = Float32Array.of(0, 1, 2, 0.5);
    assert.equal(sampleToken(logits, 0, 1, Math.random), 2);
    const rng = mulberry32(5);
    const n = 40000;
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < n; i++) counts[sampleToken(logits, 0.7, 1, rng)]++;
    const w = [...logits].map((x) => Math.exp(x / 0.7));
    const z = w.reduce((a, b) => a + b);
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(counts[i] / n - w[i] / z) < 0.01, `token ${i}: ${counts[i] / n} vs ${w[i] / z}`);
    // At T=1: p = (0.078, 0.213, 0.579, 0.129); top-p 0.5 → token 2 alone; top-p 0.75 → tokens 2 and 1.
    for (let i = 0; i < 100; i++) assert.equal(sampleToken(logits, 1, 0.5, rng), 2);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(sampleToken(logits, 1, 0.75, rng));
    assert.deepEqual([...seen].sort(), [1, 2]);
  });
  it('KL and the next-token loss by hand', () => {
    const lp = logSoftmax(Float32Array.of(Math.log(0.5), Math.log(0.5)))!;
    const lq = logSoftmax(Float32Array.of(Math.log(0.25), Math.log(0.75)))!;
    assert.ok(Math.abs(klDivergence(lp, lq) - (0.5 * Math.log(0.5 / 0.25) + 0.5 * Math.log(0.5 / 0.75))) < 1e-7);
    assert.equal(klDivergence(lp, lp), 0);
    assert.equal(logSoftmax(Float32Array.of(1, NaN)), undefined);
    // Two positions, vocab 2: −log p(ids[1] | 0) only.
    const logits = Float32Array.of(0, Math.log(3), 5, 5);
    assert.ok(Math.abs(meanNextTokenLoss(logits, [0, 1], 2) - -Math.log(0.75)) < 1e-7);
    assert.ok(Number.isNaN(meanNextTokenLoss(Float32Array.of(NaN, 0, 0, 0), [0, 1], 2)));
  });
});
