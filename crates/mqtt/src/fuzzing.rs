//! Harness shared by the cargo-fuzz target and the stable corpus-replay test.

use bytes::BytesMut;

use crate::{DecodeError, MAX_PACKET_SIZE, Packet, ProtocolVersion, decode, encode};

/// The connection state a `mqtt_packet` input starts in, from its first octet: bits 0-1 pick
/// the version (0: before CONNECT, 1: 3.1, 2: 3.1.1, 3: 5.0), bits 2-7 the packet size limit
/// (0: none, n: 16·n² bytes).
pub fn config(octet: u8) -> (Option<ProtocolVersion>, u32) {
    let version = match octet & 0x03 {
        0 => None,
        1 => Some(ProtocolVersion::V3_1),
        2 => Some(ProtocolVersion::V3_1_1),
        _ => Some(ProtocolVersion::V5),
    };
    let n = u32::from(octet >> 2);
    let max = if n == 0 { MAX_PACKET_SIZE } else { 16 * n * n };
    (version, max)
}

/// Decodes the whole stream, tracking the version a CONNECT sets, until it runs out or fails.
pub fn decode_all(
    data: &[u8],
    mut version: Option<ProtocolVersion>,
    max: u32,
) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    loop {
        match decode(&mut buf, version, max) {
            Ok(Some(p)) => {
                if let Packet::Connect(c) = &p {
                    version = Some(c.protocol_version);
                }
                packets.push(p);
            }
            Ok(None) => return (packets, None),
            Err(e) => return (packets, Some(e)),
        }
    }
}

/// The same, fed `chunk` octets at a time as a socket would deliver them.
pub fn decode_chunked(
    data: &[u8],
    mut version: Option<ProtocolVersion>,
    max: u32,
    chunk: usize,
) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&mut buf, version, max) {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        version = Some(c.protocol_version);
                    }
                    packets.push(p);
                }
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

/// `mqtt_packet`: decode arbitrary bytes (never a panic); every packet decoded must re-encode
/// and decode to itself, and feeding the bytes in pieces must give the same packets and error.
pub fn packet_target(data: &[u8]) {
    let Some((&octet, stream)) = data.split_first() else {
        return;
    };
    let (version, max) = config(octet);
    let (packets, error) = decode_all(stream, version, max);

    let mut v = version;
    for p in &packets {
        let wire_version = match p {
            Packet::Connect(c) => c.protocol_version,
            _ => v.expect("a non-CONNECT packet decoded with a version"),
        };
        let mut out = BytesMut::new();
        encode(p, wire_version, &mut out).expect("a decoded packet encodes");
        let again = decode(&mut out, v, MAX_PACKET_SIZE).expect("re-encoded packet decodes");
        assert_eq!(again.as_ref(), Some(p));
        assert!(
            out.is_empty(),
            "re-encoded packet left {} octets",
            out.len()
        );
        if let Packet::Connect(c) = p {
            v = Some(c.protocol_version);
        }
    }

    // One split point from the data, and a byte at a time for short inputs.
    let chunk = 1 + usize::from(octet) % 7;
    assert_eq!(
        decode_chunked(stream, version, max, chunk),
        (packets.clone(), error.clone())
    );
    if stream.len() <= 512 {
        assert_eq!(decode_chunked(stream, version, max, 1), (packets, error));
    }
}
