/** The Inspector webview view in the Residual side-bar container: model, provider and the last analysis. */
import * as vscode from 'vscode';
import { INSPECTOR_COMMANDS, type FromInspector, type ToInspector } from '../protocol';
import type { ModelManager } from './modelManager';
import { webviewHtml, webviewOptions } from './webviewHtml';

export const INSPECTOR_VIEW_ID = 'residual.inspector';

export class InspectorViewProvider implements vscode.WebviewViewProvider {
  private view: vscode.WebviewView | undefined;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly models: ModelManager,
  ) {
    models.onDidChange(() => this.push());
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    view.webview.options = webviewOptions(this.extensionUri);
    view.webview.html = webviewHtml(view.webview, this.extensionUri, 'inspector', 'Residual Inspector');
    view.webview.onDidReceiveMessage((m: FromInspector) => {
      if (m.type === 'ready') this.push();
      // Only the commands the protocol lists: the webview cannot run arbitrary commands.
      else if (m.type === 'command/run' && INSPECTOR_COMMANDS.includes(m.command)) void vscode.commands.executeCommand(m.command);
    });
    view.onDidChangeVisibility(() => view.visible && this.push());
    view.onDidDispose(() => (this.view = undefined));
  }

  private push(): void {
    const msg: ToInspector = { type: 'inspector/state', state: this.models.state };
    void this.view?.webview.postMessage(msg);
  }
}
