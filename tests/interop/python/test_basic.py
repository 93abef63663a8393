"""basic.*: qos, consume, cancel, return, get, ack/nack/reject/recover, redelivery."""

import pika
import pika.exceptions
from pamqp import commands

from amqp_raw import RawAMQP
from helpers import (assert_empty, channel_error, confirm_channel, get_one, pump, queue_counts,
                     queue_exists, wait_until)


def _fill(conn, q, n, declare=True):
    ch = confirm_channel(conn)
    if declare:
        ch.queue_declare(q)
    for i in range(1, n + 1):
        ch.basic_publish("", q, str(i).encode())
    ch.close()


def test_prefetch_count_limits_unacked_per_consumer(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 10)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    wait_until(conn, lambda: len(got) >= 3, what="3 deliveries")
    pump(conn, 0.5)
    assert len(got) == 3, f"prefetch 3 but {len(got)} unacked deliveries"
    assert queue_counts(conn, q)[0] == 7
    ch.basic_ack(got[0][0])
    wait_until(conn, lambda: len(got) >= 4, what="4th delivery after one ack")
    pump(conn, 0.3)
    assert len(got) == 4
    ch.basic_ack(got[3][0], multiple=True)  # acks 2, 3, 4 -> three more
    wait_until(conn, lambda: len(got) >= 7, what="3 more deliveries")
    pump(conn, 0.3)
    assert len(got) == 7
    assert [b for _, b in got] == [str(i).encode() for i in range(1, 8)]


def test_per_consumer_qos_two_consumers_one_channel(conn, uniq):
    qa, qb = uniq("qa"), uniq("qb")
    _fill(conn, qa, 5)
    _fill(conn, qb, 5)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2, global_qos=False)
    got = {qa: 0, qb: 0}

    def on(q):
        return lambda c, m, p, b: got.__setitem__(q, got[q] + 1)

    ch.basic_consume(qa, on(qa))
    ch.basic_consume(qb, on(qb))
    wait_until(conn, lambda: got[qa] >= 2 and got[qb] >= 2, what="2 deliveries per consumer")
    pump(conn, 0.5)
    assert got == {qa: 2, qb: 2}


def test_global_qos_limits_the_channel(conn, uniq):
    qa, qb = uniq("qa"), uniq("qb")
    _fill(conn, qa, 5)
    _fill(conn, qb, 5)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    ch.basic_consume(qa, lambda c, m, p, b: got.append(m.delivery_tag))
    ch.basic_consume(qb, lambda c, m, p, b: got.append(m.delivery_tag))
    wait_until(conn, lambda: len(got) >= 3, what="3 deliveries")
    pump(conn, 0.5)
    assert len(got) == 3, f"global prefetch 3 but {len(got)} unacked on the channel"
    ch.basic_ack(got[-1], multiple=True)
    wait_until(conn, lambda: len(got) >= 6, what="3 more after acking all")
    pump(conn, 0.3)
    assert len(got) == 6


def test_consume_no_ack(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 3)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)  # ignored for no-ack consumers
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    wait_until(conn, lambda: len(got) == 3, what="3 no-ack deliveries")
    ch.close()  # nothing is outstanding, so nothing comes back
    assert queue_counts(conn, q) == (0, 0)


def test_exclusive_consumer(conn, uniq):
    q = uniq("q")
    ch1 = conn.channel()
    ch1.queue_declare(q)
    ch1.basic_consume(q, lambda *a: None, exclusive=True)
    with channel_error(403, "ACCESS_REFUSED"):
        conn.channel().basic_consume(q, lambda *a: None)
    # ... and exclusive consume on a queue that already has a consumer:
    q2 = uniq("q2")
    ch3 = conn.channel()
    ch3.queue_declare(q2)
    ch3.basic_consume(q2, lambda *a: None)
    with channel_error(403, "ACCESS_REFUSED"):
        conn.channel().basic_consume(q2, lambda *a: None, exclusive=True)


