"""Durability (issue 3): what survives a clean stop (SIGTERM) and a crash (SIGKILL), publisher
confirms and tx.commit under kill -9, redelivered flags, a torn and a corrupt segment, and
recovery at scale. Tributary only: the broker is stopped, killed and restarted on the same
data dir (durability_support.RestartableBroker, a new port for each run)."""

from __future__ import annotations

import hashlib
import threading
import time

import pika
import pika.exceptions
import pytest

from durability_support import (
    locate_bodies,
    publish_pipelined_with_confirms,
    restartable_broker,  # noqa: F401  (the `broker` fixture of this module)
    skip_unless_tributary,
)
from helpers import channel_error, confirm_channel, exchange_exists, queue_exists

pytestmark = [pytest.mark.tributary_only, skip_unless_tributary]

PERSISTENT = pika.BasicProperties(delivery_mode=2)
TRANSIENT = pika.BasicProperties(delivery_mode=1)
TYPES = ["direct", "fanout", "topic", "headers"]


def drain(ch, queue: str, expect: int | None = None, timeout: float = 10.0):
    """Every message now in `queue` as (method, properties, body), in queue order, acked.

    Consumes with a prefetch window (basic.get per message is slow for big queues) until the
    count that a passive declare reported has arrived; then the queue must be empty."""
    count = ch.queue_declare(queue, passive=True).method.message_count
    if expect is not None:
        assert count == expect, f"{queue!r} holds {count} messages, expected {expect}"
    out = []
    if count:
        ch.basic_qos(prefetch_count=min(count, 2000))
        tag = ch.basic_consume(queue, lambda c, m, p, b: out.append((m, p, b)))
        deadline = time.monotonic() + timeout
        acked = 0
        while len(out) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(out)} of {count} messages from {queue!r} within {timeout}s")
            ch.connection.process_data_events(time_limit=0.05)
            if len(out) - acked >= 500:
                ch.basic_ack(out[-1][0].delivery_tag, multiple=True)
                acked = len(out)
        ch.basic_cancel(tag)
        if acked < len(out):
            ch.basic_ack(out[-1][0].delivery_tag, multiple=True)
    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert method is None, f"{queue!r} holds more than the {count} messages it reported: {body[:60]!r}"
    assert len(out) == count, f"{queue!r}: {len(out)} deliveries for {count} messages"
    return out


def bodies(msgs):
    return [b for _, _, b in msgs]


# ---------------------------------------------------------------------------------------
# 1, 2: definitions, users and messages across a clean stop and a crash
# ---------------------------------------------------------------------------------------

ROUTES = {  # durable exchange -> (durable queue, routing key, binding arguments, publish headers)
    "dx.direct": ("dq.direct", "k.direct", None, None),
    "dx.fanout": ("dq.fanout", "", None, None),
    "dx.topic": ("dq.topic", "a.*.c", None, None),
    "dx.headers": ("dq.headers", "", {"x-match": "all", "h": "v"}, {"h": "v"}),
}
PUBLISH_KEY = {"dx.direct": "k.direct", "dx.fanout": "any", "dx.topic": "a.b.c", "dx.headers": ""}


def _routed(cch, exchange, key, body, headers=None) -> bool:
    props = pika.BasicProperties(headers=headers, delivery_mode=2)
    try:
        cch.basic_publish(exchange, key, body, properties=props, mandatory=True)
    except pika.exceptions.UnroutableError:
        return False
    return True


