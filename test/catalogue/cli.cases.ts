/**
 * Bad inputs of the `residual` command line (issue 14): where output goes (class 1), the memory check (class 8) and
 * the CLI contract (class 11). Most cases run the command in-process through `runCommand` (the same code the process
 * runs, minus draining and exiting: milliseconds each); the cases where the process itself is the point (exit
 * status, pipes, stderr) spawn the real CLI.
 */
import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeRandomGpt2 } from '../../src/engine/checkpoint/random';
import { saveVectorFile } from '../../src/engine/steering/vectors';
import { gpt2TokenizerJSON } from '../../tools/gpt2-tokenizer';
import { runCli, type BadInputCase } from '../helpers/catalogue';

interface Fixture {
  root: string;
  model: string;
  /** A folder that passes the transcoders-folder check (the refusals come first). */
  tc: string;
  vector: string;
  /** A saved vector 8 wide, for the 16-wide model. */
  narrowVector: string;
  fifo: string;
  folder: string;
  file: string;
}

let fixture: Fixture | undefined;

/** The tiny model and the odd files, made once, on first use (synchronously: `untouched` needs them before a run). */
function fx(): Fixture {
  if (fixture) return fixture;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cat-cli-'));
  process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
  const model = path.join(root, 'model');
  writeRandomGpt2(model, { nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 64, vocabSize: 50257 }, { seed: 5, tokenizerJson: gpt2TokenizerJSON() });
  const tc = path.join(root, 'tc');
  fs.mkdirSync(tc);
  const vector = path.join(root, 'v.json');
  saveVectorFile(vector, { vector: new Float32Array(16).fill(0.1), layer: 0, point: 'hook_resid_pre', source: 'contrastive', label: 'v', provenance: { model: 'random' } });
  const narrowVector = path.join(root, 'narrow.json');
  saveVectorFile(narrowVector, { vector: new Float32Array(8).fill(0.1), layer: 0, point: 'hook_resid_pre', source: 'contrastive', label: 'narrow', provenance: { model: 'random' } });
  const fifo = path.join(root, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const folder = path.join(root, 'folder');
  fs.mkdirSync(folder);
  fs.writeFileSync(path.join(folder, 'keep.txt'), 'keep');
  const file = path.join(root, 'file.txt');
  fs.writeFileSync(file, 'keep');
  fs.symlinkSync('/dev/null', path.join(root, 'null-link'));
  fs.symlinkSync(path.join(root, 'nowhere', 'g.json'), path.join(root, 'dangling'));
  fixture = { root, model, tc, vector, narrowVector, fifo, folder, file };
  return fixture;
}

/** A path in the fixture folder. */
const at = (...p: string[]) => path.join(fx().root, ...p);

/** Temporary files left in the fixture folder (a failed write must leave none). */
function leftovers(): string[] {
  return fs.readdirSync(fx().root).filter((f) => f.endsWith('.tmp'));
}

/**
 * Runs the command line in-process and checks the contract of a refusal: exit status 2, nothing on stdout, exactly
 * one line on stderr; returns that line.
 */
async function refuse(argv: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<string> {
  const { runCommand } = await import('../../src/cli/run');
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCommand(argv, {
    out: (s) => void out.push(s),
    err: (s) => void err.push(s),
    errIsTTY: false,
    readStdin: () => opts.stdin ?? '',
    env: { ...process.env, ...opts.env },
  });
  const e = err.join('');
  if (leftovers().length) throw new Error(`temporary files left behind: ${leftovers().join(', ')}`);
  if (code !== 2) throw new Error(`exit status ${code}, not 2 (stderr: ${e})`);
  if (out.length) throw new Error(`stdout is not empty: ${out.join('').slice(0, 200)}`);
  if (!e.endsWith('\n') || e.trimEnd().includes('\n')) throw new Error(`stderr is not one line: ${JSON.stringify(e)}`);
  return e;
}

/** Runs the command line in-process for a success (help); returns stdout after checking status 0 and no stderr. */
async function succeed(argv: string[]): Promise<string> {
  const { runCommand } = await import('../../src/cli/run');
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCommand(argv, { out: (s) => void out.push(s), err: (s) => void err.push(s), errIsTTY: false, readStdin: () => '', env: process.env });
  if (code !== 0 || err.length) throw new Error(`exit status ${code}, stderr ${JSON.stringify(err.join(''))}`);
  return out.join('');
}

/** The same refusal contract through the real process. */
async function refuseCli(argv: string[], env?: Record<string, string>): Promise<string> {
  const r = await runCli(argv, { env });
  if (r.code !== 2) throw new Error(`exit status ${r.code}, not 2 (stderr: ${r.stderr})`);
  if (r.stdout) throw new Error(`stdout is not empty: ${r.stdout.slice(0, 200)}`);
  if (r.stderr.trimEnd().includes('\n')) throw new Error(`stderr is not one line: ${JSON.stringify(r.stderr)}`);
  return r.stderr;
}

const analyze = async (...extra: string[]) => ['analyze', '--model', fx().model, '--text', 'hello world', ...extra];
const graph = async (...extra: string[]) => ['graph', '--model', fx().model, '--transcoders', fx().tc, '--text', 'hello world', ...extra];
const steer = async (...extra: string[]) => ['steer', '--model', fx().model, '--text', 'hello world', '--vector', fx().vector, ...extra];
const dla = async (...extra: string[]) => ['dla', '--model', fx().model, '--text', 'hello world', '--providers', 'cpu', ...extra];
const qk = async (...extra: string[]) => ['qk', '--model', fx().model, '--transcoders', fx().tc, '--text', 'hello world', '--providers', 'cpu', ...extra];
const graphOut = async (out: string) => refuse(await graph('--out', out));

/** A text long enough that `analyze --json` prints well over 64 KiB (the pipe's buffer). */
const LONG_TEXT = Array.from({ length: 25 }, (_, i) => `word${i}`).join(' ');

/**
 * Runs the real CLI with its stdout in a shell pipe (a real pipe, 64 KiB of buffer) into a reader that waits 2 s before
 * reading (`slow`) or takes 100 bytes and exits (`head`); returns what the reader got and the CLI's exit status.
 */
function pipedCli(args: string[], reader: 'slow' | 'head'): Promise<{ code: number; stdout: string; stderr: string }> {
  const main = path.join(__dirname, '..', '..', 'src', 'cli', 'main.ts');
  const read = reader === 'slow' ? '(sleep 2; cat)' : 'head -c 100';
  const script = `"$0" --import tsx "$@" | ${read}; echo "status=\${PIPESTATUS[0]}" >&2`;
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script, process.execPath, main, ...args]);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      const m = /status=(\d+)\n$/.exec(stderr);
      resolve({ code: m ? Number(m[1]) : -1, stdout, stderr: m ? stderr.slice(0, m.index) : stderr });
    });
    child.stdin.end();
  });
}

