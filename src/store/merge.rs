//! Merging the replicas' snapshots into the view the API serves.
//!
//! Per stream and family, the value of the replica that has seen the most
//! scale events of that stream (largest `segment_splits + segment_merges`),
//! ties going to the value that changed most recently. Values are never
//! summed across replicas: each replica's `segments_count` is only as fresh
//! as the last scale *it* performed.
//!
//! Each stream keeps a high-water mark: the largest total any replica has
//! reported for it. A replica below the mark is never served for that
//! stream, whatever happened to the replica that reached it (expired,
//! removed from discovery, restarted, failing): such a stream is
//! [`Verdict::Undecided`], and only the controller's API can tell its value.
//! Marks outlive the streams' disappearance from every replica for
//! [`MARK_RETENTION`], since a restarted controller lists a stream again
//! only at its next scale.

use super::column::{Column, Slot};
use super::snapshot::{Cell, LabelSet, StreamIndex, TargetSnapshot};
use crate::clock::Moment;
use hashbrown::HashTable;
use std::collections::BTreeMap;
use std::hash::BuildHasher as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const SPLITS_FAMILY: &str = "pravega_controller_segment_splits";
pub const MERGES_FAMILY: &str = "pravega_controller_segment_merges";

/// How long a stream's high-water mark outlives the stream's last listing
/// by a live replica.
pub const MARK_RETENTION: Duration = Duration::from_secs(60 * 60);

/// How far the metrics alone can be trusted for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live replica at the stream's high-water mark reports it, and the
    /// adapter has seen the mark rise (a scale it watched happen).
    Current,
    /// A live replica at the mark reports it, but the mark has not risen
    /// since the adapter first saw the stream: a replica that scaled it
    /// later may have restarted before the adapter started. Served from the
    /// metrics unless the controller's API says otherwise.
    Unconfirmed,
    /// No live replica at the mark: the value is not served from the
    /// metrics at all.
    Undecided,
}

/// One stream's family value after merging replicas. `value` is NaN for an
/// [`Verdict::Undecided`] stream.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub labels: &'a LabelSet,
    pub value: f64,
    /// When the replica this value came from was last scraped (for an
    /// undecided stream, when the view was merged).
    pub scraped_at: Moment,
    pub verdict: Verdict,
    /// The stream's high-water mark of scale events; NaN if no replica
    /// reports any.
    pub mark: f64,
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

impl Slot for MergedCell {
    const EMPTY: MergedCell = MergedCell { value: f64::NAN, target: 0 };

    fn is_empty(&self) -> bool {
        self.value.is_nan()
    }
}

/// Every live target's snapshot, merged: streams sorted by (scope, stream)
/// and one column of cells per family, indexed by row.
#[derive(Debug, Default)]
pub struct MergedView {
    layout: Arc<Layout>,
    columns: BTreeMap<Arc<str>, Column<MergedCell>>,
    /// Per source target, when it was last scraped (a [`Moment`] in ms); shared
    /// with the store, which updates it when a scrape changes nothing.
    scraped_at: Vec<Arc<AtomicU64>>,
    /// Per row, the stream's high-water mark (NaN: none) and verdict.
    marks: Vec<f64>,
    verdicts: Vec<Verdict>,
    /// When the merge ran (a [`Moment`] in ms).
    merged_at: u64,
    /// Scale-event totals not believed in this merge (see [`scale_events`]).
    implausible: usize,
    /// Unlisted streams' marks this merge dropped for [`MAX_UNLISTED_MARKS`].
    dropped_marks: usize,
}