def _declare_everything(broker, conn):
    ch = confirm_channel(conn)
    for t in TYPES:
        ch.exchange_declare(f"dx.{t}", t, durable=True)
    ch.exchange_declare("dx.internal", "fanout", durable=True, internal=True)
    ch.exchange_declare("dx.autodel", "direct", durable=True, auto_delete=True)
    ch.exchange_declare("tx.transient", "direct", durable=False)
    for x, (q, key, args, _) in ROUTES.items():
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, x, key, arguments=args)
    # exchange-to-exchange: dx.direct --"e2e"--> dx.internal (fanout, internal) --> dq.e2e
    ch.queue_declare("dq.e2e", durable=True)
    ch.exchange_bind("dx.internal", "dx.direct", "e2e")
    ch.queue_bind("dq.e2e", "dx.internal", "")
    # an auto-delete durable exchange, kept alive by its binding
    ch.queue_declare("dq.autodel", durable=True)
    ch.queue_bind("dq.autodel", "dx.autodel", "ad")
    ch.queue_declare("dq.args", durable=True, arguments={"x-max-length": 1000})
    ch.queue_declare("dq.msgs", durable=True)
    # transient objects and bindings that involve one
    ch.queue_declare("tq", durable=False)
    ch.queue_bind("tq", "dx.direct", "to-transient")
    ch.queue_bind("dq.direct", "tx.transient", "from-transient")

    # every route works before the restart (so that "gone after" means something)
    for x in ROUTES:
        assert _routed(ch, x, PUBLISH_KEY[x], b"probe", ROUTES[x][3]), x
    assert _routed(ch, "dx.direct", "e2e", b"probe")
    assert _routed(ch, "dx.autodel", "ad", b"probe")
    assert _routed(ch, "dx.direct", "to-transient", b"probe")
    assert _routed(ch, "tx.transient", "from-transient", b"probe")
    for q in [r[0] for r in ROUTES.values()] + ["dq.e2e", "dq.autodel", "tq"]:
        ch.queue_purge(q)

    # messages: persistent and not, in a durable queue; persistent in a transient one
    for i in range(5):
        ch.basic_publish("", "dq.msgs", b"persistent-%d" % i, properties=PERSISTENT)
        ch.basic_publish("", "dq.msgs", b"transient-%d" % i, properties=TRANSIENT)
        ch.basic_publish("", "tq", b"in-transient-queue-%d" % i, properties=PERSISTENT)
    assert ch.queue_declare("dq.msgs", passive=True).method.message_count == 10
    assert ch.queue_declare("tq", passive=True).method.message_count == 5

    broker.add_user("durable-dora", "s3cret-Dora")
    broker.connect(user="durable-dora", password="s3cret-Dora").close()


@pytest.mark.parametrize("how", ["term", "kill"])
def test_restart_keeps_durable_definitions_and_drops_transient_ones(broker, how):
    conn = broker.connect()
    _declare_everything(broker, conn)
    conn.close()

    broker.restart(how)
    assert broker.store_opened() is (how == "term"), "clean_shutdown= in the store's open line"
    conn = broker.connect()
    ch = confirm_channel(conn)

    # Durable exchanges come back with their type and flags.
    for i, t in enumerate(TYPES):
        ch.exchange_declare(f"dx.{t}", t, durable=True)  # same attributes: fine
        other = TYPES[(i + 1) % len(TYPES)]
        with channel_error(406, "PRECONDITION_FAILED"):
            conn.channel().exchange_declare(f"dx.{t}", other, durable=True)
    ch.exchange_declare("dx.internal", "fanout", durable=True, internal=True)
    ch.exchange_declare("dx.autodel", "direct", durable=True, auto_delete=True)
    for name, kw in [("dx.direct", dict(exchange_type="direct", durable=False)),
                     ("dx.internal", dict(exchange_type="fanout", durable=True, internal=False)),
                     ("dx.autodel", dict(exchange_type="direct", durable=True, auto_delete=False))]:
        with channel_error(406, "PRECONDITION_FAILED"):
            conn.channel().exchange_declare(name, **kw)

    # Durable queues come back with their flags and arguments.
    ch.queue_declare("dq.args", durable=True, arguments={"x-max-length": 1000})
    with channel_error(406, "PRECONDITION_FAILED"):
        conn.channel().queue_declare("dq.args", durable=True, arguments={"x-max-length": 999})
    with channel_error(406, "PRECONDITION_FAILED"):
        conn.channel().queue_declare("dq.msgs", durable=False)

    # Bindings between durable objects route, exchange-to-exchange included.
    for x, (q, *_rest) in ROUTES.items():
        assert _routed(ch, x, PUBLISH_KEY[x], b"after-" + x.encode(), ROUTES[x][3]), f"{x} -> {q} lost"
        assert bodies(drain(ch, q)) == [b"after-" + x.encode()], q
    assert _routed(ch, "dx.direct", "e2e", b"via-e2e"), "exchange-to-exchange binding lost"
    assert bodies(drain(ch, "dq.e2e")) == [b"via-e2e"]
    assert _routed(ch, "dx.autodel", "ad", b"via-autodel")
    assert bodies(drain(ch, "dq.autodel")) == [b"via-autodel"]

    # Only the persistent messages of the durable queue are back, in order; after a crash
    # every recovered message is flagged redelivered, after a clean stop none is.
    msgs = drain(ch, "dq.msgs")
    assert bodies(msgs) == [b"persistent-%d" % i for i in range(5)]
    assert [m.redelivered for m, _, _ in msgs] == [how == "kill"] * 5
    assert all(p.delivery_mode == 2 for _, p, _ in msgs)

    # Transient objects are gone, and so are the bindings that involved them.
    assert not exchange_exists(conn, "tx.transient")
    assert not queue_exists(conn, "tq")
    ch.queue_declare("tq", durable=False)
    assert ch.queue_declare("tq", passive=True).method.message_count == 0, "persistent messages of a transient queue came back"
    assert not _routed(ch, "dx.direct", "to-transient", b"x"), "binding to a transient queue came back"
    ch.exchange_declare("tx.transient", "direct", durable=False)
    assert not _routed(ch, "tx.transient", "from-transient", b"x"), "binding from a transient exchange came back"
    assert ch.queue_declare("dq.direct", passive=True).method.message_count == 0
    conn.close()

    # Users (users.json) are still there.
    broker.connect(user="durable-dora", password="s3cret-Dora").close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        broker.connect(user="durable-dora", password="wrong")


