// The stream page (`#stream=<uuid>&window=1h`): current values, live charts over a window filled
// from `stream:stats:history` and extended by the stream's broadcasts, its alerts, bitrate drops,
// viewers and daily reports. Sections are a list: a later panel adds one with `panels.push`.

import {
  ALERT_LABELS,
  ago,
  alertValue,
  bandPill,
  bitrate,
  clock,
  db,
  el,
  fps,
  metricBand,
  ms,
  num,
  percent,
  resolution,
} from './format.js';
import { COLORS, MetricChart, QualityStrip } from './charts.js';

export const WINDOWS = [
  { key: '15m', label: '15 min', ms: 15 * 60e3 },
  { key: '1h', label: '1 h', ms: 60 * 60e3 },
  { key: '24h', label: '24 h', ms: 24 * 60 * 60e3 },
  { key: '7d', label: '7 d', ms: 7 * 24 * 60 * 60e3 },
];
const STEP_SECONDS = { raw: 5, '1m': 60, '1h': 3600, '1d': 86400 };

/** Sections below the charts: `{ id, title, render(page) → Node }`, re-rendered on change. */
export const panels = [
  { id: 'alerts', title: 'Alerts in this window', render: (page) => alertsPanel(page) },
  { id: 'drops', title: 'Bitrate drops in this window', render: (page) => dropsPanel(page) },
  { id: 'advice', title: 'Quality advice in this window', render: (page) => advicePanel(page) },
  { id: 'viewers', title: 'Viewer experience (last 5 minutes)', render: (page) => experiencePanel(page) },
  { id: 'reports', title: 'Daily reports', render: (page) => reportsPanel(page) },
];

export class StreamPage {
  constructor(live, streamId, windowKey) {
    this.live = live;
    this.streamId = streamId;
    this.window = WINDOWS.find((w) => w.key === windowKey) || WINDOWS[0];
    this.series = emptySeries();
    this.bucket = 'raw';
    this.alerts = [];
    this.drops = [];
    this.advice = [];
    this.experience = null;
    this.reports = null;
    this.current = null;
    this.charts = [];
    this.loading = 0;
  }

  mount(root) {
    this.header = el('section', { class: 'stream-head' });
    this.cards = el('section', { class: 'cards', 'aria-label': 'Current values' });
    this.windowBar = el('div', { class: 'segmented', role: 'group', 'aria-label': 'Time window' });
    for (const w of WINDOWS) {
      this.windowBar.append(
        el(
          'button',
          {
            type: 'button',
            dataset: { window: w.key },
            'aria-pressed': String(w.key === this.window.key),
            onclick: () => {
              location.hash = `stream=${this.streamId}&window=${w.key}`;
            },
          },
          w.label,
        ),
      );
    }
    this.note = el('span', { class: 'muted chart-note', role: 'status' });
    const chartBox = () => el('div', { class: 'chart' });
    const boxes = {
      bitrate: chartBox(),
      fps: chartBox(),
      loss: chartBox(),
      latency: chartBox(),
      quality: chartBox(),
    };
    this.chartPanels = {};
    const titled = (title, box, key) => {
      const panel = el('div', { class: 'panel chart-panel', dataset: { chart: key } }, el('h3', {}, title), box);
      this.chartPanels[key] = panel;
      return panel;
    };
    this.panelRoot = el('div', { class: 'panels' });
    root.replaceChildren(
      el(
        'div',
        { class: 'stream-page' },
        this.header,
        this.cards,
        el('div', { class: 'toolbar' }, this.windowBar, this.note),
        el(
          'div',
          { class: 'chart-grid' },
          titled('Bitrate (kbps)', boxes.bitrate, 'bitrate'),
          titled('Frames per second', boxes.fps, 'fps'),
          titled('Packet loss (%)', boxes.loss, 'loss'),
          titled('Latency (ms)', boxes.latency, 'latency'),
          el(
            'div',
            { class: 'panel chart-panel wide', dataset: { chart: 'quality' } },
            el(
              'h3',
              {},
              'Quality band ',
              el('span', { class: 'legend' }, legend('good'), legend('fair'), legend('poor')),
            ),
            boxes.quality,
          ),
        ),
        this.panelRoot,
      ),
    );
    this.charts = {
      bitrate: new MetricChart(boxes.bitrate, { title: 'Bitrate', unit: 'kbps', format: (v) => num(v), band: true }),
      fps: new MetricChart(boxes.fps, { title: 'FPS', unit: 'fps', format: (v) => num(v, 1) }),
      loss: new MetricChart(boxes.loss, { title: 'Packet loss', unit: '%', format: (v) => num(v, 2) }),
      latency: new MetricChart(boxes.latency, { title: 'Latency', unit: 'ms', format: (v) => num(v) }),
      quality: new QualityStrip(boxes.quality),
    };
    this.onSample = (e) => this.sample(e.detail);
    this.onStreams = () => this.renderHead();
    this.onFeed = (e) => this.alert(e.detail);
    this.onAdvice = (e) => this.advised(e.detail);
    this.live.addEventListener('advice', this.onAdvice);
    this.live.addEventListener('sample', this.onSample);
    this.live.addEventListener('streams', this.onStreams);
    this.live.addEventListener('tick', this.onStreams);
    this.live.addEventListener('feed', this.onFeed);
    this.onStatus = () => this.live.status === 'live' && this.load();
    this.live.addEventListener('status', this.onStatus);
    this.slide = setInterval(() => this.draw(), 5000);
    // Viewer experience is a trailing 5-minute figure: asked for again every 15 s.
    this.experienceTimer = setInterval(() => this.loadExperience(), 15000);
    this.renderHead();
    this.renderPanels();
    this.load();
    this.loadReports();
  }

