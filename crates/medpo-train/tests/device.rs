//! One DPO optimizer step on an accelerator against the same step on the CPU: the loss, the
//! summed log-probs, the gradient norm and the updated weights. Skipped with a message when no
//! CUDA device is present (CPU-only builds, CI); `scripts/gpu-check.sh` runs it with
//! `--features cuda`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use medpo_models::LoadOptions;
use medpo_train::data::{PreferenceRecord, Source};
use medpo_train::metrics::{StepRecord, TrainCallback};
use medpo_train::objective::{LossConfig, Objective};
use medpo_train::policy::{PolicySpec, Tuning, VlmPolicy};
use medpo_train::trainer::{Trainer, TrainerArgs};

fn fixtures() -> PathBuf {
    let shared = match std::env::var_os("MEDPO_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    shared.join("fixtures/v1")
}

fn records() -> Vec<PreferenceRecord> {
    [("left lung", "nodule"), ("liver", "mass")]
        .iter()
        .enumerate()
        .map(|(i, (organ, finding))| PreferenceRecord {
            id: Some(i.to_string()),
            prompt: format!("<image>\nIs there a {finding} in the {organ}?"),
            chosen: format!("Yes, there is a {finding} in the {organ}."),
            rejected: format!("No, the {organ} is normal."),
            image: Some("scan.png".into()),
            rejected_image: None,
            weight: None,
            roi: None,
            source: Source { file: "device-test".into(), index: i, line: None },
        })
        .collect()
}

#[derive(Default)]
struct Keep(Vec<StepRecord>);

impl TrainCallback for Keep {
    fn on_step(&mut self, r: &StepRecord) -> medpo_train::Result<()> {
        self.0.push(r.clone());
        Ok(())
    }
}

/// Two full-fine-tuning DPO steps (the second one sees a policy that moved): metrics and a
/// trained weight after them.
fn two_steps(device: &Device) -> (Vec<StepRecord>, Vec<f32>) {
    let spec = PolicySpec { loss: LossConfig::new(Objective::Sigmoid, 0.1), max_length: None, image_folder: Some(fixtures()), seed: 0 };
    let opts = LoadOptions { device: device.clone(), dtype: DType::F32, ..Default::default() };
    let recs = records();
    let mut policy = VlmPolicy::load(&fixtures().join("llava-med-tiny"), opts, Tuning::Full { train_vision_tower: false }, &recs, spec).unwrap();
    let vars = policy.trainable_vars();
    let probe = vars.iter().find(|(k, _)| k.ends_with("layers.0.self_attn.q_proj.weight")).expect("q_proj of layer 0").1.clone();
    let args = TrainerArgs { per_device_train_batch_size: 2, max_steps: Some(2), learning_rate: 1e-3, max_grad_norm: 1.0, ..Default::default() };
    let mut t = Trainer::new(args, vars, recs.len(), None, "device").unwrap();
    let mut keep = Keep::default();
    t.run(&mut policy, &mut [&mut keep], &AtomicBool::new(false), None).unwrap();
    let w = probe.as_tensor().to_device(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (keep.0, w)
}

#[test]
fn cuda_dpo_step_matches_cpu() {
    let Ok(gpu) = Device::new_cuda(0) else {
        eprintln!("skipping: no CUDA device (build with --features cuda on a machine with a GPU)");
        return;
    };
    let (cpu_steps, cpu_w) = two_steps(&Device::Cpu);
    let (gpu_steps, gpu_w) = two_steps(&gpu);
    assert_eq!(cpu_steps.len(), 2);
    assert_eq!(gpu_steps.len(), 2);
    for (c, g) in cpu_steps.iter().zip(&gpu_steps) {
        for k in ["loss", "grad_norm", "logps/chosen", "logps/rejected"] {
            let (a, b) = (c.metrics[k], g.metrics[k]);
            eprintln!("step {} {k}: cpu {a:.6} cuda {b:.6}", c.step);
            assert!((a - b).abs() <= 1e-3 * (1.0 + a.abs()), "step {} {k}: cpu {a} vs cuda {b}", c.step);
        }
    }
    let d = cpu_w.iter().zip(&gpu_w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("max |Δw| after two steps: {d:.3e}");
    assert!(d < 1e-4, "weights after two steps differ by {d}");
}