# ---------------------------------------------------------------------------------------
# 3: confirmed messages survive repeated SIGKILLs exactly once, in per-publisher order
# ---------------------------------------------------------------------------------------

class BrokerGate:
    """Where the publishers find the current broker: a generation number that the test bumps
    after each (re)start, and the connection parameters of that generation."""

    def __init__(self):
        self.cond = threading.Condition()
        self.gen = 0
        self.params = None
        self.stop = False
        self.waiting: set[int] = set()  # publishers parked until the next generation
        self.confirms = 0

    def open(self, params):
        with self.cond:
            self.gen += 1
            self.params = params
            self.waiting.clear()
            self.cond.notify_all()

    def next_after(self, pid: int, gen: int, timeout: float = 60.0):
        with self.cond:
            self.waiting.add(pid)
            self.cond.notify_all()
            ok = self.cond.wait_for(lambda: self.stop or self.gen > gen, timeout)
            self.waiting.discard(pid)
            if not ok:
                raise TimeoutError(f"publisher {pid}: no broker generation after {gen} within {timeout}s")
            return None if self.stop else (self.gen, self.params)

    def wait_for(self, predicate, timeout: float, what: str):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                pytest.fail(f"timed out after {timeout}s waiting for {what}")


class Publisher(threading.Thread):
    """Its own pika connection with confirm_delivery; publishes persistent messages with a
    sequence number that is never reused, and records the ones that were confirmed."""

    def __init__(self, pid: int, gate: BrokerGate, queue: str):
        super().__init__(name=f"publisher-{pid}", daemon=True)
        self.pid, self.gate, self.queue = pid, gate, queue
        self.confirmed: list[tuple[int, int]] = []  # (seq, generation)
        self.next_seq = 0
        self.nacked: list[int] = []
        self.failures: list[str] = []
        self.error: BaseException | None = None

    def confirmed_in(self, gen: int) -> int:
        return sum(1 for _, g in self.confirmed if g == gen)

    def run(self):
        try:
            gen = 0
            while True:
                nxt = self.gate.next_after(self.pid, gen)
                if nxt is None:
                    return
                gen, params = nxt
                self._publish_until_broken(gen, params)
        except BaseException as e:  # reported by the test
            self.error = e

    def _publish_until_broken(self, gen, params):
        conn = None
        try:
            conn = pika.BlockingConnection(params)
            ch = conn.channel()
            ch.confirm_delivery()
            while not self.gate.stop:
                seq, self.next_seq = self.next_seq, self.next_seq + 1
                props = pika.BasicProperties(delivery_mode=2,
                                             headers={"pub": self.pid, "seq": seq, "gen": gen})
                try:
                    ch.basic_publish("", self.queue, b"p%d-s%d" % (self.pid, seq), properties=props)
                except pika.exceptions.NackError:
                    self.nacked.append(seq)
                    continue
                with self.gate.cond:
                    self.confirmed.append((seq, gen))
                    self.gate.confirms += 1
                    self.gate.cond.notify_all()
            conn.close()
        except (pika.exceptions.AMQPError, OSError) as e:
            self.failures.append(f"gen {gen}: {e!r}")
            if conn is not None and conn.is_open:
                try:
                    conn.close()
                except Exception:
                    pass


