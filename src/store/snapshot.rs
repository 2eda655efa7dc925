//! One target's scraped data: streams (label sets) and one column of value
//! cells per family, built sample by sample from the scanner.

use super::column::{Column, Slot};
use crate::parse::Sample;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

    /// The label set of a stream known only by name (from the controller
    /// API's inventory): `scope` and `stream`.
    pub fn of_stream(scope: &str, stream: &str) -> Self {
        LabelSet(Arc::from(format!("{SCOPE_LABEL}{SEPARATOR}{scope}{SEPARATOR}{STREAM_LABEL}{SEPARATOR}{stream}")))
    }

    /// The stream's `scope` and `stream` labels, "" where absent.
    pub fn scope_and_stream(&self) -> (&str, &str) {
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

/// Strings that snapshots and views hold (label sets, family names), so
/// that every holder of one string shares one allocation: targets list the
/// same streams and families, scrape after scrape.
#[derive(Default)]
pub(super) struct Interner {
    strings: Mutex<HashSet<Arc<str>, foldhash::fast::RandomState>>,
}

impl Interner {
    fn get_or_insert(&self, key: &str) -> Arc<str> {
        let mut strings = self.lock();
        if let Some(string) = strings.get(key) {
            return string.clone();
        }
        let string: Arc<str> = Arc::from(key);
        strings.insert(string.clone());
        string
    }

    /// Drops the strings no snapshot or view holds any more, so that what a
    /// controller stopped listing does not stay in memory. Only this
    /// registry hands out new references, under its lock, so a string held
    /// by nothing else cannot gain a holder meanwhile.
    pub(super) fn forget_unused(&self) {
        self.lock().retain(|string| Arc::strong_count(string) > 1);
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<str>, foldhash::fast::RandomState>> {
        self.strings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Caps on what one scrape of one target may store; a scrape over a cap
/// fails and the target keeps its previous snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per-stream samples (cells) of all families.
    pub max_series: usize,
    /// Families with per-stream samples.
    pub max_families: usize,
    /// Distinct label sets of per-stream samples.
    pub max_streams: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits { max_series: 2_000_000, max_families: 1_000, max_streams: 200_000 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Caps on what all targets' snapshots hold together, which bound the
/// store's memory whatever the number of targets; a scrape that would take
/// the store over one fails and the target keeps its previous snapshot,
/// the other targets theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Per-stream samples (cells) of all families of all targets.
    pub max_series: usize,
    /// Streams of all targets, counted once per target listing them.
    pub max_streams: usize,
}

impl Budget {
    pub const DEFAULT: Budget = Budget { max_series: 1_000_000, max_streams: 250_000 };

    /// Which cap `usage` beside `others` goes over, if any.
    pub(super) fn exceeded_by(self, others: Usage, usage: Usage) -> Option<LimitExceeded> {
        if others.series + usage.series > self.max_series {
            return Some(LimitExceeded::TotalSeries(self.max_series));
        }
        (others.streams + usage.streams > self.max_streams).then_some(LimitExceeded::TotalStreams(self.max_streams))
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::DEFAULT
    }
}

/// Series and streams held by snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub series: usize,
    pub streams: usize,
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage { series: self.series + other.series, streams: self.streams + other.streams }
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(usages: I) -> Usage {
        usages.fold(Usage::default(), std::ops::Add::add)
    }
}

/// Which of the [`Limits`] or the [`Budget`] a scrape went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the exposition holds more than {0} per-stream series (--scrape-max-series)")]
    Series(usize),
    #[error("the exposition holds more than {0} per-stream families (--scrape-max-families)")]
    Families(usize),
    #[error("the exposition holds more than {0} streams (--scrape-max-streams)")]
    Streams(usize),
    #[error("with the other targets' data the store would hold more than {0} series (--max-total-series)")]
    TotalSeries(usize),
    #[error("with the other targets' data the store would hold more than {0} streams (--max-total-streams)")]
    TotalStreams(usize),
}

impl LimitExceeded {
    /// A short word for the adapter's own metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitExceeded::Series(_) => "too_many_series",
            LimitExceeded::Families(_) => "too_many_families",
            LimitExceeded::Streams(_) => "too_many_streams",
            LimitExceeded::TotalSeries(_) | LimitExceeded::TotalStreams(_) => "over_budget",
        }
    }
}

/// What the snapshots being built hold beyond their targets' published
/// ones: counted against the [`Budget`] with the published snapshots, so
/// that targets scraped at once cannot together go over it.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    series: AtomicUsize,
    streams: AtomicUsize,
}

