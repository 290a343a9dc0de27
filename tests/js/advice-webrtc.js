// clients/js/quality-advice.js in headless Chromium: a fake camera sent over a loopback
// RTCPeerConnection pair, its measured bitrate reported to a real server as a streamer's
// stats; when the server advises `lower`, the module must change the sender's encodings and
// the outgoing bitrate (getStats) must fall. Prints `@@{json}` observations for
// tests/e2e/test_advice_browser.py, which checks them.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const URL = process.env.SERVER_URL;
const TOKEN = process.env.TOKEN;
const STREAM = process.env.STREAM_ID;
const ROOT = path.resolve(__dirname, '..', '..');
// The module under test and the official browser client, inlined into the page.
const MODULE = fs.readFileSync(path.join(ROOT, 'clients', 'js', 'quality-advice.js'), 'utf8');
const SOCKET_IO = fs.readFileSync(path.join(ROOT, 'streamstats', 'static', 'vendor', 'socket.io.min.js'), 'utf8');

function report(event, data) {
  process.stdout.write('@@' + JSON.stringify({ event, data }) + '\n');
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>advice</title>
<video id="remote" autoplay muted playsinline></video>
<script>${SOCKET_IO.replace(/<\/script/gi, '<\\/script')}</script>
<script type="module">
// Imported as the module file it is, from a blob of its source (same origin as the page).
const moduleUrl = URL.createObjectURL(new Blob([${JSON.stringify(MODULE)}], { type: 'text/javascript' }));
const { applyQualityAdvice } = await import(moduleUrl);

const pc1 = new RTCPeerConnection();
const pc2 = new RTCPeerConnection();
pc1.onicecandidate = (e) => e.candidate && pc2.addIceCandidate(e.candidate);
pc2.onicecandidate = (e) => e.candidate && pc1.addIceCandidate(e.candidate);
pc2.ontrack = (e) => { document.getElementById('remote').srcObject = e.streams[0]; };
const media = await navigator.mediaDevices.getUserMedia({
  video: { width: 1280, height: 720, frameRate: 30 },
});
const sender = pc1.addTrack(media.getVideoTracks()[0], media);
await pc1.setLocalDescription(await pc1.createOffer());
await pc2.setRemoteDescription(pc1.localDescription);
await pc2.setLocalDescription(await pc2.createAnswer());
await pc1.setRemoteDescription(pc2.localDescription);

// Outgoing video bitrate over the last second, from the sender's own statistics.
let previous = null;
async function measure() {
  const stats = await sender.getStats();
  for (const s of stats.values()) {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      const now = { bytes: s.bytesSent, at: s.timestamp, width: s.frameWidth, height: s.frameHeight, fps: s.framesPerSecond };
      const kbps = previous ? (8 * (now.bytes - previous.bytes)) / (now.at - previous.at) : null;
      previous = now;
      return { kbps, width: now.width, height: now.height, fps: now.fps };
    }
  }
  return { kbps: null };
}

window.observed = { samples: [], applied: [], errors: [] };
const socket = io(${JSON.stringify(URL)}, { auth: { token: ${JSON.stringify(TOKEN)} }, transports: ['websocket'] });
applyQualityAdvice(socket, sender, {
  streamId: ${JSON.stringify(STREAM)},
  onApplied: (r) => window.observed.applied.push({ ...r, encodings: sender.getParameters().encodings }),
  onError: (e) => window.observed.errors.push(String(e)),
});
// Reported once a second; loss is what a congested uplink would show (loopback loses nothing).
window.congested = false;
setInterval(async () => {
  const m = await measure();
  if (m.kbps === null) return;
  window.observed.samples.push({ at: Date.now(), ...m });
  socket.emit('stream:stats:update', {
    streamId: ${JSON.stringify(STREAM)},
    stats: {
      bitrate: m.kbps, fps: m.fps || 30,
      resolution: { width: m.width || 1280, height: m.height || 720 },
      packetLoss: window.congested ? 12 : 0.1, latency: 40, audioLevel: -20,
      bandwidth: { upload: 20000, download: 20000 },
    },
    timestamp: new Date().toISOString(),
  });
}, 1000);
</script>`;

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'advice-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    ],
  });
  let code = 0;
  try {
    await context.grantPermissions(['camera'], { origin: URL });
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (msg) => report('console', msg.text()));
    page.on('pageerror', (err) => report('pageerror', String(err)));
    // A page of the server's own origin (a secure context on the loopback address, so the
    // camera and the socket are allowed), then the test page written into it.
    await page.goto(`${URL}/healthz`);
    await page.setContent(PAGE);
    // Warm up: the loopback link ramps up to the encoder's full rate.
    await page.waitForFunction(() => window.observed && window.observed.samples.length >= 8, null, { timeout: 30000 });
    const before = await page.evaluate(() => ({ samples: window.observed.samples.slice(-3) }));
    report('before', before);
    await page.evaluate(() => { window.congested = true; });
    await page.waitForFunction(() => window.observed.applied.length >= 1, null, { timeout: 30000 });
    const applied = await page.evaluate(() => window.observed.applied[0]);
    report('applied', applied);
    const appliedAt = Date.now();
    // The encoder needs a few seconds to settle at the new cap.
    await page.waitForTimeout(6000);
    const after = await page.evaluate((t) => window.observed.samples.filter((s) => s.at > t + 3000), appliedAt);
    report('after', after);
    report('errors', await page.evaluate(() => window.observed.errors));
  } catch (error) {
    report('failure', String(error && error.stack || error));
    code = 1;
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.exit(code);
})();
