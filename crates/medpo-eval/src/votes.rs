//! Arena votes: one pairwise judgement of two models' answers by one rater.
//!
//! JSONL, one vote per line: `model_a`, `model_b`, `winner` and optionally `rater` and
//! `item` (what was judged: a prompt or battle id; needed for rater agreement). `winner` is
//! `a`, `b`, `tie` or `both_bad`; FastChat's spellings `model_a`, `model_b`,
//! `tie (bothbad)` and `bothbad` are accepted too, in any case.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bench::{read_jsonl_objects, Fields};
use crate::error::{Error, Result};

/// The outcome of one vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    A,
    B,
    Tie,
    BothBad,
}

impl Winner {
    /// Parses the accepted spellings (see the module docs).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "a" | "model_a" | "left" => Some(Winner::A),
            "b" | "model_b" | "right" => Some(Winner::B),
            "tie" => Some(Winner::Tie),
            "both_bad" | "bothbad" | "both-bad" | "tie (bothbad)" => Some(Winner::BothBad),
            _ => None,
        }
    }

    /// The outcome seen from the other side (A and B swapped).
    pub fn swapped(self) -> Self {
        match self {
            Winner::A => Winner::B,
            Winner::B => Winner::A,
            other => other,
        }
    }

    /// A's score: 1 for a win, ½ for a tie or both-bad, 0 for a loss.
    pub fn score_a(self) -> f64 {
        match self {
            Winner::A => 1.0,
            Winner::B => 0.0,
            Winner::Tie | Winner::BothBad => 0.5,
        }
    }
}

/// One vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub model_a: String,
    pub model_b: String,
    pub winner: Winner,
    #[serde(default)]
    pub rater: Option<String>,
    #[serde(default)]
    pub item: Option<String>,
}

/// Reads a votes file; errors name the file and line.
pub fn read_votes(path: &Path) -> Result<Vec<Vote>> {
    let mut out = Vec::new();
    for (line, map) in read_jsonl_objects(path)? {
        let f = Fields { path, line, map: &map };
        let model_a = f.string(&["model_a"])?;
        let model_b = f.string(&["model_b"])?;
        if model_a == model_b {
            return Err(f.err(format!("`model_a` and `model_b` are both `{model_a}`")));
        }
        let raw = f.string(&["winner"])?;
        let winner = Winner::parse(&raw).ok_or_else(|| {
            f.err(format!("field `winner`: expected a, b, tie or both_bad, found {raw:?}"))
        })?;
        let rater = match f.first(&["rater"]) {
            Some(_) => Some(f.text(&["rater"])?),
            None => None,
        };
        let item = match f.first(&["item", "question_id", "battle_id"]) {
            Some(_) => Some(f.question_id(&["item", "question_id", "battle_id"])?.key()),
            None => None,
        };
        out.push(Vote { model_a, model_b, winner, rater, item });
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!("`{}` holds no votes", path.display())));
    }
    Ok(out)
}

/// The sorted, distinct model names of some votes.
pub fn models(votes: &[Vote]) -> Vec<String> {
    let mut m: Vec<String> = votes
        .iter()
        .flat_map(|v| [v.model_a.clone(), v.model_b.clone()])
        .collect();
    m.sort();
    m.dedup();
    m
}
