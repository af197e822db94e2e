/**
 * The Circuit panel's host side: traces attribution graphs of the selection's next-token prediction (a job with a
 * cost gate), keeps the full graph while the webview gets the pruned view, and serves the panel's requests — new
 * thresholds, feature cards, interventions, graph JSON export and import. The engine makes views, cards and files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Attributor } from '../engine/circuits/attribution';
import { FeatureIndex, featureCard } from '../engine/circuits/featureCard';
import { GRAPH_METADATA_FILE, parseGraphJson, writeGraphFiles, type GraphJson, type ImportedGraph } from '../engine/circuits/graph-json';
import { defaultCircuitBudget, DEFAULT_CIRCUIT_MAX_TOKENS, describeEstimate } from '../engine/circuits/estimate';
import { intervene } from '../engine/circuits/interventions';
import { pruneGraph } from '../engine/circuits/prune';
import { loadTranscoders } from '../engine/circuits/transcoders';
import { circuitView, importedGraphJson, labelFeatureOutputs, liveGraphJson, type LiveGraph } from '../engine/circuits/view';
import { errorMessage, isCancelled, ResidualError, throwIfCancelled } from '../engine/errors';
import { formatBytes } from '../engine/memory';
import type { Model } from '../engine/model';
import type { CircuitEvent, CircuitNotification, CircuitRequests, CircuitTargetRequest, PickedVector, ToCircuit } from '../protocol';
import type { AttributionTarget } from '../engine/circuits/graph';
import { loadVectorFile } from '../engine/steering/vectors';
import { labelKey, readLabelFile, type FeatureLabels } from '../engine/circuits/labels';
import { resolveTarget } from '../engine/circuits/targets';
import { unreachable } from '../protocol';
import type { ModelManager } from './modelManager';
import { PanelHost } from './panelHost';
import type { HostJob, Job } from './requests';

export const CIRCUIT_VIEW_TYPE = 'residual.circuit';

const TRACE = 'trace';

export class CircuitPanel extends PanelHost<CircuitRequests, CircuitEvent, CircuitNotification> {
  private live: LiveGraph | undefined;
  private imported: ImportedGraph | undefined;
  private attributor: { key: string; value: Attributor; index: FeatureIndex } | undefined;
  /** Settles when the last trace has finished (cancelled or not): traces share the attributor's sessions. */
  private traceDone: Promise<void> = Promise.resolve();
  /** Counts views built, so a view labelled late never replaces a newer one. */
  private viewSeq = 0;
  /** Set while trace job `jobId` waits for the panel's Start. */
  private startGate: { jobId: number; start: () => void } | undefined;
  /** Top output token of features already labelled ("layer:index" → token text), for the live graph's model. */
  private outputs = new Map<string, string>();
  private lastView: ToCircuit | undefined;
  /** What traces explain (the panel's Target row); kept for later traces. */
  private target: CircuitTargetRequest = { kind: 'top' };
  /** The selection last traced, which a new target retraces. */
  private lastSelection: string | undefined;
  /** Feature labels of the current transcoder set (edited in the card or imported); cleared when the set changes. */
  private labels: FeatureLabels = new Map();

  constructor(
    context: vscode.ExtensionContext,
    private readonly models: ModelManager,
    log: vscode.OutputChannel,
    private readonly transcodersDir: () => string | undefined,
    private readonly steerFeature: (layer: number, index: number, prompt: string | undefined) => void,
  ) {
    super(context, log, { viewType: CIRCUIT_VIEW_TYPE, title: 'Residual: Circuit', entry: 'circuit' }, {
      'circuit/thresholds': { scope: 'view', run: (p) => this.setThresholds(p.node, p.edge) },
      'circuit/card': { scope: 'card', run: (p) => this.card(p.layer, p.index) },
      'circuit/intervene': { scope: 'intervene', run: (p, job) => this.intervene(p.items, p.description, job) },
      'circuit/export': { run: (p) => this.exportFile(p.pinned, p.supernodes) },
      'circuit/import': { run: () => this.pickAndImport() },
      // The selection, not the rendered chat prompt: the Steering panel wraps it itself when residual.chat is on.
      'circuit/steer': { run: async (p) => this.steerFeature(p.layer, p.index, this.live?.selection) },
      'circuit/target': { run: (p) => this.setTarget(p) },
      'circuit/pickVector': { run: () => this.pickVector() },
      'circuit/label': { scope: 'view', run: (p) => this.setLabel(p.layer, p.index, p.label) },
      'circuit/importLabels': { run: () => this.importLabels() },
    });
    this.disposables.push(
      vscode.workspace.onDidChangeConfiguration((e) => {
        const changed = ['circuitMaxTokens', 'circuitMemoryMB', 'circuitConfirmSeconds', 'transcodersPath'].filter((k) => e.affectsConfiguration(`residual.${k}`));
        // Read at the next trace; logged so a user (and the e2e test) can see the change was taken.
        if (changed.length) this.log.appendLine(`settings changed: ${changed.map((k) => `residual.${k}`).join(', ')} apply from the next trace`);
      }),
    );
  }

  protected replay(): ToCircuit[] {
    return this.lastView ? [this.lastView] : [];
  }

  protected async notified(m: CircuitNotification): Promise<void> {
    switch (m.type) {
      case 'ready':
        break;
      case 'circuit/start':
        if (this.startGate?.jobId === m.jobId) this.startGate.start();
        break;
      default:
        unreachable(m);
    }
  }

  protected override post(m: ToCircuit): void {
    if (m.type === 'circuit/view') this.lastView = m;
    super.post(m);
  }

  /** Attribution graph of `text`'s next-token prediction. */
  async trace(text: string): Promise<void> {
    this.show();
    this.lastSelection = text;
    // One trace at a time: the previous one is cancelled and finishes (its sessions are shared) before this starts,
    // and only the current trace may talk to the panel (a cancelled one's late messages would hide this one's Start).
    const job = this.router.begin(TRACE);
    const previous = this.traceDone;
    let finished!: () => void;
    this.traceDone = new Promise((resolve) => (finished = resolve));
    const post = (m: CircuitEvent) => job.current && this.post(m);
    try {
      await previous;
      throwIfCancelled(job.token);
      post({ type: 'circuit/busy', jobId: job.id, what: 'Loading the model and transcoders' });
      const model = await this.models.get();
      const attributor = this.attributorFor(model);
      const settings = vscode.workspace.getConfiguration('residual');
      const maxTokens = settings.get<number>('circuitMaxTokens', DEFAULT_CIRCUIT_MAX_TOKENS);
      // With residual.chat, the graph is of the selection as a user turn (the rendered prompt is the graph's prompt).
      const prompt = this.models.promptFor(model, text);
      const ids = model.tokenizer.encodeForModel(prompt).ids;
      if (ids.length === 0) throw new ResidualError('the selection produced no tokens', 'input');
      // Unlike Analyze (which keeps the last residual.maxTokens tokens), a graph is not cut silently: which tokens it
      // starts from changes every edge, and its cost grows with the length (the estimate shows how much).
      if (ids.length > maxTokens) {
        throw new ResidualError(
          `the selection has ${ids.length} tokens; attribution graphs are limited to residual.circuitMaxTokens = ${maxTokens} ` +
            '(select less, or raise the setting: the panel shows the time and memory it will take before it starts)',
          'input',
        );
      }
      const targetRequest = this.target;
      const target = targetOfRow(model, targetRequest);
      // The cost first: a graph expected to take long, or to exceed the memory budget, waits for Start.
      const memoryMB = settings.get<number>('circuitMemoryMB', 0);
      const budget = memoryMB > 0 ? memoryMB * 1e6 : defaultCircuitBudget();
      const est = attributor.estimate(ids.length);
      const awaitingStart = est.seconds > settings.get<number>('circuitConfirmSeconds', 20) || est.peakBytes > budget;
      this.log.appendLine(`circuit: ${ids.length} tokens, estimate ${describeEstimate(est)}, budget ${formatBytes(budget)}${awaitingStart ? ', waiting for Start' : ''}`);
      post({
        type: 'circuit/estimate',
        jobId: job.id,
        estimate: { tokens: ids.length, seconds: est.seconds, peakMB: est.peakBytes / 1e6, budgetMB: budget / 1e6, activeFeatures: est.activeFeatures, featureRows: est.featureRows, awaitingStart },
      });
      if (awaitingStart) await this.startPressed(job);
      const t0 = performance.now();
      const graph = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'Residual: attribution graph', cancellable: true },
        async (progress, token) => {
          token.onCancellationRequested(() => job.cancel());
          let last = 0;
          return attributor.attribute(ids, {
            target,
            cancel: job.token,
            maxMemoryBytes: budget,
            progress: (message, fraction) => {
              progress.report({ message, increment: Math.max(0, fraction * 100 - last) });
              last = fraction * 100;
              post({ type: 'circuit/busy', jobId: job.id, what: message, fraction });
            },
          });
        },
      );
      throwIfCancelled(job.token);
      const node = this.live?.nodeThreshold ?? 0.8;
      const edge = this.live?.edgeThreshold ?? 0.98;
      this.live = {
        model,
        attributor,
        graph,
        prune: pruneGraph(graph, node, edge),
        prompt,
        selection: text,
        target: targetRequest,
        labels: this.labels,
        tokens: ids.map((i) => model.tokenizer.tokenText(i)),
        nodeThreshold: node,
        edgeThreshold: edge,
        ms: performance.now() - t0,
        budgetMB: budget / 1e6,
        slug: `residual-${Date.now().toString(36)}`,
      };
      this.imported = undefined;
      this.outputs.clear();
      this.dropGraphRequests();
      this.log.appendLine(
        `circuit: ${graph.nFeatures} of ${graph.nActiveFeatures} active features kept (${(100 * graph.influenceCovered).toFixed(1)}% of their influence${graph.memoryLimited ? ', limited by the memory budget' : ''}), ` +
          `N = ${graph.N}, ${this.live.ms.toFixed(0)} ms, peak RSS ${formatBytes(process.resourceUsage().maxRSS * 1024)} (${JSON.stringify(graph.timings_ms)})`,
      );
      await this.postView();
    } catch (e) {
      if (job.current || isCancelled(e)) {
        this.router.logError('circuit trace', e);
        // A trace replaced by a newer one says nothing: the newer one owns the panel.
        if (!job.current && this.router.busy(TRACE)) return;
        this.post({ type: 'circuit/error', message: errorMessage(e) });
      } else this.log.appendLine(`circuit trace replaced by a newer one (${errorMessage(e)})`);
    } finally {
      job.finish();
      finished();
    }
  }

  /**
   * The panel's Target row: checked against the model now (a token that is not one vocabulary token, a vector that
   * does not fit, is refused in the reply), kept for later traces, and the last selection is traced again with it.
   */
  private async setTarget(request: CircuitTargetRequest): Promise<void> {
    const model = await this.models.get();
    targetOfRow(model, request);
    this.target = request;
    this.log.appendLine(`circuit: target set to ${JSON.stringify(request)}`);
    if (this.lastSelection !== undefined) void this.trace(this.lastSelection);
  }

  private async pickVector(): Promise<PickedVector | null> {
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
    const picked = await vscode.window.showOpenDialog({
      canSelectMany: false,
      defaultUri: ws ? vscode.Uri.joinPath(ws, '.residual', 'vectors') : undefined,
      filters: { 'Saved steering vector': ['json'] },
      title: 'Residual: a saved vector to trace',
    });
    if (!picked?.[0]) return null;
    const model = await this.models.get();
    const c = model.config;
    const v = loadVectorFile(picked[0].fsPath, { dModel: c.dModel, nLayers: c.nLayers, name: c.name });
    return { file: picked[0].fsPath, label: v.label, layer: v.layer, hook: v.point };
  }

  /** Resolves when the panel's Start is pressed for `job`; rejects as cancelled when the job is cancelled first. */
  private startPressed(job: HostJob): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const sub = job.token.onCancellationRequested(() => {
        if (this.startGate?.jobId === job.id) this.startGate = undefined;
        sub.dispose();
        reject(new ResidualError('cancelled', undefined, 'cancelled'));
      });
      this.startGate = {
        jobId: job.id,
        start: () => {
          this.startGate = undefined;
          sub.dispose();
          resolve();
        },
      };
    });
  }

  private attributorFor(model: Model): Attributor {
    const dir = this.transcodersDir();
    if (!dir || !fs.existsSync(dir)) {
      throw new ResidualError('no transcoders for this model: set residual.transcodersPath to a folder of transcoders (per-layer, skip or cross-layer; SAELens or circuit-tracer layout)', dir ?? 'residual.transcodersPath', 'missing');
    }
    const key = `${model.checkpoint.dir}|${dir}`;
    if (this.attributor?.key === key && this.attributor.value.model === model) return this.attributor.value;
    void this.attributor?.value.dispose();
    const set = loadTranscoders(dir, model.config);
    // Labels name features of one set.
    if (this.attributor?.value.transcoders.dir !== set.dir) this.labels = new Map();
    this.attributor = { key, value: new Attributor(model, set), index: new FeatureIndex() };
    return this.attributor.value;
  }

  /** The JSON of the current graph (live: pruned at the current thresholds; imported: as read). */
  private json(pinned: string[] = [], supernodes: string[][] = []): GraphJson {
    if (this.imported) return importedGraphJson(this.imported, pinned, supernodes);
    if (!this.live) throw new ResidualError('no graph yet: run “Residual: Trace Circuit for Selection” first', 'circuit');
    return liveGraphJson(this.live, pinned, supernodes);
  }

  /** Posts the current view, its feature nodes labelled with their top output tokens. */
  private async postView(): Promise<void> {
    const seq = ++this.viewSeq;
    const live = this.imported ? undefined : this.live;
    const view = live ? circuitView({ live }) : this.imported ? circuitView({ imported: this.imported }) : undefined;
    if (!view) return;
    if (live) {
      try {
        await labelFeatureOutputs(view, live, this.outputs);
      } catch (e) {
        // Labels are a convenience: the graph is shown without them, and the log says why.
        this.log.appendLine(`circuit: output-token labels unavailable (${errorMessage(e)})`);
      }
    }
    if (seq === this.viewSeq) this.post({ type: 'circuit/view', view });
  }

  private liveOnly(what: string): LiveGraph {
    if (!this.live || this.imported) throw new ResidualError(`${what} need a graph computed here, not an imported file`, 'circuit');
    return this.live;
  }

  private async setThresholds(node: number, edge: number): Promise<void> {
    const l = this.liveOnly('thresholds');
    if (!(node > 0 && node <= 1 && edge > 0 && edge <= 1)) throw new ResidualError(`thresholds must be in (0, 1] (got node ${node}, edge ${edge})`, 'circuit');
    l.nodeThreshold = node;
    l.edgeThreshold = edge;
    l.prune = pruneGraph(l.graph, node, edge);
    await this.postView();
  }

  private async card(layer: number, index: number) {
    const l = this.live;
    if (!l || !this.attributor) throw new ResidualError('feature cards need the transcoders: trace a circuit here first', 'circuit');
    const c = await featureCard(l.attributor, l.graph, layer, index, {
      tokenizer: l.model.tokenizer,
      index: this.attributor.index,
      onWarning: (message) => this.log.appendLine(message),
    });
    return { ...c, label: this.labels.get(labelKey(layer, index)) };
  }

  /**
   * A feature's label, kept for the transcoder set and written into its nodes (`clerp`), so an export carries it.
   * Empty clears it. (Cards, where labels are edited, need a graph traced here.)
   */
  private async setLabel(layer: number, index: number, label: string): Promise<void> {
    const text = label.trim();
    if (text.length > 1000) throw new ResidualError(`labels are limited to 1000 characters (got ${text.length})`, 'label');
    const l = this.liveOnly('labels');
    const t = l.attributor.transcoders.layers[layer];
    if (!t || !(Number.isInteger(index) && index >= 0 && index < t.dSae)) throw new ResidualError(`no feature ${index} in layer ${layer}`, 'label');
    if (text) this.labels.set(labelKey(layer, index), text);
    else this.labels.delete(labelKey(layer, index));
    await this.postView();
  }

  /** Labels from an explanation file for the live graph's transcoder set, checked against its layers and widths. */
  private async importLabels(): Promise<{ count: number; file: string } | null> {
    const l = this.liveOnly('imported labels');
    const picked = await vscode.window.showOpenDialog({
      canSelectMany: false,
      filters: { 'Feature explanations (JSON, JSONL, Neuronpedia export)': ['json', 'jsonl'] },
      title: 'Residual: import feature labels',
    });
    if (!picked?.[0]) return null;
    const read = readLabelFile(picked[0].fsPath, l.attributor.transcoders.layers.map((t) => t.dSae));
    for (const [k, v] of read) this.labels.set(k, v);
    this.log.appendLine(`circuit: ${read.size} labels imported from ${picked[0].fsPath}`);
    await this.postView();
    return { count: read.size, file: path.basename(picked[0].fsPath) };
  }

  private async intervene(items: { layer: number; pos: number; feature: number; value: number }[], description: string, job: Job) {
    const l = this.liveOnly('interventions');
    throwIfCancelled(job.token);
    const r = await intervene(l.attributor, l.graph, items);
    return {
      description,
      notInGraph: r.notInGraph.length,
      rows: r.logits.map((x) => ({
        token: x.label ?? l.model.tokenizer.tokenText(x.id),
        baseProb: x.baseProb,
        newProb: x.newProb,
        base: x.baseLogit,
        after: x.newLogit,
        actual: x.actualDemeaned,
        predictedDirect: x.predictedDirect,
        predictedPaths: x.predictedPaths,
      })),
    };
  }

  private async exportFile(pinned: string[], supernodes: string[][]): Promise<boolean> {
    const json = this.json(pinned, supernodes);
    const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
    const target = await vscode.window.showSaveDialog({
      defaultUri: ws ? vscode.Uri.joinPath(ws, `${json.metadata.slug}.json`) : undefined,
      filters: { 'Attribution graph (circuit-tracer / Neuronpedia JSON)': ['json'] },
      title: 'Residual: export the attribution graph',
    });
    if (!target) return false;
    if (target.scheme === 'file') {
      // Beside it, circuit-tracer's graph-metadata.json lists the folder's graphs, so the folder opens in its viewer.
      const { slug } = writeGraphFiles(target.fsPath, json);
      void vscode.window.showInformationMessage(
        `Residual: wrote ${path.basename(target.fsPath)} (${json.nodes.length} nodes, ${json.links.length} links; graph "${slug}" listed in ${GRAPH_METADATA_FILE}).`,
      );
    } else {
      await vscode.workspace.fs.writeFile(target, new TextEncoder().encode(JSON.stringify(json)));
      void vscode.window.showInformationMessage(`Residual: wrote ${path.basename(target.fsPath)} (${json.nodes.length} nodes, ${json.links.length} links).`);
    }
    return true;
  }

  private async pickAndImport(): Promise<boolean> {
    const picked = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'Attribution graph JSON': ['json'] }, title: 'Residual: open an attribution graph' });
    if (!picked?.[0]) return false;
    await this.readGraphFile(picked[0]); // a failure goes back in the reply
    return true;
  }

  /** Opens a circuit-tracer / Neuronpedia graph JSON file (the Open Graph command: errors are shown in the panel). */
  async importFile(uri: vscode.Uri): Promise<void> {
    this.show();
    try {
      await this.readGraphFile(uri);
    } catch (e) {
      this.router.logError('circuit import', e);
      this.post({ type: 'circuit/error', message: errorMessage(e) });
    }
  }

  private async readGraphFile(uri: vscode.Uri): Promise<void> {
    const bytes = await vscode.workspace.fs.readFile(uri);
    if (bytes.length > 100 * 1024 * 1024) throw new ResidualError('graph files are limited to 100 MiB (as Neuronpedia does)', uri.fsPath);
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new ResidualError(`not valid JSON (${(e as Error).message})`, uri.fsPath);
    }
    this.imported = parseGraphJson(json, uri.fsPath);
    this.dropGraphRequests();
    await this.postView();
  }

  /** A new graph replaces the shown one: cards, interventions and re-prunes of the old one would answer for it. */
  private dropGraphRequests(): void {
    for (const scope of ['card', 'intervene', 'view']) this.router.cancelScope(scope);
  }

  protected override panelClosed(): void {
    // Nobody can press Start or see the graph any more.
    this.router.cancelScope(TRACE);
  }

  override dispose(): void {
    super.dispose();
    void this.attributor?.value.dispose();
  }
}

/** The panel's target as the engine's: typed tokens (exactly one vocabulary token each), a vector read and checked. */
function targetOfRow(model: Model, r: CircuitTargetRequest): AttributionTarget {
  return resolveTarget(model, r, { target: 'target token', contrast: 'contrast token', layer: 'direction layer', position: 'direction position' }, { typed: true });
}
