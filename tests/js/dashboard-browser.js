// The live dashboard in headless Chromium against a real server, with the official
// socket.io-client as streamers and viewers. Prints `@@{json}` observations for
// tests/e2e/test_dashboard_browser.py, which checks them; screenshots go to SHOTS_DIR.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { io } = require('socket.io-client');
const { chromium } = require('playwright-core');

const URL = process.env.SERVER_URL;
const SHOTS = process.env.SHOTS_DIR;
const STREAM = process.env.STREAM_ID; // has history written before the page opens
const OTHER = process.env.OTHER_STREAM_ID;
const tokens = JSON.parse(process.env.TOKENS);

/** An HS256 token, minted here when its expiry must be seconds from now. */
function mint(claims) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  const signature = crypto.createHmac('sha256', process.env.JWT_SECRET).update(body).digest('base64url');
  return `${body}.${signature}`;
}

function report(event, data) {
  process.stdout.write('@@' + JSON.stringify({ event, data }) + '\n');
}

const GOOD = { bitrate: 3200, fps: 30, resolution: { width: 1280, height: 720 }, packetLoss: 0.2, latency: 45, audioLevel: -18, bandwidth: { upload: 6000, download: 20000 } };
const CONGESTED = { bitrate: 900, fps: 14, resolution: { width: 1280, height: 720 }, packetLoss: 8.5, latency: 320, audioLevel: -18, bandwidth: { upload: 1100, download: 20000 } };

function client(token) {
  return new Promise((resolve, reject) => {
    const socket = io(URL, { auth: { token }, transports: ['websocket'], reconnection: false });
    socket.on('connect', () => resolve(socket));
    socket.on('connect_error', reject);
  });
}

let clock = Date.now() - 1000;
/** Send one sample and resolve with the time its acknowledgement (after commit) arrived. */
async function send(socket, streamId, stats) {
  clock = Math.max(clock + 1, Date.now());
  const ack = await socket.timeout(10000).emitWithAck('stream:stats:update', {
    streamId,
    stats,
    timestamp: new Date(clock).toISOString(),
  });
  if (!ack.ok) throw new Error(`update refused: ${JSON.stringify(ack)}`);
  return Date.now();
}

/** Poll the page until `fn` (run in the page) returns truthy; resolves with when it did. */
async function until(page, what, fn, arg, timeout = 10000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (error) {
    await page.screenshot({ path: path.join(SHOTS, `failed-${what}.png`), fullPage: true });
    throw new Error(`${what}: not seen within ${timeout} ms`);
  }
  return Date.now();
}

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  report('screenshot', file);
}

