//! Shared test helpers: where the shared data lives, and expected.json.

#![allow(dead_code)]

use std::path::PathBuf;

/// The shared folder: `MEDPO_SHARED`, else `<CARGO_MANIFEST_DIR>/../../../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("MEDPO_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

pub fn dicom_dir() -> PathBuf {
    shared_dir().join("data/dicom")
}

pub fn read_shared(rel: &str) -> Vec<u8> {
    let p = shared_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// `data/dicom/expected.json`, made with pydicom 3.0.2.
pub fn expected() -> serde_json::Value {
    let bytes = read_shared("data/dicom/expected.json");
    serde_json::from_slice(&bytes).expect("expected.json parses")
}

/// Every DICOM file listed in expected.json, with its entry.
pub fn dicom_cases() -> Vec<(String, Vec<u8>, serde_json::Value)> {
    let exp = expected();
    let files = exp["files"]
        .as_object()
        .expect("expected.json has files")
        .clone();
    files
        .into_iter()
        .map(|(name, entry)| {
            let bytes = read_shared(&format!("data/dicom/{name}"));
            (name, bytes, entry)
        })
        .collect()
}

pub struct Stats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn stats(v: &[f32]) -> Stats {
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    let mut sum = 0.0;
    for &x in v {
        let x = f64::from(x);
        min = min.min(x);
        max = max.max(x);
        sum += x;
    }
    Stats {
        min,
        max,
        mean: sum / v.len() as f64,
    }
}
