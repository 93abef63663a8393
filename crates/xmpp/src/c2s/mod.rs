//! The client-to-server stream (RFC 6120), sans-IO.
//!
//! A [`Connection`] takes the bytes a client sent (or, over WebSocket, whole
//! RFC 7395 messages) and answers the stream-level protocol itself: the
//! stream header and features, STARTTLS, SASL, resource binding, stream
//! management (XEP-0198) and client state indication (XEP-0352). Whatever
//! needs the rest of the server comes out as an [`Event`]: a TLS upgrade, a
//! resource to bind, a stanza to route, a session to resume. The IO layer
//! answers with calls such as [`Connection::tls_established`] and
//! [`Connection::bound`], and drains bytes with [`Connection::poll_transmit`].

mod errors;
mod sasl;
mod sm;
#[cfg(test)]
mod tests;

pub use errors::{iq_error, stanza_error_child, stream_error};
pub use sasl::Authenticator;
pub use sm::{MAX_UNACKED, SmState};

use crate::ns;
use jid::FullJid;
use sasl::{SaslOutcome, SaslStep};
use std::collections::VecDeque;
use tributary_sasl::ChannelBindings;
use tributary_xmpp_xml::{Element, Limits, StreamEvent, StreamParser, XML_NS, XmlError};

/// How one client stream is set up; the IO layer fills it per connection.
#[derive(Debug, Clone)]
pub struct C2sConfig {
    /// The domain this server serves (the stream's `from`).
    pub domain: String,
    /// Whether STARTTLS can be offered (a certificate is configured).
    pub starttls_offered: bool,
    /// Whether TLS must be negotiated before authentication.
    pub tls_required: bool,
    /// Whether the transport is already encrypted (direct TLS, XEP-0368).
    pub secure: bool,
    /// Whether the peer is on loopback, where PLAIN is allowed without TLS.
    pub loopback: bool,
    /// WebSocket framing (RFC 7395) instead of one long stream document.
    pub framed: bool,
    /// In-band registration (XEP-0077) offered before authentication.
    pub registration: bool,
    /// How long a resumable session waits for its client (XEP-0198 `max`).
    pub resumption_timeout_secs: u32,
    /// Authentication attempts allowed on one stream before it is closed.
    pub max_auth_attempts: u32,
    /// XML limits.
    pub limits: Limits,
    /// The stream id, random, chosen by the IO layer.
    pub stream_id: String,
}

/// What the IO layer must do for the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Flush everything, then run the TLS handshake and call
    /// [`Connection::tls_established`].
    StartTls,
    /// A SASL exchange succeeded for this account.
    Authenticated {
        /// The account's user name.
        username: String,
    },
    /// A SASL attempt failed; the IO layer may slow the client down.
    AuthFailed,
    /// Bind a resource and answer with [`Connection::bound`].
    Bind {
        /// The IQ id to answer.
        id: String,
        /// The resource the client asked for, if any.
        resource: Option<String>,
    },
    /// A stanza from the bound client, to route.
    Stanza(Element),
    /// Resume the detached session `previd` (XEP-0198); answer with
    /// [`Connection::resumed`] or [`Connection::resume_failed`].
    Resume {
        /// The resumption id.
        previd: String,
        /// How many of our stanzas the client has handled.
        h: u32,
    },
    /// Client state indication: `true` active, `false` inactive.
    Active(bool),
    /// In-band registration of a new account; answer with
    /// [`Connection::registration_done`].
    Register {
        /// The IQ id to answer.
        id: String,
        /// Requested user name.
        username: String,
        /// Requested password.
        password: String,
    },
    /// The stream is over: flush and close the transport.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before STARTTLS (or on an already secure transport, before SASL).
    Initial,
    /// After STARTTLS, before SASL.
    Secured,
    /// After SASL, before and after binding.
    Authenticated,
}

enum State {
    AwaitHeader,
    Negotiating,
    Sasl(Box<SaslStep>),
    TlsPending,
    Bound,
    Closed,
}

/// One client stream.
pub struct Connection {
    config: C2sConfig,
    parser: StreamParser,
    state: State,
    phase: Phase,
    secure: bool,
    bindings: ChannelBindings,
    /// The user name of the client's verified TLS certificate (SASL EXTERNAL).
    peer_identity: Option<String>,
    username: Option<String>,
    jid: Option<FullJid>,
    sm: Option<SmState>,
    auth_failures: u32,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    pending_bind: bool,
    header_written: bool,
    restarts: u32,
    /// An event the IO layer must answer before more input is read (bind,
    /// resume, registration): stanzas pipelined behind it wait.
    awaiting: bool,
}

