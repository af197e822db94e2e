/**
 * Feature labels (src/engine/circuits/labels.ts): the explanation files researchers have — a JSON list or JSONL of
 * {layer, index, description}, Neuronpedia's export (source-id layers, string indices) — read and checked against
 * the transcoder set's shape, and labels written into an exported graph's feature nodes as `clerp` and read back.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { parseLabels, readLabelFile } from '../../src/engine/circuits/labels';
import { parseGraphJson, toGraphJson } from '../../src/engine/circuits/graph-json';
import type { AttributionGraph } from '../../src/engine/circuits/graph';
import type { PruneResult } from '../../src/engine/circuits/prune';

const D_SAE = [100, 100, 50];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-labels-'));

describe('feature label files', () => {
  it('a JSON list, JSONL and Neuronpedia export all give "layer:index" → description', () => {
    const list = parseLabels(JSON.stringify([{ layer: 0, index: 3, description: 'Texas' }, { layer: 2, index: 49, description: ' capital cities ' }]), 'l.json', D_SAE);
    assert.deepEqual([...list], [['0:3', 'Texas'], ['2:49', 'capital cities']]);
    const jsonl = parseLabels('{"layer": 1, "index": 7, "description": "say a number"}\n\n{"layer": 1, "index": 8, "description": "dates"}\n', 'l.jsonl', D_SAE);
    assert.deepEqual([...jsonl], [['1:7', 'say a number'], ['1:8', 'dates']]);
    // Neuronpedia's export: source-id layers, string indices, several explanations per feature (the first is kept).
    const np = [
      { modelId: 'gemma-2-2b', layer: '1-gemmascope-transcoder-16k', index: '12', description: 'French words', explanationModelName: 'gpt-4o-mini', typeName: 'oai_token-act-pair' },
      { modelId: 'gemma-2-2b', layer: '1-gemmascope-transcoder-16k', index: '12', description: 'later duplicate' },
    ];
    assert.deepEqual([...parseLabels(JSON.stringify(np), 'np.json', D_SAE)], [['1:12', 'French words']]);
    assert.deepEqual([...parseLabels(JSON.stringify({ explanations: np }), 'np.json', D_SAE)], [['1:12', 'French words']]);
  });

  it('refusals name the file and the entry: a feature that does not exist, a layer beyond the set, bad lines and fields', () => {
    assert.throws(() => parseLabels(JSON.stringify([{ layer: 0, index: 1, description: 'a' }, { layer: 2, index: 50, description: 'b' }]), 'l.json', D_SAE), /l\.json: entry 2 names feature 50 of layer 2, but that layer has 50 features \(0\.\.49\)/);
    assert.throws(() => parseLabels('[{"layer": 3, "index": 0, "description": "x"}]', 'l.json', D_SAE), /entry 1 names layer 3, but the transcoders have layers 0\.\.2/);
    assert.throws(() => parseLabels('{"layer": 0, "index": 0, "description": "x"}\nnot json\n', 'l.jsonl', D_SAE), /l\.jsonl: line 2 is not valid JSON/);
    assert.throws(() => parseLabels('[{"layer": "x-res", "index": 0, "description": "x"}]', 'l.json', D_SAE), /entry 1: "layer" must be a layer number/);
    assert.throws(() => parseLabels('[{"layer": 0, "index": -1, "description": "x"}]', 'l.json', D_SAE), /entry 1: "index" must be a whole number ≥ 0, got -1/);
    assert.throws(() => parseLabels('[{"layer": 0, "index": 1}]', 'l.json', D_SAE), /entry 1: "description" must be a string/);
    assert.throws(() => parseLabels('[1, 2', 'l.json', D_SAE), /l\.json: not valid JSON/);
    assert.throws(() => readLabelFile(dir, D_SAE), /label file|folder|directory/i);
    const file = path.join(dir, 'ok.jsonl');
    fs.writeFileSync(file, '{"layer": 0, "index": 0, "description": "first"}\n');
    assert.deepEqual([...readLabelFile(file, D_SAE)], [['0:0', 'first']]);
  });

  it('labels are written as the feature nodes\' clerp and read back from the file', () => {
    // Two features (layer 0 #3 at positions 0 and 1), errors, tokens, one logit; every edge into the logit.
    const P = 2;
    const L = 1;
    const nFeatures = 2;
    const N = nFeatures + L * P + P + 1;
    const adjacency_NN = new Float32Array(N * N);
    const logit = N - 1;
    for (let s = 0; s < N - 1; s++) adjacency_NN[logit * N + s] = 0.5 + s;
    adjacency_NN[1 * N + 0] = 0.25;
    const g: AttributionGraph = {
      ids: [10, 11], nLayers: L, nPos: P, dSae: 100, nFeatures, nActiveFeatures: nFeatures, influenceCovered: 1, memoryLimited: false,
      featLayer: Int32Array.from([0, 0]), featPos: Int32Array.from([0, 1]), featIndex: Int32Array.from([3, 3]), featAct: Float32Array.from([1, 2]),
      logitIds: [42], logitProbs: Float32Array.from([1]), logitValues: Float32Array.from([2]), N, adjacency_NN,
      constant_N: new Float64Array(N), actual_N: new Float64Array(N), rowComputed: new Uint8Array(N).fill(1), timings_ms: {},
    };
    const pr: PruneResult = { nodeMask: new Uint8Array(N).fill(1), edgeMask: new Uint8Array(N * N).fill(1), influence: new Float64Array(N), cumulativeInfluence: new Float64Array(N), replacementScore: 1, completenessScore: 1 };
    const json = toGraphJson(g, pr, { slug: 's', scan: 'x', promptTokens: ['a', 'b'], prompt: 'ab', tokenText: String, nodeThreshold: 0.8, edgeThreshold: 0.98, featureLabel: (l, i) => (l === 0 && i === 3 ? 'Texas' : undefined) });
    const features = json.nodes.filter((n) => n.feature_type === 'cross layer transcoder');
    assert.deepEqual(features.map((n) => n.clerp), ['Texas', 'Texas']);
    const back = parseGraphJson(JSON.parse(JSON.stringify(json)));
    assert.deepEqual(back.nodes.filter((n) => n.kind === 'feature').map((n) => n.clerp), ['Texas', 'Texas']);
    assert.ok(json.nodes.filter((n) => n.feature_type !== 'cross layer transcoder').every((n) => !n.clerp || n.feature_type === 'logit'));
  });
});
