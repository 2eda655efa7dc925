//! The adapter binary run as a child process, and waiting for a child
//! process to be ready.

use crate::net::{free_port, http};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The adapter binary Cargo built for the calling test or benchmark (only
/// the adapter's own tests and benchmarks have it).
#[macro_export]
macro_rules! adapter_binary {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_pravega-metrics-adapter"))
    };
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
    /// Starts `binary` with `args` plus a plain-HTTP loopback listener and
    /// waits until `/readyz` answers 200.
    pub async fn start(binary: &Path, args: &[String]) -> Self {
        Self::start_with_env(binary, args, &[]).await
    }

    pub async fn start_with_env(binary: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut all = vec!["--secure-port".to_owned(), "0".to_owned(), "--insecure-bind-address".to_owned(), format!("127.0.0.1:{port}")];
        all.extend_from_slice(args);
        Self::launch(binary, &all, env, format!("http://127.0.0.1:{port}"), http().clone()).await
    }

    /// Starts `binary` serving HTTPS on `port` (args must set it up);
    /// readiness is polled with `client`.
    pub async fn start_secure(binary: &Path, args: &[String], port: u16, client: reqwest::Client) -> Self {
        Self::launch(binary, args, &[], format!("https://127.0.0.1:{port}"), client).await
    }

    async fn launch(binary: &Path, args: &[String], env: &[(&str, &str)], base: String, client: reqwest::Client) -> Self {
        let log = std::env::temp_dir().join(format!("adapter-test-{}-{}.log", std::process::id(), free_port()));
        let child = Command::new(binary)
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

    /// Has `controller` report `body` and waits until the adapter has
    /// scraped it: every stream in it appears while the adapter watches, as
    /// after a creation or a scale, so that the metrics alone vouch for its
    /// segment counts. The controller starts with
    /// [`crate::exposition::QUIET`].
    pub async fn watch(&self, controller: &crate::fake_controller::FakeController, body: impl Into<String>) {
        let before = controller.hits();
        controller.set_body(body);
        // A query refreshes data older than half the staleness bound; the
        // second scrape after the change starts once the first is merged.
        let query = crate::queries::external_path(crate::exposition::SEGMENTS, "");
        for _ in 0..100 {
            if controller.hits() >= before + 2 {
                return;
            }
            let _ = self.get_text(&query).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the adapter did not scrape the new body\n{}", self.log());
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
