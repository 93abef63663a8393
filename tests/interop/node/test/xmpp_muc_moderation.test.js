'use strict';
// Multi-User Chat (XEP-0045) moderation and history, driven by xmpp.js (@xmpp/client): the
// owner of an instant room and two participants talk; a late joiner asks for the last two
// messages (<history maxstanzas='2'/>) and gets exactly them, with the room's <delay/>, before
// the subject; a participant may not kick (<forbidden/>); the owner kicks with a reason (307
// to the kicked occupant, with 110, and to the others), after which the kicked user's
// groupchat is refused with <not-acceptable/>. Tributary only; bounded waits.

const assert = require('node:assert/strict');
const x = require('../xmpp_support');

const { DOMAIN, NS } = x;
const ROOM = `moderated@conference.${DOMAIN}`;

const statusCodes = (el) => (el.getChild('x', NS.MUC_USER)?.getChildren('status') || []).map((s) => s.attrs.code);
const fromOccupant = (nick) => (el) => el.attrs.from === `${ROOM}/${nick}`;
const groupchat = (body) => (el) => el.is('message') && el.attrs.type === 'groupchat' && el.getChildText('body') === body;

/** Joins ROOM as `nick` with `history` attributes; resolves with the history bodies, then the self-presence. */
async function join(xmpp, nick, xml, history) {
  const x0 = xml('x', { xmlns: NS.MUC }, ...(history ? [xml('history', history)] : []));
  await xmpp.send(xml('presence', { to: `${ROOM}/${nick}` }, x0));
  const self = await x.nextStanza(xmpp, (el) => el.is('presence') && fromOccupant(nick)(el)
    && statusCodes(el).includes('110'), `self-presence of ${nick}`);
  const bodies = [];
  for (;;) {
    const el = await x.nextStanza(xmpp, (e) => e.is('message') && e.attrs.from?.startsWith(ROOM), `history or subject for ${nick}`);
    if (el.getChild('subject')) break;
    const delay = el.getChild('delay', NS.DELAY);
    assert.ok(delay && delay.attrs.from === ROOM && delay.attrs.stamp, `history without the room's delay: ${el}`);
    bodies.push(el.getChildText('body'));
  }
  return { self, bodies };
}

const kick = (xml, nick, reason) => xml('query', { xmlns: NS.MUC_ADMIN },
  xml('item', { nick, role: 'none' }, xml('reason', {}, reason)));

x.xtest('xmpp.js: MUC history on join, kick by a moderator, forbidden to a participant', async (t) => {
  const { xml } = await x.xmppjs();
  const broker = await x.startXmppBroker(t);
  const pw = await x.addUsers(broker, 'alice', 'bob', 'carol');
  const alice = await x.online(t, broker, 'alice', pw.alice);
  const bob = await x.online(t, broker, 'bob', pw.bob);
  const carol = await x.online(t, broker, 'carol', pw.carol);

  const created = await join(alice, 'Alice', xml);
  assert.ok(statusCodes(created.self).includes('201'), 'a new room says 201');
  await x.iq(alice, 'set', ROOM,
    xml('query', { xmlns: NS.MUC_OWNER }, xml('x', { xmlns: NS.DATA, type: 'submit' })), 'instant room');
  await join(bob, 'Bob', xml);

  const said = ['one', 'two', 'three', 'four'];
  for (const [i, body] of said.entries()) {
    const [speaker, nick] = i % 2 ? [bob, 'Bob'] : [alice, 'Alice'];
    await speaker.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, body)));
    const echo = await x.nextStanza(speaker, groupchat(body), `the echo of ${body}`);
    assert.equal(echo.attrs.from, `${ROOM}/${nick}`);
  }

  // History on join: exactly the last two, oldest first, before the subject.
  const late = await join(carol, 'Carol', xml, { maxstanzas: '2' });
  assert.deepEqual(late.bodies, said.slice(-2));
  assert.equal(late.self.getChild('x', NS.MUC_USER).getChild('item').attrs.role, 'participant');

  // A participant may not kick (XEP-0045 §8.2: only moderators).
  const denied = await x.iqError(carol, 'set', ROOM, kick(xml, 'Bob', 'no'), 'a kick by a participant');
  assert.equal(denied.condition, 'forbidden');

  // The owner (a moderator) kicks Bob.
  await x.iq(alice, 'set', ROOM, kick(xml, 'Bob', 'too loud'), 'the kick');
  const gone = await x.nextStanza(bob, (el) => el.is('presence') && fromOccupant('Bob')(el)
    && el.attrs.type === 'unavailable', 'Bob told he was kicked');
  assert.deepEqual(statusCodes(gone).sort(), ['110', '307']);
  const item = gone.getChild('x', NS.MUC_USER).getChild('item');
  assert.equal(item.attrs.role, 'none');
  assert.equal(item.getChildText('reason'), 'too loud');
  assert.equal(item.getChild('actor').attrs.nick, 'Alice');
  for (const c of [alice, carol]) {
    const p = await x.nextStanza(c, (el) => el.is('presence') && fromOccupant('Bob')(el)
      && el.attrs.type === 'unavailable', 'the others told Bob was kicked');
    assert.deepEqual(statusCodes(p), ['307']);
  }

  // Bob is no occupant any more: his groupchat is refused (§7.4).
  await bob.send(xml('message', { to: ROOM, type: 'groupchat', id: 'after-kick' }, xml('body', {}, 'still here?')));
  const refused = await x.nextStanza(bob, (el) => el.is('message') && el.attrs.type === 'error'
    && el.attrs.id === 'after-kick', 'the error for a non-occupant');
  assert.ok(refused.getChild('error').getChild('not-acceptable'), String(refused));
  // The room goes on without him.
  await carol.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'quiet now')));
  await x.nextStanza(alice, groupchat('quiet now'), 'alice sees carol');
});
