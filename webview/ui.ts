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
  vsCodePanels,
  vsCodePanelTab,
  vsCodePanelView,
  vsCodeProgressRing,
  vsCodeTextArea,
  vsCodeTextField,
} from '@vscode/webview-ui-toolkit';

provideVSCodeDesignSystem().register(
  vsCodeButton(),
  vsCodeDivider(),
  vsCodeDropdown(),
  vsCodeOption(),
  vsCodeProgressRing(),
  vsCodePanels(),
  vsCodePanelTab(),
  vsCodePanelView(),
  vsCodeTextField(),
  vsCodeTextArea(),
);

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

/**
 * Calls `redraw` when VS Code switches the colour theme (it changes the body's class and the --vscode-* variables),
 * so charts and canvases, which copy colours when drawn, follow at once.
 */
export function onThemeChange(redraw: () => void): void {
  let theme = document.body.className;
  new MutationObserver(() => {
    if (document.body.className === theme) return;
    theme = document.body.className;
    redraw();
  }).observe(document.body, { attributes: true, attributeFilter: ['class'] });
}

/** Token text with whitespace made visible. */
export function showToken(text: string): string {
  return text.replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '→').replace(/\r/g, '␍') || '∅';
}

/** Tabs (vscode-panels); `onChange` gets the id of the tab the user picked. */
export function tabs(items: { id: string; label: string; view: HTMLElement }[], active: string, onChange: (id: string) => void): HTMLElement {
  const panels = document.createElement('vscode-panels');
  panels.setAttribute('activeid', `tab-${active}`);
  for (const it of items) {
    const tab = document.createElement('vscode-panel-tab');
    tab.id = `tab-${it.id}`;
    tab.textContent = it.label;
    panels.append(tab);
  }
  for (const it of items) {
    const view = document.createElement('vscode-panel-view');
    view.id = `view-${it.id}`;
    view.append(it.view);
    panels.append(view);
  }
  // The toolkit sizes the tab strip's column to its labels, and every tab's content with it: in a narrow column the
  // strip overflows on its own (it scrolls) instead of pushing the content past the edge.
  panels.style.gridTemplateColumns = 'auto minmax(0, 1fr) auto';
  panels.addEventListener('change', (ev) => {
    const id = (ev.target as HTMLElement & { activeid?: string }).activeid;
    if (id && id.startsWith('tab-') && id !== `tab-${active}`) onChange(id.slice(4));
  });
  return panels;
}

export function textField(value: string, placeholder: string, id?: string): HTMLElement & { value: string } {
  const f = document.createElement('vscode-text-field') as HTMLElement & { value: string };
  if (id) f.id = id;
  f.setAttribute('placeholder', placeholder);
  f.setAttribute('value', value);
  return f;
}

export function textArea(value: string, id?: string, rows = 3): HTMLElement & { value: string } {
  const f = document.createElement('vscode-text-area') as HTMLElement & { value: string };
  if (id) f.id = id;
  f.setAttribute('rows', String(rows));
  f.setAttribute('resize', 'vertical');
  f.setAttribute('value', value);
  return f;
}

/** Heat colour for a value in [0, 1] (CSSOM style property, allowed by the CSP). */
export function heat(cell: HTMLElement, f: number, colour = 'orange'): void {
  cell.style.background = `color-mix(in srgb, var(--vscode-charts-${colour}) ${(Math.max(0, Math.min(1, f)) * 85).toFixed(0)}%, transparent)`;
}

/** Diverging heat for a value in [-1, 1]: red positive, blue negative. */
export function divergingHeat(cell: HTMLElement, v: number): void {
  heat(cell, Math.abs(v), v >= 0 ? 'red' : 'blue');
}

/** A wide table in a box that scrolls sideways instead of widening the panel. */
export function scroller(child: HTMLElement): HTMLElement {
  const s = el('div', 'scroller');
  s.append(child);
  return s;
}

/** A heatmap cell for a share of the logit difference (1 = all of it): the value, its colour clamped to ±1. */
export function fractionCell(v: number): HTMLElement {
  const td = el('td', 'cell', Number.isFinite(v) ? v.toFixed(2) : '—');
  td.dataset.value = String(v);
  if (Number.isFinite(v)) divergingHeat(td, Math.max(-1, Math.min(1, v)));
  return td;
}
