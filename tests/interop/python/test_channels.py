"""Channels: many per connection, errors are channel-scoped, channel.flow."""

import pika
import pika.exceptions

from helpers import (channel_error, get_bodies, get_one, pump, queue_counts, wait_until)


def test_many_channels_on_one_connection(conn, uniq):
    q = uniq("q")
    setup = conn.channel()
    setup.queue_declare(q)
    channels = [conn.channel() for _ in range(100)]
    assert len({c.channel_number for c in channels}) == 100
    for i, c in enumerate(channels):
        c.confirm_delivery()
        c.basic_publish("", q, str(i).encode())
    assert queue_counts(conn, q) == (100, 0)
    bodies = get_bodies(setup, q, 100, auto_ack=True)
    assert sorted(int(b) for b in bodies) == list(range(100))
    for c in channels[::2]:
        c.close()
    for c in channels[1::2]:
        assert c.is_open
        c.queue_declare(q, passive=True)


def test_channel_error_closes_only_that_channel(conn, uniq):
    q = uniq("q")
    good = conn.channel()
    good.queue_declare(q)
    bad = conn.channel()
    with channel_error(404, "NOT_FOUND"):
        bad.queue_declare(uniq("missing"), passive=True)
    assert bad.is_closed
    assert conn.is_open
    assert good.is_open
    good.confirm_delivery()
    good.basic_publish("", q, b"still works")
    assert get_one(good, q)[2] == b"still works"
    # The closed channel's number can be used again.
    again = conn.channel(bad.channel_number)
    again.queue_declare(q, passive=True)


def test_channel_flow(conn, uniq):
    """flow(active=true) must be answered; flow(active=false) either pauses deliveries
    (spec) or, as in RabbitMQ, is refused with 540 NOT_IMPLEMENTED."""
    q = uniq("q")
    ch = conn.channel()
    ch.queue_declare(q)
    assert ch.flow(True) is True

    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    pub = conn.channel()
    pub.confirm_delivery()
    try:
        active = ch.flow(False)
    except pika.exceptions.ConnectionClosedByBroker as e:
        assert e.reply_code == 540, e
        return
    assert active is False
    pub.basic_publish("", q, b"held")
    pump(conn, 0.5)
    assert got == [], "delivered while the channel's flow was off"
    assert ch.flow(True) is True
    wait_until(conn, lambda: got == [b"held"], what="delivery after flow on")
