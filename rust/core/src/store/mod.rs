//! The trace store: traces keyed by ID with a seeded hash, bounded by `num_traces`; raw span bytes per trace;
//! a summary folded at ingest; due-time queues; decision caches for late spans.

pub mod decision_cache;
pub mod decision_log;
pub mod explanation;
pub mod intern;
pub mod recent;
pub mod shadow;
pub mod shard;
pub mod stats;
mod trace_table;

pub use decision_log::{Record, Trigger};
pub use shard::{Chunk, Knowledge, Shard};
pub use stats::{PolicyCounters, ShardStats};
