/** The Inspector side-bar view: model, provider (with every fallback attempt) and the last analysis. */
import { formatDeviation, INSPECTOR_STATE_VERSION, unreachable, type InspectorCommand, type InspectorEvent, type InspectorRequests, type InspectorState } from '../../src/protocol';
import { failureText, hostClient } from '../host';
import { badge, button, divider, el, showToken, spinner } from '../ui';

const host = hostClient<InspectorRequests, InspectorEvent, { type: 'ready' }, InspectorState>(INSPECTOR_STATE_VERSION);
const app = document.getElementById('app')!;

host.onEvent((m) => {
  switch (m.type) {
    case 'inspector/state':
      host.setState(m.state);
      render(m.state);
      break;
    default:
      unreachable(m.type);
  }
});

function render(s: InspectorState): void {
  app.dataset.state = s.status;
  app.replaceChildren();
  const model = el('section');
  model.append(el('h2', undefined, 'Model'));
  const name = el('div', 'model-name', s.model?.name ?? (s.status === 'loading' ? 'loading…' : 'not loaded yet'));
  name.id = 'model-name';
  model.append(name);
  if (s.status === 'loading' || s.status === 'running') model.append(spinner());
  if (s.model) {
    const m = s.model;
    const heads = m.n_kv_heads && m.n_kv_heads !== m.n_heads ? `${m.n_heads} heads (${m.n_kv_heads} key/value)` : `${m.n_heads} heads`;
    const precision = m.precision && m.precision !== 'float32' ? ` → ${m.precision}` : '';
    const info = el('div', 'muted', `${m.architecture} · ${m.n_layers} layers · d_model ${m.d_model} · ${heads} · vocab ${m.vocab_size} · ctx ${m.n_ctx} · ${m.dtype}${precision}`);
    info.id = 'model-info';
    model.append(info);
    if (m.precision_reason) {
      const dev = m.float16_max_abs_dlogit;
      const line = el('div', 'muted', `${m.precision} (${m.precision_reason})${dev === undefined ? '' : dev === null ? ` · deviation ${m.float16_deviation_note ?? 'not measured'}` : ` · max |Δlogit| vs float32 ${dev.toPrecision(2)} on a probe prompt`}`);
      line.id = 'precision';
      model.append(line);
    }
  }
  if (s.modelDir) model.append(el('div', 'path muted', s.modelDir));
  if (s.error) model.append(el('div', 'notice error', s.error));
  const prov = el('div', 'provider-line');
  prov.append(el('span', undefined, 'Provider: '));
  const b = badge(s.provider ? s.provider.toUpperCase() : '—');
  b.id = 'provider';
  prov.append(b);
  if (s.loadMs !== undefined) prov.append(el('span', 'muted', ` loaded in ${s.loadMs.toFixed(0)} ms`));
  model.append(prov);
  const parity = parityText(s.parity);
  if (parity) {
    const line = el('div', s.parity?.status === 'failed' ? 'notice error' : 'muted', parity);
    line.id = 'parity';
    model.append(line);
  }
  if (s.adapter) {
    const a = s.adapter;
    const line = el('div', 'muted', `Adapter: ${a.description} (${[a.vendor, a.architecture, a.type].filter(Boolean).join(', ')})${a.shaderF16 ? ' · shader-f16' : ''}`);
    line.id = 'adapter';
    model.append(line);
  }
  if (s.attempts?.length) {
    const ul = el('ul', 'attempts');
    ul.id = 'attempts';
    for (const a of s.attempts) {
      const text = a.ok ? 'in use' : `${a.skipped ? 'not tried' : 'failed'}: ${a.reason ?? 'unknown reason'}`;
      ul.append(el('li', a.ok ? 'ok' : 'failed', `${a.provider}: ${text}`));
      if (a.ok && a.warning) ul.append(el('li', 'notice warning', a.warning));
    }
    model.append(ul);
  }
  if (s.chat) model.append(chatLine(s.chat));
  const actions = el('div', 'actions');
  actions.append(
    button('Analyze Selection', () => run('residual.analyzeSelection'), 'primary'),
    button('Trace Circuit', () => run('residual.traceCircuit')),
    button('Steering…', () => run('residual.openSteering')),
    button('Select Model…', () => run('residual.selectModel')),
    button('Log', () => run('residual.showLog')),
  );
  model.append(actions);
  app.append(model, divider());

  const last = el('section');
  last.id = 'last-analysis';
  last.append(el('h2', undefined, 'Last analysis'));
  if (!s.last) {
    last.append(el('p', 'muted', 'Nothing analysed yet. Select text in an editor and run Analyze Selection.'));
  } else {
    last.append(el('div', 'preview', `“${s.last.preview}”`));
    last.append(el('div', 'muted', `${s.last.file ?? ''} · ${s.last.tokens} tokens${s.last.chatAdded !== undefined ? ` (chat form: ${s.last.chatAdded} from the template)` : ''} · ${s.last.ms.toFixed(0)} ms`));
    if (s.last.truncated) last.append(el('div', 'notice warning', s.last.truncated));
    const ol = el('ol', 'top');
    for (const t of s.last.top) ol.append(el('li', undefined, `${showToken(t.text)}  ${(t.prob * 100).toFixed(1)}%`));
    last.append(ol, button('Open Activations panel', () => run('residual.showActivations')));
  }
  app.append(last);
}

