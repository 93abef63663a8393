'use strict';
// basic.get with ack / nack / reject, multiple (allUpTo) and requeue, with amqplib.

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

async function get(ch, queue, opts = { noAck: false }) {
  const m = await h.withTimeout(ch.get(queue, opts), h.EVENT_TIMEOUT_MS, 'basic.get');
  assert.ok(m, `expected a message from ${queue}, got basic.get-empty`);
  return m;
}

test('basic.get reports message count, delivery tags and the empty case', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(ch, ['a', 'b', 'c']);
  const a = await get(ch, queue);
  assert.equal(a.content.toString(), 'a');
  assert.equal(a.fields.messageCount, 2, 'messages left after this one');
  assert.equal(a.fields.redelivered, false);
  assert.equal(a.fields.exchange, '');
  assert.equal(a.fields.routingKey, queue);
  const b = await get(ch, queue, { noAck: true });
  assert.equal(b.fields.messageCount, 1);
  assert.ok(b.fields.deliveryTag > a.fields.deliveryTag);
  const c = await get(ch, queue);
  assert.equal(c.fields.messageCount, 0);
  assert.equal(await ch.get(queue), false);
  ch.ack(c, true); // acks a and c; b was noAck
  assert.equal(await ch.get(queue), false);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0);
});

test('reject with requeue puts the message back in its place, marked redelivered', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(ch, ['a', 'b', 'c', 'd', 'e']);
  const a = await get(ch, queue);
  const b = await get(ch, queue);
  const c = await get(ch, queue);
  assert.deepEqual([a, b, c].map((m) => m.content.toString()), ['a', 'b', 'c']);

  ch.reject(b, true);
  const b2 = await get(ch, queue);
  assert.equal(b2.content.toString(), 'b', 'requeued message comes before d');
  assert.equal(b2.fields.redelivered, true);
  assert.notEqual(b2.fields.deliveryTag, b.fields.deliveryTag);

  // ack c alone, then nack(b2, allUpTo, no requeue) discards a and b2.
  ch.ack(c);
  ch.nack(b2, true, false);
  const d = await get(ch, queue);
  assert.equal(d.content.toString(), 'd');
  assert.equal(d.fields.redelivered, false);

  // nack single with requeue: d again, redelivered.
  ch.nack(d, false, true);
  const d2 = await get(ch, queue);
  assert.equal(d2.content.toString(), 'd');
  assert.equal(d2.fields.redelivered, true);
  // reject without requeue drops it.
  ch.reject(d2, false);
  const e = await get(ch, queue);
  assert.equal(e.content.toString(), 'e');
  ch.ack(e);
  assert.equal(await ch.get(queue), false);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0);
});

test('nack with allUpTo and requeue returns every message in its original order', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(ch, ['m1', 'm2', 'm3', 'm4']);
  const got = [];
  for (let i = 0; i < 3; i++) got.push(await get(ch, queue));
  ch.nack(got[2], true, true);
  const again = [];
  for (let i = 0; i < 4; i++) again.push(await get(ch, queue));
  assert.deepEqual(
    again.map((m) => [m.content.toString(), m.fields.redelivered]),
    [
      ['m1', true],
      ['m2', true],
      ['m3', true],
      ['m4', false],
    ],
  );
  ch.nackAll(false); // basic.nack multiple with tag 0: all outstanding, discarded
  assert.equal(await ch.get(queue), false);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0);
});

test('ackAll acknowledges everything outstanding; the queue stays empty after close', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(ch, ['x', 'y']);
  await get(ch, queue);
  await get(ch, queue);
  ch.ackAll();
  const other = await h.openChannel(conn);
  await ch.close(); // nothing unacked is left to requeue
  assert.equal((await other.checkQueue(queue)).messageCount, 0);
  assert.equal(await other.get(queue), false);
});

test('acknowledging an unknown delivery tag is a 406 channel error', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const queue = await queueWith(ch, ['only']);
  const m = await get(ch, queue);
  ch.ack(m);
  ch.ack(m); // second ack of the same tag
  await h.withTimeout(ch.closed, h.EVENT_TIMEOUT_MS, 'the channel to be closed by the server');
  assert.equal(ch.errors.length, 1);
  assert.equal(ch.errors[0].code, 406);
  assert.match(ch.errors[0].message, /PRECONDITION.FAILED/);
  // The connection survives.
  const ch2 = await h.openChannel(conn);
  assert.equal((await ch2.checkQueue(queue)).messageCount, 0);
  assert.equal(conn.errors.length, 0);
});
