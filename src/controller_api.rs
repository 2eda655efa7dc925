//! The controller's gRPC API: the authority on a stream's current segments
//! when the metrics cannot tell.
//!
//! Scraping stays the primary source. The merge marks a stream
//! [`Verdict::Undecided`] when no live replica at its high-water mark of
//! scale events reports it (the replica that scaled it last restarted, is
//! failing, or left discovery), and [`Verdict::Unconfirmed`] when the
//! adapter has not yet seen the mark rise (just after the adapter started,
//! or a new stream). For those streams, and for any stream a cross-check
//! found stale, a `segments_count` query asks a controller's
//! `ControllerService.getCurrentSegments`, which every replica answers from
//! the shared metadata store. Answers are cached for `--max-staleness`;
//! calls are bounded in time and in number, per query and at once.
//!
//! A background cross-check compares a few served values with the API at
//! a low rate: a value it finds stale is not served again from the metrics
//! until its stream's mark rises, and is counted in the adapter's
//! `/metrics`.

use crate::store::{LabelSet, MergedView, Series, Store, Verdict, SCOPE_LABEL, STREAM_LABEL};
use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The family the controller's API can answer for.
pub const SEGMENTS_FAMILY: &str = "pravega_controller_segments_count";

const GET_CURRENT_SEGMENTS: &str = "/io.pravega.controller.stream.api.grpc.v1.ControllerService/getCurrentSegments";

