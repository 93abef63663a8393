//! Why a SASL exchange failed.

/// Why an exchange failed. [`SaslError::condition`] gives the XMPP SASL failure condition
/// (RFC 6120 §6.5); other protocols map every variant to their own "authentication failed".
///
/// The exchange that returned an error is over: any further call on it returns
/// [`SaslError::OutOfOrder`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaslError {
    /// The message does not follow the mechanism's grammar (or is too long, or uses an extension
    /// we do not support). The string says what was wrong, for logs; never send it to the client.
    #[error("malformed SASL message: {0}")]
    MalformedRequest(String),
    /// The authorization identity is not acceptable. The mechanisms never produce this on their
    /// own (they cannot know who may act as whom); it exists so the caller's authorization
    /// policy can fail with the right condition.
    #[error("invalid authorization identity")]
    InvalidAuthzid,
    /// Wrong password (bad client proof) or a nonce that is not the one of this exchange.
    #[error("not authorized")]
    NotAuthorized,
    /// The channel-binding data the client hashed in (`c=`) differs from this connection's: a
    /// man in the middle, or a client that changed its GS2 header between messages.
    #[error("channel binding mismatch")]
    ChannelBindingMismatch,
    /// The client asked for a channel-binding type we cannot provide on this connection, or said
    /// "I support channel binding but thought you did not" (`y`) while we offer it: the
    /// downgrade attack RFC 5802 §6 detects.
    #[error("channel binding not supported or downgrade detected")]
    ChannelBindingUnsupported,
    /// The password is not valid under SASLprep (RFC 4013), or is empty, so no keys can be
    /// derived from it.
    #[error("password is not valid under SASLprep")]
    InvalidPassword,
    /// A method was called in the wrong state (e.g. `client_final` before `server_first`, or
    /// anything after the exchange ended).
    #[error("SASL exchange step out of order")]
    OutOfOrder,
}

impl SaslError {
    /// The XMPP `<failure/>` child element name for this error (RFC 6120 §6.5).
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::MalformedRequest(_) | SaslError::OutOfOrder => "malformed-request",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::NotAuthorized
            | SaslError::ChannelBindingMismatch
            | SaslError::ChannelBindingUnsupported
            | SaslError::InvalidPassword => "not-authorized",
        }
    }

    pub(crate) fn malformed(why: impl Into<String>) -> Self {
        SaslError::MalformedRequest(why.into())
    }
}
