//! What the HTTP and gRPC end-to-end tests share: an OTLP request built by hand and a real engine behind the server.

use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use tailsample_core::{Engine, EngineConfig};
use tailsample_server::{EngineRef, Limiter, Target};

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn field(out: &mut Vec<u8>, number: u64, value: &[u8]) {
    varint(out, (number << 3) | 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// An ExportTraceServiceRequest of `n` spans of one trace; `bad` more with a 3-byte trace ID (rejected alone).
pub fn payload(n: usize, bad: usize) -> Vec<u8> {
    let mut scope = Vec::new();
    for i in 0..n + bad {
        let mut span = Vec::new();
        field(&mut span, 1, if i < n { &[7u8; 16] } else { &[1u8; 3] });
        field(&mut span, 2, &(i as u64 + 1).to_le_bytes());
        field(&mut span, 5, b"op");
        field(&mut scope, 2, &span);
    }
    let mut rs = Vec::new();
    field(&mut rs, 2, &scope);
    let mut req = Vec::new();
    field(&mut req, 1, &rs);
    req
}

pub fn received(e: &Engine) -> u64 {
    e.stats()
        .into_iter()
        .find(|(k, _)| *k == "spans_received")
        .unwrap()
        .1
}

pub fn engine() -> Arc<Engine> {
    let cfg = serde_json::json!({"decision_wait": "10s", "num_traces": 1000,
                                 "policies": [{"name": "all", "type": "always_sample"}]});
    Arc::new(Engine::new(EngineConfig::from_value(&cfg).unwrap()))
}

/// A fresh engine and memory-limiter flag, and the server's target for them.
pub fn target() -> (Arc<Engine>, Arc<Limiter>, Target) {
    let engine = engine();
    let limiter = Arc::new(Limiter::default());
    let target = Target {
        engine: engine.clone(),
        wall_clock: false,
        limiters: vec![limiter.clone()],
    };
    (engine, limiter, target)
}

/// An engine that notes the thread of every ingest (ingest runs on the worker serving the call) and takes `hold`
/// over each (a slow ingest, so calls overlap).
pub struct Noting {
    pub engine: Arc<Engine>,
    pub hold: Duration,
    pub threads: Mutex<Vec<ThreadId>>,
}

impl EngineRef for Noting {
    fn engine(&self) -> &Engine {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        std::thread::sleep(self.hold);
        &self.engine
    }
}

/// A `Noting` engine and the server's target for it (no limiters).
pub fn noting(hold: Duration) -> (Arc<Noting>, Target) {
    let noting = Arc::new(Noting {
        engine: engine(),
        hold,
        threads: Mutex::new(Vec::new()),
    });
    let target = Target {
        engine: noting.clone(),
        wall_clock: false,
        limiters: vec![],
    };
    (noting, target)
}
