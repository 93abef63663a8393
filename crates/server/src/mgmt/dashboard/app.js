// Tributary's dashboard: plain JavaScript, no dependencies, no build step.
// Logs in with HTTP basic auth against the management API (the credentials
// stay in this tab's sessionStorage), then polls the API every two seconds.
// Everything shown is set with textContent: names from clients are never
// parsed as HTML.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const HISTORY = 90; // points kept per chart line (three minutes)
  // The protocols shown: these first, then any other the broker reports.
  const PROTOCOLS = ['amqp', 'mqtt', 'xmpp'];
  const LABELS = { amqp: 'AMQP 0-9-1', mqtt: 'MQTT', xmpp: 'XMPP', coap: 'CoAP' };
  const COLORS = { amqp: '#c2410c', mqtt: '#1d4ed8', xmpp: '#15803d', coap: '#7e22ce' };
  const label = (p) => LABELS[p] || p.toUpperCase();
  const color = (p) => COLORS[p] || '#6b7280';
  const AUTH_KEY = 'tributary.auth';
  const USER_KEY = 'tributary.user';

  const $ = (id) => document.getElementById(id);
  const state = {
    auth: sessionStorage.getItem(AUTH_KEY),
    timer: null,
    generation: 0, // bumped on every view change: stale refresh loops stop
    history: { publish: {}, deliver: {} },
    queues: [],
    sort: { key: 'name', reverse: false },
    search: '',
    armed: null, // the connection whose close button was pressed once
  };
  function track(p) {
    if (PROTOCOLS.includes(p)) return;
    PROTOCOLS.push(p);
    renderLegend();
  }
  for (const p of PROTOCOLS) {
    state.history.publish[p] = [];
    state.history.deliver[p] = [];
  }

  /** Makes an element: el('td', {class: 'num'}, 'text', child...). */
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function basic(user, password) {
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return `Basic ${btoa(bin)}`;
  }

  /** One API call; the parsed JSON (null for 204). */
  async function api(path, { method = 'GET', body, headers = {} } = {}) {
    const r = await fetch(`/api${path}`, {
      method,
      cache: 'no-store',
      headers: {
        Authorization: state.auth,
        // Asks the broker not to send a WWW-Authenticate challenge, so the
        // browser never pops up its own login dialog over ours.
        'X-Requested-With': 'XMLHttpRequest',
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401) {
      logout('The broker refused the credentials; log in again.');
      throw new Error('not authorized');
    }
    if (!r.ok) {
      let reason = r.statusText;
      try {
        reason = (await r.json()).reason || reason;
      } catch {
        /* not JSON */
      }
      throw new Error(`${r.status} ${reason}`);
    }
    return r.status === 204 ? null : r.json();
  }

  const enc = encodeURIComponent;
  const fmt = (n) => (typeof n === 'number' ? n.toLocaleString('en') : '');
  const rate = (n) => (typeof n === 'number' ? n.toFixed(1) : '0.0');
  const stat = (q, name) => (q.message_stats && q.message_stats[name]) || 0;
  const statRate = (q, name) => {
    const d = q.message_stats && q.message_stats[`${name}_details`];
    return d ? d.rate : 0;
  };
  function bytes(n) {
    if (typeof n !== 'number') return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
  }

  function setStatus(text) {
    $('status').textContent = text;
  }

  // ---- login ----------------------------------------------------------

  async function login(ev) {
    ev.preventDefault();
    const user = $('login-user').value;
    const auth = basic(user, $('login-password').value);
    $('login-error').textContent = '';
    let r;
    try {
      r = await fetch('/api/whoami', {
        cache: 'no-store',
        headers: { Authorization: auth, 'X-Requested-With': 'XMLHttpRequest' },
      });
    } catch (e) {
      $('login-error').textContent = `Cannot reach the broker: ${e.message}`;
      return;
    }
    if (!r.ok) {
      $('login-error').textContent =
        r.status === 401 ? 'Login failed: wrong user name or password.' : `Login refused (${r.status}).`;
      return;
    }
    const who = await r.json();
    state.auth = auth;
    sessionStorage.setItem(AUTH_KEY, auth);
    sessionStorage.setItem(USER_KEY, `${who.name} (${who.tags.join(', ') || 'no tags'})`);
    $('login-password').value = '';
    route();
  }

  function logout(message = '') {
    state.auth = null;
    sessionStorage.removeItem(AUTH_KEY);
    sessionStorage.removeItem(USER_KEY);
    $('login-error').textContent = message;
    route();
  }

  // ---- views ----------------------------------------------------------

  function show(view) {
    for (const id of ['login-view', 'main-view', 'queue-view']) $(id).hidden = id !== view;
    const loggedIn = view !== 'login-view';
    $('nav').hidden = !loggedIn;
    $('who').hidden = !loggedIn;
    $('whoami').textContent = loggedIn ? sessionStorage.getItem(USER_KEY) || '' : '';
  }

  /** The view for the location's hash: `#/` or `#/queues/{vhost}/{name}`. */
  function route() {
    clearTimeout(state.timer);
    state.timer = null;
    state.generation += 1;
    if (!state.auth) {
      show('login-view');
      $('login-user').focus();
      return;
    }
    const m = /^#\/queues\/([^/]+)\/(.+)$/.exec(location.hash);
    if (m) {
      show('queue-view');
      poll(() => refreshQueue(decodeURIComponent(m[1]), decodeURIComponent(m[2])));
    } else {
      show('main-view');
      poll(refreshMain);
    }
  }

  /** Runs `refresh` now and every REFRESH_MS until the view changes. */
  function poll(refresh) {
    const generation = ++state.generation;
    const current = () => state.auth && generation === state.generation;
    const tick = async () => {
      try {
        await refresh();
        if (current()) setStatus(`Updated ${new Date().toLocaleTimeString('en-GB')}`);
      } catch (e) {
        if (current()) setStatus(`Update failed: ${e.message}`);
      }
      if (current()) state.timer = setTimeout(tick, REFRESH_MS);
    };
    tick();
  }

  // ---- overview -------------------------------------------------------

  async function refreshMain() {
    const [overview, queues, connections] = await Promise.all([
      api('/overview'),
      api('/queues'),
      api('/connections'),
    ]);
    renderProtocols(overview);
    state.queues = queues;
    renderQueues();
    renderConnections(connections);
  }

  function renderProtocols(o) {
    const protocols = o.protocols || {};
    for (const p of Object.keys(protocols)) {
      if (!state.history.publish[p]) {
        // A protocol seen for the first time: zeros before it, so its line lines up.
        state.history.publish[p] = state.history.publish.amqp.map(() => 0);
        state.history.deliver[p] = state.history.deliver.amqp.map(() => 0);
      }
      track(p);
    }
    const cards = PROTOCOLS.map((p) => {
      const s = protocols[p] || {};
      const pub = (s.publish_details && s.publish_details.rate) || 0;
      const del = (s.deliver_details && s.deliver_details.rate) || 0;
      push(state.history.publish[p], pub);
      push(state.history.deliver[p], del);
      const sessionsLabel = p === 'amqp' ? 'Channels' : 'Sessions';
      return el(
        'article',
        { class: 'card', 'data-protocol': p, 'aria-labelledby': `card-${p}` },
        el('h3', { id: `card-${p}` }, swatch(p), label(p)),
        el(
          'dl',
          {},
          el('dt', {}, 'Connections'),
          el('dd', { 'data-field': 'connections' }, fmt(s.connections || 0)),
          el('dt', {}, sessionsLabel),
          el('dd', { 'data-field': 'sessions' }, fmt(s.sessions || 0)),
          el('dt', {}, 'Published/s'),
          el('dd', { 'data-field': 'publish_rate' }, rate(pub)),
          el('dt', {}, 'Delivered/s'),
          el('dd', { 'data-field': 'deliver_rate' }, rate(del)),
          el('dt', {}, 'Published'),
          el('dd', { 'data-field': 'published' }, fmt(s.messages_published || 0)),
          el('dt', {}, 'Delivered'),
          el('dd', { 'data-field': 'delivered' }, fmt(s.messages_delivered || 0)),
        ),
      );
    });
    $('protocols').replaceChildren(...cards);
    const t = o.object_totals || {};
    const q = o.queue_totals || {};
    $('totals').textContent =
      `${fmt(q.messages || 0)} messages queued (${fmt(q.messages_ready || 0)} ready, ` +
      `${fmt(q.messages_unacknowledged || 0)} unacknowledged) in ${fmt(t.queues || 0)} queues; ` +
      `${fmt(t.consumers || 0)} consumers; ${fmt(t.exchanges || 0)} exchanges.`;
    drawChart($('chart-publish'), state.history.publish, 'published');
    drawChart($('chart-deliver'), state.history.deliver, 'delivered');
  }

  function swatch(p) {
    const s = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    s.style.background = color(p);
    return s;
  }

  function renderLegend() {
    $('legend').replaceChildren(...PROTOCOLS.map((p) => el('li', {}, swatch(p), label(p))));
  }

  function push(line, value) {
    line.push(value);
    if (line.length > HISTORY) line.shift();
  }

  /** A line per protocol on a canvas; the canvas' label says the latest values. */
  function drawChart(canvas, lines, verb) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const pad = { l: 44, r: 8, t: 8, b: 18 };
    let max = 1;
    for (const p of PROTOCOLS) for (const v of lines[p]) max = Math.max(max, v);
    max = niceCeil(max);
    const style = getComputedStyle(document.body);
    g.strokeStyle = style.getPropertyValue('--grid').trim() || '#ddd';
    g.fillStyle = style.getPropertyValue('--muted').trim() || '#666';
    g.font = '11px system-ui, sans-serif';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ((h - pad.t - pad.b) * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, y);
      g.lineTo(w - pad.r, y);
      g.stroke();
      g.fillText(String(+((max * (4 - i)) / 4).toFixed(2)), 4, y + 4);
    }
    g.fillText(`last ${(HISTORY * REFRESH_MS) / 60000} min`, pad.l, h - 4);
    const x = (i) => pad.l + ((w - pad.l - pad.r) * i) / (HISTORY - 1);
    const y = (v) => h - pad.b - ((h - pad.t - pad.b) * v) / max;
    g.lineWidth = 2;
    for (const p of PROTOCOLS) {
      const line = lines[p];
      const offset = HISTORY - line.length;
      g.strokeStyle = color(p);
      g.beginPath();
      line.forEach((v, i) => (i === 0 ? g.moveTo(x(i + offset), y(v)) : g.lineTo(x(i + offset), y(v))));
      g.stroke();
    }
    const now = PROTOCOLS.map((p) => `${label(p)} ${rate(lines[p][lines[p].length - 1])}`).join(', ');
    canvas.setAttribute('aria-label', `Messages ${verb} per second now: ${now}`);
  }

  function niceCeil(v) {
    const e = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (v <= m * e) return m * e;
    return 10 * e;
  }

  // ---- queues ---------------------------------------------------------

  const sortValue = {
    publish_rate: (q) => statRate(q, 'publish'),
    deliver_rate: (q) => statRate(q, 'deliver_get'),
  };

  function sortedQueues() {
    const needle = state.search.trim().toLowerCase();
    const rows = state.queues.filter((q) => !needle || q.name.toLowerCase().includes(needle));
    const { key, reverse } = state.sort;
    const value = sortValue[key] || ((q) => q[key]);
    rows.sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      let c = typeof va === 'number' && typeof vb === 'number' ? va - vb : String(va).localeCompare(String(vb));
      if (c === 0) c = a.name.localeCompare(b.name) || a.vhost.localeCompare(b.vhost);
      return reverse ? -c : c;
    });
    return rows;
  }

  function renderQueues() {
    for (const th of document.querySelectorAll('#queue-table th[data-key]')) {
      const on = th.dataset.key === state.sort.key;
      if (on) th.setAttribute('aria-sort', state.sort.reverse ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    const rows = sortedQueues();
    const body = rows.map((q) =>
      el(
        'tr',
        { 'data-queue': q.name, 'data-vhost': q.vhost },
        el('td', {}, q.vhost),
        el('td', {}, el('a', { href: `#/queues/${enc(q.vhost)}/${enc(q.name)}` }, q.name)),
        el('td', { class: 'num', 'data-col': 'messages' }, fmt(q.messages)),
        el('td', { class: 'num', 'data-col': 'messages_ready' }, fmt(q.messages_ready)),
        el('td', { class: 'num', 'data-col': 'messages_unacknowledged' }, fmt(q.messages_unacknowledged)),
        el('td', { class: 'num', 'data-col': 'consumers' }, fmt(q.consumers)),
        el('td', { class: 'num', 'data-col': 'publish_rate' }, rate(statRate(q, 'publish'))),
        el('td', { class: 'num', 'data-col': 'deliver_rate' }, rate(statRate(q, 'deliver_get'))),
      ),
    );
    if (body.length === 0) {
      const text = state.queues.length ? 'No queue matches the search.' : 'No queues.';
      body.push(el('tr', {}, el('td', { colspan: 8, class: 'empty' }, text)));
    }
    $('queue-table').tBodies[0].replaceChildren(...body);
    $('queue-count').textContent = `${rows.length} of ${state.queues.length} queues`;
  }

  function sortBy(key) {
    if (state.sort.key === key) state.sort.reverse = !state.sort.reverse;
    else state.sort = { key, reverse: false };
    renderQueues();
  }

  // ---- connections ----------------------------------------------------

  function renderConnections(conns) {
    const rows = conns.map((c) => {
      const armed = state.armed === c.name;
      const button = el(
        'button',
        {
          type: 'button',
          class: armed ? 'danger armed' : 'danger',
          'aria-label': armed ? `Confirm closing connection ${c.name}` : `Close connection ${c.name}`,
          onclick: () => closeConnection(c.name),
        },
        armed ? 'Confirm close' : 'Close',
      );
      return el(
        'tr',
        { 'data-connection': c.name },
        el('td', {}, c.name),
        el('td', {}, c.protocol),
        el('td', {}, c.user),
        el('td', {}, c.vhost),
        el('td', {}, c.client_id),
        el('td', {}, c.ssl ? 'yes' : 'no'),
        el('td', { class: 'num' }, bytes(c.recv_oct)),
        el('td', { class: 'num' }, bytes(c.send_oct)),
        el('td', {}, button),
      );
    });
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 9, class: 'empty' }, 'No connections.')));
    $('connection-table').tBodies[0].replaceChildren(...rows);
  }

  /** The first press arms the button, the second closes the connection. */
  async function closeConnection(name) {
    if (state.armed !== name) {
      state.armed = name;
      const b = document.querySelector(`tr[data-connection="${CSS.escape(name)}"] button`);
      if (b) {
        b.textContent = 'Confirm close';
        b.classList.add('armed');
        b.setAttribute('aria-label', `Confirm closing connection ${name}`);
      }
      return;
    }
    state.armed = null;
    try {
      await api(`/connections/${enc(name)}`, {
        method: 'DELETE',
        headers: { 'X-Reason': 'Closed from the Tributary dashboard' },
      });
      setStatus(`Closed connection ${name}`);
    } catch (e) {
      setStatus(`Could not close ${name}: ${e.message}`);
    }
  }

  // ---- one queue ------------------------------------------------------

  async function refreshQueue(vhost, name) {
    const path = `/queues/${enc(vhost)}/${enc(name)}`;
    const [q, bindings] = await Promise.all([api(path), api(`${path}/bindings`)]);
    $('queue-h').textContent = `Queue ${q.name}`;
    const props = [
      ['Virtual host', q.vhost],
      ['Durable', q.durable ? 'yes' : 'no'],
      ['Auto-delete', q.auto_delete ? 'yes' : 'no'],
      ['Exclusive', q.exclusive ? 'yes' : 'no'],
      ['Messages', fmt(q.messages)],
      ['Ready', fmt(q.messages_ready)],
      ['Unacknowledged', fmt(q.messages_unacknowledged)],
      ['Bytes ready', bytes(q.message_bytes_ready)],
      ['Consumers', fmt(q.consumers)],
      ['Arguments', JSON.stringify(q.arguments || {})],
    ];
    $('queue-props').replaceChildren(...props.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    const counters = [
      ['Published', 'publish'],
      ['Delivered or got', 'deliver_get'],
      ['Acknowledged', 'ack'],
      ['Redelivered', 'redeliver'],
    ];
    $('queue-counters').tBodies[0].replaceChildren(
      ...counters.map(([label, key]) =>
        el(
          'tr',
          { 'data-counter': key },
          el('th', { scope: 'row' }, label),
          el('td', { class: 'num' }, fmt(stat(q, key))),
          el('td', { class: 'num' }, rate(statRate(q, key))),
        ),
      ),
    );
    const brows = bindings.map((b) =>
      el(
        'tr',
        {},
        el('td', {}, b.source === '' ? '(default exchange)' : b.source),
        el('td', {}, b.routing_key),
        el('td', {}, JSON.stringify(b.arguments || {})),
      ),
    );
    $('queue-bindings').tBodies[0].replaceChildren(...brows);
    const consumers = (q.consumer_details || []).map((c) =>
      el(
        'tr',
        {},
        el('td', {}, c.consumer_tag),
        el('td', {}, c.channel_details ? c.channel_details.number : ''),
        el('td', {}, c.ack_required ? 'yes' : 'no'),
        el('td', {}, c.exclusive ? 'yes' : 'no'),
      ),
    );
    if (consumers.length === 0) consumers.push(el('tr', {}, el('td', { colspan: 4, class: 'empty' }, 'No consumers.')));
    $('queue-consumers').tBodies[0].replaceChildren(...consumers);
  }

  // ---- wiring ---------------------------------------------------------

  function init() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout(''));
    $('queue-search').addEventListener('input', (e) => {
      state.search = e.target.value;
      renderQueues();
    });
    for (const th of document.querySelectorAll('#queue-table th[data-key]')) {
      th.querySelector('button').addEventListener('click', () => sortBy(th.dataset.key));
    }
    for (const a of document.querySelectorAll('#nav a[data-jump]')) {
      a.addEventListener('click', (e) => {
        e.preventDefault();
        if (location.hash !== '#/' && location.hash !== '') location.hash = '#/';
        const target = $(a.dataset.jump);
        target.scrollIntoView();
        target.focus();
      });
    }
    renderLegend();
    window.addEventListener('hashchange', route);
    route();
  }

  init();
})();
