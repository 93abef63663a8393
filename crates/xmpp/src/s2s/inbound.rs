//! A stream a peer server opened to us (we are the receiving server).

use super::{
    Core, DIALBACK_FEATURE_NS, DIALBACK_NS, Event, S2sConfig, SERVER_NS, is_stanza, jid_domain,
    name_matches, retag,
};
use crate::ns;
use base64::Engine;
use tributary_xmpp_xml::{Element, StreamEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHeader,
    Open,
    TlsPending,
}

/// An inbound server-to-server stream. See the module documentation.
pub struct Inbound {
    core: Core,
    state: State,
    restarts: u32,
    /// The `from` of the peer's header, if it gave one.
    peer_domain: Option<String>,
    /// Names the peer's TLS certificate is valid for (checked by the IO layer).
    peer_names: Vec<String>,
    /// Domains the peer has proved, by EXTERNAL or dialback.
    authenticated: Vec<String>,
    /// Dialback requests waiting for the authoritative server: (from, to).
    pending_dialback: Vec<(String, String)>,
    sasl_done: bool,
}

impl Inbound {
    /// A new stream, waiting for the peer's header. `now_ms` starts the
    /// handshake timer.
    pub fn new(config: S2sConfig, now_ms: u64) -> Self {
        Inbound {
            core: Core::new(config, now_ms),
            state: State::AwaitHeader,
            restarts: 0,
            peer_domain: None,
            peer_names: Vec::new(),
            authenticated: Vec::new(),
            pending_dialback: Vec::new(),
            sasl_done: false,
        }
    }

    /// The names a verified certificate presented on a direct-TLS
    /// transport is valid for (set before any input).
    pub fn set_peer_names(&mut self, names: Vec<String>) {
        self.peer_names = names;
    }

    /// Domains the peer has authenticated as.
    pub fn authenticated_domains(&self) -> &[String] {
        &self.authenticated
    }

