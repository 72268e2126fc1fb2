//! `medpo zoo build`: the study's whole pipeline on phantom scans, from nothing to a table.
//!
//! 1. **Data**: a phantom benchmark (`medpo phantom generate`) in `<work>/phantom`.
//! 2. **Tokenizer**: a BPE trained on the benchmark's texts with the `tokenizers` crate.
//! 3. **SFT**: a randomly initialised model of LLaVA-Med v1.5's family (CLIP-style tower,
//!    `mlp2x_gelu` projector, Mistral-style decoder, `llava_mistral` layout) trained by SFT on
//!    the train split's questions and reports, every weight including the tower, with the
//!    training engine (`loss_type = "sft"`).
//! 4. **Preference data**: the phantom's clinically meaningful edits (laterality swap, wrong
//!    organ, hallucinated or missed finding, flipped answer) plus the SFT model's own mistakes
//!    on train questions; image negatives by the training engine (crop for mDPO, ROI noise from
//!    the phantom's boxes for CoPO/MMedPO); targeted visual-misinterpretation pairs.
//! 5. **Variants**: LoRA runs from the SFT model, one per objective, with the same budget.
//! 6. **Evaluation**: every model on the test split (and the SFT model with blanked images),
//!    paired tests against SFT, written as a markdown table.
//!
//! The finished models go to `<out>` (default `zoo/`), each a folder the server registers,
//! with a model card (`README.md`) and `medpo.json` (variant, parent). Everything is a
//! function of the seed.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::DType;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use medpo_eval::bench::VqaBenchmark;
use medpo_eval::runner::{run_eval, RunConfig};
use medpo_eval::summary::RunSummary;
use medpo_train::config::TrainConfig;
use medpo_train::data::{self, PreferenceRecord, Source};
use medpo_train::lora::TargetModule;
use medpo_train::negatives::{build_negatives, NegativeKind, NegativeSpec};
use medpo_train::objective::Objective;
use medpo_train::pairs::{build_targeted_pairs, TargetedMode};
use medpo_phantom::text::REPORT_PROMPT;
use medpo_types::ModelLineage;
use serde::{Deserialize, Serialize};

pub mod init;
mod table;
pub mod tokenizer;

use init::Dims;

/// `medpo zoo …`
#[derive(Debug, Subcommand)]
pub enum ZooCommand {
    /// Regenerate the phantom data, train the SFT model from scratch and every preference
    /// variant, evaluate them all and write the benchmark table. The same seed gives the same
    /// models and numbers.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Where the finished models go (one folder each, plus the shared vision tower). Run from
    /// the repository root, the defaults rewrite the committed zoo and table.
    #[arg(long, default_value = "zoo")]
    pub out: PathBuf,
    /// Working folder: data, training runs, answers. A training run finished by an interrupted
    /// build with the same seed and sizes is reused, not redone.
    #[arg(long, default_value = "target/zoo-work")]
    pub work: PathBuf,
    /// Seed of everything: data, tokenizer, initial weights, shuffling, LoRA.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A reduced build for CI: few scans, a smaller model, a few steps per run.
    #[arg(long)]
    pub quick: bool,
    /// Sizes from a JSON file instead of the built-in plan (same keys as the `plan` written
    /// to `<work>/zoo-build.json`), for experiments; the committed zoo uses the built-in one.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Stop after the SFT model and its blanked-image control are evaluated (prints both).
    #[arg(long)]
    pub sft_only: bool,
    /// The benchmark table (markdown). Default: `docs/phantom-benchmark.md`, or
    /// `<work>/phantom-benchmark.md` with `--quick`.
    #[arg(long)]
    pub table: Option<PathBuf>,
}

