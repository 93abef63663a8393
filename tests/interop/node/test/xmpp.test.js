'use strict';
// XMPP with xmpp.js (@xmpp/client) against the broker's XMPP listeners: STARTTLS with each SASL
// mechanism xmpp.js speaks (SCRAM-SHA-1, PLAIN), a wrong password, direct TLS (XEP-0368),
// XMPP over WebSocket (RFC 7395, ws://127.0.0.1:PORT/xmpp-websocket), messages between a
// WebSocket and a TCP client, stream management; plus raw exchanges that need exact bytes:
// SCRAM-*-PLUS with the tls-exporter channel binding (RFC 9266, which Python's ssl cannot
// compute) and RFC 7395 framing with a malformed message. Tributary only.
//
// Every test starts its own broker (harness.startBroker: own config with every listener on
// 127.0.0.1:0, own data dir); the XMPP, XMPPS and HTTP ports are read back from its log. The
// self-signed certificate the broker generates for "localhost" (<data dir>/xmpp/localhost.crt)
// is trusted explicitly, with hostname checking on. Every wait is bounded (h.withTimeout).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const tls = require('node:tls');
const WebSocket = require('ws');
const h = require('../harness');

// Node 20 has no global WebSocket; @xmpp/websocket uses the global one.
globalThis.WebSocket ??= WebSocket;

const DOMAIN = 'localhost';
const xtest = (name, fn) => test(name, { skip: h.isExternal && 'XMPP: Tributary only' }, fn);

// xmpp.js opens TLS with tls.connect() and no way to pass a CA: add the broker's certificate to
// connections for "localhost" that bring no CA of their own (verification stays on).
// The direct-TLS transport connects to 127.0.0.1 with no server name: for the broker's xmpps
// port, name the server "localhost" (the name its certificate is for).
let trustedCa = null;
const directTlsPorts = new Set();
const originalConnect = tls.connect;
tls.connect = function connect(...args) {
  const opts = args[0];
  if (trustedCa && opts && typeof opts === 'object' && !opts.ca) {
    const forUs = (opts.servername || opts.host) === DOMAIN
      || (opts.host === '127.0.0.1' && !opts.socket && !opts.servername && directTlsPorts.has(Number(opts.port)));
    if (forUs) args[0] = { ...opts, ca: trustedCa, servername: DOMAIN };
  }
  return originalConnect.apply(this, args);
};

let xmppModule = null;
async function xmppjs() {
  xmppModule ??= await import('@xmpp/client');
  return xmppModule;
}

// ---------------------------------------------------------------------------------------------
// Broker with XMPP ports

const PORT_RES = {
  xmpp: /listening protocol=xmpp addr=127\.0\.0\.1:(\d+)/,
  xmpps: /listening protocol=xmpps addr=127\.0\.0\.1:(\d+)/,
  http: /listening protocol=http addr=127\.0\.0\.1:(\d+)/,
};

/** Start a broker and wait (bounded, on its stderr) for the XMPP, XMPPS and HTTP listeners. */
async function startXmppBroker(t, extraConfig = '') {
  const broker = await h.startBroker({ extraConfig });
  t.after(async () => {
    const status = await broker.stop();
    assert.ok(status && status.code === 0 && !status.killed, `broker did not stop cleanly: ${JSON.stringify(status)}`);
    assert.ok(!broker.stderr.includes('panicked at'), 'broker log contains a panic');
  });
  const found = () => Object.values(PORT_RES).every((re) => re.test(broker.stderr));
  if (!found()) {
    await h.withTimeout(
      new Promise((resolve) => {
        const onData = () => {
          if (found()) {
            broker.child.stderr.off('data', onData);
            resolve();
          }
        };
        broker.child.stderr.on('data', onData);
      }),
      h.EVENT_TIMEOUT_MS,
      'the xmpp, xmpps and http listening lines',
    );
  }
  for (const [k, re] of Object.entries(PORT_RES)) broker[`${k}Port`] = Number(re.exec(broker.stderr)[1]);
  broker.certPath = path.join(broker.dataDir, 'xmpp', `${DOMAIN}.crt`);
  trustedCa = fs.readFileSync(broker.certPath);
  directTlsPorts.add(broker.xmppsPort);
  return broker;
}

async function addUser(broker, name) {
  const password = `pw-${name}-${crypto.randomBytes(4).toString('hex')}`;
  await broker.cli('user', 'add', name, password);
  return password;
}

