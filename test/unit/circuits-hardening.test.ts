/**
 * What issue 14 asks of transcoder folders and graph files, on the inputs that must keep working: Hub cache layouts
 * (links into the cache's blobs) and links inside the folder load, hf:// paths with a revision resolve; the transcoder
 * set's id for `scan`; the viewer's token glyphs; graph-metadata.json kept as circuit-tracer keeps it; the NaN/Inf
 * checks on the weights each name the layer, tensor and element. (The refusals are in test/catalogue/circuits.cases.ts.)
 */
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { ModelConfig } from '../../src/engine/checkpoint/config';
import { isHubBlob, isInside } from '../../src/engine/circuits/contain';
import { GRAPH_METADATA_FILE, readGraphMetadata, viewerToken, writeGraphFiles, type GraphJson } from '../../src/engine/circuits/graph-json';
import { checkFiniteTensor, loadTranscoders, openTranscoderFolder, readDecoderRows, readEncoderColumns, readFiniteVector, transcoderSetId } from '../../src/engine/circuits/transcoders';
import { randomTranscoderWeights, writeCircuitTracerTranscoders, writeSaeLensTranscoders } from '../../src/engine/circuits/transcoders-write';
import { featureVector } from '../../src/engine/steering/vectors';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-harden-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const cfg = { nLayers: 2, dModel: 8, nHeads: 2, dHead: 4, dMlp: 32, nCtx: 16, vocabSize: 100, lnEps: 1e-5, act: 'gelu_new', name: 't', architecture: 'gpt2' } as ModelConfig;
const W = randomTranscoderWeights(2, 8, 12, { seed: 3 });

/** Moves every regular file under `dir` into `blobs` (named by content hash) and links it back relatively, as the Hub cache does. */
function intoBlobs(dir: string, blobs: string, absolute = false): void {
  fs.mkdirSync(blobs, { recursive: true });
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) intoBlobs(p, blobs, absolute);
    else if (e.isFile()) {
      const sha = crypto.createHash('sha256').update(fs.readFileSync(p).toString('base64')).digest('hex');
      const blob = path.join(blobs, sha);
      if (!fs.existsSync(blob)) fs.renameSync(p, blob);
      else fs.rmSync(p);
      fs.symlinkSync(absolute ? blob : path.relative(dir, blob), p);
    }
  }
}

