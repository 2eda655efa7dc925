//! `generator --simulate` as a process: its /prometheus endpoint in the
//! controller's format, segments following the load, and the adapter
//! serving what it simulates (the loop `make run` shows).

use clap::Parser;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Simulator {
    child: Child,
    base: String,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A fast-moving simulation: 1 s hold, 100 events/s per segment, 50 to
/// 1,000 events/s over 8 s.
async fn simulator() -> Simulator {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--simulate", "--listen", &format!("127.0.0.1:{port}"), "--period", "8s", "--scale-hold", "1s"])
        .args(["--min-rate", "50", "--max-rate", "1000", "--scaling-rate", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let simulator = Simulator { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(20);
    while client().get(format!("{}/readyz", simulator.base)).send().await.is_err() {
        assert!(Instant::now() < deadline, "simulator did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    simulator
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    let sample = scrape.samples.iter().find(|s| s.metric == name).unwrap_or_else(|| panic!("{name} missing"));
    match sample.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn simulated_segments_follow_the_load_in_the_controller_format() {
    let simulator = simulator().await;
    let (mut peak, mut last_splits, mut last_merges) = (0.0f64, 0.0, 0.0);
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_secs(10) {
        text = client().get(format!("{}/prometheus", simulator.base)).send().await.unwrap().text().await.unwrap();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let (segments, splits, merges) = (
            value(&scrape, "pravega_controller_segments_count"),
            value(&scrape, "pravega_controller_segment_splits"),
            value(&scrape, "pravega_controller_segment_merges"),
        );
        assert!(splits >= last_splits && merges >= last_merges, "counters only grow");
        (last_splits, last_merges, peak) = (splits, merges, peak.max(segments));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(peak >= 3.0, "1,000 events/s at 100 per segment must split several times; peak {peak}");
    assert!(last_merges >= 1.0, "the trough must merge");
    assert!(text.contains("pravega_controller_segments_count{scope=\"test\",stream=\"stream\",} "), "{text}");
    let metrics = client().get(format!("{}/metrics", simulator.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("generator_target_rate"), "{metrics}");
}

#[tokio::test]
async fn the_adapter_serves_what_the_simulator_reports() {
    let simulator = simulator().await;
    let port = free_port();
    let config = pravega_metrics_adapter::config::Config::parse_from([
        "pravega-metrics-adapter",
        "--secure-port",
        "0",
        "--insecure-bind-address",
        &format!("127.0.0.1:{port}"),
        "--controller-url",
        &format!("{}/prometheus", simulator.base),
        // The simulation scales every second; keep the served value close.
        "--max-staleness",
        "100ms",
    ]);
    tokio::spawn(pravega_metrics_adapter::run(config));
    let query = format!(
        "http://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/pravega_controller_segments_count?labelSelector=scope%3Dtest%2Cstream%3Dstream"
    );
    let truth = || async {
        let simulated = client().get(format!("{}/prometheus", simulator.base)).send().await.unwrap().text().await.unwrap();
        simulated
            .lines()
            .find_map(|l| l.strip_prefix("pravega_controller_segments_count{scope=\"test\",stream=\"stream\",} "))
            .map(|v| v.trim_end_matches(".0").to_owned())
    };
    // Rounds, not wall-clock time, bound the loop: a loaded machine slows
    // every round alike. A served value counts as right if it equals the
    // simulated count read just before or just after the query (a scale
    // may land in between).
    const ROUNDS: usize = 30;
    let (mut answered, mut matched, mut distinct) = (0, 0, std::collections::BTreeSet::new());
    for _ in 0..ROUNDS {
        let before = truth().await;
        let served = client().get(&query).send().await.ok();
        let body: serde_json::Value = match served {
            Some(r) => serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default(),
            None => serde_json::Value::Null,
        };
        let after = truth().await;
        if let Some(served) = body["items"][0]["value"].as_str() {
            answered += 1;
            matched += usize::from(before.as_deref() == Some(served) || after.as_deref() == Some(served));
            distinct.insert(served.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(answered >= ROUNDS - 5, "the adapter answered only {answered} of {ROUNDS} queries");
    assert!(matched * 10 >= answered * 9, "the adapter served the simulated count in only {matched} of {answered} answers");
    assert!(distinct.len() >= 3, "the served count must move with the simulation: {distinct:?}");
}
