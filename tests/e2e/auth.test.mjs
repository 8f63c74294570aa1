// The dashboard against an lsqd that checks tokens (--auth on): it asks for
// a token once on the first 401, keeps it in the tab's sessionStorage, and
// with it lists, follows a job's event stream (?access_token=), downloads an
// artifact; a wrong token is asked again. A real lsqd, tokens from
// `lsqd token create`, Debian's chromium through playwright-core.
//   LSQD_BIN=build/lsqd node --test tests/e2e/auth.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const LSQD = process.env.LSQD_BIN || join(ROOT, 'build/lsqd');
const OUT = process.env.E2E_OUT || join(ROOT, 'build/e2e');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SPEC = { model: { arch: 'mlp' }, dataset: { train_limit: 2000, test_limit: 500 }, pretrain: { epochs: 1 }, train: { epochs: 1 }, quant: { weight_bits: 4 } };

let lsqd, base, tmp, browser, page, token;
const dialogs = [];
const pageErrors = [];

function startLsqd(data) {
  return new Promise((ok, fail) => {
    const env = { ...process.env, LSQD_WEB: join(ROOT, 'web') };
    const p = spawn(LSQD, ['--listen', '127.0.0.1:0', '--data', data, '--auth', 'on', '--workers', '1'],
      { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let buf = '', done = false;
    const timer = setTimeout(() => { if (!done) { done = true; p.kill('SIGKILL'); fail(new Error(`no port: ${buf.slice(-2000)}`)); } }, 10000);
    p.stderr.on('data', (d) => {
      buf += d;
      if (done) return;
      for (const line of buf.split('\n')) {
        if (!line.includes('"msg":"listening"')) continue;
        try {
          const port = JSON.parse(line).port;
          done = true;
          clearTimeout(timer);
          ok({ proc: p, base: `http://127.0.0.1:${port}` });
          return;
        } catch { /* partial line */ }
      }
    });
    p.on('exit', (code) => { if (!done) { done = true; clearTimeout(timer); fail(new Error(`lsqd exited ${code}: ${buf}`)); } });
  });
}

async function until(what, fn, ms = 60000) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

before(async () => {
  mkdirSync(OUT, { recursive: true });
  tmp = mkdtempSync(join(tmpdir(), 'lsqd-e2e-auth-'));
  const data = join(tmp, 'data');
  mkdirSync(data);
  token = execFileSync(LSQD, ['token', 'create', '--user', 'alice', '--data', data], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  assert.match(token, /^lsqd_[0-9a-f]{64}$/);
  lsqd = await startLsqd(data);
  base = lsqd.base;
  browser = await chromium.launchPersistentContext(join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  page = browser.pages()[0] || await browser.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // the first question gets a wrong token, the next ones the right one
  page.on('dialog', (d) => { dialogs.push(d.message()); d.accept(dialogs.length === 1 ? 'lsqd_wrong' : token); });
});

after(async () => {
  if (browser) await browser.close();
  if (lsqd && lsqd.proc.exitCode === null) lsqd.proc.kill('SIGKILL');
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('the dashboard asks for a token on 401 and keeps it for the tab', async () => {
  await page.goto(`${base}/`);
  await page.getByText('No jobs yet.').waitFor({ timeout: 30000 });
  // wrong first, so asked twice; the second message is lsqd's own
  assert.equal(dialogs.length, 2, dialogs.join(' | '));
  assert.match(dialogs[1], /not valid/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('lsqd.token')), token);
  await page.screenshot({ path: join(OUT, 'auth-01-jobs.png'), fullPage: true });
});

test('a job is followed live and its model downloads, with no more questions', async () => {
  const res = await fetch(`${base}/api/v1/jobs`, {
    method: 'POST', body: JSON.stringify(SPEC),
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 201);
  const job = await res.json();
  assert.equal(job.owner, 'alice');
  await page.goto(`${base}/#/jobs/${job.id}`);
  await until('the event stream', async () => /live|complete/.test(await page.locator('#stream-state').textContent()));
  await until('the stream to complete', async () => (await page.locator('#stream-state').textContent()).includes('complete'), 240000);
  const link = page.getByRole('link', { name: 'Download model.lsqm' });
  await link.waitFor({ timeout: 30000 });
  const [dl] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const path = join(tmp, 'model.lsqm');
  await dl.saveAs(path);
  const direct = await fetch(`${base}/api/v1/jobs/${job.id}/artifacts/model.lsqm`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(Buffer.compare(Buffer.from(await direct.arrayBuffer()), readFileSync(path)), 0, 'the download is the artifact');
  assert.equal(dialogs.length, 2, 'no question after the token was given');
  assert.deepEqual(pageErrors, []);
  await page.screenshot({ path: join(OUT, 'auth-02-job.png'), fullPage: true });
});
