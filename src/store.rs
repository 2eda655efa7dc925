//! Per-target snapshots and the merged view the API serves.
//!
//! Each scrape builds a new [`TargetSnapshot`] that replaces the target's
//! previous one atomically. After every change the snapshots are merged into
//! one [`MergedView`]: per stream and family, the value of the replica that
//! has seen the most scale events of that stream (largest
//! `segment_splits + segment_merges`), ties going to the value that changed
//! most recently. Values are never summed across replicas: each replica's
//! `segments_count` is only as fresh as the last scale *it* performed.

use crate::parse::Sample;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::{watch, Notify};
use std::time::{Duration, SystemTime};

pub const SPLITS_FAMILY: &str = "pravega_controller_segment_splits";
pub const MERGES_FAMILY: &str = "pravega_controller_segment_merges";
pub const SCOPE_LABEL: &str = "scope";
pub const STREAM_LABEL: &str = "stream";

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Separates names and values in a [`LabelSet`]'s encoding. Samples whose
/// label values contain it are rejected (counted), so it is unambiguous.
const SEPARATOR: char = '\0';

/// The label pairs of one series, sorted by name, in one allocation:
/// `name\0value\0name\0value`. Shared by every family of a stream and by the
/// merged view, so 10,000 streams cost about 10,000 small strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet(Arc<str>);

impl LabelSet {
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.0.split(SEPARATOR);
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?))).filter(|(name, _)| !name.is_empty())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn scope_and_stream(&self) -> (&str, &str) {
        (self.get(SCOPE_LABEL).unwrap_or(""), self.get(STREAM_LABEL).unwrap_or(""))
    }
}

impl Borrow<str> for LabelSet {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.pairs()).finish()
    }
}

/// Index of a metric family name in the store's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyId(u32);

/// One family's value in one target's snapshot.
#[derive(Debug, Clone, Copy)]
struct FamilyValue {
    family: FamilyId,
    value: f64,
    /// When this target first reported the current value.
    changed_at: SystemTime,
}

/// Everything one scrape of one controller replica reported, per stream.
#[derive(Debug)]
pub struct TargetSnapshot {
    scraped_at: SystemTime,
    /// In the order the exposition first listed them.
    streams: Vec<StreamEntry>,
    /// Position of each stream in `streams`; shared with the previous
    /// snapshot while the controller lists the same streams in the same order.
    index: Arc<FastMap<LabelSet, u32>>,
}

#[derive(Debug)]
struct StreamEntry {
    labels: LabelSet,
    values: Vec<FamilyValue>,
}

impl TargetSnapshot {
    pub fn scraped_at(&self) -> SystemTime {
        self.scraped_at
    }

    /// Number of series (stream x family) in the snapshot.
    pub fn series_count(&self) -> usize {
        self.streams.iter().map(|s| s.values.len()).sum()
    }

    /// The stream at `slot` if it has these labels: the cheap check that
    /// replaces a hash lookup when streams come in their usual order.
    fn at(&self, slot: usize, labels: &str) -> Option<&StreamEntry> {
        self.streams.get(slot).filter(|s| &*s.labels.0 == labels)
    }
}

/// Registry of family names, shared by all targets.
#[derive(Default)]
struct Families {
    names: RwLock<Vec<Arc<str>>>,
}

