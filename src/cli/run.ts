/**
 * The `residual` command line without the process around it (main.ts adds that), so tests run it in-process: picks
 * the subcommand, runs it, and turns any error into ONE line on stderr with exit status 2 (130 when cancelled);
 * stdout then holds nothing. Usage: `residual <subcommand> --help`.
 */
import { errorMessage, isCancelled, ResidualError } from '../engine/errors';
import { analyzeCommand, ANALYZE } from './analyze';
import { dlaCommand, DLA } from './dla';
import { qkCommand, QK } from './qk';
import { type CommandSpec } from './args';
import { processIo, type Io } from './common';
import { downloadCommand, DOWNLOAD } from './download';
import { graphCommand, GRAPH } from './graph';
import { steerCommand, STEER } from './steer';

const COMMANDS: Record<string, { spec: CommandSpec; run: (args: string[], io: Io) => Promise<number> }> = {
  analyze: { spec: ANALYZE, run: analyzeCommand },
  graph: { spec: GRAPH, run: graphCommand },
  steer: { spec: STEER, run: steerCommand },
  dla: { spec: DLA, run: dlaCommand },
  qk: { spec: QK, run: qkCommand },
  download: { spec: DOWNLOAD, run: downloadCommand },
};

/** The flags of each subcommand (for tests and docs). */
export const SPECS = { analyze: ANALYZE, graph: GRAPH, steer: STEER, dla: DLA, qk: QK, download: DOWNLOAD } as const;

export const USAGE = `usage: residual <subcommand> [flags]

subcommands:
${Object.values(COMMANDS)
  .map(({ spec }) => `  residual ${spec.name.padEnd(8)} ${spec.synopsis}`)
  .join('\n')}

residual <subcommand> --help lists every flag of a subcommand; --text - reads standard input.
Errors are one line on standard error with exit status 2; standard output then holds nothing.
`;

/** Runs one command line; returns the exit status. Never throws. */
export async function runCommand(argv: readonly string[], io: Io = processIo()): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === '--help' || cmd === '-h') {
      io.out(USAGE);
      return 0;
    }
    if (cmd === 'help') {
      const sub = rest[0];
      if (sub === undefined) io.out(USAGE);
      else if (Object.hasOwn(COMMANDS, sub)) return await COMMANDS[sub].run(['--help'], io);
      else throw new ResidualError(`unknown subcommand '${sub}' (subcommands: ${Object.keys(COMMANDS).join(', ')})`, 'residual help');
      return 0;
    }
    if (cmd === undefined) {
      io.err(USAGE);
      return 2;
    }
    if (cmd === 'bench') throw new ResidualError("run benchmarks with `npm run bench` (the 'bench' subcommand is not in this version)", 'residual');
    // Own entries only: 'constructor' or 'toString' is not a subcommand.
    const c = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!c) {
      throw new ResidualError(
        `unknown subcommand '${cmd}' (subcommands: ${Object.keys(COMMANDS).join(', ')}; see residual --help)`,
        'residual',
      );
    }
    return await c.run(rest, io);
  } catch (e) {
    io.err(errorLine(e, io.env));
    return isCancelled(e) ? 130 : 2;
  }
}

/** The one line an error is shown as: `residual analyze: --top …`, `residual: /path: …`. */
export function errorLine(e: unknown, env: NodeJS.ProcessEnv = process.env): string {
  const msg = errorMessage(e).replace(/\s*\n\s*/g, ' ');
  const line = /^residual[ :]/.test(msg) ? msg : `residual: ${msg}`;
  const stack = env.RESIDUAL_DEBUG && e instanceof Error && !(e instanceof ResidualError) ? `${e.stack}\n` : '';
  return `${line}\n${stack}`;
}
