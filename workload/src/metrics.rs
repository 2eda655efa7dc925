//! Small Prometheus-text metrics for the workload binaries: counters,
//! gauges and a latency sum/count, rendered on demand.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A float gauge stored as bits.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Count and sum of observed durations (a summary without quantiles).
#[derive(Debug, Default)]
pub struct Timer {
    count: Counter,
    micros: Counter,
}

impl Timer {
    pub fn observe(&self, duration: std::time::Duration) {
        self.count.add(1);
        self.micros.add(duration.as_micros() as u64);
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// Writes metrics in the text exposition format.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        self
    }

    pub fn counter(&mut self, name: &str, help: &str, value: &Counter) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.get());
        self
    }

    pub fn timer(&mut self, name: &str, help: &str, timer: &Timer) -> &mut Self {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}",
            timer.micros.get() as f64 / 1e6,
            timer.count.get()
        );
        self
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

/// Events per second over the last measurement window, from a counter.
#[derive(Debug)]
pub struct RateMeter {
    last_count: u64,
    last_time: std::time::Instant,
}

impl RateMeter {
    pub fn new(count: u64) -> Self {
        RateMeter { last_count: count, last_time: std::time::Instant::now() }
    }

    /// The rate since the previous call.
    pub fn tick(&mut self, count: u64) -> f64 {
        let elapsed = self.last_time.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 { count.saturating_sub(self.last_count) as f64 / elapsed } else { 0.0 };
        (self.last_count, self.last_time) = (count, std::time::Instant::now());
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let value = |name: &str| parsed.samples.iter().find(|s| s.metric == name).map(|s| format!("{:?}", s.value));
        assert_eq!(value("x_rate").as_deref(), Some("Gauge(12.5)"));
        assert_eq!(value("x_events_total").as_deref(), Some("Counter(5.0)"));
        assert!(text.contains("x_latency_seconds_sum 0.25\nx_latency_seconds_count 1\n"), "{text}");
    }
}
