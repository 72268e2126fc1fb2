//! `medpo` subcommands of the eval engine.
//!
//! - `medpo eval --model DIR --bench vqa-rad --images DIR`: runs a model over a benchmark
//!   (resumable), writes the seed's answer JSONL and a summary JSON, prints the scores.
//! - `medpo score-answers --bench vqa-rad --answers FILE`: scores an existing answer file
//!   (e.g. from the seed's `model_vqa.py`).
//! - `medpo leaderboard --runs DIR-or-FILES`: summaries side by side with intervals and
//!   significance against a baseline run.
//! - `medpo arena-ratings --votes FILE`: Bradley–Terry ratings with intervals, online Elo,
//!   the win-rate matrix and rater agreement.
//! - `medpo score-reports --generated FILE [--facts FILE] [--judge-url URL]`: BLEU-4, ROUGE-L
//!   and atomic-fact NLI of generated reports.
//!
//! Benchmarks are named `vqa-rad`, `slake` or `pathvqa` (files looked up in `--data-dir`,
//! default `$MEDPO_VQA_DIR` or `../shared/data/vqa`) or given as a path.
//!
//! Every VQA run is scored under our protocol and under LLaVA-Med's own rules; `--protocol`
//! picks which one leads the tables and ranks the leaderboard, the other is shown beside it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use medpo_eval::arena::arena_report;
use medpo_eval::answers::read_answers;
use medpo_eval::bench::{VqaBenchmark, VqaItem};
use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::category::ALL;
use medpo_eval::elo::{online_elo, K};
use medpo_eval::leaderboard::leaderboards;
use medpo_eval::nli::{JudgeConfig, NliJudge, OpenAiJudge};
use medpo_eval::protocol::Protocol;
use medpo_eval::report::{read_report_predictions, score_reports, AtomicFacts};
use medpo_eval::runner::{run_eval, Answerer, RunConfig};
use medpo_eval::score::{model_id_of, score_run};
use medpo_eval::summary::{MetricValue, RunSummary};
use medpo_eval::votes::read_votes;

/// Subcommands of the eval engine.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Run a model over a VQA benchmark: answers JSONL (resumable) + summary JSON + scores.
    Eval(EvalArgs),
    /// Score an existing answer JSONL (the seed's format) against a VQA benchmark.
    ScoreAnswers(ScoreAnswersArgs),
    /// Leaderboard of scored runs with 95% intervals and significance against a baseline.
    Leaderboard(LeaderboardArgs),
    /// Arena ratings from pairwise votes: Bradley–Terry with intervals, Elo, win rates,
    /// rater agreement.
    ArenaRatings(ArenaRatingsArgs),
    /// Score generated reports: BLEU-4, ROUGE-L and, with a judge, atomic-fact NLI.
    ScoreReports(ScoreReportsArgs),
}

/// `medpo score-reports`.
#[derive(Debug, Args)]
pub struct ScoreReportsArgs {
    /// Generated reports JSONL (the seed's inference output: caption_generated, gold_caption,
    /// id).
    #[arg(long)]
    pub generated: PathBuf,
    /// Gold atomic facts (the seed's processed_gpt4_responses_*.json), matched by id or gold
    /// text. Without facts (here or in the generated file) no NLI is computed.
    #[arg(long)]
    pub facts: Option<PathBuf>,
    /// OpenAI-compatible endpoint of the NLI judge (base URL or …/chat/completions).
    #[arg(long, env = "MEDPO_JUDGE_URL")]
    pub judge_url: Option<String>,
    /// Judge model name.
    #[arg(long, env = "MEDPO_JUDGE_MODEL", default_value = "gpt-4.1-2025-04-14")]
    pub judge_model: String,
    /// Judge API key.
    #[arg(long, env = "MEDPO_JUDGE_API_KEY", hide_env_values = true)]
    pub judge_api_key: Option<String>,
    /// Print the scores as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

/// Bootstrap settings shared by the subcommands.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Bootstrap rounds for the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    pub rounds: usize,
    /// Bootstrap seed (intervals are reproducible for a given seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl BootstrapArgs {
    fn config(&self) -> BootstrapConfig {
        BootstrapConfig { rounds: self.rounds, seed: self.seed, level: 0.95 }
    }
}

