// Opens the viewer collector's test page in headless Chromium (playwright-core driving Debian's
// chromium) and prints what the page saw: every beacon the collector sent with the server's
// answer, as `@@{json}` lines like the other scripts here. PAGE_URL: the page to open.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const PAGE_URL = process.env.PAGE_URL;
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 45000);

function report(event, data) {
  process.stdout.write('@@' + JSON.stringify({ event, data }) + '\n');
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'viewer-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  try {
    const page = await context.newPage();
    page.on('console', (msg) => report('console', msg.text()));
    page.on('pageerror', (err) => report('pageerror', String(err)));
    await page.goto(PAGE_URL);
    await page.waitForFunction(() => window.viewerDone === true, null, { timeout: TIMEOUT_MS });
    report('beacons', await page.evaluate(() => window.sentBeacons));
    report('video', await page.evaluate(() => ({
      duration: document.querySelector('video').duration,
      width: document.querySelector('video').videoWidth,
      height: document.querySelector('video').videoHeight,
    })));
  } catch (err) {
    report('failed', String(err));
    process.exitCode = 1;
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})();
