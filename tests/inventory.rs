//! Every stream, always: the controllers' gRPC API as the inventory of
//! streams, and answers that are whole or withheld. A fake controller
//! replica serves the metrics (as Pravega does: only streams that scaled
//! lately, since it evicts quiet ones) and a fake gRPC API the truth.

use std::time::Duration;
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::controller_api::{FakeControllerApi, Stream};
use test_support::exposition::{stream_exposition, SEGMENTS};
use test_support::fake_controller::FakeController;
use test_support::queries::{external_path, object_path};

/// An exposition with no per-stream series: every stream quiet and evicted.
const QUIET: &str = "pravega_controller_hosts_count 2.0\n";

async fn start(replica: &FakeController, api: &FakeControllerApi, extra: &[&str]) -> Adapter {
    let api_url = format!("http://{}", api.start().await);
    let mut args: Vec<String> = ["--controller-url", &replica.url(), "--controller-api-url", &api_url]
        .iter()
        .chain(["--scrape-interval", "300ms", "--scrape-timeout", "200ms", "--max-staleness", "100ms"].iter())
        .chain(["--inventory-refresh", "300ms", "--inventory-list-interval", "300ms", "--controller-api-timeout", "300ms"].iter())
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Adapter::start(adapter_binary!(), &args).await
}

/// The external values for `selector`, by stream name.
async fn external(adapter: &Adapter, selector: &str) -> Vec<(String, String)> {
    let (status, body) = adapter.get(&external_path(SEGMENTS, selector)).await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["metricLabels"]["stream"].as_str().unwrap().to_owned(), i["value"].as_str().unwrap().to_owned()))
        .collect()
}

/// The Object value for `selector`, or the status and message.
async fn object(adapter: &Adapter, selector: &str) -> Result<String, (u16, String)> {
    let (status, body) = adapter.get(&object_path("v1beta2", SEGMENTS, selector)).await;
    match status {
        200 => Ok(body["items"][0]["value"].as_str().unwrap().to_owned()),
        _ => Err((status, body["message"].as_str().unwrap_or("").to_owned())),
    }
}

/// Queries until `selector`'s External answer is `expected` (a bounded
/// number of times); panics with `what` otherwise.
async fn until_served(adapter: &Adapter, selector: &str, expected: &[(&str, &str)], what: &str) {
    for _ in 0..50 {
        if external(adapter, selector).await == pairs(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}\n{}", adapter.log());
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test]
async fn quiet_streams_are_served_from_the_inventory_after_the_adapter_starts() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 5);
    api.set("test", "t", 2);
    api.set("test", "sealed", 0);
    let adapter = start(&replica, &api, &[]).await;
    assert_eq!(external(&adapter, "scope=test,stream=s").await, pairs(&[("s", "5")]), "{}", adapter.log());
    assert_eq!(external(&adapter, "scope=test").await, pairs(&[("s", "5"), ("sealed", "0"), ("t", "2")]));
    assert_eq!(object(&adapter, "scope=test").await, Ok("7".to_owned()), "a sealed stream counts 0");
    // A stream created since the last listing is asked at once.
    api.set("test", "new", 3);
    assert_eq!(external(&adapter, "scope=test,stream=new").await, pairs(&[("new", "3")]));
}

#[tokio::test]
async fn an_answer_leaves_no_selected_stream_out() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 5);
    api.put("test", "t", Stream::Fails(tonic::Code::PermissionDenied));
    let adapter = start(&replica, &api, &[]).await;
    // t's answer is refused: a sum or list over the scope is withheld.
    let withheld = object(&adapter, "scope=test").await.unwrap_err();
    assert_eq!(withheld.0, 404);
    assert!(withheld.1.contains("test/t (refused)"), "{withheld:?}");
    assert_eq!(external(&adapter, "scope=test").await, [], "never s alone");
    // One stream's refusal does not take the endpoint out for the others.
    assert_eq!(external(&adapter, "scope=test,stream=s").await, pairs(&[("s", "5")]));
    assert_eq!(object(&adapter, "scope=test,stream=s").await, Ok("5".to_owned()));
    api.set("test", "t", 2);
    let mut whole = None;
    for _ in 0..50 {
        if let Ok(sum) = object(&adapter, "scope=test").await {
            whole = Some(sum);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(whole.as_deref(), Some("7"), "{}", adapter.log());
    let (_, metrics) = adapter.get_text("/metrics").await;
    assert!(metrics.contains("pravega_adapter_withheld_answers_total{route=\"custom\"}"), "{metrics}");
    assert!(metrics.contains("pravega_adapter_controller_api_calls_total{method=\"getCurrentSegments\",result=\"refused\"}"), "{metrics}");
}

#[tokio::test]
async fn every_stream_of_a_large_scope_is_in_the_sum() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    let mut truth = 0;
    for i in 0..40 {
        api.set("test", &format!("s{i:02}"), i % 5 + 1);
        truth += i % 5 + 1;
    }
    let adapter = start(&replica, &api, &[]).await;
    assert_eq!(object(&adapter, "scope=test").await, Ok(truth.to_string()), "{}", adapter.log());
    assert_eq!(external(&adapter, "scope=test").await.len(), 40);
}

