'use strict';
// HTTP File Upload (XEP-0363) driven by xmpp.js (@xmpp/client) for the slot and Node's own
// fetch() for the HTTP side: the upload service is found through disco, a slot is requested,
// the file is PUT with the slot's headers and read back byte for byte; a file over the limit
// gets <file-too-large/>. Tributary only; bounded waits.

const assert = require('node:assert/strict');
const h = require('../harness');
const x = require('../xmpp_support');

const { DOMAIN, NS } = x;
const UPLOAD = `upload.${DOMAIN}`;

/** fetch() bounded in time. */
function http(url, init = {}) {
  return h.withTimeout(fetch(url, { ...init, signal: AbortSignal.timeout(h.EVENT_TIMEOUT_MS) }),
    h.EVENT_TIMEOUT_MS, `${init.method || 'GET'} ${url}`);
}

x.xtest('xmpp.js: request an upload slot, PUT with fetch, GET it back', async (t) => {
  const { xml } = await x.xmppjs();
  const broker = await x.startXmppBroker(t);
  const pw = await x.addUsers(broker, 'alice');
  const alice = await x.online(t, broker, 'alice', pw.alice);

  // The service is among the server's items and says it is one (XEP-0363 §3).
  const items = await x.iq(alice, 'get', DOMAIN, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' }),
    'disco#items');
  assert.ok(items.getChildren('item').some((i) => i.attrs.jid === UPLOAD), `no ${UPLOAD} in ${items}`);
  const info = await x.iq(alice, 'get', UPLOAD, xml('query', { xmlns: NS.DISCO_INFO }), 'disco#info');
  assert.ok(info.getChildren('feature').some((f) => f.attrs.var === NS.UPLOAD));
  const form = info.getChild('x', NS.DATA);
  assert.ok(form, `no form in ${info}`);
  const max = form.getChildren('field').find((f) => f.attrs.var === 'max-file-size').getChildText('value');
  assert.equal(Number(max), 10 * 1024 * 1024);

  const body = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.from('ünïcode ☃')]);
  const filename = 'node upload ☃.bin';
  const slot = (await x.iqStanza(alice, 'get', UPLOAD, xml('request', {
    xmlns: NS.UPLOAD, filename, size: String(body.length), 'content-type': 'application/octet-stream',
  }), 'a slot')).getChild('slot', NS.UPLOAD);
  const put = slot.getChild('put');
  const get = slot.getChild('get');
  assert.ok(put.attrs.url.startsWith(`http://127.0.0.1:${broker.httpPort}/`), put.attrs.url);
  assert.ok(get.attrs.url.startsWith(`http://127.0.0.1:${broker.httpPort}/`), get.attrs.url);
  // XEP-0363 §5: the headers the slot names go with the PUT.
  const headers = { 'Content-Type': 'application/octet-stream' };
  for (const hd of put.getChildren('header')) headers[hd.attrs.name] = hd.text();

  assert.equal((await http(get.attrs.url)).status, 404, 'nothing to GET before the PUT');
  const res = await http(put.attrs.url, { method: 'PUT', headers, body });
  assert.equal(res.status, 201, await res.text());
  const back = await http(get.attrs.url);
  assert.equal(back.status, 200);
  assert.equal(back.headers.get('content-type'), 'application/octet-stream');
  assert.deepEqual(Buffer.from(await back.arrayBuffer()), body);

  // Over the limit: <not-acceptable/> with <file-too-large><max-file-size/> (XEP-0363 §4).
  const err = await x.iqError(alice, 'get', UPLOAD, xml('request', {
    xmlns: NS.UPLOAD, filename: 'huge.iso', size: String(10 * 1024 * 1024 + 1),
  }), 'a slot over the limit');
  assert.equal(err.condition, 'not-acceptable');
  const tooLarge = err.element.getChild('file-too-large', NS.UPLOAD);
  assert.ok(tooLarge, String(err.element));
  assert.equal(tooLarge.getChildText('max-file-size'), String(10 * 1024 * 1024));
});
