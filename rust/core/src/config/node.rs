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
        Err(unknown_keys(&self.path, &unknown, &known))
    }
}

// ---- single values, for the service configuration's reader (Python's `settings.py`) ----

/// What a value of the collector's service configuration is read as: the rules and words of the
/// `tail_sampling` block's reader, so the whole file reads one way.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// An integer at least `min`.
    Int {
        min: i64,
    },
    /// A number at least `min`.
    Float {
        min: f64,
    },
    Bool,
    Str,
    /// A string that is present and not empty.
    RequiredStr,
    /// One of `choices`.
    Choice(Vec<String>),
    /// A Go duration (`5s`, `1m30s`), not negative, in nanoseconds.
    Duration,
    /// A YAML list of strings (a single string is not taken for a list of one).
    StringList,
}

/// A value read by [`read_value`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Got {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Strings(Vec<String>),
}

/// Reads `value`, found at `path`, as `want`; errors carry `path` (or `path[i]` for a list item).
pub fn read_value(path: &str, value: &Value, want: &Want) -> Result<Got> {
    // The getters read keys of a mapping: give them a one-key mapping, then put the real path in errors.
    const KEY: &str = "value";
    let mut map = Map::new();
    map.insert(KEY.to_string(), value.clone());
    let holder = Value::Object(map);
    let mut m = Node::new(&holder, "").mapping()?;
    let got = match want {
        Want::Int { min } => m.int_at_least(KEY, *min, *min).map(Got::Int),
        Want::Float { min } => m.float(KEY, *min).and_then(|v| {
            if v < *min {
                Err(m.fail(KEY, format!("must be at least {min}, got {v}")))
            } else {
                Ok(Got::Float(v))
            }
        }),
        Want::Bool => m.boolean(KEY, false).map(Got::Bool),
        Want::Str => m.string(KEY, "").map(Got::Str),
        Want::RequiredStr => m.required_string(KEY).map(Got::Str),
        Want::Choice(choices) => m.string(KEY, "").and_then(|v| {
            if choices.contains(&v) {
                Ok(Got::Str(v))
            } else {
                Err(m.fail(
                    KEY,
                    format!("unknown value {v:?}; supported: {}", choices.join(", ")),
                ))
            }
        }),
        Want::Duration => m.duration(KEY, 0).and_then(|ns| {
            if ns < 0 {
                Err(m.fail(
                    KEY,
                    format!("must not be negative, got {}", describe(value)),
                ))
            } else {
                Ok(Got::Int(ns))
            }
        }),
        Want::StringList => match value {
            Value::Array(_) | Value::Null => m.strings(KEY).map(Got::Strings),
            other => Err(m.fail(KEY, format!("expected a list, got {}", describe(other)))),
        },
    };
    got.map_err(|e| match e {
        Error::Config { path: at, message } => Error::config(
            format!("{path}{}", at.strip_prefix(KEY).unwrap_or("")),
            message,
        ),
        other => other,
    })
}

/// Checks the keys of a mapping at `path` against `known`, in the words of [`Mapping::finish`].
pub fn check_keys(path: &str, keys: &[String], known: &[&str]) -> Result<()> {
    let mut unknown: Vec<&String> = keys
        .iter()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    let mut known = known.to_vec();
    known.sort_unstable();
    known.dedup();
    Err(unknown_keys(path, &unknown, &known))
}

