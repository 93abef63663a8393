//! One MQTT connection's broker-side logic over the core: CONNECT, PUBLISH in
//! (QoS 0, 1, 2), SUBSCRIBE/UNSUBSCRIBE as bindings of the client's queue on
//! `amq.topic`, deliveries out (QoS 0 and 1, 2), wills, retained messages.

use crate::mailbox::UnboundedSender;
use crate::users::{Access, DEFAULT_VHOST, UserDb};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tributary_core::{
    Broker, ConsumerOptions, ConsumerSink, Delivery, Entry, Message, Properties, Queue,
    QueueOptions, Table, VHost, Value,
};
use tributary_mqtt::topic::{
    filter_to_routing_key, routing_key_to_topic, topic_to_routing_key, validate_topic_filter,
};
use tributary_mqtt::{
    ConnAck, Connect, Packet, ProtocolVersion, PubAck as PubAckLike, Publish, QoS, ReasonCode,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};

/// The exchange MQTT topics live on.
pub const TOPIC_EXCHANGE: &str = "amq.topic";
/// Topic aliases a client may set (v5).
const TOPIC_ALIAS_MAXIMUM: u16 = 16;
/// Binding argument holding a subscription's granted QoS.
const QOS_ARG: &str = "x-mqtt-qos";
/// Header naming the MQTT client that published a message (for No Local).
const PUBLISHER_HEADER: &str = "x-mqtt-publisher";
/// Header set on messages whose v5 Payload Format Indicator said UTF-8 (forwarded as is).
const PAYLOAD_FORMAT_HEADER: &str = "x-mqtt-payload-format";
/// Header set on messages published with the retain flag (for Retain As Published).
const RETAIN_HEADER: &str = "x-mqtt-retain";
/// Header carrying the QoS a message was published with over MQTT.
const QOS_HEADER: &str = "x-mqtt-publish-qos";
/// Default deliveries in flight to one client before the queue waits
/// (`[mqtt] max_inflight`; a v5 client's lower Receive Maximum wins).
const INFLIGHT: u32 = 64;
/// Default Receive Maximum (v5, `[mqtt] receive_maximum`): QoS 2 exchanges a
/// client may keep open towards us. Generous, because clients such as
/// mqtt.js pipeline publishes; MQTT 3.1.1 has no such limit (packet ids
/// bound it at 65535).
const RECEIVE_MAXIMUM: u16 = 1024;
/// Default largest packet accepted (`[mqtt] max_packet_size`).
const MAX_PACKET_SIZE: u32 = 16 * 1024 * 1024;

/// What a queue sends to an MQTT connection task.
pub enum Outbound {
    /// A message for the client.
    Deliver(Delivery),
    /// A PUBACK/PUBREC whose message is now on disk.
    Send(Box<Packet>),
}

/// The MQTT side of the client's queue consumer.
pub struct Sink {
    tx: UnboundedSender<Outbound>,
    inflight: Arc<AtomicU32>,
    limit: u32,
    live: AtomicBool,
}

impl ConsumerSink for Sink {
    fn try_reserve(&self) -> bool {
        self.live.load(Ordering::Acquire)
            && self
                .inflight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.limit).then_some(n + 1)
                })
                .is_ok()
    }

    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        match self.tx.send(Outbound::Deliver(delivery)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inflight.fetch_sub(1, Ordering::AcqRel);
                match e.0 {
                    Outbound::Deliver(d) => Err(d),
                    Outbound::Send(_) => Ok(()),
                }
            }
        }
    }

    fn cancelled(&self) {
        self.live.store(false, Ordering::Release);
    }

    fn unreserve(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where an MQTT 5 enhanced authentication (SCRAM, [`Session::enhanced_auth`]) leaves the
/// CONNECT it started with.
pub enum AuthFlow {
    /// An AUTH challenge was written: wait for the client's answer.
    Continue,
    /// The exchange is over (whatever its outcome): handle this CONNECT as usual; its CONNACK
    /// carries the outcome.
    Connect(Box<Connect>),
    /// The client broke the exchange off (DISCONNECT, or a protocol error whose CONNACK was
    /// written): close.
    Close,
}

/// The SCRAM exchange of one CONNECT, between its AUTH packets.
struct PendingAuth {
    /// The CONNECT waiting for the outcome (none for a re-authentication).
    connect: Option<Box<Connect>>,
    method: String,
    login: crate::scram::ScramLogin,
}

/// What a SCRAM exchange ended with: the user and server-final-message, or why not.
type AuthOutcome = Result<(String, Bytes), crate::scram::Refusal>;

/// The SCRAM hash an MQTT 5 Authentication Method names (SASL mechanism names, as
/// RabbitMQ and EMQX use them), if it is one the broker speaks.
fn scram_method(method: &str) -> Option<tributary_sasl::ScramHash> {
    match tributary_sasl::ScramHash::from_mechanism(method) {
        Some((hash, false)) => Some(hash),
        _ => None,
    }
}

/// An AUTH packet of `method` carrying `data`.
fn auth_packet(reason_code: ReasonCode, method: &str, data: Vec<u8>) -> Packet {
    let mut a = tributary_mqtt::Auth {
        reason_code,
        ..Default::default()
    };
    a.properties.authentication_method = Some(method.to_owned());
    a.properties.authentication_data = Some(Bytes::from(data));
    Packet::Auth(a)
}

/// Why the connection ends.
pub enum End {
    /// Keep going.
    No,
    /// Close; send this packet first if any; publish the will unless it was a clean DISCONNECT.
    Close {
        packet: Option<Box<Packet>>,
        will: bool,
    },
}

/// Broker-side state of one MQTT connection.
pub struct Session {
    pub(super) id: u64,
    peer: SocketAddr,
    broker: Arc<Broker>,
    users: Arc<UserDb>,
    /// The authenticated user (guest for anonymous clients).
    user: String,
    /// The user database generation under which write access to `amq.topic`
    /// was last granted: PUBLISH checks it once, not per message.
    publish_permit: Option<u64>,
    pub(super) version: Option<ProtocolVersion>,
    pub(super) client_id: String,
    /// Whether the user has topic permissions in the vhost, by user
    /// database generation (most users have none: no per-message check).
    topic_permissions: Option<(u64, bool)>,
    /// The vhost the client logged into (`vhost:user`, or `[mqtt] vhost`).
    vhost: Arc<VHost>,
    /// `[mqtt] vhost`: where a username without a vhost prefix goes.
    pub(super) default_vhost: String,
    /// The broker's connection limits and registry (per-vhost limits).
    pub(super) limits: Option<Arc<crate::limits::Limits>>,
    /// The client id scoped by vhost: the key of the takeover registry and
    /// the stored-session table (client ids are per vhost).
    pub(super) session_key: String,
    pub(super) keep_alive: u16,
    /// `[mqtt] max_keep_alive` (v5 Server Keep Alive above it).
    pub(super) max_keep_alive: u16,
    /// `[mqtt] ssl_cert_login`: the user name of the client's verified TLS
    /// certificate, set by the driver only when that option is on.
    pub(super) cert_user: Option<String>,
    /// A SCRAM exchange under way (before CONNACK, or a re-authentication).
    pending_auth: Option<PendingAuth>,
    /// How the CONNECT's SCRAM exchange ended, until its CONNACK.
    auth_outcome: Option<AuthOutcome>,
    /// The Authentication Method the client logged in with (re-authentication uses it).
    auth_method: Option<String>,
    will: Option<tributary_mqtt::Will>,
    queue: Option<Arc<Queue>>,
    sink: Option<Arc<Sink>>,
    /// Clean session 0 (3.x) / clean start 0 with a session expiry (5): the
    /// session's queue is durable and outlives the connection (and restarts).
    persistent: bool,
    /// v5 Session Expiry Interval in seconds (3.x: 0 or forever).
    session_expiry: u32,
    inflight: Arc<AtomicU32>,
    /// Set by the driver while the client does not keep up
    /// (`[limits] max_buffered_bytes`): QoS 0 deliveries are dropped.
    pub(super) drop_qos0: bool,
    /// QoS 0 deliveries dropped so far.
    pub(super) dropped: u64,
    filters: HashMap<String, QoS>,
    /// v5 No Local / Retain As Published by filter.
    sub_flags: HashMap<String, (bool, bool)>,
    /// v5 Subscription Identifiers by filter.
    subscription_ids: HashMap<String, u32>,
    /// v5 inbound Topic Aliases.
    aliases: HashMap<u16, String>,
    /// min(the client's Receive Maximum, ours): deliveries in flight.
    receive_maximum: u32,
    /// `[mqtt] max_inflight`: the most deliveries in flight.
    max_inflight: u32,
    /// `[mqtt] receive_maximum`: our Receive Maximum (QoS 2 publishes unreleased).
    our_receive_maximum: u16,
    /// `[mqtt] max_packet_size`: our Maximum Packet Size, advertised to v5 clients.
    our_max_packet_size: u32,
    /// `$share/{group}/{filter}` subscriptions: the group's queue and our consumer tag on it.
    shared: HashMap<String, (Arc<Queue>, Arc<str>)>,
    next_packet_id: u16,
    outgoing: HashMap<u16, (Arc<Queue>, Entry)>,
    incoming_qos2: HashSet<u16>,
    /// Our QoS 2 deliveries acknowledged with PUBREC, waiting for PUBCOMP.
    pubrel_pending: HashSet<u16>,
    /// The client's Maximum Packet Size (v5): larger deliveries are dropped.
    max_packet_size: Option<u32>,
    /// The client's Topic Alias Maximum (v5) and the aliases we assigned.
    client_alias_max: u16,
    out_aliases: HashMap<String, u16>,
    /// Packets to send right after CONNACK (PUBRELs of a resumed session).
    resume_out: Vec<Packet>,
    /// Another connection took this client id over: the session is handed
    /// to it, whatever its expiry says (MQTT 5 3.1.4).
    taken_over: bool,
    stored: Arc<super::stored::SessionTable>,
    retained: RetainedMap,
    received: Arc<std::sync::atomic::AtomicU64>,
    tx: UnboundedSender<Outbound>,
}

/// The durable queue of a client's persistent session.
pub fn persistent_queue_name(client_id: &str) -> String {
    format!("mqtt-subscription-{client_id}qos1")
}

/// A name scoped by vhost: the name itself in `/` (so that sessions and
/// retained messages stored before vhosts existed keep their keys), else
/// `vhost NUL name`; MQTT strings never contain NUL.
pub fn scoped(vhost: &str, name: &str) -> String {
    if vhost == DEFAULT_VHOST {
        name.to_string()
    } else {
        format!("{vhost}\u{0}{name}")
    }
}

/// The vhost and name of a [`scoped`] key.
pub fn unscope(key: &str) -> (&str, &str) {
    key.split_once('\u{0}').unwrap_or((DEFAULT_VHOST, key))
}

/// The vhost and user a CONNECT's username names: RabbitMQ's `vhost:user`
/// when the part before the first colon is an existing vhost, else
/// `default_vhost` and the whole name. Anonymous clients act as guest.
pub fn login_target<'a>(
    users: &UserDb,
    default_vhost: &'a str,
    username: Option<&'a str>,
) -> (&'a str, &'a str) {
    let name = username.unwrap_or("guest");
    match name.split_once(':') {
        Some((vhost, user))
            if !vhost.is_empty() && users.vhosts().iter().any(|v| v.name == vhost) =>
        {
            (vhost, user)
        }
        _ => (default_vhost, name),
    }
}

