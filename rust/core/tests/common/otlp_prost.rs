//! OTLP trace messages as prost types (field numbers from opentelemetry-proto), for tests and benchmarks:
//! the reference decoder to compare the scanner with, and a way to build payloads.
#![allow(dead_code, clippy::enum_variant_names)] // names mirror the .proto files

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "10")]
    pub dropped_attributes_count: u32,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
    #[prost(uint32, tag = "12")]
    pub dropped_events_count: u32,
    #[prost(message, repeated, tag = "13")]
    pub links: Vec<Link>,
    #[prost(uint32, tag = "14")]
    pub dropped_links_count: u32,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Link {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "5")]
    pub dropped_attributes_count: u32,
    #[prost(fixed32, tag = "6")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        #[prost(bytes = "vec", tag = "7")]
        BytesValue(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

pub fn kv_str(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}
pub fn kv_int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
    }
}
pub fn kv_bool(key: &str, v: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(v)),
        }),
    }
}
pub fn kv_double(key: &str, v: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(v)),
        }),
    }
}

/// A small deterministic generator (xorshift) so tests and benchmarks need no rand crate.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn id16(&mut self) -> Vec<u8> {
        let mut v = self.next().to_le_bytes().to_vec();
        v.extend_from_slice(&(self.next() | 1).to_le_bytes());
        v
    }
    pub fn id8(&mut self) -> Vec<u8> {
        (self.next() | 1).to_le_bytes().to_vec()
    }
}

/// A realistic span: ~10 attributes, some events and links now and then.
pub fn span(
    rng: &mut Rng,
    trace_id: &[u8],
    parent: &[u8],
    name: &str,
    start: u64,
    dur: u64,
    error: bool,
) -> Span {
    let attrs = vec![
        kv_str(
            "http.request.method",
            ["GET", "POST", "PUT"][rng.below(3) as usize],
        ),
        kv_str("http.route", "/api/v1/orders/{id}"),
        kv_str(
            "url.path",
            &format!("/api/v1/orders/{}", rng.below(100_000)),
        ),
        kv_int("http.response.status_code", if error { 500 } else { 200 }),
        kv_str("server.address", "orders.internal"),
        kv_int("server.port", 8080),
        kv_str("user.id", &format!("user-{}", rng.below(10_000))),
        kv_bool("cache.hit", rng.below(2) == 0),
        kv_double("payment.amount", rng.below(100_000) as f64 / 100.0),
        kv_str("db.system.name", "postgresql"),
    ];
    let events = if rng.below(10) == 0 {
        vec![Event {
            time_unix_nano: start + dur / 2,
            name: "validation_complete".into(),
            attributes: vec![kv_int("record_count", 12)],
            dropped_attributes_count: 0,
        }]
    } else {
        Vec::new()
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: rng.id8(),
        trace_state: if rng.below(20) == 0 {
            "vendor=abc,ot=th:fd70a4".into()
        } else {
            String::new()
        },
        parent_span_id: parent.to_vec(),
        name: name.into(),
        kind: (1 + rng.below(5)) as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        attributes: attrs,
        events,
        status: Some(Status {
            message: if error { "boom".into() } else { String::new() },
            code: if error { 2 } else { 0 },
        }),
        flags: 0x101,
        ..Default::default()
    }
}

pub fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            kv_str("service.name", service),
            kv_str("service.version", "1.4.2"),
            kv_str("deployment.environment.name", "production"),
            kv_str("host.name", "ip-10-0-3-17"),
            kv_str("telemetry.sdk.language", "python"),
        ],
        dropped_attributes_count: 0,
    }
}

/// One request of `spans` spans in traces of `per_trace` spans, under one resource and scope.
pub fn request(
    rng: &mut Rng,
    spans: usize,
    per_trace: usize,
    service: &str,
) -> ExportTraceServiceRequest {
    let mut out = Vec::with_capacity(spans);
    let base = 1_700_000_000_000_000_000u64;
    while out.len() < spans {
        let tid = rng.id16();
        let mut root = Vec::new();
        let error = rng.below(100) == 0;
        for i in 0..per_trace.min(spans - out.len()) {
            let s = span(
                rng,
                &tid,
                if i == 0 { &[] } else { &root },
                "GET /api/v1/orders/{id}",
                base + i as u64 * 1000,
                5_000_000,
                error && i == 1,
            );
            if i == 0 {
                root = s.span_id.clone();
            }
            out.push(s);
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(service)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "2.1.0".into(),
                    ..Default::default()
                }),
                spans: out,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
    }
}
