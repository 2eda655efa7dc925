//! pravega-segments: asks a Pravega controller, over its gRPC API
//! (ControllerService.getCurrentSegments), for a stream's current segments
//! and prints how many there are, then their ids and key ranges. This is the
//! truth the tests compare the controllers' `segments_count` gauges with.
//!
//! Its subcommands change streams the way an operator does, through the same
//! API: `create` (a fixed number of segments), `split` (a manual scale),
//! `seal`, `delete`; `all` prints the truth for every stream at once.

use clap::{Parser, Subcommand};
use pravega_client::client_factory::ClientFactoryAsync;
use pravega_client_shared::{CToken, Retention, ScaleType, Scaling, Scope, ScopedStream, Stream, StreamConfiguration};
use pravega_controller_client::ControllerClient;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "pravega-segments", version, about = "Prints a stream's current segment count, from the controller's gRPC API.")]
struct Args {
    /// Pravega controller gRPC endpoint.
    #[arg(long, global = true, default_value = "tcp://127.0.0.1:9090")]
    controller_uri: String,
    #[arg(long, global = true, default_value = "test")]
    scope: String,
    #[arg(long, global = true, default_value = "stream")]
    stream: String,
    /// Give up after this long (the client retries on its own).
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Without a subcommand: print the stream's current segments.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates the scope if missing, then the stream with a fixed number of
    /// segments (a policy that never scales on its own).
    Create {
        /// The stream's segments, now and always.
        #[arg(long)]
        segments: u32,
    },
    /// Splits the stream's segment with the lowest keys into two halves, as
    /// a manual scale; returns once the controller has completed it.
    Split,
    /// Seals the stream: it keeps existing, with no current segments.
    Seal,
    /// Deletes the stream (Pravega deletes only sealed streams).
    Delete,
    /// Prints `scope/stream count` for every stream of every scope, one a
    /// line. Names starting with `_` (Pravega's internal scope and streams)
    /// are left out, as the adapter leaves them out.
    All,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pravega_workload::process::main(|| async move {
        let timeout = args.timeout;
        let uri = args.controller_uri.clone();
        tokio::time::timeout(timeout, run(args)).await.map_err(|_| format!("no answer from {uri} within {timeout:?}"))?
    })
}

async fn run(args: Args) -> pravega_workload::process::Outcome {
    let config = pravega_workload::controller::client_config(&args.controller_uri)?;
    let factory = ClientFactoryAsync::new(config, tokio::runtime::Handle::current());
    let controller = factory.controller_client();
    let stream = ScopedStream { scope: Scope { name: args.scope }, stream: Stream { name: args.stream } };
    match args.command {
        None => {
            let segments =
                controller.get_current_segments(&stream).await.map_err(|e| format!("getCurrentSegments({stream}) failed: {e:?}"))?;
            // A segment id is the segment's number in its low 32 bits and the
            // epoch that created it in the high 32: printed as number.epoch.
            let ranges = segments.key_segment_map.values().map(|s| {
                let id = s.scoped_segment.segment.number;
                format!("{}.{}:[{:.3},{:.3})", id & 0xffff_ffff, id >> 32, s.min_key.0, s.max_key.0)
            });
            println!("{} {}", segments.key_segment_map.len(), ranges.collect::<Vec<_>>().join(" "));
        }
        Some(Command::Create { segments }) => {
            controller.create_scope(&stream.scope).await.map_err(|e| format!("createScope({}) failed: {e:?}", stream.scope))?;
            let config = StreamConfiguration {
                scoped_stream: stream.clone(),
                scaling: Scaling {
                    scale_type: ScaleType::FixedNumSegments,
                    target_rate: 0,
                    scale_factor: 0,
                    min_num_segments: segments as i32,
                },
                retention: Retention::default(),
                tags: None,
            };
            let created = controller.create_stream(&config).await.map_err(|e| format!("createStream({stream}) failed: {e:?}"))?;
            if !created {
                return Err(format!("{stream} exists already").into());
            }
            println!("created {stream} with {segments} segments");
        }
        Some(Command::Split) => {
            let segments =
                controller.get_current_segments(&stream).await.map_err(|e| format!("getCurrentSegments({stream}) failed: {e:?}"))?;
            let first = segments.key_segment_map.values().next().ok_or_else(|| format!("{stream} has no current segment"))?;
            let (low, high) = (first.min_key.0, first.max_key.0);
            let middle = (low + high) / 2.0;
            controller
                .scale_stream(&stream, std::slice::from_ref(&first.scoped_segment.segment), &[(low, middle), (middle, high)])
                .await
                .map_err(|e| format!("scale({stream}) failed: {e:?}"))?;
            println!("split {stream}'s segment [{low:.3},{high:.3}) into two");
        }
        Some(Command::Seal) => {
            controller.seal_stream(&stream).await.map_err(|e| format!("sealStream({stream}) failed: {e:?}"))?;
            println!("sealed {stream}");
        }
        Some(Command::Delete) => {
            controller.delete_stream(&stream).await.map_err(|e| format!("deleteStream({stream}) failed: {e:?}"))?;
            println!("deleted {stream}");
        }
        Some(Command::All) => {
            for stream in all_streams(controller).await? {
                match controller.get_current_segments(&stream).await {
                    Ok(segments) => println!("{stream} {}", segments.key_segment_map.len()),
                    // Deleted since it was listed.
                    Err(e) if format!("{e:?}").contains("NotFound") => {}
                    Err(e) => return Err(format!("getCurrentSegments({stream}) failed: {e:?}").into()),
                }
            }
        }
    }
    Ok(())
}

/// Every stream of every scope, following the continuation tokens until an
/// empty page; names starting with `_` left out.
async fn all_streams(controller: &dyn ControllerClient) -> Result<Vec<ScopedStream>, String> {
    let mut scopes = Vec::new();
    let mut token = CToken::empty();
    while let Some((page, next)) = controller.list_scopes(&token).await.map_err(|e| format!("listScopes failed: {e:?}"))? {
        scopes.extend(page.into_iter().filter(|s| !s.name.starts_with('_')));
        token = next;
    }
    let mut streams = Vec::new();
    for scope in scopes {
        let mut token = CToken::empty();
        while let Some((page, next)) =
            controller.list_streams(&scope, &token).await.map_err(|e| format!("listStreamsInScope({scope}) failed: {e:?}"))?
        {
            streams.extend(page.into_iter().filter(|s| !s.stream.name.starts_with('_')));
            token = next;
        }
    }
    streams.sort_by(|a, b| (&a.scope.name, &a.stream.name).cmp(&(&b.scope.name, &b.stream.name)));
    Ok(streams)
}