impl Session {
    /// A session for a new socket.
    pub fn new(
        broker: Arc<Broker>,
        users: Arc<UserDb>,
        retained: RetainedMap,
        received: Arc<std::sync::atomic::AtomicU64>,
        stored: Arc<super::stored::SessionTable>,
        peer: SocketAddr,
        tx: UnboundedSender<Outbound>,
    ) -> Self {
        let default_vhost = broker.default_vhost().clone();
        Session {
            id: broker.next_connection_id(),
            peer,
            broker,
            users,
            user: String::new(),
            publish_permit: None,
            version: None,
            client_id: String::new(),
            vhost: default_vhost,
            default_vhost: DEFAULT_VHOST.to_string(),
            limits: None,
            topic_permissions: None,
            session_key: String::new(),
            keep_alive: 0,
            max_keep_alive: u16::MAX,
            cert_user: None,
            pending_auth: None,
            auth_outcome: None,
            auth_method: None,
            will: None,
            queue: None,
            sink: None,
            persistent: false,
            session_expiry: 0,
            inflight: Arc::new(AtomicU32::new(0)),
            drop_qos0: false,
            dropped: 0,
            filters: HashMap::new(),
            subscription_ids: HashMap::new(),
            sub_flags: HashMap::new(),
            aliases: HashMap::new(),
            receive_maximum: INFLIGHT,
            max_inflight: INFLIGHT,
            our_receive_maximum: RECEIVE_MAXIMUM,
            our_max_packet_size: MAX_PACKET_SIZE,
            shared: HashMap::new(),
            next_packet_id: 0,
            outgoing: HashMap::new(),
            incoming_qos2: HashSet::new(),
            pubrel_pending: HashSet::new(),
            max_packet_size: None,
            client_alias_max: 0,
            out_aliases: HashMap::new(),
            resume_out: Vec::new(),
            taken_over: false,
            stored,
            retained,
            received,
            tx,
        }
    }

    /// The `[mqtt]` limits: the largest packet accepted (only advertised here; the driver
    /// enforces it), deliveries in flight, and our Receive Maximum. Set before CONNECT.
    pub fn set_limits(&mut self, max_packet_size: u32, max_inflight: u16, receive_maximum: u16) {
        self.our_max_packet_size = max_packet_size;
        self.max_inflight = u32::from(max_inflight.max(1));
        self.receive_maximum = self.max_inflight;
        self.our_receive_maximum = receive_maximum.max(1);
    }

    fn v5(&self) -> bool {
        self.version.is_some_and(ProtocolVersion::is_v5)
    }

    fn connack(
        &self,
        version: ProtocolVersion,
        code: ReasonCode,
        assigned: Option<String>,
    ) -> Packet {
        let mut ack = ConnAck {
            session_present: false,
            reason_code: code,
            ..Default::default()
        };
        if version.is_v5() {
            let p = &mut ack.properties;
            p.assigned_client_identifier = assigned;
            p.receive_maximum = Some(self.our_receive_maximum);
            p.maximum_packet_size = Some(self.our_max_packet_size);
            p.maximum_qos = None;
            p.retain_available = Some(true);
            p.wildcard_subscription_available = Some(true);
            p.subscription_identifiers_available = Some(true);
            p.shared_subscription_available = Some(true);
            p.topic_alias_maximum = Some(TOPIC_ALIAS_MAXIMUM);
        }
        Packet::ConnAck(ack)
    }

