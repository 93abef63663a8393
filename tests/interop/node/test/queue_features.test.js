'use strict';
// RabbitMQ queue features (issue 6) with amqplib, the second client next to pika:
// TTL and x-expires, dead-lettering and x-death, length limits and overflow, priorities,
// single active consumer, consumer priorities, delivery limit, alternate exchanges,
// exchange-to-exchange cycles, transactions, memory flow control.
//
// Time-dependent behaviour is awaited by bounded polling of broker state (checkQueue counts,
// whether a mandatory publish is still routed) or a "broker clock" (a throwaway queue whose own
// TTL/expiry must fire first); short pauses only show that something does NOT happen.
// Validated against RabbitMQ 3.10.8 (TRIBUTARY_TEST_TARGET=rabbitmq:HOST:PORT).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const crypto = require('node:crypto');
const path = require('node:path');
// amqplib's method table (for tx.*, which amqplib has no API for); not in the package's exports map.
const defs = require(path.join(path.dirname(require.resolve('amqplib')), 'lib', 'defs.js'));
const h = require('../harness');

const ctx = h.setup(test);
const WAIT_MS = 10000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Names unique to the test; deleted afterwards (as queue and exchange) on an external broker. */
function names(t) {
  const made = [];
  t.after(async () => {
    if (!h.isExternal || made.length === 0) return;
    const conn = await ctx.broker.connect();
    try {
      for (const n of made) {
        for (const op of ['deleteQueue', 'deleteExchange']) {
          const ch = await h.openChannel(conn);
          await ch[op](n).catch(() => {});
          await ch.close().catch(() => {});
        }
      }
    } finally {
      await conn.close().catch(() => {});
    }
  });
  return (prefix) => {
    const n = h.uniqueName(`qf-${prefix}`);
    made.push(n);
    return n;
  };
}

async function count(conn, q) {
  const ch = await h.openChannel(conn);
  try {
    return (await ch.checkQueue(q)).messageCount;
  } finally {
    await ch.close().catch(() => {});
  }
}

async function waitCount(conn, q, n, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await count(conn, q);
    if (last === n) return;
    if (Date.now() > deadline) throw new Error(`${q} has ${last} messages after ${ms} ms, expected ${n}`);
    await sleep(20);
  }
}

