//! A zero-copy scanner for `ExportTraceServiceRequest`.
//!
//! One pass over the payload validates everything a protobuf parser would (wire types, lengths, UTF-8 of every
//! string, nested messages down to attribute values, ID lengths) and extracts, per span, only what the engine
//! needs: IDs, name, kind, times, status code, trace state, flags, and the attributes whose keys configured
//! policies read (`AttrKeys`). Everything else stays in the raw bytes, which are kept and re-emitted as they came.
//! Why a hand-written scanner rather than prost types: see `benches/decode.rs` and the README (it is ~4× faster
//! than decoding into owned structs, and it keeps each span's exact bytes, which prost would have to re-encode).

use std::borrow::Cow;

use super::wire::{mistyped, text, Fail, Reader, RejectReason, WireResult, WireType, MAX_LEVELS};
use crate::error::Error;

/// The attribute keys that configured policies read; the scanner extracts only these.
///
/// Every attribute of every span is looked up here, and nearly all miss: a 256-bucket table on the key's
/// length and first and last bytes answers most misses with one load, whatever the number of keys.
///
/// A key may have several spellings (see `key_spellings`) that read into one slot: `index_of` answers the slot,
/// and the scan keeps the first occurrence of any of its spellings, as `pcommon.Map.Get` keeps the first.
#[derive(Debug, Clone)]
pub struct AttrKeys {
    /// Every spelling looked up, and the slot it reads into.
    spellings: Vec<Box<[u8]>>,
    slot_of: Vec<u16>,
    slots: usize,
    /// Per bucket, 1 + the first spelling's index (0: empty); `next` chains spellings sharing a bucket.
    buckets: Box<[u16; 256]>,
    next: Vec<u16>,
    /// `tailsample.strict_reference_matching`: keys match only as spelled, and attribute policies read values
    /// as the reference does (no array elements).
    strict: bool,
}

impl Default for AttrKeys {
    fn default() -> Self {
        AttrKeys::new(std::iter::empty::<&str>())
    }
}

/// `a == b`, inline for the short keys of attributes (most are 8 to 40 bytes): words compared, the last one
/// overlapping the one before, instead of a call to `memcmp`.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let mut diff = word(a, n - 8) ^ word(b, n - 8);
    let mut at = 0;
    while at + 8 < n {
        diff |= word(a, at) ^ word(b, at);
        at += 8;
    }
    diff == 0
}

#[inline]
fn bucket_of(key: &[u8]) -> usize {
    match key {
        [] => 0,
        [first, .., last] => {
            (key.len().wrapping_mul(31) ^ (usize::from(*first) * 7) ^ usize::from(*last)) & 255
        }
        [only] => (31 ^ (usize::from(*only) * 7) ^ usize::from(*only)) & 255,
    }
}

/// Prefixes of the semantic conventions' captured HTTP headers, whose names SDKs spell two ways.
const HEADER_PREFIXES: [&str; 2] = ["http.request.header.", "http.response.header."];

/// Every spelling a configured attribute key matches, the key itself first (the one place key aliasing is
/// decided, for every consumer of keys: attribute policies, OTTL, trace keys, the propagation audit).
///
/// A captured HTTP header (`http.request.header.<name>`, `http.response.header.<name>`) also matches `<name>`
/// with every `-` written `_` and with every `_` written `-`: the specification keeps the header's dashes
/// (`x-force-trace`), OpenTelemetry Python writes underscores (`x_force_trace`). Any other key is only itself.
/// `tailsample.strict_reference_matching` turns this off (`AttrKeys::new_strict`).
pub fn key_spellings(key: &str) -> Vec<String> {
    let mut out = vec![key.to_string()];
    if let Some(prefix) = HEADER_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        let name = &key[prefix.len()..];
        for alt in [name.replace('-', "_"), name.replace('_', "-")] {
            let alt = format!("{prefix}{alt}");
            if !out.contains(&alt) {
                out.push(alt);
            }
        }
    }
    out
}

impl AttrKeys {
    /// The keys, each with its other spellings (`key_spellings`).
    pub fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        AttrKeys::build(keys, false)
    }

    /// The keys exactly as spelled (`tailsample.strict_reference_matching`).
    pub fn new_strict<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        AttrKeys::build(keys, true)
    }

    fn build<S: AsRef<str>>(keys: impl IntoIterator<Item = S>, strict: bool) -> Self {
        let mut spellings: Vec<Box<[u8]>> = Vec::new();
        let mut slot_of: Vec<u16> = Vec::new();
        let mut slots = 0usize;
        for k in keys {
            let k = k.as_ref();
            let all = if strict {
                vec![k.to_string()]
            } else {
                key_spellings(k)
            };
            // A key shares the slot of any of its spellings already registered (`x-a` after `x_a`).
            let slot = all
                .iter()
                .find_map(|s| {
                    let i = spellings.iter().position(|x| **x == *s.as_bytes())?;
                    Some(slot_of[i])
                })
                .unwrap_or_else(|| {
                    slots += 1;
                    (slots - 1) as u16
                });
            for s in all {
                if !spellings.iter().any(|x| **x == *s.as_bytes()) {
                    spellings.push(s.as_bytes().into());
                    slot_of.push(slot);
                }
            }
            assert!(
                spellings.len() < usize::from(u16::MAX),
                "attribute keys are counted in u16"
            );
        }
        let mut buckets = Box::new([0u16; 256]);
        let mut next = vec![0u16; spellings.len()];
        for (i, k) in spellings.iter().enumerate().rev() {
            let b = bucket_of(k);
            next[i] = buckets[b];
            buckets[b] = i as u16 + 1;
        }
        AttrKeys {
            spellings,
            slot_of,
            slots,
            buckets,
            next,
            strict,
        }
    }
    /// The number of slots: distinct keys, whatever their spellings.
    pub fn len(&self) -> usize {
        self.slots
    }
    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }
    /// Built by `new_strict`: keys match only as spelled, and attribute policies read values as the reference.
    pub fn strict(&self) -> bool {
        self.strict
    }
    /// Slot of `key` (any of its spellings), if a policy reads it.
    #[inline(always)]
    pub fn index_of(&self, key: &[u8]) -> Option<usize> {
        let mut at = self.buckets[bucket_of(key)];
        while at != 0 {
            let i = usize::from(at - 1);
            if same_bytes(&self.spellings[i], key) {
                return Some(usize::from(self.slot_of[i]));
            }
            at = self.next[i];
        }
        None
    }
    pub fn index_of_str(&self, key: &str) -> Option<usize> {
        self.index_of(key.as_bytes())
    }
}

#[cfg(test)]
mod attr_keys_tests {
    use super::{key_spellings, AttrKeys};