/// The few messages of Pravega's `Controller.proto` the adapter needs.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamInfo {
        #[prost(string, tag = "1")]
        pub scope: String,
        #[prost(string, tag = "2")]
        pub stream: String,
        /// `AccessOperation`; 1 is `NONE`: the adapter only looks.
        #[prost(int32, tag = "3")]
        pub access_operation: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SegmentId {
        #[prost(message, optional, tag = "1")]
        pub stream_info: Option<StreamInfo>,
        #[prost(int64, tag = "2")]
        pub segment_id: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SegmentRange {
        #[prost(message, optional, tag = "1")]
        pub segment_id: Option<SegmentId>,
        #[prost(double, tag = "2")]
        pub min_key: f64,
        #[prost(double, tag = "3")]
        pub max_key: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SegmentRanges {
        #[prost(message, repeated, tag = "1")]
        pub segment_ranges: Vec<SegmentRange>,
        #[prost(string, tag = "2")]
        pub delegation_token: String,
    }

    /// `AccessOperation.NONE`.
    pub const ACCESS_NONE: i32 = 1;
}

#[derive(Debug, Clone)]
pub struct ControllerApiSettings {
    /// Fixed endpoints (`http://host:9090`, `https://...`); empty: every
    /// scraped controller's host at `port`.
    pub endpoints: Vec<String>,
    /// The gRPC port of discovered controllers; 0 disables the API unless
    /// `endpoints` are given.
    pub port: u16,
    /// `https` for discovered controllers if their metrics are scraped over
    /// HTTPS.
    pub tls: bool,
    pub ca_pem: Option<Vec<u8>>,
    /// Sent as `Authorization: Bearer`, re-read for every call.
    pub bearer_token_file: Option<PathBuf>,
    /// Longest wait for one call, connecting included.
    pub timeout: Duration,
    /// How long an answer is reused.
    pub cache_for: Duration,
    /// Calls in flight at once, across all queries.
    pub concurrency: usize,
    /// Streams one query may have the API answer for; the rest of an
    /// undecided selection is left out (the HPA then holds).
    pub per_query: usize,
    /// How often the cross-check runs (zero: never).
    pub check_interval: Duration,
    /// Streams compared per cross-check.
    pub check_batch: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerApiError {
    #[error("no controller API endpoint is known")]
    NoEndpoint,
    #[error("invalid controller API endpoint {endpoint:?}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot read bearer token file {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bearer token is not a valid header value")]
    TokenValue(#[source] tonic::metadata::errors::InvalidMetadataValue),
    #[error("{endpoint} answered {status}")]
    Call {
        endpoint: String,
        #[source]
        status: tonic::Status,
    },
    #[error("no answer from {endpoint} within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("{endpoint} failed recently and is not asked again yet")]
    BackingOff { endpoint: String },
}

/// How long an endpoint that failed is skipped.
const BACKOFF: Duration = Duration::from_secs(10);

/// Endpoints in backoff remembered at most (discovered pods come and go).
const MAX_BACKOFF_ENDPOINTS: usize = 1_024;

/// What the API said of one stream, and when.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    pub segments: u32,
    pub at: SystemTime,
}

/// The API's answers for some streams of a query, by label set.
pub type Truths = HashMap<LabelSet, Truth, foldhash::fast::RandomState>;

/// A cached answer: the segment count, when it was asked (for the cache
/// bound) and when it was answered (the served timestamp).
type Answer = (u32, Instant, SystemTime);

/// Whether the API agreed with the metrics for a stream at a given mark.
#[derive(Debug, Clone, Copy)]
struct Checked {
    mark_bits: u64,
    agreed: bool,
}

/// Asks the controllers' gRPC API and remembers what it said.
pub struct ControllerApi {
    settings: ControllerApiSettings,
    /// The endpoints of the scraped controllers, for when none are fixed.
    discovered: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Endpoints that failed recently, and until when they are skipped.
    backoff: Mutex<HashMap<String, Instant>>,
    answers: Mutex<HashMap<(String, String), Answer>>,
    checked: Mutex<HashMap<LabelSet, Checked, foldhash::fast::RandomState>>,
    in_flight: tokio::sync::Semaphore,
    telemetry: Arc<Telemetry>,
}

impl ControllerApi {
    /// `scraped_hosts` lists the hosts of the scraped controllers, used
    /// with the settings' port when no endpoint is fixed.
    pub fn new(
        settings: ControllerApiSettings,
        scraped_hosts: impl Fn() -> Vec<String> + Send + Sync + 'static,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let (port, scheme) = (settings.port, if settings.tls { "https" } else { "http" });
        let discovered = move || scraped_hosts().into_iter().map(|host| format!("{scheme}://{}", join_host_port(&host, port))).collect();
        ControllerApi {
            in_flight: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
            settings,
            discovered: Box::new(discovered),
            channels: Mutex::default(),
            backoff: Mutex::default(),
            answers: Mutex::default(),
            checked: Mutex::default(),
            telemetry,
        }
    }

    /// Whether any endpoint can be asked at all.
    pub fn enabled(&self) -> bool {
        !self.settings.endpoints.is_empty() || self.settings.port != 0
    }

    fn endpoints(&self) -> Vec<String> {
        match self.settings.endpoints.is_empty() {
            false => self.settings.endpoints.clone(),
            true if self.settings.port != 0 => (self.discovered)(),
            true => Vec::new(),
        }
    }

    /// The stream's current number of segments, from the cache if younger
    /// than the cache bound, else from the first endpoint that answers.
    pub async fn current_segments(&self, scope: &str, stream: &str) -> Result<Truth, ControllerApiError> {
        let key = (scope.to_owned(), stream.to_owned());
        if let Some(&(segments, asked, at)) = lock(&self.answers).get(&key) {
            if asked.elapsed() <= self.settings.cache_for {
                return Ok(Truth { segments, at });
            }
        }
        let _permit = self.in_flight.acquire().await.map_err(|_| ControllerApiError::NoEndpoint)?;
        let endpoints = self.endpoints();
        let mut last_error = ControllerApiError::NoEndpoint;
        for endpoint in endpoints {
            let skipped = lock(&self.backoff).get(&endpoint).is_some_and(|until| Instant::now() < *until);
            if skipped {
                last_error = ControllerApiError::BackingOff { endpoint };
                continue;
            }
            match self.ask(&endpoint, scope, stream).await {
                Ok(segments) => {
                    if lock(&self.backoff).remove(&endpoint).is_some() {
                        tracing::info!(%endpoint, "controller API answers again");
                    }
                    let at = SystemTime::now();
                    let mut answers = lock(&self.answers);
                    answers.retain(|_, (_, asked, _)| asked.elapsed() <= self.settings.cache_for);
                    answers.insert(key, (segments, Instant::now(), at));
                    self.telemetry.controller_api_call(None);
                    return Ok(Truth { segments, at });
                }
                Err(error) => {
                    self.telemetry.controller_api_call(Some(&error));
                    let mut backoff = lock(&self.backoff);
                    if backoff.len() > MAX_BACKOFF_ENDPOINTS {
                        backoff.clear();
                    }
                    if backoff.insert(endpoint.clone(), Instant::now() + BACKOFF).is_none() {
                        tracing::warn!(%endpoint, scope, stream, %error, backoff = ?BACKOFF, "controller API call failed; skipping this endpoint for a while");
                    }
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn ask(&self, endpoint: &str, scope: &str, stream: &str) -> Result<u32, ControllerApiError> {
        let channel = self.channel(endpoint)?;
        let mut request = tonic::Request::new(proto::StreamInfo {
            scope: scope.to_owned(),
            stream: stream.to_owned(),
            access_operation: proto::ACCESS_NONE,
        });
        if let Some(path) = &self.settings.bearer_token_file {
            let token = tokio::fs::read_to_string(path).await.map_err(|source| ControllerApiError::Token { path: path.clone(), source })?;
            let value = format!("Bearer {}", token.trim()).parse().map_err(ControllerApiError::TokenValue)?;
            request.metadata_mut().insert("authorization", value);
        }
        let call = async {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<proto::StreamInfo, proto::SegmentRanges>::default();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(GET_CURRENT_SEGMENTS);
            grpc.unary(request, path, codec).await
        };
        let timeout = self.settings.timeout;
        let response = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ControllerApiError::Timeout { endpoint: endpoint.to_owned(), timeout })?
            .map_err(|status| ControllerApiError::Call { endpoint: endpoint.to_owned(), status })?;
        Ok(response.into_inner().segment_ranges.len() as u32)
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, ControllerApiError> {
        let mut channels = lock(&self.channels);
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let invalid = |source| ControllerApiError::Endpoint { endpoint: endpoint.to_owned(), source };
        let mut builder = Endpoint::from_shared(endpoint.to_owned()).map_err(invalid)?.connect_timeout(self.settings.timeout);
        if endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(pem) = &self.settings.ca_pem {
                tls = ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            builder = builder.tls_config(tls).map_err(invalid)?;
        }
        let channel = builder.connect_lazy();
        // Discovered controllers come and go: keep channels to current ones.
        if channels.len() > 4 * self.settings.concurrency.max(8) {
            channels.clear();
        }
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Whether a served series needs the API: undecided, unconfirmed and
    /// not yet confirmed at its mark, or found stale at its mark.
    pub fn needs_asking(&self, series: &Series<'_>) -> bool {
        let checked = lock(&self.checked).get(series.labels).copied();
        let at_mark = checked.filter(|c| c.mark_bits == series.mark.to_bits());
        match series.verdict {
            Verdict::Undecided => true,
            Verdict::Unconfirmed => at_mark.is_none_or(|c| !c.agreed),
            Verdict::Current => at_mark.is_some_and(|c| !c.agreed),
        }
    }

    /// The API's answers for the `segments_count` series of `view` in
    /// `scope` and `stream` (see [`crate::store::Family::narrowed`]) that
    /// `select` keeps and that need asking (or whose data was scraped
    /// before `oldest`, too old to serve), at most the per-query bound.
    pub async fn resolve<'v>(
        &self,
        view: &'v MergedView,
        scope: Option<&str>,
        stream: Option<&str>,
        oldest: SystemTime,
        select: impl Fn(&Series<'v>) -> bool,
    ) -> Truths {
        let mut truths = Truths::default();
        if !self.enabled() {
            return truths;
        }
        let wanted: Vec<Series<'v>> = view
            .family_or_undecided(SEGMENTS_FAMILY)
            .streams(scope, stream)
            .filter(|s| select(s))
            .filter(|s| s.scraped_at < oldest || self.needs_asking(s))
            .take(self.settings.per_query)
            .collect();
        let answers = futures::future::join_all(wanted.iter().map(|series| async move {
            let (scope, stream) = scope_and_stream(series.labels);
            (series, self.current_segments(scope, stream).await)
        }))
        .await;
        for (series, answer) in answers {
            if let Ok(truth) = answer {
                self.record(series, truth);
                tracing::debug!(labels = ?series.labels, segments = truth.segments, verdict = ?series.verdict,
                    "serving the controller API's segment count");
                truths.insert(series.labels.clone(), truth);
            }
        }
        truths
    }

    /// Remembers whether the metrics agreed with the API at the series'
    /// mark; a disagreement is a stale gauge, logged and counted.
    fn record(&self, series: &Series<'_>, truth: Truth) {
        let agreed = series.value == f64::from(truth.segments);
        let mut checked = lock(&self.checked);
        if checked.len() > MAX_CHECKED {
            checked.clear();
        }
        checked.insert(series.labels.clone(), Checked { mark_bits: series.mark.to_bits(), agreed });
        drop(checked);
        if !agreed && !series.value.is_nan() {
            let (scope, stream) = scope_and_stream(series.labels);
            tracing::warn!(scope, stream, metrics = series.value, controller_api = truth.segments, verdict = ?series.verdict,
                "stale segments_count gauge: the controller API disagrees; serving its value until the stream scales again");
            self.telemetry.stale_gauge(scope, stream);
        }
    }

    /// Compares a few served values with the API every check interval,
    /// taking the streams in turn.
    pub async fn keep_checking(self: Arc<Self>, store: Arc<Store>) {
        if self.settings.check_interval.is_zero() || !self.enabled() {
            return;
        }
        let mut next = 0usize;
        let mut tick = tokio::time::interval(self.settings.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let view = store.view();
            let Some(family) = view.family(SEGMENTS_FAMILY) else { continue };
            let served: Vec<Series<'_>> = family.narrowed(None, None).filter(|s| !s.value.is_nan()).collect();
            if served.is_empty() {
                continue;
            }
            next %= served.len();
            for series in served.iter().cycle().skip(next).take(self.settings.check_batch.min(served.len())) {
                let (scope, stream) = scope_and_stream(series.labels);
                if let Ok(truth) = self.current_segments(scope, stream).await {
                    self.record(series, truth);
                }
            }
            next += self.settings.check_batch;
        }
    }
}

/// Streams whose API verdicts are remembered; past it they are forgotten
/// at once (and asked again), so hostile stream counts cannot grow memory.
const MAX_CHECKED: usize = 100_000;

fn scope_and_stream(labels: &LabelSet) -> (&str, &str) {
    (labels.get(SCOPE_LABEL).unwrap_or(""), labels.get(STREAM_LABEL).unwrap_or(""))
}

fn join_host_port(host: &str, port: u16) -> String {
    match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoints: Vec<String>) -> ControllerApiSettings {
        ControllerApiSettings {
            endpoints,
            port: 0,
            tls: false,
            ca_pem: None,
            bearer_token_file: None,
            timeout: Duration::from_millis(500),
            cache_for: Duration::from_secs(1),
            concurrency: 2,
            per_query: 4,
            check_interval: Duration::ZERO,
            check_batch: 1,
        }
    }

    #[tokio::test]
    async fn a_failing_endpoint_is_skipped_for_a_while() {
        // A port nothing listens on: connection refused.
        let closed = test_support::net::free_port();
        let api = ControllerApi::new(settings(vec![format!("http://127.0.0.1:{closed}")]), Vec::new, Arc::default());
        let first = api.current_segments("test", "s").await;
        assert!(matches!(first, Err(ControllerApiError::Call { .. } | ControllerApiError::Timeout { .. })), "{first:?}");
        let second = api.current_segments("test", "s").await;
        assert!(matches!(second, Err(ControllerApiError::BackingOff { .. })), "{second:?}");
    }

    #[test]
    fn discovered_hosts_become_endpoints_at_the_api_port() {
        let mut settings = settings(Vec::new());
        settings.port = 9090;
        let api = ControllerApi::new(settings, || vec!["10.0.0.5".to_owned(), "fd00::5".to_owned()], Arc::default());
        assert!(api.enabled());
        assert_eq!(api.endpoints(), ["http://10.0.0.5:9090", "http://[fd00::5]:9090"]);
        let api = ControllerApi::new(self::settings(Vec::new()), Vec::new, Arc::default());
        assert!(!api.enabled(), "no fixed endpoint and no port");
    }
}
