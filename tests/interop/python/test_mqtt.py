"""MQTT (early support, issue 4) with paho-mqtt, v3.1.1 and v5: connect, publish and
subscribe at QoS 0/1/2 through amq.topic, MQTT <-> AMQP (pika) both ways, retained
messages, wills, session takeover, and a malformed packet. Tributary only."""

from __future__ import annotations

import queue
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import TARGET, TributaryBroker

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="needs Tributary's MQTT listener")

WAIT = 20


@pytest.fixture
def mqtt_broker():
    import conftest

    root = Path(tempfile.mkdtemp(prefix="tributary-mqtt-"))
    b = TributaryBroker(root)
    # The MQTT listener is off by default: switch it on, on a free port.
    assert 'mqtt = "127.0.0.1:0"' in conftest.CONFIG, "the test config must open the MQTT listener"
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


@pytest.fixture
def restartable():
    """A broker that can be killed and restarted on the same data dir; `.mqtt_port` is
    refreshed by `start()` / `restart()` (a new free port each run)."""
    import conftest
    from durability_support import RestartableBroker

    assert 'mqtt = "127.0.0.1:0"' in conftest.CONFIG, "the test config must open the MQTT listener"
    root = Path(tempfile.mkdtemp(prefix="tributary-mqtt-restart-"))

    class Broker(RestartableBroker):
        def start(self):
            run = super().start()
            m = run.wait_for(re.compile(r"listening protocol=mqtt addr=127\.0\.0\.1:(\d+)"), WAIT)
            assert m, "no MQTT listening line"
            self.mqtt_port = int(m.group(1))
            return run

    b = Broker(root)
    try:
        b.start()
        yield b
    finally:
        problems = b.finish()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


def client(b, version=mqtt.MQTTv311, client_id="", clean=True, will=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
                    clean_session=clean if version != mqtt.MQTTv5 else None)
    got: queue.Queue = queue.Queue()
    c.on_message = lambda _c, _u, msg: got.put(msg)
    c.user_data_set(got)
    if will:
        c.will_set(*will)
    connected = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: connected.put(rc)
    c.on_disconnect = lambda _c, _u, _f, rc, props=None: got.put(("disconnected", rc))
    if version == mqtt.MQTTv5:
        c.connect("127.0.0.1", b.mqtt_port, keepalive=30, clean_start=clean)
    else:
        c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    rc = connected.get(timeout=WAIT)
    assert not rc.is_failure, rc
    return c, got


def subscribe(c, topic, qos):
    done = queue.Queue()
    c.on_subscribe = lambda _c, _u, mid, rcs, props=None: done.put(rcs)
    c.subscribe(topic, qos)
    return done.get(timeout=WAIT)


def next_message(got, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = got.get(timeout=max(0.01, deadline - time.monotonic()))
        if not isinstance(item, tuple):
            return item
    raise AssertionError("no message")


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v3.1.1", "v5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_each_qos(mqtt_broker, version, qos):
    sub, got = client(mqtt_broker, version)
    rcs = subscribe(sub, "sensors/+/temp", qos)
    assert [int(r.value) if hasattr(r, "value") else int(r) for r in rcs] == [qos]
    pub, _ = client(mqtt_broker, version)
    info = pub.publish("sensors/kitchen/temp", b"21.5", qos=qos)
    info.wait_for_publish(WAIT)
    assert info.is_published()
    m = next_message(got)
    assert (m.topic, m.payload, m.qos) == ("sensors/kitchen/temp", b"21.5", qos)
    pub.publish("sensors/kitchen/humidity", b"40", qos=qos).wait_for_publish(WAIT)
    pub.publish("sensors/kitchen/temp", b"22.0", qos=qos).wait_for_publish(WAIT)
    assert next_message(got).payload == b"22.0", "a non-matching topic was delivered"
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()


def test_mqtt_to_amqp_and_back(mqtt_broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqtt_broker.port))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "sensors.*.temp")
    sub, got = client(mqtt_broker)
    subscribe(sub, "commands/#", 1)
    pub, _ = client(mqtt_broker)
    pub.publish("sensors/hall/temp", b"19", qos=1).wait_for_publish(WAIT)
    deadline = time.monotonic() + WAIT
    while True:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method:
            break
        assert time.monotonic() < deadline, "the MQTT publish never reached the AMQP queue"
        time.sleep(0.02)  # polling basic.get with a deadline
    assert (method.routing_key, body, props.delivery_mode) == ("sensors.hall.temp", b"19", 2)
    ch.basic_publish("amq.topic", "commands.hall.heat", b"on", pika.BasicProperties(delivery_mode=2))
    m = next_message(got)
    assert (m.topic, m.payload, m.qos) == ("commands/hall/heat", b"on", 1)
    conn.close()
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()


