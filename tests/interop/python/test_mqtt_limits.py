"""The configurable MQTT limits and the per-listener default vhost (issue 9, "Limits" and
"Tenancy"): `[mqtt] max_packet_size`, `max_inflight`, `receive_maximum` and `tls_vhost`, plus
MQTT 5 re-authentication with SCRAM (docs/mqtt.md).

paho-mqtt where it shows what is tested; the raw client (mqtt_raw) where paho hides the wire
(acknowledgements held back, QoS 2 releases withheld, AUTH packets). Each test starts its own
broker with the configuration it tests."""

from __future__ import annotations

import queue
import re
import ssl
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

import mqtt_raw as raw
from mqtt_raw import RawMQTT
from scram_client import ScramClient
from xmpp_support import WAIT, skip_unless_tributary, xmpp_factory  # noqa: F401  (fixture)

pytestmark = [skip_unless_tributary]

PW = "s3cret-pw"


def port(b, protocol: str) -> int:
    m = b.wait_log(re.compile(rf"listening protocol={protocol} addr=127\.0\.0\.1:(\d+)"), WAIT)
    assert m, f"no `listening protocol={protocol}` line"
    return int(m.group(1))


def paho_v5(b, client_id: str, *, tls: bool = False, username: str | None = None,
            websocket: bool = False):
    """A started paho v5 client (over TCP, MQTTS, or WebSocket over HTTP or HTTPS); returns
    it, its event queue and the CONNACK properties."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                    transport="websockets" if websocket else "tcp")
    if websocket:
        c.ws_set_options(path="/mqtt")
    if username:
        c.username_pw_set(username, PW)
    events: queue.Queue = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: events.put(("connect", rc, props))
    c.on_disconnect = lambda _c, _u, _f, rc, props=None: events.put(("disconnect", rc))
    c.on_message = lambda _c, _u, msg: events.put(("message", msg.topic, msg.payload))
    c.on_subscribe = lambda _c, _u, mid, rcs, props=None: events.put(("suback", [int(r.value) for r in rcs]))
    c.on_publish = lambda _c, _u, mid, rc, props=None: events.put(("puback", mid))
    if tls:
        # The broker's generated self-signed certificate.
        c.tls_set(cert_reqs=ssl.CERT_NONE)
        c.tls_insecure_set(True)
    listener = {(False, False): "mqtt", (True, False): "mqtts", (False, True): "http",
                (True, True): "https"}[(tls, websocket)]
    c.connect("127.0.0.1", port(b, listener), keepalive=30)
    c.loop_start()
    kind, rc, props = events.get(timeout=WAIT)
    assert kind == "connect" and not rc.is_failure, (kind, rc)
    return c, events, props


def next_event(events: queue.Queue, kind: str):
    """The next event of `kind`; anything else on the way fails the test, except paho's
    publish callbacks (it reports QoS 0 publishes too) when waiting for something else."""
    while True:
        ev = events.get(timeout=WAIT)
        if ev[0] == "puback" and kind != "puback":
            continue
        assert ev[0] == kind, f"expected {kind}, got {ev}"
        return ev


def stop(c):
    c.disconnect()
    c.loop_stop()


# -- [mqtt] max_packet_size -------------------------------------------------------------------
def test_a_packet_above_max_packet_size_gets_disconnect_0x95(xmpp_factory):
    b = xmpp_factory("[mqtt]\nmax_packet_size = 1024\n")
    c, events, props = paho_v5(b, "big-" + uuid.uuid4().hex[:6])
    assert props.MaximumPacketSize == 1024, props
    topic = "limits/size"
    c.subscribe(topic, 0)
    assert next_event(events, "suback")[1] == [0]
    # A QoS 0 PUBLISH without properties: 1 + 2 (remaining length) + 2 + topic + 1 + payload.
    overhead = 1 + 2 + 2 + len(topic) + 1
    c.publish(topic, b"x" * (1024 - overhead), 0)  # exactly the limit: accepted
    ev = next_event(events, "message")
    assert len(ev[2]) == 1024 - overhead
    c.publish(topic, b"x" * (1025 - overhead), 0)  # one byte more
    ev = next_event(events, "disconnect")
    assert ev[1].value == 0x95, ev
    c.loop_stop()
    assert b.wait_log(re.compile(r"MQTT protocol error.*1025"), WAIT), b.log_text()[-2000:]


# -- [mqtt] max_inflight ----------------------------------------------------------------------
def test_max_inflight_holds_qos1_deliveries_until_they_are_acked(xmpp_factory):
    b = xmpp_factory("[mqtt]\nmax_inflight = 2\n")
    mqtt_port = port(b, "mqtt")
    with RawMQTT(mqtt_port, timeout=WAIT) as sub, RawMQTT(mqtt_port, timeout=WAIT) as pub:
        sub.connect("inflight-sub")
        assert sub.subscribe("win/#", 1) == [1]
        pub.connect("inflight-pub")
        for i in range(5):
            pid = pub.publish("win/t", f"m{i}".encode(), qos=1)
            assert pub.expect(raw.PUBACK).packet_id == pid  # routed to the subscriber's queue
        got = [sub.expect(raw.PUBLISH) for _ in range(2)]
        assert [p.payload for p in got] == [b"m0", b"m1"]
        sub.ping()  # nothing else came before the PINGRESP: the window is full
        sub.ack(raw.PUBACK, got[0].packet_id)
        third = sub.expect(raw.PUBLISH)
        assert third.payload == b"m2"
        sub.ping()
        sub.ack(raw.PUBACK, got[1].packet_id)
        sub.ack(raw.PUBACK, third.packet_id)
        rest = [sub.expect(raw.PUBLISH) for _ in range(2)]
        assert [p.payload for p in rest] == [b"m3", b"m4"]
        for p in rest:
            sub.ack(raw.PUBACK, p.packet_id)
        sub.ping()


# -- [mqtt] receive_maximum -------------------------------------------------------------------
def test_receive_maximum_is_advertised_and_enforced(xmpp_factory):
    b = xmpp_factory("[mqtt]\nreceive_maximum = 2\n")
    with RawMQTT(port(b, "mqtt"), timeout=WAIT) as c:
        ack = c.connect("recv-max")
        assert ack.properties.get("ReceiveMaximum") == 2, ack
        for i in range(2):
            pid = c.publish("rm/t", b"unreleased", qos=2)
            assert c.expect(raw.PUBREC).packet_id == pid
        c.publish("rm/t", b"one too many", qos=2)
        d = c.expect(raw.DISCONNECT)
        assert d.reason == 0x93, d  # Receive Maximum exceeded
        c.expect_closed()


# -- [mqtt] tls_vhost -------------------------------------------------------------------------
def test_clients_on_mqtts_land_in_tls_vhost(xmpp_factory):
    b = xmpp_factory('[mqtt]\ntls_vhost = "secure"\n')
    b.cli("vhost", "add", "secure")
    b.add_user("bob", PW)
    b.cli("user", "set_permissions", "-p", "secure", "bob", ".*", ".*", ".*")
    # Two plain subscribers to the same topic: one in `/`, one in `secure` (`vhost:user`).
    plain, plain_events, _ = paho_v5(b, "plain-sub", username="bob")
    scoped, scoped_events, _ = paho_v5(b, "scoped-sub", username="secure:bob")
    for c, events in ((plain, plain_events), (scoped, scoped_events)):
        c.subscribe("tv/#", 1)
        assert next_event(events, "suback")[1] == [1]
    # bob on MQTTS, no `vhost:` prefix: `secure`.
    tls, tls_events, _ = paho_v5(b, "tls-pub", tls=True, username="bob")
    tls.publish("tv/x", b"over tls", 1)
    next_event(tls_events, "puback")
    assert next_event(scoped_events, "message")[1:] == ("tv/x", b"over tls")
    # The same over WebSocket on the HTTPS listener; over plain HTTP it is `vhost` (`/`).
    wss, wss_events, _ = paho_v5(b, "wss-pub", tls=True, websocket=True, username="bob")
    wss.publish("tv/x", b"over wss", 1)
    next_event(wss_events, "puback")
    assert next_event(scoped_events, "message")[1:] == ("tv/x", b"over wss")
    ws, ws_events, _ = paho_v5(b, "ws-pub", websocket=True, username="bob")
    ws.publish("tv/x", b"over ws", 1)
    next_event(ws_events, "puback")
    assert next_event(plain_events, "message")[1:] == ("tv/x", b"over ws")
    # The `/` subscriber never saw the TLS ones: the next thing it gets is a marker published
    # in `/`.
    marker, marker_events, _ = paho_v5(b, "plain-pub", username="bob")
    marker.publish("tv/x", b"marker in /", 1)
    next_event(marker_events, "puback")
    assert next_event(plain_events, "message")[1:] == ("tv/x", b"marker in /")
    for c in (plain, scoped, tls, wss, ws, marker):
        stop(c)


# -- MQTT 5 re-authentication -----------------------------------------------------------------
def scram_connect(c: RawMQTT, scram: ScramClient, client_id: str) -> raw.Packet:
    c.send(raw.connect_packet(client_id, properties={
        "AuthenticationMethod": scram.mechanism, "AuthenticationData": scram.client_first()}))
    challenge = c.expect(raw.AUTH)
    assert challenge.reason == 0x18, challenge
    c.send(auth_packet(0x18, scram.mechanism, scram.client_final(challenge.properties["AuthenticationData"])))
    return c.expect(raw.CONNACK)


def auth_packet(reason: int, method: str, data: bytes) -> bytes:
    body = bytes([reason]) + raw.encode_properties({"AuthenticationMethod": method, "AuthenticationData": data})
    return raw.packet(raw.AUTH, 0, body)


def test_scram_reauthentication(xmpp_factory):
    b = xmpp_factory("[auth]\nfailure_delay_ms = 0\n")
    b.add_user("alice", PW)
    with RawMQTT(port(b, "mqtt"), timeout=WAIT) as c:
        scram = ScramClient("sha256", "alice", PW)
        ack = scram_connect(c, scram, "reauth")
        assert ack.reason == 0, ack
        scram.verify_server_final(ack.properties["AuthenticationData"])
        # AUTH 0x19 Re-authenticate, then the same two steps; success is AUTH 0x00.
        again = ScramClient("sha256", "alice", PW)
        c.send(auth_packet(0x19, again.mechanism, again.client_first()))
        challenge = c.expect(raw.AUTH)
        assert challenge.reason == 0x18, challenge
        c.send(auth_packet(0x18, again.mechanism, again.client_final(challenge.properties["AuthenticationData"])))
        done = c.expect(raw.AUTH)
        assert done.reason == 0x00, done
        again.verify_server_final(done.properties["AuthenticationData"])
        c.ping()  # still connected
        # A re-authentication with the wrong password ends the connection: DISCONNECT 0x87.
        wrong = ScramClient("sha256", "alice", "wrong")
        c.send(auth_packet(0x19, wrong.mechanism, wrong.client_first()))
        challenge = c.expect(raw.AUTH)
        c.send(auth_packet(0x18, wrong.mechanism, wrong.client_final(challenge.properties["AuthenticationData"])))
        d = c.expect(raw.DISCONNECT)
        assert d.reason == 0x87, d
        c.expect_closed()
    assert b.wait_log(re.compile(r"MQTT re-authentication refused peer=127\.0\.0\.1:\d+ user=alice"), WAIT)


def test_auth_from_a_client_that_did_not_use_enhanced_authentication_is_a_protocol_error(xmpp_factory):
    b = xmpp_factory()
    with RawMQTT(port(b, "mqtt"), timeout=WAIT) as c:
        c.connect("no-auth")
        c.send(auth_packet(0x19, "SCRAM-SHA-256", b"n,,n=guest,r=abc"))
        assert c.expect(raw.DISCONNECT).reason == 0x82
        c.expect_closed()


@pytest.mark.parametrize("hash_name", ["sha256", "sha1"])
def test_scram_connect_with_the_raw_client(xmpp_factory, hash_name):
    """The exchange as the wire shows it: AUTH 0x18 with server-first-message, then CONNACK
    0x00 with the method and server-final-message; a tampered proof gets CONNACK 0x86."""
    b = xmpp_factory("[auth]\nfailure_delay_ms = 0\n")
    b.add_user("carol", PW)
    with RawMQTT(port(b, "mqtt"), timeout=WAIT) as c:
        scram = ScramClient(hash_name, "carol", PW)
        ack = scram_connect(c, scram, "raw-scram")
        assert ack.reason == 0 and ack.properties["AuthenticationMethod"] == scram.mechanism, ack
        scram.verify_server_final(ack.properties["AuthenticationData"])
    with RawMQTT(port(b, "mqtt"), timeout=WAIT) as c:
        scram = ScramClient(hash_name, "carol", PW)
        c.send(raw.connect_packet("raw-scram-2", properties={
            "AuthenticationMethod": scram.mechanism, "AuthenticationData": scram.client_first()}))
        challenge = c.expect(raw.AUTH)
        c.send(auth_packet(0x18, scram.mechanism,
                           scram.client_final(challenge.properties["AuthenticationData"], tamper=True)))
        assert c.expect(raw.CONNACK).reason == 0x86
        c.expect_closed()
