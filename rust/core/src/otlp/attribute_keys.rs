//! The attribute keys one OTLP request carries, per place (span, resource): how often, with which value types,
//! and the first distinct example values. The sample behind the service's attribute inventory
//! (`tailsample.incident.lint.AttributeInventory`, `GET /debug/attributes`), which policy lint compares with the
//! keys policies read: read here without building a message per span, so that sampling a payload costs about
//! what scanning it does.
//!
//! The texts are the inventory's: types `string`, `int`, `double`, `bool`, `bytes`, `map`, `empty` and
//! `array<T>` (T the elements' types, sorted and `|`-joined, `array<>` when empty); examples as Python prints
//! the value (`str()`), strings cut at 64 characters, an array as its first four elements' examples joined
//! by commas (cut at 64 characters), none for bytes, maps and empty values.

use std::borrow::Cow;
use std::collections::HashMap;

use ahash::RandomState;

use super::decode::{decode, key_values, AttrKeys, AttrValue};
use crate::error::Result;

/// Where an attribute was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    Span,
    Resource,
}

impl Place {
    pub fn name(self) -> &'static str {
        match self {
            Place::Span => "span",
            Place::Resource => "resource",
        }
    }
}

/// One key at one place, over the whole request.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCount<'a> {
    pub place: Place,
    pub key: Cow<'a, str>,
    /// Occurrences (a key repeated within one span counts each time).
    pub count: u64,
    /// Value types and their counts, in order of first appearance.
    pub types: Vec<(Cow<'static, str>, u64)>,
    /// The first `max_examples` distinct examples, in order of appearance.
    pub examples: Vec<Cow<'a, str>>,
}

/// What `attribute_keys` counted in one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeKeys<'a> {
    pub spans: u64,
    /// `ResourceSpans` entries (a resource is counted once per request it appears in).
    pub resources: u64,
    /// Keys in order of first appearance across both places (the order an inventory bounded in keys takes
    /// them in).
    pub keys: Vec<KeyCount<'a>>,
}

/// Counts the attribute keys of one `ExportTraceServiceRequest` (spans the engine would reject alone are not
/// counted); an invalid request is the engine's error (`Error::Decode`). At most `max_examples` distinct examples
/// are kept per key: an inventory that already holds some takes the first of these it lacks, as it would have
/// taken them value by value.
pub fn attribute_keys(payload: &[u8], max_examples: usize) -> Result<AttributeKeys<'_>> {
    // The engine's scan validates the whole request (nesting limits included) before anything is read here.
    let d = decode(payload, &AttrKeys::default())?;
    let mut out = Counter {
        keys: Vec::new(),
        index: Default::default(),
        max_examples,
    };
    let mut span_of_resource: Vec<Vec<usize>> = vec![Vec::new(); d.resources.len()];
    for (i, s) in d.spans.iter().enumerate() {
        span_of_resource[d.scopes[s.scope as usize].resource as usize].push(i);
    }
    // As the inventory reads a request: each resource's attributes, then its spans'.
    for (r, spans) in d.resources.iter().zip(&span_of_resource) {
        match &r.raw {
            Some(Cow::Borrowed(raw)) => {
                for (key, value) in key_values(raw, 1) {
                    out.add(Place::Resource, key, value, Cow::Borrowed);
                }
            }
            // A `resource` field repeated on the wire, merged into bytes of its own.
            Some(Cow::Owned(raw)) => {
                for (key, value) in key_values(raw, 1) {
                    out.add(Place::Resource, key, value, |s| Cow::Owned(s.to_string()));
                }
            }
            None => {}
        }
        for &i in spans {
            for (key, value) in key_values(d.spans[i].raw, 9) {
                out.add(Place::Span, key, value, Cow::Borrowed);
            }
        }
    }
    Ok(AttributeKeys {
        spans: d.spans.len() as u64,
        resources: d.resources.len() as u64,
        keys: out.keys,
    })
}

