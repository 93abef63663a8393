//! Server Dialback keys (XEP-0220), derived as XEP-0185 recommends.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The dialback key for a stream: `HMAC-SHA256(hex(SHA256(secret)),
/// "<receiving> <originating> <stream id>")` in lower-case hex (XEP-0185 §3;
/// its example uses the hex form of the hashed secret as the HMAC key). The
/// originating server sends it in `<db:result/>`; the authoritative server
/// (the originating one again, asked over another stream with
/// `<db:verify/>`) recomputes it from the same three values.
pub fn dialback_key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let hashed = hex(&Sha256::digest(secret));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(hashed.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(receiving.as_bytes());
    mac.update(b" ");
    mac.update(originating.as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

/// Whether `key` is the one [`dialback_key`] derives, compared without
/// early exit.
pub fn verify_key(
    secret: &[u8],
    receiving: &str,
    originating: &str,
    stream_id: &str,
    key: &str,
) -> bool {
    let expected = dialback_key(secret, receiving, originating, stream_id);
    let (a, b) = (expected.as_bytes(), key.trim().as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