impl InFlight {
    /// Adds `usage`; the totals after it.
    fn add(&self, usage: Usage) -> Usage {
        Usage {
            series: self.series.fetch_add(usage.series, Ordering::Relaxed) + usage.series,
            streams: self.streams.fetch_add(usage.streams, Ordering::Relaxed) + usage.streams,
        }
    }

    fn remove(&self, usage: Usage) {
        self.series.fetch_sub(usage.series, Ordering::Relaxed);
        self.streams.fetch_sub(usage.streams, Ordering::Relaxed);
    }
}

/// What a target's next snapshot may hold under the [`Budget`]: what the
/// other targets' published snapshots and every build's growth leave. Its
/// growth is returned to [`InFlight`] when it is dropped.
#[derive(Debug)]
pub(super) struct Room {
    budget: Budget,
    /// What the other targets' published snapshots hold.
    others: Usage,
    /// What the target's published snapshot holds: growing to it is free.
    base: Usage,
    in_flight: Arc<InFlight>,
    /// This build's share of `in_flight`.
    grown: Usage,
}

impl Room {
    pub(super) fn new(budget: Budget, others: Usage, base: Usage, in_flight: Arc<InFlight>) -> Self {
        Room { budget, others, base, in_flight, grown: Usage::default() }
    }

    /// Makes room for a snapshot of `usage`; which cap that goes over, if any.
    fn take(&mut self, usage: Usage) -> Option<LimitExceeded> {
        if let Some(exceeded) = self.budget.exceeded_by(self.others, usage) {
            return Some(exceeded);
        }
        let held = self.base + self.grown;
        let growth = Usage { series: usage.series.saturating_sub(held.series), streams: usage.streams.saturating_sub(held.streams) };
        if growth == Usage::default() {
            return None;
        }
        let in_flight = self.in_flight.add(growth);
        if let Some(exceeded) = self.budget.exceeded_by(self.others, self.base + in_flight) {
            self.in_flight.remove(growth);
            return Some(exceeded);
        }
        self.grown = self.grown + growth;
        None
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.in_flight.remove(self.grown);
    }
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

impl Slot for Cell {
    const EMPTY: Cell = Cell { value: f64::NAN, changed_in: 0 };

    fn is_empty(&self) -> bool {
        self.value.is_nan()
    }
}

/// One family's cells, by position in [`TargetSnapshot::streams`].
#[derive(Debug)]
pub(super) struct FamilyColumn {
    /// The family's name, shared through the store's registry of names.
    pub(super) family: Arc<str>,
    pub(super) cells: Column<Cell>,
}

/// Everything one scrape of one controller replica reported.
#[derive(Debug)]
pub struct TargetSnapshot {
    /// In the order the exposition first listed them.
    pub(super) streams: Vec<LabelSet>,
    /// Position of each stream in `streams`; shared with the previous
    /// snapshot while the controller lists the same streams in the same order.
    pub(super) index: Arc<StreamIndex>,
    /// Sorted by family name.
    pub(super) columns: Vec<FamilyColumn>,
    series: usize,
    /// Whether anything differs from the previous snapshot.
    pub(super) changed: bool,
    /// The scrape number of the target's first snapshot: a cell that
    /// changed in a later scrape changed while the adapter watched.
    pub(super) first_scrape: u32,
    /// The store's generation when the scrape started.
    pub(super) started_at: u64,
}

impl TargetSnapshot {
    /// Number of series (stream x family) in the snapshot.
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// What the snapshot counts against the [`Budget`].
    pub fn usage(&self) -> Usage {
        Usage { series: self.series, streams: self.streams.len() }
    }

    /// The slot of `labels`, trying `guess` first: replicas and scrapes
    /// mostly list streams in the same order, so this saves a hash lookup.
    pub(super) fn locate(&self, guess: usize, labels: &str) -> Option<usize> {
        match self.streams.get(guess) {
            Some(s) if &*s.0 == labels => Some(guess),
            _ => self.index.get(labels).map(|&i| i as usize),
        }
    }

    pub(super) fn column(&self, family: &str) -> Option<&Column<Cell>> {
        self.column_position(family).map(|i| &self.columns[i].cells)
    }

