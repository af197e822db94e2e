/**
 * Choosing the model: Select Model… (the bundled model, recent and downloaded models, or a folder), loading the choice
 * and saying how it went, and the error message that offers a way back when the configured model fails.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { errorMessage } from '../engine/errors';
import { downloadedModels } from './download';
import type { ModelManager } from './modelManager';

export class ModelCommands {
  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly models: ModelManager,
    private readonly log: vscode.OutputChannel,
  ) {}

  /**
   * Select Model…: the bundled model, models loaded before, models downloaded with Download Model…, or a folder to
   * browse for. The choice goes to the user settings (or the workspace's, when the workspace already sets it).
   */
  async selectModel(): Promise<void> {
    type Item = vscode.QuickPickItem & { dir?: string; action?: 'bundled' | 'browse' };
    const models = this.models;
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
    add(downloadedModels(this.context), 'downloaded');
    items.push({ label: '', kind: vscode.QuickPickItemKind.Separator }, { label: '$(folder-opened) Browse…', detail: 'a Hugging Face checkpoint folder: config.json, model.safetensors, tokenizer.json', action: 'browse' });
    const pick = await vscode.window.showQuickPick(items, { title: 'Residual: Select Model', placeHolder: 'the model Residual analyses', matchOnDetail: true });
    if (!pick) return;
    let dir = pick.dir;
    if (pick.action === 'browse') {
      const picked = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Use this model', title: 'Residual: choose a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)' });
      if (!picked?.[0]) return;
      dir = picked[0].fsPath;
    }
    await this.useModel(dir);
  }

  /** Loads `dir` (undefined: the bundled model) and says how it went; a failure offers the way back. */
  async useModel(dir: string | undefined): Promise<void> {
    await this.models.setModelPath(dir);
    try {
      await this.models.get();
      void vscode.window.showInformationMessage(`Residual: loaded ${this.models.current?.info.name} on ${this.models.current?.provider}.`);
    } catch (e) {
      void this.offerRecovery(e);
    }
  }

  /** An error message that, when the configured model is what failed, offers the bundled model or another one. */
  async offerRecovery(e: unknown): Promise<void> {
    const modelFailed = !this.models.current && this.models.configured;
    const actions = modelFailed ? ['Use Bundled Model', 'Select Model…', 'Show Log'] : ['Show Log'];
    const a = await vscode.window.showErrorMessage(`Residual: ${errorMessage(e)}`, ...actions);
    if (a === 'Show Log') this.log.show();
    else if (a === 'Use Bundled Model') await this.useModel(undefined);
    else if (a === 'Select Model…') await this.selectModel();
  }
}
