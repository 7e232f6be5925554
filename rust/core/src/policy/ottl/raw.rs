//! Fields the ingest scanner does not extract, read from a message's raw (already validated) bytes only when a
//! condition asks for them: a span's `status.message`, its scope's `version` and `attributes`.
//!
//! A field with an unexpected wire type is skipped, as protobuf runtimes treat it as an unknown field.

use crate::otlp::decode::AttrValue;
use crate::otlp::wire::{Reader, WireType};

/// The length-delimited occurrences of `field` in `msg`, in order.
fn len_fields(msg: &[u8], field: u32) -> impl Iterator<Item = &[u8]> {
    let mut r = Reader::new(msg, 0);
    std::iter::from_fn(move || {
        while !r.is_empty() {
            let (f, wt) = r.read_tag().ok()?;
            if f == field && wt == WireType::Len {
                return r.read_len().ok().map(|(b, _)| b);
            }
            r.skip(f, wt).ok()?;
        }
        None
    })
}

/// The last value of string `field` (protobuf: a repeated scalar's last occurrence wins); "" if none.
fn last_string(msg: &[u8], field: u32) -> &str {
    len_fields(msg, field)
        .last()
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

/// `status.message` of a span's raw bytes (field 15, `Status`; repeated occurrences merge).
pub(crate) fn status_message(span: &[u8]) -> &str {
    let mut out = "";
    for status in len_fields(span, 15) {
        if let Some(b) = len_fields(status, 2).last() {
            out = std::str::from_utf8(b).unwrap_or("");
        }
    }
    out
}

/// `version` of an `InstrumentationScope`'s raw bytes.
pub(crate) fn scope_version(scope: &[u8]) -> &str {
    last_string(scope, 2)
}

/// The first attribute named `key` of an `InstrumentationScope` (`pcommon.Map.Get`), `Absent` if none.
pub(crate) fn scope_attribute<'a>(scope: &'a [u8], key: &str) -> AttrValue<'a> {
    for kv in len_fields(scope, 3) {
        if last_string(kv, 1) == key {
            return len_fields(kv, 2).last().map_or(AttrValue::Empty, any_value);
        }
    }
    AttrValue::Absent
}

/// An `AnyValue`: the last field of its `oneof` set wins.
fn any_value(buf: &[u8]) -> AttrValue<'_> {
    let mut r = Reader::new(buf, 0);
    let mut value = AttrValue::Empty;
    while !r.is_empty() {
        let Ok((field, wt)) = r.read_tag() else {
            break;
        };
        value = match (field, wt) {
            (1, WireType::Len) => match r.read_len() {
                Ok((b, _)) => std::str::from_utf8(b).map_or(AttrValue::Str(""), AttrValue::Str),
                Err(_) => break,
            },
            (2, WireType::Varint) => match r.read_varint() {
                Ok(v) => AttrValue::Bool(v != 0),
                Err(_) => break,
            },
            (3, WireType::Varint) => match r.read_varint() {
                Ok(v) => AttrValue::Int(v as i64),
                Err(_) => break,
            },
            (4, WireType::I64) => match r.read_fixed64() {
                Ok(v) => AttrValue::Double(f64::from_bits(v)),
                Err(_) => break,
            },
            (5..=7, WireType::Len) => match r.read_len() {
                Ok((b, _)) if field == 5 => AttrValue::Array(b),
                Ok((b, _)) if field == 6 => AttrValue::Map(b),
                Ok((b, _)) => AttrValue::Bytes(b),
                Err(_) => break,
            },
            _ => {
                if r.skip(field, wt).is_err() {
                    break;
                }
                value
            }
        };
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(field: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    /// Scenario: status and scope fields read from raw bytes, repeated and with wrong wire types.
    /// Guarantees: protobuf's reading: the last string wins, a repeated status merges, a field of the wrong wire
    /// type is skipped, an attribute is the first of its key.
    #[test]
    fn raw_fields() {
        let status1 = len_field(2, b"first");
        let status2 = [vec![3 << 3, 2], len_field(2, b"second")].concat();
        let span = [
            len_field(15, &status1),
            len_field(5, b"name"),
            len_field(15, &status2),
        ]
        .concat();
        assert_eq!(status_message(&span), "second");
        assert_eq!(status_message(&len_field(15, &[3 << 3, 2])), "");
        let kv = |k: &str, v: Vec<u8>| {
            len_field(3, &[len_field(1, k.as_bytes()), len_field(2, &v)].concat())
        };
        let scope = [
            len_field(1, b"lib"),
            len_field(2, b"1.0"),
            kv("a", len_field(1, b"x")),
            kv("n", vec![3 << 3, 7]),
            kv("a", len_field(1, b"y")),
            vec![2 << 3, 1], // version as a varint: an unknown field
            kv("e", vec![]),
        ]
        .concat();
        assert_eq!(scope_version(&scope), "1.0");
        assert_eq!(scope_attribute(&scope, "a"), AttrValue::Str("x"));
        assert_eq!(scope_attribute(&scope, "n"), AttrValue::Int(7));
        assert_eq!(scope_attribute(&scope, "e"), AttrValue::Empty);
        assert_eq!(scope_attribute(&scope, "zz"), AttrValue::Absent);
    }
}