impl Connection {
    /// A new stream, waiting for the client's header.
    pub fn new(config: C2sConfig) -> Self {
        let parser = if config.framed {
            StreamParser::framed(config.limits)
        } else {
            StreamParser::new(config.limits)
        };
        Connection {
            secure: config.secure,
            config,
            parser,
            state: State::AwaitHeader,
            phase: Phase::Initial,
            bindings: ChannelBindings::default(),
            peer_identity: None,
            username: None,
            jid: None,
            sm: None,
            auth_failures: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            pending_bind: false,
            header_written: false,
            restarts: 0,
            awaiting: false,
        }
    }

    /// Channel-binding data of an already secure transport (direct TLS).
    pub fn set_channel_bindings(&mut self, bindings: ChannelBindings) {
        self.bindings = bindings;
    }

    /// The user name of a verified TLS client certificate, set after the
    /// handshake: SASL EXTERNAL (XEP-0178) is then offered, first.
    pub fn set_peer_identity(&mut self, identity: Option<String>) {
        self.peer_identity = identity;
    }

    /// The authenticated account, once SASL succeeded.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The bound full JID.
    pub fn jid(&self) -> Option<&FullJid> {
        self.jid.as_ref()
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the session may outlive this transport (XEP-0198 resumption).
    pub fn is_resumable(&self) -> bool {
        self.sm.as_ref().is_some_and(|sm| sm.id.is_some()) && self.jid.is_some()
    }

    /// The resumption id, once stream management is enabled with resume.
    pub fn sm_id(&self) -> Option<String> {
        self.sm.as_ref().and_then(|sm| sm.id.clone())
    }

    /// Stream-management state, for handing a session to a resumed stream.
    pub fn take_sm(&mut self) -> Option<SmState> {
        self.sm.take()
    }

    /// Next event for the IO layer.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Next chunk of bytes to write: a header, an element, or a close.
    /// Over WebSocket each chunk is one text message.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// Feeds bytes from a TCP (or TLS) transport. Returns how many were
    /// consumed; after [`Event::StartTls`] the rest is not consumed, and the
    /// stream has already been closed if the client pipelined anything after
    /// `<starttls/>`. After [`Event::Bind`], [`Event::Resume`] or
    /// [`Event::Register`] the rest is not consumed either until the IO layer
    /// has answered; feed it again then.
    pub fn handle_input(&mut self, mut input: &[u8], auth: &dyn Authenticator) -> usize {
        let total = input.len();
        while !input.is_empty() && !self.is_closed() && !self.awaiting {
            if matches!(self.state, State::TlsPending) {
                // Plaintext after <starttls/>: the STARTTLS injection attack.
                self.fail_stream("policy-violation", Some("data after starttls"));
                break;
            }
            match self.parser.feed(input) {
                Ok((consumed, event)) => {
                    input = &input[consumed..];
                    match event {
                        Some(event) => self.on_stream_event(event, auth),
                        None if consumed == 0 => break,
                        None => {}
                    }
                }
                Err(error) => {
                    self.on_xml_error(&error);
                    break;
                }
            }
        }
        total - input.len()
    }

    /// Feeds one WebSocket text message (RFC 7395).
    pub fn handle_message(&mut self, message: &[u8], auth: &dyn Authenticator) {
        if self.is_closed() {
            return;
        }
        match self.parser.feed_message(message) {
            Ok(event) => self.on_stream_event(event, auth),
            Err(error) => self.on_xml_error(&error),
        }
    }

    /// The transport dropped without a close.
    pub fn transport_closed(&mut self) {
        self.state = State::Closed;
    }

    /// TLS is up after STARTTLS: the client restarts the stream.
    pub fn tls_established(&mut self, bindings: ChannelBindings) {
        self.secure = true;
        self.bindings = bindings;
        self.phase = Phase::Secured;
        self.parser.reset();
        self.header_written = false;
        self.restarts += 1;
        self.state = State::AwaitHeader;
    }

    /// Whether input is held back until an event is answered.
    pub fn is_awaiting(&self) -> bool {
        self.awaiting
    }

    /// Answer to [`Event::Bind`].
    pub fn bound(&mut self, id: &str, result: Result<FullJid, (&str, &str)>) {
        self.pending_bind = false;
        self.awaiting = false;
        if self.is_closed() {
            return;
        }
        match result {
            Ok(jid) => {
                let reply = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", id)
                    .with_child(
                        Element::new("bind", ns::BIND)
                            .with_child(Element::new("jid", ns::BIND).with_text(jid.to_string())),
                    );
                self.jid = Some(jid);
                self.state = State::Bound;
                self.write_element(&reply);
            }
            Err((kind, condition)) => {
                let request = Element::new("iq", ns::CLIENT).with_attr("id", id);
                self.write_element(&iq_error(&request, kind, condition));
            }
        }
    }

    /// Answer to [`Event::Resume`] when the session was found: takes over
    /// its JID and stream-management state and re-sends what the client
    /// has not acknowledged.
    pub fn resumed(&mut self, previd: &str, h: u32, jid: FullJid, mut sm: SmState) {
        self.awaiting = false;
        if self.is_closed() {
            return;
        }
        let reply = Element::new("resumed", ns::SM)
            .with_attr("previd", previd)
            .with_attr("h", sm.inbound.to_string());
        self.write_element(&reply);
        if sm.acknowledge(h).is_err() {
            self.fail_stream(
                "undefined-condition",
                Some("h acknowledges more than was sent"),
            );
            return;
        }
        let resend = sm.take_unacked();
        sm.outbound = h;
        self.sm = Some(sm);
        self.jid = Some(jid);
        self.state = State::Bound;
        for stanza in resend {
            let _ = self.send_stanza(stanza);
        }
        self.request_ack_if_due();
    }

    /// Answer to [`Event::Resume`] when there is nothing to resume.
    pub fn resume_failed(&mut self) {
        self.awaiting = false;
        if self.is_closed() {
            return;
        }
        let failed =
            Element::new("failed", ns::SM).with_child(Element::new("item-not-found", ns::STANZAS));
        self.write_element(&failed);
    }

    /// Answer to [`Event::Register`].
    pub fn registration_done(&mut self, id: &str, result: Result<(), (&str, &str)>) {
        self.awaiting = false;
        if self.is_closed() {
            return;
        }
        match result {
            Ok(()) => {
                let reply = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", id);
                self.write_element(&reply);
            }
            Err((kind, condition)) => {
                let request = Element::new("iq", ns::CLIENT).with_attr("id", id);
                self.write_element(&iq_error(&request, kind, condition));
            }
        }
    }

    /// Sends a stanza to the client, counting it for stream management.
    /// Fails when a client that never acknowledges has too much pending;
    /// the stream is then closed.
    pub fn send_stanza(&mut self, stanza: Element) -> Result<(), Overflow> {
        if self.is_closed() {
            return Err(Overflow);
        }
        if let Some(sm) = &mut self.sm {
            if sm.unacked.len() >= MAX_UNACKED {
                self.fail_stream("policy-violation", Some("too many unacknowledged stanzas"));
                return Err(Overflow);
            }
            sm.sent(stanza.clone());
        }
        self.write_element(&stanza);
        Ok(())
    }

    /// Asks the client for an acknowledgement if enough is outstanding;
    /// call after a batch of [`Connection::send_stanza`].
    pub fn request_ack_if_due(&mut self) {
        if self.sm.as_mut().is_some_and(SmState::should_request) {
            self.write_element(&Element::new("r", ns::SM));
        }
    }

    /// Records a stanza as sent while the session has no transport
    /// (detached, waiting for resumption).
    pub fn queue_detached(&mut self, stanza: Element) -> Result<(), Overflow> {
        match &mut self.sm {
            Some(sm) if sm.unacked.len() < MAX_UNACKED => {
                sm.sent(stanza);
                Ok(())
            }
            _ => Err(Overflow),
        }
    }

    /// Ends the stream with a stream error (e.g. `conflict`,
    /// `system-shutdown`).
    pub fn close_with_error(&mut self, condition: &str, text: Option<&str>) {
        if !self.is_closed() {
            self.fail_stream(condition, text);
        }
    }

    /// Ends the stream cleanly.
    pub fn close(&mut self) {
        if !self.is_closed() {
            self.write_close();
            self.state = State::Closed;
            self.events.push_back(Event::Closed);
        }
    }

    fn on_xml_error(&mut self, error: &XmlError) {
        if !self.header_written {
            self.write_header();
        }
        self.fail_stream(error.condition(), None);
    }

    fn on_stream_event(&mut self, event: StreamEvent, auth: &dyn Authenticator) {
        match event {
            StreamEvent::Open { header, default_ns } => self.on_header(&header, &default_ns),
            StreamEvent::Close => {
                self.close();
            }
            StreamEvent::Element(element) => self.on_element(element, auth),
        }
    }

    fn on_header(&mut self, header: &Element, default_ns: &str) {
        if !matches!(self.state, State::AwaitHeader) {
            self.fail_stream("bad-format", Some("unexpected stream header"));
            return;
        }
        self.write_header();
        if !self.config.framed && default_ns != ns::CLIENT {
            self.fail_stream("invalid-namespace", None);
            return;
        }
        match header.attr("to") {
            Some(to) if to.eq_ignore_ascii_case(&self.config.domain) => {}
            Some(_) => {
                self.fail_stream("host-unknown", None);
                return;
            }
            None => {
                self.fail_stream("host-unknown", Some("the stream header has no 'to'"));
                return;
            }
        }
        if header.attr("version").is_some_and(|v| !v.starts_with("1.")) {
            self.fail_stream("unsupported-version", None);
            return;
        }
        self.state = State::Negotiating;
        let features = self.features();
        self.write_element(&features);
    }

    fn features(&self) -> Element {
        let mut features = Element::new("features", ns::STREAM);
        match self.phase {
            Phase::Initial | Phase::Secured => {
                let must_tls = self.config.tls_required && !self.secure;
                if !self.secure && self.config.starttls_offered {
                    let mut starttls = Element::new("starttls", ns::TLS);
                    if must_tls {
                        starttls.push_child(Element::new("required", ns::TLS));
                    }
                    features.push_child(starttls);
                }
                if must_tls {
                    return features;
                }
                let mut mechanisms = Element::new("mechanisms", ns::SASL);
                for name in self.mechanisms() {
                    mechanisms.push_child(Element::new("mechanism", ns::SASL).with_text(name));
                }
                features.push_child(mechanisms);
                let types = self.bindings.types();
                if !types.is_empty() {
                    let mut cb = Element::new("sasl-channel-binding", ns::SASL_CB);
                    for t in types {
                        cb.push_child(
                            Element::new("channel-binding", ns::SASL_CB).with_attr("type", t),
                        );
                    }
                    features.push_child(cb);
                }
                if self.config.registration {
                    features.push_child(Element::new("register", ns::REGISTER_FEATURE));
                }
            }
            Phase::Authenticated => {
                features.push_child(Element::new("bind", ns::BIND));
                features.push_child(
                    Element::new("session", ns::SESSION)
                        .with_child(Element::new("optional", ns::SESSION)),
                );
                features.push_child(Element::new("sm", ns::SM));
                features.push_child(Element::new("csi", ns::CSI));
                features.push_child(Element::new("ver", ns::ROSTER_VER));
                features.push_child(Element::new("sub", ns::PRE_APPROVAL));
            }
        }
        features
    }

    fn plain_allowed(&self) -> bool {
        self.secure || self.config.loopback
    }

    fn mechanisms(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.secure && self.peer_identity.is_some() {
            names.push("EXTERNAL");
        }
        if !self.bindings.types().is_empty() {
            names.push("SCRAM-SHA-256-PLUS");
            names.push("SCRAM-SHA-1-PLUS");
        }
        names.push("SCRAM-SHA-256");
        names.push("SCRAM-SHA-1");
        if self.plain_allowed() {
            names.push("PLAIN");
        }
        names
    }

    fn on_element(&mut self, element: Element, auth: &dyn Authenticator) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        match state {
            State::AwaitHeader | State::TlsPending | State::Closed => {
                self.state = state;
                self.fail_stream("bad-format", None);
            }
            State::Negotiating => {
                self.state = State::Negotiating;
                self.on_negotiation_element(element, auth);
            }
            State::Sasl(step) => self.on_sasl_element(*step, element, auth),
            State::Bound => {
                self.state = State::Bound;
                self.on_bound_element(element);
            }
        }
    }

