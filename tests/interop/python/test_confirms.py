"""Publisher confirms (pika, raw frames)."""

import time
import pika
import pika.exceptions
import pytest
from pamqp import body as pbody
from pamqp import commands, header

from amqp_raw import RawAMQP
from helpers import confirm_channel, get_one, queue_counts


def test_pika_every_publish_confirmed(conn, uniq):
    ch = confirm_channel(conn)
    q = uniq("q")
    ch.queue_declare(q, durable=True)
    for i in range(200):
        ch.basic_publish("", q, b"%d" % i, properties=pika.BasicProperties(delivery_mode=2 if i % 2 else 1))
    assert queue_counts(conn, q) == (200, 0)


def test_pika_unroutable_mandatory_under_confirms(conn, uniq):
    ch = confirm_channel(conn)
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        ch.basic_publish("amq.direct", uniq("unbound"), b"lost", mandatory=True)
    [ret] = ei.value.messages
    assert ret.method.reply_code == 312
    assert ret.body == b"lost"
    # Not mandatory: confirmed (acked) though dropped.
    ch.basic_publish("amq.direct", uniq("unbound"), b"dropped", mandatory=False)
    q = uniq("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"fine", mandatory=True)
    assert get_one(ch, q, auto_ack=True)[2] == b"fine"


def _raw_confirm_channel(broker):
    raw = RawAMQP(broker.host, broker.port)
    raw.handshake()
    raw.open_channel(1)
    raw.send(commands.Confirm.Select(), 1)
    raw.expect(commands.Confirm.SelectOk)
    return raw


def test_confirm_delivery_tags_are_monotonic_and_complete(broker, uniq):
    q = uniq("q")
    n = 300
    with _raw_confirm_channel(broker) as raw:
        raw.send(commands.Queue.Declare(queue=q), 1)
        raw.expect(commands.Queue.DeclareOk)
        for i in range(n):  # pipelined: the broker may ack in batches (multiple=true)
            raw.publish(1, "", q, b"%d" % i)
        confirmed = set()
        last = 0
        while len(confirmed) < n:
            ack = raw.expect(commands.Basic.Ack)
            assert ack.delivery_tag > last, f"tag {ack.delivery_tag} after {last}: not monotonic"
            assert ack.delivery_tag <= n, ack
            if ack.multiple:
                confirmed.update(range(1, ack.delivery_tag + 1))
            else:
                confirmed.add(ack.delivery_tag)
            last = ack.delivery_tag
        assert confirmed == set(range(1, n + 1))
        assert last == n
        raw.send(commands.Queue.Declare(queue=q, passive=True), 1)
        assert raw.expect(commands.Queue.DeclareOk).message_count == n


def test_return_precedes_ack_for_mandatory_unroutable(broker, uniq):
    with _raw_confirm_channel(broker) as raw:
        q = uniq("q")
        raw.send(commands.Queue.Declare(queue=q), 1)
        raw.expect(commands.Queue.DeclareOk)
        raw.publish(1, "", q, b"routed", mandatory=True)  # tag 1
        raw.publish(1, "amq.direct", uniq("unbound"), b"unroutable", mandatory=True)  # tag 2
        # The return (with its content) must reach the client before any ack that
        # covers tag 2; acks may come before it for tag 1, and may be coalesced
        # (multiple=true), as the spec allows.
        confirmed, returned = set(), None
        deadline = time.monotonic() + 10
        while 2 not in confirmed:
            _, frame = raw.recv_frame(max(0.001, deadline - time.monotonic()))
            if isinstance(frame, commands.Basic.Return):
                assert (frame.reply_code, frame.reply_text) == (312, "NO_ROUTE")
                h = raw.expect(header.ContentHeader)
                assert h.body_size == len(b"unroutable")
                assert raw.expect(pbody.ContentBody).value == b"unroutable"
                returned = True
            elif isinstance(frame, commands.Basic.Ack):
                covered = range(1, frame.delivery_tag + 1) if frame.multiple else [frame.delivery_tag]
                if 2 in covered:
                    assert returned, "basic.ack for the unroutable message came before its basic.return"
                confirmed.update(covered)
        assert confirmed == {1, 2}


def test_confirm_select_nowait_and_tx_conflict(broker):
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send(commands.Tx.Select(), 1)
        raw.expect(commands.Tx.SelectOk)
        # A transactional channel cannot be put in confirm mode: 406 PRECONDITION_FAILED.
        raw.send(commands.Confirm.Select(), 1)
        close = raw.expect(commands.Channel.Close)
        assert close.reply_code == 406, close
