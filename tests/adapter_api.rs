//! The adapter binary against fake Pravega controllers, queried over HTTP
//! and with the real `kubectl get --raw`.

use serde_json::{json, Value};
use std::time::Duration;
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::exposition::{stream_exposition, QUIET, SEGMENTS};
use test_support::fake_controller::FakeController;
use test_support::net::http;
use test_support::queries::{external_path, kubectl_raw, object_path};
use test_support::repo::fixture;

fn args(controllers: &[&FakeController], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = controllers.iter().flat_map(|c| ["--controller-url".to_owned(), c.url()]).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn values(body: &Value) -> Vec<(String, String)> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|i| (i["metricLabels"]["stream"].as_str().unwrap_or("").to_owned(), i["value"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn serves_the_demo_fixture_through_both_apis_and_kubectl() {
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(adapter_binary!(), &args(&[&controller], &[])).await;
    adapter.watch(&controller, fixture("seed-demo.prom")).await;

    let (code, body) = adapter.get(&external_path(SEGMENTS, "scope=test,stream=stream")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "ExternalMetricValueList");
    assert_eq!(body["items"][0]["metricLabels"], json!({"scope": "test", "stream": "stream"}));
    assert_eq!(body["items"][0]["value"], "9");
    assert_eq!(body["items"][0]["window"], 10);

    for version in ["v1beta1", "v1beta2"] {
        let (ok, text) = kubectl_raw(&adapter.base, &object_path(version, SEGMENTS, "scope=test,stream=stream"));
        assert!(ok, "kubectl: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["apiVersion"], format!("custom.metrics.k8s.io/{version}"));
        assert_eq!(body["items"][0]["value"], "9");
        assert_eq!(body["items"][0]["describedObject"]["name"], "flink-taskmanager");
    }

    // The namespace itself, root-scoped objects and every per-stream family.
    let (code, body) =
        adapter.get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/metrics/pravega_controller_transactions_opened").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"][0]["value"], "4");
    assert_eq!(body["items"][0]["describedObject"], json!({"kind": "Namespace", "apiVersion": "v1", "name": "default"}));
    let (code, _) = adapter.get("/apis/custom.metrics.k8s.io/v1beta1/nodes/n1/pravega_controller_segment_merges").await;
    assert_eq!(code, 200);

    let (ok, text) = kubectl_raw(&adapter.base, "/apis/external.metrics.k8s.io/v1beta1");
    assert!(ok, "{text}");
    let discovery: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = discovery["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&SEGMENTS), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("jvm_")), "{names:?}");
    assert!(!names.contains(&"pravega_controller_segment_splits_global"), "not per-stream: {names:?}");
}

#[tokio::test]
async fn discovery_openapi_health_and_own_metrics() {
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(adapter_binary!(), &args(&[&controller], &[])).await;
    adapter.watch(&controller, fixture("plain-format.prom")).await;
    for path in [
        "/apis",
        "/apis/custom.metrics.k8s.io",
        "/apis/custom.metrics.k8s.io/v1beta1",
        "/apis/custom.metrics.k8s.io/v1beta2",
        "/apis/external.metrics.k8s.io",
        "/apis/external.metrics.k8s.io/v1beta1",
        "/openapi/v2",
    ] {
        let (code, body) = adapter.get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, apis) = adapter.get("/apis").await;
    assert_eq!(apis["groups"][0]["preferredVersion"]["version"], "v1beta2");
    let (_, v2) = adapter.get("/apis/custom.metrics.k8s.io/v1beta2").await;
    let names: Vec<&str> = v2["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"deployments.apps/pravega_controller_segments_count"), "{names:?}");
    assert_eq!(adapter.get("/openapi/v2").await.1["swagger"], "2.0");
    for path in ["/livez", "/readyz", "/healthz"] {
        let (code, text) = adapter.get_text(path).await;
        assert!(code == 200 && text.starts_with("ok"), "{path}: {code} {text}");
    }
    adapter.get(&external_path(SEGMENTS, "")).await;
    let (code, metrics) = adapter.get_text("/metrics").await;
    assert_eq!(code, 200);
    let parsed = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let has = |name: &str| parsed.samples.iter().any(|s| s.metric == name);
    for name in [
        "pravega_adapter_scrapes_total",
        "pravega_adapter_series",
        "pravega_adapter_requests_total",
        "pravega_adapter_request_duration_seconds_count",
        "pravega_adapter_served_value_age_seconds_count",
    ] {
        assert!(has(name), "{name} missing from:\n{metrics}");
    }
    let series = parsed.samples.iter().find(|s| s.metric == "pravega_adapter_series").unwrap();
    // 5 streams x 7 per-stream families in plain-format.prom.
    assert!(
        matches!(series.value, prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) if v == 35.0),
        "{:?}",
        series.value
    );
}

#[tokio::test]
async fn disagreeing_replicas_are_merged_not_summed() {
    // b performed the latest scale of test/s; a still holds its older value.
    let a = FakeController::start(QUIET).await;
    let b = FakeController::start(QUIET).await;
    let adapter = Adapter::start(
        adapter_binary!(),
        &args(&[&a, &b], &["--max-staleness", "100ms", "--scrape-interval", "60s", "--metrics-max-age", "120s"]),
    )
    .await;
    adapter.watch(&a, stream_exposition("test", "s", 5, 6, 4)).await;
    adapter.watch(&b, stream_exposition("test", "s", 7, 7, 4)).await;
    let (_, body) = adapter.get(&external_path(SEGMENTS, "scope=test,stream=s")).await;
    assert_eq!(values(&body), vec![("s".to_owned(), "7".to_owned())]);

    // a scales next (a merge): its value wins, brought by queries although
    // the background interval is a minute. A loaded machine stretches the
    // staleness bound (three slow rounds), so the queries that refresh it
    // are counted in rounds; every answer is one replica's value, never a sum.
    a.set_body(stream_exposition("test", "s", 6, 7, 5));
    let mut merged = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, body) = adapter.get(&external_path(SEGMENTS, "scope=test,stream=s")).await;
        let served = values(&body);
        assert!(served == [("s".to_owned(), "7".to_owned())] || served == [("s".to_owned(), "6".to_owned())], "{served:?}");
        if served == [("s".to_owned(), "6".to_owned())] {
            merged = true;
            break;
        }
    }
    assert!(merged, "queries never brought replica a's merge");
    let (_, body) = adapter.get(&object_path("v1beta2", SEGMENTS, "scope=test")).await;
    assert_eq!(body["items"][0]["value"], "6", "{body}");

    // a restarts: its series are gone until its next scale. b's 7 is
    // known to be stale (b saw fewer scale events): with no controller API
    // to ask, nothing is served and the HPA holds.
    a.set_body("pravega_controller_hosts_count 3.0\n");
    let mut withdrawn = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, body) = adapter.get(&external_path(SEGMENTS, "")).await;
        let served = values(&body);
        assert!(served.is_empty() || served == [("s".to_owned(), "6".to_owned())], "b's stale 7 served: {served:?}");
        if served.is_empty() {
            withdrawn = true;
            break;
        }
    }
    assert!(withdrawn, "the stream stayed served after the replica that scaled it restarted");
}

