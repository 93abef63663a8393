"""Virtual hosts and topic permissions (issue 9, tenancy).

Vhosts are created and deleted with `tributary vhost add|delete` on a running broker, as
`rabbitmqctl add_vhost` / `delete_vhost`; AMQP clients (pika) pick one in connection.open,
MQTT clients (paho-mqtt) with a `vhost:user` username as in RabbitMQ's MQTT plugin.
Exchanges, queues, messages, MQTT sessions and retained messages of one vhost are invisible
in another. Topic permissions (`tributary user set_topic_permissions`, RabbitMQ's
`set_topic_permissions`) are checked on every AMQP publish and bind to a topic exchange and
on every MQTT PUBLISH and SUBSCRIBE, with `{username}`/`%u` and `{client_id}`/`%c`."""

from __future__ import annotations

import queue
import re
import subprocess
import time

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import TARGET
from helpers import assert_empty, channel_error, get_one, queue_exists
from test_mqtt import WAIT, mqtt_broker, restartable  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="manages vhosts with the tributary CLI")

PW = "s3cret-pw"


def cli_fails(broker, *args) -> str:
    """Runs the CLI expecting a failure; returns its stderr."""
    res = subprocess.run([str(broker.bin), *args, "--data-dir", str(broker.data_dir)],
                         capture_output=True, timeout=20)
    assert res.returncode != 0, f"`tributary {' '.join(args)}` succeeded: {res.stdout!r}"
    return res.stderr.decode()


def add_vhost_user(broker, vhost: str, name: str = "bob"):
    """Creates `vhost` and a user with full permissions on it and on `/`."""
    broker.cli("vhost", "add", vhost)
    if name not in broker.cli("user", "list").stdout.decode():
        broker.add_user(name, PW)
    broker.cli("user", "set_permissions", "-p", vhost, name, ".*", ".*", ".*")


def amqp(broker, vhost: str, name: str = "bob") -> pika.BlockingConnection:
    return broker.connect(user=name, password=PW, vhost=vhost)


def mqtt_client(b, username: str, client_id: str, version=mqtt.MQTTv311):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    c.username_pw_set(username, PW)
    events: queue.Queue = queue.Queue()
    c.on_message = lambda _c, _u, msg: events.put(("message", msg.topic, msg.payload, msg.retain))
    c.on_connect = lambda _c, _u, _f, rc, props=None: events.put(("connect", rc))
    c.on_disconnect = lambda _c, _u, _f, rc, props=None: events.put(("disconnect", rc))
    c.on_subscribe = lambda _c, _u, mid, rcs, props=None: events.put(("suback", [int(r.value) for r in rcs]))
    c.on_publish = lambda _c, _u, mid, rc, props=None: events.put(("puback", mid, int(rc.value)))
    c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    kind, rc = events.get(timeout=WAIT)
    assert kind == "connect" and not rc.is_failure, (kind, rc)
    return c, events


def next_event(events: queue.Queue, kind: str):
    """The next event of `kind`; any message or disconnect on the way fails the test."""
    while True:
        ev = events.get(timeout=WAIT)
        if ev[0] == kind:
            return ev
        raise AssertionError(f"expected {kind}, got {ev}")


def next_events(events: queue.Queue, *kinds: str) -> dict:
    """The next events, one of each kind, in any order (a delivery may overtake the PUBACK
    of the message that caused it); anything else fails the test."""
    got: dict = {}
    while len(got) < len(kinds):
        ev = events.get(timeout=WAIT)
        assert ev[0] in kinds and ev[0] not in got, f"expected {kinds}, got {ev}"
        got[ev[0]] = ev
    return got


def stop(*clients):
    for c in clients:
        c.disconnect()
        c.loop_stop()


# -- the CLI ---------------------------------------------------------------------------------
def test_vhost_cli_add_list_delete_and_errors(broker):
    broker.cli("vhost", "add", "tenant-a", "--description", "the first tenant")
    listing = broker.cli("vhost", "list").stdout.decode()
    assert re.search(r"^/\t", listing, re.M), listing
    assert "tenant-a\tthe first tenant" in listing, listing
    assert "already exists" in cli_fails(broker, "vhost", "add", "tenant-a")
    broker.add_user("bob", PW)
    assert "vhost 'nowhere' does not exist" in cli_fails(
        broker, "user", "set_permissions", "-p", "nowhere", "bob", ".*", ".*", ".*")
    broker.cli("vhost", "delete", "tenant-a")
    assert "tenant-a" not in broker.cli("vhost", "list").stdout.decode()
    assert "does not exist" in cli_fails(broker, "vhost", "delete", "tenant-a")