describe('containment keeps what must work', () => {
  it('a circuit-tracer set in the Hub cache layout (snapshots/<rev>/file -> ../../blobs/<sha>) loads, its scan the repository', () => {
    const repo = path.join(root, 'hub', 'models--mntss--tiny-tc');
    const snap = path.join(repo, 'snapshots', 'a'.repeat(40));
    writeCircuitTracerTranscoders(snap, W, { activation: 'relu' });
    intoBlobs(snap, path.join(repo, 'blobs'));
    assert.ok(fs.lstatSync(path.join(snap, 'layer_0.safetensors')).isSymbolicLink());
    const set = loadTranscoders(snap, cfg);
    assert.equal(set.layers.length, 2);
    assert.equal(set.scan, 'mntss/tiny-tc');
    assert.deepEqual(featureVector(snap, 1, 2).vector, W[1].wDec_FD.slice(2 * 8, 3 * 8));
  });

  it('a SAELens set in a Hub cache subfolder loads, its scan repo//subfolder', () => {
    const repo = path.join(root, 'hub', 'models--org--saes');
    const sub = path.join(repo, 'snapshots', 'b'.repeat(40), 'gpt2-tc');
    writeSaeLensTranscoders(sub, W, { activation: 'jumprelu' });
    intoBlobs(path.join(repo, 'snapshots'), path.join(repo, 'blobs'));
    const set = loadTranscoders(sub, cfg);
    assert.equal(set.layers[1].activation.kind, 'jumprelu');
    assert.equal(set.scan, 'org/saes//gpt2-tc');
  });

  it('absolute links into a Hub cache blob store elsewhere (old huggingface-cli --local-dir folders) load', () => {
    const local = path.join(root, 'local-dir', 'transcoders');
    writeCircuitTracerTranscoders(local, W, { activation: 'relu' });
    intoBlobs(local, path.join(root, 'cache', 'models--o--n', 'blobs'), true);
    assert.ok(path.isAbsolute(fs.readlinkSync(path.join(local, 'layer_1.safetensors'))));
    assert.equal(loadTranscoders(local, cfg).layers.length, 2);
  });

  it('a link that stays inside the folder, and a folder that is itself a link, load', () => {
    const d = path.join(root, 'inner-links');
    writeSaeLensTranscoders(d, W, { activation: 'relu' });
    fs.mkdirSync(path.join(d, 'store'));
    fs.renameSync(path.join(d, 'layer_1'), path.join(d, 'store', 'layer_1'));
    fs.symlinkSync(path.join('store', 'layer_1'), path.join(d, 'layer_1'));
    assert.equal(loadTranscoders(d, cfg).layers.length, 2);
    const viaLink = path.join(root, 'linked-set');
    fs.symlinkSync(d, viaLink);
    assert.equal(loadTranscoders(viaLink, cfg).layers.length, 2);
  });

  it('hf:// paths with ?revision= and a subfolder resolve to the downloaded files', () => {
    const d = path.join(root, 'hf-rev');
    writeCircuitTracerTranscoders(d, W, { activation: 'relu' });
    fs.mkdirSync(path.join(d, 'sub'));
    for (const l of [0, 1]) fs.renameSync(path.join(d, `layer_${l}.safetensors`), path.join(d, 'sub', `layer_${l}.safetensors`));
    fs.appendFileSync(path.join(d, 'config.yaml'), 'transcoders:\n  - hf://o/n/sub/layer_0.safetensors?revision=abc\n  - hf://o/n/sub/layer_1.safetensors\n');
    const set = loadTranscoders(d, cfg);
    assert.equal(set.layers[0].wDec.file, path.join(d, 'sub', 'layer_0.safetensors'));
    assert.equal(set.scan, 'o/n');
  });

  it('isInside and isHubBlob', () => {
    assert.ok(isInside('/a/b', '/a/b'));
    assert.ok(isInside('/a/b', '/a/b/..c'));
    assert.ok(!isInside('/a/b', '/a/bc'));
    assert.ok(!isInside('/a/b', '/a'));
    assert.ok(isHubBlob(`/home/u/.cache/huggingface/hub/models--o--n/blobs/${'0'.repeat(64)}`));
    assert.ok(!isHubBlob('/home/u/.cache/huggingface/hub/models--o--n/blobs/../../../etc/passwd'));
    assert.ok(!isHubBlob('/etc/passwd'));
  });
});

describe('the transcoder set id (graph metadata scan)', () => {
  const ct = (y: Record<string, unknown>, dir = '/data/tc') => transcoderSetId(dir, 'circuit-tracer', [y]);
  const sae = (c: Record<string, unknown>, dir = '/data/tc') => transcoderSetId(dir, 'saelens', [c]);
  it('circuit-tracer: scan, repo_id (+subfolder, revision), the hf:// repository, model_name, the folder', () => {
    assert.equal(ct({ scan: 'gemma-2-2b', model_name: 'google/gemma-2-2b' }), 'gemma-2-2b');
    assert.equal(ct({ repo_id: 'mntss/clt', subfolder: 'plt', revision: 'v2' }), 'mntss/clt//plt@v2');
    assert.equal(ct({ hub_repo: 'mwhanna/gemma-scope-transcoders', model_name: 'google/gemma-2-2b' }), 'mwhanna/gemma-scope-transcoders');
    assert.equal(ct({ model_name: 'google/gemma-2-2b' }, '/models/g/transcoders'), 'google/gemma-2-2b');
    assert.equal(ct({ model_name: 'google/gemma-2-2b' }, '/models/g/relu-16k'), 'google/gemma-2-2b/relu-16k');
    assert.equal(ct({}, '/models/gpt2-small/transcoders'), 'gpt2-small-transcoders');
  });
  it('SAELens: release or sae_set, the neuronpedia source set, the Hub cache, the folder', () => {
    assert.equal(sae({ metadata: { release: 'gemma-scope-2b-pt-transcoders' } }), 'gemma-scope-2b-pt-transcoders');
    assert.equal(sae({ sae_set: 'set-a' }), 'set-a');
    assert.equal(sae({ metadata: { neuronpedia_id: 'gemma-2-2b/12-gemmascope-transcoder-16k' } }), 'gemma-2-2b/gemmascope-transcoder-16k');
    assert.equal(sae({}, `/c/models--org--name/snapshots/${'c'.repeat(40)}`), 'org/name');
    assert.equal(sae({}, '/x/my-set'), 'my-set');
  });
  it('openTranscoderFolder uses it', () => {
    const d = path.join(root, 'ids', 'gpt2', 'transcoders');
    writeSaeLensTranscoders(d, W, { activation: 'relu' });
    assert.equal(openTranscoderFolder(d).scan, 'gpt2-transcoders');
  });
});

