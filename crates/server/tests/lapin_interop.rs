//! Interop tests with lapin, a third-party Rust AMQP 0-9-1 client.
//!
//! Each test starts its own broker (see `common`), or uses the RabbitMQ named by
//! `TRIBUTARY_TEST_TARGET=rabbitmq:HOST:PORT`. Every await is bounded by [`common::STEP_TIMEOUT`].

mod common;

use std::future::Future;

use common::{Broker, STEP_TIMEOUT, unique};
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind,
    message::Delivery,
    options::*,
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString},
};

/// Await `fut`, failing the test if it takes longer than [`STEP_TIMEOUT`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?} waiting for {what}"),
    }
}

async fn connect(broker: &Broker) -> Connection {
    within(
        "connection",
        Connection::connect(&broker.uri(), ConnectionProperties::default()),
    )
    .await
    .expect("connect as guest")
}

async fn channel(conn: &Connection) -> Channel {
    within("channel.open", conn.create_channel())
        .await
        .expect("open channel")
}

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// Declare an exclusive server-named queue.
async fn temp_queue(ch: &Channel) -> String {
    let q = within(
        "queue.declare",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare server-named queue");
    let name = q.name().as_str().to_string();
    assert!(!name.is_empty(), "server generated a queue name");
    name
}

/// Passive declare: (ready message count, consumer count).
async fn counts(ch: &Channel, queue: &str) -> (u32, u32) {
    let q = within(
        "passive queue.declare",
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare");
    (q.message_count(), q.consumer_count())
}

/// Publish on a confirm channel and assert the broker acked it.
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .expect("publish");
    let confirmation = within("publisher confirm", confirm).await.expect("confirm");
    assert!(confirmation.is_ack(), "publish acked: {confirmation:?}");
}

async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<lapin::message::BasicGetMessage> {
    within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions { no_ack }),
    )
    .await
    .expect("basic.get")
}

async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
    within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume")
}

