//! Pravega metrics adapter: a Kubernetes aggregated API server that serves
//! Pravega controller metrics as custom and external metrics.
//!
//! Data flows through one module per stage:
//! [`discover`] (which controllers) -> [`scrape`] (fetch each one) ->
//! [`parse`] (extract the wanted families) -> [`store`] (per-target
//! snapshots, merged across replicas) -> [`serve`] (the metrics APIs,
//! and KEDA's external scaler).
//! The controllers' gRPC API is a source of its own: [`controller_api`]
//! asks it, [`inventory`] keeps every stream of the served scopes and its
//! segment count from it, and decides per stream what is served.
//! [`config`] holds the flags, [`clock`] measures ages, [`telemetry`]
//! the adapter's own metrics, [`escape`] makes outside text safe for log
//! lines.

pub mod auth;
pub mod clock;
pub mod config;
pub mod controller_api;
pub mod discover;
pub mod escape;
pub mod inventory;
pub mod parse;
pub mod resources;
pub mod scrape;
pub mod serve;
pub mod store;
pub mod telemetry;

use config::{AuthFlags, Config, ControllerFlags};
use controller_api::{ControllerApi, ControllerApiSettings};
use inventory::{Inventory, InventorySettings};
use scrape::{Pool, Target};
use serve::App;
use std::sync::Arc;
use store::Store;
use telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot read {path}")]
    ReadFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid controller CA bundle")]
    ControllerCa(#[source] reqwest::Error),
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot start the scraping thread")]
    ScrapeRuntime(#[source] std::io::Error),
    #[error("cannot read the kubeconfig {path}")]
    KubeConfigFile {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes client configuration: neither in-cluster nor a kubeconfig")]
    KubeConfigInfer(#[source] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    #[error("cannot listen on {address}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] auth::tls::TlsError),
}

/// Runs the adapter until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    config.validate()?;
    let (serving, controllers, scraping) = (&config.serving, &config.controllers, &config.scraping);
    let store = Arc::new(
        Store::new(scraping.metrics_max_age)
            .with_limits(scraping.limits.limits())
            .with_budget(scraping.limits.budget())
            .replica_labels(scraping.replica_labels.clone()),
    );
    tokio::spawn(store.clone().keep_merged());
    let telemetry = Arc::new(Telemetry::default());
    let scrape_runtime = resources::background_runtime("scrape").map_err(RunError::ScrapeRuntime)?;
    let fetch = scrape::Http::new(controller_client(controllers)?, controllers.controller_bearer_token_file.clone());
    let pool = Arc::new(Pool::new(fetch, scraping.settings(), store.clone(), telemetry.clone(), scrape_runtime));
    let fixed: Vec<Target> =
        controllers.controller_urls.iter().map(|url| Target { id: Arc::from(url.as_str()), url: url.clone() }).collect();
    match controllers.discovery.pod_discovery() {
        Some(discovery) => {
            let client = kube_client(kube_config(controllers.kubeconfig.as_ref()).await?)?;
            tracing::info!(namespace = %discovery.namespace, selector = %discovery.selector, "discovering controller pods");
            tokio::spawn(discover::watch_pods(client, discovery, fixed, pool.clone()));
        }
        None => pool.set_targets(fixed),
    }
    let inventory = inventory(&config, &pool, &store, &telemetry)?;
    if let Some(inventory) = &inventory {
        tokio::spawn(inventory.clone().keep_fresh());
    }
    let scopes = Arc::new(serve::scopes::ScopePolicy::new(config.scopes.namespace_scopes, &config.scopes.namespace_scope));
    let app = |guard| {
        Arc::new(App {
            store: store.clone(),
            pool: pool.clone(),
            telemetry: telemetry.clone(),
            inventory: inventory.clone(),
            guard,
            scopes: scopes.clone(),
            max_list_items: serving.max_list_items as usize,
        })
    };
    let keda = &config.keda;
    let certificate = match serving.secure_port != 0 || keda.keda_scaler_port != 0 {
        true => {
            let certificate = auth::tls::ServingCertificate::load(config.tls.certificate_source(serving.bind_address))?;
            tokio::spawn(certificate.clone().keep_fresh());
            Some(certificate)
        }
        false => None,
    };
    let mut servers = tokio::task::JoinSet::new();
    if let (true, Some(certificate)) = (serving.secure_port != 0, &certificate) {
        let address = std::net::SocketAddr::new(serving.bind_address, serving.secure_port);
        let router = serve::router(app(Some(guard(&config.auth, controllers.kubeconfig.as_ref()).await?)));
        let tls = certificate.server_config()?;
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|source| RunError::Listen { address, source })?;
        tracing::info!(%address, "serving HTTPS with authentication and authorization");
        let limits = serving.connections.limits();
        servers.spawn(async move {
            serve::listen::serve_tls(listener, tls, router, limits, shutdown_signal::wait()).await;
            Ok(())
        });
    }
    if let (Some(client_ca), Some(certificate)) = (keda.keda_client_ca_file.as_ref().filter(|_| keda.keda_scaler_port != 0), &certificate) {
        let address = std::net::SocketAddr::new(serving.bind_address, keda.keda_scaler_port);
        let tls = certificate.client_verified_config(client_ca)?;
        let scaler = serve::keda::Scaler::new(app(None), keda.keda_max_streams as usize, keda.keda_max_streams_per_client as usize);
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|source| RunError::Listen { address, source })?;
        tracing::info!(%address, client_ca = %client_ca.display(), "serving KEDA's external scaler over TLS with client certificates");
        let connections = &serving.connections;
        let limits = serve::keda::Limits {
            tls_handshake_timeout: connections.tls_handshake_timeout,
            http2_keepalive_interval: connections.http2_keepalive_interval,
            http2_keepalive_timeout: connections.http2_keepalive_timeout,
            max_concurrent_streams: keda.keda_max_streams_per_client.saturating_add(100),
        };
        let router = serve::keda::router(scaler);
        servers.spawn(async move {
            serve::keda::serve(listener, tls, router, limits, shutdown_signal::wait()).await;
            Ok(())
        });
    }
    if let Some(address) = serving.insecure_bind_address {
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|source| RunError::Listen { address, source })?;
        tracing::warn!(%address, "serving plain HTTP WITHOUT authentication or authorization (demo mode)");
        let router = serve::router(app(None));
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        servers.spawn(async move { axum::serve(listener, router).with_graceful_shutdown(shutdown_signal::wait()).await });
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

/// The inventory of streams from the controllers' gRPC API, if any
/// endpoint can be known: fixed URLs, or discovered pods at the API port.
fn inventory(
    config: &Config,
    pool: &Arc<Pool>,
    store: &Arc<Store>,
    telemetry: &Arc<Telemetry>,
) -> Result<Option<Arc<Inventory>>, RunError> {
    let controllers = &config.controllers;
    let ca_pem = match &controllers.controller_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| RunError::ReadFile { path: path.clone(), source })?),
        None => None,
    };
    let (api, discovery) = (&controllers.api, &controllers.discovery);
    let settings = ControllerApiSettings {
        endpoints: api.controller_api_urls.clone(),
        port: if discovery.controller_namespace.is_some() { api.controller_api_port } else { 0 },
        tls: discovery.controller_scheme == config::Scheme::Https,
        ca_pem,
        bearer_token_file: controllers.controller_bearer_token_file.clone(),
        timeout: api.controller_api_timeout,
        concurrency: CONTROLLER_API_CONCURRENCY,
    };
    let hosts = {
        let pool = pool.clone();
        move || pool.discovered_hosts()
    };
    let client = ControllerApi::new(settings, hosts, telemetry.clone());
    if !client.enabled() {
        tracing::warn!(
            "no controller API endpoint (--controller-api-url, or discovered pods at --controller-api-port): streams are served \
             only while their metrics prove a scale the adapter watched; quiet streams and streams known from before the adapter \
             started are not served"
        );
        return Ok(None);
    }
    // Namespace scoping that names its scopes lists only those.
    let scopes = match config.scopes.namespace_scopes {
        config::NamespaceScopes::Listed => Some(config.scopes.namespace_scope.iter().flat_map(|n| n.scopes.iter().cloned()).collect()),
        config::NamespaceScopes::All | config::NamespaceScopes::Same => None,
    };
    let settings = InventorySettings {
        scopes,
        calls_per_second: api.inventory_calls_per_second,
        refresh: api.inventory_refresh,
        list_interval: api.inventory_list_interval,
        settle: api.scale_settle_time,
        max_streams: api.inventory_max_streams,
    };
    Ok(Some(Arc::new(Inventory::new(Arc::new(client), settings, store.clone(), telemetry.clone()))))
}

