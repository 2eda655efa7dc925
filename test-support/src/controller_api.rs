//! A fake of the controllers' gRPC API: `listScopes`, `listStreamsInScope`
//! (a page of streams, then an empty page) and `getCurrentSegments`,
//! answered from memory over HTTP/2 on loopback.

use pravega_metrics_adapter::controller_api::proto::{
    ContinuationToken, ScopesRequest, ScopesResponse, SegmentRange, SegmentRanges, StreamInfo, StreamsInScopeRequest,
    StreamsInScopeResponse,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the fake answers for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Segments(u32),
    /// `getCurrentSegments` fails with this code; the stream is listed.
    Fails(tonic::Code),
}

#[derive(Default)]
struct Inner {
    streams: Mutex<BTreeMap<(String, String), Stream>>,
    segment_calls: AtomicU64,
    list_calls: AtomicU64,
    /// Every call fails as UNAVAILABLE.
    down: AtomicBool,
}

#[derive(Clone, Default)]
pub struct FakeControllerApi {
    inner: Arc<Inner>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A unary method answered by a function of the request.
#[derive(Clone)]
struct Unary<F>(F);

impl<Req, Resp, F> tonic::server::UnaryService<Req> for Unary<F>
where
    F: Fn(Req) -> Result<Resp, tonic::Status>,
    Resp: Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Result<tonic::Response<Resp>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let answer = (self.0)(request.into_inner()).map(tonic::Response::new);
        Box::pin(async move { answer })
    }
}

impl FakeControllerApi {
    pub fn set(&self, scope: &str, stream: &str, segments: u32) {
        self.put(scope, stream, Stream::Segments(segments));
    }

    pub fn put(&self, scope: &str, stream: &str, answer: Stream) {
        self.inner.streams.lock().unwrap().insert((scope.into(), stream.into()), answer);
    }

    /// Deletes the stream: it is no longer listed, and asking for it
    /// answers NOT_FOUND.
    pub fn delete(&self, scope: &str, stream: &str) {
        self.inner.streams.lock().unwrap().remove(&(scope.into(), stream.into()));
    }

    /// Every call fails (UNAVAILABLE) while `down`.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// `getCurrentSegments` calls so far.
    pub fn segment_calls(&self) -> u64 {
        self.inner.segment_calls.load(Ordering::SeqCst)
    }

    /// `listScopes` and `listStreamsInScope` calls so far.
    pub fn list_calls(&self) -> u64 {
        self.inner.list_calls.load(Ordering::SeqCst)
    }

    fn available(&self) -> Result<(), tonic::Status> {
        match self.inner.down.load(Ordering::SeqCst) {
            true => Err(tonic::Status::unavailable("down")),
            false => Ok(()),
        }
    }

    fn current_segments(&self, info: StreamInfo) -> Result<SegmentRanges, tonic::Status> {
        self.inner.segment_calls.fetch_add(1, Ordering::SeqCst);
        self.available()?;
        let found = self.inner.streams.lock().unwrap().get(&(info.scope.clone(), info.stream.clone())).copied();
        match found {
            None => Err(tonic::Status::not_found(format!("stream {}/{}", info.scope, info.stream))),
            Some(Stream::Fails(code)) => Err(tonic::Status::new(code, "refused")),
            Some(Stream::Segments(count)) => {
                Ok(SegmentRanges { segment_ranges: (0..count).map(|_| SegmentRange::default()).collect(), delegation_token: String::new() })
            }
        }
    }

    /// One page with everything, then an empty one, as Pravega pages.
    fn page<T>(items: Vec<T>, token: Option<ContinuationToken>) -> (Vec<T>, Option<ContinuationToken>) {
        match token.is_some_and(|t| t.token == "end") {
            true => (Vec::new(), Some(ContinuationToken { token: "end".into() })),
            false => (items, Some(ContinuationToken { token: "end".into() })),
        }
    }

    fn list_scopes(&self, request: ScopesRequest) -> Result<ScopesResponse, tonic::Status> {
        self.inner.list_calls.fetch_add(1, Ordering::SeqCst);
        self.available()?;
        let mut scopes: Vec<String> = self.inner.streams.lock().unwrap().keys().map(|(scope, _)| scope.clone()).collect();
        scopes.dedup();
        let (scopes, continuation_token) = Self::page(scopes, request.continuation_token);
        Ok(ScopesResponse { scopes, continuation_token })
    }

    fn list_streams(&self, request: StreamsInScopeRequest) -> Result<StreamsInScopeResponse, tonic::Status> {
        self.inner.list_calls.fetch_add(1, Ordering::SeqCst);
        self.available()?;
        let scope = request.scope.map(|s| s.scope).unwrap_or_default();
        let streams: Vec<StreamInfo> = self
            .inner
            .streams
            .lock()
            .unwrap()
            .keys()
            .filter(|(sc, _)| *sc == scope)
            .map(|(scope, stream)| StreamInfo { scope: scope.clone(), stream: stream.clone(), access_operation: 0 })
            .collect();
        let (streams, continuation_token) = Self::page(streams, request.continuation_token);
        Ok(StreamsInScopeResponse { streams, continuation_token, status: 0 })
    }

    /// Serves HTTP/2 on loopback until the process ends.
    pub async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let api = api.clone();
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(api.route(request).await) }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ =
                        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()).serve_connection(io, service).await;
                });
            }
        });
        address
    }

    async fn route(&self, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<tonic::body::Body> {
        let method = request.uri().path().rsplit('/').next().unwrap_or("").to_owned();
        match method.as_str() {
            "getCurrentSegments" => {
                let api = self.clone();
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<SegmentRanges, StreamInfo>::default());
                grpc.unary(Unary(move |info| api.current_segments(info)), request).await
            }
            "listScopes" => {
                let api = self.clone();
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<ScopesResponse, ScopesRequest>::default());
                grpc.unary(Unary(move |r| api.list_scopes(r)), request).await
            }
            _ => {
                let api = self.clone();
                let mut grpc =
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::<StreamsInScopeResponse, StreamsInScopeRequest>::default());
                grpc.unary(Unary(move |r| api.list_streams(r)), request).await
            }
        }
    }
}
