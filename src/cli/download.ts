/**
 * `residual download --repo OWNER/NAME [--revision R] [--out DIR] [--transcoders REPO[:SUBFOLDER]]
 * [--transcoders-revision R] [--endpoint URL] [--json]`: fetches a model checkpoint (and a transcoder set into
 * `DIR/transcoders`, where the extension and `residual graph` look) from the Hub. The token comes from `HF_TOKEN`,
 * the endpoint from `--endpoint`, else `HF_ENDPOINT`, else huggingface.co. Progress goes to stderr; stdout gets the
 * JSON summary (`--json`) or one line. Ctrl-C stops and keeps the partial file for the next run. Errors are
 * ResidualErrors (the caller prints them as one line).
 */
import * as path from 'node:path';
import { describeWaiting, downloadFromHub, mb, resolveEndpoint, type DownloadProgress, type HubSource, type WaitingProgress } from '../engine/hub/download';
import { checkRepoId, modelFolderName, parseTranscoderSpec } from '../engine/hub/files';
import { parseFlags, usageOf, type CommandSpec, type Flags } from './args';
import { checkOutFolder, processIo, type Io } from './common';

export const DOWNLOAD: CommandSpec = {
  name: 'download',
  synopsis: '--repo OWNER/NAME [--out DIR] [--transcoders REPO[:SUBFOLDER]] [flags]',
  summary:
    'Fetches a model checkpoint (and a transcoder set into DIR/transcoders) from the Hugging Face Hub, verifying every file. The token comes from HF_TOKEN; the endpoint from --endpoint, else HF_ENDPOINT, else huggingface.co. The Hub must answer within HF_HUB_ETAG_TIMEOUT seconds (default 20) and a transfer may stall for HF_HUB_DOWNLOAD_TIMEOUT seconds (default 30); a stalled file is kept and resumed by the next run.',
  flags: {
    repo: { value: 'OWNER/NAME', help: 'the model repository — required' },
    revision: { value: 'R', help: 'branch, tag or commit (default main)' },
    out: { value: 'DIR', help: 'the folder to download into (default: a folder named after the repository and revision)' },
    transcoders: { value: 'REPO[:SUBFOLDER]', help: 'also fetch this transcoder set into DIR/transcoders' },
    'transcoders-revision': { value: 'R', help: 'revision of the transcoder repository (default main)' },
    endpoint: { value: 'URL', help: 'the Hub to download from (default HF_ENDPOINT, else https://huggingface.co)' },
    json: { help: 'print a JSON summary instead of one line' },
  },
};

export async function downloadCommand(args: string[], io: Io = processIo()): Promise<number> {
  const parsed = parseFlags(DOWNLOAD, args);
  if (parsed === 'help') {
    io.out(usageOf(DOWNLOAD));
    return 0;
  }
  const f: Flags = parsed;
  const values = {
    repo: f.required('repo'),
    revision: f.str('revision') ?? 'main',
    out: f.str('out'),
    transcoders: f.str('transcoders'),
    'transcoders-revision': f.str('transcoders-revision') ?? 'main',
    endpoint: f.str('endpoint'),
    json: f.bool('json'),
  };
  if (f.has('transcoders-revision') && !values.transcoders) f.fail('--transcoders-revision goes with --transcoders');
  if (values.out !== undefined) checkOutFolder(values.out);
  const repo = checkRepoId(values.repo);
  const modelDir = path.resolve(values.out ?? modelFolderName(repo, values.revision));
  const sources: HubSource[] = [{ kind: 'model', repo, revision: values.revision, destDir: modelDir }];
  const transcodersDir = path.join(modelDir, 'transcoders');
  if (values.transcoders) {
    const t = parseTranscoderSpec(values.transcoders);
    sources.push({ kind: 'transcoders', repo: t.repo, subfolder: t.subfolder, revision: values['transcoders-revision'], destDir: transcodersDir });
  }
  const endpoint = resolveEndpoint(values.endpoint);
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once('SIGINT', onSigint);
  const tty = io.errIsTTY;
  let current = '';
  const onProgress = (p: DownloadProgress) => {
    if (p.file !== current) {
      if (tty && current) io.err('\n');
      current = p.file;
      if (!tty) io.err(`residual: ${p.file} (${mb(p.total)})\n`);
    }
    if (tty) {
      const pct = p.overallTotal ? ((100 * p.overallBytes) / p.overallTotal).toFixed(0) : '100';
      io.err(`\r${p.phase === 'verify' ? 'verifying' : 'downloading'} ${p.file} ${mb(p.bytes)} / ${mb(p.total)}  (all: ${mb(p.overallBytes)} / ${mb(p.overallTotal)}, ${pct}%)\x1b[K`);
    }
  };
  let summary;
  try {
    // A Hub that answers nothing is said to be waited for (at most every 5 s), so a silent terminal never looks hung.
    let lastWait = -Infinity;
    const onWaiting = (w: WaitingProgress) => {
      if (performance.now() - lastWait < 5000) return;
      lastWait = performance.now();
      io.err(`${tty && current ? '\n' : ''}residual: ${describeWaiting(w)}\n`);
    };
    summary = await downloadFromHub(sources, { endpoint, token: io.env.HF_TOKEN, env: io.env, signal: ac.signal, onProgress, onWaiting });
  } finally {
    process.off('SIGINT', onSigint);
    if (tty && current) io.err('\n');
  }
  const m = summary.sources[0];
  const json = {
    endpoint: summary.endpoint,
    repo: m.repo,
    revision: m.revision,
    commit: m.commit,
    model_dir: modelDir,
    transcoders_dir: values.transcoders ? transcodersDir : null,
    transcoders: summary.sources[1] ? { repo: summary.sources[1].repo, subfolder: summary.sources[1].subfolder ?? null, commit: summary.sources[1].commit } : null,
    files: summary.files.map((f) => ({
      repo: f.repo,
      path: f.path,
      dest: f.dest,
      size: f.size,
      status: f.status,
      fetched_bytes: f.fetchedBytes,
      resumed_from: f.resumedFrom,
      restarts: f.restarts,
      verified_by: f.verifiedBy,
    })),
    fetched_bytes: summary.fetchedBytes,
    total_bytes: summary.totalBytes,
    seconds: summary.ms / 1000,
  };
  const skipped = summary.files.filter((f) => f.status === 'skipped').length;
  io.out(
    values.json
      ? JSON.stringify(json, null, 1) + '\n'
      : `${modelDir}: ${summary.files.length} files verified (${skipped} already there), ${mb(summary.fetchedBytes)} fetched in ${(summary.ms / 1000).toFixed(1)} s\n`,
  );
  return 0;
}