  unmount() {
    clearInterval(this.slide);
    clearInterval(this.experienceTimer);
    this.live.removeEventListener('advice', this.onAdvice);
    this.live.removeEventListener('sample', this.onSample);
    this.live.removeEventListener('streams', this.onStreams);
    this.live.removeEventListener('tick', this.onStreams);
    this.live.removeEventListener('feed', this.onFeed);
    this.live.removeEventListener('status', this.onStatus);
    for (const chart of Object.values(this.charts)) chart.destroy();
    if (this.live.socket && this.live.socket.connected) {
      this.live.call('stream:stats:unsubscribe', { streamId: this.streamId }).catch(() => {});
    }
  }

  async load() {
    const ticket = ++this.loading;
    const to = new Date();
    const from = new Date(to.getTime() - this.window.ms);
    this.note.textContent = 'Loading history…';
    try {
      // Broadcasts of this stream from now on; the history below covers what came before.
      await this.live.call('stream:stats:subscribe', { streamId: this.streamId });
      const [history, current] = await Promise.all([
        this.live.call('stream:stats:history', {
          streamId: this.streamId,
          from: from.toISOString(),
          to: to.toISOString(),
        }),
        this.live.call('stream:stats:get', { streamId: this.streamId }),
      ]);
      if (ticket !== this.loading) return;
      this.bucket = history.bucket;
      const pending = this.series;
      this.series = fromRows(history.rows);
      // Samples that arrived while history was loading extend it.
      for (let i = 0; i < pending.t.length; i += 1) {
        if (pending.t[i] > (this.series.t[this.series.t.length - 1] ?? 0)) this.appendRaw(pending.raw[i]);
      }
      this.alerts = history.alerts;
      this.drops = history.drops;
      this.advice = history.advice || [];
      if (!this.current || (current.stats && current.stats.lastUpdated > this.current.lastUpdated)) {
        this.current = current.stats
          ? { stats: current.stats, quality: current.quality, lastUpdated: current.stats.lastUpdated }
          : null;
      }
      this.viewers = current.viewerCount;
      this.experience = current.viewerExperience || null;
      const points = history.rows.length;
      const unit = history.bucket === 'raw' ? 'samples' : `${history.bucket} buckets`;
      this.note.textContent = `${num(points)} ${unit} from history · live updates appended`;
      this.note.dataset.bucket = history.bucket;
      this.note.dataset.points = String(points);
      this.draw();
      this.renderHead();
      this.renderPanels();
    } catch (error) {
      if (ticket === this.loading) this.note.textContent = `Could not load history: ${error.message}`;
    }
  }

  async loadExperience() {
    try {
      const current = await this.live.call('stream:stats:get', { streamId: this.streamId });
      this.experience = current.viewerExperience || null;
      this.renderPanels();
    } catch (error) {
      // Kept as it was: the next refresh or reconnect tries again.
    }
  }

  async loadReports() {
    try {
      const answer = await this.live.call('stream:stats:reports', { streamId: this.streamId });
      this.reports = answer.reports;
    } catch (error) {
      this.reports = { error: error.message };
    }
    this.renderPanels();
  }

  async openReport(day) {
    const answer = await this.live.call('stream:stats:reports', { streamId: this.streamId, day });
    const url = URL.createObjectURL(new Blob([answer.html], { type: 'text/html' }));
    window.open(url, '_blank', 'noopener');
    setTimeout(() => URL.revokeObjectURL(url), 60e3);
  }