/// Which scoring rules lead.
#[derive(Debug, Args)]
pub struct ProtocolArg {
    /// Scoring rules that lead the tables and rank leaderboards: `medpo` (ours: the first
    /// yes/no token answers a yes/no question; clipped token recall) or `llava-med`
    /// (LLaVA-Med's run_eval_batch.py, behind the study's numbers: the gold as a substring of
    /// the answer, so "abnormal" answers "no"; recall counted from the prediction). Both are
    /// always computed and shown side by side.
    #[arg(long, default_value = "medpo", value_parser = parse_protocol)]
    pub protocol: Protocol,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).map_err(|e| e.to_string())
}

/// Where benchmark names are looked up.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Folder holding the VQA benchmark files.
    #[arg(long, env = "MEDPO_VQA_DIR", default_value = "../shared/data/vqa")]
    pub data_dir: PathBuf,
}

/// `medpo eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model folder (config.json, tokenizer, safetensors).
    #[arg(long, required_unless_present = "remote")]
    pub model: Option<PathBuf>,
    /// Answer with a model on an OpenAI-compatible server instead of a local checkpoint:
    /// its base URL (vLLM, TGI, another MedPO server's `/v1`). Needs `--remote-model`.
    #[arg(long, conflicts_with = "model", requires = "remote_model")]
    pub remote: Option<String>,
    /// The model name on `--remote`.
    #[arg(long)]
    pub remote_model: Option<String>,
    /// Environment variable holding `--remote`'s API key.
    #[arg(long)]
    pub remote_key_env: Option<String>,
    /// `vqa-rad`, `slake`, `pathvqa` or a path to a benchmark JSONL.
    #[arg(long)]
    pub bench: String,
    /// Folder the benchmark's image paths are relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// Answer JSONL to write (resumed when it exists). Default:
    /// `<model folder name>__<bench>.answers.jsonl` in the current folder.
    #[arg(long)]
    pub answers: Option<PathBuf>,
    /// Summary JSON to write. Default: the answers path with `.summary.json`.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Model id written into the answers (default: the model folder name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Questions per generation batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Maximum new tokens per answer.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Where hub-style vision tower names (`openai/clip-vit-large-patch14-336`) are looked up.
    #[arg(long, env = "MEDPO_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// The image-ablation control: answer with every image replaced by a black one of the same
    /// size (a model that reads the image should fall to what the questions alone allow).
    #[arg(long, conflicts_with = "remote")]
    pub blank_images: bool,
    /// Print the result as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(flatten)]
    pub protocol: ProtocolArg,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

/// `medpo score-answers`.
#[derive(Debug, Args)]
pub struct ScoreAnswersArgs {
    /// `vqa-rad`, `slake`, `pathvqa` or a path to a benchmark JSONL.
    #[arg(long)]
    pub bench: String,
    /// Answer JSONL (question_id, text, ...).
    #[arg(long)]
    pub answers: PathBuf,
    /// Model id for the summary (default: the answers' `model_id`, else the file stem).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Also write the run summary (metrics and per-item results) to this JSON file.
    #[arg(long)]
    pub summary_out: Option<PathBuf>,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(flatten)]
    pub protocol: ProtocolArg,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