/** Runs one of the commands the Inspector may run; a failure shows under the buttons. */
function run(command: InspectorCommand): void {
  host.request('command/run', { command }).result.catch((e) => {
    const n = el('div', 'notice error', failureText(e));
    n.id = 'inspector-error';
    document.getElementById('inspector-error')?.remove();
    app.append(n);
  });
}

const saved = host.getState();
if (saved) render(saved);

/** The chat template line: whether selections run as a user turn, with the switch (residual.chat). */
function chatLine(c: NonNullable<InspectorState['chat']>): HTMLElement {
  const line = el('div', c.error ? 'notice error' : 'muted');
  line.id = 'chat';
  if (c.error) {
    line.textContent = `Chat template cannot be read: ${c.error}`;
    return line;
  }
  if (!c.template) {
    line.textContent = c.on ? 'Chat form is on, but this model has no chat template: selections run as plain text. ' : 'Chat template: none.';
    if (c.on) line.append(button('Turn off', () => run('residual.toggleChat')));
    return line;
  }
  const name = c.template.split(/[\\/]/).pop();
  line.append(el('span', undefined, c.on ? `Chat form: selections run as a user turn (${name}). ` : `Chat template available (${name}); selections run as plain text. `));
  const toggle = button(c.on ? 'Plain text' : 'Use chat form', () => run('residual.toggleChat'));
  toggle.id = 'chat-toggle';
  line.append(toggle);
  return line;
}

/** The parity line: "Parity: max |Δlogit| 9.5e-6 vs float64 reference (12 tokens) · worst hook logits". */
function parityText(p: InspectorState['parity']): string | undefined {
  if (!p) return undefined;
  if (p.status === 'running') return 'Parity: checking against the float64 reference…';
  if (p.status === 'failed') return `Parity check failed: ${p.error}`;
  const r = p.report;
  if (r.skipped) return `Parity: not checked (${r.skipped})`;
  const worst = `worst hook ${r.worst_hook} ${formatDeviation(r.worst_hook_max_abs)}`;
  if (r.max_abs_dlogit === null) return `Parity (first ${r.layers_checked} of ${r.n_layers} layers, ${r.tokens} tokens) vs float64 reference: ${worst}`;
  return `Parity: max |Δlogit| ${formatDeviation(r.max_abs_dlogit)} vs float64 reference (${r.tokens} tokens) · ${worst}`;
}
