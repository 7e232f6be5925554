//! Request bodies: read whole up to a limit, and inflated in bounded steps (a gzip bomb stops at the limit,
//! never inflated whole). gzip (several members too), and deflate/zlib (the zlib format, as Python's `zlib`).

use bytes::{Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use http_body_util::BodyExt;
use hyper::body::Incoming;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Invalid(String),
    Truncated,
    /// The client went away, or broke the framing, before the whole body came.
    Aborted,
}

const STEP: usize = 1 << 16;
/// How much of a body over the limit is still read (and dropped) before the 413: a client that writes its whole
/// request before reading the answer (urllib, most synchronous clients) then reads the 413 instead of a reset.
pub const DRAIN: usize = 256 << 10;

/// The body, at most `limit` bytes (more is `TooLarge`, kept no further: read on up to `DRAIN` bytes, dropped).
pub(crate) async fn collect(
    mut body: Incoming,
    limit: usize,
    length: Option<u64>,
) -> Result<Bytes, BodyError> {
    let mut body_so_far = Gathered::default();
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Aborted)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        size += data.len();
        if size > limit {
            let mut drained = 0usize;
            while drained <= DRAIN {
                match body.frame().await {
                    Some(Ok(f)) => drained += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            return Err(BodyError::TooLarge);
        }
        body_so_far.push(data, length.map_or(size, |n| n as usize).clamp(size, limit));
    }
    Ok(body_so_far.freeze())
}

/// A body's bytes as its frames come: the first kept as it came (the common case is one frame: no copy), all of
/// them gathered into one buffer once a second comes.
#[derive(Default)]
pub(crate) struct Gathered {
    first: Option<Bytes>,
    buf: Option<BytesMut>,
}

