//! The connection registry: every open connection of every protocol (AMQP,
//! MQTT and XMPP, over TCP, TLS and WebSocket) with who it is, where it comes
//! from and what it has moved, for the management API and the metrics.
//!
//! A driver calls [`Registry::register`] when it accepts a connection and
//! keeps the returned [`Registration`] for the connection's life; dropping it
//! removes the entry (and adds its counters to the protocol's totals, so
//! rates and totals survive the connection). The driver also selects on
//! [`ConnInfo::close_requested`] to close the connection the protocol's way
//! when an operator asks for it (`DELETE /api/connections/{name}`).
//!
//! Which listener a connection came in on is known where it was accepted,
//! not always in the driver (MQTT over TLS and WebSocket share the generic
//! driver): the accepting code wraps the driver in [`Transport::scope`].

use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The protocols a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// AMQP 0-9-1.
    Amqp,
    /// MQTT 3.1, 3.1.1 or 5.0.
    Mqtt,
    /// XMPP client-to-server.
    Xmpp,
    /// CoAP over UDP or DTLS: one entry per peer address.
    Coap,
    /// The Kafka protocol.
    Kafka,
}

impl Protocol {
    /// Every protocol, in a stable order (for metrics).
    pub const ALL: [Protocol; 5] = [
        Protocol::Amqp,
        Protocol::Mqtt,
        Protocol::Xmpp,
        Protocol::Coap,
        Protocol::Kafka,
    ];

    /// The lower-case name used in metrics labels and the API's `protocol` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Amqp => "amqp",
            Protocol::Mqtt => "mqtt",
            Protocol::Xmpp => "xmpp",
            Protocol::Coap => "coap",
            Protocol::Kafka => "kafka",
        }
    }

    /// RabbitMQ's `protocol` field text ("AMQP 0-9-1", "MQTT 3.1.1", ...).
    pub fn display(self) -> &'static str {
        match self {
            Protocol::Amqp => "AMQP 0-9-1",
            Protocol::Mqtt => "MQTT",
            Protocol::Xmpp => "XMPP",
            Protocol::Coap => "CoAP",
            Protocol::Kafka => "Kafka",
        }
    }

    fn index(self) -> usize {
        match self {
            Protocol::Amqp => 0,
            Protocol::Mqtt => 1,
            Protocol::Xmpp => 2,
            Protocol::Coap => 3,
            Protocol::Kafka => 4,
        }
    }
}

/// The listener a connection came in on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transport {
    /// The local address the client connected to, when known.
    pub local: Option<SocketAddr>,
    /// TLS from the first byte (direct TLS); STARTTLS is reported later by
    /// [`ConnInfo::set_tls`].
    pub tls: bool,
    /// Carried over WebSocket frames.
    pub websocket: bool,
}

tokio::task_local! {
    static TRANSPORT: Transport;
}

impl Transport {
    /// Runs `fut` (a connection's driver) with this transport visible to
    /// [`Transport::current`].
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        TRANSPORT.scope(self, fut).await
    }

    /// The transport set by the enclosing [`Transport::scope`], if any.
    pub fn current() -> Option<Transport> {
        TRANSPORT.try_with(|t| *t).ok()
    }
}

/// Byte and message counters of one connection (or of all closed
/// connections of one protocol).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from the client.
    pub bytes_in: AtomicU64,
    /// Bytes written to the client.
    pub bytes_out: AtomicU64,
    /// Messages the client published (AMQP basic.publish, MQTT PUBLISH, XMPP stanzas).
    pub messages_in: AtomicU64,
    /// Messages delivered to the client.
    pub messages_out: AtomicU64,
}

impl Counters {
    /// Adds `n` read bytes.
    pub fn read(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds `n` written bytes.
    pub fn wrote(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts one message from the client.
    pub fn message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message to the client.
    pub fn message_out(&self) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
    }

    /// A plain copy: (bytes in, bytes out, messages in, messages out).
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.messages_in.load(Ordering::Relaxed),
            self.messages_out.load(Ordering::Relaxed),
        ]
    }

    fn add(&self, other: &Counters) {
        let [a, b, c, d] = other.snapshot();
        self.bytes_in.fetch_add(a, Ordering::Relaxed);
        self.bytes_out.fetch_add(b, Ordering::Relaxed);
        self.messages_in.fetch_add(c, Ordering::Relaxed);
        self.messages_out.fetch_add(d, Ordering::Relaxed);
    }
}

