//! `medpo` subcommands of the models engine: `generate`, `score`, `inspect`.
//!
//! ```text
//! medpo generate --model DIR --image scan.png --question "Is there a nodule?"
//! medpo score    --model DIR --image scan.png --question "…" --answer "Yes."
//! medpo inspect  --model DIR
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::DType;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use medpo_models::config::{ModelConfig, ResolveOptions};
use medpo_models::loader::{self, WeightFiles};
use medpo_models::{GenerateParams, LoadOptions, Model, ScoreItem};

/// Subcommands of the models engine.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Answer a question about an image, streaming the answer to the terminal.
    Generate(GenerateArgs),
    /// Print the summed log-probability of an answer given (image, question).
    Score(ScoreArgs),
    /// Print a checkpoint's layout, dimensions, dtype and parameter count (weights not loaded).
    Inspect(InspectArgs),
}

/// Where the model is and how to run it.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Checkpoint folder (LLaVA-Med v1.5, HuatuoGPT-Vision or llava-hf layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Folder in which hub-style vision tower names (openai/clip-vit-large-patch14-336) are found.
    #[arg(long, env = "MEDPO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// `cpu` or `cuda[:N]` (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, bf16, f16 (bf16/f16 on CUDA).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image file (PNG, JPEG, …); without it the question is asked as text only.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long)]
    pub question: String,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy. Default: the model's released setting.
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Default: the model's released setting (1.2 for HuatuoGPT-Vision, else 1.0).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long)]
    pub question: String,
    /// The answer text; its EOS is appended and counted.
    #[arg(long)]
    pub answer: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, env = "MEDPO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
}

/// Runs one models subcommand.
pub fn run(cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Generate(a) => generate(a),
        ModelsCommand::Score(a) => score(a),
        ModelsCommand::Inspect(a) => inspect(a),
    }
}

/// Loads the model with a progress bar on stderr.
fn load(args: &ModelArgs) -> anyhow::Result<Model> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("loading {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(args.model.display().to_string());
    let pb = bar.clone();
    let opts = LoadOptions {
        device: medpo_models::parse_device(&args.device)?,
        dtype: medpo_models::parse_dtype(&args.dtype)?,
        models_dir: args.models_dir.clone(),
        progress: Some(Box::new(move |done, total| {
            pb.set_length(total);
            pb.set_position(done.min(total));
        })),
        ..Default::default()
    };
    let model = Model::load(&args.model, &opts);
    bar.finish_and_clear();
    model.with_context(|| format!("loading {}", args.model.display()))
}

fn read_image(path: Option<&Path>) -> anyhow::Result<Option<image::RgbImage>> {
    path.map(|p| medpo_models::preprocess::load_image(p).map_err(anyhow::Error::from)).transpose()
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let model = load(&a.model)?;
    let image = read_image(a.image.as_deref())?;
    let input = model.input(&a.question, image.as_ref())?;
    let defaults = GenerateParams::for_layout(model.config.layout);
    let params = GenerateParams {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature.unwrap_or(defaults.temperature),
        top_p: a.top_p.unwrap_or(defaults.top_p),
        repetition_penalty: a.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        seed: a.seed,
        stop_at_eos: true,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let started = std::time::Instant::now();
    let gens = model.generate(&[input], &params, &mut |e| {
        let _ = out.write_all(e.text.as_bytes());
        let _ = out.flush();
    })?;
    writeln!(out)?;
    let n = gens.first().map_or(0, |g| g.ids.len());
    tracing::info!(tokens = n, secs = started.elapsed().as_secs_f64(), "generated");
    Ok(())
}

fn score(a: ScoreArgs) -> anyhow::Result<()> {
    let model = load(&a.model)?;
    let image = read_image(a.image.as_deref())?;
    let prompt = model.input(&a.question, image.as_ref())?;
    let answer_ids = model.answer_ids(&a.answer)?;
    let n = answer_ids.len();
    let lp = model.score(&[ScoreItem { prompt, answer_ids }])?[0];
    if a.json {
        println!("{}", serde_json::json!({ "logprob_sum": lp, "answer_tokens": n, "logprob_mean": lp / n as f64 }));
    } else {
        println!("log-prob sum {lp:.6} over {n} answer tokens (EOS included), mean {:.6}", lp / n as f64);
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let cfg = ModelConfig::from_dir(&a.model, &ResolveOptions { models_dir: a.models_dir.clone() })?;
    let files = WeightFiles::open(&a.model)?;
    let mut keys: Vec<&String> = files.keys().collect();
    keys.sort();
    let dtype = keys.first().map(|k| files.info(k).map(|i| i.1)).transpose()?.unwrap_or_default();
    let t = &cfg.text;
    let v = &cfg.vision;
    println!("layout          {}", cfg.layout);
    println!("decoder         {:?}: hidden {}, layers {}, heads {} (kv {}), head_dim {}, mlp {}, vocab {}, rope_theta {}, rms_eps {}",
        t.arch, t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim,
        t.intermediate_size, t.vocab_size, t.rope_theta, t.rms_norm_eps);
    println!("vision tower    {}: image {}, patch {}, hidden {}, layers {} (select {}), heads {}",
        cfg.vision_tower_dir.display(), v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers, cfg.select_layer, v.num_attention_heads);
    println!("image tokens    {}", cfg.num_image_tokens());
    println!("context         {}", cfg.context_len);
    println!("template        {:?}", cfg.template);
    println!("weights dtype   {dtype} ({} tensors in {})", keys.len(), a.model.display());
    let n = loader::parameter_count(&cfg);
    println!("parameters      {n} ({:.2} B)", n as f64 / 1e9);
    for (name, dt) in [("f32", DType::F32), ("bf16", DType::BF16)] {
        println!("memory at {name:<5} {} MiB", loader::weight_bytes(&cfg, dt) >> 20);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ModelsCommand,
    }

    fn fixtures() -> PathBuf {
        let shared = std::env::var_os("MEDPO_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
        shared.join("fixtures/v1")
    }

    fn run_args(args: &[&str]) -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(std::iter::once("medpo").chain(args.iter().copied()))?;
        run(cli.cmd)
    }

    #[test]
    fn generate_score_and_inspect_run_on_the_fixtures() {
        let f = fixtures();
        let model = f.join("huatuogpt-vision-tiny");
        let image = f.join("scan.png");
        let (m, i) = (model.to_str().unwrap(), image.to_str().unwrap());
        run_args(&["inspect", "--model", m]).unwrap();
        run_args(&["generate", "--model", m, "--image", i, "--question", "Is there a nodule?", "--max-new-tokens", "4"]).unwrap();
        run_args(&["score", "--model", m, "--image", i, "--question", "Is there a nodule?", "--answer", "Yes.", "--json"]).unwrap();
        let err = run_args(&["generate", "--model", "/nonexistent", "--question", "q"]).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent"), "{err:#}");
    }
}
