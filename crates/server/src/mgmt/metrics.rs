//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4),
//! rendered by hand from the registry, the queues' counters, the store's
//! statistics and /proc. Unauthenticated, as RabbitMQ's prometheus plugin.

use super::St;
use crate::registry::Protocol;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Text being built: one `# HELP`/`# TYPE` header per family.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// GET /metrics.
pub async fn metrics(State(st): State<St>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&st),
    )
}

fn render(st: &St) -> String {
    let mut o = Out(String::new());
    protocols(st, &mut o);
    queues(st, &mut o);
    latency(&mut o);
    let s = st.s.store.stats();
    o.single(
        "tributary_store_fsyncs_total",
        "counter",
        "fdatasync calls on the message store's segment files.",
        s.fsyncs,
    );
    o.single(
        "tributary_store_bytes_written_total",
        "counter",
        "Bytes written to the message store's segment files.",
        s.bytes_written,
    );
    fsync_latency(&s, &mut o);
    o.single(
        "tributary_store_commit_batches_total",
        "counter",
        "Group-commit passes of the store's sync thread.",
        s.batches,
    );
    o.single(
        "tributary_store_appends_total",
        "counter",
        "Records appended to the message store.",
        s.appends,
    );
    o.single(
        "tributary_store_bytes_on_disk",
        "gauge",
        "Bytes in the message store's segment files.",
        s.bytes_on_disk,
    );
    o.single(
        "tributary_store_live_messages",
        "gauge",
        "Messages in the store still held by a queue.",
        s.live_messages,
    );
    o.single(
        "tributary_store_segments",
        "gauge",
        "Segment files of the message store.",
        s.segments,
    );
    o.single(
        "tributary_memory_budget_used_bytes",
        "gauge",
        "Bytes of message bodies (and bookkeeping) held in memory by queues.",
        st.s.broker.memory_budget().in_use() as u64,
    );
    let (rss, fds) = super::overview::process_usage();
    o.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        rss,
    );
    o.single(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        fds,
    );
    o.single(
        "tributary_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        st.started.elapsed().as_secs(),
    );
    o.0
}

fn protocols(st: &St, o: &mut Out) {
    let conns = st.s.registry.list();
    let count = |p: Protocol| conns.iter().filter(|c| c.protocol == p).count() as u64;
    o.family(
        "tributary_connections",
        "gauge",
        "Open client connections by protocol.",
    );
    for p in Protocol::ALL {
        o.sample(
            "tributary_connections",
            &[("protocol", p.as_str())],
            count(p),
        );
    }
    o.family(
        "tributary_connections_opened_total",
        "counter",
        "Client connections accepted by protocol.",
    );
    for p in Protocol::ALL {
        let n = st.s.registry.opened(p);
        o.sample(
            "tributary_connections_opened_total",
            &[("protocol", p.as_str())],
            n,
        );
    }
    let channels: usize = conns.iter().map(|c| c.channels().len()).sum();
    o.single(
        "tributary_channels",
        "gauge",
        "Open AMQP channels.",
        channels as u64,
    );
    o.family(
        "tributary_sessions",
        "gauge",
        "Client sessions by protocol: connected MQTT client ids, bound XMPP resources.",
    );
    let sessions = |p: Protocol| {
        conns
            .iter()
            .filter(|c| c.protocol == p && !c.client().is_empty())
            .count() as u64
    };
    o.sample(
        "tributary_sessions",
        &[("protocol", "mqtt")],
        sessions(Protocol::Mqtt),
    );
    o.sample(
        "tributary_sessions",
        &[("protocol", "xmpp")],
        sessions(Protocol::Xmpp),
    );
    o.single(
        "tributary_coap_observations",
        "gauge",
        "Live CoAP Observe registrations (RFC 7641).",
        st.s.coap.count() as u64,
    );
    let families = [
        (
            "tributary_received_bytes_total",
            "Bytes read from clients by protocol.",
        ),
        (
            "tributary_sent_bytes_total",
            "Bytes written to clients by protocol.",
        ),
        (
            "tributary_messages_published_total",
            "Messages published by clients (AMQP basic.publish, MQTT PUBLISH, XMPP stanzas) by protocol.",
        ),
        (
            "tributary_messages_delivered_total",
            "Messages delivered to clients by protocol.",
        ),
    ];
    let totals: Vec<[u64; 4]> = Protocol::ALL
        .iter()
        .map(|p| st.s.registry.totals(*p))
        .collect();
    for (i, (name, help)) in families.iter().enumerate() {
        o.family(name, "counter", help);
        for (p, t) in Protocol::ALL.iter().zip(&totals) {
            o.sample(name, &[("protocol", p.as_str())], t[i]);
        }
    }
}

