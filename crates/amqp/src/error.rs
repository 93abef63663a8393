//! Errors, one sub-enum per cause, each mapped to the reply code RabbitMQ answers with.

use crate::reply::{self, ReplyCode};

/// Field-level syntax errors: a method, table or property list that does not decode.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended in the middle of a field.
    #[error("unexpected end of data")]
    Truncated,
    /// Octets were left over after the last field of a method.
    #[error("{0} unexpected trailing octets")]
    TrailingBytes(usize),
    /// The class/method pair is not one of AMQP 0-9-1's (nor RabbitMQ's extensions).
    #[error("unknown method (class {class_id}, method {method_id})")]
    UnknownMethod {
        /// The class id read from the frame.
        class_id: u16,
        /// The method id read from the frame.
        method_id: u16,
    },
    /// A field table or array used a type letter RabbitMQ does not know.
    #[error("unknown field value type {0:#04x}")]
    UnknownFieldType(u8),
    /// Field tables or arrays nested deeper than [`crate::table::MAX_DEPTH`].
    #[error("field table nested deeper than {0} levels")]
    TooDeep(usize),
    /// A content header used property flags that basic does not define.
    #[error("unknown property flags {0:#06x}")]
    UnknownPropertyFlags(u16),
}

impl DecodeError {
    /// The reply code: undecodable octets are a frame error (as RabbitMQ's "cannot decode"),
    /// illegal values a syntax error, unknown methods "not implemented".
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            DecodeError::Truncated | DecodeError::TrailingBytes(_) => reply::FRAME_ERROR,
            DecodeError::UnknownMethod { .. } => reply::NOT_IMPLEMENTED,
            DecodeError::UnknownFieldType(_)
            | DecodeError::TooDeep(_)
            | DecodeError::UnknownPropertyFlags(_) => reply::SYNTAX_ERROR,
        }
    }
}

/// Framing errors: the frame envelope (type, size, end octet) or a payload inside it is bad.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced payload is larger than the negotiated frame_max allows.
    #[error("type {frame_type}, channel {channel}: frame_too_large, payload {size} > {max}")]
    TooLarge {
        /// Frame type octet.
        frame_type: u8,
        /// Channel number.
        channel: u16,
        /// Announced payload size.
        size: u32,
        /// Largest payload accepted.
        max: u32,
    },
    /// The octet after the payload was not 0xCE.
    #[error("type {frame_type}, channel {channel}: invalid_frame_end_marker {found}")]
    BadFrameEnd {
        /// Frame type octet.
        frame_type: u8,
        /// Channel number.
        channel: u16,
        /// The octet found instead of 0xCE.
        found: u8,
    },
    /// A frame type other than method (1), header (2), body (3) or heartbeat (8).
    #[error("type {frame_type}, channel {channel}: unknown_frame")]
    UnknownFrameType {
        /// Frame type octet.
        frame_type: u8,
        /// Channel number.
        channel: u16,
    },
    /// A heartbeat frame with a payload, or a method/header payload too short for its fixed part.
    #[error(
        "type {frame_type}, channel {channel}: unknown_frame (malformed payload of {size} octets)"
    )]
    Malformed {
        /// Frame type octet.
        frame_type: u8,
        /// Channel number.
        channel: u16,
        /// Payload size.
        size: u32,
    },
    /// A method frame whose arguments do not decode.
    #[error("channel {channel}, method {class_id}/{method_id}: {source}")]
    Method {
        /// Channel number.
        channel: u16,
        /// Class id of the method.
        class_id: u16,
        /// Method id of the method.
        method_id: u16,
        /// What was wrong.
        source: DecodeError,
    },
    /// A content header whose property list does not decode.
    #[error("channel {channel}, content header: {source}")]
    Properties {
        /// Channel number.
        channel: u16,
        /// Class id of the header.
        class_id: u16,
        /// What was wrong.
        source: DecodeError,
    },
}

impl FrameError {
    /// The reply code RabbitMQ closes the connection with.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            FrameError::TooLarge { .. }
            | FrameError::BadFrameEnd { .. }
            | FrameError::UnknownFrameType { .. }
            | FrameError::Malformed { .. } => reply::FRAME_ERROR,
            FrameError::Method { source, .. } | FrameError::Properties { source, .. } => {
                source.reply_code()
            }
        }
    }

    /// The channel the bad frame arrived on.
    pub fn channel(&self) -> u16 {
        match self {
            FrameError::TooLarge { channel, .. }
            | FrameError::BadFrameEnd { channel, .. }
            | FrameError::UnknownFrameType { channel, .. }
            | FrameError::Malformed { channel, .. }
            | FrameError::Method { channel, .. }
            | FrameError::Properties { channel, .. } => *channel,
        }
    }

    /// The (class id, method id) to report in `connection.close`, when a method was identified.
    pub fn class_method(&self) -> (u16, u16) {
        match self {
            FrameError::Method {
                class_id,
                method_id,
                source,
                ..
            } => match source {
                DecodeError::UnknownMethod { .. } => (0, 0),
                _ => (*class_id, *method_id),
            },
            _ => (0, 0),
        }
    }

    /// Whether the byte stream lost synchronisation, so no later frame can be read.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FrameError::TooLarge { .. } | FrameError::BadFrameEnd { .. }
        )
    }
}

