//! A stub of the Kubernetes API for the adapter's security reviews (the
//! authentication configmap, TokenReview, SubjectAccessReview), a
//! kubeconfig pointing at it, and clients of the adapter's secure port.

use crate::net::install_crypto_provider;
use crate::pki::Ca;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Stub of the Kubernetes API: the authentication configmap, TokenReview
/// (token "good-token" is user tina) and SubjectAccessReview (users in
/// `allowed` may do anything).
#[derive(Default)]
pub struct StubApi {
    pub configmap: Mutex<Value>,
    /// Users allowed everything; `*` allows everyone.
    pub allowed: Vec<&'static str>,
    /// Groups allowed every non-resource path but `/metrics`, as RBAC's
    /// `system:discovery` role bound to `system:authenticated` allows them.
    pub discovery_groups: Vec<&'static str>,
    pub token_reviews: AtomicU64,
    pub access_reviews: AtomicU64,
    pub reviews_unavailable: AtomicBool,
    pub last_access_review: Mutex<Value>,
}

async fn configmap(State(api): State<Arc<StubApi>>) -> Json<Value> {
    Json(api.configmap.lock().unwrap().clone())
}

async fn token_review(State(api): State<Arc<StubApi>>, Json(review): Json<Value>) -> axum::response::Response {
    api.token_reviews.fetch_add(1, Ordering::SeqCst);
    if api.reviews_unavailable.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let authenticated = review["spec"]["token"] == "good-token";
    let mut answer = review.clone();
    answer["status"] = if authenticated {
        json!({"authenticated": true, "user": {"username": "tina", "uid": "42", "groups": ["hpa"]}})
    } else {
        json!({"authenticated": false})
    };
    Json(answer).into_response()
}

async fn access_review(State(api): State<Arc<StubApi>>, Json(review): Json<Value>) -> axum::response::Response {
    api.access_reviews.fetch_add(1, Ordering::SeqCst);
    if api.reviews_unavailable.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    *api.last_access_review.lock().unwrap() = review["spec"].clone();
    let spec = &review["spec"];
    let discovery = spec["nonResourceAttributes"]["path"].as_str().is_some_and(|p| p != "/metrics")
        && spec["groups"].as_array().is_some_and(|groups| groups.iter().any(|g| api.discovery_groups.iter().any(|d| g == d)));
    let allowed = discovery || api.allowed.iter().any(|u| *u == "*" || spec["user"] == *u);
    let mut answer = review.clone();
    answer["status"] = json!({"allowed": allowed});
    Json(answer).into_response()
}

impl StubApi {
    /// Serves the stub on loopback with the authentication configmap of
    /// `front_proxy_ca` and `client_ca`; returns its address.
    pub async fn serve(self: &Arc<Self>, front_proxy_ca: &Ca, client_ca: &Ca) -> SocketAddr {
        *self.configmap.lock().unwrap() = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": {
                "requestheader-client-ca-file": front_proxy_ca.pem,
                "requestheader-allowed-names": "[\"front-proxy-client\"]",
                "requestheader-username-headers": "[\"X-Remote-User\"]",
                "requestheader-group-headers": "[\"X-Remote-Group\"]",
                "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
                "client-ca-file": client_ca.pem,
            }
        });
        let app = axum::Router::new()
            .route("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", get(configmap))
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
            .route("/apis/authorization.k8s.io/v1/subjectaccessreviews", post(access_review))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }
}

/// Writes a kubeconfig pointing at a plain-HTTP API server.
pub fn write_kubeconfig(path: &Path, server: SocketAddr) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster:\n    server: http://{server}\n\
             users:\n- name: adapter\n  user:\n    token: adapter-token\ncontexts:\n- name: stub\n  context:\n    cluster: stub\n    user: adapter\n\
             current-context: stub\n"
        ),
    )
    .unwrap();
}

/// An HTTPS client trusting `serving_ca`, optionally with a client identity.
pub fn client(serving_ca: &Ca, identity: Option<(String, String)>) -> reqwest::Client {
    tls_client(serving_ca.pem.as_bytes(), identity, &[])
}

/// An HTTPS client trusting the CA bundle `ca_pem`, optionally with a
/// client identity (certificate and key, PEM), that reaches the host names
/// of `resolve` at the addresses given.
pub fn tls_client(ca_pem: &[u8], identity: Option<(String, String)>, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()]);
    if let Some((cert, key)) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).unwrap());
    }
    for (host, address) in resolve {
        builder = builder.resolve(host, *address);
    }
    builder.build().unwrap()
}

/// A raw TLS connection to `address` trusting `serving_ca`, offering only
/// HTTP/1.1: for tests that control every byte.
pub async fn tls_connect(serving_ca: &Ca, address: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tls_over(&serving_ca.pem, tcp).await.unwrap()
}

/// A TLS handshake over `tcp` as [`tls_connect`] makes it, trusting the
/// PEM bundle `serving_ca_pem`; an error if the server ends it.
pub async fn tls_over(
    serving_ca_pem: &str,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(serving_ca_pem.as_bytes()).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}