def test_retained_message_delivered_on_subscribe_and_cleared(mqtt_broker):
    pub, _ = client(mqtt_broker)
    pub.publish("status/door", b"open", qos=1, retain=True).wait_for_publish(WAIT)
    sub, got = client(mqtt_broker)
    subscribe(sub, "status/#", 1)
    m = next_message(got)
    assert (m.topic, m.payload, m.retain) == ("status/door", b"open", True)
    pub.publish("status/door", b"", qos=1, retain=True).wait_for_publish(WAIT)
    late, got2 = client(mqtt_broker)
    subscribe(late, "status/#", 1)
    pub.publish("status/ping", b"x", qos=1).wait_for_publish(WAIT)
    assert next_message(got2).topic == "status/ping", "a deleted retained message was delivered"
    for c in (sub, pub, late):
        c.disconnect()
        c.loop_stop()


def test_will_sent_on_abnormal_close_not_on_disconnect(mqtt_broker):
    sub, got = client(mqtt_broker)
    subscribe(sub, "wills/#", 1)
    # A clean DISCONNECT discards the will; had it been sent, it would arrive first.
    clean, _ = client(mqtt_broker, client_id="polite", will=("wills/polite", b"bye", 1))
    clean.disconnect()
    clean.loop_stop()
    dying, _ = client(mqtt_broker, client_id="dying2", will=("wills/dying2", b"gone", 1))
    dying.loop_stop()  # no automatic reconnect from paho
    dying._sock.close()  # abnormal: no DISCONNECT packet
    m = next_message(got)
    assert (m.topic, m.payload) == ("wills/dying2", b"gone")
    sub.disconnect()
    sub.loop_stop()


def test_session_takeover_disconnects_the_first_v5(mqtt_broker):
    first, got1 = client(mqtt_broker, mqtt.MQTTv5, client_id="same")
    second, _ = client(mqtt_broker, mqtt.MQTTv5, client_id="same")
    deadline = time.monotonic() + WAIT
    while True:
        item = got1.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, tuple):
            assert item[0] == "disconnected"
            assert int(item[1].value) == 0x8E, item[1]
            break
    first.loop_stop()
    second.disconnect()
    second.loop_stop()


def test_malformed_packet_closes_the_connection(mqtt_broker):
    s = socket.create_connection(("127.0.0.1", mqtt_broker.mqtt_port), timeout=WAIT)
    # A CONNECT whose remaining length announces 256 MiB: refused at once, nothing allocated.
    s.sendall(b"\x10\xff\xff\xff\x7f")
    s.settimeout(WAIT)
    assert s.recv(64) == b"", "the connection stayed open"
    s.close()


