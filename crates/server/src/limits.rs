//! Limits shared by every protocol (`[limits]`, docs/security.md): how many
//! connections may be open at once, overall and per user, and the token
//! bucket that paces a client's input.
//!
//! Every connection takes a [`ConnectionSlot`] when it is accepted (AMQP,
//! MQTT and XMPP, over TCP, TLS and WebSocket alike) and gives it back when it
//! ends, whatever way it ends: the slot is released on drop. A connection
//! accepted past the limit gets no slot and is refused the protocol's way once
//! it has said enough to be answered (AMQP connection.open, MQTT CONNECT, the
//! XMPP stream header); until then the handshake timeout bounds it. A
//! [`UserSlot`] is taken once the client has authenticated.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The connection limits, shared by every listener.
#[derive(Debug)]
pub struct Limits {
    /// Connections open at once (0 = no limit).
    max_connections: usize,
    /// Connections per user (0 = no limit).
    max_per_user: usize,
    /// Admitted connections open now.
    open: AtomicUsize,
    /// Authenticated connections per user, for users that have any.
    users: Mutex<HashMap<String, usize>>,
    /// Every open connection, for the management API and metrics.
    registry: Arc<crate::registry::Registry>,
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The broker-wide limit was reached (the number is the limit).
    Node(usize),
    /// The user's limit was reached.
    User {
        /// The user.
        user: String,
        /// The limit.
        limit: usize,
    },
    /// The vhost's `max-connections` was reached.
    Vhost {
        /// The vhost.
        vhost: String,
        /// The user asking.
        user: String,
        /// The limit.
        limit: u64,
    },
}

impl Refusal {
    /// RabbitMQ's reply text for connection.close 530 NOT_ALLOWED.
    pub fn amqp_text(&self) -> String {
        match self {
            Refusal::Node(limit) => {
                format!(
                    "NOT_ALLOWED - connection refused: node connection limit ({limit}) is reached"
                )
            }
            Refusal::User { user, limit } => format!(
                "NOT_ALLOWED - connection refused for user '{user}': user connection limit ({limit}) is reached"
            ),
            Refusal::Vhost { vhost, user, limit } => format!(
                "NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
            ),
        }
    }

    /// A short text for logs and XMPP stream errors.
    pub fn text(&self) -> String {
        match self {
            Refusal::Node(limit) => format!("connection limit ({limit}) reached"),
            Refusal::User { user, limit } => {
                format!("connection limit for user '{user}' ({limit}) reached")
            }
            Refusal::Vhost { vhost, limit, .. } => {
                format!("connection limit of vhost '{vhost}' ({limit}) reached")
            }
        }
    }
}

