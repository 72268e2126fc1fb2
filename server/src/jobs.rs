//! The persistent job queue's training worker.
//!
//! Jobs live in the database (`training_jobs`), so the queue survives restarts: one worker per
//! device claims the oldest queued job (the database refuses a second running job on a device),
//! runs the training engine on a blocking thread, records every optimizer step (the job page
//! charts them live over server-sent events) and checks for a cancel request once a second.
//! A job left `running` by a killed server is put back in the queue at start-up and resumes
//! from its last checkpoint (`save_steps`), ending with the same weights as an uninterrupted
//! run. A finished job registers its model (LoRA: the merged checkpoint) with its lineage and
//! a card, so it joins Compare and the arena at once, and queues the evaluation runs the form
//! asked for.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use app::training_config::{job_dataset, job_dir, job_log, needs_image_negative, train_config};
use medpo_store::Store;
use medpo_train::data::PreferenceRecord;
use medpo_train::metrics::{StepRecord, TrainCallback};
use medpo_types::{BenchmarkSpec, JobStatus, ModelEntry, NewModel, TrainingJob};

use crate::AppState;

/// How often an idle worker looks for a queued job, and a running one for a cancel request.
const POLL: Duration = Duration::from_millis(500);

/// Devices jobs can be queued on: the CPU, and the GPU when built with `cuda` and one is
/// present.
pub fn devices() -> Vec<String> {
    let mut d = vec!["cpu".to_string()];
    if cfg!(feature = "cuda") && medpo_models::parse_device("cuda").is_ok() {
        d.push("cuda".to_string());
    }
    d
}

/// What the workers need from the server.
#[derive(Clone, Debug)]
pub struct Queue {
    pub store: Store,
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub benchmarks: Vec<BenchmarkSpec>,
}

impl Queue {
    pub fn from_state(state: &AppState) -> Self {
        Queue {
            store: state.ctx.store.clone(),
            data_dir: state.ctx.data_dir.clone(),
            models_dir: state.ctx.models_dir.clone(),
            benchmarks: state.config.benchmarks.clone(),
        }
    }
}

/// Puts work left running by a previous process back in the queue, then starts one training
/// worker per device and the evaluation worker.
pub async fn start_workers(state: &AppState) -> anyhow::Result<()> {
    start(Queue::from_state(state)).await
}

/// [`start_workers`] for a queue built by hand (`medpo worker`).
pub async fn start(q: Queue) -> anyhow::Result<()> {
    let jobs = q.store.requeue_running_jobs().await?;
    let evals = q.store.requeue_running_evals().await?;
    if jobs + evals > 0 {
        tracing::warn!(jobs, evals, "work left running by a previous server is queued again (training resumes from its last checkpoint)");
    }
    for device in devices() {
        tokio::spawn(training_worker(q.clone(), device));
    }
    tokio::spawn(crate::evals::eval_worker(q));
    Ok(())
}

