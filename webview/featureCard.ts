/**
 * The parts of a feature card both panels show (a transcoder feature in Circuit, a residual-stream SAE feature in
 * Activations): its activation at every position of the prompt, the tokens its decoder row pushes up and down, and
 * its top activating contexts when the folder has a feature index.
 */
import type { FeatureCard } from '../src/protocol';
import { el, showToken } from './ui';

export function featureCardBody(c: FeatureCard): HTMLElement[] {
  const out: HTMLElement[] = [];
  if (c.frequency !== undefined) out.push(el('div', 'muted', `fires on ${(c.frequency * 100).toFixed(2)}% of tokens · max activation ${c.maxAct?.toPrecision(3)}`));
  out.push(el('h3', undefined, 'Activation on this prompt'));
  const bars = el('div', 'actbars');
  const max = Math.max(1e-9, ...c.activations.map(Math.abs));
  c.activations.forEach((a, i) => {
    const b = el('div', 'actbar');
    const fill = el('div', 'fill');
    fill.style.height = `${((Math.abs(a) / max) * 100).toFixed(0)}%`;
    b.append(fill, el('span', 'tok', showToken(c.tokens[i] ?? '')));
    b.title = `position ${i} ${JSON.stringify(c.tokens[i])}: ${a.toPrecision(4)}`;
    bars.append(b);
  });
  out.push(bars);
  const logits = el('div', 'pair');
  const col = (title: string, items: [string, number][]) => {
    const d = el('div');
    d.append(el('h3', undefined, title));
    const ul = el('ul', 'toks');
    for (const [t, v] of items) ul.append(el('li', 'mono', `${showToken(t)}  ${v.toPrecision(3)}`));
    d.append(ul);
    return d;
  };
  logits.append(col('Pushes up', c.top), col('Pushes down', c.bottom));
  out.push(logits, el('p', 'hint', `Output tokens from the ${c.source}.`));
  if (c.contexts?.length) {
    out.push(el('h3', undefined, 'Top activating contexts'));
    const ul = el('ul', 'contexts');
    // One line each: the activating token highlighted in the middle, its neighbours cut at the ends.
    for (const x of c.contexts) {
      const li = el('li', 'mono');
      const before = el('span', 'ctx-before', showToken(x.before).slice(-48));
      li.append(el('span', 'ctx-act muted', x.act.toPrecision(3)), before, el('mark', undefined, showToken(x.peak)), el('span', 'ctx-after', showToken(x.after).slice(0, 48)));
      li.title = `${x.before}[${x.peak}]${x.after}`;
      ul.append(li);
    }
    out.push(ul);
  }
  return out;
}
