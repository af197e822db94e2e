/**
 * The one flag parser of the `residual` subcommands, so every subcommand behaves the same (issue 14, class 11):
 * - `--help`/`-h` in flag position (anywhere but as a flag's value) prints the subcommand's usage (every flag it
 *   accepts, generated from its spec) on stdout, before any other flag is checked; `--text -h` is the text "-h";
 * - an unknown flag, a missing value, a value given to a switch, a flag given twice or a stray argument is refused in
 *   one line naming the flag;
 * - values are checked where they are read (`int`, `num`, `choice`, `list`): one line naming the flag and what it
 *   accepts, e.g. `--top must be a whole number ≥ 1, got "abc"`.
 *
 * A value may start with a dash (`--strength -4`, `--text -`): the word after a flag that takes a value is its value,
 * unless it is one of the subcommand's own flags (then the value is missing) or `--help` (then it is help).
 * `--flag=value` always works.
 *
 * Flag names are looked up as own properties of the spec (`Object.hasOwn`), never through `in` or plain indexing, so
 * `--constructor`, `--toString` or `--__proto__` are unknown flags like any other.
 */
import { ResidualError } from '../engine/errors';

export interface FlagSpec {
  /** The placeholder of the value (`N`, `DIR`, …); absent for a switch. */
  value?: string;
  /** One line for the usage text (defaults included). */
  help: string;
}

export interface CommandSpec {
  /** The subcommand: `analyze`, `graph`, … */
  name: string;
  /** The shape of a call after `residual <name>`, e.g. `--model DIR --text TEXT [flags]`. */
  synopsis: string;
  /** What it does, one or two sentences. */
  summary: string;
  flags: Record<string, FlagSpec>;
}

const HELP = new Set(['--help', '-h']);

/** The spec of flag `name`, only when the spec itself declares it (never an Object.prototype member). */
function flagOf(spec: CommandSpec, name: string): FlagSpec | undefined {
  return Object.hasOwn(spec.flags, name) ? spec.flags[name] : undefined;
}

/** `--name` or `--name=…` where `name` is one of the spec's own flags. */
function isOwnFlag(spec: CommandSpec, a: string): boolean {
  return a.startsWith('--') && flagOf(spec, a.slice(2).split('=')[0]) !== undefined;
}

/**
 * Whether `--help`/`-h` stands in flag position: walks the words as parseFlags does, skipping the value of each flag
 * that takes one (so `--text -h` is a text), and treating anything it does not know as one word (so help still wins
 * over an unknown flag or a stray argument before it). `--help` itself is never taken as a value, like the own flags.
 */
function asksForHelp(spec: CommandSpec, args: readonly string[]): boolean {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (HELP.has(a)) return true;
    if (!a.startsWith('--') || a.includes('=')) continue;
    const f = flagOf(spec, a.slice(2));
    const next = args[i + 1];
    if (f?.value && next !== undefined && !isOwnFlag(spec, next) && next !== '--help') i++;
  }
  return false;
}

