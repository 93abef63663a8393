//! Server-to-server streams (RFC 6120, federation), sans-IO.
//!
//! An [`Inbound`] stream is one a peer server opened to us; an [`Outbound`]
//! stream is one we opened to a peer. Streams are one-way (RFC 6120 §4.2):
//! stanzas travel from the initiating server to the receiving one. Both
//! machines take the bytes read and the current time (milliseconds, any
//! epoch), and give back bytes to write ([`Inbound::poll_transmit`]) and
//! [`Event`]s for the IO layer: a TLS upgrade to run, a dialback key to
//! have verified, a stanza to route, the stream ready or gone.
//!
//! The peer is authenticated by SASL EXTERNAL when its certificate is valid
//! for its domain (RFC 6120 §13.8, XEP-0178; the IO layer checks the
//! certificate and passes the names it is valid for), or by Server Dialback
//! (XEP-0220) with keys derived as XEP-0185 recommends ([`dialback_key`]).
//! Stanzas travel in the `jabber:server` namespace on the wire and are
//! handed over (and taken) in `jabber:client`, the hub's namespace.

mod dialback;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

pub use dialback::{dialback_key, verify_key};
pub use inbound::Inbound;
pub use outbound::{Outbound, Purpose};

use crate::ns;
use std::collections::VecDeque;
use tributary_xmpp_xml::{Element, Limits, Node, StreamEvent, StreamParser, XML_NS, XmlError};

/// The `jabber:server` stanza namespace.
pub const SERVER_NS: &str = "jabber:server";
/// The Server Dialback namespace (`db:` prefix, XEP-0220).
pub const DIALBACK_NS: &str = "jabber:server:dialback";
/// The dialback stream feature (XEP-0220 §2.4).
pub const DIALBACK_FEATURE_NS: &str = "urn:xmpp:features:dialback";

/// How one server-to-server stream is set up; the IO layer fills it per
/// connection.
#[derive(Debug, Clone)]
pub struct S2sConfig {
    /// Our domain: the `from` of outbound streams, the `to` inbound streams
    /// must name.
    pub local_domain: String,
    /// Other domains of ours that inbound stanzas may be addressed to
    /// (components such as `conference.<domain>`).
    pub local_services: Vec<String>,
    /// Stream id of an inbound stream (random, chosen by the IO layer).
    pub stream_id: String,
    /// XML limits.
    pub limits: Limits,
    /// Inbound: whether STARTTLS can be offered (a certificate is set up).
    pub tls_offered: bool,
    /// Refuse to authenticate or exchange stanzas without TLS.
    pub require_encryption: bool,
    /// Server Dialback allowed (offered inbound, used outbound).
    pub dialback: bool,
    /// The transport is already encrypted (direct TLS, XEP-0368).
    pub secure: bool,
    /// The secret dialback keys are derived from.
    pub secret: Vec<u8>,
    /// A stream that does not finish authentication within this is closed
    /// with `<connection-timeout/>`.
    pub handshake_timeout_ms: u64,
    /// An authenticated stream without traffic for this long is closed.
    pub idle_timeout_ms: u64,
}

/// What the IO layer must do for a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Flush everything, then run the TLS handshake (server side inbound,
    /// client side outbound) and call `tls_established`.
    StartTls,
    /// Inbound: the peer proved it is `domain`. Outbound: we are
    /// authenticated to the peer `domain`; stanzas may be sent.
    Authenticated {
        /// The peer's domain.
        domain: String,
        /// `"EXTERNAL"` or `"dialback"`.
        method: &'static str,
    },
    /// Inbound: the peer claims `from` with a dialback key; ask `from`'s
    /// authoritative server (an [`Outbound`] with [`Purpose::Verify`]) and
    /// answer with [`Inbound::dialback_verified`].
    VerifyDialback {
        /// The domain the peer claims (originating server).
        from: String,
        /// Our domain it addressed (receiving server).
        to: String,
        /// The key it sent.
        key: String,
        /// The id of this stream, which the key is bound to.
        stream_id: String,
    },
    /// Outbound with [`Purpose::Verify`]: the authoritative server's answer.
    VerifyResult {
        /// The domain whose key was checked.
        domain: String,
        /// The stream id the key was bound to.
        stream_id: String,
        /// Whether the key is valid.
        valid: bool,
    },
    /// Inbound: a stanza from an authenticated domain to one of ours,
    /// converted to `jabber:client`.
    Stanza(Element),
    /// The stream is over: flush and close the transport. `condition` is
    /// the stream error sent or received, if any (`connection-timeout`
    /// for a handshake that took too long).
    Closed {
        /// The stream error condition.
        condition: Option<String>,
    },
}

/// What both directions share: parser, output queue, events, timers.
struct Core {
    config: S2sConfig,
    parser: StreamParser,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    closed: bool,
    header_written: bool,
    secure: bool,
    started_ms: u64,
    last_activity_ms: u64,
    authenticated: bool,
}