struct Counter<'a> {
    keys: Vec<KeyCount<'a>>,
    /// Per place (`Place as usize`), a key's index in `keys`.
    index: [HashMap<Cow<'a, str>, usize, RandomState>; 2],
    max_examples: usize,
}

impl<'a> Counter<'a> {
    /// One attribute; `keep` makes what is kept of its text (borrowed from the request, or copied).
    fn add<'v>(
        &mut self,
        place: Place,
        key: &'v str,
        value: AttrValue<'v>,
        keep: impl Fn(&'v str) -> Cow<'a, str>,
    ) {
        let index = &mut self.index[place as usize];
        let at = match index.get(key) {
            Some(&at) => at,
            None => {
                let key = keep(key);
                index.insert(key.clone(), self.keys.len());
                self.keys.push(KeyCount {
                    place,
                    key,
                    count: 0,
                    types: Vec::new(),
                    examples: Vec::new(),
                });
                self.keys.len() - 1
            }
        };
        let k = &mut self.keys[at];
        k.count += 1;
        let t = value_type(&value);
        match k.types.iter_mut().find(|(name, _)| *name == t) {
            Some((_, n)) => *n += 1,
            None => k.types.push((t, 1)),
        }
        if k.examples.len() < self.max_examples {
            if let Some(ex) = example(&value) {
                if !k.examples.contains(&ex) {
                    k.examples.push(match ex {
                        Cow::Borrowed(s) => keep(s),
                        Cow::Owned(s) => Cow::Owned(s),
                    });
                }
            }
        }
    }
}

/// The inventory's name of a value's type.
fn value_type(v: &AttrValue<'_>) -> Cow<'static, str> {
    Cow::Borrowed(match v {
        AttrValue::Absent | AttrValue::Empty => "empty",
        AttrValue::Str(_) => "string",
        AttrValue::Int(_) => "int",
        AttrValue::Double(_) => "double",
        AttrValue::Bool(_) => "bool",
        AttrValue::Bytes(_) => "bytes",
        AttrValue::Map(_) => "map",
        AttrValue::Array(_) => {
            let mut inner: Vec<Cow<'static, str>> = v.elements().map(|e| value_type(&e)).collect();
            inner.sort_unstable();
            inner.dedup();
            return Cow::Owned(format!("array<{}>", inner.join("|")));
        }
    })
}

/// Characters kept of a string example.
const EXAMPLE_CHARS: usize = 64;
/// Elements of an array whose examples make the array's.
const EXAMPLE_ELEMENTS: usize = 4;

/// A short text of a scalar value, or of an array's first elements: the value a policy compares.
fn example<'a>(v: &AttrValue<'a>) -> Option<Cow<'a, str>> {
    Some(match v {
        AttrValue::Str(s) => Cow::Borrowed(first_chars(s, EXAMPLE_CHARS)),
        AttrValue::Int(i) => Cow::Owned(i.to_string()),
        AttrValue::Bool(b) => Cow::Borrowed(if *b { "True" } else { "False" }),
        AttrValue::Double(x) => Cow::Owned(python_float(*x)),
        AttrValue::Array(_) => {
            let parts: Vec<Cow<'a, str>> = v
                .elements()
                .take(EXAMPLE_ELEMENTS)
                .filter_map(|e| example(&e))
                .collect();
            Cow::Owned(first_chars(&parts.join(","), EXAMPLE_CHARS).to_string())
        }
        AttrValue::Absent | AttrValue::Empty | AttrValue::Bytes(_) | AttrValue::Map(_) => {
            return None
        }
    })
}

fn first_chars(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s; // no more characters than bytes
    }
    match s.char_indices().nth(n) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// A double as Python's `repr` writes it (the inventory's examples are compared with Python's): the shortest
