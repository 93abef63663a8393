'use strict';
// The web dashboard at `/`, driven in Debian's headless Chromium by Playwright (playwright-core,
// no browser download): log in, see the queue table, publish with amqplib and watch the numbers
// change, sort (mouse and keyboard) and search the table, open a queue's details, close a
// connection from the page, and take a screenshot.
//
// Chromium comes from apt (`chromium`). Without it the test skips, saying so, except in CI
// (CI=true), where it fails: the browser test must run there.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('../harness');

const CHROMIUM = process.env.TRIBUTARY_CHROMIUM || '/usr/bin/chromium';
const IN_CI = process.env.CI === 'true';
const HAVE_CHROMIUM = fs.existsSync(CHROMIUM);
const WAIT_MS = 20000; // upper bound for one awaited change in the page

const ctx = { broker: null, context: null, page: null, tmp: null, conns: [] };

before(async () => {
  if (!HAVE_CHROMIUM) {
    if (IN_CI) throw new Error(`${CHROMIUM} is missing: CI must install Debian's chromium package (apt-get install -y chromium)`);
    return;
  }
  if (h.isExternal) return;
  const { chromium } = require('playwright-core');
  ctx.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-dashboard-'));
  ctx.broker = await h.startBroker();
  ctx.context = await chromium.launchPersistentContext(path.join(ctx.tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
  });
  ctx.page = ctx.context.pages()[0] || (await ctx.context.newPage());
  ctx.page.setDefaultTimeout(WAIT_MS);
  ctx.pageErrors = [];
  ctx.page.on('pageerror', (e) => ctx.pageErrors.push(e));
  // Console errors other than the refused login's 401 (CSP violations would show here).
  ctx.page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 401/.test(m.text())) ctx.pageErrors.push(m.text());
  });
});

after(async () => {
  for (const c of ctx.conns) await c.close().catch(() => {});
  if (ctx.context) await ctx.context.close().catch(() => {});
  if (ctx.broker) await ctx.broker.stop();
  if (ctx.tmp) fs.rmSync(ctx.tmp, { recursive: true, force: true });
});

function skipReason() {
  if (!HAVE_CHROMIUM && IN_CI) return false; // no skipping in CI: `before` fails, and the tests with it
  if (!HAVE_CHROMIUM) return `${CHROMIUM} is not installed (apt-get install -y chromium); the browser test skips outside CI`;
  if (h.isExternal) return 'the dashboard is Tributary\'s own (TRIBUTARY_TEST_TARGET points elsewhere)';
  return false;
}

/** The text of a queue row's cell, read in the page. */
function cellText(page, queue, col) {
  return page.$eval(
    `#queue-table tr[data-queue="${queue}"] td[data-col="${col}"]`,
    (td) => td.textContent,
  );
}

/** The queue names in the table's order, restricted to ours. */
function order(page, names) {
  return page.$$eval(
    '#queue-table tbody tr[data-queue]',
    (rows, names) => rows.map((r) => r.dataset.queue).filter((n) => names.includes(n)),
    names,
  );
}

