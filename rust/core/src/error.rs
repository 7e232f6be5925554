//! One error type for the whole core: what went wrong and where (a protobuf field path and byte offset, or a
//! YAML path). The Python binding maps each variant to one exception class, once.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A payload is not a valid `ExportTraceServiceRequest`; nothing of it was taken.
    Decode {
        field: String,
        offset: usize,
        message: String,
    },
    /// The configuration is invalid at `path` (a YAML path such as `policies[1].latency.threshold_ms`).
    Config { path: String, message: String },
    /// A limit is reached; nothing of the payload was taken, and the caller should retry later.
    Backpressure {
        limit: &'static str,
        message: String,
    },
    /// The storage directory could not be opened, read or written (`path`: the directory, when known).
    Storage { path: String, message: String },
}

/// Every kind of error, as `Error::kind` names it: the binding maps each to one Python exception class, and
/// its test checks that the Python side has exactly these.
pub const KINDS: &[&str] = &["decode", "config", "backpressure", "storage"];

impl Error {
    /// The variant's name, one of `KINDS`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Decode { .. } => "decode",
            Error::Config { .. } => "config",
            Error::Backpressure { .. } => "backpressure",
            Error::Storage { .. } => "storage",
        }
    }

    pub fn config(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Decode {
                field,
                offset,
                message,
            } => {
                if field.is_empty() {
                    write!(
                        f,
                        "invalid ExportTraceServiceRequest at byte {offset}: {message}"
                    )
                } else {
                    write!(
                        f,
                        "invalid ExportTraceServiceRequest: {field} at byte {offset}: {message}"
                    )
                }
            }
            Error::Config { path, message } if path.is_empty() => write!(f, "{message}"),
            Error::Config { path, message } => write!(f, "{path}: {message}"),
            Error::Backpressure { message, .. } => write!(f, "{message}"),
            Error::Storage { path, message } if path.is_empty() => {
                write!(f, "tail storage: {message}")
            }
            Error::Storage { path, message } => write!(f, "tail storage at {path}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Scenario: one error of each variant. Guarantees: `KINDS` lists each variant's kind once, in order (a new
    /// variant fails to compile here until it is added, and then fails until `KINDS` has it).
    #[test]
    fn kinds_list_every_variant_once() {
        let all = [
            Error::Decode {
                field: String::new(),
                offset: 0,
                message: String::new(),
            },
            Error::config("", ""),
            Error::Backpressure {
                limit: "num_traces",
                message: String::new(),
            },
            Error::Storage {
                path: String::new(),
                message: String::new(),
            },
        ];
        for e in &all {
            // Exhaustive on purpose: a new variant must join `all`.
            match e {
                Error::Decode { .. }
                | Error::Config { .. }
                | Error::Backpressure { .. }
                | Error::Storage { .. } => {}
            }
        }
        let kinds: Vec<&str> = all.iter().map(Error::kind).collect();
        assert_eq!(kinds, KINDS);
    }
}
