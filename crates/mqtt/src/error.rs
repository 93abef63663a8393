//! Decode and encode errors. Every [`DecodeError`] closes the connection; it maps to the MQTT 5
//! reason code to send in a CONNACK (before CONNECT is accepted) or DISCONNECT, and, where MQTT
//! 3.x defines one, the CONNACK return code (otherwise a 3.x connection just closes).

use crate::reason::{ReasonCode, connack_v3};
use crate::topic::TopicError;
use crate::{PacketType, ProtocolVersion};

/// Why the bytes at the front of the buffer are not a packet we accept.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The announced packet (fixed header + remaining length) is larger than the limit; refused
    /// before its body is waited for or allocated.
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge {
        /// Announced total size in bytes.
        size: u64,
        /// The limit passed to `decode`.
        max: u32,
    },
    /// A Variable Byte Integer (remaining length, property length, property id, subscription
    /// identifier) has a fifth continuation octet.
    #[error("malformed variable byte integer")]
    MalformedVarInt,
    /// Packet type 0, or 15 (AUTH) before MQTT 5.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The low nibble of the first octet is not what the packet type requires.
    #[error("{packet}: invalid fixed header flags {flags:#06b}")]
    InvalidFlags {
        /// Packet type.
        packet: PacketType,
        /// The four flag bits received.
        flags: u8,
    },
    /// Both QoS bits set in a PUBLISH or a will.
    #[error("QoS 3 is not a QoS")]
    InvalidQoS,
    /// An MQTT 5 PUBLISH with QoS 0 and DUP set.
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// The first packet on a connection was not CONNECT.
    #[error("first packet is {0}, not CONNECT")]
    ExpectedConnect(PacketType),
    /// A second CONNECT on a connection.
    #[error("second CONNECT")]
    UnexpectedConnect,
    /// The packet ended in the middle of a field.
    #[error("{0}: unexpected end of packet")]
    Truncated(PacketType),
    /// Bytes were left over after the last field of a packet.
    #[error("{packet}: {count} unexpected trailing bytes")]
    TrailingBytes {
        /// Packet type.
        packet: PacketType,
        /// Number of bytes left.
        count: usize,
    },
    /// A UTF-8 Encoded String is ill-formed UTF-8 (including surrogates) or contains U+0000.
    #[error("{0}: invalid UTF-8 string")]
    InvalidUtf8(PacketType),
    /// A packet identifier of 0 where a non-zero one is required.
    #[error("{0}: packet identifier 0")]
    ZeroPacketId(PacketType),
    /// The PUBLISH or will topic is not a valid Topic Name (wildcards, empty in 3.x).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// An MQTT 5 PUBLISH with an empty topic and no Topic Alias.
    #[error("empty topic name without a Topic Alias")]
    EmptyTopicWithoutAlias,
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter is not a valid Topic Filter.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE without any topic filter.
    #[error("{0} without topic filters")]
    NoTopicFilters(PacketType),
    /// Reserved bits set in a SUBSCRIBE's subscription options.
    #[error("reserved bits set in subscription options {0:#010b}")]
    InvalidSubscriptionOptions(u8),
    /// Retain Handling 3.
    #[error("retain handling 3")]
    InvalidRetainHandling,
    /// No Local on a shared subscription.
    #[error("No Local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A property identifier not defined for this packet (or not at all).
    #[error("{packet}: property {id:#04x} not allowed")]
    UnexpectedProperty {
        /// Packet type (CONNECT for will properties too).
        packet: PacketType,
        /// The property identifier.
        id: u32,
    },
    /// A property other than User Property and Subscription Identifier (in PUBLISH) repeated.
    #[error("property {0:#04x} included more than once")]
    DuplicateProperty(u8),
    /// A property value outside its range (a 0/1 byte with another value, a zero Receive
    /// Maximum, Maximum Packet Size or Subscription Identifier, a wildcard Response Topic).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// A Topic Alias of 0.
    #[error("topic alias 0")]
    TopicAliasZero,
    /// Authentication Data without an Authentication Method.
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    /// The Payload Format Indicator says UTF-8 but the payload is not.
    #[error("payload is not the UTF-8 its payload format indicator announces")]
    PayloadFormatInvalid,
    /// CONNECT's Protocol Name is neither "MQTT" nor "MQIsdp".
    #[error("unknown protocol name")]
    InvalidProtocolName,
    /// CONNECT's Protocol Level is not one we speak (or does not fit its Protocol Name).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// CONNECT flags: the reserved bit, will QoS 3, will QoS/retain without the will flag.
    #[error("invalid CONNECT flags {0:#010b}")]
    InvalidConnectFlags(u8),
    /// A password without a user name (MQTT 3.x).
    #[error("password flag without user name flag")]
    PasswordWithoutUsername,
    /// An empty client identifier where 3.x forbids it (3.1 always, 3.1.1 without clean session).
    #[error("client identifier rejected")]
    ClientIdRejected,
    /// A reason (or return) code the spec does not allow in this packet.
    #[error("{packet}: reason code {code:#04x} not allowed")]
    InvalidReasonCode {
        /// Packet type.
        packet: PacketType,
        /// The code received.
        code: u8,
    },
    /// CONNACK's acknowledge flags: reserved bits, or session present with a failure.
    #[error("invalid CONNACK flags {0:#010b}")]
    InvalidConnAckFlags(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code to send in a CONNACK (if CONNECT was not yet accepted) or
    /// DISCONNECT before closing.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            MalformedVarInt
            | ReservedPacketType(_)
            | InvalidFlags { .. }
            | InvalidQoS
            | DupWithQoS0
            | Truncated(_)
            | TrailingBytes { .. }
            | InvalidUtf8(_)
            | InvalidSubscriptionOptions(_)
            | UnexpectedProperty { .. }
            | InvalidConnectFlags(_)
            | PasswordWithoutUsername
            | InvalidConnAckFlags(_) => ReasonCode::MALFORMED_PACKET,
            ExpectedConnect(_)
            | UnexpectedConnect
            | ZeroPacketId(_)
            | EmptyTopicWithoutAlias
            | NoTopicFilters(_)
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | AuthDataWithoutMethod
            | InvalidReasonCode { .. } => ReasonCode::PROTOCOL_ERROR,
            InvalidTopicName(_) => ReasonCode::TOPIC_NAME_INVALID,
            InvalidTopicFilter(_) => ReasonCode::TOPIC_FILTER_INVALID,
            TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            PayloadFormatInvalid => ReasonCode::PAYLOAD_FORMAT_INVALID,
            InvalidProtocolName | UnsupportedProtocolVersion(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            ClientIdRejected => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        }
    }

    /// The MQTT 3.x CONNACK return code to send before closing, where the 3.1.1 spec asks for
    /// one (0x01 for an unacceptable protocol level, 0x02 for a rejected identifier); `None`
    /// means: close without a CONNACK.
    pub fn connack_v3(&self) -> Option<u8> {
        match self {
            DecodeError::UnsupportedProtocolVersion(_) => {
                Some(connack_v3::UNACCEPTABLE_PROTOCOL_VERSION)
            }
            DecodeError::ClientIdRejected => Some(connack_v3::IDENTIFIER_REJECTED),
            _ => None,
        }
    }
}

