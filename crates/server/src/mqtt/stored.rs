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
    /// The Session Expiry Interval in seconds (`None`: never expires), so a
    /// session that was connected when the broker stopped still expires.
    #[serde(default)]
    pub expiry_secs: Option<u32>,
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
    /// Loads the table from the store's rows. A session that was connected
    /// when the broker stopped ended then: its expiry starts now.
    pub fn load(rows: Vec<(String, Vec<u8>)>) -> Arc<Self> {
        let now = tributary_core::args::now_ms();
        let mut sessions = HashMap::new();
        for (client_id, bytes) in rows {
            match serde_json::from_slice::<StoredSession>(&bytes) {
                Ok(mut s) => {
                    if s.expires_at.is_none()
                        && let Some(secs) = s.expiry_secs
                    {
                        s.expires_at = Some(now + u64::from(secs) * 1000);
                    }
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

    /// Whether a stored session exists for `client_id`.
    pub fn contains(&self, client_id: &str) -> bool {
        self.sessions.lock().contains_key(client_id)
    }

    /// A client connected with a persistent session: its stored state moves
    /// into the connection, and the row now says "connected" (no deadline,
    /// but the interval, in case the broker stops before the client does).
    pub fn take(
        &self,
        broker: &Broker,
        client_id: &str,
        expiry_secs: Option<u32>,
    ) -> StoredSession {
        let taken = self.sessions.lock().remove(client_id);
        let connected = StoredSession {
            expiry_secs,
            ..StoredSession::default()
        };
        if let Some(p) = broker.persistence()
            && let Ok(bytes) = serde_json::to_vec(&connected)
        {
            p.put_definition(TABLE, client_id, &bytes);
        }
        self.sessions
            .lock()
            .insert(client_id.to_string(), connected);
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

    /// Sessions stored (connected or not) in `vhost`.
    pub fn count_in(&self, vhost: &str) -> u64 {
        self.sessions
            .lock()
            .keys()
            .filter(|k| super::session::unscope(k).0 == vhost)
            .count() as u64
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