#[tokio::test]
async fn object_metric_sums_the_streams_of_one_job() {
    let body = [stream_exposition("test", "a", 3, 2, 0), stream_exposition("test", "b", 4, 3, 0), stream_exposition("other", "c", 9, 8, 0)]
        .concat();
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(adapter_binary!(), &args(&[&controller], &[])).await;
    adapter.watch(&controller, body).await;
    let (_, body) = adapter.get(&object_path("v1beta2", SEGMENTS, "scope=test,stream in (a,b)")).await;
    assert_eq!(body["items"][0]["value"], "7", "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "an Object metric has exactly one item");
    let (_, body) = adapter.get(&object_path("v1beta1", SEGMENTS, "stream!=c")).await;
    assert_eq!(body["items"][0]["value"], "7", "{body}");
    let (code, body) = adapter.get(&object_path("v1beta2", SEGMENTS, "scope=nothing")).await;
    assert_eq!(code, 404);
    assert!(body["message"].as_str().unwrap().contains("scope=nothing"), "{body}");
}

/// The scrape pool's timing on the wall clock, through the binary: a failing
/// controller's data is served until `--metrics-max-age`, then not, and
/// comes back with the controller. Refreshes, shared rounds, the staleness
/// bound and slow rounds are tested under paused time in `src/scrape.rs`.
#[tokio::test]
async fn data_outlives_a_failing_controller_only_until_max_age() {
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(
        adapter_binary!(),
        &args(
            &[&controller],
            &["--scrape-interval", "500ms", "--scrape-timeout", "200ms", "--metrics-max-age", "2s", "--max-staleness", "100ms"],
        ),
    )
    .await;
    adapter.watch(&controller, stream_exposition("test", "s", 3, 2, 0)).await;
    controller.fail_with(Some(axum::http::StatusCode::INTERNAL_SERVER_ERROR));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (code, body) = adapter.get(&external_path(SEGMENTS, "")).await;
    assert_eq!(code, 200, "{body}\n{}", adapter.log());
    assert_eq!(values(&body), vec![("s".to_owned(), "3".to_owned())], "kept within max age");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (code, body) = adapter.get(&external_path(SEGMENTS, "")).await;
    assert!(code == 404 || values(&body).is_empty(), "served stale data: {body}");
    let (code, _) = adapter.get(&object_path("v1beta2", SEGMENTS, "")).await;
    assert_eq!(code, 404);
    // The controller recovers. Without a controller API its count is
    // served again from its next scale, which the adapter watches.
    controller.set_body(stream_exposition("test", "s", 4, 3, 0));
    controller.fail_with(None);
    let mut body = Value::Null;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (code, answer) = adapter.get(&external_path(SEGMENTS, "")).await;
        body = answer;
        if code == 200 && body["items"].as_array().is_some_and(|items| !items.is_empty()) {
            break;
        }
    }
    assert_eq!(values(&body), vec![("s".to_owned(), "4".to_owned())]);
    assert!(adapter.log().contains("scrape failed"), "{}", adapter.log());
}

