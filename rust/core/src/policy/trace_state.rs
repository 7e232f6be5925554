//! `trace_state`: sampled if any span's W3C tracestate has `key` with one of `values`.
//!
//! The tracestate is parsed as OpenTelemetry Go's `trace.ParseTraceState` does (the reference uses it): an
//! invalid tracestate (bad key or value characters, more than 32 members, a duplicate key) matches nothing.

use super::inclusion::Inclusion;
use super::{certain, Fold, PolicyType, SpanFacts, TraceView, Vote};
use crate::config::node::Mapping;
use crate::error::Result;

/// W3C limit on a key=value member, which the reference uses to ignore impossible values.
const MAX_MEMBER: usize = 256;
const MAX_MEMBERS: usize = 32;

/// Why a tracestate is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceStateError {
    InvalidMember,
    InvalidKey,
    InvalidValue,
    Duplicate,
    TooManyMembers,
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn key_remain_ok(rest: &[u8]) -> bool {
    rest.iter()
        .all(|&c| is_alnum(c) || matches!(c, b'_' | b'-' | b'*' | b'/'))
}

fn key_part_ok(k: &[u8], max_rest: usize) -> bool {
    !k.is_empty() && k[0].is_ascii_lowercase() && k.len() - 1 <= max_rest && key_remain_ok(&k[1..])
}

fn key_ok(key: &str) -> bool {
    match key.split_once('@') {
        None => key_part_ok(key.as_bytes(), 255),
        Some((tenant, system)) => {
            let t = tenant.as_bytes();
            !t.is_empty()
                && is_alnum(t[0])
                && t.len() - 1 <= 240
                && key_remain_ok(&t[1..])
                && key_part_ok(system.as_bytes(), 13)
        }
    }
}

fn value_ok(v: &str) -> bool {
    let b = v.as_bytes();
    let n = b.len();
    if n == 0 || n > 256 {
        return false;
    }
    let chr = |c: u8| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=';
    b[..n - 1].iter().all(|&c| chr(c)) && chr(b[n - 1]) && b[n - 1] != b' '
}

/// The value of `key` in a W3C tracestate ("" when absent), or why the tracestate is invalid.
pub fn get<'a>(tracestate: &'a str, key: &str) -> std::result::Result<&'a str, TraceStateError> {
    let mut found: &'a str = "";
    // Keys seen so far, for the duplicate check: at most 32 members, so no allocation.
    let mut seen: [&str; MAX_MEMBERS] = [""; MAX_MEMBERS];
    let mut n = 0usize;
    for member in tracestate.split(',') {
        if member.is_empty() {
            continue;
        }
        let (k, v) = member
            .split_once('=')
            .ok_or(TraceStateError::InvalidMember)?;
        let k = k.trim_start_matches([' ', '\t']);
        let v = v.trim_end_matches([' ', '\t']);
        if !key_ok(k) {
            return Err(TraceStateError::InvalidKey);
        }
        if !value_ok(v) {
            return Err(TraceStateError::InvalidValue);
        }
        if seen[..n].contains(&k) {
            return Err(TraceStateError::Duplicate);
        }
        if n == MAX_MEMBERS {
            return Err(TraceStateError::TooManyMembers);
        }
        seen[n] = k;
        n += 1;
        if k == key {
            found = v;
        }
    }
    Ok(found)
}

#[derive(Debug, Clone)]
pub struct TraceState {
    pub key: String,
    values: Vec<String>,
}

impl TraceState {
    pub fn parse(mut m: Mapping<'_>) -> Result<Self> {
        let key = m.attribute_key()?;
        let values = m.strings("values")?;
        m.finish()?;
        // As the reference: empty values, and values that cannot fit a member with this key, never match.
        let values = values
            .into_iter()
            .filter(|v| !v.is_empty() && key.len() + v.len() < MAX_MEMBER)
            .collect();
        Ok(TraceState { key, values })
    }

    /// Folding: does this span's tracestate carry the key with one of the values?
    #[inline]
    pub fn span_matches(&self, tracestate: &str) -> bool {
        if tracestate.is_empty() {
            return false;
        }
        match get(tracestate, &self.key) {
            Ok(v) => self.values.iter().any(|x| x == v),
            Err(_) => false,
        }
    }

    pub fn evaluate(&self, matched: bool) -> Vote {
        super::vote(matched, false)
    }
}

impl PolicyType for TraceState {
    const TYPE: &'static str = "trace_state";

    fn from_block(m: Mapping<'_>, _path: &str) -> Result<Self> {
        TraceState::parse(m)
    }

    fn vote(
        &mut self,
        _t: &TraceView,
        matched: bool,
        _now: i64,
    ) -> std::result::Result<(Vote, Inclusion), String> {
        Ok(certain(self.evaluate(matched)))
    }

    fn folds(&self) -> bool {
        true
    }

    #[inline]
    fn span_fold(&self, s: &SpanFacts<'_, '_>) -> Fold {
        Fold::of(self.span_matches(s.span.trace_state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! get_cases {
        ($($name:ident: $ts:expr, $key:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(get($ts, $key), $want);
            }
        )*};
    }

    get_cases! {
        simple: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "congo" => Ok("t61rcWkgMzE");
        absent_is_empty: "rojo=1", "congo" => Ok("");
        ows_around_members: "rojo=1 ,\tcongo=2", "congo" => Ok("2");
        empty_members_skipped: "rojo=1,,congo=2", "congo" => Ok("2");
        tenant_key: "tenant@vendor=v", "tenant@vendor" => Ok("v");
        otel_member: "ot=th:fd70a4;rv:aabbccddeeff00", "ot" => Ok("th:fd70a4;rv:aabbccddeeff00");
        uppercase_key_is_invalid: "Rojo=1", "rojo" => Err(TraceStateError::InvalidKey);
        duplicate_is_invalid: "a=1,a=2", "a" => Err(TraceStateError::Duplicate);
        missing_equals_is_invalid: "a=1,b", "a" => Err(TraceStateError::InvalidMember);
        equals_in_value_is_invalid: "a=b=c", "a" => Err(TraceStateError::InvalidValue);
        empty_value_is_invalid: "a=", "a" => Err(TraceStateError::InvalidValue);
    }

    #[test]
    fn more_than_32_members_is_invalid() {
        let ts: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            get(&ts.join(","), "k0"),
            Err(TraceStateError::TooManyMembers)
        );
        assert_eq!(get(&ts[..32].join(","), "k31"), Ok("v"));
    }

    #[test]
    fn policy_matches_listed_values_only() {
        let p = TraceState {
            key: "vendor".into(),
            values: vec!["gold".into()],
        };
        assert!(p.span_matches("vendor=gold,x=y"));
        assert!(!p.span_matches("vendor=silver"));
        assert!(
            !p.span_matches("vendor=gold,vendor=gold"),
            "an invalid tracestate matches nothing"
        );
        assert!(!p.span_matches(""));
    }
}
