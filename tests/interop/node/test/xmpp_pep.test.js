'use strict';
// PEP (XEP-0163) avatar notifications filtered by entity capabilities (XEP-0115), driven by
// xmpp.js (@xmpp/client): every client announces its capabilities in presence (<c/> with a
// SHA-1 `ver` computed here as XEP-0115 §5.1 says) and answers the server's disco#info query
// for `node#ver`. A contact whose features include urn:xmpp:avatar:metadata+notify is told of
// the avatar metadata (XEP-0084) and fetches the data; a contact interested only in nicknames
// (XEP-0172) is not told of the avatar, but is of the nickname. Tributary only; bounded waits.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('../harness');
const x = require('../xmpp_support');

const { DOMAIN, NS } = x;
const CAPS_NODE = 'https://tributary.example/node-tests';
const AVATAR_DATA = 'urn:xmpp:avatar:data';
const AVATAR_META = 'urn:xmpp:avatar:metadata';
const NICK = 'http://jabber.org/protocol/nick';
const IDENTITY = { category: 'client', type: 'bot', name: 'tributary node test' };

/** XEP-0115 §5.1: the verification string of one identity and `features`, SHA-1, base64. */
function capsVer(features) {
  let s = `${IDENTITY.category}/${IDENTITY.type}//${IDENTITY.name}<`;
  for (const f of [...features].sort()) s += `${f}<`;
  return crypto.createHash('sha1').update(s, 'utf8').digest('base64');
}

/**
 * An online client that answers disco#info (for its caps node or none) with `features`, and
 * whose initial presence carries the matching <c/>. `asked` resolves when the server queried it.
 */
async function capsClient(t, broker, name, password, features, xml) {
  const ver = capsVer(features);
  let resolveAsked;
  const asked = new Promise((resolve) => { resolveAsked = resolve; });
  const client = await x.online(t, broker, name, password, {
    setup(xmpp) {
      xmpp.iqCallee.get(NS.DISCO_INFO, 'query', (ctx) => {
        const node = ctx.element.attrs.node;
        resolveAsked({ from: ctx.stanza.attrs.from, node });
        return xml('query', { xmlns: NS.DISCO_INFO, ...(node && { node }) },
          xml('identity', IDENTITY),
          ...features.map((f) => xml('feature', { var: f })));
      });
    },
  });
  await client.send(xml('presence', {}, xml('c', { xmlns: NS.CAPS, hash: 'sha-1', node: CAPS_NODE, ver })));
  client.asked = asked;
  client.ver = ver;
  return client;
}

const pepEvent = (from, node) => (el) => el.is('message') && el.attrs.from === from
  && el.getChild('event', NS.PUBSUB_EVENT)?.getChild('items')?.attrs.node === node;

x.xtest('xmpp.js: PEP avatar metadata goes to contacts whose caps say +notify', async (t) => {
  const { xml } = await x.xmppjs();
  const broker = await x.startXmppBroker(t);
  const pw = await x.addUsers(broker, 'alice', 'bob', 'carol');
  const base = [NS.DISCO_INFO, NS.CAPS];
  const alice = await capsClient(t, broker, 'alice', pw.alice, [...base, `${NICK}+notify`], xml);
  const bob = await capsClient(t, broker, 'bob', pw.bob, [...base, `${AVATAR_META}+notify`], xml);
  const carol = await capsClient(t, broker, 'carol', pw.carol, [...base, 'urn:xmpp:ping', `${NICK}+notify`], xml);

  // The server resolves each unknown `ver` with a disco#info query to that resource.
  for (const c of [alice, bob, carol]) {
    const q = await h.withTimeout(c.asked, h.EVENT_TIMEOUT_MS, 'the server\'s disco#info query');
    assert.equal(q.node, `${CAPS_NODE}#${c.ver}`);
  }
  await x.mutualSubscription(alice, bob, xml);
  await x.mutualSubscription(alice, carol, xml);

  const png = Buffer.from('\x89PNG not really an image', 'latin1');
  const id = crypto.createHash('sha1').update(png).digest('hex');
  const pubsub = (publish) => xml('pubsub', { xmlns: NS.PUBSUB }, publish);
  await x.iq(alice, 'set', undefined, pubsub(xml('publish', { node: AVATAR_DATA },
    xml('item', { id }, xml('data', { xmlns: AVATAR_DATA }, png.toString('base64'))))), 'publish avatar data');
  await x.iq(alice, 'set', undefined, pubsub(xml('publish', { node: AVATAR_META },
    xml('item', { id }, xml('metadata', { xmlns: AVATAR_META },
      xml('info', { id, bytes: String(png.length), type: 'image/png' }))))), 'publish avatar metadata');
  await x.iq(alice, 'set', undefined, pubsub(xml('publish', { node: NICK },
    xml('item', { id: 'current' }, xml('nick', { xmlns: NICK }, 'Alice')))), 'publish nick');

  // bob is told of the metadata, from alice's bare JID, and fetches the data it names.
  const meta = await x.nextStanza(bob, pepEvent(`alice@${DOMAIN}`, AVATAR_META), 'the avatar metadata event');
  const info = meta.getChild('event', NS.PUBSUB_EVENT).getChild('items').getChild('item')
    .getChild('metadata', AVATAR_META).getChild('info');
  assert.equal(info.attrs.id, id);
  assert.equal(info.attrs.bytes, String(png.length));
  const items = await x.iq(bob, 'get', `alice@${DOMAIN}`,
    xml('pubsub', { xmlns: NS.PUBSUB }, xml('items', { node: AVATAR_DATA }, xml('item', { id }))), 'avatar data');
  const data = items.getChild('items').getChild('item').getChildText('data', AVATAR_DATA);
  assert.deepEqual(Buffer.from(data, 'base64'), png);

  // carol's first PEP event is the nickname: nothing from the avatar nodes came before it.
  const first = await x.nextStanza(carol, (el) => el.is('message') && el.getChild('event', NS.PUBSUB_EVENT),
    'carol\'s first PEP event');
  const node = first.getChild('event', NS.PUBSUB_EVENT).getChild('items').attrs.node;
  assert.equal(node, NICK);
  assert.equal(first.getChild('event', NS.PUBSUB_EVENT).getChild('items').getChild('item')
    .getChildText('nick', NICK), 'Alice');
  // alice (nick+notify) gets her own nickname on her own resource too.
  await x.nextStanza(alice, pepEvent(`alice@${DOMAIN}`, NICK), 'alice\'s own nick event');
});

