//! A stream we opened to a peer server (we are the originating server).

use super::{Core, DIALBACK_FEATURE_NS, DIALBACK_NS, Event, S2sConfig, SERVER_NS, retag};
use crate::ns;
use base64::Engine;
use tributary_xmpp_xml::{Element, StreamEvent};

/// Why the stream is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// To send stanzas once authenticated.
    Stanzas,
    /// To ask the peer, as the authoritative server, whether a dialback key
    /// one of its claimed streams sent us is valid (XEP-0220 §2.2); the
    /// stream closes after the answer.
    Verify {
        /// The id of our inbound stream the key was sent on.
        stream_id: String,
        /// The key to check.
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHeader,
    AwaitFeatures,
    TlsPending,
    TlsHandshake,
    SaslPending,
    DialbackPending,
    Ready,
}

/// An outbound server-to-server stream. See the module documentation.
pub struct Outbound {
    core: Core,
    state: State,
    remote: String,
    purpose: Purpose,
    /// The id the peer gave this stream (dialback keys are bound to it).
    stream_id: Option<String>,
    sasl_done: bool,
    sasl_failed: bool,
}

impl Outbound {
    /// A new stream to `remote`; our header is ready to send at once.
    pub fn new(config: S2sConfig, remote: &str, purpose: Purpose, now_ms: u64) -> Self {
        let mut out = Outbound {
            core: Core::new(config, now_ms),
            state: State::AwaitHeader,
            remote: remote.to_string(),
            purpose,
            stream_id: None,
            sasl_done: false,
            sasl_failed: false,
        };
        out.core.write_header(Some(remote), None);
        out
    }

    /// Our domain on this stream (the main one or a service's).
    pub fn local(&self) -> &str {
        &self.core.config.local_domain
    }

