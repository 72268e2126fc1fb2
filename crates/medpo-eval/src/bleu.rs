//! BLEU-4 for generated reports.
//!
//! Rules (protocol `medpo-eval/1`), on [`report_tokens`]:
//!
//! - **Corpus BLEU-4** (Papineni et al. 2002), one reference per item: clipped n-gram
//!   matches and candidate n-gram counts (n = 1…4) are summed over the items; `p_n` is their
//!   ratio; `BP = exp(1 − r/c)` when the summed candidate length `c` is below the summed
//!   reference length `r`, else 1; `BLEU = BP·exp(¼·Σ ln p_n)`, and 0 when any `p_n` is 0.
//!   No smoothing. Its interval resamples items and recomputes from the summed statistics.
//! - **Sentence BLEU-4** (per item, for per-item results): the same on one item with add-one
//!   smoothing of `p_2…p_4` (Lin & Och 2004, "BLEU+1"); 0 when the candidate is empty.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::normalize::report_tokens;

/// Sufficient statistics of one item (addable across items).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BleuStats {
    pub matches: [u64; 4],
    pub totals: [u64; 4],
    pub hyp_len: u64,
    pub ref_len: u64,
}

impl std::ops::AddAssign for BleuStats {
    fn add_assign(&mut self, o: Self) {
        for n in 0..4 {
            self.matches[n] += o.matches[n];
            self.totals[n] += o.totals[n];
        }
        self.hyp_len += o.hyp_len;
        self.ref_len += o.ref_len;
    }
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], u64> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w).or_default() += 1;
        }
    }
    m
}

/// Statistics of one candidate against its reference.
pub fn bleu_stats(candidate: &str, reference: &str) -> BleuStats {
    let c = report_tokens(candidate);
    let r = report_tokens(reference);
    let mut s = BleuStats { hyp_len: c.len() as u64, ref_len: r.len() as u64, ..Default::default() };
    for n in 1..=4 {
        let cc = ngram_counts(&c, n);
        let rc = ngram_counts(&r, n);
        s.totals[n - 1] = c.len().saturating_sub(n - 1) as u64;
        s.matches[n - 1] = cc.iter().map(|(g, k)| (*k).min(*rc.get(g).unwrap_or(&0))).sum();
    }
    s
}

fn brevity_penalty(s: &BleuStats) -> f64 {
    if s.hyp_len == 0 {
        0.0
    } else if s.hyp_len < s.ref_len {
        (1.0 - s.ref_len as f64 / s.hyp_len as f64).exp()
    } else {
        1.0
    }
}

/// Corpus BLEU-4 from summed statistics.
pub fn corpus_bleu(s: &BleuStats) -> f64 {
    if s.matches.contains(&0) {
        return 0.0;
    }
    let log_p: f64 = (0..4).map(|n| (s.matches[n] as f64 / s.totals[n] as f64).ln()).sum::<f64>() / 4.0;
    brevity_penalty(s) * log_p.exp()
}

/// Sentence BLEU-4 with add-one smoothing of `p_2…p_4`.
pub fn sentence_bleu(s: &BleuStats) -> f64 {
    if s.hyp_len == 0 || s.matches[0] == 0 {
        return 0.0;
    }
    let log_p: f64 = (0..4)
        .map(|n| {
            let (m, t) = (s.matches[n] as f64, s.totals[n] as f64);
            if n == 0 { (m / t).ln() } else { ((m + 1.0) / (t + 1.0)).ln() }
        })
        .sum::<f64>()
        / 4.0;
    brevity_penalty(s) * log_p.exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // cand "the cat sat on the mat" vs ref "the cat is on the mat":
        // p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3, c = r = 6.
        let s = bleu_stats("The cat sat on the mat.", "the cat is on the mat");
        assert_eq!(s.matches, [5, 3, 1, 0]);
        assert_eq!(s.totals, [6, 5, 4, 3]);
        assert_eq!(corpus_bleu(&s), 0.0);
        // BLEU+1: (5/6 · 4/6 · 2/5 · 1/4)^(1/4) = 0.485492...
        let expected = (5.0f64 / 6.0 * 4.0 / 6.0 * 2.0 / 5.0 * 1.0 / 4.0).powf(0.25);
        assert!((sentence_bleu(&s) - expected).abs() < 1e-12);
        assert!((corpus_bleu(&bleu_stats("a b c d e", "a b c d e")) - 1.0).abs() < 1e-12);
        assert_eq!(sentence_bleu(&bleu_stats("", "a b")), 0.0);
    }

    #[test]
    fn brevity_penalty_applies() {
        // cand "a b c d" vs ref "a b c d e f": all p_n = 1, BP = exp(1 − 6/4).
        let s = bleu_stats("a b c d", "a b c d e f");
        assert!((corpus_bleu(&s) - (-0.5f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn corpus_sums_statistics() {
        let mut s = bleu_stats("the cat sat on the mat", "the cat is on the mat");
        s += bleu_stats("a b c d e", "a b c d e");
        // p = 10/11, 7/9, 4/7, 2/5; BP = 1.
        let expected = (10.0f64 / 11.0 * 7.0 / 9.0 * 4.0 / 7.0 * 2.0 / 5.0).powf(0.25);
        assert!((corpus_bleu(&s) - expected).abs() < 1e-12);
    }
}
