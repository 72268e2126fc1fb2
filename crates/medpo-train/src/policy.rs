//! The model side of training on a real vision-language model: [`VlmPolicy`] implements
//! [`PolicyModel`] on top of `medpo-models`.
//!
//! For each micro-batch of preference records it scores, in one differentiable forward over the
//! concatenated rows (as TRL's `concatenated_forward`), only the sequences the objectives need:
//!
//! | rows                                   | read by                          |
//! |----------------------------------------|----------------------------------|
//! | chosen text on the image               | every objective                  |
//! | rejected text on the image             | every objective but `copo`, `anchor`, `mmedpo`, `sft` |
//! | chosen text on the `rejected_image`    | `copo`, `mdpo` (the corrupted image, for real) |
//! | rejected text on the `rejected_image`  | `mmedpo` (the noised image), weight = `weighted_score` |
//! | chosen text of the next record         | `kto` (the KL point, TRL's shifted completions) |
//!
//! The reference log-probs come from the same model with the LoRA adapters switched off (one
//! copy of the weights), or, for full fine-tuning, from a frozen copy of the base; they are
//! detached either way. Samples longer than `max_length` (image tokens included) are skipped by
//! [`PolicyModel::keep`] and counted by the trainer, never truncated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use medpo_models::config::SelectFeature;
use medpo_models::{LoadOptions, Model, ScoreItem};

use crate::data::{PreferenceRecord, IMAGE_TOKEN};
use crate::error::{Error, Result};
use crate::lora::{Lora, LoraConfig};
use crate::objective::{compute_loss, LossConfig, LossOutput, Objective, PreferenceLogps};
use crate::pairs::AnswerOnImage;
use crate::rng::RngState;
use crate::trainer::PolicyModel;

/// Which weights are trained.
pub enum Tuning {
    /// LoRA adapters over a frozen base; the reference is the base (adapters off).
    Lora(LoraConfig),
    /// Every weight of the decoder and the projector, and of the vision tower too when
    /// `train_vision_tower` (LLaVA's `unfreeze_mm_vision_tower`); the reference, for the
    /// objectives that read one, is a frozen copy of the base.
    Full { train_vision_tower: bool },
}

/// What the policy needs besides the model and the records.
#[derive(Clone, Debug)]
pub struct PolicySpec {
    pub loss: LossConfig,
    /// Longer samples are skipped (never truncated); `None`: the model's context length.
    pub max_length: Option<usize>,
    /// Folder the records' image paths are relative to.
    pub image_folder: Option<PathBuf>,
    /// Drives the LoRA initialisation and dropout.
    pub seed: u64,
}

/// A preference record tokenised for the model.
#[derive(Clone, Debug)]
struct Sample {
    prompt: Vec<i64>,
    chosen: Vec<u32>,
    rejected: Vec<u32>,
    image: Option<String>,
    rejected_image: Option<String>,
    weight: f64,
    /// Longest expanded row this sample produces (image tokens included).
    length: usize,
    label: String,
}

/// Which row kinds the objectives read.
#[derive(Clone, Copy, Debug, Default)]
struct Needs {
    rejected: bool,
    chosen_corrupt: bool,
    rejected_noised: bool,
    kl: bool,
    reference: bool,
}

impl Needs {
    fn of(cfg: &LossConfig) -> Self {
        let mut n = Needs::default();
        for &o in &cfg.loss_type {
            n.reference |= o.info().needs_reference;
            match o {
                Objective::Copo | Objective::Mdpo => n.chosen_corrupt = true,
                Objective::Mmedpo => n.rejected_noised = true,
                Objective::Kto => n.kl = true,
                _ => {}
            }
            if !matches!(
                o,
                Objective::Copo | Objective::Anchor | Objective::Mmedpo | Objective::Sft
            ) {
                n.rejected = true;
            }
        }
        n
    }
}

/// Log-prob sums of one micro-batch, one entry per row kind (B each).
struct Scored {
    chosen: Tensor,
    rejected: Option<Tensor>,
    chosen_corrupt: Option<Tensor>,
    rejected_noised: Option<Tensor>,
    kl: Option<Tensor>,
}

