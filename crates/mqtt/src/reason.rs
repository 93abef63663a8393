//! MQTT 5 reason codes (OASIS MQTT 5.0, section 2.4, table 2-6), one line per code with the
//! spec's sentence as doc and the packets that may carry it, and the MQTT 3.x CONNACK return
//! codes (MQTT 3.1.1, section 3.2.2.3).

use crate::PacketType;

/// A one-octet MQTT 5 reason code. Values below 0x80 report success, 0x80 and above failure.
/// MQTT 3.x has no reason codes except in CONNACK and SUBACK, which the codec maps (see
/// [`ReasonCode::to_connack_v3`] and [`ReasonCode::from_connack_v3`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReasonCode(pub u8);

const fn bit(t: PacketType) -> u16 {
    1 << (t as u16)
}
const CONNACK: u16 = bit(PacketType::ConnAck);
const PUBACK: u16 = bit(PacketType::PubAck);
const PUBREC: u16 = bit(PacketType::PubRec);
const PUBREL: u16 = bit(PacketType::PubRel);
const PUBCOMP: u16 = bit(PacketType::PubComp);
const SUBACK: u16 = bit(PacketType::SubAck);
const UNSUBACK: u16 = bit(PacketType::UnsubAck);
const DISCONNECT: u16 = bit(PacketType::Disconnect);
const AUTH: u16 = bit(PacketType::Auth);

