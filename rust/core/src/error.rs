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

impl Error {
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
