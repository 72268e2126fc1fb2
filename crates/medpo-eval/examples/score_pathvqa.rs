//! Benchmark: score all 6,719 PathVQA test answers with 95% bootstrap intervals.
//!
//! Predictions are synthesized deterministically from the gold answers (exact, re-cased with
//! punctuation, wrong, partial, empty), so the run needs no model.
//!
//! ```text
//! cargo run --release -p medpo-eval --example score_pathvqa [-- DATA_DIR [ROUNDS]]
//! ```
//!
//! DATA_DIR defaults to `$MEDPO_VQA_DIR` or `../shared/data/vqa`; ROUNDS to 1000.

use std::path::PathBuf;
use std::time::Instant;

use medpo_eval::answers::{append_answers, read_answers, AnswerRecord};
use medpo_eval::bench::{default_data_dir, AnswerType, VqaBenchmark};
use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::score::score_run;

fn synthesize(i: usize, gold: &str, t: AnswerType) -> String {
    match (i % 5, t) {
        (0, _) => gold.to_string(),
        (1, _) => format!("{}.", gold.to_uppercase()),
        (2, AnswerType::Closed) => if gold.eq_ignore_ascii_case("yes") { "No".into() } else { "Yes".into() },
        (2, AnswerType::Open) => gold.split_whitespace().next().unwrap_or("").to_string(),
        (3, _) => format!("I think the answer is {gold}, most likely."),
        _ => String::new(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().map(PathBuf::from).unwrap_or_else(default_data_dir);
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1000);

    let t0 = Instant::now();
    let bench = VqaBenchmark::load("pathvqa", &data_dir)?;
    let t_read = t0.elapsed();
    let answers: Vec<AnswerRecord> = bench
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| AnswerRecord {
            question_id: it.question_id.clone(),
            prompt: it.prompt(),
            text: synthesize(i, &it.answer, it.answer_type),
            answer_id: String::new(),
            model_id: "synthetic".into(),
            answer: it.answer.clone(),
            answer_type: it.raw_answer_type.clone(),
            metadata: serde_json::Value::Null,
        })
        .collect();
    // Round-trip through an answer file, as `medpo score-answers` reads it.
    let file = std::env::temp_dir().join(format!("medpo-eval-bench-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&file);
    append_answers(&file, &answers)?;
    let cfg = BootstrapConfig { rounds, ..Default::default() };
    let t1 = Instant::now();
    let answers = read_answers(&file)?;
    let t_answers = t1.elapsed();
    let t2 = Instant::now();
    let summary = score_run(&bench, &answers, "synthetic", &cfg)?;
    let t_score = t2.elapsed();
    let _ = std::fs::remove_file(&file);

    println!("items scored:      {}", summary.counts.items);
    println!("metrics with CIs:  {} ({} bootstrap rounds each)", summary.metrics.len(), rounds);
    for key in ["closed/accuracy", "open/recall", "open/token_f1", "overall/score"] {
        if let Some(m) = summary.metric(key) {
            println!("  {key:<18} {:.4} [{:.4}, {:.4}]", m.value, m.ci_low, m.ci_high);
        }
    }
    println!("read benchmark:    {:.1} ms", t_read.as_secs_f64() * 1e3);
    println!("read answers:      {:.1} ms", t_answers.as_secs_f64() * 1e3);
    println!("score + CIs:       {:.1} ms", t_score.as_secs_f64() * 1e3);
    println!(
        "read + score + CIs (what score-answers does): {:.1} ms",
        (t_read + t_answers + t_score).as_secs_f64() * 1e3
    );
    Ok(())
}
