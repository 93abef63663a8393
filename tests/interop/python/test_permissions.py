"""Permissions: RabbitMQ's configure / write / read regular expressions per user and vhost,
enforced on AMQP 0-9-1 (pika, aio-pika) and MQTT 3.1.1 / 5 (paho, raw packets where paho
hides the wire). One test per row of the table in docs/security.md, each allowed and
refused with RabbitMQ's exact reply code and text; the vhost refusal (530); changes on a
running broker; anchored and unanchored patterns. Users and permissions are set with the
tributary CLI, so Tributary only."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import socket
import struct
import time

import aio_pika
import aiormq.exceptions
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pamqp import commands

import mqtt_raw as raw
from amqp_raw import PROTOCOL_HEADER, RawAMQP
from conftest import TARGET
from helpers import assert_empty, channel_error, get_one, queue_counts, queue_exists
from test_mqtt import WAIT, mqtt_broker  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="sets permissions with the tributary CLI")

PW = "s3cret-pw"
NOTHING = ("", "", "")  # vhost access, but no pattern matches anything


def refused(access: str, kind: str, name: str, user: str = "bob") -> str:
    """RabbitMQ's text (rabbit_access_control:check_resource_access)."""
    return f"ACCESS_REFUSED - {access} access to {kind} '{name}' in vhost '/' refused for user '{user}'"


