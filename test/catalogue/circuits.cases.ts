/**
 * Bad inputs of the circuits area (issue 14): paths in transcoder configs and indexes that lead out of their folder
 * (class 6), NaN/Inf in transcoder weights (class 7), the crashes seen in the Circuit panel (class 12), and graph
 * files as circuit-tracer's viewer reads them (class 13). Fixtures (a tiny random GPT-2, tied-embedding Llama, Qwen3
 * and Gemma-2 models, transcoder folders) are made on first use under one temporary folder; `disposeFixtures` (called
 * by circuits.test.ts) releases them. Nothing is done at import.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FamilyModelType } from '../../src/engine/checkpoint/families';
import { writeRandomFamily, writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { Attributor } from '../../src/engine/circuits/attribution';
import { featureCard, FeatureIndex } from '../../src/engine/circuits/featureCard';
import type { AttributionGraph } from '../../src/engine/circuits/graph';
import { GRAPH_METADATA_FILE, toGraphJson, writeGraphFiles, type GraphJson } from '../../src/engine/circuits/graph-json';
import { pruneGraph } from '../../src/engine/circuits/prune';
import { loadTranscoders, openTranscoderFolder } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeCircuitTracerTranscoders, writeSaeLensTranscoders, type TranscoderWeights, type WriteOptions } from '../../src/engine/circuits/transcoders-write';
import { Model } from '../../src/engine/model';
import { silenceOrt } from '../../src/engine/runtime/session';
import { featureVector } from '../../src/engine/steering/vectors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { lazyFixtures, runCli, type BadInputCase } from '../helpers/catalogue';

// ---- Fixtures (lazy, shared) ---------------------------------------------------------------------------------

const D = 16;
const F = 32;
const L = 2;
const GPT2 = { nLayers: L, dModel: D, nHeads: 4, dMlp: 32, nCtx: 32, vocabSize: 50257 };
const IDS = [464, 2068, 7586, 21831, 18045, 625];

const fixtures = lazyFixtures('residual-cat-circuits-');
const root = () => fixtures.root();
const cacheDir = () => path.join(root(), 'onnx-cache');
let counter = 0;
/** A fresh folder path (not created) under the fixtures' root. */
function fresh(name: string): string {
  return path.join(root(), `${++counter}-${name}`);
}

let tokenizer: object | undefined;
const tokenizerJson = () => (tokenizer ??= gpt2TokenizerJSON());

const once = <T>(key: string, make: () => Promise<T>) => fixtures.once(key, make);

/** The tiny random GPT-2 (2 layers, d_model 16), loaded once. */
function gpt2(): Promise<{ dir: string; model: Model }> {
  return once('gpt2', async () => {
    silenceOrt();
    const dir = path.join(root(), 'gpt2');
    writeRandomGpt2(dir, GPT2, { seed: 21, std: 0.3, tokenizerJson: tokenizerJson() });
    const model = await Model.load(dir, { providers: ['cpu'], cacheDir: cacheDir() });
    fixtures.onDispose(() => model.dispose());
    return { dir, model };
  });
}

/** Random transcoder weights for the tiny models (ReLU features made sparse by a negative b_enc). */
const weights = (seed = 5): TranscoderWeights[] => randomTranscoderWeights(L, D, F, { seed, bEncMean: -0.4, threshold: 0.2 });

/** Writes a set in `layout`, after `poke` changed its weights. */
function writeSet(dir: string, layout: 'saelens' | 'circuit-tracer', opts: Partial<WriteOptions> = {}, poke?: (w: TranscoderWeights[]) => void): string {
  const w = weights();
  poke?.(w);
  const o: WriteOptions = { activation: 'relu', ...opts };
  if (layout === 'saelens') writeSaeLensTranscoders(dir, w, o);
  else writeCircuitTracerTranscoders(dir, w, o);
  return dir;
}

