/**
 * What every `residual` subcommand shares: where its output goes (`Io`, so tests run a command in-process), the flags
 * with the same meaning everywhere (`--model`, `--text`, `--providers`, the memory check), reading the text, loading
 * the model with the memory estimate enforced, and checking an output path before any work is done.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chatText, requireChatTemplate, type ChatTemplate } from '../engine/chat';
import { errorMessage, ResidualError } from '../engine/errors';
import { checkOutputFile, kindOf } from '../engine/files';
import { Model } from '../engine/model';
import { DEFAULT_PROVIDERS, silenceOrt, type ProviderName } from '../engine/runtime/session';
import type { WeightPrecision } from '../engine/onnx/ops';
import type { Flags, FlagSpec } from './args';
import { ERR_FD_ENV, ERR_TTY_ENV, writeErr } from './worker';

/** Where a command's output goes: stdout gets only the result, stderr only Residual's own lines. */
export interface Io {
  out(s: string): void;
  err(s: string): void;
  /** Whether stderr is a terminal (progress lines are drawn only then). */
  errIsTTY: boolean;
  /** All of standard input (for `--text -`). */
  readStdin(): string;
  env: NodeJS.ProcessEnv;
  /** Residual's log lines (not for the user's terminal: the log file, when there is one). */
  log?: (line: string) => void;
}

export function processIo(): Io {
  // In a worker (worker.ts), the user's stderr is the fd named by the environment and fd 2 is the log.
  const errFd = Number(process.env[ERR_FD_ENV]) || undefined;
  return {
    out: (s) => void process.stdout.write(s),
    err: errFd ? (s) => writeErr(errFd, s) : (s) => void process.stderr.write(s),
    errIsTTY: errFd ? process.env[ERR_TTY_ENV] === '1' : !!process.stderr.isTTY,
    readStdin: () => fs.readFileSync(0, 'utf8'),
    env: process.env,
    ...(errFd ? { log: (line: string) => void process.stderr.write(`${line}\n`) } : {}),
  };
}

export const PROVIDERS: readonly ProviderName[] = ['cuda', 'webgpu', 'cpu', 'dml', 'coreml'];

/** The flags with the same meaning in every subcommand that loads a model. */
export const MODEL_FLAGS: Record<string, FlagSpec> = {
  model: { value: 'DIR', help: 'the model folder (config.json, tokenizer.json, *.safetensors) — required' },
  text: { value: 'TEXT', help: 'the text to run — required; "-" reads standard input' },
  providers: { value: 'LIST', help: `execution providers to try in order, comma-separated: ${PROVIDERS.join(', ')} (default ${DEFAULT_PROVIDERS.join(',')})` },
  chat: { help: "wrap the text as a user turn in the model's chat template (tokenizer_config.json chat_template), with the assistant's generation prompt after it" },
  precision: { value: 'auto|float32|float16', help: 'weight precision inside ONNX Runtime (default auto: float16 on a WebGPU adapter with shader-f16, else float32)' },
  'skip-memory-check': { help: 'load even when the memory estimate says the model will not fit (the check is on by default)' },
  'check-memory': { help: 'accepted for older scripts; the memory check is always on unless --skip-memory-check' },
};

