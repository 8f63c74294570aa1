// End-to-end test of the dashboard: a real lsqd (LSQD_BIN, temporary data
// folder, ephemeral port) driven through Debian's chromium with
// playwright-core. Screenshots of every step go to E2E_OUT (build/e2e).
//   LSQD_BIN=build/lsqd node --test tests/e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, statSync, readFileSync, writeFileSync } from 'node:fs';
import { deflateSync, gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const LSQD = process.env.LSQD_BIN || join(ROOT, 'build/lsqd');
const OUT = process.env.E2E_OUT || join(ROOT, 'build/e2e');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Small, but long enough (a few seconds even on an idle machine) for the page
// to show progress between 0 and 100%: on 2,000 images an mlp can finish
// between two polls.
const TINY = { name: 'e2e', arch: 'mlp', train_limit: '20000', test_limit: '500', pretrain_epochs: '1', weight_bits: '4', train_epochs: '1' };

let lsqd, base, tmp, browser, page;
const pageErrors = [];

function startLsqd() {
  return new Promise((ok, fail) => {
    const env = { ...process.env, LSQD_WEB: join(ROOT, 'web') };
    if (process.env.LSQ_BIN) env.LSQ_BIN = process.env.LSQ_BIN;
    const p = spawn(LSQD, ['--listen', '127.0.0.1:0', '--data', join(tmp, 'data'), '--workers', '1', '--grace', '5'],
      { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let buf = '', done = false;
    const timer = setTimeout(() => { if (!done) { done = true; p.kill('SIGKILL'); fail(new Error(`lsqd did not log a port: ${buf.slice(-2000)}`)); } }, 10000);
    p.stderr.on('data', (d) => {
      buf += d;
      if (done) return;
      for (const line of buf.split('\n')) {
        if (!line.includes('"msg":"listening"')) continue;
        try {
          const port = JSON.parse(line).port;
          done = true;
          clearTimeout(timer);
          ok({ proc: p, base: `http://127.0.0.1:${port}`, log: () => buf });
          return;
        } catch { /* partial line */ }
      }
    });
    p.on('exit', (code) => { if (!done) { done = true; clearTimeout(timer); fail(new Error(`lsqd exited ${code}: ${buf.slice(-2000)}`)); } });
  });
}

async function shot(name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

// Polls fn until it returns a truthy value (or throws after ms).
async function until(what, fn, ms = 30000, every = 100) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function fillForm(v) {
  await page.goto(`${base}/#/submit`);
  await page.getByLabel('Name').fill(v.name);
  await page.getByLabel('Model', { exact: true }).selectOption(v.arch);
  await page.getByLabel('Training images').fill(v.train_limit);
  await page.getByLabel('Test images').fill(v.test_limit);
  await page.getByLabel('Weight bits').selectOption(v.weight_bits);
  await page.locator('#f-pretrain-epochs').fill(v.pretrain_epochs);
  await page.locator('#f-train-epochs').fill(v.train_epochs);
  await page.locator('#f-train-lr').fill(v.lr || '');
}

// A small image-folder dataset as .tar.gz, made here: CLASS/i.png, grey
// 10x10 PNGs (zlib for the image data, a CRC-32 table for the chunks) in a
// ustar archive.
const CRC = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function png(w, h, px) {
  const chunk = (type, data) => {
    const t = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    t.copy(out, 4);
    out.writeUInt32BE(crc32(t), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 0;
  const raw = Buffer.alloc(h * (w + 1));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[y * (w + 1) + 1 + x] = px(x, y);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
function tarGz(files) {
  const parts = [];
  for (const [name, data] of files) {
    const h = Buffer.alloc(512);
    h.write(name, 0, 'latin1');
    h.write('0000644\0', 100); h.write('0000000\0', 108); h.write('0000000\0', 116);
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('14516415400\0', 136);
    h.fill(' ', 148, 156); h.write('0', 156); h.write('ustar\0', 257); h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
    parts.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(parts));
}

const points = (id) => page.locator(`#${id}`).getAttribute('data-points').then(Number);
const progressValue = () => page.locator('.job-progress progress').getAttribute('value').then(Number);

before(async () => {
  mkdirSync(OUT, { recursive: true });
  tmp = mkdtempSync(join(tmpdir(), 'lsqd-e2e-'));
  lsqd = await startLsqd();
  base = lsqd.base;
  browser = await chromium.launchPersistentContext(join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  page = browser.pages()[0] || await browser.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  if (browser) await browser.close();
  if (lsqd && lsqd.proc.exitCode === null) lsqd.proc.kill('SIGKILL');
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('the jobs page shows its empty state', async () => {
  await page.goto(`${base}/`);
  await page.getByText('No jobs yet.').waitFor();
  await page.locator('#health.ok').waitFor();
  await shot('01-jobs-empty');
});

test('a bad value gets the API error next to its field', async () => {
  await fillForm({ ...TINY, lr: '50' });
  await page.getByRole('button', { name: 'Submit job' }).click();
  const err = page.locator('#f-train-lr-err');
  await until('the train.lr error', async () => (await err.textContent()).includes('train.lr'));
  assert.match(await err.textContent(), /train\.lr must be in \(0, 10\], got 50/);
  assert.equal(await page.locator('#f-train-lr').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-train-lr', 'the field with the error has the focus');
  await shot('02-submit-field-error');
});

let jobId;
test('a tiny job submitted through the form runs with a live progress bar and charts', async () => {
  await page.locator('#f-train-lr').fill('0.01');
  await page.getByRole('button', { name: 'Submit job' }).click();
  await until('the job page', async () => /#\/jobs\/\d+$/.test(page.url()));
  jobId = Number(page.url().match(/(\d+)$/)[1]);
  const seenPoints = new Set(), seenProgress = new Set();
  let shotTaken = false;
  await until('the job to succeed', async () => {
    seenPoints.add(await points('chart-loss'));
    const v = await progressValue();
    seenProgress.add(v);
    if (!shotTaken && v > 0 && v < 100) { shotTaken = true; await shot('03-job-running'); }
    return (await page.locator('h1 .badge').textContent()) === 'succeeded';
  }, 120000, 150);
  assert.ok([...seenProgress].some((v) => v > 0 && v < 100), `the progress bar moved between 0 and 100: ${[...seenProgress]}`);
  assert.ok(seenPoints.size >= 2, `the loss chart gained points while the job ran: ${[...seenPoints]}`);
  await until('the final progress', async () => (await progressValue()) === 100);
  assert.ok(await points('chart-acc') >= 2, 'train and test accuracy are charted');
  assert.ok(await points('chart-lr') >= 2, 'the learning rate is charted');
  await until('the LSQ step sizes', async () => (await points('chart-wstep')) >= 1);
  assert.equal(await page.locator('#layers-table tbody tr').count() >= 2, true, 'one row per quantized layer');
  assert.ok(await page.locator('#event-log li.ev-done').count() === 1, 'the event log holds the done event');
  await shot('04-job-succeeded');
});

test('the jobs table lists the finished job', async () => {
  await page.goto(`${base}/#/jobs`);
  const row = page.locator(`#jobs-table tr[data-id="${jobId}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute('data-state'), 'succeeded');
  assert.equal(await row.locator('progress').getAttribute('value'), '100');
  assert.match(await row.textContent(), /mlp.*W4\/A4/);
  await shot('05-jobs-table');
  await row.getByRole('link', { name: 'e2e' }).click();
  await page.locator('#artifacts-table').waitFor();
});

test('an artifact downloads with the size and hash the API lists', async () => {
  const listed = await (await fetch(`${base}/api/v1/jobs/${jobId}/artifacts`)).json();
  const fp = listed.artifacts.find((a) => a.name === 'fp.lsqc');
  assert.ok(fp, 'the job wrote fp.lsqc');
  const [dl] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'Download fp.lsqc' }).click(),
  ]);
  const file = join(tmp, 'fp.lsqc');
  await dl.saveAs(file);
  assert.equal(dl.suggestedFilename(), 'fp.lsqc');
  assert.equal(statSync(file).size, fp.bytes);
  assert.equal(createHash('sha256').update(readFileSync(file)).digest('hex'), fp.sha256);
  await page.locator('#artifacts').scrollIntoViewIfNeeded();
  await shot('06-artifacts');
});

test('a second job can be watched live and cancelled', async () => {
  await fillForm({ ...TINY, name: 'e2e-cancel', train_limit: '0', test_limit: '0', pretrain_epochs: '4', train_epochs: '4' });
  await page.getByRole('button', { name: 'Submit job' }).click();
  await until('the second job page', async () => /#\/jobs\/\d+$/.test(page.url()) && !page.url().endsWith(`/${jobId}`));
  const first = await until('the first progress point', async () => { const n = await points('chart-loss'); return n > 0 && n; }, 60000);
  await until('the chart to update live', async () => (await points('chart-loss')) > first, 60000);
  assert.equal(await page.locator('h1 .badge').textContent(), 'running');
  await shot('07-job-live');
  await page.getByRole('button', { name: 'Cancel job' }).click();
  await until('the job to be cancelled', async () => (await page.locator('h1 .badge').textContent()) === 'cancelled', 30000);
  assert.ok(await page.getByRole('button', { name: /Cancel/ }).isHidden(), 'no cancel button on a finished job');
  await shot('08-job-cancelled');
});

test('compare charts the finished jobs', async () => {
  await page.goto(`${base}/#/compare`);
  await page.locator('#chart-acc-bits').waitFor();
  await until('a point on accuracy vs bits', async () => (await points('chart-acc-bits')) >= 1);
  assert.match(await page.locator('#table1').textContent(), /mlp · fashion-mnist/);
  await shot('09-compare');
});

test('narrow screens keep the page within the viewport', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/#/jobs`);
  await page.locator('#jobs-table').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page scrolls sideways by ${overflow}px`);
  await shot('10-jobs-narrow');
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('try it shows the top 3 classes of a test image', async () => {
  await page.goto(`${base}/#/try/${jobId}`);
  await page.locator('#samples button.sample').first().waitFor();
  await page.locator('#samples button.sample').nth(14).click(); // a Sneaker
  const done = await until('a prediction or an error', async () =>
    (await page.locator('#top3 li').count()) === 3 || (await page.locator('#try-results .error').count()) > 0, 30000);
  await shot('11-try-it');
  const error = (await page.locator('#try-results .error').count()) ? await page.locator('#try-results .error').textContent() : '';
  assert.ok(done && !error, `predict answered: ${error}`);
  assert.equal(await page.locator('#top3 li').count(), 3);
  // a PNG file of another size goes as it is; lsqd fits it to 28x28
  const file = join(tmp, 'boot.png');
  writeFileSync(file, png(56, 40, (x, y) => (x > 10 && x < 46 && y > 8 && y < 32 ? 230 : 10)));
  await page.locator('#try-file').setInputFiles(file);
  const sent = await until('the file\'s prediction or an error', async () =>
    /File boot\.png/.test(await page.locator('#try-source').textContent()) &&
    ((await page.locator('#top3 li').count()) === 3 || (await page.locator('#try-results .error').count()) > 0), 30000);
  const fileError = (await page.locator('#try-results .error').count()) ? await page.locator('#try-results .error').textContent() : '';
  assert.ok(sent && !fileError, `predict answered the file: ${fileError}`);
});

test('a dataset archive uploaded on the Datasets page becomes ready', async () => {
  const files = [];
  for (const [k, cls] of ['circle', 'square'].entries()) {
    // enough images that the registration takes a moment: its progress shows
    for (let i = 0; i < 2500; i++) files.push([`shapes/${cls}/${i}.png`, png(10, 10, (x, y) => (k * 120 + 10 * (i % 6) + 7 * x + 3 * y) % 256)]);
  }
  const archive = join(tmp, 'shapes.tar.gz');
  writeFileSync(archive, tarGz(files));
  await page.goto(`${base}/#/datasets`);
  await page.locator('#datasets-table').waitFor();
  assert.equal(await page.locator('#datasets-table tbody tr').count(), 2, 'the two built-in sets');
  await page.locator('#ds-file').setInputFiles(archive);
  await page.getByRole('button', { name: 'Register' }).click();
  await until('the upload to be accepted', async () => /registering/.test(await page.locator('#ds-status').textContent()), 30000);
  const progress = page.locator('#datasets-table tr[data-state="registering"] .ds-progress');
  await until('the registration\'s progress in the list', async () => (await progress.count()) === 1 &&
    /waiting to start|decoding images: \d+|writing the cache: \d of 1|drawing samples: \d of 1/.test(await progress.textContent()), 30000);
  const row = page.locator('#datasets-table tr[data-id]').filter({ hasText: 'shapes.tar.gz' });
  await until('the dataset to be ready', async () => (await row.count()) === 1 && (await row.getAttribute('data-state')) === 'ready', 60000);
  assert.match(await row.textContent(), /1×10×10/);
  await shot('13-datasets');
  await row.getByRole('link', { name: 'shapes.tar.gz' }).click();
  await page.locator('#ds-histogram').waitFor();
  assert.equal(await page.locator('#ds-histogram tbody tr').count(), 2, 'one histogram row per class');
  assert.match(await page.locator('#ds-histogram').textContent(), /circle.*square/s);
  await until('samples.png to load', async () => page.locator('#ds-samples').evaluate((img) => img.complete && img.naturalWidth > 0), 15000);
  assert.doesNotMatch(await page.locator('#dataset-body').textContent(), /null|undefined/);
  await shot('14-dataset');
  // the submit form offers it
  await page.getByRole('link', { name: 'Train on it' }).click();
  const id = Number(page.url().match(/dataset=(\d+)/)[1]);
  await until('the dataset in the picker', async () => (await page.locator('#f-dataset-name').inputValue()) === `ds:${id}`);
  assert.match(await page.locator('#spec-preview').textContent(), new RegExp(`"id": ${id}`));
});

test('a failed job shows its error in the table and on its page', async () => {
  // a loss that diverges: accepted at the door, fails in the worker
  const spec = { name: 'e2e-diverges', model: { arch: 'mlp' }, dataset: { train_limit: 2000, test_limit: 200 },
    train: { epochs: 1, lr: 10, weight_decay: 1 } };
  const r = await fetch(`${base}/api/v1/jobs`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(spec) });
  assert.equal(r.status, 201);
  const { id } = await r.json();
  await until('the job to fail', async () => (await (await fetch(`${base}/api/v1/jobs/${id}`)).json()).state === 'failed', 60000);
  await page.goto(`${base}/#/jobs`);
  const row = page.locator(`#jobs-table tr[data-id="${id}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute('data-state'), 'failed');
  assert.match(await row.locator('.job-error').textContent(), /^numeric_error: the loss became/);
  await row.getByRole('link', { name: 'e2e-diverges' }).click();
  await page.getByText(/^numeric_error: the loss became/).first().waitFor();
  await shot('15-job-failed');
});

test('an unreachable lsqd is reported', async () => {
  await page.goto(`${base}/#/jobs`);
  await page.locator('#jobs-table').waitFor();
  lsqd.proc.kill('SIGKILL');
  await until('the banner', async () => page.locator('#banner').isVisible(), 15000);
  assert.match(await page.locator('#banner').textContent(), /Cannot reach lsqd/);
  await shot('12-unreachable');
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});
