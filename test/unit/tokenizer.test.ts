import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as gpt3 from 'gpt-3-encoder';
import { displayBytes, Tokenizer, TokenSpan, unescapeTokenInput } from '../../src/engine/tokenizer';
import { ResidualError } from '../../src/engine/errors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';

const GPT2_JSON = gpt2TokenizerJSON();
const gpt2 = Tokenizer.fromJSON(GPT2_JSON, 'gpt2-test/tokenizer.json');
const EOT = 50256;

/** GPT-2's byte↔unicode table, inverted, written out again here from its definition. */
const charToByte = new Map<string, number>();
{
  const keepsItself = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const moved = [...Array(256).keys()].filter((b) => !keepsItself(b));
  for (let b = 0; b < 256; b++) if (keepsItself(b)) charToByte.set(String.fromCharCode(b), b);
  moved.forEach((b, k) => charToByte.set(String.fromCharCode(256 + k), b));
}
const idToPiece: string[] = [];
for (const [piece, id] of Object.entries((GPT2_JSON as { model: { vocab: Record<string, number> } }).model.vocab)) idToPiece[id] = piece;

function tokenBytes(id: number): Buffer {
  if (id === EOT) return Buffer.from('<|endoftext|>');
  return Buffer.from([...idToPiece[id]].map((c) => charToByte.get(c)!));
}

/** Contiguous, covering, non-overlapping spans whose text is the slice they name. */
function assertSpans(text: string, ids: number[], tokens: TokenSpan[]): void {
  assert.equal(tokens.length, ids.length);
  let at = 0;
  tokens.forEach((t, i) => {
    assert.equal(t.id, ids[i]);
    assert.equal(t.start, at, `token ${i} starts where token ${i - 1} ends`);
    assert.ok(t.end >= t.start, `token ${i} has end >= start`);
    assert.equal(t.text, text.slice(t.start, t.end), `token ${i} text is its slice`);
    at = t.end;
  });
  assert.equal(at, text.length, 'spans cover the whole text');
}

/**
 * Exact byte check for byte-level BPE: each span ends at the token's cumulative byte offset, rounded up to the end
 * of the character it falls in (the documented rule for tokens that split a multi-byte character). Where no token
 * splits a character, that is the same as: each span's UTF-8 is exactly the token's bytes.
 */
function assertSpanBytes(text: string, tokens: TokenSpan[]): void {
  const all = Buffer.from(text, 'utf8');
  const boundaries = new Set<number>([all.length]);
  for (let i = 0, b = 0; i < text.length; ) {
    boundaries.add(b);
    const cp = text.codePointAt(i)!;
    b += Buffer.byteLength(String.fromCodePoint(cp));
    i += cp > 0xffff ? 2 : 1;
  }
  let cumulative = 0;
  let split = false;
  for (const t of tokens) {
    const bytes = tokenBytes(t.id);
    cumulative += bytes.length;
    let ceil = cumulative;
    while (!boundaries.has(ceil)) ceil++;
    if (ceil !== cumulative) split = true;
    assert.equal(Buffer.byteLength(text.slice(0, t.end)), ceil, `token ${t.id} ends at byte ${ceil}`);
  }
  assert.equal(cumulative, all.length, 'token bytes add up to the text');
  if (!split) {
    for (const t of tokens) assert.deepEqual(Buffer.from(t.text, 'utf8'), tokenBytes(t.id), `span of ${t.id} is its bytes`);
  }
}

