//! The persistent job queue end to end on the fixture model: pairs frozen in a snapshot →
//! queued training jobs (one running at a time per device) → live metrics → the new model
//! registered with its lineage → the evaluation runs the job asked for; the snapshot
//! downloads; and a `medpo worker` killed with SIGKILL mid-job that, started again, resumes
//! from the last checkpoint and ends with the same weights as an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{config, register_fixture, shared};
use medpo_store::datasets::ImportedPair;
use medpo_store::Store;
use medpo_types::{JobStatus, NewScan, NewTrainingJob, Region, SourceFormat};

/// Copies the fixture scan into the data folder as an uploaded scan would be stored.
async fn add_scan(store: &Store, data_dir: &Path) -> i64 {
    let bytes = std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap();
    let img = image::load_from_memory(&bytes).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let rel = format!("scans/{sha}.png");
    std::fs::create_dir_all(data_dir.join("scans")).unwrap();
    std::fs::write(data_dir.join(&rel), &bytes).unwrap();
    let new = NewScan {
        sha256: sha,
        path: rel,
        size_bytes: bytes.len() as i64,
        width: img.width() as i64,
        height: img.height() as i64,
        source_format: SourceFormat::Png,
        modality: Some("CT".into()),
        body_part: None,
        view: None,
        uploaded_by: None,
    };
    store.insert_scan(&new).await.unwrap().0.id
}

/// Eight pairs on the scan (half with a rater's region), frozen in a snapshot; its id.
async fn snapshot(store: &Store, data_dir: &Path) -> i64 {
    let scan = add_scan(store, data_dir).await;
    for (i, organ) in ["left lung", "right lung", "liver", "heart"].iter().enumerate() {
        for f in ["nodule", "mass"] {
            store
                .import_pair(&ImportedPair {
                    scan_id: Some(scan),
                    question: format!("Is there a {f} in the {organ}?"),
                    chosen: format!("Yes, there is a {f} in the {organ}."),
                    rejected: format!("No, the {organ} is normal."),
                    region: (i % 2 == 0).then_some(Region { x: 2.0, y: 3.0, w: 10.0, h: 8.0 }),
                })
                .await
                .unwrap();
        }
    }
    let d = store.create_dataset("votes", "", None).await.unwrap();
    store.snapshot_dataset(d.id, "", None).await.unwrap().id
}

fn job(name: &str, base: i64, snapshot: i64, settings: serde_json::Value, total: i64) -> NewTrainingJob {
    NewTrainingJob {
        name: name.into(),
        objective: settings["loss_type"].as_str().unwrap().into(),
        config: settings,
        base_model_id: base,
        snapshot_id: Some(snapshot),
        device: "cpu".into(),
        total_steps: total,
        created_by: None,
    }
}

fn lora(loss: &str, steps: u64, save_steps: u64) -> serde_json::Value {
    serde_json::json!({
        "loss_type": loss,
        "beta": 0.1,
        "learning_rate": 1e-2,
        "warmup_ratio": 0.0,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": steps,
        "save_steps": save_steps,
        "use_peft": true,
        "lora_r": 4,
        "lora_alpha": 8,
    })
}

