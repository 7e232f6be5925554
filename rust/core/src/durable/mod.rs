//! Durability: an append-only segmented log on disk ([`segment_log`]) and the engine's use of it
//! ([`tail_storage`]): accepted payloads and decisions written before they are acknowledged, replayed on start.

pub mod queue;
pub mod segment_log;
pub mod tail_storage;

pub use queue::{PersistentQueue, QueueError, QueueRecovery, QueueStats, SyncPoint};
pub use segment_log::{
    AppendError, Budget, LogOptions, Position, SegmentLog, SyncPolicy, Truncation,
};
pub use tail_storage::{Decided, ReplayReport, StorageOptions, TailStorage, Verdict};