// ---------------------------------------------------------------------------------------------
// xmpp.js clients

/**
 * An xmpp.js client (no automatic reconnect). `mechanism` picks the SASL mechanism (it must be
 * offered); `offered` records what the server offered that xmpp.js supports. Stanzas arrive in
 * `inbox`. Stopped after the test.
 */
async function makeClient(t, { service, username, password, resource, mechanism }) {
  const { client } = await xmppjs();
  const offered = [];
  const xmpp = client({
    service,
    domain: DOMAIN,
    resource,
    credentials: async (authenticate, mechanisms) => {
      offered.push(...mechanisms);
      await authenticate({ username, password }, mechanism || mechanisms[0]);
    },
  });
  xmpp.reconnect.stop();
  xmpp.offered = offered;
  xmpp.inbox = new h.Inbox();
  xmpp.errors = [];
  xmpp.elements = new h.Inbox(); // every top-level element, nonzas included
  xmpp.on('stanza', (el) => xmpp.inbox.push(el));
  xmpp.on('element', (el) => xmpp.elements.push(el));
  xmpp.on('error', (e) => xmpp.errors.push(e));
  t.after(() => h.withTimeout(xmpp.stop(), h.EVENT_TIMEOUT_MS, 'xmpp.js stop').catch(() => {}));
  return xmpp;
}

