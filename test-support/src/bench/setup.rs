//! The release adapter as the benchmarks run it: HTTPS with a throw-away
//! serving certificate, bearer-token requests reviewed by a stub Kubernetes
//! API, in front of fake controller replicas serving synthetic expositions
//! and a fake of their gRPC API that vouches for every stream.

use super::load::{self, Target};
use crate::adapter::Adapter;
use crate::controller_api::FakeControllerApi;
use crate::exposition::{many_streams, stream_labels, SEGMENTS};
use crate::fake_controller::FakeController;
use crate::kube_api::{client, write_kubeconfig, StubApi};
use crate::net::free_port;
use crate::pki::Ca;
use crate::queries::external_path;
use rcgen::ExtendedKeyUsagePurpose;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The bearer token the stub API reviews as valid.
pub const TOKEN: &str = "good-token";

/// The path of the external-metrics query an HPA makes for one synthetic
/// stream's segment count.
pub fn segments_query(stream: usize) -> String {
    let (scope, stream) = stream_labels(stream);
    external_path(SEGMENTS, &format!("scope={scope},stream={stream}"))
}

pub struct Bench {
    /// The adapter binary the benchmark runs.
    binary: PathBuf,
    controllers: tokio::runtime::Runtime,
    pki_dir: PathBuf,
    kubeconfig: PathBuf,
    serving_ca: Ca,
    api: Arc<StubApi>,
    /// The controllers' gRPC API, holding the replicas' streams.
    controller_api: FakeControllerApi,
    controller_api_url: String,
}

impl Bench {
    /// TokenReviews and SubjectAccessReviews the stub API has answered.
    pub fn reviews(&self) -> u64 {
        self.api.token_reviews.load(Ordering::SeqCst) + self.api.access_reviews.load(Ordering::SeqCst)
    }

    /// The set-up for running `binary` (see [`crate::adapter_binary`]).
    pub async fn new(binary: &Path) -> Self {
        let pki_dir = std::env::temp_dir().join(format!("adapter-bench-{}", std::process::id()));
        std::fs::create_dir_all(&pki_dir).unwrap();
        let serving_ca = Ca::new("bench-serving-ca");
        let (cert, key) = serving_ca.leaf("adapter", &[], &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(pki_dir.join("tls.crt"), cert).unwrap();
        std::fs::write(pki_dir.join("tls.key"), key).unwrap();
        let api = Arc::new(StubApi { allowed: vec!["*"], ..Default::default() });
        let address = api.serve(&Ca::new("front-proxy"), &Ca::new("client")).await;
        let kubeconfig = pki_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, address);
        let controllers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(pravega_metrics_adapter::resources::lower_thread_priority)
            .enable_all()
            .build()
            .unwrap();
        let controller_api = FakeControllerApi::default();
        let started = controller_api.clone();
        let controller_api_url = format!("http://{}", controllers.spawn(async move { started.start().await }).await.unwrap());
        Bench { binary: binary.to_owned(), controllers, pki_dir, kubeconfig, serving_ca, api, controller_api, controller_api_url }
    }

    /// Starts three fake replicas whose threads only get CPU nobody else
    /// wants: real controllers run on other machines, and serving their
    /// expositions must not slow the load generator or the server down.
    pub async fn replicas(&self, streams: usize) -> Vec<FakeController> {
        for i in 0..streams {
            let (scope, stream) = stream_labels(i);
            self.controller_api.set(&scope, &stream, 1);
        }
        let mut controllers = Vec::new();
        for r in 0..3 {
            let body = many_streams(streams, r);
            let controller = self.controllers.spawn(FakeController::start(body)).await.unwrap();
            // Every scrape changes a value, so every round costs a full merge.
            controller.churn();
            controllers.push(controller);
        }
        controllers
    }

    /// The adapter serving HTTPS with bearer-token authentication, scraping
    /// `controllers`, with `extra` flags.
    pub async fn adapter(&self, controllers: &[FakeController], extra: &[&str]) -> Adapter {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--secure-port".into(),
            port.to_string(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            self.pki_dir.join("tls.crt").display().to_string(),
            "--tls-private-key-file".into(),
            self.pki_dir.join("tls.key").display().to_string(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
        ];
        for c in controllers {
            args.extend(["--controller-url".into(), c.url()]);
        }
        // The inventory asks every stream at once rather than over minutes
        // at the default budget: the loads measure a settled adapter.
        args.extend([
            "--controller-api-url".into(),
            self.controller_api_url.clone(),
            "--inventory-calls-per-second".into(),
            "100000".into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Adapter::start_secure(&self.binary, &args, port, self.client()).await
    }

    pub fn client(&self) -> reqwest::Client {
        client(&self.serving_ca, None)
    }

    /// The external-metrics request an HPA makes for one synthetic stream's
    /// segment count, authenticated with the token the stub API accepts.
    pub fn external_query(&self, adapter: &Adapter) -> impl Fn(usize) -> reqwest::RequestBuilder {
        let (client, base) = (self.client(), adapter.base.clone());
        move |stream| client.get(format!("{base}{}", segments_query(stream))).bearer_auth(TOKEN)
    }

    /// Where a query load against `adapter` goes: HTTPS and HTTP/2, with
    /// the token the stub API accepts.
    pub fn load_target(&self, adapter: &Adapter) -> Target {
        Target::http2(&adapter.base, load::http2_tls(&self.serving_ca.pem)).bearer_token(TOKEN)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pki_dir);
    }
}

/// The value of the first item of an external-metrics answer.
pub async fn served_value(request: reqwest::RequestBuilder) -> Option<String> {
    let text = request.send().await.ok()?.text().await.ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    body["items"][0]["value"].as_str().map(str::to_owned)
}