/** A listening Unix socket in the fixture folder (made once). */
async function socket(): Promise<string> {
  const sock = at('sock');
  if (!fs.existsSync(sock)) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    server.unref();
  }
  return sock;
}

/**
 * A folder holding someone else's file under the name `checkOutFlag` first tries for its probe of `g.json` (the same
 * process id, as after a crash whose id came round again): the probe must take another name and leave that file be.
 */
function probeTaken(): string {
  const dir = at('probe-taken');
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, `.g.json.${process.pid}.probe.tmp`), 'not the probe: someone else made this');
  }
  return dir;
}

// ---- class 1: where output goes --------------------------------------------------------------------------------

const output: BadInputCase[] = [
  {
    class: 1,
    name: 'graph --out /dev/null (a character device)',
    run: () => graphOut('/dev/null'),
    expect: /\/dev\/null: --out is a character device: give the path of a regular file to write \(it is never replaced\)/,
    untouched: () => ['/dev/null'],
  },
  {
    class: 1,
    name: 'graph --out a FIFO',
    run: async () => graphOut(fx().fifo),
    expect: /fifo: --out is a FIFO \(named pipe\).*never replaced/,
    untouched: () => [at('fifo')],
  },
  {
    class: 1,
    name: 'graph --out an existing folder',
    run: async () => graphOut(fx().folder),
    expect: /folder: --out is a folder: give the path of a regular file/,
    untouched: () => [at('folder')],
  },
  {
    class: 1,
    name: 'graph --out into a folder that does not exist',
    run: async () => graphOut(path.join(fx().root, 'no-such-dir', 'g.json')),
    expect: /g\.json: --out's folder .*no-such-dir does not exist/,
    untouched: () => [at('no-such-dir')],
  },
  {
    class: 1,
    name: 'graph --out a new path ending in "/"',
    run: async () => graphOut(path.join(fx().root, 'newdir') + '/'),
    expect: /--out .*newdir\/ ends with "\/", which names a folder; give the path of a file/,
    untouched: () => [at('newdir')],
  },
  {
    class: 1,
    name: 'graph --out a symbolic link to /dev/null',
    run: () => graphOut(at('null-link')),
    expect: /null-link: --out is a character device.*never replaced/,
    untouched: () => ['/dev/null', at('null-link')],
  },
  {
    class: 1,
    name: 'graph --out a dangling symbolic link',
    run: () => graphOut(at('dangling')),
    expect: /dangling: --out is a symbolic link to a missing target/,
    untouched: () => [at('dangling'), at('nowhere')],
  },
  {
    class: 1,
    name: 'graph --out under a regular file (file.txt/g.json)',
    run: async () => graphOut(path.join(fx().file, 'g.json')),
    expect: /file\.txt\/g\.json: --out's parent .*file\.txt is not a folder/,
    untouched: () => [at('file.txt')],
  },
  {
    class: 1,
    name: 'graph --out - (standard output)',
    run: async () => graphOut('-'),
    expect: /residual graph: --out -: writing to standard output is not supported; give the path of a file/,
  },
  {
    class: 1,
    name: 'graph --out a Unix socket',
    run: async () => {
      const sock = await socket();
      const said = await graphOut(sock);
      if (!fs.lstatSync(sock).isSocket()) throw new Error('the socket was replaced');
      return said;
    },
    expect: /sock: --out is a socket.*never replaced/,
  },
  {
    class: 1,
    name: 'graph --out in a folder where no file can be created (/sys), refused before any work',
    run: () => graphOut('/sys/residual-graph.json'),
    expect: /\/sys\/residual-graph\.json: --out cannot be written in \/sys \(permission denied\)/,
    untouched: () => ['/sys/residual-graph.json', '/sys/.residual-graph.json.tmp'],
  },
  {
    class: 1,
    name: 'download --out /dev/null (a device, where a folder is wanted)',
    run: () => refuse(['download', '--repo', 'openai-community/gpt2', '--out', '/dev/null', '--endpoint', 'http://127.0.0.1:9']),
    expect: /\/dev\/null: --out is a character device, not a folder.*never replaced/,
    untouched: () => ['/dev/null'],
  },
  {
    class: 1,
    name: 'download --out a FIFO',
    run: async () => refuse(['download', '--repo', 'openai-community/gpt2', '--out', fx().fifo, '--endpoint', 'http://127.0.0.1:9']),
    expect: /fifo: --out is a FIFO \(named pipe\), not a folder/,
    untouched: () => [at('fifo')],
  },
  {
    class: 1,
    name: 'graph --out where a file already has the probe\'s name (left as it was)',
    // --slug other fails after the --out checks, so the run stops there and writes nothing.
    run: async () => refuse(await graph('--out', path.join(probeTaken(), 'g.json'), '--slug', 'other')),
    expect: /residual graph: --slug must match the --out file's name \("g"\)/,
    untouched: () => [probeTaken()],
  },
  {
    class: 1,
    name: 'download --out a Unix socket (named as every file check names it)',
    run: async () => refuse(['download', '--repo', 'openai-community/gpt2', '--out', await socket(), '--endpoint', 'http://127.0.0.1:9']),
    expect: /sock: --out is a socket, not a folder: give a folder to download into \(it is never replaced\)/,
  },
  {
    class: 1,
    name: 'download --out a regular file',
    run: async () => refuse(['download', '--repo', 'openai-community/gpt2', '--out', fx().file, '--endpoint', 'http://127.0.0.1:9']),
    expect: /file\.txt: --out is a regular file, not a folder: give a folder to download into/,
    untouched: () => [at('file.txt')],
  },
];