def test_server_generated_consumer_tag(broker, uniq):
    q = uniq("q")
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send(commands.Queue.Declare(queue=q, auto_delete=True), 1)
        raw.expect(commands.Queue.DeclareOk)
        raw.send(commands.Basic.Consume(queue=q, consumer_tag=""), 1)
        ok = raw.expect(commands.Basic.ConsumeOk)
        assert ok.consumer_tag.startswith("amq.ctag-"), ok.consumer_tag
        raw.send(commands.Basic.Consume(queue=q, consumer_tag=""), 1)
        ok2 = raw.expect(commands.Basic.ConsumeOk)
        assert ok2.consumer_tag.startswith("amq.ctag-") and ok2.consumer_tag != ok.consumer_tag
        # A client-chosen tag that is already in use on the channel: 530 NOT_ALLOWED.
        raw.send(commands.Basic.Consume(queue=q, consumer_tag=ok.consumer_tag), 1)
        close = raw.expect(commands.Connection.Close)
        assert close.reply_code == 530, close


def test_cancel_stops_deliveries(conn, uniq):
    q = uniq("q")
    ch = conn.channel()
    ch.queue_declare(q)
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    _fill(conn, q, 1, declare=False)
    wait_until(conn, lambda: got == [b"1"], what="delivery before cancel")
    ch.basic_cancel(tag)
    assert queue_counts(conn, q) == (0, 0)
    _fill(conn, q, 1, declare=False)
    pump(conn, 0.3)
    assert got == [b"1"]
    assert queue_counts(conn, q) == (1, 0)


def test_server_cancels_consumer_when_queue_is_deleted(conn, uniq):
    q = uniq("q")
    ch = conn.channel()
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    conn.channel().queue_delete(q)
    wait_until(conn, lambda: cancelled, what="server-sent basic.cancel")
    assert cancelled == [tag]
    assert ch.is_open  # the consumer's channel survives
    assert not queue_exists(conn, q)


def test_mandatory_unroutable_is_returned_with_312(conn, uniq):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    key = uniq("nobody-binds-this")
    ch.basic_publish("amq.direct", key, b"come back",
                     properties=pika.BasicProperties(message_id="r1"), mandatory=True)
    ch.basic_publish("amq.direct", key, b"silently dropped", mandatory=False)
    wait_until(conn, lambda: returned, what="basic.return")
    pump(conn, 0.3)
    assert len(returned) == 1
    method, props, body = returned[0]
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key) == ("amq.direct", key)
    assert body == b"come back" and props.message_id == "r1"


