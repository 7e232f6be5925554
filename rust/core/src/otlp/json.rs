//! OTLP/JSON ↔ protobuf transcoding of `ExportTraceServiceRequest`: `json_to_proto` (the HTTP JSON receiver's
//! hot path, the file readers) and `proto_to_json` (the file and debug exporters), one codec for both directions.
//!
//! The OTLP/JSON mapping is the proto3 JSON mapping with these differences: trace and span IDs are hex (not
//! base64; base64 of the right length is accepted too, as the two cannot be confused), enums are integers
//! (names are accepted), keys are lowerCamelCase (the proto field names are accepted), 64-bit integers are
//! decimal strings or numbers, and unknown fields are ignored. The output follows proto3: zero values are
//! omitted (except in a oneof, and for messages given in the JSON), fields come in field-number order.
//!
//! The JSON is parsed (by serde_json) to a light tree that borrows the strings without escapes from the
//! input and keeps objects as lists of pairs, then each message is encoded from a static table of its fields. Errors name the JSON path of the offending value (`resourceSpans[0].scopeSpans[1].spans[3].traceId`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::wire::{put_varint, varint_len, Fail as WireFail, Reader, WireResult, WireType};
use crate::error::Error;

/// The field kinds of the tables.
#[derive(Clone, Copy)]
enum Kind {
    Msg(&'static Schema),
    Str,
    Bool,
    /// `int64`, as a (sign-extended) varint.
    Int64,
    /// `int32`, as a (sign-extended) varint.
    Int32,
    Uint32,
    Fixed64,
    Fixed32,
    Double,
    /// A trace or span ID: its size in bytes and what it is (for messages).
    Id(usize, &'static str),
    Bytes,
    Enum(&'static [(&'static str, i32)]),
}

#[derive(Clone, Copy)]
struct Field {
    number: u32,
    camel: &'static str,
    snake: &'static str,
    kind: Kind,
    repeated: bool,
    /// A member of the message's (single) oneof: encoded even when it holds its type's zero value.
    oneof: bool,
    /// An older name of the field before it: a message is skipped when that field is set, a list appended.
    legacy: bool,
}

struct Schema {
    name: &'static str,
    /// In field-number order (the order of the output).
    fields: &'static [Field],
}

/// The most fields of any table (Span's 16).
const MAX_FIELDS: usize = 16;

const fn f(number: u32, camel: &'static str, snake: &'static str, kind: Kind) -> Field {
    Field {
        number,
        camel,
        snake,
        kind,
        repeated: false,
        oneof: false,
        legacy: false,
    }
}

const fn rep(number: u32, camel: &'static str, snake: &'static str, kind: Kind) -> Field {
    Field {
        repeated: true,
        ..f(number, camel, snake, kind)
    }
}

const fn one(number: u32, camel: &'static str, snake: &'static str, kind: Kind) -> Field {
    Field {
        oneof: true,
        ..f(number, camel, snake, kind)
    }
}

const fn legacy(field: Field) -> Field {
    Field {
        legacy: true,
        ..field
    }
}

const SPAN_KINDS: &[(&str, i32)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
];

const STATUS_CODES: &[(&str, i32)] = &[
    ("STATUS_CODE_UNSET", 0),
    ("STATUS_CODE_OK", 1),
    ("STATUS_CODE_ERROR", 2),
];

static REQUEST: Schema = Schema {
    name: "ExportTraceServiceRequest",
    fields: &[rep(
        1,
        "resourceSpans",
        "resource_spans",
        Kind::Msg(&RESOURCE_SPANS),
    )],
};

static RESOURCE_SPANS: Schema = Schema {
    name: "ResourceSpans",
    fields: &[
        f(1, "resource", "resource", Kind::Msg(&RESOURCE)),
        rep(2, "scopeSpans", "scope_spans", Kind::Msg(&SCOPE_SPANS)),
        // Collectors before OTLP 0.15 wrote these: the same messages under their old name.
        legacy(rep(
            2,
            "instrumentationLibrarySpans",
            "instrumentation_library_spans",
            Kind::Msg(&SCOPE_SPANS),
        )),
        f(3, "schemaUrl", "schema_url", Kind::Str),
    ],
};

