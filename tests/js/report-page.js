// Opens report pages (file URLs) in headless Chromium and prints what a reader would see, as
// one JSON line: per chart whether its canvas has drawn pixels, the x range it opened on, the
// range after a drag-select on the first chart and after `setRange`, and every link's target.
// Usage: node report-page.js OUT_DIR URL [URL...]   (a screenshot of each page goes to OUT_DIR)
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

async function inspect(page, url, shot) {
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  const requests = [];
  page.on('request', (req) => { if (!req.url().startsWith('file:') && !req.url().startsWith('data:')) requests.push(req.url()); });
  await page.goto(url);
  await page.waitForLoadState('load');
  const painted = () => page.evaluate(() => [...document.querySelectorAll('[data-chart] canvas')].map((canvas) => {
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    // Opaque, coloured pixels: series strokes and bars (axes, grid and text are grey, the
    // shading of drops is faint).
    let drawn = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
      if (a > 128 && Math.max(r, g, b) - Math.min(r, g, b) > 40) drawn++;
    }
    return { width: canvas.width, height: canvas.height, drawn };
  }));
  const canvases = await painted();
  const result = await page.evaluate(() => {
    const report = window.streamReport;
    const ranges = report ? report.charts.map((u) => [u.scales.x.min, u.scales.x.max]) : [];
    const series = report ? report.charts.map((u) => u.series.map((s) => s.label)) : [];
    return {
      title: document.title,
      slots: document.querySelectorAll('[data-chart]').length,
      opened: ranges,
      series,
      range: report ? report.range : null,
      links: [...document.querySelectorAll('a')].map((a) => a.getAttribute('href')),
      visible: document.getElementById('visible-range') ? document.getElementById('visible-range').textContent : null,
    };
  });
  result.canvases = canvases;
  await page.screenshot({ path: shot, fullPage: true });
  if (result.slots) {
    // The same canvases with every series hidden: nothing coloured may be left.
    await page.evaluate(() => window.streamReport.charts.forEach((u) => u.series.forEach((s, i) => i && u.setSeries(i, { show: false }))));
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(resolve)));
    (await painted()).forEach((blank, i) => { canvases[i].blank = blank.drawn; });
    await page.evaluate(() => window.streamReport.charts.forEach((u) => u.series.forEach((s, i) => i && u.setSeries(i, { show: true }))));
    // A reader drags across the middle third of the first chart.
    const over = await page.locator('[data-chart] .u-over').first().boundingBox();
    const y = over.y + over.height / 2;
    await page.mouse.move(over.x + over.width / 3, y);
    await page.mouse.down();
    await page.mouse.move(over.x + over.width / 2, y, { steps: 5 });
    await page.mouse.move(over.x + (2 * over.width) / 3, y, { steps: 5 });
    await page.mouse.up();
    result.dragged = await page.evaluate(() => window.streamReport.charts.map((u) => [u.scales.x.min, u.scales.x.max]));
    await page.evaluate(() => {
      const [from] = window.streamReport.range.all;
      window.streamReport.setRange(from + 3600, from + 7200);
    });
    // uPlot applies a new scale in a microtask: read it back in a later evaluation.
    result.set = await page.evaluate(() => window.streamReport.charts.map((u) => [u.scales.x.min, u.scales.x.max]));
    // Back to where the page opened: "Live hours" on a day, "Whole week" on a week.
    await page.locator('.toolbar button').first().click();
    result.back = await page.evaluate(() => window.streamReport.charts.map((u) => [u.scales.x.min, u.scales.x.max]));
  }
  result.errors = errors;
  result.requests = requests;
  return result;
}

(async () => {
  const [out, ...urls] = process.argv.slice(2);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
  try {
    const page = await context.newPage();
    const results = [];
    for (const [i, url] of urls.entries()) results.push(await inspect(page, url, path.join(out, `page-${i}.png`)));
    process.stdout.write(JSON.stringify(results) + '\n');
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((err) => { console.error(err); process.exit(1); });
