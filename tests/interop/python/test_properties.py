"""Message properties and bodies survive the broker unchanged."""

import decimal
import os

import pika
import pytest

from helpers import channel_error, confirm_channel, get_one

HEADERS = {
    "str": "hello ünïcode",
    "int": 42,
    "neg": -7,
    "big": 2**40,
    "true": True,
    "false": False,
    "bytes": b"\x00\x01\xfe\xff",
    "decimal": decimal.Decimal("12.345"),
    "void": None,
    "array": [1, "two", True, [3, 4], {"k": "v"}],
    "nested": {"a": {"b": {"c": [1, 2, 3], "d": "deep"}}, "n": 0},
    "empty-table": {},
    "empty-array": [],
}


def _full_props(user="guest"):
    return pika.BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers=HEADERS,
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="amq.gen-reply",
        expiration="600000",
        message_id="msg-1",
        timestamp=1_700_000_000,
        type="test.type",
        user_id=user,
        app_id="tributary-tests",
    )


def test_all_properties_round_trip(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    sent = _full_props()
    ch.basic_publish("", q, b"{}", properties=sent)
    _, got, body = get_one(ch, q, auto_ack=True)
    assert body == b"{}"
    for field in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
                  "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(got, field) == getattr(sent, field), field
    assert got.headers == HEADERS


def test_no_properties_stay_absent(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"bare")
    _, got, _ = get_one(ch, q, auto_ack=True)
    for field in ("content_type", "headers", "delivery_mode", "priority", "correlation_id",
                  "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(got, field) is None, (field, getattr(got, field))


def test_properties_reach_a_consumer_too(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"via consume", properties=_full_props())
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((p, b)), auto_ack=True)
    while not got:
        conn.process_data_events(time_limit=0.05)
    props, body = got[0]
    assert body == b"via consume"
    assert props.headers == HEADERS and props.correlation_id == "corr-1"


def test_user_id_must_match_the_connection_user(conn, uniq):
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(q)
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.basic_publish("", q, b"x", properties=pika.BasicProperties(user_id="someone-else"))
        ch.queue_declare(q, passive=True)


@pytest.mark.parametrize("size", [0, 1, 131072 - 8, 131072, 200 * 1024, 1024 * 1024],
                         ids=["0B", "1B", "frame_max-8", "frame_max", "200KiB", "1MiB"])
def test_body_sizes(conn, uniq, size):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    payload = os.urandom(size)
    ch.basic_publish("", q, payload)
    _, _, body = get_one(ch, q, auto_ack=True)
    assert len(body) == size
    assert body == payload
    # and through a consumer
    ch.basic_publish("", q, payload)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    while not got:
        conn.process_data_events(time_limit=0.05)
    assert got[0] == payload
