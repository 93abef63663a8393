//! The `stream` subcommand: append and read throughput of a stream queue over AMQP 0-9-1, as
//! RabbitMQ users drive one (and as Tributary serves one): the queue is declared durable with
//! `x-queue-type: stream`; one producer appends `--records` persistent records with publisher
//! confirms (at most `--window` unconfirmed); then one consumer reads them back from
//! `x-stream-offset: first` with a prefetch (`basic.qos`) and manual acks (`multiple`, every
//! half prefetch), until it has seen as many records as were confirmed.

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use tokio::time::{Instant, timeout};

use crate::amqp::connect;

/// Arguments of the `stream` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct StreamArgs {
    /// Broker URI (vhost `/` is `%2f`).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Stream (queue) name; default: a fresh name.
    #[arg(long)]
    pub queue: Option<String>,
    /// Records to append.
    #[arg(long, short = 'n', default_value_t = 200_000)]
    pub records: u64,
    /// Record body size in bytes.
    #[arg(long, short = 's', default_value_t = 1024)]
    pub size: usize,
    /// Most unconfirmed publishes at a time.
    #[arg(long, default_value_t = 1000)]
    pub window: usize,
    /// Consumer prefetch (basic.qos; RabbitMQ requires one for stream consumers).
    #[arg(long, short = 'q', default_value_t = 1000)]
    pub prefetch: u16,
    /// Give up each phase (append, read) after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub phase_timeout: f64,
    /// Do not delete the stream at the end.
    #[arg(long)]
    pub no_cleanup: bool,
    /// Print the results also as one JSON line, last on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Declares the stream, appends, reads back; prints the rates.
pub async fn run(args: StreamArgs) -> anyhow::Result<()> {
    let queue = args.queue.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("perf-stream-{nanos}")
    });
    let phase = Duration::from_secs_f64(args.phase_timeout.max(1.0));
    let conn = connect(&args.uri, "tributary-perf stream").await?;
    let ch = conn.create_channel().await.context("channel.open")?;
    let mut declare_args = FieldTable::default();
    declare_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        declare_args,
    )
    .await
    .context("queue.declare x-queue-type=stream")?;

    // Append phase.
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .context("confirm.select")?;
    let body = vec![b'x'; args.size];
    let props = BasicProperties::default().with_delivery_mode(2);
    let started = Instant::now();
    let (mut confirmed, mut nacked) = (0u64, 0u64);
    let appended = timeout(phase, async {
        let mut inflight = FuturesUnordered::new();
        for _ in 0..args.records {
            if inflight.len() >= args.window.max(1)
                && let Some(r) = inflight.next().await
            {
                match r? {
                    Confirmation::Nack(_) => nacked += 1,
                    _ => confirmed += 1,
                }
            }
            let (ch, body, props, queue) = (ch.clone(), body.clone(), props.clone(), &queue);
            inflight.push(async move {
                ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await?
                .await
            });
        }
        while let Some(r) = inflight.next().await {
            match r? {
                Confirmation::Nack(_) => nacked += 1,
                _ => confirmed += 1,
            }
        }
        lapin::Result::Ok(())
    })
    .await;
    match appended {
        Ok(r) => r.context("basic.publish / confirm")?,
        Err(_) => bail!("append phase: not done within {phase:?} ({confirmed} confirmed)"),
    }
    let append_secs = started.elapsed().as_secs_f64();

    // Read phase: a second channel, from the first offset.
    let rch = conn.create_channel().await.context("channel.open")?;
    rch.basic_qos(args.prefetch, BasicQosOptions::default())
        .await
        .context("basic.qos")?;
    let mut consume_args = FieldTable::default();
    consume_args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let started = Instant::now();
    let mut consumer = rch
        .basic_consume(
            queue.as_str().into(),
            "perf-reader".into(),
            BasicConsumeOptions::default(),
            consume_args,
        )
        .await
        .context("basic.consume x-stream-offset=first")?;
    let ack_every = (usize::from(args.prefetch) / 2).max(1);
    let mut read = 0u64;
    let mut unacked = 0usize;
    let done = timeout(phase, async {
        while read < confirmed {
            let Some(delivery) = consumer.next().await else {
                bail!("the consumer was cancelled after {read} records");
            };
            let delivery = delivery.context("delivery")?;
            read += 1;
            unacked += 1;
            if unacked >= ack_every || read >= confirmed {
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .context("basic.ack")?;
                unacked = 0;
            }
        }
        anyhow::Ok(())
    })
    .await;
    match done {
        Ok(r) => r?,
        Err(_) => bail!("read phase: not done within {phase:?} ({read} of {confirmed} read)"),
    }
    let read_secs = started.elapsed().as_secs_f64();
    if !args.no_cleanup {
        let _ = timeout(
            Duration::from_secs(10),
            ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
        )
        .await;
    }
    let _ = timeout(Duration::from_secs(3), conn.close(200, "bye".into())).await;

    let mib = (confirmed as f64 * args.size as f64) / (1 << 20) as f64;
    let (a_rate, r_rate) = (confirmed as f64 / append_secs, read as f64 / read_secs);
    println!(
        "stream {queue}: appended {confirmed} x {} B in {append_secs:.2} s ({a_rate:.0} msg/s, {:.1} MiB/s, {nacked} nacked); read in {read_secs:.2} s ({r_rate:.0} msg/s, {:.1} MiB/s)",
        args.size,
        mib / append_secs,
        mib / read_secs
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "protocol": "amqp-stream",
                "records": confirmed,
                "nacked": nacked,
                "size": args.size,
                "append_msg_per_s": a_rate,
                "read_msg_per_s": r_rate,
            })
        );
    }
    Ok(())
}
