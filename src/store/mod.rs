//! Per-target snapshots and the merged view the API serves.
//!
//! Each scrape builds a new [`TargetSnapshot`] ([`snapshot`]) that replaces
//! the target's previous one; a merger task then folds all live snapshots
//! into one [`MergedView`] ([`merge`]), coalescing scrapes that land
//! together. A scrape that changes nothing only refreshes its target's
//! scrape time, which the view reads directly, so it costs no merge.

mod column;
mod merge;
mod snapshot;

pub use merge::{rose, Family, MergedView, Series, Verdict, MARK_RETENTION, MAX_UNLISTED_MARKS, MERGES_FAMILY, SPLITS_FAMILY};
pub use snapshot::{Budget, LabelSet, LimitExceeded, Limits, SnapshotBuilder, TargetSnapshot, Usage, SCOPE_LABEL, STREAM_LABEL};

use crate::clock::Moment;
use snapshot::{InFlight, Interner, Room};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Shared state between the scrapers (writers) and the API (readers).
pub struct Store {
    family_names: Arc<Interner>,
    label_sets: Arc<Interner>,
    limits: Limits,
    budget: Budget,
    in_flight: Arc<InFlight>,
    /// See [`Store::replica_labels`].
    replica_labels: Arc<[String]>,
    max_age: Duration,
    /// Snapshots started so far, across all targets (see [`Store::builder`]).
    scrapes_started: AtomicU32,
    targets: Mutex<Targets>,
    /// Serialises merges so an older one never replaces a newer view.
    merging: Mutex<()>,
    merged: RwLock<Arc<MergedView>>,
    retired: Mutex<Option<Arc<MergedView>>>,
    /// The [`Targets::generation`] the current view was merged from.
    merged_generation: watch::Sender<u64>,
    merge_wanted: Notify,
    /// Streams deleted since the last merge (see [`Store::forget_marks`]).
    forgotten: Mutex<merge::Forgotten>,
    /// Unlisted streams' marks dropped for [`MAX_UNLISTED_MARKS`], in all.
    dropped_marks: AtomicU64,
}

#[derive(Default)]
struct Targets {
    entries: BTreeMap<Arc<str>, TargetEntry>,
    /// Counts changes that a merge has to take in.
    generation: u64,
    /// Removed targets and the generation of their removal: a scrape that
    /// started before it must not publish (bounded, oldest dropped first).
    removed: BTreeMap<Arc<str>, u64>,
}

impl Targets {
    /// What the snapshots of every target but `target` hold.
    fn usage_beside(&self, target: &str) -> Usage {
        self.entries.iter().filter(|(id, _)| &***id != target).map(|(_, e)| e.snapshot.usage()).sum()
    }
}

struct TargetEntry {
    snapshot: Arc<TargetSnapshot>,
    /// Last successful scrape, a [`Moment`] in ms; read by the served view.
    scraped_at: Arc<AtomicU64>,
    /// Whether the last merge took this target in (not yet expired).
    merged: Arc<std::sync::atomic::AtomicBool>,
}

/// Removed targets remembered at most (see [`Targets::removed`]).
const MAX_REMOVED: usize = 1_024;

impl Store {
    /// `max_age`: data scraped longer ago than this is never served. Each
    /// scrape may store up to the default [`Limits`], all targets together
    /// the default [`Budget`].
    pub fn new(max_age: Duration) -> Self {
        Store {
            family_names: Arc::default(),
            replica_labels: Arc::from([]),
            label_sets: Arc::default(),
            limits: Limits::DEFAULT,
            budget: Budget::DEFAULT,
            in_flight: Arc::default(),
            max_age,
            scrapes_started: AtomicU32::new(0),
            targets: Mutex::default(),
            merging: Mutex::default(),
            merged: RwLock::default(),
            retired: Mutex::default(),
            merged_generation: watch::Sender::new(0),
            merge_wanted: Notify::new(),
            forgotten: Mutex::default(),
            dropped_marks: AtomicU64::new(0),
        }
    }

    /// The store with `limits` on each scrape instead of the defaults.
    pub fn with_limits(self, limits: Limits) -> Self {
        Store { limits, ..self }
    }

    /// The store with `budget` on all targets together instead of the default.
    pub fn with_budget(self, budget: Budget) -> Self {
        Store { budget, ..self }
    }

