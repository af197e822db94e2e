/**
 * The one place webview HTML is made: strict CSP (no network, scripts by nonce only, styles from our own files),
 * resources only from dist/webview and media.
 */
import * as crypto from 'node:crypto';
import * as vscode from 'vscode';

export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions {
  return {
    enableScripts: true,
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist', 'webview'), vscode.Uri.joinPath(extensionUri, 'media')],
  };
}

/** The webview bundles scripts/build.mjs makes (dist/webview/<entry>.js). */
export type WebviewEntry = 'activations' | 'inspector' | 'steering' | 'circuit';

export function webviewHtml(webview: vscode.Webview, extensionUri: vscode.Uri, entry: WebviewEntry, title: string): string {
  const nonce = crypto.randomBytes(16).toString('base64');
  const script = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', 'webview', `${entry}.js`));
  const style = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'media', 'webview.css'));
  const csp = [
    "default-src 'none'",
    `img-src ${webview.cspSource} data:`,
    `font-src ${webview.cspSource}`,
    // The nonce lets the UI toolkit (FAST) insert its one feature-test <style> element, found through the
    // csp-nonce meta tag; inline style attributes stay blocked.
    `style-src ${webview.cspSource} 'nonce-${nonce}'`,
    `script-src 'nonce-${nonce}'`,
    "connect-src 'none'",
  ].join('; ');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta property="csp-nonce" content="${nonce}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${style}">
<title>${escapeHtml(title)}</title>
</head>
<body data-view="${entry}">
<main id="app" data-state="empty"></main>
<script nonce="${nonce}" src="${script}"></script>
</body>
</html>`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
