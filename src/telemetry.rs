//! The adapter's own metrics, served at `/metrics` in the Prometheus text
//! format: scrape outcomes and durations, malformed lines, series counts,
//! request counts and latencies, and the age of served values.

use crate::store::Store;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const AGE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Counter(AtomicU64);

struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Metrics of one name, one instance per label-value tuple.
struct Family<M> {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    members: RwLock<BTreeMap<Vec<String>, Arc<M>>>,
    make: fn() -> M,
}

impl<M> Family<M> {
    fn new(name: &'static str, help: &'static str, label_names: &'static [&'static str], make: fn() -> M) -> Self {
        Family { name, help, label_names, members: RwLock::default(), make }
    }

    fn with(&self, values: &[&str]) -> Arc<M> {
        let found = self
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find_map(|(k, m)| (k.len() == values.len() && k.iter().zip(values).all(|(a, b)| a == b)).then(|| m.clone()));
        found.unwrap_or_else(|| {
            let key = values.iter().map(|v| (*v).to_owned()).collect();
            let mut members = self.members.write().unwrap_or_else(PoisonError::into_inner);
            members.entry(key).or_insert_with(|| Arc::new((self.make)())).clone()
        })
    }

    fn forget(&self, label: usize, value: &str) {
        self.members.write().unwrap_or_else(PoisonError::into_inner).retain(|k, _| k[label] != value);
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", self.name, self.help, self.name);
    }

    fn labels(&self, values: &[String], extra: Option<(&str, &str)>) -> String {
        let mut pairs: Vec<String> = self.label_names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect();
        pairs.extend(extra.map(|(n, v)| format!("{n}=\"{v}\"")));
        if pairs.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", pairs.join(","))
        }
    }
}

impl Family<Counter> {
    fn render(&self, out: &mut String) {
        self.header(out, "counter");
        for (values, counter) in self.members.read().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = writeln!(out, "{}{} {}", self.name, self.labels(values, None), counter.0.load(Ordering::Relaxed));
        }
    }
}

impl Family<Histogram> {
    fn render(&self, out: &mut String) {
        self.header(out, "histogram");
        for (values, h) in self.members.read().unwrap_or_else(PoisonError::into_inner).iter() {
            let mut cumulative = 0;
            for (bound, bucket) in h.bounds.iter().zip(&h.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = bound.to_string();
                let _ = writeln!(out, "{}_bucket{} {cumulative}", self.name, self.labels(values, Some(("le", &le))));
            }
            let count = h.count.load(Ordering::Relaxed);
            let plain = self.labels(values, None);
            let _ = writeln!(out, "{}_bucket{} {count}", self.name, self.labels(values, Some(("le", "+Inf"))));
            let _ = writeln!(out, "{}_sum{plain} {}", self.name, h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
            let _ = writeln!(out, "{}_count{plain} {count}", self.name);
        }
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub struct Telemetry {
    scrapes: Family<Counter>,
    scrape_duration: Family<Histogram>,
    malformed_lines: Family<Counter>,
    requests: Family<Counter>,
    request_duration: Family<Histogram>,
    served_value_age: Family<Histogram>,
    controller_api_calls: Family<Counter>,
    stale_gauges: Family<Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            scrapes: Family::new(
                "pravega_adapter_scrapes_total",
                "Scrapes of Pravega controllers by target and result: success, or why the scrape failed.",
                &["target", "result"],
                Counter::default,
            ),
            scrape_duration: Family::new(
                "pravega_adapter_scrape_duration_seconds",
                "Duration of scrapes, including reading and parsing the body.",
                &["target"],
                || Histogram::new(LATENCY_BUCKETS),
            ),
            malformed_lines: Family::new(
                "pravega_adapter_scrape_malformed_lines_total",
                "Lines of wanted families that could not be parsed and were skipped.",
                &["target"],
                Counter::default,
            ),
            requests: Family::new(
                "pravega_adapter_requests_total",
                "API requests by route and HTTP status code.",
                &["route", "code"],
                Counter::default,
            ),
            request_duration: Family::new(
                "pravega_adapter_request_duration_seconds",
                "Time to answer API requests, including any refresh scrape.",
                &["route"],
                || Histogram::new(LATENCY_BUCKETS),
            ),
            served_value_age: Family::new(
                "pravega_adapter_served_value_age_seconds",
                "Age of the scraped data behind each answered metrics query.",
                &[],
                || Histogram::new(AGE_BUCKETS),
            ),
            controller_api_calls: Family::new(
                "pravega_adapter_controller_api_calls_total",
                "Calls of the controllers' getCurrentSegments by result: success, timeout or error.",
                &["result"],
                Counter::default,
            ),
            stale_gauges: Family::new(
                "pravega_adapter_stale_gauges_detected_total",
                "Times the controller API disagreed with the segments_count the metrics would have served, by stream.",
                &["scope", "stream"],
                Counter::default,
            ),
        }
    }
}

impl Telemetry {
    /// Counts a scrape: `failure` is None for success, else the reason.
    pub fn scrape(&self, target: &str, failure: Option<&str>, duration: Duration, malformed: u64) {
        let result = failure.unwrap_or("success");
        self.scrapes.with(&[target, result]).0.fetch_add(1, Ordering::Relaxed);
        self.scrape_duration.with(&[target]).observe(duration.as_secs_f64());
        if malformed > 0 {
            self.malformed_lines.with(&[target]).0.fetch_add(malformed, Ordering::Relaxed);
        }
    }

