// What the client guide's examples take from their surroundings (a socket, React hooks, VDO.ninja),
// reduced to the minimum so the examples themselves run unchanged under Node.
'use strict';

const { io } = require('socket.io-client');

const URL = process.env.SERVER_URL;
const TOKEN = process.env.TOKEN;
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 15000);

// One line per observation, prefixed so the examples' own console.log output is told apart.
function report(event, data) {
  process.stdout.write('@@' + JSON.stringify({ event, data }) + '\n');
}

let socket = null;

function connect(options = {}) {
  socket = io(URL, { auth: { token: TOKEN }, reconnection: false, ...options });
  socket.on('connect_error', (err) => report('connect_error', { message: err.message, data: err.data }));
  return socket;
}

function useSocket() {
  return socket;
}

function useState(initial) {
  let value = initial;
  const set = (next) => {
    // Like React: a function is an updater of the current value.
    value = typeof next === 'function' ? next(value) : next;
    report('state', value);
  };
  return [value, set];
}

const cleanups = [];
function useEffect(effect) {
  const cleanup = effect();
  if (typeof cleanup === 'function') cleanups.push(cleanup);
}

// VDO.ninja's hook calls onStats with its measurements; here, a few fixed samples.
function useVdoNinja({ onStats }) {
  const samples = JSON.parse(process.env.VDO_SAMPLES || '[]');
  samples.forEach((sample, i) => setTimeout(() => onStats(sample), 50 * (i + 1)));
  return { stats: samples[samples.length - 1] || null };
}

function finish(code = 0) {
  cleanups.forEach((cleanup) => cleanup());
  if (socket) socket.disconnect();
  setTimeout(() => process.exit(code), 10);
}

setTimeout(() => {
  report('timeout', TIMEOUT_MS);
  finish(1);
}, TIMEOUT_MS).unref();

module.exports = { connect, report, useSocket, useState, useEffect, useVdoNinja, finish };