const TEXTS: Record<string, string> = {
  python:
    'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint([fib(i) for i in range(10)])  # comment\n',
  typescript:
    "export async function load(path: string): Promise<Map<string, number>> {\n\tconst raw = await fs.readFile(path, 'utf8');\n\treturn new Map(Object.entries(JSON.parse(raw) as Record<string, number>));\n}\n",
  json: '{"name": "residual", "version": "0.1.0", "ids": [1, 22, 333], "nested": {"ok": true, "none": null}}',
  prose:
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. We're sure they'll agree; I'd say you've seen it.",
  contractions: "DON'T it'S O'Neil's 'quoted' rock'n'roll",
  numbers: '3.14159 1,000,000 2024-01-01T12:34:56Z 0x1F 1e-9 -42 007 ½ ²',
  multipleSpaces: 'a  b   c    d          e',
  tabs: '\tindented\t\tline\t with\ttabs\t',
  crlf: 'line one\r\nline two\r\n\r\nline four\r\n',
  trailingSpaces: 'trailing spaces   ',
  leadingSpaces: '    leading spaces',
  whitespaceOnly: ' \n\t \r\n  ',
  emoji: 'I love 🍕 and 🚀! 😀😃😄',
  zwj: 'family 👨‍👩‍👧‍👦, flag 🏳️‍🌈, thumbs 👍🏽, keycap 1️⃣',
  cjk: '中文分词测试，日本語のテキスト、한국어 텍스트。',
  combining: 'e\u0301cole cafe\u0301 n\u0303 Z\u0351\u0354a\u0357l\u0358g\u0359o\u0300\u0301\u0302',
  precomposed: 'Café naïve résumé Ångström Straße',
  rtl: 'مرحبا بالعالم שלום עולם',
  symbols: '∑ x² ≤ ∞ √2 ≠ π “quotes” — dash … ellipsis ©®™',
  markup: '# Title\n\n- item **bold** `code`\n\n<div class="x">https://example.com/p?q=1&b=2#frag</div>\n',
  repeats: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!???? ---- ____',
  controlChars: 'nul\u0000bell\u0007del\u007f nbsp\u00a0soft\u00adhyphen',
};

test('ids equal gpt-3-encoder, decode round-trips, spans match token bytes', () => {
  for (const [name, text] of Object.entries(TEXTS)) {
    const { ids, tokens } = gpt2.encode(text);
    assert.deepEqual(ids, gpt3.encode(text), `${name}: ids`);
    assert.equal(gpt2.decode(ids), text, `${name}: round trip`);
    assert.equal(gpt3.decode(ids), text, `${name}: gpt-3-encoder decodes our ids`);
    assertSpans(text, ids, tokens);
    assertSpanBytes(text, tokens);
    // Independent of our byte table: a token that is whole characters decodes, alone, to exactly its span.
    for (const t of tokens) {
      const alone = gpt3.decode([t.id]);
      if (!alone.includes('\ufffd')) assert.equal(t.text, alone, `${name}: span of ${t.id}`);
    }
  }
});

test('a token splitting a multi-byte character takes the whole character; the next gets an empty span', () => {
  const text = ' 😀';
  const { ids, tokens } = gpt2.encode(text);
  assert.deepEqual(ids, gpt3.encode(text));
  assert.equal(ids.length, 2); // ' \xF0\x9F\x98' + '\x80'
  assert.deepEqual(
    tokens.map((t) => [t.text, t.start, t.end]),
    [
      [' 😀', 0, 3],
      ['', 3, 3],
    ],
  );
  assert.equal(gpt2.tokenText(ids[1]), '\ufffd');
});

test('<|endoftext|> in the text is the special token, as in HF tokenizers', () => {
  // gpt-3-encoder has no special tokens and spells "<|endoftext|>" out as 5 plain tokens; HF tokenizers (and so
  // TransformerLens) read it as id 50256. We follow HF, so compare with gpt-3-encoder on the pieces around it.
  const text = 'Hello<|endoftext|> world<|endoftext|><|endoftext|>\n';
  const { ids, tokens } = gpt2.encode(text);
  assert.deepEqual(ids, [...gpt3.encode('Hello'), EOT, ...gpt3.encode(' world'), EOT, EOT, ...gpt3.encode('\n')]);
  assert.notDeepEqual(gpt3.encode('<|endoftext|>'), [EOT]);
  assertSpans(text, ids, tokens);
  assert.deepEqual(
    tokens.filter((t) => t.id === EOT).map((t) => [t.start, t.end]),
    [
      [5, 18],
      [24, 37],
      [37, 50],
    ],
  );
  assert.equal(gpt2.decode(ids), text);
});

