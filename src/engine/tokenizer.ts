/**
 * Text ⇄ token ids for the models Residual runs, from a Hugging Face `tokenizer.json`.
 *
 * Encoding itself is done by `@huggingface/tokenizers` (the maintained JS port of HF tokenizers). That library
 * gives no character offsets, and every view in Residual needs them (hover a token, highlight the text behind
 * an activation), so this module derives them by aligning each token's raw text against the input's UTF-8 bytes:
 *
 * - Byte-level BPE (GPT-2, Llama 3, Qwen, …; ByteLevel pre-tokenizer or decoder): each character of a token
 *   string stands for one byte through GPT-2's byte↔unicode table, so a token's bytes are exact.
 * - Other tokenizers (Metaspace / SentencePiece style, WordPiece): a token's text is recovered by replacing the
 *   metaspace `▁` with a space, turning byte-fallback tokens `<0xNN>` into their byte and stripping a
 *   continuing-subword prefix (`##`) or end-of-word suffix (`</w>`). Alignment then tolerates exactly two kinds
 *   of difference: a space the tokenizer inserted in front of a token (Metaspace's prefix space) and ASCII
 *   whitespace the tokenizer dropped (WordPiece, added tokens with lstrip/rstrip); dropped whitespace is given to
 *   the token before it. Unknown tokens (`<unk>`) take the text up to where the next token is found.
 * - Anything else — typically a normalizer that rewrote the text (lowercasing, NFKC, accent stripping) — makes
 *   `encode` throw a ResidualError instead of returning offsets that would point at the wrong characters.
 *
 * Offsets are JavaScript string (UTF-16) indices. A token that ends in the middle of a multi-byte UTF-8
 * character (byte-level BPE splits emoji and CJK this way) gets the whole character — the character belongs to
 * the token where its first byte is — and the next token, whose bytes all lie inside that character, then gets
 * an empty span (start === end). So spans are contiguous, never overlap, cover the whole text, and
 * `span.text === input.slice(span.start, span.end)` always holds.
 */
import { lstatSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ResidualError } from './errors';
import { checkInputFile } from './files';
import { checkTokenizerPatterns } from './regexSafety';

export interface TokenSpan {
  id: number;
  /** `input.slice(start, end)`; may be empty (see the module comment on split multi-byte characters). */
  text: string;
  start: number;
  end: number;
  /** Added by a chat template (see chat.ts), not part of the selection. */
  template?: boolean;
}

const SUPPORTED_MODELS = ['BPE', 'Unigram', 'WordPiece'];
/** Looked up, in this order, when the post-processor does not name a beginning-of-sequence token. */
const BOS_NAMES = ['<|begin_of_text|>', '<bos>', '<s>', '<|startoftext|>', '<|endoftext|>'];

type JsonObject = Record<string, unknown>;

function isObject(x: unknown): x is JsonObject {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  return `a ${typeof x}`;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * GPT-2's byte↔unicode table, inverted: the code unit a byte-level token uses → the byte it stands for (-1: none).
 * Printable Latin-1 bytes stand for themselves; the other 68 bytes, in increasing order, are mapped to U+0100….
 */
const UNICODE_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(256 + 68).fill(-1);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[printable ? b : 256 + shifted++] = b;
  }
  return table;
})();

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
const BYTE_FALLBACK = /^<0x([0-9A-Fa-f]{2})>$/;

function isAsciiSpace(b: number): boolean {
  return b === 0x20 || (b >= 0x09 && b <= 0x0d);
}

/** Length of the UTF-8 sequence a lead byte starts (continuation bytes count as 1, so scanning always advances). */
function utf8Length(lead: number): number {
  if (lead < 0xc0) return 1;
  if (lead < 0xe0) return 2;
  if (lead < 0xf0) return 3;
  return 4;
}

/**
 * Maps each UTF-8 byte offset of `text` (as TextEncoder encodes it) to a UTF-16 index. An offset at the start of
 * a character maps to that character's index; an offset inside a character maps to the index just after it.
 * A lone surrogate is one code unit that TextEncoder writes as U+FFFD (3 bytes), as the library sees it.
 */
