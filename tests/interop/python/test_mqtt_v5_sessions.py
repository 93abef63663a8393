"""MQTT 5 session state over the wire (raw packets, mqtt_raw.py; paho where it shows enough):
Session Expiry (also across a restart, also changed by DISCONNECT), DISCONNECT with Will
Message, QoS 2 exactly-once across reconnects (our PUBREL re-sent after CONNACK, the client's
unreleased packet ids remembered), the inbound Receive Maximum, the client's Maximum Packet
Size, outbound Topic Aliases, and a PUBREC with an error code. A session's queue is looked at
through AMQP (`mqtt-subscription-<client id>qos1`). Tributary only."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest

import mqtt_raw as raw
from conftest import TARGET
from mqtt_raw import DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RawMQTT
from test_mqtt import WAIT, client, mqtt_broker, restartable, subscribe  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="needs Tributary's MQTT listener")

FOREVER = 0xFFFFFFFF


# -- helpers ------------------------------------------------------------------------------
def session_queue(client_id: str) -> str:
    return f"mqtt-subscription-{client_id}qos1"


def amqp(b) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, connection_attempts=1))


def queue_state(b, name: str) -> int | None:
    """The queue's ready-message count through AMQP (passive queue.declare), None if absent (404)."""
    conn = amqp(b)
    try:
        try:
            return conn.channel().queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return None
    finally:
        if conn.is_open:
            conn.close()


