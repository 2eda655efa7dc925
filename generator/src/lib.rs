//! The generator's parts that need no Pravega: the sinusoidal rate, event
//! encoding, the simulated controller (stream auto-scaling model and its
//! Prometheus exposition) and the generator's own metrics. The Pravega
//! writer lives in the binary (`src/pravega.rs`).

pub mod event;
pub mod http;
pub mod metrics;
pub mod rate;
pub mod simulate;
