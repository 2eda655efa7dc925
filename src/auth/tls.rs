//! TLS serving: the serving certificate (from files, reloaded when they
//! change, or self-signed at start) and a server config that asks for, but
//! does not require, client certificates.
//!
//! Client certificates are checked for proof of possession during the
//! handshake and verified against the trusted CAs per request (as the
//! kube-apiserver does with `RequestClientCert`), so a rotated CA applies to
//! existing connections too.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

const RELOAD_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    #[error("{path}: no PEM private key found: {source}")]
    NoKey { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("serving certificate and key do not match or are unsupported: {0}")]
    Key(rustls::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(rcgen::Error),
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("{path}: not a usable CA certificate")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot verify client certificates against {path}")]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generated at start for these DNS names / IP addresses.
    SelfSigned(Vec<String>),
}

/// The current serving certificate, swapped atomically on reload.
pub struct ServingCertificate {
    source: CertificateSource,
    current: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCertificate").field("source", &self.source).finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServingCertificate {
    pub fn load(source: CertificateSource) -> Result<Arc<Self>, TlsError> {
        let (fingerprint, key) = match &source {
            CertificateSource::Files { cert, key } => load_files(cert, key)?,
            CertificateSource::SelfSigned(names) => {
                let generated = rcgen::generate_simple_self_signed(names.clone()).map_err(TlsError::SelfSigned)?;
                let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
                let certified = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider()).map_err(TlsError::Key)?;
                tracing::warn!(
                    ?names,
                    "serving a generated self-signed certificate; give --tls-cert-file and --tls-private-key-file in production"
                );
                (Vec::new(), Arc::new(certified))
            }
        };
        Ok(Arc::new(ServingCertificate { source, current: RwLock::new((fingerprint, key)) }))
    }

    /// Re-reads the files every few seconds and swaps in a changed pair
    /// (cert-manager rotates them in place); a broken pair keeps the old one.
    pub async fn keep_fresh(self: Arc<Self>) {
        let CertificateSource::Files { cert, key } = &self.source else { return };
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let unchanged = read_pair(cert, key).is_ok_and(|bytes| bytes == self.current.read().unwrap_or_else(PoisonError::into_inner).0);
            if unchanged {
                continue;
            }
            match load_files(cert, key) {
                Ok(fresh) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                    tracing::info!(cert = %cert.display(), "reloaded the serving certificate");
                }
                Err(error) => tracing::error!(%error, "cannot reload the serving certificate; keeping the current one"),
            }
        }
    }

    /// Server config for TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        self.config_with(Arc::new(RequestClientCertificate(provider())), &[b"h2", b"http/1.1"])
    }

    /// Server config for gRPC (HTTP/2 only, TLS 1.2 and 1.3) that requires
    /// a client certificate chaining to the CA bundle `client_ca` in the
    /// handshake: a client without one, or with one of another CA, is
    /// refused before any request. The bundle is read once, here.
    pub fn client_verified_config(self: &Arc<Self>, client_ca: &Path) -> Result<Arc<ServerConfig>, TlsError> {
        let path = client_ca.to_path_buf();
        let pem = read(&path)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            roots.add(cert).map_err(|source| TlsError::ClientCa { path: path.clone(), source })?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate(path));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|source| TlsError::ClientVerifier { path, source })?;
        self.config_with(verifier, &[b"h2"])
    }

    /// TLS 1.2 and 1.3 with this certificate, client certificates checked
    /// by `verifier`, offering the `alpn` protocols.
    fn config_with(self: &Arc<Self>, verifier: Arc<dyn ClientCertVerifier>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).1.clone())
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.clone(), source })
}

/// Both files' bytes, which identify the pair for change detection.
fn read_pair(cert: &PathBuf, key: &PathBuf) -> Result<Vec<u8>, TlsError> {
    Ok([read(cert)?, read(key)?].concat())
}

fn load_files(cert: &PathBuf, key: &PathBuf) -> Result<(Vec<u8>, Arc<CertifiedKey>), TlsError> {
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem).flatten().collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.clone()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::NoKey { path: key.clone(), source })?;
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(TlsError::Key)?;
    Ok(([cert_pem, key_pem].concat(), Arc::new(certified)))
}

/// Asks for a client certificate and checks the handshake signature (proof
/// that the client holds the key); chain validation is per request.
#[derive(Debug)]
struct RequestClientCertificate(Arc<CryptoProvider>);

impl ClientCertVerifier for RequestClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: Go clients then send their certificate whatever its CA.
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_or_mismatched_files_are_reported() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let (cert, key, empty) = (dir.join("a.crt"), dir.join("b.key"), dir.join("empty"));
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        std::fs::write(&empty, "").unwrap();
        let load =
            |cert: &PathBuf, key: &PathBuf| ServingCertificate::load(CertificateSource::Files { cert: cert.clone(), key: key.clone() });
        assert!(matches!(load(&cert, &key), Err(TlsError::Key(_))));
        assert!(matches!(load(&empty, &key), Err(TlsError::NoCertificate(_))));
        assert!(matches!(load(&cert, &empty), Err(TlsError::NoKey { .. })));
        assert!(matches!(load(&dir.join("missing"), &key), Err(TlsError::Read { .. })));
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        assert!(load(&cert, &key).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
