//! Three controller replicas: A holds a stale segment count, B the current
//! one (it saw the most scale events), C another stream. B fails in every
//! way a controller can; the adapter must never serve A's stale value. With
//! the controller's gRPC API it serves the API's count when B cannot tell;
//! without it, nothing (the HPA holds).

use std::time::Duration;
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::controller_api::FakeControllerApi;
use test_support::exposition::{stream_exposition, SEGMENTS};
use test_support::fake_controller::FakeController;
use test_support::queries::external_path;

const STALE: u32 = 2;
const CURRENT: u32 = 7;

fn segments_path(stream: &str) -> String {
    external_path(SEGMENTS, &format!("scope=test,stream={stream}"))
}

/// The values served for test/s: empty if none.
async fn served(adapter: &Adapter) -> Vec<String> {
    let (status, body) = adapter.get(&segments_path("s")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().iter().map(|item| item["value"].as_str().unwrap().to_owned()).collect()
}

/// Queries `rounds` times, 100 ms apart; panics if A's stale value is ever
/// served; returns the distinct answers.
async fn never_stale(adapter: &Adapter, rounds: usize, what: &str) -> Vec<Vec<String>> {
    let mut seen: Vec<Vec<String>> = Vec::new();
    for _ in 0..rounds {
        let values = served(adapter).await;
        assert!(!values.contains(&STALE.to_string()), "{what}: served A's stale {STALE}: {values:?}\n{}", adapter.log());
        if !seen.contains(&values) {
            seen.push(values);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

struct Replicas {
    a: FakeController,
    b: FakeController,
    c: FakeController,
}

impl Replicas {
    async fn start() -> Self {
        Replicas {
            a: FakeController::start(stream_exposition("test", "s", STALE, 1, 0)).await,
            // One scale short of CURRENT: B's next scale is one the
            // adapters watch.
            b: FakeController::start(stream_exposition("test", "s", CURRENT - 1, 4, 1)).await,
            c: FakeController::start(stream_exposition("test", "other", 1, 0, 0)).await,
        }
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        for replica in [&self.a, &self.b, &self.c] {
            args.extend(["--controller-url".to_owned(), replica.url()]);
        }
        // Data expires 3 s after B's last good scrape.
        let timing = [
            "--scrape-interval",
            "500ms",
            "--scrape-timeout",
            "400ms",
            "--max-staleness",
            "200ms",
            "--metrics-max-age",
            "3s",
            "--inventory-refresh",
            "500ms",
        ];
        args.extend(timing.iter().chain(extra).map(|s| (*s).to_owned()));
        args
    }

    /// B answers as it did after its scale to CURRENT.
    fn heal(&self) {
        self.b.set_content_type(None);
        self.b.set_body(stream_exposition("test", "s", CURRENT, 5, 1));
    }
}

#[tokio::test]
async fn a_failing_authoritative_replica_never_hands_the_stream_to_a_stale_one() {
    let replicas = Replicas::start().await;
    let api = FakeControllerApi::default();
    api.set("test", "s", CURRENT);
    let api_address = api.start().await;
    let api_url = format!("http://{api_address}");
    let adapter = Adapter::start(adapter_binary!(), &replicas.args(&["--controller-api-url", &api_url])).await;
    let bare = Adapter::start(adapter_binary!(), &replicas.args(&[])).await;
    // Both start after B's last scale: the API vouches for a count, the
    // metrics alone cannot (B might have been stale as well).
    assert_eq!(never_stale(&adapter, 5, "start").await, [vec![CURRENT.to_string()]]);
    assert_eq!(never_stale(&bare, 5, "start, no API").await, [Vec::<String>::new()]);
    // B scales while both watch.
    replicas.heal();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for adapter in [&adapter, &bare] {
        assert_eq!(never_stale(adapter, 5, "B scaled").await, [vec![CURRENT.to_string()]]);
    }

    // An HTML error page with 200.
    replicas.b.set_content_type(Some("text/html"));
    replicas.b.set_body("<html><body>502 Bad Gateway</body></html>\n");
    let (with_api, without) = tokio::join!(never_stale(&adapter, 10, "HTML page"), never_stale(&bare, 10, "HTML page, no API"));
    assert_eq!((with_api, without), (vec![vec![CURRENT.to_string()]], vec![vec![CURRENT.to_string()]]), "B's last good data stays");
    replicas.heal();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The body cut inside the segments_count line, no final newline.
    let whole = stream_exposition("test", "s", CURRENT, 5, 1);
    let cut = &whole[..whole.find("segments_count").unwrap() + 30];
    replicas.b.set_body(cut.to_owned());
    let (with_api, without) = tokio::join!(never_stale(&adapter, 10, "cut body"), never_stale(&bare, 10, "cut body, no API"));
    assert_eq!((with_api, without), (vec![vec![CURRENT.to_string()]], vec![vec![CURRENT.to_string()]]), "B's last good data stays");
    replicas.heal();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // B refuses connections for longer than --metrics-max-age.
    replicas.b.stop();
    let (seen, _) = tokio::join!(never_stale(&adapter, 45, "B unreachable"), never_stale(&bare, 45, "B unreachable, no API"));
    assert_eq!(seen, [vec![CURRENT.to_string()]], "the controller API answers once B's data expires\n{}", adapter.log());
    let seen = never_stale(&bare, 5, "B unreachable, no API").await;
    assert_eq!(seen, [Vec::<String>::new()], "without the API nothing is served: the HPA holds");
    // The API's count is served, not a remembered one: the inventory asks
    // again every --inventory-refresh.
    api.set("test", "s", CURRENT + 1);
    for _ in 0..30 {
        if served(&adapter).await == [(CURRENT + 1).to_string()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(never_stale(&adapter, 3, "API moved").await, [vec![(CURRENT + 1).to_string()]]);
    api.set("test", "s", CURRENT);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // B restarts: it answers again, without the stream until its next scale.
    replicas.b.resume().await;
    replicas.b.set_body("pravega_controller_hosts_count 3.0\n");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(never_stale(&adapter, 10, "B restarted").await, [vec![CURRENT.to_string()]]);
    assert_eq!(never_stale(&bare, 5, "B restarted, no API").await, [Vec::<String>::new()]);

    // B's next scale: it reports the stream again, one split further.
    replicas.b.set_body(stream_exposition("test", "s", CURRENT + 1, 6, 1));
    api.set("test", "s", CURRENT + 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for adapter in [&adapter, &bare] {
        assert_eq!(never_stale(adapter, 5, "B scaled").await, [vec![(CURRENT + 1).to_string()]]);
    }

    assert!(api.segment_calls() > 0);
    let (_, metrics) = adapter.get_text("/metrics").await;
    assert!(metrics.contains("pravega_adapter_controller_api_calls_total{method=\"getCurrentSegments\",result=\"success\"}"), "{metrics}");
    for reason in ["content_type", "truncated", "request"] {
        assert!(metrics.contains(&format!("result=\"{reason}\"")), "no scrape failure counted as {reason}:\n{metrics}");
    }
}

#[tokio::test]
async fn the_controller_api_overrules_a_stale_gauge_the_adapter_cannot_see() {
    // The adapter starts after B restarted: only A's stale value is left.
    let a = FakeController::start(stream_exposition("test", "s", STALE, 1, 0)).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", CURRENT);
    let api_address = api.start().await;
    let args: Vec<String> =
        ["--controller-url", &a.url(), "--controller-api-url", &format!("http://{api_address}")].iter().map(|s| (*s).to_owned()).collect();
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    let values = served(&adapter).await;
    assert_eq!(values, [CURRENT.to_string()], "{}", adapter.log());
    let (_, metrics) = adapter.get_text("/metrics").await;
    assert!(metrics.contains("pravega_adapter_stale_gauges_detected_total 1\n"), "the stale gauge is counted:\n{metrics}");
    // Unknown to the API and to the metrics alike: nothing invented.
    let (status, body) = adapter.get(&segments_path("missing")).await;
    assert_eq!((status, body["items"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
}

#[tokio::test]
async fn bodies_that_are_not_a_whole_exposition_fail_the_scrape() {
    let b = FakeController::start(stream_exposition("test", "s", CURRENT - 1, 4, 1)).await;
    let args: Vec<String> =
        ["--controller-url", &b.url(), "--scrape-interval", "300ms", "--scrape-timeout", "200ms", "--max-staleness", "100ms"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    // A scale the adapter watches: without a controller API it serves only
    // such values.
    b.set_body(stream_exposition("test", "s", CURRENT, 5, 1));
    for _ in 0..40 {
        if served(&adapter).await == [CURRENT.to_string()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failures = |metrics: &str, reason: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with("pravega_adapter_scrapes_total") && l.contains(&format!("result=\"{reason}\"")));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    };
    let cases: [(&str, Option<&'static str>, &str); 4] = [
        ("not_text", None, "pravega_controller_segments_count{scope=\"test\",stream=\"s\",} 3.0\n\0\0\n"),
        ("nothing_wanted", None, "# a controller that reports nothing yet\njvm_threads 12.0\n"),
        ("nothing_wanted", None, ""),
        ("content_type", Some("application/json"), "{\"segments\": 3}\n"),
    ];
    for (reason, content_type, body) in cases {
        let (_, before) = adapter.get_text("/metrics").await;
        b.set_content_type(content_type);
        b.set_body(body);
        let mut counted = false;
        for _ in 0..40 {
            let (_, metrics) = adapter.get_text("/metrics").await;
            assert_eq!(served(&adapter).await, [CURRENT.to_string()], "{reason}: the previous data stays");
            if failures(&metrics, reason) > failures(&before, reason) {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(counted, "no scrape failed as {reason}\n{}", adapter.log());
    }
    b.set_content_type(None);
    b.set_body(stream_exposition("test", "s", CURRENT + 1, 6, 1));
    for _ in 0..40 {
        if served(&adapter).await == [(CURRENT + 1).to_string()] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a whole exposition is served again\n{}", adapter.log());
}

#[tokio::test]
async fn streams_whose_gauge_is_gone_are_answered_by_the_controller_api() {
    // As Pravega 0.13 does after a scale: the replica that scaled reports
    // the stream's splits and merges, and no segments_count at all.
    let counters_only = "pravega_controller_segment_splits{host=\"b\",scope=\"test\",stream=\"s\",} 1.0\n\
                         pravega_controller_segment_merges{host=\"b\",scope=\"test\",stream=\"s\",} 0.0\n";
    let b = FakeController::start(counters_only).await;
    let api = FakeControllerApi::default();
    api.set("test", "s", 3);
    api.set("test", "t", 2);
    let api_address = api.start().await;
    let args: Vec<String> =
        ["--controller-url", &b.url(), "--controller-api-url", &format!("http://{api_address}")].iter().map(|s| (*s).to_owned()).collect();
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    assert_eq!(served(&adapter).await, ["3"], "no replica reports the family at all\n{}", adapter.log());
    // Another stream's gauge brings the family back: s still has none.
    b.set_body(format!("{counters_only}pravega_controller_segments_count{{host=\"b\",scope=\"test\",stream=\"t\",}} 2.0\n"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(served(&adapter).await, ["3"], "the replica at the mark has no gauge for s\n{}", adapter.log());
    let (_, body) = adapter.get(&segments_path("t")).await;
    assert_eq!(body["items"][0]["value"], "2", "{body}");
}
