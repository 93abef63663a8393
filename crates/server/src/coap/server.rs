//! The state of one CoAP listener: every peer's endpoint machine, rate
//! limit, login and block-wise transfers, and every observation (a queue
//! bound to `amq.topic` whose consumer turns deliveries into notifications).

use super::CoapContext;
use crate::limits::TokenBucket;
use crate::registry::{Protocol, Registration, Transport};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tributary_coap::{
    Assembler, Code, Endpoint, EndpointConfig, Event, Message, ObserveSequence, Type, option,
};
use tributary_core::{ConsumerSink, Delivery, Queue, VHost};

/// Deliveries in flight to one observation before its queue waits.
const OBSERVATION_CREDIT: u32 = 16;
/// How long a half-received (Block1) or half-sent (Block2) body is kept.
const TRANSFER_LIFETIME: Duration = Duration::from_secs(247);
/// Block1 uploads one peer may have going at once.
const MAX_UPLOADS: usize = 4;
/// Block2 bodies one peer may have cached at once.
const MAX_DOWNLOADS: usize = 16;
/// Max-Age (seconds) of the 5.03 a new peer gets beyond `max_peers`.
const PEERS_FULL_MAX_AGE: u32 = 30;
/// Refusals (4.29, 5.03) sent per second at most, over all addresses: a
/// flood with spoofed sources must not turn the broker into a reflector.
const REFUSAL_RATE: u32 = 100;

/// What reaches the listener's task from elsewhere.
pub enum Inbound {
    /// A message for an observation.
    Deliver {
        /// The observation.
        obs: u64,
        /// The delivery.
        delivery: Delivery,
    },
    /// The answer to a confirmable publish, now that it is durable.
    Respond {
        /// Who asked.
        peer: SocketAddr,
        /// The request.
        request: Box<Message>,
        /// The answer.
        response: Box<Message>,
    },
}

/// The consumer of one observation's queue.
pub(super) struct ObsSink {
    obs: u64,
    tx: UnboundedSender<Inbound>,
    inflight: Arc<AtomicU32>,
    live: AtomicBool,
}

impl ConsumerSink for ObsSink {
    fn try_reserve(&self) -> bool {
        self.live.load(Ordering::Acquire)
            && self
                .inflight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < OBSERVATION_CREDIT).then_some(n + 1)
                })
                .is_ok()
    }

    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        let obs = self.obs;
        self.tx
            .send(Inbound::Deliver { obs, delivery })
            .map_err(|e| {
                self.inflight.fetch_sub(1, Ordering::AcqRel);
                match e.0 {
                    Inbound::Deliver { delivery, .. } => delivery,
                    Inbound::Respond { .. } => unreachable!("only deliveries are sent here"),
                }
            })
    }

    fn cancelled(&self) {
        self.live.store(false, Ordering::Release);
    }

    fn unreserve(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who a peer's requests act as.
#[derive(Clone)]
pub(super) struct Login {
    /// The query's user name and password, or the DTLS identity, it was checked with.
    pub key: (String, String),
    /// The broker user.
    pub user: String,
    /// The vhost.
    pub vhost: Arc<VHost>,
    /// The client id (query `c` / `clientid`), for topic permission variables.
    pub client_id: String,
}

/// One peer address.
pub(super) struct Peer {
    pub endpoint: Endpoint,
    bucket: Option<TokenBucket>,
    /// When this peer last got a 4.29 (at most one a second).
    refused_at: Option<Instant>,
    pub registration: Registration,
    pub login: Option<Login>,
    /// The DTLS PSK identity the peer proved, if any.
    pub identity: Option<String>,
    /// Observation ids by token.
    pub observations: HashMap<Bytes, u64>,
    /// Block1 uploads by request path and query.
    pub uploads: HashMap<String, (Assembler, Instant)>,
    /// Bodies sent in Block2 blocks, by path, for the following blocks.
    pub downloads: HashMap<String, (Bytes, Option<u32>, Instant)>,
    last_seen: Instant,
}

impl Peer {
    /// Remembers an upload, forgetting the oldest beyond the bound.
    pub fn add_upload(&mut self, key: String, asm: Assembler, now: Instant) {
        if self.uploads.len() >= MAX_UPLOADS
            && let Some(oldest) = self
                .uploads
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            self.uploads.remove(&oldest);
        }
        self.uploads.insert(key, (asm, now));
    }

    /// Remembers a body sent in blocks, forgetting the oldest beyond the bound.
    pub fn add_download(&mut self, key: String, body: Bytes, format: Option<u32>, now: Instant) {
        if self.downloads.len() >= MAX_DOWNLOADS
            && !self.downloads.contains_key(&key)
            && let Some(oldest) = self
                .downloads
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(k, _)| k.clone())
        {
            self.downloads.remove(&oldest);
        }
        self.downloads.insert(key, (body, format, now));
    }
}

