'use strict';
// Exchanges and routing with amqplib: every exchange type, exchange-to-exchange bindings, the
// pre-declared amq.* exchanges. Publishes go through a confirm channel, so that once
// waitForConfirms resolves every message has been routed and basic.get sees the result.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../harness');

const ctx = h.setup(test);

/** basic.get until empty (bounded); returns the bodies as strings, in queue order. */
async function drain(ch, q, max = 1000) {
  const out = [];
  for (let i = 0; i < max; i++) {
    const m = await ch.get(q, { noAck: true });
    if (m === false) return out;
    out.push(m.content.toString());
  }
  throw new Error(`queue ${q} did not drain within ${max} messages`);
}

/** Declare one exclusive server-named queue per entry of `bindings` ({name: [[exchange, key, args]...]}). */
async function queuesFor(ch, bindings) {
  const names = {};
  for (const [label, list] of Object.entries(bindings)) {
    const { queue } = await ch.assertQueue('', { exclusive: true });
    names[label] = queue;
    for (const [x, key, args] of list) await ch.bindQueue(queue, x, key, args);
  }
  return names;
}

test('assertExchange declares each exchange type; checkExchange and deleteExchange work', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  for (const type of ['direct', 'fanout', 'topic', 'headers']) {
    const x = h.uniqueName(`x-${type}`);
    const ok = await ch.assertExchange(x, type, { durable: false, autoDelete: false });
    assert.equal(ok.exchange, x);
    // Redeclaring with identical arguments is fine.
    await ch.assertExchange(x, type, { durable: false, autoDelete: false });
    await ch.checkExchange(x);
    await ch.deleteExchange(x);
  }
  await h.expectAmqpError(ch.checkExchange(h.uniqueName('x-missing')), 404);
});

test('the standard amq.* exchanges exist', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn);
  for (const x of ['amq.direct', 'amq.fanout', 'amq.topic', 'amq.headers', 'amq.match']) {
    await ch.checkExchange(x);
  }
  // Declaring into the reserved amq. namespace is refused with 403.
  await h.expectAmqpError(ch.assertExchange(h.uniqueName('amq.mine'), 'direct'), 403);
});

test('direct exchange routes by exact routing key', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const x = h.uniqueName('direct');
  await ch.assertExchange(x, 'direct', { durable: false, autoDelete: true });
  const q = await queuesFor(ch, {
    a: [[x, 'a']],
    b: [[x, 'b']],
    ab: [
      [x, 'a'],
      [x, 'b'],
    ],
  });
  for (const key of ['a', 'b', 'c', 'A']) ch.publish(x, key, Buffer.from(key));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  assert.deepEqual(await drain(ch, q.a), ['a']);
  assert.deepEqual(await drain(ch, q.b), ['b']);
  assert.deepEqual(await drain(ch, q.ab), ['a', 'b']);

  // Unbinding stops the flow.
  await ch.unbindQueue(q.ab, x, 'a');
  await h.publishConfirmed(ch, x, 'a', 'after-unbind');
  assert.deepEqual(await drain(ch, q.ab), []);
  assert.deepEqual(await drain(ch, q.a), ['after-unbind']);
});

test('the default exchange routes to the queue named by the routing key', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  await h.publishConfirmed(ch, '', queue, 'hello');
  assert.deepEqual(await drain(ch, queue), ['hello']);
  // sendToQueue is the same thing.
  ch.sendToQueue(queue, Buffer.from('again'));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  assert.deepEqual(await drain(ch, queue), ['again']);
});

test('fanout exchange copies to every bound queue and ignores the key', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const x = h.uniqueName('fanout');
  await ch.assertExchange(x, 'fanout', { durable: false, autoDelete: true });
  const q = await queuesFor(ch, { q1: [[x, '']], q2: [[x, 'ignored']], q3: [[x, 'x']] });
  await h.publishConfirmed(ch, x, 'whatever', 'm1');
  await h.publishConfirmed(ch, x, '', 'm2');
  for (const name of Object.values(q)) assert.deepEqual(await drain(ch, name), ['m1', 'm2']);
});

