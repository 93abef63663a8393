//! Virtual hosts: `users.json` lists them (the CLI and the HTTP API edit
//! it), and the broker's vhosts follow that list.

use crate::registry::Registry;
use crate::users::{UserDb, VhostRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tributary_core::{Broker, VHost};

/// How often the user database is looked at for vhost changes.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// The vhost a client names at login, as the user database has it right
/// now: one created a moment ago by `tributary vhost add` is created in the
/// broker at once (no wait for [`follow`]), one deleted is not found.
pub fn resolve(broker: &Broker, users: &UserDb, name: &str) -> Option<Arc<VHost>> {
    let Some(record) = users.vhosts().into_iter().find(|v| v.name == name) else {
        delete(broker, name);
        return None;
    };
    let v = ensure(broker, &record);
    // A limit set a moment ago applies to this client at once; [`follow`]
    // applies every change (and the default) within its interval.
    if let Some(max) = record.limits.max_queues {
        v.set_max_queues(usize::try_from(max).unwrap_or(usize::MAX));
    }
    Some(v)
}

/// The broker's vhost for `record`: the existing one if it is the same
/// incarnation, else a new one (an older incarnation is deleted first).
fn ensure(broker: &Broker, record: &VhostRecord) -> Arc<VHost> {
    if let Some(v) = broker.vhost(&record.name) {
        if v.incarnation() == record.id {
            return v;
        }
        delete(broker, &record.name);
    }
    let v = broker.add_vhost(&record.name);
    v.set_incarnation(record.id);
    if let Some(p) = broker.persistence() {
        p.put_definition("vhost", &record.name, &record.id.to_le_bytes());
    }
    tracing::info!(vhost = %record.name, "vhost created");
    v
}

/// Deletes a vhost and its stored incarnation id.
fn delete(broker: &Broker, name: &str) -> bool {
    if !broker.delete_vhost(name) {
        return false;
    }
    if let Some(p) = broker.persistence() {
        p.delete_definition("vhost", name);
    }
    tracing::info!(vhost = %name, "vhost deleted with its queues, exchanges and messages");
    true
}

/// Keeps the broker's vhosts equal to the user database's list: `tributary
/// vhost add` and `vhost delete` (or the HTTP API) edit the file, and this
/// creates or deletes the vhosts within a sweep interval.
pub async fn follow(
    broker: Arc<tributary_core::Broker>,
    users: Arc<UserDb>,
    registry: Arc<Registry>,
    max_queues: usize,
    shutdown: CancellationToken,
) {
    let mut seen = users.generation();
    let mut every = tokio::time::interval(FOLLOW_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                let now = users.generation();
                if now == seen {
                    continue;
                }
                seen = now;
                sync(&broker, &users, max_queues);
                close_orphans(&broker, &registry);
            }
        }
    }
}

/// Closes the connections whose vhost was deleted, the protocol's way
/// (AMQP: 320 CONNECTION_FORCED, as RabbitMQ does).
fn close_orphans(broker: &Broker, registry: &Registry) {
    for conn in registry.list() {
        let vhost = conn.vhost();
        if !vhost.is_empty() && broker.vhost(&vhost).is_none() {
            tracing::info!(connection = %conn.name(), vhost = %vhost, "closing a connection to a deleted vhost");
            conn.request_close(&format!("vhost '{vhost}' is deleted"));
        }
    }
}

/// One reconciliation of [`follow`].
pub fn sync(broker: &tributary_core::Broker, users: &UserDb, max_queues: usize) {
    let wanted = users.vhosts();
    for record in &wanted {
        let limit = record
            .limits
            .max_queues
            .map_or(max_queues, |m| usize::try_from(m).unwrap_or(usize::MAX));
        ensure(broker, record).set_max_queues(limit);
    }
    for vhost in broker.vhosts() {
        if !wanted.iter().any(|r| r.name == vhost.name()) {
            delete(broker, vhost.name());
        }
    }
}