function byteToUtf16(text: string, byteLength: number): Int32Array {
  const map = new Int32Array(byteLength + 1);
  let b = 0;
  for (let i = 0; i < text.length; ) {
    const c = text.charCodeAt(i);
    let units = 1;
    let bytes: number;
    if (c < 0x80) bytes = 1;
    else if (c < 0x800) bytes = 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes = 4;
        units = 2;
      } else bytes = 3;
    } else bytes = 3;
    map[b] = i;
    for (let k = 1; k < bytes; k++) map[b + k] = i + units;
    b += bytes;
    i += units;
  }
  if (b !== byteLength) throw new Error(`internal: UTF-8 length ${b} != ${byteLength}`);
  map[b] = text.length;
  return map;
}

/** Line and column (both 1-based) of a UTF-16 index. */
function lineColumn(text: string, index: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < index && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return `line ${line}, column ${index - lineStart + 1}`;
}

function jsonProblem(e: unknown, raw: string): string {
  const message = errorMessage(e);
  if (raw.trim() === '') return 'the file is empty; expected the JSON of a Hugging Face tokenizer.json';
  const at = /at position (\d+)/.exec(message);
  if (at) {
    const position = Number(at[1]);
    return `not valid JSON: ${message.replace(/\s*in JSON at position \d+.*$/, '')} at ${lineColumn(raw, position)} (character ${position})`;
  }
  if (/end of JSON input/i.test(message)) {
    return `not valid JSON: the text ends early, at ${lineColumn(raw, raw.length)} (character ${raw.length}); the file looks truncated — download it again`;
  }
  return `not valid JSON: ${message}`;
}

/** Collects every `type` found in a component and its nested Sequence members. */
function componentTypes(node: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(node)) {
    for (const x of node) componentTypes(x, out);
  } else if (isObject(node)) {
    if (typeof node.type === 'string') out.add(node.type);
    for (const key of ['pretokenizers', 'decoders', 'normalizers', 'processors']) componentTypes(node[key], out);
  }
  return out;
}

function findComponent(node: unknown, type: string): JsonObject | undefined {
  if (Array.isArray(node)) {
    for (const x of node) {
      const found = findComponent(x, type);
      if (found) return found;
    }
  } else if (isObject(node)) {
    if (node.type === type) return node;
    for (const key of ['pretokenizers', 'decoders', 'normalizers', 'processors']) {
      const found = findComponent(node[key], type);
      if (found) return found;
    }
  }
  return undefined;
}

/** The model type, explicit or (for old files without `type`) inferred from the fields the way HF does. */
function modelType(model: JsonObject, source: string): string {
  if (model.type !== undefined) {
    if (typeof model.type !== 'string') {
      throw new ResidualError(`"model.type" must be a string, found ${describe(model.type)}`, source, 'invalid');
    }
    if (!SUPPORTED_MODELS.includes(model.type)) {
      throw new ResidualError(
        `tokenizer model type "${model.type}" is not supported (supported: ${SUPPORTED_MODELS.join(', ')})`,
        source,
        'unsupported',
      );
    }
    return model.type;
  }
  if (Array.isArray(model.vocab)) return 'Unigram';
  if (isObject(model.vocab) && Array.isArray(model.merges)) return 'BPE';
  if (isObject(model.vocab) && 'continuing_subword_prefix' in model && 'max_input_chars_per_word' in model) return 'WordPiece';
  throw new ResidualError(
    `"model" has no "type" and its fields match none of ${SUPPORTED_MODELS.join(', ')}; this tokenizer is not supported`,
    source,
    'unsupported',
  );
}

function validateModel(model: JsonObject, type: string, source: string): void {
  if (type === 'Unigram') {
    if (!Array.isArray(model.vocab)) {
      throw new ResidualError(`"model.vocab" of a Unigram model must be an array of [piece, score], found ${describe(model.vocab)}`, source, 'invalid');
    }
    if (model.vocab.length === 0) throw new ResidualError('the vocabulary ("model.vocab") is empty', source, 'invalid');
    model.vocab.forEach((entry, i) => {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string' || typeof entry[1] !== 'number') {
        throw new ResidualError(`"model.vocab[${i}]" must be [piece, score], found ${JSON.stringify(entry)}`, source, 'invalid');
      }
    });
    return;
  }
  if (!isObject(model.vocab)) {
    throw new ResidualError(`"model.vocab" of a ${type} model must be an object of token → id, found ${describe(model.vocab)}`, source, 'invalid');
  }
  const entries = Object.entries(model.vocab);
  if (entries.length === 0) throw new ResidualError('the vocabulary ("model.vocab") is empty', source, 'invalid');
  for (const [token, id] of entries) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new ResidualError(`"model.vocab" maps ${JSON.stringify(token)} to ${JSON.stringify(id)}; ids must be non-negative integers`, source, 'invalid');
    }
  }
  if (type === 'BPE') {
    if (!Array.isArray(model.merges)) {
      throw new ResidualError(`"model.merges" of a BPE model must be an array, found ${describe(model.merges)}`, source, 'invalid');
    }
    model.merges.forEach((m, i) => {
      const ok =
        (typeof m === 'string' && m.includes(' ')) ||
        (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string');
      if (!ok) {
        throw new ResidualError(`"model.merges[${i}]" must be "left right" or [left, right], found ${JSON.stringify(m)}`, source, 'invalid');
      }
    });
  }
}