/// `medpo leaderboard`.
#[derive(Debug, Args)]
pub struct LeaderboardArgs {
    /// Summary JSON files, or folders whose `*.json` files are all summaries.
    #[arg(long, num_args = 1.., required = true)]
    pub runs: Vec<PathBuf>,
    /// Model id of the baseline run (default: the first run of each benchmark).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Print the leaderboards as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub protocol: ProtocolArg,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

/// `medpo arena-ratings`.
#[derive(Debug, Args)]
pub struct ArenaRatingsArgs {
    /// Votes JSONL: model_a, model_b, winner (a|b|tie|both_bad), rater, item.
    #[arg(long)]
    pub votes: PathBuf,
    /// Online Elo K factor.
    #[arg(long, default_value_t = K)]
    pub k: f64,
    /// Print the ratings as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

/// Runs one eval subcommand.
pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Eval(a) => eval(a),
        EvalCommand::ScoreAnswers(a) => score_answers(a),
        EvalCommand::Leaderboard(a) => leaderboard(a),
        EvalCommand::ArenaRatings(a) => arena_ratings(a),
        EvalCommand::ScoreReports(a) => score_reports_cmd(a),
    }
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let bench = VqaBenchmark::load(&args.bench, &args.data.data_dir)?;
    let model_name = match (&args.model, &args.remote_model) {
        (Some(dir), _) => dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
        (None, Some(remote)) => remote.clone(),
        (None, None) => "model".into(),
    };
    let model_id = args.model_id.clone().unwrap_or(model_name);
    let answers_path = args
        .answers
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}__{}.answers.jsonl", model_id.replace(['/', '\\'], "_"), bench.name)));
    let summary_path = args.summary.clone().unwrap_or_else(|| {
        let s = answers_path.to_string_lossy();
        PathBuf::from(format!("{}.summary.json", s.strip_suffix(".jsonl").unwrap_or(&s)))
    });
    if !args.images.is_dir() {
        anyhow::bail!("images folder `{}` does not exist", args.images.display());
    }
    let mut answerer = match &args.remote {
        Some(url) => remote_answerer(&args, url)?,
        None => model_answerer(&args)?,
    };
    let cfg = RunConfig {
        model_id,
        batch_size: args.batch_size,
        answers_path: answers_path.clone(),
        summary_path: Some(summary_path.clone()),
        limit: args.limit,
        bootstrap: args.bootstrap.config(),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} questions ({per_sec}, eta {eta}) {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = run_eval(answerer.as_mut(), &bench, &cfg, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        if p.resumed > 0 {
            bar.set_message(format!("{} resumed", p.resumed));
        }
    })?;
    bar.finish();
    tracing::info!(answers = %answers_path.display(), summary = %summary_path.display(), "eval done");
    print_summary(&summary, args.protocol.protocol, args.json)
}

/// Generation through the model engine (greedy with the model family's released settings,
/// as the seed's `model_vqa.py`); also used by the server's evaluation queue.
pub struct ModelAnswerer {
    model: medpo_models::Model,
    images: PathBuf,
    params: medpo_models::GenerateParams,
    blank: bool,
}

impl ModelAnswerer {
    /// Answers with `model`, reading images from `images`, at most `max_new_tokens` each.
    pub fn new(model: medpo_models::Model, images: PathBuf, max_new_tokens: usize) -> Self {
        let params = medpo_models::GenerateParams {
            max_new_tokens,
            ..medpo_models::GenerateParams::for_layout(model.config.layout)
        };
        ModelAnswerer { model, images, params, blank: false }
    }

    /// The image-ablation control: every image is replaced by a black one of the same size, so
    /// the model answers from the question alone.
    pub fn with_blank_images(mut self) -> Self {
        self.blank = true;
        self
    }

    /// The model back.
    pub fn into_model(self) -> medpo_models::Model {
        self.model
    }
}

impl Answerer for ModelAnswerer {
    fn answer_batch(&mut self, items: &[VqaItem]) -> medpo_eval::Result<Vec<String>> {
        let fail = |m: String| medpo_eval::Error::Answerer(m);
        let mut inputs = Vec::with_capacity(items.len());
        for it in items {
            let path = it.image_path(&self.images);
            let img = image::open(&path)
                .map_err(|e| fail(format!("image `{}` for question {}: {e}", path.display(), it.question_id)))?
                .to_rgb8();
            let img = if self.blank { image::RgbImage::new(img.width(), img.height()) } else { img };
            inputs.push(
                self.model
                    .input(&it.question, Some(&img))
                    .map_err(|e| fail(format!("question {}: {e}", it.question_id)))?,
            );
        }
        let gens = self
            .model
            .generate(&inputs, &self.params, &mut |_| {})
            .map_err(|e| fail(e.to_string()))?;
        Ok(gens.into_iter().map(|g| g.text.trim().to_string()).collect())
    }
}

fn model_answerer(args: &EvalArgs) -> anyhow::Result<Box<dyn Answerer>> {
    let device = if cfg!(feature = "cuda") {
        candle_core::Device::cuda_if_available(0)?
    } else {
        candle_core::Device::Cpu
    };
    let dtype = if device.is_cuda() { candle_core::DType::BF16 } else { candle_core::DType::F32 };
    let opts = medpo_models::LoadOptions { device, dtype, models_dir: args.models_dir.clone(), ..Default::default() };
    let dir = args.model.as_ref().context("--model or --remote is required")?;
    let model = medpo_models::Model::load(dir, &opts).with_context(|| format!("loading model `{}`", dir.display()))?;
    let answerer = ModelAnswerer::new(model, args.images.clone(), args.max_new_tokens);
    Ok(Box::new(if args.blank_images { answerer.with_blank_images() } else { answerer }))
}