/** basic.get until a message comes (bounded). */
async function getOne(ch, q, opts = { noAck: false }, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = await h.withTimeout(ch.get(q, opts), WAIT_MS, 'basic.get');
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no message in ${q} within ${ms} ms`);
    await sleep(20);
  }
}

async function bodies(ch, q, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push((await getOne(ch, q, { noAck: true })).content.toString());
  return out;
}

async function assertEmpty(ch, q) {
  const m = await ch.get(q, { noAck: true });
  assert.equal(m, false, `expected ${q} to deliver nothing, got ${m && m.content}`);
}

/** Publish on a confirm channel; resolves to null (ack) or the error (nack). */
function publishC(ch, exchange, key, body, options = {}) {
  return h.withTimeout(
    new Promise((resolve) => ch.publish(exchange, key, Buffer.from(body), options, (err) => resolve(err || null))),
    WAIT_MS,
    'a publisher confirm',
  );
}

async function publishOk(ch, exchange, key, body, options = {}) {
  const err = await publishC(ch, exchange, key, body, options);
  assert.equal(err, null, `publish of ${body} was nacked`);
}

/** Mandatory publish to the default exchange: is `q` still there? (does not renew x-expires) */
async function routesTo(ch, q) {
  let returned = false;
  const onReturn = (m) => {
    if (m.fields.routingKey === q) returned = true;
  };
  ch.on('return', onReturn);
  try {
    await publishOk(ch, '', q, 'probe', { mandatory: true }); // basic.return comes before the ack
  } finally {
    ch.removeListener('return', onReturn);
  }
  return !returned;
}

async function waitGone(ch, q, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (await routesTo(ch, q)) {
    if (Date.now() > deadline) throw new Error(`queue ${q} still exists after ${ms} ms`);
    await sleep(20);
  }
}

/** Returns once at least `ms` have passed on the broker: a TTL'd message has expired. */
async function ttlClock(conn, ms) {
  const ch = await h.openChannel(conn, { confirm: true });
  const { queue } = await ch.assertQueue('', { exclusive: true, arguments: { 'x-message-ttl': ms } });
  await publishOk(ch, '', queue, 'tick');
  await waitCount(conn, queue, 0, WAIT_MS + ms);
  await ch.close();
}

function xDeath(msg) {
  const hd = msg.properties.headers || {};
  assert.ok(Array.isArray(hd['x-death']) && hd['x-death'].length > 0, `no x-death in ${JSON.stringify(hd)}`);
  return hd['x-death'];
}

function assertDeath(d, { reason, queue, exchange, keys, count: n = 1, since }) {
  assert.equal(d.reason, reason);
  assert.equal(d.queue, queue);
  assert.equal(d.exchange, exchange);
  assert.deepEqual(d['routing-keys'], keys);
  assert.equal(d.count, n);
  // amqplib decodes an AMQP timestamp as {'!': 'timestamp', value: seconds}.
  assert.equal(d.time && d.time['!'], 'timestamp', `x-death time is not a timestamp: ${JSON.stringify(d.time)}`);
  if (since !== undefined) {
    assert.ok(d.time.value >= Math.floor(since / 1000) - 2 && d.time.value <= Date.now() / 1000 + 2, JSON.stringify(d.time));
  }
}

function assertFirstDeath(msg, { reason, queue, exchange }) {
  const hd = msg.properties.headers;
  assert.equal(hd['x-first-death-reason'], reason);
  assert.equal(hd['x-first-death-queue'], queue);
  assert.equal(hd['x-first-death-exchange'], exchange);
}

// ------------------------------------------------------------------------------ TTL

test('queue TTL removes messages nobody consumes; per-message expiration; the lower TTL wins', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const q = name('ttl');
  await ch.assertQueue(q, { arguments: { 'x-message-ttl': 150 } });
  for (const b of ['a', 'b']) await publishOk(ch, '', q, b);
  assert.equal(await count(conn, q), 2);
  await waitCount(conn, q, 0);
  await assertEmpty(ch, q);

  // Queue TTL long, message expiration short: the message expires.
  const long = name('long');
  await ch.assertQueue(long, { arguments: { 'x-message-ttl': 60000 } });
  await publishOk(ch, '', long, 'short', { expiration: '150' });
  await publishOk(ch, '', long, 'stays'); // enqueued behind it, queue TTL 60 s
  await ttlClock(conn, 150);
  assert.deepEqual(await bodies(ch, long, 1), ['stays'], 'the expired head is skipped, never delivered');
  await assertEmpty(ch, long);

  // Queue TTL short, message expiration long: the queue's TTL wins.
  const short = name('short');
  await ch.assertQueue(short, { arguments: { 'x-message-ttl': 150 } });
  await publishOk(ch, '', short, 'long-exp', { expiration: '60000' });
  await waitCount(conn, short, 0);
});

test('x-message-ttl 0: dropped unless a consumer takes it at once', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const q = name('ttl0');
  await ch.assertQueue(q, { arguments: { 'x-message-ttl': 0 } });
  await publishOk(ch, '', q, 'nobody');
  await waitCount(conn, q, 0);
  const inbox = new h.Inbox();
  await ch.consume(q, inbox.push, { noAck: true });
  await publishOk(ch, '', q, 'taken');
  assert.equal((await inbox.next('the TTL 0 message')).content.toString(), 'taken');
});

test('x-expires deletes an unused queue but not one with a consumer', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const unused = name('unused');
  const used = name('used');
  await ch.assertQueue(unused, { arguments: { 'x-expires': 300 } });
  await ch.assertQueue(used, { arguments: { 'x-expires': 300 } });
  const inbox = new h.Inbox();
  const { consumerTag } = await ch.consume(used, inbox.push, { noAck: true });
  await waitGone(ch, unused);
  const probe = await h.openChannel(conn);
  await h.expectAmqpError(probe.checkQueue(unused), 404);
  await ttlClock(conn, 600); // two more expiry periods
  assert.ok(await routesTo(ch, used), 'a queue with a consumer must not expire');
  assert.equal((await inbox.next('the probe message')).content.toString(), 'probe');
  await ch.cancel(consumerTag);
  await waitGone(ch, used);
});

// -------------------------------------------------------------------- dead-lettering

test('nack and reject without requeue dead-letter with x-death and x-first-death-*', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const ex = name('ex');
  const dlx = name('dlx');
  await ch.assertExchange(ex, 'topic', { durable: false });
  await ch.assertExchange(dlx, 'fanout', { durable: false });
  const src = name('src');
  const dead = name('dead');
  await ch.assertQueue(src, { arguments: { 'x-dead-letter-exchange': dlx, 'x-dead-letter-routing-key': 'dl.key' } });
  await ch.assertQueue(dead);
  await ch.bindQueue(src, ex, 'orders.*');
  await ch.bindQueue(dead, dlx, '');
  const t0 = Date.now();
  for (const b of ['r', 'n', 'keep']) await publishOk(ch, ex, 'orders.new', b, { headers: { trace: b } });
  const inbox = new h.Inbox();
  await ch.consume(src, inbox.push);
  const [r, n, keep] = await inbox.take(3);
  ch.reject(r, false);
  ch.nack(n, false, false);
  ch.nack(keep, false, true); // requeued, not dead-lettered
  const again = await inbox.next('the requeued message');
  assert.equal(again.content.toString(), 'keep');
  assert.equal(again.fields.redelivered, true);
  ch.ack(again);
  await waitCount(conn, dead, 2);
  for (const b of ['r', 'n']) {
    const m = await getOne(ch, dead, { noAck: true });
    assert.equal(m.content.toString(), b);
    assert.equal(m.fields.routingKey, 'dl.key');
    assert.equal(m.properties.headers.trace, b);
    const [d] = xDeath(m);
    assertDeath(d, { reason: 'rejected', queue: src, exchange: ex, keys: ['orders.new'], since: t0 });
    assertFirstDeath(m, { reason: 'rejected', queue: src, exchange: ex });
  }
});

test('expired and maxlen dead-lettering; original-expiration replaces expiration', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const dead = name('dead');
  await ch.assertQueue(dead);
  const dl = { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dead };
  const ttl = name('ttl');
  await ch.assertQueue(ttl, { arguments: { ...dl } });
  const t0 = Date.now();
  await publishOk(ch, '', ttl, 'per-message', { expiration: '100' });
  const m = await getOne(ch, dead, { noAck: true });
  assert.equal(m.content.toString(), 'per-message');
  const [d] = xDeath(m);
  assertDeath(d, { reason: 'expired', queue: ttl, exchange: '', keys: [ttl], since: t0 });
  assert.equal(d['original-expiration'], '100');
  assert.equal(m.properties.expiration, undefined);

  const capped = name('capped');
  await ch.assertQueue(capped, { arguments: { ...dl, 'x-max-length': 1 } });
  for (const b of ['old', 'mid', 'new']) await publishOk(ch, '', capped, b);
  assert.deepEqual(await bodies(ch, capped, 1), ['new']);
  for (const b of ['old', 'mid']) {
    const x = await getOne(ch, dead, { noAck: true });
    assert.equal(x.content.toString(), b);
    assertDeath(xDeath(x)[0], { reason: 'maxlen', queue: capped, exchange: '', keys: [capped], since: t0 });
  }
});

test('a retry chain increments x-death count; an expiry-only cycle is dropped', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const work = name('work');
  const retry = name('retry');
  await ch.assertQueue(work, { arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': retry } });
  await ch.assertQueue(retry, {
    arguments: { 'x-message-ttl': 50, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': work },
  });
  await publishOk(ch, '', work, 'job');
  for (let n = 0; n < 3; n++) {
    const m = await getOne(ch, work);
    const deaths = (m.properties.headers || {})['x-death'];
    if (n === 0) assert.equal(deaths, undefined);
    else {
      assert.deepEqual(
        deaths.map((d) => [d.queue, d.reason, d.count]),
        [
          [retry, 'expired', n],
          [work, 'rejected', n],
        ],
      );
    }
    if (n < 2) ch.reject(m, false);
    else ch.ack(m);
  }

  // q expires into itself: dropped on the first death, no loop.
  const self = name('self');
  const fan = name('fan');
  const observer = name('observer');
  await ch.assertExchange(fan, 'fanout', { durable: false });
  await ch.assertQueue(self, { arguments: { 'x-message-ttl': 100, 'x-dead-letter-exchange': fan } });
  await ch.assertQueue(observer);
  await ch.bindQueue(self, fan, '');
  await ch.bindQueue(observer, fan, '');
  await publishOk(ch, '', self, 'loop?');
  await waitCount(conn, observer, 1);
  await waitCount(conn, self, 0);
  await ttlClock(conn, 500);
  assert.equal(await count(conn, self), 0);
  assert.equal(await count(conn, observer), 1);
});

// --------------------------------------------------------------------- length limits

test('x-max-length-bytes drops from the head; reject-publish nacks; reject-publish-dlx dead-letters', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const bytes = name('bytes');
  await ch.assertQueue(bytes, { arguments: { 'x-max-length-bytes': 6 } });
  for (const b of ['aaa', 'bbb', 'ccc']) await publishOk(ch, '', bytes, b);
  assert.deepEqual(await bodies(ch, bytes, 2), ['bbb', 'ccc']);

  const dead = name('dead');
  await ch.assertQueue(dead);
  const dl = { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dead };
  const rp = name('rp');
  await ch.assertQueue(rp, { arguments: { ...dl, 'x-max-length': 1, 'x-overflow': 'reject-publish' } });
  assert.equal(await publishC(ch, '', rp, 'first'), null);
  const nack = await publishC(ch, '', rp, 'second');
  assert.ok(nack instanceof Error, 'the publish beyond the limit must be nacked');
  assert.equal(await count(conn, rp), 1);
  assert.equal(await count(conn, dead), 0);
  assert.deepEqual(await bodies(ch, rp, 1), ['first']);

  const rpd = name('rpd');
  await ch.assertQueue(rpd, { arguments: { ...dl, 'x-max-length': 1, 'x-overflow': 'reject-publish-dlx' } });
  assert.equal(await publishC(ch, '', rpd, 'in'), null);
  assert.ok((await publishC(ch, '', rpd, 'out')) instanceof Error);
  const m = await getOne(ch, dead, { noAck: true });
  assert.equal(m.content.toString(), 'out');
  assertDeath(xDeath(m)[0], { reason: 'maxlen', queue: rpd, exchange: '', keys: [rpd] });
  assert.deepEqual(await bodies(ch, rpd, 1), ['in']);
});

// ------------------------------------------------------------------------ priorities

test('x-max-priority: higher first, FIFO within a priority, above max counts as max', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const q = name('prio');
  await ch.assertQueue(q, { arguments: { 'x-max-priority': 4 } });
  const sent = [
    ['a', undefined],
    ['b', 2],
    ['c', 4],
    ['d', 9],
    ['e', 2],
    ['f', 0],
    ['g', 4],
  ];
  for (const [b, p] of sent) await publishOk(ch, '', q, b, p === undefined ? {} : { priority: p });
  const inbox = new h.Inbox();
  await ch.prefetch(1);
  await ch.consume(q, (m) => {
    inbox.push(m);
    ch.ack(m);
  });
  const got = (await inbox.take(sent.length)).map((m) => m.content.toString());
  assert.deepEqual(got, ['c', 'd', 'g', 'b', 'e', 'a', 'f']);
  await h.expectAmqpError(
    (await h.openChannel(conn)).assertQueue(name('bad'), { arguments: { 'x-max-priority': 256 } }),
    406,
  );
});

// ------------------------------------------------------------------------- consumers

test('single active consumer: the second takes over when the first cancels, nothing lost or duplicated', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const q = name('sac');
  await pub.assertQueue(q, { arguments: { 'x-single-active-consumer': true } });
  const chA = await h.openChannel(await ctx.connect());
  const chB = await h.openChannel(await ctx.connect());
  const a = new h.Inbox();
  const b = new h.Inbox();
  const { consumerTag: tagA } = await chA.consume(q, a.push);
  await chB.consume(q, (m) => {
    b.push(m);
    chB.ack(m);
  });
  for (let i = 0; i < 6; i++) await publishOk(pub, '', q, `${i}`);
  const fromA = await a.take(6, 'deliveries to the active consumer');
  await sleep(200);
  assert.equal(b.length, 0, 'the waiting consumer must get nothing');
  for (const m of fromA.slice(0, 3)) chA.ack(m);
  await chA.cancel(tagA);
  for (let i = 6; i < 9; i++) await publishOk(pub, '', q, `${i}`);
  const fromB = await b.take(3, 'the new active consumer');
  assert.deepEqual(fromB.map((m) => m.content.toString()), ['6', '7', '8']);
  await chA.close(); // its 3 unacked go back, to B
  const requeued = await b.take(3, 'requeued messages');
  assert.deepEqual(requeued.map((m) => [m.content.toString(), m.fields.redelivered]).sort(), [
    ['3', true],
    ['4', true],
    ['5', true],
  ]);
  const all = [...fromA.slice(0, 3), ...fromB, ...requeued].map((m) => Number(m.content.toString()));
  assert.deepEqual(all.sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  await waitCount(conn, q, 0);
});

test('consumer priorities: the higher x-priority consumer gets messages while it has credit', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const q = name('cprio');
  await pub.assertQueue(q);
  const lowCh = await h.openChannel(conn);
  const highCh = await h.openChannel(conn);
  await lowCh.prefetch(1);
  await highCh.prefetch(1);
  const low = new h.Inbox();
  const high = new h.Inbox();
  let holdHigh = false;
  await lowCh.consume(q, (m) => {
    low.push(m);
    lowCh.ack(m);
  }, { arguments: { 'x-priority': 1 } });
  await highCh.consume(q, (m) => {
    high.push(m);
    if (!holdHigh) highCh.ack(m);
  }, { arguments: { 'x-priority': 10 } });
  for (let i = 0; i < 6; i++) {
    await publishOk(pub, '', q, `${i}`);
    const m = await high.next(`delivery ${i} to the high-priority consumer`);
    assert.equal(m.content.toString(), `${i}`);
    assert.equal(low.length, 0, `the low-priority consumer got ${low.items.map((x) => x.content)}`);
  }
  holdHigh = true;
  await publishOk(pub, '', q, 'held');
  assert.equal((await high.next('held')).content.toString(), 'held');
  await publishOk(pub, '', q, 'spill');
  assert.equal((await low.next('spill to the low-priority consumer')).content.toString(), 'spill');
});

test('x-delivery-limit: x-delivery-count on redeliveries, then dead-lettered', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const dead = name('dead');
  await ch.assertQueue(dead);
  const q = name('limit');
  const args = { 'x-delivery-limit': 1, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dead };
  // RabbitMQ honours x-delivery-limit on quorum queues only; Tributary on classic queues too.
  if (h.isExternal) args['x-queue-type'] = 'quorum';
  await ch.assertQueue(q, { durable: h.isExternal, arguments: args });
  await publishOk(ch, '', q, 'poison');
  const counts = [];
  for (let i = 0; i < 2; i++) {
    const m = await getOne(ch, q);
    counts.push(((m.properties.headers || {})['x-delivery-count']) || 0);
    ch.nack(m, false, true);
  }
  assert.deepEqual(counts, [0, 1]);
  const m = await getOne(ch, dead, { noAck: true });
  assert.equal(m.content.toString(), 'poison');
  assertDeath(xDeath(m)[0], { reason: 'delivery_limit', queue: q, exchange: '', keys: [q] });
  await waitCount(conn, q, 0);
});

// --------------------------------------------------------------------------- routing

test('alternate exchange: unroutable messages go there, a mandatory publish is not returned', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const ae = name('ae');
  const x = name('x');
  await ch.assertExchange(ae, 'fanout', { durable: false });
  await ch.assertExchange(x, 'topic', { durable: false, alternateExchange: ae });
  const caught = name('caught');
  await ch.assertQueue(caught);
  await ch.bindQueue(caught, ae, '');
  const returns = [];
  ch.on('return', (m) => returns.push(m));
  await publishOk(ch, x, 'no.binding', 'stray', { mandatory: true });
  const m = await getOne(ch, caught, { noAck: true });
  assert.equal(m.content.toString(), 'stray');
  assert.equal(m.fields.routingKey, 'no.binding');
  // An alternate exchange that does not exist: returned as unroutable.
  const y = name('y');
  await ch.assertExchange(y, 'direct', { durable: false, alternateExchange: name('missing') });
  await publishOk(ch, y, 'k', 'lost', { mandatory: true });
  assert.deepEqual(returns.map((r) => [r.content.toString(), r.fields.replyCode]), [['lost', 312]]);
});

test('exchange-to-exchange bindings with a cycle deliver once', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const [x1, x2, x3] = [name('x1'), name('x2'), name('x3')];
  for (const x of [x1, x2, x3]) await ch.assertExchange(x, 'fanout', { durable: false });
  await ch.bindExchange(x2, x1, '');
  await ch.bindExchange(x3, x2, '');
  await ch.bindExchange(x1, x3, ''); // x1 -> x2 -> x3 -> x1
  const q = name('q');
  await ch.assertQueue(q);
  for (const x of [x1, x2, x3]) await ch.bindQueue(q, x, '');
  await publishOk(ch, x2, '', 'once', { mandatory: true });
  assert.equal(await count(conn, q), 1);
  assert.deepEqual(await bodies(ch, q, 1), ['once']);
});

// ---------------------------------------------------------------------- transactions

async function tx(ch, method, ok) {
  await h.withTimeout(ch.rpc(method, {}, ok), WAIT_MS, 'tx method');
}

test('tx: rollback discards publishes and acks, commit delivers', async (t) => {
  const name = names(t);
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const q = name('tx');
  await pub.assertQueue(q);
  const tch = await h.openChannel(conn);
  await tx(tch, defs.TxSelect, defs.TxSelectOk);
  tch.sendToQueue(q, Buffer.from('rolled-back'));
  await tx(tch, defs.TxRollback, defs.TxRollbackOk);
  assert.equal(await count(conn, q), 0);
  tch.sendToQueue(q, Buffer.from('committed'));
  assert.equal(await count(conn, q), 0, 'not visible before commit');
  await tx(tch, defs.TxCommit, defs.TxCommitOk);
  assert.equal(await count(conn, q), 1);

  const m = await getOne(tch, q);
  assert.equal(m.content.toString(), 'committed');
  tch.ack(m);
  await tx(tch, defs.TxRollback, defs.TxRollbackOk);
  await tch.close(); // the rolled-back ack did not happen: the message returns
  const again = await getOne(pub, q);
  assert.equal(again.content.toString(), 'committed');
  assert.equal(again.fields.redelivered, true);
  pub.ack(again);
  await assertEmpty(pub, q);
});

// ---------------------------------------------------------------------- flow control

test('memory watermark: connection.blocked under a flood, RSS bounded, unblocked after drain', { skip: h.isExternal && 'configures Tributary [flow]', timeout: 180000 }, async () => {
  const WATERMARK = 64 * 1024 * 1024;
  const MARGIN = 100 * 1024 * 1024;
  const broker = await h.startBroker({ extraConfig: `[flow]\nmemory_high_watermark = ${WATERMARK}\n` });
  const rss = () => {
    const line = fs.readFileSync(`/proc/${broker.child.pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
    return Number(line.split(/\s+/)[1]) * 1024;
  };
  let pubConn;
  let consConn;
  try {
    pubConn = await broker.connect();
    const blocked = h.once(pubConn, 'blocked', 'connection.blocked', 90000);
    let isBlocked = false;
    blocked.then(() => (isBlocked = true), () => {});
    const ch = await h.openChannel(pubConn);
    const q = 'flood';
    await ch.assertQueue(q);
    const body = crypto.randomBytes(64 * 1024);
    const limit = Math.ceil((4 * WATERMARK) / body.length);
    let sent = 0;
    let peak = 0;
    const deadline = Date.now() + 90000;
    while (!isBlocked) {
      assert.ok(sent < limit, `published ${(sent * body.length) >> 20} MiB without connection.blocked`);
      assert.ok(Date.now() < deadline, 'no connection.blocked within 90 s');
      if (!ch.sendToQueue(q, body)) {
        // Socket buffer full: wait for it to drain or for the block.
        await Promise.race([new Promise((r) => ch.once('drain', r)), blocked, sleep(100)]);
      }
      sent++;
      if (sent % 16 === 0) {
        peak = Math.max(peak, rss());
        await new Promise((r) => setImmediate(r));
      }
    }
    for (let i = 0; i < 10; i++) {
      peak = Math.max(peak, rss());
      await sleep(50);
    }
    assert.ok(peak < WATERMARK + MARGIN, `RSS peaked at ${peak >> 20} MiB (watermark ${WATERMARK >> 20} MiB)`);

    const unblocked = h.once(pubConn, 'unblocked', 'connection.unblocked', 90000);
    consConn = await broker.connect();
    const cch = await h.openChannel(consConn);
    await cch.prefetch(200);
    await cch.consume(q, () => {}, { noAck: true });
    await unblocked;
    const conf = await h.openChannel(pubConn, { confirm: true });
    await publishOk(conf, '', q, 'after-unblock');
  } finally {
    for (const c of [pubConn, consConn]) if (c) await h.withTimeout(c.close(), 5000, 'close').catch(() => {});
    await broker.stop();
  }
});

