//! Load benchmark of the vote endpoint: N concurrent simulated raters submit votes to a
//! release server on loopback; then a second run kills the server with SIGKILL in the middle
//! of the load and checks that every vote whose request had been answered is in the database.
//!
//! ```text
//! scripts/build.sh --release
//! cargo run --release -p medpo-server --example vote_load -- [--raters 200] [--votes 10] [--kill-at 0.5]
//! ```
//!
//! Raters are clinician accounts with sessions written straight into the database (the
//! benchmark measures votes, not argon2 sign-ins); each rater votes on its own comparisons.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Votes answered so far in the current run (the kill run waits for half of them).
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
use std::time::{Duration, Instant};

use medpo_store::{ConnectSettings, Store};
use medpo_types::{GenerationSettings, NewAnswer, NewModel, NewScan, Role, SourceFormat};
use sha2::{Digest, Sha256};

struct Args {
    binary: PathBuf,
    site_root: PathBuf,
    raters: usize,
    votes: usize,
    /// Kill when this share of the votes has been answered.
    kill_at: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        binary: PathBuf::from("target/release/medpo"),
        site_root: PathBuf::from("target/site"),
        raters: 200,
        votes: 10,
        kill_at: 0.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--binary" => a.binary = v.into(),
            "--site-root" => a.site_root = v.into(),
            "--raters" => a.raters = v.parse().expect("--raters N"),
            "--votes" => a.votes = v.parse().expect("--votes N"),
            "--kill-at" => a.kill_at = v.parse().expect("--kill-at FRACTION"),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

/// Raters with their session tokens and comparisons (id per rater, in order).
struct Fixture {
    dir: PathBuf,
    tokens: Vec<String>,
    comparisons: Vec<Vec<i64>>,
}

async fn prepare(dir: &Path, raters: usize, votes: usize) -> Fixture {
    std::fs::create_dir_all(dir).unwrap();
    let url = format!("sqlite://{}", dir.join("medpo.db").display());
    let store = Store::open(&url, &ConnectSettings::default()).await.unwrap();
    let mut models = Vec::new();
    for (i, v) in ["sft", "dpo", "mdpo", "mmedpo"].iter().enumerate() {
        let m = store
            .register_model(&NewModel {
                name: format!("model-{v}"),
                base: "llava-med".into(),
                variant: v.to_string(),
                layout: "llava_mistral".into(),
                parent_id: None,
                path: format!("/nonexistent/{i}"),
                files: vec![],
                card: String::new(),
                params: None,
            })
            .await
            .unwrap();
        models.push(m.id);
    }
    let (scan, _) = store
        .insert_scan(&NewScan {
            sha256: "ab".repeat(32),
            path: "scans/ab/none.png".into(),
            size_bytes: 1,
            width: 512,
            height: 512,
            source_format: SourceFormat::Png,
            modality: None,
            body_part: None,
            view: None,
            uploaded_by: None,
        })
        .await
        .unwrap();
    let mut tokens = Vec::new();
    let mut comparisons = Vec::new();
    for r in 0..raters {
        let u = store.create_user(&format!("rater{r:03}"), "$argon2id$unused", Role::Clinician).await.unwrap();
        let token = format!("{:064x}", r as u128 * 7919 + 0xfeed);
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        store.create_session(&hash, u.id, "csrf", 3_600_000).await.unwrap();
        tokens.push(token);
        let mut mine = Vec::new();
        for k in 0..votes {
            let (a, b) = (models[k % 4], models[(k + 1 + r % 3) % 4]);
            let ans = |m: i64, t: &str| NewAnswer {
                model_id: m,
                text: t.into(),
                settings: GenerationSettings::default(),
                latency_ms: Some(100),
                error: None,
            };
            let c = store
                .create_comparison(scan.id, "Is there a nodule?", true, Some(u.id), &[ans(a, "No nodule."), ans(b, "A 1 cm nodule.")])
                .await
                .unwrap();
            mine.push(c.id);
        }
        comparisons.push(mine);
    }
    store.close().await;
    Fixture { dir: dir.to_path_buf(), tokens, comparisons }
}

fn start_server(args: &Args, dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = Command::new(&args.binary)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .arg("--models-dir")
        .arg(dir.join("no-models"))
        .arg("--site-root")
        .arg(&args.site_root)
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the server (build it first: scripts/build.sh --release)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call().is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not become ready; see {}", dir.join("server.log").display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Default)]
struct Outcome {
    latencies_ms: Vec<f64>,
    acked: Vec<i64>,
    refused: usize,
    failed: usize,
}

/// Every rater on its own thread, voting on its comparisons one after the other.
fn run_load(port: u16, fx: &Fixture, stop_on_error: bool) -> (Outcome, Duration) {
    let out = Arc::new(Mutex::new(Outcome::default()));
    let start = Instant::now();
    let barrier = Arc::new(std::sync::Barrier::new(fx.tokens.len()));
    let handles: Vec<_> = fx
        .tokens
        .iter()
        .cloned()
        .zip(fx.comparisons.iter().cloned())
        .enumerate()
        .map(|(r, (token, comps))| {
            let (out, barrier) = (out.clone(), barrier.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                barrier.wait();
                for (k, cid) in comps.into_iter().enumerate() {
                    let winner = ["a", "b", "tie", "a"][(r + k) % 4];
                    let body = serde_json::json!({ "vote": {
                        "comparison_id": cid, "a_position": 0, "b_position": 1, "winner": winner,
                        "tags": [{ "side": "a", "tag": "missed_finding", "severity": "major" }],
                        "rationale": "load test", "region": { "x": 10.0, "y": 20.0, "w": 30.0, "h": 40.0 }
                    }});
                    let t = Instant::now();
                    let res = agent
                        .post(&format!("http://127.0.0.1:{port}/api/vote"))
                        .set("cookie", &format!("medpo_session={token}"))
                        .send_json(body);
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    let mut o = out.lock().unwrap();
                    match res {
                        Ok(r) => {
                            let v: serde_json::Value = r.into_json().unwrap_or_default();
                            match v.get("vote_id").and_then(|x| x.as_i64()) {
                                Some(id) => {
                                    ANSWERED.fetch_add(1, Ordering::SeqCst);
                                    o.acked.push(id);
                                    o.latencies_ms.push(ms);
                                }
                                None => o.failed += 1,
                            }
                        }
                        Err(ureq::Error::Status(_, _)) => o.refused += 1,
                        Err(_) => {
                            o.failed += 1;
                            if stop_on_error {
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed();
    let o = std::mem::take(&mut *out.lock().unwrap());
    (o, elapsed)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn stored_votes(dir: &Path) -> Vec<i64> {
    let url = format!("sqlite://{}", dir.join("medpo.db").display());
    let store = Store::open(&url, &ConnectSettings::default()).await.unwrap();
    let ids = store.vote_outcomes(None).await.unwrap().into_iter().map(|v| v.vote_id).collect();
    store.close().await;
    ids
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = std::env::temp_dir().join(format!("medpo-vote-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("vote load: {} raters × {} votes, {cores} cores, SQLite, release server on loopback", args.raters, args.votes);

    // 1. Throughput and latency.
    let fx = rt.block_on(prepare(&root.join("load"), args.raters, args.votes));
    let port = free_port();
    let mut server = start_server(&args, &fx.dir, port);
    let (o, elapsed) = run_load(port, &fx, false);
    let _ = server.kill();
    let _ = server.wait();
    let mut lat = o.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let stored = rt.block_on(stored_votes(&fx.dir));
    let lost = o.acked.iter().filter(|id| !stored.contains(id)).count();
    println!(
        "load: {} votes answered in {:.2} s ({:.0} votes/s); latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; refused {}, failed {}; stored {}, lost {}",
        o.acked.len(),
        elapsed.as_secs_f64(),
        o.acked.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        o.refused,
        o.failed,
        stored.len(),
        lost
    );

    // 2. SIGKILL in the middle of the load.
    let fx = rt.block_on(prepare(&root.join("kill"), args.raters, args.votes));
    let port = free_port();
    let server = Arc::new(Mutex::new(start_server(&args, &fx.dir, port)));
    let killer = {
        let server = server.clone();
        let at = (args.kill_at * (args.raters * args.votes) as f64) as usize;
        ANSWERED.store(0, Ordering::SeqCst);
        std::thread::spawn(move || {
            while ANSWERED.load(Ordering::SeqCst) < at {
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut s = server.lock().unwrap();
            let _ = s.kill(); // SIGKILL
            let _ = s.wait();
        })
    };
    let (o, _) = run_load(port, &fx, true);
    killer.join().unwrap();
    let stored = rt.block_on(stored_votes(&fx.dir));
    let lost: Vec<&i64> = o.acked.iter().filter(|id| !stored.contains(id)).collect();
    println!(
        "kill -9 once {:.0}% of the votes were answered: {} votes answered before the kill, {} requests cut off; after restart {} votes in the database, answered-but-lost {}",
        args.kill_at * 100.0,
        o.acked.len(),
        o.failed,
        stored.len(),
        lost.len()
    );
    let _ = std::io::stdout().flush();
    let _ = std::fs::remove_dir_all(&root);
    if lost.is_empty() && o.acked.len() + o.refused > 0 {
        std::process::exit(0);
    }
    eprintln!("FAILED: answered votes missing from the database: {lost:?}");
    std::process::exit(1);
}