impl Families {
    fn id(&self, name: &str) -> FamilyId {
        let position = |names: &[Arc<str>]| names.iter().position(|n| &**n == name);
        if let Some(i) = position(&self.names.read().unwrap_or_else(PoisonError::into_inner)) {
            return FamilyId(i as u32);
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        let i = position(&names).unwrap_or_else(|| {
            names.push(Arc::from(name));
            names.len() - 1
        });
        FamilyId(i as u32)
    }

    fn snapshot(&self) -> Vec<Arc<str>> {
        self.names.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Builds a target's next snapshot from scanned samples, reusing the label
/// sets of its previous snapshot so a steady-state scrape allocates little.
///
/// Controllers list each family's streams in the same order, family after
/// family and scrape after scrape, so the builder first guesses that a
/// sample belongs to the stream after the previous sample's (one string
/// comparison) and only hashes when the guess is wrong.
pub struct SnapshotBuilder {
    families: Arc<Families>,
    previous: Option<Arc<TargetSnapshot>>,
    streams: Vec<StreamEntry>,
    /// For each of `streams`, its position in the previous snapshot.
    previous_slots: Vec<Option<u32>>,
    /// Built on the first wrong guess; then kept up to date.
    index: Option<FastMap<LabelSet, u32>>,
    /// Every stream so far sits where it sat in the previous snapshot.
    same_order: bool,
    /// Slot of the previous sample of the current family.
    last_slot: Option<usize>,
    scraped_at: SystemTime,
    last_family: Option<(String, FamilyId)>,
    key: String,
    order: Vec<usize>,
    rejected: u64,
}

impl SnapshotBuilder {
    /// Adds one sample; samples without `scope` and `stream` labels are not
    /// per-stream and are left out, as are NaN and infinite values.
    pub fn push(&mut self, sample: &Sample<'_, '_>) {
        if !sample.value.is_finite() {
            return;
        }
        let labels = sample.labels;
        if !labels.iter().any(|l| l.name == SCOPE_LABEL) || !labels.iter().any(|l| l.name == STREAM_LABEL) {
            return;
        }
        if !self.encode_key(sample) {
            self.rejected += 1;
            return;
        }
        let family = match &self.last_family {
            Some((name, id)) if name == sample.name => *id,
            _ => {
                let id = self.families.id(sample.name);
                self.last_family = Some((sample.name.to_owned(), id));
                self.last_slot = None;
                id
            }
        };
        let guess = self.last_slot.map_or(0, |s| s + 1);
        let slot = match self.streams.get(guess) {
            Some(s) if *s.labels.0 == *self.key => guess,
            _ => self.find(),
        };
        self.last_slot = Some(slot);
        let entry = &mut self.streams[slot];
        if entry.values.iter().any(|v| v.family == family) {
            self.rejected += 1; // duplicate series within one exposition
            return;
        }
        let previous = self.previous_slots[slot].and_then(|p| self.previous.as_ref().map(|s| &s.streams[p as usize]));
        let unchanged_since = previous
            .and_then(|old| old.values.iter().find(|v| v.family == family))
            .filter(|old| old.value.to_bits() == sample.value.to_bits())
            .map(|old| old.changed_at);
        entry.values.push(FamilyValue { family, value: sample.value, changed_at: unchanged_since.unwrap_or(self.scraped_at) });
    }

    /// The slot of the stream in `self.key`, added if new.
    fn find(&mut self) -> usize {
        let streams = &self.streams;
        let index = self.index.get_or_insert_with(|| {
            streams.iter().enumerate().map(|(i, s)| (s.labels.clone(), i as u32)).collect()
        });
        if let Some(&slot) = index.get(self.key.as_str()) {
            return slot as usize;
        }
        let slot = self.streams.len();
        let previous = self.previous.as_ref().and_then(|p| {
            // Again, the stream after the last one added is the best guess.
            let guess = self.previous_slots.last().copied().flatten().map_or(0, |s| s as usize + 1);
            match p.at(guess, &self.key) {
                Some(entry) => Some((guess, entry)),
                None => p.index.get(self.key.as_str()).map(|&i| (i as usize, &p.streams[i as usize])),
            }
        });
        self.same_order &= previous.is_some_and(|(p, _)| p == slot);
        let (labels, capacity) = match previous {
            Some((_, entry)) => (entry.labels.clone(), entry.values.len()),
            None => (LabelSet(Arc::from(self.key.as_str())), 4),
        };
        if let Some(index) = &mut self.index {
            index.insert(labels.clone(), slot as u32);
        }
        self.streams.push(StreamEntry { labels, values: Vec::with_capacity(capacity) });
        self.previous_slots.push(previous.map(|(p, _)| p as u32));
        slot
    }

    /// Writes the canonical encoding of the sample's labels into `self.key`;
    /// false if a value holds the separator or a name repeats.
    fn encode_key(&mut self, sample: &Sample<'_, '_>) -> bool {
        let labels = sample.labels;
        self.order.clear();
        self.order.extend(0..labels.len());
        if !labels.windows(2).all(|w| w[0].name < w[1].name) {
            self.order.sort_by(|a, b| labels[*a].name.cmp(labels[*b].name));
            if self.order.windows(2).any(|w| labels[w[0]].name == labels[w[1]].name) {
                return false;
            }
        }
        self.key.clear();
        for (n, &i) in self.order.iter().enumerate() {
            let label = &labels[i];
            if label.value.contains(SEPARATOR) {
                return false;
            }
            if n > 0 {
                self.key.push(SEPARATOR);
            }
            self.key.push_str(label.name);
            self.key.push(SEPARATOR);
            self.key.push_str(&label.value);
        }
        true
    }

    /// Samples dropped because their labels cannot be stored faithfully.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    pub fn finish(self) -> TargetSnapshot {
        let unchanged = self.same_order && self.previous.as_ref().is_some_and(|p| p.streams.len() == self.streams.len());
        let index = match (unchanged, self.previous, self.index) {
            (true, Some(previous), _) => previous.index.clone(),
            (_, _, Some(index)) => Arc::new(index),
            _ => Arc::new(self.streams.iter().enumerate().map(|(i, s)| (s.labels.clone(), i as u32)).collect()),
        };
        TargetSnapshot { scraped_at: self.scraped_at, streams: self.streams, index }
    }
}

/// One served value: a stream's family value after merging replicas.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub labels: &'a LabelSet,
    pub value: f64,
    /// When the replica this value came from was scraped.
    pub scraped_at: SystemTime,
}

#[derive(Debug, Clone, Copy)]
struct MergedValue {
    value: f64,
    family: FamilyId,
    /// Index of the source target in [`MergedView::scraped_at`].
    target: u32,
}

#[derive(Debug)]
struct MergedStream {
    labels: LabelSet,
    values: Vec<MergedValue>,
}

/// What the API serves: every live target's snapshot, merged; one row per
/// stream, sorted by (scope, stream).
#[derive(Debug, Default)]
pub struct MergedView {
    streams: Vec<MergedStream>,
    scraped_at: Vec<SystemTime>,
    /// Families with at least one series, by name.
    families: BTreeMap<Arc<str>, FamilyId>,
}

/// One family's series in a [`MergedView`].
#[derive(Clone, Copy)]
pub struct Family<'a> {
    view: &'a MergedView,
    id: FamilyId,
}

