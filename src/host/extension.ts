/**
 * Extension entry: wires the commands, the Inspector view, the Activations, Circuit and Steering panels and the
 * settings together. Each panel's controller does its own work (src/host/*Panel.ts) and the engine does the
 * computing; everything created here goes into `context.subscriptions`.
 */
import * as vscode from 'vscode';
import { errorMessage } from '../engine/errors';
import { featureVector } from '../engine/steering/vectors';
import { ActivationsPanel } from './activationsPanel';
import { clearCacheCommand } from './cache';
import { CircuitPanel } from './circuitPanel';
import { COMMANDS } from './commandIds';
import { registerDownloadCommands } from './download';
import { InspectorViewProvider, INSPECTOR_VIEW_ID } from './inspectorView';
import { ModelCommands } from './modelCommands';
import { ModelManager } from './modelManager';
import { EditorSelection } from './selection';
import { SteeringPanel } from './steeringPanel';

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Residual');
  const models = new ModelManager(context, log);
  const modelCommands = new ModelCommands(context, models, log);
  const selection = new EditorSelection();
  const steering = new SteeringPanel(context, models, log, selection);
  const activations = new ActivationsPanel(context, models, log, selection, (text) => steering.setPrompt(text), (e) => modelCommands.offerRecovery(e), (vector) => steering.open(vector), () => steering.transcodersDir());
  const circuit = new CircuitPanel(context, models, log, () => steering.transcodersDir(), (layer, index, prompt) => {
    try {
      if (prompt) steering.setPrompt(prompt);
      steering.open(featureVector(steering.transcodersDir()!, layer, index));
    } catch (e) {
      void vscode.window.showErrorMessage(`Residual: ${errorMessage(e)}`);
    }
  });
  const inspector = new InspectorViewProvider(context.extensionUri, models, log);

  const traceCircuit = async () => {
    const sel = selection.take('trace');
    if (sel) await circuit.trace(sel.text);
  };
  const openGraph = async () => {
    const picked = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'Attribution graph JSON': ['json'] }, title: 'Residual: open an attribution graph' });
    if (picked?.[0]) await circuit.importFile(picked[0]);
  };

  context.subscriptions.push(
    log,
    models,
    selection,
    activations,
    steering,
    circuit,
    inspector,
    vscode.window.registerWebviewViewProvider(INSPECTOR_VIEW_ID, inspector),
    vscode.commands.registerCommand(COMMANDS.analyzeSelection, () => activations.analyzeSelection()),
    vscode.commands.registerCommand(COMMANDS.compareSelection, () => activations.compareSelection()),
    vscode.commands.registerCommand(COMMANDS.openInspector, () => vscode.commands.executeCommand(`${INSPECTOR_VIEW_ID}.focus`)),
    vscode.commands.registerCommand(COMMANDS.selectModel, () => modelCommands.selectModel()),
    vscode.commands.registerCommand(COMMANDS.showActivations, () => activations.show(false)),
    vscode.commands.registerCommand(COMMANDS.openSteering, () => steering.open()),
    vscode.commands.registerCommand(COMMANDS.traceCircuit, traceCircuit),
    vscode.commands.registerCommand(COMMANDS.openGraph, openGraph),
    vscode.commands.registerCommand(COMMANDS.cancelAnalysis, () => activations.cancel()),
    vscode.commands.registerCommand(COMMANDS.clearHeat, () => activations.clearHeat()),
    vscode.commands.registerCommand(COMMANDS.showLog, () => log.show()),
    vscode.commands.registerCommand(COMMANDS.toggleChat, () => models.toggleChat()),
    vscode.commands.registerCommand(COMMANDS.clearCache, () => clearCacheCommand(context, log)),
    ...registerDownloadCommands(context, (dir) => modelCommands.useModel(dir), log),
  );
  log.appendLine(`Residual activated; model folder: ${models.modelDir()}`);
}

export function deactivate(): void {
  // Disposables in context.subscriptions release the ONNX Runtime sessions.
}
