//! Needed-family extraction speed on the controller fixtures
//! (`cargo bench --bench parse`; throughput is reported in bytes/s).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pravega_metrics_adapter::parse::Scanner;
use std::hint::black_box;
use test_support::repo::fixture;

fn extraction(c: &mut Criterion) {
    let input = fixture("many-streams.prom").into_bytes();
    let mut group = c.benchmark_group("extract_pravega_families");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("many-streams.prom", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            let stats = Scanner::scan_all(
                |name: &str| name.starts_with("pravega_controller_"),
                black_box(&input),
                |s| sum += s.value + s.labels.len() as f64,
            );
            black_box((sum, stats))
        })
    });
    group.finish();
}

criterion_group!(benches, extraction);
criterion_main!(benches);
