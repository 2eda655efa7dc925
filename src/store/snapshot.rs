//! One target's scraped data: streams (label sets) and one column of value
//! cells per family, built sample by sample from the scanner.

use crate::parse::Sample;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

pub const SCOPE_LABEL: &str = "scope";
pub const STREAM_LABEL: &str = "stream";

pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A snapshot's streams by label set, to their slots.
pub(super) type StreamIndex = FastMap<LabelSet, u32>;

/// Separates names and values in a [`LabelSet`]'s encoding. Samples whose
/// label values contain it are rejected (counted), so it is unambiguous.
const SEPARATOR: char = '\0';

/// The label pairs of one series, sorted by name, in one allocation:
/// `name\0value\0name\0value`. Shared by every family of a stream, by
/// successive snapshots and by the merged view.
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

    pub(super) fn scope_and_stream(&self) -> (&str, &str) {
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
pub struct FamilyId(pub(super) u32);

/// Registry of family names, shared by all targets.
#[derive(Default)]
pub(super) struct Families {
    names: RwLock<Vec<Arc<str>>>,
}

impl Families {
    pub(super) fn id(&self, name: &str) -> FamilyId {
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

    pub(super) fn names(&self) -> Vec<Arc<str>> {
        self.names.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Every label set that snapshots hold, so that targets listing the same
/// stream share one allocation (replicas list the same streams).
#[derive(Default)]
pub(super) struct LabelSets {
    sets: Mutex<HashSet<LabelSet, foldhash::fast::RandomState>>,
}

impl LabelSets {
    fn get_or_insert(&self, key: &str) -> LabelSet {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = sets.get(key) {
            return set.clone();
        }
        let set = LabelSet(Arc::from(key));
        sets.insert(set.clone());
        set
    }

    /// Drops the sets no snapshot or view holds any more. Only this registry
    /// hands out new references, under its lock, so a set held by nothing
    /// else cannot gain a holder meanwhile.
    pub(super) fn forget_unused(&self) {
        self.sets.lock().unwrap_or_else(PoisonError::into_inner).retain(|set| Arc::strong_count(&set.0) > 1);
    }
}

/// Milliseconds since the Unix epoch: compact, and comparable across targets.
pub(super) fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One family's value for one stream. Served values are finite, so NaN
/// marks a stream the family has no sample for. Packed into 12 bytes
/// instead of 16: cells are most of a snapshot.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub(super) struct Cell {
    pub(super) value: f64,
    /// The scrape in which this target first reported the current value;
    /// the store numbers scrapes across targets in the order their snapshots
    /// start.
    pub(super) changed_in: u32,
}

const _: () = assert!(std::mem::size_of::<Cell>() == 12);

impl Cell {
    const EMPTY: Cell = Cell { value: f64::NAN, changed_in: 0 };

    pub(super) fn is_empty(&self) -> bool {
        self.value.is_nan()
    }
}

/// One family's cells, indexed like [`TargetSnapshot::streams`].
#[derive(Debug)]
pub(super) struct Column {
    pub(super) family: FamilyId,
    pub(super) cells: Vec<Cell>,
}

/// Everything one scrape of one controller replica reported.
#[derive(Debug)]
pub struct TargetSnapshot {
    /// In the order the exposition first listed them.
    pub(super) streams: Vec<LabelSet>,
    /// Position of each stream in `streams`; shared with the previous
    /// snapshot while the controller lists the same streams in the same order.
    pub(super) index: Arc<StreamIndex>,
    pub(super) columns: Vec<Column>,
    /// Whether anything differs from the previous snapshot.
    pub(super) changed: bool,
}

impl TargetSnapshot {
    /// Number of series (stream x family) in the snapshot.
    pub fn series_count(&self) -> usize {
        series(&self.columns)
    }

    /// The slot of `labels`, trying `guess` first: replicas and scrapes
    /// mostly list streams in the same order, so this saves a hash lookup.
    pub(super) fn locate(&self, guess: usize, labels: &str) -> Option<usize> {
        match self.streams.get(guess) {
            Some(s) if &*s.0 == labels => Some(guess),
            _ => self.index.get(labels).map(|&i| i as usize),
        }
    }

    pub(super) fn column(&self, family: FamilyId) -> Option<&[Cell]> {
        self.columns.iter().find(|c| c.family == family).map(|c| c.cells.as_slice())
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
    label_sets: Arc<LabelSets>,
    previous: Option<Arc<TargetSnapshot>>,
    /// This scrape's number: see [`Cell::changed_in`].
    scrape: u32,
    streams: Vec<LabelSet>,
    /// For each of `streams`, its slot in the previous snapshot.
    previous_slots: Vec<Option<u32>>,
    /// Built on the first wrong guess; then kept up to date.
    index: Option<StreamIndex>,
    /// Every stream so far sits where it sat in the previous snapshot.
    same_order: bool,
    columns: Vec<Column>,
    /// The family of the previous sample: its column here and in the
    /// previous snapshot, and the slot the previous sample went to.
    current: Option<Current>,
    changed_cells: usize,
    key: String,
    order: Vec<usize>,
    rejected: u64,
    /// Labels naming the replica that reports a series, not the stream:
    /// left out of the stream's label set.
    replica_labels: Arc<[String]>,
}

struct Current {
    name: String,
    column: usize,
    previous_column: Option<usize>,
    last_slot: Option<usize>,
}

impl SnapshotBuilder {
    pub(super) fn new(
        families: Arc<Families>,
        label_sets: Arc<LabelSets>,
        previous: Option<Arc<TargetSnapshot>>,
        scrape: u32,
        replica_labels: Arc<[String]>,
    ) -> Self {
        let capacity = previous.as_ref().map_or(0, |p| p.streams.len());
        SnapshotBuilder {
            families,
            label_sets,
            previous,
            scrape,
            streams: Vec::with_capacity(capacity),
            previous_slots: Vec::with_capacity(capacity),
            index: None,
            same_order: true,
            columns: Vec::new(),
            current: None,
            changed_cells: 0,
            key: String::new(),
            order: Vec::new(),
            rejected: 0,
            replica_labels,
        }
    }

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
        if self.current.as_ref().is_none_or(|c| c.name != sample.name) {
            self.switch_family(sample.name);
        }
        let Some(current) = &self.current else { return };
        let guess = current.last_slot.map_or(0, |s| s + 1);
        let slot = match self.streams.get(guess) {
            Some(s) if *s.0 == *self.key => guess,
            _ => self.find(),
        };
        let Some(current) = &mut self.current else { return };
        current.last_slot = Some(slot);
        let cells = &mut self.columns[current.column].cells;
        if cells.len() <= slot {
            cells.resize(slot + 1, Cell::EMPTY);
        }
        if !cells[slot].is_empty() {
            self.rejected += 1; // duplicate series within one exposition
            return;
        }
        let previous = match (&self.previous, current.previous_column, self.previous_slots[slot]) {
            (Some(p), Some(column), Some(previous_slot)) => Some(p.columns[column].cells[previous_slot as usize]),
            _ => None,
        };
        let changed_in = match previous {
            Some(old) if old.value.to_bits() == sample.value.to_bits() => old.changed_in,
            _ => {
                self.changed_cells += 1;
                self.scrape
            }
        };
        cells[slot] = Cell { value: sample.value, changed_in };
    }

    fn switch_family(&mut self, name: &str) {
        let family = self.families.id(name);
        let column = match self.columns.iter().position(|c| c.family == family) {
            Some(i) => i,
            None => {
                self.columns.push(Column { family, cells: Vec::with_capacity(self.streams.capacity()) });
                self.columns.len() - 1
            }
        };
        let previous_column = self.previous.as_ref().and_then(|p| p.columns.iter().position(|c| c.family == family));
        self.current = Some(Current { name: name.to_owned(), column, previous_column, last_slot: None });
    }

    /// The slot of the stream in `self.key`, added if new.
    fn find(&mut self) -> usize {
        if let Some(slot) = self.find_in_previous_order() {
            return slot;
        }
        self.same_order = false;
        let streams = &self.streams;
        let index = self.index.get_or_insert_with(|| streams.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect());
        if let Some(&slot) = index.get(self.key.as_str()) {
            return slot as usize;
        }
        let slot = self.streams.len();
        // Again, the stream after the last one added is the best guess.
        let guess = self.previous_slots.last().copied().flatten().map_or(0, |s| s as usize + 1);
        let previous = self.previous.as_ref().and_then(|p| p.locate(guess, &self.key).map(|i| (i, p.streams[i].clone())));
        let labels = previous.as_ref().map_or_else(|| self.label_sets.get_or_insert(&self.key), |(_, l)| l.clone());
        if let Some(index) = &mut self.index {
            index.insert(labels.clone(), slot as u32);
        }
        self.streams.push(labels);
        self.previous_slots.push(previous.map(|(p, _)| p as u32));
        slot
    }

    /// While every stream sits where it sat in the previous snapshot, this
    /// snapshot's streams are a prefix of the previous one's, whose index
    /// therefore answers for them: no index of its own is built (a 10,000
    /// entry hash map every scrape) unless the order changes. `None` once
    /// the order differs.
    fn find_in_previous_order(&mut self) -> Option<usize> {
        let previous = self.previous.as_ref().filter(|_| self.same_order)?;
        let next = self.streams.len();
        let slot = match previous.streams.get(next) {
            Some(s) if *s.0 == *self.key => next,
            _ => *previous.index.get(self.key.as_str())? as usize,
        };
        match slot.cmp(&next) {
            std::cmp::Ordering::Less => Some(slot),
            std::cmp::Ordering::Equal => {
                self.streams.push(previous.streams[slot].clone());
                self.previous_slots.push(Some(slot as u32));
                Some(slot)
            }
            std::cmp::Ordering::Greater => None,
        }
    }

    /// Writes the canonical encoding of the sample's labels, less the
    /// replica labels, into `self.key`; false if a value holds the
    /// separator or a name repeats.
    fn encode_key(&mut self, sample: &Sample<'_, '_>) -> bool {
        let labels = sample.labels;
        self.order.clear();
        let replica_labels = &self.replica_labels;
        self.order.extend((0..labels.len()).filter(|&i| !replica_labels.iter().any(|name| name == labels[i].name)));
        if !self.order.windows(2).all(|w| labels[w[0]].name < labels[w[1]].name) {
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

    pub fn finish(mut self) -> TargetSnapshot {
        let stream_count = self.streams.len();
        for column in &mut self.columns {
            column.cells.resize(stream_count, Cell::EMPTY);
        }
        let same_streams = self.same_order && self.previous.as_ref().is_some_and(|p| p.streams.len() == stream_count);
        // Same streams, no new or changed value, and as many values as before
        // means the very same content.
        let changed =
            !same_streams || self.changed_cells > 0 || self.previous.as_ref().is_some_and(|p| p.series_count() != series(&self.columns));
        let index = match (same_streams, self.previous, self.index) {
            (true, Some(previous), _) => previous.index.clone(),
            (_, _, Some(index)) => Arc::new(index),
            _ => Arc::new(self.streams.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect()),
        };
        TargetSnapshot { streams: self.streams, index, columns: self.columns, changed }
    }
}

fn series(columns: &[Column]) -> usize {
    columns.iter().map(|c| c.cells.iter().filter(|cell| !cell.is_empty()).count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Scanner;

    fn snapshot(label_sets: &Arc<LabelSets>, text: &str) -> TargetSnapshot {
        let mut builder = SnapshotBuilder::new(Arc::default(), label_sets.clone(), None, 1, Arc::from([]));
        Scanner::scan_all(|_: &str| true, text.as_bytes(), |s| builder.push(s));
        builder.finish()
    }

    #[test]
    fn targets_listing_the_same_stream_share_its_label_set() {
        let label_sets = Arc::default();
        let a = snapshot(&label_sets, "pravega_controller_x{scope=\"t\",stream=\"s\"} 1\n");
        let b = snapshot(&label_sets, "pravega_controller_x{stream=\"s\",scope=\"t\"} 2\n");
        assert!(Arc::ptr_eq(&a.streams[0].0, &b.streams[0].0));

        let weak = Arc::downgrade(&a.streams[0].0);
        label_sets.forget_unused();
        assert!(weak.upgrade().is_some(), "held by the snapshots");
        drop((a, b));
        assert!(weak.upgrade().is_some(), "kept until unused sets are forgotten");
        label_sets.forget_unused();
        assert!(weak.upgrade().is_none());
    }
}
