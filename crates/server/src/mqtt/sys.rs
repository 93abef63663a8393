//! `$SYS/broker/...` topics, as Mosquitto publishes them: broker statistics
//! as retained messages, refreshed every few seconds, for MQTT clients that
//! subscribe to them explicitly (`$` topics are not matched by a leading
//! wildcard).

use super::driver::MqttContext;
use super::session::route;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tributary_core::{Message, Properties};
use tributary_mqtt::topic::topic_to_routing_key;

/// How often `$SYS` is refreshed (Mosquitto's `sys_interval` defaults to 10 s).
pub const SYS_INTERVAL: Duration = Duration::from_secs(10);

/// How often expired sessions are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes the `$SYS` topics and removes expired sessions until shutdown.
pub async fn run(ctx: Arc<MqttContext>) {
    let started = Instant::now();
    let mut every = tokio::time::interval(SYS_INTERVAL);
    let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = every.tick() => publish_all(&ctx, started),
            _ = expiry.tick() => remove_expired(&ctx),
        }
    }
}

/// Removes sessions whose v5 Session Expiry Interval has run out while
/// their client was away: their queue (with its messages) and state.
fn remove_expired(ctx: &MqttContext) {
    for key in ctx.sessions.expired(tributary_core::args::now_ms()) {
        if ctx.registry.is_connected(&key) {
            continue;
        }
        // The state goes first: once the queue is gone, nothing of the
        // session may be found by a client that connects at that moment.
        ctx.sessions.forget(&ctx.broker, &key);
        let (vhost_name, client_id) = super::session::unscope(&key);
        if let Some(vhost) = ctx.broker.vhost(vhost_name)
            && let Ok(queue) = vhost.queue(&super::session::persistent_queue_name(client_id), 0)
        {
            vhost.remove_queue(&queue);
        }
        tracing::info!(client_id, vhost = vhost_name, "MQTT session expired");
    }
}

fn publish_all(ctx: &MqttContext, started: Instant) {
    let retained_count = ctx.retained.lock().len();
    let stats = [
        (
            "$SYS/broker/version",
            format!("tributary {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", started.elapsed().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            ctx.registry.connected().to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            ctx.received.load(Ordering::Relaxed).to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            retained_count.to_string(),
        ),
    ];
    for (topic, value) in stats {
        let message = Message::new(
            Bytes::from_static(b"amq.topic"),
            Bytes::from(topic_to_routing_key(topic)),
            Properties {
                delivery_mode: Some(1),
                ..Default::default()
            },
            Bytes::from(value),
        );
        // Kept in memory only: statistics are rebuilt after a restart.
        ctx.retained
            .lock()
            .insert(topic.to_string(), message.clone());
        route(ctx.broker.default_vhost(), &message);
    }
}
