//! Who may vouch for a request: the front-proxy (request-header) CA with its
//! allowed client names and header names, and the cluster's client CA.
//!
//! Read from `kube-system/extension-apiserver-authentication` (published by
//! the kube-apiserver) unless flags override a value, and re-read every
//! minute so rotated CAs are picked up without a restart.

use axum::http::HeaderName;
use k8s_openapi::api::core::v1::ConfigMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub const AUTHENTICATION_CONFIGMAP: &str = "extension-apiserver-authentication";
pub const AUTHENTICATION_NAMESPACE: &str = "kube-system";
const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}: no PEM certificate found")]
    NoCertificates(String),
    #[error("{what}: invalid CA certificate: {source}")]
    InvalidCaCertificate { what: String, source: rustls::Error },
    #[error("{what}: {source}")]
    BadCa { what: String, source: rustls::server::VerifierBuilderError },
    #[error("cannot read configmap {AUTHENTICATION_NAMESPACE}/{AUTHENTICATION_CONFIGMAP}: {0}. The adapter's ServiceAccount needs the role extension-apiserver-authentication-reader in kube-system (see README)")]
    Lookup(kube::Error),
    #[error("configmap key {key}: {reason}")]
    BadValue { key: &'static str, reason: String },
    #[error("invalid header name {0:?}")]
    HeaderName(String),
}

/// Values given on the command line; each one set wins over the configmap.
#[derive(Debug, Clone, Default)]
pub struct TrustOverrides {
    pub requestheader_client_ca_file: Option<PathBuf>,
    pub requestheader_allowed_names: Option<Vec<String>>,
    pub requestheader_username_headers: Option<Vec<String>>,
    pub requestheader_group_headers: Option<Vec<String>>,
    pub requestheader_extra_headers_prefix: Option<Vec<String>>,
    pub client_ca_file: Option<PathBuf>,
}

/// Front-proxy trust: a request on a connection whose client certificate
/// chains to `verifier` with an allowed CN carries its user in headers.
pub struct RequestHeaderTrust {
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// Empty: any CN signed by the CA.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<HeaderName>,
    pub group_headers: Vec<HeaderName>,
    /// Lower-case prefixes of `X-Remote-Extra-<key>` headers.
    pub extra_prefixes: Vec<String>,
}

/// One consistent view of what is trusted.
#[derive(Default)]
pub struct Trust {
    pub requestheader: Option<RequestHeaderTrust>,
    /// Client certificates chaining here authenticate as CN / O.
    pub client_ca: Option<Arc<dyn ClientCertVerifier>>,
    /// Changes whenever the trusted material changes, so per-connection
    /// verification results can be reused until then.
    pub generation: u64,
    fingerprint: Vec<u8>,
}

impl Trust {
    /// Whether `chain` (end entity first) chains to `verifier`.
    pub fn chains_to(verifier: &dyn ClientCertVerifier, chain: &[CertificateDer<'static>]) -> bool {
        match chain.split_first() {
            Some((end_entity, intermediates)) => verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()).is_ok(),
            None => false,
        }
    }
}

/// The current [`Trust`], refreshed in the background.
pub struct TrustStore {
    overrides: TrustOverrides,
    client: Option<kube::Client>,
    current: RwLock<Option<Arc<Trust>>>,
}

/// The raw material a [`Trust`] is built from.
#[derive(Default)]
struct Material {
    requestheader_ca: Option<(String, Vec<u8>)>,
    allowed_names: Vec<String>,
    username_headers: Vec<String>,
    group_headers: Vec<String>,
    extra_prefixes: Vec<String>,
    client_ca: Option<(String, Vec<u8>)>,
}

impl TrustStore {
    /// `client`: where to look up the configmap (None: flags only).
    pub fn new(overrides: TrustOverrides, client: Option<kube::Client>) -> Self {
        TrustStore { overrides, client, current: RwLock::new(None) }
    }

    /// The trust in force; `None` until the first successful load.
    pub fn current(&self) -> Option<Arc<Trust>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Loads now, then keeps refreshing; errors keep the previous trust.
    pub async fn keep_fresh(self: Arc<Self>) {
        loop {
            match self.load().await {
                Ok(changed) if changed => tracing::info!("loaded authentication trust (front-proxy and client CAs)"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "cannot load authentication trust; requests that need it are refused"),
            }
            let delay = if self.current().is_some() { REFRESH_EVERY } else { Duration::from_secs(5) };
            tokio::time::sleep(delay).await;
        }
    }

