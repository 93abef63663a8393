'use strict';
// Shared setup for the xmpp.js (@xmpp/client) suites of XEP-0045, -0060/0163, -0313 and -0363:
// a broker per test (every listener on 127.0.0.1:0, the XMPP and HTTP ports read back from its
// log), accounts created with the broker's CLI, online clients whose stanzas land in an inbox,
// and bounded waits only (harness.withTimeout). Tributary only: the tests skip against an
// external RabbitMQ.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const tls = require('node:tls');
const h = require('./harness');

/** The broker's XMPP domain. */
const DOMAIN = 'localhost';

/** Namespaces used by the suites. */
const NS = {
  MUC: 'http://jabber.org/protocol/muc',
  MUC_USER: 'http://jabber.org/protocol/muc#user',
  MUC_ADMIN: 'http://jabber.org/protocol/muc#admin',
  MUC_OWNER: 'http://jabber.org/protocol/muc#owner',
  PUBSUB: 'http://jabber.org/protocol/pubsub',
  PUBSUB_EVENT: 'http://jabber.org/protocol/pubsub#event',
  MAM: 'urn:xmpp:mam:2',
  RSM: 'http://jabber.org/protocol/rsm',
  FORWARD: 'urn:xmpp:forward:0',
  DATA: 'jabber:x:data',
  CAPS: 'http://jabber.org/protocol/caps',
  DISCO_INFO: 'http://jabber.org/protocol/disco#info',
  UPLOAD: 'urn:xmpp:http:upload:0',
  DELAY: 'urn:xmpp:delay',
};

/** `test` that skips against an external broker (XMPP is Tributary only). */
const xtest = (name, fn) => test(name, { skip: h.isExternal && 'XMPP: Tributary only' }, fn);

// xmpp.js opens TLS (STARTTLS) with tls.connect() and no way to pass a CA: trust the broker's
// own certificate for connections to "localhost" that bring no CA (verification stays on).
let trustedCa = null;
const originalConnect = tls.connect;
tls.connect = function connect(...args) {
  const opts = args[0];
  if (trustedCa && opts && typeof opts === 'object' && !opts.ca && (opts.servername || opts.host) === DOMAIN) {
    args[0] = { ...opts, ca: trustedCa, servername: DOMAIN };
  }
  return originalConnect.apply(this, args);
};

let xmppModule = null;
/** The @xmpp/client module (an ES module, loaded once). */
async function xmppjs() {
  xmppModule ??= await import('@xmpp/client');
  return xmppModule;
}

const PORT_RES = {
  xmpp: /listening protocol=xmpp addr=127\.0\.0\.1:(\d+)/,
  http: /listening protocol=http addr=127\.0\.0\.1:(\d+)/,
};

/**
 * Starts a broker for test `t` (stopped after it, which must be clean and panic-free);
 * `broker.xmppPort` and `broker.httpPort` are set.
 */
async function startXmppBroker(t, opts = {}) {
  const broker = await h.startBroker(opts);
  t.after(async () => {
    const status = await broker.stop();
    assert.ok(status && status.code === 0 && !status.killed, `broker did not stop cleanly: ${JSON.stringify(status)}`);
    assert.ok(!broker.stderr.includes('panicked at'), 'broker log contains a panic');
  });
  const found = () => Object.values(PORT_RES).every((re) => re.test(broker.stderr));
  if (!found()) {
    await h.withTimeout(new Promise((resolve) => {
      const onData = () => {
        if (found()) {
          broker.child.stderr.off('data', onData);
          resolve();
        }
      };
      broker.child.stderr.on('data', onData);
    }), h.EVENT_TIMEOUT_MS, 'the xmpp and http listening lines');
  }
  for (const [k, re] of Object.entries(PORT_RES)) broker[`${k}Port`] = Number(re.exec(broker.stderr)[1]);
  trustedCa = fs.readFileSync(path.join(broker.dataDir, 'xmpp', `${DOMAIN}.crt`));
  return broker;
}

