// The client guide's "Analytics Dashboard Integration", unchanged, plus one more get at the end.
'use strict';

const { connect, report, useSocket, useState, useEffect, finish } = require('./harness');

const socket = connect();
const EXPECTED_UPDATES = Number(process.env.EXPECTED_UPDATES || 0);
let updates = 0;
let currents = 0;

// Observations of the harness, next to the client guide's own listeners.
socket.on('stream:stats:current', (data) => {
  report('current', data);
  currents += 1;
  if (currents === 2) finish(0);
});
socket.on('stream:stats:update', (data) => {
  report('update', data);
  updates += 1;
  if (updates === EXPECTED_UPDATES) {
    // Everything arrived: ask once more, as a dashboard opened now would.
    socket.emit('stream:stats:get', { streamId: process.env.STREAM_ID });
  }
});
socket.on('error', (data) => report('error', data));

socket.on('connect', () => {
  report('connected', socket.id);
  report('rendered', StreamAnalytics({ streamId: process.env.STREAM_ID }));
});

// --- from the client guide (type annotations removed; the JSX becomes the same text lines) ---
function StreamAnalytics({ streamId }) {
  const socket = useSocket();
  const [stats, setStats] = useState(null);

  useEffect(() => {
    // Request current stats
    socket.emit('stream:stats:get', { streamId });

    // Listen for updates
    socket.on('stream:stats:current', (data) => {
      setStats(data.stats);
      report('render', render(data.stats));
    });

    socket.on('stream:stats:update', (data) => {
      if (data.streamId === streamId) {
        setStats(data.stats);
        report('render', render(data.stats));
      }
    });

    return () => {
      socket.off('stream:stats:current');
      socket.off('stream:stats:update');
    };
  }, [socket, streamId]);

  return render(stats);
}

function render(stats) {
  return stats && [
    `Bitrate: ${stats.bitrate} kbps`,
    `FPS: ${stats.fps}`,
    `Resolution: ${stats.resolution.width}x${stats.resolution.height}`,
    `Packet Loss: ${stats.packetLoss}%`,
    `Latency: ${stats.latency}ms`,
  ];
}
// --- end ---