/// Controller API calls in flight at once.
const CONTROLLER_API_CONCURRENCY: usize = 8;

/// HTTP client for the controllers: rustls, optional private CA.
fn controller_client(controllers: &ControllerFlags) -> Result<reqwest::Client, RunError> {
    // Redirects are not followed: a controller answering 3xx must not send
    // the adapter to another host, port or scheme; the scrape fails.
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pravega-metrics-adapter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &controllers.controller_ca_file {
        let pem = std::fs::read(path).map_err(|source| RunError::ReadFile { path: path.clone(), source })?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(RunError::ControllerCa)?;
        builder = builder.tls_certs_only(roots);
    }
    builder.build().map_err(RunError::HttpClient)
}

/// Authentication (front proxy, client CA, TokenReview) and authorization
/// (SubjectAccessReview) against the cluster; `kubeconfig` is the default
/// for both reviews' API access.
async fn guard(auth: &AuthFlags, kubeconfig: Option<&std::path::PathBuf>) -> Result<Arc<auth::Guard>, RunError> {
    let authentication = review_client(auth.authentication_kubeconfig.as_ref().or(kubeconfig)).await?;
    let authorization = review_client(auth.authorization_kubeconfig.as_ref().or(kubeconfig)).await?;
    let lookup = (!auth.authentication_skip_lookup).then(|| authentication.clone());
    let trust = Arc::new(auth::trust::TrustStore::new(auth.trust.overrides(), lookup));
    tokio::spawn(trust.clone().keep_fresh());
    let authenticator = auth::authn::Authenticator::new(trust, Some(authentication), auth.authentication_token_webhook_cache_ttl);
    let authorizer = auth::authz::Authorizer::new(
        authorization,
        auth.authorization_webhook_cache_authorized_ttl,
        auth.authorization_webhook_cache_unauthorized_ttl,
    );
    Ok(Arc::new(auth::Guard::new(authenticator, authorizer, auth.authorization_always_allow_paths.clone())))
}

async fn kube_config(kubeconfig: Option<&std::path::PathBuf>) -> Result<kube::Config, RunError> {
    match kubeconfig {
        Some(path) => {
            let file_error = |source| RunError::KubeConfigFile { path: path.clone(), source };
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(file_error)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.map_err(file_error)
        }
        None => kube::Config::infer().await.map_err(RunError::KubeConfigInfer),
    }
}

fn kube_client(kube_config: kube::Config) -> Result<kube::Client, RunError> {
    kube::Client::try_from(kube_config).map_err(RunError::KubeClient)
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