    fn on_negotiation_element(&mut self, element: Element, auth: &dyn Authenticator) {
        if element.is("starttls", ns::TLS) {
            if self.secure || !self.config.starttls_offered || self.phase != Phase::Initial {
                self.write_element(&Element::new("failure", ns::TLS));
                self.fail_stream_quiet();
                return;
            }
            self.write_element(&Element::new("proceed", ns::TLS));
            self.state = State::TlsPending;
            self.events.push_back(Event::StartTls);
            return;
        }
        match self.phase {
            Phase::Initial | Phase::Secured => {
                if self.config.tls_required && !self.secure {
                    self.fail_stream("policy-violation", Some("STARTTLS is required"));
                    return;
                }
                if element.is("auth", ns::SASL) {
                    self.start_sasl(&element, auth);
                } else if element.is("iq", ns::CLIENT) {
                    self.on_preauth_iq(&element);
                } else if element.is("resume", ns::SM) || element.is("enable", ns::SM) {
                    self.write_element(&sm_failed("unexpected-request"));
                } else {
                    self.fail_stream("not-authorized", None);
                }
            }
            Phase::Authenticated => {
                if element.is("iq", ns::CLIENT) {
                    self.on_postauth_iq(element);
                } else if element.is("resume", ns::SM) {
                    self.on_resume(&element);
                } else if element.is("enable", ns::SM) {
                    self.write_element(&sm_failed("unexpected-request"));
                } else if is_stanza(&element) {
                    self.fail_stream("not-authorized", Some("bind a resource first"));
                } else {
                    self.fail_stream("unsupported-stanza-type", None);
                }
            }
        }
    }