/** A good SAELens set for the tiny GPT-2, its attributor and the graph of IDS, made once. */
function goodGraph(): Promise<{ attributor: Attributor; graph: AttributionGraph; model: Model; set: ReturnType<typeof loadTranscoders> }> {
  return once('good', async () => {
    const { model } = await gpt2();
    const set = loadTranscoders(writeSet(path.join(root(), 'good', 'transcoders'), 'saelens'), model.config);
    const attributor = new Attributor(model, set, { cacheDir: cacheDir() });
    fixtures.onDispose(() => attributor.dispose());
    const graph = await attributor.attribute(IDS);
    return { attributor, graph, model, set };
  });
}

/** Attribution of IDS on the tiny GPT-2 with the set in `dir`: what the user sees (the error, or the feature count). */
async function attributeWith(dir: string, ids = IDS): Promise<string> {
  const { model } = await gpt2();
  const attributor = new Attributor(model, loadTranscoders(dir, model.config), { cacheDir: cacheDir() });
  try {
    const g = await attributor.attribute(ids);
    return `graph with ${g.nFeatures} feature nodes`;
  } finally {
    await attributor.dispose();
  }
}

/** A tied-embedding model of `type` (no lm_head / unembedding tensor), with a circuit-tracer set, loaded once. */
function tiedFamily(type: FamilyModelType): Promise<{ attributor: Attributor; graph: AttributionGraph; model: Model }> {
  return once(`tied-${type}`, async () => {
    silenceOrt();
    const dir = path.join(root(), `tied-${type}`);
    const extra = type === 'llama' ? {} : { head_dim: 4 };
    writeRandomFamily(
      path.join(dir, 'model'),
      type,
      { num_hidden_layers: L, hidden_size: D, num_attention_heads: 4, intermediate_size: 24, max_position_embeddings: 32, vocab_size: 50257, tie_word_embeddings: true, ...extra },
      { seed: 9, tokenizerJson: tokenizerJson(), std: 0.3 },
    );
    const model = await Model.load(path.join(dir, 'model'), { providers: ['cpu'], cacheDir: cacheDir() });
    if (!model.checkpoint.tiedUnembed) throw new Error(`the ${type} fixture is not tied`);
    fixtures.onDispose(() => model.dispose());
    const attributor = new Attributor(model, loadTranscoders(writeSet(path.join(dir, 'transcoders'), 'circuit-tracer'), model.config), { cacheDir: cacheDir() });
    fixtures.onDispose(() => attributor.dispose());
    const graph = await attributor.attribute(IDS);
    return { attributor, graph, model };
  });
}

/** Releases the models and sessions and deletes the fixtures. */
export async function disposeFixtures(): Promise<void> {
  await fixtures.dispose();
}

/** A place outside every transcoder folder, with a real transcoder file (so a link to it would load). */
function outside(): string {
  const dir = path.join(root(), 'outside');
  if (!fs.existsSync(dir)) {
    writeSet(path.join(dir, 'ct'), 'circuit-tracer');
    writeSet(path.join(dir, 'sae'), 'saelens');
  }
  return dir;
}

/** A circuit-tracer set whose config.yaml ends with `yaml`. */
function ctWith(yaml: string, prepare?: (dir: string) => void): string {
  const dir = writeSet(fresh('ct'), 'circuit-tracer');
  prepare?.(dir);
  fs.appendFileSync(path.join(dir, 'config.yaml'), yaml);
  return dir;
}

