'use strict';
// MQTT with mqtt.js (the `mqtt` npm package), protocol levels 4 (3.1.1) and 5, against the
// broker's MQTT listener (harness: broker.mqttPort), and across to AMQP with amqplib. Covers
// what docs/mqtt.md lists as working. Every wait is bounded (h.withTimeout / h.Inbox.next).

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const mqtt = require('mqtt');
const h = require('../harness');

const ctx = h.setup(test);
const VERSIONS = [
  { v: 4, name: 'v3.1.1' },
  { v: 5, name: 'v5' },
];
// Against an external RabbitMQ without TRIBUTARY_TEST_MQTT_PORT there is no MQTT port to use.
const NO_MQTT = h.isExternal && !process.env.TRIBUTARY_TEST_MQTT_PORT;
const mtest = (name, fn) => test(name, { skip: NO_MQTT && 'no MQTT port for the external broker' }, fn);
// Tests that need our CLI or our process.
const ttest = (name, fn) => test(name, { skip: (NO_MQTT || h.isExternal) && 'Tributary only' }, fn);

/** A topic prefix of its own for each test (retained messages outlive a test). */
const prefix = () => h.uniqueName('t');

// ---------------------------------------------------------------------------------------------
// mqtt.js clients: no automatic reconnect, every packet that arrives collected in inboxes.

const clients = [];
const sockets = [];

test.afterEach(async () => {
  const cs = clients.splice(0);
  await Promise.all(
    cs.map((c) =>
      h.withTimeout(new Promise((resolve) => c.end(!c.connected, resolve)), h.EVENT_TIMEOUT_MS, 'MQTT client end').catch(() => c.end(true)),
    ),
  );
  for (const s of sockets.splice(0)) s.destroy();
});

/** mqtt.js options for this broker. */
function mqttOptions({ version = 4, ...rest } = {}) {
  return {
    host: ctx.broker.host,
    port: ctx.broker.mqttPort,
    protocol: 'mqtt',
    protocolVersion: version,
    reconnectPeriod: 0, // a refused or taken-over client must stay down
    connectTimeout: h.EVENT_TIMEOUT_MS,
    keepalive: 30,
    clientId: h.uniqueName('mq'),
    ...rest,
  };
}

/**
 * Connect and wait for a successful CONNACK (rejects on a refusal). The client gets
 * `inbox` (PUBLISH packets: topic, payload, qos, retain, dup, properties), `disconnects`
 * (DISCONNECT packets from the server), `errors`, `closed` (resolves on socket close) and
 * `connack`.
 */
async function mq(opts = {}) {
  const c = mqtt.connect(mqttOptions(opts));
  clients.push(c);
  c.inbox = new h.Inbox();
  c.disconnects = new h.Inbox();
  c.errors = [];
  c.on('message', (_topic, _payload, packet) => c.inbox.push(packet));
  c.on('disconnect', (packet) => c.disconnects.push(packet));
  c.on('error', (e) => c.errors.push(e));
  c.closed = new Promise((resolve) => c.once('close', resolve));
  c.connack = await h.withTimeout(
    new Promise((resolve, reject) => {
      c.once('connect', resolve);
      c.once('error', reject);
      c.once('close', () => reject(new Error('connection closed before CONNACK')));
    }),
    h.EVENT_TIMEOUT_MS,
    'CONNACK',
  );
  return c;
}

/** Connect expecting a refusal; return the error (its `code` is the CONNACK return / reason code). */
async function mqRefused(opts) {
  let err = null;
  try {
    await mq(opts);
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'the connection was accepted');
  return err;
}

/** Subscribe and return the granted QoS list (rejects on a failure reason code). */
async function subscribe(c, filter, opts = { qos: 1 }) {
  const granted = await h.withTimeout(c.subscribeAsync(filter, opts), h.EVENT_TIMEOUT_MS, `SUBACK for ${filter}`);
  return granted.map((g) => g.qos);
}

/** Publish and wait for the QoS flow to complete (PUBACK / PUBCOMP; QoS 0: written). */
function publish(c, topic, payload, opts = {}) {
  return h.withTimeout(c.publishAsync(topic, payload, opts), h.EVENT_TIMEOUT_MS, `publish to ${topic}`);
}

/** End a client without a DISCONNECT packet (an abnormal close for the broker). */
async function dropConnection(c) {
  c.end(true);
  await h.withTimeout(c.closed, h.EVENT_TIMEOUT_MS, 'socket close');
}

/** End a client cleanly (DISCONNECT). */
async function disconnect(c, opts) {
  await h.withTimeout(c.endAsync(false, opts), h.EVENT_TIMEOUT_MS, 'DISCONNECT');
}

/**
 * Publish a sentinel on `topic` and assert it is the next message `c` receives: a bounded way
 * of showing that nothing else (an unwanted retained message, a will) was delivered before it.
 */