impl Gathered {
    /// Adds a frame; `capacity`: what the whole is expected to hold, allocated when a second frame comes.
    pub(crate) fn push(&mut self, data: Bytes, capacity: usize) {
        match (self.first.take(), &mut self.buf) {
            (None, None) => self.first = Some(data),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(capacity.max(f.len() + data.len()));
                b.extend_from_slice(&f);
                b.extend_from_slice(&data);
                self.buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match (&self.first, &self.buf) {
            (_, Some(b)) => b,
            (Some(f), None) => f,
            (None, None) => &[],
        }
    }

    pub(crate) fn freeze(self) -> Bytes {
        match (self.first, self.buf) {
            (_, Some(b)) => b.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        }
    }
}

/// Decompresses `raw` (`encoding`: gzip, deflate or zlib) to at most `limit` bytes.
pub fn inflate(raw: &[u8], encoding: &str, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(if encoding == "gzip" {
        gzip_size_hint(raw, limit)
    } else {
        0
    });
    if encoding != "gzip" {
        inflate_stream(raw, true, &mut out, limit)?;
        return Ok(out);
    }
    let mut rest = raw;
    loop {
        let start = out.len();
        let body = gzip_header(rest)?;
        let used = inflate_stream(body, false, &mut out, limit)?;
        let trailer = &body[used..];
        if trailer.len() < 8 {
            return Err(BodyError::Truncated);
        }
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if crc32fast::hash(&out[start..]) != crc || (out.len() - start) as u32 != isize {
            return Err(BodyError::Invalid("CRC check failed".into()));
        }
        rest = &trailer[8..];
        if rest.is_empty() {
            return Ok(out);
        }
    }
}

/// The inflated size a gzip body states (its last member's ISIZE: the whole for the usual single member), so that
/// the output is allocated once instead of grown and copied 64 KiB at a time; never more than `limit` + 1 or than
/// deflate can expand the input to (1032:1), so a forged ISIZE reserves no more than the body could fill.
fn gzip_size_hint(raw: &[u8], limit: usize) -> usize {
    let Some(tail) = raw.len().checked_sub(4).map(|at| &raw[at..]) else {
        return 0;
    };
    let isize = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
    isize
        .min(limit.saturating_add(1))
        .min(raw.len().saturating_mul(1032))
}

/// The deflate data after a gzip member's header (RFC 1952).
fn gzip_header(b: &[u8]) -> Result<&[u8], BodyError> {
    if b.len() < 10 {
        return Err(if b.len() >= 2 && b[..2] != [0x1f, 0x8b] {
            BodyError::Invalid("incorrect header check".into())
        } else {
            BodyError::Truncated
        });
    }
    if b[..2] != [0x1f, 0x8b] || b[2] != 8 {
        return Err(BodyError::Invalid("incorrect header check".into()));
    }
    let flags = b[3];
    let mut pos = 10;
    let need = |pos: usize| {
        if pos > b.len() {
            Err(BodyError::Truncated)
        } else {
            Ok(())
        }
    };
    if flags & 4 != 0 {
        need(pos + 2)?;
        pos += 2 + u16::from_le_bytes([b[pos], b[pos + 1]]) as usize;
        need(pos)?;
    }
    for flag in [8u8, 16] {
        if flags & flag != 0 {
            let end = b[pos..]
                .iter()
                .position(|&c| c == 0)
                .ok_or(BodyError::Truncated)?;
            pos += end + 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
        need(pos)?;
    }
    Ok(&b[pos..])
}

/// Inflates one stream of `input` onto `out`, never past `limit` bytes in all; returns the input bytes used.
fn inflate_stream(
    input: &[u8],
    zlib: bool,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, BodyError> {
    let mut d = Decompress::new(zlib);
    loop {
        if out.len() == out.capacity() {
            if out.len() > limit {
                return Err(BodyError::TooLarge);
            }
            out.reserve_exact(STEP.min(limit + 1 - out.len()));
        }
        let (in_before, out_before) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(&input[d.total_in() as usize..], out, FlushDecompress::None)
            .map_err(|e| BodyError::Invalid(e.to_string()))?;
        if out.len() > limit {
            return Err(BodyError::TooLarge);
        }
        if status == Status::StreamEnd {
            return Ok(d.total_in() as usize);
        }
        let stuck = d.total_in() == in_before && out.len() == out_before;
        if stuck && (d.total_in() as usize == input.len() || out.len() < out.capacity()) {
            return Err(BodyError::Truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_members_and_zlib() {
        let mut two = gz(b"hello ");
        two.extend(gz(b"world"));
        assert_eq!(inflate(&two, "gzip", 100).unwrap(), b"hello world");
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(b"abc").unwrap();
        assert_eq!(
            inflate(&z.finish().unwrap(), "deflate", 100).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(&vec![0u8; 50 << 20]).unwrap();
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        assert_eq!(inflate(&bomb, "gzip", 1 << 20), Err(BodyError::TooLarge));
        assert_eq!(inflate(&gz(&[1; 10]), "gzip", 10).unwrap().len(), 10);
        assert_eq!(inflate(&gz(&[1; 11]), "gzip", 10), Err(BodyError::TooLarge));
    }

    /// The output is sized from the gzip trailer once, within the limit and what the input could expand to.
    #[test]
    fn the_output_is_sized_from_isize_within_bounds() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let g = gz(&data);
        assert_eq!(gzip_size_hint(&g, 1 << 20), data.len());
        let out = inflate(&g, "gzip", 1 << 20).unwrap();
        assert_eq!(out, data);
        assert_eq!(out.capacity(), data.len(), "allocated once, from ISIZE");
        assert_eq!(
            gzip_size_hint(&g, 1000),
            1001,
            "no more than the limit and one byte"
        );
        let mut forged = gz(b"tiny");
        let n = forged.len();
        forged[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            gzip_size_hint(&forged, usize::MAX),
            n * 1032,
            "no more than deflate's ratio"
        );
        assert_eq!(
            inflate(&forged, "gzip", 1 << 20),
            Err(BodyError::Invalid("CRC check failed".into()))
        );
        assert_eq!(gzip_size_hint(b"abc", 10), 0);
    }

    #[test]
    fn truncated_and_invalid() {
        let g = gz(&[7u8; 5000]);
        assert_eq!(
            inflate(&g[..g.len() - 4], "gzip", 1 << 20),
            Err(BodyError::Truncated)
        );
        assert_eq!(
            inflate(&g[..20], "gzip", 1 << 20),
            Err(BodyError::Truncated)
        );
        assert!(matches!(
            inflate(b"not gzip at all", "gzip", 100),
            Err(BodyError::Invalid(_))
        ));
        assert!(inflate(b"\x78\x9c\xff\xff\xff", "zlib", 100).is_err());
        let mut bad_crc = g.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert!(matches!(
            inflate(&bad_crc, "gzip", 1 << 20),
            Err(BodyError::Invalid(_))
        ));
    }
}
