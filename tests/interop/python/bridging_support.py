"""Support for the cross-protocol bridge tests (test_bridging.py): a broker with every listener
on 127.0.0.1:0 whose AMQP, MQTT and XMPP ports are read back from its log (one that can be
restarted on its data dir, too), and thin wrappers around the three real clients, each with
bounded waits only:

- `Amqp`: a pika BlockingConnection; `consume()` declares and binds a queue and collects its
  deliveries, `next()` waits (bounded) for the next one by driving pika's I/O loop.
  `Threaded(Amqp, broker)` runs every call on one dedicated thread (pika is not thread-safe) and
  makes it awaitable, for the asyncio tests that drive slixmpp at the same time.
- `Mqtt`: a paho-mqtt client (v5 unless told) with its network loop on paho's thread; what it
  receives lands in a thread-safe queue; `next()` waits bounded, `anext()` from asyncio.
- `BridgeSlix`: xmpp_support.Slix with the pubsub (XEP-0060), SHIM (XEP-0131), delay
  (XEP-0203) and ping (XEP-0199) plugins, and an inbox of *every* <message/> stanza (slixmpp's
  own `message` event fires only for messages with a <body/>, not for pubsub events or errors).

Tributary only: the bridge is ours (crates/server/src/xmpp/bridge.rs).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import re
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import START_TIMEOUT, TARGET
from xmpp_support import (DOMAIN, WAIT, Inbox, Slix, XmppBroker, _teardown_problems, q,
                          restartable_xmpp_broker_class)

MQTT_RE = re.compile(r"listening protocol=mqtt addr=127\.0\.0\.1:(\d+)")

BRIDGE = f"bridge.{DOMAIN}"      # direct messages to and from the core
TOPICS = f"topics.{DOMAIN}"      # the pubsub service over MQTT topics
NS_SHIM = "http://jabber.org/protocol/shim"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_PAYLOAD = "urn:tributary:bridge:0"
NS_CLIENT = "jabber:client"


# ---------------------------------------------------------------------------------------------
# Brokers


class BridgeBroker(XmppBroker):
    """xmpp_support's XmppBroker (AMQP, XMPP, XMPPS and HTTP ports from the log), plus the
    MQTT port (`listening protocol=mqtt addr=...`)."""

    mqtt_port = 0

    def start(self):
        super().start()
        m = self.wait_log(MQTT_RE, START_TIMEOUT)
        assert m, f"no `listening protocol=mqtt` line in the log:\n{self.log_text()[-5000:]}"
        self.mqtt_port = int(m.group(1))


@pytest.fixture
def bb(request, tmp_path_factory):
    """A started BridgeBroker (own temp dir, every listener on port 0), stopped with SIGTERM at
    teardown and checked (exit 0, no unexpected death, no panic)."""
    if TARGET[0] != "tributary":
        pytest.skip("the bridge is Tributary's")
    root = Path(tempfile.mkdtemp(prefix="tributary-bridge-"))
    b = BridgeBroker(root)
    try:
        b.start()
        yield b
    finally:
        problems = _teardown_problems(b, request, tmp_path_factory)
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail("broker problems at teardown: " + "; ".join(problems)
                        + f"\nlog:\n{b.log_text()[-20000:]}", pytrace=False)


@pytest.fixture
def bb_restartable(request, tmp_path_factory):
    """A broker that can be stopped (SIGTERM) or killed (SIGKILL) and started again on the
    same data dir (durability_support.RestartableBroker); every run's AMQP, MQTT and XMPP
    ports are read back from that run's log."""
    if TARGET[0] != "tributary":
        pytest.skip("the bridge is Tributary's")

    class RestartableBridgeBroker(restartable_xmpp_broker_class()):
        mqtt_port = 0

        def start(self):
            run = super().start()
            m = run.wait_for(MQTT_RE, START_TIMEOUT)
            assert m, f"run {run.index}: no `listening protocol=mqtt` line:\n{run.text()[-5000:]}"
            self.mqtt_port = int(m.group(1))
            return run

    root = Path(tempfile.mkdtemp(prefix="tributary-bridge-restart-"))
    b = RestartableBridgeBroker(root)
    try:
        b.start()
        yield b
    finally:
        problems = b.finish()
        rep = getattr(request.node, "rep_call", None)
        if problems or (rep is not None and rep.failed):
            dest = tmp_path_factory.mktemp("bridge-broker-logs")
            for r in b.runs:
                shutil.copy(r.log_path, dest / r.log_path.name)
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail("broker problems at teardown: " + "; ".join(problems)
                        + f"\nlog:\n{b.log_text()[-20000:]}", pytrace=False)