async function expectNothingBefore(c, pub, topic, what) {
  const marker = `sentinel-${Math.random()}`;
  await publish(pub, topic, marker, { qos: 1 });
  const m = await c.inbox.next(`the sentinel on ${topic}`);
  assert.equal(m.payload.toString(), marker, `${what}: got ${m.topic} ${JSON.stringify(m.payload.toString())} first`);
}

// ---------------------------------------------------------------------------------------------
// Raw TCP for what mqtt.js will not do (stay silent past the keep alive, send malformed bytes).

function varint(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}
const str = (s) => {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};
const packet = (first, body) => Buffer.concat([Buffer.from([first]), varint(body.length), body]);

/** A CONNECT packet (clean session / clean start, optional QoS 1 will, guest/guest). */
function connectPacket({ version, clientId, keepalive, will }) {
  const v5 = version === 5;
  let flags = 0x02 | 0x80 | 0x40; // clean, username, password
  if (will) flags |= 0x04 | 0x08; // will flag, will QoS 1
  const variable = Buffer.concat([str('MQTT'), Buffer.from([version, flags, keepalive >> 8, keepalive & 0xff]), v5 ? Buffer.from([0]) : Buffer.alloc(0)]);
  const payload = [str(clientId)];
  if (will) payload.push(v5 ? Buffer.from([0]) : Buffer.alloc(0), str(will.topic), str(will.payload));
  payload.push(str('guest'), str('guest'));
  return packet(0x10, Buffer.concat([variable, ...payload]));
}

/** Open a raw socket to the MQTT listener; `data` accumulates what the broker sends. */
async function rawSocket() {
  const s = net.createConnection({ host: ctx.broker.host, port: ctx.broker.mqttPort });
  sockets.push(s);
  s.data = Buffer.alloc(0);
  s.on('data', (d) => {
    s.data = Buffer.concat([s.data, d]);
  });
  s.on('error', () => {});
  s.ended = new Promise((resolve) => s.once('close', resolve));
  await h.withTimeout(new Promise((resolve, reject) => s.once('connect', resolve).once('error', reject)), h.EVENT_TIMEOUT_MS, 'TCP connect');
  return s;
}

