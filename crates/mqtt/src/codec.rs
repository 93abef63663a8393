//! The fixed header and the two entry points, [`decode`] and [`encode`].

use bytes::{Buf, BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::packet::{self, Packet};
use crate::wire::{Reader, VBI_MAX, VarInt, parse_var_int, put_var_int, var_int_len};
use crate::{PacketType, ProtocolVersion};

/// Largest Remaining Length a Variable Byte Integer can announce (256 MiB - 1).
pub const MAX_REMAINING_LENGTH: u32 = VBI_MAX;

/// Largest possible packet: one type octet, four length octets and the largest body. Pass it as
/// `max_packet_size` for "no limit of our own".
pub const MAX_PACKET_SIZE: u32 = 1 + 4 + VBI_MAX;

/// Checks the first octet against the packet type's required flags (MQTT 5.0 table 2-2) and the
/// connection's state, so that a bad packet is refused before its body arrives.
fn check_first_octet(
    first: u8,
    version: Option<ProtocolVersion>,
) -> Result<PacketType, DecodeError> {
    let t = first >> 4;
    let flags = first & 0x0f;
    let ptype = match PacketType::from_u8(t) {
        Some(PacketType::Auth) if version.is_some_and(|v| !v.is_v5()) => {
            return Err(DecodeError::ReservedPacketType(t));
        }
        Some(p) => p,
        None => return Err(DecodeError::ReservedPacketType(t)),
    };
    match (version, ptype) {
        (None, PacketType::Connect) => {}
        (None, p) => return Err(DecodeError::ExpectedConnect(p)),
        (Some(_), PacketType::Connect) => return Err(DecodeError::UnexpectedConnect),
        _ => {}
    }
    let ok = match ptype {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS);
            }
            if qos == 0 && flags & 0x08 != 0 && version == Some(ProtocolVersion::V5) {
                return Err(DecodeError::DupWithQoS0);
            }
            true
        }
        // MQTT 3.1 used DUP on these too, for a retransmission.
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => {
            flags == 0b0010 || (flags == 0b1010 && version == Some(ProtocolVersion::V3_1))
        }
        _ => flags == 0,
    };
    if !ok {
        return Err(DecodeError::InvalidFlags {
            packet: ptype,
            flags,
        });
    }
    Ok(ptype)
}

/// Decodes one packet from the front of `buf`, mini-redis style: `Ok(None)` if more bytes are
/// needed (nothing is consumed), `Ok(Some(packet))` after consuming exactly that packet.
///
/// `version` is `None` until the CONNECT has been decoded (then only a CONNECT is accepted, and
/// it tells the version), and the CONNECT's version afterwards (then a CONNECT is refused).
/// `max_packet_size` bounds the whole packet (fixed header included, as MQTT 5's Maximum Packet
/// Size): a larger Remaining Length is refused as soon as its octets are in, before the body is
/// waited for or any room is reserved for it. The packet type and flags are checked on the
/// first octet alone. A payload is a zero-copy slice of `buf`'s allocation.
///
/// Every error is fatal for the connection: send the reason code (MQTT 5) or the 3.x return code
/// it maps to, if any, and close. The buffer's content is unspecified afterwards; to learn the
/// protocol version a failing CONNECT asked for, call [`peek_connect_version`] before `decode`.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let ptype = check_first_octet(first, version)?;
    let (remaining, len_octets) = match parse_var_int(&buf[1..]) {
        VarInt::Value(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(None),
        VarInt::Malformed => return Err(DecodeError::MalformedVarInt),
    };
    let total = 1 + len_octets + remaining;
    if total as u64 > u64::from(max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size: total as u64,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(1 + len_octets);
    let mut r = Reader::new(frame.freeze(), ptype);
    let flags = first & 0x0f;
    let v = version.unwrap_or(ProtocolVersion::V5);
    let packet = match ptype {
        PacketType::Connect => Packet::Connect(packet::decode_connect(&mut r)?),
        PacketType::ConnAck => Packet::ConnAck(packet::decode_connack(&mut r, v)?),
        PacketType::Publish => Packet::Publish(packet::decode_publish(&mut r, flags, v)?),
        PacketType::PubAck => Packet::PubAck(packet::decode_ack(&mut r, v)?),
        PacketType::PubRec => Packet::PubRec(packet::decode_ack(&mut r, v)?),
        PacketType::PubRel => Packet::PubRel(packet::decode_ack(&mut r, v)?),
        PacketType::PubComp => Packet::PubComp(packet::decode_ack(&mut r, v)?),
        PacketType::Subscribe => Packet::Subscribe(packet::decode_subscribe(&mut r, v)?),
        PacketType::SubAck => Packet::SubAck(packet::decode_suback(&mut r, v)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(packet::decode_unsubscribe(&mut r, v)?),
        PacketType::UnsubAck => Packet::UnsubAck(packet::decode_unsuback(&mut r, v)?),
        PacketType::PingReq => {
            r.finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            r.finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(packet::decode_disconnect(&mut r, v)?),
        PacketType::Auth => Packet::Auth(packet::decode_auth(&mut r)?),
    };
    Ok(Some(packet))
}

/// The protocol version a CONNECT at the front of `buf` asks for, as far as its first octets are
/// in: lets the caller answer a CONNECT that [`decode`] refuses in the client's own version
/// (an MQTT 5 CONNACK with a reason code, or a 3.x one with a return code). `None` if `buf` does
/// not start with enough of a CONNECT naming a version we speak.
pub fn peek_connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    if buf.first()? >> 4 != PacketType::Connect as u8 {
        return None;
    }
    let VarInt::Value(_, n) = parse_var_int(&buf[1..]) else {
        return None;
    };
    let rest = &buf[1 + n..];
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let name = rest.get(2..2 + name_len)?;
    let level = *rest.get(2 + name_len)?;
    match (name, ProtocolVersion::from_level(level)?) {
        (b"MQIsdp", v @ ProtocolVersion::V3_1) => Some(v),
        (b"MQTT", v @ (ProtocolVersion::V3_1_1 | ProtocolVersion::V5)) => Some(v),
        _ => None,
    }
}

/// Encodes `packet` in `version`'s wire format straight into `out` (after what it holds).
/// On error nothing is written. MQTT 5-only fields are dropped for 3.x (see [`crate::packet`]).
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let sizes = packet.sizes(version)?;
    if sizes.remaining > VBI_MAX as usize {
        return Err(EncodeError::PacketTooLarge(sizes.remaining));
    }
    out.reserve(1 + var_int_len(sizes.remaining) + sizes.remaining);
    out.put_u8(((packet.packet_type() as u8) << 4) | packet.flags());
    put_var_int(out, sizes.remaining);
    #[cfg(debug_assertions)]
    let start = out.len();
    packet.write_body(version, &sizes, out);
    #[cfg(debug_assertions)]
    debug_assert_eq!(
        out.len() - start,
        sizes.remaining,
        "{:?}",
        packet.packet_type()
    );
    Ok(())
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
