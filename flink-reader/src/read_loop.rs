//! The reader's loop: take batches, do the per-event work, count, and leave
//! the reader group when asked to stop so the segments are reassigned.

use crate::source::{EventSource, SourceError};
use crate::work;
use pravega_workload::event::Event;
use pravega_workload::metrics::RateMeter;
use prom_text::{Counter, Exposition, Gauge, Timer};
use std::io::Write;
use std::time::Duration;
use tokio::sync::watch;

/// Where the reader records each event it processed, one line per event:
/// `sequence created_ms read_ms` (milliseconds since the Unix epoch), so a
/// test can check over all readers of a group that no event was lost and
/// count the duplicates, and see when each was read. Written per batch.
pub struct SequenceLog {
    out: Box<dyn Write + Send>,
}

impl SequenceLog {
    pub fn new(out: impl Write + Send + 'static) -> Self {
        SequenceLog { out: Box::new(std::io::BufWriter::new(out)) }
    }

    fn record(&mut self, event: &Event, read_ms: u64) -> std::io::Result<()> {
        writeln!(self.out, "{} {} {}", event.sequence, event.created_ms, read_ms)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[derive(Default)]
pub struct ReaderMetrics {
    pub events: Counter,
    pub events_per_second: Gauge,
    pub malformed: Counter,
    /// Time from an event's creation (by the generator) to its processing.
    pub end_to_end: Timer,
}

impl ReaderMetrics {
    pub fn render(&self) -> String {
        Exposition::default()
            .counter("flink_reader_events_total", "Events read and processed.", &self.events)
            .gauge("flink_reader_events_per_second", "Events processed per second over the last second.", self.events_per_second.get())
            .counter("flink_reader_malformed_events_total", "Events without the generator's header.", &self.malformed)
            .timer("flink_reader_end_to_end_seconds", "From the generator writing an event to its processing.", &self.end_to_end)
            .finish()
    }
}

/// How long to wait when the source had nothing.
const IDLE: Duration = Duration::from_millis(50);

/// Reads until `stop` turns true, then leaves the group.
pub async fn run<S: EventSource>(
    mut source: S,
    iterations: u32,
    metrics: &ReaderMetrics,
    mut log: Option<SequenceLog>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let mut meter = RateMeter::new(0);
    let mut last_report = std::time::Instant::now();
    while !*stop.borrow() {
        let batch = tokio::select! {
            batch = source.next_batch() => batch?,
            _ = stop.wait_for(|v| *v) => break,
        };
        if batch.is_empty() {
            tokio::time::sleep(IDLE).await;
        }
        let read_ms = epoch_millis::now();
        for event in &batch {
            work::process(event, iterations);
            match Event::decode(event) {
                Ok(header) => {
                    metrics.end_to_end.observe(header.age());
                    if let Some(log) = log.as_mut() {
                        log.record(&header, read_ms).map_err(SourceError::SequenceLog)?;
                    }
                }
                Err(_) => metrics.malformed.add(1),
            }
            metrics.events.add(1);
        }
        if let (Some(log), false) = (log.as_mut(), batch.is_empty()) {
            log.flush().map_err(SourceError::SequenceLog)?;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            metrics.events_per_second.set(meter.tick(metrics.events.get()));
            last_report = std::time::Instant::now();
        }
    }
    tracing::info!(events = metrics.events.get(), "leaving the reader group");
    source.leave().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    #[tokio::test]
    async fn processes_every_event_then_leaves_on_stop() {
        let events: Vec<Vec<u8>> = (0..500).map(|i| Event::now(i).encode(32)).chain([b"junk".to_vec()]).collect();
        let source = MemorySource::new(events, 64);
        let metrics = ReaderMetrics::default();
        let (stop, stopped) = watch::channel(false);
        let probe = source.clone();
        let lines = SharedBuffer::default();
        let reader = run(source, 10, &metrics, Some(SequenceLog::new(lines.clone())), stopped);
        let stopper = async {
            while probe.remaining() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.send(true).unwrap();
        };
        let (result, ()) = tokio::join!(reader, stopper);
        result.unwrap();
        assert_eq!(metrics.events.get(), 501);
        assert_eq!(metrics.malformed.get(), 1);
        assert!(probe.left(), "the reader must leave the group on stop");
        let text = metrics.render();
        assert!(text.contains("flink_reader_events_total 501"), "{text}");
        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let sequences: Vec<u64> = logged.lines().map(|l| l.split(' ').next().unwrap().parse().unwrap()).collect();
        assert_eq!(sequences, (0..500).collect::<Vec<_>>(), "every well-formed event logged once, in order");
        assert!(logged.lines().all(|l| l.split(' ').count() == 3), "{logged}");
    }

    /// A `Write` whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failing_source_stops_the_loop_with_its_error() {
        let source = MemorySource::new([], 1);
        source.clone().leave().await.unwrap(); // reading now fails
        let (_stop, stopped) = watch::channel(false);
        let error = run(source, 1, &ReaderMetrics::default(), None, stopped).await.unwrap_err();
        assert!(error.to_string().contains("after leaving"));
    }
}
