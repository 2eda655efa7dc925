//! One family's cells, by position (a snapshot's stream slot, a merged
//! view's row), stored densely where the family covers most positions and
//! as (position, cell) pairs where it covers few, so that a family costs
//! memory in proportion to the cells it has, not to the streams of the
//! target: a controller serving thousands of families of one stream each
//! costs thousands of cells, not thousands of columns of every stream.

/// A cell type whose NaN value marks an empty position.
pub(super) trait Slot: Copy {
    const EMPTY: Self;

    fn is_empty(&self) -> bool;
}

/// A column is dense when its cells cover at least half of the positions:
/// a dense cell costs 12 bytes per position, a sparse one 16 per cell, so
/// either way a column costs at most 24 bytes per cell it holds.
const DENSE_FRACTION: usize = 2;

#[derive(Debug)]
pub(super) enum Column<C> {
    /// Indexed by position; empty cells where the family has no value.
    Dense(Vec<C>),
    /// Strictly increasing positions and their cells.
    Sparse { positions: Vec<u32>, cells: Vec<C> },
}

impl<C: Slot> Column<C> {
    /// The column of `cells` at strictly increasing `positions`, each below
    /// `len`.
    pub(super) fn from_sorted(positions: Vec<u32>, mut cells: Vec<C>, len: usize) -> Self {
        debug_assert!(positions.windows(2).all(|w| w[0] < w[1]) && positions.last().is_none_or(|&p| (p as usize) < len));
        if cells.len() == len {
            // Every position in order: the cells are the dense vector.
            return Column::Dense(cells);
        }
        if Self::dense_for(cells.len(), len) {
            let mut dense = vec![C::EMPTY; len];
            for (&position, cell) in positions.iter().zip(&cells) {
                dense[position as usize] = *cell;
            }
            return Column::Dense(dense);
        }
        cells.shrink_to_fit();
        let mut positions = positions;
        positions.shrink_to_fit();
        Column::Sparse { positions, cells }
    }

    /// Whether storing `cells` cells among `len` positions is dense.
    pub(super) fn dense_for(cells: usize, len: usize) -> bool {
        cells * DENSE_FRACTION >= len
    }

    /// The cell at `position`, if it has a value.
    pub(super) fn get(&self, position: usize) -> Option<C> {
        let cell = match self {
            Column::Dense(cells) => *cells.get(position)?,
            Column::Sparse { positions, cells } => cells[positions.binary_search(&(position as u32)).ok()?],
        };
        (!cell.is_empty()).then_some(cell)
    }

    /// Cells with a value, by increasing position.
    pub(super) fn iter(&self) -> Cells<'_, C> {
        match self {
            Column::Dense(cells) => Cells::Dense(cells.iter().enumerate()),
            Column::Sparse { positions, cells } => Cells::Sparse(positions.iter().zip(cells)),
        }
    }

    /// How many positions the column stores: its cells if sparse, every
    /// position if dense (an upper bound on its cells).
    pub(super) fn stored(&self) -> usize {
        match self {
            Column::Dense(cells) => cells.len(),
            Column::Sparse { cells, .. } => cells.len(),
        }
    }

    /// A reader for increasing positions from `start` on, each found in
    /// constant time (see [`Cursor::at`]).
    pub(super) fn cursor(&self, start: usize) -> Cursor<'_, C> {
        let next = match self {
            Column::Dense(_) => 0,
            Column::Sparse { positions, .. } => positions.partition_point(|&p| (p as usize) < start),
        };
        Cursor { column: self, next }
    }
}

/// Reads a column at increasing positions; a sparse column is walked once
/// instead of searched per position.
#[derive(Clone, Copy)]
pub(super) struct Cursor<'a, C> {
    column: &'a Column<C>,
    /// The next sparse entry at or after the positions still to be read.
    next: usize,
}

impl<C: Slot> Cursor<'_, C> {
    /// The cell at `position`, which must not be below the last one read;
    /// empty where the column has no value.
    pub(super) fn at(&mut self, position: usize) -> C {
        match self.column {
            Column::Dense(cells) => cells.get(position).copied().unwrap_or(C::EMPTY),
            Column::Sparse { positions, cells } => {
                while positions.get(self.next).is_some_and(|&p| (p as usize) < position) {
                    self.next += 1;
                }
                match positions.get(self.next) {
                    Some(&p) if p as usize == position => cells[self.next],
                    _ => C::EMPTY,
                }
            }
        }
    }
}

/// See [`Column::iter`].
pub(super) enum Cells<'a, C> {
    Dense(std::iter::Enumerate<std::slice::Iter<'a, C>>),
    Sparse(std::iter::Zip<std::slice::Iter<'a, u32>, std::slice::Iter<'a, C>>),
}

impl<C: Slot> Iterator for Cells<'_, C> {
    type Item = (usize, C);

    fn next(&mut self) -> Option<(usize, C)> {
        match self {
            Cells::Dense(cells) => cells.find(|(_, c)| !c.is_empty()).map(|(p, c)| (p, *c)),
            Cells::Sparse(entries) => entries.next().map(|(&p, c)| (p as usize, *c)),
        }
    }
}
