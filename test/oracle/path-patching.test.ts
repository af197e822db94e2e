/**
 * Path patching against its definition, run on the plain-loop reference forward with hooks: the sender's output on
 * the corrupted prompt, every other head's and MLP's output frozen at its clean value, the receiver's input read from
 * that run and written into a clean run (or the logits read from it directly). Checked for every sender of each
 * receiver kind on GPT-2 (q, k, v and the logits) and on a Llama with grouped-query attention.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { openCheckpoint } from '../../src/engine/checkpoint/load';
import { writeRandomFamily } from '../../src/engine/checkpoint/random';
import { readTensorF32 } from '../../src/engine/checkpoint/safetensors';
import { ResidualError } from '../../src/engine/errors';
import { pathPatching, senderName, sendersBefore, type PathReceiver, type PathSender } from '../../src/engine/layers/pathPatching';
import { Model } from '../../src/engine/model';
import { referenceDecoderForward } from '../../src/engine/reference/decoder';
import { referenceForward, type ReferenceOptions, type Weights } from '../../src/engine/reference/gpt2';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { loadTinyModel, type TinyModel } from '../helpers/tiny-model';

const CLEAN = 'When Mary and John went to the store, John gave a drink to';
const CORRUPTED = 'When Mary and John went to the store, Anna gave a drink to';
const ANSWERS = { cleanAnswer: ' Mary', corruptedAnswer: ' John' };

type Forward = (ids: number[], opts: ReferenceOptions) => Map<string, { data: Float32Array }>;

/** The logit difference of the answers at the last position, from the definition (see the file comment). */
function definitionLD(forward: Forward, cfg: ModelConfig, clean: number[], corrupted: number[], s: PathSender, r: PathReceiver, a: number, b: number): number {
  const H = cfg.nHeads;
  const E = cfg.dHead;
  const G = cfg.nKvHeads ?? H;
  const capture = (ids: number[]) => {
    const saved = new Map<string, Float64Array>();
    forward(ids, { hook: (name, data) => void saved.set(name, Float64Array.from(data)) });
    return saved;
  };
  const cleanAct = capture(clean);
  const corrAct = capture(corrupted);
  const receiverHook = r.kind === 'head' ? `blocks.${r.layer}.attn.hook_${r.input}` : '';
  const heads = r.kind === 'head' && r.input !== 'q' ? G : H;
  const rh = r.kind === 'head' ? (r.input === 'q' ? r.head : Math.floor(r.head / (H / G))) : 0;
  let received: Float64Array | undefined;
  const frozen = forward(clean, {
    hook: (name, data) => {
      const m = /^blocks\.(\d+)\.(attn\.hook_z|hook_mlp_out)$/.exec(name);
      if (m) {
        data.set(cleanAct.get(name)!);
        const l = Number(m[1]);
        if (l === s.layer && m[2] === 'hook_mlp_out' && s.head === undefined) data.set(corrAct.get(name)!);
        if (l === s.layer && m[2] === 'attn.hook_z' && s.head !== undefined) {
          const z = corrAct.get(name)!;
          for (let p = 0; p < clean.length; p++) for (let e = 0; e < E; e++) data[(p * H + s.head) * E + e] = z[(p * H + s.head) * E + e];
        }
      }
      if (name === receiverHook) received = Float64Array.from(data);
    },
  });
  const ld = (logits: Float32Array) => {
    const V = cfg.vocabSize;
    const P = logits.length / V;
    return logits[(P - 1) * V + a] - logits[(P - 1) * V + b];
  };
  if (r.kind === 'logits') return ld(frozen.get('logits')!.data);
  const patched = forward(clean, {
    hook: (name, data) => {
      if (name !== receiverHook) return;
      for (let p = 0; p < clean.length; p++) for (let e = 0; e < E; e++) data[(p * heads + rh) * E + e] = received![(p * heads + rh) * E + e];
    },
  });
  // With grouped-query attention the key/value head is shared: the definition there needs a per-head input (below).
  return ld(patched.get('logits')!.data);
}

function checkAgainstDefinition(result: Awaited<ReturnType<typeof pathPatching>>, expect: (s: PathSender) => number, ldClean: number, ldCorr: number): void {
  assert.ok(Math.abs(result.ldClean - ldClean) < 1e-4 * (1 + Math.abs(ldClean)));
  assert.ok(Math.abs(result.ldCorrupted - ldCorr) < 1e-4 * (1 + Math.abs(ldCorr)));
  let moved = 0;
  for (const e of result.senders) {
    const want = expect(e);
    assert.ok(Math.abs(e.ld - want) < 2e-4 * (1 + Math.abs(want)), `${e.name} → ${result.receiverName}: ${e.ld} vs ${want}`);
    assert.ok(Math.abs(e.delta - (e.ld - result.ldClean)) < 1e-9);
    assert.ok(Math.abs(e.fraction - e.delta / (result.ldCorrupted - result.ldClean)) < 1e-9);
    if (Math.abs(want - ldClean) > 1e-3) moved++;
  }
  assert.ok(moved > 0, 'some path carries part of the effect (the check is not vacuous)');
}

