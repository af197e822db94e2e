/** chart.js set-up shared by the panel's charts: registered parts, theme colours, one live chart per canvas id. */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  Tooltip,
  type ChartConfiguration,
} from 'chart.js';
import { themeColor } from './ui';

Chart.register(BarController, BarElement, LineController, LineElement, PointElement, LinearScale, LogarithmicScale, CategoryScale, Tooltip, Legend);

const live = new Map<string, Chart>();

/** Draws `config` into `canvas`, replacing the chart previously drawn under the same id. */
export function drawChart(canvas: HTMLCanvasElement, config: ChartConfiguration): Chart {
  live.get(canvas.id)?.destroy();
  // The theme colour the chart was drawn with (charts copy colours when drawn; see onThemeChange).
  canvas.dataset.fg = colours().fg;
  const chart = new Chart(canvas, config);
  live.set(canvas.id, chart);
  return chart;
}

export function colours() {
  return {
    fg: themeColor('editor-foreground', '#888'),
    grid: themeColor('editorWidget-border', 'rgba(128,128,128,0.3)'),
    blue: themeColor('charts-blue', '#3794ff'),
    orange: themeColor('charts-orange', '#d18616'),
    red: themeColor('charts-red', '#f14c4c'),
    green: themeColor('charts-green', '#89d185'),
    purple: themeColor('charts-purple', '#b180d7'),
  };
}