/// The sizes of one build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub scans: usize,
    pub dims: Dims,
    pub vocab: usize,
    pub sft_steps: u64,
    pub sft_batch: usize,
    pub sft_lr: f64,
    /// Train questions the SFT model answers to find its own mistakes.
    pub mistake_items: usize,
    /// Preference pairs per variant dataset.
    pub pairs: usize,
    pub variant_steps: u64,
    pub variant_batch: usize,
    pub variant_lr: f64,
    /// Test questions evaluated (None: all).
    pub test_limit: Option<usize>,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            scans: 4000,
            dims: Dims {
                image_size: 96,
                patch_size: 24,
                vision_hidden: 96,
                vision_intermediate: 384,
                vision_layers: 3,
                vision_heads: 4,
                hidden: 128,
                intermediate: 384,
                layers: 3,
                heads: 4,
                kv_heads: 2,
            },
            vocab: 384,
            sft_steps: 4000,
            sft_batch: 32,
            sft_lr: 5e-4,
            mistake_items: 2000,
            pairs: 1600,
            variant_steps: 300,
            variant_batch: 8,
            variant_lr: 5e-4,
            test_limit: None,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            scans: 40,
            dims: Dims {
                image_size: 48,
                patch_size: 12,
                vision_hidden: 32,
                vision_intermediate: 64,
                vision_layers: 2,
                vision_heads: 2,
                hidden: 32,
                intermediate: 64,
                layers: 1,
                heads: 2,
                kv_heads: 1,
            },
            vocab: 256,
            sft_steps: 6,
            sft_batch: 8,
            sft_lr: 2e-3,
            mistake_items: 24,
            pairs: 24,
            variant_steps: 2,
            variant_batch: 4,
            variant_lr: 5e-4,
            test_limit: Some(40),
        }
    }
}

/// One preference variant of the table.
struct Variant {
    /// Folder suffix: `phantom-<name>`.
    name: &'static str,
    /// As the study names it.
    label: &'static str,
    loss_type: &'static [Objective],
    data: Data,
}

/// Which preference dataset a variant trains on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Edits and the SFT model's mistakes.
    Pairs,
    /// The same, each with an ROI-noise image negative.
    RoiNoise,
    /// The same, each with a crop image negative.
    Crop,
    /// Targeted visual-misinterpretation pairs (mixed).
    Targeted,
}

const VARIANTS: &[Variant] = &[
    Variant { name: "dpo", label: "DPO", loss_type: &[Objective::Sigmoid], data: Data::Pairs },
    Variant { name: "dpo-nll", label: "DPO+NLL", loss_type: &[Objective::Sigmoid, Objective::Sft], data: Data::Pairs },
    Variant { name: "copo", label: "CoPO (DPO + conditional)", loss_type: &[Objective::Sigmoid, Objective::Copo], data: Data::RoiNoise },
    Variant { name: "mdpo", label: "mDPO", loss_type: &[Objective::Mdpo], data: Data::Crop },
    Variant { name: "mmedpo", label: "MMedPO", loss_type: &[Objective::Mmedpo], data: Data::RoiNoise },
    Variant { name: "ipo", label: "IPO", loss_type: &[Objective::Ipo], data: Data::Pairs },
    Variant { name: "simpo", label: "SimPO", loss_type: &[Objective::Simpo], data: Data::Pairs },
    Variant { name: "orpo", label: "ORPO", loss_type: &[Objective::Orpo], data: Data::Pairs },
    Variant { name: "kto", label: "KTO", loss_type: &[Objective::Kto], data: Data::Pairs },
    Variant { name: "targeted", label: "Targeted (DPO + CoPO, mixed)", loss_type: &[Objective::Sigmoid, Objective::Copo], data: Data::Targeted },
];

pub fn run(cmd: ZooCommand) -> anyhow::Result<()> {
    match cmd {
        ZooCommand::Build(a) => build(&a),
    }
}

