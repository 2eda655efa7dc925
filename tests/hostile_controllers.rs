//! What a controller can make the adapter spend, on purpose or by a bug:
//! thousands of families of one series each over many streams (each family
//! once cost a column of every stream), family names that change every
//! scrape (once never forgotten), and more series, families or streams
//! than the limits allow (the scrape fails and the previous data stays).
//!
//! The store is measured in process, with an allocator that counts the
//! heap; the adapter binary is run against fake controllers.

use pravega_metrics_adapter::clock::Moment;
use pravega_metrics_adapter::store::{LimitExceeded, Limits, Store};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::exposition::{amplifying, many_families, many_streams, stream_exposition, QUIET};
use test_support::fake_controller::FakeController;
use test_support::queries::external_path;
use test_support::store::scan;

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters are only read by the tests.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on unchanged.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests run one at a time, so that one's allocations do not count in
/// another's peak.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The peak of heap bytes `work` added to what was live before it.
fn peak_heap(work: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    work();
    PEAK.load(Ordering::Relaxed) - before
}

/// Scrapes `text` into `store` as one target and merges it.
fn land(store: &Store, text: &str) {
    let mut builder = store.builder("a");
    scan(&mut builder, text);
    assert_eq!(builder.exceeded(), None);
    store.publish("a", builder.finish(), Moment::now()).unwrap();
    store.remerge(Moment::now());
}

#[test]
fn families_of_one_series_cost_their_series_not_the_streams() {
    let _serial = SERIAL.blocking_lock();
    const STREAMS: usize = 20_000;
    const SINGLES: usize = 500;
    let text = amplifying(STREAMS, SINGLES);
    let store = Store::new(Duration::from_secs(30));
    // A column of every stream per family held 501 x 20,000 cells of 12
    // bytes twice (snapshot and view): 240 MB. Proportional to the series,
    // it is the streams' labels and index plus the 20,500 series.
    let peak = peak_heap(|| land(&store, &text));
    assert!(peak < 16 << 20, "peak heap {} MiB for {SINGLES} families of one series", peak >> 20);
    let view = store.view();
    assert_eq!(view.family_names().count(), SINGLES + 1);
    let served = view.family("pravega_controller_single_7").unwrap().narrowed(None, None).map(|s| s.value).collect::<Vec<_>>();
    assert_eq!(served, [7.0]);
}

#[test]
fn the_amplifying_exposition_of_the_issue_is_rejected_by_the_family_limit() {
    let _serial = SERIAL.blocking_lock();
    let text = amplifying(50_000, 2_000);
    assert!(text.len() > 3_300_000, "3.3 MB, as the issue's");
    let store = Store::new(Duration::from_secs(30));
    let mut exceeded = None;
    let peak = peak_heap(|| {
        let mut builder = store.builder("a");
        scan(&mut builder, &text);
        exceeded = builder.exceeded();
    });
    assert_eq!(exceeded, Some(LimitExceeded::Families(Limits::DEFAULT.max_families)));
    assert!(peak < 16 << 20, "peak heap {} MiB while rejecting it", peak >> 20);
}

/// Each of many family names leads to its own series. How long such a
/// scrape takes (family names are found by hash, not by a search of all
/// of them) is measured by `cargo bench --bench scrape_round`
/// (`scrape_many_family_names`).
#[test]
fn each_of_many_family_names_holds_its_own_series() {
    let _serial = SERIAL.blocking_lock();
    const FAMILIES: usize = 100_000;
    let limits = Limits { max_families: FAMILIES, ..Limits::DEFAULT };
    let store = Store::new(Duration::from_secs(30)).with_limits(limits);
    land(&store, &many_families(FAMILIES));
    let view = store.view();
    assert_eq!(view.family_names().count(), FAMILIES);
    for f in 0..FAMILIES {
        let name = format!("pravega_controller_f{f}");
        let family = view.family(&name).unwrap_or_else(|| panic!("{name} not found"));
        let series: Vec<_> = family.narrowed(None, None).map(|s| (s.labels.get("stream").map(str::to_owned), s.value)).collect();
        assert_eq!(series, [(Some(format!("s{}", f % 100)), f as f64)], "{name}");
    }
}

