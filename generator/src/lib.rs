//! The generator's parts that need no Pravega: the sinusoidal rate, event
//! encoding, the simulated controller (stream auto-scaling model and its
//! Prometheus exposition), the generator's own metrics, and what both
//! binaries share: reaching the controller (checked URI, retry with
//! backoff), the HTTP endpoints, the process frame. The Pravega writer
//! lives in the binary (`src/pravega.rs`).

pub mod controller;
pub mod event;
pub mod http;
pub mod metrics;
pub mod process;
pub mod rate;
pub mod simulate;