/// One observation: a GET with Observe=0 on `/ps/<filter>`.
pub(super) struct Observation {
    pub peer: SocketAddr,
    pub token: Bytes,
    /// The observed path (`ps/...`), the key of Block2 follow-ups.
    pub path: String,
    /// The MQTT topic filter.
    pub filter: String,
    /// Whether the filter has wildcards (notifications then carry the
    /// matching topic as Location-Path options).
    pub wildcard: bool,
    pub queue: Arc<Queue>,
    pub vhost: Arc<VHost>,
    pub seq: ObserveSequence,
    pub confirmable: bool,
    pub inflight: Arc<AtomicU32>,
    pub sink: Arc<ObsSink>,
    /// Notifications sent (shared with the management table).
    pub notifications: Arc<std::sync::atomic::AtomicU64>,
}

/// Every peer and observation of one listener.
pub struct Server {
    pub(super) ctx: Arc<CoapContext>,
    transport: Transport,
    pub(super) tx: UnboundedSender<Inbound>,
    pub(super) peers: HashMap<SocketAddr, Peer>,
    pub(super) observations: HashMap<u64, Observation>,
    next_obs: u64,
    /// Owner id of the observation queues (exclusive to this listener).
    pub(super) conn_id: u64,
    dirty: Vec<SocketAddr>,
    seed: u64,
    refused_peers: u64,
    /// Bounds the refusals sent to addresses we keep no state for.
    refusals: Option<TokenBucket>,
    /// Datagrams for peers no longer tracked (refusals, last words).
    stray: Vec<(SocketAddr, Bytes)>,
    /// Peers closed by an operator since the last look (DTLS ends their sessions).
    closed: Vec<SocketAddr>,
}

