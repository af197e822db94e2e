/**
 * `residual download --repo OWNER/NAME [--revision R] [--out DIR] [--transcoders REPO[:SUBFOLDER]]
 * [--transcoders-revision R] [--endpoint URL] [--json]`: fetches a model checkpoint (and a transcoder set into
 * `DIR/transcoders`, where the extension and `residual graph` look) from the Hub. The token comes from `HF_TOKEN`,
 * the endpoint from `--endpoint`, else `HF_ENDPOINT`, else huggingface.co. Progress goes to stderr; stdout gets the
 * JSON summary (`--json`) or one line. Ctrl-C stops and keeps the partial file for the next run. Errors are
 * ResidualErrors (the caller prints them as one line).
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ResidualError } from '../engine/errors';
import { downloadFromHub, mb, resolveEndpoint, type DownloadProgress, type HubSource } from '../engine/hub/download';
import { checkRepoId, modelFolderName, parseTranscoderSpec } from '../engine/hub/files';

const WHAT = 'residual download';

export async function downloadCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        repo: { type: 'string' },
        revision: { type: 'string', default: 'main' },
        out: { type: 'string' },
        transcoders: { type: 'string' },
        'transcoders-revision': { type: 'string', default: 'main' },
        endpoint: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    throw new ResidualError((e as Error).message, WHAT);
  }
  if (!values.repo) throw new ResidualError('--repo OWNER/NAME is required', WHAT);
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
  const tty = process.stderr.isTTY;
  let current = '';
  const onProgress = (p: DownloadProgress) => {
    if (p.file !== current) {
      if (tty && current) process.stderr.write('\n');
      current = p.file;
      if (!tty) process.stderr.write(`residual: ${p.file} (${mb(p.total)})\n`);
    }
    if (tty) {
      const pct = p.overallTotal ? ((100 * p.overallBytes) / p.overallTotal).toFixed(0) : '100';
      process.stderr.write(`\r${p.phase === 'verify' ? 'verifying' : 'downloading'} ${p.file} ${mb(p.bytes)} / ${mb(p.total)}  (all: ${mb(p.overallBytes)} / ${mb(p.overallTotal)}, ${pct}%)\x1b[K`);
    }
  };
  let summary;
  try {
    summary = await downloadFromHub(sources, { endpoint, token: process.env.HF_TOKEN, signal: ac.signal, onProgress });
  } finally {
    process.off('SIGINT', onSigint);
    if (tty && current) process.stderr.write('\n');
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
  process.stdout.write(
    values.json
      ? JSON.stringify(json, null, 1) + '\n'
      : `${modelDir}: ${summary.files.length} files verified (${skipped} already there), ${mb(summary.fetchedBytes)} fetched in ${(summary.ms / 1000).toFixed(1)} s\n`,
  );
  return 0;
}
