//! Where events come from: a reader-group member (Pravega) or, in tests, an
//! in-memory queue behind the same trait.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A call of the Pravega client failed; `what` names the call.
    #[error("{what} failed")]
    Pravega {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Pravega client panicked (it panics instead of returning some
    /// errors) in the task that ran it.
    #[error("the Pravega client panicked")]
    ClientPanicked(#[source] tokio::task::JoinError),
    #[error("writing the sequence log failed")]
    SequenceLog(#[source] std::io::Error),
    #[error("read after leaving the group")]
    Left,
    #[error("the in-memory source's lock is poisoned")]
    Poisoned,
}

impl SourceError {
    /// Wraps an error of the Pravega client call `what`.
    pub fn pravega(what: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SourceError::Pravega { what, source: source.into() }
    }
}

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
        let mut state = self.inner.lock().map_err(|_| SourceError::Poisoned)?;
        if state.left {
            return Err(SourceError::Left);
        }
        let n = self.batch.min(state.queue.len());
        Ok(state.queue.drain(..n).collect())
    }

    async fn leave(self) -> Result<(), SourceError> {
        self.inner.lock().map_err(|_| SourceError::Poisoned)?.left = true;
        Ok(())
    }
}