/// What the registry knows about one open connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// Unique for the broker's lifetime.
    pub id: u64,
    /// Protocol.
    pub protocol: Protocol,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener it came in on.
    pub transport: Transport,
    /// When it was accepted, in ms since the Unix epoch.
    pub connected_at: u64,
    /// Traffic.
    pub counters: Counters,
    tls: AtomicBool,
    details: Mutex<Details>,
    close: CancellationToken,
}

#[derive(Debug, Default, Clone)]
struct Details {
    user: String,
    vhost: String,
    client: String,
    channels: BTreeSet<u16>,
    close_reason: Option<String>,
}

impl ConnInfo {
    /// RabbitMQ's connection name, `peer -> local` (unique among open
    /// connections: two cannot share a client address and port).
    pub fn name(&self) -> String {
        match self.transport.local {
            Some(local) => format!("{} -> {}", self.peer, local),
            None => format!("{} -> ?", self.peer),
        }
    }

    /// The local port (0 when unknown).
    pub fn port(&self) -> u16 {
        self.transport.local.map_or(0, |l| l.port())
    }

    /// The authenticated user ("" before authentication).
    pub fn user(&self) -> String {
        self.details.lock().user.clone()
    }

    /// Records the authenticated user.
    pub fn set_user(&self, user: &str) {
        self.details.lock().user = user.to_string();
    }

    /// The virtual host ("" before it is known).
    pub fn vhost(&self) -> String {
        self.details.lock().vhost.clone()
    }

    /// Records the virtual host.
    pub fn set_vhost(&self, vhost: &str) {
        self.details.lock().vhost = vhost.to_string();
    }

    /// The protocol's own client name: MQTT client id, XMPP full JID.
    pub fn client(&self) -> String {
        self.details.lock().client.clone()
    }

    /// Records the client name.
    pub fn set_client(&self, client: &str) {
        self.details.lock().client = client.to_string();
    }

    /// Whether the connection is encrypted.
    pub fn tls(&self) -> bool {
        self.tls.load(Ordering::Relaxed)
    }

    /// Marks the connection encrypted (after STARTTLS).
    pub fn set_tls(&self) {
        self.tls.store(true, Ordering::Relaxed);
    }

    /// An AMQP channel was opened.
    pub fn channel_opened(&self, channel: u16) {
        self.details.lock().channels.insert(channel);
    }

    /// An AMQP channel was closed.
    pub fn channel_closed(&self, channel: u16) {
        self.details.lock().channels.remove(&channel);
    }

    /// Open AMQP channel numbers.
    pub fn channels(&self) -> Vec<u16> {
        self.details.lock().channels.iter().copied().collect()
    }

    /// Asks the connection's driver to close it the protocol's way.
    pub fn request_close(&self, reason: &str) {
        self.details.lock().close_reason = Some(reason.to_string());
        self.close.cancel();
    }

    /// Completes when an operator asked to close the connection.
    pub async fn close_requested(&self) {
        self.close.cancelled().await
    }

    /// Whether an operator asked to close the connection (for drivers that
    /// poll rather than await, such as CoAP's one task per listener).
    pub fn is_close_requested(&self) -> bool {
        self.close.is_cancelled()
    }

    /// The reason given to [`ConnInfo::request_close`].
    pub fn close_reason(&self) -> String {
        self.details
            .lock()
            .close_reason
            .clone()
            .unwrap_or_else(|| "Closed via management plugin".into())
    }
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Registry {
    conns: RwLock<BTreeMap<u64, Arc<ConnInfo>>>,
    next_id: AtomicU64,
    /// Counters of closed connections, by protocol.
    retired: [Counters; 5],
    /// Connections ever opened, by protocol.
    opened: [AtomicU64; 5],
}

/// A connection's place in the registry; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    info: Arc<ConnInfo>,
    registry: Arc<Registry>,
}

