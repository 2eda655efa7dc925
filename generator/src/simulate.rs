//! A simulated Pravega controller: a model of one stream's auto-scaling
//! under an event-rate scaling policy, and the controller's `/prometheus`
//! exposition of it, in the controller's own format (Micrometer 1.3 /
//! simpleclient: trailing commas in label sets, Java doubles).
//!
//! The model is driven by the caller's clock: `observe(now, rate)`. A
//! segment load above the target rate for `hold` splits a segment into
//! `scale_factor`; below half the target for `hold` merges two segments
//! (never below `min_segments`). Pravega weighs 2- to 20-minute rates; the
//! hold time stands in for that so a demo moves within minutes.

use prom_text::escape;
use std::fmt::Write as _;
use std::time::Duration;

/// A stream's scaling policy by event rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingPolicy {
    /// Events per second per segment above which segments split.
    pub target_rate: f64,
    pub scale_factor: u32,
    pub min_segments: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleEvent {
    Split { from: u32, to: u32 },
    Merge { from: u32, to: u32 },
}

#[derive(Debug, Clone)]
pub struct StreamModel {
    policy: ScalingPolicy,
    hold: Duration,
    segments: u32,
    splits: u64,
    merges: u64,
    hot_since: Option<Duration>,
    cold_since: Option<Duration>,
    events: f64,
    last_observed: Duration,
}

impl StreamModel {
    pub fn new(policy: ScalingPolicy, hold: Duration) -> Self {
        StreamModel {
            policy,
            hold,
            segments: policy.min_segments.max(1),
            splits: 0,
            merges: 0,
            hot_since: None,
            cold_since: None,
            events: 0.0,
            last_observed: Duration::ZERO,
        }
    }

    pub fn segments(&self) -> u32 {
        self.segments
    }

    pub fn splits(&self) -> u64 {
        self.splits
    }

    pub fn merges(&self) -> u64 {
        self.merges
    }

    /// Feeds the stream's event rate at time `now`; returns the scale event
    /// it caused, if any.
    pub fn observe(&mut self, now: Duration, rate: f64) -> Option<ScaleEvent> {
        self.events += rate * now.saturating_sub(self.last_observed).as_secs_f64();
        self.last_observed = now;
        let per_segment = rate / f64::from(self.segments);
        let hot = per_segment > self.policy.target_rate;
        let cold = per_segment < self.policy.target_rate / 2.0 && self.segments > self.policy.min_segments.max(1);
        self.hot_since = if hot { Some(self.hot_since.unwrap_or(now)) } else { None };
        self.cold_since = if cold { Some(self.cold_since.unwrap_or(now)) } else { None };
        let held = |since: Option<Duration>| since.is_some_and(|s| now.saturating_sub(s) >= self.hold);
        let from = self.segments;
        if held(self.hot_since) {
            self.segments += self.policy.scale_factor.max(2) - 1;
            self.splits += 1;
            self.hot_since = Some(now);
            return Some(ScaleEvent::Split { from, to: self.segments });
        }
        if held(self.cold_since) {
            self.segments -= 1;
            self.merges += 1;
            self.cold_since = Some(now);
            return Some(ScaleEvent::Merge { from, to: self.segments });
        }
        None
    }