/// Generation on an OpenAI-compatible server (through the same client as the server's remote
/// arena models): each question with its image as a `data:` URL, greedy.
struct RemoteAnswerer {
    client: medpo_remote::Client,
    model: String,
    images: PathBuf,
    max_tokens: usize,
}

impl Answerer for RemoteAnswerer {
    fn answer_batch(&mut self, items: &[VqaItem]) -> medpo_eval::Result<Vec<String>> {
        let fail = |m: String| medpo_eval::Error::Answerer(m);
        items
            .iter()
            .map(|it| {
                let path = it.image_path(&self.images);
                let bytes = std::fs::read(&path)
                    .map_err(|e| fail(format!("image `{}` for question {}: {e}", path.display(), it.question_id)))?;
                let body = serde_json::json!({
                    "model": self.model,
                    "temperature": 0.0,
                    "max_tokens": self.max_tokens,
                    "messages": medpo_remote::image_question(&it.question, &bytes),
                });
                let a = self.client.complete(&body).map_err(|e| fail(format!("question {}: {e}", it.question_id)))?;
                Ok(a.text.trim().to_string())
            })
            .collect()
    }
}

fn remote_answerer(args: &EvalArgs, url: &str) -> anyhow::Result<Box<dyn Answerer>> {
    let model = args.remote_model.clone().context("--remote needs --remote-model")?;
    let mut cfg = medpo_remote::RemoteConfig::new("eval", url, vec![model.clone()]);
    cfg.api_key_env = args.remote_key_env.clone();
    let key = cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(Box::new(RemoteAnswerer {
        client: medpo_remote::Client::new(cfg, key),
        model,
        images: args.images.clone(),
        max_tokens: args.max_new_tokens,
    }))
}

fn score_answers(args: ScoreAnswersArgs) -> anyhow::Result<()> {
    let bench = VqaBenchmark::load(&args.bench, &args.data.data_dir)?;
    let answers = read_answers(&args.answers)?;
    let stem = args
        .answers
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let model_id = args.model_id.clone().unwrap_or_else(|| model_id_of(&answers, &stem));
    let summary = score_run(&bench, &answers, &model_id, &args.bootstrap.config())?;
    if let Some(p) = &args.summary_out {
        summary.write_json(p)?;
    }
    print_summary(&summary, args.protocol.protocol, args.json)
}

/// `value [low, high]` in percent.
fn pct(m: &MetricValue) -> String {
    format!("{:5.1} [{:5.1}, {:5.1}]", 100.0 * m.value, 100.0 * m.ci_low, 100.0 * m.ci_high)
}

/// Both protocols, the chosen one first.
fn protocols(lead: Protocol) -> [Protocol; 2] {
    match lead {
        Protocol::Medpo => [Protocol::Medpo, Protocol::LlavaMed],
        Protocol::LlavaMed => [Protocol::LlavaMed, Protocol::Medpo],
    }
}