/// Up to this many preprocessed images are kept in memory.
const IMAGE_CACHE: usize = 256;

/// A medpo-models [`Model`] as the trainer's policy.
pub struct VlmPolicy {
    model: Model,
    lora: Option<Lora>,
    /// Full fine-tuning: the frozen base, for the reference log-probs.
    frozen: Option<Model>,
    vars: Vec<(String, Var)>,
    samples: Vec<Sample>,
    loss: LossConfig,
    needs: Needs,
    max_length: usize,
    image_folder: Option<PathBuf>,
    images: HashMap<String, Tensor>,
    /// No vision-tower weight is trained: the policy and reference passes of a step share
    /// the tower's outputs (one tower pass per distinct image and step).
    tower_frozen: bool,
}

impl VlmPolicy {
    /// Loads the model in `model_dir` for `tuning` and tokenises `records` (validate them first
    /// with [`crate::data::validate`]). `seed` drives the LoRA initialisation and dropout.
    pub fn load(
        model_dir: &Path,
        opts: LoadOptions,
        tuning: Tuning,
        records: &[PreferenceRecord],
        spec: PolicySpec,
    ) -> Result<Self> {
        spec.loss.validate()?;
        let (model, lora, frozen, vars) = match tuning {
            Tuning::Lora(cfg) => {
                let mut model = Model::load(
                    model_dir,
                    &LoadOptions {
                        trainable: false,
                        ..opts
                    },
                )?;
                let lora = Lora::new(cfg, spec.seed)?;
                let n = lora.attach(&mut model)?;
                tracing::info!(
                    layers = n,
                    params = lora_param_count(&lora),
                    "LoRA adapters attached"
                );
                let vars = lora.named_vars();
                (model, Some(lora), None, vars)
            }
            Tuning::Full { train_vision_tower } => {
                let frozen_opts = LoadOptions {
                    device: opts.device.clone(),
                    dtype: opts.dtype,
                    trainable: false,
                    frozen: Vec::new(),
                    freeze_vision_tower: false,
                    models_dir: opts.models_dir.clone(),
                    available_memory: opts.available_memory,
                    progress: None,
                };
                // A frozen vision tower is loaded as plain tensors: no gradient is even computed.
                let model = Model::load(
                    model_dir,
                    &LoadOptions {
                        trainable: true,
                        freeze_vision_tower: !train_vision_tower,
                        ..opts
                    },
                )?;
                let vars = model.trainable_vars(|_| true);
                // Reference-free objectives (SFT, SimPO, ORPO, CPO) need no second copy.
                let frozen = if Needs::of(&spec.loss).reference {
                    Some(Model::load(model_dir, &frozen_opts)?)
                } else {
                    None
                };
                (model, None, frozen, vars)
            }
        };
        Self::from_parts(model, lora, frozen, vars, records, spec)
    }

    /// Wraps an already loaded model (and its LoRA, already attached; or a frozen reference copy
    /// for full fine-tuning, with the trainable `vars`).
    pub fn from_parts(
        model: Model,
        lora: Option<Lora>,
        frozen: Option<Model>,
        vars: Vec<(String, Var)>,
        records: &[PreferenceRecord],
        spec: PolicySpec,
    ) -> Result<Self> {
        let PolicySpec {
            loss,
            max_length,
            image_folder,
            ..
        } = spec;
        loss.validate()?;
        let vision = &model.config.weights.vision;
        let tower_frozen = !vars.iter().any(|(k, _)| k.starts_with(vision.as_str()));
        let mut p = VlmPolicy {
            tower_frozen,
            max_length: max_length.unwrap_or(model.llava.context_len()),
            model,
            lora,
            frozen,
            vars,
            samples: Vec::new(),
            needs: Needs::of(&loss),
            loss,
            image_folder,
            images: HashMap::new(),
        };
        p.samples = records.iter().map(|r| p.sample(r)).collect::<Result<_>>()?;
        Ok(p)
    }

