//! The adapter's own metrics, served at `/metrics` in the Prometheus text
//! format: scrape outcomes and durations, malformed lines, series counts,
//! request counts and latencies, and the age of served values.

use crate::store::Store;
use prom_text::{Counter, Exposition, Family, Histogram, Kind};
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const AGE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 5.0, 10.0, 30.0];

pub struct Telemetry {
    scrapes: Family<Counter>,
    scrape_duration: Family<Histogram>,
    malformed_lines: Family<Counter>,
    requests: Family<Counter>,
    request_duration: Family<Histogram>,
    served_value_age: Family<Histogram>,
    controller_api_calls: Family<Counter>,
    stale_gauges: Family<Counter>,
    disputed_streams: Family<Counter>,
    withheld_answers: Family<Counter>,
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
                "Calls of the controllers' gRPC API by method and result: success, timeout, not_found, refused, implausible or error.",
                &["method", "result"],
                Counter::default,
            ),
            stale_gauges: Family::new(
                "pravega_adapter_stale_gauges_detected_total",
                "Stale segments_count gauges found (each stream and mark once): the controller API's count was served instead.",
                &[],
                Counter::default,
            ),
            disputed_streams: Family::new(
                "pravega_adapter_disputed_streams_total",
                "Scales the metrics watched that the controller API contradicted after settling: the stream was withheld.",
                &[],
                Counter::default,
            ),
            withheld_answers: Family::new(
                "pravega_adapter_withheld_answers_total",
                "Metrics queries answered with nothing because a stream they select has no value that can be vouched for, by route.",
                &["route"],
                Counter::default,
            ),
        }
    }
}

impl Telemetry {
    /// Counts a scrape: `failure` is None for success, else the reason.
    pub fn scrape(&self, target: &str, failure: Option<&str>, duration: Duration, malformed: u64) {
        let result = failure.unwrap_or("success");
        self.scrapes.with(&[target, result]).add(1);
        self.scrape_duration.with(&[target]).observe(duration.as_secs_f64());
        if malformed > 0 {
            self.malformed_lines.with(&[target]).add(malformed);
        }
    }

    /// Drops a removed target's series so pod churn does not grow memory.
    pub fn forget_target(&self, target: &str) {
        self.scrapes.forget(0, target);
        self.scrape_duration.forget(0, target);
        self.malformed_lines.forget(0, target);
    }

    pub fn request(&self, route: &str, code: u16, duration: Duration) {
        self.requests.with(&[route, &code.to_string()]).add(1);
        self.request_duration.with(&[route]).observe(duration.as_secs_f64());
    }

    pub fn served_age(&self, age: Duration) {
        self.served_value_age.with(&[]).observe(age.as_secs_f64());
    }

    pub fn controller_api_call(&self, method: &str, failure: Option<&crate::controller_api::ControllerApiError>) {
        let result = failure.map_or("success", |error| error.reason());
        self.controller_api_calls.with(&[method, result]).add(1);
    }

    pub fn stale_gauge(&self) {
        self.stale_gauges.with(&[]).add(1);
    }

    pub fn disputed_stream(&self) {
        self.disputed_streams.with(&[]).add(1);
    }

    pub fn withheld(&self, route: &str) {
        self.withheld_answers.with(&[route]).add(1);
    }

    /// `inventory_streams`: the streams the controller API's inventory
    /// holds (0 without a controller API).
    pub fn render(&self, store: &Store, inventory_streams: usize) -> String {
        let mut out = Exposition::default();
        out.counters(&self.scrapes).histograms(&self.scrape_duration).counters(&self.malformed_lines);
        out.header("pravega_adapter_series", "Series (stream x family) held per target.", Kind::Gauge);
        for (target, count) in store.series_counts() {
            out.sample("pravega_adapter_series", &[("target", &target)], count);
        }
        let (family_names, label_sets) = store.names_held();
        out.gauge("pravega_adapter_family_names", "Family names held by snapshots and served views.", family_names as f64)
            .gauge("pravega_adapter_label_sets", "Label sets (streams) held by snapshots and served views.", label_sets as f64)
            .counters(&self.requests)
            .histograms(&self.request_duration)
            .histograms(&self.served_value_age)
            .gauge(
                "pravega_adapter_implausible_scale_totals",
                "Replicas' segment_splits or segment_merges values not believed in the served view: not whole numbers from 0 to 2^53.",
                store.view().implausible_totals() as f64,
            )
            .header(
                "pravega_adapter_unlisted_marks_dropped_total",
                "Marks of streams no replica lists any more, dropped (oldest first) to keep them within their bound.",
                Kind::Counter,
            )
            .sample("pravega_adapter_unlisted_marks_dropped_total", &[], store.dropped_marks())
            .gauge(
                "pravega_adapter_inventory_streams",
                "Streams in the controller API's inventory (0 without one).",
                inventory_streams as f64,
            )
            .counters(&self.controller_api_calls)
            .counters(&self.stale_gauges)
            .counters(&self.disputed_streams)
            .counters(&self.withheld_answers)
            .finish()
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
        let text = t.render(&Store::new(Duration::from_secs(30)), 0);
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
        assert!(!t.render(&Store::new(Duration::from_secs(30)), 0).contains("a:10080"));
    }
}