def test_v5_properties_cross_to_amqp_and_back(mqtt_broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqtt_broker.port))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "req.#")
    pub, _ = client(mqtt_broker, mqtt.MQTTv5)
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.ResponseTopic = "resp/device1"
    props.CorrelationData = b"\x01\x02corr"
    props.UserProperty = [("site", "north")]
    pub.publish("req/temp", b"{}", qos=1, properties=props).wait_for_publish(WAIT)
    deadline = time.monotonic() + WAIT
    while True:
        method, p, body = ch.basic_get(q, auto_ack=True)
        if method:
            break
        assert time.monotonic() < deadline, "the MQTT request never reached AMQP"
        time.sleep(0.02)  # polling basic.get with a deadline
    assert p.content_type == "application/json"
    assert p.reply_to == "resp.device1"
    assert p.headers["site"] == "north"
    # An AMQP reply to reply_to reaches the MQTT requester with the properties mapped back.
    sub, got = client(mqtt_broker, mqtt.MQTTv5)
    subscribe(sub, "resp/#", 1)
    ch.basic_publish("amq.topic", p.reply_to, b"21.5",
                     pika.BasicProperties(content_type="text/plain", correlation_id="c-42", headers={"unit": "C"}))
    m = next_message(got)
    assert m.topic == "resp/device1" and m.payload == b"21.5"
    assert m.properties.ContentType == "text/plain"
    assert m.properties.CorrelationData == b"c-42"
    assert ("unit", "C") in m.properties.UserProperty
    conn.close()
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()


def test_shared_subscription_round_robins_across_the_group(mqtt_broker):
    members = [client(mqtt_broker, mqtt.MQTTv5) for _ in range(2)]
    for c, _ in members:
        rcs = subscribe(c, "$share/workers/jobs/#", 1)
        assert not rcs[0].is_failure, rcs
    pub, _ = client(mqtt_broker)
    for i in range(10):
        pub.publish("jobs/x", b"%d" % i, qos=1).wait_for_publish(WAIT)
    got = [[], []]
    deadline = time.monotonic() + WAIT
    while sum(map(len, got)) < 10:
        assert time.monotonic() < deadline, f"only {got} arrived"
        for i, (_, q) in enumerate(members):
            try:
                item = q.get(timeout=0.05)
            except queue.Empty:
                continue
            if not isinstance(item, tuple):
                got[i].append(item.payload)
    assert sorted(got[0] + got[1]) == sorted(b"%d" % i for i in range(10)), "lost or duplicated"
    assert got[0] and got[1], f"not shared: {got}"
    for c, _ in members + [(pub, None)]:
        c.disconnect()
        c.loop_stop()


def test_retain_handling_2_sends_no_retained_message(mqtt_broker):
    pub, _ = client(mqtt_broker)
    pub.publish("rh/state", b"kept", qos=1, retain=True).wait_for_publish(WAIT)
    sub, got = client(mqtt_broker, mqtt.MQTTv5)
    done = queue.Queue()
    sub.on_subscribe = lambda _c, _u, mid, rcs, props=None: done.put(rcs)
    sub.subscribe("rh/#", options=mqtt.SubscribeOptions(qos=1, retainHandling=2))
    done.get(timeout=WAIT)
    pub.publish("rh/live", b"fresh", qos=1).wait_for_publish(WAIT)
    m = next_message(got)
    assert (m.topic, m.payload) == ("rh/live", b"fresh"), "a retained message was sent despite Retain Handling 2"
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v3.1.1", "v5"])
def test_persistent_session_keeps_messages_offline_and_across_a_crash(restartable, version):
    b = restartable

    def durable_client():
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="meter-7", protocol=version,
                        clean_session=False if version != mqtt.MQTTv5 else None)
        got: queue.Queue = queue.Queue()
        c.on_message = lambda _c, _u, msg: got.put(msg)
        acks: queue.Queue = queue.Queue()
        c.on_connect = lambda _c, _u, flags, rc, props=None: acks.put((flags.session_present, rc))
        if version == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            c.connect("127.0.0.1", b.mqtt_port, keepalive=30, clean_start=False, properties=props)
        else:
            c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
        c.loop_start()
        present, rc = acks.get(timeout=WAIT)
        assert not rc.is_failure, rc
        return c, got, present

    c, _, present = durable_client()
    assert not present, "a new session must not be reported present"
    subscribe(c, "meters/+/kwh", 1)
    c.disconnect()
    c.loop_stop()
    pub, _ = client(b)
    for i in range(3):
        pub.publish("meters/7/kwh", b"%d" % i, qos=1).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()
    b.restart("kill")  # the QoS 1 messages were acknowledged: they are on disk
    c, got, present = durable_client()
    assert present, "the stored session was not resumed"
    bodies = [next_message(got).payload for _ in range(3)]
    assert bodies == [b"0", b"1", b"2"]
    c.disconnect()
    c.loop_stop()