    #[test]
    fn every_key_is_found_at_its_index_and_others_miss() {
        let names: Vec<String> = (0..300)
            .map(|i| format!("k{i}.{}", "x".repeat(i % 40)))
            .chain(["", "a", "service.name", "peer.service", "server.address"].map(String::from))
            .collect();
        let keys = AttrKeys::new(&names);
        assert_eq!(keys.len(), names.len());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(keys.index_of_str(n), Some(i), "{n:?}");
        }
        for miss in [
            "b",
            "service.nam",
            "service.namf",
            "peer.servicf",
            "k1",
            "zz",
        ] {
            assert_eq!(keys.index_of_str(miss), None, "{miss:?}");
        }
        let dup = AttrKeys::new(["a", "b", "a"]);
        assert_eq!((dup.len(), dup.index_of_str("b")), (2, Some(1)));
        assert_eq!(AttrKeys::default().index_of_str("a"), None);
    }

    macro_rules! spelling_cases {
        ($($name:ident: $key:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let want: &[&str] = &$want;
                assert_eq!(key_spellings($key), want);
            }
        )*};
    }

    spelling_cases! {
        request_header_dashes_gain_underscores: "http.request.header.x-force-trace"
            => ["http.request.header.x-force-trace", "http.request.header.x_force_trace"];
        request_header_underscores_gain_dashes: "http.request.header.x_force_trace"
            => ["http.request.header.x_force_trace", "http.request.header.x-force-trace"];
        response_header_too: "http.response.header.content-type"
            => ["http.response.header.content-type", "http.response.header.content_type"];
        mixed_name_gains_both_uniform_spellings: "http.request.header.x-a_b"
            => ["http.request.header.x-a_b", "http.request.header.x_a_b", "http.request.header.x-a-b"];
        header_without_separators_is_itself: "http.request.header.host" => ["http.request.header.host"];
        only_the_header_name_changes: "http.request.header.x-force-trace.extra_part"
            => ["http.request.header.x-force-trace.extra_part", "http.request.header.x_force_trace.extra_part",
                "http.request.header.x-force-trace.extra-part"];
        other_keys_are_only_themselves: "user_agent.original" => ["user_agent.original"];
        a_prefix_alone_is_itself: "http.request.header." => ["http.request.header."];
        prefix_must_start_the_key: "x.http.request.header.a-b" => ["x.http.request.header.a-b"];
    }

    #[test]
    fn same_bytes_sees_a_difference_at_any_place_of_any_length() {
        for n in 0usize..40 {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(super::same_bytes(&a, &a.clone()), "{n}");
            assert!(!super::same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x01;
                assert!(!super::same_bytes(&a, &b), "{n} {at}");
                b[at] = a[at] ^ 0x80;
                assert!(!super::same_bytes(&a, &b), "{n} {at}");
            }
        }
    }

    /// Scenario: a header key configured in one spelling, or in both (by two policies).
    /// Guarantees: both spellings read into one slot; strict keys match only as written.
    #[test]
    fn both_spellings_share_one_slot_unless_strict() {
        let dash = "http.request.header.x-force-trace";
        let under = "http.request.header.x_force_trace";
        let k = AttrKeys::new(["service.name", dash]);
        assert_eq!(k.len(), 2);
        assert_eq!(
            (k.index_of_str(dash), k.index_of_str(under)),
            (Some(1), Some(1))
        );
        assert!(!k.strict());
        let both = AttrKeys::new([under, "a", dash]);
        assert_eq!(both.len(), 2);
        assert_eq!(
            (both.index_of_str(dash), both.index_of_str(under)),
            (Some(0), Some(0))
        );
        assert_eq!(both.index_of_str("a"), Some(1));
        let strict = AttrKeys::new_strict([dash]);
        assert!(strict.strict());
        assert_eq!(
            (strict.index_of_str(dash), strict.index_of_str(under)),
            (Some(0), None)
        );
        let strict_both = AttrKeys::new_strict([dash, under]);
        assert_eq!(
            (
                strict_both.index_of_str(dash),
                strict_both.index_of_str(under)
            ),
            (Some(0), Some(1))
        );
    }
}

/// An attribute value as the reference's `pcommon.Value` sees it: `Str()` of a non-string is "", `Int()` of a
/// non-int is 0, `Bool()` of a non-bool is false. `Absent` means the key is not there at all.
///
/// `Array` and `Map` hold the raw `ArrayValue` / `KeyValueList` message, validated by the scan: their contents
/// are read lazily, without allocating (`elements`, `get`, `entries`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum AttrValue<'a> {
    #[default]
    Absent,
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(&'a [u8]),
    Map(&'a [u8]),
}

impl<'a> AttrValue<'a> {
    #[inline]
    pub fn is_present(&self) -> bool {
        !matches!(self, AttrValue::Absent)
    }
    /// `pcommon.Value.Str()`.
    #[inline]
    pub fn str_or_empty(&self) -> &'a str {
        match self {
            AttrValue::Str(s) => s,
            _ => "",
        }
    }
    /// `pcommon.Value.Int()`.
    #[inline]
    pub fn int_or_zero(&self) -> i64 {
        match self {
            AttrValue::Int(i) => *i,
            _ => 0,
        }
    }
    /// `pcommon.Value.Bool()`.
    #[inline]
    pub fn bool_or_false(&self) -> bool {
        matches!(self, AttrValue::Bool(true))
    }
    /// The elements of an array value, in order; nothing for any other value.
    #[inline]
    pub fn elements(&self) -> Elements<'a> {
        Elements {
            r: Reader::new(
                match self {
                    AttrValue::Array(b) => b,
                    _ => &[],
                },
                0,
            ),
        }
    }
    /// The entries (key, value) of a map value, in order; nothing for any other value.
    #[inline]
    pub fn entries(&self) -> Entries<'a> {
        key_values(
            match self {
                AttrValue::Map(b) => b,
                _ => &[],
            },
            1,
        )
    }
    /// `pcommon.Map.Get` on a map value: the first entry named `key`, `Absent` if none (or not a map).
    pub fn get(&self, key: &str) -> AttrValue<'a> {
        self.entries()
            .find(|(k, _)| *k == key)
            .map_or(AttrValue::Absent, |(_, v)| v)
    }
}

/// The next length-delimited field numbered `want` of an already validated message (anything unexpected ends it).
#[inline]
fn next_len_field<'a>(r: &mut Reader<'a>, want: u32) -> Option<&'a [u8]> {
    while !r.is_empty() {
        let (field, wt) = r.read_tag().ok()?;
        if field == want && wt == WireType::Len {
            return r.read_len().ok().map(|(b, _)| b);
        }
        r.skip(field, wt).ok()?;
    }
    None
}

/// Elements of an `ArrayValue` (see `AttrValue::elements`).
#[derive(Clone)]
pub struct Elements<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for Elements<'a> {
    type Item = AttrValue<'a>;
    fn next(&mut self) -> Option<AttrValue<'a>> {
        next_len_field(&mut self.r, 1).map(read_any_value)
    }
}

/// The `KeyValue`s of an already validated message's repeated field `field`, in order: a `KeyValueList`'s values
/// (`AttrValue::entries`, field 1), a `Resource`'s attributes (1), a `Span`'s (9).
pub(crate) fn key_values(message: &[u8], field: u32) -> Entries<'_> {
    Entries {
        r: Reader::new(message, 0),
        field,
    }
}

/// `KeyValue`s read in order (see `key_values`).
#[derive(Clone)]
pub struct Entries<'a> {
    r: Reader<'a>,
    field: u32,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, AttrValue<'a>);
    fn next(&mut self) -> Option<(&'a str, AttrValue<'a>)> {
        let kv = next_len_field(&mut self.r, self.field)?;
        let mut r = Reader::new(kv, 0);
        let (mut key, mut value) = ("", AttrValue::Empty);
        while !r.is_empty() {
            let Ok((field, wt)) = r.read_tag() else { break };
            match (field, wt) {
                (1 | 2, WireType::Len) => {
                    let Ok((b, _)) = r.read_len() else { break };
                    if field == 1 {
                        key = text(b);
                    } else {
                        value = read_any_value(b);
                    }
                }
                _ => {
                    if r.skip(field, wt).is_err() {
                        break;
                    }
                }
            }
        }
        Some((key, value))
    }
}

/// One `AnyValue` of an already validated message, its nested arrays and maps left raw (the scan validated them;
/// a malformed field here, only possible for a hand-made `AttrValue`, ends the value).
fn read_any_value(buf: &[u8]) -> AttrValue<'_> {
    let mut r = Reader::new(buf, 0);
    let mut value = AttrValue::Empty;
    while !r.is_empty() {
        let Ok((field, wt)) = r.read_tag() else { break };
        value = match (field, wt) {
            (1 | 5 | 6 | 7, WireType::Len) => {
                let Ok((b, _)) = r.read_len() else { break };
                match field {
                    1 => AttrValue::Str(text(b)),
                    5 => AttrValue::Array(b),
                    6 => AttrValue::Map(b),
                    _ => AttrValue::Bytes(b),
                }
            }
            (2 | 3, WireType::Varint) => {
                let Ok(v) = r.read_varint() else { break };
                if field == 2 {
                    AttrValue::Bool(v != 0)
                } else {
                    AttrValue::Int(v as i64)
                }
            }
            (4, WireType::I64) => {
                let Ok(v) = r.read_fixed64() else { break };
                AttrValue::Double(f64::from_bits(v))
            }
            _ => {
                if r.skip(field, wt).is_err() {
                    break;
                }
                value
            }
        };
    }
    value
}

/// One `ResourceSpans`: its resource (raw, possibly absent) and schema URL.
#[derive(Debug, Clone)]
pub struct ResourceView<'a> {
    /// Raw `Resource` message bytes; a field repeated on the wire is merged by concatenation, as protobuf does.
    pub raw: Option<Cow<'a, [u8]>>,
    pub schema_url: &'a str,
}

/// One `ScopeSpans`: its scope (raw, possibly absent), schema URL and owning resource.
#[derive(Debug, Clone)]
pub struct ScopeView<'a> {
    pub resource: u32,
    pub raw: Option<Cow<'a, [u8]>>,
    pub name: &'a str,
    pub schema_url: &'a str,
}

/// What the engine reads of one span; `raw` is the span's exact bytes.
#[derive(Debug, Clone)]
pub struct SpanView<'a> {
    pub scope: u32,
    pub raw: &'a [u8],
    /// Absolute offset of the span's bytes in the payload.
    pub offset: usize,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span (empty or all-zero parent span ID).
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    pub trace_state: &'a str,
    pub flags: u32,
}

