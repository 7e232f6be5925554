//! A persistent FIFO queue on a [`SegmentLog`]: the exporters' `sending_queue.storage`, as in the OpenTelemetry
//! collector's persistent queue.
//!
//! Two records in the queue's own log directory:
//! - `ITEM` (4): sequence number (u64 LE), then the payload, written by `push`;
//! - `DONE` (5): sequence number (u64 LE), written once the item was sent (or given up).
//!
//! Memory holds only the sequence number, position and length of each item not done; payloads are read back
//! from their segment with positioned reads when handed out, so a long queue costs disk, not memory. Items
//! are handed out oldest first (`next_item`); several may be out at once (in flight) for several consumers;
//! one whose send failed goes back (`release`) to be handed out again in its original place.
//!
//! Delivery is at least once. On open every segment is read: an `ITEM` without a `DONE` is pending again,
//! whether it was waiting or in flight when the process stopped. Sequence numbers continue after a restart: the
//! highest one's record is carried forward before the segment holding it is deleted.
//!
//! Space is given back a whole segment at a time: a segment older than the segment of the oldest item not done
//! is deleted (never the current one). A `DONE` always follows its `ITEM`, so a deleted segment holds nothing
//! that a kept one needs.
//!
//! Durability, by the log's `SyncPolicy`:
//! - `Payload`: `push` returns once the item is fsynced: it survives the machine losing power. Each `DONE` is
//!   fsynced too (one fsync per `done`).
//! - `Batch`: `push` leaves the item in the OS page cache; it survives power loss once a `sync` called after
//!   the push (or `wait` on a `SyncPoint` taken after it) has returned: the caller syncs after a batch of
//!   pushes and only then acknowledges upstream. One fsync covers every push before it (group commit).
//!   `DONE`s ride on the next sync: an item done just before a power loss may be sent again.
//! - `None`: items survive the process being killed, not the machine losing power; `sync` does nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::segment_log::{
    AppendError, LogOptions, LogStats, Position, Records, SegmentLog, SyncPolicy, Truncation,
    RECORD_HEADER,
};

pub const ITEM: u8 = 4;
pub const DONE: u8 = 5;

/// An `ITEM` record's header and sequence number, read before its payload.
const ITEM_HEAD: usize = RECORD_HEADER as usize + 8;

/// Where an item not done lies on disk.
#[derive(Debug, Clone, Copy)]
struct Slot {
    position: Position,
    len: u32,
}

#[derive(Debug)]
pub enum QueueError {
    /// `max_items` items are held already (waiting or in flight); nothing was written.
    Full {
        items: u64,
        max_items: u64,
    },
    /// The storage directory's budget is used up; nothing was written.
    StorageFull {
        bytes: u64,
        max_bytes: u64,
    },
    Io(io::Error),
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::Full { items, max_items } => write!(
                f,
                "persistent queue is full ({items} items, limit {max_items})"
            ),
            QueueError::StorageFull { bytes, max_bytes } => write!(
                f,
                "storage directory is full ({bytes} bytes on disk, limit {max_bytes})"
            ),
            QueueError::Io(e) => write!(f, "persistent queue write failed: {e}"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AppendError> for QueueError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Full { bytes, max_bytes } => QueueError::StorageFull { bytes, max_bytes },
            AppendError::Io(e) => QueueError::Io(e),
        }
    }
}