def test_basic_get_and_get_empty(conn, uniq):
    q = uniq("q")
    ch = conn.channel()
    ch.queue_declare(q)
    assert ch.basic_get(q) == (None, None, None)
    _fill(conn, q, 3, declare=False)
    method, _, body = get_one(ch, q)
    assert body == b"1"
    assert method.message_count == 2  # messages left after this one
    assert method.redelivered is False
    assert (method.exchange, method.routing_key) == ("", q)
    m2, _, _ = ch.basic_get(q)
    assert m2.delivery_tag > method.delivery_tag
    ch.basic_ack(m2.delivery_tag, multiple=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"3"
    assert ch.basic_get(q) == (None, None, None)


def test_nack_requeue_keeps_position_and_sets_redelivered(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 5)
    ch = conn.channel()
    m1, m2, m3 = (get_one(ch, q)[0] for _ in range(3))
    ch.basic_nack(m2.delivery_tag, requeue=True)
    again, _, body = get_one(ch, q)
    assert body == b"2", "a requeued message must come back before later ones"
    assert again.redelivered is True
    ch.basic_reject(m1.delivery_tag, requeue=True)
    ch.basic_reject(again.delivery_tag, requeue=True)
    order = []
    for _ in range(4):
        m, _, b = get_one(ch, q, auto_ack=True)
        order.append((b, m.redelivered))
    assert order == [(b"1", True), (b"2", True), (b"4", False), (b"5", False)]
    ch.basic_ack(m3.delivery_tag)
    assert_empty(ch, q)


def test_nack_multiple_requeue(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 4)
    ch = conn.channel()
    tags = [get_one(ch, q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=True)
    got = [(b, m.redelivered) for m, _, b in (get_one(ch, q, auto_ack=True) for _ in range(4))]
    assert got == [(b"1", True), (b"2", True), (b"3", True), (b"4", False)]


def test_nack_and_reject_without_requeue_drop(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 4)
    ch = conn.channel()
    tags = [get_one(ch, q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[1], multiple=True, requeue=False)  # drops 1 and 2
    ch.basic_reject(tags[2], requeue=False)  # drops 3
    ch.close()
    ch = conn.channel()
    m, _, body = get_one(ch, q, auto_ack=True)
    assert (body, m.redelivered) == (b"4", False)
    assert_empty(ch, q)


def test_ack_multiple(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 5)
    ch = conn.channel()
    tags = [get_one(ch, q)[0].delivery_tag for _ in range(5)]
    assert tags == sorted(tags) and len(set(tags)) == 5
    ch.basic_ack(tags[2], multiple=True)  # 1..3 done
    ch.close()  # 4 and 5 come back
    ch = conn.channel()
    got = [(b, m.redelivered) for m, _, b in (get_one(ch, q, auto_ack=True) for _ in range(2))]
    assert got == [(b"4", True), (b"5", True)]
    assert_empty(ch, q)


def test_delivery_tags_start_at_one_per_channel(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 4)
    for _ in range(2):
        ch = conn.channel()
        m1 = get_one(ch, q)[0]
        m2 = get_one(ch, q)[0]
        assert (m1.delivery_tag, m2.delivery_tag) == (1, 2)
        ch.basic_ack(2, multiple=True)


def test_recover_requeue(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 2)
    ch = conn.channel()
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((b, m.redelivered)))
    wait_until(conn, lambda: len(got) == 2, what="2 deliveries")
    ch.basic_recover(requeue=True)
    wait_until(conn, lambda: len(got) == 4, what="redeliveries after recover")
    assert sorted(got[2:]) == [(b"1", True), (b"2", True)]


def test_unacked_return_when_channel_closes(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 3)
    ch = conn.channel()
    get_one(ch, q)
    get_one(ch, q)
    ch.close()
    ch = conn.channel()
    got = [(b, m.redelivered) for m, _, b in (get_one(ch, q, auto_ack=True) for _ in range(3))]
    assert got == [(b"1", True), (b"2", True), (b"3", False)]


def test_unacked_return_when_consumer_connection_closes(broker, conn, uniq):
    q = uniq("q")
    _fill(conn, q, 3)
    other = broker.connect()
    och = other.channel()
    got = []
    och.basic_consume(q, lambda c, m, p, b: got.append(b))
    wait_until(other, lambda: len(got) == 3, what="3 deliveries")
    other.close()
    ch = conn.channel()
    got = [(b, m.redelivered) for m, _, b in (get_one(ch, q, auto_ack=True) for _ in range(3))]
    assert got == [(b"1", True), (b"2", True), (b"3", True)]


def test_ack_unknown_delivery_tag_is_406(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 1)
    ch = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.basic_ack(999)
        ch.queue_declare(q, passive=True)  # round trip to receive the close
    assert queue_counts(conn, q) == (1, 0)


def test_double_ack_is_406(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 1)
    ch = conn.channel()
    m, _, _ = get_one(ch, q)
    ch.basic_ack(m.delivery_tag)
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.basic_ack(m.delivery_tag)
        ch.queue_declare(q, passive=True)
    assert queue_counts(conn, q) == (0, 0)


def test_ack_of_no_ack_delivery_is_406(conn, uniq):
    q = uniq("q")
    _fill(conn, q, 1)
    ch = conn.channel()
    m, _, _ = get_one(ch, q, auto_ack=True)
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.basic_ack(m.delivery_tag)
        ch.queue_declare(q, passive=True)


def test_consume_from_missing_queue_is_404(conn, uniq):
    with channel_error(404, "NOT_FOUND"):
        conn.channel().basic_consume(uniq("missing"), lambda *a: None)
