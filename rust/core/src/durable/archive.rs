//! The archive of dropped traces: every trace decided not kept, compressed, in a segmented log of its own,
//! bounded by bytes and by age (whole oldest segments removed first), findable by trace ID.
//!
//! ```text
//! <dir>/00000000000000000007.seg   a `SegmentLog` (its header, checksums and torn-tail cut): BLOCK records
//! <dir>/00000000000000000007.idx   written when the segment is closed: "TSAIDX03", traces `n` (u64), first and
//!                                  last time (i64 ns), the segment's blocked Bloom filter (`filter_words(n)`
//!                                  u64 LE, in blocks of 512 bits), its fences (every 128th sorted ID,
//!                                  `n.div_ceil(128)` u128 LE), then (trace ID u128 LE, record offset u64 LE)
//!                                  sorted by ID
//! ```
//! The filter and fences at the front of the index file (about 1.6 B per trace) let a reader without an engine
//! (`recover --archive`) probe a segment with two small reads (its header, one filter block) instead of a
//! binary search, and an engine reopen without reading every ID. An index of version 2 ("TSAIDX02": the
//! entries right after the header, no filter, no fences) is still read: offline by binary search; an engine
//! opening it rewrites it as version 3.
//! A BLOCK body (format 2): the version byte (2), traces `n` (u32), the origin table's length (u32), then per
//! trace its ID (u128 LE), time archived (i64 ns) and part length (u32), then one zstd frame of the traces'
//! parts one after another and the block's origin table. A trace's part is the chunks the store held, as they
//! were: chunk count (u32), then per chunk its origin's index in the table (u32), spans (u32), length (u32) and
//! the framed span bytes. The origin table holds each resource and scope of the block once: resources (u32),
//! each its raw bytes and schema URL; origins (u32), each its resource's index, raw scope bytes and schema URL
//! (bytes as a u32 length, `u32::MAX` for an absent field). A trace's OTLP payload is rebuilt only when it is
//! read back (find, scan, recover): writing copies the stored span bytes once and encodes nothing.
//! Format 1 (record kind 10: one re-encoded payload per trace) is not read: such a segment is skipped and
//! reported (`truncations` on open, a problem line to a reader).
//!
//! Memory: the open segment's IDs (24 B each); per closed segment a Bloom filter (1.5 B per trace) and every
//! 128th indexed ID (fences, 0.125 B per trace): a lookup reads one stretch of an index file between two fences
//! in the segments whose filter says maybe. A segment left without its index by kill -9 gets one on the
//! next open, rebuilt from its records.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::Arc;

use crate::otlp::encode::{encode_requests, OutChunk};
use crate::store::intern::{Origin, Resource};
use crate::store::shard::Chunk;

use super::segment_log::{
    checksum, Budget, LogOptions, Records, SegmentLog, SyncPolicy, Truncation, RECORD_HEADER,
    SEGMENT_HEADER,
};

/// The record kind of a format-2 block (format 1's was 10, see `BLOCK_V1`).
pub const BLOCK: u8 = 11;
/// Blocks written before format 2: not readable any more, skipped and reported.
const BLOCK_V1: u8 = 10;
const FORMAT: u8 = 2;
const IDX_MAGIC: &[u8; 8] = b"TSAIDX03";
/// Index files before the filter and fences were stored in them: still read.
const IDX_MAGIC_V2: &[u8; 8] = b"TSAIDX02";
const IDX_HEADER: u64 = 8 + 8 + 8 + 8;
const IDX_ENTRY: u64 = 24;
/// zstd level -5, in 1 MiB blocks: on the seed traffic's stored spans it compresses about 30 % faster than
/// level 1 (1.48 against 1.12 GB/s on this machine) to 0.151 of the raw bytes against 0.103, well under a
/// quarter of the OTLP bytes; level -7 would gain 9 % more speed for 11 % more bytes (hours of retention).
/// Larger blocks compress better at every level (256 KiB: 0.166 at -5). The survey:
/// `survey_levels_and_block_sizes` below, figures in bench/RESULTS.md.
pub const LEVEL: i32 = -5;
/// Traces are written in blocks of about this many stored bytes: a lookup decompresses one block (about a
/// quarter of a millisecond at 1 MiB).
const BLOCK_RAW_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub directory: PathBuf,
    pub max_bytes: u64,
    /// Segments whose newest trace is older than this are removed (0: no age limit).
    pub max_age_ns: i64,
    pub segment_bytes: u64,
}

/// One dropped trace handed to the archive: its ID and the chunks the store held (moved, not copied).
pub type Dropped = (u128, Vec<Chunk>);

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ArchiveStats {
    pub traces_written: u64,
    pub bytes_raw: u64,
    pub blocks_written: u64,
    pub traces_refused_budget: u64,
    pub traces_refused_io: u64,
    pub segments_removed_size: u64,
    pub segments_removed_age: u64,
    pub lookups: u64,
    pub lookups_found: u64,
}

#[derive(Debug, Clone)]
struct SegMeta {
    id: u64,
    traces: u64,
    first: i64,
    last: i64,
    idx_bytes: u64,
    /// Where the index file's entries start (its version's layout).
    entries_at: u64,
    /// Which trace IDs the segment may hold: a lookup reads only the segments whose filter says maybe.
    filter: Filter,
    /// Every `FENCE`th trace ID of the sorted index file.
    fences: Box<[u128]>,
}

/// A closed segment's every `FENCE`th indexed trace ID is held in memory (0.125 B per trace): a lookup reads the
/// one stretch of the index file between two fences (one read of at most 3 KB) instead of binary-searching the
/// file read by read, which on a cold page cache cost a disk read per step.
const FENCE: usize = 128;

fn fences(sorted: impl Iterator<Item = u128>) -> Box<[u128]> {
    sorted.step_by(FENCE).collect()
}

/// A blocked Bloom filter of a closed segment's trace IDs: `FILTER_BITS` bits per trace (1.5 B), `FILTER_HASHES`
/// probes, all in one 512-bit block (one cache line in memory, one 64-byte read from an index file, one page on
/// a cold disk), about 0.4 % false positives (`a_blocked_filter_has_no_false_negatives_and_few_false_positives`).
#[derive(Debug, Clone, Default)]
struct Filter {
    bits: Vec<u64>,
}

const FILTER_BITS: u64 = 12;
const FILTER_HASHES: u64 = 7;

/// A filter block: 8 words, 512 bits.
const FILTER_BLOCK_WORDS: u64 = 8;

/// How many u64 words the filter of a segment of `n` index entries has (as `Filter::new` sizes it): whole blocks.
fn filter_words(n: u64) -> u64 {
    n.saturating_mul(FILTER_BITS).max(512).div_ceil(512) * FILTER_BLOCK_WORDS
}

