//! MQTT at the edge (early: clean sessions only). An MQTT client's
//! subscriptions are one queue bound to `amq.topic` (topic `a/b` as routing
//! key `a.b`, `+` as `*`, `#` as `#`), as RabbitMQ's MQTT plugin does, so
//! MQTT and AMQP share one routing core. See docs/mqtt.md for what works.

pub mod driver;
mod session;
pub mod stored;
pub mod sys;

use parking_lot::Mutex;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Live MQTT connections by client id, for session takeover: a second
/// connection with the same id disconnects the first (MQTT 5 reason 0x8E).
#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>,
}

impl Registry {
    /// Registers `conn` under `client_id`, telling a previous holder to go.
    pub fn claim(&self, client_id: &str, conn: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Some((_, old)) = self
            .clients
            .lock()
            .insert(client_id.to_string(), (conn, tx))
        {
            let _ = old.send(());
        }
        rx
    }

    /// How many clients are connected.
    pub fn connected(&self) -> usize {
        self.clients.lock().len()
    }

    /// True when some connection holds `client_id` now.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.clients.lock().contains_key(client_id)
    }

    /// True when another connection than `conn` holds `client_id` now.
    pub fn is_connected_elsewhere(&self, client_id: &str, conn: u64) -> bool {
        self.clients
            .lock()
            .get(client_id)
            .is_some_and(|(c, _)| *c != conn)
    }

    /// Removes `conn`'s registration if it still holds `client_id`.
    pub fn release(&self, client_id: &str, conn: u64) {
        let mut clients = self.clients.lock();
        if clients.get(client_id).is_some_and(|(c, _)| *c == conn) {
            clients.remove(client_id);
        }
    }
}