    fn start_sasl(&mut self, element: &Element, auth: &dyn Authenticator) {
        let mechanism = element.attr("mechanism").unwrap_or("");
        if !self.mechanisms().contains(&mechanism) {
            self.sasl_failure("invalid-mechanism");
            return;
        }
        let identity = self.external_identity();
        match SaslStep::start(
            mechanism,
            &self.bindings,
            identity.as_deref(),
            &element.text(),
            auth,
        ) {
            SaslOutcome::Challenge(step, challenge) => {
                self.write_element(&Element::new("challenge", ns::SASL).with_text(challenge));
                self.state = State::Sasl(Box::new(step));
            }
            SaslOutcome::Success(username, additional) => self.sasl_success(username, additional),
            SaslOutcome::Failure(condition) => self.sasl_failure(condition),
        }
    }

    /// The account a verified client certificate names: its name, or the
    /// local part of a JID on this domain (XEP-0178).
    fn external_identity(&self) -> Option<String> {
        let name = self.peer_identity.as_deref()?;
        match name.split_once('@') {
            Some((local, domain)) if domain.eq_ignore_ascii_case(&self.config.domain) => {
                Some(local.to_owned())
            }
            Some(_) => None,
            None => Some(name.to_owned()),
        }
    }

    fn on_sasl_element(&mut self, step: SaslStep, element: Element, auth: &dyn Authenticator) {
        self.state = State::Negotiating;
        if element.is("abort", ns::SASL) {
            self.sasl_failure("aborted");
            return;
        }
        if !element.is("response", ns::SASL) {
            self.fail_stream("policy-violation", Some("SASL exchange in progress"));
            return;
        }
        match step.respond(&element.text(), auth) {
            SaslOutcome::Challenge(step, challenge) => {
                self.write_element(&Element::new("challenge", ns::SASL).with_text(challenge));
                self.state = State::Sasl(Box::new(step));
            }
            SaslOutcome::Success(username, additional) => self.sasl_success(username, additional),
            SaslOutcome::Failure(condition) => self.sasl_failure(condition),
        }
    }

