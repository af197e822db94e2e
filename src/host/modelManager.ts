/**
 * Owns the loaded model: resolves the folder from settings (default: the bundled demo model), loads it once with
 * progress, reloads when the settings change, and shows the provider in the status bar.
 */
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { chatText, readChatTemplate, type ChatTemplate } from '../engine/chat';
import { errorMessage, ResidualError } from '../engine/errors';
import { checkParity, parityLine } from '../engine/parity';
import { Model } from '../engine/model';
import { resetProviderProbe } from '../engine/runtime/providerProbe';
import { DEFAULT_PROVIDERS, silenceOrt } from '../engine/runtime/session';
import { useExtensionCache } from './cache';
import type { InspectorState, ProviderAttempt } from '../protocol';

const RECENT_KEY = 'residual.recentModels';

export class ModelManager implements vscode.Disposable {
  private loading: Promise<Model> | undefined;
  private model: Model | undefined;
  private readonly status: vscode.StatusBarItem;
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChange = this.changed.event;
  state: InspectorState = { status: 'idle' };
  /** Residual's cache in the extension's global storage (graphs and float16 copies; see src/host/cache.ts). */
  readonly cacheDir: string;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.OutputChannel,
  ) {
    this.cacheDir = useExtensionCache(context, log);
    this.status = vscode.window.createStatusBarItem('residual.provider', vscode.StatusBarAlignment.Right, 100);
    this.status.name = 'Residual: execution provider';
    this.status.command = 'residual.openInspector';
    this.setState({ status: 'idle', modelDir: this.modelDir() });
    context.subscriptions.push(
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (['modelPath', 'providers', 'threads', 'precision'].some((k) => e.affectsConfiguration(`residual.${k}`))) {
          this.log.appendLine(`settings changed: the model (${this.modelDir()}) will be reloaded on the next analysis`);
          // A changed provider list is a chance to pick up a driver installed since: the GPU check runs again.
          if (e.affectsConfiguration('residual.providers')) resetProviderProbe();
          void this.unload();
        }
        if (e.affectsConfiguration('residual.chat') && this.model) this.patchState({ chat: this.chatState(this.model) });
      }),
    );
  }

  /** Whether residual.chat is on. */
  get chatOn(): boolean {
    return vscode.workspace.getConfiguration('residual').get<boolean>('chat', false);
  }

  private chatState(model: Model): InspectorState['chat'] {
    try {
      return { on: this.chatOn, template: readChatTemplate(model.checkpoint.dir)?.source };
    } catch (e) {
      return { on: this.chatOn, error: errorMessage(e) };
    }
  }

  /** Model folders already told that they have no chat template (told once per folder). */
  private readonly toldNoTemplate = new Set<string>();

  /**
   * The chat template selections are wrapped in: the model's own when residual.chat is on, else undefined. A model
   * without one runs the plain selection, and the user is told once; a template file that cannot be read is an error.
   */
  chatTemplate(model: Model, on = this.chatOn): ChatTemplate | undefined {
    if (!on) return undefined;
    const dir = model.checkpoint.dir;
    const t = readChatTemplate(dir);
    if (!t && !this.toldNoTemplate.has(dir)) {
      this.toldNoTemplate.add(dir);
      this.log.appendLine(`residual.chat is on, but ${dir} has no chat template: the plain selection is used`);
      void vscode.window.showInformationMessage(`Residual: residual.chat is on, but ${model.info.name} has no chat template (tokenizer_config.json); the plain selection is used.`);
    }
    return t;
  }

  /**
   * The text the model runs for a selection: rendered as a user turn when residual.chat is on (or `on`, for requests
   * about an analysis made in chat form) and the model has a template.
   */
  promptFor(model: Model, text: string, on = this.chatOn): string {
    return chatText(this.chatTemplate(model, on), text);
  }

  /** residual.chat on ↔ off, where it is set (the workspace's value when the workspace sets it). */
  async toggleChat(): Promise<void> {
    await updateWhereSet('chat', !this.chatOn);
    this.log.appendLine(`residual.chat is now ${this.chatOn ? 'on: selections are wrapped as a user turn' : 'off'}`);
  }

  /** The model folder: the setting, else the bundled demo model (trained one first, random fallback second). */
  modelDir(): string {
    const configured = vscode.workspace.getConfiguration('residual').get<string>('modelPath', '').trim();
    if (configured) {
      const ws = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
      return ws && !configured.startsWith('/') && !/^[A-Za-z]:[\\/]/.test(configured) ? vscode.Uri.joinPath(vscode.Uri.file(ws), configured).fsPath : configured;
    }
    return this.bundledDir();
  }

  /** The model that ships with the extension: the trained demo model, else the random fallback. */
  bundledDir(): string {
    for (const name of ['demo', 'tiny-gpt2']) {
      const dir = vscode.Uri.joinPath(this.context.extensionUri, 'models', name).fsPath;
      if (fs.existsSync(`${dir}/config.json`)) return dir;
    }
    return vscode.Uri.joinPath(this.context.extensionUri, 'models', 'demo').fsPath;
  }

  /** The loaded model, loading it (with a progress notification) on first use. */
  get(): Promise<Model> {
    if (this.model) return Promise.resolve(this.model);
    this.loading ??= this.load().finally(() => (this.loading = undefined));
    return this.loading;
  }

  get current(): Model | undefined {
    return this.model;
  }

  /** Model folders the user chose to load although the memory estimate said they would not fit. */
  private readonly memoryOverride = new Set<string>();

  private async load(): Promise<Model> {
    const dir = this.modelDir();
    try {
      return await this.loadOnce(dir);
    } catch (e) {
      if (!(e instanceof ResidualError) || e.code !== 'memory') throw e;
      // The estimate (from the header, nothing read yet) says it will not fit: say so and let the user decide.
      const precision = vscode.workspace.getConfiguration('residual').get<string>('precision', 'auto');
      const choices = ['Load Anyway', ...(precision !== 'float16' ? ['Use Half Precision'] : []), 'Choose Another Model…'];
      const pick = await vscode.window.showWarningMessage(`Residual: ${e.message.replace(`${dir}: `, '')}`, { modal: true }, ...choices);
      if (pick === 'Load Anyway') {
        this.memoryOverride.add(dir);
        return this.loadOnce(dir);
      }
      if (pick === 'Use Half Precision') {
        await vscode.workspace.getConfiguration('residual').update('precision', 'float16', vscode.ConfigurationTarget.Global);
        this.memoryOverride.add(dir);
        return this.loadOnce(dir);
      }
      if (pick === 'Choose Another Model…') void vscode.commands.executeCommand('residual.selectModel');
      throw new ResidualError('loading cancelled: the model would not fit in memory', dir, 'cancelled');
    }
  }

  private async loadOnce(dir: string): Promise<Model> {
    const cfg = vscode.workspace.getConfiguration('residual');
    // A list the user set is tried as given (webgpu even on a software adapter, with a warning); the default order
    // uses a GPU provider only on a real GPU (engine/runtime/providerProbe.ts).
    const inspected = cfg.inspect<string[]>('providers');
    const named = [inspected?.workspaceFolderValue, inspected?.workspaceValue, inspected?.globalValue].find((v) => v !== undefined);
    const providers = named?.length ? named : undefined;
    // Loading the native runtime waits until a model is needed, so activation stays quick.
    silenceOrt();
    this.setState({ status: 'loading', modelDir: dir });
    this.status.text = '$(loading~spin) Residual';
    this.status.show();
    this.log.appendLine(`loading model from ${dir} (providers: ${providers ? providers.join(', ') : `${DEFAULT_PROVIDERS.join(', ')}, the default order`})`);
    try {
      const model = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'Residual: loading model' },
        () =>
          Model.load(dir, {
            providers,
            threads: cfg.get<number>('threads', 0),
            cacheDir: this.cacheDir,
            precision: cfg.get<'auto' | 'float32' | 'float16'>('precision', 'auto'),
            memoryCheck: !this.memoryOverride.has(dir),
            // Lets end-to-end tests exercise the refusal on a small model.
            availableMemory: Number(process.env.RESIDUAL_AVAILABLE_MEMORY) || undefined,
            log: (m) => this.log.appendLine(m),
          }),
      );
      this.model = model;
      this.remember(dir);
      this.log.appendLine(`model ${model.info.name} ready on ${model.provider} in ${model.loadMs.toFixed(0)} ms`);
      const adapter = model.adapter;
      const inUse = model.attempts.find((a) => a.ok);
      if (inUse?.warning) {
        this.log.appendLine(`warning: ${inUse.warning}`);
        void vscode.window.showWarningMessage(`Residual: ${inUse.warning}.`);
      }
      this.status.text = `$(pulse) ${model.provider.toUpperCase()}${adapter?.software ? ' (software)' : ''}`;
      this.status.tooltip = providerTooltip(model.info.name, model.provider, model.attempts);
      this.setState({ status: 'ready', modelDir: dir, model: model.info, provider: model.provider, adapter, attempts: model.attempts, loadMs: model.loadMs, chat: this.chatState(model) });
      if (cfg.get<boolean>('parityCheck', true)) this.startParity(model);
      return model;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      this.log.appendLine(`model load failed: ${message}`);
      this.status.text = '$(error) Residual';
      this.status.tooltip = message;
      this.setState({ status: 'error', modelDir: dir, error: message });
      throw e;
    }
  }

  /** Model folders loaded before, most recent first (for Select Model…). */
  recent(): string[] {
    return this.context.globalState.get<string[]>(RECENT_KEY, []).filter((d) => fs.existsSync(`${d}/config.json`));
  }

  private remember(dir: string): void {
    const list = [dir, ...this.context.globalState.get<string[]>(RECENT_KEY, []).filter((d) => d !== dir)].slice(0, 8);
    void this.context.globalState.update(RECENT_KEY, list);
  }

  /** Whether the model folder comes from residual.modelPath (else it is the bundled model). */
  get configured(): boolean {
    return vscode.workspace.getConfiguration('residual').get<string>('modelPath', '').trim() !== '';
  }

  /** Sets residual.modelPath where it takes effect (updateWhereSet); `undefined`: the bundled model. */
  async setModelPath(dir: string | undefined): Promise<void> {
    const cfg = vscode.workspace.getConfiguration('residual');
    const set = cfg.inspect<string>('modelPath');
    if (dir === undefined) {
      // Back to the bundled model: remove the setting wherever it is set, or the other value would take over.
      if (set?.workspaceValue !== undefined) await cfg.update('modelPath', undefined, vscode.ConfigurationTarget.Workspace);
      if (set?.globalValue !== undefined) await cfg.update('modelPath', undefined, vscode.ConfigurationTarget.Global);
    } else {
      await updateWhereSet('modelPath', dir);
    }
    await this.unload();
  }

  /** The running parity check's token: a new load or an unload stops it. */
  private parityToken?: { isCancellationRequested: boolean };

  /**
   * Parity, in the background: the probe prompt through the loaded model and through the float64 reference (in a
   * worker thread), shown in the Inspector when done. Nothing waits for it.
   */
  private startParity(model: Model): void {
    if (this.parityToken) this.parityToken.isCancellationRequested = true;
    const token = { isCancellationRequested: false };
    this.parityToken = token;
    this.patchState({ parity: { status: 'running' } });
    const current = () => !token.isCancellationRequested && this.model === model;
    checkParity(model, { cancel: token }).then(
      (report) => {
        if (!current()) return;
        this.log.appendLine(parityLine(report).trimEnd());
        this.patchState({ parity: { status: 'done', report } });
      },
      (e: unknown) => {
        if (!current()) return;
        this.log.appendLine(`parity check failed: ${errorMessage(e)}`);
        this.patchState({ parity: { status: 'failed', error: errorMessage(e) } });
      },
    );
  }

  async unload(): Promise<void> {
    if (this.parityToken) this.parityToken.isCancellationRequested = true;
    const m = this.model;
    this.model = undefined;
    this.setState({ status: 'idle', modelDir: this.modelDir() });
    this.status.text = '$(pulse) Residual';
    await m?.dispose();
  }

  setState(patch: Partial<InspectorState> & { status: InspectorState['status'] }): void {
    // A new load replaces everything but the last analysis summary.
    this.state = { last: this.state.last, ...patch };
    this.changed.fire();
  }

  patchState(patch: Partial<InspectorState>): void {
    this.state = { ...this.state, ...patch };
    this.changed.fire();
  }

  dispose(): void {
    this.status.dispose();
    this.changed.dispose();
    void this.model?.dispose();
  }
}

/** The status bar's tooltip: what runs, on which adapter, and why each provider before it did not. */
export function providerTooltip(model: string, provider: string, attempts: readonly ProviderAttempt[]): string {
  const lines = [`Residual: ${model} on the ${provider} execution provider`];
  for (const a of attempts) {
    if (a.ok) {
      const ad = a.adapter;
      lines.push(`${a.provider}: in use${ad ? ` on ${ad.description} (${[ad.vendor, ad.architecture, ad.type].filter(Boolean).join(', ')})` : ''}`);
      if (a.warning) lines.push(`  warning: ${a.warning}`);
    } else lines.push(`${a.provider}: ${a.skipped ? 'not tried' : 'failed'}: ${a.reason}`);
  }
  return lines.join('\n');
}

/**
 * Sets residual.`key` where it takes effect: in the workspace settings when the workspace sets it (a workspace value
 * overrides the user's), else in the user settings. (A per-folder value in a multi-root workspace is left alone.)
 */
async function updateWhereSet(key: string, value: unknown): Promise<void> {
  const cfg = vscode.workspace.getConfiguration('residual');
  const inWorkspace = cfg.inspect(key)?.workspaceValue !== undefined;
  await cfg.update(key, value, inWorkspace ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global);
}
