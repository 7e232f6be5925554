//! The trace store: traces keyed by ID with a seeded hash, bounded by `num_traces`; raw span bytes per trace;
//! a summary folded at ingest; due-time queues; decision caches for late spans.

pub mod decision_cache;
pub mod intern;
pub mod shard;
pub mod stats;

pub use shard::{Chunk, Shard};
pub use stats::{PolicyCounters, ShardStats};
