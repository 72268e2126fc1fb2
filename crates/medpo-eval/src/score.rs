//! Scoring an answer set against a VQA benchmark: per-item results and metrics with
//! intervals.
//!
//! Metric keys (protocol `medpo-eval/1`), each a mean over items with a bootstrap interval:
//!
//! | key | items | per-item value |
//! |---|---|---|
//! | `closed/accuracy` | closed | 1 if correct ([`closed_accuracy`](crate::closed_accuracy)) |
//! | `closed/unparsed_rate` | closed | 1 if a yes/no question got neither yes nor no |
//! | `open/recall` | open | [`open_recall`](crate::open_recall) |
//! | `open/exact_match` | open | [`exact_match`](crate::exact_match) |
//! | `open/token_f1` | open | [`token_f1`](crate::token_f1) |
//! | `overall/score` | all | closed correctness or open recall |
//! | `overall/exact_match` | all | exact match |
//! | `category/<c>/score` | category `c` | closed correctness or open recall |
//! | `category/<c>/closed_accuracy` | closed in `c` | correctness |
//! | `category/<c>/open_recall` | open in `c` | recall |
//! | `llava-med/closed/accuracy` | closed | 1 if the gold is a substring ([`llava_med`](crate::llava_med)) |
//! | `llava-med/open/recall` | open | LLaVA-Med's recall |
//! | `llava-med/overall/score` | all | either of the two |
//! | `llava-med/category/<c>/score` | category `c` | either of the two |
//!
//! Groups without items are omitted. A question missing from the answer file is scored as an
//! empty prediction (wrong) and counted in `counts.missing`; an answer whose question is not
//! in the benchmark is an error (the wrong benchmark was given).

use std::collections::HashMap;

use crate::answers::AnswerRecord;
use crate::bench::{AnswerType, VqaBenchmark, VqaItem};
use crate::bootstrap_ci::{bootstrap_means, BootstrapConfig};
use crate::category::{classify, ALL};
use crate::closed_accuracy::{judge_closed_tokens, ClosedVerdict};
use crate::error::{Error, Result};
use crate::exact_match::exact_match_tokens;
use crate::llava_med;
use crate::normalize::answer_tokens;
use crate::open_recall::open_recall_tokens;
use crate::summary::{file_fingerprint, BenchmarkRef, Counts, ItemResult, MetricValue, RunSummary};
use crate::token_f1::token_f1_tokens;

/// Scores one item; `None` means the answer is missing.
pub fn score_item(item: &VqaItem, prediction: Option<&str>) -> ItemResult {
    let p = answer_tokens(prediction.unwrap_or(""));
    let g = answer_tokens(&item.answer);
    let em = exact_match_tokens(&p, &g);
    let f1 = token_f1_tokens(&p, &g).f1;
    let text = prediction.unwrap_or("");
    let (correct, unparsed, recall, score, llava_med_score) = match item.answer_type {
        AnswerType::Closed => {
            let v = judge_closed_tokens(&p, &g);
            let lm = if llava_med::closed_correct(text, &item.answer) { 1.0 } else { 0.0 };
            (Some(v == ClosedVerdict::Correct), v == ClosedVerdict::Unparsed, None, v.score(), lm)
        }
        AnswerType::Open => {
            let r = open_recall_tokens(&p, &g);
            (None, false, Some(r), r, llava_med::open_recall(text, &item.answer))
        }
    };
    ItemResult {
        question_id: item.question_id.clone(),
        answer_type: item.answer_type,
        category: classify(&item.question),
        question: item.question.clone(),
        prediction: prediction.map(str::to_string),
        gold: item.answer.clone(),
        correct,
        unparsed,
        recall,
        exact_match: em,
        token_f1: f1,
        score,
        llava_med_score: Some(llava_med_score),
    }
}