pub(crate) fn write_json(path: &Path, v: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn step(n: usize, what: &str) {
    eprintln!("==> [{n}/7] {what}");
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}}) {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// The folder name of a zoo model.
fn folder(name: &str) -> String {
    format!("phantom-{name}")
}

/// The folders of the zoo's models: the SFT model, then each variant.
pub fn model_folders() -> Vec<String> {
    std::iter::once("sft").chain(VARIANTS.iter().map(|v| v.name)).map(folder).collect()
}

const TOWER: &str = "phantom-clip";

pub fn build(a: &BuildArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let plan = match &a.plan {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("{}: not a zoo plan", p.display()))?,
        None if a.quick => Plan::quick(),
        None => Plan::full(),
    };
    let work = &a.work;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    // Finished training runs in `work` are reused only when they come from this very build
    // (same seed, plan and versions); anything else is cleared first.
    let stamp = serde_json::json!({
        "seed": a.seed,
        "plan": &plan,
        "generator": medpo_phantom::GENERATOR_VERSION,
        "medpo": env!("CARGO_PKG_VERSION"),
    });
    let stamp_path = work.join("zoo-build.json");
    let same = std::fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v == stamp);
    if !same && work.join("runs").exists() {
        std::fs::remove_dir_all(work.join("runs")).with_context(|| format!("clearing {}/runs", work.display()))?;
    }
    write_json(&stamp_path, &stamp)?;
    let table_path = a.table.clone().unwrap_or_else(|| {
        if a.quick {
            work.join("phantom-benchmark.md")
        } else {
            PathBuf::from("docs/phantom-benchmark.md")
        }
    });

    // 1. Data.
    step(1, &format!("phantom benchmark: {} scans, seed {}", plan.scans, a.seed));
    let phantom = work.join("phantom");
    let cfg = medpo_phantom::Config { seed: a.seed, scans: plan.scans, ..Default::default() };
    let b = bar(plan.scans as u64, "scans");
    let manifest = medpo_phantom::write::write_benchmark(&phantom, &cfg, &mut |done, _| b.set_position(done as u64))?;
    b.finish_and_clear();
    let images = phantom.join("images");

    // 2. Tokenizer and the initial weights.
    step(2, "tokenizer and initial weights");
    let init_dir = work.join("init");
    let (init_clip, init_model) = (init_dir.join("clip"), init_dir.join("model"));
    std::fs::create_dir_all(&init_model)?;
    let corpus = corpus(&phantom)?;
    let vocab = tokenizer::train(&corpus, plan.vocab, &init_model)?;
    init::write_random(&plan.dims, vocab, a.seed, &init_clip, &init_model, "../clip")?;

    // 3. SFT, every weight.
    step(3, &format!("SFT from scratch: {} steps of {}", plan.sft_steps, plan.sft_batch));
    let data_dir = work.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let sft_data = data_dir.join("sft.jsonl");
    data::save(&sft_data, &sft_records(&phantom)?)?;
    let mut c = TrainConfig {
        model_name_or_path: init_model.clone(),
        dataset_path: sft_data,
        image_folder: Some(images.clone()),
        output_dir: work.join("runs/sft"),
        use_peft: false,
        unfreeze_mm_vision_tower: true,
        ..Default::default()
    };
    c.loss.loss_type = vec![Objective::Sft];
    schedule(&mut c, plan.sft_batch, plan.sft_steps, plan.sft_lr, 0.05, a.seed);
    let mut reused = 0;
    let sft_run = train(&c, &mut reused)?;
    let out = &a.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    install(&sft_run.join("vision_tower"), &out.join(TOWER), None)?;
    let sft_dir = out.join(folder("sft"));
    install(&sft_run, &sft_dir, Some(&format!("../{TOWER}")))?;

    if a.sft_only {
        let (bench, eval_dir) = test_split(&phantom, work)?;
        for (id, blank) in [("phantom-sft", false), ("phantom-sft-blank", true)] {
            let s = evaluate(&sft_dir, id, &bench, &images, &eval_dir, blank, &plan)?;
            let m = |k: &str| s.metric(k).map_or(f64::NAN, |m| 100.0 * m.value);
            println!("{id}: closed accuracy {:.1}%, open recall {:.1}%", m("closed/accuracy"), m("open/recall"));
        }
        return Ok(());
    }

    // 4. Preference data from the SFT model.
    step(4, "preference pairs, image negatives and targeted pairs");
    let (pairs, sft_model) = preference_pairs(&phantom, load(&sft_dir)?, &images, &plan, a.seed)?;
    let datasets = negatives_and_targeted(&phantom, &sft_model, &images, &data_dir, pairs, &plan, a.seed)?;
    drop(sft_model);

    // 5. Variants.
    step(5, &format!("{} preference variants: LoRA r 8, {} steps of {} each", VARIANTS.len(), plan.variant_steps, plan.variant_batch));
    for v in VARIANTS {
        let path = datasets.of(v.data);
        let mut c = TrainConfig {
            model_name_or_path: sft_dir.clone(),
            dataset_path: path.to_path_buf(),
            image_folder: Some(images.clone()),
            output_dir: work.join(format!("runs/{}", v.name)),
            use_peft: true,
            save_merged_model: true,
            lora_r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            lora_target_modules: vec![
                TargetModule::Q,
                TargetModule::K,
                TargetModule::V,
                TargetModule::O,
                TargetModule::Gate,
                TargetModule::Up,
                TargetModule::Down,
            ],
            ..Default::default()
        };
        c.loss.loss_type = v.loss_type.to_vec();
        c.loss.beta = 0.1;
        schedule(&mut c, plan.variant_batch, plan.variant_steps, plan.variant_lr, 0.1, a.seed);
        eprintln!("    {} ({})", v.label, v.loss_type.iter().map(|o| o.name()).collect::<Vec<_>>().join(" + "));
        let run = train(&c, &mut reused)?;
        install(&run, &out.join(folder(v.name)), Some(&format!("../{TOWER}")))?;
    }

    // 6. Evaluation.
    step(6, "evaluation on the test split");
    let (bench, eval_dir) = test_split(&phantom, work)?;
    let mut runs: Vec<(String, String, RunSummary)> = Vec::new();
    let sft = evaluate(&sft_dir, "phantom-sft", &bench, &images, &eval_dir, false, &plan)?;
    let blank = evaluate(&sft_dir, "phantom-sft-blank", &bench, &images, &eval_dir, true, &plan)?;
    for v in VARIANTS {
        let name = folder(v.name);
        let s = evaluate(&out.join(&name), &name, &bench, &images, &eval_dir, false, &plan)?;
        runs.push((v.label.to_string(), name, s));
    }

    // 7. Table and cards.
    step(7, "table and model cards");
    let report = table::Report {
        plan: &plan,
        seed: a.seed,
        generator: &manifest.generator,
        sft: &sft,
        blank: &blank,
        variants: &runs,
        pairs: &datasets.counts,
        minutes: t0.elapsed().as_secs_f64() / 60.0,
        reused,
        quick: a.quick,
    };
    let md = report.markdown()?;
    if let Some(p) = table_path.parent() {
        std::fs::create_dir_all(p).ok();
    }
    std::fs::write(&table_path, &md).with_context(|| format!("writing {}", table_path.display()))?;
    cards(out, &report)?;
    eprintln!(
        "done in {:.1} min: models in {}, table in {}",
        t0.elapsed().as_secs_f64() / 60.0,
        out.display(),
        table_path.display()
    );
    Ok(())
}