/// A validated request: resources, scopes and spans in wire order, and the extracted attributes
/// (`attrs[i * keys + k]` for span `i`, `resource_attrs[r * keys + k]` for resource `r`).
///
/// Spans that cannot be used are not in `spans`: without a usable trace ID, with an ID of the wrong length
/// (span, parent, link), or nested deeper than `MAX_LEVELS` (in their attributes, events, links, or their
/// resource's or scope's attributes). They are counted in `rejected_spans` (and by reason, indexed by
/// `RejectReason::index`), the first one's reason in `rejection`, and the rest of the request stands (an OTLP
/// partial success).
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    pub resources: Vec<ResourceView<'a>>,
    pub scopes: Vec<ScopeView<'a>>,
    pub spans: Vec<SpanView<'a>>,
    pub span_attrs: Vec<AttrValue<'a>>,
    pub resource_attrs: Vec<AttrValue<'a>>,
    pub keys: usize,
    pub rejected_spans: usize,
    pub rejected_by_reason: [usize; RejectReason::ALL.len()],
    pub rejection: Option<String>,
}

/// Message levels in the whole request (see `MAX_LEVELS`): the request is 1.
const L_REQUEST: usize = 1;
const L_RESOURCE_SPANS: usize = 2;
const L_RESOURCE: usize = 3;
const L_SCOPE_SPANS: usize = 3;
const L_SCOPE: usize = 4;
const L_ENTITY_REF: usize = 4;
const L_SPAN: usize = 4;
/// Events, links and the status of a span.
const L_SPAN_PART: usize = 5;

impl<'a> Decoded<'a> {
    #[inline]
    pub fn span_attr(&self, span: usize, key: usize) -> AttrValue<'a> {
        self.span_attrs[span * self.keys + key]
    }
    #[inline]
    pub fn resource_attr(&self, resource: usize, key: usize) -> AttrValue<'a> {
        self.resource_attrs[resource * self.keys + key]
    }
    pub fn span_attrs_of(&self, span: usize) -> &[AttrValue<'a>] {
        &self.span_attrs[span * self.keys..(span + 1) * self.keys]
    }
    pub fn resource_attrs_of(&self, resource: usize) -> &[AttrValue<'a>] {
        &self.resource_attrs[resource * self.keys..(resource + 1) * self.keys]
    }

    /// Drops the spans from index `from` on (their resource or scope is rejected) and counts them.
    fn reject_from(&mut self, from: usize, at: impl FnOnce() -> String, why: &Fail) {
        let n = self.spans.len() - from;
        if n == 0 {
            return;
        }
        self.spans.truncate(from);
        self.span_attrs.truncate(from * self.keys);
        self.reject(n, at, why);
    }

    /// Counts `n` rejected spans; the first rejection's reason is kept, named by where (the field path down
    /// to the span, resource or scope, and the first field under it: never the whole deep path).
    #[cold]
    fn reject(&mut self, n: usize, at: impl FnOnce() -> String, why: &Fail) {
        self.rejected_spans += n;
        let reason = why.reject.unwrap_or(RejectReason::TooDeep);
        self.rejected_by_reason[reason.index()] += n;
        if self.rejection.is_none() {
            let under = why.field.split('.').next().unwrap_or("");
            let at = at();
            let at = if under.is_empty() {
                at
            } else {
                format!("{at}.{under}")
            };
            self.rejection = Some(format!("{at}: {} (at byte {})", why.message, why.offset));
        }
    }
}

/// The wire type of every field each message declares (`[n - 1]` for field `n`; see `mistyped`), as
/// opentelemetry-proto 1.9 declares them (`KeyValue.key_strindex` and `AnyValue.string_value_strindex`, used by
/// profiles, included). A field that arrives with another one is unknown to upb, Go's protobuf and C++, and
/// refused by pdata: skipped in the containers, the spans holding it rejected elsewhere.
mod wt {
    use super::WireType::{self, Len, Varint, I32, I64};
    pub const REQUEST: [WireType; 1] = [Len];
    /// `instrumentation_library_spans` (1000) is checked by hand.
    pub const RESOURCE_SPANS: [WireType; 3] = [Len, Len, Len];
    pub const RESOURCE: [WireType; 3] = [Len, Varint, Len];
    pub const ENTITY_REF: [WireType; 4] = [Len, Len, Len, Len];
    pub const KEY_VALUE: [WireType; 3] = [Len, Len, Varint];
    pub const ANY_VALUE: [WireType; 8] = [Len, Varint, Varint, I64, Len, Len, Len, Varint];
    /// `ArrayValue.values`, `KeyValueList.values`.
    pub const REPEATED_MESSAGE: [WireType; 1] = [Len];
    pub const SCOPE_SPANS: [WireType; 3] = [Len, Len, Len];
    pub const SCOPE: [WireType; 4] = [Len, Len, Len, Varint];
    pub const SPAN: [WireType; 16] = [
        Len, Len, Len, Len, Len, Varint, I64, I64, Len, Varint, Len, Varint, Len, Varint, Len, I32,
    ];
    pub const EVENT: [WireType; 4] = [I64, Len, Len, Varint];
    pub const LINK: [WireType; 6] = [Len, Len, Len, Len, Varint, I32];
    pub const STATUS: [WireType; 3] = [Varint, Len, Varint];
}

/// Scans and validates a whole `ExportTraceServiceRequest`.
pub fn decode<'a>(payload: &'a [u8], keys: &AttrKeys) -> Result<Decoded<'a>, Error> {
    // Spans of SDK payloads take 200-600 bytes: reserving for one per 256 bytes spares most regrowth copies
    // (of the extracted attributes above all: `keys` values per span).
    let spans = payload.len() / 256 + 1;
    let mut out = Decoded {
        keys: keys.len(),
        spans: Vec::with_capacity(spans),
        span_attrs: Vec::with_capacity(spans * keys.len()),
        ..Default::default()
    };
    scan_request(payload, keys, &mut out).map_err(|f| {
        let f = f.into_info();
        Error::Decode {
            field: f.field,
            offset: f.offset,
            message: f.message,
        }
    })?;
    Ok(out)
}

fn scan_request<'a>(payload: &'a [u8], keys: &AttrKeys, out: &mut Decoded<'a>) -> WireResult<()> {
    let mut r = Reader::at_level(payload, 0, L_REQUEST);
    let mut index = 0usize;
    while !r.is_empty() {
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::REQUEST, field, wt) {
            r.skip(field, wt)?;
            continue;
        }
        if field == 1 {
            let (bytes, off) = r
                .read_len()
                .map_err(|e| e.within(format!("resource_spans[{index}]")))?;
            scan_resource_spans(bytes, off, index, keys, out)
                .map_err(|e| e.within(format!("resource_spans[{index}]")))?;
            index += 1;
        } else {
            r.skip(field, wt)?;
        }
    }
    Ok(())
}

/// Merges a repeated singular message field the protobuf way: by concatenating its encodings.
fn merge<'a>(slot: &mut Option<Cow<'a, [u8]>>, bytes: &'a [u8]) {
    *slot = Some(match slot.take() {
        None => Cow::Borrowed(bytes),
        Some(prev) => {
            let mut v = prev.into_owned();
            v.extend_from_slice(bytes);
            Cow::Owned(v)
        }
    });
}

fn scan_resource_spans<'a>(
    buf: &'a [u8],
    base: usize,
    rs_index: usize,
    keys: &AttrKeys,
    out: &mut Decoded<'a>,
) -> WireResult<()> {
    let first_span = out.spans.len();
    let mut too_deep: Option<Fail> = None;
    let rid = out.resources.len();
    out.resources.push(ResourceView {
        raw: None,
        schema_url: "",
    });
    out.resource_attrs
        .extend(std::iter::repeat_n(AttrValue::Absent, keys.len()));
    let mut r = Reader::at_level(buf, base, L_RESOURCE_SPANS);
    let mut scope_index = 0usize;
    while !r.is_empty() {
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::RESOURCE_SPANS, field, wt) || (field == 1000 && wt != WireType::Len) {
            r.skip(field, wt)?;
            continue;
        }
        match field {
            1 => {
                let (bytes, off) = r.read_len().map_err(|e| e.at_field("resource"))?;
                let attrs = &mut out.resource_attrs[rid * keys.len()..(rid + 1) * keys.len()];
                match scan_resource(bytes, off, keys, attrs) {
                    Ok(()) => merge(&mut out.resources[rid].raw, bytes),
                    // Every span under it is rejected, below, once the scopes are scanned.
                    Err(e) if e.reject.is_some() => {
                        too_deep.get_or_insert(e);
                    }
                    Err(e) => return Err(e.within("resource")),
                }
            }
            // 1000 is the deprecated `instrumentation_library_spans`, wire-compatible with `scope_spans`.
            2 | 1000 => {
                let name = if field == 2 {
                    "scope_spans"
                } else {
                    "instrumentation_library_spans"
                };
                let label = || format!("{name}[{scope_index}]");
                let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
                let path = (rs_index, name, scope_index);
                scan_scope_spans(bytes, off, rid as u32, path, keys, out)
                    .map_err(|e| e.within(label()))?;
                scope_index += 1;
            }
            3 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("schema_url"))?;
                out.resources[rid].schema_url = text(bytes);
            }
            _ => r.skip(field, wt)?,
        }
    }
    if let Some(e) = too_deep {
        out.reject_from(
            first_span,
            || format!("resource_spans[{rs_index}].resource"),
            &e,
        );
    }
    Ok(())
}

