//! Sans-IO MQTT: the packet codec for MQTT 3.1 (`MQIsdp`, level 3), 3.1.1 (level 4) and 5.0
//! (level 5).
//!
//! [`decode`] turns the bytes at the front of a `BytesMut` into one [`Packet`], checking the
//! announced size against the caller's limit before waiting for (or allocating) the body, and
//! enforcing the specification's MUST rules on what it reads; [`encode`] writes a packet straight
//! into the caller's buffer. Every [`DecodeError`] knows the MQTT 5 reason code to close with
//! ([`DecodeError::reason_code`]) and, where MQTT 3.x defines one, the CONNACK return code
//! ([`DecodeError::connack_v3`]). [`topic`] validates topic names and filters and maps them onto
//! AMQP topic-exchange routing keys. Nothing here does IO or reads a clock.
//!
//! ## Choices where the specifications leave room
//!
//! - `max_packet_size` bounds the whole packet, fixed header included (MQTT 5's Maximum Packet
//!   Size definition), and is checked as soon as the Remaining Length is in, so a 256 MiB prefix
//!   costs five octets, not an allocation.
//! - Non-minimal Variable Byte Integers are accepted (the 3.1.1 text and Mosquitto allow them);
//!   a fifth length octet is a Malformed Packet. The encoder always writes the minimal form.
//! - DUP on a QoS 0 PUBLISH is refused in MQTT 5 only; MQTT 3.1 may set DUP on PUBREL,
//!   SUBSCRIBE and UNSUBSCRIBE retransmissions (its spec did). A Mosquitto bridge's protocol
//!   level (0x83/0x84, "try private") is refused as an unsupported level.
//! - Reason codes are checked against the spec's table for the packet type: an unknown one is a
//!   Protocol Error (as Mosquitto). An invalid topic filter closes with 0x8F Topic Filter
//!   invalid, a wildcard in a PUBLISH or will topic with 0x90 Topic Name invalid.
//! - `$share/{group}/{filter}` is parsed and validated in every version (EMQX and Mosquitto
//!   accept shared subscriptions from 3.1.1 clients too).
//! - A Payload Format Indicator of 1 is checked against the payload as plain UTF-8 (0x99).
//! - The encoder writes properties in ascending identifier order, User Properties last, and
//!   omits what MQTT 5 lets it omit (a Success reason with no properties in acknowledgements,
//!   DISCONNECT and AUTH); it drops MQTT 5-only fields for 3.x.
#![warn(missing_docs)]

mod codec;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;
mod wire;

pub use codec::{MAX_PACKET_SIZE, MAX_REMAINING_LENGTH, decode, encode, peek_connect_version};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubAck, PubComp, PubRec, PubRel, Publish,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
};
pub use reason::ReasonCode;

/// The protocol level a client asked for in its CONNECT; it fixes the wire format of every later
/// packet on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (IBM's MQIsdp): protocol name `"MQIsdp"`, level 3.
    V3_1,
    /// MQTT 3.1.1 (OASIS 2014): protocol name `"MQTT"`, level 4.
    V3_1_1,
    /// MQTT 5.0 (OASIS 2019): protocol name `"MQTT"`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The Protocol Level octet of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The Protocol Name string of CONNECT.
    pub const fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "MQIsdp",
            ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => "MQTT",
        }
    }

    /// The version with this protocol level, if we speak it.
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(ProtocolVersion::V3_1),
            4 => Some(ProtocolVersion::V3_1_1),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }

    /// Whether this is MQTT 5 (properties, reason codes, AUTH).
    pub const fn is_v5(self) -> bool {
        matches!(self, ProtocolVersion::V5)
    }
}

/// Quality of service of a PUBLISH, a will or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// At most once delivery.
    #[default]
    AtMostOnce = 0,
    /// At least once delivery.
    AtLeastOnce = 1,
    /// Exactly once delivery.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with this two-bit value; 3 is not a QoS ("A PUBLISH Packet MUST NOT have both QoS
    /// bits set to 1").
    pub const fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The control packet type, the high nibble of a packet's first octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Client request to connect to Server.
    Connect = 1,
    /// Connect acknowledgment.
    ConnAck = 2,
    /// Publish message.
    Publish = 3,
    /// Publish acknowledgment (QoS 1).
    PubAck = 4,
    /// Publish received (QoS 2 delivery part 1).
    PubRec = 5,
    /// Publish release (QoS 2 delivery part 2).
    PubRel = 6,
    /// Publish complete (QoS 2 delivery part 3).
    PubComp = 7,
    /// Subscribe request.
    Subscribe = 8,
    /// Subscribe acknowledgment.
    SubAck = 9,
    /// Unsubscribe request.
    Unsubscribe = 10,
    /// Unsubscribe acknowledgment.
    UnsubAck = 11,
    /// PING request.
    PingReq = 12,
    /// PING response.
    PingResp = 13,
    /// Disconnect notification.
    Disconnect = 14,
    /// Authentication exchange (MQTT 5 only).
    Auth = 15,
}

impl PacketType {
    /// The type with this four-bit value; 0 is reserved (and so is 15 before MQTT 5, which the
    /// decoder checks).
    pub const fn from_u8(v: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match v {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The spec's upper-case name, e.g. `"PUBREL"`.
    pub const fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }
}

impl std::fmt::Display for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
