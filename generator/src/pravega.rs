//! Writing the load into Pravega: create the scope and stream with an
//! event-rate scaling policy (retrying while the controller is unavailable),
//! then write at the sinusoid's pace and flush on shutdown.

use crate::{Args, Metrics};
use generator::event::{routing_key, Event};
use generator::metrics::RateMeter;
use generator::rate::Pacer;
use pravega_client::client_factory::ClientFactoryAsync;
use pravega_client_config::ClientConfigBuilder;
use pravega_client_shared::{Retention, ScaleType, Scaling, Scope, ScopedStream, Stream, StreamConfiguration};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("flushing on shutdown failed: {0}")]
    Flush(String),
}

/// Pravega's acknowledgement of one event.
type Ack = tokio::sync::oneshot::Receiver<Result<(), pravega_client::error::Error>>;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(10);

pub async fn write(args: &Args, metrics: &Arc<Metrics>, ready: &AtomicBool, mut stopped: watch::Receiver<bool>) -> Result<(), WriteError> {
    let config = ClientConfigBuilder::default()
        .controller_uri(args.controller_uri.as_str())
        .build()
        .map_err(|e| WriteError::Config(e.to_string()))?;
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
    let flushed = writer.flush().await.map_err(|e| WriteError::Flush(e.to_string()));
    drop(acks);
    let _ = acknowledger.await;
    flushed
}

/// Creates the scope and stream, retrying with backoff while the controller
/// is unavailable; false if asked to stop first.
async fn ensure_stream(factory: &ClientFactoryAsync, stream: &ScopedStream, args: &Args, stopped: &mut watch::Receiver<bool>) -> bool {
    let config = StreamConfiguration {
        scoped_stream: stream.clone(),
        scaling: Scaling {
            scale_type: ScaleType::ByRateInEventsPerSec,
            target_rate: args.scaling_rate as i32,
            scale_factor: args.scale_factor as i32,
            min_num_segments: args.min_segments as i32,
        },
        retention: Retention::default(),
        tags: None,
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let controller = factory.controller_client();
        let created = match controller.create_scope(&stream.scope).await {
            Ok(_) => controller.create_stream(&config).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match created {
            Ok(()) => {
                tracing::info!(%stream, scaling_rate = args.scaling_rate, "stream ready");
                return true;
            }
            Err(error) => tracing::warn!(%error, retry_in = ?backoff, "cannot create the scope/stream; is the controller up?"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped.wait_for(|v| *v) => return false,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
