//! The server side of an AMQP 0-9-1 connection as a sans-IO state machine.
//!
//! Input: [`Connection::handle_input`] (bytes read from the socket) and
//! [`Connection::handle_timeout`]. Output, in this order after each input: [`Connection::poll_event`]
//! until `None`, then write out [`Connection::transmit`] and clear it, then arm a timer for
//! [`Connection::poll_timeout`]. The application answers `Authenticate` and `Open` events with
//! `accept_*`/`reject_*`, and drives channels with `send_method`, `send_content`,
//! `close_channel` and `close`.
//!
//! Negotiation runs `ExpectProtocolHeader → ExpectStartOk → AwaitAuth → ExpectTuneOk →
//! ExpectOpen → AwaitOpen → Open`, then `Closing → Closed`; a challenge-response mechanism
//! (SCRAM) loops `AwaitAuth → ExpectSecureOk → AwaitAuth` over connection.secure / secure-ok
//! ([`Event::AuthStep`]), bounded by [`MAX_AUTH_ROUNDS`]. The connection enforces the framing
//! and channel rules itself, answering violations with the reply code RabbitMQ uses.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::PROTOCOL_HEADER;
use crate::error::{FrameError, ProtocolError};
use crate::frame::{self, BASIC_CLASS, FRAME_HEARTBEAT, FRAME_MIN_SIZE, Frame};
use crate::method::Method;
use crate::properties::BasicProperties;
use crate::reply::{self, ReplyCode};
use crate::shortstr::ShortStr;
use crate::table::{FieldTable, FieldValue};

/// Largest frame accepted before tune-ok fixes frame_max (RabbitMQ's `initial_frame_max`).
pub const HANDSHAKE_FRAME_MAX: u32 = 8192;
/// How long we wait for close-ok after sending connection.close, at most (RabbitMQ's value).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Close-ok wait before the connection is open (RabbitMQ's `NORMAL_TIMEOUT`).
pub const HANDSHAKE_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most input buffered while an authentication or vhost decision is pending.
pub const MAX_DEFERRED: usize = 256 * 1024;
/// The AMQP 0-9 protocol header, which RabbitMQ accepts as 0-9-1.
const PROTOCOL_HEADER_0_9: [u8; 8] = *b"AMQP\x01\x01\x00\x09";
/// Most connection.secure challenges one login may take, the final one carrying the server's
/// additional data included (SCRAM needs two), so a SASL exchange cannot go on for ever.
pub const MAX_AUTH_ROUNDS: u8 = 4;

/// Server-side limits and identity offered during negotiation.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Highest channel number offered in connection.tune (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Largest frame offered in connection.tune, overhead included (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Heartbeat interval in seconds offered in connection.tune (RabbitMQ: 60).
    pub heartbeat: u16,
    /// Time from the first byte to open-ok before the connection is dropped.
    pub handshake_timeout: Duration,
    /// Largest message body accepted (RabbitMQ's `max_message_size`, 128 MiB).
    pub max_message_size: u64,
    /// `product` in the server properties.
    pub product: String,
    /// `version` in the server properties.
    pub version: String,
    /// SASL mechanisms offered, in order of preference. `EXTERNAL` belongs
    /// here only for a connection whose transport authenticated the client
    /// (TLS with a verified client certificate, see [`ConnectionConfig::with_external`]).
    pub mechanisms: Vec<String>,
}

impl ConnectionConfig {
    /// The same configuration offering SASL EXTERNAL first, as RabbitMQ's
    /// `rabbitmq_auth_mechanism_ssl` does on a TLS connection whose client
    /// presented a verified certificate.
    pub fn with_external(mut self) -> Self {
        if !self
            .mechanisms
            .iter()
            .any(|m| m == Mechanism::External.name())
        {
            self.mechanisms
                .insert(0, Mechanism::External.name().to_owned());
        }
        self
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 128 * 1024 * 1024,
            product: "Tributary".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            // PLAIN first: some clients take the first mechanism they know.
            mechanisms: vec![
                "PLAIN".to_owned(),
                "AMQPLAIN".to_owned(),
                "SCRAM-SHA-256".to_owned(),
                "SCRAM-SHA-1".to_owned(),
            ],
        }
    }
}

/// The SASL mechanism a client chose in connection.start-ok.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616 PLAIN: `authzid \0 user \0 password`.
    Plain,
    /// RabbitMQ/QPid AMQPLAIN: a field table with LOGIN and PASSWORD.
    AmqPlain,
    /// RFC 4422 EXTERNAL: the transport (a client certificate) says who the
    /// client is; the response is an optional authorization identity.
    External,
    /// RFC 5802 SCRAM-SHA-1, run over connection.secure / secure-ok rounds
    /// ([`Event::AuthStep`]).
    ScramSha1,
    /// RFC 7677 SCRAM-SHA-256, run over connection.secure / secure-ok rounds
    /// ([`Event::AuthStep`]).
    ScramSha256,
}

impl Mechanism {
    /// The mechanism's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::AmqPlain => "AMQPLAIN",
            Mechanism::External => "EXTERNAL",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// Whether the mechanism is a challenge-response one: its start-ok response and every
    /// secure-ok arrive as [`Event::AuthStep`] rather than [`Event::Authenticate`].
    pub fn is_multi_step(self) -> bool {
        matches!(self, Mechanism::ScramSha1 | Mechanism::ScramSha256)
    }

    fn from_name(name: &[u8]) -> Option<Mechanism> {
        match name {
            b"PLAIN" => Some(Mechanism::Plain),
            b"AMQPLAIN" => Some(Mechanism::AmqPlain),
            b"EXTERNAL" => Some(Mechanism::External),
            b"SCRAM-SHA-1" => Some(Mechanism::ScramSha1),
            b"SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            _ => None,
        }
    }
}

