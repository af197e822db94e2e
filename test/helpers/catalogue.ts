/**
 * The bad-input catalogue (issue 14): each case is one distinct bad input a user or a hostile file could give, with
 * the message it must get and the files that must come out untouched. Each test/catalogue/*.test.ts file exports its
 * cases and runs them with `runCatalogue`; test/catalogue/coverage.test.ts counts them across files (at least 150,
 * every class covered).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';

/** The classes of issue 14. */
export const BAD_INPUT_CLASSES = {
  1: 'where output goes',
  2: 'two writers at once',
  3: 'inputs that are not regular files',
  4: 'symlinks and the Hugging Face cache',
  5: 'caches',
  6: 'containment',
  7: 'numbers that make no sense',
  8: 'memory',
  9: 'hostile tokenizer.json',
  10: 'the Hub',
  11: 'the CLI contract',
  12: 'crashes seen in the extension',
  13: 'graph files as the viewers read them',
  14: 'model vocabulary larger than the tokenizer',
} as const;

export type BadInputClass = keyof typeof BAD_INPUT_CLASSES;

export interface BadInputCase {
  class: BadInputClass;
  /** Distinct across the whole catalogue (coverage.test.ts checks). */
  name: string;
  /**
   * Runs the bad input and returns what the user sees: the error message (thrown ResidualError's message, or the CLI's
   * stderr), or a warning, as the case defines. Throwing fails the case unless `expect` matches the thrown message.
   */
  run: () => Promise<string>;
  /** What the message must say (name the file/flag/tensor and the problem). */
  expect: RegExp;
  /** Paths that must be byte-identical (or still absent) after the run: nothing written, replaced or lost. */
  untouched?: () => string[];
}

/** What a path holds: its type and, for a regular file, its content hash; a folder lists its entries. */
export function snapshot(p: string): string {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return 'absent';
  }
  if (st.isSymbolicLink()) return `link→${fs.readlinkSync(p)}`;
  if (st.isDirectory()) return `dir[${fs.readdirSync(p).sort().map((e) => `${e}:${snapshot(path.join(p, e))}`).join(',')}]`;
  if (st.isFile()) return `file:${crypto.createHash('sha256').update(fs.readFileSync(p).toString('base64')).digest('hex')}`;
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return `chardev:${st.rdev}`;
  return `other:${st.mode}`;
}

/** Registers one node:test per case: the message matches, and the `untouched` paths are as they were. */
export function runCatalogue(cases: BadInputCase[]): void {
  for (const c of cases) {
    it(`[class ${c.class}: ${BAD_INPUT_CLASSES[c.class]}] ${c.name}`, async () => {
      const watched = c.untouched?.() ?? [];
      const before = watched.map(snapshot);
      let message: string;
      try {
        message = await c.run();
      } catch (e) {
        message = e instanceof Error ? e.message : String(e);
      }
      assert.match(message, c.expect, `message for "${c.name}"`);
      assert.doesNotMatch(message, /internal error/, 'a bad input is not an internal error');
      watched.forEach((p, i) => assert.equal(snapshot(p), before[i], `${p} changed`));
    });
  }
}

/** Runs the `residual` CLI (from source, through tsx) and returns its exit code, stdout and stderr. */
export function runCli(args: string[], opts: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const main = path.join(__dirname, '..', '..', 'src', 'cli', 'main.ts');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...process.env, HF_TOKEN: '', ...opts.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.stdin ?? '');
  });
}

/**
 * The fixtures of one cases file, made lazily (a cases module does no work at import): a temporary root, builders run
 * once per key, and what to dispose (models, attributors) when its runner is done.
 */
export function lazyFixtures(prefix: string) {
  let rootDir: string | undefined;
  const memo = new Map<string, Promise<unknown>>();
  const disposers: (() => Promise<void>)[] = [];
  return {
    root(): string {
      rootDir ??= fs.mkdtempSync(path.join(os.tmpdir(), prefix));
      return rootDir;
    },
    once<T>(key: string, make: () => Promise<T>): Promise<T> {
      let p = memo.get(key) as Promise<T> | undefined;
      if (!p) memo.set(key, (p = make()));
      return p;
    },
    onDispose(fn: () => Promise<void>): void {
      disposers.push(fn);
    },
    async dispose(): Promise<void> {
      for (const d of disposers.splice(0).reverse()) await d();
      memo.clear();
      if (rootDir) fs.rmSync(rootDir, { recursive: true, force: true });
      rootDir = undefined;
    },
  };
}