impl Server {
    /// A listener's state; `tx` is where its consumers and durability
    /// callbacks send (the task's receiver).
    pub fn new(ctx: Arc<CoapContext>, transport: Transport, tx: UnboundedSender<Inbound>) -> Self {
        let conn_id = ctx.broker.next_connection_id();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Server {
            ctx,
            transport,
            tx,
            peers: HashMap::new(),
            observations: HashMap::new(),
            next_obs: 0,
            conn_id,
            dirty: Vec::new(),
            seed,
            refused_peers: 0,
            refusals: TokenBucket::new(REFUSAL_RATE, REFUSAL_RATE, Instant::now()),
            stray: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Whether a refusal may go out now (a global bound on what we send to
    /// addresses that may be spoofed).
    fn may_refuse(&mut self, now: Instant) -> bool {
        let Some(b) = &mut self.refusals else {
            return true;
        };
        if b.ready_at(now).is_some() {
            return false;
        }
        b.take(1, now);
        true
    }

    /// Answers a confirmable request we will not serve, without state:
    /// an ACK with `code` and Max-Age (RFC 7252 §5.10.5, RFC 8516).
    /// Non-confirmable and malformed datagrams get nothing. True if sent.
    fn refuse(
        &mut self,
        addr: SocketAddr,
        data: &[u8],
        code: Code,
        max_age: u32,
        now: Instant,
    ) -> bool {
        let Ok(req) = tributary_coap::message::decode(Bytes::copy_from_slice(data)) else {
            return false;
        };
        if req.mtype != Type::Con || !req.code.is_request() || !self.may_refuse(now) {
            return false;
        }
        let mut m = Message::new(Type::Ack, code, req.message_id);
        m.token = req.token;
        m.add_uint_option(option::MAX_AGE, max_age);
        let datagram = tributary_coap::message::to_bytes(&m);
        self.stray.push((addr, datagram));
        true
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.seed
    }

    /// The peer at `addr`, created if the bound allows (else a
    /// confirmable request gets 5.03 Service Unavailable with Max-Age).
    fn peer_entry(&mut self, addr: SocketAddr, data: &[u8], now: Instant) -> bool {
        if self.peers.contains_key(&addr) {
            return true;
        }
        if self.peers.len() >= self.ctx.config.max_peers {
            self.refused_peers += 1;
            if self.refused_peers.is_power_of_two() {
                tracing::warn!(peer = %addr, max_peers = self.ctx.config.max_peers, refused = self.refused_peers, "CoAP peer limit reached: refusing new peers");
            }
            self.refuse(
                addr,
                data,
                Code::SERVICE_UNAVAILABLE,
                PEERS_FULL_MAX_AGE,
                now,
            );
            return false;
        }
        let seed = self.next_seed();
        let registration =
            self.ctx
                .limits
                .registry()
                .register(Protocol::Coap, addr, Some(self.transport));
        let c = &self.ctx.config;
        self.peers.insert(
            addr,
            Peer {
                endpoint: Endpoint::new(EndpointConfig::default(), seed),
                bucket: TokenBucket::new(c.rate, c.burst, now),
                refused_at: None,
                registration,
                login: None,
                identity: None,
                observations: HashMap::new(),
                uploads: HashMap::new(),
                downloads: HashMap::new(),
                last_seen: now,
            },
        );
        tracing::debug!(peer = %addr, "CoAP peer");
        true
    }

    /// Takes one datagram (decrypted, for DTLS; `identity` its PSK identity).
    pub fn datagram(
        &mut self,
        addr: SocketAddr,
        data: Bytes,
        identity: Option<&str>,
        now: Instant,
    ) {
        if !self.peer_entry(addr, &data, now) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(bucket) = &mut peer.bucket {
            if let Some(at) = bucket.ready_at(now) {
                // A flood: dropped, except that the first confirmable
                // request each second hears 4.29 with the seconds to wait
                // (RFC 8516); the client retransmits what matters.
                if peer
                    .refused_at
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    let wait = at.saturating_duration_since(now).as_secs_f64().ceil();
                    let max_age = (wait as u32).max(1);
                    if self.refuse(addr, &data, Code::TOO_MANY_REQUESTS, max_age, now)
                        && let Some(p) = self.peers.get_mut(&addr)
                    {
                        p.refused_at = Some(now);
                    }
                }
                return;
            }
            bucket.take(1, now);
        }
        if let Some(id) = identity
            && peer.identity.as_deref() != Some(id)
        {
            peer.identity = Some(id.to_string());
            peer.login = None;
        }
        peer.last_seen = now;
        peer.registration.counters.read(data.len());
        if let Err(e) = peer.endpoint.handle_datagram(data, now) {
            tracing::debug!(peer = %addr, error = %e, "malformed CoAP datagram");
        }
        self.events(addr, now);
        self.dirty.push(addr);
    }

    fn events(&mut self, addr: SocketAddr, now: Instant) {
        loop {
            let Some(ev) = self
                .peers
                .get_mut(&addr)
                .and_then(|p| p.endpoint.poll_event())
            else {
                return;
            };
            match ev {
                Event::Request(m) => self.request(addr, m, now),
                Event::Acknowledged { .. } => {}
                Event::Reset { token } | Event::TimedOut { token } => {
                    let obs = self
                        .peers
                        .get(&addr)
                        .and_then(|p| p.observations.get(&token).copied());
                    if let Some(id) = obs {
                        tracing::debug!(peer = %addr, "CoAP observation cancelled by the client (reset or no acknowledgement)");
                        self.cancel_observation(id);
                    }
                }
            }
        }
    }

    /// Takes a message from a consumer or a durability callback.
    pub fn inbound(&mut self, msg: Inbound, now: Instant) {
        match msg {
            Inbound::Deliver { obs, delivery } => self.notify(obs, delivery, now),
            Inbound::Respond {
                peer,
                request,
                response,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.endpoint.respond(&request, *response);
                    self.dirty.push(peer);
                }
            }
        }
    }

    /// Retransmissions, expiries, operator close requests and idle peers.
    pub fn tick(&mut self, now: Instant) {
        let idle = Duration::from_secs(self.ctx.config.peer_idle_timeout);
        let mut gone = Vec::new();
        let mut woke = Vec::new();
        for (addr, p) in &mut self.peers {
            if p.endpoint.poll_timeout().is_some_and(|at| at <= now) {
                p.endpoint.handle_timeout(now);
                woke.push(*addr);
            }
            p.uploads
                .retain(|_, (_, at)| now.duration_since(*at) < TRANSFER_LIFETIME);
            p.downloads
                .retain(|_, (_, _, at)| now.duration_since(*at) < TRANSFER_LIFETIME);
            let quiet = now.duration_since(p.last_seen) >= idle;
            if p.registration.is_close_requested()
                || (quiet && p.observations.is_empty() && !p.endpoint.is_sending())
            {
                gone.push(*addr);
            }
        }
        for addr in woke {
            self.events(addr, now);
            self.dirty.push(addr);
        }
        for addr in gone {
            self.remove_peer(addr, now);
        }
    }

    /// Forgets a peer. One an operator closed hears, for each observation,
    /// a last non-confirmable 5.03 Service Unavailable without Observe:
    /// a notification with an error code ends an observation (RFC 7641
    /// §3.2, §4.2), so the client knows to register again.
    fn remove_peer(&mut self, addr: SocketAddr, now: Instant) {
        let Some(mut p) = self.peers.remove(&addr) else {
            return;
        };
        let closed = p.registration.is_close_requested();
        if closed {
            for token in p.observations.keys() {
                let mut m = Message::new(Type::Non, Code::SERVICE_UNAVAILABLE, 0);
                m.token = token.clone();
                m.payload = Bytes::from_static(b"closed by an operator");
                p.endpoint.send(m, now);
            }
            while let Some(d) = p.endpoint.poll_transmit() {
                p.registration.counters.wrote(d.len());
                self.stray.push((addr, d));
            }
            self.closed.push(addr);
        }
        for (_, id) in p.observations {
            self.drop_observation(id);
        }
        tracing::debug!(peer = %addr, closed, "CoAP peer forgotten");
    }

    /// Peers closed by an operator since the last call.
    pub fn take_closed(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.closed)
    }

