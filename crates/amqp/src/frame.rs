//! Frames: the envelope (type, channel, size, payload, 0xCE) and its decoder and encoders.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::FrameError;
use crate::method::Method;
use crate::properties::BasicProperties;

/// Frame type of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Frame type of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Frame type of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Frame type of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Smallest frame_max a peer may negotiate (the spec's value; RabbitMQ 4 requires 8192).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Octets a frame adds around its payload: type, channel, size and the end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// Class id of `basic`, the only class with content.
pub const BASIC_CLASS: u16 = 60;

const HEADER_LEN: usize = 7;

/// One decoded frame.
// Properties stay inline: boxing them would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel number (0 for connection methods).
        channel: u16,
        /// The decoded method.
        method: Method,
    },
    /// A content header frame.
    Header {
        /// Channel number.
        channel: u16,
        /// Content class (60 for basic).
        class_id: u16,
        /// Total size of the body frames that follow.
        body_size: u64,
        /// The content properties (left at their default for classes other than basic).
        properties: BasicProperties,
    },
    /// A content body frame; the payload is a zero-copy slice of the input buffer.
    Body {
        /// Channel number.
        channel: u16,
        /// Body octets.
        payload: Bytes,
    },
    /// A heartbeat frame (valid only on channel 0).
    Heartbeat {
        /// Channel number.
        channel: u16,
    },
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }

    /// The frame type octet.
    pub fn frame_type(&self) -> u8 {
        match self {
            Frame::Method { .. } => FRAME_METHOD,
            Frame::Header { .. } => FRAME_HEADER,
            Frame::Body { .. } => FRAME_BODY,
            Frame::Heartbeat { .. } => FRAME_HEARTBEAT,
        }
    }

    /// Appends the frame (unsplit, whatever the body size) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Method { channel, method } => encode_method(*channel, method, out),
            Frame::Header {
                channel,
                class_id,
                body_size,
                properties,
            } => encode_header(*channel, *class_id, *body_size, properties, out),
            Frame::Body { channel, payload } => {
                let at = begin(out, FRAME_BODY, *channel);
                out.put_slice(payload);
                finish(out, at);
            }
            Frame::Heartbeat { channel } => {
                out.put_u8(FRAME_HEARTBEAT);
                out.put_u16(*channel);
                out.put_u32(0);
                out.put_u8(FRAME_END);
            }
        }
    }
}

/// Decodes one frame from the front of `buf`, removing it.
///
/// Returns `Ok(None)` when more input is needed. The announced size is checked against
/// `frame_max` before waiting for the payload, so a peer cannot make us buffer more than one
/// frame_max. Like RabbitMQ, a payload of up to `frame_max` octets is tolerated (clients often
/// forget the 8 octets of overhead). `frame_max == 0` means no limit. After an error for which
/// [`FrameError::is_fatal`] is false, the bad frame has been consumed and decoding may go on.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let frame_type = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    if frame_max != 0 && size > frame_max {
        return Err(FrameError::TooLarge {
            frame_type,
            channel,
            size,
            max: frame_max.saturating_sub(FRAME_OVERHEAD as u32),
        });
    }
    let total = HEADER_LEN + size as usize + 1;
    if buf.len() < total {
        // Make room for the rest of the frame, but only when a frame_max bounds it: an
        // unbounded announcement must not turn into an allocation.
        if frame_max != 0 {
            buf.reserve(total - buf.len());
        }
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        buf.advance(total);
        return Err(FrameError::BadFrameEnd {
            frame_type,
            channel,
            found: end,
        });
    }
    buf.advance(HEADER_LEN);
    let mut payload = buf.split_to(size as usize).freeze();
    buf.advance(1);
    let malformed = FrameError::Malformed {
        frame_type,
        channel,
        size,
    };
    match frame_type {
        FRAME_METHOD => {
            if payload.len() < 4 {
                return Err(malformed);
            }
            let class_id = u16::from_be_bytes([payload[0], payload[1]]);
            let method_id = u16::from_be_bytes([payload[2], payload[3]]);
            match Method::decode(payload) {
                Ok(method) => Ok(Some(Frame::Method { channel, method })),
                Err(source) => Err(FrameError::Method {
                    channel,
                    class_id,
                    method_id,
                    source,
                }),
            }
        }
        FRAME_HEADER => {
            if payload.len() < 14 {
                return Err(malformed);
            }
            let class_id = payload.get_u16();
            let _weight = payload.get_u16();
            let body_size = payload.get_u64();
            let properties = if class_id == BASIC_CLASS {
                BasicProperties::decode(payload).map_err(|source| FrameError::Properties {
                    channel,
                    class_id,
                    source,
                })?
            } else {
                BasicProperties::default()
            };
            Ok(Some(Frame::Header {
                channel,
                class_id,
                body_size,
                properties,
            }))
        }
        FRAME_BODY => Ok(Some(Frame::Body { channel, payload })),
        FRAME_HEARTBEAT => {
            if !payload.is_empty() {
                return Err(malformed);
            }
            Ok(Some(Frame::Heartbeat { channel }))
        }
        _ => Err(FrameError::UnknownFrameType {
            frame_type,
            channel,
        }),
    }
}

