//! The broker: the set of virtual hosts every protocol shares.

use crate::persist::{MemoryBudget, SharedPersistence};
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
    budget: Arc<MemoryBudget>,
    default_vhost: Arc<VHost>,
}

impl Broker {
    /// A broker with the default vhost `/`; with `persistence`, durable
    /// definitions and persistent messages are written through it.
    pub fn new(persistence: Option<SharedPersistence>, memory_budget: usize) -> Arc<Self> {
        let budget = Arc::new(MemoryBudget::new(memory_budget));
        let default_vhost = VHost::new("/", persistence.clone(), budget.clone());
        let broker = Broker {
            vhosts: RwLock::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            persistence,
            budget,
            default_vhost: default_vhost.clone(),
        };
        broker.vhosts.write().insert("/".into(), default_vhost);
        Arc::new(broker)
    }

    /// The default vhost `/`, which always exists.
    pub fn default_vhost(&self) -> &Arc<VHost> {
        &self.default_vhost
    }

    /// The memory budget for message bodies in queues.
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
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

    /// The periodic sweep of every vhost (message TTLs, `x-expires`); the
    /// server calls it a few times a second.
    pub fn tick(&self) {
        let now = crate::args::now_ms();
        for v in self.vhosts() {
            v.tick(now);
        }
    }

    /// A fresh connection id, unique for the broker's lifetime.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
