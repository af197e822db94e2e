/**
 * The `residual` command (needs `npm run build`): JSON shape of `analyze`, one-line errors with exit status 2, the
 * memory check and its override, `graph --out` written whole, and the shared flag parser (src/cli/args.ts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as net from 'node:net';
import { describe, it } from 'node:test';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { randomCrossLayerWeights, randomTranscoderWeights, writeCrossLayerTranscoder, writeSaeLensTranscoders } from '../../src/engine/circuits/transcoders-write';
import { parseFlags, usageOf, type CommandSpec, type Flags } from '../../src/cli/args';
import { checkOutFolder } from '../../src/cli/common';
import { runCommand, SPECS } from '../../src/cli/run';
import { checkInputFile } from '../../src/engine/files';
import { Model } from '../../src/engine/model';
import { saveVectorFile } from '../../src/engine/steering/vectors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const BIN = path.join(__dirname, '..', '..', 'bin', 'residual.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-'));
const model = path.join(dir, 'm');
writeRandomGpt2(model, { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 16, vocabSize: 50257 }, { seed: 5, tokenizerJson: gpt2TokenizerJSON() });

/** A steering vector for the model (made once). */
function vector(): string {
  const file = path.join(dir, 'v.json');
  if (!fs.existsSync(file)) {
    saveVectorFile(file, { vector: new Float32Array(16).fill(0.1), layer: 0, point: 'hook_resid_pre', source: 'contrastive', label: 'v', provenance: { model: 'random-gpt2-seed5' } });
  }
  return file;
}

function cli(args: string[], input?: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', env: { ...process.env, TMPDIR: dir, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('residual analyze', () => {
  it('prints tokens with offsets, top-5, stats and the per-layer lens as JSON', () => {
    const text = 'print("hello"';
    const r = cli(['analyze', '--model', model, '--text', text, '--json', '--providers', 'cpu']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.deepEqual(Object.keys(j.model).sort(), ['architecture', 'd_model', 'dir', 'dtype', 'n_ctx', 'n_heads', 'n_kv_heads', 'n_layers', 'name', 'precision', 'vocab_size']);
    assert.deepEqual([j.model.n_kv_heads, j.model.precision], [j.model.n_heads, 'float32']);
    assert.equal(j.provider, 'cpu');
    assert.equal(j.tokens.map((t: { text: string }) => t.text).join(''), text);
    for (const t of j.tokens) assert.equal(text.slice(t.start, t.end), t.text);
    assert.equal(j.top.length, 5);
    for (const k of ['id', 'text', 'prob', 'logit']) assert.ok(k in j.top[0], k);
    assert.equal(j.stats.length, 2);
    assert.equal(j.stats[0].update_norm.length, j.tokens.length);
    assert.equal(j.lens.length, 3);
    assert.deepEqual(j.lens.map((l: { hook: string }) => l.hook), ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre', 'blocks.1.hook_resid_post']);
    assert.equal(j.lens[2].top[j.tokens.length - 1][0].id, j.top[0].id);
  });

  it('leaves no ONNX Runtime telemetry behind (no device id, no event database)', () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-home-'));
    const r = spawnSync(process.execPath, [BIN, 'analyze', '--model', model, '--text', 'x', '--json', '--providers', 'cpu'], {
      encoding: 'utf8',
      env: { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, '.cache'), ORT_DISABLE_TELEMETRY: '' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.existsSync(path.join(home, '.cache', 'Microsoft')), false, 'ONNX Runtime wrote telemetry under ~/.cache/Microsoft');
  });

  it('reads --text - from standard input', () => {
    const r = cli(['analyze', '--model', model, '--text', '-', '--json', '--providers', 'cpu'], 'a b c');
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).tokens.length, 3);
  });

  it('fails with one clear line and nothing on stdout', () => {
    const missing = cli(['analyze', '--model', path.join(dir, 'nope'), '--text', 'x', '--json']);
    assert.equal(missing.code, 2);
    assert.equal(missing.out, '');
    assert.match(missing.err, /residual: .*nope.*(does not exist|not found|missing)/i);
    const noText = cli(['analyze', '--model', model]);
    assert.equal(noText.code, 2);
    assert.match(noText.err, /--text TEXT is required/);
    const unknown = cli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.err, /unknown subcommand 'frobnicate'/);
  });
});