    /// The trainable parameters (give them to [`crate::trainer::Trainer::new`]).
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.vars.clone()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// Each record's length in tokens as the model sees it (prompt with its image tokens
    /// expanded, plus the longer answer), in record order.
    pub fn sample_lengths(&self) -> Vec<usize> {
        self.samples.iter().map(|s| s.length).collect()
    }

    /// How many records are longer than `max_length` (they are skipped, never truncated).
    pub fn over_long(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| s.length > self.max_length)
            .count()
    }

    /// Image tokens one image expands to.
    fn image_tokens(&self) -> usize {
        let c = &self.model.config;
        c.vision.num_patches() + usize::from(c.select_feature == SelectFeature::ClsPatch)
    }

    fn sample(&self, r: &PreferenceRecord) -> Result<Sample> {
        let question = r.prompt.replace(IMAGE_TOKEN, "");
        let question = question.trim();
        let prompt = self.model.prompt_ids(question, r.image.is_some())?;
        let chosen = self.model.answer_ids(&r.chosen)?;
        let rejected = self.model.answer_ids(&r.rejected)?;
        let n_img = prompt.iter().filter(|&&i| i < 0).count();
        let base = prompt.len() - n_img + n_img * self.image_tokens();
        let mut longest = chosen.len();
        if self.needs.rejected || self.needs.rejected_noised {
            longest = longest.max(rejected.len());
        }
        Ok(Sample {
            prompt,
            chosen,
            rejected,
            image: r.image.clone(),
            rejected_image: r.rejected_image.clone(),
            weight: r.weight.unwrap_or(1.0),
            length: base + longest,
            label: r.label(),
        })
    }

    /// Pixel values (1, 3, S, S) of an image path (relative to the image folder).
    fn pixels(&mut self, path: &str) -> Result<Tensor> {
        if let Some(t) = self.images.get(path) {
            return Ok(t.clone());
        }
        let full = match &self.image_folder {
            Some(d) => d.join(path),
            None => PathBuf::from(path),
        };
        let img = medpo_models::preprocess::load_image(&full)?;
        let t = self.model.preprocess_image(&img)?;
        if self.images.len() >= IMAGE_CACHE {
            self.images.clear();
        }
        self.images.insert(path.to_string(), t.clone());
        Ok(t)
    }

    fn item(&mut self, s: &Sample, image: Option<&str>, answer: &[u32]) -> Result<ScoreItem> {
        let pixel_values = image.map(|p| self.pixels(p)).transpose()?;
        Ok(ScoreItem {
            prompt: medpo_models::MultimodalInput {
                ids: s.prompt.clone(),
                pixel_values,
            },
            answer_ids: answer.to_vec(),
        })
    }

    /// The rows of a micro-batch, in the order chosen, rejected, chosen-corrupt,
    /// rejected-noised, KL (each B long, present as [`Needs`] says).
    fn rows(&mut self, samples: &[Sample]) -> Result<Vec<ScoreItem>> {
        let n = self.needs;
        let mut rows = Vec::new();
        for s in samples {
            rows.push(self.item(s, s.image.as_deref(), &s.chosen)?);
        }
        if n.rejected {
            for s in samples {
                rows.push(self.item(s, s.image.as_deref(), &s.rejected)?);
            }
        }
        let corrupt = |s: &Sample| -> Result<String> {
            s.rejected_image.clone().ok_or_else(|| Error::Config {
                key: "rejected_image",
                value: format!("none in record {}", s.label),
                reason: "copo, mdpo and mmedpo need the corrupted/noised image (run `medpo pairs negatives`)".into(),
            })
        };
        if n.chosen_corrupt {
            for s in samples {
                let img = corrupt(s)?;
                rows.push(self.item(s, Some(&img), &s.chosen)?);
            }
        }
        if n.rejected_noised {
            for s in samples {
                let img = corrupt(s)?;
                rows.push(self.item(s, Some(&img), &s.rejected)?);
            }
        }
        if n.kl {
            // TRL's KTO: the KL completions are the batch's completions shifted by one.
            let b = samples.len();
            for (i, s) in samples.iter().enumerate() {
                let other = &samples[(i + 1) % b].chosen;
                rows.push(self.item(s, s.image.as_deref(), other)?);
            }
        }
        Ok(rows)
    }

    fn split(&self, all: &Tensor, b: usize) -> Result<Scored> {
        let n = self.needs;
        let mut at = 0;
        let mut take = |on: bool| -> Result<Option<Tensor>> {
            if !on {
                return Ok(None);
            }
            let t = all.narrow(0, at, b)?;
            at += b;
            Ok(Some(t))
        };
        Ok(Scored {
            chosen: take(true)?.expect("always"),
            rejected: take(n.rejected)?,
            chosen_corrupt: take(n.chosen_corrupt)?,
            rejected_noised: take(n.rejected_noised)?,
            kl: take(n.kl)?,
        })
    }

    /// Policy (adapters on, dropout when `training`) and reference (detached) log-probs.
    fn score(&mut self, samples: &[Sample], training: bool) -> Result<(Scored, Option<Scored>)> {
        let rows = self.rows(samples)?;
        let b = samples.len();
        if let Some(l) = &self.lora {
            l.set_training(training);
        }
        // Rows on one image with one prompt are packed (the prompt computed once), and a
        // frozen tower runs once per image for both passes. The cache lives for this step only.
        let mut tower = medpo_models::VisionCache::default();
        let mut logps = |m: &Model| -> Result<Tensor> {
            Ok(if self.tower_frozen { m.sequence_logprobs_cached(&rows, &mut tower)? } else { m.sequence_logprobs(&rows)? })
        };
        let pol = logps(&self.model)?;
        let reference = if self.needs.reference {
            let r = match (&self.lora, &self.frozen) {
                (Some(l), _) => {
                    l.set_training(false);
                    let r = l.reference(|| logps(&self.model));
                    l.set_training(true);
                    r?
                }
                (None, Some(f)) => logps(f)?,
                (None, None) => {
                    return Err(Error::Config {
                        key: "loss_type",
                        value: format!("{:?}", self.loss.loss_type),
                        reason: "needs a reference model, and this policy has none".into(),
                    })
                }
            };
            Some(self.split(&r.detach(), b)?)
        } else {
            None
        };
        Ok((self.split(&pol, b)?, reference))
    }

    fn batch(&mut self, samples: &[Sample], training: bool) -> Result<PreferenceLogps> {
        let (p, r) = self.score(samples, training)?;
        let dt = p.chosen.dtype();
        let dev = p.chosen.device().clone();
        let col = |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::new(v, &dev)?.to_dtype(dt)?) };
        let mut b = PreferenceLogps {
            chosen_tokens: Some(col(samples
                .iter()
                .map(|s| s.chosen.len() as f64)
                .collect())?),
            rejected_tokens: Some(col(samples
                .iter()
                .map(|s| s.rejected.len() as f64)
                .collect())?),
            weight: Some(col(samples.iter().map(|s| s.weight).collect())?),
            policy_chosen: Some(p.chosen),
            policy_rejected: p.rejected,
            policy_chosen_corrupt: p.chosen_corrupt,
            policy_rejected_noised: p.rejected_noised,
            policy_kl: p.kl,
            ..Default::default()
        };
        if let Some(r) = r {
            b.ref_chosen = Some(r.chosen);
            b.ref_rejected = r.rejected;
            b.ref_chosen_corrupt = r.chosen_corrupt;
            b.ref_rejected_noised = r.rejected_noised;
            b.ref_kl = r.kl;
        }
        Ok(b)
    }

    /// The loss and metrics on other records (held-out pairs), without dropout and without
    /// touching the training state. Over-long records are left out.
    pub fn evaluate(&mut self, records: &[PreferenceRecord]) -> Result<LossOutput> {
        let samples: Vec<Sample> = records
            .iter()
            .map(|r| self.sample(r))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|s| s.length <= self.max_length)
            .collect();
        if samples.is_empty() {
            return Err(Error::Config {
                key: "eval",
                value: "0 records".into(),
                reason: "nothing to evaluate".into(),
            });
        }
        let rng = self.lora.as_ref().map(Lora::rng_state);
        let b = self.batch(&samples, false)?;
        let out = compute_loss(&self.loss, &b);
        if let (Some(l), Some(s)) = (&self.lora, rng) {
            l.set_rng_state(&s)?;
            l.set_training(true);
        }
        let out = out?;
        Ok(LossOutput {
            loss: out.loss.detach(),
            ..out
        })
    }
}