# -- AMQP ------------------------------------------------------------------------------------
def test_unknown_vhost_is_refused_with_530(broker):
    broker.add_user("bob", PW)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        amqp(broker, "nowhere")
    assert "(530)" in str(ei.value) and "vhost nowhere not found" in str(ei.value), ei.value


def test_a_new_vhost_is_usable_at_once_and_needs_its_own_permissions(broker):
    broker.cli("vhost", "add", "fresh")
    broker.add_user("bob", PW)  # permissions on `/` only
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        amqp(broker, "fresh")
    assert "NOT_ALLOWED - access to vhost 'fresh' refused for user 'bob'" in str(ei.value), ei.value
    broker.cli("user", "set_permissions", "-p", "fresh", "bob", ".*", ".*", ".*")
    conn = amqp(broker, "fresh")
    assert conn.is_open
    conn.close()


def test_exchanges_queues_and_messages_are_isolated_between_vhosts(broker):
    add_vhost_user(broker, "tenant-a")
    a, root = amqp(broker, "tenant-a"), amqp(broker, "/")
    ach, rch = a.channel(), root.channel()
    ach.exchange_declare("only-in-a", "fanout")
    ach.queue_declare("same-name")
    ach.basic_publish("", "same-name", b"in tenant-a")
    assert not queue_exists(root, "same-name")
    rch = root.channel()
    with channel_error(404, "NOT_FOUND - no exchange 'only-in-a' in vhost '/'"):
        rch.exchange_declare("only-in-a", "fanout", passive=True)
    rch = root.channel()
    rch.queue_declare("same-name")
    rch.basic_publish("", "same-name", b"in /")
    assert get_one(ach, "same-name", auto_ack=True)[2] == b"in tenant-a"
    assert get_one(rch, "same-name", auto_ack=True)[2] == b"in /"
    assert_empty(ach, "same-name")
    assert_empty(rch, "same-name")
    a.close()
    root.close()


def test_deleting_a_vhost_deletes_its_contents_and_refuses_logins(broker):
    add_vhost_user(broker, "doomed")
    conn = amqp(broker, "doomed")
    ch = conn.channel()
    ch.queue_declare("kept?", durable=True)
    ch.basic_publish("", "kept?", b"gone", pika.BasicProperties(delivery_mode=2))
    conn.close()
    still_open = amqp(broker, "doomed")
    broker.cli("vhost", "delete", "doomed")
    # The open connection is closed as RabbitMQ closes it: 320 CONNECTION_FORCED.
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            still_open.process_data_events(time_limit=0.1)
    assert closed.value.reply_code == 320, closed.value
    assert "vhost 'doomed' is deleted" in closed.value.reply_text, closed.value
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        amqp(broker, "doomed")
    assert "NOT_ALLOWED - vhost doomed not found" in str(ei.value), ei.value
    # Created again, it is empty, and the old permissions went with it.
    broker.cli("vhost", "add", "doomed")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        amqp(broker, "doomed")
    broker.cli("user", "set_permissions", "-p", "doomed", "bob", ".*", ".*", ".*")
    conn = amqp(broker, "doomed")
    assert not queue_exists(conn, "kept?")
    conn.close()


def test_vhosts_and_their_durable_queues_survive_a_kill(restartable):
    b = restartable
    add_vhost_user(b, "durable-tenant")
    conn = amqp(b, "durable-tenant")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("orders", durable=True)
    ch.basic_publish("", "orders", b"order-1", pika.BasicProperties(delivery_mode=2))
    conn.close()
    b.restart("kill")
    conn = amqp(b, "durable-tenant")
    ch = conn.channel()
    assert get_one(ch, "orders", auto_ack=True)[2] == b"order-1"
    conn.close()
    # `/` did not get it.
    root = amqp(b, "/")
    assert not queue_exists(root, "orders")
    root.close()


