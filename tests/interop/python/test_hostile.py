"""Hostile clients (issue 9) and the `[limits]` that stop them (docs/security.md, "Limits"):
raw sockets for the hostile side, and in every test a well-behaved client (pika, paho, or a
raw XMPP client that speaks the protocol properly) that is still served while the hostile one
does its worst and afterwards.

- slowloris: a protocol header or CONNECT sent a byte a second is closed by the handshake
  timeout (2 s here), for AMQP, MQTT and XMPP;
- a SASL exchange that never ends (XMPP SCRAM, client-first and then nothing): closed by the
  same timeout with <connection-timeout/>;
- an XMPP stanza flood: throttled by the per-connection rate (reading stops), nothing lost;
- a client that never reads: MQTT QoS 0 messages are dropped past `max_buffered_bytes` and the
  broker's RSS stays bounded; an AMQP consumer stops getting deliveries (they stay in the
  queue); an XMPP session is closed and its connection dropped;
- a 4 GiB length prefix: AMQP frame size 0xFFFFFFFF and MQTT remaining length 0xFFFFFF7F are
  refused before anything is allocated (RSS checked);
- a connection flood: 2,000 AMQP connections against `max_connections = 200`; the excess is
  refused the protocol's way (AMQP 530, MQTT CONNACK 0x97 / 0x03, XMPP <resource-constraint/>)
  and, once the flood is gone, exactly as many connections are admitted as before (no leak);
- the per-user connection limit and the per-vhost queue limit.

Covered elsewhere, not repeated here:
- billion laughs: test_xmpp_raw.py::test_malformed_xml_stream_error[dtd-before-stream] (a DTD
  with nested entity declarations before the stream header: <restricted-xml/>, nothing
  expanded) and [dtd-inside-stream]; the parser refuses any DTD before reading its entities;
- permission-denied publish: test_permissions.py::test_publish_needs_write_on_the_exchange
  (AMQP 403), ::test_mqtt5_publish_needs_write_on_amq_topic and
  ::test_mqtt311_publish_without_write_closes_the_connection.

Every wait is bounded; the only sleeps are the slowloris pacing (a socket timeout of one
second between bytes). Tributary only: these tests configure limits and read the broker's
log and /proc.
"""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import re
import resource
import shutil
import socket
import struct
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pamqp import commands, frame

import mqtt_raw as raw
from amqp_raw import PROTOCOL_HEADER, RawAMQP
from bridging_support import BridgeBroker, Mqtt
from conftest import CONFIG, TARGET
from xmpp_support import (NS_SASL, NS_STREAM, RawXmpp, StreamClosed, _teardown_problems, add_users,
                          is_msg, q)

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="configures Tributary's [limits]")

WAIT = 10.0
MIB = 1024 * 1024
XMPP_HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xml:lang='en' "
               f"xmlns='jabber:client' xmlns:stream='{NS_STREAM}'>")


# ---------------------------------------------------------------------------------------------
# Brokers and well-behaved clients


def _raise_fd_limit(wanted: int = 8192):
    """The flood opens thousands of sockets, here and in the broker (which inherits this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@pytest.fixture
def hostile(request, tmp_path_factory):
    """hostile(limits="", amqp="") -> a started broker with every listener on port 0 (AMQP,
    MQTT, XMPP ports read back from the log), these `[limits]` keys and these extra `[amqp]`
    keys. Stopped and checked at teardown (clean SIGTERM exit, no panic)."""
    _raise_fd_limit()
    made: list[tuple[BridgeBroker, Path]] = []

    def make(limits: str = "", amqp: str = "") -> BridgeBroker:
        root = Path(tempfile.mkdtemp(prefix="tributary-hostile-"))
        b = BridgeBroker(root)
        config = CONFIG.replace("[amqp]\n", "[amqp]\n" + amqp, 1)
        b.config_text = config + ("\n[limits]\n" + limits if limits else "")
        made.append((b, root))
        b.start()
        return b

    yield make
    problems = []
    for b, root in made:
        problems += _teardown_problems(b, request, tmp_path_factory)
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("broker problems at teardown: " + "; ".join(problems), pytrace=False)


def rss_kib(b) -> int:
    """The broker's resident set size (VmRSS in /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{b.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def amqp_round_trip(b, conn: pika.BlockingConnection | None = None):
    """A well-behaved AMQP client: publish to a fresh queue and get the message back."""
    own = conn is None
    conn = conn or b.connect()
    try:
        ch = conn.channel()
        qname = ch.queue_declare("", exclusive=True).method.queue
        body = uuid.uuid4().hex.encode()
        ch.basic_publish("", qname, body)
        deadline = time.monotonic() + WAIT
        while True:
            _, _, got = ch.basic_get(qname, auto_ack=True)
            if got is not None:
                assert got == body
                break
            assert time.monotonic() < deadline, "the message did not come back"
            conn.process_data_events(0.05)  # bounded: waits for the broker, not a sleep
        ch.close()
    finally:
        if own:
            conn.close()