/// What the connection tells the application.
// Properties stay inline: boxing them would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Client picked a mechanism and sent credentials; answer with accept_auth / reject_auth
    /// (EXTERNAL: [`Connection::accept_auth_as`] with the transport's identity).
    Authenticate {
        /// The chosen mechanism.
        mechanism: Mechanism,
        /// The user name; for EXTERNAL, the authorization identity the client asked for
        /// (usually empty: the identity the transport authenticated).
        username: String,
        /// The password, in clear (empty for EXTERNAL).
        password: String,
    },
    /// One step of a challenge-response login ([`Mechanism::is_multi_step`]): the start-ok
    /// response (`round` 0) or a secure-ok response (`round` 1, 2...). Answer with
    /// [`Connection::auth_challenge`] (another round), [`Connection::accept_auth_with_data`]
    /// (success with the server's final message), [`Connection::accept_auth_as`] or
    /// [`Connection::reject_auth`].
    AuthStep {
        /// The chosen mechanism.
        mechanism: Mechanism,
        /// How many challenges were sent before this response.
        round: u8,
        /// The client's response, as sent.
        response: Bytes,
    },
    /// connection.open; answer with accept_open / reject_open.
    Open {
        /// The requested virtual host.
        vhost: String,
    },
    /// A channel was opened; open-ok already sent.
    ChannelOpened {
        /// The channel number.
        channel: u16,
    },
    /// Client sent channel.close; close-ok already sent; release the channel's state now.
    ChannelClosed {
        /// The channel number.
        channel: u16,
    },
    /// Client confirmed our server-initiated channel.close; the channel id is free again.
    ChannelCloseOk {
        /// The channel number.
        channel: u16,
    },
    /// Any other non-content method on an open channel (exchange, queue, basic, confirm, tx,
    /// channel.flow/flow-ok), or connection.update-secret on channel 0.
    Method {
        /// The channel number.
        channel: u16,
        /// The method.
        method: Method,
    },
    /// A complete basic.publish: method, header and body assembled. A single body frame is a
    /// zero-copy slice of the input; several are concatenated once.
    Publish {
        /// The channel number.
        channel: u16,
        /// Target exchange.
        exchange: ShortStr,
        /// Routing key.
        routing_key: ShortStr,
        /// Return the message if it cannot be routed.
        mandatory: bool,
        /// Deprecated immediate flag (RabbitMQ refuses it).
        immediate: bool,
        /// Content properties.
        properties: BasicProperties,
        /// The body.
        body: Bytes,
    },
    /// Terminal: the connection is over. Flush [`Connection::transmit`], then drop the socket.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Why a connection ended.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent connection.close (we answered close-ok).
    ClientClosed {
        /// Client's reply code.
        reply_code: u16,
        /// Client's reply text.
        reply_text: String,
    },
    /// We closed the connection (protocol error, refused login or vhost, or `close()`), and
    /// close-ok arrived, timed out, or could not be waited for.
    ServerClosed {
        /// The code we sent.
        reply_code: u16,
        /// The text, as sent or (for refused logins) with the detail RabbitMQ keeps for its log.
        reply_text: String,
    },
    /// Nothing was received for two heartbeat intervals.
    HeartbeatTimeout,
    /// The handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The first eight octets were not an AMQP 0-9-1 protocol header.
    BadProtocolHeader,
}

#[derive(Clone, Debug)]
enum State {
    ExpectProtocolHeader,
    ExpectStartOk,
    AwaitAuth {
        mechanism: Mechanism,
    },
    /// A connection.secure challenge was sent; its secure-ok is due.
    ExpectSecureOk {
        mechanism: Mechanism,
    },
    /// The final challenge (the server's additional data on success) was sent; an empty
    /// secure-ok lets `user` in.
    ExpectFinalSecureOk {
        mechanism: Mechanism,
        user: String,
    },
    ExpectTuneOk,
    ExpectOpen,
    AwaitOpen,
    Open,
    Closing {
        reason: CloseReason,
        deadline: Instant,
    },
    Closed,
}

impl State {
    /// RabbitMQ's name for the state, used in "unexpected method in connection state X".
    fn rabbit_name(&self) -> &'static str {
        match self {
            State::ExpectProtocolHeader | State::ExpectStartOk => "starting",
            State::AwaitAuth { .. }
            | State::ExpectSecureOk { .. }
            | State::ExpectFinalSecureOk { .. } => "securing",
            State::ExpectTuneOk => "tuning",
            State::ExpectOpen | State::AwaitOpen => "opening",
            State::Open => "running",
            State::Closing { .. } => "closing",
            State::Closed => "closed",
        }
    }
}

#[derive(Debug)]
struct PendingPublish {
    exchange: ShortStr,
    routing_key: ShortStr,
    mandatory: bool,
    immediate: bool,
}

#[derive(Debug)]
enum BodyBuf {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

#[derive(Debug)]
enum Assembly {
    Idle,
    Header(PendingPublish),
    Body {
        publish: PendingPublish,
        properties: Box<BasicProperties>,
        remaining: u64,
        body: BodyBuf,
    },
}

#[derive(Debug)]
enum ChannelState {
    Open(Assembly),
    /// We sent channel.close; everything but close/close-ok is dropped.
    Closing,
}

enum Step {
    Progress,
    NeedMore(usize),
}

/// The server side of one AMQP 0-9-1 connection.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    state: State,
    out: BytesMut,
    events: VecDeque<Event>,
    channels: HashMap<u16, ChannelState>,
    channel_max: u16,
    frame_max: u32,
    heartbeat: u16,
    frame_limit: u32,
    now: Instant,
    handshake_deadline: Option<Instant>,
    last_recv: Instant,
    last_send: Instant,
    deferred: BytesMut,
    user: Option<String>,
    pending_user: Option<String>,
    vhost: Option<String>,
    client_properties: Option<FieldTable>,
    auth_failure_close: bool,
    /// connection.secure challenges sent for this login ([`MAX_AUTH_ROUNDS`] at most).
    auth_rounds: u8,
}

