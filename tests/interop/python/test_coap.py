"""CoAP (issue 16) with real clients: aiocoap and libcoap's coap-client, against the
`[listeners] coap` UDP listener. Publish over CoAP -> MQTT (paho) and AMQP (pika);
MQTT -> CoAP Observe; retained GET/DELETE; block-wise 64 KiB both ways; a lost ACK and
the client's retransmission (a test UDP proxy); a denied topic; malformed datagrams;
/.well-known/core. Tributary only."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import aiocoap
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import CONFIG, TARGET, TributaryBroker

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="needs Tributary's CoAP listener")

WAIT = 20


def coap_client_bin() -> str | None:
    """libcoap's client: Debian's libcoap3-bin installs it as coap-client-<tls library>."""
    for name in ("coap-client", "coap-client-openssl", "coap-client-gnutls", "coap-client-notls"):
        if path := shutil.which(name):
            return path
    return None


def start_broker(extra: str = "", listeners: str = 'coap = "127.0.0.1:0"\n') -> TributaryBroker:
    root = Path(tempfile.mkdtemp(prefix="tributary-coap-"))
    b = TributaryBroker(root)
    b.config_text = CONFIG.replace("[listeners]\n", "[listeners]\n" + listeners, 1) + extra
    b.start()
    b.coap_port = wait_port(b, "coap") if "coap =" in listeners else None
    b.mqtt_port = wait_port(b, "mqtt")
    return b


def wait_port(b: TributaryBroker, protocol: str) -> int:
    deadline = time.monotonic() + WAIT
    pattern = rf"listening protocol={protocol} addr=127\.0\.0\.1:(\d+)"
    while not (m := re.search(pattern, b.log_text())):
        assert time.monotonic() < deadline, f"no `listening protocol={protocol}` line"
        time.sleep(0.02)  # polling the log for the line, bounded
    return int(m.group(1))


def stop_broker(b: TributaryBroker):
    problems = b.stop()
    shutil.rmtree(b.root, ignore_errors=True)
    assert not problems, problems


@pytest.fixture
def coap_broker():
    b = start_broker()
    try:
        yield b
    finally:
        stop_broker(b)


def mqtt_subscriber(b, topic: str, qos: int = 1):
    got: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{time.monotonic_ns()}")
    c.on_message = lambda _c, _u, m: got.put(m)
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos)
    c.connect("127.0.0.1", b.mqtt_port)
    c.loop_start()
    assert subscribed.wait(WAIT), "no SUBACK"
    return c, got


def mqtt_publish(b, topic: str, payload: bytes, retain: bool = False, qos: int = 1):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    c.connect("127.0.0.1", b.mqtt_port)
    c.loop_start()
    c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(WAIT)
    c.disconnect()
    c.loop_stop()


def uri(b, path: str, port: int | None = None) -> str:
    return f"coap://127.0.0.1:{port or b.coap_port}{path}"


async def request(ctx, code, url: str, payload: bytes = b"", mtype=None, **opts):
    msg = aiocoap.Message(code=code, uri=url, payload=payload, **opts)
    if mtype is not None:
        msg.mtype = mtype
    return await asyncio.wait_for(ctx.request(msg).response, WAIT)


def coap_client(*args: str) -> subprocess.CompletedProcess:
    binary = coap_client_bin()
    if binary is None:
        pytest.fail("coap-client not found: install Debian's libcoap3-bin", pytrace=False)
    return subprocess.run([binary, *args], capture_output=True, timeout=WAIT, stdin=subprocess.DEVNULL)


@pytest.mark.asyncio
async def test_coap_publish_reaches_mqtt_and_amqp(coap_broker):
    b = coap_broker
    sub, got = mqtt_subscriber(b, "sensors/+/temp")
    conn = b.connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "sensors.*.temp")
    ctx = await aiocoap.Context.create_client_context()
    try:
        resp = await request(ctx, aiocoap.PUT, uri(b, "/ps/sensors/t1/temp"), b'{"t":21.5}', content_format=50)
        assert resp.code == aiocoap.CHANGED, resp
        resp = await request(ctx, aiocoap.POST, uri(b, "/ps/sensors/t2/temp"), b"19", mtype=aiocoap.NON)
        assert resp.code == aiocoap.CHANGED, resp
    finally:
        await ctx.shutdown()
    m1 = got.get(timeout=WAIT)
    m2 = got.get(timeout=WAIT)
    assert {(m1.topic, m1.payload), (m2.topic, m2.payload)} == {
        ("sensors/t1/temp", b'{"t":21.5}'),
        ("sensors/t2/temp", b"19"),
    }
    # CON is QoS 1, NON QoS 0 (as an MQTT publisher's would be).
    assert {m1.topic: m1.qos, m2.topic: m2.qos} == {"sensors/t1/temp": 1, "sensors/t2/temp": 0}
    bodies = {}
    deadline = time.monotonic() + WAIT
    while len(bodies) < 2 and time.monotonic() < deadline:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            conn.process_data_events(0.05)
            continue
        bodies[method.routing_key] = (body, props.content_type)
    assert bodies == {
        "sensors.t1.temp": (b'{"t":21.5}', "application/json"),
        "sensors.t2.temp": (b"19", None),
    }
    sub.loop_stop()
    conn.close()


@pytest.mark.asyncio
async def test_mqtt_publish_notifies_coap_observer(coap_broker):
    b = coap_broker
    ctx = await aiocoap.Context.create_client_context()
    try:
        req = aiocoap.Message(code=aiocoap.GET, uri=uri(b, "/ps/alerts/%23"), observe=0)
        pr = ctx.request(req)
        first = await asyncio.wait_for(pr.response, WAIT)
        assert first.code == aiocoap.CONTENT and first.opt.observe is not None, first
        notifications = pr.observation.__aiter__()
        mqtt_publish(b, "alerts/door", b"open")
        n1 = await asyncio.wait_for(notifications.__anext__(), WAIT)
        mqtt_publish(b, "alerts/window", b"closed")
        n2 = await asyncio.wait_for(notifications.__anext__(), WAIT)
        assert (n1.payload, n2.payload) == (b"open", b"closed")
        assert n2.opt.observe > n1.opt.observe
        # The observation is a queue bound to amq.topic: cancelling it removes it.
        pr.observation.cancel()
    finally:
        await ctx.shutdown()


def test_retained_get_delete_and_well_known_core_with_coap_client(coap_broker):
    b = coap_broker
    mqtt_publish(b, "home/lamp", b"on", retain=True)
    r = coap_client("-m", "get", uri(b, "/ps/home/lamp"))
    assert r.returncode == 0 and r.stdout.strip() == b"on", r
    r = coap_client("-m", "get", uri(b, "/.well-known/core"))
    assert b'</ps>;rt="core.ps"' in r.stdout and b"</ps/home/lamp>" in r.stdout, r
    # A retained publish over CoAP reaches a later MQTT subscriber.
    r = coap_client("-m", "put", "-t", "0", "-e", "42", uri(b, "/ps/home/thermostat?retain=true"))
    assert r.returncode == 0, r
    sub, got = mqtt_subscriber(b, "home/thermostat")
    m = got.get(timeout=WAIT)
    assert (m.payload, m.retain) == (b"42", True)
    sub.loop_stop()
    r = coap_client("-m", "delete", uri(b, "/ps/home/lamp"))
    assert r.returncode == 0, r
    r = coap_client("-m", "get", uri(b, "/ps/home/lamp"))
    assert b"4.04" in r.stdout + r.stderr, r


@pytest.mark.asyncio
async def test_blockwise_64k_both_ways(coap_broker, tmp_path):
    b = coap_broker
    up = os.urandom(64 * 1024)
    sub, got = mqtt_subscriber(b, "big/up")
    ctx = await aiocoap.Context.create_client_context()
    try:
        resp = await request(ctx, aiocoap.PUT, uri(b, "/ps/big/up"), up)
        assert resp.code == aiocoap.CHANGED, resp
        assert got.get(timeout=WAIT).payload == up
        down = os.urandom(64 * 1024)
        mqtt_publish(b, "big/down", down, retain=True)
        resp = await request(ctx, aiocoap.GET, uri(b, "/ps/big/down"))
        assert resp.code == aiocoap.CONTENT and resp.payload == down
    finally:
        await ctx.shutdown()
    # libcoap too, with 512-byte blocks.
    f = tmp_path / "body.bin"
    text = os.urandom(24 * 1024).hex().encode()[: 64 * 1024]
    f.write_bytes(text)
    r = coap_client("-m", "put", "-b", "512", "-f", str(f), uri(b, "/ps/big/up"))
    assert r.returncode == 0, r
    assert got.get(timeout=WAIT).payload == text
    out = tmp_path / "down.bin"
    r = coap_client("-m", "get", "-b", "512", "-o", str(out), uri(b, "/ps/big/down"))
    assert r.returncode == 0 and out.read_bytes() == down, r
    sub.loop_stop()


class DroppingProxy:
    """A UDP proxy between one client and the broker that drops the broker's first
    datagram (the ACK of the client's first CON) and counts what the client sent."""

    def __init__(self, target_port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.connect(("127.0.0.1", target_port))
        self.port = self.sock.getsockname()[1]
        self.client = None
        self.from_client: list[bytes] = []
        self.dropped: list[bytes] = []
        self.stop = threading.Event()
        threading.Thread(target=self._up, daemon=True).start()
        threading.Thread(target=self._down, daemon=True).start()

    def _up(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.client = addr
            self.from_client.append(data)
            self.upstream.send(data)

    def _down(self):
        self.upstream.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = self.upstream.recv(65535)
            except TimeoutError:
                continue
            if not self.dropped:
                self.dropped.append(data)
                continue
            self.sock.sendto(data, self.client)


@pytest.mark.asyncio
async def test_lost_ack_the_retransmission_is_answered_and_published_once(coap_broker):
    b = coap_broker
    sub, got = mqtt_subscriber(b, "retx/#")
    proxy = DroppingProxy(b.coap_port)
    ctx = await aiocoap.Context.create_client_context()
    try:
        resp = await request(ctx, aiocoap.PUT, uri(b, "/ps/retx/a", proxy.port), b"once")
        assert resp.code == aiocoap.CHANGED
        # The client sent the same CON (same message id) at least twice.
        mids = [struct.unpack("!H", d[2:4])[0] for d in proxy.from_client]
        assert len(mids) >= 2 and mids[0] == mids[1], mids
        assert proxy.dropped and struct.unpack("!H", proxy.dropped[0][2:4])[0] == mids[0]
        resp = await request(ctx, aiocoap.PUT, uri(b, "/ps/retx/b", proxy.port), b"marker")
        assert resp.code == aiocoap.CHANGED
    finally:
        await ctx.shutdown()
        proxy.stop.set()
    # Published once: the next message after it is the marker.
    first, second = got.get(timeout=WAIT), got.get(timeout=WAIT)
    assert [(first.topic, first.payload), (second.topic, second.payload)] == [
        ("retx/a", b"once"),
        ("retx/b", b"marker"),
    ]
    sub.loop_stop()


@pytest.mark.asyncio
async def test_permissions_and_bad_credentials(coap_broker):
    b = coap_broker
    b.add_user("dev", "pw", permissions=(".*", ".*", ".*"))
    b.cli("user", "set_topic_permissions", "dev", "amq.topic", "^dev\\..*", "^dev\\..*")
    ctx = await aiocoap.Context.create_client_context()
    try:
        ok = await request(ctx, aiocoap.PUT, uri(b, "/ps/dev/x?u=dev&p=pw"), b"1")
        assert ok.code == aiocoap.CHANGED, ok
        denied = await request(ctx, aiocoap.PUT, uri(b, "/ps/other/x?u=dev&p=pw"), b"1")
        assert denied.code == aiocoap.FORBIDDEN, denied
        denied = await request(ctx, aiocoap.GET, uri(b, "/ps/other/%23?u=dev&p=pw"), observe=0)
        assert denied.code == aiocoap.FORBIDDEN, denied
        bad = await request(ctx, aiocoap.PUT, uri(b, "/ps/dev/x?u=dev&p=wrong"), b"1")
        assert bad.code == aiocoap.UNAUTHORIZED, bad
    finally:
        await ctx.shutdown()


def raw_exchange(sock: socket.socket, datagram: bytes) -> bytes:
    sock.send(datagram)
    return sock.recv(65535)


def test_malformed_datagrams_get_the_rfc_answers_and_others_are_served(coap_broker):
    b = coap_broker
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", b.coap_port))
    # A malformed CON (reserved option nibble 15) gets a Reset with its message id.
    r = raw_exchange(s, b"\x40\x01\x10\x01\xf1")
    assert r == b"\x70\x00\x10\x01", r
    # A malformed NON and a version-2 message are ignored: the next answer is the ping's.
    s.send(b"\x50\x01\x10\x02\xf1")
    s.send(b"\x80\x01\x10\x03")
    r = raw_exchange(s, b"\x40\x00\x10\x04")  # CoAP ping
    assert r == b"\x70\x00\x10\x04", r
    # Unknown critical option 9 -> 4.02; method 0.07 -> 4.05; Content-Format 999 -> 4.15.
    r = raw_exchange(s, b"\x41\x03\x10\x06\x07" + b"\x91z" + b"\x22ps" + b"\xffz")
    assert r[0] & 0x30 == 0x20 and r[1] == (4 << 5 | 2) and r[2:4] == b"\x10\x06", r
    r = raw_exchange(s, b"\x41\x07\x10\x07\x07" + b"\xb2ps" + b"\x01x")
    assert r[1] == (4 << 5 | 5), r
    r = raw_exchange(s, b"\x41\x03\x10\x08\x07" + b"\xb2ps" + b"\x01x" + b"\x12\x03\xe7" + b"\xffz")
    assert r[1] == (4 << 5 | 15), r
    # The broker keeps serving another client.
    r = coap_client("-m", "get", uri(b, "/.well-known/core"))
    assert b"</ps>" in r.stdout, r


def test_dtls_psk_with_coap_client(tmp_path):
    """CoAPS: coap-client's PSK identity logs in as the broker user of that name."""
    binary = coap_client_bin()
    if binary is None or binary.endswith("-notls"):
        pytest.fail("coap-client with DTLS not found: install Debian's libcoap3-bin", pytrace=False)
    psk = tmp_path / "psk.txt"
    psk.write_text("device1:sesame\n")
    b = start_broker(
        extra=f'\n[coap]\npsk_file = "{psk}"\n',
        listeners='coap = "127.0.0.1:0"\ncoaps = "127.0.0.1:0"\n',
    )
    try:
        b.add_user("device1", "unused-password", permissions=(".*", ".*", ".*"))
        coaps_port = wait_port(b, "coaps")
        sub, got = mqtt_subscriber(b, "secure/#")
        url = f"coaps://127.0.0.1:{coaps_port}/ps/secure/t"
        r = coap_client("-k", "sesame", "-u", "device1", "-m", "put", "-e", "sealed", url)
        assert r.returncode == 0, r
        m = got.get(timeout=WAIT)
        assert (m.topic, m.payload) == ("secure/t", b"sealed")
        sub.loop_stop()
        # A wrong key fails the handshake: nothing is published, and the broker keeps serving.
        r = coap_client("-B", "3", "-k", "wrong", "-u", "device1", "-m", "put", "-e", "x", url)
        assert b"2.04" not in r.stdout
        r = coap_client("-k", "sesame", "-u", "device1", "-m", "get", f"coaps://127.0.0.1:{coaps_port}/.well-known/core")
        assert b"</ps>" in r.stdout, r
    finally:
        stop_broker(b)
