//! Synthetic controller expositions for the benchmarks, shaped like
//! many-streams.prom: the seven per-stream families in the controller's
//! format, `streams` streams spread over 20 scopes.

use std::fmt::Write as _;

const FAMILIES: [&str; 7] = [
    "pravega_controller_segments_count",
    "pravega_controller_segment_splits",
    "pravega_controller_segment_merges",
    "pravega_controller_transactions_opened",
    "pravega_controller_retention_frequency_total",
    "pravega_controller_retention_truncated_size",
    "pravega_controller_stream_updated_total",
];

/// One replica's exposition; `replica` shifts the values so replicas disagree.
pub fn exposition(streams: usize, replica: usize) -> String {
    let mut out = String::with_capacity(streams * FAMILIES.len() * 90);
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {family}  \n# TYPE {family} gauge");
        for i in 0..streams {
            let _ = writeln!(out, "{family}{{scope=\"scope-{}\",stream=\"stream-{i}\",}} {}.0", i % 20, (i * 7 + replica) % 50 + 1);
        }
    }
    out
}
