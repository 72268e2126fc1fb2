//! Scoring generated reports: BLEU-4, ROUGE-L and, with a judge, atomic-fact NLI.
//!
//! Metric keys (protocol `medpo-eval/1`): `report/bleu4` (corpus BLEU-4, interval from
//! resampling items), `report/rouge_l`, `report/nli_completeness` and
//! `report/nli_hallucination` (means over items that have atomic facts and a usable judge
//! answer; items whose judge call fails are counted in [`ReportScores::judge_failures`] and
//! left out, as the seed does).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bench::{read_jsonl_objects, type_name, Fields};
use crate::error::{Error, Result};
use crate::bleu::{bleu_stats, corpus_bleu, sentence_bleu, BleuStats};
use crate::bootstrap_ci::{bootstrap_means, bootstrap_stat, BootstrapConfig};
use crate::nli::{nli_score, NliJudge, NliScore};
use crate::rouge_l::rouge_l;
use crate::summary::MetricValue;

/// One generated report with its gold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportPrediction {
    pub id: String,
    pub gold: String,
    pub generated: String,
    /// Gold atomic facts (empty: no NLI for this item).
    #[serde(default)]
    pub atomic_facts: Vec<String>,
}

/// Per-item report scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportItemResult {
    pub id: String,
    pub bleu4: f64,
    pub rouge_l: f64,
    pub nli: Option<NliScore>,
    /// The judge's error for this item, if it failed.
    pub judge_error: Option<String>,
}

/// Scores of a report-generation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportScores {
    /// [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) at scoring time.
    pub protocol_version: String,
    pub bootstrap: BootstrapConfig,
    pub metrics: Vec<MetricValue>,
    pub items: Vec<ReportItemResult>,
    pub judge_failures: usize,
}

/// Scores reports; NLI only when a judge is given.
pub fn score_reports(
    preds: &[ReportPrediction],
    mut judge: Option<&mut dyn NliJudge>,
    cfg: &BootstrapConfig,
) -> ReportScores {
    let stats: Vec<BleuStats> = preds.iter().map(|p| bleu_stats(&p.generated, &p.gold)).collect();
    let mut items = Vec::with_capacity(preds.len());
    let mut judge_failures = 0;
    for (p, s) in preds.iter().zip(&stats) {
        let (nli, judge_error) = match (&mut judge, p.atomic_facts.is_empty()) {
            (Some(j), false) => match j.judge(&p.generated, &p.atomic_facts) {
                Ok(labels) => (nli_score(&labels), None),
                Err(e) => {
                    judge_failures += 1;
                    tracing::warn!(id = %p.id, error = %e, "NLI judge failed");
                    (None, Some(e.to_string()))
                }
            },
            _ => (None, None),
        };
        items.push(ReportItemResult {
            id: p.id.clone(),
            bleu4: sentence_bleu(s),
            rouge_l: rouge_l(&p.generated, &p.gold),
            nli,
            judge_error,
        });
    }
    let mut metrics = Vec::new();
    if !preds.is_empty() {
        let bleu = bootstrap_stat(stats.len(), cfg, "report/bleu4", |ix| {
            let mut sum = BleuStats::default();
            for &i in ix {
                sum += stats[i];
            }
            corpus_bleu(&sum)
        });
        metrics.push(MetricValue::new("report/bleu4", bleu));
        let rows: Vec<f64> = items.iter().map(|i| i.rouge_l).collect();
        metrics.push(MetricValue::new("report/rouge_l", bootstrap_means(&rows, 1, cfg, "report/rouge_l")[0]));
    }
    let nli_rows: Vec<f64> = items
        .iter()
        .filter_map(|i| i.nli)
        .flat_map(|s| [s.completeness, s.hallucination])
        .collect();
    if !nli_rows.is_empty() {
        let e = bootstrap_means(&nli_rows, 2, cfg, "report/nli");
        metrics.push(MetricValue::new("report/nli_completeness", e[0]));
        metrics.push(MetricValue::new("report/nli_hallucination", e[1]));
    }
    ReportScores {
        protocol_version: crate::PROTOCOL_VERSION.to_string(),
        bootstrap: *cfg,
        metrics,
        items,
        judge_failures,
    }
}

/// Reads generated reports: JSONL with the generated text (`caption_generated`, `text` or
/// `generated`), the gold (`gold_caption`, `gold_report`, `report` or `caption`), an optional
/// id (`id`, `study_id` or `question_id`; `line-<N>` otherwise) and optional `atomic_facts`.
/// This reads the seed's `inference_mimic.py` / `inference_amboss.py` outputs.
pub fn read_report_predictions(path: &Path) -> Result<Vec<ReportPrediction>> {
    let mut out = Vec::new();
    for (line, map) in read_jsonl_objects(path)? {
        let f = Fields { path, line, map: &map };
        let id = match f.first(&["id", "study_id", "question_id"]) {
            Some(_) => f.question_id(&["id", "study_id", "question_id"])?.key(),
            None => format!("line-{line}"),
        };
        let atomic_facts = match f.first(&["atomic_facts"]) {
            Some(_) => f.string_list(&["atomic_facts"])?,
            None => Vec::new(),
        };
        out.push(ReportPrediction {
            id,
            generated: f.text(&["caption_generated", "text", "generated"])?,
            gold: f.text(&["gold_caption", "gold_report", "report", "caption"])?,
            atomic_facts,
        });
    }
    Ok(out)
}

/// Gold atomic facts, by id and by gold text.
#[derive(Debug, Clone, Default)]
pub struct AtomicFacts {
    pub by_id: HashMap<String, Vec<String>>,
    pub by_gold: HashMap<String, Vec<String>>,
}

impl AtomicFacts {
    /// Reads the seed's `processed_gpt4_responses_*.json` (a JSON array) or the same objects
    /// as JSONL: `id`, optional `gold_report`, `atomic_facts`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let objects: Vec<(usize, serde_json::Map<String, Value>)> = if text.trim_start().starts_with('[') {
            let v: Vec<Value> = serde_json::from_str(&text).map_err(|e| Error::Json {
                path: path.to_path_buf(),
                line: e.line(),
                message: e.to_string(),
            })?;
            v.into_iter()
                .enumerate()
                .map(|(i, o)| match o {
                    Value::Object(m) => Ok((i + 1, m)),
                    other => Err(Error::Record {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: format!("entry {}: expected an object, found {}", i + 1, type_name(&other)),
                    }),
                })
                .collect::<Result<_>>()?
        } else {
            read_jsonl_objects(path)?
        };
        let mut facts = AtomicFacts::default();
        for (line, map) in objects {
            let f = Fields { path, line, map: &map };
            let list = f.string_list(&["atomic_facts"])?;
            if f.first(&["id"]).is_some() {
                facts.by_id.insert(f.question_id(&["id"])?.key(), list.clone());
            }
            if f.first(&["gold_report", "gold_caption"]).is_some() {
                facts.by_gold.insert(f.text(&["gold_report", "gold_caption"])?.trim().to_string(), list);
            }
        }
        Ok(facts)
    }

    /// Fills predictions' missing facts, by id first, then by identical gold text (the seed's
    /// AMBOSS outputs have no id). Returns how many predictions got facts.
    pub fn attach(&self, preds: &mut [ReportPrediction]) -> usize {
        let mut n = 0;
        for p in preds.iter_mut().filter(|p| p.atomic_facts.is_empty()) {
            if let Some(f) = self.by_id.get(&p.id).or_else(|| self.by_gold.get(p.gold.trim())) {
                p.atomic_facts = f.clone();
                n += 1;
            }
        }
        n
    }
}