/** Split the bytes the broker sent into [type, body] packets. */
function parsePackets(buf) {
  const out = [];
  let i = 0;
  while (i < buf.length) {
    const type = buf[i] >> 4;
    let len = 0;
    let mult = 1;
    let j = i + 1;
    for (;;) {
      const b = buf[j++];
      len += (b & 0x7f) * mult;
      mult *= 128;
      if (!(b & 0x80)) break;
    }
    out.push([type, buf.subarray(j, j + len)]);
    i = j + len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// amqplib side.

async function amqpQueueBoundTo(bindingKey) {
  const conn = await ctx.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  await ch.bindQueue(queue, 'amq.topic', bindingKey);
  const inbox = new h.Inbox();
  await ch.consume(queue, inbox.push, { noAck: true });
  return { conn, ch, queue, inbox };
}

// =============================================================================================
// CONNECT

for (const { v, name } of VERSIONS) {
  mtest(`${name}: CONNECT is accepted with guest/guest and without a username; a new session is not present`, async () => {
    const c = await mq({ version: v, username: 'guest', password: 'guest' });
    assert.equal(c.connack.sessionPresent, false);
    assert.equal(v === 5 ? c.connack.reasonCode : c.connack.returnCode, 0);
    const anon = await mq({ version: v }); // no username: guest, from loopback
    assert.equal(anon.connected, true);
  });

  ttest(`${name}: a wrong password or an unknown user is refused in the CONNACK; a CLI-added user is accepted`, async () => {
    const refused = v === 5 ? 0x86 : 4; // Bad User Name or Password / 3.1.1 "bad user name or password"
    const e1 = await mqRefused({ version: v, username: 'guest', password: 'wrong' });
    assert.equal(e1.code, refused, e1.message);
    const e2 = await mqRefused({ version: v, username: h.uniqueName('nobody'), password: 'x' });
    assert.equal(e2.code, refused, e2.message);
    const user = h.uniqueName('mqttuser');
    await ctx.broker.cli('user', 'add', user, 's3cret');
    await ctx.broker.cli('user', 'set_permissions', user, '.*', '.*', '.*');
    const ok = await mq({ version: v, username: user, password: 's3cret' });
    assert.equal(ok.connected, true);
    const e3 = await mqRefused({ version: v, username: user, password: 's3cret-not' });
    assert.equal(e3.code, refused, e3.message);
  });
}

mtest('v5: CONNACK properties; an empty client id gets an Assigned Client Identifier', async () => {
  const c = await mq({ version: 5, clientId: '' });
  const p = c.connack.properties || {};
  assert.ok(typeof p.assignedClientIdentifier === 'string' && p.assignedClientIdentifier.length > 0, JSON.stringify(p));
  assert.equal(p.receiveMaximum, 1024);
  assert.notEqual(p.retainAvailable, false);
  assert.notEqual(p.wildcardSubscriptionAvailable, false);
  assert.notEqual(p.sharedSubscriptionAvailable, false);
  assert.notEqual(p.subscriptionIdentifiersAvailable, false);
  assert.equal(p.topicAliasMaximum, 16);
  // The assigned id works like any other: messages flow.
  const t = `${prefix()}/x`;
  await subscribe(c, t, { qos: 1 });
  await publish(c, t, 'self', { qos: 1 });
  assert.equal((await c.inbox.next()).payload.toString(), 'self');
});

mtest('v3.1.1: an empty client id with clean session 1 is accepted', async () => {
  const c = await mq({ version: 4, clientId: '' });
  assert.equal(c.connack.returnCode, 0);
});

// =============================================================================================
// PUBLISH / SUBSCRIBE

for (const { v, name } of VERSIONS) {
  for (const qos of [0, 1, 2]) {
    mtest(`${name}: QoS ${qos} publish/subscribe with + and # filters`, async () => {
      const p = prefix();
      const sub = await mq({ version: v });
      assert.deepEqual(await subscribe(sub, `${p}/sensors/+/temp`, { qos }), [qos]);
      assert.deepEqual(await subscribe(sub, `${p}/alerts/#`, { qos }), [qos]);
      const pub = await mq({ version: v });

      await publish(pub, `${p}/sensors/kitchen/temp`, '21.5', { qos });
      let m = await sub.inbox.next('the + match');
      assert.deepEqual([m.topic, m.payload.toString(), m.qos, m.retain], [`${p}/sensors/kitchen/temp`, '21.5', qos, false]);

      // Not matching: a level too many for +, a different last level.
      await publish(pub, `${p}/sensors/kitchen/a/temp`, 'no', { qos });
      await publish(pub, `${p}/sensors/kitchen/humidity`, 'no', { qos });
      // # matches the parent level itself and any depth below it.
      await publish(pub, `${p}/alerts`, 'a0', { qos });
      await publish(pub, `${p}/alerts/fire/floor/2`, 'a3', { qos });
      await publish(pub, `${p}/sensors/hall/temp`, '19', { qos });
      const got = (await sub.inbox.take(3)).map((x) => [x.topic, x.payload.toString(), x.qos]);
      assert.deepEqual(got, [
        [`${p}/alerts`, 'a0', qos],
        [`${p}/alerts/fire/floor/2`, 'a3', qos],
        [`${p}/sensors/hall/temp`, '19', qos],
      ]);
      await expectNothingBefore(sub, pub, `${p}/alerts/end`, 'a non-matching topic was delivered');
    });
  }

  mtest(`${name}: delivery QoS is min(granted, published)`, async () => {
    const p = prefix();
    const subs = [];
    for (const granted of [0, 1, 2]) {
      const s = await mq({ version: v });
      assert.deepEqual(await subscribe(s, `${p}/q/#`, { qos: granted }), [granted]);
      subs.push(s);
    }
    const pub = await mq({ version: v });
    for (const published of [0, 1, 2]) {
      await publish(pub, `${p}/q/${published}`, `p${published}`, { qos: published });
      for (const [granted, s] of subs.entries()) {
        const m = await s.inbox.next(`QoS ${published} message on a QoS ${granted} subscription`);
        assert.equal(m.payload.toString(), `p${published}`);
        assert.equal(m.qos, Math.min(granted, published), `published ${published}, granted ${granted}`);
      }
    }
  });

  mtest(`${name}: many QoS 1 and QoS 2 messages arrive once each, in order per QoS`, async () => {
    const t = `${prefix()}/burst`;
    const sub = await mq({ version: v });
    await subscribe(sub, t, { qos: 2 });
    const pub = await mq({ version: v });
    const N = 150; // above the in-flight window of 64
    // Publish without waiting for each flow: odd numbers at QoS 2, even ones at QoS 1. Order is
    // only promised per topic and QoS (MQTT 3.1.1 4.6 / 5.0 4.6).
    await Promise.all(Array.from({ length: N }, (_, i) => publish(pub, t, String(i), { qos: 1 + (i % 2) })));
    const got = (await sub.inbox.take(N)).map((m) => [Number(m.payload.toString()), m.qos]);
    for (const q of [1, 2]) {
      assert.deepEqual(
        got.filter(([, mq]) => mq === q).map(([n]) => n),
        Array.from({ length: N }, (_, i) => i).filter((i) => 1 + (i % 2) === q),
        `QoS ${q} messages once each and in order`,
      );
    }
    await expectNothingBefore(sub, pub, t, 'a duplicate arrived');
  });
}

// =============================================================================================
// MQTT <-> AMQP

for (const { v, name } of VERSIONS) {
  mtest(`${name}: MQTT -> AMQP -> MQTT through amq.topic`, async () => {
    const p = prefix();
    const amqpSide = await amqpQueueBoundTo(`${p}.sensors.*.temp`);
    const device = await mq({ version: v });
    assert.deepEqual(await subscribe(device, `${p}/commands/#`, { qos: 2 }), [2]);

    // MQTT -> AMQP: topic levels become routing key words; QoS 1 -> persistent, QoS 0 -> transient.
    await publish(device, `${p}/sensors/hall/temp`, '19', { qos: 1 });
    let a = await amqpSide.inbox.next('the QoS 1 MQTT publish on the AMQP queue');
    assert.equal(a.fields.exchange, 'amq.topic');
    assert.equal(a.fields.routingKey, `${p}.sensors.hall.temp`);
    assert.equal(a.content.toString(), '19');
    assert.equal(a.properties.deliveryMode, 2);
    assert.equal(Number(a.properties.headers['x-mqtt-publish-qos']), 1);
    await publish(device, `${p}/sensors/roof/temp`, '7', { qos: 0 });
    a = await amqpSide.inbox.next('the QoS 0 MQTT publish on the AMQP queue');
    assert.equal(a.fields.routingKey, `${p}.sensors.roof.temp`);
    assert.equal(a.properties.deliveryMode, 1);

    // An AMQP service answers: persistent -> QoS 1 (min with granted 2), transient -> QoS 0.
    await h.publishConfirmed(amqpSide.ch, 'amq.topic', `${p}.commands.hall.heat`, 'on', { deliveryMode: 2 });
    let m = await device.inbox.next('the persistent AMQP command');
    assert.deepEqual([m.topic, m.payload.toString(), m.qos], [`${p}/commands/hall/heat`, 'on', 1]);
    await h.publishConfirmed(amqpSide.ch, 'amq.topic', `${p}.commands.hall.fan`, 'off', { deliveryMode: 1 });
    m = await device.inbox.next('the transient AMQP command');
    assert.deepEqual([m.topic, m.payload.toString(), m.qos], [`${p}/commands/hall/fan`, 'off', 0]);
  });
}

mtest('binary payloads (every byte value, 1 MiB) cross MQTT -> AMQP -> MQTT intact', async () => {
  const p = prefix();
  const amqpSide = await amqpQueueBoundTo(`${p}.in`);
  const sub = await mq({ version: 5 });
  await subscribe(sub, `${p}/out`, { qos: 1 });
  const pub = await mq({ version: 4 });
  const bodies = [Buffer.alloc(0), Buffer.from(Array.from({ length: 256 }, (_, i) => i)), require('node:crypto').randomBytes(1 << 20)];
  for (const body of bodies) {
    await publish(pub, `${p}/in`, body, { qos: 1 });
    const a = await amqpSide.inbox.next();
    assert.ok(a.content.equals(body), `AMQP side, ${body.length} bytes`);
    await h.publishConfirmed(amqpSide.ch, 'amq.topic', `${p}.out`, a.content, { deliveryMode: 2 });
    const m = await sub.inbox.next();
    assert.ok(m.payload.equals(body), `MQTT side, ${body.length} bytes`);
  }
});

// =============================================================================================
// Retained messages

for (const { v, name } of VERSIONS) {
  mtest(`${name}: retained message set, replaced, delivered on subscribe with the retain flag, cleared`, async () => {
    const p = prefix();
    const pub = await mq({ version: v });
    // QoS 0 first: the QoS 1 PUBACK after it shows the broker has handled both (one connection's
    // packets are handled in order).
    await publish(pub, `${p}/window`, 'shut', { qos: 0, retain: true });
    await publish(pub, `${p}/door`, 'open', { qos: 1, retain: true });

    const s1 = await mq({ version: v });
    await subscribe(s1, `${p}/#`, { qos: 1 });
    const first = (await s1.inbox.take(2)).map((m) => [m.topic, m.payload.toString(), m.retain, m.qos]).sort();
    assert.deepEqual(first, [
      [`${p}/door`, 'open', true, 1],
      [`${p}/window`, 'shut', true, 0],
    ]);

    // Replace: the old value is gone, the new one is retained; live delivery to an existing
    // subscription carries retain 0.
    await publish(pub, `${p}/door`, 'closed', { qos: 1, retain: true });
    const live = await s1.inbox.next('the live retained publish');
    assert.deepEqual([live.topic, live.payload.toString(), live.retain], [`${p}/door`, 'closed', false]);
    const s2 = await mq({ version: v });
    await subscribe(s2, `${p}/door`, { qos: 1 });
    const m2 = await s2.inbox.next('the replaced retained message');
    assert.deepEqual([m2.payload.toString(), m2.retain], ['closed', true]);

    // Clear with an empty retained payload: a later subscriber gets nothing.
    await publish(pub, `${p}/door`, '', { qos: 1, retain: true });
    await publish(pub, `${p}/window`, '', { qos: 1, retain: true });
    const s3 = await mq({ version: v });
    await subscribe(s3, `${p}/#`, { qos: 1 });
    await expectNothingBefore(s3, pub, `${p}/ping`, 'a cleared retained message was delivered');
  });
}

mtest('v5: Retain Handling 0 sends retained messages on every subscribe, 1 only on a new subscription, 2 never', async () => {
  const p = prefix();
  const pub = await mq({ version: 5 });
  await publish(pub, `${p}/state`, 'kept', { qos: 1, retain: true });

  const s0 = await mq({ version: 5 });
  for (let i = 0; i < 2; i++) {
    await subscribe(s0, `${p}/state`, { qos: 1, rh: 0 });
    const m = await s0.inbox.next(`retained message for Retain Handling 0, subscribe #${i + 1}`);
    assert.deepEqual([m.payload.toString(), m.retain], ['kept', true]);
  }

  const s1 = await mq({ version: 5 });
  await subscribe(s1, `${p}/state`, { qos: 1, rh: 1 });
  assert.equal((await s1.inbox.next('retained message for Retain Handling 1')).payload.toString(), 'kept');
  await subscribe(s1, `${p}/state`, { qos: 1, rh: 1 }); // the subscription exists: nothing
  await expectNothingBefore(s1, pub, `${p}/state`, 'Retain Handling 1 resent the retained message');

  const s2 = await mq({ version: 5 });
  await subscribe(s2, `${p}/#`, { qos: 1, rh: 2 });
  await expectNothingBefore(s2, pub, `${p}/live`, 'Retain Handling 2 sent a retained message');
});

// =============================================================================================
// Wills

for (const { v, name } of VERSIONS) {
  mtest(`${name}: the will is sent on an abnormal close, not after DISCONNECT`, async () => {
    const p = prefix();
    const watcher = await mq({ version: v });
    await subscribe(watcher, `${p}/wills/#`, { qos: 1 });

    const polite = await mq({ version: v, will: { topic: `${p}/wills/polite`, payload: Buffer.from('bye'), qos: 1 } });
    await disconnect(polite);
    const dying = await mq({ version: v, will: { topic: `${p}/wills/dying`, payload: Buffer.from('gone'), qos: 1, retain: false } });
    await dropConnection(dying); // no DISCONNECT packet
    const m = await watcher.inbox.next('the will');
    assert.deepEqual([m.topic, m.payload.toString(), m.qos], [`${p}/wills/dying`, 'gone', 1]);
    await expectNothingBefore(watcher, watcher, `${p}/wills/end`, 'a second will arrived');
  });

  mtest(`${name}: keep alive: a silent client is dropped after 1.5x the interval and its will is sent`, async () => {
    const p = prefix();
    const watcher = await mq({ version: v });
    await subscribe(watcher, `${p}/#`, { qos: 1 });
    const s = await rawSocket();
    const started = Date.now();
    s.write(connectPacket({ version: v, clientId: h.uniqueName('silent'), keepalive: 1, will: { topic: `${p}/lost`, payload: 'timeout' } }));
    const m = await watcher.inbox.next('the will of the silent client');
    assert.deepEqual([m.topic, m.payload.toString()], [`${p}/lost`, 'timeout']);
    await h.withTimeout(s.ended, h.EVENT_TIMEOUT_MS, 'the broker closing the silent connection');
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 1000, `dropped after ${elapsed} ms, before the keep alive interval`);
    const pkts = parsePackets(s.data);
    assert.equal(pkts[0][0], 2, 'first packet is a CONNACK');
    if (v === 5) {
      const d = pkts.find(([t]) => t === 14);
      assert.ok(d, `no DISCONNECT before the close: ${JSON.stringify(pkts.map(([t]) => t))}`);
      assert.equal(d[1][0], 0x8d, 'DISCONNECT reason Keep Alive timeout');
    }
  });
}

// =============================================================================================
// Takeover

for (const { v, name } of VERSIONS) {
  mtest(`${name}: a second connection with the same client id takes over the session${v === 5 ? ' (DISCONNECT 0x8E)' : ''}`, async () => {
    const p = prefix();
    const id = h.uniqueName('same');
    const watcher = await mq({ version: v });
    await subscribe(watcher, `${p}/#`, { qos: 1 });
    const first = await mq({ version: v, clientId: id, will: { topic: `${p}/will`, payload: Buffer.from('taken'), qos: 1 } });
    const second = await mq({ version: v, clientId: id });
    if (v === 5) {
      const d = await first.disconnects.next('DISCONNECT on the first connection');
      assert.equal(d.reasonCode, 0x8e, 'Session taken over');
    }
    await h.withTimeout(first.closed, h.EVENT_TIMEOUT_MS, 'the first connection to be closed');
    // The first connection's will is sent (it ended without DISCONNECT).
    const w = await watcher.inbox.next('the will of the taken-over connection');
    assert.deepEqual([w.topic, w.payload.toString()], [`${p}/will`, 'taken']);
    // The second one works.
    assert.equal(second.connected, true);
    await subscribe(second, `${p}/second`, { qos: 1 });
    await publish(second, `${p}/second`, 'mine', { qos: 1 });
    assert.equal((await second.inbox.next()).payload.toString(), 'mine');
  });
}

// =============================================================================================
// Persistent sessions

for (const { v, name } of VERSIONS) {
  const persistent = v === 5 ? { clean: false, properties: { sessionExpiryInterval: 3600 } } : { clean: false };
  mtest(`${name}: a persistent session keeps its subscriptions and the QoS 1/2 messages published while offline`, async () => {
    const p = prefix();
    const id = h.uniqueName('meter');
    let c = await mq({ version: v, clientId: id, ...persistent });
    assert.equal(c.connack.sessionPresent, false, 'a new session must not be reported present');
    await subscribe(c, `${p}/meters/+/kwh`, { qos: 1 });
    await subscribe(c, `${p}/alarms/#`, { qos: 2 });
    await disconnect(c);

    const pub = await mq({ version: v });
    for (let i = 0; i < 3; i++) await publish(pub, `${p}/meters/7/kwh`, String(i), { qos: 1 });
    await publish(pub, `${p}/alarms/7`, 'smoke', { qos: 2 });

    c = await mq({ version: v, clientId: id, ...persistent });
    assert.equal(c.connack.sessionPresent, true, 'the stored session was not resumed');
    const got = (await c.inbox.take(4)).map((m) => [m.topic, m.payload.toString(), m.qos]);
    assert.deepEqual(got, [
      [`${p}/meters/7/kwh`, '0', 1],
      [`${p}/meters/7/kwh`, '1', 1],
      [`${p}/meters/7/kwh`, '2', 1],
      [`${p}/alarms/7`, 'smoke', 2],
    ]);
    // The subscriptions are still there for live messages, without subscribing again.
    await publish(pub, `${p}/meters/8/kwh`, 'live', { qos: 1 });
    assert.equal((await c.inbox.next('a live message on the resumed session')).payload.toString(), 'live');
    await disconnect(c);

    // A clean start discards the stored session.
    c = await mq({ version: v, clientId: id, clean: true });
    assert.equal(c.connack.sessionPresent, false, 'clean start reported a session');
    await disconnect(c);
    await publish(pub, `${p}/meters/7/kwh`, 'after-clean', { qos: 1 });
    c = await mq({ version: v, clientId: id, ...persistent });
    assert.equal(c.connack.sessionPresent, false, 'the discarded session came back');
    await subscribe(c, `${p}/meters/+/kwh`, { qos: 1 });
    await expectNothingBefore(c, pub, `${p}/meters/7/kwh`, 'a message of the discarded session was delivered');
  });
}

mtest('v5: an unacknowledged QoS 1 delivery is sent again with DUP when the session resumes', async () => {
  const t = `${prefix()}/unacked`;
  const id = h.uniqueName('slow');
  const persistent = { clean: false, properties: { sessionExpiryInterval: 3600 } };
  const seen = new h.Inbox();
  // customHandleAcks that never calls back: the PUBACK is never sent.
  let c = await mq({ version: 5, clientId: id, ...persistent, customHandleAcks: (_topic, _msg, pkt) => seen.push(pkt) });
  await subscribe(c, t, { qos: 1 });
  const pub = await mq({ version: 4 });
  await publish(pub, t, 'once', { qos: 1 });
  const first = await seen.next('the first delivery');
  assert.deepEqual([first.payload.toString(), first.dup], ['once', false]);
  await dropConnection(c);

  c = await mq({ version: 5, clientId: id, ...persistent });
  assert.equal(c.connack.sessionPresent, true);
  const again = await c.inbox.next('the redelivery');
  assert.deepEqual([again.payload.toString(), again.qos, again.dup], ['once', 1, true]);
});

// =============================================================================================
// Shared subscriptions

for (const { v, name } of VERSIONS) {
  mtest(`${name}: $share/group/filter round-robins messages across the group's members`, async () => {
    const p = prefix();
    const members = [];
    for (let i = 0; i < 3; i++) {
      const m = await mq({ version: v });
      assert.deepEqual(await subscribe(m, `$share/workers/${p}/jobs/#`, { qos: 1 }), [1]);
      members.push(m);
    }
    // A plain subscriber on the same filter gets every message, independently of the group.
    const all = await mq({ version: v });
    await subscribe(all, `${p}/jobs/#`, { qos: 1 });
    const pub = await mq({ version: v });
    const N = 12;
    for (let i = 0; i < N; i++) await publish(pub, `${p}/jobs/x`, String(i), { qos: 1 });

    assert.deepEqual((await all.inbox.take(N)).map((m) => Number(m.payload.toString())), Array.from({ length: N }, (_, i) => i));
    // Round-robin: each of the 3 members gets N/3 of them, none twice.
    const per = await Promise.all(members.map((m, i) => m.inbox.take(N / 3, `member ${i}'s share`)));
    const numbers = per.flat().map((m) => Number(m.payload.toString()));
    assert.deepEqual([...numbers].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i), 'lost or duplicated');
    // Nothing more is queued for any member: 3 more messages go one to each.
    for (let i = 0; i < 3; i++) await publish(pub, `${p}/jobs/x`, `sentinel-${i}`, { qos: 1 });
    const next = await Promise.all(members.map((m, i) => m.inbox.next(`member ${i}'s sentinel`)));
    for (const m of next) assert.match(m.payload.toString(), /^sentinel-/, `a member got more than its share: ${m.payload}`);
  });
}

