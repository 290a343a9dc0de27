// The client guide's streamer side, unchanged: "Sending Stream Stats" and the StreamerStudio component.
'use strict';

const { connect, report, useSocket, useEffect, useVdoNinja, finish } = require('./harness');

const socket = connect();
const streamKey = 'guide-stream-key';
const EXPECTED = Number(process.env.EXPECTED_ACKS || 1);
let acknowledged = 0;

socket.on('stream:stats:received', (data) => {
  report('received', data);
  if (++acknowledged === EXPECTED) finish(0);
});
socket.on('error', (data) => report('error', data));

socket.on('connect', () => {
  report('connected', socket.id);

  // --- from the client guide: "Event: stream:stats:update" ---
  socket.emit('stream:stats:update', {
    streamId: '123e4567-e89b-12d3-a456-426614174000',
    stats: {
      bitrate: 2500,        // Current bitrate in kbps
      fps: 30,              // Frames per second
      resolution: {
        width: 1920,
        height: 1080
      },
      audioLevel: -20,      // Audio level in dB
      packetLoss: 0.5,      // Packet loss percentage
      latency: 45,          // Latency in milliseconds
      bandwidth: {
        upload: 5000,       // Upload bandwidth in kbps
        download: 10000     // Download bandwidth in kbps
      }
    },
    timestamp: '2025-01-21T10:30:00.000Z'
  });
  // --- end ---

  StreamerStudio({ streamId: process.env.STREAM_ID });
});

// --- from the client guide: "Frontend Integration Example" (type annotations and JSX removed) ---
function StreamerStudio({ streamId }) {
  const socket = useSocket();
  const { stats } = useVdoNinja({
    mode: 'streamer',
    params: { streamKey },
    onStats: (vdoStats) => {
      // Send stats to backend every 5 seconds
      socket.emit('stream:stats:update', {
        streamId,
        stats: {
          bitrate: vdoStats.bitrate,
          fps: vdoStats.fps,
          resolution: vdoStats.resolution,
          audioLevel: vdoStats.audioLevel,
          packetLoss: vdoStats.packetLoss,
          latency: vdoStats.rtt,
          bandwidth: {
            upload: vdoStats.availableOutgoingBitrate,
            download: vdoStats.availableIncomingBitrate,
          }
        },
        timestamp: new Date().toISOString(),
      });
    }
  });

  // Listen for stats acknowledgment
  useEffect(() => {
    socket.on('stream:stats:received', (data) => {
      console.log('Stats acknowledged:', data);
    });

    return () => {
      socket.off('stream:stats:received');
    };
  }, [socket]);

  return stats;
}
// --- end ---