def test_v5_topic_alias_and_subscription_identifiers(mqtt_broker):
    sub, got = client(mqtt_broker, mqtt.MQTTv5)
    done = queue.Queue()
    sub.on_subscribe = lambda _c, _u, mid, rcs, props=None: done.put(rcs)
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 42
    sub.subscribe("alias/#", qos=1, properties=sp)
    done.get(timeout=WAIT)
    pub, _ = client(mqtt_broker, mqtt.MQTTv5)
    first = Properties(PacketTypes.PUBLISH)
    first.TopicAlias = 3
    pub.publish("alias/long/topic/name", b"one", qos=1, properties=first).wait_for_publish(WAIT)
    again = Properties(PacketTypes.PUBLISH)
    again.TopicAlias = 3
    pub.publish("", b"two", qos=1, properties=again).wait_for_publish(WAIT)
    m1, m2 = next_message(got), next_message(got)
    assert [(m.topic, m.payload) for m in (m1, m2)] == [("alias/long/topic/name", b"one"),
                                                         ("alias/long/topic/name", b"two")]
    assert m1.properties.SubscriptionIdentifier == [42]
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()


def test_v5_payload_format_invalid_closes_with_0x99(mqtt_broker):
    # A payload marked UTF-8 that is not: the spec lets the server answer with DISCONNECT 0x99.
    pub, got = client(mqtt_broker, mqtt.MQTTv5)
    props = Properties(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    pub.publish("pfi/x", b"\xff\xfe not utf-8", qos=1, properties=props)
    deadline = time.monotonic() + WAIT
    while True:
        item = got.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, tuple):
            assert item[0] == "disconnected" and int(item[1].value) == 0x99, item
            break
    pub.loop_stop()


def test_v5_unknown_authentication_method_gets_0x8c(mqtt_broker):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    result = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: result.put(rc)
    props = Properties(PacketTypes.CONNECT)
    props.AuthenticationMethod = "SCRAM-SHA-512"
    c.connect("127.0.0.1", mqtt_broker.mqtt_port, properties=props)
    c.loop_start()
    rc = result.get(timeout=WAIT)
    assert int(rc.value) == 0x8C, rc
    c.loop_stop()


def test_retained_message_survives_a_restart(restartable):
    b = restartable
    pub, _ = client(b)
    pub.publish("plant/valve", b"closed", qos=1, retain=True).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()
    b.restart("kill")
    sub, got = client(b)
    subscribe(sub, "plant/#", 1)
    m = next_message(got)
    assert (m.topic, m.payload, m.retain) == ("plant/valve", b"closed", True)
    sub.disconnect()
    sub.loop_stop()


def test_v5_no_local_and_retain_as_published(mqtt_broker):
    me, got = client(mqtt_broker, mqtt.MQTTv5, client_id="echo")
    done = queue.Queue()
    me.on_subscribe = lambda _c, _u, mid, rcs, props=None: done.put(rcs)
    me.subscribe("nl/#", options=mqtt.SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True))
    done.get(timeout=WAIT)
    me.publish("nl/mine", b"own", qos=1).wait_for_publish(WAIT)
    other, _ = client(mqtt_broker, mqtt.MQTTv5)
    other.publish("nl/theirs", b"kept", qos=1, retain=True).wait_for_publish(WAIT)
    m = next_message(got)
    assert (m.topic, m.payload) == ("nl/theirs", b"kept"), "our own publish came back despite No Local"
    assert m.retain, "Retain As Published: the retain flag was not kept"
    for c in (me, other):
        c.disconnect()
        c.loop_stop()