    /// The controller's exposition for this stream, `uptime` into the run,
    /// as a replica whose host tag is `host` writes it. As in Pravega 0.13,
    /// every series carries the `host` tag (Micrometer's common tag), and
    /// the stream's `segment_splits` and `segment_merges` appear only once
    /// it has scaled (the controller reports them when it scales a stream,
    /// `segments_count` already when it creates it). Before the stream is
    /// `created` it has no series at all.
    pub fn exposition(&self, scope: &str, stream: &str, host: &str, uptime: Duration, created: bool) -> String {
        let host = escape(host);
        let labels = format!("{{host=\"{host}\",scope=\"{}\",stream=\"{}\",}}", escape(scope), escape(stream));
        // The stream's samples of a per-stream family: none before creation.
        let of_stream = |value: f64| if created { vec![(labels.as_str(), value)] } else { Vec::new() };
        let host_only = format!("{{host=\"{host}\",}}");
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {}", java_double(*value));
            }
        };
        let t = uptime.as_secs_f64();
        let (heap, nonheap) = (
            format!("{{area=\"heap\",host=\"{host}\",id=\"G1 Eden Space\",}}"),
            format!("{{area=\"nonheap\",host=\"{host}\",id=\"Metaspace\",}}"),
        );
        family("jvm_memory_used_bytes", "gauge", "The amount of used memory", &[(&heap, 5.24288e7), (&nonheap, 7.1234568e7)]);
        family("process_cpu_usage", "gauge", "The \"recent cpu usage\" for the Java Virtual Machine process", &[(&host_only, 0.05)]);
        family(
            "jvm_threads_live_threads",
            "gauge",
            "The current number of live threads including both daemon and non-daemon threads",
            &[(&host_only, 87.0)],
        );
        family("pravega_controller_hosts_count", "gauge", " ", &[(&host_only, 1.0)]);
        family("pravega_controller_container_failovers_total", "counter", " ", &[(&host_only, 0.0)]);
        family("pravega_controller_stream_created_total", "counter", " ", &[(&host_only, 1.0)]);
        family("pravega_controller_segments_count", "gauge", " ", &of_stream(f64::from(self.segments)));
        if self.splits + self.merges > 0 {
            family("pravega_controller_segment_splits", "gauge", " ", &of_stream(self.splits as f64));
            family("pravega_controller_segment_merges", "gauge", " ", &of_stream(self.merges as f64));
        }
        family("pravega_controller_segment_splits_global", "gauge", " ", &[(&host_only, self.splits as f64)]);
        family("pravega_controller_segment_merges_global", "gauge", " ", &[(&host_only, self.merges as f64)]);
        family("pravega_controller_transactions_opened", "gauge", " ", &of_stream(0.0));
        family("pravega_controller_retention_frequency_total", "counter", " ", &of_stream((t / 60.0).floor()));
        family("pravega_controller_retention_truncated_size", "gauge", " ", &of_stream((self.events * 100.0).floor()));
        family("pravega_controller_stream_updated_total", "counter", " ", &of_stream((self.splits + self.merges) as f64));
        out
    }
}

