//! MQTT 5 properties (MQTT 5.0 section 2.2.2), one struct per packet type holding exactly the
//! properties the spec allows there. Each may appear once, except User Property (an ordered list,
//! duplicates allowed) and, in PUBLISH, Subscription Identifier. A property not allowed in the
//! packet is a Malformed Packet, a repeated one a Protocol Error. Fields are in ascending
//! identifier order, the order the encoder writes them (User Properties last).
//!
//! MQTT 3.x has no properties: the encoder drops them and the decoder leaves them empty.

use bytes::{BufMut, Bytes, BytesMut};

use crate::QoS;
use crate::error::{DecodeError, EncodeError};
use crate::topic;
use crate::wire::{Reader, VBI_MAX, field_len, put_field, put_var_int, var_int_len};

/// User Property name/value pairs, in the order received; a name may repeat.
pub type UserProperties = Vec<(String, String)>;

/// Property identifiers (MQTT 5.0 table 2-4).
pub mod id {
    /// Payload Format Indicator (byte; PUBLISH, will).
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// Message Expiry Interval (four-byte integer; PUBLISH, will).
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// Content Type (UTF-8 string; PUBLISH, will).
    pub const CONTENT_TYPE: u8 = 0x03;
    /// Response Topic (UTF-8 string; PUBLISH, will).
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Correlation Data (binary data; PUBLISH, will).
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Subscription Identifier (variable byte integer; PUBLISH, SUBSCRIBE).
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// Session Expiry Interval (four-byte integer; CONNECT, CONNACK, DISCONNECT).
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// Assigned Client Identifier (UTF-8 string; CONNACK).
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// Server Keep Alive (two-byte integer; CONNACK).
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// Authentication Method (UTF-8 string; CONNECT, CONNACK, AUTH).
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    /// Authentication Data (binary data; CONNECT, CONNACK, AUTH).
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    /// Request Problem Information (byte; CONNECT).
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// Will Delay Interval (four-byte integer; will).
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// Request Response Information (byte; CONNECT).
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// Response Information (UTF-8 string; CONNACK).
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    /// Server Reference (UTF-8 string; CONNACK, DISCONNECT).
    pub const SERVER_REFERENCE: u8 = 0x1C;
    /// Reason String (UTF-8 string; CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
    /// DISCONNECT, AUTH).
    pub const REASON_STRING: u8 = 0x1F;
    /// Receive Maximum (two-byte integer; CONNECT, CONNACK).
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Topic Alias Maximum (two-byte integer; CONNECT, CONNACK).
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Topic Alias (two-byte integer; PUBLISH).
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Maximum QoS (byte; CONNACK).
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// Retain Available (byte; CONNACK).
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    /// User Property (UTF-8 string pair; every packet with properties).
    pub const USER_PROPERTY: u8 = 0x26;
    /// Maximum Packet Size (four-byte integer; CONNECT, CONNACK).
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// Wildcard Subscription Available (byte; CONNACK).
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// Subscription Identifier Available (byte; CONNACK).
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// Shared Subscription Available (byte; CONNACK).
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// A property value type; the wire form may depend on the identifier (a `u32` is a four-byte
/// integer except for Subscription Identifier, a Variable Byte Integer).
trait Value: Sized {
    fn read(id: u8, r: &mut Reader) -> Result<Self, DecodeError>;
    /// Bytes after the identifier.
    fn wire_len(&self, id: u8) -> Result<usize, EncodeError>;
    fn write(&self, id: u8, out: &mut BytesMut);
}

impl Value for u32 {
    fn read(id: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        if id == id::SUBSCRIPTION_IDENTIFIER {
            let v = r.var_int()?;
            if v == 0 {
                return Err(DecodeError::InvalidPropertyValue(id));
            }
            return Ok(v);
        }
        let v = r.u32()?;
        if v == 0 && id == id::MAXIMUM_PACKET_SIZE {
            return Err(DecodeError::InvalidPropertyValue(id));
        }
        Ok(v)
    }
    fn wire_len(&self, id: u8) -> Result<usize, EncodeError> {
        if id == id::SUBSCRIPTION_IDENTIFIER {
            if *self > VBI_MAX {
                return Err(EncodeError::VarIntTooLarge(*self));
            }
            Ok(var_int_len(*self as usize))
        } else {
            Ok(4)
        }
    }
    fn write(&self, id: u8, out: &mut BytesMut) {
        if id == id::SUBSCRIPTION_IDENTIFIER {
            put_var_int(out, *self as usize);
        } else {
            out.put_u32(*self);
        }
    }
}

impl Value for u16 {
    fn read(id: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        let v = r.u16()?;
        match (id, v) {
            (id::TOPIC_ALIAS, 0) => Err(DecodeError::TopicAliasZero),
            (id::RECEIVE_MAXIMUM, 0) => Err(DecodeError::InvalidPropertyValue(id)),
            _ => Ok(v),
        }
    }
    fn wire_len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write(&self, _: u8, out: &mut BytesMut) {
        out.put_u16(*self);
    }
}

impl Value for bool {
    fn read(id: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn wire_len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(&self, _: u8, out: &mut BytesMut) {
        out.put_u8(u8::from(*self));
    }
}

/// Maximum QoS: 0 or 1 (absent means 2).
impl Value for QoS {
    fn read(id: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn wire_len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(&self, _: u8, out: &mut BytesMut) {
        out.put_u8(*self as u8);
    }
}

impl Value for String {
    fn read(id: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        let s = r.string()?;
        if id == id::RESPONSE_TOPIC && topic::validate_topic_name(&s).is_err() {
            return Err(DecodeError::InvalidPropertyValue(id));
        }
        Ok(s)
    }
    fn wire_len(&self, _: u8) -> Result<usize, EncodeError> {
        field_len(self.as_bytes())
    }
    fn write(&self, _: u8, out: &mut BytesMut) {
        put_field(out, self.as_bytes());
    }
}

impl Value for Bytes {
    fn read(_: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        r.binary()
    }
    fn wire_len(&self, _: u8) -> Result<usize, EncodeError> {
        field_len(self)
    }
    fn write(&self, _: u8, out: &mut BytesMut) {
        put_field(out, self);
    }
}

/// Where a property lands: `Option` for once-only properties, `Vec` for repeatable ones.
trait Slot {
    fn read(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError>;
    fn wire_len(&self, id: u8) -> Result<usize, EncodeError>;
    fn write(&self, id: u8, out: &mut BytesMut);
}

impl<T: Value> Slot for Option<T> {
    fn read(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        if self.is_some() {
            return Err(DecodeError::DuplicateProperty(id));
        }
        *self = Some(T::read(id, r)?);
        Ok(())
    }
    fn wire_len(&self, id: u8) -> Result<usize, EncodeError> {
        match self {
            Some(v) => Ok(1 + v.wire_len(id)?),
            None => Ok(0),
        }
    }
    fn write(&self, id: u8, out: &mut BytesMut) {
        if let Some(v) = self {
            out.put_u8(id);
            v.write(id, out);
        }
    }
}

impl<T: Value> Slot for Vec<T> {
    fn read(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        self.push(T::read(id, r)?);
        Ok(())
    }
    fn wire_len(&self, id: u8) -> Result<usize, EncodeError> {
        self.iter().map(|v| Ok(1 + v.wire_len(id)?)).sum()
    }
    fn write(&self, id: u8, out: &mut BytesMut) {
        for v in self {
            out.put_u8(id);
            v.write(id, out);
        }
    }
}

fn user_properties_len(props: &UserProperties) -> Result<usize, EncodeError> {
    props
        .iter()
        .map(|(k, v)| Ok(1 + field_len(k.as_bytes())? + field_len(v.as_bytes())?))
        .sum()
}

fn write_user_properties(props: &UserProperties, out: &mut BytesMut) {
    for (k, v) in props {
        out.put_u8(id::USER_PROPERTY);
        put_field(out, k.as_bytes());
        put_field(out, v.as_bytes());
    }
}

macro_rules! properties {
    ($(
        $(#[$sm:meta])*
        pub struct $name:ident {
            $( $(#[$fm:meta])* pub $field:ident : $ty:ty = $id:ident, )*
        }
    )*) => {$(
        $(#[$sm])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
            /// User Property (0x26): name/value pairs in order, duplicates allowed.
            pub user_properties: UserProperties,
        }

        impl $name {
            /// Whether no property is set (the encoder may then omit the block where allowed).
            pub fn is_empty(&self) -> bool {
                *self == Self::default()
            }

            /// Reads a property block: its Variable Byte Integer length, then the properties.
            pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                let len = r.var_int()? as usize;
                let mut p = r.sub(len)?;
                let mut out = Self::default();
                while !p.is_empty() {
                    let pid = p.var_int()?;
                    match pid {
                        $( x if x == u32::from(id::$id) => Slot::read(&mut out.$field, id::$id, &mut p)?, )*
                        x if x == u32::from(id::USER_PROPERTY) => {
                            let k = p.string()?;
                            let v = p.string()?;
                            out.user_properties.push((k, v));
                        }
                        _ => return Err(DecodeError::UnexpectedProperty { packet: p.packet, id: pid }),
                    }
                }
                Ok(out)
            }

            /// Length of the properties, without the length prefix.
            pub(crate) fn content_len(&self) -> Result<usize, EncodeError> {
                Ok(0 $( + Slot::wire_len(&self.$field, id::$id)? )* + user_properties_len(&self.user_properties)?)
            }

            /// Writes the block: the length prefix (`content_len`, computed by the caller
            /// with [`Self::content_len`]) and the properties.
            pub(crate) fn write(&self, content_len: usize, out: &mut BytesMut) {
                put_var_int(out, content_len);
                $( Slot::write(&self.$field, id::$id, out); )*
                write_user_properties(&self.user_properties, out);
            }
        }
    )*};
}

properties! {
    /// CONNECT properties (MQTT 5.0 section 3.1.2.11).
    pub struct ConnectProperties {
        /// Session Expiry Interval in seconds (absent: 0, the session ends with the connection).
        pub session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Authentication Method for extended authentication.
        pub authentication_method: Option<String> = AUTHENTICATION_METHOD,
        /// Authentication Data (only with a method).
        pub authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
        /// Request Problem Information (absent: true).
        pub request_problem_information: Option<bool> = REQUEST_PROBLEM_INFORMATION,
        /// Request Response Information.
        pub request_response_information: Option<bool> = REQUEST_RESPONSE_INFORMATION,
        /// Receive Maximum: QoS 1/2 publications the client will process concurrently (non-zero).
        pub receive_maximum: Option<u16> = RECEIVE_MAXIMUM,
        /// Topic Alias Maximum the client will accept from the server.
        pub topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Maximum Packet Size the client will accept (non-zero).
        pub maximum_packet_size: Option<u32> = MAXIMUM_PACKET_SIZE,
    }

    /// Will properties, in the CONNECT payload (MQTT 5.0 section 3.1.3.2).
    pub struct WillProperties {
        /// Payload Format Indicator: `Some(true)` means the payload is UTF-8.
        pub payload_format_indicator: Option<bool> = PAYLOAD_FORMAT_INDICATOR,
        /// Message Expiry Interval in seconds.
        pub message_expiry_interval: Option<u32> = MESSAGE_EXPIRY_INTERVAL,
        /// Content Type.
        pub content_type: Option<String> = CONTENT_TYPE,
        /// Response Topic (a Topic Name).
        pub response_topic: Option<String> = RESPONSE_TOPIC,
        /// Correlation Data.
        pub correlation_data: Option<Bytes> = CORRELATION_DATA,
        /// Will Delay Interval in seconds.
        pub will_delay_interval: Option<u32> = WILL_DELAY_INTERVAL,
    }

    /// CONNACK properties (MQTT 5.0 section 3.2.2.3).
    pub struct ConnAckProperties {
        /// Session Expiry Interval the server uses instead of the client's.
        pub session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Assigned Client Identifier, when the client sent an empty one.
        pub assigned_client_identifier: Option<String> = ASSIGNED_CLIENT_IDENTIFIER,
        /// Server Keep Alive, overriding the client's.
        pub server_keep_alive: Option<u16> = SERVER_KEEP_ALIVE,
        /// Authentication Method.
        pub authentication_method: Option<String> = AUTHENTICATION_METHOD,
        /// Authentication Data.
        pub authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
        /// Response Information.
        pub response_information: Option<String> = RESPONSE_INFORMATION,
        /// Server Reference.
        pub server_reference: Option<String> = SERVER_REFERENCE,
        /// Reason String.
        pub reason_string: Option<String> = REASON_STRING,
        /// Receive Maximum of the server (non-zero).
        pub receive_maximum: Option<u16> = RECEIVE_MAXIMUM,
        /// Topic Alias Maximum the server accepts.
        pub topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Maximum QoS the server supports, 0 or 1 (absent: 2).
        pub maximum_qos: Option<QoS> = MAXIMUM_QOS,
        /// Retain Available (absent: true).
        pub retain_available: Option<bool> = RETAIN_AVAILABLE,
        /// Maximum Packet Size the server accepts (non-zero).
        pub maximum_packet_size: Option<u32> = MAXIMUM_PACKET_SIZE,
        /// Wildcard Subscription Available (absent: true).
        pub wildcard_subscription_available: Option<bool> = WILDCARD_SUBSCRIPTION_AVAILABLE,
        /// Subscription Identifiers Available (absent: true).
        pub subscription_identifiers_available: Option<bool> = SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        /// Shared Subscription Available (absent: true).
        pub shared_subscription_available: Option<bool> = SHARED_SUBSCRIPTION_AVAILABLE,
    }

    /// PUBLISH properties (MQTT 5.0 section 3.3.2.3).
    pub struct PublishProperties {
        /// Payload Format Indicator: `Some(true)` means the payload is UTF-8 (the decoder checks).
        pub payload_format_indicator: Option<bool> = PAYLOAD_FORMAT_INDICATOR,
        /// Message Expiry Interval in seconds.
        pub message_expiry_interval: Option<u32> = MESSAGE_EXPIRY_INTERVAL,
        /// Content Type.
        pub content_type: Option<String> = CONTENT_TYPE,
        /// Response Topic (a Topic Name).
        pub response_topic: Option<String> = RESPONSE_TOPIC,
        /// Correlation Data.
        pub correlation_data: Option<Bytes> = CORRELATION_DATA,
        /// Subscription Identifiers of the matching subscriptions (server to client), each
        /// 1..=268,435,455; may repeat.
        pub subscription_identifiers: Vec<u32> = SUBSCRIPTION_IDENTIFIER,
        /// Topic Alias (non-zero).
        pub topic_alias: Option<u16> = TOPIC_ALIAS,
    }

    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    pub struct AckProperties {
        /// Reason String.
        pub reason_string: Option<String> = REASON_STRING,
    }

    /// SUBSCRIBE properties (MQTT 5.0 section 3.8.2.1).
    pub struct SubscribeProperties {
        /// Subscription Identifier, 1..=268,435,455 (once only in SUBSCRIBE).
        pub subscription_identifier: Option<u32> = SUBSCRIPTION_IDENTIFIER,
    }

    /// UNSUBSCRIBE properties: only User Property.
    pub struct UnsubscribeProperties {
    }

    /// DISCONNECT properties (MQTT 5.0 section 3.14.2.2).
    pub struct DisconnectProperties {
        /// Session Expiry Interval (client to server only).
        pub session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Server Reference.
        pub server_reference: Option<String> = SERVER_REFERENCE,
        /// Reason String.
        pub reason_string: Option<String> = REASON_STRING,
    }

    /// AUTH properties (MQTT 5.0 section 3.15.2.2).
    pub struct AuthProperties {
        /// Authentication Method.
        pub authentication_method: Option<String> = AUTHENTICATION_METHOD,
        /// Authentication Data.
        pub authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
        /// Reason String.
        pub reason_string: Option<String> = REASON_STRING,
    }
}
