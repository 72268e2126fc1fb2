//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `medpo-eval`.
///
/// Variants about files name the file and, where there is one, the 1-based line number.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSONL file is not valid JSON.
    #[error("`{path}` line {line}: invalid JSON: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A record lacks a required field or has it with the wrong type.
    #[error("`{path}` line {line}: {message}")]
    Record {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Two records share a question id.
    #[error("`{path}` line {line}: duplicate question_id `{id}` (first seen on line {first})")]
    DuplicateId {
        path: PathBuf,
        line: usize,
        first: usize,
        id: String,
    },
    /// A benchmark name is neither known nor an existing file.
    #[error("unknown benchmark `{name}`: expected one of {known} or a path to a JSONL file")]
    UnknownBenchmark { name: String, known: String },
    /// Votes or answers are inconsistent with what they refer to.
    #[error("{0}")]
    Invalid(String),
    /// The answerer (model engine) failed.
    #[error("answerer failed: {0}")]
    Answerer(String),
    /// The NLI judge endpoint failed or answered something unusable.
    #[error("NLI judge `{url}`: {message}")]
    Judge { url: String, message: String },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
