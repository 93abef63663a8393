//! `tributary-perf`: a load generator for AMQP 0-9-1, MQTT and XMPP servers (Tributary,
//! RabbitMQ, Mosquitto, Prosody, ...), in the spirit of RabbitMQ's PerfTest and emqtt-bench,
//! built on independent client libraries (lapin, rumqttc, tokio-xmpp).
//!
//! Subcommands:
//! - `amqp`: producers and consumers over a queue or a fanout exchange; prints throughput each
//!   second and a summary (rates, latency percentiles, errors), optionally as one JSON line.
//! - `mqtt`: publishers and subscribers (1→1, fan-in, fan-out; QoS 0, 1, 2; MQTT 3.1.1 or 5),
//!   with the same progress line, summary and JSON line.
//! - `xmpp`: pairs of users chatting through the server, the same reports.
//! - `idle`: opens N idle AMQP, MQTT or XMPP connections and holds them (memory per connection).
//! - `kafka`: produce then fetch throughput over the Kafka protocol (rskafka), one partition.
//! - `stream`: append (with confirms) then read-from-first throughput of an AMQP stream queue.

mod amqp;
mod common;
mod idle;
mod kafka;
mod mqtt;
mod raw;
mod rawmqtt;
mod stream;
mod xmpp;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "tributary-perf",
    version,
    about = "Load generator for AMQP 0-9-1, MQTT and XMPP servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Throughput and latency test: N producers, M consumers, a queue or a fanout exchange.
    Amqp(AmqpArgs),
    /// Throughput and latency test: N MQTT publishers, M subscribers, 1→1, fan-in or fan-out.
    Mqtt(MqttArgs),
    /// Throughput and latency test: pairs of XMPP users sending each other chat messages.
    Xmpp(XmppArgs),
    /// Open N idle AMQP, MQTT or XMPP connections and hold them for a while.
    Idle(IdleArgs),
    /// Produce and fetch throughput over the Kafka protocol (rskafka).
    Kafka(kafka::KafkaArgs),
    /// Append and read throughput of a stream queue (`x-queue-type: stream`) over AMQP 0-9-1.
    Stream(stream::StreamArgs),
}

/// How `amqp` routes producers to consumers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    /// N producers -> one queue <- M competing consumers.
    Queue,
    /// N producers -> a fanout exchange -> M queues, one consumer each.
    Fanout,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Topology::Queue => "queue",
            Topology::Fanout => "fanout",
        }
    }
}

/// Arguments of the `amqp` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct AmqpArgs {
    /// Broker URI (vhost `/` is `%2f`).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Number of producers (one connection and channel each).
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers (one connection and channel each).
    #[arg(long, short = 'y', default_value_t = 1)]
    pub consumers: usize,
    /// Message body size in bytes (at least 8: the send timestamp lives in the first 8 bytes).
    #[arg(long, short = 's', default_value_t = 16)]
    pub size: usize,
    /// How long producers publish, in seconds (with `--count`: the most they may take).
    #[arg(long, short = 'z', default_value_t = 10.0)]
    pub duration: f64,
    /// Publish this many messages in all (shared by the producers), then stop: the run ends
    /// when the last one is confirmed (or sent, without `--confirm`), or at `--duration`.
    #[arg(long)]
    pub count: Option<u64>,
    /// Messages per second per producer; 0 = as fast as possible.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    pub rate: f64,
    /// Publish persistent messages (delivery mode 2) to durable queues.
    #[arg(long, short = 'f')]
    pub persistent: bool,
    /// Use publisher confirms, with at most this many unconfirmed messages per producer.
    #[arg(long, short = 'c')]
    pub confirm: Option<usize>,
    /// Consumer prefetch (basic.qos); 0 = unlimited.
    #[arg(long, short = 'q', default_value_t = 1000)]
    pub prefetch: u16,
    /// Acknowledge with `multiple` every N messages (capped at half the prefetch).
    #[arg(long, default_value_t = 100)]
    pub multi_ack_every: usize,
    /// Consume in auto-ack (no-ack) mode.
    #[arg(long, short = 'a')]
    pub autoack: bool,
    /// Routing topology.
    #[arg(long, value_enum, default_value_t = Topology::Queue)]
    pub topology: Topology,
    /// Queue name (fanout: prefix of the queue names and the exchange name).
    #[arg(long, short = 'u', default_value = "tributary-perf")]
    pub queue: String,
    /// Publishes in flight per producer (written to the socket but not yet acknowledged by the
    /// client library's IO loop); more pipelining keeps a producer from being latency-bound.
    #[arg(long, default_value_t = 64)]
    pub pipeline: usize,
    /// After the producers stop, wait at most this many seconds for consumers and confirms.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Latencies of messages sent in the first SECS seconds are not recorded.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Do not delete the queues and exchange at the end.
    #[arg(long)]
    pub no_cleanup: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary also as one JSON line, last on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How `mqtt` maps publishers and subscribers onto topics.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MqttTopology {
    /// Every publisher publishes to one topic and every subscriber subscribes to it
    /// (1→1, N→1 fan-in, 1→M fan-out; each subscriber gets every message).
    Single,
    /// Publisher i publishes to topic `…/i`, which subscriber i alone subscribes to (N = M).
    Pairs,
    /// Publisher i publishes to topic `…/i`; every subscriber subscribes to `…/+`.
    Wildcard,
}