@pytest.mark.timeout(240)
def test_confirmed_messages_survive_repeated_sigkill_exactly_once_in_order(broker):
    q = "crash.q"
    c = broker.connect()
    c.channel().queue_declare(q, durable=True)
    c.close()

    gate = BrokerGate()
    pubs = [Publisher(i, gate, q) for i in range(3)]
    for p in pubs:
        p.start()
    per_cycle = 250  # confirms per publisher before each kill
    kills = 3
    try:
        for cycle in range(1, kills + 2):
            gate.open(broker.params(socket_timeout=5, stack_timeout=10))
            # Kill (or, after the last restart, stop publishing) once every publisher has made
            # progress in this generation: a moment chosen by progress, not by a timer.
            gate.wait_for(lambda: all(p.confirmed_in(gate.gen) >= per_cycle or p.error for p in pubs),
                          90, f"{per_cycle} confirms per publisher in generation {gate.gen}")
            assert not [p.error for p in pubs if p.error], [p.error for p in pubs]
            if cycle > kills:
                break
            broker.kill()
            # Every publisher notices and parks; only then are its confirm records final.
            gate.wait_for(lambda: gate.waiting == {p.pid for p in pubs}, 30,
                          "all publishers to notice the kill")
            broker.start()
            assert broker.store_opened() is False
            confirmed = sum(len(p.confirmed) for p in pubs)
            attempted = sum(p.next_seq for p in pubs)
            c = broker.connect()
            n = c.channel().queue_declare(q, passive=True).method.message_count
            c.close()
            assert confirmed <= n <= attempted, (
                f"after kill {cycle}: {n} messages in the queue, {confirmed} confirmed, {attempted} attempted")
    finally:
        with gate.cond:
            gate.stop = True
            gate.cond.notify_all()
        for p in pubs:
            p.join(30)
    assert not [p for p in pubs if p.is_alive()], "a publisher did not stop"
    assert not [p.error for p in pubs if p.error], [p.error for p in pubs]

    c = broker.connect()
    msgs = drain(c.channel(), q, timeout=30)
    c.close()
    seen: dict[int, list[tuple[int, int, bool]]] = {p.pid: [] for p in pubs}
    for m, props, body in msgs:
        h = props.headers
        assert body == b"p%d-s%d" % (h["pub"], h["seq"]), (body, h)
        seen[h["pub"]].append((h["seq"], h["gen"], m.redelivered))
    last_gen = kills + 1
    for p in pubs:
        seqs = [s for s, _, _ in seen[p.pid]]
        assert seqs == sorted(set(seqs)), (
            f"publisher {p.pid}: sequence numbers not strictly ascending in the queue (order lost or duplicates): {seqs}")
        assert all(s < p.next_seq for s in seqs), f"publisher {p.pid}: a message it never sent"
        missing = sorted({s for s, _ in p.confirmed} - set(seqs))
        assert not missing, f"publisher {p.pid}: confirmed messages lost: {missing}"
        assert not p.nacked, f"publisher {p.pid}: nacked {p.nacked}"
        # Recovered after a crash: flagged redelivered; published after the last restart: not.
        wrong = [(s, g, r) for s, g, r in seen[p.pid] if r != (g < last_gen)]
        assert not wrong, f"publisher {p.pid}: wrong redelivered flag (seq, generation, redelivered): {wrong[:10]}"
    assert sum(len(p.failures) for p in pubs) >= kills, "the publishers never saw a kill?"


