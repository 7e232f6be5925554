//! The key of a trace, for the per-group policies (`latency_percentile`, `adaptive`; tailsample only).
//!
//! A key is the values of configured fields, read from the trace's **root span**: its attributes first, then its
//! resource's (so `service.name` works as written). Until the root arrives the first span received stands in;
//! a trace whose root never arrives is keyed by that span. Special fields:
//! - `span.name` and `span.kind`: the root span's name and kind;
//! - `status_code`: the trace's status: `ERROR` if any span has it, else `OK` if any, else `UNSET`.
//!
//! The values are hashed at ingest into one 64-bit number per keyed policy (`TraceView::keys`), so deciding
//! reads no span. The hash is FNV-1a (the `probabilistic` policy's), fixed and platform-independent: two instances given the same traffic
//! compute the same keys (and the same rates). A missing field hashes differently from an empty string.

use super::probabilistic::{fnv1a as fnv, FNV_OFFSET};
use super::{status_bits, TraceView};
use crate::config::node::Mapping;
use crate::error::{Error, Result};
use crate::otlp::decode::{AttrKeys, AttrValue, SpanView};

/// Keyed policies per processor: each takes one number of `TraceView::keys`.
pub const MAX_KEYED: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    SpanName,
    SpanKind,
    StatusCode,
    /// A span attribute, else the span's resource attribute; `index` in the scanner's key set.
    Attribute {
        key: String,
        index: usize,
    },
}

#[derive(Debug, Clone)]
pub struct TraceKey {
    pub fields: Vec<Field>,
    /// Its place in `TraceView::keys`, assigned with the configuration.
    pub slot: usize,
}