test('topic exchange matches * and # patterns', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const x = h.uniqueName('topic');
  await ch.assertExchange(x, 'topic', { durable: false, autoDelete: true });
  const q = await queuesFor(ch, {
    orange: [[x, '*.orange.*']],
    rabbitLazy: [
      [x, '*.*.rabbit'],
      [x, 'lazy.#'],
    ],
    all: [[x, '#']],
    az: [[x, 'a.#.z']],
    empty: [[x, '']],
    exact: [[x, 'quick.orange.fox']],
  });
  const keys = [
    'quick.orange.rabbit',
    'lazy.orange.elephant',
    'quick.orange.fox',
    'lazy.brown.fox',
    'lazy.pink.rabbit', // matches both bindings of rabbitLazy, delivered once
    'quick.brown.fox',
    'lazy',
    'quick.orange.male.rabbit',
    'orange',
    'a.z',
    'a.b.c.z',
    'a.b.c',
    '',
  ];
  for (const key of keys) ch.publish(x, key, Buffer.from(`k:${key}`));
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  const expected = {
    orange: ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox'],
    rabbitLazy: ['quick.orange.rabbit', 'lazy.orange.elephant', 'lazy.brown.fox', 'lazy.pink.rabbit', 'lazy'],
    all: keys,
    az: ['a.z', 'a.b.c.z'],
    empty: [''],
    exact: ['quick.orange.fox'],
  };
  for (const [label, want] of Object.entries(expected)) {
    assert.deepEqual(
      await drain(ch, q[label]),
      want.map((k) => `k:${k}`),
      `queue bound as ${label}`,
    );
  }
});

test('headers exchange matches with x-match all and any', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const x = h.uniqueName('headers');
  await ch.assertExchange(x, 'headers', { durable: false, autoDelete: true });
  const q = await queuesFor(ch, {
    all: [[x, '', { 'x-match': 'all', format: 'pdf', type: 'report' }]],
    any: [[x, '', { 'x-match': 'any', format: 'pdf', type: 'log' }]],
    // x-match defaults to all
    dflt: [[x, '', { format: 'zip', size: 3 }]],
  });
  const msgs = [
    ['both', { format: 'pdf', type: 'report' }],
    ['any-type', { format: 'zip', type: 'log' }],
    ['any-format', { format: 'pdf' }],
    ['none', {}],
    ['extra', { format: 'pdf', type: 'report', more: 'x' }],
    ['dflt', { format: 'zip', size: 3 }],
    ['dflt-wrong-value', { format: 'zip', size: 4 }],
  ];
  for (const [body, headers] of msgs) ch.publish(x, 'ignored', Buffer.from(body), { headers });
  await h.withTimeout(ch.waitForConfirms(), h.EVENT_TIMEOUT_MS, 'confirms');
  assert.deepEqual(await drain(ch, q.all), ['both', 'extra']);
  assert.deepEqual(await drain(ch, q.any), ['both', 'any-type', 'any-format', 'extra']);
  assert.deepEqual(await drain(ch, q.dflt), ['dflt']);
});

test('exchange-to-exchange bindings forward messages', async () => {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const src = h.uniqueName('e2e-src');
  const dst = h.uniqueName('e2e-dst');
  await ch.assertExchange(src, 'topic', { durable: false, autoDelete: false });
  await ch.assertExchange(dst, 'fanout', { durable: false, autoDelete: false });
  await ch.bindExchange(dst, src, 'a.*');
  const q = await queuesFor(ch, { viaDst: [[dst, '']], direct: [[src, '#']] });

  await h.publishConfirmed(ch, src, 'a.b', 'forwarded');
  await h.publishConfirmed(ch, src, 'b.c', 'not-forwarded');
  await h.publishConfirmed(ch, dst, 'zzz', 'to-dst');
  assert.deepEqual(await drain(ch, q.viaDst), ['forwarded', 'to-dst']);
  assert.deepEqual(await drain(ch, q.direct), ['forwarded', 'not-forwarded']);

  // A source with bindings refuses if-unused deletion (406 on that channel).
  const other = await h.openChannel(conn);
  await h.expectAmqpError(other.deleteExchange(src, { ifUnused: true }), 406);

  await ch.unbindExchange(dst, src, 'a.*');
  await h.publishConfirmed(ch, src, 'a.b', 'after-unbind');
  assert.deepEqual(await drain(ch, q.viaDst), []);
  assert.deepEqual(await drain(ch, q.direct), ['after-unbind']);
  await ch.deleteExchange(src);
  await ch.deleteExchange(dst);
});
