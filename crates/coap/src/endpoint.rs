//! One peer's message layer (RFC 7252 §4): deduplication of its confirmable
//! and non-confirmable messages by message id, the acknowledgement or reset
//! each one gets, and our own confirmable messages (Observe notifications)
//! retransmitted with exponential back-off until acknowledged, at most
//! NSTART of them outstanding at once.
//!
//! Order of use, as quinn-proto's: feed [`Endpoint::handle_datagram`] and
//! [`Endpoint::handle_timeout`], answer each [`Event::Request`] with
//! [`Endpoint::respond`], send notifications with [`Endpoint::send`], then
//! drain [`Endpoint::poll_event`] and [`Endpoint::poll_transmit`] and sleep
//! until [`Endpoint::poll_timeout`].

use crate::error::DecodeError;
use crate::message::{Code, Message, Type, decode, peek_header, to_bytes};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Transmission parameters (RFC 7252 §4.8).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// ACK_TIMEOUT: the first retransmission waits between this and
    /// `ack_timeout * ack_random_factor`.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR.
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// NSTART: our confirmable messages outstanding at once.
    pub nstart: usize,
    /// EXCHANGE_LIFETIME: how long a confirmable message id is remembered.
    pub exchange_lifetime: Duration,
    /// NON_LIFETIME: how long a non-confirmable message id is remembered.
    pub non_lifetime: Duration,
    /// Our confirmable messages waiting for NSTART; beyond it the oldest is
    /// dropped (an Observe notification superseded by newer ones).
    pub max_waiting: usize,
    /// Message ids remembered for deduplication; beyond it the oldest is forgotten.
    pub max_remembered: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            exchange_lifetime: Duration::from_secs(247),
            non_lifetime: Duration::from_secs(145),
            max_waiting: 64,
            max_remembered: 1024,
        }
    }
}

/// What the endpoint tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request (duplicates are answered from the cache, never reported).
    Request(Message),
    /// Our confirmable message was acknowledged.
    Acknowledged {
        /// Its token.
        token: Bytes,
    },
    /// The peer reset our message (for a notification: the observation ends).
    Reset {
        /// Its token.
        token: Bytes,
    },
    /// Our confirmable message was never acknowledged (or was dropped
    /// while waiting): the peer is gone or does not want it.
    TimedOut {
        /// Its token.
        token: Bytes,
    },
}

/// A remembered message id: when to forget it and, for a confirmable
/// request, the ACK (with piggybacked response) or RST it got.
#[derive(Debug)]
struct Seen {
    reply: Option<Bytes>,
}

#[derive(Debug)]
struct InFlight {
    message_id: u16,
    token: Bytes,
    bytes: Bytes,
    retransmits: u32,
    timeout: Duration,
    next: Instant,
}

/// One peer's CoAP message layer.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: u64,
    next_mid: u16,
    seen: HashMap<u16, Seen>,
    seen_order: VecDeque<(Instant, u16)>,
    in_flight: Vec<InFlight>,
    waiting: VecDeque<Message>,
    /// Our recent non-confirmable messages (id, token), to match a Reset.
    recent_non: VecDeque<(u16, Bytes)>,
    transmit: VecDeque<Bytes>,
    events: VecDeque<Event>,
}

/// Non-confirmable messages remembered for matching a Reset.
const RECENT_NON: usize = 32;

