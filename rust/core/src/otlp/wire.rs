//! The protobuf wire format, read with bounds checks and absolute byte offsets for error messages.

/// Wire types of the protobuf encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    I64,
    Len,
    StartGroup,
    EndGroup,
    I32,
}

impl WireType {
    pub fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::I64 => "fixed64",
            WireType::Len => "length-delimited",
            WireType::StartGroup => "start-group",
            WireType::EndGroup => "end-group",
            WireType::I32 => "fixed32",
        }
    }
}

/// Where a wire-level problem happened, before the caller names the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailInfo {
    /// Field path relative to the message being read (filled in by callers on the way out).
    pub field: String,
    pub offset: usize,
    pub message: String,
    /// Set when the scan rejects the span holding the problem (or the spans under a resource or scope holding
    /// it), not the whole request; `None` for malformed data, which refuses the request.
    pub reject: Option<RejectReason>,
}

/// Why a span was rejected alone (an OTLP partial success), as the `reason` label of
/// `tailsample_engine_spans_rejected_total` and `Ingested.rejected_by_reason` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Nested deeper than `MAX_LEVELS` protobuf message levels (in the span, or its resource or scope).
    TooDeep,
    /// No usable trace ID: absent, empty, not 16 bytes, or all zeros.
    InvalidTraceId,
    /// A span, parent span or link ID of the wrong length (every protobuf runtime parses it; pdata refuses the
    /// whole request holding it, so it could not be passed on).
    IdLength,
    /// A known field of a span, or of its resource or scope, with another wire type than declared. upb, Go's
    /// protobuf and C++ read it as an unknown field, but pdata (the collector, Jaeger, most backends) refuses the
    /// whole request holding it: passed on byte for byte, it would cost every trace of the kept batch.
    WireType,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::TooDeep,
        RejectReason::InvalidTraceId,
        RejectReason::IdLength,
        RejectReason::WireType,
    ];
    /// The metric label and the key in `Ingested.rejected_by_reason`.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::TooDeep => "too_deep",
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::IdLength => "id_length",
            RejectReason::WireType => "wire_type",
        }
    }
    /// The engine stat counting it (`Engine::stats`).
    pub fn stat_key(self) -> &'static str {
        match self {
            RejectReason::TooDeep => "spans_rejected_too_deep",
            RejectReason::InvalidTraceId => "spans_rejected_invalid_trace_id",
            RejectReason::IdLength => "spans_rejected_id_length",
            RejectReason::WireType => "spans_rejected_wire_type",
        }
    }
    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A boxed `FailInfo`: one pointer, so that every `WireResult` in the hot path stays register-sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail(Box<FailInfo>);

impl std::ops::Deref for Fail {
    type Target = FailInfo;
    fn deref(&self) -> &FailInfo {
        &self.0
    }
}

impl std::ops::DerefMut for Fail {
    fn deref_mut(&mut self) -> &mut FailInfo {
        &mut self.0
    }
}

