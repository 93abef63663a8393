//! Sans-IO AMQP 0-9-1: the wire codec and the server side of the connection state machine.
//!
//! Bytes go in through [`Connection::handle_input`], events come out of
//! [`Connection::poll_event`], bytes to send accumulate in [`Connection::transmit`], and time is
//! passed in as [`std::time::Instant`] ([`Connection::poll_timeout`] /
//! [`Connection::handle_timeout`]). Nothing here does IO or reads a clock.
#![warn(missing_docs)]

mod codec;
pub mod connection;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod method;
pub mod properties;
pub mod reply;
pub mod shortstr;
pub mod table;

pub use connection::{CloseReason, Connection, ConnectionConfig, Event, Mechanism};
pub use error::{DecodeError, Error, FrameError, ProtocolError};
pub use frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE, Frame,
    decode_frame, encode_body, encode_header, encode_heartbeat, encode_method,
};
pub use method::Method;
pub use properties::BasicProperties;
pub use reply::ReplyCode;
pub use shortstr::ShortStr;
pub use table::{FieldTable, FieldValue};

/// The eight octets a client sends first: `AMQP` 0 0 9 1. Also our answer to a bad header.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
