"""Small synchronisation and assertion helpers shared by the pika tests."""

from __future__ import annotations

import contextlib
import time

import pika
import pika.exceptions
import pytest

DEFAULT_TIMEOUT = 5.0


@contextlib.contextmanager
def channel_error(code: int, text: str | None = None):
    """The block must end with the broker closing the channel with `code`."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        yield ei
    assert ei.value.reply_code == code, f"expected channel close {code}, got {ei.value!r}"
    if text is not None:
        assert ei.value.reply_text.startswith(text), ei.value.reply_text


@contextlib.contextmanager
def connection_error(code: int):
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        yield ei
    assert ei.value.reply_code == code, f"expected connection close {code}, got {ei.value!r}"


def get_one(ch, queue: str, timeout: float = DEFAULT_TIMEOUT, auto_ack: bool = False):
    """basic.get until a message comes (bounded); returns (method, properties, body)."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            pytest.fail(f"no message in {queue!r} within {timeout}s")
        ch.connection.process_data_events(time_limit=0.02)


def get_bodies(ch, queue: str, n: int, auto_ack: bool = False, timeout: float = DEFAULT_TIMEOUT):
    return [get_one(ch, queue, timeout=timeout, auto_ack=auto_ack)[2] for _ in range(n)]


def assert_empty(ch, queue: str):
    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert method is None, f"expected {queue!r} empty, got {body!r}"


def wait_until(conn, predicate, timeout: float = DEFAULT_TIMEOUT, what: str = "condition"):
    """Pump pika's event loop until predicate() is true (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        conn.process_data_events(time_limit=0.02)


def pump(conn, seconds: float):
    """Let events arrive for a while (only for asserting that something does NOT happen)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        conn.process_data_events(time_limit=min(left, 0.05))


def queue_counts(conn, queue: str):
    """(message_count, consumer_count) from a passive declare on a throwaway channel."""
    c = conn.channel()
    ok = c.queue_declare(queue, passive=True)
    c.close()
    return ok.method.message_count, ok.method.consumer_count


def queue_exists(conn, queue: str) -> bool:
    c = conn.channel()
    try:
        c.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    c.close()
    return True


def exchange_exists(conn, name: str) -> bool:
    c = conn.channel()
    try:
        c.exchange_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    c.close()
    return True


def wait_gone(conn, queue: str, timeout: float = DEFAULT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while queue_exists(conn, queue):
        if time.monotonic() > deadline:
            pytest.fail(f"queue {queue!r} still exists after {timeout}s")
        conn.process_data_events(time_limit=0.05)


def routed(cch, exchange: str, key: str, body: bytes = b"x", headers=None) -> bool:
    """Publish mandatory on a confirm channel: True if routed, False if returned."""
    props = pika.BasicProperties(headers=headers) if headers is not None else None
    try:
        cch.basic_publish(exchange, key, body, properties=props, mandatory=True)
    except pika.exceptions.UnroutableError:
        return False
    return True


def confirm_channel(conn):
    c = conn.channel()
    c.confirm_delivery()
    return c
