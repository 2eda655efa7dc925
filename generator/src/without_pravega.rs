//! The `pravega` module of a generator built without its `pravega` feature
//! (as `make run` builds it): the same two calls, of which the first always
//! fails, so only `--simulate` runs.

use crate::{Args, Metrics};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::watch;

/// No client configuration exists without Pravega.
pub enum ClientConfig {}

/// Nothing is written, so nothing fails to be.
pub type WriteError = std::convert::Infallible;

#[derive(Debug, thiserror::Error)]
#[error(
    "this generator is built without the `pravega` feature: only --simulate runs (build it with default features to write into Pravega)"
)]
pub struct BuiltWithoutPravega;

pub fn client_config(_uri: &str) -> Result<ClientConfig, BuiltWithoutPravega> {
    Err(BuiltWithoutPravega)
}

pub async fn write(
    config: ClientConfig,
    _args: &Args,
    _metrics: &Arc<Metrics>,
    _ready: &AtomicBool,
    _stopped: watch::Receiver<bool>,
) -> Result<(), WriteError> {
    match config {}
}
