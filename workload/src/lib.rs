//! What the workload binaries (generator, flink-reader) share: the process
//! frame (logging, runtime, exit code), the `/metrics`, `/livez`
//! and `/readyz` endpoints and the rates they report, the event format,
//! the Pravega controller's client configuration from a checked URI
//! (feature `pravega`), and retrying with backoff while the controller is
//! not up.

#[cfg(feature = "pravega")]
pub mod controller;
pub mod event;
pub mod http;
pub mod metrics;
pub mod process;
pub mod retry;
