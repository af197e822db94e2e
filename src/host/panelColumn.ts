/**
 * Residual's panels share one editor column: a panel opens where another Residual panel already is (as a tab
 * there), else beside the editor. Opening each "beside" the active one would add a new, narrower column every time.
 */
import * as vscode from 'vscode';

const open = new Set<vscode.WebviewPanel>();

/** Counts `panel` as one of Residual's until it is closed. */
export function trackPanel(panel: vscode.WebviewPanel): void {
  open.add(panel);
  panel.onDidDispose(() => open.delete(panel));
}

/** The column of an open Residual panel, else beside the active editor. */
export function residualColumn(): vscode.ViewColumn {
  for (const p of open) if (p.viewColumn !== undefined) return p.viewColumn;
  return vscode.ViewColumn.Beside;
}