function validateAddedTokens(added: unknown, source: string): JsonObject[] {
  if (added === undefined || added === null) return [];
  if (!Array.isArray(added)) throw new ResidualError(`"added_tokens" must be an array, found ${describe(added)}`, source, 'invalid');
  added.forEach((t, i) => {
    if (!isObject(t) || !Number.isInteger(t.id) || (t.id as number) < 0 || typeof t.content !== 'string' || t.content === '') {
      throw new ResidualError(`"added_tokens[${i}]" must have a non-negative integer "id" and a non-empty "content"`, source, 'invalid');
    }
  });
  return added as JsonObject[];
}

/** The id the post-processor puts in front of a single sequence (BOS / CLS), if it names one. */
function templateBos(node: unknown): number | undefined {
  if (!isObject(node)) return undefined;
  if (node.type === 'TemplateProcessing' && Array.isArray(node.single)) {
    const first: unknown = node.single[0];
    if (isObject(first) && isObject(first.SpecialToken) && typeof first.SpecialToken.id === 'string') {
      const special = isObject(node.special_tokens) ? node.special_tokens[first.SpecialToken.id] : undefined;
      const ids = isObject(special) ? special.ids : undefined;
      if (Array.isArray(ids) && Number.isInteger(ids[0])) return ids[0] as number;
    }
    return undefined;
  }
  if ((node.type === 'BertProcessing' || node.type === 'RobertaProcessing') && Array.isArray(node.cls)) {
    return Number.isInteger(node.cls[1]) ? (node.cls[1] as number) : undefined;
  }
  if (node.type === 'Sequence' && Array.isArray(node.processors)) {
    for (const p of node.processors) {
      const id = templateBos(p);
      if (id !== undefined) return id;
    }
  }
  return undefined;
}

/** How to turn one token string back into the bytes of the input it covers (see the module comment). */
interface SurfaceRules {
  byteLevel: boolean;
  metaspace: string;
  byteFallback: boolean;
  prefix: string;
  suffix: string;
  normalizer: string | undefined;
}

export class Tokenizer {
  /** Number of ids the tokenizer knows (largest id + 1, added tokens included). A model's embedding may be larger. */
  readonly vocabSize: number;
  /** The beginning-of-sequence token to prepend (`encode` never adds special tokens itself), if the tokenizer has one. */
  readonly bosId?: number;
  /**
   * Whether the tokenizer's own post-processor puts `bosId` in front of every sequence (Llama 3, Gemma, …), so the
   * model was trained with it there and `encodeForModel` adds it, as transformers and TransformerLens do. GPT-2's
   * tokenizer adds nothing.
   */
  readonly prependsBos: boolean;

  private readonly addedIds = new Map<number, string>();
  private readonly unkId: number | undefined;
  private readonly surfaces = new Map<number, Uint8Array | null>();

  private constructor(
    private readonly hf: HfTokenizer,
    /** The file (or label) the tokenizer came from; every error names it. */
    readonly source: string,
    private readonly rules: SurfaceRules,
    json: JsonObject,
    added: JsonObject[],
  ) {
    const model = hf.model!;
    this.vocabSize = model.vocab.length;
    for (const t of added) this.addedIds.set(t.id as number, t.content as string);
    this.unkId = model.unk_token_id;
    let bos = templateBos(json.post_processor);
    this.prependsBos = bos !== undefined && bos < this.vocabSize;
    if (bos === undefined) {
      for (const name of BOS_NAMES) {
        bos = this.idOf(name);
        if (bos !== undefined) break;
      }
    }
    if (bos !== undefined && bos < this.vocabSize) this.bosId = bos;
  }

