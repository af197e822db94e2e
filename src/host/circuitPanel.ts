/**
 * The Circuit panel's host side: attribution graphs of the selection's next-token prediction from per-layer
 * transcoders, pruned live at the thresholds the user sets, feature cards, interventions, and graph JSON export and
 * import (the circuit-tracer / Neuronpedia format). The full adjacency stays here; the webview gets the pruned view.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { residualColumn, trackPanel } from './panelColumn';
import { activeActivation, Attributor, type AttributionGraph } from '../engine/circuits/attribution';
import { parseGraphJson, toGraphJson, type GraphJson, type ImportedGraph } from '../engine/circuits/graph-json';
import { defaultCircuitBudget, DEFAULT_CIRCUIT_MAX_TOKENS, describeEstimate } from '../engine/circuits/estimate';
import { formatBytes } from '../engine/memory';
import { intervene } from '../engine/circuits/interventions';
import { pruneGraph, type PruneResult } from '../engine/circuits/prune';
import { loadTranscoders, type TranscoderSet } from '../engine/circuits/transcoders';
import { isCancelled, ResidualError, throwIfCancelled } from '../engine/errors';
import type { Model } from '../engine/model';
import type { CircuitView, FeatureCard, FromCircuit, ToCircuit } from '../protocol';
import type { ModelManager } from './modelManager';
import { webviewHtml, webviewOptions } from './webviewHtml';

export const CIRCUIT_VIEW_TYPE = 'residual.circuit';

interface Live {
  model: Model;
  set: TranscoderSet;
  attributor: Attributor;
  graph: AttributionGraph;
  prune: PruneResult;
  prompt: string;
  tokens: string[];
  nodeThreshold: number;
  edgeThreshold: number;
  ms: number;
  /** Names this graph (export, and the panel's zoom and card belong to it) for as long as it is shown. */
  slug: string;
}

