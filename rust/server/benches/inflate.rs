//! The receivers' gzip inflate against miniz_oxide (flate2's pure-Rust backend, which they used before zlib-rs),
//! on the same bodies, same process, same run.
//!
//! `cargo bench -p tailsample-server --bench inflate` prints microseconds per body and MB/s out for each, and the
//! ratio. `TAILSAMPLE_BENCH_PAYLOADS=FILE` (an absolute path; the file exporter's proto format, as
//! `bench/workloads.py` writes them) takes the payloads of FILE instead of synthetic OTLP-like bodies.

#[path = "../../core/tests/common/payload_file.rs"]
mod payload_file;

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use flate2::write::GzEncoder;
use flate2::Compression;

/// Bodies shaped like OTLP spans: random IDs and times among repeated names, keys and values (compresses ~6:1).
fn synthetic() -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names = [
        "GET /api/cart",
        "SELECT orders",
        "POST /checkout",
        "redis GET",
        "grpc Payment/Charge",
    ];
    (0..20)
        .map(|_| {
            let mut body = Vec::new();
            for _ in 0..1000 {
                body.extend_from_slice(&next().to_le_bytes());
                body.extend_from_slice(&next().to_le_bytes());
                body.extend_from_slice(&next().to_le_bytes());
                body.extend_from_slice(names[(next() % 5) as usize].as_bytes());
                body.extend_from_slice(
                    &(1_700_000_000_000_000_000u64 + next() % 1_000_000_000).to_le_bytes(),
                );
                for k in 0..10 {
                    let v = next() % 16;
                    body.extend_from_slice(
                        format!("\n\x12attribute.key.{k}\x12\x08value-{v}").as_bytes(),
                    );
                }
            }
            body
        })
        .collect()
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::new(6));
    e.write_all(raw).expect("in memory");
    e.finish().expect("in memory")
}

/// Best of `rounds`: seconds per pass over every body.
fn best_of(rounds: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let raw = match std::env::var("TAILSAMPLE_BENCH_PAYLOADS") {
        Ok(path) => payload_file::payloads_of(&path)
            .into_iter()
            .take(200)
            .collect(),
        Err(_) => synthetic(),
    };
    let bodies: Vec<Vec<u8>> = raw.iter().map(|r| gzip(r)).collect();
    let out_bytes: usize = raw.iter().map(Vec::len).sum();
    let in_bytes: usize = bodies.iter().map(Vec::len).sum();
    for (b, r) in bodies.iter().zip(&raw) {
        assert_eq!(
            &tailsample_server::inflate(b, "gzip", 64 << 20).expect("valid gzip"),
            r
        );
    }
    let ours = best_of(20, || {
        bodies
            .iter()
            .map(|b| tailsample_server::inflate(b, "gzip", 64 << 20).map_or(0, |v| v.len()))
            .sum()
    });
    // The deflate stream between the 10-byte header (these bodies carry no optional fields) and the trailer.
    let miniz = best_of(20, || {
        bodies
            .iter()
            .map(|b| {
                miniz_oxide::inflate::decompress_to_vec(&b[10..b.len() - 8]).map_or(0, |v| v.len())
            })
            .sum()
    });
    let n = bodies.len() as f64;
    println!(
        "{} bodies, {:.0} KB each inflated ({:.1}:1)",
        bodies.len(),
        out_bytes as f64 / n / 1e3,
        out_bytes as f64 / in_bytes as f64
    );
    for (name, s) in [
        ("tailsample_server::inflate (zlib-rs)", ours),
        ("miniz_oxide", miniz),
    ] {
        println!(
            "{name:<38} {:>7.1} us per body {:>7.0} MB/s",
            s / n * 1e6,
            out_bytes as f64 / s / 1e6
        );
    }
    println!("miniz_oxide / ours: {:.2}x", miniz / ours);
}
