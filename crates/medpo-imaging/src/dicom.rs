//! DICOM uploads through dicom-rs: parse (after a structural length check), read the safe
//! tags and the image attributes, refuse absurd dimensions, decode the first frame, apply the
//! Modality LUT, then window to 8 bits.
//!
//! Transfer syntaxes: implicit VR LE, explicit VR LE and BE, deflated explicit VR LE, RLE
//! lossless, JPEG baseline/extended/lossless (jpeg-decoder), JPEG 2000 (openjp2, a pure-Rust
//! port of OpenJPEG). JPEG-LS and JPEG XL need C/C++ codecs and are refused with
//! [`Error::UnsupportedTransferSyntax`].

use crate::prescan::{self, Encoding, ScanError};
use crate::render::{apply_window, choose_window, encode_png};
use crate::sniff::{sniff, DicomLayout, Sniffed};
use crate::{
    check_bytes, check_dimensions, sanitize_code, DecodedScan, Error, Limits, RenderOptions,
    Result, SafeMeta, SourceFormat,
};
use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, FileMetaTable, FileMetaTableBuilder, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntax, TransferSyntaxIndex, TransferSyntaxRegistry};
use std::borrow::Cow;
use std::io::Read;

const FMT: SourceFormat = SourceFormat::Dicom;

/// A decoded, de-identified DICOM image: the first frame's samples and the safe tags. Nothing
/// else of the file is kept, so it can be cached to re-window ([`DicomImage::render`])
/// without holding patient data.
#[derive(Clone)]
pub struct DicomImage {
    width: u32,
    height: u32,
    channels: u8,
    bits_stored: u16,
    /// Stored sample values of frame 1, interleaved for colour.
    stored: Vec<f32>,
    slope: f64,
    intercept: f64,
    file_window: Option<(f64, f64)>,
    monochrome1: bool,
    segmentation: bool,
    meta: SafeMeta,
    notes: Vec<String>,
}

impl std::fmt::Debug for DicomImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("channels", &self.channels)
            .field("meta", &self.meta)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

impl DicomImage {
    /// Columns.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Rows.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// 1 (grayscale) or 3 (RGB, interleaved).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Stored sample values of the first frame (before the Modality LUT), row-major,
    /// interleaved for colour; colour is already RGB.
    pub fn stored_values(&self) -> &[f32] {
        &self.stored
    }

    /// Values after the Modality LUT (RescaleSlope/Intercept; HU for CT). Colour is unchanged.
    pub fn modality_values(&self) -> Vec<f32> {
        if self.channels != 1 || (self.slope == 1.0 && self.intercept == 0.0) {
            return self.stored.clone();
        }
        self.stored
            .iter()
            .map(|&v| (f64::from(v) * self.slope + self.intercept) as f32)
            .collect()
    }

    /// The safe tags.
    pub fn meta(&self) -> &SafeMeta {
        &self.meta
    }

    /// Notes from decoding (multi-frame, conversions).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Renders to an 8-bit PNG with the given window or preset (grayscale only), inverting
    /// MONOCHROME1. Segmentation objects are refused with [`Error::NotAScan`].
    pub fn render(&self, opts: &RenderOptions) -> Result<DecodedScan> {
        if self.segmentation {
            return Err(Error::NotAScan {
                what: "segmentation (Modality SEG, a binary mask)".to_string(),
            });
        }
        let mut notes = self.notes.clone();
        let mut meta = self.meta.clone();
        let pixels = if self.channels == 1 {
            let values = self.modality_values();
            let w = choose_window(&values, opts, self.file_window, true, &mut notes)?;
            meta.window_used = Some(w);
            apply_window(&values, &w, self.monochrome1)
        } else {
            if opts.window.is_some() || opts.preset.is_some() {
                notes.push(
                    "window/level applies to grayscale images; colour image kept as is".into(),
                );
            }
            let shift = self.bits_stored.saturating_sub(8).min(31);
            self.stored
                .iter()
                .map(|&v| ((v.max(0.0) as u32) >> shift).min(255) as u8)
                .collect()
        };
        let png_bytes = encode_png(&pixels, self.width, self.height, self.channels)?;
        Ok(DecodedScan {
            png_bytes,
            width: self.width,
            height: self.height,
            source_format: SourceFormat::Dicom,
            meta,
            notes,
        })
    }
}

