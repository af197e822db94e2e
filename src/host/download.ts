/**
 * **Residual: Download Model…** and **Residual: Set Hugging Face Token…**: asks for a repository (and optionally a
 * transcoder set), downloads it with src/engine/hub into the extension's global storage (`models/<owner>--<name>`,
 * transcoders in its `transcoders/` folder, where the Circuit and Steering panels look), with a cancellable progress
 * notification, then offers to use it. The token lives in VS Code's secret storage. Nothing touches the network
 * until the user runs the command.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { errorMessage, isCancelled } from '../engine/errors';
import { describeWaiting, downloadFromHub, mb, resolveEndpoint, type DownloadSummary, type HubSource } from '../engine/hub/download';
import { checkRepoPath, checkRevision, modelFolderName, repoIdProblem } from '../engine/hub/files';
import { COMMANDS } from './commandIds';

const TOKEN_KEY = 'residual.hubToken';

/** Arguments that skip the prompts (scripts, tests): `executeCommand('residual.downloadModel', {repo, …})`. */
export interface DownloadArgs {
  repo: string;
  revision?: string;
  transcoders?: { repo: string; subfolder?: string; revision?: string };
  /** Use the model when done, without asking. */
  use?: boolean;
}

/** `useModel` is Select Model…'s own way of switching to a folder (settings, reload, messages, recovery). */
export function registerDownloadCommands(context: vscode.ExtensionContext, useModel: (dir: string) => Promise<void>, log: vscode.OutputChannel): vscode.Disposable[] {
  return [
    vscode.commands.registerCommand(COMMANDS.downloadModel, (args?: DownloadArgs) => downloadModel(context, useModel, log, args)),
    vscode.commands.registerCommand(COMMANDS.setHubToken, () => setToken(context)),
  ];
}

/** The endpoint: the setting where the user set it, else HF_ENDPOINT, else huggingface.co. */
function endpoint(): string {
  const inspected = vscode.workspace.getConfiguration('residual').inspect<string>('hub.endpoint');
  const set = inspected?.workspaceFolderValue ?? inspected?.workspaceValue ?? inspected?.globalValue;
  return resolveEndpoint(set?.trim() || undefined);
}

async function setToken(context: vscode.ExtensionContext): Promise<void> {
  const had = !!(await context.secrets.get(TOKEN_KEY));
  const token = await vscode.window.showInputBox({
    title: 'Residual: Hugging Face access token',
    prompt: had
      ? 'A token is stored. Enter a new one to replace it, or leave empty to delete it.'
      : 'A read token from huggingface.co/settings/tokens, for gated or private repositories. Stored in VS Code’s secret storage.',
    password: true,
    ignoreFocusOut: true,
    placeHolder: 'hf_…',
    validateInput: (v) => (/\s/.test(v.trim()) ? 'a token has no spaces' : undefined),
  });
  if (token === undefined) return;
  if (!token.trim()) {
    await context.secrets.delete(TOKEN_KEY);
    void vscode.window.showInformationMessage(had ? 'Residual: Hugging Face token deleted.' : 'Residual: no token stored.');
    return;
  }
  await context.secrets.store(TOKEN_KEY, token.trim());
  void vscode.window.showInformationMessage(
    `Residual: Hugging Face token stored${token.trim().startsWith('hf_') ? '' : ' (it does not start with "hf_"; huggingface.co tokens do, a mirror’s may not)'}.`,
  );
}

async function ask(): Promise<DownloadArgs | undefined> {
  const repo = await vscode.window.showInputBox({
    title: 'Residual: Download Model (1/3) — repository',
    prompt: 'Hugging Face model repository with safetensors weights, e.g. openai-community/gpt2',
    placeHolder: 'owner/name',
    ignoreFocusOut: true,
    validateInput: (v) => (v.trim() ? repoIdProblem(v) ?? undefined : 'expected owner/name'),
  });
  if (!repo) return undefined;
  const revision = await vscode.window.showInputBox({
    title: 'Residual: Download Model (2/3) — revision',
    prompt: 'Branch, tag or commit (empty: main)',
    value: 'main',
    ignoreFocusOut: true,
    validateInput: (v) => (v.trim() ? revisionProblem(v) : undefined),
  });
  if (revision === undefined) return undefined;
  const what = await vscode.window.showQuickPick(
    [
      { label: 'Model only', description: 'config, tokenizer, safetensors weights' },
      { label: 'Model and transcoders', description: 'also a transcoder set for circuits and feature steering' },
    ],
    { title: 'Residual: Download Model (3/3)', ignoreFocusOut: true },
  );
  if (!what) return undefined;
  const args: DownloadArgs = { repo: repo.trim(), revision: revision.trim() || 'main' };
  if (what.label === 'Model and transcoders') {
    const trepo = await vscode.window.showInputBox({
      title: 'Residual: transcoder repository',
      prompt: 'Repository of the transcoder set (SAELens layout: cfg.json + *.safetensors per layer; or circuit-tracer: config.yaml + layer_<i>.safetensors)',
      placeHolder: 'owner/name',
      ignoreFocusOut: true,
      validateInput: (v) => (v.trim() ? repoIdProblem(v) ?? undefined : 'expected owner/name'),
    });
    if (!trepo) return undefined;
    const sub = await vscode.window.showInputBox({
      title: 'Residual: transcoder folder',
      prompt: 'Folder inside that repository holding the set (empty: the whole repository)',
      placeHolder: 'e.g. layer_3/width_16k',
      ignoreFocusOut: true,
      validateInput: (v) => subfolderProblem(v.trim(), trepo.trim()),
    });
    if (sub === undefined) return undefined;
    args.transcoders = { repo: trepo.trim(), subfolder: sub.trim().replace(/^\/+|\/+$/g, '') || undefined };
  }
  return args;
}

