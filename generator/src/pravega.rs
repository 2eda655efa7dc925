//! Writing the load into Pravega: create the scope and stream with an
//! event-rate scaling policy (retrying while the controller is unavailable),
//! then write at the sinusoid's pace and flush on shutdown.

use crate::{Args, Metrics};
use generator::rate::Pacer;
use pravega_client::client_factory::ClientFactoryAsync;
use pravega_client_config::ClientConfig;
use pravega_client_shared::{Retention, ScaleType, Scaling, Scope, ScopedStream, Stream, StreamConfiguration};
use pravega_workload::event::{routing_key, Event};
use pravega_workload::metrics::RateMeter;
use pravega_workload::retry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The controller's client configuration, checked before anything starts:
/// the client panics on a malformed URI.
pub use pravega_workload::controller::client_config;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("flushing on shutdown failed")]
    Flush(#[source] pravega_client::error::Error),
}

/// Pravega's acknowledgement of one event.
type Ack = tokio::sync::oneshot::Receiver<Result<(), pravega_client::error::Error>>;

const TICK: Duration = Duration::from_millis(10);

/// Writes until `stopped` turns true, then flushes what is in flight.
pub async fn write(
    config: ClientConfig,
    args: &Args,
    metrics: &Arc<Metrics>,
    ready: &AtomicBool,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), WriteError> {
    let factory = ClientFactoryAsync::new(config, tokio::runtime::Handle::current());
    let stream = ScopedStream { scope: Scope { name: args.scope.clone() }, stream: Stream { name: args.stream.clone() } };
    if !ensure_stream(&factory, &stream, args, &mut stopped).await {
        return Ok(());
    }
    ready.store(true, Ordering::Relaxed);
    let mut writer = factory.create_event_writer(stream);
    // Acknowledgements are awaited in order by a separate task, so writing
    // never waits for Pravega's round trip.
    let (acks, mut pending) = tokio::sync::mpsc::channel::<(Instant, Ack)>(100_000);
    let ack_metrics = metrics.clone();
    let acknowledger = tokio::spawn(async move {
        while let Some((sent, ack)) = pending.recv().await {
            match ack.await {
                Ok(Ok(())) => {
                    ack_metrics.events_written.add(1);
                    ack_metrics.write_latency.observe(sent.elapsed());
                }
                _ => ack_metrics.write_errors.add(1),
            }
        }
    });
    let mut pacer = Pacer::new(args.shape());
    let mut meter = RateMeter::new(0);
    let (started, mut sequence, mut last_report) = (Instant::now(), 0u64, Instant::now());
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|v| *v) => break,
        }
        let elapsed = started.elapsed();
        metrics.target_rate.set(args.shape().rate_at(elapsed));
        for _ in 0..pacer.due(elapsed) {
            let event = Event::now(sequence).encode(args.event_size);
            let ack = writer.write_event_by_routing_key(routing_key(sequence, args.routing_keys), event).await;
            sequence += 1;
            if acks.send((Instant::now(), ack)).await.is_err() {
                break;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            metrics.actual_rate.set(meter.tick(metrics.events_written.get()));
            last_report = Instant::now();
        }
    }
    tracing::info!(events = sequence, "flushing before exit");
    let flushed = writer.flush().await.map_err(WriteError::Flush);
    drop(acks);
    let _ = acknowledger.await;
    tracing::info!(
        events = sequence,
        acknowledged = metrics.events_written.get(),
        failed = metrics.write_errors.get(),
        "all acknowledgements in"
    );
    flushed
}

/// Creates the scope and stream, retrying with backoff while the controller
/// is unavailable; false if asked to stop first.
async fn ensure_stream(factory: &ClientFactoryAsync, stream: &ScopedStream, args: &Args, stopped: &mut watch::Receiver<bool>) -> bool {
    let config = StreamConfiguration {
        scoped_stream: stream.clone(),
        scaling: Scaling {
            scale_type: if args.scaling_rate == 0 { ScaleType::FixedNumSegments } else { ScaleType::ByRateInEventsPerSec },
            target_rate: args.scaling_rate as i32,
            scale_factor: args.scale_factor as i32,
            min_num_segments: args.min_segments as i32,
        },
        retention: Retention::default(),
        tags: None,
    };
    let created = retry::with_backoff("creating the scope and stream (is the controller up?)", stopped, || async {
        let controller = factory.controller_client();
        controller.create_scope(&stream.scope).await?;
        controller.create_stream(&config).await.map(|_| ())
    })
    .await;
    if created.is_some() {
        tracing::info!(%stream, scaling_rate = args.scaling_rate, "stream ready");
    }
    created.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use pravega_client_config::connection_type::{ConnectionType, MockType};
    use pravega_client_config::ClientConfigBuilder;

    /// The client's mock mode: an in-process controller and segment store
    /// that accept the scope, the stream and appends (it cannot serve reads).
    fn mock_config() -> ClientConfig {
        ClientConfigBuilder::default()
            .connection_type(ConnectionType::Mock(MockType::Happy))
            .mock(true)
            .controller_uri(pravega_client_config::MOCK_CONTROLLER_URI)
            .build()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn creates_the_stream_writes_at_the_pace_and_flushes_on_stop() {
        // The mock controller cannot scale: a fixed three segments.
        let args =
            Args::parse_from(["generator", "--scaling-rate", "0", "--min-segments", "3", "--min-rate", "1000", "--max-rate", "1000"]);
        let (metrics, ready) = (Arc::new(Metrics::default()), Arc::new(AtomicBool::new(false)));
        let (stop, stopped) = watch::channel(false);
        let writer = {
            let (args, metrics, ready) = (args.clone(), metrics.clone(), ready.clone());
            tokio::spawn(async move { write(mock_config(), &args, &metrics, &ready, stopped).await })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while metrics.events_written.get() < 500 {
            assert!(Instant::now() < deadline, "only {} events acknowledged", metrics.events_written.get());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ready.load(Ordering::Relaxed), "ready once the stream exists");
        stop.send(true).unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(metrics.write_errors.get(), 0);
        assert_eq!(metrics.target_rate.get(), 1000.0);
        let written = metrics.events_written.get();
        assert_eq!(metrics.write_latency.count(), written, "every acknowledged event was timed");
        let text = metrics.render();
        assert!(text.contains(&format!("generator_events_written_total {written}")), "{text}");
    }
}
