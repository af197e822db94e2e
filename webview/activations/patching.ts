/**
 * Patching tab: the analysed text is the clean prompt; the user edits a corrupted copy. For each block and position
 * the clean residual vector is patched into the corrupted run, and the heatmap shows how much of the logit
 * difference between the two answers it restores (1 = all of it, 0 = none).
 */
import { RESID_POINTS, type Analysis, type CorruptionSuggestion, type PatchingResult, type ResidPoint } from '../../src/protocol';
import { failureText, RequestError } from '../host';
import { PanelJob } from './job';
import { button, dropdown, el, fractionCell, scroller, showToken, textArea, textField } from '../ui';
import { section } from './overview';
import { pathPatchingView, resetPathPatching } from './pathPatching';
import { getState, host, update } from './store';

const job = new PanelJob<{ result: PatchingResult; notes: string[] }>('Patching', 'patch-progress', 'runs');
let point: ResidPoint = 'hook_resid_pre';
const answerTexts = { clean: '', corrupted: '' };

/** The suggestion for the analysed text (asked once per text), and token counts by text. */
let suggested: { forText: string; suggestion?: CorruptionSuggestion } | undefined;
let askedFor = '';
const counts = new Map<string, number>();
let countTimer: ReturnType<typeof setTimeout> | undefined;

/** A new analysis: the last run, its error and its progress belonged to the previous clean prompt. */
export function resetPatching(): void {
  job.reset();
  resetPathPatching();
  // Counts depend on the model and on the chat form of the analysis, not only on the text.
  counts.clear();
  answerTexts.clean = '';
  answerTexts.corrupted = '';
}

function askSuggestion(): void {
  host.request('patching/suggest', {}).result.then(
    (m) => {
      suggested = m;
      // The suggestion fills the form unless the user has written a corrupted prompt already.
      if (m.suggestion && getState().analysis?.text === m.forText && getState().corrupted === undefined) update({ corrupted: m.suggestion.corrupted });
      else update({});
    },
    (e) => {
      if (e instanceof RequestError && e.cancelled) return;
      job.error = failureText(e);
      update({});
    },
  );
}

/** The corrupted prompt and the answers as typed (path patching, below the form, runs on the same pair). */
function pairParams(a: Analysis): { corrupted: string; cleanAnswer?: string; corruptedAnswer?: string } {
  return { corrupted: getState().corrupted ?? a.text, cleanAnswer: answerTexts.clean || undefined, corruptedAnswer: answerTexts.corrupted || undefined };
}

export function patchingView(a: Analysis): HTMLElement {
  const root = el('div', 'patching');
  const form = el('div', 'form');
  form.append(el('label', undefined, 'Clean prompt (the analysed text):'), el('pre', 'preview', a.text));
  form.append(el('label', undefined, 'Corrupted prompt (edit it; it must have the same number of tokens):'));
  if (askedFor !== a.text) {
    askedFor = a.text;
    askSuggestion();
  }
  const corrupted = textArea(getState().corrupted ?? a.text, 'corrupted', 3);
  corrupted.addEventListener('input', () => {
    update({ corrupted: corrupted.value }, false);
    requestCount(corrupted.value);
  });
  form.append(corrupted);
  const info = el('div', 'hint');
  info.id = 'patch-counts';
  info.dataset.clean = String(a.tokens.length);
  form.append(info);
  requestCount(corrupted.value);
  if (suggested?.forText === a.text) {
    const sg = suggested.suggestion;
    form.append(
      el(
        'div',
        'hint',
        sg
          ? `Suggested corruption: ${sg.change}${sg.changesPrediction ? ' (it changes the top prediction)' : ' (same token count; the top prediction stays the same — try another edit for a stronger contrast)'}.`
          : 'No word or number could be swapped at the same token length: edit the corrupted prompt by hand.',
      ),
    );
  }
  const answers = el('div', 'row');
  // Kept across redraws (a finished run redraws the tab).
  const cleanAns = textField(answerTexts.clean, 'clean answer (default: its top prediction)', 'clean-answer');
  const corrAns = textField(answerTexts.corrupted, 'corrupted answer (default: its top prediction)', 'corrupted-answer');
  cleanAns.addEventListener('input', () => (answerTexts.clean = cleanAns.value));
  corrAns.addEventListener('input', () => (answerTexts.corrupted = corrAns.value));
  answers.append(cleanAns, corrAns);
  form.append(answers);
  const controls = el('div', 'row');
  controls.append(
    el('span', undefined, 'Patch at'),
    dropdown(
      RESID_POINTS.map((p) => ({ value: p, label: `blocks.*.${p}` })),
      point,
      (v) => (point = v as ResidPoint),
      'patch-point',
    ),
  );
  if (job.running) controls.append(...job.runningControls());
  else {
    controls.append(
      button('Run patching', () => {
        const params = { ...pairParams(a), point };
        job.start((onProgress) => host.request('patching/run', params, onProgress), () => update({ tab: 'patching' }));
        update({ corrupted: corrupted.value });
      }, 'primary'),
    );
  }
  form.append(controls);
  root.append(section('Activation patching', form));
  if (job.error) {
    const e = el('div', 'notice error', job.error);
    e.id = 'patch-error';
    root.append(e);
  }
  if (job.result) root.append(section('Restored fraction of the logit difference', resultView(job.result.result, job.result.notes)));
  root.append(pathPatchingView(a, () => pairParams(a)));
  return root;
}