describe('the memory check', () => {
  const low = { RESIDUAL_AVAILABLE_MEMORY: String(100e6) };
  it('is on by default in every subcommand that loads a model, and names the estimate, what is available and the override', () => {
    const r = cli(['analyze', '--model', model, '--text', 'x', '--providers', 'cpu'], undefined, low);
    assert.equal(r.code, 2);
    assert.equal(r.out, '');
    assert.match(r.err, /^residual: .*: random-gpt2-seed5 \(\d+K parameters\) needs about \d+ MB of memory on the CPU and 100 MB is available\. .*pass --skip-memory-check to load anyway\.\n$/);
  });
  it('--skip-memory-check loads anyway; --check-memory is still accepted', () => {
    const r = cli(['analyze', '--model', model, '--text', 'x', '--providers', 'cpu', '--json', '--skip-memory-check'], undefined, low);
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).tokens.length, 1);
    const old = cli(['analyze', '--model', model, '--text', 'x', '--providers', 'cpu', '--check-memory']);
    assert.equal(old.code, 0, old.err);
  });
});

describe('residual graph --out', () => {
  it('writes the graph whole, replaces a regular file, leaves no temporary file', () => {
    const tc = path.join(dir, 'tc');
    writeSaeLensTranscoders(tc, randomTranscoderWeights(2, 16, 24, { seed: 3 }), { activation: 'relu' });
    const outDir = path.join(dir, 'graphs');
    fs.mkdirSync(outDir);
    const out = path.join(outDir, 'g.json');
    fs.writeFileSync(out, 'old');
    const r = cli(['graph', '--model', model, '--transcoders', tc, '--text', 'The quick brown fox', '--out', out, '--providers', 'cpu']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /g\.json \(listed in graph-metadata\.json\): \d+ nodes, \d+ links/);
    // No progress off a terminal; random transcoders reconstruct nothing, which is said in one warning line.
    assert.match(r.err, /^residual graph: warning: layer \d's transcoder reconstructs its MLP output poorly on this prompt: FVU [\d.e+]+ reading blocks\.\d\.ln2\.hook_normalized; no other input hook fits better/);
    assert.equal(r.err.split('\n').length, 2, 'one line');
    assert.equal(JSON.parse(fs.readFileSync(out, 'utf8')).metadata.slug, 'g');
    // The graph and the viewer's index of the folder; no temporary file left.
    assert.deepEqual(fs.readdirSync(outDir).sort(), ['g.json', 'graph-metadata.json']);
  });
});

describe('residual graph with a cross-layer transcoder', () => {
  it('traces it (the file records what replaced the MLPs); one with another layer count is refused naming config.yaml', () => {
    const clt = path.join(dir, 'clt');
    writeCrossLayerTranscoder(clt, randomCrossLayerWeights(2, 16, 24, { seed: 3 }), { activation: 'relu' });
    const out = path.join(dir, 'clt-graph.json');
    const r = cli(['graph', '--model', model, '--transcoders', clt, '--text', 'The quick brown fox', '--out', out, '--providers', 'cpu']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /clt-graph\.json \(listed in graph-metadata\.json\): \d+ nodes, \d+ links \(.*cross-layer transcoder FVU ≤ /);
    const json = JSON.parse(fs.readFileSync(out, 'utf8'));
    assert.equal(json.metadata.reconstruction.replacement, 'cross-layer transcoder');
    assert.ok(json.nodes.some((n: { feature_type: string; layer: string }) => n.feature_type === 'cross layer transcoder' && n.layer === '0'));
    const three = path.join(dir, 'clt3');
    writeCrossLayerTranscoder(three, randomCrossLayerWeights(3, 16, 24, { seed: 3 }), { activation: 'relu' });
    const bad = cli(['graph', '--model', model, '--transcoders', three, '--text', 'The quick', '--out', path.join(dir, 'clt3.json'), '--providers', 'cpu']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /clt3\/config\.yaml: a cross-layer transcoder of 3 layers \(W_enc_0 … W_enc_2\) for a 2-layer model/);
    assert.equal(fs.existsSync(path.join(dir, 'clt3.json')), false, 'nothing written');
  });
});

describe('residual graph --target / --contrast / --direction', () => {
  const tc = path.join(dir, 'tc-targets');
  const text = 'The quick brown fox';
  const graphOf = (name: string, ...extra: string[]) => {
    if (!fs.existsSync(tc)) writeSaeLensTranscoders(tc, randomTranscoderWeights(2, 16, 24, { seed: 3 }), { activation: 'relu' });
    const out = path.join(dir, `${name}.json`);
    const r = cli(['graph', '--model', model, '--transcoders', tc, '--text', text, '--out', out, '--providers', 'cpu', '--node-threshold', '1', '--edge-threshold', '1', ...extra]);
    assert.equal(r.code, 0, r.err);
    return { line: r.out, json: JSON.parse(fs.readFileSync(out, 'utf8')) };
  };

  it('a logit difference: one target node, the value dla computes for the same pair, recorded in the metadata', () => {
    const { line, json } = graphOf('contrast', '--target', ' the', '--contrast', ',');
    const dla = JSON.parse(cli(['dla', '--model', model, '--text', text, '--target', ' the', '--contrast', ',', '--json', '--providers', 'cpu']).out);
    assert.equal(json.metadata.target.kind, 'contrast');
    assert.deepEqual([json.metadata.target.token, json.metadata.target.contrast], [' the', ',']);
    assert.ok(Math.abs(json.metadata.target.value - dla.logit) <= 1e-4 * Math.max(1, Math.abs(dla.logit)), `${json.metadata.target.value} vs dla ${dla.logit}`);
    const targets = json.nodes.filter((n: { feature_type: string }) => n.feature_type === 'logit');
    assert.equal(targets.length, 1);
    assert.equal(targets[0].feature, 50257, 'the virtual index vocab_size');
    assert.equal(targets[0].clerp, 'Target: logit " the" − logit ","');
    assert.match(line, /target logit " the" − logit "," = -?\d/);
  });

  it('one token: its logit, as dla computes it; a direction: its dot product with the residual the engine reads', async () => {
    const one = graphOf('token', '--target', ' the');
    const dla = JSON.parse(cli(['dla', '--model', model, '--text', text, '--target', ' the', '--json', '--providers', 'cpu']).out);
    assert.ok(Math.abs(one.json.metadata.target.value - dla.logit) <= 1e-4 * Math.max(1, Math.abs(dla.logit)));
    assert.equal(one.json.nodes.filter((n: { feature_type: string }) => n.feature_type === 'logit').length, 1);
    const { json } = graphOf('direction', '--direction', vector(), '--layer', '1', '--hook', 'resid_mid', '--position', '2');
    assert.deepEqual([json.metadata.target.kind, json.metadata.target.hook, json.metadata.target.position, json.metadata.target.file], ['direction', 'blocks.1.hook_resid_mid', 2, 'v.json']);
    const m = await Model.load(model, { providers: ['cpu'] });
    try {
      const ids = m.tokenizer.encodeForModel(text).ids;
      const x = (await m.run({ ids, hooks: ['blocks.1.hook_resid_mid'] })).activations.get('blocks.1.hook_resid_mid')!.data;
      let want = 0;
      for (let d = 0; d < 16; d++) want += 0.1 * x[2 * 16 + d];
      assert.ok(Math.abs(json.metadata.target.value - want) <= 1e-5 * Math.max(1, Math.abs(want)), `${json.metadata.target.value} vs ${want}`);
    } finally {
      await m.dispose();
    }
    const target = json.nodes.find((n: { feature_type: string }) => n.feature_type === 'logit');
    assert.equal(target.ctx_idx, 2);
    // Only layer-0 features reach blocks.1.hook_resid_mid.
    assert.ok(json.nodes.filter((n: { feature_type: string }) => n.feature_type === 'cross layer transcoder').every((n: { layer: string; ctx_idx: number }) => n.layer === '0' && n.ctx_idx <= 2));
  });
});

describe('residual qk', () => {
  it('splits a head\'s score into query × key sources that add up to the model\'s own score (its attn_scores hook)', async () => {
    const tc = path.join(dir, 'tc-qk');
    if (!fs.existsSync(tc)) writeSaeLensTranscoders(tc, randomTranscoderWeights(2, 16, 24, { seed: 3 }), { activation: 'relu' });
    const text = 'The quick brown fox';
    const r = cli(['qk', '--model', model, '--transcoders', tc, '--text', text, '--layer', '1', '--head', '1', '--query', '3', '--json', '--providers', 'cpu']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    const m = await Model.load(model, { providers: ['cpu'] });
    let scores: Float32Array;
    let pattern: Float32Array;
    try {
      const ids = m.tokenizer.encodeForModel(text).ids;
      const run = await m.run({ ids, hooks: ['blocks.1.attn.hook_attn_scores', 'blocks.1.attn.hook_pattern'] });
      scores = run.activations.get('blocks.1.attn.hook_attn_scores')!.data;
      pattern = run.activations.get('blocks.1.attn.hook_pattern')!.data;
    } finally {
      await m.dispose();
    }
    const P = 4;
    const row = Array.from(pattern.subarray((1 * P + 3) * P, (1 * P + 3) * P + 4));
    assert.equal(j.key.position, row.indexOf(Math.max(...row)), 'by default the key the head attends to most');
    const want = scores[(1 * P + 3) * P + j.key.position];
    const close = (x: number, what: string) => assert.ok(Math.abs(x - want) <= 1e-4 * Math.max(1, Math.abs(want)), `${what}: ${x} vs ${want}`);
    close(j.real_score, 'real score');
    close(j.score, 'the split');
    close(j.by_kind.reduce((s: number, c: { value: number }) => s + c.value, 0), 'the kind sums');
    assert.equal(j.query_side.length, Math.min(20, j.n_query_sources));
    assert.ok(j.n_query_sources > 10, 'sources on the query side');
    assert.match(j.query_side[0].source.label, /^(L\d\/\d+ @\d|error L\d @\d|token @\d|bias terms)/);
    const t = cli(['qk', '--model', model, '--transcoders', tc, '--text', text, '--layer', '1', '--head', '1', '--key', '0', '--providers', 'cpu']);
    assert.equal(t.code, 0, t.err);
    assert.match(t.out, /^blocks\.1\.attn head 1: query 3 ".*" → key 0 ".*"\nscore q·k\/√8 = -?\d+\.\d{4} \(the model's: -?\d+\.\d{4}\), attention weight \d\.\d{4}\n/);
  });
});

describe('help', () => {
  it('every subcommand answers --help and -h with its usage on stdout, exit 0; `residual help X` too', () => {
    for (const [name, spec] of Object.entries(SPECS)) {
      for (const args of [[name, '--help'], [name, '-h'], ['help', name]]) {
        const r = cli(args);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
        assert.equal(r.err, '');
        assert.equal(r.out, usageOf(spec));
      }
      for (const flag of Object.keys(spec.flags)) assert.ok(usageOf(spec).includes(`--${flag}`), `${name} --${flag}`);
    }
    const top = cli(['--help']);
    assert.equal(top.code, 0);
    for (const name of Object.keys(SPECS)) assert.match(top.out, new RegExp(`residual ${name} `));
  });
});

describe('the flag parser', () => {
  const spec: CommandSpec = {
    name: 't',
    synopsis: '',
    summary: '',
    flags: { text: { value: 'TEXT', help: '' }, strength: { value: 'S', help: '' }, n: { value: 'N', help: '' }, json: { help: '' } },
  };
  const parse = (args: string[]) => parseFlags(spec, args) as Flags;
  it('takes a value that starts with a dash, --flag=value, and a value equal to another flag only with =', () => {
    const f = parse(['--strength', '-4', '--text', '-', '--json']);
    assert.equal(f.num('strength'), -4);
    assert.equal(f.str('text'), '-');
    assert.equal(f.bool('json'), true);
    assert.equal(parse(['--text=--json']).str('text'), '--json');
    assert.throws(() => parse(['--text', '--json']), /residual t: --text needs a value \(TEXT\)/);
  });
  it('checks numbers strictly: whole numbers, finite decimals, ranges', () => {
    assert.equal(parse(['--n', '12']).int('n', { min: 1 }), 12);
    assert.equal(parse(['--strength', '1e-3']).num('strength'), 1e-3);
    for (const bad of ['1e3', '0x10', '', ' ', '9007199254740993', '-1']) {
      assert.throws(() => parse([`--n=${bad}`]).int('n', { min: 0 }), /--n (needs a value|must be a whole number ≥ 0)/, bad);
    }
    for (const bad of ['NaN', 'Infinity', '1e400', 'abc', '1,5']) {
      assert.throws(() => parse(['--strength', bad]).num('strength'), /--strength must be a finite number/, bad);
    }
  });
  it('answers help before anything else', () => {
    assert.equal(parseFlags(spec, ['--frob', '-h']), 'help');
    assert.equal(parseFlags(spec, ['stray', '--help']), 'help');
    assert.equal(parseFlags(spec, ['--n', '3', '-h']), 'help');
    assert.equal(parseFlags(spec, ['--json', '--help', '--n', 'x']), 'help');
  });
  it('takes -h/--help as help only in flag position: as a value it is a value', () => {
    assert.equal(parse(['--text', '-h']).str('text'), '-h');
    assert.equal(parse(['--text', '-h', '--n', '-h']).str('n'), '-h');
    assert.equal(parse(['--text=--help']).str('text'), '--help');
    // --help is never a value (like the own flags): after a flag that takes one, it still asks for help.
    assert.equal(parseFlags(spec, ['--text', '--help']), 'help');
    assert.equal(parseFlags(spec, ['--text', '-h', '-h']), 'help');
  });
  it('knows only the flags of the spec, never the members of Object.prototype', () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
      assert.throws(() => parseFlags(spec, [`--${name}`]), new RegExp(`residual t: unknown flag --${name}; see residual t --help`), name);
      assert.throws(() => parseFlags(spec, [`--${name}=1`]), new RegExp(`unknown flag --${name};`), name);
      // Not a flag of the spec, so a value after --text that is one of them is a value.
      assert.equal(parse(['--text', `--${name}`]).str('text'), `--${name}`);
      assert.throws(() => parse([]).has(name), /is not in the spec of residual t/);
    }
  });
});

describe('--out names what a path is as files.ts does', () => {
  it('a FIFO, a socket and a character device get the same words as an input check', async () => {
    const fifo = path.join(dir, 'kind-fifo');
    spawnSync('mkfifo', [fifo]);
    const sock = path.join(dir, 'kind-sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      /** The words the message of `check(p)` uses for what `p` is. */
      const kind = (check: () => void, re: RegExp) => {
        try {
          check();
        } catch (e) {
          return re.exec((e as Error).message)?.[1];
        }
        return undefined;
      };
      for (const p of [fifo, sock, '/dev/null']) {
        const input = kind(() => checkInputFile(p, 'x'), /: x is (.*), not a regular file$/);
        const out = kind(() => checkOutFolder(p), /: --out is (.*), not a folder/);
        assert.ok(input, p);
        assert.equal(out, input, p);
      }
    } finally {
      server.close();
    }
  });
});

/** Runs the command line in-process; what it printed and its status. */
async function inProcess(argv: string[]) {
  let out = '';
  let err = '';
  const code = await runCommand(argv, { out: (s) => void (out += s), err: (s) => void (err += s), errIsTTY: false, readStdin: () => '', env: process.env });
  return { code, out, err };
}

describe('a failure to release the model', () => {
  /** Runs `body` with Model.dispose releasing the model and then throwing. */
  async function withFailingDispose<T>(body: () => Promise<T>): Promise<T> {
    const dispose = Model.prototype.dispose;
    Model.prototype.dispose = async function (this: Model) {
      await dispose.call(this);
      throw new Error('release failed');
    };
    try {
      return await body();
    } finally {
      Model.prototype.dispose = dispose;
    }
  }

  it('after a complete result is one warning line on stderr; the result stands, exit status 0', async () => {
    await withFailingDispose(async () => {
      const a = await inProcess(['analyze', '--model', model, '--text', 'hello', '--json', '--providers', 'cpu']);
      assert.equal(a.code, 0, a.err);
      assert.equal(JSON.parse(a.out).tokens.length, 1);
      assert.match(a.err, /^residual: warning: the result is complete, but releasing the model's resources failed \(.*release failed\)\n$/);
      const s = await inProcess(['steer', '--model', model, '--text', 'hello', '--vector', vector(), '--strength', '1', '--json', '--providers', 'cpu']);
      assert.equal(s.code, 0, s.err);
      assert.equal(typeof JSON.parse(s.out).kl, 'number');
      assert.match(s.err, /^residual: warning: .*release failed\)\n$/);
      const tc = path.join(dir, 'tc-release');
      writeSaeLensTranscoders(tc, randomTranscoderWeights(2, 16, 24, { seed: 3 }), { activation: 'relu' });
      const out = path.join(dir, 'release', 'g.json');
      fs.mkdirSync(path.dirname(out), { recursive: true });
      const g = await inProcess(['graph', '--model', model, '--transcoders', tc, '--text', 'The quick', '--out', out, '--providers', 'cpu']);
      assert.equal(g.code, 0, g.err);
      assert.match(g.out, /g\.json \(listed in graph-metadata\.json\)/);
      assert.equal(JSON.parse(fs.readFileSync(out, 'utf8')).metadata.slug, 'g');
      // (After the line on the random transcoders' reconstruction.)
      assert.match(g.err, /^residual graph: warning: layer \d's transcoder reconstructs .*\nresidual: warning: .*release failed\)\n$/);
    });
  });

  it("after a failed command leaves the command's own error the one line", async () => {
    await withFailingDispose(async () => {
      const r = await inProcess(['analyze', '--model', model, '--text', 'hello', '--top', '60000', '--providers', 'cpu']);
      assert.equal(r.code, 2);
      assert.equal(r.out, '');
      assert.match(r.err, /^residual analyze: --top 60000 is more than the model's vocabulary \(50257 tokens\)\n$/);
    });
  });
});

describe('--chat on analyze, dla, steer and graph', () => {
  // A template of plain words the GPT-2 vocabulary has, with its own special token as BOS.
  const TEMPLATE = "{{ bos_token }}{% for m in messages %}User: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
  const chatModel = path.join(dir, 'chat-model');
  writeRandomGpt2(chatModel, { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 32, vocabSize: 50257 }, { seed: 5, tokenizerJson: gpt2TokenizerJSON() });
  fs.writeFileSync(path.join(chatModel, 'tokenizer_config.json'), JSON.stringify({ chat_template: TEMPLATE, bos_token: '<|endoftext|>' }));
  const rendered = '<|endoftext|>User: Paris is in\nAssistant:';

  it('analyze --chat: the rendered prompt runs; template tokens are marked and the rest keep offsets into --text', () => {
    const chat = cli(['analyze', '--model', chatModel, '--text', 'Paris is in', '--chat', '--json', '--providers', 'cpu']);
    assert.equal(chat.code, 0, chat.err);
    const plain = cli(['analyze', '--model', chatModel, '--text', rendered, '--json', '--providers', 'cpu']);
    const [j, p] = [JSON.parse(chat.out), JSON.parse(plain.out)];
    assert.deepEqual(j.tokens.map((t: { id: number }) => t.id), p.tokens.map((t: { id: number }) => t.id));
    assert.deepEqual(j.top, p.top);
    assert.deepEqual(j.tokens.map((t: { template?: boolean }) => !!t.template), [true, true, true, false, false, false, true, true, true]);
    for (const t of j.tokens.filter((x: { template?: boolean }) => !x.template)) assert.ok(t.text.endsWith('Paris is in'.slice(t.start, t.end)));
    assert.deepEqual(j.chat, { template: path.join(chatModel, 'tokenizer_config.json'), added: 6 });
    assert.equal(p.chat, null);
  });

  it('dla, steer and graph run the rendered prompt (graph records it as the prompt)', () => {
    const dla = [cli(['dla', '--model', chatModel, '--text', 'Paris is in', '--chat', '--json', '--providers', 'cpu']), cli(['dla', '--model', chatModel, '--text', rendered, '--json', '--providers', 'cpu'])];
    assert.equal(dla[0].code, 0, dla[0].err);
    assert.deepEqual(JSON.parse(dla[0].out), JSON.parse(dla[1].out));
    const steerArgs = ['--vector', vector(), '--layer', '1', '--strength', '3', '--json', '--providers', 'cpu'];
    const steer = [cli(['steer', '--model', chatModel, '--text', 'Paris is in', '--chat', ...steerArgs]), cli(['steer', '--model', chatModel, '--text', rendered, ...steerArgs])];
    assert.equal(steer[0].code, 0, steer[0].err);
    const strip = (s: string) => ({ ...JSON.parse(s), tokens_per_second: undefined });
    assert.deepEqual(strip(steer[0].out), strip(steer[1].out));
    const tc = path.join(dir, 'tc-chat');
    writeSaeLensTranscoders(tc, randomTranscoderWeights(2, 16, 24, { seed: 3 }), { activation: 'relu' });
    const out = path.join(dir, 'chat-graph.json');
    const g = cli(['graph', '--model', chatModel, '--transcoders', tc, '--text', 'Paris is in', '--chat', '--out', out, '--providers', 'cpu']);
    assert.equal(g.code, 0, g.err);
    const meta = JSON.parse(fs.readFileSync(out, 'utf8')).metadata;
    assert.equal(meta.prompt, rendered);
    assert.equal(meta.prompt_tokens[0], '<|endoftext|>');
  });

  it('a model without a chat template, or one that fails: one line naming the file, nothing on stdout', () => {
    const r = cli(['analyze', '--model', model, '--text', 'hi', '--chat', '--providers', 'cpu']);
    assert.equal(r.code, 2, r.err);
    assert.equal(r.out, '');
    assert.match(r.err, /^residual: .*\/m: this model has no chat template .*; run without chat\n$/);
    const broken = path.join(dir, 'chat-broken');
    fs.cpSync(chatModel, broken, { recursive: true });
    fs.writeFileSync(path.join(broken, 'tokenizer_config.json'), JSON.stringify({ chat_template: "{{ raise_exception('Conversation roles must alternate') }}" }));
    const b = cli(['steer', '--model', broken, '--text', 'hi', '--chat', '--vector', vector(), '--layer', '1', '--strength', '1', '--providers', 'cpu']);
    assert.equal(b.code, 2);
    assert.equal(b.out, '');
    assert.match(b.err, /tokenizer_config\.json: the chat template failed to render: .*Conversation roles must alternate/);
  });
});
