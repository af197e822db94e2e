/**
 * Graph maths and files without a model: Cantor pairing, circuit-tracer's influence/pruning on the hand-made example
 * of reference/formats.md §1.7, JSON export validated against the graph schema (ajv), import of every id form, and
 * export → import → export round trips.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import Ajv from 'ajv';
import type { AttributionGraph } from '../../src/engine/circuits/graph';
import { cantor, cantorUnpair, importedToJson, parseGraphJson, toGraphJson } from '../../src/engine/circuits/graph-json';
import { circuitView, liveGraphJson, type LiveGraph } from '../../src/engine/circuits/view';
import { absRows, computeInfluence, findThreshold, findThresholdOfNonzeros, normalizeMatrix, normalizeRows, pruneGraph, sparseInfluence } from '../../src/engine/circuits/prune';

const schema = JSON.parse(fs.readFileSync(path.join(__dirname, '../../src/engine/circuits/graph-schema.json'), 'utf8'));
const validate = new Ajv({ strict: false, allErrors: true }).compile(schema);

/** formats.md §1.7: L = 2, P = 2; feature (layer 1, index 5, pos 1, act 3.25); logit 42 (p 0.625). */
function toyGraph(): AttributionGraph {
  const nFeatures = 1;
  const L = 2;
  const P = 2;
  const N = nFeatures + L * P + P + 1;
  const A = new Float32Array(N * N);
  const feat = 0;
  const err01 = nFeatures + 0 * P + 1;
  const tok1 = nFeatures + L * P + 1;
  const logit = N - 1;
  A[feat * N + tok1] = 2.0;
  A[feat * N + err01] = 0.5;
  A[logit * N + feat] = 1.5;
  A[logit * N + tok1] = -0.75;
  return {
    ids: [50256, 1000],
    nLayers: L,
    nPos: P,
    dSae: 16,
    nFeatures,
    nActiveFeatures: nFeatures,
    influenceCovered: 1,
    memoryLimited: false,
    featLayer: Int32Array.of(1),
    featPos: Int32Array.of(1),
    featIndex: Int32Array.of(5),
    featAct: Float32Array.of(3.25),
    logitIds: [42],
    logitProbs: Float32Array.of(0.625),
    logitValues: Float32Array.of(3),
    N,
    adjacency_NN: A,
    constant_N: new Float64Array(N),
    actual_N: new Float64Array(N),
    rowComputed: Uint8Array.from({ length: N }, (_, i) => (i === feat || i === logit ? 1 : 0)),
    timings_ms: {},
  };
}

const exportOpts = { slug: 'residual-toy-hi', scan: 'toy-2l', promptTokens: ['<bos>', 'Hi'], prompt: '<bos>Hi', tokenText: () => ' there', nodeThreshold: 1, edgeThreshold: 1 };

