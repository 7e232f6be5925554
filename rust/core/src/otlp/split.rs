//! One payload cut into one payload per trace: what the collector's Kafka exporter writes with
//! `partition_traces_by_id: true` (each message one trace, keyed by its ID), so that every span of a trace lands
//! in one partition and one consumer. Spans keep their bytes, resource and scope; only the grouping changes.

use std::sync::Arc;

use super::decode::{decode, AttrKeys};
use super::encode::{encode_requests, frame_span, framed_size, OutChunk};
use crate::error::Result;
use crate::store::intern::{Origin, Resource};

/// `(trace ID, payload)` per trace, traces in order of first appearance; each payload holds the trace's spans
/// in their order, under their own resource and scope (schema URLs included).
pub fn split_by_trace(payload: &[u8]) -> Result<Vec<(u128, Vec<u8>)>> {
    let d = decode(payload, &AttrKeys::default())?;
    // The payload's origins, as the encoder takes them (not interned: they live for this call).
    let resources: Vec<Arc<Resource>> = d
        .resources
        .iter()
        .map(|r| {
            Arc::new(Resource {
                raw: r.raw.as_deref().map(Box::from),
                schema_url: r.schema_url.into(),
                matched: 0,
            })
        })
        .collect();
    let origins: Vec<Arc<Origin>> = d
        .scopes
        .iter()
        .map(|s| {
            Arc::new(Origin {
                resource: resources[s.resource as usize].clone(),
                raw: s.raw.as_deref().map(Box::from),
                schema_url: s.schema_url.into(),
            })
        })
        .collect();
    // Span indices by trace, traces in order of first appearance.
    let mut order: Vec<(u128, usize)> = d
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (u128::from_be_bytes(s.trace_id), i))
        .collect();
    let mut first_seen: std::collections::HashMap<u128, usize> = std::collections::HashMap::new();
    for &(id, i) in &order {
        first_seen.entry(id).or_insert(i);
    }
    order.sort_unstable_by_key(|&(id, i)| (first_seen[&id], i));
    let mut out = Vec::with_capacity(first_seen.len());
    for trace in order.chunk_by(|a, b| a.0 == b.0) {
        let id = trace[0].0;
        // Runs of spans under one scope, framed as `ScopeSpans.spans` entries.
        let mut runs: Vec<(usize, Vec<u8>, u32)> = Vec::new();
        for &(_, i) in trace {
            let span = &d.spans[i];
            let scope = span.scope as usize;
            if runs.last().is_none_or(|(s, _, _)| *s != scope) {
                runs.push((scope, Vec::new(), 0));
            }
            let run = runs.last_mut().expect("pushed above");
            run.2 += 1;
            let framed = &mut run.1;
            framed.reserve(framed_size(span.raw.len()));
            frame_span(framed, span.raw);
        }
        let chunks: Vec<OutChunk<'_>> = runs
            .iter()
            .map(|(scope, framed, spans)| OutChunk {
                origin: &origins[*scope],
                framed,
                spans: *spans,
            })
            .collect();
        let mut payloads = encode_requests(&chunks, usize::MAX, |_, _| {});
        debug_assert_eq!(payloads.len(), 1);
        out.push((id, payloads.pop().unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::inspect;

    /// A request of `spans` (trace byte, span byte) under two resources, written by hand.
    fn request(resources: &[&[(u8, u8)]]) -> Vec<u8> {
        use crate::otlp::wire::put_len_header;
        let mut req = Vec::new();
        for (r, spans) in resources.iter().enumerate() {
            let mut scope_spans = Vec::new();
            let scope = b"\x0a\x03lib";
            put_len_header(&mut scope_spans, 1, scope.len());
            scope_spans.extend_from_slice(scope);
            for &(t, s) in spans.iter() {
                let mut span = vec![0x0a, 16];
                span.extend([t; 16]);
                span.extend([0x12, 8]);
                span.extend([s; 8]);
                span.extend([0x2a, 1, b'a' + s]);
                put_len_header(&mut scope_spans, 2, span.len());
                scope_spans.extend(span);
            }
            let mut resource_spans = Vec::new();
            let attrs = format!("\x0a\x0e\x0a\x03svc\x12\x07\x0a\x05svc-{r}");
            put_len_header(&mut resource_spans, 1, attrs.len());
            resource_spans.extend(attrs.as_bytes());
            put_len_header(&mut resource_spans, 2, scope_spans.len());
            resource_spans.extend(scope_spans);
            put_len_header(&mut req, 1, resource_spans.len());
            req.extend(resource_spans);
        }
        req
    }

    #[test]
    fn one_payload_per_trace_in_order_of_first_appearance_with_their_resources() {
        let req = request(&[&[(2, 1), (1, 2), (2, 3)], &[(1, 4), (3, 5)]]);
        let parts = split_by_trace(&req).unwrap();
        let ids: Vec<u128> = parts.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            vec![
                u128::from_be_bytes([2; 16]),
                u128::from_be_bytes([1; 16]),
                u128::from_be_bytes([3; 16])
            ]
        );
        let spans: Vec<u64> = parts
            .iter()
            .map(|(_, p)| inspect(p).unwrap().spans)
            .collect();
        assert_eq!(spans, vec![2, 2, 1]);
        // Trace 1 spans both resources: two ResourceSpans, each with its own service.
        let one = inspect(&parts[1].1).unwrap();
        assert_eq!((one.traces, one.resource_spans), (1, 2));
        assert!(parts[1].1.windows(5).any(|w| w == b"svc-0"));
        assert!(parts[1].1.windows(5).any(|w| w == b"svc-1"));
        assert!(!parts[2].1.windows(5).any(|w| w == b"svc-0"));
    }

    #[test]
    fn empty_and_malformed_payloads() {
        assert!(split_by_trace(b"").unwrap().is_empty());
        assert!(split_by_trace(b"\x0a\x05ab").is_err());
    }
}