impl From<&DecodeError> for ReasonCode {
    fn from(e: &DecodeError) -> ReasonCode {
        e.reason_code()
    }
}

/// Why a packet cannot be written in the asked protocol version.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    #[error("field of {0} bytes exceeds 65535")]
    FieldTooLong(usize),
    /// The packet's remaining length exceeds 268,435,455 bytes.
    #[error("packet remaining length {0} exceeds 268435455")]
    PacketTooLarge(usize),
    /// A value too large for a Variable Byte Integer (a Subscription Identifier).
    #[error("value {0} does not fit a variable byte integer")]
    VarIntTooLarge(u32),
    /// The packet type does not exist in this version (AUTH before MQTT 5).
    #[error("{packet} does not exist in {version:?}")]
    NotInVersion {
        /// Packet type.
        packet: PacketType,
        /// Version asked for.
        version: ProtocolVersion,
    },
    /// A PUBLISH with QoS 1 or 2 and no packet identifier (or QoS 0 with one).
    #[error("packet identifier present iff QoS > 0")]
    PacketIdMismatch,
    /// A CONNECT whose protocol version differs from the version asked for.
    #[error("CONNECT for {packet:?} encoded as {version:?}")]
    VersionMismatch {
        /// The CONNECT's own version.
        packet: ProtocolVersion,
        /// Version asked for.
        version: ProtocolVersion,
    },
}