def wait_until(cond, timeout: float, what: str) -> float:
    """Polls `cond` (time-based state: there is no event to await) until true; the time it took."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"not {what} within {timeout}s"
        time.sleep(0.1)  # bounded poll for a timer in the broker
    return time.monotonic() - t0


def mqtt_conn(b, client_id: str, clean_start: bool = True, expiry: int | None = None, **props) -> tuple[RawMQTT, raw.Packet]:
    c = RawMQTT(b.mqtt_port, timeout=WAIT)
    if expiry is not None:
        props["SessionExpiryInterval"] = expiry
    ack = c.connect(client_id, clean_start, properties=props)
    return c, ack


def persistent_subscriber(b, client_id: str, topic_filter: str, qos: int, expiry: int) -> RawMQTT:
    c, ack = mqtt_conn(b, client_id, expiry=expiry)
    assert not ack.session_present
    assert c.subscribe(topic_filter, qos) == [qos]
    return c


def disconnect(c: RawMQTT, reason: int = 0, properties: dict | None = None):
    """DISCONNECT and wait for the server to close: by then it has ended the connection's
    session (the driver closes the session before shutting the socket)."""
    c.disconnect(reason, properties)
    c.expect_closed()
    c.close()


def publish_qos1(b, topic: str, payload: bytes, client_id: str = "", **kw):
    with RawMQTT(b.mqtt_port, timeout=WAIT) as p:
        p.connect(client_id)
        pid = p.publish(topic, payload, 1, **kw)
        assert p.expect(PUBACK).packet_id == pid
        disconnect(p)


def receive_until(c: RawMQTT, last: bytes) -> list[raw.Packet]:
    """PUBLISH packets until the one with payload `last` (acknowledged at QoS 1); anything
    else than PUBLISH fails."""
    got = []
    while True:
        p = c.expect(PUBLISH)
        if p.qos == 1:
            c.ack(PUBACK, p.packet_id)
        got.append(p)
        if p.payload == last:
            return got


# -- 1. Session Expiry --------------------------------------------------------------------
def test_session_is_removed_once_its_expiry_interval_has_passed(mqtt_broker):
    b, expiry = mqtt_broker, 2
    c = persistent_subscriber(b, "expiring-1", "exp1/#", 1, expiry)
    t0 = time.monotonic()
    disconnect(c)
    publish_qos1(b, "exp1/x", b"while away")
    assert queue_state(b, session_queue("expiring-1")) == 1, "the session (and its message) must outlive the connection"
    wait_until(lambda: queue_state(b, session_queue("expiring-1")) is None, expiry + WAIT, "removed")
    assert time.monotonic() - t0 >= expiry, "removed before its Session Expiry Interval"
    # The session's state went with it: a resume finds nothing, the old message is gone.
    c, ack = mqtt_conn(b, "expiring-1", clean_start=False, expiry=expiry)
    assert not ack.session_present, "an expired session was resumed"
    assert c.subscribe("exp1/#", 1) == [1]
    publish_qos1(b, "exp1/x", b"fresh")
    assert [p.payload for p in receive_until(c, b"fresh")] == [b"fresh"], "the expired session's message survived"
    disconnect(c, properties={"SessionExpiryInterval": 0})


@pytest.mark.parametrize("how", ["term", "kill"])
def test_session_expiry_set_by_disconnect_holds_across_a_restart(restartable, how):
    b, expiry = restartable, 5
    c = persistent_subscriber(b, "expiring-2", "exp2/#", 1, 3600)
    t0 = time.monotonic()
    disconnect(c, properties={"SessionExpiryInterval": expiry})  # 3600 s -> 5 s
    publish_qos1(b, "exp2/x", b"while away")
    b.restart(how)
    assert time.monotonic() - t0 < expiry - 1, "the restart took too long for this test to be meaningful"
    assert queue_state(b, session_queue("expiring-2")) == 1, "the session did not survive the restart"
    wait_until(lambda: queue_state(b, session_queue("expiring-2")) is None, expiry + WAIT, "removed after the restart")
    assert time.monotonic() - t0 >= expiry, "removed before its Session Expiry Interval"
    c, ack = mqtt_conn(b, "expiring-2", clean_start=False, expiry=60)
    assert not ack.session_present, "an expired session was resumed after the restart"
    disconnect(c, properties={"SessionExpiryInterval": 0})


@pytest.mark.parametrize("how", ["term", "kill"])
def test_session_connected_when_the_broker_stops_still_expires(restartable, how):
    b, expiry = restartable, 2
    c = persistent_subscriber(b, "expiring-3", "exp3/#", 1, expiry)
    publish_qos1(b, "exp3/x", b"queued")
    p = c.expect(PUBLISH)  # delivered, not acknowledged: back in the queue after the restart
    assert p.payload == b"queued"
    t0 = time.monotonic()
    b.restart(how)  # the connection ends with the broker: its Session Expiry Interval starts
    c.close()
    assert queue_state(b, session_queue("expiring-3")) == 1, "the session did not survive the restart"
    wait_until(lambda: queue_state(b, session_queue("expiring-3")) is None, expiry + WAIT, "removed after the restart")
    assert time.monotonic() - t0 >= expiry, "removed before its Session Expiry Interval"


def test_sessions_without_expiry_are_kept(mqtt_broker):
    b = mqtt_broker
    disconnect(persistent_subscriber(b, "forever-5", "keep/#", 1, FOREVER))
    # 3.1.1, clean session 0: such a session never expires.
    v3, _ = client(b, mqtt.MQTTv311, client_id="forever-311", clean=False)
    assert subscribe(v3, "keep/#", 1) == [1]
    v3.disconnect()
    v3.loop_stop()
    # A 1 s session that ends after both: once it is gone, the expiry check has looked at all three.
    control = persistent_subscriber(b, "control-1s", "ctl/#", 1, 1)
    disconnect(control)
    wait_until(lambda: queue_state(b, session_queue("control-1s")) is None, WAIT, "the 1 s control session removed")
    assert queue_state(b, session_queue("forever-5")) is not None, "a v5 session with expiry 0xFFFFFFFF was removed"
    assert queue_state(b, session_queue("forever-311")) is not None, "a 3.1.1 persistent session was removed"
    c, ack = mqtt_conn(b, "forever-5", clean_start=False, expiry=FOREVER)
    assert ack.session_present
    disconnect(c, properties={"SessionExpiryInterval": 0})


def test_resumed_session_does_not_expire_while_connected(mqtt_broker):
    b = mqtt_broker
    disconnect(persistent_subscriber(b, "resumer", "res/#", 1, 1))
    c, ack = mqtt_conn(b, "resumer", clean_start=False, expiry=1)
    assert ack.session_present, "resumed within its interval, the session must be present"
    disconnect(persistent_subscriber(b, "control-1s", "ctl/#", 1, 1))
    wait_until(lambda: queue_state(b, session_queue("control-1s")) is None, WAIT, "the 1 s control session removed")
    assert queue_state(b, session_queue("resumer")) is not None, "a connected session was removed"
    publish_qos1(b, "res/x", b"still here")
    assert [p.payload for p in receive_until(c, b"still here")] == [b"still here"]
    disconnect(c)
    wait_until(lambda: queue_state(b, session_queue("resumer")) is None, WAIT, "removed after its second connection")


def test_disconnect_with_expiry_zero_ends_the_session_at_close(mqtt_broker):
    b = mqtt_broker
    c = persistent_subscriber(b, "ender", "end/#", 1, 600)
    assert queue_state(b, session_queue("ender")) == 0
    disconnect(c, properties={"SessionExpiryInterval": 0})
    assert queue_state(b, session_queue("ender")) is None, "the session outlived a DISCONNECT with expiry 0"
    c, ack = mqtt_conn(b, "ender", clean_start=False, expiry=600)
    assert not ack.session_present
    disconnect(c, properties={"SessionExpiryInterval": 0})


def test_disconnect_setting_an_expiry_on_a_session_without_one_is_a_protocol_error(mqtt_broker):
    b = mqtt_broker
    watcher, _ = mqtt_conn(b, "will-watcher")
    assert watcher.subscribe("lastwill/#", 1) == [1]
    c = RawMQTT(b.mqtt_port, timeout=WAIT)
    assert not c.connect("no-expiry", will=("lastwill/no-expiry", b"gone", 1, False)).session_present
    assert c.subscribe("noexp/#", 1) == [1]
    c.disconnect(properties={"SessionExpiryInterval": 60})  # MQTT 5 3.14.2.2.2: 0 -> >0 is an error
    d = c.expect(DISCONNECT)
    assert d.reason == 0x82, f"expected DISCONNECT 0x82 (Protocol Error), got {d!r}"
    c.expect_closed()
    c.close()
    # Not a valid DISCONNECT: the will is published ...
    w = watcher.expect(PUBLISH)
    assert (w.topic, w.payload) == ("lastwill/no-expiry", b"gone")
    watcher.ack(PUBACK, w.packet_id)
    # ... and the session did not become persistent.
    c, ack = mqtt_conn(b, "no-expiry", clean_start=False)
    assert not ack.session_present, "a DISCONNECT refused as a protocol error still made the session persistent"
    assert queue_state(b, session_queue("no-expiry")) is None
    disconnect(c)
    disconnect(watcher)


def test_disconnect_with_will_message_publishes_the_will(mqtt_broker):
    b = mqtt_broker
    watcher, _ = mqtt_conn(b, "will-watcher")
    assert watcher.subscribe("wills/#", 1) == [1]
    polite = RawMQTT(b.mqtt_port, timeout=WAIT)
    polite.connect("polite", will=("wills/polite", b"not sent", 1, False))
    disconnect(polite, 0x00)  # Normal disconnection: the will is discarded
    leaving = RawMQTT(b.mqtt_port, timeout=WAIT)
    leaving.connect("leaving", will=("wills/leaving", b"sent", 1, False))
    disconnect(leaving, 0x04)  # Disconnect with Will Message
    # Each will (if any) is routed before its connection closes: the polite one would be first.
    w = watcher.expect(PUBLISH)
    assert (w.topic, w.payload) == ("wills/leaving", b"sent"), f"unexpected will {w!r}"
    watcher.ack(PUBACK, w.packet_id)
    disconnect(watcher)


# -- 2. QoS 2 exactly once across reconnects ----------------------------------------------
@pytest.mark.parametrize("restart", [False, True], ids=["reconnect", "restart"])
def test_uncompleted_pubrel_is_resent_after_connack(restartable, restart):
    b = restartable
    sub = persistent_subscriber(b, "q2-sub", "q2/#", 2, 600)
    with RawMQTT(b.mqtt_port, timeout=WAIT) as pub:
        pub.connect("")
        pub.publish_qos2("q2/a", b"first")
        disconnect(pub)
    m = sub.expect(PUBLISH)
    assert (m.payload, m.qos) == (b"first", 2)
    sub.ack(PUBREC, m.packet_id)
    assert sub.expect(PUBREL).packet_id == m.packet_id
    disconnect(sub)  # without PUBCOMP
    if restart:
        b.restart("term")
    sub, ack = mqtt_conn(b, "q2-sub", clean_start=False, expiry=600)
    assert ack.session_present
    rel = sub.recv()
    assert (rel.kind, rel.packet_id) == (PUBREL, m.packet_id), f"expected PUBREL {m.packet_id} right after CONNACK, got {rel!r}"
    # Until PUBCOMP, that packet id is not reused; the released message is not sent again.
    with RawMQTT(b.mqtt_port, timeout=WAIT) as pub:
        pub.connect("")
        pub.publish_qos2("q2/a", b"second")
        disconnect(pub)
    n = sub.expect(PUBLISH)
    assert n.payload == b"second", f"the message released before the reconnect came again: {n!r}"
    assert n.packet_id != m.packet_id, "a packet id still waiting for PUBCOMP was reused"
    sub.ack(PUBCOMP, m.packet_id)
    sub.ack(PUBREC, n.packet_id)
    assert sub.expect(PUBREL).packet_id == n.packet_id
    sub.ack(PUBCOMP, n.packet_id)
    disconnect(sub)
    # Completed: the next resume owes nothing, the first packet is a new message.
    sub, ack = mqtt_conn(b, "q2-sub", clean_start=False, expiry=600)
    assert ack.session_present
    publish_qos1(b, "q2/a", b"third")
    p = sub.recv()
    assert (p.kind, p.payload) == (PUBLISH, b"third"), f"expected the new message, got {p!r}"
    sub.ack(PUBACK, p.packet_id)
    disconnect(sub, properties={"SessionExpiryInterval": 0})


def amqp_bodies(b, q: str, last: bytes) -> list[bytes]:
    """The bodies in AMQP queue `q` up to `last` (bounded poll), then checks nothing follows."""
    conn = amqp(b)
    ch = conn.channel()
    bodies: list[bytes] = []
    deadline = time.monotonic() + WAIT
    while last not in bodies:
        method, _props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            assert time.monotonic() < deadline, f"only {bodies} arrived"
            time.sleep(0.02)  # polling basic.get with a deadline
            continue
        bodies.append(body)
    assert ch.basic_get(q, auto_ack=True)[0] is None, "more messages than expected"
    conn.close()
    return bodies


def bound_queue(b, name: str, key: str):
    conn = amqp(b)
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    ch.queue_bind(name, "amq.topic", key)
    conn.close()


@pytest.mark.parametrize("subscribed", [True, False], ids=["subscriber", "publisher-only"])
@pytest.mark.parametrize("restart", [False, True], ids=["reconnect", "restart"])
def test_unreleased_inbound_qos2_is_not_routed_twice_after_reconnect(restartable, restart, subscribed):
    b = restartable
    bound_queue(b, "dedup-seen", "dedup.#")
    pub, ack = mqtt_conn(b, "q2-pub", expiry=600)
    if subscribed:  # the session then has a queue too
        assert pub.subscribe("elsewhere/#", 1) == [1]
    pub.publish("dedup/a", b"once", 2, packet_id=7)
    assert pub.expect(PUBREC).packet_id == 7
    disconnect(pub)  # without PUBREL
    if restart:
        b.restart("term")
    pub, ack = mqtt_conn(b, "q2-pub", clean_start=False, expiry=600)
    # MQTT 5 3.2.2.1.2 / 4.1: the server has session state (an unreleased QoS 2 id) for it.
    assert ack.session_present, "the session of a client with an unreleased QoS 2 message was not present"
    pub.publish("dedup/a", b"once", 2, packet_id=7, dup=True)
    assert pub.expect(PUBREC).packet_id == 7
    pub.ack(PUBREL, 7)
    assert pub.expect(PUBCOMP).packet_id == 7
    # Released: the id is free again, a new message with it is routed.
    pub.publish("dedup/a", b"after", 2, packet_id=7)
    assert pub.expect(PUBREC).packet_id == 7
    pub.ack(PUBREL, 7)
    assert pub.expect(PUBCOMP).packet_id == 7
    disconnect(pub, properties={"SessionExpiryInterval": 0})
    assert amqp_bodies(b, "dedup-seen", b"after") == [b"once", b"after"]


def test_unreleased_inbound_qos2_survives_a_session_takeover(mqtt_broker):
    b = mqtt_broker
    bound_queue(b, "takeover-seen", "takeover.#")
    first, _ = mqtt_conn(b, "q2-takeover", expiry=600)
    assert first.subscribe("elsewhere/#", 1) == [1]  # a session with a queue (see the test above)
    first.publish("takeover/a", b"once", 2, packet_id=9)
    assert first.expect(PUBREC).packet_id == 9
    # The client reconnects before the broker saw the old connection go (MQTT 5 3.1.4).
    second, ack = mqtt_conn(b, "q2-takeover", clean_start=False, expiry=600)
    assert ack.session_present
    assert first.expect(DISCONNECT).reason == 0x8E
    first.expect_closed()
    first.close()
    second.publish("takeover/a", b"once", 2, packet_id=9, dup=True)
    assert second.expect(PUBREC).packet_id == 9
    second.ack(PUBREL, 9)
    assert second.expect(PUBCOMP).packet_id == 9
    second.publish_qos2("takeover/a", b"after")
    disconnect(second, properties={"SessionExpiryInterval": 0})
    assert amqp_bodies(b, "takeover-seen", b"after") == [b"once", b"after"]


def test_session_taken_over_is_not_ended_by_the_old_connection(mqtt_broker):
    b = mqtt_broker
    disconnect(persistent_subscriber(b, "taken", "tk/#", 1, 600))
    old, ack = mqtt_conn(b, "taken", clean_start=False)  # resumed with expiry 0: ends with its connection
    assert ack.session_present
    # The client comes back (MQTT 5 3.1.4): the session is the new connection's, with its expiry.
    new, ack = mqtt_conn(b, "taken", clean_start=False, expiry=600)
    assert ack.session_present
    assert old.expect(DISCONNECT).reason == 0x8E
    old.expect_closed()
    old.close()
    assert queue_state(b, session_queue("taken")) is not None, "the old connection ended the taken-over session"
    publish_qos1(b, "tk/x", b"for the new connection")
    p = new.expect(PUBLISH)
    assert p.payload == b"for the new connection"
    new.ack(PUBACK, p.packet_id)
    disconnect(new, properties={"SessionExpiryInterval": 0})


# -- 3. Receive Maximum (inbound) ---------------------------------------------------------
def test_more_open_inbound_qos2_exchanges_than_receive_maximum_gets_0x93(mqtt_broker):
    b = mqtt_broker
    conn = amqp(b)
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "rm.#")
    c, ack = mqtt_conn(b, "flooder")
    limit = ack.properties.get("ReceiveMaximum", 65535)
    assert limit < 65535, f"CONNACK advertises no Receive Maximum to enforce ({limit})"
    for pid in range(1, limit + 1):
        c.publish("rm/x", b"%d" % pid, 2, packet_id=pid)
    assert sorted(c.expect(PUBREC).packet_id for _ in range(limit)) == list(range(1, limit + 1))
    # A DUP of an open exchange is not a new one; releasing one makes room for one more.
    c.publish("rm/x", b"1", 2, packet_id=1, dup=True)
    assert c.expect(PUBREC).packet_id == 1
    c.ack(PUBREL, 1)
    assert c.expect(PUBCOMP).packet_id == 1
    c.publish("rm/x", b"%d" % (limit + 1), 2, packet_id=limit + 1)
    assert c.expect(PUBREC).packet_id == limit + 1
    c.publish("rm/x", b"%d" % (limit + 2), 2, packet_id=limit + 2)  # limit + 1 open: one too many
    d = c.expect(DISCONNECT)
    assert d.reason == 0x93, f"expected DISCONNECT 0x93 (Receive Maximum exceeded), got {d!r}"
    c.expect_closed()
    c.close()
    count = ch.queue_declare(q, passive=True).method.message_count
    assert count == limit + 1, f"{count} messages routed, expected 1..{limit + 1} once each"
    conn.close()


# -- 4. The client's Maximum Packet Size --------------------------------------------------
def publish_size(topic: str, payload: bytes, qos: int = 1, properties: dict | None = None) -> int:
    """Size of the PUBLISH the server sends for this message (no properties by default)."""
    return len(raw.publish_packet(topic, payload, qos, 1 if qos else None, properties=properties))


def test_deliveries_larger_than_the_client_maximum_packet_size_are_discarded(mqtt_broker):
    b, limit = mqtt_broker, 128
    publish_qos1(b, "mps/retained/big", b"B" * 300, retain=True)
    publish_qos1(b, "mps/retained/small", b"small retained", retain=True)
    c, _ = mqtt_conn(b, "small-client", MaximumPacketSize=limit)
    assert c.subscribe("mps/#", 1) == [1]
    retained = c.expect(PUBLISH)
    assert (retained.topic, retained.payload) == ("mps/retained/small", b"small retained"), f"{retained!r}"
    c.ack(PUBACK, retained.packet_id)
    # Exactly at the limit is delivered, one byte over is not (the whole packet counts, MQTT 5 3.1.2.24).
    edge = "mps/edge"
    at_limit = b"=" * (limit - publish_size(edge, b""))
    assert publish_size(edge, at_limit) == limit
    sent = [("mps/live", b"x" * 500), (edge, at_limit + b"+"), (edge, at_limit), ("mps/live", b"end")]
    for topic, payload in sent:
        publish_qos1(b, topic, payload)
    got = receive_until(c, b"end")
    assert [(p.topic, p.payload) for p in got] == [(edge, at_limit), ("mps/live", b"end")]
    assert all(p.size <= limit for p in got)
    disconnect(c)


def test_maximum_packet_size_counts_the_topic_alias(mqtt_broker):
    b, limit = mqtt_broker, 100
    c, _ = mqtt_conn(b, "alias-and-size", MaximumPacketSize=limit, TopicAliasMaximum=4)
    assert c.subscribe("mpsa/#", 1) == [1]
    edge = "mpsa/edge"
    at_limit = b"=" * (limit - publish_size(edge, b""))  # at the limit without a Topic Alias property
    for payload in (at_limit, at_limit, b"end"):
        publish_qos1(b, "mpsa/edge", payload)
    got = receive_until(c, b"end")
    too_big = [p for p in got if p.size > limit]
    assert not too_big, f"packets over the client's Maximum Packet Size {limit}: {too_big}"
    # Without the alias they fit: sent (as the client sees them) on their topic.
    assert [p.payload for p in got] == [at_limit, at_limit, b"end"]
    assert resolve_aliases(got, 4) == [edge] * 3
    disconnect(c)


# -- 5. Outbound Topic Aliases ------------------------------------------------------------
def resolve_aliases(packets: list[raw.Packet], maximum: int) -> list[str]:
    """The topics as a client sees them, checking the server's alias use (MQTT 5 3.3.2.3.4)."""
    aliases: dict[int, str] = {}
    topics = []
    for p in packets:
        alias = p.properties.get("TopicAlias")
        if alias is None:
            assert p.topic, f"empty topic without an alias: {p!r}"
            topics.append(p.topic)
            continue
        assert 1 <= alias <= maximum, f"alias {alias} beyond the client's Topic Alias Maximum {maximum}"
        if p.topic:
            aliases[alias] = p.topic
        else:
            assert alias in aliases, f"alias {alias} used before it was set: {p!r}"
        topics.append(aliases[alias])
    return topics


