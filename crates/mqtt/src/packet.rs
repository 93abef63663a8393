//! The fifteen MQTT control packets, with every field of MQTT 3.1, 3.1.1 and 5.0, and their
//! variable header and payload codecs (the fixed header is in `codec`).
//!
//! Fields that exist only in MQTT 5 (properties, reason codes of acknowledgements, DISCONNECT
//! and AUTH) are dropped by the 3.x encoder and left at their defaults by the 3.x decoder.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::reason::{ReasonCode, SUBACK_FAILURE_V3};
use crate::topic::{self, TopicError};
use crate::wire::{Reader, field_len, put_field, var_int_len};
use crate::{PacketType, ProtocolVersion, QoS};

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client request to connect to Server.
    Connect(Connect),
    /// Connect acknowledgment.
    ConnAck(ConnAck),
    /// Publish message.
    Publish(Publish),
    /// Publish acknowledgment (QoS 1).
    PubAck(PubAck),
    /// Publish received (QoS 2 delivery part 1).
    PubRec(PubRec),
    /// Publish release (QoS 2 delivery part 2).
    PubRel(PubRel),
    /// Publish complete (QoS 2 delivery part 3).
    PubComp(PubComp),
    /// Subscribe request.
    Subscribe(Subscribe),
    /// Subscribe acknowledgment.
    SubAck(SubAck),
    /// Unsubscribe request.
    Unsubscribe(Unsubscribe),
    /// Unsubscribe acknowledgment.
    UnsubAck(UnsubAck),
    /// PING request.
    PingReq,
    /// PING response.
    PingResp,
    /// Disconnect notification (MQTT 5: from either side, with a reason).
    Disconnect(Disconnect),
    /// Authentication exchange (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT (MQTT 5.0 section 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level.
    pub protocol_version: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// Client Identifier (may be empty: 3.1.1 with clean session, 5.0 always).
    pub client_id: String,
    /// The Will Message, if the Will Flag is set.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<String>,
    /// Password (Binary Data; a 3.x password needs a user name).
    pub password: Option<Bytes>,
    /// MQTT 5 properties.
    pub properties: ConnectProperties,
}

/// The Will Message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will Topic (a validated Topic Name, UTF-8).
    pub topic: Bytes,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// MQTT 5 will properties.
    pub properties: WillProperties,
}

/// CONNACK (MQTT 5.0 section 3.2). In 3.x the reason code travels as the return code
/// ([`ReasonCode::to_connack_v3`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: ConnAckProperties,
}

/// PUBLISH (MQTT 5.0 section 3.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// DUP: this might be a re-delivery.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name, validated UTF-8 without wildcards (empty in MQTT 5 when a Topic Alias stands
    /// for it).
    pub topic: Bytes,
    /// Packet Identifier, present iff QoS > 0.
    pub packet_id: Option<u16>,
    /// MQTT 5 properties.
    pub properties: PublishProperties,
    /// Application Message, a zero-copy slice of the received buffer.
    pub payload: Bytes,
}

impl Publish {
    /// The topic as a `&str` (`None` only for a hand-built, non-UTF-8 topic).
    pub fn topic_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.topic).ok()
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0 sections 3.4-3.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubAckLike {
    /// Packet Identifier of the PUBLISH (or PUBREL) acknowledged.
    pub packet_id: u16,
    /// Reason Code (MQTT 5; 3.x sends none and decodes as Success).
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// PUBACK: response to a QoS 1 PUBLISH.
pub type PubAck = PubAckLike;
/// PUBREC: response to a QoS 2 PUBLISH.
pub type PubRec = PubAckLike;
/// PUBREL: response to a PUBREC.
pub type PubRel = PubAckLike;
/// PUBCOMP: response to a PUBREL.
pub type PubComp = PubAckLike;

/// SUBSCRIBE (MQTT 5.0 section 3.8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// Packet Identifier (non-zero).
    pub packet_id: u16,
    /// At least one subscription.
    pub filters: Vec<Subscription>,
    /// MQTT 5 properties.
    pub properties: SubscribeProperties,
}

