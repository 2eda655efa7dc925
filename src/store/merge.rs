//! Merging the replicas' snapshots into the view the API serves.
//!
//! Per stream and family, the value of the replica that has seen the most
//! scale events of that stream (largest `segment_splits + segment_merges`),
//! ties going to the value that changed most recently. Values are never
//! summed across replicas: each replica's `segments_count` is only as fresh
//! as the last scale *it* performed.

use super::snapshot::{Cell, FamilyId, LabelSet, StreamIndex, TargetSnapshot};
use hashbrown::HashTable;
use std::collections::BTreeMap;
use std::hash::BuildHasher as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const SPLITS_FAMILY: &str = "pravega_controller_segment_splits";
pub const MERGES_FAMILY: &str = "pravega_controller_segment_merges";

/// One served value: a stream's family value after merging replicas.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub labels: &'a LabelSet,
    pub value: f64,
    /// When the replica this value came from was last scraped.
    pub scraped_at: SystemTime,
}

/// A merged value and the target it came from; NaN where the stream has no
/// value for the family. Packed into 12 bytes, like [`Cell`].
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct MergedCell {
    value: f64,
    target: u32,
}

const _: () = assert!(std::mem::size_of::<MergedCell>() == 12);

/// Every live target's snapshot, merged: streams sorted by (scope, stream)
/// and one column of cells per family.
#[derive(Debug, Default)]
pub struct MergedView {
    layout: Arc<Layout>,
    columns: BTreeMap<Arc<str>, Vec<MergedCell>>,
    /// Per source target, when it was last scraped (ms since epoch); shared
    /// with the store, which updates it when a scrape changes nothing.
    scraped_at: Vec<Arc<AtomicU64>>,
}

/// One family's series in a [`MergedView`].
#[derive(Clone, Copy)]
pub struct Family<'a> {
    view: &'a MergedView,
    cells: &'a [MergedCell],
}

/// A served stream: its labels, and where its scope and stream values sit
/// in them, so that lookups compare slices instead of splitting label sets.
#[derive(Debug)]
struct Stream {
    labels: LabelSet,
    scope: (u32, u32),
    stream: (u32, u32),
}

impl Stream {
    fn new(labels: &LabelSet) -> Self {
        let (scope, stream) = labels.scope_and_stream();
        let start = labels_str(labels).as_ptr() as usize;
        // Label sets come from lines of at most 64 KiB (the scanner drops
        // longer ones), so offsets fit in u32. Absent labels are "" literals,
        // not slices of the label set; any empty range stands for them.
        let range = |part: &str| match (part.as_ptr() as usize).checked_sub(start) {
            Some(offset) if !part.is_empty() => (offset as u32, (offset + part.len()) as u32),
            _ => (0, 0),
        };
        Stream { labels: labels.clone(), scope: range(scope), stream: range(stream) }
    }

    fn scope_and_stream(&self) -> (&str, &str) {
        let part = |(start, end): (u32, u32)| &labels_str(&self.labels)[start as usize..end as usize];
        (part(self.scope), part(self.stream))
    }
}

