//! `generator --simulate` as a process: its /prometheus endpoint in the
//! controller's format, segments following the load, and the adapter
//! serving what it simulates (the loop `make run` shows).

use clap::Parser;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::adapter::wait_ready;
use test_support::exposition::SEGMENTS;
use test_support::net::{free_port, http};
use test_support::queries::external_path;

struct Simulator {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A fast-moving simulation: 1 s hold, 100 events/s per segment, 50 to
/// 1,000 events/s over 8 s; the stream is created `create_after` in.
async fn simulator(create_after: &str) -> Simulator {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("simulator-test-{}-{port}.log", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--simulate", "--listen", &format!("127.0.0.1:{port}"), "--period", "8s", "--scale-hold", "1s"])
        .args(["--min-rate", "50", "--max-rate", "1000", "--scaling-rate", "100", "--create-after", create_after])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut simulator = Simulator { child, base: format!("http://127.0.0.1:{port}"), log };
    let ready = format!("{}/readyz", simulator.base);
    wait_ready("simulator", &mut simulator.child, http(), &ready, &simulator.log).await;
    simulator
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    let sample = scrape.samples.iter().find(|s| s.metric == name)?;
    match sample.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Some(v),
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn simulated_segments_follow_the_load_in_the_controller_format() {
    let simulator = simulator("0s").await;
    let (mut peak, mut last_splits, mut last_merges) = (0.0f64, 0.0, 0.0);
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_secs(10) {
        text = http().get(format!("{}/prometheus", simulator.base)).send().await.unwrap().text().await.unwrap();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        // As a real controller: splits and merges only once the stream
        // has scaled, both or neither.
        let segments = value(&scrape, "pravega_controller_segments_count").expect("segments_count");
        let (splits, merges) =
            match (value(&scrape, "pravega_controller_segment_splits"), value(&scrape, "pravega_controller_segment_merges")) {
                (Some(splits), Some(merges)) => (splits, merges),
                (None, None) => (0.0, 0.0),
                other => panic!("splits and merges must come together: {other:?}"),
            };
        assert!(splits >= last_splits && merges >= last_merges, "counters only grow");
        (last_splits, last_merges, peak) = (splits, merges, peak.max(segments));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(peak >= 3.0, "1,000 events/s at 100 per segment must split several times; peak {peak}");
    assert!(last_merges >= 1.0, "the trough must merge");
    assert!(text.contains("pravega_controller_segments_count{host=\""), "{text}");
    assert!(text.contains("\",scope=\"test\",stream=\"stream\",} "), "{text}");
    let metrics = http().get(format!("{}/metrics", simulator.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("generator_target_rate"), "{metrics}");
}

#[tokio::test]
async fn the_adapter_serves_what_the_simulator_reports() {
    // The stream is created once the adapter watches: without a controller
    // API it serves only what it saw happen.
    let simulator = simulator("2s").await;
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
    let query = format!("http://127.0.0.1:{port}{}", external_path(SEGMENTS, "scope=test,stream=stream"));
    // The simulator's count, sampled every 50 ms into a history the
    // assertions read: a served value counts as right if the simulator
    // reported it at some point from STALENESS before the query until its
    // answer (a loaded machine stretches the adapter's staleness bound to
    // three slow scrape rounds; the simulation scales every second).
    const STALENESS: Duration = Duration::from_secs(1);
    let history = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
    let sampler = {
        let (history, url) = (history.clone(), format!("{}/prometheus", simulator.base));
        tokio::spawn(async move {
            loop {
                if let Ok(response) = http().get(&url).send().await {
                    let simulated = response.text().await.unwrap_or_default();
                    // Series carry the replica's host label before scope and stream.
                    let count = simulated
                        .lines()
                        .filter(|l| l.starts_with("pravega_controller_segments_count{"))
                        .find_map(|l| l.split_once(",scope=\"test\",stream=\"stream\",} ").map(|(_, v)| v))
                        .map(|v| v.trim_end_matches(".0").to_owned());
                    if let Some(count) = count {
                        history.lock().unwrap().push((Instant::now(), count));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // The stream's creation, served: a bounded number of queries.
    for _ in 0..100 {
        let body: serde_json::Value = match http().get(&query).send().await {
            Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if body["items"][0]["value"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Rounds, not wall-clock time, bound the loop: a loaded machine slows
    // every round alike.
    const ROUNDS: usize = 30;
    let (mut answered, mut matched, mut distinct) = (0, 0, std::collections::BTreeSet::new());
    for _ in 0..ROUNDS {
        let asked = Instant::now();
        let served = http().get(&query).send().await.ok();
        let body: serde_json::Value = match served {
            Some(r) => serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default(),
            None => serde_json::Value::Null,
        };
        let answered_at = Instant::now();
        if let Some(served) = body["items"][0]["value"].as_str() {
            answered += 1;
            let reported = history
                .lock()
                .unwrap()
                .iter()
                .any(|(at, count)| *at + STALENESS >= asked && *at <= answered_at + Duration::from_millis(100) && count == served);
            matched += usize::from(reported);
            distinct.insert(served.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sampler.abort();
    assert!(answered >= ROUNDS - 5, "the adapter answered only {answered} of {ROUNDS} queries");
    assert!(matched * 10 >= answered * 9, "the adapter served the simulated count in only {matched} of {answered} answers");
    assert!(distinct.len() >= 3, "the served count must move with the simulation: {distinct:?}");
}
