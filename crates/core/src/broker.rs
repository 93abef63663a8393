//! The broker: the set of virtual hosts every protocol shares.

use crate::persist::SharedPersistence;
use crate::vhost::VHost;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared, protocol-neutral broker state.
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    next_connection: AtomicU64,
    persistence: Option<SharedPersistence>,
}

impl Broker {
    /// A broker with the default vhost `/`; with `persistence`, durable
    /// definitions and persistent messages are written through it.
    pub fn new(persistence: Option<SharedPersistence>) -> Arc<Self> {
        let broker = Broker {
            vhosts: RwLock::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            persistence: persistence.clone(),
        };
        broker
            .vhosts
            .write()
            .insert("/".into(), VHost::new("/", persistence));
        Arc::new(broker)
    }

    /// The persistence layer, if any.
    pub fn persistence(&self) -> Option<&SharedPersistence> {
        self.persistence.as_ref()
    }

    /// Looks a vhost up.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// All vhosts.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().values().cloned().collect()
    }

    /// A fresh connection id, unique for the broker's lifetime.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
