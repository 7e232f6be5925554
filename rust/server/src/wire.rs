//! The few small messages an OTLP/HTTP answer carries, protobuf and JSON: `google.rpc.Status` (with a
//! `RetryInfo` detail) and `ExportTraceServiceResponse.partial_success`. Byte for byte what
//! `tailsample.collector.otlp_status` writes.

pub const INVALID_ARGUMENT: u64 = 3;
pub const UNAVAILABLE: u64 = 14;
pub const UNAUTHENTICATED: u64 = 16;

const RETRY_INFO_TYPE: &[u8] = b"type.googleapis.com/google.rpc.RetryInfo";

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn field_varint(out: &mut Vec<u8>, number: u64, value: u64) {
    if value != 0 {
        varint(out, number << 3);
        varint(out, value);
    }
}

fn field_bytes(out: &mut Vec<u8>, number: u64, value: &[u8]) {
    if !value.is_empty() {
        varint(out, (number << 3) | 2);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

/// A `google.rpc.Status`, with a `RetryInfo` detail of `retry_after_s` whole seconds when given.
pub fn encode_status(code: u64, message: &str, retry_after_s: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    field_varint(&mut out, 1, code);
    field_bytes(&mut out, 2, message.as_bytes());
    if let Some(seconds) = retry_after_s {
        let mut duration = Vec::new();
        field_varint(&mut duration, 1, seconds);
        let mut retry_info = Vec::new();
        field_bytes(&mut retry_info, 1, &duration);
        if retry_info.is_empty() {
            retry_info.extend_from_slice(&[0x0a, 0x02, 0x08, 0x00]); // a zero delay is still a detail
        }
        let mut any = Vec::new();
        field_bytes(&mut any, 1, RETRY_INFO_TYPE);
        field_bytes(&mut any, 2, &retry_info);
        field_bytes(&mut out, 3, &any);
    }
    out
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The same Status in the OTLP/JSON mapping.
pub fn status_json(code: u64, message: &str) -> Vec<u8> {
    format!(
        "{{\"code\": {code}, \"message\": {}}}",
        json_string(message)
    )
    .into_bytes()
}

/// An `ExportTraceServiceResponse` reporting rejected spans.
pub fn encode_partial_success(rejected: u64, message: &str) -> Vec<u8> {
    let mut inner = Vec::new();
    field_varint(&mut inner, 1, rejected);
    field_bytes(&mut inner, 2, message.as_bytes());
    let mut out = Vec::new();
    field_bytes(&mut out, 1, &inner);
    out
}

/// The same in JSON (int64 as a string, as protobuf's JSON mapping writes it).
pub fn partial_success_json(rejected: u64, message: &str) -> Vec<u8> {
    format!(
        "{{\"partialSuccess\": {{\"rejectedSpans\": \"{rejected}\", \"errorMessage\": {}}}}}",
        json_string(message)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_with_retry_info_matches_the_python_encoding() {
        // tailsample.collector.otlp_status.encode_status(14, "x", 1)
        let b = encode_status(14, "x", Some(1));
        let mut want = vec![0x08, 14, 0x12, 1, b'x', 0x1a];
        let mut any = vec![0x0a, RETRY_INFO_TYPE.len() as u8];
        any.extend_from_slice(RETRY_INFO_TYPE);
        any.extend_from_slice(&[0x12, 4, 0x0a, 2, 0x08, 1]);
        want.push(any.len() as u8);
        want.extend_from_slice(&any);
        assert_eq!(b, want);
        assert_eq!(encode_status(0, "", None), Vec::<u8>::new());
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            status_json(3, "a\"b"),
            br#"{"code": 3, "message": "a\"b"}"#.to_vec()
        );
        assert_eq!(
            partial_success_json(2, "m"),
            br#"{"partialSuccess": {"rejectedSpans": "2", "errorMessage": "m"}}"#.to_vec()
        );
        assert_eq!(
            encode_partial_success(2, "m"),
            vec![0x0a, 5, 0x08, 2, 0x12, 1, b'm']
        );
    }
}
