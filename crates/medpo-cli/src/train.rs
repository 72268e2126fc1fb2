//! `medpo` subcommands of the train engine: `train` and `pairs …`.
//!
//! ```text
//! medpo pairs import    --input llava-med-IT_mDPO.json --out mdpo.jsonl [--images DIR] [--strict]
//! medpo pairs validate  --dataset mdpo.jsonl --images DIR
//! medpo pairs negatives --dataset dpo.jsonl --images DIR --kind crop|roi-noise|diffusion \
//!                       --seed 0 --out DIR [--out-dataset copo.jsonl] [--step 500 --schedule cosine]
//! medpo pairs build     --model DIR --vqa vqa.jsonl --images DIR --k 3 --mode mixed --out targeted.jsonl
//! medpo train --config train.toml [--resume] [--merge]
//! ```
//!
//! `medpo train` writes to `output_dir`: `metrics.jsonl` (one line per optimizer step, TRL's
//! keys), `checkpoint-<step>/` (every `save_steps` and at the end; resumable), and the final
//! model: `adapter/` (PEFT layout) plus, with `save_merged_model` or `--merge`, `merged/` (the
//! base's layout, servable); for full fine-tuning `model/` (the base's layout). Ctrl-C stops at
//! the next step boundary with a checkpoint; run again (or with `--resume`) to continue.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use medpo_models::LoadOptions;
use medpo_train::checkpoint;
use medpo_train::config::TrainConfig;
use medpo_train::data::{self, PreferenceRecord};
use medpo_train::metrics::{self, JsonlWriter, StepRecord, TrainCallback};
use medpo_train::negatives::{self, BetaSchedule, NegativeKind, NegativeSpec};
use medpo_train::pairs::{self, TargetedMode, VqaItem};
use medpo_train::policy::{self, ModelAnswerer, PolicySpec, Tuning, VlmPolicy};
use medpo_train::trainer::{Stop, Trainer};

/// Subcommands of the train engine.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Preference training from a train.toml (TRL field names: beta, loss_type, loss_weights, …).
    Train(TrainArgs),
    /// Preference pairs: import, validate, image negatives.
    #[command(subcommand)]
    Pairs(PairsCommand),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the latest checkpoint in `output_dir` (an error when there is none).
    #[arg(long)]
    pub resume: bool,
    /// LoRA: also write the merged model (as `save_merged_model = true`).
    #[arg(long)]
    pub merge: bool,
    /// Where hub-style vision tower names (openai/clip-vit-large-patch14-336) are found.
    #[arg(long, env = "MEDPO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
}

/// `medpo pairs …`
#[derive(Debug, Subcommand)]
pub enum PairsCommand {
    /// Convert the seed's LLaVA conversation records (`.json`) or TRL JSONL (`.jsonl`) to either
    /// format (chosen by the output extension), validating every record.
    Import(ImportArgs),
    /// Check every record: image files, empty turns, `<image>` tokens.
    Validate(ValidateArgs),
    /// Make one image negative per record (PNG) and point its `rejected_image` at it.
    Negatives(NegativesArgs),
    /// Targeted visual-misinterpretation pairs: retrieve similar images by the model's vision
    /// features and use its answer on them as the rejected response.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Checkpoint folder of the model whose features and answers are used.
    #[arg(long)]
    pub model: PathBuf,
    /// VQA items: JSONL (or a JSON array) of objects with `image`, `question`, `answer` and an
    /// optional `id`.
    #[arg(long)]
    pub vqa: PathBuf,
    /// Folder the image paths are relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// Similar images per item.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    /// mixed, dpo-only or copo-only.
    #[arg(long, default_value = "mixed")]
    pub mode: String,
    /// Output dataset (`.jsonl` TRL JSONL, `.json` the seed's format).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long, env = "MEDPO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Input dataset: the seed's JSON (`--seed-json` is an alias) or TRL JSONL.
    #[arg(long, alias = "seed-json")]
    pub input: PathBuf,
    /// Output dataset: `.jsonl` for TRL JSONL, `.json` for the seed's format.
    #[arg(long)]
    pub out: PathBuf,
    /// Folder image paths are relative to; when given, missing images are errors.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Refuse to write when any record has an error (default: write the valid records only).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long)]
    pub images: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NegativesArgs {
    /// Input dataset (seed JSON or TRL JSONL).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Folder the dataset's image paths are relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// crop (mDPO, ≤ 20% of the area kept), roi-noise (CoPO/MMedPO, noise inside the record's
    /// `roi`, else the central box), diffusion (HA-DPO/POVID whole-image forward noise).
    #[arg(long)]
    pub kind: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for the PNGs (written to `<out>/<kind>/<id>.png`).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the updated dataset (default: `<out>/<dataset name>` with the same extension).
    #[arg(long)]
    pub out_dataset: Option<PathBuf>,
    /// Diffusion step t (roi-noise and diffusion).
    #[arg(long, default_value_t = 500)]
    pub step: usize,
    /// Diffusion steps T.
    #[arg(long, default_value_t = 1000)]
    pub num_steps: usize,
    /// linear or cosine.
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Largest kept area fraction for crop.
    #[arg(long, default_value_t = 0.2)]
    pub max_area: f64,
}

/// Runs one train subcommand.
pub fn run(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Train(a) => train(&a),
        TrainCommand::Pairs(PairsCommand::Import(a)) => import(&a),
        TrainCommand::Pairs(PairsCommand::Validate(a)) => validate(&a),
        TrainCommand::Pairs(PairsCommand::Negatives(a)) => make_negatives(&a),
        TrainCommand::Pairs(PairsCommand::Build(a)) => build_pairs(&a),
    }
}

