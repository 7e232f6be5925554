//! Helpers for the `serde::Serialize` of results the core hands out (replay reports, stats, RED series, recent
//! kept traces): what a caller outside Rust (the Python binding) sees, with times in seconds and trace IDs as
//! hex, so no binding builds these shapes by hand.

use serde::Serializer;

/// Nanoseconds as seconds (a float), as the Python API gives every duration and time.
pub fn seconds<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*ns as f64 / 1e9)
}

/// Nanoseconds on the engine clock as seconds.
pub fn seconds_i64<S: Serializer>(ns: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*ns as f64 / 1e9)
}

/// A trace ID as 32 lowercase hex digits.
pub fn trace_id_hex<S: Serializer>(id: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{id:032x}"))
}
