/**
 * The Activations panel's controller: Analyze Selection and Compare (jobs the host starts, cancellable from the
 * panel by id), and the panel's requests — a lens target, activation patching, a corruption suggestion, token
 * counts, direct logit attribution. It shows the analysis as heat over its text and hands the prompt to Steering.
 */
import * as vscode from 'vscode';
import { analyze, DEFAULT_LENS_GFLOP } from '../engine/analysis';
import { directLogitAttribution, tokenIdOf } from '../engine/dla';
import { errorMessage, isCancelled, ResidualError, throwIfCancelled } from '../engine/errors';
import { compareAnalyses } from '../engine/layers/compare';
import { pathPatching } from '../engine/layers/pathPatching';
import { activationPatching, suggestCorruption } from '../engine/layers/patching';
import { trackLensTarget } from '../engine/lensTarget';
import { parseHookName } from '../engine/hooks';
import type { Model } from '../engine/model';
import { patchscope } from '../engine/patchscope';
import type { Analysis, ResidPoint } from '../engine/results';
import { unescapeTokenInput } from '../engine/tokenizer';
import { Attributor } from '../engine/circuits/attribution';
import { describeQkSource, qkAttribution, type QkSource } from '../engine/circuits/qk';
import { loadTranscoders } from '../engine/circuits/transcoders';
import type { SteeringVector } from '../engine/steering/vectors';
import { unreachable, type ActivationsEvent, type ActivationsNotification, type ActivationsRequests, type QkSourceView, type QkView, type ToActivations } from '../protocol';
import { EditorHeat, type TextSource } from './editorHeat';
import type { ModelManager } from './modelManager';
import { PanelHost } from './panelHost';
import { SaeLens } from './saeLens';
import type { EditorSelection, SelectedText } from './selection';

export const ACTIVATIONS_VIEW_TYPE = 'residual.activations';

const ANALYSIS = 'analysis';
/** The scopes of requests about the shown analysis: a new analysis, or Cancel Analysis, cancels them all. */
const ABOUT_ANALYSIS = ['lens', 'patching', 'pathpatching', 'suggest', 'dla', 'patchscope', 'sae', 'qk'];

interface Analysed {
  /** The analysis job that made it. */
  requestId: number;
  analysis: Analysis;
  source: TextSource;
  file: string;
}

export class ActivationsPanel extends PanelHost<ActivationsRequests, ActivationsEvent, ActivationsNotification> {
  private last: Analysed | undefined;
  /** Replayed to a (re)connected webview: the last result (or error), and the analysis running now. */
  private lastOutcome: ActivationsEvent | undefined;
  private runningEvent: ActivationsEvent | undefined;
  /** When each analysis job's command started (for the command-to-rendered-panel latency in the log). */
  private readonly commandStart = new Map<number, number>();
  private readonly heat = new EditorHeat();
  private readonly sae: SaeLens;
  /** QK attribution's transcoders and sessions, for one model and transcoder folder. */
  private qkAttributor: { model: Model; dir: string; attributor: Attributor } | undefined;