    fn sasl_success(&mut self, username: String, additional: Option<String>) {
        let mut success = Element::new("success", ns::SASL);
        if let Some(data) = additional {
            success = success.with_text(data);
        }
        self.write_element(&success);
        self.events.push_back(Event::Authenticated {
            username: username.clone(),
        });
        self.username = Some(username);
        self.phase = Phase::Authenticated;
        self.parser.reset();
        self.header_written = false;
        self.restarts += 1;
        self.state = State::AwaitHeader;
    }

    fn sasl_failure(&mut self, condition: &str) {
        self.write_element(
            &Element::new("failure", ns::SASL).with_child(Element::new(condition, ns::SASL)),
        );
        self.state = State::Negotiating;
        if condition == "aborted" || condition == "invalid-mechanism" {
            return;
        }
        self.auth_failures += 1;
        self.events.push_back(Event::AuthFailed);
        if self.auth_failures >= self.config.max_auth_attempts {
            self.fail_stream(
                "policy-violation",
                Some("too many failed authentication attempts"),
            );
        }
    }

    fn on_preauth_iq(&mut self, iq: &Element) {
        let id = iq.attr("id").unwrap_or("").to_string();
        let query = iq.child("query", ns::REGISTER);
        match (self.config.registration, query, iq.attr("type")) {
            (true, Some(_), Some("get")) => {
                let reply = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", id)
                    .with_child(
                        Element::new("query", ns::REGISTER)
                            .with_child(
                                Element::new("instructions", ns::REGISTER)
                                    .with_text("Choose a user name and password."),
                            )
                            .with_child(Element::new("username", ns::REGISTER))
                            .with_child(Element::new("password", ns::REGISTER)),
                    );
                self.write_element(&reply);
            }
            (true, Some(query), Some("set")) => {
                let username = query.child("username", ns::REGISTER).map(Element::text);
                let password = query.child("password", ns::REGISTER).map(Element::text);
                match (username, password) {
                    (Some(username), Some(password))
                        if !username.is_empty() && !password.is_empty() =>
                    {
                        self.awaiting = true;
                        self.events.push_back(Event::Register {
                            id,
                            username,
                            password,
                        });
                    }
                    _ => self.write_element(&iq_error(iq, "modify", "not-acceptable")),
                }
            }
            _ => self.fail_stream("not-authorized", None),
        }
    }

