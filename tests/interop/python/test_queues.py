"""Queues: declare-ok counts, server names, exclusivity, auto-delete, bind, purge, delete."""

import pika
import pytest

from helpers import (assert_empty, channel_error, confirm_channel, get_one, queue_counts,
                     queue_exists, routed, wait_gone, wait_until)


def test_declare_ok_reports_message_and_consumer_counts(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ok = ch.queue_declare(q)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    for i in range(3):
        ch.basic_publish("", q, b"m%d" % i)
    ok = ch.queue_declare(q)  # non-passive redeclare reports too
    assert (ok.method.message_count, ok.method.consumer_count) == (3, 0)

    cons = conn.channel()
    cons.basic_qos(prefetch_count=1)
    got = []
    cons.basic_consume(q, lambda c, m, p, b: got.append(m.delivery_tag))
    wait_until(conn, lambda: len(got) == 1, what="first delivery")
    # One delivered (unacked), two ready; message_count counts ready messages only.
    assert queue_counts(conn, q) == (2, 1)


def test_server_named_queue(conn):
    ch = confirm_channel(conn)
    ok = ch.queue_declare("", exclusive=True)
    name = ok.method.queue
    assert name.startswith("amq.gen-"), name
    assert len(name) > len("amq.gen-")
    other = conn.channel().queue_declare("", exclusive=True).method.queue
    assert other != name
    assert routed(ch, "", name, b"hello")
    assert get_one(ch, name, auto_ack=True)[2] == b"hello"


def test_passive_declare_of_missing_queue_is_404(conn, uniq):
    ch = conn.channel()
    with channel_error(404, "NOT_FOUND"):
        ch.queue_declare(uniq("missing"), passive=True)


def test_declare_reserved_amq_queue_name_is_403(conn, uniq):
    ch = conn.channel()
    with channel_error(403, "ACCESS_REFUSED"):
        ch.queue_declare("amq." + uniq("q"))


def test_exclusive_queue_is_locked_to_its_connection(broker, conn, uniq):
    q = uniq("q")
    conn.channel().queue_declare(q, exclusive=True)
    other = broker.connect()
    try:
        with channel_error(405, "RESOURCE_LOCKED"):
            other.channel().queue_declare(q, passive=True)
        with channel_error(405, "RESOURCE_LOCKED"):
            other.channel().queue_declare(q, exclusive=True)
        with channel_error(405, "RESOURCE_LOCKED"):
            other.channel().basic_consume(q, lambda *a: None)
        with channel_error(405, "RESOURCE_LOCKED"):
            other.channel().queue_delete(q)
    finally:
        other.close()
    # The owner still uses it freely, from any of its channels.
    ch2 = conn.channel()
    ch2.queue_declare(q, passive=True)


def test_exclusive_queue_is_deleted_when_its_connection_closes(broker, conn, uniq):
    q = uniq("q")
    owner = broker.connect()
    owner.channel().queue_declare(q, exclusive=True)
    owner.close()
    wait_gone(conn, q)


def test_auto_delete_queue_goes_after_last_consumer_cancels(conn, uniq):
    q = uniq("q")
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    assert queue_exists(conn, q)  # no consumer yet: it stays
    t1 = ch.basic_consume(q, lambda *a: None)
    t2 = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(t1)
    assert queue_exists(conn, q)  # one consumer left
    ch.basic_cancel(t2)
    wait_gone(conn, q)


def test_auto_delete_queue_goes_when_consumer_channel_closes(conn, uniq):
    q = uniq("q")
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *a: None)
    ch.close()
    wait_gone(conn, q)


def test_bind_and_unbind(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    assert not routed(ch, "amq.direct", q)
    ch.queue_bind(q, "amq.direct", q)
    assert routed(ch, "amq.direct", q, b"bound")
    assert get_one(ch, q, auto_ack=True)[2] == b"bound"
    ch.queue_unbind(q, "amq.direct", q)
    assert not routed(ch, "amq.direct", q)
    ch.queue_unbind(q, "amq.direct", "never-bound")  # unbinding what does not exist is fine


def test_purge_returns_count(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    # One of them is unacked on another channel: purge leaves it alone.
    holder = conn.channel()
    method, _, _ = get_one(holder, q)
    ok = ch.queue_purge(q)
    assert ok.method.message_count == 4
    assert_empty(ch, q)
    assert ch.queue_purge(q).method.message_count == 0
    holder.close()  # the unacked one comes back
    assert get_one(ch, q, auto_ack=True)[2] == b"0"


def test_delete_returns_count_and_removes(conn, uniq):
    ch = confirm_channel(conn)
    q, x = uniq("q"), uniq("x")
    ch.exchange_declare(x, "fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    for i in range(3):
        ch.basic_publish("", q, b"x")
    ok = ch.queue_delete(q)
    assert ok.method.message_count == 3
    assert not queue_exists(conn, q)
    ch.queue_declare(q)  # a new queue of the same name: empty, unbound
    assert queue_counts(conn, q) == (0, 0)
    assert not routed(ch, x, "", b"nobody")


def test_delete_if_unused_with_consumer_is_406(conn, uniq):
    q = uniq("q")
    cons = conn.channel()
    cons.queue_declare(q)
    tag = cons.basic_consume(q, lambda *a: None)
    ch = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.queue_delete(q, if_unused=True)
    assert queue_exists(conn, q)
    cons.basic_cancel(tag)
    conn.channel().queue_delete(q, if_unused=True)
    assert not queue_exists(conn, q)


def test_delete_if_empty_with_messages_is_406(conn, uniq):
    q = uniq("q")
    pub = confirm_channel(conn)
    pub.queue_declare(q)
    pub.basic_publish("", q, b"x")
    with channel_error(406, "PRECONDITION_FAILED"):
        conn.channel().queue_delete(q, if_empty=True)
    assert queue_counts(conn, q) == (1, 0)
    conn.channel().queue_purge(q)
    conn.channel().queue_delete(q, if_empty=True)
    assert not queue_exists(conn, q)


@pytest.mark.parametrize("changed", ["durable", "auto_delete"])
def test_redeclare_with_different_flags_is_406(conn, uniq, changed):
    q = uniq("q")
    conn.channel().queue_declare(q, durable=False, auto_delete=False)
    with channel_error(406, "PRECONDITION_FAILED"):
        conn.channel().queue_declare(q, **{"durable": False, "auto_delete": False, changed: True})
    conn.channel().queue_declare(q, durable=False, auto_delete=False)


def test_passive_declare_ignores_flags(conn, uniq):
    q = uniq("q")
    conn.channel().queue_declare(q, durable=True)
    ok = conn.channel().queue_declare(q, passive=True, durable=False, auto_delete=True)
    assert ok.method.queue == q