fn print_summary(s: &RunSummary, lead: Protocol, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let both = protocols(lead);
    println!(
        "model {}  benchmark {} ({} questions: {} closed, {} open)  protocols {} and {}",
        s.model_id,
        s.benchmark.name,
        s.counts.items,
        s.counts.closed,
        s.counts.open,
        both[0].version(),
        both[1].version()
    );
    println!(
        "answered {}  missing {} (scored wrong)  closed answers with neither yes nor no {}",
        s.counts.answered, s.counts.missing, s.counts.unparsed
    );
    println!("95% bootstrap intervals, {} rounds, seed {}\n", s.bootstrap.rounds, s.bootstrap.seed);
    let cell = |key: &str| s.metric(key).map_or("-".to_string(), pct);
    println!("{:<22} {:>22} {:>22} {:>6}", "metric (%)", both[0].as_str(), both[1].as_str(), "n");
    for key in [
        "closed/accuracy",
        "closed/unparsed_rate",
        "open/recall",
        "open/exact_match",
        "open/token_f1",
        "overall/score",
        "overall/exact_match",
    ] {
        let Some(m) = s.metric(key) else { continue };
        let [a, b] = both.map(|p| cell(&p.key(key)));
        println!("{:<22} {:>22} {:>22} {:>6}", key, a, b, m.n);
    }
    if let (Some(ours), Some(theirs)) = (s.metric("closed/accuracy"), s.metric("llava-med/closed/accuracy")) {
        println!(
            "LLaVA-Med's substring rule changes closed accuracy by {:+.1} points",
            100.0 * (theirs.value - ours.value)
        );
    }
    println!(
        "\n{:<12} {:>6} {:>22} {:>22} {:>28} {:>28}",
        "category",
        "n",
        format!("score ({})", both[0]),
        format!("score ({})", both[1]),
        "closed accuracy (medpo)",
        "open recall (medpo)"
    );
    for c in ALL {
        let Some(score) = s.metric(&format!("category/{c}/score")) else { continue };
        let ours = |k: &str| {
            s.metric(&format!("category/{c}/{k}"))
                .map_or("-".to_string(), |m| format!("{} n={}", pct(m), m.n))
        };
        let [a, b] = both.map(|p| cell(&p.key(&format!("category/{c}/score"))));
        println!(
            "{:<12} {:>6} {:>22} {:>22} {:>28} {:>28}",
            c.as_str(),
            score.n,
            a,
            b,
            ours("closed_accuracy"),
            ours("open_recall")
        );
    }
    Ok(())
}

/// Summary files: files as given, folders expanded to their `*.json` files (sorted).
fn summary_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading folder `{}`", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        anyhow::bail!("no summary files found in {:?}", inputs);
    }
    Ok(out)
}

fn leaderboard(args: LeaderboardArgs) -> anyhow::Result<()> {
    let runs = summary_files(&args.runs)?
        .iter()
        .map(|p| RunSummary::read_json(p).with_context(|| format!("`{}` is not a run summary", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let protocol = args.protocol.protocol;
    let boards = leaderboards(&runs, args.baseline.as_deref(), &args.bootstrap.config(), protocol)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&boards)?);
        return Ok(());
    }
    let cell = |r: &RunSummary, k: &str| r.metric(k).map_or("-".to_string(), pct);
    let other = protocols(protocol)[1];
    for b in &boards {
        println!(
            "benchmark {}  ranked by {} (beside it: {})  baseline {}  (Δ: paired bootstrap on overall score; McNemar exact on closed, under {})",
            b.benchmark,
            protocol.version(),
            other.version(),
            b.baseline_model_id,
            protocol
        );
        println!(
            "{:>3} {:<28} {:>22} {:>22} {:>22} {:>24} {:>9} {:>9} {:>22} {:>22}",
            "#",
            "model",
            "closed accuracy",
            "open recall",
            "overall",
            "Δ overall [95% CI]",
            "p",
            "McNemar p",
            format!("closed ({other})"),
            format!("open ({other})")
        );
        for (rank, (&i, cmp)) in b.order.iter().zip(&b.comparisons).enumerate() {
            let r = &runs[i];
            let (delta, p, mc) = match cmp {
                Some(c) => (
                    format!(
                        "{:+5.1} [{:+5.1}, {:+5.1}]",
                        100.0 * c.overall.mean_diff,
                        100.0 * c.overall.ci_low,
                        100.0 * c.overall.ci_high
                    ),
                    format!("{:.4}", c.overall.p_value),
                    c.closed_mcnemar.map_or("-".into(), |m| format!("{:.4}", m.p_exact)),
                ),
                None => ("baseline".into(), "-".into(), "-".into()),
            };
            println!(
                "{:>3} {:<28} {:>22} {:>22} {:>22} {:>24} {:>9} {:>9} {:>22} {:>22}",
                rank + 1,
                r.model_id,
                cell(r, &protocol.key("closed/accuracy")),
                cell(r, &protocol.key("open/recall")),
                cell(r, &protocol.key("overall/score")),
                delta,
                p,
                mc,
                cell(r, &other.key("closed/accuracy")),
                cell(r, &other.key("open/recall"))
            );
        }
        println!();
    }
    Ok(())
}