  /** Reads a Hugging Face `tokenizer.json` (checked first to be a regular file, or a link to one). */
  static async fromFile(path: string): Promise<Tokenizer> {
    // Checked before the read: a FIFO would block it forever, a folder or a dangling symlink is named as such.
    if (lexists(path)) {
      if (lstatSync(path).isDirectory()) throw new ResidualError('is a folder; give the path of its tokenizer.json', path, 'invalid');
      checkInputFile(path);
    }
    let raw: string;
    try {
      raw = await readFile(path, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new ResidualError('tokenizer file not found', path, 'missing');
      if (code === 'EISDIR') throw new ResidualError('is a folder; give the path of its tokenizer.json', path, 'invalid');
      throw new ResidualError(`cannot read the tokenizer file: ${errorMessage(e)}`, path, 'invalid');
    }
    if (raw.charCodeAt(0) === 0xfeff) raw = raw.slice(1); // a UTF-8 byte order mark is not JSON
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch (e) {
      throw new ResidualError(jsonProblem(e, raw), path, 'invalid');
    }
    return Tokenizer.fromJSON(json, path);
  }

  /** Builds a tokenizer from the parsed content of a `tokenizer.json`; `source` names it in errors. */
  static fromJSON(json: unknown, source: string): Tokenizer {
    if (!isObject(json)) {
      throw new ResidualError(`not a tokenizer.json: expected a JSON object at the top level, found ${describe(json)}`, source, 'invalid');
    }
    if (json.model === undefined || json.model === null) {
      const hint =
        'tokenizer_class' in json || 'model_max_length' in json
          ? '; this looks like tokenizer_config.json — use the tokenizer.json next to it'
          : '';
      throw new ResidualError(`has no "model" section, so it is not a Hugging Face tokenizer.json${hint}`, source, 'unsupported');
    }
    if (!isObject(json.model)) throw new ResidualError(`"model" must be an object, found ${describe(json.model)}`, source, 'invalid');
    const type = modelType(json.model, source);
    validateModel(json.model, type, source);
    const added = validateAddedTokens(json.added_tokens, source);
    // Before the library builds anything: building already runs the normalizer (on the added tokens).
    checkTokenizerPatterns(json, source);

    // The library requires these keys to be present (null allowed); old files may omit some.
    const config = {
      ...json,
      model: { ...json.model, type },
      normalizer: json.normalizer ?? null,
      pre_tokenizer: json.pre_tokenizer ?? null,
      post_processor: json.post_processor ?? null,
      decoder: json.decoder ?? null,
      added_tokens: added,
    };
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(config, {});
    } catch (e) {
      const message = errorMessage(e);
      throw new ResidualError(
        `the tokenizer library could not load it: ${message}`,
        source,
        /^Unknown\b/.test(message) ? 'unsupported' : 'invalid',
      );
    }
    if (!hf.model || hf.model.vocab.length === 0) throw new ResidualError('the vocabulary ("model.vocab") is empty', source, 'invalid');

    const types = new Set([...componentTypes(json.pre_tokenizer), ...componentTypes(json.decoder)]);
    const model = json.model;
    const metaspace = findComponent(json.pre_tokenizer, 'Metaspace') ?? findComponent(json.decoder, 'Metaspace');
    const rules: SurfaceRules = {
      byteLevel: types.has('ByteLevel'),
      metaspace: typeof metaspace?.replacement === 'string' && metaspace.replacement !== '' ? metaspace.replacement : '\u2581',
      byteFallback: model.byte_fallback === true,
      prefix:
        typeof model.continuing_subword_prefix === 'string'
          ? model.continuing_subword_prefix
          : type === 'WordPiece'
            ? '##'
            : '',
      suffix: typeof model.end_of_word_suffix === 'string' ? model.end_of_word_suffix : '',
      normalizer: isObject(json.normalizer) && typeof json.normalizer.type === 'string' ? json.normalizer.type : undefined,
    };
    return new Tokenizer(hf, source, rules, json, added);
  }

  /**
   * `encode`, with the beginning-of-sequence token in front when the tokenizer itself adds one (`prependsBos`); that
   * token covers no text (span 0..0). What the model should see for a prompt.
   */
  encodeForModel(text: string): { ids: number[]; tokens: TokenSpan[] } {
    const enc = this.encode(text);
    return this.prependsBos ? this.withBos(enc) : enc;
  }

