/* global uPlot */
// Charts: the overview's SVG sparklines and the stream page's uPlot time series.

const SVG = 'http://www.w3.org/2000/svg';
const SPARK_W = 120;
const SPARK_H = 26;
const SPARK_SPAN_MS = 15 * 60 * 1000;

export const COLORS = {
  line: '#6cb6ff',
  fill: 'rgba(108, 182, 255, 0.14)',
  grid: 'rgba(154, 164, 178, 0.14)',
  axis: '#9aa4b2',
  good: '#3fb950',
  fair: '#d29922',
  poor: '#f85149',
  none: '#6e7681',
  alert: 'rgba(248, 81, 73, 0.13)',
  drop: 'rgba(210, 153, 34, 0.16)',
};

/** A 15-minute bitrate sparkline, `points` = [[ms, kbps], …], right edge = now. */
export function sparkline(points, { quality = 'none' } = {}) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
  svg.setAttribute('width', SPARK_W);
  svg.setAttribute('height', SPARK_H);
  svg.setAttribute('class', `spark spark-${quality}`);
  svg.setAttribute('role', 'img');
  // The 15-minute axis, so a stream that started a minute ago reads as a short line at the right.
  const base = document.createElementNS(SVG, 'line');
  base.setAttribute('x1', 0);
  base.setAttribute('x2', SPARK_W);
  base.setAttribute('y1', SPARK_H - 1.5);
  base.setAttribute('y2', SPARK_H - 1.5);
  base.setAttribute('class', 'spark-base');
  svg.append(base);
  const values = points.map((p) => p[1]).filter((v) => v !== null);
  if (values.length < 2) {
    svg.setAttribute('aria-label', 'not enough bitrate samples yet');
    return svg;
  }
  const now = Date.now();
  const max = Math.max(...values) * 1.1 || 1;
  const x = (t) => Math.max(0, SPARK_W - ((now - t) / SPARK_SPAN_MS) * SPARK_W);
  const y = (v) => SPARK_H - 2 - (v / max) * (SPARK_H - 4);
  const coords = points.filter((p) => p[1] !== null).map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
  const area = document.createElementNS(SVG, 'polygon');
  const first = coords[0].split(',')[0];
  const last = coords[coords.length - 1].split(',')[0];
  area.setAttribute('points', `${first},${SPARK_H} ${coords.join(' ')} ${last},${SPARK_H}`);
  area.setAttribute('class', 'spark-area');
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', coords.join(' '));
  line.setAttribute('class', 'spark-line');
  svg.append(area, line);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  svg.setAttribute('aria-label', `bitrate over 15 minutes, ${Math.round(lo)} to ${Math.round(hi)} kbps`);
  return svg;
}

const pad = (n) => String(n).padStart(2, '0');
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Time axis labels in 24-hour local time; with the day when the range spans days. */
export function timeLabels(u, splits) {
  const span = u.scales.x.max - u.scales.x.min;
  return splits.map((s) => {
    const d = new Date(s * 1000);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    if (span > 2 * 86400) return d.getHours() === 0 && d.getMinutes() === 0 ? `${d.getDate()} ${MONTHS[d.getMonth()]}` : `${d.getDate()} ${MONTHS[d.getMonth()]} ${hm}`;
    if (span < 600) return `${hm}:${pad(d.getSeconds())}`;
    return hm;
  });
}

