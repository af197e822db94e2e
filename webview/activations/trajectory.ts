/** The chart.js line chart of a target token's probability and rank across the logit-lens read-outs. */
import { showToken } from '../ui';
import { colours, drawChart } from '../charts';

export interface TrajectorySeries {
  label: string;
  prob: number[];
  rank: number[];
}

export function drawTrajectory(canvas: HTMLCanvasElement, hooks: string[], series: TrajectorySeries): void {
  const { fg, grid, blue, orange } = colours();
  const { prob, rank } = series;
  // "Early excitation": the read-out where the target's probability peaks.
  const peak = prob.indexOf(Math.max(...prob));
  drawChart(canvas, {
    type: 'line',
    data: {
      labels: hooks.map((h) => h.replace('blocks.', 'L').replace('.hook_', ' ')),
      datasets: [
        {
          label: `p(${showToken(series.label)})`,
          data: prob,
          yAxisID: 'prob',
          borderColor: blue,
          backgroundColor: blue,
          pointRadius: prob.map((_, i) => (i === peak ? 6 : 3)),
        },
        // Rank 0 cannot sit on a log axis: plot rank + 1 (the axis title says so).
        { label: 'rank', data: rank.map((r) => r + 1), yAxisID: 'rank', borderColor: orange, backgroundColor: orange, borderDash: [4, 3] },
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
              ctx.dataset.yAxisID === 'prob' ? `probability ${(Number(ctx.raw) * 100).toFixed(3)}%${ctx.dataIndex === peak ? ' (peak)' : ''}` : `rank ${Number(ctx.raw) - 1}`,
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
  canvas.dataset.peak = String(peak);
}
