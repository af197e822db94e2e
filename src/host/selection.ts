/**
 * The text a command works on — the editor's selection, else the cursor's line — taken the same way by Analyze,
 * Compare, Trace Circuit and Steering's "Use current selection". A webview with focus leaves no active text editor,
 * so the editor the user was last in counts while it is still visible.
 */
import * as vscode from 'vscode';

export interface SelectedText {
  doc: vscode.TextDocument;
  range: vscode.Range;
  text: string;
}

export class EditorSelection implements vscode.Disposable {
  private last: vscode.TextEditor | undefined = vscode.window.activeTextEditor;
  private readonly sub = vscode.window.onDidChangeActiveTextEditor((e) => e && (this.last = e));

  /** The active editor, else the one last active if it is still visible. */
  editor(): vscode.TextEditor | undefined {
    return vscode.window.activeTextEditor ?? (this.last && vscode.window.visibleTextEditors.includes(this.last) ? this.last : undefined);
  }

  /**
   * The selection (else the current line) of the current editor, or why there is none. `purpose` completes
   * "select the text to …".
   */
  read(purpose: string): SelectedText | { problem: string } {
    const editor = this.editor();
    if (!editor) return { problem: `open a file and select the text to ${purpose}.` };
    const { document: doc, selection: sel } = editor;
    const range = sel.isEmpty ? doc.lineAt(sel.active.line).range : new vscode.Range(sel.start, sel.end);
    const text = doc.getText(range);
    if (!text) return { problem: `the selection is empty and so is the current line; select some text to ${purpose}.` };
    return { doc, range, text };
  }

  /** As `read`, but tells the user the problem (a warning) and returns undefined. */
  take(purpose: string): SelectedText | undefined {
    const r = this.read(purpose);
    if ('problem' in r) {
      void vscode.window.showWarningMessage(`Residual: ${r.problem}`);
      return undefined;
    }
    return r;
  }

  dispose(): void {
    this.sub.dispose();
  }
}
