// Interactive charts of a report page, drawn with uPlot from the JSON the page embeds.
// Every chart shares one time axis: drag across any chart to zoom all of them, use the toolbar
// (or double-click) to go back to the live hours, hover for the values at that instant.
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC');
  const stamp = uPlot.fmtDate(data.dayOnly ? '{WWW} {YYYY}-{MM}-{DD}' : '{HH}:{mm} UTC');
  const day = uPlot.fmtDate(data.dayOnly ? '{WWW} {MM}-{DD}' : '{MM}-{DD}');
  const clock = uPlot.fmtDate('{HH}:{mm}');
  // 24-hour UTC clock on the axis; a range ending at midnight ends at 24:00, not 00:00.
  const tick = (v, step) => (data.dayOnly || step >= 86400 ? day(utc(v)) : clock(utc(v)));
  const end = (v, from) => (!data.dayOnly && v > from && v % 86400 === 0 ? '24:00' : tick(v, 0));
  const charts = [];
  const [allMin, allMax] = data.range.all;
  let busy = false;

  function setRange(min, max) {
    const width = Math.min(max - min, allMax - allMin);
    min = Math.max(allMin, Math.min(min, allMax - width));
    max = min + width;
    busy = true;
    charts.forEach((u) => u.setScale('x', { min, max }));
    busy = false;
    const label = document.getElementById('visible-range');
    if (label) label.textContent = `${tick(min, 0)} – ${end(max, min)}${data.dayOnly ? '' : ' UTC'}`;
  }

  function pan(fraction) {
    const { min, max } = charts[0].scales.x;
    const step = (max - min) * fraction;
    setRange(min + step, max + step);
  }

  function number(value, digits, unit) {
    if (value == null) return '–';
    return value.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits }) + (unit ? ' ' + unit : '');
  }

  // Bitrate drops (or any other spans) as light columns behind the lines.
  function shade(spans) {
    return (u) => {
      const { ctx } = u;
      const { top, height } = u.bbox;
      ctx.save();
      ctx.fillStyle = 'rgba(21, 101, 192, 0.14)';
      spans.forEach(([from, to]) => {
        const left = u.valToPos(from, 'x', true);
        const right = u.valToPos(to, 'x', true);
        ctx.fillRect(left, top, Math.max(right - left, 1), height);
      });
      ctx.restore();
    };
  }

  function build(spec, element) {
    const bars = spec.bars ? uPlot.paths.bars({ size: [1, Infinity], align: 1, gap: 0 }) : null;
    const series = [{ label: data.dayOnly ? 'day' : 'time', value: (u, v) => (v == null ? '–' : stamp(utc(v))) }];
    spec.series.forEach((s) => {
      series.push({
        label: s.label,
        scale: s.scale,
        stroke: s.color,
        width: s.width == null ? 1.5 : s.width,
        dash: s.dash,
        fill: s.fill || (bars ? s.color : undefined),
        paths: bars || undefined,
        points: { show: spec.points || false, size: 5 },
        spanGaps: false,
        value: (u, v, si, i) => number(s.display && i != null ? s.display[i] : v, s.digits, s.unit),
      });
    });
    const scales = { x: { time: true } };
    const axes = [{
      space: 70,
      // A week's axis has one tick per day at most.
      incrs: data.dayOnly ? [86400, 7 * 86400] : undefined,
      grid: { stroke: '#eee' },
      ticks: { stroke: '#ddd' },
      values: (u, splits, ax, space, step) => splits.map((v) => tick(v, step)),
    }];
    spec.axes.forEach((a) => {
      scales[a.scale] = { range: (u, min, max) => (a.max != null ? [0, a.max] : [0, max > 0 ? max * 1.08 : 1]) };
      axes.push({
        scale: a.scale,
        label: a.label,
        side: a.side === 'right' ? 1 : 3,
        size: 60,
        grid: { show: a.side !== 'right', stroke: '#eee' },
        ticks: { stroke: '#ddd' },
        stroke: a.color || '#444',
      });
    });
    const options = {
      width: element.clientWidth || 900,
      height: spec.height || 220,
      tzDate: utc,
      series,
      scales,
      axes,
      bands: (spec.bands || []).map(([upper, lower, fill]) => ({ series: [upper, lower], fill })),
      cursor: { sync: { key: 'report' }, drag: { x: true, y: false, setScale: false }, points: { size: 6 } },
      legend: { live: true },
      hooks: {
        drawClear: [shade(spec.shade || [])],
        setSelect: [
          (u) => {
            if (u.select.width > 2) {
              setRange(u.posToVal(u.select.left, 'x'), u.posToVal(u.select.left + u.select.width, 'x'));
            }
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          },
        ],
        setScale: [
          (u, key) => {
            // Keep every chart on the range of the one that changed (uPlot's own double-click
            // autoscale included).
            if (key === 'x' && !busy) setRange(u.scales.x.min, u.scales.x.max);
          },
        ],
      },
    };
    const u = new uPlot(options, [spec.x, ...spec.series.map((s) => s.values)], element);
    u.over.addEventListener('dblclick', () => setRange(...data.range.live));
    return u;
  }

  document.querySelectorAll('[data-chart]').forEach((element) => {
    const spec = data.charts[element.dataset.chart];
    if (spec) charts.push(build(spec, element));
  });
  if (!charts.length) return;
  setRange(...data.range.live);

  const actions = { live: () => setRange(...data.range.live), all: () => setRange(allMin, allMax), left: () => pan(-0.5), right: () => pan(0.5) };
  document.querySelectorAll('[data-range]').forEach((button) => button.addEventListener('click', actions[button.dataset.range]));
  addEventListener('keydown', (event) => {
    if (event.key === 'ArrowLeft') pan(-0.25);
    if (event.key === 'ArrowRight') pan(0.25);
  });
  addEventListener('resize', () => charts.forEach((u) => u.setSize({ width: u.root.parentElement.clientWidth, height: u.height })));
  // For the page's own tests and for readers' scripts: the charts and how to move them.
  window.streamReport = { charts, setRange, range: data.range };
})();
