"""RabbitMQ queue features (issue 6) through pika and aio-pika.

TTL, queue expiry, dead-lettering and x-death, length limits and overflow modes,
priorities, single active consumer, consumer priorities, delivery limits, alternate
exchanges, exchange-to-exchange cycles, transactions and memory flow control, each as
RabbitMQ documents it (https://www.rabbitmq.com/docs/{ttl,dlx,maxlength,priority,
consumers,quorum-queues,ae,e2e,semantics,memory,connection-blocked}).

Validated against RabbitMQ 3.10.8 (TRIBUTARY_TEST_TARGET=rabbitmq:...). Notes where
3.10 differs from newer RabbitMQ are next to the assertions concerned.

Time-dependent features are waited for by bounded polling of broker state (message
counts, whether a queue still routes) or by a "broker clock" (a throwaway queue whose
own TTL has to fire first): see queue_features_support.py. Short pumps appear only to
show that something does NOT happen, next to an event-free check.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import aio_pika
import aio_pika.exceptions
import pika
import pika.exceptions
import pytest

from conftest import TARGET, TributaryBroker
from helpers import channel_error, confirm_channel, get_one, pump, queue_exists, wait_until
from queue_features_support import (
    ON_RABBITMQ,
    WAIT,
    assert_death,
    assert_first_death,
    broker_expiry_clock,
    broker_ttl_clock,
    message_count,
    publish,
    routes_to,
    wait_count,
    wait_queue_gone,
    x_death,
)


def declare(ch, name, **arguments):
    """A named, non-exclusive queue with x-arguments given as keywords (x_message_ttl=...)."""
    args = {k.replace("_", "-"): v for k, v in arguments.items()}
    ch.queue_declare(name, arguments=args or None)
    return name


def bodies_in(ch, queue, n):
    return [get_one(ch, queue, auto_ack=True)[2] for _ in range(n)]


def assert_empty(ch, queue):
    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert method is None, f"expected {queue!r} to deliver nothing, got {body!r}"


# ----------------------------------------------------------------------------- TTL


def test_queue_ttl_expires_messages_with_no_consumer(conn, uniq):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"), x_message_ttl=200)
    for i in range(3):
        ch.basic_publish("", q, b"m%d" % i)
    assert message_count(conn, q) == 3, "messages must be there before their TTL"
    # Expired messages at the head of a queue nobody consumes are removed by the broker.
    wait_count(conn, q, 0)
    assert_empty(ch, q)
    # A consumer arriving later gets nothing either.
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    pump(conn, 0.3)
    assert got == []
    # Fresh messages are still delivered normally.
    ch.basic_publish("", q, b"fresh")
    wait_until(conn, lambda: got == [b"fresh"], what="delivery of a fresh message")


def test_queue_ttl_zero_delivers_only_to_a_waiting_consumer(conn, uniq):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"), x_message_ttl=0)
    dead = declare(ch, uniq("dead"))
    q2 = declare(ch, uniq("q2"), x_message_ttl=0, x_dead_letter_exchange="", x_dead_letter_routing_key=dead)
    # No consumer: expired on arrival (dead-lettered as "expired" when a DLX is set).
    ch.basic_publish("", q, b"nobody")
    ch.basic_publish("", q2, b"nobody-dlx")
    wait_count(conn, q, 0)
    wait_count(conn, q2, 0)
    m, p, b = get_one(ch, dead, auto_ack=True)
    assert b == b"nobody-dlx" and x_death(p)[0]["reason"] == "expired"
    # With a consumer ready to take it, the message is delivered.
    cch = conn.channel()
    got = []
    cch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"to-consumer")
    wait_until(conn, lambda: got == [b"to-consumer"], what="TTL 0 message to a waiting consumer")


def test_per_message_expiration(conn, uniq):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"))
    publish(ch, "", q, b"short", expiration="150")
    wait_count(conn, q, 0)
    # Expiration "0": gone at once unless a consumer takes it immediately.
    publish(ch, "", q, b"zero", expiration="0")
    wait_count(conn, q, 0)
    # A message without expiration stays.
    publish(ch, "", q, b"stays")
    broker_ttl_clock(conn, 300)
    assert message_count(conn, q) == 1
    assert get_one(ch, q, auto_ack=True)[2] == b"stays"


def test_expired_message_behind_a_live_one_is_never_delivered(conn, uniq):
    """Per-message TTL: an expired message not at the head may still be counted
    (RabbitMQ only drops it when it reaches the head) but is never delivered."""
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"))
    publish(ch, "", q, b"first")
    publish(ch, "", q, b"expires", expiration="100")
    publish(ch, "", q, b"last")
    broker_ttl_clock(conn, 100)  # started after "expires" was enqueued
    assert bodies_in(ch, q, 2) == [b"first", b"last"]
    assert_empty(ch, q)
    assert message_count(conn, q) == 0


@pytest.mark.parametrize("queue_ttl,msg_ttl", [(60_000, "150"), (150, "60000"), (150, None)],
                         ids=["message-lower", "queue-lower", "queue-only"])
def test_lower_of_queue_and_message_ttl_wins(conn, uniq, queue_ttl, msg_ttl):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"), x_message_ttl=queue_ttl)
    control = declare(ch, uniq("control"), x_message_ttl=60_000)
    props = {"expiration": msg_ttl} if msg_ttl else {}
    publish(ch, "", q, b"dies", **props)
    publish(ch, "", control, b"lives", expiration="60000")
    wait_count(conn, q, 0)
    assert_empty(ch, q)
    # Both TTLs long: the message is still there after the other one expired.
    assert message_count(conn, control) == 1
    assert get_one(ch, control, auto_ack=True)[2] == b"lives"


def test_x_expires_deletes_an_unused_queue(conn, uniq):
    ch = conn.channel()
    q = declare(ch, uniq("q"), x_expires=300)
    cch = confirm_channel(conn)
    assert routes_to(cch, q)
    wait_queue_gone(conn, cch, q)
    with channel_error(404):
        conn.channel().queue_declare(q, passive=True)


def test_x_expires_spares_a_queue_with_a_consumer(conn, uniq):
    ch = conn.channel()
    q = declare(ch, uniq("q"), x_expires=200)
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    cch = confirm_channel(conn)
    broker_expiry_clock(conn, cch, 600)  # three x-expires periods have passed
    assert queue_exists(conn, q)
    cch.basic_publish("", q, b"still-here")
    wait_until(conn, lambda: b"still-here" in got, what="delivery to the kept queue")
    # Without its consumer the queue is unused again and goes.
    ch.basic_cancel(tag)
    wait_queue_gone(conn, cch, q)
    with channel_error(404):
        conn.channel().queue_declare(q, passive=True)


# --------------------------------------------------------------------- dead-lettering


def _dlx_setup(ch, uniq, **src_args):
    """src queue bound to direct exchange `ex` with key "k1"; dead-letters to direct `dlx`."""
    ex = uniq("ex")
    dlx = uniq("dlx")
    ch.exchange_declare(ex, "direct")
    ch.exchange_declare(dlx, "direct")
    src = declare(ch, uniq("src"), x_dead_letter_exchange=dlx, **src_args)
    ch.queue_bind(src, ex, "k1")
    return ex, dlx, src


def test_dead_letter_on_reject_and_nack_without_requeue(conn, uniq):
    ch = confirm_channel(conn)
    ex, dlx, src = _dlx_setup(ch, uniq)
    dead = declare(ch, uniq("dead"))
    ch.queue_bind(dead, dlx, "k1")  # no x-dead-letter-routing-key: original key is used
    t0 = time.time()
    for i in range(5):
        publish(ch, ex, "k1", b"m%d" % i, content_type="text/plain", message_id="id%d" % i,
                headers={"app": "yes"}, delivery_mode=2)
    tags = [get_one(ch, src)[0].delivery_tag for _ in range(5)]
    ch.basic_reject(tags[0], requeue=False)
    ch.basic_nack(tags[1], requeue=False)
    ch.basic_reject(tags[4], requeue=True)  # requeued: not dead-lettered
    ch.basic_nack(tags[3], multiple=True, requeue=False)  # m2 and m3
    wait_count(conn, dead, 4)
    assert message_count(conn, src) == 1
    for i in range(4):
        m, p, b = get_one(ch, dead, auto_ack=True)
        assert b == b"m%d" % i
        assert m.exchange == dlx and m.routing_key == "k1"
        # Properties and headers are kept.
        assert p.content_type == "text/plain" and p.message_id == "id%d" % i and p.delivery_mode == 2
        assert p.headers["app"] == "yes"
        [d] = x_death(p)
        assert_death(d, reason="rejected", queue=src, exchange=ex, routing_keys=["k1"], since=t0)
        assert_first_death(p, reason="rejected", queue=src, exchange=ex)
    m, p, b = get_one(ch, src, auto_ack=True)
    assert b == b"m4" and m.redelivered and "x-death" not in (p.headers or {})


def test_dead_letter_routing_key_replaces_the_key_but_not_routing_keys(conn, uniq):
    ch = confirm_channel(conn)
    ex, dlx, src = _dlx_setup(ch, uniq, x_dead_letter_routing_key="dl")
    dead = declare(ch, uniq("dead"))
    wrong = declare(ch, uniq("wrong"))
    ch.queue_bind(dead, dlx, "dl")
    ch.queue_bind(wrong, dlx, "k1")
    # CC keys are part of x-death routing-keys (BCC ones are not).
    publish(ch, ex, "k1", b"cc", headers={"CC": ["k-cc"]})
    m, _, _ = get_one(ch, src)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_one(ch, dead, auto_ack=True)
    assert b == b"cc" and m.routing_key == "dl"
    [d] = x_death(p)
    assert d["routing-keys"] == ["k1", "k-cc"], d
    assert message_count(conn, wrong) == 0


def test_dead_letter_exchange_missing_drops_the_message(conn, uniq):
    ch = confirm_channel(conn)
    src = declare(ch, uniq("src"), x_dead_letter_exchange=uniq("nonexistent"))
    ch.basic_publish("", src, b"x")
    m, _, _ = get_one(ch, src)
    ch.basic_reject(m.delivery_tag, requeue=False)
    wait_count(conn, src, 0)
    assert ch.is_open
    assert_empty(ch, src)


def test_dead_letter_expired_queue_ttl_and_message_ttl(conn, uniq):
    ch = confirm_channel(conn)
    dead = declare(ch, uniq("dead"))
    src = declare(ch, uniq("src"), x_message_ttl=150, x_dead_letter_exchange="", x_dead_letter_routing_key=dead)
    t0 = time.time()
    ch.basic_publish("", src, b"queue-ttl")  # nobody consumes src: expiry happens at its head
    m, p, b = get_one(ch, dead, auto_ack=True)
    assert b == b"queue-ttl" and m.routing_key == dead
    [d] = x_death(p)
    assert_death(d, reason="expired", queue=src, exchange="", routing_keys=[src], since=t0)
    assert "original-expiration" not in d
    assert_first_death(p, reason="expired", queue=src, exchange="")

    src2 = declare(ch, uniq("src2"), x_dead_letter_exchange="", x_dead_letter_routing_key=dead)
    publish(ch, "", src2, b"msg-ttl", expiration="100")
    m, p, b = get_one(ch, dead, auto_ack=True)
    assert b == b"msg-ttl"
    [d] = x_death(p)
    assert_death(d, reason="expired", queue=src2, exchange="", routing_keys=[src2], since=t0)
    # The per-message TTL moves into x-death so the copy does not expire again.
    assert d["original-expiration"] == "100", d
    assert p.expiration is None
    assert message_count(conn, src) == 0 and message_count(conn, src2) == 0


def test_dead_letter_maxlen_drop_head(conn, uniq):
    ch = confirm_channel(conn)
    dead = declare(ch, uniq("dead"))
    src = declare(ch, uniq("src"), x_max_length=2, x_dead_letter_exchange="", x_dead_letter_routing_key=dead)
    t0 = time.time()
    for i in range(5):
        ch.basic_publish("", src, b"m%d" % i)
    assert message_count(conn, src) == 2
    wait_count(conn, dead, 3)
    for i in range(3):
        _, p, b = get_one(ch, dead, auto_ack=True)
        assert b == b"m%d" % i, "the oldest are dropped, in order"
        [d] = x_death(p)
        assert_death(d, reason="maxlen", queue=src, exchange="", routing_keys=[src], since=t0)
    assert bodies_in(ch, src, 2) == [b"m3", b"m4"]


def test_x_death_count_increments_in_a_retry_chain(conn, uniq):
    """work --reject--> retry (TTL) --expire--> work: the same message dies in the same
    queue for the same reason again, so the existing x-death entry's count goes up and
    that entry moves to the front. A rejection in the cycle means it is not dropped."""
    ch = confirm_channel(conn)
    work, retry = uniq("work"), uniq("retry")
    declare(ch, work, x_dead_letter_exchange="", x_dead_letter_routing_key=retry)
    declare(ch, retry, x_message_ttl=50, x_dead_letter_exchange="", x_dead_letter_routing_key=work)
    publish(ch, "", work, b"job", headers={"attempt": "original"})
    seen = []
    for attempt in range(3):
        m, p, b = get_one(ch, work)
        assert b == b"job"
        seen.append(p.headers)
        if attempt < 2:
            ch.basic_reject(m.delivery_tag, requeue=False)
        else:
            ch.basic_ack(m.delivery_tag)
    assert "x-death" not in seen[0]
    for n in (1, 2):
        deaths = seen[n]["x-death"]
        assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
            (retry, "expired", n), (work, "rejected", n)], deaths
        assert deaths[0]["routing-keys"] == [retry] and deaths[1]["routing-keys"] == [work]
        assert seen[n]["x-first-death-queue"] == work
        assert seen[n]["x-first-death-reason"] == "rejected"
        assert seen[n]["attempt"] == "original"
    assert message_count(conn, work) == 0 and message_count(conn, retry) == 0


def test_dead_letter_cycle_without_rejection_is_dropped(conn, uniq):
    """q expires into a fanout DLX that routes back to q (and to an observer): the
    copy for q would die in q again with no rejection in between, so it is dropped;
    the observer gets exactly one copy and nothing loops."""
    ch = confirm_channel(conn)
    fan = uniq("fan")
    ch.exchange_declare(fan, "fanout")
    q = declare(ch, uniq("q"), x_message_ttl=100, x_dead_letter_exchange=fan)
    observer = declare(ch, uniq("observer"))
    ch.queue_bind(q, fan)
    ch.queue_bind(observer, fan)
    ch.basic_publish("", q, b"loop?")
    wait_count(conn, observer, 1)
    wait_count(conn, q, 0)
    broker_ttl_clock(conn, 500)  # five TTL periods: a loop would have shown by now
    assert message_count(conn, q) == 0
    assert message_count(conn, observer) == 1
    _, p, b = get_one(ch, observer, auto_ack=True)
    [d] = x_death(p)
    assert (d["queue"], d["reason"], d["count"]) == (q, "expired", 1)

    # The same with the default exchange and x-dead-letter-routing-key = itself.
    self_q = uniq("self")
    declare(ch, self_q, x_message_ttl=100, x_dead_letter_exchange="", x_dead_letter_routing_key=self_q)
    ch.basic_publish("", self_q, b"self-loop?")
    wait_count(conn, self_q, 0)
    broker_ttl_clock(conn, 500)
    assert message_count(conn, self_q) == 0
    assert_empty(ch, self_q)


@pytest.mark.asyncio
async def test_aio_consumer_reject_dead_letters_with_x_death(broker, uniq):
    conn = await asyncio.wait_for(aio_pika.connect(broker.url), WAIT)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        dead = await ch.declare_queue(uniq("dead"))
        src = await ch.declare_queue(uniq("src"), arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead.name})
        for i in range(3):
            await ch.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=src.name)
        handled = asyncio.Event()
        seen = []

        async def on_message(msg):
            seen.append(msg.body)
            if msg.body == b"1":
                await msg.ack()
            else:
                await msg.reject(requeue=False)
            if len(seen) == 3:
                handled.set()

        await src.consume(on_message)
        await asyncio.wait_for(handled.wait(), WAIT)
        got = []
        for _ in range(2):
            msg = await dead.get(timeout=WAIT, fail=False, no_ack=True)
            deadline = asyncio.get_running_loop().time() + WAIT
            while msg is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
                msg = await dead.get(timeout=WAIT, fail=False, no_ack=True)
            assert msg is not None, "dead-lettered message missing"
            got.append(msg)
        assert [m.body for m in got] == [b"0", b"2"]
        for m in got:
            [d] = m.headers["x-death"]
            assert (d["reason"], d["queue"], d["exchange"], list(d["routing-keys"]), d["count"]) == (
                "rejected", src.name, "", [src.name], 1)
            assert m.headers["x-first-death-reason"] == "rejected"


# ---------------------------------------------------------------------- length limits


@pytest.mark.parametrize("overflow", [None, "drop-head"], ids=["default", "explicit"])
def test_max_length_drops_the_oldest(conn, uniq, overflow):
    ch = confirm_channel(conn)
    args = {"x_max_length": 3}
    if overflow:
        args["x_overflow"] = overflow
    q = declare(ch, uniq("q"), **args)
    for i in range(7):
        ch.basic_publish("", q, b"m%d" % i)  # all confirmed (ack), none refused
    assert message_count(conn, q) == 3
    assert bodies_in(ch, q, 3) == [b"m4", b"m5", b"m6"]
    assert_empty(ch, q)


def test_max_length_bytes_counts_bodies(conn, uniq):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"), x_max_length_bytes=10)
    for b in (b"aaaa", b"bbbb", b"cccc"):
        ch.basic_publish("", q, b, pika.BasicProperties(headers={"big": "x" * 100}))  # headers don't count
    assert message_count(conn, q) == 2
    assert bodies_in(ch, q, 2) == [b"bbbb", b"cccc"]
    # Room for exactly 10 bytes.
    for b in (b"12345", b"67890"):
        ch.basic_publish("", q, b)
    assert message_count(conn, q) == 2
    # A single message larger than the limit pushes out everything, itself included.
    ch.basic_publish("", q, b"x" * 11)
    assert message_count(conn, q) == 0


def test_reject_publish_nacks_the_publisher_and_does_not_dead_letter(conn, uniq):
    ch = confirm_channel(conn)
    dead = declare(ch, uniq("dead"))
    q = declare(ch, uniq("q"), x_max_length=2, x_overflow="reject-publish",
                x_dead_letter_exchange="", x_dead_letter_routing_key=dead)
    ch.basic_publish("", q, b"m0")
    ch.basic_publish("", q, b"m1")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"m2")
    assert ch.is_open
    assert message_count(conn, q) == 2
    assert message_count(conn, dead) == 0, "reject-publish does not dead-letter"
    # Room again after one is consumed; the oldest are kept (unlike drop-head).
    assert get_one(ch, q, auto_ack=True)[2] == b"m0"
    ch.basic_publish("", q, b"m3")
    assert bodies_in(ch, q, 2) == [b"m1", b"m3"]
    # Without confirms the refused message is simply dropped.
    plain = conn.channel()
    for b in (b"p0", b"p1", b"p2"):
        plain.basic_publish("", q, b)
    wait_count(conn, q, 2)
    assert bodies_in(ch, q, 2) == [b"p0", b"p1"]


def test_reject_publish_dlx_nacks_and_dead_letters(conn, uniq):
    ch = confirm_channel(conn)
    dead = declare(ch, uniq("dead"))
    q = declare(ch, uniq("q"), x_max_length=1, x_overflow="reject-publish-dlx",
                x_dead_letter_exchange="", x_dead_letter_routing_key=dead)
    t0 = time.time()
    ch.basic_publish("", q, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"refused")
    assert message_count(conn, q) == 1
    _, p, b = get_one(ch, dead, auto_ack=True)
    assert b == b"refused"
    [d] = x_death(p)
    assert_death(d, reason="maxlen", queue=q, exchange="", routing_keys=[q], since=t0)
    assert get_one(ch, q, auto_ack=True)[2] == b"kept"


def test_reject_publish_to_one_of_two_queues_nacks_but_delivers_to_the_other(conn, uniq):
    ch = confirm_channel(conn)
    fan = uniq("fan")
    ch.exchange_declare(fan, "fanout")
    full = declare(ch, uniq("full"), x_max_length=1, x_overflow="reject-publish")
    other = declare(ch, uniq("other"))
    ch.queue_bind(full, fan)
    ch.queue_bind(other, fan)
    ch.basic_publish(fan, "", b"a")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish(fan, "", b"b")
    assert message_count(conn, full) == 1
    assert bodies_in(ch, other, 2) == [b"a", b"b"]


@pytest.mark.asyncio
async def test_aio_reject_publish_raises_delivery_error(broker, uniq):
    conn = await asyncio.wait_for(aio_pika.connect(broker.url), WAIT)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(uniq("q"), arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        await ch.default_exchange.publish(aio_pika.Message(b"one"), routing_key=q.name)
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await asyncio.wait_for(ch.default_exchange.publish(aio_pika.Message(b"two"), routing_key=q.name), WAIT)
        declared = await ch.declare_queue(q.name, passive=True)
        assert declared.declaration_result.message_count == 1


# ------------------------------------------------------------------------- priorities


def test_priority_order_and_fifo_within_a_priority(conn, uniq):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"), x_max_priority=10)
    sent = [(b"a", None), (b"b", 5), (b"c", 1), (b"d", 5), (b"e", 10), (b"f", 0), (b"g", 1), (b"h", 10)]
    for body, prio in sent:
        publish(ch, "", q, body, **({"priority": prio} if prio is not None else {}))
    # No priority property = priority 0.
    assert bodies_in(ch, q, len(sent)) == [b"e", b"h", b"b", b"d", b"c", b"g", b"a", b"f"]
    # A queue without x-max-priority ignores the property: plain FIFO.
    plain = declare(ch, uniq("plain"))
    for body, prio in sent:
        publish(ch, "", plain, body, **({"priority": prio} if prio is not None else {}))
    assert bodies_in(ch, plain, len(sent)) == [b for b, _ in sent]


def test_priority_above_max_counts_as_max(conn, uniq):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"), x_max_priority=3)
    for body, prio in [(b"p2", 2), (b"p9", 9), (b"p3", 3), (b"p200", 200), (b"p1", 1)]:
        publish(ch, "", q, body, priority=prio)
    assert bodies_in(ch, q, 5) == [b"p9", b"p3", b"p200", b"p2", b"p1"]


def test_priority_consumer_with_prefetch_one(conn, uniq):
    ch = confirm_channel(conn)
    q = declare(ch, uniq("q"), x_max_priority=5)
    for i in range(6):
        publish(ch, "", q, b"%d" % i, priority=i % 3)
    got = []

    def on_message(c, m, p, b):
        got.append((b, p.priority))
        c.basic_ack(m.delivery_tag)

    c = conn.channel()
    c.basic_qos(prefetch_count=1)
    c.basic_consume(q, on_message)
    wait_until(conn, lambda: len(got) == 6, what="6 deliveries")
    assert [b for b, _ in got] == [b"2", b"5", b"1", b"4", b"0", b"3"]
    assert [p for _, p in got] == [2, 2, 1, 1, 0, 0]


@pytest.mark.parametrize("value", [256, -1])
def test_max_priority_out_of_range_is_refused(conn, uniq, value):
    ch = conn.channel()
    with channel_error(406):
        ch.queue_declare(uniq("q"), arguments={"x-max-priority": value})


@pytest.mark.asyncio
async def test_aio_priority_order(broker, uniq):
    conn = await asyncio.wait_for(aio_pika.connect(broker.url), WAIT)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(uniq("q"), arguments={"x-max-priority": 255})
        for body, prio in [(b"low", 1), (b"top", 255), (b"mid", 128), (b"mid2", 128), (b"none", 0)]:
            await ch.default_exchange.publish(aio_pika.Message(body, priority=prio), routing_key=q.name)
        got = []
        for _ in range(5):
            msg = await q.get(timeout=WAIT, no_ack=True)
            got.append(msg.body)
        assert got == [b"top", b"mid", b"mid2", b"low", b"none"]


# -------------------------------------------------------------------------- consumers


def test_single_active_consumer_takeover_without_loss_or_duplicates(broker, conn, uniq):
    pub = confirm_channel(conn)
    q = uniq("sac")
    pub.queue_declare(q, arguments={"x-single-active-consumer": True})
    conn_a, conn_b = broker.connect(), broker.connect()
    try:
        ch_a, ch_b = conn_a.channel(), conn_b.channel()
        a, b = [], []
        tag_a = ch_a.basic_consume(q, lambda c, m, p, body: a.append((m.delivery_tag, body, m.redelivered)))
        ch_b.basic_consume(q, lambda c, m, p, body: b.append((m.delivery_tag, body, m.redelivered)))
        for i in range(10):
            pub.basic_publish("", q, b"%d" % i)
        wait_until(conn_a, lambda: len(a) == 10, what="10 deliveries to the active consumer")
        pump(conn_b, 0.3)
        assert b == [], "the second consumer must get nothing while the first is active"
        assert message_count(conn, q) == 0  # all ten are with A (unacked)

        for tag, _, _ in a[:5]:
            ch_a.basic_ack(tag)
        ch_a.basic_cancel(tag_a)  # A goes; its 5 unacked stay with its channel for now
        for i in range(10, 15):
            pub.basic_publish("", q, b"%d" % i)
        wait_until(conn_b, lambda: len(b) == 5, what="the second consumer to take over")
        assert [x[1] for x in b] == [b"%d" % i for i in range(10, 15)]
        ch_a.close()  # 5..9 go back to the queue, to B, flagged redelivered
        wait_until(conn_b, lambda: len(b) == 10, what="requeued messages to the new active consumer")
        for tag, _, _ in b:
            ch_b.basic_ack(tag)
        redelivered = sorted(int(x[1]) for x in b if x[2])
        assert redelivered == [5, 6, 7, 8, 9]
        acked = [int(x[1]) for x in a[:5]] + [int(x[1]) for x in b]
        assert sorted(acked) == list(range(15)), "every message exactly once"
        pump(conn_a, 0.1)
        assert len(a) == 10
        assert message_count(conn, q) == 0
    finally:
        for c in (conn_a, conn_b):
            if c.is_open:
                c.close()


def test_single_active_consumer_takes_over_when_the_connection_goes(broker, conn, uniq):
    pub = confirm_channel(conn)
    q = uniq("sac")
    pub.queue_declare(q, arguments={"x-single-active-consumer": True})
    conn_a, conn_b = broker.connect(), broker.connect()
    try:
        a, b = [], []
        ch_a = conn_a.channel()
        ch_a.basic_qos(prefetch_count=2)
        ch_a.basic_consume(q, lambda c, m, p, body: a.append(body))
        ch_b = conn_b.channel()
        ch_b.basic_consume(q, lambda c, m, p, body: (b.append(body), c.basic_ack(m.delivery_tag)))
        for i in range(6):
            pub.basic_publish("", q, b"%d" % i)
        wait_until(conn_a, lambda: len(a) == 2, what="A's prefetch to fill")
        pump(conn_b, 0.3)
        # A has no credit but is still the active consumer: B gets nothing.
        assert b == [] and message_count(conn, q) == 4
        conn_a.close()
        wait_until(conn_b, lambda: len(b) == 6, what="B to get everything")
        assert sorted(b) == [b"%d" % i for i in range(6)]
    finally:
        for c in (conn_a, conn_b):
            if c.is_open:
                c.close()


def test_consumer_priorities(conn, uniq):
    pub = confirm_channel(conn)
    q = declare(pub, uniq("q"))
    low_ch, high_ch = conn.channel(), conn.channel()
    low_ch.basic_qos(prefetch_count=1)
    high_ch.basic_qos(prefetch_count=1)
    low, high = [], []
    hold = {"high": False}

    def on_low(c, m, p, b):
        low.append(b)
        c.basic_ack(m.delivery_tag)

    def on_high(c, m, p, b):
        high.append((m.delivery_tag, b))
        if not hold["high"]:
            c.basic_ack(m.delivery_tag)

    # Low registers first, so plain round-robin would favour it.
    low_ch.basic_consume(q, on_low, arguments={"x-priority": 1})
    high_ch.basic_consume(q, on_high, arguments={"x-priority": 10})
    for i in range(8):
        pub.basic_publish("", q, b"%d" % i)
        wait_until(conn, lambda: len(low) + len(high) == i + 1, what=f"delivery {i}")
    assert [b for _, b in high] == [b"%d" % i for i in range(8)], f"low got {low}"
    assert low == []
    # The high-priority consumer without credit: the lower one gets the message.
    hold["high"] = True
    pub.basic_publish("", q, b"held")
    wait_until(conn, lambda: len(high) == 9, what="the held message")
    pub.basic_publish("", q, b"overflow")
    wait_until(conn, lambda: low == [b"overflow"], what="delivery to the low-priority consumer")
    high_ch.basic_ack(high[-1][0])


def _delivery_limit_queue(ch, name, limit, dead=None):
    args = {"x-delivery-limit": limit}
    if dead:
        args.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    if ON_RABBITMQ:
        # RabbitMQ only honours x-delivery-limit on quorum queues; Tributary on classic ones too.
        args["x-queue-type"] = "quorum"
    ch.queue_declare(name, durable=ON_RABBITMQ, arguments=args)
    return name


def test_delivery_limit_dead_letters_a_poison_message(conn, uniq):
    ch = confirm_channel(conn)
    dead = declare(ch, uniq("dead"))
    q = _delivery_limit_queue(ch, uniq("q"), 2, dead)
    t0 = time.time()
    ch.basic_publish("", q, b"poison")
    counts = []
    for attempt in range(3):
        m, p, b = get_one(ch, q)
        assert b == b"poison" and m.redelivered == (attempt > 0)
        counts.append((p.headers or {}).get("x-delivery-count", 0))
        ch.basic_nack(m.delivery_tag, requeue=True)
    # RabbitMQ 3.10 sends x-delivery-count 0 on the first delivery; newer ones omit it.
    assert counts == [0, 1, 2]
    _, p, b = get_one(ch, dead, auto_ack=True)
    assert b == b"poison"
    [d] = x_death(p)
    assert_death(d, reason="delivery_limit", queue=q, exchange="", routing_keys=[q], since=t0)
    wait_count(conn, q, 0)
    assert_empty(ch, q)


def test_delivery_limit_without_dlx_drops_and_ack_within_limit_is_fine(conn, uniq):
    ch = confirm_channel(conn)
    q = _delivery_limit_queue(ch, uniq("q"), 1)
    ch.basic_publish("", q, b"poison")
    ch.basic_publish("", q, b"good")
    for _ in range(2):
        m, p, b = get_one(ch, q)
        assert b == b"poison"
        ch.basic_nack(m.delivery_tag, requeue=True)
    m, p, b = get_one(ch, q)
    assert b == b"good"
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, p, b = get_one(ch, q)
    assert b == b"good" and p.headers["x-delivery-count"] == 1
    ch.basic_ack(m.delivery_tag)
    wait_count(conn, q, 0)
    assert_empty(ch, q)


# ---------------------------------------------------------------------------- routing


def test_alternate_exchange_takes_unroutable_messages(conn, uniq):
    ch = confirm_channel(conn)
    ae, x = uniq("ae"), uniq("x")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    caught, bound = declare(ch, uniq("caught")), declare(ch, uniq("bound"))
    ch.queue_bind(caught, ae)
    ch.queue_bind(bound, x, "known")
    ch.basic_publish(x, "known", b"routed", mandatory=True)
    ch.basic_publish(x, "unknown", b"stray", mandatory=True)  # not returned: the AE took it
    assert bodies_in(ch, bound, 1) == [b"routed"]
    m, _, b = get_one(ch, caught, auto_ack=True)
    assert b == b"stray" and m.exchange == x and m.routing_key == "unknown"
    assert_empty(ch, caught)


def test_alternate_exchange_chain_and_dead_ends(conn, uniq):
    ch = confirm_channel(conn)
    ae2, ae1, x = uniq("ae2"), uniq("ae1"), uniq("x")
    ch.exchange_declare(ae2, "fanout")
    ch.exchange_declare(ae1, "direct", arguments={"alternate-exchange": ae2})
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae1})
    last = declare(ch, uniq("last"))
    ch.queue_bind(last, ae2)
    ch.basic_publish(x, "nowhere", b"via-two-aes", mandatory=True)
    assert get_one(ch, last, auto_ack=True)[2] == b"via-two-aes"
    # An AE that routes nowhere, or does not exist: the message is unroutable (returned).
    empty_ae, y, z = uniq("empty-ae"), uniq("y"), uniq("z")
    ch.exchange_declare(empty_ae, "fanout")
    ch.exchange_declare(y, "direct", arguments={"alternate-exchange": empty_ae})
    ch.exchange_declare(z, "direct", arguments={"alternate-exchange": uniq("missing")})
    for ex in (y, z):
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish(ex, "nowhere", b"lost", mandatory=True)
    assert ch.is_open


def test_exchange_to_exchange_cycle_delivers_once(conn, uniq):
    ch = confirm_channel(conn)
    x1, x2 = uniq("x1"), uniq("x2")
    ch.exchange_declare(x1, "fanout")
    ch.exchange_declare(x2, "fanout")
    ch.exchange_bind(destination=x2, source=x1)
    ch.exchange_bind(destination=x1, source=x2)  # a cycle
    both = declare(ch, uniq("both"))
    only2 = declare(ch, uniq("only2"))
    ch.queue_bind(both, x1)
    ch.queue_bind(both, x2)
    ch.queue_bind(only2, x2)
    ch.basic_publish(x1, "", b"from-x1", mandatory=True)
    ch.basic_publish(x2, "", b"from-x2", mandatory=True)
    assert message_count(conn, both) == 2
    assert message_count(conn, only2) == 2
    assert bodies_in(ch, both, 2) == [b"from-x1", b"from-x2"]
    assert bodies_in(ch, only2, 2) == [b"from-x1", b"from-x2"]
    ch.exchange_unbind(destination=x2, source=x1)
    ch.basic_publish(x1, "", b"after-unbind", mandatory=True)
    assert message_count(conn, both) == 1
    assert message_count(conn, only2) == 0


# ------------------------------------------------------------------------ transactions


def test_tx_rollback_publish_is_never_delivered_commit_is(conn, uniq):
    setup = conn.channel()
    q = declare(setup, uniq("q"))
    got = []
    setup.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"rolled-back")
    pump(conn, 0.2)
    assert got == [] and message_count(conn, q) == 0, "nothing is delivered before commit"
    tx.tx_rollback()
    tx.basic_publish("", q, b"committed")
    pump(conn, 0.2)
    assert got == []
    tx.tx_commit()
    wait_until(conn, lambda: got == [b"committed"], what="the committed message")
    # Publish, rollback, publish, commit: only the second arrives.
    tx.basic_publish("", q, b"gone")
    tx.tx_rollback()
    tx.basic_publish("", q, b"kept")
    tx.tx_commit()
    wait_until(conn, lambda: len(got) == 2, what="the second committed message")
    pump(conn, 0.2)
    assert got == [b"committed", b"kept"]


def test_tx_rolled_back_ack_leaves_the_message_unacked(conn, uniq):
    pub = confirm_channel(conn)
    q = declare(pub, uniq("q"))
    pub.basic_publish("", q, b"m")
    tx = conn.channel()
    tx.tx_select()
    m, _, _ = get_one(tx, q)
    tx.basic_ack(m.delivery_tag)
    tx.tx_rollback()
    tx.close()  # the ack never happened: the message comes back
    m, _, b = get_one(pub, q)
    assert b == b"m" and m.redelivered
    pub.basic_reject(m.delivery_tag, requeue=True)

    tx = conn.channel()
    tx.tx_select()
    m, _, _ = get_one(tx, q)
    tx.basic_ack(m.delivery_tag)
    tx.tx_commit()
    tx.close()
    assert message_count(conn, q) == 0
    assert_empty(pub, q)


# ---------------------------------------------------------------------- flow control

WATERMARK = 64 * 1024 * 1024
MARGIN = 100 * 1024 * 1024
FLOOD_BODY = 64 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def flow_broker(request):
    if TARGET[0] != "tributary":
        pytest.skip("configures Tributary's [flow] memory_high_watermark")
    root = Path(tempfile.mkdtemp(prefix="tributary-flow-"))
    b = TributaryBroker(root)
    b.extra_config = f"\n[flow]\nmemory_high_watermark = {WATERMARK}\n"
    try:
        b.start()
        yield b
    finally:
        problems = b.stop()
        rep = getattr(request.node, "rep_call", None)
        if problems or (rep is not None and rep.failed):
            print("broker log (tail):\n" + b.log_text()[-10000:])
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


class _Flooder(threading.Thread):
    """Publishes FLOOD_BODY messages to `queue` (its own pika BlockingConnection, used only
    in this thread) until connection.blocked arrives, waits for connection.unblocked, then
    publishes one message under confirms. Progress is visible to the test thread."""

    def __init__(self, params, queue, limit):
        super().__init__(name="flooder", daemon=True)
        self.params, self.queue, self.limit = params, queue, limit
        self.sent = 0
        self.last_progress = time.monotonic()
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self.stop = threading.Event()
        self.confirmed_after_unblock = False
        self.public_events: list[str] = []
        self.error: BaseException | None = None

    def run(self):
        try:
            conn = pika.BlockingConnection(self.params)
            # The public callbacks run in process_data_events; a broker that stops reading right
            # after connection.blocked can leave basic_publish waiting on a full socket, so the
            # frames are also observed where pika's I/O loop handles them (the SelectConnection).
            conn._impl.add_on_connection_blocked_callback(lambda c, f: self.blocked.set())
            conn._impl.add_on_connection_unblocked_callback(lambda c, f: self.unblocked.set())
            conn.add_on_connection_blocked_callback(lambda c, f: self.public_events.append("blocked"))
            conn.add_on_connection_unblocked_callback(lambda c, f: self.public_events.append("unblocked"))
            ch = conn.channel()
            body = os.urandom(FLOOD_BODY)
            while not self.blocked.is_set() and self.sent < self.limit and not self.stop.is_set():
                ch.basic_publish("", self.queue, body)  # waits while the socket is full
                self.sent += 1
                self.last_progress = time.monotonic()
                conn.process_data_events(time_limit=0)  # dispatches connection.blocked
            while not self.unblocked.is_set() and not self.stop.is_set():
                conn.process_data_events(time_limit=0.05)
            conn.process_data_events(time_limit=0)
            if self.unblocked.is_set():
                ch.confirm_delivery()
                ch.basic_publish("", self.queue, b"after-unblock")  # raises unless acked
                self.confirmed_after_unblock = True
            conn.close()
        except BaseException as e:  # reported by the test thread
            self.error = e


@pytest.mark.timeout(200)
def test_memory_watermark_blocks_publishers_and_unblocks_after_drain(flow_broker):
    b = flow_broker
    pid = b.proc.pid
    q = "flood"
    setup = b.connect()
    setup.channel().queue_declare(q)
    setup.close()
    limit = 4 * WATERMARK // FLOOD_BODY  # four times the watermark without a block: fail
    flooder = _Flooder(b.params(blocked_connection_timeout=170), q, limit)
    flooder.start()
    peak = 0
    deadline = time.monotonic() + 90
    try:
        while not flooder.blocked.wait(0.02):
            peak = max(peak, _rss(pid))
            assert flooder.error is None, f"publisher failed: {flooder.error!r}"
            mib = flooder.sent * FLOOD_BODY >> 20
            assert flooder.is_alive(), f"published {mib} MiB (4x the watermark) without connection.blocked"
            stalled = time.monotonic() - flooder.last_progress
            assert time.monotonic() < deadline, (
                f"no connection.blocked within 90 s after {mib} MiB; publisher "
                + (f"stuck in a socket write for {stalled:.0f} s: the broker stopped reading without "
                   "sending connection.blocked" if stalled > 5 else "still publishing"))
        # Blocked: the broker holds what it has and stays bounded.
        for _ in range(20):
            peak = max(peak, _rss(pid))
            time.sleep(0.02)  # sampling RSS while blocked, not synchronisation
        held = flooder.sent
        assert peak < WATERMARK + MARGIN, (
            f"RSS peaked at {peak >> 20} MiB (watermark {WATERMARK >> 20} MiB + margin {MARGIN >> 20} MiB) "
            f"after {held * FLOOD_BODY >> 20} MiB published")
        assert not flooder.unblocked.is_set()

        # A consumer on another (non-publishing) connection drains the queue.
        cons = b.connect()
        cch = cons.channel()
        cch.basic_qos(prefetch_count=200)
        cch.basic_consume(q, lambda c, m, p, body: None, auto_ack=True)
        ddl = time.monotonic() + 90
        while not flooder.unblocked.is_set():
            assert time.monotonic() < ddl, "no connection.unblocked within 90 s of a consumer draining the queue"
            cons.process_data_events(time_limit=0.05)
        flooder.join(30)
        assert flooder.error is None, f"publisher failed after unblock: {flooder.error!r}"
        assert flooder.confirmed_after_unblock, "the publish after connection.unblocked was not confirmed"
        assert flooder.public_events == ["blocked", "unblocked"], flooder.public_events
        cons.close()
    finally:
        flooder.stop.set()
