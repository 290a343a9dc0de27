// What docs/protocol.md adds to the client guide, from the official client: acknowledgement callbacks,
// `error` events, refused connections. Prints one observation per line.
'use strict';

const { connect, report, finish } = require('./harness');

const streamId = process.env.STREAM_ID;
const foreign = process.env.FOREIGN_STREAM_ID;
const socket = connect(process.env.TRANSPORT ? { transports: [process.env.TRANSPORT] } : {});

socket.on('connect_error', () => finish(0));
socket.on('error', (data) => {
  report('error', data);
  finish(0);
});

socket.on('connect', () => {
  report('connected', socket.io.engine.transport.name);
  const update = {
    streamId,
    stats: { bitrate: 0.1, fps: 24.5, packetLoss: 1.5, latency: 120 },
    timestamp: new Date().toISOString(),
  };
  socket.emit('stream:stats:update', update, (ack) => {
    report('ack', ack);
    socket.emit('stream:stats:get', { streamId }, (current) => {
      report('get-ack', current);
      socket.emit('stream:stats:update', { streamId: foreign, stats: { fps: 30 } });
    });
  });
});
