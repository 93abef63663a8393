//! What can go wrong on an XML stream, and which RFC 6120 stream error
//! reports it.

/// A fatal stream error: every variant ends the stream with the stream error
/// named by [`XmlError::condition`] (RFC 6120 §4.9.3).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// The data is not well-formed XML or not namespace-well-formed (a
    /// syntax error, an undeclared entity or prefix, a duplicate attribute,
    /// invalid UTF-8, ...). The string says what, for logs.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// XML that RFC 6120 §11.1 forbids on a stream: a DTD or markup
    /// declaration (`<!DOCTYPE`, `<!ENTITY`), a comment, a processing
    /// instruction, or an XML declaration other than version 1.0, UTF-8.
    #[error("restricted XML (DTD, comment, processing instruction or entity declaration)")]
    RestrictedXml,
    /// The peer exceeded one of our [`Limits`](crate::Limits). The string
    /// says which, for logs.
    #[error("policy violation: {0}")]
    PolicyViolation(String),
    /// TCP mode: the root element is not `stream` in
    /// `http://etherx.jabber.org/streams`.
    #[error("the stream root is not <stream:stream/> in http://etherx.jabber.org/streams")]
    InvalidNamespace,
    /// Well-formed XML that is not a valid XMPP stream, e.g. non-whitespace
    /// text between stanzas, or a WebSocket `<open/>` with children.
    #[error("bad format: {0}")]
    BadFormat(String),
}

impl XmlError {
    /// RFC 6120 §4.9.3 stream error condition name: `"not-well-formed"`,
    /// `"restricted-xml"`, `"policy-violation"`, `"invalid-namespace"`,
    /// `"bad-format"` — the element to put inside `<stream:error/>`.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::RestrictedXml => "restricted-xml",
            XmlError::PolicyViolation(_) => "policy-violation",
            XmlError::InvalidNamespace => "invalid-namespace",
            XmlError::BadFormat(_) => "bad-format",
        }
    }

    /// Maps an rxml error (see the crate docs for why each goes where).
    pub(crate) fn from_rxml(e: rxml::Error) -> Self {
        match e {
            // Token-length limits are limits, not XML restrictions.
            rxml::Error::RestrictedXml(msg @ ("long name or reference" | "event too long")) => {
                XmlError::PolicyViolation(msg.to_string())
            }
            rxml::Error::RestrictedXml(_) => XmlError::RestrictedXml,
            // `<!` followed by anything but `--` or `[CDATA[`: a DTD or markup
            // declaration (`<!DOCTYPE`, `<!ENTITY`, `<!ELEMENT`, ...). rxml
            // does not tell them apart from other `<!` garbage.
            rxml::Error::InvalidSyntax("malformed cdata or comment section start") => {
                XmlError::RestrictedXml
            }
            // A comment or a processing instruction that looks like an XML
            // declaration (`<?xml-stylesheet`), where rxml did not expect
            // one (after the root element, in a WebSocket message).
            rxml::Error::UnexpectedToken(_, "'<!--'" | "'<?xml'", _) => XmlError::RestrictedXml,
            other => XmlError::NotWellFormed(other.to_string()),
        }
    }
}
