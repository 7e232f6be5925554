//! An append-only, segmented, checksummed log in one directory: the disk format under tail storage and the
//! exporters' persistent queues.
//!
//! ```text
//! <dir>/00000000000000000007.seg   header: "TSLOG" 0 0 1 (8 B), segment id (u64 LE)
//!                                  records: body length (u32 LE), CRC-32 of kind + body (u32 LE), kind (u8), body
//! ```
//! Writes are sequential; a segment is closed once it passes `segment_bytes` and a new one starts. Space is
//! given back a whole segment at a time (`drop_before`), as Elastic's APM Server drops whole partitions.
//!
//! On open every segment is read and checked. A record cut short or failing its checksum ends the valid part of
//! its segment: the file is truncated there and the truncation reported (which segment, at which offset, how
//! many bytes), and everything before it is kept. Appends always go to a fresh segment after an open, so a
//! torn tail is never written after.
//!
//! Durability is the caller's choice (`SyncPolicy`): `None` leaves records in the OS page cache (they survive
//! the process being killed, not the machine losing power); `Payload` fsyncs each record before `append`
//! returns; `Batch` fsyncs on `sync_to`, once for every record appended since the last one (group commit).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"TSLOG\0\0\x01";
pub const SEGMENT_HEADER: u64 = 16;
pub const RECORD_HEADER: u64 = 9;
/// No record body is larger; a length above it in a header is corruption, not a reason to allocate.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    None,
    Batch,
    Payload,
}

impl SyncPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(SyncPolicy::None),
            "batch" => Some(SyncPolicy::Batch),
            "payload" => Some(SyncPolicy::Payload),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SyncPolicy::None => "none",
            SyncPolicy::Batch => "batch",
            SyncPolicy::Payload => "payload",
        }
    }
}

/// The bytes a storage directory may hold, shared by every log in it (tail storage and exporter queues).
#[derive(Debug)]
pub struct Budget {
    pub max_bytes: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(max_bytes: u64) -> Arc<Self> {
        Arc::new(Budget {
            max_bytes,
            used: AtomicU64::new(0),
        })
    }
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
    /// Takes `n` bytes unless that would pass the limit.
    fn try_take(&self, n: u64) -> Result<(), u64> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.max_bytes).then_some(u + n)
            })
            .map(|_| ())
    }
    fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }
    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// `append` refuses a record that would take the directory past its budget (`append_control` does not).
    pub budget: Arc<Budget>,
    pub sync: SyncPolicy,
}

/// Where a record starts: its segment and byte offset. Positions order as the log does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// A torn or corrupt tail found on open and cut off.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Truncation {
    pub segment: u64,
    pub file: PathBuf,
    /// Where the valid part ends (the file's new length).
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

#[derive(Debug)]
pub enum AppendError {
    /// The log would pass `max_bytes`; nothing was written.
    Full {
        bytes: u64,
        max_bytes: u64,
    },
    Io(io::Error),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Full { bytes, max_bytes } => write!(
                f,
                "storage directory is full ({bytes} bytes on disk, limit {max_bytes})"
            ),
            AppendError::Io(e) => write!(f, "storage write failed: {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LogStats {
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub appends_refused_full: u64,
    pub syncs: u64,
    pub sync_ns_total: u64,
    pub segments_created: u64,
    pub segments_dropped: u64,
}

struct Segment {
    id: u64,
    len: u64,
}

pub struct SegmentLog {
    dir: PathBuf,
    opts: LogOptions,
    /// Closed segments, oldest first, then the current one last.
    segments: Vec<Segment>,
    current: Arc<File>,
    /// Bytes written since open (a sequence number for group commit).
    written: u64,
    bytes: u64,
    pub stats: LogStats,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The ids of the segment files in `dir`, ascending.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".seg") {
            if let Ok(id) = stem.parse::<u64>() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

pub(crate) fn checksum(kind: u8, body: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    for part in body {
        h.update(part);
    }
    h.finalize()
}

/// One record read back.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub position: Position,
    pub kind: u8,
    pub body: &'a [u8],
}

/// The records of one segment's bytes, up to the first bad one; `valid_len` then says where the good part
/// ends and `problem` why it ended early.
pub struct Records<'a> {
    segment: u64,
    bytes: &'a [u8],
    offset: usize,
    pub problem: Option<String>,
}

