//! Token-level precision, recall and F1 (SQuAD-style).
//!
//! Rule (protocol `medpo-eval/1`): with clipped multiset overlap `tp` of the
//! [`answer_tokens`] of prediction and gold,
//! `precision = tp/|pred|`, `recall = tp/|gold|`, `F1 = 2PR/(P+R)` (0 when `tp = 0`).
//! When either side is empty, F1 is 1 if both are empty and 0 otherwise.

use crate::normalize::answer_tokens;
use crate::open_recall::overlap;

/// Precision, recall and F1 of one prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenF1 {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Token precision, recall and F1.
pub fn token_f1(prediction: &str, gold: &str) -> TokenF1 {
    token_f1_tokens(&answer_tokens(prediction), &answer_tokens(gold))
}

/// [`token_f1`] on already tokenised text.
pub fn token_f1_tokens(p: &[String], g: &[String]) -> TokenF1 {
    if p.is_empty() || g.is_empty() {
        let v = if p.is_empty() && g.is_empty() { 1.0 } else { 0.0 };
        return TokenF1 { precision: v, recall: v, f1: v };
    }
    let tp = overlap(g, p) as f64;
    if tp == 0.0 {
        return TokenF1 { precision: 0.0, recall: 0.0, f1: 0.0 };
    }
    let precision = tp / p.len() as f64;
    let recall = tp / g.len() as f64;
    TokenF1 {
        precision,
        recall,
        f1: 2.0 * precision * recall / (precision + recall),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // pred {ischemic, necrosis, early} vs gold {early, reversible, ischemic, injury}:
        // tp 2, P = 2/3, R = 1/2, F1 = 2·(1/3)/(7/6) = 4/7.
        let s = token_f1("ischemic necrosis, early", "early (reversible) ischemic injury");
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.recall - 0.5).abs() < 1e-12);
        assert!((s.f1 - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(token_f1("Yes.", "yes").f1, 1.0);
        assert_eq!(token_f1("", "yes").f1, 0.0);
        assert_eq!(token_f1("", "").f1, 1.0);
        assert_eq!(token_f1("no", "yes").f1, 0.0);
        // "a CT" → {ct}; gold {ct, scan}: P 1, R 1/2, F1 2/3.
        assert!((token_f1("a CT", "CT scan").f1 - 2.0 / 3.0).abs() < 1e-12);
    }
}