    /// Handles CONNECT; returns the CONNACK and whether the session may go on.
    pub fn connect(&mut self, c: Connect) -> (Packet, bool) {
        let version = c.protocol_version;
        self.version = Some(version);
        let refuse = |s: &Self, code: ReasonCode| (s.connack(version, code, None), false);
        let mut assigned = None;
        let client_id = if c.client_id.is_empty() {
            if !c.clean_start && !version.is_v5() {
                return refuse(self, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            let id = tributary_core::naming::unique_name("tributary-");
            assigned = version.is_v5().then(|| id.clone());
            id
        } else {
            c.client_id.clone()
        };
        if let Some(method) = c.properties.authentication_method.as_deref()
            && (!version.is_v5() || scram_method(method).is_none() || self.auth_outcome.is_none())
        {
            // Only SCRAM, whose exchange ran before (`enhanced_auth`).
            tracing::warn!(peer = %self.peer, method, "MQTT authentication method refused");
            return refuse(self, ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        if let Some(rm) = c.properties.receive_maximum {
            self.receive_maximum = u32::from(rm).clamp(1, self.max_inflight);
        }
        if version.is_v5() {
            self.max_packet_size = c.properties.maximum_packet_size;
            self.client_alias_max = c.properties.topic_alias_maximum.unwrap_or(0);
        }
        let (vhost_name, user, password) = self.credentials(&c);
        if let Err(e) = self.check_password(&c, &user, &password) {
            let detail = match &self.auth_outcome {
                Some(Err(r)) => r.detail.as_str(),
                _ => "",
            };
            let method = c.properties.authentication_method.as_deref().unwrap_or("");
            tracing::warn!(peer = %self.peer, user = %user, reason = %e, method, detail, "MQTT login refused");
            return refuse(self, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        // SCRAM's server-final-message goes back in the CONNACK (MQTT 5 4.12).
        let server_final = match self.auth_outcome.take() {
            Some(Ok((_, server_final))) => Some(server_final),
            _ => None,
        };
        let vhost = crate::vhosts::resolve(&self.broker, &self.users, &vhost_name);
        let Some(vhost) = vhost.filter(|_| self.users.vhost_access(&user, &vhost_name)) else {
            tracing::warn!(peer = %self.peer, user = %user, vhost = %vhost_name, "MQTT vhost access refused");
            return refuse(self, ReasonCode::NOT_AUTHORIZED);
        };
        let session_key = scoped(&vhost_name, &client_id);
        if let Err(why) = self.admit_in_vhost(&vhost_name, &user, &session_key) {
            tracing::warn!(peer = %self.peer, user = %user, vhost = %vhost_name, "MQTT connection refused: {why}");
            return refuse(self, ReasonCode::QUOTA_EXCEEDED);
        }
        self.vhost = vhost;
        self.user = user.clone();
        self.session_key = session_key;
        self.client_id = client_id;
        self.keep_alive = c.keep_alive;
        // v5 Server Keep Alive: a keep alive above our maximum (or none at
        // all, while we have one) is replaced by ours (MQTT 5 3.2.2.3.14).
        let server_keep_alive = (version.is_v5()
            && self.max_keep_alive != u16::MAX
            && (c.keep_alive == 0 || c.keep_alive > self.max_keep_alive))
            .then_some(self.max_keep_alive);
        if let Some(k) = server_keep_alive {
            self.keep_alive = k;
        }
        self.will = c.will;
        // The session outlives the connection: 3.x clean session 0; v5 a Session
        // Expiry Interval above 0 (whatever clean start says). Clean start / clean
        // session 1 discards a stored session first.
        let expiry = c.properties.session_expiry_interval.unwrap_or(0);
        self.session_expiry = if version.is_v5() {
            expiry
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        self.persistent = if version.is_v5() {
            expiry > 0
        } else {
            !c.clean_start
        };
        let v = self.vhost.clone();
        let stored = v.queue(&self.persistent_queue_name(), self.id).ok();
        let mut session_present = false;
        let expiry_secs = if version.is_v5() {
            (self.session_expiry != u32::MAX).then_some(self.session_expiry)
        } else {
            None
        };
        match (stored, !c.clean_start) {
            (Some(q), true) => {
                // A resumed session's queue is durable, whatever this CONNECT asks
                // next; it goes at disconnect if the session does not outlive it.
                // Resume: the subscriptions are the queue's bindings (QoS in their arguments).
                if let Ok(x) = v.exchange(TOPIC_EXCHANGE) {
                    for b in x.bindings() {
                        if let tributary_core::exchange::Destination::Queue(bq) = &b.destination
                            && Arc::ptr_eq(bq, &q)
                        {
                            let qos = match b.arguments.get(QOS_ARG).and_then(Value::as_i64) {
                                Some(2) => QoS::ExactlyOnce,
                                Some(1) => QoS::AtLeastOnce,
                                _ => QoS::AtMostOnce,
                            };
                            self.filters
                                .insert(tributary_mqtt::topic::binding_key_to_filter(&b.key), qos);
                        }
                    }
                }
                session_present = true;
                if let Err(code) = self.attach(q) {
                    return refuse(self, code);
                }
                // Exactly once across reconnects: the packet ids the client has
                // not released, and our PUBRELs it has not completed.
                self.resume_stored(expiry_secs);
            }
            (Some(q), false) => {
                // Clean start discards a stored session.
                v.remove_queue(&q);
                self.stored.forget(&self.broker, &self.session_key);
            }
            // A session without subscriptions (a publisher's) has no queue,
            // but it exists: its QoS 2 state is in the table.
            (None, true) if self.stored.contains(&self.session_key) => {
                session_present = true;
                self.resume_stored(expiry_secs);
            }
            (None, _) => self.stored.forget(&self.broker, &self.session_key),
        }
        if self.persistent && !session_present {
            self.stored
                .take(&self.broker, &self.session_key, expiry_secs);
        }
        tracing::info!(peer = %self.peer, client_id = %self.client_id, user = %user, version = version.level(), "MQTT connection opened");
        let mut ack = self.connack(version, ReasonCode::SUCCESS, assigned);
        if let Packet::ConnAck(a) = &mut ack {
            a.session_present = session_present;
            a.properties.server_keep_alive = server_keep_alive;
            if server_final.is_some() {
                self.auth_method
                    .clone_from(&c.properties.authentication_method);
                a.properties
                    .authentication_method
                    .clone_from(&c.properties.authentication_method);
                a.properties.authentication_data = server_final;
            }
        }
        (ack, true)
    }

    fn persistent_queue_name(&self) -> String {
        persistent_queue_name(&self.client_id)
    }

    /// Whether `packet` belongs to an MQTT 5 enhanced authentication that must run before the
    /// CONNECT is acted on: a v5 CONNECT naming a SCRAM Authentication Method, or any packet
    /// while such an exchange is under way. The driver then hands it to
    /// [`Session::enhanced_auth`] instead of handling it.
    pub fn in_enhanced_auth(&self, packet: &Packet) -> bool {
        match packet {
            _ if self
                .pending_auth
                .as_ref()
                .is_some_and(|p| p.connect.is_some()) =>
            {
                true
            }
            Packet::Connect(c) => {
                c.protocol_version.is_v5()
                    && self.auth_outcome.is_none()
                    && c.properties
                        .authentication_method
                        .as_deref()
                        .and_then(scram_method)
                        .is_some()
            }
            _ => false,
        }
    }

    /// One step of an MQTT 5 enhanced authentication (4.12) with SCRAM-SHA-256 or SCRAM-SHA-1:
    /// the CONNECT's Authentication Data is client-first-message, answered with AUTH 0x18
    /// (server-first-message); the client's AUTH 0x18 carries client-final-message, after which
    /// the CONNECT is handed back ([`AuthFlow::Connect`]) and [`Session::connect`] answers with
    /// CONNACK 0x00 and server-final-message, or 0x86 Bad User Name or Password.
    pub fn enhanced_auth(&mut self, packet: Packet, out: &mut Vec<Packet>) -> AuthFlow {
        match (self.pending_auth.take(), packet) {
            (None, Packet::Connect(c)) => {
                let method = c
                    .properties
                    .authentication_method
                    .clone()
                    .unwrap_or_default();
                let Some(hash) = scram_method(&method) else {
                    return AuthFlow::Connect(Box::new(c));
                };
                // AUTH packets follow: they decode as v5.
                self.version = Some(c.protocol_version);
                let data = c.properties.authentication_data.clone().unwrap_or_default();
                match crate::scram::ScramLogin::start(&self.users, hash, &data) {
                    Ok((login, server_first)) => {
                        out.push(auth_packet(
                            ReasonCode::CONTINUE_AUTHENTICATION,
                            &method,
                            server_first,
                        ));
                        self.pending_auth = Some(PendingAuth {
                            connect: Some(Box::new(c)),
                            method,
                            login,
                        });
                        AuthFlow::Continue
                    }
                    Err(refusal) => {
                        self.auth_outcome = Some(Err(refusal));
                        AuthFlow::Connect(Box::new(c))
                    }
                }
            }
            (Some(pending), Packet::Auth(a))
                if pending.connect.is_some()
                    && a.reason_code == ReasonCode::CONTINUE_AUTHENTICATION
                    && a.properties.authentication_method.as_deref()
                        == Some(pending.method.as_str()) =>
            {
                let data = a.properties.authentication_data.unwrap_or_default();
                let outcome = pending
                    .login
                    .finish(&self.users, self.peer.ip(), &data)
                    .map(|(user, server_final)| (user, Bytes::from(server_final)));
                self.auth_outcome = Some(outcome);
                match pending.connect {
                    Some(c) => AuthFlow::Connect(c),
                    None => AuthFlow::Close,
                }
            }
            (Some(_), Packet::Disconnect(_)) => AuthFlow::Close,
            (_, other) => {
                // Only AUTH (with the CONNECT's method) or DISCONNECT before CONNACK (4.12).
                tracing::info!(peer = %self.peer, packet = ?other.packet_type(), "MQTT protocol error during enhanced authentication");
                out.push(Packet::ConnAck(ConnAck {
                    reason_code: ReasonCode::PROTOCOL_ERROR,
                    ..Default::default()
                }));
                AuthFlow::Close
            }
        }
    }

    /// Re-authentication (MQTT 5 4.12.1): AUTH 0x19 with the CONNECT's method starts a new
    /// SCRAM exchange for the same user; success is AUTH 0x00 with server-final-message, failure
    /// DISCONNECT 0x87 Not authorized. A client that did not authenticate this way gets 0x82.
    fn reauthenticate(&mut self, a: tributary_mqtt::Auth, out: &mut Vec<Packet>) -> End {
        let method = a.properties.authentication_method.clone();
        let hash = match (&self.auth_method, &method) {
            (Some(ours), Some(theirs)) if ours == theirs => scram_method(ours),
            _ => None,
        };
        let Some(hash) = hash else {
            return self.disconnect(ReasonCode::PROTOCOL_ERROR);
        };
        let method = method.unwrap_or_default();
        let data = a.properties.authentication_data.unwrap_or_default();
        match (a.reason_code, self.pending_auth.take()) {
            (ReasonCode::RE_AUTHENTICATE, None) => {
                match crate::scram::ScramLogin::start(&self.users, hash, &data) {
                    Ok((login, server_first)) => {
                        out.push(auth_packet(
                            ReasonCode::CONTINUE_AUTHENTICATION,
                            &method,
                            server_first,
                        ));
                        self.pending_auth = Some(PendingAuth {
                            connect: None,
                            method,
                            login,
                        });
                        End::No
                    }
                    Err(r) => self.reauth_failed(&r),
                }
            }
            (ReasonCode::CONTINUE_AUTHENTICATION, Some(pending)) => {
                match pending.login.finish(&self.users, self.peer.ip(), &data) {
                    Ok((user, server_final)) if user == self.user => {
                        out.push(auth_packet(ReasonCode::SUCCESS, &method, server_final));
                        End::No
                    }
                    Ok((user, _)) => self.reauth_failed(&crate::scram::Refusal {
                        user,
                        error: crate::users::AuthError::InvalidCredentials,
                        detail: "re-authentication as another user".into(),
                    }),
                    Err(r) => self.reauth_failed(&r),
                }
            }
            _ => self.disconnect(ReasonCode::PROTOCOL_ERROR),
        }
    }

    fn reauth_failed(&mut self, r: &crate::scram::Refusal) -> End {
        tracing::warn!(peer = %self.peer, user = %r.user, reason = %r.error, detail = %r.detail, "MQTT re-authentication refused");
        self.disconnect(ReasonCode::NOT_AUTHORIZED)
    }

    /// Takes over a stored session's exactly-once state: the packet ids the
    /// client has not released, and our PUBRELs it has not completed.
    fn resume_stored(&mut self, expiry_secs: Option<u32>) {
        let state = self
            .stored
            .take(&self.broker, &self.session_key, expiry_secs);
        self.incoming_qos2 = state.incoming_qos2;
        self.pubrel_pending = state.pubrel_pending;
        let mut ids: Vec<u16> = self.pubrel_pending.iter().copied().collect();
        ids.sort_unstable();
        for packet_id in ids {
            self.resume_out.push(Packet::PubRel(PubAckLike {
                packet_id,
                ..Default::default()
            }));
        }
    }

    /// Another connection takes the session over: close hands it on.
    pub fn hand_over(&mut self) {
        self.taken_over = true;
    }

    /// Whether CONNECT's credentials are good and the user may use the vhost
    /// (checked before a takeover, so a refused login cannot disconnect the
    /// session it names).
    pub fn login_ok(&self, c: &Connect) -> bool {
        let (vhost, user, password) = self.credentials(c);
        self.check_password(c, &user, &password).is_ok() && self.users.vhost_access(&user, &vhost)
    }

    /// The vhost, user and password a CONNECT logs in with (anonymous
    /// clients act as guest, which by default only works from loopback).
    fn credentials(&self, c: &Connect) -> (String, String, String) {
        if let Some(outcome) = &self.auth_outcome {
            // SCRAM named the user; a User Name may still choose the vhost (`vhost:user`).
            let scram_user = match outcome {
                Ok((user, _)) => user.as_str(),
                Err(r) => r.user.as_str(),
            };
            let name = c.username.as_deref().unwrap_or(scram_user);
            let (vhost, user) = login_target(&self.users, &self.default_vhost, Some(name));
            return (vhost.to_string(), user.to_string(), String::new());
        }
        let name = self.cert_login(c).or(c.username.as_deref());
        let (vhost, user) = login_target(&self.users, &self.default_vhost, name);
        let password = match (&c.username, &c.password) {
            (_, Some(p)) => String::from_utf8_lossy(p).into_owned(),
            (Some(_), None) => String::new(),
            (None, None) => "guest".to_string(),
        };
        (vhost.to_string(), user.to_string(), password)
    }

    /// The user a CONNECT logs in as: its user name without a `vhost:`
    /// prefix, the certificate's user (`ssl_cert_login`), or guest.
    pub fn login_user(&self, c: &Connect) -> String {
        self.credentials(c).1
    }

    /// `[mqtt] ssl_cert_login`: the certificate's user, when the CONNECT
    /// carries no password (and no user name, or that same one).
    fn cert_login<'a>(&'a self, c: &'a Connect) -> Option<&'a str> {
        let name = self.cert_user.as_deref()?;
        (c.password.is_none() && c.username.as_deref().is_none_or(|u| u == name)).then_some(name)
    }

    /// Checks the password, or for a certificate login that the account
    /// exists (no password) and may connect from this address.
    fn check_password(
        &self,
        c: &Connect,
        user: &str,
        password: &str,
    ) -> Result<(), crate::users::AuthError> {
        match &self.auth_outcome {
            Some(Ok((scram_user, _))) if scram_user == user => return Ok(()),
            Some(Err(r)) => return Err(r.error.clone()),
            Some(Ok(_)) => return Err(crate::users::AuthError::InvalidCredentials),
            None => {}
        }
        if self.cert_login(c).is_none() {
            return self
                .users
                .authenticate(user, password, self.peer.ip())
                .map(|_| ());
        }
        if !self.users.exists(user) {
            return Err(crate::users::AuthError::InvalidCredentials);
        }
        if !self.users.may_connect_from(user, self.peer.ip()) {
            return Err(crate::users::AuthError::LoopbackOnly);
        }
        Ok(())
    }

    /// The vhost's `max-connections` and `max-sessions` (MQTT sessions,
    /// connected or stored), for a client about to connect; resuming a
    /// stored session adds none.
    fn admit_in_vhost(&self, vhost: &str, user: &str, key: &str) -> Result<(), String> {
        let Some(limits) = &self.limits else {
            return Ok(());
        };
        let vhost_limits = self.users.vhost_limits(vhost);
        limits
            .admit_vhost(vhost, user, vhost_limits.max_connections, false)
            .map_err(|r| r.text())?;
        let Some(max) = vhost_limits.max_sessions else {
            return Ok(());
        };
        if self.stored.contains(key) {
            return Ok(());
        }
        let live_clean = limits
            .registry()
            .list()
            .iter()
            .filter(|c| {
                c.protocol == crate::registry::Protocol::Mqtt
                    && c.vhost() == vhost
                    && !self.stored.contains(&scoped(vhost, &c.client()))
            })
            .count() as u64;
        if self.stored.count_in(vhost) + live_clean >= max {
            return Err(format!("session limit of vhost '{vhost}' ({max}) reached"));
        }
        Ok(())
    }

    /// The key a CONNECT's session is registered under (for takeover),
    /// before the session exists.
    pub fn session_key_for(&self, c: &Connect) -> String {
        let (vhost, _) = login_target(&self.users, &self.default_vhost, c.username.as_deref());
        scoped(vhost, &c.client_id)
    }

    /// The name of the vhost the session uses.
    pub fn vhost_name(&self) -> &str {
        self.vhost.name()
    }

    /// Whether the user has `access` to the exchange or queue `resource`.
    fn may(&self, access: Access, resource: &str) -> bool {
        self.users
            .check(&self.user, self.vhost.name(), access, resource)
    }

    /// Whether the user's topic permissions on `amq.topic` allow `access`
    /// (Write: publish, Read: subscribe) with this routing key.
    fn may_topic(&mut self, access: Access, routing_key: &str) -> bool {
        let generation = self.users.generation();
        let has = match self.topic_permissions {
            Some((g, has)) if g == generation => has,
            _ => {
                let has = self
                    .users
                    .has_topic_permissions(&self.user, self.vhost.name());
                self.topic_permissions = Some((generation, has));
                has
            }
        };
        if !has {
            return true;
        }
        let context = crate::users::TopicContext {
            username: &self.user,
            vhost: self.vhost.name(),
            client_id: &self.client_id,
        };
        self.users
            .check_topic(&self.user, TOPIC_EXCHANGE, access, routing_key, &context)
    }

    /// Whether the user may publish (write on `amq.topic`), checked once per
    /// generation of the user database.
    fn may_publish(&mut self) -> bool {
        let generation = self.users.generation();
        if self.publish_permit == Some(generation) {
            return true;
        }
        let allowed = self.may(Access::Write, TOPIC_EXCHANGE);
        self.publish_permit = allowed.then_some(generation);
        allowed
    }

    /// Whether the user may subscribe through queue `queue`: configure,
    /// write and read on it (declare, bind, consume) and read on `amq.topic`,
    /// as RabbitMQ's MQTT plugin requires.
    fn may_subscribe_via(&self, queue: &str) -> bool {
        self.may(Access::Read, TOPIC_EXCHANGE)
            && [Access::Configure, Access::Write, Access::Read]
                .into_iter()
                .all(|a| self.may(a, queue))
    }

    /// Packets that follow a successful CONNACK (PUBRELs a resumed session
    /// still owes the client).
    pub fn after_connect(&mut self, out: &mut Vec<Packet>) {
        out.append(&mut self.resume_out);
    }

    /// Consumes the session's queue.
    fn attach(&mut self, q: Arc<Queue>) -> Result<Arc<Queue>, ReasonCode> {
        let sink = Arc::new(Sink {
            tx: self.tx.clone(),
            inflight: self.inflight.clone(),
            limit: self.receive_maximum,
            live: AtomicBool::new(true),
        });
        q.add_consumer(
            self.consumer_tag(),
            self.id,
            0,
            ConsumerOptions::default(),
            sink.clone(),
        )
        .map_err(|_| ReasonCode::UNSPECIFIED_ERROR)?;
        self.queue = Some(q.clone());
        self.sink = Some(sink);
        Ok(q)
    }

    fn consumer_tag(&self) -> Arc<str> {
        format!("mqtt-{}", self.id).into()
    }

    /// The queue holding the client's subscriptions: durable for a
    /// persistent session, exclusive otherwise.
    fn subscription_queue_name(&self) -> String {
        match &self.queue {
            Some(q) => q.name().to_string(),
            None if self.persistent => self.persistent_queue_name(),
            None => format!("mqtt-subscription-{}", self.client_id),
        }
    }

    fn ensure_queue(&mut self) -> Result<Arc<Queue>, ReasonCode> {
        if let Some(q) = &self.queue {
            return Ok(q.clone());
        }
        let v = self.vhost.clone();
        let name = self.subscription_queue_name();
        let options = if self.persistent {
            QueueOptions {
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: Table::default(),
            }
        } else {
            QueueOptions {
                durable: false,
                exclusive: true,
                auto_delete: true,
                arguments: Table::default(),
            }
        };
        let q = v
            .declare_queue(&name, false, options, self.id)
            .map_err(|_| ReasonCode::UNSPECIFIED_ERROR)?
            .queue;
        self.attach(q)
    }

    /// Handles every packet after CONNECT.
    pub fn handle(&mut self, packet: Packet, out: &mut Vec<Packet>) -> End {
        match packet {
            Packet::Publish(p) => self.publish_in(p, out),
            Packet::PubAck(a) => {
                self.settle_out(a.packet_id);
                End::No
            }
            Packet::PubRec(a) => {
                self.settle_out(a.packet_id);
                // A PUBREC with an error code ends the exchange (MQTT 5 4.3.3).
                if a.reason_code.0 < 0x80 {
                    self.pubrel_pending.insert(a.packet_id);
                    out.push(Packet::PubRel(PubAckLike {
                        packet_id: a.packet_id,
                        ..Default::default()
                    }));
                }
                End::No
            }
            Packet::PubComp(c) => {
                self.pubrel_pending.remove(&c.packet_id);
                End::No
            }
            Packet::PubRel(r) => {
                self.incoming_qos2.remove(&r.packet_id);
                out.push(Packet::PubComp(PubAckLike {
                    packet_id: r.packet_id,
                    ..Default::default()
                }));
                End::No
            }
            Packet::Subscribe(s) => self.subscribe(s, out),
            Packet::Unsubscribe(u) => self.unsubscribe(u, out),
            Packet::Auth(a) if self.v5() => self.reauthenticate(a, out),
            Packet::PingReq => {
                out.push(Packet::PingResp);
                End::No
            }
            Packet::Disconnect(d) => {
                // v5: the DISCONNECT may change the Session Expiry Interval, but
                // not from 0 (MQTT 5 3.14.2.2.2).
                if let Some(expiry) = d.properties.session_expiry_interval
                    && self.v5()
                {
                    if self.session_expiry == 0 && expiry > 0 {
                        return self.disconnect(ReasonCode::PROTOCOL_ERROR);
                    }
                    self.session_expiry = expiry;
                    self.persistent = expiry > 0;
                }
                // A DISCONNECT with Disconnect with Will Message (0x04) still sends the will.
                End::Close {
                    packet: None,
                    will: d.reason_code.0 == 0x04,
                }
            }
            _ => End::Close {
                packet: self.v5().then(|| {
                    Box::new(Packet::Disconnect(tributary_mqtt::Disconnect {
                        reason_code: ReasonCode::PROTOCOL_ERROR,
                        ..Default::default()
                    }))
                }),
                will: true,
            },
        }
    }

    /// The core message for an MQTT publish.
    fn to_message(
        topic: &str,
        qos: QoS,
        payload: Bytes,
        retain_props: Option<&tributary_mqtt::PublishProperties>,
        retain: bool,
        publisher: &str,
    ) -> Arc<Message> {
        let mut headers = Table::default();
        headers.insert(QOS_HEADER, Value::U8(qos as u8));
        headers.insert(
            PUBLISHER_HEADER,
            Value::LongStr(Bytes::copy_from_slice(publisher.as_bytes())),
        );
        if retain {
            headers.insert(RETAIN_HEADER, Value::Bool(true));
        }
        if retain_props.and_then(|p| p.payload_format_indicator) == Some(true) {
            headers.insert(PAYLOAD_FORMAT_HEADER, Value::Bool(true));
        }
        let mut properties = Properties {
            delivery_mode: Some(if qos == QoS::AtMostOnce { 1 } else { 2 }),
            headers: Some(headers),
            ..Default::default()
        };
        if let Some(p) = retain_props {
            if let Some(h) = properties.headers.as_mut() {
                for (k, v) in &p.user_properties {
                    if !k.starts_with("x-mqtt-") {
                        h.insert(
                            k.clone(),
                            Value::LongStr(Bytes::copy_from_slice(v.as_bytes())),
                        );
                    }
                }
            }
            properties.content_type = p
                .content_type
                .as_ref()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()));
            properties.correlation_id = p
                .correlation_data
                .as_ref()
                .map(|b| Bytes::copy_from_slice(b));
            properties.reply_to = p
                .response_topic
                .as_ref()
                .map(|t| Bytes::copy_from_slice(topic_to_routing_key(t).as_bytes()));
            if let Some(secs) = p.message_expiry_interval {
                properties.expiration = Some(Bytes::from((u64::from(secs) * 1000).to_string()));
            }
        }
        Message::new(
            Bytes::from_static(TOPIC_EXCHANGE.as_bytes()),
            Bytes::from(topic_to_routing_key(topic)),
            properties,
            Bytes::copy_from_slice(&payload),
        )
    }

    fn set_retained(&self, topic: &str, message: Option<Arc<Message>>) {
        set_retained(
            &self.broker,
            &self.retained,
            &scoped(self.vhost.name(), topic),
            message,
        );
    }

    fn route(&self, message: &Arc<Message>) {
        route(&self.vhost, message);
    }

    /// Sends a PUBACK/PUBREC only once everything the publish wrote is fsynced
    /// (a message to a persistent session survives kill -9 once acknowledged).
    /// Every ack takes this path, so acks keep the order of their publishes.
    fn ack_when_durable(&self, ack: Packet, out: &mut Vec<Packet>) {
        match self.broker.persistence() {
            Some(p) => {
                let tx = self.tx.clone();
                p.when_durable(Box::new(move || {
                    let _ = tx.send(Outbound::Send(Box::new(ack)));
                }));
            }
            None => out.push(ack),
        }
    }

    fn disconnect(&self, code: ReasonCode) -> End {
        End::Close {
            packet: self.v5().then(|| {
                Box::new(Packet::Disconnect(tributary_mqtt::Disconnect {
                    reason_code: code,
                    ..Default::default()
                }))
            }),
            will: true,
        }
    }

    fn publish_in(&mut self, p: Publish, out: &mut Vec<Packet>) -> End {
        self.received.fetch_add(1, Ordering::Relaxed);
        let Ok(mut topic) = std::str::from_utf8(&p.topic).map(str::to_string) else {
            return self.disconnect(ReasonCode::PROTOCOL_ERROR);
        };
        // v5 Topic Alias: set with a topic, used with an empty one.
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
                return self.disconnect(ReasonCode::TOPIC_ALIAS_INVALID);
            }
            if topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(t) => topic = t.clone(),
                    None => return self.disconnect(ReasonCode::PROTOCOL_ERROR),
                }
            } else {
                self.aliases.insert(alias, topic.clone());
            }
        } else if topic.is_empty() {
            return self.disconnect(ReasonCode::PROTOCOL_ERROR);
        }
        if !self.may_publish() || !self.may_topic(Access::Write, &topic_to_routing_key(&topic)) {
            return self.publish_refused(&p, out);
        }
        let message = Self::to_message(
            &topic,
            p.qos,
            p.payload.clone(),
            Some(&p.properties),
            p.retain,
            &self.client_id,
        );
        if p.retain {
            self.set_retained(&topic, (!p.payload.is_empty()).then(|| message.clone()));
        }
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => self.route(&message),
            (QoS::AtLeastOnce, Some(id)) => {
                self.route(&message);
                self.ack_when_durable(
                    Packet::PubAck(PubAckLike {
                        packet_id: id,
                        ..Default::default()
                    }),
                    out,
                );
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // Our Receive Maximum bounds the QoS 2 exchanges a client keeps open.
                if !self.incoming_qos2.contains(&id)
                    && self.v5()
                    && self.incoming_qos2.len() >= usize::from(self.our_receive_maximum)
                {
                    return self.disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                }
                // Exactly once: a DUP re-send of a packet id not yet released is not routed again.
                if self.incoming_qos2.insert(id) {
                    self.route(&message);
                }
                self.ack_when_durable(
                    Packet::PubRec(PubAckLike {
                        packet_id: id,
                        ..Default::default()
                    }),
                    out,
                );
            }
            _ => {
                return End::Close {
                    packet: None,
                    will: true,
                };
            }
        }
        End::No
    }

