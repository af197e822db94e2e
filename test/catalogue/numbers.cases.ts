/**
 * Bad inputs of the numbers area (issue 14): numbers that make no sense (class 7: NaN/Inf in model weights, steering
 * strengths that overflow the model's norms, temperatures that underflow, a patching pair whose logit difference
 * hardly changes, steering positions past the prompt, non-finite settings), hostile tokenizer.json files (class 9:
 * regular expressions that backtrack catastrophically, absurd nesting), and model vocabularies larger than the
 * tokenizer's (class 14). Fixtures (tiny random GPT-2 checkpoints, some with a NaN or Inf poked into one weight, a
 * Llama-shaped checkpoint whose embedding is padded past its tokenizer) are made on first use under one temporary
 * folder; `disposeFixtures` (called by numbers.test.ts) releases them. Nothing is done at import.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { analyze } from '../../src/engine/analysis';
import { writeRandomFamily, writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { readSafetensorsHeader } from '../../src/engine/checkpoint/safetensors';
import { activationPatching } from '../../src/engine/layers/patching';
import { trackLensTarget } from '../../src/engine/lensTarget';
import { Model } from '../../src/engine/model';
import type { GenerationSettings, SteeringSpec } from '../../src/engine/results';
import { silenceOrt } from '../../src/engine/runtime/session';
import { compareGeneration, generate, nextTokenEffect, sweep } from '../../src/engine/steering/steer';
import { Tokenizer } from '../../src/engine/tokenizer';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { lazyFixtures, runCli, type BadInputCase } from '../helpers/catalogue';

// ---- Fixtures (lazy, shared) ---------------------------------------------------------------------------------

const D = 16;
const GPT2 = { nLayers: 2, dModel: D, nHeads: 4, dMlp: 32, nCtx: 32, vocabSize: 50257 };
const TEXT = 'The quick brown fox jumps over the lazy dog';
const GREEDY: GenerationSettings = { maxNewTokens: 3, temperature: 0, topP: 1, seed: 0 };

const fixtures = lazyFixtures('residual-cat-numbers-');
const root = () => fixtures.root();
const cacheDir = () => path.join(root(), 'onnx-cache');
/** The CLI's environment: its cache inside the fixtures' folder, not the user's. */
const cliEnv = () => ({ RESIDUAL_CACHE_DIR: cacheDir() });

let tokenizer: object | undefined;
const tokenizerJson = () => (tokenizer ??= gpt2TokenizerJSON());

const once = <T>(key: string, make: () => Promise<T>) => fixtures.once(key, make);

export async function disposeFixtures(): Promise<void> {
  await fixtures.dispose();
  hostileModel = undefined;
}

