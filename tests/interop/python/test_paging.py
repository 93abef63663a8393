"""Queues larger than the memory budget page bodies to disk (pika).

The broker runs with a small `[store] memory_budget`; a queue is filled with
far more bytes than that, the broker's RSS must stay well below what holding
them in memory would take, and a consumer must then drain every message intact
and in order.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pika
import pytest

from conftest import TARGET, TributaryBroker

BUDGET = 4 * 1024 * 1024
BODY = 2048
COUNT = 60_000  # about 120 MiB of bodies: 30x the budget


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


def body(i: int) -> bytes:
    seed = hashlib.sha256(b"%d" % i).digest()
    return (b"%08d" % i + seed * (BODY // len(seed) + 1))[:BODY]


@pytest.fixture
def paging_broker():
    if TARGET[0] != "tributary":
        pytest.skip("needs Tributary's memory budget")
    root = Path(tempfile.mkdtemp(prefix="tributary-paging-"))
    b = TributaryBroker(root)
    b.extra_config = f"\n[store]\nmemory_budget = {BUDGET}\n"
    try:
        b.start()
        yield b
    finally:
        problems = b.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


@pytest.mark.timeout(240)
@pytest.mark.parametrize("durable,mode", [(True, 2), (False, 1)], ids=["persistent-durable", "transient"])
def test_queue_far_beyond_budget_stays_bounded_and_drains_intact(paging_broker, durable, mode):
    b = paging_broker
    pid = b.proc.pid
    conn = pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port))
    ch = conn.channel()
    q = "paged"
    ch.queue_declare(q, durable=durable)
    before = rss_kib(pid)
    props = pika.BasicProperties(delivery_mode=mode)
    for i in range(COUNT):
        ch.basic_publish("", q, body(i), props)
    # A synchronous round trip: every publish before it has been routed.
    assert ch.queue_declare(q, passive=True).method.message_count == COUNT
    grown_mib = (rss_kib(pid) - before) / 1024
    held_mib = COUNT * BODY / 2**20
    # Holding the bodies would take at least held_mib; paging keeps the growth to
    # the budget plus per-message bookkeeping (a few dozen bytes per message).
    assert grown_mib < held_mib / 2, f"RSS grew {grown_mib:.0f} MiB for {held_mib:.0f} MiB of bodies"

    ch.basic_qos(prefetch_count=500)
    seen = []

    def on_message(chan, method, _props, payload):
        seen.append(payload)
        if len(seen) % 100 == 0 or len(seen) == COUNT:
            chan.basic_ack(method.delivery_tag, multiple=True)
        if len(seen) == COUNT:
            chan.stop_consuming()

    ch.basic_consume(q, on_message)
    conn.call_later(200, ch.stop_consuming)
    ch.start_consuming()
    assert len(seen) == COUNT
    for i, payload in enumerate(seen):
        assert payload == body(i), f"message {i} differs"
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    conn.close()