    fn column_position(&self, family: &str) -> Option<usize> {
        self.columns.binary_search_by(|c| (*c.family).cmp(family)).ok()
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
    family_names: Arc<Interner>,
    label_sets: Arc<Interner>,
    limits: Limits,
    room: Room,
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
    columns: Vec<ColumnBuilder>,
    /// Each family's position in `columns`.
    column_of: FastMap<Arc<str>, usize>,
    /// The family of the previous sample: its column, and the slot the
    /// previous sample went to.
    current: Option<Current>,
    series: usize,
    changed_cells: usize,
    key: String,
    /// See [`TargetSnapshot::started_at`].
    started_at: u64,
    order: Vec<usize>,
    rejected: u64,
    /// Labels naming the replica that reports a series, not the stream:
    /// left out of the stream's label set.
    replica_labels: Arc<[String]>,
    /// Set when a sample went over a limit; nothing is stored after it.
    exceeded: Option<LimitExceeded>,
}

struct Current {
    column: usize,
    last_slot: Option<usize>,
}

/// A family's cells as they arrive, as (slot, cell) pairs: in slot order
/// while the exposition lists the family's streams in the order they were
/// first listed, as controllers do.
struct ColumnBuilder {
    family: Arc<str>,
    /// The family's column in the previous snapshot.
    previous: Option<usize>,
    slots: Vec<u32>,
    cells: Vec<Cell>,
    /// Every slot in `slots`, kept from the first sample that arrives out
    /// of slot order on, to tell duplicates.
    seen: Option<HashSet<u32, foldhash::fast::RandomState>>,
}

impl ColumnBuilder {
    /// Records that the family has a cell at `slot`; false if it already had.
    fn claim(&mut self, slot: u32) -> bool {
        match (&mut self.seen, self.slots.last()) {
            (None, None) => true,
            (None, Some(&last)) if slot > last => true,
            (None, Some(&last)) if slot == last => false,
            (seen, _) => seen.get_or_insert_with(|| self.slots.iter().copied().collect()).insert(slot),
        }
    }

    fn finish(self, stream_count: usize) -> FamilyColumn {
        let (slots, cells) = match self.seen {
            None => (self.slots, self.cells),
            Some(_) => {
                let mut pairs: Vec<(u32, Cell)> = self.slots.into_iter().zip(self.cells).collect();
                pairs.sort_unstable_by_key(|&(slot, _)| slot);
                pairs.into_iter().unzip()
            }
        };
        FamilyColumn { family: self.family, cells: Column::from_sorted(slots, cells, stream_count) }
    }
}

impl SnapshotBuilder {
    pub(super) fn new(
        family_names: Arc<Interner>,
        label_sets: Arc<Interner>,
        limits: Limits,
        room: Room,
        previous: Option<Arc<TargetSnapshot>>,
        scrape: u32,
        replica_labels: Arc<[String]>,
    ) -> Self {
        let capacity = previous.as_ref().map_or(0, |p| p.streams.len());
        SnapshotBuilder {
            family_names,
            label_sets,
            limits,
            room,
            previous,
            scrape,
            streams: Vec::with_capacity(capacity),
            previous_slots: Vec::with_capacity(capacity),
            index: None,
            same_order: true,
            columns: Vec::new(),
            column_of: FastMap::default(),
            current: None,
            series: 0,
            changed_cells: 0,
            key: String::new(),
            started_at: 0,
            order: Vec::new(),
            rejected: 0,
            replica_labels,
            exceeded: None,
        }
    }

