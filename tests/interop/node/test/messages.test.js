'use strict';
// Message bodies and properties survive the broker unchanged (amqplib).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('../harness');

const ctx = h.setup(test);

test('bodies of every size around the frame boundary, up to 1 MiB, arrive intact', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const frameMax = conn.connection.frameMax;
  assert.ok(frameMax >= 4096, `negotiated frame_max ${frameMax}`);
  const payloadPerFrame = frameMax - 8; // frame header (7) + frame end (1)
  const sizes = [0, 1, payloadPerFrame - 1, payloadPerFrame, payloadPerFrame + 1, 3 * payloadPerFrame, 1 << 20];
  const sent = sizes.map((n) => crypto.randomBytes(n));
  for (const body of sent) ch.sendToQueue(queue, body);
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');

  // Via basic.get ...
  for (let i = 0; i < sent.length; i++) {
    const m = await ch.get(queue, { noAck: true });
    assert.ok(m, `message ${i}`);
    assert.equal(m.content.length, sent[i].length, `size of message ${i}`);
    assert.ok(m.content.equals(sent[i]), `body of ${sizes[i]} bytes is intact`);
  }

  // ... and via a consumer, for the 1 MiB one.
  const big = crypto.randomBytes(1 << 20);
  await h.publishConfirmed(ch, '', queue, big);
  const inbox = new h.Inbox();
  await ch.consume(queue, inbox.push, { noAck: true });
  const m = await inbox.next('the 1 MiB delivery');
  assert.equal(m.content.length, big.length);
  assert.equal(
    crypto.createHash('sha256').update(m.content).digest('hex'),
    crypto.createHash('sha256').update(big).digest('hex'),
  );
});

test('all basic properties and nested header values round-trip', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const { queue } = await ch.assertQueue('', { exclusive: true });

  const headers = {
    str: 'plain',
    unicode: 'héllo ✓ 日本',
    byte: 7,
    short: 1000,
    int: -70000,
    long: 2 ** 40,
    neg_long: -(2 ** 40),
    double: 1.5,
    t: true,
    f: false,
    nothing: null,
    bytes: Buffer.from([0, 1, 2, 255]),
    ts: { '!': 'timestamp', value: 1700000000 },
    dec: { '!': 'decimal', value: { places: 2, digits: 12345 } },
    nested: { a: 1, b: 'two', c: { d: [1, 'x', true, { deep: 'yes' }], e: {} } },
    list: [1, 'a', [2, 'b'], { k: 'v' }, []],
    empty_table: {},
    empty_str: '',
  };
  const props = {
    contentType: 'application/json',
    contentEncoding: 'gzip',
    headers,
    deliveryMode: 2,
    priority: 5,
    correlationId: 'corr-42',
    replyTo: 'amq.rabbitmq.reply-to-ish',
    expiration: '60000',
    messageId: 'msg-0001',
    timestamp: 1700000123,
    type: 'order.created',
    userId: 'guest', // must equal the authenticated user, as in RabbitMQ
    appId: 'tributary-interop',
  };
  const body = Buffer.from(JSON.stringify({ hello: 'world' }));
  ch.sendToQueue(queue, body, props);
  // No properties at all.
  ch.sendToQueue(queue, Buffer.from('bare'));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');

  const check = (m) => {
    assert.ok(m.content.equals(body));
    const p = m.properties;
    for (const k of Object.keys(props)) {
      if (k === 'headers') continue;
      assert.deepEqual(p[k], props[k], `property ${k}`);
    }
    assert.deepEqual(p.headers, headers);
  };
  check(await ch.get(queue, { noAck: true }));
  const bare = await ch.get(queue, { noAck: true });
  assert.equal(bare.content.toString(), 'bare');
  for (const k of ['contentType', 'correlationId', 'replyTo', 'expiration', 'messageId', 'timestamp', 'type', 'userId', 'appId', 'priority', 'deliveryMode']) {
    assert.equal(bare.properties[k], undefined, `absent property ${k}`);
  }

  // The same through a consumer.
  ch.sendToQueue(queue, body, props);
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  const inbox = new h.Inbox();
  await ch.consume(queue, inbox.push, { noAck: true });
  check(await inbox.next());
});

test('a user_id property that is not the authenticated user is refused with 406', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  const { queue } = await ch.assertQueue('', { exclusive: true });
  ch.sendToQueue(queue, Buffer.from('spoof'), { userId: 'someone-else' });
  await h.withTimeout(ch.closed, h.EVENT_TIMEOUT_MS, 'the channel to be closed by the server');
  assert.equal(ch.errors.length, 1);
  assert.equal(ch.errors[0].code, 406);
  const ch2 = await h.openChannel(conn);
  assert.equal((await ch2.checkQueue(queue)).messageCount, 0);
});