/** Creates the accounts `names` with the broker's CLI; resolves with {name: password}. */
async function addUsers(broker, ...names) {
  const pw = {};
  for (const name of names) {
    pw[name] = `pw-${name}-${crypto.randomBytes(4).toString('hex')}`;
    await broker.cli('user', 'add', name, pw[name]);
  }
  return pw;
}

/**
 * An online xmpp.js client (TCP with STARTTLS) whose incoming stanzas land in `xmpp.inbox`;
 * stopped after test `t`. `setup(xmpp)` runs before the client starts (e.g. iqCallee handlers).
 */
async function online(t, broker, username, password, { resource = 'node', setup } = {}) {
  const { client } = await xmppjs();
  const xmpp = client({
    service: `xmpp://127.0.0.1:${broker.xmppPort}`,
    domain: DOMAIN,
    resource,
    credentials: { username, password },
  });
  xmpp.reconnect.stop();
  xmpp.inbox = new h.Inbox();
  xmpp.on('stanza', (el) => xmpp.inbox.push(el));
  xmpp.on('error', () => {});
  if (setup) setup(xmpp);
  t.after(() => h.withTimeout(xmpp.stop(), h.EVENT_TIMEOUT_MS, 'xmpp.js stop').catch(() => {}));
  await h.withTimeout(xmpp.start(), h.EVENT_TIMEOUT_MS, 'xmpp.js online');
  return xmpp;
}

/** The next stanza in `xmpp.inbox` for which `match` holds; the others are dropped (bounded). */
async function nextStanza(xmpp, match, what) {
  const deadline = Date.now() + h.EVENT_TIMEOUT_MS;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${what}`);
    const el = await xmpp.inbox.next(what, left);
    if (match(el)) return el;
  }
}

/** An IQ get or set with `payload` to `to`; resolves with the result's child (bounded). */
function iq(xmpp, type, to, payload, what) {
  const call = type === 'get' ? xmpp.iqCaller.get(payload, to) : xmpp.iqCaller.set(payload, to);
  return h.withTimeout(call, h.EVENT_TIMEOUT_MS, what);
}

/** An IQ get or set with `payload` to `to`; resolves with the whole result stanza (bounded). */
async function iqStanza(xmpp, type, to, payload, what) {
  const { xml } = await xmppjs();
  return h.withTimeout(xmpp.iqCaller.request(xml('iq', { type, to }, payload)), h.EVENT_TIMEOUT_MS, what);
}

/** The stanza error condition of an IQ that must fail. */
async function iqError(xmpp, type, to, payload, what) {
  let err = null;
  try {
    await iq(xmpp, type, to, payload, what);
  } catch (e) {
    err = e;
  }
  assert.ok(err, `${what} succeeded`);
  assert.ok(err.condition, `${what}: not a stanza error: ${err}`);
  return err;
}

/** RFC 6121 §3: `a` and `b` subscribe to each other's presence. */
async function mutualSubscription(a, b, xml) {
  for (const [x, y] of [[a, b], [b, a]]) {
    const yBare = y.jid.bare().toString();
    const xBare = x.jid.bare().toString();
    await x.send(xml('presence', { to: yBare, type: 'subscribe' }));
    await nextStanza(y, (el) => el.is('presence') && el.attrs.type === 'subscribe'
      && el.attrs.from.startsWith(xBare), `${yBare} asked by ${xBare}`);
    await y.send(xml('presence', { to: xBare, type: 'subscribed' }));
    await nextStanza(x, (el) => el.is('presence') && el.attrs.type === 'subscribed'
      && el.attrs.from.startsWith(yBare), `${xBare} approved by ${yBare}`);
  }
}

module.exports = {
  DOMAIN,
  NS,
  addUsers,
  iq,
  iqError,
  iqStanza,
  mutualSubscription,
  nextStanza,
  online,
  startXmppBroker,
  xmppjs,
  xtest,
};