impl std::ops::Deref for Registration {
    type Target = ConnInfo;
    fn deref(&self) -> &ConnInfo {
        &self.info
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.conns.write().remove(&self.info.id);
        self.registry.retired[self.info.protocol.index()].add(&self.info.counters);
        // One line per connection that ends, the same for every protocol.
        let info = &self.info;
        let details = info.details.lock().clone();
        let [bytes_in, bytes_out, messages_in, messages_out] = info.counters.snapshot();
        tracing::info!(
            protocol = info.protocol.as_str(),
            peer = %info.peer,
            user = %details.user,
            vhost = %details.vhost,
            client = %details.client,
            duration_ms = now_ms().saturating_sub(info.connected_at),
            bytes_in,
            bytes_out,
            messages_in,
            messages_out,
            "connection closed"
        );
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registry {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    /// Registers a connection accepted just now. `transport` is the
    /// listener's, or the enclosing [`Transport::scope`]'s when `None`.
    pub fn register(
        self: &Arc<Self>,
        protocol: Protocol,
        peer: SocketAddr,
        transport: Option<Transport>,
    ) -> Registration {
        let transport = transport.or_else(Transport::current).unwrap_or_default();
        let info = Arc::new(ConnInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            protocol,
            peer,
            transport,
            connected_at: now_ms(),
            counters: Counters::default(),
            tls: AtomicBool::new(transport.tls),
            details: Mutex::new(Details::default()),
            close: CancellationToken::new(),
        });
        self.conns.write().insert(info.id, info.clone());
        self.opened[protocol.index()].fetch_add(1, Ordering::Relaxed);
        Registration {
            info,
            registry: self.clone(),
        }
    }

    /// The open connections, oldest first.
    pub fn list(&self) -> Vec<Arc<ConnInfo>> {
        self.conns.read().values().cloned().collect()
    }

    /// Finds an open connection by its [`ConnInfo::name`].
    pub fn find(&self, name: &str) -> Option<Arc<ConnInfo>> {
        self.conns
            .read()
            .values()
            .find(|c| c.name() == name)
            .cloned()
    }

    /// Totals of one protocol over closed and open connections:
    /// (bytes in, bytes out, messages in, messages out).
    pub fn totals(&self, protocol: Protocol) -> [u64; 4] {
        let mut sum = self.retired[protocol.index()].snapshot();
        for c in self.conns.read().values() {
            if c.protocol == protocol {
                for (s, v) in sum.iter_mut().zip(c.counters.snapshot()) {
                    *s += v;
                }
            }
        }
        sum
    }

    /// Connections ever opened with `protocol`.
    pub fn opened(&self, protocol: Protocol) -> u64 {
        self.opened[protocol.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_and_go_and_counters_are_kept() {
        let reg = Registry::new();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let a = reg.register(
            Protocol::Amqp,
            peer,
            Some(Transport {
                local: Some("127.0.0.1:5672".parse().unwrap()),
                ..Transport::default()
            }),
        );
        a.counters.read(10);
        a.counters.message_in();
        a.set_user("guest");
        assert_eq!(reg.list().len(), 1);
        let name = a.name();
        assert_eq!(name, "127.0.0.1:4000 -> 127.0.0.1:5672");
        assert_eq!(reg.find(&name).unwrap().user(), "guest");
        drop(a);
        assert!(reg.list().is_empty());
        assert_eq!(reg.totals(Protocol::Amqp), [10, 0, 1, 0]);
        assert_eq!(reg.opened(Protocol::Amqp), 1);
    }

    #[tokio::test]
    async fn a_close_request_wakes_the_driver_and_the_scope_sets_the_transport() {
        let reg = Registry::new();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let t = Transport {
            local: None,
            tls: false,
            websocket: true,
        };
        let r = t
            .scope(async { reg.register(Protocol::Mqtt, peer, None) })
            .await;
        assert!(r.transport.websocket);
        r.request_close("because");
        r.close_requested().await;
        assert_eq!(r.close_reason(), "because");
    }
}
