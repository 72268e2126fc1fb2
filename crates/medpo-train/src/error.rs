//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `medpo-train`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The model engine failed (loading, preprocessing, forward, generation).
    #[error(transparent)]
    Model(#[from] medpo_models::Error),

    /// An unknown objective name; the message lists every valid name.
    #[error("unknown loss_type `{name}`; valid names: {valid}")]
    UnknownObjective { name: String, valid: String },

    /// `loss_weights` and `loss_type` have different lengths.
    #[error("loss_weights has {loss_weights} entries but loss_type has {loss_types}; give one weight per loss type")]
    LossWeightsMismatch {
        loss_types: usize,
        loss_weights: usize,
    },

    /// An objective needs an input the batch does not carry.
    #[error("loss_type `{objective}` needs `{input}`, which the batch does not provide")]
    MissingInput {
        objective: &'static str,
        input: &'static str,
    },

    /// A configuration value is out of range or inconsistent.
    #[error("invalid config `{key}` = {value}: {reason}")]
    Config {
        key: &'static str,
        value: String,
        reason: String,
    },

    /// A configuration file cannot be parsed or has an unknown key.
    #[error("{path}: {message}")]
    ConfigFile { path: PathBuf, message: String },

    /// A dataset record is malformed.
    #[error("{file}, record {record}: {message}")]
    Record {
        file: PathBuf,
        record: String,
        message: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file could not be parsed or written.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// An image could not be decoded or encoded.
    #[error("{path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    /// A safetensors file could not be written.
    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },

    /// A checkpoint or adapter folder lacks an expected entry.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.into(),
            source,
        }
    }
}