/// Every text the models will see, for the tokenizer.
fn corpus(phantom: &Path) -> anyhow::Result<Vec<String>> {
    let mut texts = vec![
        "[INST] [/INST]".to_string(),
        REPORT_PROMPT.to_string(),
    ];
    for split in ["train", "val", "test"] {
        for it in medpo_eval::bench::read_vqa(&phantom.join(format!("vqa_{split}.jsonl")))? {
            texts.push(it.question.replace("<image>", "").trim().to_string());
            texts.push(it.answer.clone());
        }
        for r in medpo_eval::bench::read_reports(&phantom.join(format!("reports_{split}.jsonl")))? {
            texts.push(r.report.clone());
        }
    }
    Ok(texts)
}

fn record(id: String, question: &str, answer: &str, image: &str) -> PreferenceRecord {
    PreferenceRecord {
        id: Some(id),
        prompt: format!("{}\n{}", data::IMAGE_TOKEN, question.replace(data::IMAGE_TOKEN, "").trim()),
        chosen: answer.to_string(),
        rejected: answer.to_string(),
        image: Some(image.to_string()),
        rejected_image: None,
        weight: None,
        roi: None,
        source: Source::default(),
    }
}

/// SFT records (chosen = the answer; `rejected` is not read by `sft`): every train question
/// and report.
fn sft_records(phantom: &Path) -> anyhow::Result<Vec<PreferenceRecord>> {
    let mut out = Vec::new();
    for it in medpo_eval::bench::read_vqa(&phantom.join("vqa_train.jsonl"))? {
        out.push(record(it.question_id.key(), &it.question, &it.answer, &it.image));
    }
    for r in medpo_eval::bench::read_reports(&phantom.join("reports_train.jsonl"))? {
        let Some(image) = r.images.first() else { continue };
        out.push(record(format!("{}-report", r.id), REPORT_PROMPT, &r.report, image));
    }
    Ok(out)
}

