//! KEDA's external scaler API (`externalscaler.ExternalScaler` of KEDA's
//! `externalscaler.proto`) on a port of its own, over TLS with a client
//! certificate required in the handshake.
//!
//! A trigger names streams by its metadata (`scope` and `stream`, or a
//! `labelSelector`); its value is the sum of their segment counts, resolved
//! as the metrics APIs resolve an Object query: whole, or an error (so
//! KEDA's fallback applies), never 0 for a value not known. The namespace
//! of the ScaledObject scopes what it sees, as the namespace of a metrics
//! request does. `StreamIsActive` re-evaluates whenever a merged view or
//! the inventory's answers change (and every [`RECHECK`]), and sends the
//! activity when it differs from the last sent.

use super::metrics_api::Total;
use super::selector::Selector;
use super::status::ApiError;
use super::App;
use crate::controller_api::SEGMENTS_FAMILY;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tonic::{Code, Status};
use tower::Layer;

/// The messages of `externalscaler.proto`, field numbers as KEDA's.
pub mod proto {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScaledObjectRef {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub namespace: String,
        #[prost(map = "string, string", tag = "3")]
        pub scaler_metadata: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IsActiveResponse {
        #[prost(bool, tag = "1")]
        pub result: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMetricSpecResponse {
        #[prost(message, repeated, tag = "1")]
        pub metric_specs: Vec<MetricSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricSpec {
        #[prost(string, tag = "1")]
        pub metric_name: String,
        /// Deprecated by KEDA for `target_size_float`; filled for older KEDAs.
        #[prost(int64, tag = "2")]
        pub target_size: i64,
        #[prost(double, tag = "3")]
        pub target_size_float: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMetricsRequest {
        #[prost(message, optional, tag = "1")]
        pub scaled_object_ref: Option<ScaledObjectRef>,
        #[prost(string, tag = "2")]
        pub metric_name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMetricsResponse {
        #[prost(message, repeated, tag = "1")]
        pub metric_values: Vec<MetricValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricValue {
        #[prost(string, tag = "1")]
        pub metric_name: String,
        /// Deprecated by KEDA for `metric_value_float`; filled for older KEDAs.
        #[prost(int64, tag = "2")]
        pub metric_value: i64,
        #[prost(double, tag = "3")]
        pub metric_value_float: f64,
    }
}

/// The gRPC path prefix of the service.
pub const SERVICE: &str = "/externalscaler.ExternalScaler/";

/// The one metric a trigger has: the sum of its streams' segments.
pub const METRIC_NAME: &str = "pravega-segments";

/// How often a push stream looks again without a change notification: an
/// API answer ages out of what may be served without one.
const RECHECK: Duration = Duration::from_secs(5);

/// Largest request decoded: a ScaledObjectRef with its metadata.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Connections served at once; KEDA's operator holds one per scaler address.
const MAX_CONNECTIONS: usize = 64;

/// Trigger metadata keys KEDA adds itself, ignored here.
const KEDA_KEYS: [&str; 3] = ["scalerAddress", "enableTLS", "unsafeSsl"];

/// Metadata keys of a trigger.
const KEYS: &str = "scope, stream, labelSelector, segmentsPerReplica, activationThreshold";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerError {
    #[error("no streams named: give `scope` (and optionally `stream`) or `labelSelector`")]
    NoStreams,
    #[error("`labelSelector` and `scope`/`stream` together: give one or the other")]
    Both,
    #[error("`stream` needs `scope`")]
    StreamWithoutScope,
    #[error("`{key}` {value:?} is not a Pravega name (letters, digits, '-', '.', '_')")]
    Name { key: &'static str, value: String },
    #[error("`labelSelector`: {0}")]
    Selector(#[source] super::selector::SelectorError),
    #[error("`{key}` {value:?} is not a number {bound}")]
    Number { key: &'static str, value: String, bound: &'static str },
    #[error("unknown metadata key `{0}` (known: {KEYS})")]
    Unknown(String),
    #[error("the ScaledObjectRef has no namespace")]
    NoNamespace,
}

/// What a trigger's metadata asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub selector: Selector,
    /// `segmentsPerReplica`: the target value per replica (default 1).
    pub per_replica: f64,
    /// `activationThreshold`: active above it (default 0).
    pub activation: f64,
}

impl Trigger {
    pub fn parse(metadata: &HashMap<String, String>) -> Result<Self, TriggerError> {
        if let Some(unknown) = metadata.keys().find(|k| !KEYS.split(", ").any(|known| known == *k) && !KEDA_KEYS.contains(&k.as_str())) {
            return Err(TriggerError::Unknown(unknown.clone()));
        }
        let get = |key: &str| metadata.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let selector = match (get("scope"), get("stream"), get("labelSelector")) {
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => return Err(TriggerError::Both),
            (None, Some(_), None) => return Err(TriggerError::StreamWithoutScope),
            (None, None, None) => return Err(TriggerError::NoStreams),
            (None, None, Some(text)) => Selector::parse(text).map_err(TriggerError::Selector)?,
            (Some(scope), stream, None) => {
                let mut text = format!("scope={}", pravega_name("scope", scope)?);
                if let Some(stream) = stream {
                    text += &format!(",stream={}", pravega_name("stream", stream)?);
                }
                Selector::parse(&text).map_err(TriggerError::Selector)?
            }
        };
        let per_replica = number(get("segmentsPerReplica"), "segmentsPerReplica", 1.0, |n| n > 0.0, "above 0")?;
        let activation = number(get("activationThreshold"), "activationThreshold", 0.0, |n| n >= 0.0, "of 0 or more")?;
        Ok(Trigger { selector, per_replica, activation })
    }
}

fn pravega_name<'a>(key: &'static str, value: &'a str) -> Result<&'a str, TriggerError> {
    let valid = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    valid.then_some(value).ok_or_else(|| TriggerError::Name { key, value: value.to_owned() })
}

fn number(value: Option<&str>, key: &'static str, default: f64, ok: fn(f64) -> bool, bound: &'static str) -> Result<f64, TriggerError> {
    let Some(text) = value else { return Ok(default) };
    text.parse::<f64>().ok().filter(|n| n.is_finite() && ok(*n)).ok_or_else(|| TriggerError::Number { key, value: text.to_owned(), bound })
}

impl From<TriggerError> for Status {
    fn from(error: TriggerError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

/// The trigger of a ScaledObjectRef and the namespace it is in.
fn trigger_of(reference: &proto::ScaledObjectRef) -> Result<Trigger, TriggerError> {
    if reference.namespace.is_empty() {
        return Err(TriggerError::NoNamespace);
    }
    Trigger::parse(&reference.scaler_metadata)
}

/// StreamIsActive streams held, in all and per client.
struct Streams {
    max_total: usize,
    max_per_client: usize,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One stream held; given back when dropped (the client went away).
struct Slot {
    streams: Arc<Streams>,
    client: IpAddr,
}

impl Streams {
    fn take(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Status> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let of_client = held.1.get(&client).copied().unwrap_or(0);
        if held.0 >= self.max_total {
            return Err(Status::resource_exhausted(format!("{} StreamIsActive streams are open (--keda-max-streams)", self.max_total)));
        }
        if of_client >= self.max_per_client {
            return Err(Status::resource_exhausted(format!(
                "this client holds {of_client} StreamIsActive streams (--keda-max-streams-per-client)"
            )));
        }
        held.0 += 1;
        *held.1.entry(client).or_default() += 1;
        Ok(Slot { streams: self.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.streams.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.0 -= 1;
        if let Some(n) = held.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.client);
            }
        }
    }
}

/// The client of a connection: its source address.
#[derive(Debug, Clone, Copy)]
struct Client(IpAddr);

pub struct Scaler {
    app: Arc<App>,
    streams: Arc<Streams>,
}

impl Scaler {
    pub fn new(app: Arc<App>, max_streams: usize, max_streams_per_client: usize) -> Arc<Self> {
        let streams = Arc::new(Streams { max_total: max_streams, max_per_client: max_streams_per_client, held: Mutex::default() });
        Arc::new(Scaler { app, streams })
    }

    /// The trigger's value: the sum of its streams' segments, or why not.
    /// `refresh` first scrapes controllers whose data is stale, as a
    /// metrics query does.
    async fn segments(&self, namespace: &str, trigger: &Trigger, refresh: bool) -> Result<f64, Status> {
        let app = &*self.app;
        if refresh {
            app.pool.refresh_stale().await;
        }
        let visible = app.scopes.visible(Some(namespace));
        let view = app.store.view();
        let selector = &trigger.selector;
        let segments = super::resolve(app, &view, visible, SEGMENTS_FAMILY, selector, Some(app.max_list_items)).await;
        let total = super::with_view(app, &view, segments.as_ref(), visible, |answer| answer.total(SEGMENTS_FAMILY, selector));
        let value = match total {
            Ok(Total::Sum { value, .. }) => Ok(value),
            Ok(Total::Withheld(why)) => {
                app.telemetry.withheld("keda");
                Err(Status::unavailable(format!(
                    "withheld: a sum must include every selected stream, and these have no value that can be vouched for: {why}"
                )))
            }
            Ok(Total::NoStream) => {
                Err(Status::not_found(format!("no stream matches {:?} in namespace {namespace:?}", selector.to_string())))
            }
            Err(ApiError::TooManyItems(message)) => Err(Status::invalid_argument(message)),
            Err(error) => Err(Status::unavailable(error.to_string())),
        };
        if let Some(status) = value.as_ref().err().filter(|_| NO_VALUE_LOG.allow()) {
            tracing::warn!(namespace, selector = %selector.to_string(), code = ?status.code(), error = status.message(),
                "KEDA scaler: no value for a trigger");
        }
        value
    }

    async fn is_active(&self, reference: proto::ScaledObjectRef) -> Result<proto::IsActiveResponse, Status> {
        let trigger = trigger_of(&reference)?;
        let segments = self.segments(&reference.namespace, &trigger, true).await?;
        Ok(proto::IsActiveResponse { result: segments > trigger.activation })
    }

    fn metric_spec(&self, reference: proto::ScaledObjectRef) -> Result<proto::GetMetricSpecResponse, Status> {
        let trigger = trigger_of(&reference)?;
        let spec = proto::MetricSpec {
            metric_name: METRIC_NAME.to_owned(),
            target_size: trigger.per_replica.ceil() as i64,
            target_size_float: trigger.per_replica,
        };
        Ok(proto::GetMetricSpecResponse { metric_specs: vec![spec] })
    }

    async fn metrics(&self, request: proto::GetMetricsRequest) -> Result<proto::GetMetricsResponse, Status> {
        let reference = request.scaled_object_ref.ok_or_else(|| Status::invalid_argument("no scaledObjectRef"))?;
        let trigger = trigger_of(&reference)?;
        if request.metric_name != METRIC_NAME {
            return Err(Status::invalid_argument(format!("unknown metric {:?}; the one metric is {METRIC_NAME:?}", request.metric_name)));
        }
        let segments = self.segments(&reference.namespace, &trigger, true).await?;
        let value =
            proto::MetricValue { metric_name: METRIC_NAME.to_owned(), metric_value: segments.round() as i64, metric_value_float: segments };
        Ok(proto::GetMetricsResponse { metric_values: vec![value] })
    }

    /// The trigger's activity now, then whenever it changes, while the
    /// client listens. Withheld, nothing is sent: KEDA's polling of
    /// GetMetrics meets the error and applies its fallback.
    fn activity(
        self: Arc<Self>,
        reference: proto::ScaledObjectRef,
        slot: Slot,
    ) -> Result<impl futures::Stream<Item = Result<proto::IsActiveResponse, Status>> + Send + 'static, Status> {
        let trigger = trigger_of(&reference)?;
        let merges = self.app.store.merges();
        let answers = self.app.inventory.as_ref().map(|inventory| inventory.changes());
        let watch = Watch { scaler: self, namespace: reference.namespace, trigger, merges, answers, last: None, first: true, _slot: slot };
        Ok(futures::stream::unfold(watch, |mut watch| async move {
            loop {
                if !std::mem::take(&mut watch.first) {
                    watch.wait().await;
                }
                let refresh = watch.last.is_none();
                match watch.scaler.segments(&watch.namespace, &watch.trigger, refresh).await {
                    Ok(segments) => {
                        let active = segments > watch.trigger.activation;
                        if watch.last.replace(active) != Some(active) {
                            return Some((Ok(proto::IsActiveResponse { result: active }), watch));
                        }
                    }
                    Err(status) if status.code() == Code::InvalidArgument => return Some((Err(status), watch)),
                    Err(_) => watch.last = None,
                }
            }
        }))
    }
}

/// One StreamIsActive stream's state.
struct Watch {
    scaler: Arc<Scaler>,
    namespace: String,
    trigger: Trigger,
    merges: tokio::sync::watch::Receiver<u64>,
    answers: Option<tokio::sync::watch::Receiver<u64>>,
    last: Option<bool>,
    first: bool,
    _slot: Slot,
}

impl Watch {
    async fn wait(&mut self) {
        until_change(&mut self.merges, self.answers.as_mut()).await;
    }
}

/// Until a merged view or the inventory's answers change, or [`RECHECK`]
/// passes.
async fn until_change(merges: &mut tokio::sync::watch::Receiver<u64>, answers: Option<&mut tokio::sync::watch::Receiver<u64>>) {
    let answers = async {
        match answers {
            Some(answers) => changed(answers).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = changed(merges) => {}
        _ = answers => {}
        _ = tokio::time::sleep(RECHECK) => {}
    }
}

/// Resolves at the next change; never if the sender is gone.
async fn changed(receiver: &mut tokio::sync::watch::Receiver<u64>) {
    if receiver.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The gRPC service's routes.
pub fn router(scaler: Arc<Scaler>) -> Router {
    Router::new()
        .route(&format!("{SERVICE}IsActive"), post(is_active))
        .route(&format!("{SERVICE}StreamIsActive"), post(stream_is_active))
        .route(&format!("{SERVICE}GetMetricSpec"), post(get_metric_spec))
        .route(&format!("{SERVICE}GetMetrics"), post(get_metrics))
        .fallback(|| async { Status::unimplemented("not a method of externalscaler.ExternalScaler").into_http::<axum::body::Body>() })
        .with_state(scaler)
}

fn grpc<Out, In>() -> tonic::server::Grpc<tonic_prost::ProstCodec<Out, In>>
where
    Out: prost::Message + Send + 'static,
    In: prost::Message + Default + Send + 'static,
{
    tonic::server::Grpc::new(tonic_prost::ProstCodec::default()).max_decoding_message_size(MAX_REQUEST_BYTES)
}

/// Answers a unary call with `call`.
async fn unary<In, Out, Fut>(request: Request, call: impl FnOnce(In) -> Fut + Clone + Send + 'static) -> Response
where
    In: prost::Message + Default + Send + 'static,
    Out: prost::Message + Send + 'static,
    Fut: Future<Output = Result<Out, Status>> + Send + 'static,
{
    let service = tower::service_fn(move |request: tonic::Request<In>| {
        let call = call.clone();
        async move { call(request.into_inner()).await.map(tonic::Response::new) }
    });
    grpc::<Out, In>().unary(service, request).await.map(axum::body::Body::new).into_response()
}

async fn is_active(State(scaler): State<Arc<Scaler>>, request: Request) -> Response {
    unary(request, move |reference| async move { scaler.is_active(reference).await }).await
}

async fn get_metric_spec(State(scaler): State<Arc<Scaler>>, request: Request) -> Response {
    unary(request, move |reference| async move { scaler.metric_spec(reference) }).await
}

async fn get_metrics(State(scaler): State<Arc<Scaler>>, request: Request) -> Response {
    unary(request, move |request| async move { scaler.metrics(request).await }).await
}

async fn stream_is_active(State(scaler): State<Arc<Scaler>>, request: Request) -> Response {
    let client = request.extensions().get::<Client>().copied();
    let service = tower::service_fn(move |request: tonic::Request<proto::ScaledObjectRef>| {
        let scaler = scaler.clone();
        async move {
            let client = client.ok_or_else(|| Status::internal("no client address"))?;
            let slot = scaler.streams.take(client.0)?;
            scaler.activity(request.into_inner(), slot).map(|stream| tonic::Response::new(Box::pin(stream)))
        }
    });
    grpc::<proto::IsActiveResponse, proto::ScaledObjectRef>()
        .server_streaming(service, request)
        .await
        .map(axum::body::Body::new)
        .into_response()
}

/// How connections are kept.
#[derive(Debug, Clone)]
pub struct Limits {
    pub tls_handshake_timeout: Duration,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    /// HTTP/2 streams one connection may have open: every push stream
    /// and unary calls beside.
    pub max_concurrent_streams: u32,
}

/// Triggers without a value are logged at most once per this interval.
static NO_VALUE_LOG: crate::escape::RateLimit = crate::escape::RateLimit::per(Duration::from_secs(10));

/// Refused handshakes are logged at most once per this interval.
static REFUSED_LOG: crate::escape::RateLimit = crate::escape::RateLimit::per(Duration::from_secs(10));

/// Accepts connections until `shutdown`, each over TLS with a verified
/// client certificate, and serves the scaler over HTTP/2.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new()).max_concurrent_streams(limits.max_concurrent_streams);
    if !limits.http2_keepalive_interval.is_zero() {
        http2.keep_alive_interval(limits.http2_keepalive_interval).keep_alive_timeout(limits.http2_keepalive_timeout);
    }
    let http2 = Arc::new(http2);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = async {
                let permit = connections.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => accepted,
            _ = &mut shutdown => return,
        };
        let (Ok(permit), Ok((tcp, remote))) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, http2, timeout) = (acceptor.clone(), router.clone(), http2.clone(), limits.tls_handshake_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    if REFUSED_LOG.allow() {
                        tracing::warn!(%remote, %error, "KEDA scaler: TLS handshake refused (a client certificate of --keda-client-ca-file is required)");
                    }
                    return;
                }
                Err(_) => return tracing::debug!(%remote, "KEDA scaler: TLS handshake timed out"),
            };
            let service = axum::Extension(Client(remote.ip())).layer(router);
            if let Err(error) = http2.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service)).await {
                tracing::debug!(%remote, %error, "KEDA scaler: connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Trigger, TriggerError> {
        Trigger::parse(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn metadata_names_streams_one_way() {
        let trigger = parse(&[("scope", "test"), ("stream", "s"), ("scalerAddress", "x:1")]).unwrap();
        assert_eq!(trigger.selector, Selector::parse("scope=test,stream=s").unwrap());
        assert_eq!((trigger.per_replica, trigger.activation), (1.0, 0.0));
        let trigger =
            parse(&[("labelSelector", "scope=test,stream in (a,b)"), ("segmentsPerReplica", "2.5"), ("activationThreshold", "1")]);
        assert_eq!(trigger.map(|t| (t.per_replica, t.activation)), Ok((2.5, 1.0)));
        assert_eq!(parse(&[]), Err(TriggerError::NoStreams));
        assert_eq!(parse(&[("stream", "s")]), Err(TriggerError::StreamWithoutScope));
        assert_eq!(parse(&[("scope", "a"), ("labelSelector", "scope=a")]), Err(TriggerError::Both));
        assert!(matches!(parse(&[("scope", "a,stream=b")]), Err(TriggerError::Name { key: "scope", .. })), "no selector injection");
        assert!(matches!(parse(&[("labelSelector", "scope in (")]), Err(TriggerError::Selector(_))));
        for bad in ["0", "-1", "NaN", "inf", "two"] {
            assert!(matches!(parse(&[("scope", "a"), ("segmentsPerReplica", bad)]), Err(TriggerError::Number { .. })), "{bad}");
        }
        assert!(matches!(parse(&[("scope", "a"), ("activationThreshold", "-1")]), Err(TriggerError::Number { .. })));
        assert_eq!(parse(&[("scope", "a"), ("segmentsPerReplicas", "2")]), Err(TriggerError::Unknown("segmentsPerReplicas".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_stream_wakes_at_each_change_and_else_after_the_recheck() {
        let (merged, mut merges) = tokio::sync::watch::channel(0);
        let (answered, mut answers) = tokio::sync::watch::channel(0);
        let start = tokio::time::Instant::now();
        merged.send_modify(|n| *n += 1);
        until_change(&mut merges, Some(&mut answers)).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "a merged view at once");
        answered.send_modify(|n| *n += 1);
        until_change(&mut merges, Some(&mut answers)).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "an answer at once");
        until_change(&mut merges, Some(&mut answers)).await;
        assert_eq!(start.elapsed(), RECHECK, "nothing changed: the recheck");
        drop((merged, answered));
        until_change(&mut merges, None).await;
        assert_eq!(start.elapsed(), RECHECK * 2, "senders gone: only the recheck");
    }

    #[test]
    fn slots_are_bounded_in_all_and_per_client_and_given_back() {
        let streams = Arc::new(Streams { max_total: 3, max_per_client: 2, held: Mutex::default() });
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = streams.take(a).unwrap();
        let _second = streams.take(a).unwrap();
        assert_eq!(streams.take(a).map(|_| ()).unwrap_err().code(), Code::ResourceExhausted);
        let _third = streams.take(b).unwrap();
        assert_eq!(streams.take(b).map(|_| ()).unwrap_err().code(), Code::ResourceExhausted, "in all");
        drop(first);
        assert!(streams.take(a).is_ok(), "a closed stream gives its slot back");
    }
}
