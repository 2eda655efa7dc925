//! What the serving and baseline benchmarks share: the adapter set up as in
//! a cluster, an open-loop query load, and what it cost.

pub mod load;
pub mod measure;
pub mod options;
pub mod process_stats;
pub mod setup;
