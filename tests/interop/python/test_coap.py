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


# ---------------------------------------------------------------------------------------------
# CoAPS with certificates (the broker's [tls] setup), cookies and the server's own retransmissions


def make_pki(d: Path):
    """A throwaway CA (trustme), the broker's certificate for 127.0.0.1, and a client
    certificate whose subject CN is the broker user `device7`."""
    import trustme

    ca = trustme.CA()
    files = {"ca": d / "ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for name, issued in (
        ("server", ca.issue_cert("127.0.0.1", "localhost", common_name="localhost")),
        ("client", ca.issue_cert("device7.example", common_name="device7")),
    ):
        files[name] = d / f"{name}.pem"
        files[name].write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
        files[name + "_key"] = d / f"{name}.key"
        issued.private_key_pem.write_to_path(str(files[name + "_key"]))
    return files


def start_coaps_broker(pki, fail_if_no_peer_cert: bool = False, extra: str = "") -> TributaryBroker:
    tls = f"""
[tls]
certificate = "{pki['server']}"
key = "{pki['server_key']}"
ca_certificate = "{pki['ca']}"
verify = "verify_peer"
fail_if_no_peer_cert = {"true" if fail_if_no_peer_cert else "false"}
"""
    b = start_broker(extra=tls + extra, listeners='coap = "127.0.0.1:0"\ncoaps = "127.0.0.1:0"\n')
    b.coaps_port = wait_port(b, "coaps")
    return b


def dtls_client_bin() -> str:
    binary = coap_client_bin()
    if binary is None or binary.endswith("-notls"):
        pytest.fail("coap-client with DTLS not found: install Debian's libcoap3-bin", pytrace=False)
    return binary


def test_dtls_client_certificate_logs_in_as_its_common_name(tmp_path):
    """coap-client -c/-j/-C: the server's [tls] certificate is verified by the client, the
    client's certificate by the broker against [tls] ca_certificate, and its CN is the user."""
    dtls_client_bin()
    pki = make_pki(tmp_path)
    b = start_coaps_broker(pki)
    try:
        b.add_user("device7", "unused-password", permissions=(".*", ".*", ".*"))
        b.cli("user", "set_topic_permissions", "device7", "amq.topic", "^dev7\\..*", "^dev7\\..*")
        sub, got = mqtt_subscriber(b, "dev7/#")
        base = f"coaps://127.0.0.1:{b.coaps_port}"
        cert = ["-c", str(pki["client"]), "-j", str(pki["client_key"]), "-C", str(pki["ca"])]
        r = coap_client(*cert, "-m", "put", "-e", "signed", f"{base}/ps/dev7/t")
        assert r.returncode == 0, r
        m = got.get(timeout=WAIT)
        assert (m.topic, m.payload) == ("dev7/t", b"signed")
        sub.loop_stop()
        # The certificate's user is device7: its topic permissions apply.
        r = coap_client(*cert, "-m", "put", "-e", "x", f"{base}/ps/other/t")
        assert b"4.03" in r.stdout + r.stderr, r
        # Without a client certificate (allowed: fail_if_no_peer_cert = false) the request
        # acts as the query's user, here guest from loopback.
        r = coap_client("-C", str(pki["ca"]), "-m", "get", f"{base}/.well-known/core")
        assert b"</ps>" in r.stdout, r
        # A client certificate from another CA fails the handshake; the broker keeps serving.
        (tmp_path / "other").mkdir()
        other = make_pki(tmp_path / "other")
        r = coap_client("-B", "3", "-c", str(other["client"]), "-j", str(other["client_key"]),
                        "-n", "-m", "put", "-e", "x", f"{base}/ps/dev7/t")
        assert b"2.04" not in r.stdout, r
        r = coap_client(*cert, "-m", "get", f"{base}/.well-known/core")
        assert b"</ps>" in r.stdout, r
    finally:
        stop_broker(b)


