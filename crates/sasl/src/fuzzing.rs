//! Harness shared by the cargo-fuzz target `sasl_scram` and the stable corpus-replay test, so
//! every committed fuzz input is also a regression test on stable Rust.
//!
//! An input is one configuration octet, then client-first-message, then optionally a NUL and
//! client-final-message. The configuration octet's bits: 0 hash (SHA-1 / SHA-256), 1 `-PLUS`,
//! 2 offer `tls-exporter`, 3 offer `tls-server-end-point`, 4 unknown user (fake credentials).
//! Real credentials are the RFC 5802 / RFC 7677 example user (password `pencil`) with the RFC's
//! salt and server nonce, so the RFC exchanges succeed when replayed.

use std::sync::OnceLock;

use crate::{ChannelBindings, SaslError, ScramCredentials, ScramHash, ScramServer};

/// The `tls-exporter` data offered when configuration bit 2 is set.
pub const TLS_EXPORTER_DATA: [u8; 32] = [0xe1; 32];
/// The `tls-server-end-point` data offered when configuration bit 3 is set.
pub const TLS_SERVER_END_POINT_DATA: [u8; 32] = [0x5e; 32];
/// The password of the real user the harness knows.
pub const PASSWORD: &str = "pencil";

/// The exchange an input's configuration octet describes: hash, `-PLUS`, offered bindings and
/// whether the user is unknown.
pub fn config(octet: u8) -> (ScramHash, bool, ChannelBindings, bool) {
    let hash = if octet & 1 == 0 {
        ScramHash::Sha1
    } else {
        ScramHash::Sha256
    };
    let bindings = ChannelBindings {
        tls_exporter: (octet & 4 != 0).then(|| TLS_EXPORTER_DATA.to_vec()),
        tls_server_end_point: (octet & 8 != 0).then(|| TLS_SERVER_END_POINT_DATA.to_vec()),
    };
    (hash, octet & 2 != 0, bindings, octet & 16 != 0)
}

/// The server nonce part of the RFC example for `hash`.
pub fn server_nonce(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "3rfcNHYJY1ZVvWVs7j",
        ScramHash::Sha256 => "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    }
}

/// The RFC example user's stored keys for `hash` (derived once per process: 4096 iterations).
pub fn credentials(hash: ScramHash) -> ScramCredentials {
    static SHA1: OnceLock<ScramCredentials> = OnceLock::new();
    static SHA256: OnceLock<ScramCredentials> = OnceLock::new();
    let (cell, salt): (_, &[u8]) = match hash {
        // base64 "QSXCR+Q6sek8bf92" and "W22ZaJ0SNY7soEsUEjb6gQ==".
        ScramHash::Sha1 => (&SHA1, b"\x41\x25\xc2\x47\xe4\x3a\xb1\xe9\x3c\x6d\xff\x76"),
        ScramHash::Sha256 => (
            &SHA256,
            b"\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36\xfa\x81",
        ),
    };
    cell.get_or_init(|| {
        ScramCredentials::derive(hash, PASSWORD, salt, crate::DEFAULT_ITERATIONS)
            .expect("the RFC password is valid")
    })
    .clone()
}

/// Runs one input through a server and checks the state machine's invariants: errors end the
/// exchange, out-of-order calls fail without panicking, fake credentials never verify.
pub fn scram_target(data: &[u8]) {
    let Some((&octet, rest)) = data.split_first() else {
        return;
    };
    let (hash, plus, bindings, unknown_user) = config(octet);
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let mut server = ScramServer::with_nonce(hash, plus, bindings, server_nonce(hash).to_owned());
    let client_first = match server.client_first(first) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.condition();
            assert!(server.server_first(credentials(hash)).is_empty());
            assert_eq!(
                server.client_final(b"c=biws,r=x,p=AA=="),
                Err(SaslError::OutOfOrder)
            );
            return;
        }
    };
    assert!(!client_first.username.is_empty() && !client_first.username.contains('\0'));
    let credentials = if unknown_user {
        ScramCredentials::fake(hash, &client_first.username, b"fuzz secret")
    } else {
        credentials(hash)
    };
    let server_first = server.server_first(credentials);
    assert!(server_first.starts_with(b"r="));
    assert_eq!(server.client_first(first), Err(SaslError::OutOfOrder));
    let Some(last) = last else {
        return;
    };
    match server.client_final(last) {
        Ok(server_final) => {
            assert!(!unknown_user, "fake credentials verified");
            assert!(server_final.starts_with(b"v="));
        }
        Err(e) => {
            let _ = e.condition();
        }
    }
    assert_eq!(server.client_final(last), Err(SaslError::OutOfOrder));
    assert!(
        server
            .server_first(ScramCredentials::fake(hash, "x", b""))
            .is_empty()
    );
}
