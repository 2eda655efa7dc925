//! The generator's parts that need no Pravega: the sinusoidal rate, event
//! encoding, the simulated controller (stream auto-scaling model and its
//! Prometheus exposition), the generator's own metrics, and how both
//! binaries reach the controller (checked URI, retry with backoff). The
//! Pravega writer lives in the binary (`src/pravega.rs`).

pub mod controller;
pub mod event;
pub mod http;
pub mod metrics;
pub mod rate;
pub mod simulate;