/** The usage text of a subcommand: synopsis, summary and every flag it accepts. */
export function usageOf(spec: CommandSpec): string {
  const rows = Object.entries(spec.flags).map(([name, f]) => [`--${name}${f.value ? ` ${f.value}` : ''}`, f.help]);
  rows.push(['-h, --help', 'show this help']);
  const width = Math.min(30, Math.max(...rows.map(([l]) => l.length)));
  const lines = rows.map(([l, h]) => (l.length > width ? `  ${l}\n  ${''.padEnd(width)}  ${h}` : `  ${l.padEnd(width)}  ${h}`));
  return `usage: residual ${spec.name} ${spec.synopsis}\n\n${spec.summary}\n\nflags:\n${lines.join('\n')}\n`;
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

export interface IntRule {
  min?: number;
  max?: number;
  /** Words for another accepted value, e.g. `"all"`. */
  or?: string;
  /** What the number means, appended in parentheses (e.g. `0: no limit`). */
  note?: string;
}

export interface NumRule {
  min?: number;
  /** The minimum itself is not accepted. */
  minExclusive?: boolean;
  max?: number;
  note?: string;
}

const INT_RE = /^[+-]?\d+$/;
const NUM_RE = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** The parsed flags of one call; readers check the values and throw one-line ResidualErrors naming the flag. */
export class Flags {
  constructor(
    readonly spec: CommandSpec,
    private readonly values: ReadonlyMap<string, string | true>,
  ) {}

  /** Names the subcommand in messages: `residual analyze`. */
  get what(): string {
    return `residual ${this.spec.name}`;
  }

  fail(message: string): never {
    throw new ResidualError(message, this.what);
  }

  has(name: string): boolean {
    this.known(name);
    return this.values.has(name);
  }

  bool(name: string): boolean {
    this.known(name);
    return this.values.get(name) === true;
  }

  str(name: string): string | undefined {
    this.known(name);
    const v = this.values.get(name);
    return v === true ? undefined : v;
  }

  /** A value that must be given. */
  required(name: string, hint = ''): string {
    const v = this.str(name);
    if (v === undefined) this.fail(`--${name} ${flagOf(this.spec, name)?.value} is required${hint}`);
    return v;
  }

  int(name: string, rule: IntRule = {}): number | undefined {
    const s = this.str(name);
    if (s === undefined) return undefined;
    const v = Number(s);
    const ok = INT_RE.test(s.trim()) && Number.isSafeInteger(v) && (rule.min === undefined || v >= rule.min) && (rule.max === undefined || v <= rule.max);
    if (!ok) {
      const range =
        rule.min !== undefined && rule.max !== undefined ? ` from ${rule.min} to ${rule.max}` : rule.min !== undefined ? ` ≥ ${rule.min}` : rule.max !== undefined ? ` ≤ ${rule.max}` : '';
      this.fail(`--${name} must be a whole number${range}${rule.or ? ` or ${rule.or}` : ''}${rule.note ? ` (${rule.note})` : ''}, got ${JSON.stringify(s)}`);
    }
    return v;
  }

  num(name: string, rule: NumRule = {}): number | undefined {
    const s = this.str(name);
    if (s === undefined) return undefined;
    const v = Number(s);
    const aboveMin = rule.min === undefined || (rule.minExclusive ? v > rule.min : v >= rule.min);
    const ok = NUM_RE.test(s.trim()) && Number.isFinite(v) && aboveMin && (rule.max === undefined || v <= rule.max);
    if (!ok) {
      const lo = rule.min === undefined ? '' : rule.minExclusive ? `> ${rule.min}` : `≥ ${rule.min}`;
      const range =
        rule.min !== undefined && rule.max !== undefined
          ? ` in ${rule.minExclusive ? '(' : '['}${rule.min}, ${rule.max}]`
          : rule.min !== undefined
            ? ` ${lo}`
            : rule.max !== undefined
              ? ` ≤ ${rule.max}`
              : '';
      this.fail(`--${name} must be a${range ? '' : ' finite'} number${range}${rule.note ? ` (${rule.note})` : ''}, got ${JSON.stringify(s)}`);
    }
    return v;
  }

  choice<T extends string>(name: string, choices: readonly T[]): T | undefined {
    const s = this.str(name);
    if (s === undefined) return undefined;
    if (!(choices as readonly string[]).includes(s)) this.fail(`--${name} must be ${orList(choices)}, got ${JSON.stringify(s)}`);
    return s as T;
  }

  /** A comma-separated list whose entries are each one of `choices`. */
  list<T extends string>(name: string, choices: readonly T[]): T[] | undefined {
    const s = this.str(name);
    if (s === undefined) return undefined;
    const items = s.split(',').map((x) => x.trim());
    for (const x of items) {
      if (!(choices as readonly string[]).includes(x)) {
        this.fail(`--${name} takes a comma-separated list of ${orList(choices)}; ${x === '' ? 'it has an empty entry' : `${JSON.stringify(x)} is not one of them`} (got ${JSON.stringify(s)})`);
      }
    }
    return items as T[];
  }

  private known(name: string): void {
    if (!flagOf(this.spec, name)) throw new Error(`flag --${name} is not in the spec of ${this.what}`);
  }
}

function orList(xs: readonly string[]): string {
  return xs.length <= 1 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`;
}

/**
 * Parses `args` against `spec`: the Flags, or 'help' when `--help`/`-h` was given in flag position (the caller prints
 * `usageOf`).
 * Throws a one-line ResidualError naming the flag for anything it does not accept.
 */
export function parseFlags(spec: CommandSpec, args: readonly string[]): Flags | 'help' {
  const what = `residual ${spec.name}`;
  const fail = (message: string): never => {
    throw new ResidualError(message, what);
  };
  if (asksForHelp(spec, args)) return 'help';
  const values = new Map<string, string | true>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('-') || a === '-' || a === '--') {
      fail(`unexpected argument ${JSON.stringify(a)}: every value follows its flag (see ${what} --help)`);
    }
    const eq = a.indexOf('=');
    const name = a.startsWith('--') ? a.slice(2, eq > 0 ? eq : undefined) : a;
    const f = a.startsWith('--') ? flagOf(spec, name) : undefined;
    if (!f) {
      const shown = a.startsWith('--') ? `--${name}` : a;
      const near = Object.keys(spec.flags)
        .map((k) => [k, distance(name.replace(/^-+/, ''), k)] as const)
        .filter(([k, d]) => d <= Math.max(1, Math.floor(k.length / 4)))
        .sort((x, y) => x[1] - y[1])[0];
      fail(`unknown flag ${shown}${near ? ` (did you mean --${near[0]}?)` : ''}; see ${what} --help`);
      return 'help'; // unreachable
    }
    let value: string | true;
    if (!f.value) {
      if (eq > 0) fail(`--${name} is a switch and takes no value (got ${JSON.stringify(a)})`);
      value = true;
    } else if (eq > 0) {
      value = a.slice(eq + 1);
    } else {
      const next = args[i + 1];
      if (next === undefined || isOwnFlag(spec, next)) fail(`--${name} needs a value (${f.value})`);
      value = next;
      i++;
    }
    if (value === '') fail(`--${name} needs a value (${f.value}), got an empty string`);
    if (values.has(name)) fail(`--${name} is given more than once`);
    values.set(name, value);
  }
  return new Flags(spec, values);
}