impl Fail {
    #[cold]
    #[inline(never)]
    pub fn new(offset: usize, message: impl Into<String>) -> Self {
        Fail(Box::new(FailInfo {
            field: String::new(),
            offset,
            message: message.into(),
            reject: None,
        }))
    }
    /// A problem that rejects the span holding it, not the request (see `FailInfo::reject`).
    #[cold]
    #[inline(never)]
    pub fn rejecting(offset: usize, reason: RejectReason, message: impl Into<String>) -> Self {
        let mut f = Fail::new(offset, message);
        f.reject = Some(reason);
        f
    }
    /// A known field with another wire type than declared, in bytes that are passed on (see
    /// [`RejectReason::WireType`]).
    #[cold]
    #[inline(never)]
    pub fn wire_type(offset: usize, field: u32, wt: WireType) -> Self {
        Fail::rejecting(
            offset,
            RejectReason::WireType,
            format!("field {field} has wire type {wt:?}, not the one its message declares (pdata refuses it)"),
        )
    }
    /// Nesting past `MAX_LEVELS` (see `FailInfo::reject`).
    #[cold]
    #[inline(never)]
    pub fn too_deep(offset: usize, what: &str) -> Self {
        Fail::rejecting(
            offset,
            RejectReason::TooDeep,
            format!("{what} nested deeper than {MAX_LEVELS} protobuf message levels"),
        )
    }
    pub fn into_info(self) -> FailInfo {
        *self.0
    }
    /// Prefix the field path with the enclosing field (`spans[3]` + `trace_id`).
    #[cold]
    pub fn within(mut self, outer: impl AsRef<str>) -> Self {
        let outer = outer.as_ref();
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else if self.field.starts_with('[') {
            format!("{outer}{}", self.field)
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
    #[cold]
    pub fn at_field(mut self, name: &str) -> Self {
        if self.field.is_empty() {
            self.field = name.to_string();
        }
        self
    }
}

pub type WireResult<T> = Result<T, Fail>;

/// A cursor over one message's bytes. `base` is the absolute offset of `buf[0]` in the whole payload; `level`
/// is the message's level in the whole request (1 for the request itself, 0 when unknown).
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    level: usize,
}

/// The deepest protobuf message level an accepted request holds, counting the `ExportTraceServiceRequest` as 1
/// and every nested message (ResourceSpans, ScopeSpans, Span, KeyValue, AnyValue, ArrayValue, KeyValueList,
/// events, links, groups) as one more. The Python (upb), C++ and Java protobuf runtimes refuse a message past 100
/// levels; 64 leaves 36 levels to spare, for runtimes that count one level more than upb does and for consumers
/// that wrap each request in envelope messages of their own (a queue record, an `Any`), so that whatever the
/// engine accepts, every runtime parses again. Real instrumentation nests attribute values two or three deep.
/// Also the bound of group nesting in readers that do not know their level (`Reader::new`).
pub const MAX_LEVELS: usize = 64;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            level: 0,
        }
    }

    /// A reader of a message at `level` in the whole request: groups inside it count from there.
    pub fn at_level(buf: &'a [u8], base: usize, level: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            level,
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Reads `tag` (a one-byte field tag) if it is the next byte: a repeated field's next element, read without
    /// the general dispatch on field numbers (whose branch mispredicts once per element otherwise).
    #[inline(always)]
    pub fn next_tag_is(&mut self, tag: u8) -> bool {
        let found = self.buf.get(self.pos) == Some(&tag);
        self.pos += usize::from(found);
        found
    }

    /// The message's level in the whole request (0: unknown).
    #[inline]
    pub fn level(&self) -> usize {
        self.level
    }

    /// Absolute offset of the next byte to read.
    #[inline]
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    #[inline(always)]
    pub fn read_varint(&mut self) -> WireResult<u64> {
        // Fast path: one byte (tags, small lengths, enums).
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
            // Two bytes: the length of nearly every span (128 B to 16 KiB).
            if let Some(&b1) = self.buf.get(self.pos + 1) {
                if b1 < 0x80 {
                    self.pos += 2;
                    return Ok(u64::from(b & 0x7f) | (u64::from(b1) << 7));
                }
            }
        }
        self.read_varint_slow()
    }

    #[inline(never)]
    fn read_varint_slow(&mut self) -> WireResult<u64> {
        let start = self.offset();
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(Fail::new(start, "truncated varint"));
            };
            self.pos += 1;
            // The tenth byte's bits past 64 are dropped, as upb, C++ and pdata (gogo) drop them.
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(Fail::new(start, "varint longer than 10 bytes"))
    }

    /// Reads a field tag: its number and wire type.
    #[inline(always)]
    pub fn read_tag(&mut self) -> WireResult<(u32, WireType)> {
        let at = self.offset();
        let tag = self.read_varint()?;
        let field = tag >> 3;
        if field == 0 || field > (1 << 29) - 1 {
            return Err(Fail::new(at, format!("invalid field number {field}")));
        }
        let wt = match tag & 7 {
            0 => WireType::Varint,
            1 => WireType::I64,
            2 => WireType::Len,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::I32,
            other => return Err(Fail::new(at, format!("invalid wire type {other}"))),
        };
        Ok((field as u32, wt))
    }

    /// Reads a length-delimited field's content; returns it with its absolute offset.
    #[inline(always)]
    pub fn read_len(&mut self) -> WireResult<(&'a [u8], usize)> {
        let at = self.offset();
        let len = self.read_varint()?;
        let start = self.pos;
        let remaining = (self.buf.len() - start) as u64;
        if len > remaining {
            return Err(Fail::new(
                at,
                format!("length {len} runs past the end of its message ({remaining} bytes left)"),
            ));
        }
        let end = start + len as usize;
        self.pos = end;
        Ok((&self.buf[start..end], self.base + start))
    }

    #[inline]
    pub fn read_fixed64(&mut self) -> WireResult<u64> {
        let at = self.offset();
        let Some(bytes) = self.buf.get(self.pos..self.pos + 8) else {
            return Err(Fail::new(at, "truncated fixed64"));
        };
        self.pos += 8;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    #[inline]
    pub fn read_fixed32(&mut self) -> WireResult<u32> {
        let at = self.offset();
        let Some(bytes) = self.buf.get(self.pos..self.pos + 4) else {
            return Err(Fail::new(at, "truncated fixed32"));
        };
        self.pos += 4;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    /// Skips a field of an unknown number, validating its framing (groups included, depth-limited).
    pub fn skip(&mut self, field: u32, wt: WireType) -> WireResult<()> {
        self.skip_at_depth(field, wt, 0)
    }

    fn skip_at_depth(&mut self, field: u32, wt: WireType, depth: usize) -> WireResult<()> {
        match wt {
            WireType::Varint => self.read_varint().map(|_| ()),
            WireType::I64 => self.read_fixed64().map(|_| ()),
            WireType::I32 => self.read_fixed32().map(|_| ()),
            WireType::Len => self.read_len().map(|_| ()),
            WireType::StartGroup => {
                // A group is one more message level for protobuf runtimes: counted as one.
                let level = if self.level == 0 {
                    depth + 1
                } else {
                    self.level + depth + 1
                };
                if level > MAX_LEVELS {
                    return Err(Fail::too_deep(self.offset(), "groups"));
                }
                let start = self.offset();
                loop {
                    if self.is_empty() {
                        return Err(Fail::new(start, format!("group {field} is not closed")));
                    }
                    let tag_at = self.offset();
                    let (f, w) = self.read_tag()?;
                    if w == WireType::EndGroup {
                        if f != field {
                            return Err(Fail::new(
                                tag_at,
                                format!("end of group {f} closes group {field}"),
                            ));
                        }
                        return Ok(());
                    }
                    self.skip_at_depth(f, w, depth + 1)?;
                }
            }
            // The tag was just read: point at it, not past it.
            WireType::EndGroup => Err(Fail::new(
                self.offset()
                    .saturating_sub(varint_len((u64::from(field) << 3) | 4)),
                format!("end-group for field {field} without a start"),
            )),
        }
    }
}

/// A field had the wrong wire type for its declared type.
pub fn wrong_type(offset: usize, expected: WireType, got: WireType) -> Fail {
    Fail::new(
        offset,
        format!(
            "wrong wire type: expected {}, got {}",
            expected.name(),
            got.name()
        ),
    )
}

/// A `string` field as the engine reads it: the bytes when they are valid UTF-8, `""` when not. Protobuf
/// runtimes differ here (upb refuses the message, Go's pdata takes the bytes as a Go string); the engine takes
/// the span, passes its bytes on as they came, and reads the string as empty (as a non-string value reads).
#[inline]
pub fn text(bytes: &[u8]) -> &str {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, so the bytes are valid UTF-8.
        return unsafe { std::str::from_utf8_unchecked(bytes) };
    }
    std::str::from_utf8(bytes).unwrap_or("")
}

