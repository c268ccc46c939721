// Serves page.html and td-js-sdk over HTTPS, opens the page in headless Debian Chromium
// (driven by playwright-core; it never downloads a browser) and prints one JSON object:
// what the page reported, its console, and every request that failed.
//
//   node run.mjs --cert C --key K --records-host 127.0.0.1:P --pixel-url URL \
//                --write-key KEY --database DB [--chromium /usr/bin/chromium] \
//                [--client-id ID] [--p13n-endpoint HOST:PORT --p13n-token T --p13n-table TABLE] \
//                [--cdp-host HOST:PORT --lookup-tokens T1,T2] \
//                [--ssc-server HOST:PORT --ssc-domain DOMAIN]
//
// With the p13n options the page also calls fetchPersonalization, with the CDP ones
// fetchUserSegments, with the ssc ones fetchServerCookie. Once the page is done, a link
// is clicked under trackClicks; the click's request is reported as `click`.
// tests/e2e/test_browser.py runs it against a real tdedge and then checks the rows.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    cert: { type: 'string' },
    key: { type: 'string' },
    'records-host': { type: 'string' },
    'pixel-url': { type: 'string' },
    'write-key': { type: 'string' },
    database: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    'client-id': { type: 'string' },
    'p13n-endpoint': { type: 'string' },
    'p13n-token': { type: 'string' },
    'p13n-table': { type: 'string' },
    'cdp-host': { type: 'string' },
    'lookup-tokens': { type: 'string' },
    'ssc-server': { type: 'string' },
    'ssc-domain': { type: 'string' },
    timeout: { type: 'string', default: '60000' },
  },
});
for (const name of ['cert', 'key', 'records-host', 'pixel-url', 'write-key', 'database']) {
  if (!opt[name]) throw new Error(`--${name} is required`);
}

const config = {
  recordsHost: opt['records-host'],
  writeKey: opt['write-key'],
  database: opt.database,
  pixelUrl: opt['pixel-url'],
  clientId: opt['client-id'] ?? null,
  p13n: opt['p13n-endpoint']
    ? { endpoint: opt['p13n-endpoint'], token: opt['p13n-token'], table: opt['p13n-table'] }
    : null,
  cdp: opt['cdp-host']
    ? { host: opt['cdp-host'], tokens: (opt['lookup-tokens'] ?? '').split(',').filter(Boolean) }
    : null,
  ssc: opt['ssc-server'] ? { server: opt['ssc-server'], domain: opt['ssc-domain'] } : null,
};
const page = readFileSync(join(here, 'page.html'), 'utf8').replace(
  '/*CONFIG*/ null',
  JSON.stringify(config),
);
const sdk = readFileSync(join(here, 'node_modules', 'td-js-sdk', 'dist', 'td.min.js'));

const server = createServer(
  { cert: readFileSync(opt.cert), key: readFileSync(opt.key) },
  (req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page);
    } else if (req.url === '/td.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(sdk);
    } else {
      res.writeHead(404).end();
    }
  },
);
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `https://127.0.0.1:${server.address().port}/`;

// A fresh profile each run: no cookie or cache from an earlier run.
const profile = mkdtempSync(join(tmpdir(), 'tdedge-chromium-'));
const report = { pageUrl, console: [], failedRequests: [], requests: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    ignoreHTTPSErrors: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--ignore-certificate-errors',
    ],
  });
  const tab = context.pages()[0] ?? (await context.newPage());
  tab.on('console', (m) => report.console.push(`${m.type()}: ${m.text()}`));
  tab.on('pageerror', (e) => report.console.push(`pageerror: ${e.message}`));
  tab.on('requestfailed', (r) =>
    report.failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
  );
  tab.on('requestfinished', async (r) => {
    const response = await r.response();
    report.requests.push({
      method: r.method(),
      url: r.url(),
      status: response ? response.status() : null,
      requestHeaders: await r.allHeaders(),
    });
  });
  await tab.goto(pageUrl);
  await tab.waitForFunction(() => window.__done === true, null, {
    timeout: Number(opt.timeout),
  });
  report.results = await tab.evaluate(() => window.__results);
  report.userAgent = await tab.evaluate(() => navigator.userAgent);
  report.cookies = (await context.cookies()).map((c) => ({
    name: c.name,
    value: c.value,
    domain: c.domain,
    secure: c.secure,
    httpOnly: c.httpOnly,
    sameSite: c.sameSite,
  }));
  // A link click, as a user makes it: the SDK sends it as a keepalive fetch with
  // credentials. The link stays on the page, so that the browser still reports the
  // request's answer (after a navigation it would not, though the request completes).
  const clickPath = `/${opt.database}/clicks?`;
  const clickDone = new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ error: 'timed out' }), Number(opt.timeout));
    context.on('requestfinished', async (r) => {
      if (!r.url().includes(clickPath)) return;
      clearTimeout(timer);
      const response = await r.response();
      resolve({
        status: response ? response.status() : null,
        requestHeaders: await r.allHeaders(),
      });
    });
    context.on('requestfailed', (r) => {
      if (!r.url().includes(clickPath)) return;
      clearTimeout(timer);
      resolve({ error: r.failure()?.errorText ?? 'failed' });
    });
  });
  await tab.click('#promo');
  report.click = await clickDone;
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(report.error ? 1 : 0);
