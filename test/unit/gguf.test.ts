/**
 * llama.cpp control vectors (engine/steering/gguf.ts): the writer's bytes as @huggingface/gguf parses them and as
 * read independently from their offsets, the slot mapping (direction.k = blocks.k.hook_resid_post), the round trip
 * into steering (the same steered prediction as the same vector saved Residual's way), and bad files named.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { gguf } from '@huggingface/gguf';
import { controlVectorBytes, controlVectorLayer, readControlVector, steeringVectorFromGguf, writeControlVector } from '../../src/engine/steering/gguf';
import { saveVectorFile } from '../../src/engine/steering/vectors';
import { runCli } from '../helpers/catalogue';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-gguf-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const DEMO = path.join(__dirname, '..', '..', 'models', 'demo');
const D = 256;
const vec = Float32Array.from({ length: D }, (_, i) => Math.sin(i * 0.37) * 0.5);
const MODEL = { dModel: D, nLayers: 4, name: 'demo', architecture: 'gpt2' };

describe('llama.cpp control vectors', () => {
  it('the file is GGUF v3 as @huggingface/gguf reads it: controlvector metadata, one float32 direction, the values at its offset', async () => {
    const file = path.join(root, 'v.gguf');
    assert.deepEqual(writeControlVector(file, vec, 2, 'hook_resid_post', { architecture: 'mistral', scale: 2 }), { layer: 2 });
    const parsed = await gguf(file, { allowLocalFile: true });
    const meta = parsed.metadata as Record<string, unknown>;
    assert.equal(meta.version, 3);
    assert.equal(meta['general.architecture'], 'controlvector');
    assert.equal(meta['controlvector.model_hint'], 'llama', "llama.cpp's name for Mistral");
    assert.equal(meta['controlvector.layer_count'], 1);
    assert.equal(parsed.tensorInfos.length, 1);
    const t = parsed.tensorInfos[0];
    assert.equal(t.name, 'direction.2');
    assert.equal(Number(t.dtype), 0, 'F32');
    assert.deepEqual(t.shape.map(Number), [D]);
    assert.equal(Number(parsed.tensorDataOffset) % 32, 0, 'the data section is aligned to 32 bytes');
    const bytes = fs.readFileSync(file);
    const at = Number(parsed.tensorDataOffset + t.offset);
    for (let i = 0; i < D; i++) assert.equal(bytes.readFloatLE(at + 4 * i), Math.fround(vec[i] * 2), `value ${i} (times the scale)`);
  });

  it('several directions: offsets aligned, each read back by the parser', async () => {
    const dirs = new Map([3, 1, 2].map((k) => [k, Float32Array.from({ length: 10 }, (_, i) => k * 100 + i)] as const));
    const file = path.join(root, 'three.gguf');
    fs.writeFileSync(file, controlVectorBytes(dirs, 'llama'));
    const parsed = await gguf(file, { allowLocalFile: true });
    assert.deepEqual(parsed.tensorInfos.map((t) => t.name), ['direction.1', 'direction.2', 'direction.3']);
    assert.ok(parsed.tensorInfos.every((t) => Number(t.offset) % 32 === 0));
    const cv = await readControlVector(file);
    for (const [k, v] of dirs) assert.deepEqual(Array.from(cv.directions.get(k)!), Array.from(v));
  });

  it('slots: direction.k is blocks.k.hook_resid_post = blocks.(k+1).hook_resid_pre; resid_mid and block 0 have none', () => {
    assert.equal(controlVectorLayer(3, 'hook_resid_post'), 3);
    assert.equal(controlVectorLayer(3, 'hook_resid_pre'), 2);
    assert.throws(() => controlVectorLayer(2, 'hook_resid_mid'), /resid_mid is inside a block/);
    assert.throws(() => controlVectorLayer(0, 'hook_resid_post'), /start at the output of block 1 .*blocks\.0\.hook_resid_post is before it/);
    assert.throws(() => controlVectorLayer(1, 'hook_resid_pre'), /blocks\.1\.hook_resid_pre is before it/);
  });

  it('back into Residual: its own slot, or the slot asked for; several directions: the largest, said', async () => {
    const file = path.join(root, 'rt.gguf');
    writeControlVector(file, vec, 1, 'hook_resid_post', { architecture: 'gpt2' });
    const own = await steeringVectorFromGguf(file, MODEL);
    assert.deepEqual([own.layer, own.point, own.warnings], [1, 'hook_resid_post', []]);
    assert.deepEqual(Array.from(own.vector), Array.from(vec));
    const asked = await steeringVectorFromGguf(file, MODEL, { layer: 2, point: 'hook_resid_pre' });
    assert.deepEqual([asked.layer, asked.point], [2, 'hook_resid_pre']);
    await assert.rejects(steeringVectorFromGguf(file, MODEL, { layer: 3, point: 'hook_resid_post' }), /no direction for blocks\.3\.hook_resid_post \(direction\.3\); the file holds direction\.1 = blocks\.1\.hook_resid_post/);
    const many = path.join(root, 'many.gguf');
    fs.writeFileSync(many, controlVectorBytes(new Map([[1, vec], [2, Float32Array.from(vec, (x) => 3 * x)], [3, vec]]), 'gpt2'));
    const big = await steeringVectorFromGguf(many, MODEL);
    assert.equal(big.layer, 2);
    assert.match(big.warnings.join(), /holds 3 directions \(layers 1\.\.3\); using direction\.2, the largest/);
    const other = await steeringVectorFromGguf(file, { ...MODEL, architecture: 'llama', name: 'tiny-llama' });
    assert.match(other.warnings.join(), /made for a gpt2 model, used with tiny-llama \(llama\)/);
  });

  it('steer --vector x.gguf steers exactly as the same vector saved as .json/.safetensors', async () => {
    const gg = path.join(root, 'steer.gguf');
    writeControlVector(gg, vec, 1, 'hook_resid_post', { architecture: 'gpt2' });
    const js = path.join(root, 'steer.json');
    saveVectorFile(js, { vector: vec, layer: 1, point: 'hook_resid_post', label: 'v', source: 'file', provenance: {} });
    const common = ['steer', '--model', DEMO, '--text', 'The cat sat on the', '--strength', '6', '--providers', 'cpu', '--json'];
    const a = await runCli([...common, '--vector', gg]);
    const b = await runCli([...common, '--vector', js, '--layer', '1', '--hook', 'resid_post']);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const [ja, jb] = [JSON.parse(a.stdout), JSON.parse(b.stdout)];
    assert.equal(ja.hook, 'blocks.1.hook_resid_post');
    assert.deepEqual(ja.steered.top, jb.steered.top);
    assert.ok(ja.kl > 0, 'it steered');
    const at = await runCli([...common, '--vector', gg, '--layer', '2', '--hook', 'resid_pre']);
    assert.equal(JSON.parse(at.stdout).hook, 'blocks.2.hook_resid_pre');
    assert.deepEqual(JSON.parse(at.stdout).steered.top, jb.steered.top, 'blocks.2.hook_resid_pre is the same point');
  });

  it('bad files, each named: not GGUF, a model, another width, NaN, a stray tensor, direction.0, truncated', async () => {
    const write = (name: string, bytes: NodeJS.ArrayBufferView | string) => {
      const f = path.join(root, name);
      fs.writeFileSync(f, bytes);
      return f;
    };
    await assert.rejects(readControlVector(write('text.gguf', 'hello, not gguf')), /text\.gguf: not a GGUF file/);
    // A model's GGUF: the same container, another architecture.
    const model = controlVectorBytes(new Map([[1, vec]]), 'gpt2');
    const asModel = Buffer.from(model);
    const i = asModel.indexOf('controlvector');
    asModel.write('llamavector__', i); // same length, another architecture name
    await assert.rejects(readControlVector(write('model.gguf', new Uint8Array(asModel))), /general\.architecture is "llamavector__": this GGUF is a model, not a llama\.cpp control vector/);
    await assert.rejects(readControlVector(write('wide.gguf', controlVectorBytes(new Map([[1, new Float32Array(300)]]), 'gpt2')), D), /has 300 values but the model's d_model is 256: this control vector is for another model/);
    await assert.rejects(readControlVector(write('nan.gguf', controlVectorBytes(new Map([[1, Float32Array.from([1, NaN, 2])]]), 'gpt2'))), /direction\.1" contains NaN \(at index 1\)/);
    const stray = Buffer.from(controlVectorBytes(new Map([[1, vec]]), 'gpt2'));
    stray.write('dilection', stray.indexOf('direction.1'));
    await assert.rejects(readControlVector(write('stray.gguf', new Uint8Array(stray))), /tensor "dilection\.1" is not a direction/);
    const zero = Buffer.from(controlVectorBytes(new Map([[9, vec]]), 'gpt2'));
    zero.write('0', zero.indexOf('direction.9') + 'direction.'.length);
    await assert.rejects(readControlVector(write('zero.gguf', new Uint8Array(zero))), /"direction\.0": llama\.cpp numbers control-vector layers from 1/);
    const whole = controlVectorBytes(new Map([[1, vec]]), 'gpt2');
    await assert.rejects(readControlVector(write('cut.gguf', whole.subarray(0, whole.length - 100))), /cut\.gguf: .*(truncated|not a readable GGUF)/);
    const huge = Buffer.from(controlVectorBytes(new Map([[1, vec]]), 'gpt2'));
    huge.writeBigUInt64LE(9_000_000n, 8); // 9M tensors declared in a file of a few kilobytes
    await assert.rejects(readControlVector(write('counts.gguf', new Uint8Array(huge))), /declares 9000000 tensors and 3 keys, more than \d+ bytes can hold/);
    const twice = Buffer.from(controlVectorBytes(new Map([[1, vec], [2, vec]]), 'gpt2'));
    twice.write('1', twice.indexOf('direction.2') + 'direction.'.length);
    await assert.rejects(readControlVector(write('twice.gguf', new Uint8Array(twice))), /tensor "direction\.1": a second direction for layer 1/);
    assert.throws(() => writeControlVector(path.join(root, 'nope', 'x.gguf'), vec, 1, 'hook_resid_post', { architecture: 'gpt2' }), /the folder does not exist/);
    assert.throws(() => writeControlVector(path.join(root, 'inf.gguf'), Float32Array.from([1, Infinity]), 1, 'hook_resid_post', { architecture: 'gpt2' }), /NaN or Inf; not writing it/);
    assert.ok(!fs.existsSync(path.join(root, 'inf.gguf')), 'nothing written');
  });
});