/// The optimiser schedule of a zoo run: `steps` of `batch` (no accumulation), AdamW without
/// weight decay, warm-up then cosine to 0.
fn schedule(c: &mut TrainConfig, batch: usize, steps: u64, lr: f64, warmup_ratio: f64, seed: u64) {
    c.args.per_device_train_batch_size = batch;
    c.args.gradient_accumulation_steps = 1;
    c.args.max_steps = Some(steps);
    c.args.learning_rate = lr;
    c.args.warmup_ratio = warmup_ratio;
    c.args.adam.weight_decay = 0.0;
    c.args.seed = seed;
}

/// Runs one training and returns the exported model folder.
fn train(c: &TrainConfig, reused: &mut usize) -> anyhow::Result<PathBuf> {
    c.validate()?;
    let done = c.output_dir.join(if c.use_peft { "merged" } else { "model" });
    if done.join("model.safetensors").is_file() {
        eprintln!("    (already trained: {})", done.display());
        *reused += 1;
        return Ok(done);
    }
    if c.output_dir.exists() {
        std::fs::remove_dir_all(&c.output_dir).with_context(|| format!("clearing {}", c.output_dir.display()))?;
    }
    let opts = crate::train::TrainOptions { progress: true, ..Default::default() };
    let o = crate::train::run_training(c, &opts, &AtomicBool::new(false))?;
    if o.skipped > 0 {
        eprintln!("    {} over-long samples skipped", o.skipped);
    }
    if !done.is_dir() {
        bail!("training in {} did not export {}", c.output_dir.display(), done.display());
    }
    Ok(done)
}

/// Copies a checkpoint folder's files into `dst` with its weights stored as f16 (half the
/// bytes; computation stays f32) and, when given, `mm_vision_tower` set to `vision_tower`.
fn install(src: &Path, dst: &Path, vision_tower: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_file() {
            continue;
        }
        let to = dst.join(&name);
        if name == "config.json" {
            let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(e.path())?)?;
            if let Some(vt) = vision_tower {
                v["mm_vision_tower"] = vt.into();
            }
            v["torch_dtype"] = "float16".into();
            write_json(&to, &v)?;
        } else if name.ends_with(".safetensors") {
            let t = candle_core::safetensors::load(e.path(), &candle_core::Device::Cpu)?;
            let half: std::collections::HashMap<String, candle_core::Tensor> =
                t.into_iter().map(|(k, v)| Ok((k, v.to_dtype(DType::F16)?))).collect::<candle_core::Result<_>>()?;
            candle_core::safetensors::save(&half, &to).with_context(|| format!("writing {}", to.display()))?;
        } else {
            std::fs::copy(e.path(), &to).with_context(|| format!("writing {}", to.display()))?;
        }
    }
    Ok(())
}

fn load(dir: &Path) -> anyhow::Result<medpo_models::Model> {
    medpo_models::Model::load(dir, &medpo_models::LoadOptions::default()).with_context(|| format!("loading {}", dir.display()))
}

fn normalise(s: &str) -> String {
    s.trim().trim_end_matches('.').to_lowercase()
}

/// The preference pairs and where they came from.
struct Pairs {
    records: Vec<PreferenceRecord>,
    /// Wrong answers the SFT model gave on the train questions it was asked.
    mistakes_found: usize,
    /// Phantom edit pairs among `records` (the rest are mistakes).
    edits: usize,
}