#[tokio::test]
async fn oversized_bodies_fail_the_scrape_but_keep_old_data() {
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(
        adapter_binary!(),
        &args(
            &[&controller],
            &["--scrape-max-body-bytes", "4Ki", "--max-staleness", "100ms", "--scrape-interval", "60s", "--metrics-max-age", "120s"],
        ),
    )
    .await;
    adapter.watch(&controller, stream_exposition("test", "s", 3, 2, 0)).await;
    let mut huge = stream_exposition("test", "s", 5, 9, 0);
    huge.push_str(&"# padding\n".repeat(1000));
    controller.set_body(huge);
    // Queries refresh the data until a scrape has met the cap (its log
    // line); no answer ever holds the over-cap body's 5.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, body) = adapter.get(&external_path(SEGMENTS, "")).await;
        assert_eq!(values(&body), vec![("s".to_owned(), "3".to_owned())], "the over-cap body must not be used");
        if adapter.log().contains("cap") {
            break;
        }
    }
    assert!(adapter.log().contains("cap"), "{}", adapter.log());
}

/// many-streams.prom (1.2 MB) is several times the body bytes the adapter
/// reads ahead of its parser, so it arrives in chunks that wait for the
/// parser to free budget; every stream must still be served.
#[tokio::test]
async fn a_body_larger_than_the_read_ahead_budget_is_served_whole() {
    let text = fixture("many-streams.prom");
    let expected: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("pravega_controller_segments_count{scope=\"scope-3\",stream=\""))
        .map(|rest| {
            let (stream, value) = rest.split_once("\",} ").unwrap();
            (stream.to_owned(), value.trim_end_matches(".0").to_owned())
        })
        .collect();
    assert_eq!(expected.len(), 100);
    let streams = text.lines().filter(|l| l.starts_with("pravega_controller_segments_count{")).count();
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(adapter_binary!(), &args(&[&controller], &[])).await;
    adapter.watch(&controller, text).await;
    // The first round parses 1.2 MB (slowly in a debug build on a loaded
    // machine): a bounded number of queries wait for it.
    let mut answer = adapter.get(&external_path(SEGMENTS, "scope=scope-3")).await;
    for _ in 0..50 {
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = adapter.get(&external_path(SEGMENTS, "scope=scope-3")).await;
    }
    let (code, body) = answer;
    assert_eq!(code, 200, "{body}");
    let mut served = values(&body);
    served.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(served, expected);

    // Unfiltered: all 2,000 streams, a query long enough to be answered
    // with the serving thread's other requests handed over.
    let (code, body) = adapter.get(&external_path(SEGMENTS, "")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(values(&body).len(), streams);
}