def test_outbound_topic_aliases_up_to_the_client_maximum(mqtt_broker):
    b = mqtt_broker
    c, _ = mqtt_conn(b, "aliased", TopicAliasMaximum=2)
    assert c.subscribe("ta/#", 1) == [1]
    plain, _ = mqtt_conn(b, "not-aliased")
    assert plain.subscribe("ta/#", 1) == [1]
    sent = ["ta/one", "ta/one", "ta/two", "ta/three", "ta/one", "ta/two", "ta/three"]
    for i, topic in enumerate(sent):
        publish_qos1(b, topic, b"%d" % i)
    last = b"%d" % (len(sent) - 1)
    got = receive_until(c, last)
    assert [p.payload for p in got] == [b"%d" % i for i in range(len(sent))]
    assert resolve_aliases(got, 2) == sent
    first_one, second_one = got[0], got[1]
    assert first_one.topic == "ta/one" and "TopicAlias" in first_one.properties, f"no alias set: {first_one!r}"
    assert second_one.topic == "" and second_one.properties.get("TopicAlias") == first_one.properties["TopicAlias"], \
        f"the second PUBLISH on a topic did not use its alias: {second_one!r}"
    assert len({p.properties["TopicAlias"] for p in got if "TopicAlias" in p.properties}) == 2
    # No Topic Alias Maximum in CONNECT (0): never an alias.
    for p in receive_until(plain, last):
        assert "TopicAlias" not in p.properties and p.topic.startswith("ta/"), f"{p!r}"
    disconnect(c)
    disconnect(plain)


