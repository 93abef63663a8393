"""The same behaviours through aio-pika (asyncio), which frames things differently from pika."""

import asyncio
import datetime

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import pytest

pytestmark = pytest.mark.asyncio
WAIT = 5


async def _connect(broker, **kw):
    return await asyncio.wait_for(aio_pika.connect(broker.url, **kw), WAIT)


async def test_publish_confirms_tags_monotonic_then_consume(broker, uniq):
    conn = await _connect(broker)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(uniq("q"))
        tags = []
        for i in range(20):
            ack = await ch.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=q.name)
            assert ack.__class__.__name__ == "Ack", ack
            tags.append(ack.delivery_tag)
        assert tags == list(range(1, 21))
        # Concurrent publishes: every one confirmed, whatever the batching.
        acks = await asyncio.wait_for(asyncio.gather(*(
            ch.default_exchange.publish(aio_pika.Message(b"c"), routing_key=q.name) for _ in range(50))), WAIT)
        # aiormq resolves a publish with the frame that confirmed it, possibly a multiple=true ack.
        assert all(a.__class__.__name__ == "Ack" for a in acks)
        assert min(a.delivery_tag for a in acks) >= 21 and max(a.delivery_tag for a in acks) == 70

        got = []
        async with q.iterator() as it:
            async for msg in it:
                got.append(msg.body)
                await msg.ack()
                if len(got) == 70:
                    break
        assert got[:20] == [b"%d" % i for i in range(20)]
        declared = await ch.declare_queue(q.name, passive=True)
        assert declared.declaration_result.message_count == 0


async def test_mandatory_unroutable_under_confirms(broker, uniq):
    conn = await _connect(broker)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        with pytest.raises(aio_pika.exceptions.DeliveryError) as ei:
            await (await ch.get_exchange("amq.direct")).publish(
                aio_pika.Message(b"lost"), routing_key=uniq("unbound"), mandatory=True)
        assert isinstance(ei.value, aiormq.exceptions.PublishError)
        assert ei.value.message.body == b"lost"
        # the channel is fine afterwards
        q = await ch.declare_queue(uniq("q"))
        await ch.default_exchange.publish(aio_pika.Message(b"ok"), routing_key=q.name)


async def test_qos_prefetch(broker, uniq):
    conn = await _connect(broker)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=2)
        q = await ch.declare_queue(uniq("q"))
        for i in range(6):
            await ch.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=q.name)
        got = []
        two = asyncio.Event()

        async def on_message(msg):
            got.append(msg)
            if len(got) >= 2:
                two.set()

        await q.consume(on_message)
        await asyncio.wait_for(two.wait(), WAIT)
        await asyncio.sleep(0.5)  # only to show that nothing more arrives
        assert len(got) == 2
        await got[0].ack()
        while len(got) < 3:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert len(got) == 3


async def test_server_cancel_notification(broker, uniq):
    conn = await _connect(broker)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(uniq("q"))
        cancelled = asyncio.Event()
        tags = []
        underlay = await ch.get_underlay_channel()

        async def on_cancel(frame):
            tags.append(frame.consumer_tag)
            cancelled.set()

        underlay.on_consumer_cancel_callbacks.add(on_cancel)
        async def ignore(msg):
            pass

        tag = await q.consume(ignore)
        other = await conn.channel()
        await other.queue_delete(q.name)
        await asyncio.wait_for(cancelled.wait(), WAIT)
        assert tags == [tag]
        assert not ch.is_closed


async def test_properties_round_trip(broker, uniq):
    conn = await _connect(broker)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(uniq("q"))
        ts = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        headers = {"s": "v", "i": 7, "b": True, "nested": {"x": [1, "y"]}, "raw": bytearray(b"\x00\xff")}
        sent = aio_pika.Message(
            b"payload", headers=headers, content_type="text/plain", content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=3, correlation_id="c-9",
            reply_to="replies", expiration=60, message_id="m-9", timestamp=ts, type="t",
            user_id="guest", app_id="aio")
        await ch.default_exchange.publish(sent, routing_key=q.name)
        msg = await q.get(timeout=WAIT)
        await msg.ack()
        assert msg.body == b"payload"
        assert msg.headers == headers
        assert (msg.content_type, msg.content_encoding, msg.priority) == ("text/plain", "utf-8", 3)
        assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert (msg.correlation_id, msg.reply_to, msg.message_id, msg.type) == ("c-9", "replies", "m-9", "t")
        assert (msg.user_id, msg.app_id) == ("guest", "aio")
        assert msg.timestamp == ts
        assert msg.expiration in (60, 60.0, datetime.timedelta(seconds=60))
        assert await q.get(fail=False) is None


async def test_channel_errors(broker, uniq):
    conn = await _connect(broker)
    async with conn:
        ch = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await ch.declare_queue(uniq("missing"), passive=True)
        ch2 = await conn.channel()
        await ch2.declare_exchange(uniq("x"), aio_pika.ExchangeType.DIRECT)
        excl = await ch2.declare_queue(uniq("q"), exclusive=True)
        other = await _connect(broker)
        async with other:
            och = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource):
                await och.declare_queue(excl.name, passive=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await (await conn.channel()).declare_exchange("amq.nope", aio_pika.ExchangeType.FANOUT)
        assert not conn.is_closed


async def test_bad_password(broker):
    url = broker.url_for("guest", "not-the-password")
    with pytest.raises((aiormq.exceptions.ProbableAuthenticationError,
                        aiormq.exceptions.AuthenticationError,
                        aiormq.exceptions.ConnectionClosed)) as ei:
        await asyncio.wait_for(aio_pika.connect(url), WAIT)
    assert "ACCESS_REFUSED" in repr(ei.value) or "403" in repr(ei.value), repr(ei.value)


async def test_nack_requeue_and_reject(broker, uniq):
    conn = await _connect(broker)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(uniq("q"))
        for b in (b"1", b"2", b"3"):
            await ch.default_exchange.publish(aio_pika.Message(b), routing_key=q.name)
        m1 = await q.get(timeout=WAIT)
        m2 = await q.get(timeout=WAIT)
        await m2.nack(requeue=True)
        again = await q.get(timeout=WAIT)
        assert (again.body, again.redelivered) == (b"2", True)
        await m1.reject(requeue=False)
        await again.ack()
        last = await q.get(timeout=WAIT)
        assert (last.body, last.redelivered) == (b"3", False)
        await last.ack()
        assert await q.get(fail=False) is None