    fn on_postauth_iq(&mut self, iq: Element) {
        let id = iq.attr("id").unwrap_or("").to_string();
        let kind = iq.attr("type").unwrap_or("");
        if kind == "set"
            && let Some(bind) = iq.child("bind", ns::BIND)
        {
            if self.pending_bind {
                self.write_element(&iq_error(&iq, "wait", "resource-constraint"));
                return;
            }
            let resource = bind
                .child("resource", ns::BIND)
                .map(Element::text)
                .filter(|r| !r.is_empty());
            self.pending_bind = true;
            self.awaiting = true;
            self.events.push_back(Event::Bind { id, resource });
            return;
        }
        if iq.child("session", ns::SESSION).is_some() {
            self.write_element(&iq_error(&iq, "wait", "not-allowed"));
            return;
        }
        self.write_element(&iq_error(&iq, "cancel", "not-authorized"));
    }

    fn on_resume(&mut self, element: &Element) {
        let previd = element.attr("previd").map(str::to_string);
        let h = element.attr("h").and_then(|h| h.parse::<u32>().ok());
        match (previd, h) {
            (Some(previd), Some(h)) => {
                self.awaiting = true;
                self.events.push_back(Event::Resume { previd, h });
            }
            _ => self.write_element(&sm_failed("bad-request")),
        }
    }

    fn on_bound_element(&mut self, element: Element) {
        if is_stanza(&element) {
            if let Some(sm) = &mut self.sm {
                sm.inbound = sm.inbound.wrapping_add(1);
            }
            if element.is("iq", ns::CLIENT)
                && element.attr("type") == Some("set")
                && element.child("session", ns::SESSION).is_some()
            {
                let reply = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", element.attr("id").unwrap_or(""));
                let _ = self.send_stanza(reply);
                return;
            }
            if element.is("iq", ns::CLIENT) && element.child("bind", ns::BIND).is_some() {
                let reply = iq_error(&element, "cancel", "not-allowed");
                let _ = self.send_stanza(reply);
                return;
            }
            self.events.push_back(Event::Stanza(element));
            return;
        }
        if element.ns == ns::SM {
            self.on_sm_element(&element);
            return;
        }
        if element.is("active", ns::CSI) {
            self.events.push_back(Event::Active(true));
            return;
        }
        if element.is("inactive", ns::CSI) {
            self.events.push_back(Event::Active(false));
            return;
        }
        self.fail_stream("unsupported-stanza-type", None);
    }