  sample(update) {
    if (update.streamId !== this.streamId) return;
    const point = { time: update.timestamp, ...update.stats, quality: update.quality, samples: 1 };
    if (!this.current || update.timestamp >= this.current.lastUpdated) {
      this.current = { stats: update.stats, quality: update.quality, lastUpdated: update.timestamp };
    }
    this.appendRaw(point);
    this.draw();
    this.renderHead();
  }

  /** Add one sample: a new point for raw windows, folded into the last bucket for rollups. */
  appendRaw(point) {
    const s = this.series;
    const t = Date.parse(point.time) / 1000;
    if (this.bucket === 'raw') {
      if (s.t.length && t <= s.t[s.t.length - 1]) return;
      push(s, t, point, point);
      return;
    }
    const width = STEP_SECONDS[this.bucket];
    const start = Math.floor(t / width) * width;
    const last = s.t.length - 1;
    if (last >= 0 && s.t[last] === start) {
      foldInto(s, last, point);
    } else if (last < 0 || start > s.t[last]) {
      push(s, start, point, point);
    }
  }

  advised(advice) {
    if (!advice || advice.streamId !== this.streamId) return;
    if (this.advice.some((a) => a.adviceId === advice.adviceId)) return;
    this.advice.push(advice);
    this.renderPanels();
  }

  alert(alert) {
    if (!alert || alert.streamId !== this.streamId) return;
    const list = alert.type === 'bitrate_drop' ? this.drops : this.alerts;
    const match = list.find((a) => a.startedAt === alert.startedAt && (a.type || 'bitrate_drop') === alert.type);
    if (match) {
      match.endedAt = alert.endedAt || null;
    } else if (alert.type === 'bitrate_drop') {
      list.push({ startedAt: alert.startedAt, endedAt: alert.endedAt || null, observedKbps: alert.value });
    } else {
      list.push({ type: alert.type, value: alert.value, threshold: alert.threshold, startedAt: alert.startedAt, endedAt: alert.endedAt || null });
    }
    this.draw();
    this.renderPanels();
    this.renderHead();
  }

  draw() {
    const now = Date.now() / 1000;
    const range = [now - this.window.ms / 1000, now];
    trim(this.series, range[0] - STEP_SECONDS[this.bucket]);
    const s = this.series;
    const rollup = this.bucket !== 'raw';
    this.charts.bitrate.spans = this.drops.map((d) => [...spanOf(d).slice(0, 2), COLORS.drop]);
    this.charts.fps.spans = this.alerts.filter((a) => a.type === 'fps_low').map(spanOf);
    this.charts.loss.spans = this.alerts.filter((a) => a.type === 'packet_loss_high').map(spanOf);
    this.charts.latency.spans = [];
    this.charts.bitrate.set([s.t, s.bitrate, rollup ? s.bitrateMin : s.t.map(() => null), rollup ? s.bitrateMax : s.t.map(() => null)], range);
    this.charts.fps.set([s.t, s.fps], range);
    this.charts.loss.set([s.t, s.packetLoss], range);
    this.charts.latency.set([s.t, s.latency], range);
    this.charts.quality.set(s.t, s.quality, range, rollup ? STEP_SECONDS[this.bucket] : medianStep(s.t));
    // How many points each chart holds, for people reading the page source and for tests.
    for (const panel of Object.values(this.chartPanels)) panel.dataset.points = String(s.t.length);
  }

