//! Re-encoding kept spans as `ExportTraceServiceRequest` payloads.
//!
//! Spans are stored already framed as `ScopeSpans.spans` entries (tag, length, the span's exact bytes), so
//! encoding is copying: chunks are grouped under their resource and scope (first appearance first), and each
//! `ResourceSpans`/`ScopeSpans` gets its original resource/scope bytes and schema URLs. Payloads are cut before
//! they would pass `max_bytes`, between chunks or between the spans of a chunk (never inside a span: a single
//! larger span gets a payload of its own, reported to the caller).

use std::collections::HashMap;
use std::sync::Arc;

use super::wire::{len_field_size, put_len_header, Reader, WireType};
use crate::store::intern::{Origin, Resource};

/// A run of framed spans that share an origin.
pub struct OutChunk<'a> {
    pub origin: &'a Arc<Origin>,
    pub framed: &'a [u8],
    /// The spans `framed` holds, so each payload knows its span count without being read again.
    pub spans: u32,
}

/// One payload of kept spans and what it holds: callers count spans for their metrics without decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub payload: Vec<u8>,
    pub spans: usize,
    pub resource_spans: usize,
}

/// Upper bound of a length-delimited header (1 tag byte for fields < 16, ≤ 5 length bytes).
const HEADER_MAX: usize = 6;

struct ScopeGroup<'a> {
    origin: &'a Origin,
    chunks: Vec<&'a [u8]>,
    content: usize,
}

struct ResourceGroup<'a> {
    resource: &'a Resource,
    scopes: Vec<ScopeGroup<'a>>,
}

fn scope_content(o: &Origin, spans: usize) -> usize {
    let mut n = spans;
    if let Some(raw) = &o.raw {
        n += len_field_size(1, raw.len());
    }
    if !o.schema_url.is_empty() {
        n += len_field_size(3, o.schema_url.len());
    }
    n
}

