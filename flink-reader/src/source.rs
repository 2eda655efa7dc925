//! Where events come from: a reader-group member (Pravega) or, in tests, an
//! in-memory queue behind the same trait.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// A reader-group member: hands out batches of events from the segments it
/// holds, and leaves the group so its segments go to the other readers.
pub trait EventSource: Send {
    /// The next batch (possibly empty when nothing is ready yet).
    fn next_batch(&mut self) -> impl Future<Output = Result<Vec<Vec<u8>>, SourceError>> + Send;
    /// Gives the held segments back and leaves the group.
    fn leave(self) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Events queued in memory; records whether the reader left cleanly.
#[derive(Clone, Default)]
pub struct MemorySource {
    inner: Arc<Mutex<MemoryState>>,
    batch: usize,
}

#[derive(Default)]
struct MemoryState {
    queue: VecDeque<Vec<u8>>,
    left: bool,
}

impl MemorySource {
    pub fn new(events: impl IntoIterator<Item = Vec<u8>>, batch: usize) -> Self {
        let state = MemoryState { queue: events.into_iter().collect(), left: false };
        MemorySource { inner: Arc::new(Mutex::new(state)), batch: batch.max(1) }
    }

    pub fn left(&self) -> bool {
        self.inner.lock().is_ok_and(|s| s.left)
    }

    pub fn remaining(&self) -> usize {
        self.inner.lock().map_or(0, |s| s.queue.len())
    }
}

impl EventSource for MemorySource {
    async fn next_batch(&mut self) -> Result<Vec<Vec<u8>>, SourceError> {
        let mut state = self.inner.lock().map_err(|_| SourceError("poisoned".into()))?;
        if state.left {
            return Err(SourceError("read after leaving the group".into()));
        }
        let n = self.batch.min(state.queue.len());
        Ok(state.queue.drain(..n).collect())
    }

    async fn leave(self) -> Result<(), SourceError> {
        self.inner.lock().map_err(|_| SourceError("poisoned".into()))?.left = true;
        Ok(())
    }
}
