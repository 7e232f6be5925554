//! Why a hand-written scanner and not prost: decode the same payloads both ways, same process, same run.
//!
//! `cargo bench -p tailsample-core --bench decode` prints spans/s for: the scanner (validating everything,
//! extracting IDs/times/status and the attributes the service reads with the seed policies: their forced-
//! sampling header, RED metrics' `service.name`, the propagation audit's keys), prost decoding into owned
//! structs (what generated types give), prost decoding and re-encoding each span (what byte-for-byte
//! re-emission would cost with prost), and the whole engine (ingest + decide + re-encode kept spans).
//!
//! `TAILSAMPLE_BENCH_PAYLOADS=FILE` (an absolute path: cargo runs benches in the crate) takes the payloads of
//! FILE (the file exporter's proto format, as `bench/workloads.py` writes them) instead of the synthetic ones.

#[path = "../tests/common/otlp_prost.rs"]
mod otlp_prost;
#[path = "../tests/common/payload_file.rs"]
mod payload_file;

use std::hint::black_box;
use std::time::Instant;

use otlp_prost::*;
use payload_file::payloads_of;
use prost::Message;
use tailsample_core::otlp::{decode, AttrKeys};
use tailsample_core::{Engine, EngineConfig};

fn best_of<F: FnMut() -> usize>(rounds: usize, mut f: F) -> f64 {
    let mut best = f64::INFINITY;
    let mut spans = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        spans = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    spans as f64 / best
}

fn main() {
    let payloads: Vec<Vec<u8>> = match std::env::var("TAILSAMPLE_BENCH_PAYLOADS") {
        Ok(path) => payloads_of(&path),
        Err(_) => {
            let mut rng = Rng(0x5eed);
            (0..200)
                .map(|i| request(&mut rng, 1000, 10, &format!("svc-{}", i % 7)).encode_to_vec())
                .collect()
        }
    };
    let total_spans: usize = payloads
        .iter()
        .map(|p| decode(p, &AttrKeys::default()).unwrap().spans.len())
        .sum();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "workload: {} payloads, {total_spans} spans, {:.0} bytes/span on the wire",
        payloads.len(),
        bytes as f64 / total_spans as f64
    );
    let cfg = serde_json::json!({
        "decision_wait": "10s", "num_traces": 100000,
        "policies": [
            {"name": "errors-policy", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "latency-policy", "type": "latency", "latency": {"threshold_ms": 1000}},
            {"name": "forced-sampling-policy", "type": "string_attribute", "string_attribute": {"key": "http.request.header.x-force-trace", "values": ["true"]}},
            {"name": "probabilistic-policy", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}}
        ]
    });
    let cfg = EngineConfig::from_value(&cfg).unwrap();
    // What the service's engine reads with these policies (and its default audit and RED metrics).
    let keys = cfg.attr_keys.clone();

    // TAILSAMPLE_BENCH_ONLY=scanner runs just the scanner (for profiling it).
    if std::env::var("TAILSAMPLE_BENCH_ONLY").as_deref() == Ok("scanner") {
        let rate = best_of(30, || {
            payloads
                .iter()
                .map(|p| black_box(decode(p, &keys).unwrap()).spans.len())
                .sum()
        });
        println!("scanner: {rate:.0} spans/s");
        return;
    }
    let scanner = best_of(7, || {
        payloads
            .iter()
            .map(|p| black_box(decode(p, &keys).unwrap()).spans.len())
            .sum()
    });
    let prost_decode = best_of(7, || {
        payloads
            .iter()
            .map(|p| {
                let r = black_box(ExportTraceServiceRequest::decode(p.as_slice()).unwrap());
                r.resource_spans
                    .iter()
                    .map(|rs| {
                        rs.scope_spans
                            .iter()
                            .map(|ss| ss.spans.len())
                            .sum::<usize>()
                    })
                    .sum::<usize>()
            })
            .sum()
    });
    let prost_roundtrip = best_of(7, || {
        payloads
            .iter()
            .map(|p| {
                let r = ExportTraceServiceRequest::decode(p.as_slice()).unwrap();
                let mut n = 0;
                for rs in &r.resource_spans {
                    for ss in &rs.scope_spans {
                        for s in &ss.spans {
                            black_box(s.encode_to_vec());
                            n += 1;
                        }
                    }
                }
                n
            })
            .sum()
    });
    let engine = Engine::new(cfg);
    let mut clock = 0i64;
    let end_to_end = best_of(7, || {
        for p in &payloads {
            engine.ingest(p, clock).unwrap();
        }
        clock += 20_000_000_000;
        black_box(engine.poll(clock));
        total_spans
    });
    println!("{:<58} {:>12}", "path", "spans/s");
    println!(
        "{:<58} {:>12.0}",
        "scanner: validate + extract (tailsample)", scanner
    );
    println!(
        "{:<58} {:>12.0}",
        "prost: decode into owned structs", prost_decode
    );
    println!(
        "{:<58} {:>12.0}",
        "prost: decode + re-encode every span", prost_roundtrip
    );
    println!(
        "{:<58} {:>12.0}",
        "engine: ingest + decide + re-encode kept (seed policies)", end_to_end
    );
    println!(
        "scanner / prost decode = {:.2}x; scanner / prost decode+re-encode = {:.2}x",
        scanner / prost_decode,
        scanner / prost_roundtrip
    );
}