# ---------------------------------------------------------------------------------------
# 4: unacked deliveries come back redelivered; acked ones do not come back
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["kill", "term"])
def test_unacked_come_back_redelivered_and_acked_do_not(broker, how):
    q = "acks.q"
    conn = broker.connect()
    cch = confirm_channel(conn)
    cch.queue_declare(q, durable=True)
    cch.queue_declare("acks.barrier", durable=True)
    for i in range(10):
        cch.basic_publish("", q, b"m%d" % i, properties=PERSISTENT)

    ch = conn.channel()
    got = []
    for _ in range(6):  # m0..m5 delivered, unacked
        method, _, body = ch.basic_get(q, auto_ack=False)
        assert method is not None
        got.append((method.delivery_tag, body))
    assert [b for _, b in got] == [b"m%d" % i for i in range(6)]
    for tag, _ in got[:3]:  # ack m0..m2
        ch.basic_ack(tag)
    # The acks are processed (the channel is ordered): a synchronous round trip on it ...
    assert ch.queue_declare(q, passive=True).method.message_count == 4
    # ... and a confirmed persistent publish behind them on the same channel, whose fsync
    # covers the Ack records appended before it.
    ch.confirm_delivery()
    ch.basic_publish("", "acks.barrier", b"barrier", properties=PERSISTENT)

    if how == "kill":
        broker.kill()
    else:
        broker.terminate()  # the connection is closed by the broker: m3..m5 are requeued
    broker.start()
    conn = broker.connect()
    msgs = drain(conn.channel(), q)
    assert bodies(msgs) == [b"m%d" % i for i in range(3, 10)], "acked messages came back or others were lost"
    flags = [m.redelivered for m, _, _ in msgs]
    if how == "kill":
        assert flags == [True] * 7, "after a crash every recovered message is flagged redelivered"
    else:
        assert flags == [True] * 3 + [False] * 4, "delivered-unacked m3..m5 redelivered, m6..m9 not"
    conn.close()


# ---------------------------------------------------------------------------------------
# 5: committed transactions survive kill -9, uncommitted and rolled-back work does not
# ---------------------------------------------------------------------------------------

def test_committed_tx_survives_sigkill_and_uncommitted_does_not(broker):
    q = "tx.q"
    conn = broker.connect()
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    ch.tx_select()
    for i in range(5):
        ch.basic_publish("", q, b"c%d" % i, properties=PERSISTENT)
    ch.tx_commit()
    for i in range(2):
        ch.basic_publish("", q, b"rolled-back-%d" % i, properties=PERSISTENT)
    ch.tx_rollback()
    for i in range(5, 10):
        ch.basic_publish("", q, b"c%d" % i, properties=PERSISTENT)
    ch.tx_commit()
    for i in range(5):
        ch.basic_publish("", q, b"uncommitted-%d" % i, properties=PERSISTENT)
    # The uncommitted publishes have reached the broker (a round trip behind them).
    assert ch.queue_declare(q, passive=True).method.message_count == 10
    broker.kill()
    broker.start()
    conn = broker.connect()
    msgs = drain(conn.channel(), q)
    assert bodies(msgs) == [b"c%d" % i for i in range(10)]
    assert all(m.redelivered for m, _, _ in msgs)
    conn.close()


# ---------------------------------------------------------------------------------------
# 6: a torn tail and a corrupt record in the segment log
# ---------------------------------------------------------------------------------------

N_CORRUPT = 20


def _corruption_body(i: int) -> bytes:
    return (b"corruption-body-%04d|" % i) + hashlib.sha256(b"%d" % i).hexdigest().encode() * 4