# -- 6. PUBREC with an error reason code --------------------------------------------------
def test_pubrec_with_an_error_code_ends_the_qos2_exchange(mqtt_broker):
    b = mqtt_broker
    sub = persistent_subscriber(b, "rec-sub", "rec/#", 2, 600)
    with RawMQTT(b.mqtt_port, timeout=WAIT) as pub:
        pub.connect("")
        pub.publish_qos2("rec/a", b"refused")
        pub.publish_qos2("rec/a", b"accepted")
        disconnect(pub)
    refused = sub.expect(PUBLISH)
    assert (refused.payload, refused.qos) == (b"refused", 2)
    sub.ack(PUBREC, refused.packet_id, 0x80)  # Unspecified error
    accepted = sub.expect(PUBLISH)
    assert accepted.payload == b"accepted"
    sub.ping()  # answered in order: no PUBREL for the refused one came before PINGRESP
    sub.ack(PUBREC, accepted.packet_id, 0x10)  # No matching subscribers: a success code
    assert sub.expect(PUBREL).packet_id == accepted.packet_id
    sub.ack(PUBCOMP, accepted.packet_id)
    disconnect(sub)
    # Nothing is owed on resume: no PUBREL for the refused one, no redelivery.
    sub, ack = mqtt_conn(b, "rec-sub", clean_start=False, expiry=600)
    assert ack.session_present
    publish_qos1(b, "rec/a", b"next")
    p = sub.recv()
    assert (p.kind, p.payload) == (PUBLISH, b"next"), f"expected the new message first, got {p!r}"
    sub.ack(PUBACK, p.packet_id)
    disconnect(sub, properties={"SessionExpiryInterval": 0})