/// One Topic Filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Topic Filter (validated; may be a `$share/{group}/{filter}`).
    pub filter: String,
    /// Subscription Options.
    pub options: SubscriptionOptions,
}

/// Subscription Options (MQTT 5.0 section 3.8.3.1); 3.x has only the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not send the client's own publications back to it.
    pub no_local: bool,
    /// Retain As Published: keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

/// Whether retained messages are sent when a subscription is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription does not currently exist.
    SendAtNewSubscribe = 1,
    /// 2: do not send retained messages at the time of the subscribe.
    DoNotSend = 2,
}

/// SUBACK (MQTT 5.0 section 3.9); one reason code per filter, in order. 3.x carries the granted
/// QoS (0-2) or 0x80 for failure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// Reason codes, one per Topic Filter.
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// UNSUBSCRIBE (MQTT 5.0 section 3.10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    /// Packet Identifier (non-zero).
    pub packet_id: u16,
    /// At least one Topic Filter.
    pub filters: Vec<String>,
    /// MQTT 5 properties.
    pub properties: UnsubscribeProperties,
}

/// UNSUBACK (MQTT 5.0 section 3.11); 3.x has no reason codes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// MQTT 5 reason codes, one per Topic Filter (empty in 3.x).
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// DISCONNECT (MQTT 5.0 section 3.14).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Disconnect Reason Code (3.x: always Normal disconnection).
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

/// AUTH (MQTT 5.0 section 3.15).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Authenticate Reason Code: Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties (Authentication Method is required unless the packet is empty).
    pub properties: AuthProperties,
}

// ---------------------------------------------------------------------------------------------
// Decoding. `flags` are the low four bits of the first octet, already checked by `codec`.

fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    let id = r.u16()?;
    if id == 0 {
        return Err(DecodeError::ZeroPacketId(r.packet));
    }
    Ok(id)
}

fn reason(r: &mut Reader) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8()?);
    if !code.is_valid_for(r.packet) {
        return Err(DecodeError::InvalidReasonCode {
            packet: r.packet,
            code: code.0,
        });
    }
    Ok(code)
}

fn topic_name(topic: &[u8]) -> Result<(), DecodeError> {
    let s =
        std::str::from_utf8(topic).map_err(|_| DecodeError::InvalidUtf8(PacketType::Publish))?;
    topic::validate_topic_name(s).map_err(DecodeError::InvalidTopicName)
}

fn check_payload_format(indicator: Option<bool>, payload: &[u8]) -> Result<(), DecodeError> {
    if indicator == Some(true) && std::str::from_utf8(payload).is_err() {
        return Err(DecodeError::PayloadFormatInvalid);
    }
    Ok(())
}