function revisionProblem(v: string): string | undefined {
  try {
    checkRevision(v);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

function subfolderProblem(v: string, repo: string): string | undefined {
  if (!v) return undefined;
  try {
    checkRepoPath(v.replace(/^\/+|\/+$/g, ''), repo);
    return undefined;
  } catch {
    return 'a folder path inside the repository, like layer_3/width_16k (no "..")';
  }
}

async function downloadModel(context: vscode.ExtensionContext, useModel: (dir: string) => Promise<void>, log: vscode.OutputChannel, given?: DownloadArgs): Promise<DownloadSummary | undefined> {
  const args = given && typeof given.repo === 'string' ? given : await ask();
  if (!args) return undefined;
  const problem = repoIdProblem(args.repo);
  if (problem) {
    void vscode.window.showErrorMessage(`Residual: ${problem}`);
    return undefined;
  }
  const revision = args.revision?.trim() || 'main';
  const modelDir = vscode.Uri.joinPath(context.globalStorageUri, 'models', modelFolderName(args.repo, revision)).fsPath;
  const transcodersDir = path.join(modelDir, 'transcoders');
  const sources: HubSource[] = [{ kind: 'model', repo: args.repo.trim(), revision, destDir: modelDir }];
  if (args.transcoders) sources.push({ kind: 'transcoders', repo: args.transcoders.repo.trim(), subfolder: args.transcoders.subfolder, revision: args.transcoders.revision, destDir: transcodersDir });

  let hub: string;
  try {
    hub = endpoint();
  } catch (e) {
    void vscode.window.showErrorMessage(`Residual: ${(e as Error).message} (setting residual.hub.endpoint)`);
    return undefined;
  }
  const token = await context.secrets.get(TOKEN_KEY);
  const what = args.transcoders ? `${args.repo} and transcoders from ${args.transcoders.repo}${args.transcoders.subfolder ? `/${args.transcoders.subfolder}` : ''}` : args.repo;
  log.appendLine(`download: ${what} (revision ${revision}) from ${hub} into ${modelDir}${token ? ' with the stored token' : ''}`);
  try {
    const summary = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Residual: downloading ${args.repo}`, cancellable: true },
      async (progress, ct) => {
        const ac = new AbortController();
        const sub = ct.onCancellationRequested(() => ac.abort());
        let reported = 0;
        let loggedWait = 0;
        progress.report({ message: `asking ${hub} for ${args.repo}…` });
        try {
          return await downloadFromHub(sources, {
            endpoint: hub,
            token,
            signal: ac.signal,
            lockLabel: `VS Code, Residual: Download Model ${args.repo}`,
            // Nothing from the Hub for a few seconds: say so (with the deadline) instead of a frozen bar.
            onWaiting: (w) => {
              if (performance.now() - loggedWait > 10_000) {
                loggedWait = performance.now();
                log.appendLine(`download: ${describeWaiting(w)}`);
              }
              progress.report({ message: describeWaiting(w) });
            },
            onProgress: (p) => {
              const frac = p.overallTotal ? p.overallBytes / p.overallTotal : 1;
              const increment = Math.max(0, 100 * frac - reported);
              reported += increment;
              const file = p.file.split('/').slice(2).join('/');
              progress.report({
                increment,
                message: `${p.phase === 'verify' ? 'verifying' : ''} ${file} — ${mb(p.bytes)} / ${mb(p.total)} (total ${mb(p.overallBytes)} / ${mb(p.overallTotal)})`.trim(),
              });
            },
          });
        } finally {
          sub.dispose();
        }
      },
    );
    const skipped = summary.files.filter((f) => f.status === 'skipped').length;
    log.appendLine(
      `download: ${summary.files.length} files verified (${skipped} already there, ${summary.files.filter((f) => f.status === 'resumed').length} resumed), ` +
        `${mb(summary.fetchedBytes)} fetched in ${(summary.ms / 1000).toFixed(1)} s; commit ${summary.sources[0].commit}`,
    );
    const transcodersNote =
      args.transcoders && vscode.workspace.getConfiguration('residual').get<string>('transcodersPath', '').trim()
        ? ' Note: residual.transcodersPath is set and takes precedence over the downloaded transcoders.'
        : '';
    const use = args.use
      ? 'Use this model'
      : await vscode.window.showInformationMessage(
          `Residual: downloaded ${what} (${summary.files.length} files, ${mb(summary.totalBytes)}, checksums verified) to ${modelDir}.${transcodersNote}`,
          'Use this model',
        );
    if (use === 'Use this model' && fs.existsSync(path.join(modelDir, 'config.json'))) await useModel(modelDir);
    return summary;
  } catch (e) {
    if (isCancelled(e)) {
      log.appendLine(`download: ${(e as Error).message}`);
      void vscode.window.showInformationMessage('Residual: download cancelled. Partial files are kept; run Download Model… again to resume.');
    } else {
      const msg = errorMessage(e);
      log.appendLine(`download failed: ${msg}`);
      void vscode.window.showErrorMessage(`Residual: ${msg}`, 'Show Log').then((a) => a && log.show());
    }
    return undefined;
  }
}

/** Model folders Download Model… has written into the extension's storage (those with a config.json). */
export function downloadedModels(context: vscode.ExtensionContext): string[] {
  const root = vscode.Uri.joinPath(context.globalStorageUri, 'models').fsPath;
  try {
    return fs
      .readdirSync(root, { withFileTypes: true })
      .filter((e) => e.isDirectory() && fs.existsSync(path.join(root, e.name, 'config.json')))
      .map((e) => path.join(root, e.name));
  } catch {
    return [];
  }
}
