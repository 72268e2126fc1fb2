//! Load run of the OpenAI-compatible API: N concurrent clients each stream one chat
//! completion with an image from a release server on loopback (tiny fixture models), and
//! the run reports time to first token (p50/p99/max), total time and failed requests.
//!
//! ```text
//! scripts/build.sh --release
//! cargo run --release -p medpo-server --example api_load -- [--clients 200] [--max-tokens 16]
//! ```
//!
//! Bounded: one request per client, a 120 s timeout each, loopback only. The server gets a
//! fresh data folder, a clinician with one API key (made with `medpo api-key create`) and a
//! rate limit high enough for the run. Generation is gated by the server's model pool (a few
//! at a time), so most clients wait in that queue: time to first token grows with the queue.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine;

struct Args {
    binary: PathBuf,
    shared: PathBuf,
    clients: usize,
    max_tokens: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        binary: PathBuf::from("target/release/medpo"),
        shared: PathBuf::from("../shared"),
        clients: 200,
        max_tokens: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--binary" => a.binary = v.into(),
            "--shared" => a.shared = v.into(),
            "--clients" => a.clients = v.parse().expect("--clients N"),
            "--max-tokens" => a.max_tokens = v.parse().expect("--max-tokens N"),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn cli(binary: &Path, data: &Path, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("MEDPO_PASSWORD", "load-test-password")
        .stderr(Stdio::null())
        .output()
        .expect("run medpo");
    assert!(out.status.success(), "medpo {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One client's result: time to the first content chunk and to `[DONE]`.
#[derive(Debug)]
enum Outcome {
    Ok { ttft: Duration, total: Duration, chunks: usize },
    Failed(String),
}

fn one_client(url: &str, key: &str, body: &str) -> Outcome {
    let started = Instant::now();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    let res = match agent.post(url).set("Authorization", &format!("Bearer {key}")).set("Content-Type", "application/json").send_string(body) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut ttft = None;
    let mut chunks = 0;
    let mut done = false;
    for line in BufReader::new(res.into_reader()).lines() {
        let Ok(line) = line else { return Outcome::Failed("the stream broke".into()) };
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            done = true;
            break;
        }
        if data.contains("\"error\"") {
            return Outcome::Failed(data.to_string());
        }
        chunks += 1;
        if ttft.is_none() && data.contains("\"content\":\"") && !data.contains("\"content\":\"\"") {
            ttft = Some(started.elapsed());
        }
    }
    if !done {
        return Outcome::Failed("no [DONE]".into());
    }
    let total = started.elapsed();
    Outcome::Ok { ttft: ttft.unwrap_or(total), total, chunks }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = parse_args();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    cli(&a.binary, &data, &["user", "add", "load", "--role", "clinician"]);
    let key = cli(&a.binary, &data, &["api-key", "create", "load", "--name", "load"]);
    let port = free_port();
    let server = Server(
        Command::new(&a.binary)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--log", "warn", "--api-rate-limit", "100000"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--models-dir")
            .arg(a.shared.join("fixtures/v1"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("{base}/readyz")).call().is_err() {
        assert!(Instant::now() < deadline, "the server did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let png = std::fs::read(a.shared.join("fixtures/v1/scan.png")).expect("the fixture scan");
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png));
    let body = serde_json::json!({
        "model": "llava-med-tiny",
        "stream": true,
        "max_tokens": a.max_tokens,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Is there a nodule in the left lung?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
    })
    .to_string();
    // Warm the model once (load time is not what this run measures).
    let warm = one_client(&format!("{base}/v1/chat/completions"), &key, &body);
    assert!(matches!(warm, Outcome::Ok { .. }), "warm-up failed: {warm:?}");

    let barrier = Arc::new(Barrier::new(a.clients));
    let started = Instant::now();
    let handles: Vec<_> = (0..a.clients)
        .map(|_| {
            let (barrier, key, body, url) = (barrier.clone(), key.clone(), body.clone(), format!("{base}/v1/chat/completions"));
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    barrier.wait();
                    one_client(&url, &key, &body)
                })
                .unwrap()
        })
        .collect();
    let outcomes: Vec<Outcome> = handles.into_iter().map(|h| h.join().unwrap_or(Outcome::Failed("client panicked".into()))).collect();
    let wall = started.elapsed();
    drop(server);

    let mut ttft: Vec<Duration> = Vec::new();
    let mut total: Vec<Duration> = Vec::new();
    let mut chunks = 0;
    let mut failures = Vec::new();
    for o in &outcomes {
        match o {
            Outcome::Ok { ttft: t, total: d, chunks: c } => {
                ttft.push(*t);
                total.push(*d);
                chunks += c;
            }
            Outcome::Failed(e) => failures.push(e.clone()),
        }
    }
    ttft.sort();
    total.sort();
    println!("{} concurrent streaming clients, {} max tokens each, llava-med-tiny, loopback", a.clients, a.max_tokens);
    println!("completed {} / {}, failed {}, wall {:.2} s, {} chunks", ttft.len(), a.clients, failures.len(), wall.as_secs_f64(), chunks);
    if !ttft.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "time to first token: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            ms(pct(&ttft, 0.5)),
            ms(pct(&ttft, 0.99)),
            ms(*ttft.last().unwrap())
        );
        println!("total per request:   p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", ms(pct(&total, 0.5)), ms(pct(&total, 0.99)), ms(*total.last().unwrap()));
    }
    for f in failures.iter().take(5) {
        println!("failure: {f}");
    }
    std::process::exit(if failures.is_empty() { 0 } else { 1 });
}
