//! Message rates, as RabbitMQ's `*_details: {"rate": r}`: a sampler task
//! reads the counters once a second (the overall queue counters, each
//! protocol's message totals and each queue's counters) and keeps the last
//! few samples; a rate is the increase between the oldest and the newest
//! sample divided by the time between them (a window of about five seconds,
//! RabbitMQ's default sample interval).

use super::MgmtState;
use crate::registry::Protocol;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tributary_core::Queue;

/// How often the sampler reads the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: rates are measured over `(WINDOW - 1) * SAMPLE_EVERY`.
const WINDOW: usize = 6;

/// Counters of one queue, in the order of [`STATS`].
pub type QueueCounters = [u64; 4];

/// The names of the message counters, in the order of [`QueueCounters`]
/// (and of the overall totals).
pub const STATS: [&str; 4] = ["publish", "deliver_get", "ack", "redeliver"];

/// One queue's counters in the order of [`STATS`].
pub fn queue_counters(q: &Queue) -> QueueCounters {
    let c = q.counters();
    [
        c.published.load(Ordering::Relaxed),
        c.delivered.load(Ordering::Relaxed),
        c.acked.load(Ordering::Relaxed),
        c.redelivered.load(Ordering::Relaxed),
    ]
}

struct Sample {
    at: Instant,
    /// Sums over every queue, in the order of [`STATS`].
    totals: QueueCounters,
    /// Messages published and delivered, by protocol (`Protocol::ALL` order).
    protocols: [[u64; 2]; Protocol::ALL.len()],
}

/// One queue's samples, oldest first, by (vhost, name).
type QueueHistory = HashMap<(String, String), VecDeque<(Instant, QueueCounters)>>;

/// The sampled history and the rates derived from it.
#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
    /// Per queue: (time, counters), oldest first.
    queues: Mutex<QueueHistory>,
}

fn rate(old: u64, new: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    // A queue deleted and declared again starts from zero: no negative rate.
    let r = new.saturating_sub(old) as f64 / secs;
    (r * 10.0).round() / 10.0
}

impl Rates {
    /// Reads every counter once.
    pub fn sample(&self, st: &MgmtState) {
        let now = Instant::now();
        let mut totals = [0u64; 4];
        let mut seen = HashMap::new();
        for v in st.s.broker.vhosts() {
            for q in v.queues() {
                let c = queue_counters(&q);
                for (t, x) in totals.iter_mut().zip(c) {
                    *t += x;
                }
                seen.insert((v.name().to_string(), q.name().to_string()), c);
            }
        }
        let mut protocols = [[0u64; 2]; Protocol::ALL.len()];
        for (slot, p) in protocols.iter_mut().zip(Protocol::ALL) {
            let t = st.s.registry.totals(p);
            *slot = [t[2], t[3]];
        }
        let previous;
        {
            let mut samples = self.samples.lock();
            previous = samples.back().map(|s| s.at);
            samples.push_back(Sample {
                at: now,
                totals,
                protocols,
            });
            while samples.len() > WINDOW {
                samples.pop_front();
            }
        }
        let mut queues = self.queues.lock();
        queues.retain(|k, _| seen.contains_key(k));
        for (k, c) in seen {
            let h = queues.entry(k).or_insert_with(|| {
                // New since the previous sample: it had counted nothing then.
                previous.map(|at| (at, [0; 4])).into_iter().collect()
            });
            h.push_back((now, c));
            while h.len() > WINDOW {
                h.pop_front();
            }
        }
    }

    /// The overall rates, in the order of [`STATS`] (messages per second).
    pub fn overall(&self) -> [f64; 4] {
        let s = self.samples.lock();
        match (s.front(), s.back()) {
            (Some(a), Some(b)) => {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                std::array::from_fn(|i| rate(a.totals[i], b.totals[i], secs))
            }
            _ => [0.0; 4],
        }
    }

    /// Messages published and delivered per second by one protocol.
    pub fn protocol(&self, p: Protocol) -> [f64; 2] {
        let Some(i) = Protocol::ALL.iter().position(|x| *x == p) else {
            return [0.0; 2];
        };
        let s = self.samples.lock();
        match (s.front(), s.back()) {
            (Some(a), Some(b)) => {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                std::array::from_fn(|k| rate(a.protocols[i][k], b.protocols[i][k], secs))
            }
            _ => [0.0; 2],
        }
    }

    /// One queue's rates, in the order of [`STATS`].
    pub fn queue(&self, vhost: &str, name: &str) -> [f64; 4] {
        let queues = self.queues.lock();
        let Some(h) = queues.get(&(vhost.to_string(), name.to_string())) else {
            return [0.0; 4];
        };
        match (h.front(), h.back()) {
            (Some(a), Some(b)) => {
                let secs = b.0.duration_since(a.0).as_secs_f64();
                std::array::from_fn(|i| rate(a.1[i], b.1[i], secs))
            }
            _ => [0.0; 4],
        }
    }
}

/// Adds `<stat>_details: {"rate": r}` beside each counter of a
/// `message_stats` object.
pub fn add_details(stats: &mut serde_json::Value, rates: [f64; 4]) {
    if let Some(m) = stats.as_object_mut() {
        for (name, r) in STATS.iter().zip(rates) {
            m.insert(format!("{name}_details"), serde_json::json!({ "rate": r }));
        }
    }
}

/// Samples every [`SAMPLE_EVERY`] for as long as the state lives.
pub async fn run(state: Weak<MgmtState>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(st) = state.upgrade() else { return };
        st.rates.sample(&st);
        drop(st);
    }
}

/// Starts the sampler on the current runtime, if there is one.
pub fn spawn(state: &Arc<MgmtState>) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(run(Arc::downgrade(state)));
    }
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_never_go_negative_and_are_rounded() {
        assert_eq!(rate(10, 20, 2.0), 5.0);
        assert_eq!(rate(20, 10, 2.0), 0.0);
        assert_eq!(rate(0, 1, 3.0), 0.3);
        assert_eq!(rate(0, 5, 0.0), 0.0);
    }
}