async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("consumer stream ended unexpectedly")
        .expect("delivery error")
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_opens_channels_and_closes_cleanly() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    assert!(conn.status().connected());
    let ch1 = channel(&conn).await;
    let ch2 = channel(&conn).await;
    assert_ne!(ch1.id(), ch2.id());
    within("channel.close", ch1.close(200, "bye".into()))
        .await
        .expect("channel close");
    // The other channel still works.
    temp_queue(&ch2).await;
    within("connection.close", conn.close(200, "bye".into()))
        .await
        .expect("connection close");
    assert!(!conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    let broker = Broker::start();
    let res = within(
        "refused connection",
        Connection::connect(
            &broker.uri_as("guest", "definitely-wrong"),
            ConnectionProperties::default(),
        ),
    )
    .await;
    let err = res.expect_err("login with a wrong password must fail");
    assert_eq!(
        reply_code(&err),
        Some(403),
        "ACCESS_REFUSED expected, got {err:?}"
    );
    // A correct login still works afterwards.
    let conn = connect(&broker).await;
    channel(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_exchange_queue_and_bind_then_route() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("lapin-topic");
    within(
        "exchange.declare",
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            // Not auto-delete: it would vanish with its last binding below.
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare topic exchange");
    // Passive declare of the same exchange succeeds.
    within(
        "passive exchange.declare",
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare existing exchange");

    let q = temp_queue(&ch).await;
    within(
        "queue.bind",
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "sensors.*.temp".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("bind");

    publish_confirmed(
        &ch,
        &x,
        "sensors.kitchen.temp",
        b"21.5",
        BasicProperties::default(),
    )
    .await;
    publish_confirmed(
        &ch,
        &x,
        "sensors.kitchen.humidity",
        b"40",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(counts(&ch, &q).await, (1, 0));
    let m = get(&ch, &q, true).await.expect("routed message");
    assert_eq!(m.delivery.data, b"21.5");
    assert_eq!(m.delivery.exchange.as_str(), x);
    assert_eq!(m.delivery.routing_key.as_str(), "sensors.kitchen.temp");

    within(
        "queue.unbind",
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "sensors.*.temp".into(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("unbind");
    publish_confirmed(
        &ch,
        &x,
        "sensors.kitchen.temp",
        b"22",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(counts(&ch, &q).await, (0, 0));

    within(
        "exchange.delete",
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()),
    )
    .await
    .expect("delete exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_ack_every_publish() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    assert!(ch.status().confirm());
    let q = temp_queue(&ch).await;
    let n = 200;
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let c = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await
        .expect("publish");
        confirms.push(c);
    }
    for (i, c) in confirms.into_iter().enumerate() {
        let confirmation = within("publisher confirm", c).await.expect("confirm");
        assert!(
            confirmation.is_ack(),
            "publish {i} acked, got {confirmation:?}"
        );
        assert!(confirmation.take_message().is_none());
    }
    let returned = within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .expect("wait_for_confirms");
    assert!(returned.is_empty());
    assert_eq!(counts(&ch, &q).await, (n as u32, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_prefetch_and_ack() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let publisher = confirm_channel(&conn).await;
    let q = temp_queue(&publisher).await;
    for i in 1..=5 {
        publish_confirmed(
            &publisher,
            "",
            &q,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }

    let ch = channel(&conn).await;
    within("basic.qos", ch.basic_qos(2, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut consumer = consume(&ch, &q, false).await;
    assert!(
        !consumer.tag().as_str().is_empty(),
        "server-generated consumer tag"
    );
    let d1 = next_delivery(&mut consumer).await;
    let d2 = next_delivery(&mut consumer).await;
    assert_eq!((body(&d1), body(&d2)), ("m1".into(), "m2".into()));
    assert!(!d1.redelivered);
    // Held back by prefetch: three still ready.
    assert_eq!(counts(&publisher, &q).await, (3, 1));

    within("ack", d1.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    let d3 = next_delivery(&mut consumer).await;
    assert_eq!(body(&d3), "m3");
    assert_eq!(counts(&publisher, &q).await, (2, 1));

    // One multiple ack covers m2 and m3.
    within(
        "ack multiple",
        d3.acker.ack(BasicAckOptions { multiple: true }),
    )
    .await
    .expect("ack multiple");
    let d4 = next_delivery(&mut consumer).await;
    let d5 = next_delivery(&mut consumer).await;
    assert_eq!((body(&d4), body(&d5)), ("m4".into(), "m5".into()));
    within("ack", d4.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    within("ack", d5.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    assert_eq!(counts(&ch, &q).await, (0, 1));

    within(
        "basic.cancel",
        ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel");
    assert_eq!(counts(&ch, &q).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_redelivers() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let publisher = confirm_channel(&conn).await;
    let q = temp_queue(&publisher).await;
    publish_confirmed(&publisher, "", &q, b"again", BasicProperties::default()).await;

    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    let first = next_delivery(&mut consumer).await;
    assert_eq!(body(&first), "again");
    assert!(!first.redelivered);
    within(
        "nack",
        first.acker.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .expect("nack");
    let second = next_delivery(&mut consumer).await;
    assert_eq!(body(&second), "again");
    assert!(second.redelivered, "requeued message is marked redelivered");
    assert_ne!(second.delivery_tag, first.delivery_tag);

    // reject with requeue: redelivered again; reject without requeue: gone.
    within(
        "reject",
        second.acker.reject(BasicRejectOptions { requeue: true }),
    )
    .await
    .expect("reject");
    let third = next_delivery(&mut consumer).await;
    assert!(third.redelivered);
    within(
        "reject",
        third.acker.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("reject");
    assert_eq!(counts(&ch, &q).await, (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_counts_and_empty() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = temp_queue(&ch).await;
    assert!(
        get(&ch, &q, false).await.is_none(),
        "empty queue gives get-empty"
    );
    for b in ["a", "b", "c"] {
        publish_confirmed(&ch, "", &q, b.as_bytes(), BasicProperties::default()).await;
    }
    let a = get(&ch, &q, false).await.expect("a");
    assert_eq!(a.delivery.data, b"a");
    assert_eq!(a.message_count, 2);
    assert!(!a.delivery.redelivered);
    assert_eq!(a.delivery.exchange.as_str(), "");
    assert_eq!(a.delivery.routing_key.as_str(), q);
    let b = get(&ch, &q, false).await.expect("b");
    assert_eq!(b.message_count, 1);
    assert!(b.delivery.delivery_tag > a.delivery.delivery_tag);

    // nack(b, multiple, requeue) puts a and b back, in order, ahead of c.
    within(
        "nack multiple",
        b.delivery.acker.nack(BasicNackOptions {
            multiple: true,
            requeue: true,
        }),
    )
    .await
    .expect("nack");
    let a2 = get(&ch, &q, false).await.expect("a again");
    let b2 = get(&ch, &q, false).await.expect("b again");
    let c = get(&ch, &q, false).await.expect("c");
    assert_eq!(
        [&a2, &b2, &c].map(|m| (m.delivery.data.clone(), m.delivery.redelivered)),
        [
            (b"a".to_vec(), true),
            (b"b".to_vec(), true),
            (b"c".to_vec(), false)
        ]
    );
    assert_eq!(c.message_count, 0);
    within(
        "ack multiple",
        c.delivery.acker.ack(BasicAckOptions { multiple: true }),
    )
    .await
    .expect("ack");
    assert!(get(&ch, &q, true).await.is_none());
    assert_eq!(counts(&ch, &q).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_with_312() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let key = unique("no-such-queue");
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"bounce",
            BasicProperties::default().with_message_id("r-1".into()),
        ),
    )
    .await
    .expect("publish");
    let confirmation = within("publisher confirm", confirm).await.expect("confirm");
    assert!(
        confirmation.is_ack(),
        "an unroutable message is still acked: {confirmation:?}"
    );
    let returned = confirmation
        .take_message()
        .expect("the mandatory unroutable message comes back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "");
    assert_eq!(returned.delivery.routing_key.as_str(), key);
    assert_eq!(returned.delivery.data, b"bounce");
    assert_eq!(
        returned
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("r-1")
    );
    assert_eq!(
        returned.error().map(|e| e.kind().clone()),
        Some(AMQPErrorKind::Soft(AMQPSoftError::NOROUTE))
    );

    // A routable mandatory message is not returned.
    let q = temp_queue(&ch).await;
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"fine",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("publish");
    let confirmation = within("publisher confirm", confirm).await.expect("confirm");
    assert!(confirmation.is_ack());
    assert!(confirmation.take_message().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_404_leaves_the_connection_usable() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let bystander = channel(&conn).await;
    let q = temp_queue(&bystander).await;

    let ch = channel(&conn).await;
    let err = within(
        "passive declare of a missing queue",
        ch.queue_declare(
            unique("missing").as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect_err("passive declare of a missing queue must fail");
    assert_eq!(
        reply_code(&err),
        Some(404),
        "NOT_FOUND expected, got {err:?}"
    );
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => {
            assert_eq!(e.kind(), &AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(!ch.status().connected(), "the failed channel is closed");

    // The connection and the other channel are fine.
    assert!(conn.status().connected());
    assert_eq!(counts(&bystander, &q).await, (0, 0));
    let fresh = channel(&conn).await;
    assert_eq!(counts(&fresh, &q).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_queue_ends_the_consumer_stream() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = unique("lapin-deleted");
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    let mut consumer = consume(&ch, &q, true).await;

    let other = channel(&conn).await;
    let removed = within(
        "queue.delete",
        other.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    assert_eq!(removed, 0);

    let end = within(
        "the consumer stream to end (server basic.cancel)",
        consumer.next(),
    )
    .await;
    assert!(
        end.is_none(),
        "consumer stream ends after server cancel, got {end:?}"
    );
    // The channel survives the cancel.
    assert!(ch.status().connected());
    temp_queue(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_round_trip() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = temp_queue(&ch).await;

    let mut nested = FieldTable::default();
    nested.insert(
        "deep".into(),
        AMQPValue::LongString(LongString::from("yes")),
    );
    nested.insert(
        "list".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::Boolean(true),
        ])),
    );
    let mut headers = FieldTable::default();
    headers.insert("str".into(), AMQPValue::LongString("plain".into()));
    headers.insert(
        "unicode".into(),
        AMQPValue::LongString("héllo ✓ 日本".into()),
    );
    headers.insert("bool".into(), AMQPValue::Boolean(true));
    headers.insert("i8".into(), AMQPValue::ShortShortInt(-5));
    headers.insert("i16".into(), AMQPValue::ShortInt(-1000));
    headers.insert("i32".into(), AMQPValue::LongInt(-70000));
    headers.insert("i64".into(), AMQPValue::LongLongInt(1 << 40));
    headers.insert("f64".into(), AMQPValue::Double(2.25));
    headers.insert(
        "dec".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    headers.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 254, 255])),
    );
    headers.insert("void".into(), AMQPValue::Void);
    headers.insert("nested".into(), AMQPValue::FieldTable(nested));
    headers.insert("empty".into(), AMQPValue::FieldTable(FieldTable::default()));
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString("a".into()),
            AMQPValue::FieldArray(FieldArray::default()),
        ])),
    );

    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("identity".into())
        .with_headers(headers.clone())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to(ShortString::from("replies"))
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("lapin-interop".into());

    let payload = br#"{"hello":"world"}"#;
    publish_confirmed(&ch, "", &q, payload, props.clone()).await;
    publish_confirmed(&ch, "", &q, b"bare", BasicProperties::default()).await;

    let m = get(&ch, &q, true).await.expect("message with properties");
    assert_eq!(m.delivery.data, payload);
    assert_eq!(m.delivery.properties.headers(), &Some(headers.clone()));
    assert_eq!(m.delivery.properties, props);
    let bare = get(&ch, &q, true).await.expect("bare message");
    assert_eq!(bare.delivery.data, b"bare");
    assert_eq!(bare.delivery.properties, BasicProperties::default());

    // The same through a consumer.
    publish_confirmed(&ch, "", &q, payload, props.clone()).await;
    let mut consumer = consume(&ch, &q, true).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, props);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_body_round_trips() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = temp_queue(&ch).await;
    // Deterministic, non-repeating-looking content (xorshift), 1 MiB.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    publish_confirmed(&ch, "", &q, &big, BasicProperties::default()).await;
    let m = get(&ch, &q, true).await.expect("1 MiB message via get");
    assert_eq!(m.delivery.data.len(), big.len());
    assert!(m.delivery.data == big, "1 MiB body intact via basic.get");

    publish_confirmed(&ch, "", &q, &big, BasicProperties::default()).await;
    let mut consumer = consume(&ch, &q, true).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data.len(), big.len());
    assert!(d.data == big, "1 MiB body intact via basic.deliver");
}