/// One family's series in a [`MergedView`].
#[derive(Clone, Copy)]
pub struct Family<'a> {
    view: &'a MergedView,
    cells: &'a Column<MergedCell>,
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
    /// Per row, since when (a [`Moment`] in ms) no source lists the stream; 0
    /// while one does. Such rows hold a mark and no cells.
    unlisted_since: Vec<u64>,
    /// The earliest non-zero `unlisted_since`: the layout must be rebuilt
    /// once it is older than [`MARK_RETENTION`].
    oldest_unlisted: Option<u64>,
    /// Row by row, each source's slot for the row's stream, or [`ABSENT`].
    slots: Vec<u32>,
    /// Per source, slot by slot, the row of the slot's stream: the merge
    /// walks each source's cells rather than every row.
    rows_of: Vec<Vec<u32>>,
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
    /// Rows for every stream the sources list, plus `unlisted`: streams no
    /// source lists any more whose marks are kept, with since when.
    fn new(sources: &[Source<'_>], unlisted: Vec<(LabelSet, u64)>) -> Self {
        // Every stream once, sorted by (scope, stream) for binary search.
        let mut streams: Vec<(Stream, u64)> = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            for (slot, labels) in source.snapshot.streams.iter().enumerate() {
                if !sources[..i].iter().any(|earlier| earlier.snapshot.locate(slot, labels_str(labels)).is_some()) {
                    streams.push((Stream::new(labels), 0));
                }
            }
        }
        streams.extend(unlisted.into_iter().map(|(labels, since)| (Stream::new(&labels), since)));
        streams.sort_unstable_by(|(a, _), (b, _)| a.scope_and_stream().cmp(&b.scope_and_stream()).then_with(|| a.labels.cmp(&b.labels)));
        let (streams, unlisted_since): (Vec<Stream>, Vec<u64>) = streams.into_iter().unzip();
        let oldest_unlisted = unlisted_since.iter().copied().filter(|&since| since != 0).min();
        let mut slots = Vec::with_capacity(streams.len() * sources.len());
        let mut rows_of: Vec<Vec<u32>> = sources.iter().map(|s| vec![ABSENT; s.snapshot.streams.len()]).collect();
        let mut guesses = vec![0usize; sources.len()];
        for (row, (stream, &since)) in streams.iter().zip(&unlisted_since).enumerate() {
            for ((source, guess), rows) in sources.iter().zip(&mut guesses).zip(&mut rows_of) {
                let slot = if since == 0 { source.snapshot.locate(*guess, labels_str(&stream.labels)) } else { None };
                if let Some(slot) = slot {
                    *guess = slot + 1;
                    rows[slot] = row as u32;
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
        Layout {
            sources: sources.iter().map(|s| s.snapshot.index.clone()).collect(),
            streams,
            unlisted_since,
            oldest_unlisted,
            slots,
            rows_of,
            first_rows,
            hasher,
        }
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

    /// Whether the sources list exactly the streams this layout was built
    /// from, and no unlisted stream's mark has expired by `now`.
    fn fits(&self, sources: &[Source<'_>], now: u64) -> bool {
        self.sources.len() == sources.len()
            && self.sources.iter().zip(sources).all(|(index, s)| Arc::ptr_eq(index, &s.snapshot.index))
            && self.oldest_unlisted.is_none_or(|since| !expired(since, now))
    }

    /// The row of exactly `labels`.
    fn row(&self, labels: &LabelSet) -> Option<usize> {
        let (scope, stream) = labels.scope_and_stream();
        self.rows(Some(scope), Some(stream)).find(|&row| self.streams[row].labels == *labels)
    }
}

impl MergedView {
    #[cfg(test)]
    pub(super) fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// Cells stored for all families (see [`Column::stored`]).
    #[cfg(test)]
    pub(super) fn stored_cells(&self) -> usize {
        self.columns.values().map(Column::stored).sum()
    }

    /// Replicas' scale-event totals of streams that this view did not
    /// believe: not whole numbers from 0 to 2^53.
    pub fn implausible_totals(&self) -> usize {
        self.implausible
    }

    /// Unlisted streams' marks the merge that made this view dropped for
    /// [`MAX_UNLISTED_MARKS`], oldest first.
    pub fn dropped_marks(&self) -> usize {
        self.dropped_marks
    }

    pub fn family(&self, name: &str) -> Option<Family<'_>> {
        self.columns.get(name).map(|cells| Family { view: self, cells })
    }

    /// `name`'s series; for a family that no live replica reports any more
    /// (every gauge evicted or gone with a restart), every stream, undecided.
    pub fn family_or_undecided(&self, name: &str) -> Family<'_> {
        static NO_CELLS: Column<MergedCell> = Column::Sparse { positions: Vec::new(), cells: Vec::new() };
        Family { view: self, cells: self.columns.get(name).unwrap_or(&NO_CELLS) }
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
    /// series for no scope: a stream name alone does not narrow): those
    /// with a value, and the undecided streams with NaN.
    pub fn narrowed(self, scope: Option<&str>, stream: Option<&str>) -> impl Iterator<Item = Series<'a>> {
        self.rows(scope, stream).filter(|(merged, s)| !s.value.is_nan() || *merged == Verdict::Undecided).map(|(_, s)| s)
    }

    /// Every stream in `scope` (narrowed to `stream` as [`Family::narrowed`]
    /// does) with its value of the family. A stream without one, because
    /// the replica at its mark lacks the family's gauge or because it is
    /// undecided, comes as undecided with a NaN value, so that the
    /// controller's API can be asked for it.
    pub fn streams(self, scope: Option<&str>, stream: Option<&str>) -> impl Iterator<Item = Series<'a>> {
        self.rows(scope, stream).map(|(_, s)| s)
    }

    /// Each row's verdict from the merge, and its series (undecided if the
    /// family has no value for it).
    fn rows(self, scope: Option<&str>, stream: Option<&str>) -> impl Iterator<Item = (Verdict, Series<'a>)> {
        let view = self.view;
        let streams = &view.layout.streams;
        let rows = view.layout.rows(scope, stream);
        let mut cells = self.cells.cursor(rows.start);
        rows.map(move |i| {
            let cell = cells.at(i);
            let merged = view.verdicts[i];
            let verdict = if cell.value.is_nan() { Verdict::Undecided } else { merged };
            let millis = match verdict {
                Verdict::Undecided => view.merged_at,
                _ => view.scraped_at[cell.target as usize].load(Ordering::Relaxed),
            };
            let series = Series {
                labels: &streams[i].labels,
                value: cell.value,
                scraped_at: Moment::from_millis(millis),
                verdict,
                mark: view.marks[i],
            };
            (merged, series)
        })
    }
}

/// A live target as the merge sees it.
pub(super) struct Source<'a> {
    pub(super) snapshot: &'a TargetSnapshot,
    pub(super) scraped_at: Arc<AtomicU64>,
}

