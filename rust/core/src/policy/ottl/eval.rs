//! Evaluation of a parsed condition on one span or span event.
//!
//! Values are borrowed from the span, its extracted attributes or the condition's literals; an ID's hex form is
//! compared digit by digit as it is produced, and numbers formatted for `IsMatch` go to stack buffers. Nothing
//! allocates except an error's message, `IsMatch` on a bytes value longer than 32 bytes (its hex form),
//! `trace_state["k"]` on a non-empty trace state (which `policy::trace_state::get` parses with a small `Vec`),
//! the string converters' results (`ToLowerCase`, `Concat`, `String`, …) and the JSON text of a map or list.
//!
//! `value`, `path`, `attr` and `compare` are inlined into `condition` on purpose: returning a value through
//! memory from a call and reading it back cost several times the comparison itself (measured: ~25 → ~10 ns).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::{self, Write as _};

use super::parser::{Attr, BoolExpr, Call, Func, Index, Lit, Math, MathOp, Path, Source, Value};
use super::{raw, CmpOp, SpanCtx};
use crate::otlp::decode::AttrValue;
use crate::policy::trace_state;

/// Why a condition could not be evaluated on a span or event (the reference's evaluation errors, which its
/// `error_mode` decides about).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        EvalError {
            message: message.into(),
        }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EvalError {}

type EResult<T> = Result<T, EvalError>;

/// What a condition is evaluated against.
pub(crate) struct Env<'v> {
    pub span: &'v SpanCtx<'v>,
    pub event_name: &'v str,
    pub event_attrs: &'v [AttrValue<'v>],
}

