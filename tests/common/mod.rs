//! Test support: fake Pravega controllers served in-process and the adapter
//! binary run as a child process.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod kube_stub;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pravega-controller").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Exposition of one stream as a controller replica writes it (Micrometer
/// style, trailing commas, Java doubles).
pub fn stream_exposition(scope: &str, stream: &str, segments: u32, splits: u32, merges: u32) -> String {
    format!(
        "# TYPE pravega_controller_segments_count gauge\n\
         pravega_controller_segments_count{{scope=\"{scope}\",stream=\"{stream}\",}} {segments}.0\n\
         # TYPE pravega_controller_segment_splits gauge\n\
         pravega_controller_segment_splits{{scope=\"{scope}\",stream=\"{stream}\",}} {splits}.0\n\
         # TYPE pravega_controller_segment_merges gauge\n\
         pravega_controller_segment_merges{{scope=\"{scope}\",stream=\"{stream}\",}} {merges}.0\n"
    )
}

#[derive(Default)]
struct ControllerState {
    body: Mutex<Bytes>,
    /// Appends a series whose value is the scrape count, so that every
    /// scrape changes something (as a live controller's counters do).
    churn: std::sync::atomic::AtomicBool,
    status: Mutex<Option<StatusCode>>,
    delay: Mutex<Duration>,
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

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn serve_exposition(State(state): State<Arc<ControllerState>>) -> axum::response::Response {
    let hit = state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
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

/// Shared HTTP client (the ring provider installed first, as in the binary).
pub fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    });
    &CLIENT
}

pub fn adapter_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pravega-metrics-adapter"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The adapter as a child process; killed on drop.
pub struct Adapter {
    child: Child,
    /// `http://127.0.0.1:port` or `https://127.0.0.1:port`.
    pub base: String,
    log: PathBuf,
    /// Client used for readiness and the `get` helpers.
    client: reqwest::Client,
}

impl Adapter {
    /// Starts the adapter with `args` plus a plain-HTTP loopback listener
    /// and waits until `/readyz` answers 200.
    pub async fn start(args: &[String]) -> Self {
        Self::start_with_env(args, &[]).await
    }

    pub async fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut all = vec!["--secure-port".to_owned(), "0".to_owned(), "--insecure-bind-address".to_owned(), format!("127.0.0.1:{port}")];
        all.extend_from_slice(args);
        Self::launch(&all, env, format!("http://127.0.0.1:{port}"), http().clone()).await
    }

    /// Starts the adapter serving HTTPS on `port` (args must set it up);
    /// readiness is polled with `client`.
    pub async fn start_secure(args: &[String], port: u16, client: reqwest::Client) -> Self {
        Self::launch(args, &[], format!("https://127.0.0.1:{port}"), client).await
    }

    async fn launch(args: &[String], env: &[(&str, &str)], base: String, client: reqwest::Client) -> Self {
        let log = std::env::temp_dir().join(format!("adapter-test-{}-{}.log", std::process::id(), free_port()));
        let child = Command::new(adapter_binary())
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the adapter");
        let mut adapter = Adapter { child, base, log, client };
        wait_ready("adapter", &mut adapter.child, &adapter.client, &format!("{}/readyz", adapter.base), &adapter.log).await;
        adapter
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, body)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Waits until the child process `name` answers 200 on `url`, for at most
/// 20 s; panics with its log (the file `log`) if it exits first or is not
/// ready by then.
pub async fn wait_ready(name: &str, child: &mut Child, client: &reqwest::Client, url: &str, log: &Path) {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited with {status}; log:\n{}", log());
        }
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} not ready in 20 s; log:\n{}", log());
}

/// `kubectl get --raw PATH` against a plain-HTTP server.
pub fn kubectl_raw(server: &str, path: &str) -> (bool, String) {
    let output = Command::new("kubectl")
        .args(["--server", server, "get", "--raw", path])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("kubectl must be installed (see README)");
    let text = if output.status.success() { output.stdout } else { output.stderr };
    (output.status.success(), String::from_utf8_lossy(&text).into_owned())
}

pub fn external_path(metric: &str, selector: &str) -> String {
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{metric}?labelSelector={}", encode(selector))
}

pub fn object_path(version: &str, metric: &str, selector: &str) -> String {
    format!(
        "/apis/custom.metrics.k8s.io/{version}/namespaces/default/deployments.apps/flink-taskmanager/{metric}?metricLabelSelector={}",
        encode(selector)
    )
}

pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
