//! Helpers for the `serde::Serialize` of results the core hands out (replay reports, stats, RED series, recent
//! kept traces): what a caller outside Rust (the Python binding) sees, with times in seconds and trace IDs as
//! hex, so no binding builds these shapes by hand.

use serde::ser::SerializeMap;
use serde::Serializer;

use crate::propagation::{Example, KnownAddress};

/// Nanoseconds as seconds (a float), as the Python API gives every duration and time.
pub fn seconds<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*ns as f64 / 1e9)
}

/// Nanoseconds on the engine clock as seconds.
pub fn seconds_i64<S: Serializer>(ns: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*ns as f64 / 1e9)
}

/// An optional time on the engine clock (ns) as seconds, None as None.
pub fn seconds_opt<S: Serializer>(ns: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => s.serialize_some(&(*ns as f64 / 1e9)),
        None => s.serialize_none(),
    }
}

/// A trace ID as 32 lowercase hex digits.
pub fn trace_id_hex<S: Serializer>(id: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{id:032x}"))
}

/// A gap audit's example traces as two keys: `examples` (every one) and `kept_examples` (those a backend has),
/// trace IDs in hex; for a field flattened into its struct.
pub fn examples<S: Serializer>(examples: &[Example], s: S) -> Result<S::Ok, S::Error> {
    let hex = |e: &Example| format!("{:032x}", e.trace_id);
    let mut map = s.serialize_map(Some(2))?;
    map.serialize_entry("examples", &examples.iter().map(hex).collect::<Vec<_>>())?;
    let kept: Vec<String> = examples.iter().filter(|e| e.kept).map(hex).collect();
    map.serialize_entry("kept_examples", &kept)?;
    map.end()
}

/// Known addresses as a map, address to service.
pub fn addresses<S: Serializer>(addresses: &[KnownAddress], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(addresses.iter().map(|a| (&a.address, &a.service)))
}
