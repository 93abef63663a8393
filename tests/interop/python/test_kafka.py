"""The Kafka protocol over Tributary streams, with real Kafka clients: kafka-python (pure
Python) and confluent-kafka (librdkafka). Produce/consume with each acks level and each
compression codec, a consumer group of three with a rebalance, committed offsets across a
restart, Kafka ↔ AMQP (pika) with headers and keys mapped, SASL PLAIN and SCRAM-SHA-256, and
raw-socket checks: an unsupported API version is answered, a malformed request closes only
its own connection.

Tributary only: the Kafka listener is ours (a RabbitMQ target has none).
"""

from __future__ import annotations

import json
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
    param = getattr(request, "param", "")
    listeners, extra = param if isinstance(param, tuple) else ("", param)
    b.config_text = KAFKA_CONFIG.replace("[listeners]\n", "[listeners]\n" + listeners, 1) + extra
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


# acks=0 with kafka-python 2.3.0 is left to librdkafka above: its client queues an acks=0
# request but never wakes the socket to write it (client_async.send() only tracks connections
# whose future is not done yet, and an acks=0 future is done at once), so the records stay in
# the client's buffer until some other request goes out on that connection.
@pytest.mark.parametrize("acks", [1, "all"])
@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_produce_consume(kb, acks, codec):
    topic = topic_name()
    p = KafkaProducer(bootstrap_servers=kb.bootstrap, acks=acks, compression_type=codec, linger_ms=5)
    futures = [p.send(topic, value=f"v{i}".encode() * 20, key=f"k{i}".encode(), headers=[("h", b"y")])
               for i in range(40)]
    p.flush(WAIT)
    for f in futures:
        f.get(WAIT)
    c = KafkaConsumer(topic, bootstrap_servers=kb.bootstrap, group_id=topic_name("g"),
                      auto_offset_reset="earliest", enable_auto_commit=False)
    got = kp_consume(c, 40)
    c.close()
    p.close()
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


def test_admin_create_describe_delete_topics(kb):
    admin = AdminClient({"bootstrap.servers": kb.bootstrap, "broker.address.family": "v4"})
    topic = topic_name("adm")
    fs = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                       config={"retention.bytes": "1000000", "retention.ms": "3600000"})])
    fs[topic].result(WAIT)
    md = admin.list_topics(timeout=WAIT)
    assert len(md.topics[topic].partitions) == 3
    again = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    with pytest.raises(Exception) as e:
        again[topic].result(WAIT)
    assert "TOPIC_ALREADY_EXISTS" in str(e.value)
    kp = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    from kafka.admin import ConfigResource, ConfigResourceType
    res = kp.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    configs = {c[0]: c[1] for c in res[0].resources[0][4]}
    assert configs["retention.bytes"] == "1000000"
    assert configs["retention.ms"] == "3600000"
    kp.delete_topics([topic])
    kp.close()
    md = admin.list_topics(timeout=WAIT)
    assert topic not in md.topics


def test_consumer_group_of_three_rebalances_when_one_leaves(kb):
    topic = topic_name("grp")
    admin = AdminClient({"bootstrap.servers": kb.bootstrap, "broker.address.family": "v4"})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(WAIT)
    group = topic_name("g")
    consumers = [rd_consumer(kb, group, **{"heartbeat.interval.ms": 300, "session.timeout.ms": 6000})
                 for _ in range(3)]
    for c in consumers:
        c.subscribe([topic])

    def assignments(cs):
        return [sorted(tp.partition for tp in c.assignment()) for c in cs]

    def settle(cs, want):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for c in cs:
                m = c.poll(0.05)
                assert m is None or m.error() is None or m.error().code() == KafkaError._PARTITION_EOF
            a = assignments(cs)
            if sorted(p for ps in a for p in ps) == [0, 1, 2] and all(len(ps) == n for ps, n in zip(a, want)):
                return a
        pytest.fail(f"no rebalance to {want}: {assignments(cs)}")

    assert sorted(len(a) for a in settle(consumers, [1, 1, 1])) == [1, 1, 1]
    consumers[2].close()
    rest = consumers[:2]
    a = None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for c in rest:
            c.poll(0.05)
        a = assignments(rest)
        if sorted(p for ps in a for p in ps) == [0, 1, 2]:
            break
    assert sorted(p for ps in a for p in ps) == [0, 1, 2], a
    # The two left read what is produced to every partition.
    p = rd_producer(kb)
    for i in range(30):
        p.produce(topic, value=str(i).encode(), partition=i % 3)
    assert p.flush(WAIT) == 0
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < 30 and time.monotonic() < deadline:
        for c in rest:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got.append(int(m.value()))
    for c in rest:
        c.close()
    assert sorted(got) == list(range(30))


