//! Every file in `shared/data/dicom` against `expected.json` (pydicom 3.0.2, an independent
//! reader). Tolerances: stored and rescaled min/max exact (±0.5) and mean ±0.01 for lossless
//! encodings; ±3 min/max and ±1.0 mean for JPEG baseline (IDCT rounding differs between
//! decoders).

mod common;

use medpo_imaging::{
    decode_dicom, decode_upload, render_dicom_with, Error, Limits, Preset, RenderOptions,
    SourceFormat, WindowSource,
};

fn tolerance(entry: &serde_json::Value) -> (f64, f64) {
    if entry["transfer_syntax"] == "1.2.840.10008.1.2.4.50" {
        (3.0, 1.0)
    } else {
        (0.5, 0.01)
    }
}

fn close(name: &str, what: &str, got: f64, want: &serde_json::Value, tol: f64) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: {what} missing in expected.json"));
    assert!(
        (got - want).abs() <= tol,
        "{name}: {what} = {got}, pydicom says {want} (tolerance {tol})"
    );
}

/// Files pydicom decodes: shape and statistics agree. SEG is decoded here (its pixels are
/// real) but refused as a scan (see `segmentation_is_not_a_scan`).
#[test]
fn decodes_every_file_like_pydicom() {
    let mut checked = 0;
    for (name, bytes, entry) in common::dicom_cases() {
        let Some(stored) = entry.get("stored_pixels") else {
            continue;
        };
        let img =
            decode_dicom(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<u64> = stored["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(u64::from(img.height()), shape[0], "{name}: rows");
        assert_eq!(u64::from(img.width()), shape[1], "{name}: columns");
        let channels = shape.get(2).copied().unwrap_or(1);
        assert_eq!(
            u64::from(img.channels()),
            channels,
            "{name}: samples per pixel"
        );
        assert_eq!(
            img.meta().bits_allocated as u64,
            entry["BitsAllocated"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            img.meta().modality.as_deref(),
            entry["Modality"].as_str(),
            "{name}"
        );

        let (tol_mm, tol_mean) = tolerance(&entry);
        let s = common::stats(img.stored_values());
        close(&name, "stored min", s.min, &stored["min"], tol_mm);
        close(&name, "stored max", s.max, &stored["max"], tol_mm);
        close(&name, "stored mean", s.mean, &stored["mean"], tol_mean);
        let rescaled = &entry["rescaled_pixels"];
        let r = common::stats(&img.modality_values());
        close(&name, "rescaled min", r.min, &rescaled["min"], tol_mm);
        close(&name, "rescaled max", r.max, &rescaled["max"], tol_mm);
        close(&name, "rescaled mean", r.mean, &rescaled["mean"], tol_mean);
        if let Some(slope) = entry.get("RescaleSlope").and_then(|v| v.as_f64()) {
            let (s, i) = img.meta().rescale.expect("rescale recorded");
            assert_eq!(s, slope, "{name}");
            assert_eq!(i, entry["RescaleIntercept"].as_f64().unwrap(), "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} files had statistics");
}

/// MR_small in explicit LE is the baseline; implicit LE, explicit BE, RLE and JPEG 2000
/// lossless decode to identical stored values.
#[test]
fn mr_small_encodings_decode_to_the_same_values() {
    let limits = Limits::default();
    let base = decode_dicom(&common::read_shared("data/dicom/MR_small.dcm"), &limits).unwrap();
    for name in [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
    ] {
        let img = decode_dicom(&common::read_shared(&format!("data/dicom/{name}")), &limits)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            img.stored_values(),
            base.stored_values(),
            "{name} differs from MR_small.dcm"
        );
        let a = decode_upload(
            &common::read_shared(&format!("data/dicom/{name}")),
            &limits,
            &RenderOptions::default(),
        )
        .unwrap();
        let b = decode_upload(
            &common::read_shared("data/dicom/MR_small.dcm"),
            &limits,
            &RenderOptions::default(),
        )
        .unwrap();
        assert_eq!(a.png_bytes, b.png_bytes, "{name}: rendering differs");
        assert_eq!(a.sha256(), b.sha256());
    }
}

/// JPEG-LS needs CharLS (C++); this build refuses it by name.
#[test]
fn jpeg_ls_is_refused_with_the_transfer_syntax_name() {
    let bytes = common::read_shared("data/dicom/MR_small_jpeg_ls_lossless.dcm");
    let err = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedTransferSyntax { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("unsupported transfer syntax 1.2.840.10008.1.2.4.80"),
        "{msg}"
    );
    assert!(msg.contains("JPEG-LS"), "{msg}");
    assert_eq!(err.http_status(), 415);
}

#[test]
fn segmentation_is_not_a_scan() {
    let bytes = common::read_shared("data/dicom/liver_1frame.dcm");
    let err = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotAScan { .. }), "{err:?}");
    assert!(err.to_string().contains("SEG"), "{err}");
}

#[test]
fn truncated_rt_plan_is_refused_clearly() {
    let bytes = common::read_shared("data/dicom/rtplan_truncated.dcm");
    let err = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { .. } | Error::NoPixelData { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("DICOM"), "{msg}");
    assert_eq!(err.http_status(), 400);
}

#[test]
fn colour_dicom_renders_rgb() {
    for name in ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_small_odd.dcm"] {
        let scan = decode_upload(
            &common::read_shared(&format!("data/dicom/{name}")),
            &Limits::default(),
            &RenderOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let png = image::load_from_memory(&scan.png_bytes).unwrap();
        assert_eq!(png.color(), image::ColorType::Rgb8, "{name}");
        assert_eq!((png.width(), png.height()), (scan.width, scan.height));
        assert_eq!(
            scan.meta.window_used, None,
            "{name}: colour is not windowed"
        );
    }
}

#[test]
fn ct_window_precedence_and_presets() {
    let bytes = common::read_shared("data/dicom/CT_small.dcm");
    let limits = Limits::default();
    let default = decode_upload(&bytes, &limits, &RenderOptions::default()).unwrap();
    assert_eq!(default.source_format, SourceFormat::Dicom);
    let mut seen = std::collections::HashSet::new();
    seen.insert(default.sha256());
    for p in Preset::ALL {
        let scan = render_dicom_with(
            &bytes,
            &limits,
            &RenderOptions {
                window: None,
                preset: Some(p),
            },
        )
        .unwrap();
        let w = scan.meta.window_used.unwrap();
        assert_eq!(w.source, WindowSource::Preset(p));
        assert_eq!((w.center, w.width), p.center_width());
        assert!(
            seen.insert(scan.sha256()),
            "{p:?} renders like another window"
        );
    }
    // A requested window wins over a preset.
    let scan = render_dicom_with(
        &bytes,
        &limits,
        &RenderOptions {
            window: Some((0.0, 500.0)),
            preset: Some(Preset::Bone),
        },
    )
    .unwrap();
    assert_eq!(scan.meta.window_used.unwrap().source, WindowSource::Request);
    // Re-rendering is deterministic.
    let again = decode_upload(&bytes, &limits, &RenderOptions::default()).unwrap();
    assert_eq!(again.png_bytes, default.png_bytes);
}

/// MR_small carries WindowCenter/Width: used when nothing is requested.
#[test]
fn file_window_is_the_default() {
    let bytes = common::read_shared("data/dicom/MR_small.dcm");
    let exp = common::expected();
    let e = &exp["files"]["MR_small.dcm"];
    let scan = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap();
    let w = scan.meta.window_used.unwrap();
    assert_eq!(w.source, WindowSource::File);
    assert_eq!(w.center, e["WindowCenter"].as_f64().unwrap());
    assert_eq!(w.width, e["WindowWidth"].as_f64().unwrap());
}

/// CT_small has no window: min/max over the rescaled (HU) values.
#[test]
fn min_max_window_without_file_window() {
    let bytes = common::read_shared("data/dicom/CT_small.dcm");
    let scan = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap();
    let w = scan.meta.window_used.unwrap();
    assert_eq!(w.source, WindowSource::MinMax);
    let e = &common::expected()["files"]["CT_small.dcm"]["rescaled_pixels"];
    let (lo, hi) = (e["min"].as_f64().unwrap(), e["max"].as_f64().unwrap());
    assert!((w.center - ((lo + hi) / 2.0 + 0.5)).abs() < 1e-6, "{w:?}");
    let png = image::load_from_memory(&scan.png_bytes).unwrap().to_luma8();
    assert_eq!(png.pixels().map(|p| p.0[0]).min(), Some(0));
    assert_eq!(png.pixels().map(|p| p.0[0]).max(), Some(255));
}

#[test]
fn deflated_dicom_decodes() {
    let scan = decode_upload(
        &common::read_shared("data/dicom/image_dfl.dcm"),
        &Limits::default(),
        &RenderOptions::default(),
    )
    .unwrap();
    assert_eq!((scan.width, scan.height), (512, 512));
    assert_eq!(
        scan.meta.transfer_syntax.as_deref(),
        Some("Deflated Explicit VR Little Endian")
    );
}

/// A DICOM file without its 128-byte preamble, and a bare data set, still decode.
#[test]
fn dicom_without_preamble() {
    let bytes = common::read_shared("data/dicom/CT_small.dcm");
    let limits = Limits::default();
    let want = decode_upload(&bytes, &limits, &RenderOptions::default()).unwrap();
    let no_preamble = decode_upload(&bytes[128..], &limits, &RenderOptions::default()).unwrap();
    assert_eq!(no_preamble.png_bytes, want.png_bytes);
}

#[test]
fn dicom_bomb_is_refused_before_decoding() {
    // Shrink the limits below CT_small's 128×128 to exercise the header check.
    let limits = Limits {
        max_pixels: 128 * 127,
        ..Limits::default()
    };
    let err = decode_upload(
        &common::read_shared("data/dicom/CT_small.dcm"),
        &limits,
        &RenderOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyPixels {
                width: 128,
                height: 128,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 413);
}

/// image_dfl.dcm's file meta group followed by a deflated stream of 2 MB of zeros: refused
/// while inflating, under limits that allow 1 MB.
#[test]
fn deflate_bomb_is_refused() {
    use std::io::Write;
    let src = common::read_shared("data/dicom/image_dfl.dcm");
    let group_len = u32::from_le_bytes([src[140], src[141], src[142], src[143]]) as usize;
    let mut bytes = src[..144 + group_len].to_vec();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&vec![0u8; 2 << 20]).unwrap();
    bytes.extend(enc.finish().unwrap());
    let limits = Limits {
        max_bytes: 500_000,
        max_pixels: 62_500,
        ..Limits::default()
    };
    let err = decode_upload(&bytes, &limits, &RenderOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DecompressionBomb { .. }), "{err:?}");
    assert!(
        err.to_string().contains("inflates past 1000000 bytes"),
        "{err}"
    );
    assert_eq!(err.http_status(), 413);
}