impl MergedView {
    pub fn family(&self, name: &str) -> Option<Family<'_>> {
        self.families.get(name).map(|&id| Family { view: self, id })
    }

    pub fn family_names(&self) -> impl Iterator<Item = &str> {
        self.families.keys().map(|name| &**name)
    }
}

impl<'a> Family<'a> {
    /// The series whose scope and/or stream equal the given values (all
    /// series for `None`), found by binary search.
    pub fn narrowed(self, scope: Option<&str>, stream: Option<&str>) -> impl Iterator<Item = Series<'a>> {
        let streams = &self.view.streams;
        let range = match scope {
            None => &streams[..],
            Some(scope) => {
                fn key(s: &MergedStream) -> (&str, &str) {
                    s.labels.scope_and_stream()
                }
                let start = streams.partition_point(|s| match stream {
                    Some(stream) => key(s) < (scope, stream),
                    None => key(s).0 < scope,
                });
                let len = streams[start..].partition_point(|s| match stream {
                    Some(stream) => key(s) == (scope, stream),
                    None => key(s).0 == scope,
                });
                &streams[start..start + len]
            }
        };
        range.iter().filter_map(move |s| {
            let v = s.values.iter().find(|v| v.family == self.id)?;
            Some(Series { labels: &s.labels, value: v.value, scraped_at: self.view.scraped_at[v.target as usize] })
        })
    }
}

