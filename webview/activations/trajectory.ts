/** The chart.js line chart of a target token's probability and rank across the logit-lens read-outs. */
import { CategoryScale, Chart, Legend, LinearScale, LineController, LineElement, LogarithmicScale, PointElement, Tooltip } from 'chart.js';
import type { Analysis } from '../../src/protocol';
import { showToken, themeColor } from '../ui';

Chart.register(LineController, LineElement, PointElement, LinearScale, LogarithmicScale, CategoryScale, Tooltip, Legend);

let chart: Chart | undefined;

export function drawTrajectory(canvas: HTMLCanvasElement, a: Analysis, pos: number): void {
  chart?.destroy();
  const fg = themeColor('editor-foreground', '#888');
  const grid = themeColor('editorWidget-border', 'rgba(128,128,128,0.3)');
  const blue = themeColor('charts-blue', '#3794ff');
  const orange = themeColor('charts-orange', '#d18616');
  const prob = a.readouts.map((_, r) => a.target.prob[r][pos]);
  const rank = a.readouts.map((_, r) => a.target.rank[r][pos]);
  // "Early excitation": the read-out where the target's probability peaks.
  const peak = prob.indexOf(Math.max(...prob));
  chart = new Chart(canvas, {
    type: 'line',
    data: {
      labels: a.readouts.map((r) => r.hook.replace('blocks.', 'L').replace('.hook_', ' ')),
      datasets: [
        {
          label: `p(${showToken(a.target.texts[pos])})`,
          data: prob,
          yAxisID: 'prob',
          borderColor: blue,
          backgroundColor: blue,
          pointRadius: prob.map((_, i) => (i === peak ? 6 : 3)),
        },
        { label: 'rank', data: rank, yAxisID: 'rank', borderColor: orange, backgroundColor: orange, borderDash: [4, 3] },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      plugins: {
        legend: { labels: { color: fg } },
        tooltip: {
          callbacks: {
            label: (ctx) =>
              ctx.dataset.yAxisID === 'prob' ? `probability ${(Number(ctx.raw) * 100).toFixed(3)}%${ctx.dataIndex === peak ? ' (peak)' : ''}` : `rank ${ctx.raw}`,
          },
        },
      },
      scales: {
        x: { ticks: { color: fg }, grid: { color: grid } },
        prob: { type: 'linear', position: 'left', min: 0, max: 1, ticks: { color: blue }, grid: { color: grid }, title: { display: true, text: 'probability', color: blue } },
        rank: { type: 'logarithmic', position: 'right', reverse: true, min: 1, ticks: { color: orange }, grid: { display: false }, title: { display: true, text: 'rank + 1 (log)', color: orange } },
      },
    },
  });
  // Rank 0 cannot sit on a log axis; plot rank + 1 and say so in the axis title.
  chart.data.datasets[1].data = rank.map((r) => r + 1);
  chart.update();
  canvas.dataset.peak = String(peak);
}
