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

/// How long a stream's high-water mark outlives the stream's last listing
/// by a live replica.
pub const MARK_RETENTION: Duration = Duration::from_secs(15 * 60);

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
    pub scraped_at: SystemTime,
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

/// Every live target's snapshot, merged: streams sorted by (scope, stream)
/// and one column of cells per family.
#[derive(Debug, Default)]
pub struct MergedView {
    layout: Arc<Layout>,
    columns: BTreeMap<Arc<str>, Vec<MergedCell>>,
    /// Per source target, when it was last scraped (ms since epoch); shared
    /// with the store, which updates it when a scrape changes nothing.
    scraped_at: Vec<Arc<AtomicU64>>,
    /// Per row, the stream's high-water mark (NaN: none) and verdict.
    marks: Vec<f64>,
    verdicts: Vec<Verdict>,
    /// When the merge ran, ms since epoch.
    merged_at: u64,
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
    /// Per row, since when (ms since epoch) no source lists the stream; 0
    /// while one does. Such rows hold a mark and no cells.
    unlisted_since: Vec<u64>,
    /// The earliest non-zero `unlisted_since`: the layout must be rebuilt
    /// once it is older than [`MARK_RETENTION`].
    oldest_unlisted: Option<u64>,
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
        let mut guesses = vec![0usize; sources.len()];
        for (stream, &since) in streams.iter().zip(&unlisted_since) {
            for (source, guess) in sources.iter().zip(&mut guesses) {
                let slot = if since == 0 { source.snapshot.locate(*guess, labels_str(&stream.labels)) } else { None };
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
        Layout {
            sources: sources.iter().map(|s| s.snapshot.index.clone()).collect(),
            streams,
            unlisted_since,
            oldest_unlisted,
            slots,
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
    /// series for no scope: a stream name alone does not narrow). Undecided
    /// streams come with a NaN value, so that the controller's API can be
    /// asked for them.
    pub fn narrowed(self, scope: Option<&str>, stream: Option<&str>) -> impl Iterator<Item = Series<'a>> {
        let view = self.view;
        let streams = &view.layout.streams;
        view.layout.rows(scope, stream).filter_map(move |i| {
            let cell = self.cells[i];
            let verdict = view.verdicts[i];
            if cell.value.is_nan() && verdict != Verdict::Undecided {
                return None;
            }
            let millis = match verdict {
                Verdict::Undecided => view.merged_at,
                _ => view.scraped_at[cell.target as usize].load(Ordering::Relaxed),
            };
            Some(Series {
                labels: &streams[i].labels,
                value: cell.value,
                scraped_at: SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
                verdict,
                mark: view.marks[i],
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

fn expired(unlisted_since: u64, now: u64) -> bool {
    now.saturating_sub(unlisted_since) > MARK_RETENTION.as_millis() as u64
}

/// Merges `sources` at `now` (ms since epoch), carrying the marks of
/// `previous` (the served view) over and reusing its layout if it still
/// fits the sources.
pub(super) fn merge(sources: &[Source<'_>], names: &[Arc<str>], previous: &MergedView, now: u64) -> MergedView {
    let find = |name: &str| names.iter().position(|n| &**n == name).map(|i| FamilyId(i as u32));
    let (splits, merges) = (find(SPLITS_FAMILY), find(MERGES_FAMILY));
    let reused = previous.layout.fits(sources, now);
    let layout = if reused { previous.layout.clone() } else { Arc::new(Layout::new(sources, unlisted(sources, previous, now))) };
    // Each row's mark and verdict in the previous view (None: a new stream).
    let previous_row = |row: usize| -> Option<(f64, Verdict)> {
        let old = if reused { row } else { previous.layout.row(&layout.streams[row].labels)? };
        Some((previous.marks[old], previous.verdicts[old]))
    };

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
    let mut marks = Vec::with_capacity(rows);
    let mut verdicts = Vec::with_capacity(rows);
    let mut ranks: Vec<Option<f64>> = vec![None; sources.len()];
    let width = sources.len();
    for row in 0..rows {
        let row_slots = &layout.slots[row * width..(row + 1) * width];
        if row % MERGE_SLICE == MERGE_SLICE - 1 {
            crate::resources::make_way();
        }
        for (i, &slot) in row_slots.iter().enumerate() {
            ranks[i] = present(slot).and_then(|slot| scale_events(rank_columns[i], slot));
        }
        let before = previous_row(row);
        let (mark, verdict) = judge(&ranks, row_slots, before);
        marks.push(mark);
        verdicts.push(verdict);
        // Only replicas at the mark compete; none does for an undecided row.
        let at_mark = |i: usize| present(row_slots[i]).is_some() && (mark.is_nan() || ranks[i] == Some(mark));
        for ((_, family_columns), merged) in families.iter().zip(&mut columns) {
            let best = (0..sources.len())
                .filter(|&i| verdict != Verdict::Undecided && at_mark(i))
                .filter_map(|i| {
                    let cell = family_columns[i]?[present(row_slots[i])?];
                    (!cell.is_empty()).then_some((i, cell))
                })
                .max_by_key(|(_, cell)| cell.changed_in);
            merged.push(match best {
                Some((i, cell)) => MergedCell { value: cell.value, target: i as u32 },
                None => MergedCell { value: f64::NAN, target: 0 },
            });
        }
    }
    // A family stays in the view while any live source reports it, even if
    // every stream it has is undecided: the controller's API may answer.
    let columns = families.iter().zip(columns).map(|((family, _), cells)| (names[family.0 as usize].clone(), cells)).collect();
    MergedView { layout, columns, scraped_at: sources.iter().map(|s| s.scraped_at.clone()).collect(), marks, verdicts, merged_at: now }
}

/// The streams of `previous` that no source lists now but whose marks are
/// kept: since when each has been unlisted.
fn unlisted(sources: &[Source<'_>], previous: &MergedView, now: u64) -> Vec<(LabelSet, u64)> {
    let layout = &previous.layout;
    (0..layout.streams.len())
        .filter(|&row| !previous.marks[row].is_nan())
        .filter_map(|row| {
            let labels = &layout.streams[row].labels;
            let listed = sources.iter().any(|s| s.snapshot.index.contains_key(labels_str(labels)));
            let since = match layout.unlisted_since[row] {
                0 => now,
                since => since,
            };
            (!listed && !expired(since, now)).then(|| (labels.clone(), since))
        })
        .collect()
}

/// A row's high-water mark and verdict, from the sources' scale-event
/// totals (`ranks`, None where a source does not report the stream's
/// counters), which sources list the stream (`slots`), and the row's mark
/// and verdict in the previous view.
fn judge(ranks: &[Option<f64>], slots: &[u32], before: Option<(f64, Verdict)>) -> (f64, Verdict) {
    let highest = ranks.iter().flatten().copied().fold(f64::NAN, f64::max);
    let previous_mark = before.map_or(f64::NAN, |(mark, _)| mark);
    let mark = previous_mark.max(highest); // NaN only if both are
    let at_mark = slots.iter().zip(ranks).any(|(&slot, rank)| present(slot).is_some() && (mark.is_nan() || *rank == Some(mark)));
    let verdict = match before {
        _ if !at_mark => Verdict::Undecided,
        // The mark rose while the adapter watched: a scale it saw.
        Some(_) if mark > previous_mark => Verdict::Current,
        Some((_, Verdict::Current)) => Verdict::Current,
        // New, or undecided until now: the replica at the mark may have
        // been stale all along.
        _ => Verdict::Unconfirmed,
    };
    (mark, verdict)
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