/** Runs `f`, returning its error's message (or a description of what it returned). */
async function messageOf(f: () => unknown): Promise<string> {
  try {
    const v = await f();
    return `no error (${typeof v === 'string' ? v : 'returned'})`;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** Loading a set for the 2-layer tiny GPT-2's shape (config only: no model needed). */
const cfg2 = { nLayers: L, dModel: D, nHeads: 4, dHead: 4, dMlp: 32, nCtx: 32, vocabSize: 50257, lnEps: 1e-5, act: 'gelu_new', name: 'tiny-gpt2', architecture: 'gpt2' } as Parameters<typeof loadTranscoders>[1];
const load = (dir: string) => messageOf(() => loadTranscoders(dir, cfg2));

/** Exports the good graph with `promptTokens` / `scan` / a logit id, as the CLI and the panel do. */
async function exportGood(o: { prompt?: string; scan?: string; logit?: number; graph?: AttributionGraph } = {}): Promise<GraphJson> {
  const { attributor, graph, model, set } = await goodGraph();
  let g = o.graph ?? (o.prompt === undefined ? graph : await attributor.attribute(model.tokenizer.encodeForModel(o.prompt).ids));
  // A logit target of the caller's choosing (a random model's own top tokens are whatever they are).
  if (o.logit !== undefined) g = { ...g, logitIds: [o.logit, ...g.logitIds.slice(1)] };
  const tok = (id: number) => model.tokenizer.tokenText(id);
  return toGraphJson(g, pruneGraph(g, 0.8, 0.98), {
    slug: 'cat',
    scan: o.scan ?? set.scan,
    promptTokens: g.ids.map(tok),
    prompt: o.prompt ?? 'p',
    tokenText: tok,
    nodeThreshold: 0.8,
    edgeThreshold: 0.98,
  });
}

// ---- Class 6: containment ------------------------------------------------------------------------------------

const containment: BadInputCase[] = [
  {
    class: 6,
    name: 'config.yaml transcoders list names ../ a file outside the folder',
    run: () => load(ctWith(`transcoders:\n  - ../outside/ct/layer_0.safetensors\n  - layer_1.safetensors\n`, () => outside())),
    expect: /config\.yaml: transcoders\[0\] "\.\.\/outside\/ct\/layer_0\.safetensors" points outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'config.yaml transcoders list climbs out in the middle of a path (a/../../x)',
    run: () => load(ctWith(`transcoders:\n  - layer_0.safetensors\n  - sub/../../outside/ct/layer_1.safetensors\n`, () => outside())),
    expect: /config\.yaml: transcoders\[1\] "sub\/\.\.\/\.\.\/outside\/ct\/layer_1\.safetensors" points outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'config.yaml transcoders list names an absolute path',
    run: () => load(ctWith(`transcoders:\n  - ${path.join(outside(), 'ct', 'layer_0.safetensors')}\n  - layer_1.safetensors\n`)),
    expect: /config\.yaml: transcoders\[0\] "\/.*layer_0\.safetensors" is an absolute path; paths in config\.yaml must be relative to its folder/,
  },
  {
    class: 6,
    name: 'config.yaml transcoders list names a Windows absolute path',
    run: () => load(ctWith(`transcoders:\n  - 'C:\\Windows\\system.ini'\n  - layer_1.safetensors\n`)),
    expect: /config\.yaml: transcoders\[0\] "C:\\Windows\\system\.ini" is an absolute path/,
  },
  {
    class: 6,
    name: 'old-format config.yaml {filepath} item names ../ a file outside',
    run: () => load(ctWith(`transcoders:\n  - id: a\n    layer: 0\n    filepath: ../outside/ct/layer_0.safetensors\n  - id: b\n    layer: 1\n    filepath: layer_1.safetensors\n`, () => outside())),
    expect: /config\.yaml: transcoders\[0\]\.filepath "\.\.\/outside\/ct\/layer_0\.safetensors" points outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'config.yaml transcoders list names a link inside the folder that leads outside',
    run: () =>
      load(
        ctWith(`transcoders:\n  - layer_0.safetensors\n  - escape.safetensors\n`, (d) => fs.symlinkSync(path.join(outside(), 'ct', 'layer_1.safetensors'), path.join(d, 'escape.safetensors'))),
      ),
    expect: /config\.yaml: transcoders\[1\] "escape\.safetensors" resolves through a symbolic link to .*outside\/ct\/layer_1\.safetensors, outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'config.yaml path goes through a linked subfolder that leads outside',
    run: () => load(ctWith(`transcoders:\n  - layer_0.safetensors\n  - ext/layer_1.safetensors\n`, (d) => fs.symlinkSync(path.join(outside(), 'ct'), path.join(d, 'ext')))),
    expect: /config\.yaml: transcoders\[1\] "ext\/layer_1\.safetensors" resolves through a symbolic link to .*outside\/ct\/layer_1\.safetensors, outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'config.yaml hf:// path with %2e%2e climbs out',
    run: () => load(ctWith(`transcoders:\n  - hf://o/n/layer_0.safetensors\n  - hf://o/n/%2e%2e/outside/ct/layer_1.safetensors\n`, () => outside())),
    expect: /config\.yaml: transcoders\[1\] "hf:\/\/o\/n\/%2e%2e\/outside\/ct\/layer_1\.safetensors" points outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'circuit-tracer layer_<i>.safetensors found beside config.yaml is a link outside',
    run: () =>
      load(
        (() => {
          const d = writeSet(fresh('ct-link'), 'circuit-tracer');
          fs.rmSync(path.join(d, 'layer_1.safetensors'));
          fs.symlinkSync(path.join(outside(), 'ct', 'layer_1.safetensors'), path.join(d, 'layer_1.safetensors'));
          return d;
        })(),
      ),
    expect: /layer_1\.safetensors: layer_1\.safetensors resolves through a symbolic link to .*outside\/ct\/layer_1\.safetensors, outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'SAELens sae_weights.safetensors is a link outside the folder (steering reads it too)',
    run: () =>
      messageOf(() => {
        const d = writeSet(fresh('sae-link'), 'saelens');
        const w = path.join(d, 'layer_1', 'sae_weights.safetensors');
        fs.rmSync(w);
        fs.symlinkSync(path.join(outside(), 'sae', 'layer_1', 'sae_weights.safetensors'), w);
        return featureVector(d, 1, 0);
      }),
    expect: /layer_1\/cfg\.json: layer_1\/sae_weights\.safetensors resolves through a symbolic link to .*outside\/sae\/layer_1\/sae_weights\.safetensors, outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'SAELens layer subfolder is a link to a folder outside',
    run: () =>
      load(
        (() => {
          const d = writeSet(fresh('sae-sublink'), 'saelens');
          fs.rmSync(path.join(d, 'layer_1'), { recursive: true });
          fs.symlinkSync(path.join(outside(), 'sae', 'layer_1'), path.join(d, 'layer_1'));
          return d;
        })(),
      ),
    expect: /layer_1\/cfg\.json: layer_1\/cfg\.json resolves through a symbolic link to .*outside\/sae\/layer_1\/cfg\.json, outside the transcoder folder/,
  },
  {
    class: 6,
    name: 'feature_index.json beside a layer is a link outside the folder',
    run: async () => {
      const { attributor, graph } = await goodGraph();
      const t = attributor.transcoders.layers[0];
      const secret = path.join(outside(), 'feature_index.json');
      fs.writeFileSync(secret, JSON.stringify({ layer: 0, features: [{ id: 1, ctx: [['a', 'b', 'c', 1]] }] }));
      const idx = path.join(path.dirname(t.source), 'feature_index.json');
      fs.rmSync(idx, { force: true });
      fs.symlinkSync(secret, idx);
      const warnings: string[] = [];
      try {
        const card = await featureCard(attributor, graph, 0, 1, { index: new FeatureIndex(), onWarning: (m) => warnings.push(m) });
        return `${warnings.join(' | ')} | contexts: ${card.contexts ? 'read' : 'none'}`;
      } finally {
        fs.rmSync(idx, { force: true });
      }
    },
    expect: /feature_index\.json: feature_index\.json resolves through a symbolic link to .*outside\/feature_index\.json, outside the transcoder folder .*cards use the decoder instead \| contexts: none$/,
  },
];

// ---- Class 7: NaN/Inf in transcoder weights --------------------------------------------------------------------

/** Sets value `v` at `at` of each listed layer's array `key`. */
const poke =
  (key: keyof Omit<TranscoderWeights, 'dIn' | 'dSae'>, layer: number, at: number[], v: number) =>
  (w: TranscoderWeights[]) => {
    for (const i of at) w[layer][key]![i] = v;
  };
/** Every decoder row's element `d` (so whichever features fire, the first row read holds it). */
const everyRow = (d: number) => Array.from({ length: F }, (_, f) => f * D + d);

const numbers: BadInputCase[] = [
  {
    class: 7,
    name: 'NaN in W_enc (SAELens layout) during attribution',
    run: () => attributeWith(writeSet(fresh('nan-wenc'), 'saelens', {}, poke('wEnc_DF', 0, [2 * F + 5], NaN))),
    expect: /layer_0\/sae_weights\.safetensors: layer 0 transcoder: tensor "W_enc" \[16, 32\] holds NaN at \[2, 5\]/,
  },
  {
    class: 7,
    name: '+Inf in W_enc (circuit-tracer layout) during attribution',
    run: () => attributeWith(writeSet(fresh('inf-wenc'), 'circuit-tracer', {}, poke('wEnc_DF', 1, [3 * F + 7], Infinity))),
    expect: /layer_1\.safetensors: layer 1 transcoder: tensor "W_enc" \[32, 16\] holds Infinity at \[7, 3\]/,
  },
  {
    class: 7,
    name: 'NaN in b_enc during attribution',
    run: () => attributeWith(writeSet(fresh('nan-benc'), 'saelens', {}, poke('bEnc_F', 1, [9], NaN))),
    expect: /layer_1\/sae_weights\.safetensors: layer 1 transcoder: tensor "b_enc" \[32\] holds NaN at \[9\]/,
  },
  {
    class: 7,
    name: '-Inf in b_dec during attribution',
    run: () => attributeWith(writeSet(fresh('inf-bdec'), 'circuit-tracer', {}, poke('bDec_D', 0, [4], -Infinity))),
    expect: /layer_0\.safetensors: layer 0 transcoder: tensor "b_dec" \[16\] holds -Infinity at \[4\]/,
  },
  {
    class: 7,
    name: 'NaN in a JumpReLU threshold during attribution',
    run: () => attributeWith(writeSet(fresh('nan-thr'), 'saelens', { activation: 'jumprelu' }, poke('threshold_F', 1, [3], NaN))),
    expect: /layer_1\/sae_weights\.safetensors: layer 1 transcoder: tensor "threshold" \[32\] holds NaN at \[3\]/,
  },
  {
    class: 7,
    name: 'NaN in the decoder rows of active features during attribution',
    run: () => attributeWith(writeSet(fresh('nan-wdec'), 'saelens', {}, poke('wDec_FD', 1, everyRow(3), NaN))),
    expect: /layer_1\/sae_weights\.safetensors: layer 1 transcoder: tensor "W_dec" \[32, 16\] holds NaN at \[\d+, 3\]/,
  },
  {
    class: 7,
    name: 'NaN stored as float16 in W_dec during attribution',
    run: () => attributeWith(writeSet(fresh('nan-f16'), 'circuit-tracer', { dtype: 'F16' }, poke('wDec_FD', 0, everyRow(0), NaN))),
    expect: /layer_0\.safetensors: layer 0 transcoder: tensor "W_dec" \[32, 16\] holds NaN at \[\d+, 0\]/,
  },
  {
    class: 7,
    name: 'NaN in a decoder row read for a feature card (decoder × unembedding)',
    run: async () => {
      const { model } = await gpt2();
      const attributor = new Attributor(model, loadTranscoders(writeSet(fresh('nan-card'), 'saelens', {}, poke('wDec_FD', 1, [7 * D + 2], NaN)), model.config), { cacheDir: cacheDir() });
      try {
        return await messageOf(() => attributor.decoderLogits(1, 7));
      } finally {
        await attributor.dispose();
      }
    },
    expect: /layer_1\/sae_weights\.safetensors: layer 1 transcoder: tensor "W_dec" \[32, 16\] holds NaN at \[7, 2\]/,
  },
  {
    class: 7,
    name: 'Inf in the decoder row a steering vector is made from',
    run: () => messageOf(() => featureVector(writeSet(fresh('inf-steer'), 'circuit-tracer', {}, poke('wDec_FD', 1, [4 * D + 1], Infinity)), 1, 4)),
    expect: /layer_1\.safetensors: layer 1 transcoder: tensor "W_dec" \[32, 16\] holds Infinity at \[4, 1\]/,
  },
];

// ---- Class 12: crashes seen in the extension -------------------------------------------------------------------

const crashes: BadInputCase[] = [
  {
    class: 12,
    name: 'feature card of a tied-embedding Llama without a feature index',
    run: async () => {
      const { attributor, graph } = await tiedFamily('llama');
      const card = await featureCard(attributor, graph, 1, 3, { index: new FeatureIndex() });
      return `${card.source}; top ${card.top.length}, bottom ${card.bottom.length}`;
    },
    expect: /^decoder × unembedding \(no feature index\); top 10, bottom 10$/,
  },
  {
    class: 12,
    name: 'feature card of a tied-embedding Qwen3 without a feature index',
    run: async () => {
      const { attributor, graph } = await tiedFamily('qwen3');
      const card = await featureCard(attributor, graph, 0, 5, { index: new FeatureIndex() });
      return `${card.source}; top ${card.top.length}`;
    },
    expect: /^decoder × unembedding \(no feature index\); top 10$/,
  },
  {
    class: 12,
    name: 'output-token labels of a tied-embedding Gemma-2 graph',
    run: async () => {
      const { attributor, model } = await tiedFamily('gemma2');
      const ids = await attributor.topOutputTokens([
        { layer: 0, index: 1 },
        { layer: 1, index: 2 },
      ]);
      return `labels: ${ids.map((i) => JSON.stringify(model.tokenizer.tokenDisplay(i))).join(', ')}`;
    },
    expect: /^labels: ".+", ".+"$/,
  },
  {
    class: 12,
    name: 'SAELens transcoder for layer 5 on a 2-layer model',
    run: () =>
      load(
        (() => {
          const d = writeSet(fresh('sae-layer5'), 'saelens');
          const sub = path.join(d, 'layer_5');
          fs.renameSync(path.join(d, 'layer_1'), sub);
          const cfgFile = path.join(sub, 'cfg.json');
          const j = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
          j.metadata.hook_name = 'blocks.5.ln2.hook_normalized';
          j.metadata.hook_name_out = 'blocks.5.hook_mlp_out';
          fs.writeFileSync(cfgFile, JSON.stringify(j));
          return d;
        })(),
      ),
    expect: /layer_5\/cfg\.json: a transcoder for layer 5, but the model \(tiny-gpt2\) has 2 layers \(0\.\.1\)/,
  },
  {
    class: 12,
    name: 'circuit-tracer set with one layer_<i>.safetensors more than the model has layers',
    run: () =>
      load(
        (() => {
          const d = writeSet(fresh('ct-extra'), 'circuit-tracer');
          fs.copyFileSync(path.join(d, 'layer_1.safetensors'), path.join(d, 'layer_2.safetensors'));
          return d;
        })(),
      ),
    expect: /layer_2\.safetensors: a transcoder for layer 2, but the model \(tiny-gpt2\) has 2 layers \(0\.\.1\)/,
  },
  {
    class: 12,
    name: 'residual graph with a transcoder set made for a deeper model',
    run: async () => {
      const { dir } = await gpt2();
      const t = writeSet(fresh('ct-deeper'), 'circuit-tracer');
      for (const l of [2, 3]) fs.copyFileSync(path.join(t, 'layer_1.safetensors'), path.join(t, `layer_${l}.safetensors`));
      const r = await runCli(['graph', '--model', dir, '--transcoders', t, '--text', 'Hello world', '--out', path.join(root(), 'never.json')]);
      return `exit ${r.code}: ${r.stderr.trim()}`;
    },
    expect: /^exit [12]: .*layer_2\.safetensors: a transcoder for layer 2, but the model \(.*\) has 2 layers \(0\.\.1\)/,
    untouched: () => [path.join(root(), 'never.json'), path.join(root(), GRAPH_METADATA_FILE)],
  },
];

// ---- Class 13: graph files as the viewers read them -------------------------------------------------------------

const promptTokens = async (prompt: string) => JSON.stringify((await exportGood({ prompt })).metadata.prompt_tokens);

/** A folder for graph files, with `index` (when given) as its graph-metadata.json. */
function graphFolder(index?: string | ((dir: string) => void)): string {
  const dir = fresh('graphs');
  fs.mkdirSync(dir, { recursive: true });
  if (typeof index === 'string') fs.writeFileSync(path.join(dir, GRAPH_METADATA_FILE), index);
  else index?.(dir);
  return dir;
}
/** Writes the good graph to `<dir>/<name>` and reports the index's slugs (or the refusal). */
async function writeInto(dir: string, name: string): Promise<string> {
  const json = await exportGood();
  return messageOf(() => {
    writeGraphFiles(path.join(dir, name), json);
    const idx = JSON.parse(fs.readFileSync(path.join(dir, GRAPH_METADATA_FILE), 'utf8')) as { graphs: { slug: string; scan: string }[] };
    const written = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as GraphJson;
    return `index slugs ${idx.graphs.map((g) => g.slug).join(',')}; file slug ${written.metadata.slug}`;
  });
}
/**
 * A case writing into a folder prepared with `index`: the folder is made when the runner asks which paths must stay
 * untouched (just before `run`), and `run` writes there.
 */
const preparedFolder = (index: string | ((dir: string) => void), name: string) => {
  const state = { dir: '' };
  return {
    run: () => writeInto(state.dir, name),
    untouched: () => {
      state.dir = graphFolder(index);
      return [path.join(state.dir, GRAPH_METADATA_FILE), path.join(state.dir, name)];
    },
  };
};

const badIndex = preparedFolder('{"graphs": [', 'g1.json');
const notAList = preparedFolder('{"graphs": {"slug": "x"}}', 'g2.json');
const indexFolder = preparedFolder((d) => fs.mkdirSync(path.join(d, GRAPH_METADATA_FILE)), 'g3.json');
const badName = preparedFolder('{"graphs": []}', 'my graph.json');
const outIsIndex = preparedFolder('{"graphs": [{"slug": "kept"}]}', GRAPH_METADATA_FILE);

const viewers: BadInputCase[] = [
  {
    class: 13,
    name: 'prompt token that is a newline',
    run: () => promptTokens('Hello\nworld'),
    expect: /^\["Hello","⏎","world"\]$/,
  },
  {
    class: 13,
    name: 'prompt token that is a tab',
    run: () => promptTokens('if\tx'),
    expect: /^\["if","→","x"\]$/,
  },
  {
    class: 13,
    name: 'prompt tokens of a carriage return and newline',
    run: () => promptTokens('a\r\nb'),
    expect: /^\["a","↵","⏎","b"\]$/,
  },
  {
    class: 13,
    name: 'prompt tokens with other control characters (ESC, NUL, DEL)',
    run: () => promptTokens('x\u001by\u0000z\u007f'),
    expect: /␛.*␀.*␡/,
  },
  {
    class: 13,
    name: 'logit label of a newline token',
    run: async () => (await exportGood({ logit: 198 })).nodes.find((n) => n.feature_type === 'logit' && n.feature === 198)!.clerp,
    expect: /^Output "⏎" \(p=\d\.\d{3}\)$/,
  },
  {
    class: 13,
    name: 'scan of a SAELens set in a folder named "transcoders" with a release id',
    run: async () => {
      const d = path.join(fresh('models'), 'transcoders');
      writeSet(d, 'saelens');
      for (const l of [0, 1]) {
        const f = path.join(d, `layer_${l}`, 'cfg.json');
        const j = JSON.parse(fs.readFileSync(f, 'utf8'));
        j.metadata.release = 'tiny-gpt2/relu-transcoders-32';
        fs.writeFileSync(f, JSON.stringify(j));
      }
      const json = await exportGood({ scan: openTranscoderFolder(d).scan });
      return `scan ${json.metadata.scan}; set ${String((json.metadata.info as Record<string, unknown>).transcoder_set)}`;
    },
    expect: /^scan tiny-gpt2-relu-transcoders-32; set tiny-gpt2\/relu-transcoders-32$/,
  },
  {
    class: 13,
    name: 'scan of a circuit-tracer set whose config names hf:// files',
    run: async () => {
      const d = path.join(fresh('models'), 'transcoders');
      writeSet(d, 'circuit-tracer');
      fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - hf://mntss/tiny-transcoders/layer_0.safetensors\n  - hf://mntss/tiny-transcoders/layer_1.safetensors\n');
      return `scan ${(await exportGood({ scan: loadTranscoders(d, cfg2).scan })).metadata.scan}`;
    },
    expect: /^scan mntss-tiny-transcoders$/,
  },
  {
    class: 13,
    name: 'scan of a set with no id in its configs, in a folder named "transcoders"',
    run: async () => {
      const d = path.join(fresh('models'), 'tiny-gpt2', 'transcoders');
      writeSet(d, 'saelens');
      return `scan ${(await exportGood({ scan: openTranscoderFolder(d).scan })).metadata.scan}`;
    },
    expect: /^scan tiny-gpt2-transcoders$/,
  },
  {
    class: 13,
    name: 'max_feature_nodes when fewer features are active than the setting',
    run: async () => JSON.stringify((await exportGood()).metadata.generation_settings),
    expect: /^\{"max_n_logits":10,"desired_logit_prob":0\.95,"batch_size":512,"max_feature_nodes":1024\}$/,
  },
  {
    class: 13,
    name: 'max_feature_nodes when the setting keeps fewer features than are active',
    run: async () => {
      const { attributor } = await goodGraph();
      const g = await attributor.attribute(IDS, { maxFeatureNodes: 3 });
      const gs = (await exportGood({ graph: g })).metadata.generation_settings as Record<string, number>;
      return `kept ${g.nFeatures} of ${g.nActiveFeatures}; max_feature_nodes ${gs.max_feature_nodes}`;
    },
    expect: /^kept 3 of \d+; max_feature_nodes 3$/,
  },
  {
    class: 13,
    name: 'graph written into a folder with other graphs: graph-metadata.json lists them all',
    run: async () => {
      const dir = graphFolder(JSON.stringify({ graphs: [{ slug: 'older', scan: 's' }, { slug: 'g', scan: 'stale' }] }));
      return writeInto(dir, 'g.json');
    },
    expect: /^no error \(index slugs older,g; file slug g\)$/,
  },
  {
    class: 13,
    name: 'graph-metadata.json beside the graph is not valid JSON',
    run: badIndex.run,
    untouched: badIndex.untouched,
    expect: /graph-metadata\.json: not valid JSON .*fix or remove it/,
  },
  {
    class: 13,
    name: 'graph-metadata.json beside the graph has no "graphs" list',
    run: notAList.run,
    untouched: notAList.untouched,
    expect: /graph-metadata\.json: not a graph index: circuit-tracer's viewer expects \{"graphs"/,
  },
  {
    class: 13,
    name: 'graph-metadata.json beside the graph is a folder',
    run: indexFolder.run,
    untouched: indexFolder.untouched,
    expect: /graph-metadata\.json: graph-metadata\.json \(the viewer's index of this folder's graphs\) is a folder, not a regular file/,
  },
  {
    class: 13,
    name: 'graph file name that cannot be a viewer slug',
    run: badName.run,
    untouched: badName.untouched,
    expect: /my graph\.json: the file name "my graph\.json" cannot be a graph's slug/,
  },
  {
    class: 13,
    name: 'graph written to graph-metadata.json itself',
    run: outIsIndex.run,
    untouched: outIsIndex.untouched,
    expect: /graph-metadata\.json: the graph cannot be written to graph-metadata\.json: that is the viewer's index/,
  },
];

export const cases: BadInputCase[] = [...containment, ...numbers, ...crashes, ...viewers];
