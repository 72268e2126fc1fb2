//! VOI windowing to 8 bits and the deterministic PNG encoding.

use crate::{Error, Preset, RenderOptions, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use serde::{Deserialize, Serialize};

/// Where the window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSource {
    /// [`RenderOptions::window`].
    Request,
    /// [`RenderOptions::preset`].
    Preset(Preset),
    /// The file's WindowCenter/WindowWidth (first pair).
    File,
    /// The image's own minimum and maximum.
    MinMax,
    /// No window: 8-bit pixels kept as they are.
    Identity,
}

/// The window that produced the rendered pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowUsed {
    /// Window center, in the scan's units (HU for CT).
    pub center: f64,
    /// Window width.
    pub width: f64,
    /// Where it came from.
    pub source: WindowSource,
}

/// DICOM linear VOI function (PS3.3 C.11.2.1.2.1) mapping `x` to 0–255.
pub fn window_linear(x: f64, center: f64, width: f64) -> u8 {
    let w = width.max(1.0);
    let c = center - 0.5;
    let lo = c - (w - 1.0) / 2.0;
    let hi = c + (w - 1.0) / 2.0;
    if x <= lo {
        0
    } else if x > hi {
        255
    } else if w <= 1.0 {
        255
    } else {
        (((x - c) / (w - 1.0) + 0.5) * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    }
}

/// Validates a requested window.
pub(crate) fn check_window(center: f64, width: f64) -> Result<()> {
    if !center.is_finite() || !width.is_finite() || width <= 0.0 {
        return Err(Error::InvalidWindow { center, width });
    }
    Ok(())
}

/// Chooses the window: request, else preset (if `presets_apply`), else `file`, else min/max.
/// Notes explain ignored options.
pub(crate) fn choose_window(
    values: &[f32],
    opts: &RenderOptions,
    file: Option<(f64, f64)>,
    presets_apply: bool,
    notes: &mut Vec<String>,
) -> Result<WindowUsed> {
    if let Some((center, width)) = opts.window {
        check_window(center, width)?;
        if opts.preset.is_some() {
            notes.push("a window was requested, so the preset was ignored".into());
        }
        return Ok(WindowUsed {
            center,
            width,
            source: WindowSource::Request,
        });
    }
    if let Some(p) = opts.preset {
        if presets_apply {
            let (center, width) = p.center_width();
            return Ok(WindowUsed {
                center,
                width,
                source: WindowSource::Preset(p),
            });
        }
        notes.push(format!(
            "the {} preset is in Hounsfield units and applies to DICOM only; ignored",
            p.name()
        ));
    }
    if let Some((center, width)) = file {
        if center.is_finite() && width.is_finite() && width > 0.0 {
            return Ok(WindowUsed {
                center,
                width,
                source: WindowSource::File,
            });
        }
        notes.push(format!(
            "the file's window ({center}/{width}) is invalid; using min/max"
        ));
    }
    let (lo, hi) = min_max(values);
    // A linear window whose first and last steps land on lo and hi.
    let width = (hi - lo) + 1.0;
    let center = lo + (hi - lo) / 2.0 + 0.5;
    Ok(WindowUsed {
        center,
        width,
        source: WindowSource::MinMax,
    })
}

pub(crate) fn min_max(values: &[f32]) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &v in values {
        let v = f64::from(v);
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// Applies the window; `invert` for MONOCHROME1.
pub(crate) fn apply_window(values: &[f32], w: &WindowUsed, invert: bool) -> Vec<u8> {
    // Min/max of a constant image maps everything to mid-grey rather than white.
    if w.source == WindowSource::MinMax && w.width <= 1.0 {
        return vec![if invert { 127 } else { 128 }; values.len()];
    }
    values
        .iter()
        .map(|&v| {
            let g = window_linear(f64::from(v), w.center, w.width);
            if invert {
                255 - g
            } else {
                g
            }
        })
        .collect()
}

/// Encodes 8-bit L or RGB pixels as PNG with fixed settings (same pixels, same bytes).
pub(crate) fn encode_png(pixels: &[u8], width: u32, height: u32, channels: u8) -> Result<Vec<u8>> {
    let color = match channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        n => return Err(Error::Encode(format!("{n} channels"))),
    };
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive)
        .write_image(pixels, width, height, color)
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_matches_dicom_definition() {
        // center 40, width 400: [-160, 240] maps onto 0..255
        assert_eq!(window_linear(-1000.0, 40.0, 400.0), 0);
        assert_eq!(window_linear(1000.0, 40.0, 400.0), 255);
        let mid = window_linear(40.0, 40.0, 400.0);
        assert!((127..=128).contains(&mid), "{mid}");
    }

    #[test]
    fn min_max_window_spans_the_range() {
        let v = [10.0f32, 20.0, 30.0];
        let mut notes = vec![];
        let w = choose_window(&v, &RenderOptions::default(), None, true, &mut notes).unwrap();
        let out = apply_window(&v, &w, false);
        assert_eq!(out[0], 0);
        assert_eq!(out[2], 255);
        assert_eq!(apply_window(&v, &w, true)[0], 255);
    }

    #[test]
    fn bad_window_is_refused() {
        let opts = RenderOptions {
            window: Some((0.0, -5.0)),
            preset: None,
        };
        let err = choose_window(&[0.0], &opts, None, true, &mut vec![]).unwrap_err();
        assert!(err.to_string().contains("width"), "{err}");
    }
}