def mqtt_round_trip(b, client: Mqtt | None = None):
    """A well-behaved MQTT client (paho, v5): subscribe, publish QoS 1, receive."""
    own = client is None
    client = client or Mqtt(b)
    try:
        topic = f"good/{uuid.uuid4().hex}"
        client.subscribe(topic, qos=1)
        client.publish(topic, b"hello", qos=1)
        msg = client.next()
        assert (msg.topic, msg.payload) == (topic, b"hello")
        client.c.unsubscribe(topic)
    finally:
        if own:
            client.close()


def xmpp_round_trip(b, password: str, user: str = "alice", client: RawXmpp | None = None):
    """A well-behaved XMPP client: log in (unless given a logged-in one), message itself."""
    own = client is None
    c = client or RawXmpp(b.xmpp_port)
    try:
        if own:
            c.login(user, password, "good-" + uuid.uuid4().hex[:6])
        body = uuid.uuid4().hex
        c.send(f"<message to='{c.jid}' type='chat'><body>{body}</body></message>")
        c.wait_for(is_msg(body), "our own message")
    finally:
        if own:
            c.close()


def recv_exact(s: socket.socket, n: int) -> bytes:
    got = b""
    deadline = time.monotonic() + WAIT
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {got!r}"
        chunk = s.recv(n - len(got))
        assert chunk, f"closed after {got!r}"
        got += chunk
    return got


def small_rcvbuf_socket(port: int) -> socket.socket:
    """A client socket with a small receive buffer (set before connecting, so that the window
    is small from the start): the broker's output piles up on its side as soon as we stop
    reading, rather than in our kernel. Not smaller than one loopback segment (64 KiB), below
    which window updates stall and even a reading client would wait for TCP's persist timer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", port))
    return s


def read_until_eof(s: socket.socket, timeout: float = WAIT, limit: int = 256 * MIB) -> bytes:
    """Everything until the server closes; TimeoutError if it does not in time."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    while len(got) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"not closed within {timeout}s ({len(got)} bytes read)")
        s.settimeout(left)
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk
    raise AssertionError(f"more than {limit} bytes before the close")


# ---------------------------------------------------------------------------------------------
# Slowloris and endless handshakes

TIMEOUTS = dict(limits="mqtt_connect_timeout = 2\nxmpp_handshake_timeout = 2\n",
                amqp="handshake_timeout = 2\n")


def mqtt311_connect(client_id: str, keepalive: int = 60) -> bytes:
    body = raw.utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + raw.utf8(client_id)
    return raw.packet(raw.CONNECT, 0, body)


