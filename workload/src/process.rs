//! What both workload binaries do as processes: log to stderr, run on a
//! Tokio runtime, turn the outcome into the exit code.

use std::future::Future;
use std::process::ExitCode;

pub type Outcome = Result<(), Box<dyn std::error::Error>>;

/// Sets up logging to stderr (`RUST_LOG`, default `info`; stdout stays
/// for what a tool prints), runs `run` to completion
/// and exits non-zero, with the error logged, if it fails.
pub fn main<F: Future<Output = Outcome>>(run: impl FnOnce() -> F) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let outcome = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => Err(format!("cannot start the runtime: {error}").into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exiting");
            ExitCode::FAILURE
        }
    }
}
