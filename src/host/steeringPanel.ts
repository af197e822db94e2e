/**
 * The Steering panel's host side: holds the current vector (its values never cross to the webview), builds vectors
 * from a transcoder feature, contrastive pairs in the active editor, or a saved file, and runs the next-token effect,
 * generation and sweeps on the loaded model. One request at a time; a new one cancels the old.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { residualColumn, trackPanel } from './panelColumn';
import { isCancelled, ResidualError } from '../engine/errors';
import type { SteeringSpec, SteeringVector } from '../engine/results';
import { compareGeneration, nextTokenEffect, parsePositions, sweep } from '../engine/steering/steer';
import { contrastiveVector, featureVector, loadVectorFile, parsePairs, saveVectorFile } from '../engine/steering/vectors';
import type { FromSteering, SteerSettings, SteeringState, ToSteering } from '../protocol';
import type { ModelManager } from './modelManager';
import { webviewHtml, webviewOptions } from './webviewHtml';

export const STEERING_VIEW_TYPE = 'residual.steering';

export class SteeringPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private vector: SteeringVector | undefined;
  private prompt: string | undefined;
  private running: vscode.CancellationTokenSource | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly models: ModelManager,
    private readonly log: vscode.OutputChannel,
  ) {
    this.disposables.push(
      vscode.window.registerWebviewPanelSerializer(STEERING_VIEW_TYPE, { deserializeWebviewPanel: async (p) => this.adopt(p) }),
      models.onDidChange(() => this.pushState()),
    );
  }

  /** The text steering runs on (set from the last analysis or the current selection). */
  setPrompt(text: string): void {
    this.prompt = text;
    this.pushState();
  }

  /** Opens the panel; with `vector`, makes it the current one (e.g. from a feature card). */
  show(vector?: SteeringVector): void {
    if (vector) this.vector = vector;
    if (this.panel) this.panel.reveal(undefined, false);
    else {
      const panel = vscode.window.createWebviewPanel(STEERING_VIEW_TYPE, 'Residual: Steering', residualColumn(), {
        ...webviewOptions(this.context.extensionUri),
        retainContextWhenHidden: true,
      });
      this.adopt(panel);
    }
    this.pushState();
  }

  private adopt(panel: vscode.WebviewPanel): void {
    this.panel = panel;
    trackPanel(panel);
    panel.iconPath = vscode.Uri.joinPath(this.context.extensionUri, 'media', 'residual.svg');
    panel.webview.options = webviewOptions(this.context.extensionUri);
    panel.webview.html = webviewHtml(panel.webview, this.context.extensionUri, 'steering', 'Residual: Steering');
    const subs = [
      panel.webview.onDidReceiveMessage((m: FromSteering) => void this.onMessage(m)),
      panel.onDidDispose(() => {
        this.panel = undefined;
        this.running?.cancel();
        subs.forEach((d) => d.dispose());
      }),
    ];
  }

  private post(m: ToSteering): void {
    void this.panel?.webview.postMessage(m);
  }

  private pushState(): void {
    const m = this.models.current;
    const v = this.vector;
    const state: SteeringState = {
      model: m ? { name: m.info.name, nLayers: m.config.nLayers, dModel: m.config.dModel } : undefined,
      prompt: this.prompt,
      transcoders: this.transcodersDir(),
      vector: v && {
        label: v.label,
        source: v.source,
        layer: v.layer,
        point: v.point,
        norm: Math.hypot(...v.vector),
        dModel: v.vector.length,
        provenance: v.provenance,
      },
    };
    this.post({ type: 'steer/state', state });
  }

  /** The transcoders folder: the setting, else `transcoders/` beside the model. */
  transcodersDir(): string | undefined {
    const configured = vscode.workspace.getConfiguration('residual').get<string>('transcodersPath', '').trim();
    if (configured) return configured;
    return path.join(this.models.modelDir(), 'transcoders');
  }

  private async onMessage(m: FromSteering): Promise<void> {
    if (m.type === 'ready') {
      // Load the model so the panel can show its layers.
      void this.models.get().then(() => this.pushState(), () => this.pushState());
      this.pushState();
      return;
    }
    if (m.type === 'steer/cancel') {
      this.running?.cancel();
      return;
    }
    this.running?.cancel();
    const cts = new vscode.CancellationTokenSource();
    this.running = cts;
    try {
      const model = await this.models.get();
      switch (m.type) {
        case 'steer/useSelection': {
          const ed = vscode.window.visibleTextEditors.find((e) => !e.selection.isEmpty) ?? vscode.window.activeTextEditor;
          if (!ed) throw new ResidualError('no editor is open: select the prompt text in an editor first', 'steering');
          this.setPrompt(ed.selection.isEmpty ? ed.document.lineAt(ed.selection.active.line).text : ed.document.getText(ed.selection));
          break;
        }
        case 'steer/vectorFromFeature': {
          const dir = this.transcodersDir();
          if (!dir) throw new ResidualError('no transcoders folder: set residual.transcodersPath', 'steering');
          this.vector = featureVector(dir, m.layer, m.index);
          this.log.appendLine(`steering vector: ${this.vector.label}`);
          this.pushState();
          break;
        }
        case 'steer/vectorFromPairs': {
          const ed = vscode.window.visibleTextEditors.find((e) => /^\s*[+-]\s/m.test(e.document.getText())) ?? vscode.window.activeTextEditor;
          if (!ed) throw new ResidualError('open a pairs file in an editor (lines "+ positive prompt" and "- negative prompt")', 'steering');
          const file = vscode.workspace.asRelativePath(ed.document.uri);
          const pairs = parsePairs(ed.document.getText(), file);
          this.post({ type: 'steer/busy', what: `Averaging ${pairs.length} pairs` });
          this.vector = await contrastiveVector(model, pairs, m.layer, m.point);
          this.vector.provenance = { ...this.vector.provenance, file };
          this.log.appendLine(`steering vector: ${this.vector.label} from ${file}`);
          this.post({ type: 'steer/busy', what: '' });
          this.pushState();
          break;
        }
        case 'steer/openVector': {
          const picked = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'Steering vectors': ['json', 'safetensors'] }, title: 'Residual: open a saved steering vector' });
          if (!picked?.[0]) return;
          this.vector = loadVectorFile(picked[0].fsPath, model.config.dModel);
          this.pushState();
          break;
        }
        case 'steer/saveVector': {
          if (!this.vector) throw new ResidualError('no vector to save yet: build one first', 'steering');
          const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
          const defaultUri = ws ? vscode.Uri.joinPath(ws, '.residual', 'vectors', `${this.vector.label.replace(/[^\w.-]+/g, '_')}.json`) : undefined;
          const target = await vscode.window.showSaveDialog({ defaultUri, filters: { 'Steering vector (JSON + safetensors)': ['json'] }, title: 'Residual: save the steering vector' });
          if (!target) return;
          saveVectorFile(target.fsPath, { ...this.vector, provenance: { ...this.vector.provenance, model: model.info.name } });
          void vscode.window.showInformationMessage(`Residual: saved ${path.basename(target.fsPath)} and its .safetensors beside it.`);
          break;
        }
        case 'steer/effect': {
          const spec = this.spec(m.settings);
          this.post({ type: 'steer/busy', what: 'Computing the next-token effect' });
          const effect = await nextTokenEffect(model, this.needPrompt(), spec);
          this.post({ type: 'steer/effect', effect, settings: m.settings });
          break;
        }
        case 'steer/generate': {
          const spec = this.spec(m.settings);
          this.post({ type: 'steer/busy', what: 'Generating' });
          const result = await compareGeneration(model, this.needPrompt(), { maxNewTokens: m.maxNewTokens, temperature: m.temperature, topP: m.topP, seed: m.seed }, spec, {
            cancel: cts.token,
          });
          this.post({ type: 'steer/generation', result, settings: m.settings });
          break;
        }
        case 'steer/sweep': {
          const spec = this.spec(m.settings);
          if (!m.strengths.length) throw new ResidualError('give at least one strength (comma-separated numbers)', 'steering');
          this.post({ type: 'steer/busy', what: 'Sweeping' });
          const result = await sweep(
            model,
            this.needPrompt(),
            spec.vector,
            { layers: m.layers, strengths: m.strengths, point: spec.point, relative: spec.relative ?? false, targetText: m.target || undefined, neutralText: m.neutral, positions: spec.positions },
            { cancel: cts.token, onProgress: (done, total) => this.post({ type: 'steer/progress', done, total }) },
          );
          this.post({ type: 'steer/sweep', result });
          break;
        }
      }
    } catch (e) {
      const message = isCancelled(e) ? 'Cancelled.' : e instanceof ResidualError ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`;
      this.log.appendLine(`steering ${m.type}: ${message}`);
      this.post({ type: 'steer/error', message });
    } finally {
      if (this.running === cts) this.running = undefined;
      cts.dispose();
    }
  }

  private spec(s: SteerSettings): SteeringSpec {
    if (!this.vector) throw new ResidualError('no steering vector yet: use a transcoder feature, contrastive pairs or a saved vector', 'steering');
    if (!Number.isFinite(s.strength)) throw new ResidualError(`strength must be a number (got ${s.strength})`, 'steering');
    return { vector: this.vector.vector, layer: s.layer, point: s.point, strength: s.strength, relative: s.relative, positions: parsePositions(s.positions) };
  }

  private needPrompt(): string {
    if (!this.prompt) throw new ResidualError('no prompt: analyse a selection first, or press "Use current selection"', 'steering');
    return this.prompt;
  }

  dispose(): void {
    this.running?.cancel();
    this.panel?.dispose();
    this.disposables.forEach((d) => d.dispose());
  }
}
