//! Metrics a process keeps about itself and serves at `/metrics` in the
//! Prometheus text exposition format (0.0.4): counters, gauges, summaries
//! of durations (sum and count, no quantiles), histograms, families of one
//! of these keyed by label values, and [`Exposition`], which writes them.
//! Label values are escaped as the format requires.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A float gauge stored as bits.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Count and sum of observed durations, in whole microseconds (a summary
/// without quantiles).
#[derive(Debug, Default)]
pub struct Timer {
    count: Counter,
    micros: Counter,
}

impl Timer {
    pub fn observe(&self, duration: Duration) {
        self.count.add(1);
        self.micros.add(duration.as_micros() as u64);
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// Observations counted in buckets by upper bound, with their count and
/// sum (in whole microseconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative: [`Exposition::histograms`]
    /// adds them up.
    buckets: Vec<Counter>,
    count: Counter,
    sum_micros: Counter,
}

impl Histogram {
    /// A histogram with one bucket per upper bound in `bounds` (ascending,
    /// in seconds) and the implicit `+Inf` one.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| Counter::default()).collect(),
            count: Counter::default(),
            sum_micros: Counter::default(),
        }
    }

    pub fn observe(&self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].add(1);
        }
        self.count.add(1);
        self.sum_micros.add((seconds * 1e6) as u64);
    }
}

/// Metrics of one name, one instance per label-value tuple.
pub struct Family<M> {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    members: RwLock<BTreeMap<Vec<String>, Arc<M>>>,
    make: fn() -> M,
}

impl<M> Family<M> {
    /// A family with no members yet; `make` creates each one the first time
    /// its label values are asked for.
    pub fn new(name: &'static str, help: &'static str, label_names: &'static [&'static str], make: fn() -> M) -> Self {
        Family { name, help, label_names, members: RwLock::default(), make }
    }

    /// The member with these label `values`, in the order of the family's
    /// label names; created on first use.
    pub fn with(&self, values: &[&str]) -> Arc<M> {
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

    /// Drops the members whose `label`-th value is `value`, so series of
    /// things that are gone do not grow memory.
    pub fn forget(&self, label: usize, value: &str) {
        self.members.write().unwrap_or_else(PoisonError::into_inner).retain(|k, _| k[label] != value);
    }

    /// The label pairs of the member with label `values`.
    fn labels<'a>(&'a self, values: &'a [String]) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.label_names.iter().copied().zip(values.iter().map(String::as_str))
    }
}

/// What a family is declared as on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
            Kind::Histogram => "histogram",
        }
    }
}

/// No labels, for a family's sample lines.
const NO_LABELS: [(&str, &str); 0] = [];

/// Writes metrics in the text exposition format, one family after another.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// A family's `# HELP` and `# TYPE` lines; its [`sample`](Self::sample)s
    /// follow.
    pub fn header(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample line, `name{label="value",...} value`, label values
    /// escaped; no braces without labels.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) -> &mut Self {
        self.line(name, "", labels.iter().copied(), value)
    }

    /// A gauge family of one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.header(name, help, Kind::Gauge).sample(name, &[], value)
    }

    /// A counter family of one unlabelled sample.
    pub fn counter(&mut self, name: &str, help: &str, counter: &Counter) -> &mut Self {
        self.header(name, help, Kind::Counter).sample(name, &[], counter.get())
    }

    /// A summary family of `timer`'s sum (in seconds) and count.
    pub fn timer(&mut self, name: &str, help: &str, timer: &Timer) -> &mut Self {
        self.header(name, help, Kind::Summary);
        self.line(name, "_sum", NO_LABELS, timer.micros.get() as f64 / 1e6);
        self.line(name, "_count", NO_LABELS, timer.count.get())
    }

    /// A counter family, one sample per member; the header even when there
    /// are none.
    pub fn counters(&mut self, family: &Family<Counter>) -> &mut Self {
        self.header(family.name, family.help, Kind::Counter);
        for (values, counter) in family.members.read().unwrap_or_else(PoisonError::into_inner).iter() {
            self.line(family.name, "", family.labels(values), counter.get());
        }
        self
    }

    /// A histogram family: per member, the cumulative buckets with their
    /// `le` label, then the sum (in seconds) and count; the header even when
    /// there are none.
    pub fn histograms(&mut self, family: &Family<Histogram>) -> &mut Self {
        let name = family.name;
        self.header(name, family.help, Kind::Histogram);
        for (values, histogram) in family.members.read().unwrap_or_else(PoisonError::into_inner).iter() {
            let mut cumulative = 0;
            for (bound, bucket) in histogram.bounds.iter().zip(&histogram.buckets) {
                cumulative += bucket.get();
                let le = bound.to_string();
                self.line(name, "_bucket", family.labels(values).chain([("le", le.as_str())]), cumulative);
            }
            let count = histogram.count.get();
            self.line(name, "_bucket", family.labels(values).chain([("le", "+Inf")]), count)
                .line(name, "_sum", family.labels(values), histogram.sum_micros.get() as f64 / 1e6)
                .line(name, "_count", family.labels(values), count);
        }
        self
    }

    /// The text written so far; the writer is left empty.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }

    fn line<'a>(
        &mut self,
        name: &str,
        suffix: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        value: impl fmt::Display,
    ) -> &mut Self {
        self.0.push_str(name);
        self.0.push_str(suffix);
        let mut open = false;
        for (label, label_value) in labels {
            self.0.push(if open { ',' } else { '{' });
            open = true;
            let _ = write!(self.0, "{label}=\"{}\"", escape(label_value));
        }
        if open {
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
        self
    }
}

