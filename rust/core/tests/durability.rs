//! Tail storage end to end, in Rust: an engine dropped without a flush (as a killed process leaves it) and
//! opened again on the same directory.

mod common;

use std::path::{Path, PathBuf};

use common::otlp_prost::*;
use common::{span_ids, stat};
use prost::Message;
use serde_json::json;
use tailsample_core::durable::{Budget, StorageOptions, SyncPolicy};
use tailsample_core::{Engine, EngineConfig, Error};

const S: i64 = 1_000_000_000;

fn config(extra: serde_json::Value) -> EngineConfig {
    let mut cfg = json!({
        "decision_wait": "10s",
        "num_traces": 1000,
        "tail_storage": "file_storage/test",
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}],
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    EngineConfig::from_value(&cfg).expect("valid config")
}

fn storage(dir: &Path, segment_bytes: u64, max_bytes: u64) -> StorageOptions {
    StorageOptions {
        directory: dir.to_path_buf(),
        segment_bytes,
        budget: Budget::new(max_bytes),
        sync: SyncPolicy::None,
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailsample-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A trace of `spans` spans; with an error span when `error`.
fn trace(rng: &mut Rng, spans: usize, error: bool) -> ExportTraceServiceRequest {
    let mut req = request(rng, spans, spans, "svc");
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.status = None;
    }
    if error {
        req.resource_spans[0].scope_spans[0].spans[spans - 1].status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
    }
    req
}

/// The same trace split into one payload per span, as services report them.
fn per_span(req: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    (0..spans.len())
        .map(|i| {
            let mut one = req.clone();
            one.resource_spans[0].scope_spans[0].spans = vec![spans[i].clone()];
            one.encode_to_vec()
        })
        .collect()
}

fn ids_of(req: &ExportTraceServiceRequest) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = req.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    v.sort();
    v
}

fn invariant(e: &Engine) {
    let got = stat(e, "traces_sampled")
        + stat(e, "traces_not_sampled")
        + stat(e, "traces_dropped")
        + stat(e, "traces_evicted")
        + stat(e, "traces_forgotten")
        + stat(e, "traces_resent")
        + stat(e, "traces_in_memory");
    assert_eq!(stat(e, "traces_received"), got);
}

