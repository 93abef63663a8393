'use strict';
// Test harness for the amqplib interop suite.
//
// Starts a real `tributary` broker as docs/TESTING-CONTRACT.md describes (own config, own
// temporary data directory, port 0, the chosen port read back from stderr), or, when
// TRIBUTARY_TEST_TARGET=rabbitmq:HOST:PORT is set, points the same tests at an external
// RabbitMQ so that the expectations themselves can be checked against the reference broker.
// The MQTT listener's port is read the same way (`listening protocol=mqtt addr=...`) and exposed
// as broker.mqttPort; against an external RabbitMQ it is TRIBUTARY_TEST_MQTT_PORT (unset: null,
// and the MQTT tests skip).

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const amqp = require('amqplib');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.TRIBUTARY_BIN || path.join(REPO_ROOT, 'target', 'debug', 'tributary');
const LISTEN_RE = /listening protocol=amqp addr=(\S+)/;
const LISTEN_MQTT_RE = /listening protocol=mqtt addr=(\S+)/;
const LISTEN_HTTP_RE = /listening protocol=http addr=(\S+)/;
const START_TIMEOUT_MS = Number(process.env.TRIBUTARY_START_TIMEOUT_MS || 20000);
const STOP_TIMEOUT_MS = 10000;
// Upper bound for any single awaited event in a test.
const EVENT_TIMEOUT_MS = 10000;

/** Parsed TRIBUTARY_TEST_TARGET, or null when the tests start their own broker. */
function externalTarget() {
  const t = process.env.TRIBUTARY_TEST_TARGET;
  if (!t) return null;
  const m = /^rabbitmq:([^:]+):(\d+)$/.exec(t);
  if (!m) throw new Error(`TRIBUTARY_TEST_TARGET must look like rabbitmq:HOST:PORT, got ${JSON.stringify(t)}`);
  return { host: m[1], port: Number(m[2]) };
}

const EXTERNAL = externalTarget();
/** True when running against an external RabbitMQ (tests needing our CLI or log skip). */
const isExternal = EXTERNAL !== null;

/** Reject with a descriptive error if `promise` does not settle within `ms`. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolve with the arguments of the next `event` on `emitter` (bounded in time). */
function once(emitter, event, what = event, ms = EVENT_TIMEOUT_MS) {
  return withTimeout(
    new Promise((resolve) => emitter.once(event, (...args) => resolve(args.length <= 1 ? args[0] : args))),
    ms,
    what,
  );
}

/** A unique name for queues and exchanges, so tests never see each other's resources. */
function uniqueName(prefix) {
  return `${prefix}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
}

class Broker {
  constructor({ host, port, mqttPort = null, child, dataDir, tmpDir }) {
    this.host = host;
    this.port = port;
    this.mqttPort = mqttPort; // null when the broker has no MQTT listener we know of
    this.httpPort = null; // the HTTP listener (management API, dashboard), when known
    this.child = child || null;
    this.dataDir = dataDir || null;
    this.tmpDir = tmpDir || null;
    this.stderr = '';
    this.exited = null; // promise resolving to {code, signal} once the child is gone
  }

  get external() {
    return this.child === null;
  }

  url({ user = 'guest', password = 'guest', vhost = '/' } = {}) {
    return `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${this.host}:${this.port}/${encodeURIComponent(vhost)}`;
  }

  /** mqtt://HOST:PORT of the MQTT listener. */
  mqttUrl() {
    if (this.mqttPort === null) throw new Error('this broker has no known MQTT listener');
    return `mqtt://${this.host}:${this.mqttPort}`;
  }

  /** Open a connection; an 'error' listener is attached so that server closes never crash the test process. */
  async connect(opts = {}) {
    const conn = await withTimeout(amqp.connect(this.url(opts), opts.socketOptions), EVENT_TIMEOUT_MS, 'connection');
    conn.errors = [];
    conn.on('error', (e) => conn.errors.push(e));
    conn.closed = new Promise((resolve) => conn.once('close', resolve));
    return conn;
  }

  /** Run the broker CLI against this broker's data dir (`tributary ARGS... --data-dir DIR`). */
  cli(...args) {
    if (this.external) throw new Error('the tributary CLI is not available against an external broker');
    return new Promise((resolve, reject) => {
      execFile(BIN, [...args, '--data-dir', this.dataDir], { timeout: EVENT_TIMEOUT_MS }, (err, stdout, stderr) => {
        if (err) {
          err.message += `\nstdout: ${stdout}\nstderr: ${stderr}`;
          reject(err);
        } else resolve({ stdout, stderr });
      });
    });
  }

  /** Send SIGTERM and wait (bounded) for exit; SIGKILL after STOP_TIMEOUT_MS. Then remove the temp dir. */
  async stop() {
    if (this.external) return null;
    let status = null;
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      try {
        status = await withTimeout(this.exited, STOP_TIMEOUT_MS, 'broker exit after SIGTERM');
      } catch {
        this.child.kill('SIGKILL');
        status = await withTimeout(this.exited, STOP_TIMEOUT_MS, 'broker exit after SIGKILL');
        status.killed = true;
      }
    } else {
      status = await this.exited;
    }
    if (this.tmpDir) fs.rmSync(this.tmpDir, { recursive: true, force: true });
    return status;
  }
}