/// Cells (or rows, counted as a cell per source) merged between offers of
/// the core to serving threads.
const MERGE_SLICE: usize = 16 * 1024;

/// Counts merge work and offers the core every [`MERGE_SLICE`] of it.
#[derive(Default)]
struct Slices {
    work: usize,
}

impl Slices {
    fn done(&mut self, work: usize) {
        self.work += work;
        if self.work >= MERGE_SLICE {
            self.work = 0;
            crate::resources::make_way();
        }
    }
}

fn expired(unlisted_since: u64, now: u64) -> bool {
    now.saturating_sub(unlisted_since) > MARK_RETENTION.as_millis() as u64
}

/// Merges `sources` at `now` (a [`Moment`] in ms), carrying the marks of
/// `previous` (the served view) over and reusing its layout if it still
/// fits the sources.
pub(super) fn merge(sources: &[Source<'_>], previous: &MergedView, now: u64, forgotten: &Forgotten) -> MergedView {
    let reused = previous.layout.fits(sources, now) && forgotten.is_empty();
    let mut dropped_marks = 0;
    let layout = match reused {
        true => previous.layout.clone(),
        false => {
            let (unlisted, dropped) = unlisted(sources, previous, now, forgotten);
            dropped_marks = dropped;
            Arc::new(Layout::new(sources, unlisted))
        }
    };
    // Each row's mark and verdict in the previous view (None: a new stream,
    // or one deleted since, whose marks start anew).
    let previous_row = |row: usize| -> Option<(f64, Verdict)> {
        let labels = &layout.streams[row].labels;
        if forgotten.contains(&owned(labels.scope_and_stream())) {
            return None;
        }
        let old = if reused { row } else { previous.layout.row(labels)? };
        Some((previous.marks[old], previous.verdicts[old]))
    };
    let rank_columns: Vec<RankColumns<'_>> =
        sources.iter().map(|s| (s.snapshot.column(SPLITS_FAMILY), s.snapshot.column(MERGES_FAMILY))).collect();
    let count_columns: Vec<Option<&Column<Cell>>> = sources.iter().map(|s| s.snapshot.column(COUNT_FAMILY)).collect();
    let mut implausible = 0;

    // Row by row: the mark, the verdict, and which sources compete for the
    // row's values (row-major, like the layout's slots).
    let rows = layout.streams.len();
    let width = sources.len();
    let mut marks = Vec::with_capacity(rows);
    let mut verdicts = Vec::with_capacity(rows);
    let mut competing = Vec::with_capacity(rows * width);
    let mut ranks: Vec<Option<f64>> = vec![None; width];
    let mut slices = Slices::default();
    for row in 0..rows {
        let row_slots = &layout.slots[row * width..(row + 1) * width];
        slices.done(width);
        for (i, &slot) in row_slots.iter().enumerate() {
            ranks[i] = present(slot).and_then(|slot| {
                let events = scale_events(rank_columns[i], slot);
                implausible += usize::from(events.is_err());
                events.ok().flatten()
            });
        }
        // Whether a source that lists the row began to list it, or changed
        // it, after its first scrape: a change the adapter watched.
        let watched = |i: usize| {
            present(row_slots[i]).is_some_and(|slot| {
                let first = sources[i].snapshot.first_scrape;
                let (splits, merges) = rank_columns[i];
                [splits, merges, count_columns[i]].iter().flatten().any(|c| c.get(slot).is_some_and(|cell| cell.changed_in > first))
            })
        };
        let (mark, verdict) = judge(&ranks, row_slots, previous_row(row), watched);
        marks.push(mark);
        verdicts.push(verdict);
        // Only replicas at the mark compete; none does for an undecided row.
        competing.extend(
            row_slots
                .iter()
                .zip(&ranks)
                .map(|(&slot, &rank)| verdict != Verdict::Undecided && present(slot).is_some() && (mark.is_nan() || rank == Some(mark))),
        );
    }

    // Family by family, from the cells the sources hold: a family costs
    // its cells, not the rows.
    let mut families: BTreeMap<Arc<str>, Vec<(usize, &Column<Cell>)>> = BTreeMap::new();
    for (i, source) in sources.iter().enumerate() {
        for column in &source.snapshot.columns {
            families.entry(column.family.clone()).or_default().push((i, &column.cells));
        }
    }
    let merging = Merging { layout: &layout, competing: &competing, width };
    let mut changed_in = Vec::new();
    // A family stays in the view while any live source reports it, even if
    // every stream it has is undecided: the controller's API may answer.
    let columns = families
        .into_iter()
        .map(|(family, columns)| {
            let stored = columns.iter().map(|(_, c)| c.stored()).sum();
            let merged = if is_activity_counter(&family) {
                merging.summed(&columns, &mut slices)
            } else if Column::<MergedCell>::dense_for(stored, rows) {
                merging.dense(&columns, &mut changed_in, &mut slices)
            } else {
                merging.sparse(&columns, &mut slices)
            };
            (family, merged)
        })
        .collect();
    MergedView {
        layout,
        columns,
        scraped_at: sources.iter().map(|s| s.scraped_at.clone()).collect(),
        marks,
        verdicts,
        merged_at: now,
        implausible,
        dropped_marks,
    }
}

/// What merging one family needs to know of the rows.
struct Merging<'a> {
    layout: &'a Layout,
    /// Row by row, whether each source competes for the row's values.
    competing: &'a [bool],
    width: usize,
}

