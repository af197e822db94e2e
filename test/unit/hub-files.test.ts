/** Hub download, pure parts: repository ids, hostile paths, listing entries, which files are picked. */
import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { connectError, HubError } from '../../src/engine/hub/errors';
import { resolveEndpoint } from '../../src/engine/hub/download';
import { checkListEntry, checkRepoPath, checkRevision, repoIdProblem, resolveInside, selectModelFiles, selectTranscoderFiles, type ListedFile } from '../../src/engine/hub/files';

const isHub = (reason: string) => (e: unknown) => e instanceof HubError && e.reason === reason;
const file = (p: string, size = 10): ListedFile => ({ path: p, size, oid: 'a'.repeat(40) });

describe('hub: names and paths', () => {
  it('accepts owner/name and rejects everything else', () => {
    for (const ok of ['openai-community/gpt2', 'EleutherAI/pythia-70m', 'a/b', 'google/gemma-scope-2b-pt-res', 'x_y/z.v1']) assert.equal(repoIdProblem(ok), null, ok);
    for (const bad of ['gpt2', 'a/b/c', '../x', 'a/..', 'a/-b', 'a/b-', 'a--b/c', 'a/b..c', '/a/b', 'a b/c', 'a/b c', 'a/\nb', '']) assert.notEqual(repoIdProblem(bad), null, JSON.stringify(bad));
  });

  it('accepts branches, tags and commits as revisions, refuses traversal and control characters', () => {
    for (const ok of ['main', 'v1.0', 'refs/pr/1', 'a'.repeat(40)]) assert.equal(checkRevision(ok), ok);
    for (const bad of ['', '../main', 'a/../b', '/main', 'main/', 'a b', 'a\\b', 'x\0']) assert.throws(() => checkRevision(bad), isHub('not-found'), JSON.stringify(bad));
  });

  it('refuses absolute, parent, backslash, drive-letter and empty-segment paths from the server', () => {
    for (const ok of ['config.json', 'layer_3/width_16k/cfg.json', 'a.b/c..d']) assert.equal(checkRepoPath(ok, 'r/r'), ok);
    for (const bad of ['../x', 'a/../../x', '/etc/passwd', 'C:/x', 'c:x', 'a\\..\\x', 'a//b', './a', 'a/.', '', 'a\0b', 7, null]) {
      assert.throws(() => checkRepoPath(bad, 'r/r'), isHub('hostile'), JSON.stringify(bad));
    }
  });

  it('keeps resolved paths inside the destination', () => {
    const dir = path.join(os.tmpdir(), 'dest');
    assert.equal(resolveInside(dir, 'a/b.json', 'r/r'), path.join(dir, 'a', 'b.json'));
    assert.throws(() => resolveInside(dir, '../dest2/x', 'r/r'), isHub('hostile'));
    assert.throws(() => resolveInside(dir, '..', 'r/r'), isHub('hostile'));
  });

  it('checks listing entries: sizes, oids, and that every file has a checksum', () => {
    assert.deepEqual(checkListEntry({ type: 'file', path: 'm.safetensors', size: 5, oid: 'b'.repeat(40), lfs: { oid: 'c'.repeat(64), size: 5 } }, 'r/r'), {
      path: 'm.safetensors',
      size: 5,
      oid: 'b'.repeat(40),
      sha256: 'c'.repeat(64),
    });
    assert.equal(checkListEntry({ type: 'directory', path: 'd', size: 0 }, 'r/r'), undefined);
    assert.throws(() => checkListEntry({ type: 'directory', path: '../d', size: 0 }, 'r/r'), isHub('hostile'));
    assert.throws(() => checkListEntry({ type: 'file', path: 'x', size: -1, oid: 'b'.repeat(40) }, 'r/r'), isHub('hostile'));
    assert.throws(() => checkListEntry({ type: 'file', path: 'x', size: 1.5, oid: 'b'.repeat(40) }, 'r/r'), isHub('hostile'));
    assert.throws(() => checkListEntry({ type: 'file', path: 'x', size: 1 }, 'r/r'), /no checksum/);
    assert.throws(() => checkListEntry({ type: 'file', path: 'x', size: 1, oid: 'xyz' }, 'r/r'), /invalid git oid/);
    assert.throws(() => checkListEntry({ type: 'file', path: 'x', size: 5, lfs: { oid: 'c'.repeat(64), size: 6 } }, 'r/r'), /two sizes/);
  });
});