    /// A PUBLISH without write access to `amq.topic`, as RabbitMQ answers it:
    /// v5 PUBACK / PUBREC 0x87 Not authorized (QoS 0: dropped), the message
    /// not routed nor retained; 3.1.1 has no way to say so and closes.
    fn publish_refused(&mut self, p: &Publish, out: &mut Vec<Packet>) -> End {
        if !self.v5() {
            tracing::warn!(peer = %self.peer, client_id = %self.client_id, user = %self.user, "MQTT publish refused (write access to exchange 'amq.topic'): closing the connection");
            return End::Close {
                packet: None,
                will: true,
            };
        }
        tracing::debug!(peer = %self.peer, client_id = %self.client_id, user = %self.user, "MQTT publish refused: no write access to exchange 'amq.topic'");
        let refused = |packet_id| PubAckLike {
            packet_id,
            reason_code: ReasonCode::NOT_AUTHORIZED,
            ..Default::default()
        };
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(id)) => {
                self.ack_when_durable(Packet::PubAck(refused(id)), out);
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // An error PUBREC ends the exchange: the id is not kept for a PUBREL.
                self.incoming_qos2.remove(&id);
                self.ack_when_durable(Packet::PubRec(refused(id)), out);
            }
            _ => {
                return End::Close {
                    packet: None,
                    will: true,
                };
            }
        }
        End::No
    }

    fn subscribe(&mut self, s: Subscribe, out: &mut Vec<Packet>) -> End {
        // The client's queue is declared, bound and consumed only with
        // configure, write and read on it (and read on amq.topic).
        let permitted = self.may_subscribe_via(&self.subscription_queue_name());
        let q = if !permitted {
            None
        } else {
            match self.ensure_queue() {
                Ok(q) => Some(q),
                Err(code) => {
                    out.push(Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        reason_codes: vec![code; s.filters.len()],
                        ..Default::default()
                    }));
                    return End::No;
                }
            }
        };
        let v = self.vhost.clone();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_out = Vec::new();
        for sub in s.filters {
            if let Ok(Some(shared)) = tributary_mqtt::topic::parse_shared(&sub.filter) {
                let (group, inner) = (shared.group.to_string(), shared.filter.to_string());
                match self.join_shared(&sub.filter, &group, &inner) {
                    Ok(()) => {
                        self.filters.insert(inner, sub.options.qos);
                        codes.push(ReasonCode(sub.options.qos as u8));
                    }
                    Err(code) => codes.push(code),
                }
                continue;
            }
            if validate_topic_filter(&sub.filter).is_err() {
                codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
            let Some(q) = q.as_ref() else {
                tracing::debug!(peer = %self.peer, client_id = %self.client_id, user = %self.user, filter = %sub.filter, "MQTT subscribe refused");
                codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            };
            let key = filter_to_routing_key(&sub.filter);
            if !self.may_topic(Access::Read, &key) {
                tracing::warn!(peer = %self.peer, client_id = %self.client_id, user = %self.user, filter = %sub.filter, "MQTT subscribe refused by topic permissions");
                codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            let granted = sub.options.qos;
            self.sub_flags.insert(
                sub.filter.clone(),
                (sub.options.no_local, sub.options.retain_as_published),
            );
            match s.properties.subscription_identifier {
                Some(id) => {
                    self.subscription_ids.insert(sub.filter.clone(), id);
                }
                None => {
                    self.subscription_ids.remove(&sub.filter);
                }
            }
            // One binding per filter, its granted QoS in the arguments (a resumed
            // session reads its subscriptions back from them).
            self.unbind_filter(&v, q, &key);
            let mut args = Table::default();
            args.insert(QOS_ARG, Value::U8(granted as u8));
            if v.bind_queue(q.name(), TOPIC_EXCHANGE, &key, args, self.id)
                .is_err()
            {
                codes.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
            let existed = self.filters.insert(sub.filter.clone(), granted).is_some();
            codes.push(ReasonCode(granted as u8));
            // v5 Retain Handling: 0 send retained, 1 only for a new subscription, 2 never.
            let send_retained = match sub.options.retain_handling {
                tributary_mqtt::RetainHandling::SendAtSubscribe => true,
                tributary_mqtt::RetainHandling::SendAtNewSubscribe => !existed,
                tributary_mqtt::RetainHandling::DoNotSend => false,
            };
            if !send_retained {
                continue;
            }
            for (scoped_topic, m) in self.retained.lock().iter() {
                let (vhost, topic) = unscope(scoped_topic);
                if vhost == self.vhost.name()
                    && tributary_core::topic::pattern_matches(&key, &topic_to_routing_key(topic))
                    && filter_sees(&sub.filter, topic)
                {
                    retained_out.push((topic.to_string(), m.clone(), granted));
                }
            }
        }
        out.push(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reason_codes: codes,
            ..Default::default()
        }));
        for (topic, m, granted) in retained_out {
            let qos = granted.min(publish_qos(&m));
            let mut publish = Publish {
                dup: false,
                qos,
                retain: true,
                topic: Bytes::from(topic),
                packet_id: (qos != QoS::AtMostOnce).then_some(u16::MAX),
                properties: if self.v5() {
                    v5_properties(&m)
                } else {
                    Default::default()
                },
                payload: m.body.clone(),
            };
            if !self.fits(&publish) {
                continue;
            }
            publish.packet_id = publish.packet_id.map(|_| self.next_id());
            out.push(Packet::Publish(publish));
        }
        End::No
    }

    /// Joins a shared subscription: one queue per group (`mqtt-shared-<group>`,
    /// deleted with its last member), bound with the filter; members are its
    /// consumers, so messages go round-robin across the group.
    fn join_shared(&mut self, full: &str, group: &str, filter: &str) -> Result<(), ReasonCode> {
        if validate_topic_filter(filter).is_err() {
            return Err(ReasonCode::TOPIC_FILTER_INVALID);
        }
        if self.shared.contains_key(full) {
            return Ok(());
        }
        if !self.may_subscribe_via(&format!("mqtt-shared-{group}")) {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        let v = self.vhost.clone();
        let options = QueueOptions {
            durable: false,
            exclusive: false,
            auto_delete: true,
            arguments: Table::default(),
        };
        let q = v
            .declare_queue(&format!("mqtt-shared-{group}"), false, options, self.id)
            .map_err(|_| ReasonCode::UNSPECIFIED_ERROR)?
            .queue;
        v.bind_queue(
            q.name(),
            TOPIC_EXCHANGE,
            &filter_to_routing_key(filter),
            Table::default(),
            self.id,
        )
        .map_err(|_| ReasonCode::UNSPECIFIED_ERROR)?;
        let tag: Arc<str> = format!("mqtt-{}-{}", self.id, self.shared.len()).into();
        let sink = Arc::new(Sink {
            tx: self.tx.clone(),
            inflight: self.inflight.clone(),
            limit: self.receive_maximum,
            live: AtomicBool::new(true),
        });
        q.add_consumer(tag.clone(), self.id, 0, ConsumerOptions::default(), sink)
            .map_err(|_| ReasonCode::UNSPECIFIED_ERROR)?;
        self.shared.insert(full.to_string(), (q, tag));
        Ok(())
    }

    fn unsubscribe(&mut self, u: Unsubscribe, out: &mut Vec<Packet>) -> End {
        let v = self.vhost.clone();
        let mut codes = Vec::new();
        for f in u.filters {
            if let Some((q, tag)) = self.shared.remove(&f) {
                v.cancel_consumer(&q, self.id, 0, &tag);
                codes.push(ReasonCode::SUCCESS);
                continue;
            }
            let existed = self.filters.remove(&f).is_some();
            self.subscription_ids.remove(&f);
            self.sub_flags.remove(&f);
            if let Some(q) = self.queue.clone() {
                self.unbind_filter(&v, &q, &filter_to_routing_key(&f));
            }
            codes.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        out.push(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reason_codes: codes,
            ..Default::default()
        }));
        End::No
    }

    /// Removes the queue's binding for `key`, whatever QoS it was made with.
    fn unbind_filter(&self, v: &VHost, q: &Arc<Queue>, key: &str) {
        let Ok(x) = v.exchange(TOPIC_EXCHANGE) else {
            return;
        };
        for b in x.bindings() {
            if let tributary_core::exchange::Destination::Queue(bq) = &b.destination
                && Arc::ptr_eq(bq, q)
                && b.key == key
            {
                let _ = v.unbind_queue(q.name(), TOPIC_EXCHANGE, key, b.arguments.clone(), self.id);
            }
        }
    }

    fn next_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id != 0
                && !self.outgoing.contains_key(&self.next_packet_id)
                && !self.pubrel_pending.contains(&self.next_packet_id)
            {
                return self.next_packet_id;
            }
        }
    }

    fn settle_out(&mut self, packet_id: u16) {
        if let Some((q, entry)) = self.outgoing.remove(&packet_id) {
            q.settle(&entry);
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            q.dispatch();
        }
    }

    /// A delivery from the client's queue becomes a PUBLISH at
    /// min(granted QoS of the matching subscriptions, published QoS).
    pub fn deliver(&mut self, d: Delivery, out: &mut Vec<Packet>) {
        let m = d.entry.message.clone();
        let key = String::from_utf8_lossy(&m.routing_key).into_owned();
        let header = |name: &str| {
            m.properties
                .headers
                .as_ref()
                .and_then(|h| h.get(name).cloned())
        };
        let own = header(PUBLISHER_HEADER).as_ref().and_then(Value::as_str)
            == Some(self.client_id.as_str());
        let topic = routing_key_to_topic(&key);
        let matching: Vec<&String> = self
            .filters
            .keys()
            .filter(|f| tributary_core::topic::pattern_matches(&filter_to_routing_key(f), &key))
            .filter(|f| filter_sees(f, &topic))
            .collect();
        if matching.is_empty() {
            // Only wildcard filters matched a `$` topic: not for them (MQTT 4.7.2).
            d.queue.settle(&d.entry);
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            d.queue.dispatch();
            return;
        }
        let flags = |f: &String| self.sub_flags.get(f).copied().unwrap_or((false, false));
        // v5 No Local: our own publish is not sent back when every matching subscription says so.
        if own && matching.iter().all(|f| flags(f).0) {
            d.queue.settle(&d.entry);
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            d.queue.dispatch();
            return;
        }
        // v5 Retain As Published: keep the publisher's retain flag.
        let retain = matches!(header(RETAIN_HEADER), Some(Value::Bool(true)))
            && matching.iter().any(|f| flags(f).1);
        let granted = self
            .filters
            .iter()
            .filter(|(f, _)| {
                tributary_core::topic::pattern_matches(&filter_to_routing_key(f), &key)
            })
            .map(|(_, q)| *q)
            .max()
            .unwrap_or(QoS::AtMostOnce);
        let qos = granted.min(publish_qos(&m));
        if qos == QoS::AtMostOnce && self.drop_qos0 {
            // The client does not keep up: at most once allows dropping it.
            d.queue.settle(&d.entry);
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            d.queue.dispatch();
            self.dropped += 1;
            return;
        }
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.next_id());
        let properties = if self.v5() {
            let mut p = v5_properties(&m);
            p.subscription_identifiers = self
                .subscription_ids
                .iter()
                .filter(|(f, _)| {
                    tributary_core::topic::pattern_matches(&filter_to_routing_key(f), &key)
                })
                .map(|(_, id)| *id)
                .collect();
            p.subscription_identifiers.sort_unstable();
            // Message Expiry Interval: what is left of it.
            p.message_expiry_interval = d.entry.expires_at.map(|at| {
                let left = at.saturating_sub(tributary_core::args::now_ms());
                u32::try_from(left.div_ceil(1000)).unwrap_or(u32::MAX)
            });
            p
        } else {
            Default::default()
        };
        let mut publish = Publish {
            dup: d.entry.redelivered,
            qos,
            retain,
            topic: Bytes::from(routing_key_to_topic(&key)),
            packet_id,
            properties,
            payload: m.body.clone(),
        };
        if !self.fits(&publish) {
            // Larger than the client accepts: discarded as if sent (MQTT 5 3.1.2.25).
            if let Some(id) = packet_id {
                self.next_packet_id = id.wrapping_sub(1);
            }
            d.queue.settle(&d.entry);
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            d.queue.dispatch();
            return;
        }
        self.apply_topic_alias(&mut publish);
        if !publish.topic.is_empty()
            && publish.properties.topic_alias.is_some()
            && !self.fits(&publish)
        {
            // Setting the alias adds 3 bytes, beyond the client's maximum: send it without.
            self.out_aliases
                .remove(&*String::from_utf8_lossy(&publish.topic));
            publish.properties.topic_alias = None;
        }
        out.push(Packet::Publish(publish));
        match packet_id {
            Some(id) => {
                self.outgoing.insert(id, (d.queue, d.entry));
            }
            None => {
                // QoS 0 is done once written: its credit goes back, and the
                // queue may send the next message (without this a backlog
                // would wait for the next publish).
                d.queue.settle(&d.entry);
                self.inflight.fetch_sub(1, Ordering::AcqRel);
                d.queue.dispatch();
            }
        }
    }

    /// Whether a PUBLISH is within the client's Maximum Packet Size.
    fn fits(&self, publish: &Publish) -> bool {
        let Some(max) = self.max_packet_size else {
            return true;
        };
        let mut buf = bytes::BytesMut::new();
        let packet = Packet::Publish(publish.clone());
        match tributary_mqtt::encode(&packet, ProtocolVersion::V5, &mut buf) {
            Ok(()) => buf.len() <= max as usize,
            Err(_) => false,
        }
    }

    /// Outbound Topic Aliases (v5): the first PUBLISH on a topic sets an
    /// alias (while the client's Topic Alias Maximum allows), later ones
    /// send the alias with an empty topic.
    fn apply_topic_alias(&mut self, publish: &mut Publish) {
        if self.client_alias_max == 0 {
            return;
        }
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        match self.out_aliases.get(&topic) {
            Some(&alias) => {
                publish.properties.topic_alias = Some(alias);
                publish.topic = Bytes::new();
            }
            None if self.out_aliases.len() < usize::from(self.client_alias_max) => {
                let alias = self.out_aliases.len() as u16 + 1;
                self.out_aliases.insert(topic, alias);
                publish.properties.topic_alias = Some(alias);
            }
            None => {}
        }
    }

    /// The will message, when the connection ends without a clean DISCONNECT.
    pub fn take_will(&mut self) -> Option<PendingWill> {
        let w = self.will.take()?;
        let topic = std::str::from_utf8(&w.topic).ok()?.to_string();
        let wp = &w.properties;
        let props = tributary_mqtt::PublishProperties {
            payload_format_indicator: wp.payload_format_indicator,
            message_expiry_interval: wp.message_expiry_interval,
            content_type: wp.content_type.clone(),
            response_topic: wp.response_topic.clone(),
            correlation_data: wp.correlation_data.clone(),
            user_properties: wp.user_properties.clone(),
            ..Default::default()
        };
        let message = Self::to_message(
            &topic,
            w.qos,
            w.payload.clone(),
            Some(&props),
            w.retain,
            &self.client_id,
        );
        Some(PendingWill {
            user: self.user.clone(),
            client_id: self.client_id.clone(),
            vhost: self.vhost.clone(),
            message,
            topic,
            retain: w.retain,
            // The will goes when its delay ends or the session does, whichever is first.
            delay: if self.v5() {
                wp.will_delay_interval.unwrap_or(0).min(self.session_expiry)
            } else {
                0
            },
        })
    }

    /// Releases everything: in-flight deliveries go back to the queue, the
    /// (clean) session's queue is deleted.
    pub fn close(&mut self) {
        self.will = None;
        for (_, (q, entry)) in self.outgoing.drain() {
            q.requeue(vec![entry]);
        }
        if let Some(sink) = &self.sink {
            sink.live.store(false, Ordering::Release);
        }
        let v = self.vhost.clone();
        for (_, (q, tag)) in self.shared.drain() {
            v.cancel_consumer(&q, self.id, 0, &tag);
        }
        let keep = self.persistent || self.taken_over;
        if keep && !self.client_id.is_empty() {
            // v5: removed once the Session Expiry Interval has passed
            // (0xFFFFFFFF: never); 3.x persistent sessions never expire.
            let expires_at = (self.v5() && self.session_expiry != u32::MAX)
                .then(|| tributary_core::args::now_ms() + u64::from(self.session_expiry) * 1000);
            let state = super::stored::StoredSession {
                expires_at,
                expiry_secs: (self.v5() && self.session_expiry != u32::MAX)
                    .then_some(self.session_expiry),
                incoming_qos2: std::mem::take(&mut self.incoming_qos2),
                pubrel_pending: std::mem::take(&mut self.pubrel_pending),
            };
            self.stored.store(&self.broker, &self.session_key, state);
        }
        if !keep && !self.client_id.is_empty() {
            // A session that ends with its connection leaves nothing behind.
            self.stored.forget(&self.broker, &self.session_key);
        }
        if let Some(q) = self.queue.take() {
            if keep {
                // The session outlives the connection: only the consumer goes.
                v.cancel_consumer(&q, self.id, 0, &self.consumer_tag());
            } else {
                v.remove_queue(&q);
            }
        }
    }
}

