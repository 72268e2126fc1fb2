//! ROUGE-L for generated reports.
//!
//! Rule (protocol `medpo-eval/1`), on [`report_tokens`]:
//! with `L` the length of the longest common subsequence of candidate and reference,
//! `P = L/|cand|`, `R = L/|ref|` and `F = (1 + β²)·P·R / (R + β²·P)` with `β = 1.2`
//! (pycocoevalcap's choice); 0 when either side is empty or `L = 0`. The corpus value is the
//! mean of the per-item F.

use crate::normalize::report_tokens;

/// pycocoevalcap's β.
pub const BETA: f64 = 1.2;

/// Length of the longest common subsequence.
pub fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { cur[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L F of one candidate against its reference.
pub fn rouge_l(candidate: &str, reference: &str) -> f64 {
    let c = report_tokens(candidate);
    let r = report_tokens(reference);
    let l = lcs_len(&c, &r) as f64;
    if l == 0.0 {
        return 0.0;
    }
    let p = l / c.len() as f64;
    let rec = l / r.len() as f64;
    let b2 = BETA * BETA;
    (1.0 + b2) * p * rec / (rec + b2 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // LCS("the cat sat on the mat", "the cat is on the mat") = 5; P = R = 5/6 so F = 5/6.
        assert!((rouge_l("The cat sat on the mat.", "the cat is on the mat") - 5.0 / 6.0).abs() < 1e-12);
        // cand "a b" vs ref "a b c d": P = 1, R = ½, F = 2.44·½/(½ + 1.44) = 0.628866.
        let f = 2.44 * 0.5 / (0.5 + 1.44);
        assert!((rouge_l("a b", "a b c d") - f).abs() < 1e-12);
        assert_eq!(rouge_l("", "a"), 0.0);
        assert_eq!(rouge_l("x y", "a b"), 0.0);
    }
}
