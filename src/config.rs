//! Command-line flags (each with a `PRAVEGA_ADAPTER_*` environment override)
//! and their validation.

use crate::auth::tls::CertificateSource;
use crate::auth::trust::TrustOverrides;
use crate::discover::PodDiscovery;
use crate::scrape::ScrapeSettings;
use crate::serve::listen;
use crate::store::{Budget, Limits};
use clap::{Args, Parser, ValueEnum};
use regex::Regex;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "pravega-metrics-adapter",
    version,
    about = "Serves Pravega controller metrics as Kubernetes custom and external metrics.",
    long_about = "Serves Pravega controller metrics as Kubernetes custom and external metrics.\n\n\
        A Kubernetes aggregated API server for custom.metrics.k8s.io (v1beta1, v1beta2) and \
        external.metrics.k8s.io (v1beta1). It scrapes every Pravega controller replica's \
        /prometheus endpoint directly, merges the replicas' per-stream gauges (the replica that \
        saw the latest scale wins; values are never summed) and serves them to the \
        HorizontalPodAutoscaler.\n\n\
        Every flag can also be set through the environment variable named in its help."
)]
pub struct Config {
    #[command(flatten)]
    pub serving: ServingFlags,

    #[command(flatten)]
    pub tls: TlsFlags,

    #[command(flatten)]
    pub auth: AuthFlags,

    #[command(flatten)]
    pub scopes: ScopeFlags,

    #[command(flatten)]
    pub controllers: ControllerFlags,

    #[command(flatten)]
    pub scraping: ScrapeFlags,

    #[command(flatten)]
    pub keda: KedaFlags,

    /// Log line format.
    #[arg(long, env = "PRAVEGA_ADAPTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,
}

/// Where and how the metrics APIs are served.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Serving")]
pub struct ServingFlags {
    /// Port for HTTPS with authentication and authorization (0 disables it).
    #[arg(long, env = "PRAVEGA_ADAPTER_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,

    /// Address the secure port listens on.
    #[arg(long, env = "PRAVEGA_ADAPTER_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Threads that serve requests. One keeps each request on one core, with
    /// fewer wake-ups and less waiting for a core than two on a small
    /// machine; a query over many streams runs off it, so that one long
    /// request does not hold up the others.
    #[arg(long, env = "PRAVEGA_ADAPTER_SERVING_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub serving_threads: u16,

    #[command(flatten)]
    pub connections: ConnectionFlags,

    /// Most items one external metric list may hold; a request whose
    /// labelSelector matches more streams is refused (413) with a message
    /// to narrow it. An HPA's selector names one stream or a few.
    #[arg(long, env = "PRAVEGA_ADAPTER_MAX_LIST_ITEMS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_list_items: u32,

    /// Also serve plain HTTP, WITHOUT authentication or authorization, on this
    /// loopback address (e.g. 127.0.0.1:8080). For local demos only.
    #[arg(long, env = "PRAVEGA_ADAPTER_INSECURE_BIND_ADDRESS", value_name = "IP:PORT")]
    pub insecure_bind_address: Option<SocketAddr>,
}

/// What one connection to the secure port may hold, and for how long.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Serving")]
pub struct ConnectionFlags {
    /// Connections served at once on the secure port. A new connection
    /// beyond it closes an unauthenticated one (see
    /// --max-unauthenticated-connections); only when every connection is
    /// authenticated are new ones closed as soon as they are accepted. Kept
    /// below the open-files limit, less descriptors for the adapter's own
    /// connections.
    #[arg(long, env = "PRAVEGA_ADAPTER_MAX_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Connections on which no request has been authenticated yet (TLS
    /// handshake under way, idle, or only unauthenticated requests) held at
    /// once. A new connection beyond it closes one of them: the oldest of
    /// the source holding the most, those without a completed handshake
    /// first; so clients that authenticate, the kube-apiserver's aggregator
    /// first, are served while others hold or reopen connections. Out of
    /// file descriptors, the adapter closes one of them too.
    #[arg(long, env = "PRAVEGA_ADAPTER_MAX_UNAUTHENTICATED_CONNECTIONS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unauthenticated_connections: u32,

    /// Unauthenticated connections one source (an IPv4 address, an IPv6
    /// /64) holds at once; its next one closes its oldest.
    #[arg(
        long,
        env = "PRAVEGA_ADAPTER_MAX_UNAUTHENTICATED_CONNECTIONS_PER_SOURCE",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_unauthenticated_connections_per_source: u32,

