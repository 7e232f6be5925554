//! Reading a workload file (shared by `benches/decode.rs` and `examples/ingest_cost.rs`).

/// The payloads of a file in the collector file exporter's proto format (each prefixed by its length, u32 BE),
/// as `bench/workloads.py` writes them.
pub fn payloads_of(path: &str) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        let n = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        out.push(data[at + 4..at + 4 + n].to_vec());
        at += 4 + n;
    }
    out
}
