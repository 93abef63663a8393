'use strict';
// Consumers, prefetch, confirms, returns, recover and requeue-on-close with amqplib.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../harness');

const ctx = h.setup(test);

async function queueWith(ch, bodies) {
  const { queue } = await ch.assertQueue('', { exclusive: true });
  for (const b of bodies) ch.sendToQueue(queue, Buffer.from(b));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  return queue;
}

const bodies = (msgs) => msgs.map((m) => m.content.toString());

test('consume with a server-generated tag, then cancel stops deliveries', async () => {
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(pub, ['a', 'b']);

  const ch = await h.openChannel(conn);
  const inbox = new h.Inbox();
  const ok = await ch.consume(queue, inbox.push, { noAck: true });
  assert.equal(typeof ok.consumerTag, 'string');
  assert.ok(ok.consumerTag.length > 0, 'server generated a consumer tag');
  const got = await inbox.take(2);
  assert.deepEqual(bodies(got), ['a', 'b']);
  for (const m of got) {
    assert.equal(m.fields.consumerTag, ok.consumerTag);
    assert.equal(m.fields.redelivered, false);
    assert.equal(m.fields.exchange, '');
    assert.equal(m.fields.routingKey, queue);
  }
  assert.deepEqual(
    got.map((m) => m.fields.deliveryTag),
    [1, 2],
  );

  // A second consumer on the same channel gets a different tag.
  const ok2 = await ch.consume(queue, () => {}, { noAck: true });
  assert.notEqual(ok2.consumerTag, ok.consumerTag);
  await ch.cancel(ok2.consumerTag);

  const cancelOk = await ch.cancel(ok.consumerTag);
  assert.equal(cancelOk.consumerTag, ok.consumerTag);
  await h.publishConfirmed(pub, '', queue, 'after-cancel');
  const m = await ch.get(queue, { noAck: true });
  assert.ok(m, 'message published after cancel stays in the queue');
  assert.equal(m.content.toString(), 'after-cancel');
  assert.equal(inbox.length, 0, 'cancelled consumer got nothing more');
  assert.equal((await ch.checkQueue(queue)).consumerCount, 0);
});

test('a client-chosen consumer tag is echoed; reusing it on the channel is 530', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const tag = h.uniqueName('my-tag');
  const ok = await ch.consume(queue, () => {}, { consumerTag: tag });
  assert.equal(ok.consumerTag, tag);
  // NOT_ALLOWED is a connection error.
  const closed = conn.closed;
  await assert.rejects(
    h.withTimeout(ch.consume(queue, () => {}, { consumerTag: tag }), h.EVENT_TIMEOUT_MS, 'duplicate consume'),
  );
  const err = await h.withTimeout(closed, h.EVENT_TIMEOUT_MS, 'connection close');
  assert.equal(err && err.code, 530);
});

test('deleting the queue cancels its consumers (consumer callback gets null)', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  const q = h.uniqueName('q-server-cancel');
  await ch.assertQueue(q, { durable: false, autoDelete: false });
  const inbox = new h.Inbox();
  const { consumerTag } = await ch.consume(q, inbox.push, { noAck: true });
  const cancelled = h.once(ch, 'cancel', 'basic.cancel from the server');

  const other = await h.openChannel(conn);
  await other.deleteQueue(q);
  const fields = await cancelled;
  assert.equal(fields.consumerTag, consumerTag);
  assert.equal(await inbox.next('the null delivery'), null);
  // The channel itself stays open and usable.
  const { queue } = await ch.assertQueue('', { exclusive: true });
  assert.ok(queue);
  assert.equal(ch.errors.length, 0);
});

test('prefetch limits unacknowledged deliveries per consumer', async () => {
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(pub, ['m1', 'm2', 'm3', 'm4', 'm5']);

  const ch = await h.openChannel(conn);
  await ch.prefetch(2);
  const inbox = new h.Inbox();
  await ch.consume(queue, inbox.push, { noAck: false });
  const firstTwo = await inbox.take(2);
  assert.deepEqual(bodies(firstTwo), ['m1', 'm2']);
  // The broker holds the rest back: 3 ready, none delivered.
  assert.equal((await pub.checkQueue(queue)).messageCount, 3);
  assert.equal(inbox.length, 0);

  ch.ack(firstTwo[0]);
  const third = await inbox.next();
  assert.equal(third.content.toString(), 'm3');
  assert.equal((await pub.checkQueue(queue)).messageCount, 2);
  assert.equal(inbox.length, 0, 'still at most 2 unacked');

  // Acking m2 and m3 together (multiple) frees two slots.
  ch.ack(third, true);
  const rest = await inbox.take(2);
  assert.deepEqual(bodies(rest), ['m4', 'm5']);
  ch.ack(rest[1], true);
  // ack is asynchronous; a synchronous method on the same channel is handled after it.
  const state = await ch.checkQueue(queue);
  assert.equal(state.messageCount, 0);
  assert.equal(state.consumerCount, 1);
});