function legendTime(u, v) {
  if (v === null || v === undefined) return '–';
  const d = new Date(v * 1000);
  const day = `${d.getDate()} ${MONTHS[d.getMonth()]}`;
  return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function xAxis() {
  return {
    stroke: COLORS.axis,
    grid: { stroke: COLORS.grid, width: 1 },
    ticks: { stroke: COLORS.grid, width: 1, size: 4 },
    values: timeLabels,
    size: 28,
    font: '11px system-ui, sans-serif',
  };
}

function axes(unit, valueFormat) {
  return [
    xAxis(),
    {
      stroke: COLORS.axis,
      grid: { stroke: COLORS.grid, width: 1 },
      ticks: { show: false },
      size: 56,
      values: (u, splits) => splits.map((v) => (valueFormat ? valueFormat(v) : v)),
      label: unit,
      labelSize: 16,
      labelFont: '11px system-ui, sans-serif',
      font: '11px system-ui, sans-serif',
    },
  ];
}

/** Shade the time ranges in `chart.spans` ([startMs, endMs|null, colour]) behind the series. */
function spansHook(chart) {
  return (u) => {
    const { ctx, bbox } = u;
    ctx.save();
    for (const [start, end, colour] of chart.spans) {
      const x0 = u.valToPos(start / 1000, 'x', true);
      const x1 = u.valToPos((end ?? Date.now()) / 1000, 'x', true);
      const left = Math.max(bbox.left, Math.min(x0, x1));
      const right = Math.min(bbox.left + bbox.width, Math.max(x0, x1));
      if (right <= left) continue;
      ctx.fillStyle = colour;
      ctx.fillRect(left, bbox.top, Math.max(2, right - left), bbox.height);
    }
    ctx.restore();
  };
}

/**
 * A time-series chart of one metric. `data` is [[unix seconds…], [values…], (min…), (max…)];
 * with a min/max pair the bucket's range is drawn as a band around the mean.
 */
export class MetricChart {
  constructor(root, { title, unit, format, band = false, height = 170, sync = 'stream' }) {
    this.spans = [];
    this.root = root;
    this.band = band;
    const series = [
      { value: legendTime },
      {
        label: title,
        stroke: COLORS.line,
        width: 1.5,
        fill: band ? undefined : COLORS.fill,
        points: { show: false },
        value: (u, v) => (v === null || v === undefined ? '–' : format(v)),
        spanGaps: false,
      },
    ];
    if (band) {
      for (const label of ['min', 'max']) {
        series.push({
          label,
          stroke: 'rgba(108, 182, 255, 0.35)',
          width: 1,
          dash: [3, 3],
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? '–' : format(v)),
        });
      }
    }
    const opts = {
      width: Math.max(280, root.clientWidth || 600),
      height,
      series,
      axes: axes(unit, format),
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1] } },
      cursor: { sync: { key: sync }, points: { size: 6 } },
      legend: { live: true },
      bands: band ? [{ series: [3, 2], fill: 'rgba(108, 182, 255, 0.12)' }] : [],
      hooks: { drawClear: [spansHook(this)] },
    };
    this.plot = new uPlot(opts, [[], [], ...(band ? [[], []] : [])], root);
    this.resizer = new ResizeObserver(() => {
      const width = root.clientWidth;
      if (width && Math.abs(width - this.plot.width) > 4) this.plot.setSize({ width, height });
    });
    this.resizer.observe(root);
  }

  set(data, range) {
    const columns = this.band ? data : data.slice(0, 2);
    this.plot.batch(() => {
      this.plot.setData(columns, false);
      this.plot.setScale('x', { min: range[0], max: range[1] });
    });
  }

  destroy() {
    this.resizer.disconnect();
    this.plot.destroy();
  }
}

/** The quality band over time: one coloured block per sample or bucket, with words on the axis. */
export class QualityStrip {
  constructor(root, { height = 112, sync = 'stream' } = {}) {
    this.root = root;
    this.times = [];
    this.bands = [];
    const rank = { poor: 0, fair: 1, good: 2 };
    this.rank = rank;
    const self = this;
    const opts = {
      width: Math.max(280, root.clientWidth || 600),
      height,
      series: [
        { value: legendTime },
        {
          label: 'Quality',
          stroke: 'transparent',
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? '–' : ['Poor', 'Fair', 'Good'][v]),
          paths: () => null,
        },
      ],
      axes: [
        { ...xAxis(), grid: { show: false } },
        {
          stroke: COLORS.axis,
          size: 56,
          grid: { show: false },
          ticks: { show: false },
          splits: () => [0, 1, 2],
          values: () => ['Poor', 'Fair', 'Good'],
          font: '11px system-ui, sans-serif',
        },
      ],
      scales: { x: { time: true }, y: { range: [-0.5, 2.5] } },
      cursor: { sync: { key: sync }, y: false, points: { show: false } },
      legend: { live: true },
      hooks: {
        draw: [
          (u) => {
            const { ctx, bbox } = u;
            const xs = u.data[0];
            const ys = u.data[1];
            const rowHeight = bbox.height / 3;
            ctx.save();
            for (let i = 0; i < xs.length; i += 1) {
              if (ys[i] === null) continue;
              const x0 = u.valToPos(xs[i], 'x', true);
              const next = i + 1 < xs.length ? xs[i + 1] : xs[i] + self.step;
              const x1 = u.valToPos(Math.min(next, xs[i] + self.step * 1.5), 'x', true);
              const key = ['poor', 'fair', 'good'][ys[i]];
              ctx.fillStyle = COLORS[key];
              const top = bbox.top + (2 - ys[i]) * rowHeight;
              ctx.fillRect(x0, top + 2, Math.max(1, x1 - x0), rowHeight - 4);
            }
            ctx.restore();
          },
        ],
      },
    };
    this.step = 5;
    this.plot = new uPlot(opts, [[], []], root);
    this.resizer = new ResizeObserver(() => {
      const width = root.clientWidth;
      if (width && Math.abs(width - this.plot.width) > 4) this.plot.setSize({ width, height });
    });
    this.resizer.observe(root);
  }

  /** times: unix seconds; qualities: 'good'|'fair'|'poor'|null; step: seconds per block. */
  set(times, qualities, range, step) {
    this.step = step;
    const ys = qualities.map((q) => (q in this.rank ? this.rank[q] : null));
    this.plot.batch(() => {
      this.plot.setData([times, ys], false);
      this.plot.setScale('x', { min: range[0], max: range[1] });
    });
  }

  destroy() {
    this.resizer.disconnect();
    this.plot.destroy();
  }
}
