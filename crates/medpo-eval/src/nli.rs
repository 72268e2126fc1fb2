//! Atomic-fact NLI scores of generated reports, with a pluggable LLM judge.
//!
//! Rules (protocol `medpo-eval/1`, the seed's `06_compute_scores.py`):
//!
//! - The judge labels each gold atomic fact (hypothesis) against the generated report
//!   (premise) as Entailment, Partial Entailment, Neutral or Contradiction.
//! - With `n` facts: **completeness** `= (#Entailment + 0.5·#Partial Entailment)/n`,
//!   **hallucination** `= #Contradiction/n`. Neutral scores 0. Corpus values are unweighted
//!   means over items.
//! - Labels are read **ignoring case** and surrounding punctuation, and a leading `k. `
//!   numbering is stripped. The seed compared case-sensitively and silently scored
//!   lower-case labels 0; we deliberately do not reproduce that bug.
//! - The judge's answer is read as a JSON list of strings; failing that, label phrases are
//!   taken from the text in order. A list whose length differs from the number of facts is
//!   an error (the item is not scored), never padded.
//!
//! The judge is any OpenAI-compatible chat endpoint ([`OpenAiJudge`], configured by
//! [`JudgeConfig`]: URL, model, API key), at temperature 0 with the seed's system prompt.


use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One NLI label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NliLabel {
    Entailment,
    PartialEntailment,
    Neutral,
    Contradiction,
}

impl NliLabel {
    /// Parses one label, ignoring case, numbering and punctuation around it.
    pub fn parse(raw: &str) -> Option<Self> {
        let t = raw.trim().trim_start_matches(|c: char| c.is_ascii_digit());
        let t = t.trim_start_matches(['.', ')', ':']).trim();
        let t: String = t
            .chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .to_lowercase();
        match t.split_whitespace().collect::<Vec<_>>().join(" ").as_str() {
            "entailment" | "entailed" => Some(NliLabel::Entailment),
            "partial entailment" | "partially entailed" | "partialentailment" => Some(NliLabel::PartialEntailment),
            "neutral" => Some(NliLabel::Neutral),
            "contradiction" | "contradicted" => Some(NliLabel::Contradiction),
            _ => None,
        }
    }
}

/// Reads a judge's answer as labels (see the module docs).
pub fn parse_labels(raw: &str) -> std::result::Result<Vec<NliLabel>, String> {
    let trimmed = raw.trim().trim_start_matches("```json").trim_start_matches("```").trim_end_matches("```").trim();
    if let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed) {
        return list
            .iter()
            .map(|s| NliLabel::parse(s).ok_or_else(|| format!("unknown label {s:?}")))
            .collect();
    }
    // Fallback: label phrases in order of appearance (handles lists without commas).
    let lower = raw.to_lowercase();
    let mut out = Vec::new();
    let mut rest = lower.as_str();
    let phrases = [
        ("partial entailment", NliLabel::PartialEntailment),
        ("entailment", NliLabel::Entailment),
        ("neutral", NliLabel::Neutral),
        ("contradiction", NliLabel::Contradiction),
    ];
    loop {
        let next = phrases
            .iter()
            .filter_map(|(p, l)| rest.find(p).map(|i| (i, p.len(), *l)))
            .min_by_key(|(i, len, _)| (*i, std::cmp::Reverse(*len)));
        match next {
            Some((i, len, l)) => {
                out.push(l);
                rest = &rest[i + len..];
            }
            None => break,
        }
    }
    if out.is_empty() {
        Err(format!("no NLI labels found in {raw:?}"))
    } else {
        Ok(out)
    }
}

/// Completeness and hallucination of one item.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NliScore {
    pub completeness: f64,
    pub hallucination: f64,
    pub n_facts: usize,
}

/// Scores labels; `None` when there are no facts.
pub fn nli_score(labels: &[NliLabel]) -> Option<NliScore> {
    if labels.is_empty() {
        return None;
    }
    let n = labels.len() as f64;
    let count = |l: NliLabel| labels.iter().filter(|x| **x == l).count() as f64;
    Some(NliScore {
        completeness: (count(NliLabel::Entailment) + 0.5 * count(NliLabel::PartialEntailment)) / n,
        hallucination: count(NliLabel::Contradiction) / n,
        n_facts: labels.len(),
    })
}

/// A judge that labels gold facts against a generated report.
pub trait NliJudge {
    /// One label per fact, in order.
    fn judge(&mut self, premise: &str, facts: &[String]) -> Result<Vec<NliLabel>>;
}