  /**
   * Puts `bosId` in front of an encoding (span 0..0, no text), unless the encoding starts with it already (a rendered
   * chat template writes it): then `enc` itself is returned.
   */
  withBos(enc: { ids: number[]; tokens: TokenSpan[] }): { ids: number[]; tokens: TokenSpan[] } {
    if (this.bosId === undefined || enc.tokens[0]?.id === this.bosId) return enc;
    return { ids: [this.bosId, ...enc.ids], tokens: [{ id: this.bosId, text: '', start: 0, end: 0 }, ...enc.tokens] };
  }

  /**
   * Token ids of `text` with their character spans. Adds no special tokens (prepend `bosId` yourself); special
   * tokens written in the text, such as `<|endoftext|>`, are recognised as such, as HF tokenizers do.
   * Throws a ResidualError when spans cannot be derived faithfully (see the module comment).
   */
  encode(text: string): { ids: number[]; tokens: TokenSpan[] } {
    if (typeof text !== 'string') throw new ResidualError(`encode expects a string, got ${describe(text)}`, this.source, 'invalid');
    if (text.length === 0) return { ids: [], tokens: [] };
    let encoded: { ids: number[]; tokens: string[] };
    try {
      encoded = this.hf.encode(text, { add_special_tokens: false });
    } catch (e) {
      throw new ResidualError(`tokenizing failed: ${errorMessage(e)}`, this.source, 'invalid');
    }
    const { ids, tokens: pieces } = encoded;
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i])) {
        throw new ResidualError(
          `the piece ${JSON.stringify(pieces[i])} is not in the vocabulary and the tokenizer has no unknown token`,
          this.source,
          'unsupported',
        );
      }
    }
    const bytes = utf8Encoder.encode(text);
    const ends = this.align(text, bytes, ids, pieces);
    const toUtf16 = byteToUtf16(text, bytes.length);
    const tokens: TokenSpan[] = new Array(ids.length);
    let start = 0;
    for (let i = 0; i < ids.length; i++) {
      const end = toUtf16[ends[i]];
      tokens[i] = { id: ids[i], text: text.slice(start, end), start, end };
      start = end;
    }
    return { ids: ids.slice(), tokens };
  }

  /**
   * The text of a sequence of ids (special tokens written out, no clean-up of spaces, so it round-trips). An id the
   * tokenizer has no token for (see `unusedText`) is written `<unused N>` in its place.
   */
  decode(ids: number[]): string {
    if (!Array.isArray(ids)) throw new ResidualError(`decode expects an array of ids, got ${describe(ids)}`, this.source, 'invalid');
    for (const id of ids) this.checkId(id);
    let out = '';
    for (let i = 0; i < ids.length; ) {
      if (!this.hasToken(ids[i])) {
        out += unusedText(ids[i++]);
        continue;
      }
      let j = i;
      while (j < ids.length && this.hasToken(ids[j])) j++;
      out += this.hf.decode(ids.slice(i, j), { skip_special_tokens: false, clean_up_tokenization_spaces: false });
      i = j;
    }
    return out;
  }

  /**
   * Whether the tokenizer has a token for `id`. Many checkpoints pad their embedding beyond the tokenizer (Pythia:
   * 50,304 rows for 50,277 tokens; Qwen2.5: 151,936 for about 151,665), and a vocabulary may leave gaps; a model can
   * still predict those ids, and the logit lens can land on them.
   */
  hasToken(id: number): boolean {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.hf.model!.vocab[id] !== undefined;
  }

  /**
   * The text one token stands for, for display: leading spaces kept, `▁` shown as a space, special tokens as
   * written; bytes of a multi-byte character cut by the token boundary show as U+FFFD. An id the tokenizer has no
   * token for (`hasToken`) is `<unused N>`.
   */
  tokenText(id: number): string {
    this.checkId(id);
    const piece = this.hf.model!.vocab[id];
    if (piece === undefined) return unusedText(id);
    const surface = this.surfaceOf(id, piece);
    return surface === null ? piece : utf8Decoder.decode(surface);
  }

  /**
   * The token for people to read: its text where its bytes are whole UTF-8 characters, and each byte that is not
   * (a piece of a character cut by the token boundary) as `<0xNN>`, as byte-fallback vocabularies write them; an id
   * without a token as `<unused N>`.
   */
  tokenDisplay(id: number): string {
    this.checkId(id);
    const piece = this.hf.model!.vocab[id];
    if (piece === undefined) return unusedText(id);
    const surface = this.surfaceOf(id, piece);
    return surface === null ? piece : displayBytes(surface);
  }

  /** The id of a token string as it appears in the vocabulary (e.g. `<|endoftext|>`, `Ġthe`), if any. */
  idOf(tokenString: string): number | undefined {
    return this.hf.token_to_id(tokenString);
  }

  /** A token id must be a non-negative integer; one past the tokenizer's vocabulary is an unused id, not an error. */
  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0) throw new ResidualError(`token id ${id} is not a valid id (a non-negative integer)`, this.source, 'invalid');
  }

  /** The input bytes a token covers, or null when unknown (an `<unk>`, or a piece we cannot map). Cached by id. */
  private surfaceOf(id: number, piece: string): Uint8Array | null {
    const cached = this.surfaces.get(id);
    if (cached !== undefined) return cached;
    let surface: Uint8Array | null;
    const added = this.addedIds.get(id);
    if (id === this.unkId) surface = null;
    else if (added !== undefined) surface = utf8Encoder.encode(added);
    else if (this.rules.byteLevel) {
      surface = new Uint8Array(piece.length);
      for (let i = 0; i < piece.length; i++) {
        const c = piece.charCodeAt(i);
        const b = c < UNICODE_TO_BYTE.length ? UNICODE_TO_BYTE[c] : -1;
        if (b < 0) {
          surface = null;
          break;
        }
        surface[i] = b;
      }
    } else {
      const fallback = this.rules.byteFallback ? BYTE_FALLBACK.exec(piece) : null;
      if (fallback) surface = Uint8Array.of(parseInt(fallback[1], 16));
      else {
        let s = piece;
        const { prefix, suffix } = this.rules;
        if (prefix && s.length > prefix.length && s.startsWith(prefix)) s = s.slice(prefix.length);
        if (suffix && s.length > suffix.length && s.endsWith(suffix)) s = s.slice(0, -suffix.length);
        surface = utf8Encoder.encode(s.split(this.rules.metaspace).join(' '));
      }
    }
    this.surfaces.set(id, surface);
    return surface;
  }

  /**
   * Aligns the tokens with the input bytes; returns each token's end byte offset (token i starts where token i-1
   * ends, token 0 at 0, the last ends at the end of the input).
   */
  private align(text: string, input: Uint8Array, ids: number[], pieces: string[]): Int32Array {
    const n = ids.length;
    const ends = new Int32Array(n);
    let cursor = 0;
    let pending = -1; // first of a run of unknown tokens waiting for the next known one to be placed

    /** Bytes of `s` from `from` equal `input` at `at`. */
    const equalAt = (at: number, s: Uint8Array, from: number): boolean => {
      if (at + s.length - from > input.length) return false;
      for (let k = from; k < s.length; k++) if (input[at + k - from] !== s[k]) return false;
      return true;
    };
    /** Match at `at`, either exactly or without an inserted leading space; returns the bytes of `s` skipped, or -1. */
    const matchAt = (at: number, s: Uint8Array): number => {
      if (equalAt(at, s, 0)) return 0;
      if (s[0] === 0x20 && equalAt(at, s, 1)) return 1;
      return -1;
    };
    /**
     * Spreads bytes [cursor, to) over the unknown tokens pending..last: leading whitespace to the token before them
     * (as dropped whitespace elsewhere), then one character each, the rest to the last.
     */
    const settlePending = (last: number, to: number): void => {
      let at = cursor;
      if (pending > 0) {
        while (at < to && isAsciiSpace(input[at])) at++;
        ends[pending - 1] = at;
      }
      for (let k = pending; k < last; k++) {
        if (at < to) at = Math.min(to, at + utf8Length(input[at]));
        ends[k] = at;
      }
      ends[last] = to;
      pending = -1;
    };

    for (let i = 0; i < n; i++) {
      const s = this.surfaceOf(ids[i], pieces[i]);
      if (s === null) {
        if (pending < 0) pending = i;
        continue;
      }
      if (s.length === 0) {
        // Covers nothing; inside a run of unknown tokens it is settled with them.
        if (pending < 0) ends[i] = cursor;
        continue;
      }
      let at = -1;
      let skipped = -1;
      if (pending >= 0) {
        // After unknown tokens: the first place further on, at a character boundary, where this token fits.
        for (let p = cursor; p < input.length && at < 0; p++) {
          if ((input[p] & 0xc0) === 0x80) continue;
          skipped = matchAt(p, s);
          if (skipped >= 0) at = p;
        }
      } else {
        skipped = matchAt(cursor, s);
        if (skipped >= 0) at = cursor;
        else {
          let p = cursor;
          while (p < input.length && isAsciiSpace(input[p])) p++;
          if (p > cursor) {
            skipped = matchAt(p, s);
            if (skipped >= 0) at = p;
          }
        }
      }
      if (at < 0) throw this.alignmentError(text, input, cursor, i, ids[i], pieces[i]);
      if (pending >= 0) settlePending(i - 1, at);
      else if (at > cursor && i > 0) ends[i - 1] = at; // dropped whitespace goes to the token before it
      cursor = at + s.length - skipped;
      ends[i] = cursor;
    }
    if (pending >= 0) settlePending(n - 1, input.length);
    else if (cursor < input.length) {
      for (let p = cursor; p < input.length; p++) {
        if (!isAsciiSpace(input[p])) throw this.alignmentError(text, input, cursor, n, undefined, undefined);
      }
      if (n > 0) ends[n - 1] = input.length;
    }
    return ends;
  }

  private alignmentError(
    text: string,
    input: Uint8Array,
    cursor: number,
    index: number,
    id: number | undefined,
    piece: string | undefined,
  ): ResidualError {
    const at = byteToUtf16(text, input.length)[cursor];
    const context = JSON.stringify(text.slice(at, at + 20));
    const what =
      piece === undefined
        ? `the tokens end at character ${at} but the text goes on (${context})`
        : `token ${index} ${JSON.stringify(piece)} (id ${id}) does not match the text at character ${at} (${context})`;
    const why = this.rules.normalizer
      ? `; the tokenizer's normalizer (${this.rules.normalizer}) rewrites the text before splitting it, so its tokens need not be substrings of the input`
      : '';
    return new ResidualError(`cannot derive character offsets: ${what}${why}`, this.source, 'unsupported');
  }
}