class FilterProxy:
    """A UDP proxy between one client and the broker; `drop_up(data)` / `drop_down(data)`
    decide whether a datagram from the client / from the broker is dropped. Every datagram
    is recorded with the verdict, in order (`log`: (direction, data, dropped))."""

    def __init__(self, target_port: int, drop_up=lambda d: False, drop_down=lambda d: False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.connect(("127.0.0.1", target_port))
        self.port = self.sock.getsockname()[1]
        self.client = None
        self.drop_up, self.drop_down = drop_up, drop_down
        self.log: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._up, self._down)]
        for t in self.threads:
            t.start()

    def _up(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.client = addr
            with self.lock:
                dropped = self.drop_up(data)
                self.log.append(("up", data, dropped))
            if not dropped:
                self.upstream.send(data)

    def _down(self):
        self.upstream.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = self.upstream.recv(65535)
            except TimeoutError:
                continue
            with self.lock:
                dropped = self.drop_down(data)
                self.log.append(("down", data, dropped))
            if not dropped:
                self.sock.sendto(data, self.client)

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        self.sock.close()
        self.upstream.close()


def dtls_handshake_type(d: bytes) -> int | None:
    """The handshake message type of a datagram that opens with a DTLS handshake record
    of epoch 0 (RFC 6347 §4.1: 13-byte record header, then the handshake header)."""
    if len(d) > 25 and d[0] == 22 and d[3:5] == b"\0\0":
        return d[13]
    return None


CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST = 1, 2, 3


def test_dtls_cookie_exchange_and_the_server_resends_its_lost_flight(tmp_path):
    """The first ClientHello gets a HelloVerifyRequest no larger than itself (a spoofed
    source gets no certificate flight). Then the proxy drops the server's first
    ServerHello flight and every later ClientHello retransmission of the client: the
    handshake can only finish if the server resends its flight on its own timer."""
    dtls_client_bin()
    pki = make_pki(tmp_path)
    b = start_coaps_broker(pki)
    state = {"server_hello_dropped": False}

    def drop_down(d: bytes) -> bool:
        if dtls_handshake_type(d) == SERVER_HELLO and not state["server_hello_dropped"]:
            state["server_hello_dropped"] = True
            return True
        return False

    def drop_up(d: bytes) -> bool:
        return state["server_hello_dropped"] and dtls_handshake_type(d) == CLIENT_HELLO

    proxy = FilterProxy(b.coaps_port, drop_up=drop_up, drop_down=drop_down)
    try:
        sub, got = mqtt_subscriber(b, "flight/#")
        cert = ["-c", str(pki["client"]), "-j", str(pki["client_key"]), "-C", str(pki["ca"])]
        b.add_user("device7", "unused-password", permissions=(".*", ".*", ".*"))
        r = coap_client(*cert, "-m", "put", "-e", "through", f"coaps://127.0.0.1:{proxy.port}/ps/flight/t")
        assert r.returncode == 0, r
        m = got.get(timeout=WAIT)
        assert (m.topic, m.payload) == ("flight/t", b"through")
        sub.loop_stop()
        with proxy.lock:
            log = list(proxy.log)
        ups = [d for (way, d, _) in log if way == "up"]
        downs = [d for (way, d, _) in log if way == "down"]
        # Cookie exchange: ClientHello, then a HelloVerifyRequest no larger than it.
        assert dtls_handshake_type(ups[0]) == CLIENT_HELLO, ups[0][:16]
        assert dtls_handshake_type(downs[0]) == HELLO_VERIFY_REQUEST, downs[0][:16]
        assert len(downs[0]) <= len(ups[0])
        # The ServerHello flight went twice, the first one dropped, and no ClientHello
        # after the drop reached the server.
        hellos = [dropped for (way, d, dropped) in log if way == "down" and dtls_handshake_type(d) == SERVER_HELLO]
        assert hellos[:2] == [True, False], hellos
    finally:
        proxy.close()
        stop_broker(b)


# ---------------------------------------------------------------------------------------------
# Observability, lost notification ACKs, limits, and which topic a wildcard notification is for


def http_get(b, path: str):
    import requests

    r = requests.get(f"http://127.0.0.1:{wait_port(b, 'http')}{path}", auth=("guest", "guest"), timeout=WAIT)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r


def coap_connections(b):
    return [c for c in http_get(b, "/api/connections").json() if c["tributary_protocol"] == "coap"]


def metric(b, name: str) -> int:
    m = re.search(rf"^{name} (\d+)$", http_get(b, "/metrics").text, re.M)
    assert m, f"no {name} in /metrics"
    return int(m.group(1))


@pytest.mark.asyncio
async def test_observations_in_the_api_and_metrics_wildcard_location_and_operator_close(coap_broker):
    import requests
    from urllib.parse import quote

    b = coap_broker
    proxy = FilterProxy(b.coap_port)  # drops nothing: it shows what went on the wire
    ctx = await aiocoap.Context.create_client_context()
    try:
        wild = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri(b, "/ps/loc/%23", proxy.port), observe=0))
        exact = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri(b, "/ps/loc/exact", proxy.port), observe=0))
        tokens = []
        for pr in (wild, exact):
            first = await asyncio.wait_for(pr.response, WAIT)
            assert first.code == aiocoap.CONTENT and first.opt.observe is not None, first
            tokens.append(first.token)
        wild_n, exact_n = wild.observation.__aiter__(), exact.observation.__aiter__()
        # A wildcard observation's notification names the matching topic's resource
        # (/ps/<topic>) in Location-Path options; a plain topic's does not need to.
        mqtt_publish(b, "loc/exact", b"1")
        n = await asyncio.wait_for(wild_n.__anext__(), WAIT)
        assert (n.payload, n.opt.location_path) == (b"1", ("ps", "loc", "exact")), n
        e = await asyncio.wait_for(exact_n.__anext__(), WAIT)
        assert (e.payload, e.opt.location_path) == (b"1", ()), e
        mqtt_publish(b, "loc/a/b", b"2")
        n = await asyncio.wait_for(wild_n.__anext__(), WAIT)
        assert (n.payload, n.opt.location_path) == (b"2", ("ps", "loc", "a", "b")), n

        # The management API lists them, per peer and in all.
        obs = sorted(http_get(b, "/api/coap/observations").json(), key=lambda o: o["topic_filter"])
        assert [o["topic_filter"] for o in obs] == ["loc/#", "loc/exact"], obs
        o = obs[0]
        assert (o["user"], o["vhost"], o["peer_host"], o["notifications"]) == ("guest", "/", "127.0.0.1", 2), o
        assert o["queue"].startswith("coap-observe-") and o["since"] > 0 and o["confirmable"] is True, o
        conns = coap_connections(b)
        assert [(c["name"], c["coap_observations"]) for c in conns] == [(o["connection"], 2)], conns
        assert metric(b, "tributary_coap_observations") == 2

        # Closing the peer from the API ends its observations with a last 5.03
        # notification (RFC 7641: an error notification ends an observation).
        port = wait_port(b, "http")
        r = requests.delete(f"http://127.0.0.1:{port}/api/connections/{quote(o['connection'], safe='')}",
                            auth=("guest", "guest"), timeout=WAIT)
        assert r.status_code == 204, r.text
        for it in (wild_n, exact_n):
            # aiocoap ends the iteration (it may or may not yield the 5.03 first).
            with pytest.raises(StopAsyncIteration):
                while True:
                    last = await asyncio.wait_for(it.__anext__(), WAIT)
                    assert last.code == aiocoap.SERVICE_UNAVAILABLE and last.opt.observe is None, last
        with proxy.lock:
            final = [aiocoap.Message.decode(d) for (way, d, _) in proxy.log
                     if way == "down" and d[1] == aiocoap.SERVICE_UNAVAILABLE]
        assert sorted(m.token for m in final) == sorted(tokens), final
        assert all(m.mtype == aiocoap.NON and m.opt.observe is None for m in final), final
        assert http_get(b, "/api/coap/observations").json() == []
        assert metric(b, "tributary_coap_observations") == 0
    finally:
        await ctx.shutdown()
        proxy.close()