/// Matches answers to benchmark items by question id and scores every item.
pub fn score_items(bench: &VqaBenchmark, answers: &[AnswerRecord]) -> Result<Vec<ItemResult>> {
    let known: HashMap<String, usize> =
        bench.items.iter().enumerate().map(|(i, it)| (it.question_id.key(), i)).collect();
    let mut by_item: Vec<Option<&str>> = vec![None; bench.items.len()];
    let mut unknown = Vec::new();
    for a in answers {
        match known.get(&a.question_id.key()) {
            Some(&i) => by_item[i] = Some(a.text.as_str()),
            None => unknown.push(a.question_id.key()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::Invalid(format!(
            "{} answers have question ids not in benchmark `{}` (e.g. `{}`): wrong --bench?",
            unknown.len(),
            bench.path.display(),
            unknown[0]
        )));
    }
    Ok(bench.items.iter().zip(by_item).map(|(it, p)| score_item(it, p)).collect())
}

/// Metrics with intervals over per-item results (keys in the module docs).
pub fn metrics(items: &[ItemResult], cfg: &BootstrapConfig) -> Vec<MetricValue> {
    let mut out = Vec::new();
    let closed: Vec<&ItemResult> = items.iter().filter(|i| i.answer_type == AnswerType::Closed).collect();
    let open: Vec<&ItemResult> = items.iter().filter(|i| i.answer_type == AnswerType::Open).collect();

    // Groups are collected first, then bootstrapped in parallel (each has its own stream,
    // so the result does not depend on scheduling).
    let mut jobs: Vec<(String, Vec<f64>, &'static [&'static str])> = Vec::new();
    let mut group = |name: &str, rows: Vec<f64>, keys: &'static [&'static str]| {
        if !rows.is_empty() {
            jobs.push((name.to_string(), rows, keys));
        }
    };
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    group(
        "closed",
        closed.iter().flat_map(|i| [i.score, b(i.unparsed)]).collect(),
        &["accuracy", "unparsed_rate"],
    );
    group(
        "open",
        open.iter().flat_map(|i| [i.score, i.exact_match, i.token_f1]).collect(),
        &["recall", "exact_match", "token_f1"],
    );
    group("overall", items.iter().flat_map(|i| [i.score, i.exact_match]).collect(), &["score", "exact_match"]);
    for c in ALL {
        let name = format!("category/{c}");
        group(&name, items.iter().filter(|i| i.category == c).map(|i| i.score).collect(), &["score"]);
        group(
            &name,
            closed.iter().filter(|i| i.category == c).map(|i| i.score).collect(),
            &["closed_accuracy"],
        );
        group(
            &name,
            open.iter().filter(|i| i.category == c).map(|i| i.score).collect(),
            &["open_recall"],
        );
    }
    // The same headline groups under LLaVA-Med's rules (items of old summaries lack them).
    let lm = |rows: &[&ItemResult]| -> Vec<f64> { rows.iter().filter_map(|i| i.llava_med_score).collect() };
    let all: Vec<&ItemResult> = items.iter().collect();
    group("llava-med/closed", lm(&closed), &["accuracy"]);
    group("llava-med/open", lm(&open), &["recall"]);
    group("llava-med/overall", lm(&all), &["score"]);
    for c in ALL {
        let rows: Vec<&ItemResult> = items.iter().filter(|i| i.category == c).collect();
        group(&format!("llava-med/category/{c}"), lm(&rows), &["score"]);
    }
    let results = par_map(&jobs, |(name, rows, keys)| {
        let stream = format!("{name}/{}", keys[0]);
        bootstrap_means(rows, keys.len(), cfg, &stream)
    });
    for ((name, _, keys), estimates) in jobs.iter().zip(results) {
        for (k, e) in keys.iter().zip(estimates) {
            out.push(MetricValue::new(format!("{name}/{k}"), e));
        }
    }
    out
}

/// Maps `f` over `jobs` on all available cores, keeping the order.
fn par_map<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= jobs.len() {
                            break;
                        }
                        mine.push((i, f(&jobs[i])));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Scores an answer set into a storable run summary.
pub fn score_run(
    bench: &VqaBenchmark,
    answers: &[AnswerRecord],
    model_id: &str,
    cfg: &BootstrapConfig,
) -> Result<RunSummary> {
    let items = score_items(bench, answers)?;
    let metrics = metrics(&items, cfg);
    let counts = Counts {
        items: items.len(),
        answered: items.iter().filter(|i| i.prediction.is_some()).count(),
        missing: items.iter().filter(|i| i.prediction.is_none()).count(),
        closed: items.iter().filter(|i| i.answer_type == AnswerType::Closed).count(),
        open: items.iter().filter(|i| i.answer_type == AnswerType::Open).count(),
        unparsed: items.iter().filter(|i| i.unparsed).count(),
    };
    Ok(RunSummary {
        protocol_version: crate::PROTOCOL_VERSION.to_string(),
        model_id: model_id.to_string(),
        benchmark: BenchmarkRef {
            name: bench.name.clone(),
            file: bench.path.display().to_string(),
            fingerprint: file_fingerprint(&bench.path)?,
            n_items: bench.items.len(),
        },
        bootstrap: *cfg,
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        counts,
        metrics,
        items,
    })
}

/// The model id of an answer set: the first non-empty `model_id`, else `fallback`.
pub fn model_id_of(answers: &[AnswerRecord], fallback: &str) -> String {
    answers
        .iter()
        .map(|a| a.model_id.as_str())
        .find(|m| !m.is_empty())
        .unwrap_or(fallback)
        .to_string()
}
