'use strict';
// Queue declaration, counts, purge and conditional deletion with amqplib.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../harness');

const ctx = h.setup(test);

test('server-named queues get distinct names and report message and consumer counts', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const ok = await ch.assertQueue('', { exclusive: true });
  assert.equal(typeof ok.queue, 'string');
  assert.ok(ok.queue.length > 0, 'server generated a name');
  assert.equal(ok.messageCount, 0);
  assert.equal(ok.consumerCount, 0);
  const ok2 = await ch.assertQueue('', { exclusive: true });
  assert.notEqual(ok2.queue, ok.queue);

  for (const body of ['one', 'two']) ch.sendToQueue(ok.queue, Buffer.from(body));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  // (A non-passive redeclare of a server-named amq.gen-* queue is refused, as in RabbitMQ, so
  // read the counts back with a passive declare.)
  const again = await ch.checkQueue(ok.queue);
  assert.deepEqual(
    { queue: again.queue, messageCount: again.messageCount, consumerCount: again.consumerCount },
    { queue: ok.queue, messageCount: 2, consumerCount: 0 },
  );

  // A consumer with prefetch 1 takes one message; the other stays ready.
  const cch = await h.openChannel(conn);
  await cch.prefetch(1);
  const inbox = new h.Inbox();
  await cch.consume(ok.queue, inbox.push, { noAck: false });
  const first = await inbox.next();
  assert.equal(first.content.toString(), 'one');
  const passive = await ch.checkQueue(ok.queue);
  assert.equal(passive.messageCount, 1, 'ready messages (unacked ones not counted)');
  assert.equal(passive.consumerCount, 1);
  cch.ack(first);
  cch.ack(await inbox.next());
  await cch.close();
  const after = await ch.checkQueue(ok.queue);
  assert.equal(after.messageCount, 0);
  assert.equal(after.consumerCount, 0);
});

test('declaring an existing queue with different properties is 406', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  // Not exclusive: RabbitMQ ignores `durable` on exclusive queues.
  const q = h.uniqueName('q-props');
  await ch.assertQueue(q, { durable: false, autoDelete: false });
  try {
    const bad = await h.openChannel(conn);
    await h.expectAmqpError(bad.assertQueue(q, { durable: true, autoDelete: false }), 406);
    await h.withTimeout(bad.closed, h.EVENT_TIMEOUT_MS, 'the failed channel to close');
    const bad2 = await h.openChannel(conn);
    await h.expectAmqpError(bad2.assertQueue(q, { durable: false, autoDelete: false, arguments: { 'x-max-length': 10 } }), 406);
    await ch.checkQueue(q);
    // Identical redeclaration is fine.
    await ch.assertQueue(q, { durable: false, autoDelete: false });
  } finally {
    await ch.deleteQueue(q).catch(() => {});
  }
});

test('purge empties a queue and reports how many messages it removed', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  for (let i = 0; i < 3; i++) ch.sendToQueue(queue, Buffer.from(`m${i}`));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  const purged = await ch.purgeQueue(queue);
  assert.equal(purged.messageCount, 3);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0);
  assert.equal(await ch.get(queue), false);
  assert.equal((await ch.purgeQueue(queue)).messageCount, 0);
});

test('delete with ifUnused / ifEmpty refuses with 406; plain delete reports the message count', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const q = h.uniqueName('q-del');
  await ch.assertQueue(q, { durable: false, autoDelete: false });
  try {
    await h.publishConfirmed(ch, '', q, 'keep-me');

    // In use: a consumer is attached.
    const cch = await h.openChannel(conn);
    await cch.prefetch(1);
    const inbox = new h.Inbox();
    const { consumerTag } = await cch.consume(q, inbox.push, { noAck: false });
    const d = await inbox.next();
    const c1 = await h.openChannel(conn);
    const e1 = await h.expectAmqpError(c1.deleteQueue(q, { ifUnused: true }), 406);
    assert.match(e1.message, /PRECONDITION.FAILED/);
    await h.withTimeout(c1.closed, h.EVENT_TIMEOUT_MS, 'the failed channel to close');
    assert.equal(cch.errors.length, 0, 'the consumer channel is unaffected');
    await cch.cancel(consumerTag);
    cch.nack(d, false, true); // back to the queue, nobody to redeliver it to
    // A synchronous method on the same channel is handled after the nack.
    assert.equal((await cch.checkQueue(q)).messageCount, 1);

    // Not empty.
    const c2 = await h.openChannel(conn);
    await h.expectAmqpError(c2.deleteQueue(q, { ifEmpty: true }), 406);
    await h.withTimeout(c2.closed, h.EVENT_TIMEOUT_MS, 'the failed channel to close');

    // Still there with its message.
    const state = await ch.checkQueue(q);
    assert.equal(state.messageCount, 1);
    assert.equal(state.consumerCount, 0);

    const del = await ch.deleteQueue(q);
    assert.equal(del.messageCount, 1);
    const c3 = await h.openChannel(conn);
    await h.expectAmqpError(c3.checkQueue(q), 404);
  } finally {
    // Best effort if an assertion failed part-way (the queue is not exclusive).
    const c = await h.openChannel(conn).catch(() => null);
    if (c) await c.deleteQueue(q).catch(() => {});
  }
});

test('an empty unused queue can be deleted with ifUnused and ifEmpty', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  const q = h.uniqueName('q-del-ok');
  await ch.assertQueue(q, { durable: false, autoDelete: false });
  const del = await ch.deleteQueue(q, { ifUnused: true, ifEmpty: true });
  assert.equal(del.messageCount, 0);
  const c = await h.openChannel(conn);
  await h.expectAmqpError(c.checkQueue(q), 404);
});