// =============================================================================================
// v5 properties

mtest('v5: Content Type, Correlation Data, Response Topic, User Properties, Message Expiry go to AMQP; an AMQP reply comes back with them', async () => {
  const p = prefix();
  const service = await amqpQueueBoundTo(`${p}.req.#`);
  const requester = await mq({ version: 5 });
  await subscribe(requester, `${p}/resp/#`, { qos: 1 });

  await publish(requester, `${p}/req/temp`, '{"want":"temp"}', {
    qos: 1,
    properties: {
      contentType: 'application/json',
      responseTopic: `${p}/resp/device1`,
      correlationData: Buffer.from('corr-7'),
      userProperties: { site: 'north', floor: '2' },
      messageExpiryInterval: 60,
    },
  });
  const req = await service.inbox.next('the MQTT request on the AMQP side');
  assert.equal(req.properties.contentType, 'application/json');
  assert.equal(req.properties.replyTo, `${p}.resp.device1`);
  assert.equal(String(req.properties.correlationId), 'corr-7');
  assert.equal(req.properties.headers.site, 'north');
  assert.equal(req.properties.headers.floor, '2');
  assert.equal(String(req.properties.expiration), '60000');

  // The AMQP service replies to reply_to on amq.topic.
  await h.publishConfirmed(service.ch, 'amq.topic', req.properties.replyTo, '21.5', {
    deliveryMode: 2,
    contentType: 'text/plain',
    correlationId: req.properties.correlationId,
    headers: { unit: 'C', 'x-internal': 'hidden' },
  });
  const resp = await requester.inbox.next('the AMQP reply');
  assert.deepEqual([resp.topic, resp.payload.toString()], [`${p}/resp/device1`, '21.5']);
  const rp = resp.properties || {};
  assert.equal(rp.contentType, 'text/plain');
  assert.ok(Buffer.isBuffer(rp.correlationData) && rp.correlationData.equals(Buffer.from('corr-7')), String(rp.correlationData));
  assert.equal(rp.userProperties?.unit, 'C');
  for (const k of Object.keys(rp.userProperties || {})) assert.ok(!k.startsWith('x-'), `header ${k} went back as a User Property`);
});

