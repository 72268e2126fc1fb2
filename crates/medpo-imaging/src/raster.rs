//! PNG and JPEG uploads through the `image` crate: dimensions from the header first, then a
//! decode under `image::Limits`, then alpha compositing and windowing to 8 bits.

use crate::render::{apply_window, choose_window, encode_png, WindowSource, WindowUsed};
use crate::{
    check_dimensions, DecodedScan, Error, Limits, RenderOptions, Result, SafeMeta, SourceFormat,
};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use std::io::Cursor;

/// A reader for `format`; `header_only` leaves width and height unlimited so that the claimed
/// dimensions can be read and reported (the header read allocates no pixels).
fn reader<'a>(
    bytes: &'a [u8],
    format: SourceFormat,
    limits: &Limits,
    header_only: bool,
) -> ImageReader<Cursor<&'a [u8]>> {
    let f = match format {
        SourceFormat::Jpeg => ImageFormat::Jpeg,
        _ => ImageFormat::Png,
    };
    let mut r = ImageReader::with_format(Cursor::new(bytes), f);
    let mut l = image::Limits::default();
    if !header_only {
        l.max_image_width = Some(limits.max_side);
        l.max_image_height = Some(limits.max_side);
    }
    // 16-bit RGBA is 8 bytes a pixel; leave room for the decoder's own buffers.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    r.limits(l);
    r
}

fn map_err(e: ImageError, format: SourceFormat, limits: &Limits) -> Error {
    match e {
        ImageError::Limits(l) => Error::DecompressionBomb {
            format,
            what: format!(
                "{l} (limits: {} pixels, {} pixels a side)",
                limits.max_pixels, limits.max_side
            ),
        },
        ImageError::Unsupported(u) => Error::UnsupportedImage(format!("{format}: {u}")),
        other => {
            let reason = other.to_string();
            let lower = reason.to_ascii_lowercase();
            if lower.contains("end of file")
                || lower.contains("eof")
                || lower.contains("truncat")
                || lower.contains("no more data")
            {
                Error::Truncated { format, reason }
            } else {
                Error::Corrupt { format, reason }
            }
        }
    }
}

pub(crate) fn decode(
    bytes: &[u8],
    format: SourceFormat,
    limits: &Limits,
    opts: &RenderOptions,
) -> Result<DecodedScan> {
    // 1. Header only: refuse bombs before allocating pixels.
    let (w, h) = reader(bytes, format, limits, true)
        .into_dimensions()
        .map_err(|e| map_err(e, format, limits))?;
    check_dimensions(format, u64::from(w), u64::from(h), 1, limits)?;
    if format == SourceFormat::Jpeg {
        check_jpeg_end(bytes)?;
    }

    // 2. Decode.
    let mut decoder = reader(bytes, format, limits, false)
        .into_decoder()
        .map_err(|e| map_err(e, format, limits))?;
    // EXIF orientation (phone photos of films): baked into the pixels, since EXIF is dropped.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| map_err(e, format, limits))?;
    let mut notes = Vec::new();
    if orientation != Orientation::NoTransforms {
        img.apply_orientation(orientation);
        notes.push(format!("EXIF orientation applied ({orientation:?})"));
    }
    let (width, height) = (img.width(), img.height());
    let color_name = format!("{:?}", img.color());

    let mut meta = SafeMeta {
        photometric: Some(color_name),
        samples_per_pixel: if img.color().has_color() { 3 } else { 1 },
        bits_allocated: (img.color().bits_per_pixel() / u16::from(img.color().channel_count())),
        frames: 1,
        ..SafeMeta::default()
    };
    meta.bits_stored = meta.bits_allocated;
    if img.color().has_alpha() {
        notes.push("alpha channel composited over black".into());
    }

    let (pixels, channels) = match img {
        DynamicImage::ImageLuma8(buf) => {
            let gray = buf.into_raw();
            gray8(gray, opts, &mut meta, &mut notes)?
        }
        DynamicImage::ImageLumaA8(buf) => {
            let gray = buf
                .pixels()
                .map(|p| ((u16::from(p.0[0]) * u16::from(p.0[1]) + 127) / 255) as u8)
                .collect();
            gray8(gray, opts, &mut meta, &mut notes)?
        }
        DynamicImage::ImageLuma16(buf) => {
            let values: Vec<f32> = buf.pixels().map(|p| f32::from(p.0[0])).collect();
            gray16(&values, opts, &mut meta, &mut notes)?
        }
        DynamicImage::ImageLumaA16(buf) => {
            let values: Vec<f32> = buf
                .pixels()
                .map(|p| (f64::from(p.0[0]) * f64::from(p.0[1]) / 65535.0).round() as f32)
                .collect();
            gray16(&values, opts, &mut meta, &mut notes)?
        }
        DynamicImage::ImageRgb8(buf) => {
            colour_notes(opts, &mut notes);
            (buf.into_raw(), 3)
        }
        other => {
            // RGBA8, 16-bit and float colour: 8-bit RGBA, then composite over black.
            colour_notes(opts, &mut notes);
            let rgba = other.to_rgba8();
            let rgb = rgba
                .pixels()
                .flat_map(|p| {
                    let a = u16::from(p.0[3]);
                    [0, 1, 2].map(|c| ((u16::from(p.0[c]) * a + 127) / 255) as u8)
                })
                .collect();
            (rgb, 3)
        }
    };

    let png_bytes = encode_png(&pixels, width, height, channels)?;
    Ok(DecodedScan {
        png_bytes,
        width,
        height,
        source_format: format,
        meta,
        notes,
    })
}