test('vocabulary, ids and token text', () => {
  assert.equal(gpt2.vocabSize, 50257);
  assert.equal(gpt2.bosId, EOT);
  assert.equal(gpt2.idOf('<|endoftext|>'), EOT);
  assert.equal(gpt2.idOf('Ġthe'), 262);
  assert.equal(gpt2.idOf('no such token here'), undefined);
  assert.equal(gpt2.tokenText(262), ' the');
  assert.equal(gpt2.tokenText(EOT), '<|endoftext|>');
  assert.equal(gpt2.tokenText(198), '\n');
  assert.deepEqual(gpt2.encode(''), { ids: [], tokens: [] });
  assert.equal(gpt2.decode([]), '');
  assert.throws(() => gpt2.tokenText(-1), ResidualError);
  assert.throws(() => gpt2.decode([1.5]), (e: unknown) => e instanceof ResidualError && /token id 1\.5 is not a valid id/.test(e.message));
});

test('ids past the tokenizer (padded embedding rows) read as <unused N> instead of failing', () => {
  // Pythia pads 50,277 tokens to 50,304 rows: the model can predict 50,280, the tokenizer has nothing for it.
  assert.equal(gpt2.hasToken(50256), true);
  assert.equal(gpt2.hasToken(50257), false);
  assert.equal(gpt2.tokenText(50280), '<unused 50280>');
  assert.equal(gpt2.tokenDisplay(50280), '<unused 50280>');
  assert.equal(gpt2.decode([50257]), '<unused 50257>');
  assert.equal(gpt2.decode([262, 50300, 262, 3290]), ' the<unused 50300> the dog', 'known runs decode as usual around it');
  // A gap inside the vocabulary reads the same way.
  const gappy = Tokenizer.fromJSON({ model: { type: 'BPE', vocab: { a: 0, b: 2 }, merges: [] } }, 'gappy/tokenizer.json');
  assert.equal(gappy.vocabSize, 3);
  assert.equal(gappy.hasToken(1), false);
  assert.equal(gappy.tokenText(1), '<unused 1>');
  assert.equal(gappy.decode([0, 1, 2]), 'a<unused 1>b');
});

/** mulberry32: a small seeded PRNG so the property test is reproducible. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
  ...`.,;:!?'"()[]{}<>/\\|-_+=*&^%$#@~\``,
  ' ', ' ', ' ', '  ', '\t', '\n', '\r\n', '\u00a0', '\u3000',
  'é', 'ü', 'ñ', 'ß', 'Å', 'e\u0301', '\u0301', '\u0308',
  '中', '文', '日本', '語', '한', '글', 'の', 'ア',
  '😀', '🚀', '👍🏽', '👨‍👩‍👧', '🏳️‍🌈', '\u200d', '🇫🇷',
  'the', ' hello', "don't", "'s", ' world', 'ing', '1234', ' 3.14', 'function', ' =>',
];

test('random strings: ids match gpt-3-encoder, round trip and span invariants hold', () => {
  const random = prng(20240601);
  for (let n = 0; n < 400; n++) {
    const length = 1 + Math.floor(random() * 40);
    let text = '';
    for (let k = 0; k < length; k++) text += PIECES[Math.floor(random() * PIECES.length)];
    const { ids, tokens } = gpt2.encode(text);
    assert.deepEqual(ids, gpt3.encode(text), `ids for ${JSON.stringify(text)}`);
    assert.equal(gpt2.decode(ids), text, `round trip of ${JSON.stringify(text)}`);
    assertSpans(text, ids, tokens);
    assertSpanBytes(text, tokens);
  }
});

test('encodes a 20 kB source file at a usable speed', () => {
  // TypeScript's lib.es5.d.ts: real code and doc comments, with no "<|endoftext|>" in it (see the test above).
  const source = fs.readFileSync(require.resolve('typescript/lib/lib.es5.d.ts'), 'utf8').slice(0, 20000);
  const t0 = performance.now();
  const { ids, tokens } = gpt2.encode(source);
  const ms = performance.now() - t0;
  assert.deepEqual(ids, gpt3.encode(source));
  assertSpans(source, ids, tokens);
  assert.ok(ms < 2000, `encoding 20 kB took ${ms.toFixed(0)} ms`);
});

test('fromFile reads a tokenizer.json written by tools/gpt2-tokenizer', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tok-'));
  try {
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, '\ufeff' + JSON.stringify(GPT2_JSON)); // with a byte order mark, as some editors save
    const t = await Tokenizer.fromFile(file);
    assert.deepEqual(t.encode(TEXTS.prose).ids, gpt2.encode(TEXTS.prose).ids);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Asserts a ResidualError whose message names `file` and matches every pattern. */
