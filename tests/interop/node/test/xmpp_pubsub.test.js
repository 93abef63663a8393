'use strict';
// Publish-subscribe (XEP-0060) with xmpp.js (@xmpp/client): one client creates a node on
// pubsub.localhost and publishes, another subscribes and receives the event notification;
// an unknown node is item-not-found. Tributary only.
//
// Same setup as xmpp.test.js: every test starts its own broker (every listener on
// 127.0.0.1:0, ports read back from its log), the certificate the broker generates for
// "localhost" is trusted explicitly, and every wait is bounded (h.withTimeout).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const tls = require('node:tls');
const h = require('../harness');

const DOMAIN = 'localhost';
const SVC = `pubsub.${DOMAIN}`;
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_EVENT = 'http://jabber.org/protocol/pubsub#event';
const xtest = (name, fn) => test(name, { skip: h.isExternal && 'XMPP: Tributary only' }, fn);

// xmpp.js opens TLS with tls.connect() and no way to pass a CA: trust the broker's own
// certificate for connections to "localhost" that bring no CA (verification stays on).
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
async function xmppjs() {
  xmppModule ??= await import('@xmpp/client');
  return xmppModule;
}

const XMPP_RE = /listening protocol=xmpp addr=127\.0\.0\.1:(\d+)/;

async function startXmppBroker(t) {
  const broker = await h.startBroker({});
  t.after(async () => {
    const status = await broker.stop();
    assert.ok(status && status.code === 0 && !status.killed, `broker did not stop cleanly: ${JSON.stringify(status)}`);
    assert.ok(!broker.stderr.includes('panicked at'), 'broker log contains a panic');
  });
  if (!XMPP_RE.test(broker.stderr)) {
    await h.withTimeout(
      new Promise((resolve) => {
        const onData = () => {
          if (XMPP_RE.test(broker.stderr)) {
            broker.child.stderr.off('data', onData);
            resolve();
          }
        };
        broker.child.stderr.on('data', onData);
      }),
      h.EVENT_TIMEOUT_MS,
      'the xmpp listening line',
    );
  }
  broker.xmppPort = Number(XMPP_RE.exec(broker.stderr)[1]);
  trustedCa = fs.readFileSync(path.join(broker.dataDir, 'xmpp', `${DOMAIN}.crt`));
  return broker;
}

async function addUser(broker, name) {
  const password = `pw-${name}-${crypto.randomBytes(4).toString('hex')}`;
  await broker.cli('user', 'add', name, password);
  return password;
}

/** An online xmpp.js client whose stanzas land in `inbox`; stopped after the test. */
async function onlineClient(t, broker, username, resource) {
  const { client } = await xmppjs();
  const password = await addUser(broker, username);
  const xmpp = client({
    service: `xmpp://127.0.0.1:${broker.xmppPort}`,
    domain: DOMAIN,
    resource,
    credentials: async (authenticate, mechanisms) => {
      await authenticate({ username, password }, mechanisms[0]);
    },
  });
  xmpp.reconnect.stop();
  xmpp.inbox = new h.Inbox();
  xmpp.on('stanza', (el) => xmpp.inbox.push(el));
  xmpp.on('error', () => {});
  t.after(() => h.withTimeout(xmpp.stop(), h.EVENT_TIMEOUT_MS, 'xmpp.js stop').catch(() => {}));
  await h.withTimeout(xmpp.start(), h.EVENT_TIMEOUT_MS, 'xmpp.js online');
  return xmpp;
}

async function nextStanza(xmpp, match, what) {
  const deadline = Date.now() + h.EVENT_TIMEOUT_MS;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${what}`);
    const el = await xmpp.inbox.next(what, left);
    if (match(el)) return el;
  }
}

function iq(xmpp, type, to, payload, what) {
  const call = type === 'get' ? xmpp.iqCaller.get(payload, to) : xmpp.iqCaller.set(payload, to);
  return h.withTimeout(call, h.EVENT_TIMEOUT_MS, what);
}

xtest('xmpp.js: subscribe to a pubsub node and receive a notification', async (t) => {
  const { xml } = await xmppjs();
  const broker = await startXmppBroker(t);
  const alice = await onlineClient(t, broker, 'alice', 'pub');
  const bob = await onlineClient(t, broker, 'bob', 'sub');
  // Notifications to a bare JID go to its available resources.
  await bob.send(xml('presence'));

  await iq(alice, 'set', SVC, xml('pubsub', { xmlns: NS_PUBSUB }, xml('create', { node: 'weather' })), 'create');
  const res = await iq(bob, 'set', SVC,
    xml('pubsub', { xmlns: NS_PUBSUB }, xml('subscribe', { node: 'weather', jid: `bob@${DOMAIN}` })), 'subscribe');
  const sub = res.getChild('subscription');
  assert.equal(sub.attrs.subscription, 'subscribed');
  assert.ok(sub.attrs.subid, 'a subid');

  const entry = xml('forecast', { xmlns: 'urn:example:weather' }, 'sunny');
  const pub = await iq(alice, 'set', SVC,
    xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node: 'weather' }, xml('item', { id: 'today' }, entry))), 'publish');
  assert.equal(pub.getChild('publish').getChild('item').attrs.id, 'today');

  const msg = await nextStanza(bob, (el) => el.is('message') && el.getChild('event', NS_EVENT), 'the event notification');
  assert.equal(msg.attrs.from, SVC);
  const items = msg.getChild('event', NS_EVENT).getChild('items');
  assert.equal(items.attrs.node, 'weather');
  const item = items.getChild('item');
  assert.equal(item.attrs.id, 'today');
  assert.equal(item.getChild('forecast', 'urn:example:weather').text(), 'sunny');

  // An unknown node is item-not-found (XEP-0060 §6.5.9.11).
  let err = null;
  try {
    await iq(bob, 'get', SVC, xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: 'nope' })), 'items');
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'items of an unknown node succeeded');
  assert.equal(err.condition, 'item-not-found', String(err));
});