/// Decodes a DICOM upload (any of the layouts [`sniff`] accepts) to a [`DicomImage`]:
/// checks, first frame, Modality LUT parameters. Refuses non-DICOM bytes.
pub fn decode_dicom(bytes: &[u8], limits: &Limits) -> Result<DicomImage> {
    check_bytes(bytes, limits)?;
    match sniff(bytes)? {
        Sniffed::Dicom(layout) => decode_layout(bytes, layout, limits),
        other => Err(Error::UnsupportedFormat {
            what: format!("a {} image where a DICOM file was expected", other.format()),
        }),
    }
}

/// Decodes and renders a DICOM upload with `opts`: what the UI calls to re-window before
/// asking. Same checks as [`crate::decode_upload`].
pub fn render_dicom_with(
    bytes: &[u8],
    limits: &Limits,
    opts: &RenderOptions,
) -> Result<DecodedScan> {
    decode_dicom(bytes, limits)?.render(opts)
}

fn scan_error(e: ScanError) -> Error {
    if e.truncated {
        Error::Truncated {
            format: FMT,
            reason: e.reason,
        }
    } else {
        Error::Corrupt {
            format: FMT,
            reason: e.reason,
        }
    }
}

/// The error and its sources, joined; `truncated` when an end of file is among them.
fn chain(e: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut parts = vec![e.to_string()];
    let mut truncated = false;
    let mut cur = e.source();
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            truncated |= io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        let msg = s.to_string();
        if !parts.iter().any(|p| p == &msg) {
            parts.push(msg);
        }
        cur = s.source();
    }
    let text = parts.join(": ");
    let lower = text.to_ascii_lowercase();
    truncated |= lower.contains("end of file") || lower.contains("fill whole buffer");
    (text, truncated)
}

fn parse_error(what: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    let (reason, truncated) = chain(e);
    let reason = format!("{what}: {reason}");
    if truncated {
        Error::Truncated {
            format: FMT,
            reason,
        }
    } else {
        Error::Corrupt {
            format: FMT,
            reason,
        }
    }
}

fn registry(uid: &str) -> Result<&'static TransferSyntax> {
    TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| Error::UnsupportedTransferSyntax {
            uid: uid.to_string(),
            name: "unknown".to_string(),
        })
}

fn encoding_of(ts: &TransferSyntax) -> Encoding {
    Encoding {
        explicit_vr: ts.uid() != uids::IMPLICIT_VR_LITTLE_ENDIAN,
        // Explicit VR Big Endian (retired, still found in archives).
        big_endian: ts.uid() == "1.2.840.10008.1.2.2",
    }
}

/// Inflates a deflated data set, refusing more than `cap` bytes (a deflate bomb). The cap is
/// one frame at the pixel limit (8 bytes a pixel) plus the upload limit.
fn inflate(data: &[u8], cap: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut dec = flate2::read::DeflateDecoder::new(data).take(cap + 1);
    dec.read_to_end(&mut out).map_err(|e| Error::Corrupt {
        format: FMT,
        reason: format!("deflated data set: {e}"),
    })?;
    if out.len() as u64 > cap {
        return Err(Error::DecompressionBomb {
            format: FMT,
            what: format!("the deflated data set inflates past {cap} bytes"),
        });
    }
    Ok(out)
}