/// How long the store's `fdatasync` calls took, as a histogram.
fn fsync_latency(s: &tributary_store::StoreStats, o: &mut Out) {
    use tributary_store::FSYNC_BUCKETS_US;
    let name = "tributary_store_fsync_duration_seconds";
    o.family(
        name,
        "histogram",
        "Time taken by fdatasync calls on the message store's segment files.",
    );
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (us, count) in FSYNC_BUCKETS_US.iter().zip(&s.fsync_buckets) {
        cumulative += count;
        let le = format!("{}", *us as f64 / 1e6);
        o.sample(&bucket, &[("le", &le)], cumulative);
    }
    cumulative += s.fsync_buckets[FSYNC_BUCKETS_US.len()];
    o.sample(&bucket, &[("le", "+Inf")], cumulative);
    let _ = writeln!(o.0, "{name}_sum {}", s.fsync_micros as f64 / 1e6);
    o.sample(&format!("{name}_count"), &[], cumulative);
}

/// The time messages waited in queues before delivery, as a histogram.
fn latency(o: &mut Out) {
    use tributary_core::queue::{DELIVERY_LATENCY, LATENCY_BUCKETS_MS};
    let name = "tributary_delivery_latency_seconds";
    o.family(
        name,
        "histogram",
        "Time from a message becoming ready in a queue (published or requeued) to its delivery.",
    );
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let bucket = format!("{name}_bucket");
    for (ms, count) in LATENCY_BUCKETS_MS.iter().zip(&DELIVERY_LATENCY.buckets) {
        let le = format!("{}", *ms as f64 / 1000.0);
        o.sample(&bucket, &[("le", &le)], l(count));
    }
    let total = l(&DELIVERY_LATENCY.buckets[LATENCY_BUCKETS_MS.len()]);
    o.sample(&bucket, &[("le", "+Inf")], total);
    let sum = l(&DELIVERY_LATENCY.sum_ms) as f64 / 1000.0;
    let _ = writeln!(o.0, "{name}_sum {sum}");
    o.sample(&format!("{name}_count"), &[], total);
}

fn queues(st: &St, o: &mut Out) {
    let mut rows = Vec::new();
    let mut vhosts = st.s.broker.vhosts();
    vhosts.sort_by(|a, b| a.name().cmp(b.name()));
    for v in vhosts {
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name().cmp(b.name()));
        for q in qs {
            let s = q.stats();
            let c = q.counters();
            let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            rows.push((
                v.name().to_string(),
                q.name().to_string(),
                [
                    s.ready as u64,
                    s.unacked as u64,
                    s.ready_bytes as u64,
                    s.consumers as u64,
                    l(&c.published),
                    l(&c.delivered),
                    l(&c.redelivered),
                    l(&c.acked),
                    l(&c.dropped),
                    l(&c.dead_lettered),
                ],
            ));
        }
    }
    let families = [
        (
            "tributary_queue_messages_ready",
            "gauge",
            "Messages ready for delivery.",
        ),
        (
            "tributary_queue_messages_unacked",
            "gauge",
            "Messages delivered and not yet acknowledged.",
        ),
        (
            "tributary_queue_messages_ready_bytes",
            "gauge",
            "Bytes of the bodies of ready messages.",
        ),
        (
            "tributary_queue_consumers",
            "gauge",
            "Consumers attached to the queue.",
        ),
        (
            "tributary_queue_messages_published_total",
            "counter",
            "Messages accepted into the queue.",
        ),
        (
            "tributary_queue_messages_delivered_total",
            "counter",
            "Messages delivered to consumers or basic.get.",
        ),
        (
            "tributary_queue_messages_redelivered_total",
            "counter",
            "Deliveries of messages delivered before.",
        ),
        (
            "tributary_queue_messages_acked_total",
            "counter",
            "Deliveries acknowledged.",
        ),
        (
            "tributary_queue_messages_dropped_total",
            "counter",
            "Messages given up on with no dead-letter exchange (expiry, overflow).",
        ),
        (
            "tributary_queue_messages_dead_lettered_total",
            "counter",
            "Messages republished to the dead-letter exchange.",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        o.family(name, kind, help);
        for (vhost, queue, values) in &rows {
            o.sample(name, &[("vhost", vhost), ("queue", queue)], values[i]);
        }
    }
}
