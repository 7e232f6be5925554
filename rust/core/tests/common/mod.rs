// Each test binary uses its own part of what is here.
#![allow(dead_code)]

pub mod otlp_prost;

use otlp_prost::ExportTraceServiceRequest;
use prost::Message;
use tailsample_core::Engine;

/// One engine stat by name (panics naming it when there is no such stat).
pub fn stat(e: &Engine, name: &str) -> u64 {
    e.stats()
        .into_iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
}

/// (trace_id, span_id) of every span in the payloads, sorted.
pub fn span_ids(payloads: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for p in payloads {
        let req = ExportTraceServiceRequest::decode(p.as_slice()).expect("output parses");
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push((s.trace_id, s.span_id));
                }
            }
        }
    }
    out.sort();
    out
}
