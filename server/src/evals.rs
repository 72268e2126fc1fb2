//! The persistent job queue's evaluation worker: one run at a time, a registered model over
//! a configured benchmark with the evaluation engine (`medpo_eval::runner`), answers appended
//! to `<data-dir>/evals/run-<id>.answers.jsonl` so a run interrupted by a restart resumes where
//! it stopped, progress recorded per batch, and the scored items and metrics (with 95%
//! bootstrap intervals) stored for the leaderboard.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use medpo_eval::bench::{VqaBenchmark, VqaItem};
use medpo_eval::runner::{run_eval, Answerer, RunConfig};
use medpo_store::Store;
use medpo_types::{BenchmarkSpec, EvalItem, EvalRun, JobStatus};

use crate::jobs::Queue;

/// Longest answer of a queued evaluation (the CLI's default).
const MAX_NEW_TOKENS: usize = 128;

/// Queues a run of `model_id` on `spec`; refused, with the reason, when the benchmark cannot
/// run on this server (no images folder).
pub async fn queue(store: &Store, model_id: i64, spec: &BenchmarkSpec, created_by: Option<i64>) -> anyhow::Result<EvalRun> {
    if let Some(why) = spec.unavailable() {
        anyhow::bail!(why);
    }
    let m = store.model(model_id).await?;
    if m.layout == app::ssr::REMOTE_LAYOUT {
        anyhow::bail!("`{}` is served by a remote server: evaluate it with `medpo eval --remote`", m.name);
    }
    Ok(store
        .queue_eval_run(model_id, &spec.name, medpo_eval::PROTOCOL_VERSION, &serde_json::to_value(spec)?, created_by)
        .await?)
}

/// Whether `model_id` has no run on `benchmark` yet (queued, running or succeeded).
pub async fn needs_baseline(store: &Store, model_id: i64, benchmark: &str) -> bool {
    match store.list_eval_runs(10_000).await {
        Ok(runs) => !runs.iter().any(|r| {
            r.model_id == model_id && r.benchmark == benchmark && matches!(r.status, JobStatus::Queued | JobStatus::Running | JobStatus::Succeeded)
        }),
        Err(_) => false,
    }
}

pub async fn eval_worker(q: Queue) {
    loop {
        match q.store.claim_next_eval().await {
            Ok(Some(run)) => {
                let id = run.id;
                let result = run_one(&q, run).await;
                let (status, metrics, error) = match result {
                    Ok(Some(metrics)) => (JobStatus::Succeeded, metrics, None),
                    Ok(None) => continue, // cancelled: the row already says so
                    Err(e) => (JobStatus::Failed, serde_json::json!({}), Some(format!("{e:#}"))),
                };
                if let Some(e) = &error {
                    tracing::warn!(run = id, error = %e, "evaluation run failed");
                }
                if let Err(e) = q.store.finish_eval_run(id, status, &metrics, error.as_deref()).await {
                    tracing::error!(run = id, error = %e, "cannot record the end of an evaluation run");
                }
            }
            Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the evaluation queue; retrying in 5 s");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}

/// Answers with the model engine and stops (as an answerer error) once the run is cancelled.
struct Cancellable {
    inner: medpo_cli::eval::ModelAnswerer,
    cancelled: Arc<AtomicBool>,
}

impl Answerer for Cancellable {
    fn answer_batch(&mut self, items: &[VqaItem]) -> medpo_eval::Result<Vec<String>> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(medpo_eval::Error::Answerer("cancelled".into()));
        }
        self.inner.answer_batch(items)
    }
}

/// Runs one evaluation; `Ok(None)` when it was cancelled.
async fn run_one(q: &Queue, run: EvalRun) -> anyhow::Result<Option<serde_json::Value>> {
    let spec: BenchmarkSpec = serde_json::from_value(run.config.clone()).context("the run's benchmark settings")?;
    if let Some(why) = spec.unavailable() {
        anyhow::bail!(why);
    }
    let images = spec.images.clone().unwrap_or_default();
    let model = q.store.model(run.model_id).await?;
    let dir = app::ssr::resolve_model_dir(&q.models_dir, &model.path);
    let answers_path = answers_path(&q.data_dir, run.id);
    std::fs::create_dir_all(answers_path.parent().unwrap_or(&q.data_dir))?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let handle = tokio::runtime::Handle::current();
    let (store, id, models_dir, model_name) = (q.store.clone(), run.id, q.models_dir.clone(), model.name.clone());
    let flag = cancelled.clone();
    tracing::info!(run = id, model = %model.name, benchmark = %spec.name, "evaluation run started");
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<medpo_eval::summary::RunSummary> {
        let bench = VqaBenchmark::load(&spec.questions, &medpo_eval::bench::default_data_dir())?;
        let opts = medpo_models::LoadOptions { models_dir: Some(models_dir), ..Default::default() };
        let m = medpo_models::Model::load(&dir, &opts).with_context(|| format!("loading `{model_name}`"))?;
        let mut answerer = Cancellable { inner: medpo_cli::eval::ModelAnswerer::new(m, images, MAX_NEW_TOKENS), cancelled: flag.clone() };
        let cfg = RunConfig {
            model_id: format!("model-{}", run.model_id),
            batch_size: 4,
            answers_path,
            summary_path: None,
            limit: spec.limit,
            bootstrap: Default::default(),
        };
        let summary = run_eval(&mut answerer, &bench, &cfg, &mut |p| {
            let _ = handle.block_on(store.eval_progress(id, p.done as i64, p.total as i64));
            // A cancel from the page ends the run at the next batch.
            if let Ok(r) = handle.block_on(store.eval_run(id)) {
                if r.status == JobStatus::Cancelled {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        })?;
        Ok(summary)
    })
    .await
    .context("the evaluation thread panicked")?;
    let summary = match summary {
        Err(_) if cancelled.load(Ordering::SeqCst) => return Ok(None),
        other => other?,
    };
    let items: Vec<EvalItem> = summary
        .items
        .iter()
        .map(|it| EvalItem {
            item_id: it.question_id.key(),
            answer_type: it.answer_type.as_str().to_string(),
            category: it.category.to_string(),
            question: it.question.clone(),
            gold: it.gold.clone(),
            prediction: it.prediction.clone().unwrap_or_default(),
            score: it.score,
        })
        .collect();
    q.store.add_eval_items(id, &items).await?;
    let mut metrics = serde_json::Map::new();
    for m in &summary.metrics {
        let num = |x: f64| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null };
        metrics.insert(m.key.clone(), serde_json::json!({"value": num(m.value), "lo": num(m.ci_low), "hi": num(m.ci_high), "n": m.n}));
    }
    tracing::info!(run = id, items = items.len(), "evaluation run finished");
    Ok(Some(serde_json::Value::Object(metrics)))
}

/// Where a run's answers are kept (for downloads and resume).
pub fn answers_path(data_dir: &std::path::Path, run_id: i64) -> PathBuf {
    data_dir.join("evals").join(format!("run-{run_id}.answers.jsonl"))
}
