//! Leaderboards: runs side by side, with significance against a baseline run.
//!
//! Rules (protocol `medpo-eval/1`):
//!
//! - Runs are grouped by benchmark fingerprint; runs are only compared with runs of the same
//!   benchmark file and the same protocol version (an error otherwise).
//! - Rows are ordered by `overall/score` under the chosen [`Protocol`] (ours by default;
//!   `llava-med/overall/score` under LLaVA-Med's rules), best first.
//! - Against the baseline (by default the first run given), items are matched by question
//!   id. Under the chosen protocol, the overall and open scores are compared by paired
//!   bootstrap ([`paired_test`](crate::paired_test)), closed correctness by McNemar's exact
//!   test.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::bench::AnswerType;
use crate::bootstrap_ci::BootstrapConfig;
use crate::error::{Error, Result};
use crate::paired_test::{mcnemar, paired_bootstrap, McNemar, PairedBootstrap};
use crate::protocol::Protocol;
use crate::summary::{ItemResult, RunSummary};

/// A run compared with a baseline on the same items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub model_id: String,
    pub baseline_model_id: String,
    /// Paired bootstrap of `overall/score` (run − baseline).
    pub overall: PairedBootstrap,
    /// Paired bootstrap of `open/recall`, when there are open items.
    pub open_recall: Option<PairedBootstrap>,
    /// McNemar on closed correctness, when there are closed items.
    pub closed_mcnemar: Option<McNemar>,
}

/// Compares two runs of the same benchmark item by item, under `protocol`'s per-item scores.
pub fn compare_runs(
    run: &RunSummary,
    baseline: &RunSummary,
    cfg: &BootstrapConfig,
    protocol: Protocol,
) -> Result<Comparison> {
    if run.benchmark.fingerprint != baseline.benchmark.fingerprint {
        return Err(Error::Invalid(format!(
            "runs `{}` and `{}` were scored on different benchmark files ({} vs {})",
            run.model_id, baseline.model_id, run.benchmark.file, baseline.benchmark.file
        )));
    }
    if run.protocol_version != baseline.protocol_version {
        return Err(Error::Invalid(format!(
            "runs `{}` and `{}` use protocols `{}` and `{}`: rescore them under one protocol",
            run.model_id, baseline.model_id, run.protocol_version, baseline.protocol_version
        )));
    }
    let base: HashMap<String, &ItemResult> =
        baseline.items.iter().map(|i| (i.question_id.key(), i)).collect();
    let pairs: Vec<(&ItemResult, &ItemResult)> = run
        .items
        .iter()
        .filter_map(|i| base.get(&i.question_id.key()).map(|b| (i, *b)))
        .collect();
    if pairs.is_empty() {
        return Err(Error::Invalid(format!(
            "runs `{}` and `{}` share no items (summaries without per-item results cannot be compared)",
            run.model_id, baseline.model_id
        )));
    }
    let score = |i: &ItemResult| -> Result<f64> {
        protocol.item_score(i).ok_or_else(|| {
            Error::Invalid(format!(
                "a run of `{}` or `{}` has no per-item scores under protocol `{}` (written by an \
                 older version): rescore its answers with `medpo score-answers`",
                run.model_id, baseline.model_id, protocol
            ))
        })
    };
    let scored = pairs
        .iter()
        .map(|(x, y)| Ok((x.answer_type, score(x)?, score(y)?)))
        .collect::<Result<Vec<_>>>()?;
    let (a, b): (Vec<f64>, Vec<f64>) = scored.iter().map(|(_, x, y)| (*x, *y)).unzip();
    let overall = paired_bootstrap(&a, &b, cfg, "compare/overall")?;
    let open: Vec<_> = scored.iter().filter(|(t, _, _)| *t == AnswerType::Open).collect();
    let open_recall = if open.is_empty() {
        None
    } else {
        let (a, b): (Vec<f64>, Vec<f64>) = open.iter().map(|(_, x, y)| (*x, *y)).unzip();
        Some(paired_bootstrap(&a, &b, cfg, "compare/open")?)
    };
    // Closed items score 1 when correct under either protocol.
    let closed: Vec<_> = scored.iter().filter(|(t, _, _)| *t == AnswerType::Closed).collect();
    let closed_mcnemar = if closed.is_empty() {
        None
    } else {
        let (a, b): (Vec<bool>, Vec<bool>) = closed.iter().map(|(_, x, y)| (*x == 1.0, *y == 1.0)).unzip();
        Some(mcnemar(&a, &b)?)
    };
    Ok(Comparison {
        model_id: run.model_id.clone(),
        baseline_model_id: baseline.model_id.clone(),
        overall,
        open_recall,
        closed_mcnemar,
    })
}

/// One benchmark's leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub benchmark: String,
    pub protocol_version: String,
    /// The protocol rows are ranked and compared by.
    #[serde(default)]
    pub ranked_by: Protocol,
    pub baseline_model_id: String,
    /// Indices into the runs given, best first.
    pub order: Vec<usize>,
    /// Comparison of each run (same order as `order`) with the baseline; `None` for the
    /// baseline itself.
    pub comparisons: Vec<Option<Comparison>>,
}

/// Builds one leaderboard per benchmark, ranked and compared under `protocol`. `baseline`
/// names a model id; by default the first run of each benchmark is the baseline.
pub fn leaderboards(
    runs: &[RunSummary],
    baseline: Option<&str>,
    cfg: &BootstrapConfig,
    protocol: Protocol,
) -> Result<Vec<Leaderboard>> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        match groups.iter_mut().find(|(f, _)| *f == r.benchmark.fingerprint) {
            Some((_, v)) => v.push(i),
            None => groups.push((r.benchmark.fingerprint.clone(), vec![i])),
        }
    }
    let key = protocol.key("overall/score");
    let score = |i: usize| runs[i].metric(&key).map_or(f64::NEG_INFINITY, |m| m.value);
    let mut out = Vec::new();
    for (_, mut idx) in groups {
        let base = match baseline {
            Some(name) => idx.iter().copied().find(|&i| runs[i].model_id == name).ok_or_else(|| {
                Error::Invalid(format!(
                    "baseline `{name}` has no run on benchmark `{}`",
                    runs[idx[0]].benchmark.name
                ))
            })?,
            None => idx[0],
        };
        idx.sort_by(|&x, &y| score(y).total_cmp(&score(x)));
        let comparisons = idx
            .iter()
            .map(|&i| if i == base { Ok(None) } else { compare_runs(&runs[i], &runs[base], cfg, protocol).map(Some) })
            .collect::<Result<Vec<_>>>()?;
        out.push(Leaderboard {
            benchmark: runs[base].benchmark.name.clone(),
            protocol_version: runs[base].protocol_version.clone(),
            ranked_by: protocol,
            baseline_model_id: runs[base].model_id.clone(),
            order: idx,
            comparisons,
        });
    }
    Ok(out)
}