    /// A client that has not completed its TLS handshake by then is
    /// disconnected.
    #[arg(long, env = "PRAVEGA_ADAPTER_TLS_HANDSHAKE_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub tls_handshake_timeout: Duration,

    /// An HTTP/1 connection whose next request's headers have not all
    /// arrived by then is closed; it also ends HTTP/1 connections waiting
    /// for a request (kube-apiserver: 32s; 0 disables).
    #[arg(long, env = "PRAVEGA_ADAPTER_HEADER_READ_TIMEOUT", value_parser = parse_duration, default_value = "32s")]
    pub header_read_timeout: Duration,

    /// A connection with no request in flight for this long is closed
    /// (HTTP/2: after a GOAWAY) (kube-apiserver: 90s; 0 disables).
    #[arg(long, env = "PRAVEGA_ADAPTER_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "90s")]
    pub idle_timeout: Duration,

    /// How often an HTTP/2 client is pinged; one that does not answer
    /// within --http2-keepalive-timeout is disconnected (client-go's
    /// health check: 30s and 15s; 0 disables).
    #[arg(long, env = "PRAVEGA_ADAPTER_HTTP2_KEEPALIVE_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub http2_keepalive_interval: Duration,

    /// See --http2-keepalive-interval.
    #[arg(long, env = "PRAVEGA_ADAPTER_HTTP2_KEEPALIVE_TIMEOUT", value_parser = parse_duration, default_value = "15s")]
    pub http2_keepalive_timeout: Duration,

    /// A connection open this long is closed gracefully: HTTP/2 clients get
    /// a GOAWAY, HTTP/1 ones `Connection: close`; requests in flight get a
    /// minute to finish. Clients reconnect, so load spreads over replicas
    /// (0 disables).
    #[arg(long, env = "PRAVEGA_ADAPTER_MAX_CONNECTION_AGE", value_parser = parse_duration, default_value = "30m")]
    pub max_connection_age: Duration,
}

/// The secure port's serving certificate.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct TlsFlags {
    /// PEM certificate (chain) served on the secure port; reloaded when the
    /// file changes. Without it a self-signed certificate is generated.
    #[arg(long, env = "PRAVEGA_ADAPTER_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "PRAVEGA_ADAPTER_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
}

/// Who a request comes from (front proxy, client certificate, token) and
/// whether it may read what it asks for.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct AuthFlags {
    /// Kubeconfig for TokenReviews and for reading
    /// kube-system/extension-apiserver-authentication (default: --kubeconfig,
    /// then in-cluster).
    #[arg(long, env = "PRAVEGA_ADAPTER_AUTHENTICATION_KUBECONFIG")]
    pub authentication_kubeconfig: Option<PathBuf>,

    /// Kubeconfig for SubjectAccessReviews (default: --kubeconfig, then in-cluster).
    #[arg(long, env = "PRAVEGA_ADAPTER_AUTHORIZATION_KUBECONFIG")]
    pub authorization_kubeconfig: Option<PathBuf>,

    /// Do not read extension-apiserver-authentication; use only the
    /// --requestheader-* and --client-ca-file flags.
    #[arg(long, env = "PRAVEGA_ADAPTER_AUTHENTICATION_SKIP_LOOKUP")]
    pub authentication_skip_lookup: bool,

    #[command(flatten)]
    pub trust: TrustFlags,

    /// How long TokenReview results are cached (keyed by a hash of the token).
    #[arg(long, env = "PRAVEGA_ADAPTER_AUTHENTICATION_TOKEN_WEBHOOK_CACHE_TTL", value_parser = parse_duration, default_value = "10s")]
    pub authentication_token_webhook_cache_ttl: Duration,

    /// How long allowed SubjectAccessReview results are cached.
    #[arg(long, env = "PRAVEGA_ADAPTER_AUTHORIZATION_WEBHOOK_CACHE_AUTHORIZED_TTL", value_parser = parse_duration, default_value = "10s")]
    pub authorization_webhook_cache_authorized_ttl: Duration,

    /// How long denied SubjectAccessReview results are cached.
    #[arg(long, env = "PRAVEGA_ADAPTER_AUTHORIZATION_WEBHOOK_CACHE_UNAUTHORIZED_TTL", value_parser = parse_duration, default_value = "10s")]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,

    /// Paths served without authentication or authorization (probes).
    #[arg(
        long,
        env = "PRAVEGA_ADAPTER_AUTHORIZATION_ALWAYS_ALLOW_PATHS",
        value_delimiter = ',',
        default_value = "/healthz,/readyz,/livez"
    )]
    pub authorization_always_allow_paths: Vec<String>,
}