impl MqttTopology {
    fn name(self) -> &'static str {
        match self {
            MqttTopology::Single => "single",
            MqttTopology::Pairs => "pairs",
            MqttTopology::Wildcard => "wildcard",
        }
    }
}

/// MQTT protocol version.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4).
    #[value(name = "3.1.1", alias = "3", alias = "4")]
    V311,
    /// MQTT 5.0.
    #[value(name = "5", alias = "5.0")]
    V5,
}

impl MqttVersion {
    fn name(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

/// Arguments of the `mqtt` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct MqttArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// User name (none: connect anonymously).
    #[arg(long)]
    pub username: Option<String>,
    /// Password (with `--username`).
    #[arg(long)]
    pub password: Option<String>,
    /// MQTT version.
    #[arg(long, value_enum, default_value_t = MqttVersion::V311)]
    pub protocol: MqttVersion,
    /// Number of publishers (one connection each).
    #[arg(long, short = 'x', default_value_t = 1)]
    pub publishers: usize,
    /// Number of subscribers (one connection each).
    #[arg(long, short = 'y', default_value_t = 1)]
    pub subscribers: usize,
    /// How publishers and subscribers map onto topics.
    #[arg(long, value_enum, default_value_t = MqttTopology::Single)]
    pub topology: MqttTopology,
    /// QoS of the publishes and of the subscriptions (0, 1 or 2).
    #[arg(long, short = 'q', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least 8: the send timestamp lives in the first 8 bytes).
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// How long publishers publish, in seconds.
    #[arg(long, short = 'z', default_value_t = 10.0)]
    pub duration: f64,
    /// Messages per second per publisher; 0 = as fast as possible.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    pub rate: f64,
    /// Topic prefix; a per-run id and (for `pairs`/`wildcard`) the publisher number follow.
    #[arg(long, short = 't', default_value = "tributary-perf")]
    pub topic: String,
    /// Most QoS 1/2 publishes awaiting their acknowledgement per publisher (rumqttc's
    /// inflight; for MQTT 5 also capped by the broker's Receive Maximum).
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Publishes queued in the client library per publisher before `publish` waits.
    #[arg(long, default_value_t = 64)]
    pub channel_capacity: usize,
    /// Keep alive, in seconds.
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u64,
    /// After the publishers stop, wait at most this many seconds for acks and subscribers
    /// (the wait also ends after 2 s without a delivery).
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Latencies of messages sent in the first SECS seconds are not recorded.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary also as one JSON line, last on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of the `xmpp` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct XmppArgs {
    /// Server host (plaintext TCP: use a loopback address; the server must allow
    /// authentication without TLS there).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port (client-to-server streams).
    #[arg(long, default_value_t = 5222)]
    pub port: u16,
    /// The XMPP domain of the accounts.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Accounts are PREFIX0 … PREFIX{2×pairs−1}; they must exist.
    #[arg(long, default_value = "perf")]
    pub user_prefix: String,
    /// Password of every account.
    #[arg(long, default_value = "perf")]
    pub password: String,
    /// Number of pairs of users; user 2k and user 2k+1 chat with each other.
    #[arg(long, short = 'p', default_value_t = 10)]
    pub pairs: usize,
    /// Only the first user of each pair sends.
    #[arg(long)]
    pub one_way: bool,
    /// Body length in characters (at least 16: the send timestamp, in hex, comes first).
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// How long users send, in seconds.
    #[arg(long, short = 'z', default_value_t = 10.0)]
    pub duration: f64,
    /// Messages per second per sending user; 0 = as fast as possible.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    pub rate: f64,
    /// Messages per user handed to the client library and not yet written to the socket.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Closed loop: a user sends only while fewer than N of its messages are still on their
    /// way to the peer (sent and not yet received). Without it, users send open loop, as fast
    /// as the library and the server take the messages.
    #[arg(long)]
    pub max_unreceived: Option<u64>,
    /// How many users log in at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// After the senders stop, wait at most this many seconds for the receivers (the wait
    /// also ends after 2 s without a delivery).
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Latencies of messages sent in the first SECS seconds are not recorded.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary also as one JSON line, last on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Which protocol `idle` speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdleProtocol {
    /// AMQP 0-9-1 (`--uri`).
    Amqp,
    /// MQTT (`--host`, `--port`; anonymous).
    Mqtt,
    /// XMPP client streams (`--host`, `--port`, `--domain`, `--users`, `--user-prefix`,
    /// `--password`).
    Xmpp,
}

impl IdleProtocol {
    fn name(self) -> &'static str {
        match self {
            IdleProtocol::Amqp => "amqp",
            IdleProtocol::Mqtt => "mqtt",
            IdleProtocol::Xmpp => "xmpp",
        }
    }
}

/// Arguments of the `idle` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Which protocol to speak.
    #[arg(long, value_enum, default_value_t = IdleProtocol::Amqp)]
    pub protocol: IdleProtocol,
    /// AMQP: broker URI (vhost `/` is `%2f`); add `?heartbeat=N` to choose the heartbeat.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// MQTT, XMPP: server host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// MQTT, XMPP: server port (default 1883 or 5222).
    #[arg(long)]
    pub port: Option<u16>,
    /// MQTT: protocol version.
    #[arg(long, value_enum, default_value_t = MqttVersion::V311)]
    pub mqtt_version: MqttVersion,
    /// XMPP: the accounts' domain.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// XMPP: connection i logs in as PREFIX{i mod users}, resource `idle{i}`.
    #[arg(long, default_value = "perf")]
    pub user_prefix: String,
    /// XMPP: how many accounts the connections are spread over.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// XMPP: password of every account.
    #[arg(long, default_value = "perf")]
    pub password: String,
    /// Number of connections to open.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub connections: usize,
    /// MQTT: open the connections from these local addresses, round robin (a comma list such
    /// as `127.0.0.1,127.0.0.2`; one loopback address has about 28,000 ephemeral ports), with
    /// a minimal built-in MQTT 3.1.1 client instead of rumqttc, which cannot bind one.
    #[arg(long)]
    pub source_addrs: Option<String>,
    /// Open one channel on each connection.
    #[arg(long)]
    pub channel: bool,
    /// Use the lapin client (one IO thread per connection) instead of the built-in minimal one.
    #[arg(long)]
    pub lapin: bool,
    /// How many connections are being opened at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to hold the connections once open, in seconds.
    #[arg(long, short = 'z', default_value_t = 30.0)]
    pub duration: f64,
    /// Give up opening connections after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub open_timeout: f64,
    /// Print the summary also as one JSON line, last on stdout.
    #[arg(long)]
    pub json: bool,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Exits the process if the run overstays its budget, whatever the broker does.
fn watchdog(budget: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("tributary-perf: watchdog: run exceeded {budget:?}, exiting");
        std::process::exit(3);
    });
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("tributary-perf: error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Amqp(args) => {
            anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
            anyhow::ensure!(args.producers > 0 || args.consumers > 0, "nothing to do");
            anyhow::ensure!(
                args.count.is_none() || args.producers > 0,
                "--count needs at least one producer"
            );
            watchdog(secs(args.duration + args.drain_timeout + 90.0));
            let code = rt.block_on(amqp::run(args))?;
            rt.shutdown_timeout(Duration::from_secs(2));
            std::process::exit(code);
        }
        Command::Mqtt(args) => {
            anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
            anyhow::ensure!(args.publishers > 0 || args.subscribers > 0, "nothing to do");
            anyhow::ensure!(
                args.topology != MqttTopology::Pairs || args.publishers == args.subscribers,
                "--topology pairs needs as many publishers as subscribers"
            );
            watchdog(secs(args.duration + args.drain_timeout + 90.0));
            let code = rt.block_on(mqtt::run(args))?;
            rt.shutdown_timeout(Duration::from_secs(2));
            std::process::exit(code);
        }
        Command::Xmpp(args) => {
            anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
            anyhow::ensure!(args.pairs > 0, "--pairs must be at least 1");
            watchdog(secs(args.duration + args.drain_timeout + 120.0));
            let code = rt.block_on(xmpp::run(args))?;
            rt.shutdown_timeout(Duration::from_secs(2));
            std::process::exit(code);
        }
        Command::Idle(args) => {
            watchdog(secs(args.open_timeout + args.duration + 60.0));
            let code = rt.block_on(idle::run(args))?;
            rt.shutdown_timeout(Duration::from_secs(2));
            std::process::exit(code);
        }
        Command::Kafka(args) => {
            watchdog(secs(600.0));
            rt.block_on(kafka::run(args))?;
            rt.shutdown_timeout(Duration::from_secs(2));
            Ok(())
        }
        Command::Stream(args) => {
            watchdog(secs(2.0 * args.phase_timeout + 60.0));
            rt.block_on(stream::run(args))?;
            rt.shutdown_timeout(Duration::from_secs(2));
            Ok(())
        }
    }
}