impl<'a> Records<'a> {
    pub fn new(segment: u64, bytes: &'a [u8]) -> Self {
        Records {
            segment,
            bytes,
            offset: SEGMENT_HEADER as usize,
            problem: None,
        }
    }
    pub fn valid_len(&self) -> u64 {
        self.offset as u64
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;
    fn next(&mut self) -> Option<Record<'a>> {
        if self.problem.is_some() || self.offset >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.offset..];
        if rest.len() < RECORD_HEADER as usize {
            self.problem = Some(format!(
                "record header cut short ({} of {RECORD_HEADER} bytes)",
                rest.len()
            ));
            return None;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
        let kind = rest[8];
        if len > MAX_RECORD_BYTES {
            self.problem = Some(format!("record length {len} is not plausible"));
            return None;
        }
        let end = RECORD_HEADER as usize + len;
        if rest.len() < end {
            self.problem = Some(format!(
                "record cut short ({} of {len} body bytes)",
                rest.len() - RECORD_HEADER as usize
            ));
            return None;
        }
        let body = &rest[RECORD_HEADER as usize..end];
        if checksum(kind, &[body]) != crc {
            self.problem = Some("checksum mismatch".to_string());
            return None;
        }
        let position = Position {
            segment: self.segment,
            offset: self.offset as u64,
        };
        self.offset += end;
        Some(Record {
            position,
            kind,
            body,
        })
    }
}

impl SegmentLog {
    /// Opens (creating it if needed) the log in `dir`: checks every segment, truncates torn or corrupt tails
    /// (returned), and starts a fresh segment for appends.
    pub fn open(dir: &Path, opts: LogOptions) -> io::Result<(Self, Vec<Truncation>)> {
        Self::open_checking(dir, opts, false)
    }

    /// `open`, reading only the newest segment's records (the only one a crash can leave torn, appends going to
    /// a fresh segment after every open); older segments are taken at their length. For a large log that is
    /// never replayed whole (the archive of dropped traces).
    pub fn open_checking_tail(dir: &Path, opts: LogOptions) -> io::Result<(Self, Vec<Truncation>)> {
        Self::open_checking(dir, opts, true)
    }

