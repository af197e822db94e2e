/**
 * The `residual` command line (shape: ../shared/CLI.md). Errors are one line on stderr naming the file and the
 * problem, with exit status 2; stdout then holds nothing half-written.
 */
import { errorMessage, ResidualError } from '../engine/errors';
import { analyzeCommand } from './analyze';
import { downloadCommand } from './download';
import { graphCommand } from './graph';
import { steerCommand } from './steer';

const USAGE = `usage:
  residual analyze --model DIR --text TEXT [--json] [--max-tokens N] [--providers cpu,webgpu] [--top K]
                   [--precision float32|float16] [--check-memory] [--lens-gflop G (0: no limit)]
  residual graph   --model DIR --transcoders DIR --text TEXT [--node-threshold X] [--edge-threshold X] --out FILE
                   [--max-tokens N (256)] [--max-feature-nodes N|all] [--max-memory MB] [--estimate [--json]]
  residual steer   --model DIR --text TEXT (--feature LAYER:INDEX --transcoders DIR | --vector FILE) --layer L
                   --strength S [--hook resid_pre|resid_mid|resid_post] [--relative] [--positions all|from:N|i,j]
                   [--generate N] [--seed S] [--temperature T] [--top-p P] [--json]
  residual download --repo OWNER/NAME [--revision R] [--out DIR] [--transcoders REPO[:SUBFOLDER]]
                   [--transcoders-revision R] [--endpoint URL] [--json]   (token: HF_TOKEN; endpoint: HF_ENDPOINT)
  (--text - reads standard input)`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE + '\n');
    return cmd ? 0 : 2;
  }
  if (cmd === 'analyze') return analyzeCommand(rest);
  if (cmd === 'graph') return graphCommand(rest);
  if (cmd === 'steer') return steerCommand(rest);
  if (cmd === 'download') return downloadCommand(rest);
  if (cmd === 'bench') throw new ResidualError("run benchmarks with `npm run bench` (the 'bench' subcommand is not in this version)", 'residual');
  throw new ResidualError(`unknown subcommand '${cmd}'\n${USAGE}`, 'residual');
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    const msg = errorMessage(e);
    process.stderr.write(`residual: ${msg}\n`);
    process.exit(2);
  },
);
