//! One DPO optimizer step on the workload of `shared/bench/hf_reference.py` (`dpo_full`,
//! `dpo_lora`), side by side with TRL's numbers from its JSON output.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p medpo-train --example dpo_step_bench
//! ```
//!
//! Workload (as the reference): llava-hf-tiny (tiny: `shared/fixtures/v1`, medium:
//! `target/medium-fixture`), B = 4 pairs, pair i = PAIRS[i % 4] on the scan transformed by
//! TRANSFORMS[i % 4], sigmoid loss, β 0.1, grad-norm clip 1.0, AdamW; policy forward + backward and
//! reference forward on 2B sequences. `full`: language model + projector trained, vision tower
//! frozen, reference = a frozen copy (TRL loads one too); `lora`: r 8, α 16 on q/k/v/o of the
//! language model, reference = adapters off. 1 untimed warm-up step, then 5 timed steps (median).
//! Each (model, variant) runs in its own process so that peak RSS (`VmHWM`) is its own.
//!
//! Reference JSON: `target/ref-<model>-rerun*.json` when present (the quiet reruns), else
//! `target/ref-<model>.json`; override with `MEDPO_REF_TINY` / `MEDPO_REF_MEDIUM`.
//!
//! `--objective mdpo`: the medical step instead (DPO + CoPO + anchor, three sequences per pair:
//! chosen and rejected on the image, chosen on the corrupted image), against
//! `medical_step_ref.py` beside this file (transformers/PEFT/torch primitives), whose JSON
//! (`MEDPO_REF_MDPO_TINY` / `MEDPO_REF_MDPO_MEDIUM`, default `target/ref-<model>-mdpo.json`) also
//! names the folder of the clean and corrupted PNGs it wrote, so both sides read the same pixels.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use medpo_models::LoadOptions;
use medpo_train::data::{PreferenceRecord, Source};
use medpo_train::lora::{LoraConfig, TargetModule};
use medpo_train::metrics::{StepRecord, TrainCallback};
use medpo_train::objective::{LossConfig, Objective};
use medpo_train::policy::{PolicySpec, Tuning, VlmPolicy};
use medpo_train::trainer::{Trainer, TrainerArgs};

const PAIRS: [(&str, &str); 4] = [
    (
        "Yes, there is a nodule in the left lung.",
        "No, the lungs are clear.",
    ),
    (
        "Yes. A small round nodule is seen in the left upper lobe.",
        "No abnormality is seen in the chest.",
    ),
    (
        "There is a round nodule in the left lung, which may be a tumor.",
        "The nodule is in the right lung.",
    ),
    (
        "Yes, the left lung has a nodule and the right lung is normal.",
        "Yes, there are many nodules in both lungs and the heart is enlarged.",
    ),
];
const QUESTION: &str = "Is there a nodule in the left lung?";
const WARMUP: usize = 1;
const STEPS: usize = 5;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared() -> PathBuf {
    match std::env::var_os("MEDPO_SHARED") {
        Some(p) => PathBuf::from(p),
        None => repo().join("../shared"),
    }
}

fn model_dir(name: &str) -> PathBuf {
    match name {
        "tiny" => shared().join("fixtures/v1/llava-hf-tiny"),
        _ => repo().join("target/medium-fixture/llava-hf-tiny"),
    }
}

