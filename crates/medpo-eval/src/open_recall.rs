//! Open-question recall: the LLaVA-Med protocol's headline open-set number.
//!
//! Rule (protocol `medpo-eval/1`): with gold and prediction tokenised by
//! [`answer_tokens`], recall is the share of gold tokens
//! present in the prediction, counted with multiplicity and clipped (a gold token that
//! occurs twice needs two occurrences in the prediction):
//!
//! `recall = Σ_w min(count_gold(w), count_pred(w)) / |gold tokens|`
//!
//! An empty gold scores 1 when the prediction is also empty and 0 otherwise.
//!
//! LLaVA-Med's own script ([`crate::llava_med::open_recall`]) computes `tp / (tp + fn)` with
//! `tp` counted from the *prediction* (every occurrence of a word that is also in the gold)
//! and `fn` from the gold words the prediction lacks. It stays within [0, 1], but a repeated
//! prediction word counts more than once and a gold word that appears twice but is matched
//! counts only as often as the prediction has it, so the denominator is not the gold's length.
//! Both are reported; this one is ours.

use std::collections::HashMap;

use crate::normalize::answer_tokens;

/// Clipped overlap of two token lists: `Σ_w min(count_a(w), count_b(w))`.
pub(crate) fn overlap(a: &[String], b: &[String]) -> usize {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in b {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut n = 0;
    for t in a {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                n += 1;
            }
        }
    }
    n
}

/// Recall of the gold answer's tokens in the prediction.
pub fn open_recall(prediction: &str, gold: &str) -> f64 {
    open_recall_tokens(&answer_tokens(prediction), &answer_tokens(gold))
}

/// [`open_recall`] on already tokenised text.
pub fn open_recall_tokens(p: &[String], g: &[String]) -> f64 {
    if g.is_empty() {
        return if p.is_empty() { 1.0 } else { 0.0 };
    }
    overlap(g, p) as f64 / g.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        assert_eq!(open_recall("CT", "ct"), 1.0);
        assert_eq!(open_recall("", "ct"), 0.0);
        // gold {posterior, anterior}: both present.
        assert_eq!(open_recall("The image is posterior-anterior.", "Posterior-Anterior"), 1.0);
        // gold {early, reversible, ischemic, injury}: 2 of 4.
        assert_eq!(open_recall("ischemic necrosis, early", "early (reversible) ischemic injury"), 0.5);
        // gold {lung, spinal, cord}: 1 of 3.
        assert!((open_recall("lung", "Lung, Spinal Cord") - 1.0 / 3.0).abs() < 1e-12);
        // multiplicity is clipped: gold {left, left} vs one "left".
        assert_eq!(open_recall("left", "left left"), 0.5);
        assert_eq!(open_recall("left left left", "left"), 1.0);
        assert_eq!(open_recall("", ""), 1.0);
        assert_eq!(open_recall("x", "."), 0.0);
    }
}
