//! Reading a configuration tree (YAML already turned into JSON values) with the YAML path of every value, so
//! each error says exactly where it is: `policies[1].latency.threshold_ms: expected an integer, got "1s"`.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A value in the configuration tree and its path.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    pub value: &'a Value,
    path: &'a str,
}

/// A mapping whose keys are checked: reading a key marks it known; `finish` rejects the rest by name.
pub struct Mapping<'a> {
    map: &'a Map<String, Value>,
    pub path: String,
    known: Vec<&'static str>,
}

pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Node<'a> {
    pub fn new(value: &'a Value, path: &'a str) -> Self {
        Node { value, path }
    }
    pub fn path(&self) -> &str {
        self.path
    }
    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::config(self.path, message)
    }
    /// A mapping; `null` (an empty YAML block) counts as an empty mapping.
    pub fn mapping(&self) -> Result<Mapping<'a>> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self.value {
            Value::Object(map) => Ok(Mapping {
                map,
                path: self.path.to_string(),
                known: Vec::new(),
            }),
            Value::Null => Ok(Mapping {
                map: EMPTY.get_or_init(Map::new),
                path: self.path.to_string(),
                known: Vec::new(),
            }),
            other => Err(self.err(format!("expected a mapping, got {}", describe(other)))),
        }
    }
}

impl<'a> Mapping<'a> {
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }
    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }
    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }
    fn fail(&self, key: &str, message: impl Into<String>) -> Error {
        Error::config(self.key_path(key), message)
    }

    /// A raw value, to be read by the caller (for sub-blocks).
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.take(key)
    }

    pub fn int(&mut self, key: &'static str, default: i64) -> Result<i64> {
        match self.take(key) {
            None => Ok(default),
            Some(Value::Number(n)) => n.as_i64().map_or_else(
                || match n.as_f64() {
                    // A whole number written as a float (`10.0`, YAML 1.2's `1e3`): the reference's decoder
                    // takes it as that integer.
                    Some(f) if !n.is_u64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                    Some(f) if !n.is_u64() && f.is_finite() && f.abs() < 9.0e15 => Err(self.fail(
                        key,
                        format!(
                            "expected an integer, got {n} (the reference truncates it to {})",
                            f.trunc() as i64
                        ),
                    )),
                    _ if n.is_u64() => Err(self.fail(
                        key,
                        format!(
                            "expected an integer, got {n} (too large; the reference wraps it to {})",
                            n.as_u64().unwrap_or(0) as i64
                        ),
                    )),
                    _ => Err(self.fail(key, format!("expected an integer, got {n}"))),
                },
                Ok,
            ),
            Some(other) => {
                Err(self.fail(key, format!("expected an integer, got {}", describe(other))))
            }
        }
    }

    /// An integer that must be at least `min`.
    pub fn int_at_least(&mut self, key: &'static str, default: i64, min: i64) -> Result<i64> {
        self.int_at_least_or(key, default, min, "")
    }

    /// An integer that must be at least `min`, where the reference accepts smaller ones: the error says how the
    /// reference reads them (`reference`, e.g. "then samples every trace").
    pub fn int_at_least_or(
        &mut self,
        key: &'static str,
        default: i64,
        min: i64,
        reference: &str,
    ) -> Result<i64> {
        let v = self.int(key, default)?;
        if v < min {
            let why = if reference.is_empty() {
                String::new()
            } else {
                format!(" (the reference accepts it and {reference})")
            };
            return Err(self.fail(key, format!("must be at least {min}, got {v}{why}")));
        }
        Ok(v)
    }

    pub fn float(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.take(key) {
            None => Ok(default),
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| self.fail(key, "expected a number")),
            Some(other) => {
                Err(self.fail(key, format!("expected a number, got {}", describe(other))))
            }
        }
    }

    pub fn boolean(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.take(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.fail(
                key,
                format!("expected true or false, got {}", describe(other)),
            )),
        }
    }

    pub fn string(&mut self, key: &'static str, default: &str) -> Result<String> {
        match self.take(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => {
                Err(self.fail(key, format!("expected a string, got {}", describe(other))))
            }
        }
    }

    /// A string that must be present and non-empty.
    pub fn required_string(&mut self, key: &'static str) -> Result<String> {
        let present = self.has(key);
        let s = self.string(key, "")?;
        if s.is_empty() {
            return Err(self.fail(
                key,
                if present {
                    "must not be empty"
                } else {
                    "is required"
                },
            ));
        }
        Ok(s)
    }

    /// `key` of a reference attribute policy: required and non-empty here; the reference accepts it absent or
    /// empty, and then reads the attribute named "" (the error says so).
    pub fn attribute_key(&mut self) -> Result<String> {
        self.required_string("key").map_err(|e| match e {
            Error::Config { path, message } => Error::Config {
                path,
                message: format!(
                    "{message} (the reference accepts it and then reads the attribute named \"\", which \
                     instrumentation does not send)"
                ),
            },
            other => other,
        })
    }

    /// A list of strings (an absent key is an empty list). A single string is split at commas, as the
    /// reference's decoder does (`status_codes: ERROR,OK`; `""` is an empty list).
    pub fn strings(&mut self, key: &'static str) -> Result<Vec<String>> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s.split(',').map(str::to_string).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(Error::config(
                        format!("{}[{i}]", self.key_path(key)),
                        format!("expected a string, got {}", describe(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.fail(
                key,
                format!("expected a list of strings, got {}", describe(other)),
            )),
        }
    }

    /// A Go duration (`10s`, `500ms`, `1m30s`), in nanoseconds.
    pub fn duration(&mut self, key: &'static str, default_ns: i64) -> Result<i64> {
        match self.take(key) {
            None => Ok(default_ns),
            Some(Value::String(s)) => parse_go_duration(s).map_err(|m| self.fail(key, m)),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(0),
            Some(Value::Number(n)) => Err(self.fail(
                key,
                format!(
                    "expected a duration such as \"10s\" or \"500ms\", got the number {n} (the reference reads \
                     a bare number as nanoseconds: {n}ns)"
                ),
            )),
            Some(other) => Err(self.fail(
                key,
                format!(
                    "expected a duration such as \"10s\" or \"500ms\", got {}",
                    describe(other)
                ),
            )),
        }
    }

    /// A byte size: an integer number of bytes.
    pub fn bytes(&mut self, key: &'static str, default: u64) -> Result<u64> {
        let v = self.int_at_least(key, default as i64, 0)?;
        Ok(v as u64)
    }

    /// Rejects keys nobody read, naming them and the keys that are known here.
    pub fn finish(self) -> Result<()> {
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort();
        let mut known = self.known.clone();
        known.sort_unstable();
        known.dedup();
        let first = unknown[0];
        let others = if unknown.len() > 1 {
            format!(" (and {} more)", unknown.len() - 1)
        } else {
            String::new()
        };
        Err(Error::config(
            join(&self.path, first),
            format!("unknown key{others}; known keys here: {}", known.join(", ")),
        ))
    }
}