#[tokio::test]
async fn escaped_labels_and_non_finite_values() {
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(adapter_binary!(), &args(&[&controller], &[])).await;
    adapter.watch(&controller, fixture("edge-cases.prom")).await;
    let (code, body) = adapter.get(&external_path(SEGMENTS, "")).await;
    assert_eq!(code, 200);
    let mut served: Vec<(String, String, String)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let l = &i["metricLabels"];
            (l["scope"].as_str().unwrap().to_owned(), l["stream"].as_str().unwrap().to_owned(), i["value"].as_str().unwrap().to_owned())
        })
        .collect();
    served.sort();
    let mut expected: Vec<(String, String, String)> = fixture("edge-cases.expected")
        .lines()
        .filter(|l| l.starts_with("pravega_controller_segments_count\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].to_owned(), f[2].replace("<LF>", "\n"), f[3].to_owned())
        })
        .collect();
    expected.sort();
    assert_eq!(served, expected);
    assert!(!body.to_string().contains("NaN") && !body.to_string().contains("Inf"));
    let (_, metrics) = adapter.get_text("/metrics").await;
    assert!(metrics.contains("pravega_adapter_scrape_malformed_lines_total"), "{metrics}");
}

#[tokio::test]
async fn bad_input_gets_a_status_never_a_500() {
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(adapter_binary!(), &args(&[&controller], &[])).await;
    adapter.watch(&controller, fixture("seed-demo.prom")).await;
    let huge = "a".repeat(10_000);
    let cases: Vec<(String, u16)> = vec![
        (external_path(SEGMENTS, "scope in x"), 400),
        (external_path(SEGMENTS, "scope=te st"), 400),
        (object_path("v1beta2", SEGMENTS, "==="), 400),
        (external_path("no_such_metric", ""), 404),
        (object_path("v1beta1", "no_such_metric", ""), 404),
        ("/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/pravega_controller_segments_count".into(), 404),
        ("/apis/custom.metrics.k8s.io/v1/namespaces/default/pods/x/m".into(), 404),
        ("/apis/custom.metrics.k8s.io/v1beta1/a/b/c/d/e/f/g".into(), 404),
        ("/apis/custom.metrics.k8s.io/v1beta1/pods/%zz/m".into(), 400),
        ("/api/v1/pods".into(), 404),
        (format!("{}&x={huge}", external_path(SEGMENTS, "")), 400),
    ];
    for (path, expected) in cases {
        let (code, body) = adapter.get(&path).await;
        assert_eq!(code, expected, "{path}: {body}");
        assert_eq!(body["kind"], "Status", "{path}: {body}");
        assert_eq!(body["code"], expected);
    }
    let response = http().post(format!("{}/apis/custom.metrics.k8s.io/v1beta1", adapter.base)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    // The adapter is still alive and well.
    assert_eq!(adapter.get_text("/livez").await.0, 200);
}

#[tokio::test]
async fn environment_overrides_flags_defaults() {
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start_with_env(
        adapter_binary!(),
        &[],
        &[("PRAVEGA_ADAPTER_CONTROLLER_URLS", &controller.url()), ("PRAVEGA_ADAPTER_SCRAPE_INTERVAL", "7s")],
    )
    .await;
    adapter.watch(&controller, fixture("seed-demo.prom")).await;
    let (_, body) = adapter.get(&external_path(SEGMENTS, "")).await;
    assert_eq!(body["items"][0]["window"], 7, "{body}");
}

#[tokio::test]
async fn namespace_scoping_serves_each_namespace_its_scopes() {
    let both = format!("{}{}", stream_exposition("flink", "s", 3, 2, 0), stream_exposition("ops", "t", 5, 4, 0).replace("# TYPE", "# X"));
    let controller = FakeController::start(QUIET).await;
    let adapter =
        Adapter::start(adapter_binary!(), &args(&[&controller], &["--namespace-scopes", "same", "--namespace-scope", "shared=flink,ops"]))
            .await;
    adapter.watch(&controller, both).await;
    let external = |namespace: &str| format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{SEGMENTS}");
    let scopes = |body: &Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|i| i["metricLabels"]["scope"].as_str().unwrap().to_owned()).collect()
    };
    let (code, body) = adapter.get(&external("flink")).await;
    assert_eq!((code, scopes(&body)), (200, vec!["flink".to_owned()]), "{body}");
    let (code, body) = adapter.get(&format!("{}?labelSelector=scope%3Dops", external("flink"))).await;
    assert_eq!((code, scopes(&body)), (200, vec![]), "another namespace's scope is left out: {body}");
    let (code, body) = adapter.get(&external("shared")).await;
    assert_eq!((code, scopes(&body)), (200, vec!["flink".to_owned(), "ops".to_owned()]), "{body}");
    let (code, body) = adapter.get(&external("default")).await;
    assert_eq!((code, scopes(&body)), (200, vec![]), "{body}");

    let object = |namespace: &str| format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/deployments.apps/tm/{SEGMENTS}");
    assert_eq!(adapter.get(&object("ops")).await.1["items"][0]["value"], "5");
    assert_eq!(adapter.get(&format!("{}?metricLabelSelector=scope%3Dflink", object("ops"))).await.0, 404);
    let (code, body) = adapter.get(&format!("/apis/custom.metrics.k8s.io/v1beta1/namespaces/flink/metrics/{SEGMENTS}")).await;
    assert_eq!((code, body["items"][0]["value"].clone()), (200, json!("3")), "a namespace's own metrics: {body}");
    assert_eq!(adapter.get(&format!("/apis/custom.metrics.k8s.io/v1beta1/nodes/n1/{SEGMENTS}")).await.0, 404, "root-scoped");
}