/// The CAs and headers trusted for authentication, in place of those of
/// kube-system/extension-apiserver-authentication.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct TrustFlags {
    /// CA bundle that front-proxy (aggregator) client certificates must chain
    /// to before X-Remote-* headers are trusted (default: from the configmap).
    #[arg(long, env = "PRAVEGA_ADAPTER_REQUESTHEADER_CLIENT_CA_FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,

    /// Common names allowed for front-proxy certificates; empty allows any
    /// name signed by the CA (default: from the configmap).
    #[arg(long, env = "PRAVEGA_ADAPTER_REQUESTHEADER_ALLOWED_NAMES", value_delimiter = ',')]
    pub requestheader_allowed_names: Option<Vec<String>>,

    /// Headers naming the user (default: from the configmap, usually X-Remote-User).
    #[arg(long, env = "PRAVEGA_ADAPTER_REQUESTHEADER_USERNAME_HEADERS", value_delimiter = ',')]
    pub requestheader_username_headers: Option<Vec<String>>,

    /// Headers naming the user's groups (default: from the configmap, usually X-Remote-Group).
    #[arg(long, env = "PRAVEGA_ADAPTER_REQUESTHEADER_GROUP_HEADERS", value_delimiter = ',')]
    pub requestheader_group_headers: Option<Vec<String>>,

    /// Prefixes of headers carrying extra user attributes (default: from the
    /// configmap, usually X-Remote-Extra-).
    #[arg(long, env = "PRAVEGA_ADAPTER_REQUESTHEADER_EXTRA_HEADERS_PREFIX", value_delimiter = ',')]
    pub requestheader_extra_headers_prefix: Option<Vec<String>>,

    /// CA bundle for client certificates that authenticate as their CN
    /// (user) and O (groups) (default: from the configmap).
    #[arg(long, env = "PRAVEGA_ADAPTER_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
}

/// Which Pravega scopes each Kubernetes namespace sees.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct ScopeFlags {
    /// Which Pravega scopes metrics requests in a Kubernetes namespace see:
    /// `all` (every scope, whatever the namespace), `same` (the scope named
    /// like the namespace) or `listed` (only those --namespace-scope gives
    /// it). --namespace-scope applies in every mode. Outside `all`,
    /// root-scoped objects (nodes) see no scope.
    #[arg(long, env = "PRAVEGA_ADAPTER_NAMESPACE_SCOPES", value_enum, default_value_t = NamespaceScopes::All)]
    pub namespace_scopes: NamespaceScopes,

    /// The scopes requests in one namespace see, e.g. flink=stocks,trades
    /// (repeatable; `;`-separated in the environment).
    #[arg(
        long = "namespace-scope",
        env = "PRAVEGA_ADAPTER_NAMESPACE_SCOPE",
        value_delimiter = ';',
        value_parser = parse_namespace_scope,
        value_name = "NAMESPACE=SCOPE,..."
    )]
    pub namespace_scope: Vec<NamespaceScope>,
}

/// KEDA's external scaler API, served on a port of its own.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "KEDA external scaler")]
pub struct KedaFlags {
    /// Port for KEDA's external scaler gRPC API (`external` and
    /// `external-push` triggers) on --bind-address, with the serving
    /// certificate of the secure port; 0 (the default) disables it. Needs
    /// --keda-client-ca-file.
    #[arg(long, env = "PRAVEGA_ADAPTER_KEDA_SCALER_PORT", default_value_t = 0)]
    pub keda_scaler_port: u16,

    /// PEM CA bundle that KEDA's client certificate (its TriggerAuthentication's
    /// tlsClientCert) must chain to; a client without such a certificate is
    /// refused in the TLS handshake. Read at start.
    #[arg(long, env = "PRAVEGA_ADAPTER_KEDA_CLIENT_CA_FILE")]
    pub keda_client_ca_file: Option<PathBuf>,