def _publish_and_stop(broker, q):
    conn = broker.connect()
    ch = confirm_channel(conn)
    ch.queue_declare(q, durable=True)
    for i in range(N_CORRUPT):
        ch.basic_publish("", q, _corruption_body(i), properties=PERSISTENT)
    conn.close()
    broker.terminate()
    segs = broker.segments()
    assert segs, f"no segment files in {broker.store_dir / 'log'}"
    found = locate_bodies(segs, [_corruption_body(i) for i in range(N_CORRUPT)])
    assert len(found) == N_CORRUPT, f"found {len(found)} of {N_CORRUPT} bodies in {segs}"
    return segs, found


@pytest.mark.parametrize("where", ["last-bytes", "mid-body", "in-header"])
def test_truncated_segment_tail_is_dropped_and_reported(broker, where):
    q = "torn.q"
    segs, found = _publish_and_stop(broker, q)
    last = found[_corruption_body(N_CORRUPT - 1)]
    size = last.segment.stat().st_size
    assert last.segment == segs[-1] and last.record.end == size, (
        f"the last message's record ({last.segment.name} {last.record}) is not the last record "
        f"of the last segment ({segs[-1].name}, {segs[-1].stat().st_size} bytes)")
    cut = {
        "last-bytes": size - 5,  # a few bytes short: the record runs past the end of the file
        "mid-body": last.body_at + len(_corruption_body(0)) // 2,
        "in-header": last.record.offset + 5,  # not even a whole record header
    }[where]
    assert last.record.offset < cut < size
    with open(last.segment, "r+b") as f:
        f.truncate(cut)

    broker.start()
    log = broker.run.text()
    assert "message store: truncated a torn tail" in log, log
    assert "skipped a corrupt record" not in log, log
    assert last.segment.stat().st_size == last.record.offset, "the torn record was not cut off at its start"
    conn = broker.connect()
    assert bodies(drain(conn.channel(), q)) == [_corruption_body(i) for i in range(N_CORRUPT - 1)]
    conn.close()


def test_corrupt_record_is_skipped_and_reported(broker):
    q = "flip.q"
    segs, found = _publish_and_stop(broker, q)
    victim = N_CORRUPT // 2
    loc = found[_corruption_body(victim)]
    at = loc.body_at + 30
    with open(loc.segment, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x20]))

    broker.start()
    log = broker.run.text()
    assert "message store: skipped a corrupt record" in log, log
    assert "truncated a torn tail" not in log, log
    # The damaged record stays on disk: the next start reports it again and starts all the same.
    broker.restart("term")
    assert "message store: skipped a corrupt record" in broker.run.text(), broker.run.text()
    conn = broker.connect()
    assert bodies(drain(conn.channel(), q)) == [_corruption_body(i) for i in range(N_CORRUPT) if i != victim]
    conn.close()


# ---------------------------------------------------------------------------------------
# 7: recovery at scale
# ---------------------------------------------------------------------------------------

N_MANY = 20_000


def _many_body(i: int) -> bytes:
    head = b"%08d|" % i
    return head + (hashlib.sha256(b"many-%d" % i).digest() * 32)[: 1024 - len(head)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["term", "kill"])
def test_twenty_thousand_persistent_messages_recover_intact(broker, how):
    q = "many.q"
    c = broker.connect()
    c.channel().queue_declare(q, durable=True)
    c.close()
    expected = hashlib.sha256()
    for i in range(N_MANY):
        expected.update(_many_body(i))
    tally = publish_pipelined_with_confirms(broker.host, broker.port, q,
                                            (_many_body(i) for i in range(N_MANY)), window=2000)
    assert not tally.nacked and len(tally.acked) == N_MANY, (len(tally.acked), sorted(tally.nacked)[:10])

    broker.restart(how)
    opened = broker.run.wait_for(r"message store opened.*live_messages=(\d+)", 5)
    assert opened and int(opened.group(1)) == N_MANY, broker.run.text()
    conn = broker.connect()
    msgs = drain(conn.channel(), q, expect=N_MANY, timeout=60)
    conn.close()
    got = hashlib.sha256()
    for i, (m, _, body) in enumerate(msgs):
        assert body == _many_body(i), f"message {i}: {body[:20]!r}... (len {len(body)})"
        assert m.redelivered is (how == "kill")
        got.update(body)
    assert got.hexdigest() == expected.hexdigest()
