//! The one place tests find the shared fixtures (`../shared/fixtures/v1`, beside the repository,
//! or `$MEDPO_SHARED/fixtures/v1`). Their numbers are read at test time, never copied here.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use medpo_models::{LoadOptions, Model};

/// The shared folder.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("MEDPO_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// `shared/fixtures/v1`.
pub fn fixtures() -> PathBuf {
    shared_dir().join("fixtures/v1")
}

/// `expected.json`.
pub fn expected() -> serde_json::Value {
    let path = fixtures().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("expected.json parses")
}

/// `expected.json → models → name`.
pub fn expected_model(name: &str) -> serde_json::Value {
    expected()["models"][name].clone()
}

/// `reference/<name>.safetensors`.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join("reference").join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).expect("reference tensors load")
}

/// Loads a fixture model on the CPU in f32.
pub fn load(name: &str) -> Model {
    Model::load(&fixtures().join(name), &LoadOptions::default()).unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// The fixture image, decoded to RGB.
pub fn scan() -> image::RgbImage {
    medpo_models::preprocess::load_image(&fixtures().join("scan.png")).expect("scan.png decodes")
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

pub fn i64s(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().expect("array").iter().map(|x| x.as_i64().expect("int")).collect()
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("int") as u32).collect()
}

/// max |a - b| over all elements (as f64).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let b = b.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