/// The MQTT 5 properties a core message carries: Content Type, Correlation
/// Data, Response Topic and User Properties (string headers), as docs/mqtt.md maps them.
fn v5_properties(m: &Message) -> tributary_mqtt::PublishProperties {
    let p = &m.properties;
    let text = |b: &Option<Bytes>| {
        b.as_ref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)
    };
    let utf8 = matches!(
        p.headers
            .as_ref()
            .and_then(|h| h.get(PAYLOAD_FORMAT_HEADER)),
        Some(Value::Bool(true))
    );
    let mut out = tributary_mqtt::PublishProperties {
        payload_format_indicator: utf8.then_some(true),
        content_type: text(&p.content_type),
        correlation_data: p.correlation_id.clone(),
        response_topic: text(&p.reply_to).map(|k| routing_key_to_topic(&k)),
        ..Default::default()
    };
    if let Some(h) = &p.headers {
        for (k, v) in h.iter() {
            if let (false, Some(s)) = (k.starts_with("x-"), v.as_str()) {
                out.user_properties.push((k.clone(), s.to_string()));
            }
        }
    }
    out
}

fn publish_qos(m: &Message) -> QoS {
    let from_header = m
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get(QOS_HEADER))
        .and_then(Value::as_i64);
    match from_header {
        Some(2) => QoS::ExactlyOnce,
        Some(1) => QoS::AtLeastOnce,
        Some(_) => QoS::AtMostOnce,
        // From AMQP: persistent messages are QoS 1, others QoS 0 (RabbitMQ 4).
        None if m.properties.is_persistent() => QoS::AtLeastOnce,
        None => QoS::AtMostOnce,
    }
}