/// Set by the Ctrl-C handler; the trainer stops at the next step boundary.
static CANCEL: AtomicBool = AtomicBool::new(false);

fn train(a: &TrainArgs) -> anyhow::Result<()> {
    let cfg = TrainConfig::load(&a.config)?;
    if ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: stopping after the current step (a checkpoint will be written)");
    })
    .is_err()
    {
        tracing::warn!("could not install the Ctrl-C handler");
    }
    let opts = TrainOptions {
        resume: a.resume,
        merge: a.merge,
        models_dir: a.models_dir.clone(),
        progress: true,
        stop_after: None,
        device: None,
    };
    let out = run_training(&cfg, &opts, &CANCEL)?;
    match out.stop {
        Stop::Cancelled => println!(
            "cancelled at step {}/{}; checkpoint in {} (run again to resume)",
            out.global_step,
            out.total_steps,
            cfg.output_dir.display()
        ),
        _ => {
            println!(
                "finished {} steps ({} over-long samples skipped)",
                out.global_step, out.skipped
            );
            for p in &out.exported {
                println!("  {}", p.display());
            }
        }
    }
    Ok(())
}

/// How [`run_training`] runs (the parts that are not in train.toml).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Require a checkpoint and continue from it.
    pub resume: bool,
    /// Also write the merged model (LoRA).
    pub merge: bool,
    pub models_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop after this many steps without a final save (simulates a killed job, for tests).
    pub stop_after: Option<u64>,
    /// `cpu` (the default) or `cuda[:N]`.
    pub device: Option<String>,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub stop: Stop,
    pub global_step: u64,
    pub total_steps: u64,
    pub skipped: u64,
    /// The final model folders written (adapter, merged, or full model).
    pub exported: Vec<PathBuf>,
    /// The checkpoint resumed from, if any.
    pub resumed_from: Option<PathBuf>,
}

/// Identifies a run so that a resume with a different config or dataset is refused.
fn run_id(cfg: &TrainConfig, records: usize) -> String {
    let mut c = cfg.clone();
    c.resume = false;
    c.save_merged_model = false;
    let text = serde_json::to_string(&c).unwrap_or_default();
    // FNV-1a: stable across platforms and versions (unlike `DefaultHasher`).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes().chain(records.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Progress bar callback: steps, loss, margin, ETA.
struct Progress(ProgressBar);

impl TrainCallback for Progress {
    fn on_step(&mut self, r: &StepRecord) -> medpo_train::Result<()> {
        let get = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
        self.0.set_position(r.step);
        self.0.set_message(format!(
            "loss {:.4}  margin {:+.4}  acc {:.2}",
            get(metrics::LOSS),
            get(metrics::REWARDS_MARGINS),
            get(metrics::REWARDS_ACCURACIES)
        ));
        Ok(())
    }
    fn on_checkpoint(&mut self, step: u64, dir: &Path) -> medpo_train::Result<()> {
        self.0
            .println(format!("step {step}: checkpoint {}", dir.display()));
        Ok(())
    }
}

/// Passes every event to each of the caller's callbacks.
struct Fanout<'a, 'b>(&'a mut [&'b mut dyn TrainCallback]);