test('confirm channel: every publish is acked, also unroutable ones', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const n = 200;
  const results = [];
  for (let i = 0; i < n; i++) {
    results.push(
      new Promise((resolve) => {
        ch.sendToQueue(queue, Buffer.from(`c${i}`), { deliveryMode: 2 }, (err) => resolve(err));
      }),
    );
  }
  results.push(
    new Promise((resolve) => {
      ch.publish('', h.uniqueName('nowhere'), Buffer.from('unroutable'), {}, (err) => resolve(err));
    }),
  );
  const errs = await h.withTimeout(Promise.all(results), h.EVENT_TIMEOUT_MS, 'all confirms');
  assert.equal(errs.length, n + 1);
  errs.forEach((e, i) => {
    assert.equal(e, null, `publish ${i} acked`);
  });
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'waitForConfirms');
  assert.equal((await ch.checkQueue(queue)).messageCount, n);
});

test('mandatory publish that cannot be routed comes back with 312 NO_ROUTE', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const returns = [];
  ch.on('return', (m) => returns.push(m));

  const key = h.uniqueName('no-such-queue');
  const returned = h.once(ch, 'return', 'basic.return');
  ch.publish('', key, Buffer.from('bounce'), { mandatory: true, messageId: 'r1', headers: { h: 'v' } });
  const m = await returned;
  assert.equal(m.fields.replyCode, 312);
  assert.equal(m.fields.replyText, 'NO_ROUTE');
  assert.equal(m.fields.exchange, '');
  assert.equal(m.fields.routingKey, key);
  assert.equal(m.content.toString(), 'bounce');
  assert.equal(m.properties.messageId, 'r1');
  assert.deepEqual(m.properties.headers, { h: 'v' });
  // The return precedes the confirm, and the publish is still acked.
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');

  // An exchange without bindings returns too.
  const x = h.uniqueName('x-unbound');
  await ch.assertExchange(x, 'direct', { durable: false, autoDelete: false });
  const returned2 = h.once(ch, 'return', 'basic.return');
  ch.publish(x, 'k', Buffer.from('bounce2'), { mandatory: true });
  const m2 = await returned2;
  assert.equal(m2.fields.replyCode, 312);
  assert.equal(m2.fields.exchange, x);

  // Routable mandatory messages are not returned: any return would arrive before the ack.
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const before = returns.length;
  ch.sendToQueue(queue, Buffer.from('fine'), { mandatory: true });
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  assert.equal(returns.length, before);
  await ch.deleteExchange(x);
});

test('recover redelivers unacknowledged messages with the redelivered flag', async () => {
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(pub, ['r1', 'r2']);
  const ch = await h.openChannel(conn);
  const inbox = new h.Inbox();
  await ch.consume(queue, inbox.push, { noAck: false });
  const first = await inbox.take(2);
  assert.deepEqual(bodies(first), ['r1', 'r2']);
  assert.ok(first.every((m) => m.fields.redelivered === false));
  ch.ack(first[0]);

  await h.withTimeout(ch.recover(), h.EVENT_TIMEOUT_MS, 'basic.recover-ok');
  const again = await inbox.next('redelivery after recover');
  assert.equal(again.content.toString(), 'r2');
  assert.equal(again.fields.redelivered, true);
  assert.ok(again.fields.deliveryTag > first[1].fields.deliveryTag, 'a fresh delivery tag');
  ch.ack(again);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0);
  assert.equal(inbox.length, 0);
});

test('unacknowledged messages go back to the queue when their channel closes', async () => {
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(pub, ['u1', 'u2', 'u3']);

  const ch = await h.openChannel(conn);
  const inbox = new h.Inbox();
  await ch.consume(queue, inbox.push, { noAck: false });
  const got = await inbox.take(3);
  ch.ack(got[1]);
  await ch.close();

  const after = await h.openChannel(conn);
  const m1 = await after.get(queue, { noAck: false });
  const m3 = await after.get(queue, { noAck: false });
  assert.ok(m1 && m3, 'both unacked messages are back');
  assert.deepEqual(bodies([m1, m3]), ['u1', 'u3']);
  assert.equal(m1.fields.redelivered, true);
  assert.equal(m3.fields.redelivered, true);
  assert.equal(await after.get(queue), false);
  after.ack(m3, true);
  assert.equal((await after.checkQueue(queue)).messageCount, 0);
});

test('unacknowledged messages go back to the queue when their connection closes', async () => {
  const conn = await ctx.connect();
  const pub = await h.openChannel(conn, { confirm: true });
  const q = h.uniqueName('q-conn-close');
  await pub.assertQueue(q, { durable: false, autoDelete: false });
  try {
    await h.publishConfirmed(pub, '', q, 'held');
    const consumerConn = await ctx.broker.connect();
    const ch = await h.openChannel(consumerConn);
    const inbox = new h.Inbox();
    await ch.consume(q, inbox.push, { noAck: false });
    await inbox.next();
    await consumerConn.close();
    // Another consumer receives it, marked redelivered.
    const ch2 = await h.openChannel(conn);
    const inbox2 = new h.Inbox();
    await ch2.consume(q, inbox2.push, { noAck: true });
    const m = await inbox2.next('the requeued message');
    assert.equal(m.content.toString(), 'held');
    assert.equal(m.fields.redelivered, true);
  } finally {
    await pub.deleteQueue(q).catch(() => {});
  }
});