    /// The peer's domain.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// Whether stanzas can be sent.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready && !self.core.closed
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.core.closed
    }

    /// Next event for the IO layer.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// Next chunk of bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.core.outbox.pop_front()
    }

    /// When [`Outbound::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.core.poll_timeout()
    }

    /// Closes the stream if its handshake or idle deadline has passed.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.core.handle_timeout(now_ms);
    }

    /// Ends the stream cleanly.
    pub fn close(&mut self) {
        self.core.close();
    }

    /// The transport dropped.
    pub fn transport_closed(&mut self) {
        if !self.core.closed {
            self.core.closed = true;
            self.core.events.push_back(Event::Closed {
                condition: Some("remote-connection-failed".into()),
            });
        }
    }

    /// Sends a stanza (`jabber:client` in, `jabber:server` on the wire).
    /// Gives it back when the stream is not ready.
    pub fn send_stanza(&mut self, mut stanza: Element, now_ms: u64) -> Result<(), Element> {
        if !self.is_ready() {
            return Err(stanza);
        }
        retag(&mut stanza, ns::CLIENT, SERVER_NS);
        self.core.write_element(&stanza);
        self.core.last_activity_ms = now_ms;
        Ok(())
    }

    /// Feeds bytes read from the peer; returns how many were consumed
    /// (after [`Event::StartTls`] the rest waits for the handshake).
    pub fn handle_input(&mut self, mut input: &[u8], now_ms: u64) -> usize {
        let total = input.len();
        self.core.touch(input, now_ms);
        while !input.is_empty() && !self.core.closed && self.state != State::TlsHandshake {
            match self.core.parse(input) {
                Ok((consumed, event)) => {
                    input = &input[consumed..];
                    match event {
                        Some(event) => self.on_stream_event(event),
                        None if consumed == 0 => break,
                        None => {}
                    }
                }
                Err(()) => break,
            }
        }
        total - input.len()
    }

    /// TLS is up after STARTTLS: the stream restarts.
    pub fn tls_established(&mut self) {
        self.core.secure = true;
        self.restart();
    }

    fn restart(&mut self) {
        self.core.parser.reset();
        self.state = State::AwaitHeader;
        let remote = self.remote.clone();
        self.core.write_header(Some(&remote), None);
    }

    /// Gives up without a stream error of our own (the peer refused).
    fn give_up(&mut self, condition: &str) {
        if !self.core.closed {
            self.core.write_close();
            self.core.closed = true;
            self.core.events.push_back(Event::Closed {
                condition: Some(condition.to_string()),
            });
        }
    }

    fn ready(&mut self, method: &'static str) {
        self.state = State::Ready;
        self.core.authenticated = true;
        self.core.events.push_back(Event::Authenticated {
            domain: self.remote.clone(),
            method,
        });
    }

    fn on_stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Open { header, default_ns } => self.on_header(&header, &default_ns),
            StreamEvent::Close => self.core.close(),
            StreamEvent::Element(element) => self.on_element(element),
        }
    }

    fn on_header(&mut self, header: &Element, default_ns: &str) {
        if self.state != State::AwaitHeader {
            self.core
                .fail("bad-format", Some("unexpected stream header"), None);
            return;
        }
        if default_ns != SERVER_NS {
            self.core.fail("invalid-namespace", None, None);
            return;
        }
        self.stream_id = header.attr("id").map(str::to_string);
        if header.attr("version").is_some_and(|v| v.starts_with("1.")) {
            self.state = State::AwaitFeatures;
        } else {
            // A pre-RFC 3920 peer: no features, dialback straight away.
            self.authenticate(&Element::new("features", ns::STREAM));
        }
    }

    fn on_element(&mut self, element: Element) {
        if element.is("error", ns::STREAM) {
            let condition = element
                .elements()
                .find(|e| e.ns == ns::STREAM_ERRORS && e.name != "text")
                .map_or("undefined-condition", |e| e.name.as_str())
                .to_string();
            self.give_up(&condition);
            return;
        }
        match self.state {
            State::AwaitFeatures if element.is("features", ns::STREAM) => {
                self.on_features(&element)
            }
            State::TlsPending if element.is("proceed", ns::TLS) => {
                self.state = State::TlsHandshake;
                self.core.events.push_back(Event::StartTls);
            }
            State::TlsPending => self.give_up("policy-violation"),
            State::SaslPending if element.is("success", ns::SASL) => {
                self.sasl_done = true;
                self.restart();
            }
            State::SaslPending if element.is("failure", ns::SASL) => {
                self.sasl_failed = true;
                if self.core.config.dialback {
                    self.send_db_result();
                } else {
                    self.give_up("not-authorized");
                }
            }
            State::DialbackPending if element.is("result", DIALBACK_NS) => {
                match element.attr("type") {
                    Some("valid") => self.ready("dialback"),
                    _ => self.give_up("not-authorized"),
                }
            }
            State::DialbackPending if element.is("verify", DIALBACK_NS) => {
                if let Purpose::Verify { stream_id, .. } = &self.purpose
                    && element.attr("id") == Some(stream_id.as_str())
                {
                    self.core.events.push_back(Event::VerifyResult {
                        domain: self.remote.clone(),
                        stream_id: stream_id.clone(),
                        valid: element.attr("type") == Some("valid"),
                    });
                    self.core.close();
                }
            }
            // Anything else on an outbound stream (streams are one-way) is
            // ignored once ready; before that it is a protocol error.
            State::Ready => {}
            _ => self.core.fail("bad-format", None, None),
        }
    }

    fn on_features(&mut self, features: &Element) {
        if !self.core.secure && features.child("starttls", ns::TLS).is_some() {
            self.core.write_element(&Element::new("starttls", ns::TLS));
            self.state = State::TlsPending;
            return;
        }
        self.authenticate(features);
    }

    fn authenticate(&mut self, features: &Element) {
        if !self.core.secure && self.core.config.require_encryption {
            self.core.fail(
                "policy-violation",
                Some("encryption is required and the peer offers no TLS"),
                None,
            );
            return;
        }
        if self.sasl_done {
            self.ready("EXTERNAL");
            return;
        }
        if let Purpose::Verify { stream_id, key } = &self.purpose {
            let verify = Element::new("verify", DIALBACK_NS)
                .with_attr("from", self.core.config.local_domain.as_str())
                .with_attr("to", self.remote.as_str())
                .with_attr("id", stream_id.as_str())
                .with_text(key.as_str());
            self.core.write_element(&verify);
            self.state = State::DialbackPending;
            return;
        }
        let external = features
            .child("mechanisms", ns::SASL)
            .is_some_and(|m| m.elements().any(|e| e.text().trim() == "EXTERNAL"));
        if self.core.secure && external && !self.sasl_failed {
            let authzid = base64::engine::general_purpose::STANDARD
                .encode(self.core.config.local_domain.as_bytes());
            let auth = Element::new("auth", ns::SASL)
                .with_attr("mechanism", "EXTERNAL")
                .with_text(authzid);
            self.core.write_element(&auth);
            self.state = State::SaslPending;
            return;
        }
        let _ = features.child("dialback", DIALBACK_FEATURE_NS);
        if self.core.config.dialback {
            self.send_db_result();
        } else {
            self.give_up("not-authorized");
        }
    }

    fn send_db_result(&mut self) {
        let Some(id) = self.stream_id.clone() else {
            self.core
                .fail("invalid-id", Some("no stream id for dialback"), None);
            return;
        };
        let local = self.core.config.local_domain.clone();
        let key = super::dialback_key(&self.core.config.secret, &self.remote, &local, &id);
        let result = Element::new("result", DIALBACK_NS)
            .with_attr("from", local.as_str())
            .with_attr("to", self.remote.as_str())
            .with_text(key);
        self.core.write_element(&result);
        self.state = State::DialbackPending;
    }
}
