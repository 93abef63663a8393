//! Sans-IO Kafka: the wire codec for the APIs Tributary serves (requests decoded at the
//! version their header names, responses encoded at it), record batches v2 with the four
//! compression codecs, and the consumer-group coordinator as a state machine fed the time.
//!
//! - [`decode_frame`] takes one size-prefixed request off the front of a buffer, checking the
//!   size against the caller's limit before it waits for (or allocates) the body.
//! - [`decode_request`] reads the header and body into a [`Request`]; an API or version we do
//!   not serve becomes [`Request::Unsupported`] so the server can answer it (never a silent
//!   drop). Every array length is checked against the bytes that remain before allocation.
//! - [`records`] decodes and encodes record batches (CRC-32C checked; decompression bounded).
//! - [`group`] is the group coordinator: generations, member ids, joins answered once every
//!   member rejoined, the leader's assignment handed out at SyncGroup, session timeouts.
//!
//! Nothing here does IO or reads a clock.
#![warn(missing_docs)]

pub mod compression;
mod error;
pub mod fuzzing;
pub mod group;
pub mod protocol;
pub mod records;
pub mod request;
pub mod response;
pub mod wire;

use bytes::{Buf, Bytes, BytesMut};

pub use error::DecodeError;
pub use protocol::{RequestHeader, api, code};
pub use request::{Request, decode_request};

/// The default largest request: Kafka's `socket.request.max.bytes` is 100 MiB; we take less.
pub const DEFAULT_MAX_REQUEST: usize = 64 << 20;

/// Takes one request (without its size prefix) off the front of `buf`, or `None` until it is
/// complete. A size over `max` is an error as soon as the four size bytes are in.
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(DecodeError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(DecodeError::TooLarge { size, max });
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn frames_are_bounded_before_the_body_arrives() {
        let mut b = BytesMut::new();
        b.put_i32(1 << 30);
        assert_eq!(
            decode_frame(&mut b, DEFAULT_MAX_REQUEST),
            Err(DecodeError::TooLarge {
                size: 1 << 30,
                max: DEFAULT_MAX_REQUEST
            })
        );
        let mut b = BytesMut::new();
        b.put_i32(-5);
        assert_eq!(decode_frame(&mut b, 10), Err(DecodeError::NegativeSize(-5)));
        let mut b = BytesMut::from(&[0, 0, 0, 2, 1][..]);
        assert_eq!(decode_frame(&mut b, 10), Ok(None));
        b.put_u8(2);
        assert_eq!(
            decode_frame(&mut b, 10),
            Ok(Some(Bytes::from_static(&[1, 2])))
        );
    }

    #[test]
    fn an_unknown_version_is_answerable() {
        let mut b = BytesMut::new();
        RequestHeader {
            api_key: api::API_VERSIONS,
            api_version: 99,
            correlation_id: 7,
            client_id: Some("x".into()),
        }
        .encode(&mut b);
        b.put_slice(b"\x00garbage that is never read");
        let (h, r) = decode_request(b.freeze()).unwrap();
        assert_eq!((h.correlation_id, r), (7, Request::Unsupported));
    }

    #[test]
    fn an_api_versions_v3_request_decodes() {
        // librdkafka's first request: header v2 (tagged fields), compact strings.
        let mut b = BytesMut::new();
        RequestHeader {
            api_key: api::API_VERSIONS,
            api_version: 3,
            correlation_id: 1,
            client_id: Some("rdkafka".into()),
        }
        .encode(&mut b);
        crate::wire::put_string(&mut b, "librdkafka", true);
        crate::wire::put_string(&mut b, "2.6.0", true);
        crate::wire::put_empty_tags(&mut b);
        let (h, r) = decode_request(b.freeze()).unwrap();
        assert_eq!((h.api_version, r), (3, Request::ApiVersions));
        let mut out = BytesMut::new();
        response::api_versions(3, code::NONE, &mut out);
        let mut rd = wire::Reader::new(out.freeze());
        assert_eq!(rd.i16().unwrap(), 0);
        assert_eq!(
            rd.uvarint().unwrap() as usize,
            protocol::SUPPORTED.len() + 1
        );
    }
}
