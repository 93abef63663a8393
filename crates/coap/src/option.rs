//! Option numbers (RFC 7252 §12.2, RFC 7641, RFC 7959, RFC 7967) and the
//! uint value format.

use bytes::Bytes;

/// If-Match.
pub const IF_MATCH: u16 = 1;
/// Uri-Host.
pub const URI_HOST: u16 = 3;
/// ETag.
pub const ETAG: u16 = 4;
/// If-None-Match.
pub const IF_NONE_MATCH: u16 = 5;
/// Observe (RFC 7641): 0 registers, 1 deregisters; in notifications a sequence number.
pub const OBSERVE: u16 = 6;
/// Uri-Port.
pub const URI_PORT: u16 = 7;
/// Location-Path.
pub const LOCATION_PATH: u16 = 8;
/// Uri-Path: one option per path segment.
pub const URI_PATH: u16 = 11;
/// Content-Format.
pub const CONTENT_FORMAT: u16 = 12;
/// Max-Age.
pub const MAX_AGE: u16 = 14;
/// Uri-Query: one option per `key=value`.
pub const URI_QUERY: u16 = 15;
/// Accept.
pub const ACCEPT: u16 = 17;
/// Location-Query.
pub const LOCATION_QUERY: u16 = 20;
/// Block2 (RFC 7959): the block of a response.
pub const BLOCK2: u16 = 23;
/// Block1 (RFC 7959): the block of a request.
pub const BLOCK1: u16 = 27;
/// Size2 (RFC 7959): the size of the whole response body.
pub const SIZE2: u16 = 28;
/// Proxy-Uri.
pub const PROXY_URI: u16 = 35;
/// Proxy-Scheme.
pub const PROXY_SCHEME: u16 = 39;
/// Size1: the size of the request body (or, in 4.13, the largest accepted).
pub const SIZE1: u16 = 60;
/// No-Response (RFC 7967).
pub const NO_RESPONSE: u16 = 258;

/// Options a server that is no proxy understands; an unknown critical
/// (odd-numbered) option is answered 4.02 Bad Option.
pub const KNOWN: &[u16] = &[
    IF_MATCH,
    URI_HOST,
    ETAG,
    IF_NONE_MATCH,
    OBSERVE,
    URI_PORT,
    URI_PATH,
    CONTENT_FORMAT,
    MAX_AGE,
    URI_QUERY,
    ACCEPT,
    BLOCK2,
    BLOCK1,
    SIZE2,
    SIZE1,
    NO_RESPONSE,
];

/// Whether an option is critical (RFC 7252 §5.4.1: odd numbers).
pub fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// The first unknown critical option of a request, if any.
pub fn unknown_critical(options: &[crate::CoapOption]) -> Option<u16> {
    options
        .iter()
        .map(|o| o.number)
        .find(|&n| is_critical(n) && !KNOWN.contains(&n))
}

/// An unsigned integer in its shortest big-endian form (0 is empty).
pub fn uint_value(v: u32) -> Bytes {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    Bytes::copy_from_slice(&bytes[skip..])
}

/// Reads an unsigned integer of 0 to 4 bytes.
pub fn parse_uint(v: &[u8]) -> Option<u32> {
    if v.len() > 4 {
        return None;
    }
    Some(v.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uints_are_shortest() {
        assert!(uint_value(0).is_empty());
        assert_eq!(&uint_value(50)[..], &[50]);
        assert_eq!(&uint_value(0x1_0000)[..], &[1, 0, 0]);
        assert_eq!(parse_uint(&[1, 0, 0]), Some(0x1_0000));
        assert_eq!(parse_uint(&[]), Some(0));
        assert_eq!(parse_uint(&[1, 2, 3, 4, 5]), None);
        assert!(is_critical(URI_PATH) && !is_critical(ETAG));
    }
}
