//! The SCRAM primitives of RFC 5802 §2.2, dispatched over [`ScramHash`].

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::ScramHash;

/// `HMAC(key, parts[0] || parts[1] || ...)`.
pub(crate) fn hmac(hash: ScramHash, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match hash {
        ScramHash::Sha1 => run::<Hmac<Sha1>>(key, parts),
        ScramHash::Sha256 => run::<Hmac<Sha256>>(key, parts),
    }
}

/// `H(data)`.
pub(crate) fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// `Hi(password, salt, iterations)`, which is PBKDF2 with HMAC and a one-block output.
pub(crate) fn salted_password(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0; hash.output_len()];
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
        ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
    }
    out
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the OS has no usable random source; there is no safe way to go on without one (a
/// predictable nonce or salt would silently weaken every exchange).
pub(crate) fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("operating system random source unavailable");
}
