//! Stored results: one run = model + benchmark + protocol version + metrics with intervals +
//! per-item results.
//!
//! [`RunSummary`] is what the runner writes next to the answer file and what a server
//! stores (one row per run, one row per [`MetricValue`], optionally one per [`ItemResult`]).
//! Every field is plain data (strings, numbers, lists) so it maps onto SQL rows or a JSON
//! column directly. Paired comparisons between runs need the per-item results.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bench::{AnswerType, QuestionId};
use crate::bootstrap_ci::{BootstrapConfig, Estimate};
use crate::category::Category;
use crate::error::{Error, Result};

/// The benchmark a run was scored on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchmarkRef {
    /// `vqa-rad`, `slake`, `pathvqa` or a file stem.
    pub name: String,
    /// The file as given.
    pub file: String,
    /// FNV-1a 64 of the file's bytes, hex: runs are only compared on identical files.
    pub fingerprint: String,
    pub n_items: usize,
}

/// One metric of a run, with its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// `closed/accuracy`, `open/recall`, `category/modality/score`, … (see
    /// `docs/eval-protocol.md`).
    pub key: String,
    #[serde(deserialize_with = "nan_from_null")]
    pub value: f64,
    /// NaN (written as `null`) when no interval was computed (zero bootstrap rounds).
    #[serde(deserialize_with = "nan_from_null")]
    pub ci_low: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub ci_high: f64,
    /// Items behind the value.
    pub n: usize,
}

impl MetricValue {
    /// A metric from a bootstrap estimate.
    pub fn new(key: impl Into<String>, e: Estimate) -> Self {
        MetricValue { key: key.into(), value: e.value, ci_low: e.ci_low, ci_high: e.ci_high, n: e.n }
    }
}

/// The scores of one question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub question_id: QuestionId,
    pub answer_type: AnswerType,
    pub category: Category,
    /// The question, without `<image>`.
    pub question: String,
    /// The model's answer; `None` when the answer file lacks the question (scored as empty).
    pub prediction: Option<String>,
    pub gold: String,
    /// Closed questions: correct or not.
    pub correct: Option<bool>,
    /// Closed yes/no questions whose prediction says neither yes nor no.
    pub unparsed: bool,
    /// Open questions: token recall.
    pub recall: Option<f64>,
    pub exact_match: f64,
    pub token_f1: f64,
    /// The item's headline score: correctness (closed) or recall (open).
    pub score: f64,
    /// The item's score under LLaVA-Med's rules ([`crate::llava_med`]): substring correctness
    /// (closed) or the script's recall (open). `None` in summaries written before the variant.
    #[serde(default)]
    pub llava_med_score: Option<f64>,
}

/// Item counts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub items: usize,
    pub answered: usize,
    pub missing: usize,
    pub closed: usize,
    pub open: usize,
    pub unparsed: usize,
}

/// One scored run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) at scoring time.
    pub protocol_version: String,
    pub model_id: String,
    pub benchmark: BenchmarkRef,
    pub bootstrap: BootstrapConfig,
    /// Seconds since the Unix epoch when scored.
    pub created_unix_s: u64,
    pub counts: Counts,
    pub metrics: Vec<MetricValue>,
    pub items: Vec<ItemResult>,
}

impl RunSummary {
    /// The metric with this key.
    pub fn metric(&self, key: &str) -> Option<&MetricValue> {
        self.metrics.iter().find(|m| m.key == key)
    }

    /// Writes the summary as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    /// Reads a summary written by [`RunSummary::write_json`].
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: e.line(),
            message: e.to_string(),
        })
    }
}

/// serde_json writes NaN as `null`; read it back as NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// FNV-1a 64 of a file's bytes, hex.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_intervals_round_trip_as_null() {
        let m = MetricValue { key: "k".into(), value: 0.5, ci_low: f64::NAN, ci_high: f64::NAN, n: 3 };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"ci_low\":null"), "{text}");
        let back: MetricValue = serde_json::from_str(&text).unwrap();
        assert!(back.ci_low.is_nan() && back.value == 0.5);
    }
}
