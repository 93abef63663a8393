//! `tributary-perf`: a load generator for AMQP 0-9-1 brokers (Tributary, RabbitMQ, ...),
//! in the spirit of RabbitMQ's PerfTest, built on an independent client library (lapin).
//!
//! Subcommands:
//! - `amqp`: producers and consumers over a queue or a fanout exchange; prints throughput each
//!   second and a summary (rates, latency percentiles, errors), optionally as one JSON line.
//! - `idle`: opens N idle connections and holds them (memory-per-connection measurements).

mod amqp;
mod idle;
mod raw;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "tributary-perf",
    version,
    about = "Load generator for AMQP 0-9-1 brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Throughput and latency test: N producers, M consumers, a queue or a fanout exchange.
    Amqp(AmqpArgs),
    /// Open N idle AMQP connections and hold them for a while.
    Idle(IdleArgs),
}

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

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Broker URI (vhost `/` is `%2f`); add `?heartbeat=N` to choose the heartbeat.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Number of connections to open.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub connections: usize,
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
        Command::Idle(args) => {
            watchdog(secs(args.open_timeout + args.duration + 60.0));
            let code = rt.block_on(idle::run(args))?;
            rt.shutdown_timeout(Duration::from_secs(2));
            std::process::exit(code);
        }
    }
}