/// Violations of the connection and channel rules, detected by the state machine.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame type that is not allowed here (content on channel 0, heartbeat on a channel,
    /// channel frames before the connection is open).
    #[error("type {frame_type}, channel {channel}: unexpected frame")]
    UnexpectedFrame {
        /// Frame type octet.
        frame_type: u8,
        /// Channel number.
        channel: u16,
    },
    /// A content method was not followed by its content header.
    #[error("expected content header for class {class_id}, got non content header frame instead")]
    ExpectedContentHeader {
        /// Class of the content method.
        class_id: u16,
    },
    /// The content header is for another class than the method.
    #[error("expected content header for class {expected}, got one for class {got} instead")]
    WrongContentClass {
        /// Class of the content method.
        expected: u16,
        /// Class in the header frame.
        got: u16,
    },
    /// A content header was not followed by all of its body frames.
    #[error("expected content body, got non content body frame instead")]
    ExpectedContentBody,
    /// A content header or body arrived where a method was expected.
    #[error("expected method frame, got non method frame instead")]
    ExpectedMethod,
    /// A body frame carried more octets than the header announced.
    #[error("content body frame exceeds remaining content size")]
    BodyTooLarge,
    /// A method other than `channel.open` on a channel that is not open.
    #[error("expected 'channel.open'")]
    ChannelNotOpen,
    /// `channel.open` on an open channel.
    #[error("second 'channel.open' seen")]
    ChannelAlreadyOpen,
    /// A channel number above the negotiated channel_max.
    #[error("channel {channel} is above the negotiated channel_max ({channel_max})")]
    ChannelMax {
        /// Channel the client tried to open.
        channel: u16,
        /// Negotiated limit.
        channel_max: u16,
    },
    /// A method on channel 0 that is not valid in the current connection state.
    #[error("unexpected method in connection state {state}")]
    UnexpectedMethod {
        /// RabbitMQ's name of the state (starting, tuning, opening, running).
        state: &'static str,
    },
    /// A method the client may not send on this channel (connection methods on a channel,
    /// server-only content methods).
    #[error("method {class_id}/{method_id} is not allowed here")]
    CommandInvalid {
        /// Class id.
        class_id: u16,
        /// Method id.
        method_id: u16,
    },
    /// `connection.start-ok` named a mechanism we do not offer.
    #[error("unknown authentication mechanism '{0}'")]
    UnknownMechanism(String),
    /// The SASL response does not parse for its mechanism.
    #[error("{0}")]
    InvalidAuthResponse(&'static str),
    /// `connection.tune-ok` values outside what the server allows.
    #[error(
        "negotiated {field} = {value}{detail} is {cmp} than the {bound} allowed value ({limit})"
    )]
    Negotiation {
        /// `channel_max` or `frame_max`.
        field: &'static str,
        /// Client's value.
        value: u32,
        /// `" (no limit)"` or empty.
        detail: &'static str,
        /// `lower` or `higher`.
        cmp: &'static str,
        /// `minimum` or `maximum`.
        bound: &'static str,
        /// The bound.
        limit: u32,
    },
    /// The client sent more than we buffer while a handshake decision is pending.
    #[error("too much data sent before the handshake step completed")]
    HandshakeOverflow,
    /// A message larger than `max_message_size` (a channel error).
    #[error("message size {size} is larger than configured max size {max}")]
    MessageTooLarge {
        /// Announced body size.
        size: u64,
        /// Configured limit.
        max: u64,
    },
}

impl ProtocolError {
    /// The reply code RabbitMQ answers this violation with.
    pub fn reply_code(&self) -> ReplyCode {
        use ProtocolError::*;
        match self {
            UnexpectedFrame { .. }
            | ExpectedContentHeader { .. }
            | WrongContentClass { .. }
            | ExpectedContentBody
            | ExpectedMethod => reply::UNEXPECTED_FRAME,
            BodyTooLarge => reply::FRAME_ERROR,
            ChannelNotOpen | ChannelAlreadyOpen | UnexpectedMethod { .. } => reply::CHANNEL_ERROR,
            ChannelMax { .. } | Negotiation { .. } => reply::NOT_ALLOWED,
            CommandInvalid { .. } | UnknownMechanism(_) => reply::COMMAND_INVALID,
            InvalidAuthResponse(_) => reply::SYNTAX_ERROR,
            HandshakeOverflow => reply::RESOURCE_ERROR,
            MessageTooLarge { .. } => reply::PRECONDITION_FAILED,
        }
    }
}

/// Any error the connection machine can close a connection or channel for.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Framing or field decoding.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Connection/channel rules.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl Error {
    /// The reply code to send.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Error::Frame(e) => e.reply_code(),
            Error::Protocol(e) => e.reply_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(DecodeError::Truncated.reply_code(), 501);
        assert_eq!(DecodeError::UnknownFieldType(b'Z').reply_code(), 502);
        assert_eq!(
            DecodeError::UnknownMethod {
                class_id: 1,
                method_id: 2
            }
            .reply_code(),
            540
        );
        let e = FrameError::TooLarge {
            frame_type: 1,
            channel: 0,
            size: 10,
            max: 5,
        };
        assert_eq!(e.reply_code(), 501);
        assert!(e.is_fatal());
        assert_eq!(Error::from(ProtocolError::ExpectedMethod).reply_code(), 505);
        assert_eq!(ProtocolError::ChannelNotOpen.reply_code(), 504);
        assert_eq!(
            ProtocolError::MessageTooLarge { size: 2, max: 1 }.reply_code(),
            406
        );
        assert_eq!(
            ProtocolError::ChannelNotOpen.to_string(),
            "expected 'channel.open'"
        );
    }
}