@pytest.fixture
def keep_alive_broker():
    """A broker with `[mqtt] max_keep_alive = 2`."""
    import re
    import shutil
    import tempfile
    from pathlib import Path

    from conftest import TributaryBroker

    root = Path(tempfile.mkdtemp(prefix="tributary-keepalive-"))
    b = TributaryBroker(root)
    b.extra_config = "\n[mqtt]\nmax_keep_alive = 2\n"
    try:
        b.start()
        deadline = time.monotonic() + WAIT
        while not (m := re.search(r"listening protocol=mqtt addr=127\.0\.0\.1:(\d+)", b.log_text())):
            assert time.monotonic() < deadline, "no `listening protocol=mqtt` line"
            time.sleep(0.02)  # polling the log for the line, bounded
        b.mqtt_port = int(m.group(1))
        yield b
    finally:
        problems = b.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


def test_server_keep_alive_caps_a_longer_keep_alive(keep_alive_broker):
    b = keep_alive_broker
    # Within the maximum: the client's own keep alive, no Server Keep Alive.
    ok = RawMQTT(b.mqtt_port, timeout=WAIT)
    ack = ok.connect("short-ka", True, keepalive=1)
    assert "ServerKeepAlive" not in ack.properties, ack.properties
    ok.close()
    # Longer than the maximum: CONNACK says 2, and the server holds the client to it.
    c = RawMQTT(b.mqtt_port, timeout=WAIT)
    started = time.monotonic()
    ack = c.connect("long-ka", True, keepalive=600)
    assert ack.properties.get("ServerKeepAlive") == 2, ack.properties
    d = c.expect(DISCONNECT)  # no PINGREQ sent: dropped after 1.5 x 2 s, not 900 s
    assert d.reason == 0x8D, f"expected Keep Alive timeout (0x8D), got {d!r}"
    assert time.monotonic() - started < WAIT
    c.expect_closed()
    c.close()