    /// Drops a removed target's series so pod churn does not grow memory.
    pub fn forget_target(&self, target: &str) {
        self.scrapes.forget(0, target);
        self.scrape_duration.forget(0, target);
        self.malformed_lines.forget(0, target);
    }

    pub fn request(&self, route: &str, code: u16, duration: Duration) {
        self.requests.with(&[route, &code.to_string()]).0.fetch_add(1, Ordering::Relaxed);
        self.request_duration.with(&[route]).observe(duration.as_secs_f64());
    }

    pub fn served_age(&self, age: Duration) {
        self.served_value_age.with(&[]).observe(age.as_secs_f64());
    }

    pub fn controller_api_call(&self, failure: Option<&crate::controller_api::ControllerApiError>) {
        let result = match failure {
            None => "success",
            Some(crate::controller_api::ControllerApiError::Timeout { .. }) => "timeout",
            Some(_) => "error",
        };
        self.controller_api_calls.with(&[result]).0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stale_gauge(&self, scope: &str, stream: &str) {
        self.stale_gauges.with(&[scope, stream]).0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        self.scrapes.render(&mut out);
        self.scrape_duration.render(&mut out);
        self.malformed_lines.render(&mut out);
        out.push_str("# HELP pravega_adapter_series Series (stream x family) held per target.\n");
        out.push_str("# TYPE pravega_adapter_series gauge\n");
        for (target, count) in store.series_counts() {
            let _ = writeln!(out, "pravega_adapter_series{{target=\"{}\"}} {count}", escape(&target));
        }
        self.requests.render(&mut out);
        self.request_duration.render(&mut out);
        self.served_value_age.render(&mut out);
        self.controller_api_calls.render(&mut out);
        self.stale_gauges.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_exposition() {
        let t = Telemetry::default();
        t.scrape("http://a:10080/prometheus", None, Duration::from_millis(3), 0);
        t.scrape("http://a:10080/prometheus", Some("timeout"), Duration::from_millis(2000), 2);
        t.request("external", 200, Duration::from_micros(300));
        t.request("external", 200, Duration::from_micros(300));
        t.served_age(Duration::from_millis(400));
        let text = t.render(&Store::new(Duration::from_secs(30)));
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let value = |name: &str, label: (&str, &str)| {
            scrape.samples.iter().find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1)).map(|s| match &s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(value("pravega_adapter_scrapes_total", ("result", "timeout")), Some(1.0));
        assert_eq!(value("pravega_adapter_scrape_malformed_lines_total", ("target", "http://a:10080/prometheus")), Some(2.0));
        assert_eq!(value("pravega_adapter_requests_total", ("code", "200")), Some(2.0));
        assert!(text.contains("pravega_adapter_served_value_age_seconds_bucket{le=\"0.5\"} 1"), "{text}");
        t.forget_target("http://a:10080/prometheus");
        assert!(!t.render(&Store::new(Duration::from_secs(30))).contains("a:10080"));
    }
}