// ---- class 8: memory -------------------------------------------------------------------------------------------

const LOW = { RESIDUAL_AVAILABLE_MEMORY: String(100e6) };
const MEMORY_MESSAGE = /needs about \d+ MB of memory on the CPU and 100 MB is available\..*or pass --skip-memory-check to load anyway\./;

const memory: BadInputCase[] = [
  {
    class: 8,
    name: 'analyze a model larger than the available memory',
    run: async () => refuse(await analyze(), { env: LOW }),
    expect: new RegExp(`model: random-gpt2-seed5 \\(810K parameters\\) ${MEMORY_MESSAGE.source}`),
  },
  {
    class: 8,
    name: 'analyze over memory through the real process',
    run: async () => refuseCli(await analyze('--json'), LOW),
    expect: MEMORY_MESSAGE,
  },
  {
    class: 8,
    name: 'graph a model larger than the available memory (nothing written)',
    run: async () => refuse(await graph('--out', path.join(fx().root, 'mem-graph.json')), { env: LOW }),
    expect: MEMORY_MESSAGE,
    untouched: () => [at('mem-graph.json')],
  },
  {
    class: 8,
    name: 'graph --estimate of a model larger than the available memory',
    run: async () => refuse(await graph('--estimate'), { env: LOW }),
    expect: MEMORY_MESSAGE,
  },
  {
    class: 8,
    name: 'steer a model larger than the available memory',
    run: async () => refuse(await steer('--strength', '2'), { env: LOW }),
    expect: MEMORY_MESSAGE,
  },
  {
    class: 8,
    name: 'analyze over memory with --precision float16 (still checked; the message names the flag)',
    run: async () => refuse(await analyze('--precision', 'float16'), { env: LOW }),
    expect: /or \d+ MB in half precision \(--precision float16\); on the CPU half precision saves little.*--skip-memory-check/,
  },
  {
    class: 8,
    name: 'analyze over memory with the old --check-memory flag',
    run: async () => refuse(await analyze('--check-memory'), { env: LOW }),
    expect: MEMORY_MESSAGE,
  },
  {
    class: 8,
    name: 'Model.load without a memoryCheck option (the engine checks by default)',
    run: async () => {
      const { Model } = await import('../../src/engine/model');
      await Model.load(fx().model, { providers: ['cpu'], availableMemory: 100e6, cacheDir: path.join(fx().root, 'cache') });
      return 'loaded';
    },
    expect: /model: random-gpt2-seed5 \(810K parameters\) needs about \d+ MB of memory on the CPU and 100 MB is available.*or load anyway\./,
  },
];

