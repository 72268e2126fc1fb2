//! The one error type of the engine. Every variant names the file, key or value at fault, so that
//! a user pointing the engine at a broken checkpoint learns what to fix.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading, preprocessing, generating or scoring.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A required file is absent.
    #[error("{what} `{path}` not found")]
    MissingFile { what: &'static str, path: PathBuf },

    /// A JSON file is malformed or lacks a required key (serde names the key).
    #[error("invalid `{path}`: {message}")]
    Config { path: PathBuf, message: String },

    /// `model_type` (or `architectures[0]`) names a layout this engine does not know.
    #[error("unknown model_type `{value}` in `{path}` (accepted: {accepted})")]
    UnknownModelType { path: PathBuf, value: String, accepted: &'static str },

    /// A config value is present but unsupported or inconsistent.
    #[error("unsupported value `{value}` for `{key}` in `{path}`: {reason}")]
    BadConfigValue { path: PathBuf, key: String, value: String, reason: String },

    /// The vision tower folder named by `mm_vision_tower` could not be found.
    #[error("vision tower `{value}` not found (tried: {tried})")]
    VisionTowerNotFound { value: String, tried: String },

    /// A tensor the model needs is not in the checkpoint (or not in its shard index).
    #[error("tensor `{key}` missing in `{file}`")]
    MissingTensor { key: String, file: PathBuf },

    /// A tensor has a shape other than the config implies.
    #[error("tensor `{key}` in `{file}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { key: String, file: PathBuf, expected: Vec<usize>, found: Vec<usize> },

    /// A tensor has a dtype that cannot hold weights.
    #[error("tensor `{key}` in `{file}` has dtype {found}, expected a float dtype (F32, F16, BF16, F64)")]
    DtypeMismatch { key: String, file: PathBuf, found: String },

    /// A safetensors file is corrupt or truncated.
    #[error("cannot read safetensors file `{file}`: {message}")]
    Safetensors { file: PathBuf, message: String },

    /// The weights will not fit in the memory available.
    #[error("the weights need about {needed_mib} MiB but only {available_mib} MiB are available on {device}")]
    OutOfMemory { needed_mib: u64, available_mib: u64, device: String },

    /// The tokenizer failed to load or to encode/decode.
    #[error("tokenizer `{path}`: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// An image is unreadable, empty or corrupt.
    #[error("cannot decode image `{path}`: {message}")]
    Image { path: PathBuf, message: String },

    /// An image whose dimensions are outside what the engine accepts.
    #[error("image `{path}` has absurd dimensions {width}x{height} (limit {limit} px per side)")]
    ImageDimensions { path: PathBuf, width: u32, height: u32, limit: u32 },

    /// The prompt with its image tokens does not fit in the model's context.
    #[error("prompt of {tokens} tokens ({image_tokens} of them image tokens) exceeds the context of {context} tokens; the prompt is never truncated")]
    ContextOverflow { tokens: usize, image_tokens: usize, context: usize },

    /// A caller passed inconsistent arguments (shapes, counts, parameters).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
