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

    /// Creates a vhost (`rabbitmqctl add_vhost`); an existing one is
    /// returned as is. Its queue limit starts as the default vhost's.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let mut vhosts = self.vhosts.write();
        if let Some(v) = vhosts.get(name) {
            return v.clone();
        }
        let v = VHost::new(name, self.persistence.clone(), self.budget.clone());
        v.set_max_queues(self.default_vhost.max_queues());
        vhosts.insert(name.into(), v.clone());
        v
    }

    /// Deletes a vhost and everything in it (`rabbitmqctl delete_vhost`);
    /// false when there is no such vhost. The default vhost `/` can be
    /// deleted too, as in RabbitMQ; [`Broker::default_vhost`] then still
    /// names the deleted object until `/` is created again.
    pub fn delete_vhost(&self, name: &str) -> bool {
        let Some(v) = self.vhosts.write().remove(name) else {
            return false;
        };
        v.destroy();
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueOptions;

    #[test]
    fn vhosts_are_created_isolated_and_deleted_with_their_contents() {
        let broker = Broker::new(None, 1 << 20);
        let a = broker.add_vhost("a");
        assert!(Arc::ptr_eq(&a, &broker.add_vhost("a")), "idempotent");
        a.declare_queue("q", false, QueueOptions::default(), 1)
            .unwrap();
        a.declare_exchange("x", "fanout", false, |kind| {
            crate::exchange::ExchangeOptions {
                delayed: false,
                kind,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: Default::default(),
            }
        })
        .unwrap();
        assert!(broker.default_vhost().queue("q", 1).is_err(), "isolated");
        assert!(broker.delete_vhost("a"));
        assert!(!broker.delete_vhost("a"));
        assert!(a.is_deleted());
        assert!(a.queues().is_empty());
        assert!(a.exchange("x").is_err());
        assert!(a.exchange("amq.topic").is_ok(), "standard exchanges stay");
        assert!(broker.vhost("a").is_none());
        let again = broker.add_vhost("a");
        assert!(!again.is_deleted() && again.queues().is_empty());
    }
}