/** Start a broker (or describe the external one). */
async function startBroker({ extraConfig = '' } = {}) {
  if (EXTERNAL) {
    const mqttPort = process.env.TRIBUTARY_TEST_MQTT_PORT ? Number(process.env.TRIBUTARY_TEST_MQTT_PORT) : null;
    return new Broker({ host: EXTERNAL.host, port: EXTERNAL.port, mqttPort });
  }

  if (!fs.existsSync(BIN)) {
    throw new Error(`broker binary ${BIN} not found: build it (cargo build -p tributary) or set TRIBUTARY_BIN`);
  }
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-node-'));
  const dataDir = path.join(tmpDir, 'data');
  fs.mkdirSync(dataDir);
  const configPath = path.join(tmpDir, 'tributary.toml');
  fs.writeFileSync(
    configPath,
    [
      '[listeners]',
      'amqp = "127.0.0.1:0"',
      'mqtt = "127.0.0.1:0"',
      'http = "127.0.0.1:0"',
      'xmpp = "127.0.0.1:0"',
      'xmpps = "127.0.0.1:0"',
      'mqtts = "127.0.0.1:0"',
      'amqps = "127.0.0.1:0"',
      'https = "127.0.0.1:0"',
      'cluster = ""',
      'xmpp_server = "127.0.0.1:0"',
      'xmpps_server = "127.0.0.1:0"',
      '',
      '[amqp]',
      'heartbeat = 60',
      'frame_max = 131072',
      'channel_max = 2047',
      '',
      '[log]',
      'level = "info"',
      '',
      extraConfig,
    ].join('\n'),
  );

  const child = spawn(BIN, ['serve', '--config', configPath, '--data-dir', dataDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  const broker = new Broker({ host: '127.0.0.1', port: 0, child, dataDir, tmpDir });
  broker.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  // Both listeners are configured: wait for both "listening" lines (in either order).
  const addr = new Promise((resolve, reject) => {
    let found = false;
    let amqpAddr = null;
    let mqttAddr = null;
    let httpAddr = null;
    child.once('error', reject);
    child.stderr.setEncoding('utf8');
    // Keep draining stderr for the broker's whole life so it never blocks on a full pipe.
    child.stderr.on('data', (chunk) => {
      broker.stderr += chunk;
      if (!found) {
        amqpAddr = amqpAddr || (LISTEN_RE.exec(broker.stderr) || [])[1] || null;
        mqttAddr = mqttAddr || (LISTEN_MQTT_RE.exec(broker.stderr) || [])[1] || null;
        httpAddr = httpAddr || (LISTEN_HTTP_RE.exec(broker.stderr) || [])[1] || null;
        if (amqpAddr && mqttAddr && httpAddr) {
          found = true;
          resolve({ amqp: amqpAddr, mqtt: mqttAddr, http: httpAddr });
        }
      }
      if (broker.stderr.length > 1 << 20) broker.stderr = broker.stderr.slice(-(1 << 19));
    });
    broker.exited.then(({ code, signal }) => {
      if (!found) reject(new Error(`broker exited (code ${code}, signal ${signal}) before listening`));
    });
  });

  try {
    const a = await withTimeout(addr, START_TIMEOUT_MS, 'the broker to log "listening protocol=amqp", "protocol=mqtt" and "protocol=http"');
    const i = a.amqp.lastIndexOf(':');
    broker.host = a.amqp.slice(0, i).replace(/^\[|\]$/g, '');
    broker.port = Number(a.amqp.slice(i + 1));
    broker.mqttPort = Number(a.mqtt.slice(a.mqtt.lastIndexOf(':') + 1));
    broker.httpPort = Number(a.http.slice(a.http.lastIndexOf(':') + 1));
  } catch (e) {
    e.message += `\nbroker stderr:\n${broker.stderr}`;
    await broker.stop().catch(() => {});
    throw e;
  }
  return broker;
}

/**
 * Create a channel (a confirm channel with {confirm: true}) that records server-side errors
 * instead of throwing them: `ch.errors` collects them, `ch.closed` resolves when it closes.
 */
async function openChannel(conn, { confirm = false } = {}) {
  const ch = await withTimeout(confirm ? conn.createConfirmChannel() : conn.createChannel(), EVENT_TIMEOUT_MS, 'channel open');
  ch.errors = [];
  ch.on('error', (e) => ch.errors.push(e));
  ch.closed = new Promise((resolve) => ch.once('close', resolve));
  return ch;
}

/** Assert that `promise` rejects with an AMQP error carrying `code`; return the error. */
async function expectAmqpError(promise, code) {
  let err = null;
  try {
    await withTimeout(promise, EVENT_TIMEOUT_MS, `an AMQP ${code} error`);
  } catch (e) {
    err = e;
  }
  if (err === null) throw new Error(`expected AMQP error ${code}, but the operation succeeded`);
  if (err.code !== code) {
    const e = new Error(`expected AMQP error ${code}, got ${err.code}: ${err.message}`);
    e.cause = err;
    throw e;
  }
  return err;
}

/** A message queue fed by a consumer callback; `next()` awaits the next delivery (or null on cancel). */
class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
  }
  push = (msg) => {
    const w = this.waiters.shift();
    if (w) w(msg);
    else this.items.push(msg);
  };
  get length() {
    return this.items.length;
  }
  next(what = 'a delivery', ms = EVENT_TIMEOUT_MS) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), ms, what);
  }
  async take(n, what = `${n} deliveries`) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await this.next(`${what} (got ${i})`));
    return out;
  }
}

