//! Sans-IO CoAP: the message codec of RFC 7252, the per-peer endpoint machine
//! (confirmable messages, acknowledgements and resets, message-id
//! deduplication, retransmission with exponential back-off, NSTART), the
//! Observe sequence numbers of RFC 7641 and block-wise transfers of RFC 7959.
//!
//! Nothing here opens a socket or reads a clock: datagrams go in through
//! [`Endpoint::handle_datagram`] with the time, come out of
//! [`Endpoint::poll_transmit`], and the caller asks [`Endpoint::poll_timeout`]
//! when to call [`Endpoint::handle_timeout`] next.
//!
//! ## Choices where the specification leaves room
//!
//! - A message is limited to [`MAX_OPTIONS`] options of at most
//!   [`MAX_OPTION_LEN`] bytes each; more is a message format error.
//! - Every malformed input is a [`DecodeError`]; [`peek_header`] still reads
//!   the type and message id of a malformed message so a confirmable one can
//!   be rejected with a Reset (RFC 7252 §4.2).
//! - The endpoint is a server: it never sends requests, so a confirmable or
//!   non-confirmable *response* from a peer is answered with a Reset or
//!   ignored, and an empty confirmable message ("CoAP ping") gets a Reset.
#![warn(missing_docs)]

pub mod block;
pub mod endpoint;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
pub mod observe;
pub mod option;

pub use block::{Assembler, Block, BlockError, Progress};
pub use endpoint::{Endpoint, EndpointConfig, Event};
pub use error::DecodeError;
pub use message::{CoapOption, Code, Message, Type, decode, encode, peek_header};
pub use observe::ObserveSequence;

/// At most this many options in one message.
pub const MAX_OPTIONS: usize = 64;
/// At most this many bytes in one option value (Proxy-Uri's maximum, RFC 7252 §5.10).
pub const MAX_OPTION_LEN: usize = 1034;
/// The longest token (RFC 7252 §3).
pub const MAX_TOKEN_LEN: usize = 8;