/// Parses the file into an object; the file meta group is synthesised for bare data sets.
/// Also returns the source transfer syntax (a deflated file is re-labelled explicit VR LE once
/// inflated).
fn parse(
    bytes: &[u8],
    layout: DicomLayout,
    limits: &Limits,
) -> Result<(FileDicomObject<InMemDicomObject>, &'static TransferSyntax)> {
    let mut source_ts = None;
    let (meta, dataset, ts): (Option<FileMetaTable>, Cow<'_, [u8]>, &TransferSyntax) = match layout
    {
        DicomLayout::Preamble | DicomLayout::NoPreamble => {
            let start = if layout == DicomLayout::Preamble {
                128
            } else {
                0
            };
            let rest = &bytes[start..];
            let meta_len = prescan::scan_meta(&rest[4..]).map_err(scan_error)?;
            let mut cur = &rest[..4 + meta_len];
            let mut meta = match FileMetaTable::from_reader(&mut cur) {
                Ok(meta) => meta,
                // Older writers omit (0002,0000) group length, which dicom-rs requires.
                Err(e) => meta_without_group_length(&rest[4..4 + meta_len])
                    .ok_or_else(|| parse_error("file meta group", &e))?,
            };
            let dataset = &rest[4 + meta_len..];
            let uid = meta.transfer_syntax().to_string();
            let ts = registry(&uid)?;
            if uid == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
                // Inflate here, under a cap, rather than inside dicom-rs.
                let cap = limits
                    .max_pixels
                    .saturating_mul(8)
                    .saturating_add(limits.max_bytes as u64);
                let inflated = inflate(dataset, cap)?;
                source_ts = Some(ts);
                meta.transfer_syntax = uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string();
                (
                    Some(meta),
                    Cow::Owned(inflated),
                    registry(uids::EXPLICIT_VR_LITTLE_ENDIAN)?,
                )
            } else {
                (Some(meta), Cow::Borrowed(dataset), ts)
            }
        }
        DicomLayout::BareExplicitLe => (
            None,
            Cow::Borrowed(bytes),
            registry(uids::EXPLICIT_VR_LITTLE_ENDIAN)?,
        ),
        DicomLayout::BareImplicitLe => (
            None,
            Cow::Borrowed(bytes),
            registry(uids::IMPLICIT_VR_LITTLE_ENDIAN)?,
        ),
    };
    if !ts.can_decode_dataset() {
        return Err(Error::UnsupportedTransferSyntax {
            uid: ts.uid().to_string(),
            name: ts.name().to_string(),
        });
    }
    prescan::scan_dataset(&dataset, encoding_of(ts)).map_err(scan_error)?;
    let obj = InMemDicomObject::read_dataset_with_ts(&dataset[..], ts)
        .map_err(|e| parse_error("data set", &e))?;
    let source_ts = source_ts.unwrap_or(ts);
    match meta {
        Some(meta) => Ok((obj.with_exact_meta(meta), source_ts)),
        None => {
            let builder = FileMetaTableBuilder::new()
                .transfer_syntax(ts.uid())
                .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
                .media_storage_sop_instance_uid("2.25.0");
            let file = obj
                .with_meta(builder)
                .map_err(|e| parse_error("file meta group", &e))?;
            Ok((file, source_ts))
        }
    }
}

/// Builds the file meta table from group 0002 elements read as a plain explicit VR LE data
/// set; only the transfer syntax matters here.
fn meta_without_group_length(group: &[u8]) -> Option<FileMetaTable> {
    let ts = registry(uids::EXPLICIT_VR_LITTLE_ENDIAN).ok()?;
    let obj = InMemDicomObject::read_dataset_with_ts(group, ts).ok()?;
    let uid = get_str(&obj, tags::TRANSFER_SYNTAX_UID)?;
    FileMetaTableBuilder::new()
        .transfer_syntax(uid)
        .media_storage_sop_class_uid(
            get_str(&obj, tags::MEDIA_STORAGE_SOP_CLASS_UID)
                .unwrap_or_else(|| uids::SECONDARY_CAPTURE_IMAGE_STORAGE.into()),
        )
        .media_storage_sop_instance_uid(
            get_str(&obj, tags::MEDIA_STORAGE_SOP_INSTANCE_UID).unwrap_or_else(|| "2.25.0".into()),
        )
        .build()
        .ok()
}

fn get_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    let s = e.to_str().ok()?;
    Some(s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
}

fn get_u32(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    let e = obj.element_opt(tag).ok()??;
    // IS values ("1 ") and US values both parse through to_int.
    e.to_int::<i64>().ok().and_then(|v| u32::try_from(v).ok())
}

fn get_f64(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    let e = obj.element_opt(tag).ok()??;
    e.to_multi_float64()
        .ok()?
        .first()
        .copied()
        .filter(|v| v.is_finite())
}