/// Retained messages by topic, shared by every MQTT connection.
pub type RetainedMap = Arc<parking_lot::Mutex<HashMap<String, Arc<Message>>>>;

/// Sets (or, with None, clears) the retained message of a topic (its
/// [`scoped`] key), in memory and in the store, so retained messages
/// survive a restart.
pub fn set_retained(
    broker: &Broker,
    retained: &RetainedMap,
    topic: &str,
    message: Option<Arc<Message>>,
) {
    let persistence = broker.persistence();
    match message {
        Some(m) => {
            if let Some(p) = persistence {
                p.put_definition(
                    "retained",
                    topic,
                    &tributary_core::persist::encode_message(&m),
                );
            }
            retained.lock().insert(topic.to_string(), m);
        }
        None => {
            if retained.lock().remove(topic).is_some()
                && let Some(p) = persistence
            {
                p.delete_definition("retained", topic);
            }
        }
    }
}

/// Routes an MQTT-originated message through `amq.topic`.
pub fn route(v: &VHost, message: &Arc<Message>) {
    let mut routed = tributary_core::Routed::default();
    if v.route(
        TOPIC_EXCHANGE,
        &message.routing_key,
        &message.properties,
        &mut routed,
    )
    .is_ok()
    {
        v.enqueue(message, &routed.queues);
    }
}

