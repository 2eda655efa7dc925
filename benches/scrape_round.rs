//! CPU cost of one scrape round: scanning three controllers' expositions of
//! N streams into snapshots and merging them once, as the adapter's merger
//! does when the three scrapes land together (`cargo bench --bench scrape_round`).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pravega_metrics_adapter::parse::Scanner;
use pravega_metrics_adapter::store::Store;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// An exposition shaped like many-streams.prom: 7 per-stream families.
fn exposition(streams: usize, replica: u32) -> String {
    let families = [
        "pravega_controller_segments_count",
        "pravega_controller_segment_splits",
        "pravega_controller_segment_merges",
        "pravega_controller_transactions_opened",
        "pravega_controller_retention_frequency_total",
        "pravega_controller_retention_truncated_size",
        "pravega_controller_stream_updated_total",
    ];
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {family}  \n# TYPE {family} gauge");
        for i in 0..streams {
            let _ = writeln!(out, "{family}{{scope=\"scope-{}\",stream=\"stream-{i}\",}} {}.0", i % 20, (i as u32 * 7 + replica) % 50);
        }
    }
    out
}

fn scrape_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrape_round_3_replicas");
    group.sample_size(10);
    for streams in [1_000, 20_000] {
        let bodies: Vec<String> = (0..3).map(|r| exposition(streams, r)).collect();
        let bytes: usize = bodies.iter().map(String::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        let store = Store::new(Duration::from_secs(30));
        group.bench_with_input(BenchmarkId::from_parameter(streams), &bodies, |b, bodies| {
            b.iter(|| {
                let now = SystemTime::now();
                for (i, body) in bodies.iter().enumerate() {
                    let target = format!("replica-{i}");
                    let mut builder = store.builder(&target, now);
                    Scanner::scan_all(|n: &str| n.starts_with("pravega_controller_"), body.as_bytes(), |s| builder.push(s));
                    store.publish(&target, builder.finish(), now);
                }
                store.remerge(now);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scrape_round);
criterion_main!(benches);
