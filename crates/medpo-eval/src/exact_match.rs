//! Exact match.
//!
//! Rule (protocol `medpo-eval/1`): 1 when the normalised prediction equals the normalised
//! gold ([`normalize_answer`](crate::normalize::normalize_answer)), else 0. So `"Yes."`
//! matches `yes` and `"the CT"` matches `CT`, but `"CT scan"` does not match `CT`.

use crate::normalize::answer_tokens;

/// 1.0 when the normalised texts are equal, else 0.0.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    exact_match_tokens(&answer_tokens(prediction), &answer_tokens(gold))
}

/// [`exact_match`] on already tokenised text.
pub fn exact_match_tokens(p: &[String], g: &[String]) -> f64 {
    if p == g {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        assert_eq!(exact_match("Yes.", "yes"), 1.0);
        assert_eq!(exact_match("the CT", "CT"), 1.0);
        assert_eq!(exact_match("CT scan", "CT"), 0.0);
        assert_eq!(exact_match("", "CT"), 0.0);
        assert_eq!(exact_match("", ""), 1.0);
        assert_eq!(exact_match("Posterior - anterior", "posterior-anterior"), 1.0);
    }
}
