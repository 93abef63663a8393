"""TLS everywhere (docs/security.md, "TLS"): AMQPS, MQTTS, XMPP and HTTPS from one `[tls]`
certificate made by a throwaway CA per test module (trustme), mutual TLS with SASL EXTERNAL
(pika, paho-mqtt, slixmpp with client certificates), certificate reload on SIGHUP without
dropping connections, and how authentication failures are handled (logged with the peer
address, delayed without holding up other connections, 403 ACCESS_REFUSED).

Each test starts its own broker (every listener on 127.0.0.1:0, ports read back from the log).
Tributary only: these tests need our binary, its log and its configuration.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pytest
import pytest_asyncio
import trustme
from pamqp import commands

from amqp_raw import RawAMQP
from xmpp_support import DOMAIN, WAIT, SlixPool, XmppBroker, add_users, skip_unless_tributary, xmpp_factory  # noqa: F401

pytestmark = [skip_unless_tributary]


# ---------------------------------------------------------------------------------------------
# A throwaway PKI


@dataclass
class Pem:
    cert: Path
    key: Path


@dataclass
class Pki:
    ca: trustme.CA
    ca_path: Path
    server: Pem
    dir: Path

    def client(self, common_name: str, *sans: str) -> Pem:
        """A client certificate for `common_name` (and these subject alternative names)."""
        return write_cert(self.ca.issue_cert(*sans, common_name=common_name), self.dir, common_name)

    def server_cert(self, name: str) -> Pem:
        return write_cert(self.ca.issue_cert("localhost", "127.0.0.1", common_name="localhost"),
                          self.dir, name)


def write_cert(issued: trustme.LeafCert, d: Path, name: str) -> Pem:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    pem = Pem(d / f"{tag}.crt", d / f"{tag}.key")
    pem.cert.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(pem.key))
    return pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca_path = d / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    p = Pki(ca=ca, ca_path=ca_path, server=Pem(d / "x", d / "x"), dir=d)
    p.server = p.server_cert("server")
    return p


def tls_config(pki: Pki, server: Pem | None = None, *, fail_if_no_peer_cert: bool = False,
               login_from: str = "common_name", failure_delay_ms: int = 200) -> str:
    server = server or pki.server
    return f"""
[tls]
certificate = "{server.cert}"
key = "{server.key}"
ca_certificate = "{pki.ca_path}"
verify = "verify_peer"
fail_if_no_peer_cert = {"true" if fail_if_no_peer_cert else "false"}
peer_cert_login_from = "{login_from}"

[mqtt]
ssl_cert_login = true

