"""The x-delayed-message exchange type (RabbitMQ's delayed-message plugin, made durable):
a message with an `x-delay` header is routed by the `x-delayed-type` only once the delay has
passed; persistent messages to a durable delayed exchange survive a crash and still fire.
Tributary only (Debian's RabbitMQ has no such plugin)."""

from __future__ import annotations

import time

import pika
import pytest

from durability_support import restartable_broker, skip_unless_tributary  # noqa: F401
from helpers import confirm_channel

pytestmark = [pytest.mark.tributary_only, skip_unless_tributary]


def wait_message(ch, queue: str, timeout: float):
    """basic.get until a message arrives (bounded); returns (seconds waited, body, properties)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return time.monotonic() - start, body, props
        time.sleep(0.02)  # polling an observable state with a deadline
    pytest.fail(f"nothing arrived in {queue!r} within {timeout}s")


def setup(ch, kind="topic", durable=False):
    ch.exchange_declare("delayed", "x-delayed-message", durable=durable, arguments={"x-delayed-type": kind})
    ch.queue_declare("later", durable=durable)
    ch.queue_bind("later", "delayed", "a.*" if kind == "topic" else "k")


def test_delay_holds_the_message_then_routes_it_by_the_delayed_type(broker):
    conn = broker.connect()
    ch = confirm_channel(conn)
    setup(ch)
    t0 = time.monotonic()
    ch.basic_publish("delayed", "a.b", b"late", pika.BasicProperties(headers={"x-delay": 700}))
    ch.basic_publish("delayed", "a.c", b"now")
    # The undelayed one is routed at once; the delayed one is not there yet.
    method, _, body = ch.basic_get("later", auto_ack=True)
    assert body == b"now"
    assert ch.queue_declare("later", passive=True).method.message_count == 0
    _, body, props = wait_message(ch, "later", 10)
    assert body == b"late"
    assert time.monotonic() - t0 >= 0.7, "fired before its delay"
    assert "x-tributary-fire-at" not in (props.headers or {})
    conn.close()


def test_delays_fire_in_time_order_not_publish_order(broker):
    conn = broker.connect()
    ch = confirm_channel(conn)
    setup(ch, kind="direct")
    for delay, body in [(900, b"third"), (300, b"first"), (600, b"second")]:
        ch.basic_publish("delayed", "k", body, pika.BasicProperties(headers={"x-delay": delay}))
    got = [wait_message(ch, "later", 10)[1] for _ in range(3)]
    assert got == [b"first", b"second", b"third"]
    conn.close()


def test_missing_delayed_type_is_refused(broker):
    conn = broker.connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare("bad-delayed", "x-delayed-message")
    assert e.value.reply_code == 406
    conn.close()


@pytest.mark.parametrize("how", ["kill", "term"])
def test_persistent_delayed_messages_survive_a_restart_and_fire_after_it(broker, how):
    conn = broker.connect()
    ch = confirm_channel(conn)
    setup(ch, kind="direct", durable=True)
    persistent = pika.BasicProperties(delivery_mode=2, headers={"x-delay": 2500})
    ch.basic_publish("delayed", "k", b"survivor", persistent)  # confirmed: on disk
    # Due earlier: had it survived, it would arrive before the persistent one.
    ch.basic_publish("delayed", "k", b"transient", pika.BasicProperties(headers={"x-delay": 1500}))
    assert ch.queue_declare("later", passive=True).method.message_count == 0
    conn.close()
    broker.restart(how)
    conn = broker.connect()
    ch = conn.channel()
    _, body, _ = wait_message(ch, "later", 15)
    assert body == b"survivor"
    # The transient delayed message (due first) did not survive the restart.
    assert ch.basic_get("later", auto_ack=True)[0] is None
    conn.close()