async function online(xmpp) {
  return h.withTimeout(xmpp.start(), h.EVENT_TIMEOUT_MS, 'xmpp.js online');
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

// ---------------------------------------------------------------------------------------------
// Login

for (const mechanism of ['SCRAM-SHA-1', 'PLAIN']) {
  xtest(`xmpp.js: STARTTLS login with ${mechanism}`, async (t) => {
    const broker = await startXmppBroker(t);
    const password = await addUser(broker, 'alice');
    const xmpp = await makeClient(t, {
      service: `xmpp://127.0.0.1:${broker.xmppPort}`,
      username: 'alice',
      password,
      resource: 'node',
      mechanism,
    });
    const jid = await online(xmpp);
    assert.equal(jid.toString(), `alice@${DOMAIN}/node`);
    assert.ok(xmpp.offered.includes(mechanism), `offered: ${xmpp.offered}`);
    assert.ok(xmpp.socket.socket instanceof tls.TLSSocket, 'the stream is not on TLS after STARTTLS');
    assert.ok(xmpp.socket.socket.authorized, 'certificate not verified');
    // A ping to the server is answered (XEP-0199).
    const { xml } = await xmppjs();
    const res = await h.withTimeout(xmpp.iqCaller.get(xml('ping', 'urn:xmpp:ping'), DOMAIN), h.EVENT_TIMEOUT_MS, 'ping');
    assert.ok(res === undefined || res === null || res.name === 'ping', 'ping answered');
  });
}

xtest('xmpp.js: a wrong password is not-authorized', async (t) => {
  const broker = await startXmppBroker(t);
  await addUser(broker, 'alice');
  const xmpp = await makeClient(t, {
    service: `xmpp://127.0.0.1:${broker.xmppPort}`,
    username: 'alice',
    password: 'wrong',
    mechanism: 'SCRAM-SHA-1',
  });
  let err = null;
  try {
    await online(xmpp);
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'logged in with a wrong password');
  assert.equal(err.name, 'SASLError', String(err));
  assert.equal(err.condition, 'not-authorized');
});

xtest('xmpp.js: direct TLS (XEP-0368)', async (t) => {
  const broker = await startXmppBroker(t);
  const password = await addUser(broker, 'alice');
  const xmpp = await makeClient(t, {
    service: `xmpps://127.0.0.1:${broker.xmppsPort}`,
    username: 'alice',
    password,
    resource: 'direct',
  });
  const jid = await online(xmpp);
  assert.equal(jid.toString(), `alice@${DOMAIN}/direct`);
  assert.ok(xmpp.socket.socket instanceof tls.TLSSocket && xmpp.socket.socket.authorized);
  // -PLUS is offered on TLS, but xmpp.js only speaks SCRAM-SHA-1 and PLAIN.
  assert.deepEqual([...xmpp.offered].sort(), ['PLAIN', 'SCRAM-SHA-1']);
});

// ---------------------------------------------------------------------------------------------
// WebSocket (RFC 7395)

xtest('xmpp.js: WebSocket login, messages to and from a TCP client, roster, presence', async (t) => {
  const broker = await startXmppBroker(t);
  const pwA = await addUser(broker, 'alice');
  const pwB = await addUser(broker, 'bob');
  const { xml } = await xmppjs();
  const ws = await makeClient(t, {
    service: `ws://127.0.0.1:${broker.httpPort}/xmpp-websocket`,
    username: 'alice',
    password: pwA,
    resource: 'browser',
    mechanism: 'SCRAM-SHA-1',
  });
  const tcp = await makeClient(t, {
    service: `xmpp://127.0.0.1:${broker.xmppPort}`,
    username: 'bob',
    password: pwB,
    resource: 'desk',
  });
  assert.equal((await online(ws)).toString(), `alice@${DOMAIN}/browser`);
  assert.equal((await online(tcp)).toString(), `bob@${DOMAIN}/desk`);
  assert.equal(ws.socket.socket.protocol, 'xmpp', 'WebSocket subprotocol "xmpp" not negotiated');

  await ws.send(xml('message', { to: `bob@${DOMAIN}/desk`, type: 'chat' }, xml('body', {}, 'from-ws')));
  let m = await nextStanza(tcp, (el) => el.is('message') && el.getChildText('body') === 'from-ws', 'ws -> tcp');
  assert.equal(m.attrs.from, `alice@${DOMAIN}/browser`);
  await tcp.send(xml('message', { to: `alice@${DOMAIN}/browser`, type: 'chat' }, xml('body', {}, 'from-tcp')));
  m = await nextStanza(ws, (el) => el.is('message') && el.getChildText('body') === 'from-tcp', 'tcp -> ws');
  assert.equal(m.attrs.from, `bob@${DOMAIN}/desk`);

  // Roster set over WebSocket, pushed back, then fetched.
  await h.withTimeout(
    ws.iqCaller.set(xml('query', 'jabber:iq:roster', xml('item', { jid: `bob@${DOMAIN}`, name: 'Bob' }))),
    h.EVENT_TIMEOUT_MS,
    'roster set',
  );
  const roster = await h.withTimeout(ws.iqCaller.get(xml('query', 'jabber:iq:roster')), h.EVENT_TIMEOUT_MS, 'roster get');
  const items = roster.getChildren('item').map((i) => [i.attrs.jid, i.attrs.name, i.attrs.subscription]);
  assert.deepEqual(items, [[`bob@${DOMAIN}`, 'Bob', 'none']]);

  // Presence subscription across the two transports.
  await tcp.send(xml('presence'));
  await ws.send(xml('presence'));
  await ws.send(xml('presence', { to: `bob@${DOMAIN}`, type: 'subscribe' }));
  const sub = await nextStanza(tcp, (el) => el.is('presence') && el.attrs.type === 'subscribe', 'subscribe');
  assert.equal(sub.attrs.from, `alice@${DOMAIN}`);
  await tcp.send(xml('presence', { to: `alice@${DOMAIN}`, type: 'subscribed' }));
  const avail = await nextStanza(
    ws,
    (el) => el.is('presence') && !el.attrs.type && el.attrs.from === `bob@${DOMAIN}/desk`,
    "bob's presence",
  );
  assert.ok(avail);
});

xtest('xmpp.js: stream management is enabled (XEP-0198)', async (t) => {
  const broker = await startXmppBroker(t);
  const { xml } = await xmppjs();
  const password = await addUser(broker, 'alice');
  const xmpp = await makeClient(t, {
    service: `xmpp://127.0.0.1:${broker.xmppPort}`,
    username: 'alice',
    password,
    resource: 'sm',
  });
  await online(xmpp);
  const NS_SM = 'urn:xmpp:sm:3';
  const deadline = Date.now() + h.EVENT_TIMEOUT_MS;
  let el;
  do {
    el = await xmpp.elements.next('<enabled/> or <failed/>', Math.max(1, deadline - Date.now()));
  } while (!el.is('enabled', NS_SM) && !el.is('failed', NS_SM));
  assert.ok(el.is('enabled', NS_SM), `stream management refused: ${el}`);
  assert.ok(el.attrs.id, 'no resumption id');
  assert.equal(el.attrs.resume, 'true');
  assert.ok(xmpp.streamManagement.enabled);
  // The server answers <r/> with the number of stanzas it handled from us (none yet).
  await xmpp.send(xml('r', { xmlns: NS_SM }));
  do {
    el = await xmpp.elements.next('<a/>', Math.max(1, deadline - Date.now()));
  } while (!el.is('a', NS_SM));
  assert.equal(el.attrs.h, '0');
});

// ---------------------------------------------------------------------------------------------
// Raw clients

/** A raw byte-stream reader: `until(re)` resolves with the accumulated text once it matches. */
class Raw {
  constructor(socket) {
    this.attach(socket);
  }
  attach(socket) {
    this.socket = socket;
    this.buf = '';
    this.closed = false;
    this.waiters = [];
    socket.on('data', (d) => {
      this.buf += d.toString('utf8');
      this.poke();
    });
    socket.on('close', () => {
      this.closed = true;
      this.poke();
    });
    socket.on('error', () => {});
  }
  poke() {
    for (const w of this.waiters.splice(0)) w();
  }
  send(s) {
    this.socket.write(s);
  }
  /** Wait until the buffer matches `re`; returns the match and consumes the buffer up to its end. */
  until(re, what) {
    return h.withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(this.buf);
          if (m) {
            this.buf = this.buf.slice(m.index + m[0].length);
            return resolve(m);
          }
          if (this.closed) return reject(new Error(`closed while waiting for ${what}; got: ${this.buf}`));
          this.waiters.push(check);
        };
        check();
      }),
      h.EVENT_TIMEOUT_MS,
      `${what} (buffer: ${this.buf.slice(-500)})`,
    );
  }
}

