//! The inventory of streams against a fake controller gRPC API: how long
//! listing takes, the API calls per second it makes at its default budget,
//! how long a scale takes from the metrics to the served value, how long a
//! query waits for a stream it has not asked yet, and the adapter's CPU and
//! peak RSS meanwhile.
//!
//! `cargo bench --bench inventory [-- --streams 1000,10000,100000 --seconds 10]`
//!
//! The adapter (release, plain HTTP on loopback) scrapes one fake replica
//! that reports no stream (Pravega's metrics after eviction) and asks the
//! fake API, which holds `streams` streams in scopes of 1,000. Results go
//! to stdout as a Markdown table.

use std::time::{Duration, Instant};
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::bench::measure::nearest_rank;
use test_support::bench::options::options;
use test_support::bench::process_stats::{cpu_time, memory};
use test_support::controller_api::FakeControllerApi;
use test_support::exposition::{stream_exposition, QUIET, SEGMENTS};
use test_support::fake_controller::FakeController;
use test_support::queries::external_path;

const PER_SCOPE: usize = 1_000;

fn name(i: usize) -> (String, String) {
    (format!("scope-{}", i / PER_SCOPE), format!("stream-{}", i % PER_SCOPE))
}

/// The adapter's own metric `name` (an unlabelled sample).
async fn own_metric(adapter: &Adapter, name: &str) -> f64 {
    let (_, text) = adapter.get_text("/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

async fn served(adapter: &Adapter, i: usize) -> Option<String> {
    let (scope, stream) = name(i);
    let (_, body) = adapter.get(&external_path(SEGMENTS, &format!("scope={scope},stream={stream}"))).await;
    body["items"].as_array()?.first()?["value"].as_str().map(str::to_owned)
}

async fn row(streams: usize, seconds: u64) -> String {
    let api = FakeControllerApi::default();
    for i in 0..streams {
        let (scope, stream) = name(i);
        api.set(&scope, &stream, 1);
    }
    let api_url = format!("http://{}", api.start().await);
    let replica = FakeController::start(QUIET).await;
    let args: Vec<String> =
        ["--controller-url", &replica.url(), "--controller-api-url", &api_url].iter().map(|s| (*s).to_owned()).collect();
    let started = Instant::now();
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    let pid = adapter.pid();

    // Listing every scope, within the default budget.
    while (own_metric(&adapter, "pravega_adapter_inventory_streams").await as usize) < streams {
        assert!(started.elapsed() < Duration::from_secs(600), "the inventory did not list {streams} streams in 10 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = started.elapsed();

    // Steady state: background calls and CPU over the window.
    let (calls, cpu) = (api.segment_calls(), cpu_time(pid));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let calls_per_second = (api.segment_calls() - calls) as f64 / seconds as f64;
    let cpu_share = (cpu_time(pid) - cpu).as_secs_f64() / seconds as f64;

    // A query for a stream the inventory has not asked yet: asked at once.
    let never_asked = streams - 1;
    let asked_at_once = Instant::now();
    assert_eq!(served(&adapter, never_asked).await.as_deref(), Some("1"));
    let asked_at_once = asked_at_once.elapsed();

    // Scales seen in the metrics: stream i splits on the replica while the
    // adapter watches; the time until the new count is served.
    let mut delays = Vec::new();
    for change in 0..10u32 {
        tokio::time::sleep(Duration::from_millis(300 + u64::from(change * 137 % 700))).await;
        let i = change as usize;
        let (scope, stream) = name(i);
        replica.set_body(stream_exposition(&scope, &stream, 2, 1, 0));
        api.set(&scope, &stream, 2);
        let changed = Instant::now();
        while served(&adapter, i).await.as_deref() != Some("2") {
            assert!(changed.elapsed() < Duration::from_secs(60), "a scale was not served within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        delays.push(changed.elapsed());
    }
    delays.sort();
    let (_, peak) = memory(pid);
    format!(
        "| {streams} | {:.1} | {calls_per_second:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
        listed.as_secs_f64(),
        nearest_rank(&delays, 0.5).as_secs_f64() * 1000.0,
        nearest_rank(&delays, 1.0).as_secs_f64() * 1000.0,
        asked_at_once.as_secs_f64() * 1000.0,
        cpu_share * 100.0,
        peak as f64 / 1024.0,
    )
}

#[tokio::main]
async fn main() {
    let options = options("inventory");
    println!("| streams | listed in (s) | getCurrentSegments/s, steady | scale -> served p50 (ms) | max (ms) | unasked stream's query (ms) | CPU, steady (% of a core) | peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|---|");
    for streams in options.streams {
        println!("{}", row(streams, options.seconds).await);
    }
}