async fn training_worker(q: Queue, device: String) {
    loop {
        match q.store.claim_next_job(&device).await {
            Ok(Some(job)) => run_job(&q, job).await,
            Ok(None) => tokio::time::sleep(POLL).await,
            Err(e) => {
                tracing::warn!(error = %e, device, "cannot read the training queue; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Appends a timestamped line to a job's log (and to the server log).
pub fn log_line(data_dir: &Path, job_id: i64, line: &str) {
    tracing::info!(job = job_id, "{line}");
    let path = job_log(data_dir, job_id);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        writeln!(f, "{}:{:02} UTC  {line}", medpo_types::format_time(ms), (ms / 1000) % 60)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the job log");
    }
}

async fn run_job(q: &Queue, job: TrainingJob) {
    let id = job.id;
    log_line(&q.data_dir, id, &format!("started on {} (objective {})", job.device, job.objective));
    let cancel = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    // The cancel request is read from the database, so a cancel from any server process (or
    // one made while the model loads) reaches the trainer at its next step boundary.
    let watcher = {
        let (store, cancel, done) = (q.store.clone(), cancel.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                if store.cancel_requested(id).await.unwrap_or(false) {
                    cancel.store(true, Ordering::SeqCst);
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        })
    };
    let result = execute(q, &job, cancel).await;
    done.store(true, Ordering::SeqCst);
    let _ = watcher.await;
    let (status, error, model) = match result {
        Ok(Outcome::Finished(model)) => {
            log_line(&q.data_dir, id, &format!("finished: model `{}` (id {}) joins the arena", model.name, model.id));
            (JobStatus::Succeeded, None, Some(model.id))
        }
        Ok(Outcome::Cancelled(step)) => {
            log_line(&q.data_dir, id, &format!("cancelled at step {step} (a checkpoint was written)"));
            (JobStatus::Cancelled, Some(format!("cancelled at step {step}")), None)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            log_line(&q.data_dir, id, &format!("failed: {msg}"));
            (JobStatus::Failed, Some(msg), None)
        }
    };
    if let Err(e) = q.store.finish_job(id, status, error.as_deref(), model).await {
        tracing::error!(job = id, error = %e, "cannot record the end of a training job");
    }
    if let (Some(model_id), JobStatus::Succeeded) = (model, status) {
        queue_evals(q, &job, model_id).await;
    }
}

enum Outcome {
    Finished(ModelEntry),
    Cancelled(u64),
}

async fn execute(q: &Queue, job: &TrainingJob, cancel: Arc<AtomicBool>) -> anyhow::Result<Outcome> {
    let base = q.store.model(job.base_model_id).await.context("the base model")?;
    let base_dir = app::ssr::resolve_model_dir(&q.models_dir, &base.path);
    let cfg = train_config(&job.config, &base_dir, &q.data_dir, job.id).map_err(anyhow::Error::msg)?;
    let snapshot = job.snapshot_id.context("the job names no dataset snapshot")?;
    let dataset = job_dataset(&q.data_dir, job.id);
    if !dataset.is_file() {
        write_dataset(q, job, snapshot, &cfg).await?;
    }
    std::fs::write(job_dir(&q.data_dir, job.id).join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    let handle = tokio::runtime::Handle::current();
    let (store, data_dir, id, models_dir) = (q.store.clone(), q.data_dir.clone(), job.id, q.models_dir.clone());
    let (total, device) = (job.total_steps, job.device.clone());
    let out = tokio::task::spawn_blocking(move || {
        let mut recorder = StepRecorder { store, handle, job_id: id, data_dir, total };
        let opts = medpo_cli::train::TrainOptions { models_dir: Some(models_dir), device: Some(device), ..Default::default() };
        medpo_cli::train::run_training_with(&cfg, &opts, &cancel, &mut [&mut recorder])
    })
    .await
    .context("the training thread panicked")??;
    if let Some(from) = &out.resumed_from {
        log_line(&q.data_dir, job.id, &format!("resumed from {}", from.display()));
    }
    match out.stop {
        medpo_train::trainer::Stop::Finished => {}
        medpo_train::trainer::Stop::Cancelled => return Ok(Outcome::Cancelled(out.global_step)),
        medpo_train::trainer::Stop::Interrupted => anyhow::bail!("the trainer stopped early"),
    }
    // LoRA exports `adapter/` then `merged/`; full fine-tuning `model/`: serve the last.
    let dir = out.exported.last().context("the trainer exported no model")?.clone();
    let model = register_result(q, job, &base, &dir, out.global_step).await?;
    Ok(Outcome::Finished(model))
}

/// Writes the snapshot's pairs as the job's TRL JSONL (images relative to the data folder;
/// a rater's region becomes the record's ROI), with image negatives when the objective
/// trains on them.
async fn write_dataset(q: &Queue, job: &TrainingJob, snapshot: i64, cfg: &medpo_train::config::TrainConfig) -> anyhow::Result<()> {
    let (mut records, _) = crate::api::datasets::records(&q.store, snapshot).await?;
    let dir = job_dir(&q.data_dir, job.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if needs_image_negative(&cfg.loss.loss_type) {
        let kind: medpo_train::negatives::NegativeKind =
            job.config.get("image_negative").and_then(|v| v.as_str()).unwrap_or("roi-noise").parse()?;
        let spec = medpo_train::negatives::NegativeSpec::new(kind, cfg.args.seed);
        let (data_dir, neg_dir) = (q.data_dir.clone(), dir.join("negatives"));
        records = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PreferenceRecord>> {
            let mut records = records;
            medpo_train::negatives::build_negatives(&mut records, &data_dir, &neg_dir, &spec)?;
            Ok(records)
        })
        .await??;
        log_line(&q.data_dir, job.id, &format!("made {} image negatives ({})", records.len(), kind.name()));
    }
    // Written through a temporary file: a job killed here starts over cleanly.
    let path = job_dataset(&q.data_dir, job.id);
    let tmp = path.with_extension("jsonl.tmp");
    medpo_train::data::save_trl_jsonl(&tmp, &records)?;
    std::fs::rename(&tmp, &path)?;
    log_line(&q.data_dir, job.id, &format!("dataset: {} pairs from snapshot {snapshot}", records.len()));
    Ok(())
}

/// Registers the job's model with its lineage and a card.
async fn register_result(q: &Queue, job: &TrainingJob, base: &ModelEntry, dir: &Path, steps: u64) -> anyhow::Result<ModelEntry> {
    let probe = app::ssr::probe_checkpoint(dir).map_err(anyhow::Error::msg)?;
    let snapshot = match job.snapshot_id {
        Some(s) => q.store.snapshot(s).await.ok(),
        None => None,
    };
    let snap_text = snapshot
        .map(|s| format!("dataset snapshot v{} (id {}, {} pairs, sha256 {})", s.version, s.id, s.pair_count, s.sha256))
        .unwrap_or_else(|| "no snapshot".into());
    let card = format!(
        "{name}: `{base}` preference-tuned with `{objective}` for {steps} optimizer steps on {snap} by training job {job} (on {device}).\n\
         Lineage: base model `{base}` (id {base_id}) → objective `{objective}` → this checkpoint. The job's resolved configuration is \
         in `{dir}/../config.json`.\n\
         Trained on votes collected in this arena; evaluate it before relying on it. Not for clinical use.",
        name = job.name,
        base = base.name,
        objective = job.objective,
        snap = snap_text,
        job = job.id,
        device = job.device,
        base_id = base.id,
        dir = dir.display(),
    );
    let mut new = NewModel {
        name: job.name.clone(),
        base: base.base.clone(),
        variant: job.objective.clone(),
        layout: probe.layout,
        parent_id: Some(base.id),
        path: dir.display().to_string(),
        files: probe.files,
        card,
        params: probe.params,
    };
    match q.store.register_model(&new).await {
        Ok(m) => Ok(m),
        Err(e) if e.is_conflict() => {
            new.name = format!("{} (job {})", job.name, job.id);
            Ok(q.store.register_model(&new).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Queues the evaluation runs the launch form asked for.
async fn queue_evals(q: &Queue, job: &TrainingJob, model_id: i64) {
    let wanted: Vec<String> = job
        .config
        .get("eval_benchmarks")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|b| b.as_str().map(String::from)).collect())
        .unwrap_or_default();
    for name in wanted {
        let Some(spec) = q.benchmarks.iter().find(|b| b.name == name) else {
            log_line(&q.data_dir, job.id, &format!("evaluation on `{name}` skipped: the server no longer has that benchmark"));
            continue;
        };
        // The base model is evaluated too when it has no run on this benchmark yet, so the
        // board can compare the variant with its SFT base.
        let mut models = vec![model_id];
        if crate::evals::needs_baseline(&q.store, job.base_model_id, &name).await {
            models.push(job.base_model_id);
        }
        for m in models {
            match crate::evals::queue(&q.store, m, spec, job.created_by).await {
                Ok(run) => log_line(&q.data_dir, job.id, &format!("queued evaluation run {} on `{name}` (model {m})", run.id)),
                Err(e) => log_line(&q.data_dir, job.id, &format!("could not queue the evaluation on `{name}`: {e}")),
            }
        }
    }
}

/// Records each optimizer step in the database (the live chart reads it) and the job log.
struct StepRecorder {
    store: Store,
    handle: tokio::runtime::Handle,
    job_id: i64,
    data_dir: PathBuf,
    total: i64,
}

impl TrainCallback for StepRecorder {
    fn on_step(&mut self, r: &StepRecord) -> medpo_train::Result<()> {
        let mut m = serde_json::Map::new();
        m.insert("epoch".into(), serde_json::json!(r.epoch));
        for (k, v) in &r.metrics {
            if v.is_finite() {
                m.insert(k.clone(), serde_json::json!(v));
            }
        }
        let (store, id, step) = (self.store.clone(), self.job_id, r.step as i64);
        if let Err(e) = self.handle.block_on(store.record_step(id, step, &serde_json::Value::Object(m))) {
            tracing::warn!(job = id, step, error = %e, "cannot record a training step");
        }
        let get = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
        log_line(
            &self.data_dir,
            id,
            &format!("step {}/{}: loss {:.4}, reward margin {:+.4}, accuracy {:.2}", r.step, self.total, get("loss"), get("rewards/margins"), get("rewards/accuracies")),
        );
        Ok(())
    }
    fn on_checkpoint(&mut self, step: u64, dir: &Path) -> medpo_train::Result<()> {
        log_line(&self.data_dir, self.job_id, &format!("step {step}: checkpoint {}", dir.display()));
        Ok(())
    }
}
