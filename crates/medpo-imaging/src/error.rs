//! The one error type of this crate. Every variant names what was wrong with the upload.

use crate::SourceFormat;

/// Why an upload could not be turned into a scan.
///
/// Messages are written for the person who uploaded the file: they name the format, the
/// offending value and the limit. [`Error::http_status`] suggests the status a server should
/// answer with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Zero bytes were uploaded.
    #[error("the upload is empty")]
    Empty,

    /// The upload is larger than [`crate::Limits::max_bytes`].
    #[error("the upload is {bytes} bytes, above the limit of {max} bytes")]
    TooLarge {
        /// Size of the upload.
        bytes: usize,
        /// The configured limit.
        max: usize,
    },

    /// The bytes are not PNG, JPEG or DICOM.
    #[error("unsupported file format: {what}; upload a PNG, JPEG or DICOM file")]
    UnsupportedFormat {
        /// What the magic bytes looked like.
        what: String,
    },

    /// The header claims more pixels than [`crate::Limits`] allows (a decompression bomb or an
    /// absurd image). Refused before any pixel is decoded.
    #[error(
        "{format} image claims {width}×{height} pixels{frames_note}, above the limit of \
         {max_pixels} pixels and {max_side} pixels a side; refused before decoding"
    )]
    TooManyPixels {
        /// Format whose header was read.
        format: SourceFormat,
        /// Claimed width (columns).
        width: u64,
        /// Claimed height (rows).
        height: u64,
        /// ", 3 frames" or empty.
        frames_note: String,
        /// The configured limit on width × height.
        max_pixels: u64,
        /// The configured limit on each side.
        max_side: u32,
    },

    /// A compressed stream would expand past the limits (its size is not known from a header).
    #[error("{format} file refused before decoding: {what}")]
    DecompressionBomb {
        /// Format of the file.
        format: SourceFormat,
        /// What would have expanded, and the limit.
        what: String,
    },

    /// The file ends before its content does.
    #[error("truncated {format} file: {reason}")]
    Truncated {
        /// Format of the file.
        format: SourceFormat,
        /// What was missing.
        reason: String,
    },

    /// The file is damaged or does not follow its format.
    #[error("corrupt {format} file: {reason}")]
    Corrupt {
        /// Format of the file.
        format: SourceFormat,
        /// What the decoder reported.
        reason: String,
    },

    /// The DICOM transfer syntax has no decoder in this build.
    #[error("unsupported transfer syntax {uid} ({name})")]
    UnsupportedTransferSyntax {
        /// Transfer Syntax UID.
        uid: String,
        /// Its name in the DICOM standard, or "unknown".
        name: String,
    },

    /// The DICOM object holds no image (a structured report, an RT plan ...).
    #[error("DICOM file has no pixel data (Modality {modality}); it is not an image")]
    NoPixelData {
        /// Modality, or "unknown".
        modality: String,
    },

    /// The DICOM object has pixels but is not a scan to look at (a segmentation mask ...).
    #[error("DICOM {what} is not a viewable scan")]
    NotAScan {
        /// What the object is, e.g. "segmentation (Modality SEG)".
        what: String,
    },

    /// The image uses a layout or encoding this crate does not render (the message names it).
    #[error("unsupported image: {0}")]
    UnsupportedImage(String),

    /// A requested window has a non-positive or non-finite width.
    #[error("invalid window: center {center}, width {width}; the width must be a positive number")]
    InvalidWindow {
        /// Requested center.
        center: f64,
        /// Requested width.
        width: f64,
    },

    /// Encoding the rendered PNG failed (a bug, not bad input).
    #[error("could not encode the rendered PNG: {0}")]
    Encode(String),
}

impl Error {
    /// The HTTP status a server should answer with: 413 for size limits (bytes or pixels),
    /// 415 for formats and encodings this crate does not read, 400 for damaged or unusable
    /// files and bad render options, 500 for internal failures.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::TooLarge { .. }
            | Error::TooManyPixels { .. }
            | Error::DecompressionBomb { .. } => 413,
            Error::UnsupportedFormat { .. }
            | Error::UnsupportedTransferSyntax { .. }
            | Error::UnsupportedImage(_) => 415,
            Error::Empty
            | Error::Truncated { .. }
            | Error::Corrupt { .. }
            | Error::NoPixelData { .. }
            | Error::NotAScan { .. }
            | Error::InvalidWindow { .. } => 400,
            Error::Encode(_) => 500,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