/// The host tag a Pravega controller would put on its series here: the
/// `HOSTNAME` variable (a Kubernetes pod's name), else the machine's name.
pub fn host_tag() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A double as Java's `Double.toString` writes it: `3.0`, `0.05`, `1.0E7`.
pub fn java_double(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-3..1e7).contains(&magnitude) {
        let formatted = format!("{value:E}");
        let (mantissa, exponent) = formatted.split_once('E').unwrap_or((&formatted, "0"));
        let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
        return format!("{mantissa}E{exponent}");
    }
    let plain = format!("{value}");
    if plain.contains('.') {
        plain
    } else {
        format!("{plain}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> StreamModel {
        StreamModel::new(ScalingPolicy { target_rate: 100.0, scale_factor: 2, min_segments: 1 }, Duration::from_secs(10))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn splits_only_after_the_load_held_for_the_hold_time() {
        let mut m = model();
        assert_eq!(m.observe(secs(0), 250.0), None);
        assert_eq!(m.observe(secs(9), 250.0), None);
        assert_eq!(m.observe(secs(10), 250.0), Some(ScaleEvent::Split { from: 1, to: 2 }));
        // 125/segment: still hot, another hold later.
        assert_eq!(m.observe(secs(15), 250.0), None);
        assert_eq!(m.observe(secs(20), 250.0), Some(ScaleEvent::Split { from: 2, to: 3 }));
        // 83/segment: neither hot nor cold.
        assert_eq!(m.observe(secs(60), 250.0), None);
        assert_eq!((m.segments(), m.splits(), m.merges()), (3, 2, 0));
    }

    #[test]
    fn a_brief_spike_does_not_split() {
        let mut m = model();
        m.observe(secs(0), 500.0);
        m.observe(secs(5), 50.0);
        assert_eq!(m.observe(secs(12), 500.0), None, "the hold restarts when the load drops");
    }

    #[test]
    fn merges_when_well_below_target_but_never_below_min_segments() {
        let mut m = StreamModel::new(ScalingPolicy { target_rate: 100.0, scale_factor: 3, min_segments: 2 }, secs(1));
        assert_eq!(m.segments(), 2);
        m.observe(secs(0), 1000.0);
        assert_eq!(m.observe(secs(1), 1000.0), Some(ScaleEvent::Split { from: 2, to: 4 }));
        m.observe(secs(2), 10.0);
        assert_eq!(m.observe(secs(3), 10.0), Some(ScaleEvent::Merge { from: 4, to: 3 }));
        assert_eq!(m.observe(secs(4), 10.0), Some(ScaleEvent::Merge { from: 3, to: 2 }));
        assert_eq!(m.observe(secs(100), 10.0), None);
        assert_eq!((m.segments(), m.splits(), m.merges()), (2, 1, 2));
    }

    #[test]
    fn follows_a_sinusoid_and_counters_only_grow() {
        let shape = crate::rate::Sinusoid { min: 50.0, max: 1000.0, period: secs(600) };
        let mut m = model();
        let (mut splits, mut merges, mut peak) = (0, 0, 0);
        for t in 0..1200 {
            m.observe(secs(t), shape.rate_at(secs(t)));
            assert!(m.splits() >= splits && m.merges() >= merges);
            (splits, merges, peak) = (m.splits(), m.merges(), peak.max(m.segments()));
            assert!(m.segments() >= 1);
        }
        assert!(peak >= 8, "the peak rate needs about 10 segments, got {peak}");
        assert!(m.merges() > 0 && m.segments() <= 2, "back down at the trough: {}", m.segments());
    }

    #[test]
    fn java_doubles() {
        for (value, text) in [
            (3.0, "3.0"),
            (0.05, "0.05"),
            (1e7, "1.0E7"),
            (3.294916953e9, "3.294916953E9"),
            (0.0, "0.0"),
            (1234.5, "1234.5"),
            (-2.0, "-2.0"),
        ] {
            assert_eq!(java_double(value), text);
        }
    }

    #[test]
    fn splits_and_merges_appear_with_the_first_scale() {
        let mut m = model();
        m.observe(secs(0), 10.0);
        let text = m.exposition("test", "stream", "controller-0", secs(0), true);
        assert!(
            text.contains("pravega_controller_segments_count{host=\"controller-0\",scope=\"test\",stream=\"stream\",} 1.0\n"),
            "{text}"
        );
        assert!(!text.contains("pravega_controller_segment_splits{"), "{text}");
        assert!(!text.contains("pravega_controller_segment_merges{"), "{text}");
    }

    #[test]
    fn exposition_has_the_controller_shape() {
        let mut m = model();
        m.observe(secs(0), 500.0);
        m.observe(secs(10), 500.0);
        let text = m.exposition("test", "stream", "controller-0", secs(10), true);
        assert!(
            text.contains("pravega_controller_segments_count{host=\"controller-0\",scope=\"test\",stream=\"stream\",} 2.0\n"),
            "{text}"
        );
        assert!(text.contains("pravega_controller_segment_splits{host=\"controller-0\",scope=\"test\",stream=\"stream\",} 1.0\n"));
        assert!(text.contains("process_cpu_usage{host=\"controller-0\",} "), "every series has the host tag");
        assert!(text.contains("# TYPE pravega_controller_retention_frequency_total counter\n"));
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        assert!(parsed.samples.iter().any(|s| s.metric == "pravega_controller_segment_merges"));
    }
}
