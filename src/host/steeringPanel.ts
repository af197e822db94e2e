/**
 * The Steering panel's host side: holds the current vector (its values never cross to the webview), builds vectors
 * from a transcoder feature, contrastive pairs in an editor, or a saved file, and runs the next-token effect,
 * generation and sweeps on the loaded model. Runs share one cancellation scope (a new run cancels the previous run),
 * building a vector another; taking the selection or saving cancels nothing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ResidualError } from '../engine/errors';
import type { Model } from '../engine/model';
import type { SteeringSpec, SteeringVector } from '../engine/results';
import { compareGeneration, meanResidNorm, nextTokenEffect, parsePositions, steerScale, sweep } from '../engine/steering/steer';
import { controlVectorLayer, steeringVectorFromGguf, writeControlVector } from '../engine/steering/gguf';
import { contrastiveVector, featureVector, loadVectorFile, parsePairs, saveVectorFile } from '../engine/steering/vectors';
import type { SteerSettings, SteeringEvent, SteeringRequests, SteeringState, ToSteering } from '../protocol';
import type { ModelManager } from './modelManager';
import { PanelHost } from './panelHost';
import type { EditorSelection } from './selection';

export const STEERING_VIEW_TYPE = 'residual.steering';

export class SteeringPanel extends PanelHost<SteeringRequests, SteeringEvent, { type: 'ready' }> {
  private vector: SteeringVector | undefined;
  private prompt: string | undefined;

  constructor(
    context: vscode.ExtensionContext,
    private readonly models: ModelManager,
    log: vscode.OutputChannel,
    private readonly selection: EditorSelection,
  ) {
    super(context, log, { viewType: STEERING_VIEW_TYPE, title: 'Residual: Steering', entry: 'steering' }, {
      'steer/useSelection': {
        run: async () => {
          const r = this.selection.read('steer with');
          if ('problem' in r) throw new ResidualError(r.problem, 'steering');
          this.setPrompt(r.text);
        },
      },
      'steer/vectorFromFeature': {
        scope: 'vector',
        run: async (p) => {
          const dir = this.transcodersDir();
          if (!dir) throw new ResidualError('no transcoders folder: set residual.transcodersPath', 'steering');
          this.useVector(featureVector(dir, p.layer, p.index));
        },
      },
      'steer/vectorFromPairs': {
        scope: 'vector',
        run: async (p, job) => {
          const model = await this.models.get();
          const ed = vscode.window.visibleTextEditors.find((e) => /^\s*[+-]\s/m.test(e.document.getText())) ?? this.selection.editor();
          if (!ed) throw new ResidualError('open a pairs file in an editor (lines "+ positive prompt" and "- negative prompt")', 'steering');
          const file = vscode.workspace.asRelativePath(ed.document.uri);
          const pairs = parsePairs(ed.document.getText(), file);
          job.progress(0, pairs.length, `Averaging ${pairs.length} pairs`);
          const v = await contrastiveVector(model, pairs, p.layer, p.point, { cancel: job.token });
          if (!job.current) return;
          this.useVector({ ...v, provenance: { ...v.provenance, file } }, ` from ${file}`);
        },
      },
      'steer/openVector': {
        scope: 'vector',
        run: async (_p, job) => {
          const model = await this.models.get();
          const picked = await vscode.window.showOpenDialog({
            canSelectMany: false,
            filters: { 'Steering vectors': ['json', 'safetensors', 'gguf'], 'llama.cpp control vectors': ['gguf'] },
            title: 'Residual: open a saved steering vector or a llama.cpp control vector',
          });
          if (!picked?.[0] || !job.current) return;
          const file = picked[0].fsPath;
          if (/\.gguf$/i.test(file)) {
            const c = model.config;
            const cv = await steeringVectorFromGguf(file, { dModel: c.dModel, nLayers: c.nLayers, name: c.name, architecture: c.architecture });
            for (const w of cv.warnings) void vscode.window.showWarningMessage(`Residual: ${w}`);
            if (job.current) this.useVector({ vector: cv.vector, layer: cv.layer, point: cv.point, label: cv.label, source: 'file', provenance: { file, model_hint: cv.modelHint } });
          } else this.useVector(loadVectorFile(file, model.config.dModel));
        },
      },
      'steer/saveVector': { run: () => this.saveVector() },
      'steer/exportGguf': { run: (p) => this.exportGguf(p.settings) },
      'steer/effect': {
        scope: 'run',
        run: async (p, job) => {
          const { model, spec, prompt } = await this.request(p.settings);
          // "generated" steers only what generation adds: the next token after the prompt is the baseline's.
          const generated = p.settings.positions.trim() === 'generated' ? 1 : 0;
          return { effect: await nextTokenEffect(model, prompt(), spec, 10, { cancel: job.token, generated }), settings: p.settings };
        },
      },
      'steer/generate': {
        scope: 'run',
        run: async (p, job) => {
          const { model, spec, prompt } = await this.request(p.settings);
          const result = await compareGeneration(model, prompt(), { maxNewTokens: p.maxNewTokens, temperature: p.temperature, topP: p.topP, seed: p.seed }, spec, { cancel: job.token });
          return { result, settings: p.settings };
        },
      },
      'steer/sweep': {
        scope: 'run',
        run: async (p, job) => {
          const { model, spec, prompt } = await this.request(p.settings);
          if ((spec.op ?? 'add') !== 'add') throw new ResidualError(`the sweep varies the strength of an added vector; set the operator to add (it is ${spec.op})`, 'steering');
          if (!p.strengths.length) throw new ResidualError('give at least one strength (comma-separated numbers)', 'steering');
          return sweep(
            model,
            prompt(),
            spec.vector,
            { layers: p.layers, strengths: p.strengths, point: spec.point, relative: spec.relative ?? false, targetText: p.target || undefined, neutralText: p.neutral, positions: spec.positions },
            { cancel: job.token, onProgress: (done, total) => job.progress(done, total) },
          );
        },
      },
    });
    this.disposables.push(models.onDidChange(() => this.pushState()));
  }

  /** The text steering runs on (set from the last analysis or the current selection). */
  setPrompt(text: string): void {
    this.prompt = text;
    this.pushState();
  }

  /** Opens the panel; with `vector`, makes it the current one (e.g. from a feature card). */
  open(vector?: SteeringVector): void {
    if (vector) this.vector = vector;
    this.show(false);
    this.pushState();
  }

  private useVector(v: SteeringVector, from = ''): void {
    this.vector = v;
    this.log.appendLine(`steering vector: ${v.label}${from}`);
    this.pushState();
  }

  protected replay(): ToSteering[] {
    return [{ type: 'steer/state', state: this.state() }];
  }

  protected async notified(m: { type: 'ready' }): Promise<void> {
    // Load the model so the panel can show its layers.
    if (m.type === 'ready') void this.models.get().then(() => this.pushState(), () => this.pushState());
  }

  private state(): SteeringState {
    const m = this.models.current;
    const v = this.vector;
    return {
      model: m ? { name: m.info.name, nLayers: m.config.nLayers, dModel: m.config.dModel } : undefined,
      prompt: this.prompt,
      chatTemplate: m && this.models.chatOn ? this.models.state.chat?.template : undefined,
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
  }

  private pushState(): void {
    this.post({ type: 'steer/state', state: this.state() });
  }

  /** The transcoders folder: the setting, else `transcoders/` beside the model. */
  transcodersDir(): string | undefined {
    const configured = vscode.workspace.getConfiguration('residual').get<string>('transcodersPath', '').trim();
    if (configured) return configured;
    return path.join(this.models.modelDir(), 'transcoders');
  }

  private async saveVector(): Promise<void> {
    const model = await this.models.get();
    if (!this.vector) throw new ResidualError('no vector to save yet: build one first', 'steering');
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
    const vectorsDir = ws?.scheme === 'file' ? path.join(ws.fsPath, '.residual', 'vectors') : undefined;
    const defaultUri = ws ? vscode.Uri.joinPath(ws, '.residual', 'vectors', `${this.vector.label.replace(/[^\w.-]+/g, '_')}.json`) : undefined;
    // A new workspace has no .residual/vectors/: it is made so the dialog opens in it (a read-only workspace still
    // lets the user pick another folder), and made again if the save goes there.
    const makeVectorsDir = () => fs.mkdirSync(vectorsDir!, { recursive: true });
    if (vectorsDir) {
      try {
        makeVectorsDir();
      } catch {
        // reported below if the user saves there
      }
    }
    const target = await vscode.window.showSaveDialog({ defaultUri, filters: { 'Steering vector (JSON + safetensors)': ['json'] }, title: 'Residual: save the steering vector' });
    if (!target) return;
    if (vectorsDir && path.resolve(path.dirname(target.fsPath)) === path.resolve(vectorsDir)) {
      try {
        makeVectorsDir();
      } catch (e) {
        throw new ResidualError(`cannot create the folder for steering vectors (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, vectorsDir);
      }
    }
    saveVectorFile(target.fsPath, { ...this.vector, provenance: { ...this.vector.provenance, model: model.info.name } });
    void vscode.window.showInformationMessage(`Residual: saved ${path.basename(target.fsPath)} and its .safetensors beside it.`);
  }

  /**
   * Writes the vector as a llama.cpp control vector at the slot of the panel's layer and point, as stored: llama.cpp
   * scales it (`--control-vector-scaled FILE S`), and the message gives the flag with the scale the panel applies
   * (the strength, or for a relative strength the strength × mean residual norm / ‖vector‖ on this prompt).
   */
  private async exportGguf(settings: SteerSettings): Promise<void> {
    const model = await this.models.get();
    if (!this.vector) throw new ResidualError('no vector to export yet: build one first', 'steering');
    const { layer, point } = settings;
    const op = settings.op ?? 'add';
    if (op !== 'add') throw new ResidualError(`a llama.cpp control vector is added; the ${op} operator has no llama.cpp form: set the operator to add to export`, 'steering');
    const k = controlVectorLayer(layer, point); // refused before the dialog when there is no slot
    const { spec, prompt } = this.specFor(settings, model);
    const strength = spec.relative ? steerScale(spec, await meanResidNorm(model, model.tokenizer.encodeForModel(prompt()).ids, layer, point)) : spec.strength;
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
    const defaultUri = ws ? vscode.Uri.joinPath(ws, `${this.vector.label.replace(/[^\w.-]+/g, '_')}.gguf`) : undefined;
    const target = await vscode.window.showSaveDialog({ defaultUri, filters: { 'llama.cpp control vector': ['gguf'] }, title: 'Residual: export for llama.cpp (--control-vector)' });
    if (!target) return;
    writeControlVector(target.fsPath, this.vector.vector, layer, point, { architecture: model.config.architecture });
    const name = path.basename(target.fsPath);
    this.log.appendLine(`exported ${name}: direction.${k} (blocks.${layer}.${point}), ${this.vector.vector.length} values`);
    void vscode.window.showInformationMessage(`Residual: wrote ${name} (direction.${k}). In llama.cpp: --control-vector-scaled ${name} ${Number(strength.toPrecision(6))}`);
  }

  /** The model and, for the panel's settings, the spec and the text the model runs (see specFor). */
  private async request(s: SteerSettings) {
    const model = await this.models.get();
    return { model, ...this.specFor(s, model) };
  }

  /**
   * The spec of the panel's settings, and the text the model runs: asked for once, when first needed (positions
   * "generated" count its tokens), so a missing vector is reported before a missing prompt.
   */
  private specFor(s: SteerSettings, model: Model): { spec: SteeringSpec; prompt: () => string } {
    if (!this.vector) throw new ResidualError('no steering vector yet: use a transcoder feature, contrastive pairs or a saved vector', 'steering');
    let text: string | undefined;
    const prompt = () => (text ??= this.needPrompt(model));
    const op = s.op ?? 'add';
    if (op === 'add' && !Number.isFinite(s.strength)) throw new ResidualError(`strength must be a number (got ${s.strength})`, 'steering');
    const positions = parsePositions(s.positions, () => model.tokenizer.encodeForModel(prompt()).ids.length);
    const spec: SteeringSpec = {
      vector: this.vector.vector,
      layer: s.layer,
      point: s.point,
      strength: op === 'add' ? s.strength : 0,
      relative: op === 'add' && s.relative,
      positions,
      op,
      ...(op === 'set' || op === 'cap' ? { value: s.value } : {}),
    };
    return { spec, prompt };
  }

  /** The text the model runs: the prompt, as a user turn of the chat template when residual.chat is on. */
  private needPrompt(model: Model): string {
    if (!this.prompt) throw new ResidualError('no prompt: analyse a selection first, or press "Use current selection"', 'steering');
    return this.models.promptFor(model, this.prompt);
  }
}
