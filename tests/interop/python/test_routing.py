"""Routing: direct, fanout, topic, headers, default exchange. Every case is decided by
publisher confirms + mandatory (a returned message is unroutable), then basic.get."""

import pytest

from helpers import assert_empty, channel_error, confirm_channel, routed


def _deliveries(ch, queues):
    """Which of `queues` hold a message now (drains them)."""
    hit = set()
    for q in queues:
        method, _, _ = ch.basic_get(q, auto_ack=True)
        if method is not None:
            hit.add(q)
            assert_empty(ch, q)
    return hit


def test_direct(conn, uniq):
    ch = confirm_channel(conn)
    x = uniq("x")
    ch.exchange_declare(x, "direct")
    qa, qb, qab = uniq("qa"), uniq("qb"), uniq("qab")
    for q in (qa, qb, qab):
        ch.queue_declare(q)
    ch.queue_bind(qa, x, "a")
    ch.queue_bind(qb, x, "b")
    ch.queue_bind(qab, x, "a")
    ch.queue_bind(qab, x, "b")
    ch.queue_bind(qab, x, "b")  # duplicate binding: no duplicate delivery
    assert routed(ch, x, "a")
    assert _deliveries(ch, [qa, qb, qab]) == {qa, qab}
    assert routed(ch, x, "b")
    assert _deliveries(ch, [qa, qb, qab]) == {qb, qab}
    assert not routed(ch, x, "c")
    assert not routed(ch, x, "A")  # case sensitive
    assert _deliveries(ch, [qa, qb, qab]) == set()


def test_fanout(conn, uniq):
    ch = confirm_channel(conn)
    x = uniq("x")
    ch.exchange_declare(x, "fanout")
    assert not routed(ch, x, "")
    qs = [uniq(f"q{i}") for i in range(3)]
    for i, q in enumerate(qs):
        ch.queue_declare(q)
        ch.queue_bind(q, x, f"key-{i}")  # keys are ignored
    assert routed(ch, x, "whatever")
    assert _deliveries(ch, qs) == set(qs)


TOPIC_CASES = [
    # (binding pattern, routing key, matches?)
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.b.c", "a.b.c.d", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("a.*", "a", False),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", "", True),
    ("a.#", "a", True),  # '#' matches zero words
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.c", "c", True),
    ("#.c", "a.b.c", True),
    ("#.c", "a.b.c.d", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.c", False),
    ("a.#.b", "a.b.c", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("a.*.#", "a.b.c.d", True),
    ("#.*", "a", True),
    ("#.*", "", False),
    ("*.#.*", "a", False),
    ("*.#.*", "a.b", True),
    ("#.#", "a.b", True),
    ("a.b", "a.bb", False),
    ("ab.*", "a.b.x", False),
    ("a..b", "a..b", True),  # empty words are words
    ("a.*.b", "a..b", True),
]


def test_topic(conn, uniq):
    ch = confirm_channel(conn)
    x = uniq("x")
    ch.exchange_declare(x, "topic")
    patterns = sorted({p for p, _, _ in TOPIC_CASES})
    queues = {}
    for p in patterns:
        q = uniq("q")
        ch.queue_declare(q)
        ch.queue_bind(q, x, p)
        queues[p] = q
    by_key = {}
    for p, key, match in TOPIC_CASES:
        by_key.setdefault(key, {})[p] = match
    wrong = []
    for key, expect in by_key.items():
        routed(ch, x, key)
        hit = _deliveries(ch, queues.values())
        for p, match in expect.items():
            if (queues[p] in hit) != match:
                wrong.append(f"pattern {p!r} vs key {key!r}: expected {'match' if match else 'no match'}")
    assert not wrong, "\n".join(wrong)


def test_topic_unbind_and_overlapping_bindings(conn, uniq):
    ch = confirm_channel(conn)
    x, q = uniq("x"), uniq("q")
    ch.exchange_declare(x, "topic")
    ch.queue_declare(q)
    ch.queue_bind(q, x, "a.*")
    ch.queue_bind(q, x, "#.b")
    assert routed(ch, x, "a.b")
    assert _deliveries(ch, [q]) == {q}  # once, although two bindings match
    ch.queue_unbind(q, x, "a.*")
    assert routed(ch, x, "x.b")
    assert not routed(ch, x, "a.c")


def test_headers(conn, uniq):
    ch = confirm_channel(conn)
    x = uniq("x")
    ch.exchange_declare(x, "headers")
    bindings = {
        "all": {"x-match": "all", "a": 1, "b": "x"},
        "default": {"a": 1, "b": "x"},  # no x-match means all
        "any": {"x-match": "any", "a": 1, "b": "x"},
        "all-ignores-x": {"x-match": "all", "a": 1, "x-k": "v"},
        "all-with-x": {"x-match": "all-with-x", "a": 1, "x-k": "v"},
        "any-with-x": {"x-match": "any-with-x", "x-k": "v"},
        "any-ignores-x": {"x-match": "any", "x-k": "v"},
        "key-only": {"x-match": "all", "flag": None},  # void value: the key must be present
    }
    queues = {}
    for name, args in bindings.items():
        q = uniq(name)
        ch.queue_declare(q)
        ch.queue_bind(q, x, "routing-key-is-ignored", arguments=args)
        queues[name] = q
    cases = [
        ({"a": 1, "b": "x"}, {"all", "default", "any", "all-ignores-x"}),
        ({"a": 1, "b": "x", "extra": 5}, {"all", "default", "any", "all-ignores-x"}),
        ({"a": 1}, {"any", "all-ignores-x"}),
        ({"a": 1, "x-k": "v"}, {"any", "all-ignores-x", "all-with-x", "any-with-x"}),
        ({"x-k": "v"}, {"any-with-x"}),
        ({"a": 2, "b": "x"}, {"any"}),
        ({"a": "1", "b": "y"}, set()),  # "1" is not 1
        ({"flag": None}, {"key-only"}),
        ({}, set()),
    ]
    wrong = []
    for headers, expect in cases:
        assert routed(ch, x, "", headers=headers) == bool(expect), headers
        hit = {n for n, q in queues.items() if q in _deliveries(ch, [q])}
        if hit != expect:
            wrong.append(f"headers {headers}: routed to {sorted(hit)}, expected {sorted(expect)}")
    assert not wrong, "\n".join(wrong)


def test_default_exchange_routes_by_queue_name(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q)
    assert routed(ch, "", q, b"direct to queue")
    assert ch.basic_get(q, auto_ack=True)[2] == b"direct to queue"
    assert not routed(ch, "", uniq("no-such-queue"))
    assert not routed(ch, "", q.upper())


def test_default_exchange_cannot_be_bound(conn, uniq):
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(q)
    with channel_error(403, "ACCESS_REFUSED"):
        ch.queue_bind(q, "", "other-key")


def test_bind_to_missing_exchange_or_queue_is_404(conn, uniq):
    ch = conn.channel()
    q = uniq("q")
    ch.queue_declare(q)
    with channel_error(404, "NOT_FOUND"):
        ch.queue_bind(q, uniq("missing-x"), "k")
    ch = conn.channel()
    with channel_error(404, "NOT_FOUND"):
        ch.queue_bind(uniq("missing-q"), "amq.direct", "k")