test('the dashboard shows live numbers, sorts, searches, opens a queue and closes a connection', { skip: skipReason() }, async () => {
  const { broker, page } = ctx;
  const prefix = h.uniqueName('dash');
  const [qa, qb, qc] = ['a', 'b', 'c'].map((s) => `${prefix}-${s}`);

  const conn = await broker.connect();
  ctx.conns.push(conn);
  const ch = await h.openChannel(conn, { confirm: true });
  for (const q of [qa, qb, qc]) await ch.assertQueue(q, { durable: false });
  await ch.bindQueue(qb, 'amq.topic', 'dash.#');
  // Depths before the page opens: c has 2, b has 1, a has none yet.
  for (let i = 0; i < 2; i++) await h.publishConfirmed(ch, '', qc, `c${i}`);
  await h.publishConfirmed(ch, '', qb, 'b0');

  // The page itself needs no credentials; the API calls do.
  const response = await page.goto(`http://127.0.0.1:${broker.httpPort}/`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-type'], /^text\/html/);
  assert.match(response.headers()['content-security-policy'], /default-src 'none'/);

  // A wrong password is refused on the form, without a browser dialog.
  await page.getByLabel('User name').fill('guest');
  await page.getByLabel('Password').fill('wrong');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForFunction(() => /Login failed/.test(document.getElementById('login-error').textContent));

  await page.getByLabel('Password').fill('guest');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForSelector(`#queue-table tr[data-queue="${qa}"]`);
  assert.equal(await cellText(page, qa, 'messages'), '0');
  assert.equal(await cellText(page, qc, 'messages'), '2');

  // Publish into a: the next refreshes show the new depth and a publish rate for AMQP.
  for (let i = 0; i < 5; i++) ch.sendToQueue(qa, Buffer.from(`a${i}`));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'publisher confirms');
  await page.waitForFunction(
    (q) => document.querySelector(`#queue-table tr[data-queue="${q}"] td[data-col="messages"]`)?.textContent === '5',
    qa,
  );
  await page.waitForFunction(() => {
    const dd = document.querySelector('.card[data-protocol="amqp"] dd[data-field="publish_rate"]');
    return dd && Number(dd.textContent) > 0;
  });
  const connections = await page.$eval('.card[data-protocol="amqp"] dd[data-field="connections"]', (d) => d.textContent);
  assert.equal(connections, '1');

  // Sort by messages: a click sorts ascending, Enter on the focused header button descending.
  const ours = [qa, qb, qc];
  const messagesHeader = page.locator('#queue-table th[data-key="messages"] button');
  await messagesHeader.click();
  assert.equal(await page.getAttribute('#queue-table th[data-key="messages"]', 'aria-sort'), 'ascending');
  assert.deepEqual(await order(page, ours), [qb, qc, qa]);
  await messagesHeader.focus();
  await page.keyboard.press('Enter');
  assert.equal(await page.getAttribute('#queue-table th[data-key="messages"]', 'aria-sort'), 'descending');
  assert.deepEqual(await order(page, ours), [qa, qc, qb]);

  // Search by name: only b is left.
  await page.getByLabel('Search queues by name').fill(`${prefix}-b`);
  await page.waitForFunction(() => document.querySelectorAll('#queue-table tbody tr[data-queue]').length === 1);
  assert.deepEqual(await order(page, ours), [qb]);

  // A consumer on b, then b's details: its bindings and its consumer.
  const consumer = await ch.consume(qb, () => {}, { noAck: false, consumerTag: `${prefix}-tag` });
  await page.getByRole('link', { name: qb, exact: true }).click();
  await page.waitForSelector('#queue-view:not([hidden])');
  assert.equal(await page.textContent('#queue-h'), `Queue ${qb}`);
  await page.waitForFunction(
    (tag) => document.querySelector('#queue-consumers tbody')?.textContent.includes(tag),
    consumer.consumerTag,
  );
  const bindings = await page.textContent('#queue-bindings tbody');
  assert.match(bindings, /amq\.topic/);
  assert.match(bindings, /dash\.#/);
  assert.match(bindings, /\(default exchange\)/);
  await page.waitForFunction(
    () => document.querySelector('#queue-counters tr[data-counter="deliver_get"] td')?.textContent === '1',
  );

  const shot = path.join(ctx.tmp, 'queue.png');
  await page.screenshot({ path: shot, fullPage: true });

  // Back to the list; close our AMQP connection with the two-step button.
  await page.getByRole('link', { name: '← All queues' }).click();
  await page.waitForSelector('#main-view:not([hidden])');
  const closed = new Promise((resolve) => conn.once('close', resolve));
  const closeButton = page.getByRole('button', { name: /^Close connection / });
  await closeButton.click();
  await page.getByRole('button', { name: /^Confirm closing connection / }).click();
  const err = await h.withTimeout(closed, h.EVENT_TIMEOUT_MS, 'the connection closed from the dashboard');
  assert.match(String(err && err.message), /320|CONNECTION_FORCED/);
  await page.waitForFunction(() => /No connections/.test(document.querySelector('#connection-table tbody').textContent));

  const png = fs.readFileSync(shot);
  assert.ok(png.length > 1000, `screenshot is ${png.length} bytes`);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.deepEqual(ctx.pageErrors, []);
});

test('the dashboard assets carry content types and revalidate with ETags', { skip: skipReason() }, async () => {
  const base = `http://127.0.0.1:${ctx.broker.httpPort}`;
  for (const [p, type] of [
    ['/', 'text/html'],
    ['/dashboard/app.js', 'text/javascript'],
    ['/dashboard/style.css', 'text/css'],
  ]) {
    const r = await fetch(base + p);
    assert.equal(r.status, 200, p);
    assert.ok(r.headers.get('content-type').startsWith(type), `${p}: ${r.headers.get('content-type')}`);
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    const etag = r.headers.get('etag');
    assert.ok(etag, `${p} has an ETag`);
    const again = await fetch(base + p, { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304, p);
  }
});
