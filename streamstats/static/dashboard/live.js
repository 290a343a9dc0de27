// The live connection and what the dashboard knows: the streams (first paint from
// `stream:stats:list`, then `stream:stats:digest` once a second), the alert feed
// (`stream:alert`), and per-sample broadcasts for the stream page. Views subscribe to changes.

const DIGEST_INTERVAL_MS = 1000;
const SPARK_SPAN_MS = 15 * 60 * 1000;
export const LIVE_SPAN_MS = 5 * 60 * 1000;
export const STALE_MS = 30 * 1000;
const FEED_MAX = 200;

export class Live extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.streams = new Map();
    this.feed = [];
    this.status = 'connecting';
    this.socket = null;
  }

  start() {
    // eslint-disable-next-line no-undef
    const socket = io(location.origin, {
      auth: { token: this.token },
      transports: ['websocket', 'polling'],
    });
    this.socket = socket;
    socket.on('connect', () => this._ready());
    socket.on('connect_error', (err) => {
      if (err.data && err.data.code === 'unauthorized') {
        this._signOut(err.data.message || err.message);
      } else {
        this._status('reconnecting');
      }
    });
    socket.on('disconnect', (reason) => {
      // The server drops a connection whose token expired, after telling it why.
      if (reason === 'io server disconnect') this._signOut('The server closed the session.');
      else this._status('reconnecting');
    });
    socket.on('error', (error) => {
      if (error && error.code === 'unauthorized') this._signOut(error.message);
    });
    socket.on('stream:stats:digest', (digest) => this._digest(digest));
    socket.on('stream:alert', (alert) => this._alert(alert));
    socket.on('stream:stats:update', (update) => this._emit('sample', update));
    socket.on('stream:quality:advice', (advice) => this._emit('advice', advice));
    this._prune = setInterval(() => this._dropSilent(), 5000);
  }

  stop() {
    clearInterval(this._prune);
    if (this.socket) {
      this.socket.removeAllListeners();
      this.socket.disconnect();
    }
  }

  /** Ask the server (acknowledgement callback); rejects with the server's error object. */
  call(event, payload) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(15000).emit(event, payload, (timeout, answer) => {
        if (timeout) reject({ code: 'timeout', message: `${event}: no answer` });
        else if (answer && answer.ok) resolve(answer);
        else reject(answer ? answer.error : { code: 'error', message: 'no answer' });
      });
    });
  }

  async _ready() {
    try {
      // Digests first, then the list: nothing committed in between is missed.
      await this.call('stream:stats:digest:subscribe', { interval: DIGEST_INTERVAL_MS });
      const list = await this.call('stream:stats:list', {});
      this._list(list);
      this._status('live');
    } catch (error) {
      if (error.code === 'forbidden' || error.code === 'unauthorized') {
        this._signOut(error.message, error.code);
      } else {
        this._status('degraded', error.message);
      }
    }
  }

  _list(list) {
    const fresh = new Map();
    for (const item of list.streams) {
      const known = this.streams.get(item.streamId);
      const spark = item.sparkline.times.map((t, i) => [Date.parse(t), item.sparkline.bitrate[i]]);
      fresh.set(item.streamId, {
        ...item,
        spark: known ? mergeSpark(spark, known.spark) : spark,
      });
    }
    this.streams = fresh;
    const seen = new Set(this.feed.map(feedKey));
    this.feed = [...this.feed, ...list.feed.filter((a) => !seen.has(feedKey(a)))]
      .sort((a, b) => Date.parse(feedTime(b)) - Date.parse(feedTime(a)))
      .slice(0, FEED_MAX);
    this._emit('streams');
    this._emit('feed');
  }

  _digest(digest) {
    for (const item of digest.streams) {
      const known = this.streams.get(item.streamId);
      if (known && Date.parse(known.lastUpdated) > Date.parse(item.lastUpdated)) continue;
      const point = [Date.parse(item.lastUpdated), item.stats.bitrate];
      const spark = known ? known.spark : [];
      if (point[1] !== null && (!spark.length || spark[spark.length - 1][0] < point[0])) {
        spark.push(point);
      }
      const cut = Date.now() - SPARK_SPAN_MS;
      while (spark.length && spark[0][0] < cut) spark.shift();
      this.streams.set(item.streamId, {
        alerts: [],
        drops: [],
        ...known,
        ...item,
        // null: the server has not counted this stream's viewers yet; keep what was known.
        viewerCount: item.viewerCount ?? (known ? known.viewerCount : null),
        spark,
      });
    }
    this.lastDigest = digest.at;
    this._emit('streams', digest);
  }

  _alert(alert) {
    this.feed.unshift(alert);
    this.feed.length = Math.min(this.feed.length, FEED_MAX);
    const stream = this.streams.get(alert.streamId);
    if (stream) {
      const list = alert.type === 'bitrate_drop' ? 'drops' : 'alerts';
      const sameEpisode = (a) =>
        (a.type || 'bitrate_drop') === alert.type && a.startedAt === alert.startedAt;
      stream[list] = stream[list].filter((a) => !sameEpisode(a));
      if (alert.state === 'raised') {
        stream[list].push(
          list === 'drops'
            ? { type: 'bitrate_drop', startedAt: alert.startedAt, observedKbps: alert.value }
            : { type: alert.type, value: alert.value, threshold: alert.threshold, startedAt: alert.startedAt },
        );
      }
    }
    this._emit('feed', alert);
    this._emit('streams');
  }

  _dropSilent() {
    const cut = Date.now() - LIVE_SPAN_MS;
    let dropped = false;
    for (const [id, stream] of this.streams) {
      if (Date.parse(stream.lastUpdated) < cut) {
        this.streams.delete(id);
        dropped = true;
      }
    }
    this._emit(dropped ? 'streams' : 'tick');
  }

  _status(status, detail = '') {
    this.status = status;
    this.statusDetail = detail;
    this._emit('status');
  }

  _signOut(message, code = 'unauthorized') {
    this.stop();
    this._emit('signout', { message, code });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function mergeSpark(listed, known) {
  const last = listed.length ? listed[listed.length - 1][0] : 0;
  return [...listed, ...known.filter(([t]) => t > last)];
}

function feedTime(alert) {
  return alert.state === 'cleared' && alert.endedAt ? alert.endedAt : alert.startedAt;
}

function feedKey(alert) {
  return `${alert.streamId}|${alert.type}|${alert.state}|${alert.startedAt}`;
}

export { feedTime };
