//! The Grafana dashboard (manifests/grafana/pravega-autoscaling.json) only
//! queries metric families that exist: the adapter's (the families its
//! telemetry module defines, checked against the running binary's /metrics),
//! the generator's and flink-reader's (the names
//! their /metrics renderers write), and kube-state-metrics' documented
//! HorizontalPodAutoscaler families.

use std::collections::BTreeSet;
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::repo::repo;

const DASHBOARD: &str = "manifests/grafana/pravega-autoscaling.json";

/// kube-state-metrics' HPA families, as its
/// docs/horizontalpodautoscaler-metrics.md lists them (the STABLE ones and
/// spec_target_metric).
const KUBE_STATE_METRICS_HPA: &[&str] = &[
    "kube_horizontalpodautoscaler_labels",
    "kube_horizontalpodautoscaler_metadata_generation",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_spec_target_metric",
    "kube_horizontalpodautoscaler_status_condition",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The string literal that follows each occurrence of `marker` in `source`.
fn literals_after(source: &str, marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let open = rest.find('"').expect("a string literal after the marker");
        let close = rest[open + 1..].find('"').expect("a closed string literal");
        out.push(rest[open + 1..open + 1 + close].to_owned());
    }
    out
}

/// The families the project's binaries export.
fn exported_families() -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    // Families with labels and histograms are declared with Family::new,
    // those of one unlabelled sample written with prom-text's .gauge(),
    // .counter() and .timer(), and others headed with .header().
    for path in ["src/telemetry.rs", "generator/src/main.rs", "flink-reader/src/read_loop.rs"] {
        let source = read(path);
        for marker in ["Family::new(", ".header(", ".gauge(", ".counter(", ".timer("] {
            families.extend(literals_after(&source, marker));
        }
    }
    families
}

/// Metric names a PromQL expression selects: identifiers outside label
/// matchers, ranges and strings that are not functions, aggregation
/// operators and modifiers (with their label lists) or keywords.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    // Aggregation operators may be followed by `by (...)` rather than `(`.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next] == ' ' {
                next += 1;
            }
            let call = next < chars.len() && chars[next] == '(';
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = next + chars[next..].iter().position(|&c| c == ')').expect("a closed label list") + 1;
                }
            } else if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) && !AGGREGATIONS.contains(&word.as_str()) {
                names.push(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers, including exponents such as 1e3.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Whether `name` is a series of `family`: itself, or a histogram's or
/// summary's _bucket / _sum / _count.
fn belongs(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| name.strip_suffix(suffix).is_some_and(|f| families.contains(f)))
        || KUBE_STATE_METRICS_HPA.contains(&name)
}

fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("a panels array");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("every target has an expr").to_owned())
        .collect()
}

#[test]
fn every_query_names_exported_families() {
    let families = exported_families();
    // The sources are where they were: the scan found each binary's families.
    for expected in ["pravega_adapter_scrapes_total", "pravega_adapter_series", "generator_target_rate", "flink_reader_events_total"] {
        assert!(families.contains(expected), "{expected} not found in the sources: {families:?}");
    }
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let queries = queries(&dashboard);
    assert!(queries.len() >= 10, "only {} queries", queries.len());
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "no metric name found in {query}");
        for name in names {
            if !belongs(&name, &families) {
                unknown.push(format!("{name} (in {query})"));
            }
            used.insert(name);
        }
    }
    assert!(unknown.is_empty(), "queries name families nothing exports:\n{}", unknown.join("\n"));
    // Each source of metrics has a panel.
    for prefix in ["pravega_adapter_", "generator_", "flink_reader_", "kube_horizontalpodautoscaler_status_desired_replicas"] {
        assert!(used.iter().any(|n| n.starts_with(prefix)), "no query over {prefix}*");
    }
}

#[test]
fn the_provisioning_configmap_carries_the_dashboard() {
    let kustomization = read("manifests/grafana/kustomization.yaml");
    assert!(kustomization.contains("- pravega-autoscaling.json"), "{kustomization}");
    assert!(kustomization.contains("grafana_dashboard"), "the sidecar's label is missing");
    // Not applied by default with the project's own resources.
    let top = read("manifests/kustomization.yaml");
    assert!(!top.contains("grafana"), "manifests/kustomization.yaml includes grafana/");
}

#[test]
fn the_name_scan_finds_metrics_and_skips_the_rest() {
    assert_eq!(
        metric_names(r#"histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{route="x",code=~"5.."}[$__rate_interval])))"#),
        ["a_seconds_bucket"]
    );
    assert_eq!(metric_names("sum(rate(x_sum[1m])) / sum(rate(x_count[1m])) > 1e3 and on (pod) y"), ["x_sum", "x_count", "y"]);
    let families: BTreeSet<String> = ["flink_reader_events_total".to_owned()].into();
    assert!(belongs("flink_reader_events_total", &families));
    assert!(!belongs("flink_reader_events", &families), "a prefix of a family is not the family");
    assert!(!belongs("flink_reader_event_total", &families));
}

#[tokio::test]
async fn the_running_adapter_exports_every_adapter_family_the_dashboard_queries() {
    // Nothing listens there: the adapter still serves its own /metrics.
    let args = ["--controller-url".to_owned(), "http://127.0.0.1:9/prometheus".to_owned()];
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    let (status, text) = adapter.get_text("/metrics").await;
    assert_eq!(status, 200, "{text}");
    // Every family is announced with its # TYPE line, samples or not.
    let live: BTreeSet<String> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    let from_source: BTreeSet<String> = exported_families().into_iter().filter(|f| f.starts_with("pravega_adapter_")).collect();
    assert_eq!(live, from_source, "the source scan and the running adapter disagree");
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    for query in queries(&dashboard) {
        for name in metric_names(&query).into_iter().filter(|n| n.starts_with("pravega_adapter_")) {
            assert!(belongs(&name, &live), "{name} (in {query}) is not in the running adapter's /metrics:\n{text}");
        }
    }
}