impl Filter {
    fn new(ids: impl ExactSizeIterator<Item = u128>) -> Self {
        let mut f = Filter {
            bits: vec![0; filter_words(ids.len() as u64) as usize],
        };
        let words = f.bits.len() as u64;
        for id in ids {
            let (block, bits) = probes(words, id);
            let b =
                &mut f.bits[(block * FILTER_BLOCK_WORDS) as usize..][..FILTER_BLOCK_WORDS as usize];
            for bit in bits {
                b[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        f
    }

    fn may_contain(&self, id: u128) -> bool {
        if self.bits.len() < FILTER_BLOCK_WORDS as usize {
            return true;
        }
        let (block, bits) = probes(self.bits.len() as u64, id);
        block_has(
            &self.bits[(block * FILTER_BLOCK_WORDS) as usize..][..FILTER_BLOCK_WORDS as usize],
            bits,
        )
    }

    fn bytes(&self) -> u64 {
        (self.bits.len() * 8) as u64
    }
}

/// splitmix64's finalizer: trace IDs are random in most of their bits, not all (some carry a time in their
/// first bytes), so both halves are mixed.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The block a filter of `words` u64 words tests for `id`, and the bits (0..512) it tests in that block.
fn probes(words: u64, id: u128) -> (u64, [u64; FILTER_HASHES as usize]) {
    let h1 = mix(id as u64 ^ mix((id >> 64) as u64));
    let h2 = mix(h1);
    let block = h1 % (words / FILTER_BLOCK_WORDS).max(1);
    (block, std::array::from_fn(|i| (h2 >> (9 * i)) & 511))
}

fn block_has(block: &[u64], bits: [u64; FILTER_HASHES as usize]) -> bool {
    bits.iter()
        .all(|&bit| block[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
}

/// The entries of an index file whose entries start at `at` (of version 2: to rewrite it as version 3).
fn index_entries(dir: &Path, id: u64, n: u64, at: u64) -> io::Result<Vec<(u128, u64)>> {
    let data = fs::read(idx_path(dir, id))?;
    Ok(data
        .get(at as usize..(at + n * IDX_ENTRY) as usize)
        .unwrap_or_default()
        .chunks_exact(IDX_ENTRY as usize)
        .map(parse_entry)
        .collect())
}

/// Where a version-3 index file keeps its filter (its fences follow, then its entries).
const FILTER_AT: u64 = IDX_HEADER;

/// Where the entries of an index file of `n` entries start: after the filter and fences (version 3), right after
/// the header (version 2).
fn entries_at(n: u64, stored_filter: bool) -> u64 {
    if stored_filter {
        FILTER_AT + filter_words(n) * 8 + n.div_ceil(FENCE as u64) * 16
    } else {
        IDX_HEADER
    }
}

/// A version-3 index file's filter and fences, in one read.
fn read_index_filter(f: &File, n: u64) -> io::Result<(Filter, Box<[u128]>)> {
    let words = filter_words(n) as usize;
    let mut buf = vec![0u8; words * 8 + n.div_ceil(FENCE as u64) as usize * 16];
    f.read_exact_at(&mut buf, FILTER_AT)?;
    let (fb, rest) = buf.split_at(words * 8);
    let bits = fb
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect();
    let fences = rest
        .chunks_exact(16)
        .map(|w| u128::from_le_bytes(w.try_into().unwrap()))
        .collect();
    Ok((Filter { bits }, fences))
}

/// The offset, in a version-3 index file of `n` entries, of the filter block that `id` falls in.
fn filter_block_at(n: u64, id: u128) -> u64 {
    FILTER_AT + probes(filter_words(n), id).0 * FILTER_BLOCK_WORDS * 8
}

/// Whether a version-3 index file's filter may hold `id`: one read of the 64-byte block its probes test.
fn index_may_contain(f: &File, n: u64, id: u128) -> io::Result<bool> {
    let mut b = [0u8; (FILTER_BLOCK_WORDS * 8) as usize];
    f.read_exact_at(&mut b, filter_block_at(n, id))?;
    let words: Vec<u64> = b
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect();
    Ok(block_has(&words, probes(filter_words(n), id).1))
}

/// How many entries a version-3 index file `len` bytes long holds (None: no count gives that length).
fn entries_for_len(len: u64) -> Option<u64> {
    let size = |n: u64| entries_at(n, true) + n * IDX_ENTRY;
    let (mut lo, mut hi) = (0u64, len / IDX_ENTRY + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if size(mid) < len {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (size(lo) == len).then_some(lo)
}

/// A version-3 index file's fences, in one read.
fn read_fences(f: &File, n: u64) -> io::Result<Box<[u128]>> {
    let mut buf = vec![0u8; n.div_ceil(FENCE as u64) as usize * 16];
    f.read_exact_at(&mut buf, FILTER_AT + filter_words(n) * 8)?;
    Ok(buf
        .chunks_exact(16)
        .map(|w| u128::from_le_bytes(w.try_into().unwrap()))
        .collect())
}

/// A trace found in the archive.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: u128,
    pub archived_at: i64,
    pub payload: Vec<u8>,
}

pub struct Archive {
    opts: ArchiveOptions,
    log: SegmentLog,
    /// Closed segments, oldest first.
    closed: Vec<SegMeta>,
    /// The open segment's traces: (ID, record offset), and its time span.
    open: Vec<(u128, u64)>,
    open_first: i64,
    open_last: i64,
    pub truncations: Vec<Truncation>,
    pub stats: ArchiveStats,
    /// Reused across blocks: a zstd context allocates about a megabyte of tables, and fresh buffers fault in
    /// fresh pages (both showed in profiles as page zeroing).
    compressor: Option<zstd::bulk::Compressor<'static>>,
    builder: BlockBuilder,
    out: Vec<u8>,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn idx_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.idx"))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn u128_at(b: &[u8], at: usize) -> Option<u128> {
    Some(u128::from_le_bytes(b.get(at..at + 16)?.try_into().ok()?))
}

const ENTRY: usize = 16 + 8 + 4;
/// Version byte, traces, origin table length.
const BLOCK_HEAD: usize = 1 + 4 + 4;
/// An absent optional field in the origin table.
const ABSENT: u32 = u32::MAX;

/// A BLOCK's table: (trace ID, time archived, part length) per trace.
type BlockTable = Vec<(u128, i64, u32)>;
/// A segment's index entries (trace ID, record offset) and its first and last archive time.
type SegmentScan = (Vec<(u128, u64)>, i64, i64);

/// A BLOCK's table: (ID, time, part length) per trace, the origin table's length, and where the compressed
/// part starts.
fn block_table(body: &[u8]) -> Option<(BlockTable, usize, usize)> {
    if *body.first()? != FORMAT {
        return None;
    }
    let n = u32_at(body, 1)? as usize;
    let origins = u32_at(body, 5)? as usize;
    let end = BLOCK_HEAD.checked_add(n.checked_mul(ENTRY)?)?;
    if end > body.len() {
        return None;
    }
    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        let at = BLOCK_HEAD + i * ENTRY;
        t.push((
            u128_at(body, at)?,
            u64_at(body, at + 16)? as i64,
            u32_at(body, at + 24)?,
        ));
    }
    Some((t, origins, end))
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// Reads what `put_bytes` wrote at `*at`, moving past it: Some(None) for an absent field.
fn get_bytes<'a>(b: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = u32_at(b, *at)?;
    *at += 4;
    if len == ABSENT {
        return Some(None);
    }
    let v = b.get(*at..at.checked_add(len as usize)?)?;
    *at += len as usize;
    Some(Some(v))
}

/// A block's origin table read back: each origin under its (shared) resource, so the rebuilt payload groups
/// scopes under resources as the kept path does.
fn read_origins(table: &[u8]) -> Option<Vec<Arc<Origin>>> {
    let mut at = 0;
    let text = |b: Option<&[u8]>| -> Option<Box<str>> {
        Some(std::str::from_utf8(b.unwrap_or_default()).ok()?.into())
    };
    let nres = u32_at(table, at)? as usize;
    at += 4;
    let mut resources = Vec::with_capacity(nres.min(table.len()));
    for _ in 0..nres {
        let raw = get_bytes(table, &mut at)?.map(Box::from);
        let schema_url = text(get_bytes(table, &mut at)?)?;
        resources.push(Arc::new(Resource {
            raw,
            schema_url,
            matched: 0,
        }));
    }
    let norig = u32_at(table, at)? as usize;
    at += 4;
    let mut origins = Vec::with_capacity(norig.min(table.len()));
    for _ in 0..norig {
        let r = resources.get(u32_at(table, at)? as usize)?.clone();
        at += 4;
        let raw = get_bytes(table, &mut at)?.map(Box::from);
        let schema_url = text(get_bytes(table, &mut at)?)?;
        origins.push(Arc::new(Origin {
            resource: r,
            raw,
            schema_url,
        }));
    }
    (at == table.len()).then_some(origins)
}

/// One trace's OTLP payload rebuilt from its part of a block.
fn rebuild(part: &[u8], origins: &[Arc<Origin>]) -> Option<Vec<u8>> {
    let n = u32_at(part, 0)? as usize;
    let mut at = 4;
    let mut chunks = Vec::with_capacity(n.min(part.len()));
    for _ in 0..n {
        let origin = origins.get(u32_at(part, at)? as usize)?;
        let spans = u32_at(part, at + 4)?;
        let len = u32_at(part, at + 8)? as usize;
        at += 12;
        let framed = part.get(at..at.checked_add(len)?)?;
        at += len;
        chunks.push(OutChunk {
            origin,
            framed,
            spans,
        });
    }
    if at != part.len() {
        return None;
    }
    let mut p = encode_requests(&chunks, usize::MAX >> 1, |_, _| {});
    match p.len() {
        0 => Some(Vec::new()),
        1 => Some(p.swap_remove(0)),
        _ => None,
    }
}

/// The payloads of a BLOCK, with the table: (ID, time, payload), of every trace or of those `wanted` says.
pub fn decode_block(body: &[u8]) -> io::Result<Vec<(u128, i64, Vec<u8>)>> {
    decode_block_where(body, |_, _| true)
}

/// `decode_block` of the traces `wanted(ID, time archived)` says (the others are not rebuilt).
fn decode_block_where(
    body: &[u8],
    wanted: impl Fn(u128, i64) -> bool,
) -> io::Result<Vec<(u128, i64, Vec<u8>)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "archive block is malformed");
    if body.first() != Some(&FORMAT) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "archive block of format {} (this version reads format {FORMAT})",
                body.first().copied().unwrap_or(0)
            ),
        ));
    }
    let (table, origins_len, start) = block_table(body).ok_or_else(bad)?;
    let parts: usize = table.iter().map(|e| e.2 as usize).sum();
    let total = parts.checked_add(origins_len).ok_or_else(bad)?;
    let raw = zstd::bulk::decompress(&body[start..], total)?;
    if raw.len() != total {
        return Err(bad());
    }
    let origins = read_origins(&raw[parts..]).ok_or_else(bad)?;
    let mut at = 0;
    let mut out = Vec::new();
    for (id, t, len) in table {
        let part = &raw[at..at + len as usize];
        at += len as usize;
        if wanted(id, t) {
            out.push((id, t, rebuild(part, &origins).ok_or_else(bad)?));
        }
    }
    Ok(out)
}