    fn open_checking(
        dir: &Path,
        opts: LogOptions,
        tail_only: bool,
    ) -> io::Result<(Self, Vec<Truncation>)> {
        fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        let mut truncations = Vec::new();
        let mut bytes = 0;
        let ids = segment_ids(dir)?;
        let newest = ids.last().copied();
        for id in ids {
            let path = segment_path(dir, id);
            let mut data = Vec::new();
            let mut file = File::open(&path)?;
            let len = file.metadata()?.len();
            if tail_only && Some(id) != newest && len >= SEGMENT_HEADER {
                data.resize(SEGMENT_HEADER as usize, 0);
                file.read_exact(&mut data)?;
                if &data[..8] != MAGIC || data[8..16] != id.to_le_bytes() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is not a tailsample log segment (bad header); move it out of the storage directory",
                            path.display()
                        ),
                    ));
                }
                bytes += len;
                segments.push(Segment { id, len });
                continue;
            }
            file.read_to_end(&mut data)?;
            if data.len() < SEGMENT_HEADER as usize {
                // Created but its header never fully written: nothing in it.
                truncations.push(Truncation {
                    segment: id,
                    file: path.clone(),
                    offset: 0,
                    bytes: data.len() as u64,
                    reason: "segment header cut short".into(),
                });
                fs::remove_file(&path)?;
                continue;
            }
            if &data[..8] != MAGIC || data[8..16] != id.to_le_bytes() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a tailsample log segment (bad header); move it out of the storage directory",
                        path.display()
                    ),
                ));
            }
            let mut records = Records::new(id, &data);
            for _ in records.by_ref() {}
            let valid = records.valid_len();
            if let Some(reason) = records.problem.take() {
                truncations.push(Truncation {
                    segment: id,
                    file: path.clone(),
                    offset: valid,
                    bytes: data.len() as u64 - valid,
                    reason,
                });
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid)?;
                f.sync_all()?;
            }
            bytes += valid;
            segments.push(Segment { id, len: valid });
        }
        let next = segments.last().map_or(1, |s| s.id + 1);
        let current = Arc::new(create_segment(dir, next, opts.sync)?);
        segments.push(Segment {
            id: next,
            len: SEGMENT_HEADER,
        });
        bytes += SEGMENT_HEADER;
        opts.budget.take(bytes);
        let log = SegmentLog {
            dir: dir.to_path_buf(),
            opts,
            segments,
            current,
            written: 0,
            bytes,
            stats: LogStats {
                segments_created: 1,
                ..LogStats::default()
            },
        };
        Ok((log, truncations))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &LogOptions {
        &self.opts
    }

    /// Ids of the segments on disk, oldest first (the last is the one appended to).
    pub fn segment_ids(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.id).collect()
    }

    pub fn current_segment(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.id)
    }

    /// Where the next record will start.
    pub fn position(&self) -> Position {
        let s = self
            .segments
            .last()
            .expect("a log always has its current segment");
        Position {
            segment: s.id,
            offset: s.len,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes written since open: the sequence number `sync_to` takes.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Reads a closed or current segment whole (for replay).
    pub fn read_segment(&self, id: u64) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        File::open(segment_path(&self.dir, id))?.read_to_end(&mut data)?;
        Ok(data)
    }

    /// Appends a record, refused when it would take the log past `max_bytes`.
    pub fn append(&mut self, kind: u8, body: &[&[u8]]) -> Result<Position, AppendError> {
        let len: usize = body.iter().map(|b| b.len()).sum();
        // Room for a segment header too, in case this record starts a new segment.
        let need = RECORD_HEADER + len as u64 + SEGMENT_HEADER;
        if let Err(used) = self.opts.budget.try_take(need) {
            self.stats.appends_refused_full += 1;
            return Err(AppendError::Full {
                bytes: used,
                max_bytes: self.opts.budget.max_bytes,
            });
        }
        self.opts.budget.give_back(need);
        self.write_record(kind, body, len).map_err(AppendError::Io)
    }

    /// Appends a small bookkeeping record whatever the size limit: decisions and acknowledgements must be
    /// written for space to be given back.
    pub fn append_control(&mut self, kind: u8, body: &[&[u8]]) -> io::Result<Position> {
        let len: usize = body.iter().map(|b| b.len()).sum();
        self.write_record(kind, body, len)
    }

    fn write_record(&mut self, kind: u8, body: &[&[u8]], len: usize) -> io::Result<Position> {
        if len > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("record of {len} bytes is larger than {MAX_RECORD_BYTES}"),
            ));
        }
        let need = RECORD_HEADER + len as u64;
        let cur_len = self.segments.last().map_or(0, |s| s.len);
        if cur_len > SEGMENT_HEADER && cur_len + need > self.opts.segment_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(need as usize);
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        buf.extend_from_slice(&checksum(kind, body).to_le_bytes());
        buf.push(kind);
        for part in body {
            buf.extend_from_slice(part);
        }
        let position = self.position();
        if let Err(e) = (&*self.current).write_all(&buf) {
            // A partial write leaves a torn record; cut it off so later records stay readable.
            let _ = self.current.set_len(position.offset);
            return Err(e);
        }
        if self.opts.sync == SyncPolicy::Payload {
            self.sync_current()?;
        }
        let seg = self.segments.last_mut().expect("current segment");
        seg.len += need;
        self.bytes += need;
        self.opts.budget.take(need);
        self.written += need;
        self.stats.records_appended += 1;
        self.stats.bytes_appended += need;
        Ok(position)
    }

    fn sync_current(&mut self) -> io::Result<()> {
        let t = std::time::Instant::now();
        self.current.sync_data()?;
        self.stats.syncs += 1;
        self.stats.sync_ns_total += t.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Closes the current segment and starts the next.
    pub fn rotate(&mut self) -> io::Result<u64> {
        if self.opts.sync != SyncPolicy::None {
            // Group commit only fsyncs the current file: the closing one is made durable here.
            self.sync_current()?;
        }
        let next = self.current_segment() + 1;
        self.current = Arc::new(create_segment(&self.dir, next, self.opts.sync)?);
        self.segments.push(Segment {
            id: next,
            len: SEGMENT_HEADER,
        });
        self.bytes += SEGMENT_HEADER;
        self.opts.budget.take(SEGMENT_HEADER);
        self.written += SEGMENT_HEADER;
        self.stats.segments_created += 1;
        Ok(next)
    }

    /// The file to fsync for group commit, and the sequence number it covers once synced. The caller fsyncs
    /// outside its lock on the log, so appends go on meanwhile.
    pub fn sync_handle(&self) -> (Arc<File>, u64) {
        (self.current.clone(), self.written)
    }

    /// Records an fsync done through `sync_handle`.
    pub fn note_sync(&mut self, ns: u64) {
        self.stats.syncs += 1;
        self.stats.sync_ns_total += ns;
    }

    /// Deletes every closed segment older than `segment` (never the current one); returns how many.
    pub fn drop_before(&mut self, segment: u64) -> io::Result<usize> {
        let current = self.current_segment();
        let limit = segment.min(current);
        let mut dropped = 0;
        while self.segments.len() > 1 && self.segments[0].id < limit {
            let s = self.segments.remove(0);
            match fs::remove_file(segment_path(&self.dir, s.id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.segments.insert(0, s);
                    return Err(e);
                }
            }
            self.bytes -= s.len;
            self.opts.budget.give_back(s.len);
            self.stats.segments_dropped += 1;
            dropped += 1;
        }
        Ok(dropped)
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        // The directory's budget counts open logs; a log opened again takes its bytes again.
        self.opts.budget.give_back(self.bytes);
    }
}