# ---------------------------------------------------------------------------------------------
# AMQP (pika)


class Amqp:
    """One pika BlockingConnection and channel. Use it from one thread only."""

    def __init__(self, broker, confirms: bool = False):
        self.conn = pika.BlockingConnection(broker.params())
        self.ch = self.conn.channel()
        if confirms:
            self.ch.confirm_delivery()
        self.got: dict[str, list] = {}

    def declare(self, exchange: str, key: str, queue: str = "", durable: bool = False) -> str:
        """Declares a queue (server-named and exclusive when `queue` is empty) bound to
        `exchange` with `key`; returns its name. Nothing is consumed."""
        name = self.ch.queue_declare(queue, durable=durable, exclusive=not queue).method.queue
        self.ch.queue_bind(name, exchange, key)
        return name

    def consume(self, exchange: str, key: str, queue: str = "", durable: bool = False) -> str:
        """declare() plus a consumer (auto-ack) whose deliveries next() hands out."""
        name = self.declare(exchange, key, queue, durable)
        self.got[name] = []
        self.ch.basic_consume(name, lambda _ch, m, p, body: self.got[name].append((m, p, body)),
                              auto_ack=True)
        return name

    def next(self, queue: str, timeout: float = WAIT):
        """(method, properties, body) of the next delivery from `queue`, waiting up to
        `timeout` (pika's I/O loop runs meanwhile: no sleeping)."""
        deadline = time.monotonic() + timeout
        while not self.got[queue]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no delivery from queue {queue!r} within {timeout}s")
            self.conn.process_data_events(time_limit=min(left, 0.25))
        return self.got[queue].pop(0)

    def passive(self, queue: str):
        """(message count, consumer count) of an existing queue, or None if there is none (a
        passive queue.declare answered 404, on a channel of its own)."""
        ch = self.conn.channel()
        try:
            ok = ch.queue_declare(queue, passive=True).method
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return None
        ch.close()
        return ok.message_count, ok.consumer_count

    def get(self, queue: str):
        """basic.get (no ack): (method, properties, body) or None when the queue is empty."""
        method, props, body = self.ch.basic_get(queue, auto_ack=True)
        return None if method is None else (method, props, body)

    def publish(self, exchange: str, key: str, body: bytes | str, mandatory: bool = False,
                **props) -> None:
        """basic.publish; with a confirm channel, returns once the broker confirmed it (pika
        raises UnroutableError / NackError otherwise)."""
        self.ch.basic_publish(exchange, key, body, pika.BasicProperties(**props), mandatory=mandatory)

    def close(self):
        try:
            if self.conn.is_open:
                self.conn.close()
        except Exception:
            pass


class Threaded:
    """Runs a blocking client on one dedicated thread; `await t.call("method", ...)` from
    asyncio. Construct with the class and its arguments (it is built on that thread too)."""

    def __init__(self, cls, *args, **kw):
        self._ex = ThreadPoolExecutor(1, thread_name_prefix=cls.__name__)
        self.obj = self._ex.submit(cls, *args, **kw).result(WAIT)

    async def call(self, method: str, *args, **kw):
        loop = asyncio.get_running_loop()
        fn = functools.partial(getattr(self.obj, method), *args, **kw)
        return await loop.run_in_executor(self._ex, fn)

    def close(self):
        try:
            self._ex.submit(self.obj.close).result(WAIT)
        finally:
            self._ex.shutdown(wait=False)


def app_headers(props) -> dict:
    """An AMQP message's headers without the `x-` ones (the broker's own, e.g. x-mqtt-*)."""
    return {k: v for k, v in (props.headers or {}).items() if not k.startswith("x-")}


# ---------------------------------------------------------------------------------------------
# MQTT (paho)


def v5_props(packet=PacketTypes.PUBLISH, **kw) -> Properties:
    """paho Properties from attribute names: v5_props(UserProperty=[("k", "v")], ...)."""
    p = Properties(packet)
    for name, value in kw.items():
        setattr(p, name, value)
    return p


def user_props(msg) -> list[tuple[str, str]]:
    return list(getattr(msg.properties, "UserProperty", None) or [])


def prop(msg, name: str):
    """An MQTT 5 property of a received message, or None when absent."""
    return getattr(msg.properties, name, None) if msg.properties is not None else None