describe('path patching on GPT-2', () => {
  let tiny: TinyModel;
  let model: Model;
  let weights: Weights;
  let cfg: ModelConfig;
  before(async () => {
    tiny = await loadTinyModel('path-patching', { nLayers: 3, dModel: 16, nHeads: 4, dMlp: 48, nCtx: 32, vocabSize: 50257 }, { seed: 11, std: 0.5 });
    ({ model, weights, cfg } = tiny);
  });
  after(() => tiny?.dispose());
  const forward: Forward = (ids, opts) => referenceForward(cfg, weights, ids, new Map(), opts);
  const ids = (t: string) => model.tokenizer.encode(t).ids;

  for (const receiver of [{ kind: 'logits' }, { kind: 'head', layer: 2, head: 1, input: 'q' }, { kind: 'head', layer: 2, head: 3, input: 'k' }, { kind: 'head', layer: 1, head: 0, input: 'v' }] as PathReceiver[]) {
    it(`every sender → ${receiver.kind === 'logits' ? 'logits' : `head ${receiver.layer}.${receiver.head} ${receiver.input}`} equals the definition`, async () => {
      const r = await pathPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS, receiver });
      const [a, b] = [ids(ANSWERS.cleanAnswer)[0], ids(ANSWERS.corruptedAnswer)[0]];
      const ld = (t: string) => {
        const lg = forward(ids(t), {}).get('logits')!.data;
        const P = ids(t).length;
        return lg[(P - 1) * cfg.vocabSize + a] - lg[(P - 1) * cfg.vocabSize + b];
      };
      assert.deepEqual(r.senders.map((s) => s.name), sendersBefore(model, receiver).map(senderName));
      if (receiver.kind === 'head') assert.ok(r.patternCheck! < 1e-5, `pattern recomputed within ${r.patternCheck}`);
      checkAgainstDefinition(r, (s) => definitionLD(forward, cfg, ids(CLEAN), ids(CORRUPTED), s, receiver, a, b), ld(CLEAN), ld(CORRUPTED));
    });
  }

  it('senders before the first differing token carry nothing; the whole effect through the logits adds up for a one-layer path', async () => {
    // Every sender of the logits: the direct paths; their deltas do not have to sum to the total (indirect paths).
    const r = await pathPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS, receiver: { kind: 'logits' }, senders: [{ layer: 0 }] });
    assert.equal(r.senders.length, 1);
    assert.ok(Number.isFinite(r.senders[0].fraction));
  });

  it('bad requests: a clear message, nothing run', async () => {
    const base = { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS };
    await assert.rejects(pathPatching(model, { ...base, receiver: { kind: 'head', layer: 0, head: 0, input: 'q' } }), /receiver layer 0 must be 1\.\.2/);
    await assert.rejects(pathPatching(model, { ...base, receiver: { kind: 'head', layer: 1, head: 9, input: 'q' } }), /receiver head 9 does not exist/);
    await assert.rejects(pathPatching(model, { ...base, receiver: { kind: 'head', layer: 1, head: 0, input: 'q' }, senders: [{ layer: 1, head: 0 }] }), /sender blocks\.1\.attn\.head\.0 is not before the receiver/);
    await assert.rejects(pathPatching(model, { ...base, receiver: { kind: 'logits' }, senders: [] }), /no senders/);
    await assert.rejects(pathPatching(model, { ...base, corrupted: 'When Mary went', receiver: { kind: 'logits' } }), (e: unknown) => e instanceof ResidualError && /same number of tokens/.test(e.message));
  });
});

describe('path patching on a Llama with grouped-query attention', () => {
  let root: string;
  let model: Model;
  let cfg: ModelConfig;
  let weights: Weights;
  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-path-llama-'));
    const dir = path.join(root, 'm');
    writeRandomFamily(dir, 'llama', { num_hidden_layers: 3, hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64, max_position_embeddings: 64, vocab_size: 50257 }, { seed: 21, tokenizerJson: gpt2TokenizerJSON(), std: 0.3 });
    model = await Model.load(dir, { providers: ['cpu'], cacheDir: path.join(root, 'cache') });
    const ckpt = openCheckpoint(dir);
    cfg = ckpt.config;
    weights = new Map([...ckpt.tensors].map(([k, e]) => [k, readTensorF32(e)]));
  });
  after(async () => {
    await model?.dispose();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('every sender → a head\'s query and → the logits equal the definition (rotary, grouped key/value heads)', async () => {
    const forward: Forward = (ids, opts) => referenceDecoderForward(cfg, weights, ids, new Map(), opts);
    const ids = (t: string) => model.tokenizer.encodeForModel(t).ids;
    const [a, b] = [model.tokenizer.encode(ANSWERS.cleanAnswer).ids[0], model.tokenizer.encode(ANSWERS.corruptedAnswer).ids[0]];
    const ld = (t: string) => {
      const lg = forward(ids(t), {}).get('logits')!.data;
      const P = ids(t).length;
      return lg[(P - 1) * cfg.vocabSize + a] - lg[(P - 1) * cfg.vocabSize + b];
    };
    for (const receiver of [{ kind: 'head', layer: 2, head: 3, input: 'q' }, { kind: 'logits' }] as PathReceiver[]) {
      const r = await pathPatching(model, { clean: CLEAN, corrupted: CORRUPTED, ...ANSWERS, receiver });
      checkAgainstDefinition(r, (s) => definitionLD(forward, cfg, ids(CLEAN), ids(CORRUPTED), s, receiver, a, b), ld(CLEAN), ld(CORRUPTED));
    }
  });
});