def test_committed_offsets_survive_a_restart(request, tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="tributary-kafka-dur-"))
    b = RestartableBroker(root)
    b.config_path.write_text(KAFKA_CONFIG)
    try:
        b.start()
        run = b.run
        addr = run.wait_for(KAFKA_RE, 10).group(1)
        topic, group = topic_name(), topic_name("g")
        p = Producer({"bootstrap.servers": addr, "broker.address.family": "v4"})
        for i in range(10):
            p.produce(topic, value=str(i).encode())
        assert p.flush(WAIT) == 0
        c = Consumer({"bootstrap.servers": addr, "broker.address.family": "v4", "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got = rd_consume(c, 4)
        assert [int(m.value()) for m in got] == [0, 1, 2, 3]
        c.commit(message=got[-1], asynchronous=False)
        c.close()
        run = b.restart("term")
        addr = run.wait_for(KAFKA_RE, 10).group(1)
        kc = KafkaConsumer(bootstrap_servers=addr, group_id=group, enable_auto_commit=False)
        assert kc.committed(TopicPartition(topic, 0)) == 4
        kc.close()
        c = Consumer({"bootstrap.servers": addr, "broker.address.family": "v4", "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got = rd_consume(c, 6)
        c.close()
        assert [int(m.value()) for m in got] == [4, 5, 6, 7, 8, 9]
    finally:
        problems = b.finish()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


def test_kafka_produced_topic_read_over_amqp(kb):
    topic = topic_name("k2a")
    p = rd_producer(kb)
    for i in range(5):
        p.produce(topic, value=f"body{i}".encode(), key=f"key{i}".encode(), headers=[("color", b"red")],
                  timestamp=1_700_000_000_000 + i)
    assert p.flush(WAIT) == 0
    conn = pika.BlockingConnection(kb.params())
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume(topic, lambda c, m, props, body: (got.append((body, props)), c.basic_ack(m.delivery_tag)),
                     arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + WAIT
    while len(got) < 5 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    conn.close()
    assert [b for b, _ in got] == [f"body{i}".encode() for i in range(5)]
    h = got[2][1].headers
    assert h["x-kafka-key"] in ("key2", b"key2")
    assert h["color"] in ("red", b"red")
    assert h["x-stream-offset"] == 2
    assert got[2][1].timestamp == 1_700_000_000


def test_amqp_published_stream_read_by_kafka_consumers(kb):
    stream = topic_name("a2k")
    conn = pika.BlockingConnection(kb.params())
    ch = conn.channel()
    ch.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", stream, f"m{i}".encode(), pika.BasicProperties(
            delivery_mode=2, headers={"x-kafka-key": f"k{i}", "color": "blue", "n": i}))
    conn.close()
    c = rd_consumer(kb, topic_name("g"))
    c.subscribe([stream])
    got = rd_consume(c, 5)
    c.close()
    assert [m.value() for m in got] == [f"m{i}".encode() for i in range(5)]
    assert [m.key() for m in got] == [f"k{i}".encode() for i in range(5)]
    assert dict(got[3].headers()) == {"color": b"blue", "n": b"3"}
    kc = KafkaConsumer(stream, bootstrap_servers=kb.bootstrap, auto_offset_reset="earliest",
                       enable_auto_commit=False, group_id=None)
    recs = kp_consume(kc, 5)
    kc.close()
    assert [r.key for r in recs] == [f"k{i}".encode() for i in range(5)]


SASL_ONLY = '\n[kafka]\nanonymous_user = ""\n'


@pytest.mark.parametrize("kb", [SASL_ONLY], indirect=True)
def test_sasl_plain_and_scram(kb):
    kb.add_user("kuser", "kpass")
    topic = topic_name("sasl")
    base = {"bootstrap.servers": kb.bootstrap, "broker.address.family": "v4",
            "security.protocol": "SASL_PLAINTEXT", "sasl.username": "kuser", "sasl.password": "kpass"}
    p = Producer({**base, "sasl.mechanisms": "PLAIN"})
    p.produce(topic, value=b"plain")
    assert p.flush(WAIT) == 0
    p = Producer({**base, "sasl.mechanisms": "SCRAM-SHA-256"})
    p.produce(topic, value=b"scram")
    assert p.flush(WAIT) == 0
    kc = KafkaConsumer(topic, bootstrap_servers=kb.bootstrap, security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="kuser",
                       sasl_plain_password="kpass", auto_offset_reset="earliest", group_id=None)
    assert [r.value for r in kp_consume(kc, 2)] == [b"plain", b"scram"]
    kc.close()
    kc = KafkaConsumer(bootstrap_servers=kb.bootstrap, security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="PLAIN", sasl_plain_username="kuser",
                       sasl_plain_password="kpass")
    assert topic in kc.topics()
    kc.close()
    # A wrong password is refused; without SASL, requests are refused (connection closed).
    errors = []
    bad = Producer({**base, "sasl.mechanisms": "PLAIN", "sasl.password": "wrong",
                    "error_cb": lambda e: errors.append(e)})
    bad.produce(topic, value=b"x")
    assert bad.flush(5) == 1
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    s = raw_connect(kb)
    s.sendall(request(3, 1, 9, b"\x00\x00\x00\x00"))
    assert s.recv(100) == b""


def raw_connect(kb):
    host, _, port = kb.bootstrap.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def request(api_key, version, correlation, body=b"", client=b"raw"):
    header = struct.pack(">hhih", api_key, version, correlation, len(client)) + client
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_response(s):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            assert chunk, "connection closed"
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", exact(4))
    return exact(size)


def test_unsupported_versions_are_answered(kb):
    s = raw_connect(kb)
    s.sendall(request(18, 99, 1))
    r = read_response(s)
    corr, err, n = struct.unpack(">ihi", r[:10])
    assert (corr, err) == (1, 35) and n > 10
    apis = {struct.unpack(">h", r[10 + 6 * i:12 + 6 * i])[0] for i in range(n)}
    assert {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18} <= apis
    for key, version in [(0, 99), (1, 0), (999, 0)]:
        s.sendall(request(key, version, 7))
        assert read_response(s) == struct.pack(">ih", 7, 35)
    s.sendall(request(18, 0, 8))
    corr, err = struct.unpack(">ih", read_response(s)[:6])
    assert (corr, err) == (8, 0)
    s.close()


def test_malformed_requests_close_only_their_connection(kb):
    topic = topic_name("mal")
    p = rd_producer(kb)
    p.produce(topic, value=b"before")
    assert p.flush(WAIT) == 0
    bad = [
        request(3, 1, 1, b"\x7f\xff\xff\xff"),               # a topic array of 2^31-1 names
        request(0, 8, 2, b"\xff\xff\x00\x01\x00\x00\x00"),    # a truncated Produce
        struct.pack(">i", 1 << 30),                          # a 1 GiB size prefix
        struct.pack(">i", -4) + b"xxxx",                     # a negative size
        request(18, 3, 3, b"\x05ab"),                        # a compact string past the end
    ]
    for data in bad:
        s = raw_connect(kb)
        s.sendall(data)
        assert s.recv(100) == b""
        s.close()
    p.produce(topic, value=b"after")
    assert p.flush(WAIT) == 0
    c = rd_consumer(kb, topic_name("g"))
    c.subscribe([topic])
    assert [m.value() for m in rd_consume(c, 2)] == [b"before", b"after"]
    c.close()


def _tls_param():
    import trustme
    d = Path(tempfile.mkdtemp(prefix="kafka-pki-"))
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    (d / "server.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    extra = f'\n[tls]\ncertificate = "{d}/server.crt"\nkey = "{d}/server.key"\n'
    return ('kafkas = "127.0.0.1:0"\n', extra + f"# ca {d}/ca.pem\n")


@pytest.mark.parametrize("kb", [_tls_param()], indirect=True)
def test_kafka_over_tls(kb):
    rx = re.compile(r"listening protocol=kafkas addr=(\S+)")
    deadline = time.monotonic() + 10
    while not rx.search(kb.log_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    addr = rx.search(kb.log_text()).group(1)
    ca = re.search(r"# ca (\S+)", kb.config_text).group(1)
    conf = {"bootstrap.servers": addr, "broker.address.family": "v4", "security.protocol": "SSL",
            "ssl.ca.location": ca}
    topic = topic_name("tls")
    p = Producer(conf)
    p.produce(topic, value=b"secret", key=b"k")
    assert p.flush(WAIT) == 0
    c = Consumer({**conf, "group.id": topic_name("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = rd_consume(c, 1)
    c.close()
    assert [(m.key(), m.value()) for m in got] == [(b"k", b"secret")]


def test_kafka_connections_are_listed_by_the_management_api(kb):
    import requests
    http = re.search(r"listening protocol=http addr=(\S+)", kb.log_text()).group(1)
    p = rd_producer(kb, **{"client.id": "listed-producer"})
    p.produce(topic_name("mgmt"), value=b"x")
    assert p.flush(WAIT) == 0
    conns = requests.get(f"http://{http}/api/connections", auth=("guest", "guest"), timeout=10).json()
    kafka = [c for c in conns if c["tributary_protocol"] == "kafka"]
    assert kafka and all(c["user"] == "guest" and c["vhost"] == "/" for c in kafka)
    assert any(c["client_properties"].get("connection_name") == "listed-producer"
               or "listed-producer" in json.dumps(c) for c in kafka)
    assert any(c["recv_oct"] > 0 for c in kafka)