// ---- class 11: the CLI contract ----------------------------------------------------------------------------------

type Flagged = [name: string, argv: () => Promise<string[]>, expect: RegExp, opts?: { stdin?: string }];

const flagCases: Flagged[] = [
  // analyze
  ['analyze --lens-gflop -1', () => analyze('--lens-gflop', '-1'), /residual analyze: --lens-gflop must be a number ≥ 0 \(0: no limit\), got "-1"/],
  ['analyze --lens-gflop Infinity', () => analyze('--lens-gflop', 'Infinity'), /--lens-gflop must be a number ≥ 0 .*got "Infinity"/],
  ['analyze --max-tokens abc', () => analyze('--max-tokens', 'abc'), /residual analyze: --max-tokens must be a whole number ≥ 1, got "abc"/],
  ['analyze --max-tokens 0', () => analyze('--max-tokens', '0'), /--max-tokens must be a whole number ≥ 1, got "0"/],
  ['analyze --top abc', () => analyze('--top', 'abc'), /residual analyze: --top must be a whole number ≥ 1, got "abc"/],
  ['analyze --top 0', () => analyze('--top', '0'), /--top must be a whole number ≥ 1, got "0"/],
  ['analyze --top 1.5', () => analyze('--top', '1.5'), /--top must be a whole number ≥ 1, got "1\.5"/],
  ['analyze --top beyond the vocabulary', () => analyze('--top', '60000', '--providers', 'cpu'), /--top 60000 is more than the model's vocabulary \(50257 tokens\)/],
  ['analyze --precision float64', () => analyze('--precision', 'float64'), /--precision must be auto, float32 or float16, got "float64"/],
  // dla
  ['dla --target of several tokens', () => dla('--target', ' Paris and London'), /residual dla: --target " Paris and London" is \d+ tokens \(.*\), not one; give a single token/],
  ['dla --target empty', () => dla('--target', ''), /residual dla: --target needs a value \(TOKEN\), got an empty string/],
  ['dla --contrast without --target', () => dla('--contrast', ' the'), /residual dla: --contrast needs --target/],
  ['dla --contrast equal to --target', () => dla('--target', ' world', '--contrast', ' world'), /--contrast " world" is the target itself: the difference would be 0/],
  ['dla --position beyond the text', () => dla('--position', '7'), /--position 7 does not exist: the text has 2 tokens \(positions 0\.\.1\)/],
  ['dla --position -1', () => dla('--position', '-1'), /--position must be a whole number ≥ 0, got "-1"/],
  ['dla --top-neurons x', () => dla('--top-neurons', 'x'), /--top-neurons must be a whole number ≥ 0, got "x"/],
  // qk
  ['qk without --layer', () => qk('--head', '0'), /residual qk: --layer is required/],
  ['qk without --head', () => qk('--layer', '1'), /residual qk: --head is required/],
  ['qk --layer beyond the model', () => qk('--layer', '2', '--head', '0'), /residual qk: --layer 2 does not exist \(the model has layers 0\.\.1\)/],
  ['qk --head beyond the model', () => qk('--layer', '1', '--head', '2'), /residual qk: --head 2 does not exist \(the model has heads 0\.\.1\)/],
  ['qk --query beyond the text', () => qk('--layer', '1', '--head', '0', '--query', '2'), /residual qk: --query 2 does not exist: the text has 2 tokens \(positions 0\.\.1\)/],
  ['qk --key after the query', () => qk('--layer', '1', '--head', '0', '--query', '0', '--key', '1'), /residual qk: --key 1 is after the query \(0\): a causal head cannot attend there/],
  ['qk without --transcoders', async () => ['qk', '--model', fx().model, '--text', 'x', '--layer', '0', '--head', '0'], /residual qk: --transcoders DIR is required/],
  ['analyze --providers gpu', () => analyze('--providers', 'gpu'), /--providers takes a comma-separated list of cuda, webgpu, cpu, dml or coreml; "gpu" is not one of them/],
  ['analyze --providers with an empty entry', () => analyze('--providers', 'cpu,'), /--providers takes a comma-separated list .*; it has an empty entry \(got "cpu,"\)/],
  ['analyze with an unknown flag', () => analyze('--frobnicate'), /residual analyze: unknown flag --frobnicate; see residual analyze --help/],
  ['analyze with a misspelt flag', () => analyze('--max-token', '5'), /unknown flag --max-token \(did you mean --max-tokens\?\)/],
  ['analyze with a single-dash flag', () => analyze('-j'), /unknown flag -j; see residual analyze --help/],
  ['analyze --constructor (an Object.prototype member, not a flag)', () => analyze('--constructor'), /residual analyze: unknown flag --constructor; see residual analyze --help/],
  ['analyze --toString (an Object.prototype member, not a flag)', () => analyze('--toString'), /residual analyze: unknown flag --toString; see residual analyze --help/],
  ['analyze --__proto__ (an Object.prototype member, not a flag)', () => analyze('--__proto__'), /residual analyze: unknown flag --__proto__; see residual analyze --help/],
  ['analyze --__proto__=x', () => analyze('--__proto__=x'), /residual analyze: unknown flag --__proto__; see residual analyze --help/],
  ['analyze --top -h (-h as a value is not help)', () => analyze('--top', '-h'), /residual analyze: --top must be a whole number ≥ 1, got "-h"/],
  ['steer --strength -h (-h as a value is not help)', () => steer('--strength', '-h'), /residual steer: --strength must be a finite number, got "-h"/],
  ['analyze --top with its value missing at the end', () => analyze('--top'), /residual analyze: --top needs a value \(K\)/],
  ['analyze --top followed by another flag', () => analyze('--top', '--json'), /--top needs a value \(K\)/],
  ['analyze --json=yes (a value for a switch)', () => analyze('--json=yes'), /--json is a switch and takes no value \(got "--json=yes"\)/],
  ['analyze with a stray argument', () => analyze('extra'), /unexpected argument "extra": every value follows its flag/],
  ['analyze --top given twice', () => analyze('--top', '3', '--top', '4'), /--top is given more than once/],
  ['analyze without --model', async () => ['analyze', '--text', 'hi'], /residual analyze: --model DIR is required/],
  ['analyze without --text', async () => ['analyze', '--model', fx().model], /--text TEXT is required \(use --text - for standard input\)/],
  ['analyze --text ""', async () => ['analyze', '--model', fx().model, '--text', ''], /--text needs a value \(TEXT\), got an empty string/],
  ['analyze --text - with empty standard input', async () => ['analyze', '--model', fx().model, '--text', '-'], /--text -: standard input is empty/, { stdin: '' }],
  ['analyze --check-memory with --skip-memory-check', () => analyze('--check-memory', '--skip-memory-check'), /--check-memory and --skip-memory-check contradict each other/],
  // graph
  ['graph --node-threshold 2', () => graph('--out', 'g.json', '--node-threshold', '2'), /residual graph: --node-threshold must be a number in \[0, 1\], got "2"/],
  ['graph --edge-threshold -0.1', () => graph('--out', 'g.json', '--edge-threshold', '-0.1'), /--edge-threshold must be a number in \[0, 1\], got "-0\.1"/],
  ['graph --max-feature-nodes -3', () => graph('--out', 'g.json', '--max-feature-nodes', '-3'), /--max-feature-nodes must be a whole number ≥ 0 or "all", got "-3"/],
  ['graph --max-feature-nodes some', () => graph('--out', 'g.json', '--max-feature-nodes', 'some'), /--max-feature-nodes must be a whole number ≥ 0 or "all", got "some"/],
  ['graph --max-memory 0', () => graph('--out', 'g.json', '--max-memory', '0'), /--max-memory must be a number > 0 \(MB\), got "0"/],
  ['graph --max-tokens 0', () => graph('--out', 'g.json', '--max-tokens', '0'), /--max-tokens must be a whole number ≥ 1, got "0"/],
  ['graph without --out', () => graph(), /residual graph: --out FILE is required \(or --estimate\)/],
  ['graph --json without --estimate', () => graph('--out', 'g.json', '--json'), /--json goes with --estimate/],
  ['graph --contrast without --target', () => graph('--out', 'g.json', '--contrast', ' the'), /residual graph: --contrast needs --target \(the difference is target − contrast\)/],
  ['graph --contrast equal to --target', () => graph('--out', 'g.json', '--target', ' world', '--contrast', ' world'), /residual graph: --contrast " world" is the target itself: the difference would be 0/],
  ['graph --target of several tokens', () => graph('--out', 'g.json', '--target', ' Paris and London'), /residual graph: --target " Paris and London" is \d+ tokens \(.*\), not one; give a single token/],
  ['graph --target with --direction', () => graph('--out', 'g.json', '--target', ' world', '--direction', fx().vector, '--layer', '0'), /residual graph: give --target \(a logit\) or --direction \(a vector\), not both/],
  ['graph --direction without --layer', () => graph('--out', 'g.json', '--direction', fx().vector), /residual graph: --direction needs --layer L/],
  ['graph --hook without --direction', () => graph('--out', 'g.json', '--hook', 'resid_mid'), /residual graph: --hook goes with --direction FILE/],
  ['graph --direction --layer beyond the model', () => graph('--out', 'g.json', '--direction', fx().vector, '--layer', '2'), /residual graph: --layer 2 does not exist: the model has layers 0\.\.1/],
  ['graph --direction --position beyond the text', () => graph('--out', 'g.json', '--direction', fx().vector, '--layer', '1', '--position', '2'), /residual graph: --position 2 does not exist: the text has 2 tokens \(positions 0\.\.1\)/],
  ['graph --direction of the wrong width', () => graph('--out', 'g.json', '--direction', fx().narrowVector, '--layer', '1'), /narrow\.safetensors: the vector has 8 values but the model's d_model is 16/],
  ['graph --direction a file that does not exist', () => graph('--out', 'g.json', '--direction', path.join(fx().root, 'none.json'), '--layer', '1'), /none\.json: vector file not found/],
  ['graph --direction a llama.cpp control vector', () => graph('--out', 'g.json', '--direction', path.join(fx().root, 'cv.gguf'), '--layer', '1'), /--direction reads a saved vector \(\.json \+ \.safetensors\)/],
  ['graph --transcoders a folder that does not exist', async () => ['graph', '--model', fx().model, '--transcoders', path.join(fx().root, 'no-tc'), '--text', 'x', '--estimate'], /no-tc: transcoders folder not found/],
  // steer
  ['steer --seed 1.5', () => steer('--strength', '1', '--seed', '1.5'), /residual steer: --seed must be a whole number from 0 to 4294967295, got "1\.5"/],
  ['steer --seed 4294967296', () => steer('--strength', '1', '--seed', '4294967296'), /--seed must be a whole number from 0 to 4294967295, got "4294967296"/],
  ['steer --generate abc', () => steer('--strength', '1', '--generate', 'abc'), /--generate must be a whole number ≥ 0, got "abc"/],
  ['steer --temperature -1', () => steer('--strength', '1', '--temperature', '-1'), /--temperature must be a number ≥ 0 \(0: greedy\), got "-1"/],
  ['steer --top-p 0', () => steer('--strength', '1', '--top-p', '0'), /--top-p must be a number in \(0, 1\], got "0"/],
  ['steer --top-p 1.5', () => steer('--strength', '1', '--top-p', '1.5'), /--top-p must be a number in \(0, 1\], got "1\.5"/],
  ['steer --layer -1', () => steer('--strength', '1', '--layer', '-1'), /--layer must be a whole number ≥ 0, got "-1"/],
  ['steer --strength Infinity', () => steer('--strength', 'Infinity'), /--strength must be a finite number, got "Infinity"/],
  ['steer --strength 0x10 (hexadecimal)', () => steer('--strength', '0x10'), /--strength must be a finite number, got "0x10"/],
  ['steer without --strength', () => steer(), /residual steer: --strength S is required/],
  ['steer --feature 1-2', async () => ['steer', '--model', fx().model, '--text', 'x', '--feature', '1-2', '--transcoders', fx().tc, '--strength', '1'], /--feature must be LAYER:INDEX \(e\.g\. 2:417\), got "1-2"/],
  ['steer --positions some', () => steer('--strength', '1', '--positions', 'some'), /--positions must be all, from:N, generated or a list of positions like 0,3,4, got "some"/],
  ['steer --op scale', () => steer('--op', 'scale'), /--op must be add, ablate, cap or set, got "scale"/],
  ['steer --op set without --value', () => steer('--op', 'set'), /residual steer: --op set needs --value X \(the component along the unit vector to set\)/],
  ['steer --op cap without --value', () => steer('--op', 'cap'), /--op cap needs --value X \(the component along the unit vector to cap at\)/],
  ['steer --op ablate with --value', () => steer('--op', 'ablate', '--value', '1'), /--op ablate takes no --value/],
  ['steer --op ablate with --strength', () => steer('--op', 'ablate', '--strength', '2'), /--strength scales an added vector; --op ablate removes the component along it instead/],
  ['steer --op set with --relative', () => steer('--op', 'set', '--value', '1', '--relative'), /--relative goes with --op add/],
  ['steer --value without an operator that takes one', () => steer('--strength', '1', '--value', '2'), /--value goes with --op cap or --op set/],
  ['steer --op set --value NaN', () => steer('--op', 'set', '--value', 'NaN'), /--value must be a finite number, got "NaN"/],
  ['steer --positions generated without --generate', () => steer('--strength', '1', '--positions', 'generated', '--providers', 'cpu'), /--positions generated steers the tokens --generate adds, as the model reads them back to make the next: give --generate 2 or more/],
  ['steer --positions generated --generate 1', () => steer('--strength', '1', '--positions', 'generated', '--generate', '1'), /give --generate 2 or more/],
  ['steer --hook attn_out', () => steer('--strength', '1', '--hook', 'attn_out'), /--hook must be resid_pre, resid_mid or resid_post, got "attn_out"/],
  ['steer with both --feature and --vector', () => steer('--strength', '1', '--feature', '0:1', '--transcoders', fx().tc), /give exactly one of --feature LAYER:INDEX \(with --transcoders DIR\) or --vector FILE/],
  ['steer --vector with --transcoders', () => steer('--strength', '1', '--transcoders', fx().tc), /--transcoders goes with --feature, not with --vector/],
  // download
  ['download without --repo', async () => ['download', '--out', 'x'], /residual download: --repo OWNER\/NAME is required/],
  ['download --transcoders-revision without --transcoders', async () => ['download', '--repo', 'a/b', '--transcoders-revision', 'v1'], /--transcoders-revision goes with --transcoders/],
  ['download --revision with an empty value', async () => ['download', '--repo', 'a/b', '--revision='], /--revision needs a value \(R\), got an empty string/],
  // the command itself
  ['an unknown subcommand', async () => ['frobnicate'], /residual: unknown subcommand 'frobnicate' \(subcommands: analyze, graph, steer, dla, qk, download; see residual --help\)/],
  ['help for an unknown subcommand', async () => ['help', 'frobnicate'], /residual help: unknown subcommand 'frobnicate'/],
  ['a subcommand named like an object property', async () => ['constructor'], /residual: unknown subcommand 'constructor'/],
  ['help for a subcommand named like an object property', async () => ['help', 'toString'], /residual help: unknown subcommand 'toString'/],
  ['the bench subcommand of older docs', async () => ['bench'], /run benchmarks with `npm run bench`/],
];

const helpCases: BadInputCase[] = (['analyze', 'graph', 'steer', 'download'] as const).map((cmd) => ({
  class: 11 as const,
  name: `${cmd} --help lists every flag ${cmd} accepts`,
  run: async () => {
    const spec = (await import('../../src/cli/run')).SPECS[cmd];
    const text = await succeed([cmd, '--model', 'x', '-h']);
    const missing = Object.keys(spec.flags).filter((f) => !text.includes(`--${f}`));
    return missing.length ? `usage of ${cmd} lacks ${missing.join(', ')}` : text.split('\n')[0];
  },
  expect: new RegExp(`^usage: residual ${cmd} --`),
}));

const contract: BadInputCase[] = [
  ...flagCases.map(([name, argv, expect, opts]) => ({ class: 11 as const, name, run: async () => refuse(await argv(), opts), expect })),
  ...helpCases,
  {
    class: 11,
    name: 'analyze --help through the real process (exit 0, usage on stdout, nothing on stderr)',
    run: async () => {
      const r = await runCli(['analyze', '--help']);
      return `exit ${r.code}; stderr ${JSON.stringify(r.stderr)}; ${r.stdout}`;
    },
    expect: /^exit 0; stderr ""; usage: residual analyze --model DIR --text TEXT[^]*--lens-gflop G[^]*--skip-memory-check/,
  },
  {
    class: 11,
    name: 'residual with no subcommand (usage on stderr, exit 2, stdout empty)',
    run: async () => {
      const { runCommand } = await import('../../src/cli/run');
      let out = '';
      let err = '';
      const code = await runCommand([], { out: (s) => void (out += s), err: (s) => void (err += s), errIsTTY: false, readStdin: () => '', env: process.env });
      return `exit ${code}; stdout ${JSON.stringify(out)}; ${err}`;
    },
    expect: /^exit 2; stdout ""; usage: residual <subcommand>/,
  },
  {
    class: 11,
    name: 'a bad number through the real process (one line, exit 2, stdout empty)',
    run: async () => refuseCli(await analyze('--lens-gflop', '-1')),
    expect: /^residual analyze: --lens-gflop must be a number ≥ 0 \(0: no limit\), got "-1"\n$/,
  },
  {
    class: 11,
    name: 'analyze --json piped into a reader slower than the pipe (over 64 KiB)',
    run: async () => {
      const r = await pipedCli(['analyze', '--model', fx().model, '--text', LONG_TEXT, '--json', '--providers', 'cpu'], 'slow');
      let parsed = 'cut';
      try {
        JSON.parse(r.stdout);
        parsed = 'whole';
      } catch {
        parsed = `cut at ${Buffer.byteLength(r.stdout)} bytes`;
      }
      const bytes = Buffer.byteLength(r.stdout);
      return `exit ${r.code}; JSON ${parsed} (${bytes} bytes, over 64 KiB: ${bytes > 65536}); stderr ${JSON.stringify(r.stderr)}`;
    },
    expect: /^exit 0; JSON whole \(\d+ bytes, over 64 KiB: true\); stderr ""$/,
  },
  {
    class: 11,
    name: 'analyze --json piped into a reader that closes early (| head)',
    run: async () => {
      const r = await pipedCli(['analyze', '--model', fx().model, '--text', LONG_TEXT, '--json', '--providers', 'cpu'], 'head');
      return `exit ${r.code}; stderr ${JSON.stringify(r.stderr)}`;
    },
    expect: /^exit 0; stderr ""$/,
  },
  {
    class: 11,
    name: 'a run with the default providers on a machine whose WebGPU cannot start (stderr stays empty)',
    run: async () => {
      const r = await runCli(await analyze('--json'));
      return `exit ${r.code}; stdout ${r.stdout.length > 0 ? 'JSON' : 'empty'}; stderr ${JSON.stringify(r.stderr)}`;
    },
    expect: /^exit 0; stdout JSON; stderr ""$/,
  },
  {
    class: 11,
    name: 'a Node warning raised during a run (stderr stays empty)',
    run: async () => {
      const warn = path.join(fx().root, 'warn.cjs');
      // Raised while the model loads (its config.json is read), long after the CLI started.
      fs.writeFileSync(
        warn,
        "const fs = require('fs'); const read = fs.readFileSync; let once = false;\n" +
          "fs.readFileSync = function (f, ...rest) { if (!once && require('path').basename(String(f)) === 'config.json') { once = true; process.emitWarning('a deprecated thing', 'DeprecationWarning'); } return read.call(this, f, ...rest); };\n",
      );
      const r = await runCli(await analyze('--providers', 'cpu'), { env: { NODE_OPTIONS: `--require ${warn}` } });
      return `exit ${r.code}; stderr ${JSON.stringify(r.stderr)}`;
    },
    expect: /^exit 0; stderr ""$/,
  },
];

export const cases: BadInputCase[] = [...output, ...memory, ...contract];