macro_rules! reason_codes {
    ($( $(#[doc = $doc:literal])* $name:ident = $value:literal, $text:literal, $packets:expr; )*) => {
        impl ReasonCode {
            $( $(#[doc = $doc])* pub const $name: ReasonCode = ReasonCode($value); )*

            /// The spec's name of the code (for 0x00 the CONNACK/PUBACK one, "Success").
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )*
                    _ => None,
                }
            }

            /// Whether the spec allows this code in a packet of type `packet`.
            pub const fn is_valid_for(self, packet: PacketType) -> bool {
                let mask: u16 = match self.0 {
                    $( $value => $packets, )*
                    _ => 0,
                };
                mask & bit(packet) != 0
            }
        }
    };
}

reason_codes! {
    /// Success (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, AUTH); Normal disconnection
    /// (DISCONNECT): "Close the connection normally. Do not send the Will Message."; Granted QoS 0
    /// (SUBACK): "The subscription is accepted and the maximum QoS sent will be QoS 0."
    SUCCESS = 0x00, "Success", CONNACK | PUBACK | PUBREC | PUBREL | PUBCOMP | UNSUBACK | AUTH | DISCONNECT | SUBACK;
    /// The subscription is accepted and the maximum QoS sent will be QoS 1.
    GRANTED_QOS_1 = 0x01, "Granted QoS 1", SUBACK;
    /// The subscription is accepted and any received QoS will be sent to this subscription.
    GRANTED_QOS_2 = 0x02, "Granted QoS 2", SUBACK;
    /// The Client wishes to disconnect but requires that the Server also publishes its Will Message.
    DISCONNECT_WITH_WILL_MESSAGE = 0x04, "Disconnect with Will Message", DISCONNECT;
    /// The message is accepted but there are no subscribers.
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers", PUBACK | PUBREC;
    /// No matching Topic Filter is being used by the Client.
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed", UNSUBACK;
    /// Continue the authentication with another step.
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication", AUTH;
    /// Initiate a re-authentication.
    RE_AUTHENTICATE = 0x19, "Re-authenticate", AUTH;
    /// The Server does not wish to reveal the reason for the failure, or none of the other Reason Codes apply.
    UNSPECIFIED_ERROR = 0x80, "Unspecified error", CONNACK | PUBACK | PUBREC | SUBACK | UNSUBACK | DISCONNECT;
    /// Data within the packet could not be correctly parsed.
    MALFORMED_PACKET = 0x81, "Malformed Packet", CONNACK | DISCONNECT;
    /// Data in the packet does not conform to this specification.
    PROTOCOL_ERROR = 0x82, "Protocol Error", CONNACK | DISCONNECT;
    /// The packet is valid but is not accepted by this Server (or Client).
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error", CONNACK | PUBACK | PUBREC | SUBACK | UNSUBACK | DISCONNECT;
    /// The Server does not support the version of the MQTT protocol requested by the Client.
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version", CONNACK;
    /// The Client Identifier is a valid string but is not allowed by the Server.
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid", CONNACK;
    /// The Server does not accept the User Name or Password specified by the Client.
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password", CONNACK;
    /// The Client is not authorized to connect (or to perform this action).
    NOT_AUTHORIZED = 0x87, "Not authorized", CONNACK | PUBACK | PUBREC | SUBACK | UNSUBACK | DISCONNECT;
    /// The MQTT Server is not available.
    SERVER_UNAVAILABLE = 0x88, "Server unavailable", CONNACK;
    /// The Server is busy. Try again later.
    SERVER_BUSY = 0x89, "Server busy", CONNACK | DISCONNECT;
    /// This Client has been banned by administrative action. Contact the server administrator.
    BANNED = 0x8A, "Banned", CONNACK;
    /// The Server is shutting down.
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down", DISCONNECT;
    /// The authentication method is not supported or does not match the authentication method currently in use.
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method", CONNACK | DISCONNECT;
    /// The Connection is closed because no packet has been received for 1.5 times the Keepalive time.
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout", DISCONNECT;
    /// Another Connection using the same ClientID has connected causing this Connection to be closed.
    SESSION_TAKEN_OVER = 0x8E, "Session taken over", DISCONNECT;
    /// The Topic Filter is correctly formed but is not allowed for this Client.
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid", SUBACK | UNSUBACK | DISCONNECT;
    /// The Topic Name is not malformed, but is not accepted by this Client or Server.
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid", CONNACK | PUBACK | PUBREC | DISCONNECT;
    /// The Packet Identifier is already in use.
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use", PUBACK | PUBREC | SUBACK | UNSUBACK;
    /// The Packet Identifier is not known.
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found", PUBREL | PUBCOMP;
    /// The Client or Server has received more than Receive Maximum publication for which it has not sent PUBACK or PUBCOMP.
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded", DISCONNECT;
    /// The Client or Server has received a PUBLISH packet containing a Topic Alias which is greater than the Maximum Topic Alias it sent in the CONNECT or CONNACK packet.
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid", DISCONNECT;
    /// The packet size is greater than Maximum Packet Size for this Client or Server.
    PACKET_TOO_LARGE = 0x95, "Packet too large", CONNACK | DISCONNECT;
    /// The received data rate is too high.
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high", DISCONNECT;
    /// An implementation or administrative imposed limit has been exceeded.
    QUOTA_EXCEEDED = 0x97, "Quota exceeded", CONNACK | PUBACK | PUBREC | SUBACK | DISCONNECT;
    /// The Connection is closed due to an administrative action.
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action", DISCONNECT;
    /// The payload format does not match the one specified by the Payload Format Indicator.
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid", CONNACK | PUBACK | PUBREC | DISCONNECT;
    /// The Server does not support retained messages.
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported", CONNACK | DISCONNECT;
    /// The Client specified a QoS greater than the QoS specified in a Maximum QoS in the CONNACK.
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported", CONNACK | DISCONNECT;
    /// The Client should temporarily change its Server.
    USE_ANOTHER_SERVER = 0x9C, "Use another server", CONNACK | DISCONNECT;
    /// The Server is moved and the Client should permanently change its server location.
    SERVER_MOVED = 0x9D, "Server moved", CONNACK | DISCONNECT;
    /// The Server does not support Shared Subscriptions.
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported", SUBACK | DISCONNECT;
    /// The connection rate limit has been exceeded.
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded", CONNACK | DISCONNECT;
    /// The maximum connection time authorized for this connection has been exceeded.
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time", DISCONNECT;
    /// The Server does not support Subscription Identifiers; the subscription is not accepted.
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported", SUBACK | DISCONNECT;
    /// The Server does not support Wildcard Subscriptions; the subscription is not accepted.
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported", SUBACK | DISCONNECT;
}

impl ReasonCode {
    /// 0x00 in DISCONNECT: "Close the connection normally. Do not send the Will Message."
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode(0x00);
    /// 0x00 in SUBACK: "The subscription is accepted and the maximum QoS sent will be QoS 0."
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode(0x00);

    /// Whether the code reports a failure (0x80 and above).
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The SUBACK code granting `qos`.
    pub const fn granted(qos: crate::QoS) -> ReasonCode {
        ReasonCode(qos as u8)
    }

    /// The MQTT 3.x CONNACK return code for this MQTT 5 reason (the spec's pairs for 0x84-0x88,
    /// then the nearest meaning, as EMQX and Mosquitto map them).
    pub const fn to_connack_v3(self) -> u8 {
        match self.0 {
            0x00 => connack_v3::ACCEPTED,
            0x84 => connack_v3::UNACCEPTABLE_PROTOCOL_VERSION,
            0x85 => connack_v3::IDENTIFIER_REJECTED,
            0x86 => connack_v3::BAD_USER_NAME_OR_PASSWORD,
            0x87 | 0x8A | 0x8C => connack_v3::NOT_AUTHORIZED,
            _ => connack_v3::SERVER_UNAVAILABLE,
        }
    }

    /// The MQTT 5 reason for an MQTT 3.x CONNACK return code; `None` for the reserved 6-255.
    pub const fn from_connack_v3(code: u8) -> Option<ReasonCode> {
        Some(match code {
            connack_v3::ACCEPTED => ReasonCode::SUCCESS,
            connack_v3::UNACCEPTABLE_PROTOCOL_VERSION => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            connack_v3::IDENTIFIER_REJECTED => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            connack_v3::SERVER_UNAVAILABLE => ReasonCode::SERVER_UNAVAILABLE,
            connack_v3::BAD_USER_NAME_OR_PASSWORD => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            connack_v3::NOT_AUTHORIZED => ReasonCode::NOT_AUTHORIZED,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{:#04x} {n}", self.0),
            None => write!(f, "{:#04x}", self.0),
        }
    }
}

/// MQTT 3.1 / 3.1.1 CONNACK return codes (3.1.1 table 3.1).
pub mod connack_v3 {
    /// Connection accepted.
    pub const ACCEPTED: u8 = 0x00;
    /// The Server does not support the level of the MQTT protocol requested by the Client.
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    /// The Client identifier is correct UTF-8 but not allowed by the Server.
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    /// The Network Connection has been made but the MQTT service is unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    /// The data in the user name or password is malformed.
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x04;
    /// The Client is not authorized to connect.
    pub const NOT_AUTHORIZED: u8 = 0x05;
}

/// The MQTT 3.1.1 SUBACK failure return code (MQTT 3.1 has none).
pub const SUBACK_FAILURE_V3: u8 = 0x80;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lookups() {
        assert_eq!(ReasonCode(0x95).name(), Some("Packet too large"));
        assert_eq!(ReasonCode(0x03).name(), None);
        assert!(ReasonCode::SUCCESS.is_valid_for(PacketType::Auth));
        assert!(!ReasonCode::CONTINUE_AUTHENTICATION.is_valid_for(PacketType::Disconnect));
        assert!(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_valid_for(PacketType::PubRel));
        assert!(!ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_valid_for(PacketType::PubAck));
        assert_eq!(ReasonCode(0x87).to_string(), "0x87 Not authorized");
    }

    #[test]
    fn connack_v3_round_trip() {
        for c in 0..=5u8 {
            assert_eq!(ReasonCode::from_connack_v3(c).unwrap().to_connack_v3(), c);
        }
        assert_eq!(ReasonCode::from_connack_v3(6), None);
        assert_eq!(
            ReasonCode::BANNED.to_connack_v3(),
            connack_v3::NOT_AUTHORIZED
        );
        assert_eq!(
            ReasonCode::SERVER_BUSY.to_connack_v3(),
            connack_v3::SERVER_UNAVAILABLE
        );
    }
}