/// What opening the queue found on disk.
#[derive(Debug, Clone, Default)]
pub struct QueueRecovery {
    /// Items without a `DONE`: pending again.
    pub items: u64,
    /// Their payload bytes.
    pub bytes: u64,
    pub segments: u64,
    pub truncations: Vec<Truncation>,
    pub duration_ns: u64,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct QueueStats {
    /// Items not done: waiting and in flight.
    pub items: u64,
    pub in_flight: u64,
    #[serde(skip)]
    pub payload_bytes: u64,
    /// Bytes of the queue's segments on disk.
    pub bytes: u64,
    pub segments: u64,
    pub pushed: u64,
    pub done: u64,
    #[serde(skip)]
    pub released: u64,
    /// Pushes refused at `max_items`.
    pub refused_full: u64,
    /// Pushes refused by the directory budget.
    pub refused_storage_full: u64,
    /// Items found pending on open.
    pub recovered: u64,
    /// Items whose record no longer matched its checksum when read back: skipped, marked done.
    pub corrupt: u64,
    /// Group-commit fsyncs (`sync`, `SyncPoint::wait`); the log's own are in `log.syncs`.
    #[serde(rename = "fsyncs")]
    pub syncs: u64,
    #[serde(skip)]
    pub sync_ns_total: u64,
    #[serde(skip)]
    pub log: LogStats,
}

#[derive(Debug, Default)]
struct SyncShared {
    /// Log bytes (`SegmentLog::written`) known fsynced. Read without `gate`, so that taking a sync point never
    /// waits for an fsync under way.
    synced: AtomicU64,
    /// Held across an fsync: callers arriving meanwhile find their point covered when they get it.
    gate: Mutex<()>,
    syncs: AtomicU64,
    sync_ns: AtomicU64,
}

/// Everything pushed before it was taken; `wait` returns once that is fsynced. Taken under the caller's lock
/// on the queue, waited on outside it, so pushes go on during the fsync.
#[derive(Debug)]
pub struct SyncPoint {
    file: Arc<File>,
    through: u64,
    shared: Arc<SyncShared>,
}

impl SyncPoint {
    /// Group commit: one fsync for every caller waiting meanwhile.
    pub fn wait(&self) -> io::Result<()> {
        let _gate = self.shared.gate.lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.synced.load(Ordering::Acquire) >= self.through {
            return Ok(());
        }
        let t = Instant::now();
        // The current segment covers everything: the log fsyncs a segment as it closes it.
        self.file.sync_data()?;
        let ns = t.elapsed().as_nanos() as u64;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.shared.sync_ns.fetch_add(ns, Ordering::Relaxed);
        self.shared.synced.fetch_max(self.through, Ordering::AcqRel);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    pushed: u64,
    done: u64,
    released: u64,
    refused_full: u64,
    refused_storage_full: u64,
    recovered: u64,
    corrupt: u64,
}

pub struct PersistentQueue {
    log: SegmentLog,
    max_items: usize,
    /// Waiting to be handed out, by sequence number (which orders as positions do).
    pending: BTreeMap<u64, Slot>,
    in_flight: BTreeMap<u64, Slot>,
    payload_bytes: u64,
    next_seq: u64,
    /// The newest segment holding a record of sequence number `next_seq - 1`: kept, so numbering continues
    /// after a restart even once every item is done and their segments deleted.
    high_segment: u64,
    /// The log's oldest segment: nothing to delete while it is not older than the oldest item.
    oldest_segment: u64,
    /// The last segment read from; consumers move through the segments in order, so one file is enough.
    /// Closed as its segment is deleted, or the disk space would not come back.
    reader: Option<(u64, File)>,
    sync: Arc<SyncShared>,
    counters: Counters,
}

// Held behind a Mutex by the Python binding.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<PersistentQueue>();
};

fn seq_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl PersistentQueue {
    /// Opens (creating it if needed) the queue in `dir`: every item without a `DONE` is pending again, in
    /// order. Items found beyond `max_items` (a smaller limit than before) are kept; pushes wait for room.
    pub fn open(
        dir: &Path,
        opts: LogOptions,
        max_items: usize,
    ) -> io::Result<(Self, QueueRecovery)> {
        let t = Instant::now();
        let (log, truncations) = SegmentLog::open(dir, opts)?;
        let mut recovery = QueueRecovery {
            truncations,
            ..QueueRecovery::default()
        };
        let mut pending = BTreeMap::new();
        let (mut high, mut high_segment) = (0u64, 0u64);
        let ids = log.segment_ids();
        // The last segment is the fresh one this open created.
        for &id in &ids[..ids.len() - 1] {
            let data = log.read_segment(id)?;
            recovery.segments += 1;
            for r in Records::new(id, &data) {
                let Some(seq) = seq_of(r.body) else {
                    continue;
                };
                match r.kind {
                    ITEM => {
                        let slot = Slot {
                            position: r.position,
                            len: (r.body.len() - 8) as u32,
                        };
                        pending.insert(seq, slot);
                    }
                    DONE => {
                        pending.remove(&seq);
                    }
                    _ => continue,
                }
                if seq >= high {
                    (high, high_segment) = (seq, id);
                }
            }
        }
        let payload_bytes = pending.values().map(|s: &Slot| s.len as u64).sum();
        recovery.items = pending.len() as u64;
        recovery.bytes = payload_bytes;
        let oldest_segment = ids[0];
        let mut q = PersistentQueue {
            log,
            max_items,
            pending,
            in_flight: BTreeMap::new(),
            payload_bytes,
            next_seq: high + 1,
            high_segment,
            oldest_segment,
            reader: None,
            sync: Arc::default(),
            counters: Counters {
                recovered: recovery.items,
                ..Counters::default()
            },
        };
        // Segments left with nothing pending (and the empty ones earlier opens created) go now.
        q.reclaim()?;
        recovery.duration_ns = t.elapsed().as_nanos() as u64;
        Ok((q, recovery))
    }

    /// Appends an item; returns its sequence number. Refused, with nothing written, at `max_items` items or
    /// when the directory budget is used up. Under `SyncPolicy::Batch` the item is durable once a later
    /// `sync` returns.
    pub fn push(&mut self, payload: &[u8]) -> Result<u64, QueueError> {
        if self.len() >= self.max_items {
            self.counters.refused_full += 1;
            return Err(QueueError::Full {
                items: self.len() as u64,
                max_items: self.max_items as u64,
            });
        }
        let seq = self.next_seq;
        let position = match self.log.append(ITEM, &[&seq.to_le_bytes(), payload]) {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, AppendError::Full { .. }) {
                    self.counters.refused_storage_full += 1;
                }
                return Err(e.into());
            }
        };
        self.next_seq += 1;
        self.high_segment = position.segment;
        self.pending.insert(
            seq,
            Slot {
                position,
                // The log refuses records over MAX_RECORD_BYTES (1 GiB).
                len: payload.len() as u32,
            },
        );
        self.payload_bytes += payload.len() as u64;
        self.counters.pushed += 1;
        Ok(seq)
    }

    /// Under `SyncPolicy::Batch`, returns once every item pushed so far is fsynced (one fsync for every
    /// caller meanwhile); otherwise at once (`Payload` fsynced each push already, `None` never fsyncs).
    pub fn sync(&self) -> io::Result<()> {
        match self.sync_point() {
            Some(p) => p.wait(),
            None => Ok(()),
        }
    }

    /// `sync` in two steps, for a caller holding the queue in a lock: take the point under the lock, `wait`
    /// outside it. None when there is nothing to wait for.
    pub fn sync_point(&self) -> Option<SyncPoint> {
        if self.log.options().sync != SyncPolicy::Batch {
            return None;
        }
        let (file, through) = self.log.sync_handle();
        if self.sync.synced.load(Ordering::Acquire) >= through {
            return None;
        }
        Some(SyncPoint {
            file,
            through,
            shared: self.sync.clone(),
        })
    }

    /// Hands out the oldest waiting item: its sequence number and payload. It stays in flight until `done`
    /// or `release`. An item whose record no longer checks out on disk is skipped, marked done and counted
    /// (`corrupt`); a read error leaves the item waiting and is returned.
    pub fn next_item(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        while let Some((seq, slot)) = self.pending.pop_first() {
            match self.read(seq, slot) {
                Ok(payload) => {
                    self.in_flight.insert(seq, slot);
                    return Ok(Some((seq, payload)));
                }
                Err(e) => {
                    self.pending.insert(seq, slot);
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ) {
                        return Err(e);
                    }
                    // Damaged since it was written: it cannot be sent, and must not block the items behind it.
                    if self.forget(seq)? {
                        self.counters.corrupt += 1;
                        self.reclaim()?;
                    }
                }
            }
        }
        Ok(None)
    }

    /// Puts an item in flight back, to be handed out again in its original place (a failed send, to retry).
    /// False if `seq` is not in flight.
    pub fn release(&mut self, seq: u64) -> bool {
        let Some(slot) = self.in_flight.remove(&seq) else {
            return false;
        };
        self.pending.insert(seq, slot);
        self.counters.released += 1;
        true
    }

    /// The item is sent (or given up): writes its `DONE`, forgets it and deletes the segments nothing still
    /// needs. An unknown (or already done) `seq` does nothing.
    pub fn done(&mut self, seq: u64) -> io::Result<()> {
        if self.forget(seq)? {
            self.counters.done += 1;
            self.reclaim()?;
        }
        Ok(())
    }

    /// Items not done: waiting and in flight.
    pub fn len(&self) -> usize {
        self.pending.len() + self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// Bytes of the queue's segments on disk.
    pub fn bytes(&self) -> u64 {
        self.log.bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    pub fn stats(&self) -> QueueStats {
        let c = self.counters;
        QueueStats {
            items: self.len() as u64,
            in_flight: self.in_flight.len() as u64,
            payload_bytes: self.payload_bytes,
            bytes: self.log.bytes(),
            segments: self.log.segment_count() as u64,
            pushed: c.pushed,
            done: c.done,
            released: c.released,
            refused_full: c.refused_full,
            refused_storage_full: c.refused_storage_full,
            recovered: c.recovered,
            corrupt: c.corrupt,
            syncs: self.sync.syncs.load(Ordering::Relaxed),
            sync_ns_total: self.sync.sync_ns.load(Ordering::Relaxed),
            log: self.log.stats,
        }
    }

    /// Writes `DONE` for an item waiting or in flight, then forgets it; false if it is neither.
    fn forget(&mut self, seq: u64) -> io::Result<bool> {
        let Some(slot) = self.in_flight.get(&seq).or(self.pending.get(&seq)).copied() else {
            return Ok(false);
        };
        let p = self.log.append_control(DONE, &[&seq.to_le_bytes()])?;
        if seq + 1 == self.next_seq {
            self.high_segment = p.segment;
        }
        self.in_flight.remove(&seq);
        self.pending.remove(&seq);
        self.payload_bytes -= slot.len as u64;
        Ok(true)
    }

    /// Deletes the segments older than the oldest item not done (all but the current one when none is left).
    fn reclaim(&mut self) -> io::Result<()> {
        let oldest_item = [
            self.pending.first_key_value(),
            self.in_flight.first_key_value(),
        ]
        .into_iter()
        .flatten()
        .map(|(_, s)| s.position.segment)
        .min();
        let mut keep_from = oldest_item.unwrap_or_else(|| self.log.current_segment());
        if self.oldest_segment >= keep_from {
            return Ok(());
        }
        // The highest sequence number must stay on disk for numbering to continue. Its record being older than
        // `keep_from` means it is done (an item not done lies at or after `keep_from`): a second DONE is harmless.
        if self.next_seq > 1 && self.high_segment < keep_from {
            let p = self
                .log
                .append_control(DONE, &[&(self.next_seq - 1).to_le_bytes()])?;
            self.high_segment = p.segment;
            // It may have started a segment: with nothing left, keep only that one.
            if oldest_item.is_none() {
                keep_from = self.log.current_segment();
            }
        }
        self.log.drop_before(keep_from)?;
        self.oldest_segment = self.log.segment_ids()[0];
        if self
            .reader
            .as_ref()
            .is_some_and(|(id, _)| *id < self.oldest_segment)
        {
            self.reader = None;
        }
        Ok(())
    }

    /// Reads an item's payload back with positioned reads, checking its record as `Records` would.
    fn read(&mut self, seq: u64, slot: Slot) -> io::Result<Vec<u8>> {
        let segment = slot.position.segment;
        if self.reader.as_ref().is_none_or(|(id, _)| *id != segment) {
            self.reader = None;
            // Named as segment_log names its files.
            let path = self.log.dir().join(format!("{segment:020}.seg"));
            self.reader = Some((segment, File::open(path)?));
        }
        let file = &self.reader.as_ref().expect("just opened").1;
        let at = slot.position.offset;
        let mut head = [0u8; ITEM_HEAD];
        file.read_exact_at(&mut head, at)?;
        let body_len = u32::from_le_bytes(head[0..4].try_into().unwrap()) as u64;
        let crc = u32::from_le_bytes(head[4..8].try_into().unwrap());
        let on_disk = u64::from_le_bytes(head[9..17].try_into().unwrap());
        if head[8] != ITEM || body_len != 8 + slot.len as u64 || on_disk != seq {
            return Err(invalid(format!(
                "item {seq} at segment {segment} offset {at}: record header does not match"
            )));
        }
        let mut payload = vec![0u8; slot.len as usize];
        file.read_exact_at(&mut payload, at + ITEM_HEAD as u64)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&head[8..]);
        h.update(&payload);
        if h.finalize() != crc {
            return Err(invalid(format!(
                "item {seq} at segment {segment} offset {at}: checksum mismatch"
            )));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::segment_log::SEGMENT_HEADER;
    use std::collections::HashMap;
    use std::fs::{self, OpenOptions};
    use std::path::PathBuf;

    use crate::durable::test_support::opts;

    fn tempdir(name: &str) -> PathBuf {
        crate::durable::test_support::tempdir("queue", name)
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        files.sort();
        files
    }

    fn on_disk(dir: &Path) -> u64 {
        segment_files(dir)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("item-{i}-")
            .repeat(1 + (i % 5) as usize)
            .into_bytes()
    }

    fn take(q: &mut PersistentQueue) -> (u64, Vec<u8>) {
        q.next_item().unwrap().expect("an item is waiting")
    }

    #[test]
    fn fifo_order_across_segments_and_reopen() {
        let dir = tempdir("fifo");
        let (mut q, r) = PersistentQueue::open(&dir, opts(256, 1 << 20), 1000).unwrap();
        assert_eq!(r.items, 0);
        for i in 1..=50 {
            assert_eq!(q.push(&payload(i)).unwrap(), i);
        }
        assert!(q.segment_count() > 5, "segments roll at 256 bytes");
        for i in 1..=10 {
            assert_eq!(take(&mut q), (i, payload(i)));
            q.done(i).unwrap();
        }
        assert_eq!(q.len(), 40);
        drop(q);
        let (mut q, r) = PersistentQueue::open(&dir, opts(256, 1 << 20), 1000).unwrap();
        assert_eq!(r.items, 40);
        assert_eq!(
            r.bytes,
            (11..=50).map(|i| payload(i).len() as u64).sum::<u64>()
        );
        assert!(r.truncations.is_empty());
        for i in 11..=50 {
            assert_eq!(take(&mut q), (i, payload(i)));
        }
        assert!(q.next_item().unwrap().is_none());
        assert_eq!(q.len(), 40, "handed out, not done");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn items_in_flight_come_back_after_reopen_and_done_ones_do_not() {
        let dir = tempdir("inflight");
        let (mut q, _) = PersistentQueue::open(&dir, opts(1 << 20, 1 << 20), 100).unwrap();
        for i in 1..=6 {
            q.push(&payload(i)).unwrap();
        }
        for _ in 1..=4 {
            take(&mut q);
        }
        q.done(2).unwrap();
        q.done(4).unwrap();
        q.done(99).unwrap(); // unknown: nothing
        assert_eq!((q.len(), q.in_flight()), (4, 2));
        drop(q);
        let (mut q, r) = PersistentQueue::open(&dir, opts(1 << 20, 1 << 20), 100).unwrap();
        assert_eq!(r.items, 4);
        assert_eq!(q.stats().recovered, 4);
        let got: Vec<u64> = std::iter::from_fn(|| q.next_item().unwrap().map(|(s, _)| s)).collect();
        assert_eq!(got, vec![1, 3, 5, 6]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_truncated_and_the_items_before_it_kept() {
        let dir = tempdir("torn");
        let (mut q, _) = PersistentQueue::open(&dir, opts(1 << 20, 1 << 20), 100).unwrap();
        for i in 1..=5 {
            q.push(&[i as u8; 100]).unwrap();
        }
        drop(q);
        let files = segment_files(&dir);
        let last = files.last().unwrap();
        let len = fs::metadata(last).unwrap().len();
        // Cut the last item in the middle of its body, as a crash during the write would.
        OpenOptions::new()
            .write(true)
            .open(last)
            .unwrap()
            .set_len(len - 30)
            .unwrap();
        let (mut q, r) = PersistentQueue::open(&dir, opts(1 << 20, 1 << 20), 100).unwrap();
        assert_eq!(r.truncations.len(), 1);
        assert_eq!(r.truncations[0].bytes, RECORD_HEADER + 8 + 100 - 30);
        assert_eq!(r.items, 4);
        for i in 1..=4u64 {
            assert_eq!(take(&mut q), (i, vec![i as u8; 100]));
        }
        assert!(q.next_item().unwrap().is_none());
        // The torn item's number is not seen again on disk; numbering goes on from the last whole one.
        assert_eq!(q.push(b"after").unwrap(), 5);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn max_items_refuses_pushes_without_writing() {
        let dir = tempdir("maxitems");
        let (mut q, _) = PersistentQueue::open(&dir, opts(1 << 20, 1 << 20), 3).unwrap();
        for i in 1..=3 {
            q.push(&payload(i)).unwrap();
        }
        take(&mut q); // in flight still counts
        let bytes = q.bytes();
        match q.push(b"one too many") {
            Err(QueueError::Full { items, max_items }) => assert_eq!((items, max_items), (3, 3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.bytes(), bytes, "nothing written");
        assert_eq!(q.stats().refused_full, 1);
        q.done(1).unwrap();
        assert_eq!(q.push(b"room again").unwrap(), 4);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_directory_budget_refuses_pushes_and_done_frees_segments() {
        let dir = tempdir("budget");
        let budget = 4096;
        let (mut q, _) = PersistentQueue::open(&dir, opts(512, budget), 1000).unwrap();
        let mut pushed = 0;
        loop {
            match q.push(&[7; 100]) {
                Ok(_) => pushed += 1,
                Err(QueueError::StorageFull { max_bytes, .. }) => {
                    assert_eq!(max_bytes, budget);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(pushed > 20, "{pushed}");
        assert_eq!(q.stats().refused_storage_full, 1);
        assert_eq!(q.bytes(), on_disk(&dir));
        let full = q.bytes();
        assert!(full > budget - 200, "{full}");
        // Send half: the segments holding only done items go.
        for _ in 0..pushed / 2 {
            let (seq, _) = take(&mut q);
            q.done(seq).unwrap();
        }
        assert!(q.bytes() < full - 1000, "{} of {full}", q.bytes());
        assert_eq!(
            q.bytes(),
            on_disk(&dir),
            "the byte count is what is on disk"
        );
        assert_eq!(q.segment_count(), segment_files(&dir).len());
        q.push(&[8; 100]).unwrap();
        while let Some((seq, _)) = q.next_item().unwrap() {
            q.done(seq).unwrap();
        }
        assert_eq!(q.segment_count(), 1);
        assert_eq!(q.bytes(), on_disk(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn release_puts_an_item_back_in_its_place() {
        let dir = tempdir("release");
        let (mut q, _) = PersistentQueue::open(&dir, opts(1 << 20, 1 << 20), 100).unwrap();
        for i in 1..=4 {
            q.push(&payload(i)).unwrap();
        }
        assert_eq!(take(&mut q).0, 1);
        assert_eq!(take(&mut q).0, 2);
        assert!(q.release(1));
        assert!(!q.release(1), "waiting, not in flight");
        assert!(!q.release(42));
        assert_eq!(take(&mut q), (1, payload(1)));
        assert_eq!(take(&mut q).0, 3);
        assert!(q.release(2));
        assert_eq!(take(&mut q), (2, payload(2)));
        assert_eq!(take(&mut q).0, 4);
        assert!(q.next_item().unwrap().is_none());
        assert_eq!((q.len(), q.stats().released), (4, 2));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sequence_numbers_continue_after_reopen_even_once_everything_is_deleted() {
        let dir = tempdir("seq");
        // Small segments: the DONEs roll over several, and the one holding DONE(10) is deleted.
        let (mut q, _) = PersistentQueue::open(&dir, opts(64, 1 << 20), 100).unwrap();
        for i in 1..=10 {
            assert_eq!(q.push(b"x").unwrap(), i);
        }
        for seq in (1..=10).rev() {
            q.done(seq).unwrap();
        }
        assert_eq!(q.segment_count(), 1);
        drop(q);
        for round in 0..3 {
            let (q, r) = PersistentQueue::open(&dir, opts(64, 1 << 20), 100).unwrap();
            assert_eq!(r.items, 0);
            assert_eq!(
                q.segment_count(),
                1,
                "round {round}: empty reopens do not pile up"
            );
        }
        let (mut q, _) = PersistentQueue::open(&dir, opts(64, 1 << 20), 100).unwrap();
        assert_eq!(q.push(b"y").unwrap(), 11);
        drop(q);
        let (mut q, _) = PersistentQueue::open(&dir, opts(64, 1 << 20), 100).unwrap();
        assert_eq!(q.push(b"z").unwrap(), 12);
        assert_eq!(take(&mut q), (11, b"y".to_vec()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_item_damaged_after_it_was_written_is_skipped_and_counted() {
        let dir = tempdir("damaged");
        let (mut q, _) = PersistentQueue::open(&dir, opts(1 << 20, 1 << 20), 100).unwrap();
        for i in 1..=3u64 {
            q.push(&[i as u8; 50]).unwrap();
        }
        let last = segment_files(&dir).pop().unwrap();
        let mut data = fs::read(&last).unwrap();
        let second_body = (SEGMENT_HEADER + (RECORD_HEADER + 58) + RECORD_HEADER + 20) as usize;
        data[second_body] ^= 1;
        fs::write(&last, &data).unwrap();
        assert_eq!(take(&mut q).0, 1);
        assert_eq!(take(&mut q), (3, vec![3; 50]));
        assert_eq!(q.stats().corrupt, 1);
        assert_eq!(q.len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batch_sync_is_one_fsync_per_group() {
        let dir = tempdir("batch");
        let mut o = opts(1 << 20, 1 << 20);
        o.sync = SyncPolicy::Batch;
        let (mut q, _) = PersistentQueue::open(&dir, o, 100).unwrap();
        q.sync().unwrap();
        assert_eq!(q.stats().syncs, 0, "nothing to sync");
        for i in 1..=5 {
            q.push(&payload(i)).unwrap();
        }
        let point = q.sync_point().expect("pushes not synced");
        q.push(&payload(6)).unwrap();
        point.wait().unwrap();
        point.wait().unwrap();
        assert_eq!(q.stats().syncs, 1);
        q.sync().unwrap();
        q.sync().unwrap();
        assert_eq!(q.stats().syncs, 2);
        assert!(q.sync_point().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    struct XorShift(u64);
    impl XorShift {
        fn step(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.step() % n
        }
    }

    #[test]
    fn two_thousand_items_of_random_sizes_round_trip() {
        let dir = tempdir("roundtrip");
        let seg = 4096;
        let open = || PersistentQueue::open(&dir, opts(seg, 1 << 30), 10_000).unwrap();
        let (mut q, _) = open();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut sent: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut flight: Vec<u64> = Vec::new();
        let mut finished = 0;
        let mut pushed = 0;
        let mut reopened = false;
        while finished < 2000 {
            if pushed < 2000 && rng.below(3) > 0 {
                // Mostly small, a few larger than a segment.
                let len = if rng.below(50) == 0 {
                    5000 + rng.below(3000)
                } else {
                    rng.below(1500)
                } as usize;
                let body: Vec<u8> = (0..len).map(|_| rng.step() as u8).collect();
                let seq = q.push(&body).unwrap();
                sent.insert(seq, body);
                pushed += 1;
            }
            if rng.below(2) == 0 {
                if let Some((seq, body)) = q.next_item().unwrap() {
                    assert_eq!(&body, &sent[&seq], "item {seq}");
                    let oldest_waiting = sent.keys().filter(|s| !flight.contains(s)).min();
                    assert_eq!(Some(&seq), oldest_waiting, "oldest first");
                    flight.push(seq);
                }
            }
            if !flight.is_empty() && rng.below(2) == 0 {
                let seq = flight.swap_remove(rng.below(flight.len() as u64) as usize);
                if rng.below(10) == 0 {
                    assert!(q.release(seq));
                } else {
                    q.done(seq).unwrap();
                    sent.remove(&seq);
                    finished += 1;
                }
            }
            if !reopened && pushed == 1000 {
                // What was in flight comes back waiting; nothing done does.
                drop(q);
                let (q2, r) = open();
                q = q2;
                assert_eq!(r.items as usize, sent.len());
                flight.clear();
                reopened = true;
            }
        }
        assert!(sent.is_empty());
        assert!(q.is_empty());
        assert!(q.next_item().unwrap().is_none());
        assert_eq!(
            q.segment_count(),
            1,
            "everything done: only the current segment"
        );
        assert_eq!(q.bytes(), on_disk(&dir));
        assert!(q.bytes() <= seg + 8000, "{}", q.bytes());
        assert_eq!(segment_files(&dir).len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