def test_a_vhost_deleted_while_the_broker_is_down_leaves_nothing_behind(restartable):
    b = restartable
    add_vhost_user(b, "short-lived")
    conn = amqp(b, "short-lived")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("q", durable=True)
    ch.basic_publish("", "q", b"m", pika.BasicProperties(delivery_mode=2))
    conn.close()
    b.terminate()
    b.cli("vhost", "delete", "short-lived")
    b.cli("vhost", "add", "short-lived")
    b.cli("user", "set_permissions", "-p", "short-lived", "bob", ".*", ".*", ".*")
    b.start()
    conn = amqp(b, "short-lived")
    assert not queue_exists(conn, "q")
    conn.close()


# -- MQTT ------------------------------------------------------------------------------------
def test_mqtt_vhost_from_username_routes_within_that_vhost(mqtt_broker):
    b = mqtt_broker
    add_vhost_user(b, "iot")
    sub, events = mqtt_client(b, "iot:bob", "sensor-sub")
    sub.subscribe("t/#", 1)
    assert next_event(events, "suback")[1] == [1]
    # An AMQP publish to amq.topic in `/` must not reach the iot subscriber; one in iot must.
    root = amqp(b, "/")
    root.channel().basic_publish("amq.topic", "t.x", b"from /")
    iot = amqp(b, "iot")
    iot.channel().basic_publish("amq.topic", "t.x", b"from iot")
    ev = next_event(events, "message")
    assert ev[1:3] == ("t/x", b"from iot"), ev
    stop(sub)
    root.close()
    iot.close()


def test_mqtt_client_ids_and_retained_messages_are_per_vhost(mqtt_broker):
    b = mqtt_broker
    add_vhost_user(b, "iot")
    # The same client id in two vhosts: two sessions, no takeover.
    in_root, root_events = mqtt_client(b, "bob", "device-1")
    in_iot, iot_events = mqtt_client(b, "iot:bob", "device-1")
    in_iot.publish("r/state", b"iot-state", qos=1, retain=True)
    assert next_event(iot_events, "puback")[2] == 0
    in_root.subscribe("r/#", 1)
    next_event(root_events, "suback")
    in_root.publish("r/marker", b"after", qos=1)
    # The first message the `/` subscriber sees is its own marker, never iot's retained one.
    ev = next_events(root_events, "puback", "message")["message"]
    assert ev[1:3] == ("r/marker", b"after"), ev
    # The iot client is still connected: its session was not taken over.
    in_iot.subscribe("r/#", 1)
    next_event(iot_events, "suback")
    ev = next_event(iot_events, "message")
    assert ev[1:4] == ("r/state", b"iot-state", True), ev
    stop(in_root, in_iot)


def test_mqtt_login_to_a_vhost_without_permissions_is_not_authorized(mqtt_broker):
    b = mqtt_broker
    b.cli("vhost", "add", "closed")
    b.add_user("bob", PW)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv5)
    c.username_pw_set("closed:bob", PW)
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: got.put(rc)
    c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    rc = got.get(timeout=WAIT)
    c.loop_stop()
    assert rc.is_failure and int(rc.value) == 0x87, rc


# -- topic permissions -----------------------------------------------------------------------
def test_mqtt_topic_permissions_with_username_and_client_id(mqtt_broker):
    b = mqtt_broker
    b.add_user("bob", PW)
    b.cli("user", "set_topic_permissions", "bob", "amq.topic",
          r"^devices\.%u\.", r"^(devices\.{username}\.|cmd\.%c)")
    c, events = mqtt_client(b, "bob", "dev-7", version=mqtt.MQTTv5)
    c.subscribe("devices/bob/#", 1)
    assert next_event(events, "suback")[1] == [1]
    c.subscribe("devices/alice/#", 1)
    assert next_event(events, "suback")[1] == [0x87]
    c.subscribe("cmd/dev-7", 1)
    assert next_event(events, "suback")[1] == [1]
    c.publish("devices/alice/temp", b"21", qos=1)
    assert next_event(events, "puback")[2] == 0x87
    c.publish("devices/bob/temp", b"22", qos=1)
    got = next_events(events, "puback", "message")
    assert got["puback"][2] == 0
    assert got["message"][1:3] == ("devices/bob/temp", b"22"), got
    stop(c)