pub(crate) fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol_version = match (&name[..], level) {
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp" | b"MQTT", _) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let v5 = protocol_version.is_v5();
    let flags = r.u8()?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if flags & 0x01 != 0 || will_qos == 3 || (!will_flag && (will_qos != 0 || will_retain)) {
        return Err(DecodeError::InvalidConnectFlags(flags));
    }
    if !v5 && has_password && !has_username {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let clean_start = flags & 0x02 != 0;
    let keep_alive = r.u16()?;
    let properties = if v5 {
        ConnectProperties::decode(r)?
    } else {
        ConnectProperties::default()
    };
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    let client_id = r.string()?;
    if client_id.is_empty() {
        match protocol_version {
            ProtocolVersion::V3_1 => return Err(DecodeError::ClientIdRejected),
            ProtocolVersion::V3_1_1 if !clean_start => return Err(DecodeError::ClientIdRejected),
            _ => {}
        }
    }
    let will = if will_flag {
        let properties = if v5 {
            WillProperties::decode(r)?
        } else {
            WillProperties::default()
        };
        let topic = r.utf8_bytes()?;
        topic_name(&topic)?;
        let payload = r.binary()?;
        check_payload_format(properties.payload_format_indicator, &payload)?;
        Some(Will {
            topic,
            payload,
            qos: QoS::from_u8(will_qos).unwrap_or_default(),
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol_version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

pub(crate) fn decode_connack(r: &mut Reader, v: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    let code = r.u8()?;
    let reason_code = if v.is_v5() {
        let c = ReasonCode(code);
        if !c.is_valid_for(PacketType::ConnAck) {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code,
            });
        }
        c
    } else {
        ReasonCode::from_connack_v3(code).ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?
    };
    let session_present = flags & 0x01 != 0;
    if flags & 0xfe != 0 || (session_present && reason_code != ReasonCode::SUCCESS) {
        return Err(DecodeError::InvalidConnAckFlags(flags));
    }
    let properties = if v.is_v5() {
        ConnAckProperties::decode(r)?
    } else {
        ConnAckProperties::default()
    };
    r.finish()?;
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

pub(crate) fn decode_publish(
    r: &mut Reader,
    flags: u8,
    v: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    // QoS 3 and DUP on QoS 0 were refused with the fixed header.
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
    let topic = r.utf8_bytes()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = if v.is_v5() {
        PublishProperties::decode(r)?
    } else {
        PublishProperties::default()
    };
    if topic.is_empty() {
        if !v.is_v5() {
            return Err(DecodeError::InvalidTopicName(TopicError::Empty));
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
    } else {
        topic_name(&topic)?;
    }
    let payload = r.rest();
    check_payload_format(properties.payload_format_indicator, &payload)?;
    Ok(Publish {
        dup: flags & 0x08 != 0,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload,
    })
}

pub(crate) fn decode_ack(r: &mut Reader, v: ProtocolVersion) -> Result<PubAckLike, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = PubAckLike {
        packet_id,
        ..Default::default()
    };
    if v.is_v5() {
        if !r.is_empty() {
            ack.reason_code = reason(r)?;
        }
        if !r.is_empty() {
            ack.properties = AckProperties::decode(r)?;
        }
    }
    r.finish()?;
    Ok(ack)
}

pub(crate) fn decode_subscribe(
    r: &mut Reader,
    v: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v.is_v5() {
        SubscribeProperties::decode(r)?
    } else {
        SubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let o = r.u8()?;
        let reserved = if v.is_v5() { 0xc0 } else { 0xfc };
        if o & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(o));
        }
        let qos = QoS::from_u8(o & 0x03).ok_or(DecodeError::InvalidQoS)?;
        let retain_handling = match (o >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtNewSubscribe,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        let options = SubscriptionOptions {
            qos,
            no_local: o & 0x04 != 0,
            retain_as_published: o & 0x08 != 0,
            retain_handling,
        };
        topic::validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        if options.no_local && filter.starts_with(topic::SHARE_PREFIX) {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        filters.push(Subscription { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn decode_suback(r: &mut Reader, v: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v.is_v5() {
        AckProperties::decode(r)?
    } else {
        AckProperties::default()
    };
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        if v.is_v5() {
            reason_codes.push(reason(r)?);
        } else {
            let code = r.u8()?;
            if code > 2 && code != SUBACK_FAILURE_V3 {
                return Err(DecodeError::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code,
                });
            }
            reason_codes.push(ReasonCode(code));
        }
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

pub(crate) fn decode_unsubscribe(
    r: &mut Reader,
    v: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v.is_v5() {
        UnsubscribeProperties::decode(r)?
    } else {
        UnsubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        topic::validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn decode_unsuback(r: &mut Reader, v: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = UnsubAck {
        packet_id,
        ..Default::default()
    };
    if v.is_v5() {
        ack.properties = AckProperties::decode(r)?;
        while !r.is_empty() {
            ack.reason_codes.push(reason(r)?);
        }
    }
    r.finish()?;
    Ok(ack)
}

pub(crate) fn decode_disconnect(
    r: &mut Reader,
    v: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    if v.is_v5() {
        if !r.is_empty() {
            d.reason_code = reason(r)?;
        }
        if !r.is_empty() {
            d.properties = DisconnectProperties::decode(r)?;
        }
    }
    r.finish()?;
    Ok(d)
}

pub(crate) fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    if !r.is_empty() {
        a.reason_code = reason(r)?;
    }
    if !r.is_empty() {
        a.properties = AuthProperties::decode(r)?;
    }
    if a.properties.authentication_data.is_some() && a.properties.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    r.finish()?;
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// Encoding: `body_len` sizes the variable header and payload (checking every length), then
// `write_body` writes them; the fixed header goes first, from `codec`.

/// Sizes computed once per encode: the remaining length and the property blocks' contents.
#[derive(Default)]
pub(crate) struct Sizes {
    pub(crate) remaining: usize,
    props: usize,
    will_props: usize,
}

fn block(content: usize) -> usize {
    var_int_len(content) + content
}

fn opt_field(b: Option<&[u8]>) -> Result<usize, EncodeError> {
    b.map_or(Ok(0), field_len)
}

impl Packet {
    /// The low four bits of the first octet.
    pub(crate) fn flags(&self) -> u8 {
        match self {
            Packet::Publish(p) => {
                (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
            }
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        }
    }

    pub(crate) fn sizes(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
        let v5 = v.is_v5();
        let mut s = Sizes::default();
        s.remaining = match self {
            Packet::Connect(c) => {
                if c.protocol_version != v {
                    return Err(EncodeError::VersionMismatch {
                        packet: c.protocol_version,
                        version: v,
                    });
                }
                let mut n = field_len(v.protocol_name().as_bytes())? + 1 + 1 + 2;
                if v5 {
                    s.props = c.properties.content_len()?;
                    n += block(s.props);
                }
                n += field_len(c.client_id.as_bytes())?;
                if let Some(w) = &c.will {
                    if v5 {
                        s.will_props = w.properties.content_len()?;
                        n += block(s.will_props);
                    }
                    n += field_len(&w.topic)? + field_len(&w.payload)?;
                }
                n + opt_field(c.username.as_deref().map(str::as_bytes))?
                    + opt_field(c.password.as_deref())?
            }
            Packet::ConnAck(c) => {
                let mut n = 2;
                if v5 {
                    s.props = c.properties.content_len()?;
                    n += block(s.props);
                }
                n
            }
            Packet::Publish(p) => {
                if p.packet_id.is_some() != (p.qos != QoS::AtMostOnce) {
                    return Err(EncodeError::PacketIdMismatch);
                }
                let mut n = field_len(&p.topic)? + if p.packet_id.is_some() { 2 } else { 0 };
                if v5 {
                    s.props = p.properties.content_len()?;
                    n += block(s.props);
                }
                n + p.payload.len()
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                if !v5 {
                    2
                } else {
                    s.props = a.properties.content_len()?;
                    match (a.reason_code == ReasonCode::SUCCESS, s.props) {
                        (true, 0) => 2,
                        (false, 0) => 3,
                        _ => 3 + block(s.props),
                    }
                }
            }
            Packet::Subscribe(sub) => {
                let mut n = 2;
                if v5 {
                    s.props = sub.properties.content_len()?;
                    n += block(s.props);
                }
                for f in &sub.filters {
                    n += field_len(f.filter.as_bytes())? + 1;
                }
                n
            }
            Packet::SubAck(a) => {
                let mut n = 2 + a.reason_codes.len();
                if v5 {
                    s.props = a.properties.content_len()?;
                    n += block(s.props);
                }
                n
            }
            Packet::Unsubscribe(u) => {
                let mut n = 2;
                if v5 {
                    s.props = u.properties.content_len()?;
                    n += block(s.props);
                }
                for f in &u.filters {
                    n += field_len(f.as_bytes())?;
                }
                n
            }
            Packet::UnsubAck(a) => {
                if v5 {
                    s.props = a.properties.content_len()?;
                    2 + block(s.props) + a.reason_codes.len()
                } else {
                    2
                }
            }
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => {
                if !v5 {
                    0
                } else {
                    s.props = d.properties.content_len()?;
                    match (d.reason_code == ReasonCode::SUCCESS, s.props) {
                        (true, 0) => 0,
                        (false, 0) => 1,
                        _ => 1 + block(s.props),
                    }
                }
            }
            Packet::Auth(a) => {
                if !v5 {
                    return Err(EncodeError::NotInVersion {
                        packet: PacketType::Auth,
                        version: v,
                    });
                }
                s.props = a.properties.content_len()?;
                if a.reason_code == ReasonCode::SUCCESS && s.props == 0 {
                    0
                } else {
                    1 + block(s.props)
                }
            }
        };
        Ok(s)
    }

    pub(crate) fn write_body(&self, v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
        let v5 = v.is_v5();
        match self {
            Packet::Connect(c) => {
                put_field(out, v.protocol_name().as_bytes());
                out.put_u8(v.level());
                let mut flags = u8::from(c.clean_start) << 1;
                if let Some(w) = &c.will {
                    flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
                }
                flags |= u8::from(c.password.is_some()) << 6;
                flags |= u8::from(c.username.is_some()) << 7;
                out.put_u8(flags);
                out.put_u16(c.keep_alive);
                if v5 {
                    c.properties.write(s.props, out);
                }
                put_field(out, c.client_id.as_bytes());
                if let Some(w) = &c.will {
                    if v5 {
                        w.properties.write(s.will_props, out);
                    }
                    put_field(out, &w.topic);
                    put_field(out, &w.payload);
                }
                if let Some(u) = &c.username {
                    put_field(out, u.as_bytes());
                }
                if let Some(p) = &c.password {
                    put_field(out, p);
                }
            }
            Packet::ConnAck(c) => {
                out.put_u8(u8::from(c.session_present));
                if v5 {
                    out.put_u8(c.reason_code.0);
                    c.properties.write(s.props, out);
                } else {
                    out.put_u8(c.reason_code.to_connack_v3());
                }
            }
            Packet::Publish(p) => {
                put_field(out, &p.topic);
                if let Some(id) = p.packet_id {
                    out.put_u16(id);
                }
                if v5 {
                    p.properties.write(s.props, out);
                }
                out.put_slice(&p.payload);
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                out.put_u16(a.packet_id);
                if v5 && (a.reason_code != ReasonCode::SUCCESS || s.props != 0) {
                    out.put_u8(a.reason_code.0);
                    if s.props != 0 {
                        a.properties.write(s.props, out);
                    }
                }
            }
            Packet::Subscribe(sub) => {
                out.put_u16(sub.packet_id);
                if v5 {
                    sub.properties.write(s.props, out);
                }
                for f in &sub.filters {
                    put_field(out, f.filter.as_bytes());
                    let o = &f.options;
                    let mut b = o.qos as u8;
                    if v5 {
                        b |= (u8::from(o.no_local) << 2)
                            | (u8::from(o.retain_as_published) << 3)
                            | ((o.retain_handling as u8) << 4);
                    }
                    out.put_u8(b);
                }
            }
            Packet::SubAck(a) => {
                out.put_u16(a.packet_id);
                if v5 {
                    a.properties.write(s.props, out);
                    for c in &a.reason_codes {
                        out.put_u8(c.0);
                    }
                } else {
                    for c in &a.reason_codes {
                        out.put_u8(if c.0 <= 2 { c.0 } else { SUBACK_FAILURE_V3 });
                    }
                }
            }
            Packet::Unsubscribe(u) => {
                out.put_u16(u.packet_id);
                if v5 {
                    u.properties.write(s.props, out);
                }
                for f in &u.filters {
                    put_field(out, f.as_bytes());
                }
            }
            Packet::UnsubAck(a) => {
                out.put_u16(a.packet_id);
                if v5 {
                    a.properties.write(s.props, out);
                    for c in &a.reason_codes {
                        out.put_u8(c.0);
                    }
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => {
                if v5 && (d.reason_code != ReasonCode::SUCCESS || s.props != 0) {
                    out.put_u8(d.reason_code.0);
                    if s.props != 0 {
                        d.properties.write(s.props, out);
                    }
                }
            }
            Packet::Auth(a) => {
                if a.reason_code != ReasonCode::SUCCESS || s.props != 0 {
                    out.put_u8(a.reason_code.0);
                    a.properties.write(s.props, out);
                }
            }
        }
    }
}
