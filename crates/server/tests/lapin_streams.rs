//! A stream queue consumed with lapin (a second, independent AMQP client): declared with
//! `x-queue-type: stream`, filled with confirmed publishes, read from `x-stream-offset`
//! `first` and from a numeric offset, each delivery carrying its offset header.

mod common;

use std::future::Future;

use common::{Broker, STEP_TIMEOUT, unique};
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::*,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?} waiting for {what}"),
    }
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// Reads `n` deliveries from a consumer started at `offset`: (body, x-stream-offset).
async fn read(conn: &Connection, queue: &str, offset: AMQPValue, n: usize) -> Vec<(Vec<u8>, i64)> {
    let ch = within("channel", conn.create_channel())
        .await
        .expect("channel");
    within("qos", ch.basic_qos(10, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            table(&[("x-stream-offset", offset)]),
        ),
    )
    .await
    .expect("consume");
    let mut out = Vec::new();
    while out.len() < n {
        let d = within("delivery", consumer.next())
            .await
            .expect("a delivery")
            .expect("not an error");
        let offset = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        let offset = match offset {
            Some(AMQPValue::LongLongInt(o)) => o,
            other => panic!("x-stream-offset header: {other:?}"),
        };
        out.push((d.data.clone(), offset));
        within("ack", d.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_read_from_first_and_from_an_offset() {
    let broker = Broker::start();
    let conn = within(
        "connection",
        Connection::connect(&broker.uri(), ConnectionProperties::default()),
    )
    .await
    .expect("connect");
    let ch = within("channel", conn.create_channel())
        .await
        .expect("channel");
    let q = unique("stream");
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            table(&[(
                "x-queue-type",
                AMQPValue::LongString(LongString::from("stream")),
            )]),
        ),
    )
    .await
    .expect("declare a stream");
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm mode");
    for i in 0..30 {
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                format!("e{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await
        .expect("publish");
        assert!(within("confirm", confirm).await.expect("confirm").is_ack());
    }
    let all = read(
        &conn,
        &q,
        AMQPValue::LongString(LongString::from("first")),
        30,
    )
    .await;
    let want: Vec<(Vec<u8>, i64)> = (0..30)
        .map(|i| (format!("e{i}").into_bytes(), i as i64))
        .collect();
    assert_eq!(all, want);
    let tail = read(&conn, &q, AMQPValue::LongLongInt(25), 5).await;
    assert_eq!(tail, want[25..].to_vec());
}