export class CircuitPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private live: Live | undefined;
  private imported: ImportedGraph | undefined;
  private attributor: { key: string; value: Attributor } | undefined;
  private running: vscode.CancellationTokenSource | undefined;
  /** Settles when the last trace has finished (cancelled or not). */
  private traceDone: Promise<void> = Promise.resolve();
  /** Counts views built, so a view labelled late never replaces a newer one. */
  private viewSeq = 0;
  /** Set while a traced graph waits for the panel's Start. */
  private startGate: (() => void) | undefined;
  private budgetMB = 0;
  /** Top output token of features already labelled ("layer:index" → token text), for the live graph's model. */
  private outputs = new Map<string, string>();
  private lastView: ToCircuit | undefined;
  private readonly disposables: vscode.Disposable[] = [];
  private indexCache = new Map<string, Map<number, IndexEntry> | null>();

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly models: ModelManager,
    private readonly log: vscode.OutputChannel,
    private readonly transcodersDir: () => string | undefined,
    private readonly steerFeature: (layer: number, index: number, prompt: string | undefined) => void,
  ) {
    this.disposables.push(
      vscode.window.registerWebviewPanelSerializer(CIRCUIT_VIEW_TYPE, { deserializeWebviewPanel: async (p) => this.adopt(p) }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        const changed = ['circuitMaxTokens', 'circuitMemoryMB', 'circuitConfirmSeconds'].filter((k) => e.affectsConfiguration(`residual.${k}`));
        // Read at the next trace; logged so a user (and the e2e test) can see the change was taken.
        if (changed.length) this.log.appendLine(`settings changed: ${changed.map((k) => `residual.${k}`).join(', ')} apply from the next trace`);
      }),
    );
  }

  show(): void {
    if (this.panel) this.panel.reveal(undefined, true);
    else
      this.adopt(
        vscode.window.createWebviewPanel(CIRCUIT_VIEW_TYPE, 'Residual: Circuit', { viewColumn: residualColumn(), preserveFocus: true }, {
          ...webviewOptions(this.context.extensionUri),
          retainContextWhenHidden: true,
        }),
      );
  }

  private adopt(panel: vscode.WebviewPanel): void {
    this.panel = panel;
    trackPanel(panel);
    panel.iconPath = vscode.Uri.joinPath(this.context.extensionUri, 'media', 'residual.svg');
    panel.webview.options = webviewOptions(this.context.extensionUri);
    panel.webview.html = webviewHtml(panel.webview, this.context.extensionUri, 'circuit', 'Residual: Circuit');
    const subs = [
      panel.webview.onDidReceiveMessage((m: FromCircuit) => void this.onMessage(m)),
      panel.onDidDispose(() => {
        this.panel = undefined;
        // Nobody can press Start or see the result any more.
        this.running?.cancel();
        subs.forEach((d) => d.dispose());
      }),
    ];
  }

  private post(m: ToCircuit): void {
    if (m.type === 'circuit/view') this.lastView = m;
    void this.panel?.webview.postMessage(m);
  }

  /** Attribution graph of `text`'s next-token prediction. */
  async trace(text: string): Promise<void> {
    this.show();
    // One trace at a time: the previous one is cancelled and finishes (its sessions are shared) before this starts,
    // and only the current trace may talk to the panel (a cancelled one's late messages would hide this one's Start).
    this.running?.cancel();
    const previous = this.traceDone;
    const cts = new vscode.CancellationTokenSource();
    this.running = cts;
    let finished!: () => void;
    this.traceDone = new Promise((resolve) => (finished = resolve));
    const current = () => this.running === cts;
    const post = (m: ToCircuit) => current() && this.post(m);
    try {
      await previous;
      throwIfCancelled(cts.token);
      post({ type: 'circuit/busy', what: 'Loading the model and transcoders' });
      const model = await this.models.get();
      const attributor = this.attributorFor(model);
      const settings = vscode.workspace.getConfiguration('residual');
      const maxTokens = settings.get<number>('circuitMaxTokens', DEFAULT_CIRCUIT_MAX_TOKENS);
      const ids = model.tokenizer.encodeForModel(text).ids;
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
      // The cost first: a graph expected to take long, or to exceed the memory budget, waits for Start.
      const memoryMB = settings.get<number>('circuitMemoryMB', 0);
      const budget = memoryMB > 0 ? memoryMB * 1e6 : defaultCircuitBudget();
      const est = attributor.estimate(ids.length);
      const awaitingStart = est.seconds > settings.get<number>('circuitConfirmSeconds', 20) || est.peakBytes > budget;
      this.log.appendLine(`circuit: ${ids.length} tokens, estimate ${describeEstimate(est)}, budget ${formatBytes(budget)}${awaitingStart ? ', waiting for Start' : ''}`);
      post({
        type: 'circuit/estimate',
        estimate: { tokens: ids.length, seconds: est.seconds, peakMB: est.peakBytes / 1e6, budgetMB: budget / 1e6, activeFeatures: est.activeFeatures, featureRows: est.featureRows, awaitingStart },
      });
      if (awaitingStart) await this.startPressed(cts.token);
      const t0 = performance.now();
      const graph = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'Residual: attribution graph', cancellable: true },
        async (progress, token) => {
          token.onCancellationRequested(() => cts.cancel());
          let last = 0;
          return attributor.attribute(ids, {
            cancel: cts.token,
            maxMemoryBytes: budget,
            progress: (message, fraction) => {
              progress.report({ message, increment: Math.max(0, fraction * 100 - last) });
              last = fraction * 100;
              post({ type: 'circuit/busy', what: message, fraction });
            },
          });
        },
      );
      throwIfCancelled(cts.token);
      this.budgetMB = budget / 1e6;
      const node = this.live?.nodeThreshold ?? 0.8;
      const edge = this.live?.edgeThreshold ?? 0.98;
      this.live = {
        model,
        set: attributor.transcoders,
        attributor,
        graph,
        prune: pruneGraph(graph, node, edge),
        prompt: text,
        tokens: ids.map((i) => model.tokenizer.tokenText(i)),
        nodeThreshold: node,
        edgeThreshold: edge,
        ms: performance.now() - t0,
        slug: `residual-${Date.now().toString(36)}`,
      };
      this.imported = undefined;
      this.outputs.clear();
      this.log.appendLine(
        `circuit: ${graph.nFeatures} of ${graph.nActiveFeatures} active features kept (${(100 * graph.influenceCovered).toFixed(1)}% of their influence${graph.memoryLimited ? ', limited by the memory budget' : ''}), ` +
          `N = ${graph.N}, ${this.live.ms.toFixed(0)} ms, peak RSS ${formatBytes(process.resourceUsage().maxRSS * 1024)} (${JSON.stringify(graph.timings_ms)})`,
      );
      await this.postView();
    } catch (e) {
      if (current()) this.fail('trace', e);
      else this.log.appendLine(`circuit trace replaced by a newer one (${isCancelled(e) ? 'cancelled' : e instanceof Error ? e.message : String(e)})`);
    } finally {
      if (current()) this.running = undefined;
      cts.dispose();
      finished();
    }
  }

  /** Resolves when the panel's Start is pressed; rejects as cancelled when the run is cancelled first. */
  private startPressed(token: vscode.CancellationToken): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const sub = token.onCancellationRequested(() => {
        this.startGate = undefined;
        sub.dispose();
        reject(new ResidualError('cancelled', undefined, 'cancelled'));
      });
      this.startGate = () => {
        this.startGate = undefined;
        sub.dispose();
        resolve();
      };
    });
  }

  private attributorFor(model: Model): Attributor {
    const dir = this.transcodersDir();
    if (!dir || !fs.existsSync(dir)) {
      throw new ResidualError('no transcoders for this model: set residual.transcodersPath to a folder of per-layer transcoders (SAELens or circuit-tracer layout)', dir ?? 'residual.transcodersPath', 'missing');
    }
    const key = `${model.checkpoint.dir}|${dir}`;
    if (this.attributor?.key === key && this.attributor.value.model === model) return this.attributor.value;
    void this.attributor?.value.dispose();
    const set = loadTranscoders(dir, model.config);
    this.attributor = { key, value: new Attributor(model, set) };
    this.indexCache.clear();
    return this.attributor.value;
  }

  /** The JSON of the current graph (live: pruned at the current thresholds; imported: as read). */
  private json(pinned: string[] = [], supernodes: string[][] = []): GraphJson {
    if (this.imported) return { ...this.imported.json, qParams: { ...this.imported.json.qParams, pinnedIds: pinned, supernodes } };
    const l = this.live;
    if (!l) throw new ResidualError('no graph yet: run “Residual: Trace Circuit for Selection” first', 'circuit');
    const json = toGraphJson(l.graph, l.prune, {
      slug: l.slug,
      scan: l.set.scan,
      promptTokens: l.tokens,
      prompt: l.prompt,
      tokenText: (id) => l.model.tokenizer.tokenText(id),
      nodeThreshold: l.nodeThreshold,
      edgeThreshold: l.edgeThreshold,
      info: { description: `Residual attribution graph (${l.model.config.name}, transcoders ${l.set.dir})` },
    });
    json.qParams = { pinnedIds: pinned, supernodes, linkType: 'both', clickedId: '', sg_pos: '' };
    return json;
  }

  /** Posts the current view, its feature nodes labelled with their top output tokens. */
  private async postView(): Promise<void> {
    const seq = ++this.viewSeq;
    const view = this.view();
    try {
      await this.labelOutputs(view);
    } catch (e) {
      // Labels are a convenience: the graph is shown without them, and the log says why.
      this.log.appendLine(`circuit: output-token labels unavailable (${e instanceof Error ? e.message : String(e)})`);
    }
    if (seq === this.viewSeq) this.post({ type: 'circuit/view', view });
  }

  /** Sets `output` on the view's feature nodes: the token W_dec·W_U pushes up most (one pass over the unembedding). */
  private async labelOutputs(view: CircuitView): Promise<void> {
    const l = this.live;
    if (!l || this.imported) return;
    const missing: { layer: number; index: number }[] = [];
    for (const n of view.nodes) {
      if (n.kind !== 'feature' || n.index === null) continue;
      const key = `${n.layer}:${n.index}`;
      if (this.outputs.has(key) || missing.some((m) => m.layer === n.layer && m.index === n.index)) continue;
      missing.push({ layer: n.layer, index: n.index });
    }
    if (missing.length) {
      const ids = await l.attributor.topOutputTokens(missing);
      missing.forEach((m, i) => this.outputs.set(`${m.layer}:${m.index}`, l.model.tokenizer.tokenDisplay(ids[i])));
    }
    for (const n of view.nodes) if (n.kind === 'feature' && n.index !== null) n.output = this.outputs.get(`${n.layer}:${n.index}`);
  }

  private view(): CircuitView {
    const g = parseGraphJson(this.json());
    const json = g.json;
    const L = this.live?.graph.nLayers ?? Math.max(0, ...g.nodes.filter((n) => n.kind === 'feature' || n.kind === 'error').map((n) => (n.layer ?? 0) + 1));
    return {
      slug: json.metadata.slug,
      prompt: json.metadata.prompt,
      tokens: json.metadata.prompt_tokens,
      nLayers: L,
      nodes: g.nodes.map((n) => ({
        id: n.id,
        kind: n.kind,
        layer: n.kind === 'token' ? -1 : n.kind === 'logit' ? L : (n.layer ?? 0),
        pos: n.pos,
        index: n.index,
        activation: n.activation,
        influence: n.influence,
        prob: n.tokenProb,
        label: n.kind === 'feature' ? `L${n.layer} #${n.index}` : n.kind === 'error' ? `err L${n.layer}` : n.clerp || json.metadata.prompt_tokens[n.pos] || n.id,
      })),
      links: g.links.map((k) => ({ s: k.source, t: k.target, w: k.weight })),
      nodeThreshold: this.live?.nodeThreshold ?? Number(json.metadata.node_threshold ?? 0.8),
      edgeThreshold: this.live?.edgeThreshold ?? 0.98,
      live: !!this.live && !this.imported,
      scores: this.live && !this.imported ? { replacement: this.live.prune.replacementScore, completeness: this.live.prune.completenessScore } : undefined,
      counts: { activeFeatures: this.live && !this.imported ? this.live.graph.nActiveFeatures : g.nodes.filter((n) => n.kind === 'feature').length, nodes: g.nodes.length, links: g.links.length },
      coverage:
        this.live && !this.imported && this.live.graph.nFeatures < this.live.graph.nActiveFeatures
          ? {
              keptFeatures: this.live.graph.nFeatures,
              activeFeatures: this.live.graph.nActiveFeatures,
              influenceCovered: this.live.graph.influenceCovered,
              memoryLimited: this.live.graph.memoryLimited,
              budgetMB: this.budgetMB,
            }
          : undefined,
      ms: this.imported ? undefined : this.live?.ms,
      pinned: (json.qParams.pinnedIds as string[] | undefined) ?? [],
      supernodes: (json.qParams.supernodes as string[][] | undefined) ?? [],
    };
  }

  private async onMessage(m: FromCircuit): Promise<void> {
    try {
      switch (m.type) {
        case 'ready':
          if (this.lastView) this.post(this.lastView);
          break;
        case 'circuit/cancel':
          this.running?.cancel();
          break;
        case 'circuit/start':
          this.startGate?.();
          break;
        case 'circuit/thresholds': {
          const l = this.live;
          if (!l || this.imported) throw new ResidualError('thresholds apply to a graph computed here, not to an imported file', 'circuit');
          l.nodeThreshold = m.node;
          l.edgeThreshold = m.edge;
          l.prune = pruneGraph(l.graph, m.node, m.edge);
          await this.postView();
          break;
        }
        case 'circuit/card':
          this.post({ type: 'circuit/card', card: await this.card(m.layer, m.index) });
          break;
        case 'circuit/intervene': {
          const l = this.live;
          if (!l || this.imported) throw new ResidualError('interventions need a graph computed here (not an imported file)', 'circuit');
          this.post({ type: 'circuit/busy', what: 'Rerunning the model with the intervention' });
          const r = await intervene(l.attributor, l.graph, m.items);
          this.post({
            type: 'circuit/intervention',
            description: m.description,
            notInGraph: r.notInGraph.length,
            rows: r.logits.map((x) => ({
              token: l.model.tokenizer.tokenText(x.id),
              baseProb: x.baseProb,
              newProb: x.newProb,
              actual: x.actualDemeaned,
              predictedDirect: x.predictedDirect,
              predictedPaths: x.predictedPaths,
            })),
          });
          break;
        }
        case 'circuit/export': {
          const json = this.json(m.pinned, m.supernodes);
          const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
          const target = await vscode.window.showSaveDialog({
            defaultUri: ws ? vscode.Uri.joinPath(ws, `${json.metadata.slug}.json`) : undefined,
            filters: { 'Attribution graph (circuit-tracer / Neuronpedia JSON)': ['json'] },
            title: 'Residual: export the attribution graph',
          });
          if (!target) return;
          await vscode.workspace.fs.writeFile(target, new TextEncoder().encode(JSON.stringify(json)));
          void vscode.window.showInformationMessage(`Residual: wrote ${path.basename(target.fsPath)} (${json.nodes.length} nodes, ${json.links.length} links).`);
          break;
        }
        case 'circuit/import': {
          const picked = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'Attribution graph JSON': ['json'] }, title: 'Residual: open an attribution graph' });
          if (!picked?.[0]) return;
          await this.importFile(picked[0]);
          break;
        }
        case 'circuit/steer':
          this.steerFeature(m.layer, m.index, this.live?.prompt);
          break;
      }
    } catch (e) {
      this.fail(m.type, e);
    }
  }

  /** Opens a circuit-tracer / Neuronpedia graph JSON file. */
  async importFile(uri: vscode.Uri): Promise<void> {
    this.show();
    try {
      const bytes = await vscode.workspace.fs.readFile(uri);
      if (bytes.length > 100 * 1024 * 1024) throw new ResidualError('graph files are limited to 100 MiB (as Neuronpedia does)', uri.fsPath);
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(bytes));
      } catch (e) {
        throw new ResidualError(`not valid JSON (${(e as Error).message})`, uri.fsPath);
      }
      this.imported = parseGraphJson(json, uri.fsPath);
      await this.postView();
    } catch (e) {
      this.fail('import', e);
    }
  }

  /** A feature card: activations on this prompt, decoder logit effects, top contexts from the feature index. */
  private async card(layer: number, index: number): Promise<FeatureCard> {
    const l = this.live;
    if (!l) throw new ResidualError('feature cards need the transcoders: trace a circuit here first', 'circuit');
    const t = l.set.layers[layer];
    if (!t || !(index >= 0 && index < t.dSae)) throw new ResidualError(`no feature ${index} in layer ${layer}`, l.set.dir);
    const g = l.graph;
    // Every position where it fires, also those whose node the (partial) graph did not keep.
    const activations = Array.from({ length: g.nPos }, (_, p) => activeActivation(g, layer, p, index));
    const entry = this.indexEntry(t.source, layer, index);
    // The output tokens always come from the weights (W_dec · W_U), shown byte-exact; the index's strings lose bytes.
    const logits = await l.attributor.decoderLogits(layer, index, 10);
    const tok = (v: number) => l.model.tokenizer.tokenDisplay(v);
    const named = (xs: [number, number][]) => xs.map(([v, y]) => [tok(v), Number(y.toPrecision(4))] as [string, number]);
    return {
      layer,
      index,
      output: logits.top.length ? tok(logits.top[0][0]) : undefined,
      activations,
      tokens: g.ids.map(tok),
      top: named(logits.top),
      bottom: named(logits.bottom),
      contexts: entry?.ctx.map(([before, peak, after, act]) => ({ before, peak, after, act })),
      frequency: entry?.freq,
      maxAct: entry?.max,
      source: entry ? 'decoder × unembedding; contexts from the feature index' : 'decoder × unembedding (no feature index)',
    };
  }

  private indexEntry(cfgFile: string, layer: number, index: number): IndexEntry | undefined {
    const file = path.join(path.dirname(cfgFile), 'feature_index.json');
    if (!this.indexCache.has(file)) {
      let map: Map<number, IndexEntry> | null = null;
      try {
        if (fs.existsSync(file)) {
          const j = JSON.parse(fs.readFileSync(file, 'utf8')) as { features?: IndexEntry[] };
          map = new Map((j.features ?? []).map((e) => [e.id, e]));
        }
      } catch (e) {
        this.log.appendLine(`feature index ${file} unreadable (${(e as Error).message}); cards use the decoder instead`);
      }
      this.indexCache.set(file, map);
    }
    void layer;
    return this.indexCache.get(file)?.get(index);
  }

  private fail(what: string, e: unknown): void {
    const message = isCancelled(e) ? 'Cancelled.' : e instanceof ResidualError ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`;
    this.log.appendLine(`circuit ${what}: ${message}`);
    if (e instanceof Error && !(e instanceof ResidualError) && e.stack) this.log.appendLine(e.stack);
    this.post({ type: 'circuit/error', message });
  }

  dispose(): void {
    this.running?.cancel();
    void this.attributor?.value.dispose();
    this.panel?.dispose();
    this.disposables.forEach((d) => d.dispose());
  }
}

/** One feature of the project's feature index (tools/demo-model/feature_index.py). */
interface IndexEntry {
  id: number;
  freq: number;
  mean: number;
  max: number;
  ctx: [string, string, string, number][];
  top: [string, number][];
  bottom: [string, number][];
}
