"""The Kafka protocol over Tributary streams, with real Kafka clients: kafka-python (pure
Python) and confluent-kafka (librdkafka). Produce/consume with each acks level and each
compression codec, a consumer group of three with a rebalance, committed offsets across a
restart, Kafka ↔ AMQP (pika) with headers and keys mapped, SASL PLAIN and SCRAM-SHA-256, and
raw-socket checks: an unsupported API version is answered, a malformed request closes only
its own connection.

Tributary only: the Kafka listener is ours (a RabbitMQ target has none).
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic as KpNewTopic

from conftest import CONFIG, TARGET, TributaryBroker
from durability_support import RestartableBroker

pytestmark = pytest.mark.skipif(TARGET[0] != "tributary", reason="the Kafka listener is Tributary's")

KAFKA_RE = re.compile(r"listening protocol=kafka addr=(\S+)")
WAIT = 30.0
KAFKA_CONFIG = CONFIG.replace("[listeners]\n", '[listeners]\nkafka = "127.0.0.1:0"\n', 1)


def kafka_addr(log_text: str) -> str:
    m = KAFKA_RE.search(log_text)
    assert m, "no `listening protocol=kafka` line"
    return m.group(1)


@pytest.fixture
def kb(request, tmp_path_factory):
    """A broker with the Kafka listener on; `kb.bootstrap` is its address."""
    root = Path(tempfile.mkdtemp(prefix="tributary-kafka-"))
    b = TributaryBroker(root)
    b.config_text = KAFKA_CONFIG + getattr(request, "param", "")
    try:
        b.start()
        deadline = time.monotonic() + 10
        while not KAFKA_RE.search(b.log_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        b.bootstrap = kafka_addr(b.log_text())
        yield b
    finally:
        problems = b.stop()
        rep = getattr(request.node, "rep_call", None)
        if problems or (rep is not None and rep.failed):
            shutil.copy(b.log_path, tmp_path_factory.mktemp("broker-log") / "broker.log")
        shutil.rmtree(root, ignore_errors=True)
        if problems:
            pytest.fail("broker problems: " + "; ".join(problems) + "\n" + b.log_text()[-20000:], pytrace=False)


def topic_name(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def rd_producer(kb, **conf):
    return Producer({"bootstrap.servers": kb.bootstrap, "broker.address.family": "v4", **conf})


def rd_consumer(kb, group, **conf):
    return Consumer({
        "bootstrap.servers": kb.bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **conf,
    })


def rd_consume(consumer, n, timeout=WAIT):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append(m)
    return got


def kp_consume(consumer, n, timeout=WAIT):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    return got


@pytest.mark.parametrize("acks", ["0", "1", "all"])
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_librdkafka_produce_consume(kb, acks, codec):
    topic = topic_name()
    p = rd_producer(kb, acks=acks, **{"compression.type": codec, "linger.ms": 5})
    delivered = []
    for i in range(50):
        p.produce(topic, value=f"v{i}".encode() * 20, key=f"k{i}".encode(),
                  headers=[("h", f"x{i}".encode())], on_delivery=lambda err, msg: delivered.append(err))
    assert p.flush(WAIT) == 0
    assert delivered == [None] * 50
    c = rd_consumer(kb, topic_name("g"))
    c.subscribe([topic])
    got = rd_consume(c, 50)
    c.close()
    assert [m.value() for m in got] == [f"v{i}".encode() * 20 for i in range(50)]
    assert [m.key() for m in got] == [f"k{i}".encode() for i in range(50)]
    assert [m.offset() for m in got] == list(range(50))
    assert got[7].headers() == [("h", b"x7")]


@pytest.mark.parametrize("acks", [0, 1, "all"])
@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_produce_consume(kb, acks, codec):
    topic = topic_name()
    p = KafkaProducer(bootstrap_servers=kb.bootstrap, acks=acks, compression_type=codec, linger_ms=5)
    futures = [p.send(topic, value=f"v{i}".encode() * 20, key=f"k{i}".encode(), headers=[("h", b"y")])
               for i in range(40)]
    p.flush(WAIT)
    for f in futures:
        f.get(WAIT)
    p.close()
    c = KafkaConsumer(topic, bootstrap_servers=kb.bootstrap, group_id=topic_name("g"),
                      auto_offset_reset="earliest", enable_auto_commit=False)
    got = kp_consume(c, 40)
    c.close()
    assert [r.value for r in got] == [f"v{i}".encode() * 20 for i in range(40)]
    assert [r.key for r in got] == [f"k{i}".encode() for i in range(40)]
    assert got[0].headers == [("h", b"y")]


def test_kafka_python_reads_what_librdkafka_wrote_with_list_offsets(kb):
    topic = topic_name()
    p = rd_producer(kb)
    for i in range(10):
        p.produce(topic, value=str(i).encode())
    assert p.flush(WAIT) == 0
    c = KafkaConsumer(bootstrap_servers=kb.bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    assert c.beginning_offsets([tp]) == {tp: 0}
    assert c.end_offsets([tp]) == {tp: 10}
    c.assign([tp])
    c.seek(tp, 6)
    got = kp_consume(c, 4)
    c.close()
    assert [r.value for r in got] == [b"6", b"7", b"8", b"9"]
