//! The size the reference's pdata gives a message when it re-encodes it (`SizeProto` of pdata v1.67, the
//! collector v0.161.0's): the reference measures trace sizes (`maximum_trace_size_bytes`, `bytes_limiting`)
//! on what it decoded, so unknown fields are gone, zero scalars are left out, varints are minimal, a repeated
//! singular field counts once (its last value), and IDs and a few messages are always written (2 bytes
//! when empty). Inputs are messages the request scan already validated; should one not read back, its raw
//! length stands in.

use super::wire::{varint_len, Reader, WireType};

/// Content size of one `Span` as pdata re-encodes it.
pub fn span(raw: &[u8]) -> usize {
    measure(raw, span_fields).unwrap_or(raw.len())
}

/// Content size of one `Resource` (absent: empty).
pub fn resource(raw: Option<&[u8]>) -> usize {
    raw.map_or(0, |r| measure(r, resource_fields).unwrap_or(r.len()))
}

/// Content size of one `InstrumentationScope` (absent: empty).
pub fn scope(raw: Option<&[u8]>) -> usize {
    raw.map_or(0, |r| measure(r, scope_fields).unwrap_or(r.len()))
}

/// A length-delimited field of `len` content bytes (tags here are all one byte: field numbers < 16).
fn framed(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A non-oneof varint field: left out when zero.
fn varint_field(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

/// A proto3 string or bytes field: left out when empty.
fn string_field(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        framed(len)
    }
}

type Fields<S> = fn(&mut S, &mut Reader<'_>, u32, WireType) -> Option<usize>;

/// Reads every field of `raw` into a fresh state of the message, then sizes it.
fn measure<S: Default + Size>(raw: &[u8], fields: Fields<S>) -> Option<usize> {
    let mut s = S::default();
    read_into(&mut s, raw, fields)?;
    Some(s.size())
}

/// Merges the fields of `raw` into `s` (protobuf merge: a singular field's last value wins; repeated ones add).
fn read_into<S>(s: &mut S, raw: &[u8], fields: Fields<S>) -> Option<()> {
    let mut r = Reader::new(raw, 0);
    while !r.is_empty() {
        let (field, wt) = r.read_tag().ok()?;
        // `fields` reads the known fields it takes and answers 0 for the rest, which are skipped (dropped).
        if fields(s, &mut r, field, wt)? == 0 {
            r.skip(field, wt).ok()?;
        }
    }
    Some(())
}

trait Size {
    fn size(&self) -> usize;
}

/// Reads a length-delimited field's content.
fn bytes<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    r.read_len().ok().map(|(b, _)| b)
}

/// The size of a repeated `KeyValue` element (a framed field).
fn key_value(raw: &[u8]) -> Option<usize> {
    Some(framed(measure(raw, key_value_fields)?))
}

macro_rules! take {
    ($e:expr) => {{
        $e;
        Some(1)
    }};
}

#[derive(Default)]
struct SpanState {
    trace_id: usize,
    span_id: usize,
    trace_state: usize,
    parent: usize,
    flags: u32,
    name: usize,
    kind: u64,
    start: u64,
    end: u64,
    repeated: usize,
    dropped_attributes: u64,
    dropped_events: u64,
    dropped_links: u64,
    status: StatusState,
}

impl Size for SpanState {
    fn size(&self) -> usize {
        framed(self.trace_id)
            + framed(self.span_id)
            + string_field(self.trace_state)
            + framed(self.parent)
            + if self.flags != 0 { 6 } else { 0 }
            + string_field(self.name)
            + varint_field(self.kind)
            + if self.start != 0 { 9 } else { 0 }
            + if self.end != 0 { 9 } else { 0 }
            + self.repeated
            + varint_field(self.dropped_attributes)
            + varint_field(self.dropped_events)
            + varint_field(self.dropped_links)
            + framed(self.status.size())
    }
}

fn span_fields(s: &mut SpanState, r: &mut Reader<'_>, f: u32, wt: WireType) -> Option<usize> {
    use WireType::*;
    match (f, wt) {
        (1, Len) => take!(s.trace_id = id_len(bytes(r)?)),
        (2, Len) => take!(s.span_id = id_len(bytes(r)?)),
        (3, Len) => take!(s.trace_state = bytes(r)?.len()),
        (4, Len) => take!(s.parent = id_len(bytes(r)?)),
        (16, I32) => take!(s.flags = r.read_fixed32().ok()?),
        (5, Len) => take!(s.name = bytes(r)?.len()),
        (6, Varint) => take!(s.kind = enum_value(r.read_varint().ok()?)),
        (7, I64) => take!(s.start = r.read_fixed64().ok()?),
        (8, I64) => take!(s.end = r.read_fixed64().ok()?),
        (9, Len) => take!(s.repeated += key_value(bytes(r)?)?),
        (10, Varint) => take!(s.dropped_attributes = u64::from(r.read_varint().ok()? as u32)),
        (11, Len) => take!(s.repeated += framed(measure(bytes(r)?, event_fields)?)),
        (12, Varint) => take!(s.dropped_events = u64::from(r.read_varint().ok()? as u32)),
        (13, Len) => take!(s.repeated += framed(measure(bytes(r)?, link_fields)?)),
        (14, Varint) => take!(s.dropped_links = u64::from(r.read_varint().ok()? as u32)),
        (15, Len) => take!(read_into(&mut s.status, bytes(r)?, status_fields)?),
        _ => Some(0),
    }
}

/// An enum is an int32: a negative one is sign-extended to 10 bytes, as Go's `uint64(int32)` does.
fn enum_value(v: u64) -> u64 {
    (v as i32) as i64 as u64
}

#[derive(Default)]
struct StatusState {
    message: usize,
    code: u64,
}

impl Size for StatusState {
    fn size(&self) -> usize {
        string_field(self.message) + varint_field(self.code)
    }
}

fn status_fields(s: &mut StatusState, r: &mut Reader<'_>, f: u32, wt: WireType) -> Option<usize> {
    match (f, wt) {
        (2, WireType::Len) => take!(s.message = bytes(r)?.len()),
        (3, WireType::Varint) => take!(s.code = enum_value(r.read_varint().ok()?)),
        _ => Some(0),
    }
}

#[derive(Default)]
struct EventState {
    time: u64,
    name: usize,
    repeated: usize,
    dropped: u64,
}

impl Size for EventState {
    fn size(&self) -> usize {
        (if self.time != 0 { 9 } else { 0 })
            + string_field(self.name)
            + self.repeated
            + varint_field(self.dropped)
    }
}

fn event_fields(s: &mut EventState, r: &mut Reader<'_>, f: u32, wt: WireType) -> Option<usize> {
    use WireType::*;
    match (f, wt) {
        (1, I64) => take!(s.time = r.read_fixed64().ok()?),
        (2, Len) => take!(s.name = bytes(r)?.len()),
        (3, Len) => take!(s.repeated += key_value(bytes(r)?)?),
        (4, Varint) => take!(s.dropped = u64::from(r.read_varint().ok()? as u32)),
        _ => Some(0),
    }
}

#[derive(Default)]
struct LinkState {
    trace_id: usize,
    span_id: usize,
    trace_state: usize,
    repeated: usize,
    dropped: u64,
    flags: u32,
}

impl Size for LinkState {
    fn size(&self) -> usize {
        framed(self.trace_id)
            + framed(self.span_id)
            + string_field(self.trace_state)
            + self.repeated
            + varint_field(self.dropped)
            + if self.flags != 0 { 5 } else { 0 }
    }
}

/// A pdata `TraceID`/`SpanID`'s re-encoded length: always written, empty when all zeros (or absent).
fn id_len(b: &[u8]) -> usize {
    if b.iter().all(|&x| x == 0) {
        0
    } else {
        b.len()
    }
}

fn link_fields(s: &mut LinkState, r: &mut Reader<'_>, f: u32, wt: WireType) -> Option<usize> {
    use WireType::*;
    match (f, wt) {
        (1, Len) => take!(s.trace_id = id_len(bytes(r)?)),
        (2, Len) => take!(s.span_id = id_len(bytes(r)?)),
        (3, Len) => take!(s.trace_state = bytes(r)?.len()),
        (4, Len) => take!(s.repeated += key_value(bytes(r)?)?),
        (5, Varint) => take!(s.dropped = u64::from(r.read_varint().ok()? as u32)),
        (6, I32) => take!(s.flags = r.read_fixed32().ok()?),
        _ => Some(0),
    }
}

#[derive(Default)]
struct KeyValueState {
    key: usize,
    value: AnyValueState,
    key_strindex: u64,
}

impl Size for KeyValueState {
    fn size(&self) -> usize {
        string_field(self.key) + framed(self.value.size()) + varint_field(self.key_strindex)
    }
}

fn key_value_fields(
    s: &mut KeyValueState,
    r: &mut Reader<'_>,
    f: u32,
    wt: WireType,
) -> Option<usize> {
    use WireType::*;
    match (f, wt) {
        (1, Len) => take!(s.key = bytes(r)?.len()),
        (2, Len) => take!(read_into(&mut s.value, bytes(r)?, any_value_fields)?),
        (3, Varint) => take!(s.key_strindex = enum_value(r.read_varint().ok()?)),
        _ => Some(0),
    }
}

/// An `AnyValue`: the oneof's last member, sized as written (a oneof member is written even when zero).
#[derive(Default)]
struct AnyValueState {
    size: usize,
}

impl Size for AnyValueState {
    fn size(&self) -> usize {
        self.size
    }
}

fn any_value_fields(
    s: &mut AnyValueState,
    r: &mut Reader<'_>,
    f: u32,
    wt: WireType,
) -> Option<usize> {
    use WireType::*;
    match (f, wt) {
        (1 | 7, Len) => take!(s.size = framed(bytes(r)?.len())),
        (2, Varint) => {
            r.read_varint().ok()?;
            take!(s.size = 2)
        }
        (3 | 8, Varint) => {
            let v = r.read_varint().ok()?;
            // int_value is an int64 (written as is); string_value_strindex an int32 (sign-extended).
            let v = if f == 8 { enum_value(v) } else { v };
            take!(s.size = 1 + varint_len(v))
        }
        (4, I64) => {
            r.read_fixed64().ok()?;
            take!(s.size = 9)
        }
        (5 | 6, Len) => {
            // ArrayValue and KeyValueList: both a repeated field 1 of their elements.
            let b = bytes(r)?;
            let inner = if f == 5 {
                measure(b, array_fields)?
            } else {
                measure(b, list_fields)?
            };
            take!(s.size = framed(inner))
        }
        _ => Some(0),
    }
}

#[derive(Default)]
struct Repeated {
    size: usize,
}

impl Size for Repeated {
    fn size(&self) -> usize {
        self.size
    }
}

fn array_fields(s: &mut Repeated, r: &mut Reader<'_>, f: u32, wt: WireType) -> Option<usize> {
    match (f, wt) {
        (1, WireType::Len) => take!(s.size += framed(measure(bytes(r)?, any_value_fields)?)),
        _ => Some(0),
    }
}

fn list_fields(s: &mut Repeated, r: &mut Reader<'_>, f: u32, wt: WireType) -> Option<usize> {
    match (f, wt) {
        (1, WireType::Len) => take!(s.size += key_value(bytes(r)?)?),
        _ => Some(0),
    }
}

#[derive(Default)]
struct ResourceState {
    repeated: usize,
    dropped: u64,
}

impl Size for ResourceState {
    fn size(&self) -> usize {
        self.repeated + varint_field(self.dropped)
    }
}

fn resource_fields(
    s: &mut ResourceState,
    r: &mut Reader<'_>,
    f: u32,
    wt: WireType,
) -> Option<usize> {
    use WireType::*;
    match (f, wt) {
        (1, Len) => take!(s.repeated += key_value(bytes(r)?)?),
        (2, Varint) => take!(s.dropped = u64::from(r.read_varint().ok()? as u32)),
        (3, Len) => take!(s.repeated += framed(measure(bytes(r)?, entity_ref_fields)?)),
        _ => Some(0),
    }
}

#[derive(Default)]
struct EntityRefState {
    schema_url: usize,
    kind: usize,
    repeated: usize,
}

impl Size for EntityRefState {
    fn size(&self) -> usize {
        string_field(self.schema_url) + string_field(self.kind) + self.repeated
    }
}

fn entity_ref_fields(
    s: &mut EntityRefState,
    r: &mut Reader<'_>,
    f: u32,
    wt: WireType,
) -> Option<usize> {
    match (f, wt) {
        (1, WireType::Len) => take!(s.schema_url = bytes(r)?.len()),
        (2, WireType::Len) => take!(s.kind = bytes(r)?.len()),
        // id_keys and description_keys: every element is written, even an empty one.
        (3 | 4, WireType::Len) => take!(s.repeated += framed(bytes(r)?.len())),
        _ => Some(0),
    }
}

#[derive(Default)]
struct ScopeState {
    name: usize,
    version: usize,
    repeated: usize,
    dropped: u64,
}

impl Size for ScopeState {
    fn size(&self) -> usize {
        string_field(self.name)
            + string_field(self.version)
            + self.repeated
            + varint_field(self.dropped)
    }
}

fn scope_fields(s: &mut ScopeState, r: &mut Reader<'_>, f: u32, wt: WireType) -> Option<usize> {
    use WireType::*;
    match (f, wt) {
        (1, Len) => take!(s.name = bytes(r)?.len()),
        (2, Len) => take!(s.version = bytes(r)?.len()),
        (3, Len) => take!(s.repeated += key_value(bytes(r)?)?),
        (4, Varint) => take!(s.dropped = u64::from(r.read_varint().ok()? as u32)),
        _ => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::wire::{put_len_header, put_varint};

    fn len(out: &mut Vec<u8>, field: u32, content: &[u8]) {
        put_len_header(out, field, content.len());
        out.extend_from_slice(content);
    }

    /// A span as an SDK writes it: IDs, parent, name, kind, times, one string attribute, status.
    fn sdk_span(extra: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        len(&mut s, 1, &[7; 16]);
        len(&mut s, 2, &[8; 8]);
        len(&mut s, 4, &[9; 8]);
        len(&mut s, 5, b"GET /");
        s.extend_from_slice(&[0x30, 2]); // kind: server
        s.push(0x39);
        s.extend_from_slice(&1u64.to_le_bytes());
        s.push(0x41);
        s.extend_from_slice(&2u64.to_le_bytes());
        let mut any = Vec::new();
        len(&mut any, 1, b"v");
        let mut kv = Vec::new();
        len(&mut kv, 1, b"k");
        len(&mut kv, 2, &any);
        len(&mut s, 9, &kv);
        len(&mut s, 15, &[0x18, 2]);
        s.extend_from_slice(extra);
        s
    }

    #[test]
    fn a_canonical_span_measures_its_own_length() {
        let s = sdk_span(&[]);
        assert_eq!(span(&s), s.len());
    }

    #[test]
    fn unknown_fields_are_not_counted_at_any_depth() {
        // Field 100 (varint) on the span, and field 9 (bytes) inside the attribute's AnyValue and KeyValue.
        let mut unknown = Vec::new();
        put_varint(&mut unknown, 100 << 3);
        put_varint(&mut unknown, 300);
        let plain = sdk_span(&[]);
        let with = sdk_span(&unknown);
        assert_eq!(with.len(), plain.len() + 4);
        assert_eq!(span(&with), plain.len());

        let mut kv = Vec::new();
        len(&mut kv, 1, b"k");
        let mut any = Vec::new();
        len(&mut any, 1, b"v");
        len(&mut any, 9, b"junk");
        len(&mut kv, 2, &any);
        len(&mut kv, 9, b"more junk");
        let mut s = Vec::new();
        len(&mut s, 9, &kv);
        // IDs and status are always written (2 bytes each when absent): 4 × 2, and the attribute without junk:
        // 2 + key (3) + value (2 + string (3)).
        assert_eq!(span(&s), 8 + 2 + 3 + 2 + 3);
    }

    #[test]
    fn absent_or_zero_ids_and_status_take_two_bytes() {
        let mut s = Vec::new();
        len(&mut s, 1, &[7; 16]);
        len(&mut s, 2, &[8; 8]);
        len(&mut s, 4, &[0; 8]);
        assert_eq!(span(&s), 18 + 10 + 2 + 2);
    }

    #[test]
    fn zero_scalars_overlong_varints_and_repeated_singulars_are_re_encoded() {
        let mut s = Vec::new();
        s.extend_from_slice(&[0x30, 0x80, 0x80, 0x00]); // kind 0, overlong: left out
        s.extend_from_slice(&[0x50, 0x83, 0x80, 0x00]); // dropped_attributes_count 3, overlong: 2 bytes
        len(&mut s, 5, b"first name");
        len(&mut s, 5, b"x"); // the last one wins
        s.extend_from_slice(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x0f]); // kind -1: sign-extended to 10 bytes
        assert_eq!(span(&s), 6 + 2 + 3 + 11 + 2);
    }

    #[test]
    fn resource_and_scope_drop_unknown_fields() {
        let mut kv = Vec::new();
        len(&mut kv, 1, b"service.name");
        let mut any = Vec::new();
        len(&mut any, 1, b"svc");
        len(&mut kv, 2, &any);
        let mut r = Vec::new();
        len(&mut r, 1, &kv);
        let canonical = r.len();
        len(&mut r, 7, b"unknown");
        assert_eq!(resource(Some(&r)), canonical);
        assert_eq!(resource(None), 0);

        let mut sc = Vec::new();
        len(&mut sc, 1, b"lib");
        len(&mut sc, 2, b"");
        sc.extend_from_slice(&[0x20, 0]);
        assert_eq!(scope(Some(&sc)), 5);
    }
}
