//! Pravega metrics adapter: a Kubernetes aggregated API server that serves
//! Pravega controller metrics as custom and external metrics.
//!
//! Data flows through one module per stage:
//! [`discover`] (which controllers) -> [`scrape`] (fetch each one) ->
//! [`parse`] (extract the wanted families) -> [`store`] (per-target
//! snapshots, merged across replicas) -> [`serve`] (the metrics APIs).
//! [`controller_api`] asks the controllers' gRPC API when the metrics cannot
//! tell a stream's segment count. [`config`] holds the flags, [`telemetry`]
//! the adapter's own metrics, [`escape`] makes outside text safe for log
//! lines.

pub mod auth;
pub mod config;
pub mod controller_api;
pub mod discover;
pub mod escape;
pub mod parse;
pub mod resources;
pub mod scrape;
pub mod serve;
pub mod store;
pub mod telemetry;

use config::Config;
use controller_api::{ControllerApi, ControllerApiSettings};
use scrape::{Pool, ScrapeSettings, Target};
use serve::App;
use std::sync::Arc;
use store::Store;
use telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot read {path}: {source}")]
    ReadFile { path: std::path::PathBuf, source: std::io::Error },
    #[error("invalid controller CA bundle: {0}")]
    ControllerCa(reqwest::Error),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    #[error("cannot start the scraping thread: {0}")]
    ScrapeRuntime(std::io::Error),
    #[error("cannot load Kubernetes client configuration: {0}")]
    KubeConfig(String),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: std::net::SocketAddr, source: std::io::Error },
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Tls(#[from] auth::tls::TlsError),
}

/// Runs the adapter until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    config.validate()?;
    let store = Arc::new(Store::new(config.metrics_max_age).replica_labels(config.replica_labels.clone()));
    tokio::spawn(store.clone().keep_merged());
    let telemetry = Arc::new(Telemetry::default());
    let settings = ScrapeSettings {
        interval: config.scrape_interval,
        timeout: config.scrape_timeout,
        max_body_bytes: config.scrape_max_body_bytes,
        max_staleness: config.max_staleness,
        allow: config.metrics_allow_regex.clone(),
        bearer_token_file: config.controller_bearer_token_file.clone(),
    };
    let scrape_runtime = resources::background_runtime("scrape").map_err(RunError::ScrapeRuntime)?;
    let pool = Arc::new(Pool::new(controller_client(&config)?, settings, store.clone(), telemetry.clone(), scrape_runtime));
    let fixed: Vec<Target> = config.controller_urls.iter().map(|url| Target { id: Arc::from(url.as_str()), url: url.clone() }).collect();
    match &config.controller_namespace {
        Some(namespace) => {
            let client = kube_client(kube_config(config.kubeconfig.as_ref()).await?)?;
            let discovery = discover::PodDiscovery {
                namespace: namespace.clone(),
                selector: config.controller_selector.clone(),
                scheme: config.controller_scheme.as_str().to_owned(),
                port: config.controller_port,
                path: config.controller_path.clone(),
            };
            tracing::info!(%namespace, selector = %config.controller_selector, "discovering controller pods");
            tokio::spawn(discover::watch_pods(client, discovery, fixed, pool.clone()));
        }
        None => pool.set_targets(fixed),
    }
    let controller_api = controller_api(&config, &pool, &telemetry)?;
    if let Some(api) = &controller_api {
        tokio::spawn(api.clone().keep_checking(store.clone()));
    }
    let scopes = Arc::new(serve::scopes::ScopePolicy::new(config.namespace_scopes, &config.namespace_scope));
    let app = |guard| {
        serve::router(Arc::new(App {
            store: store.clone(),
            pool: pool.clone(),
            telemetry: telemetry.clone(),
            controller_api: controller_api.clone(),
            guard,
            scopes: scopes.clone(),
        }))
    };
    let mut servers = tokio::task::JoinSet::new();
    if config.secure_port != 0 {
        let address = std::net::SocketAddr::new(config.bind_address, config.secure_port);
        let router = app(Some(guard(&config).await?));
        let certificate = auth::tls::ServingCertificate::load(certificate_source(&config))?;
        let tls = certificate.server_config()?;
        tokio::spawn(certificate.keep_fresh());
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|source| RunError::Listen { address, source })?;
        tracing::info!(%address, "serving HTTPS with authentication and authorization");
        let limits = serve::listen::Limits {
            max_connections: config.max_connections as usize,
            tls_handshake_timeout: config.tls_handshake_timeout,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            http2_keepalive_interval: config.http2_keepalive_interval,
            http2_keepalive_timeout: config.http2_keepalive_timeout,
            max_connection_age: config.max_connection_age,
        };
        servers.spawn(async move {
            serve::listen::serve_tls(listener, tls, router, limits, shutdown_signal()).await;
            Ok(())
        });
    }
    if let Some(address) = config.insecure_bind_address {
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|source| RunError::Listen { address, source })?;
        tracing::warn!(%address, "serving plain HTTP WITHOUT authentication or authorization (demo mode)");
        let router = app(None);
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        servers.spawn(async move { axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await });
    }
    while let Some(result) = servers.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(RunError::Serve(error)),
            Err(join) => return Err(RunError::Serve(std::io::Error::other(join))),
        }
    }
    tracing::info!("shut down");
    Ok(())
}