/// Starts a frame; returns the position of the size field to patch.
fn begin(out: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    out.put_u8(frame_type);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

fn finish(out: &mut BytesMut, at: usize) {
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Appends a method frame, writing the method straight into `out`.
pub fn encode_method(channel: u16, method: &Method, out: &mut BytesMut) {
    let at = begin(out, FRAME_METHOD, channel);
    method.encode(out);
    finish(out, at);
}

/// Appends a content header frame (weight 0).
pub fn encode_header(
    channel: u16,
    class_id: u16,
    body_size: u64,
    properties: &BasicProperties,
    out: &mut BytesMut,
) {
    let at = begin(out, FRAME_HEADER, channel);
    out.put_u16(class_id);
    out.put_u16(0);
    out.put_u64(body_size);
    properties.encode(out);
    finish(out, at);
}

/// Appends `body` as body frames of at most `frame_max - 8` payload octets each
/// (`frame_max == 0`: one frame). An empty body produces no frame, as the spec requires.
pub fn encode_body(channel: u16, body: &[u8], frame_max: u32, out: &mut BytesMut) {
    if body.is_empty() {
        return;
    }
    let chunk = if frame_max == 0 {
        body.len()
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    };
    let frames = body.len().div_ceil(chunk);
    out.reserve(body.len() + frames * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(part.len() as u32);
        out.put_slice(part);
        out.put_u8(FRAME_END);
    }
}

/// Appends a heartbeat frame (always on channel 0).
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeError;

    #[test]
    fn golden_publish_frame_and_partial_input() {
        let wire: &[u8] =
            b"\x01\x00\x01\x00\x00\x00\x0e\x00\x3c\x00\x28\x00\x00\x00\x05hello\x00\xce";
        for cut in 0..wire.len() {
            let mut b = BytesMut::from(&wire[..cut]);
            assert_eq!(decode_frame(&mut b, 4096), Ok(None));
            assert_eq!(b.len(), cut);
        }
        let mut b = BytesMut::from(wire);
        let f = decode_frame(&mut b, 4096).unwrap().unwrap();
        assert!(b.is_empty());
        let mut out = BytesMut::new();
        f.encode(&mut out);
        assert_eq!(&out[..], wire);
    }

    #[test]
    fn body_is_zero_copy() {
        let mut b = BytesMut::new();
        encode_body(3, b"abc", 4096, &mut b);
        let start = b.as_ptr() as usize;
        let Some(Frame::Body {
            channel: 3,
            payload,
        }) = decode_frame(&mut b, 4096).unwrap()
        else {
            panic!()
        };
        assert_eq!(&payload[..], b"abc");
        assert_eq!(payload.as_ptr() as usize, start + 7);
    }

    #[test]
    fn too_large_before_payload_arrives() {
        let mut b = BytesMut::from(&b"\x01\x00\x00\x00\x01\x00\x01"[..]); // 65537 announced
        let e = decode_frame(&mut b, 4096).unwrap_err();
        assert_eq!(
            e,
            FrameError::TooLarge {
                frame_type: 1,
                channel: 0,
                size: 65537,
                max: 4088
            }
        );
        assert_eq!(e.reply_code(), 501);
        // RabbitMQ's fudge: a payload of frame_max octets is still accepted.
        let mut b = BytesMut::new();
        encode_body(1, &[0u8; 4096], 0, &mut b);
        assert!(matches!(
            decode_frame(&mut b, 4096),
            Ok(Some(Frame::Body { .. }))
        ));
    }

    #[test]
    fn bad_end_unknown_type_heartbeat() {
        let mut b = BytesMut::from(&b"\x08\x00\x00\x00\x00\x00\x00\xcd"[..]);
        assert!(matches!(
            decode_frame(&mut b, 0),
            Err(FrameError::BadFrameEnd { found: 0xcd, .. })
        ));
        let mut b = BytesMut::from(
            &b"\x09\x00\x00\x00\x00\x00\x00\xce\x08\x00\x00\x00\x00\x00\x00\xce"[..],
        );
        assert_eq!(
            decode_frame(&mut b, 0),
            Err(FrameError::UnknownFrameType {
                frame_type: 9,
                channel: 0
            })
        );
        assert_eq!(
            decode_frame(&mut b, 0),
            Ok(Some(Frame::Heartbeat { channel: 0 }))
        );
        let mut b = BytesMut::from(&b"\x08\x00\x00\x00\x00\x00\x01\x00\xce"[..]);
        assert!(matches!(
            decode_frame(&mut b, 0),
            Err(FrameError::Malformed { .. })
        ));
        let mut out = BytesMut::new();
        encode_heartbeat(&mut out);
        assert_eq!(&out[..], b"\x08\x00\x00\x00\x00\x00\x00\xce");
    }

    #[test]
    fn method_errors_carry_ids() {
        let mut b = BytesMut::from(&b"\x01\x00\x05\x00\x00\x00\x04\x00\x3c\x00\x28\xce"[..]);
        let e = decode_frame(&mut b, 0).unwrap_err();
        assert_eq!(
            e,
            FrameError::Method {
                channel: 5,
                class_id: 60,
                method_id: 40,
                source: DecodeError::Truncated
            }
        );
        assert_eq!(e.class_method(), (60, 40));
        assert!(!e.is_fatal());
    }

    #[test]
    fn body_split_and_header() {
        let mut b = BytesMut::new();
        encode_body(1, &[1u8; 10], 12, &mut b); // 4 octets per frame
        let mut parts = Vec::new();
        while let Some(Frame::Body { payload, .. }) = decode_frame(&mut b, 12).unwrap() {
            parts.push(payload.len());
        }
        assert_eq!(parts, vec![4, 4, 2]);
        let mut b = BytesMut::new();
        let p = BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        encode_header(1, 60, 10, &p, &mut b);
        assert_eq!(&b[..], b"\x02\x00\x01\x00\x00\x00\x0f\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0a\x10\x00\x02\xce");
        assert_eq!(
            decode_frame(&mut b, 0).unwrap(),
            Some(Frame::Header {
                channel: 1,
                class_id: 60,
                body_size: 10,
                properties: p
            })
        );
    }
}