    /// StreamIsActive streams held open at once, all clients together; a
    /// stream beyond it is refused (RESOURCE_EXHAUSTED). KEDA opens one per
    /// ScaledObject trigger of type external-push.
    #[arg(long, env = "PRAVEGA_ADAPTER_KEDA_MAX_STREAMS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub keda_max_streams: u32,

    /// StreamIsActive streams one client (source address) holds open at once.
    #[arg(long, env = "PRAVEGA_ADAPTER_KEDA_MAX_STREAMS_PER_CLIENT", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub keda_max_streams_per_client: u32,
}

/// Which controllers are scraped and asked, and how they are reached.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Controllers")]
pub struct ControllerFlags {
    /// Static controller endpoint to scrape, e.g. http://10.0.0.5:10080/prometheus
    /// (repeatable; comma-separated in the environment).
    #[arg(long = "controller-url", env = "PRAVEGA_ADAPTER_CONTROLLER_URLS", value_delimiter = ',', value_name = "URL")]
    pub controller_urls: Vec<String>,

    #[command(flatten)]
    pub discovery: DiscoveryFlags,

    /// PEM CA bundle that controllers' HTTPS certificates must chain to
    /// (instead of the system roots).
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_CA_FILE")]
    pub controller_ca_file: Option<PathBuf>,

    /// File holding a bearer token sent to controllers (re-read on every scrape).
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_BEARER_TOKEN_FILE")]
    pub controller_bearer_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub api: ControllerApiFlags,

    /// Kubeconfig for pod discovery and the default for the security reviews
    /// (default: in-cluster config, then ~/.kube/config).
    #[arg(long, env = "PRAVEGA_ADAPTER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// The controller pods found and scraped each at its own IP.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Controllers")]
pub struct DiscoveryFlags {
    /// Namespace whose Pravega controller pods are discovered and each scraped
    /// at its pod IP.
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_NAMESPACE")]
    pub controller_namespace: Option<String>,

    /// Label selector of the controller pods.
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_SELECTOR", default_value = "component=pravega-controller")]
    pub controller_selector: String,

    /// Port of the controller's REST server, which serves the metrics.
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_PORT", default_value_t = 10080)]
    pub controller_port: u16,

    /// Path of the controller's Prometheus endpoint.
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_PATH", default_value = "/prometheus")]
    pub controller_path: String,

    /// Scheme used for discovered controller pods.
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_SCHEME", value_enum, default_value_t = Scheme::Http)]
    pub controller_scheme: Scheme,
}

/// The controllers' gRPC API, asked when the metrics cannot tell.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Controllers")]
pub struct ControllerApiFlags {
    /// gRPC endpoint of a controller's API, e.g. http://10.0.0.5:9090
    /// (repeatable; comma-separated in the environment). Asked for a
    /// stream's current segments when the metrics cannot tell (see
    /// --controller-api-port for discovered controllers).
    #[arg(long = "controller-api-url", env = "PRAVEGA_ADAPTER_CONTROLLER_API_URLS", value_delimiter = ',', value_name = "URL")]
    pub controller_api_urls: Vec<String>,

    /// gRPC port of discovered controller pods, asked when no
    /// --controller-api-url is given (0: never ask discovered pods).
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_API_PORT", default_value_t = 9090)]
    pub controller_api_port: u16,

    /// Longest wait for one controller API call, connecting included.
    #[arg(long, env = "PRAVEGA_ADAPTER_CONTROLLER_API_TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    pub controller_api_timeout: Duration,

    /// Background calls per second to the controller API for the inventory
    /// of streams (listing included). At the default a controller serving
    /// 10,000 streams answers 20 lookups a second, each a read of its
    /// metadata cache; every stream is then asked about every 500 s.
    #[arg(long, env = "PRAVEGA_ADAPTER_INVENTORY_CALLS_PER_SECOND", value_parser = parse_rate, default_value = "20")]
    pub inventory_calls_per_second: f64,

    /// How often each stream's segment count is asked while the call
    /// budget allows. An answer is served for two rounds over every stream.
    #[arg(long, env = "PRAVEGA_ADAPTER_INVENTORY_REFRESH", value_parser = parse_duration, default_value = "10s")]
    pub inventory_refresh: Duration,

    /// How often the scopes' stream lists are read again (new and deleted
    /// streams).
    #[arg(long, env = "PRAVEGA_ADAPTER_INVENTORY_LIST_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub inventory_list_interval: Duration,

