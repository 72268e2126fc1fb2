//! What a training job launched from the browser runs: the job's stored settings (TRL field
//! names, no paths) turned into the training engine's [`TrainConfig`] with the server's paths.
//! The launch form validates with the same function the queue worker runs, so a job that is
//! accepted can start. Server-side only.

use std::path::{Path, PathBuf};

use medpo_train::config::TrainConfig;

/// Keys of a job's `config` that are not training-engine settings.
pub const JOB_EXTRA_KEYS: &[&str] = &["image_negative", "eval_benchmarks"];

/// Keys the server sets itself; a job's config may not name them.
const SERVER_KEYS: &[&str] = &["model_name_or_path", "dataset_path", "image_folder", "output_dir", "resume", "save_merged_model"];

/// The folder of a job: its dataset, checkpoints, metrics, log and exported model.
pub fn job_dir(data_dir: &Path, job_id: i64) -> PathBuf {
    data_dir.join("jobs").join(format!("job-{job_id}"))
}

/// The preference file a job trains on (written from its snapshot when the job first starts).
pub fn job_dataset(data_dir: &Path, job_id: i64) -> PathBuf {
    job_dir(data_dir, job_id).join("dataset.jsonl")
}

/// The job's human-readable log (one line per event).
pub fn job_log(data_dir: &Path, job_id: i64) -> PathBuf {
    job_dir(data_dir, job_id).join("job.log")
}

/// Objectives that train on an image negative (the rejected side's corrupted image).
pub fn needs_image_negative(loss_types: &[medpo_train::objective::Objective]) -> bool {
    use medpo_train::objective::Objective as O;
    loss_types.iter().any(|o| matches!(o, O::Copo | O::Mdpo | O::Mmedpo))
}

