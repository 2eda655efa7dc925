//! The controllers' gRPC API (`ControllerService` of Pravega's
//! `Controller.proto`): which scopes and streams exist, and each stream's
//! current segment count. [`crate::inventory`] decides when to ask; this
//! module only asks, bounded in time and in what it accepts.
//!
//! Errors about one stream (NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT,
//! an implausible answer) are that stream's; only transport failures and
//! timeouts take an endpoint out of turn for a while.

use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

/// The family the controller's API can answer for.
pub const SEGMENTS_FAMILY: &str = "pravega_controller_segments_count";

const SERVICE: &str = "/io.pravega.controller.stream.api.grpc.v1.ControllerService/";

/// Segments above which an answer is not believed. Pravega's segment
/// counts follow the event rate within a stream's scaling policy and stay
/// in the tens or hundreds; each segment is a container's unit of work.
pub const MAX_SEGMENTS: u64 = 10_000;

/// Largest answer decoded: [`MAX_SEGMENTS`] ranges whose scope and stream
/// names have Pravega's longest length (255 bytes each), with room for the
/// other fields; also bounds a page of `listStreamsInScope`.
const MAX_ANSWER_BYTES: usize = MAX_SEGMENTS as usize * 600;

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

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContinuationToken {
        #[prost(string, tag = "1")]
        pub token: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopesRequest {
        #[prost(message, optional, tag = "1")]
        pub continuation_token: Option<ContinuationToken>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopesResponse {
        #[prost(string, repeated, tag = "1")]
        pub scopes: Vec<String>,
        #[prost(message, optional, tag = "2")]
        pub continuation_token: Option<ContinuationToken>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeInfo {
        #[prost(string, tag = "1")]
        pub scope: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamsInScopeRequest {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<ScopeInfo>,
        #[prost(message, optional, tag = "2")]
        pub continuation_token: Option<ContinuationToken>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamsInScopeResponse {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamInfo>,
        #[prost(message, optional, tag = "2")]
        pub continuation_token: Option<ContinuationToken>,
        /// 0 `SUCCESS`, 1 `FAILURE`, 2 `SCOPE_NOT_FOUND`.
        #[prost(int32, tag = "3")]
        pub status: i32,
    }

    /// `AccessOperation.NONE`.
    pub const ACCESS_NONE: i32 = 1;
    /// `StreamsInScopeResponse.Status.SCOPE_NOT_FOUND`.
    pub const SCOPE_NOT_FOUND: i32 = 2;
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
    /// Calls in flight at once.
    pub concurrency: usize,
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
    #[error("{endpoint} answered {segments} segments, more than any stream has (at most {MAX_SEGMENTS} are believed)")]
    Implausible { endpoint: String, segments: u64 },
    #[error("{endpoint} reports no scope {scope:?}")]
    ScopeNotFound { endpoint: String, scope: String },
    #[error("{endpoint} failed to list the streams of scope {scope:?}")]
    ListFailed { endpoint: String, scope: String },
}

/// What an error says about the stream or scope that was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The stream (or scope) does not exist.
    Gone,
    /// This stream's answer cannot be had or believed; other streams are
    /// unaffected.
    Refused,
    /// The endpoint or the way to it failed: nothing is known of the stream.
    Unreachable,
}

impl ControllerApiError {
    pub fn fault(&self) -> Fault {
        match self {
            ControllerApiError::ScopeNotFound { .. } => Fault::Gone,
            // Transport failures reach here as UNAVAILABLE (or UNKNOWN for
            // an answer that is not gRPC); any other code is the server's
            // answer about what was asked (Pravega answers INTERNAL for a
            // stream still being created).
            ControllerApiError::Call { status, .. } => match status.code() {
                Code::NotFound => Fault::Gone,
                Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled | Code::Unauthenticated => Fault::Unreachable,
                _ => Fault::Refused,
            },
            ControllerApiError::Implausible { .. } | ControllerApiError::ListFailed { .. } => Fault::Refused,
            _ => Fault::Unreachable,
        }
    }

    /// A bounded name for the adapter's own metrics.
    pub fn reason(&self) -> &'static str {
        match (self, self.fault()) {
            (ControllerApiError::Timeout { .. }, _) => "timeout",
            (ControllerApiError::Implausible { .. }, _) => "implausible",
            (_, Fault::Gone) => "not_found",
            (_, Fault::Refused) => "refused",
            (_, Fault::Unreachable) => "error",
        }
    }
}

/// How long an endpoint that failed is skipped.
const BACKOFF: Duration = Duration::from_secs(10);

/// Endpoints remembered at most, in backoff or with a channel (discovered
/// pods come and go): past it the oldest entries go first.
const MAX_ENDPOINTS: usize = 256;

/// Asks the controllers' gRPC API.
pub struct ControllerApi {
    settings: ControllerApiSettings,
    /// The endpoints of the scraped controllers, for when none are fixed.
    discovered: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Endpoints that failed recently, and until when they are skipped.
    backoff: Mutex<HashMap<String, Instant>>,
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
            telemetry,
        }
    }

    /// Whether any endpoint can be asked at all.
    pub fn enabled(&self) -> bool {
        !self.settings.endpoints.is_empty() || self.settings.port != 0
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn endpoints(&self) -> Vec<String> {
        match self.settings.endpoints.is_empty() {
            false => self.settings.endpoints.clone(),
            true if self.settings.port != 0 => (self.discovered)(),
            true => Vec::new(),
        }
    }

    /// The stream's current number of segments (0 for a sealed stream).
    pub async fn current_segments(&self, scope: &str, stream: &str) -> Result<u32, ControllerApiError> {
        let request = proto::StreamInfo { scope: scope.to_owned(), stream: stream.to_owned(), access_operation: proto::ACCESS_NONE };
        let segments = self.call("getCurrentSegments", request, SegmentCountCodec).await?;
        Ok(segments)
    }

    /// Every scope, following the continuation tokens.
    pub async fn list_scopes(&self) -> Result<Vec<String>, ControllerApiError> {
        let mut scopes = Vec::new();
        let mut token = None;
        loop {
            let request = proto::ScopesRequest { continuation_token: token };
            let page: proto::ScopesResponse = self.call("listScopes", request, prost_codec()).await?;
            if page.scopes.is_empty() {
                return Ok(scopes);
            }
            scopes.extend(page.scopes);
            token = page.continuation_token;
        }
    }

    /// Every stream of `scope`, following the continuation tokens.
    pub async fn list_streams(&self, scope: &str) -> Result<Vec<String>, ControllerApiError> {
        let mut streams = Vec::new();
        let mut token = None;
        loop {
            let request =
                proto::StreamsInScopeRequest { scope: Some(proto::ScopeInfo { scope: scope.to_owned() }), continuation_token: token };
            let (endpoint, page): (String, proto::StreamsInScopeResponse) =
                self.call_at("listStreamsInScope", request, prost_codec()).await?;
            match page.status {
                0 => {}
                proto::SCOPE_NOT_FOUND => return Err(ControllerApiError::ScopeNotFound { endpoint, scope: scope.to_owned() }),
                _ => return Err(ControllerApiError::ListFailed { endpoint, scope: scope.to_owned() }),
            }
            if page.streams.is_empty() {
                return Ok(streams);
            }
            streams.extend(page.streams.into_iter().filter(|s| s.scope == scope).map(|s| s.stream));
            token = page.continuation_token;
        }
    }

    async fn call<C>(&self, method: &'static str, request: C::Encode, codec: C) -> Result<C::Decode, ControllerApiError>
    where
        C: Codec + Clone + Send + 'static,
        C::Encode: Clone + Send + Sync + 'static,
        C::Decode: Send + Sync + 'static,
    {
        self.call_at(method, request, codec).await.map(|(_, answer)| answer)
    }

    /// Asks the first endpoint not in backoff; an endpoint that fails in
    /// transport is skipped for a while and the next one asked. Returns
    /// which endpoint answered.
    async fn call_at<C>(&self, method: &'static str, request: C::Encode, codec: C) -> Result<(String, C::Decode), ControllerApiError>
    where
        C: Codec + Clone + Send + 'static,
        C::Encode: Clone + Send + Sync + 'static,
        C::Decode: Send + Sync + 'static,
    {
        let _permit = self.in_flight.acquire().await.map_err(|_| ControllerApiError::NoEndpoint)?;
        let mut last_error = ControllerApiError::NoEndpoint;
        for endpoint in self.endpoints() {
            let skipped = lock(&self.backoff).get(&endpoint).is_some_and(|until| Instant::now() < *until);
            if skipped {
                last_error = ControllerApiError::BackingOff { endpoint };
                continue;
            }
            let outcome = self.ask(&endpoint, method, request.clone(), codec.clone()).await;
            self.telemetry.controller_api_call(method, outcome.as_ref().err());
            match outcome {
                Ok(answer) => {
                    if lock(&self.backoff).remove(&endpoint).is_some() {
                        tracing::info!(%endpoint, "controller API answers again");
                    }
                    return Ok((endpoint, answer));
                }
                Err(error) if error.fault() != Fault::Unreachable => return Err(error),
                Err(error) => {
                    let mut backoff = lock(&self.backoff);
                    bound(&mut backoff);
                    if backoff.insert(endpoint.clone(), Instant::now() + BACKOFF).is_none() {
                        tracing::warn!(%endpoint, method, %error, backoff = ?BACKOFF, "controller API call failed; skipping this endpoint for a while");
                    }
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn ask<C>(&self, endpoint: &str, method: &'static str, message: C::Encode, codec: C) -> Result<C::Decode, ControllerApiError>
    where
        C: Codec + Send + 'static,
        C::Encode: Send + Sync + 'static,
        C::Decode: Send + Sync + 'static,
    {
        let channel = self.channel(endpoint)?;
        let mut request = tonic::Request::new(message);
        if let Some(path) = &self.settings.bearer_token_file {
            let token = tokio::fs::read_to_string(path).await.map_err(|source| ControllerApiError::Token { path: path.clone(), source })?;
            let value = format!("Bearer {}", token.trim()).parse().map_err(ControllerApiError::TokenValue)?;
            request.metadata_mut().insert("authorization", value);
        }
        let path =
            tonic::codegen::http::uri::PathAndQuery::try_from(format!("{SERVICE}{method}")).map_err(|_| ControllerApiError::NoEndpoint)?;
        let call = async {
            let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            grpc.unary(request, path, codec).await
        };
        let timeout = self.settings.timeout;
        let response = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ControllerApiError::Timeout { endpoint: endpoint.to_owned(), timeout })?
            .map_err(|status| match implausible_count(&status) {
                Some(segments) => ControllerApiError::Implausible { endpoint: endpoint.to_owned(), segments },
                None => ControllerApiError::Call { endpoint: endpoint.to_owned(), status },
            })?;
        Ok(response.into_inner())
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
        if channels.len() >= MAX_ENDPOINTS {
            let current = self.endpoints();
            channels.retain(|endpoint, _| current.contains(endpoint));
        }
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Drops expired backoffs, and past [`MAX_ENDPOINTS`] the one ending soonest.
fn bound(backoff: &mut HashMap<String, Instant>) {
    let now = Instant::now();
    backoff.retain(|_, until| *until > now);
    while backoff.len() >= MAX_ENDPOINTS {
        let Some(first) = backoff.iter().min_by_key(|(_, until)| **until).map(|(e, _)| e.clone()) else { break };
        backoff.remove(&first);
    }
}

fn prost_codec<T, U>() -> tonic_prost::ProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    tonic_prost::ProstCodec::default()
}

/// Encodes a `StreamInfo` and decodes a `SegmentRanges` into its number of
/// ranges, without building them: an answer costs its bytes, not a struct
/// per range.
#[derive(Debug, Clone, Copy, Default)]
struct SegmentCountCodec;

impl Codec for SegmentCountCodec {
    type Encode = proto::StreamInfo;
    type Decode = u32;
    type Encoder = <tonic_prost::ProstCodec<proto::StreamInfo, proto::SegmentRanges> as Codec>::Encoder;
    type Decoder = SegmentCountDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<proto::StreamInfo, proto::SegmentRanges>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SegmentCountDecoder
    }
}

#[derive(Debug)]
struct SegmentCountDecoder;

/// The status message of an answer with more than [`MAX_SEGMENTS`] ranges.
const IMPLAUSIBLE: &str = "implausible segment count ";

impl Decoder for SegmentCountDecoder {
    type Item = u32;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<u32>, tonic::Status> {
        let segments = count_segment_ranges(src).map_err(|e| tonic::Status::internal(format!("invalid SegmentRanges: {e}")))?;
        if segments > MAX_SEGMENTS {
            return Err(tonic::Status::out_of_range(format!("{IMPLAUSIBLE}{segments}")));
        }
        Ok(Some(segments as u32))
    }
}

fn implausible_count(status: &tonic::Status) -> Option<u64> {
    (status.code() == Code::OutOfRange).then(|| status.message().strip_prefix(IMPLAUSIBLE)?.parse().ok()).flatten()
}

/// Counts the `segmentRanges` fields (field 1) of a `SegmentRanges`
/// message, skipping over everything else by the wire format.
fn count_segment_ranges(buf: &mut impl bytes::Buf) -> Result<u64, String> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let mut ranges = 0u64;
    while buf.has_remaining() {
        let (field, wire_type) = decode_key(buf).map_err(|e| e.to_string())?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(buf).map_err(|e| e.to_string())?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                if field == 1 {
                    ranges += 1;
                }
                decode_varint(buf).map_err(|e| e.to_string())?
            }
            WireType::StartGroup | WireType::EndGroup => return Err("groups are not used".into()),
        };
        let skip = usize::try_from(skip).ok().filter(|&n| n <= buf.remaining()).ok_or("a field runs past the end")?;
        buf.advance(skip);
    }
    Ok(ranges)
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
    use prost::Message;

    fn settings(endpoints: Vec<String>) -> ControllerApiSettings {
        ControllerApiSettings {
            endpoints,
            port: 0,
            tls: false,
            ca_pem: None,
            bearer_token_file: None,
            timeout: Duration::from_millis(500),
            concurrency: 2,
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

    #[test]
    fn errors_about_one_stream_are_told_from_unreachable_endpoints() {
        let call = |code| ControllerApiError::Call { endpoint: "e".into(), status: tonic::Status::new(code, "") };
        assert_eq!(call(Code::NotFound).fault(), Fault::Gone);
        assert_eq!(call(Code::PermissionDenied).fault(), Fault::Refused);
        assert_eq!(call(Code::InvalidArgument).fault(), Fault::Refused);
        assert_eq!(call(Code::Internal).fault(), Fault::Refused, "Pravega's answer for a stream being created");
        assert_eq!(call(Code::Unavailable).fault(), Fault::Unreachable);
        assert_eq!(ControllerApiError::Timeout { endpoint: "e".into(), timeout: Duration::ZERO }.fault(), Fault::Unreachable);
        assert_eq!(ControllerApiError::Implausible { endpoint: "e".into(), segments: 1 << 40 }.fault(), Fault::Refused);
    }

    #[test]
    fn segment_ranges_are_counted_without_being_built() {
        let range = |id: i64| proto::SegmentRange {
            segment_id: Some(proto::SegmentId {
                stream_info: Some(proto::StreamInfo { scope: "test".into(), stream: "s".into(), access_operation: 0 }),
                segment_id: id,
            }),
            min_key: 0.25,
            max_key: 0.5,
        };
        for n in [0, 1, 3, 200] {
            let ranges = proto::SegmentRanges { segment_ranges: (0..n).map(range).collect(), delegation_token: "token".into() };
            let bytes = ranges.encode_to_vec();
            assert_eq!(count_segment_ranges(&mut &bytes[..]).unwrap(), n as u64);
        }
        // Empty ranges cost two bytes each on the wire.
        let empty = proto::SegmentRanges { segment_ranges: vec![proto::SegmentRange::default(); 1_000], delegation_token: String::new() };
        assert_eq!(count_segment_ranges(&mut &empty.encode_to_vec()[..]).unwrap(), 1_000);
        let cut = &range(1).encode_to_vec()[..5];
        let mut framed = vec![0x0a, 20];
        framed.extend_from_slice(cut);
        assert!(count_segment_ranges(&mut &framed[..]).is_err(), "a length past the end is an error");
    }
}