#[tokio::test]
async fn a_deleted_stream_is_not_served_and_its_recreation_starts_anew() {
    // A replica still reports the deleted stream's totals and count.
    let replica = FakeController::start(stream_exposition("test", "s", 3, 2, 0)).await;
    let api = FakeControllerApi::default();
    api.set("test", "t", 1);
    let adapter = start(&replica, &api, &[]).await;
    assert_eq!(external(&adapter, "scope=test").await, pairs(&[("t", "1")]), "s does not exist\n{}", adapter.log());
    assert_eq!(object(&adapter, "scope=test").await, Ok("1".to_owned()));
    assert_eq!(external(&adapter, "scope=test,stream=s").await, []);
    // Recreated under the same name, with one segment: the API's count is
    // served, not the old stream's 3 that the replica still reports.
    api.set("test", "s", 1);
    for _ in 0..30 {
        let values = external(&adapter, "scope=test,stream=s").await;
        assert!(!values.contains(&("s".to_owned(), "3".to_owned())), "the deleted stream's count: {values:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(external(&adapter, "scope=test,stream=s").await, pairs(&[("s", "1")]));
    // Its first scale, seen in the metrics, counts from 0 again.
    replica.set_body(stream_exposition("test", "s", 3, 1, 0));
    api.set("test", "s", 3);
    until_served(&adapter, "scope=test,stream=s", &[("s", "3")], "the recreated stream's scale is served").await;
}

#[tokio::test]
async fn an_unconfirmed_gauge_is_never_served_whatever_the_api_does() {
    // The adapter starts after the replica that scaled last restarted:
    // only a stale replica's 2 is left, at first sight.
    let replica = FakeController::start(stream_exposition("test", "s", 2, 1, 0)).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 4);
    let adapter = start(&replica, &api, &[]).await;
    assert_eq!(external(&adapter, "scope=test,stream=s").await, pairs(&[("s", "4")]));
    // The API stops answering: its answer ages out, and then nothing is
    // served, never the stale 2.
    api.set_down(true);
    let mut withheld = false;
    for _ in 0..60 {
        let values = external(&adapter, "scope=test,stream=s").await;
        assert!(!values.contains(&("s".to_owned(), "2".to_owned())), "served the unconfirmed gauge\n{}", adapter.log());
        if values.is_empty() {
            withheld = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(withheld, "the answer ages out\n{}", adapter.log());
    let (_, metrics) = adapter.get_text("/metrics").await;
    assert!(metrics.contains("pravega_adapter_stale_gauges_detected_total 1\n"), "counted once:\n{metrics}");
    assert_eq!(adapter.log().matches("stale segments_count gauge").count(), 1, "logged once\n{}", adapter.log());
}

#[tokio::test]
async fn a_watched_scale_the_api_contradicts_is_withheld_until_the_next_scale() {
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 1);
    let adapter = start(&replica, &api, &["--scale-settle-time", "300ms"]).await;
    assert_eq!(external(&adapter, "scope=test,stream=s").await, pairs(&[("s", "1")]));
    // The metrics show a split to 3; the API (another cluster's, say)
    // keeps saying 1 past the settling time.
    replica.set_body(stream_exposition("test", "s", 3, 1, 0));
    let mut seen = Vec::new();
    for _ in 0..40 {
        let values = external(&adapter, "scope=test,stream=s").await;
        if seen.last() != Some(&values) {
            seen.push(values);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.last(), Some(&Vec::new()), "withheld in the end: {seen:?}\n{}", adapter.log());
    // The verdict holds when the API later agrees with the old gauge...
    api.set("test", "s", 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(external(&adapter, "scope=test,stream=s").await, [], "held until the mark rises");
    // ...until the next scale.
    replica.set_body(stream_exposition("test", "s", 4, 2, 0));
    api.set("test", "s", 4);
    until_served(&adapter, "scope=test,stream=s", &[("s", "4")], "the next scale is served").await;
    let (_, metrics) = adapter.get_text("/metrics").await;
    assert!(metrics.contains("pravega_adapter_disputed_streams_total 1\n"), "{metrics}");
}

#[tokio::test]
async fn without_an_api_only_watched_scales_are_served_and_readyz_says_so() {
    let replica = FakeController::start(stream_exposition("test", "s", 2, 1, 0)).await;
    let args: Vec<String> = ["--controller-url", &replica.url(), "--scrape-interval", "300ms", "--scrape-timeout", "200ms"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    let (_, ready) = adapter.get_text("/readyz").await;
    assert!(ready.contains("quiet streams cannot be served"), "{ready}");
    assert!(adapter.log().contains("no controller API endpoint"), "{}", adapter.log());
    assert_eq!(external(&adapter, "scope=test,stream=s").await, [], "known from before the adapter started");
    replica.set_body(stream_exposition("test", "s", 3, 2, 0));
    until_served(&adapter, "scope=test,stream=s", &[("s", "3")], "a watched scale is served").await;
}

#[tokio::test]
async fn an_unreachable_api_leaves_what_the_metrics_decide() {
    // The API is configured (discovered pods' port, say) but answers nowhere.
    let replica = FakeController::start(stream_exposition("test", "s", 2, 1, 0)).await;
    let closed = test_support::net::free_port();
    let args: Vec<String> = [
        "--controller-url",
        &replica.url(),
        "--controller-api-url",
        &format!("http://127.0.0.1:{closed}"),
        "--scrape-interval",
        "300ms",
        "--scrape-timeout",
        "200ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    assert_eq!(external(&adapter, "scope=test,stream=s").await, [], "known from before the adapter started");
    assert!(object(&adapter, "scope=test").await.is_err(), "the scope cannot be listed: no sum");
    replica.set_body(stream_exposition("test", "s", 3, 2, 0));
    until_served(&adapter, "scope=test,stream=s", &[("s", "3")], "a watched scale is served").await;
}

#[tokio::test]
async fn a_first_scale_is_served_at_once_and_a_seal_as_0() {
    // Created with 2 segments, reported by the replica that created it (no
    // splits or merges yet); the API agrees.
    let replica = FakeController::start(QUIET).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 2);
    let api_url = format!("http://{}", api.start().await);
    let args: Vec<String> = ["--controller-url", &replica.url(), "--controller-api-url", &api_url, "--scrape-interval", "300ms"]
        .iter()
        .chain(["--scrape-timeout", "200ms", "--inventory-refresh", "30s", "--scale-settle-time", "30s"].iter())
        .map(|s| (*s).to_owned())
        .collect();
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    replica.set_body("pravega_controller_segments_count{scope=\"test\",stream=\"s\",} 2.0\n");
    assert_eq!(external(&adapter, "scope=test,stream=s").await, pairs(&[("s", "2")]));
    // Its first split, reported as Pravega's scaling replica may: splits,
    // and no segments_count. The answer asked before it is outdated, and
    // the API is asked at once.
    replica.set_body("pravega_controller_segment_splits{scope=\"test\",stream=\"s\",} 1.0\n");
    api.set("test", "s", 3);
    let mut served = Vec::new();
    for _ in 0..20 {
        served = external(&adapter, "scope=test,stream=s").await;
        if served == pairs(&[("s", "3")]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, pairs(&[("s", "3")]), "within 2 s, not at the next refresh (30 s)\n{}", adapter.log());
    // Sealed: no current segments, whatever the last gauge says.
    api.set("test", "s", 0);
    replica.set_body(stream_exposition("test", "s", 4, 2, 0));
    api.set("test", "s", 0);
    until_served(&adapter, "scope=test,stream=s", &[("s", "0")], "the sealed stream is served as 0").await;
}