#[test]
fn help_documents_every_flag_and_bad_config_fails_clearly() {
    let help = std::process::Command::new(adapter_binary!()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--secure-port",
        "--controller-url",
        "--controller-namespace",
        "--controller-selector",
        "--scrape-interval",
        "--scrape-timeout",
        "--scrape-max-body-bytes",
        "--max-staleness",
        "--metrics-max-age",
        "--metrics-allow-regex",
        "--max-connections",
        "--tls-handshake-timeout",
        "--header-read-timeout",
        "--idle-timeout",
        "--http2-keepalive-interval",
        "--http2-keepalive-timeout",
        "--max-connection-age",
        "--namespace-scopes",
        "--namespace-scope",
        "--controller-api-url",
        "--controller-api-port",
        "--controller-api-timeout",
        "--inventory-calls-per-second",
        "--inventory-refresh",
        "--inventory-list-interval",
        "--inventory-max-streams",
        "--scale-settle-time",
        "--replica-label",
        "PRAVEGA_ADAPTER_SCRAPE_INTERVAL",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let bad = std::process::Command::new(adapter_binary!())
        .args(["--secure-port", "0", "--insecure-bind-address", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no controllers to scrape"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = FakeController::start(stream_exposition("test", "planted", 99, 50, 0)).await;
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(
        adapter_binary!(),
        &args(&[&controller], &["--max-staleness", "100ms", "--scrape-interval", "300ms", "--scrape-timeout", "200ms"]),
    )
    .await;
    adapter.watch(&controller, stream_exposition("test", "s", 3, 2, 0)).await;
    controller.redirect_to(Some(elsewhere.url()));
    for _ in 0..30 {
        let (_, metrics) = adapter.get_text("/metrics").await;
        if metrics.contains("result=\"status\"") {
            let (_, body) = adapter.get(&external_path(SEGMENTS, "")).await;
            assert_eq!(values(&body), vec![("s".to_owned(), "3".to_owned())], "the previous data stays");
            assert_eq!(elsewhere.hits(), 0, "the redirect was followed");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a redirect did not fail the scrape\n{}", adapter.log());
}

#[tokio::test]
async fn control_bytes_of_malformed_lines_reach_the_log_escaped() {
    let body = stream_exposition("test", "s", 3, 2, 0) + "pravega_controller_segments_count{scope=\"x\x1b[31m\r\" oops\n";
    let controller = FakeController::start(QUIET).await;
    let adapter = Adapter::start(adapter_binary!(), &args(&[&controller], &[])).await;
    adapter.watch(&controller, body).await;
    for _ in 0..30 {
        let log = adapter.log();
        if log.contains("skipped malformed lines") {
            let line = log.lines().find(|l| l.contains("skipped malformed lines")).unwrap();
            assert!(!line.contains('\r') && !line.contains("\x1b[31m"), "raw control bytes in the log: {line:?}");
            assert!(line.contains("\\r") || line.contains("\\u{"), "{line:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no malformed line logged\n{}", adapter.log());
}