class Mqtt:
    """A connected paho client (MQTT 5 by default) with paho's network thread running."""

    def __init__(self, broker, client_id: str = "", version=mqtt.MQTTv5):
        self.version = version
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
                        clean_session=None if version == mqtt.MQTTv5 else True)
        self.c = c
        self.inbox: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        connected: queue.Queue = queue.Queue()
        c.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        c.on_connect = lambda _c, _u, _f, rc, props=None: connected.put(rc)
        c.on_disconnect = lambda _c, _u, _f, rc, props=None: self.disconnects.put(rc)
        self._subacks: queue.Queue = queue.Queue()
        c.on_subscribe = lambda _c, _u, mid, rcs, props=None: self._subacks.put((mid, rcs))
        if version == mqtt.MQTTv5:
            c.connect("127.0.0.1", broker.mqtt_port, keepalive=30, clean_start=True)
        else:
            c.connect("127.0.0.1", broker.mqtt_port, keepalive=30)
        c.loop_start()
        try:
            rc = connected.get(timeout=WAIT)
        except queue.Empty:
            c.loop_stop()
            raise AssertionError(f"no CONNACK within {WAIT}s") from None
        assert not rc.is_failure, f"CONNECT refused: {rc}"

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """SUBSCRIBE and wait for the SUBACK; returns the granted QoS (fails on a refusal)."""
        _, mid = self.c.subscribe(topic, qos=qos)
        try:
            got_mid, rcs = self._subacks.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no SUBACK for {topic!r} within {WAIT}s") from None
        assert got_mid == mid, (got_mid, mid)
        rc = rcs[0]
        value = int(rc.value) if hasattr(rc, "value") else int(rc)
        assert value <= 2, f"subscription to {topic!r} refused: {rc}"
        return value

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                **props) -> None:
        """PUBLISH; for QoS 1/2 returns once the broker acknowledged it (PUBACK/PUBCOMP)."""
        properties = v5_props(**props) if props else None
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(WAIT)
        assert info.is_published(), f"publish to {topic!r} not acknowledged within {WAIT}s"

    def next(self, timeout: float = WAIT):
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no MQTT message within {timeout}s") from None

    async def anext(self, timeout: float = WAIT):
        """next() without blocking the asyncio loop (slixmpp runs on it)."""
        return await asyncio.to_thread(self.next, timeout)

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


class Clients:
    """Creates clients of any kind and closes them all at the end of the test."""

    def __init__(self):
        self.made: list = []

    def add(self, client):
        self.made.append(client)
        return client

    def close(self):
        for c in reversed(self.made):
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def clients():
    pool = Clients()
    try:
        yield pool
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------
# XMPP (slixmpp)


class BridgeSlix(Slix):
    """Slix with the plugins the bridge tests use and `stanzas`: every <message/> received
    (with or without a body, errors included), oldest first."""

    PLUGINS = ("xep_0030", "xep_0060", "xep_0085", "xep_0131", "xep_0199", "xep_0203")

    def __init__(self, broker, user: str, password: str, resource: str | None = None, **kw):
        super().__init__(broker, user, password, resource, plugins=self.PLUGINS, **kw)
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        self.stanzas = Inbox(f"<message/> for {self.c.requested_jid}")
        self.c.register_handler(Callback("bridge tests: every message",
                                         MatchXPath(f"{{{NS_CLIENT}}}message"), self.stanzas.put))

    async def online(self) -> "BridgeSlix":
        """Connects, sends initial presence, and waits for a round trip after it (a ping to
        the server): the presence has been processed, so the session is available for
        messages to the bare JID."""
        await self.start(presence=True)
        await self.c.plugin["xep_0199"].send_ping(DOMAIN, timeout=WAIT)
        return self

    async def next_stanza(self, match=None, timeout: float = WAIT):
        return await self.stanzas.get(match, timeout)


def shim(el: ET.Element | None) -> list[tuple[str, str]]:
    """The XEP-0131 headers directly under `el` (a stanza or a payload), in order."""
    if el is None:
        return []
    headers = el.find(q(NS_SHIM, "headers"))
    if headers is None:
        return []
    return [(h.get("name", ""), h.text or "") for h in headers.findall(q(NS_SHIM, "header"))]


def shim_dict(el: ET.Element | None) -> dict[str, str]:
    """shim() as a dict, failing if a header name occurs twice."""
    pairs = shim(el)
    names = [n for n, _ in pairs]
    assert len(names) == len(set(names)), f"a SHIM header is repeated: {pairs}"
    return dict(pairs)


def to_str(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode")


class BridgeSlixPool:
    """Creates BridgeSlix clients and stops them all (bounded) at the end."""

    def __init__(self):
        self.clients: list[BridgeSlix] = []

    def new(self, *args, **kw) -> BridgeSlix:
        s = BridgeSlix(*args, **kw)
        self.clients.append(s)
        return s

    async def close(self):
        await asyncio.gather(*(s.stop() for s in self.clients), return_exceptions=True)
        self.clients.clear()
