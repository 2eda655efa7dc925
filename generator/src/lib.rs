//! The generator's parts that need no Pravega: the sinusoidal rate and the
//! simulated controller (stream auto-scaling model and its Prometheus
//! exposition). The Pravega writer lives in the binary (`src/pravega.rs`);
//! what the generator shares with flink-reader is the `pravega-workload`
//! crate.

pub mod rate;
pub mod simulate;
