'use strict';
// MQTT 5 enhanced authentication (MQTT 5.0 4.12) with SCRAM-SHA-256 and SCRAM-SHA-1, driven by
// mqtt.js: CONNECT carries client-first-message as Authentication Data, the broker answers
// AUTH 0x18 with server-first-message, mqtt.js's `handleAuth` hook answers AUTH 0x18 with
// client-final-message, and the CONNACK carries server-final-message, which the test verifies.
// The client side of SCRAM (RFC 5802) is written here with node:crypto.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const mqtt = require('mqtt');
const h = require('../harness');

const ctx = h.setup(test);
const ttest = (name, fn) => test(name, { skip: h.isExternal && 'Tributary only' }, fn);

/** The client half of SCRAM (RFC 5802) for one exchange. */
class ScramClient {
  constructor(hash, user, password) {
    this.hash = hash; // 'sha256' or 'sha1'
    this.user = user;
    this.password = password;
    this.nonce = crypto.randomBytes(18).toString('base64');
  }

  get method() {
    return this.hash === 'sha1' ? 'SCRAM-SHA-1' : 'SCRAM-SHA-256';
  }

  clientFirst() {
    this.bare = `n=${this.user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${this.nonce}`;
    return Buffer.from(`n,,${this.bare}`);
  }

  clientFinal(serverFirst) {
    const text = serverFirst.toString();
    const f = Object.fromEntries(text.split(',').map((kv) => [kv[0], kv.slice(2)]));
    assert.ok(f.r.startsWith(this.nonce), 'the server nonce extends ours');
    const salted = crypto.pbkdf2Sync(this.password, Buffer.from(f.s, 'base64'), Number(f.i), this.hash === 'sha1' ? 20 : 32, this.hash);
    this.salted = salted;
    const clientKey = crypto.createHmac(this.hash, salted).update('Client Key').digest();
    const storedKey = crypto.createHash(this.hash).update(clientKey).digest();
    const withoutProof = `c=biws,r=${f.r}`;
    this.authMessage = `${this.bare},${text},${withoutProof}`;
    const signature = crypto.createHmac(this.hash, storedKey).update(this.authMessage).digest();
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i] ^ signature[i];
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`);
  }

  verifyServerFinal(serverFinal) {
    const text = serverFinal.toString();
    assert.ok(text.startsWith('v='), `server-final-message: ${text}`);
    const serverKey = crypto.createHmac(this.hash, this.salted).update('Server Key').digest();
    const expected = crypto.createHmac(this.hash, serverKey).update(this.authMessage).digest('base64');
    assert.equal(text.slice(2), expected, 'the server proves it knows the password');
  }
}

/**
 * Connects with SCRAM; resolves with {client, connack, auths} on CONNACK 0x00, rejects with
 * the error mqtt.js raises on a refusal (its `code` is the CONNACK reason code).
 */
function scramConnect(scram) {
  const client = mqtt.connect({
    host: ctx.broker.host,
    port: ctx.broker.mqttPort,
    protocol: 'mqtt',
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: h.EVENT_TIMEOUT_MS,
    clientId: h.uniqueName('scram'),
    properties: { authenticationMethod: scram.method, authenticationData: scram.clientFirst() },
  });
  const auths = [];
  client.handleAuth = (packet, cb) => {
    auths.push(packet);
    assert.equal(packet.reasonCode, 0x18, 'AUTH Continue authentication');
    assert.equal(packet.properties.authenticationMethod, scram.method);
    cb(null, {
      cmd: 'auth',
      reasonCode: 0x18,
      properties: { authenticationMethod: scram.method, authenticationData: scram.clientFinal(packet.properties.authenticationData) },
    });
  };
  const done = new Promise((resolve, reject) => {
    client.once('connect', (connack) => resolve({ client, connack, auths }));
    client.once('error', (e) => {
      client.end(true);
      reject(e);
    });
  });
  return h.withTimeout(done, h.EVENT_TIMEOUT_MS, 'SCRAM CONNACK');
}

const end = (client) => h.withTimeout(new Promise((resolve) => client.end(false, resolve)), h.EVENT_TIMEOUT_MS, 'MQTT end');

for (const hash of ['sha256', 'sha1']) {
  ttest(`SCRAM-${hash.toUpperCase().replace('SHA', 'SHA-')} logs in, and the CONNACK proves the server`, async () => {
    const user = h.uniqueName('scram');
    await ctx.broker.cli('user', 'add', user, 'p,a=ss word');
    await ctx.broker.cli('user', 'set_permissions', user, '.*', '.*', '.*');
    const scram = new ScramClient(hash, user, 'p,a=ss word');
    const { client, connack, auths } = await scramConnect(scram);
    assert.equal(auths.length, 1, 'one challenge round');
    assert.equal(connack.reasonCode, 0);
    assert.equal(connack.properties.authenticationMethod, scram.method);
    scram.verifyServerFinal(connack.properties.authenticationData);
    // The session works: a QoS 1 round trip through the broker.
    const topic = `${h.uniqueName('t')}/x`;
    await h.withTimeout(client.subscribeAsync(topic, { qos: 1 }), h.EVENT_TIMEOUT_MS, 'subscribe');
    const got = new Promise((resolve) => client.once('message', (t, payload) => resolve(payload.toString())));
    await h.withTimeout(client.publishAsync(topic, 'hello', { qos: 1 }), h.EVENT_TIMEOUT_MS, 'publish');
    assert.equal(await h.withTimeout(got, h.EVENT_TIMEOUT_MS, 'message'), 'hello');
    await end(client);
    assert.match(ctx.broker.stderr, new RegExp(`MQTT connection opened.*user=${user}`));
  });
}

ttest('a wrong password is refused with CONNACK 0x86', async () => {
  const user = h.uniqueName('scram');
  await ctx.broker.cli('user', 'add', user, 'right');
  const scram = new ScramClient('sha256', user, 'wrong');
  await assert.rejects(scramConnect(scram), (e) => {
    assert.equal(e.code, 0x86, `${e.message}`);
    return true;
  });
  assert.match(ctx.broker.stderr, new RegExp(`MQTT login refused peer=127\\.0\\.0\\.1:\\d+ user=${user}`));
});

ttest('an unknown method is refused with CONNACK 0x8C', async () => {
  const client = mqtt.connect({
    host: ctx.broker.host,
    port: ctx.broker.mqttPort,
    protocolVersion: 5,
    reconnectPeriod: 0,
    clientId: h.uniqueName('scram'),
    properties: { authenticationMethod: 'SCRAM-SHA-512', authenticationData: Buffer.from('n,,n=a,r=b') },
  });
  const e = await h.withTimeout(new Promise((resolve) => client.once('error', resolve)), h.EVENT_TIMEOUT_MS, 'refusal');
  client.end(true);
  assert.equal(e.code, 0x8c, e.message);
});