function refusal(file: string, code: string, ...patterns: RegExp[]) {
  return (e: unknown) => {
    assert.ok(e instanceof ResidualError, `expected a ResidualError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.ok(e.message.includes(file), `message names the file: ${e.message}`);
    assert.equal(e.code, code, e.message);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  };
}

test('refuses bad tokenizer files with messages naming the file and the problem', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tok-'));
  const write = (name: string, content: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    return file;
  };
  try {
    const missing = path.join(dir, 'nope', 'tokenizer.json');
    await assert.rejects(Tokenizer.fromFile(missing), refusal(missing, 'missing', /not found/));

    await assert.rejects(Tokenizer.fromFile(dir), refusal(dir, 'invalid', /folder/));

    const full = JSON.stringify(GPT2_JSON, null, 1);
    const truncated = write('truncated.json', full.slice(0, 5000));
    await assert.rejects(Tokenizer.fromFile(truncated), refusal(truncated, 'invalid', /not valid JSON/, /truncated/, /line \d+, column \d+/));

    const broken = write('broken.json', '{\n  "model": {\n    "type" "BPE"\n  }\n}');
    await assert.rejects(Tokenizer.fromFile(broken), refusal(broken, 'invalid', /not valid JSON/, /line 3, column 12/));

    const empty = write('empty.json', '');
    await assert.rejects(Tokenizer.fromFile(empty), refusal(empty, 'invalid', /empty/));

    const noModel = write('no-model.json', JSON.stringify({ version: '1.0', added_tokens: [] }));
    await assert.rejects(Tokenizer.fromFile(noModel), refusal(noModel, 'unsupported', /no "model"/));

    const config = write('tokenizer_config.json', JSON.stringify({ tokenizer_class: 'GPT2Tokenizer', model_max_length: 1024 }));
    await assert.rejects(Tokenizer.fromFile(config), refusal(config, 'unsupported', /no "model"/, /tokenizer_config\.json/));

    const unknown = write('unknown.json', JSON.stringify({ model: { type: 'CharLevelMagic', vocab: { a: 0 } } }));
    await assert.rejects(Tokenizer.fromFile(unknown), refusal(unknown, 'unsupported', /model type "CharLevelMagic" is not supported/, /BPE/));

    const emptyVocab = write('empty-vocab.json', JSON.stringify({ model: { type: 'BPE', vocab: {}, merges: [] } }));
    await assert.rejects(Tokenizer.fromFile(emptyVocab), refusal(emptyVocab, 'invalid', /vocabulary.*empty/));

    const noMerges = write('no-merges.json', JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 } } }));
    await assert.rejects(Tokenizer.fromFile(noMerges), refusal(noMerges, 'invalid', /merges/));

    const badPre = write(
      'bad-pre.json',
      JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] }, pre_tokenizer: { type: 'Bogus' } }),
    );
    await assert.rejects(Tokenizer.fromFile(badPre), refusal(badPre, 'unsupported', /could not load/, /Unknown PreTokenizer type: Bogus/));

    assert.throws(() => Tokenizer.fromJSON([1, 2], 'array.json'), refusal('array.json', 'invalid', /JSON object/, /array/));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- tokenizers that are not byte-level: offsets come from aligning each token's text with the input ----

/** A small Llama-style (SentencePiece BPE with byte fallback) tokenizer.json. */
function sentencePieceJSON(): object {
  const pieces = ['<unk>', '<s>', '</s>', '<0xE4>', '<0xB8>', '<0xAD>', '▁', 'h', 'e', 'l', 'o', 'w', 'r', 'd', '!'];
  const merges = [['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['▁', 'hello'], ['w', 'o'], ['r', 'l'], ['wo', 'rl'], ['worl', 'd'], ['▁', 'world']];
  for (const [a, b] of merges) pieces.push(a + b);
  const vocab = Object.fromEntries(pieces.map((p, i) => [p, i]));
  return {
    added_tokens: [
      { id: 0, content: '<unk>', special: true },
      { id: 1, content: '<s>', special: true },
      { id: 2, content: '</s>', special: true },
    ],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: { type: 'BPE', unk_token: '<unk>', byte_fallback: true, fuse_unk: true, vocab, merges },
  };
}

test('SentencePiece-style tokenizer: prefix space, byte fallback and unknown characters are aligned', () => {
  const t = Tokenizer.fromJSON(sentencePieceJSON(), 'sp/tokenizer.json');
  assert.equal(t.bosId, 1);
  const text = 'hello world!中x';
  const { ids, tokens } = t.encode(text);
  assertSpans(text, ids, tokens);
  assert.deepEqual(
    tokens.map((s) => [t.tokenText(s.id), s.text]),
    [
      [' hello', 'hello'], // the inserted prefix space covers nothing
      [' world', ' world'],
      ['!', '!'],
      ['\ufffd', '中'], // byte fallback: the first byte's token takes the character
      ['\ufffd', ''],
      ['\ufffd', ''],
      ['<unk>', 'x'], // unknown: takes the text up to the next token (here: the end)
    ],
  );
  assert.equal(t.decode(ids.slice(0, 6)), 'hello world!中');
});

test('WordPiece-style tokenizer: dropped whitespace goes to the token before it', () => {
  const vocab = Object.fromEntries(['[UNK]', '[CLS]', '[SEP]', 'hello', 'world', '##s', ','].map((p, i) => [p, i]));
  const json = {
    added_tokens: [
      { id: 0, content: '[UNK]', special: true },
      { id: 1, content: '[CLS]', special: true },
      { id: 2, content: '[SEP]', special: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 2], cls: ['[CLS]', 1] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
  const t = Tokenizer.fromJSON(json, 'wp/tokenizer.json');
  assert.equal(t.bosId, 1);
  const text = '  hello  worlds, zzz hello ';
  const { ids, tokens } = t.encode(text);
  assertSpans(text, ids, tokens);
  assert.deepEqual(
    tokens.map((s) => s.text),
    ['  hello  ', 'world', 's', ', ', 'zzz ', 'hello '],
  );
});

test('a normalizer that rewrites the text makes encode refuse instead of giving wrong offsets', () => {
  const vocab = Object.fromEntries(['<unk>', ...'abcdefghijklmnopqrstuvwxyz'].map((p, i) => [p, i]));
  const json = {
    normalizer: { type: 'Lowercase' },
    pre_tokenizer: { type: 'Whitespace' },
    model: { type: 'BPE', unk_token: '<unk>', vocab, merges: [] },
  };
  const t = Tokenizer.fromJSON(json, 'lower/tokenizer.json');
  assert.equal(t.encode('abc').tokens.map((s) => s.text).join('|'), 'a|b|c');
  assert.throws(() => t.encode('aBc'), refusal('lower/tokenizer.json', 'unsupported', /character offsets/, /normalizer \(Lowercase\)/));
});

test('a tokenizer whose post-processor adds BOS (Llama 3, Gemma) gets it from encodeForModel; GPT-2 does not', () => {
  assert.equal(gpt2.prependsBos, false);
  assert.deepEqual(gpt2.encodeForModel('Hello world').ids, gpt2.encode('Hello world').ids);
  // Llama 3's tokenizer.json: a TemplateProcessing post-processor naming the BOS token.
  const withTemplate = {
    ...GPT2_JSON,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [EOT], tokens: ['<|endoftext|>'] } },
    },
  };
  const llamaLike = Tokenizer.fromJSON(withTemplate, 'llama-like/tokenizer.json');
  assert.equal(llamaLike.prependsBos, true);
  const enc = llamaLike.encodeForModel('Hello world');
  assert.deepEqual(enc.ids, [EOT, ...gpt2.encode('Hello world').ids]);
  assert.deepEqual(enc.tokens[0], { id: EOT, text: '', start: 0, end: 0 });
  assert.equal(enc.tokens[1].start, 0);
  // encode itself never adds special tokens.
  assert.deepEqual(llamaLike.encode('Hello world').ids, gpt2.encode('Hello world').ids);
});

test('a Gemma-style SentencePiece BPE (Replace normalizer, byte fallback, BOS template) gives exact spans and BOS', () => {
  const vocab: Record<string, number> = { '<pad>': 0, '<eos>': 1, '<bos>': 2, '<unk>': 3 };
  const pieces = ['▁', 'h', 'e', 'l', 'o', 'w', 'r', 'd', '▁h', 'el', 'lo', '▁hel', '▁hello', '▁w', 'or', '▁wor', '▁world', 'ld', '\n', '▁▁'];
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = Object.keys(vocab).length;
  for (const p of pieces) vocab[p] = Object.keys(vocab).length;
  const merges = [['▁', 'h'], ['e', 'l'], ['l', 'o'], ['▁h', 'el'], ['▁hel', 'lo'], ['▁', 'w'], ['o', 'r'], ['▁w', 'or'], ['l', 'd'], ['▁wor', 'ld'], ['▁', '▁']].map((m) => m.join(' '));
  const json = {
    version: '1.0',
    added_tokens: [0, 1, 2, 3].map((id) => ({ id, content: Object.keys(vocab)[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
    pre_tokenizer: { type: 'Split', pattern: { String: ' ' }, behavior: 'MergedWithPrevious', invert: false },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<bos>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '<bos>': { id: '<bos>', ids: [2], tokens: ['<bos>'] } },
    },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges },
  };
  const t = Tokenizer.fromJSON(json, 'gemma-like/tokenizer.json');
  assert.equal(t.prependsBos, true);
  for (const text of ['hello world', ' hello  world\n', 'héllo wörld 🙂', 'hello\nworld']) {
    const e = t.encodeForModel(text);
    assert.equal(e.ids[0], 2, 'BOS first');
    assert.equal(e.tokens.slice(1).map((s) => s.text).join(''), text, `spans cover ${JSON.stringify(text)}`);
    for (const s of e.tokens) assert.equal(text.slice(s.start, s.end), s.text);
  }
  assert.deepEqual(t.encode('hello world').tokens.map((s) => s.text), ['h', 'el', 'lo', ' world']);
});

test('a Llama-3-style tokenizer.json (Split regex + ByteLevel, ignore_merges, BOS in a Sequence post-processor) gives exact spans and BOS', () => {
  const pattern = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const base = GPT2_JSON as Record<string, unknown> & { model: Record<string, unknown> };
  const json = {
    ...base,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [EOT], tokens: ['<|endoftext|>'] } } },
      ],
    },
    model: { ...base.model, ignore_merges: true },
  };
  const t = Tokenizer.fromJSON(json, 'llama3-like/tokenizer.json');
  assert.equal(t.prependsBos, true);
  for (const text of ["Hello world, it's 2026!\n\tdef f(x):  return x**2", 'héllo 🙂 日本語 12345']) {
    const e = t.encodeForModel(text);
    assert.equal(e.ids[0], EOT);
    assert.equal(e.tokens.slice(1).map((s) => s.text).join(''), text);
    for (const s of e.tokens) assert.equal(text.slice(s.start, s.end), s.text);
  }
  // Digits in groups of at most three, as Llama 3's pattern splits them (GPT-2's would not).
  assert.deepEqual(t.encode('12345').tokens.map((s) => s.text), ['123', '45']);
});

test('tokenDisplay: whole characters as text, bytes of a cut character as <0xNN>', () => {
  // Bytes written from the UTF-8 definition: "é" = C3 A9, "€" = E2 82 AC, "😀" = F0 9F 98 80.
  assert.equal(displayBytes(Uint8Array.of(0x20, 0xc3, 0xa9)), ' é');
  assert.equal(displayBytes(Uint8Array.of(0xe2, 0x82)), '<0xE2><0x82>', 'the first two bytes of €');
  assert.equal(displayBytes(Uint8Array.of(0x82, 0xac, 0x41)), '<0x82><0xAC>A', 'the tail of € then A');
  assert.equal(displayBytes(Uint8Array.of(0xf0, 0x9f, 0x98, 0x80)), '😀');
  assert.equal(displayBytes(Uint8Array.of(0xed, 0xa0, 0x80)), '<0xED><0xA0><0x80>', 'a UTF-16 surrogate is not UTF-8');
  assert.equal(displayBytes(Uint8Array.of(0xc0, 0xaf)), '<0xC0><0xAF>', 'an overlong encoding is not UTF-8');
  assert.equal(displayBytes(Uint8Array.of(0x09, 0x0a, 0x0d, 0x1b, 0x7f, 0x41)), '\t\n\r<0x1B><0x7F>A', 'control characters without a glyph');
  // GPT-2's byte-level vocabulary: token ids whose bytes are a lone lead byte of €.
  const lead = gpt2.idOf('â')!;
  assert.equal(gpt2.tokenText(lead), '\uFFFD');
  assert.equal(gpt2.tokenDisplay(lead), '<0xE2>');
  assert.equal(gpt2.tokenDisplay(gpt2.idOf('Ġthe')!), ' the');
});

test('typed tokens: \\n, \\t, \\r, \\\\ and the panels\' glyphs ⏎ ↵ → are the characters they stand for', () => {
  assert.equal(unescapeTokenInput('\\n'), '\n');
  assert.equal(unescapeTokenInput('⏎'), '\n');
  assert.equal(unescapeTokenInput('↵↵'), '\n\n');
  assert.equal(unescapeTokenInput('\\t x'), '\t x');
  assert.equal(unescapeTokenInput('→'), '\t');
  assert.equal(unescapeTokenInput('␍↵'), '\r\n', 'the glyphs showToken draws read back');
  assert.equal(unescapeTokenInput('a\\\\n'), 'a\\n', 'an escaped backslash stays one backslash');
  assert.equal(unescapeTokenInput('\\q'), '\\q', 'unknown escapes are kept');
  assert.equal(unescapeTokenInput(' the'), ' the');
  // GPT-2 has a token for a lone newline (id 198): typing \n reaches it.
  assert.equal(gpt2.encode(unescapeTokenInput('\\n')).ids[0], 198);
});

// ---- Hostile patterns (issue 14, class 9) ----------------------------------------------------------------------

/** The patterns real tokenizers ship (GPT-2, Llama 3, Qwen2, GPT-4o, DeepSeek, BLOOM, …): all accepted. */
const REAL_PATTERNS = [
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "\\p{N}{1,3}",
  "[一-龥ࠀ-一가-퟿]+",
  " ?[^(\\s|[.,!?…。，、।۔،])]+",
  '\\s+$',
  '^\\s+|\\s+$',
  '(?:\\s|\\S)+#',
  '\\d+(?:,\\d{3})*',
  "(?:'[a-z]+)*",
  '(ab|ac)+',
  '\\s*\\s*',
];

/** Patterns that backtrack catastrophically (exponential, or polynomial of degree ≥ 3), and what the refusal says. */
const HOSTILE_PATTERNS: [string, RegExp][] = [
  ['(a+)+$', /"\(a\+\)\+" repeats "a\+", itself a repetition/],
  ['(x+x+)+y', /"\(x\+x\+\)\+" repeats a part whose "x\+" can take "x"/],
  ['(\\w+\\s?)*$', /repeats a part whose .* can take/],
  ['(a|aa)+$', /alternatives "a" and "aa", which can both match "a"/],
  ['(a?a)*$', /"a\?" can take "a"/],
  ['(.*)*x', /repeats "\[\^\\n\]\*", itself a repetition/],
  ['((ab)*)*c', /itself a repetition/],
  ['(\\d+,?)+x', /exponentially/],
  ['(?:a+|b)+$', /exponentially/],
  ['(a{1,10}){1,10}$', /exponentially/],
  ['(?:[a-c]|[b-d])+!', /alternatives "\[a-c\]" and "\[b-d\]", which can both match "b"/],
  ['(a++)+$', /"\(a\+\)\+" repeats/],
  ['b|(?=(a+)+$)a', /"\(a\+\)\+" repeats/],
  ['\\s*\\s*\\s*x', /follow one another and can all match "\\t", so a long run of it is tried in about n\^4 ways/],
  ['.*.*.*=', /n\^4/],
  ['\\s*\\s*x', /and what follows them can fail, so a long run of it is tried in about n\^3 ways/],
  // Characters outside the fixed sample: the pattern's own characters are sampled, and an atom matching nothing
  // sampled is taken to overlap with anything.
  ['(\\u4e01+)+$', /a run of "丁" can be split/],
  ['(\\p{Script=Linear_B}+)+$', /a run of one same character can be split/],
  ['([\\u4e01-\\u4e05]|[\\u4e03-\\u4e09])+!', /which can both match "丅"/],
];

const withSplit = (pattern: string) => ({ ...GPT2_JSON, pre_tokenizer: { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false } });

test('the pre-tokenizer patterns of real tokenizers pass the backtracking check and tokenise', () => {
  for (const p of REAL_PATTERNS) {
    const split = { type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false };
    const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false };
    const t = Tokenizer.fromJSON({ ...GPT2_JSON, pre_tokenizer: { type: 'Sequence', pretokenizers: [split, byteLevel] } }, 'real/tokenizer.json');
    const text = 'Hello world, 12345 日本語\n\n  x';
    assert.equal(t.encode(text).tokens.map((s) => s.text).join(''), text, p);
  }
});

test('patterns that backtrack catastrophically are refused before anything runs, naming where they are and why', () => {
  for (const [p, why] of HOSTILE_PATTERNS) {
    assert.throws(
      () => Tokenizer.fromJSON(withSplit(p), 'hostile/tokenizer.json'),
      (e: unknown) =>
        e instanceof ResidualError &&
        e.code === 'unsupported' &&
        e.message.startsWith(`hostile/tokenizer.json: "pre_tokenizer.pattern.Regex" ${JSON.stringify(p)} can backtrack catastrophically — `) &&
        why.test(e.message),
      p,
    );
  }
  // In a Replace normalizer (which the library runs on added tokens while it loads) and a Replace decoder, too.
  const added = [{ id: 50257, content: `${'a'.repeat(40)}!`, special: false, normalized: true }];
  assert.throws(() => Tokenizer.fromJSON({ ...GPT2_JSON, added_tokens: added, normalizer: { type: 'Replace', pattern: { Regex: '(a+)+$' }, content: '' } }, 'n'), /"normalizer\.pattern\.Regex" "\(a\+\)\+\$" can backtrack/);
  assert.throws(() => Tokenizer.fromJSON({ ...GPT2_JSON, decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { Regex: '(a|a)*b' }, content: '' }] } }, 'd'), /"decoder\.decoders\[0\]\.pattern\.Regex"/);
  // Invalid, non-string and absurdly nested: named too.
  assert.throws(() => Tokenizer.fromJSON(withSplit('(a'), 't'), /"pre_tokenizer\.pattern\.Regex" "\(a" is not a valid regular expression/);
  let deep: object = { type: 'Lowercase' };
  for (let i = 0; i < 40; i++) deep = { type: 'Sequence', normalizers: [deep] };
  assert.throws(() => Tokenizer.fromJSON({ ...GPT2_JSON, normalizer: deep }, 't'), /"normalizer" nests more than 32 levels deep/);
});

test('a hostile tokenizer.json gets its error within seconds (in a child process with a deadline, so a hang fails the test)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-hostile-'));
  try {
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, JSON.stringify(withSplit('(a+)+$')));
    const { spawn } = await import('node:child_process');
    const t0 = Date.now();
    const out = await new Promise<string>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'catalogue', 'numbers.child.ts'), `${'a'.repeat(60)}!`, file]);
      let text = '';
      child.stdout.on('data', (d) => (text += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('close', () => {
        clearTimeout(timer);
        resolve(text);
      });
    });
    assert.ok(out.trim(), `no answer within ${Date.now() - t0} ms: the tokenizer hung`);
    const r = JSON.parse(out) as { message: string; ms: number };
    assert.match(r.message, /"pre_tokenizer\.pattern\.Regex" "\(a\+\)\+\$" can backtrack catastrophically/);
    assert.ok(r.ms < 2000, `answered after ${r.ms} ms`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