/**
 * How an id the tokenizer has no token for is shown (`tokenText`, `tokenDisplay`, `decode`): `<unused N>`, as
 * padded embedding rows are usually described.
 */
export function unusedText(id: number): string {
  return `<unused ${id}>`;
}

/**
 * UTF-8 bytes as text, with every byte that is not part of a well-formed character, and every control character
 * but tab, newline and carriage return, written as `<0xNN>`.
 */
export function displayBytes(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    // Length of the character that starts here, and the allowed range of its second byte (RFC 3629's table).
    const [n, lo, hi] = b < 0x80 ? [1, 0, 0] : b >= 0xc2 && b <= 0xdf ? [2, 0x80, 0xbf] : b === 0xe0 ? [3, 0xa0, 0xbf] : b >= 0xe1 && b <= 0xec ? [3, 0x80, 0xbf] : b === 0xed ? [3, 0x80, 0x9f] : b >= 0xee && b <= 0xef ? [3, 0x80, 0xbf] : b === 0xf0 ? [4, 0x90, 0xbf] : b >= 0xf1 && b <= 0xf3 ? [4, 0x80, 0xbf] : b === 0xf4 ? [4, 0x80, 0x8f] : [0, 0, 0];
    let ok = n > 0 && i + n <= bytes.length;
    for (let k = 1; ok && k < n; k++) {
      const c = bytes[i + k];
      ok = k === 1 ? c >= lo && c <= hi : c >= 0x80 && c <= 0xbf;
    }
    // Control characters other than tab, newline and carriage return have no glyph: shown as bytes too.
    if (ok && n === 1 && ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f)) ok = false;
    if (ok) {
      out += utf8Decoder.decode(bytes.subarray(i, i + n));
      i += n;
    } else {
      out += `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      i++;
    }
  }
  return out;
}

/**
 * A token as a person types it into a field: `\n`, `\t`, `\r` and `\\` are the characters they name, and the glyphs
 * the panels draw for them (⏎ or ↵ for a newline, → for a tab, ␍ for a carriage return) are read back as those
 * characters, so the newline a model predicts can be typed. Anything else is taken as written.
 */
export function unescapeTokenInput(text: string): string {
  return text.replace(/\\([ntr\\])|[⏎↵→␍]/g, (m, esc: string | undefined) => {
    if (esc === 'n' || m === '⏎' || m === '↵') return '\n';
    if (esc === 't' || m === '→') return '\t';
    if (esc === 'r' || m === '␍') return '\r';
    return '\\';
  });
}

function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
