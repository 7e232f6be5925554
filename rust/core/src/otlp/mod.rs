//! OTLP protobuf in and out: the wire format, the request scanner and the encoder of kept spans.

pub mod attribute_keys;
pub mod decode;
pub mod encode;
pub mod json;
pub mod pdata_size;
pub mod split;
pub mod wire;

pub use decode::{
    decode, key_spellings, AttrKeys, AttrValue, Decoded, ResourceView, ScopeView, SpanView,
};
