//! The XMPP XML stream (RFC 6120 §4, §11), sans-IO.
//!
//! Bytes go in, stream events come out: the stream header, each complete
//! top-level element (a stanza or a nonza) as an [`Element`] tree, and the
//! stream close. The restricted XML of RFC 6120 §11 is enforced by rxml (no
//! DTD, no entity declarations, no processing instructions, no comments); on
//! top of that, limits on element depth, stanza size and attribute count keep
//! a hostile client from making the server allocate without bound.
//!
//! [`StreamParser`] is the parser (TCP streams and RFC 7395 WebSocket
//! framing); [`Element::write_to`] is the serializer. Nothing here does IO.
//!
//! ## Choices where the specifications leave room
//!
//! - **Buffering.** [`StreamParser::feed`] buffers an incomplete event inside
//!   the parser: when it returns no event it has consumed all of its input.
//!   When it returns an event it stops right after that event's last byte
//!   (the `>`), so bytes pipelined behind `<starttls/>` or a SASL `<success/>`
//!   stay with the caller, who can drop them (STARTTLS command injection,
//!   CVE-2011-0411 style) before restarting the stream.
//! - **Stanza size.** `max_stanza_bytes` bounds the raw bytes of each event:
//!   the stream header (with any XML declaration before it) and each
//!   top-level element, counted from its `<` to its last `>`. It is enforced
//!   while parsing: the parser is never handed more bytes than the remaining
//!   budget, so nothing above the limit is ever buffered. Text content is
//!   part of those bytes, so it is bounded too. The in-memory tree can be a
//!   constant factor larger than the bytes (an `<a/>` is four bytes but one
//!   [`Element`]), which is still bounded.
//! - **Whitespace.** Whitespace between top-level elements (keepalives) is
//!   skipped and not counted against the limit. So is whitespace before the
//!   document, which rxml would refuse and which a keepalive racing a stream
//!   restart can produce; as a consequence whitespace before an XML
//!   declaration is accepted, which strict XML would not. Non-whitespace
//!   text at stream level is [`XmlError::BadFormat`] once it ends (at the
//!   next `<`, or when it reaches the size limit).
//! - **Depth.** `max_depth` counts below the stream root: a stanza is at
//!   depth 1, its children at depth 2. In WebSocket mode the message's
//!   element is at depth 1. It is checked when an element's start tag
//!   begins, before its attributes are read.
//! - **Attributes.** `max_attributes` counts every attribute in one start
//!   tag, namespace declarations included (they cost memory too), and is
//!   checked attribute by attribute.
//! - **Error mapping.** rxml reports DTDs (`<!DOCTYPE`, and any other
//!   `<!` that is neither a comment nor CDATA, which covers `<!ENTITY` and
//!   friends) as a syntax error, "malformed cdata or comment section start";
//!   that one is mapped to [`XmlError::RestrictedXml`]. rxml's own
//!   restricted-XML errors (comments, processing instructions, an XML
//!   declaration other than version 1.0 / UTF-8 / standalone) map to
//!   `RestrictedXml` as well, except its token-length limits, which are
//!   limits and map to [`XmlError::PolicyViolation`]. A comment after the
//!   root element of a WebSocket message and a processing instruction whose
//!   target starts with `xml` (`<?xml-stylesheet`), which rxml reports as
//!   syntax errors, are `RestrictedXml` too. An undeclared entity
//!   such as `&custom;` is a well-formedness error (XML 1.0 WFC: Entity
//!   Declared): [`XmlError::NotWellFormed`]. RFC 6120's
//!   `unsupported-encoding` has no variant of its own: a non-UTF-8 encoding
//!   declaration is `RestrictedXml`, invalid UTF-8 is `NotWellFormed`.
//! - **After an error** (TCP mode) the parser keeps returning that error
//!   until [`StreamParser::reset`]: the stream is dead anyway (RFC 6120
//!   §4.9.1.1).
//! - **After the stream close** (TCP mode) further input is consumed and
//!   ignored: RFC 6120 §4.4 says nothing may follow `</stream:stream>`, and
//!   the session is closing anyway.
//! - **Namespace declarations** are not kept as attributes; the serializer
//!   derives them from the `ns` fields. CDATA sections and character
//!   references come out as plain text; consecutive text is merged into one
//!   [`Node::Text`].
#![warn(missing_docs)]

mod element;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod parser;
mod writer;

pub use element::{Attribute, Element, Node, XML_NS};
pub use error::XmlError;
pub use parser::StreamParser;

/// The stream namespace (`stream:stream`, `stream:features`, `stream:error`).
pub const STREAM_NS: &str = "http://etherx.jabber.org/streams";

/// The RFC 7395 WebSocket framing namespace (`<open/>`, `<close/>`).
pub const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// Limits a hostile peer cannot exceed, so that memory per connection stays
/// bounded whatever the peer sends.
///
/// Every limit is checked while parsing, before the offending data is
/// buffered; exceeding one is [`XmlError::PolicyViolation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Raw bytes in one top-level element (or the stream header), text
    /// included. Default 262 144, like Prosody's c2s `c2s_stanza_size_limit`.
    pub max_stanza_bytes: usize,
    /// Element nesting depth counted below the stream root (a stanza is
    /// depth 1). Default 32.
    pub max_depth: usize,
    /// Attributes (namespace declarations included) in one start tag.
    /// Default 64.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 262_144,
            max_depth: 32,
            max_attributes: 64,
        }
    }
}

/// What the parser hands the session layer: the stream opened, a stanza (or
/// nonza) arrived, or the stream closed.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The stream header `<stream:stream ...>` (TCP) or
    /// `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' .../>` (WebSocket).
    /// `header` is the element with its attributes (`to`, `from`, `version`,
    /// `id`, and `xml:lang` as `ns = XML_NS`, `name = "lang"`) and no
    /// children; `default_ns` is the default namespace declared on it (e.g.
    /// `"jabber:client"`; `""` if none). For a WebSocket `<open/>` that is
    /// whatever it declares, normally the framing namespace itself.
    Open {
        /// The header element, without children.
        header: Element,
        /// The default namespace declared on the header, or `""`.
        default_ns: String,
    },
    /// One complete top-level element: a stanza or nonza, namespaces
    /// resolved.
    Element(Element),
    /// `</stream:stream>` (TCP) or
    /// `<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>` (WebSocket).
    Close,
}