    /// Labels that name the replica reporting a series rather than the
    /// stream (Micrometer's common tag `host`): left out of every label set,
    /// so that the replicas' series of one stream are one stream.
    pub fn replica_labels(mut self, labels: Vec<String>) -> Self {
        self.replica_labels = labels.into();
        self
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Starts the next snapshot of `target`.
    pub fn builder(&self, target: &str) -> SnapshotBuilder {
        // Saturates after 4 billion scrapes (decades): later changes then
        // tie with each other in the merge instead of ranking first.
        let started = self.scrapes_started.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        let scrape = started.map_or(u32::MAX, |n| n + 1);
        let (previous, others, generation) = {
            let targets = self.lock_targets();
            (targets.entries.get(target).map(|e| e.snapshot.clone()), targets.usage_beside(target), targets.generation)
        };
        let base = previous.as_ref().map_or_else(Usage::default, |p| p.usage());
        let room = Room::new(self.budget, others, base, self.in_flight.clone());
        let (family_names, label_sets) = (self.family_names.clone(), self.label_sets.clone());
        SnapshotBuilder::new(family_names, label_sets, self.limits, room, previous, scrape, self.replica_labels.clone())
            .started_at(generation)
    }

    /// Makes `snapshot`, scraped at `scraped_at`, the target's data; returns
    /// the generation a merge must reach to include it (see [`Store::merged`]).
    /// A scrape of a target removed after the scrape started is dropped.
    /// Refused if it would take the store over its [`Budget`] beside what
    /// the other targets hold now (they may have grown while it was built).
    pub fn publish(&self, target: &str, snapshot: TargetSnapshot, scraped_at: Moment) -> Result<u64, LimitExceeded> {
        let mut targets = self.lock_targets();
        if targets.removed.get(target).is_some_and(|&removal| removal > snapshot.started_at) {
            return Ok(targets.generation);
        }
        if let Some(exceeded) = self.budget.exceeded_by(targets.usage_beside(target), snapshot.usage()) {
            drop(targets);
            return Err(exceeded);
        }
        let now = scraped_at.as_millis();
        // Unchanged content needs no merge, unless the last merge left the
        // target's data out as expired.
        let max_age = self.max_age.as_millis() as u64;
        let unchanged = targets.entries.get(target).filter(|e| {
            !snapshot.changed && e.merged.load(Ordering::Acquire) && now.saturating_sub(e.scraped_at.load(Ordering::Relaxed)) <= max_age
        });
        if let Some(entry) = unchanged {
            entry.scraped_at.store(now, Ordering::Relaxed);
            return Ok(targets.generation);
        }
        let entry = TargetEntry {
            snapshot: Arc::new(snapshot),
            scraped_at: Arc::new(AtomicU64::new(now)),
            merged: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let replaced = targets.entries.insert(Arc::from(target), entry);
        let generation = self.changed(targets);
        drop(replaced); // outside the lock
        Ok(generation)
    }

    /// Forgets a target (its pod is gone).
    pub fn remove(&self, target: &str) -> u64 {
        let mut targets = self.lock_targets();
        targets.entries.remove(target);
        let removal = targets.generation + 1;
        if targets.removed.len() >= MAX_REMOVED {
            let oldest = targets.removed.iter().min_by_key(|(_, &g)| g).map(|(t, _)| t.clone());
            oldest.map(|t| targets.removed.remove(&t));
        }
        targets.removed.insert(Arc::from(target), removal);
        self.changed(targets)
    }

    /// Starts the stream's high-water mark and verdict anew at the next
    /// merge: the stream was deleted, and one created under its name
    /// counts its scale events from 0.
    pub fn forget_marks(&self, scope: &str, stream: &str) {
        self.forgotten.lock().unwrap_or_else(PoisonError::into_inner).insert((scope.to_owned(), stream.to_owned()));
        self.expire();
    }

    /// Asks for a merge without a new snapshot, so that snapshots past the
    /// max age drop out while their targets keep failing.
    pub fn expire(&self) -> u64 {
        self.changed(self.lock_targets())
    }

    fn changed(&self, mut targets: std::sync::MutexGuard<'_, Targets>) -> u64 {
        targets.generation += 1;
        let generation = targets.generation;
        drop(targets);
        self.merge_wanted.notify_one();
        generation
    }

    /// Waits until the served view includes the change of `generation`.
    pub async fn merged(&self, generation: u64) {
        let mut merged = self.merged_generation.subscribe();
        let _ = merged.wait_for(|g| *g >= generation).await;
    }

    /// Changes whenever a merge publishes a view that takes in new data
    /// (scrapes that changed something, expiry, forgotten marks): a
    /// subscriber looks at the served values again then.
    pub fn merges(&self) -> watch::Receiver<u64> {
        self.merged_generation.subscribe()
    }

    /// Merges whenever asked to, coalescing the changes of several scrapes
    /// that land while a merge runs into the next one.
    pub async fn keep_merged(self: Arc<Self>) {
        loop {
            self.merge_wanted.notified().await;
            let store = self.clone();
            // CPU work proportional to the number of streams.
            crate::resources::run_in_background(c"merge", move || store.remerge(Moment::now())).await;
        }
    }

    /// Merges the current snapshots into the served view now.
    pub fn remerge(&self, now: Moment) {
        let _merging = self.merging.lock().unwrap_or_else(PoisonError::into_inner);
        // The view retired by the last merge has had a merge interval for
        // its queries to finish: free it before building the next, so that
        // at most two views exist at once.
        drop(self.retired.lock().unwrap_or_else(PoisonError::into_inner).take());
        let oldest = now.saturating_sub(self.max_age).as_millis();
        let (live, generation) = {
            let targets = self.lock_targets();
            let mut live: Vec<(Arc<TargetSnapshot>, Arc<AtomicU64>)> = Vec::new();
            for entry in targets.entries.values() {
                let fresh = entry.scraped_at.load(Ordering::Relaxed) >= oldest;
                entry.merged.store(fresh, Ordering::Release);
                if fresh {
                    live.push((entry.snapshot.clone(), entry.scraped_at.clone()));
                }
            }
            (live, targets.generation)
        };
        let sources: Vec<merge::Source<'_>> =
            live.iter().map(|(snapshot, scraped_at)| merge::Source { snapshot, scraped_at: scraped_at.clone() }).collect();
        let forgotten = std::mem::take(&mut *self.forgotten.lock().unwrap_or_else(PoisonError::into_inner));
        let previous = self.view();
        let view = Arc::new(merge::merge(&sources, &previous, now.as_millis(), &forgotten));
        self.dropped_marks.fetch_add(view.dropped_marks() as u64, Ordering::Relaxed);
        drop(previous);
        let previous = std::mem::replace(&mut *self.merged.write().unwrap_or_else(PoisonError::into_inner), view);
        // Freeing a view costs time in proportion to its streams, so this
        // thread frees it, not a query: now if no query holds it (no new one
        // can take it), else at the next merge.
        if let Err(held) = Arc::try_unwrap(previous) {
            *self.retired.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
        }
        self.merged_generation.send_if_modified(|g| {
            let newer = generation > *g;
            *g = (*g).max(generation);
            newer
        });
        self.label_sets.forget_unused();
        self.family_names.forget_unused();
    }

    pub fn view(&self) -> Arc<MergedView> {
        self.merged.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Series count per target, for the adapter's own metrics.
    pub fn series_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.lock_targets().entries.iter().map(|(t, e)| (t.clone(), e.snapshot.series_count())).collect()
    }

    /// Unlisted streams' marks dropped so far for [`MAX_UNLISTED_MARKS`].
    pub fn dropped_marks(&self) -> u64 {
        self.dropped_marks.load(Ordering::Relaxed)
    }

    /// Family names and label sets held by snapshots and views, for the
    /// adapter's own metrics: what controllers no longer list is forgotten.
    pub fn names_held(&self) -> (usize, usize) {
        (self.family_names.len(), self.label_sets.len())
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Scanner;
    use test_support::exposition::{amplifying, stream_exposition};

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> Moment {
        Moment::START + T0 + Duration::from_secs(secs)
    }

    /// Scrapes `text` as `target` at time `secs`.
    fn scrape(store: &Store, target: &str, secs: u64, text: &str) {
        let mut builder = store.builder(target);
        Scanner::scan_all(|n: &str| n.starts_with("pravega_controller_"), text.as_bytes(), |s| builder.push(s));
        store.publish(target, builder.finish(), at(secs)).unwrap();
        store.remerge(at(secs));
    }

    /// Exposition of one stream of scope `test` as a replica reports it.
    fn replica(stream: &str, segments: u32, splits: u32, merges: u32) -> String {
        stream_exposition("test", stream, segments, splits, merges)
    }

    /// The served segment count of test/`stream`; None if not served
    /// (unknown, or undecided).
    fn segments(store: &Store, stream: &str) -> Option<f64> {
        judged(store, stream).and_then(|(value, _)| (!value.is_nan()).then_some(value))
    }

    fn judged(store: &Store, stream: &str) -> Option<(f64, Verdict)> {
        let view = store.view();
        let series: Vec<_> = view.family("pravega_controller_segments_count")?.narrowed(Some("test"), Some(stream)).collect();
        assert!(series.len() <= 1);
        series.first().map(|s| (s.value, s.verdict))
    }

    #[test]
    fn a_merge_that_takes_in_new_data_notifies_and_an_unchanged_scrape_does_not() {
        let store = Store::new(Duration::from_secs(30));
        let mut merges = store.merges();
        scrape(&store, "a", 0, &replica("s", 1, 0, 0));
        assert!(merges.has_changed().unwrap(), "the first scrape");
        merges.mark_unchanged();
        scrape(&store, "a", 1, &replica("s", 1, 0, 0));
        assert!(!merges.has_changed().unwrap(), "nothing new: no merge, no notification");
        scrape(&store, "a", 2, &replica("s", 3, 1, 0));
        assert!(merges.has_changed().unwrap(), "a scale");
    }

    #[test]
    fn stale_replica_loses_to_the_one_that_saw_more_scale_events() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 6, 4));
        scrape(&store, "b", 0, &replica("s", 7, 8, 4));
        assert_eq!(segments(&store, "s"), Some(7.0));
        // Order of scrapes must not matter.
        scrape(&store, "a", 1, &replica("s", 5, 6, 4));
        assert_eq!(segments(&store, "s"), Some(7.0));
        // a now performs the next scale (a merge): it wins.
        scrape(&store, "a", 2, &replica("s", 6, 8, 5));
        assert_eq!(segments(&store, "s"), Some(6.0));
    }