[auth]
failure_delay_ms = {failure_delay_ms}
"""


def port(b: XmppBroker, protocol: str) -> int:
    m = b.wait_log(re.compile(rf"listening protocol={protocol} addr=127\.0\.0\.1:(\d+)"), WAIT)
    assert m, f"no `listening protocol={protocol}` line:\n{b.log_text()[-3000:]}"
    return int(m.group(1))


def client_context(pki: Pki, cert: Pem | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    ctx.check_hostname = True
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def amqps_params(b: XmppBroker, pki: Pki, cert: Pem | None = None, credentials=None,
                 ctx: ssl.SSLContext | None = None) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1", port=port(b, "amqps"),
        ssl_options=pika.SSLOptions(ctx or client_context(pki, cert), server_hostname="localhost"),
        credentials=credentials or pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, stack_timeout=15, blocked_connection_timeout=30)


def round_trip(conn: pika.BlockingConnection, body: bytes = b"hello"):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, body)
    for method, _, got in ch.consume(q, auto_ack=True, inactivity_timeout=WAIT):
        assert method is not None, "no message back within the wait"
        assert got == body
        break
    ch.cancel()
    ch.close()


def presented_certificate(p: int, pki: Pki) -> bytes:
    """The DER certificate a fresh handshake on port `p` presents."""
    with socket.create_connection(("127.0.0.1", p), timeout=WAIT) as s, \
            client_context(pki).wrap_socket(s, server_hostname="localhost") as t:
        return t.getpeercert(binary_form=True)


def der(pem: Pem) -> bytes:
    text = pem.cert.read_text()
    first = text[: text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first)


# ---------------------------------------------------------------------------------------------
# AMQPS


def test_amqps_tls12_and_tls13_with_pika(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    p = port(b, "amqps")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(pki)
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", p), timeout=WAIT) as s, \
                ctx.wrap_socket(s, server_hostname="localhost") as t:
            assert t.version() == version.name.replace("v1_", "v1.")
        conn = pika.BlockingConnection(amqps_params(b, pki, ctx=ctx))
        try:
            round_trip(conn, f"over {version.name}".encode())
        finally:
            conn.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_client_is_refused(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    ctx = client_context(pki)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer TLS 1.1 at all
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", port(b, "amqps")), timeout=WAIT) as s:
        with pytest.raises(ssl.SSLError) as e:
            ctx.wrap_socket(s, server_hostname="localhost")
    # The server's own refusal (an alert it sent: rustls answers a TLS 1.1-only hello with
    # handshake_failure), not a local one such as "no protocols available".
    text = str(e.value).upper()
    assert "ALERT_HANDSHAKE_FAILURE" in text or "ALERT_PROTOCOL_VERSION" in text, e.value


# ---------------------------------------------------------------------------------------------
# SASL EXTERNAL over AMQPS


def test_external_logs_in_as_the_certificate_user(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    b.add_user("alice", "not-used-" + uuid.uuid4().hex)
    conn = pika.BlockingConnection(
        amqps_params(b, pki, pki.client("alice"), credentials=pika.credentials.ExternalCredentials()))
    try:
        round_trip(conn)
    finally:
        conn.close()
    assert b.wait_log(re.compile(r'AMQP connection opened.*user="?alice\b'), WAIT), b.log_text()[-3000:]


def test_external_login_from_subject_alternative_name(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki, login_from="subject_alternative_name"))
    b.add_user("bob.example.com", "not-used-" + uuid.uuid4().hex)
    cert = pki.client("someone-else", "bob.example.com")
    conn = pika.BlockingConnection(
        amqps_params(b, pki, cert, credentials=pika.credentials.ExternalCredentials()))
    conn.close()
    assert b.wait_log(re.compile(r'AMQP connection opened.*user="?bob\.example\.com\b'), WAIT)


def test_external_for_an_unknown_user_is_refused_with_403(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    r = RawAMQP("127.0.0.1", port(b, "amqps"))
    r.sock = client_context(pki, pki.client("mallory")).wrap_socket(r.sock, server_hostname="localhost")
    with r:
        r.send_bytes(b"AMQP\x00\x00\x09\x01")
        start = r.expect(commands.Connection.Start)
        assert start.mechanisms.split()[0] == "EXTERNAL"
        r.send(commands.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="EXTERNAL", response="", locale="en_US"))
        close = r.expect(commands.Connection.Close)
        assert close.reply_code == 403
        assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL")
    # pika sees the same refusal.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match="403"):
        pika.BlockingConnection(amqps_params(b, pki, pki.client("mallory"),
                                             credentials=pika.credentials.ExternalCredentials()))
    assert b.wait_log(re.compile(r"AMQP login refused.*peer=127\.0\.0\.1:\d+.*user=mallory"), WAIT)


def test_external_is_not_offered_without_a_verified_certificate(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    with RawAMQP("127.0.0.1", b.port) as r:  # plain TCP
        r.send_bytes(b"AMQP\x00\x00\x09\x01")
        assert "EXTERNAL" not in r.expect(commands.Connection.Start).mechanisms.split()
    r = RawAMQP("127.0.0.1", port(b, "amqps"))  # TLS without a client certificate
    r.sock = client_context(pki).wrap_socket(r.sock, server_hostname="localhost")
    with r:
        r.send_bytes(b"AMQP\x00\x00\x09\x01")
        assert "EXTERNAL" not in r.expect(commands.Connection.Start).mechanisms.split()
    with pytest.raises(pika.exceptions.AuthenticationError):
        pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=b.port, credentials=pika.credentials.ExternalCredentials(),
            connection_attempts=1, socket_timeout=5))


def test_fail_if_no_peer_cert_refuses_a_client_without_one(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki, fail_if_no_peer_cert=True))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(amqps_params(b, pki))
    # With a certificate (and PLAIN) the same listener lets the client in.
    conn = pika.BlockingConnection(amqps_params(b, pki, pki.client("anyone")))
    round_trip(conn)
    conn.close()


# ---------------------------------------------------------------------------------------------
# MQTTS with ssl_cert_login


def test_mqtts_client_certificate_login(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    b.add_user("sensor-7", "not-used-" + uuid.uuid4().hex)
    cert = pki.client("sensor-7")
    connected = threading.Event()
    codes = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-" + uuid.uuid4().hex[:8])
    c.on_connect = lambda cl, ud, flags, rc, props: (codes.append(rc), connected.set())
    c.tls_set(ca_certs=str(pki.ca_path), certfile=str(cert.cert), keyfile=str(cert.key))
    c.connect("127.0.0.1", port(b, "mqtts"))  # no username, no password
    c.loop_start()
    try:
        assert connected.wait(WAIT), "no CONNACK"
        assert not codes[0].is_failure, codes
    finally:
        c.disconnect()
        c.loop_stop()
    assert b.wait_log(re.compile(r"MQTT connection opened.*user=sensor-7"), WAIT), b.log_text()[-3000:]


def test_mqtts_certificate_of_an_unknown_user_is_refused(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    cert = pki.client("nobody")
    connected = threading.Event()
    codes = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-" + uuid.uuid4().hex[:8])
    c.on_connect = lambda cl, ud, flags, rc, props: (codes.append(rc), connected.set())
    c.tls_set(ca_certs=str(pki.ca_path), certfile=str(cert.cert), keyfile=str(cert.key))
    c.connect("127.0.0.1", port(b, "mqtts"))
    c.loop_start()
    try:
        assert connected.wait(WAIT), "no CONNACK"
        assert codes[0].is_failure, codes
    finally:
        c.disconnect()
        c.loop_stop()
    assert b.wait_log(re.compile(r"MQTT login refused.*peer=127\.0\.0\.1:\d+.*user=nobody"), WAIT)


# ---------------------------------------------------------------------------------------------
# XMPP SASL EXTERNAL (XEP-0178)


@pytest_asyncio.fixture
async def slix():
    pool = SlixPool()
    try:
        yield pool
    finally:
        await pool.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
async def test_xmpp_external_with_a_client_certificate(xmpp_factory, pki, slix, direct_tls):
    b = xmpp_factory(tls_config(pki))
    add_users(b, "carol")
    cert = pki.client("carol")
    c = slix.new(b, "carol", "", "cert", mech="EXTERNAL", direct_tls=direct_tls)
    c.c.ca_certs = pki.ca_path
    c.c.certfile, c.c.keyfile = str(cert.cert), str(cert.key)
    await c.start()
    assert c.jid == f"carol@{DOMAIN}/cert"
    assert c.c.plugin["feature_mechanisms"].mech.name == "EXTERNAL"


@pytest.mark.asyncio
async def test_xmpp_external_for_another_account_fails(xmpp_factory, pki, slix):
    b = xmpp_factory(tls_config(pki))
    add_users(b, "carol", "dave")
    cert = pki.client("dave")
    c = slix.new(b, "carol", "", "cert", mech="EXTERNAL")
    c.c.ca_certs = pki.ca_path
    c.c.certfile, c.c.keyfile = str(cert.cert), str(cert.key)
    # Asking to act as carol with dave's certificate (XEP-0178 authzid).
    c.c.credentials["authzid"] = f"carol@{DOMAIN}"
    with pytest.raises(AssertionError, match="authentication failed"):
        await c.start()
    assert b.wait_log(re.compile(r"XMPP login refused.*peer=127\.0\.0\.1"), WAIT)


# ---------------------------------------------------------------------------------------------
# HTTPS


def test_https_serves_the_http_routes(xmpp_factory, pki):
    b = xmpp_factory(tls_config(pki))
    answers = []
    for scheme, p, ctx in (("http", b.http_port, None), ("https", port(b, "https"), client_context(pki))):
        # The WebSocket endpoints answer a GET without upgrade headers with a client error.
        try:
            with urllib.request.urlopen(f"{scheme}://localhost:{p}/mqtt", context=ctx, timeout=WAIT) as r:
                answers.append((r.status, r.read()))
        except urllib.error.HTTPError as e:
            answers.append((e.code, e.read()))
    assert answers[0][0] >= 400
    assert answers[0] == answers[1], answers


# ---------------------------------------------------------------------------------------------
# Certificate reload


def test_sighup_reloads_the_certificate_and_keeps_connections(xmpp_factory, pki, tmp_path):
    live = Pem(tmp_path / "live.crt", tmp_path / "live.key")
    live.cert.write_bytes(pki.server.cert.read_bytes())
    live.key.write_bytes(pki.server.key.read_bytes())
    b = xmpp_factory(tls_config(pki, live))
    p = port(b, "amqps")
    assert presented_certificate(p, pki) == der(pki.server)
    conn = pika.BlockingConnection(amqps_params(b, pki))
    try:
        round_trip(conn, b"before")
        new = pki.server_cert("rotated")
        live.cert.write_bytes(new.cert.read_bytes())
        live.key.write_bytes(new.key.read_bytes())
        mark = b.log_mark()
        b.proc.send_signal(signal.SIGHUP)
        assert b.wait_log(re.compile(r"TLS certificate reloaded"), WAIT, start=mark), b.log_text()[-3000:]
        round_trip(conn, b"after")  # the established connection goes on
        assert presented_certificate(p, pki) == der(new)
        assert presented_certificate(port(b, "mqtts"), pki) == der(new)
        assert presented_certificate(b.xmpps_port, pki) == der(new)

        # A broken file: logged, and the certificate in force stays.
        live.cert.write_text("not a certificate")
        mark = b.log_mark()
        b.proc.send_signal(signal.SIGHUP)
        assert b.wait_log(re.compile(r"TLS certificate reload failed"), WAIT, start=mark)
        assert presented_certificate(p, pki) == der(new)
        round_trip(conn, b"still")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Authentication failures


def test_failed_login_is_refused_logged_and_delayed_alone(xmpp_factory, pki):
    # A long delay, so that the ordering below cannot happen by chance.
    b = xmpp_factory(tls_config(pki, failure_delay_ms=5000))
    outcome: list[BaseException] = []
    refused = threading.Event()

    def wrong_password():
        try:
            pika.BlockingConnection(pika.ConnectionParameters(
                host="127.0.0.1", port=b.port, credentials=pika.PlainCredentials("guest", "wrong"),
                connection_attempts=1, socket_timeout=5, stack_timeout=30))
        except BaseException as e:  # noqa: BLE001 (the test inspects it)
            outcome.append(e)
        refused.set()

    t = threading.Thread(target=wrong_password)
    t.start()
    try:
        m = b.wait_log(re.compile(r"AMQP login refused.*peer=(127\.0\.0\.1:\d+).*user=guest"), WAIT)
        assert m, b.log_text()[-3000:]
        # While the refused client waits, another logs in and works.
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=b.port, connection_attempts=1, socket_timeout=5))
        round_trip(conn)
        conn.close()
        assert not refused.is_set(), "the refusal was sent before the delay was over"
        assert refused.wait(WAIT + 5), "no refusal"
    finally:
        t.join(WAIT + 5)
    assert isinstance(outcome[0], pika.exceptions.ProbableAuthenticationError), outcome
    assert "ACCESS_REFUSED" in str(outcome[0]), outcome