    /// Streams the inventory holds at most.
    #[arg(long, env = "PRAVEGA_ADAPTER_INVENTORY_MAX_STREAMS", default_value_t = 100_000)]
    pub inventory_max_streams: usize,

    /// How long after the metrics show a scale the controller API is asked
    /// to confirm it; a disagreement after that withholds the stream until
    /// its next scale.
    #[arg(long, env = "PRAVEGA_ADAPTER_SCALE_SETTLE_TIME", value_parser = parse_duration, default_value = "10s")]
    pub scale_settle_time: Duration,
}

/// How often and how much each controller is scraped, and what is served
/// of it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Scraping")]
pub struct ScrapeFlags {
    /// How often each controller is scraped in the background.
    #[arg(long, env = "PRAVEGA_ADAPTER_SCRAPE_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub scrape_interval: Duration,

    /// Time allowed for one scrape (connect, read, parse); also the longest a
    /// query waits for a refresh.
    #[arg(long, env = "PRAVEGA_ADAPTER_SCRAPE_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub scrape_timeout: Duration,

    /// Largest accepted exposition body (suffixes Ki, Mi, Gi, k, M, G);
    /// a larger one fails the scrape.
    #[arg(long, env = "PRAVEGA_ADAPTER_SCRAPE_MAX_BODY_BYTES", value_parser = parse_bytes, default_value = "64Mi")]
    pub scrape_max_body_bytes: u64,

    #[command(flatten)]
    pub limits: ScrapeLimitFlags,

    /// A query waits for a fresh scrape when the data is older than this
    /// (or than three times the slowest of the target's last 8 scrape
    /// rounds, if rounds take longer, so that slow scrapes do not hold every
    /// query); past half of it, a query triggers a scrape without waiting.
    #[arg(long, env = "PRAVEGA_ADAPTER_MAX_STALENESS", value_parser = parse_duration, default_value = "1s")]
    pub max_staleness: Duration,

    /// Data scraped longer ago than this is never served (the HPA then holds
    /// its replica count).
    #[arg(long, env = "PRAVEGA_ADAPTER_METRICS_MAX_AGE", value_parser = parse_duration, default_value = "30s")]
    pub metrics_max_age: Duration,

    /// Regular expression metric names must match to be served. Only
    /// per-stream series (with scope and stream labels) are served.
    #[arg(long, env = "PRAVEGA_ADAPTER_METRICS_ALLOW_REGEX", value_parser = parse_regex, default_value = "^pravega_controller_")]
    pub metrics_allow_regex: Regex,

    /// Labels that name the controller replica reporting a series rather
    /// than the stream (Pravega's metrics carry Micrometer's common tag
    /// `host`, the pod's name): dropped, so that every replica's series of
    /// a stream are merged as one stream (repeatable; comma-separated in
    /// the environment; empty keeps every label).
    #[arg(
        long = "replica-label",
        env = "PRAVEGA_ADAPTER_REPLICA_LABELS",
        value_delimiter = ',',
        default_value = "host",
        value_name = "LABEL"
    )]
    pub replica_labels: Vec<String>,
}

/// What one scrape of one controller may store.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Scraping")]
pub struct ScrapeLimitFlags {
    /// Most per-stream series (stream x family) one scrape of one controller
    /// may hold; a scrape with more fails and the controller's previous data
    /// is kept. The store costs at most ~50 bytes per series (see docs/security.md).
    #[arg(long, env = "PRAVEGA_ADAPTER_SCRAPE_MAX_SERIES", default_value_t = Limits::DEFAULT.max_series as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub scrape_max_series: u32,

    /// Most families with per-stream series one scrape may hold; a scrape
    /// with more fails and the controller's previous data is kept.
    #[arg(long, env = "PRAVEGA_ADAPTER_SCRAPE_MAX_FAMILIES", default_value_t = Limits::DEFAULT.max_families as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub scrape_max_families: u32,

    /// Most streams (label sets of per-stream series) one scrape may hold;
    /// a scrape with more fails and the controller's previous data is kept.
    #[arg(long, env = "PRAVEGA_ADAPTER_SCRAPE_MAX_STREAMS", default_value_t = Limits::DEFAULT.max_streams as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub scrape_max_streams: u32,