const HEADER = `<?xml version='1.0'?><stream:stream to='${DOMAIN}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;
const SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';

async function starttlsRaw(t, broker) {
  const sock = net.connect(broker.xmppPort, '127.0.0.1');
  t.after(() => sock.destroy());
  const raw = new Raw(sock);
  raw.send(HEADER);
  await raw.until(/<\/stream:features>/, 'features');
  raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  await raw.until(/<proceed[^>]*\/>/, 'proceed');
  const secure = tls.connect({ socket: sock, servername: DOMAIN, ca: trustedCa });
  t.after(() => secure.destroy());
  await h.withTimeout(new Promise((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject)), h.EVENT_TIMEOUT_MS, 'TLS');
  assert.ok(secure.authorized, 'certificate not verified');
  raw.attach(secure);
  raw.send(HEADER);
  const f = await raw.until(/<stream:features>([\s\S]*?)<\/stream:features>/, 'features after TLS');
  return { raw, secure, features: f[1] };
}

function scramProof(hash, password, salt, iterations, authMessage) {
  const salted = crypto.pbkdf2Sync(password, salt, iterations, hash === 'sha1' ? 20 : 32, hash);
  const clientKey = crypto.createHmac(hash, salted).update('Client Key').digest();
  const storedKey = crypto.createHash(hash).update(clientKey).digest();
  const sig = crypto.createHmac(hash, storedKey).update(authMessage).digest();
  const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]));
  const serverKey = crypto.createHmac(hash, salted).update('Server Key').digest();
  return { proof, serverSig: crypto.createHmac(hash, serverKey).update(authMessage).digest() };
}

async function scramPlus(raw, { hash, user, password, cbType, cbData }) {
  const mech = hash === 'sha1' ? 'SCRAM-SHA-1-PLUS' : 'SCRAM-SHA-256-PLUS';
  const gs2 = `p=${cbType},,`;
  const cnonce = crypto.randomBytes(18).toString('base64');
  const firstBare = `n=${user},r=${cnonce}`;
  raw.send(`<auth xmlns='${SASL}' mechanism='${mech}'>${Buffer.from(gs2 + firstBare).toString('base64')}</auth>`);
  const ch = await raw.until(/<challenge[^>]*>([^<]*)<\/challenge>|<failure[\s\S]*?<\/failure>/, 'challenge');
  if (!ch[1]) return { outcome: 'failure', element: ch[0] };
  const serverFirst = Buffer.from(ch[1], 'base64').toString();
  const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
  assert.ok(attrs.r.startsWith(cnonce));
  const cbind = Buffer.concat([Buffer.from(gs2), cbData]).toString('base64');
  const finalWithoutProof = `c=${cbind},r=${attrs.r}`;
  const authMessage = `${firstBare},${serverFirst},${finalWithoutProof}`;
  const { proof, serverSig } = scramProof(hash, password, Buffer.from(attrs.s, 'base64'), Number(attrs.i), authMessage);
  raw.send(`<response xmlns='${SASL}'>${Buffer.from(`${finalWithoutProof},p=${proof.toString('base64')}`).toString('base64')}</response>`);
  const res = await raw.until(/<success[^>]*\/>|<success[^>]*>([^<]*)<\/success>|<failure[\s\S]*?<\/failure>/, 'outcome');
  if (res[0].startsWith('<failure')) return { outcome: 'failure', element: res[0] };
  assert.equal(Buffer.from(res[1] || '', 'base64').toString(), `v=${serverSig.toString('base64')}`, 'server signature');
  return { outcome: 'success', element: res[0] };
}

for (const hash of ['sha256', 'sha1']) {
  xtest(`raw: SCRAM-${hash === 'sha1' ? 'SHA-1' : 'SHA-256'}-PLUS with tls-exporter (RFC 9266)`, async (t) => {
    const broker = await startXmppBroker(t);
    const password = await addUser(broker, 'alice');
    const { raw, secure, features } = await starttlsRaw(t, broker);
    assert.match(features, /<channel-binding[^>]*type=['"]tls-exporter['"]/, 'tls-exporter not advertised (XEP-0440)');
    assert.equal(secure.getProtocol(), 'TLSv1.3');
    const cbData = secure.exportKeyingMaterial(32, 'EXPORTER-Channel-Binding');
    const r = await scramPlus(raw, { hash, user: 'alice', password, cbType: 'tls-exporter', cbData });
    assert.equal(r.outcome, 'success', r.element);
    raw.send(HEADER);
    await raw.until(/<bind xmlns=['"]urn:ietf:params:xml:ns:xmpp-bind['"]/, 'post-auth features');
  });
}

xtest('raw: SCRAM-SHA-256-PLUS with a foreign tls-exporter value fails', async (t) => {
  const broker = await startXmppBroker(t);
  const password = await addUser(broker, 'alice');
  const { raw } = await starttlsRaw(t, broker);
  const r = await scramPlus(raw, { hash: 'sha256', user: 'alice', password, cbType: 'tls-exporter', cbData: Buffer.alloc(32, 7) });
  assert.equal(r.outcome, 'failure');
  assert.match(r.element, /<not-authorized\/>/);
});

xtest('raw WebSocket: RFC 7395 framing, then a malformed message gets a stream error and <close/>', async (t) => {
  const broker = await startXmppBroker(t);
  const sock = new WebSocket(`ws://127.0.0.1:${broker.httpPort}/xmpp-websocket`, ['xmpp']);
  t.after(() => sock.terminate());
  const inbox = new h.Inbox();
  const closed = new Promise((resolve) => sock.once('close', (code) => resolve(code)));
  sock.on('message', (data) => inbox.push(data.toString()));
  sock.on('error', () => {});
  await h.once(sock, 'open', 'WebSocket open');
  assert.equal(sock.protocol, 'xmpp');
  sock.send(`<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='${DOMAIN}' version='1.0'/>`);
  const open = await inbox.next('<open/>');
  assert.match(open, /^<open [^>]*xmlns=['"]urn:ietf:params:xml:ns:xmpp-framing['"]/, open);
  assert.match(open, /from=['"]localhost['"]/);
  assert.match(open, /\/>$/, 'RFC 7395 §3.3.2: <open/> is a complete (empty) element');
  const features = await inbox.next('features');
  // Each message is a complete document: the streams namespace is declared in it (as
  // xmlns:stream on <stream:features/>, or as the default namespace of <features/>).
  assert.match(
    features,
    /^(<stream:features[^>]*xmlns:stream=|<features[^>]*xmlns=)['"]http:\/\/etherx\.jabber\.org\/streams['"]/,
    features,
  );
  assert.doesNotMatch(features, /starttls/, 'no STARTTLS over WebSocket (RFC 7395 §3.6)');
  // One WebSocket message must be one complete element; this one is not well-formed.
  sock.send('<message><body>x</message>');
  const err = await inbox.next('stream error');
  assert.match(err, /^<(stream:)?error[\s\S]*<not-well-formed xmlns=['"]urn:ietf:params:xml:ns:xmpp-streams['"]/, err);
  const close = await inbox.next('<close/>');
  assert.match(close, /^<close [^>]*xmlns=['"]urn:ietf:params:xml:ns:xmpp-framing['"]/, close);
  await h.withTimeout(closed, h.EVENT_TIMEOUT_MS, 'WebSocket close');
});
