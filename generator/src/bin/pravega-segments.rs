//! pravega-segments: asks a Pravega controller, over its gRPC API
//! (ControllerService.getCurrentSegments), for a stream's current segments
//! and prints how many there are, then their ids and key ranges. This is the
//! truth the tests compare the controllers' `segments_count` gauges with.

use clap::Parser;
use pravega_client::client_factory::ClientFactoryAsync;
use pravega_client_shared::{Scope, ScopedStream, Stream};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "pravega-segments", version, about = "Prints a stream's current segment count, from the controller's gRPC API.")]
struct Args {
    /// Pravega controller gRPC endpoint.
    #[arg(long, default_value = "tcp://127.0.0.1:9090")]
    controller_uri: String,
    #[arg(long, default_value = "test")]
    scope: String,
    #[arg(long, default_value = "stream")]
    stream: String,
    /// Give up after this long (the client retries on its own).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pravega_workload::process::main(|| run(args))
}

async fn run(args: Args) -> pravega_workload::process::Outcome {
    let config = pravega_workload::controller::client_config(&args.controller_uri)?;
    let factory = ClientFactoryAsync::new(config, tokio::runtime::Handle::current());
    let stream = ScopedStream { scope: Scope { name: args.scope }, stream: Stream { name: args.stream } };
    let controller = factory.controller_client();
    let segments = tokio::time::timeout(args.timeout, controller.get_current_segments(&stream))
        .await
        .map_err(|_| format!("no answer from {} within {:?}", args.controller_uri, args.timeout))?
        .map_err(|e| format!("getCurrentSegments({stream}) failed: {e:?}"))?;
    // A segment id is the segment's number in its low 32 bits and the epoch
    // that created it in the high 32: printed as number.epoch.
    let ranges = segments.key_segment_map.values().map(|s| {
        let id = s.scoped_segment.segment.number;
        format!("{}.{}:[{:.3},{:.3})", id & 0xffff_ffff, id >> 32, s.min_key.0, s.max_key.0)
    });
    println!("{} {}", segments.key_segment_map.len(), ranges.collect::<Vec<_>>().join(" "));
    Ok(())
}