/// Scenario: two traces pending when the process dies (no flush). Guarantees: after a restart they are buffered
/// again with their original first-seen time and decided on schedule, whole: the error trace kept with every
/// span, the other not.
#[test]
fn pending_traces_survive_a_restart_and_are_decided_on_schedule() {
    let dir = tempdir("pending");
    let mut rng = Rng(11);
    let bad = trace(&mut rng, 4, true);
    let good = trace(&mut rng, 3, false);
    {
        let e = Engine::open(config(json!({})), &storage(&dir, 1 << 20, 1 << 30), 0).unwrap();
        for (i, p) in per_span(&bad).iter().enumerate() {
            e.ingest(p, i as i64 * S).unwrap();
        }
        for p in per_span(&good) {
            e.ingest(&p, 2 * S).unwrap();
        }
        assert!(e.poll(5 * S).is_empty());
        // Dropped here without flush or acknowledgement: what a SIGKILL leaves on disk.
    }
    let e = Engine::open(config(json!({})), &storage(&dir, 1 << 20, 1 << 30), 7 * S).unwrap();
    let r = e.replay_report().unwrap().clone();
    assert_eq!((r.payloads, r.traces_pending, r.spans_pending), (7, 2, 7));
    assert!(r.truncations.is_empty());
    assert!(e.poll(9 * S).is_empty(), "first seen at 0 s: due at 10 s");
    let out = e.poll(10 * S);
    assert_eq!(span_ids(&out), ids_of(&bad));
    assert_eq!(stat(&e, "traces_sampled"), 1);
    // Ingested at 2 s on a clock already at 3 s (it never runs back): first seen at 3 s, due at 13 s.
    assert!(e.poll(12 * S).is_empty());
    assert_eq!(stat(&e, "traces_not_sampled"), 0);
    assert!(e.poll(13 * S).is_empty());
    assert_eq!(stat(&e, "traces_not_sampled"), 1);
    invariant(&e);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Scenario: a kept trace exported and acknowledged, another kept but its round not acknowledged, then a crash.
/// Guarantees: the acknowledged one is not sent again; the other is, whole (counted in `traces_resent`); late
/// spans after the restart follow the decisions made before it.
#[test]
fn acknowledged_rounds_are_not_sent_again_and_decisions_survive() {
    let dir = tempdir("ack");
    let cfg = || {
        config(
            json!({"decision_cache": {"sampled_cache_size": 100, "non_sampled_cache_size": 100}}),
        )
    };
    let mut rng = Rng(12);
    let acked = trace(&mut rng, 3, true);
    let unacked = trace(&mut rng, 2, true);
    let dropped = trace(&mut rng, 2, false);
    {
        let e = Engine::open(cfg(), &storage(&dir, 1 << 20, 1 << 30), 0).unwrap();
        e.ingest(&acked.encode_to_vec(), 0).unwrap();
        e.ingest(&dropped.encode_to_vec(), 0).unwrap();
        let (r1, out) = e.poll_round(10 * S);
        assert_eq!(span_ids(&out), ids_of(&acked));
        assert!(e.acknowledge(r1).unwrap());
        e.ingest(&unacked.encode_to_vec(), 11 * S).unwrap();
        let (_r2, out) = e.poll_round(21 * S);
        assert_eq!(span_ids(&out), ids_of(&unacked));
        // Crash before the exporters confirm round 2.
    }
    let e = Engine::open(cfg(), &storage(&dir, 1 << 20, 1 << 30), 30 * S).unwrap();
    let r = e.replay_report().unwrap().clone();
    assert_eq!(r.acknowledged_round, Some(1));
    assert_eq!((r.traces_resent, r.spans_resent), (1, 2));
    assert_eq!(r.traces_pending, 0);
    let (r3, out) = e.poll_round(30 * S);
    assert!(r3 > 2, "round numbers go on after a restart");
    assert_eq!(span_ids(&out), ids_of(&unacked));
    // Late spans: of the kept trace, forwarded; of the dropped one, dropped.
    let mut late_kept = acked.clone();
    late_kept.resource_spans[0].scope_spans[0].spans.truncate(1);
    late_kept.resource_spans[0].scope_spans[0].spans[0].span_id = vec![42; 8];
    let mut late_dropped = dropped.clone();
    late_dropped.resource_spans[0].scope_spans[0]
        .spans
        .truncate(1);
    late_dropped.resource_spans[0].scope_spans[0].spans[0].span_id = vec![43; 8];
    e.ingest(&late_kept.encode_to_vec(), 31 * S).unwrap();
    e.ingest(&late_dropped.encode_to_vec(), 31 * S).unwrap();
    assert_eq!(span_ids(&e.poll(31 * S)), ids_of(&late_kept));
    assert_eq!(stat(&e, "late_spans_dropped"), 1);
    assert_eq!(stat(&e, "traces_in_memory"), 0);
    invariant(&e);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Scenario: the process dies in the middle of writing a payload. Guarantees: the torn record is found by its
/// checksum, cut off and reported (segment, bytes); every payload before it is replayed.
#[test]
fn a_torn_tail_is_cut_off_and_the_rest_replayed() {
    let dir = tempdir("torn");
    let mut rng = Rng(13);
    let traces: Vec<_> = (0..5).map(|_| trace(&mut rng, 2, true)).collect();
    {
        let e = Engine::open(config(json!({})), &storage(&dir, 1 << 20, 1 << 30), 0).unwrap();
        for t in &traces {
            e.ingest(&t.encode_to_vec(), S).unwrap();
        }
    }
    let spans_dir = dir.join("spans");
    let mut segs: Vec<_> = std::fs::read_dir(&spans_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 16)
        .unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let e = Engine::open(config(json!({})), &storage(&dir, 1 << 20, 1 << 30), 2 * S).unwrap();
    let r = e.replay_report().unwrap().clone();
    assert_eq!(r.truncations.len(), 1);
    assert!(r.truncations[0].file.ends_with(last.file_name().unwrap()));
    assert_eq!(r.truncations[0].offset + r.truncations[0].bytes, len - 100);
    assert_eq!(r.payloads, 4);
    assert_eq!(stat(&e, "replay_truncations"), 1);
    let out = e.poll(11 * S);
    let mut want: Vec<_> = traces[..4].iter().flat_map(ids_of).collect();
    want.sort();
    assert_eq!(span_ids(&out), want);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Scenario: a directory limit and small segments. Guarantees: when full, ingest answers backpressure (limit
/// `tail_storage`) and takes nothing; once traces are decided and acknowledged, whole segments are deleted and
/// ingest is accepted again; bytes on disk stay under the limit throughout.
#[test]
fn a_full_directory_is_backpressure_and_acknowledgements_free_it() {
    let dir = tempdir("full");
    let max = 64 << 10;
    let e = Engine::open(config(json!({})), &storage(&dir, 8 << 10, max), 0).unwrap();
    let mut rng = Rng(14);
    let mut taken = 0;
    let err = loop {
        match e.ingest(&trace(&mut rng, 3, false).encode_to_vec(), S) {
            Ok(_) => taken += 1,
            Err(err) => break err,
        }
        assert!(stat(&e, "storage_directory_bytes") <= max);
    };
    assert!(
        matches!(
            &err,
            Error::Backpressure {
                limit: "tail_storage",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("full"), "{err}");
    assert!(taken > 10, "{taken}");
    let in_memory = stat(&e, "traces_in_memory");
    assert_eq!(in_memory, taken);
    let segments = stat(&e, "storage_span_segments");
    let (round, _) = e.poll_round(11 * S);
    assert_eq!(stat(&e, "traces_in_memory"), 0);
    // Decided but not acknowledged: nothing may go yet.
    assert_eq!(stat(&e, "storage_span_segments"), segments);
    e.acknowledge(round).unwrap();
    e.poll_round(12 * S); // the next round starts past everything decided
    assert!(stat(&e, "storage_span_segments") < segments);
    assert!(stat(&e, "storage_directory_bytes") < max / 2);
    e.ingest(&trace(&mut rng, 3, false).encode_to_vec(), 13 * S)
        .expect("room again");
    invariant(&e);
    drop(e);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Scenario: `tailsample.max_buffered_bytes` small. Guarantees: at the limit ingest answers backpressure (limit
/// `max_buffered_bytes`), the use and the limit are metrics, and decisions make room again.
#[test]
fn the_buffered_bytes_limit_is_backpressure() {
    let cfg = config(json!({"tail_storage": null, "tailsample": {"max_buffered_bytes": 20000}}));
    let e = Engine::new(cfg);
    let mut rng = Rng(15);
    let mut taken = 0;
    let err = loop {
        match e.ingest(&trace(&mut rng, 2, false).encode_to_vec(), 0) {
            Ok(_) => taken += 1,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(
            &err,
            Error::Backpressure {
                limit: "max_buffered_bytes",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(taken >= 3, "{taken}");
    assert_eq!(stat(&e, "limit_max_buffered_bytes"), 20000);
    assert!(stat(&e, "buffered_bytes") >= 20000);
    assert_eq!(stat(&e, "buffered_bytes"), stat(&e, "memory_bytes"));
    assert_eq!(stat(&e, "refused_max_buffered_bytes"), 1);
    e.poll(10 * S);
    assert!(stat(&e, "buffered_bytes") < 20000);
    assert_eq!(stat(&e, "buffered_bytes"), stat(&e, "memory_bytes"));
    e.ingest(&trace(&mut rng, 2, false).encode_to_vec(), 10 * S)
        .expect("room again");
}

/// Scenario: many rounds over small segments, each acknowledged, with restarts in between. Guarantees: the
/// directory stays bounded (old segments deleted) and a restart after everything was acknowledged sends
/// nothing again.
#[test]
fn steady_traffic_keeps_the_directory_bounded() {
    let dir = tempdir("steady");
    let opts = storage(&dir, 16 << 10, 1 << 30);
    let mut rng = Rng(16);
    let mut peak = 0;
    let mut t = 0;
    for restart in 0..3 {
        let e = Engine::open(config(json!({})), &opts, t).unwrap();
        if restart > 0 {
            assert_eq!(e.replay_report().unwrap().traces_resent, 0);
        }
        for _ in 0..60 {
            for _ in 0..5 {
                let error = rng.below(10) == 0;
                e.ingest(&trace(&mut rng, 3, error).encode_to_vec(), t)
                    .unwrap();
            }
            t += S;
            let (round, _) = e.poll_round(t);
            e.acknowledge(round).unwrap();
            peak = peak.max(stat(&e, "storage_bytes"));
        }
        invariant(&e);
    }
    // 10 s of traffic at ~5 traces/s of ~3 KB is about 150 KB, plus a segment in progress.
    assert!(peak < 400 << 10, "peak {peak}");
    std::fs::remove_dir_all(&dir).unwrap();
}
