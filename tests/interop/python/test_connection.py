"""Connection level: login, vhosts, protocol header, capabilities, heartbeats, close."""

import socket
import time

import pika
import pika.exceptions
import pytest
from pamqp import commands, heartbeat

from amqp_raw import PROTOCOL_HEADER, Closed, RawAMQP
from helpers import pump


def test_good_login_opens_connection_and_channel(broker):
    conn = broker.connect()
    try:
        assert conn.is_open
        ch = conn.channel()
        assert ch.is_open
        ok = ch.queue_declare("", exclusive=True)
        assert ok.method.queue
    finally:
        conn.close()
    assert conn.is_closed


def test_bad_password_is_refused_with_403(broker):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as ei:
        broker.connect(password="definitely-not-guest")
    text = str(ei.value)
    assert "(403)" in text and "ACCESS_REFUSED" in text, text


def test_unknown_user_is_refused_with_403(broker):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as ei:
        broker.connect(user="no-such-user", password="guest")
    assert "(403)" in str(ei.value) and "ACCESS_REFUSED" in str(ei.value)


def test_unknown_vhost_is_refused_with_530(broker):
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        broker.connect(vhost="no-such-vhost")
    text = str(ei.value)
    assert "(530)" in text and "NOT_ALLOWED" in text, text


def test_authentication_failure_close_on_raw_socket(broker):
    """With authentication_failure_close the server says connection.close 403, then closes."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.send_bytes(PROTOCOL_HEADER)
        start = raw.expect(commands.Connection.Start)
        mechanisms = start.mechanisms if isinstance(start.mechanisms, str) else start.mechanisms.decode()
        assert "PLAIN" in mechanisms.split()
        raw.send(commands.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response="\0guest\0wrong", locale="en_US"))
        close = raw.expect(commands.Connection.Close)
        assert close.reply_code == 403
        assert close.reply_text.startswith("ACCESS_REFUSED")
        raw.send(commands.Connection.CloseOk())
        raw.read_until_eof(5)


@pytest.mark.parametrize(
    "sent",
    [
        b"AMQP\x01\x01\x00\x0a",  # AMQP 0-10
        b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    ],
    ids=["amqp-0-10", "amqp-1-0", "http-response", "http-get", "tls-hello"],
)
def test_wrong_protocol_header_gets_our_header_and_close(broker, sent):
    with RawAMQP(broker.host, broker.port) as raw:
        raw.send_bytes(sent)
        got = raw.read_until_eof(timeout=5)
        assert got == PROTOCOL_HEADER


def test_server_properties_advertise_capabilities(conn):
    props = conn._impl.server_properties
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "connection.blocked",
                "authentication_failure_close", "per_consumer_qos"):
        assert caps.get(cap) is True, f"capability {cap!r} missing or false: {caps}"
    assert props.get("product"), props


def test_tune_proposes_configured_limits(broker):
    """The test config asks for heartbeat 60, frame_max 131072, channel_max 2047 (also RabbitMQ's defaults)."""
    with RawAMQP(broker.host, broker.port) as raw:
        tune = raw.handshake()
        assert (tune.heartbeat, tune.frame_max, tune.channel_max) == (60, 131072, 2047)
        start = raw.start
        assert (start.version_major, start.version_minor) == (0, 9)
        assert start.server_properties["capabilities"]["publisher_confirms"] is True
        assert "en_US" in start.locales


def test_heartbeat_negotiated_keeps_idle_connection_alive(broker):
    conn = broker.connect(heartbeat=2)
    try:
        assert conn._impl.params.heartbeat == 2
        pump(conn, 5.0)  # > 2 intervals, nothing but heartbeats on the wire
        assert conn.is_open
        checker = conn._impl._heartbeat_checker
        assert checker is not None
        assert checker._heartbeat_frames_received >= 1, "server sent no heartbeat in 5 s at heartbeat=2"
        ch = conn.channel()
        ch.queue_declare("", exclusive=True)  # still usable
    finally:
        conn.close()


def test_server_sends_heartbeats_and_accepts_ours(broker):
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake(heartbeat_s=1)
        received = 0
        deadline = time.monotonic() + 4.0
        next_beat = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_beat:
                raw.send(heartbeat.Heartbeat())
                next_beat = now + 0.4
            try:
                _, value = raw.recv_frame(timeout=0.2)
            except TimeoutError:
                continue
            assert isinstance(value, heartbeat.Heartbeat), value
            received += 1
        assert received >= 2, f"only {received} heartbeat frames from the server in 4 s at heartbeat=1"
        raw.open_channel(1)  # the connection survived


def test_silent_client_is_dropped_after_missed_heartbeats(broker):
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake(heartbeat_s=1)
        t0 = time.monotonic()
        # From now on we send nothing. The server must give up on us.
        raw.read_until_eof(timeout=15)
        elapsed = time.monotonic() - t0
        assert elapsed >= 1.0, f"dropped after {elapsed:.2f}s, before even one heartbeat interval"


def test_client_close_gets_close_ok_and_eof(broker):
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        ok = raw.connection_close()
        assert isinstance(ok, commands.Connection.CloseOk)
        # Nothing may follow close-ok; the client closes the socket (spec 4.2.2).
        try:
            extra = raw.read_until_eof(0.5)
        except TimeoutError:
            extra = b""
        assert extra == b""


def test_pika_close(broker):
    conn = broker.connect()
    conn.channel()
    conn.close()
    assert conn.is_closed
    # The broker is still serving others.
    other = broker.connect()
    assert other.is_open
    other.close()


def test_abrupt_tcp_close_does_not_hurt_broker(broker):
    for _ in range(3):
        s = socket.create_connection((broker.host, broker.port), timeout=5)
        s.sendall(PROTOCOL_HEADER)
        s.close()
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.send_bytes(b"\x01\x00")  # half a frame, then vanish
    conn = broker.connect()
    assert conn.is_open
    conn.close()


def test_frame_on_unopened_channel_is_a_connection_error(broker):
    """Spec: a method on a channel that is not open is a connection exception 504 CHANNEL_ERROR."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.send(commands.Queue.Declare(queue="", exclusive=True), 7)
        close = raw.expect(commands.Connection.Close)
        assert close.reply_code == 504, close
        raw.send(commands.Connection.CloseOk())
        try:
            raw.read_until_eof(5)
        except Closed:
            pass
