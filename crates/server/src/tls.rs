//! TLS for every TLS listener (AMQPS, MQTTS, XMPP STARTTLS and direct TLS,
//! HTTPS): one rustls setup built from `[tls]` (or `[xmpp]`'s own
//! certificate), with optional client certificates (mutual TLS), the names
//! SASL EXTERNAL takes from them, the channel-binding data SCRAM-PLUS needs,
//! and a reload (SIGHUP) that swaps the certificate for new handshakes while
//! established connections keep theirs.
//!
//! With no certificate configured, a self-signed one is generated at first
//! start for the XMPP domain and kept in the data directory, so that clients
//! can pin it.

use crate::config::{CertLoginFrom, TlsConfig, TlsVerify};
use anyhow::Context;
use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tributary_sasl::ChannelBindings;

/// Time a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener needs to speak TLS. Clones share one certificate, so a
/// reload through any of them is seen by all.
#[derive(Clone)]
pub struct TlsSetup {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    current: RwLock<Arc<Loaded>>,
}

/// Where the certificate comes from and how clients are verified; read
/// again on each reload.
struct Source {
    certificate: PathBuf,
    key: PathBuf,
    ca_certificate: Option<PathBuf>,
    fail_if_no_peer_cert: bool,
    login_from: CertLoginFrom,
}

/// One generation of the certificate.
struct Loaded {
    acceptor: TlsAcceptor,
    /// `tls-server-end-point` channel binding: SHA-256 of our leaf
    /// certificate (RFC 5929 §4.1).
    end_point: Vec<u8>,
}

/// An established TLS connection.
pub struct Accepted<S> {
    /// The encrypted stream.
    pub stream: TlsStream<S>,
    /// Channel-binding data for SCRAM-PLUS.
    pub bindings: ChannelBindings,
    /// The user name of a verified client certificate (`[tls]
    /// peer_cert_login_from`), for SASL EXTERNAL; `None` without one.
    pub peer_name: Option<String>,
}

impl TlsSetup {
    /// Loads `certificate`/`key` (empty: the self-signed certificate for
    /// `domain` under `data_dir/xmpp/`, generated if missing), with the
    /// client-certificate policy of `tls`.
    pub fn load_or_generate(
        tls: &TlsConfig,
        certificate: &str,
        key: &str,
        domain: &str,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let (certificate, key) = if certificate.is_empty() {
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
        let verify = tls.verify == TlsVerify::VerifyPeer;
        let source = Source {
            certificate,
            key,
            ca_certificate: verify.then(|| tls.ca_certificate.clone().into()),
            fail_if_no_peer_cert: tls.fail_if_no_peer_cert,
            login_from: tls.peer_cert_login_from,
        };
        let loaded = source.load()?;
        Ok(TlsSetup {
            inner: Arc::new(Inner {
                source,
                current: RwLock::new(Arc::new(loaded)),
            }),
        })
    }

    /// Reads the certificate, key and CA bundle again; new handshakes use
    /// them from now on. On error the current ones stay in force.
    pub fn reload(&self) -> anyhow::Result<()> {
        let loaded = self.inner.source.load()?;
        *self.inner.current.write() = Arc::new(loaded);
        Ok(())
    }

    /// Whether both share one certificate (clones of one setup).
    pub fn same_as(&self, other: &TlsSetup) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The certificate file in use (for the log).
    pub fn certificate_path(&self) -> &Path {
        &self.inner.source.certificate
    }

    /// The private key file of the certificate (server-to-server streams
    /// build their own rustls configurations from the pair).
    pub fn key_path(&self) -> &Path {
        &self.inner.source.key
    }

    /// Runs the server side of a handshake on `stream` with the current
    /// certificate, within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<Accepted<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let loaded = self.inner.current.read().clone();
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, loaded.acceptor.accept(stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        let (_, connection) = stream.get_ref();
        let exporter = connection
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok();
        // Only a certificate the verifier accepted is ever presented here.
        let peer_name = connection
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| peer_name(leaf.as_ref(), self.inner.source.login_from));
        Ok(Accepted {
            bindings: ChannelBindings {
                tls_exporter: exporter,
                tls_server_end_point: Some(loaded.end_point.clone()),
            },
            peer_name,
            stream,
        })
    }
}