fn scan_resource<'a>(
    buf: &'a [u8],
    base: usize,
    keys: &AttrKeys,
    attrs: &mut [AttrValue<'a>],
) -> WireResult<()> {
    let mut r = Reader::at_level(buf, base, L_RESOURCE);
    let mut mistyped_field: Option<Fail> = None;
    let mut index = 0usize;
    let mut entity_index = 0usize;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::RESOURCE, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        match field {
            1 => {
                index = scan_attribute(&mut r, index, keys, attrs)?;
            }
            2 => {
                r.read_varint()
                    .map_err(|e| e.at_field("dropped_attributes_count"))?;
            }
            3 => {
                let label = || format!("entity_refs[{entity_index}]");
                let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
                scan_entity_ref(bytes, off).map_err(|e| e.within(label()))?;
                entity_index += 1;
            }
            _ => r.skip(field, wt)?,
        }
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Validates an `EntityRef` (schema_url, type, id_keys, description_keys: all strings).
fn scan_entity_ref(buf: &[u8], base: usize) -> WireResult<()> {
    let mut r = Reader::at_level(buf, base, L_ENTITY_REF);
    let mut mistyped_field: Option<Fail> = None;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::ENTITY_REF, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        let label = match field {
            1 => "schema_url",
            2 => "type",
            3 => "id_keys",
            4 => "description_keys",
            _ => {
                r.skip(field, wt)?;
                continue;
            }
        };
        let (bytes, _) = r.read_len().map_err(|e| e.at_field(label))?;
        text(bytes);
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads one `attributes` entry (a KeyValue); records its value if a policy reads its key and it is the first
/// occurrence of that key (as `pcommon.Map.Get` returns the first). Returns the next attribute index.
///
/// Keys match as bytes, as Go's strings compare, so a key that is not valid UTF-8 matches no configured key;
/// a string value is checked for UTF-8 only when it is recorded (it reads as "" if it is not valid). The
/// attributes no policy reads, nearly all of them, are checked for their structure alone.
#[inline(always)]
fn scan_attribute<'a>(
    r: &mut Reader<'a>,
    index: usize,
    keys: &AttrKeys,
    attrs: &mut [AttrValue<'a>],
) -> WireResult<usize> {
    let label = || format!("attributes[{index}]");
    let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
    let (key, value) = scan_key_value(bytes, off, r.level() + 1).map_err(|e| e.within(label()))?;
    if let Some(k) = keys.index_of(key) {
        if !attrs[k].is_present() {
            attrs[k] = value.read();
        }
    }
    Ok(index + 1)
}

/// A key-value's value, its structure checked: the fast path's scalars, whose string is not yet checked for
/// UTF-8 (`read` checks it, for the values recorded), or what the general path read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scanned<'a> {
    Empty,
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Bool(bool),
    Read(AttrValue<'a>),
}

impl<'a> Scanned<'a> {
    #[inline(always)]
    fn read(self) -> AttrValue<'a> {
        match self {
            Scanned::Empty => AttrValue::Empty,
            Scanned::Str(s) => AttrValue::Str(text(s)),
            Scanned::Int(n) => AttrValue::Int(n),
            Scanned::Double(d) => AttrValue::Double(d),
            Scanned::Bool(b) => AttrValue::Bool(b),
            Scanned::Read(v) => v,
        }
    }
}

/// The layout SDKs write for nearly every attribute, read without the general loop: the key (field 1), then the
/// value (field 2) holding one string, an int (any varint, as ports and status codes need two bytes), a
/// double or a one-byte bool, every length under 128. Anything else (and anything malformed) returns `None` and
/// takes the general path, which validates and names errors.
#[inline(always)]
fn fast_key_value(buf: &[u8]) -> Option<(&[u8], Scanned<'_>)> {
    let [0x0a, klen, rest @ ..] = buf else {
        return None;
    };
    let klen = usize::from(*klen);
    if klen >= 0x80 || rest.len() < klen + 2 {
        return None;
    }
    let (key, rest) = rest.split_at(klen);
    let [0x12, vlen, value @ ..] = rest else {
        return None;
    };
    if *vlen >= 0x80 || usize::from(*vlen) != value.len() {
        return None;
    }
    let value = match value {
        [] => Scanned::Empty,
        [0x0a, slen, s @ ..] if *slen < 0x80 && usize::from(*slen) == s.len() => Scanned::Str(s),
        [0x18, varint @ ..] => Scanned::Int(whole_varint(varint)? as i64),
        [0x10, b] if *b < 0x80 => Scanned::Bool(*b != 0),
        [0x21, bits @ ..] => {
            Scanned::Double(f64::from_bits(u64::from_le_bytes(bits.try_into().ok()?)))
        }
        _ => return None,
    };
    Some((key, value))
}

/// The value of a varint that fills `bytes` exactly (at most 10 bytes; a tenth byte's bits past 64 dropped, as
/// `Reader::read_varint` drops them), or `None`.
#[inline(always)]
fn whole_varint(bytes: &[u8]) -> Option<u64> {
    let (last, body) = bytes.split_last()?;
    if *last >= 0x80 || body.len() >= 10 || body.iter().any(|b| *b < 0x80) {
        return None;
    }
    let value = body
        .iter()
        .enumerate()
        .fold(0u64, |v, (i, b)| v | u64::from(b & 0x7f) << (7 * i));
    Some(value | u64::from(*last) << (7 * body.len()))
}

/// A `KeyValue` at message level `level`; its value is one level more (see `MAX_LEVELS`), so a key-value at
/// the limit is refused whatever its value, the fast path's scalars included. Inlined for the fast path; the
/// general one is a call (its frame is large, and most attributes never need it).
#[inline(always)]
fn scan_key_value(buf: &[u8], base: usize, level: usize) -> WireResult<(&[u8], Scanned<'_>)> {
    if level >= MAX_LEVELS {
        return Err(Fail::too_deep(base, "attribute values"));
    }
    if let Some(kv) = fast_key_value(buf) {
        return Ok(kv);
    }
    let (key, value) = scan_key_value_general(buf, base, level)?;
    Ok((key, Scanned::Read(value)))
}

#[inline(never)]
fn scan_key_value_general(
    buf: &[u8],
    base: usize,
    level: usize,
) -> WireResult<(&[u8], AttrValue<'_>)> {
    let mut r = Reader::at_level(buf, base, level);
    let mut mistyped_field: Option<Fail> = None;
    let mut key: &[u8] = b"";
    let mut value = AttrValue::Empty;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::KEY_VALUE, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        match field {
            1 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("key"))?;
                key = bytes;
            }
            2 => {
                let (bytes, off) = r.read_len().map_err(|e| e.at_field("value"))?;
                value = scan_any_value(bytes, off, level + 1).map_err(|e| e.within("value"))?;
            }
            _ => r.skip(field, wt)?,
        }
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok((key, value)),
    }
}

/// An `AnyValue` at message level `level`; its array or map is one level more, their elements one more again.
fn scan_any_value(buf: &[u8], base: usize, level: usize) -> WireResult<AttrValue<'_>> {
    if level > MAX_LEVELS {
        return Err(Fail::too_deep(base, "attribute values"));
    }
    let mut r = Reader::at_level(buf, base, level);
    let mut mistyped_field: Option<Fail> = None;
    let mut value = AttrValue::Empty;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::ANY_VALUE, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        value = match field {
            1 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("string_value"))?;
                AttrValue::Str(text(bytes))
            }
            2 => AttrValue::Bool(r.read_varint().map_err(|e| e.at_field("bool_value"))? != 0),
            3 => AttrValue::Int(r.read_varint().map_err(|e| e.at_field("int_value"))? as i64),
            4 => AttrValue::Double(f64::from_bits(
                r.read_fixed64().map_err(|e| e.at_field("double_value"))?,
            )),
            5 => {
                let (bytes, off) = r.read_len().map_err(|e| e.at_field("array_value"))?;
                scan_array(bytes, off, level + 1).map_err(|e| e.within("array_value"))?;
                AttrValue::Array(bytes)
            }
            6 => {
                let (bytes, off) = r.read_len().map_err(|e| e.at_field("kvlist_value"))?;
                scan_kvlist(bytes, off, level + 1).map_err(|e| e.within("kvlist_value"))?;
                AttrValue::Map(bytes)
            }
            7 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("bytes_value"))?;
                AttrValue::Bytes(bytes)
            }
            _ => {
                r.skip(field, wt)?;
                value
            }
        };
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

