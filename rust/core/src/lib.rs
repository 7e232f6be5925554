//! tailsample-core: a tail-based sampling engine for OpenTelemetry traces, with no Python in it.
//!
//! ```text
//! bytes ─▶ otlp::decode (validate, extract) ─▶ store::Shard (buffer, fold summary, due queues)
//!       ─▶ policy (vote at due time) ─▶ otlp::encode (kept spans, byte for byte) ─▶ bytes
//! ```
//! Start at [`Engine`]: `ingest`, `poll`, `flush`, `stats`.

pub mod config;
pub mod consistent;
pub mod durable;
pub mod engine;
pub mod error;
pub mod gzip;
pub mod otlp;
pub mod policy;
pub mod propagation;
pub mod red;
pub mod serialize;
pub mod sketch;
pub mod store;

pub use config::EngineConfig;
pub use engine::{inspect, seconds_to_ns, Engine, Ingested, PayloadSummary};
pub use error::{Error, Result};