    /// The current stream id (it changes at each restart, RFC 6120 §4.3.3).
    pub fn stream_id(&self) -> String {
        if self.restarts == 0 {
            self.core.config.stream_id.clone()
        } else {
            format!("{}-{}", self.core.config.stream_id, self.restarts)
        }
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

    /// When [`Inbound::handle_timeout`] should be called next.
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

    /// Ends the stream with a stream error.
    pub fn close_with_error(&mut self, condition: &str, text: Option<&str>) {
        self.core.fail(condition, text, None);
    }

    /// The transport dropped.
    pub fn transport_closed(&mut self) {
        self.core.closed = true;
    }

    /// Feeds bytes read from the peer. Returns how many were consumed:
    /// after [`Event::StartTls`] the rest is left for after the handshake.
    pub fn handle_input(&mut self, mut input: &[u8], now_ms: u64) -> usize {
        let total = input.len();
        self.core.touch(input, now_ms);
        while !input.is_empty() && !self.core.closed {
            if self.state == State::TlsPending {
                // Plaintext after <starttls/>: the STARTTLS injection attack.
                self.core
                    .fail("policy-violation", Some("data after starttls"), None);
                break;
            }
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

    /// TLS is up after STARTTLS; `peer_names` are the names the peer's
    /// certificate is valid for (empty without a usable certificate).
    pub fn tls_established(&mut self, peer_names: Vec<String>) {
        self.core.secure = true;
        self.peer_names = peer_names;
        self.restart();
    }

    /// The authoritative server's answer to [`Event::VerifyDialback`].
    pub fn dialback_verified(&mut self, from: &str, to: &str, valid: bool) {
        let Some(pos) = self
            .pending_dialback
            .iter()
            .position(|(f, t)| f == from && t == to)
        else {
            return;
        };
        self.pending_dialback.remove(pos);
        if self.core.closed {
            return;
        }
        let reply = Element::new("result", DIALBACK_NS)
            .with_attr("from", to)
            .with_attr("to", from)
            .with_attr("type", if valid { "valid" } else { "invalid" });
        self.core.write_element(&reply);
        if valid {
            self.authenticate(from.to_string(), "dialback");
        } else {
            self.core
                .fail("not-authorized", Some("dialback failed"), None);
        }
    }

    fn restart(&mut self) {
        self.core.parser.reset();
        self.core.header_written = false;
        self.restarts += 1;
        self.state = State::AwaitHeader;
    }

    fn authenticate(&mut self, domain: String, method: &'static str) {
        if !self.authenticated.contains(&domain) {
            self.authenticated.push(domain.clone());
        }
        self.core.authenticated = true;
        self.core
            .events
            .push_back(Event::Authenticated { domain, method });
    }

    fn cert_valid_for(&self, domain: &str) -> bool {
        self.core.secure && self.peer_names.iter().any(|n| name_matches(n, domain))
    }

    fn is_local(&self, domain: &str) -> bool {
        let c = &self.core.config;
        domain.eq_ignore_ascii_case(&c.local_domain)
            || c.local_services
                .iter()
                .any(|s| s.eq_ignore_ascii_case(domain))
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
        let from = header.attr("from").map(str::to_string);
        if from.is_some() {
            self.peer_domain = from.clone();
        }
        let id = self.stream_id();
        self.core.write_header(from.as_deref(), Some(&id));
        if default_ns != SERVER_NS {
            self.core.fail("invalid-namespace", None, None);
            return;
        }
        match header.attr("to") {
            Some(to) if self.is_local(to) => {}
            Some(_) => {
                self.core.fail("host-unknown", None, None);
                return;
            }
            // Old dialback-only servers may omit 'to' (XEP-0220 §2.1).
            None if self.core.config.dialback => {}
            None => {
                self.core.fail("host-unknown", Some("no 'to'"), None);
                return;
            }
        }
        self.state = State::Open;
        match header.attr("version") {
            Some(v) if v.starts_with("1.") => {
                let features = self.features();
                self.core.write_element(&features);
            }
            Some(_) => self.core.fail("unsupported-version", None, None),
            // No version: a pre-RFC 3920 server, dialback without features.
            None => {}
        }
    }

    fn features(&self) -> Element {
        let mut features = Element::new("features", ns::STREAM);
        let config = &self.core.config;
        if !self.core.secure && config.tls_offered {
            let mut starttls = Element::new("starttls", ns::TLS);
            if config.require_encryption {
                starttls.push_child(Element::new("required", ns::TLS));
            }
            features.push_child(starttls);
        }
        if config.require_encryption && !self.core.secure {
            return features;
        }
        if !self.sasl_done
            && let Some(peer) = &self.peer_domain
            && self.cert_valid_for(peer)
        {
            features.push_child(
                Element::new("mechanisms", ns::SASL)
                    .with_child(Element::new("mechanism", ns::SASL).with_text("EXTERNAL")),
            );
        }
        if config.dialback {
            features.push_child(
                Element::new("dialback", DIALBACK_FEATURE_NS)
                    .with_child(Element::new("errors", DIALBACK_FEATURE_NS)),
            );
        }
        features
    }

    fn on_element(&mut self, element: Element) {
        if self.state != State::Open {
            self.core.fail("bad-format", None, None);
            return;
        }
        if element.is("starttls", ns::TLS) {
            if self.core.secure || !self.core.config.tls_offered {
                self.core.write_element(&Element::new("failure", ns::TLS));
                self.core.close();
                return;
            }
            self.core.write_element(&Element::new("proceed", ns::TLS));
            self.state = State::TlsPending;
            self.core.events.push_back(Event::StartTls);
            return;
        }
        let encrypted_enough = self.core.secure || !self.core.config.require_encryption;
        let gated =
            element.ns == DIALBACK_NS || element.is("auth", ns::SASL) || is_stanza(&element);
        if gated && !encrypted_enough {
            self.core
                .fail("policy-violation", Some("STARTTLS is required"), None);
            return;
        }
        if element.is("auth", ns::SASL) {
            self.on_auth(&element);
        } else if element.is("result", DIALBACK_NS) {
            self.on_db_result(&element);
        } else if element.is("verify", DIALBACK_NS) {
            self.on_db_verify(&element);
        } else if is_stanza(&element) {
            self.on_stanza(element);
        } else {
            self.core.fail("unsupported-stanza-type", None, None);
        }
    }

    fn on_auth(&mut self, element: &Element) {
        let failure =
            |c: &str| Element::new("failure", ns::SASL).with_child(Element::new(c, ns::SASL));
        if element.attr("mechanism") != Some("EXTERNAL") || self.sasl_done {
            self.core.write_element(&failure("invalid-mechanism"));
            return;
        }
        let text = element.text();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            None
        } else {
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => String::from_utf8(bytes).ok(),
                Err(_) => {
                    self.core.write_element(&failure("incorrect-encoding"));
                    return;
                }
            }
        };
        let domain = authzid.or_else(|| self.peer_domain.clone());
        match domain {
            Some(domain)
                if self.cert_valid_for(&domain)
                    && self
                        .peer_domain
                        .as_deref()
                        .is_none_or(|p| p.eq_ignore_ascii_case(&domain)) =>
            {
                self.core.write_element(&Element::new("success", ns::SASL));
                self.sasl_done = true;
                self.authenticate(domain, "EXTERNAL");
                self.restart();
            }
            _ => self.core.write_element(&failure("not-authorized")),
        }
    }

    fn on_db_result(&mut self, element: &Element) {
        if !self.core.config.dialback {
            self.core.fail(
                "unsupported-stanza-type",
                Some("dialback is disabled"),
                None,
            );
            return;
        }
        let (Some(from), Some(to)) = (element.attr("from"), element.attr("to")) else {
            self.core.fail("improper-addressing", None, None);
            return;
        };
        let (from, to) = (from.to_string(), to.to_string());
        if !self.is_local(&to) {
            let error = Element::new("result", DIALBACK_NS)
                .with_attr("from", to.as_str())
                .with_attr("to", from.as_str())
                .with_attr("type", "error")
                .with_child(
                    Element::new("error", SERVER_NS)
                        .with_attr("type", "cancel")
                        .with_child(Element::new("item-not-found", ns::STANZAS)),
                );
            self.core.write_element(&error);
            return;
        }
        if self.authenticated.iter().any(|d| d == &from) {
            let reply = Element::new("result", DIALBACK_NS)
                .with_attr("from", to.as_str())
                .with_attr("to", from.as_str())
                .with_attr("type", "valid");
            self.core.write_element(&reply);
            return;
        }
        if self.cert_valid_for(&from) {
            // XEP-0344 §2.3: a certificate valid for the domain is proof
            // enough; no need to dial back.
            self.pending_dialback.push((from.clone(), to.clone()));
            self.dialback_verified(&from, &to, true);
            return;
        }
        if self.pending_dialback.len() >= 16 {
            self.core
                .fail("policy-violation", Some("too many dialback requests"), None);
            return;
        }
        self.pending_dialback.push((from.clone(), to.clone()));
        self.core.events.push_back(Event::VerifyDialback {
            from,
            to,
            key: element.text().trim().to_string(),
            stream_id: self.stream_id(),
        });
    }

    fn on_db_verify(&mut self, element: &Element) {
        let (Some(from), Some(to), Some(id)) =
            (element.attr("from"), element.attr("to"), element.attr("id"))
        else {
            self.core.fail("improper-addressing", None, None);
            return;
        };
        let valid = self.is_local(to)
            && super::verify_key(&self.core.config.secret, from, to, id, &element.text());
        let reply = Element::new("verify", DIALBACK_NS)
            .with_attr("from", to)
            .with_attr("to", from)
            .with_attr("id", id)
            .with_attr("type", if valid { "valid" } else { "invalid" });
        self.core.write_element(&reply);
    }

    fn on_stanza(&mut self, mut element: Element) {
        if self.authenticated.is_empty() {
            self.core.fail("not-authorized", None, None);
            return;
        }
        let (Some(from), Some(to)) = (element.attr("from"), element.attr("to")) else {
            self.core.fail("improper-addressing", None, None);
            return;
        };
        if !self
            .authenticated
            .iter()
            .any(|d| d.eq_ignore_ascii_case(jid_domain(from)))
        {
            self.core.fail("invalid-from", None, None);
            return;
        }
        if !self.is_local(jid_domain(to)) {
            self.core.fail("host-unknown", None, None);
            return;
        }
        retag(&mut element, SERVER_NS, ns::CLIENT);
        self.core.events.push_back(Event::Stanza(element));
    }
}