#[cold]
fn unknown_keys(path: &str, unknown: &[&String], known: &[&str]) -> Error {
    let others = if unknown.len() > 1 {
        format!(" (and {} more)", unknown.len() - 1)
    } else {
        String::new()
    };
    Error::config(
        join(path, unknown[0]),
        format!("unknown key{others}; known keys here: {}", known.join(", ")),
    )
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

    /// Scenario: single values of the service configuration, read as the Python reader asks for them.
    /// Guarantees: the tail_sampling block's rules and words, with the value's own path.
    #[test]
    fn single_values_read_by_the_block_rules() {
        let ok = |v: Value, want: Want| read_value("a.b", &v, &want).unwrap();
        let err = |v: Value, want: Want| match read_value("a.b", &v, &want) {
            Err(Error::Config { path, message }) => (path, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(ok(json!(5), Want::Int { min: 0 }), Got::Int(5));
        assert_eq!(ok(json!(10.0), Want::Int { min: 0 }), Got::Int(10));
        assert_eq!(ok(json!(0.5), Want::Float { min: 0.0 }), Got::Float(0.5));
        assert_eq!(ok(json!(true), Want::Bool), Got::Bool(true));
        assert_eq!(ok(json!("x"), Want::RequiredStr), Got::Str("x".into()));
        assert_eq!(ok(json!("1m30s"), Want::Duration), Got::Int(90_000_000_000));
        assert_eq!(ok(json!(0), Want::Duration), Got::Int(0));
        let list = ok(json!(["p", "q"]), Want::StringList);
        assert_eq!(list, Got::Strings(vec!["p".into(), "q".into()]));
        let choice = Want::Choice(vec!["json".into(), "proto".into()]);
        assert_eq!(ok(json!("proto"), choice.clone()), Got::Str("proto".into()));
        let cases = [
            (
                json!("20MiB"),
                Want::Int { min: 0 },
                "a.b",
                "expected an integer, got the string \"20MiB\"",
            ),
            (
                json!(-1),
                Want::Int { min: 0 },
                "a.b",
                "must be at least 0, got -1",
            ),
            (
                json!(-0.5),
                Want::Float { min: 0.0 },
                "a.b",
                "must be at least 0, got -0.5",
            ),
            (
                json!("yes"),
                Want::Bool,
                "a.b",
                "expected true or false, got the string \"yes\"",
            ),
            (
                json!(3),
                Want::Str,
                "a.b",
                "expected a string, got the number 3",
            ),
            (json!(""), Want::RequiredStr, "a.b", "must not be empty"),
            (
                json!("5 seconds"),
                Want::Duration,
                "a.b",
                "invalid duration \"5 seconds\"",
            ),
            (
                json!(5),
                Want::Duration,
                "a.b",
                "expected a duration such as \"10s\"",
            ),
            (
                json!("-5s"),
                Want::Duration,
                "a.b",
                "must not be negative, got the string \"-5s\"",
            ),
            (
                json!("debug"),
                Want::StringList,
                "a.b",
                "expected a list, got the string \"debug\"",
            ),
            (
                json!(["a", 1]),
                Want::StringList,
                "a.b[1]",
                "expected a string, got the number 1",
            ),
            (
                json!("xml"),
                choice,
                "a.b",
                "unknown value \"xml\"; supported: json, proto",
            ),
        ];
        for (value, want, path, message) in cases {
            let (got_path, got) = err(value.clone(), want);
            assert_eq!(got_path, path, "{value}");
            assert!(got.starts_with(message), "{value}: {got}");
        }
    }

    #[test]
    fn keys_checked_in_the_words_of_finish() {
        let keys = [
            "endpoint".to_string(),
            "endpont".to_string(),
            "zz".to_string(),
        ];
        assert!(check_keys("r", &keys[..1], &["endpoint", "tls"]).is_ok());
        let Err(Error::Config { path, message }) = check_keys("r", &keys, &["tls", "endpoint"])
        else {
            panic!("accepted");
        };
        assert_eq!(path, "r.endpont");
        assert_eq!(
            message,
            "unknown key (and 1 more); known keys here: endpoint, tls"
        );
        let v = json!({"endpont": 1, "zz": 2, "endpoint": 3});
        let mut m = Node::new(&v, "r").mapping().unwrap();
        m.value("endpoint");
        m.value("tls");
        assert_eq!(m.finish().unwrap_err(), Error::config(path, message));
    }
}