/// Parses a Go `time.Duration` string: a sequence of decimal numbers with units `ns us µs ms s m h`.
pub fn parse_go_duration(text: &str) -> std::result::Result<i64, String> {
    let bad = || {
        format!("invalid duration {text:?}: expected a number with a unit, such as \"10s\", \"500ms\" or \"1m30s\"")
    };
    let mut s = text.trim();
    let negative = s.starts_with('-');
    if s.starts_with('-') || s.starts_with('+') {
        s = &s[1..];
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    let mut exact: i128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let number = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (ns, us, ms, s, m or h)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<i128>().map_err(|_| bad())?
        };
        exact = exact
            .checked_add(whole.checked_mul(scale).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        if !frac_part.is_empty() {
            let frac: f64 = format!("0.{frac_part}").parse().map_err(|_| bad())?;
            total += frac * scale as f64;
        }
    }
    let ns = exact + total.round() as i128;
    let ns = if negative { -ns } else { ns };
    i64::try_from(ns).map_err(|_| format!("invalid duration {text:?}: out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        for (text, ns) in [
            ("10s", 10_000_000_000i64),
            ("500ms", 500_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5s", 1_500_000_000),
            ("1h", 3_600_000_000_000),
            ("300us", 300_000),
            ("300µs", 300_000),
            ("7ns", 7),
            ("0", 0),
            ("-2s", -2_000_000_000),
            (".5s", 500_000_000),
        ] {
            assert_eq!(parse_go_duration(text), Ok(ns), "{text}");
        }
        for bad in ["", "10", "s", "10x", "1.2.3s", "ten seconds", "1e3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_path() {
        let v = json!({"threshold_ms": "1s", "extra": 1});
        let node = Node::new(&v, "policies[1].latency");
        let mut m = node.mapping().unwrap();
        let e = m.int("threshold_ms", 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[1].latency.threshold_ms: expected an integer, got the string \"1s\""
        );
        let e = m.finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[1].latency.extra: unknown key; known keys here: threshold_ms"
        );
    }

    #[test]
    fn floats_are_not_integers() {
        let v = json!({"n": 1.5, "big": 18446744073709551615u64});
        let mut m = Node::new(&v, "").mapping().unwrap();
        assert!(m
            .int("n", 0)
            .unwrap_err()
            .to_string()
            .contains("expected an integer, got 1.5"));
        assert!(m
            .int("big", 0)
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }
}
