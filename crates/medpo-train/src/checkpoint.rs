//! Checkpoints: trainable weights, optimizer moments, step and RNG state, so that a resumed run
//! continues exactly as an uninterrupted one.
//!
//! Layout of `<output_dir>/checkpoint-<step>/` (HF Trainer's folder names):
//! - `model.safetensors`: the trainable `Var`s by name (for LoRA: PEFT keys);
//! - `optimizer.safetensors`: `exp_avg.<var>` / `exp_avg_sq.<var>`;
//! - `trainer_state.json`: [`TrainerState`].
//!
//! A checkpoint is written to `checkpoint-<step>.tmp` and renamed when complete, so a job killed
//! while saving never leaves a half checkpoint behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lora::write_safetensors;
use crate::optim::AdamW;
use crate::rng::RngState;

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub global_step: u64,
    pub epoch: f64,
    /// Per-var AdamW step counts.
    pub optimizer_steps: HashMap<String, u64>,
    /// The model side's RNG (dropout), if it has one.
    pub model_rng: Option<RngState>,
    /// Samples skipped so far (over-long).
    pub skipped_samples: u64,
    /// Free-form identification of the run (config hash, dataset) to refuse a mismatched resume.
    pub run_id: String,
}

/// The folder name of a step's checkpoint.
pub fn checkpoint_dir(output_dir: &Path, step: u64) -> PathBuf {
    output_dir.join(format!("checkpoint-{step}"))
}

/// Writes a checkpoint atomically; returns its folder.
pub fn save(
    output_dir: &Path,
    vars: &[(String, Var)],
    opt: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(output_dir, state.global_step);
    let tmp = output_dir.join(format!("checkpoint-{}.tmp", state.global_step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let weights: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    write_safetensors(&tmp.join(MODEL_FILE), &weights)?;
    let (moments, _) = opt.state_tensors();
    write_safetensors(&tmp.join(OPTIMIZER_FILE), &moments)?;
    let p = tmp.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::json(&p, e))?;
    std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Loads a checkpoint into `vars` and `opt`; returns its state.
pub fn load(
    dir: &Path,
    vars: &[(String, Var)],
    opt: &mut AdamW,
    device: &Device,
) -> Result<TrainerState> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::json(&p, e))?;
    let wp = dir.join(MODEL_FILE);
    let weights = candle_core::safetensors::load(&wp, device)?;
    for (k, v) in vars {
        let t = weights.get(k).ok_or_else(|| Error::Checkpoint {
            path: wp.clone(),
            message: format!("missing tensor `{k}`"),
        })?;
        if t.dims() != v.dims() {
            return Err(Error::Checkpoint {
                path: wp.clone(),
                message: format!("`{k}` has shape {:?}, the model {:?}", t.dims(), v.dims()),
            });
        }
        v.set(&t.to_dtype(v.dtype())?)?;
    }
    let moments = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), device)?;
    opt.load_state(&moments, &state.optimizer_steps)?;
    Ok(state)
}

/// The checkpoint with the highest step in `output_dir`, if any.
pub fn latest(output_dir: &Path) -> Option<PathBuf> {
    let rd = std::fs::read_dir(output_dir).ok()?;
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: u64 = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then_some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
        .map(|(_, p)| p)
}