/// `value` as it stands between a label's double quotes: backslash, double
/// quote and line feed escaped as `\\`, `\"` and `\n`. Escapes as it is
/// formatted, without allocating.
pub fn escape(value: &str) -> Escaped<'_> {
    Escaped(value)
}

/// See [`escape`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    #[test]
    fn renders_parseable_text() {
        let (events, timer, gauge) = (Counter::default(), Timer::default(), Gauge::default());
        events.add(5);
        timer.observe(std::time::Duration::from_millis(250));
        gauge.set(12.5);
        let text = Exposition::default()
            .gauge("x_rate", "rate", gauge.get())
            .counter("x_events_total", "events", &events)
            .timer("x_latency_seconds", "latency", &timer)
            .finish();
        let parsed = parse(&text);
        let value = |name: &str| parsed.samples.iter().find(|s| s.metric == name).map(|s| format!("{:?}", s.value));
        assert_eq!(value("x_rate").as_deref(), Some("Gauge(12.5)"));
        assert_eq!(value("x_events_total").as_deref(), Some("Counter(5.0)"));
        assert!(text.contains("x_latency_seconds_sum 0.25\nx_latency_seconds_count 1\n"), "{text}");
    }

    #[test]
    fn renders_families_with_escaped_labels() {
        let requests = Family::new("x_requests_total", "requests", &["route", "code"], Counter::default);
        let durations = Family::new("x_seconds", "durations", &["route"], || Histogram::new(&[0.1, 1.0]));
        let quiet = Family::new("x_quiet_total", "never counted", &["route"], Counter::default);
        let odd = "a\"b\\c\nd";
        requests.with(&[odd, "200"]).add(2);
        requests.with(&["plain", "404"]).add(1);
        durations.with(&["plain"]).observe(0.05);
        durations.with(&["plain"]).observe(0.5);
        durations.with(&["plain"]).observe(5.0);
        let text = Exposition::default().counters(&requests).histograms(&durations).counters(&quiet).finish();
        assert!(text.contains("x_requests_total{route=\"a\\\"b\\\\c\\nd\",code=\"200\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{route=\"plain\",le=\"0.1\"} 1\nx_seconds_bucket{route=\"plain\",le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{route=\"plain\",le=\"+Inf\"} 3\nx_seconds_sum{route=\"plain\"} 5.55\n"), "{text}");
        assert!(text.ends_with("# HELP x_quiet_total never counted\n# TYPE x_quiet_total counter\n"), "{text}");
        // The escaped quote does not end the label value early.
        let parsed = parse(&text);
        let labelled = parsed.samples.iter().find(|s| s.metric == "x_requests_total" && s.labels.get("code") == Some("200"));
        assert!(labelled.is_some_and(|s| matches!(s.value, prometheus_parse::Value::Counter(v) if v == 2.0)), "{text}");
        requests.forget(0, odd);
        assert!(!Exposition::default().counters(&requests).finish().contains("code=\"200\""));
    }
}
