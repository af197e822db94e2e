/**
 * The `residual` process (shape: ../shared/CLI.md; the commands themselves are in run.ts). What the process adds:
 * - stdout is drained before the process ends, so piped JSON is never cut (`residual analyze --json | jq`, or a
 *   reader slower than the pipe's 64 KiB); a reader that closes early (`| head`) ends the run quietly;
 * - stderr carries only Residual's lines: Node's warnings are off (quiet.ts), ONNX Runtime's log is silenced when a
 *   model loads, a command that may start a GPU provider runs in a worker whose native output goes to the log
 *   (worker.ts), and an unexpected exception is one "internal error" line (its stack only with RESIDUAL_DEBUG=1).
 */
import './quiet';
import { processIo } from './common';
import { errorLine, runCommand } from './run';
import { needsWorker, runInWorker } from './worker';

/** Resolves once everything written to `stream` so far has been handed to the operating system. */
function drained(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) return resolve();
    stream.write('', () => resolve());
  });
}

async function finish(code: number): Promise<never> {
  process.exitCode = code;
  await drained(process.stdout);
  await drained(process.stderr);
  process.exit(code);
}

// A reader that went away (`residual analyze --json | head -c 100`) is not an error of ours: stop quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    process.exit(2);
  });
}

const io = processIo();
const crash = (e: unknown) => {
  try {
    io.err(errorLine(e));
  } catch {
    // the user's stderr is gone (a closed pipe): nothing left to tell
  }
  void finish(2);
};
process.on('uncaughtException', crash);
process.on('unhandledRejection', crash);

const argv = process.argv.slice(2);
void (async () => {
  if (needsWorker(argv)) {
    const code = await runInWorker(argv);
    if (code !== undefined) return finish(code);
  }
  return finish(await runCommand(argv, io));
})();
