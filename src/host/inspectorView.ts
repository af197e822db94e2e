/** The Inspector webview view in the Residual side-bar container: model, provider and the last analysis. */
import * as vscode from 'vscode';
import { ResidualError } from '../engine/errors';
import { INSPECTOR_COMMANDS, unreachable, type FromInspector, type InspectorRequests, type ToInspector } from '../protocol';
import type { ModelManager } from './modelManager';
import { RequestRouter } from './requests';
import { webviewHtml, webviewOptions } from './webviewHtml';

export const INSPECTOR_VIEW_ID = 'residual.inspector';

export class InspectorViewProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  private view: vscode.WebviewView | undefined;
  private readonly router: RequestRouter<InspectorRequests>;
  private readonly sub: vscode.Disposable;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly models: ModelManager,
    log: vscode.OutputChannel,
  ) {
    this.router = new RequestRouter<InspectorRequests>(
      'Inspector',
      {
        'command/run': {
          run: async ({ command }) => {
            // Only the commands the protocol lists: the webview cannot run arbitrary commands.
            if (!INSPECTOR_COMMANDS.includes(command)) throw new ResidualError(`not a command the Inspector may run: ${String(command)}`, 'inspector');
            await vscode.commands.executeCommand(command);
          },
        },
      },
      (m) => void this.view?.webview.postMessage(m),
      log,
    );
    this.sub = models.onDidChange(() => this.push());
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    view.webview.options = webviewOptions(this.extensionUri);
    view.webview.html = webviewHtml(view.webview, this.extensionUri, 'inspector', 'Residual Inspector');
    view.webview.onDidReceiveMessage((m: FromInspector) => {
      if (this.router.handle(m)) return;
      switch (m.type) {
        case 'ready':
          // A (re)loaded view (hidden views are not retained): what the one before asked is dropped.
          this.router.reset();
          this.push();
          break;
        default:
          unreachable(m);
      }
    });
    view.onDidChangeVisibility(() => view.visible && this.push());
    view.onDidDispose(() => (this.view = undefined));
  }

  private push(): void {
    const msg: ToInspector = { type: 'inspector/state', state: this.models.state };
    void this.view?.webview.postMessage(msg);
  }

  dispose(): void {
    this.router.dispose();
    this.sub.dispose();
  }
}
