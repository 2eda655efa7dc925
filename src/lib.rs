//! Pravega metrics adapter: a Kubernetes aggregated API server serving
//! Pravega controller metrics as custom and external metrics.
pub mod parse;
