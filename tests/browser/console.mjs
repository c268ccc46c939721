// Opens tdedge's live console (GET /console on the REST API's port) in headless Debian
// Chromium, signs in with a master key, waits until the expected row and import error
// are on the page, and prints one JSON object: what the page shows, its console, and
// the requests that failed. Optionally saves a screenshot.
//
//   node console.mjs --url http://127.0.0.1:P/console --key MASTER \
//        --expect-row TEXT --expect-error TEXT [--expect-decision TEXT]
//        [--screenshot FILE] [--chromium PATH]
//
// With --expect-decision, it also waits for a p13n decision showing TEXT, presses its
// Why button and waits for the explain trace.
//
// tests/e2e/test_console.py runs it against a real tdedge.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    key: { type: 'string' },
    'expect-row': { type: 'string' },
    'expect-error': { type: 'string' },
    'expect-decision': { type: 'string' },
    screenshot: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    timeout: { type: 'string', default: '60000' },
  },
});
for (const name of ['url', 'key', 'expect-row', 'expect-error']) {
  if (!opt[name]) throw new Error(`--${name} is required`);
}

const profile = mkdtempSync(join(tmpdir(), 'tdedge-console-'));
const report = { console: [], failedRequests: [], requests: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const tab = context.pages()[0] ?? (await context.newPage());
  tab.on('console', (m) => report.console.push(`${m.type()}: ${m.text()}`));
  tab.on('pageerror', (e) => report.console.push(`pageerror: ${e.message}`));
  tab.on('requestfailed', (r) =>
    report.failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
  );
  tab.on('requestfinished', async (r) => {
    const response = await r.response();
    report.requests.push({ url: r.url(), status: response ? response.status() : null });
  });
  await tab.goto(opt.url);
  report.loginShown = await tab.isVisible('#login');
  await tab.fill('#key', opt.key);
  await tab.click('#login-form button[type=submit]');
  const timeout = Number(opt.timeout);
  await tab.waitForFunction(
    ([row, error]) =>
      document.getElementById('events').textContent.includes(row) &&
      document.getElementById('errors').textContent.includes(error),
    [opt['expect-row'], opt['expect-error']],
    { timeout },
  );
  if (opt['expect-decision']) {
    await tab.waitForFunction(
      (text) => document.getElementById('decisions').textContent.includes(text),
      opt['expect-decision'],
      { timeout },
    );
    await tab.click('#decisions tr button');
    await tab.waitForFunction(
      () => document.getElementById('why').textContent.includes('section '),
      null,
      { timeout },
    );
    report.decisions = await tab.$$eval('#decisions tr', (rows) =>
      rows.map((r) => [...r.children].map((c) => c.textContent)),
    );
    report.why = await tab.textContent('#why');
  }
  // Two status polls, so that the tables show a rate.
  await tab.waitForTimeout(4500);
  report.header = await tab.textContent('header');
  report.tables = await tab.$$eval('#tables tr', (rows) =>
    rows.map((r) => [...r.children].map((c) => c.textContent)),
  );
  report.events = await tab.$$eval('#events tr', (rows) =>
    rows.map((r) => [...r.children].map((c) => c.textContent)),
  );
  report.errors = await tab.$$eval('#errors tr', (rows) =>
    rows.map((r) => [...r.children].map((c) => c.textContent)),
  );
  // A record's markup is shown as text, never run.
  report.injected = await tab.evaluate(() => window.__injected === true);
  report.keyInStorage = await tab.evaluate(() => sessionStorage.getItem('tdedge-console-key'));
  if (opt.screenshot) await tab.screenshot({ path: opt.screenshot, fullPage: true });
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(report.error ? 1 : 0);
