//! The engine's own CPU per span for ingest and for decide, payload by payload with a cold cache, as the
//! service sees it (issue 24): a few hundred payloads a second with other work between them.
//!
//! ```text
//! cargo run --release -p tailsample-core --example ingest_cost -- CONFIG.json PAYLOADS.pb [ROUNDS] [THRASH_MIB] [RATE]
//! ```
//! CONFIG.json is an engine configuration block (`tailsample.Config(...).block` as JSON; use
//! `decision_wait: 1h` so that nothing is decided while ingesting), PAYLOADS.pb a file in the collector file
//! exporter's proto format (`bench/workloads.py` writes them). Each round makes a fresh engine, ingests every
//! payload (this thread's CPU time, payload by payload; between two payloads, untimed, THRASH_MIB MiB are
//! written to evict the caches, 8 by default, 0 for none), then flushes (decide, re-encode the kept spans:
//! timed whole). Prints the median round's ns per span for each.
//!
//! With RATE (payloads per second of engine time) the engine runs steady, as in the service: payload `i`
//! arrives at `i / RATE` s, and a decision round (`poll`) runs every 50 ms of engine time, timed as decide
//! with the final `flush`; traces are decided `decision_wait` after their first span (use a short one, e.g.
//! 1s, so that slots, caches and the decision log are reused within a round). Only the second half of the
//! payloads, and the rounds among them, are timed (the engine warmed up: its memory taken, as in a service
//! that has run for a while); the final flush is not.

#[path = "../tests/common/payload_file.rs"]
mod payload_file;

use payload_file::payloads_of;
use tailsample_core::{Engine, EngineConfig};

// The service's allocator (the extension's, `rust/python`): what a chunk per trace costs depends on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This thread's CPU time (ns): the machine is shared, and time spent preempted is not the engine's cost.
fn cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: ingest_cost CONFIG.json PAYLOADS.pb [ROUNDS] [THRASH_MIB]");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[1]).expect("config file");
    let cfg = EngineConfig::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", args[1]));
    let data = payloads_of(&args[2]);
    let rounds: usize = args.get(3).map_or(5, |s| s.parse().expect("ROUNDS"));
    let thrash_mib: usize = args.get(4).map_or(8, |s| s.parse().expect("THRASH_MIB"));
    let rate: Option<f64> = args.get(5).map(|s| s.parse().expect("RATE"));
    let mut thrash = vec![0u8; thrash_mib << 20];
    let (mut ingest, mut decide) = (Vec::new(), Vec::new());
    let mut kept = 0;
    for round in 0..rounds {
        let engine = Engine::new(cfg.clone());
        let mut spans = 0usize;
        let (mut ns, mut decide_ns) = (0u128, 0u128);
        let mut next_round = 0i64;
        let mut now = 0i64;
        kept = 0;
        for (i, p) in data.iter().enumerate() {
            // Steady: the first half warms the engine up, untimed.
            let timed = rate.is_none() || i >= data.len() / 2;
            if !thrash.is_empty() {
                thrash.fill((i + round) as u8);
                std::hint::black_box(&thrash);
            }
            if let Some(rate) = rate {
                now = (i as f64 * 1e9 / rate) as i64;
                if now >= next_round {
                    let t = cpu_ns();
                    let out = engine.poll(now);
                    if timed {
                        decide_ns += cpu_ns() - t;
                    }
                    kept += out.iter().map(Vec::len).sum::<usize>();
                    next_round = now + 50_000_000;
                }
            }
            let t = cpu_ns();
            let n = engine.ingest(p, now).expect("payload taken");
            if timed {
                ns += cpu_ns() - t;
                spans += n;
            }
        }
        ingest.push(ns as f64 / spans as f64);
        let t = cpu_ns();
        let out = engine.flush(now);
        if rate.is_none() {
            decide_ns += cpu_ns() - t;
        }
        decide.push(decide_ns as f64 / spans as f64);
        kept += out.iter().map(Vec::len).sum::<usize>();
    }
    println!(
        "{}: {} payloads, ingest {:.1} ns/span, decide {:.1} ns/span (median of {rounds}; {kept} kept bytes)",
        args[2],
        data.len(),
        median(ingest),
        median(decide)
    );
}