/// digits that read back as the same value, positional while the decimal point is within 16 digits of the first
/// and no more than 4 zeros before it, otherwise `d.ddde±XX`; a whole number keeps `.0`.
pub fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: `-1.2345e-7`, `0e0`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes a decimal exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let point = exp + 1; // digits are 0.d1d2... x 10^point
    if -4 < point && point <= 16 {
        let n = digits.len() as i32;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n {
            format!("{digits}{}.0", "0".repeat((point - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        return format!("{sign}{body}");
    }
    let (first, rest) = digits.split_at(1);
    let frac = if rest.is_empty() {
        String::new()
    } else {
        format!(".{rest}")
    };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{first}{frac}e{esign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::decode::any_value as av;

    #[test]
    fn floats_read_as_python_repr_writes_them() {
        for (x, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (-2.5e100, "-2.5e+100"),
            (123.456, "123.456"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ] {
            assert_eq!(python_float(x), want, "{x:e}");
        }
    }

    #[test]
    fn examples_cut_strings_at_characters_not_bytes() {
        let s = "é".repeat(70);
        assert_eq!(first_chars(&s, 64).chars().count(), 64);
        assert_eq!(first_chars("short", 64), "short");
    }

    fn len_field(field: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::otlp::wire::put_len_header(&mut out, field, bytes.len());
        out.extend_from_slice(bytes);
        out
    }

    /// One request: a resource with `service.name`, one span with these attributes (encoded `KeyValue`s).
    fn request(span_attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut span = [len_field(1, &[7u8; 16]), len_field(2, &[1u8; 8])].concat();
        for a in span_attrs {
            span.extend(len_field(9, a));
        }
        let resource = len_field(1, &av::key_value("service.name", &av::str("cart")));
        let rs = [len_field(1, &resource), len_field(2, &len_field(2, &span))].concat();
        len_field(1, &rs)
    }

    #[test]
    fn counts_keys_types_and_distinct_examples_in_order() {
        let payload = request(&[
            av::key_value("http.method", &av::str("GET")),
            av::key_value("http.method", &av::str("GET")),
            av::key_value("http.method", &av::str("POST")),
            av::key_value("code", &av::int(7)),
            av::key_value("code", &av::str("7")),
            av::key_value(
                "tags",
                &av::array(&[av::str("a"), av::int(2), av::boolean(true)]),
            ),
            av::key_value("ratio", &av::double(0.25)),
            av::key_value("nothing", &[]),
        ]);
        let got = attribute_keys(&payload, 8).unwrap();
        assert_eq!((got.spans, got.resources), (1, 1));
        type Row = (&'static str, String, u64, Vec<(String, u64)>, Vec<String>);
        let view: Vec<Row> = got
            .keys
            .iter()
            .map(|k| {
                (
                    k.place.name(),
                    k.key.to_string(),
                    k.count,
                    k.types.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
                    k.examples.iter().map(|e| e.to_string()).collect(),
                )
            })
            .collect();
        let row = |place, key: &str, count, types: &[(&str, u64)], examples: &[&str]| -> Row {
            (
                place,
                key.to_string(),
                count,
                types.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
                examples.iter().map(|e| e.to_string()).collect(),
            )
        };
        assert_eq!(
            view,
            vec![
                row("resource", "service.name", 1, &[("string", 1)], &["cart"]),
                row("span", "http.method", 3, &[("string", 3)], &["GET", "POST"]),
                row("span", "code", 2, &[("int", 1), ("string", 1)], &["7"]),
                row(
                    "span",
                    "tags",
                    1,
                    &[("array<bool|int|string>", 1)],
                    &["a,2,True"]
                ),
                row("span", "ratio", 1, &[("double", 1)], &["0.25"]),
                row("span", "nothing", 1, &[("empty", 1)], &[]),
            ]
        );
        // At most `max_examples` distinct ones.
        let one = attribute_keys(&payload, 1).unwrap();
        assert_eq!(one.keys[1].examples, vec![Cow::Borrowed("GET")]);
    }

    #[test]
    fn an_invalid_request_is_the_engines_error() {
        assert!(attribute_keys(&[0x0a, 0x05, 0x01], 8).is_err());
    }
}
