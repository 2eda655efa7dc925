//! flink-reader: a reader-group member on a Pravega stream that burns a
//! configurable CPU cost per event, standing in for a Flink TaskManager.
//! On SIGTERM it leaves the reader group so its segments are reassigned.

mod pravega;

use clap::Parser;
use flink_reader::read_loop::{self, ReaderMetrics};
use pravega_workload::{controller, http, process};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "flink-reader", version, about = "Reads a Pravega stream in a reader group, with a CPU cost per event.")]
struct Args {
    /// Pravega controller gRPC endpoint.
    #[arg(long, visible_alias = "uri", env = "FLINK_READER_CONTROLLER_URI", default_value = "tcp://127.0.0.1:9090")]
    controller_uri: String,
    #[arg(long, env = "FLINK_READER_SCOPE", default_value = "test")]
    scope: String,
    #[arg(long, env = "FLINK_READER_STREAM", default_value = "stream")]
    stream: String,
    /// Reader group shared by all replicas.
    #[arg(long, env = "FLINK_READER_READER_GROUP", default_value = "flink-taskmanager")]
    reader_group: String,
    /// This reader's name in the group (default: the pod's hostname).
    #[arg(long, env = "FLINK_READER_READER_ID")]
    reader_id: Option<String>,
    /// CPU cost per event: rounds of hashing (as the original busy reader).
    #[arg(long, env = "FLINK_READER_ITERATIONS", default_value_t = 1000)]
    iterations: u32,
    /// Record every event read (`sequence created_ms read_ms` per line) in
    /// this file, appending; for tests that check a whole group's reads.
    #[arg(long, env = "FLINK_READER_SEQUENCE_LOG")]
    sequence_log: Option<std::path::PathBuf>,
    /// Address for /metrics, /livez, /readyz.
    #[arg(long, env = "FLINK_READER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    process::main(|| run(args))
}

async fn run(args: Args) -> process::Outcome {
    // Checked before anything starts: the client panics on a malformed URI.
    let client_config = controller::client_config(&args.controller_uri)?;
    let log = match &args.sequence_log {
        Some(path) => Some(read_loop::SequenceLog::new(
            std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => None,
    };
    let metrics = Arc::new(ReaderMetrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let render = {
        let m = metrics.clone();
        move || m.render()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(http::serve(args.listen, http::router(render, ready.clone()), stopped.clone()));
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal::wait().await;
        let _ = on_signal.send(true);
    });
    let reader_id =
        args.reader_id.clone().or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| format!("reader-{}", std::process::id()));
    let mut joining = stopped.clone();
    let Some(source) =
        pravega::PravegaSource::join(client_config, &args.scope, &args.stream, &args.reader_group, &reader_id, &mut joining).await
    else {
        return Ok(server.await??);
    };
    ready.store(true, Ordering::Relaxed);
    tracing::info!(%reader_id, group = %args.reader_group, "reading");
    let read = read_loop::run(source, args.iterations, &metrics, log, stopped).await;
    // A failed read ends the process too, so the pod restarts and rejoins.
    let _ = stop.send(true);
    server.await??;
    Ok(read?)
}
