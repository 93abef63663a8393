//! The table of live CoAP observations, shared by the CoAP listeners
//! (which add and remove entries) and the management API
//! (`/api/coap/observations`, the per-connection count in
//! `/api/connections`, and `tributary_coap_observations` in `/metrics`).

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One observation as the management API shows it.
#[derive(Debug, Clone)]
pub struct ObservationInfo {
    /// The peer's connection name in the registry (`peer -> local`).
    pub connection: String,
    /// The observer's address.
    pub peer: SocketAddr,
    /// The broker user it observes as.
    pub user: String,
    /// Its vhost.
    pub vhost: String,
    /// The MQTT topic filter observed.
    pub filter: String,
    /// The queue behind it (`coap-observe-…`).
    pub queue: String,
    /// Whether notifications are confirmable.
    pub confirmable: bool,
    /// When it was registered, in ms since the Unix epoch.
    pub since: u64,
    /// Notifications sent so far.
    pub notifications: Arc<AtomicU64>,
}

impl ObservationInfo {
    /// Notifications sent so far.
    pub fn notifications(&self) -> u64 {
        self.notifications.load(Ordering::Relaxed)
    }
}

/// Every listener's observations, keyed by (listener id, observation id).
/// Clones share one table.
#[derive(Debug, Clone, Default)]
pub struct Observations(Arc<RwLock<BTreeMap<(u64, u64), ObservationInfo>>>);

impl Observations {
    /// Adds (or replaces) an observation.
    pub fn insert(&self, listener: u64, id: u64, info: ObservationInfo) {
        self.0.write().insert((listener, id), info);
    }

    /// Removes an observation.
    pub fn remove(&self, listener: u64, id: u64) {
        self.0.write().remove(&(listener, id));
    }

    /// A copy of every observation, in registration order per listener.
    pub fn list(&self) -> Vec<ObservationInfo> {
        self.0.read().values().cloned().collect()
    }

    /// How many observations there are.
    pub fn count(&self) -> usize {
        self.0.read().len()
    }

    /// How many observations the connection named `connection` holds.
    pub fn count_for(&self, connection: &str) -> usize {
        self.0
            .read()
            .values()
            .filter(|o| o.connection == connection)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(connection: &str) -> ObservationInfo {
        ObservationInfo {
            connection: connection.into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            user: "guest".into(),
            vhost: "/".into(),
            filter: "a/#".into(),
            queue: "q".into(),
            confirmable: false,
            since: 0,
            notifications: Arc::default(),
        }
    }

    #[test]
    fn counts_per_connection_and_in_all() {
        let t = Observations::default();
        t.insert(1, 1, info("a"));
        t.insert(1, 2, info("a"));
        t.insert(2, 1, info("b"));
        assert_eq!((t.count(), t.count_for("a"), t.count_for("b")), (3, 2, 1));
        t.remove(1, 2);
        assert_eq!((t.count(), t.count_for("a")), (2, 1));
        assert_eq!(t.list().len(), 2);
    }
}