def test_v5_will_delay_interval(mqtt_broker):
    sub, got = client(mqtt_broker)
    subscribe(sub, "wd/#", 1)

    def dying(client_id, delay):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        wp = Properties(PacketTypes.WILLMESSAGE)
        wp.WillDelayInterval = delay
        c.will_set(f"wd/{client_id}", b"gone", qos=1, properties=wp)
        ok = queue.Queue()
        c.on_connect = lambda _c, _u, _f, rc, props=None: ok.put(rc)
        # The will waits for its delay only while the session lives (expiry above it).
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 60
        c.connect("127.0.0.1", mqtt_broker.mqtt_port, keepalive=30, properties=props)
        c.loop_start()
        assert not ok.get(timeout=WAIT).is_failure
        return c

    # Comes back within the delay: no will.
    back = dying("returns", 2)
    back.loop_stop()  # no automatic reconnect from paho: we reconnect ourselves below
    back._sock.close()
    again, _ = client(mqtt_broker, mqtt.MQTTv5, client_id="returns", clean=False)
    # Does not come back: the will arrives, and not before its delay.
    gone = dying("leaves", 1)
    gone.loop_stop()  # it must stay away (paho would reconnect on its own)
    t0 = time.monotonic()
    gone._sock.close()
    m = next_message(got)
    assert (m.topic, m.payload) == ("wd/leaves", b"gone"), f"unexpected will {m.topic}"
    assert time.monotonic() - t0 >= 0.9, "the will came before its delay"
    for c in (sub, again):
        c.disconnect()
        c.loop_stop()


def test_sys_topics_only_for_explicit_subscriptions(mqtt_broker):
    everything, got_all = client(mqtt_broker)
    subscribe(everything, "#", 0)
    sys_sub, got_sys = client(mqtt_broker)
    subscribe(sys_sub, "$SYS/broker/#", 0)
    # $SYS values are retained: the explicit subscriber gets them at once.
    seen = {}
    while "$SYS/broker/version" not in seen or "$SYS/broker/clients/connected" not in seen:
        m = next_message(got_sys)
        seen[m.topic] = m.payload
    assert seen["$SYS/broker/version"].startswith(b"tributary ")
    assert int(seen["$SYS/broker/clients/connected"]) >= 0  # refreshed every 10 s
    # '#' does not match $ topics: a normal publish is the first thing it sees.
    pub, _ = client(mqtt_broker)
    pub.publish("plain/topic", b"x", qos=0).wait_for_publish(WAIT)
    assert next_message(got_all).topic == "plain/topic"
    for c in (everything, sys_sub, pub):
        c.disconnect()
        c.loop_stop()


def test_mqtt_over_websocket(mqtt_broker):
    deadline = time.monotonic() + WAIT
    while not (m := re.search(r"listening protocol=http addr=127\.0\.0\.1:(\d+)", mqtt_broker.log_text())):
        assert time.monotonic() < deadline, "no `listening protocol=http` line"
        time.sleep(0.02)  # polling the log for the line, bounded
    http_port = int(m.group(1))
    ws = mqtt.Client(CallbackAPIVersion.VERSION2, transport="websockets", protocol=mqtt.MQTTv311)
    ws.ws_set_options(path="/mqtt")
    got: queue.Queue = queue.Queue()
    ws.on_message = lambda _c, _u, msg: got.put(msg)
    ok = queue.Queue()
    ws.on_connect = lambda _c, _u, _f, rc, props=None: ok.put(rc)
    ws.connect("127.0.0.1", http_port, keepalive=30)
    ws.loop_start()
    assert not ok.get(timeout=WAIT).is_failure
    subscribe(ws, "ws/#", 1)
    tcp, _ = client(mqtt_broker)
    tcp.publish("ws/hello", b"over websocket", qos=1).wait_for_publish(WAIT)
    m = next_message(got)
    assert (m.topic, m.payload) == ("ws/hello", b"over websocket")
    for c in (ws, tcp):
        c.disconnect()
        c.loop_stop()