fn lora_param_count(l: &Lora) -> usize {
    l.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
}

impl PolicyModel for VlmPolicy {
    fn loss(&mut self, indices: &[usize]) -> Result<LossOutput> {
        let samples: Vec<Sample> = indices.iter().map(|&i| self.samples[i].clone()).collect();
        let b = self.batch(&samples, true)?;
        compute_loss(&self.loss, &b)
    }

    fn keep(&self, index: usize) -> bool {
        let s = &self.samples[index];
        let keep = s.length <= self.max_length;
        if !keep {
            tracing::debug!(record = %s.label, tokens = s.length, max_length = self.max_length, "skipping an over-long sample");
        }
        keep
    }

    fn rng_state(&self) -> Option<RngState> {
        self.lora.as_ref().map(Lora::rng_state)
    }

    fn set_rng_state(&mut self, state: &RngState) -> Result<()> {
        match &self.lora {
            Some(l) => l.set_rng_state(state),
            None => Ok(()),
        }
    }
}

// ------------------------------------------------------------------------------ export

/// Files of a checkpoint folder that are not weights (config, tokenizer, processor).
fn is_weight_file(name: &str) -> bool {
    name.ends_with(".safetensors")
        || name == "model.safetensors.index.json"
        || name.ends_with(".bin")
}