impl Connection {
    /// A connection whose socket was just accepted at `now`.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        let handshake_deadline = now.checked_add(config.handshake_timeout);
        Connection {
            config,
            state: State::ExpectProtocolHeader,
            out: BytesMut::new(),
            events: VecDeque::new(),
            channels: HashMap::new(),
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
            frame_limit: HANDSHAKE_FRAME_MAX,
            now,
            handshake_deadline,
            last_recv: now,
            last_send: now,
            deferred: BytesMut::new(),
            user: None,
            pending_user: None,
            vhost: None,
            client_properties: None,
            auth_failure_close: false,
            auth_rounds: 0,
        }
    }

    /// Consume every complete frame in `buf` (it is drained of what was consumed). Never panics.
    ///
    /// A trailing partial frame is left in `buf` for the next call. While an `Authenticate`
    /// or `Open` decision is pending, input is buffered internally (up to [`MAX_DEFERRED`]) and
    /// processed by `accept_*`.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) {
        self.tick(now);
        if buf.is_empty() {
            return;
        }
        if !matches!(self.state, State::Closed) {
            self.last_recv = self.now;
        }
        self.feed(buf);
    }

    /// The driver stopped reading on purpose (flow control): the peer's
    /// apparent silence is ours, so the missed-heartbeat deadline restarts from
    /// `now`, as RabbitMQ does for blocked connections.
    pub fn reading_paused(&mut self, now: Instant) {
        self.tick(now);
        if !matches!(self.state, State::Closed) {
            self.last_recv = self.now;
        }
    }

    /// The next event, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the socket (append-only; the driver writes then clears it).
    pub fn transmit(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// When [`Connection::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Closed => None,
            State::Closing { deadline, .. } => Some(*deadline),
            _ => {
                let mut t = self.handshake_deadline;
                if let Some((send, recv)) = self.heartbeat_deadlines() {
                    t = Some(t.map_or(send, |t| t.min(send)).min(recv));
                }
                t
            }
        }
    }

    /// Runs expired timers: handshake and close timeouts, heartbeat sending and checking.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        let now = self.now;
        match &self.state {
            State::Closed => {}
            State::Closing { reason, deadline } => {
                if now >= *deadline {
                    let reason = reason.clone();
                    self.finish(reason);
                }
            }
            _ => {
                if self.handshake_deadline.is_some_and(|d| now >= d) {
                    self.finish(CloseReason::HandshakeTimeout);
                    return;
                }
                if let Some((send, recv)) = self.heartbeat_deadlines() {
                    if now >= recv {
                        self.finish(CloseReason::HeartbeatTimeout);
                        return;
                    }
                    if now >= send {
                        frame::encode_heartbeat(&mut self.out);
                        self.last_send = now;
                    }
                }
            }
        }
    }

    /// Lets the login through: sends connection.tune.
    pub fn accept_auth(&mut self) {
        if !matches!(self.state, State::AwaitAuth { .. }) {
            return;
        }
        self.user = self.pending_user.take();
        let tune = Method::ConnectionTune {
            channel_max: self.config.channel_max,
            frame_max: self.config.frame_max,
            heartbeat: self.config.heartbeat,
        };
        self.write_method(0, &tune);
        self.state = State::ExpectTuneOk;
        self.resume();
    }

    /// Lets the login through as `user` (EXTERNAL: the name the client
    /// certificate stands for, which the machine cannot know): sends connection.tune.
    pub fn accept_auth_as(&mut self, user: &str) {
        if matches!(self.state, State::AwaitAuth { .. }) {
            self.pending_user = Some(user.to_owned());
            self.accept_auth();
        }
    }

    /// Refuses the login: 403 ACCESS_REFUSED connection.close as RabbitMQ sends it when the
    /// client has the `authentication_failure_close` capability (otherwise the socket is just
    /// closed). `text` is kept for the log in [`CloseReason::ServerClosed`], not sent.
    pub fn reject_auth(&mut self, text: &str) {
        let State::AwaitAuth { mechanism } = self.state else {
            return;
        };
        self.refuse_login(mechanism, text);
    }

    /// Another round of a challenge-response login: sends connection.secure with `challenge`
    /// and waits for the client's secure-ok, reported as [`Event::AuthStep`]. Past
    /// [`MAX_AUTH_ROUNDS`] challenges the login is refused instead.
    pub fn auth_challenge(&mut self, challenge: &[u8]) {
        let State::AwaitAuth { mechanism } = self.state else {
            return;
        };
        if !self.count_round(mechanism) {
            return;
        }
        self.send_secure(challenge);
        self.state = State::ExpectSecureOk { mechanism };
        self.resume();
    }

    /// Ends a challenge-response login successfully as `user`, with the server's additional
    /// data (SCRAM's server-final-message `v=...`). AMQP 0-9-1 has no room for data in
    /// connection.tune, so, as RFC 4422 §3.6 says for such protocols, the data goes out as one
    /// more connection.secure; the client's empty secure-ok is answered with connection.tune
    /// (a non-empty one refuses the login).
    pub fn accept_auth_with_data(&mut self, user: &str, data: &[u8]) {
        let State::AwaitAuth { mechanism } = self.state else {
            return;
        };
        if !self.count_round(mechanism) {
            return;
        }
        self.send_secure(data);
        self.state = State::ExpectFinalSecureOk {
            mechanism,
            user: user.to_owned(),
        };
        self.resume();
    }

    /// Counts one more challenge; refuses the login once there were too many.
    fn count_round(&mut self, mechanism: Mechanism) -> bool {
        if self.auth_rounds >= MAX_AUTH_ROUNDS {
            self.refuse_login(
                mechanism,
                &format!("ACCESS_REFUSED - more than {MAX_AUTH_ROUNDS} SASL rounds"),
            );
            return false;
        }
        self.auth_rounds += 1;
        true
    }

    fn send_secure(&mut self, challenge: &[u8]) {
        self.write_method(
            0,
            &Method::ConnectionSecure {
                challenge: Bytes::copy_from_slice(challenge),
            },
        );
    }

    /// 403 ACCESS_REFUSED, the way [`Connection::reject_auth`] describes.
    fn refuse_login(&mut self, mechanism: Mechanism, text: &str) {
        let reason = CloseReason::ServerClosed {
            reply_code: reply::ACCESS_REFUSED,
            reply_text: reply::reply_text(reply::ACCESS_REFUSED, text),
        };
        if self.auth_failure_close {
            let safe = format!(
                "ACCESS_REFUSED - Login was refused using authentication mechanism {}. \
                 For details see the broker logfile.",
                mechanism.name()
            );
            self.write_method(
                0,
                &Method::ConnectionClose {
                    reply_code: reply::ACCESS_REFUSED,
                    reply_text: ShortStr::from(safe),
                    class_id: 0,
                    method_id: 0,
                },
            );
            self.enter_closing(reason);
        } else {
            self.finish(reason);
        }
    }

    /// Grants the virtual host: sends connection.open-ok; the connection is open.
    pub fn accept_open(&mut self) {
        if !matches!(self.state, State::AwaitOpen) {
            return;
        }
        self.write_method(
            0,
            &Method::ConnectionOpenOk {
                known_hosts: ShortStr::default(),
            },
        );
        self.state = State::Open;
        self.handshake_deadline = None;
        self.resume();
    }

    /// Refuses the virtual host, e.g. 530 NOT_ALLOWED "vhost x not found".
    pub fn reject_open(&mut self, code: u16, text: &str) {
        if !matches!(self.state, State::AwaitOpen) {
            return;
        }
        self.fail(code, text.to_owned(), 10, 40);
    }

    /// Sends a method frame (dropped once the connection is closing).
    pub fn send_method(&mut self, channel: u16, method: &Method) {
        if self.can_send() {
            self.write_method(channel, method);
        }
    }

    /// Sends a content method (deliver, get-ok, return) with its header and body, split into
    /// body frames at the negotiated frame_max.
    pub fn send_content(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        if !self.can_send() {
            return;
        }
        self.out.reserve(body.len() + 256);
        frame::encode_method(channel, method, &mut self.out);
        frame::encode_header(
            channel,
            method.class_id(),
            body.len() as u64,
            properties,
            &mut self.out,
        );
        frame::encode_body(channel, body, self.frame_max, &mut self.out);
        self.last_send = self.now;
    }

    /// Server-initiated channel.close (a soft error such as 404 or 406). Frames on the channel
    /// are then ignored until the client's close-ok, reported as [`Event::ChannelCloseOk`].
    pub fn close_channel(
        &mut self,
        channel: u16,
        code: u16,
        text: &str,
        class_id: u16,
        method_id: u16,
    ) {
        if !self.can_send() || channel == 0 {
            return;
        }
        match self.channels.get_mut(&channel) {
            Some(st @ ChannelState::Open(_)) => *st = ChannelState::Closing,
            _ => return,
        }
        let close = Method::ChannelClose {
            reply_code: code,
            reply_text: ShortStr::from(reply::reply_text(code, text)),
            class_id,
            method_id,
        };
        self.write_method(channel, &close);
    }

    /// Server-initiated connection.close (e.g. 320 CONNECTION_FORCED on shutdown); waits for
    /// close-ok (with a timeout), then [`Event::Closed`].
    pub fn close(&mut self, code: u16, text: &str, class_id: u16, method_id: u16) {
        match self.state {
            State::Closing { .. } | State::Closed => {}
            State::ExpectProtocolHeader => self.finish(CloseReason::ServerClosed {
                reply_code: code,
                reply_text: reply::reply_text(code, text),
            }),
            _ => self.fail(code, text.to_owned(), class_id, method_id),
        }
    }

    /// Whether the connection is over ([`Event::Closed`] has been queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether open-ok was sent and the connection is not closing.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Negotiated (channel_max, frame_max, heartbeat); zeros until tune-ok.
    pub fn negotiated(&self) -> (u16, u32, u16) {
        (self.channel_max, self.frame_max, self.heartbeat)
    }

    /// The authenticated user, once accept_auth was called.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The virtual host the client asked for in connection.open.
    pub fn vhost(&self) -> Option<&str> {
        self.vhost.as_deref()
    }

    /// The client's properties from connection.start-ok (product, capabilities...).
    pub fn client_properties(&self) -> Option<&FieldTable> {
        self.client_properties.as_ref()
    }

    // ---- input processing ------------------------------------------------------------------

    fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn awaiting_decision(&self) -> bool {
        matches!(self.state, State::AwaitAuth { .. } | State::AwaitOpen)
    }

    fn resume(&mut self) {
        let mut empty = BytesMut::new();
        self.feed(&mut empty);
    }

    fn stash(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() {
            return;
        }
        if self.deferred.len() + buf.len() > MAX_DEFERRED {
            buf.clear();
            self.deferred.clear();
            self.protocol_error(ProtocolError::HandshakeOverflow, 0, 0);
            return;
        }
        self.deferred.extend_from_slice(buf);
        buf.clear();
    }

    fn feed(&mut self, buf: &mut BytesMut) {
        // Finish input deferred during a handshake decision first, topping it up from `buf`
        // only as far as its first frame needs, so that the steady state stays zero-copy.
        while !self.deferred.is_empty() {
            if matches!(self.state, State::Closed) {
                self.deferred.clear();
                buf.clear();
                return;
            }
            if self.awaiting_decision() {
                self.stash(buf);
                return;
            }
            let mut d = std::mem::take(&mut self.deferred);
            let step = self.step(&mut d);
            if let Step::NeedMore(n) = step {
                if buf.is_empty() {
                    self.deferred = d;
                    return;
                }
                let k = n.min(buf.len());
                d.extend_from_slice(&buf[..k]);
                buf.advance(k);
            }
            if !d.is_empty() {
                d.extend_from_slice(&self.deferred);
                self.deferred = d;
            }
        }
        loop {
            if matches!(self.state, State::Closed) {
                buf.clear();
                return;
            }
            if self.awaiting_decision() {
                self.stash(buf);
                return;
            }
            if let Step::NeedMore(_) = self.step(buf) {
                return;
            }
        }
    }

    /// Consumes at most one unit (protocol header or frame) from `buf`.
    fn step(&mut self, buf: &mut BytesMut) -> Step {
        if matches!(self.state, State::ExpectProtocolHeader) {
            return self.protocol_header(buf);
        }
        match frame::decode_frame(buf, self.frame_limit) {
            Ok(Some(f)) => {
                self.handle_frame(f);
                Step::Progress
            }
            Ok(None) => {
                let need = if buf.len() < 7 {
                    7 - buf.len()
                } else {
                    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
                    (7 + size + 1).saturating_sub(buf.len()).max(1)
                };
                Step::NeedMore(need)
            }
            Err(e) => {
                if e.is_fatal() {
                    buf.clear();
                }
                self.frame_error(e);
                Step::Progress
            }
        }
    }

    fn protocol_header(&mut self, buf: &mut BytesMut) -> Step {
        let n = buf.len().min(8);
        let ok_prefix = PROTOCOL_HEADER[..n] == buf[..n] || PROTOCOL_HEADER_0_9[..n] == buf[..n];
        if !ok_prefix {
            buf.clear();
            self.out.extend_from_slice(&PROTOCOL_HEADER);
            self.finish(CloseReason::BadProtocolHeader);
            return Step::Progress;
        }
        if n < 8 {
            return Step::NeedMore(8 - n);
        }
        buf.advance(8);
        let start = Method::ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: self.server_properties(),
            mechanisms: Bytes::from(self.config.mechanisms.join(" ")),
            locales: Bytes::from_static(b"en_US"),
        };
        self.write_method(0, &start);
        self.state = State::ExpectStartOk;
        Step::Progress
    }

    fn server_properties(&self) -> FieldTable {
        let caps: FieldTable = [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ]
        .into_iter()
        .map(|k| (ShortStr::from_static(k), FieldValue::Bool(true)))
        .collect();
        let s = |v: &str| FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()));
        FieldTable(vec![
            (
                ShortStr::from_static("capabilities"),
                FieldValue::Table(caps),
            ),
            (ShortStr::from_static("product"), s(&self.config.product)),
            (ShortStr::from_static("version"), s(&self.config.version)),
            (ShortStr::from_static("platform"), s("Rust")),
            (
                ShortStr::from_static("copyright"),
                s("Copyright (c) the Tributary authors"),
            ),
            (
                ShortStr::from_static("information"),
                s("Licensed under the Apache License 2.0"),
            ),
        ])
    }

    fn frame_error(&mut self, e: FrameError) {
        if let State::Closing { reason, .. } = &self.state {
            // Nothing more can be answered; a desynchronised stream ends the wait.
            if e.is_fatal() {
                let reason = reason.clone();
                self.finish(reason);
            }
            return;
        }
        let (class_id, method_id) = e.class_method();
        let fatal = e.is_fatal();
        self.fail(e.reply_code(), e.to_string(), class_id, method_id);
        if fatal {
            // The stream is out of sync: no close-ok can be read, so end now (after the
            // close frame is flushed), as RabbitMQ does.
            if let State::Closing { reason, .. } = &self.state {
                let reason = reason.clone();
                self.finish(reason);
            }
        }
    }

    fn handle_frame(&mut self, f: Frame) {
        if let State::Closing { .. } = self.state {
            return self.closing_frame(f);
        }
        match f {
            Frame::Heartbeat { channel: 0 } => {}
            Frame::Method { channel: 0, method } => self.connection_method(method),
            Frame::Heartbeat { channel } => self.protocol_error(
                ProtocolError::UnexpectedFrame {
                    frame_type: FRAME_HEARTBEAT,
                    channel,
                },
                0,
                0,
            ),
            f if f.channel() == 0 || !matches!(self.state, State::Open) => {
                let e = ProtocolError::UnexpectedFrame {
                    frame_type: f.frame_type(),
                    channel: f.channel(),
                };
                self.protocol_error(e, 0, 0)
            }
            f => self.channel_frame(f),
        }
    }

    fn closing_frame(&mut self, f: Frame) {
        let State::Closing { reason, .. } = &self.state else {
            return;
        };
        let reason = reason.clone();
        match f {
            Frame::Method {
                channel: 0,
                method: Method::ConnectionCloseOk,
            } => self.finish(reason),
            Frame::Method {
                channel: 0,
                method: Method::ConnectionClose { .. },
            } => {
                self.write_method(0, &Method::ConnectionCloseOk);
                self.finish(reason);
            }
            _ => {}
        }
    }

    fn connection_method(&mut self, method: Method) {
        match (&self.state, method) {
            (
                _,
                Method::ConnectionClose {
                    reply_code,
                    reply_text,
                    ..
                },
            ) => {
                self.write_method(0, &Method::ConnectionCloseOk);
                self.finish(CloseReason::ClientClosed {
                    reply_code,
                    reply_text: reply_text.to_string(),
                });
            }
            (
                State::ExpectStartOk,
                Method::ConnectionStartOk {
                    client_properties,
                    mechanism,
                    response,
                    ..
                },
            ) => self.start_ok(client_properties, mechanism, response),
            (State::ExpectSecureOk { mechanism }, Method::ConnectionSecureOk { response }) => {
                let mechanism = *mechanism;
                self.state = State::AwaitAuth { mechanism };
                self.events.push_back(Event::AuthStep {
                    mechanism,
                    round: self.auth_rounds,
                    response,
                });
            }
            (
                State::ExpectFinalSecureOk { mechanism, user },
                Method::ConnectionSecureOk { response },
            ) => {
                let (mechanism, user) = (*mechanism, user.clone());
                self.state = State::AwaitAuth { mechanism };
                if response.is_empty() {
                    self.accept_auth_as(&user);
                } else {
                    self.refuse_login(
                        mechanism,
                        "ACCESS_REFUSED - non-empty response to the final SASL challenge",
                    );
                }
            }
            (
                State::ExpectTuneOk,
                Method::ConnectionTuneOk {
                    channel_max,
                    frame_max,
                    heartbeat,
                },
            ) => self.tune_ok(channel_max, frame_max, heartbeat),
            (State::ExpectOpen, Method::ConnectionOpen { virtual_host, .. }) => {
                let vhost = virtual_host.to_string();
                self.vhost = Some(vhost.clone());
                self.state = State::AwaitOpen;
                self.events.push_back(Event::Open { vhost });
            }
            (State::Open, m @ Method::ConnectionUpdateSecret { .. }) => {
                self.events.push_back(Event::Method {
                    channel: 0,
                    method: m,
                })
            }
            (state, m) => {
                let e = ProtocolError::UnexpectedMethod {
                    state: state.rabbit_name(),
                };
                self.protocol_error(e, m.class_id(), m.method_id())
            }
        }
    }

    fn start_ok(&mut self, client_properties: FieldTable, mechanism: ShortStr, response: Bytes) {
        let offered = self
            .config
            .mechanisms
            .iter()
            .any(|m| m.as_bytes() == mechanism.as_bytes());
        let Some(mech) = Mechanism::from_name(mechanism.as_bytes()).filter(|_| offered) else {
            let e = ProtocolError::UnknownMechanism(mechanism.to_string());
            return self.protocol_error(e, 10, 11);
        };
        self.auth_failure_close = matches!(
            client_properties.get("capabilities"),
            Some(FieldValue::Table(caps))
                if caps.get("authentication_failure_close") == Some(&FieldValue::Bool(true))
        );
        self.client_properties = Some(client_properties);
        if mech.is_multi_step() {
            self.state = State::AwaitAuth { mechanism: mech };
            self.events.push_back(Event::AuthStep {
                mechanism: mech,
                round: 0,
                response,
            });
            return;
        }
        let creds = match mech {
            Mechanism::Plain => parse_plain(&response),
            Mechanism::AmqPlain => parse_amqplain(response),
            Mechanism::External => utf8(&response).map(|authzid| (authzid, String::new())),
            Mechanism::ScramSha1 | Mechanism::ScramSha256 => return,
        };
        match creds {
            Ok((username, password)) => {
                self.pending_user = Some(username.clone());
                self.state = State::AwaitAuth { mechanism: mech };
                self.events.push_back(Event::Authenticate {
                    mechanism: mech,
                    username,
                    password,
                });
            }
            Err(e) => self.protocol_error(e, 10, 11),
        }
    }

    fn tune_ok(&mut self, channel_max: u16, frame_max: u32, heartbeat: u16) {
        let server_ch = self.config.channel_max;
        let server_fm = self.config.frame_max;
        let negotiation = |field, value: u32, cmp, bound, limit| ProtocolError::Negotiation {
            field,
            value,
            detail: "",
            cmp,
            bound,
            limit,
        };
        // A client's 0 means "no limit": it gets the server's value.
        let ch = if channel_max == 0 {
            server_ch
        } else {
            channel_max
        };
        if server_ch != 0 && ch > server_ch {
            let e = negotiation(
                "channel_max",
                ch as u32,
                "higher",
                "maximum",
                server_ch as u32,
            );
            return self.protocol_error(e, 10, 30);
        }
        let fm = if frame_max == 0 { server_fm } else { frame_max };
        if fm != 0 && fm < FRAME_MIN_SIZE {
            let e = negotiation("frame_max", fm, "lower", "minimum", FRAME_MIN_SIZE);
            return self.protocol_error(e, 10, 30);
        }
        if server_fm != 0 && fm > server_fm {
            let e = negotiation("frame_max", fm, "higher", "maximum", server_fm);
            return self.protocol_error(e, 10, 30);
        }
        self.channel_max = if ch == 0 { u16::MAX } else { ch };
        self.frame_max = fm;
        self.frame_limit = fm;
        // As RabbitMQ: the client's heartbeat value is used as is (0 disables heartbeats).
        self.heartbeat = heartbeat;
        self.last_recv = self.now;
        self.last_send = self.now;
        self.state = State::ExpectOpen;
    }

    fn channel_frame(&mut self, f: Frame) {
        let channel = f.channel();
        match f {
            Frame::Method { method, .. } => self.channel_method(channel, method),
            Frame::Header {
                class_id,
                body_size,
                properties,
                ..
            } => self.content_header(channel, class_id, body_size, properties),
            Frame::Body { payload, .. } => self.content_body(channel, payload),
            Frame::Heartbeat { .. } => {}
        }
    }

    fn channel_method(&mut self, channel: u16, method: Method) {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        match self.channels.get_mut(&channel) {
            None => {
                if !matches!(method, Method::ChannelOpen { .. }) {
                    return self.protocol_error(ProtocolError::ChannelNotOpen, class_id, method_id);
                }
                if channel > self.channel_max {
                    let e = ProtocolError::ChannelMax {
                        channel,
                        channel_max: self.channel_max,
                    };
                    return self.protocol_error(e, class_id, method_id);
                }
                self.channels
                    .insert(channel, ChannelState::Open(Assembly::Idle));
                self.write_method(
                    channel,
                    &Method::ChannelOpenOk {
                        channel_id: Bytes::new(),
                    },
                );
                self.events.push_back(Event::ChannelOpened { channel });
            }
            Some(ChannelState::Closing) => match method {
                Method::ChannelClose { .. } => self.write_method(channel, &Method::ChannelCloseOk),
                Method::ChannelCloseOk => {
                    self.channels.remove(&channel);
                    self.events.push_back(Event::ChannelCloseOk { channel });
                }
                _ => {}
            },
            Some(ChannelState::Open(assembly)) => {
                match assembly {
                    Assembly::Idle => {}
                    Assembly::Header(_) => {
                        let e = ProtocolError::ExpectedContentHeader {
                            class_id: BASIC_CLASS,
                        };
                        return self.protocol_error(e, 60, 40);
                    }
                    Assembly::Body { .. } => {
                        return self.protocol_error(ProtocolError::ExpectedContentBody, 60, 40);
                    }
                }
                match method {
                    Method::ChannelOpen { .. } => {
                        self.protocol_error(ProtocolError::ChannelAlreadyOpen, class_id, method_id)
                    }
                    Method::ChannelClose { .. } => {
                        self.channels.remove(&channel);
                        self.write_method(channel, &Method::ChannelCloseOk);
                        self.events.push_back(Event::ChannelClosed { channel });
                    }
                    Method::ChannelCloseOk => {}
                    Method::BasicPublish {
                        exchange,
                        routing_key,
                        mandatory,
                        immediate,
                        ..
                    } => {
                        *assembly = Assembly::Header(PendingPublish {
                            exchange,
                            routing_key,
                            mandatory,
                            immediate,
                        });
                    }
                    m if m.has_content() || m.class_id() == 10 => {
                        let e = ProtocolError::CommandInvalid {
                            class_id,
                            method_id,
                        };
                        self.protocol_error(e, class_id, method_id)
                    }
                    m => self.events.push_back(Event::Method { channel, method: m }),
                }
            }
        }
    }

    fn content_header(
        &mut self,
        channel: u16,
        class_id: u16,
        body_size: u64,
        properties: BasicProperties,
    ) {
        let max = self.config.max_message_size;
        let Some(ChannelState::Open(assembly)) = self.channels.get_mut(&channel) else {
            if self.channels.contains_key(&channel) {
                return; // closing: dropped
            }
            return self.protocol_error(ProtocolError::ExpectedMethod, 0, 0);
        };
        let publish = match std::mem::replace(assembly, Assembly::Idle) {
            Assembly::Header(p) => p,
            Assembly::Idle => return self.protocol_error(ProtocolError::ExpectedMethod, 0, 0),
            body @ Assembly::Body { .. } => {
                *assembly = body;
                return self.protocol_error(ProtocolError::ExpectedContentBody, 60, 40);
            }
        };
        if class_id != BASIC_CLASS {
            let e = ProtocolError::WrongContentClass {
                expected: BASIC_CLASS,
                got: class_id,
            };
            return self.protocol_error(e, 60, 40);
        }
        if body_size > max {
            let e = ProtocolError::MessageTooLarge {
                size: body_size,
                max,
            };
            return self.channel_error(channel, e, 60, 40);
        }
        if body_size == 0 {
            return self.emit_publish(channel, publish, properties, Bytes::new());
        }
        *assembly = Assembly::Body {
            publish,
            properties: Box::new(properties),
            remaining: body_size,
            body: BodyBuf::Empty,
        };
    }

    fn content_body(&mut self, channel: u16, payload: Bytes) {
        let Some(ChannelState::Open(assembly)) = self.channels.get_mut(&channel) else {
            if self.channels.contains_key(&channel) {
                return;
            }
            return self.protocol_error(ProtocolError::ExpectedMethod, 0, 0);
        };
        let (remaining, body) = match assembly {
            Assembly::Body {
                remaining, body, ..
            } => (remaining, body),
            Assembly::Idle => return self.protocol_error(ProtocolError::ExpectedMethod, 0, 0),
            Assembly::Header(_) => {
                let e = ProtocolError::ExpectedContentHeader {
                    class_id: BASIC_CLASS,
                };
                return self.protocol_error(e, 60, 40);
            }
        };
        let len = payload.len() as u64;
        if len > *remaining {
            return self.protocol_error(ProtocolError::BodyTooLarge, 60, 40);
        }
        *remaining -= len;
        let left = *remaining;
        if !payload.is_empty() {
            *body = match std::mem::replace(body, BodyBuf::Empty) {
                BodyBuf::Empty => BodyBuf::One(payload),
                BodyBuf::One(first) => {
                    // Grow with what actually arrived (at most 1 MiB ahead), so a header that
                    // announces a large body cannot make us reserve it up front.
                    let so_far = first.len() + payload.len();
                    let cap = (so_far as u64 + left).min((so_far as u64).max(1 << 20) * 2);
                    let mut m = BytesMut::with_capacity(cap as usize);
                    m.extend_from_slice(&first);
                    m.extend_from_slice(&payload);
                    BodyBuf::Many(m)
                }
                BodyBuf::Many(mut m) => {
                    m.extend_from_slice(&payload);
                    BodyBuf::Many(m)
                }
            };
        }
        if left == 0 {
            let Assembly::Body {
                publish,
                properties,
                body,
                ..
            } = std::mem::replace(assembly, Assembly::Idle)
            else {
                return;
            };
            let body = match body {
                BodyBuf::Empty => Bytes::new(),
                BodyBuf::One(b) => b,
                BodyBuf::Many(m) => m.freeze(),
            };
            self.emit_publish(channel, publish, *properties, body);
        }
    }

    fn emit_publish(
        &mut self,
        channel: u16,
        p: PendingPublish,
        properties: BasicProperties,
        body: Bytes,
    ) {
        self.events.push_back(Event::Publish {
            channel,
            exchange: p.exchange,
            routing_key: p.routing_key,
            mandatory: p.mandatory,
            immediate: p.immediate,
            properties,
            body,
        });
    }

    // ---- output and closing ----------------------------------------------------------------

    fn can_send(&self) -> bool {
        !matches!(
            self.state,
            State::Closing { .. } | State::Closed | State::ExpectProtocolHeader
        )
    }

    fn write_method(&mut self, channel: u16, method: &Method) {
        frame::encode_method(channel, method, &mut self.out);
        self.last_send = self.now;
    }

    fn heartbeat_deadlines(&self) -> Option<(Instant, Instant)> {
        if self.heartbeat == 0 {
            return None;
        }
        let hb = Duration::from_secs(u64::from(self.heartbeat));
        let send = self.last_send.checked_add(hb / 2)?;
        let recv = self.last_recv.checked_add(hb * 2)?;
        Some((send, recv))
    }

    fn channel_error(&mut self, channel: u16, e: ProtocolError, class_id: u16, method_id: u16) {
        self.close_channel(channel, e.reply_code(), &e.to_string(), class_id, method_id);
    }

    fn protocol_error(&mut self, e: ProtocolError, class_id: u16, method_id: u16) {
        self.fail(e.reply_code(), e.to_string(), class_id, method_id);
    }

    /// Sends connection.close and waits for close-ok.
    fn fail(&mut self, code: ReplyCode, text: String, class_id: u16, method_id: u16) {
        if matches!(self.state, State::Closing { .. } | State::Closed) {
            return;
        }
        let reply_text = reply::reply_text(code, &text);
        let close = Method::ConnectionClose {
            reply_code: code,
            reply_text: ShortStr::from(reply_text.as_str()),
            class_id,
            method_id,
        };
        self.write_method(0, &close);
        self.enter_closing(CloseReason::ServerClosed {
            reply_code: code,
            reply_text,
        });
    }

    fn enter_closing(&mut self, reason: CloseReason) {
        let timeout = if self.heartbeat > 0 {
            Duration::from_secs(u64::from(self.heartbeat)).min(CLOSE_TIMEOUT)
        } else if matches!(self.state, State::Open) {
            CLOSE_TIMEOUT
        } else {
            HANDSHAKE_CLOSE_TIMEOUT
        };
        let deadline = self.now.checked_add(timeout).unwrap_or(self.now);
        self.channels.clear();
        self.deferred.clear();
        self.state = State::Closing { reason, deadline };
    }

    fn finish(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.state = State::Closed;
        self.channels.clear();
        self.deferred.clear();
        self.events.push_back(Event::Closed { reason });
    }
}

