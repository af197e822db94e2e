/**
 * The extension's cache folder (the engine's cache.ts, rooted in the extension's global storage) and the
 * "Residual: Clear Cache" command.
 */
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { clearCache, formatBytes, setDefaultCacheDir } from '../engine/cache';
import { errorMessage } from '../engine/errors';

/** `<globalStorage>/cache`: ONNX graphs (onnx/) and float16 weight copies (half/). */
export function extensionCacheDir(context: vscode.ExtensionContext): string {
  return vscode.Uri.joinPath(context.globalStorageUri, 'cache').fsPath;
}

/**
 * Makes the extension's cache folder the engine's default (every session the extension creates, the circuits'
 * too, goes there) and removes the cache of earlier versions (`<globalStorage>/onnx`: hard links without records,
 * which could keep deleted models on disk). Returns the folder.
 */
export function useExtensionCache(context: vscode.ExtensionContext, log: vscode.OutputChannel): string {
  const dir = extensionCacheDir(context);
  setDefaultCacheDir(dir);
  const legacy = vscode.Uri.joinPath(context.globalStorageUri, 'onnx').fsPath;
  if (fs.existsSync(legacy)) {
    try {
      fs.rmSync(legacy, { recursive: true, force: true });
      log.appendLine(`removed the cache of an earlier version: ${legacy}`);
    } catch (e) {
      log.appendLine(`could not remove the cache of an earlier version (${legacy}): ${(e as Error).message}`);
    }
  }
  return dir;
}

/** Residual: Clear Cache — empties the cache folder, keeping what a loaded model or running session uses. */
export async function clearCacheCommand(context: vscode.ExtensionContext, log: vscode.OutputChannel): Promise<void> {
  const dir = extensionCacheDir(context);
  try {
    const r = clearCache(dir, (m) => log.appendLine(m));
    const kept = r.inUse.length ? ` ${r.inUse.length} in use by the loaded model were kept (select another model or reload the window, then clear again to remove them).` : '';
    const skipped = r.skipped.length ? ` Skipped ${r.skipped.join(', ')}: another process is cleaning it now; clear again in a moment.` : '';
    const text = r.removed.length
      ? `Residual: cleared the cache: ${r.removed.length} entr${r.removed.length === 1 ? 'y' : 'ies'} removed, ${formatBytes(r.freedBytes)} freed.${kept}`
      : `Residual: the cache is already empty.${kept}`;
    const message = text + skipped;
    log.appendLine(`${message} (${dir})`);
    void vscode.window.showInformationMessage(message);
  } catch (e) {
    void vscode.window.showErrorMessage(`Residual: ${errorMessage(e)}`);
  }
}
