//! Stanza errors (RFC 6120 §8.3) and the hub's own restore error.

use std::fmt;

use tributary_xmpp_xml::{Element, Node};

use crate::ns;

/// A stanza-level error: what the hub answers when it refuses or cannot
/// route a stanza, and what [`super::Hub::bind`] returns when a resource is
/// unacceptable.
///
/// It exists as a value (rather than a ready-made element) so that callers
/// such as the c2s layer can map it onto their own replies, e.g. a bind
/// `<iq/>` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// The error type of RFC 6120 §8.3.2: `cancel`, `modify`, `auth` or `wait`.
    pub kind: &'static str,
    /// The defined condition of RFC 6120 §8.3.3, e.g. `service-unavailable`.
    pub condition: &'static str,
    /// Optional human-readable text (`<text/>`).
    pub text: Option<String>,
}

impl StanzaError {
    /// An error with an explicit type and condition.
    pub fn new(kind: &'static str, condition: &'static str) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
        }
    }

    /// Adds the descriptive `<text/>`.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// `modify`/`bad-request`: the stanza is malformed or not understood.
    pub fn bad_request() -> Self {
        Self::new("modify", "bad-request")
    }

    /// `cancel`/`service-unavailable`: nobody here handles that, or the
    /// recipient is unknown (RFC 6121 §8.5).
    pub fn service_unavailable() -> Self {
        Self::new("cancel", "service-unavailable")
    }

    /// `auth`/`forbidden`: the sender may not do that (e.g. someone else's roster).
    pub fn forbidden() -> Self {
        Self::new("auth", "forbidden")
    }

    /// `cancel`/`not-allowed`: the action is never allowed (e.g. adding oneself to the roster).
    pub fn not_allowed() -> Self {
        Self::new("cancel", "not-allowed")
    }

    /// `cancel`/`item-not-found`: the addressed item does not exist.
    pub fn item_not_found() -> Self {
        Self::new("cancel", "item-not-found")
    }

    /// `modify`/`not-acceptable`: the request violates a policy (size, blocking).
    pub fn not_acceptable() -> Self {
        Self::new("modify", "not-acceptable")
    }

    /// `modify`/`jid-malformed`: an address in the stanza is not a valid JID.
    pub fn jid_malformed() -> Self {
        Self::new("modify", "jid-malformed")
    }

    /// `cancel`/`remote-server-not-found`: this server has no federation.
    pub fn remote_server_not_found() -> Self {
        Self::new("cancel", "remote-server-not-found")
    }

    /// The `<error/>` child element (in `jabber:client`), with the condition
    /// and the optional text in the stanza-error namespace.
    pub fn to_element(&self) -> Element {
        let mut error = Element::new("error", ns::CLIENT)
            .with_attr("type", self.kind)
            .with_child(Element::new(self.condition, ns::STANZAS));
        if let Some(text) = &self.text {
            error.push_child(Element::new("text", ns::STANZAS).with_text(text.clone()));
        }
        error
    }

    /// The error reply to `stanza` (RFC 6120 §8.3.1): same element name and
    /// id, `to` and `from` swapped, `type='error'`, the original children kept
    /// (minus any earlier `<error/>`), and this error appended.
    pub fn reply_to(&self, stanza: &Element) -> Element {
        let mut reply = Element::new(stanza.name.clone(), stanza.ns.clone());
        for a in &stanza.attrs {
            if a.ns.is_none() && matches!(a.name.as_str(), "to" | "from" | "type") {
                continue;
            }
            reply.attrs.push(a.clone());
        }
        if let Some(from) = stanza.attr("from") {
            reply.set_attr("to", from);
        }
        if let Some(to) = stanza.attr("to") {
            reply.set_attr("from", to);
        }
        reply.set_attr("type", "error");
        reply.children = stanza
            .children
            .iter()
            .filter(|n| !matches!(n, Node::Element(e) if e.is("error", &stanza.ns)))
            .cloned()
            .collect();
        reply.push_child(self.to_element());
        reply
    }
}

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.condition, self.kind)?;
        if let Some(text) = &self.text {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StanzaError {}

/// Why [`super::Hub::restore`] refused a table: a row it cannot decode. The
/// server should stop rather than run with a partial roster or lose offline
/// messages silently.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A row (or the table name itself) does not decode.
    #[error("corrupt row {key:?} in table {table}: {message}")]
    Corrupt {
        /// The table the row came from.
        table: String,
        /// The row's key.
        key: String,
        /// What was wrong with it.
        message: String,
    },
}
