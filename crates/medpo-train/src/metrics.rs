//! Per-step metrics with TRL's keys, a JSONL writer and the callback trait the web app uses.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Metric name → value for one step (sorted, so JSONL lines are stable).
pub type Metrics = BTreeMap<String, f64>;

pub const LOSS: &str = "loss";
pub const REWARDS_CHOSEN: &str = "rewards/chosen";
pub const REWARDS_REJECTED: &str = "rewards/rejected";
pub const REWARDS_MARGINS: &str = "rewards/margins";
pub const REWARDS_ACCURACIES: &str = "rewards/accuracies";
pub const LOGPS_CHOSEN: &str = "logps/chosen";
pub const LOGPS_REJECTED: &str = "logps/rejected";
/// Reference-model log-probs (TRL does not log these; we do, so the web app can chart drift).
pub const REF_LOGPS_CHOSEN: &str = "ref_logps/chosen";
pub const REF_LOGPS_REJECTED: &str = "ref_logps/rejected";
pub const LEARNING_RATE: &str = "learning_rate";
pub const GRAD_NORM: &str = "grad_norm";

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer step, 1-based (after the update).
    pub step: u64,
    pub epoch: f64,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// Receives training events (the CLI prints a progress bar, the web app charts them).
pub trait TrainCallback {
    /// Called after every optimizer step.
    fn on_step(&mut self, record: &StepRecord) -> Result<()>;
    /// Called after a checkpoint was written.
    fn on_checkpoint(&mut self, _step: u64, _dir: &Path) -> Result<()> {
        Ok(())
    }
}

/// Appends one JSON object per step to a file (and flushes, so a killed job keeps its log).
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlWriter {
    /// Opens `path` for appending (resume keeps the earlier lines).
    pub fn append(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(JsonlWriter {
            path,
            out: BufWriter::new(f),
        })
    }

    pub fn write(&mut self, record: &StepRecord) -> Result<()> {
        serde_json::to_writer(&mut self.out, record).map_err(|e| Error::json(&self.path, e))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.path, e))?;
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }

    /// Reads a metrics file back.
    pub fn read(path: &Path) -> Result<Vec<StepRecord>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| Error::json(path, e)))
            .collect()
    }
}

impl TrainCallback for JsonlWriter {
    fn on_step(&mut self, record: &StepRecord) -> Result<()> {
        self.write(record)
    }
}

/// Averages metrics over micro-batches (TRL logs the mean over the logging window).
#[derive(Clone, Debug, Default)]
pub struct MetricsAccumulator {
    sums: Metrics,
    counts: BTreeMap<String, u64>,
}

impl MetricsAccumulator {
    pub fn add(&mut self, m: &Metrics) {
        for (k, v) in m {
            *self.sums.entry(k.clone()).or_default() += v;
            *self.counts.entry(k.clone()).or_default() += 1;
        }
    }
    /// The means, and a reset.
    pub fn take(&mut self) -> Metrics {
        let out = self
            .sums
            .iter()
            .map(|(k, v)| (k.clone(), v / self.counts[k] as f64))
            .collect();
        self.sums.clear();
        self.counts.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trip_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let rec = |s| StepRecord {
            step: s,
            epoch: 0.5,
            metrics: [(LOSS.to_string(), 0.69), (REWARDS_MARGINS.to_string(), 0.1)].into(),
        };
        JsonlWriter::append(&p).unwrap().write(&rec(1)).unwrap();
        JsonlWriter::append(&p).unwrap().on_step(&rec(2)).unwrap();
        let back = JsonlWriter::read(&p).unwrap();
        assert_eq!(back, vec![rec(1), rec(2)]);
        let line = std::fs::read_to_string(&p).unwrap();
        assert!(line
            .lines()
            .next()
            .unwrap()
            .contains("\"rewards/margins\":0.1"));
        let mut acc = MetricsAccumulator::default();
        acc.add(&rec(1).metrics);
        acc.add(&[(LOSS.to_string(), 0.31)].into());
        let m = acc.take();
        assert!((m[LOSS] - 0.5).abs() < 1e-12 && (m[REWARDS_MARGINS] - 0.1).abs() < 1e-12);
    }
}