@pytest.mark.parametrize("proto", ["amqp", "mqtt", "xmpp"])
def test_slowloris_is_closed_by_the_handshake_timeout(hostile, proto):
    """A byte a second of a valid opening: the connection is closed when the handshake
    timeout (2 s) runs out, counted from the accept (bytes do not extend it); meanwhile and
    afterwards well-behaved clients of the same protocol are served."""
    b = hostile(**TIMEOUTS)
    pw = add_users(b, "alice")["alice"]
    port, opening = {
        "amqp": (b.port, PROTOCOL_HEADER),
        "mqtt": (b.mqtt_port, raw.connect_packet("slow", keepalive=60)),
        "xmpp": (b.xmpp_port, XMPP_HEADER.encode()),
    }[proto]
    # Well-behaved clients connected before, used while the slow one drips.
    good = {"amqp": lambda: b.connect(), "mqtt": lambda: Mqtt(b),
            "xmpp": lambda: RawXmpp(b.xmpp_port)}[proto]()
    if proto == "xmpp":
        good.login("alice", pw, "before")
    round_trip = {"amqp": lambda: amqp_round_trip(b, good), "mqtt": lambda: mqtt_round_trip(b, good),
                  "xmpp": lambda: xmpp_round_trip(b, pw, client=good)}[proto]

    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    sent, answer, closed_after = 0, b"", None
    while sent < len(opening) and time.monotonic() - t0 < 15:
        try:
            s.sendall(opening[sent:sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - t0
            break
        sent += 1
        if sent == 1:
            round_trip()  # served while the slow one is connected
        s.settimeout(1.0)  # the pacing: a byte a second, unless the server speaks or closes
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed_after = time.monotonic() - t0
            break
        answer += chunk
        answer += read_until_eof(s)  # the server spoke: it must be closing
        closed_after = time.monotonic() - t0
        break
    s.close()
    assert closed_after is not None, f"still open after {sent} of {len(opening)} bytes"
    assert sent < len(opening), "the whole opening went through before the close"
    assert 1.5 <= closed_after <= 6.0, f"closed after {closed_after:.2f}s, timeout is 2 s"
    if proto == "xmpp":
        # A stream of ours (its header first), the error, the end of the stream.
        text = answer.decode()
        assert text.startswith("<?xml") and "<stream:stream" in text, text
        assert "<connection-timeout" in text and text.endswith("</stream:stream>"), text
    else:
        assert answer == b"", answer  # nothing to say to a client that never said who it is
    round_trip()
    good.close()
    # Fresh connections after it.
    {"amqp": lambda: amqp_round_trip(b), "mqtt": lambda: mqtt_round_trip(b),
     "xmpp": lambda: xmpp_round_trip(b, pw)}[proto]()


def test_xmpp_sasl_exchange_that_never_ends_is_closed(hostile):
    """SCRAM client-first, the server's challenge, and then nothing: the handshake timeout
    (SASL included) ends the stream with <connection-timeout/>."""
    b = hostile(**TIMEOUTS)
    pw = add_users(b, "alice")["alice"]
    good = RawXmpp(b.xmpp_port)
    good.login("alice", pw, "good")
    with RawXmpp(b.xmpp_port) as c:
        t0 = time.monotonic()
        assert "SCRAM-SHA-256" in c.mechanisms(c.open())
        first = base64.b64encode(b"n,,n=alice,r=" + base64.b64encode(os.urandom(18))).decode()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        assert c.next().tag == q(NS_SASL, "challenge"), c.log()
        xmpp_round_trip(b, pw, client=good)  # served during the stalled exchange
        err = c.expect_stream_error(timeout=WAIT)
        elapsed = time.monotonic() - t0
        assert err.error == "connection-timeout", c.log()
        assert 1.5 <= elapsed <= 6.0, f"closed after {elapsed:.2f}s, timeout is 2 s"
        assert c.wait_closed(), "connection not closed after the stream error"
    assert b.wait_log(re.compile(r"XMPP handshake timeout"), WAIT), "not logged"
    xmpp_round_trip(b, pw, client=good)
    good.close()
    xmpp_round_trip(b, pw)


def test_xmpp_stanza_flood_is_throttled_not_dropped(hostile):
    """`xmpp_stanza_rate = 50`, burst 50: 200 stanzas of 1 KiB sent at once take about 3 s to
    get through (the broker stops reading the flooder while its bucket is empty; what one read
    brought in, 16 KiB, is handled and paid for afterwards), none is lost or reordered, and
    another client is served at its normal pace meanwhile."""
    b = hostile(limits="xmpp_stanza_rate = 50\nxmpp_stanza_burst = 50\n")
    pw = add_users(b, "alice", "bob")
    bob = RawXmpp(b.xmpp_port)
    bob.login("bob", pw["bob"], "calm")
    with RawXmpp(b.xmpp_port) as flooder:
        flooder.login("alice", pw["alice"], "flood")
        t0 = time.monotonic()
        pad = "p" * 900
        flooder.send("".join(f"<message to='{flooder.jid}' type='chat'><body>n{i}</body>"
                             f"<x xmlns='urn:example:pad'>{pad}</x></message>" for i in range(200)))
        t1 = time.monotonic()
        xmpp_round_trip(b, pw["bob"], client=bob)
        other = time.monotonic() - t1
        got = [flooder.wait_for(is_msg(), f"message {i}", timeout=20).findtext(
            "{jabber:client}body") for i in range(200)]
        took = time.monotonic() - t0
    assert got == [f"n{i}" for i in range(200)], got
    assert 2.0 <= took <= 15.0, f"200 stanzas at 50/s (burst 50) took {took:.2f}s"
    assert other < 1.5, f"another client waited {other:.2f}s"
    bob.close()


# ---------------------------------------------------------------------------------------------
# Clients that never read


def test_mqtt_subscriber_that_never_reads_has_qos0_dropped_and_memory_stays_bounded(hostile):
    """A QoS 0 subscriber that stops reading while 128 MiB are published to it: past
    `max_buffered_bytes` (1 MiB here) its messages are dropped (logged), the broker's RSS does
    not grow with the flood, and a paho subscriber and publisher are served throughout."""
    b = hostile(limits=f"max_buffered_bytes = {MIB}\n")
    good = Mqtt(b)
    victim = raw.RawMQTT.__new__(raw.RawMQTT)
    victim.timeout, victim.buf, victim.next_id = WAIT, b"", 0
    victim.sock = small_rcvbuf_socket(b.mqtt_port)
    victim.connect("never-reads")
    assert victim.subscribe("flood/#", 0) == [0]
    # From here on the victim reads nothing.

    publisher = raw.RawMQTT(b.mqtt_port, timeout=WAIT)
    publisher.connect("flooder")
    payload = os.urandom(64 * 1024)
    rss_before = rss_kib(b)
    n = 2048  # 128 MiB
    for i in range(n):
        publisher.publish("flood/x", payload, qos=0)
        if i == n // 2:
            mqtt_round_trip(b, good)  # served during the flood
    publisher.ping()  # everything before it has been read and routed
    mqtt_round_trip(b, good)
    rss_after = rss_kib(b)
    grown = (rss_after - rss_before) // 1024
    assert grown < 48, f"RSS grew by {grown} MiB while 128 MiB went to a client that does not read"
    assert b.wait_log(re.compile(r"dropping its QoS 0 messages"), WAIT, 0), \
        "no drop logged"
    # The victim is still connected (dropping QoS 0 is the remedy, not disconnecting); it gets
    # at most what was buffered when it stops being flooded.
    victim.sock.settimeout(0.5)
    received = 0
    try:
        while received < 128 * MIB:
            chunk = victim.sock.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
    except socket.timeout:
        pass
    assert received < 32 * MIB, f"the client that did not read got {received >> 20} MiB afterwards"
    victim.disconnect()
    victim.close()
    publisher.disconnect()
    publisher.close()
    mqtt_round_trip(b, good)
    good.close()
    mqtt_round_trip(b)


def test_amqp_consumer_that_never_reads_gets_no_more_than_the_buffer(hostile):
    """A no-ack consumer without prefetch stops reading while 64 MiB go to its queue: queues
    stop feeding the connection at `max_buffered_bytes` (1 MiB here), so most messages stay in
    the queue instead of piling up in the broker for the client; pika is served throughout."""
    b = hostile(limits=f"max_buffered_bytes = {MIB}\n")
    admin = b.connect()
    ch = admin.channel()
    qname = f"flood-{uuid.uuid4().hex[:8]}"
    ch.queue_declare(qname)
    ch.confirm_delivery()

    victim = RawAMQP.__new__(RawAMQP)
    victim.sock, victim.buf, victim.tune, victim.start = small_rcvbuf_socket(b.port), b"", None, None
    victim.handshake()
    victim.open_channel(1)
    victim.send(commands.Basic.Consume(queue=qname, no_ack=True), 1)
    victim.expect(commands.Basic.ConsumeOk)
    # From here on the victim reads nothing.

    n, size = 1024, 64 * 1024
    body = os.urandom(size)
    for i in range(n):
        ch.basic_publish("", qname, body)  # confirmed: enqueued when this returns
        if i == n // 2:
            amqp_round_trip(b)  # served during the flood
    ready = ch.queue_declare(qname, passive=True).method.message_count
    # Out of the queue: the connection's buffer and deliveries waiting for it (1 MiB each),
    # plus what the kernel's socket buffers took (a few MiB): far from all of it.
    taken = n - ready
    assert taken * size < 24 * MIB, f"{taken} of {n} messages ({taken * size >> 20} MiB) left the queue"
    amqp_round_trip(b, admin)
    victim.close()
    admin.close()
    amqp_round_trip(b)


def test_xmpp_client_that_never_reads_is_disconnected(hostile):
    """4,000 messages of 16 KiB (64 MiB) to a session that stops reading: its mailbox holds at
    most `max_buffered_bytes` (1 MiB here), then the session is closed and the connection
    dropped even though the client never makes room for the stream error. The sender and
    others are served; the broker's RSS does not grow with the flood."""
    b = hostile(limits=f"max_buffered_bytes = {MIB}\nxmpp_stanza_rate = 0\n")
    pw = add_users(b, "victim", "sender", "alice")
    victim = RawXmpp(b.xmpp_port)
    victim.sock.close()
    victim.sock = small_rcvbuf_socket(b.xmpp_port)
    victim.login("victim", pw["victim"], "deaf")
    target = victim.jid
    # From here on the victim reads nothing.

    sender = RawXmpp(b.xmpp_port)
    sender.login("sender", pw["sender"], "loud")
    rss_before = rss_kib(b)
    filler = "x" * (16 * 1024)
    mark = b.log_mark()
    sent = 0
    closed_rx = re.compile(r"XMPP (session|client) does not read")
    for i in range(4000):
        sender.send(f"<message to='{target}' type='headline'><body>{i} {filler}</body></message>")
        sent += 1
        if i == 2000:
            xmpp_round_trip(b, pw["alice"], "alice")  # served during the flood
    assert b.wait_log(closed_rx, WAIT, mark), "the session that did not read was not closed"
    xmpp_round_trip(b, pw["sender"], client=sender)  # the sender itself is fine
    grown = (rss_kib(b) - rss_before) // 1024
    assert grown < 48, f"RSS grew by {grown} MiB for a client that does not read"
    # Its session is gone: an iq to its full JID is answered by the server...
    reply = sender.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=target)
    assert reply.get("type") == "error", sender.log()
    # ...and its connection is closed: what it can still read is what was in flight.
    got = read_until_eof(victim.sock, timeout=WAIT)
    assert len(got) < 16 * MIB, f"{len(got) >> 20} MiB were still on their way to it"
    victim.close()
    sender.close()
    xmpp_round_trip(b, pw["alice"], "alice")


# ---------------------------------------------------------------------------------------------
# Length prefixes of 4 GiB


def test_amqp_frame_of_4_gib_is_refused_without_allocating(hostile):
    """A frame header announcing 0xFFFFFFFF bytes, before and after connection.open:
    connection.close 501 FRAME_ERROR at once (nothing waited for, nothing allocated)."""
    b = hostile()
    amqp_round_trip(b)  # the first login's password hash costs memory once: not ours to count
    rss_before = rss_kib(b)
    # After the protocol header, in the handshake.
    with RawAMQP(b.host, b.port) as c:
        c.send_bytes(PROTOCOL_HEADER)
        c.expect(commands.Connection.Start)
        c.send_bytes(struct.pack(">BHI", 1, 0, 0xFFFFFFFF) + b"\x00" * 64)
        close = c.expect(commands.Connection.Close)
        assert close.reply_code == 501, close
        c.read_until_eof(WAIT)
    # On an open connection, on a channel.
    with RawAMQP(b.host, b.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_bytes(struct.pack(">BHI", 3, 1, 0xFFFFFFFF) + b"\x00" * 64)
        close = c.expect(commands.Connection.Close)
        assert close.reply_code == 501 and close.reply_text.startswith("FRAME_ERROR"), close
        c.send(commands.Connection.CloseOk())
        c.read_until_eof(WAIT)
    grown = (rss_kib(b) - rss_before) // 1024
    assert grown < 16, f"RSS grew by {grown} MiB"
    amqp_round_trip(b)


def test_mqtt_remaining_length_of_256_mib_is_refused_without_allocating(hostile):
    """Remaining length 0xFFFFFF7F (the largest the encoding allows, 256 MiB): before CONNECT
    the connection is closed; after a v5 CONNECT, DISCONNECT 0x95 Packet too large. Nothing is
    allocated for it (RSS checked)."""
    b = hostile()
    mqtt_round_trip(b)  # the first login's password hash costs memory once: not ours to count
    rss_before = rss_kib(b)
    huge = b"\xff\xff\xff\x7f"
    with raw.RawMQTT(b.mqtt_port, timeout=WAIT) as c:
        c.send(bytes([raw.CONNECT << 4]) + huge + b"\x00" * 64)
        c.expect_closed()
    with raw.RawMQTT(b.mqtt_port, timeout=WAIT) as c:
        c.connect("huge")
        c.send(bytes([raw.PUBLISH << 4]) + huge + b"\x00\x01a" + b"\x00" * 64)
        d = c.expect(raw.DISCONNECT)
        assert d.reason == 0x95, d
        c.expect_closed()
    with socket.create_connection(("127.0.0.1", b.mqtt_port), timeout=WAIT) as s:  # 3.1.1: closed
        s.sendall(mqtt311_connect("huge-3"))
        assert recv_exact(s, 4) == b"\x20\x02\x00\x00"
        s.sendall(bytes([raw.PUBLISH << 4]) + huge + b"\x00\x01a")
        assert read_until_eof(s) == b""
    grown = (rss_kib(b) - rss_before) // 1024
    assert grown < 16, f"RSS grew by {grown} MiB"
    mqtt_round_trip(b)


# ---------------------------------------------------------------------------------------------
# Connection limits

NODE_LIMIT = "NOT_ALLOWED - connection refused: node connection limit (200) is reached"


async def _read_frame(r: asyncio.StreamReader):
    head = await r.readexactly(7)
    size = struct.unpack(">I", head[3:7])[0]
    rest = await r.readexactly(size + 1)
    return frame.unmarshal(head + rest)[2]


async def _amqp_open(port: int, held: list, user: str = "guest", password: str = "guest"):
    """A raw AMQP handshake up to connection.open. Admitted: the connection is kept in `held`
    and None returned. Refused: the close is answered, the socket read to its end, and the
    reply (code, text) returned."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(PROTOCOL_HEADER)
        assert isinstance(await _read_frame(r), commands.Connection.Start)
        w.write(frame.marshal(commands.Connection.StartOk(
            client_properties={"product": "flood"}, mechanism="PLAIN",
            response=f"\0{user}\0{password}", locale="en_US"), 0))
        assert isinstance(await _read_frame(r), commands.Connection.Tune)
        w.write(frame.marshal(commands.Connection.TuneOk(channel_max=0, frame_max=131072, heartbeat=0), 0)
                + frame.marshal(commands.Connection.Open(virtual_host="/"), 0))
        reply = await _read_frame(r)
        if isinstance(reply, commands.Connection.OpenOk):
            held.append((r, w))
            return None
        assert isinstance(reply, commands.Connection.Close), reply
        w.write(frame.marshal(commands.Connection.CloseOk(), 0))
        await r.read()  # to the end of the stream
        w.close()
        return reply.reply_code, reply.reply_text
    except BaseException:
        w.close()
        raise


async def _close_held(held: list):
    """Closes admitted connections properly and waits for the broker's end of stream: by then
    it has given their places back."""
    async def one(r, w):
        w.write(frame.marshal(commands.Connection.Close(reply_code=200, reply_text="bye",
                                                        class_id=0, method_id=0), 0))
        assert isinstance(await _read_frame(r), commands.Connection.CloseOk)
        await r.read()
        w.close()
    await asyncio.gather(*(one(r, w) for r, w in held))
    held.clear()


async def _flood(port: int, n: int, held: list, concurrency: int = 400):
    sem = asyncio.Semaphore(concurrency)

    async def attempt():
        async with sem:
            return await _amqp_open(port, held)
    return await asyncio.gather(*(attempt() for _ in range(n)))


def paho_connect_rc(b, version):
    """A paho CONNECT's outcome (its reason code), whatever it is."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{uuid.uuid4().hex[:6]}", protocol=version)
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: got.put(rc)
    c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    try:
        return got.get(timeout=WAIT)
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.mark.timeout(180)
def test_connection_flood_is_refused_the_protocols_way_and_nothing_leaks(hostile):
    """2,000 AMQP connections opened as fast as we can against `max_connections = 200` (one
    count for every protocol): 200 open, 1,800 get RabbitMQ's 530; while the 200 are held,
    pika, paho (v5 and 3.1.1), raw MQTT and XMPP are all refused the protocol's way; once the
    flood is gone, exactly 200 connections are admitted again (no place leaked) and every
    well-behaved client is served."""
    b = hostile(limits="max_connections = 200\n")
    pw = add_users(b, "alice")["alice"]
    amqp_round_trip(b)  # also warms the password cache before the flood
    held: list = []
    loop = asyncio.new_event_loop()
    try:
        t0 = time.monotonic()
        results = loop.run_until_complete(asyncio.wait_for(_flood(b.port, 2000, held), 120))
        took = time.monotonic() - t0
        refusals = [r for r in results if r is not None]
        assert len(held) == 200, f"{len(held)} admitted"
        assert len(refusals) == 1800
        assert set(refusals) == {(530, NODE_LIMIT)}, set(refusals)

        # Every protocol shares the count: all refused now, the protocol's way.
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
            b.connect()
        assert "(530)" in str(ei.value) and NODE_LIMIT in str(ei.value), ei.value
        rc = paho_connect_rc(b, mqtt.MQTTv5)
        assert rc.is_failure and rc.value == 0x97, rc  # Quota exceeded
        rc = paho_connect_rc(b, mqtt.MQTTv311)
        assert rc.is_failure and str(rc) == "Server unavailable", rc  # 0x03 on the wire
        with socket.create_connection(("127.0.0.1", b.mqtt_port), timeout=WAIT) as s:
            s.sendall(mqtt311_connect("raw-3"))
            assert recv_exact(s, 4) == b"\x20\x02\x00\x03"  # 3.1.1 CONNACK: server unavailable
            assert read_until_eof(s) == b""
        with raw.RawMQTT(b.mqtt_port, timeout=WAIT) as c:
            c.send(raw.connect_packet("raw-5"))
            assert c.expect(raw.CONNACK).reason == 0x97
            c.expect_closed()
        with RawXmpp(b.xmpp_port) as c:
            with pytest.raises(StreamClosed) as ei:
                c.open()
            assert ei.value.error == "resource-constraint", c.log()
            assert c.wait_closed()

        # The flood goes; its places come back, all of them.
        loop.run_until_complete(asyncio.wait_for(_close_held(held), 60))
        again = loop.run_until_complete(asyncio.wait_for(_flood(b.port, 201, held, concurrency=1), 60))
        assert len(held) == 200 and again.count((530, NODE_LIMIT)) == 1, (len(held), set(again))
        loop.run_until_complete(asyncio.wait_for(_close_held(held), 60))
    finally:
        for _, w in held:
            w.close()
        loop.close()
    amqp_round_trip(b)
    mqtt_round_trip(b)
    xmpp_round_trip(b, pw)
    assert took < 120


def test_per_user_connection_limit(hostile):
    """`max_connections_per_user = 2`: a third connection of the same user is refused on every
    protocol (AMQP 530 with RabbitMQ's text, MQTT 0x97, XMPP <policy-violation/> after SASL),
    other users are not affected, and a place freed is usable again."""
    b = hostile(limits="max_connections_per_user = 2\n")
    pw = add_users(b, "bob", "alice")
    bob1 = b.connect(user="bob", password=pw["bob"])
    # A paho client logged in as bob (v5).
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bob-2", protocol=mqtt.MQTTv5)
    c.username_pw_set("bob", pw["bob"])
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: got.put(rc)
    c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    assert not got.get(timeout=WAIT).is_failure

    text = "NOT_ALLOWED - connection refused for user 'bob': user connection limit (2) is reached"
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        b.connect(user="bob", password=pw["bob"])
    assert text in str(ei.value), ei.value
    with raw.RawMQTT(b.mqtt_port, timeout=WAIT) as m:
        m.send(_connect_as("bob-3", "bob", pw["bob"]))
        assert m.expect(raw.CONNACK).reason == 0x97
        m.expect_closed()
    with socket.create_connection(("127.0.0.1", b.xmpp_port), timeout=WAIT) as s:
        token = base64.b64encode(f"\0bob\0{pw['bob']}".encode()).decode()
        s.sendall((XMPP_HEADER + f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>").encode())
        text = read_until_eof(s).decode()
        # <success/>, the restarted stream's header, the error, the end of the stream.
        assert "<success" in text and "<policy-violation" in text, text
        assert "user connection limit" not in text and "connection limit for user 'bob' (2)" in text, text
        assert text.endswith("</stream:stream>"), text
    # Others are not affected.
    amqp_round_trip(b, b.connect(user="alice", password=pw["alice"]))
    xmpp_round_trip(b, pw["alice"], "alice")
    # A freed place is usable again (the broker frees it before its end of stream).
    c.disconnect()
    c.loop_stop()
    bob1.close()
    with RawXmpp(b.xmpp_port) as x:
        x.login("bob", pw["bob"], "again")
        xmpp_round_trip(b, pw["bob"], client=x)
        with RawAMQP(b.host, b.port) as a:
            a.handshake(user="bob", password=pw["bob"])


def _connect_as(client_id: str, user: str, password: str) -> bytes:
    """A v5 CONNECT with a user name and password."""
    body = (raw.utf8("MQTT") + bytes([5, 0x02 | 0x80 | 0x40]) + struct.pack("!H", 60)
            + raw.encode_properties(None) + raw.utf8(client_id) + raw.utf8(user) + raw.utf8(password))
    return raw.packet(raw.CONNECT, 0, body)


def test_queue_limit_per_vhost(hostile):
    """`max_queues_per_vhost = 5`: past it queue.declare of a new queue gets RabbitMQ's 406;
    redeclaring an existing one still works, and deleting one makes room."""
    b = hostile(limits="max_queues_per_vhost = 5\n")
    conn = b.connect()
    declared = []
    refusal = None
    for i in range(10):
        ch = conn.channel()
        name = f"limited-{i}"
        try:
            ch.queue_declare(name)
        except pika.exceptions.ChannelClosedByBroker as e:
            refusal = (e.reply_code, e.reply_text, name)
            break
        declared.append(name)
        ch.close()
    assert refusal is not None and 1 <= len(declared) <= 5, declared
    code, text, name = refusal
    assert (code, text) == (
        406, f"PRECONDITION_FAILED - cannot declare queue '{name}': queue limit in vhost '/' (5) is reached")
    ch = conn.channel()
    ch.queue_declare(declared[0])  # an existing queue: fine
    ch.queue_delete(declared[0])
    ch.queue_declare(name)  # room again
    conn.close()
