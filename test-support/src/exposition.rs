//! Controller expositions as tests and benchmarks need them, in the
//! controller's format (Micrometer style: trailing commas in label sets,
//! Java doubles): one stream, many synthetic streams, and hostile shapes.

pub use pravega_metrics_adapter::controller_api::SEGMENTS_FAMILY as SEGMENTS;
pub use pravega_metrics_adapter::store::{MERGES_FAMILY as MERGES, SPLITS_FAMILY as SPLITS};
use std::fmt::Write as _;

/// An exposition with no per-stream series, as a controller writes it once
/// every stream has been quiet past the metrics cache's eviction.
pub const QUIET: &str = "pravega_controller_hosts_count 1.0\n";

/// Exposition of one stream as a controller replica writes it.
pub fn stream_exposition(scope: &str, stream: &str, segments: u32, splits: u32, merges: u32) -> String {
    format!(
        "# TYPE {SEGMENTS} gauge\n\
         {SEGMENTS}{{scope=\"{scope}\",stream=\"{stream}\",}} {segments}.0\n\
         # TYPE {SPLITS} gauge\n\
         {SPLITS}{{scope=\"{scope}\",stream=\"{stream}\",}} {splits}.0\n\
         # TYPE {MERGES} gauge\n\
         {MERGES}{{scope=\"{scope}\",stream=\"{stream}\",}} {merges}.0\n"
    )
}

/// The seven per-stream families of many-streams.prom.
const FAMILIES: [&str; 7] = [
    SEGMENTS,
    SPLITS,
    MERGES,
    "pravega_controller_transactions_opened",
    "pravega_controller_retention_frequency_total",
    "pravega_controller_retention_truncated_size",
    "pravega_controller_stream_updated_total",
];

/// One replica's exposition of `streams` synthetic streams, shaped like
/// many-streams.prom: the seven per-stream families, the streams spread
/// over 20 scopes (see [`stream_labels`]); `replica` shifts the values so
/// replicas disagree.
pub fn many_streams(streams: usize, replica: usize) -> String {
    let mut out = String::with_capacity(streams * FAMILIES.len() * 90);
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {family}  \n# TYPE {family} gauge");
        for i in 0..streams {
            let (scope, stream) = stream_labels(i);
            let _ = writeln!(out, "{family}{{scope=\"{scope}\",stream=\"{stream}\",}} {}.0", (i * 7 + replica) % 50 + 1);
        }
    }
    out
}

/// The scope and stream names of synthetic stream `i`, as [`many_streams`]
/// writes them.
pub fn stream_labels(i: usize) -> (String, String) {
    (format!("scope-{}", i % 20), format!("stream-{i}"))
}

/// `families` families of one sample each, `pravega_controller_fF` valued
/// F on stream `sF%100` of scope `test`: a controller whose family names
/// are many.
pub fn many_families(families: usize) -> String {
    let mut text = String::with_capacity(families * 60);
    for f in 0..families {
        let _ = writeln!(text, "pravega_controller_f{f}{{scope=\"test\",stream=\"s{}\"}} {f}", f % 100);
    }
    text
}

/// What a controller sends when every per-stream family costs a column of
/// every stream: `segments_count` over `streams` streams of scope `test`
/// (`stream-0`, `stream-1`...), then `singles` families
/// `pravega_controller_single_F` of one sample each, valued F, on streams
/// spread over all of them (single F on stream `F * 7919 % streams`).
pub fn amplifying(streams: usize, singles: usize) -> String {
    let mut text = String::with_capacity(streams * 70 + singles * 80);
    for i in 0..streams {
        let _ = writeln!(text, "{SEGMENTS}{{scope=\"test\",stream=\"stream-{i}\",}} 1.0");
    }
    for f in 0..singles {
        let _ = writeln!(text, "pravega_controller_single_{f}{{scope=\"test\",stream=\"stream-{}\",}} {f}.0", f * 7919 % streams);
    }
    text
}
