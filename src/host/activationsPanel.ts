/**
 * The Activations webview panel: one at a time, revived after a reload by its serializer, fed with typed messages.
 * It replays the last message when its webview (re)connects, so nothing is lost if the panel was hidden.
 */
import * as vscode from 'vscode';
import { residualColumn, trackPanel } from './panelColumn';
import type { FromActivations, ToActivations } from '../protocol';
import { webviewHtml, webviewOptions } from './webviewHtml';

export const ACTIVATIONS_VIEW_TYPE = 'residual.activations';

export class ActivationsPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private last: ToActivations | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly onMessage: (m: FromActivations) => void,
  ) {
    this.disposables.push(
      vscode.window.registerWebviewPanelSerializer(ACTIVATIONS_VIEW_TYPE, {
        deserializeWebviewPanel: async (panel) => this.adopt(panel),
      }),
    );
  }

  /** Shows the panel beside the editor, creating it if needed. */
  show(preserveFocus = true): void {
    if (this.panel) {
      this.panel.reveal(undefined, preserveFocus);
      return;
    }
    const panel = vscode.window.createWebviewPanel(
      ACTIVATIONS_VIEW_TYPE,
      'Residual: Activations',
      { viewColumn: residualColumn(), preserveFocus },
      { ...webviewOptions(this.extensionUri), retainContextWhenHidden: true },
    );
    this.adopt(panel);
  }

  private adopt(panel: vscode.WebviewPanel): void {
    this.panel = panel;
    trackPanel(panel);
    panel.iconPath = vscode.Uri.joinPath(this.extensionUri, 'media', 'residual.svg');
    panel.webview.options = { ...webviewOptions(this.extensionUri) };
    panel.webview.html = webviewHtml(panel.webview, this.extensionUri, 'activations', 'Residual: Activations');
    const subs = [
      panel.webview.onDidReceiveMessage((m: FromActivations) => {
        if (m.type === 'ready' && this.last) void panel.webview.postMessage(this.last);
        this.onMessage(m);
      }),
      panel.onDidDispose(() => {
        this.panel = undefined;
        subs.forEach((d) => d.dispose());
      }),
    ];
  }

  post(message: ToActivations): void {
    if (message.type === 'analysis/result' || message.type === 'analysis/error' || !this.last) this.last = message;
    void this.panel?.webview.postMessage(message);
  }

  get visible(): boolean {
    return !!this.panel;
  }

  dispose(): void {
    this.panel?.dispose();
    this.disposables.forEach((d) => d.dispose());
  }
}
