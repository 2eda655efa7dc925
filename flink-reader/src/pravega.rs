//! The Pravega side: join the reader group and read the segments it assigns.

use flink_reader::source::{EventSource, SourceError};
use pravega_client::client_factory::ClientFactoryAsync;
use pravega_client::event::reader::EventReader;
use pravega_client_config::ClientConfigBuilder;
use pravega_client_shared::{Scope, ScopedStream, Stream};

pub struct PravegaSource {
    reader: EventReader,
}

impl PravegaSource {
    /// Joins (creating if needed) `group` on `scope/stream` as `reader_id`.
    pub async fn join(uri: &str, scope: &str, stream: &str, group: &str, reader_id: &str) -> Result<Self, SourceError> {
        let config = ClientConfigBuilder::default().controller_uri(uri).build().map_err(|e| SourceError(e.to_string()))?;
        let factory = ClientFactoryAsync::new(config, tokio::runtime::Handle::current());
        let stream = ScopedStream { scope: Scope { name: scope.to_owned() }, stream: Stream { name: stream.to_owned() } };
        let group = factory.create_reader_group(group.to_owned(), stream).await;
        let reader = group.create_reader(reader_id.to_owned()).await;
        Ok(PravegaSource { reader })
    }
}

impl EventSource for PravegaSource {
    async fn next_batch(&mut self) -> Result<Vec<Vec<u8>>, SourceError> {
        let Some(mut slice) = self.reader.acquire_segment().await.map_err(|e| SourceError(format!("{e:?}")))? else {
            return Ok(Vec::new());
        };
        let events = (&mut slice).map(|event| event.value).collect();
        self.reader.release_segment(slice).await.map_err(|e| SourceError(format!("{e:?}")))?;
        Ok(events)
    }

    async fn leave(mut self) -> Result<(), SourceError> {
        self.reader.reader_offline().await.map_err(|e| SourceError(format!("{e:?}")))
    }
}
