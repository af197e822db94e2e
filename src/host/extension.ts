/**
 * Extension entry: registers the commands, the Inspector view, the Activations, Circuit and Steering panels and the
 * editor token heat.
 * Everything created here goes into `context.subscriptions`. The engine does the work; this file connects it to
 * VS Code.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { analyze, DEFAULT_LENS_GFLOP } from '../engine/analysis';
import { compareAnalyses } from '../engine/layers/compare';
import { activationPatching, suggestCorruption } from '../engine/layers/patching';
import { isCancelled, ResidualError } from '../engine/errors';
import { hookName } from '../engine/hooks';
import { featureVector } from '../engine/steering/vectors';
import { unescapeTokenInput } from '../engine/tokenizer';
import type { Analysis } from '../engine/results';
import type { FromActivations } from '../protocol';
import { ActivationsPanel } from './activationsPanel';
import { COMMANDS } from './commandIds';
import { downloadedModels, registerDownloadCommands } from './download';
import { EditorHeat, type TextSource } from './editorHeat';
import { InspectorViewProvider, INSPECTOR_VIEW_ID } from './inspectorView';
import { ModelManager } from './modelManager';
import { CircuitPanel } from './circuitPanel';
import { SteeringPanel } from './steeringPanel';

interface Analysed {
  analysis: Analysis;
  source: TextSource;
  file: string;
}

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Residual');
  const models = new ModelManager(context, log);
  const heat = new EditorHeat();
  let last: Analysed | undefined;
  let running: vscode.CancellationTokenSource | undefined;
  let patching: vscode.CancellationTokenSource | undefined;
  let requestId = 0;

  const panel = new ActivationsPanel(context.extensionUri, (m) => void onPanelMessage(m));
  const inspector = new InspectorViewProvider(context.extensionUri, models);
  const steering = new SteeringPanel(context, models, log);
  const circuit = new CircuitPanel(context, models, log, () => steering.transcodersDir(), (layer, index, prompt) => {
    try {
      if (prompt) steering.setPrompt(prompt);
      steering.show(featureVector(steering.transcodersDir()!, layer, index));
    } catch (e) {
      void vscode.window.showErrorMessage(`Residual: ${errorText(e)}`);
    }
  });

  const errorText = (e: unknown) => (e instanceof ResidualError ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`);
  const logError = (what: string, e: unknown) => {
    log.appendLine(`${what}: ${errorText(e)}`);
    if (e instanceof Error && !(e instanceof ResidualError) && e.stack) log.appendLine(e.stack);
  };

  // A webview with focus leaves no active text editor; commands then use the editor the user was last in.
  let lastEditor: vscode.TextEditor | undefined = vscode.window.activeTextEditor;
  context.subscriptions.push(vscode.window.onDidChangeActiveTextEditor((e) => e && (lastEditor = e)));
  const currentEditor = () =>
    vscode.window.activeTextEditor ?? (lastEditor && vscode.window.visibleTextEditors.includes(lastEditor) ? lastEditor : undefined);

  /**
   * Analyses the selection (else the current line) of the current editor, or `target` (a re-run of an earlier
   * range); a new request cancels the previous one.
   */
  /** When each analysis request's command started (for the command-to-rendered-panel latency in the log). */
  const commandStart = new Map<number, number>();

  async function analyzeEditor(target?: { doc: vscode.TextDocument; range: vscode.Range }): Promise<Analysed | undefined> {
    const t0 = performance.now();
    const editor = currentEditor();
    if (!target && !editor) {
      void vscode.window.showWarningMessage('Residual: open a file and select the text to analyse.');
      return undefined;
    }
    const doc = target?.doc ?? editor!.document;
    const sel = editor?.selection;
    const range = target?.range ?? (sel!.isEmpty ? doc.lineAt(sel!.active.line).range : new vscode.Range(sel!.start, sel!.end));
    const text = doc.getText(range);
    if (text.length === 0) {
      void vscode.window.showWarningMessage('Residual: the selection is empty and so is the current line; select some text to analyse.');
      return undefined;
    }
    running?.cancel();
    const cts = new vscode.CancellationTokenSource();
    running = cts;
    const id = ++requestId;
    commandStart.set(id, t0);
    for (const k of commandStart.keys()) if (k < id - 10) commandStart.delete(k); // superseded, never drawn
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
          const settings = vscode.workspace.getConfiguration('residual');
          const maxTokens = settings.get<number>('maxTokens', 256);
          const lensGflop = settings.get<number>('lensGflop', DEFAULT_LENS_GFLOP);
          return analyze(model, text, { maxTokens, lensFlops: lensGflop > 0 ? lensGflop * 1e9 : Infinity, cancel: cts.token });
        },
      );
      if (id !== requestId) return undefined; // superseded while the result was on its way
      const result: Analysed = { analysis, source: { uri: doc.uri, baseOffset: doc.offsetAt(range.start), version: doc.version }, file };
      const t = analysis.truncated;
      const truncatedNote = t ? `analysed only the last ${t.kept} tokens${t.total ? ` of ${t.total}` : ''} (limit: residual.maxTokens or the model context)` : undefined;
      if (truncatedNote) void vscode.window.showInformationMessage(`Residual: ${truncatedNote}.`);
      log.appendLine(`[${id}] ${analysis.tokens.length} tokens on ${analysis.provider} in ${analysis.timings.totalMs.toFixed(0)} ms; next: ${analysis.top.map((x) => JSON.stringify(x.text)).join(' ')}`);
      models.patchState({
        status: 'ready',
        last: { preview, file, tokens: analysis.tokens.length, top: analysis.top.map((x) => ({ text: x.text, prob: x.prob })), ms: analysis.timings.totalMs, truncated: truncatedNote },
      });
      return result;
    } catch (e) {
      if (isCancelled(e)) {
        log.appendLine(`[${id}] cancelled`);
        panel.post({ type: 'analysis/cancelled', requestId: id });
      } else {
        logError(`[${id}] failed`, e);
        panel.post({ type: 'analysis/error', requestId: id, message: errorText(e) });
        if (models.state.status === 'running') models.patchState({ status: models.current ? 'ready' : 'error', error: errorText(e) });
        void offerRecovery(e);
      }
      return undefined;
    } finally {
      if (running === cts) {
        running = undefined;
        void vscode.commands.executeCommand('setContext', 'residual.running', false);
      }
      cts.dispose();
    }
  }

  /** Shows an analysis in the panel and, by default, as heat over its text (the last block's relative update). */
  function present(r: Analysed): void {
    last = r;
    panel.post({ type: 'analysis/result', requestId, analysis: r.analysis, file: r.file });
    steering.setPrompt(r.analysis.text.slice(r.analysis.truncated?.firstChar ?? 0));
    if (vscode.workspace.getConfiguration('residual').get<boolean>('tokenHeat', true)) {
      heat.show(r.source, r.analysis, 'update_norm', r.analysis.stats.length - 1);
    }
  }

  async function analyzeSelection(): Promise<void> {
    const r = await analyzeEditor();
    if (r) present(r);
  }

  async function compareSelection(): Promise<void> {
    const a = last;
    if (!a) {
      void vscode.window.showWarningMessage('Residual: analyse a first selection (Analyze Selection), then compare a second one with it.');
      return;
    }
    const b = await analyzeEditor();
    if (!b) return;
    present(b);
    panel.post({ type: 'compare/result', a: a.analysis, b: b.analysis, layers: compareAnalyses(a.analysis, b.analysis), fileA: a.file, fileB: b.file });
  }

  async function onPanelMessage(m: FromActivations): Promise<void> {
    try {
      switch (m.type) {
        case 'analysis/rendered': {
          const t0 = commandStart.get(m.requestId);
          commandStart.delete(m.requestId);
          if (t0 !== undefined) log.appendLine(`[${m.requestId}] command to rendered panel: ${(performance.now() - t0).toFixed(0)} ms`);
          break;
        }
        case 'token/reveal':
          if (last) await revealRange(last.source, m.start, m.end);
          break;
        case 'analysis/rerun': {
          // Re-run the same text (the panel has focus, so there is no active editor to take a selection from).
          if (!last) break;
          const doc = await vscode.workspace.openTextDocument(last.source.uri);
          const start = doc.positionAt(last.source.baseOffset);
          const r = await analyzeEditor({ doc, range: new vscode.Range(start, doc.positionAt(last.source.baseOffset + last.analysis.text.length)) });
          if (r) present(r);
          break;
        }
        case 'heat/show':
          if (last) vscode.window.setStatusBarMessage(`Residual: editor heat shows ${heat.show(last.source, last.analysis, m.measure, m.layer)}`, 5000);
          break;
        case 'heat/clear':
          heat.clear();
          break;
        case 'lens/target':
          await trackTarget(m.position, m.text);
          break;
        case 'patching/run':
          await runPatching(m);
          break;
        case 'patching/cancel':
          patching?.cancel();
          break;
        case 'patching/suggest': {
          if (!last) break;
          const forText = last.analysis.text;
          const suggestion = await suggestCorruption(await models.get(), forText);
          panel.post({ type: 'patching/suggestion', forText, suggestion });
          break;
        }
        case 'patching/count':
          panel.post({ type: 'patching/count', text: m.text, tokens: (await models.get()).tokenizer.encodeForModel(m.text).ids.length });
          break;
      }
    } catch (e) {
      logError(`panel request ${m.type}`, e);
      void vscode.window.showErrorMessage(`Residual: ${errorText(e)}`);
    }
  }

  /** The probability and rank of a typed token at every read-out, at one position of the last analysis. */
  async function trackTarget(position: number, text: string): Promise<void> {
    if (!last) return;
    const model = await models.get();
    const a = last.analysis;
    const ids = model.tokenizer.encode(unescapeTokenInput(text)).ids;
    if (!text || ids.length === 0) {
      panel.post({ type: 'lens/targetError', message: 'Type the token to track (for example " the", with its leading space; \\n or ⏎ for a newline, \\t for a tab).' });
      return;
    }
    const hooks = a.readouts.map((r) => r.hook as ReturnType<typeof hookName>);
    const run = await model.run({ ids: a.tokens.map((t) => t.id), hooks });
    const D = model.config.dModel;
    const resid_ND = new Float32Array(hooks.length * D);
    hooks.forEach((h, i) => resid_ND.set(run.activations.get(h)!.data.subarray(position * D, (position + 1) * D), i * D));
    const lens = await model.lens({ resid_ND, targets: hooks.map(() => ids[0]), k: 1 });
    const tokenText = model.tokenizer.tokenDisplay(ids[0]);
    panel.post({
      type: 'lens/targetResult',
      position,
      text,
      tokenId: ids[0],
      tokenText,
      prob: Array.from(lens.targetProb_N),
      rank: Array.from(lens.targetRank_N),
      note: ids.length > 1 ? `“${text}” is ${ids.length} tokens; tracking its first, ${JSON.stringify(tokenText)}.` : undefined,
    });
  }

  async function runPatching(m: Extract<FromActivations, { type: 'patching/run' }>): Promise<void> {
    if (!last) return;
    patching?.cancel();
    const cts = new vscode.CancellationTokenSource();
    patching = cts;
    try {
      const model = await models.get();
      const report = await activationPatching(
        model,
        { clean: last.analysis.text.slice(last.analysis.truncated?.firstChar ?? 0), corrupted: m.corrupted, cleanAnswer: m.cleanAnswer, corruptedAnswer: m.corruptedAnswer, point: m.point },
        { cancel: cts.token, onProgress: (done, total) => panel.post({ type: 'patching/progress', done, total }) },
      );
      const { notes, ...result } = report;
      panel.post({ type: 'patching/result', result, notes });
      log.appendLine(`patching: ${result.restored.length}×${result.restored[0]?.length ?? 0} runs in ${result.ms.toFixed(0)} ms`);
    } catch (e) {
      if (isCancelled(e)) panel.post({ type: 'patching/error', message: 'Patching cancelled.' });
      else {
        logError('patching failed', e);
        panel.post({ type: 'patching/error', message: errorText(e) });
      }
    } finally {
      if (patching === cts) patching = undefined;
      cts.dispose();
    }
  }

  async function traceCircuit(): Promise<void> {
    const editor = currentEditor();
    if (!editor) {
      void vscode.window.showWarningMessage('Residual: open a file and select the prompt to trace.');
      return;
    }
    const sel = editor.selection;
    const text = sel.isEmpty ? editor.document.lineAt(sel.active.line).text : editor.document.getText(sel);
    if (!text) {
      void vscode.window.showWarningMessage('Residual: the selection is empty and so is the current line; select some text to trace.');
      return;
    }
    await circuit.trace(text);
  }

  /**
   * Select Model…: the bundled model, models loaded before, models downloaded with Download Model…, or a folder to
   * browse for. The choice goes to the user settings (or the workspace's, when the workspace already sets it).
   */
  async function selectModel(): Promise<void> {
    type Item = vscode.QuickPickItem & { dir?: string; action?: 'bundled' | 'browse' };
    const current = models.modelDir();
    const mark = (dir: string) => (dir === current ? ' (current)' : '');
    const items: Item[] = [{ label: '$(package) Bundled demo model', description: mark(models.bundledDir()), detail: models.bundledDir(), action: 'bundled' }];
    const seen = new Set<string>([models.bundledDir()]);
    const add = (dirs: string[], kind: string) => {
      const fresh = dirs.filter((d) => !seen.has(d));
      if (fresh.length) items.push({ label: kind, kind: vscode.QuickPickItemKind.Separator });
      for (const d of fresh) {
        seen.add(d);
        items.push({ label: `$(symbol-folder) ${path.basename(d)}`, description: mark(d), detail: d, dir: d });
      }
    };
    add(models.recent(), 'recent');
    add(downloadedModels(context), 'downloaded');
    items.push({ label: '', kind: vscode.QuickPickItemKind.Separator }, { label: '$(folder-opened) Browse…', detail: 'a Hugging Face checkpoint folder: config.json, model.safetensors, tokenizer.json', action: 'browse' });
    const pick = await vscode.window.showQuickPick(items, { title: 'Residual: Select Model', placeHolder: 'the model Residual analyses', matchOnDetail: true });
    if (!pick) return;
    let dir = pick.dir;
    if (pick.action === 'browse') {
      const picked = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Use this model', title: 'Residual: choose a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)' });
      if (!picked?.[0]) return;
      dir = picked[0].fsPath;
    }
    await useModel(dir);
  }

  /** Loads `dir` (undefined: the bundled model) and says how it went; a failure offers the way back. */
  async function useModel(dir: string | undefined): Promise<void> {
    await models.setModelPath(dir);
    try {
      await models.get();
      void vscode.window.showInformationMessage(`Residual: loaded ${models.current?.info.name} on ${models.current?.provider}.`);
    } catch (e) {
      void offerRecovery(e);
    }
  }

  /** An error message that, when the configured model is what failed, offers the bundled model or another one. */
  async function offerRecovery(e: unknown): Promise<void> {
    const modelFailed = !models.current && models.configured;
    const actions = modelFailed ? ['Use Bundled Model', 'Select Model…', 'Show Log'] : ['Show Log'];
    const a = await vscode.window.showErrorMessage(`Residual: ${errorText(e)}`, ...actions);
    if (a === 'Show Log') log.show();
    else if (a === 'Use Bundled Model') await useModel(undefined);
    else if (a === 'Select Model…') await selectModel();
  }

  context.subscriptions.push(
    log,
    models,
    panel,
    heat,
    steering,
    circuit,
    vscode.window.registerWebviewViewProvider(INSPECTOR_VIEW_ID, inspector),
    vscode.commands.registerCommand(COMMANDS.analyzeSelection, analyzeSelection),
    vscode.commands.registerCommand(COMMANDS.compareSelection, compareSelection),
    vscode.commands.registerCommand(COMMANDS.openInspector, () => vscode.commands.executeCommand(`${INSPECTOR_VIEW_ID}.focus`)),
    vscode.commands.registerCommand(COMMANDS.selectModel, selectModel),
    vscode.commands.registerCommand(COMMANDS.showActivations, () => panel.show(false)),
    vscode.commands.registerCommand(COMMANDS.openSteering, () => steering.show()),
    vscode.commands.registerCommand(COMMANDS.traceCircuit, traceCircuit),
    vscode.commands.registerCommand(COMMANDS.openGraph, async () => {
      const picked = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'Attribution graph JSON': ['json'] }, title: 'Residual: open an attribution graph' });
      if (picked?.[0]) await circuit.importFile(picked[0]);
    }),
    vscode.commands.registerCommand(COMMANDS.cancelAnalysis, () => {
      running?.cancel();
      patching?.cancel();
    }),
    vscode.commands.registerCommand(COMMANDS.clearHeat, () => heat.clear()),
    vscode.commands.registerCommand(COMMANDS.showLog, () => log.show()),
    ...registerDownloadCommands(context, useModel, log),
  );
  log.appendLine(`Residual activated; model folder: ${models.modelDir()}`);
}

async function revealRange(source: TextSource, start: number, end: number): Promise<void> {
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