impl Merging<'_> {
    /// The family's competing cells, as (row, source, cell).
    fn candidates<'c>(&'c self, columns: &'c [(usize, &Column<Cell>)]) -> impl Iterator<Item = (usize, usize, Cell)> + 'c {
        columns.iter().flat_map(move |&(source, column)| {
            let rows_of = &self.layout.rows_of[source];
            column
                .iter()
                .map(move |(slot, cell)| (rows_of[slot] as usize, source, cell))
                .filter(|&(row, source, _)| self.competing[row * self.width + source])
        })
    }

    /// One cell per row: for a family most streams have. Of the competing
    /// sources the value that changed last wins; on a tie, the later source.
    fn dense(&self, columns: &[(usize, &Column<Cell>)], changed_in: &mut Vec<u32>, slices: &mut Slices) -> Column<MergedCell> {
        let rows = self.layout.streams.len();
        let mut merged = vec![MergedCell::EMPTY; rows];
        changed_in.clear();
        changed_in.resize(rows, 0);
        for (row, source, cell) in self.candidates(columns) {
            if merged[row].is_empty() || cell.changed_in >= changed_in[row] {
                merged[row] = MergedCell { value: cell.value, target: source as u32 };
                changed_in[row] = cell.changed_in;
            }
            slices.done(1);
        }
        Column::Dense(merged)
    }

    /// Per row, the sum over every live source that reports the row: for
    /// a per-replica activity counter, each replica counting the requests
    /// it handled. The cell names the first of those sources.
    fn summed(&self, columns: &[(usize, &Column<Cell>)], slices: &mut Slices) -> Column<MergedCell> {
        let mut merged = vec![MergedCell::EMPTY; self.layout.streams.len()];
        for &(source, column) in columns {
            let rows_of = &self.layout.rows_of[source];
            for (slot, cell) in column.iter() {
                let row = rows_of[slot] as usize;
                merged[row] = match merged[row].is_empty() {
                    true => MergedCell { value: cell.value, target: source as u32 },
                    false => MergedCell { value: merged[row].value + cell.value, target: merged[row].target },
                };
                slices.done(1);
            }
        }
        Column::Dense(merged)
    }

    /// (row, cell) pairs: for a family few streams have. Same choice as
    /// [`Merging::dense`].
    fn sparse(&self, columns: &[(usize, &Column<Cell>)], slices: &mut Slices) -> Column<MergedCell> {
        let mut candidates: Vec<(u32, u32, Cell)> =
            self.candidates(columns).map(|(row, source, cell)| (row as u32, source as u32, cell)).collect();
        slices.done(candidates.len());
        candidates.sort_unstable_by_key(|&(row, source, _)| (row, source));
        let (mut rows, mut cells) = (Vec::new(), Vec::new());
        for group in candidates.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(row, source, cell)) = group.iter().max_by_key(|(_, _, cell)| cell.changed_in) else { continue };
            rows.push(row);
            cells.push(MergedCell { value: cell.value, target: source });
        }
        Column::from_sorted(rows, cells, self.layout.streams.len())
    }
}