/** Edits one F32 tensor of a single-file checkpoint in place (`edit` gets its values; what it leaves is written). */
export function pokeTensor(dir: string, name: string, edit: (values: Float32Array, shape: number[]) => void): void {
  const file = path.join(dir, 'model.safetensors');
  const e = readSafetensorsHeader(file).entries.find((x) => x.name === name);
  if (!e || e.dtype !== 'F32') throw new Error(`test fixture: no F32 tensor ${name} in ${file}`);
  const fd = fs.openSync(file, 'r+');
  try {
    const bytes = new Uint8Array(e.byteLength);
    fs.readSync(fd, bytes, 0, e.byteLength, e.dataOffset);
    const values = new Float32Array(bytes.buffer, 0, e.byteLength / 4);
    edit(values, e.shape);
    fs.writeSync(fd, bytes, 0, e.byteLength, e.dataOffset);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A Llama-shaped random checkpoint whose embedding and unembedding have 50,304 rows for the GPT-2 tokenizer's 50,257
 * tokens (as Pythia pads 50,277 to 50,304), with the unembedding rows of every real token zeroed so that a padded id
 * wins every prediction and every logit-lens read-out.
 */
export function writePaddedLlama(dir: string, tokenizerJson: object, seed = 11): { vocab: number; tokens: number } {
  const vocab = 50304;
  const tokens = 50257;
  writeRandomFamily(
    dir,
    'llama',
    { num_hidden_layers: 2, hidden_size: D, num_attention_heads: 4, intermediate_size: 32, max_position_embeddings: 64, vocab_size: vocab, tie_word_embeddings: false },
    { seed, tokenizerJson },
  );
  pokeTensor(dir, 'lm_head.weight', (w) => w.fill(0, 0, tokens * D));
  return { vocab, tokens };
}

async function load(dir: string): Promise<Model> {
  silenceOrt();
  const model = await Model.load(dir, { providers: ['cpu'], cacheDir: cacheDir() });
  fixtures.onDispose(() => model.dispose());
  return model;
}

/** The healthy tiny GPT-2, loaded once. */
const gpt2 = (): Promise<{ dir: string; model: Model }> =>
  once('gpt2', async () => {
    const dir = path.join(root(), 'gpt2');
    writeRandomGpt2(dir, GPT2, { seed: 31, std: 0.3, tokenizerJson: tokenizerJson() });
    return { dir, model: await load(dir) };
  });

/** A tiny GPT-2 with one stored tensor changed (a NaN or Inf poked in), loaded once per key. */
function broken(key: string, tensor: string, edit: (values: Float32Array, shape: number[]) => void, opts: { tied?: boolean } = {}): Promise<Model> {
  return once(`broken-${key}`, async () => {
    const dir = path.join(root(), `broken-${key}`);
    writeRandomGpt2(dir, GPT2, { seed: 31, std: 0.3, tokenizerJson: tokenizerJson(), tiedUnembed: opts.tied ?? true });
    pokeTensor(dir, tensor, edit);
    return load(dir);
  });
}

const padded = (): Promise<{ dir: string; model: Model }> =>
  once('padded', async () => {
    const dir = path.join(root(), 'padded-llama');
    writePaddedLlama(dir, tokenizerJson());
    return { dir, model: await load(dir) };
  });

/** The message of a thrown error, or what the call returned when it did not throw. */
async function messageOf(f: () => Promise<unknown>): Promise<string> {
  try {
    return `no error; returned ${JSON.stringify(await f())?.slice(0, 300)}`;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

const vec = (scale = 1) => Float32Array.from({ length: D }, (_, i) => Math.sin(1.3 + i * 1.7) * scale);
const spec = (over: Partial<SteeringSpec> = {}): SteeringSpec => ({ vector: vec(), layer: 1, point: 'hook_resid_pre', strength: 2, positions: { kind: 'all' }, ...over });

/** A saved steering vector for the CLI (written once). */
const vectorFile = () =>
  once('vector', async () => {
    const { saveVectorFile } = await import('../../src/engine/steering/vectors');
    const dir = path.join(root(), 'vectors');
    fs.mkdirSync(dir, { recursive: true });
    return saveVectorFile(path.join(dir, 'v'), { vector: vec(), layer: 1, point: 'hook_resid_pre', label: 'test', source: 'file', provenance: {} }).json;
  });

/** `residual steer` on the healthy model with `extra` flags: what the user sees (stderr, or stdout when it succeeded). */
async function steerCli(extra: string[]): Promise<string> {
  const { dir } = await gpt2();
  const r = await runCli(['steer', '--model', dir, '--text', 'The quick brown fox', '--vector', await vectorFile(), '--layer', '1', '--providers', 'cpu', ...extra], { env: cliEnv() });
  return `exit ${r.code}\n${r.stderr}\n${r.stdout}`;
}

// ---- Hostile tokenizer.json files: loaded in one child process, so a pattern that slipped through fails the case
// (the child is killed after a deadline) instead of hanging the test run. ----------------------------------------

const LONG = `${'a'.repeat(40)}!${' x'.repeat(40)}${'\t'.repeat(40)}y`;
const BASE_VOCAB: Record<string, number> = { a: 0, b: 1, x: 2, y: 3, '!': 4, ' ': 5, '\t': 6 };
function tokenizerWith(parts: Record<string, unknown>): object {
  return {
    model: { type: 'BPE', vocab: BASE_VOCAB, merges: [], unk_token: null },
    // The library runs the normalizer on added tokens while it loads: a hostile normalizer would hang the load itself.
    added_tokens: [{ id: 7, content: `${'a'.repeat(40)}!`, special: false, normalized: true, single_word: false, lstrip: false, rstrip: false }],
    ...parts,
  };
}
const split = (regex: unknown) => ({ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false });

interface Hostile {
  name: string;
  /** The file's content: an object, or JSON text (for what JSON.stringify cannot write). */
  json: () => object | string;
  expect: RegExp;
}

const HOSTILE: Hostile[] = [
  {
    name: 'tokenizer.json: Split pre-tokenizer regex "(x+x+)+y" (nested repetition)',
    json: () => tokenizerWith({ pre_tokenizer: split('(x+x+)+y') }),
    expect: /"pre_tokenizer\.pattern\.Regex" "\(x\+x\+\)\+y" can backtrack catastrophically — .*exponentially many ways/,
  },
  {
    name: 'tokenizer.json: Replace normalizer regex "(\\w+\\s?)*$" (runs on the added tokens while loading)',
    json: () => tokenizerWith({ normalizer: { type: 'Replace', pattern: { Regex: '(\\w+\\s?)*$' }, content: '' } }),
    expect: /"normalizer\.pattern\.Regex" .* can backtrack catastrophically .*Residual refuses such patterns/,
  },
  {
    name: 'tokenizer.json: overlapping alternatives "(a|aa)+$" inside a Sequence of pre-tokenizers',
    json: () => tokenizerWith({ pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Whitespace' }, split('(a|aa)+$')] } }),
    expect: /"pre_tokenizer\.pretokenizers\[1\]\.pattern\.Regex" .*alternatives "a" and "aa", which can both match "a"/,
  },
  {
    name: 'tokenizer.json: three repetitions of one class in a row "\\s*\\s*\\s*x" (polynomial)',
    json: () => tokenizerWith({ pre_tokenizer: split('\\s*\\s*\\s*x') }),
    expect: /can backtrack catastrophically .*follow one another and can all match .*n\^4/,
  },
  {
    name: 'tokenizer.json: Oniguruma possessive "(a++)+$" (the library rewrites it to "(a+)+")',
    json: () => tokenizerWith({ pre_tokenizer: split('(a++)+$') }),
    expect: /"\(a\+\+\)\+\$" can backtrack catastrophically — "\(a\+\)\+" repeats "a\+", itself a repetition/,
  },
  {
    name: 'tokenizer.json: a catastrophic pattern hidden in a lookahead "(?=(a+)+$)"',
    json: () => tokenizerWith({ pre_tokenizer: split('b|(?=(a+)+$)a') }),
    expect: /can backtrack catastrophically — "\(a\+\)\+" repeats/,
  },
  {
    name: 'tokenizer.json: Replace decoder regex "(.*)*x" (runs on every decode)',
    json: () => tokenizerWith({ decoder: { type: 'Replace', pattern: { Regex: '(.*)*x' }, content: '' } }),
    expect: /"decoder\.pattern\.Regex" "\(\.\*\)\*x" can backtrack catastrophically/,
  },
  {
    name: 'tokenizer.json: a pre-tokenizer regex whose groups nest 20,000 deep (too deep to check)',
    json: () => tokenizerWith({ pre_tokenizer: split(`${'('.repeat(20000)}a${')'.repeat(20000)}`) }),
    expect: /"pre_tokenizer\.pattern\.Regex" "\(\(\(.*: Residual cannot check it for catastrophic backtracking \(its groups nest too deeply\); Residual refuses patterns it cannot check/,
  },
  {
    name: 'tokenizer.json: a pre-tokenizer regex that does not compile "(a"',
    json: () => tokenizerWith({ pre_tokenizer: split('(a') }),
    expect: /"pre_tokenizer\.pattern\.Regex" "\(a" is not a valid regular expression: .*Unterminated group/,
  },
  {
    name: 'tokenizer.json: a pattern "Regex" that is a number, not a string',
    json: () => tokenizerWith({ pre_tokenizer: split(5) }),
    expect: /"pre_tokenizer\.pattern\.Regex" must be a string, found 5/,
  },
  {
    name: 'tokenizer.json: normalizers nested 20,000 levels deep',
    json: () => {
      const deep = `${'{"type":"Sequence","normalizers":['.repeat(20000)}{"type":"Lowercase"}${']}'.repeat(20000)}`;
      return JSON.stringify(tokenizerWith({ normalizer: 'DEEP' })).replace('"DEEP"', deep);
    },
    expect: /"normalizer" nests more than 32 levels deep .*malformed or hostile/,
  },
];

/** A tiny GPT-2 checkpoint whose tokenizer.json has the pre-tokenizer regex "(a+)+$" (written once, synchronously). */
let hostileModel: string | undefined;
function hostileModelDir(): string {
  if (!hostileModel) {
    hostileModel = path.join(root(), 'hostile-model');
    writeRandomGpt2(hostileModel, GPT2, { seed: 31, std: 0.3, tokenizerJson: { ...tokenizerJson(), pre_tokenizer: split('(a+)+$') } });
  }
  return hostileModel;
}

/** Each hostile file's message from the child, or undefined when the child gave none (it hung and was killed). */
const hostileResults = () =>
  once('hostile', async () => {
    const dir = path.join(root(), 'hostile');
    fs.mkdirSync(dir, { recursive: true });
    const files = HOSTILE.map((h, i) => {
      const f = path.join(dir, `${i}-tokenizer.json`);
      const json = h.json();
      fs.writeFileSync(f, typeof json === 'string' ? json : JSON.stringify(json));
      return f;
    });
    const child = path.join(__dirname, 'numbers.child.ts');
    const out = await new Promise<string>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', child, LONG, ...files], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      p.stdout.on('data', (d) => (text += d));
      const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
      p.on('close', () => {
        clearTimeout(timer);
        resolve(text);
      });
    });
    const results = new Map<string, { message: string; ms: number }>();
    for (const line of out.split('\n')) {
      if (!line.trim()) continue;
      const r = JSON.parse(line) as { file: string; message: string; ms: number };
      results.set(r.file, r);
    }
    return { files, results };
  });

async function hostile(i: number): Promise<string> {
  const { files, results } = await hostileResults();
  const r = results.get(files[i]);
  if (!r) return 'no answer: loading the tokenizer hung until the deadline';
  // A clear error within a couple of seconds, not after minutes of backtracking.
  if (r.ms > 2000) return `answered only after ${r.ms} ms: ${r.message}`;
  return r.message;
}

// ---- The cases -----------------------------------------------------------------------------------------------

const MLP_NAN = ['mlp-nan', 'transformer.h.1.mlp.c_fc.weight', (w: Float32Array) => (w[17] = NaN)] as const;

export const cases: BadInputCase[] = [
  // ---- Class 7: NaN/Inf in model weights -----------------------------------------------------------------------
  {
    class: 7,
    name: 'model weights: NaN in one MLP weight of block 1 (analyze)',
    run: async () => messageOf(async () => analyze(await broken(...MLP_NAN), TEXT)),
    expect: /broken-mlp-nan: the model produced NaN or Inf logits: the values first stop being finite at blocks\.1\.hook_resid_post \(position 0, token "The"\), the output of the last block; tensor "transformer\.h\.1\.mlp\.c_fc\.weight" holds NaN \(element 17 of \[16, 32\], model\.safetensors\): the checkpoint is damaged/,
  },
  {
    class: 7,
    name: 'model weights: NaN in the embedding row of one token of the prompt',
    run: async () =>
      messageOf(async () => {
        const id = Tokenizer.fromJSON(tokenizerJson(), 'gpt2').encode(' fox').ids[0];
        return analyze(await broken('embed-nan', 'transformer.wte.weight', (w) => (w[id * D + 3] = NaN)), TEXT);
      }),
    expect: /first stop being finite at hook_embed \(position 3, token " fox"\); row 21831 of tensor "transformer\.wte\.weight" holds NaN/,
  },
  {
    class: 7,
    name: 'model weights: +Inf in one row of an untied unembedding (lm_head.weight)',
    run: async () => messageOf(async () => analyze(await broken('unembed-inf', 'lm_head.weight', (w) => (w[777 * D + 5] = Infinity), { tied: false }), TEXT)),
    expect: /first stop being finite at the logits \(position \d+, token .*, token id 777\), after the final norm and the unembedding; row 777 of tensor "lm_head\.weight" \(the unembedding\) holds Inf/,
  },
  {
    class: 7,
    name: 'model weights: NaN in the final norm (ln_f.weight)',
    run: async () => messageOf(async () => analyze(await broken('lnf-nan', 'transformer.ln_f.weight', (w) => (w[2] = NaN)), TEXT)),
    expect: /at the logits .*; tensor "transformer\.ln_f\.weight" holds NaN \(element 2 of \[16\]/,
  },
  {
    class: 7,
    name: "model weights: NaN in block 0's attention, named inside the block",
    run: async () => messageOf(async () => analyze(await broken('attn-nan', 'transformer.h.0.attn.c_proj.weight', (w) => (w[0] = NaN)), TEXT)),
    expect: /first stop being finite inside block 0, at the input of its ln2 norm \(blocks\.0\.ln2\.hook_scale, position 0, .*tensor "transformer\.h\.0\.attn\.c_proj\.weight" holds NaN/,
  },
  {
    class: 7,
    name: 'model weights: finite but so large that block 0 overflows float32 (no NaN stored)',
    run: async () => messageOf(async () => analyze(await broken('mlp-huge', 'transformer.h.0.mlp.c_proj.weight', (w) => w.fill(3e38)), TEXT)),
    expect: /first stop being finite at blocks\.1\.hook_resid_pre .*the output of block 0; no weight read there holds NaN or Inf, so the values overflowed float32/,
  },
  {
    class: 7,
    name: 'model weights: NaN model under steering (the unsteered baseline is the broken one)',
    run: async () => messageOf(async () => nextTokenEffect(await broken(...MLP_NAN), TEXT, spec())),
    expect: /NaN or Inf logits \(unsteered\): .*tensor "transformer\.h\.1\.mlp\.c_fc\.weight" holds NaN/,
  },
  {
    class: 7,
    name: 'model weights: NaN model in activation patching',
    run: async () =>
      messageOf(async () => activationPatching(await broken(...MLP_NAN), { clean: 'The cat sat', corrupted: 'The dog sat', cleanAnswer: ' on', corruptedAnswer: ' in' })),
    expect: /NaN or Inf logits on the clean prompt: .*tensor "transformer\.h\.1\.mlp\.c_fc\.weight" holds NaN/,
  },

  // ---- Class 7: steering strengths that overflow -------------------------------------------------------------
  {
    class: 7,
    name: 'steering: strength 1e30 (finite addition that overflows the norm after it)',
    run: async () => {
      const e = await nextTokenEffect((await gpt2()).model, TEXT, spec({ strength: 1e30 }));
      return `nonFinite ${e.nonFinite}, steered ${e.steered.length}: ${e.nonFiniteReason}`;
    },
    expect: /nonFinite true, steered 0: strength 1e\+30 adds a vector of norm .* at blocks\.1\.hook_resid_pre, which overflows the model's normalisation at blocks\.1\.ln1/,
  },
  {
    class: 7,
    name: 'steering: strength 1e40 (strength × vector is not finite in float32)',
    run: async () => {
      const e = await nextTokenEffect((await gpt2()).model, TEXT, spec({ strength: 1e40 }));
      return `nonFinite ${e.nonFinite}: ${e.nonFiniteReason}`;
    },
    expect: /nonFinite true: strength 1e\+40 overflows float32: strength × the vector is not finite/,
  },
  {
    class: 7,
    name: 'steering: relative strength 1e25 (× the mean residual norm) overflows the norm',
    run: async () => {
      const e = await nextTokenEffect((await gpt2()).model, TEXT, spec({ strength: 1e25, relative: true, point: 'hook_resid_mid', layer: 0 }));
      return `nonFinite ${e.nonFinite}: ${e.nonFiniteReason}`;
    },
    expect: /nonFinite true: strength 1e\+25 \(relative\) adds a vector of norm .* at blocks\.0\.hook_resid_mid, which overflows the model's normalisation at blocks\.0\.ln2/,
  },
  {
    class: 7,
    name: 'steering CLI: --strength 1e30 is reported as overflow, not as an ordinary result',
    run: () => steerCli(['--strength', '1e30', '--json']),
    expect: /exit 0\n[^\n]*(strength 1e\+30[^\n]*(overflow|NaN or Inf)|(overflow|NaN or Inf)[^\n]*strength 1e\+30)[\s\S]*"non_finite": true/,
  },
  {
    class: 7,
    name: 'steering: generation with a strength that overflows the norm stops with the reason',
    run: async () => {
      const g = await compareGeneration((await gpt2()).model, TEXT, GREEDY, spec({ strength: -1e31, point: 'hook_resid_post', layer: 0 }));
      return `steered nonFinite ${g.steered.nonFinite}: ${(g.steered as { nonFiniteReason?: string }).nonFiniteReason}`;
    },
    expect: /steered nonFinite true: strength -1e\+31 .*overflows the model's normalisation at blocks\.1\.ln1/,
  },
  {
    class: 7,
    name: 'steering: a NaN strength (from the panel)',
    run: async () => messageOf(async () => nextTokenEffect((await gpt2()).model, TEXT, spec({ strength: NaN }))),
    expect: /strength must be a finite number, got NaN/,
  },
  {
    class: 7,
    name: 'steering: an infinite strength (from the panel)',
    run: async () => messageOf(async () => nextTokenEffect((await gpt2()).model, TEXT, spec({ strength: -Infinity }))),
    expect: /strength must be a finite number, got -Infinity/,
  },
  {
    class: 7,
    name: 'steering sweep: a NaN among the strengths',
    run: async () =>
      messageOf(async () => sweep((await gpt2()).model, TEXT, vec(), { layers: [0], strengths: [1, NaN], point: 'hook_resid_pre', relative: false, neutralText: 'It was a sunny day.' })),
    expect: /strength NaN is not a finite number/,
  },

  // ---- Class 7: positions past the prompt --------------------------------------------------------------------
  {
    class: 7,
    name: 'steering: positions 50 on a 9-token prompt',
    run: async () => messageOf(async () => nextTokenEffect((await gpt2()).model, TEXT, spec({ positions: { kind: 'set', positions: [50] } }))),
    expect: /^steering: positions 50: past the end of the prompt, which has 9 tokens \(positions 0–8\); a position the text does not have would steer nothing$/,
  },
  {
    class: 7,
    name: 'steering: positions from:99 on a 9-token prompt',
    run: async () => messageOf(async () => nextTokenEffect((await gpt2()).model, TEXT, spec({ positions: { kind: 'from', pos: 99 } }))),
    expect: /^steering: positions from:99 start past the end of the prompt, which has 9 tokens \(positions 0–8\), so nothing would be steered; start below 9$/,
  },
  {
    class: 7,
    name: 'steering CLI: --positions 3,50 on a 4-token prompt',
    run: () => steerCli(['--strength', '2', '--positions', '3,50']),
    expect: /exit [12]\nresidual: steering: positions 3,50: position 50 past the end of the prompt, which has 4 tokens \(positions 0–3\)/,
  },
  {
    class: 7,
    name: 'steering generation: from:20 past the prompt and every generated token read',
    run: async () => messageOf(async () => generate((await gpt2()).model, [464, 2068, 7586], { ...GREEDY, maxNewTokens: 5 }, spec({ positions: { kind: 'from', pos: 20 } }))),
    expect: /positions from:20 start past the end of the prompt, which has 3 tokens \(positions 0–2\), and generation adds only 4 more that are read again, so nothing would be steered; start below 7/,
  },
  {
    class: 7,
    name: 'steering sweep: positions past the end of the neutral text',
    run: async () =>
      messageOf(async () =>
        sweep((await gpt2()).model, 'one two three four five six seven eight', vec(), {
          layers: [0],
          strengths: [1],
          point: 'hook_resid_pre',
          relative: false,
          neutralText: 'It was sunny.',
          positions: { kind: 'from', pos: 5 },
        }),
      ),
    expect: /positions from:5 start past the end of the neutral text, which has 4 tokens/,
  },

  // ---- Class 7: temperatures and other generation settings ---------------------------------------------------
  {
    class: 7,
    name: 'generation: temperature 1e-320 (a denormal)',
    run: async () => messageOf(async () => generate((await gpt2()).model, [464, 2068], { ...GREEDY, temperature: 1e-320 })),
    expect: /temperature 1e-320 is too small to sample with: .*overflow to Inf .*use 0 for greedy decoding/,
  },
  {
    class: 7,
    name: 'generation: temperature 1e-9 (normal, below the sampling threshold)',
    run: async () => messageOf(async () => generate((await gpt2()).model, [464, 2068], { ...GREEDY, temperature: 1e-9 })),
    expect: /temperature 1e-9 is too small to sample with: below 1e-6 the draw is the argmax/,
  },
  {
    class: 7,
    name: 'steering CLI: --temperature 5e-324 with --generate',
    run: () => steerCli(['--strength', '2', '--generate', '3', '--temperature', '5e-324']),
    expect: /exit [12]\n.*temperature 5e-324 is too small to sample with/,
  },
  {
    class: 7,
    name: 'generation: a NaN temperature (from the panel)',
    run: async () => messageOf(async () => generate((await gpt2()).model, [464, 2068], { ...GREEDY, temperature: NaN })),
    expect: /temperature must be a finite number ≥ 0 \(0 = greedy\), got NaN/,
  },
  {
    class: 7,
    name: 'generation: a NaN top-p (from the panel)',
    run: async () => messageOf(async () => generate((await gpt2()).model, [464, 2068], { ...GREEDY, topP: NaN })),
    expect: /top-p must be a number in \(0, 1\], got NaN/,
  },
  {
    class: 7,
    name: 'generation: seed 2^32 (past the 32-bit generator; it would repeat seed 0)',
    run: async () => messageOf(async () => generate((await gpt2()).model, [464, 2068], { ...GREEDY, seed: 2 ** 32 })),
    expect: /seed must be an integer from 0 to 4294967295 .*got 4294967296/,
  },
  {
    class: 7,
    name: 'generation: a negative seed',
    run: async () => messageOf(async () => generate((await gpt2()).model, [464, 2068], { ...GREEDY, seed: -1 })),
    expect: /seed must be an integer from 0 to 4294967295 .*got -1/,
  },

  // ---- Class 7: analysis settings that are not numbers ---------------------------------------------------------
  {
    class: 7,
    name: 'analysis: a NaN top-k (a setting that did not parse)',
    run: async () => messageOf(async () => analyze((await gpt2()).model, TEXT, { topK: NaN })),
    expect: /^analysis: topK must be a positive integer, got NaN$/,
  },
  {
    class: 7,
    name: 'analysis: a NaN logit-lens budget',
    run: async () => messageOf(async () => analyze((await gpt2()).model, TEXT, { lensFlops: NaN })),
    expect: /^analysis: the logit-lens budget must be a positive number of FLOPs \(Infinity: no limit\), got NaN$/,
  },
  {
    class: 7,
    name: 'analysis: a NaN token limit',
    run: async () => messageOf(async () => analyze((await gpt2()).model, TEXT, { maxTokens: NaN })),
    expect: /^analysis: maxTokens must be a number ≥ 1, got NaN$/,
  },

  // ---- Class 7: patching with a logit-difference gap near zero -----------------------------------------------
  {
    class: 7,
    name: 'patching: answers whose logit difference hardly changes between the prompts',
    run: async () => {
      const { model } = await gpt2();
      const clean = 'The cat sat on the mat and';
      const corrupted = 'The dog sat on the mat and';
      // Two single-token words whose logit difference moves by a hair (but not by nothing) between the prompts.
      const V = model.config.vocabSize;
      const last = async (text: string) => {
        const ids = model.tokenizer.encode(text).ids;
        return (await model.run({ ids, hooks: ['logits'], logitPositions: [ids.length - 1] })).activations.get('logits')!.data.slice(0, V);
      };
      const a = await last(clean);
      const b = await last(corrupted);
      const words: { t: string; d: number }[] = [];
      for (let id = 300; id < 6000; id++) {
        const t = model.tokenizer.tokenText(id);
        const enc = model.tokenizer.encode(t).ids;
        if (/^ [a-z]{3,}$/.test(t) && enc.length === 1 && enc[0] === id) words.push({ t, d: a[id] - b[id] });
      }
      words.sort((x, y) => x.d - y.d);
      for (let i = 1; i < words.length; i++) {
        if (Math.abs(words[i].d - words[i - 1].d) > 1e-4 && Math.abs(words[i].d - words[i - 1].d) < 0.005) {
          const r = await activationPatching(model, { clean, corrupted, cleanAnswer: words[i].t, corruptedAnswer: words[i - 1].t });
          return r.notes.join('\n');
        }
      }
      return 'no pair found';
    },
    expect: /the logit difference barely changes between the prompts \(clean .*a gap of .*next to a spread of .* in the logits\), and every restored fraction is divided by that gap — the fractions are dominated by noise and meaningless/,
  },

  // ---- Class 9: hostile tokenizer.json -----------------------------------------------------------------------
  {
    class: 9,
    name: 'tokenizer.json: pre-tokenizer regex "(a+)+$" through `residual analyze` (answers within seconds)',
    run: async () => {
      const t0 = Date.now();
      const r = await runCli(['analyze', '--model', hostileModelDir(), '--text', `${'a'.repeat(40)}!`, '--providers', 'cpu'], { timeoutMs: 30_000, env: cliEnv() });
      return Date.now() - t0 > 20_000 ? `took ${Date.now() - t0} ms` : `exit ${r.code}: ${r.stderr}`;
    },
    expect: /exit [12]: residual: .*tokenizer\.json: "pre_tokenizer\.pattern\.Regex" "\(a\+\)\+\$" can backtrack catastrophically — "\(a\+\)\+" repeats "a\+", itself a repetition: a run of "a" can be split among the iterations in exponentially many ways/,
    untouched: () => [hostileModelDir()],
  },
  ...HOSTILE.map(
    (h, i): BadInputCase => ({
      class: 9,
      name: h.name,
      run: () => hostile(i),
      expect: h.expect,
    }),
  ),

  // ---- Class 14: model vocabulary larger than the tokenizer's ------------------------------------------------
  {
    class: 14,
    name: 'padded vocabulary: analyze where a padded id wins the prediction and every logit-lens read-out',
    run: async () => {
      const a = await analyze((await padded()).model, TEXT);
      const last = a.tokens.length - 1;
      return [`top ${a.top[0].text}`, ...a.lens.map((r, i) => `lens ${a.readouts[i].hook} ${r[last][0].text}`), `target ${a.target.texts[last]}`].join('\n');
    },
    expect: /^top <unused (5025[7-9]|502[6-9]\d|5030[0-3])>\n(lens \S+ <unused 50\d{3}>\n){3}target <unused 50\d{3}>$/,
  },
  {
    class: 14,
    name: 'padded vocabulary: `residual analyze --json` keeps going and writes the ids as <unused N>',
    run: async () => {
      const r = await runCli(['analyze', '--model', (await padded()).dir, '--text', TEXT, '--json', '--providers', 'cpu'], { env: cliEnv() });
      const top = r.code === 0 ? (JSON.parse(r.stdout) as { top: { id: number; text: string }[] }).top[0] : undefined;
      return `exit ${r.code} ${r.stderr} top ${JSON.stringify(top)}`;
    },
    expect: /exit 0 .*top \{"id":(50\d{3}),"text":"<unused \1>"/,
    untouched: () => [path.join(root(), 'padded-llama')],
  },
  {
    class: 14,
    name: 'padded vocabulary: steering effect and generation predict padded ids',
    run: async () => {
      const { model } = await padded();
      const e = await nextTokenEffect(model, TEXT, spec({ strength: 0.5 }));
      const g = await compareGeneration(model, TEXT, GREEDY, spec({ strength: 0.5 }));
      return `baseline ${e.baseline[0].text} steered ${e.steered[0].text} generated ${JSON.stringify(g.baseline.text)}`;
    },
    expect: /^baseline <unused 50\d{3}> steered <unused 50\d{3}> generated "(<unused 50\d{3}>){3}"$/,
  },
  {
    class: 14,
    name: 'padded vocabulary: tracking a typed token through the logit lens of an analysis',
    run: async () => {
      const { model } = await padded();
      const a = await analyze(model, TEXT);
      const t = await trackLensTarget(model, a, a.tokens.length - 1, ' the');
      return `${t.tokenText}: ranks ${t.rank.join(',')} (the padded ids rank first)`;
    },
    expect: /^ the: ranks ([1-9]\d*,){2}[1-9]\d* \(the padded ids rank first\)$/,
  },
  {
    class: 14,
    name: 'padded vocabulary: activation patching whose default answers are padded ids',
    run: async () => messageOf(async () => activationPatching((await padded()).model, { clean: 'The cat sat on the mat', corrupted: 'The dog sat on the mat' })),
    expect: /<unused 50\d{3}>/,
  },
  {
    class: 14,
    name: 'tokenizer vocabulary with a gap (ids 0 and 2, none for 1): text of the missing id',
    run: async () => {
      const t = Tokenizer.fromJSON({ model: { type: 'BPE', vocab: { a: 0, b: 2 }, merges: [] } }, 'gappy/tokenizer.json');
      return `${t.tokenText(1)} ${t.tokenDisplay(1)} ${t.decode([0, 1, 2, 9])}`;
    },
    expect: /^<unused 1> <unused 1> a<unused 1>b<unused 9>$/,
  },
];
