'use strict';
// Publish-subscribe (XEP-0060) item retraction driven by xmpp.js (@xmpp/client): two
// subscribers of a node on pubsub.localhost get the publish notification, then the
// <retract id/> notification (§7.2.2.1) when the publisher retracts the item with notify='true';
// the item is gone from the node afterwards, and retracting it again is item-not-found.
// Tributary only; bounded waits.

const assert = require('node:assert/strict');
const x = require('../xmpp_support');

const { DOMAIN, NS } = x;
const SVC = `pubsub.${DOMAIN}`;
const NODE = 'alerts';

const pubsub = (xml, child) => xml('pubsub', { xmlns: NS.PUBSUB }, child);
const eventItems = (el) => el.is('message') && el.attrs.from === SVC
  && el.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');

x.xtest('xmpp.js: two subscribers are told of a publish and of its retraction', async (t) => {
  const { xml } = await x.xmppjs();
  const broker = await x.startXmppBroker(t);
  const pw = await x.addUsers(broker, 'alice', 'bob', 'carol');
  const alice = await x.online(t, broker, 'alice', pw.alice);
  const subs = [await x.online(t, broker, 'bob', pw.bob), await x.online(t, broker, 'carol', pw.carol)];

  await x.iq(alice, 'set', SVC, pubsub(xml, xml('create', { node: NODE })), 'create');
  for (const s of subs) {
    // Notifications to a bare JID go to its available resources.
    await s.send(xml('presence'));
    const res = await x.iq(s, 'set', SVC,
      pubsub(xml, xml('subscribe', { node: NODE, jid: s.jid.bare().toString() })), 'subscribe');
    assert.equal(res.getChild('subscription').attrs.subscription, 'subscribed');
  }

  await x.iq(alice, 'set', SVC, pubsub(xml, xml('publish', { node: NODE },
    xml('item', { id: 'a1' }, xml('alert', { xmlns: 'urn:example:alert' }, 'fire')))), 'publish');
  for (const s of subs) {
    const items = eventItems(await x.nextStanza(s, eventItems, 'the publish notification'));
    assert.equal(items.attrs.node, NODE);
    assert.equal(items.getChild('item').attrs.id, 'a1');
  }

  await x.iq(alice, 'set', SVC, pubsub(xml, xml('retract', { node: NODE, notify: 'true' }, xml('item', { id: 'a1' }))),
    'retract');
  for (const s of subs) {
    const items = eventItems(await x.nextStanza(s, (el) => eventItems(el)?.getChild('retract'),
      'the retract notification'));
    assert.equal(items.attrs.node, NODE);
    assert.equal(items.getChild('retract').attrs.id, 'a1');
  }

  // The item is gone: the node has no items, and a second retraction is item-not-found.
  const left = await x.iq(subs[0], 'get', SVC, pubsub(xml, xml('items', { node: NODE })), 'items');
  assert.equal(left.getChild('items').getChildren('item').length, 0);
  const err = await x.iqError(alice, 'set', SVC,
    pubsub(xml, xml('retract', { node: NODE }, xml('item', { id: 'a1' }))), 'a second retract');
  assert.equal(err.condition, 'item-not-found');
});
