/**
 * A static check of the regular expressions a tokenizer.json brings (Split pre-tokenizers, Replace normalizers and
 * decoders) for catastrophic backtracking, made before any of them runs.
 *
 * Why static: JavaScript cannot interrupt a running `RegExp.exec`, and tokenising happens synchronously on the
 * extension host's thread, so a pattern such as `(a+)+$` would freeze the host for good on a few dozen characters.
 * A time limit would need every tokenisation off-thread (a worker per call, every caller made asynchronous); a check
 * of the pattern itself costs microseconds, refuses before anything runs (the library runs the normalizer on the
 * added tokens while it loads), and can say which part of the pattern is the problem.
 *
 * What is refused — the two shapes behind practically every catastrophic pattern:
 *  1. Exponential: a repetition whose body can split the same text in more than one way across iterations — the
 *     body holds a repetition or option that can end (or start) an iteration with characters the next (or previous)
 *     iteration can also start (or end) with (`(a+)+`, `(x+x+)+y`, `(\w+\s?)*`, `(a?a)*`), or an alternation whose
 *     branches can match the same text (`(a|aa)+`, `(\w|\d)*`).
 *  2. Polynomial: long repetitions in a row that can all match one same character, three or more of them
 *     (`\s*\s*\s*x`, `.*.*.*=`), or two followed by something that can fail (`\s*\s*x`): every split of a long run
 *     of that character is then tried from every start position. Two in a row with nothing after them that can fail
 *     are allowed — real tokenizers end alternatives that way (`\s*[\r\n]+` in Llama 3's, `[\p{Lu}…]*[\p{Ll}…]+` in
 *     GPT-4o's) and they match as soon as the run ends. A single repetition followed by something that can fail
 *     (`\s+x`) is ordinary and at worst quadratic on a long run; it is allowed.
 * Character sets are compared on a sample of characters — a fixed one (ASCII, Latin, Greek, Cyrillic, CJK, Arabic,
 * digits of several scripts, marks, spaces, emoji, …) plus every character the pattern itself names (literals, escapes,
 * the ends of class ranges, so two ranges that overlap always share a sampled character) — each atom tested with the
 * engine's own RegExp, so `\p{…}` classes, negations and escapes need no hand-written tables. An atom that matches no
 * sampled character is taken to match anything (it could overlap with whatever it meets). A pattern this parser does
 * not understand is refused (it could hide anything).
 */
import { SplitPreTokenizer } from '@huggingface/tokenizers';
import { ResidualError } from './errors';

/** The fixed part of the sample of characters set overlaps are judged on. */
const BASE_PROBES: string[] = (() => {
  const cps: number[] = [];
  for (let c = 0; c < 0x80; c++) cps.push(c);
  cps.push(
    0x85, 0xa0, 0xa9, 0xad, 0xb2, 0xb5, 0xb9, 0xbc, 0xc9, 0xdf, 0xe9, 0xff, 0x100, 0x101, 0x1c5, 0x2b0, 0x301, 0x345, 0x391, 0x3b1,
    0x416, 0x436, 0x5d0, 0x5be, 0x627, 0x660, 0x663, 0x6d4, 0x903, 0x905, 0x964, 0x966, 0xe01, 0xe50, 0x1100, 0x1680, 0x180e,
    0x2003, 0x200b, 0x200d, 0x2014, 0x2019, 0x2026, 0x2028, 0x2029, 0x202f, 0x205f, 0x20ac, 0x2160, 0x2200, 0x2460, 0x3000,
    0x3001, 0x3002, 0x3042, 0x30a2, 0x30fc, 0x4e2d, 0x65e5, 0xac00, 0xe000, 0xfeff, 0xff01, 0xff10, 0xff21, 0xff41, 0xfffd,
    0x1d400, 0x1f600, 0x1f44d, 0x20000, 0xd800,
  );
  return cps.map((c) => String.fromCodePoint(c));
})();

