//! CPU cost of one scrape round: scanning three controllers' expositions of
//! N streams into snapshots and merging them once, as the adapter's merger
//! does when the three scrapes land together; and of the merge alone, with
//! the replicas listing the same streams as at the previous merge, as they
//! do scrape after scrape; and of one scrape of a controller with 100,000
//! family names of one series each (`cargo bench --bench scrape_round`).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pravega_metrics_adapter::clock::Moment;
use pravega_metrics_adapter::store::{Limits, Store};
use std::time::Duration;
use test_support::exposition::{many_families, many_streams};
use test_support::store::{merged_store, publish};

fn scrape_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrape_round_3_replicas");
    group.sample_size(10);
    for streams in [1_000, 20_000] {
        let bodies: Vec<String> = (0..3).map(|r| many_streams(streams, r)).collect();
        let bytes: usize = bodies.iter().map(String::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        let store = Store::new(Duration::from_secs(30));
        group.bench_with_input(BenchmarkId::from_parameter(streams), &bodies, |b, bodies| {
            b.iter(|| {
                let now = Moment::now();
                for (i, body) in bodies.iter().enumerate() {
                    publish(&store, &format!("replica-{i}"), body, now);
                }
                store.remerge(now);
            })
        });
    }
    group.finish();
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge_3_replicas");
    group.sample_size(10);
    for streams in [1_000, 20_000] {
        let now = Moment::now();
        let store = merged_store(streams, now);
        group.bench_function(BenchmarkId::from_parameter(streams), |b| b.iter(|| store.remerge(now)));
    }
    group.finish();
}

/// A scrape whose every family is another name: each name is looked up as
/// the scanner switches family and again in the merge.
fn many_family_names(c: &mut Criterion) {
    const FAMILIES: usize = 100_000;
    let mut group = c.benchmark_group("scrape_many_family_names");
    group.sample_size(10);
    let body = many_families(FAMILIES);
    group.throughput(Throughput::Bytes(body.len() as u64));
    let limits = Limits { max_families: FAMILIES, ..Limits::DEFAULT };
    let store = Store::new(Duration::from_secs(30)).with_limits(limits);
    group.bench_function(BenchmarkId::from_parameter(FAMILIES), |b| {
        b.iter(|| {
            let now = Moment::now();
            publish(&store, "controller", &body, now);
            store.remerge(now);
        })
    });
    group.finish();
}

criterion_group!(benches, scrape_round, merge, many_family_names);
criterion_main!(benches);