def coap_type(d: bytes) -> int:
    return (d[0] >> 4) & 3


CON, NON, ACK, RST = 0, 1, 2, 3


@pytest.mark.asyncio
async def test_con_notification_resent_when_the_observers_ack_is_lost(coap_broker):
    """The observer's first ACK (of the first CON notification) is dropped: the broker
    resends the notification with the same message id, and the observation goes on."""
    b = coap_broker
    state = {"dropped": None}

    def drop_up(d: bytes) -> bool:
        if state["dropped"] is None and coap_type(d) == ACK and d[1] == 0:
            state["dropped"] = d
            return True
        return False

    proxy = FilterProxy(b.coap_port, drop_up=drop_up)
    ctx = await aiocoap.Context.create_client_context()
    try:
        pr = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri(b, "/ps/retx/n", proxy.port), observe=0))
        first = await asyncio.wait_for(pr.response, WAIT)
        assert first.opt.observe is not None
        it = pr.observation.__aiter__()
        mqtt_publish(b, "retx/n", b"first")
        n1 = await asyncio.wait_for(it.__anext__(), WAIT)
        assert n1.payload == b"first"
        # Wait for the resent notification: the broker's second copy, same message id.
        deadline = time.monotonic() + WAIT
        while True:
            with proxy.lock:
                mid = struct.unpack("!H", state["dropped"][2:4])[0] if state["dropped"] else None
                copies = [d for (way, d, _) in proxy.log
                          if way == "down" and coap_type(d) == CON and struct.unpack("!H", d[2:4])[0] == mid]
            if len(copies) >= 2:
                break
            assert time.monotonic() < deadline, "the CON notification was not resent"
            await asyncio.sleep(0.05)  # polling the proxy's log, bounded
        assert state["dropped"] is not None and copies[0] == copies[1]
        # The observation continues, and the duplicate was not a second notification.
        mqtt_publish(b, "retx/n", b"second")
        n2 = await asyncio.wait_for(it.__anext__(), WAIT)
        assert n2.payload == b"second" and n2.opt.observe > n1.opt.observe
    finally:
        await ctx.shutdown()
        proxy.close()


