//! The reader's parts that need no Pravega: the source abstraction (with an
//! in-memory source for tests), the per-event CPU work, and the read loop.

pub mod read_loop;
pub mod source;
pub mod work;