test('x-delayed-message: held for x-delay, then routed by x-delayed-type, earliest first', async (t) => {
  if (h.isExternal) {
    t.skip('the delayed-message plugin is not part of Debian\'s RabbitMQ');
    return;
  }
  const n = names(t);
  const conn = await ctx.broker.connect();
  t.after(() => conn.close().catch(() => {}));
  const ch = await conn.createConfirmChannel();
  const x = n('delayed');
  const q = n('later');
  await ch.assertExchange(x, 'x-delayed-message', { durable: false, arguments: { 'x-delayed-type': 'topic' } });
  await ch.assertQueue(q, { durable: false });
  await ch.bindQueue(q, x, 'a.*');
  const started = Date.now();
  ch.publish(x, 'a.b', Buffer.from('slow'), { headers: { 'x-delay': 800 } });
  ch.publish(x, 'a.b', Buffer.from('fast'), { headers: { 'x-delay': 300 } });
  ch.publish(x, 'a.b', Buffer.from('now'));
  await ch.waitForConfirms();
  assert.equal((await getOne(ch, q, { noAck: true })).content.toString(), 'now');
  assert.equal(await count(conn, q), 0, 'a delayed message was routed before its delay');
  assert.equal((await getOne(ch, q, { noAck: true })).content.toString(), 'fast');
  const slow = await getOne(ch, q, { noAck: true });
  assert.equal(slow.content.toString(), 'slow');
  assert.ok(Date.now() - started >= 800, 'fired before its delay');
});