/// The phantom's edit pairs on train scans plus the SFT model's own wrong answers on train
/// questions (chosen: the truth; rejected: what it said), shuffled and cut to `plan.pairs`.
fn preference_pairs(
    phantom: &Path,
    model: medpo_models::Model,
    images: &Path,
    plan: &Plan,
    seed: u64,
) -> anyhow::Result<(Pairs, medpo_models::Model)> {
    let mut edits = data::load(&phantom.join("pairs_train.jsonl"))?;
    let mut items = medpo_eval::bench::read_vqa(&phantom.join("vqa_train.jsonl"))?;
    let mut rng = medpo_phantom::Rng::new(seed ^ 0x9A1E5);
    rng.shuffle(&mut items);
    items.truncate(plan.mistake_items);
    let mut answerer = crate::eval::ModelAnswerer::new(model, images.to_path_buf(), 48);
    let b = bar(items.len() as u64, "train questions answered by SFT");
    let mut mistakes = Vec::new();
    for chunk in items.chunks(16) {
        let answers = medpo_eval::runner::Answerer::answer_batch(&mut answerer, chunk)?;
        for (it, ans) in chunk.iter().zip(answers) {
            if normalise(&ans) != normalise(&it.answer) && !ans.trim().is_empty() {
                let mut r = record(format!("{}-mistake", it.question_id.key()), &it.question, &it.answer, &it.image);
                r.rejected = ans;
                mistakes.push(r);
            }
        }
        b.inc(chunk.len() as u64);
    }
    b.finish_and_clear();
    let n_mistakes = mistakes.len();
    // Half the budget (at most) from the model's own mistakes, the rest from the edits.
    mistakes.truncate(plan.pairs / 2);
    rng.shuffle(&mut edits);
    edits.truncate(plan.pairs - mistakes.len());
    let n_edits = edits.len();
    let mut all = mistakes;
    all.extend(edits);
    rng.shuffle(&mut all);
    for (i, r) in all.iter_mut().enumerate() {
        r.source = Source { file: "pairs".into(), index: i, line: None };
    }
    Ok((Pairs { records: all, mistakes_found: n_mistakes, edits: n_edits }, answerer.into_model()))
}

struct Datasets {
    pairs: PathBuf,
    roi_noise: PathBuf,
    crop: PathBuf,
    targeted: PathBuf,
    counts: table::PairCounts,
}

impl Datasets {
    fn of(&self, d: Data) -> &Path {
        match d {
            Data::Pairs => &self.pairs,
            Data::RoiNoise => &self.roi_noise,
            Data::Crop => &self.crop,
            Data::Targeted => &self.targeted,
        }
    }
}

fn negatives_and_targeted(
    phantom: &Path,
    model: &medpo_models::Model,
    images: &Path,
    data_dir: &Path,
    Pairs { records: pairs, mistakes_found, edits }: Pairs,
    plan: &Plan,
    seed: u64,
) -> anyhow::Result<Datasets> {
    let p = data_dir.join("pairs.jsonl");
    data::save(&p, &pairs)?;
    let neg_dir = data_dir.join("negatives");
    let with = |kind: NegativeKind, file: &str| -> anyhow::Result<(PathBuf, usize)> {
        let mut recs = pairs.clone();
        let rep = build_negatives(&mut recs, images, &neg_dir, &NegativeSpec::new(kind, seed))?;
        let path = data_dir.join(file);
        data::save(&path, &recs)?;
        Ok((path, rep.roi_fallbacks))
    };
    let (roi_noise, roi_fallbacks) = with(NegativeKind::RoiNoise, "pairs_roi_noise.jsonl")?;
    let (crop, _) = with(NegativeKind::Crop, "pairs_crop.jsonl")?;
    // Targeted: train questions about findings (abnormality, position, size), each against the
    // scans the SFT model sees as most alike.
    let mut items: Vec<medpo_train::pairs::VqaItem> = medpo_eval::bench::read_vqa(&phantom.join("vqa_train.jsonl"))?
        .into_iter()
        .filter(|it| {
            use medpo_eval::category::{classify, Category};
            matches!(classify(&it.question), Category::Abnormality | Category::Position | Category::Size)
        })
        .map(|it| medpo_train::pairs::VqaItem {
            id: it.question_id.key(),
            image: it.image.clone(),
            question: it.question.clone(),
            answer: it.answer.clone(),
        })
        .collect();
    let mut rng = medpo_phantom::Rng::new(seed ^ 0x7A12E7);
    rng.shuffle(&mut items);
    items.truncate(plan.pairs.div_ceil(2).max(8));
    let mut answerer = medpo_train::policy::ModelAnswerer { model, images: images.to_path_buf(), max_new_tokens: 48 };
    let features = answerer.features(&items.iter().map(|i| i.image.clone()).collect::<Vec<_>>())?;
    let rep = build_targeted_pairs(&items, &features, 3, TargetedMode::Mixed, &mut answerer)?;
    let mut targeted = rep.records;
    targeted.truncate(plan.pairs);
    let t = data_dir.join("targeted.jsonl");
    data::save(&t, &targeted)?;
    Ok(Datasets {
        pairs: p,
        roi_noise,
        crop,
        targeted: t,
        counts: table::PairCounts {
            pairs: pairs.len(),
            mistakes_found,
            mistakes_used: pairs.len() - edits,
            edits,
            roi_fallbacks,
            targeted: targeted.len(),
            targeted_same_answer: rep.same_answer,
        },
    })
}