describe('graph maths', () => {
  it('Cantor pairing matches circuit-tracer (layer 0, feature 391 → 77027) and inverts', () => {
    assert.equal(cantor(0, 391), 77027);
    assert.equal(cantor(1, 5), 26);
    for (const [l, f] of [[0, 0], [3, 24575], [25, 131071], [11, 16383]]) assert.deepEqual(cantorUnpair(cantor(l, f)), [l, f]);
  });

  it('find_threshold: first cumulative fraction ≥ θ, ties kept, clamped', () => {
    assert.equal(findThreshold([4, 3, 2, 1], 0.5), 3); // 0.4, 0.7 → 3
    assert.equal(findThreshold([4, 3, 2, 1], 0.4), 4);
    assert.equal(findThreshold([1, 1, 1, 1], 0.3), 1);
    assert.equal(findThreshold([0, 0, 5], 1), 5);
    assert.equal(findThreshold([0, 0], 0.8), 0);
  });

  it('sparse pruning pieces agree with the dense definitions (threshold by selection, compressed influence)', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let trial = 0; trial < 20; trial++) {
      const n = 1 + Math.floor(rnd() * 300);
      const v = Float64Array.from({ length: n }, () => (rnd() < 0.3 ? 0 : Math.floor(rnd() * 20) / 4));
      const nz = v.filter((x) => x !== 0);
      for (const theta of [0, 0.3, 0.5, 0.8, 0.98, 1]) assert.equal(findThresholdOfNonzeros(Float64Array.from(nz), nz.length, theta), findThreshold([...v, 0], theta), `trial ${trial} θ ${theta}`);
      // A random upper-triangular (acyclic) matrix: compressed influence = dense influence.
      const N = 2 + Math.floor(rnd() * 40);
      const A = new Float32Array(N * N);
      for (let t = 0; t < N; t++) for (let s2 = t + 1; s2 < N; s2++) if (rnd() < 0.3) A[t * N + s2] = rnd() - 0.5;
      const w = Float64Array.from({ length: N }, (_, i) => (i < 2 ? rnd() : 0));
      const R = absRows(A, N);
      const sparse = sparseInfluence(R, normalizeRows(R), w);
      const dense = computeInfluence(normalizeMatrix(A, N), w, N);
      for (let i = 0; i < N; i++) assert.ok(Math.abs(sparse[i] - dense[i]) <= 1e-12 * Math.max(1, Math.abs(dense[i])));
    }
  });

  it('influence on the formats.md example: embedding 0.52, feature 0.92, error 1.0', () => {
    const g = toyGraph();
    const pr = pruneGraph(g, 1, 1);
    const c = pr.cumulativeInfluence;
    assert.ok(Math.abs(c[g.nFeatures + 2 * 2 + 1] - 0.52) < 0.005, `embedding ${c[7]}`);
    assert.ok(Math.abs(c[0] - 0.92) < 0.005, `feature ${c[0]}`);
    assert.ok(Math.abs(c[g.nFeatures + 1] - 1.0) < 1e-9);
    // node_threshold 0.8: the node whose cumulative share crosses 0.8 (the feature, 0.92) is kept, the error
    // (1.0) is pruned; embeddings and logits always stay. (Neuronpedia's display filter would hide the feature.)
    const pr8 = pruneGraph(g, 0.8, 0.98);
    assert.equal(pr8.nodeMask[0], 1);
    assert.equal(pr8.nodeMask[g.nFeatures + 1], 0);
    assert.equal(pr8.nodeMask[g.N - 1], 1);
    assert.throws(() => pruneGraph(g, 1.5), /node threshold must be in \[0, 1\]/);
  });
});

