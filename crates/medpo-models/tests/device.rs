//! The same checks on an accelerator: written once against a `&Device`, skipped with a message
//! when none is present (CPU-only builds, or no GPU). Build with `--features cuda` to run them.

mod common;

use candle_core::{DType, Device, IndexOp};
use common::*;
use medpo_models::{GenerateParams, LoadOptions, Model};

fn cuda() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping: no CUDA device ({e})");
            None
        }
    }
}

fn check_against_cpu(device: &Device, dtype: DType, tol: f64) {
    let cpu = load("llava-med-tiny");
    let opts = LoadOptions { device: device.clone(), dtype, ..Default::default() };
    let dev = Model::load(&fixtures().join("llava-med-tiny"), &opts).unwrap();
    let q = expected()["question"].as_str().unwrap().to_string();
    let a = cpu.forward_train(&[cpu.input(&q, Some(&scan())).unwrap()]).unwrap().0;
    let b = dev.forward_train(&[dev.input(&q, Some(&scan())).unwrap()]).unwrap().0;
    let b = b.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let d = max_abs_diff(&a.i(0).unwrap(), &b.i(0).unwrap());
    eprintln!("{dtype:?} on {device:?}: max |Δlogit| vs CPU f32 = {d:.3e}");
    assert!(d < tol, "{dtype:?}: {d}");
    // The fast path runs on the device too.
    let p = GenerateParams { max_new_tokens: 4, stop_at_eos: false, ..Default::default() };
    let out = dev.generate(&[dev.input(&q, Some(&scan())).unwrap()], &p, &mut |_| {}).unwrap();
    assert_eq!(out[0].ids.len(), 4);
    if dtype == DType::F32 {
        // Greedy ids are the CPU's in float32.
        let want = cpu.generate(&[cpu.input(&q, Some(&scan())).unwrap()], &p, &mut |_| {}).unwrap();
        assert_eq!(out[0].ids, want[0].ids, "greedy ids on {device:?} vs CPU");
    }
}

#[test]
fn cuda_f32_matches_cpu() {
    if let Some(d) = cuda() {
        check_against_cpu(&d, DType::F32, 1e-3);
    }
}

#[test]
fn cuda_bf16_is_close_to_cpu() {
    if let Some(d) = cuda() {
        // bf16 keeps ~3 significant digits; logits of magnitude ~6 move by a few 1e-2.
        check_against_cpu(&d, DType::BF16, 0.5);
    }
}

#[test]
fn cpu_f16_loads_and_runs() {
    // The dtype comes from the options on the CPU too (slow, but a 7B fits in half the memory).
    check_against_cpu(&Device::Cpu, DType::F16, 0.5);
}

#[test]
fn cpu_bf16_is_refused_with_a_clear_message() {
    let opts = LoadOptions { dtype: DType::BF16, ..Default::default() };
    let e = Model::load(&fixtures().join("llava-med-tiny"), &opts).unwrap_err().to_string();
    assert!(e.contains("bf16") && e.contains("CPU"), "{e}");
}
