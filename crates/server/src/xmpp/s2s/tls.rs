//! TLS for server-to-server streams: our certificate on both sides (as the
//! server inbound, as the client certificate outbound), and the check of a
//! peer's certificate against `[xmpp.s2s] ca_certificates` or the
//! `insecure_domains` list (XEP-0178: valid for the peer's domain).

use anyhow::Context;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The rustls configurations of federation and the peer-certificate policy.
pub struct S2sTls {
    /// Inbound STARTTLS and direct TLS: asks for (does not require) a
    /// client certificate, which [`S2sTls::valid_names`] checks afterwards.
    pub server: Arc<rustls::ServerConfig>,
    /// Outbound: presents our certificate.
    pub client: Arc<rustls::ClientConfig>,
    /// Outbound direct TLS (XEP-0368): the same, with ALPN `xmpp-server`.
    pub client_direct: Arc<rustls::ClientConfig>,
    policy: Arc<Policy>,
}

struct Policy {
    roots: Option<Arc<WebPkiServerVerifier>>,
    insecure: Vec<String>,
    dialback: bool,
    provider: Arc<CryptoProvider>,
}

/// The TLS version whose handshake signature is checked.
#[derive(Debug, Clone, Copy)]
enum Tls {
    V12,
    V13,
}

impl Policy {
    /// Checks a handshake signature with the provider's algorithms: the
    /// same for both directions of a server-to-server stream.
    fn verify_signature(
        &self,
        version: Tls,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        match version {
            Tls::V12 => rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms),
            Tls::V13 => rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms),
        }
    }
}

impl S2sTls {
    /// Builds both sides from our certificate and key files.
    pub fn load(
        certificate: &Path,
        key: &Path,
        ca_certificates: &str,
        insecure_domains: &[String],
        dialback: bool,
    ) -> anyhow::Result<Self> {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
            .with_context(|| format!("cannot read certificate {}", certificate.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad certificate {}", certificate.display()))?;
        let key_der = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read private key {}", key.display()))?;
        let roots = if ca_certificates.is_empty() {
            None
        } else {
            let mut store = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_certificates)
                .with_context(|| format!("cannot read {ca_certificates}"))?
            {
                store
                    .add(cert.with_context(|| format!("bad CA certificate in {ca_certificates}"))?)
                    .with_context(|| format!("bad CA certificate in {ca_certificates}"))?;
            }
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .context("xmpp.s2s.ca_certificates")?,
            )
        };
        let policy = Arc::new(Policy {
            roots,
            insecure: insecure_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            dialback,
            provider: provider.clone(),
        });
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(Arc::new(AnyClientCert(policy.clone())))
            .with_single_cert(certs.clone(), key_der.clone_key())
            .context("the XMPP certificate and key do not match")?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerServerCert(policy.clone())))
            .with_client_auth_cert(certs, key_der)
            .context("the XMPP certificate and key do not match")?;
        let mut direct = client.clone();
        direct.alpn_protocols = vec![b"xmpp-server".to_vec()];
        Ok(S2sTls {
            server: Arc::new(server),
            client: Arc::new(client),
            client_direct: Arc::new(direct),
            policy,
        })
    }

    /// The domains a peer's certificate chain (leaf first) is valid for:
    /// its DNS names that verify against the CA bundle, plus those of
    /// them listed in `insecure_domains`.
    pub fn valid_names(&self, chain: &[CertificateDer<'_>]) -> Vec<String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Vec::new();
        };
        let mut valid = Vec::new();
        for name in cert_names(leaf.as_ref()) {
            let lower = name.to_ascii_lowercase();
            if self.policy.insecure.contains(&lower)
                || self.policy.chain_valid(leaf, intermediates, &lower)
            {
                valid.push(lower);
            }
        }
        valid
    }
}

impl Policy {
    fn chain_valid(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &str,
    ) -> bool {
        let (Some(roots), Ok(server_name)) = (&self.roots, ServerName::try_from(name.to_string()))
        else {
            return false;
        };
        roots
            .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
            .is_ok()
    }
}

/// The DNS names of a certificate: subject alternative names, else the
/// common name.
fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
        );
    }
    names
}

/// Inbound: any client certificate completes the handshake (its proof of
/// key possession is checked); whether it names the peer is decided after
/// it, by [`S2sTls::valid_names`].
#[derive(Debug)]
struct AnyClientCert(Arc<Policy>);

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V12, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V13, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Outbound: the peer's certificate must be valid for its domain (CA
/// bundle or `insecure_domains`), unless dialback is allowed, which then
/// authenticates the peer over the encrypted stream (XEP-0344).
#[derive(Debug)]
struct PeerServerCert(Arc<Policy>);

impl ServerCertVerifier for PeerServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = server_name.to_str().to_ascii_lowercase();
        if self.0.dialback
            || self.0.insecure.contains(&name)
            || self.0.chain_valid(end_entity, intermediates, &name)
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the certificate is not valid for {name}"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V12, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V13, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