/** The sample of the pattern being checked (BASE_PROBES plus its own characters; set by backtrackingRisk). */
let PROBES: string[] = BASE_PROBES;
let N = PROBES.length;
let ALL: Bits = new Uint8Array(N).fill(1);
let setCache = new Map<string, Bits>();

/** Every character a pattern names: its literal code points and those its escapes spell out. */
function namedCharacters(source: string): string[] {
  const out = new Set<string>();
  for (const ch of source) if (ch.codePointAt(0)! >= 0x80) out.add(ch);
  for (const m of source.matchAll(/\\u\{([0-9A-Fa-f]{1,6})\}|\\u([0-9A-Fa-f]{4})|\\x([0-9A-Fa-f]{2})/g)) {
    const cp = parseInt(m[1] ?? m[2] ?? m[3], 16);
    if (cp <= 0x10ffff) out.add(String.fromCodePoint(cp));
  }
  return [...out];
}

type Bits = Uint8Array;
const none = (): Bits => new Uint8Array(N);
function union(a: Bits, b: Bits): Bits {
  const out = new Uint8Array(N);
  for (let i = 0; i < N; i++) out[i] = a[i] | b[i];
  return out;
}
function intersect(a: Bits, b: Bits): Bits {
  const out = new Uint8Array(N);
  for (let i = 0; i < N; i++) out[i] = a[i] & b[i];
  return out;
}
function any(a: Bits): boolean {
  for (let i = 0; i < N; i++) if (a[i]) return true;
  return false;
}
/** A character of the set, for messages. */
function example(a: Bits): string {
  if (a.every((x) => x === 1)) return 'one same character';
  for (let i = 0; i < N; i++) if (a[i] && /[\p{L}\p{N}\p{P}\p{S}]/u.test(PROBES[i])) return JSON.stringify(PROBES[i]);
  for (let i = 0; i < N; i++) if (a[i]) return JSON.stringify(PROBES[i]);
  return '';
}

type Node =
  | { k: 'char'; set: Bits; src: string }
  | { k: 'seq'; items: Node[]; src: string }
  | { k: 'alt'; branches: Node[]; src: string }
  | { k: 'rep'; body: Node; min: number; max: number; src: string }
  | { k: 'zero'; src: string }
  | { k: 'look'; body: Node; src: string }
  | { k: 'backref'; src: string };

class Unsupported extends Error {}