    fn on_sm_element(&mut self, element: &Element) {
        match element.name.as_str() {
            "enable" => {
                if self.sm.is_some() {
                    self.write_element(&sm_failed("unexpected-request"));
                    return;
                }
                let resume = matches!(element.attr("resume"), Some("true" | "1"));
                let id = resume.then(|| self.config.stream_id.clone());
                let mut enabled = Element::new("enabled", ns::SM);
                if let Some(id) = &id {
                    enabled.set_attr("id", id.clone());
                    enabled.set_attr("resume", "true");
                    enabled.set_attr("max", self.config.resumption_timeout_secs.to_string());
                }
                self.write_element(&enabled);
                self.sm = Some(SmState::new(id));
            }
            "r" => {
                if let Some(sm) = &self.sm {
                    let a = Element::new("a", ns::SM).with_attr("h", sm.inbound.to_string());
                    self.write_element(&a);
                }
            }
            "a" => {
                let Some(h) = element.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    self.fail_stream("bad-format", Some("<a/> without a valid h"));
                    return;
                };
                if let Some(sm) = &mut self.sm
                    && sm.acknowledge(h).is_err()
                {
                    self.fail_stream(
                        "undefined-condition",
                        Some("h acknowledges more than was sent"),
                    );
                }
            }
            "resume" => self.write_element(&sm_failed("unexpected-request")),
            _ => self.fail_stream("unsupported-stanza-type", None),
        }
    }

    fn write_header(&mut self) {
        let mut out = Vec::with_capacity(256);
        // A restarted stream gets a new id (RFC 6120 §4.3.3).
        let id = if self.restarts == 0 {
            escape_attr(&self.config.stream_id)
        } else {
            escape_attr(&format!("{}-{}", self.config.stream_id, self.restarts))
        };
        let from = escape_attr(&self.config.domain);
        if self.config.framed {
            out.extend_from_slice(
                format!(
                    "<open xmlns='{}' id='{id}' from='{from}' version='1.0' xml:lang='en'/>",
                    ns::FRAMING
                )
                .as_bytes(),
            );
        } else {
            out.extend_from_slice(
                format!(
                    "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' \
                     id='{id}' from='{from}' version='1.0' xml:lang='en'>",
                    ns::CLIENT,
                    ns::STREAM
                )
                .as_bytes(),
            );
        }
        self.outbox.push_back(out);
        self.header_written = true;
    }

    fn write_element(&mut self, element: &Element) {
        let mut out = Vec::with_capacity(128);
        if self.config.framed {
            element.write_to(&mut out, "");
        } else if element.ns == ns::STREAM {
            write_stream_prefixed(element, &mut out);
        } else {
            element.write_to(&mut out, ns::CLIENT);
        }
        self.outbox.push_back(out);
    }

    fn write_close(&mut self) {
        let close = if self.config.framed {
            format!("<close xmlns='{}'/>", ns::FRAMING)
        } else {
            "</stream:stream>".to_string()
        };
        self.outbox.push_back(close.into_bytes());
    }

    fn fail_stream(&mut self, condition: &str, text: Option<&str>) {
        // An error before our header still opens the stream first (RFC 6120 §4.9.1.1).
        if !self.header_written {
            self.write_header();
        }
        self.write_element(&stream_error(condition, text));
        self.write_close();
        self.state = State::Closed;
        self.events.push_back(Event::Closed);
    }

    fn fail_stream_quiet(&mut self) {
        self.write_close();
        self.state = State::Closed;
        self.events.push_back(Event::Closed);
    }
}

/// A client that does not acknowledge exceeded [`MAX_UNACKED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

fn is_stanza(element: &Element) -> bool {
    element.ns == ns::CLIENT && matches!(element.name.as_str(), "message" | "presence" | "iq")
}

fn sm_failed(condition: &str) -> Element {
    Element::new("failed", ns::SM).with_child(Element::new(condition, ns::STANZAS))
}

fn escape_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Writes an element of the stream namespace with the `stream:` prefix the
/// header declared, as clients expect for features and errors.
fn write_stream_prefixed(element: &Element, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<stream:");
    out.extend_from_slice(element.name.as_bytes());
    for attr in &element.attrs {
        out.push(b' ');
        if attr.ns.as_deref() == Some(XML_NS) {
            out.extend_from_slice(b"xml:");
        }
        out.extend_from_slice(attr.name.as_bytes());
        out.extend_from_slice(b"='");
        out.extend_from_slice(escape_attr(&attr.value).as_bytes());
        out.push(b'\'');
    }
    if element.children.is_empty() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    for child in element.elements() {
        child.write_to(out, ns::CLIENT);
    }
    out.extend_from_slice(b"</stream:");
    out.extend_from_slice(element.name.as_bytes());
    out.push(b'>');
}