/// The streams of `previous` that no source lists now but whose marks are
/// kept: since when each has been unlisted.
fn unlisted(sources: &[Source<'_>], previous: &MergedView, now: u64, forgotten: &Forgotten) -> (Vec<(LabelSet, u64)>, usize) {
    let layout = &previous.layout;
    let mut kept: Vec<(LabelSet, u64)> = (0..layout.streams.len())
        .filter(|&row| !previous.marks[row].is_nan())
        .filter(|&row| !forgotten.contains(&owned(layout.streams[row].scope_and_stream())))
        .filter_map(|row| {
            let labels = &layout.streams[row].labels;
            let listed = sources.iter().any(|s| s.snapshot.index.contains_key(labels_str(labels)));
            let since = match layout.unlisted_since[row] {
                0 => now,
                since => since,
            };
            (!listed && !expired(since, now)).then(|| (labels.clone(), since))
        })
        .collect();
    // At most MAX_UNLISTED_MARKS, the most recently listed kept: a
    // controller that lists new names every scrape must not grow them
    // without bound.
    let dropped = kept.len().saturating_sub(MAX_UNLISTED_MARKS);
    if dropped > 0 {
        kept.sort_unstable_by_key(|&(_, since)| std::cmp::Reverse(since));
        kept.truncate(MAX_UNLISTED_MARKS);
    }
    (kept, dropped)
}

/// Streams no replica lists any more whose marks are kept at most. A mark
/// costs its label set and a row of the view, about 200 bytes.
pub const MAX_UNLISTED_MARKS: usize = 50_000;

/// A row's high-water mark and verdict, from the sources' scale-event
/// totals (`ranks`, None where a source does not report the stream's
/// counters), which sources list the stream (`slots`), and the row's mark
/// and verdict in the previous view.
/// `watched(i)` tells whether source `i` began to list the stream, or
/// changed it, after its first scrape.
fn judge(ranks: &[Option<f64>], slots: &[u32], before: Option<(f64, Verdict)>, watched: impl Fn(usize) -> bool) -> (f64, Verdict) {
    let highest = ranks.iter().flatten().copied().fold(f64::NAN, f64::max);
    let previous_mark = before.map_or(f64::NAN, |(mark, _)| mark);
    let mark = previous_mark.max(highest); // NaN only if both are
    let at_mark = |slot: u32, rank: &Option<f64>| present(slot).is_some() && (mark.is_nan() || *rank == Some(mark));
    let listed_at_mark = slots.iter().zip(ranks).any(|(&slot, rank)| at_mark(slot, rank));
    let watched_at_mark = || slots.iter().zip(ranks).enumerate().any(|(i, (&slot, rank))| at_mark(slot, rank) && watched(i));
    let verdict = match before {
        _ if !listed_at_mark => Verdict::Undecided,
        // The mark rose while the adapter watched a replica at it: a scale
        // it saw (not a replica's first scrape that brings a higher mark).
        Some(_) if rose(mark, previous_mark) && watched_at_mark() => Verdict::Current,
        // The mark never falls: unchanged unless it rose (NaN stays NaN for
        // a stream that never scaled).
        Some((_, Verdict::Current)) if !rose(mark, previous_mark) => Verdict::Current,
        // A new stream that a replica at the mark began to report while
        // the adapter watched it: created or scaled since.
        None if watched_at_mark() => Verdict::Current,
        // Known since before the adapter watched, or undecided until now:
        // the replica at the mark may have been stale all along.
        _ => Verdict::Unconfirmed,
    };
    (mark, verdict)
}

fn labels_str(labels: &LabelSet) -> &str {
    std::borrow::Borrow::borrow(labels)
}

/// A source's `segment_splits` and `segment_merges` columns.
type RankColumns<'a> = (Option<&'a Column<Cell>>, Option<&'a Column<Cell>>);

/// A replica's claim to know a stream's latest state: the number of scale
/// events it has seen (`None` if it reports neither counter).
///
/// Totals that are not whole numbers from 0 to 2^53 (where doubles stop
/// counting exactly) are not believed: `Err`, and the replica does not
/// rank for the stream.
fn scale_events((splits, merges): RankColumns<'_>, slot: usize) -> Result<Option<f64>, Implausible> {
    let get = |column: Option<&Column<Cell>>| column.and_then(|c| c.get(slot)).map(|c| c.value);
    let plausible = |total: Option<f64>| match total {
        Some(total) if !(0.0..MAX_EXACT).contains(&total) || total.fract() != 0.0 => Err(Implausible),
        total => Ok(total),
    };
    match (plausible(get(splits))?, plausible(get(merges))?) {
        (None, None) => Ok(None),
        (s, m) => Ok(Some(s.unwrap_or(0.0) + m.unwrap_or(0.0))),
    }
}

/// Whether `mark` is above `previous`: a stream's first scale event (from
/// no mark at all) counts.
pub fn rose(mark: f64, previous: f64) -> bool {
    mark > previous || (previous.is_nan() && !mark.is_nan())
}

/// 2^53: past it, consecutive whole numbers are not all doubles.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Whether `family` counts what one replica did (requests it handled,
/// retention runs it made) rather than stating a stream's state: Pravega's
/// per-stream counters (`_total`) and the retention-run summary. These
/// are summed over the live replicas; state gauges follow the replica at
/// the mark (see docs/inventory.md).
fn is_activity_counter(family: &str) -> bool {
    family.ends_with("_total")
        || family == "pravega_controller_retention_frequency_count"
        || family == "pravega_controller_retention_frequency_sum"
}

/// A replica's scale-event total that cannot be a count.
#[derive(Debug)]
struct Implausible;

/// Streams (scope, stream) deleted since the last merge: their marks and
/// verdicts start anew.
pub(super) type Forgotten = std::collections::HashSet<(String, String)>;

fn owned((scope, stream): (&str, &str)) -> (String, String) {
    (scope.to_owned(), stream.to_owned())
}

/// The family whose cells tell, beside the totals, when a replica began to
/// report a stream.
const COUNT_FAMILY: &str = "pravega_controller_segments_count";
