//! What a persistent MQTT session keeps between connections besides its
//! queue: when it expires (v5 Session Expiry Interval), and its QoS 2
//! exchange state (packet ids received but not released, PUBRELs not yet
//! completed), so exactly-once holds across reconnects. Kept in memory and
//! in the store's `mqtt_sessions` table, written when a connection ends.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tributary_core::Broker;

/// Metadata table holding stored sessions.
pub const TABLE: &str = "mqtt_sessions";

/// The state of one stored session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredSession {
    /// When the session is removed (milliseconds since the epoch); `None`
    /// while connected or for a session that never expires.
    pub expires_at: Option<u64>,
    /// QoS 2 packet ids received from the client and not yet released.
    pub incoming_qos2: HashSet<u16>,
    /// Packet ids of our QoS 2 deliveries waiting for PUBCOMP.
    pub pubrel_pending: HashSet<u16>,
}

/// Stored sessions by client id.
#[derive(Default)]
pub struct SessionTable {
    sessions: Mutex<HashMap<String, StoredSession>>,
}

impl SessionTable {
    /// Loads the table from the store's rows.
    pub fn load(rows: Vec<(String, Vec<u8>)>) -> Arc<Self> {
        let mut sessions = HashMap::new();
        for (client_id, bytes) in rows {
            match serde_json::from_slice::<StoredSession>(&bytes) {
                Ok(s) => {
                    sessions.insert(client_id, s);
                }
                Err(e) => {
                    tracing::warn!(client_id, error = %e, "ignoring an unreadable stored MQTT session")
                }
            }
        }
        Arc::new(SessionTable {
            sessions: Mutex::new(sessions),
        })
    }

    /// A client connected and resumed its session: its state moves into
    /// the connection, and the session stops expiring.
    pub fn take(&self, broker: &Broker, client_id: &str) -> StoredSession {
        let taken = self.sessions.lock().remove(client_id);
        if taken.is_some()
            && let Some(p) = broker.persistence()
        {
            p.delete_definition(TABLE, client_id);
        }
        taken.unwrap_or_default()
    }

    /// A persistent session's connection ended.
    pub fn store(&self, broker: &Broker, client_id: &str, session: StoredSession) {
        if let Some(p) = broker.persistence()
            && let Ok(bytes) = serde_json::to_vec(&session)
        {
            p.put_definition(TABLE, client_id, &bytes);
        }
        self.sessions.lock().insert(client_id.to_string(), session);
    }

    /// Forgets a session (clean start, or it expired).
    pub fn forget(&self, broker: &Broker, client_id: &str) {
        if self.sessions.lock().remove(client_id).is_some()
            && let Some(p) = broker.persistence()
        {
            p.delete_definition(TABLE, client_id);
        }
    }

    /// Client ids whose sessions have expired by `now_ms`.
    pub fn expired(&self, now_ms: u64) -> Vec<String> {
        self.sessions
            .lock()
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|at| at <= now_ms))
            .map(|(id, _)| id.clone())
            .collect()
    }
}
