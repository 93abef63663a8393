'use strict';
// Connection-level behaviour with amqplib: login, capabilities, channel errors that must close
// only their channel, exclusive queues across connections, users added at run time, SIGTERM.

const test = require('node:test');
const assert = require('node:assert/strict');
const amqp = require('amqplib');
const h = require('../harness');

const ctx = h.setup(test);

test('connects as guest and advertises the capabilities clients rely on', async () => {
  const conn = await ctx.connect();
  const props = conn.connection.serverProperties;
  assert.equal(typeof props, 'object');
  const caps = props.capabilities;
  assert.equal(typeof caps, 'object', 'server-properties has a capabilities table');
  for (const cap of [
    'publisher_confirms',
    'exchange_exchange_bindings',
    'basic.nack',
    'consumer_cancel_notify',
    'authentication_failure_close',
  ]) {
    assert.equal(caps[cap], true, `capability ${cap}`);
  }
  if (!h.isExternal) {
    // Negotiated from our config: [amqp] frame_max = 131072, heartbeat = 60.
    assert.equal(conn.connection.frameMax, 131072);
    assert.equal(conn.connection.heartbeat, 60);
  }
  const ch = await h.openChannel(conn);
  await ch.close();
});

test('login with a wrong password or an unknown user fails with 403 ACCESS_REFUSED', async () => {
  for (const creds of [
    { user: 'guest', password: 'not-the-password' },
    { user: h.uniqueName('nobody'), password: 'guest' },
  ]) {
    await assert.rejects(
      h.withTimeout(amqp.connect(ctx.broker.url(creds)), h.EVENT_TIMEOUT_MS, 'refused login'),
      (err) => {
        assert.match(err.message, /\b403\b/);
        assert.match(err.message, /ACCESS.REFUSED/);
        return true;
      },
    );
  }
  // The broker is still fine for a correct login afterwards.
  const conn = await ctx.connect();
  await h.openChannel(conn);
});

test('passive declare of a missing queue closes only that channel with 404', async () => {
  const conn = await ctx.connect();
  const bystander = await h.openChannel(conn);
  const q = h.uniqueName('present');
  await bystander.assertQueue(q, { exclusive: true });

  const ch = await h.openChannel(conn);
  const err = await h.expectAmqpError(ch.checkQueue(h.uniqueName('missing')), 404);
  assert.match(err.message, /NOT.FOUND/);
  await h.withTimeout(ch.closed, h.EVENT_TIMEOUT_MS, 'the failed channel to close');
  assert.equal(ch.errors.length, 1);
  assert.equal(ch.errors[0].code, 404);
  // class 50 (queue), method 10 (declare)
  assert.equal(ch.errors[0].classId, 50);
  assert.equal(ch.errors[0].methodId, 10);

  // The other channel and the connection are untouched.
  const ok = await bystander.checkQueue(q);
  assert.equal(ok.queue, q);
  assert.equal(bystander.errors.length, 0);
  const fresh = await h.openChannel(conn);
  await fresh.checkQueue(q);
  assert.equal(conn.errors.length, 0);
});

test('redeclaring an exchange with another type is 406 on that channel only', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  const x = h.uniqueName('x-type');
  await ch.assertExchange(x, 'direct', { durable: false, autoDelete: false });
  const bad = await h.openChannel(conn);
  await h.expectAmqpError(bad.assertExchange(x, 'fanout', { durable: false, autoDelete: false }), 406);
  await h.withTimeout(bad.closed, h.EVENT_TIMEOUT_MS, 'the failed channel to close');
  await ch.checkExchange(x);
  await ch.deleteExchange(x);
  assert.equal(conn.errors.length, 0);
});

test('an exclusive queue is locked (405) for another connection and goes away with its owner', async () => {
  const owner = await ctx.broker.connect();
  const other = await ctx.connect();
  const q = h.uniqueName('exclusive');
  const och = await h.openChannel(owner);
  await och.assertQueue(q, { exclusive: true });

  const c1 = await h.openChannel(other);
  await h.expectAmqpError(c1.checkQueue(q), 405);
  const c2 = await h.openChannel(other);
  await h.expectAmqpError(c2.assertQueue(q, { exclusive: true }), 405);
  const c3 = await h.openChannel(other);
  await h.expectAmqpError(
    c3.consume(q, () => {}),
    405,
  );
  // The owner is unaffected.
  const ok = await och.checkQueue(q);
  assert.equal(ok.queue, q);

  await owner.close();
  // The broker deletes the queue once the owner is gone; nothing tells a third party when, so
  // poll with a bound.
  const deadline = Date.now() + h.EVENT_TIMEOUT_MS;
  for (;;) {
    const c = await h.openChannel(other);
    try {
      await c.checkQueue(q);
    } catch (e) {
      assert.equal(e.code, 404);
      break;
    }
    await c.close();
    assert.ok(Date.now() < deadline, 'exclusive queue still exists after its owner closed');
    await new Promise((r) => setTimeout(r, 50));
  }
});

test('users added with the CLI while the broker runs can log in at once', { skip: h.isExternal && 'needs the tributary CLI' }, async () => {
  const user = h.uniqueName('alice');
  await ctx.broker.cli('user', 'add', user, 's3cret-pw');
  await ctx.broker.cli('user', 'set_permissions', user, '.*', '.*', '.*');
  const conn = await ctx.connect({ user, password: 's3cret-pw' });
  const ch = await h.openChannel(conn);
  await ch.assertQueue('', { exclusive: true });

  await assert.rejects(amqp.connect(ctx.broker.url({ user, password: 'wrong' })), /\b403\b/);
  await ctx.broker.cli('user', 'delete', user);
  await assert.rejects(amqp.connect(ctx.broker.url({ user, password: 's3cret-pw' })), /\b403\b/);
});

test('SIGTERM closes connections with 320 CONNECTION_FORCED and the broker exits cleanly', { skip: h.isExternal && 'needs to own the broker process' }, async () => {
  const broker = await h.startBroker();
  try {
    const conn = await broker.connect();
    await h.openChannel(conn);
    const closeEvent = h.once(conn, 'close', 'connection close after SIGTERM');
    broker.child.kill('SIGTERM');
    const err = await closeEvent;
    assert.ok(err, 'close event carries the server error');
    assert.equal(err.code, 320);
    assert.match(err.message, /CONNECTION.FORCED/);
    const status = await h.withTimeout(broker.exited, h.EVENT_TIMEOUT_MS, 'broker exit');
    assert.equal(status.code, 0, `broker exit status ${JSON.stringify(status)}`);
  } finally {
    await broker.stop();
  }
});