/** Which sample characters one atom (a class, an escape, a literal, `.`) matches, by the engine itself. */
function charSet(atom: string, flags: string): Bits {
  const f = [...new Set(flags.replace(/[gyd]/g, '') + 'u')].join('');
  const key = `${f}/${atom}`;
  const cached = setCache.get(key);
  if (cached) return cached;
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${atom})$`, f);
  } catch {
    throw new Unsupported(`cannot read ${JSON.stringify(atom)}`);
  }
  let bits = none();
  for (let i = 0; i < N; i++) {
    const c = PROBES[i];
    // Case variants too (over-approximates for case-insensitive matching; only ever finds more overlaps).
    if (re.test(c) || (flags.includes('i') && (re.test(c.toLowerCase()) || re.test(c.toUpperCase())))) bits[i] = 1;
  }
  // Matches none of the sample (a script we did not sample, say): assume it overlaps with anything.
  if (!any(bits) && !re.test('')) bits = ALL;
  setCache.set(key, bits);
  return bits;
}

/** A parser of JavaScript regular expression syntax (u mode), enough to see the structure the check needs. */
class Parser {
  private i = 0;
  constructor(
    private readonly s: string,
    private readonly flags: string,
  ) {}

  parse(): Node {
    const n = this.alt();
    if (this.i < this.s.length) throw new Unsupported(`unexpected ${JSON.stringify(this.s[this.i])} at ${this.i}`);
    return n;
  }

  private alt(): Node {
    const start = this.i;
    const branches = [this.seq()];
    while (this.s[this.i] === '|') {
      this.i++;
      branches.push(this.seq());
    }
    return branches.length === 1 ? branches[0] : { k: 'alt', branches, src: this.s.slice(start, this.i) };
  }

  private seq(): Node {
    const start = this.i;
    const items: Node[] = [];
    while (this.i < this.s.length && this.s[this.i] !== '|' && this.s[this.i] !== ')') {
      const t = this.term();
      // A group that is itself a sequence is spliced in: `(?:ab)c` reads as `abc`.
      if (t.k === 'seq') items.push(...t.items);
      else items.push(t);
    }
    return items.length === 1 ? items[0] : { k: 'seq', items, src: this.s.slice(start, this.i) };
  }

  private term(): Node {
    const start = this.i;
    const atom = this.atom();
    const q = /^(?:([*+?])|\{(\d+)(,(\d*))?\})(\??)/.exec(this.s.slice(this.i));
    if (!q) return atom;
    this.i += q[0].length;
    let min: number;
    let max: number;
    if (q[1]) [min, max] = q[1] === '*' ? [0, Infinity] : q[1] === '+' ? [1, Infinity] : [0, 1];
    else {
      min = Number(q[2]);
      max = q[3] === undefined ? min : q[4] === '' ? Infinity : Number(q[4]);
    }
    return { k: 'rep', body: atom, min, max, src: this.s.slice(start, this.i) };
  }

  private atom(): Node {
    const s = this.s;
    const start = this.i;
    const c = s[this.i];
    const char = (src: string): Node => ({ k: 'char', set: charSet(src, this.flags), src });
    if (c === '^' || c === '$') {
      this.i++;
      return { k: 'zero', src: c };
    }
    if (c === '(') {
      const head = /^\((\?(?::|=|!|<=|<!|<[A-Za-z_$][\w$]*>|[ims]*-?[ims]*:))?/.exec(s.slice(this.i))![0];
      this.i += head.length;
      const body = this.alt();
      if (s[this.i] !== ')') throw new Unsupported(`unclosed group at ${start}`);
      this.i++;
      if (head === '(?=' || head === '(?!' || head === '(?<=' || head === '(?<!') return { k: 'look', body, src: s.slice(start, this.i) };
      return body;
    }
    if (c === '.') {
      this.i++;
      return char('.');
    }
    if (c === '[') {
      let j = this.i + 1;
      if (s[j] === '^') j++;
      while (j < s.length && s[j] !== ']') j += s[j] === '\\' ? 2 : 1;
      if (j >= s.length) throw new Unsupported(`unclosed class at ${start}`);
      this.i = j + 1;
      return char(s.slice(start, this.i));
    }
    if (c === '\\') {
      const rest = s.slice(this.i);
      let m: RegExpExecArray | null;
      if ((m = /^\\[bB]/.exec(rest))) {
        this.i += 2;
        return { k: 'zero', src: m[0] };
      }
      if ((m = /^\\(?:[1-9]\d*|k<[^>]*>)/.exec(rest))) {
        this.i += m[0].length;
        return { k: 'backref', src: m[0] };
      }
      m =
        /^\\(?:[pP]\{[^}]*\}|u\{[0-9A-Fa-f]+\}|u[dD][89abAB][0-9A-Fa-f]{2}\\u[dD][c-fC-F][0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2}|c[A-Za-z]|0|[dDwWsSnrtfv]|[\^$\\.*+?()[\]{}|/-])/.exec(rest);
      if (!m) throw new Unsupported(`unknown escape ${JSON.stringify(rest.slice(0, 2))} at ${start}`);
      this.i += m[0].length;
      return char(m[0]);
    }
    if (c === ')' || c === '*' || c === '+' || c === '?') throw new Unsupported(`unexpected ${JSON.stringify(c)} at ${start}`);
    const cp = String.fromCodePoint(s.codePointAt(this.i)!);
    this.i += cp.length;
    return char(cp.replace(/[\^$\\.*+?()[\]{}|/]/g, '\\$&'));
  }
}

interface Props {
  nullable: boolean;
  first: Bits;
  last: Bits;
  chars: Bits;
}

const propsCache = new WeakMap<Node, Props>();

function props(n: Node): Props {
  const cached = propsCache.get(n);
  if (cached) return cached;
  let p: Props;
  switch (n.k) {
    case 'char':
      p = { nullable: false, first: n.set, last: n.set, chars: n.set };
      break;
    case 'zero':
    case 'look':
      p = { nullable: true, first: none(), last: none(), chars: none() };
      break;
    case 'backref':
      // Whatever its group matched: any text (conservative).
      p = { nullable: true, first: ALL, last: ALL, chars: ALL };
      break;
    case 'rep': {
      const b = props(n.body);
      p = n.max === 0 ? { nullable: true, first: none(), last: none(), chars: none() } : { ...b, nullable: n.min === 0 || b.nullable };
      break;
    }
    case 'alt': {
      const bs = n.branches.map(props);
      p = {
        nullable: bs.some((b) => b.nullable),
        first: bs.reduce((a, b) => union(a, b.first), none()),
        last: bs.reduce((a, b) => union(a, b.last), none()),
        chars: bs.reduce((a, b) => union(a, b.chars), none()),
      };
      break;
    }
    case 'seq': {
      const ps = n.items.map(props);
      let first = none();
      for (const x of ps) {
        first = union(first, x.first);
        if (!x.nullable) break;
      }
      let last = none();
      for (let i = ps.length - 1; i >= 0; i--) {
        last = union(last, ps[i].last);
        if (!ps[i].nullable) break;
      }
      p = { nullable: ps.every((x) => x.nullable), first, last, chars: ps.reduce((a, b) => union(a, b.chars), none()) };
      break;
    }
  }
  propsCache.set(n, p);
  return p;
}

/** A repetition that can run long enough to matter (at least 4 times). */
const isLoop = (n: Node): n is Extract<Node, { k: 'rep' }> => n.k === 'rep' && n.max >= 4 && any(props(n.body).chars);
/** A repetition or option: a point where the matcher can choose how much to take. */
const isChoice = (n: Node): n is Extract<Node, { k: 'rep' }> => n.k === 'rep' && n.max > n.min && any(props(n.body).chars);

/** True when `n` matches (the empty string at least) wherever it is tried: it can never make a match fail. */
function alwaysSucceeds(n: Node): boolean {
  switch (n.k) {
    case 'rep':
      return n.min === 0 || alwaysSucceeds(n.body);
    case 'alt':
      return n.branches.some(alwaysSucceeds);
    case 'seq':
      return n.items.every(alwaysSucceeds);
    default:
      return false;
  }
}

interface Place {
  node: Node;
  /** Whether the node can start / end the match of the node the walk began at. */
  atStart: boolean;
  atEnd: boolean;
  /** Whether everything that can follow the node in the whole pattern always succeeds (nothing after it can fail). */
  tailSafe: boolean;
}

/** Every node below `n` (lookaround bodies included when `intoLook`), with where it stands (see Place). */
function* walk(n: Node, atStart: boolean, atEnd: boolean, tailSafe: boolean, intoLook: boolean): Generator<Place> {
  yield { node: n, atStart, atEnd, tailSafe };
  switch (n.k) {
    case 'rep':
      // After one iteration comes another (required while fewer than min) or what follows the repetition.
      yield* walk(n.body, atStart, atEnd, tailSafe && n.min <= 1, intoLook);
      break;
    case 'alt':
      for (const b of n.branches) yield* walk(b, atStart, atEnd, tailSafe, intoLook);
      break;
    case 'seq': {
      const nullable = n.items.map((x) => props(x).nullable);
      for (let i = 0; i < n.items.length; i++) {
        const before = nullable.slice(0, i).every(Boolean);
        const after = nullable.slice(i + 1).every(Boolean);
        yield* walk(n.items[i], atStart && before, atEnd && after, tailSafe && n.items.slice(i + 1).every(alwaysSucceeds), intoLook);
      }
      break;
    }
    case 'look':
      // A lookaround is atomic: once its body matched, nothing outside makes it backtrack.
      if (intoLook) yield* walk(n.body, false, false, true, intoLook);
      break;
  }
}

/** Why a repetition can split one text in many ways, or undefined. */
function exponential(loop: Extract<Node, { k: 'rep' }>): string | undefined {
  const X = loop.body;
  const px = props(X);
  // Lookarounds are atomic in JavaScript: the loop cannot backtrack into them.
  for (const { node: y, atStart, atEnd } of walk(X, true, true, false, false)) {
    if (y !== X || y.k !== 'rep' || y.max >= 2) {
      if (isChoice(y)) {
        const c = props(y.body).chars;
        const endOverlap = atEnd ? intersect(c, px.first) : none();
        const startOverlap = atStart ? intersect(c, px.last) : none();
        if (any(endOverlap) || any(startOverlap)) {
          const ch = example(any(endOverlap) ? endOverlap : startOverlap);
          return y === X
            ? `"${loop.src}" repeats "${y.src}", itself a repetition: a run of ${ch} can be split among the iterations in exponentially many ways`
            : `"${loop.src}" repeats a part whose "${y.src}" can take ${ch} that the ${any(endOverlap) ? 'next' : 'previous'} iteration can also take, so a run of ${ch} can be split in exponentially many ways`;
        }
      }
    }
    if (y.k === 'alt') {
      const bs = y.branches.map(props);
      for (let a = 0; a < bs.length; a++) {
        for (let b = a + 1; b < bs.length; b++) {
          if (!any(bs[a].chars) || !any(bs[b].chars)) continue;
          const both = intersect(bs[a].first, bs[b].first);
          if (any(both) && any(intersect(bs[a].last, bs[b].last))) {
            return `"${loop.src}" repeats the alternatives "${y.branches[a].src}" and "${y.branches[b].src}", which can both match ${example(both)}, so a run of it can be matched in exponentially many ways`;
          }
        }
      }
    }
  }
  return undefined;
}

/**
 * Long repetitions in a row over one shared character (see the module comment): three or more, or two followed by
 * something that can fail (then every split of a run between the two is tried on every start position); undefined
 * when there are none.
 */
function polynomial(seq: Extract<Node, { k: 'seq' }>, tailSafe: boolean): string | undefined {
  let chain: Node[] = [];
  let shared = none();
  // The longest dangerous chain seen so far, reported once it can grow no further.
  let found: string | undefined;
  const items = seq.items;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (isLoop(item)) {
      const c = props(item.body).chars;
      const both = intersect(shared, c);
      if (chain.length > 0 && any(both)) {
        chain.push(item);
        shared = both;
      } else {
        if (found) return found;
        chain = [item];
        shared = c;
      }
      const thenFails = !(tailSafe && items.slice(i + 1).every(alwaysSucceeds));
      if (chain.length >= 3 || (chain.length === 2 && thenFails)) {
        const what = chain.map((x) => `"${x.src}"`).join(', ');
        found = `${what} follow one another and can all match ${example(shared)}${chain.length === 2 ? ', and what follows them can fail' : ''}, so a long run of it is tried in about n^${chain.length + 1} ways`;
      }
    } else if (props(item).nullable || (item.k === 'char' && any(intersect(item.set, shared)))) {
      if (item.k === 'char') shared = intersect(shared, item.set);
    } else {
      if (found) return found;
      chain = [];
      shared = none();
    }
  }
  return found;
}

const CANNOT_CHECK = 'Residual cannot check it for catastrophic backtracking';

/**
 * Undefined when `source` (compiled with `flags`) is safe to run on long inputs; otherwise why it can backtrack
 * catastrophically (see the module comment).
 */
export function backtrackingRisk(source: string, flags = 'gu'): string | undefined {
  const own = namedCharacters(source).filter((c) => !BASE_PROBES.includes(c));
  PROBES = own.length ? [...BASE_PROBES, ...own] : BASE_PROBES;
  N = PROBES.length;
  ALL = new Uint8Array(N).fill(1);
  setCache = new Map();
  try {
    const root = new Parser(source, flags).parse();
    for (const { node, tailSafe } of walk(root, true, true, true, true)) {
      const why = isLoop(node) ? exponential(node) : node.k === 'seq' ? polynomial(node, tailSafe) : undefined;
      if (why) return why;
    }
    return undefined;
  } catch (e) {
    if (e instanceof Unsupported) return `${CANNOT_CHECK} (${e.message})`;
    // Groups nested so deep that the check itself runs out of stack.
    if (e instanceof RangeError) return `${CANNOT_CHECK} (its groups nest too deeply)`;
    throw e;
  }
}

/** The sections of a tokenizer.json that hold patterns, and how deep real files nest them (a few levels). */
const PATTERN_SECTIONS = ['normalizer', 'pre_tokenizer', 'decoder', 'post_processor'] as const;
const MAX_NESTING = 32;

/**
 * Refuses a tokenizer.json whose components nest absurdly deep or bring a regular expression that is invalid or can
 * backtrack catastrophically (`backtrackingRisk`), naming where it is. Each pattern is compiled exactly as the
 * tokenizer library compiles it (the library rewrites Oniguruma syntax: possessive `a++` becomes `a+`, so the check
 * must see its output) and nothing is run. Called before the library builds anything from the file: building runs
 * the normalizer on every added token.
 */
export function checkTokenizerPatterns(json: Record<string, unknown>, source: string): void {
  const stack: { node: unknown; path: string; depth: number }[] = PATTERN_SECTIONS.map((k) => ({ node: json[k], path: k, depth: 1 }));
  while (stack.length > 0) {
    const { node, path, depth } = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    if (depth > MAX_NESTING) {
      throw new ResidualError(`"${path.split(/[.[]/)[0]}" nests more than ${MAX_NESTING} levels deep (real tokenizers nest a few); the file is malformed or hostile`, source, 'invalid');
    }
    if (Array.isArray(node)) {
      node.forEach((x, i) => stack.push({ node: x, path: `${path}[${i}]`, depth: depth + 1 }));
      continue;
    }
    const obj = node as Record<string, unknown>;
    const pattern = obj.pattern;
    if (typeof pattern === 'object' && pattern !== null && 'Regex' in pattern) {
      const regex = (pattern as { Regex: unknown }).Regex;
      const where = `"${path}.pattern.Regex"`;
      if (typeof regex !== 'string') throw new ResidualError(`${where} must be a string, found ${JSON.stringify(regex)?.slice(0, 40)}`, source, 'invalid');
      let compiled: RegExp | null;
      try {
        compiled = new SplitPreTokenizer({ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false } as never).pattern;
      } catch (e) {
        throw new ResidualError(`${where} ${JSON.stringify(regex)} is not a valid regular expression: ${e instanceof Error ? e.message : String(e)}`, source, 'invalid');
      }
      const why = compiled ? backtrackingRisk(compiled.source, compiled.flags) : undefined;
      if (why?.startsWith(CANNOT_CHECK)) {
        throw new ResidualError(`${where} ${JSON.stringify(regex).slice(0, 200)}: ${why}; Residual refuses patterns it cannot check, since one could hang tokenisation`, source, 'unsupported');
      }
      if (why) {
        throw new ResidualError(
          `${where} ${JSON.stringify(regex)} can backtrack catastrophically — ${why} — so tokenising a long input could hang; Residual refuses such patterns before running them`,
          source,
          'unsupported',
        );
      }
    }
    for (const [k, v] of Object.entries(obj)) if (typeof v === 'object' && v !== null) stack.push({ node: v, path: `${path}.${k}`, depth: depth + 1 });
  }
}
