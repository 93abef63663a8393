"""Helpers for test_queue_features.py: bounded waits on broker-observable state.

Time-based features (TTL, x-expires) need time to pass. Instead of sleeping, the
tests poll state the broker exposes (a queue's message count, whether a queue still
routes) with a deadline, or they use a *broker clock*: a throwaway queue whose own
TTL/expiry has to fire first, so "at least N ms have passed on the broker" is an
observed event, not a guess.
"""

from __future__ import annotations

import datetime
import time

import pika
import pika.exceptions
import pytest

from conftest import TARGET

WAIT = 10.0
ON_RABBITMQ = TARGET[0] == "rabbitmq"


def message_count(conn, queue: str) -> int:
    c = conn.channel()
    try:
        return c.queue_declare(queue, passive=True).method.message_count
    finally:
        if c.is_open:
            c.close()


def wait_count(conn, queue: str, n: int, timeout: float = WAIT) -> None:
    """Poll a passive declare until `queue` holds exactly `n` messages (bounded)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = message_count(conn, queue)
        if last == n:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{queue!r} has {last} messages after {timeout}s, expected {n}")
        conn.process_data_events(time_limit=0.02)


def publish(ch, exchange: str, key: str, body: bytes, **props) -> None:
    """basic.publish with properties given as keyword arguments."""
    ch.basic_publish(exchange, key, body, pika.BasicProperties(**props) if props else None)


def routes_to(cch, queue: str) -> bool:
    """Is `queue` still there? Asked without touching the queue's expiry lease:
    a mandatory publish through the default exchange on a confirm channel is
    returned (False) if the queue no longer exists. RabbitMQ resets x-expires on
    queue.declare (passive too) and basic.get, but not on publish."""
    try:
        cch.basic_publish("", queue, b"probe", mandatory=True)
    except pika.exceptions.UnroutableError:
        return False
    return True


def wait_queue_gone(conn, cch, queue: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while routes_to(cch, queue):
        if time.monotonic() > deadline:
            pytest.fail(f"queue {queue!r} still exists after {timeout}s")
        conn.process_data_events(time_limit=0.02)


def broker_ttl_clock(conn, ms: int, timeout: float = WAIT) -> None:
    """Return once at least `ms` milliseconds have passed on the broker since the call:
    a message with that queue TTL is published to a throwaway queue and the queue's
    count is polled until the message has expired."""
    c = conn.channel()
    q = c.queue_declare("", exclusive=True, arguments={"x-message-ttl": ms}).method.queue
    c.basic_publish("", q, b"tick")
    wait_count(conn, q, 0, timeout=timeout + ms / 1000)
    c.queue_delete(q)
    c.close()


def broker_expiry_clock(conn, cch, ms: int, timeout: float = WAIT) -> None:
    """Like broker_ttl_clock, with an x-expires queue (for the x-expires tests)."""
    c = conn.channel()
    q = c.queue_declare("", exclusive=True, arguments={"x-expires": ms}).method.queue
    c.close()
    wait_queue_gone(conn, cch, q, timeout=timeout + ms / 1000)


def x_death(props) -> list[dict]:
    headers = props.headers or {}
    assert "x-death" in headers, f"no x-death header in {headers!r}"
    deaths = headers["x-death"]
    assert isinstance(deaths, list) and deaths, deaths
    return deaths


def assert_death(entry: dict, *, reason: str, queue: str, exchange: str, routing_keys: list[str],
                 count: int = 1, since: float | None = None) -> None:
    """One x-death entry as RabbitMQ writes it."""
    assert entry.get("reason") == reason, entry
    assert entry.get("queue") == queue, entry
    assert entry.get("exchange") == exchange, entry
    assert list(entry.get("routing-keys", [])) == routing_keys, entry
    assert entry.get("count") == count, entry
    t = entry.get("time")
    assert isinstance(t, datetime.datetime), f"x-death time must be a timestamp, got {t!r}"
    if since is not None:
        # AMQP timestamps have second resolution.
        ts = t.replace(tzinfo=datetime.timezone.utc).timestamp() if t.tzinfo is None else t.timestamp()
        assert since - 2 <= ts <= time.time() + 2, (t, since)


def assert_first_death(props, *, reason: str, queue: str, exchange: str) -> None:
    h = props.headers or {}
    assert h.get("x-first-death-reason") == reason, h
    assert h.get("x-first-death-queue") == queue, h
    assert h.get("x-first-death-exchange") == exchange, h
    # RabbitMQ 3.13+ also writes x-last-death-*; 3.10 (the validation target) does not.
    # Where present they must describe the most recent death, i.e. x-death[0].
    last = x_death(props)[0]
    for suffix, key in (("reason", "reason"), ("queue", "queue"), ("exchange", "exchange")):
        if f"x-last-death-{suffix}" in h:
            assert h[f"x-last-death-{suffix}"] == last[key], h