def test_v311_empty_client_id_with_persistent_session_gets_0x02(mqtt_broker):
    s = socket.create_connection(("127.0.0.1", mqtt_broker.mqtt_port), timeout=WAIT)
    # CONNECT 3.1.1, clean session 0, keep alive 30, empty client id.
    body = b"\x00\x04MQTT\x04\x00\x00\x1e" + b"\x00\x00"
    s.sendall(bytes([0x10, len(body)]) + body)
    assert s.recv(4) == b"\x20\x02\x00\x02", "expected CONNACK with return code 2 (identifier rejected)"
    s.close()


def test_v5_session_expiry_alone_makes_the_session_persistent(mqtt_broker):
    def connect(clean):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="expiring", protocol=mqtt.MQTTv5)
        got: queue.Queue = queue.Queue()
        c.on_message = lambda _c, _u, msg: got.put(msg)
        acks: queue.Queue = queue.Queue()
        c.on_connect = lambda _c, _u, flags, rc, props=None: acks.put(flags.session_present)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        c.connect("127.0.0.1", mqtt_broker.mqtt_port, clean_start=clean, properties=props)
        c.loop_start()
        return c, got, acks.get(timeout=WAIT)

    c, _, present = connect(True)
    assert not present
    subscribe(c, "exp/#", 1)
    c.disconnect()
    c.loop_stop()
    pub, _ = client(mqtt_broker)
    pub.publish("exp/a", b"while away", qos=1).wait_for_publish(WAIT)
    c, got, present = connect(False)
    assert present, "a session with an expiry interval was not kept"
    assert next_message(got).payload == b"while away"
    for x in (c, pub):
        x.disconnect()
        x.loop_stop()


def test_mqtt_over_tls(mqtt_broker):
    """MQTT over TLS (listeners.mqtts, 8883 by default) with the certificate the broker
    generated at first start, verified (hostname `localhost`), not skipped."""
    import ssl

    deadline = time.monotonic() + WAIT
    while not (m := re.search(r"listening protocol=mqtts addr=127\.0\.0\.1:(\d+)", mqtt_broker.log_text())):
        assert time.monotonic() < deadline, "no `listening protocol=mqtts` line"
        time.sleep(0.02)  # polling the log for the line, bounded
    tls_port = int(m.group(1))
    cert = mqtt_broker.data_dir / "xmpp" / "localhost.crt"
    assert cert.exists(), "no generated certificate"
    ctx = ssl.create_default_context(cafile=str(cert))
    sec = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sec.tls_set_context(ctx)
    got: queue.Queue = queue.Queue()
    sec.on_message = lambda _c, _u, msg: got.put(msg)
    ok = queue.Queue()
    sec.on_connect = lambda _c, _u, _f, rc, props=None: ok.put(rc)
    sec.connect("localhost", tls_port, keepalive=30)
    sec.loop_start()
    assert not ok.get(timeout=WAIT).is_failure
    assert isinstance(sec.socket(), ssl.SSLSocket), "the connection is not TLS"
    subscribe(sec, "tls/#", 1)
    tcp, _ = client(mqtt_broker)
    tcp.publish("tls/hello", b"encrypted", qos=1).wait_for_publish(WAIT)
    m = next_message(got)
    assert (m.topic, m.payload) == ("tls/hello", b"encrypted")
    for c in (sec, tcp):
        c.disconnect()
        c.loop_stop()