const rowQuality = ([id, quality]) => {
  const row = document.querySelector(`#streams tr[data-stream="${id}"]`);
  return row && row.dataset.quality === quality;
};
const signInError = () => {
  const error = document.querySelector('#signin-error');
  return error && !error.hidden;
};
const feedHas = ([id, type, state]) =>
  !!document.querySelector(`#alert-feed li[data-stream="${id}"][data-type="${type}"][data-state="${state}"]`);

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dashboard-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const requested = [];
  context.on('request', (request) => requested.push(request.url()));
  const errors = [];
  try {
    const page = await context.newPage();
    page.on('pageerror', (error) => errors.push(error.message));
    const streamer = await client(tokens.streamer);
    const other = await client(tokens.other);
    await send(streamer, STREAM, GOOD);
    await send(other, OTHER, { ...GOOD, bitrate: 5100 });

    // Sign in through the URL fragment, as `streamstats run` prints it.
    await page.goto(`${URL}/dashboard/#token=${tokens.moderator}`);
    await until(page, 'overview', rowQuality, [STREAM, 'good']);
    report('address', page.url());
    await shot(page, '01-overview-good');

    // Congestion: the first poor sample turns the row poor, the second raises the alerts.
    const poorAcked = await send(streamer, STREAM, CONGESTED);
    const poorSeen = await until(page, 'row poor', rowQuality, [STREAM, 'poor']);
    const raiseAcked = await send(streamer, STREAM, CONGESTED);
    const raiseSeen = await until(page, 'alert raised', feedHas, [STREAM, 'packet_loss_high', 'raised']);
    const tile = await page.$eval(`#streams tr[data-stream="${STREAM}"]`, (row) => ({
      first: row.parentElement.firstElementChild.dataset.stream,
      text: row.innerText,
      quality: row.querySelector('[data-col="quality"]').innerText.trim(),
    }));
    report('congested', { poorMs: poorSeen - poorAcked, raisedMs: raiseSeen - raiseAcked, tile });
    await shot(page, '02-overview-poor-alert');

    // Recovery: three good samples clear the alert.
    for (let i = 0; i < 2; i += 1) await send(streamer, STREAM, GOOD);
    const clearAcked = await send(streamer, STREAM, GOOD);
    const clearSeen = await until(page, 'alert cleared', feedHas, [STREAM, 'packet_loss_high', 'cleared']);
    await until(page, 'row good', rowQuality, [STREAM, 'good']);
    const feed = await page.$$eval(`#alert-feed li[data-stream="${STREAM}"]`, (items) =>
      items.map((li) => `${li.dataset.type}:${li.dataset.state}`));
    report('cleared', { clearedMs: clearSeen - clearAcked, feed });
    await page.fill('input.filter', OTHER.slice(0, 8));
    const filtered = await page.$$eval('#streams tbody tr', (rows) => rows.map((r) => r.dataset.stream));
    report('filtered', filtered);
    await page.fill('input.filter', '');
    await shot(page, '03-overview-cleared');

    // The stream page: history written before it opened, then live samples appended.
    await page.click(`#streams tr[data-stream="${STREAM}"] a.stream-link`);
    await until(page, 'history', () => document.querySelector('.chart-note[data-points]'));
    const history = await page.$eval('.chart-note', (n) => ({ bucket: n.dataset.bucket, points: Number(n.dataset.points) }));
    const drawn = () => Number(document.querySelector('[data-chart="bitrate"]').dataset.points);
    const before = await page.evaluate(drawn);
    for (let i = 0; i < 3; i += 1) await send(streamer, STREAM, { ...GOOD, bitrate: 4000 + 100 * i });
    await until(page, 'live points', (n) => Number(document.querySelector('[data-chart="bitrate"]').dataset.points) >= n, before + 3);
    const after = await page.evaluate(drawn);
    report('stream-page', { url: page.url(), history, before, after });

    // Viewers: two join, one leaves.
    const viewerCard = (n) => document.querySelector('[data-card="viewers"] .card-value').innerText === String(n);
    const viewers = [await client(tokens.viewer), await client(tokens.viewer)];
    for (const v of viewers) await v.timeout(10000).emitWithAck('stream:join', { streamId: STREAM });
    await until(page, 'two viewers', viewerCard, 2);
    await viewers[0].timeout(10000).emitWithAck('stream:leave', { streamId: STREAM });
    await until(page, 'one viewer', viewerCard, 1);
    report('viewers', [2, 1]);
    await send(streamer, STREAM, GOOD);
    await page.waitForTimeout(600);
    await shot(page, '04-stream-page-15m');
    // Viewer experience: both viewers' players report a first beacon; a new window reloads it.
    for (const [i, v] of viewers.entries()) {
      const beacon = {
        streamId: STREAM,
        viewId: crypto.randomUUID(),
        timestamp: new Date().toISOString(),
        state: 'playing',
        startupTime: 800 + 400 * i,
        watchTime: 10000,
        stalls: { count: i, duration: 500 * i },
        renditionChanges: { up: 0, down: i },
        bitrate: 2500,
        resolution: { width: 1280, height: 720 },
      };
      const answer = await v.timeout(10000).emitWithAck('stream:viewer:stats', beacon);
      if (!answer.ok) throw new Error(`beacon refused: ${JSON.stringify(answer)}`);
    }
    await page.click('[data-window="24h"]');
    await until(page, '24h history', () => document.querySelector('.chart-note').dataset.bucket === '1m');
    await until(page, 'viewer experience', () => !!document.querySelector('[data-panel="viewers"] [data-score]'));
    report('experience', await page.$eval('[data-panel="viewers"] table', (t) =>
      Object.fromEntries([...t.querySelectorAll('th')].map((th, k) => [th.textContent, t.querySelectorAll('td')[k].textContent]))));
    await shot(page, '05-stream-page-24h');
    for (const v of viewers) v.disconnect();

    // Refused tokens: a viewer's and a streamer's, each with a reason.
    for (const role of ['viewer', 'streamer']) {
      const refused = await context.newPage();
      await refused.goto(`${URL}/dashboard/#token=${tokens[role]}`);
      await until(refused, `${role} refused`, signInError);
      report('refused', { role, message: await refused.$eval('#signin-error', (e) => e.innerText) });
      await shot(refused, `06-refused-${role}`);
      if (role === 'viewer') {
        // A pasted moderator token opens the dashboard from the sign-in form.
        await refused.fill('#token', tokens.moderator);
        await refused.click('button[type="submit"]');
        await until(refused, 'pasted token', () => !!document.querySelector('#streams'));
        report('pasted', true);
      }
      await refused.close();
    }

    // A token that expires while the dashboard is open sends it back to sign-in.
    const expiring = await context.newPage();
    const exp = Math.floor(Date.now() / 1000) + 4;
    await expiring.goto(`${URL}/dashboard/#token=${mint({ sub: 'brief', role: 'moderator', exp })}`);
    await until(expiring, 'signed in until expiry', () => !!document.querySelector('#streams'));
    const open = Date.now();
    await until(expiring, 'expired', signInError, undefined, 15000);
    report('expired', {
      afterExpiryMs: Date.now() - exp * 1000,
      openMs: Date.now() - open,
      message: await expiring.$eval('#signin-error', (e) => e.innerText),
    });
    await shot(expiring, '07-expired');
    await expiring.close();
    streamer.disconnect();
    other.disconnect();
  } finally {
    report('requests', requested);
    report('page-errors', errors);
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    report('failed', String(error && error.stack ? error.stack : error));
    process.exit(1);
  },
);