  constructor(
    context: vscode.ExtensionContext,
    private readonly models: ModelManager,
    log: vscode.OutputChannel,
    private readonly selection: EditorSelection,
    /** Called with each new analysis' text (Steering takes it as its prompt). */
    private readonly onAnalysed: (text: string) => void,
    /** Shows an error with the ways out (another model, the log). */
    private readonly offerRecovery: (e: unknown) => Promise<void>,
    /** Opens Steering with a vector (an SAE feature's decoder row). */
    private readonly steer: (vector: SteeringVector) => void,
    /** The transcoder folder (the setting, else transcoders/ beside the model), for QK attribution. */
    private readonly transcodersDir: () => string | undefined,
  ) {
    super(context, log, { viewType: ACTIVATIONS_VIEW_TYPE, title: 'Residual: Activations', entry: 'activations' }, {
      'lens/target': {
        scope: 'lens',
        run: async (p) => {
          const a = this.need().analysis;
          const model = await this.modelOf(a, 'lens target');
          return trackLensTarget(model, a, p.position, p.text);
        },
      },
      'patching/run': {
        scope: 'patching',
        run: async (p, job) => {
          const { model, pair } = await this.patchingPair(p);
          const { notes, ...result } = await activationPatching(model, { ...pair, point: p.point }, { cancel: job.token, onProgress: (done, total) => job.progress(done, total) });
          this.log.appendLine(`patching: ${result.restored.length}×${result.restored[0]?.length ?? 0} runs in ${result.ms.toFixed(0)} ms`);
          return { result, notes };
        },
      },
      'pathpatching/run': {
        scope: 'pathpatching',
        run: async (p, job) => {
          const { model, pair } = await this.patchingPair(p);
          const r = await pathPatching(model, { ...pair, receiver: p.receiver }, { cancel: job.token, onProgress: (done, total) => job.progress(done, total) });
          this.log.appendLine(`path patching into ${r.receiverName}: ${r.senders.length} senders in ${r.ms.toFixed(0)} ms`);
          return r;
        },
      },
      'patching/suggest': {
        scope: 'suggest',
        run: async (_p, job) => {
          const a = this.need().analysis;
          const model = await this.models.get();
          const asRun = (t: string) => this.models.promptFor(model, t, !!a.chat);
          return { forText: a.text, suggestion: await suggestCorruption(model, a.text, { cancel: job.token, asRun }) };
        },
      },
      'patching/count': {
        scope: 'count',
        run: async (p) => {
          const model = await this.models.get();
          return { tokens: model.tokenizer.encodeForModel(this.models.promptFor(model, p.text, !!this.last?.analysis.chat)).ids.length };
        },
      },
      'dla/compute': {
        scope: 'dla',
        run: async (p, job) => {
          const a = this.need().analysis;
          const model = await this.modelOf(a, 'logit attribution');
          // Typed like the lens target: \n, ⏎ and \t stand for the whitespace tokens.
          const tokenOf = (text: string | undefined, what: string) => (text ? tokenIdOf(model, unescapeTokenInput(text), what) : undefined);
          return directLogitAttribution(model, a.tokens.map((t) => t.id), { target: tokenOf(p.target, 'target'), contrast: tokenOf(p.contrast, 'contrast'), position: p.position, cancel: job.token });
        },
      },
      'patchscope/run': {
        scope: 'patchscope',
        run: async (p, job) => {
          const a = this.need().analysis;
          const model = await this.modelOf(a, 'patchscope');
          const readout = a.readouts[p.readout];
          const parsed = readout && parseHookName(readout.hook);
          if (!parsed || parsed.layer === null) throw new ResidualError(`read-out ${p.readout} does not exist`, 'patchscope');
          const r = await patchscope(model, {
            sourceIds: a.tokens.map((t) => t.id),
            layer: parsed.layer,
            point: parsed.hook as ResidPoint,
            position: p.position,
            targetPrompt: p.targetPrompt,
            targetLayer: p.targetLayer,
            cancel: job.token,
          });
          this.log.appendLine(`patchscope: ${readout.hook} at position ${p.position} → ${JSON.stringify(r.text)}`);
          return r;
        },
      },
      'sae/choose': { run: async () => ({ dir: await this.sae.choose() }) },
      'sae/read': {
        scope: 'sae',
        run: async (p, job) => {
          const { requestId, analysis: a } = this.need();
          const model = await this.modelOf(a, 'SAE features');
          return this.sae.read(model, requestId, a.tokens.map((t) => t.id), p.layer, job.token);
        },
      },
      'sae/card': {
        run: async (p) => {
          const { requestId, analysis: a } = this.need();
          const model = await this.modelOf(a, 'SAE feature card');
          return this.sae.card(model, requestId, a.tokens.map((t) => t.id), p.layer, p.index);
        },
      },
      'sae/steer': { run: async (p) => this.steer(this.sae.vector(p.layer, p.index)) },
      'qk/attribute': {
        scope: 'qk',
        run: async (p, job) => {
          const a = this.need().analysis;
          const model = await this.modelOf(a, 'QK attribution');
          const attributor = await this.attributorFor(model);
          const ids = a.tokens.map((t) => t.id);
          const r = await qkAttribution(attributor, ids, { ...p, cancel: job.token });
          const text = (pos: number) => a.tokens[pos]?.text ?? '';
          const view = (s: QkSource): QkSourceView => ({ kind: s.kind, label: describeQkSource(s, text), ...(s.kind === 'feature' ? { layer: s.layer, index: s.index } : {}), ...(s.kind !== 'bias' ? { pos: s.pos } : {}) });
          this.log.appendLine(`qk: blocks.${r.layer}.attn head ${r.head}, query ${r.query} → key ${r.key}: score ${r.score.toFixed(4)} (model ${r.realScore.toFixed(4)}) in ${r.ms.toFixed(0)} ms`);
          const out: QkView = {
            ...r,
            querySide: r.querySide.map((x) => ({ source: view(x.source), value: x.value })),
            keySide: r.keySide.map((x) => ({ source: view(x.source), value: x.value })),
            pairs: r.pairs.map((x) => ({ query: view(x.query), key: view(x.key), value: x.value })),
            transcoders: attributor.transcoders.scan,
          };
          return out;
        },
      },
    });
    this.sae = new SaeLens(log);
    this.disposables.push(this.heat, this.sae, { dispose: () => void this.qkAttributor?.attributor.dispose() });
  }