/** Publish on a confirm channel and wait until the broker confirmed every message. */
async function publishConfirmed(ch, exchange, routingKey, content, options = {}) {
  ch.publish(exchange, routingKey, Buffer.isBuffer(content) ? content : Buffer.from(content), options);
  await withTimeout(ch.waitForConfirms(), EVENT_TIMEOUT_MS, 'publisher confirms');
}

/**
 * Set up a connection and a broker for a test file:
 *   const ctx = setup(); // in the top level of the file
 *   test('x', async () => { const conn = await ctx.broker.connect(); ... });
 * Connections opened with ctx.connect() are closed after each test.
 */
function setup({ before, after, afterEach }, opts = {}) {
  const ctx = { broker: null, conns: [] };
  ctx.connect = async (o) => {
    const c = await ctx.broker.connect(o);
    ctx.conns.push(c);
    return c;
  };
  before(async () => {
    ctx.broker = await startBroker(opts);
  });
  afterEach(async () => {
    const conns = ctx.conns.splice(0);
    await Promise.all(
      conns.map((c) =>
        withTimeout(
          Promise.resolve().then(() => c.close()),
          EVENT_TIMEOUT_MS,
          'connection close',
        ).catch(() => {}),
      ),
    );
  });
  after(async () => {
    if (ctx.broker) await ctx.broker.stop();
  });
  return ctx;
}

module.exports = {
  BIN,
  EVENT_TIMEOUT_MS,
  Inbox,
  expectAmqpError,
  isExternal,
  once,
  openChannel,
  publishConfirmed,
  setup,
  startBroker,
  uniqueName,
  withTimeout,
};