static RESOURCE: Schema = Schema {
    name: "Resource",
    fields: &[
        rep(1, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(
            2,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Kind::Uint32,
        ),
        rep(3, "entityRefs", "entity_refs", Kind::Msg(&ENTITY_REF)),
    ],
};

static ENTITY_REF: Schema = Schema {
    name: "EntityRef",
    fields: &[
        f(1, "schemaUrl", "schema_url", Kind::Str),
        f(2, "type", "type", Kind::Str),
        rep(3, "idKeys", "id_keys", Kind::Str),
        rep(4, "descriptionKeys", "description_keys", Kind::Str),
    ],
};

static SCOPE_SPANS: Schema = Schema {
    name: "ScopeSpans",
    fields: &[
        f(1, "scope", "scope", Kind::Msg(&SCOPE)),
        legacy(f(
            1,
            "instrumentationLibrary",
            "instrumentation_library",
            Kind::Msg(&SCOPE),
        )),
        rep(2, "spans", "spans", Kind::Msg(&SPAN)),
        f(3, "schemaUrl", "schema_url", Kind::Str),
    ],
};

static SCOPE: Schema = Schema {
    name: "InstrumentationScope",
    fields: &[
        f(1, "name", "name", Kind::Str),
        f(2, "version", "version", Kind::Str),
        rep(3, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(
            4,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Kind::Uint32,
        ),
    ],
};

static SPAN: Schema = Schema {
    name: "Span",
    fields: &[
        f(1, "traceId", "trace_id", Kind::Id(16, "trace id")),
        f(2, "spanId", "span_id", Kind::Id(8, "span id")),
        f(3, "traceState", "trace_state", Kind::Str),
        f(
            4,
            "parentSpanId",
            "parent_span_id",
            Kind::Id(8, "parent span id"),
        ),
        f(5, "name", "name", Kind::Str),
        f(6, "kind", "kind", Kind::Enum(SPAN_KINDS)),
        f(
            7,
            "startTimeUnixNano",
            "start_time_unix_nano",
            Kind::Fixed64,
        ),
        f(8, "endTimeUnixNano", "end_time_unix_nano", Kind::Fixed64),
        rep(9, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(
            10,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Kind::Uint32,
        ),
        rep(11, "events", "events", Kind::Msg(&EVENT)),
        f(
            12,
            "droppedEventsCount",
            "dropped_events_count",
            Kind::Uint32,
        ),
        rep(13, "links", "links", Kind::Msg(&LINK)),
        f(14, "droppedLinksCount", "dropped_links_count", Kind::Uint32),
        f(15, "status", "status", Kind::Msg(&STATUS)),
        f(16, "flags", "flags", Kind::Fixed32),
    ],
};

static EVENT: Schema = Schema {
    name: "Span.Event",
    fields: &[
        f(1, "timeUnixNano", "time_unix_nano", Kind::Fixed64),
        f(2, "name", "name", Kind::Str),
        rep(3, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(
            4,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Kind::Uint32,
        ),
    ],
};

static LINK: Schema = Schema {
    name: "Span.Link",
    fields: &[
        f(1, "traceId", "trace_id", Kind::Id(16, "trace id")),
        f(2, "spanId", "span_id", Kind::Id(8, "span id")),
        f(3, "traceState", "trace_state", Kind::Str),
        rep(4, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(
            5,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Kind::Uint32,
        ),
        f(6, "flags", "flags", Kind::Fixed32),
    ],
};

static STATUS: Schema = Schema {
    name: "Status",
    fields: &[
        f(2, "message", "message", Kind::Str),
        f(3, "code", "code", Kind::Enum(STATUS_CODES)),
    ],
};

static KEY_VALUE: Schema = Schema {
    name: "KeyValue",
    fields: &[
        f(1, "key", "key", Kind::Str),
        f(2, "value", "value", Kind::Msg(&ANY_VALUE)),
        f(3, "keyStrindex", "key_strindex", Kind::Int32),
    ],
};

static ANY_VALUE: Schema = Schema {
    name: "AnyValue",
    fields: &[
        one(1, "stringValue", "string_value", Kind::Str),
        one(2, "boolValue", "bool_value", Kind::Bool),
        one(3, "intValue", "int_value", Kind::Int64),
        one(4, "doubleValue", "double_value", Kind::Double),
        one(5, "arrayValue", "array_value", Kind::Msg(&ARRAY_VALUE)),
        one(6, "kvlistValue", "kvlist_value", Kind::Msg(&KEY_VALUE_LIST)),
        one(7, "bytesValue", "bytes_value", Kind::Bytes),
        one(
            8,
            "stringValueStrindex",
            "string_value_strindex",
            Kind::Int32,
        ),
    ],
};

static ARRAY_VALUE: Schema = Schema {
    name: "ArrayValue",
    fields: &[rep(1, "values", "values", Kind::Msg(&ANY_VALUE))],
};

static KEY_VALUE_LIST: Schema = Schema {
    name: "KeyValueList",
    fields: &[rep(1, "values", "values", Kind::Msg(&KEY_VALUE))],
};

// ---- the parsed JSON ------------------------------------------------------------------------------------

/// A JSON value; strings without escapes borrow from the input, objects keep their pairs in order.
enum Value<'a> {
    Null,
    Bool(bool),
    Number(Num),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

type Map<'a> = [(Cow<'a, str>, Value<'a>)];

#[derive(Clone, Copy)]
enum Num {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::U64(v) => write!(f, "{v}"),
            Num::I64(v) => write!(f, "{v}"),
            Num::F64(v) => write!(f, "{v}"),
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => write!(f, "{}", shown(s)),
            other => f.write_str(kind_of(other)),
        }
    }
}

struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Value::Number(Num::U64(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Value::Number(Num::I64(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Value::Number(Num::F64(v)))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Value::String(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Value::String(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Value::String(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(16));
                while let Some(Str(key)) = map.next_key()? {
                    pairs.push((key, map.next_value()?));
                }
                Ok(Value::Object(pairs))
            }
        }
        d.deserialize_any(V)
    }
}

fn has_key(obj: &Map<'_>, key: &str) -> bool {
    obj.iter().any(|(k, _)| k == key)
}

// ---- errors -------------------------------------------------------------------------------------------

/// A problem and the JSON path to it, filled in on the way out (cold path only).
struct Fail {
    path: String,
    message: String,
}

type R<T> = Result<T, Box<Fail>>;

#[cold]
#[inline(never)]
fn fail<T>(message: impl Into<String>) -> R<T> {
    Err(Box::new(Fail {
        path: String::new(),
        message: message.into(),
    }))
}

#[cold]
#[inline(never)]
fn within(mut e: Box<Fail>, key: &str, index: Option<usize>) -> Box<Fail> {
    let seg = match index {
        Some(i) => format!("{key}[{i}]"),
        None => key.to_string(),
    };
    e.path = if e.path.is_empty() {
        seg
    } else if e.path.starts_with('[') {
        format!("{seg}{}", e.path)
    } else {
        format!("{seg}.{}", e.path)
    };
    e
}

fn kind_of(v: &Value<'_>) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cold]
#[inline(never)]
fn expected<T>(what: &str, got: &Value<'_>) -> R<T> {
    fail(format!("expected {what}, got {}", kind_of(got)))
}

#[cold]
fn shown(s: &str) -> String {
    if s.chars().count() <= 48 {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(45).collect();
        format!("{head:?}...")
    }
}

// ---- entry point --------------------------------------------------------------------------------------

/// Converts one OTLP/JSON `ExportTraceServiceRequest` into its protobuf encoding.
///
/// Errors are `Error::Decode` with the JSON path of the offending value in `field` and offset 0, or, for
/// text that is not JSON, an empty `field` and the byte offset where parsing stopped.
pub fn json_to_proto(body: &[u8]) -> Result<Vec<u8>, Error> {
    let value: Value<'_> = serde_json::from_slice(body).map_err(|e| syntax_error(body, &e))?;
    let decode = |field: String, message: String| Error::Decode {
        field,
        offset: 0,
        message,
    };
    let Value::Object(obj) = &value else {
        return Err(decode(
            String::new(),
            format!(
                "not an ExportTraceServiceRequest: expected a JSON object, got {}",
                kind_of(&value)
            ),
        ));
    };
    if !obj.is_empty() && !has_key(obj, "resourceSpans") && !has_key(obj, "resource_spans") {
        return Err(decode(String::new(), not_traces(obj)));
    }
    let mut out = Vec::with_capacity(body.len() / 2);
    encode_message(&REQUEST, obj, &mut out).map_err(|e| decode(e.path, e.message))?;
    Ok(out)
}

#[cold]
fn not_traces(obj: &Map<'_>) -> String {
    let mut others: Vec<&str> = obj
        .iter()
        .filter_map(|(k, _)| match k.as_ref() {
            "resourceMetrics" | "resource_metrics" => Some("metrics"),
            "resourceLogs" | "resource_logs" => Some("logs"),
            "resourceProfiles" | "resource_profiles" => Some("profiles"),
            _ => None,
        })
        .collect();
    others.sort_unstable();
    others.dedup();
    if !others.is_empty() {
        return format!(
            "not an ExportTraceServiceRequest: it holds {}, not traces",
            others.join(" and ")
        );
    }
    let mut keys: Vec<&str> = obj.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.truncate(5);
    format!(
        "not an ExportTraceServiceRequest: no resourceSpans (keys: {})",
        keys.join(", ")
    )
}

#[cold]
fn syntax_error(body: &[u8], e: &serde_json::Error) -> Error {
    // serde_json reports a 1-based line and a column counted in bytes; turn them into a byte offset (the end of
    // the text when it ended too soon).
    let whole = body.iter().rposition(|&b| !b.is_ascii_whitespace());
    let mut offset = 0;
    if e.is_eof() {
        offset = whole.map_or(0, |w| w + 1);
    } else if e.line() > 0 {
        let mut line = 1;
        for (i, &b) in body.iter().enumerate() {
            if line == e.line() {
                offset = i;
                break;
            }
            if b == b'\n' {
                line += 1;
                offset = i + 1;
            }
        }
        offset = (offset + e.column().saturating_sub(1)).min(body.len());
    }
    // Where, in characters as an editor counts them: a one-line document (a JSON line) needs only the column.
    let before = &body[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    let text = e.to_string();
    let what = text
        .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
        .unwrap_or(&text);
    let one_line = !body[..whole.map_or(0, |w| w + 1)].contains(&b'\n');
    let place = if one_line {
        format!("column {column}")
    } else {
        format!("line {line}, column {column}")
    };
    Error::Decode {
        field: String::new(),
        offset,
        message: format!("invalid JSON: {what} ({place})"),
    }
}

// ---- encoding -----------------------------------------------------------------------------------------

#[inline]
fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

/// Writes a length-delimited field whose content `body` writes: one length byte is reserved, the content
/// moved along when its length needs more.
#[inline]
fn put_nested(out: &mut Vec<u8>, number: u32, body: impl FnOnce(&mut Vec<u8>) -> R<()>) -> R<()> {
    put_tag(out, number, 2);
    let at = out.len();
    out.push(0);
    body(out)?;
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return Ok(());
    }
    let n = varint_len(len as u64);
    out.resize(out.len() + n - 1, 0);
    out.copy_within(at + 1..at + 1 + len, at + n);
    let mut v = len as u64;
    for b in &mut out[at..at + n] {
        *b = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
    }
    out[at + n - 1] &= 0x7f;
    Ok(())
}

fn encode_message(schema: &'static Schema, obj: &Map<'_>, out: &mut Vec<u8>) -> R<()> {
    let fields = schema.fields;
    let mut slots: [Option<(&str, &Value<'_>)>; MAX_FIELDS] = [None; MAX_FIELDS];
    let mut oneof: Option<&str> = None;
    for (key, value) in obj {
        let key: &str = key;
        let Some(i) = fields.iter().position(|f| f.camel == key || f.snake == key) else {
            continue; // unknown fields are ignored
        };
        if matches!(value, Value::Null) {
            continue; // null is the default
        }
        if let Some((first, _)) = slots[i].filter(|(first, _)| *first != key) {
            return fail(format!("given twice, as {first} and as {key}"))
                .map_err(|e| within(e, key, None));
        }
        if fields[i].oneof {
            if let Some(first) = oneof.filter(|first| *first != key) {
                return fail(format!(
                    "{} holds one value, but both {first} and {key} are given",
                    schema.name
                ))
                .map_err(|e| within(e, key, None));
            }
            oneof = Some(key);
        }
        slots[i] = Some((key, value));
    }
    for (i, field) in fields.iter().enumerate() {
        let Some((key, value)) = slots[i] else {
            continue;
        };
        if field.legacy && !field.repeated && i > 0 && slots[i - 1].is_some() {
            continue; // the current name wins
        }
        if field.repeated {
            let Value::Array(items) = value else {
                return expected("an array", value).map_err(|e| within(e, key, None));
            };
            for (n, item) in items.iter().enumerate() {
                encode_value(field, item, true, out).map_err(|e| within(e, key, Some(n)))?;
            }
        } else {
            encode_value(field, value, field.oneof, out).map_err(|e| within(e, key, None))?;
        }
    }
    Ok(())
}

/// Encodes one value of `field`; `always` encodes zero values too (oneof members, list items).
fn encode_value(field: &Field, value: &Value<'_>, always: bool, out: &mut Vec<u8>) -> R<()> {
    let number = field.number;
    match field.kind {
        Kind::Msg(schema) => {
            let Value::Object(obj) = value else {
                return expected(&format!("an object ({})", schema.name), value);
            };
            put_nested(out, number, |out| encode_message(schema, obj, out))
        }
        Kind::Str => {
            let Value::String(s) = value else {
                return expected("a string", value);
            };
            if always || !s.is_empty() {
                put_tag(out, number, 2);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Ok(())
        }
        Kind::Bool => {
            let Value::Bool(b) = value else {
                return expected("true or false", value);
            };
            if always || *b {
                put_tag(out, number, 0);
                out.push(u8::from(*b));
            }
            Ok(())
        }
        Kind::Int64 => {
            let v = int(
                value,
                i64::MIN as i128,
                i64::MAX as i128,
                "a 64-bit integer",
            )?;
            put_varint_field(out, number, v as i64 as u64, always)
        }
        Kind::Int32 => {
            let v = int(
                value,
                i32::MIN as i128,
                i32::MAX as i128,
                "a 32-bit integer",
            )?;
            put_varint_field(out, number, v as i64 as u64, always)
        }
        Kind::Uint32 => {
            let v = int(value, 0, u32::MAX as i128, "an unsigned 32-bit integer")?;
            put_varint_field(out, number, v as u64, always)
        }
        Kind::Enum(names) => {
            let v = match value {
                // An unknown name is ignored, as proto3 JSON parsers do when ignoring unknown fields
                // (a newer sender's value): the field keeps its default.
                Value::String(s) if !s.is_empty() && !is_int_text(s) => {
                    match names.iter().find(|(name, _)| *name == s.as_ref()) {
                        Some(&(_, v)) => i64::from(v),
                        None => return Ok(()),
                    }
                }
                _ => int(value, i32::MIN as i128, i32::MAX as i128, "an enum integer")? as i64,
            };
            put_varint_field(out, number, v as u64, always)
        }
        Kind::Fixed64 => {
            let v = int(value, 0, u64::MAX as i128, "an unsigned 64-bit integer")? as u64;
            if always || v != 0 {
                put_tag(out, number, 1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Ok(())
        }
        Kind::Fixed32 => {
            let v = int(value, 0, u32::MAX as i128, "an unsigned 32-bit integer")? as u32;
            if always || v != 0 {
                put_tag(out, number, 5);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Ok(())
        }
        Kind::Double => {
            let v = double(value)?;
            if always || v.to_bits() != 0 {
                put_tag(out, number, 1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Ok(())
        }
        Kind::Id(size, what) => {
            let Value::String(s) = value else {
                return expected(&format!("a {what} as a hex string"), value);
            };
            if s.is_empty() {
                return Ok(()); // absent (a root span's parent)
            }
            put_tag(out, number, 2);
            put_varint(out, size as u64);
            decode_id(s, size, what, out)
        }
        Kind::Bytes => {
            let Value::String(s) = value else {
                return expected("base64 bytes as a string", value);
            };
            if always || !s.is_empty() {
                put_tag(out, number, 2);
                let at = out.len();
                out.push(0);
                base64_decode(s.as_bytes(), out)
                    .map_or_else(|| fail(format!("invalid base64 {}", shown(s))), Ok)?;
                let len = out.len() - at - 1;
                let n = varint_len(len as u64);
                if n > 1 {
                    let mut header = Vec::with_capacity(n);
                    put_varint(&mut header, len as u64);
                    out.splice(at..at + 1, header);
                } else {
                    out[at] = len as u8;
                }
            }
            Ok(())
        }
    }
}

#[inline]
fn put_varint_field(out: &mut Vec<u8>, number: u32, v: u64, always: bool) -> R<()> {
    if always || v != 0 {
        put_tag(out, number, 0);
        put_varint(out, v);
    }
    Ok(())
}

fn is_int_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// An integer given as a number or as decimal text, within `[lo, hi]`.
fn int(value: &Value<'_>, lo: i128, hi: i128, what: &str) -> R<i128> {
    let v: Option<i128> = match value {
        Value::Number(Num::U64(u)) => Some(i128::from(*u)),
        Value::Number(Num::I64(i)) => Some(i128::from(*i)),
        // A float: only an integral one below 2^64 in magnitude is an integer.
        Value::Number(Num::F64(f)) => {
            (f.fract() == 0.0 && f.abs() < 18_446_744_073_709_551_616.0).then_some(*f as i128)
        }
        Value::String(s) if is_int_text(s) && s.len() <= 40 => s.parse::<i128>().ok(),
        Value::String(s) => return fail(format!("expected {what}, got {}", shown(s))),
        other => return expected(what, other),
    };
    match v {
        Some(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => fail(format!("expected {what}, got {value} (out of range)")),
    }
}

fn double(value: &Value<'_>) -> R<f64> {
    match value {
        Value::Number(Num::U64(v)) => Ok(*v as f64),
        Value::Number(Num::I64(v)) => Ok(*v as f64),
        Value::Number(Num::F64(v)) => Ok(*v),
        Value::String(s) => match s.as_ref() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            text => match text.parse::<f64>() {
                Ok(v) if v.is_finite() && !text.trim().is_empty() && text.trim() == text => Ok(v),
                _ => fail(format!(
                    "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\", got {}",
                    shown(text)
                )),
            },
        },
        other => expected("a number", other),
    }
}

#[inline]
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends the `size` bytes of a hex ID (base64 of the right length is accepted too).
fn decode_id(s: &str, size: usize, what: &str, out: &mut Vec<u8>) -> R<()> {
    let text = s.as_bytes();
    if text.len() == 2 * size {
        let at = out.len();
        let mut ok = true;
        for pair in text.chunks_exact(2) {
            match (hex_digit(pair[0]), hex_digit(pair[1])) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return Ok(());
        }
        out.truncate(at);
    }
    let at = out.len();
    if base64_decode(text, out).is_some() && out.len() - at == size {
        return Ok(());
    }
    out.truncate(at);
    fail(format!(
        "invalid {what} {}: expected {} hex digits",
        shown(s),
        2 * size
    ))
}

/// Decodes standard or URL-safe base64, padded or not; None when it is not base64.
fn base64_decode(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut text = text;
    let mut padding = 0;
    while let [rest @ .., b'='] = text {
        text = rest;
        padding += 1;
    }
    if padding > 2 || (padding > 0 && (text.len() + padding) % 4 != 0) || text.len() % 4 == 1 {
        return None;
    }
    out.reserve(text.len() / 4 * 3 + 2);
    let sextet = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut chunks = text.chunks_exact(4);
    for c in &mut chunks {
        let v =
            (sextet(c[0])? << 18) | (sextet(c[1])? << 12) | (sextet(c[2])? << 6) | sextet(c[3])?;
        out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
    }
    match *chunks.remainder() {
        [] => {}
        [a, b] => {
            let v = (sextet(a)? << 18) | (sextet(b)? << 12);
            out.push((v >> 16) as u8);
        }
        [a, b, c] => {
            let v = (sextet(a)? << 18) | (sextet(b)? << 12) | (sextet(c)? << 6);
            out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8]);
        }
        _ => return None,
    }
    Some(())
}

// ---- protobuf → OTLP/JSON -----------------------------------------------------------------------------

/// The deepest message level the encoder follows (AnyValue holds arrays of AnyValue): the limit of the
/// protobuf runtimes (upb, C++, Java), so whatever they parse, this writes, and the stack stays bounded.
const MAX_JSON_LEVELS: usize = 100;

/// Converts protobuf `ExportTraceServiceRequest` bytes into one line of OTLP/JSON, as the collector's file
/// exporter writes it: lowerCamelCase keys in field-number order, trace and span IDs as hex, 64-bit integers
/// as decimal strings, enums as integers, zero values left out (except in a oneof, and messages that are
/// present), doubles as Go writes them (`1`, `1.5`, `1e+21`, `"NaN"`).
///
/// It reads as a protobuf runtime does, so that `json_to_proto` gives back what the runtime serializes:
/// unknown fields and known fields of another wire type are skipped, a scalar given twice keeps its last
/// value, a message given twice is merged, a oneof keeps its last member. Strings that are not UTF-8 get
/// U+FFFD for each invalid sequence (JSON cannot carry them; Go's encoding/json does the same).
///
/// Errors are `Error::Decode` with the protobuf field path and the byte offset of malformed framing.
pub fn proto_to_json(payload: &[u8]) -> Result<String, Error> {
    let mut out = Vec::with_capacity(payload.len() * 2 + 2);
    write_message(&REQUEST, payload, 0, 1, &mut out).map_err(|f| {
        let f = f.into_info();
        Error::Decode {
            field: f.field,
            offset: f.offset,
            message: f.message,
        }
    })?;
    // Only `&str` text and ASCII were written.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A field's value as read: varints and fixed-size numbers widened to `u64`, or the bytes of a
/// length-delimited field with their absolute offset.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Int(u64),
    Len(&'a [u8], usize),
}

fn wire_of(kind: Kind) -> WireType {
    match kind {
        Kind::Msg(_) | Kind::Str | Kind::Id(..) | Kind::Bytes => WireType::Len,
        Kind::Bool | Kind::Int64 | Kind::Int32 | Kind::Uint32 | Kind::Enum(_) => WireType::Varint,
        Kind::Fixed64 | Kind::Double => WireType::I64,
        Kind::Fixed32 => WireType::I32,
    }
}

fn write_message(
    schema: &'static Schema,
    buf: &[u8],
    base: usize,
    level: usize,
    out: &mut Vec<u8>,
) -> WireResult<()> {
    if level > MAX_JSON_LEVELS {
        return Err(WireFail::new(
            base,
            format!(
                "{} nested deeper than {MAX_JSON_LEVELS} message levels",
                schema.name
            ),
        ));
    }
    let fields = schema.fields;
    let mut r = Reader::at_level(buf, base, level);
    let mut seen: Vec<(usize, Raw<'_>)> = Vec::new();
    let mut member: Option<usize> = None; // the oneof member set last
    while !r.is_empty() {
        let (number, wt) = r.read_tag()?;
        let known = fields
            .iter()
            .position(|f| f.number == number && !f.legacy && wire_of(f.kind) == wt);
        let Some(i) = known else {
            // Unknown, or known with another wire type: a protobuf runtime keeps it as an unknown field,
            // which JSON leaves out.
            r.skip(number, wt)?;
            continue;
        };
        let raw = match wt {
            WireType::Varint => Raw::Int(r.read_varint()?),
            WireType::I64 => Raw::Int(r.read_fixed64()?),
            WireType::I32 => Raw::Int(u64::from(r.read_fixed32()?)),
            _ => {
                let (bytes, at) = r.read_len()?;
                Raw::Len(bytes, at)
            }
        };
        if fields[i].oneof {
            if member.is_some_and(|m| m != i) {
                seen.retain(|(j, _)| !fields[*j].oneof); // setting a member clears the others
            }
            member = Some(i);
        }
        seen.push((i, raw));
    }
    // Stable: values of one field keep their order. Fields go in the order the .proto declares them, as pdata
    // writes them: field-number order but for Span's `flags` (16), declared after `parent_span_id`.
    seen.sort_by_key(|&(i, _)| json_rank(schema, i));
    out.push(b'{');
    let mut first = true;
    let mut rest = &seen[..];
    while let Some(&(i, _)) = rest.first() {
        let n = rest.iter().take_while(|(j, _)| *j == i).count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let field = &fields[i];
        let within = |f: WireFail, index: Option<usize>| match index {
            Some(k) => f.within(format!("{}[{k}]", field.snake)),
            None => f.within(field.snake),
        };
        if field.repeated {
            key(out, field.camel, &mut first);
            out.push(b'[');
            for (k, &(_, raw)) in group.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                write_value(field.kind, raw, level, out).map_err(|f| within(f, Some(k)))?;
            }
            out.push(b']');
            continue;
        }
        if let (Kind::Msg(_), [_, _, ..]) = (field.kind, group) {
            // A message given more than once is merged: parsing the concatenation of its parts does that.
            let mut merged = Vec::new();
            let mut at = 0;
            for &(_, raw) in group {
                if let Raw::Len(bytes, offset) = raw {
                    at = if merged.is_empty() { offset } else { at };
                    merged.extend_from_slice(bytes);
                }
            }
            key(out, field.camel, &mut first);
            write_value(field.kind, Raw::Len(&merged, at), level, out)
                .map_err(|f| within(f, None))?;
            continue;
        }
        let (_, raw) = group[n - 1]; // the last value wins
        if !field.oneof && is_zero(field.kind, raw) {
            continue;
        }
        key(out, field.camel, &mut first);
        write_value(field.kind, raw, level, out).map_err(|f| within(f, None))?;
    }
    out.push(b'}');
    Ok(())
}

fn json_rank(schema: &'static Schema, i: usize) -> usize {
    if !std::ptr::eq(schema, &SPAN) {
        return 2 * i;
    }
    match schema.fields[i].number {
        16 => 2 * 3 + 1, // right after parent_span_id (slot 3)
        _ => 2 * i,
    }
}

fn key(out: &mut Vec<u8>, name: &str, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A proto3 field without presence holding its default, which JSON leaves out (messages are always present).
fn is_zero(kind: Kind, raw: Raw<'_>) -> bool {
    match (kind, raw) {
        (Kind::Msg(_), _) => false,
        (_, Raw::Len(bytes, _)) => bytes.is_empty(),
        (Kind::Int32 | Kind::Uint32 | Kind::Enum(_), Raw::Int(v)) => v as u32 == 0,
        (_, Raw::Int(v)) => v == 0, // -0.0 is not the default: its bits are not zero
    }
}

fn write_value(kind: Kind, raw: Raw<'_>, level: usize, out: &mut Vec<u8>) -> WireResult<()> {
    use std::io::Write;
    let v = match raw {
        Raw::Int(v) => v,
        Raw::Len(bytes, at) => {
            match kind {
                Kind::Msg(schema) => write_message(schema, bytes, at, level + 1, out)?,
                Kind::Id(..) => {
                    out.push(b'"');
                    for b in bytes {
                        out.push(HEX[usize::from(b >> 4)]);
                        out.push(HEX[usize::from(b & 15)]);
                    }
                    out.push(b'"');
                }
                Kind::Bytes => {
                    out.push(b'"');
                    base64_encode(bytes, out);
                    out.push(b'"');
                }
                _ => write_str(&String::from_utf8_lossy(bytes), out),
            }
            return Ok(());
        }
    };
    // Writing to a Vec cannot fail.
    let _ = match kind {
        Kind::Bool => write!(out, "{}", v != 0),
        Kind::Int64 => write!(out, "\"{}\"", v as i64),
        Kind::Fixed64 => write!(out, "\"{v}\""),
        Kind::Int32 | Kind::Enum(_) => write!(out, "{}", v as u32 as i32),
        Kind::Uint32 | Kind::Fixed32 => write!(out, "{}", v as u32),
        Kind::Double => {
            write_double(f64::from_bits(v), out);
            Ok(())
        }
        // Length-delimited kinds never hold a number (`wire_of` matched the wire type).
        Kind::Msg(_) | Kind::Str | Kind::Id(..) | Kind::Bytes => Ok(()),
    };
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A double as pdata's JSON (the collector's file exporter) writes it: the shortest text that reads back to the
/// same bits, in exponent form below 1e-6 and from 1e21 (`1e-07`, `1e+21`); NaN and the infinities as the
/// strings proto3 JSON names them.
fn write_double(v: f64, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = if v.is_nan() {
        write!(out, "\"NaN\"")
    } else if v.is_infinite() {
        write!(
            out,
            "{}",
            if v > 0.0 {
                "\"Infinity\""
            } else {
                "\"-Infinity\""
            }
        )
    } else if v == 0.0 || (1e-6..1e21).contains(&v.abs()) {
        write!(out, "{v}")
    } else {
        // Go's 'e' format: a sign and at least two digits in the exponent.
        let text = format!("{v:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = exp.strip_prefix('-').map_or(('+', exp), |d| ('-', d));
        write!(out, "{mantissa}e{sign}{digits:0>2}")
    };
}

/// A JSON string, escaped as pdata's encoder (jsoniter without HTML escaping) does: quote, backslash and control
/// characters only, `\n`, `\r` and `\t` in short form, the others as `\u00XX`.
fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short != 0 {
            out.extend_from_slice(&[b'\\', short]);
        } else {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Standard base64 with padding, as proto3 JSON writes `bytes`.
fn base64_encode(bytes: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn ok(json: &str) -> String {
        match json_to_proto(json.as_bytes()) {
            Ok(bytes) => hex(&bytes),
            Err(e) => panic!("{json}: {e}"),
        }
    }

    fn err(json: &str) -> (String, usize, String) {
        match json_to_proto(json.as_bytes()) {
            Ok(bytes) => panic!("{json}: accepted as {}", hex(&bytes)),
            Err(Error::Decode {
                field,
                offset,
                message,
            }) => (field, offset, message),
            Err(e) => panic!("{json}: {e}"),
        }
    }

    /// `{"resourceSpans":[{"scopeSpans":[{"spans":[SPAN]}]}]}`
    fn in_span(span: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span}]}}]}}]}}"#)
    }

    /// The bytes of a request holding one span with `content`, as hex.
    fn span_bytes(content: &str) -> String {
        let n = content.len() / 2;
        let ss = format!("12{:02x}{content}", n);
        let rs = format!("12{:02x}{ss}", ss.len() / 2);
        format!("0a{:02x}{rs}", rs.len() / 2)
    }

    /// A span whose only attribute `k` has the AnyValue JSON `value`.
    fn attr(value: &str) -> String {
        in_span(&format!(
            r#"{{"attributes":[{{"key":"k","value":{value}}}]}}"#
        ))
    }

    /// The expected bytes for `attr`, from the AnyValue content as hex.
    fn attr_bytes(any: &str) -> String {
        let kv = format!("0a016b12{:02x}{any}", any.len() / 2);
        span_bytes(&format!("4a{:02x}{kv}", kv.len() / 2))
    }

    const TID: &str = "5b8efff798038103d269b633813fc60c";
    const SID: &str = "eee19b7ec3c1b174";

    #[test]
    fn empty_requests() {
        assert_eq!(ok("{}"), "");
        assert_eq!(ok(r#"{"resourceSpans":[]}"#), "");
        assert_eq!(ok(r#"{"resourceSpans":null}"#), "");
        assert_eq!(ok(r#"{"resourceSpans":[{}]}"#), "0a00");
        assert_eq!(ok(r#" {"resource_spans":[{"resource":{}}]} "#), "0a020a00");
        assert_eq!(ok(&in_span("{}")), span_bytes(""));
    }

    #[test]
    fn span_fields_in_field_number_order() {
        let json = in_span(&format!(
            r#"{{"flags":257,"status":{{"code":"STATUS_CODE_ERROR","message":"m"}},"endTimeUnixNano":"2",
            "startTimeUnixNano":1,"kind":"SPAN_KIND_SERVER","name":"n","parentSpanId":"",
            "traceState":"t","spanId":"{SID}","traceId":"{}","droppedAttributesCount":3,
            "droppedEventsCount":"4","droppedLinksCount":5,"unknown":{{"x":[1]}}}}"#,
            TID.to_uppercase()
        ));
        let expected = format!(
            "0a10{TID}1208{SID}1a0174{}{}{}{}{}{}{}{}{}",
            "2a016e",
            "3002",
            "390100000000000000",
            "410200000000000000",
            "5003",
            "6004",
            "7005",
            "7a0512016d1802",
            "850101010000",
        );
        assert_eq!(ok(&json), span_bytes(&expected));
        // snake_case names and numeric enums give the same bytes
        let snake = in_span(&format!(
            r#"{{"trace_id":"{TID}","span_id":"{SID}","trace_state":"t","name":"n","kind":2,
            "start_time_unix_nano":"1","end_time_unix_nano":2,"dropped_attributes_count":3,
            "dropped_events_count":4,"dropped_links_count":5,"status":{{"message":"m","code":2}},"flags":"257"}}"#
        ));
        assert_eq!(ok(&snake), span_bytes(&expected));
    }

    #[test]
    fn zero_values_are_omitted_but_given_messages_are_kept() {
        let json = in_span(
            r#"{"traceId":"","name":"","kind":0,"startTimeUnixNano":"0","flags":0,
            "droppedAttributesCount":0,"status":{},"events":[{}],"links":[]}"#,
        );
        assert_eq!(ok(&json), span_bytes("5a007a00"));
        // a key given twice: the last one wins, as in most JSON parsers
        assert_eq!(
            ok(&in_span(r#"{"name":"a","name":"b"}"#)),
            span_bytes("2a0162")
        );
        // unknown enum names are ignored (a newer sender's values), as json_format does
        let json = in_span(r#"{"kind":"SPAN_KIND_FUTURE","status":{"code":"STATUS_CODE_MAYBE"}}"#);
        assert_eq!(ok(&json), span_bytes("7a00"));
    }

    #[test]
    fn any_values() {
        let cases = [
            (r#"{"stringValue":""}"#, "0a00"),
            (r#"{"stringValue":"é"}"#, "0a02c3a9"),
            (r#"{"boolValue":false}"#, "1000"),
            (r#"{"boolValue":true}"#, "1001"),
            (r#"{"intValue":"0"}"#, "1800"),
            (r#"{"intValue":-1}"#, "18ffffffffffffffffff01"),
            (
                r#"{"intValue":"9223372036854775807"}"#,
                "18ffffffffffffffff7f",
            ),
            (
                r#"{"intValue":"-9223372036854775808"}"#,
                "1880808080808080808001",
            ),
            (r#"{"doubleValue":0}"#, "210000000000000000"),
            (r#"{"doubleValue":1.5}"#, "21000000000000f83f"),
            (r#"{"doubleValue":"Infinity"}"#, "21000000000000f07f"),
            (r#"{"doubleValue":"-Infinity"}"#, "21000000000000f0ff"),
            (r#"{"doubleValue":"NaN"}"#, "21000000000000f87f"),
            (r#"{"bytesValue":""}"#, "3a00"),
            (r#"{"bytesValue":"AQID"}"#, "3a03010203"),
            (r#"{"bytesValue":"AQ=="}"#, "3a0101"),
            (r#"{"bytesValue":"_-8"}"#, "3a02ffef"),
            (r#"{"arrayValue":{}}"#, "2a00"),
            (
                r#"{"arrayValue":{"values":[{"intValue":1},{}]}}"#,
                "2a060a0218010a00",
            ),
            (
                r#"{"kvlistValue":{"values":[{"key":"a","value":{"boolValue":true}}]}}"#,
                concat!("32090a070a01611202", "1001"),
            ),
            ("{}", ""),
            (r#"{"stringValueStrindex":0}"#, "4000"),
        ];
        for (json, any) in cases {
            assert_eq!(ok(&attr(json)), attr_bytes(any), "{json}");
        }
    }

    #[test]
    fn doubles_are_parsed_exactly() {
        for text in [
            "1.2792325433076591e-179",
            "0.1",
            "5e-324",
            "1.7976931348623157e308",
            "-2.2250738585072014e-308",
        ] {
            let want: f64 = text.parse().unwrap();
            for json in [
                format!("{{\"doubleValue\":{text}}}"),
                format!("{{\"doubleValue\":\"{text}\"}}"),
            ] {
                let any = format!("21{}", hex(&want.to_le_bytes()));
                assert_eq!(ok(&attr(&json)), attr_bytes(&any), "{json}");
            }
        }
    }

    #[test]
    fn long_fields_get_multi_byte_lengths() {
        let name = "x".repeat(300);
        let bytes = json_to_proto(in_span(&format!(r#"{{"name":"{name}"}}"#)).as_bytes()).unwrap();
        // request → resource spans → scope spans → span, each with a 2-byte length
        assert_eq!(hex(&bytes[..3]), "0ab502");
        assert_eq!(bytes.len(), 3 * 3 + 3 + 300);
        assert_eq!(hex(&bytes[9..12]), "2aac02");
        let b64 = "AAAA".repeat(100);
        let bytes =
            json_to_proto(attr(&format!(r#"{{"bytesValue":"{b64}"}}"#)).as_bytes()).unwrap();
        assert_eq!(hex(&bytes[bytes.len() - 303..bytes.len() - 300]), "3aac02");
        assert!(bytes[bytes.len() - 300..].iter().all(|&b| b == 0));
    }

    #[test]
    fn events_links_resource_scope() {
        let json = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"a","value":{{"intValue":"7"}}}}],
            "droppedAttributesCount":1,"entityRefs":[{{"type":"t","idKeys":["a",""]}}]}},"schemaUrl":"r",
            "scopeSpans":[{{"scope":{{"name":"s","version":"v","droppedAttributesCount":2}},"schemaUrl":"u",
            "spans":[{{"events":[{{"timeUnixNano":"1","name":"e","droppedAttributesCount":1}}],
            "links":[{{"traceId":"{TID}","spanId":"{SID}","traceState":"x","flags":1,"droppedAttributesCount":2}}]}}]}}]}}]}}"#
        );
        let event = concat!("090100000000000000120165", "2001");
        let link = format!("0a10{TID}1208{SID}1a017828023501000000");
        let span = format!(
            "5a{:02x}{event}6a{:02x}{link}",
            event.len() / 2,
            link.len() / 2
        );
        let scope = concat!("0a0173120176", "2002");
        let ss = format!(
            "0a{:02x}{scope}12{:02x}{span}1a0175",
            scope.len() / 2,
            span.len() / 2
        );
        let entity = "1201741a01611a00";
        let attr = concat!("0a01611202", "1807");
        let resource = format!(
            "0a{:02x}{attr}10011a{:02x}{entity}",
            attr.len() / 2,
            entity.len() / 2
        );
        let rs = format!(
            "0a{:02x}{resource}12{:02x}{ss}1a0172",
            resource.len() / 2,
            ss.len() / 2
        );
        assert_eq!(ok(&json), format!("0a{:02x}{rs}", rs.len() / 2));
    }

    #[test]
    fn legacy_instrumentation_library_spans() {
        let json = r#"{"resourceSpans":[{"instrumentationLibrarySpans":[{"instrumentationLibrary":{"name":"b"}}],
            "scopeSpans":[{"scope":{"name":"a"},"instrumentation_library":{"name":"z"}}]}]}"#;
        assert_eq!(
            ok(json),
            concat!("0a0e", "12050a030a0161", "12050a030a0162")
        );
    }

    #[test]
    fn ids_accept_base64_of_the_right_size() {
        // 16 bytes 0x00..0x0f in base64
        let json = in_span(r#"{"traceId":"AAECAwQFBgcICQoLDA0ODw=="}"#);
        assert_eq!(
            ok(&json),
            span_bytes("0a10000102030405060708090a0b0c0d0e0f")
        );
    }

    #[test]
    fn errors_name_the_path() {
        let span = "resourceSpans[0].scopeSpans[0].spans[0]";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                in_span(r#"{"traceId":"abc"}"#),
                "traceId",
                "invalid trace id \"abc\": expected 32 hex digits",
            ),
            (
                in_span(&format!(
                    r#"{{"traceId":"{}"}}"#,
                    &TID[..30].to_string().replace('5', "z")
                )),
                "traceId",
                "expected 32 hex digits",
            ),
            (
                in_span(&format!(r#"{{"traceId":"{}zz"}}"#, &TID[..30])),
                "traceId",
                "expected 32 hex digits",
            ),
            (
                in_span(&format!(r#"{{"spanId":"{TID}"}}"#)),
                "spanId",
                "invalid span id",
            ),
            (
                in_span(r#"{"parent_span_id":"0102"}"#),
                "parent_span_id",
                "invalid parent span id",
            ),
            (in_span(r#"{"traceId":5}"#), "traceId", "got a number"),
            (
                in_span(r#"{"links":[{},{"spanId":"x"}]}"#),
                "links[1].spanId",
                "invalid span id",
            ),
            (
                in_span(r#"{"links":{}}"#),
                "links",
                "expected an array, got an object",
            ),
            (in_span(r#"{"events":[null]}"#), "events[0]", "got null"),
            (
                in_span(r#"{"name":1}"#),
                "name",
                "expected a string, got a number",
            ),
            (in_span(r#"{"kind":2147483648}"#), "kind", "out of range"),
            (in_span(r#"{"kind":true}"#), "kind", "got a boolean"),
            (
                in_span(r#"{"status":[]}"#),
                "status",
                "expected an object (Status), got an array",
            ),
            (
                in_span(r#"{"startTimeUnixNano":"-1"}"#),
                "startTimeUnixNano",
                "out of range",
            ),
            (
                in_span(r#"{"startTimeUnixNano":"18446744073709551616"}"#),
                "startTimeUnixNano",
                "out of range",
            ),
            (
                in_span(r#"{"startTimeUnixNano":"1.5"}"#),
                "startTimeUnixNano",
                "got \"1.5\"",
            ),
            (
                in_span(r#"{"startTimeUnixNano":1.5}"#),
                "startTimeUnixNano",
                "out of range",
            ),
            (
                in_span(r#"{"endTimeUnixNano":"x"}"#),
                "endTimeUnixNano",
                "expected an unsigned 64-bit integer",
            ),
            (
                in_span(r#"{"droppedLinksCount":4294967296}"#),
                "droppedLinksCount",
                "out of range",
            ),
            (in_span(r#"{"flags":-1}"#), "flags", "out of range"),
            (
                in_span(r#"{"name":"a","trace_id":"","traceId":""}"#),
                "traceId",
                "given twice",
            ),
            (
                attr(r#"{"intValue":"9223372036854775808"}"#),
                "attributes[0].value.intValue",
                "out of range",
            ),
            (
                attr(r#"{"intValue":[]}"#),
                "attributes[0].value.intValue",
                "got an array",
            ),
            (
                attr(r#"{"doubleValue":"inf"}"#),
                "attributes[0].value.doubleValue",
                "\"NaN\"",
            ),
            (
                attr(r#"{"doubleValue":true}"#),
                "attributes[0].value.doubleValue",
                "expected a number",
            ),
            (
                attr(r#"{"boolValue":"true"}"#),
                "attributes[0].value.boolValue",
                "expected true or false",
            ),
            (
                attr(r#"{"bytesValue":"a"}"#),
                "attributes[0].value.bytesValue",
                "invalid base64",
            ),
            (
                attr(r#"{"bytesValue":"a*=="}"#),
                "attributes[0].value.bytesValue",
                "invalid base64",
            ),
            (
                attr(r#"{"stringValue":"a","intValue":1}"#),
                "attributes[0].value.",
                "holds one value",
            ),
            (
                attr(r#"{"arrayValue":{"values":[{"kvlistValue":{"values":[{"key":3}]}}]}}"#),
                "attributes[0].value.arrayValue.values[0].kvlistValue.values[0].key",
                "expected a string",
            ),
            (
                r#"{"resourceSpans":{}}"#.into(),
                "resourceSpans",
                "expected an array",
            ),
            (
                r#"{"resourceSpans":[{"resource":{"droppedAttributesCount":-1}}]}"#.into(),
                "resourceSpans[0].resource.droppedAttributesCount",
                "out of range",
            ),
            (
                r#"{"resourceSpans":[{"scopeSpans":[{"scope":{"version":false}}]}]}"#.into(),
                "resourceSpans[0].scopeSpans[0].scope.version",
                "expected a string",
            ),
            (
                r#"{"resourceSpans":[{"schemaUrl":{}}]}"#.into(),
                "resourceSpans[0].schemaUrl",
                "got an object",
            ),
        ];
        for (json, field, message) in cases {
            let (got_field, offset, got_message) = err(&json);
            let want = if field.starts_with("resourceSpans") {
                field.to_string()
            } else {
                format!("{span}.{field}")
            };
            if let Some(prefix) = want.strip_suffix('.') {
                assert!(got_field.starts_with(prefix), "{json}: {got_field}");
            } else {
                assert_eq!(got_field, want, "{json}");
            }
            assert_eq!(offset, 0, "{json}");
            assert!(got_message.contains(message), "{json}: {got_message}");
        }
    }

    #[test]
    fn whole_request_errors() {
        let cases = [
            ("[]", "expected a JSON object, got an array"),
            ("null", "got null"),
            (r#"{"resourceMetrics":[]}"#, "it holds metrics, not traces"),
            (
                r#"{"resource_logs":[],"resourceProfiles":[]}"#,
                "holds logs and profiles",
            ),
            (r#"{"b":1,"a":2}"#, "no resourceSpans (keys: a, b)"),
        ];
        for (json, message) in cases {
            let (field, offset, got) = err(json);
            assert_eq!((field.as_str(), offset), ("", 0), "{json}");
            assert!(got.contains(message), "{json}: {got}");
        }
    }

    #[test]
    fn syntax_errors_report_a_byte_offset() {
        let cases: [(&[u8], usize); 5] = [
            (b"{\"resourceSpans\":[}", 18),
            (b"{\n  \"a\": tru }", 11),
            (b"", 0),
            (b"{\"a\":\"\xff\"}", 6),
            (b"{\"a\":\"\\ud800\"}", 12),
        ];
        for (body, at) in cases {
            let Err(Error::Decode {
                field,
                offset,
                message,
            }) = json_to_proto(body)
            else {
                panic!("{body:?} accepted");
            };
            assert_eq!(field, "");
            assert!(message.starts_with("invalid JSON: "), "{message}");
            assert!(
                offset.abs_diff(at) <= 2,
                "{body:?}: {offset} vs {at}: {message}"
            );
        }
    }

    // ---- protobuf → OTLP/JSON ----

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn to_json(hex_bytes: &str) -> String {
        proto_to_json(&unhex(hex_bytes)).unwrap_or_else(|e| panic!("{hex_bytes}: {e}"))
    }

    /// Scenario: JSON written by hand, its protobuf, then JSON again. Guarantees: the JSON the encoder writes
    /// reads back to the same bytes (the codec is one thing, both directions).
    #[test]
    fn proto_json_proto_is_byte_identical() {
        let cases = [
            format!(
                r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"a","value":{{"intValue":"7"}}}}],
                "droppedAttributesCount":1,"entityRefs":[{{"type":"t","idKeys":["a",""]}}]}},"schemaUrl":"r",
                "scopeSpans":[{{"scope":{{"name":"s","version":"v","droppedAttributesCount":2}},"schemaUrl":"u",
                "spans":[{{"traceId":"{TID}","spanId":"{SID}","parentSpanId":"{SID}","traceState":"t","name":"n",
                "kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"18446744073709551615","flags":257,
                "status":{{"message":"m","code":2}},"droppedEventsCount":4,
                "events":[{{"timeUnixNano":"1","name":"e","droppedAttributesCount":1}},{{}}],
                "links":[{{"traceId":"{TID}","spanId":"{SID}","traceState":"x","flags":1}}]}}]}}]}}]}}"#
            ),
            attr(
                r#"{"arrayValue":{"values":[{"intValue":"-1"},{},{"boolValue":false},{"stringValue":""}]}}"#,
            ),
            attr(
                r#"{"kvlistValue":{"values":[{"key":"a","value":{"doubleValue":-0.0}},{"key":""}]}}"#,
            ),
            attr(r#"{"bytesValue":"AP8gYg=="}"#),
            attr(r#"{"doubleValue":"NaN"}"#),
            attr(r#"{"stringValueStrindex":-3}"#),
            in_span(r#"{"status":{},"kind":-1}"#),
        ];
        for json in cases {
            let proto = json_to_proto(json.as_bytes()).unwrap();
            let text = proto_to_json(&proto).unwrap();
            assert_eq!(json_to_proto(text.as_bytes()).unwrap(), proto, "{text}");
            assert!(!text.contains('\n') && !text.contains(' '), "{text}");
        }
    }

    #[test]
    fn json_is_what_the_collector_writes() {
        let json = in_span(&format!(
            r#"{{"traceId":"{TID}","spanId":"{SID}","name":"GET \"/\"\n","kind":"SPAN_KIND_SERVER",
            "startTimeUnixNano":5,"status":{{"code":2}},"attributes":[{{"key":"n","value":{{"intValue":3}}}}]}}"#
        ));
        assert_eq!(
            proto_to_json(&json_to_proto(json.as_bytes()).unwrap()).unwrap(),
            format!(
                concat!(
                    r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{}","spanId":"{}","#,
                    r#""name":"GET \"/\"\n","kind":2,"startTimeUnixNano":"5","#,
                    r#""attributes":[{{"key":"n","value":{{"intValue":"3"}}}}],"status":{{"code":2}}}}]}}]}}]}}"#
                ),
                TID, SID
            )
        );
        // span flags come right after parentSpanId, where the .proto declares them (pdata's order)
        let json = in_span(&format!(
            r#"{{"name":"n","flags":1,"parentSpanId":"{SID}"}}"#
        ));
        assert_eq!(
            proto_to_json(&json_to_proto(json.as_bytes()).unwrap()).unwrap(),
            in_span(&format!(
                r#"{{"parentSpanId":"{SID}","flags":1,"name":"n"}}"#
            ))
        );
        assert_eq!(to_json(""), "{}");
        // an empty message that is present is written; zero scalars are not
        assert_eq!(to_json("0a00"), r#"{"resourceSpans":[{}]}"#);
        assert_eq!(
            to_json(&span_bytes("2a0030007a00")),
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"status":{}}]}]}]}"#
        );
    }

    #[test]
    fn doubles_are_written_as_go_writes_them() {
        let cases = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (-2.25e-5, "-0.0000225"),
            (1e-6, "0.000001"),
            (1e-7, "1e-07"),
            (1.2345e-300, "1.2345e-300"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-2.5e-5, "-0.000025"),
            (1e100, "1e+100"),
            (0.1, "0.1"),
            (f64::INFINITY, "\"Infinity\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
            (f64::NAN, "\"NaN\""),
        ];
        for (v, want) in cases {
            let any = format!("21{}", hex(&f64::to_le_bytes(v)));
            let text = to_json(&attr_bytes(&any));
            let got = text
                .split_once(r#""doubleValue":"#)
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(number, _)| number)
                .unwrap();
            assert_eq!(got, want, "{v:e}");
            let back = json_to_proto(text.as_bytes()).unwrap();
            assert_eq!(hex(&back), attr_bytes(&any), "{v:e}");
        }
    }

    #[test]
    fn read_as_a_protobuf_runtime_reads() {
        let cases = [
            // unknown fields and a known field of another wire type are left out
            ("0a02780178010a00", r#"{"resourceSpans":[{},{}]}"#),
            (
                &*span_bytes("2801"),
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{}]}]}]}"#,
            ),
            // a scalar given twice: the last; a message given twice: merged
            (
                &*span_bytes("2a01612a0162"),
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"b"}]}]}]}"#,
            ),
            (
                "0a060a0210010a00",
                r#"{"resourceSpans":[{"resource":{"droppedAttributesCount":1}}]}"#,
            ),
            // a oneof keeps its last member, even a zero one
            (
                &*attr_bytes("0a01781000"),
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"boolValue":false}}]}]}]}]}"#,
            ),
            // invalid UTF-8 becomes U+FFFD; control characters are escaped
            (
                &*span_bytes("2a0561ff01081f"),
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a�\u0001\u0008\u001f"}]}]}]}"#,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(to_json(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn malformed_protobuf_is_an_error_with_its_place() {
        let cases = [
            ("0a05616263", "runs past the end"),
            ("0a", "truncated varint"),
            ("0f", "invalid wire type 7"),
            (&*span_bytes("3980"), "truncated fixed64"),
        ];
        for (bytes, message) in cases {
            match proto_to_json(&unhex(bytes)) {
                Err(Error::Decode { message: got, .. }) => {
                    assert!(got.contains(message), "{bytes}: {got}")
                }
                other => panic!("{bytes}: {other:?}"),
            }
        }
        let Err(Error::Decode { field, offset, .. }) = proto_to_json(&unhex(&span_bytes("3980")))
        else {
            panic!("accepted")
        };
        assert_eq!(field, "resource_spans[0].scope_spans[0].spans[0]");
        assert_eq!(offset, 7);
    }

    #[test]
    fn deep_values_are_refused_not_overflowing_the_stack() {
        // AnyValue{arrayValue{values[AnyValue{...}]}} 200 levels deep
        let mut any: Vec<u8> = Vec::new();
        for _ in 0..200 {
            let mut array = vec![0x0a];
            put_varint(&mut array, any.len() as u64);
            array.extend_from_slice(&any);
            let mut next = vec![0x2a];
            put_varint(&mut next, array.len() as u64);
            next.extend_from_slice(&array);
            any = next;
        }
        let mut request = Vec::new();
        for field in [0x12, 0x4a, 0x12, 0x12, 0x0a] {
            // AnyValue in KeyValue, in Span, in ScopeSpans, in ResourceSpans, in the request
            let mut outer = vec![field];
            put_varint(&mut outer, any.len() as u64);
            outer.extend_from_slice(&any);
            any = outer;
            request.clone_from(&any);
        }
        let Err(Error::Decode { message, .. }) = proto_to_json(&request) else {
            panic!("accepted");
        };
        assert!(message.contains("nested deeper than 100"), "{message}");
    }

    #[test]
    fn tables_fit_the_slots_and_are_in_field_order() {
        for s in [
            &REQUEST,
            &RESOURCE_SPANS,
            &RESOURCE,
            &ENTITY_REF,
            &SCOPE_SPANS,
            &SCOPE,
            &SPAN,
            &EVENT,
            &LINK,
            &STATUS,
            &KEY_VALUE,
            &ANY_VALUE,
            &ARRAY_VALUE,
            &KEY_VALUE_LIST,
        ] {
            assert!(s.fields.len() <= MAX_FIELDS, "{}", s.name);
            assert!(
                s.fields.windows(2).all(|w| w[0].number <= w[1].number),
                "{}",
                s.name
            );
        }
    }
}