fn arena_ratings(args: ArenaRatingsArgs) -> anyhow::Result<()> {
    let votes = read_votes(&args.votes)?;
    let cfg = args.bootstrap.config();
    let mut report = arena_report(&votes, &cfg)?;
    if args.k != K {
        report.online_elo = online_elo(&votes, args.k);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let (bt, elo, matrix, agreement) = (&report.bradley_terry, &report.online_elo, &report.win_rate, &report.agreement);
    println!(
        "{} votes, {} models; Bradley–Terry (ties and both-bad = half a win each, as FastChat), 95% CI from {} bootstrap rounds",
        votes.len(),
        bt.len(),
        cfg.rounds
    );
    println!(
        "{:>3} {:<28} {:>8} {:>20} {:>8} {:>6} {:>6} {:>6} {:>8} {:>10}",
        "#", "model", "rating", "95% CI", "votes", "wins", "losses", "ties", "both bad", "online Elo"
    );
    for (i, r) in bt.iter().enumerate() {
        let e = elo.iter().find(|(m, _)| *m == r.model).map_or(f64::NAN, |(_, x)| *x);
        println!(
            "{:>3} {:<28} {:>8.1} {:>20} {:>8} {:>6} {:>6} {:>6} {:>8} {:>10.1}",
            i + 1,
            r.model,
            r.rating,
            format!("[{:.1}, {:.1}]", r.ci_low, r.ci_high),
            r.votes,
            r.wins,
            r.losses,
            r.ties,
            r.both_bad,
            e
        );
    }
    println!("\nwin rate of row over column (ties count as played, not won)");
    print!("{:<20}", "");
    for m in &matrix.models {
        print!(" {:>10.10}", m);
    }
    println!();
    for (r, m) in matrix.models.iter().enumerate() {
        print!("{:<20.20}", m);
        for c in 0..matrix.models.len() {
            match matrix.win_rate[r][c] {
                Some(w) => print!(" {:>10.3}", w),
                None => print!(" {:>10}", "-"),
            }
        }
        println!();
    }
    if agreement.raters.len() >= 2 {
        println!(
            "\nrater agreement: {} raters, {} items rated by two or more",
            agreement.raters.len(),
            agreement.units_multi_rated
        );
        let f = |x: Option<f64>| x.map_or("undefined".to_string(), |v| format!("{v:.3}"));
        println!("Fleiss' κ {}   Krippendorff's α (nominal) {}", f(agreement.fleiss_kappa), f(agreement.krippendorff_alpha));
        for k in &agreement.cohen {
            println!("Cohen's κ {} vs {}: {} ({} common items)", k.rater_1, k.rater_2, f(k.kappa), k.common_units);
        }
    } else if votes.iter().any(|v| v.rater.is_some()) {
        println!("\nrater agreement: needs votes from two or more raters on the same item");
    }
    Ok(())
}

fn score_reports_cmd(args: ScoreReportsArgs) -> anyhow::Result<()> {
    let mut preds = read_report_predictions(&args.generated)?;
    if let Some(f) = &args.facts {
        let n = AtomicFacts::read(f)?.attach(&mut preds);
        tracing::info!(matched = n, total = preds.len(), "atomic facts attached");
    }
    let mut judge = args.judge_url.as_ref().map(|url| {
        OpenAiJudge::new(JudgeConfig {
            url: url.clone(),
            model: args.judge_model.clone(),
            api_key: args.judge_api_key.clone(),
            timeout_s: 120,
            max_tokens: 1024,
            retries: 2,
        })
    });
    let scores = score_reports(&preds, judge.as_mut().map(|j| j as &mut dyn NliJudge), &args.bootstrap.config());
    if args.json {
        let v = serde_json::json!({
            "judge_model": args.judge_url.as_ref().map(|_| &args.judge_model),
            "scores": scores,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} reports; protocol {}; judge {}",
        preds.len(),
        medpo_eval::PROTOCOL_VERSION,
        args.judge_url.as_ref().map_or("none (no NLI)".to_string(), |u| format!("{} at {u}", args.judge_model))
    );
    println!("{:<26} {:>24} {:>6}", "metric", "value [95% CI]", "n");
    for m in &scores.metrics {
        println!("{:<26} {:>24} {:>6}", m.key, format!("{:.4} [{:.4}, {:.4}]", m.value, m.ci_low, m.ci_high), m.n);
    }
    if scores.judge_failures > 0 {
        println!("judge failures (items left out of NLI): {}", scores.judge_failures);
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
        cmd: EvalCommand,
    }

    fn data_dir() -> PathBuf {
        match std::env::var_os("MEDPO_SHARED") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("data/vqa"),
            _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/vqa"),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medpo-cli-eval-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn parse(args: &[&str]) -> EvalCommand {
        Cli::try_parse_from(std::iter::once("medpo").chain(args.iter().copied())).unwrap().cmd
    }

    #[test]
    fn score_answers_then_leaderboard() {
        let d = tmp("score");
        let data = data_dir();
        let bench = VqaBenchmark::load("vqa-rad", &data).unwrap();
        for (model, text) in [("sft", "yes"), ("dpo", "no")] {
            let lines: Vec<String> = bench
                .items
                .iter()
                .map(|it| serde_json::json!({"question_id": it.question_id, "text": text, "model_id": model}).to_string())
                .collect();
            std::fs::write(d.join(format!("{model}.jsonl")), lines.join("\n")).unwrap();
            let answers = d.join(format!("{model}.jsonl"));
            let out = d.join(format!("{model}.json"));
            run(parse(&[
                "score-answers", "--bench", "vqa-rad", "--data-dir", data.to_str().unwrap(),
                "--answers", answers.to_str().unwrap(), "--summary-out", out.to_str().unwrap(), "--rounds", "100",
            ]))
            .unwrap();
        }
        let s = RunSummary::read_json(&d.join("dpo.json")).unwrap();
        assert_eq!(s.model_id, "dpo");
        // 133 of the 272 closed golds are "no".
        assert!((s.metric("closed/accuracy").unwrap().value - 133.0 / 272.0).abs() < 1e-12);
        // The seed-compatible rules are in the same summary. The answer "no" contains no other
        // gold, so they also credit exactly the 133 "no" golds.
        assert!((s.metric("llava-med/closed/accuracy").unwrap().value - 133.0 / 272.0).abs() < 1e-12);
        std::fs::remove_file(d.join("sft.jsonl")).unwrap();
        std::fs::remove_file(d.join("dpo.jsonl")).unwrap();
        run(parse(&["leaderboard", "--runs", d.to_str().unwrap(), "--baseline", "sft", "--rounds", "100"])).unwrap();
        run(parse(&["leaderboard", "--runs", d.to_str().unwrap(), "--protocol", "llava-med", "--rounds", "100"])).unwrap();
        let e = Cli::try_parse_from(["medpo", "leaderboard", "--runs", "x", "--protocol", "lenient"]).unwrap_err();
        assert!(e.to_string().contains("llava-med"), "{e}");
        let e = run(parse(&["leaderboard", "--runs", d.to_str().unwrap(), "--baseline", "nope"])).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn arena_ratings_with_raters() {
        let d = tmp("arena");
        let votes = d.join("votes.jsonl");
        let mut lines = Vec::new();
        for i in 0..30 {
            let w = ["a", "a", "tie", "b", "both_bad"][i % 5];
            lines.push(format!(r#"{{"model_a": "x", "model_b": "y", "winner": "{w}", "rater": "r{}", "item": "q{}"}}"#, i % 2, i / 2));
        }
        std::fs::write(&votes, lines.join("\n")).unwrap();
        run(parse(&["arena-ratings", "--votes", votes.to_str().unwrap(), "--rounds", "50"])).unwrap();
        run(parse(&["arena-ratings", "--votes", votes.to_str().unwrap(), "--rounds", "50", "--json"])).unwrap();
        std::fs::write(&votes, r#"{"model_a": "x", "model_b": "y", "winner": "maybe"}"#).unwrap();
        let e = run(parse(&["arena-ratings", "--votes", votes.to_str().unwrap()])).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("maybe"), "{e}");
    }

    /// `medpo eval` end to end on the tiny LLaVA-Med fixture (random weights, so the answers
    /// are gibberish): answers file in the seed's format, summary, and resume.
    #[test]
    fn eval_runs_the_tiny_fixture_model_and_resumes() {
        let fixtures = data_dir().join("../../fixtures/v1");
        let model = fixtures.join("llava-med-tiny");
        let d = tmp("eval-tiny");
        let bench = d.join("bench.jsonl");
        let lines: Vec<String> = ["Is there a nodule?", "What modality is this?", "Is this a CT?"]
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let t = if q.starts_with("Is") { "CLOSED" } else { "OPEN" };
                serde_json::json!({"question_id": i, "image": "scan.png", "text": format!("{q}\n<image>"),
                    "gpt4_answer": if t == "CLOSED" { "yes" } else { "x-ray" }, "answer_type": t})
                .to_string()
            })
            .collect();
        std::fs::write(&bench, lines.join("\n")).unwrap();
        let answers = d.join("a.jsonl");
        let args = |limit: &str| {
            parse(&[
                "eval", "--model", model.to_str().unwrap(), "--bench", bench.to_str().unwrap(),
                "--images", fixtures.to_str().unwrap(), "--answers", answers.to_str().unwrap(),
                "--batch-size", "2", "--max-new-tokens", "4", "--rounds", "20", "--limit", limit,
            ])
        };
        run(args("2")).unwrap();
        assert_eq!(read_answers(&answers).unwrap().len(), 2);
        run(args("3")).unwrap();
        let a = read_answers(&answers).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[2].model_id, "llava-med-tiny");
        assert_eq!(a[2].prompt, "<image>\nIs this a CT?");
        let s = RunSummary::read_json(&d.join("a.summary.json")).unwrap();
        assert_eq!((s.counts.items, s.counts.answered), (3, 3));
    }

    /// `medpo eval --remote`: the questions go to an OpenAI-compatible server (a scripted one
    /// here) with their images as data URLs; answers, resume and scores as for local models.
    #[test]
    fn eval_answers_with_a_remote_model() {
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let log = seen.clone();
        let url = medpo_remote::testing::serve(move |r| {
            log.lock().unwrap().push(serde_json::from_str(&r.body).unwrap());
            Some(medpo_remote::testing::completion("Yes."))
        });
        let fixtures = data_dir().join("../../fixtures/v1");
        let d = tmp("eval-remote");
        let bench = d.join("bench.jsonl");
        let lines: Vec<String> = (0..3)
            .map(|i| {
                serde_json::json!({"question_id": i, "image": "scan.png", "text": "Is there a nodule?\n<image>",
                    "gpt4_answer": if i == 2 { "no" } else { "yes" }, "answer_type": "CLOSED"})
                .to_string()
            })
            .collect();
        std::fs::write(&bench, lines.join("\n")).unwrap();
        let answers = d.join("a.jsonl");
        run(parse(&[
            "eval", "--remote", &url, "--remote-model", "llava-med-7b", "--bench", bench.to_str().unwrap(),
            "--images", fixtures.to_str().unwrap(), "--answers", answers.to_str().unwrap(), "--rounds", "20",
        ]))
        .unwrap();
        let a = read_answers(&answers).unwrap();
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|x| x.text == "Yes." && x.model_id == "llava-med-7b"));
        let s = RunSummary::read_json(&d.join("a.summary.json")).unwrap();
        assert!((s.metric("closed/accuracy").unwrap().value - 2.0 / 3.0).abs() < 1e-12);
        let reqs = seen.lock().unwrap();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0]["model"], "llava-med-7b");
        assert_eq!(reqs[0]["temperature"], 0.0);
        let url = reqs[0]["messages"][0]["content"][1]["image_url"]["url"].as_str().unwrap();
        assert!(url.starts_with("data:image/png;base64,iVBOR"), "{}", &url[..40]);
        // --remote and --model together, or --remote without its model name, are refused.
        assert!(Cli::try_parse_from(["medpo", "eval", "--remote", "http://h/v1", "--bench", "b", "--images", "i"]).is_err());
        assert!(Cli::try_parse_from(["medpo", "eval", "--bench", "b", "--images", "i"]).is_err());
    }

    #[test]
    fn eval_reports_a_missing_model_clearly() {
        let d = tmp("eval");
        let e = run(parse(&[
            "eval", "--model", d.join("no-such-model").to_str().unwrap(), "--bench", "vqa-rad",
            "--data-dir", data_dir().to_str().unwrap(), "--images", d.to_str().unwrap(),
            "--answers", d.join("a.jsonl").to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(format!("{e:#}").contains("no-such-model"), "{e:#}");
    }
}