fn scan_array(buf: &[u8], base: usize, level: usize) -> WireResult<()> {
    if level > MAX_LEVELS {
        return Err(Fail::too_deep(base, "attribute values"));
    }
    let mut r = Reader::at_level(buf, base, level);
    let mut mistyped_field: Option<Fail> = None;
    let mut index = 0usize;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::REPEATED_MESSAGE, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        if field == 1 {
            let label = || format!("values[{index}]");
            let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
            scan_any_value(bytes, off, level + 1).map_err(|e| e.within(label()))?;
            index += 1;
        } else {
            r.skip(field, wt)?;
        }
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn scan_kvlist(buf: &[u8], base: usize, level: usize) -> WireResult<()> {
    if level > MAX_LEVELS {
        return Err(Fail::too_deep(base, "attribute values"));
    }
    let mut r = Reader::at_level(buf, base, level);
    let mut mistyped_field: Option<Fail> = None;
    let mut index = 0usize;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::REPEATED_MESSAGE, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        if field == 1 {
            let label = || format!("values[{index}]");
            let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
            scan_key_value(bytes, off, level + 1).map_err(|e| e.within(label()))?;
            index += 1;
        } else {
            r.skip(field, wt)?;
        }
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Validates the attributes of a message we do not extract from (events, links, scopes).
fn scan_plain_attribute(r: &mut Reader<'_>, index: usize) -> WireResult<()> {
    let label = || format!("attributes[{index}]");
    let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
    scan_key_value(bytes, off, r.level() + 1).map_err(|e| e.within(label()))?;
    Ok(())
}

/// `path`: (resource_spans index, `scope_spans` or `instrumentation_library_spans`, its index), to name a
/// rejected span.
fn scan_scope_spans<'a>(
    buf: &'a [u8],
    base: usize,
    rid: u32,
    path: (usize, &'static str, usize),
    keys: &AttrKeys,
    out: &mut Decoded<'a>,
) -> WireResult<()> {
    let here = || format!("resource_spans[{}].{}[{}]", path.0, path.1, path.2);
    let first_span = out.spans.len();
    let mut too_deep: Option<Fail> = None;
    let sid = out.scopes.len();
    out.scopes.push(ScopeView {
        resource: rid,
        raw: None,
        name: "",
        schema_url: "",
    });
    let mut r = Reader::at_level(buf, base, L_SCOPE_SPANS);
    let mut span_index = 0usize;
    while !r.is_empty() {
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::SCOPE_SPANS, field, wt) {
            r.skip(field, wt)?;
            continue;
        }
        match field {
            1 => {
                let (bytes, off) = r.read_len().map_err(|e| e.at_field("scope"))?;
                let name = match scan_scope(bytes, off) {
                    Ok(name) => name,
                    // Every span of this scope is rejected, below.
                    Err(e) if e.reject.is_some() => {
                        too_deep.get_or_insert(e);
                        continue;
                    }
                    Err(e) => return Err(e.within("scope")),
                };
                let scope = &mut out.scopes[sid];
                if let Some(name) = name {
                    scope.name = name;
                }
                merge(&mut scope.raw, bytes);
            }
            2 => {
                let label = || format!("spans[{span_index}]");
                let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
                let first_attr = out.span_attrs.len();
                out.span_attrs
                    .extend(std::iter::repeat_n(AttrValue::Absent, keys.len()));
                match scan_span(
                    bytes,
                    off,
                    sid as u32,
                    keys,
                    &mut out.span_attrs[first_attr..],
                ) {
                    Ok(span) => out.spans.push(span),
                    // Rejected alone: the rest of the request stands.
                    Err(e) if e.reject.is_some() => {
                        out.span_attrs.truncate(first_attr);
                        out.reject(1, || format!("{}.{}", here(), label()), &e);
                    }
                    Err(e) => return Err(e.within(label())),
                }
                span_index += 1;
            }
            3 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("schema_url"))?;
                out.scopes[sid].schema_url = text(bytes);
            }
            _ => r.skip(field, wt)?,
        }
    }
    if let Some(e) = too_deep {
        out.reject_from(first_span, || format!("{}.scope", here()), &e);
    }
    Ok(())
}

/// Validates an `InstrumentationScope`; returns its name if set.
fn scan_scope(buf: &[u8], base: usize) -> WireResult<Option<&str>> {
    let mut r = Reader::at_level(buf, base, L_SCOPE);
    let mut mistyped_field: Option<Fail> = None;
    let mut name = None;
    let mut index = 0usize;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::SCOPE, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        match field {
            1 | 2 => {
                let label = if field == 1 { "name" } else { "version" };
                let (bytes, _) = r.read_len().map_err(|e| e.at_field(label))?;
                let s = text(bytes);
                if field == 1 {
                    name = Some(s);
                }
            }
            3 => {
                scan_plain_attribute(&mut r, index)?;
                index += 1;
            }
            4 => {
                r.read_varint()
                    .map_err(|e| e.at_field("dropped_attributes_count"))?;
            }
            _ => r.skip(field, wt)?,
        }
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(name),
    }
}

/// Keeps the first rejection of a span (`Fail::reject`) while its scan goes on; anything else is returned.
#[inline]
fn pending(first: &mut Option<Fail>, e: Fail) -> WireResult<()> {
    if e.reject.is_none() {
        return Err(e);
    }
    first.get_or_insert(e);
    Ok(())
}

/// An ID field: `None` when empty, the ID when `N` bytes; any other length rejects the span holding it with
/// `reason` (every protobuf runtime parses it, but pdata refuses the request holding it, so the span could be
/// neither used nor passed on).
fn read_id<const N: usize>(
    bytes: &[u8],
    off: usize,
    name: &str,
    reason: RejectReason,
) -> WireResult<Option<[u8; N]>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    match <[u8; N]>::try_from(bytes) {
        Ok(id) => Ok(Some(id)),
        Err(_) => Err(Fail::rejecting(
            off,
            reason,
            format!("{name} must be {N} bytes or empty, got {}", bytes.len()),
        )),
    }
}

