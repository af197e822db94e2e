/**
 * The Activations panel: a header, then tabs — Overview (tokens, prediction, residual heatmap, logit lens,
 * trajectory), Attention, Layers (update size, MLP sparsity, massive activations, spectra), Patching, Logit
 * attribution, Features (a residual-stream SAE), Compare.
 */
import { unreachable, type Analysis, type ActivationsTab } from '../../src/protocol';
import { el, tabs, onThemeChange } from '../ui';
import { attentionView, resetQk } from './attention';
import { compareView, hasComparison, setComparison } from './compare';
import { dlaView, resetDla } from './dla';
import { featuresView, resetFeatures } from './features';
import { resetPatchscope } from './patchscope';
import { layersView } from './layers';
import { header, overview } from './overview';
import { patchingView, resetPatching } from './patching';
import { getState, host, notice, onRender, update } from './store';

const app = document.getElementById('app')!;

/** The analysis job the panel is waiting for: a superseded job's late cancel or error says nothing. */
let waitingFor: number | undefined;

host.onEvent((m) => {
  switch (m.type) {
    case 'analysis/started':
      waitingFor = m.requestId;
      app.dataset.state = 'running';
      notice('running', `Analysing “${m.preview}”${m.file ? ` from ${m.file}` : ''}…`, true, () => host.cancelJob(m.requestId));
      break;
    case 'analysis/result': {
      waitingFor = undefined;
      app.dataset.request = String(m.requestId);
      resetPatching();
      resetDla();
      resetPatchscope();
      resetFeatures();
      resetQk();
      // A new analysis: the Compare tab's pair is the old one, so it does not stay on screen. The typed attribution
      // tokens stay (the same contrast is often asked of several prompts); the attribution shown goes.
      const dla = getState().dla;
      update({
        analysis: m.analysis,
        file: m.file,
        position: m.analysis.tokens.length - 1,
        customTarget: undefined,
        corrupted: undefined,
        dla: dla && { target: dla.target, contrast: dla.contrast },
        // The reading belongs to the old analysis; the typed target prompt stays.
        patchscope: undefined,
        ...(getState().tab === 'compare' ? { tab: 'overview' as const } : {}),
      });
      // After the next frame the panel is painted: report it, so the host can log command-to-panel latency.
      requestAnimationFrame(() => host.notify({ type: 'analysis/rendered', requestId: m.requestId }));
      break;
    }
    case 'analysis/error':
      if (waitingFor !== undefined && m.requestId !== waitingFor) break;
      waitingFor = undefined;
      app.dataset.state = 'error';
      notice('error', m.message);
      break;
    case 'analysis/cancelled':
      if (waitingFor !== undefined && m.requestId !== waitingFor) break;
      waitingFor = undefined;
      app.dataset.state = getState().analysis ? 'ready' : 'empty';
      notice('info', 'Analysis cancelled.');
      break;
    case 'compare/result':
      setComparison(m);
      update({ tab: 'compare' });
      break;
    default:
      unreachable(m);
  }
});

function render(): void {
  const s = getState();
  const a = s.analysis;
  app.replaceChildren();
  if (!a) {
    app.dataset.state = 'empty';
    app.append(el('p', 'empty', 'Select text in an editor and run “Residual: Analyze Selection” (editor context menu or command palette).'));
    return;
  }
  app.dataset.state = 'ready';
  const pos = Math.max(0, Math.min(a.tokens.length - 1, s.position ?? a.tokens.length - 1));
  app.append(header(a, s.file));
  if (a.truncated) {
    const t = a.truncated;
    app.append(el('div', 'notice warning', `Analysed only the last ${t.kept} tokens${t.total ? ` of ${t.total}` : ''} (from character ${t.firstChar}): the selection is longer than residual.maxTokens or the model context.`));
  }
  const active: ActivationsTab = s.tab ?? 'overview';
  const views: { id: ActivationsTab; label: string; make: (a: Analysis) => HTMLElement }[] = [
    { id: 'overview', label: 'Overview', make: (x) => overview(x, pos) },
    { id: 'attention', label: 'Attention', make: attentionView },
    { id: 'layers', label: 'Layers', make: layersView },
    { id: 'patching', label: 'Patching', make: patchingView },
    { id: 'dla', label: 'Logit attribution', make: (x) => dlaView(x, pos) },
    { id: 'features', label: 'Features', make: (x) => featuresView(x, pos) },
    { id: 'compare', label: hasComparison() ? 'Compare ●' : 'Compare', make: () => compareView(render) },
  ];
  // Only the active tab is built (charts and canvases are costly); switching tabs re-renders.
  app.append(tabs(views.map((v) => ({ id: v.id, label: v.label, view: v.id === active ? v.make(a) : el('div') })), active, (id) => update({ tab: id as ActivationsTab })));
}

onRender(render);
onThemeChange(render);
render();