mtest('v5: properties cross MQTT -> MQTT through the core (binary Correlation Data, Response Topic)', async () => {
  const p = prefix();
  const sub = await mq({ version: 5 });
  await subscribe(sub, `${p}/#`, { qos: 2 });
  const pub = await mq({ version: 5 });
  const corr = Buffer.from([0, 1, 2, 0xfe, 0xff]);
  await publish(pub, `${p}/a`, 'x', {
    qos: 2,
    properties: { contentType: 'application/octet-stream', responseTopic: `${p}/reply/here`, correlationData: corr, userProperties: { k1: 'v1', k2: 'héllo ✓' } },
  });
  const m = await sub.inbox.next();
  const mp = m.properties || {};
  assert.equal(mp.contentType, 'application/octet-stream');
  assert.equal(mp.responseTopic, `${p}/reply/here`);
  assert.ok(Buffer.isBuffer(mp.correlationData) && mp.correlationData.equals(corr), `correlation data ${mp.correlationData && mp.correlationData.toString('hex')}`);
  assert.deepEqual({ k1: mp.userProperties?.k1, k2: mp.userProperties?.k2 }, { k1: 'v1', k2: 'héllo ✓' });
});

mtest('v5: inbound Topic Aliases: a PUBLISH with an empty topic and a known alias is routed to its topic', async () => {
  const p = prefix();
  const sub = await mq({ version: 5 });
  await subscribe(sub, `${p}/#`, { qos: 1 });
  const pub = await mq({ version: 5 });
  await publish(pub, `${p}/aliased/topic`, 'first', { qos: 1, properties: { topicAlias: 3 } });
  await publish(pub, '', 'second', { qos: 1, properties: { topicAlias: 3 } });
  const got = (await sub.inbox.take(2)).map((m) => [m.topic, m.payload.toString()]);
  assert.deepEqual(got, [
    [`${p}/aliased/topic`, 'first'],
    [`${p}/aliased/topic`, 'second'],
  ]);
});

