/**
 * The Activations panel's Features tab, host side: the residual-stream SAE folder (the `residual.saePath` setting, or
 * one picked for the session), opened once per folder and model with its encoder sessions, and what it reads on the
 * shown analysis (kept for that analysis' cards).
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { cardOf, FeatureIndex } from '../engine/circuits/featureCard';
import { ResidualError, type CancelToken } from '../engine/errors';
import type { FeatureEncoder } from '../engine/circuits/features';
import type { Model } from '../engine/model';
import { activationName, activationsOf, decoderLogits, openResidualSaes, readSaeFeatures, saeEncoder, saeWarning, strongestFeatures, topAt, type ResidualSae, type ResidualSaeSet, type SaeReading } from '../engine/sae';
import { featureVector, type SteeringVector } from '../engine/steering/vectors';
import type { FeatureCard, SaeFeatureReading, SaeInfo } from '../protocol';

/** Features listed per position, and rows of the prompt-wide table. */
const TOP_PER_POSITION = 8;
const STRONGEST = 12;

interface Opened {
  key: string;
  set: ResidualSaeSet;
  encoder: FeatureEncoder;
  index: FeatureIndex;
}

export class SaeLens implements vscode.Disposable {
  /** A folder picked in the panel; it wins over the setting for this session. */
  private picked: string | undefined;
  private opened: Opened | undefined;
  /** The last reading, for cards: which analysis (job id) and layer it belongs to. */
  private reading: { analysis: number; sae: ResidualSae; r: SaeReading } | undefined;

  constructor(private readonly log: vscode.OutputChannel) {}

  /** The SAE folder: the one picked this session, else the setting (undefined: none chosen). */
  dir(): string | undefined {
    if (this.picked) return this.picked;
    const configured = vscode.workspace.getConfiguration('residual').get<string>('saePath', '').trim();
    return configured || undefined;
  }

  /** Shows VS Code's folder dialog; the folder is checked by the next read (its message goes to the panel). */
  async choose(): Promise<string | undefined> {
    const current = this.dir();
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
    const picked = await vscode.window.showOpenDialog({
      canSelectFiles: false,
      canSelectFolders: true,
      canSelectMany: false,
      defaultUri: current ? vscode.Uri.file(path.dirname(current)) : ws,
      title: 'Residual: a residual-stream SAE folder (SAELens: cfg.json + sae_weights.safetensors, or one subfolder per layer)',
      openLabel: 'Use this SAE',
    });
    if (!picked?.[0]) return undefined;
    this.picked = picked[0].fsPath;
    this.log.appendLine(`SAE folder: ${this.picked}`);
    return this.picked;
  }

  private async open(model: Model): Promise<Opened> {
    const dir = this.dir();
    if (!dir) throw new ResidualError('no residual-stream SAE chosen: pick an SAE folder (or set residual.saePath)', 'Features');
    const key = `${path.resolve(dir)}|${model.info.dir}`;
    if (this.opened?.key === key) return this.opened;
    await this.release();
    const set = openResidualSaes(dir, model.config);
    this.opened = { key, set, encoder: saeEncoder(set), index: new FeatureIndex() };
    this.log.appendLine(`SAE folder ${set.dir}: layers ${set.available.join(', ')} (${set.scan})`);
    return this.opened;
  }

  /** What the SAE at `layer` (default: the folder's last layer) finds on the analysis; null: no SAE chosen. */
  async read(model: Model, analysisId: number, ids: number[], layer: number | undefined, cancel: CancelToken): Promise<SaeFeatureReading | null> {
    if (!this.dir()) return null;
    const o = await this.open(model);
    const l = layer ?? o.set.available[o.set.available.length - 1];
    const sae = o.set.layers[l];
    if (!sae) throw new ResidualError(`the SAE folder has no SAE for layer ${l} (it has layers ${o.set.available.join(', ')})`, o.set.dir);
    const t0 = performance.now();
    const r = await readSaeFeatures(model, sae, o.encoder, ids, cancel);
    this.reading = { analysis: analysisId, sae, r };
    const warning = saeWarning(sae, r);
    this.log.appendLine(`SAE ${sae.hook}: ${ids.length} tokens, mean L0 ${(r.l0.reduce((a, b) => a + b, 0) / ids.length).toFixed(1)}, FVU ${r.fvu.toPrecision(3)} in ${(performance.now() - t0).toFixed(0)} ms`);
    if (warning) this.log.appendLine(`SAE warning: ${warning}`);
    return {
      sae: this.info(o.set, sae),
      top: ids.map((_, p) => topAt(r, p, TOP_PER_POSITION)),
      l0: r.l0,
      strongest: strongestFeatures(r, STRONGEST).map(([index, max]) => ({ index, max, acts: activationsOf(r, index) })),
      fvu: r.fvu,
      reportedFvu: sae.reportedFvu,
      skipped: r.skipped,
      warning,
    };
  }

  private info(set: ResidualSaeSet, sae: ResidualSae): SaeInfo {
    return {
      dir: set.dir,
      scan: set.scan,
      layer: sae.layer,
      layers: set.available,
      hook: sae.hook,
      dSae: sae.dSae,
      activation: activationName(sae.activation),
      normalize: sae.normalize,
      applyBDecToInput: sae.applyBDecToInput,
    };
  }

  /** A feature's card on the analysis the last reading was made for. */
  async card(model: Model, analysisId: number, ids: number[], layer: number, index: number): Promise<FeatureCard> {
    const o = await this.open(model);
    const reading = this.reading;
    if (!reading || reading.analysis !== analysisId || reading.sae.layer !== layer || o.set.layers[layer] !== reading.sae) {
      throw new ResidualError('the SAE reading shown belongs to another analysis or layer: read the features again', 'Features');
    }
    const sae = reading.sae;
    const logits = decoderLogits(model, sae, index, 10);
    const entry = o.index.entry(sae, index, (m) => this.log.appendLine(`SAE: ${m}`));
    return cardOf({ layer, index, activations: activationsOf(reading.r, index), ids, logits, entry, tokenDisplay: (v) => model.tokenizer.tokenDisplay(v) });
  }

  /** The steering vector of one feature: its decoder row, at the SAE's hook. */
  vector(layer: number, index: number): SteeringVector {
    const dir = this.dir();
    if (!dir) throw new ResidualError('no residual-stream SAE chosen', 'Features');
    return featureVector(dir, layer, index);
  }

  private async release(): Promise<void> {
    const o = this.opened;
    this.opened = undefined;
    this.reading = undefined;
    if (o) await o.encoder.dispose();
  }

  dispose(): void {
    void this.release();
  }
}