    /// Loads once; true if the trusted material changed.
    pub async fn load(&self) -> Result<bool, TrustError> {
        let material = self.material().await?;
        let fingerprint = material.fingerprint();
        let previous = self.current();
        if previous.as_ref().is_some_and(|p| p.fingerprint == fingerprint) {
            return Ok(false);
        }
        let mut trust = material.build()?;
        trust.fingerprint = fingerprint;
        trust.generation = previous.map_or(1, |p| p.generation + 1);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(trust));
        Ok(true)
    }

    async fn material(&self) -> Result<Material, TrustError> {
        let o = &self.overrides;
        let configmap = match &self.client {
            Some(client) => {
                let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), AUTHENTICATION_NAMESPACE);
                api.get(AUTHENTICATION_CONFIGMAP).await.map_err(TrustError::Lookup)?.data.unwrap_or_default()
            }
            None => Default::default(),
        };
        let list = |key: &'static str| -> Result<Vec<String>, TrustError> {
            match configmap.get(key) {
                None => Ok(Vec::new()),
                Some(json) => serde_json::from_str(json).map_err(|e| TrustError::BadValue { key, reason: e.to_string() }),
            }
        };
        let pem = |file: &Option<PathBuf>, key: &'static str| -> Result<Option<(String, Vec<u8>)>, TrustError> {
            match file {
                Some(path) => {
                    let bytes = std::fs::read(path).map_err(|source| TrustError::Read { path: path.clone(), source })?;
                    Ok(Some((path.display().to_string(), bytes)))
                }
                None => Ok(configmap.get(key).map(|v| (format!("configmap key {key}"), v.clone().into_bytes()))),
            }
        };
        Ok(Material {
            requestheader_ca: pem(&o.requestheader_client_ca_file, "requestheader-client-ca-file")?,
            allowed_names: o.requestheader_allowed_names.clone().map_or_else(|| list("requestheader-allowed-names"), Ok)?,
            username_headers: o.requestheader_username_headers.clone().map_or_else(|| list("requestheader-username-headers"), Ok)?,
            group_headers: o.requestheader_group_headers.clone().map_or_else(|| list("requestheader-group-headers"), Ok)?,
            extra_prefixes: o.requestheader_extra_headers_prefix.clone().map_or_else(|| list("requestheader-extra-headers-prefix"), Ok)?,
            client_ca: pem(&o.client_ca_file, "client-ca-file")?,
        })
    }
}

impl Material {
    fn fingerprint(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for (_, pem) in self.requestheader_ca.iter().chain(self.client_ca.iter()) {
            all.extend_from_slice(pem);
            all.push(0);
        }
        for list in [&self.allowed_names, &self.username_headers, &self.group_headers, &self.extra_prefixes] {
            all.extend_from_slice(list.join("\n").as_bytes());
            all.push(0);
        }
        ring::digest::digest(&ring::digest::SHA256, &all).as_ref().to_vec()
    }

    fn build(self) -> Result<Trust, TrustError> {
        let headers = |names: &[String]| -> Result<Vec<HeaderName>, TrustError> {
            names.iter().map(|n| HeaderName::try_from(n.as_str()).map_err(|_| TrustError::HeaderName(n.clone()))).collect()
        };
        let requestheader = match &self.requestheader_ca {
            Some((what, pem)) => Some(RequestHeaderTrust {
                verifier: verifier(what, pem)?,
                allowed_names: self.allowed_names.clone(),
                username_headers: headers(&self.username_headers)?,
                group_headers: headers(&self.group_headers)?,
                extra_prefixes: self.extra_prefixes.iter().map(|p| p.to_ascii_lowercase()).collect(),
            }),
            None => None,
        };
        let client_ca = match &self.client_ca {
            Some((what, pem)) => Some(verifier(what, pem)?),
            None => None,
        };
        Ok(Trust { requestheader, client_ca, generation: 0, fingerprint: Vec::new() })
    }
}

/// A verifier for client certificates chaining to the CAs in `pem`.
pub fn verifier(what: &str, pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem).flatten() {
        roots.add(certificate).map_err(|source| TrustError::InvalidCaCertificate { what: what.to_owned(), source })?;
    }
    if roots.is_empty() {
        return Err(TrustError::NoCertificates(what.to_owned()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()))
        .build()
        .map_err(|source| TrustError::BadCa { what: what.to_owned(), source })
}
