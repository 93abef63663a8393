//! What can be wrong with bytes a client sent.

/// A request (or record batch) that cannot be decoded. Every malformed input ends here, never
/// in a panic; the server answers what it can and closes the connection on the rest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The size prefix announces more than the configured maximum.
    #[error("a request of {size} bytes is larger than the limit of {max}")]
    TooLarge {
        /// The announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The size prefix is negative.
    #[error("invalid request size {0}")]
    NegativeSize(i32),
    /// The input ends inside a field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A string is not UTF-8.
    #[error("a string is not valid UTF-8")]
    InvalidString,
    /// A length field is negative where null is not allowed, or larger than what follows.
    #[error("invalid length {0} for {1}")]
    InvalidLength(i64, &'static str),
    /// A varint runs over its maximum width.
    #[error("a varint is too long")]
    Varint,
    /// A record batch is malformed.
    #[error("invalid record batch: {0}")]
    Batch(&'static str),
    /// A record batch's CRC-32C does not match its bytes.
    #[error("record batch checksum mismatch")]
    Crc,
    /// The batch uses a compression codec Kafka does not define.
    #[error("unknown compression codec {0}")]
    Compression(u8),
    /// The compressed data is damaged.
    #[error("cannot decompress a {0} batch")]
    Decompress(&'static str),
    /// Decompressing would produce more than the limit (a decompression bomb).
    #[error("a batch decompresses to more than {0} bytes")]
    DecompressedTooLarge(usize),
    /// A magic byte other than 2 (only record batches v2 are supported).
    #[error("unsupported record batch magic {0}")]
    Magic(i8),
}