/// A value in the first item of a functional group macro (enhanced multi-frame objects keep
/// rescale and window there): shared groups first, then frame 1's per-frame groups.
fn functional_group_f64(obj: &InMemDicomObject, macro_seq: Tag, tag: Tag) -> Option<f64> {
    let in_group = |group: Tag| -> Option<f64> {
        let item = obj.element_opt(group).ok()??.items()?.first()?;
        let inner = item.element_opt(macro_seq).ok()??.items()?.first()?;
        get_f64(inner, tag)
    };
    in_group(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .or_else(|| in_group(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE))
}

/// A top-level value, else its functional group value.
fn image_f64(obj: &InMemDicomObject, macro_seq: Tag, tag: Tag) -> Option<f64> {
    get_f64(obj, tag).or_else(|| functional_group_f64(obj, macro_seq, tag))
}

fn required_u32(obj: &InMemDicomObject, tag: Tag, name: &str) -> Result<u32> {
    get_u32(obj, tag).ok_or_else(|| Error::Corrupt {
        format: FMT,
        reason: format!("image attribute {name} {tag} is missing or not a number"),
    })
}

pub(crate) fn decode_layout(
    bytes: &[u8],
    layout: DicomLayout,
    limits: &Limits,
) -> Result<DicomImage> {
    let (file, source_ts) = parse(bytes, layout, limits)?;
    let ts_uid = file.meta().transfer_syntax().to_string();
    let obj: &InMemDicomObject = &file;

    let modality = get_str(obj, tags::MODALITY).and_then(|s| sanitize_code(&s));
    let sop_class = get_str(obj, tags::SOP_CLASS_UID).unwrap_or_default();
    let segmentation =
        modality.as_deref() == Some("SEG") || sop_class == uids::SEGMENTATION_STORAGE;

    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        let what = if obj
            .element_opt(tags::FLOAT_PIXEL_DATA)
            .ok()
            .flatten()
            .is_some()
            || obj
                .element_opt(tags::DOUBLE_FLOAT_PIXEL_DATA)
                .ok()
                .flatten()
                .is_some()
        {
            " (float pixel data is not supported)"
        } else {
            ""
        };
        return Err(Error::NoPixelData {
            modality: format!(
                "{}{what}",
                modality.clone().unwrap_or_else(|| "unknown".into())
            ),
        });
    }

    // Header checks, before any pixel is decoded.
    let rows = required_u32(obj, tags::ROWS, "Rows")?;
    let cols = required_u32(obj, tags::COLUMNS, "Columns")?;
    let frames = get_u32(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    check_dimensions(
        FMT,
        u64::from(cols),
        u64::from(rows),
        u64::from(frames),
        limits,
    )?;
    let spp = get_u32(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits_allocated = required_u32(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
    let bits_stored = get_u32(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    let high_bit = get_u32(obj, tags::HIGH_BIT).unwrap_or(bits_stored.saturating_sub(1));
    let signed = get_u32(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    let planar = get_u32(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0);
    let photometric = get_str(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .unwrap_or_else(|| {
            if spp == 3 {
                "RGB".into()
            } else {
                "MONOCHROME2".into()
            }
        })
        .to_ascii_uppercase();
    if !matches!(bits_allocated, 1 | 8 | 16 | 32) {
        return Err(Error::UnsupportedImage(format!(
            "BitsAllocated {bits_allocated} (expected 1, 8, 16 or 32)"
        )));
    }
    if bits_stored == 0
        || bits_stored > bits_allocated
        || high_bit >= bits_allocated
        || high_bit + 1 < bits_stored
    {
        return Err(Error::Corrupt {
            format: FMT,
            reason: format!("BitsStored {bits_stored} / HighBit {high_bit} do not fit BitsAllocated {bits_allocated}"),
        });
    }
    match (spp, photometric.as_str()) {
        (1, "MONOCHROME1" | "MONOCHROME2") => {}
        (3, "RGB" | "YBR_FULL" | "YBR_FULL_422" | "YBR_ICT" | "YBR_RCT") => {}
        (1, "PALETTE COLOR") => {
            return Err(Error::UnsupportedImage(
                "PhotometricInterpretation PALETTE COLOR".into(),
            ))
        }
        _ => {
            return Err(Error::UnsupportedImage(format!(
                "PhotometricInterpretation {} with SamplesPerPixel {spp}",
                sanitize_code(&photometric).unwrap_or_else(|| "(unreadable)".into())
            )))
        }
    }

    let ts = registry(&ts_uid)?;
    let n_samples = (rows as usize) * (cols as usize) * (spp as usize);
    let mut notes = Vec::new();
    if frames > 1 {
        notes.push(format!(
            "multi-frame DICOM ({frames} frames): showing frame 1"
        ));
    }

    // Decode frame 1 to native bytes.
    let (data, photometric_out, planar_out): (Cow<'_, [u8]>, String, u32) = if ts
        .is_encapsulated_pixel_data()
    {
        if !ts.can_decode_all() {
            return Err(Error::UnsupportedTransferSyntax {
                uid: ts.uid().to_string(),
                name: ts.name().to_string(),
            });
        }
        if bits_allocated == 1 || bits_allocated == 32 {
            return Err(Error::UnsupportedImage(format!(
                "encapsulated {bits_allocated}-bit pixel data"
            )));
        }
        let elem = obj
            .element(tags::PIXEL_DATA)
            .map_err(|e| parse_error("PixelData", &e))?;
        let first = match elem.value() {
            dicom_core::DicomValue::PixelSequence(seq) => {
                seq.fragments().first().map(|f| f.as_slice())
            }
            _ => None,
        };
        let Some(first) = first else {
            return Err(Error::Corrupt {
                format: FMT,
                reason: format!("{} pixel data has no encapsulated fragments", ts.name()),
            });
        };
        if ts.uid() == uids::RLE_LOSSLESS {
            let pixels = (rows as usize) * (cols as usize);
            let data = crate::encapsulated::decode_rle(
                first,
                pixels,
                spp as usize,
                bits_allocated as usize / 8,
            )?;
            (Cow::Owned(data), photometric.clone(), 0)
        } else {
            crate::encapsulated::check_codestream(first, limits)?;
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                file.decode_pixel_data_frame(0)
            }))
            .map_err(|_| Error::Corrupt {
                format: FMT,
                reason: format!("the {} decoder failed on this pixel data", ts.name()),
            })?
            .map_err(|e| parse_error(&format!("{} pixel data", ts.name()), &e))?;
            // The JPEG decoders return RGB for colour.
            let pi = if spp == 3 {
                "RGB".to_string()
            } else {
                photometric.clone()
            };
            (Cow::Owned(decoded.into_data()), pi, 0)
        }
    } else {
        let elem = obj
            .element(tags::PIXEL_DATA)
            .map_err(|e| parse_error("PixelData", &e))?;
        let data = elem.to_bytes().map_err(|_| Error::Corrupt {
            format: FMT,
            reason: "PixelData is not a byte value (an encapsulated sequence under a native transfer syntax?)".into(),
        })?;
        (data, photometric.clone(), planar)
    };

    let needed = if bits_allocated == 1 {
        n_samples.div_ceil(8)
    } else {
        n_samples * (bits_allocated as usize / 8)
    };
    if data.len() < needed {
        return Err(Error::Truncated {
            format: FMT,
            reason: format!(
                "pixel data holds {} bytes, but frame 1 of {cols}×{rows}×{spp} samples at {bits_allocated} bits needs {needed}",
                data.len()
            ),
        });
    }
    let mut stored = samples(
        &data[..needed],
        n_samples,
        bits_allocated,
        bits_stored,
        high_bit,
        signed,
    );
    drop(data);

    if spp == 3 {
        if planar_out == 1 {
            stored = interleave(&stored, (rows as usize) * (cols as usize));
        }
        match photometric_out.as_str() {
            "RGB" => {}
            "YBR_FULL" => {
                ybr_full_to_rgb(&mut stored, bits_stored);
                notes.push("YBR_FULL colour converted to RGB".into());
            }
            other => {
                return Err(Error::UnsupportedImage(format!(
                    "uncompressed {other} colour pixel data"
                )));
            }
        }
    }

    let monochrome = spp == 1;
    let pvt = tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE;
    let rescale_slope = image_f64(obj, pvt, tags::RESCALE_SLOPE);
    let rescale_intercept = image_f64(obj, pvt, tags::RESCALE_INTERCEPT);
    let (slope, intercept) = if monochrome {
        (
            rescale_slope.unwrap_or(1.0),
            rescale_intercept.unwrap_or(0.0),
        )
    } else {
        (1.0, 0.0)
    };
    let voi = tags::FRAME_VOILUT_SEQUENCE;
    let file_window = match (
        image_f64(obj, voi, tags::WINDOW_CENTER),
        image_f64(obj, voi, tags::WINDOW_WIDTH),
    ) {
        (Some(c), Some(w)) if monochrome => Some((c, w)),
        _ => None,
    };
    let monochrome1 = photometric == "MONOCHROME1";
    if monochrome1 {
        notes.push("MONOCHROME1: rendered inverted so that higher values are brighter".into());
    }

    let burned_in_annotation = get_str(obj, tags::BURNED_IN_ANNOTATION).and_then(|s| {
        match s.to_ascii_uppercase().as_str() {
            "YES" => Some(true),
            "NO" => Some(false),
            _ => None,
        }
    });
    if burned_in_annotation == Some(true) {
        notes.push(
            "BurnedInAnnotation is YES: identifying text may be drawn into the pixels".into(),
        );
    }

    let meta = SafeMeta {
        modality,
        body_part: get_str(obj, tags::BODY_PART_EXAMINED).and_then(|s| sanitize_code(&s)),
        view: get_str(obj, tags::VIEW_POSITION).and_then(|s| sanitize_code(&s)),
        photometric: sanitize_code(&photometric),
        samples_per_pixel: spp as u16,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored as u16,
        frames,
        rescale: (monochrome && (rescale_slope.is_some() || rescale_intercept.is_some()))
            .then_some((slope, intercept)),
        window_used: None,
        transfer_syntax: Some(source_ts.name().to_string()),
        burned_in_annotation,
    };

    Ok(DicomImage {
        width: cols,
        height: rows,
        channels: if spp == 3 { 3 } else { 1 },
        bits_stored: bits_stored as u16,
        stored,
        slope,
        intercept,
        file_window,
        monochrome1,
        segmentation,
        meta,
        notes,
    })
}

/// Native-endian sample bytes to stored values: masks to BitsStored below HighBit and
/// sign-extends when PixelRepresentation is 1. 1-bit data is LSB first.
fn samples(
    data: &[u8],
    n: usize,
    bits_allocated: u32,
    bits_stored: u32,
    high_bit: u32,
    signed: bool,
) -> Vec<f32> {
    let shift = high_bit + 1 - bits_stored;
    let convert = |raw: u32| -> f32 {
        let v = if bits_stored >= 32 {
            raw
        } else {
            (raw >> shift) & ((1u32 << bits_stored) - 1)
        };
        if signed && bits_stored < 32 && (v >> (bits_stored - 1)) & 1 == 1 {
            (i64::from(v) - (1i64 << bits_stored)) as f32
        } else if signed && bits_stored >= 32 {
            v as i32 as f32
        } else {
            v as f32
        }
    };
    match bits_allocated {
        1 => (0..n)
            .map(|i| f32::from((data[i / 8] >> (i % 8)) & 1))
            .collect(),
        8 => data
            .iter()
            .take(n)
            .map(|&b| convert(u32::from(b)))
            .collect(),
        16 => data
            .chunks_exact(2)
            .take(n)
            .map(|c| convert(u32::from(u16::from_ne_bytes([c[0], c[1]]))))
            .collect(),
        _ => data
            .chunks_exact(4)
            .take(n)
            .map(|c| convert(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    }
}

/// Planar (RRR…GGG…BBB…) to interleaved (RGBRGB…).
fn interleave(planar: &[f32], pixels: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(planar.len());
    for i in 0..pixels {
        for c in 0..3 {
            out.push(planar[c * pixels + i]);
        }
    }
    out
}

/// YCbCr full range (PS3.3 C.7.6.3.1.2) to RGB, in place.
fn ybr_full_to_rgb(px: &mut [f32], bits_stored: u32) {
    let max = ((1u64 << bits_stored.min(31)) - 1) as f32;
    let half = (max + 1.0) / 2.0;
    for p in px.chunks_exact_mut(3) {
        let (y, cb, cr) = (p[0], p[1] - half, p[2] - half);
        p[0] = (y + 1.402 * cr).round().clamp(0.0, max);
        p[1] = (y - 0.344_136 * cb - 0.714_136 * cr)
            .round()
            .clamp(0.0, max);
        p[2] = (y + 1.772 * cb).round().clamp(0.0, max);
    }
}