impl TrainCallback for Fanout<'_, '_> {
    fn on_step(&mut self, r: &StepRecord) -> medpo_train::Result<()> {
        self.0.iter_mut().try_for_each(|c| c.on_step(r))
    }
    fn on_checkpoint(&mut self, step: u64, dir: &Path) -> medpo_train::Result<()> {
        self.0.iter_mut().try_for_each(|c| c.on_checkpoint(step, dir))
    }
}

/// Loads the dataset and the model, trains (resuming when asked or when `resume = true` and a
/// checkpoint exists), and exports the final model. `cancel` stops at a step boundary.
pub fn run_training(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    cancel: &AtomicBool,
) -> anyhow::Result<TrainOutcome> {
    run_training_with(cfg, opts, cancel, &mut [])
}

/// [`run_training`] with more step callbacks (the server's job queue records each step in the
/// database for the live charts).
pub fn run_training_with(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    cancel: &AtomicBool,
    extra: &mut [&mut dyn TrainCallback],
) -> anyhow::Result<TrainOutcome> {
    let records = data::load(&cfg.dataset_path)?;
    let total = records.len();
    let (records, bad) = checked(records, cfg.image_folder.as_deref());
    if records.is_empty() {
        bail!(
            "{}: none of the {total} records is usable (see above)",
            cfg.dataset_path.display()
        );
    }
    if bad > 0 {
        tracing::warn!(bad, total, "records with errors are left out");
    }
    let out_dir = &cfg.output_dir;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let latest = checkpoint::latest(out_dir);
    if opts.resume && latest.is_none() {
        bail!("--resume: no checkpoint in {}", out_dir.display());
    }
    let resume_from = if opts.resume || cfg.resume {
        latest.clone()
    } else {
        None
    };
    if resume_from.is_none() {
        if let Some(l) = &latest {
            bail!(
                "{} already holds {}; set resume = true (or pass --resume) to continue it, or choose another output_dir",
                out_dir.display(),
                l.display()
            );
        }
    }
    let tuning = if cfg.use_peft {
        Tuning::Lora(cfg.lora()?)
    } else {
        Tuning::Full {
            train_vision_tower: cfg.unfreeze_mm_vision_tower,
        }
    };
    let device = match opts.device.as_deref() {
        Some(d) => medpo_models::parse_device(d)?,
        None => candle_core::Device::Cpu,
    };
    let load = LoadOptions {
        models_dir: opts.models_dir.clone(),
        device,
        ..Default::default()
    };
    let spec = PolicySpec {
        loss: cfg.loss.clone(),
        max_length: cfg.max_length,
        image_folder: cfg.image_folder.clone(),
        seed: cfg.args.seed,
    };
    let mut model = VlmPolicy::load(&cfg.model_name_or_path, load, tuning, &records, spec)
        .with_context(|| format!("loading {}", cfg.model_name_or_path.display()))?;
    if model.over_long() > 0 {
        tracing::warn!(
            records = model.over_long(),
            "records longer than max_length will be skipped (never truncated)"
        );
    }
    let id = run_id(cfg, records.len());
    let mut trainer = Trainer::new(
        cfg.args.clone(),
        model.trainable_vars(),
        records.len(),
        Some(out_dir.clone()),
        &id,
    )?;
    if let Some(ck) = &resume_from {
        trainer.resume_from(ck, &mut model)?;
        tracing::info!(checkpoint = %ck.display(), step = trainer.global_step(), "resumed");
    }
    let log = out_dir.join("metrics.jsonl");
    if resume_from.is_none() && log.exists() {
        // A fresh run: the lines of an earlier, abandoned run would be misleading.
        std::fs::remove_file(&log).with_context(|| format!("removing {}", log.display()))?;
    }
    let mut writer = JsonlWriter::append(&log)?;
    let bar = if opts.progress {
        ProgressBar::new(trainer.total_steps())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.global_step());
    bar.reset_eta();
    let mut progress = Progress(bar.clone());
    let mut fanout = Fanout(extra);
    let stop = trainer.run(
        &mut model,
        &mut [&mut writer, &mut progress, &mut fanout],
        cancel,
        opts.stop_after,
    )?;
    bar.finish_and_clear();
    let mut exported = Vec::new();
    if stop == Stop::Finished {
        match model.lora() {
            Some(lora) => {
                let dir = out_dir.join("adapter");
                lora.save_peft(&dir)?;
                exported.push(dir);
                if cfg.save_merged_model || opts.merge {
                    let dir = out_dir.join("merged");
                    policy::export_merged(model.model(), lora, &dir)?;
                    exported.push(dir);
                }
            }
            None => {
                let dir = out_dir.join("model");
                policy::export_full(model.model(), &model.trainable_vars(), &dir)?;
                exported.push(dir);
            }
        }
    }
    Ok(TrainOutcome {
        stop,
        global_step: trainer.global_step(),
        total_steps: trainer.total_steps(),
        skipped: trainer.skipped_samples(),
        exported,
        resumed_from: resume_from,
    })
}

