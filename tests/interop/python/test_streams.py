"""Streams (`x-queue-type: stream`) over AMQP 0-9-1 with pika, as RabbitMQ users write them:
declaration and its refusals, publishing with confirms, consuming from `x-stream-offset`
first/last/next/a number/a timestamp/an interval, independent consumers, the offset header,
filtering, retention by size and by age, restarts (clean and `kill -9`), an MQTT publish
routed into a stream, and a stream larger than the memory budget read with RSS bounded.

Tributary only (RestartableBroker): several tests restart or kill the broker.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import CONFIG
from durability_support import RestartableBroker, restartable_broker  # noqa: F401  (the `broker` fixture)

WAIT = 20.0
MQTT_RE = re.compile(r"listening protocol=mqtt addr=127\.0\.0\.1:(\d+)")


def declare_stream(ch, name, **arguments):
    args = {"x-queue-type": "stream", **arguments}
    return ch.queue_declare(name, durable=True, arguments=args)


def publish_confirmed(ch, queue, bodies, headers=None):
    ch.confirm_delivery()
    for b in bodies:
        props = pika.BasicProperties(delivery_mode=2, headers=headers(b) if headers else None)
        ch.basic_publish("", queue, b, props, mandatory=False)


def take(conn, ch, queue, n, offset=None, prefetch=100, extra=None, settle=5.0):
    """Consumes until `n` deliveries came (or WAIT passed); then waits `settle` seconds at
    most for one more (to check nothing else comes), acks everything, cancels."""
    ch.basic_qos(prefetch_count=prefetch)
    args = dict(extra or {})
    if offset is not None:
        args["x-stream-offset"] = offset
    got = []

    def on_message(c, method, props, body):
        got.append((body, props.headers or {}))
        c.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue, on_message, arguments=args)
    deadline = time.monotonic() + WAIT
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    if settle:
        until = time.monotonic() + settle
        while len(got) == n and time.monotonic() < until:
            conn.process_data_events(time_limit=0.1)
    ch.basic_cancel(tag)
    return got


def bodies_of(got):
    return [b for b, _ in got]


def offsets_of(got):
    return [h["x-stream-offset"] for _, h in got]


@pytest.fixture
def conn(broker):
    c = broker.connect()
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


def test_declare_requires_durable_non_exclusive_non_auto_delete(broker, conn):
    for kw, prop in [
        (dict(durable=True, auto_delete=True), "auto-delete"),
        (dict(durable=True, exclusive=True), "exclusive"),
        (dict(durable=False), "non-durable"),
    ]:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("s", arguments={"x-queue-type": "stream"}, **kw)
        assert e.value.reply_code == 406
        assert e.value.reply_text == f"PRECONDITION_FAILED - invalid property '{prop}' for queue 's' in vhost '/'"
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        declare_stream(ch, "s", **{"x-max-age": "7 days"})
    assert e.value.reply_code == 406
    ok = declare_stream(conn.channel(), "s", **{"x-max-age": "7D"})
    assert ok.method.message_count == 0


def test_consume_refusals_as_rabbitmq(broker):
    conn = broker.connect()
    ch = conn.channel()
    declare_stream(ch, "s")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume("s", lambda *a: None)
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - consumer prefetch count is not set for 'queue 's' in vhost '/''"
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.basic_consume("s", lambda *a: None, auto_ack=True)
        conn.process_data_events(time_limit=1)
    assert e.value.reply_code == 540
    assert "automatic acknowledgement not supported by stream queues" in e.value.reply_text
    conn = broker.connect()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.channel().basic_get("s")
    assert e.value.reply_code == 540
    assert "basic.get not supported by stream queues" in e.value.reply_text


def test_offsets_first_last_next_numeric_timestamp_interval(broker, conn, ch):
    declare_stream(ch, "s")
    publish_confirmed(ch, "s", [b"a%d" % i for i in range(5)])
    assert declare_stream(ch, "s").method.message_count == 5
    # The clock passes a whole second between the two batches (timestamps are seconds).
    boundary = math.ceil(time.time() + 0.01)
    while time.time() < boundary + 0.02:
        time.sleep(0.01)
    publish_confirmed(ch, "s", [b"b%d" % i for i in range(5)])

    got = take(conn, conn.channel(), "s", 10, "first", settle=0.5)
    assert bodies_of(got) == [b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)]
    assert offsets_of(got) == list(range(10))
    assert bodies_of(take(conn, conn.channel(), "s", 1, "last")) == [b"b4"]
    assert bodies_of(take(conn, conn.channel(), "s", 3, 7, settle=0.5)) == [b"b2", b"b3", b"b4"]
    from datetime import datetime, timezone
    ts = datetime.fromtimestamp(boundary, tz=timezone.utc)
    got = take(conn, conn.channel(), "s", 5, ts, settle=0.5)
    assert bodies_of(got) == [b"b%d" % i for i in range(5)]
    assert bodies_of(take(conn, conn.channel(), "s", 10, "1h", settle=0.5))[:1] == [b"a0"]

    # "next" (and no argument at all) sees only what comes after the consume.
    c2 = conn.channel()
    c2.basic_qos(prefetch_count=10)
    seen = []
    c2.basic_consume("s", lambda c, m, p, b: (seen.append((b, p.headers)), c.basic_ack(m.delivery_tag)),
                     arguments={"x-stream-offset": "next"})
    c3 = conn.channel()
    c3.basic_qos(prefetch_count=10)
    seen_default = []
    c3.basic_consume("s", lambda c, m, p, b: (seen_default.append(b), c.basic_ack(m.delivery_tag)))
    conn.process_data_events(time_limit=0.3)
    publish_confirmed(conn.channel(), "s", [b"late"])
    deadline = time.monotonic() + WAIT
    while (not seen or not seen_default) and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert [b for b, _ in seen] == [b"late"] and seen[0][1]["x-stream-offset"] == 10
    assert seen_default == [b"late"]


def test_two_consumers_read_independently_and_acks_only_move_credit(broker, conn, ch):
    declare_stream(ch, "s")
    publish_confirmed(ch, "s", [b"m%d" % i for i in range(50)])
    one = take(conn, conn.channel(), "s", 50, "first", prefetch=3, settle=0.5)
    two = take(conn, conn.channel(), "s", 50, 0, prefetch=7, settle=0.5)
    assert bodies_of(one) == bodies_of(two) == [b"m%d" % i for i in range(50)]
    # Still all there: consuming a stream removes nothing.
    assert declare_stream(ch, "s").method.message_count == 50


def test_prefetch_bounds_unacked_deliveries(broker, conn, ch):
    declare_stream(ch, "s")
    publish_confirmed(ch, "s", [b"m%d" % i for i in range(20)])
    c = conn.channel()
    c.basic_qos(prefetch_count=4)
    got = []
    c.basic_consume("s", lambda ch_, m, p, b: got.append(m.delivery_tag), arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + WAIT
    while len(got) < 4 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    conn.process_data_events(time_limit=0.5)
    assert len(got) == 4, "no more than the prefetch without acks"
    c.basic_ack(got[-1], multiple=True)
    while len(got) < 8 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert len(got) == 8


def test_filtering(broker, conn, ch):
    declare_stream(ch, "s")
    regions = [b"eu", b"us", None, b"eu", b"us", None]
    ch.confirm_delivery()
    for i, r in enumerate(regions):
        headers = {"x-stream-filter-value": r.decode()} if r else None
        ch.basic_publish("", "s", b"%d" % i, pika.BasicProperties(headers=headers))
    got = take(conn, conn.channel(), "s", 2, "first", extra={"x-stream-filter": "eu"}, settle=0.5)
    assert bodies_of(got) == [b"0", b"3"]
    got = take(conn, conn.channel(), "s", 4, "first",
               extra={"x-stream-filter": ["eu"], "x-stream-match-unfiltered": True}, settle=0.5)
    assert bodies_of(got) == [b"0", b"2", b"3", b"5"]


def test_retention_by_size_removes_oldest_segments(broker, conn, ch):
    declare_stream(ch, "s", **{"x-max-length-bytes": 20_000, "x-stream-max-segment-size-bytes": 4_000})
    publish_confirmed(ch, "s", [b"%05d" % i + b"x" * 495 for i in range(200)])
    count = declare_stream(ch, "s", **{"x-max-length-bytes": 20_000}).method.message_count
    assert 0 < count < 100, count
    got = take(conn, conn.channel(), "s", count, "first", settle=0.5)
    offs = offsets_of(got)
    assert offs[0] == 200 - count and offs[-1] == 199
    assert offs == list(range(offs[0], 200))


def test_retention_by_age(broker, conn, ch):
    declare_stream(ch, "s", **{"x-max-age": "1s", "x-stream-max-segment-size-bytes": 2_000})
    publish_confirmed(ch, "s", [b"old-%03d" % i + b"x" * 200 for i in range(60)])
    assert declare_stream(ch, "s").method.message_count == 60
    # The sweep deletes segments older than a second (never the one being written):
    # poll the broker's state, boundedly.
    deadline = time.monotonic() + 30
    count = 60
    while count == 60 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
        count = declare_stream(ch, "s").method.message_count
    assert count < 60
    got = take(conn, conn.channel(), "s", count, "first", settle=0.5)
    assert offsets_of(got)[-1] == 59 and offsets_of(got)[0] == 60 - count


@pytest.mark.parametrize("how", ["term", "kill"])
def test_confirmed_records_survive_restart(broker, how):
    conn = broker.connect()
    ch = conn.channel()
    declare_stream(ch, "s", **{"x-stream-max-segment-size-bytes": 50_000})
    bodies = [b"r%05d" % i + b"y" * 300 for i in range(1000)]
    publish_confirmed(ch, "s", bodies)  # every publish confirmed (after fsync)
    conn.close()
    broker.restart(how)
    conn = broker.connect()
    ch = conn.channel()
    assert declare_stream(ch, "s").method.message_count == 1000
    got = take(conn, conn.channel(), "s", 1000, "first", prefetch=200, settle=0.5)
    assert bodies_of(got) == bodies
    assert offsets_of(got) == list(range(1000))
    # Appends continue after the recovered tail.
    publish_confirmed(ch, "s", [b"after"])
    got = take(conn, conn.channel(), "s", 1, "last")
    assert bodies_of(got) == [b"after"] and offsets_of(got) == [1000]
    # A deleted stream's files go away.
    ch.queue_delete("s")
    assert not list((broker.store_dir / "streams").glob("*"))
    conn.close()


def test_mqtt_publish_routed_into_a_stream(broker, conn, ch):
    declare_stream(ch, "telemetry")
    ch.queue_bind("telemetry", "amq.topic", "sensors.#")
    port = int(MQTT_RE.search(broker.log_text()).group(1))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensor-1", protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for i in range(3):
            client.publish("sensors/room1/temp", b"21.%d" % i, qos=1).wait_for_publish(WAIT)
    finally:
        client.disconnect()
        client.loop_stop()
    deadline = time.monotonic() + WAIT
    while declare_stream(ch, "telemetry").method.message_count < 3 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    got = take(conn, conn.channel(), "telemetry", 3, "first", settle=0.5)
    assert bodies_of(got) == [b"21.0", b"21.1", b"21.2"]


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def small_budget_broker(request, tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="tributary-stream-rss-"))
    b = RestartableBroker(root)
    b.config_path.write_text(CONFIG + "\n[store]\nmemory_budget = 8388608\n")
    try:
        b.start()
        yield b
    finally:
        problems = b.finish()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


@pytest.mark.timeout(300)
def test_stream_larger_than_memory_budget_reads_from_first_with_rss_bounded(small_budget_broker):
    b = small_budget_broker
    pid = b.run.proc.pid
    conn = b.connect()
    ch = conn.channel()
    declare_stream(ch, "big", **{"x-stream-max-segment-size-bytes": 8_000_000})
    body = b"z" * 32_768
    n = 1600  # 50 MiB, six times the memory budget
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", "big", b"%08d" % i + body, pika.BasicProperties(delivery_mode=2))
    size_kib = n * len(body) // 1024
    before = vm_rss_kib(pid)
    c = conn.channel()
    c.basic_qos(prefetch_count=20)
    state = {"n": 0, "peak": before, "ok": True}

    def on_message(chan, method, props, data):
        if data[:8] != b"%08d" % state["n"]:
            state["ok"] = False
        state["n"] += 1
        if state["n"] % 100 == 0:
            state["peak"] = max(state["peak"], vm_rss_kib(pid))
        chan.basic_ack(method.delivery_tag)

    c.basic_consume("big", on_message, arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + 240
    while state["n"] < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
    assert state["n"] == n and state["ok"]
    growth = state["peak"] - before
    assert growth < size_kib / 2, f"RSS grew by {growth} KiB reading a {size_kib} KiB stream"
    conn.close()
