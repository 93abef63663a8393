'use strict';
// Message Archive Management (XEP-0313) with Result Set Management paging (XEP-0059), driven by
// xmpp.js (@xmpp/client): 30 chat messages between two accounts, then the sender's archive paged
// forwards ten at a time (after=<last>), the last page asked for with an empty <before/>, a
// `with` filter, and the XEP's error for an unknown id. Tributary only; bounded waits.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const x = require('../xmpp_support');

const { DOMAIN, NS } = x;
const TOTAL = 30;
const PAGE = 10;

/** A MAM query form of `fields` ({var: value}) and an RSM <set/> of `set` ({max, after, before}). */
function query(xml, queryid, fields, set) {
  const children = [];
  if (fields) {
    const form = xml('x', { xmlns: NS.DATA, type: 'submit' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS.MAM)));
    for (const [k, v] of Object.entries(fields)) form.append(xml('field', { var: k }, xml('value', {}, v)));
    children.push(form);
  }
  if (set) {
    const s = xml('set', { xmlns: NS.RSM });
    for (const [k, v] of Object.entries(set)) s.append(xml(k, {}, v));
    children.push(s);
  }
  return xml('query', { xmlns: NS.MAM, queryid }, ...children);
}

/**
 * Runs one archive query; resolves with the bodies of its <result/> messages (in order), their
 * archive ids, and the <fin/> element. Results arrive before the IQ result (XEP-0313 §4.2).
 */
async function runQuery(client, xml, fields, set) {
  const queryid = crypto.randomBytes(4).toString('hex');
  const res = await x.iqStanza(client, 'set', undefined, query(xml, queryid, fields, set), 'a MAM query');
  const fin = res.getChild('fin', NS.MAM);
  const bodies = [];
  const ids = [];
  // Everything the query sent is already in the inbox, before the IQ result.
  while (client.inbox.length) {
    const el = await client.inbox.next();
    const result = el.is('message') && el.getChild('result', NS.MAM);
    if (!result || result.attrs.queryid !== queryid) continue;
    const fwd = result.getChild('forwarded', NS.FORWARD);
    assert.ok(fwd.getChild('delay', NS.DELAY)?.attrs.stamp, 'each result carries its delay stamp');
    bodies.push(fwd.getChild('message').getChildText('body'));
    ids.push(result.attrs.id);
  }
  assert.ok(fin, `no <fin/>: ${res}`);
  return { bodies, ids, fin };
}

const rsm = (fin, name) => fin.getChild('set', NS.RSM)?.getChildText(name);

x.xtest('xmpp.js: MAM query of 30 messages paged by RSM, filters and errors', async (t) => {
  const { xml } = await x.xmppjs();
  const broker = await x.startXmppBroker(t);
  const pw = await x.addUsers(broker, 'alice', 'bob', 'carol');
  const alice = await x.online(t, broker, 'alice', pw.alice);
  const bob = await x.online(t, broker, 'bob', pw.bob);
  const carol = await x.online(t, broker, 'carol', pw.carol);
  await bob.send(xml('presence'));
  await carol.send(xml('presence'));

  const sent = [];
  for (let i = 0; i < TOTAL; i++) {
    sent.push(`message ${i}`);
    await alice.send(xml('message', { to: `bob@${DOMAIN}`, type: 'chat' }, xml('body', {}, `message ${i}`)));
  }
  // One message to carol, which the `with` filter must leave out.
  await alice.send(xml('message', { to: `carol@${DOMAIN}`, type: 'chat' }, xml('body', {}, 'to carol')));
  for (const body of sent) {
    await x.nextStanza(bob, (el) => el.is('message') && el.getChildText('body') === body, body);
  }
  await x.nextStanza(carol, (el) => el.is('message') && el.getChildText('body') === 'to carol', 'to carol');
  // Drop what alice received so far (nothing is expected, but the inbox must start empty).
  while (alice.inbox.length) await alice.inbox.next();

  // Forwards, PAGE at a time, until the server says complete.
  const seen = [];
  let after = null;
  for (let page = 0; ; page++) {
    assert.ok(page <= TOTAL / PAGE, 'paging does not end');
    const set = { max: String(PAGE), ...(after !== null && { after }) };
    const { bodies, ids, fin } = await runQuery(alice, xml, { with: `bob@${DOMAIN}` }, set);
    assert.equal(rsm(fin, 'count'), String(TOTAL));
    if (bodies.length) {
      assert.equal(rsm(fin, 'first'), ids[0]);
      assert.equal(rsm(fin, 'last'), ids[ids.length - 1]);
      assert.equal(fin.getChild('set', NS.RSM).getChild('first').attrs.index, String(seen.length));
    }
    seen.push(...bodies);
    if (fin.attrs.complete === 'true') break;
    assert.equal(bodies.length, PAGE);
    after = rsm(fin, 'last');
  }
  assert.deepEqual(seen, sent, 'every message once, in order');

  // The last page: an empty <before/>.
  const last = await runQuery(alice, xml, { with: `bob@${DOMAIN}` }, { max: String(PAGE), before: '' });
  assert.deepEqual(last.bodies, sent.slice(TOTAL - PAGE));
  assert.equal(last.fin.getChild('set', NS.RSM).getChild('first').attrs.index, String(TOTAL - PAGE));
  // And the page before it.
  const before = await runQuery(alice, xml, { with: `bob@${DOMAIN}` },
    { max: String(PAGE), before: rsm(last.fin, 'first') });
  assert.deepEqual(before.bodies, sent.slice(TOTAL - 2 * PAGE, TOTAL - PAGE));

  // Without a filter: carol's message too; the recipient's archive has the same messages.
  const all = await runQuery(alice, xml, null, { max: '100' });
  assert.deepEqual(all.bodies, [...sent, 'to carol']);
  assert.equal(all.fin.attrs.complete, 'true');
  const bobs = await runQuery(bob, xml, { with: `alice@${DOMAIN}` }, { max: '100' });
  assert.deepEqual(bobs.bodies, sent);

  // XEP-0059 §2.6 / XEP-0313 §4.3.2: an id that is not in the archive is item-not-found.
  const err = await x.iqError(alice, 'set', undefined,
    query(xml, 'bad', null, { max: '5', after: '999999999' }), 'a query after an unknown id');
  assert.equal(err.condition, 'item-not-found');
});