mtest('v5: Subscription Identifiers come back on the deliveries of their subscription', async () => {
  const p = prefix();
  const sub = await mq({ version: 5 });
  await subscribe(sub, `${p}/a/#`, { qos: 1, properties: { subscriptionIdentifier: 7 } });
  await subscribe(sub, `${p}/b/+`, { qos: 1, properties: { subscriptionIdentifier: 300 } });
  const pub = await mq({ version: 4 });
  await publish(pub, `${p}/a/x`, 'to-a', { qos: 1 });
  await publish(pub, `${p}/b/y`, 'to-b', { qos: 1 });
  const [a, b] = await sub.inbox.take(2);
  const ids = (m) => [].concat(m.properties?.subscriptionIdentifier ?? []);
  assert.deepEqual([a.payload.toString(), ids(a)], ['to-a', [7]]);
  assert.deepEqual([b.payload.toString(), ids(b)], ['to-b', [300]]);
});

mtest('v5: the remaining Message Expiry Interval is sent on delivery', async () => {
  const t = `${prefix()}/exp`;
  const sub = await mq({ version: 5 });
  await subscribe(sub, t, { qos: 1 });
  const pub = await mq({ version: 5 });
  await publish(pub, t, 'perishable', { qos: 1, properties: { messageExpiryInterval: 120 } });
  await publish(pub, t, 'forever', { qos: 1 });
  const [m1, m2] = await sub.inbox.take(2);
  const e = m1.properties?.messageExpiryInterval;
  assert.ok(typeof e === 'number' && e > 100 && e <= 120, `remaining expiry ${e}`);
  assert.equal(m2.properties?.messageExpiryInterval, undefined, 'a message without expiry got one');
});