/// Writes the base model with the adapters folded in (W + (α/r)·B·A) to `out`, in the base's
/// layout (same config, tokenizer and tensor names, one `model.safetensors`), so the server can
/// register it like any checkpoint. A vision tower in a separate folder stays there: a relative
/// `mm_vision_tower` is rewritten to its absolute path.
pub fn export_merged(model: &Model, lora: &Lora, out: &Path) -> Result<()> {
    export_with(&model.config.dir, model.device(), out, None, |tensors| lora.merge_into(tensors))
}

/// Writes a fully fine-tuned model to `out` in the base's layout: the base tensors with every
/// trained `Var` (named by checkpoint key) in place of its original. A vision tower that lives
/// in its own folder (LLaVA-Med's layout) and was trained goes to `out/vision_tower`, and the
/// exported config names that folder.
pub fn export_full(model: &Model, vars: &[(String, Var)], out: &Path) -> Result<()> {
    let replace = |tensors: &mut HashMap<String, Tensor>| -> Result<()> {
        for (k, v) in vars {
            if let Some(t) = tensors.get_mut(k) {
                *t = v.as_tensor().detach().to_dtype(t.dtype())?;
            }
        }
        Ok(())
    };
    let w = &model.config.weights;
    let tower_trained = w.vision_dir != model.config.dir && vars.iter().any(|(k, _)| k.starts_with(&w.vision));
    let tower = if tower_trained { Some(out.join("vision_tower")) } else { None };
    export_with(&model.config.dir, model.device(), out, tower.as_ref().map(|_| "vision_tower"), replace)?;
    if let Some(dir) = tower {
        export_with(&w.vision_dir, model.device(), &dir, None, replace)?;
    }
    Ok(())
}

