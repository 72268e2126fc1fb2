//! Leaderboards: runs side by side, with significance against a baseline run.
//!
//! Rules (protocol `medpo-eval/1`):
//!
//! - Runs are grouped by benchmark fingerprint; runs are only compared with runs of the same
//!   benchmark file and the same protocol version (an error otherwise).
//! - Rows are ordered by `overall/score`, best first.
//! - Against the baseline (by default the first run given), items are matched by question
//!   id. `overall/score` and `open/recall` are compared by paired bootstrap
//!   ([`paired_test`](crate::paired_test)), `closed/accuracy` by McNemar's exact test.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::bench::AnswerType;
use crate::bootstrap_ci::BootstrapConfig;
use crate::error::{Error, Result};
use crate::paired_test::{mcnemar, paired_bootstrap, McNemar, PairedBootstrap};
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

/// Compares two runs of the same benchmark item by item.
pub fn compare_runs(run: &RunSummary, baseline: &RunSummary, cfg: &BootstrapConfig) -> Result<Comparison> {
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
    let (a, b): (Vec<f64>, Vec<f64>) = pairs.iter().map(|(x, y)| (x.score, y.score)).unzip();
    let overall = paired_bootstrap(&a, &b, cfg, "compare/overall")?;
    let open: Vec<_> = pairs.iter().filter(|(x, _)| x.answer_type == AnswerType::Open).collect();
    let open_recall = if open.is_empty() {
        None
    } else {
        let (a, b): (Vec<f64>, Vec<f64>) = open.iter().map(|(x, y)| (x.score, y.score)).unzip();
        Some(paired_bootstrap(&a, &b, cfg, "compare/open")?)
    };
    let closed: Vec<_> = pairs.iter().filter(|(x, _)| x.answer_type == AnswerType::Closed).collect();
    let closed_mcnemar = if closed.is_empty() {
        None
    } else {
        let (a, b): (Vec<bool>, Vec<bool>) =
            closed.iter().map(|(x, y)| (x.correct == Some(true), y.correct == Some(true))).unzip();
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
    pub baseline_model_id: String,
    /// Indices into the runs given, best first.
    pub order: Vec<usize>,
    /// Comparison of each run (same order as `order`) with the baseline; `None` for the
    /// baseline itself.
    pub comparisons: Vec<Option<Comparison>>,
}

/// Builds one leaderboard per benchmark. `baseline` names a model id; by default the first
/// run of each benchmark is the baseline.
pub fn leaderboards(runs: &[RunSummary], baseline: Option<&str>, cfg: &BootstrapConfig) -> Result<Vec<Leaderboard>> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        match groups.iter_mut().find(|(f, _)| *f == r.benchmark.fingerprint) {
            Some((_, v)) => v.push(i),
            None => groups.push((r.benchmark.fingerprint.clone(), vec![i])),
        }
    }
    let score = |i: usize| runs[i].metric("overall/score").map_or(f64::NEG_INFINITY, |m| m.value);
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
            .map(|&i| if i == base { Ok(None) } else { compare_runs(&runs[i], &runs[base], cfg).map(Some) })
            .collect::<Result<Vec<_>>>()?;
        out.push(Leaderboard {
            benchmark: runs[base].benchmark.name.clone(),
            protocol_version: runs[base].protocol_version.clone(),
            baseline_model_id: runs[base].model_id.clone(),
            order: idx,
            comparisons,
        });
    }
    Ok(out)
}
