//! The secure port: TLS, front-proxy authentication, client certificates,
//! TokenReview and SubjectAccessReview, against a stub of the Kubernetes API.
//! Every case checks the HTTP code and that refused answers leak no metric.

use rcgen::ExtendedKeyUsagePurpose;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::controller_api::FakeControllerApi;
use test_support::exposition::{stream_exposition, SEGMENTS};
use test_support::fake_controller::FakeController;
use test_support::kube_api::{client, tls_connect, tls_over, write_kubeconfig, StubApi};
use test_support::net::{free_port, http, install_crypto_provider};
use test_support::pki::Ca;
use test_support::queries::external_path;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

struct Setup {
    adapter: Adapter,
    api: Arc<StubApi>,
    serving_ca: Ca,
    front_proxy_ca: Ca,
    client_ca: Ca,
    dir: PathBuf,
    _controller: FakeController,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Setup {
    async fn start(extra: &[&str]) -> Self {
        Self::start_with_open_files(extra, None).await
    }

    /// The adapter with `extra` flags, and at most `open_files` file
    /// descriptors if given (RLIMIT_NOFILE, set by prlimit before it starts).
    async fn start_with_open_files(extra: &[&str], open_files: Option<u64>) -> Self {
        install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("adapter-auth-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let (serving_ca, front_proxy_ca, client_ca) = (Ca::new("serving-ca"), Ca::new("front-proxy-ca"), Ca::new("client-ca"));
        let (cert, key) = serving_ca.leaf("adapter", &[], &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();

        let api = Arc::new(StubApi {
            allowed: vec!["alice", "tina", "carol", "system:kube-aggregator"],
            discovery_groups: vec!["system:authenticated"],
            ..Default::default()
        });
        let api_address = api.serve(&front_proxy_ca, &client_ca).await;
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, api_address);

        let controller = FakeController::start(stream_exposition("test", "stream", 3, 2, 0)).await;
        // The controller API vouches for the count the adapter found at its
        // start.
        let controller_api = FakeControllerApi::default();
        controller_api.set("test", "stream", 3);
        let controller_api_url = format!("http://{}", controller_api.start().await);
        let port = free_port();
        let mut args: Vec<String> = [
            "--secure-port",
            &port.to_string(),
            "--bind-address",
            "127.0.0.1",
            "--tls-cert-file",
            dir.join("tls.crt").to_str().unwrap(),
            "--tls-private-key-file",
            dir.join("tls.key").to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--controller-url",
            &controller.url(),
            "--controller-api-url",
            &controller_api_url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let anonymous = client(&serving_ca, None);
        let adapter = match open_files {
            None => Adapter::start_secure(adapter_binary!(), &args, port, anonymous).await,
            Some(limit) => {
                let mut limited = vec![format!("--nofile={limit}:{limit}"), adapter_binary!().display().to_string()];
                limited.extend(args);
                Adapter::start_secure(std::path::Path::new("prlimit"), &limited, port, anonymous).await
            }
        };
        Setup { adapter, api, serving_ca, front_proxy_ca, client_ca, dir, _controller: controller }
    }

    async fn request(&self, identity: Option<(String, String)>, headers: &[(&str, &str)], path: &str) -> (u16, String) {
        let mut request = client(&self.serving_ca, identity).get(format!("{}{path}", self.adapter.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

fn metric_path() -> String {
    external_path(SEGMENTS, "scope=test")
}

/// A refused answer: the right code, a Status, and no metric in it.
fn assert_refused((code, body): (u16, String), expected: u16, context: &str) {
    assert_eq!(code, expected, "{context}: {body}");
    let status: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{context}: not JSON: {body}"));
    assert_eq!(status["kind"], "Status", "{context}");
    assert_eq!(status["code"], expected, "{context}");
    assert!(!body.contains("items") && !body.contains("metricLabels"), "{context}: leaked {body}");
}

const ALICE: &[(&str, &str)] = &[("X-Remote-User", "alice"), ("X-Remote-Group", "system:authenticated")];

#[tokio::test]
async fn front_proxy_with_a_trusted_certificate_is_believed() {
    let s = Setup::start(&[]).await;
    let proxy = s.front_proxy_ca.client("front-proxy-client", &[]);
    let (code, body) = s.request(Some(proxy.clone()), ALICE, &metric_path()).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"value\":\"3\""), "{body}");
    let review = s.api.last_access_review.lock().unwrap().clone();
    assert_eq!(review["user"], "alice");
    assert_eq!(review["groups"], json!(["system:authenticated"]));
    assert_eq!(review["resourceAttributes"]["group"], "external.metrics.k8s.io");
    assert_eq!(review["resourceAttributes"]["resource"], SEGMENTS);
    assert_eq!(review["resourceAttributes"]["namespace"], "default");

    // Denied user: 403 naming user, verb and resource.
    let (code, body) = s.request(Some(proxy.clone()), &[("X-Remote-User", "mallory")], &metric_path()).await;
    assert_refused((code, body.clone()), 403, "mallory");
    assert!(body.contains("mallory") && body.contains("list") && body.contains(SEGMENTS), "{body}");

    // A trusted proxy that names no user is not authenticated.
    assert_refused(s.request(Some(proxy), &[], &metric_path()).await, 401, "proxy without user header");
}

/// The SubjectAccessReview carries the extras the kube-apiserver would
/// derive from the same headers: the key lower-cased, then path-unescaped.
#[tokio::test]
async fn front_proxy_extras_reach_the_review_as_the_kube_apiserver_decodes_them() {
    let s = Setup::start(&[]).await;
    let proxy = s.front_proxy_ca.client("front-proxy-client", &[]);
    let headers = [
        ("X-Remote-User", "alice"),
        ("X-Remote-Extra-a+b", "plus"),
        ("X-Remote-Extra-UP%41", "escaped"),
        ("X-Remote-Extra-Example.com%2Fteam", "slash"),
        ("X-Remote-Extra-50%zz", "malformed"),
    ];
    let (code, body) = s.request(Some(proxy), &headers, &metric_path()).await;
    assert_eq!(code, 200, "{body}");
    let review = s.api.last_access_review.lock().unwrap().clone();
    let expected = json!({"a+b": ["plus"], "upA": ["escaped"], "example.com/team": ["slash"], "50%zz": ["malformed"]});
    assert_eq!(review["extra"], expected);
}

#[tokio::test]
async fn headers_are_ignored_without_a_trusted_proxy_certificate() {
    let s = Setup::start(&[]).await;
    let rogue_ca = Ca::new("front-proxy-ca");
    let cases = [
        (Some(rogue_ca.client("front-proxy-client", &[])), "certificate from another CA"),
        (Some(s.front_proxy_ca.client("not-the-proxy", &[])), "disallowed CN"),
        (None, "no certificate, spoofed headers"),
    ];
    for (identity, context) in cases {
        assert_refused(s.request(identity, ALICE, &metric_path()).await, 401, context);
    }
    assert_eq!(s.api.access_reviews.load(Ordering::SeqCst), 0, "no review for unauthenticated requests");
}

#[tokio::test]
async fn client_certificates_from_the_cluster_ca_authenticate_as_cn_and_o() {
    let s = Setup::start(&[]).await;
    let (code, body) = s.request(Some(s.client_ca.client("carol", &["devs"])), &[], &metric_path()).await;
    assert_eq!(code, 200, "{body}");
    let review = s.api.last_access_review.lock().unwrap().clone();
    assert_eq!((review["user"].clone(), review["groups"].clone()), (json!("carol"), json!(["devs", "system:authenticated"])));
    // Headers on a client-CA connection are not front-proxy headers.
    let (code, _) = s.request(Some(s.client_ca.client("carol", &[])), &[("X-Remote-User", "mallory")], &metric_path()).await;
    assert_eq!(code, 200);
    assert_eq!(s.api.last_access_review.lock().unwrap()["user"], "carol");
    assert_refused(s.request(Some(s.client_ca.client("mallory", &[])), &[], &metric_path()).await, 403, "denied CN");
}

#[tokio::test]
async fn bearer_tokens_are_reviewed_and_cached() {
    let s = Setup::start(&[]).await;
    let good = [("Authorization", "Bearer good-token")];
    for _ in 0..3 {
        let (code, body) = s.request(None, &good, &metric_path()).await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(s.api.token_reviews.load(Ordering::SeqCst), 1, "TokenReview results are cached");
    let review = s.api.last_access_review.lock().unwrap().clone();
    assert_eq!((review["uid"].clone(), review["groups"].clone()), (json!("42"), json!(["hpa", "system:authenticated"])));
    assert_refused(s.request(None, &[("Authorization", "Bearer bad-token")], &metric_path()).await, 401, "bad token");
    assert_refused(s.request(None, &[("Authorization", "Basic YTpi")], &metric_path()).await, 401, "basic auth");
}

#[tokio::test]
async fn reviews_that_cannot_be_made_fail_closed() {
    let s = Setup::start(&["--authorization-webhook-cache-authorized-ttl", "0s", "--authentication-token-webhook-cache-ttl", "0s"]).await;
    let proxy = s.front_proxy_ca.client("front-proxy-client", &[]);
    assert_eq!(s.request(Some(proxy.clone()), ALICE, &metric_path()).await.0, 200);
    s.api.reviews_unavailable.store(true, Ordering::SeqCst);
    assert_refused(s.request(Some(proxy), ALICE, &metric_path()).await, 503, "SubjectAccessReview unavailable");
    assert_refused(s.request(None, &[("Authorization", "Bearer good-token")], &metric_path()).await, 503, "TokenReview unavailable");
    assert!(s.adapter.log().contains("refusing the request"), "{}", s.adapter.log());
}

#[tokio::test]
async fn probes_bypass_auth_but_metrics_and_discovery_do_not() {
    let s = Setup::start(&[]).await;
    for path in ["/livez", "/readyz", "/healthz"] {
        assert_eq!(s.request(None, &[], path).await, (200, "ok".to_owned()), "{path}");
    }
    for path in ["/metrics", "/apis/custom.metrics.k8s.io/v1beta1", "/apis", "/openapi/v2"] {
        assert_refused(s.request(None, &[], path).await, 401, path);
    }
    let proxy = s.front_proxy_ca.client("front-proxy-client", &[]);
    let (code, body) = s.request(Some(proxy.clone()), ALICE, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("pravega_adapter_requests_total"));
    assert_eq!(s.api.last_access_review.lock().unwrap()["nonResourceAttributes"], json!({"path": "/metrics", "verb": "get"}));
    // What the aggregator's availability check sends.
    let aggregator = [("X-Remote-User", "system:kube-aggregator"), ("X-Remote-Group", "system:masters")];
    assert_eq!(s.request(Some(proxy), &aggregator, "/apis/custom.metrics.k8s.io/v1beta2").await.0, 200);
}

#[tokio::test]
async fn every_authenticated_user_is_in_system_authenticated_once() {
    let s = Setup::start(&[]).await;
    let proxy = s.front_proxy_ca.client("front-proxy-client", &[]);
    // The aggregator fetches every backend's OpenAPI as system:aggregator,
    // with no group header; RBAC allows it through system:authenticated.
    let (code, body) = s.request(Some(proxy.clone()), &[("X-Remote-User", "system:aggregator")], "/openapi/v2").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(s.api.last_access_review.lock().unwrap()["groups"], json!(["system:authenticated"]));
    let (code, body) = s.request(Some(proxy), ALICE, "/openapi/v2").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(s.api.last_access_review.lock().unwrap()["groups"], json!(["system:authenticated"]), "not added twice");
    let (code, body) = s.request(Some(s.client_ca.client("dave", &[])), &[], "/apis").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(s.api.last_access_review.lock().unwrap()["groups"], json!(["system:authenticated"]));
}

#[tokio::test]
async fn a_certificate_stops_vouching_when_it_expires_even_on_an_open_connection() {
    let s = Setup::start(&[]).await;
    let not_after = std::time::SystemTime::now() + Duration::from_secs(3);
    // One client each: every request reuses its connection.
    let proxy = client(&s.serving_ca, Some(s.front_proxy_ca.client_with(&["front-proxy-client"], Some(not_after))));
    let carol = client(&s.serving_ca, Some(s.client_ca.client_with(&["carol"], Some(not_after))));
    let get = |client: &reqwest::Client, headers: &'static [(&str, &str)]| {
        let mut request = client.get(format!("{}{}", s.adapter.base, metric_path()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get(&proxy, ALICE).await.0, 200);
    assert_eq!(get(&carol, &[]).await.0, 200);
    tokio::time::sleep(not_after.duration_since(std::time::SystemTime::now()).unwrap_or_default() + Duration::from_millis(1500)).await;
    assert_refused(get(&proxy, ALICE).await, 401, "expired front-proxy certificate");
    assert_refused(get(&carol, &[]).await, 401, "expired client certificate");
}

#[tokio::test]
async fn certificates_with_several_common_names_vouch_for_nobody() {
    let s = Setup::start(&[]).await;
    // The allowed name first: a server reading the first CN would believe it.
    let proxy = s.front_proxy_ca.client_with(&["front-proxy-client", "someone-else"], None);
    assert_refused(s.request(Some(proxy), ALICE, &metric_path()).await, 401, "front proxy with two CNs");
    let carol = s.client_ca.client_with(&["carol", "mallory"], None);
    assert_refused(s.request(Some(carol), &[], &metric_path()).await, 401, "client certificate with two CNs");
    // The same certificates with one CN are believed.
    let proxy = s.front_proxy_ca.client_with(&["front-proxy-client"], None);
    assert_eq!(s.request(Some(proxy), ALICE, &metric_path()).await.0, 200);
}

#[tokio::test]
async fn unauthenticated_requests_learn_nothing_about_paths() {
    let s = Setup::start(&[]).await;
    let probes = [
        "/apis/custom.metrics.k8s.io/v1beta1/secret-path/x",
        "/nowhere/secret-path",
        "/apis/custom.metrics.k8s.io/v1beta1/pods/secret-path%zz/m",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/secret-path%25",
    ];
    for path in probes {
        let (code, body) = s.request(None, &[], path).await;
        assert_refused((code, body.clone()), 401, path);
        assert!(!body.contains("secret-path"), "{path}: {body}");
    }
    let post = client(&s.serving_ca, None).post(format!("{}{}", s.adapter.base, metric_path())).send().await.unwrap();
    assert_eq!(post.status(), 401, "a POST is authenticated before its method is refused");
    assert_eq!(s.api.access_reviews.load(Ordering::SeqCst), 0);
    // Authenticated callers get the 404 and 400, without the list of metrics.
    let proxy = s.front_proxy_ca.client("front-proxy-client", &[]);
    let unknown = external_path("pravega_controller_unknown", "");
    let (code, body) = s.request(Some(proxy.clone()), ALICE, &unknown).await;
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains(SEGMENTS), "the metrics served are not listed: {body}");
    assert_eq!(s.request(Some(proxy), ALICE, probes[2]).await.0, 400);
}

#[tokio::test]
async fn what_is_reviewed_is_what_is_served() {
    let s = Setup::start(&[]).await;
    let proxy = s.front_proxy_ca.client("front-proxy-client", &[]);
    // Percent-encoded names are reviewed decoded, as the apiserver reads them.
    let encoded = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/deployments.apps/tm/%70ravega_controller_segments_count";
    let (code, body) = s.request(Some(proxy.clone()), ALICE, encoded).await;
    assert_eq!(code, 200, "{body}");
    let review = s.api.last_access_review.lock().unwrap()["resourceAttributes"].clone();
    assert_eq!(review["subresource"], SEGMENTS, "{review}");
    assert_eq!((review["resource"].clone(), review["name"].clone()), (json!("deployments.apps"), json!("tm")));
    // Encoded twice: refused, not served as another name.
    let twice = encoded.replace("%70", "%2570");
    assert_refused(s.request(Some(proxy.clone()), ALICE, &twice).await, 400, "doubly encoded name");
    // `namespaces/{ns}/{metric}` is a list of `{metric}` to the apiserver:
    // not served as the namespace's metric.
    let alias = format!("/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/{SEGMENTS}");
    assert_refused(s.request(Some(proxy), ALICE, &alias).await, 404, "root-scoped namespaces alias");
}

impl Setup {
    fn address(&self) -> String {
        self.adapter.base.trim_start_matches("https://").to_owned()
    }
}

/// Whether the server closes `stream` within `wait` (reads until then).
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), wait: Duration) -> bool {
    tokio::time::timeout(wait, until_closed(stream)).await.is_ok()
}

/// Reads `stream` until the server closes it.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buffer = [0u8; 4096];
    while let Ok(1..) = stream.read(&mut buffer).await {}
}

/// Sends one HTTP/1.1 request for `/livez` and reads its answer.
async fn livez(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> std::io::Result<()> {
    stream.write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    Ok(())
}

/// A raw connection to `address` from the loopback address `source`.
async fn connect_from(source: std::net::Ipv4Addr, address: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    socket.connect(address.parse().unwrap()).await
}

/// The loopback address of attacking source `i` (127.0.1.0 on), apart
/// from 127.0.0.1, which the legitimate clients use.
fn attacker(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, (i % 250) as u8)
}

/// Connections held against the secure port from several loopback sources
/// that never send a request, each reopened as soon as the adapter closes
/// it; stopped when dropped. They run on a thread of their own, so that the
/// test's clients, controller and API stub are not queued behind them.
struct Attack {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Connections closed by the adapter and reopened.
    reopened: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Copy)]
enum Hold {
    /// TCP only: no TLS handshake.
    RawSockets,
    /// A completed TLS handshake, then nothing.
    IdleTls,
}

impl Attack {
    /// `connections` from `sources` addresses, each held as `hold` says.
    fn start(s: &Setup, connections: usize, sources: usize, hold: Hold) -> Self {
        let reopened = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (address, counter, ca_pem) = (s.address(), reopened.clone(), s.serving_ca.pem.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..connections {
                    let (address, reopened, ca_pem) = (address.clone(), counter.clone(), ca_pem.clone());
                    tasks.spawn(async move {
                        loop {
                            hold_once(attacker(i % sources), &address, hold, &ca_pem).await;
                            reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                let _ = stopped.await;
            });
        });
        Attack { stop: Some(stop), thread: Some(thread), reopened }
    }

    /// Waits until the adapter has closed `n` of the attack's connections:
    /// it then holds every one it can.
    async fn until_reopened(&self, n: u64) {
        while self.reopened.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One connection from `source`, held as `hold` says until the adapter
/// closes it.
async fn hold_once(source: std::net::Ipv4Addr, address: &str, hold: Hold, ca_pem: &str) {
    let Ok(mut tcp) = connect_from(source, address).await else {
        return tokio::time::sleep(Duration::from_millis(10)).await;
    };
    match hold {
        Hold::RawSockets => until_closed(&mut tcp).await,
        Hold::IdleTls => {
            if let Ok(mut tls) = tls_over(ca_pem, tcp).await {
                until_closed(&mut tls).await;
            }
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Ten requests from a client-certificate client, each on a new
/// connection, and ten through the aggregator (front proxy) on the
/// connection it opened before the attack, while `connections` from
/// `sources` addresses are held as `hold` says: how many were served.
async fn served_under_attack(s: &Setup, connections: usize, sources: usize, hold: Hold) -> usize {
    let aggregator = aggregator(s).await;
    let attack = Attack::start(s, connections, sources, hold);
    attack.until_reopened(200).await;
    let carol = s.client_ca.client("carol", &[]);
    let mut served = 0;
    for _ in 0..10 {
        let fresh = client(&s.serving_ca, Some(carol.clone()));
        for request in [fresh.get(metric_path_on(s)), ALICE.iter().fold(aggregator.get(metric_path_on(s)), |r, (k, v)| r.header(*k, *v))] {
            // Bounds a request the adapter never accepts: the outcome is
            // what counts, not how long it took.
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(60), request.send()).await {
                served += usize::from(response.status() == 200);
            }
        }
    }
    served
}

fn metric_path_on(s: &Setup) -> String {
    format!("{}{}", s.adapter.base, metric_path())
}

/// The aggregator's client, its connection open and authenticated.
async fn aggregator(s: &Setup) -> reqwest::Client {
    let aggregator = client(&s.serving_ca, Some(s.front_proxy_ca.client("front-proxy-client", &[])));
    let response = ALICE.iter().fold(aggregator.get(metric_path_on(s)), |r, (k, v)| r.header(*k, *v)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    aggregator
}

/// 1,100 raw sockets (the default cap is 1,000) from 55 sources, each
/// reopened as soon as it is closed: connections that authenticate are
/// served throughout.
#[tokio::test]
async fn authenticated_clients_are_served_while_raw_sockets_are_held_and_reopened() {
    let s = Setup::start(&[]).await;
    assert_eq!(served_under_attack(&s, 1100, 55, Hold::RawSockets).await, 20);
    assert!(s.adapter.log().contains("too many unauthenticated connections"), "{}", s.adapter.log());
}

/// 1,000 connections from 50 sources that complete their TLS handshake and
/// send nothing, each reopened as soon as it is closed.
#[tokio::test]
async fn authenticated_clients_are_served_while_idle_tls_connections_are_held_and_reopened() {
    let s = Setup::start(&[]).await;
    assert_eq!(served_under_attack(&s, 1000, 50, Hold::IdleTls).await, 20);
    assert!(s.adapter.log().contains("too many unauthenticated connections"), "{}", s.adapter.log());
}

/// An open-files limit of 300, below the cap of 1,000 connections, under
/// 1,100 raw sockets reopened: the adapter keeps descriptors for its own
/// reviews and serves authenticated clients.
#[tokio::test]
async fn authenticated_clients_are_served_with_an_open_files_limit_below_the_cap() {
    let s = Setup::start_with_open_files(&[], Some(300)).await;
    assert_eq!(served_under_attack(&s, 1100, 55, Hold::RawSockets).await, 20);
    assert!(s.adapter.log().contains("the open-files limit is below --max-connections"), "{}", s.adapter.log());
}

#[tokio::test]
async fn a_source_over_its_budget_loses_its_oldest_unauthenticated_connection() {
    let s = Setup::start(&["--max-unauthenticated-connections-per-source", "5", "--tls-handshake-timeout", "60s"]).await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(connect_from(attacker(0), &s.address()).await.unwrap());
    }
    // Accepted in the order they connected: the first three make way.
    for (i, stream) in streams.iter_mut().take(3).enumerate() {
        assert!(closed_within(stream, Duration::from_secs(10)).await, "connection {i} was kept");
    }
    for (i, stream) in streams.iter_mut().enumerate().skip(3) {
        assert!(!closed_within(stream, Duration::from_millis(10)).await, "connection {i} was closed");
    }
    assert_eq!(s.request(None, &[], "/livez").await.0, 200, "other sources are served");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_when_all_are_authenticated() {
    const CAP: usize = 3;
    let s = Setup::start(&["--max-connections", &CAP.to_string()]).await;
    // Each client keeps its connection open between requests.
    let carols: Vec<reqwest::Client> = (0..CAP).map(|_| client(&s.serving_ca, Some(s.client_ca.client("carol", &[])))).collect();
    for carol in &carols {
        assert_eq!(carol.get(format!("{}{}", s.adapter.base, metric_path())).send().await.unwrap().status(), 200);
    }
    let mut late = connect_from(attacker(0), &s.address()).await.unwrap();
    assert!(closed_within(&mut late, Duration::from_secs(10)).await, "a connection beyond the cap was kept");
    assert!(s.adapter.log().contains("too many connections"), "{}", s.adapter.log());
    // Places come back when connections end.
    drop(carols);
    let mut served = false;
    for _ in 0..50 {
        let answer = client(&s.serving_ca, None).get(format!("{}/livez", s.adapter.base)).send().await;
        served = answer.is_ok_and(|response| response.status() == 200);
        if served {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no place freed once the authenticated connections closed");
}

#[tokio::test]
async fn out_of_file_descriptors_unauthenticated_connections_make_way() {
    // Raw sockets would otherwise hold their descriptors for a minute.
    let s = Setup::start(&["--tls-handshake-timeout", "60s"]).await;
    let carol = s.client_ca.client("carol", &[]);
    // Reviewed and cached before descriptors run out.
    assert_eq!(s.request(Some(carol.clone()), &[], &metric_path()).await.0, 200);
    let pid = s.adapter.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = format!("--nofile={0}:{0}", open + 8);
    assert!(std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), &limit]).status().unwrap().success());
    let address = s.address();
    let _streams: Vec<_> = futures::future::join_all((0..30).map(|_| connect_from(attacker(0), &address))).await;
    let served = tokio::time::timeout(Duration::from_secs(30), s.request(Some(carol), &[], &metric_path())).await;
    assert_eq!(served.map(|(code, _)| code).ok(), Some(200), "served while the raw sockets are held");
    assert!(s.adapter.log().contains("out of file descriptors"), "{}", s.adapter.log());
}

#[tokio::test]
async fn a_header_trickle_is_cut_off() {
    let s = Setup::start(&["--header-read-timeout", "1s"]).await;
    let mut stream = tls_connect(&s.serving_ca, &s.address()).await;
    livez(&mut stream).await.unwrap();
    stream.write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let started = std::time::Instant::now();
    // One header line every 200 ms, never the blank line that ends them.
    let cut_off = loop {
        if stream.write_all(b"X-Trickle: 1\r\n").await.is_err() || closed_within(&mut stream, Duration::from_millis(200)).await {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "a header trickle was served for 5 s");
    };
    assert!(cut_off >= Duration::from_millis(800), "cut off after {cut_off:?}");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let s = Setup::start(&["--idle-timeout", "1s"]).await;
    let mut stream = tls_connect(&s.serving_ca, &s.address()).await;
    livez(&mut stream).await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await, "an idle connection stayed open for 5 s");
    assert!(started.elapsed() >= Duration::from_millis(800), "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn busy_connections_are_closed_gracefully_at_their_max_age() {
    let s = Setup::start(&["--max-connection-age", "1s"]).await;
    let mut stream = tls_connect(&s.serving_ca, &s.address()).await;
    let started = std::time::Instant::now();
    let mut answered = 0;
    // Never idle: a request every 100 ms until the server ends the connection.
    while livez(&mut stream).await.is_ok() {
        answered += 1;
        assert!(started.elapsed() < Duration::from_secs(5), "a busy connection lived 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered >= 5, "every request before the close was answered ({answered})");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn plain_http_on_the_secure_port_is_refused() {
    let s = Setup::start(&[]).await;
    let plain = s.adapter.base.replace("https://", "http://");
    let answer = http().get(format!("{plain}{}", metric_path())).send().await;
    if let Ok(response) = answer {
        assert_ne!(response.status(), 200);
        assert!(!response.text().await.unwrap_or_default().contains("metricLabels"));
    }
}

#[tokio::test]
async fn serving_certificate_is_reloaded_when_the_files_change() {
    let s = Setup::start(&[]).await;
    let new_ca = Ca::new("rotated-serving-ca");
    let (cert, key) = new_ca.leaf("adapter", &[], &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(s.dir.join("tls.key"), key).unwrap();
    std::fs::write(s.dir.join("tls.crt"), cert).unwrap();
    let trusting_new = client(&new_ca, None);
    let mut reloaded = false;
    for _ in 0..40 {
        if trusting_new.get(format!("{}/livez", s.adapter.base)).send().await.is_ok_and(|r| r.status() == 200) {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(reloaded, "new certificate not served within 20 s; log:\n{}", s.adapter.log());
    assert!(s.adapter.log().contains("reloaded the serving certificate"));
}