/// The wire type a message's field `field` is declared with, from its table (`table[n - 1]` for field `n`);
/// `true` when the field is known and arrived with another one. upb, Go's protobuf and C++ read it as an unknown
/// field; pdata refuses the request. In the containers (request, resource spans, scope spans), whose bytes are not
/// passed on, it is skipped; in a span, resource or scope, passed on as they came, it rejects the spans holding it
/// ([`Fail::wire_type`]).
#[inline(always)]
pub fn mistyped(table: &[WireType], field: u32, wt: WireType) -> bool {
    table
        .get((field as usize).wrapping_sub(1))
        .is_some_and(|want| *want != wt)
}

/// Checks that `bytes` are valid UTF-8, as proto3 requires of `string` fields. Most strings in telemetry are
/// ASCII: a word-at-a-time check settles those, the full validator runs only on the rest.
#[inline]
pub fn utf8(bytes: &[u8], offset: usize) -> WireResult<&str> {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, so the bytes are valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes)
        .map_err(|e| Fail::new(offset + e.valid_up_to(), "string is not valid UTF-8"))
}

/// Whether every byte is below 0x80. The strings read (span names, the attribute values policies read) are
/// mostly 4 to 40 bytes: read as words, the last one overlapping the one before, not finished byte by byte.
#[inline(always)]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let n = bytes.len();
    if n >= 8 {
        let mut acc = word(n - 8);
        let mut at = 0;
        while at + 8 < n {
            acc |= word(at);
            at += 8;
        }
        acc & HIGH == 0
    } else if n >= 4 {
        let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (half(0) | half(n - 4)) & 0x8080_8080 == 0
    } else {
        bytes.iter().fold(0u8, |acc, b| acc | b) < 0x80
    }
}

