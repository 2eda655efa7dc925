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
use std::time::{Duration, SystemTime};

pub const SPLITS_FAMILY: &str = "pravega_controller_segment_splits";
pub const MERGES_FAMILY: &str = "pravega_controller_segment_merges";
pub const SCOPE_LABEL: &str = "scope";
pub const STREAM_LABEL: &str = "stream";

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
    streams: HashMap<LabelSet, Vec<FamilyValue>>,
}

impl TargetSnapshot {
    pub fn scraped_at(&self) -> SystemTime {
        self.scraped_at
    }

    /// Number of series (stream x family) in the snapshot.
    pub fn series_count(&self) -> usize {
        self.streams.values().map(Vec::len).sum()
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
pub struct SnapshotBuilder {
    families: Arc<Families>,
    previous: Option<Arc<TargetSnapshot>>,
    streams: HashMap<LabelSet, Vec<FamilyValue>>,
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
                id
            }
        };
        let previous = self.previous.as_ref().and_then(|p| p.streams.get_key_value(self.key.as_str()));
        let values = match self.streams.get_mut(self.key.as_str()) {
            Some(values) => values,
            None => {
                let key = previous.map_or_else(|| LabelSet(Arc::from(self.key.as_str())), |(k, _)| k.clone());
                self.streams.entry(key).or_insert_with(|| Vec::with_capacity(previous.map_or(4, |(_, v)| v.len())))
            }
        };
        if values.iter().any(|v| v.family == family) {
            self.rejected += 1; // duplicate series within one exposition
            return;
        }
        let unchanged_since = previous
            .and_then(|(_, old)| old.iter().find(|v| v.family == family))
            .filter(|old| old.value.to_bits() == sample.value.to_bits())
            .map(|old| old.changed_at);
        values.push(FamilyValue { family, value: sample.value, changed_at: unchanged_since.unwrap_or(self.scraped_at) });
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
        TargetSnapshot { scraped_at: self.scraped_at, streams: self.streams }
    }
}

/// One served value: a stream's family value after merging replicas.
#[derive(Debug, Clone)]
pub struct MergedSeries {
    pub labels: LabelSet,
    pub value: f64,
    /// When the replica this value came from was scraped.
    pub scraped_at: SystemTime,
}

/// All merged series of one family, sorted by (scope, stream).
#[derive(Debug, Default)]
pub struct FamilySeries {
    series: Vec<MergedSeries>,
}