function resultView(r: PatchingResult, notes: string[]): HTMLElement {
  const wrap = el('div');
  wrap.append(
    el('p', 'hint', `Answers: clean ${JSON.stringify(r.answers.clean.text)} vs corrupted ${JSON.stringify(r.answers.corrupted.text)}. Logit difference: clean ${r.ldClean.toFixed(3)}, corrupted ${r.ldCorrupted.toFixed(3)}. ${r.restored.length * (r.restored[0]?.length ?? 0)} runs in ${r.ms.toFixed(0)} ms.`),
  );
  for (const n of notes) wrap.append(el('p', 'notice warning', n));
  const table = el('table', 'grid heat');
  table.id = 'patch-grid';
  const hr = el('tr');
  hr.append(el('th'));
  r.corrupted.tokens.forEach((t, p) => {
    const th = el('th', 'col', showToken(t.text));
    th.title = `position ${p}: clean ${JSON.stringify(r.clean.tokens[p]?.text)} / corrupted ${JSON.stringify(t.text)}`;
    if (r.clean.tokens[p]?.text !== t.text) th.classList.add('differs');
    hr.append(th);
  });
  table.append(hr);
  r.restored.forEach((row, l) => {
    const tr = el('tr');
    tr.dataset.layer = String(l);
    tr.append(el('th', 'rowlabel', `blocks.${l}.${r.hook.replace(/^blocks\.\*\./, '')}`));
    row.forEach((v, p) => {
      const td = fractionCell(v);
      td.title = `patch blocks.${l} at position ${p}: restores ${(v * 100).toFixed(1)}% of the logit difference`;
      tr.append(td);
    });
    table.append(tr);
  });
  wrap.append(scroller(table), el('p', 'hint', 'Red: restores the clean behaviour; blue: pushes further towards the corrupted answer. Columns whose tokens differ between the prompts are underlined.'));
  return wrap;
}

/** Asks the host for the corrupted prompt's token count (debounced while typing). */
function requestCount(text: string): void {
  if (counts.has(text)) {
    // The form may not be in the page yet (a redraw builds it first).
    requestAnimationFrame(showCounts);
    return;
  }
  if (countTimer) clearTimeout(countTimer);
  countTimer = setTimeout(
    () =>
      host.request('patching/count', { text }).result.then(
        (r) => {
          counts.set(text, r.tokens);
          showCounts();
        },
        () => undefined, // superseded by a newer count, or the model failed (the run will say so)
      ),
    250,
  );
}

/** "clean: 9 tokens · corrupted: 9 tokens", marked when they differ. */
function showCounts(): void {
  const info = document.getElementById('patch-counts');
  const field = document.getElementById('corrupted') as (HTMLElement & { value: string }) | null;
  if (!info || !field) return;
  const clean = Number(info.dataset.clean);
  const n = counts.get(field.value);
  info.textContent = `clean: ${clean} tokens · corrupted: ${n === undefined ? '…' : `${n} tokens`}${n !== undefined && n !== clean ? ' — must be equal' : ''}`;
  info.classList.toggle('error-text', n !== undefined && n !== clean);
}