// ---- writing ------------------------------------------------------------------------------------------

#[inline]
pub fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes the tag and length prefix of a length-delimited field.
#[inline]
pub fn put_len_header(out: &mut Vec<u8>, field: u32, len: usize) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, len as u64);
}

/// Size of a length-delimited field with `len` content bytes, header included.
#[inline]
pub fn len_field_size(field: u32, len: usize) -> usize {
    varint_len((u64::from(field) << 3) | 2) + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_ascii_sees_a_high_byte_at_any_place_of_any_length() {
        for n in 0..40 {
            let text = vec![b'a'; n];
            assert!(is_ascii(&text), "{n}");
            for at in 0..n {
                let mut bad = text.clone();
                bad[at] = 0x80;
                assert!(!is_ascii(&bad), "{n} {at}");
                bad[at] = 0xff;
                assert!(!is_ascii(&bad), "{n} {at}");
            }
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = Reader::new(&out, 0);
            assert_eq!(r.read_varint().unwrap(), v);
            assert!(r.is_empty());
        }
    }

    /// Scenario: two-byte varints, read by their own fast path. Guarantees: what the general loop reads
    /// (a padded zero included), and a truncated one is an error at its offset, not a read past the end.
    #[test]
    fn two_byte_varints_read_as_the_general_loop() {
        for (bytes, want, used) in [
            (&[0x80u8, 0x01][..], 128u64, 2usize),
            (&[0xff, 0x7f, 0x05], 16_383, 2),
            (&[0x80, 0x00], 0, 2),
            (&[0xac, 0x02, 0x80], 300, 2),
        ] {
            let mut r = Reader::new(bytes, 0);
            assert_eq!(r.read_varint().unwrap(), want, "{bytes:?}");
            assert_eq!(r.offset(), used, "{bytes:?}");
        }
        let err = Reader::new(&[0x80], 7).read_varint().unwrap_err();
        assert_eq!(err.offset, 7);
        assert!(err.message.contains("truncated varint"));
    }

    #[test]
    fn eleven_byte_varint_is_refused_and_ten_bytes_keep_64_bits() {
        let bytes = [0xffu8; 11];
        let err = Reader::new(&bytes, 5).read_varint().unwrap_err();
        assert_eq!(err.offset, 5);
        assert!(err.message.contains("longer than 10 bytes"));
        // Bits past 64 in the tenth byte are dropped, as upb, C++ and pdata drop them.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(Reader::new(&bytes, 0).read_varint().unwrap(), u64::MAX);
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
        assert_eq!(Reader::new(&bytes, 0).read_varint().unwrap(), 0);
    }

    #[test]
    fn truncated_length_reports_its_offset() {
        let bytes = [0x0a, 0x05, 1, 2];
        let mut r = Reader::new(&bytes, 100);
        let (f, wt) = r.read_tag().unwrap();
        assert_eq!((f, wt), (1, WireType::Len));
        let err = r.read_len().unwrap_err();
        assert_eq!(err.offset, 101);
        assert!(err.message.contains("runs past the end"));
    }

    #[test]
    fn groups_are_skipped_and_checked() {
        // field 3 start-group, field 1 varint 5, field 3 end-group
        let ok = [0x1b, 0x08, 0x05, 0x1c];
        let mut r = Reader::new(&ok, 0);
        let (f, wt) = r.read_tag().unwrap();
        r.skip(f, wt).unwrap();
        assert!(r.is_empty());
        let bad = [0x1b, 0x08, 0x05, 0x24];
        let mut r = Reader::new(&bad, 0);
        let (f, wt) = r.read_tag().unwrap();
        assert!(r.skip(f, wt).is_err());
    }

    #[test]
    fn invalid_wire_types_and_field_zero() {
        assert!(Reader::new(&[0x0e], 0)
            .read_tag()
            .unwrap_err()
            .message
            .contains("wire type 6"));
        assert!(Reader::new(&[0x02], 0)
            .read_tag()
            .unwrap_err()
            .message
            .contains("field number 0"));
    }
}