/// The adapter scraping `controller` every 2 s.
async fn adapter_for(controller: &FakeController, extra: &[&str]) -> Adapter {
    let mut args: Vec<String> = ["--controller-url", &controller.url(), "--scrape-interval", "2s", "--scrape-timeout", "1500ms"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Adapter::start(adapter_binary!(), &args).await
}

/// The adapter's own metric `name` (first sample whose line contains all
/// of `labels`), if present.
async fn own_metric(adapter: &Adapter, name: &str, labels: &[&str]) -> Option<f64> {
    let (status, text) = adapter.get_text("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The segment count served for test/stream, if any.
async fn segments(adapter: &Adapter) -> Option<String> {
    let (status, body) = adapter.get(&external_path("pravega_controller_segments_count", "scope=test,stream=stream")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array()?.first()?["value"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_scrape_over_a_limit_fails_and_the_previous_data_stays() {
    let _serial = SERIAL.lock().await;
    let controller = FakeController::start(QUIET).await;
    let adapter = adapter_for(&controller, &["--scrape-max-families", "100"]).await;
    adapter.watch(&controller, stream_exposition("test", "stream", 4, 3, 0)).await;
    assert_eq!(segments(&adapter).await.as_deref(), Some("4"));
    controller.set_body(stream_exposition("test", "stream", 5, 4, 0) + &amplifying(500, 200));
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = ["target=\"", &controller.url(), "\",result=\"too_many_families\""].concat();
    while own_metric(&adapter, "pravega_adapter_scrapes_total", &[&reason]).await.is_none() {
        assert!(Instant::now() < deadline, "no scrape failed for too many families:\n{}", adapter.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(segments(&adapter).await.as_deref(), Some("4"), "the previous data is served");
    assert!(adapter.log().contains("more than 100 per-stream families (--scrape-max-families)"), "{}", adapter.log());
    controller.set_body(stream_exposition("test", "stream", 5, 4, 0));
    while segments(&adapter).await.as_deref() != Some("5") {
        assert!(Instant::now() < deadline, "the controller's data within limits is not served:\n{}", adapter.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn family_names_that_change_every_scrape_are_forgotten() {
    let _serial = SERIAL.lock().await;
    const NAMES: usize = 100;
    let rotating = |round: usize| -> String {
        let names = (0..NAMES).map(|f| format!("pravega_controller_rotating_{round}_{f}{{scope=\"test\",stream=\"stream\",}} 1.0\n"));
        stream_exposition("test", "stream", 4, 3, 0) + &names.collect::<String>()
    };
    let controller = FakeController::start(rotating(0)).await;
    let adapter = adapter_for(&controller, &["--max-staleness", "10ms"]).await;
    for round in 1..=20 {
        controller.set_body(rotating(round));
        // Queries wait for a fresh scrape: this round's names are served.
        let path = external_path(&format!("pravega_controller_rotating_{round}_0"), "scope=test,stream=stream");
        let deadline = Instant::now() + Duration::from_secs(10);
        while adapter.get(&path).await.0 != 200 {
            assert!(Instant::now() < deadline, "round {round} not served:\n{}", adapter.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let held = own_metric(&adapter, "pravega_adapter_family_names", &[]).await.expect("the family name gauge");
        // This round's and the last round's names, which a view being
        // replaced may hold until the next merge, plus the stream's three.
        assert!(held <= (2 * NAMES + 3) as f64, "round {round}: {held} family names held");
    }
}

/// Five replicas, each within every per-target limit, together over the
/// store's budget (the issue's 5 x 199,000 streams, scaled down): the
/// replica that would take the store over it fails its scrapes as
/// `over_budget`, the others' data is served; a list of every stream over
/// --max-list-items is refused with a Status that says to narrow it.
#[tokio::test]
async fn replicas_together_over_the_budget_fail_and_a_list_of_everything_is_refused() {
    let _serial = SERIAL.lock().await;
    const STREAMS: usize = 1_000;
    let mut controllers = Vec::new();
    for replica in 0..5 {
        controllers.push(FakeController::start(many_streams(STREAMS, replica)).await);
    }
    let mut args: Vec<String> =
        ["--scrape-interval", "2s", "--scrape-timeout", "1500ms", "--max-list-items", "500"].map(str::to_owned).to_vec();
    args.extend(["--max-total-streams".to_owned(), (STREAMS * 9 / 2).to_string()]);
    for controller in &controllers {
        args.extend(["--controller-url".to_owned(), controller.url()]);
    }
    let adapter = Adapter::start(adapter_binary!(), &args).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while own_metric(&adapter, "pravega_adapter_scrapes_total", &["result=\"over_budget\""]).await.is_none() {
        assert!(Instant::now() < deadline, "no scrape failed for the budget:\n{}", adapter.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(adapter.log().contains("more than 4500 streams (--max-total-streams)"), "{}", adapter.log());
    // Without a controller API the segment counts of streams known from
    // the adapter's start are withheld; the replicas' other families show
    // what is stored.
    let segments = "pravega_controller_segment_splits";
    // The replicas within the budget land in the same round, maybe after
    // the one that failed.
    let (mut status, mut body) = adapter.get(&external_path(segments, "scope=scope-0,stream=stream-20")).await;
    while status != 200 {
        assert!(Instant::now() < deadline, "the replicas within the budget are not served: {body}\n{}", adapter.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
        (status, body) = adapter.get(&external_path(segments, "scope=scope-0,stream=stream-20")).await;
    }
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    for family in [segments, "pravega_controller_segments_count"] {
        let (status, body) = adapter.get(&external_path(family, "")).await;
        assert_eq!(status, 413, "{family}: {body}");
    }
    let (status, body) = adapter.get(&external_path(segments, "")).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!((body["kind"].as_str(), body["reason"].as_str()), (Some("Status"), Some("RequestEntityTooLarge")));
    assert!(body["message"].as_str().is_some_and(|m| m.contains("narrow the labelSelector")), "{body}");
}
