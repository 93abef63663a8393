//! Why a datagram is not a CoAP message.

/// A message format error (RFC 7252 §4.2, §4.3): a confirmable one is
/// rejected with a Reset, any other one is silently ignored.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the 4 header bytes.
    #[error("datagram of {0} bytes is shorter than the 4-byte header")]
    TooShort(usize),
    /// Version is not 1 (such messages are silently ignored).
    #[error("unknown CoAP version {0}")]
    BadVersion(u8),
    /// Token Length 9 to 15 (reserved).
    #[error("token length {0} is reserved")]
    TokenLength(u8),
    /// The datagram ended inside the token or an option.
    #[error("message truncated")]
    Truncated,
    /// Nibble 15 as an option delta or length outside the payload marker.
    #[error("reserved option delta or length 15")]
    ReservedNibble,
    /// A payload marker followed by no payload.
    #[error("payload marker followed by no payload")]
    EmptyPayload,
    /// The option number went past 65535.
    #[error("option number out of range")]
    OptionNumber,
    /// More than [`crate::MAX_OPTIONS`] options.
    #[error("more than {} options", crate::MAX_OPTIONS)]
    TooManyOptions,
    /// An option value longer than [`crate::MAX_OPTION_LEN`].
    #[error("option {number} of {len} bytes is too long")]
    OptionTooLong {
        /// Option number.
        number: u16,
        /// Its length.
        len: usize,
    },
    /// An Empty message (code 0.00) with bytes after the header.
    #[error("empty message with a token, options or payload")]
    NotEmpty,
    /// A code of the reserved classes 1, 6 or 7.
    #[error("reserved code class {0}")]
    ReservedClass(u8),
}