impl Source {
    fn load(&self) -> anyhow::Result<Loaded> {
        let cert_path = &self.certificate;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .with_context(|| format!("cannot read certificate {}", cert_path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad certificate {}", cert_path.display()))?;
        let leaf = certs
            .first()
            .with_context(|| format!("no certificate in {}", cert_path.display()))?;
        let end_point = Sha256::digest(leaf.as_ref()).to_vec();
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("cannot read private key {}", self.key.display()))?;
        // rustls' defaults: TLS 1.2 and 1.3 only, modern cipher suites.
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.ca_certificate {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(self.verifier(ca)?),
        };
        let config = builder.with_single_cert(certs, key).with_context(|| {
            format!(
                "the certificate {} and key {} do not match",
                cert_path.display(),
                self.key.display()
            )
        })?;
        Ok(Loaded {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            end_point,
        })
    }

    fn verifier(
        &self,
        ca: &Path,
    ) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read CA certificates {}", ca.display()))?
        {
            let cert = cert.with_context(|| format!("bad CA certificate in {}", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
        }
        if roots.is_empty() {
            anyhow::bail!("no CA certificate in {}", ca.display());
        }
        let builder = WebPkiClientVerifier::builder(Arc::new(roots));
        let builder = if self.fail_if_no_peer_cert {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder
            .build()
            .with_context(|| format!("cannot verify clients with {}", ca.display()))
    }
}

/// A TCP listener whose connections come out with their TLS handshake
/// done (each handshake runs in its own task, so a slow client holds up no
/// other): the HTTPS listener hands it to axum.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` until `shutdown`.
    pub fn spawn(
        listener: TcpListener,
        tls: TlsSetup,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok((stream, peer)) => {
                            let (tx, tls) = (tx.clone(), tls.clone());
                            tokio::spawn(async move {
                                let _ = stream.set_nodelay(true);
                                match tls.accept(stream).await {
                                    Ok(accepted) => {
                                        let _ = tx.send((accepted.stream, peer)).await;
                                    }
                                    Err(e) => tracing::debug!(%peer, error = %e, "HTTPS TLS handshake failed"),
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // Shut down: axum's graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The user name a client certificate (DER) stands for: its subject's
/// common name, or its first DNS or e-mail subject alternative name
/// (RabbitMQ's `ssl_cert_login_from`).
pub fn peer_name(der: &[u8], from: CertLoginFrom) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = match from {
        CertLoginFrom::CommonName => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        CertLoginFrom::SubjectAlternativeName => cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some(s.to_string()),
                    _ => None,
                })
            }),
    };
    name.filter(|n| !n.is_empty())
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
        "generated a self-signed certificate; configure tls.certificate for production"
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn name_from_common_name() {
        let der = cert(
            Some("alice"),
            vec![SanType::DnsName("a.example".try_into().unwrap())],
        );
        assert_eq!(
            peer_name(&der, CertLoginFrom::CommonName).as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn name_from_first_dns_or_email_san() {
        let der = cert(
            Some("alice"),
            vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::Rfc822Name("bob@example.com".try_into().unwrap()),
                SanType::DnsName("c.example".try_into().unwrap()),
            ],
        );
        assert_eq!(
            peer_name(&der, CertLoginFrom::SubjectAlternativeName).as_deref(),
            Some("bob@example.com")
        );
    }

    #[test]
    fn no_name_no_login() {
        let der = cert(None, vec![]);
        assert_eq!(peer_name(&der, CertLoginFrom::CommonName), None);
        assert_eq!(peer_name(&der, CertLoginFrom::SubjectAlternativeName), None);
        assert_eq!(
            peer_name(b"not a certificate", CertLoginFrom::CommonName),
            None
        );
    }
}