impl FamilySeries {
    /// The series whose scope and/or stream equal the given values (all
    /// series for `None`), found by binary search.
    pub fn narrowed(&self, scope: Option<&str>, stream: Option<&str>) -> &[MergedSeries] {
        let Some(scope) = scope else { return &self.series };
        fn key(s: &MergedSeries) -> (&str, &str) {
            s.labels.scope_and_stream()
        }
        let start = self.series.partition_point(|s| match stream {
            Some(stream) => key(s) < (scope, stream),
            None => key(s).0 < scope,
        });
        let len = self.series[start..].partition_point(|s| match stream {
            Some(stream) => key(s) == (scope, stream),
            None => key(s).0 == scope,
        });
        &self.series[start..start + len]
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// What the API serves: every live target's snapshot, merged.
#[derive(Debug, Default)]
pub struct MergedView {
    families: BTreeMap<Arc<str>, FamilySeries>,
}

impl MergedView {
    pub fn family(&self, name: &str) -> Option<&FamilySeries> {
        self.families.get(name)
    }

    pub fn families(&self) -> impl Iterator<Item = (&str, &FamilySeries)> {
        self.families.iter().map(|(name, series)| (&**name, series))
    }
}

/// Shared state between the scrapers (writers) and the API (readers).
pub struct Store {
    families: Arc<Families>,
    max_age: Duration,
    targets: Mutex<BTreeMap<Arc<str>, Arc<TargetSnapshot>>>,
    merged: RwLock<Arc<MergedView>>,
}

impl Store {
    /// `max_age`: data scraped longer ago than this is never served.
    pub fn new(max_age: Duration) -> Self {
        Store {
            families: Arc::default(),
            max_age,
            targets: Mutex::default(),
            merged: RwLock::default(),
        }
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Starts the next snapshot of `target`, scraped at `scraped_at`.
    pub fn builder(&self, target: &str, scraped_at: SystemTime) -> SnapshotBuilder {
        let previous = self.lock_targets().get(target).cloned();
        let capacity = previous.as_ref().map_or(0, |p| p.streams.len());
        SnapshotBuilder {
            families: self.families.clone(),
            previous,
            streams: HashMap::with_capacity(capacity),
            scraped_at,
            last_family: None,
            key: String::new(),
            order: Vec::new(),
            rejected: 0,
        }
    }

    /// Replaces `target`'s snapshot and re-merges.
    pub fn publish(&self, target: &str, snapshot: TargetSnapshot, now: SystemTime) {
        let mut targets = self.lock_targets();
        targets.insert(Arc::from(target), Arc::new(snapshot));
        self.remerge(&targets, now);
    }

    /// Forgets a target (its pod is gone) and re-merges.
    pub fn remove(&self, target: &str, now: SystemTime) {
        let mut targets = self.lock_targets();
        if targets.remove(target).is_some() {
            self.remerge(&targets, now);
        }
    }

    /// Re-merges so that snapshots past the max age drop out even while
    /// their targets keep failing.
    pub fn expire(&self, now: SystemTime) {
        let targets = self.lock_targets();
        self.remerge(&targets, now);
    }

    pub fn view(&self) -> Arc<MergedView> {
        self.merged.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Series count per target, for the adapter's own metrics.
    pub fn series_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.lock_targets().iter().map(|(t, s)| (t.clone(), s.series_count())).collect()
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, Arc<TargetSnapshot>>> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remerge(&self, targets: &BTreeMap<Arc<str>, Arc<TargetSnapshot>>, now: SystemTime) {
        let live: Vec<&TargetSnapshot> = targets
            .values()
            .map(|t| &**t)
            .filter(|t| now.duration_since(t.scraped_at).unwrap_or_default() <= self.max_age)
            .collect();
        let view = merge(&live, &self.families.snapshot());
        *self.merged.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
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

fn merge(targets: &[&TargetSnapshot], names: &[Arc<str>]) -> MergedView {
    let find = |name: &str| names.iter().position(|n| &**n == name).map(|i| FamilyId(i as u32));
    let (splits, merges) = (find(SPLITS_FAMILY), find(MERGES_FAMILY));
    let mut by_family: BTreeMap<FamilyId, Vec<MergedSeries>> = BTreeMap::new();
    let mut candidates = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        for (labels, values) in &target.streams {
            // Each stream is merged once, by the first target that has it.
            if targets[..i].iter().any(|earlier| earlier.streams.contains_key(labels)) {
                continue;
            }
            candidates.clear();
            candidates.push((*target, values.as_slice()));
            candidates.extend(targets[i + 1..].iter().filter_map(|t| Some((*t, t.streams.get(labels)?.as_slice()))));
            let ranked: Vec<_> = candidates.iter().map(|(t, v)| (*t, *v, scale_events(v, splits, merges))).collect();
            for family_value in values.iter().chain(candidates[1..].iter().flat_map(|(_, v)| v.iter())) {
                let family = family_value.family;
                let series = by_family.entry(family).or_default();
                if series.last().is_some_and(|s| s.labels == *labels) {
                    continue; // this family of this stream is already merged
                }
                let best = ranked
                    .iter()
                    .filter_map(|(t, v, rank)| Some((*t, v.iter().find(|fv| fv.family == family)?, *rank)))
                    .max_by(|a, b| {
                        let rank = a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal);
                        rank.then(a.1.changed_at.cmp(&b.1.changed_at))
                    });
                if let Some((target, chosen, _)) = best {
                    series.push(MergedSeries { labels: labels.clone(), value: chosen.value, scraped_at: target.scraped_at });
                }
            }
        }
    }
    let families = by_family
        .into_iter()
        .map(|(id, mut series)| {
            series.sort_by(|a, b| {
                a.labels.scope_and_stream().cmp(&b.labels.scope_and_stream()).then_with(|| a.labels.cmp(&b.labels))
            });
            (names[id.0 as usize].clone(), FamilySeries { series })
        })
        .collect();
    MergedView { families }
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
        store.publish(target, builder.finish(), at(secs));
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
        let series = view.family("pravega_controller_segments_count")?.narrowed(Some("test"), Some(stream));
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
        assert_eq!(view.family(SPLITS_FAMILY).unwrap().len(), 1);
    }

    #[test]
    fn data_older_than_max_age_is_not_merged() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 9, 9));
        scrape(&store, "b", 20, &replica("s", 3, 1, 1));
        assert_eq!(segments(&store, "s"), Some(5.0));
        store.expire(at(31));
        assert_eq!(segments(&store, "s"), Some(3.0));
        store.expire(at(51));
        assert_eq!(segments(&store, "s"), None);
    }

    #[test]
    fn removed_target_no_longer_counts() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, &replica("s", 5, 9, 9));
        scrape(&store, "b", 0, &replica("s", 3, 1, 1));
        store.remove("a", at(1));
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
        let names: Vec<_> = view.families().map(|(n, s)| (n.to_owned(), s.len())).collect();
        assert_eq!(names, vec![("pravega_controller_segments_count".to_owned(), 1)]);
    }

    #[test]
    fn label_order_does_not_create_a_second_stream() {
        let store = Store::new(Duration::from_secs(30));
        scrape(&store, "a", 0, "pravega_controller_segments_count{stream=\"s\",scope=\"test\"} 2\n");
        scrape(&store, "b", 0, "pravega_controller_segments_count{scope=\"test\",stream=\"s\"} 2\n");
        assert_eq!(store.view().family("pravega_controller_segments_count").unwrap().len(), 1);
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
        assert_eq!(family.narrowed(None, None).len(), 6);
        assert_eq!(family.narrowed(Some("b"), None).len(), 2);
        let one = family.narrowed(Some("b"), Some("y"));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].labels.get("stream"), Some("y"));
        assert!(family.narrowed(Some("z"), None).is_empty());
        assert!(family.narrowed(Some("a"), Some("z")).is_empty());
    }
}
