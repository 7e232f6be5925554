//! Durability: an append-only segmented log on disk ([`segment_log`]) and the engine's use of it
//! ([`tail_storage`]): accepted payloads and decisions written before they are acknowledged, replayed on start.

pub mod archive;
pub mod queue;
pub mod segment_log;
pub mod tail_storage;

pub use archive::{
    Archive, ArchiveOptions, ArchiveReader, ArchiveStats, Dropped, Found, TraceFilter, TraceSummary,
};
pub use queue::{PersistentQueue, QueueError, QueueRecovery, QueueStats, SyncPoint};
pub use segment_log::{
    AppendError, Budget, LogOptions, Position, SegmentLog, SyncPolicy, Truncation,
};
pub use tail_storage::{Decided, ReplayReport, StorageOptions, TailStorage, Verdict};

/// What the durable modules' tests share: log options and a fresh directory per test.
#[cfg(test)]
pub(crate) mod test_support {
    use super::segment_log::{Budget, LogOptions, SyncPolicy};
    use std::path::PathBuf;

    pub fn opts(segment_bytes: u64, max_bytes: u64) -> LogOptions {
        LogOptions {
            segment_bytes,
            budget: Budget::new(max_bytes),
            sync: SyncPolicy::None,
        }
    }

    /// An empty directory under the system's temp dir, unique to this process, `kind` and `name`.
    pub fn tempdir(kind: &str, name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tailsample-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