/// A will to publish, possibly after its v5 Will Delay Interval.
pub struct PendingWill {
    /// Who connected with it: the will is published only if they may write
    /// to `amq.topic` when it goes.
    pub user: String,
    /// Its client id (for `%c` in topic permissions).
    pub client_id: String,
    /// The vhost it goes to.
    pub vhost: Arc<VHost>,
    /// The message.
    pub message: Arc<Message>,
    /// Its topic.
    pub topic: String,
    /// Retain it too.
    pub retain: bool,
    /// Seconds to wait first (0: at once).
    pub delay: u32,
}

impl PendingWill {
    /// Publishes the will now, if its user may (write on `amq.topic`).
    pub fn publish(self, broker: &Broker, retained: &RetainedMap, users: &UserDb) {
        let vhost = self.vhost.name();
        let context = crate::users::TopicContext {
            username: &self.user,
            vhost,
            client_id: &self.client_id,
        };
        if !users.check(&self.user, vhost, Access::Write, TOPIC_EXCHANGE)
            || !users.check_topic(
                &self.user,
                TOPIC_EXCHANGE,
                Access::Write,
                &topic_to_routing_key(&self.topic),
                &context,
            )
        {
            tracing::warn!(user = %self.user, topic = %self.topic, "MQTT will not published: no write access to exchange 'amq.topic'");
            return;
        }
        if self.retain {
            let key = scoped(vhost, &self.topic);
            set_retained(broker, retained, &key, Some(self.message.clone()));
        }
        route(&self.vhost, &self.message);
    }
}

/// MQTT 4.7.2: topics starting with `$` (such as `$SYS/...`) are not matched
/// by a filter whose first level is a wildcard.
fn filter_sees(filter: &str, topic: &str) -> bool {
    !(topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')))
}