fn reference_json(name: &str, objective: &str) -> Option<serde_json::Value> {
    let env = match (name, objective) {
        ("tiny", "mdpo") => "MEDPO_REF_MDPO_TINY",
        (_, "mdpo") => "MEDPO_REF_MDPO_MEDIUM",
        ("tiny", _) => "MEDPO_REF_TINY",
        _ => "MEDPO_REF_MEDIUM",
    };
    let t = repo().join("target");
    let candidates: Vec<PathBuf> = match std::env::var_os(env) {
        Some(p) => vec![PathBuf::from(p)],
        None if objective == "mdpo" => vec![t.join(format!("ref-{name}-mdpo.json"))],
        None => vec![
            t.join(format!("ref-{name}-rerun2.json")),
            t.join(format!("ref-{name}-rerun.json")),
            t.join(format!("ref-{name}.json")),
        ],
    };
    let p = candidates.into_iter().find(|p| p.is_file())?;
    eprintln!("reference for {name}: {}", p.display());
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The four transformed images, written as PNGs into `dir`.
fn images(model: &Path, dir: &Path) -> Vec<String> {
    let scan = model
        .parent()
        .expect("model folder has a parent")
        .join("scan.png");
    let img = image::open(&scan)
        .unwrap_or_else(|e| panic!("{}: {e}", scan.display()))
        .to_rgb8();
    let out = [
        ("none.png", img.clone()),
        ("lr.png", image::imageops::flip_horizontal(&img)),
        ("tb.png", image::imageops::flip_vertical(&img)),
        ("r180.png", image::imageops::rotate180(&img)),
    ];
    out.iter()
        .map(|(n, im)| {
            im.save(dir.join(n)).expect("write png");
            n.to_string()
        })
        .collect()
}

/// Keeps the first step's metrics (to check them against TRL's `step1`).
#[derive(Default)]
struct First(Option<StepRecord>);

impl TrainCallback for First {
    fn on_step(&mut self, r: &StepRecord) -> medpo_train::Result<()> {
        if self.0.is_none() {
            self.0 = Some(r.clone());
        }
        Ok(())
    }
}

/// Runs in a child process: prints one JSON line with the timings.
fn child(name: &str, variant: &str, objective: &str) {
    let dir = model_dir(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    // mdpo: the clean and corrupted PNGs medical_step_ref.py wrote; sigmoid: the transformed scans.
    let (folder, imgs, corrupt): (PathBuf, Vec<String>, Vec<Option<String>>) = if objective == "mdpo" {
        let r = reference_json(name, objective).expect("mdpo needs medical_step_ref.py's JSON (see the header)");
        let files = r["workload"]["images"].as_array().expect("workload.images").clone();
        let get = |k: &str| files.iter().map(|f| f[k].as_str().expect("file name").to_string()).collect::<Vec<_>>();
        let corrupt = get("corrupt").into_iter().map(Some).collect();
        (PathBuf::from(r["image_dir"].as_str().expect("image_dir")), get("image"), corrupt)
    } else {
        (tmp.path().into(), images(&dir, tmp.path()), vec![None; 4])
    };
    let records: Vec<PreferenceRecord> = (0..4)
        .map(|i| PreferenceRecord {
            id: Some(i.to_string()),
            prompt: format!("<image>\n{QUESTION}"),
            chosen: PAIRS[i].0.into(),
            rejected: PAIRS[i].1.into(),
            image: Some(imgs[i].clone()),
            rejected_image: corrupt[i].clone(),
            weight: None,
            roi: None,
            source: Source::default(),
        })
        .collect();
    let tuning = if variant == "lora" {
        Tuning::Lora(LoraConfig {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: vec![
                TargetModule::Q,
                TargetModule::K,
                TargetModule::V,
                TargetModule::O,
            ],
            base_model_name_or_path: None,
        })
    } else {
        Tuning::Full { train_vision_tower: false }
    };
    let spec = PolicySpec {
        loss: LossConfig::new(if objective == "mdpo" { Objective::Mdpo } else { Objective::Sigmoid }, 0.1),
        max_length: None,
        image_folder: Some(folder),
        seed: 0,
    };
    let t0 = Instant::now();
    let mut policy =
        VlmPolicy::load(&dir, LoadOptions::default(), tuning, &records, spec).expect("load");
    let vars = policy.trainable_vars();
    let trainable: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let args = TrainerArgs {
        per_device_train_batch_size: 4,
        gradient_accumulation_steps: 1,
        max_steps: Some((WARMUP + STEPS) as u64),
        learning_rate: 1e-6,
        warmup_ratio: 0.0,
        max_grad_norm: 1.0,
        ..Default::default()
    };
    let mut t = Trainer::new(args, vars, records.len(), None, "bench").expect("trainer");
    let setup_s = t0.elapsed().as_secs_f64();
    let never = AtomicBool::new(false);
    let mut steps = Vec::new();
    let mut first = First::default();
    for _ in 0..WARMUP + STEPS {
        let s = Instant::now();
        t.run(&mut policy, &mut [&mut first], &never, Some(1))
            .expect("step");
        steps.push(s.elapsed().as_secs_f64());
    }
    let mut timed = steps[WARMUP..].to_vec();
    timed.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "median_s": timed[timed.len() / 2],
        "min_s": timed[0],
        "warmup_s": steps[..WARMUP],
        "peak_rss_mib": peak_rss_mib(),
        "trainable_params": trainable,
        "setup_s": setup_s,
        "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
        "step1": first.0.map(|r| r.metrics),
    });
    println!("{out}");
}

