'use strict';
// Multi-User Chat (XEP-0045) with xmpp.js (@xmpp/client): one occupant over TCP (STARTTLS),
// another over WebSocket; an instant room is created, both join, and groupchat messages are
// reflected to both occupants (the sender included), a late message shows in the history
// of a third occupant. Tributary only. Every wait is bounded (h.withTimeout).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const tls = require('node:tls');
const WebSocket = require('ws');
const h = require('../harness');

globalThis.WebSocket ??= WebSocket;

const DOMAIN = 'localhost';
const ROOM = `nodes@conference.${DOMAIN}`;
const NS_MUC = 'http://jabber.org/protocol/muc';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const xtest = (name, fn) => test(name, { skip: h.isExternal && 'XMPP: Tributary only' }, fn);

// xmpp.js gives no way to pass a CA: trust the broker's certificate for "localhost" (as
// xmpp.test.js does; verification stays on).
let trustedCa = null;
const originalConnect = tls.connect;
tls.connect = function connect(...args) {
  const opts = args[0];
  if (trustedCa && opts && typeof opts === 'object' && !opts.ca && (opts.servername || opts.host) === DOMAIN) {
    args[0] = { ...opts, ca: trustedCa, servername: DOMAIN };
  }
  return originalConnect.apply(this, args);
};

const PORT_RES = {
  xmpp: /listening protocol=xmpp addr=127\.0\.0\.1:(\d+)/,
  http: /listening protocol=http addr=127\.0\.0\.1:(\d+)/,
};

async function startXmppBroker(t) {
  const broker = await h.startBroker({});
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

async function addUser(broker, name) {
  const password = `pw-${name}-${crypto.randomBytes(4).toString('hex')}`;
  await broker.cli('user', 'add', name, password);
  return password;
}

async function connect(t, service, username, password) {
  const { client } = await import('@xmpp/client');
  const xmpp = client({ service, domain: DOMAIN, resource: 'node', credentials: { username, password } });
  xmpp.reconnect.stop();
  xmpp.inbox = new h.Inbox();
  xmpp.on('stanza', (el) => xmpp.inbox.push(el));
  xmpp.on('error', () => {});
  t.after(() => h.withTimeout(xmpp.stop(), h.EVENT_TIMEOUT_MS, 'xmpp.js stop').catch(() => {}));
  await h.withTimeout(xmpp.start(), h.EVENT_TIMEOUT_MS, 'xmpp.js online');
  return xmpp;
}

/** The next stanza for which `match` holds; the others are dropped (bounded). */
async function nextStanza(xmpp, match, what) {
  const deadline = Date.now() + h.EVENT_TIMEOUT_MS;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${what}`);
    const el = await xmpp.inbox.next(what, left);
    if (match(el)) return el;
  }
}

const statusCodes = (el) => (el.getChild('x', NS_MUC_USER)?.getChildren('status') || []).map((s) => s.attrs.code);

/** Joins ROOM as `nick`; resolves with the self-presence, after the subject arrived. */
async function join(xmpp, nick, xml) {
  await xmpp.send(xml('presence', { to: `${ROOM}/${nick}` }, xml('x', { xmlns: NS_MUC })));
  const self = await nextStanza(xmpp, (el) => el.is('presence') && el.attrs.from === `${ROOM}/${nick}`
    && statusCodes(el).includes('110'), `self-presence of ${nick}`);
  await nextStanza(xmpp, (el) => el.is('message') && el.getChild('subject'), `the subject for ${nick}`);
  return self;
}

const groupchat = (body) => (el) => el.is('message') && el.attrs.type === 'groupchat' && el.getChildText('body') === body;

xtest('xmpp.js: an instant room, groupchat between a TCP and a WebSocket occupant, history', async (t) => {
  const broker = await startXmppBroker(t);
  const pw = {};
  for (const name of ['alice', 'bob', 'carol']) pw[name] = await addUser(broker, name);
  const { xml } = await import('@xmpp/client');
  const alice = await connect(t, `xmpp://127.0.0.1:${broker.xmppPort}`, 'alice', pw.alice);
  const bob = await connect(t, `ws://127.0.0.1:${broker.httpPort}/xmpp-websocket`, 'bob', pw.bob);

  const created = await join(alice, 'Alice', xml);
  assert.ok(statusCodes(created).includes('201'), 'a new room says 201');
  // XEP-0045 §10.1.2: an empty submitted form makes it an instant room.
  await h.withTimeout(alice.iqCaller.set(
    xml('query', { xmlns: 'http://jabber.org/protocol/muc#owner' }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' })),
    ROOM,
  ), h.EVENT_TIMEOUT_MS, 'instant room');

  const bobSelf = await join(bob, 'Bob', xml);
  assert.equal(bobSelf.getChild('x', NS_MUC_USER).getChild('item').attrs.role, 'participant');
  await nextStanza(alice, (el) => el.is('presence') && el.attrs.from === `${ROOM}/Bob`, 'Bob joining');

  await alice.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'hello from tcp')));
  for (const c of [alice, bob]) {
    const m = await nextStanza(c, groupchat('hello from tcp'), 'the groupchat from alice');
    assert.equal(m.attrs.from, `${ROOM}/Alice`);
  }
  await bob.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'hello from ws')));
  for (const c of [alice, bob]) {
    const m = await nextStanza(c, groupchat('hello from ws'), 'the groupchat from bob');
    assert.equal(m.attrs.from, `${ROOM}/Bob`);
    const sid = m.getChild('stanza-id', 'urn:xmpp:sid:0');
    assert.ok(sid && sid.attrs.by === ROOM, 'the room stamps its archive id');
  }

  // A late joiner gets both messages as history, stamped by the room, before the subject.
  const carol = await connect(t, `xmpp://127.0.0.1:${broker.xmppPort}`, 'carol', pw.carol);
  await carol.send(xml('presence', { to: `${ROOM}/Carol` },
    xml('x', { xmlns: NS_MUC }, xml('history', { maxstanzas: '10' }))));
  const history = [];
  for (;;) {
    const el = await nextStanza(carol, (e) => e.is('message'), 'history or subject');
    if (el.getChild('subject')) break;
    assert.equal(el.getChild('delay', 'urn:xmpp:delay').attrs.from, ROOM);
    history.push(el.getChildText('body'));
  }
  assert.deepEqual(history, ['hello from tcp', 'hello from ws']);
});