impl Core {
    fn new(config: S2sConfig, now_ms: u64) -> Self {
        Core {
            parser: StreamParser::new(config.limits),
            secure: config.secure,
            config,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
            header_written: false,
            started_ms: now_ms,
            last_activity_ms: now_ms,
            authenticated: false,
        }
    }

    fn write_header(&mut self, to: Option<&str>, id: Option<&str>) {
        let mut header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{SERVER_NS}' xmlns:stream='{}' \
             xmlns:db='{DIALBACK_NS}' from='{}'",
            ns::STREAM,
            escape_attr(&self.config.local_domain)
        );
        if let Some(to) = to {
            header.push_str(&format!(" to='{}'", escape_attr(to)));
        }
        if let Some(id) = id {
            header.push_str(&format!(" id='{}'", escape_attr(id)));
        }
        header.push_str(" version='1.0' xml:lang='en'>");
        self.outbox.push_back(header.into_bytes());
        self.header_written = true;
    }

    fn write_element(&mut self, element: &Element) {
        let mut out = Vec::with_capacity(128);
        if element.ns == ns::STREAM {
            write_stream_prefixed(element, &mut out);
        } else {
            element.write_to(&mut out, SERVER_NS);
        }
        self.outbox.push_back(out);
    }

    fn write_close(&mut self) {
        self.outbox.push_back(b"</stream:stream>".to_vec());
    }

    /// Sends a stream error and closes (the header first if none was sent).
    fn fail(&mut self, condition: &str, text: Option<&str>, to: Option<&str>) {
        if self.closed {
            return;
        }
        if !self.header_written {
            self.write_header(to, None);
        }
        self.write_element(&crate::c2s::stream_error(condition, text));
        self.write_close();
        self.closed = true;
        self.events.push_back(Event::Closed {
            condition: Some(condition.to_string()),
        });
    }

    fn close(&mut self) {
        if !self.closed {
            self.write_close();
            self.closed = true;
            self.events.push_back(Event::Closed { condition: None });
        }
    }

    /// Input arrived: an authenticated stream is not idle.
    fn touch(&mut self, input: &[u8], now_ms: u64) {
        if !input.is_empty() && self.authenticated {
            self.last_activity_ms = now_ms;
        }
    }

    /// One parser step: `Ok(None)` when more input is needed, `Err` after
    /// a stream error was sent.
    fn parse(&mut self, input: &[u8]) -> Result<(usize, Option<StreamEvent>), ()> {
        match self.parser.feed(input) {
            Ok(step) => Ok(step),
            Err(error) => {
                self.on_xml_error(&error);
                Err(())
            }
        }
    }

    fn on_xml_error(&mut self, error: &XmlError) {
        self.fail(error.condition(), None, None);
    }

    fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        Some(if self.authenticated {
            self.last_activity_ms
                .saturating_add(self.config.idle_timeout_ms)
        } else {
            self.started_ms
                .saturating_add(self.config.handshake_timeout_ms)
        })
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        match self.poll_timeout() {
            Some(deadline) if now_ms >= deadline => {
                if self.authenticated {
                    // Idle: a clean close (RFC 6120 §4.4), reopened on demand.
                    self.close();
                } else {
                    self.fail("connection-timeout", None, None);
                }
            }
            _ => {}
        }
    }
}

/// Whether a certificate name (DNS-ID, possibly `*.` wildcard) covers
/// `domain` (RFC 6125 §6.4, as XEP-0178 asks).
pub fn name_matches(name: &str, domain: &str) -> bool {
    let (name, domain) = (name.to_ascii_lowercase(), domain.to_ascii_lowercase());
    let name = name.trim_end_matches('.');
    let domain = domain.trim_end_matches('.');
    match name.strip_prefix("*.") {
        Some(rest) => domain
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent == rest),
        None => name == domain,
    }
}

/// The domain part of a JID string (after any `@`, before any `/`).
pub fn jid_domain(jid: &str) -> &str {
    let no_resource = jid.split_once('/').map_or(jid, |(d, _)| d);
    no_resource.rsplit_once('@').map_or(no_resource, |(_, d)| d)
}

/// Moves `element` and its descendants from namespace `from` to `to`
/// (stanzas are `jabber:server` on the wire, `jabber:client` in the hub).
pub fn retag(element: &mut Element, from: &str, to: &str) {
    let mut stack = vec![element];
    while let Some(e) = stack.pop() {
        if e.ns == from {
            e.ns = to.to_string();
        }
        for child in &mut e.children {
            if let Node::Element(c) = child {
                stack.push(c);
            }
        }
    }
}

fn is_stanza(element: &Element) -> bool {
    element.ns == SERVER_NS && matches!(element.name.as_str(), "message" | "presence" | "iq")
}

fn escape_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Writes an element of the stream namespace with the `stream:` prefix
/// the header declared (features, errors).
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
        child.write_to(out, SERVER_NS);
    }
    out.extend_from_slice(b"</stream:");
    out.extend_from_slice(element.name.as_bytes());
    out.push(b'>');
}