/// Shared state between the scrapers (writers) and the API (readers).
pub struct Store {
    families: Arc<Families>,
    max_age: Duration,
    targets: Mutex<Targets>,
    /// Serialises merges so an older one never replaces a newer view.
    merging: Mutex<()>,
    merged: RwLock<Arc<MergedView>>,
    /// The [`Targets::generation`] the current view was merged from.
    merged_generation: watch::Sender<u64>,
    merge_wanted: Notify,
}

#[derive(Default)]
struct Targets {
    snapshots: BTreeMap<Arc<str>, Arc<TargetSnapshot>>,
    /// Counts changes that a merge has to take in.
    generation: u64,
}

impl Store {
    /// `max_age`: data scraped longer ago than this is never served.
    pub fn new(max_age: Duration) -> Self {
        Store {
            families: Arc::default(),
            max_age,
            targets: Mutex::default(),
            merging: Mutex::default(),
            merged: RwLock::default(),
            merged_generation: watch::Sender::new(0),
            merge_wanted: Notify::new(),
        }
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Starts the next snapshot of `target`, scraped at `scraped_at`.
    pub fn builder(&self, target: &str, scraped_at: SystemTime) -> SnapshotBuilder {
        let previous = self.lock_targets().snapshots.get(target).cloned();
        let capacity = previous.as_ref().map_or(0, |p| p.streams.len());
        SnapshotBuilder {
            families: self.families.clone(),
            previous,
            streams: Vec::with_capacity(capacity),
            previous_slots: Vec::with_capacity(capacity),
            index: None,
            same_order: true,
            last_slot: None,
            scraped_at,
            last_family: None,
            key: String::new(),
            order: Vec::new(),
            rejected: 0,
        }
    }

    /// Replaces `target`'s snapshot; returns the generation a merge must
    /// reach to include it (see [`Store::merged`]).
    pub fn publish(&self, target: &str, snapshot: TargetSnapshot) -> u64 {
        self.change(|t| {
            t.snapshots.insert(Arc::from(target), Arc::new(snapshot));
        })
    }

    /// Forgets a target (its pod is gone).
    pub fn remove(&self, target: &str) -> u64 {
        self.change(|t| {
            t.snapshots.remove(target);
        })
    }

    /// Asks for a merge without a new snapshot, so that snapshots past the
    /// max age drop out while their targets keep failing.
    pub fn expire(&self) -> u64 {
        self.change(|_| {})
    }

    fn change(&self, apply: impl FnOnce(&mut Targets)) -> u64 {
        let generation = {
            let mut targets = self.lock_targets();
            apply(&mut targets);
            targets.generation += 1;
            targets.generation
        };
        self.merge_wanted.notify_one();
        generation
    }

    /// Waits until the served view includes the change of `generation`.
    pub async fn merged(&self, generation: u64) {
        let mut merged = self.merged_generation.subscribe();
        let _ = merged.wait_for(|g| *g >= generation).await;
    }

    /// Merges whenever asked to, coalescing the changes of several scrapes
    /// that land while a merge runs into the next one.
    pub async fn keep_merged(self: Arc<Self>) {
        loop {
            self.merge_wanted.notified().await;
            let store = self.clone();
            // CPU work proportional to the number of streams.
            let _ = tokio::task::spawn_blocking(move || store.remerge(SystemTime::now())).await;
        }
    }

    /// Merges the current snapshots into the served view now.
    pub fn remerge(&self, now: SystemTime) {
        let _merging = self.merging.lock().unwrap_or_else(PoisonError::into_inner);
        let (snapshots, generation) = {
            let targets = self.lock_targets();
            let live: Vec<Arc<TargetSnapshot>> = targets
                .snapshots
                .values()
                .filter(|t| now.duration_since(t.scraped_at).unwrap_or_default() <= self.max_age)
                .cloned()
                .collect();
            (live, targets.generation)
        };
        let view = merge(&snapshots, &self.families.snapshot());
        *self.merged.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
        self.merged_generation.send_if_modified(|g| {
            let newer = generation > *g;
            *g = (*g).max(generation);
            newer
        });
    }

    pub fn view(&self) -> Arc<MergedView> {
        self.merged.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Series count per target, for the adapter's own metrics.
    pub fn series_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.lock_targets().snapshots.iter().map(|(t, s)| (t.clone(), s.series_count())).collect()
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A replica's claim to know a stream's latest state: the number of scale
/// events it has seen (`None` if it reports neither counter).
fn scale_events(values: &[FamilyValue], splits: Option<FamilyId>, merges: Option<FamilyId>) -> Option<f64> {
    let get = |id: Option<FamilyId>| id.and_then(|id| values.iter().find(|v| v.family == id)).map(|v| v.value);
    match (get(splits), get(merges)) {
        (None, None) => None,
        (s, m) => Some(s.unwrap_or(0.0) + m.unwrap_or(0.0)),
    }
}

/// A stream of `target` with a guess where it sits: replicas and scrapes
/// mostly list streams in the same order, so the guess saves a hash lookup.
fn locate<'t>(target: &'t TargetSnapshot, guess: usize, labels: &LabelSet) -> Option<(usize, &'t StreamEntry)> {
    match target.at(guess, &labels.0) {
        Some(entry) => Some((guess, entry)),
        None => target.index.get(labels).map(|&i| (i as usize, &target.streams[i as usize])),
    }
}

fn merge(targets: &[Arc<TargetSnapshot>], names: &[Arc<str>]) -> MergedView {
    let find = |name: &str| names.iter().position(|n| &**n == name).map(|i| FamilyId(i as u32));
    let (splits, merges) = (find(SPLITS_FAMILY), find(MERGES_FAMILY));
    // Every stream once, sorted by (scope, stream) for binary search.
    let mut order: Vec<((&str, &str), &LabelSet)> = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        for (slot, entry) in target.streams.iter().enumerate() {
            let labels = &entry.labels;
            if !targets[..i].iter().any(|earlier| locate(earlier, slot, labels).is_some()) {
                order.push((labels.scope_and_stream(), labels));
            }
        }
    }
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));

    let mut present = vec![false; names.len()];
    let mut candidates: Vec<(u32, &[FamilyValue], Option<f64>)> = Vec::with_capacity(targets.len());
    let mut guesses = vec![0usize; targets.len()];
    let streams = order
        .into_iter()
        .map(|(_, labels)| {
            candidates.clear();
            candidates.extend(targets.iter().enumerate().filter_map(|(i, t)| {
                let (slot, entry) = locate(t, guesses[i], labels)?;
                guesses[i] = slot + 1;
                Some((i as u32, entry.values.as_slice(), scale_events(&entry.values, splits, merges)))
            }));
            let mut values: Vec<MergedValue> = Vec::with_capacity(candidates[0].1.len());
            for (_, family_values, _) in &candidates {
                for family in family_values.iter().map(|v| v.family) {
                    if values.iter().any(|v| v.family == family) {
                        continue;
                    }
                    let best = candidates
                        .iter()
                        .filter_map(|(t, vs, rank)| Some((*t, vs.iter().find(|v| v.family == family)?, *rank)))
                        .max_by(|a, b| {
                            let rank = a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal);
                            rank.then(a.1.changed_at.cmp(&b.1.changed_at))
                        });
                    if let Some((target, chosen, _)) = best {
                        present[family.0 as usize] = true;
                        values.push(MergedValue { value: chosen.value, family, target });
                    }
                }
            }
            MergedStream { labels: labels.clone(), values }
        })
        .collect();
    let families = names
        .iter()
        .enumerate()
        .filter(|(i, _)| present[*i])
        .map(|(i, name)| (name.clone(), FamilyId(i as u32)))
        .collect();
    MergedView { streams, scraped_at: targets.iter().map(|t| t.scraped_at).collect(), families }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Scanner;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    /// Scrapes `text` as `target` at time `secs`.
    fn scrape(store: &Store, target: &str, secs: u64, text: &str) {
        let mut builder = store.builder(target, at(secs));
        Scanner::scan_all(|n: &str| n.starts_with("pravega_controller_"), text.as_bytes(), |s| builder.push(s));
        store.publish(target, builder.finish());
        store.remerge(at(secs));
    }

    /// Exposition of one stream as a replica reports it.
    fn replica(stream: &str, segments: u32, splits: u32, merges: u32) -> String {
        format!(
            "pravega_controller_segments_count{{scope=\"test\",stream=\"{stream}\",}} {segments}.0\n\
             pravega_controller_segment_splits{{scope=\"test\",stream=\"{stream}\",}} {splits}.0\n\
             pravega_controller_segment_merges{{scope=\"test\",stream=\"{stream}\",}} {merges}.0\n"
        )
    }

    fn segments(store: &Store, stream: &str) -> Option<f64> {
        let view = store.view();
        let series: Vec<_> = view.family("pravega_controller_segments_count")?.narrowed(Some("test"), Some(stream)).collect();
        assert!(series.len() <= 1);
        series.first().map(|s| s.value)
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
    fn restarted_replica_series_gone_falls_back_to_the_other() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 3, 2, 0));
        scrape(&store, "b", 0, &replica("s", 5, 4, 0));
        assert_eq!(segments(&store, "s"), Some(5.0));
        // b restarts: its exposition no longer has the stream.
        scrape(&store, "b", 1, "pravega_controller_hosts_count 3.0\n");
        assert_eq!(segments(&store, "s"), Some(3.0));
        // After its next scale b reports the stream again and wins.
        scrape(&store, "b", 2, &replica("s", 6, 5, 0));
        assert_eq!(segments(&store, "s"), Some(6.0));
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
        scrape(&store, "b", 20, &replica("s", 3, 1, 1));
        assert_eq!(segments(&store, "s"), Some(5.0));
        store.expire();
        store.remerge(at(31));
        assert_eq!(segments(&store, "s"), Some(3.0));
        store.remerge(at(51));
        assert_eq!(segments(&store, "s"), None);
    }

    #[test]
    fn removed_target_no_longer_counts() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 9, 9));
        scrape(&store, "b", 0, &replica("s", 3, 1, 1));
        store.remove("a");
        store.remerge(at(1));
        assert_eq!(segments(&store, "s"), Some(3.0));
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
        let mut builder = store.builder("a", at(0));
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
            let mut v: Vec<_> = view
                .family(family)
                .unwrap()
                .narrowed(None, None)
                .map(|s| (s.labels.get("stream").unwrap().to_owned(), s.value))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(values("pravega_controller_segments_count"), [("a".into(), 2.0), ("c".into(), 1.0), ("d".into(), 3.0)]);
        assert_eq!(values("pravega_controller_x"), [("a".into(), 1.0), ("b".into(), 1.0)]);
        let snapshot = store.lock_targets().snapshots["r"].clone();
        let changed = |stream: &str, family: &str| {
            let id = store.families.id(family);
            let entry = snapshot.streams.iter().find(|s| s.labels.get("stream") == Some(stream)).unwrap();
            entry.values.iter().find(|v| v.family == id).unwrap().changed_at
        };
        assert_eq!(changed("c", "pravega_controller_segments_count"), at(0), "unchanged value keeps its time");
        assert_eq!(changed("a", "pravega_controller_segments_count"), at(5));
        assert_eq!(changed("b", "pravega_controller_x"), at(0));
        assert_eq!(snapshot.index.len(), 4);
        for (i, entry) in snapshot.streams.iter().enumerate() {
            assert_eq!(snapshot.index[&entry.labels], i as u32);
        }
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
        scrape(&store, "t", 0, &text);
        let view = store.view();
        let family = view.family("pravega_controller_segments_count").unwrap();
        assert_eq!(family.narrowed(None, None).count(), 6);
        assert_eq!(family.narrowed(Some("b"), None).count(), 2);
        let one: Vec<_> = family.narrowed(Some("b"), Some("y")).collect();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].labels.get("stream"), Some("y"));
        assert_eq!(family.narrowed(Some("z"), None).count(), 0);
        assert_eq!(family.narrowed(Some("a"), Some("z")).count(), 0);
    }
}