/// Settings of an OpenAI-compatible judge endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    /// Base URL (`https://api.openai.com/v1`) or the full `…/chat/completions` URL.
    pub url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` when present.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Retries after a connection error or a 5xx/429 answer (with backoff).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_retries() -> u32 {
    2
}

fn default_timeout() -> u64 {
    120
}
fn default_max_tokens() -> u32 {
    1024
}

/// The user prompt for one item: the instructions, the premise and the facts as a JSON list.
pub fn build_prompt(premise: &str, facts: &[String]) -> String {
    let facts_json = serde_json::to_string(facts).unwrap_or_else(|_| "[]".into());
    format!(
        "You are given a premise (a generated medical report) and a list of hypotheses (atomic \
facts from the reference report). For each hypothesis, classify its relation to the premise \
as one of four categories: \"Entailment\", \"Partial Entailment\", \"Neutral\" or \
\"Contradiction\".\n\nOutput only a JSON list of labels, one per hypothesis, in the same order \
and of the same length as the hypotheses.\n\nPremise:\n{premise}\n\nHypotheses:\n{facts_json}\n"
    )
}

/// A judge behind an OpenAI-compatible `/chat/completions` endpoint, called through
/// [`medpo_remote::Client`] (the client the server uses for remote models): timeouts,
/// `retries` with backoff on connection errors and 5xx, and a circuit breaker.
pub struct OpenAiJudge {
    model: String,
    max_tokens: u32,
    client: medpo_remote::Client,
}

impl OpenAiJudge {
    /// A judge for the endpoint; no request is made yet.
    pub fn new(cfg: JudgeConfig) -> Self {
        let mut remote = medpo_remote::RemoteConfig::new("nli-judge", &cfg.url, vec![cfg.model.clone()]);
        remote.timeout_s = cfg.timeout_s.max(1);
        remote.retries = cfg.retries;
        let client = medpo_remote::Client::new(remote, cfg.api_key.clone());
        OpenAiJudge { model: cfg.model, max_tokens: cfg.max_tokens, client }
    }

    /// The chat-completions URL.
    pub fn endpoint(&self) -> String {
        self.client.endpoint()
    }

    fn fail(&self, message: String) -> Error {
        Error::Judge { url: self.endpoint(), message }
    }
}

impl NliJudge for OpenAiJudge {
    fn judge(&mut self, premise: &str, facts: &[String]) -> Result<Vec<NliLabel>> {
        let body = serde_json::json!({
            "model": self.model,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": build_prompt(premise, facts)},
            ],
        });
        let answer = self.client.complete(&body).map_err(|e| self.fail(e.to_string()))?;
        let labels = parse_labels(&answer.text).map_err(|e| self.fail(e))?;
        if labels.len() != facts.len() {
            return Err(self.fail(format!("{} labels for {} facts", labels.len(), facts.len())));
        }
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_ignore_case_and_numbering() {
        assert_eq!(NliLabel::parse("1. Entailment"), Some(NliLabel::Entailment));
        assert_eq!(NliLabel::parse("partial entailment"), Some(NliLabel::PartialEntailment));
        assert_eq!(NliLabel::parse(" NEUTRAL."), Some(NliLabel::Neutral));
        assert_eq!(NliLabel::parse("contradiction"), Some(NliLabel::Contradiction));
        assert_eq!(NliLabel::parse("maybe"), None);
    }

    #[test]
    fn lists_with_and_without_commas() {
        use NliLabel::*;
        assert_eq!(
            parse_labels(r#"["Entailment", "neutral", "Partial Entailment"]"#).unwrap(),
            [Entailment, Neutral, PartialEntailment]
        );
        // The seed's few-shot example output lacks commas.
        assert_eq!(
            parse_labels("[\"Entailment\" \"Contradiction\" \"Partial Entailment\"]").unwrap(),
            [Entailment, Contradiction, PartialEntailment]
        );
        assert!(parse_labels("no idea").is_err());
    }

    #[test]
    fn scores_hand_computed() {
        use NliLabel::*;
        // 2 entailed, 1 partial, 1 neutral, 1 contradicted of 5:
        // completeness (2 + 0.5)/5 = 0.5, hallucination 1/5.
        let s = nli_score(&[Entailment, Entailment, PartialEntailment, Neutral, Contradiction]).unwrap();
        assert_eq!((s.completeness, s.hallucination, s.n_facts), (0.5, 0.2, 5));
        assert_eq!(nli_score(&[]), None);
    }
}