fn utf8(b: &[u8]) -> Result<String, ProtocolError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| ProtocolError::InvalidAuthResponse("credentials are not valid UTF-8"))
}

/// PLAIN: `[authzid] \0 authcid \0 password` (RFC 4616; RabbitMQ requires an empty authzid).
fn parse_plain(response: &[u8]) -> Result<(String, String), ProtocolError> {
    let mut parts = response.splitn(3, |b| *b == 0);
    let (Some(_authzid), Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ProtocolError::InvalidAuthResponse("PLAIN response invalid"));
    };
    if pass.contains(&0) {
        return Err(ProtocolError::InvalidAuthResponse("PLAIN response invalid"));
    }
    Ok((utf8(user)?, utf8(pass)?))
}

/// AMQPLAIN: table entries (without the 4-octet length) with LOGIN and PASSWORD strings.
fn parse_amqplain(response: Bytes) -> Result<(String, String), ProtocolError> {
    let t = FieldTable::decode_entries(response)
        .map_err(|_| ProtocolError::InvalidAuthResponse("AMQPLAIN auth info does not decode"))?;
    let field = |k: &str| match t.get(k) {
        Some(FieldValue::LongStr(b)) | Some(FieldValue::ByteArray(b)) => Some(b.clone()),
        Some(FieldValue::ShortStr(s)) => Some(s.clone().into_bytes()),
        _ => None,
    };
    match (field("LOGIN"), field("PASSWORD")) {
        (Some(u), Some(p)) => Ok((utf8(&u)?, utf8(&p)?)),
        _ => Err(ProtocolError::InvalidAuthResponse(
            "AMQPLAIN auth info is missing LOGIN or PASSWORD field",
        )),
    }
}