fn resource_content(r: &Resource, scopes: &[ScopeGroup<'_>]) -> usize {
    let mut n = 0;
    if let Some(raw) = &r.raw {
        n += len_field_size(1, raw.len());
    }
    for s in scopes {
        n += len_field_size(2, scope_content(s.origin, s.content));
    }
    if !r.schema_url.is_empty() {
        n += len_field_size(3, r.schema_url.len());
    }
    n
}

fn write_payload(groups: &[ResourceGroup<'_>]) -> Vec<u8> {
    let total: usize = groups
        .iter()
        .map(|g| len_field_size(1, resource_content(g.resource, &g.scopes)))
        .sum();
    let mut out = Vec::with_capacity(total);
    for g in groups {
        put_len_header(&mut out, 1, resource_content(g.resource, &g.scopes));
        if let Some(raw) = &g.resource.raw {
            put_len_header(&mut out, 1, raw.len());
            out.extend_from_slice(raw);
        }
        for s in &g.scopes {
            put_len_header(&mut out, 2, scope_content(s.origin, s.content));
            if let Some(raw) = &s.origin.raw {
                put_len_header(&mut out, 1, raw.len());
                out.extend_from_slice(raw);
            }
            for c in &s.chunks {
                out.extend_from_slice(c);
            }
            if !s.origin.schema_url.is_empty() {
                put_len_header(&mut out, 3, s.origin.schema_url.len());
                out.extend_from_slice(s.origin.schema_url.as_bytes());
            }
        }
        if !g.resource.schema_url.is_empty() {
            put_len_header(&mut out, 3, g.resource.schema_url.len());
            out.extend_from_slice(g.resource.schema_url.as_bytes());
        }
    }
    debug_assert_eq!(out.len(), total);
    out
}

/// The payload being built: resource groups, where each resource and origin sits, and an upper bound of its size.
struct Builder<'a> {
    max_bytes: usize,
    payloads: Vec<Kept>,
    /// Spans in the payload being built.
    spans: usize,
    groups: Vec<ResourceGroup<'a>>,
    res_index: HashMap<*const Resource, usize>,
    origin_index: HashMap<*const Origin, (usize, usize)>,
    estimate: usize,
}

impl<'a> Builder<'a> {
    /// What adding `framed` bytes under `origin` adds to the payload (headers bounded by `HEADER_MAX`).
    fn cost(&self, origin: &Origin, framed: usize) -> usize {
        let mut added = framed;
        if !self.origin_index.contains_key(&(origin as *const _)) {
            added += HEADER_MAX + scope_content(origin, 0);
            let resource: &Resource = &origin.resource;
            if !self.res_index.contains_key(&(resource as *const _)) {
                added += HEADER_MAX + resource_content(resource, &[]);
            }
        }
        added
    }

    fn fits(&self, origin: &Origin, framed: usize) -> bool {
        self.estimate + self.cost(origin, framed) <= self.max_bytes
    }

    fn add(&mut self, origin: &'a Origin, framed: &'a [u8], spans: usize) {
        self.estimate += self.cost(origin, framed.len());
        self.spans += spans;
        let resource: &Resource = &origin.resource;
        let groups = &mut self.groups;
        let ri = *self
            .res_index
            .entry(resource as *const _)
            .or_insert_with(|| {
                groups.push(ResourceGroup {
                    resource,
                    scopes: Vec::new(),
                });
                groups.len() - 1
            });
        let (gi, si) = *self
            .origin_index
            .entry(origin as *const _)
            .or_insert_with(|| {
                groups[ri].scopes.push(ScopeGroup {
                    origin,
                    chunks: Vec::new(),
                    content: 0,
                });
                (ri, groups[ri].scopes.len() - 1)
            });
        let s = &mut self.groups[gi].scopes[si];
        s.chunks.push(framed);
        s.content += framed.len();
    }

    fn flush(&mut self) {
        if !self.groups.is_empty() {
            self.payloads.push(Kept {
                payload: write_payload(&self.groups),
                spans: self.spans,
                resource_spans: self.groups.len(),
            });
            self.spans = 0;
            self.groups.clear();
            self.res_index.clear();
            self.origin_index.clear();
            self.estimate = 0;
        }
    }

    /// A chunk that does not fit the payload being built, cut between its spans: each piece fills the current
    /// payload, the next starts a new one. A span too large for any payload leaves alone (`on_oversized`).
    fn add_cut(
        &mut self,
        origin: &'a Origin,
        framed: &'a [u8],
        on_oversized: &mut impl FnMut(u128, usize),
    ) {
        let mut r = Reader::new(framed, 0);
        let (mut start, mut end) = (0usize, 0usize);
        // Spans in framed[start..end], the piece not added yet.
        let mut pending = 0usize;
        while !r.is_empty() {
            // Chunks are framed by this crate (tag 2, length, span), so these reads cannot fail.
            let Ok((_, _)) = r.read_tag() else { break };
            let Ok((span, _)) = r.read_len() else { break };
            let next = r.offset();
            if self.fits(origin, next - start) {
                end = next;
                pending += 1;
                continue;
            }
            if end > start {
                self.add(origin, &framed[start..end], pending);
                start = end;
                pending = 0;
            }
            self.flush();
            if !self.fits(origin, next - start) {
                // This span alone is over the limit: it cannot be cut, so it goes out by itself.
                self.add(origin, &framed[start..next], 1);
                self.flush();
                on_oversized(span_trace_id(span), next - start);
                start = next;
            } else {
                pending += 1;
            }
            end = next;
        }
        if end > start {
            self.add(origin, &framed[start..end], pending);
        }
    }
}

/// The trace ID of a span's raw bytes (field 1), 0 when absent (a stored span always has one).
fn span_trace_id(span: &[u8]) -> u128 {
    let mut r = Reader::new(span, 0);
    while !r.is_empty() {
        let Ok((field, wt)) = r.read_tag() else { break };
        if field == 1 && wt == WireType::Len {
            if let Ok((id, _)) = r.read_len() {
                if let Ok(id) = <[u8; 16]>::try_from(id) {
                    return u128::from_be_bytes(id);
                }
            }
            break;
        }
        if r.skip(field, wt).is_err() {
            break;
        }
    }
    0
}

/// Encodes chunks into payloads of at most `max_bytes` each, grouped by resource then scope, spans in order
/// and byte for byte. A chunk too large for what is left of a payload is cut between its spans (a trace larger
/// than `max_bytes` leaves in several payloads); a span larger than `max_bytes` by itself goes out alone in a
/// payload over the limit, and `on_oversized(trace ID, its framed size)` is called for it.
pub fn encode_requests(
    chunks: &[OutChunk<'_>],
    max_bytes: usize,
    on_oversized: impl FnMut(u128, usize),
) -> Vec<Vec<u8>> {
    encode_kept(chunks, max_bytes, on_oversized)
        .into_iter()
        .map(|k| k.payload)
        .collect()
}

/// `encode_requests`, each payload with its span and resource counts.
pub fn encode_kept(
    chunks: &[OutChunk<'_>],
    max_bytes: usize,
    mut on_oversized: impl FnMut(u128, usize),
) -> Vec<Kept> {
    let mut b = Builder {
        max_bytes,
        payloads: Vec::new(),
        spans: 0,
        groups: Vec::new(),
        res_index: HashMap::new(),
        origin_index: HashMap::new(),
        estimate: 0,
    };
    for c in chunks {
        let origin: &Origin = c.origin;
        if b.fits(origin, c.framed.len()) {
            b.add(origin, c.framed, c.spans as usize);
        } else {
            b.add_cut(origin, c.framed, &mut on_oversized);
        }
    }
    b.flush();
    b.payloads
}

/// Frames one span as a `ScopeSpans.spans` entry, appending to `out`.
#[inline]
pub fn frame_span(out: &mut Vec<u8>, raw: &[u8]) {
    put_len_header(out, 2, raw.len());
    out.extend_from_slice(raw);
}

/// Size of a framed span.
#[inline]
pub fn framed_size(raw_len: usize) -> usize {
    len_field_size(2, raw_len)
}

/// A span attribute (`Span.attributes`, field 9) whose `AnyValue` content is `any`, encoded for appending.
fn attribute(key: &str, any: &[u8]) -> Vec<u8> {
    let kv = len_field_size(1, key.len()) + len_field_size(2, any.len());
    let mut out = Vec::with_capacity(len_field_size(9, kv));
    put_len_header(&mut out, 9, kv);
    put_len_header(&mut out, 1, key.len());
    out.extend_from_slice(key.as_bytes());
    put_len_header(&mut out, 2, any.len());
    out.extend_from_slice(any);
    out
}

/// A span attribute holding a string (`AnyValue.string_value`, field 1).
pub fn string_attribute(key: &str, value: &str) -> Vec<u8> {
    let mut any = Vec::with_capacity(len_field_size(1, value.len()));
    put_len_header(&mut any, 1, value.len());
    any.extend_from_slice(value.as_bytes());
    attribute(key, &any)
}

/// A span attribute holding a double (`AnyValue.double_value`, field 4, fixed64).
pub fn double_attribute(key: &str, value: f64) -> Vec<u8> {
    let mut any = Vec::with_capacity(9);
    any.push(0x21);
    any.extend_from_slice(&value.to_le_bytes());
    attribute(key, &any)
}

/// Rebuilds a chunk span by span: `f` appends each span's new bytes (given its old ones) to its buffer, and
/// the result is framed again.
pub fn map_spans(framed: &[u8], mut f: impl FnMut(&[u8], &mut Vec<u8>)) -> Box<[u8]> {
    let mut out = Vec::with_capacity(framed.len() + framed.len() / 8);
    let mut span_out = Vec::new();
    let mut r = Reader::new(framed, 0);
    while !r.is_empty() {
        // Chunks are framed by this crate (tag 2, length, span), so these reads cannot fail.
        let Ok((_, _)) = r.read_tag() else { break };
        let Ok((span, _)) = r.read_len() else { break };
        span_out.clear();
        f(span, &mut span_out);
        frame_span(&mut out, &span_out);
    }
    out.into_boxed_slice()
}

/// A span attribute holding a boolean (`AnyValue.bool_value`, field 2, a varint).
pub fn bool_attribute(key: &str, value: bool) -> Vec<u8> {
    attribute(key, &[0x10, u8::from(value)])
}

/// Appends encoded attributes to every framed span of a chunk. A protobuf message may be extended by
/// appending fields, so each span keeps its bytes and gains the attributes at its end; only the framing
/// (the span's length) changes. Costs one copy of the kept spans.
pub fn append_attributes(framed: &[u8], attrs: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(framed.len() + 16 * attrs.len());
    let mut r = Reader::new(framed, 0);
    while !r.is_empty() {
        // Chunks are framed by this crate (tag 2, length, span), so these reads cannot fail.
        let Ok((_, _)) = r.read_tag() else { break };
        let Ok((span, _)) = r.read_len() else { break };
        put_len_header(&mut out, 2, span.len() + attrs.len());
        out.extend_from_slice(span);
        out.extend_from_slice(attrs);
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::decode::{decode, AttrKeys};

    fn origin(service: &str, scope: &str) -> Arc<Origin> {
        let attr = format!(
            "\x0a\x03svc\x12{}\x0a{}{service}",
            (service.len() + 2) as u8 as char,
            service.len() as u8 as char
        );
        let mut res = Vec::new();
        put_len_header(&mut res, 1, attr.len());
        res.extend(attr.as_bytes());
        Arc::new(Origin {
            resource: Arc::new(Resource {
                raw: Some(res.into()),
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                matched: 0,
            }),
            raw: Some(
                format!("\x0a{}{scope}", scope.len() as u8 as char)
                    .into_bytes()
                    .into(),
            ),
            schema_url: "".into(),
        })
    }

    /// A span of trace `t`, number `i`, with `pad` bytes of name.
    fn span(t: u8, i: u32, pad: usize) -> Vec<u8> {
        let mut s = vec![0x0a, 16];
        s.extend([t; 16]);
        s.extend([0x12, 8]);
        s.extend(u64::from(i).to_be_bytes());
        put_len_header(&mut s, 5, pad);
        s.extend(std::iter::repeat_n(b'n', pad));
        s
    }

    fn framed(spans: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in spans {
            frame_span(&mut out, s);
        }
        out
    }

    /// The spans of every payload, in order, as raw bytes, with their scope's name.
    fn spans_of(payloads: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for p in payloads {
            let d = decode(p, &AttrKeys::default()).expect("an emitted payload decodes");
            for s in &d.spans {
                out.push((d.scopes[s.scope as usize].name.to_string(), s.raw.to_vec()));
            }
        }
        out
    }

    /// Scenario: one trace of 10,000 spans in one chunk (one scope), then 50 spans of a second scope and
    /// resource, against limits from 1 KiB to 64 KiB. Guarantees: every payload is at most the limit; every
    /// span arrives once, in order, byte for byte, under its own scope; payloads are well filled (no more than
    /// one span's worth short of the limit but for the last).
    #[test]
    fn a_large_trace_is_cut_between_its_spans() {
        let (a, b) = (origin("checkout", "lib-a"), origin("cart", "lib-b"));
        let big: Vec<Vec<u8>> = (0..10_000).map(|i| span(1, i, (i % 90) as usize)).collect();
        let small: Vec<Vec<u8>> = (0..50).map(|i| span(2, i, 10)).collect();
        let (fa, fb) = (framed(&big), framed(&small));
        let chunks = [
            OutChunk {
                origin: &a,
                framed: &fa,
                spans: big.len() as u32,
            },
            OutChunk {
                origin: &b,
                framed: &fb,
                spans: small.len() as u32,
            },
        ];
        let want: Vec<(String, Vec<u8>)> = big
            .iter()
            .map(|s| ("lib-a".to_string(), s.clone()))
            .chain(small.iter().map(|s| ("lib-b".to_string(), s.clone())))
            .collect();
        for max in [1024, 4096, 65_536] {
            let mut oversized = 0;
            let payloads = encode_requests(&chunks, max, |_, _| oversized += 1);
            assert_eq!(oversized, 0);
            assert!(
                payloads.len() >= fa.len() / max,
                "{max}: {} payloads",
                payloads.len()
            );
            for (i, p) in payloads.iter().enumerate() {
                assert!(p.len() <= max, "{max}: payload {i} holds {} bytes", p.len());
                if i + 2 < payloads.len() {
                    assert!(
                        p.len() > max - 300,
                        "{max}: payload {i} holds only {} bytes",
                        p.len()
                    );
                }
            }
            assert_eq!(spans_of(&payloads), want, "{max}");
            assert_counts_true(&encode_kept(&chunks, max, |_, _| {}));
        }
        // Without a limit, one payload.
        assert_eq!(encode_requests(&chunks, usize::MAX, |_, _| {}).len(), 1);
    }

    /// Scenario: a span larger than the limit in the middle of a chunk of small ones.
    /// Guarantees: it leaves alone in its own payload (the only one over the limit), reported with its trace
    /// ID and size; the spans around it leave in payloads within the limit, in order.
    #[test]
    fn a_span_over_the_limit_leaves_alone_and_is_reported() {
        let a = origin("checkout", "lib-a");
        let mut spans: Vec<Vec<u8>> = (0..40).map(|i| span(7, i, 50)).collect();
        spans.insert(20, span(7, 99, 5000));
        let f = framed(&spans);
        let chunks = [OutChunk {
            origin: &a,
            framed: &f,
            spans: spans.len() as u32,
        }];
        let mut reported = Vec::new();
        let payloads = encode_requests(&chunks, 2048, |id, size| reported.push((id, size)));
        assert_eq!(
            reported,
            vec![(u128::from_be_bytes([7; 16]), framed_size(spans[20].len()))]
        );
        let over: Vec<usize> = payloads
            .iter()
            .enumerate()
            .filter(|(_, p)| p.len() > 2048)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(over.len(), 1);
        assert_eq!(spans_of(&payloads[over[0]..=over[0]]).len(), 1);
        let got: Vec<Vec<u8>> = spans_of(&payloads).into_iter().map(|(_, s)| s).collect();
        assert_eq!(got, spans);
        assert_counts_true(&encode_kept(&chunks, 2048, |_, _| {}));
    }

    /// Every payload's counts are what decoding it finds (the binding hands them out instead of a decode).
    fn assert_counts_true(kept: &[Kept]) {
        for (i, k) in kept.iter().enumerate() {
            let d = decode(&k.payload, &AttrKeys::default()).expect("an emitted payload decodes");
            assert_eq!(k.spans, d.spans.len(), "payload {i}: spans");
            assert_eq!(
                k.resource_spans,
                d.resources.len(),
                "payload {i}: resource spans"
            );
        }
    }
}
