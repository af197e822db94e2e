/**
 * Token heat in the editor: after an analysis, each analysed token gets a background whose strength shows a chosen
 * measure at a chosen layer, and hovering a token shows its per-layer summary.
 */
import * as vscode from 'vscode';
import type { Analysis } from '../engine/results';
import type { HeatMeasure } from '../protocol';

export type EditorMeasure = HeatMeasure | 'mlp_active' | 'target_prob';

/** Where an analysed text sits in its document. */
export interface TextSource {
  uri: vscode.Uri;
  baseOffset: number;
  version: number;
}

const BUCKETS = 6;
const LABELS: Record<EditorMeasure, string> = {
  resid_norm: 'residual norm',
  update_norm: 'relative update ‖Δ‖/‖x‖',
  drift_cos: 'drift cos(pre, post)',
  attn_norm: 'attention output norm',
  mlp_norm: 'MLP output norm',
  mlp_active: 'MLP active fraction',
  target_prob: 'lens probability of the final prediction',
};

/** The per-token values of `measure` at `layer` (a block index, or a read-out index for read-out measures). */
export function measureValues(a: Analysis, measure: EditorMeasure, layer: number): number[] | undefined {
  switch (measure) {
    case 'resid_norm':
      return a.residNorm[layer];
    case 'target_prob':
      return a.target.prob[layer];
    case 'mlp_active':
      return a.perLayer?.mlpSparsity.activeFraction[layer];
    default:
      return a.stats[layer]?.[measure];
  }
}

export class EditorHeat implements vscode.Disposable {
  private readonly types: vscode.TextEditorDecorationType[];
  private current: { source: TextSource; analysis: Analysis; values: number[]; label: string } | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor() {
    // Fixed orange steps: decoration colours cannot mix a theme colour with an alpha.
    this.types = Array.from({ length: BUCKETS }, (_, i) =>
      vscode.window.createTextEditorDecorationType({
        backgroundColor: `rgba(255, 140, 0, ${(0.08 + (0.55 * i) / (BUCKETS - 1)).toFixed(3)})`,
        borderRadius: '2px',
      }),
    );
    this.disposables.push(
      vscode.languages.registerHoverProvider({ scheme: '*' }, { provideHover: (doc, pos) => this.hover(doc, pos) }),
      vscode.window.onDidChangeVisibleTextEditors(() => this.apply()),
    );
  }

  /** Colours the analysed text by `measure` at `layer`; returns a description for the status line. */
  show(source: TextSource, analysis: Analysis, measure: EditorMeasure, layer: number): string {
    const values = measureValues(analysis, measure, layer);
    if (!values) throw new Error(`no ${LABELS[measure]} at layer ${layer} in this analysis`);
    const where = measure === 'resid_norm' || measure === 'target_prob' ? analysis.readouts[layer]?.hook : `blocks.${layer}`;
    const label = `${LABELS[measure]} at ${where}`;
    this.current = { source, analysis, values, label };
    this.apply();
    return label;
  }

  clear(): void {
    this.current = undefined;
    for (const e of vscode.window.visibleTextEditors) for (const t of this.types) e.setDecorations(t, []);
  }

  get active(): boolean {
    return !!this.current;
  }

  private apply(): void {
    const c = this.current;
    if (!c) return;
    for (const editor of vscode.window.visibleTextEditors) {
      if (editor.document.uri.toString() !== c.source.uri.toString()) continue;
      // The chat template's tokens are not in the editor; their values (a BOS's are extreme) must not set the scale.
      const finite = c.values.filter((v, i) => Number.isFinite(v) && !c.analysis.tokens[i]?.template);
      const lo = Math.min(...finite);
      const hi = Math.max(...finite);
      const buckets: vscode.DecorationOptions[][] = this.types.map(() => []);
      c.analysis.tokens.forEach((t, i) => {
        if (t.end <= t.start) return;
        const v = c.values[i];
        const f = hi > lo && Number.isFinite(v) ? (v - lo) / (hi - lo) : 0.5;
        const b = Math.min(BUCKETS - 1, Math.floor(f * BUCKETS));
        const range = new vscode.Range(
          editor.document.positionAt(c.source.baseOffset + t.start),
          editor.document.positionAt(c.source.baseOffset + t.end),
        );
        buckets[b].push({ range });
      });
      this.types.forEach((type, b) => editor.setDecorations(type, buckets[b]));
    }
  }

  private hover(doc: vscode.TextDocument, pos: vscode.Position): vscode.Hover | undefined {
    const c = this.current;
    if (!c || doc.uri.toString() !== c.source.uri.toString()) return undefined;
    const off = doc.offsetAt(pos) - c.source.baseOffset;
    const i = c.analysis.tokens.findIndex((t) => t.start <= off && off < t.end);
    if (i < 0) return undefined;
    const a = c.analysis;
    const t = a.tokens[i];
    const md = new vscode.MarkdownString();
    md.appendMarkdown(`**Residual** · token ${i} \`${JSON.stringify(t.text)}\` (id ${t.id}) · ${c.label}: **${fmt(c.values[i])}**\n\n`);
    md.appendMarkdown('| block | ‖Δ‖/‖x‖ | drift cos | attn ‖out‖ | MLP ‖out‖ | MLP active | lens top-1 (after block) |\n|---|---|---|---|---|---|---|\n');
    for (const s of a.stats) {
      const top = a.lens[s.layer + 1]?.[i]?.[0];
      const active = a.perLayer?.mlpSparsity.activeFraction[s.layer]?.[i];
      md.appendMarkdown(
        `| ${s.layer} | ${fmt(s.update_norm[i])} | ${fmt(s.drift_cos[i])} | ${fmt(s.attn_norm[i])} | ${fmt(s.mlp_norm[i])} | ${active === undefined ? '—' : `${(active * 100).toFixed(1)}%`} | ${top ? `\`${JSON.stringify(top.text)}\` ${(top.prob * 100).toFixed(1)}%` : '—'} |\n`,
      );
    }
    if (a.target.ids[i] >= 0) md.appendMarkdown(`\nNext-token prediction here: \`${JSON.stringify(a.target.texts[i])}\``);
    const range = new vscode.Range(doc.positionAt(c.source.baseOffset + t.start), doc.positionAt(c.source.baseOffset + t.end));
    return new vscode.Hover(md, range);
  }

  dispose(): void {
    this.types.forEach((t) => t.dispose());
    this.disposables.forEach((d) => d.dispose());
  }
}

function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
}
