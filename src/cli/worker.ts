/**
 * Keeps the terminal's stderr to Residual's own lines when a GPU provider may start. Native libraries (Dawn, Vulkan
 * drivers, Mesa, ONNX Runtime's providers) write their warnings straight to file descriptor 2, which nothing in Node
 * can intercept in-process; so the command runs in a child process whose fd 2 is captured into the log file, and
 * whose own lines (errors, warnings, progress) go to the terminal's stderr through fd 3.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defaultCacheDir } from '../engine/cache';

/** In the child: the fd that reaches the user's stderr. */
export const ERR_FD_ENV = 'RESIDUAL_CLI_ERR_FD';
/** In the child: whether the user's stderr is a terminal (progress lines are drawn only then). */
export const ERR_TTY_ENV = 'RESIDUAL_CLI_ERR_TTY';
/** The log's size before it is rotated to cli.log.1. */
const LOG_LIMIT_BYTES = 2 * 1024 * 1024;
const MODEL_COMMANDS = new Set(['analyze', 'graph', 'steer', 'dla']);

/** The CLI's log: Residual's own log lines and the native libraries' output of the runs that needed a worker. */
function cliLogPath(): string {
  return path.join(defaultCacheDir(), 'logs', 'cli.log');
}

/**
 * Whether this command line runs in a worker: a subcommand that loads a model with GPU providers allowed (the
 * default order, or a --providers list naming one), and not already inside a worker.
 */
export function needsWorker(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): boolean {
  if (env[ERR_FD_ENV] || process.platform === 'win32' || !MODEL_COMMANDS.has(argv[0] ?? '')) return false;
  if (argv.includes('--help') || argv.includes('-h')) return false;
  let providers: string | undefined;
  argv.forEach((a, i) => {
    if (a === '--providers') providers = argv[i + 1];
    else if (a.startsWith('--providers=')) providers = a.slice('--providers='.length);
  });
  return providers === undefined || providers.split(',').some((p) => p.trim() !== 'cpu');
}

/** Opens the log for appending (rotated when large); undefined when it cannot be written (the output is then dropped). */
function openLog(file: string): number | undefined {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (fs.existsSync(file) && fs.statSync(file).size > LOG_LIMIT_BYTES) fs.renameSync(file, `${file}.1`);
    return fs.openSync(file, 'a');
  } catch {
    return undefined;
  }
}

/**
 * Runs `argv` in a child process and resolves to the exit status to end with; undefined when the child cannot start
 * (the caller then runs the command in this process).
 */
export function runInWorker(argv: readonly string[]): Promise<number | undefined> {
  const logFile = cliLogPath();
  const logFd = openLog(logFile);
  const writeLog = (s: string) => {
    if (logFd !== undefined) fs.writeSync(logFd, s);
  };
  writeLog(`== ${new Date().toISOString()} residual ${argv[0]} (pid ${process.pid})\n`);
  return new Promise((resolve) => {
    let tail = '';
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1], ...argv], {
      // fd 2 (native output) goes to the log; fd 3 (Residual's lines) is passed on to this process's stderr. (A pipe,
      // not the stderr itself: spawn sets the child's fd 2 before its fd 3, so "fd 3 = our fd 2" would get the pipe.)
      stdio: ['inherit', 'inherit', 'pipe', 'pipe'],
      env: { ...process.env, [ERR_FD_ENV]: '3', [ERR_TTY_ENV]: process.stderr.isTTY ? '1' : '' },
    });
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (d: Uint8Array) => process.stderr.write(d));
    child.stderr!.on('data', (d: Buffer) => {
      writeLog(d.toString('utf8'));
      tail = (tail + d.toString('utf8')).slice(-2000);
    });
    // Ctrl-C sends SIGINT to the whole foreground process group, the child included: passing it on as well would be
    // a second Ctrl-C (which ends a command's graceful cancel), so here it is only kept from ending this process.
    // SIGTERM and SIGHUP come to this process alone and are passed on.
    process.on('SIGINT', () => undefined);
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on('SIGTERM', forward);
    process.on('SIGHUP', forward);
    // 'error' and 'close' may both come (a failed spawn): the log is closed once.
    let closed = false;
    const closeFds = () => {
      if (closed) return;
      closed = true;
      if (logFd !== undefined) fs.closeSync(logFd);
    };
    child.on('error', () => {
      closeFds();
      resolve(undefined);
    });
    child.on('close', (code, signal) => {
      closeFds();
      if (code !== null) return resolve(code);
      // Stopped by a signal the parent forwarded: the shell's convention, 128 + its number (130 for Ctrl-C, 143 for SIGTERM).
      if (signal === 'SIGINT' || signal === 'SIGTERM' || signal === 'SIGHUP') return resolve(128 + os.constants.signals[signal]);
      // A native crash (a driver, an abort in a library): its last words are in the log; say where.
      const last = tail.trim().split('\n').pop()?.trim();
      process.stderr.write(`residual: internal error: the run ended by ${signal}${last ? ` (${last})` : ''}; the native output is in ${logFile}\n`);
      resolve(2);
    });
  });
}

/** In the worker: writes a line to the user's stderr (fd 3), whole, whatever the pipe's mode. */
export function writeErr(fd: number, s: string): void {
  const bytes = new TextEncoder().encode(s);
  let off = 0;
  while (off < bytes.length) {
    try {
      off += fs.writeSync(fd, bytes, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
}