fn scan_span<'a>(
    buf: &'a [u8],
    base: usize,
    sid: u32,
    keys: &AttrKeys,
    attrs: &mut [AttrValue<'a>],
) -> WireResult<SpanView<'a>> {
    let mut r = Reader::at_level(buf, base, L_SPAN);
    // IDs are remembered as raw slices and checked at the end: a repeated field's last occurrence wins.
    let mut trace_id: (&[u8], usize) = (&[], base);
    let mut span_id: (&[u8], usize) = (&[], base);
    let mut parent: (&[u8], usize) = (&[], base);
    let mut span = SpanView {
        scope: sid,
        raw: buf,
        offset: base,
        trace_id: [0; 16],
        span_id: [0; 8],
        parent_span_id: None,
        name: "",
        kind: 0,
        start_time_unix_nano: 0,
        end_time_unix_nano: 0,
        status_code: 0,
        trace_state: "",
        flags: 0,
    };
    // The first reason to reject the span, kept while the rest of it is validated: malformed bytes after it
    // still refuse the request (a rejection never hides them).
    let mut rejected: Option<Fail> = None;
    let mut attr_index = 0usize;
    let mut event_index = 0usize;
    let mut link_index = 0usize;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::SPAN, field, wt) {
            r.skip(field, wt)?;
            pending(&mut rejected, Fail::wire_type(at, field, wt))?;
            continue;
        }
        match field {
            1 | 2 | 4 => {
                let label = match field {
                    1 => "trace_id",
                    2 => "span_id",
                    _ => "parent_span_id",
                };
                let v = r.read_len().map_err(|e| e.at_field(label))?;
                match field {
                    1 => trace_id = v,
                    2 => span_id = v,
                    _ => parent = v,
                }
            }
            3 | 5 => {
                let label = if field == 3 { "trace_state" } else { "name" };
                let (bytes, _) = r.read_len().map_err(|e| e.at_field(label))?;
                let s = text(bytes);
                if field == 3 {
                    span.trace_state = s;
                } else {
                    span.name = s;
                }
            }
            6 => {
                span.kind = r.read_varint().map_err(|e| e.at_field("kind"))? as i32;
            }
            7 => {
                span.start_time_unix_nano = r
                    .read_fixed64()
                    .map_err(|e| e.at_field("start_time_unix_nano"))?;
            }
            8 => {
                span.end_time_unix_nano = r
                    .read_fixed64()
                    .map_err(|e| e.at_field("end_time_unix_nano"))?;
            }
            // Attributes come in a run: read it whole here (0x4a: field 9, length-delimited).
            9 => loop {
                match scan_attribute(&mut r, attr_index, keys, attrs) {
                    Ok(next) => attr_index = next,
                    Err(e) => {
                        attr_index += 1;
                        pending(&mut rejected, e)?;
                    }
                }
                if !r.next_tag_is(0x4a) {
                    break;
                }
            },
            10 | 12 | 14 => {
                let label = match field {
                    10 => "dropped_attributes_count",
                    12 => "dropped_events_count",
                    _ => "dropped_links_count",
                };
                r.read_varint().map_err(|e| e.at_field(label))?;
            }
            11 => {
                let label = || format!("events[{event_index}]");
                let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
                if let Err(e) = scan_event(bytes, off) {
                    pending(&mut rejected, e.within(label()))?;
                }
                event_index += 1;
            }
            13 => {
                let label = || format!("links[{link_index}]");
                let (bytes, off) = r.read_len().map_err(|e| e.within(label()))?;
                if let Err(e) = scan_link(bytes, off) {
                    pending(&mut rejected, e.within(label()))?;
                }
                link_index += 1;
            }
            15 => {
                let (bytes, off) = r.read_len().map_err(|e| e.at_field("status"))?;
                match scan_status(bytes, off) {
                    Ok(Some(code)) => span.status_code = code,
                    Ok(None) => {}
                    Err(e) => pending(&mut rejected, e.within("status"))?,
                }
            }
            16 => {
                span.flags = r.read_fixed32().map_err(|e| e.at_field("flags"))?;
            }
            _ => r.skip(field, wt)?,
        }
    }
    if let Some(e) = rejected {
        return Err(e);
    }
    // A span without a usable trace ID cannot join a trace: rejected alone (pdata would read an empty or
    // all-zero ID as the one trace ID zero, shared by every such span of every sender).
    let tid = read_id::<16>(
        trace_id.0,
        trace_id.1,
        "trace_id",
        RejectReason::InvalidTraceId,
    )
    .map_err(|e| e.at_field("trace_id"))?;
    span.trace_id = match tid {
        Some(id) if id != [0; 16] => id,
        Some(_) => {
            return Err(Fail::rejecting(
                trace_id.1,
                RejectReason::InvalidTraceId,
                "trace_id is all zeros (an invalid trace ID)",
            )
            .at_field("trace_id"))
        }
        None => {
            return Err(Fail::rejecting(
                trace_id.1,
                RejectReason::InvalidTraceId,
                "trace_id is empty or absent",
            )
            .at_field("trace_id"))
        }
    };
    // An empty span ID is taken, as pdata takes it (all zeros).
    span.span_id = read_id(span_id.0, span_id.1, "span_id", RejectReason::IdLength)
        .map_err(|e| e.at_field("span_id"))?
        .unwrap_or_default();
    let p: Option<[u8; 8]> = read_id(parent.0, parent.1, "parent_span_id", RejectReason::IdLength)
        .map_err(|e| e.at_field("parent_span_id"))?;
    // An all-zero parent is an invalid span ID, which pdata treats as empty: the span is a root.
    span.parent_span_id = p.filter(|id| *id != [0; 8]);
    Ok(span)
}