def raw(mtype, code, mid: int, path: str, payload: bytes = b"", **opts) -> bytes:
    """A raw datagram, encoded by aiocoap's message codec (type, id and token set by hand)."""
    m = aiocoap.Message(code=code, uri_path=tuple(path.split("/")), payload=payload, **opts)
    m.mtype, m.mid, m.token = mtype, mid, mid.to_bytes(2, "big")
    return m.encode()


def udp_socket(b) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", b.coap_port))
    return s


def test_rate_limit_answers_4_29_and_other_addresses_are_served():
    """rate = 1, burst = 5: a flood of 30 CON publishes from one socket gets 4.29 Too Many
    Requests (RFC 8516, with Max-Age) for the first refused one and the rest is dropped;
    another address is served meanwhile."""
    b = start_broker(extra="\n[coap]\nrate = 1\nburst = 5\n")
    try:
        sub, got = mqtt_subscriber(b, "flood/#", qos=0)
        a, other = udp_socket(b), udp_socket(b)
        for i in range(1, 31):
            a.send(raw(aiocoap.CON, aiocoap.PUT, i, "ps/flood/a", str(i).encode()))
        while True:  # bounded by the socket's timeout
            m = aiocoap.Message.decode(a.recv(65535))
            if m.code == aiocoap.TOO_MANY_REQUESTS:
                break
            assert m.code == aiocoap.CHANGED, m
        assert m.mtype == aiocoap.ACK and m.opt.max_age >= 1 and m.token == m.mid.to_bytes(2, "big"), m
        other.send(raw(aiocoap.CON, aiocoap.PUT, 1, "ps/flood/marker", b"m"))
        r = aiocoap.Message.decode(other.recv(65535))
        assert r.code == aiocoap.CHANGED, r
        flood = 0
        while (msg := got.get(timeout=WAIT)).topic != "flood/marker":
            flood += 1
        assert 5 <= flood < 30, flood
        sub.loop_stop()
    finally:
        stop_broker(b)


def test_max_peers_and_max_observations_refuse_with_5_03_and_max_age():
    b = start_broker(extra="\n[coap]\nmax_peers = 1\nmax_observations_per_peer = 2\n")
    try:
        a, other = udp_socket(b), udp_socket(b)
        codes = []
        for i, topic in enumerate(("o/1", "o/2", "o/3"), start=1):
            a.send(raw(aiocoap.CON, aiocoap.GET, i, f"ps/{topic}", observe=0))
            codes.append(aiocoap.Message.decode(a.recv(65535)))
        assert [m.code for m in codes] == [aiocoap.CONTENT, aiocoap.CONTENT, aiocoap.SERVICE_UNAVAILABLE], codes
        assert [m.opt.observe is not None for m in codes] == [True, True, False]
        assert codes[2].opt.max_age == 60
        # A second address is beyond max_peers: 5.03 with Max-Age, nothing kept.
        other.send(raw(aiocoap.CON, aiocoap.GET, 7, ".well-known/core"))
        r = aiocoap.Message.decode(other.recv(65535))
        assert (r.code, r.mtype, r.mid, r.token, r.opt.max_age) == (
            aiocoap.SERVICE_UNAVAILABLE, aiocoap.ACK, 7, (7).to_bytes(2, "big"), 30), r
        assert len(coap_connections(b)) == 1
        # The peer within the bound is still served.
        a.send(raw(aiocoap.CON, aiocoap.GET, 9, ".well-known/core"))
        assert aiocoap.Message.decode(a.recv(65535)).code == aiocoap.CONTENT
    finally:
        stop_broker(b)