    /// Ends an observation: its queue goes.
    pub(super) fn cancel_observation(&mut self, id: u64) {
        if let Some(o) = self.observations.get(&id)
            && let Some(p) = self.peers.get_mut(&o.peer)
        {
            p.observations.remove(&o.token);
            p.endpoint.cancel(&o.token);
        }
        self.drop_observation(id);
    }

    fn drop_observation(&mut self, id: u64) {
        if let Some(o) = self.observations.remove(&id) {
            self.ctx.observations.remove(self.conn_id, id);
            o.sink.live.store(false, Ordering::Release);
            o.vhost.remove_queue(&o.queue);
        }
    }

    /// A new observation id and its consumer.
    pub(super) fn new_sink(&mut self) -> (u64, Arc<ObsSink>, Arc<AtomicU32>) {
        self.next_obs += 1;
        let inflight = Arc::new(AtomicU32::new(0));
        let sink = Arc::new(ObsSink {
            obs: self.next_obs,
            tx: self.tx.clone(),
            inflight: inflight.clone(),
            live: AtomicBool::new(true),
        });
        (self.next_obs, sink, inflight)
    }

    /// Registers a new observation.
    pub(super) fn add_observation(&mut self, id: u64, o: Observation, user: &str) {
        if let Some(p) = self.peers.get_mut(&o.peer) {
            p.observations.insert(o.token.clone(), id);
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.ctx.observations.insert(
                self.conn_id,
                id,
                super::ObservationInfo {
                    connection: p.registration.name(),
                    peer: o.peer,
                    user: user.to_string(),
                    vhost: o.vhost.name().to_string(),
                    filter: o.filter.clone(),
                    queue: o.queue.name().to_string(),
                    confirmable: o.confirmable,
                    since,
                    notifications: o.notifications.clone(),
                },
            );
        }
        self.observations.insert(id, o);
    }

    /// The datagrams to send now, peer by peer.
    pub fn drain_transmit(&mut self) -> Vec<(SocketAddr, Bytes)> {
        let mut out = std::mem::take(&mut self.stray);
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for addr in dirty {
            if let Some(p) = self.peers.get_mut(&addr) {
                while let Some(d) = p.endpoint.poll_transmit() {
                    p.registration.counters.wrote(d.len());
                    out.push((addr, d));
                }
            }
        }
        out
    }

    /// Marks a peer as having output.
    pub(super) fn touch(&mut self, addr: SocketAddr) {
        self.dirty.push(addr);
    }

    /// Ends every observation (shutdown).
    pub fn close(&mut self) {
        let ids: Vec<u64> = self.observations.keys().copied().collect();
        for id in ids {
            self.drop_observation(id);
        }
        self.peers.clear();
    }
}