/// The merged streams and where each source holds them. Sorting and
/// matching 10,000 streams across replicas is most of a merge, and
/// replicas list the same streams scrape after scrape, so the next merge
/// reuses the layout while every source still has the very stream list
/// it was built from.
#[derive(Debug, Default)]
pub(super) struct Layout {
    /// Each source's stream index: a snapshot shares its predecessor's
    /// index exactly when it lists the same streams in the same order.
    sources: Vec<Arc<StreamIndex>>,
    streams: Vec<Stream>,
    /// Row by row, each source's slot for the row's stream, or [`ABSENT`].
    slots: Vec<u32>,
    /// The first row of each (scope, stream). A query naming both, as an
    /// HPA's does, probes this once; a binary search over 10,000 streams
    /// would load 14 scattered label sets, most of them cache misses.
    first_rows: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

const ABSENT: u32 = u32::MAX;

fn present(slot: u32) -> Option<usize> {
    (slot != ABSENT).then_some(slot as usize)
}

impl Layout {
    fn new(sources: &[Source<'_>]) -> Self {
        // Every stream once, sorted by (scope, stream) for binary search.
        let mut streams: Vec<Stream> = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            for (slot, labels) in source.snapshot.streams.iter().enumerate() {
                if !sources[..i].iter().any(|earlier| earlier.snapshot.locate(slot, labels_str(labels)).is_some()) {
                    streams.push(Stream::new(labels));
                }
            }
        }
        streams.sort_unstable_by(|a, b| a.scope_and_stream().cmp(&b.scope_and_stream()).then_with(|| a.labels.cmp(&b.labels)));
        let mut slots = Vec::with_capacity(streams.len() * sources.len());
        let mut guesses = vec![0usize; sources.len()];
        for stream in &streams {
            for (source, guess) in sources.iter().zip(&mut guesses) {
                let slot = source.snapshot.locate(*guess, labels_str(&stream.labels));
                if let Some(slot) = slot {
                    *guess = slot + 1;
                }
                slots.push(slot.map_or(ABSENT, |s| s as u32));
            }
        }
        let hasher = foldhash::fast::RandomState::default();
        let mut first_rows = HashTable::with_capacity(streams.len());
        let key = |row: u32| streams[row as usize].scope_and_stream();
        for row in 0..streams.len() as u32 {
            if row == 0 || key(row - 1) != key(row) {
                first_rows.insert_unique(hasher.hash_one(key(row)), row, |&row| hasher.hash_one(key(row)));
            }
        }
        Layout { sources: sources.iter().map(|s| s.snapshot.index.clone()).collect(), streams, slots, first_rows, hasher }
    }

    /// Rows of the streams in `scope` (all rows for `None`), narrowed to
    /// `stream` if given.
    fn rows(&self, scope: Option<&str>, stream: Option<&str>) -> Range<usize> {
        let streams = &self.streams;
        match (scope, stream) {
            (None, _) => 0..streams.len(),
            (Some(scope), Some(stream)) => {
                let key = (scope, stream);
                let first = self.first_rows.find(self.hasher.hash_one(key), |&row| streams[row as usize].scope_and_stream() == key);
                first.map_or(0..0, |&first| {
                    let first = first as usize;
                    first..first + streams[first..].iter().take_while(|s| s.scope_and_stream() == key).count()
                })
            }
            (Some(scope), None) => {
                let start = streams.partition_point(|s| s.scope_and_stream().0 < scope);
                start..start + streams[start..].partition_point(|s| s.scope_and_stream().0 == scope)
            }
        }
    }

    fn fits(&self, sources: &[Source<'_>]) -> bool {
        self.sources.len() == sources.len() && self.sources.iter().zip(sources).all(|(index, s)| Arc::ptr_eq(index, &s.snapshot.index))
    }
}

impl MergedView {
    pub(super) fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn family(&self, name: &str) -> Option<Family<'_>> {
        self.columns.get(name).map(|cells| Family { view: self, cells })
    }

    pub fn family_names(&self) -> impl Iterator<Item = &str> {
        self.columns.keys().map(|name| &**name)
    }

    /// How many rows [`Family::narrowed`] visits for `scope` and `stream`.
    pub fn narrowed_rows(&self, scope: Option<&str>, stream: Option<&str>) -> usize {
        self.layout.rows(scope, stream).len()
    }
}

impl<'a> Family<'a> {
    /// The series in `scope`, narrowed to `stream` if both are given (all
    /// series for no scope: a stream name alone does not narrow).
    pub fn narrowed(self, scope: Option<&str>, stream: Option<&str>) -> impl Iterator<Item = Series<'a>> {
        let streams = &self.view.layout.streams;
        self.view.layout.rows(scope, stream).filter_map(move |i| {
            let cell = self.cells[i];
            if cell.value.is_nan() {
                return None;
            }
            let millis = self.view.scraped_at[cell.target as usize].load(Ordering::Relaxed);
            Some(Series {
                labels: &streams[i].labels,
                value: cell.value,
                scraped_at: SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
            })
        })
    }
}

