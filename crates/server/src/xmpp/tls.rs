//! TLS for XMPP: the configured certificate, or a self-signed one generated
//! at first start for the configured domain (kept in the data directory so
//! clients can pin it), and the channel-binding data SCRAM-PLUS needs.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tributary_sasl::ChannelBindings;

/// What a listener needs to speak TLS.
#[derive(Clone)]
pub struct TlsSetup {
    /// Accepts handshakes.
    pub acceptor: TlsAcceptor,
    /// `tls-server-end-point` channel binding: SHA-256 of our leaf
    /// certificate (RFC 5929 §4.1).
    end_point: Vec<u8>,
}

impl TlsSetup {
    /// Loads the configured certificate, or generates and stores a
    /// self-signed one for `domain` under `data_dir/xmpp/`.
    pub fn load_or_generate(
        certificate: &str,
        key: &str,
        domain: &str,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let (cert_path, key_path) = if certificate.is_empty() {
            let dir = data_dir.join("xmpp");
            let cert_path = dir.join(format!("{domain}.crt"));
            let key_path = dir.join(format!("{domain}.key"));
            if !cert_path.exists() || !key_path.exists() {
                generate(domain, &dir, &cert_path, &key_path)?;
            }
            (cert_path, key_path)
        } else {
            (certificate.into(), key.into())
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .with_context(|| format!("cannot read certificate {}", cert_path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad certificate {}", cert_path.display()))?;
        let leaf = certs
            .first()
            .with_context(|| format!("no certificate in {}", cert_path.display()))?;
        let end_point = Sha256::digest(leaf.as_ref()).to_vec();
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .with_context(|| format!("cannot read private key {}", key_path.display()))?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the XMPP certificate and key do not match")?;
        Ok(TlsSetup {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            end_point,
        })
    }

    /// Channel-binding data of an established connection.
    pub fn bindings<S>(&self, stream: &TlsStream<S>) -> ChannelBindings {
        let (_, connection) = stream.get_ref();
        let exporter = connection
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok();
        ChannelBindings {
            tls_exporter: exporter,
            tls_server_end_point: Some(self.end_point.clone()),
        }
    }
}

fn generate(domain: &str, dir: &Path, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let certified = rcgen::generate_simple_self_signed(vec![domain.to_string()])
        .context("cannot generate a self-signed certificate")?;
    let fingerprint = Sha256::digest(certified.cert.der().as_ref());
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    let hex: Vec<String> = fingerprint.iter().map(|b| format!("{b:02X}")).collect();
    tracing::warn!(
        domain,
        certificate = %cert_path.display(),
        sha256 = %hex.join(":"),
        "generated a self-signed XMPP certificate; configure xmpp.certificate for production"
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