/// Copies the checkpoint folder `base` to `out` with its tensors edited by `edit`;
/// `vision_tower`: the value `mm_vision_tower` takes in the copy's config (else a relative one
/// is made absolute, so the copy still finds its tower).
fn export_with(
    base: &Path,
    dev: &candle_core::Device,
    out: &Path,
    vision_tower: Option<&str>,
    edit: impl FnOnce(&mut HashMap<String, Tensor>) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let rd = std::fs::read_dir(base).map_err(|e| Error::io(base, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(base, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_file() || is_weight_file(&name) {
            continue;
        }
        let dst = out.join(&name);
        if name == "config.json" {
            let text = std::fs::read_to_string(e.path()).map_err(|x| Error::io(e.path(), x))?;
            let mut v: serde_json::Value =
                serde_json::from_str(&text).map_err(|x| Error::json(e.path(), x))?;
            let vt = v
                .get("mm_vision_tower")
                .and_then(|x| x.as_str())
                .map(str::to_string);
            if let Some(new) = vision_tower {
                v["mm_vision_tower"] = serde_json::Value::String(new.into());
            } else if let Some(vt) = vt {
                let rel = base.join(&vt);
                if !Path::new(&vt).is_absolute() && rel.is_dir() {
                    let abs = std::fs::canonicalize(&rel).map_err(|x| Error::io(&rel, x))?;
                    v["mm_vision_tower"] =
                        serde_json::Value::String(abs.to_string_lossy().into_owned());
                }
            }
            let text = serde_json::to_string_pretty(&v).map_err(|x| Error::json(&dst, x))?;
            std::fs::write(&dst, text + "\n").map_err(|x| Error::io(&dst, x))?;
        } else {
            std::fs::copy(e.path(), &dst).map_err(|x| Error::io(&dst, x))?;
        }
    }
    let files = medpo_models::loader::WeightFiles::open(base)?;
    let mut keys: Vec<String> = files.keys().cloned().collect();
    keys.sort();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for k in &keys {
        let (shape, dt) = files.info(k)?;
        let dtype = match dt.as_str() {
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            _ => DType::F32,
        };
        tensors.insert(k.clone(), files.load(k, &shape, dtype, dev)?);
    }
    edit(&mut tensors)?;
    let list: Vec<(String, Tensor)> = keys
        .into_iter()
        .map(|k| {
            let t = tensors.remove(&k).expect("loaded");
            (k, t)
        })
        .collect();
    crate::lora::write_safetensors(&out.join("model.safetensors"), &list)
}

// ------------------------------------------------------------------------------ targeted pairs

/// The model answering questions about images for [`crate::pairs::build_targeted_pairs`]
/// (greedy, the model's template), and its pooled vision features for the retrieval.
pub struct ModelAnswerer<'a> {
    pub model: &'a Model,
    /// Folder image paths are relative to.
    pub images: PathBuf,
    pub max_new_tokens: usize,
}

impl ModelAnswerer<'_> {
    fn load(&self, image: &str) -> Result<Tensor> {
        let img = medpo_models::preprocess::load_image(&self.images.join(image))?;
        Ok(self.model.preprocess_image(&img)?)
    }

    /// One pooled feature per image: the mean of the projected image tokens (N × hidden).
    pub fn features(&self, images: &[String]) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(images.len());
        let mut cache: HashMap<&str, Tensor> = HashMap::new();
        for im in images {
            if let Some(t) = cache.get(im.as_str()) {
                rows.push(t.clone());
                continue;
            }
            let px = self.load(im)?;
            let f = self
                .model
                .llava
                .encode_images(&px)?
                .mean(1)?
                .squeeze(0)?
                .to_dtype(DType::F32)?;
            cache.insert(im, f.clone());
            rows.push(f);
        }
        Ok(Tensor::stack(&rows, 0)?)
    }
}

impl AnswerOnImage for ModelAnswerer<'_> {
    fn answer(&mut self, question: &str, image: &str) -> Result<String> {
        let img = medpo_models::preprocess::load_image(&self.images.join(image))?;
        let input = self
            .model
            .input(question.replace(IMAGE_TOKEN, "").trim(), Some(&img))?;
        let params = medpo_models::GenerateParams {
            max_new_tokens: self.max_new_tokens,
            ..Default::default()
        };
        let out = self.model.generate(&[input], &params, &mut |_| {})?;
        Ok(out
            .into_iter()
            .next()
            .map(|g| g.text.trim().to_string())
            .unwrap_or_default())
    }
}