fn scan_event(buf: &[u8], base: usize) -> WireResult<()> {
    let mut r = Reader::at_level(buf, base, L_SPAN_PART);
    let mut mistyped_field: Option<Fail> = None;
    let mut index = 0usize;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::EVENT, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        match field {
            1 => {
                r.read_fixed64().map_err(|e| e.at_field("time_unix_nano"))?;
            }
            2 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("name"))?;
                text(bytes);
            }
            3 => {
                scan_plain_attribute(&mut r, index)?;
                index += 1;
            }
            4 => {
                r.read_varint()
                    .map_err(|e| e.at_field("dropped_attributes_count"))?;
            }
            _ => r.skip(field, wt)?,
        }
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn scan_link(buf: &[u8], base: usize) -> WireResult<()> {
    let mut r = Reader::at_level(buf, base, L_SPAN_PART);
    let mut mistyped_field: Option<Fail> = None;
    let mut index = 0usize;
    // IDs are checked once the whole link is validated (a repeated field's last occurrence wins).
    let mut trace_id: (&[u8], usize) = (&[], base);
    let mut span_id: (&[u8], usize) = (&[], base);
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::LINK, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        match field {
            1 => trace_id = r.read_len().map_err(|e| e.at_field("trace_id"))?,
            2 => span_id = r.read_len().map_err(|e| e.at_field("span_id"))?,
            3 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("trace_state"))?;
                text(bytes);
            }
            4 => {
                scan_plain_attribute(&mut r, index)?;
                index += 1;
            }
            5 => {
                r.read_varint()
                    .map_err(|e| e.at_field("dropped_attributes_count"))?;
            }
            6 => {
                r.read_fixed32().map_err(|e| e.at_field("flags"))?;
            }
            _ => r.skip(field, wt)?,
        }
    }
    read_id::<16>(trace_id.0, trace_id.1, "trace_id", RejectReason::IdLength)
        .map_err(|e| e.at_field("trace_id"))?;
    read_id::<8>(span_id.0, span_id.1, "span_id", RejectReason::IdLength)
        .map_err(|e| e.at_field("span_id"))?;
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Validates a `Status`; returns its code if set.
fn scan_status(buf: &[u8], base: usize) -> WireResult<Option<i32>> {
    let mut r = Reader::at_level(buf, base, L_SPAN_PART);
    let mut mistyped_field: Option<Fail> = None;
    let mut code = None;
    while !r.is_empty() {
        let at = r.offset();
        let (field, wt) = r.read_tag()?;
        if mistyped(&wt::STATUS, field, wt) {
            r.skip(field, wt)?;
            mistyped_field.get_or_insert_with(|| Fail::wire_type(at, field, wt));
            continue;
        }
        match field {
            1 => {
                r.read_varint().map_err(|e| e.at_field("deprecated_code"))?;
            }
            2 => {
                let (bytes, _) = r.read_len().map_err(|e| e.at_field("message"))?;
                text(bytes);
            }
            3 => {
                code = Some(r.read_varint().map_err(|e| e.at_field("code"))? as i32);
            }
            _ => r.skip(field, wt)?,
        }
    }
    match mistyped_field {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

/// Calls `f(name, attributes)` for each event of an already validated span (its raw bytes), with the event
/// attributes whose keys are in `keys` (`Absent` for the others). Used by policies that look at span events;
/// the span was validated at ingest, so a malformed event here is skipped rather than reported.
pub fn for_each_event<'a>(
    span_raw: &'a [u8],
    keys: &AttrKeys,
    mut f: impl FnMut(&'a str, &[AttrValue<'a>]),
) {
    let mut attrs: Vec<AttrValue<'a>> = vec![AttrValue::Absent; keys.len()];
    let mut r = Reader::at_level(span_raw, 0, L_SPAN);
    while !r.is_empty() {
        let Ok((field, wt)) = r.read_tag() else {
            return;
        };
        if field != 11 || wt != WireType::Len {
            if r.skip(field, wt).is_err() {
                return;
            }
            continue;
        }
        let Ok((event, off)) = r.read_len() else {
            return;
        };
        attrs.iter_mut().for_each(|a| *a = AttrValue::Absent);
        let mut name = "";
        let mut e = Reader::at_level(event, off, L_SPAN_PART);
        let mut index = 0usize;
        while !e.is_empty() {
            let Ok((ef, ewt)) = e.read_tag() else { break };
            match ef {
                2 if ewt == WireType::Len => match e.read_len() {
                    Ok((b, _)) => name = text(b),
                    Err(_) => break,
                },
                3 if ewt == WireType::Len => {
                    match scan_attribute(&mut e, index, keys, &mut attrs) {
                        Ok(next) => index = next,
                        Err(_) => break,
                    }
                }
                _ => {
                    if e.skip(ef, ewt).is_err() {
                        break;
                    }
                }
            }
        }
        f(name, &attrs);
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    fn kv(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x0a, key.len() as u8];
        out.extend_from_slice(key);
        out.push(0x12);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
        out
    }

    /// Whatever the fast path accepts, the general path reads the same way; what it declines, it declines.
    #[test]
    fn fast_path_agrees_with_the_general_path() {
        let cases: Vec<Vec<u8>> = vec![
            kv(b"http.route", b"\x0a\x05/cart"),
            kv(b"k", b""),
            kv(b"", b"\x0a\x00"),
            kv(b"n", b"\x18\x7f"),
            kv(b"n", b"\x18\x80\x01"),
            kv(b"server.port", b"\x18\xbb\x03"), // 443
            kv(b"n", b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), // -1: ten bytes
            kv(b"n", b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"), // bits past 64 dropped
            kv(b"n", b"\x18\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"), // 11 bytes: an error
            kv(b"n", b"\x18\x80"),               // truncated varint: an error
            kv(b"n", b"\x18\x01\x01"),           // a varint, then a stray byte: an error
            kv(b"n", b"\x18"),                   // no varint: an error
            kv(b"b", b"\x10\x01"),
            kv(b"b", b"\x10\x00"),
            kv(b"b", b"\x10\x81\x00"), // two-byte bool: general path
            kv(b"d", b"\x21\0\0\0\0\0\0\xf0\x3f"),
            kv(b"d", b"\x21\0\0\0\0\0\0\xf0"), // short double: an error
            kv(b"d", b"\x21\0\0\0\0\0\0\xf0\x3f\x18\x01"), // two value fields, last wins
            kv(b"s", b"\x0a\x02\xc3\xa9"),     // non-ASCII string
            kv(b"s", b"\x0a\x02\xc3\x28"),     // not UTF-8: reads as ""
            kv(b"\xc3\xa9", b"\x0a\x01x"),     // non-ASCII key
            kv(b"\xff\xfe", b"\x0a\x01x"),     // a key not UTF-8: its bytes
            kv(b"s", b"\x0a\x01x\x18\x01"),    // two value fields, last wins: general path
            vec![0x12, 0x02, 0x18, 0x01, 0x0a, 0x01, b'k'], // value before key: general path
        ];
        for buf in &cases {
            let fast = fast_key_value(buf).map(|(k, v)| (k, v.read()));
            match (fast, scan_key_value_general(buf, 0, 0)) {
                (Some(fast), Ok(general)) => assert_eq!(fast, general, "{buf:?}"),
                (Some(fast), Err(e)) => panic!("fast path read {fast:?} from {buf:?}: {e:?}"),
                (None, general) => {
                    let read = scan_key_value(buf, 0, 0).map(|(k, v)| (k, v.read()));
                    assert_eq!(read, general, "{buf:?}")
                }
            }
            assert_eq!(
                scan_key_value(buf, 0, 0).is_ok(),
                scan_key_value_general(buf, 0, 0).is_ok(),
                "{buf:?}"
            );
        }
        assert_eq!(
            fast_key_value(&kv(b"s", b"\x0a\x02\xc3\x28")).map(|(_, v)| v.read()),
            Some(AttrValue::Str(""))
        );
        let int = |buf: &[u8]| match fast_key_value(buf) {
            Some((_, Scanned::Int(n))) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(int(&kv(b"server.port", b"\x18\xbb\x03")), 443);
        assert_eq!(
            int(&kv(b"n", b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")),
            -1
        );
        assert!(fast_key_value(&kv(b"http.route", b"\x0a\x05/cart")).is_some());
        assert!(fast_key_value(&kv(b"d", b"\x21\0\0\0\0\0\0\xf0\x3f")).is_some());
        assert!(fast_key_value(&kv(b"b", b"\x10\x81\x00")).is_none());
        // malformed: the fast path declines, the general path names the error
        let truncated = &kv(b"key", b"\x0a\x05/ca")[..];
        assert!(fast_key_value(truncated).is_none());
        assert!(scan_key_value(truncated, 0, 0).is_err());
    }
}

/// Builders of `AnyValue` bytes for tests (here and in the policies' tests).
#[cfg(test)]
pub(crate) mod any_value {
    use super::AttrValue;

    /// The value as ingest scans it (validated).
    pub fn scan(value: &[u8]) -> AttrValue<'_> {
        super::scan_any_value(value, 0, 0).expect("a valid AnyValue")
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn len_field(field: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(field << 3 | 2), &mut out);
        varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }
    pub fn str(s: &str) -> Vec<u8> {
        len_field(1, s.as_bytes())
    }
    pub fn boolean(b: bool) -> Vec<u8> {
        vec![0x10, u8::from(b)]
    }
    pub fn int(i: i64) -> Vec<u8> {
        let mut out = vec![0x18];
        varint(i as u64, &mut out);
        out
    }
    pub fn double(f: f64) -> Vec<u8> {
        let mut out = vec![0x21];
        out.extend_from_slice(&f.to_bits().to_le_bytes());
        out
    }
    /// The `ArrayValue` message of these `AnyValue`s (what `AttrValue::Array` holds).
    pub fn array_body(values: &[Vec<u8>]) -> Vec<u8> {
        values.iter().flat_map(|v| len_field(1, v)).collect()
    }
    /// The `KeyValueList` message of these entries (what `AttrValue::Map` holds).
    pub fn map_body(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(k, v)| {
                let mut kv = len_field(1, k.as_bytes());
                kv.extend(len_field(2, v));
                len_field(1, &kv)
            })
            .collect()
    }
    /// An `AnyValue` holding an array.
    pub fn array(values: &[Vec<u8>]) -> Vec<u8> {
        len_field(5, &array_body(values))
    }
    /// An `AnyValue` holding a map.
    pub fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        len_field(6, &map_body(entries))
    }
    /// A `KeyValue` attribute.
    pub fn key_value(key: &str, value: &[u8]) -> Vec<u8> {
        let mut kv = len_field(1, key.as_bytes());
        kv.extend(len_field(2, value));
        kv
    }
}

#[cfg(test)]
mod lazy_value_tests {
    use super::any_value as av;
    use super::*;

    fn scanned(value: &[u8]) -> AttrValue<'_> {
        scan_any_value(value, 0, 0).expect("valid")
    }

    /// Scenario: an array value of every element type, scanned as ingest scans it.
    /// Guarantees: the value keeps its raw bytes and its elements read back in order, nested ones raw again.
    #[test]
    fn array_elements_read_back_in_order() {
        let nested = av::array(&[av::str("n")]);
        let value = av::array(&[
            av::str("true"),
            av::int(-7),
            av::boolean(true),
            av::double(1.5),
            vec![],
            nested.clone(),
            av::map(&[("k", av::int(1))]),
        ]);
        let v = scanned(&value);
        assert!(matches!(v, AttrValue::Array(_)));
        let got: Vec<AttrValue<'_>> = v.elements().collect();
        assert_eq!(got.len(), 7);
        assert_eq!(
            got[..5],
            [
                AttrValue::Str("true"),
                AttrValue::Int(-7),
                AttrValue::Bool(true),
                AttrValue::Double(1.5),
                AttrValue::Empty
            ]
        );
        assert_eq!(got[5].elements().collect::<Vec<_>>(), [AttrValue::Str("n")]);
        assert_eq!(got[6].get("k"), AttrValue::Int(1));
        assert_eq!(scanned(&av::array(&[])).elements().count(), 0);
        // Scalars have no elements or entries.
        assert_eq!(AttrValue::Str("a").elements().count(), 0);
        assert_eq!(AttrValue::Str("a").get("a"), AttrValue::Absent);
    }

    /// Scenario: a map value with a repeated key. Guarantees: `get` answers the first, as `pcommon.Map.Get`;
    /// a missing key is `Absent`; `entries` lists every entry in order.
    #[test]
    fn map_get_answers_the_first_entry() {
        let value = av::map(&[("a", av::str("x")), ("b", av::int(2)), ("a", av::str("y"))]);
        let v = scanned(&value);
        assert_eq!(v.get("a"), AttrValue::Str("x"));
        assert_eq!(v.get("b"), AttrValue::Int(2));
        assert_eq!(v.get("c"), AttrValue::Absent);
        assert_eq!(
            v.entries().map(|(k, _)| k).collect::<Vec<_>>(),
            ["a", "b", "a"]
        );
    }

    /// Scenario: a request whose span carries the header both as an array and, later, in the other spelling.
    /// Guarantees: the first occurrence of either spelling fills the slot, with the array's bytes.
    #[test]
    fn decode_keeps_the_first_spelling_and_the_array_bytes() {
        let mut span = vec![0x0a, 16];
        span.extend([1u8; 16]);
        span.extend([0x12, 8]);
        span.extend([2u8; 8]);
        for kv in [
            av::key_value(
                "http.request.header.x_force_trace",
                &av::array(&[av::str("true")]),
            ),
            av::key_value("http.request.header.x-force-trace", &av::str("false")),
        ] {
            span.push(0x4a);
            span.push(kv.len() as u8);
            span.extend(kv);
        }
        let mut scope = vec![0x12, span.len() as u8];
        scope.extend(&span);
        let mut rs = vec![0x12, scope.len() as u8];
        rs.extend(&scope);
        let mut req = vec![0x0a, rs.len() as u8];
        req.extend(&rs);
        let keys = AttrKeys::new(["http.request.header.x-force-trace"]);
        let d = decode(&req, &keys).expect("valid");
        let v = d.span_attr(0, 0);
        assert_eq!(v.elements().collect::<Vec<_>>(), [AttrValue::Str("true")]);
        let strict = AttrKeys::new_strict(["http.request.header.x-force-trace"]);
        let d = decode(&req, &strict).expect("valid");
        assert_eq!(d.span_attr(0, 0), AttrValue::Str("false"));
    }
}