/// Reads VQA items: JSONL, or a JSON array, of `{id?, image, question, answer}`.
pub fn load_vqa(path: &Path) -> anyhow::Result<Vec<VqaItem>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<serde_json::Value> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}, line {}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let field = |k: &str| -> anyhow::Result<String> {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
                    .with_context(|| format!("{}, item {i}: no string `{k}`", path.display()))
            };
            let id = match v.get("id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(x) if !x.is_null() => x.to_string(),
                _ => i.to_string(),
            };
            Ok(VqaItem {
                id,
                image: field("image")?,
                question: field("question")?,
                answer: field("answer")?,
            })
        })
        .collect()
}

fn build_pairs(a: &BuildArgs) -> anyhow::Result<()> {
    let mode: TargetedMode = a.mode.parse()?;
    let items = load_vqa(&a.vqa)?;
    let opts = LoadOptions {
        device: medpo_models::parse_device(&a.device)?,
        models_dir: a.models_dir.clone(),
        ..Default::default()
    };
    let model = medpo_models::Model::load(&a.model, &opts)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let n = build_targeted(
        &model,
        &items,
        &a.images,
        a.k,
        mode,
        a.max_new_tokens,
        &a.out,
    )?;
    println!(
        "{}: {n} targeted pairs ({mode}) from {} items",
        a.out.display(),
        items.len()
    );
    Ok(())
}

/// Builds the targeted pairs with `model` and writes them to `out`; returns how many.
pub fn build_targeted(
    model: &medpo_models::Model,
    items: &[VqaItem],
    images: &Path,
    k: usize,
    mode: TargetedMode,
    max_new_tokens: usize,
    out: &Path,
) -> anyhow::Result<usize> {
    let mut answerer = ModelAnswerer {
        model,
        images: images.to_path_buf(),
        max_new_tokens,
    };
    let paths: Vec<String> = items.iter().map(|i| i.image.clone()).collect();
    let features = answerer.features(&paths)?;
    let bar = ProgressBar::new_spinner();
    bar.set_message("answering on similar images");
    let rep = pairs::build_targeted_pairs(items, &features, k, mode, &mut answerer)?;
    bar.finish_and_clear();
    if rep.same_answer > 0 {
        tracing::info!(
            skipped = rep.same_answer,
            "neighbours where the model gave the gold answer (not negatives)"
        );
    }
    data::save(out, &rep.records).with_context(|| format!("writing {}", out.display()))?;
    Ok(rep.records.len())
}

/// Validates, logs each issue, and returns (records without errors, error count).
fn checked(
    mut records: Vec<PreferenceRecord>,
    images: Option<&Path>,
) -> (Vec<PreferenceRecord>, usize) {
    let rep = data::validate(&mut records, images);
    for w in &rep.warnings {
        tracing::warn!("{w}");
    }
    for e in &rep.errors {
        tracing::error!("{e}");
    }
    let bad: std::collections::HashSet<_> = rep.errors.iter().map(|e| e.source.index).collect();
    let n = bad.len();
    (
        records
            .into_iter()
            .filter(|r| !bad.contains(&r.source.index))
            .collect(),
        n,
    )
}

fn import(a: &ImportArgs) -> anyhow::Result<()> {
    let records = data::load(&a.input)?;
    let total = records.len();
    let (ok, bad) = checked(records, a.images.as_deref());
    if bad > 0 && a.strict {
        bail!(
            "{}: {bad} of {total} records have errors (see above); nothing written",
            a.input.display()
        );
    }
    data::save(&a.out, &ok).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{}: wrote {} of {total} records ({bad} with errors skipped)",
        a.out.display(),
        ok.len()
    );
    Ok(())
}

