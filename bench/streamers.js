// Load generator for bench/bench_streamers.py: thousands of streamers over raw Socket.IO v5
// (Engine.IO 4 over websockets, the `ws` package), one Node.js process per share of them.
//
//   node bench/streamers.js SPEC.json
//
// SPEC (a file, or "-": the first line of stdin): {url, interval (s), rampPerS, base (ISO time of
// update 0), streams: [[id, token], ...], monitors: [token, ...], and optionally viewers:
// [[streamId, viewId, token], ...] with viewerInterval (s)}: viewers send `stream:viewer:stats`
// beacons (cumulative counters, one second more watched per beacon), counted apart in `viewer`. Connects the monitors (which
// only count the events they receive) and every streamer (at rampPerS), prints "ready", then
// reads one line of times (epoch ms) from stdin: {sendAt, windowStart, windowEnd, stopAt}. From sendAt each
// streamer sends one update every `interval` (its first at a random offset in the interval) until
// stopAt, with an acknowledgement id; latency is measured from the scheduled send time (open
// loop: a stall in the server cannot hide itself). After stopAt it waits up to 15 s for the
// outstanding acknowledgements, then prints one JSON line of results and exits.
"use strict";

const fs = require("fs");
const readline = require("readline");
const WebSocket = require("ws");

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
let spec = null;
const now = () => performance.timeOrigin + performance.now();
let base = 0;
const out = {
  connected: 0,
  refused: 0,
  connectFailed: 0,
  closedEarly: 0,
  sent: 0,
  ok: 0,
  duplicate: 0,
  ackedInWindow: 0,
  unanswered: 0,
  errors: {},
  closeCodes: {},
  latencies: [],
  acked: {},
  monitorEvents: 0,
  viewer: { connected: 0, sent: 0, ok: 0, duplicate: 0, ackedInWindow: 0, errors: {}, latencies: [] },
};
let times = null;
let stopping = false;
const streamers = [];
const monitors = [];

function update(streamId, seq) {
  // The client guide's update, every metric present; update n of a stream is at base + n ms.
  return JSON.stringify([
    "stream:stats:update",
    {
      streamId,
      stats: {
        bitrate: 2500 + (seq % 500),
        fps: 30,
        resolution: { width: 1920, height: 1080 },
        audioLevel: -12.5,
        packetLoss: 0.2,
        latency: 45,
        bandwidth: { upload: 3000, download: 120 },
      },
      timestamp: new Date(base + seq).toISOString(),
    },
  ]);
}

function beacon(streamId, viewId, seq) {
  // Beacon n of a view is at base + n ms; its counters grow by at most what a second adds.
  const stalls = Math.floor(seq / 4);
  return JSON.stringify([
    "stream:viewer:stats",
    {
      streamId,
      viewId,
      timestamp: new Date(base + seq).toISOString(),
      state: "playing",
      startupTime: 850,
      watchTime: seq * 1000,
      stalls: { count: stalls, duration: stalls * 120 },
      renditionChanges: { up: Math.floor(seq / 9), down: Math.floor(seq / 7) },
      bitrate: 2500,
      resolution: { width: 1280, height: 720 },
    },
  ]);
}

function open(token, onEvent) {
  // Resolves once the Socket.IO namespace connect is answered (true) or refused (false).
  return new Promise((resolve) => {
    // Offers permessage-deflate as socket.io-client (and every browser) does: the server decides.
    const ws = new WebSocket(spec.url, { perMessageDeflate: { threshold: 1024 } });
    let settled = false;
    const settle = (value) => {
      if (!settled) {
        settled = true;
        resolve(value);
      }
    };
    ws.on("message", (raw) => {
      const data = raw.toString();
      if (data === "2") {
        ws.send("3");
      } else if (data[0] === "0") {
        ws.send("40" + JSON.stringify({ token }));
      } else if (data.startsWith("40")) {
        settle(ws);
      } else if (data.startsWith("44")) {
        out.refused += 1;
        settle(null);
        ws.close();
      } else {
        onEvent(data);
      }
    });
    ws.on("error", () => {
      if (!settled) out.connectFailed += 1;
      settle(null);
    });
    ws.on("close", (code) => {
      if (!stopping) out.closeCodes[code] = (out.closeCodes[code] || 0) + 1;
      if (settled && !stopping) out.closedEarly += 1;
      settle(null);
    });
  });
}

