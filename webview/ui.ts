/**
 * The webviews' only contact with the UI toolkit and the VS Code webview API, so switching toolkits
 * (@vscode/webview-ui-toolkit is unmaintained upstream since 2025; @vscode-elements/elements is its successor) is a
 * one-file change.
 */
import {
  provideVSCodeDesignSystem,
  vsCodeButton,
  vsCodeDivider,
  vsCodeDropdown,
  vsCodeOption,
  vsCodeProgressRing,
} from '@vscode/webview-ui-toolkit';

provideVSCodeDesignSystem().register(vsCodeButton(), vsCodeDivider(), vsCodeDropdown(), vsCodeOption(), vsCodeProgressRing());

interface VsCodeApi<S> {
  postMessage(message: unknown): void;
  getState(): S | undefined;
  setState(state: S): void;
}
declare function acquireVsCodeApi<S>(): VsCodeApi<S>;

/** The typed bridge to the extension host. */
export function hostBridge<Out, S>() {
  const api = acquireVsCodeApi<S>();
  return {
    post: (m: Out) => api.postMessage(m),
    getState: () => api.getState(),
    setState: (s: S) => api.setState(s),
  };
}

/** Creates an element with a class and text (always textContent: model output is never parsed as HTML). */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function button(label: string, onClick: () => void, appearance: 'primary' | 'secondary' | 'icon' = 'secondary'): HTMLElement {
  const b = document.createElement('vscode-button');
  b.setAttribute('appearance', appearance);
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}

/** A badge. Not the toolkit's vscode-badge: its template sets an inline style attribute, which our CSP blocks. */
export function badge(text: string): HTMLElement {
  return el('span', 'badge', text);
}

export function divider(): HTMLElement {
  return document.createElement('vscode-divider');
}

export function spinner(): HTMLElement {
  return document.createElement('vscode-progress-ring');
}

/** A dropdown whose value changes call `onChange`. */
export function dropdown(options: { value: string; label: string }[], value: string, onChange: (v: string) => void, id?: string): HTMLElement {
  const d = document.createElement('vscode-dropdown') as HTMLElement & { value: string };
  if (id) d.id = id;
  for (const o of options) {
    const opt = document.createElement('vscode-option') as HTMLElement & { value: string };
    opt.setAttribute('value', o.value);
    opt.textContent = o.label;
    if (o.value === value) opt.setAttribute('selected', '');
    d.appendChild(opt);
  }
  d.addEventListener('change', () => onChange(d.value));
  return d;
}

/** A theme colour from VS Code's CSS variables (for canvas drawing, which cannot use var()). */
export function themeColor(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(`--vscode-${name}`).trim();
  return v || fallback;
}

/** Token text with whitespace made visible. */
export function showToken(text: string): string {
  return text.replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '→').replace(/\r/g, '␍') || '∅';
}