    /// Most per-stream series all controllers' data may hold together; a
    /// scrape that would take the sum over it fails (`over_budget`) and
    /// that controller's previous data is kept, the others' too. Sized
    /// with --max-total-streams to the memory limit (see README, Sizing).
    #[arg(long, env = "PRAVEGA_ADAPTER_MAX_TOTAL_SERIES", default_value_t = Budget::DEFAULT.max_series as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_total_series: u32,

    /// Most streams all controllers' data may hold together, a stream
    /// counted once per controller listing it; beyond it as
    /// --max-total-series.
    #[arg(long, env = "PRAVEGA_ADAPTER_MAX_TOTAL_STREAMS", default_value_t = Budget::DEFAULT.max_streams as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_total_streams: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|p| matches!(p.scheme(), "http" | "https"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NamespaceScopes {
    All,
    Same,
    Listed,
}

/// One --namespace-scope: a namespace and the scopes it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceScope {
    pub namespace: String,
    pub scopes: Vec<String>,
}

fn parse_namespace_scope(text: &str) -> Result<NamespaceScope, String> {
    let bad = || format!("{text:?} is not NAMESPACE=SCOPE[,SCOPE...]");
    let (namespace, scopes) = text.split_once('=').ok_or_else(bad)?;
    let scopes: Vec<String> = scopes.split(',').map(str::trim).map(str::to_owned).collect();
    if namespace.trim().is_empty() || scopes.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(NamespaceScope { namespace: namespace.trim().to_owned(), scopes })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no controllers to scrape: give --controller-url and/or --controller-namespace")]
    NoControllers,
    #[error("nothing to serve: --secure-port and --keda-scaler-port are 0 and no --insecure-bind-address is set")]
    NothingToServe,
    #[error("--insecure-bind-address {0} is not a loopback address; unauthenticated serving is only allowed on loopback")]
    InsecureNotLoopback(SocketAddr),
    #[error("--scrape-timeout ({timeout:?}) must be shorter than --scrape-interval ({interval:?})")]
    TimeoutNotBelowInterval { timeout: Duration, interval: Duration },
    #[error("--metrics-max-age ({max_age:?}) must be at least --scrape-interval ({interval:?}), or data would expire between scrapes")]
    MaxAgeBelowInterval { max_age: Duration, interval: Duration },
    #[error("--controller-url {0:?} is not an http(s) URL")]
    BadControllerUrl(String),
    #[error("--controller-api-url {0:?} is not an http(s) URL")]
    BadControllerApiUrl(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--keda-scaler-port needs --keda-client-ca-file: KEDA's client certificates are verified against it")]
    KedaWithoutClientCa,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (serving, controllers, scraping) = (&self.serving, &self.controllers, &self.scraping);
        if controllers.controller_urls.is_empty() && controllers.discovery.controller_namespace.is_none() {
            return Err(ConfigError::NoControllers);
        }
        if let Some(url) = controllers.controller_urls.iter().find(|u| !is_http_url(u)) {
            return Err(ConfigError::BadControllerUrl(url.clone()));
        }
        if let Some(url) = controllers.api.controller_api_urls.iter().find(|u| !is_http_url(u)) {
            return Err(ConfigError::BadControllerApiUrl(url.clone()));
        }
        if serving.secure_port == 0 && serving.insecure_bind_address.is_none() && self.keda.keda_scaler_port == 0 {
            return Err(ConfigError::NothingToServe);
        }
        if let Some(address) = serving.insecure_bind_address.filter(|a| !a.ip().is_loopback()) {
            return Err(ConfigError::InsecureNotLoopback(address));
        }
        if self.keda.keda_scaler_port != 0 && self.keda.keda_client_ca_file.is_none() {
            return Err(ConfigError::KedaWithoutClientCa);
        }
        for (name, value) in [
            ("--scrape-interval", scraping.scrape_interval),
            ("--scrape-timeout", scraping.scrape_timeout),
            ("--controller-api-timeout", controllers.api.controller_api_timeout),
            ("--inventory-refresh", controllers.api.inventory_refresh),
            ("--inventory-list-interval", controllers.api.inventory_list_interval),
            ("--tls-handshake-timeout", serving.connections.tls_handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if scraping.scrape_timeout >= scraping.scrape_interval {
            return Err(ConfigError::TimeoutNotBelowInterval { timeout: scraping.scrape_timeout, interval: scraping.scrape_interval });
        }
        if scraping.metrics_max_age < scraping.scrape_interval {
            return Err(ConfigError::MaxAgeBelowInterval { max_age: scraping.metrics_max_age, interval: scraping.scrape_interval });
        }
        Ok(())
    }
}

impl ConnectionFlags {
    pub fn limits(&self) -> listen::Limits {
        listen::Limits {
            admission: listen::admission::AdmissionLimits {
                max_connections: self.max_connections as usize,
                max_unauthenticated: self.max_unauthenticated_connections as usize,
                max_unauthenticated_per_source: self.max_unauthenticated_connections_per_source as usize,
            },
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            http2_keepalive_interval: self.http2_keepalive_interval,
            http2_keepalive_timeout: self.http2_keepalive_timeout,
            max_connection_age: self.max_connection_age,
        }
    }
}

impl TlsFlags {
    /// The certificate files, or a self-signed certificate for localhost
    /// and `bind_address` (unless it is the unspecified address).
    pub fn certificate_source(&self, bind_address: IpAddr) -> CertificateSource {
        match (&self.tls_cert_file, &self.tls_private_key_file) {
            (Some(cert), Some(key)) => CertificateSource::Files { cert: cert.clone(), key: key.clone() },
            _ => {
                let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
                if !bind_address.is_unspecified() {
                    names.push(bind_address.to_string());
                }
                CertificateSource::SelfSigned(names)
            }
        }
    }
}

impl TrustFlags {
    pub fn overrides(&self) -> TrustOverrides {
        TrustOverrides {
            requestheader_client_ca_file: self.requestheader_client_ca_file.clone(),
            requestheader_allowed_names: self.requestheader_allowed_names.clone(),
            requestheader_username_headers: self.requestheader_username_headers.clone(),
            requestheader_group_headers: self.requestheader_group_headers.clone(),
            requestheader_extra_headers_prefix: self.requestheader_extra_headers_prefix.clone(),
            client_ca_file: self.client_ca_file.clone(),
        }
    }
}

impl DiscoveryFlags {
    /// The pods to discover, if a namespace is given.
    pub fn pod_discovery(&self) -> Option<PodDiscovery> {
        Some(PodDiscovery {
            namespace: self.controller_namespace.clone()?,
            selector: self.controller_selector.clone(),
            scheme: self.controller_scheme.as_str().to_owned(),
            port: self.controller_port,
            path: self.controller_path.clone(),
        })
    }
}

impl ScrapeFlags {
    /// The scrape pool's settings.
    pub fn settings(&self) -> ScrapeSettings {
        ScrapeSettings {
            interval: self.scrape_interval,
            timeout: self.scrape_timeout,
            max_body_bytes: self.scrape_max_body_bytes,
            max_staleness: self.max_staleness,
            allow: self.metrics_allow_regex.clone(),
        }
    }
}

impl ScrapeLimitFlags {
    pub fn limits(&self) -> Limits {
        Limits {
            max_series: self.scrape_max_series as usize,
            max_families: self.scrape_max_families as usize,
            max_streams: self.scrape_max_streams as usize,
        }
    }

    pub fn budget(&self) -> Budget {
        Budget { max_series: self.max_total_series as usize, max_streams: self.max_total_streams as usize }
    }
}

/// A positive, finite number of calls per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive number of calls per second")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

fn parse_regex(text: &str) -> Result<Regex, String> {
    Regex::new(text).map_err(|e| e.to_string())
}

/// Byte sizes as Kubernetes writes them: `64Mi`, `1Gi`, `500k`, `1048576`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 64Mi or 1048576"))?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("unknown size suffix {suffix:?} in {text:?} (use Ki, Mi, Gi, k, M or G)")),
    };
    number.checked_mul(unit).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["pravega-metrics-adapter"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = config(&["--controller-url", "http://127.0.0.1:10080/prometheus"]).unwrap();
        assert_eq!(c.serving.secure_port, 6443);
        assert_eq!(c.serving.serving_threads, 1);
        assert_eq!(c.serving.max_list_items, 10_000);
        let connections = &c.serving.connections;
        assert_eq!(connections.max_connections, 1000);
        assert_eq!((connections.max_unauthenticated_connections, connections.max_unauthenticated_connections_per_source), (200, 20));
        assert_eq!(connections.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(connections.header_read_timeout, Duration::from_secs(32));
        assert_eq!(connections.idle_timeout, Duration::from_secs(90));
        assert_eq!(
            (connections.http2_keepalive_interval, connections.http2_keepalive_timeout),
            (Duration::from_secs(30), Duration::from_secs(15))
        );
        assert_eq!(connections.max_connection_age, Duration::from_secs(30 * 60));
        assert_eq!((c.scopes.namespace_scopes, c.scopes.namespace_scope.len()), (NamespaceScopes::All, 0));
        let scraping = &c.scraping;
        assert_eq!(scraping.scrape_interval, Duration::from_secs(10));
        assert_eq!(scraping.scrape_timeout, Duration::from_secs(2));
        assert_eq!(scraping.scrape_max_body_bytes, 64 << 20);
        assert_eq!(scraping.limits.limits(), Limits { max_series: 2_000_000, max_families: 1_000, max_streams: 200_000 });
        assert_eq!(scraping.limits.budget(), Budget::DEFAULT);
        assert_eq!(scraping.max_staleness, Duration::from_secs(1));
        assert_eq!(scraping.metrics_max_age, Duration::from_secs(30));
        assert_eq!(c.controllers.discovery.controller_selector, "component=pravega-controller");
        assert_eq!((c.keda.keda_scaler_port, c.keda.keda_max_streams, c.keda.keda_max_streams_per_client), (0, 1000, 500), "KEDA off");
        assert_eq!(c.controllers.discovery.controller_port, 10080);
        assert!(scraping.metrics_allow_regex.is_match("pravega_controller_segments_count"));
        assert!(!scraping.metrics_allow_regex.is_match("jvm_memory_used_bytes"));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn invalid_combinations_are_explained() {
        let check = |args: &[&str]| config(args).unwrap().validate().unwrap_err();
        assert_eq!(check(&[]), ConfigError::NoControllers);
        assert_eq!(check(&["--controller-url", "ftp://x"]), ConfigError::BadControllerUrl("ftp://x".into()));
        assert_eq!(check(&["--controller-url", "http://x", "--secure-port", "0"]), ConfigError::NothingToServe);
        assert!(matches!(
            check(&["--controller-url", "http://x", "--insecure-bind-address", "0.0.0.0:8080"]),
            ConfigError::InsecureNotLoopback(_)
        ));
        assert!(matches!(check(&["--controller-url", "http://x", "--scrape-timeout", "10s"]), ConfigError::TimeoutNotBelowInterval { .. }));
        assert!(matches!(check(&["--controller-url", "http://x", "--metrics-max-age", "5s"]), ConfigError::MaxAgeBelowInterval { .. }));
        assert_eq!(check(&["--controller-url", "http://x", "--tls-handshake-timeout", "0s"]), ConfigError::Zero("--tls-handshake-timeout"));
        assert_eq!(check(&["--controller-url", "http://x", "--keda-scaler-port", "9443"]), ConfigError::KedaWithoutClientCa);
    }

    #[test]
    fn bad_values_are_rejected_at_parse_time() {
        assert!(config(&["--scrape-interval", "ten"]).unwrap_err().contains("10s"));
        assert!(config(&["--scrape-max-body-bytes", "64MB"]).is_err());
        assert!(config(&["--metrics-allow-regex", "("]).is_err());
        assert!(config(&["--serving-threads", "0"]).unwrap_err().contains("--serving-threads"));
        assert!(config(&["--max-connections", "0"]).unwrap_err().contains("--max-connections"));
        assert!(config(&["--scrape-max-series", "0"]).unwrap_err().contains("--scrape-max-series"));
    }

    #[test]
    fn namespace_scopes() {
        let c = config(&["--namespace-scopes", "listed", "--namespace-scope", "flink=a,b", "--namespace-scope", "ops=c"]).unwrap();
        assert_eq!(c.scopes.namespace_scopes, NamespaceScopes::Listed);
        let scope = |namespace: &str, scopes: &[&str]| NamespaceScope {
            namespace: namespace.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(c.scopes.namespace_scope, [scope("flink", &["a", "b"]), scope("ops", &["c"])]);
        for bad in ["flink", "=a", "flink=", "flink=a,,b"] {
            assert!(config(&["--namespace-scope", bad]).unwrap_err().contains("NAMESPACE=SCOPE"), "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("500k"), Ok(500_000));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("Mi").is_err());
        assert!(parse_bytes("99999999999999Gi").is_err());
    }
}
