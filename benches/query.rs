//! CPU cost of answering one external-metrics query, without HTTP, TLS or
//! authentication: parsing the label selector, finding the stream in the
//! merged view of three replicas, building and serialising the JSON body
//! (`cargo bench --bench query`). The serving benchmark measures the same
//! queries end to end; this one isolates the part the stream count changes.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pravega_metrics_adapter::clock::Moment;
use pravega_metrics_adapter::serve::metrics_api::Answer;
use pravega_metrics_adapter::serve::scopes::Visible;
use pravega_metrics_adapter::serve::selector::Selector;
use std::time::Duration;
use test_support::exposition::{stream_labels, SEGMENTS};
use test_support::store::merged_store;

fn query(c: &mut Criterion) {
    let mut group = c.benchmark_group("external_query_3_replicas");
    for streams in [1, 100, 10_000] {
        let now = Moment::now();
        let store = merged_store(streams, now);
        // The selectors an HPA per stream sends, visited in a scattered order.
        let selectors: Vec<String> = (0..streams)
            .map(|i| stream_labels((i * 7919) % streams))
            .map(|(scope, stream)| format!("scope={scope},stream={stream}"))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(streams), &selectors, |b, selectors| {
            let mut next = selectors.iter().cycle();
            b.iter(|| {
                let selector = Selector::parse(next.next().unwrap()).unwrap();
                let view = store.view();
                let answer = Answer {
                    view: &view,
                    now,
                    wall_now: std::time::SystemTime::now(),
                    max_age: store.max_age(),
                    window: Duration::from_secs(10),
                    segments: None,
                    visible: Visible::All,
                    max_list_items: usize::MAX,
                };
                let served = answer.external(SEGMENTS, &selector).unwrap();
                assert_eq!(served.body.matches("\"metricName\"").count(), 1, "one item");
                served.body
            })
        });
    }
    group.finish();
}

criterion_group!(benches, query);
criterion_main!(benches);