describe('hub: which files', () => {
  it('a model takes root config, tokenizer, licence and safetensors; never pickles or subfolders', () => {
    const listed = [
      'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt',
      'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'LICENSE', 'README.md',
      'pytorch_model.bin', 'tf_model.h5', 'flax_model.msgpack', 'onnx/model.onnx', 'onnx/config.json', 'sub/model.safetensors', '.gitattributes', 'training_args.pt',
    ].map((p) => file(p));
    const picked = selectModelFiles(listed, 'r/r').map((f) => f.path).sort();
    assert.deepEqual(picked, [
      'LICENSE', 'README.md', 'config.json', 'generation_config.json', 'merges.txt', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors',
      'model.safetensors.index.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json',
    ]);
  });

  it('refuses a pickle-only model and says why', () => {
    assert.throws(() => selectModelFiles([file('config.json'), file('pytorch_model.bin')], 'r/r'), (e) => isHub('no-weights')(e) && /pickle.*pytorch_model\.bin/.test((e as Error).message));
    assert.throws(() => selectModelFiles([file('model.safetensors')], 'r/r'), /no config\.json/);
  });

  it('a transcoder set keeps the structure below its subfolder and takes only safetensors, configs and notes', () => {
    const listed = ['sets/a/layer_0/cfg.json', 'sets/a/layer_0/sae_weights.safetensors', 'sets/a/layer_0/params.npz', 'sets/a/README.md', 'sets/a/layer_1/x.pt'].map((p) => file(p));
    assert.deepEqual(
      selectTranscoderFiles(listed, 'r/r', 'sets/a').map((x) => x.local),
      ['layer_0/cfg.json', 'layer_0/sae_weights.safetensors', 'README.md'],
    );
    assert.throws(() => selectTranscoderFiles([file('other/x.safetensors')], 'r/r', 'sets/a'), isHub('hostile'));
    assert.throws(() => selectTranscoderFiles([file('sets/a/cfg.json')], 'r/r', 'sets/a'), isHub('no-weights'));
  });

  it('takes the endpoint from the argument, else HF_ENDPOINT, else huggingface.co', () => {
    assert.equal(resolveEndpoint('http://127.0.0.1:9/', {}), 'http://127.0.0.1:9');
    assert.equal(resolveEndpoint('', { HF_ENDPOINT: 'https://hf-mirror.com' }), 'https://hf-mirror.com');
    assert.equal(resolveEndpoint(undefined, {}), 'https://huggingface.co');
    assert.throws(() => resolveEndpoint('file:///etc', {}), /http/);
    assert.throws(() => resolveEndpoint('not a url', {}), /not a URL/);
  });
});

describe('hub: the true cause of a failed connection', () => {
  // undici wraps the socket error: TypeError('fetch failed', { cause: Error{ code } }).
  const failed = (code: string, message = code) => new TypeError('fetch failed', { cause: Object.assign(new Error(message), { code }) });
  const url = 'https://hub.example:8443/api/models/a/b/revision/main';
  const cases: [string, string, RegExp][] = [
    ['ENOTFOUND', 'dns', /^cannot resolve the host name hub\.example \(ENOTFOUND: no such host in DNS\)/],
    ['EAI_AGAIN', 'offline', /^cannot resolve the host name hub\.example \(EAI_AGAIN: the name server did not answer\): you appear to be offline/],
    ['ECONNREFUSED', 'refused', /^hub\.example:8443 refused the connection \(ECONNREFUSED\): no server is listening there/],
    ['ENETUNREACH', 'offline', /^cannot reach hub\.example:8443 \(ENETUNREACH: the network has no route to it\): you appear to be offline/],
    ['EHOSTUNREACH', 'offline', /you appear to be offline/],
    ['UND_ERR_CONNECT_TIMEOUT', 'timeout', /^could not connect to hub\.example:8443 \(UND_ERR_CONNECT_TIMEOUT\): the host does not answer, or a firewall drops the connection/],
    ['CERT_HAS_EXPIRED', 'tls', /^TLS with hub\.example:8443 failed: its certificate is not trusted \(CERT_HAS_EXPIRED\b.*NODE_EXTRA_CA_CERTS/],
    ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'tls', /certificate is not trusted \(UNABLE_TO_GET_ISSUER_CERT_LOCALLY/],
    ['ERR_TLS_CERT_ALTNAME_INVALID', 'tls', /certificate is not trusted \(ERR_TLS_CERT_ALTNAME_INVALID/],
    ['ERR_SSL_WRONG_VERSION_NUMBER', 'tls', /^TLS handshake with hub\.example:8443 failed \(ERR_SSL_WRONG_VERSION_NUMBER\); if the endpoint is a plain-HTTP server, write it as http:\/\//],
    ['ECONNRESET', 'closed', /^hub\.example:8443 closed the connection without answering \(ECONNRESET\)/],
    ['UND_ERR_SOCKET', 'closed', /closed the connection without answering \(UND_ERR_SOCKET: other side closed\)/],
    ['EWEIRD', 'offline', /^cannot reach hub\.example:8443 \(EWEIRD: something odd\)/],
  ];
  for (const [code, reason, re] of cases) {
    it(`${code} → ${reason}`, () => {
      const e = connectError(failed(code, code === 'UND_ERR_SOCKET' ? 'other side closed' : code === 'EWEIRD' ? 'something odd' : code), url, 'https://hub.example:8443', false);
      assert.equal(e.reason, reason);
      assert.match(e.message, re);
      assert.match(e.message, /; nothing was changed, partial files are kept/);
      assert.doesNotMatch(e.message, reason === 'offline' ? /^$/ : /offline/, 'only an unreachable network is called offline');
    });
  }
  it('says what is kept once something was written', () => {
    assert.match(connectError(failed('ECONNREFUSED'), url, url, true).message, /\. Files already complete are kept, partial files \(\.part\) are kept/);
  });
});
