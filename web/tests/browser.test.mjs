// End-to-end test of the web page in headless Chromium against a running `deepemotion serve --dev`:
// sign up, log in, upload, live status, chart (smoothed and raw), people, overlay, exports,
// rename, delete.
//
//   DEEPEMOTION_BASE_URL=http://127.0.0.1:8080 \
//   DEEPEMOTION_VIDEO=/work/shared/data/videos/WolfgangLanger_Pexels.mp4 \
//   DEEPEMOTION_ARTIFACTS=/tmp/shots npm run test:browser
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE_URL = process.env.DEEPEMOTION_BASE_URL;
const VIDEO = process.env.DEEPEMOTION_VIDEO ?? '/work/shared/data/videos/WolfgangLanger_Pexels.mp4';
const ARTIFACTS = process.env.DEEPEMOTION_ARTIFACTS ?? join(tmpdir(), 'deepemotion-web-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// slow enough that the upload takes a few seconds, so its progress can be seen
const UPLOAD_BYTES_PER_SEC = 512 * 1024;

const tid = (id) => `[data-testid="${id}"]`;

test('sign up, upload, watch the analysis live, explore, rename and delete', { timeout: 180_000 }, async (t) => {
  assert.ok(BASE_URL, 'set DEEPEMOTION_BASE_URL to a running `deepemotion serve --dev`');
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'deepemotion-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  t.after(async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  });
  const page = context.pages()[0] ?? (await context.newPage());
  // remember which object URLs the page revokes (thumbnails must be released with their view)
  await context.addInitScript(() => {
    window.__revokedObjectUrls = [];
    const revoke = URL.revokeObjectURL.bind(URL);
    URL.revokeObjectURL = (url) => { window.__revokedObjectUrls.push(url); revoke(url); };
  });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // failed requests are judged by the responses below (a 404 of /events is the expected fallback)
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') &&
    problems.push(`console: ${m.text()}`));
  page.on('response', (r) => r.status() >= 400 && !(r.status() === 404 && r.url().endsWith('/events')) &&
    problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`));
  const shot = (name) => page.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
  const step = (name) => console.log(`# ${((Date.now() - started) / 1000).toFixed(1)} s: ${name}`);
  const started = Date.now();

  // ---- sign up, then log in ----
  await page.goto(BASE_URL);
  const id = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const email = `web-${id}@example.com`;
  const password = `pw-${id}-secret`;
  // markup in a username (and, below, in a title) is shown as text, never parsed: an <img> that
  // ran its onerror would set window.__xss (and its src would show up as a failed request)
  const username = `<img src=x onerror=window.__xss=1>${id}`;
  await page.click(tid('show-signup'));
  await page.fill(tid('signup-username'), username);
  await page.fill(tid('signup-email'), email);
  await page.fill(tid('signup-password'), password);
  await page.click(tid('signup-submit'));
  await page.waitForSelector(tid('auth-info'));
  assert.equal(await page.textContent(tid('auth-info')), `Account ${username} created. Log in to continue.`);
  assert.equal(await page.inputValue(tid('login-email')), email);
  await page.fill(tid('login-password'), password);
  await page.click(tid('login-submit'));
  await page.waitForSelector(tid('current-user'));
  await page.waitForSelector(tid('no-videos'));
  assert.equal(await page.textContent(tid('current-user')), username, 'the username is shown as text');
  assert.equal(await page.locator(`${tid('current-user')} *`).count(), 0, 'no element made from it');
  // a marker that survives only if the page is never reloaded
  await page.evaluate(() => (window.__sameDocument = true));
  step('signed up and logged in');

  // ---- upload, throttled so the progress bar has time to move ----
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: UPLOAD_BYTES_PER_SEC,
  });
  // record, from inside the page, every value of the upload bar and every state the list item shows
  // (the analysis of the clip can be quick: PROCESSING may last well under a second)
  await page.evaluate(() => {
    window.__uploadSamples = [];
    window.__statusSamples = [];
    setInterval(() => window.__uploadSamples.push(document.querySelector('[data-testid="upload-progress"]').value), 50);
    const list = document.querySelector('[data-testid="video-list"]');
    new MutationObserver((records) => {
      for (const r of records)
        for (const node of r.addedNodes)
          if (node.dataset?.testid === 'video-item') {
            const s = `${node.dataset.status}:${node.dataset.progress}`;
            if (window.__statusSamples.at(-1) !== s) window.__statusSamples.push(s);
          }
    }).observe(list, { childList: true });
  });
  await page.setInputFiles(tid('upload-input'), VIDEO);
  await page.click(tid('upload-submit'));
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid="upload-progress"]').value;
    return v > 0 && v < 100;
  });
  await shot('01-upload-progress.png');
  await page.waitForSelector(`${tid('upload-form')}[data-state="done"]`, { timeout: 60_000 });
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
  });
  const uploadSamples = await page.evaluate(() => window.__uploadSamples);
  assert.ok(uploadSamples.some((v) => v > 0 && v < 100), `the upload bar moved: ${uploadSamples}`);
  assert.equal(uploadSamples.at(-1), 100);
  assert.equal(await page.textContent(tid('upload-status')), 'Uploaded; analysing.');
  step(`uploaded (${new Set(uploadSamples).size} distinct bar values)`);

  // ---- the status arrives live: PROCESSING with progress, then COMPLETED ----
  const item = page.locator(tid('video-item'));
  await page.waitForSelector(`${tid('video-item')}:is([data-status="PROCESSING"], [data-status="COMPLETED"])`, { timeout: 60_000 });
  await shot('02-processing.png');
  step(`analysis started: ${await item.getAttribute('data-status')} ${await item.getAttribute('data-progress')}%`);
  await page.waitForSelector(`${tid('video-item')}[data-status="COMPLETED"]`, { timeout: 120_000 });
  const statuses = await page.evaluate(() => window.__statusSamples);
  step(`completed; the list showed: ${statuses.join(' ')}`);
  const processing = statuses.filter((s) => s.startsWith('PROCESSING:')).map((s) => Number(s.split(':')[1]));
  assert.ok(processing.some((p) => p > 0 && p < 100), `live progress while processing: ${statuses}`);
  assert.equal(statuses.at(-1).split(':')[0], 'COMPLETED');

  // ---- the video: chart, dominant emotion per second, summary ----
  await item.locator(tid('video-open')).click();
  await page.waitForSelector(`${tid('emotion-chart')} canvas`);
  assert.equal(await page.getAttribute(tid('emotion-chart'), 'data-series'), '7');
  // uPlot's legend lists the x series and then one row per emotion
  assert.equal(await page.locator(`${tid('emotion-chart')} .u-legend .u-series`).count(), 8);
  const perSecond = await page.$$eval(`${tid('dominant-timeline')} li`, (lis) =>
    lis.map((li) => li.dataset.emotion).filter((e) => e !== 'none'));
  step(`dominant per second: ${perSecond.join(' ')}`);
  assert.ok(perSecond.length >= 10, `a timeline of the clip: ${perSecond}`);
  assert.deepEqual(perSecond.slice(0, 3), ['sad', 'sad', 'sad'], 'the clip starts with crying');
  assert.deepEqual(perSecond.slice(-3), ['happy', 'happy', 'happy'], 'the clip ends with laughter');
  assert.ok((await page.textContent(tid('summary-dominant'))).length > 0);

  // ---- people: the clip shows one woman, so one row, with her picture ----
  const people = page.locator(`${tid('people')} tbody tr`);
  assert.equal(await people.count(), 1, 'one person in the clip');
  assert.equal(await people.getAttribute('data-person'), '1', 'people are numbered from 1');
  const cells = await people.locator('th, td').allTextContents();
  step(`people: ${cells.join(' | ')}`);
  const [, personCell, tracksCell, seenCell, framesCell, dominantCell] = cells;
  assert.equal(personCell, '1');
  assert.match(tracksCell, /^\d+(, \d+)*$/, 'the tracks of the person');
  assert.match(seenCell, /^\d+:\d\d–\d+:\d\d$/);
  assert.ok(Number(framesCell) > 10, `frames with her face: ${framesCell}`);
  assert.match(dominantCell, /^[a-z]+$/);
  // the thumbnail needs the token, so it comes through fetch and an object URL, and really loads
  await page.waitForFunction(() => {
    const img = document.querySelector('[data-testid="people"] img[data-testid="person-thumbnail"]');
    return img?.complete && img.naturalWidth > 0;
  }, null, { timeout: 30_000 });
  const thumbnail = page.locator(tid('person-thumbnail'));
  assert.equal(await thumbnail.getAttribute('alt'), 'Person 1');
  const thumbnailUrl = await thumbnail.getAttribute('src');
  assert.match(thumbnailUrl, /^blob:/);

  // ---- the person selector: the main face, then each person ----
  const options = await page.$$eval(`${tid('person-select')} option`, (os) => os.map((o) => [o.value, o.textContent]));
  assert.equal(options.length, 2, `main face and one person: ${JSON.stringify(options)}`);
  assert.equal(options[0][0], 'main');
  assert.equal(options[1][0], '1');
  assert.match(options[1][1], /^Person 1 \(\d+:\d\d–\d+:\d\d\)$/);

  // ---- the chart plots the smoothed series; "Raw" switches to the model's output per frame ----
  const chart = tid('emotion-chart');
  // the chart's pixels once painted (uPlot draws on a canvas), and its size
  const chartImage = () => page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() =>
    requestAnimationFrame(() => {
      const canvas = document.querySelector('[data-testid="emotion-chart"] canvas');
      resolve({ width: canvas.width, height: canvas.height, pixels: canvas.toDataURL() });
    }))));
  assert.equal(await page.getAttribute(chart, 'data-mode'), 'smoothed', 'smoothed by default');
  assert.equal(await page.isChecked(tid('raw-toggle')), false);
  const smoothedChart = await chartImage();
  await page.check(tid('raw-toggle'));
  await page.waitForSelector(`${chart}[data-mode="raw"] canvas`);
  const rawChart = await chartImage();
  assert.equal(await page.locator(`${chart} .u-legend .u-series`).count(), 8, 'the same emotions, raw');
  assert.deepEqual([rawChart.width, rawChart.height], [smoothedChart.width, smoothedChart.height]);
  assert.notEqual(rawChart.pixels, smoothedChart.pixels, 'the raw series is drawn differently from the smoothed one');
  await shot('03-raw-chart.png');
  // following the person keeps the mode; unticking "Raw" returns to the smoothed series
  await page.selectOption(tid('person-select'), '1');
  await page.waitForSelector(`${chart}[data-person="1"][data-mode="raw"] canvas`);
  await page.uncheck(tid('raw-toggle'));
  await page.waitForSelector(`${chart}[data-person="1"][data-mode="smoothed"] canvas`);
  step('chart: smoothed, raw, and person 1');

  // ---- the overlay draws the face at ~15 s ----
  await page.waitForFunction(() => document.querySelector('[data-testid="player"]').readyState >= 1, null, { timeout: 30_000 });
  await page.evaluate(() => new Promise((resolve) => {
    const player = document.querySelector('[data-testid="player"]');
    // the overlay redraws in the next animation frame after the seek: resolve after it
    player.addEventListener('seeked', () => requestAnimationFrame(() => resolve()), { once: true });
    player.currentTime = 15;
  }));
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="overlay"]').dataset.boxes) >= 1);
  const overlayLabels = (await page.getAttribute(tid('overlay'), 'data-labels')).split('\n');
  step(`overlay at 15 s: ${await page.getAttribute(tid('overlay'), 'data-boxes')} box(es), frame ${await page.getAttribute(tid('overlay'), 'data-frame')}: ${overlayLabels.join(', ')}`);
  // "P<person> <smoothed dominant> <percent>%"
  // she laughs by then (the raw output says happy from about 10 s on)
  for (const label of overlayLabels) assert.match(label, /^P1 happy \d+%$/);
  const painted = await page.evaluate(() => {
    const canvas = document.querySelector('[data-testid="overlay"]');
    return canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data.some((v, i) => i % 4 === 3 && v > 0);
  });
  assert.ok(painted, 'the overlay canvas has the box painted');
  await shot('04-completed-detail.png');

  // ---- exports ----
  const [csv] = await Promise.all([page.waitForEvent('download'), page.click(tid('export-csv'))]);
  const csvText = readFileSync(await csv.path(), 'utf8');
  assert.ok(csvText.split('\n').length > 10, 'the CSV has a row per frame');
  const [json] = await Promise.all([page.waitForEvent('download'), page.click(tid('export-json'))]);
  const frames = JSON.parse(readFileSync(await json.path(), 'utf8'));
  assert.ok(Array.isArray(frames) && frames.length > 10 && frames[0].faces, 'the JSON holds the frames');
  const faces = frames.flatMap((f) => f.faces);
  assert.ok(faces.length > 10 && faces.every((f) => f.person === 1 && f.smoothed && f.smoothed_dominant),
    'each face has its person and its smoothed scores');
  step(`exports: ${csvText.split('\n').length} CSV lines, ${frames.length} JSON frames`);

  // ---- rename (to a title with markup in it, shown as text) ----
  const title = `Crying, then <b>laughing</b> <img src=x onerror=window.__xss=2> ${id}`;
  await page.click(tid('rename'));
  await page.fill(tid('rename-input'), title);
  await page.click(tid('rename-save'));
  await page.waitForFunction((title) =>
    document.querySelector('[data-testid="video-item"] [data-testid="video-title"]')?.textContent === title, title);
  assert.equal(await page.textContent(tid('detail-title')), title);
  assert.equal(await page.locator(`${tid('detail-title')} *, ${tid('video-title')} *`).count(), 0,
    'no element made from the title');

  // ---- delete, confirming the dialog ----
  page.once('dialog', (dialog) => dialog.accept());
  await page.click(tid('delete'));
  await page.waitForSelector(tid('no-videos'));
  assert.equal(await item.count(), 0);
  // the page's CSP forbids fetching blob: URLs, so revocation is read from the page's own record
  assert.ok(await page.evaluate((url) => window.__revokedObjectUrls.includes(url), thumbnailUrl),
    'the view released the object URL of the thumbnail');
  await shot('05-after-delete.png');

  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was never reloaded');
  assert.equal(await page.evaluate(() => window.__xss), undefined, 'no markup from a username or title ran');
  assert.deepEqual(problems, [], 'no errors in the page');
  step('done');
});
