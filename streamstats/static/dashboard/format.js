// Formatting and the quality bands: every band is shown as a colour AND a word AND a shape.

export const BANDS = {
  poor: { rank: 0, label: 'Poor', icon: '✕' },
  fair: { rank: 1, label: 'Fair', icon: '▲' },
  good: { rank: 2, label: 'Good', icon: '●' },
  none: { rank: 3, label: 'No data', icon: '○' },
};

export const ALERT_LABELS = {
  packet_loss_high: 'Packet loss high',
  fps_low: 'FPS low',
  bitrate_drop: 'Bitrate drop',
};

/** The band one metric alone would give (docs/protocol.md's rule, metric by metric). */
export function metricBand(metric, value) {
  if (value === null || value === undefined) return 'none';
  if (metric === 'packetLoss') return value > 3 ? 'poor' : value >= 1 ? 'fair' : 'good';
  if (metric === 'latency') return value > 200 ? 'poor' : value >= 100 ? 'fair' : 'good';
  if (metric === 'fps') return value < 20 ? 'poor' : value < 25 ? 'fair' : 'good';
  return 'none';
}

export function band(quality) {
  return BANDS[quality] ? quality : 'none';
}

/** A `<span class="pill">` with the band's colour, icon and word. */
export function bandPill(quality, extra = '') {
  const key = band(quality);
  const el = document.createElement('span');
  el.className = `pill band-${key} ${extra}`.trim();
  el.dataset.quality = key;
  el.innerHTML = `<span aria-hidden="true">${BANDS[key].icon}</span> ${BANDS[key].label}`;
  return el;
}

export function num(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return Number(value).toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** 2,500 kbps → "2.50 Mbps"; below 1,000 stays in kbps. */
export function bitrate(kbps) {
  if (kbps === null || kbps === undefined) return '–';
  if (kbps >= 1000) return `${num(kbps / 1000, 2)} Mbps`;
  return `${num(kbps)} kbps`;
}

export function percent(value) {
  if (value === null || value === undefined) return '–';
  return `${num(value, value < 10 ? 1 : 0)} %`;
}

export function ms(value) {
  if (value === null || value === undefined) return '–';
  return `${num(value)} ms`;
}

export function fps(value) {
  if (value === null || value === undefined) return '–';
  return num(value, Number.isInteger(value) ? 0 : 1);
}

export function resolution(res) {
  if (!res || res.width === null || res.height === null) return '–';
  return `${res.width}×${res.height}`;
}

export function db(value) {
  if (value === null || value === undefined) return '–';
  return `${num(value, 1)} dB`;
}

export function shortId(streamId) {
  return streamId.slice(0, 8);
}

export function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

/** "4 s ago", "3 min ago" */
export function ago(iso, now = Date.now()) {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** What an alert transition says, e.g. "7.5 % > 5 %" or "900 kbps < 1,500 kbps". */
export function alertValue(alert) {
  const { type, value, threshold } = alert;
  if (type === 'packet_loss_high') return `${percent(value)} > ${percent(threshold)}`;
  if (type === 'fps_low') return `${fps(value)} fps < ${fps(threshold)}`;
  if (type === 'bitrate_drop') return `${bitrate(value)} < ${bitrate(threshold)}`;
  return `${num(value, 1)} / ${num(threshold, 1)}`;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
