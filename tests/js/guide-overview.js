// The client guide's "Live Dashboard" examples, unchanged: the digest-based overview and history.
'use strict';

const { connect, report, useSocket, useState, useEffect, finish } = require('./harness');

const socket = connect();
const STREAM = process.env.STREAM_ID;
let started = false;

// Observations of the harness, next to the client guide's own listeners.
socket.on('stream:stats:digest', (digest) => {
  report('digest', digest);
  if (started && digest.streams.some((s) => s.streamId === STREAM)) {
    // A row committed after the list arrived through a digest: the example is done.
    setTimeout(() => finish(0), 50);
  }
});
const log = console.log;
console.log = (...args) => {
  log(...args);
  report('console', args);
};

socket.on('connect', () => {
  report('connected', socket.id);
  report('rendered', StreamsOverview());
  started = true;
  history();
});

// --- from the client guide (the JSX becomes the same text lines) ---
function StreamsOverview() {
  const socket = useSocket();
  const [streams, setStreams] = useState({});

  useEffect(() => {
    const merge = (items) => setStreams((known) => {
      const next = { ...known };
      for (const item of items) {
        const old = next[item.streamId];
        if (!old || old.lastUpdated <= item.lastUpdated) next[item.streamId] = { ...old, ...item };
      }
      return next;
    });

    // One digest a second with the streams that changed, then the current state of every one
    socket.emit('stream:stats:digest:subscribe', { interval: 1000 }, () => {
      socket.emit('stream:stats:list', {}, (answer) => merge(answer.streams));
    });
    socket.on('stream:stats:digest', (digest) => merge(digest.streams));

    return () => {
      socket.emit('stream:stats:digest:unsubscribe');
      socket.off('stream:stats:digest');
    };
  }, [socket]);

  return Object.values(streams).map(
    (s) => `${s.streamId}: ${s.quality}, ${s.stats.bitrate} kbps, ${s.viewerCount} viewers`,
  );
}

function history() {
socket.emit('stream:stats:history', {
  streamId: '123e4567-e89b-12d3-a456-426614174000',
  from: new Date(Date.now() - 60 * 60 * 1000).toISOString(),   // the last hour
}, (answer) => {
  if (!answer.ok) return console.error(answer.error);            // e.g. { code: 'invalid', field: 'from' }
  console.log(answer.bucket, answer.rows.length, 'points');
  // answer.rows: [{ time, bitrate, fps, packetLoss, latency, quality, … }], oldest first
});
}
// --- end ---
