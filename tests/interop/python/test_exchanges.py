"""Exchanges: types, flags, equivalence, reserved names, delete, e2e bindings."""

import pika
import pytest

from helpers import (channel_error, connection_error, confirm_channel, exchange_exists, get_one, routed)


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "headers"])
def test_declare_each_type(conn, uniq, kind):
    ch = conn.channel()
    x = uniq("x")
    ok = ch.exchange_declare(x, kind)
    assert isinstance(ok.method, pika.spec.Exchange.DeclareOk)
    ch.exchange_declare(x, kind)  # idempotent with identical arguments
    ch.exchange_declare(x, passive=True)
    ch.exchange_declare(x, kind, passive=True)


def test_unknown_exchange_type_is_refused(conn, uniq):
    # 503 COMMAND_INVALID, a connection exception per the spec; RabbitMQ does the same.
    ch = conn.channel()
    with connection_error(503):
        ch.exchange_declare(uniq("x"), "no-such-type")


def test_passive_declare_of_missing_exchange_is_404(conn, uniq):
    ch = conn.channel()
    with channel_error(404, "NOT_FOUND"):
        ch.exchange_declare(uniq("missing"), passive=True)


def test_flags_durable_auto_delete_internal(conn, uniq):
    ch = conn.channel()
    for durable in (False, True):
        for auto_delete in (False, True):
            for internal in (False, True):
                x = uniq("x")
                ch.exchange_declare(x, "topic", durable=durable, auto_delete=auto_delete, internal=internal)
                ch.exchange_declare(x, "topic", durable=durable, auto_delete=auto_delete, internal=internal)
                assert exchange_exists(conn, x)
                ch.exchange_delete(x)


def test_auto_delete_exchange_goes_with_its_last_binding(conn, uniq):
    ch = conn.channel()
    x, q = uniq("x"), uniq("q")
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.queue_declare(q)
    ch.queue_bind(q, x, "a")
    ch.queue_bind(q, x, "b")
    ch.queue_unbind(q, x, "a")
    assert exchange_exists(conn, x)
    ch.queue_unbind(q, x, "b")
    assert not exchange_exists(conn, x)


@pytest.mark.parametrize("changed", ["type", "durable", "auto_delete", "internal"])
def test_redeclare_with_different_attributes_is_406(conn, uniq, changed):
    ch = conn.channel()
    x = uniq("x")
    base = dict(exchange_type="direct", durable=False, auto_delete=False, internal=False)
    ch.exchange_declare(x, **base)
    other = dict(base)
    other[changed] = "fanout" if changed == "type" else True
    if changed == "type":
        other["exchange_type"] = other.pop("type")
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.exchange_declare(x, **other)
    # Nothing changed: the original declaration still holds.
    conn.channel().exchange_declare(x, **base)


def test_declare_reserved_amq_name_is_403(conn):
    ch = conn.channel()
    with channel_error(403, "ACCESS_REFUSED"):
        ch.exchange_declare("amq.foo", "direct")


@pytest.mark.parametrize("name", ["amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"])
def test_predeclared_exchanges_exist(conn, name):
    ch = conn.channel()
    ch.exchange_declare(name, passive=True)


def test_predeclared_exchange_types(conn, uniq):
    """amq.fanout fans out, amq.topic matches wildcards, amq.match/amq.headers match headers."""
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    ch.queue_bind(q, "amq.fanout", "ignored")
    assert routed(ch, "amq.fanout", "anything")
    ch.queue_bind(q, "amq.topic", "a.*")
    assert routed(ch, "amq.topic", "a.b") and not routed(ch, "amq.topic", "a.b.c")
    for hx in ("amq.match", "amq.headers"):
        ch.queue_bind(q, hx, "", arguments={"x-match": "all", "k": q})
        assert routed(ch, hx, "", headers={"k": q})
        assert not routed(ch, hx, "", headers={"k": "other"})


def test_delete_exchange(conn, uniq):
    ch = conn.channel()
    x = uniq("x")
    ch.exchange_declare(x, "fanout")
    ch.exchange_delete(x)
    assert not exchange_exists(conn, x)


def test_delete_if_unused(conn, uniq):
    ch = conn.channel()
    x, q = uniq("x"), uniq("q")
    ch.exchange_declare(x, "direct")
    ch.queue_declare(q)
    ch.queue_bind(q, x, "k")
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.exchange_delete(x, if_unused=True)
    ch = conn.channel()
    assert exchange_exists(conn, x)
    ch.queue_unbind(q, x, "k")
    ch.exchange_delete(x, if_unused=True)
    assert not exchange_exists(conn, x)


def test_deleting_exchange_removes_its_bindings(conn, uniq):
    ch = confirm_channel(conn)
    x, q = uniq("x"), uniq("q")
    ch.exchange_declare(x, "direct")
    ch.queue_declare(q)
    ch.queue_bind(q, x, "k")
    ch.exchange_delete(x)
    ch.exchange_declare(x, "direct")  # same name, fresh: no binding survives
    assert not routed(ch, x, "k")


def test_publish_to_internal_exchange_is_403(conn, uniq):
    ch = conn.channel()
    x = uniq("x")
    ch.exchange_declare(x, "fanout", internal=True)
    with channel_error(403, "ACCESS_REFUSED"):
        ch.basic_publish(x, "", b"nope")
        ch.queue_declare("", exclusive=True)  # a round trip to receive the close


def test_publish_to_missing_exchange_is_404(conn, uniq):
    ch = conn.channel()
    with channel_error(404, "NOT_FOUND"):
        ch.basic_publish(uniq("missing"), "", b"nope")
        ch.queue_declare("", exclusive=True)


def test_exchange_to_exchange_bindings_route(conn, uniq):
    ch = confirm_channel(conn)
    src, mid, dst = uniq("src"), uniq("mid"), uniq("dst")
    q = uniq("q")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(mid, "direct", internal=True)  # internal: reachable only via e2e
    ch.exchange_declare(dst, "fanout")
    ch.queue_declare(q)
    ch.exchange_bind(destination=mid, source=src, routing_key="a.*")
    ch.exchange_bind(destination=dst, source=mid, routing_key="a.b")
    ch.queue_bind(q, dst)

    assert routed(ch, src, "a.b", b"via two hops")
    assert get_one(ch, q, auto_ack=True)[2] == b"via two hops"
    assert not routed(ch, src, "a.c")  # passes src, stops at mid
    assert not routed(ch, src, "x.y")  # stops at src

    ch.exchange_unbind(destination=dst, source=mid, routing_key="a.b")
    assert not routed(ch, src, "a.b")


def test_exchange_binding_loop_delivers_once(conn, uniq):
    ch = confirm_channel(conn)
    a, b, q = uniq("a"), uniq("b"), uniq("q")
    ch.exchange_declare(a, "fanout")
    ch.exchange_declare(b, "fanout")
    ch.exchange_bind(destination=b, source=a)
    ch.exchange_bind(destination=a, source=b)
    ch.queue_declare(q)
    ch.queue_bind(q, a)
    ch.queue_bind(q, b)
    assert routed(ch, a, "", b"once")
    assert get_one(ch, q, auto_ack=True)[2] == b"once"
    method, _, _ = ch.basic_get(q, auto_ack=True)
    assert method is None, "a message reached the same queue twice through an exchange loop"