  /** The attributor QK attribution uses: made once per model and transcoder folder (its sessions are kept). */
  private async attributorFor(model: Model): Promise<Attributor> {
    const dir = this.transcodersDir();
    if (!dir) throw new ResidualError('no transcoder folder: set residual.transcodersPath (QK attribution splits the score into transcoder features)', 'QK attribution');
    // The same model object (a reload makes a new one) and folder.
    if (this.qkAttributor?.model === model && this.qkAttributor.dir === dir) return this.qkAttributor.attributor;
    await this.qkAttributor?.attributor.dispose();
    this.qkAttributor = undefined;
    const attributor = new Attributor(model, loadTranscoders(dir, model.config));
    this.qkAttributor = { model, dir, attributor };
    return attributor;
  }

  /** The loaded model, which must be the one the analysis ran on. */
  private async modelOf(a: Analysis, what: string): Promise<Model> {
    const model = await this.models.get();
    if (model.info.dir !== a.model.dir) throw new ResidualError(`the model changed since this analysis (now ${model.info.name}): re-run the analysis first`, what);
    return model;
  }

  /**
   * The Patching tab's clean prompt (the analysed text) and corrupted prompt as the model runs them: in chat form when
   * the analysis was (both as user turns).
   */
  private async patchingPair(p: { corrupted: string; cleanAnswer?: string; corruptedAnswer?: string }) {
    const a = this.need().analysis;
    const model = await this.models.get();
    const asRun = (t: string) => this.models.promptFor(model, t, !!a.chat);
    return { model, pair: { clean: asRun(a.text.slice(a.truncated?.firstChar ?? 0)), corrupted: asRun(p.corrupted), cleanAnswer: p.cleanAnswer, corruptedAnswer: p.corruptedAnswer } };
  }

  private need(): Analysed {
    if (!this.last) throw new ResidualError('no analysis yet: run Analyze Selection first', 'activations');
    return this.last;
  }

  protected replay(): ToActivations[] {
    return [this.lastOutcome, this.runningEvent].filter((m) => m !== undefined);
  }

  protected override post(m: ToActivations): void {
    // Only analysis events are state; replies and progress belong to the webview that asked.
    if (m.type === 'analysis/started') this.runningEvent = m;
    else if (m.type === 'analysis/result' || m.type === 'analysis/error' || m.type === 'analysis/cancelled') {
      if (this.runningEvent?.type === 'analysis/started' && this.runningEvent.requestId === m.requestId) this.runningEvent = undefined;
      if (m.type !== 'analysis/cancelled') this.lastOutcome = m;
    }
    super.post(m);
  }

  protected async notified(m: ActivationsNotification): Promise<void> {
    switch (m.type) {
      case 'ready':
        break;
      case 'analysis/rendered': {
        const t0 = this.commandStart.get(m.requestId);
        this.commandStart.delete(m.requestId);
        if (t0 !== undefined) this.log.appendLine(`[${m.requestId}] command to rendered panel: ${(performance.now() - t0).toFixed(0)} ms`);
        break;
      }
      case 'token/reveal':
        if (this.last) await revealRange(this.last.source, m.start, m.end);
        break;
      case 'analysis/rerun':
        await this.rerun();
        break;
      case 'heat/show':
        if (this.last) vscode.window.setStatusBarMessage(`Residual: editor heat shows ${this.heat.show(this.last.source, this.last.analysis, m.measure, m.layer)}`, 5000);
        break;
      case 'heat/clear':
        this.heat.clear();
        break;
      default:
        unreachable(m);
    }
  }

  /** Analyze Selection: the selection (else the current line) of the current editor. */
  async analyzeSelection(): Promise<void> {
    const t0 = performance.now();
    const sel = this.selection.take('analyse');
    if (!sel) return;
    const r = await this.analyzeText(sel, t0);
    if (r) this.present(r);
  }

  /** Compare with Previous: analyses the selection and shows it beside the last analysis. */
  async compareSelection(): Promise<void> {
    const a = this.last;
    if (!a) {
      void vscode.window.showWarningMessage('Residual: analyse a first selection (Analyze Selection), then compare a second one with it.');
      return;
    }
    const t0 = performance.now();
    const sel = this.selection.take('analyse');
    if (!sel) return;
    const b = await this.analyzeText(sel, t0);
    if (!b) return;
    this.present(b);
    this.post({ type: 'compare/result', a: a.analysis, b: b.analysis, layers: compareAnalyses(a.analysis, b.analysis), fileA: a.file, fileB: b.file });
  }

  /** Cancels the running analysis and every request about it (the Cancel Analysis command). */
  cancel(): void {
    for (const scope of [ANALYSIS, ...ABOUT_ANALYSIS]) this.router.cancelScope(scope);
  }

  clearHeat(): void {
    this.heat.clear();
  }