/// The training configuration of a job: its settings plus the server's paths (base
/// checkpoint, the job's dataset and folder, the data folder for images). LoRA jobs also
/// write the merged model, which is what joins the arena. Errors name the key.
pub fn train_config(settings: &serde_json::Value, base_dir: &Path, data_dir: &Path, job_id: i64) -> Result<TrainConfig, String> {
    let obj = settings.as_object().ok_or("the job's settings must be a JSON object")?;
    let known = TrainConfig::known_keys();
    let mut merged = serde_json::Map::new();
    for (k, v) in obj {
        if JOB_EXTRA_KEYS.contains(&k.as_str()) {
            continue;
        }
        if SERVER_KEYS.contains(&k.as_str()) {
            return Err(format!("`{k}` is set by the server and cannot be given"));
        }
        if !known.contains(k) {
            return Err(format!("unknown training setting `{k}`"));
        }
        merged.insert(k.clone(), v.clone());
    }
    let dir = job_dir(data_dir, job_id);
    merged.insert("model_name_or_path".into(), serde_json::json!(base_dir));
    merged.insert("dataset_path".into(), serde_json::json!(job_dataset(data_dir, job_id)));
    merged.insert("image_folder".into(), serde_json::json!(data_dir));
    merged.insert("output_dir".into(), serde_json::json!(dir.join("out")));
    merged.insert("resume".into(), serde_json::json!(true));
    let use_peft = merged.get("use_peft").and_then(|v| v.as_bool()).unwrap_or(false);
    merged.insert("save_merged_model".into(), serde_json::json!(use_peft));
    let cfg: TrainConfig = serde_json::from_value(serde_json::Value::Object(merged)).map_err(|e| format!("training settings: {e}"))?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Optimizer steps the job will run on `pairs` pairs (as the trainer counts them).
pub fn total_steps(cfg: &TrainConfig, pairs: usize) -> u64 {
    let a = &cfg.args;
    a.max_steps.unwrap_or_else(|| {
        medpo_train::schedule::total_steps(pairs, a.per_device_train_batch_size, a.gradient_accumulation_steps, a.num_train_epochs)
    })
}

/// One line of help per objective the training engine offers, for the launch form.
pub fn objective_help(name: &str) -> &'static str {
    match name {
        "sigmoid" => "DPO (Rafailov et al. 2023): −log σ(β·margin); the study's baseline",
        "hinge" => "SLiC hinge loss on the DPO margin",
        "ipo" => "IPO: squared loss towards a margin of 1/(2β), length-normalised; resists overfitting",
        "exo_pair" => "EXO, pairwise: reverse-KL matching of the preference distribution",
        "nca_pair" => "NCA, pairwise: absolute rewards, keeps the chosen likelihood up",
        "robust" => "Robust DPO: unbiased under label noise ε (label_smoothing)",
        "bco_pair" => "BCO, pairwise: binary classifier of chosen vs rejected",
        "sppo_hard" => "SPPO with hard labels: pushes chosen to +1/(2β), rejected to −1/(2β)",
        "aot" => "AOT, paired: optimal-transport alignment of sorted margins",
        "aot_unpaired" => "AOT, unpaired: chosen and rejected log-ratios sorted separately",
        "apo_zero" => "APO-zero: raise chosen, lower rejected (when chosen beats the model)",
        "apo_down" => "APO-down: lower both, rejected more (when the model beats chosen)",
        "discopop" => "DiscoPOP: log-ratio modulated blend of logistic and exponential losses",
        "sft" => "Supervised NLL of the chosen answers (no reference model)",
        "sigmoid_norm" => "DPO on length-normalised log-ratios",
        "cdpo" => "Conservative DPO: label smoothing ε for noisy votes",
        "dpo_nll" => "DPO + NLL of the chosen answer (sft_weight α; the seed's DPO+NLL)",
        "copo" => "CoPO: the chosen answer on the clean vs a corrupted image (image negative needed)",
        "anchor" => "mDPO's reward anchor: keeps the chosen reward above δ",
        "mdpo" => "mDPO = DPO + CoPO + anchor: conditions on the image (image negative needed)",
        "mmedpo" => "MMedPO: weighted DPO, rejected answer on a lesion-noised image (image negative needed)",
        "simpo" => "SimPO: reference-free, length-normalised margin with γ",
        "cpo" => "CPO: reference-free DPO plus NLL of the chosen answer",
        "orpo" => "ORPO: odds-ratio penalty on top of SFT, reference-free",
        "kto" => "KTO: unpaired desirable/undesirable answers, prospect-theory loss",
        "apo_zero_unpaired" => "APO-zero for unpaired answers (KTO trainer)",
        _ => "",
    }
}

/// Every objective of the training engine with its help line, in the engine's order.
pub fn objectives() -> Vec<(String, String)> {
    medpo_train::objective::OBJECTIVES.iter().map(|r| (r.name.to_string(), objective_help(r.name).to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_a_config_with_server_paths() {
        let s = serde_json::json!({"loss_type": "sigmoid", "beta": 0.2, "use_peft": true, "lora_r": 4, "max_steps": 3, "eval_benchmarks": ["demo"]});
        let c = train_config(&s, Path::new("/m/base"), Path::new("/d"), 7).unwrap();
        assert_eq!(c.loss.beta, 0.2);
        assert_eq!(c.output_dir, Path::new("/d/jobs/job-7/out"));
        assert!(c.resume && c.save_merged_model);
        assert_eq!(total_steps(&c, 100), 3);
        let e = train_config(&serde_json::json!({"betta": 1}), Path::new("/m"), Path::new("/d"), 1).unwrap_err();
        assert!(e.contains("betta"), "{e}");
        let e = train_config(&serde_json::json!({"output_dir": "/etc"}), Path::new("/m"), Path::new("/d"), 1).unwrap_err();
        assert!(e.contains("output_dir"), "{e}");
        let e = train_config(&serde_json::json!({"loss_type": "dpoo"}), Path::new("/m"), Path::new("/d"), 1).unwrap_err();
        assert!(e.contains("dpoo"), "{e}");
    }

    #[test]
    fn every_objective_has_help() {
        for (name, help) in objectives() {
            assert!(!help.is_empty(), "objective `{name}` has no help line");
        }
    }
}