/// A value while evaluating: OTTL's `nil`, `bool`, `int64`, `float64`, `string`, `[]byte`, `pcommon.Map` and
/// `pcommon.Slice` (the last two as the encoded body of the map or list, read when needed).
#[derive(Debug, Clone)]
pub(crate) enum Val<'v> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'v str),
    /// A string: these ID bytes in lowercase hex (written out only when needed).
    Hex(&'v [u8]),
    Bytes(&'v [u8]),
    /// A string a converter made (`ToLowerCase`, `Concat`, ...).
    Own(String),
    /// A map value's body (`KeyValueList`).
    Map(&'v [u8]),
    /// A list value's body (`ArrayValue`).
    Slice(&'v [u8]),
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The lowercase hex digits of `id`.
fn hex_digits(id: &[u8]) -> impl Iterator<Item = u8> + '_ {
    id.iter()
        .flat_map(|b| [HEX_DIGITS[(b >> 4) as usize], HEX_DIGITS[(b & 15) as usize]])
}

impl<'v> Val<'v> {
    fn of_attr(a: AttrValue<'v>) -> Val<'v> {
        match a {
            // An absent key is nil; so is an empty AnyValue (`ottlcommon.GetValue` returns nil for it).
            AttrValue::Absent | AttrValue::Empty => Val::Nil,
            AttrValue::Str(s) => Val::Str(s),
            AttrValue::Bool(b) => Val::Bool(b),
            AttrValue::Int(i) => Val::Int(i),
            AttrValue::Double(f) => Val::Float(f),
            AttrValue::Bytes(b) => Val::Bytes(b),
            AttrValue::Array(b) => Val::Slice(b),
            AttrValue::Map(b) => Val::Map(b),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "nil",
            Val::Bool(_) => "a boolean",
            Val::Int(_) => "an int",
            Val::Float(_) => "a float",
            Val::Str(_) | Val::Hex(_) | Val::Own(_) => "a string",
            Val::Bytes(_) => "bytes",
            Val::Map(_) => "a map",
            Val::Slice(_) => "a list",
        }
    }

    fn is_str(&self) -> bool {
        matches!(self, Val::Str(_) | Val::Hex(_) | Val::Own(_))
    }

    /// The string, if it is one held as text (not an ID's hex form).
    #[inline(always)]
    fn text(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Own(s) => Some(s),
            _ => None,
        }
    }
}

pub(crate) fn condition(e: &BoolExpr, env: &Env<'_>) -> EResult<bool> {
    match e {
        BoolExpr::Or(items) => {
            for item in items {
                if condition(item, env)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        BoolExpr::And(items) => {
            for item in items {
                if !condition(item, env)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        BoolExpr::Not(e) => Ok(!condition(e, env)?),
        BoolExpr::Const(b) => Ok(*b),
        BoolExpr::Compare { op, left, right } => {
            let a = value(left, env)?;
            let b = value(right, env)?;
            compare(&a, &b, *op)
        }
        BoolExpr::Converter(c) => match call(c, env)? {
            Val::Bool(b) => Ok(b),
            other => Err(EvalError::new(format!(
                "value returned from converter `{}` must be a boolean, got {}",
                c.text,
                other.type_name()
            ))),
        },
    }
}

#[inline(always)]
fn value<'v>(v: &'v Value, env: &Env<'v>) -> EResult<Val<'v>> {
    Ok(match v {
        Value::Lit(l) => match l {
            Lit::Nil => Val::Nil,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(i) => Val::Int(*i),
            Lit::Float(f) => Val::Float(*f),
            Lit::Str(s) => Val::Str(s),
            Lit::Bytes(b) => Val::Bytes(b),
        },
        Value::Path(Path::Attr(a)) if !a.path.is_empty() => indexed(a, env)?,
        Value::Path(p) => path(p, env),
        Value::Call(c) => call(c, env)?,
        Value::Math(m) => math(m, env)?,
    })
}

#[inline(always)]
fn attr<'v>(a: &Attr, env: &Env<'v>) -> Val<'v> {
    Val::of_attr(attr_value(a, env))
}

#[inline(always)]
fn attr_value<'v>(a: &Attr, env: &Env<'v>) -> AttrValue<'v> {
    let values = match a.source {
        Source::Span => env.span.attrs,
        Source::Resource => env.span.resource_attrs,
        Source::Event => env.event_attrs,
        Source::Scope => return raw::scope_attribute(env.span.scope_raw, &a.key),
    };
    values.get(a.index).copied().unwrap_or_default()
}

/// `attributes["k"][…]…` as OTTL's `getIndexableValue` reads it: a string indexes a map (a missing key is nil),
/// an int indexes a list (out of range is an error), anything else is an error; an absent attribute is nil
/// before any indexing.
fn indexed<'v>(a: &'v Attr, env: &Env<'v>) -> EResult<Val<'v>> {
    let mut v = attr_value(a, env);
    if !v.is_present() {
        return Ok(Val::Nil);
    }
    for ix in &a.path {
        v = match (v, ix) {
            (AttrValue::Map(_), Index::Key(k)) => match v.get(k) {
                AttrValue::Absent => return Ok(Val::Nil),
                found => found,
            },
            (AttrValue::Array(_), Index::At(i)) => {
                match usize::try_from(*i).ok().and_then(|i| v.elements().nth(i)) {
                    Some(found) => found,
                    None => {
                        return Err(EvalError::new(format!(
                            "{}: index {i} out of bounds (the list has {} elements)",
                            a.text,
                            v.elements().count()
                        )))
                    }
                }
            }
            (AttrValue::Map(_), Index::At(i)) => {
                return Err(EvalError::new(format!(
                    "{}: a map is indexed by a string key, not an int (`[{i}]`)",
                    a.text
                )))
            }
            (AttrValue::Array(_), Index::Key(k)) => {
                return Err(EvalError::new(format!(
                    "{}: a list is indexed by an int, not a string (`[{k:?}]`)",
                    a.text
                )))
            }
            (other, _) => {
                return Err(EvalError::new(format!(
                    "{}: {} cannot be indexed",
                    a.text,
                    match other {
                        AttrValue::Empty => "an empty value",
                        _ => Val::of_attr(other).type_name(),
                    }
                )))
            }
        };
    }
    Ok(Val::of_attr(v))
}

#[inline(always)]
fn path<'v>(p: &'v Path, env: &Env<'v>) -> Val<'v> {
    let s = env.span.span;
    match p {
        Path::SpanName => Val::Str(s.name),
        Path::SpanKind => Val::Int(s.kind as i64),
        Path::SpanKindString => Val::Str(match s.kind {
            0 => "Unspecified",
            1 => "Internal",
            2 => "Server",
            3 => "Client",
            4 => "Producer",
            5 => "Consumer",
            _ => "",
        }),
        Path::SpanKindDeprecatedString => Val::Str(match s.kind {
            0 => "SPAN_KIND_UNSPECIFIED",
            1 => "SPAN_KIND_INTERNAL",
            2 => "SPAN_KIND_SERVER",
            3 => "SPAN_KIND_CLIENT",
            4 => "SPAN_KIND_PRODUCER",
            5 => "SPAN_KIND_CONSUMER",
            _ => "",
        }),
        Path::StatusCode => Val::Int(s.status_code as i64),
        // `Timestamp.AsTime().UnixNano()`: the uint64 as an int64.
        Path::StartTimeUnixNano => Val::Int(s.start_time_unix_nano as i64),
        Path::EndTimeUnixNano => Val::Int(s.end_time_unix_nano as i64),
        Path::TraceState => Val::Str(s.trace_state),
        Path::TraceStateKey(k) => match trace_state::get(s.trace_state, k) {
            Ok(v) => Val::Str(v),
            Err(_) => Val::Nil,
        },
        Path::TraceIdString => Val::Hex(&s.trace_id),
        Path::SpanIdString => Val::Hex(&s.span_id),
        Path::ParentSpanIdString => Val::Hex(s.parent_span_id.as_ref().map_or(&[0; 8], |p| p)),
        Path::ScopeName => Val::Str(env.span.scope_name),
        Path::ScopeVersion => Val::Str(raw::scope_version(env.span.scope_raw)),
        Path::StatusMessage => Val::Str(raw::status_message(s.raw)),
        Path::EventName => Val::Str(env.event_name),
        Path::Attr(a) => attr(a, env),
    }
}

fn call<'v>(c: &'v Call, env: &Env<'v>) -> EResult<Val<'v>> {
    let t = value(&c.target, env)?;
    Ok(match &c.func {
        Func::IsMatch(re) => Val::Bool(match t {
            Val::Nil => false,
            _ => with_str(&t, &c.text, |s| re.is_match(s))?,
        }),
        Func::IsString => Val::Bool(t.is_str()),
        Func::IsInt => Val::Bool(matches!(t, Val::Int(_))),
        Func::IsDouble => Val::Bool(matches!(t, Val::Float(_))),
        Func::IsBool => Val::Bool(matches!(t, Val::Bool(_))),
        Func::IsMap => Val::Bool(matches!(t, Val::Map(_))),
        Func::IsList => Val::Bool(matches!(t, Val::Slice(_))),
        Func::ToLowerCase => Val::Own(go_lower(&string_of(&t, &c.text)?)),
        Func::ToUpperCase => Val::Own(go_upper(&string_of(&t, &c.text)?)),
        Func::HasPrefix | Func::HasSuffix => {
            let s = string_of(&t, &c.text)?;
            let affix = value(&c.rest[0], env)?;
            let affix = string_of(&affix, &c.text)?;
            Val::Bool(if matches!(c.func, Func::HasPrefix) {
                s.starts_with(&*affix)
            } else {
                s.ends_with(&*affix)
            })
        }
        Func::String => match t {
            Val::Nil => Val::Nil,
            Val::Str(s) => Val::Str(s),
            other => Val::Own(with_str(&other, &c.text, str::to_string)?),
        },
        Func::TrimPrefix | Func::TrimSuffix => {
            let s = string_of(&t, &c.text)?;
            let affix = value(&c.rest[0], env)?;
            let affix = string_of(&affix, &c.text)?;
            let trimmed = if matches!(c.func, Func::TrimPrefix) {
                s.strip_prefix(&*affix)
            } else {
                s.strip_suffix(&*affix)
            };
            Val::Own(trimmed.unwrap_or(&s).to_string())
        }
        // Go's `strings.Trim`: leading and trailing characters found in the cutset.
        Func::Trim(cutset) => Val::Own(
            string_of(&t, &c.text)?
                .trim_matches(|ch| cutset.contains(ch))
                .to_string(),
        ),
        Func::Int => match t {
            Val::Nil => Val::Nil,
            Val::Int(i) => Val::Int(i),
            Val::Float(f) => Val::Int(go_float_to_int(f)),
            Val::Bool(b) => Val::Int(i64::from(b)),
            Val::Str(_) | Val::Own(_) | Val::Hex(_) => {
                let s = string_of(&t, &c.text)?;
                // Go's `strconv.ParseInt(s, 10, 64)`: an optional sign and decimal digits, in range.
                Val::Int(s.parse::<i64>().map_err(|_| {
                    EvalError::new(format!("{}: {s:?} is not a base-10 int64", c.text))
                })?)
            }
            other => {
                return Err(EvalError::new(format!(
                    "{}: Int takes an int, a float, a string or a boolean, got {}",
                    c.text,
                    other.type_name()
                )))
            }
        },
        Func::Double => match t {
            Val::Nil => Val::Nil,
            Val::Float(f) => Val::Float(f),
            Val::Int(i) => Val::Float(i as f64),
            Val::Bool(b) => Val::Float(if b { 1.0 } else { 0.0 }),
            Val::Str(_) | Val::Own(_) | Val::Hex(_) => {
                let s = string_of(&t, &c.text)?;
                Val::Float(go_parse_float(&s).ok_or_else(|| {
                    EvalError::new(format!(
                        "{}: {s:?} is not a float tailsample can parse",
                        c.text
                    ))
                })?)
            }
            other => {
                return Err(EvalError::new(format!(
                    "{}: Double takes an int, a float, a string or a boolean, got {}",
                    c.text,
                    other.type_name()
                )))
            }
        },
        Func::Concat => {
            let delimiter = string_of(&t, &c.text)?;
            let mut out = String::new();
            for (i, item) in c.rest.iter().enumerate() {
                if i > 0 {
                    out.push_str(&delimiter);
                }
                match value(item, env)? {
                    Val::Nil => out.push_str("<nil>"),
                    v => with_str(&v, &c.text, |s| out.push_str(s))?,
                }
            }
            Val::Own(out)
        }
        Func::Len => match t {
            Val::Str(s) => Val::Int(s.len() as i64),
            Val::Hex(id) => Val::Int(2 * id.len() as i64),
            Val::Own(s) => Val::Int(s.len() as i64),
            Val::Bytes(b) => Val::Int(b.len() as i64),
            // `pcommon.Map.Len()` counts every entry, a repeated key too.
            Val::Map(b) => Val::Int(AttrValue::Map(b).entries().count() as i64),
            Val::Slice(b) => Val::Int(AttrValue::Array(b).elements().count() as i64),
            other => {
                return Err(EvalError::new(format!(
                    "{}: Len takes a string, bytes, a map or a list, got {}",
                    c.text,
                    other.type_name()
                )))
            }
        },
    })
}

/// Go's `int64(f)` on amd64 (where the collector runs): truncation toward zero; NaN and values out of range give
/// the "integer indefinite" value, `i64::MIN` (Rust's `as` would saturate instead).
fn go_float_to_int(f: f64) -> i64 {
    // NaN is outside every range.
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// Go's `strconv.ParseFloat(s, 64)`, as OTTL's `Double` reads a string: decimal and hexadecimal (`0x1.8p3`)
/// literals, `_` between digits, `inf`/`infinity` (signed or not) and `nan` in any case; a value out of range is
/// an error (None). Decimal values are rounded by Rust's parser, correctly rounded as Go's is.
fn go_parse_float(s: &str) -> Option<f64> {
    if let Some(f) = go_special_float(s) {
        return Some(f);
    }
    let lit = read_go_float(s)?;
    let f = if lit.hex {
        go_hex_float(lit.mantissa, lit.exp, lit.neg, lit.trunc)?
    } else if s.contains('_') {
        s.replace('_', "").parse().ok()?
    } else {
        s.parse().ok()?
    };
    (!f.is_infinite()).then_some(f)
}

/// Go's `special`: the whole string is `[+-]inf`, `[+-]infinity` or `nan`, in any case.
fn go_special_float(s: &str) -> Option<f64> {
    let (neg, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Some(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    (unsigned.len() == s.len() && s.eq_ignore_ascii_case("nan")).then_some(f64::NAN)
}

/// A float literal as Go's `readFloat` takes it apart.
struct GoFloatLiteral {
    mantissa: u64,
    exp: i64,
    neg: bool,
    trunc: bool,
    hex: bool,
}

/// Go's `readFloat`, required to consume the whole string (as `ParseFloat` requires).
fn read_go_float(s: &str) -> Option<GoFloatLiteral> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut neg = false;
    match b.first() {
        Some(b'+') => i += 1,
        Some(b'-') => {
            i += 1;
            neg = true
        }
        _ => {}
    }
    let mut base = 10u64;
    let mut max_mant_digits = 19;
    let mut exp_char = b'e';
    let mut hex = false;
    if i + 2 < b.len() && b[i] == b'0' && b[i + 1].eq_ignore_ascii_case(&b'x') {
        base = 16;
        max_mant_digits = 16;
        i += 2;
        exp_char = b'p';
        hex = true;
    }
    let (mut underscores, mut sawdot, mut sawdigits) = (false, false, false);
    let (mut nd, mut nd_mant, mut dp) = (0i64, 0i64, 0i64);
    let (mut mantissa, mut trunc) = (0u64, false);
    while i < b.len() {
        let c = b[i];
        let digit = match c {
            b'_' => {
                underscores = true;
                i += 1;
                continue;
            }
            b'.' => {
                if sawdot {
                    break;
                }
                sawdot = true;
                dp = nd;
                i += 1;
                continue;
            }
            b'0'..=b'9' => u64::from(c - b'0'),
            _ if base == 16 && c.is_ascii_hexdigit() => {
                u64::from(c.to_ascii_lowercase() - b'a' + 10)
            }
            _ => break,
        };
        sawdigits = true;
        i += 1;
        if digit == 0 && nd == 0 {
            dp -= 1; // leading zeros
            continue;
        }
        nd += 1;
        if nd_mant < max_mant_digits {
            mantissa = mantissa * base + digit;
            nd_mant += 1;
        } else if digit != 0 {
            trunc = true;
        }
    }
    if !sawdigits {
        return None;
    }
    if !sawdot {
        dp = nd;
    }
    if base == 16 {
        dp *= 4;
        nd_mant *= 4;
    }
    if i < b.len() && b[i].to_ascii_lowercase() == exp_char {
        i += 1;
        let mut esign = 1;
        match b.get(i) {
            Some(b'+') => i += 1,
            Some(b'-') => {
                i += 1;
                esign = -1
            }
            _ => {}
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let mut e = 0i64;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            if b[i] == b'_' {
                underscores = true;
            } else if e < 10_000 {
                e = e * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        dp += e * esign;
    } else if base == 16 {
        return None; // a hexadecimal mantissa needs its `p` exponent
    }
    let exp = if mantissa != 0 { dp - nd_mant } else { 0 };
    if i != b.len() || (underscores && !go_underscores_ok(s)) {
        return None;
    }
    Some(GoFloatLiteral {
        mantissa,
        exp,
        neg,
        trunc,
        hex,
    })
}

/// Go's `underscoreOK`: each `_` between two digits (a base prefix counts as a digit).
fn go_underscores_ok(s: &str) -> bool {
    let mut b = s.as_bytes();
    if let Some(b'+' | b'-') = b.first() {
        b = &b[1..];
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Go's `atofHex` for float64: round half to even on two guard bits and a sticky bit; None when out of range.
fn go_hex_float(mut mantissa: u64, mut exp: i64, neg: bool, trunc: bool) -> Option<f64> {
    const MANT_BITS: u32 = 52;
    const EXP_BITS: u32 = 11;
    const BIAS: i64 = -1023;
    let max_exp = (1i64 << EXP_BITS) + BIAS - 2;
    let min_exp = BIAS + 1;
    exp += i64::from(MANT_BITS);
    while mantissa != 0 && mantissa >> (MANT_BITS + 2) == 0 {
        mantissa <<= 1;
        exp -= 1;
    }
    if trunc {
        mantissa |= 1;
    }
    while mantissa >> (1 + MANT_BITS + 2) != 0 {
        mantissa = (mantissa >> 1) | (mantissa & 1);
        exp += 1;
    }
    while mantissa > 1 && exp < min_exp - 2 {
        mantissa = (mantissa >> 1) | (mantissa & 1);
        exp += 1;
    }
    let mut round = mantissa & 3;
    mantissa >>= 2;
    round |= mantissa & 1;
    exp += 2;
    if round == 3 {
        mantissa += 1;
        if mantissa == 1 << (1 + MANT_BITS) {
            mantissa >>= 1;
            exp += 1;
        }
    }
    if mantissa >> MANT_BITS == 0 {
        exp = BIAS;
    }
    if exp > max_exp {
        return None;
    }
    let mut bits = mantissa & ((1 << MANT_BITS) - 1);
    bits |= (((exp - BIAS) & ((1 << EXP_BITS) - 1)) as u64) << MANT_BITS;
    if neg {
        bits |= 1 << 63;
    }
    Some(f64::from_bits(bits))
}

/// `v` as OTTL's `StringGetter` takes it: a string, anything else (nil too) a type error.
fn string_of<'a>(v: &'a Val<'_>, what: &str) -> EResult<Cow<'a, str>> {
    match v {
        Val::Str(s) => Ok(Cow::Borrowed(s)),
        Val::Own(s) => Ok(Cow::Borrowed(s)),
        Val::Hex(id) => Ok(Cow::Owned(hex_digits(id).map(char::from).collect())),
        other => Err(EvalError::new(format!(
            "{what}: expected a string, got {}",
            other.type_name()
        ))),
    }
}

/// Go's `strings.ToLower`: each character by its own (simple) lowercase mapping, so no context rules (a final
/// `Σ` is `σ`, not `ς`) and `İ` is `i`.
fn go_lower(s: &str) -> String {
    s.chars().map(go_lower_char).collect()
}

fn go_lower_char(c: char) -> char {
    let mut m = c.to_lowercase();
    match (m.next(), m.next()) {
        _ if newer_than_go_unicode(c) => c,
        (Some(l), None) => l,
        // Only U+0130 lowercases to more than one character; Go's simple mapping gives `i`.
        (Some(l), Some(_)) if c == '\u{130}' => l,
        _ => c,
    }
}

/// Case pairs that Rust's Unicode (16 and later) has and Go's (15.0, Go 1.26, with which the collector is
/// built) lacks: Go leaves these characters as they are. Found by comparing every code point's mappings.
fn newer_than_go_unicode(c: char) -> bool {
    matches!(
        c as u32,
        0x19B | 0x264 | 0x1C89 | 0x1C8A | 0xA7CB..=0xA7CF | 0xA7D2..=0xA7D5 | 0xA7DA..=0xA7DC
            | 0x10D50..=0x10D65 | 0x10D70..=0x10D85 | 0x16EA0..=0x16EB8 | 0x16EBB..=0x16ED3
    )
}

/// Go's `strings.ToUpper`: each character by its simple uppercase mapping; a character whose uppercase is several
/// characters (`ß`, ligatures) stays as it is, as Go has no single-rune mapping for it.
fn go_upper(s: &str) -> String {
    s.chars().map(go_upper_char).collect()
}

fn go_upper_char(c: char) -> char {
    let mut m = c.to_uppercase();
    match (m.next(), m.next()) {
        _ if newer_than_go_unicode(c) => c,
        (Some(u), None) => u,
        // Greek with ypogegrammeni: the full uppercase is two characters, the simple one (Go's) the titlecase
        // letter with prosgegrammeni, 8 (or 9) code points on.
        _ if matches!(c as u32, 0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7) => {
            char::from_u32(c as u32 + 8).unwrap_or(c)
        }
        _ if matches!(c as u32, 0x1FB3 | 0x1FC3 | 0x1FF3) => {
            char::from_u32(c as u32 + 9).unwrap_or(c)
        }
        _ => c,
    }
}

/// A small `fmt::Write` buffer on the stack.
struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    fn new() -> Self {
        StackBuf {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A float as OTTL turns it into a string (`github.com/goccy/go-json`'s `Marshal`): the shortest representation,
/// `'f'` format within [1e-6, 1e21), else Go's `strconv` `'e'` format, whose exponent has at least two digits
/// (`1e+21`, `1e-07`: unlike `encoding/json`, go-json does not trim it).
fn write_go_float(out: &mut impl fmt::Write, f: f64) -> fmt::Result {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let mut e = StackBuf::<48>::new();
        write!(e, "{f:e}")?;
        let s = e.as_str();
        let p = s.find('e').unwrap_or(s.len());
        out.write_str(&s[..p])?;
        let exp = s.get(p + 1..).unwrap_or("");
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        out.write_char('e')?;
        out.write_char(sign)?;
        if digits.len() < 2 {
            out.write_char('0')?;
        }
        out.write_str(digits)
    } else {
        write!(out, "{f}")
    }
}

/// A map or list value as OTTL's `StringLikeGetter` turns it into a string: go-json's `Marshal` of its
/// `AsRaw()`. Map keys sorted bytewise, a repeated key's last value (`AsRaw` builds a Go map), bytes in base64,
/// empty values `null`, `<`, `>`, `&`, U+2028 and U+2029 escaped; NaN and infinities fail, as they fail there.
fn json_of(v: AttrValue<'_>, what: &str) -> EResult<String> {
    let mut out = String::new();
    write_json(&mut out, v).map_err(|f| {
        EvalError::new(format!(
            "{what}: {f} has no JSON form (OTTL fails to convert NaN and infinities)"
        ))
    })?;
    Ok(out)
}

/// Appends `v`'s JSON; the error is a float JSON cannot hold.
fn write_json(out: &mut String, v: AttrValue<'_>) -> Result<(), f64> {
    match v {
        AttrValue::Absent | AttrValue::Empty => out.push_str("null"),
        AttrValue::Str(s) => write_json_str(out, s),
        AttrValue::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        AttrValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        AttrValue::Double(f) => {
            if !f.is_finite() {
                return Err(f);
            }
            let _ = write_go_float(out, f);
        }
        AttrValue::Bytes(b) => {
            out.push('"');
            write_base64(out, b);
            out.push('"');
        }
        AttrValue::Array(_) => {
            out.push('[');
            for (i, e) in v.elements().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, e)?;
            }
            out.push(']');
        }
        AttrValue::Map(_) => {
            let mut entries: Vec<(&str, AttrValue<'_>)> = Vec::new();
            for (k, e) in v.entries() {
                match entries.iter_mut().find(|(ek, _)| *ek == k) {
                    Some(slot) => slot.1 = e,
                    None => entries.push((k, e)),
                }
            }
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, e)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(out, k);
                out.push(':');
                write_json(out, e)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON string as go-json escapes it (HTML-safe, like `encoding/json`).
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding (Go's `[]byte` in JSON).
fn write_base64(out: &mut String, b: &[u8]) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

/// `pcommon.Value.Equal`: same type and contents; maps by `Map.Equal` (same number of entries, each entry equal
/// to the first entry of that key in the other), lists element by element; a NaN is unequal to itself.
fn value_equal(a: AttrValue<'_>, b: AttrValue<'_>) -> bool {
    match (a, b) {
        (AttrValue::Absent | AttrValue::Empty, AttrValue::Absent | AttrValue::Empty) => true,
        (AttrValue::Str(x), AttrValue::Str(y)) => x == y,
        (AttrValue::Bool(x), AttrValue::Bool(y)) => x == y,
        (AttrValue::Int(x), AttrValue::Int(y)) => x == y,
        (AttrValue::Double(x), AttrValue::Double(y)) => x == y,
        (AttrValue::Bytes(x), AttrValue::Bytes(y)) => x == y,
        (AttrValue::Array(_), AttrValue::Array(_)) => {
            a.elements().count() == b.elements().count()
                && a.elements()
                    .zip(b.elements())
                    .all(|(x, y)| value_equal(x, y))
        }
        (AttrValue::Map(_), AttrValue::Map(_)) => {
            a.entries().count() == b.entries().count()
                && a.entries().all(|(k, x)| match b.get(k) {
                    AttrValue::Absent => false,
                    y => value_equal(x, y),
                })
        }
        _ => false,
    }
}

/// `f` applied to `v` as a string, converted as OTTL's `StringLikeGetter` does (not for nil).
fn with_str<R>(v: &Val<'_>, what: &str, f: impl FnOnce(&str) -> R) -> EResult<R> {
    match v {
        Val::Str(s) => Ok(f(s)),
        Val::Bool(b) => Ok(f(if *b { "true" } else { "false" })),
        Val::Int(i) => {
            let mut buf = StackBuf::<24>::new();
            write!(buf, "{i}").expect("an i64 fits 24 bytes");
            Ok(f(buf.as_str()))
        }
        Val::Float(x) => {
            if !x.is_finite() {
                return Err(EvalError::new(format!(
                    "{what}: {x} has no string form (OTTL fails to convert NaN and infinities)"
                )));
            }
            let mut buf = StackBuf::<48>::new();
            write_go_float(&mut buf, *x).expect("a float fits 48 bytes");
            Ok(f(buf.as_str()))
        }
        Val::Bytes(b) | Val::Hex(b) if b.len() <= 32 => {
            let mut buf = [0u8; 64];
            for (d, h) in buf.iter_mut().zip(hex_digits(b)) {
                *d = h;
            }
            Ok(f(std::str::from_utf8(&buf[..2 * b.len()]).unwrap_or("")))
        }
        Val::Bytes(b) | Val::Hex(b) => {
            let hex: Vec<u8> = hex_digits(b).collect();
            Ok(f(std::str::from_utf8(&hex).unwrap_or("")))
        }
        Val::Own(s) => Ok(f(s)),
        Val::Map(b) => json_of(AttrValue::Map(b), what).map(|j| f(&j)),
        Val::Slice(b) => json_of(AttrValue::Array(b), what).map(|j| f(&j)),
        Val::Nil => Ok(f("")),
    }
}

fn math<'v>(m: &'v Math, env: &Env<'v>) -> EResult<Val<'v>> {
    let x = value(&m.left, env)?;
    let y = value(&m.right, env)?;
    let number = |v: &Val<'_>| matches!(v, Val::Int(_) | Val::Float(_));
    if !number(&x) || !number(&y) {
        let bad = if number(&x) { &y } else { &x };
        return Err(EvalError::new(format!(
            "{}: arithmetic needs ints or floats, got {}",
            m.text,
            bad.type_name()
        )));
    }
    let div_by_zero = || EvalError::new(format!("{}: attempted to divide by 0", m.text));
    Ok(match (x, y) {
        (Val::Int(a), Val::Int(b)) => Val::Int(match m.op {
            MathOp::Add => a.wrapping_add(b),
            MathOp::Sub => a.wrapping_sub(b),
            MathOp::Mul => a.wrapping_mul(b),
            MathOp::Div if b == 0 => return Err(div_by_zero()),
            MathOp::Div => a.wrapping_div(b),
        }),
        (x, y) => {
            let a = as_f64(&x);
            let b = as_f64(&y);
            Val::Float(match m.op {
                MathOp::Add => a + b,
                MathOp::Sub => a - b,
                MathOp::Mul => a * b,
                MathOp::Div if b == 0.0 => return Err(div_by_zero()),
                MathOp::Div => a / b,
            })
        }
    })
}

fn as_f64(v: &Val<'_>) -> f64 {
    match v {
        Val::Int(i) => *i as f64,
        Val::Float(f) => *f,
        _ => f64::NAN,
    }
}

#[inline(always)]
fn ordered<T: PartialOrd + ?Sized>(a: &T, b: &T, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// OTTL's `compare` (`pkg/ottl/compare.go`).
#[inline(always)]
pub(crate) fn compare(a: &Val<'_>, b: &Val<'_>, op: CmpOp) -> EResult<bool> {
    // A nil byte slice compares as nil; an empty bytes value reads as one (`ByteSlice.AsRaw` of nothing is nil).
    let nil_bytes =
        |v: &Val<'_>| matches!(v, Val::Nil) || matches!(v, Val::Bytes(b) if b.is_empty());
    Ok(match (a, b) {
        _ if nil_bytes(a) && nil_bytes(b) => matches!(op, CmpOp::Eq | CmpOp::Le | CmpOp::Ge),
        _ if nil_bytes(a) || nil_bytes(b) => op == CmpOp::Ne,
        (Val::Bool(x), Val::Bool(y)) => ordered(x, y, op),
        (Val::Int(x), Val::Int(y)) => ordered(x, y, op),
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            ordered(&as_f64(a), &as_f64(b), op)
        }
        (Val::Bytes(x), Val::Bytes(y)) => ordered(*x, *y, op),
        // `pcommon.Map.Equal` / `Slice.Equal`; ordering two of them is an invalid comparison (false).
        (Val::Map(x), Val::Map(y)) => {
            let eq = value_equal(AttrValue::Map(x), AttrValue::Map(y));
            match op {
                CmpOp::Eq => eq,
                CmpOp::Ne => !eq,
                _ => false,
            }
        }
        (Val::Slice(x), Val::Slice(y)) => {
            let eq = value_equal(AttrValue::Array(x), AttrValue::Array(y));
            match op {
                CmpOp::Eq => eq,
                CmpOp::Ne => !eq,
                _ => false,
            }
        }
        (Val::Str(x), Val::Str(y)) => ordered(*x, *y, op),
        // A hex ID against a string: the digits compared as they are written out. Two IDs compare as their bytes,
        // which orders them as their hex forms.
        (Val::Hex(x), Val::Hex(y)) => ordered(*x, *y, op),
        (Val::Hex(x), y) if y.text().is_some() => {
            let y = y.text().unwrap_or_default();
            ordered(&hex_digits(x).cmp(y.bytes()), &Ordering::Equal, op)
        }
        (x, Val::Hex(y)) if x.text().is_some() => {
            let x = x.text().unwrap_or_default();
            ordered(&x.bytes().cmp(hex_digits(y)), &Ordering::Equal, op)
        }
        // A converter's string against another string.
        (x, y) if x.text().is_some() && y.text().is_some() => ordered(
            x.text().unwrap_or_default(),
            y.text().unwrap_or_default(),
            op,
        ),
        _ => op == CmpOp::Ne,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ContextKind, EventCtx};
    use super::*;

    /// Scenario: 4,000 strings (hexadecimal and decimal literals, underscores, exponents at the range edges,
    /// specials, malformed ones) through Double. Guarantee: the bits Go's `strconv.ParseFloat(s, 64)` gives, or
    /// an error where Go's is (`tests/data/go_parse_float.tsv`, written by `scripts/go_parse_float`).
    #[test]
    fn parse_float_is_gos() {
        let table = include_str!("../../../tests/data/go_parse_float.tsv");
        let mut wrong = Vec::new();
        let mut n = 0;
        for line in table.lines().filter(|l| !l.starts_with('#')) {
            let (input, want) = line.rsplit_once('\t').unwrap();
            let got = match go_parse_float(input) {
                None => "err".to_string(),
                Some(f) if f.is_nan() => "nan".to_string(),
                Some(f) => format!("{:016x}", f.to_bits()),
            };
            if got != want {
                wrong.push(format!("{input:?}: Go {want}, here {got}"));
            }
            n += 1;
        }
        assert!(n >= 4000);
        assert!(
            wrong.is_empty(),
            "{} differ: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
    }

    /// Scenario: every code point through ToUpperCase and ToLowerCase. Guarantee: Go's mappings exactly
    /// (`tests/data/go_case_mappings.txt`, written by `scripts/go_case_mappings` with the Go the reference is built
    /// with): a changed character there, unchanged everywhere else.
    #[test]
    fn case_mappings_are_gos_for_every_code_point() {
        let table = include_str!("../../../tests/data/go_case_mappings.txt");
        let mut go = std::collections::HashMap::new();
        for line in table.lines().filter(|l| !l.starts_with('#')) {
            let v: Vec<u32> = line
                .split(' ')
                .map(|h| u32::from_str_radix(h, 16).unwrap())
                .collect();
            go.insert(v[0], (v[1], v[2]));
        }
        assert!(go.len() > 2800);
        let mut wrong = Vec::new();
        for r in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(r) else { continue };
            let (up, low) = go.get(&r).copied().unwrap_or((r, r));
            let s = c.to_string();
            let got = (go_upper(&s), go_lower(&s));
            let want = (
                char::from_u32(up).unwrap().to_string(),
                char::from_u32(low).unwrap().to_string(),
            );
            if got != want {
                wrong.push(format!("{r:x}"));
            }
        }
        assert!(wrong.is_empty(), "differ from Go: {wrong:?}");
    }
    use crate::otlp::decode::any_value as av;
    use crate::otlp::decode::{decode, AttrKeys, SpanView};

    const OPS: [CmpOp; 6] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Ge,
        CmpOp::Gt,
    ];

    /// Scenario: two values compared with each operator, in the order ==, !=, <, <=, >=, > (as `compare_test.go`).
    /// Guarantees: the results of the reference's `compare`, both operand orders where the rule is symmetric.
    macro_rules! compare_cases {
        ($($name:ident: $a:expr, $b:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let got: Vec<bool> = OPS.iter().map(|op| compare(&$a, &$b, *op).unwrap()).collect();
                assert_eq!(got, $want.to_vec(), "{:?} vs {:?}", $a, $b);
            }
        )*};
    }

    const EQUAL: [bool; 6] = [true, false, false, true, true, false];
    const LESS: [bool; 6] = [false, true, true, true, false, false];
    const GREATER: [bool; 6] = [false, true, false, false, true, true];
    const NOT_EQUAL: [bool; 6] = [false, true, false, false, false, false];
    const NAN: [bool; 6] = [false, true, false, false, false, false];
    /// Maps and lists: `==` by contents, every ordering false.
    const NOT_EQUAL_OR_SAME: [bool; 6] = [true, false, false, false, false, false];

    compare_cases! {
        identity_string: Val::Str("1"), Val::Str("1") => EQUAL;
        identity_int: Val::Int(1), Val::Int(1) => EQUAL;
        identity_float: Val::Float(1.0), Val::Float(1.0) => EQUAL;
        identity_bytes: Val::Bytes(b"1"), Val::Bytes(b"1") => EQUAL;
        identity_nil: Val::Nil, Val::Nil => EQUAL;
        diff_strings: Val::Str("1"), Val::Str("2") => LESS;
        strings_are_bytewise: Val::Str("Z"), Val::Str("a") => LESS;
        strings_non_ascii_bytewise: Val::Str("é"), Val::Str("z") => GREATER;
        string_prefix_is_less: Val::Str("ab"), Val::Str("abc") => LESS;
        string_bytes: Val::Str("1"), Val::Bytes(b"1") => NOT_EQUAL;
        string_int: Val::Str("1"), Val::Int(1) => NOT_EQUAL;
        string_float: Val::Str("1"), Val::Float(1.0) => NOT_EQUAL;
        string_nil: Val::Str("1"), Val::Nil => NOT_EQUAL;
        nil_string: Val::Nil, Val::Str("1") => NOT_EQUAL;
        nil_and_empty_string: Val::Nil, Val::Str("") => NOT_EQUAL;
        diff_bytes: Val::Bytes(b"1"), Val::Bytes(b"2") => LESS;
        bytes_string: Val::Bytes(b"1"), Val::Str("1") => NOT_EQUAL;
        bytes_int: Val::Bytes(b"1"), Val::Int(1) => NOT_EQUAL;
        bytes_nil: Val::Bytes(b"1"), Val::Nil => NOT_EQUAL;
        bytes_empty_bytes: Val::Bytes(b"1"), Val::Bytes(b"") => NOT_EQUAL;
        empty_bytes_is_nil: Val::Bytes(b""), Val::Nil => EQUAL;
        nil_is_empty_bytes: Val::Nil, Val::Bytes(b"") => EQUAL;
        false_true: Val::Bool(false), Val::Bool(true) => LESS;
        true_false: Val::Bool(true), Val::Bool(false) => GREATER;
        true_true: Val::Bool(true), Val::Bool(true) => EQUAL;
        bool_string: Val::Bool(false), Val::Str("1") => NOT_EQUAL;
        bool_int: Val::Bool(false), Val::Int(0) => NOT_EQUAL;
        bool_float: Val::Bool(true), Val::Float(1.0) => NOT_EQUAL;
        bool_nil: Val::Bool(false), Val::Nil => NOT_EQUAL;
        bool_empty_string: Val::Bool(false), Val::Str("") => NOT_EQUAL;
        nil_int: Val::Nil, Val::Int(0) => NOT_EQUAL;
        nil_float: Val::Nil, Val::Float(0.0) => NOT_EQUAL;
        int_nil: Val::Int(1), Val::Nil => NOT_EQUAL;
        int_string: Val::Int(1), Val::Str("1") => NOT_EQUAL;
        int_bytes: Val::Int(1), Val::Bytes(b"1") => NOT_EQUAL;
        int_int: Val::Int(1), Val::Int(2) => LESS;
        int_float: Val::Int(1), Val::Float(2.0) => LESS;
        int_equals_float: Val::Int(2), Val::Float(2.0) => EQUAL;
        float_int: Val::Float(1.0), Val::Int(2) => LESS;
        float_int_fraction: Val::Float(2.5), Val::Int(2) => GREATER;
        diff_floats: Val::Float(1.0), Val::Float(2.0) => LESS;
        float_nil: Val::Float(1.0), Val::Nil => NOT_EQUAL;
        float_string: Val::Float(1.0), Val::Str("1") => NOT_EQUAL;
        nan_is_unordered: Val::Float(f64::NAN), Val::Float(f64::NAN) => NAN;
        nan_vs_int: Val::Float(f64::NAN), Val::Int(1) => NAN;
        negative_ints: Val::Int(-5), Val::Int(3) => LESS;
        large_int_as_float: Val::Int(9007199254740993), Val::Float(9007199254740992.0) => EQUAL;
        hex_string_vs_string: Val::Hex(&[0xab]), Val::Str("ab") => EQUAL;
        hex_string_vs_greater_string: Val::Hex(&[0xab]), Val::Str("ac") => LESS;
        hex_string_vs_prefix: Val::Hex(&[0xab, 0x01]), Val::Str("ab") => GREATER;
        string_vs_hex_string: Val::Str("b"), Val::Hex(&[0xab]) => GREATER;
        hex_vs_hex: Val::Hex(&[0x0a]), Val::Hex(&[0xa0]) => LESS;
        hex_vs_bytes: Val::Hex(&[0xab]), Val::Bytes(&[0xab]) => NOT_EQUAL;
        map_vs_nil: Val::Map(b""), Val::Nil => NOT_EQUAL;
        map_vs_string: Val::Map(b""), Val::Str("{}") => NOT_EQUAL;
        list_vs_map: Val::Slice(b""), Val::Map(b"") => NOT_EQUAL;
        list_vs_int: Val::Slice(b""), Val::Int(0) => NOT_EQUAL;
        empty_maps: Val::Map(b""), Val::Map(b"") => NOT_EQUAL_OR_SAME;
        converter_string_vs_string: Val::Own("a".into()), Val::Str("b") => LESS;
        converter_string_vs_hex: Val::Own("ab".into()), Val::Hex(&[0xab]) => EQUAL;
    }

    /// Scenario: two maps or lists compared whole.
    /// Guarantees: `pcommon.Map.Equal` / `Slice.Equal`: order of entries does not matter for maps, it does for
    /// lists; a repeated key compares by its first entry; types must match (1 is not 1.0); NaN is unequal.
    #[test]
    fn maps_and_lists_compare_by_contents() {
        let m1 = av::map_body(&[("a", av::int(1)), ("b", av::str("x"))]);
        let m2 = av::map_body(&[("b", av::str("x")), ("a", av::int(1))]);
        let m3 = av::map_body(&[("a", av::double(1.0)), ("b", av::str("x"))]);
        let m4 = av::map_body(&[("a", av::int(1)), ("a", av::int(1))]);
        let m5 = av::map_body(&[("a", av::int(1)), ("a", av::int(3))]);
        let m6 = av::map_body(&[("a", av::int(1))]);
        let eq = |a: Val<'_>, b: Val<'_>| compare(&a, &b, CmpOp::Eq).unwrap();
        assert!(eq(Val::Map(&m1), Val::Map(&m2)));
        assert!(!eq(Val::Map(&m1), Val::Map(&m3)));
        // Each entry of the left against the first of its key on the right: asymmetric with repeated keys.
        assert!(eq(Val::Map(&m4), Val::Map(&m5)));
        assert!(!eq(Val::Map(&m5), Val::Map(&m4)));
        assert!(!eq(Val::Map(&m4), Val::Map(&m6)), "different entry counts");
        assert!(compare(&Val::Map(&m1), &Val::Map(&m3), CmpOp::Ne).unwrap());
        assert!(!compare(&Val::Map(&m1), &Val::Map(&m2), CmpOp::Le).unwrap());
        let l1 = av::array_body(&[av::int(1), av::map(&[("k", av::str("v"))])]);
        let l2 = av::array_body(&[av::map(&[("k", av::str("v"))]), av::int(1)]);
        assert!(eq(Val::Slice(&l1), Val::Slice(&l1.clone())));
        assert!(!eq(Val::Slice(&l1), Val::Slice(&l2)));
        let nan = av::array_body(&[av::double(f64::NAN)]);
        assert!(!eq(Val::Slice(&nan), Val::Slice(&nan)));
        assert!(!eq(Val::Slice(&l1), Val::Map(&m1)));
    }

    /// Scenario: maps and lists turned into strings (IsMatch, String, Concat).
    /// Guarantees: the text go-json gives for `AsRaw()` (checked against the reference's Go code: sorted keys,
    /// last of a repeated key, base64 bytes, `null`, HTML escapes, `1e-07`).
    #[test]
    fn json_text_of_maps_and_lists() {
        let m = av::map_body(&[
            ("z", av::str("a<b>&\"\\\n\t\u{8}\u{c}\u{1}é\u{2028}")),
            ("f", av::double(1e-7)),
            ("g", av::double(1e21)),
            ("h", av::double(2.0)),
            ("b", vec![0x3a, 3, 1, 2, 255]),
            ("e", vec![]),
            ("A", av::int(-5)),
            (
                "s",
                av::array(&[av::boolean(true), av::map(&[("k", av::str("v"))])]),
            ),
            ("A", av::int(7)),
        ]);
        assert_eq!(
            json_of(AttrValue::Map(&m), "x").unwrap(),
            r#"{"A":7,"b":"AQL/","e":null,"f":1e-07,"g":1e+21,"h":2,"s":[true,{"k":"v"}],"z":"a\u003cb\u003e\u0026\"\\\n\t\u0008\u000c\u0001é\u2028"}"#
        );
        assert_eq!(json_of(AttrValue::Array(&[]), "x").unwrap(), "[]");
        assert_eq!(json_of(AttrValue::Map(&[]), "x").unwrap(), "{}");
        let nan = av::array_body(&[av::double(f64::INFINITY)]);
        assert!(json_of(AttrValue::Array(&nan), "x").is_err());
        for (b, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
        ] {
            let mut s = String::new();
            write_base64(&mut s, b);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn go_case_mapping() {
        assert_eq!(go_lower("ΣΑΣ İ ÀB"), "σασ i àb");
        assert_eq!(go_upper("straße ǆ àb"), "STRAßE Ǆ ÀB");
    }

    macro_rules! float_format_cases {
        ($($name:ident: $f:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let mut s = String::new();
                write_go_float(&mut s, $f).unwrap();
                assert_eq!(s, $want);
            }
        )*};
    }

    float_format_cases! {
        float_whole: 1.0 => "1";
        float_fraction: 1.5 => "1.5";
        float_shortest: 0.1 + 0.2 => "0.30000000000000004";
        float_negative_zero: -0.0 => "-0";
        float_small_fixed: 0.000001 => "0.000001";
        float_smaller_is_exponent: 0.0000001 => "1e-07";
        float_two_digit_negative_exponent: 1.5e-10 => "1.5e-10";
        float_large_fixed: 1e20 => "100000000000000000000";
        float_large_is_exponent: 1e21 => "1e+21";
        float_large_negative: -2.5e300 => "-2.5e+300";
        float_tiny: 5e-324 => "5e-324";
    }

    // A span to evaluate conditions on, with attributes bound by key.

    fn keys() -> AttrKeys {
        AttrKeys::new([
            "s",
            "empty_s",
            "i",
            "f",
            "b",
            "bytes",
            "empty_bytes",
            "map",
            "list",
            "empty",
            "absent",
            "nan",
            "big_bytes",
        ])
    }

    fn attrs<'a>() -> Vec<AttrValue<'a>> {
        vec![
            AttrValue::Str("GET /users"),
            AttrValue::Str(""),
            AttrValue::Int(200),
            AttrValue::Double(1.5),
            AttrValue::Bool(true),
            AttrValue::Bytes(&[0xca, 0xfe]),
            AttrValue::Bytes(&[]),
            AttrValue::Map(leak(av::map_body(&[
                ("a", av::str("x")),
                (
                    "n",
                    av::map(&[("deep", av::array(&[av::int(1), av::str("two")]))]),
                ),
                ("a", av::str("dup")),
                ("e", vec![]),
            ]))),
            AttrValue::Array(leak(av::array_body(&[
                av::str("true"),
                av::int(2),
                av::map(&[("a", av::str("b"))]),
                av::array(&[av::double(3.5)]),
                vec![],
            ]))),
            AttrValue::Empty,
            AttrValue::Absent,
            AttrValue::Double(f64::NAN),
            AttrValue::Bytes(&[0xab; 40]),
        ]
    }

    fn resource_attrs<'a>() -> Vec<AttrValue<'a>> {
        let mut r = vec![AttrValue::Absent; keys().len()];
        r[0] = AttrValue::Str("checkout");
        r[2] = AttrValue::Int(7);
        r[8] = AttrValue::Array(leak(av::array_body(&[av::str("res")])));
        r
    }

    /// Test values live for the whole test run.
    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    /// The span the tests evaluate on; encoded as OTLP and decoded, so it is what the scanner gives.
    struct TestSpan<'a> {
        trace_state: &'a str,
        parent: Option<[u8; 8]>,
        kind: u64,
        status: u64,
        end: u64,
    }

    impl TestSpan<'_> {
        fn new(trace_state: &str) -> TestSpan<'_> {
            TestSpan {
                trace_state,
                parent: None,
                kind: 2,
                status: 2,
                end: 3_500_000_000,
            }
        }
    }

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    fn encode(t: &TestSpan<'_>) -> Vec<u8> {
        let mut span = Vec::new();
        bytes_field(
            &mut span,
            1,
            &[
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ],
        );
        bytes_field(
            &mut span,
            2,
            &[0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        );
        bytes_field(&mut span, 3, t.trace_state.as_bytes());
        if let Some(p) = t.parent {
            bytes_field(&mut span, 4, &p);
        }
        bytes_field(&mut span, 5, b"GET /users");
        varint(&mut span, 6 << 3);
        varint(&mut span, t.kind);
        varint(&mut span, 7 << 3 | 1);
        span.extend_from_slice(&1_000_000_000u64.to_le_bytes());
        varint(&mut span, 8 << 3 | 1);
        span.extend_from_slice(&t.end.to_le_bytes());
        let mut status = Vec::new();
        varint(&mut status, 3 << 3);
        varint(&mut status, t.status);
        bytes_field(&mut status, 2, b"boom");
        bytes_field(&mut span, 15, &status);
        let mut scope = Vec::new();
        bytes_field(&mut scope, 1, b"io.opentelemetry.http");
        let mut scope_spans = Vec::new();
        bytes_field(&mut scope_spans, 1, &scope);
        bytes_field(&mut scope_spans, 2, &span);
        let mut resource_spans = Vec::new();
        bytes_field(&mut resource_spans, 2, &scope_spans);
        let mut request = Vec::new();
        bytes_field(&mut request, 1, &resource_spans);
        request
    }

    /// `f` on the decoded test span.
    fn with_span<R>(t: &TestSpan<'_>, f: impl FnOnce(&SpanView<'_>) -> R) -> R {
        let payload = encode(t);
        let decoded = decode(&payload, &AttrKeys::default()).expect("a valid request");
        f(&decoded.spans[0])
    }

    fn eval_on(expr: &str, trace_state: &str) -> EResult<bool> {
        let mut c = parse(expr, ContextKind::Span).unwrap_or_else(|e| panic!("{e}"));
        c.bind(&keys());
        with_span(&TestSpan::new(trace_state), |view| {
            let (a, r) = (attrs(), resource_attrs());
            let ctx = SpanCtx {
                span: view,
                attrs: &a,
                resource_attrs: &r,
                scope_name: "io.opentelemetry.http",
                scope_raw: &[],
            };
            c.eval_span(&ctx)
        })
    }

    fn eval(expr: &str) -> EResult<bool> {
        eval_on(expr, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    }

    /// Scenario: a span condition evaluated on the test span.
    /// Guarantees: OTTL's result.
    macro_rules! eval_cases {
        ($($name:ident: $expr:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(eval($expr), Ok($want), "{}", $expr);
            }
        )*};
    }

    eval_cases! {
        // Span fields.
        name_equals: r#"name == "GET /users""# => true;
        name_differs: r#"name == "POST /users""# => false;
        span_prefix: r#"span.name == "GET /users""# => true;
        kind_enum: "kind == SPAN_KIND_SERVER" => true;
        kind_int: "kind == 2" => true;
        kind_octal_literal: "kind == 02" => true;
        kind_string: r#"kind.string == "Server""# => true;
        kind_deprecated_string: r#"kind.deprecated_string == "SPAN_KIND_SERVER""# => true;
        status_enum: "status.code == STATUS_CODE_ERROR" => true;
        status_not_ok: "status.code != STATUS_CODE_OK" => true;
        start_time: "start_time_unix_nano == 1000000000" => true;
        duration_arithmetic: "end_time_unix_nano - start_time_unix_nano > 2000000000" => true;
        duration_arithmetic_grouped: "(end_time_unix_nano - start_time_unix_nano) / 1000000 == 2500" => true;
        duration_in_float_seconds: "(end_time_unix_nano - start_time_unix_nano) / 1000000000.0 == 2.5" => true;
        int_division_truncates: "7 / 2 == 3" => true;
        negative_int_division_truncates_toward_zero: "-7 / 2 == -3" => true;
        int_and_float_arithmetic_is_float: "1 + 0.5 == 1.5" => true;
        precedence_of_arithmetic: "1 + 2 * 3 == 7" => true;
        arithmetic_is_left_associative: "10 - 2 - 3 == 5" => true;
        int_overflow_wraps: "9223372036854775807 + 1 == -9223372036854775808" => true;
        trace_state_key: r#"trace_state["congo"] == "t61rcWkgMzE""# => true;
        trace_state_absent_key_is_empty: r#"trace_state["nope"] == """# => true;
        trace_state_absent_key_is_not_nil: r#"trace_state["nope"] == nil"# => false;
        trace_state_whole: r#"IsMatch(trace_state, "congo=")"# => true;
        trace_id_string: r#"trace_id.string == "4bf92f3577b34da6a3ce929d0e0e4736""# => true;
        span_id_string: r#"span_id.string == "00f067aa0ba902b7""# => true;
        root_parent_span_id_is_zeros: r#"parent_span_id.string == "0000000000000000""# => true;
        scope_name: r#"instrumentation_scope.name == "io.opentelemetry.http""# => true;
        scope_name_short_prefix: r#"scope.name == "io.opentelemetry.http""# => true;
        // Attributes.
        string_attribute: r#"attributes["s"] == "GET /users""# => true;
        int_attribute: r#"attributes["i"] == 200"# => true;
        int_attribute_vs_float: r#"attributes["i"] == 200.0"# => true;
        int_attribute_ordering: r#"attributes["i"] >= 200 and attributes["i"] < 300"# => true;
        float_attribute_vs_int: r#"attributes["f"] > 1"# => true;
        bool_attribute: r#"attributes["b"] == true"# => true;
        bool_attribute_ordering: r#"attributes["b"] > false"# => true;
        bytes_attribute: r#"attributes["bytes"] == 0xCAFE"# => true;
        bytes_attribute_ordering: r#"attributes["bytes"] > 0xCA"# => true;
        empty_bytes_attribute_is_nil: r#"attributes["empty_bytes"] == nil"# => true;
        string_attribute_vs_int: r#"attributes["s"] == 200"# => false;
        string_attribute_vs_int_ne: r#"attributes["s"] != 200"# => true;
        string_attribute_vs_int_ordering: r#"attributes["s"] > 200 or attributes["s"] < 200"# => false;
        int_attribute_vs_string: r#"attributes["i"] == "200""# => false;
        absent_is_nil: r#"attributes["absent"] == nil"# => true;
        absent_is_not_equal_to_empty_string: r#"attributes["absent"] == """# => false;
        absent_ne_value: r#"attributes["absent"] != "x""# => true;
        absent_ordering_is_false: r#"attributes["absent"] < 1 or attributes["absent"] > 1"# => false;
        nil_le_nil: r#"attributes["absent"] <= nil"# => true;
        nil_lt_nil: r#"attributes["absent"] < nil"# => false;
        empty_value_is_nil: r#"attributes["empty"] == nil"# => true;
        empty_string_is_not_nil: r#"attributes["empty_s"] != nil"# => true;
        present_is_not_nil: r#"attributes["s"] != nil"# => true;
        map_is_not_nil: r#"attributes["map"] != nil"# => true;
        map_is_not_a_string: r#"attributes["map"] == "x""# => false;
        resource_attribute: r#"resource.attributes["s"] == "checkout""# => true;
        resource_int_attribute: r#"resource.attributes["i"] > 5"# => true;
        two_attributes_compared: r#"attributes["i"] > resource.attributes["i"]"# => true;
        unbound_key_reads_nil: r#"resource.attributes["f"] == nil"# => true;
        // Booleans.
        constant_true: "true" => true;
        constant_false: "false" => false;
        not_constant: "not false" => true;
        and_or_precedence: r#"false and false or true"# => true;
        and_or_precedence_grouped: r#"false and (false or true)"# => false;
        not_binds_tighter_than_and: r#"not false and false"# => false;
        not_of_group: r#"not (false or false)"# => true;
        not_of_comparison: r#"not name == "x""# => true;
        bool_literal_comparison: "true == true" => true;
        nil_literals: "nil == nil" => true;
        nil_vs_string_literal: r#"nil != "x""# => true;
        literal_vs_literal_types: r#"1 == "1""# => false;
        // Converters.
        is_match: r#"IsMatch(name, "^GET ")"# => true;
        is_match_unanchored: r#"IsMatch(name, "users")"# => true;
        is_match_no: r#"IsMatch(name, "^POST")"# => false;
        is_match_named_args: r#"IsMatch(pattern = "^GET", target = name)"# => true;
        is_match_as_value: r#"IsMatch(name, "^POST") == false"# => true;
        is_match_escaped_pattern: r#"IsMatch(name, "^GET\\s/\\w+$")"# => true;
        is_match_int_as_string: r#"IsMatch(attributes["i"], "^2\\d\\d$")"# => true;
        is_match_float_as_string: r#"IsMatch(attributes["f"], "^1\\.5$")"# => true;
        is_match_bool_as_string: r#"IsMatch(attributes["b"], "^true$")"# => true;
        is_match_bytes_as_hex: r#"IsMatch(attributes["bytes"], "^cafe$")"# => true;
        is_match_long_bytes_as_hex: r#"IsMatch(attributes["big_bytes"], "^(ab){40}$")"# => true;
        is_match_empty_bytes_is_empty_string: r#"IsMatch(attributes["empty_bytes"], "^$")"# => true;
        is_match_nil_is_false: r#"IsMatch(attributes["absent"], ".*")"# => false;
        is_match_empty_value_is_false: r#"IsMatch(attributes["empty"], ".*")"# => false;
        is_match_kind_int: r#"IsMatch(kind, "^2$")"# => true;
        is_match_ascii_digit_class: r#"IsMatch("١٢٣", "^\\d+$")"# => false;
        is_string: r#"IsString(attributes["s"])"# => true;
        is_string_of_int: r#"IsString(attributes["i"])"# => false;
        is_string_of_nil: r#"IsString(attributes["absent"])"# => false;
        is_string_of_id: r#"IsString(trace_id.string)"# => true;
        is_int: r#"IsInt(attributes["i"])"# => true;
        is_int_of_float: r#"IsInt(attributes["f"])"# => false;
        is_int_of_enum: "IsInt(SPAN_KIND_SERVER)" => true;
        is_double: r#"IsDouble(attributes["f"])"# => true;
        is_double_of_int: r#"IsDouble(attributes["i"])"# => false;
        is_bool: r#"IsBool(attributes["b"])"# => true;
        is_bool_of_string: r#"IsBool(attributes["s"])"# => false;
        is_bool_of_map: r#"IsBool(attributes["map"])"# => false;
        not_is_bool: r#"not IsBool(attributes["absent"])"# => true;
        len_of_string_is_bytes: r#"Len("é") == 2"# => true;
        len_of_attribute: r#"Len(attributes["s"]) == 10"# => true;
        len_of_bytes: r#"Len(attributes["bytes"]) == 2"# => true;
        len_of_empty_bytes: r#"Len(attributes["empty_bytes"]) == 0"# => true;
        len_of_name: "Len(name) > 5" => true;
        len_in_arithmetic: "Len(name) * 2 == 20" => true;
        nested_converters: r#"IsMatch(Len(name), "^10$")"# => true;
        // Indexing into attribute values (OTTL's `getIndexableValue`).
        list_element_string: r#"attributes["list"][0] == "true""# => true;
        list_element_int: r#"attributes["list"][1] == 2"# => true;
        list_element_int_compares_as_number: r#"attributes["list"][1] > 1.5"# => true;
        list_element_map_entry: r#"attributes["list"][2]["a"] == "b""# => true;
        list_in_list: r#"attributes["list"][3][0] == 3.5"# => true;
        empty_list_element_is_nil: r#"attributes["list"][4] == nil"# => true;
        list_element_is_a_string: r#"IsString(attributes["list"][0])"# => true;
        list_element_is_match: r#"IsMatch(attributes["list"][0], "^tr")"# => true;
        list_element_len: r#"Len(attributes["list"][0]) == 4"# => true;
        indexed_values_in_converters: r#"IsMatch(attributes["list"][2]["a"], "b") and not IsString(attributes["list"][1])"#
            => true;
        span_prefix_indexing: r#"span.attributes["list"][0] == "true""# => true;
        map_entry: r#"attributes["map"]["a"] == "x""# => true;
        map_entry_first_of_a_repeated_key: r#"attributes["map"]["a"] == "dup""# => false;
        map_missing_key_is_nil: r#"attributes["map"]["missing"] == nil"# => true;
        map_missing_key_then_more_indexes_is_nil: r#"attributes["map"]["missing"][0]["x"] == nil"# => true;
        map_empty_entry_is_nil: r#"attributes["map"]["e"] == nil"# => true;
        map_nested: r#"attributes["map"]["n"]["deep"][1] == "two""# => true;
        map_nested_int: r#"attributes["map"]["n"]["deep"][0] == 1"# => true;
        absent_attribute_indexed_is_nil: r#"attributes["absent"][0] == nil"# => true;
        absent_attribute_indexed_by_key_is_nil: r#"attributes["absent"]["x"] == nil"# => true;
        resource_list_element: r#"resource.attributes["list"][0] == "res""# => true;
        resource_list_element_differs: r#"resource.attributes["list"][0] == "true""# => false;
        indexed_in_arithmetic: r#"attributes["list"][1] * 2 == 4"# => true;
        // Whole maps and lists (OTTL's `Len`, `StringLikeGetter` JSON, `pcommon` equality).
        len_of_map: r#"Len(attributes["map"]) == 4"# => true;
        len_of_list: r#"Len(attributes["list"]) == 5"# => true;
        len_of_nested_list: r#"Len(attributes["list"][3]) == 1"# => true;
        is_match_on_map_json: r#"IsMatch(attributes["map"], "^\\{\"a\":\"dup\",\"e\":null,\"n\":\\{\"deep\":\\[1,\"two\"\\]\\}\\}$")"# => true;
        is_match_on_list_json: r#"IsMatch(attributes["list"], "^\\[\"true\",2,\\{\"a\":\"b\"\\},\\[3.5\\],null\\]$")"# => true;
        map_equals_itself: r#"attributes["map"]["n"] == attributes["map"]["n"]"# => true;
        // Its repeated key "a": the second entry is compared with the first ("dup" vs "x"), as `Map.Equal` does.
        map_with_a_repeated_key_differs_from_itself: r#"attributes["map"] == attributes["map"]"# => false;
        list_differs_from_its_element: r#"attributes["list"] != attributes["list"][3]"# => true;
        resource_list_differs: r#"resource.attributes["list"] == attributes["list"]"# => false;
        is_map: r#"IsMap(attributes["map"]) and not IsMap(attributes["list"]) and not IsMap(attributes["absent"])"# => true;
        is_list: r#"IsList(attributes["list"]) and IsList(attributes["list"][3]) and not IsList(attributes["s"])"# => true;
        not_of_len_of_map: r#"not (Len(attributes["map"]) > 4)"# => true;
        // String converters.
        to_lower_case: r#"ToLowerCase(name) == "get /users""# => true;
        to_upper_case: r#"ToUpperCase(attributes["s"]) == "GET /USERS""# => true;
        to_lower_case_of_trace_id: r#"ToLowerCase(trace_id.string) == trace_id.string"# => true;
        has_prefix: r#"HasPrefix(name, "GET ") and not HasPrefix(name, "get")"# => true;
        has_suffix: r#"HasSuffix(attributes["s"], "/users") and HasSuffix(name, "")"# => true;
        string_of_int: r#"String(attributes["i"]) == "200""# => true;
        string_of_nil_is_nil: r#"String(attributes["absent"]) == nil"# => true;
        string_of_map: r#"IsMatch(String(attributes["list"][2]), "^\\{\"a\":\"b\"\\}$")"# => true;
        concat: r#"Concat([name, attributes["i"], attributes["absent"], 1.5, attributes["b"]], "|") == "GET /users|200|<nil>|1.5|true""# => true;
        concat_empty: r#"Concat([], "-") == """# => true;
        concat_named: r#"Concat(delimiter = "", vals = ["a", "b"]) == "ab""# => true;
        int_of_string: r#"Int("42") == 42 and Int("-7") == -7 and Int("+3") == 3"# => true;
        int_of_float_truncates: r#"Int(attributes["f"]) == 1 and Int(-2.9) == -2"# => true;
        int_of_bool: r#"Int(attributes["b"]) == 1"# => true;
        int_of_nil_is_nil: r#"Int(attributes["absent"]) == nil"# => true;
        int_of_nan_is_min: r#"Int(attributes["nan"]) == -9223372036854775807 - 1"# => true;
        double_of_string: r#"Double("1.5e3") == 1500 and Double(".5") == 0.5 and Double("-Inf") < 0"# => true;
        double_of_int: r#"Double(attributes["i"]) == 200.0 and IsDouble(Double(attributes["i"]))"# => true;
        double_of_nil_is_nil: r#"Double(attributes["absent"]) == nil"# => true;
        trim_default_spaces: r#"Trim("  a b  ") == "a b""# => true;
        trim_cutset: r#"Trim(replacement = "/x", target = "x//users/x") == "users" and Trim("abc", "") == "abc""# => true;
        trim_prefix: r#"TrimPrefix(name, "GET ") == "/users" and TrimPrefix(name, "POST") == name"# => true;
        trim_suffix: r#"TrimSuffix(attributes["s"], "/users") == "GET ""# => true;
        converter_result_in_is_match: r#"IsMatch(ToLowerCase(name), "^get ")"# => true;
    }

    /// Scenario: a condition whose evaluation fails on the test span.
    /// Guarantees: an error saying why, as the reference errors (or, for map/list contents, as tailsample cannot
    /// know), never a silent result.
    macro_rules! eval_error_cases {
        ($($name:ident: $expr:expr => $msg:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(eval($expr), Err(EvalError::new($msg)), "{}", $expr);
            }
        )*};
    }

    eval_error_cases! {
        to_lower_case_of_int: r#"ToLowerCase(attributes["i"]) == "x""#
            => r#"ToLowerCase(attributes["i"]): expected a string, got an int"#;
        has_prefix_of_nil: r#"HasPrefix(attributes["absent"], "x")"#
            => r#"HasPrefix(attributes["absent"], "x"): expected a string, got nil"#;
        concat_with_nan: r#"Concat([attributes["nan"]], "") == "x""#
            => r#"Concat([attributes["nan"]], ""): NaN has no string form (OTTL fails to convert NaN and infinities)"#;
        int_of_bad_string: r#"Int("1.5") == 1"# => r#"Int("1.5"): "1.5" is not a base-10 int64"#;
        int_of_map: r#"Int(attributes["map"]) == 1"#
            => r#"Int(attributes["map"]): Int takes an int, a float, a string or a boolean, got a map"#;
        double_out_of_range: r#"Double("1e400") > 0"# => r#"Double("1e400"): "1e400" is not a float tailsample can parse"#;
        len_of_nil: r#"Len(attributes["absent"]) > 0"#
            => r#"Len(attributes["absent"]): Len takes a string, bytes, a map or a list, got nil"#;
        len_of_int_attribute: r#"Len(attributes["i"]) > 0"#
            => r#"Len(attributes["i"]): Len takes a string, bytes, a map or a list, got an int"#;
        is_match_on_nan: r#"IsMatch(attributes["nan"], "x")"#
            => r#"IsMatch(attributes["nan"], "x"): NaN has no string form (OTTL fails to convert NaN and infinities)"#;
        arithmetic_on_nil: r#"attributes["absent"] + 1 > 0"#
            => r#"attributes["absent"] + 1: arithmetic needs ints or floats, got nil"#;
        arithmetic_on_string_attribute: r#"1 + attributes["s"] > 0"#
            => r#"1 + attributes["s"]: arithmetic needs ints or floats, got a string"#;
        int_division_by_zero: "kind / 0 > 1" => "kind / 0: attempted to divide by 0";
        float_division_by_zero: "1.5 / 0.0 > 1" => "1.5 / 0.0: attempted to divide by 0";
        list_index_out_of_bounds: r#"attributes["list"][5] == nil"#
            => r#"attributes["list"][5]: index 5 out of bounds (the list has 5 elements)"#;
        nested_list_index_out_of_bounds: r#"attributes["map"]["n"]["deep"][2] == nil"#
            => r#"attributes["map"]["n"]["deep"][2]: index 2 out of bounds (the list has 2 elements)"#;
        list_negative_index: r#"attributes["list"][-1] == nil"#
            => r#"attributes["list"][-1]: index -1 out of bounds (the list has 5 elements)"#;
        list_indexed_by_string: r#"attributes["list"]["a"] == nil"#
            => r#"attributes["list"]["a"]: a list is indexed by an int, not a string (`["a"]`)"#;
        map_indexed_by_int: r#"attributes["map"][0] == nil"#
            => r#"attributes["map"][0]: a map is indexed by a string key, not an int (`[0]`)"#;
        string_indexed: r#"attributes["s"][0] == nil"# => r#"attributes["s"][0]: a string cannot be indexed"#;
        empty_value_indexed: r#"attributes["empty"]["x"] == nil"#
            => r#"attributes["empty"]["x"]: an empty value cannot be indexed"#;
        index_past_a_scalar: r#"attributes["map"]["a"][0] == nil"#
            => r#"attributes["map"]["a"][0]: a string cannot be indexed"#;
    }

    #[test]
    fn errors_are_short_circuited_like_the_reference() {
        assert_eq!(eval(r#"true or Len(attributes["i"]) > 0"#), Ok(true));
        assert_eq!(eval(r#"false and Len(attributes["i"]) > 0"#), Ok(false));
        assert!(eval(r#"false or Len(attributes["i"]) > 0"#).is_err());
    }

    #[test]
    fn unparsable_trace_state_reads_as_nil() {
        assert_eq!(eval_on(r#"trace_state["a"] == nil"#, "a=1,a=2"), Ok(true));
        assert_eq!(eval_on(r#"trace_state["a"] == nil"#, "Bad=1"), Ok(true));
        assert_eq!(eval_on(r#"trace_state["a"] == "1""#, "a=1,b=2"), Ok(true));
        assert_eq!(eval_on(r#"trace_state["a"] == """#, ""), Ok(true));
    }

    #[test]
    fn parent_span_id_and_kind_out_of_range() {
        let mut c = parse(
            r#"parent_span_id.string == "0102030405060708" and kind == 9 and kind.string == "" and
               kind.deprecated_string == "" and status.code == 7 and end_time_unix_nano < 0"#,
            ContextKind::Span,
        )
        .unwrap();
        c.bind(&keys());
        let t = TestSpan {
            parent: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            kind: 9,
            status: 7,
            end: u64::MAX,
            ..TestSpan::new("")
        };
        let got = with_span(&t, |view| {
            c.eval_span(&SpanCtx {
                span: view,
                attrs: &attrs(),
                resource_attrs: &resource_attrs(),
                scope_name: "",
                scope_raw: &[],
            })
        });
        assert_eq!(got, Ok(true));
    }

    fn eval_event(expr: &str, name: &str, event_attrs: &[AttrValue<'_>]) -> EResult<bool> {
        let mut c = parse(expr, ContextKind::SpanEvent).unwrap_or_else(|e| panic!("{e}"));
        c.bind(&keys());
        with_span(&TestSpan::new(""), |view| {
            let (a, r) = (attrs(), resource_attrs());
            let span = SpanCtx {
                span: view,
                attrs: &a,
                resource_attrs: &r,
                scope_name: "scope",
                scope_raw: &[],
            };
            c.eval_event(&EventCtx {
                name,
                attrs: event_attrs,
                span: &span,
            })
        })
    }

    #[test]
    fn event_paths_read_the_event_and_its_span() {
        let mut ev = vec![AttrValue::Absent; keys().len()];
        ev[0] = AttrValue::Str("java.lang.NullPointerException");
        ev[7] = AttrValue::Map(leak(av::map_body(&[("frame", av::str("Main.java:3"))])));
        let cases = [
            (r#"attributes["map"]["frame"] == "Main.java:3""#, true),
            (r#"span.attributes["list"][0] == "true""#, true),
            (r#"resource.attributes["list"][0] == "res""#, true),
            (r#"name == "exception""#, true),
            (r#"spanevent.name == "exception""#, true),
            (
                r#"attributes["s"] == "java.lang.NullPointerException""#,
                true,
            ),
            (
                r#"spanevent.attributes["s"] == "java.lang.NullPointerException""#,
                true,
            ),
            (r#"attributes["i"] == nil"#, true),
            (r#"span.attributes["i"] == 200"#, true),
            (r#"span.name == "GET /users""#, true),
            (r#"span.kind == SPAN_KIND_SERVER"#, true),
            (r#"span.status.code == STATUS_CODE_ERROR"#, true),
            (r#"resource.attributes["s"] == "checkout""#, true),
            (r#"instrumentation_scope.name == "scope""#, true),
            (
                r#"name == "exception" and IsMatch(attributes["s"], "NullPointer")"#,
                true,
            ),
            (r#"name == "log""#, false),
        ];
        for (expr, want) in cases {
            assert_eq!(eval_event(expr, "exception", &ev), Ok(want), "{expr}");
        }
    }

    /// Scenario: `status.message` and `instrumentation_scope.version` / `.attributes` (read from raw bytes), in
    /// both contexts.
    /// Guarantees: the values the reference's paths give; a missing scope attribute is nil; indexing works.
    #[test]
    fn status_message_and_scope_paths() {
        let kv = |k: &str, v: Vec<u8>| {
            let mut body = Vec::new();
            bytes_field(&mut body, 1, k.as_bytes());
            bytes_field(&mut body, 2, &v);
            body
        };
        let mut scope = Vec::new();
        bytes_field(&mut scope, 1, b"io.opentelemetry.http");
        bytes_field(&mut scope, 2, b"2.1.0");
        bytes_field(&mut scope, 3, &kv("team", av::str("payments")));
        bytes_field(
            &mut scope,
            3,
            &kv("tags", av::array(&[av::str("a"), av::int(2)])),
        );
        let cases = [
            (r#"status.message == "boom""#, true),
            (r#"span.status.message == "boom""#, true),
            (r#"instrumentation_scope.version == "2.1.0""#, true),
            (r#"scope.version == "2.1.0""#, true),
            (
                r#"instrumentation_scope.attributes["team"] == "payments""#,
                true,
            ),
            (r#"instrumentation_scope.attributes["tags"][1] == 2"#, true),
            (
                r#"Len(instrumentation_scope.attributes["tags"]) == 2"#,
                true,
            ),
            (r#"instrumentation_scope.attributes["absent"] == nil"#, true),
            (
                r#"IsMatch(instrumentation_scope.attributes["tags"], "^\\[\"a\",2\\]$")"#,
                true,
            ),
        ];
        with_span(&TestSpan::new(""), |view| {
            let (a, r) = (attrs(), resource_attrs());
            let ctx = SpanCtx {
                span: view,
                attrs: &a,
                resource_attrs: &r,
                scope_name: "io.opentelemetry.http",
                scope_raw: &scope,
            };
            for (expr, want) in cases {
                let mut c = parse(expr, ContextKind::Span).unwrap_or_else(|e| panic!("{e}"));
                c.bind(&keys());
                assert_eq!(c.eval_span(&ctx), Ok(want), "{expr}");
                if !expr.starts_with("status") {
                    let mut c =
                        parse(expr, ContextKind::SpanEvent).unwrap_or_else(|e| panic!("{e}"));
                    c.bind(&keys());
                    let ev = EventCtx {
                        name: "e",
                        attrs: &[],
                        span: &ctx,
                    };
                    assert_eq!(c.eval_event(&ev), Ok(want), "spanevent: {expr}");
                }
            }
            let empty = SpanCtx {
                scope_raw: &[],
                ..ctx
            };
            let mut c = parse(r#"instrumentation_scope.version == """#, ContextKind::Span).unwrap();
            c.bind(&keys());
            assert_eq!(c.eval_span(&empty), Ok(true));
        });
    }

    #[test]
    fn conditions_are_evaluated_in_their_context_only() {
        let c = parse("true", ContextKind::SpanEvent).unwrap();
        let s = parse("true", ContextKind::Span).unwrap();
        with_span(&TestSpan::new(""), |view| {
            let span = SpanCtx {
                span: view,
                attrs: &[],
                resource_attrs: &[],
                scope_name: "",
                scope_raw: &[],
            };
            assert!(c.eval_span(&span).is_err());
            let ev = EventCtx {
                name: "",
                attrs: &[],
                span: &span,
            };
            assert!(s.eval_event(&ev).is_err());
            assert_eq!(s.eval_span(&span), Ok(true));
        });
    }

    // Allocation counting, for the no-allocation guarantee: a pass-through allocator that counts this thread's
    // allocations.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            pub static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
        }

        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn count() -> u64 {
            ALLOCATIONS.with(|n| n.get())
        }
    }

    /// Expressions typical of tail sampling conditions, to measure.
    const TYPICAL: &[&str] = &[
        "true",
        "kind == 2",
        "1 == 2",
        r#"attributes["s"] == "GET /users""#,
        r#"name == "GET /users" and kind == SPAN_KIND_SERVER"#,
        r#"status.code == STATUS_CODE_ERROR or attributes["i"] >= 500"#,
        r#"resource.attributes["s"] == "checkout" and attributes["absent"] != nil"#,
        "end_time_unix_nano - start_time_unix_nano > 2000000000",
        r#"IsMatch(name, "^GET /users")"#,
        r#"IsMatch(attributes["i"], "^5\\d\\d$")"#,
        r#"not (attributes["b"] == false) and IsString(attributes["s"])"#,
        r#"trace_id.string != "" and Len(name) > 3"#,
    ];

    /// Scenario: typical conditions evaluated many times.
    /// Guarantees: no allocation per evaluation (after the regex engine's first use on this thread).
    #[test]
    fn evaluation_does_not_allocate() {
        with_span(&TestSpan::new(""), |view| {
            let (a, r) = (attrs(), resource_attrs());
            let ctx = SpanCtx {
                span: view,
                attrs: &a,
                resource_attrs: &r,
                scope_name: "scope",
                scope_raw: &[],
            };
            for expr in TYPICAL {
                let mut c = parse(expr, ContextKind::Span).unwrap();
                c.bind(&keys());
                c.eval_span(&ctx).unwrap();
                let before = counting::count();
                for _ in 0..100 {
                    std::hint::black_box(c.eval_span(std::hint::black_box(&ctx)).unwrap());
                }
                assert_eq!(counting::count() - before, 0, "{expr} allocates");
            }
        });
    }

    /// Prints the cost of evaluating typical conditions, the best of 5 rounds (`cargo test --release -p
    /// tailsample-core --lib ottl::eval::tests::bench -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn bench() {
        with_span(&TestSpan::new(""), bench_on);
    }

    fn bench_on(view: &SpanView<'_>) {
        let (a, r) = (attrs(), resource_attrs());
        let ctx = SpanCtx {
            span: view,
            attrs: &a,
            resource_attrs: &r,
            scope_name: "scope",
            scope_raw: &[],
        };
        let n = 1_000_000u32;
        let best = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        f();
                    }
                    start.elapsed().as_nanos() as f64 / n as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        let baseline = best(&mut || {
            std::hint::black_box(
                std::hint::black_box("GET /users") == std::hint::black_box("GET /users"),
            );
        });
        println!("{baseline:8.1} ns  (baseline: one string comparison in the loop)");
        for expr in TYPICAL {
            let mut c = parse(expr, ContextKind::Span).unwrap();
            c.bind(&keys());
            let ns = best(&mut || {
                std::hint::black_box(c.eval_span(std::hint::black_box(&ctx)).unwrap());
            });
            println!("{ns:8.1} ns  {expr}");
        }
    }
}
