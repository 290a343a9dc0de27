// The overview: totals by band, a filter, every live stream worst first, and the alert feed.
// Columns are a list: a later panel (viewer experience, advice) adds one with `columns.push`.

import {
  ALERT_LABELS,
  BANDS,
  ago,
  alertValue,
  band,
  bandPill,
  bitrate,
  clock,
  el,
  fps,
  metricBand,
  ms,
  num,
  percent,
  resolution,
  shortId,
} from './format.js';
import { STALE_MS, feedTime } from './live.js';
import { sparkline } from './charts.js';

export const columns = [
  {
    key: 'quality',
    title: 'Health',
    cell: (s) => bandPill(s.quality),
  },
  {
    key: 'stream',
    title: 'Stream',
    cell: (s) =>
      el(
        'a',
        { href: `#stream=${s.streamId}`, class: 'mono stream-link', title: s.streamId },
        shortId(s.streamId),
        el('span', { class: 'id-rest' }, s.streamId.slice(8, 13)),
      ),
  },
  {
    key: 'bitrate',
    title: 'Bitrate',
    class: 'num',
    cell: (s) => bitrate(s.stats.bitrate),
  },
  {
    key: 'spark',
    title: 'Bitrate, 15 min',
    class: 'spark-cell',
    cell: (s) => sparkline(s.spark, { quality: band(s.quality) }),
  },
  { key: 'fps', title: 'FPS', class: 'num', cell: (s) => fps(s.stats.fps), metric: 'fps' },
  { key: 'res', title: 'Resolution', class: 'num', cell: (s) => resolution(s.stats.resolution) },
  {
    key: 'loss',
    title: 'Loss',
    class: 'num',
    cell: (s) => percent(s.stats.packetLoss),
    metric: 'packetLoss',
  },
  {
    key: 'latency',
    title: 'Latency',
    class: 'num',
    cell: (s) => ms(s.stats.latency),
    metric: 'latency',
  },
  { key: 'viewers', title: 'Viewers', class: 'num', cell: (s) => num(s.viewerCount) },
  {
    key: 'alerts',
    title: 'Open alerts',
    cell: (s) => {
      const badges = [...s.alerts, ...s.drops.map((d) => ({ ...d, type: 'bitrate_drop' }))].map((a) =>
        el('span', { class: 'badge alert', title: `since ${clock(a.startedAt)}` }, ALERT_LABELS[a.type] || a.type),
      );
      return badges.length ? el('span', { class: 'badges' }, badges) : el('span', { class: 'muted' }, '—');
    },
  },
  {
    key: 'updated',
    title: 'Updated',
    class: 'num muted',
    cell: (s) => ago(s.lastUpdated),
  },
];

/** Cells of metrics past a band threshold are coloured like that band (with the row's word). */
function metricClass(column, s) {
  if (!column.metric) return '';
  const key = metricBand(column.metric, s.stats[column.metric]);
  return key === 'fair' || key === 'poor' ? `m-${key}` : '';
}

function openCount(s) {
  return s.alerts.length + s.drops.length;
}

/** Worst first: open alerts, then poor, fair, good, no data; ties by stream id (stable rows). */
export function worstFirst(a, b) {
  return (
    (openCount(b) > 0) - (openCount(a) > 0) ||
    BANDS[band(a.quality)].rank - BANDS[band(b.quality)].rank ||
    a.streamId.localeCompare(b.streamId)
  );
}

export class Overview {
  constructor(live) {
    this.live = live;
    this.filter = '';
    this.bandFilter = 'all';
    this.rows = new Map();
    this.frame = 0;
  }

  mount(root) {
    this.totals = el('section', { class: 'totals', 'aria-label': 'Totals' });
    this.search = el('input', {
      type: 'search',
      placeholder: 'Filter by stream id',
      'aria-label': 'Filter by stream id',
      class: 'filter',
      oninput: () => {
        this.filter = this.search.value.trim().toLowerCase();
        this.render();
      },
    });
    this.chips = el('div', { class: 'chips', role: 'group', 'aria-label': 'Show' });
    for (const key of ['all', 'poor', 'fair', 'good']) {
      const label = key === 'all' ? 'All' : BANDS[key].label;
      this.chips.append(
        el(
          'button',
          {
            type: 'button',
            class: `chip ${key === 'all' ? '' : `band-${key}`}`,
            'aria-pressed': String(key === this.bandFilter),
            dataset: { band: key },
            onclick: () => {
              this.bandFilter = key;
              for (const chip of this.chips.children) {
                chip.setAttribute('aria-pressed', String(chip.dataset.band === key));
              }
              this.render();
            },
          },
          key === 'all' ? null : el('span', { 'aria-hidden': 'true' }, `${BANDS[key].icon} `),
          label,
        ),
      );
    }
    this.count = el('span', { class: 'muted count' });
    this.body = el('tbody');
    this.empty = el('p', { class: 'empty', hidden: true });
    const head = el(
      'tr',
      {},
      columns.map((c) => el('th', { scope: 'col', class: c.class }, c.title)),
    );
    this.feedList = el('ol', { class: 'feed', 'aria-live': 'polite', id: 'alert-feed' });
    root.replaceChildren(
      el(
        'div',
        { class: 'overview' },
        el(
          'div',
          { class: 'main-col' },
          this.totals,
          el('div', { class: 'toolbar' }, this.search, this.chips, this.count),
          el(
            'div',
            { class: 'panel table-panel' },
            el('table', { class: 'streams', id: 'streams' }, el('thead', {}, head), this.body),
            this.empty,
          ),
        ),
        el(
          'aside',
          { class: 'panel feed-panel', 'aria-label': 'Alert feed' },
          el('h2', {}, 'Alerts', el('span', { class: 'muted' }, ' newest first')),
          this.feedList,
        ),
      ),
    );
    this.listeners = [
      ['streams', () => this.schedule()],
      ['tick', () => this.schedule()],
      ['feed', () => this.renderFeed()],
    ];
    for (const [type, fn] of this.listeners) this.live.addEventListener(type, fn);
    this.render();
    this.renderFeed();
  }