/// The phantom test split as a benchmark, and the folder its answers go to.
fn test_split(phantom: &Path, work: &Path) -> anyhow::Result<(VqaBenchmark, PathBuf)> {
    let bench = VqaBenchmark::load(&phantom.join("vqa_test.jsonl").to_string_lossy(), phantom)?;
    let eval_dir = work.join("eval");
    std::fs::create_dir_all(&eval_dir).with_context(|| format!("creating {}", eval_dir.display()))?;
    Ok((bench, eval_dir))
}

fn evaluate(
    dir: &Path,
    id: &str,
    bench: &VqaBenchmark,
    images: &Path,
    eval_dir: &Path,
    blank: bool,
    plan: &Plan,
) -> anyhow::Result<RunSummary> {
    let answers = eval_dir.join(format!("{id}.answers.jsonl"));
    // Answers depend on the weights: never resume across builds.
    std::fs::remove_file(&answers).ok();
    let model = load(dir)?;
    let mut answerer = crate::eval::ModelAnswerer::new(model, images.to_path_buf(), 64);
    if blank {
        answerer = answerer.with_blank_images();
    }
    let cfg = RunConfig {
        model_id: id.to_string(),
        batch_size: 16,
        answers_path: answers,
        summary_path: Some(eval_dir.join(format!("{id}.summary.json"))),
        limit: plan.test_limit,
        bootstrap: Default::default(),
    };
    let n = plan.test_limit.unwrap_or(bench.items.len()).min(bench.items.len());
    let b = bar(n as u64, &format!("{id} test questions"));
    let s = run_eval(&mut answerer, bench, &cfg, &mut |p| b.set_position(p.done as u64))?;
    b.finish_and_clear();
    Ok(s)
}

/// Writes each model's card (`README.md`) and lineage (`medpo.json`), and the zoo's index.
fn cards(out: &Path, r: &table::Report) -> anyhow::Result<()> {
    let mut entries = vec![(
        folder("sft"),
        ModelLineage { variant: Some("sft".into()), parent: None },
        "SFT from scratch (every weight, the vision tower included) on the phantom train split".to_string(),
        r.sft,
    )];
    for (v, (_, name, s)) in VARIANTS.iter().zip(r.variants) {
        entries.push((
            name.clone(),
            ModelLineage { variant: Some(v.name.to_string()), parent: Some(folder("sft")) },
            format!(
                "{} ({}) as LoRA r 8 on {}, merged",
                v.label,
                v.loss_type.iter().map(|o| o.name()).collect::<Vec<_>>().join(" + "),
                folder("sft")
            ),
            s,
        ));
    }
    for (name, lineage, how, s) in &entries {
        let dir = out.join(name);
        write_json(&dir.join(ModelLineage::FILE), lineage)?;
        std::fs::write(dir.join("README.md"), r.card(name, how, s))
            .with_context(|| format!("writing the card of {name}"))?;
    }
    Ok(())
}