describe('graph files for circuit-tracer’s viewer', () => {
  it('viewerToken: ⏎ → ↵ for newline, tab, carriage return; control pictures for the other controls; text unchanged', () => {
    assert.equal(viewerToken('a\nb\tc\rd'), 'a⏎b→c↵d');
    assert.equal(viewerToken('\u0000\u0001\u001b\u001f\u007f'), '␀␁␛␟␡');
    assert.equal(viewerToken(' héllo ⏎ 🙂'), ' héllo ⏎ 🙂');
  });

  const json = (slug: string, scan = 's'): GraphJson => ({ metadata: { slug, scan, prompt_tokens: ['a'], prompt: 'a' }, qParams: {}, nodes: [], links: [] });

  it('graph-metadata.json: made beside the first graph, an entry per slug (replaced, not repeated), other keys kept, nothing left behind', () => {
    const d = path.join(root, 'graphs');
    fs.mkdirSync(d);
    const r = writeGraphFiles(path.join(d, 'one.json'), json('ignored'));
    assert.deepEqual(r, { metadataFile: path.join(d, GRAPH_METADATA_FILE), slug: 'one' });
    assert.equal((JSON.parse(fs.readFileSync(path.join(d, 'one.json'), 'utf8')) as GraphJson).metadata.slug, 'one', 'the slug is the file name the viewer opens');
    const idx = readGraphMetadata(r.metadataFile);
    idx.note = 'kept';
    fs.writeFileSync(r.metadataFile, JSON.stringify(idx));
    writeGraphFiles(path.join(d, 'two.json'), json('x'));
    writeGraphFiles(path.join(d, 'one.json'), json('x', 'new-scan'));
    const after2 = readGraphMetadata(r.metadataFile);
    assert.deepEqual(after2.graphs.map((g) => [g.slug, g.scan]), [['two', 's'], ['one', 'new-scan']]);
    assert.equal(after2.note, 'kept');
    assert.deepEqual(fs.readdirSync(d).sort(), ['graph-metadata.json', 'one.json', 'two.json']);
  });
});

describe('NaN and Inf in transcoder weights', () => {
  const d = path.join(root, 'nan');
  const w = randomTranscoderWeights(2, 8, 12, { seed: 4 });
  w[1].wDec_FD[5 * 8 + 6] = NaN;
  w[0].wEnc_DF[3 * 12 + 9] = -Infinity;
  w[0].bDec_D[2] = Infinity;
  writeSaeLensTranscoders(d, w, { activation: 'relu' });
  const set = () => loadTranscoders(d, cfg);

  it('loading reads headers only: the set loads', () => assert.equal(set().layers.length, 2));
  it('decoder rows name the layer, the tensor and [feature, column]; finite rows read', () => {
    const t = set().layers[1];
    assert.throws(() => readDecoderRows(t, [1, 5]), /layer_1\/sae_weights\.safetensors: layer 1 transcoder: tensor "W_dec" \[12, 8\] holds NaN at \[5, 6\]/);
    assert.equal(readDecoderRows(t, [1, 4]).length, 16);
  });
  it('encoder columns name [d_in, feature] in the SAELens layout', () => {
    assert.throws(() => readEncoderColumns(set().layers[0], [2, 9]), /tensor "W_enc" \[8, 12\] holds -Infinity at \[3, 9\]/);
  });
  it('whole vectors and whole tensors', () => {
    assert.throws(() => readFiniteVector(0, set().layers[0].bDec), /layer 0 transcoder: tensor "b_dec" \[8\] holds Infinity at \[2\]/);
    assert.throws(() => checkFiniteTensor(0, set().layers[0].wEnc), /tensor "W_enc" \[8, 12\] holds -Infinity at \[3, 9\]/);
    checkFiniteTensor(1, set().layers[1].wEnc);
  });
});