/// Builds one block's uncompressed stream: the traces' parts (the stored chunk bytes copied once), then the
/// origin table. Kept in the archive so its buffers and maps are reused block after block.
#[derive(Default)]
struct BlockBuilder {
    raw: Vec<u8>,
    /// The origin table: its resources and origins, each once, in order of first use.
    resources: Vec<u8>,
    origins: Vec<u8>,
    /// Keyed by address (the chunks hold their `Arc`s while the block is built).
    res_index: HashMap<usize, u32>,
    origin_index: HashMap<usize, u32>,
    head: Vec<u8>,
}

impl BlockBuilder {
    /// Lays out `traces` archived at `now`; leaves the head in `head` and the stream to compress in `raw`.
    fn build(&mut self, traces: &[Dropped], now: i64) {
        self.raw.clear();
        self.resources.clear();
        self.origins.clear();
        self.res_index.clear();
        self.origin_index.clear();
        self.head.clear();
        self.head.push(FORMAT);
        self.head
            .extend_from_slice(&(traces.len() as u32).to_le_bytes());
        self.head.extend_from_slice(&0u32.to_le_bytes());
        for (id, chunks) in traces {
            let start = self.raw.len();
            self.raw
                .extend_from_slice(&(chunks.len() as u32).to_le_bytes());
            for c in chunks {
                let o = self.origin(&c.origin);
                self.raw.extend_from_slice(&o.to_le_bytes());
                self.raw.extend_from_slice(&c.spans.to_le_bytes());
                self.raw
                    .extend_from_slice(&(c.framed.len() as u32).to_le_bytes());
                self.raw.extend_from_slice(&c.framed);
            }
            self.head.extend_from_slice(&id.to_le_bytes());
            self.head.extend_from_slice(&now.to_le_bytes());
            self.head
                .extend_from_slice(&((self.raw.len() - start) as u32).to_le_bytes());
        }
        let table_start = self.raw.len();
        self.raw
            .extend_from_slice(&(self.res_index.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(&self.resources);
        self.raw
            .extend_from_slice(&(self.origin_index.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(&self.origins);
        let table_len = (self.raw.len() - table_start) as u32;
        self.head[5..9].copy_from_slice(&table_len.to_le_bytes());
    }

    fn origin(&mut self, o: &Arc<Origin>) -> u32 {
        if let Some(&i) = self.origin_index.get(&(Arc::as_ptr(o) as usize)) {
            return i;
        }
        let r: &Arc<Resource> = &o.resource;
        let ri = match self.res_index.get(&(Arc::as_ptr(r) as usize)) {
            Some(&i) => i,
            None => {
                let i = self.res_index.len() as u32;
                self.res_index.insert(Arc::as_ptr(r) as usize, i);
                put_bytes(&mut self.resources, r.raw.as_deref());
                put_bytes(&mut self.resources, Some(r.schema_url.as_bytes()));
                i
            }
        };
        let i = self.origin_index.len() as u32;
        self.origin_index.insert(Arc::as_ptr(o) as usize, i);
        self.origins.extend_from_slice(&ri.to_le_bytes());
        put_bytes(&mut self.origins, o.raw.as_deref());
        put_bytes(&mut self.origins, Some(o.schema_url.as_bytes()));
        i
    }
}

/// A trace's bytes in a block: its chunks and their headers.
fn part_size(chunks: &[Chunk]) -> usize {
    4 + chunks.iter().map(|c| 12 + c.framed.len()).sum::<usize>()
}

/// Sorts `entries`, sets `m`'s filter and fences from them, and writes the segment's index file (version 3);
/// sets `m.idx_bytes` when written.
fn write_index(dir: &Path, m: &mut SegMeta, entries: &mut [(u128, u64)]) -> io::Result<()> {
    entries.sort_unstable();
    m.traces = entries.len() as u64;
    m.filter = Filter::new(entries.iter().map(|e| e.0));
    m.fences = fences(entries.iter().map(|e| e.0));
    let mut b = Vec::with_capacity(
        IDX_HEADER as usize
            + entries.len() * IDX_ENTRY as usize
            + m.filter.bits.len() * 8
            + m.fences.len() * 16,
    );
    b.extend_from_slice(IDX_MAGIC);
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    b.extend_from_slice(&m.first.to_le_bytes());
    b.extend_from_slice(&m.last.to_le_bytes());
    for w in m.filter.bits.iter() {
        b.extend_from_slice(&w.to_le_bytes());
    }
    for f in m.fences.iter() {
        b.extend_from_slice(&f.to_le_bytes());
    }
    for (id, off) in entries.iter() {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
    }
    // Written whole under a temporary name, then renamed: an index is there complete or not at all.
    let tmp = dir.join(format!("{:020}.idx.tmp", m.id));
    fs::write(&tmp, &b)?;
    fs::rename(&tmp, idx_path(dir, m.id))?;
    m.idx_bytes = b.len() as u64;
    m.entries_at = entries_at(m.traces, true);
    Ok(())
}

/// An index file's header.
struct IndexHeader {
    traces: u64,
    first: i64,
    last: i64,
    bytes: u64,
    /// Version 3: the filter and fences come before the entries.
    stored_filter: bool,
    file: File,
}

impl IndexHeader {
    fn entries_at(&self) -> u64 {
        entries_at(self.traces, self.stored_filter)
    }
}

/// Reads an index file's header (the file stays open in it); None when missing or not an index of a known
/// version, or not of the length its header says. With `prefetch` (the trace ID about to be probed), the filter
/// block it falls in is asked for with the header: a cold lookup then waits on the disk once per segment.
fn read_index_header(dir: &Path, id: u64, prefetch: Option<u128>) -> Option<IndexHeader> {
    let f = File::open(idx_path(dir, id)).ok()?;
    let len = f.metadata().ok()?.len();
    let mut h = [0u8; IDX_HEADER as usize];
    // No read-ahead: what comes next is read in requests of its own size (and a read that misses the page
    // cache would otherwise start reading ahead of the header). In the page cache: read at once, no more
    // hints. Otherwise, with `prefetch`, the ID's filter block asked for while the header's page is read (one
    // wait on the disk, not two), placed by the entry count a version-3 file of this length has (a hint only:
    // the header, read next, decides).
    advise(&f, Advice::Random);
    if !read_cached(&f, &mut h, 0) {
        if let Some(tid) = prefetch {
            advise_range(&f, Advice::WillNeed, 0, IDX_HEADER);
            if let Some(n) = entries_for_len(len) {
                advise_range(
                    &f,
                    Advice::WillNeed,
                    filter_block_at(n, tid),
                    FILTER_BLOCK_WORDS * 8,
                );
            }
        }
        f.read_exact_at(&mut h, 0).ok()?;
    }
    let stored_filter = match &h[..8] {
        m if m == IDX_MAGIC => true,
        m if m == IDX_MAGIC_V2 => false,
        _ => return None,
    };
    let n = u64_at(&h, 8)?;
    let (first, last) = (u64_at(&h, 16)? as i64, u64_at(&h, 24)? as i64);
    // Overflow-safe: `n` is at most what the file's length allows before any arithmetic that could overflow.
    if n > len / IDX_ENTRY {
        return None;
    }
    let want = entries_at(n, stored_filter) + n * IDX_ENTRY;
    (want == len).then_some(IndexHeader {
        traces: n,
        first,
        last,
        bytes: len,
        stored_filter,
        file: f,
    })
}

/// Scans a segment's records: its index entries and time span, and how many blocks of format 1 it holds
/// (not readable: left out of the index).
fn scan_segment(dir: &Path, id: u64) -> io::Result<(SegmentScan, u64)> {
    let mut data = Vec::new();
    File::open(seg_path(dir, id))?.read_to_end(&mut data)?;
    let mut entries = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut old = 0;
    for r in Records::new(id, &data) {
        if r.kind == BLOCK_V1 {
            old += 1;
        }
        if r.kind != BLOCK {
            continue;
        }
        if let Some((table, ..)) = block_table(r.body) {
            for (tid, t, _) in table {
                entries.push((tid, r.position.offset));
                first = first.min(t);
                last = last.max(t);
            }
        }
    }
    Ok(((entries, first, last), old))
}

fn parse_entry(e: &[u8]) -> (u128, u64) {
    (
        u128::from_le_bytes(e[..16].try_into().unwrap()),
        u64::from_le_bytes(e[16..24].try_into().unwrap()),
    )
}

/// Search of one closed segment's index file: the record offsets holding `id`. With the segment's `fences`, one
/// read of the stretch between two fences; without (offline), a binary search.
fn search_index(
    dir: &Path,
    seg: u64,
    (n, at): (u64, u64),
    id: u128,
    fences: Option<&[u128]>,
) -> io::Result<Vec<u64>> {
    search_index_in(&File::open(idx_path(dir, seg))?, (n, at), id, fences)
}

/// `n` entries starting at `at` in index file `f`.
fn search_index_in(
    f: &File,
    (n, at): (u64, u64),
    id: u128,
    fences: Option<&[u128]>,
) -> io::Result<Vec<u64>> {
    let entry = |i: u64| -> io::Result<(u128, u64)> {
        let mut e = [0u8; IDX_ENTRY as usize];
        f.read_exact_at(&mut e, at + i * IDX_ENTRY)?;
        Ok(parse_entry(&e))
    };
    // The entries holding `id` from `lo` on, after those already in `out`.
    let run_from = |mut lo: u64, mut out: Vec<u64>| -> io::Result<Vec<u64>> {
        while lo < n {
            let (e, off) = entry(lo)?;
            if e != id {
                break;
            }
            out.push(off);
            lo += 1;
        }
        Ok(out)
    };
    let (mut lo, mut hi) = (0u64, n);
    if let Some(fs) = fences.filter(|fs| fs.len() as u64 == n.div_ceil(FENCE as u64)) {
        // fences[p - 1] < id <= fences[p]: the first entry >= id is in ((p - 1) * FENCE, p * FENCE].
        let p = fs.partition_point(|&x| x < id) as u64;
        let from = p.saturating_sub(1) * FENCE as u64;
        let to = (p * FENCE as u64 + 1).min(n);
        let mut buf = vec![0u8; ((to - from) * IDX_ENTRY) as usize];
        f.read_exact_at(&mut buf, at + from * IDX_ENTRY)?;
        let mut out = Vec::new();
        for (e, off) in buf.chunks_exact(IDX_ENTRY as usize).map(parse_entry) {
            if e == id {
                out.push(off);
            } else if e > id {
                return Ok(out);
            }
        }
        // The stretch ended on `id` itself: its other parts follow.
        return run_from(to, out);
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry(mid)?.0 < id {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    run_from(lo, Vec::new())
}

/// How many threads `ArchiveReader` reads index files with.
const FIND_THREADS: usize = 8;

/// `f` over `segs` cut in `FIND_THREADS` runs, one thread each; the results in the order of the runs.
fn in_parallel<T: Send>(segs: &[u64], f: impl Fn(&[u64]) -> T + Sync) -> Vec<T> {
    let per = segs.len().div_ceil(FIND_THREADS).max(1);
    if segs.len() <= 1 {
        return vec![f(segs)];
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = segs
            .chunks(per)
            .map(|part| s.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            // A panic in `f` is a bug: carried to the caller as it would be without threads.
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

enum Advice {
    Random,
    Sequential,
    WillNeed,
}

/// Tells the kernel how a file is about to be read (read ahead in large requests, or now, in the
/// background); a hint only, its failure ignored.
fn advise(f: &File, advice: Advice) {
    advise_range(f, advice, 0, 0);
}

/// `advise` for `len` bytes from `offset` (0: to the end).
fn advise_range(f: &File, advice: Advice, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let a = match advice {
        Advice::Random => libc::POSIX_FADV_RANDOM,
        Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
        Advice::WillNeed => libc::POSIX_FADV_WILLNEED,
    };
    // SAFETY: a plain system call on a descriptor `f` owns for the call's duration; no memory is passed.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), offset as i64, len as i64, a);
    }
}

/// Reads `buf` at `offset` only if it is all in the page cache (`preadv2` with `RWF_NOWAIT`); false otherwise
/// (not cached, short, or a kernel without it), `buf` then to be read the usual way.
fn read_cached(f: &File, buf: &mut [u8], offset: u64) -> bool {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` points at `buf`, alive and exclusively borrowed for the call; the kernel writes at most
    // `buf.len()` bytes there.
    let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, offset as i64, libc::RWF_NOWAIT) };
    n == buf.len() as isize
}

/// A whole segment file, read as a sequential stream (a scan, a lookup in the open segment): the kernel reads
/// it ahead in large requests instead of its default window.
fn read_segment(dir: &Path, seg: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(seg_path(dir, seg))?;
    advise(&f, Advice::Sequential);
    advise(&f, Advice::WillNeed);
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut data = Vec::with_capacity(len + 1);
    f.read_to_end(&mut data)?;
    Ok(data)
}

/// Reads and checks the record at `offset` of segment `seg`; returns its body.
fn read_record(dir: &Path, seg: u64, offset: u64) -> io::Result<Vec<u8>> {
    let f = File::open(seg_path(dir, seg))?;
    let mut h = [0u8; RECORD_HEADER as usize];
    f.read_exact_at(&mut h, offset)?;
    let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let mut body = vec![0u8; len];
    f.read_exact_at(&mut body, offset + RECORD_HEADER)?;
    if h[8] != BLOCK || checksum(BLOCK, &[&body]) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("archive segment {seg}: bad record at offset {offset}"),
        ));
    }
    Ok(body)
}

fn find_in(
    dir: &Path,
    seg: u64,
    offsets: &[u64],
    id: u128,
    out: &mut Vec<Found>,
) -> io::Result<()> {
    for &off in offsets {
        let body = read_record(dir, seg, off)?;
        for (_, t, payload) in decode_block_where(&body, |t, _| t == id)? {
            out.push(Found {
                id,
                archived_at: t,
                payload,
            });
        }
    }
    Ok(())
}

impl Archive {
    /// Opens (creating it) the archive in `opts.directory`: cuts a torn tail (see `truncations`), rebuilds the
    /// index of a segment left without one, and removes what is past the limits.
    pub fn open(opts: ArchiveOptions) -> io::Result<Self> {
        let (log, truncations) = SegmentLog::open_checking_tail(
            &opts.directory,
            LogOptions {
                segment_bytes: opts.segment_bytes.max(4096),
                // Bounded here, by removing old segments; the log's own budget never refuses.
                budget: Budget::new(u64::MAX),
                sync: SyncPolicy::None,
            },
        )?;
        let dir = opts.directory.clone();
        let current = log.current_segment();
        let mut closed = Vec::new();
        let mut truncations = truncations;
        for id in log.segment_ids() {
            if id == current {
                continue;
            }
            let meta = match read_index_header(&dir, id, None) {
                // The filter and fences as stored: one read of about 1.6 B per trace, no ID read.
                Some(h) if h.stored_filter => {
                    let (filter, fences) = read_index_filter(&h.file, h.traces)?;
                    SegMeta {
                        id,
                        traces: h.traces,
                        first: h.first,
                        last: h.last,
                        idx_bytes: h.bytes,
                        entries_at: h.entries_at(),
                        filter,
                        fences,
                    }
                }
                // An index of version 2: rewritten as version 3 (once), from its own entries.
                Some(h) => {
                    let mut entries = index_entries(&dir, id, h.traces, h.entries_at())?;
                    let mut m = SegMeta {
                        id,
                        traces: h.traces,
                        first: h.first,
                        last: h.last,
                        idx_bytes: h.bytes,
                        entries_at: h.entries_at(),
                        filter: Filter::default(),
                        fences: Box::default(),
                    };
                    // Not rewritten (a read-only directory, a full disk): the version-2 file still serves.
                    let _ = write_index(&dir, &mut m, &mut entries);
                    m
                }
                None => {
                    let ((mut entries, first, last), old) = scan_segment(&dir, id)?;
                    if old > 0 {
                        // Reported like a torn tail (nothing is cut): the segment stays until it ages out.
                        truncations.push(Truncation {
                            segment: id,
                            file: seg_path(&dir, id),
                            offset: 0,
                            bytes: 0,
                            reason: format!(
                                "{old} block(s) of an older archive format (1): not readable, skipped"
                            ),
                        });
                    }
                    let mut m = SegMeta {
                        id,
                        traces: entries.len() as u64,
                        first,
                        last,
                        idx_bytes: 0,
                        entries_at: 0,
                        filter: Filter::default(),
                        fences: Box::default(),
                    };
                    write_index(&dir, &mut m, &mut entries)?;
                    m
                }
            };
            closed.push(meta);
        }
        // Index files of segments gone (removed while the index was being written).
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name
                    .strip_suffix(".idx")
                    .or_else(|| name.strip_suffix(".idx.tmp"));
                if let Some(id) = stem.and_then(|s| s.parse::<u64>().ok()) {
                    if name.ends_with(".tmp") || !closed.iter().any(|m| m.id == id) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(Archive {
            opts,
            log,
            closed,
            open: Vec::new(),
            open_first: i64::MAX,
            open_last: i64::MIN,
            truncations,
            stats: ArchiveStats::default(),
            compressor: None,
            builder: BlockBuilder::default(),
            out: Vec::new(),
        })
    }

    pub fn directory(&self) -> &Path {
        &self.opts.directory
    }

    pub fn options(&self) -> &ArchiveOptions {
        &self.opts
    }

    /// Bytes on disk: segments and their indexes.
    pub fn bytes(&self) -> u64 {
        self.log.bytes() + self.closed.iter().map(|m| m.idx_bytes).sum::<u64>()
    }

    /// Traces held (a trace archived in two parts counts twice).
    pub fn traces(&self) -> u64 {
        self.closed.iter().map(|m| m.traces).sum::<u64>() + self.open.len() as u64
    }

    /// When the oldest trace held was archived (None when empty).
    pub fn oldest(&self) -> Option<i64> {
        self.closed
            .iter()
            .map(|m| m.first)
            .chain((!self.open.is_empty()).then_some(self.open_first))
            .min()
    }

    /// Bytes the in-memory index holds: the open segment's table and the closed segments' filters.
    pub fn index_memory_bytes(&self) -> u64 {
        (self.open.capacity() * std::mem::size_of::<(u128, u64)>()) as u64
            + self
                .closed
                .iter()
                .map(|m| m.filter.bytes() + (m.fences.len() * 16) as u64)
                .sum::<u64>()
    }

    /// Writes dropped traces archived at `now`, in blocks of about `BLOCK_RAW_BYTES` (a lookup decompresses one
    /// block); returns how many were written (fewer when refused).
    pub fn write(&mut self, traces: &[Dropped], now: i64) -> usize {
        let mut written = 0;
        let mut start = 0;
        while start < traces.len() {
            let mut end = start;
            let mut raw = 0;
            while end < traces.len()
                && (end == start || raw + part_size(&traces[end].1) <= BLOCK_RAW_BYTES)
            {
                raw += part_size(&traces[end].1);
                end += 1;
            }
            written += self.write_block(&traces[start..end], now);
            start = end;
        }
        written
    }

    fn write_block(&mut self, traces: &[Dropped], now: i64) -> usize {
        if traces.is_empty() {
            return 0;
        }
        let mut b = std::mem::take(&mut self.builder);
        b.build(traces, now);
        let (head, raw) = (&b.head, &b.raw);
        let mut compressed = std::mem::take(&mut self.out);
        compressed.clear();
        compressed.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let done = match &mut self.compressor {
            Some(c) => c.compress_to_buffer(raw, &mut compressed),
            None => zstd::bulk::Compressor::new(LEVEL).and_then(|mut c| {
                let n = c.compress_to_buffer(raw, &mut compressed);
                self.compressor = Some(c);
                n
            }),
        };
        let written = self.append_block(traces, head, &compressed, raw.len(), now, done.is_ok());
        self.builder = b;
        self.out = compressed;
        written
    }

    fn append_block(
        &mut self,
        traces: &[Dropped],
        head: &[u8],
        compressed: &[u8],
        raw_len: usize,
        now: i64,
        compressed_ok: bool,
    ) -> usize {
        if !compressed_ok {
            self.stats.traces_refused_io += traces.len() as u64;
            return 0;
        }
        let need = RECORD_HEADER
            + SEGMENT_HEADER
            + IDX_ENTRY * traces.len() as u64
            + (head.len() + compressed.len()) as u64;
        self.expire(now);
        // Oldest whole segments go first, until the block fits.
        while self.bytes() + need > self.opts.max_bytes && self.remove_oldest() {
            self.stats.segments_removed_size += 1;
        }
        if self.bytes() + need > self.opts.max_bytes {
            self.stats.traces_refused_budget += traces.len() as u64;
            return 0;
        }
        let before = self.log.current_segment();
        let pos = match self.log.append(BLOCK, &[head, compressed]) {
            Ok(p) => p,
            Err(_) => {
                self.stats.traces_refused_io += traces.len() as u64;
                return 0;
            }
        };
        if pos.segment != before {
            self.seal(before);
        }
        for t in traces {
            self.open.push((t.0, pos.offset));
        }
        self.open_first = self.open_first.min(now);
        self.open_last = self.open_last.max(now);
        self.stats.traces_written += traces.len() as u64;
        self.stats.bytes_raw += raw_len as u64;
        self.stats.blocks_written += 1;
        traces.len()
    }

    /// The segment `id` was closed by the log: its index goes to disk.
    fn seal(&mut self, id: u64) {
        let mut entries = std::mem::take(&mut self.open);
        let mut m = SegMeta {
            id,
            traces: entries.len() as u64,
            first: self.open_first,
            last: self.open_last,
            idx_bytes: 0,
            entries_at: 0,
            filter: Filter::default(),
            fences: Box::default(),
        };
        self.open_first = i64::MAX;
        self.open_last = i64::MIN;
        // Without its index file the segment is still found: `open` rebuilds it (the filter and fences are
        // set before any write).
        let _ = write_index(&self.opts.directory, &mut m, &mut entries);
        self.closed.push(m);
    }

    /// Removes the oldest closed segment; false when there is none.
    fn remove_oldest(&mut self) -> bool {
        let Some(m) = self.closed.first().cloned() else {
            return false;
        };
        if self.log.drop_before(m.id + 1).is_err() {
            return false;
        }
        let _ = fs::remove_file(idx_path(&self.opts.directory, m.id));
        self.closed.remove(0);
        true
    }

    /// Removes the segments whose newest trace is older than `max_age` at `now`; the open segment is closed
    /// first when it is itself that old.
    pub fn expire(&mut self, now: i64) -> usize {
        if self.opts.max_age_ns <= 0 {
            return 0;
        }
        let horizon = now.saturating_sub(self.opts.max_age_ns);
        if !self.open.is_empty() && self.open_last < horizon {
            let current = self.log.current_segment();
            if self.log.rotate().is_ok() {
                self.seal(current);
            }
        }
        let mut n = 0;
        while self.closed.first().is_some_and(|m| m.last < horizon) && self.remove_oldest() {
            self.stats.segments_removed_age += 1;
            n += 1;
        }
        n
    }

    /// Every archived part of trace `id` (empty when not held).
    pub fn find(&mut self, id: u128) -> io::Result<Vec<Found>> {
        self.stats.lookups += 1;
        let dir = self.opts.directory.clone();
        let mut out = Vec::new();
        for m in self.closed.iter().filter(|m| m.filter.may_contain(id)) {
            let offs = search_index(&dir, m.id, (m.traces, m.entries_at), id, Some(&m.fences))?;
            find_in(&dir, m.id, &offs, id, &mut out)?;
        }
        let mut offs: Vec<u64> = self
            .open
            .iter()
            .filter(|e| e.0 == id)
            .map(|e| e.1)
            .collect();
        offs.dedup();
        find_in(&dir, self.log.current_segment(), &offs, id, &mut out)?;
        if !out.is_empty() {
            self.stats.lookups_found += 1;
        }
        Ok(out)
    }

    /// The archive's time span: (oldest, newest) archive time held.
    pub fn span(&self) -> Option<(i64, i64)> {
        let newest = self
            .closed
            .iter()
            .map(|m| m.last)
            .chain((!self.open.is_empty()).then_some(self.open_last))
            .max()?;
        Some((self.oldest()?, newest))
    }
}

/// An archive directory read without an engine (by `tailsample recover --archive`): nothing is written, a torn
/// tail is skipped (and reported), segments without an index are scanned.
pub struct ArchiveReader {
    dir: PathBuf,
}

impl ArchiveReader {
    pub fn open(dir: &Path) -> io::Result<Self> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(ArchiveReader {
            dir: dir.to_path_buf(),
        })
    }

    fn segments(&self) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            if let Some(id) = name
                .to_string_lossy()
                .strip_suffix(".seg")
                .and_then(|s| s.parse().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Every archived part of each of `ids`, oldest segment first. Segments are probed by a few threads at
    /// once: on a cold page cache a probe waits on the disk, and the disk serves several reads at a time.
    pub fn find(&self, ids: &[u128]) -> io::Result<Vec<Found>> {
        let mut out = Vec::new();
        for p in in_parallel(&self.segments()?, |part| self.find_in_segments(part, ids)) {
            out.extend(p?);
        }
        Ok(out)
    }

    fn find_in_segments(&self, segs: &[u64], ids: &[u128]) -> io::Result<Vec<Found>> {
        let mut out = Vec::new();
        for &seg in segs {
            // With one ID, its filter block is asked for with the header.
            let hint = (ids.len() == 1).then(|| ids[0]);
            match read_index_header(&self.dir, seg, hint) {
                // Version 3: the stored filter first (a few bytes read per ID; the whole filter once when
                // many IDs are asked), then the stretch of the index between two stored fences.
                Some(h) if h.stored_filter => {
                    let (f, n) = (&h.file, h.traces);
                    let loaded = if ids.len() > 8 {
                        Some(read_index_filter(f, n)?)
                    } else {
                        None
                    };
                    let mut fences: Option<Box<[u128]>> = None;
                    for &id in ids {
                        let maybe = match &loaded {
                            Some((filter, _)) => filter.may_contain(id),
                            None => index_may_contain(f, n, id)?,
                        };
                        if !maybe {
                            continue;
                        }
                        let fs = match (&loaded, &mut fences) {
                            (Some((_, fs)), _) => fs,
                            (None, Some(fs)) => fs,
                            (None, slot) => slot.insert(read_fences(f, n)?),
                        };
                        let offs = search_index_in(f, (n, h.entries_at()), id, Some(fs))?;
                        find_in(&self.dir, seg, &offs, id, &mut out)?;
                    }
                }
                // Version 2: a binary search of the index file.
                Some(h) => {
                    for &id in ids {
                        let offs = search_index_in(&h.file, (h.traces, IDX_HEADER), id, None)?;
                        find_in(&self.dir, seg, &offs, id, &mut out)?;
                    }
                }
                None => {
                    // No index (the segment being written): each block's table says whether to decompress it.
                    let data = read_segment(&self.dir, seg)?;
                    for r in Records::new(seg, &data).filter(|r| r.kind == BLOCK) {
                        let Some((table, ..)) = block_table(r.body) else {
                            continue;
                        };
                        if !table.iter().any(|e| ids.contains(&e.0)) {
                            continue;
                        }
                        for (id, archived_at, payload) in
                            decode_block_where(r.body, |t, _| ids.contains(&t))?
                        {
                            out.push(Found {
                                id,
                                archived_at,
                                payload,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every trace archived between `since` and `until` (ns), oldest first, given to `each`; stops early when
    /// `each` returns false. Returns the problems met (a torn tail, a bad block), which are skipped.
    pub fn scan(
        &self,
        since: i64,
        until: i64,
        mut each: impl FnMut(u128, i64, &[u8]) -> bool,
    ) -> io::Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut go = true;
        // Each index file's header says whether its segment holds anything of the window: read by a few
        // threads at once (on a cold page cache, one disk read per segment).
        let all = self.segments()?;
        let within = in_parallel(&all, |part| {
            part.iter()
                .map(|&seg| {
                    read_index_header(&self.dir, seg, None)
                        .is_none_or(|h| h.last >= since && h.first <= until)
                })
                .collect::<Vec<bool>>()
        });
        let segs: Vec<u64> = all
            .iter()
            .zip(within.into_iter().flatten())
            .filter_map(|(&seg, w)| w.then_some(seg))
            .collect();
        for (i, &seg) in segs.iter().enumerate() {
            if !go {
                break;
            }
            // The next segment is read from disk while this one is decompressed and tested.
            if let Some(&next) = segs.get(i + 1) {
                if let Ok(f) = File::open(seg_path(&self.dir, next)) {
                    advise(&f, Advice::WillNeed);
                }
            }
            let p = self.for_each_block(seg, (since, until), |_, table| {
                for (tid, t, payload) in table {
                    if go {
                        go = each(tid, t, &payload);
                    }
                }
            })?;
            problems.extend(p);
        }
        Ok(problems)
    }

    /// The problems met in segment `seg`: a torn tail, a block that does not decompress.
    /// Each block's traces archived within `window` (inclusive, ns): a block with none is not decompressed.
    fn for_each_block(
        &self,
        seg: u64,
        window: (i64, i64),
        mut each: impl FnMut(u64, Vec<(u128, i64, Vec<u8>)>),
    ) -> io::Result<Vec<String>> {
        let within = |t: i64| t >= window.0 && t <= window.1;
        let data = read_segment(&self.dir, seg)?;
        let mut problems = Vec::new();
        let mut records = Records::new(seg, &data);
        let mut old = 0;
        for r in records.by_ref() {
            if r.kind == BLOCK_V1 {
                old += 1;
            }
            if r.kind != BLOCK {
                continue;
            }
            if block_table(r.body).is_some_and(|(t, ..)| !t.iter().any(|e| within(e.1))) {
                continue;
            }
            match decode_block_where(r.body, |_, t| within(t)) {
                Ok(t) => each(r.position.offset, t),
                Err(e) => problems.push(format!("segment {seg} offset {}: {e}", r.position.offset)),
            }
        }
        if old > 0 {
            problems.push(format!(
                "segment {seg}: {old} block(s) of an older archive format (1), not readable: skipped"
            ));
        }
        if let Some(p) = records.problem.take() {
            problems.push(format!(
                "segment {seg}: torn tail at offset {}: {p}",
                records.valid_len()
            ));
        }
        Ok(problems)
    }
}

/// The span attribute every recovered span carries (`tailsample.recovered = true`).
pub const RECOVERED_ATTRIBUTE: &str = "tailsample.recovered";

/// A recovered trace's payload as it leaves: each span gains `tailsample.recovered = true` (appended, so the
/// rest of its bytes stay as they were received). None when the payload is not one this crate encoded.
pub fn mark_recovered(payload: &[u8]) -> Option<Vec<u8>> {
    use crate::otlp::encode::{append_attributes, bool_attribute};
    use crate::otlp::wire::{put_len_header, Reader, WireType};
    let attr = bool_attribute(RECOVERED_ATTRIBUTE, true);
    // ExportTraceServiceRequest.resource_spans(1) > ResourceSpans.scope_spans(2) > ScopeSpans.spans(2): every
    // field on the way is length-delimited in what the encoder writes.
    fn walk(msg: &[u8], depth: u8, attr: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let mut r = Reader::new(msg, 0);
        while !r.is_empty() {
            let (field, wt) = r.read_tag().ok()?;
            if wt != WireType::Len {
                return None;
            }
            let (body, _) = r.read_len().ok()?;
            match (depth, field) {
                (0, 1) | (1, 2) => {
                    let mut inner = Vec::with_capacity(body.len() + 64);
                    walk(body, depth + 1, attr, &mut inner)?;
                    put_len_header(out, field, inner.len());
                    out.extend_from_slice(&inner);
                }
                (2, 2) => {
                    let mut framed = Vec::with_capacity(body.len() + 6);
                    put_len_header(&mut framed, 2, body.len());
                    framed.extend_from_slice(body);
                    out.extend_from_slice(&append_attributes(&framed, attr));
                }
                _ => {
                    put_len_header(out, field, body.len());
                    out.extend_from_slice(body);
                }
            }
        }
        Some(())
    }
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 8);
    walk(payload, 0, &attr, &mut out)?;
    Some(out)
}

/// What `recover --since/--until` lists of a trace: its root span, duration and status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSummary {
    pub spans: u32,
    pub root_name: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// True when some span has status ERROR.
    pub error: bool,
}

/// Reads a trace's payload for the table, and tests it against a `--where` OTTL span condition.
pub struct TraceFilter {
    cond: Option<crate::policy::ottl_condition::OttlCondition>,
    keys: crate::otlp::decode::AttrKeys,
}

impl TraceFilter {
    /// `where_`: an OTTL condition in the span context (as in an `ottl_condition` policy's `span:` list);
    /// None matches every trace.
    pub fn new(where_: Option<&str>) -> crate::error::Result<Self> {
        let Some(expr) = where_ else {
            return Ok(TraceFilter {
                cond: None,
                keys: crate::otlp::decode::AttrKeys::new(Vec::<String>::new()),
            });
        };
        let v = serde_json::json!({ "span": [expr] });
        let node = crate::config::node::Node::new(&v, "where");
        let mut cond = crate::policy::ottl_condition::OttlCondition::parse(node.mapping()?)?;
        let keys = crate::otlp::decode::AttrKeys::new(cond.attribute_keys());
        cond.bind(&keys);
        Ok(TraceFilter {
            cond: Some(cond),
            keys,
        })
    }

    /// The trace's summary when it matches (None when not, or when the payload does not decode).
    pub fn check(&self, payload: &[u8]) -> Option<TraceSummary> {
        let d = crate::otlp::decode::decode(payload, &self.keys).ok()?;
        let mut matched = self.cond.is_none();
        let mut sum = TraceSummary {
            start_ns: u64::MAX,
            ..TraceSummary::default()
        };
        let mut end = 0u64;
        for (si, span) in d.spans.iter().enumerate() {
            sum.spans += 1;
            sum.start_ns = sum.start_ns.min(span.start_time_unix_nano);
            end = end.max(span.end_time_unix_nano);
            sum.error |= span.status_code == 2;
            if span.parent_span_id.is_none() && sum.root_name.is_empty() {
                sum.root_name = span.name.to_string();
            }
            if let (false, Some(c)) = (matched, &self.cond) {
                let scope = &d.scopes[span.scope as usize];
                let facts = crate::policy::SpanFacts {
                    span,
                    attrs: d.span_attrs_of(si),
                    resource_attrs: d.resource_attrs_of(scope.resource as usize),
                    scope_name: scope.name,
                    scope_raw: scope.raw.as_deref().unwrap_or_default(),
                    keys: &self.keys,
                };
                matched = c.span_fold(&facts) == crate::policy::Fold::Match;
            }
        }
        if sum.spans == 0 {
            sum.start_ns = 0;
        }
        sum.duration_ns = end.saturating_sub(sum.start_ns);
        matched.then_some(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::test_support::tempdir;

    fn opts(dir: &Path, max_bytes: u64, max_age_ns: i64) -> ArchiveOptions {
        ArchiveOptions {
            directory: dir.to_path_buf(),
            max_bytes,
            max_age_ns,
            segment_bytes: 4096,
        }
    }

    /// Three origins: two scopes under one resource (one scope without raw bytes), one under another resource
    /// (without raw bytes, with a schema URL).
    fn origins() -> Vec<Arc<Origin>> {
        let res = |raw: Option<&[u8]>, schema: &str| {
            Arc::new(Resource {
                raw: raw.map(Box::from),
                schema_url: schema.into(),
                matched: 0,
            })
        };
        let (a, b) = (res(Some(b"\x0a\x03svc"), ""), res(None, "https://s/1"));
        let o = |r: &Arc<Resource>, raw: Option<&[u8]>, schema: &str| {
            Arc::new(Origin {
                resource: r.clone(),
                raw: raw.map(Box::from),
                schema_url: schema.into(),
            })
        };
        vec![
            o(&a, Some(b"\x0a\x02io"), "https://s/2"),
            o(&a, None, ""),
            o(&b, Some(b"\x0a\x01x"), ""),
        ]
    }

    /// A framed span of varied, not very compressible bytes: zstd must not make a segment's worth of blocks
    /// vanish.
    fn framed(seed: u64, len: usize) -> Box<[u8]> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let raw: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut f = Vec::new();
        crate::otlp::encode::frame_span(&mut f, &raw);
        f.into()
    }

    /// Trace `id`: one or two chunks, from origins chosen by its ID.
    fn trace(id: u128, o: &[Arc<Origin>]) -> Dropped {
        let n = o.len() as u128;
        let mut chunks = vec![Chunk {
            origin: o[(id % n) as usize].clone(),
            framed: framed(id as u64, 600),
            spans: 1,
        }];
        if id % 2 == 1 {
            chunks.push(Chunk {
                origin: o[((id + 1) % n) as usize].clone(),
                framed: framed(!(id as u64), 80),
                spans: 1,
            });
        }
        (id, chunks)
    }

    /// What the trace's payload must read back as: its chunks encoded as the kept path encodes them.
    fn payload(t: &Dropped) -> Vec<u8> {
        let refs: Vec<OutChunk<'_>> = t.1.iter().map(Chunk::out).collect();
        encode_requests(&refs, usize::MAX >> 1, |_, _| {}).swap_remove(0)
    }

    #[test]
    fn finds_traces_across_segments_and_after_reopen() {
        let dir = tempdir("archive", "find");
        let o = origins();
        let mut a = Archive::open(opts(&dir, 1 << 30, 0)).unwrap();
        for round in 0..20u128 {
            let block: Vec<Dropped> = (0..5).map(|i| trace(round * 10 + i, &o)).collect();
            assert_eq!(a.write(&block, round as i64), 5);
        }
        assert!(a.closed.len() > 2, "several segments closed");
        let f = a.find(123).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].payload, payload(&trace(123, &o)));
        assert_eq!(f[0].archived_at, 12);
        assert!(a.find(7).unwrap().is_empty());
        assert_eq!(a.traces(), 100);
        drop(a);
        // As after kill -9: the last closed segment's index is lost, its tail torn.
        let segs: Vec<u64> = ArchiveReader::open(&dir).unwrap().segments().unwrap();
        let last = *segs.last().unwrap();
        let _ = fs::remove_file(idx_path(&dir, last));
        let f = fs::OpenOptions::new()
            .append(true)
            .open(seg_path(&dir, last))
            .unwrap();
        f.write_all_at(&[1, 2, 3], f.metadata().unwrap().len())
            .unwrap();
        let mut a = Archive::open(opts(&dir, 1 << 30, 0)).unwrap();
        assert_eq!(a.truncations.len(), 1);
        assert_eq!(a.traces(), 100);
        for id in [0u128, 54, 192, 194] {
            let f = a.find(id).unwrap();
            assert_eq!(f.len(), 1, "trace {id}");
            assert_eq!(f[0].payload, payload(&trace(id, &o)), "trace {id}");
        }
        let r = ArchiveReader::open(&dir).unwrap();
        assert_eq!(r.find(&[31, 999]).unwrap().len(), 1);
        let mut seen = Vec::new();
        r.scan(5, 7, |id, _, _| {
            seen.push(id);
            true
        })
        .unwrap();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (50..55).chain(60..65).chain(70..75).collect::<Vec<u128>>()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn size_and_age_bounds_remove_the_oldest_first() {
        let dir = tempdir("archive", "bounds");
        let max = 40_000;
        let o = origins();
        let mut a = Archive::open(opts(&dir, max, 1_000)).unwrap();
        for round in 0..200u128 {
            let block: Vec<Dropped> = (0..3).map(|i| trace(round * 10 + i, &o)).collect();
            a.write(&block, round as i64);
            assert!(a.bytes() <= max, "{} bytes after round {round}", a.bytes());
        }
        assert!(a.stats.segments_removed_size > 0);
        assert!(a.find(0).unwrap().is_empty(), "the oldest went first");
        assert_eq!(a.find(1990).unwrap().len(), 1, "the newest is held");
        let oldest = a.oldest().unwrap();
        // Age: everything archived before now - 1000 goes, whole segments at a time.
        a.expire(oldest + 5_000);
        assert_eq!(a.traces(), 0);
        assert!(a.stats.segments_removed_age > 0);
        // A block larger than the whole budget is refused, and counted.
        let big: Vec<Dropped> = (0..200).map(|i| trace(i, &o)).collect();
        assert_eq!(a.write(&big, 10_000), 0);
        assert_eq!(a.stats.traces_refused_budget, 200);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_block_keeps_origins_and_rebuilds_each_trace_whole() {
        let dir = tempdir("archive", "block");
        let o = origins();
        let block: Vec<Dropped> = (0..40).map(|i| trace(i, &o)).collect();
        let mut a = Archive::open(opts(&dir, 1 << 30, 0)).unwrap();
        assert_eq!(a.write(&block, 7), 40);
        assert_eq!(a.stats.blocks_written, 1);
        // Each origin's bytes are in the block once, however many traces use it.
        let b = &a.builder;
        assert_eq!((b.origin_index.len(), b.res_index.len()), (3, 2));
        let body = read_record(&dir, a.log.current_segment(), a.open[0].1).unwrap();
        let back = decode_block(&body).unwrap();
        assert_eq!(back.len(), 40);
        for ((id, t, p), want) in back.iter().zip(&block) {
            assert_eq!((*id, *t), (want.0, 7));
            assert_eq!(p, &payload(want), "trace {id}");
        }
        // A damaged block is an error, not garbage.
        let mut bad = body.clone();
        bad[0] = 1;
        assert!(decode_block(&bad).is_err());
        let mut bad = body.clone();
        bad.truncate(body.len() - 3);
        assert!(decode_block(&bad).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_block_is_cut_on_reopen_and_the_rest_is_found() {
        let dir = tempdir("archive", "torn");
        let o = origins();
        // Segments large enough to hold every block: the torn one is the open segment's last.
        let big = ArchiveOptions {
            segment_bytes: 1 << 20,
            ..opts(&dir, 1 << 30, 0)
        };
        let mut a = Archive::open(big.clone()).unwrap();
        a.write(&(0..5).map(|i| trace(i, &o)).collect::<Vec<_>>(), 1);
        a.write(&(5..10).map(|i| trace(i, &o)).collect::<Vec<_>>(), 2);
        let seg = a.log.current_segment();
        drop(a);
        // As kill -9 in the middle of the second block's write.
        let path = seg_path(&dir, seg);
        let len = fs::metadata(&path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 100).unwrap();
        let mut a = Archive::open(big).unwrap();
        assert_eq!(a.truncations.len(), 1, "{:?}", a.truncations);
        assert_eq!(a.traces(), 5);
        for id in 0..5u128 {
            let f = a.find(id).unwrap();
            assert_eq!(f.len(), 1, "trace {id}");
            assert_eq!(f[0].payload, payload(&trace(id, &o)));
        }
        assert!(a.find(7).unwrap().is_empty());
        // Writing goes on after the cut.
        a.write(&[trace(11, &o)], 3);
        assert_eq!(a.find(11).unwrap()[0].payload, payload(&trace(11, &o)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_segment_of_the_older_format_is_skipped_and_reported() {
        let dir = tempdir("archive", "v1");
        let o = origins();
        let mut a = Archive::open(opts(&dir, 1 << 30, 0)).unwrap();
        // A format-1 block: kind 10, its body whatever it was.
        a.log.append(BLOCK_V1, &[b"\x01\x00\x00\x00old"]).unwrap();
        a.log.rotate().unwrap();
        a.write(&[trace(1, &o)], 1);
        drop(a);
        // Read offline as it was left (the old segment without an index of this format).
        let r = ArchiveReader::open(&dir).unwrap();
        let problems = r.scan(0, 10, |_, _, _| true).unwrap();
        assert!(
            problems.iter().any(|p| p.contains("older archive format")),
            "{problems:?}"
        );
        assert_eq!(r.find(&[1]).unwrap().len(), 1);
        let mut a = Archive::open(opts(&dir, 1 << 30, 0)).unwrap();
        assert!(
            a.truncations
                .iter()
                .any(|t| t.segment == 1 && t.reason.contains("older archive format")),
            "{:?}",
            a.truncations
        );
        assert_eq!(a.find(1).unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The zstd level and block size survey behind `LEVEL` and `BLOCK_RAW_BYTES`: recompresses the blocks of
    /// an archive written by `bench/archive.py --directory DIR` (DIR/run/archive_tail_sampling) at each level
    /// and block size.
    /// `TAILSAMPLE_ARCHIVE_SURVEY=DIR/run/archive_tail_sampling cargo test --release -p tailsample-core --lib survey -- --ignored
    /// --nocapture`
    #[test]
    #[ignore]
    fn survey_levels_and_block_sizes() {
        let Ok(dir) = std::env::var("TAILSAMPLE_ARCHIVE_SURVEY") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let mut stream = Vec::new();
        let (mut stored, mut traces) = (0usize, 0usize);
        for seg in ArchiveReader::open(&dir).unwrap().segments().unwrap() {
            let data = fs::read(seg_path(&dir, seg)).unwrap();
            for r in Records::new(seg, &data).filter(|r| r.kind == BLOCK) {
                let (table, origins, start) = block_table(r.body).unwrap();
                let total = table.iter().map(|e| e.2 as usize).sum::<usize>() + origins;
                stream.extend(zstd::bulk::decompress(&r.body[start..], total).unwrap());
                stored += r.body.len() + RECORD_HEADER as usize;
                traces += table.len();
            }
        }
        println!(
            "{} traces, {} raw bytes, stored {} (ratio {:.3})",
            traces,
            stream.len(),
            stored,
            stored as f64 / stream.len() as f64
        );
        // The machine is shared: levels are timed in turn, pass after pass, and the best pass of each stands
        // for its speed.
        let levels = [1, -1, -3, -5, -7];
        for block in [256usize << 10, 1 << 20] {
            let mut best = [(f64::MAX, f64::MAX, 0usize); 5];
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(block));
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            for _ in 0..7 {
                for (k, &level) in levels.iter().enumerate() {
                    let mut c = zstd::bulk::Compressor::new(level).unwrap();
                    let (mut bytes, mut dsecs) = (0, 0.0);
                    let t = std::time::Instant::now();
                    for b in stream.chunks(block) {
                        out.clear();
                        bytes += c.compress_to_buffer(b, &mut out).unwrap();
                    }
                    let secs = t.elapsed().as_secs_f64();
                    for b in stream.chunks(block).step_by(8) {
                        let f = zstd::bulk::compress(b, level).unwrap();
                        let t = std::time::Instant::now();
                        d.decompress(&f, block).unwrap();
                        dsecs += t.elapsed().as_secs_f64() * 8.0;
                    }
                    let e = &mut best[k];
                    *e = (e.0.min(secs), e.1.min(dsecs), bytes);
                }
            }
            for (k, level) in levels.iter().enumerate() {
                let (secs, dsecs, bytes) = best[k];
                println!(
                    "block {:>4} KiB level {level:>2}: {:.3} of raw, compress {:.0} MB/s, decompress {:.0} MB/s",
                    block >> 10,
                    bytes as f64 / stream.len() as f64,
                    stream.len() as f64 / secs / 1e6,
                    stream.len() as f64 / dsecs / 1e6
                );
            }
        }
    }

    #[test]
    fn a_blocked_filter_has_no_false_negatives_and_few_false_positives() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x = mix(x);
            (u128::from(x) << 64) | u128::from(mix(x ^ 1))
        };
        let held: Vec<u128> = (0..100_000).map(|_| next()).collect();
        // IDs with a time in their first bytes, as some tracers make them: as well spread.
        let timed: Vec<u128> = (0..20_000u128)
            .map(|i| (0x6571_0000u128 + i / 100) << 96 | i)
            .collect();
        for ids in [&held, &timed] {
            let f = Filter::new(ids.iter().copied());
            assert_eq!(f.bits.len() as u64, filter_words(ids.len() as u64));
            assert!(ids.iter().all(|&id| f.may_contain(id)));
            let fp = (0..100_000).filter(|_| f.may_contain(next())).count();
            assert!(fp < 1_000, "{fp} false positives in 100,000");
            println!(
                "{} IDs: {:.2} % false positives",
                ids.len(),
                fp as f64 / 1e3
            );
        }
        // An empty segment's filter holds nothing.
        assert!(!Filter::new(std::iter::empty()).may_contain(next()));
        for n in [0u64, 1, 42, 128, 129, 30_000] {
            assert_eq!(
                entries_for_len(entries_at(n, true) + n * IDX_ENTRY),
                Some(n)
            );
        }
        assert_eq!(entries_for_len(IDX_HEADER + 3 * IDX_ENTRY), None);
    }

    /// An index of this version holds the segment's filter and fences, and a reader without an engine goes
    /// by them (a segment whose stored filter says no is not searched); an index of version 2 is still read
    /// offline, and an engine opening it rewrites it as version 3.
    #[test]
    fn offline_lookups_go_by_the_stored_filter_and_a_version_2_index_is_still_read() {
        let dir = tempdir("archive", "idx3");
        let o = origins();
        let mut a = Archive::open(ArchiveOptions {
            segment_bytes: 64 << 10,
            ..opts(&dir, 1 << 30, 0)
        })
        .unwrap();
        let traces: Vec<Dropped> = (1..=600u128)
            .map(|i| trace((i << 64) | (i * 31), &o))
            .collect();
        for t in traces.chunks(7) {
            a.write(t, 1);
        }
        let closed: Vec<(u64, Vec<u64>, Box<[u128]>)> = a
            .closed
            .iter()
            .map(|m| (m.id, m.filter.bits.clone(), m.fences.clone()))
            .collect();
        assert!(closed.len() >= 3, "{} closed segments", closed.len());
        drop(a);
        for (seg, bits, fences) in &closed {
            let h = read_index_header(&dir, *seg, None).unwrap();
            assert!(h.stored_filter);
            let (filter, stored) = read_index_filter(&h.file, h.traces).unwrap();
            assert_eq!(&filter.bits, bits);
            assert_eq!(&stored, fences);
            assert_eq!(&read_fences(&h.file, h.traces).unwrap(), fences);
        }
        let r = ArchiveReader::open(&dir).unwrap();
        let check = |r: &ArchiveReader, ts: &[Dropped]| {
            for t in ts {
                let got = r.find(&[t.0]).unwrap();
                assert_eq!(got.len(), 1, "trace {:x}", t.0);
                assert_eq!(got[0].payload, payload(t));
            }
            // Many IDs at once (the whole filter read once per segment).
            let ids: Vec<u128> = ts.iter().map(|t| t.0).collect();
            assert_eq!(r.find(&ids).unwrap().len(), ts.len());
        };
        check(&r, &traces);
        assert!(r.find(&[12345, u128::MAX]).unwrap().is_empty());

        // The first segment's stored filter cleared: the reader no longer looks there.
        let (seg, ..) = closed[0];
        let h = read_index_header(&dir, seg, None).unwrap();
        let words = filter_words(h.traces) as usize;
        let in_seg: Vec<u128> = index_entries(&dir, seg, h.traces, h.entries_at())
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect();
        let saved = {
            let mut b = vec![0u8; words * 8];
            h.file.read_exact_at(&mut b, FILTER_AT).unwrap();
            b
        };
        let w = fs::OpenOptions::new()
            .write(true)
            .open(idx_path(&dir, seg))
            .unwrap();
        w.write_all_at(&vec![0u8; words * 8], FILTER_AT).unwrap();
        assert!(r.find(&in_seg[..1]).unwrap().is_empty());
        assert!(r.find(&in_seg).unwrap().is_empty());
        w.write_all_at(&saved, FILTER_AT).unwrap();
        assert_eq!(r.find(&in_seg[..1]).unwrap().len(), 1);

        // Every index rewritten as version 2 (its entries only): still found offline, by binary search.
        for (seg, ..) in &closed {
            let h = read_index_header(&dir, *seg, None).unwrap();
            let b = fs::read(idx_path(&dir, *seg)).unwrap();
            let mut b = [&b[..IDX_HEADER as usize], &b[h.entries_at() as usize..]].concat();
            b[..8].copy_from_slice(IDX_MAGIC_V2);
            fs::write(idx_path(&dir, *seg), &b).unwrap();
            assert!(!read_index_header(&dir, *seg, None).unwrap().stored_filter);
        }
        check(&r, &traces);
        // An engine opening them rewrites them as version 3, with the same filter and fences.
        let mut a = Archive::open(opts(&dir, 1 << 30, 0)).unwrap();
        for (seg, bits, fences) in &closed {
            let h = read_index_header(&dir, *seg, None).unwrap();
            assert!(h.stored_filter, "segment {seg}");
            let (filter, stored) = read_index_filter(&h.file, h.traces).unwrap();
            assert_eq!((&filter.bits, &stored), (bits, fences));
        }
        for t in &traces {
            assert_eq!(a.find(t.0).unwrap()[0].payload, payload(t));
        }
        check(&r, &traces);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fenced_search_finds_what_the_binary_search_finds() {
        let dir = tempdir("archive", "fences");
        fs::create_dir_all(&dir).unwrap();
        // 1,000 traces, some archived in several parts (on both sides of a fence too).
        let mut entries: Vec<(u128, u64)> = (0..1000u128)
            .map(|i| (i * 7919 % 1000 * 3, i as u64))
            .collect();
        for i in [0u128, 127 * 3, 128 * 3, 129 * 3, 999 * 3] {
            entries.push((i, 5000));
            entries.push((i, 5001));
        }
        let mut m = SegMeta {
            id: 1,
            traces: entries.len() as u64,
            first: 0,
            last: 0,
            idx_bytes: 0,
            entries_at: 0,
            filter: Filter::default(),
            fences: Box::default(),
        };
        write_index(&dir, &mut m, &mut entries).unwrap();
        let fs = m.fences.clone();
        let n = (entries.len() as u64, m.entries_at);
        for id in (0..3005u128).chain([u128::MAX]) {
            let mut want = search_index(&dir, 1, n, id, None).unwrap();
            let mut got = search_index(&dir, 1, n, id, Some(&fs)).unwrap();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "trace {id}");
            assert_eq!(got.is_empty(), id % 3 != 0 || id >= 3000, "trace {id}");
        }
        // Parts that cross a fence: the entries at 128 * FENCE's neighbourhood.
        assert_eq!(
            search_index(&dir, 1, n, 128 * 3, Some(&fs)).unwrap().len(),
            3
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