impl Endpoint {
    /// A new peer; `seed` (any value, e.g. random bits) picks the first
    /// message id and the retransmission jitter.
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        let rng = seed | 1;
        Endpoint {
            config,
            rng,
            next_mid: (seed >> 16) as u16,
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            in_flight: Vec::new(),
            waiting: VecDeque::new(),
            recent_non: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn remember(&mut self, mid: u16, lifetime: Duration, now: Instant) {
        if self.seen.len() >= self.config.max_remembered
            && let Some((_, old)) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(mid, Seen { reply: None });
        self.seen_order.push_back((now + lifetime, mid));
    }

    fn reset(&mut self, mid: u16) -> Bytes {
        to_bytes(&Message::new(Type::Rst, Code::EMPTY, mid))
    }

    /// Takes one datagram from the peer. A malformed confirmable message is
    /// answered with a Reset; the error is returned for the caller's counters.
    pub fn handle_datagram(&mut self, data: Bytes, now: Instant) -> Result<(), DecodeError> {
        let m = match decode(data.clone()) {
            Ok(m) => m,
            Err(e) => {
                if !matches!(e, DecodeError::BadVersion(_))
                    && let Some((Type::Con, mid)) = peek_header(&data)
                {
                    let rst = self.reset(mid);
                    self.transmit.push_back(rst);
                }
                return Err(e);
            }
        };
        match m.mtype {
            Type::Con | Type::Non => self.incoming(m, now),
            Type::Ack | Type::Rst => self.answer(m),
        }
        self.fill(now);
        Ok(())
    }

    fn incoming(&mut self, m: Message, now: Instant) {
        let con = m.mtype == Type::Con;
        if let Some(seen) = self.seen.get(&m.message_id) {
            // A duplicate: the same answer again (none while it is pending).
            if con && let Some(reply) = seen.reply.clone() {
                self.transmit.push_back(reply);
            }
            return;
        }
        if !m.code.is_request() {
            // We send no requests: an empty CON (ping) or a CON response is reset.
            if con {
                let rst = self.reset(m.message_id);
                self.transmit.push_back(rst);
            }
            return;
        }
        let lifetime = if con {
            self.config.exchange_lifetime
        } else {
            self.config.non_lifetime
        };
        self.remember(m.message_id, lifetime, now);
        self.events.push_back(Event::Request(m));
    }

    fn answer(&mut self, m: Message) {
        if let Some(i) = self
            .in_flight
            .iter()
            .position(|f| f.message_id == m.message_id)
        {
            let f = self.in_flight.swap_remove(i);
            self.events.push_back(if m.mtype == Type::Ack {
                Event::Acknowledged { token: f.token }
            } else {
                Event::Reset { token: f.token }
            });
            return;
        }
        if m.mtype == Type::Rst
            && let Some(i) = self
                .recent_non
                .iter()
                .position(|(mid, _)| *mid == m.message_id)
            && let Some((_, token)) = self.recent_non.remove(i)
        {
            self.events.push_back(Event::Reset { token });
        }
    }

    /// Answers a request: a piggybacked response in the ACK of a confirmable
    /// one (remembered, so a retransmitted request gets it again), a
    /// non-confirmable response to a non-confirmable one. The response takes
    /// the request's token.
    pub fn respond(&mut self, request: &Message, mut response: Message) {
        response.token = request.token.clone();
        if request.mtype == Type::Con {
            response.mtype = Type::Ack;
            response.message_id = request.message_id;
            let bytes = to_bytes(&response);
            if let Some(seen) = self.seen.get_mut(&request.message_id) {
                seen.reply = Some(bytes.clone());
            }
            self.transmit.push_back(bytes);
        } else {
            response.mtype = Type::Non;
            response.message_id = self.message_id();
            self.transmit.push_back(to_bytes(&response));
        }
    }

    /// Sends nothing for a non-confirmable request the client asked no
    /// response for; for a confirmable one an empty ACK.
    pub fn respond_empty(&mut self, request: &Message) {
        if request.mtype == Type::Con {
            let bytes = to_bytes(&Message::new(Type::Ack, Code::EMPTY, request.message_id));
            if let Some(seen) = self.seen.get_mut(&request.message_id) {
                seen.reply = Some(bytes.clone());
            }
            self.transmit.push_back(bytes);
        }
    }

    fn message_id(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    /// Sends a message of our own (an Observe notification): `m.mtype`
    /// Con or Non; its message id is assigned here. A confirmable one waits
    /// while NSTART are outstanding.
    pub fn send(&mut self, mut m: Message, now: Instant) {
        m.message_id = self.message_id();
        match m.mtype {
            Type::Con if self.in_flight.len() < self.config.nstart => self.start(m, now),
            Type::Con => {
                if self.waiting.len() >= self.config.max_waiting
                    && let Some(old) = self.waiting.pop_front()
                {
                    self.events.push_back(Event::TimedOut { token: old.token });
                }
                self.waiting.push_back(m);
            }
            _ => {
                if self.recent_non.len() == RECENT_NON {
                    self.recent_non.pop_front();
                }
                self.recent_non.push_back((m.message_id, m.token.clone()));
                self.transmit.push_back(to_bytes(&m));
            }
        }
    }

    fn start(&mut self, m: Message, now: Instant) {
        let factor = 1.0 + (self.config.ack_random_factor - 1.0) * self.random();
        let timeout = self.config.ack_timeout.mul_f64(factor);
        let bytes = to_bytes(&m);
        self.transmit.push_back(bytes.clone());
        self.in_flight.push(InFlight {
            message_id: m.message_id,
            token: m.token,
            bytes,
            retransmits: 0,
            timeout,
            next: now + timeout,
        });
    }

    /// Whether a confirmable message of ours is outstanding or waiting.
    pub fn is_sending(&self) -> bool {
        !self.in_flight.is_empty() || !self.waiting.is_empty()
    }

    /// Drops every queued or outstanding message with `token` (an
    /// observation that ended); no event is reported for them.
    pub fn cancel(&mut self, token: &[u8]) {
        self.waiting.retain(|m| m.token != token);
        self.in_flight.retain(|f| f.token != token);
        self.recent_non.retain(|(_, t)| t != token);
    }

    /// Retransmits what is due, gives up after MAX_RETRANSMIT, forgets
    /// expired message ids, and starts waiting messages NSTART allows.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.in_flight.len() {
            let f = &mut self.in_flight[i];
            if f.next > now {
                i += 1;
                continue;
            }
            if f.retransmits >= self.config.max_retransmit {
                let f = self.in_flight.swap_remove(i);
                self.events.push_back(Event::TimedOut { token: f.token });
                continue;
            }
            f.retransmits += 1;
            f.timeout *= 2;
            f.next = now + f.timeout;
            self.transmit.push_back(f.bytes.clone());
            i += 1;
        }
        while let Some(&(at, mid)) = self.seen_order.front() {
            if at > now {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&mid);
        }
        self.fill(now);
    }

    fn fill(&mut self, now: Instant) {
        while self.in_flight.len() < self.config.nstart {
            let Some(m) = self.waiting.pop_front() else {
                break;
            };
            self.start(m, now);
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.in_flight.iter().map(|f| f.next).min();
        let forget = self.seen_order.front().map(|(at, _)| *at);
        match (retransmit, forget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Nothing remembered, outstanding or queued: the peer's state may go.
    pub fn is_idle(&self) -> bool {
        self.seen.is_empty()
            && self.in_flight.is_empty()
            && self.waiting.is_empty()
            && self.transmit.is_empty()
    }
}

#[cfg(test)]
mod tests;
