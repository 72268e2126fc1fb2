//! `medpo` subcommands of the train engine: `train` and `pairs …`.
//!
//! ```text
//! medpo pairs import    --input llava-med-IT_mDPO.json --out mdpo.jsonl [--images DIR] [--strict]
//! medpo pairs validate  --dataset mdpo.jsonl --images DIR
//! medpo pairs negatives --dataset dpo.jsonl --images DIR --kind crop|roi-noise|diffusion \
//!                       --seed 0 --out DIR [--out-dataset copo.jsonl] [--step 500 --schedule cosine]
//! medpo train --config train.toml
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use medpo_train::config::TrainConfig;
use medpo_train::data::{self, PreferenceRecord};
use medpo_train::negatives::{self, BetaSchedule, NegativeKind, NegativeSpec};

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
    }
}

fn train(a: &TrainArgs) -> anyhow::Result<()> {
    let cfg = TrainConfig::load(&a.config)?;
    tracing::info!(loss_type = ?cfg.loss.loss_type, beta = cfg.loss.beta, lr = cfg.args.learning_rate, "config ok");
    bail!(
        "{}: the configuration is valid, but training needs the model engine's differentiable forward, \
         which medpo-train is not wired to yet (objectives, data, LoRA, optimizer, schedule and checkpoints are ready)",
        a.config.display()
    )
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
