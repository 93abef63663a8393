//! MQTT at the edge (early: clean sessions only). An MQTT client's
//! subscriptions are one queue bound to `amq.topic` (topic `a/b` as routing
//! key `a.b`, `+` as `*`, `#` as `#`), as RabbitMQ's MQTT plugin does, so
//! MQTT and AMQP share one routing core. See docs/mqtt.md for what works.

pub mod driver;
mod session;
pub use session::{RetainedMap, login_target, route, scoped, set_retained, unscope};
pub mod stored;
pub mod sys;

use parking_lot::Mutex;
use std::collections::HashMap;
use tokio::sync::{oneshot, watch};

/// Live MQTT connections by client id, for session takeover: a second
/// connection with the same id disconnects the first (MQTT 5 reason 0x8E).
#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, Holder>>,
}

/// The connection holding a client id: how to tell it to go, and how to
/// learn that it has gone (its session state saved).
struct Holder {
    conn: u64,
    takeover: oneshot::Sender<()>,
    closed: watch::Receiver<bool>,
}

impl Registry {
    /// Registers `conn` under `client_id`, telling a previous holder to go.
    /// Returns this connection's takeover signal and, when there was a
    /// previous holder, a receiver that turns true once it has closed.
    pub fn claim(
        &self,
        client_id: &str,
        conn: u64,
        closed: watch::Receiver<bool>,
    ) -> (oneshot::Receiver<()>, Option<watch::Receiver<bool>>) {
        let (tx, rx) = oneshot::channel();
        let holder = Holder {
            conn,
            takeover: tx,
            closed,
        };
        let previous = self.clients.lock().insert(client_id.to_string(), holder);
        let old_closed = previous.and_then(|old| {
            (old.conn != conn).then(|| {
                let _ = old.takeover.send(());
                old.closed
            })
        });
        (rx, old_closed)
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
            .is_some_and(|h| h.conn != conn)
    }

    /// Removes `conn`'s registration if it still holds `client_id`.
    pub fn release(&self, client_id: &str, conn: u64) {
        let mut clients = self.clients.lock();
        if clients.get(client_id).is_some_and(|h| h.conn == conn) {
            clients.remove(client_id);
        }
    }
}
