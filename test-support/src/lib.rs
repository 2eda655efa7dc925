//! What the adapter's tests and benchmarks, and the generator's tests,
//! share: fake Pravega controllers and a fake of their gRPC API, controller
//! expositions, the adapter
//! binary as a child process, the requests made of it, a stub Kubernetes
//! API with a throw-away PKI, and the benchmarks' load and measurements.
//! A dev-dependency only.

pub mod adapter;
pub mod bench;
pub mod controller_api;
pub mod exposition;
pub mod fake_controller;
pub mod kube_api;
pub mod net;
pub mod pki;
pub mod queries;
pub mod repo;
pub mod store;