function streamer(streamId, token) {
  const acked = [];
  out.acked[streamId] = acked;
  return client(token, out, acked, spec.interval, (seq) => update(streamId, seq));
}

function viewer(streamId, viewId, token) {
  return client(token, out.viewer, [], spec.viewerInterval, (seq) => beacon(streamId, viewId, seq));
}

function client(token, counts, acked, intervalS, message) {
  const s = { ws: null, pending: new Map(), seq: 0, timer: null };
  s.onEvent = (data) => {
    if (!data.startsWith("43")) return;
    const at = now();
    const bracket = data.indexOf("[");
    const seq = Number(data.slice(2, bracket));
    const scheduled = s.pending.get(seq);
    if (scheduled === undefined) return;
    s.pending.delete(seq);
    const body = JSON.parse(data.slice(bracket))[0];
    if (body.ok) {
      counts.ok += 1;
      acked.push(seq);
      if (body.duplicate) counts.duplicate += 1;
      if (at >= times.windowStart && at <= times.windowEnd) counts.ackedInWindow += 1;
      if (scheduled >= times.windowStart && scheduled <= times.windowEnd) {
        counts.latencies.push(at - scheduled);
      }
    } else {
      const code = (body.error && body.error.code) || "?";
      counts.errors[code] = (counts.errors[code] || 0) + 1;
    }
  };
  s.send = (scheduled) => {
    s.seq += 1;
    s.pending.set(s.seq, scheduled);
    s.ws.send(`42${s.seq}${message(s.seq)}`);
    counts.sent += 1;
  };
  s.schedule = () => {
    const interval = intervalS * 1000;
    let next = times.sendAt + Math.random() * interval;
    const tick = () => {
      if (next >= times.stopAt || s.ws.readyState !== WebSocket.OPEN) return;
      s.send(next);
      next += interval;
      s.timer = setTimeout(tick, Math.max(0, next - now()));
    };
    s.timer = setTimeout(tick, Math.max(0, next - now()));
  };
  s.connect = async () => {
    s.ws = await open(token, s.onEvent);
    if (s.ws) counts.connected += 1;
  };
  return s;
}

async function main() {
  spec =
    process.argv[2] === "-"
      ? JSON.parse((await lines.next()).value)
      : JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  base = Date.parse(spec.base);
  const connecting = [];
  const gap = 1000 / spec.rampPerS;
  const start = now();
  for (const token of spec.monitors || []) {
    const ws = await open(token, (data) => {
      if (data.startsWith("42")) out.monitorEvents += 1;
    });
    if (!ws) throw new Error("a monitor could not connect");
    monitors.push(ws);
  }
  const clients = [
    ...spec.streams.map(([id, token]) => () => streamer(id, token)),
    ...(spec.viewers || []).map(([stream, view, token]) => () => viewer(stream, view, token)),
  ];
  clients.forEach((make, i) => {
    const s = make();
    streamers.push(s);
    connecting.push(
      new Promise((resolve) => setTimeout(resolve, Math.max(0, start + i * gap - now()))).then(
        s.connect,
      ),
    );
  });
  await Promise.all(connecting);
  process.stdout.write("ready\n");
  times = JSON.parse((await lines.next()).value);
  for (const s of streamers) if (s.ws) s.schedule();
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, times.stopAt - now())));
  // Let every acknowledgement arrive, so the rows stored can be compared with them.
  const deadline = now() + 15000;
  const outstanding = () => streamers.reduce((n, s) => n + s.pending.size, 0);
  while (outstanding() > 0 && now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  out.unanswered = outstanding();
  stopping = true;
  for (const s of streamers) if (s.ws) s.ws.terminate();
  for (const ws of monitors) ws.terminate();
  // Exit once the (large) line is flushed: a pipe is written asynchronously.
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
