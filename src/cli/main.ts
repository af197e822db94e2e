/**
 * The `residual` process (shape: ../shared/CLI.md; the commands themselves are in run.ts). What the process adds:
 * - stdout is drained before the process ends, so piped JSON is never cut (`residual analyze --json | jq`, or a
 *   reader slower than the pipe's 64 KiB); a reader that closes early (`| head`) ends the run quietly;
 * - stderr carries only Residual's lines: Node's warnings are off (quiet.ts), ONNX Runtime's log is silenced when a
 *   model loads, and an unexpected exception is one "internal error" line (its stack only with RESIDUAL_DEBUG=1).
 */
import './quiet';
import { errorLine, runCommand } from './run';

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

const crash = (e: unknown) => {
  process.stderr.write(errorLine(e));
  void finish(2);
};
process.on('uncaughtException', crash);
process.on('unhandledRejection', crash);

void runCommand(process.argv.slice(2)).then(finish);
