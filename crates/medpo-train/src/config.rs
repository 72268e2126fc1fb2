//! `train.toml`: one flat table with TRL's field names (DPOConfig / TrainingArguments /
//! ModelConfig), validated once at load. Unknown keys are errors that list the valid ones.
//!
//! ```toml
//! model_name_or_path = "models/llava-med-v1.5-mistral-7b"
//! dataset_path = "data/llava-med-IT_mDPO.jsonl"
//! image_folder = "data/llava-med"
//! output_dir = "runs/mdpo"
//! loss_type = "mdpo"            # or ["sigmoid", "sft"] with loss_weights = [1.0, 1.0]
//! beta = 0.1
//! learning_rate = 1e-7
//! warmup_ratio = 0.03
//! per_device_train_batch_size = 4
//! gradient_accumulation_steps = 4
//! num_train_epochs = 3
//! use_peft = true
//! lora_r = 8
//! lora_target_modules = ["q_proj", "v_proj"]
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lora::{LoraConfig, TargetModule};
use crate::objective::LossConfig;
use crate::trainer::TrainerArgs;

/// The whole training configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Checkpoint folder (LLaVA-Med v1.5, HuatuoGPT-Vision or llava-hf layout).
    pub model_name_or_path: PathBuf,
    /// Preference dataset: the seed's JSON or TRL JSONL.
    pub dataset_path: PathBuf,
    /// Folder image paths are relative to (the seed's `--image_folder`).
    pub image_folder: Option<PathBuf>,
    pub output_dir: PathBuf,
    /// Samples longer than this many tokens (image tokens included) are skipped and counted,
    /// never truncated. `None`: the model's context length.
    pub max_length: Option<usize>,
    /// Resume from the latest checkpoint in `output_dir` when there is one.
    pub resume: bool,
    /// LoRA (TRL ModelConfig names); full fine-tuning when false.
    pub use_peft: bool,
    /// LoRA: also write the base with the adapters merged in (`<output_dir>/merged`, the base's
    /// layout, servable like any checkpoint) next to the PEFT adapter (`<output_dir>/adapter`).
    pub save_merged_model: bool,
    /// Full fine-tuning: train the vision tower too (LLaVA's `unfreeze_mm_vision_tower`); the
    /// exported model then carries its own tower folder (`<output_dir>/model/vision_tower`).
    /// Ignored with LoRA.
    pub unfreeze_mm_vision_tower: bool,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub lora_target_modules: Vec<TargetModule>,
    #[serde(flatten)]
    pub loss: LossConfig,
    #[serde(flatten)]
    pub args: TrainerArgs,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let l = LoraConfig::default();
        TrainConfig {
            model_name_or_path: PathBuf::new(),
            dataset_path: PathBuf::new(),
            image_folder: None,
            output_dir: PathBuf::from("runs/medpo"),
            max_length: None,
            resume: true,
            use_peft: false,
            save_merged_model: false,
            unfreeze_mm_vision_tower: false,
            lora_r: l.r,
            lora_alpha: l.lora_alpha,
            lora_dropout: l.lora_dropout,
            lora_target_modules: l.target_modules,
            loss: LossConfig::default(),
            args: TrainerArgs::default(),
        }
    }
}

impl TrainConfig {
    /// Every key the file may contain.
    pub fn known_keys() -> BTreeSet<String> {
        match serde_json::to_value(TrainConfig::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Parses and validates TOML text (`path` is for messages).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::ConfigFile {
            path: path.into(),
            message: e.to_string(),
        })?;
        let known = Self::known_keys();
        for k in table.keys() {
            if !known.contains(k) {
                return Err(Error::ConfigFile {
                    path: path.into(),
                    message: format!(
                        "unknown key `{k}`; valid keys: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| Error::ConfigFile {
            path: path.into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads `train.toml`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    pub fn validate(&self) -> Result<()> {
        self.loss.validate()?;
        self.args.validate()?;
        if self.use_peft {
            self.lora()?;
        }
        if self.max_length == Some(0) {
            return Err(Error::Config {
                key: "max_length",
                value: "0".into(),
                reason: "must be ≥ 1".into(),
            });
        }
        Ok(())
    }

    /// The LoRA settings, when `use_peft`.
    pub fn lora(&self) -> Result<LoraConfig> {
        let c = LoraConfig {
            r: self.lora_r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            target_modules: self.lora_target_modules.clone(),
            base_model_name_or_path: Some(self.model_name_or_path.to_string_lossy().into_owned()),
        };
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::Objective;

    /// `docs/train.example.toml` parses and carries the seed's defaults.
    #[test]
    fn the_documented_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/train.example.toml");
        let c = TrainConfig::load(&p).unwrap();
        assert_eq!(c.loss.loss_type, vec![Objective::Mdpo]);
        assert_eq!(
            (c.loss.beta, c.args.learning_rate, c.args.warmup_ratio),
            (0.1, 1e-7, 0.03)
        );
        assert_eq!(
            c.args.per_device_train_batch_size * c.args.gradient_accumulation_steps,
            16
        );
        assert!(c.use_peft && c.lora().unwrap().target_modules.len() == 7);
    }

    #[test]
    fn parses_trl_names_and_rejects_unknown_keys() {
        let text = r#"
            model_name_or_path = "m"
            dataset_path = "d.jsonl"
            output_dir = "out"
            loss_type = ["sigmoid", "sft"]
            loss_weights = [1.0, 1]
            beta = 0.1
            learning_rate = 1e-7
            warmup_ratio = 0.03
            per_device_train_batch_size = 4
            gradient_accumulation_steps = 4
            weight_decay = 0.0
            use_peft = true
            lora_r = 8
            lora_alpha = 16
            lora_target_modules = ["q_proj", "v"]
        "#;
        let c = TrainConfig::from_toml_str(text, Path::new("train.toml")).unwrap();
        assert_eq!(c.loss.loss_type, vec![Objective::Sigmoid, Objective::Sft]);
        assert_eq!(c.loss.loss_weights, Some(vec![1.0, 1.0]));
        assert_eq!(c.args.learning_rate, 1e-7);
        assert_eq!(c.args.gradient_accumulation_steps, 4);
        let l = c.lora().unwrap();
        assert_eq!(
            (l.r, l.lora_alpha, l.target_modules.clone()),
            (8, 16.0, vec![TargetModule::Q, TargetModule::V])
        );

        let e = TrainConfig::from_toml_str("betta = 0.1", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml") && e.contains("betta") && e.contains("loss_type"),
            "{e}"
        );
        let e = TrainConfig::from_toml_str("loss_type = \"dpo\"", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sigmoid") && e.contains("mmedpo"), "{e}");
        let e = TrainConfig::from_toml_str(
            "loss_type = [\"sigmoid\", \"sft\"]\nloss_weights = [1.0]",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("loss_weights has 1") && e.contains("loss_type has 2"),
            "{e}"
        );
        // Every key of the defaults is accepted back.
        let round = toml::to_string(&TrainConfig {
            image_folder: Some("i".into()),
            max_length: Some(2048),
            args: TrainerArgs {
                max_steps: Some(3),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        TrainConfig::from_toml_str(&round, Path::new("r.toml")).unwrap();
    }
}