def test_amqp_topic_permissions_on_publish_and_bind(broker):
    broker.add_user("bob", PW)
    broker.cli("user", "set_topic_permissions", "bob", "amq.topic", r"^metrics\.", r"^metrics\.")
    conn = amqp(broker, "/")
    ch = conn.channel()
    ch.queue_declare("m")
    ch.queue_bind("m", "amq.topic", "metrics.#")
    ch.basic_publish("amq.topic", "metrics.cpu", b"ok")
    assert get_one(ch, "m", auto_ack=True)[2] == b"ok"
    with channel_error(403, "ACCESS_REFUSED - read access to topic 'secrets.#' in exchange "
                            "'amq.topic' in vhost '/' refused for user 'bob'"):
        ch.queue_bind("m", "amq.topic", "secrets.#")
    ch = conn.channel()
    ch.basic_publish("amq.topic", "secrets.key", b"no")
    with channel_error(403, "ACCESS_REFUSED - write access to topic 'secrets.key' in exchange "
                            "'amq.topic' in vhost '/' refused for user 'bob'"):
        ch.queue_declare("m", passive=True)  # the next round trip sees the channel close
    # Other exchanges are not topic exchanges: no topic check there.
    ch = conn.channel()
    ch.basic_publish("", "m", b"direct")
    assert get_one(ch, "m", auto_ack=True)[2] == b"direct"
    # Cleared on the running broker, the refused key is allowed.
    broker.cli("user", "clear_topic_permissions", "bob")
    ch.queue_bind("m", "amq.topic", "secrets.#")
    conn.close()


# -- per-vhost limits ------------------------------------------------------------------------
def test_vhost_connection_and_queue_limits(broker):
    add_vhost_user(broker, "small")
    assert "invalid vhost limits" in cli_fails(broker, "vhost", "set_limits", "-p", "small", "{\"max-bananas\": 1}")
    broker.cli("vhost", "set_limits", "-p", "small", '{"max-connections": 1, "max-queues": 1}')
    assert '"max-connections":1' in broker.cli("vhost", "list").stdout.decode()
    first = amqp(broker, "small")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        amqp(broker, "small")
    assert ("NOT_ALLOWED - access to vhost 'small' refused for user 'bob': "
            "connection limit (1) is reached") in str(ei.value), ei.value
    ch = first.channel()
    ch.queue_declare("one")
    with channel_error(406, "PRECONDITION_FAILED - cannot declare queue 'two'"):
        ch.queue_declare("two")
    # Other vhosts are not affected.
    other = [amqp(broker, "/"), amqp(broker, "/")]
    for c in other:
        c.close()
    first.close()
    # A negative value removes a limit, as in RabbitMQ.
    broker.cli("vhost", "set_limits", "-p", "small", '{"max-connections": -1}')
    two = [amqp(broker, "small"), amqp(broker, "small")]
    for c in two:
        c.close()


def connack(b, username: str, client_id: str, version=mqtt.MQTTv5, clean=True):
    """Connects and disconnects at once; returns the CONNACK's reason code."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
                    clean_session=clean if version != mqtt.MQTTv5 else None)
    c.username_pw_set(username, PW)
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, props=None: got.put(rc)
    c.connect("127.0.0.1", b.mqtt_port, keepalive=30)
    c.loop_start()
    rc = got.get(timeout=WAIT)
    if not rc.is_failure:
        c.disconnect()
    c.loop_stop()
    return rc


def test_vhost_mqtt_session_limit_counts_stored_sessions(mqtt_broker):
    b = mqtt_broker
    add_vhost_user(b, "iot")
    b.cli("vhost", "set_limits", "-p", "iot", '{"max-sessions": 1}')
    # A persistent (3.1.1 clean session 0) session outlives its connection and still counts.
    assert not connack(b, "iot:bob", "stored-one", mqtt.MQTTv311, clean=False).is_failure
    rc = connack(b, "iot:bob", "newcomer")
    assert rc.is_failure and int(rc.value) == 0x97, rc  # Quota exceeded
    # The stored session's own client comes back, and `/` has no such limit.
    assert not connack(b, "iot:bob", "stored-one", mqtt.MQTTv311, clean=False).is_failure
    assert not connack(b, "bob", "newcomer").is_failure
