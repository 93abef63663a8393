//! The `amqp` subcommand: producers and consumers, throughput and end-to-end latency.
//!
//! Every message carries its send time in its first 8 bytes (little-endian nanoseconds since a
//! process-wide epoch), so latency is measured on one monotonic clock: producers and consumers
//! run in this process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind, PublisherConfirm,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::{AmqpArgs, Topology, secs};

static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch (monotonic).
fn now_nanos() -> u64 {
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Highest latency the histogram records (one hour, in nanoseconds); larger values saturate.
const HIST_MAX_NANOS: u64 = 3_600_000_000_000;

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, what: &str, err: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{what}: {err}"));
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Counts {
    sent: u64,
    confirmed: u64,
    nacked: u64,
    received: u64,
    errors: u64,
}

impl Stats {
    fn snapshot(&self) -> Counts {
        Counts {
            sent: self.sent.load(Relaxed),
            confirmed: self.confirmed.load(Relaxed),
            nacked: self.nacked.load(Relaxed),
            received: self.received.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

/// Opens a lapin connection named `name`, bounded by a timeout.
pub(crate) async fn connect(uri: &str, name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match timeout(CONNECT_TIMEOUT, Connection::connect(uri, props)).await {
        Ok(res) => res.with_context(|| format!("connecting to {uri}")),
        Err(_) => bail!("timed out connecting to {uri} after {CONNECT_TIMEOUT:?}"),
    }
}

/// Runs one RPC with a timeout, so that a broker that never answers cannot hang the run.
async fn rpc<T>(
    what: &str,
    fut: impl std::future::Future<Output = lapin::Result<T>>,
) -> anyhow::Result<T> {
    match timeout(RPC_TIMEOUT, fut).await {
        Ok(res) => res.with_context(|| what.to_owned()),
        Err(_) => bail!("{what}: no answer within {RPC_TIMEOUT:?}"),
    }
}

async fn close_quietly(conn: &Connection) {
    let _ = timeout(Duration::from_secs(3), conn.close(200, "bye".into())).await;
}

/// Deletes a queue or exchange left over by an earlier run, on a throwaway channel (a broker may
/// close the channel when the entity does not exist).
async fn delete_quietly(conn: &Connection, queue: Option<&str>, exchange: Option<&str>) {
    let Ok(Ok(ch)) = timeout(RPC_TIMEOUT, conn.create_channel()).await else {
        return;
    };
    if let Some(q) = queue {
        let _ = timeout(
            RPC_TIMEOUT,
            ch.queue_delete(q.into(), QueueDeleteOptions::default()),
        )
        .await;
    }
    if let Some(x) = exchange {
        let _ = timeout(
            RPC_TIMEOUT,
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default()),
        )
        .await;
    }
    let _ = timeout(Duration::from_secs(2), ch.close(200, "bye".into())).await;
}

struct Layout {
    exchange: String,
    routing_key: String,
    queues: Vec<String>,
}

fn layout(args: &AmqpArgs) -> Layout {
    match args.topology {
        Topology::Queue => Layout {
            exchange: String::new(),
            routing_key: args.queue.clone(),
            queues: vec![args.queue.clone()],
        },
        Topology::Fanout => Layout {
            exchange: format!("{}.fanout", args.queue),
            routing_key: String::new(),
            queues: (0..args.consumers.max(1))
                .map(|i| format!("{}.{i}", args.queue))
                .collect(),
        },
    }
}

async fn declare(conn: &Connection, args: &AmqpArgs, layout: &Layout) -> anyhow::Result<()> {
    for q in &layout.queues {
        delete_quietly(conn, Some(q), None).await;
    }
    if !layout.exchange.is_empty() {
        delete_quietly(conn, None, Some(&layout.exchange)).await;
    }
    let ch = rpc("channel.open", conn.create_channel()).await?;
    let durable = args.persistent;
    if !layout.exchange.is_empty() {
        rpc(
            "exchange.declare",
            ch.exchange_declare(
                layout.exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
    }
    for q in &layout.queues {
        rpc(
            "queue.declare",
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    durable,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        if !layout.exchange.is_empty() {
            rpc(
                "queue.bind",
                ch.queue_bind(
                    q.as_str().into(),
                    layout.exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
    }
    let _ = timeout(Duration::from_secs(2), ch.close(200, "bye".into())).await;
    Ok(())
}

async fn cleanup(conn: &Connection, layout: &Layout) {
    for q in &layout.queues {
        delete_quietly(conn, Some(q), None).await;
    }
    if !layout.exchange.is_empty() {
        delete_quietly(conn, None, Some(&layout.exchange)).await;
    }
}

#[derive(Clone)]
struct ProducerCfg {
    exchange: ShortString,
    routing_key: ShortString,
    size: usize,
    rate: f64,
    persistent: bool,
    confirm: Option<usize>,
    pipeline: usize,
    /// With `--count`: messages claimed so far by all producers, and the total.
    quota: Option<(Arc<AtomicU64>, u64)>,
}

type Published = lapin::Result<(PublisherConfirm, Option<OwnedSemaphorePermit>)>;

/// Publishes until `deadline`; returns when every publish has been written (bounded) and the
/// task that awaits confirms, if any, so that the caller can wait for the last confirms.
async fn produce(
    ch: Channel,
    cfg: ProducerCfg,
    stats: Arc<Stats>,
    start: Instant,
    deadline: Instant,
) -> Option<JoinHandle<()>> {
    let (confirm_tx, confirm_task) = match cfg.confirm {
        Some(_) => {
            let (tx, mut rx) =
                mpsc::unbounded_channel::<(PublisherConfirm, Option<OwnedSemaphorePermit>)>();
            let stats = stats.clone();
            let task = tokio::spawn(async move {
                while let Some((confirm, permit)) = rx.recv().await {
                    match confirm.await {
                        Ok(Confirmation::Ack(_)) => {
                            stats.confirmed.fetch_add(1, Relaxed);
                        }
                        Ok(Confirmation::Nack(_)) => {
                            stats.nacked.fetch_add(1, Relaxed);
                        }
                        Ok(Confirmation::NotRequested) => {}
                        Err(e) => stats.error("publisher confirm", e),
                    }
                    drop(permit);
                }
            });
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let window = cfg.confirm.map(|n| Arc::new(Semaphore::new(n.max(1))));
    let mut properties = BasicProperties::default();
    if cfg.persistent {
        properties = properties.with_delivery_mode(2);
    }
    let template = vec![0u8; cfg.size.max(8)];
    let mut inflight = FuturesUnordered::new();
    let mut failed = false;
    let mut n: u64 = 0;

    let handle = |res: Published, failed: &mut bool| match res {
        Ok((confirm, permit)) => {
            stats.sent.fetch_add(1, Relaxed);
            if let Some(tx) = &confirm_tx {
                let _ = tx.send((confirm, permit));
            }
        }
        Err(e) => {
            stats.error("basic.publish", e);
            *failed = true;
        }
    };

    'outer: while !failed {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if cfg.rate > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 / cfg.rate);
            if due > now {
                tokio::select! {
                    _ = sleep_until(due.min(deadline)) => {}
                    Some(res) = inflight.next() => handle(res, &mut failed),
                }
                continue;
            }
        }
        let permit = match &window {
            Some(sem) => tokio::select! {
                biased;
                Some(res) = inflight.next() => { handle(res, &mut failed); continue; }
                p = sem.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
                _ = sleep_until(deadline) => break,
            },
            None => None,
        };
        while inflight.len() >= cfg.pipeline.max(1) {
            tokio::select! {
                Some(res) = inflight.next() => handle(res, &mut failed),
                _ = sleep_until(deadline) => break 'outer,
            }
        }
        if let Some((claimed, total)) = &cfg.quota
            && claimed.fetch_add(1, Relaxed) >= *total
        {
            break;
        }
        let mut body = template.clone();
        body[..8].copy_from_slice(&now_nanos().to_le_bytes());
        let ch = ch.clone();
        let (exchange, routing_key) = (cfg.exchange.clone(), cfg.routing_key.clone());
        let props = properties.clone();
        inflight.push(async move {
            ch.basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .map(|confirm| (confirm, permit))
        });
        n += 1;
    }
    // Let the publishes already handed to the client finish being written.
    let _ = timeout(Duration::from_secs(5), async {
        while let Some(res) = inflight.next().await {
            handle(res, &mut failed);
        }
    })
    .await;
    drop(confirm_tx);
    confirm_task
}

struct ConsumerCfg {
    autoack: bool,
    ack_every: usize,
    warmup_until: u64,
}

async fn consume(
    mut consumer: Consumer,
    cfg: ConsumerCfg,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Histogram<u64> {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, HIST_MAX_NANOS, 3).expect("histogram bounds");
    let mut unacked = 0usize;
    let mut last: Option<Acker> = None;
    let flush = |last: &mut Option<Acker>, unacked: &mut usize| {
        let acker = last.take();
        *unacked = 0;
        async move {
            if let Some(acker) = acker {
                acker
                    .ack(lapin::options::BasicAckOptions { multiple: true })
                    .await?;
            }
            lapin::Result::Ok(())
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            next = timeout(Duration::from_millis(100), consumer.next()) => match next {
                Err(_) => {
                    if let Err(e) = flush(&mut last, &mut unacked).await {
                        stats.error("basic.ack", e);
                    }
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    stats.error("consumer", e);
                    break;
                }
                Ok(Some(Ok(delivery))) => {
                    let now = now_nanos();
                    if let Some(ts) = delivery.data.get(..8) {
                        let ts = u64::from_le_bytes(ts.try_into().unwrap_or_default());
                        if ts >= cfg.warmup_until {
                            hist.saturating_record(now.saturating_sub(ts).max(1));
                        }
                    }
                    stats.received.fetch_add(1, Relaxed);
                    if !cfg.autoack {
                        unacked += 1;
                        last = Some(delivery.acker);
                        if unacked >= cfg.ack_every
                            && let Err(e) = flush(&mut last, &mut unacked).await
                        {
                            stats.error("basic.ack", e);
                            break;
                        }
                    }
                }
            }
        }
    }
    if let Ok(Err(e)) = timeout(Duration::from_secs(2), flush(&mut last, &mut unacked)).await {
        stats.error("basic.ack", e);
    }
    hist
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// The `amqp` subcommand; returns the exit code (0: no errors and something was sent).
pub(crate) async fn run(args: AmqpArgs) -> anyhow::Result<i32> {
    now_nanos(); // fix the epoch
    let layout = layout(&args);
    let stats = Arc::new(Stats::default());

    let setup = connect(&args.uri, "tributary-perf setup").await?;
    declare(&setup, &args, &layout).await?;

    // Consumers first, so that nothing published is dropped or queued before they attach.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumer_conns = Vec::new();
    let mut consumers = Vec::new();
    let ack_every = if args.prefetch == 0 {
        args.multi_ack_every.max(1)
    } else {
        args.multi_ack_every
            .clamp(1, (usize::from(args.prefetch) / 2).max(1))
    };
    let warmup_until = now_nanos() + secs(args.warmup).as_nanos() as u64;
    for i in 0..args.consumers {
        let queue = match args.topology {
            Topology::Queue => &layout.queues[0],
            Topology::Fanout => &layout.queues[i],
        };
        let conn = connect(&args.uri, &format!("tributary-perf consumer {i}")).await?;
        let ch = rpc("channel.open", conn.create_channel()).await?;
        if !args.autoack && args.prefetch > 0 {
            rpc(
                "basic.qos",
                ch.basic_qos(args.prefetch, BasicQosOptions::default()),
            )
            .await?;
        }
        let consumer = rpc(
            "basic.consume",
            ch.basic_consume(
                queue.as_str().into(),
                format!("tributary-perf-{i}").into(),
                BasicConsumeOptions {
                    no_ack: args.autoack,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        let cfg = ConsumerCfg {
            autoack: args.autoack,
            ack_every,
            warmup_until,
        };
        consumers.push(tokio::spawn(consume(
            consumer,
            cfg,
            stats.clone(),
            stop_rx.clone(),
        )));
        consumer_conns.push((conn, ch));
    }

    let mut producer_conns = Vec::new();
    for i in 0..args.producers {
        let conn = connect(&args.uri, &format!("tributary-perf producer {i}")).await?;
        let ch = rpc("channel.open", conn.create_channel()).await?;
        if args.confirm.is_some() {
            rpc(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        }
        producer_conns.push((conn, ch));
    }

    let cfg = ProducerCfg {
        exchange: layout.exchange.as_str().into(),
        routing_key: layout.routing_key.as_str().into(),
        size: args.size,
        rate: args.rate,
        persistent: args.persistent,
        confirm: args.confirm,
        pipeline: args.pipeline,
        quota: args.count.map(|n| (Arc::new(AtomicU64::new(0)), n)),
    };
    if args.size < 8 {
        eprintln!(
            "note: --size {} is below 8; sending 8-byte bodies",
            args.size
        );
    }
    let start = Instant::now();
    let deadline = start + secs(args.duration);
    let producers: Vec<_> = producer_conns
        .iter()
        .map(|(_, ch)| {
            tokio::spawn(produce(
                ch.clone(),
                cfg.clone(),
                stats.clone(),
                start,
                deadline,
            ))
        })
        .collect();

    // Progress, once a second, until the consumers are told to stop.
    let progress_done = Arc::new(AtomicBool::new(false));
    let progress = {
        let stats = stats.clone();
        let done = progress_done.clone();
        let quiet = args.quiet;
        tokio::spawn(async move {
            let mut prev = stats.snapshot();
            let mut tick = start;
            loop {
                tick += Duration::from_secs(1);
                sleep_until(tick).await;
                if done.load(Relaxed) {
                    break;
                }
                let now = stats.snapshot();
                if !quiet {
                    eprintln!(
                        "time {:>4.0}s, sent {} msg/s, received {} msg/s, confirmed {} msg/s{}",
                        (tick - start).as_secs_f64(),
                        now.sent - prev.sent,
                        now.received - prev.received,
                        now.confirmed - prev.confirmed,
                        if now.errors > prev.errors {
                            format!(", errors {}", now.errors - prev.errors)
                        } else {
                            String::new()
                        }
                    );
                }
                prev = now;
            }
        })
    };

    match args.count {
        // Until the last message is confirmed (or sent), an error, or the deadline.
        Some(total) => loop {
            let now = stats.snapshot();
            let done = if args.confirm.is_some() {
                now.confirmed + now.nacked
            } else {
                now.sent
            };
            if done >= total || now.errors > 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        },
        None => sleep_until(deadline).await,
    }
    let window = start.elapsed().as_secs_f64();
    let at_deadline = stats.snapshot();

    // Drain: the last publishes, their confirms, and the consumers catching up, all bounded.
    let drain_deadline = Instant::now() + secs(args.drain_timeout);
    let mut confirm_tasks = Vec::new();
    for p in producers {
        match timeout(drain_deadline.saturating_duration_since(Instant::now()), p).await {
            Ok(Ok(Some(task))) => confirm_tasks.push(task),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => stats.error("producer task", e),
            Err(_) => stats.error("producer", "did not stop by the drain timeout"),
        }
    }
    for t in confirm_tasks {
        if timeout(drain_deadline.saturating_duration_since(Instant::now()), t)
            .await
            .is_err()
        {
            stats.error(
                "publisher confirms",
                "still outstanding at the drain timeout",
            );
        }
    }
    let fanout = match args.topology {
        Topology::Queue => 1,
        Topology::Fanout => args.consumers as u64,
    };
    let drained = loop {
        let expected = stats.sent.load(Relaxed) * fanout;
        if args.consumers == 0 || stats.received.load(Relaxed) >= expected {
            break true;
        }
        if Instant::now() >= drain_deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let total_elapsed = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    progress_done.store(true, Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, HIST_MAX_NANOS, 3)?;
    for c in consumers {
        match timeout(Duration::from_secs(5), c).await {
            Ok(Ok(h)) => hist.add(&h)?,
            Ok(Err(e)) => stats.error("consumer task", e),
            Err(_) => stats.error("consumer", "did not stop"),
        }
    }
    progress.abort();
    let end = stats.snapshot();

    if !args.no_cleanup {
        cleanup(&setup, &layout).await;
    }
    for (conn, _) in producer_conns.iter().chain(consumer_conns.iter()) {
        close_quietly(conn).await;
    }
    close_quietly(&setup).await;

    let not_drained = if drained {
        0
    } else {
        (end.sent * fanout).saturating_sub(end.received)
    };
    let first_error = stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let pct = |q: f64| {
        if hist.is_empty() {
            0.0
        } else {
            hist.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let (p50, p75, p95, p99) = (pct(0.50), pct(0.75), pct(0.95), pct(0.99));
    let max = if hist.is_empty() {
        0.0
    } else {
        hist.max() as f64 / 1000.0
    };
    let mean = if hist.is_empty() {
        0.0
    } else {
        hist.mean() / 1000.0
    };

    println!(
        "summary: topology {}, producers {}, consumers {}, size {} B{}{}{}{}, duration {:.1}s",
        args.topology.name(),
        args.producers,
        args.consumers,
        args.size.max(8),
        if args.persistent { ", persistent" } else { "" },
        match args.confirm {
            Some(n) => format!(", confirm {n}"),
            None => String::new(),
        },
        if args.rate > 0.0 {
            format!(", rate {}/s per producer", args.rate)
        } else {
            String::new()
        },
        match args.count {
            Some(n) => format!(", count {n}"),
            None => String::new(),
        },
        window
    );
    println!(
        "sent {} msg/s ({} msgs), received {} msg/s ({} msgs in the window, {} in all), confirmed {} msg/s ({} msgs, {} nacked)",
        rate(at_deadline.sent, window).round(),
        end.sent,
        rate(at_deadline.received, window).round(),
        at_deadline.received,
        end.received,
        rate(at_deadline.confirmed, window).round(),
        end.confirmed,
        end.nacked
    );
    println!(
        "latency µs: p50 {p50:.0}, p75 {p75:.0}, p95 {p95:.0}, p99 {p99:.0}, max {max:.0} (mean {mean:.0}, {} samples)",
        hist.len()
    );
    println!(
        "errors {}{}{}",
        end.errors,
        if drained {
            String::new()
        } else {
            format!(", {not_drained} messages not received by the drain timeout")
        },
        match &first_error {
            Some(e) => format!(" (first: {e})"),
            None => String::new(),
        }
    );
    if args.json {
        let json = serde_json::json!({
            "topology": args.topology.name(),
            "producers": args.producers,
            "consumers": args.consumers,
            "size": args.size.max(8),
            "persistent": args.persistent,
            "confirm": args.confirm,
            "rate": args.rate,
            "count": args.count,
            "prefetch": args.prefetch,
            "autoack": args.autoack,
            "duration_s": window,
            "elapsed_s": total_elapsed,
            "sent": end.sent,
            "received": end.received,
            "confirmed": end.confirmed,
            "nacked": end.nacked,
            "sent_rate": rate(at_deadline.sent, window),
            "received_rate": rate(at_deadline.received, window),
            "confirmed_rate": rate(at_deadline.confirmed, window),
            "latency_samples": hist.len(),
            "latency_mean_us": mean,
            "latency_p50_us": p50,
            "latency_p75_us": p75,
            "latency_p95_us": p95,
            "latency_p99_us": p99,
            "latency_max_us": max,
            "drained": drained,
            "not_drained": not_drained,
            "errors": end.errors,
            "first_error": first_error,
        });
        println!("{json}");
    }
    let ok = end.errors == 0 && (args.producers == 0 || end.sent > 0);
    Ok(if ok { 0 } else { 1 })
}