async fn wait_for(store: &Store, id: i64, secs: u64) -> medpo_types::TrainingJob {
    let start = Instant::now();
    loop {
        let j = store.job(id).await.unwrap();
        if j.status.is_final() {
            return j;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "job {id} did not finish in {secs} s: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn adapter(data_dir: &Path, job: i64) -> Vec<u8> {
    let p = app::training_config::job_dir(data_dir, job).join("out/adapter").join(medpo_train::lora::ADAPTER_WEIGHTS);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

use sha2::Digest as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_trains_registers_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    // A small benchmark of the fixture scan, configured as a deployment would.
    let vqa = dir.path().join("demo.jsonl");
    std::fs::write(
        &vqa,
        "{\"question_id\": 1, \"image\": \"scan.png\", \"text\": \"Is there a nodule?\", \"gpt4_answer\": \"yes\", \"answer_type\": \"CLOSED\"}\n\
         {\"question_id\": 2, \"image\": \"scan.png\", \"text\": \"Which organ is shown?\", \"gpt4_answer\": \"lung\", \"answer_type\": \"OPEN\"}\n",
    )
    .unwrap();
    let cfg = config(dir.path(), |_| {});
    std::fs::write(
        dir.path().join("medpo.toml"),
        format!("[[benchmark]]\nname = \"demo\"\nquestions = \"{}\"\nimages = \"{}\"\n", vqa.display(), shared().join("fixtures/v1").display()),
    )
    .unwrap();
    let cfg = medpo_server::Settings { config: Some(dir.path().join("medpo.toml")), data_dir: Some(cfg.data_dir.clone()), models_dir: Some(cfg.models_dir.clone()), ..Default::default() }
        .resolve()
        .unwrap();
    let store = medpo_server::open_store(&cfg).await.unwrap();
    let base = register_fixture(&store, "llava-med-tiny", "llava_mistral").await;
    let snap = snapshot(&store, &cfg.data_dir).await;
    let mut dpo = lora("sigmoid", 4, 2);
    dpo["eval_benchmarks"] = serde_json::json!(["demo"]);
    let a = store.create_job(&job("tiny-dpo", base, snap, dpo, 4)).await.unwrap();
    let mut mdpo = lora("mdpo", 2, 0);
    mdpo["image_negative"] = serde_json::json!("roi-noise");
    let b = store.create_job(&job("tiny-mdpo", base, snap, mdpo, 2)).await.unwrap();
    let c = store.create_job(&job("cancelled", base, snap, lora("sigmoid", 100, 0), 100)).await.unwrap();
    store.request_cancel(c.id).await.unwrap();

    let q = medpo_server::jobs::Queue { store: store.clone(), data_dir: cfg.data_dir.clone(), models_dir: cfg.models_dir.clone(), benchmarks: cfg.benchmarks.clone() };
    medpo_server::jobs::start(q).await.unwrap();
    // Never two running at once on the CPU.
    let start = Instant::now();
    while !store.job(b.id).await.unwrap().status.is_final() {
        let running = store.list_jobs().await.unwrap().iter().filter(|j| j.status == JobStatus::Running).count();
        assert!(running <= 1, "{running} jobs running on one device");
        assert!(start.elapsed() < Duration::from_secs(300), "the jobs did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = wait_for(&store, a.id, 10).await;
    assert_eq!(a.status, JobStatus::Succeeded, "{:?}", a.error);
    let metrics = store.job_metrics(a.id, 0).await.unwrap();
    assert_eq!(metrics.iter().map(|r| r.step).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(metrics[0].metrics.get("rewards/margins").is_some() && metrics[0].metrics.get("learning_rate").is_some());
    let model = store.model(a.result_model_id.unwrap()).await.unwrap();
    assert_eq!((model.name.as_str(), model.parent_id, model.variant.as_str()), ("tiny-dpo", Some(base), "sigmoid"));
    assert!(model.card.contains("Not for clinical use") && model.card.contains(&format!("training job {}", a.id)), "{}", model.card);
    assert!(Path::new(&model.path).ends_with("out/merged"), "{}", model.path);
    let b = store.job(b.id).await.unwrap();
    assert_eq!(b.status, JobStatus::Succeeded, "mdpo with ROI-noise negatives: {:?}", b.error);
    let negs = app::training_config::job_dir(&cfg.data_dir, b.id).join("negatives/roi-noise");
    assert_eq!(std::fs::read_dir(&negs).unwrap().count(), 8, "one image negative per pair");
    assert_eq!(store.job(c.id).await.unwrap().status, JobStatus::Cancelled);
    let log = std::fs::read_to_string(app::training_config::job_log(&cfg.data_dir, a.id)).unwrap();
    assert!(log.contains("step 4/4") && log.contains("joins the arena"), "{log}");

    // The evaluation runs the job asked for: the new model and its SFT base on `demo`.
    let start = Instant::now();
    let runs = loop {
        let runs = store.list_eval_runs(10).await.unwrap();
        if runs.len() == 2 && runs.iter().all(|r| r.status.is_final()) {
            break runs;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "evaluations did not finish: {runs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for r in &runs {
        assert_eq!((r.status, r.n_items, r.benchmark.as_str()), (JobStatus::Succeeded, 2, "demo"), "{:?}", r.error);
        assert!(r.metrics.get("closed/accuracy").and_then(|m| m.get("value")).is_some(), "{}", r.metrics);
    }
    let mut models: Vec<i64> = runs.iter().map(|r| r.model_id).collect();
    models.sort();
    assert_eq!(models, [base, model.id]);
    assert_eq!(store.leaderboard().await.unwrap().len(), 2);
}

/// A benchmark without an images folder is listed but refused, with the reason.
#[tokio::test]
async fn builtin_benchmarks_need_an_images_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |_| {});
    let store = medpo_server::open_store(&cfg).await.unwrap();
    let base = register_fixture(&store, "llava-med-tiny", "llava_mistral").await;
    let spec = cfg.benchmarks.iter().find(|b| b.name == "vqa-rad").unwrap();
    let err = medpo_server::evals::queue(&store, base, spec, None).await.unwrap_err().to_string();
    assert!(err.contains("images folder") && err.contains("medpo.toml"), "{err}");
    assert!(store.list_eval_runs(10).await.unwrap().is_empty(), "nothing is queued");
}

fn worker(cfg_file: &Path, data: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_medpo"))
        .args(["worker", "--config"])
        .arg(cfg_file)
        .arg("--data-dir")
        .arg(data)
        .arg("--models-dir")
        .arg(shared().join("fixtures/v1"))
        .env("MEDPO_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `medpo worker` killed with SIGKILL after a checkpoint: the job is still `running` in the
/// database; a new worker queues it again, resumes from the checkpoint and finishes with the
/// same adapter bytes as the same job run without interruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_resumes_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |_| {});
    let cfg_file: PathBuf = dir.path().join("medpo.toml");
    let store = medpo_server::open_store(&cfg).await.unwrap();
    let base = register_fixture(&store, "llava-med-tiny", "llava_mistral").await;
    let snap = snapshot(&store, &cfg.data_dir).await;
    let (steps, save) = (120u64, 5u64);
    let killed = store.create_job(&job("killed", base, snap, lora("sigmoid", steps, save), steps as i64)).await.unwrap();

    let mut w = worker(&cfg_file, &cfg.data_dir);
    let start = Instant::now();
    loop {
        let j = store.job(killed.id).await.unwrap();
        assert!(!j.status.is_final(), "the job ended before it could be killed: {j:?}");
        if j.step > save as i64 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress: {j:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.kill().unwrap(); // SIGKILL
    w.wait().unwrap();
    let j = store.job(killed.id).await.unwrap();
    assert_eq!(j.status, JobStatus::Running, "a killed worker leaves its job running");
    let at_kill = j.step;
    assert!(at_kill < steps as i64, "{j:?}");

    let mut w = worker(&cfg_file, &cfg.data_dir);
    let j = wait_for(&store, killed.id, 300).await;
    assert_eq!(j.status, JobStatus::Succeeded, "{:?}", j.error);
    assert_eq!(j.step, steps as i64);
    let log = std::fs::read_to_string(app::training_config::job_log(&cfg.data_dir, killed.id)).unwrap();
    assert!(log.contains("resumed from"), "{log}");

    // The same job, never interrupted.
    let clean = store.create_job(&job("clean", base, snap, lora("sigmoid", steps, save), steps as i64)).await.unwrap();
    let c = wait_for(&store, clean.id, 300).await;
    assert_eq!(c.status, JobStatus::Succeeded, "{:?}", c.error);
    w.kill().unwrap();
    w.wait().unwrap();
    assert!(adapter(&cfg.data_dir, killed.id) == adapter(&cfg.data_dir, clean.id), "resumed and uninterrupted runs differ (killed at step {at_kill})");
}
