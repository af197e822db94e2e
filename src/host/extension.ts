/**
 * Extension entry: registers the commands, the Inspector view and the Activations panel. Everything created here
 * goes into `context.subscriptions`. The engine does the work; this file only connects it to VS Code.
 */
import * as vscode from 'vscode';
import { analyze } from '../engine/analysis';
import { isCancelled, ResidualError } from '../engine/errors';
import type { FromActivations } from '../protocol';
import { ActivationsPanel } from './activationsPanel';
import { COMMANDS } from './commandIds';
import { InspectorViewProvider, INSPECTOR_VIEW_ID } from './inspectorView';
import { ModelManager } from './modelManager';

/** Where the last analysed text came from, to map token offsets back to the editor. */
interface Source {
  uri: vscode.Uri;
  baseOffset: number;
  version: number;
}

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Residual');
  const models = new ModelManager(context, log);
  let source: Source | undefined;
  let running: vscode.CancellationTokenSource | undefined;
  let requestId = 0;

  const panel = new ActivationsPanel(context.extensionUri, (m: FromActivations) => {
    if (m.type === 'token/reveal' && source) void revealRange(source, m.start, m.end);
    else if (m.type === 'analysis/rerun') void vscode.commands.executeCommand(COMMANDS.analyzeSelection);
  });
  const inspector = new InspectorViewProvider(context.extensionUri, models);

  async function analyzeSelection(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showWarningMessage('Residual: open a file and select the text to analyse.');
      return;
    }
    const doc = editor.document;
    const sel = editor.selection;
    const range = sel.isEmpty ? doc.lineAt(sel.active.line).range : new vscode.Range(sel.start, sel.end);
    const text = doc.getText(range);
    if (text.length === 0) {
      void vscode.window.showWarningMessage('Residual: the selection is empty and so is the current line; select some text to analyse.');
      return;
    }
    // A new request cancels the one in flight.
    running?.cancel();
    const cts = new vscode.CancellationTokenSource();
    running = cts;
    const id = ++requestId;
    const file = vscode.workspace.asRelativePath(doc.uri);
    const preview = text.length > 60 ? `${text.slice(0, 57)}…` : text;
    panel.show();
    panel.post({ type: 'analysis/started', requestId: id, preview, file });
    void vscode.commands.executeCommand('setContext', 'residual.running', true);
    models.patchState({ status: 'running' });
    log.appendLine(`[${id}] analysing ${text.length} characters of ${file}`);
    try {
      const analysis = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'Residual: analysing selection', cancellable: true },
        async (_progress, token) => {
          token.onCancellationRequested(() => cts.cancel());
          const model = await models.get();
          const maxTokens = vscode.workspace.getConfiguration('residual').get<number>('maxTokens', 256);
          return analyze(model, text, { maxTokens, cancel: cts.token });
        },
      );
      if (id !== requestId) return; // superseded while the result was on its way
      source = { uri: doc.uri, baseOffset: doc.offsetAt(range.start), version: doc.version };
      panel.post({ type: 'analysis/result', requestId: id, analysis, file });
      const t = analysis.truncated;
      const truncatedNote = t ? `analysed only the last ${t.kept} tokens${t.total ? ` of ${t.total}` : ''} (limit: residual.maxTokens or the model context)` : undefined;
      if (truncatedNote) void vscode.window.showInformationMessage(`Residual: ${truncatedNote}.`);
      log.appendLine(`[${id}] ${analysis.tokens.length} tokens on ${analysis.provider} in ${analysis.timings.totalMs.toFixed(0)} ms; next: ${analysis.top.map((x) => JSON.stringify(x.text)).join(' ')}`);
      models.patchState({
        status: 'ready',
        last: {
          preview,
          file,
          tokens: analysis.tokens.length,
          top: analysis.top.map((x) => ({ text: x.text, prob: x.prob })),
          ms: analysis.timings.totalMs,
          truncated: truncatedNote,
        },
      });
    } catch (e) {
      if (isCancelled(e)) {
        log.appendLine(`[${id}] cancelled`);
        panel.post({ type: 'analysis/cancelled', requestId: id });
      } else {
        const message = e instanceof ResidualError ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`;
        log.appendLine(`[${id}] failed: ${message}`);
        if (e instanceof Error && !(e instanceof ResidualError) && e.stack) log.appendLine(e.stack);
        panel.post({ type: 'analysis/error', requestId: id, message });
        if (models.state.status === 'running') models.patchState({ status: models.current ? 'ready' : 'error', error: message });
        void vscode.window.showErrorMessage(`Residual: ${message}`, 'Show Log').then((a) => a && log.show());
      }
    } finally {
      if (running === cts) {
        running = undefined;
        void vscode.commands.executeCommand('setContext', 'residual.running', false);
      }
      cts.dispose();
    }
  }

  async function selectModel(): Promise<void> {
    const picked = await vscode.window.showOpenDialog({
      canSelectFolders: true,
      canSelectFiles: false,
      openLabel: 'Use this model',
      title: 'Residual: choose a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)',
    });
    if (!picked?.[0]) return;
    const target = vscode.workspace.workspaceFolders ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    await vscode.workspace.getConfiguration('residual').update('modelPath', picked[0].fsPath, target);
    await models.unload();
    try {
      await models.get();
      void vscode.window.showInformationMessage(`Residual: loaded ${models.current?.info.name} on ${models.current?.provider}.`);
    } catch (e) {
      void vscode.window.showErrorMessage(`Residual: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  context.subscriptions.push(
    log,
    models,
    panel,
    vscode.window.registerWebviewViewProvider(INSPECTOR_VIEW_ID, inspector),
    vscode.commands.registerCommand(COMMANDS.analyzeSelection, analyzeSelection),
    vscode.commands.registerCommand(COMMANDS.openInspector, () => vscode.commands.executeCommand(`${INSPECTOR_VIEW_ID}.focus`)),
    vscode.commands.registerCommand(COMMANDS.selectModel, selectModel),
    vscode.commands.registerCommand(COMMANDS.showActivations, () => panel.show(false)),
    vscode.commands.registerCommand(COMMANDS.cancelAnalysis, () => running?.cancel()),
    vscode.commands.registerCommand(COMMANDS.showLog, () => log.show()),
  );
  log.appendLine(`Residual activated; model folder: ${models.modelDir()}`);
}

async function revealRange(source: Source, start: number, end: number): Promise<void> {
  const doc = await vscode.workspace.openTextDocument(source.uri);
  if (doc.version !== source.version) {
    void vscode.window.showInformationMessage('Residual: the file changed since it was analysed; token positions may be off.');
  }
  const editor = await vscode.window.showTextDocument(doc, { preserveFocus: false, preview: false, viewColumn: vscode.ViewColumn.One });
  const range = new vscode.Range(doc.positionAt(source.baseOffset + start), doc.positionAt(source.baseOffset + end));
  editor.selection = new vscode.Selection(range.start, range.end);
  editor.revealRange(range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
}

export function deactivate(): void {
  // Disposables in context.subscriptions release the ONNX Runtime sessions.
}