  renderHead() {
    const known = this.live.streams.get(this.streamId);
    const current = newer(this.current, known);
    const viewers = known ? known.viewerCount : this.viewers;
    const stats = current ? current.stats : null;
    const openAlerts = this.alerts.filter((a) => !a.endedAt).length + this.drops.filter((d) => !d.endedAt).length;
    this.header.replaceChildren(
      el('a', { href: '#', class: 'back' }, '← All streams'),
      el(
        'div',
        { class: 'stream-title' },
        bandPill(current ? current.quality : null, 'pill-lg'),
        el('h1', { class: 'mono', id: 'stream-id' }, this.streamId),
        el(
          'span',
          { class: 'muted' },
          current ? `updated ${ago(current.lastUpdated)} · ${clock(current.lastUpdated)}` : 'no sample yet',
        ),
        openAlerts ? el('span', { class: 'badge alert' }, `${openAlerts} open`) : null,
      ),
    );
    const level = (metric) => {
      const key = metricBand(metric, stats ? stats[metric] : null);
      return key === 'fair' || key === 'poor' ? `m-${key}` : '';
    };
    const card = (key, label, value, cls = '') =>
      el(
        'div',
        { class: `card ${cls}`, dataset: { card: key } },
        el('div', { class: 'card-label' }, label),
        el('div', { class: 'card-value' }, value),
      );
    this.cards.replaceChildren(
      card('bitrate', 'Bitrate', bitrate(stats && stats.bitrate)),
      card('fps', 'FPS', fps(stats && stats.fps), level('fps')),
      card('resolution', 'Resolution', resolution(stats && stats.resolution)),
      card('loss', 'Packet loss', percent(stats && stats.packetLoss), level('packetLoss')),
      card('latency', 'Latency', ms(stats && stats.latency), level('latency')),
      card('upload', 'Upload bandwidth', bitrate(stats && stats.bandwidth && stats.bandwidth.upload)),
      card('audio', 'Audio level', db(stats && stats.audioLevel)),
      card('viewers', 'Viewers', num(viewers)),
    );
  }

  renderPanels() {
    this.panelRoot.replaceChildren(
      ...panels.map((p) =>
        el('section', { class: 'panel', dataset: { panel: p.id } }, el('h3', {}, p.title), p.render(this)),
      ),
    );
  }
}

function legend(key) {
  return el('span', { class: `legend-item band-${key}` }, el('i', { 'aria-hidden': 'true' }), { good: 'Good', fair: 'Fair', poor: 'Poor' }[key]);
}

function spanOf(a) {
  return [Date.parse(a.startedAt), a.endedAt ? Date.parse(a.endedAt) : null, COLORS.alert];
}

function newer(a, b) {
  if (!a) return b || null;
  if (!b) return a;
  return Date.parse(b.lastUpdated) > Date.parse(a.lastUpdated) ? b : a;
}

function emptySeries() {
  return { t: [], bitrate: [], bitrateMin: [], bitrateMax: [], fps: [], packetLoss: [], latency: [], quality: [], counts: [], raw: [] };
}

function push(s, t, row, raw) {
  s.t.push(t);
  s.bitrate.push(row.bitrate ?? null);
  s.bitrateMin.push(row.bitrateMin ?? row.bitrate ?? null);
  s.bitrateMax.push(row.bitrateMax ?? row.bitrate ?? null);
  s.fps.push(row.fps ?? null);
  s.packetLoss.push(row.packetLoss ?? null);
  s.latency.push(row.latency ?? null);
  s.quality.push(row.quality ?? null);
  const counts = { good: row.good ?? 0, fair: row.fair ?? 0, poor: row.poor ?? 0, n: row.samples ?? 1 };
  if (row.good === undefined && row.quality) counts[row.quality] = 1;
  s.counts.push(counts);
  s.raw.push(raw);
}

function fromRows(rows) {
  const s = emptySeries();
  for (const row of rows) push(s, Date.parse(row.time) / 1000, row, row);
  return s;
}

/** Fold a live sample into bucket i: running means, min/max, band counts and majority band. */
function foldInto(s, i, p) {
  const c = s.counts[i];
  const n = c.n;
  const mean = (old, v) => (v === null || v === undefined ? old : old === null ? v : (old * n + v) / (n + 1));
  s.bitrate[i] = mean(s.bitrate[i], p.bitrate);
  s.fps[i] = mean(s.fps[i], p.fps);
  s.packetLoss[i] = mean(s.packetLoss[i], p.packetLoss);
  s.latency[i] = mean(s.latency[i], p.latency);
  if (p.bitrate !== null && p.bitrate !== undefined) {
    s.bitrateMin[i] = s.bitrateMin[i] === null ? p.bitrate : Math.min(s.bitrateMin[i], p.bitrate);
    s.bitrateMax[i] = s.bitrateMax[i] === null ? p.bitrate : Math.max(s.bitrateMax[i], p.bitrate);
  }
  c.n = n + 1;
  if (p.quality) c[p.quality] += 1;
  const top = Math.max(c.good, c.fair, c.poor);
  s.quality[i] = top === 0 ? null : ['poor', 'fair', 'good'].find((b) => c[b] === top);
}

function trim(s, cut) {
  let k = 0;
  while (k < s.t.length && s.t[k] < cut) k += 1;
  if (!k) return;
  for (const key of Object.keys(s)) s[key].splice(0, k);
}