    #[test]
    fn replicas_tagging_their_series_with_their_host_report_one_stream() {
        let store = Store::new(Duration::from_secs(30)).replica_labels(vec!["host".into()]);
        let tagged = |host: &str, segments: u32, splits: u32| {
            format!(
                "pravega_controller_segments_count{{host=\"{host}\",scope=\"test\",stream=\"s\",}} {segments}.0\n\
                 pravega_controller_segment_splits{{host=\"{host}\",scope=\"test\",stream=\"s\",}} {splits}.0\n"
            )
        };
        scrape(&store, "a", 0, &tagged("controller-a", 2, 1));
        scrape(&store, "b", 0, &tagged("controller-b", 4, 3));
        let view = store.view();
        let series: Vec<_> = view.family("pravega_controller_segments_count").unwrap().narrowed(None, None).collect();
        assert_eq!(series.len(), 1, "one stream, not one per replica");
        assert_eq!((series[0].value, series[0].labels.get("host")), (4.0, None));
    }

    #[test]
    fn never_sums_across_replicas() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 4, 3, 0));
        scrape(&store, "b", 0, &replica("s", 4, 3, 0));
        scrape(&store, "c", 0, &replica("s", 4, 3, 0));
        assert_eq!(segments(&store, "s"), Some(4.0));
    }

    #[test]
    fn replica_without_the_series_is_ignored() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 9, 10, 2));
        scrape(&store, "b", 0, &replica("other", 2, 1, 0));
        assert_eq!(segments(&store, "s"), Some(9.0));
        assert_eq!(segments(&store, "other"), Some(2.0));
    }

    #[test]
    fn a_restarted_replica_does_not_hand_the_stream_to_a_stale_one() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 3, 2, 0));
        scrape(&store, "b", 0, &replica("s", 5, 4, 0));
        assert_eq!(segments(&store, "s"), Some(5.0));
        // b restarts: its exposition no longer has the stream.
        scrape(&store, "b", 1, "pravega_controller_hosts_count 3.0\n");
        assert_eq!(judged(&store, "s").map(|(_, v)| v), Some(Verdict::Undecided));
        assert_eq!(segments(&store, "s"), None, "a's 3 is below the mark of 4 scale events");
        scrape(&store, "a", 2, &replica("s", 3, 2, 0));
        assert_eq!(segments(&store, "s"), None, "however often a is scraped");
        // After its next scale b reports the stream again and wins.
        scrape(&store, "b", 3, &replica("s", 6, 5, 0));
        assert_eq!(judged(&store, "s"), Some((6.0, Verdict::Current)));
    }

    #[test]
    fn a_stale_replica_is_never_served_whatever_happens_to_the_current_one() {
        let store = Store::new(Duration::from_secs(30));
        let start = |store: &Store| {
            scrape(store, "a", 0, &replica("s", 2, 1, 0));
            scrape(store, "b", 0, &replica("s", 7, 5, 1));
            scrape(store, "c", 0, &replica("other", 1, 0, 0));
            assert_eq!(segments(store, "s"), Some(7.0));
        };
        start(&store);
        // b leaves discovery (its pod stops being Ready).
        store.remove("b");
        store.remerge(at(1));
        assert_eq!(segments(&store, "s"), None, "removed");
        // b's data expires while a and c keep answering.
        let store = Store::new(Duration::from_secs(30));
        start(&store);
        for t in [10, 20, 31, 40] {
            scrape(&store, "a", t, &replica("s", 2, 1, 0));
            scrape(&store, "c", t, &replica("other", 1, 0, 0));
            let expected = if t <= 30 { Some(7.0) } else { None };
            assert_eq!(segments(&store, "s"), expected, "at {t} s");
        }
        // b comes back with the same data: served again, to be confirmed.
        scrape(&store, "b", 41, &replica("s", 7, 5, 1));
        assert_eq!(judged(&store, "s"), Some((7.0, Verdict::Unconfirmed)));
    }

    #[test]
    fn marks_outlive_every_replica_listing_the_stream_for_the_retention() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "b", 0, &replica("s", 7, 5, 1));
        // b restarts and lists nothing of s; a never listed it.
        scrape(&store, "b", 1, &replica("other", 1, 0, 0));
        assert_eq!(judged(&store, "s").map(|(v, d)| (v.is_nan(), d)), Some((true, Verdict::Undecided)));
        // A replica that reports s below the mark appears: still not served.
        scrape(&store, "a", 2, &replica("s", 2, 1, 0));
        assert_eq!(segments(&store, "s"), None);
        store.remove("a");
        store.remerge(at(2));
        let retention = MARK_RETENTION.as_secs();
        scrape(&store, "b", retention, &replica("other", 1, 0, 0));
        assert!(judged(&store, "s").is_some(), "kept for the retention");
        scrape(&store, "b", retention + 3, &replica("other", 1, 0, 0));
        assert!(judged(&store, "s").is_none(), "forgotten after it");
    }

    #[test]
    fn verdicts_follow_what_the_adapter_has_seen() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 4, 3, 0));
        assert_eq!(judged(&store, "s"), Some((4.0, Verdict::Unconfirmed)), "first sight");
        scrape(&store, "a", 1, &replica("s", 4, 3, 0));
        assert_eq!(judged(&store, "s"), Some((4.0, Verdict::Unconfirmed)), "nothing happened");
        scrape(&store, "a", 2, &replica("s", 5, 4, 0));
        assert_eq!(judged(&store, "s"), Some((5.0, Verdict::Current)), "a scale seen");
        scrape(&store, "b", 3, &replica("s", 3, 2, 0));
        assert_eq!(judged(&store, "s"), Some((5.0, Verdict::Current)), "a stale replica changes nothing");
        let series: Vec<_> =
            store.view().family(SPLITS_FAMILY).unwrap().narrowed(None, None).map(|s| (s.value, s.mark)).collect::<Vec<_>>();
        assert_eq!(series, [(4.0, 4.0)], "every family follows the replica at the mark");
    }

    #[test]
    fn tie_goes_to_the_value_that_changed_most_recently() {
        let store = Store::new(Duration::from_secs(30));
        // Neither replica reports splits/merges.
        let only = |n: u32| format!("pravega_controller_segments_count{{scope=\"test\",stream=\"s\"}} {n}\n");
        scrape(&store, "a", 0, &only(3));
        scrape(&store, "b", 0, &only(3));
        scrape(&store, "a", 5, &only(4));
        scrape(&store, "b", 5, &only(3));
        assert_eq!(segments(&store, "s"), Some(4.0));
        scrape(&store, "b", 8, &only(5));
        scrape(&store, "a", 9, &only(4));
        assert_eq!(segments(&store, "s"), Some(5.0), "b changed at 8, a at 5");
    }

    #[test]
    fn all_replicas_agree() {
        let store = Store::new(Duration::from_secs(30));
        for t in ["a", "b", "c"] {
            scrape(&store, t, 0, &replica("s", 8, 9, 2));
        }
        assert_eq!(segments(&store, "s"), Some(8.0));
        let view = store.view();
        assert_eq!(view.family(SPLITS_FAMILY).unwrap().narrowed(None, None).count(), 1);
    }

    #[test]
    fn data_older_than_max_age_is_not_merged() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 9, 9));
        scrape(&store, "b", 20, &(replica("s", 3, 1, 1) + &replica("t", 3, 1, 1)));
        assert_eq!(segments(&store, "s"), Some(5.0));
        assert_eq!(segments(&store, "t"), Some(3.0));
        store.expire();
        store.remerge(at(31));
        assert_eq!(segments(&store, "s"), None, "b is below a's mark");
        assert_eq!(segments(&store, "t"), Some(3.0));
        store.remerge(at(51));
        assert_eq!(segments(&store, "t"), None);
    }

    #[test]
    fn removed_target_no_longer_counts() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &(replica("s", 5, 9, 9) + &replica("t", 5, 9, 9)));
        scrape(&store, "b", 0, &replica("s", 3, 1, 1));
        store.remove("a");
        store.remerge(at(1));
        assert_eq!(segments(&store, "s"), None, "b is below a's mark");
        assert_eq!(segments(&store, "t"), None, "nobody lists t but its mark is kept");
        assert!(judged(&store, "t").is_some());
    }

    #[test]
    fn non_finite_and_non_stream_samples_are_not_stored() {
        let store = Store::new(Duration::from_secs(30));
        scrape(
            &store,
            "a",
            0,
            "pravega_controller_segments_count{scope=\"x\",stream=\"nan\"} NaN\n\
             pravega_controller_segments_count{scope=\"x\",stream=\"inf\"} +Inf\n\
             pravega_controller_kvtable_segments_count{scope=\"x\",kvtable=\"k\"} 4\n\
             pravega_controller_hosts_count 3\n\
             pravega_controller_segments_count{scope=\"x\",stream=\"ok\"} 2\n",
        );
        let view = store.view();
        let names: Vec<_> = view.family_names().map(|n| (n.to_owned(), view.family(n).unwrap().narrowed(None, None).count())).collect();
        assert_eq!(names, vec![("pravega_controller_segments_count".to_owned(), 1)]);
    }

    #[test]
    fn label_order_does_not_create_a_second_stream() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, "pravega_controller_segments_count{stream=\"s\",scope=\"test\"} 2\n");
        scrape(&store, "b", 0, "pravega_controller_segments_count{scope=\"test\",stream=\"s\"} 2\n");
        assert_eq!(store.view().family("pravega_controller_segments_count").unwrap().narrowed(None, None).count(), 1);
    }

    #[test]
    fn duplicate_label_names_and_separator_bytes_are_rejected() {
        let store = Store::new(Duration::from_secs(30));
        let mut builder = store.builder("a");
        let text = "pravega_controller_x{scope=\"a\",scope=\"b\",stream=\"s\"} 1\npravega_controller_x{scope=\"a\",stream=\"s\u{0}t\"} 1\npravega_controller_x{scope=\"a\",stream=\"s\"} 1\npravega_controller_x{scope=\"a\",stream=\"s\"} 2\n";
        Scanner::scan_all(|_: &str| true, text.as_bytes(), |s| builder.push(s));
        assert_eq!(builder.rejected(), 3);
        assert_eq!(builder.finish().series_count(), 1);
    }

    /// Streams listed in another order, missing from some families, or new:
    /// the guessed-order fast path must fall back without losing anything.
    #[test]
    fn reordered_partial_and_new_streams_are_stored_faithfully() {
        let line = |family: &str, stream: &str, v: u32| format!("pravega_controller_{family}{{scope=\"t\",stream=\"{stream}\"}} {v}\n");
        let store = Store::new(Duration::from_secs(30));
        let first: String = ["a", "b", "c"].iter().flat_map(|s| [line("segments_count", s, 1), line("x", s, 1)]).collect();
        scrape(&store, "r", 0, &first);
        // Order c, a, d (new), b missing from segments_count; x lists b, a only.
        let second = [
            line("segments_count", "c", 1),
            line("segments_count", "a", 2),
            line("segments_count", "d", 3),
            line("x", "b", 1),
            line("x", "a", 1),
        ]
        .concat();
        scrape(&store, "r", 5, &second);
        let view = store.view();
        let values = |family: &str| -> Vec<(String, f64)> {
            let mut v: Vec<_> =
                view.family(family).unwrap().narrowed(None, None).map(|s| (s.labels.get("stream").unwrap().to_owned(), s.value)).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(values("pravega_controller_segments_count"), [("a".into(), 2.0), ("c".into(), 1.0), ("d".into(), 3.0)]);
        assert_eq!(values("pravega_controller_x"), [("a".into(), 1.0), ("b".into(), 1.0)]);
        let snapshot = store.lock_targets().entries["r"].snapshot.clone();
        let changed = |stream: &str, family: &str| {
            let slot = snapshot.streams.iter().position(|s| s.get("stream") == Some(stream)).unwrap();
            snapshot.column(family).unwrap().get(slot).unwrap().changed_in
        };
        assert_eq!(changed("c", "pravega_controller_segments_count"), 1, "unchanged value keeps its first scrape");
        assert_eq!(changed("a", "pravega_controller_segments_count"), 2);
        assert_eq!(changed("b", "pravega_controller_x"), 1);
        assert_eq!(snapshot.index.len(), 4);
        for (i, labels) in snapshot.streams.iter().enumerate() {
            assert_eq!(snapshot.index[labels], i as u32);
        }
    }

    #[test]
    fn a_scrape_that_changes_nothing_only_refreshes_the_time() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 6, 4));
        let generation = *store.merged_generation.borrow();
        let mut builder = store.builder("a");
        Scanner::scan_all(|_: &str| true, replica("s", 5, 6, 4).as_bytes(), |s| builder.push(s));
        assert_eq!(store.publish("a", builder.finish(), at(20)), Ok(generation), "no merge needed");
        let view = store.view();
        let series: Vec<_> = view.family("pravega_controller_segments_count").unwrap().narrowed(None, None).collect();
        assert_eq!(series[0].scraped_at, at(20));
        // Still live at 40 s thanks to the refreshed time.
        store.expire();
        store.remerge(at(40));
        assert_eq!(segments(&store, "s"), Some(5.0));
        // Unchanged content after the data expired needs a merge to return.
        store.remerge(at(100));
        assert_eq!(segments(&store, "s"), None);
        let mut builder = store.builder("a");
        Scanner::scan_all(|_: &str| true, replica("s", 5, 6, 4).as_bytes(), |s| builder.push(s));
        let back = store.publish("a", builder.finish(), at(101)).unwrap();
        assert!(back > generation);
        store.remerge(at(101));
        assert_eq!(segments(&store, "s"), Some(5.0));
        let generation = back;
        // A changed value does need a merge.
        let mut builder = store.builder("a");
        Scanner::scan_all(|_: &str| true, replica("s", 6, 7, 4).as_bytes(), |s| builder.push(s));
        assert!(store.publish("a", builder.finish(), at(41)).unwrap() > generation);
    }

    #[test]
    fn the_merge_reuses_the_layout_only_while_every_replica_lists_the_same_streams() {
        let store = Store::new(Duration::from_secs(30));
        let two = |first: &str, second: &str, segments: u32| replica(first, segments, 1, 0) + &replica(second, 1, 1, 0);
        scrape(&store, "a", 0, &two("s", "t", 2));
        scrape(&store, "b", 0, &two("s", "t", 2));
        let layout = store.view().layout().clone();
        scrape(&store, "a", 1, &two("s", "t", 3));
        assert!(Arc::ptr_eq(&layout, store.view().layout()), "only a value changed");
        assert_eq!(segments(&store, "s"), Some(3.0));

        scrape(&store, "b", 2, &(replica("t", 1, 1, 0) + &replica("s", 2, 1, 0)));
        assert!(!Arc::ptr_eq(&layout, store.view().layout()), "b lists its streams in another order");
        assert_eq!(segments(&store, "s"), Some(3.0));
        assert_eq!(segments(&store, "t"), Some(1.0));
        let layout = store.view().layout().clone();
        scrape(&store, "a", 3, &(two("s", "t", 4) + &replica("u", 5, 1, 0)));
        assert!(!Arc::ptr_eq(&layout, store.view().layout()), "a lists a new stream");
        assert_eq!(segments(&store, "u"), Some(5.0));
        store.remove("b");
        let layout = store.view().layout().clone();
        store.remerge(at(4));
        assert!(!Arc::ptr_eq(&layout, store.view().layout()), "one replica fewer");
        assert_eq!(segments(&store, "s"), Some(4.0));
    }

    #[test]
    fn a_replaced_view_is_freed_by_the_merge_unless_a_query_holds_it() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 6, 4));
        let unheld = Arc::downgrade(&store.view());
        scrape(&store, "a", 1, &replica("s", 6, 7, 4));
        assert!(unheld.upgrade().is_none(), "no query held it: freed by the merge at once");

        let held = store.view();
        let watched = Arc::downgrade(&held);
        scrape(&store, "a", 2, &replica("s", 7, 8, 4));
        drop(held);
        assert!(watched.upgrade().is_some(), "the query's drop must not be the one that frees it");
        scrape(&store, "a", 3, &replica("s", 8, 9, 4));
        assert!(watched.upgrade().is_none(), "freed by the next merge");
    }

    #[test]
    fn scrape_numbers_saturate_instead_of_wrapping() {
        let store = Store::new(Duration::from_secs(30));
        store.scrapes_started.store(u32::MAX - 1, Ordering::Relaxed);
        let changed_in = |value: u32| {
            scrape(&store, "a", 0, &replica("s", value, 0, 0));
            let snapshot = store.lock_targets().entries["a"].snapshot.clone();
            snapshot.column("pravega_controller_segments_count").unwrap().get(0).unwrap().changed_in
        };
        assert_eq!(changed_in(1), u32::MAX);
        assert_eq!(changed_in(2), u32::MAX, "a later change never ranks as older");
    }

    #[test]
    fn narrowing_by_scope_and_stream() {
        let store = Store::new(Duration::from_secs(30));
        let mut text = String::new();
        for scope in ["a", "b", "c"] {
            for stream in ["x", "y"] {
                text += &format!("pravega_controller_segments_count{{scope=\"{scope}\",stream=\"{stream}\"}} 1\n");
            }
        }
        // A second series of b/y, told apart by another label.
        text += "pravega_controller_segments_count{scope=\"b\",stream=\"y\",tier=\"2\"} 1\n";
        scrape(&store, "t", 0, &text);
        let view = store.view();
        let family = view.family("pravega_controller_segments_count").unwrap();
        assert_eq!(family.narrowed(None, None).count(), 7);
        assert_eq!(family.narrowed(None, Some("x")).count(), 7, "a stream name alone does not narrow");
        assert_eq!(family.narrowed(Some("b"), None).count(), 3);
        for (scope, stream) in [("a", "x"), ("a", "y"), ("b", "x"), ("c", "x"), ("c", "y")] {
            let one: Vec<_> = family.narrowed(Some(scope), Some(stream)).collect();
            assert_eq!(one.len(), 1, "{scope}/{stream}");
            assert_eq!((one[0].labels.get("scope"), one[0].labels.get("stream")), (Some(scope), Some(stream)));
        }
        let both: Vec<_> = family.narrowed(Some("b"), Some("y")).map(|s| s.labels.get("tier")).collect();
        assert_eq!(both, [None, Some("2")]);
        assert_eq!(family.narrowed(Some("z"), None).count(), 0);
        assert_eq!(family.narrowed(Some("a"), Some("z")).count(), 0);
        assert_eq!(family.narrowed(Some("x"), Some("a")).count(), 0);
    }

    #[test]
    fn families_of_few_streams_cost_their_cells_not_the_streams() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &amplifying(1_000, 200));
        let snapshot = store.lock_targets().entries["a"].snapshot.clone();
        assert_eq!(snapshot.series_count(), 1_200);
        let stored: usize = snapshot.columns.iter().map(|c| c.cells.stored()).sum();
        assert_eq!(stored, 1_200, "one dense column of 1,000 and 200 sparse ones of one cell");
        let view = store.view();
        assert_eq!(view.stored_cells(), 1_200);
        // Sparse families read as dense ones do, whatever the narrowing.
        let name = "pravega_controller_single_3";
        let stream = format!("stream-{}", 3 * 7919 % 1_000);
        let family = view.family(name).unwrap();
        let all: Vec<_> = family.narrowed(None, None).map(|s| (s.labels.get("stream").unwrap().to_owned(), s.value)).collect();
        assert_eq!(all, [(stream.clone(), 3.0)]);
        assert_eq!(family.narrowed(Some("test"), Some(&stream)).map(|s| s.value).collect::<Vec<_>>(), [3.0]);
        assert_eq!(family.narrowed(Some("test"), Some("stream-1")).count(), 0);
        assert_eq!(family.narrowed(Some("test"), None).count(), 1);
    }

    #[test]
    fn a_sparse_family_follows_the_replica_at_the_mark_and_lists_undecided_streams() {
        let store = Store::new(Duration::from_secs(30));
        let sparse = |value: u32| format!("pravega_controller_x{{scope=\"test\",stream=\"s\"}} {value}\n");
        let mut many = String::new();
        for i in 0..100 {
            many += &replica(&format!("t{i}"), 1, 1, 0);
        }
        scrape(&store, "a", 0, &(many.clone() + &replica("s", 5, 6, 4) + &sparse(1)));
        scrape(&store, "b", 0, &(many.clone() + &replica("s", 7, 7, 4) + &sparse(2)));
        // b scales s while the adapter watches.
        scrape(&store, "b", 1, &(many.clone() + &replica("s", 7, 8, 4) + &sparse(2)));
        let value = |store: &Store| {
            let view = store.view();
            let series =
                view.family("pravega_controller_x").unwrap().narrowed(Some("test"), Some("s")).map(|s| (s.value, s.verdict)).next();
            series
        };
        assert_eq!(value(&store), Some((2.0, Verdict::Current)), "b is at the mark, which rose");
        // b restarts: nothing at the mark lists s; the sparse family still
        // lists it, undecided, as a dense one would.
        scrape(&store, "b", 2, &many);
        let (undecided, verdict) = value(&store).unwrap();
        assert!(undecided.is_nan());
        assert_eq!(verdict, Verdict::Undecided);
    }

    #[test]
    fn duplicates_out_of_stream_order_are_rejected() {
        let store = Store::new(Duration::from_secs(30));
        let mut builder = store.builder("a");
        let line = |stream: &str, v: u32| format!("pravega_controller_x{{scope=\"t\",stream=\"{stream}\"}} {v}\n");
        let text = [line("a", 1), line("b", 2), line("c", 3), line("a", 4), line("b", 5), line("d", 6)].concat();
        Scanner::scan_all(|_: &str| true, text.as_bytes(), |s| builder.push(s));
        assert_eq!(builder.rejected(), 2);
        store.publish("a", builder.finish(), at(0)).unwrap();
        store.remerge(at(0));
        let view = store.view();
        let mut values: Vec<_> = view.family("pravega_controller_x").unwrap().narrowed(None, None).map(|s| s.value).collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, [1.0, 2.0, 3.0, 6.0], "the first of each kept");
    }

    #[test]
    fn a_scrape_over_a_limit_stops_storing_and_says_which() {
        let limits = Limits { max_series: 10, max_families: 3, max_streams: 5 };
        let store = Store::new(Duration::from_secs(30)).with_limits(limits);
        let exceeded = |text: &str| {
            let mut builder = store.builder("a");
            Scanner::scan_all(|_: &str| true, text.as_bytes(), |s| builder.push(s));
            builder.exceeded()
        };
        let line = |family: u32, stream: u32| format!("pravega_controller_f{family}{{scope=\"t\",stream=\"s{stream}\"}} 1\n");
        let grid = |families: u32, streams: u32| -> String { (0..families).flat_map(|f| (0..streams).map(move |s| line(f, s))).collect() };
        assert_eq!(exceeded(&grid(2, 5)), None, "10 series of 2 families and 5 streams: at every limit, over none");
        assert_eq!(exceeded(&grid(1, 6)), Some(LimitExceeded::Streams(5)));
        assert_eq!(exceeded(&grid(4, 1)), Some(LimitExceeded::Families(3)));
        assert_eq!(exceeded(&grid(3, 4)), Some(LimitExceeded::Series(10)));
        assert_eq!(LimitExceeded::Series(10).reason(), "too_many_series");
    }

    #[test]
    fn family_names_no_snapshot_or_view_holds_are_forgotten() {
        let store = Store::new(Duration::from_secs(30));
        let rotating = |round: u32| -> String {
            (0..50).map(|f| format!("pravega_controller_r{round}_{f}{{scope=\"t\",stream=\"s\"}} 1\n")).collect()
        };
        for round in 0..20 {
            scrape(&store, "a", round as u64, &rotating(round));
            let (names, label_sets) = store.names_held();
            assert!(names <= 150, "round {round}: {names} names held");
            assert_eq!(label_sets, 1);
        }
        store.remove("a");
        store.remerge(at(21));
        store.remerge(at(22));
        assert_eq!(store.names_held(), (0, 0));
    }

    #[test]
    fn a_scrape_of_a_target_removed_while_it_parsed_is_not_published() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 6, 4));
        // The scrape starts, the target leaves discovery, then the parse
        // finishes and publishes.
        let mut builder = store.builder("a");
        Scanner::scan_all(|_: &str| true, replica("s", 6, 7, 4).as_bytes(), |s| builder.push(s));
        store.remove("a");
        store.publish("a", builder.finish(), at(1)).unwrap();
        store.remerge(at(1));
        assert_eq!(segments(&store, "s"), None, "the removed target's data came back");
        assert!(store.lock_targets().entries.is_empty());
        // The same target discovered again publishes as usual.
        scrape(&store, "a", 2, &replica("s", 6, 7, 4));
        assert_eq!(segments(&store, "s"), Some(6.0));
    }

    #[test]
    fn an_unchanged_scrape_that_lands_after_an_expiry_merge_brings_the_target_back() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 6, 4));
        // A scrape starts at 29 s (within the max age of the data of 0 s)
        // and lands after a merge at 31 s has dropped the data as expired.
        let mut builder = store.builder("a");
        Scanner::scan_all(|_: &str| true, replica("s", 5, 6, 4).as_bytes(), |s| builder.push(s));
        let expired = store.expire();
        store.remerge(at(31));
        assert_eq!(segments(&store, "s"), None, "expired");
        let generation = store.publish("a", builder.finish(), at(29)).unwrap();
        // Nothing merges after an unchanged publish unless it asks for it.
        assert!(generation > expired, "the publish asks for a merge to take the target back in");
        store.remerge(at(31));
        assert_eq!(segments(&store, "s"), Some(5.0), "the recovered target is in the view again");
    }

    #[test]
    fn a_higher_mark_from_a_replica_s_first_scrape_is_not_a_scale_watched() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 2, 1, 0));
        // b is scraped for the first time (the adapter just started, or b
        // was unreachable until now): its higher mark is no scale watched.
        scrape(&store, "b", 1, &replica("s", 6, 5, 0));
        assert_eq!(judged(&store, "s"), Some((6.0, Verdict::Unconfirmed)));
        scrape(&store, "b", 2, &replica("s", 7, 6, 0));
        assert_eq!(judged(&store, "s"), Some((7.0, Verdict::Current)), "b's next scale is");
    }

    #[test]
    fn a_stream_a_replica_begins_to_report_while_watched_is_current() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("other", 1, 0, 0));
        assert_eq!(judged(&store, "s"), None);
        scrape(&store, "a", 1, &(replica("other", 1, 0, 0) + &replica("s", 3, 2, 0)));
        assert_eq!(judged(&store, "s"), Some((3.0, Verdict::Current)), "created or scaled while the adapter watched");
        // Reported since the replica's first scrape: not a change watched.
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "b", 0, &replica("s", 3, 2, 0));
        assert_eq!(judged(&store, "s"), Some((3.0, Verdict::Unconfirmed)));
        scrape(&store, "b", 1, &replica("s", 3, 2, 0));
        assert_eq!(judged(&store, "s"), Some((3.0, Verdict::Unconfirmed)), "however often it is scraped");
    }

    #[test]
    fn a_stream_created_while_watched_stays_current_until_it_scales() {
        // A stream that never scaled has a segments_count gauge and no
        // splits or merges series: no mark at all.
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("other", 1, 0, 0));
        let created = replica("other", 1, 0, 0) + "pravega_controller_segments_count{scope=\"test\",stream=\"s\"} 1\n";
        for secs in 1..4 {
            scrape(&store, "a", secs, &created);
            assert_eq!(judged(&store, "s"), Some((1.0, Verdict::Current)), "merge at {secs} s");
        }
        scrape(&store, "a", 4, &(replica("other", 1, 0, 0) + &replica("s", 2, 1, 0)));
        assert_eq!(judged(&store, "s"), Some((2.0, Verdict::Current)), "its first scale");
    }

    #[test]
    fn implausible_totals_do_not_move_the_mark() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 1, 0, 0));
        scrape(&store, "a", 1, &replica("s", 3, 1, 0));
        assert_eq!(judged(&store, "s"), Some((3.0, Verdict::Current)));
        for bad in ["1e300", "-1", "1.5", "NaN", "+Inf", "9007199254740993"] {
            let lying = format!(
                "pravega_controller_segments_count{{scope=\"test\",stream=\"s\"}} 9\n\
                 pravega_controller_segment_splits{{scope=\"test\",stream=\"s\"}} {bad}\n"
            );
            scrape(&store, "b", 2, &lying);
            assert_eq!(judged(&store, "s").map(|(v, _)| v), Some(3.0), "splits {bad} pinned the mark");
            // Values that are not finite are not stored at all: nothing to
            // disbelieve.
            assert_eq!(store.view().implausible_totals(), usize::from(!matches!(bad, "NaN" | "+Inf")), "{bad}");
        }
        // The honest replica's next scale is served.
        scrape(&store, "a", 3, &replica("s", 4, 2, 0));
        assert_eq!(judged(&store, "s"), Some((4.0, Verdict::Current)));
    }

    #[test]
    fn a_deleted_stream_s_marks_start_anew() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 1, 0, 0));
        scrape(&store, "a", 1, &replica("s", 5, 4, 0));
        // The replica that scaled it restarts: the mark of 4 stays.
        scrape(&store, "a", 2, "pravega_controller_hosts_count 1.0\n");
        assert_eq!(
            store.view().family_or_undecided("pravega_controller_segments_count").streams(Some("test"), Some("s")).next().map(|s| s.mark),
            Some(4.0)
        );
        // Deleted and created again: its first scale counts 1.
        store.forget_marks("test", "s");
        scrape(&store, "a", 3, &replica("s", 2, 1, 0));
        assert_eq!(judged(&store, "s"), Some((2.0, Verdict::Current)), "not held below the deleted stream's mark");
    }

    #[test]
    fn activity_counters_are_summed_over_replicas_and_state_follows_the_mark() {
        let store = Store::new(Duration::from_secs(30));
        let created = |n: u32| format!("pravega_controller_transactions_created_total{{scope=\"test\",stream=\"s\"}} {n}\n");
        scrape(&store, "a", 0, &(replica("s", 2, 1, 0) + &created(5)));
        scrape(&store, "b", 0, &(replica("s", 4, 3, 0) + &created(7)));
        scrape(&store, "c", 0, &replica("other", 1, 0, 0));
        let view = store.view();
        let value = |family: &str| view.family(family).unwrap().narrowed(Some("test"), Some("s")).map(|s| s.value).collect::<Vec<_>>();
        assert_eq!(value("pravega_controller_transactions_created_total"), [12.0], "each replica counts what it handled");
        assert_eq!(value("pravega_controller_segments_count"), [4.0], "the replica at the mark");
    }

    #[test]
    fn marks_of_streams_no_replica_lists_are_bounded_in_count_oldest_dropped_first() {
        let store = Store::new(Duration::from_secs(30));
        let names = |round: usize, n: usize| -> String { (0..n).map(|i| replica(&format!("r{round}-{i}"), 1, 1, 0)).collect() };
        let rounds = MAX_UNLISTED_MARKS / 20_000 + 2;
        for round in 0..rounds {
            scrape(&store, "a", round as u64, &names(round, 20_000));
        }
        let view = store.view();
        assert_eq!(view.narrowed_rows(None, None), MAX_UNLISTED_MARKS + 20_000, "the bound plus the streams listed now");
        assert_eq!(store.dropped_marks(), (rounds as u64 - 1) * 20_000 - MAX_UNLISTED_MARKS as u64);
        let row = |stream: &str| view.family_or_undecided("pravega_controller_segments_count").streams(Some("test"), Some(stream)).count();
        assert_eq!(row(&format!("r{}-0", rounds - 2)), 1, "the most recently listed kept");
        assert_eq!(row("r0-0"), 0, "the oldest dropped");
    }

    #[test]
    fn a_target_that_would_take_the_store_over_its_budget_fails_and_the_others_stay() {
        let budget = Budget { max_series: 1_000, max_streams: 3 };
        let store = Store::new(Duration::from_secs(30)).with_budget(budget);
        scrape(&store, "a", 0, &(replica("s1", 3, 0, 0) + &replica("s2", 4, 0, 0)));
        let mut builder = store.builder("b");
        Scanner::scan_all(|_: &str| true, (replica("s1", 3, 0, 0) + &replica("s3", 5, 0, 0)).as_bytes(), |s| builder.push(s));
        assert_eq!(builder.exceeded(), Some(LimitExceeded::TotalStreams(3)));
        assert_eq!(builder.exceeded().map(|e| e.reason()), Some("over_budget"));
        assert_eq!(segments(&store, "s2"), Some(4.0), "the other target's data stays");
        drop(builder);
        // A target's own previous data does not count against it.
        scrape(&store, "a", 1, &(replica("s1", 3, 0, 0) + &replica("s2", 4, 0, 0) + &replica("s4", 6, 0, 0)));
        assert_eq!(segments(&store, "s4"), Some(6.0));
    }

    #[test]
    fn targets_scraped_at_once_cannot_together_go_over_the_budget() {
        let store = Store::new(Duration::from_secs(30)).with_budget(Budget { max_series: 1_000, max_streams: 3 });
        let build = |target: &str, streams: &[&str]| {
            let mut builder = store.builder(target);
            let text: String = streams.iter().map(|s| replica(s, 1, 0, 0)).collect();
            Scanner::scan_all(|_: &str| true, text.as_bytes(), |s| builder.push(s));
            builder
        };
        let a = build("a", &["s1", "s2"]);
        let b = build("b", &["s3", "s4"]);
        assert_eq!((a.exceeded(), b.exceeded()), (None, Some(LimitExceeded::TotalStreams(3))));
        drop(b);
        store.publish("a", a.finish(), at(0)).unwrap();
        assert_eq!(build("b", &["s3"]).exceeded(), None, "a failed build returns its room");
        assert_eq!(build("a", &["s1", "s2", "s5"]).exceeded(), None, "a target's own published data is its room");
    }

    #[test]
    fn a_snapshot_built_while_another_target_grew_is_refused_at_publishing() {
        let store = Store::new(Duration::from_secs(30)).with_budget(Budget { max_series: 7, max_streams: 100 });
        let mut late = store.builder("b");
        Scanner::scan_all(|_: &str| true, replica("s1", 3, 0, 0).as_bytes(), |s| late.push(s));
        assert_eq!(late.exceeded(), None);
        // Built, it no longer holds room: another target takes it first.
        let late = late.finish();
        scrape(&store, "a", 0, &(replica("s2", 4, 0, 0) + &replica("s3", 4, 0, 0)));
        assert_eq!(store.publish("b", late, at(1)), Err(LimitExceeded::TotalSeries(7)));
        assert_eq!(segments(&store, "s1"), None);
    }
}