fn main() {
    medpo_models::alloc::retain_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "--child" {
        child(&args[2], &args[3], &args[4]);
        return;
    }
    let objective = match args.iter().position(|a| a == "--objective") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "sigmoid".into(),
    };
    assert!(matches!(objective.as_str(), "sigmoid" | "mdpo"), "--objective sigmoid|mdpo");
    let key = if objective == "mdpo" { "mdpo" } else { "dpo" };
    let exe = std::env::current_exe().expect("current exe");
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "2".into());
    println!(
        "| model | variant | medpo s/step | medpo steps/s | TRL s/step | TRL steps/s | speed ratio (medpo/TRL) | medpo peak RSS MiB | TRL peak RSS MiB | RSS ratio | trainable params (medpo / TRL) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut step1 = Vec::new();
    for name in ["tiny", "medium"] {
        if !model_dir(name).join("config.json").is_file() {
            eprintln!("{name}: {} not found, skipped", model_dir(name).display());
            continue;
        }
        let reference = reference_json(name, &objective);
        for variant in ["full", "lora"] {
            let out = Command::new(&exe)
                .args(["--child", name, variant, &objective])
                .env("RAYON_NUM_THREADS", &threads)
                .output()
                .expect("spawn child");
            if !out.status.success() {
                eprintln!(
                    "{name} {variant} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let ours: serde_json::Value = serde_json::from_str(line.trim()).expect("child JSON");
            let r = reference
                .as_ref()
                .map(|j| j["results"][format!("{key}_{variant}")].clone());
            let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let (ms, mr) = (num(&ours, "median_s"), num(&ours, "peak_rss_mib"));
            let (ts, tr, tp) = match &r {
                Some(r) => (
                    num(r, "median_s"),
                    num(r, "peak_rss_mib"),
                    r["trainable_params"].to_string(),
                ),
                None => (f64::NAN, f64::NAN, "?".into()),
            };
            println!(
                "| {name} | {variant} | {ms:.4} | {:.2} | {ts:.4} | {:.2} | {:.2}× | {mr:.0} | {tr:.0} | {:.2} | {} / {tp} |",
                1.0 / ms,
                1.0 / ts,
                ts / ms,
                mr / tr,
                ours["trainable_params"]
            );
            let s1 = |v: &serde_json::Value, k: &str| v["step1"][k].as_f64().unwrap_or(f64::NAN);
            let rs = r.clone().unwrap_or_default();
            step1.push(format!(
                "| {name} | {variant} | {:.6} / {:.6} | {:.4} / {:.4} | {:.4} / {:.4} | {:.4} / {:.4} |",
                s1(&ours, "loss"),
                s1(&rs, "loss"),
                s1(&ours, "logps/chosen"),
                s1(&rs, "logps/chosen"),
                s1(&ours, "logps/rejected"),
                s1(&rs, "logps/rejected"),
                s1(&ours, "grad_norm"),
                s1(&rs, "grad_norm"),
            ));
        }
    }
    println!();
    println!("Step 1 (medpo / TRL): | model | variant | loss | logps/chosen | logps/rejected | grad_norm |");
    println!("|---|---|---|---|---|---|");
    for l in step1 {
        println!("{l}");
    }
}
