//! The `mqtt` subcommand: publishers and subscribers over MQTT 3.1.1 or 5.0, built on the
//! rumqttc client library; throughput and end-to-end latency.
//!
//! Every payload carries its send time in its first 8 bytes (little-endian nanoseconds since a
//! process-wide epoch), so latency is measured on one monotonic clock. Topic layouts:
//! `single` (every publisher on one topic, every subscriber on it: 1→1, N→1, 1→M),
//! `pairs` (publisher i → topic i → subscriber i) and `wildcard` (publisher i on topic
//! `…/i`, every subscriber on `…/+`: fan-in as emqtt-bench does it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rumqttc::v5;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::common::{self, Latency, Stats, now_nanos, rate};
use crate::{MqttArgs, MqttTopology, MqttVersion, secs};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A connected client of either protocol version (the request side).
#[derive(Clone)]
pub(crate) enum Client {
    /// MQTT 3.1.1.
    V3(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The event loop of a client (the socket side); it must be polled for anything to happen.
pub(crate) enum Loop {
    /// MQTT 3.1.1.
    V3(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<v5::EventLoop>),
}

/// What the event loops report, reduced to what the benchmark needs.
pub(crate) enum Ev {
    /// CONNACK (a refusal is an error of `poll`).
    ConnAck,
    /// A message delivered to this client.
    Publish(Bytes),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) for one of this client's publishes.
    Ack,
    /// SUBACK: true if every filter was granted.
    SubAck(bool),
    /// One of this client's publishes was written to the socket.
    Sent,
    /// Anything else (PINGRESP, outgoing acks, ...).
    Other,
}

fn qos3(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> v5::mqttbytes::QoS {
    match q {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    async fn publish(&self, topic: &str, qos: u8, payload: Bytes) -> anyhow::Result<()> {
        match self {
            Client::V3(c) => c.publish_bytes(topic, qos3(qos), false, payload).await?,
            Client::V5(c) => c.publish(topic, qos5(qos), false, payload).await?,
        }
        Ok(())
    }

    async fn subscribe(&self, filter: &str, qos: u8) -> anyhow::Result<()> {
        match self {
            Client::V3(c) => c.subscribe(filter, qos3(qos)).await?,
            Client::V5(c) => c.subscribe(filter, qos5(qos)).await?,
        }
        Ok(())
    }

    /// Queues a DISCONNECT (errors ignored: the connection may be gone already).
    pub(crate) async fn disconnect(&self) {
        let _ = match self {
            Client::V3(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

impl Loop {
    /// Drives the connection until the next event; `qos` says which acks confirm a publish.
    pub(crate) async fn poll(&mut self, qos: u8) -> Result<Ev, String> {
        match self {
            Loop::V3(l) => {
                use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish(p.payload),
                    Event::Incoming(Packet::PubAck(_)) if qos == 1 => Ev::Ack,
                    Event::Incoming(Packet::PubComp(_)) if qos == 2 => Ev::Ack,
                    Event::Incoming(Packet::SubAck(s)) => Ev::SubAck(
                        s.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    ),
                    Event::Outgoing(Outgoing::Publish(_)) => Ev::Sent,
                    _ => Ev::Other,
                })
            }
            Loop::V5(l) => {
                use rumqttc::Outgoing;
                use v5::Event;
                use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish(p.payload),
                    Event::Incoming(Packet::PubAck(_)) if qos == 1 => Ev::Ack,
                    Event::Incoming(Packet::PubComp(_)) if qos == 2 => Ev::Ack,
                    Event::Incoming(Packet::SubAck(s)) => Ev::SubAck(
                        s.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    ),
                    Event::Outgoing(Outgoing::Publish(_)) => Ev::Sent,
                    _ => Ev::Other,
                })
            }
        }
    }
}

/// Nagle's algorithm off, as the brokers under test set it on their side (rumqttc leaves it on).
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    n
}

/// Opens one connection and waits for its CONNACK (a refusal is an error).
pub(crate) async fn connect(
    args: &MqttConnect,
    client_id: &str,
    channel_capacity: usize,
) -> anyhow::Result<(Client, Loop)> {
    let keep_alive = Duration::from_secs(args.keep_alive.max(5));
    let max_packet = (args.max_packet).max(1024);
    let (client, mut ev) = match args.version {
        MqttVersion::V311 => {
            let mut o = rumqttc::MqttOptions::new(client_id, &args.host, args.port);
            o.set_keep_alive(keep_alive)
                .set_clean_session(true)
                .set_inflight(args.inflight.max(1))
                .set_max_packet_size(max_packet, max_packet);
            if let Some(user) = &args.username {
                o.set_credentials(user, args.password.clone().unwrap_or_default());
            }
            let (c, mut l) = rumqttc::AsyncClient::new(o, channel_capacity.max(1));
            l.set_network_options(network_options());
            (Client::V3(c), Loop::V3(Box::new(l)))
        }
        MqttVersion::V5 => {
            let mut o = v5::MqttOptions::new(client_id, &args.host, args.port);
            o.set_keep_alive(keep_alive)
                .set_clean_start(true)
                .set_outgoing_inflight_upper_limit(args.inflight.max(1))
                .set_max_packet_size(Some(max_packet as u32));
            if let Some(user) = &args.username {
                o.set_credentials(user, args.password.clone().unwrap_or_default());
            }
            o.set_network_options(network_options());
            let (c, l) = v5::AsyncClient::new(o, channel_capacity.max(1));
            (Client::V5(c), Loop::V5(Box::new(l)))
        }
    };
    let addr = format!("{}:{}", args.host, args.port);
    let connack = timeout(CONNECT_TIMEOUT, async {
        loop {
            match ev.poll(0).await {
                Ok(Ev::ConnAck) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(anyhow!(e)),
            }
        }
    })
    .await;
    match connack {
        Ok(Ok(())) => Ok((client, ev)),
        Ok(Err(e)) => Err(e).with_context(|| format!("connecting to {addr} as {client_id}")),
        Err(_) => bail!("no CONNACK from {addr} within {CONNECT_TIMEOUT:?}"),
    }
}

/// Connection settings shared by the `mqtt` and `idle --protocol mqtt` subcommands.
pub(crate) struct MqttConnect {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name, if any (else anonymous).
    pub username: Option<String>,
    /// Password, with `username`.
    pub password: Option<String>,
    /// Protocol version.
    pub version: MqttVersion,
    /// Keep alive, in seconds.
    pub keep_alive: u64,
    /// Most unacknowledged QoS 1/2 publishes.
    pub inflight: u16,
    /// Largest packet sent or accepted, in bytes.
    pub max_packet: usize,
}

/// Subscribes and waits for the SUBACK; deliveries that arrive first are an error.
async fn subscribe(client: &Client, ev: &mut Loop, filter: &str, qos: u8) -> anyhow::Result<()> {
    client.subscribe(filter, qos).await?;
    let res = timeout(CONNECT_TIMEOUT, async {
        loop {
            match ev.poll(qos).await {
                Ok(Ev::SubAck(true)) => return Ok(()),
                Ok(Ev::SubAck(false)) => bail!("the broker refused the subscription to {filter}"),
                Ok(_) => continue,
                Err(e) => bail!("while subscribing to {filter}: {e}"),
            }
        }
    })
    .await;
    match res {
        Ok(r) => r,
        Err(_) => bail!("no SUBACK for {filter} within {CONNECT_TIMEOUT:?}"),
    }
}

/// Drives a subscriber's event loop until told to stop: counts deliveries, records latency.
async fn subscriber(
    mut ev: Loop,
    qos: u8,
    warmup_until: u64,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> (Histogram<u64>, Loop) {
    let mut hist = common::histogram();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            e = ev.poll(qos) => match e {
                Ok(Ev::Publish(payload)) => {
                    common::record_latency(&mut hist, &payload, warmup_until);
                    stats.received.fetch_add(1, Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    stats.error("subscriber connection", e);
                    break;
                }
            }
        }
    }
    (hist, ev)
}

/// Drives a publisher's event loop until told to stop: counts publishes written and acks.
async fn publisher_loop(
    mut ev: Loop,
    qos: u8,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Loop {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            e = ev.poll(qos) => match e {
                Ok(Ev::Sent) => { stats.sent.fetch_add(1, Relaxed); }
                Ok(Ev::Ack) => { stats.confirmed.fetch_add(1, Relaxed); }
                Ok(_) => {}
                Err(e) => {
                    stats.error("publisher connection", e);
                    break;
                }
            }
        }
    }
    ev
}

struct PublishCfg {
    topic: String,
    qos: u8,
    size: usize,
    rate: f64,
    /// Publishes handed to the client library, over all publishers.
    requested: Arc<AtomicU64>,
}

/// Hands publishes to the client until `deadline` (paced by `rate` if set).
async fn publish(
    client: Client,
    cfg: PublishCfg,
    stats: Arc<Stats>,
    start: Instant,
    deadline: Instant,
) {
    let mut template = vec![0u8; cfg.size.max(8)];
    let mut n: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if cfg.rate > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 / cfg.rate);
            if due > now {
                sleep_until(due.min(deadline)).await;
                continue;
            }
        }
        template[..8].copy_from_slice(&now_nanos().to_le_bytes());
        let payload = Bytes::copy_from_slice(&template);
        tokio::select! {
            r = client.publish(&cfg.topic, cfg.qos, payload) => match r {
                Ok(()) => { cfg.requested.fetch_add(1, Relaxed); }
                Err(e) => {
                    stats.error("publish", e);
                    break;
                }
            },
            _ = sleep_until(deadline) => break,
        }
        n += 1;
    }
}