/** `--text TEXT` or `--text -` (standard input); refuses a missing or empty text. */
export function readText(f: Flags, io: Io): string {
  const t = f.required('text', ' (use --text - for standard input)');
  let text = t;
  if (t === '-') {
    try {
      text = io.readStdin();
    } catch (e) {
      f.fail(`--text -: cannot read standard input (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    if (text.length === 0) f.fail('--text -: standard input is empty');
  }
  return text;
}

/** With `--chat`, the model's chat template (an error when it has none), else undefined. */
export function chatTemplateOf(f: Flags, model: Model): ChatTemplate | undefined {
  return f.bool('chat') ? requireChatTemplate(model.checkpoint.dir) : undefined;
}

/** The text the model runs: with `--chat`, the text rendered as a user turn in its chat template. */
export function promptOf(f: Flags, model: Model, text: string): string {
  return chatText(chatTemplateOf(f, model), text);
}

/** `--precision auto|float32|float16` (default auto). */
export function precisionOf(f: Flags): WeightPrecision | 'auto' {
  return f.choice('precision', ['auto', 'float32', 'float16'] as const) ?? 'auto';
}

/**
 * What the user should hear about the providers on stderr: a warning for the one in use (a CPU emulation of a GPU),
 * and, when `--providers` named them, why the ones before it were not used. The default order's reasons are in the
 * log and in `analyze --json`'s `attempts`.
 */
export function reportProviders(model: Model, named: boolean, io: Io): void {
  for (const a of model.attempts) {
    if (a.ok && a.warning) io.err(`residual: warning: ${a.warning}\n`);
    else if (!a.ok && named) io.err(`residual: ${a.provider} not used: ${a.reason}\n`);
  }
}

/** Loads the model with the memory estimate enforced unless `--skip-memory-check`. */
export async function loadModel(f: Flags, io: Io, opts: { precision?: WeightPrecision | 'auto' } = {}): Promise<Model> {
  const dir = f.required('model');
  if (f.bool('check-memory') && f.bool('skip-memory-check')) f.fail('--check-memory and --skip-memory-check contradict each other; give one');
  // As given, or undefined for the default order (where a GPU provider is used only on a real GPU).
  const providers = f.list('providers', PROVIDERS);
  silenceOrt();
  const model = await Model.load(dir, {
    providers,
    precision: opts.precision,
    memoryCheck: !f.bool('skip-memory-check'),
    // Lets tests exercise the refusal on a small model (as the extension's RESIDUAL_AVAILABLE_MEMORY does).
    availableMemory: Number(io.env.RESIDUAL_AVAILABLE_MEMORY) || undefined,
    memoryAdvice: {
      override: 'pass --skip-memory-check to load anyway',
      precision: Object.hasOwn(f.spec.flags, 'precision') ? '--precision float16' : null,
    },
    // Residual's own log (provider checks, cache upkeep): stderr in the worker process, whose stderr is the log file (main.ts).
    log: io.log,
  });
  reportProviders(model, !!providers, io);
  return model;
}

/**
 * Checks `--out FILE` before any work: a new path in an existing folder or a regular file to replace. A device, a
 * FIFO, a folder (or a path ending in "/") is refused by name and never replaced; a missing folder is named.
 */
export function checkOutFlag(f: Flags, file: string): void {
  if (file === '-') f.fail('--out -: writing to standard output is not supported; give the path of a file');
  if (/[/\\]$/.test(file)) f.fail(`--out ${file} ends with "/", which names a folder; give the path of a file`);
  checkOutputFile(file, '--out');
  // Before minutes of work: can a file be created there? (Permissions, read-only file systems: root passes access().)
  // The probe is removed only when this call created it: a file already under the probe's name (another run's, a
  // user's) is someone else's, so the next name is tried and that file is left as it was.
  const target = fs.existsSync(file) ? fs.realpathSync(file) : path.resolve(file);
  const stem = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}`);
  for (let attempt = 0; ; attempt++) {
    const probe = `${stem}${attempt ? `.${attempt}` : ''}.probe.tmp`;
    let fd: number;
    try {
      fd = fs.openSync(probe, 'wx');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && attempt < 100) continue;
      const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'a read-only file system' : code === 'ENOSPC' ? 'the disk is full' : (code ?? (e as Error).message);
      throw new ResidualError(`--out cannot be written in ${path.dirname(target)} (${why})`, file);
    }
    try {
      fs.closeSync(fd);
    } finally {
      fs.rmSync(probe, { force: true });
    }
    return;
  }
}

/** Checks `--out DIR` for a folder to write into: an existing folder or a new path; anything else is refused. */
export function checkOutFolder(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      let lst: fs.Stats | undefined;
      try {
        lst = fs.lstatSync(dir);
      } catch {
        lst = undefined;
      }
      if (lst?.isSymbolicLink()) throw new ResidualError('--out is a symbolic link to a missing target; give the real path', dir);
      return; // a new folder
    }
    if (code === 'ENOTDIR') throw new ResidualError(`--out: a parent of ${path.resolve(dir)} is a file, not a folder`, dir);
    throw new ResidualError(`--out cannot be used (${code ?? (e as Error).message})`, dir);
  }
  if (!st.isDirectory()) {
    throw new ResidualError(`--out is ${kindOf(st)}, not a folder: give a folder to download into (it is never replaced)`, dir);
  }
}

/**
 * Releases what a command holds (the attributor, then the model), each even when an earlier one fails. Commands call
 * it from `finally` with `done` true once their result is complete (printed, or written to --out). A failure to
 * release then does not undo that result: the exit status stays 0 and one `residual: warning:` line (naming every
 * failure) goes to stderr. Disposing before printing was the other way to keep stdout whole, but it would turn a
 * cleanup failure into a failed run (exit 2) whose `graph --out` file is already written; the process ends right
 * after anyway. When the command failed, its own error stays the one line shown, so a release failure is dropped.
 */
export async function release(io: Io, done: boolean, ...held: ({ dispose(): Promise<void> } | undefined)[]): Promise<void> {
  const failed: string[] = [];
  for (const h of held) {
    try {
      await h?.dispose();
    } catch (e) {
      failed.push(errorMessage(e).replace(/\s*\n\s*/g, ' '));
    }
  }
  if (done && failed.length) io.err(`residual: warning: the result is complete, but releasing the model's resources failed (${failed.join('; ')})\n`);
}