    /// Adds one sample; samples without `scope` and `stream` labels are not
    /// per-stream and are left out, as are NaN and infinite values.
    pub fn push(&mut self, sample: &Sample<'_, '_>) {
        if self.exceeded.is_some() || !sample.value.is_finite() {
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
        if self.current.as_ref().is_none_or(|c| *self.columns[c.column].family != *sample.name) {
            self.switch_family(sample.name);
        }
        let Some(current) = &self.current else { return };
        let column = current.column;
        let guess = current.last_slot.map_or(0, |s| s + 1);
        let slot = match self.streams.get(guess) {
            Some(s) if *s.0 == *self.key => guess,
            _ => match self.find() {
                Some(slot) => slot,
                None => return,
            },
        };
        if let Some(current) = &mut self.current {
            current.last_slot = Some(slot);
        }
        let building = &mut self.columns[column];
        if !building.claim(slot as u32) {
            self.rejected += 1; // duplicate series within one exposition
            return;
        }
        if self.series == self.limits.max_series {
            self.exceeded = Some(LimitExceeded::Series(self.limits.max_series));
            return;
        }
        if let Some(exceeded) = self.room.take(Usage { series: self.series + 1, streams: self.streams.len() }) {
            self.exceeded = Some(exceeded);
            return;
        }
        let previous = match (&self.previous, building.previous, self.previous_slots[slot]) {
            (Some(p), Some(column), Some(previous_slot)) => p.columns[column].cells.get(previous_slot as usize),
            _ => None,
        };
        let changed_in = match previous {
            Some(old) if old.value.to_bits() == sample.value.to_bits() => old.changed_in,
            _ => {
                self.changed_cells += 1;
                self.scrape
            }
        };
        building.slots.push(slot as u32);
        building.cells.push(Cell { value: sample.value, changed_in });
        self.series += 1;
    }

    /// Makes `name` the current family, adding its column if new (unless
    /// that goes over the family limit).
    fn switch_family(&mut self, name: &str) {
        let column = match self.column_of.get(name) {
            Some(&column) => column,
            None if self.columns.len() == self.limits.max_families => {
                self.exceeded = Some(LimitExceeded::Families(self.limits.max_families));
                self.current = None;
                return;
            }
            None => {
                let family = self.family_names.get_or_insert(name);
                let previous = self.previous.as_ref().and_then(|p| p.column_position(name).map(|i| (p, i)));
                // As many cells as last time: no reallocation in a steady state.
                let capacity = previous.map_or(0, |(p, i)| p.columns[i].cells.stored());
                self.column_of.insert(family.clone(), self.columns.len());
                self.columns.push(ColumnBuilder {
                    family,
                    previous: previous.map(|(_, i)| i),
                    slots: Vec::with_capacity(capacity),
                    cells: Vec::with_capacity(capacity),
                    seen: None,
                });
                self.columns.len() - 1
            }
        };
        self.current = Some(Current { column, last_slot: None });
    }

    /// The slot of the stream in `self.key`, added if new; None if that
    /// goes over the stream limit.
    fn find(&mut self) -> Option<usize> {
        if let Some(slot) = self.find_in_previous_order() {
            return Some(slot);
        }
        self.same_order = false;
        let streams = &self.streams;
        let index = self.index.get_or_insert_with(|| streams.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect());
        if let Some(&slot) = index.get(self.key.as_str()) {
            return Some(slot as usize);
        }
        let slot = self.streams.len();
        if slot == self.limits.max_streams {
            self.exceeded = Some(LimitExceeded::Streams(self.limits.max_streams));
            return None;
        }
        if let Some(exceeded) = self.room.take(Usage { series: self.series, streams: slot + 1 }) {
            self.exceeded = Some(exceeded);
            return None;
        }
        // Again, the stream after the last one added is the best guess.
        let guess = self.previous_slots.last().copied().flatten().map_or(0, |s| s as usize + 1);
        let previous = self.previous.as_ref().and_then(|p| p.locate(guess, &self.key).map(|i| (i, p.streams[i].clone())));
        let labels = previous.as_ref().map_or_else(|| LabelSet(self.label_sets.get_or_insert(&self.key)), |(_, l)| l.clone());
        if let Some(index) = &mut self.index {
            index.insert(labels.clone(), slot as u32);
        }
        self.streams.push(labels);
        self.previous_slots.push(previous.map(|(p, _)| p as u32));
        Some(slot)
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

    /// The store's generation when the scrape started (see
    /// [`super::Store::publish`]).
    pub(super) fn started_at(self, generation: u64) -> Self {
        SnapshotBuilder { started_at: generation, ..self }
    }

    /// Samples dropped because their labels cannot be stored faithfully.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The limit a sample went over, if any: then the snapshot is
    /// incomplete and must not be published.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        self.exceeded
    }

    pub fn finish(self) -> TargetSnapshot {
        let stream_count = self.streams.len();
        let mut columns: Vec<FamilyColumn> = self.columns.into_iter().map(|c| c.finish(stream_count)).collect();
        columns.sort_unstable_by(|a, b| a.family.cmp(&b.family));
        let same_streams = self.same_order && self.previous.as_ref().is_some_and(|p| p.streams.len() == stream_count);
        // Same streams, no new or changed value, and as many values as before
        // means the very same content.
        let changed = !same_streams || self.changed_cells > 0 || self.previous.as_ref().is_some_and(|p| p.series != self.series);
        let first_scrape = self.previous.as_ref().map_or(self.scrape, |p| p.first_scrape);
        let index = match (same_streams, self.previous, self.index) {
            (true, Some(previous), _) => previous.index.clone(),
            (_, _, Some(index)) => Arc::new(index),
            _ => Arc::new(self.streams.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect()),
        };
        TargetSnapshot { streams: self.streams, index, columns, series: self.series, changed, first_scrape, started_at: self.started_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Scanner;

    fn snapshot(label_sets: &Arc<Interner>, text: &str) -> TargetSnapshot {
        let room = Room::new(Budget::DEFAULT, Usage::default(), Usage::default(), Arc::default());
        let mut builder = SnapshotBuilder::new(Arc::default(), label_sets.clone(), Limits::DEFAULT, room, None, 1, Arc::from([]));
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