impl Limits {
    /// Limits with `max_connections` overall and `max_per_user` per user (0 = none).
    pub fn new(max_connections: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Limits {
            max_connections,
            max_per_user,
            open: AtomicUsize::new(0),
            users: Mutex::new(HashMap::new()),
            registry: crate::registry::Registry::new(),
        })
    }

    /// The registry of open connections, which every driver joins at accept.
    pub fn registry(&self) -> &Arc<crate::registry::Registry> {
        &self.registry
    }

    /// Admits one more connection if the limit allows; the slot is held
    /// until dropped. `Err` carries the refusal to give the client.
    pub fn admit(self: &Arc<Self>) -> Result<ConnectionSlot, Refusal> {
        let max = self.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .map(|_| ConnectionSlot {
                limits: self.clone(),
            })
            .map_err(|_| Refusal::Node(max))
    }

    /// Counts one more connection of `user` if the per-user limit allows.
    pub fn admit_user(self: &Arc<Self>, user: &str) -> Result<UserSlot, Refusal> {
        let max = self.max_per_user;
        let mut users = self.users.lock();
        if max != 0 && users.get(user).is_some_and(|&n| n >= max) {
            return Err(Refusal::User {
                user: user.to_string(),
                limit: max,
            });
        }
        *users.entry(user.to_string()).or_insert(0) += 1;
        Ok(UserSlot {
            limits: self.clone(),
            user: user.to_string(),
        })
    }

    /// Whether there is a per-user limit at all.
    pub fn limits_users(&self) -> bool {
        self.max_per_user != 0
    }

    /// Checks the vhost's `max-connections` for a connection about to use
    /// it; `already_counted` when the registry lists this connection in
    /// the vhost already.
    pub fn admit_vhost(
        &self,
        vhost: &str,
        user: &str,
        limit: Option<u64>,
        already_counted: bool,
    ) -> Result<(), Refusal> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let open = self
            .registry
            .list()
            .iter()
            .filter(|c| c.vhost() == vhost)
            .count() as u64;
        let after = if already_counted { open } else { open + 1 };
        if after > limit {
            return Err(Refusal::Vhost {
                vhost: vhost.into(),
                user: user.into(),
                limit,
            });
        }
        Ok(())
    }

    /// Admitted connections open now.
    #[cfg(test)]
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections `user` has open now (authenticated ones).
    #[cfg(test)]
    pub fn user_connections(&self, user: &str) -> usize {
        self.users.lock().get(user).copied().unwrap_or(0)
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<Limits>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One authenticated connection of a user; dropping it frees its place.
#[derive(Debug)]
pub struct UserSlot {
    limits: Arc<Limits>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.limits.users.lock();
        if let Some(count) = users.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up. Taking
/// may overdraw it; the owner then waits until [`TokenBucket::ready_at`].
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: u32, now: Instant) -> Option<Self> {
        (rate > 0).then(|| TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens, overdrawing if need be.
    pub fn take(&mut self, n: u32, now: Instant) {
        self.refill(now);
        self.tokens -= f64::from(n);
    }

    /// When the bucket is no longer overdrawn; `None` if it is not now.
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        (self.tokens < 0.0).then(|| now + Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_counted_and_released() {
        let limits = Limits::new(2, 0);
        let a = limits.admit().unwrap();
        let b = limits.admit().unwrap();
        assert_eq!(limits.admit().unwrap_err(), Refusal::Node(2));
        assert_eq!(limits.open_connections(), 2);
        drop(a);
        let c = limits.admit().unwrap();
        drop((b, c));
        assert_eq!(limits.open_connections(), 0);
        assert_eq!(
            Refusal::Node(2).amqp_text(),
            "NOT_ALLOWED - connection refused: node connection limit (2) is reached"
        );
    }

    #[test]
    fn no_limit_when_zero() {
        let limits = Limits::new(0, 0);
        let slots: Vec<_> = (0..1000).map(|_| limits.admit().unwrap()).collect();
        let users: Vec<_> = (0..1000).map(|_| limits.admit_user("u").unwrap()).collect();
        assert_eq!(limits.open_connections(), 1000);
        assert_eq!(limits.user_connections("u"), 1000);
        drop((slots, users));
        assert_eq!(limits.open_connections(), 0);
        assert_eq!(limits.user_connections("u"), 0);
    }

    #[test]
    fn user_slots_are_per_user() {
        let limits = Limits::new(0, 1);
        let a = limits.admit_user("alice").unwrap();
        let refusal = limits.admit_user("alice").unwrap_err();
        assert_eq!(
            refusal.amqp_text(),
            "NOT_ALLOWED - connection refused for user 'alice': user connection limit (1) is reached"
        );
        let b = limits.admit_user("bob").unwrap();
        drop(a);
        let a2 = limits.admit_user("alice").unwrap();
        drop((a2, b));
        assert!(limits.users.lock().is_empty());
    }

    #[test]
    fn token_bucket_paces_after_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 10, t0).unwrap();
        bucket.take(10, t0);
        assert_eq!(bucket.ready_at(t0), None);
        bucket.take(5, t0);
        let ready = bucket.ready_at(t0).unwrap();
        let wait = ready - t0;
        assert!(
            wait >= Duration::from_millis(49) && wait <= Duration::from_millis(51),
            "{wait:?}"
        );
        assert_eq!(bucket.ready_at(t0 + Duration::from_millis(51)), None);
        // Idle time refills at most to the burst.
        let later = t0 + Duration::from_secs(60);
        bucket.take(10, later);
        assert_eq!(bucket.ready_at(later), None);
        bucket.take(1, later);
        assert!(bucket.ready_at(later).is_some());
        assert!(TokenBucket::new(0, 10, t0).is_none());
    }
}
