//! Turns uploaded bytes (PNG, JPEG or DICOM) into a de-identified, windowed 8-bit PNG: the
//! scan the product stores and the models see.
//!
//! The key design choice: **the output keeps nothing of the input but pixels and a fixed,
//! safe list of tags** ([`SafeMeta`]). The PNG is re-encoded from decoded pixels, so PNG text
//! chunks, JPEG EXIF and every DICOM attribute outside that list (patient name and ID, birth
//! date, institution, dates, UIDs, physicians ...) are dropped by construction rather than by
//! a deny-list.
//!
//! Flow of [`decode_upload`]:
//! 1. size check ([`Limits::max_bytes`]), then the format is sniffed from magic bytes
//!    ([`SourceFormat`]); the file name is never consulted;
//! 2. the header is read for dimensions and refused above [`Limits`] before pixels are decoded
//!    (decompression bombs);
//! 3. pixels are decoded (DICOM: first frame, Modality LUT applied), windowed to 8 bits
//!    ([`RenderOptions`]: request window, else preset, else the file's window, else min/max);
//! 4. the result is encoded as a PNG with fixed settings, so identical pixels give identical
//!    bytes and [`sha256_hex`] addresses the same scan once.
//!
//! This crate has no web or database code; [`Error::http_status`] only suggests a status.

#![deny(missing_docs)]

mod dicom;
mod encapsulated;
mod error;
mod prescan;
mod raster;
mod render;
mod sniff;
#[cfg(feature = "test-support")]
pub mod synthetic;

pub use dicom::{decode_dicom, render_dicom_with, DicomImage};
pub use error::{Error, Result};
pub use render::{window_linear, WindowSource, WindowUsed};
pub use sniff::{sniff, DicomLayout, Sniffed};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Limits checked before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Upload size in bytes (default 50 MB, 50 × 1024 × 1024).
    pub max_bytes: usize,
    /// Width × height of one frame (default 50 megapixels).
    pub max_pixels: u64,
    /// Width or height (default 16384).
    pub max_side: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 50 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_side: 16_384,
        }
    }
}

/// Window presets in Hounsfield units (CT). Values follow common radiology practice
/// (Radiopaedia "Windowing (CT)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Lung: center −600, width 1500.
    Lung,
    /// Mediastinum (soft tissue of the chest): center 40, width 400.
    Mediastinum,
    /// Bone: center 400, width 1800.
    Bone,
    /// Brain: center 40, width 80.
    Brain,
}

impl Preset {
    /// Every preset, in UI order.
    pub const ALL: [Preset; 4] = [
        Preset::Lung,
        Preset::Mediastinum,
        Preset::Bone,
        Preset::Brain,
    ];

    /// `(center, width)` in Hounsfield units.
    pub fn center_width(self) -> (f64, f64) {
        match self {
            Preset::Lung => (-600.0, 1500.0),
            Preset::Mediastinum => (40.0, 400.0),
            Preset::Bone => (400.0, 1800.0),
            Preset::Brain => (40.0, 80.0),
        }
    }

    /// Lower-case name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Lung => "lung",
            Preset::Mediastinum => "mediastinum",
            Preset::Bone => "bone",
            Preset::Brain => "brain",
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown window preset `{s}`; expected one of lung, mediastinum, bone, brain"
                )
            })
    }
}

/// How to window a grayscale scan down to 8 bits.
///
/// Precedence: `window`, then `preset`, then the file's WindowCenter/WindowWidth (DICOM), then
/// the image's own range (min/max). Windows are in the scan's output units: Hounsfield units
/// for CT after RescaleSlope/Intercept, stored values otherwise, 0–65535 for a 16-bit PNG,
/// 0–255 for an 8-bit PNG or JPEG. Presets apply to DICOM only (they are in HU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RenderOptions {
    /// `(center, width)`.
    pub window: Option<(f64, f64)>,
    /// Named preset.
    pub preset: Option<Preset>,
}

/// The format found by magic bytes (PNG `89 50 4E 47 0D 0A 1A 0A`, JPEG `FF D8 FF`, DICOM
/// `DICM` at byte 128 or 0, or a bare data set). The same type the store keeps with a scan.
pub use medpo_types::SourceFormat;

