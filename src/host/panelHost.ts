/**
 * What every Residual webview panel shares: one panel per kind, revived after a reload by its serializer, opened in
 * Residual's column, its requests served by a RequestRouter, and the last state replayed when its webview (re)connects.
 * A panel's controller extends this and supplies its handlers, its notifications and its replay.
 */
import * as vscode from 'vscode';
import type { HostMessage, RequestMap, WebviewMessage } from '../protocol';
import { residualColumn, trackPanel } from './panelColumn';
import { RequestRouter, type Handlers } from './requests';
import { webviewHtml, webviewOptions, type WebviewEntry } from './webviewHtml';

export interface PanelKind {
  viewType: string;
  title: string;
  entry: WebviewEntry;
}

export abstract class PanelHost<R extends RequestMap, Event extends { type: string }, Notification extends { type: string }> implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  protected readonly router: RequestRouter<R>;
  protected readonly disposables: vscode.Disposable[] = [];

  constructor(
    protected readonly context: vscode.ExtensionContext,
    protected readonly log: vscode.OutputChannel,
    private readonly kind: PanelKind,
    handlers: Handlers<R>,
  ) {
    this.router = new RequestRouter(kind.title, handlers, (m) => this.post(m), log);
    this.disposables.push(this.router, vscode.window.registerWebviewPanelSerializer(kind.viewType, { deserializeWebviewPanel: async (p) => this.adopt(p) }));
  }

  /** Shows the panel in Residual's column, creating it if needed. */
  show(preserveFocus = true): void {
    if (this.panel) {
      this.panel.reveal(undefined, preserveFocus);
      return;
    }
    const panel = vscode.window.createWebviewPanel(this.kind.viewType, this.kind.title, { viewColumn: residualColumn(), preserveFocus }, {
      ...webviewOptions(this.context.extensionUri),
      retainContextWhenHidden: true,
    });
    this.adopt(panel);
  }

  get isOpen(): boolean {
    return !!this.panel;
  }

  private adopt(panel: vscode.WebviewPanel): void {
    this.panel = panel;
    trackPanel(panel);
    panel.iconPath = vscode.Uri.joinPath(this.context.extensionUri, 'media', 'residual.svg');
    panel.webview.options = webviewOptions(this.context.extensionUri);
    panel.webview.html = webviewHtml(panel.webview, this.context.extensionUri, this.kind.entry, this.kind.title);
    const subs = [
      panel.webview.onDidReceiveMessage((m: WebviewMessage<R, Notification>) => {
        if (this.router.handle(m)) return;
        if (m.type === 'ready') {
          // A (re)loaded webview: requests of the one before it are dropped, then its state is replayed.
          this.router.reset();
          for (const r of this.replay()) void panel.webview.postMessage(r);
        }
        void this.notified(m).catch((e) => this.router.logError(`${this.kind.title} ${m.type}`, e));
      }),
      panel.onDidDispose(() => {
        this.panel = undefined;
        this.router.reset();
        this.panelClosed();
        subs.forEach((d) => d.dispose());
      }),
    ];
  }

  protected post(m: HostMessage<Event>): void {
    void this.panel?.webview.postMessage(m);
  }

  /** The panel was closed (its requests are already dropped); host jobs that only it could show may stop here. */
  protected panelClosed(): void {}

  /** Messages that bring a (re)connected webview up to date. */
  protected abstract replay(): HostMessage<Event>[];

  /** A notification from the webview (no reply); `ready` comes here after the replay. */
  protected abstract notified(m: Notification): Promise<void>;

  dispose(): void {
    this.router.cancelAll();
    this.panel?.dispose();
    this.disposables.forEach((d) => d.dispose());
  }
}