@contextlib.contextmanager
def refusal(text: str):
    """The block must end with channel.close 403 and exactly this text."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        yield ei
    assert (ei.value.reply_code, ei.value.reply_text) == (403, text)


def set_permissions(broker, name: str, conf: str, write: str, read: str):
    broker.cli("user", "set_permissions", name, conf, write, read)


def as_user(broker, conf: str, write: str, read: str, name: str = "bob") -> pika.BlockingConnection:
    """Adds `name` with these permissions on `/` and connects as them."""
    broker.add_user(name, PW, permissions=(conf, write, read))
    return broker.connect(user=name, password=PW)


# -- AMQP: the vhost --------------------------------------------------------------------------
def test_connection_open_without_permissions_in_the_vhost_is_530(broker):
    broker.add_user("bob", PW, permissions=None)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        broker.connect(user="bob", password=PW)
    assert "(530)" in str(ei.value), ei.value
    assert "NOT_ALLOWED - access to vhost '/' refused for user 'bob'" in str(ei.value), ei.value

    def open_as_bob():
        with RawAMQP(broker.host, broker.port) as amqp:
            amqp.send_bytes(PROTOCOL_HEADER)
            amqp.expect(commands.Connection.Start)
            amqp.send(commands.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                  response=f"\0bob\0{PW}", locale="en_US"))
            amqp.expect(commands.Connection.Tune)
            amqp.send(commands.Connection.TuneOk(channel_max=0, frame_max=131072, heartbeat=0))
            amqp.send(commands.Connection.Open(virtual_host="/"))
            return amqp.expect((commands.Connection.Close, commands.Connection.OpenOk))

    close = open_as_bob()
    assert isinstance(close, commands.Connection.Close), close
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        530, "NOT_ALLOWED - access to vhost '/' refused for user 'bob'", 10, 40)

    # Permissions in another vhost do not open this one.
    broker.cli("vhost", "add", "other")
    broker.cli("user", "set_permissions", "-p", "other", "bob", ".*", ".*", ".*")
    assert isinstance(open_as_bob(), commands.Connection.Close)
    # Any entry for `/` does, even one that matches nothing; granted on the running broker.
    set_permissions(broker, "bob", *NOTHING)
    assert isinstance(open_as_bob(), commands.Connection.OpenOk)
    broker.cli("user", "clear_permissions", "bob")
    assert isinstance(open_as_bob(), commands.Connection.Close)


# -- AMQP: configure ----------------------------------------------------------------------------
def test_exchange_declare_and_delete_need_configure(broker, uniq):
    admin = broker.connect()
    theirs = uniq("x")
    admin.channel().exchange_declare(theirs, "direct")
    bob = as_user(broker, "^bob-", "", "")
    ch = bob.channel()
    mine = "bob-" + uniq("x")
    ch.exchange_declare(mine, "fanout")
    ch.exchange_declare(mine, "fanout")
    # Passive declares need no permission.
    ch.exchange_declare(theirs, passive=True)
    ch.exchange_declare("amq.topic", passive=True)
    with refusal(refused("configure", "exchange", theirs)):
        ch.exchange_declare(theirs, "direct")
    new = uniq("x")
    with refusal(refused("configure", "exchange", new)):
        bob.channel().exchange_declare(new, "topic", durable=True)
    with channel_error(404):
        admin.channel().exchange_declare(new, passive=True)
    with refusal(refused("configure", "exchange", theirs)):
        bob.channel().exchange_delete(theirs)
    admin.channel().exchange_declare(theirs, passive=True)
    bob.channel().exchange_delete(mine)
    with channel_error(404):
        admin.channel().exchange_declare(mine, passive=True)
    # The default exchange and amq.* keep their own refusals, checked first.
    with refusal("ACCESS_REFUSED - operation not permitted on the default exchange"):
        bob.channel().exchange_delete("")


def test_queue_declare_and_delete_need_configure(broker, uniq):
    admin = broker.connect()
    theirs = uniq("q")
    admin.channel().queue_declare(theirs)
    bob = as_user(broker, "^bob-", "", "")
    ch = bob.channel()
    mine = "bob-" + uniq("q")
    assert ch.queue_declare(mine).method.queue == mine
    assert ch.queue_declare(theirs, passive=True).method.queue == theirs
    with refusal(refused("configure", "queue", theirs)):
        ch.queue_declare(theirs)
    new = uniq("q")
    with refusal(refused("configure", "queue", new)):
        bob.channel().queue_declare(new, durable=True)
    assert not queue_exists(admin, new)
    with refusal(refused("configure", "queue", theirs)):
        bob.channel().queue_delete(theirs)
    assert queue_exists(admin, theirs)
    # Deleting a queue that does not exist still needs the permission (checked first).
    with refusal(refused("configure", "queue", new)):
        bob.channel().queue_delete(new)
    bob.channel().queue_delete(mine)
    assert not queue_exists(admin, mine)
    # A reserved name is refused as such, before permissions.
    with refusal("ACCESS_REFUSED - queue name 'amq.bob' contains reserved prefix 'amq.*'"):
        bob.channel().queue_declare("amq.bob")


def test_server_named_queue_is_checked_under_its_generated_name(broker):
    bob = as_user(broker, "^bob-", "", "")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        bob.channel().queue_declare("", exclusive=True)
    assert ei.value.reply_code == 403
    assert re.fullmatch(r"ACCESS_REFUSED - configure access to queue 'amq\.gen-[A-Za-z0-9_-]{22}' "
                        r"in vhost '/' refused for user 'bob'", ei.value.reply_text), ei.value.reply_text
    set_permissions(broker, "bob", r"^amq\.gen-", "", "")
    name = bob.channel().queue_declare("", exclusive=True).method.queue
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", name), name


def test_dead_letter_and_alternate_exchanges_need_write_on_them(broker, uniq):
    """RabbitMQ's extra checks for new queues and exchanges: read on the new one, write on the
    exchange its x-dead-letter-exchange / alternate-exchange argument names."""
    bob = as_user(broker, "^bob-", "^bob-", "^bob-")
    q1, q2 = "bob-" + uniq("q"), "bob-" + uniq("q")
    bob.channel().queue_declare(q1, arguments={"x-dead-letter-exchange": "bob-dlx"})
    with refusal(refused("write", "exchange", "amq.fanout")):
        bob.channel().queue_declare(q2, arguments={"x-dead-letter-exchange": "amq.fanout"})
    with refusal(refused("write", "exchange", "amq.default")):
        bob.channel().queue_declare(q2, arguments={"x-dead-letter-exchange": ""})
    x1, x2 = "bob-" + uniq("x"), "bob-" + uniq("x")
    bob.channel().exchange_declare(x1, "fanout", arguments={"alternate-exchange": "bob-ae"})
    with refusal(refused("write", "exchange", "amq.direct")):
        bob.channel().exchange_declare(x2, "fanout", arguments={"alternate-exchange": "amq.direct"})
    # Only a new queue or exchange is checked: re-declaring an existing one is not.
    set_permissions(broker, "bob", "^bob-", "", "")
    bob.channel().queue_declare(q1, arguments={"x-dead-letter-exchange": "bob-dlx"})
    bob.channel().exchange_declare(x1, "fanout", arguments={"alternate-exchange": "bob-ae"})


# -- AMQP: bindings -------------------------------------------------------------------------------
def test_queue_bind_and_unbind_need_write_on_the_queue_and_read_on_the_exchange(broker, uniq):
    admin = broker.connect()
    a = admin.channel()
    q_mine, q_theirs = "bob-" + uniq("q"), uniq("q")
    x_mine, x_theirs = "bob-" + uniq("x"), uniq("x")
    for q in (q_mine, q_theirs):
        a.queue_declare(q)
    for x in (x_mine, x_theirs):
        a.exchange_declare(x, "direct")
    bob = as_user(broker, "", "^bob-", "^bob-")
    ch = bob.channel()
    ch.queue_bind(q_mine, x_mine, "k")
    a.basic_publish(x_mine, "k", b"bound")
    assert get_one(a, q_mine, auto_ack=True)[2] == b"bound"
    with refusal(refused("write", "queue", q_theirs)):
        ch.queue_bind(q_theirs, x_mine, "k")
    with refusal(refused("read", "exchange", x_theirs)):
        bob.channel().queue_bind(q_mine, x_theirs, "k")
    # Write on the destination is checked before read on the source.
    with refusal(refused("write", "queue", q_theirs)):
        bob.channel().queue_bind(q_theirs, x_theirs, "k")
    with refusal(refused("write", "queue", q_theirs)):
        bob.channel().queue_unbind(q_theirs, x_mine, "k")
    with refusal(refused("read", "exchange", x_theirs)):
        bob.channel().queue_unbind(q_mine, x_theirs, "k")
    bob.channel().queue_unbind(q_mine, x_mine, "k")
    a.basic_publish(x_mine, "k", b"unbound")
    assert_empty(a, q_mine)


def test_exchange_bind_and_unbind_need_write_on_the_destination_and_read_on_the_source(broker, uniq):
    admin = broker.connect()
    a = admin.channel()
    source, destination, other = "bob-src-" + uniq("x"), "bob-dst-" + uniq("x"), uniq("x")
    for x in (source, destination, other):
        a.exchange_declare(x, "fanout")
    q = uniq("q")
    a.queue_declare(q)
    a.queue_bind(q, destination, "")
    bob = as_user(broker, "", "^bob-dst-", "^bob-src-")
    bob.channel().exchange_bind(destination=destination, source=source, routing_key="k")
    a.basic_publish(source, "k", b"through")
    assert get_one(a, q, auto_ack=True)[2] == b"through"
    with refusal(refused("write", "exchange", other)):
        bob.channel().exchange_bind(destination=other, source=source, routing_key="k")
    with refusal(refused("read", "exchange", other)):
        bob.channel().exchange_bind(destination=destination, source=other, routing_key="k")
    with refusal(refused("write", "exchange", source)):
        bob.channel().exchange_bind(destination=source, source=destination, routing_key="k")
    with refusal(refused("write", "exchange", other)):
        bob.channel().exchange_unbind(destination=other, source=source, routing_key="k")
    with refusal(refused("read", "exchange", other)):
        bob.channel().exchange_unbind(destination=destination, source=other, routing_key="k")
    bob.channel().exchange_unbind(destination=destination, source=source, routing_key="k")
    a.basic_publish(source, "k", b"not through")
    assert_empty(a, q)


# -- AMQP: publish and consume --------------------------------------------------------------------
def test_publish_needs_write_on_the_exchange(broker, uniq):
    admin = broker.connect()
    a = admin.channel()
    q = uniq("q")
    a.queue_declare(q)
    a.queue_bind(q, "amq.topic", "t.#")
    bob = as_user(broker, "", r"^amq\.topic$", "")
    ch = bob.channel()
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("amq.topic", "t.1", b"%d" % i)
    assert [get_one(a, q, auto_ack=True)[2] for _ in range(3)] == [b"0", b"1", b"2"]
    # The default exchange is checked under the name amq.default.
    with refusal(refused("write", "exchange", "amq.default")):
        ch.basic_publish("", q, b"default")
    ch = bob.channel()
    ch.confirm_delivery()
    with refusal(refused("write", "exchange", "amq.direct")):
        ch.basic_publish("amq.direct", q, b"direct")
    # Checked before the exchange is looked up: 403, not 404.
    missing = uniq("x")
    ch = bob.channel()
    ch.confirm_delivery()
    with refusal(refused("write", "exchange", missing)):
        ch.basic_publish(missing, "k", b"missing")
    # Also without confirms, and in a transaction.
    ch = bob.channel()
    ch.tx_select()
    ch.basic_publish("amq.fanout", "", b"tx")
    with refusal(refused("write", "exchange", "amq.fanout")):
        ch.tx_commit()
    assert_empty(a, q)


def test_get_consume_and_purge_need_read_on_the_queue(broker, uniq):
    admin = broker.connect()
    a = admin.channel()
    mine, theirs = "bob-" + uniq("q"), uniq("q")
    for q in (mine, theirs):
        a.queue_declare(q)
        a.basic_publish("", q, b"m1")
        a.basic_publish("", q, b"m2")
    bob = as_user(broker, "", "", "^bob-")
    ch = bob.channel()
    assert get_one(ch, mine, auto_ack=True)[2] == b"m1"
    got = []
    ch.basic_consume(mine, lambda c, m, p, body: got.append(body), auto_ack=True)
    deadline = time.monotonic() + WAIT
    while not got:
        assert time.monotonic() < deadline, "no delivery"
        bob.process_data_events(time_limit=0.02)
    assert got == [b"m2"]
    assert ch.queue_purge(mine).method.message_count == 0
    with refusal(refused("read", "queue", theirs)):
        bob.channel().basic_get(theirs)
    with refusal(refused("read", "queue", theirs)):
        bob.channel().basic_consume(theirs, lambda *_: None)
    with refusal(refused("read", "queue", theirs)):
        bob.channel().queue_purge(theirs)
    assert queue_counts(admin, theirs) == (2, 0)


# -- AMQP: patterns and changes -------------------------------------------------------------------
def test_patterns_match_anywhere_unless_anchored(broker, uniq):
    suffix = uniq("q")
    bob = as_user(broker, "bob-", "", "")
    # Unanchored (RabbitMQ's re:run): "bob-" anywhere in the name.
    bob.channel().queue_declare("alice-bob-" + suffix)
    bob.channel().queue_declare("bob-" + suffix)
    set_permissions(broker, "bob", "^bob-.*", "", "")
    bob.channel().queue_declare("bob-2" + suffix)
    with refusal(refused("configure", "queue", "alice-bob-2" + suffix)):
        bob.channel().queue_declare("alice-bob-2" + suffix)
    set_permissions(broker, "bob", "^bob-q$", "", "")
    bob.channel().queue_declare("bob-q")
    with refusal(refused("configure", "queue", "bob-q2")):
        bob.channel().queue_declare("bob-q2")
    # An empty pattern matches nothing, not even the empty name.
    set_permissions(broker, "bob", "", ".*", ".*")
    with refusal(refused("configure", "queue", "bob-q")):
        bob.channel().queue_declare("bob-q")


def test_permission_changes_apply_on_a_running_broker(broker, uniq):
    admin = broker.connect()
    q = uniq("q")
    admin.channel().queue_declare(q)
    bob = as_user(broker, *NOTHING)
    ch = bob.channel()
    ch.confirm_delivery()
    with refusal(refused("write", "exchange", "amq.default")):
        ch.basic_publish("", q, b"refused")
    # Granted: the next operation sees it at once.
    set_permissions(broker, "bob", "^bob-", ".*", "")
    ch = bob.channel()
    ch.confirm_delivery()
    ch.basic_publish("", q, b"granted")
    bob.channel().queue_declare("bob-" + q)
    # Revoked: the open channel's publish grant (kept per channel, so publishing is not
    # re-checked per message) goes within the broker's re-check of users.json (100 ms), even
    # though nothing else reads the user database meanwhile; declares see it at once.
    set_permissions(broker, "bob", "", "", "")
    deadline = time.monotonic() + WAIT
    published = 0
    with refusal(refused("write", "exchange", "amq.default")):
        while True:
            assert time.monotonic() < deadline, "the revoked write access still works"
            ch.basic_publish("", q, b"after revocation")
            published += 1
    count, _ = queue_counts(admin, q)
    assert count == 1 + published
    with refusal(refused("configure", "queue", "bob-" + q)):
        bob.channel().queue_declare("bob-" + q)


@pytest.mark.asyncio
async def test_aio_pika_sees_the_same_refusals(broker, uniq):
    broker.add_user("bob", PW, permissions=("^bob-", r"^amq\.topic$|^bob-", r"^amq\.topic$|^bob-"))
    conn = await asyncio.wait_for(aio_pika.connect(broker.url_for("bob", PW)), WAIT)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue("bob-" + uniq("q"), exclusive=True)
        await q.bind("amq.topic", "a.#")
        await (await ch.get_exchange("amq.topic")).publish(aio_pika.Message(b"ok"), routing_key="a.b")
        msg = await q.get(timeout=WAIT)
        assert msg.body == b"ok"
        await msg.ack()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as ei:
            await ch.default_exchange.publish(aio_pika.Message(b"no"), routing_key=q.name)
        assert ei.value.args == (refused("write", "exchange", "amq.default"),)
        ch = await conn.channel()
        name = uniq("q")
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as ei:
            await ch.declare_queue(name)
        assert ei.value.args == (refused("configure", "queue", name),)


# -- MQTT -----------------------------------------------------------------------------------------
def connect_packet(version: int, client_id: str, user: str, password: str = PW,
                   clean: bool = True, will: tuple | None = None) -> bytes:
    """CONNECT with credentials, MQTT 3.1.1 (level 4) or 5; will: (topic, payload, qos)."""
    flags = (0x02 if clean else 0) | 0x80 | 0x40
    tail = b""
    if will:
        topic, payload, qos = will
        flags |= 0x04 | qos << 3
        tail = (b"\x00" if version == 5 else b"") + raw.utf8(topic) + raw.utf8(payload)
    body = (raw.utf8("MQTT") + bytes([version, flags]) + struct.pack("!H", 60)
            + (b"\x00" if version == 5 else b"") + raw.utf8(client_id) + tail
            + raw.utf8(user) + raw.utf8(password))
    return raw.packet(raw.CONNECT, 0, body)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def v311(b, client_id: str, user: str, **kw) -> socket.socket:
    """A raw MQTT 3.1.1 connection whose CONNACK was a success."""
    s = socket.create_connection(("127.0.0.1", b.mqtt_port), timeout=WAIT)
    s.sendall(connect_packet(4, client_id, user, **kw))
    assert recv_exact(s, 4) == b"\x20\x02\x00\x00"
    return s


def v5(b, client_id: str, user: str, **kw) -> raw.RawMQTT:
    """A raw MQTT 5 connection whose CONNACK was a success."""
    c = raw.RawMQTT(b.mqtt_port, timeout=WAIT)
    c.send(connect_packet(5, client_id, user, **kw))
    assert c.expect(raw.CONNACK).reason == 0
    return c


def paho(b, version, user: str, client_id: str = ""):
    """A paho client (connected, or not: the CONNACK's reason code is returned)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    c.username_pw_set(user, PW)
    events: queue.Queue = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: events.put(("connack", rc))
    c.on_disconnect = lambda _c, _u, _f, rc, props=None: events.put(("disconnected", rc))
    c.on_publish = lambda _c, _u, mid, rc, props=None: events.put(("published", mid, rc))
    c.on_subscribe = lambda _c, _u, mid, rcs, props=None: events.put(("subscribed", mid, rcs))
    c.on_message = lambda _c, _u, msg: events.put(("message", msg))
    c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    kind, rc = events.get(timeout=WAIT)
    assert kind == "connack"
    return c, events, rc


def next_event(events: queue.Queue, kind: str):
    deadline = time.monotonic() + WAIT
    while True:
        item = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if item[0] == kind:
            return item


def amqp_tap(b, key: str):
    """A guest AMQP connection with a queue bound to amq.topic by `key`: (connection, channel, queue)."""
    conn = b.connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", key)
    return conn, ch, q


def test_mqtt_connect_needs_access_to_the_vhost(mqtt_broker):
    b = mqtt_broker
    b.add_user("bob", PW, permissions=None)
    c = raw.RawMQTT(b.mqtt_port, timeout=WAIT)
    c.send(connect_packet(5, "bob-5", "bob"))
    assert c.expect(raw.CONNACK).reason == 0x87  # Not authorized
    c.expect_closed()
    s = socket.create_connection(("127.0.0.1", b.mqtt_port), timeout=WAIT)
    s.sendall(connect_packet(4, "bob-4", "bob"))
    assert recv_exact(s, 4) == b"\x20\x02\x00\x05"  # 3.1.1: not authorized
    assert s.recv(16) == b""
    s.close()
    c5, _, rc = paho(b, mqtt.MQTTv5, "bob")
    assert rc.is_failure and rc.value == 0x87, rc
    c5.loop_stop()

    # A refused CONNECT cannot take over the session of the client id it names.
    guest = v5(b, "device-1", "guest", password="guest")
    c = raw.RawMQTT(b.mqtt_port, timeout=WAIT)
    c.send(connect_packet(5, "device-1", "bob"))
    assert c.expect(raw.CONNACK).reason == 0x87
    guest.send(raw.packet(raw.PINGREQ, 0, b""))
    guest.expect(raw.PINGRESP)
    guest.close()

    set_permissions(b, "bob", *NOTHING)
    ok, _, rc = paho(b, mqtt.MQTTv311, "bob")
    assert not rc.is_failure, rc
    ok.disconnect()
    ok.loop_stop()


def test_mqtt5_publish_needs_write_on_amq_topic(mqtt_broker):
    b = mqtt_broker
    conn, ch, q = amqp_tap(b, "sensors.#")
    b.add_user("bob", PW, permissions=(".*", "", ".*"))
    c = v5(b, "bob-pub", "bob")
    c.send(raw.publish_packet("sensors/a", b"qos0", qos=0))
    c.send(raw.publish_packet("sensors/a", b"qos1", qos=1, packet_id=1, retain=True))
    ack = c.expect(raw.PUBACK)
    assert (ack.packet_id, ack.reason) == (1, 0x87)
    c.send(raw.publish_packet("sensors/a", b"qos2", qos=2, packet_id=2))
    rec = c.expect(raw.PUBREC)
    assert (rec.packet_id, rec.reason) == (2, 0x87)
    assert queue_counts(conn, q) == (0, 0), "a refused publish was routed"
    # Nor retained: a new subscriber gets nothing before its PINGRESP.
    guest = v5(b, "guest-sub", "guest", password="guest")
    assert guest.subscribe("sensors/#", 1) == [1]
    guest.send(raw.packet(raw.PINGREQ, 0, b""))
    guest.expect(raw.PINGRESP)
    guest.close()

    # paho sees the PUBACK's reason code.
    p, events, _ = paho(b, mqtt.MQTTv5, "bob")
    info = p.publish("sensors/b", b"paho", qos=1)
    _, mid, rc = next_event(events, "published")
    assert mid == info.mid and rc.value == 0x87, rc
    p.disconnect()
    p.loop_stop()

    # Granted on the running broker: the same connection publishes.
    set_permissions(b, "bob", ".*", r"^amq\.topic$", ".*")
    c.send(raw.publish_packet("sensors/a", b"granted", qos=1, packet_id=3))
    ack = c.expect(raw.PUBACK)
    assert (ack.packet_id, ack.reason) == (3, 0)
    assert get_one(ch, q, auto_ack=True)[2] == b"granted"
    c.close()
    conn.close()


def test_mqtt311_publish_without_write_closes_the_connection(mqtt_broker):
    b = mqtt_broker
    conn, ch, q = amqp_tap(b, "#")
    b.add_user("bob", PW, permissions=(".*", "", ".*"))
    s = v311(b, "bob-raw", "bob")
    s.sendall(raw.publish_packet("t/1", b"qos1", qos=1, packet_id=1))
    assert s.recv(16) == b"", "no PUBACK: the connection closes"
    s.close()
    p, events, _ = paho(b, mqtt.MQTTv311, "bob")
    p.publish("t/2", b"qos0", qos=0)
    next_event(events, "disconnected")
    p.loop_stop()
    assert queue_counts(conn, q) == (0, 0)
    conn.close()


def test_mqtt_subscribe_needs_read_on_amq_topic_and_access_to_the_subscription_queue(mqtt_broker):
    b = mqtt_broker
    admin = b.connect()
    # No read on amq.topic.
    b.add_user("bob", PW, permissions=("^mqtt-subscription-", "^mqtt-subscription-", "^mqtt-subscription-"))
    c = v5(b, "bob-1", "bob")
    assert c.subscribe("a/b", 1) == [0x87]
    c.close()
    # No configure on the queue (read on everything).
    set_permissions(b, "bob", "^$", ".*", ".*")
    c = v5(b, "bob-2", "bob")
    assert c.subscribe("a/b", 1) == [0x87]
    assert not queue_exists(admin, "mqtt-subscription-bob-2"), "the refused subscription's queue was declared"
    # 3.1.1 has one failure code, 0x80.
    s = v311(b, "bob-3", "bob")
    s.sendall(bytes([0x82, 8]) + struct.pack("!H", 7) + raw.utf8("a/b") + b"\x01")
    assert recv_exact(s, 5) == b"\x90\x03\x00\x07\x80"
    s.close()
    p, events, _ = paho(b, mqtt.MQTTv311, "bob", client_id="bob-4")
    p.subscribe("a/b", 1)
    _, _, rcs = next_event(events, "subscribed")
    assert [rc.value for rc in rcs] == [0x80], rcs
    p.disconnect()
    p.loop_stop()

    # Allowed: read on amq.topic, configure + write + read on the client's own queue
    # (`mqtt-subscription-<client id>`, or `...qos1` for a persistent session).
    set_permissions(b, "bob", "^mqtt-subscription-bob-", "^mqtt-subscription-bob-",
                    r"^mqtt-subscription-bob-|^amq\.topic$")
    p, events, _ = paho(b, mqtt.MQTTv5, "bob", client_id="bob-5")
    p.subscribe("a/+", 1)
    _, _, rcs = next_event(events, "subscribed")
    assert [rc.value for rc in rcs] == [1], rcs
    admin.channel().basic_publish("amq.topic", "a.x", b"to bob")
    _, msg = next_event(events, "message")
    assert (msg.topic, msg.payload) == ("a/x", b"to bob")
    p.disconnect()
    p.loop_stop()
    s = v311(b, "bob-6", "bob", clean=False)
    s.sendall(bytes([0x82, 8]) + struct.pack("!H", 8) + raw.utf8("a/b") + b"\x01")
    assert recv_exact(s, 5) == b"\x90\x03\x00\x08\x01"
    s.close()
    assert queue_exists(admin, "mqtt-subscription-bob-6qos1")
    # Per filter: a shared subscription's group queue (`mqtt-shared-<group>`) is outside the
    # pattern, the client's own queue is not.
    c = v5(b, "bob-7", "bob")
    c.send(raw.subscribe_packet(9, [("a/b", 1), ("$share/g/a/#", 0)]))
    ack = c.expect(raw.SUBACK)
    assert ack.reasons == [1, 0x87], ack
    c.close()
    admin.close()


def test_mqtt_will_is_published_only_if_the_user_may_write(mqtt_broker):
    b = mqtt_broker
    conn, ch, q = amqp_tap(b, "wills.#")
    b.add_user("alice", PW)
    b.add_user("bob", PW, permissions=(".*", "", ".*"))
    for version in (4, 5):
        for user in ("bob", "alice"):
            s = socket.create_connection(("127.0.0.1", b.mqtt_port), timeout=WAIT)
            s.sendall(connect_packet(version, f"{user}-{version}", user, will=(f"wills/{user}", b"gone", 0)))
            first, length = recv_exact(s, 2)
            assert first == 0x20 and recv_exact(s, length)[1] == 0, "CONNACK refused"
            # A packet of reserved type 0: malformed, the broker closes (with the will).
            s.sendall(b"\x00\x00")
            with contextlib.suppress(ConnectionResetError):
                while s.recv(64):
                    pass
            s.close()
            # The broker decides on the will before it closes the socket.
            expected = 0 if user == "bob" else 1
            assert queue_counts(conn, q)[0] == expected, (version, user)
            if expected:
                method, _, body = get_one(ch, q, auto_ack=True)
                assert (method.routing_key, body) == ("wills.alice", b"gone")
    conn.close()