/// A live target as the merge sees it.
pub(super) struct Source<'a> {
    pub(super) snapshot: &'a TargetSnapshot,
    pub(super) scraped_at: Arc<AtomicU64>,
}

/// Rows merged between offers of the core to serving threads.
const MERGE_SLICE: usize = 1024;

/// Merges `sources`, reusing `previous` (the served view's layout) if it
/// still fits them.
pub(super) fn merge(sources: &[Source<'_>], names: &[Arc<str>], previous: &Arc<Layout>) -> MergedView {
    let find = |name: &str| names.iter().position(|n| &**n == name).map(|i| FamilyId(i as u32));
    let (splits, merges) = (find(SPLITS_FAMILY), find(MERGES_FAMILY));
    let layout = if previous.fits(sources) { previous.clone() } else { Arc::new(Layout::new(sources)) };

    // Per family, each source's column (None: the source lacks the family).
    let mut families: Vec<(FamilyId, Vec<Option<&[Cell]>>)> = Vec::new();
    for source in sources {
        for column in &source.snapshot.columns {
            if !families.iter().any(|(f, _)| *f == column.family) {
                let columns = sources.iter().map(|s| s.snapshot.column(column.family)).collect();
                families.push((column.family, columns));
            }
        }
    }
    let rank_columns: Vec<RankColumns<'_>> =
        sources.iter().map(|s| (splits.and_then(|f| s.snapshot.column(f)), merges.and_then(|f| s.snapshot.column(f)))).collect();

    let rows = layout.streams.len();
    let mut columns: Vec<Vec<MergedCell>> = families.iter().map(|_| Vec::with_capacity(rows)).collect();
    let mut ranks: Vec<Option<f64>> = vec![None; sources.len()];
    for (row, row_slots) in layout.slots.chunks_exact(sources.len().max(1)).take(rows).enumerate() {
        if row % MERGE_SLICE == MERGE_SLICE - 1 {
            crate::resources::make_way();
        }
        for (i, &slot) in row_slots.iter().enumerate() {
            ranks[i] = present(slot).and_then(|slot| scale_events(rank_columns[i], slot));
        }
        for ((_, family_columns), merged) in families.iter().zip(&mut columns) {
            let best = (0..sources.len())
                .filter_map(|i| {
                    let cell = family_columns[i]?[present(row_slots[i])?];
                    (!cell.is_empty()).then_some((i, cell, ranks[i]))
                })
                .max_by(|a, b| {
                    let rank = a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal);
                    rank.then({ a.1.changed_in }.cmp(&{ b.1.changed_in }))
                });
            merged.push(match best {
                Some((i, cell, _)) => MergedCell { value: cell.value, target: i as u32 },
                None => MergedCell { value: f64::NAN, target: 0 },
            });
        }
    }
    let columns = families
        .iter()
        .zip(columns)
        .filter(|(_, cells)| cells.iter().any(|c| !c.value.is_nan()))
        .map(|((family, _), cells)| (names[family.0 as usize].clone(), cells))
        .collect();
    MergedView { layout, columns, scraped_at: sources.iter().map(|s| s.scraped_at.clone()).collect() }
}

fn labels_str(labels: &LabelSet) -> &str {
    std::borrow::Borrow::borrow(labels)
}

/// A source's `segment_splits` and `segment_merges` columns.
type RankColumns<'a> = (Option<&'a [Cell]>, Option<&'a [Cell]>);

/// A replica's claim to know a stream's latest state: the number of scale
/// events it has seen (`None` if it reports neither counter).
fn scale_events((splits, merges): RankColumns<'_>, slot: usize) -> Option<f64> {
    let get = |column: Option<&[Cell]>| column.map(|c| c[slot]).filter(|c| !c.is_empty()).map(|c| c.value);
    match (get(splits), get(merges)) {
        (None, None) => None,
        (s, m) => Some(s.unwrap_or(0.0) + m.unwrap_or(0.0)),
    }
}