describe('graph JSON', () => {
  it('exports the example with the documented ids and validates against the schema', () => {
    const g = toyGraph();
    const json = toGraphJson(g, pruneGraph(g, 1, 1), exportOpts);
    assert.ok(validate(json), JSON.stringify(validate.errors));
    const ids = json.nodes.map((n) => n.node_id);
    assert.deepEqual(ids, ['1_5_1', '0_-1_1', 'E_50256_0', 'E_1000_1', '3_42_1']);
    const f = json.nodes[0];
    assert.equal(f.feature, 26);
    assert.equal(f.jsNodeId, '1_5-0');
    assert.equal(json.nodes[1].jsNodeId, '0_-1-1');
    assert.equal(json.nodes[4].clerp, 'Output " there" (p=0.625)');
    assert.equal(json.nodes[4].is_target_logit, true);
    assert.equal(json.metadata.schema_version, 1);
    assert.deepEqual(
      json.links.map((l) => [l.source, l.target, l.weight]),
      [['0_-1_1', '1_5_1', 0.5], ['E_1000_1', '1_5_1', 2], ['1_5_1', '3_42_1', 1.5], ['E_1000_1', '3_42_1', -0.75]],
    );
  });

  it('round-trips export → import → export unchanged', () => {
    const g = toyGraph();
    const json = JSON.parse(JSON.stringify(toGraphJson(g, pruneGraph(g, 1, 1), exportOpts)));
    const imported = parseGraphJson(json);
    assert.deepEqual(imported.nodes.map((n) => [n.kind, n.layer, n.pos, n.index]), [
      ['feature', 1, 1, 5],
      ['error', 0, 1, null],
      ['token', -1, 0, 50256],
      ['token', -1, 1, 1000],
      ['logit', 3, 1, 42],
    ]);
    const again = JSON.parse(JSON.stringify(importedToJson(imported)));
    assert.deepEqual(again, json);
    assert.ok(validate(again));
  });

  it('imports old error ids, Neuronpedia converter ids and old feature encodings by feature_type', () => {
    const base = { metadata: { slug: 's', scan: 'gemma-2-2b', prompt_tokens: ['a', 'b'], prompt: 'ab' }, qParams: {} };
    const old = parseGraphJson({
      ...base,
      nodes: [
        { node_id: '0_3_1', feature: -1, layer: '3', ctx_idx: 1, feature_type: 'mlp reconstruction error', jsNodeId: '3_1-0', clerp: '' },
        { node_id: '2_391_1', feature: 200391, layer: '2', ctx_idx: 1, feature_type: 'cross layer transcoder', jsNodeId: '2_391-0', clerp: '' },
        { node_id: '5_cro_77_1', feature: null, layer: 5, ctx_idx: 1, feature_type: 'unexplored node', jsNodeId: 'x', clerp: '' },
        { node_id: '5_error_mlp_1', feature: null, layer: 5, ctx_idx: 1, feature_type: 'mlp reconstruction error', jsNodeId: 'y', clerp: '' },
        { node_id: 'E_2_0', feature: 0, layer: 'E', ctx_idx: 0, feature_type: 'embedding', jsNodeId: 'E_2-0', clerp: '' },
      ],
      links: [
        { source: 'E_2_0', target: '2_391_1', weight: 1 },
        { source: 'nowhere', target: '2_391_1', weight: 1 },
      ],
    });
    assert.deepEqual(old.nodes.map((n) => [n.kind, n.layer, n.index]), [
      ['error', 3, null],
      ['feature', 2, 391],
      ['feature', 5, 77],
      ['error', 5, null],
      ['token', -1, 2],
    ]);
    assert.equal(old.links.length, 1);
    assert.equal(old.droppedLinks, 1);
    assert.throws(() => parseGraphJson({ nodes: [], links: [] }, 'g.json'), /g\.json: missing top-level "metadata"/);
  });
});

describe('control characters: the file has the viewer’s glyphs, the panel the raw tokens', () => {
  const g = { ...toyGraph(), settings: { maxNLogits: 10, desiredLogitProb: 0.95, maxFeatureNodes: null, featureBatch: 512 } };
  const live = {
    model: { tokenizer: { tokenText: () => '\n' }, config: { name: 'toy' } },
    attributor: { transcoders: { scan: 'org/toy-2l//sub', dir: '/t' } },
    graph: g,
    prune: pruneGraph(g, 1, 1),
    prompt: '<bos>\t\n',
    tokens: ['<bos>\t', '\n'],
    nodeThreshold: 1,
    edgeThreshold: 1,
    ms: 1,
    budgetMB: 1,
    slug: 'toy',
  } as unknown as LiveGraph;

  it('export: ⏎ → in prompt_tokens and the logit label, scan safe for Neuronpedia with the id in info, settings not counts; valid', () => {
    const json = liveGraphJson(live);
    assert.deepEqual(json.metadata.prompt_tokens, ['<bos>→', '⏎']);
    assert.equal(json.nodes.find((n) => n.feature_type === 'logit')!.clerp, 'Output "⏎" (p=0.625)');
    assert.equal(json.metadata.scan, 'org-toy-2l-sub');
    assert.equal((json.metadata.info as Record<string, unknown>).transcoder_set, 'org/toy-2l//sub');
    assert.deepEqual(json.metadata.generation_settings, { max_n_logits: 10, desired_logit_prob: 0.95, batch_size: 512 });
    assert.ok(validate(JSON.parse(JSON.stringify(json))), JSON.stringify(validate.errors));
  });

  it('the panel’s view of a live graph keeps the raw tokens (it draws its own glyphs)', () => {
    const v = circuitView({ live });
    assert.deepEqual(v.tokens, ['<bos>\t', '\n']);
    assert.equal(v.nodes.find((n) => n.kind === 'logit')!.label, 'Output "\n" (p=0.625)');
    // An imported file is shown as written.
    assert.deepEqual(circuitView({ imported: parseGraphJson(JSON.parse(JSON.stringify(liveGraphJson(live)))) }).tokens, ['<bos>→', '⏎']);
  });
});
