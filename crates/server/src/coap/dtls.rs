//! DTLS 1.2 for CoAPS (`[listeners] coaps`, RFC 7252 §9.1): the OpenSSL
//! server context (the `openssl` crate over Debian's libssl) with the
//! broker's `[tls]` certificate, client certificates verified against
//! `[tls] ca_certificate`, pre-shared keys from `[coap] psk_file`, the
//! cookie exchange, and the handshake retransmission timer. The listener
//! loop that runs one session per peer is `super::coaps`.

use anyhow::Context;
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslRef, SslVerifyMode,
    SslVersion,
};
use openssl::x509::X509Name;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// PSK identities and their keys.
pub type PskKeys = HashMap<String, Vec<u8>>;

/// Reads `identity:key` lines (`#` comments; a key of `0x` and hex digits
/// is binary, any other is its UTF-8 text).
pub fn load_psk_file(path: &Path) -> anyhow::Result<PskKeys> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read coap.psk_file {}", path.display()))?;
    let mut keys = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((identity, key)) = line.split_once(':') else {
            anyhow::bail!("{}:{}: expected identity:key", path.display(), n + 1);
        };
        let key = match key.strip_prefix("0x") {
            Some(hex) => decode_hex(hex)
                .with_context(|| format!("{}:{}: bad hex key", path.display(), n + 1))?,
            None => key.as_bytes().to_vec(),
        };
        if key.is_empty() || key.len() > 64 {
            anyhow::bail!("{}:{}: a key has 1 to 64 bytes", path.display(), n + 1);
        }
        keys.insert(identity.to_string(), key);
    }
    Ok(keys)
}

fn decode_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        anyhow::bail!("odd number of hex digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            Ok(u8::from_str_radix(
                s.get(i..i + 2).context("not ASCII")?,
                16,
            )?)
        })
        .collect()
}

/// What the DTLS server context is built from: `[coap] psk_file` and the
/// broker's `[tls]` certificate, CA bundle and client-certificate policy.
pub struct DtlsSetup {
    /// Pre-shared keys (`[coap] psk_file`), if any.
    pub psk: Option<Arc<PskKeys>>,
    /// The server's PEM certificate chain.
    pub certificate: PathBuf,
    /// Its PEM private key.
    pub key: PathBuf,
    /// With `[tls] verify = "verify_peer"`: the CAs client certificates must chain to.
    pub ca_certificate: Option<PathBuf>,
    /// `[tls] fail_if_no_peer_cert`.
    pub fail_if_no_peer_cert: bool,
}

/// The DTLS server context: DTLS 1.2 and later, the broker's certificate
/// (ECDHE suites), PSK suites when keys are configured, client
/// certificates asked for and verified under `verify_peer`, and the
/// cookie exchange (HelloVerifyRequest, RFC 6347 §4.2.1): a ClientHello
/// gets a small stateless cookie back before the server sends its
/// certificate flight, so a spoofed source address cannot make the
/// broker send large flights to a victim. `peer_addr` is where each
/// session keeps its peer's address for the cookie.
pub fn context(setup: &DtlsSetup, peer_addr: Index<Ssl, SocketAddr>) -> anyhow::Result<SslContext> {
    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::COOKIE_EXCHANGE);
    b.set_certificate_chain_file(&setup.certificate)
        .with_context(|| format!("cannot read certificate {}", setup.certificate.display()))?;
    b.set_private_key_file(&setup.key, SslFiletype::PEM)
        .with_context(|| format!("cannot read private key {}", setup.key.display()))?;
    b.check_private_key().with_context(|| {
        format!(
            "the certificate {} and key {} do not match",
            setup.certificate.display(),
            setup.key.display()
        )
    })?;
    b.set_cipher_list(if setup.psk.is_some() {
        "ECDHE+AESGCM:ECDHE+AESCCM:ECDHE+CHACHA20:PSK"
    } else {
        "ECDHE+AESGCM:ECDHE+AESCCM:ECDHE+CHACHA20"
    })?;
    if let Some(ca) = &setup.ca_certificate {
        b.set_ca_file(ca)
            .with_context(|| format!("cannot read CA certificates {}", ca.display()))?;
        let names = X509Name::load_client_ca_file(ca)
            .with_context(|| format!("bad CA certificates {}", ca.display()))?;
        b.set_client_ca_list(names);
        let mut mode = SslVerifyMode::PEER;
        if setup.fail_if_no_peer_cert {
            mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        }
        b.set_verify(mode);
    }
    if let Some(keys) = setup.psk.clone() {
        b.set_psk_server_callback(move |_ssl, identity, out| {
            let key = identity
                .and_then(|i| std::str::from_utf8(i).ok())
                .and_then(|i| keys.get(i));
            match key {
                Some(k) if k.len() <= out.len() => {
                    out[..k.len()].copy_from_slice(k);
                    Ok(k.len())
                }
                // Unknown identity: no key, the handshake fails.
                _ => Ok(0),
            }
        });
    }
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret)?;
    let secret = Arc::new(secret);
    let s = secret.clone();
    b.set_cookie_generate_cb(move |ssl, out| {
        let cookie = cookie(&s[..], ssl.ex_data(peer_addr))?;
        let n = cookie.len().min(out.len());
        out[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(move |ssl, got| {
        cookie(&secret[..], ssl.ex_data(peer_addr))
            .is_ok_and(|want| got.len() == want.len() && openssl::memcmp::eq(got, &want))
    });
    Ok(b.build())
}

/// The cookie of a peer address: HMAC-SHA-256 of the address under a
/// secret drawn at start, so that only the address it was sent to can
/// send it back, and the server keeps nothing per ClientHello to check it.
fn cookie(secret: &[u8], peer: Option<&SocketAddr>) -> Result<Vec<u8>, ErrorStack> {
    let key = PKey::hmac(secret)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    match peer {
        Some(SocketAddr::V4(a)) => {
            signer.update(&a.ip().octets())?;
            signer.update(&a.port().to_be_bytes())?;
        }
        Some(SocketAddr::V6(a)) => {
            signer.update(&a.ip().octets())?;
            signer.update(&a.port().to_be_bytes())?;
        }
        None => {}
    }
    signer.sign_to_vec()
}

/// Lets OpenSSL resend the server's last handshake flight when its DTLS
/// retransmission timer has run out (`DTLSv1_handle_timeout`, a macro
/// the `openssl` crate does not wrap): true if a flight was resent.
pub fn handle_timeout(ssl: &SslRef) -> bool {
    /// `DTLS_CTRL_HANDLE_TIMEOUT` in OpenSSL's `ssl.h`.
    const DTLS_CTRL_HANDLE_TIMEOUT: std::ffi::c_int = 74;
    // SAFETY: `ssl` is a live SSL object borrowed for the call; the
    // control takes no argument pointer and only reads its own timer and
    // writes to the session's BIO (our in-memory pipe).
    let r = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
    r > 0
}
