//! The Pravega side: join the reader group and read the segments it assigns.

use flink_reader::source::{EventSource, SourceError};
use pravega_client::client_factory::ClientFactoryAsync;
use pravega_client::event::reader::EventReader;
use pravega_client::event::reader_group_state::ReaderGroupStateError;
use pravega_client_config::ClientConfig;
use pravega_client_shared::{Scope, ScopedStream, Stream};
use pravega_workload::retry;
use tokio::sync::watch;

pub struct PravegaSource {
    reader: EventReader,
}

impl PravegaSource {
    /// Joins (creating if needed) `group` on `scope/stream` as `reader_id`,
    /// retrying while the controller is unavailable; `None` if stopped first.
    pub async fn join(
        config: ClientConfig,
        scope: &str,
        stream: &str,
        group: &str,
        reader_id: &str,
        stopped: &mut watch::Receiver<bool>,
    ) -> Option<Self> {
        let factory = ClientFactoryAsync::new(config, tokio::runtime::Handle::current());
        let stream = ScopedStream { scope: Scope { name: scope.to_owned() }, stream: Stream { name: stream.to_owned() } };
        let reader = retry::with_backoff("joining the reader group", stopped, || {
            let (factory, stream, group, reader_id) = (factory.clone(), stream.clone(), group.to_owned(), reader_id.to_owned());
            // The client panics instead of returning some errors (a reader
            // already in the group, an unreachable controller): a task turns
            // the panic into an error that is retried.
            let attempt = tokio::spawn(async move {
                let group = factory.create_reader_group(group, stream).await;
                // A restarted pod keeps its name: release what its previous
                // life held, or create_reader panics on the duplicate.
                match group.reader_offline(reader_id.clone(), None).await {
                    Ok(()) | Err(ReaderGroupStateError::ReaderAlreadyOfflineError { .. }) => {}
                    Err(error) => return Err(SourceError::pravega("taking the reader's previous life offline", error)),
                }
                Ok(group.create_reader(reader_id).await)
            });
            async move { attempt.await.map_err(SourceError::ClientPanicked)? }
        })
        .await?;
        Some(PravegaSource { reader })
    }
}

impl EventSource for PravegaSource {
    async fn next_batch(&mut self) -> Result<Vec<Vec<u8>>, SourceError> {
        let Some(mut slice) = self.reader.acquire_segment().await.map_err(|e| SourceError::pravega("acquiring a segment", e))? else {
            return Ok(Vec::new());
        };
        let events = (&mut slice).map(|event| event.value).collect();
        self.reader.release_segment(slice).await.map_err(|e| SourceError::pravega("releasing a segment", e))?;
        Ok(events)
    }

    async fn leave(mut self) -> Result<(), SourceError> {
        self.reader.reader_offline().await.map_err(|e| SourceError::pravega("leaving the reader group", e))
    }
}