/// JPEG decoders fill a truncated scan with grey rather than fail; refuse a file whose last
/// start-of-scan (`FF DA`) is not followed by an end-of-image marker (`FF D9`). Entropy-coded
/// data cannot contain either marker (byte stuffing), so this is exact.
fn check_jpeg_end(bytes: &[u8]) -> Result<()> {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let ok = match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Truncated {
            format: SourceFormat::Jpeg,
            reason: if last_sos.is_some() {
                "the image data ends before the end-of-image marker".into()
            } else {
                "no image data (start-of-scan marker) found".into()
            },
        })
    }
}

fn colour_notes(opts: &RenderOptions, notes: &mut Vec<String>) {
    if opts.window.is_some() || opts.preset.is_some() {
        notes.push("window/level applies to grayscale images; colour image kept as is".into());
    }
}

fn gray8(
    gray: Vec<u8>,
    opts: &RenderOptions,
    meta: &mut SafeMeta,
    notes: &mut Vec<String>,
) -> Result<(Vec<u8>, u8)> {
    if opts.window.is_none() {
        if let Some(p) = opts.preset {
            notes.push(format!(
                "the {} preset is in Hounsfield units and applies to DICOM only; ignored",
                p.name()
            ));
        }
        meta.window_used = Some(WindowUsed {
            center: 128.0,
            width: 256.0,
            source: WindowSource::Identity,
        });
        return Ok((gray, 1));
    }
    let values: Vec<f32> = gray.iter().map(|&v| f32::from(v)).collect();
    let w = choose_window(&values, opts, None, false, notes)?;
    meta.window_used = Some(w);
    Ok((apply_window(&values, &w, false), 1))
}

fn gray16(
    values: &[f32],
    opts: &RenderOptions,
    meta: &mut SafeMeta,
    notes: &mut Vec<String>,
) -> Result<(Vec<u8>, u8)> {
    let w = choose_window(values, opts, None, false, notes)?;
    if w.source == WindowSource::MinMax {
        notes.push("16-bit grayscale stretched from its minimum to its maximum".into());
    }
    meta.window_used = Some(w);
    Ok((apply_window(values, &w, false), 1))
}