fn create_segment(dir: &Path, id: u64, sync: SyncPolicy) -> io::Result<File> {
    let path = segment_path(dir, id);
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    let mut header = [0u8; SEGMENT_HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&id.to_le_bytes());
    f.write_all(&header)?;
    if sync != SyncPolicy::None {
        f.sync_all()?;
        // The new file's directory entry must be durable too.
        File::open(dir)?.sync_all()?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::test_support::opts;

    fn tempdir(name: &str) -> PathBuf {
        crate::durable::test_support::tempdir("log", name)
    }

    fn read_all(log: &SegmentLog) -> Vec<(Position, u8, Vec<u8>)> {
        let mut out = Vec::new();
        for id in log.segment_ids() {
            let data = log.read_segment(id).unwrap();
            for r in Records::new(id, &data) {
                out.push((r.position, r.kind, r.body.to_vec()));
            }
        }
        out
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopen() {
        let dir = tempdir("order");
        let (mut log, t) = SegmentLog::open(&dir, opts(100, 1 << 20)).unwrap();
        assert!(t.is_empty());
        let mut positions = Vec::new();
        for i in 0..20u8 {
            positions.push(log.append(1, &[&[i; 30]]).unwrap());
        }
        assert!(log.segment_count() > 5, "segments roll at 100 bytes");
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        drop(log);
        let (log, t) = SegmentLog::open(&dir, opts(100, 1 << 20)).unwrap();
        assert!(t.is_empty());
        let all = read_all(&log);
        assert_eq!(all.len(), 20);
        for (i, (pos, kind, body)) in all.iter().enumerate() {
            assert_eq!(*pos, positions[i]);
            assert_eq!(*kind, 1);
            assert_eq!(body, &vec![i as u8; 30]);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A log of five 100-byte records in one segment, closed: (its directory, the segment, its file).
    fn five_records(name: &str) -> (PathBuf, u64, PathBuf) {
        let dir = tempdir(name);
        let (mut log, _) = SegmentLog::open(&dir, opts(1 << 20, 1 << 20)).unwrap();
        for i in 0..5u8 {
            log.append(2, &[&[i; 100]]).unwrap();
        }
        let seg = log.current_segment();
        drop(log);
        let path = segment_path(&dir, seg);
        (dir, seg, path)
    }

    #[test]
    fn a_torn_tail_is_truncated_and_reported_and_earlier_records_kept() {
        let (dir, seg, path) = five_records("torn");
        let full = fs::metadata(&path).unwrap().len();
        // Cut the last record in the middle of its body, as a crash during write would.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 40).unwrap();
        drop(f);
        let (log, t) = SegmentLog::open(&dir, opts(1 << 20, 1 << 20)).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].segment, seg);
        assert_eq!(t[0].offset, SEGMENT_HEADER + 4 * (RECORD_HEADER + 100));
        assert_eq!(t[0].bytes, RECORD_HEADER + 100 - 40);
        assert!(t[0].reason.contains("cut short"), "{}", t[0].reason);
        assert_eq!(read_all(&log).len(), 4);
        assert_eq!(fs::metadata(&path).unwrap().len(), t[0].offset);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum_and_ends_the_valid_part() {
        let (dir, _, path) = five_records("flip");
        let mut data = fs::read(&path).unwrap();
        let third_body = (SEGMENT_HEADER + 2 * (RECORD_HEADER + 100) + RECORD_HEADER + 7) as usize;
        data[third_body] ^= 0x40;
        fs::write(&path, &data).unwrap();
        let (log, t) = SegmentLog::open(&dir, opts(1 << 20, 1 << 20)).unwrap();
        assert_eq!(t[0].reason, "checksum mismatch");
        assert_eq!(t[0].bytes, 3 * (RECORD_HEADER + 100));
        assert_eq!(read_all(&log).len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_size_limit_refuses_appends_but_not_control_records_and_dropping_frees_space() {
        let dir = tempdir("full");
        let (mut log, _) = SegmentLog::open(&dir, opts(200, 500)).unwrap();
        let mut taken = 0;
        loop {
            match log.append(1, &[&[7; 50]]) {
                Ok(_) => taken += 1,
                Err(AppendError::Full { bytes, max_bytes }) => {
                    assert_eq!(max_bytes, 500);
                    assert!(bytes + RECORD_HEADER + 50 + SEGMENT_HEADER > 500);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(taken >= 6, "{taken}");
        assert_eq!(log.stats.appends_refused_full, 1);
        log.append_control(3, &[&[1; 10]]).unwrap();
        let before = log.bytes();
        let first_kept = log.segment_ids()[2];
        assert_eq!(log.drop_before(first_kept).unwrap(), 2);
        assert!(log.bytes() < before);
        assert!(log.append(1, &[&[7; 50]]).is_ok());
        let on_disk: u64 = segment_ids(&dir)
            .unwrap()
            .iter()
            .map(|&id| fs::metadata(segment_path(&dir, id)).unwrap().len())
            .sum();
        assert_eq!(on_disk, log.bytes(), "the byte count is what is on disk");
        // The current segment is never dropped.
        let cur = log.current_segment();
        log.drop_before(u64::MAX).unwrap();
        assert_eq!(log.segment_ids(), vec![cur]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_file_is_refused_with_its_name() {
        let dir = tempdir("foreign");
        fs::create_dir_all(&dir).unwrap();
        fs::write(segment_path(&dir, 3), b"this is not a segment at all").unwrap();
        let err = SegmentLog::open(&dir, opts(1 << 20, 1 << 20))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("00000000000000000003.seg"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn payload_sync_fsyncs_every_record() {
        let dir = tempdir("sync");
        let mut o = opts(1 << 20, 1 << 20);
        o.sync = SyncPolicy::Payload;
        let (mut log, _) = SegmentLog::open(&dir, o).unwrap();
        for _ in 0..3 {
            log.append(1, &[b"x"]).unwrap();
        }
        assert_eq!(log.stats.syncs, 3);
        fs::remove_dir_all(&dir).unwrap();
    }
}