/// The controllers' gRPC API, if any endpoint can be known: fixed URLs, or
/// discovered pods at the API port.
fn controller_api(config: &Config, pool: &Arc<Pool>, telemetry: &Arc<Telemetry>) -> Result<Option<Arc<ControllerApi>>, RunError> {
    let ca_pem = match &config.controller_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| RunError::ReadFile { path: path.clone(), source })?),
        None => None,
    };
    let settings = ControllerApiSettings {
        endpoints: config.controller_api_urls.clone(),
        port: if config.controller_namespace.is_some() { config.controller_api_port } else { 0 },
        tls: config.controller_scheme == config::Scheme::Https,
        ca_pem,
        bearer_token_file: config.controller_bearer_token_file.clone(),
        timeout: config.controller_api_timeout,
        cache_for: config.max_staleness,
        concurrency: CONTROLLER_API_CONCURRENCY,
        per_query: CONTROLLER_API_STREAMS_PER_QUERY,
        check_interval: config.controller_api_check_interval,
        check_batch: CONTROLLER_API_CHECK_BATCH,
    };
    let hosts = {
        let pool = pool.clone();
        move || pool.discovered_hosts()
    };
    let api = ControllerApi::new(settings, hosts, telemetry.clone());
    if !api.enabled() {
        tracing::info!("no controller API endpoint: streams the metrics cannot decide are not served");
        return Ok(None);
    }
    Ok(Some(Arc::new(api)))
}

/// Controller API calls in flight at once.
const CONTROLLER_API_CONCURRENCY: usize = 8;
/// Streams one query may have the controller API answer for.
const CONTROLLER_API_STREAMS_PER_QUERY: usize = 16;
/// Streams compared with the controller API per cross-check.
const CONTROLLER_API_CHECK_BATCH: usize = 4;

/// HTTP client for the controllers: rustls, optional private CA.
fn controller_client(config: &Config) -> Result<reqwest::Client, RunError> {
    // Redirects are not followed: a controller answering 3xx must not send
    // the adapter to another host, port or scheme; the scrape fails.
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pravega-metrics-adapter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.controller_ca_file {
        let pem = std::fs::read(path).map_err(|source| RunError::ReadFile { path: path.clone(), source })?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(RunError::ControllerCa)?;
        builder = builder.tls_certs_only(roots);
    }
    builder.build().map_err(RunError::HttpClient)
}

/// Authentication (front proxy, client CA, TokenReview) and authorization
/// (SubjectAccessReview) against the cluster.
async fn guard(config: &Config) -> Result<Arc<auth::Guard>, RunError> {
    let authentication = review_client(config.authentication_kubeconfig.as_ref().or(config.kubeconfig.as_ref())).await?;
    let authorization = review_client(config.authorization_kubeconfig.as_ref().or(config.kubeconfig.as_ref())).await?;
    let overrides = auth::trust::TrustOverrides {
        requestheader_client_ca_file: config.requestheader_client_ca_file.clone(),
        requestheader_allowed_names: config.requestheader_allowed_names.clone(),
        requestheader_username_headers: config.requestheader_username_headers.clone(),
        requestheader_group_headers: config.requestheader_group_headers.clone(),
        requestheader_extra_headers_prefix: config.requestheader_extra_headers_prefix.clone(),
        client_ca_file: config.client_ca_file.clone(),
    };
    let lookup = (!config.authentication_skip_lookup).then(|| authentication.clone());
    let trust = Arc::new(auth::trust::TrustStore::new(overrides, lookup));
    tokio::spawn(trust.clone().keep_fresh());
    let authenticator = auth::authn::Authenticator::new(trust, Some(authentication), config.authentication_token_webhook_cache_ttl);
    let authorizer = auth::authz::Authorizer::new(
        authorization,
        config.authorization_webhook_cache_authorized_ttl,
        config.authorization_webhook_cache_unauthorized_ttl,
    );
    Ok(Arc::new(auth::Guard::new(authenticator, authorizer, config.authorization_always_allow_paths.clone())))
}

fn certificate_source(config: &Config) -> auth::tls::CertificateSource {
    match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(cert), Some(key)) => auth::tls::CertificateSource::Files { cert: cert.clone(), key: key.clone() },
        _ => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            if !config.bind_address.is_unspecified() {
                names.push(config.bind_address.to_string());
            }
            auth::tls::CertificateSource::SelfSigned(names)
        }
    }
}

async fn kube_config(kubeconfig: Option<&std::path::PathBuf>) -> Result<kube::Config, RunError> {
    match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| RunError::KubeConfig(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.map_err(|e| RunError::KubeConfig(e.to_string()))
        }
        None => kube::Config::infer().await.map_err(|e| RunError::KubeConfig(e.to_string())),
    }
}

fn kube_client(kube_config: kube::Config) -> Result<kube::Client, RunError> {
    kube::Client::try_from(kube_config).map_err(|e| RunError::KubeConfig(e.to_string()))
}

/// A client for TokenReviews and SubjectAccessReviews: a request waits on
/// them, so no retries with long backoff, and a bounded wait for answers.
async fn review_client(kubeconfig: Option<&std::path::PathBuf>) -> Result<kube::Client, RunError> {
    let mut config = kube_config(kubeconfig).await?;
    config.default_retry = false;
    config.read_timeout = Some(REVIEW_TIMEOUT);
    kube_client(config)
}

/// Longest wait for a TokenReview or SubjectAccessReview answer.
const REVIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}