impl TraceKey {
    /// Reads a list of field names at `key` of `m` (`default` when absent).
    pub fn parse(m: &mut Mapping<'_>, key: &'static str, default: &[&str]) -> Result<Self> {
        let path = m.key_path(key);
        let names = if m.has(key) {
            m.strings(key)?
        } else {
            default.iter().map(|s| s.to_string()).collect()
        };
        if names.is_empty() {
            return Err(Error::config(path, "expected at least one field"));
        }
        let mut fields = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(Error::config(
                    format!("{path}[{i}]"),
                    "expected a field name, got an empty string",
                ));
            }
            let f = match name.as_str() {
                "span.name" => Field::SpanName,
                "span.kind" => Field::SpanKind,
                "status_code" => Field::StatusCode,
                other => Field::Attribute {
                    key: other.to_string(),
                    index: 0,
                },
            };
            if fields.contains(&f) {
                return Err(Error::config(
                    format!("{path}[{i}]"),
                    format!("duplicate field {name:?}"),
                ));
            }
            fields.push(f);
        }
        Ok(TraceKey { fields, slot: 0 })
    }

    pub fn attribute_keys(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter_map(|f| match f {
                Field::Attribute { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn bind(&mut self, keys: &AttrKeys) {
        for f in &mut self.fields {
            if let Field::Attribute { key, index } = f {
                *index = keys.index_of_str(key).expect("key registered");
            }
        }
    }

    /// The hash of the span-derived fields, from this span and its resource's extracted attributes.
    pub fn span_hash(
        &self,
        span: &SpanView<'_>,
        attrs: &[AttrValue<'_>],
        resource_attrs: &[AttrValue<'_>],
    ) -> u64 {
        let mut h = FNV_OFFSET;
        for f in &self.fields {
            // A separator per field, so ("ab", "c") and ("a", "bc") differ.
            h = fnv(h, &[0xff]);
            h = match f {
                Field::SpanName => fnv(h, span.name.as_bytes()),
                Field::SpanKind => fnv(h, &span.kind.to_le_bytes()),
                Field::StatusCode => h,
                Field::Attribute { index, .. } => {
                    let v = match attrs[*index] {
                        AttrValue::Absent => resource_attrs[*index],
                        v => v,
                    };
                    hash_value(h, v)
                }
            };
        }
        h
    }

    /// The trace's key: the hash folded at ingest, with the trace's status mixed in if it is a field.
    #[inline]
    pub fn finish(&self, t: &TraceView) -> u64 {
        let h = t.extra().keys[self.slot];
        if self.fields.contains(&Field::StatusCode) {
            fnv(h, &[trace_status(t.status_mask)])
        } else {
            h
        }
    }
}

/// The trace's status as one byte: 2 ERROR, 1 OK, 0 UNSET.
fn trace_status(mask: u8) -> u8 {
    if mask & status_bits::ERROR != 0 {
        2
    } else if mask & status_bits::OK != 0 {
        1
    } else {
        0
    }
}

fn hash_value(h: u64, v: AttrValue<'_>) -> u64 {
    // A type tag first: 5 and "5" are different keys.
    match v {
        AttrValue::Absent => fnv(h, &[0]),
        AttrValue::Empty => fnv(h, &[1]),
        AttrValue::Str(s) => fnv(fnv(h, &[2]), s.as_bytes()),
        AttrValue::Bool(b) => fnv(h, &[3, u8::from(b)]),
        AttrValue::Int(i) => fnv(fnv(h, &[4]), &i.to_le_bytes()),
        AttrValue::Double(d) => fnv(fnv(h, &[5]), &d.to_bits().to_le_bytes()),
        AttrValue::Bytes(b) => fnv(fnv(h, &[6]), b),
        // Composite values key as their encoding: equal arrays (or maps) sent alike share a key.
        AttrValue::Array(b) => fnv(fnv(h, &[7]), b),
        AttrValue::Map(b) => fnv(fnv(h, &[8]), b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::Node;
    use serde_json::json;

    fn key(fields: serde_json::Value) -> Result<TraceKey> {
        let v = json!({ "key_fields": fields });
        let mut m = Node::new(&v, "p").mapping()?;
        let k = TraceKey::parse(&mut m, "key_fields", &["service.name"])?;
        m.finish()?;
        Ok(k)
    }

    fn span<'a>(name: &'a str, kind: i32) -> SpanView<'a> {
        SpanView {
            scope: 0,
            raw: &[],
            offset: 0,
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name,
            kind,
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            status_code: 0,
            trace_state: "",
            flags: 0,
        }
    }

    /// Scenario: a key of span name and an attribute. Guarantees: span attributes win over the resource's,
    /// the resource's are used when the span lacks one, and different values give different keys.
    #[test]
    fn fields_read_span_then_resource() {
        let mut k = key(json!(["span.name", "service.name"])).unwrap();
        k.bind(&AttrKeys::new(["service.name"]));
        let s = span("GET /", 2);
        let from_resource = k.span_hash(&s, &[AttrValue::Absent], &[AttrValue::Str("cart")]);
        let from_span = k.span_hash(&s, &[AttrValue::Str("cart")], &[AttrValue::Str("other")]);
        assert_eq!(from_resource, from_span);
        let other = k.span_hash(&s, &[AttrValue::Absent], &[AttrValue::Str("shop")]);
        assert_ne!(from_resource, other);
        let missing = k.span_hash(&s, &[AttrValue::Absent], &[AttrValue::Absent]);
        let empty = k.span_hash(&s, &[AttrValue::Absent], &[AttrValue::Str("")]);
        assert_ne!(missing, empty);
        let renamed = k.span_hash(
            &span("GET /x", 2),
            &[AttrValue::Absent],
            &[AttrValue::Str("cart")],
        );
        assert_ne!(from_resource, renamed);
    }

    /// Scenario: `status_code` among the fields. Guarantees: the trace's status (any error) changes the key;
    /// without the field, it does not.
    #[test]
    fn status_is_the_traces() {
        let k = key(json!(["span.name", "status_code"])).unwrap();
        let mut t = TraceView::default();
        t.extra_mut().keys[0] = k.span_hash(&span("a", 1), &[], &[]);
        t.status_mask = status_bits::OK;
        let ok = k.finish(&t);
        t.status_mask |= status_bits::ERROR;
        assert_ne!(ok, k.finish(&t));
        let plain = key(json!(["span.name"])).unwrap();
        assert_eq!(plain.finish(&t), t.extra().keys[0]);
    }

    /// Scenario: the field separator. Guarantees: values that concatenate alike still differ.
    #[test]
    fn fields_are_separated() {
        let mut k = key(json!(["a", "b"])).unwrap();
        k.bind(&AttrKeys::new(["a", "b"]));
        let s = span("x", 0);
        let one = k.span_hash(
            &s,
            &[AttrValue::Str("ab"), AttrValue::Str("c")],
            &[AttrValue::Absent; 2],
        );
        let two = k.span_hash(
            &s,
            &[AttrValue::Str("a"), AttrValue::Str("bc")],
            &[AttrValue::Absent; 2],
        );
        assert_ne!(one, two);
    }

    #[test]
    fn bad_field_lists_are_errors() {
        assert_eq!(
            key(json!([])).unwrap_err().to_string(),
            "p.key_fields: expected at least one field"
        );
        assert_eq!(
            key(json!(["a", "a"])).unwrap_err().to_string(),
            "p.key_fields[1]: duplicate field \"a\""
        );
        assert_eq!(
            key(json!([""])).unwrap_err().to_string(),
            "p.key_fields[0]: expected a field name, got an empty string"
        );
        // One string is a one-element list (split at commas), as the reference's decoder reads lists.
        assert!(key(json!("service.name")).is_ok());
    }
}
