//! A fake Pravega controller: `/prometheus` served in-process from memory,
//! with the ways a real one fails (status codes, redirects, a foreign
//! content type, closing its socket) at the test's command.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[derive(Default)]
struct ControllerState {
    body: Mutex<Bytes>,
    /// Appends a series whose value is the scrape count, so that every
    /// scrape changes something (as a live controller's counters do).
    churn: AtomicBool,
    status: Mutex<Option<StatusCode>>,
    /// Overrides the exposition format's content type.
    content_type: Mutex<Option<&'static str>>,
    /// Answers every scrape with a 302 to this URL.
    redirect: Mutex<Option<String>>,
    hits: AtomicU64,
}

/// A fake Pravega controller serving `/prometheus` from memory.
#[derive(Clone)]
pub struct FakeController {
    pub address: SocketAddr,
    state: Arc<ControllerState>,
    server: Arc<Mutex<tokio::task::AbortHandle>>,
}

impl FakeController {
    pub async fn start(body: impl Into<String>) -> Self {
        let state = Arc::new(ControllerState::default());
        *state.body.lock().unwrap() = Bytes::from(body.into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = Arc::new(Mutex::new(Self::serve(listener, state.clone())));
        FakeController { address, state, server }
    }

    fn serve(listener: tokio::net::TcpListener, state: Arc<ControllerState>) -> tokio::task::AbortHandle {
        let app = axum::Router::new().route("/prometheus", get(serve_exposition)).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await }).abort_handle()
    }

    /// Closes the listening socket: scrapes get connection refused.
    pub fn stop(&self) {
        self.server.lock().unwrap().abort();
    }

    /// Listens again on the same address after [`FakeController::stop`].
    pub async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(self.address).await.unwrap();
        *self.server.lock().unwrap() = Self::serve(listener, self.state.clone());
    }

    pub fn redirect_to(&self, url: Option<String>) {
        *self.state.redirect.lock().unwrap() = url;
    }

    pub fn set_content_type(&self, content_type: Option<&'static str>) {
        *self.state.content_type.lock().unwrap() = content_type;
    }

    /// Makes every scrape differ from the previous one.
    pub fn churn(&self) {
        self.state.churn.store(true, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}/prometheus", self.address)
    }

    pub fn set_body(&self, body: impl Into<String>) {
        *self.state.body.lock().unwrap() = Bytes::from(body.into());
    }

    /// Answers every scrape with this status (None: 200).
    pub fn fail_with(&self, status: Option<StatusCode>) {
        *self.state.status.lock().unwrap() = status;
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn serve_exposition(State(state): State<Arc<ControllerState>>) -> axum::response::Response {
    let hit = state.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(status) = *state.status.lock().unwrap() {
        return status.into_response();
    }
    if let Some(url) = state.redirect.lock().unwrap().clone() {
        return (StatusCode::FOUND, [("location", url)]).into_response();
    }
    let body = state.body.lock().unwrap().clone();
    let churn = state
        .churn
        .load(Ordering::SeqCst)
        .then(|| Bytes::from(format!("pravega_controller_segments_count{{scope=\"churn\",stream=\"churn\",}} {hit}.0\n")));
    let body = axum::body::Body::new(Slices::new(std::iter::once(body).chain(churn)));
    let content_type = state.content_type.lock().unwrap().unwrap_or("text/plain; version=0.0.4; charset=utf-8");
    ([("content-type", content_type)], body).into_response()
}

/// A body sent in slices of shared buffers, with its length known: the
/// exposition is not copied per scrape (at 10,000 streams it is 6 MB), and
/// the thread serving it offers its core to others between slices, since
/// the benchmarks' controllers share the cores with the adapter they feed
/// (real controllers run on other machines).
struct Slices(std::collections::VecDeque<Bytes>);

/// The largest slice [`Slices`] sends in one write.
const SLICE: usize = 64 * 1024;

impl Slices {
    fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let split = |part: Bytes| (0..part.len()).step_by(SLICE).map(move |at| part.slice(at..(at + SLICE).min(part.len())));
        Slices(parts.into_iter().flat_map(split).collect())
    }
}

impl Body for Slices {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        pravega_metrics_adapter::resources::make_way();
        Poll::Ready(self.0.pop_front().map(|slice| Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|slice| slice.len() as u64).sum())
    }
}