mtest('v5: a CONNECT with an Authentication Method other than SCRAM is refused with 0x8C', async () => {
  // SCRAM-SHA-256 and SCRAM-SHA-1 are supported: test/mqtt_scram.test.js.
  const e = await mqRefused({ version: 5, properties: { authenticationMethod: 'GS2-KRB5' } });
  assert.equal(e.code, 0x8c, e.message);
});

mtest('v5: a Payload Format Indicator of 1 on a non-UTF-8 payload gets DISCONNECT 0x99', async () => {
  const c = await mq({ version: 5 });
  c.publish(`${prefix()}/pfi`, Buffer.from([0xff, 0xfe, 0x80]), { qos: 1, properties: { payloadFormatIndicator: true } });
  const d = await c.disconnects.next('DISCONNECT for the invalid payload');
  assert.equal(d.reasonCode, 0x99, 'Payload format invalid');
  await h.withTimeout(c.closed, h.EVENT_TIMEOUT_MS, 'close');
});

// =============================================================================================
// Errors and QoS 2 duplicates on the wire

for (const { v, name } of VERSIONS) {
  mtest(`${name}: a re-sent QoS 2 PUBLISH (same packet id, DUP) is routed once`, async () => {
    const p = prefix();
    const sub = await mq({ version: v });
    await subscribe(sub, `${p}/#`, { qos: 1 });
    const s = await rawSocket();
    s.write(connectPacket({ version: v, clientId: h.uniqueName('raw'), keepalive: 30 }));
    const pub = (dup) => packet(0x34 | (dup ? 0x08 : 0), Buffer.concat([str(`${p}/q2`), Buffer.from([0, 7]), v === 5 ? Buffer.from([0]) : Buffer.alloc(0), Buffer.from('exactly-once')]));
    s.write(pub(false));
    s.write(pub(true));
    s.write(packet(0x62, Buffer.from([0, 7]))); // PUBREL
    const m = await sub.inbox.next('the QoS 2 message');
    assert.equal(m.payload.toString(), 'exactly-once');
    const other = await mq({ version: v });
    await expectNothingBefore(sub, other, `${p}/end`, 'the re-sent QoS 2 PUBLISH was routed twice');
    const types = parsePackets(s.data).map(([t]) => t);
    assert.deepEqual(types.slice(0, 1), [2], 'CONNACK first');
    assert.ok(types.includes(5) && types.includes(7), `PUBREC and PUBCOMP expected, got ${types}`);
  });
}

mtest('a remaining length above 16 MiB closes the connection at once', async () => {
  const s = await rawSocket();
  s.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f])); // CONNECT announcing 256 MiB
  await h.withTimeout(s.ended, h.EVENT_TIMEOUT_MS, 'the broker closing the connection');
  assert.equal(s.data.length, 0, 'nothing is answered');
});

mtest('v5: a malformed packet after CONNECT gets DISCONNECT with a reason code and a close', async () => {
  const s = await rawSocket();
  s.write(connectPacket({ version: 5, clientId: h.uniqueName('bad'), keepalive: 30 }));
  s.write(packet(0x82, Buffer.from([0, 1, 0]))); // SUBSCRIBE with properties but no topic filter
  await h.withTimeout(s.ended, h.EVENT_TIMEOUT_MS, 'the broker closing the connection');
  const pkts = parsePackets(s.data);
  assert.equal(pkts[0][0], 2, 'CONNACK first');
  const d = pkts.find(([t]) => t === 14);
  assert.ok(d, `DISCONNECT expected, got ${pkts.map(([t]) => t)}`);
  assert.ok(d[1][0] >= 0x80, `reason code 0x${d[1][0].toString(16)}`);
});
