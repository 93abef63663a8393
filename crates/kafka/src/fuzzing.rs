//! Harness shared by the `kafka_request` cargo-fuzz target and the stable corpus-replay test.

use bytes::BytesMut;

use crate::request::Request;
use crate::{decode_frame, decode_request, records};

/// Largest request the harness accepts (small, so the fuzzer explores limits).
pub const MAX_REQUEST: usize = 1 << 20;

/// Feeds `data` as a stream of size-prefixed requests: each decodes or fails with an error,
/// never a panic; the record batches of Produce requests are decoded too, with a small
/// decompression limit. Returns the requests decoded.
pub fn request_target(data: &[u8]) -> Vec<Request> {
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = decode_frame(&mut buf, MAX_REQUEST) {
        let Ok((_, req)) = decode_request(frame) else {
            break;
        };
        if let Request::Produce(p) = &req {
            for (_, parts) in &p.topics {
                for part in parts {
                    if let Some(r) = &part.records {
                        let _ = records::decode_batches(r.clone(), 1 << 20);
                    }
                }
            }
        }
        out.push(req);
    }
    out
}