fn validate(a: &ValidateArgs) -> anyhow::Result<()> {
    let records = data::load(&a.dataset)?;
    let total = records.len();
    let (_, bad) = checked(records, a.images.as_deref());
    if bad > 0 {
        bail!(
            "{}: {bad} of {total} records have errors",
            a.dataset.display()
        );
    }
    println!("{}: {total} records ok", a.dataset.display());
    Ok(())
}

fn make_negatives(a: &NegativesArgs) -> anyhow::Result<()> {
    let kind: NegativeKind = a.kind.parse()?;
    let schedule: BetaSchedule = a.schedule.parse()?;
    let mut spec = NegativeSpec::new(kind, a.seed);
    spec.crop.max_area = a.max_area;
    spec.crop.min_area = spec.crop.min_area.min(a.max_area);
    spec.diffusion.step = a.step;
    spec.diffusion.num_steps = a.num_steps;
    spec.diffusion.schedule = schedule;
    let mut records = data::load(&a.dataset)?;
    let rep = negatives::build_negatives(&mut records, &a.images, &a.out, &spec)?;
    if kind == NegativeKind::RoiNoise && rep.roi_fallbacks > 0 {
        tracing::warn!(
            records = rep.roi_fallbacks,
            "no `roi` in these records: noise went into the central box (the documented fallback)"
        );
    }
    let out_dataset = match &a.out_dataset {
        Some(p) => p.clone(),
        None => a.out.join(
            a.dataset
                .file_name()
                .context("dataset path has no file name")?,
        ),
    };
    data::save(&out_dataset, &records)?;
    println!(
        "{} negatives ({kind}, seed {}) in {}; dataset {}",
        rep.written.len(),
        a.seed,
        a.out.join(kind.name()).display(),
        out_dataset.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        let shared = match std::env::var_os("MEDPO_SHARED") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
        };
        shared.join("fixtures/v1")
    }

    /// A small DPO dataset on the fixture image (TRL JSONL).
    fn dataset(dir: &Path) -> PathBuf {
        let mut records = Vec::new();
        for (i, organ) in ["left lung", "right lung", "liver", "heart"]
            .iter()
            .enumerate()
        {
            for (j, f) in ["nodule", "mass"].iter().enumerate() {
                records.push(PreferenceRecord {
                    id: Some(format!("{i}-{j}")),
                    prompt: format!("<image>\nIs there a {f} in the {organ}?"),
                    chosen: format!("Yes, there is a {f} in the {organ}."),
                    rejected: format!("No, the {organ} is normal."),
                    image: Some("scan.png".into()),
                    rejected_image: None,
                    weight: None,
                    roi: None,
                    source: Default::default(),
                });
            }
        }
        let p = dir.join("pairs.jsonl");
        data::save(&p, &records).unwrap();
        p
    }

    fn config(dir: &Path, extra: &str) -> TrainConfig {
        let text = format!(
            r#"
model_name_or_path = "{model}"
dataset_path = "{data}"
image_folder = "{images}"
output_dir = "{out}"
loss_type = "sigmoid"
beta = 0.1
learning_rate = 1e-2
warmup_ratio = 0.0
per_device_train_batch_size = 2
gradient_accumulation_steps = 2
num_train_epochs = 2
save_steps = 2
use_peft = true
lora_r = 4
lora_alpha = 8
lora_dropout = 0.1
lora_target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
{extra}
"#,
            model = fixtures().join("llava-med-tiny").display(),
            data = dataset(dir).display(),
            images = fixtures().display(),
            out = dir.join("run").display(),
        );
        let p = dir.join("train.toml");
        std::fs::write(&p, text).unwrap();
        TrainConfig::load(&p).unwrap()
    }

    fn adapter_bytes(run: &Path) -> Vec<u8> {
        std::fs::read(run.join("adapter").join(medpo_train::lora::ADAPTER_WEIGHTS)).unwrap()
    }

    /// `medpo train` end to end on llava-med-tiny: metrics JSONL, checkpoints, the PEFT adapter
    /// and a merged model the engine loads; a killed run resumed with `--resume` ends with the
    /// same adapter bytes; Ctrl-C (the cancel flag) stops at a step boundary with a checkpoint.
    #[test]
    fn train_runs_exports_resumes_and_cancels() {
        let a = tempfile::tempdir().unwrap();
        let cfg = config(a.path(), "save_merged_model = true");
        let never = AtomicBool::new(false);
        let out = run_training(&cfg, &TrainOptions::default(), &never).unwrap();
        assert_eq!(
            (out.stop, out.global_step, out.total_steps),
            (Stop::Finished, 4, 4)
        );
        let run = a.path().join("run");
        let log = JsonlWriter::read(&run.join("metrics.jsonl")).unwrap();
        assert_eq!(log.len(), 4);
        assert!(log[0].metrics.contains_key(metrics::REWARDS_MARGINS));
        assert!(
            checkpoint::checkpoint_dir(&run, 2).is_dir()
                && checkpoint::checkpoint_dir(&run, 4).is_dir()
        );
        assert!(run
            .join("adapter")
            .join(medpo_train::lora::ADAPTER_CONFIG)
            .is_file());
        medpo_models::Model::load(&run.join("merged"), &LoadOptions::default()).unwrap();
        // A second run into the same folder resumes (resume = true by default) and has nothing left to do.
        let again = run_training(&cfg, &TrainOptions::default(), &never).unwrap();
        assert_eq!(
            again.resumed_from,
            Some(checkpoint::checkpoint_dir(&run, 4))
        );

        // Killed after 3 steps (last checkpoint at 2), then `--resume`.
        let b = tempfile::tempdir().unwrap();
        let cfg_b = config(b.path(), "");
        let killed = TrainOptions {
            stop_after: Some(3),
            ..Default::default()
        };
        assert_eq!(
            run_training(&cfg_b, &killed, &never).unwrap().stop,
            Stop::Interrupted
        );
        let resumed = TrainOptions {
            resume: true,
            ..Default::default()
        };
        let out = run_training(&cfg_b, &resumed, &never).unwrap();
        assert_eq!(
            out.resumed_from,
            Some(checkpoint::checkpoint_dir(&b.path().join("run"), 2))
        );
        assert_eq!(out.stop, Stop::Finished);
        assert_eq!(
            adapter_bytes(&run),
            adapter_bytes(&b.path().join("run")),
            "resume gives the same weights"
        );

        // Cancelled: a checkpoint at the boundary, nothing exported; --resume without one fails.
        let c = tempfile::tempdir().unwrap();
        let mut cfg_c = config(c.path(), "");
        cfg_c.resume = false;
        let err = run_training(&cfg_c, &resumed, &never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no checkpoint"), "{err}");
        let out = run_training(&cfg_c, &TrainOptions::default(), &AtomicBool::new(true)).unwrap();
        assert_eq!((out.stop, out.global_step), (Stop::Cancelled, 0));
        assert!(out.exported.is_empty() && checkpoint::latest(&c.path().join("run")).is_some());
        let err = run_training(&cfg_c, &TrainOptions::default(), &never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("resume"), "{err}");
    }

    /// `medpo pairs build`: VQA items in, targeted pairs (model features and answers) out.
    #[test]
    fn pairs_build_writes_targeted_pairs() {
        let d = tempfile::tempdir().unwrap();
        let img = image::open(fixtures().join("scan.png")).unwrap().to_rgb8();
        img.save(d.path().join("a.png")).unwrap();
        image::imageops::flip_horizontal(&img)
            .save(d.path().join("b.png"))
            .unwrap();
        let vqa = d.path().join("vqa.jsonl");
        std::fs::write(
            &vqa,
            "{\"id\": 1, \"image\": \"a.png\", \"question\": \"Is there a nodule?\", \"answer\": \"Yes.\"}\n\
             {\"image\": \"b.png\", \"question\": \"Is there a mass?\", \"answer\": \"No.\"}\n",
        )
        .unwrap();
        let items = load_vqa(&vqa).unwrap();
        assert_eq!((items[0].id.as_str(), items[1].id.as_str()), ("1", "1"));
        let model =
            medpo_models::Model::load(&fixtures().join("llava-med-tiny"), &LoadOptions::default())
                .unwrap();
        let out = d.path().join("targeted.jsonl");
        let n =
            build_targeted(&model, &items, d.path(), 1, TargetedMode::CopoOnly, 4, &out).unwrap();
        assert_eq!(n, 2);
        let recs = data::load(&out).unwrap();
        assert_eq!(recs[0].rejected_image.as_deref(), Some("b.png"));
        let err = load_vqa(&d.path().join("missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
    }
}
