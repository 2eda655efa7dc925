//! The adapter on expositions captured from a real Pravega 0.13.0: two
//! controller replicas of one cluster (`tests/pravega/run.sh` with
//! `CAPTURE_FIXTURES=1` wrote them, with the stream's true segment count
//! from the controller's gRPC API at that moment), at two moments:
//! after the test stream split (replica B created the stream, replica A
//! split it), and after it merged back (A restarted in between, B merged).

use pravega_metrics_adapter::parse::Scanner;
use std::collections::BTreeMap;
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::exposition::{MERGES, QUIET, SEGMENTS, SPLITS};
use test_support::fake_controller::FakeController;
use test_support::queries::external_path;
use test_support::repo::fixture;

const MOMENTS: [&str; 2] = ["after-split", "after-merge"];

fn replicas(moment: &str) -> [String; 2] {
    ["a", "b"].map(|replica| format!("real-0.13.0-{moment}-replica-{replica}.prom"))
}

/// The true segment count of test/stream when the expositions were taken.
fn truth(moment: &str) -> u32 {
    let name = format!("real-0.13.0-{moment}.truth");
    fixture(&name).split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {name}"))
}

/// (family, scope, stream) -> value.
type PerStream = BTreeMap<(String, String, String), f64>;

/// The per-stream families' values as the adapter's scanner reads them;
/// every sample's label names, too.
fn scan(text: &str) -> (PerStream, Vec<Vec<String>>) {
    let (mut values, mut label_names) = (BTreeMap::new(), Vec::new());
    let stats = Scanner::scan_all(
        |name: &str| name.starts_with("pravega_controller_"),
        text.as_bytes(),
        |sample| {
            let get = |k: &str| sample.labels.iter().find(|l| l.name == k).map(|l| l.value.to_string());
            label_names.push(sample.labels.iter().map(|l| l.name.to_owned()).collect());
            if let (Some(scope), Some(stream)) = (get("scope"), get("stream")) {
                values.insert((sample.name.to_owned(), scope, stream), sample.value);
            }
        },
    );
    assert_eq!(stats.malformed, 0, "{:?}", stats.first_malformed);
    (values, label_names)
}

/// The same exposition read by prometheus-parse, as an oracle: every
/// gauge or counter sample of a `pravega_controller_` family with scope and
/// stream labels.
fn oracle(text: &str) -> PerStream {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("pravega_controller_"))
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                _ => return None,
            };
            Some(((s.metric.clone(), s.labels.get("scope")?.to_owned(), s.labels.get("stream")?.to_owned()), value))
        })
        .collect()
}

#[test]
fn the_scanner_reads_the_real_format_as_prometheus_parse_does() {
    let mut per_stream = 0;
    for name in MOMENTS.iter().flat_map(|m| replicas(m)) {
        let name = name.as_str();
        let text = fixture(name);
        // The real format: Micrometer's trailing comma, Java doubles, and a
        // `host` label on every series.
        assert!(text.contains(",} "), "{name}: no trailing comma");
        let (values, labels) = scan(&text);
        assert!(labels.iter().all(|l| l.iter().any(|n| n == "host")), "{name}: a series without host");
        // A restarted replica may have none (after-merge-replica-a).
        let want = oracle(&text);
        per_stream += want.len();
        // The scanner skips summaries (their _count and _sum are not
        // gauges); prometheus-parse lists those as summaries, not here.
        assert_eq!(values, want, "{name}");
    }
    assert!(per_stream >= 10, "only {per_stream} per-stream samples in all the captures");
}

#[test]
fn the_replica_that_scaled_last_knows_the_count() {
    let key = |family: &str| (family.to_owned(), "test".to_owned(), "stream".to_owned());
    for moment in MOMENTS {
        let scanned: Vec<_> = replicas(moment).iter().map(|name| scan(&fixture(name)).0).collect();
        // Whichever replica has the most scale events (splits + merges)
        // holds the true count; a replica without them never scaled the
        // stream (or restarted since).
        let events = |v: &PerStream| v.get(&key(SPLITS)).copied().unwrap_or(-1.0) + v.get(&key(MERGES)).copied().unwrap_or(-1.0);
        let latest = scanned.iter().max_by(|a, b| events(a).total_cmp(&events(b))).unwrap();
        assert_eq!(latest.get(&key(SEGMENTS)).copied(), Some(f64::from(truth(moment))), "{moment}");
        assert!(events(latest) >= 1.0, "{moment}: the capture follows a scale");
    }
}

/// The adapter, scraping both replicas of `moment` (in both orders) as the
/// captures appear, must serve one item with the stream's true count.
async fn adapter_serves_the_truth(moment: &str) {
    let [a_capture, b_capture] = replicas(moment);
    for first_is_a in [true, false] {
        let (a, b) = (FakeController::start(QUIET).await, FakeController::start(QUIET).await);
        let (first, second) = if first_is_a { (&a, &b) } else { (&b, &a) };
        let args: Vec<String> = ["--controller-url".to_owned(), first.url(), "--controller-url".to_owned(), second.url()].into();
        let adapter = Adapter::start(adapter_binary!(), &args).await;
        // The replicas report the stream after the adapter started: the
        // scale happened while it watched.
        adapter.watch(&a, fixture(&a_capture)).await;
        adapter.watch(&b, fixture(&b_capture)).await;
        let (code, body) = adapter.get(&external_path(SEGMENTS, "scope=test,stream=stream")).await;
        assert_eq!(code, 200, "{moment}: {body}");
        // One item, as the HPA needs for an Object metric (and sums for an
        // External one), though each replica tags its series with its own
        // host.
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{moment}: {body}");
        assert_eq!(items[0]["value"], truth(moment).to_string(), "{moment}: {body}");
        assert_eq!(items[0]["metricLabels"]["scope"], "test");
        assert_eq!(items[0]["metricLabels"]["stream"], "stream");
    }
}

/// Only B has the stream's series (A restarted after the split; B merged).
#[tokio::test]
async fn the_adapter_serves_the_true_count_after_the_merge() {
    adapter_serves_the_truth("after-merge").await;
}

/// Both replicas have the series: B's stale 1 (it created the stream), A's
/// 3 (it split it), under different `host` tags.
#[tokio::test]
async fn the_adapter_serves_the_true_count_after_the_split() {
    adapter_serves_the_truth("after-split").await;
}