  /** Re-runs the shown text (the panel has focus, so there is no active editor to take a selection from). */
  private async rerun(): Promise<void> {
    const last = this.last;
    if (!last) return;
    const doc = await vscode.workspace.openTextDocument(last.source.uri);
    const start = doc.positionAt(last.source.baseOffset);
    const range = new vscode.Range(start, doc.positionAt(last.source.baseOffset + last.analysis.text.length));
    const r = await this.analyzeText({ doc, range, text: doc.getText(range) }, performance.now());
    if (r) this.present(r);
  }

  /** Analyses `sel` as a job of the analysis scope: a new analysis cancels the previous one. */
  private async analyzeText({ doc, range, text }: SelectedText, t0: number): Promise<Analysed | undefined> {
    const job = this.router.begin(ANALYSIS);
    const id = job.id;
    this.commandStart.set(id, t0);
    for (const k of this.commandStart.keys()) if (k < id - 10) this.commandStart.delete(k); // superseded, never drawn
    const file = vscode.workspace.asRelativePath(doc.uri);
    const preview = text.length > 60 ? `${text.slice(0, 57)}…` : text;
    this.show();
    this.post({ type: 'analysis/started', requestId: id, preview, file });
    void vscode.commands.executeCommand('setContext', 'residual.running', true);
    this.models.patchState({ status: 'running' });
    this.log.appendLine(`[${id}] analysing ${text.length} characters of ${file}`);
    try {
      const analysis = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'Residual: analysing selection', cancellable: true },
        async (_progress, token) => {
          token.onCancellationRequested(() => job.cancel());
          const model = await this.models.get();
          const settings = vscode.workspace.getConfiguration('residual');
          const maxTokens = settings.get<number>('maxTokens', 256);
          const lensGflop = settings.get<number>('lensGflop', DEFAULT_LENS_GFLOP);
          return analyze(model, text, { maxTokens, lensFlops: lensGflop > 0 ? lensGflop * 1e9 : Infinity, cancel: job.token, chat: this.models.chatTemplate(model) });
        },
      );
      throwIfCancelled(job.token); // superseded while the result was on its way
      const t = analysis.truncated;
      const truncatedNote = t ? `analysed only the last ${t.kept} tokens${t.total ? ` of ${t.total}` : ''} (limit: residual.maxTokens or the model context)` : undefined;
      if (truncatedNote) void vscode.window.showInformationMessage(`Residual: ${truncatedNote}.`);
      this.log.appendLine(`[${id}] ${analysis.tokens.length} tokens on ${analysis.provider} in ${analysis.timings.totalMs.toFixed(0)} ms; next: ${analysis.top.map((x) => JSON.stringify(x.text)).join(' ')}`);
      this.models.patchState({
        status: 'ready',
        last: { preview, file, tokens: analysis.tokens.length, top: analysis.top.map((x) => ({ text: x.text, prob: x.prob })), ms: analysis.timings.totalMs, truncated: truncatedNote, chatAdded: analysis.chat?.added },
      });
      return { requestId: id, analysis, source: { uri: doc.uri, baseOffset: doc.offsetAt(range.start), version: doc.version }, file };
    } catch (e) {
      if (isCancelled(e) || !job.current) {
        this.log.appendLine(`[${id}] cancelled`);
        this.post({ type: 'analysis/cancelled', requestId: id });
        // The Inspector shows "running" until an analysis ends; a newer one that is running keeps it so.
        if (this.models.state.status === 'running' && !this.router.busy(ANALYSIS)) this.models.patchState({ status: this.models.current ? 'ready' : 'idle' });
      } else {
        this.router.logError(`[${id}] failed`, e);
        this.post({ type: 'analysis/error', requestId: id, message: errorMessage(e) });
        if (this.models.state.status === 'running') this.models.patchState({ status: this.models.current ? 'ready' : 'error', error: errorMessage(e) });
        void this.offerRecovery(e);
      }
      return undefined;
    } finally {
      job.finish();
      if (!this.router.busy(ANALYSIS)) void vscode.commands.executeCommand('setContext', 'residual.running', false);
    }
  }

  /** Shows an analysis in the panel and, by default, as heat over its text (the last block's relative update). */
  private present(r: Analysed): void {
    // Requests about the previous analysis would answer for text that is no longer shown.
    for (const scope of ABOUT_ANALYSIS) this.router.cancelScope(scope);
    this.last = r;
    this.post({ type: 'analysis/result', requestId: r.requestId, analysis: r.analysis, file: r.file });
    this.onAnalysed(r.analysis.text.slice(r.analysis.truncated?.firstChar ?? 0));
    if (vscode.workspace.getConfiguration('residual').get<boolean>('tokenHeat', true)) {
      this.heat.show(r.source, r.analysis, 'update_norm', r.analysis.stats.length - 1);
    }
  }
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