#[cfg(test)]
mod nesting_tests {
    use super::any_value as av;
    use super::*;

    fn len_field(field: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![field << 3 | 2];
        crate::otlp::wire::put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
        out
    }
    /// A span of trace byte `t` with `extra` fields.
    fn span(t: u8, extra: &[u8]) -> Vec<u8> {
        let mut s = len_field(1, &[t; 16]);
        s.extend(len_field(2, &[t; 8]));
        s.extend_from_slice(extra);
        s
    }
    /// A request of one resource (`resource` fields), one scope (`scope` fields) and these spans.
    fn request(resource: &[u8], scope: &[u8], spans: &[Vec<u8>]) -> Vec<u8> {
        let mut ss = len_field(1, scope);
        for s in spans {
            ss.extend(len_field(2, s));
        }
        let mut rs = len_field(1, resource);
        rs.extend(len_field(2, &ss));
        len_field(1, &rs)
    }
    /// An `AnyValue` of `n` kvlists around an int: its deepest message is 3n levels below it.
    fn kvlists(n: usize) -> Vec<u8> {
        (0..n).fold(av::int(1), |v, _| av::map(&[("k", v)]))
    }
    /// An `AnyValue` of `n` arrays around an int: 2n levels below it.
    fn arrays(n: usize) -> Vec<u8> {
        (0..n).fold(av::int(1), |v, _| av::array(&[v]))
    }
    fn attr(value: &[u8]) -> Vec<u8> {
        len_field(9, &av::key_value("deep", value))
    }
    fn event_attr(value: &[u8]) -> Vec<u8> {
        len_field(11, &len_field(3, &av::key_value("deep", value)))
    }
    fn decoded(req: &[u8]) -> (usize, usize, String) {
        let d = decode(req, &AttrKeys::new(["deep"])).expect("valid protobuf");
        (
            d.spans.len(),
            d.rejected_spans,
            d.rejection.unwrap_or_default(),
        )
    }

    /// Scenario: a span attribute, and an event attribute, of nested kvlists or arrays, at the deepest
    /// nesting within `MAX_LEVELS` and one step past it, beside a plain span. Levels: request 1, ResourceSpans 2,
    /// ScopeSpans 3, Span 4, KeyValue 5, AnyValue 6 (an event's 7); a kvlist adds 3 (KeyValueList, KeyValue,
    /// AnyValue), an array 2. Guarantees: one rule for both kinds: within 64 levels taken; past them the
    /// span alone rejected, counted, with its path and the reason; the plain span taken.
    #[test]
    fn every_value_kind_obeys_one_level_limit() {
        let cases: [(&str, Vec<u8>, Vec<u8>); 4] = [
            (
                "kvlist 19 (63 levels) / 20 (66)",
                attr(&kvlists(19)),
                attr(&kvlists(20)),
            ),
            (
                "array 29 (64 levels) / 30 (66)",
                attr(&arrays(29)),
                attr(&arrays(30)),
            ),
            (
                "event kvlist 19 (64) / 20 (67)",
                event_attr(&kvlists(19)),
                event_attr(&kvlists(20)),
            ),
            (
                "event array 28 (63) / 29 (65)",
                event_attr(&arrays(28)),
                event_attr(&arrays(29)),
            ),
        ];
        for (name, ok, over) in cases {
            let req = request(b"", b"", &[span(1, &ok), span(2, b"")]);
            assert_eq!(decoded(&req), (2, 0, String::new()), "{name}");
            let req = request(b"", b"", &[span(1, b""), span(2, &over), span(3, b"")]);
            let (taken, rejected, why) = decoded(&req);
            assert_eq!((taken, rejected), (2, 1), "{name}");
            assert!(
                why.starts_with("resource_spans[0].scope_spans[0].spans[1]."),
                "{name}: {why}"
            );
            assert!(
                why.contains("nested deeper than 64 protobuf message levels"),
                "{name}: {why}"
            );
            let d = decode(&req, &AttrKeys::default()).unwrap();
            assert_eq!(d.spans[1].trace_id, [3; 16], "{name}");
        }
    }

    /// Scenario: the probe's kvlist 32 deep (102 levels, over every runtime's 100), once on a span, once on
    /// the resource and once on the scope of a request that also holds good spans elsewhere.
    /// Guarantees: the span alone is rejected; a resource or scope over the limit rejects the spans under it
    /// (counted), and only those.
    #[test]
    fn resource_and_scope_over_the_limit_reject_their_spans() {
        let deep = av::key_value("deep", &kvlists(32));
        let good = request(b"", b"", &[span(9, b"")]);
        // A resource's attributes: Resource 3, KeyValue 4, AnyValue 5.
        let mut req = request(&len_field(1, &deep), b"", &[span(1, b""), span(2, b"")]);
        req.extend(&good);
        let (taken, rejected, why) = decoded(&req);
        assert_eq!((taken, rejected), (1, 2));
        assert!(
            why.starts_with("resource_spans[0].resource.attributes[0]: "),
            "{why}"
        );
        // A scope's attributes (field 3): InstrumentationScope 4, KeyValue 5.
        let mut req = good.clone();
        req.extend(request(
            b"",
            &len_field(3, &deep),
            &[span(1, b""), span(2, b""), span(3, b"")],
        ));
        let (taken, rejected, why) = decoded(&req);
        assert_eq!((taken, rejected), (1, 3));
        assert!(
            why.starts_with("resource_spans[1].scope_spans[0].scope.attributes[0]: "),
            "{why}"
        );
        // The resource just within the limit: KeyValue at 4, so 19 kvlists reach 5 + 57 = 62.
        let req = request(
            &len_field(1, &av::key_value("k", &kvlists(19))),
            b"",
            &[span(1, b"")],
        );
        assert_eq!(decoded(&req), (1, 0, String::new()));
    }

    /// Scenario: unknown groups nested in a span: to level 64, and one past it; then 20,000 deep.
    /// Guarantees: groups count as levels too; the span over the limit is rejected alone, without recursion
    /// past the limit.
    #[test]
    fn groups_count_as_levels() {
        let groups = |n: usize| -> Vec<u8> {
            let mut g = [0x93, 0x06].repeat(n); // field 50, start group (two-byte tag)
            g.extend([0x94, 0x06].repeat(n));
            g
        };
        let req = request(b"", b"", &[span(1, &groups(60)), span(2, b"")]);
        assert_eq!(decoded(&req).0, 2);
        for n in [61, 20_000] {
            let req = request(b"", b"", &[span(1, &groups(n)), span(2, b"")]);
            let (taken, rejected, why) = decoded(&req);
            assert_eq!((taken, rejected), (1, 1), "{n}");
            assert!(why.contains("groups nested deeper than 64"), "{why}");
        }
    }

    /// Scenario: malformed bytes after a too-deep value in another span, and a request whose only span is over
    /// the limit. Guarantees: malformed data still refuses the whole request; a request of rejected spans alone
    /// is valid, with nothing taken.
    #[test]
    fn rejection_never_hides_malformed_data() {
        let mut bad = span(2, b"");
        bad.extend([0x2a, 0x05, b'a']); // name runs past the end
        let req = request(b"", b"", &[span(1, &attr(&kvlists(30))), bad]);
        assert!(decode(&req, &AttrKeys::default()).is_err());
        let req = request(b"", b"", &[span(1, &attr(&arrays(40)))]);
        assert_eq!(decoded(&req).0..decoded(&req).1, 0..1);
    }
}