/// The only facts about the source kept with a scan. Every string is a short code
/// (DICOM CS values, sanitised to `A–Z 0–9 _ space -`), never free text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SafeMeta {
    /// DICOM Modality (CT, MR, CR, DX, OT ...).
    pub modality: Option<String>,
    /// DICOM BodyPartExamined.
    pub body_part: Option<String>,
    /// DICOM ViewPosition (PA, AP, LATERAL ...).
    pub view: Option<String>,
    /// Photometric interpretation of the source (MONOCHROME2, RGB ...; for PNG/JPEG the
    /// decoded colour type, e.g. `L16`).
    pub photometric: Option<String>,
    /// Samples per pixel of the source (1 grayscale, 3 colour).
    pub samples_per_pixel: u16,
    /// Bits allocated per sample in the source.
    pub bits_allocated: u16,
    /// Bits stored per sample in the source.
    pub bits_stored: u16,
    /// Frames in the source; only the first is rendered.
    pub frames: u32,
    /// Rescale slope and intercept applied (DICOM Modality LUT), if any.
    pub rescale: Option<(f64, f64)>,
    /// The window that produced the 8-bit pixels (grayscale only).
    pub window_used: Option<WindowUsed>,
    /// DICOM transfer syntax name (not a UID of the patient or study).
    pub transfer_syntax: Option<String>,
    /// DICOM BurnedInAnnotation: `Some(true)` when the file says identifying text may be
    /// drawn into the pixels themselves, which no tag filtering removes.
    pub burned_in_annotation: Option<bool>,
}

/// A scan ready to store: the rendered PNG and the safe subset of tags.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodedScan {
    /// 8-bit grayscale or RGB PNG, deterministic encoding: what gets stored, hashed and shown
    /// to models. Not serialised (store it as a blob under [`DecodedScan::sha256`]).
    #[serde(skip)]
    pub png_bytes: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The format found by magic bytes.
    pub source_format: SourceFormat,
    /// Safe tags.
    pub meta: SafeMeta,
    /// What the decoder did that a clinician should know ("multi-frame: showing frame 1 of
    /// 20", "alpha channel composited over black" ...).
    pub notes: Vec<String>,
}

impl DecodedScan {
    /// [`sha256_hex`] of [`DecodedScan::png_bytes`], the content address.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.png_bytes)
    }
}

impl std::fmt::Debug for DecodedScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedScan")
            .field(
                "png_bytes",
                &format_args!("<{} bytes>", self.png_bytes.len()),
            )
            .field("width", &self.width)
            .field("height", &self.height)
            .field("source_format", &self.source_format)
            .field("meta", &self.meta)
            .field("notes", &self.notes)
            .finish()
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Decodes an upload into a stored scan. See the crate docs for the steps.
///
/// PNG and JPEG: 8- or 16-bit, grayscale or colour. Alpha is composited over black (a
/// transparent pixel shows as black, never as the colour hidden under it). 16-bit grayscale
/// keeps full precision until windowing; without a requested window it is stretched min/max.
/// 8-bit grayscale and colour images are kept as they are unless a window is requested
/// (grayscale only).
///
/// DICOM: see [`decode_dicom`] and [`DicomImage::render`].
pub fn decode_upload(bytes: &[u8], limits: &Limits, opts: &RenderOptions) -> Result<DecodedScan> {
    check_bytes(bytes, limits)?;
    match sniff(bytes)? {
        sniff::Sniffed::Png => raster::decode(bytes, SourceFormat::Png, limits, opts),
        sniff::Sniffed::Jpeg => raster::decode(bytes, SourceFormat::Jpeg, limits, opts),
        sniff::Sniffed::Dicom(layout) => dicom::decode_layout(bytes, layout, limits)?.render(opts),
    }
}

pub(crate) fn check_bytes(bytes: &[u8], limits: &Limits) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    Ok(())
}

/// Checks claimed dimensions against the limits; `frames` only feeds the message.
pub(crate) fn check_dimensions(
    format: SourceFormat,
    width: u64,
    height: u64,
    frames: u64,
    limits: &Limits,
) -> Result<()> {
    let too_big = width == 0
        || height == 0
        || width > u64::from(limits.max_side)
        || height > u64::from(limits.max_side)
        || width.saturating_mul(height) > limits.max_pixels;
    if width == 0 || height == 0 {
        return Err(Error::Corrupt {
            format,
            reason: format!("image claims {width}×{height} pixels"),
        });
    }
    if too_big {
        return Err(Error::TooManyPixels {
            format,
            width,
            height,
            frames_note: if frames > 1 {
                format!(", {frames} frames")
            } else {
                String::new()
            },
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        });
    }
    Ok(())
}

/// Keeps a DICOM code string only if it looks like a code: at most 64 characters of
/// `A–Z a–z 0–9 _ space -`, trimmed; anything else is dropped.
pub(crate) fn sanitize_code(s: &str) -> Option<String> {
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0').trim();
    if t.is_empty() || t.len() > 64 {
        return None;
    }
    t.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ' || c == '-')
        .then(|| t.to_string())
}
