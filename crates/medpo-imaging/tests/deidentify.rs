//! De-identification: no identifying value of the source survives in the stored scan (its
//! PNG bytes, its Debug form or its JSON form).

mod common;

use medpo_imaging::synthetic::{synthetic_ct_dicom, SYNTHETIC_PHI};
use medpo_imaging::{decode_dicom, decode_upload, DecodedScan, Limits, RenderOptions};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// PN values are also checked component by component ("CompressedSamples", "CT1").
fn needles(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    out.extend(
        value
            .split('^')
            .filter(|p| p.len() >= 3)
            .map(str::to_string),
    );
    out
}

fn assert_clean(origin: &str, scan: &DecodedScan, values: &[(String, String)]) {
    let debug = format!("{scan:?}");
    let json = serde_json::to_string(scan).unwrap();
    for (key, value) in values {
        for n in needles(value) {
            assert!(
                !debug.contains(&n),
                "{origin}: {key} value {n:?} in Debug: {debug}"
            );
            assert!(
                !json.contains(&n),
                "{origin}: {key} value {n:?} in JSON: {json}"
            );
            assert!(
                !contains(&scan.png_bytes, n.as_bytes()),
                "{origin}: {key} value {n:?} in the PNG bytes"
            );
        }
    }
    // Only pixel chunks: no text or EXIF chunk can carry metadata.
    for chunk in [&b"tEXt"[..], b"zTXt", b"iTXt", b"eXIf"] {
        assert!(
            !contains(&scan.png_bytes, chunk),
            "{origin}: PNG has a {} chunk",
            String::from_utf8_lossy(chunk)
        );
    }
}

#[test]
fn shared_dicom_files_lose_every_identifying_value() {
    let mut checked = 0;
    for (name, bytes, entry) in common::dicom_cases() {
        let values: Vec<(String, String)> = entry["identifying_tags_present"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            // PatientSex ("F", "M", "O") is one letter and the empty name "^^^^" has no
            // content; neither can be searched for meaningfully.
            .filter(|(k, v)| k != "PatientSex" && v.trim_matches('^').len() >= 3)
            .collect();
        assert!(
            !values.is_empty() || name == "image_dfl.dcm",
            "{name}: no identifying values to check"
        );
        if let Ok(img) = decode_dicom(&bytes, &Limits::default()) {
            let debug = format!("{img:?}");
            for (k, v) in &values {
                for n in needles(v) {
                    assert!(!debug.contains(&n), "{name}: {k} in DicomImage Debug");
                }
            }
        }
        match decode_upload(&bytes, &Limits::default(), &RenderOptions::default()) {
            Ok(scan) => {
                assert_clean(&name, &scan, &values);
                checked += 1;
            }
            Err(e) => {
                // Errors must not echo identifying values either.
                let msg = format!("{e} {e:?}");
                for (k, v) in &values {
                    for n in needles(v) {
                        assert!(!msg.contains(&n), "{name}: {k} in the error {msg}");
                    }
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} files rendered");
}

#[test]
fn synthetic_dicom_keeps_only_safe_tags() {
    let bytes = synthetic_ct_dicom();
    // The fixture really carries the identifying values.
    for (k, v) in SYNTHETIC_PHI {
        assert!(contains(&bytes, v.as_bytes()), "synthetic file lacks {k}");
    }
    let scan = decode_upload(&bytes, &Limits::default(), &RenderOptions::default()).unwrap();
    let values: Vec<(String, String)> = SYNTHETIC_PHI
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_clean("synthetic", &scan, &values);
    assert_eq!((scan.width, scan.height), (64, 64));
    assert_eq!(scan.meta.modality.as_deref(), Some("CT"));
    assert_eq!(scan.meta.body_part.as_deref(), Some("CHEST"));
    assert_eq!(scan.meta.view.as_deref(), Some("AP"));
    assert_eq!(scan.meta.rescale, Some((1.0, -1024.0)));
    let w = scan.meta.window_used.unwrap();
    assert_eq!((w.center, w.width), (40.0, 400.0));
}

#[test]
fn synthetic_example_writes_a_file() {
    let dir = std::env::temp_dir().join(format!("medpo-imaging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synthetic.dcm");
    std::fs::write(&path, synthetic_ct_dicom()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[128..132], b"DICM");
    std::fs::remove_dir_all(&dir).ok();
}