  unmount() {
    for (const [type, fn] of this.listeners || []) this.live.removeEventListener(type, fn);
    cancelAnimationFrame(this.frame);
  }

  schedule() {
    cancelAnimationFrame(this.frame);
    this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    const all = [...this.live.streams.values()];
    this.renderTotals(all);
    const shown = all
      .filter((s) => !this.filter || s.streamId.includes(this.filter))
      .filter((s) => this.bandFilter === 'all' || band(s.quality) === this.bandFilter)
      .sort(worstFirst);
    const now = Date.now();
    const keep = new Set();
    for (const s of shown) {
      keep.add(s.streamId);
      let row = this.rows.get(s.streamId);
      if (!row) {
        row = el('tr', { dataset: { stream: s.streamId } });
        this.rows.set(s.streamId, row);
      }
      row.dataset.quality = band(s.quality);
      row.classList.toggle('stale', now - Date.parse(s.lastUpdated) > STALE_MS);
      row.classList.toggle('alerting', openCount(s) > 0);
      row.replaceChildren(
        ...columns.map((c) =>
          el('td', { class: `${c.class || ''} ${metricClass(c, s)}`.trim(), dataset: { col: c.key } }, c.cell(s)),
        ),
      );
      this.body.append(row);
    }
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    this.count.textContent = `${shown.length} of ${all.length} streams`;
    this.empty.hidden = shown.length > 0;
    this.empty.textContent = all.length
      ? 'No stream matches the filter.'
      : 'No stream has reported in the last 5 minutes. Streams appear here as soon as they send stats.';
  }

  renderTotals(all) {
    const by = { poor: 0, fair: 0, good: 0, none: 0 };
    let alerts = 0;
    let drops = 0;
    let viewers = 0;
    for (const s of all) {
      by[band(s.quality)] += 1;
      alerts += s.alerts.length;
      drops += s.drops.length;
      viewers += s.viewerCount || 0;
    }
    const card = (key, label, value, cls = '') =>
      el(
        'div',
        { class: `total ${cls}`, dataset: { total: key } },
        el('div', { class: 'total-label' }, label),
        el('div', { class: 'total-value' }, num(value)),
      );
    const bandCard = (key) => {
      const share = all.length ? Math.round((100 * by[key]) / all.length) : 0;
      const node = card(key, '', by[key], `band-card band-${key}`);
      node.firstChild.append(el('span', { 'aria-hidden': 'true' }, `${BANDS[key].icon} `), BANDS[key].label);
      node.append(el('div', { class: 'total-share' }, `${share} %`));
      return node;
    };
    this.totals.replaceChildren(
      card('streams', 'Live streams', all.length),
      bandCard('poor'),
      bandCard('fair'),
      bandCard('good'),
      card('alerts', 'Open alerts', alerts, alerts ? 'hot' : ''),
      card('drops', 'Bitrate drops', drops, drops ? 'hot' : ''),
      card('viewers', 'Viewers', viewers),
    );
  }

  renderFeed() {
    const items = this.live.feed.slice(0, 100).map((a) =>
      el(
        'li',
        { class: `feed-item ${a.state}`, dataset: { stream: a.streamId, type: a.type, state: a.state } },
        el('time', { class: 'mono muted', datetime: feedTime(a) }, clock(feedTime(a))),
        el('span', { class: `state state-${a.state}` }, a.state === 'raised' ? 'Raised' : 'Cleared'),
        el('span', { class: 'feed-type' }, ALERT_LABELS[a.type] || a.type),
        el(
          'span',
          { class: 'feed-where' },
          el('a', { href: `#stream=${a.streamId}`, class: 'mono', title: a.streamId }, shortId(a.streamId)),
          el('span', { class: 'muted' }, alertValue(a)),
        ),
      ),
    );
    this.feedList.replaceChildren(...items);
    if (!items.length) {
      this.feedList.append(el('li', { class: 'muted empty-feed' }, 'No alert in the last hour.'));
    }
  }
}