function medianStep(t) {
  if (t.length < 3) return 5;
  const gaps = [];
  for (let i = Math.max(1, t.length - 50); i < t.length; i += 1) gaps.push(t[i] - t[i - 1]);
  gaps.sort((a, b) => a - b);
  return gaps[Math.floor(gaps.length / 2)] || 5;
}

function alertsPanel(page) {
  if (!page.alerts.length) return el('p', { class: 'muted' }, 'No packet-loss or FPS alert in this window.');
  return episodeTable(
    ['Alert', 'Value', 'Started', 'Ended'],
    [...page.alerts].reverse().map((a) => [
      el('span', { class: `badge ${a.endedAt ? 'cleared' : 'alert'}` }, ALERT_LABELS[a.type] || a.type),
      alertValue(a),
      clock(a.startedAt),
      a.endedAt ? clock(a.endedAt) : el('strong', { class: 'open' }, 'open'),
    ]),
  );
}

function dropsPanel(page) {
  if (!page.drops.length) return el('p', { class: 'muted' }, 'No significant bitrate drop in this window.');
  return episodeTable(
    ['Baseline', 'Lowest', 'Drop', 'Started', 'Ended'],
    [...page.drops].reverse().map((d) => [
      bitrate(d.baselineKbps),
      bitrate(d.observedKbps),
      d.dropPct === undefined ? '–' : `${num(d.dropPct)} %`,
      clock(d.startedAt),
      d.endedAt ? clock(d.endedAt) : el('strong', { class: 'open' }, 'open'),
    ]),
  );
}

const ADVICE_REASONS = {
  packet_loss: 'packet loss',
  latency: 'latency building up',
  headroom: 'too close to the upload',
  encoder_overload: 'encoder overloaded',
  recovered: 'recovered',
};

function advicePanel(page) {
  if (!page.advice.length) return el('p', { class: 'muted' }, 'No quality advice in this window.');
  return episodeTable(
    ['Advice', 'Target', 'Why', 'Issued', 'Applied'],
    [...page.advice].reverse().map((a) => [
      el('span', { class: `badge ${a.action === 'lower' ? 'alert' : 'cleared'}` }, a.action === 'lower' ? `Lower (${a.severity})` : 'Raise'),
      [bitrate(a.target.bitrate), a.target.height ? ` · ${a.target.height}p` : '', a.target.fps ? ` · ${num(a.target.fps)} fps` : ''].join(''),
      a.reasons.map((r) => ADVICE_REASONS[r] || r).join(', '),
      clock(a.issuedAt),
      a.appliedAt ? clock(a.appliedAt) : el('span', { class: 'muted' }, 'not reported'),
    ]),
  );
}

function experiencePanel(page) {
  const x = page.experience;
  if (!x) return el('p', { class: 'muted' }, 'Loading…');
  if (!x.views) return el('p', { class: 'muted' }, 'No viewer reported playback in the last 5 minutes.');
  const pct = (v) => (v === null || v === undefined ? '–' : `${num(v, 1)} %`);
  const ms = (v) => (v === null || v === undefined ? '–' : v >= 1000 ? `${num(v / 1000, 2)} s` : `${num(v)} ms`);
  return episodeTable(
    ['Score', 'Views', 'Rebuffering', 'Startup p50 / p95', 'Switches per view', 'Failed'],
    [[
      el('strong', { class: 'score', 'data-score': String(x.score ?? '') }, x.score === null ? '–' : `${num(x.score)} / 100`),
      num(x.views),
      pct(x.rebufferPct),
      `${ms(x.startupP50Ms)} / ${ms(x.startupP95Ms)}`,
      x.switchesPerView === null ? '–' : num(x.switchesPerView, 2),
      pct(x.failurePct),
    ]],
  );
}

function reportsPanel(page) {
  if (page.reports === null) return el('p', { class: 'muted' }, 'Loading…');
  if (page.reports.error) return el('p', { class: 'muted' }, `Reports unavailable: ${page.reports.error}`);
  if (!page.reports.length) {
    return el('p', { class: 'muted' }, 'No daily report yet: the job runner writes one after each complete day.');
  }
  return el(
    'ul',
    { class: 'reports' },
    page.reports.map((r) =>
      el(
        'li',
        {},
        el(
          'button',
          { type: 'button', class: 'link', onclick: () => page.openReport(r.day) },
          r.day,
        ),
        r.summary && r.summary.samples !== undefined ? el('span', { class: 'muted' }, ` ${num(r.summary.samples)} samples`) : null,
      ),
    ),
  );
}

function episodeTable(head, rows) {
  return el(
    'table',
    { class: 'episodes' },
    el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((c) => el('td', {}, c))))),
  );
}

