//! What the `mqtt` and `xmpp` subcommands share: the clock in the payloads, counters, the
//! latency histogram, the progress line and the summary (text and JSON).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch (monotonic). Producers and consumers run in one
/// process, so a timestamp taken at publish time and one taken at delivery share this clock.
pub(crate) fn now_nanos() -> u64 {
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Highest latency the histogram records (one hour, in nanoseconds); larger values saturate.
pub(crate) const HIST_MAX_NANOS: u64 = 3_600_000_000_000;

/// An empty latency histogram (nanoseconds, 3 significant digits).
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, HIST_MAX_NANOS, 3).expect("histogram bounds")
}

/// `count / secs`, or 0 for an empty window.
pub(crate) fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Counters shared by every client task of a run.
#[derive(Default)]
pub(crate) struct Stats {
    /// Messages written to the socket by the client library.
    pub sent: AtomicU64,
    /// Messages acknowledged by the broker (MQTT PUBACK/PUBCOMP).
    pub confirmed: AtomicU64,
    /// Messages delivered to a consumer.
    pub received: AtomicU64,
    /// Errors of any kind (connection lost, refused, protocol).
    pub errors: AtomicU64,
    /// The first error, for the summary.
    pub first_error: Mutex<Option<String>>,
}

/// A copy of the counters at one instant.
#[derive(Clone, Copy, Default)]
pub(crate) struct Counts {
    /// [`Stats::sent`].
    pub sent: u64,
    /// [`Stats::confirmed`].
    pub confirmed: u64,
    /// [`Stats::received`].
    pub received: u64,
    /// [`Stats::errors`].
    pub errors: u64,
}

impl Stats {
    /// Counts an error and keeps its text if it is the first.
    pub fn error(&self, what: &str, err: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{what}: {err}"));
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> Counts {
        Counts {
            sent: self.sent.load(Relaxed),
            confirmed: self.confirmed.load(Relaxed),
            received: self.received.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    /// The first error recorded, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Records the latency of a message whose payload starts with an 8-byte little-endian send
/// time, unless it was sent before `warmup_until`. Returns false if the payload is too short.
pub(crate) fn record_latency(hist: &mut Histogram<u64>, payload: &[u8], warmup_until: u64) -> bool {
    let now = now_nanos();
    let Some(ts) = payload.get(..8) else {
        return false;
    };
    let ts = u64::from_le_bytes(ts.try_into().unwrap_or_default());
    if ts >= warmup_until {
        hist.saturating_record(now.saturating_sub(ts).max(1));
    }
    true
}

/// The progress line, once a second on stderr, until `done` is set.
pub(crate) fn spawn_progress(
    stats: Arc<Stats>,
    start: Instant,
    quiet: bool,
    confirm_label: Option<&'static str>,
) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let task = tokio::spawn(async move {
        let mut prev = stats.snapshot();
        let mut tick = start;
        loop {
            tick += Duration::from_secs(1);
            sleep_until(tick).await;
            if flag.load(Relaxed) {
                break;
            }
            let now = stats.snapshot();
            if !quiet {
                eprintln!(
                    "time {:>4.0}s, sent {} msg/s, received {} msg/s{}{}",
                    (tick - start).as_secs_f64(),
                    now.sent - prev.sent,
                    now.received - prev.received,
                    match confirm_label {
                        Some(label) =>
                            format!(", {label} {} msg/s", now.confirmed - prev.confirmed),
                        None => String::new(),
                    },
                    if now.errors > prev.errors {
                        format!(", errors {}", now.errors - prev.errors)
                    } else {
                        String::new()
                    }
                );
            }
            prev = now;
        }
    });
    (done, task)
}

/// Latency percentiles in microseconds.
pub(crate) struct Latency {
    /// Messages timed.
    pub samples: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Highest.
    pub max: f64,
}

impl Latency {
    /// Reads the percentiles off a histogram of nanoseconds (all zero when it is empty).
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Latency {
                samples: 0,
                mean: 0.0,
                p50: 0.0,
                p75: 0.0,
                p95: 0.0,
                p99: 0.0,
                max: 0.0,
            };
        }
        let pct = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            samples: hist.len(),
            mean: hist.mean() / 1000.0,
            p50: pct(0.50),
            p75: pct(0.75),
            p95: pct(0.95),
            p99: pct(0.99),
            max: hist.max() as f64 / 1000.0,
        }
    }

    /// The summary's latency line.
    pub fn line(&self) -> String {
        format!(
            "latency µs: p50 {:.0}, p75 {:.0}, p95 {:.0}, p99 {:.0}, max {:.0} (mean {:.0}, {} samples)",
            self.p50, self.p75, self.p95, self.p99, self.max, self.mean, self.samples
        )
    }

    /// Adds the `latency_*` keys to a JSON object.
    pub fn add_json(&self, obj: &mut serde_json::Map<String, serde_json::Value>) {
        for (k, v) in [
            ("latency_mean_us", self.mean),
            ("latency_p50_us", self.p50),
            ("latency_p75_us", self.p75),
            ("latency_p95_us", self.p95),
            ("latency_p99_us", self.p99),
            ("latency_max_us", self.max),
        ] {
            obj.insert(k.into(), serde_json::json!(v));
        }
        obj.insert("latency_samples".into(), serde_json::json!(self.samples));
    }
}

/// Waits until the consumers have `expected` messages, nothing more arrived for `idle`, or
/// `deadline` passed; true if everything expected arrived.
pub(crate) async fn drain(
    stats: &Stats,
    expected: impl Fn() -> u64,
    idle: Duration,
    deadline: Instant,
) -> bool {
    let mut last = stats.received.load(Relaxed);
    let mut last_change = Instant::now();
    loop {
        let got = stats.received.load(Relaxed);
        if got >= expected() {
            return true;
        }
        let now = Instant::now();
        if got != last {
            last = got;
            last_change = now;
        } else if now - last_change >= idle {
            return false;
        }
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A run identifier for names (topics, client ids) that must not clash with a concurrent run.
pub(crate) fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), t & 0xff_ffff)
}