fn topics(args: &MqttArgs, run: &str) -> (Vec<String>, Vec<String>) {
    let base = format!("{}/{run}", args.topic);
    match args.topology {
        MqttTopology::Single => (
            vec![base.clone(); args.publishers],
            vec![base; args.subscribers],
        ),
        MqttTopology::Pairs => {
            let t: Vec<String> = (0..args.publishers)
                .map(|i| format!("{base}/{i}"))
                .collect();
            (t.clone(), t)
        }
        MqttTopology::Wildcard => (
            (0..args.publishers)
                .map(|i| format!("{base}/{i}"))
                .collect(),
            vec![format!("{base}/+"); args.subscribers],
        ),
    }
}

/// The `mqtt` subcommand; returns the exit code (0: no errors and something was sent).
pub(crate) async fn run(args: MqttArgs) -> anyhow::Result<i32> {
    now_nanos(); // fix the epoch
    let run = common::run_id();
    let (pub_topics, sub_filters) = topics(&args, &run);
    let stats = Arc::new(Stats::default());
    let conn = MqttConnect {
        host: args.host.clone(),
        port: args.port,
        username: args.username.clone(),
        password: args.password.clone(),
        version: args.protocol,
        keep_alive: args.keep_alive,
        inflight: args.inflight,
        max_packet: args.size.max(8) + 1024,
    };

    // Subscribers first, so that nothing published is missed.
    let (stop_tx, stop_rx) = watch::channel(false);
    let warmup_until = now_nanos() + secs(args.warmup).as_nanos() as u64;
    let mut sub_clients = Vec::new();
    let mut subscribers: Vec<JoinHandle<(Histogram<u64>, Loop)>> = Vec::new();
    for (i, filter) in sub_filters.iter().enumerate() {
        let (client, mut ev) = connect(&conn, &format!("tperf-{run}-s{i}"), 64).await?;
        subscribe(&client, &mut ev, filter, args.qos).await?;
        subscribers.push(tokio::spawn(subscriber(
            ev,
            args.qos,
            warmup_until,
            stats.clone(),
            stop_rx.clone(),
        )));
        sub_clients.push(client);
    }

    let mut pub_clients = Vec::new();
    let mut pub_loops: Vec<JoinHandle<Loop>> = Vec::new();
    for i in 0..args.publishers {
        let (client, ev) =
            connect(&conn, &format!("tperf-{run}-p{i}"), args.channel_capacity).await?;
        pub_loops.push(tokio::spawn(publisher_loop(
            ev,
            args.qos,
            stats.clone(),
            stop_rx.clone(),
        )));
        pub_clients.push(client);
    }

    if args.size < 8 {
        eprintln!(
            "note: --size {} is below 8; sending 8-byte payloads",
            args.size
        );
    }
    let requested = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + secs(args.duration);
    let publishers: Vec<_> = pub_clients
        .iter()
        .zip(&pub_topics)
        .map(|(c, topic)| {
            let cfg = PublishCfg {
                topic: topic.clone(),
                qos: args.qos,
                size: args.size,
                rate: args.rate,
                requested: requested.clone(),
            };
            tokio::spawn(publish(c.clone(), cfg, stats.clone(), start, deadline))
        })
        .collect();
    let (progress_done, progress) = common::spawn_progress(
        stats.clone(),
        start,
        args.quiet,
        (args.qos > 0).then_some("acked"),
    );

    sleep_until(deadline).await;
    let window = start.elapsed().as_secs_f64();
    let at_deadline = stats.snapshot();

    // Drain: the publishes still in the clients' queues, their acks, the subscribers catching
    // up; all bounded by the drain timeout, and by 2 s without progress.
    let drain_deadline = Instant::now() + secs(args.drain_timeout);
    for p in publishers {
        if timeout(drain_deadline.saturating_duration_since(Instant::now()), p)
            .await
            .is_err()
        {
            stats.error("publisher", "did not stop by the drain timeout");
        }
    }
    let total = requested.load(Relaxed);
    let qos = args.qos;
    let flushed = loop {
        let now = stats.snapshot();
        let done = now.sent >= total && (qos == 0 || now.confirmed >= total);
        if done || now.errors > at_deadline.errors {
            break done;
        }
        if Instant::now() >= drain_deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if !flushed {
        stats.error(
            "publishers",
            format!(
                "{} of {total} publishes written{} by the drain timeout",
                stats.sent.load(Relaxed),
                if qos > 0 {
                    format!(", {} acknowledged", stats.confirmed.load(Relaxed))
                } else {
                    String::new()
                }
            ),
        );
    }
    let fanout = match args.topology {
        MqttTopology::Pairs => 1,
        MqttTopology::Single | MqttTopology::Wildcard => args.subscribers as u64,
    };
    let expected = || stats.sent.load(Relaxed) * fanout;
    let drained = args.subscribers == 0
        || common::drain(&stats, expected, Duration::from_secs(2), drain_deadline).await;
    let total_elapsed = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    progress_done.store(true, Relaxed);

    let mut hist = common::histogram();
    let mut loops = Vec::new();
    for s in subscribers {
        match timeout(Duration::from_secs(5), s).await {
            Ok(Ok((h, ev))) => {
                hist.add(&h)?;
                loops.push(ev);
            }
            Ok(Err(e)) => stats.error("subscriber task", e),
            Err(_) => stats.error("subscriber", "did not stop"),
        }
    }
    for p in pub_loops {
        if let Ok(Ok(ev)) = timeout(Duration::from_secs(5), p).await {
            loops.push(ev);
        }
    }
    progress.abort();
    let end = stats.snapshot();

    // Clean DISCONNECTs: queue them, then poll each loop briefly so that they are written.
    for c in sub_clients.iter().chain(pub_clients.iter()) {
        let _ = timeout(Duration::from_millis(200), c.disconnect()).await;
    }
    for mut ev in loops {
        let _ = timeout(Duration::from_millis(200), async {
            while ev.poll(qos).await.is_ok() {}
        })
        .await;
    }

    let not_received = if drained {
        0
    } else {
        (end.sent * fanout).saturating_sub(end.received)
    };
    let first_error = stats.first_error();
    let lat = Latency::of(&hist);
    println!(
        "summary: MQTT {}, topology {}, publishers {}, subscribers {}, QoS {}, size {} B{}, duration {:.1}s",
        args.protocol.name(),
        args.topology.name(),
        args.publishers,
        args.subscribers,
        args.qos,
        args.size.max(8),
        if args.rate > 0.0 {
            format!(", rate {}/s per publisher", args.rate)
        } else {
            String::new()
        },
        window
    );
    println!(
        "sent {} msg/s ({} msgs), received {} msg/s ({} msgs in the window, {} in all), acked {} msg/s ({} msgs)",
        rate(at_deadline.sent, window).round(),
        end.sent,
        rate(at_deadline.received, window).round(),
        at_deadline.received,
        end.received,
        rate(at_deadline.confirmed, window).round(),
        end.confirmed,
    );
    println!("{}", lat.line());
    println!(
        "errors {}{}{}",
        end.errors,
        if drained {
            String::new()
        } else {
            format!(", {not_received} messages not received by the end of the drain")
        },
        match &first_error {
            Some(e) => format!(" (first: {e})"),
            None => String::new(),
        }
    );
    if args.json {
        let mut obj = serde_json::Map::new();
        let json = serde_json::json!({
            "protocol": "mqtt",
            "mqtt_version": args.protocol.name(),
            "topology": args.topology.name(),
            "publishers": args.publishers,
            "subscribers": args.subscribers,
            "qos": args.qos,
            "size": args.size.max(8),
            "rate": args.rate,
            "duration_s": window,
            "elapsed_s": total_elapsed,
            "sent": end.sent,
            "received": end.received,
            "confirmed": end.confirmed,
            "sent_rate": rate(at_deadline.sent, window),
            "received_rate": rate(at_deadline.received, window),
            "confirmed_rate": rate(at_deadline.confirmed, window),
            "drained": drained,
            "not_drained": not_received,
            "errors": end.errors,
            "first_error": first_error,
        });
        if let serde_json::Value::Object(m) = json {
            obj.extend(m);
        }
        lat.add_json(&mut obj);
        println!("{}", serde_json::Value::Object(obj));
    }
    let ok = end.errors == 0 && (args.publishers == 0 || end.sent > 0);
    Ok(if ok { 0 } else { 1 })
}
