//! Closed-question accuracy with yes/no normalisation.
//!
//! Rules (protocol `medpo-eval/1`), on [`normalize_answer`](crate::normalize::normalize_answer)
//! text:
//!
//! - **Yes/no gold** (the normalised gold is `yes` or `no`): the prediction's answer is its
//!   *first* token that is `yes` or `no`. The item is correct when that token equals the gold.
//!   A prediction with neither token (empty, "I cannot tell", "positive") is wrong and is
//!   counted as *unparsed*. So `"Yes."`, `"yes"` and `"YES, there is"` all answer yes, and
//!   `"No, yes"` answers no. Unlike LLaVA-Med's substring test ([`crate::llava_med`]), words
//!   that merely contain the letters, such as `"not"`, `"know"`, `"cannot"` or `"abnormal"`,
//!   never count as `no`. (`"none"` counts as no under neither rule: LLaVA-Med normalises it
//!   to `"0"` first.)
//! - **Other gold** (pick-one questions such as "Is this T1 or T2?"): correct when the gold's
//!   tokens appear as a contiguous run in the prediction's tokens (LLaVA-Med's
//!   `gold in prediction`, on token boundaries). A prediction that names both options is
//!   therefore counted correct; this is a known weakness of the convention, kept for
//!   comparability.
//! - An empty gold matches only an empty prediction.

use crate::normalize::answer_tokens;

/// What a prediction to a closed question was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedVerdict {
    Correct,
    Wrong,
    /// Yes/no gold, but the prediction says neither yes nor no (scored wrong).
    Unparsed,
}

impl ClosedVerdict {
    /// 1.0 when correct, else 0.0.
    pub fn score(self) -> f64 {
        if self == ClosedVerdict::Correct {
            1.0
        } else {
            0.0
        }
    }
}

/// The first `yes` or `no` token of a text, if any.
pub fn yes_no(text: &str) -> Option<&'static str> {
    answer_tokens(text).iter().find_map(|t| match t.as_str() {
        "yes" => Some("yes"),
        "no" => Some("no"),
        _ => None,
    })
}

/// Whether `needle` occurs as a contiguous run in `hay`.
pub(crate) fn contains_run(hay: &[String], needle: &[String]) -> bool {
    if needle.is_empty() {
        return hay.is_empty();
    }
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Judges one closed question.
pub fn judge_closed(prediction: &str, gold: &str) -> ClosedVerdict {
    judge_closed_tokens(&answer_tokens(prediction), &answer_tokens(gold))
}

/// [`judge_closed`] on already tokenised text.
pub fn judge_closed_tokens(pred_tokens: &[String], gold_tokens: &[String]) -> ClosedVerdict {
    if gold_tokens.len() == 1 && (gold_tokens[0] == "yes" || gold_tokens[0] == "no") {
        let first = pred_tokens.iter().find(|t| *t == "yes" || *t == "no");
        return match first {
            None => ClosedVerdict::Unparsed,
            Some(p) if *p == gold_tokens[0] => ClosedVerdict::Correct,
            Some(_) => ClosedVerdict::Wrong,
        };
    }
    if contains_run(pred_tokens, gold_tokens) {
        ClosedVerdict::Correct
    } else {
        ClosedVerdict::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClosedVerdict::*;

    #[test]
    fn yes_no_gold() {
        assert_eq!(judge_closed("yes.", "Yes"), Correct);
        assert_eq!(judge_closed("Yes", "yes"), Correct);
        assert_eq!(judge_closed("YES, there is a mass.", "yes"), Correct);
        assert_eq!(judge_closed("No, yes", "yes"), Wrong);
        assert_eq!(judge_closed("There is no evidence of it", "no"), Correct);
        assert_eq!(judge_closed("", "no"), Unparsed);
        assert_eq!(judge_closed("I do not know", "no"), Unparsed);
        assert_eq!(judge_closed("none", "No"), Unparsed);
        assert_eq!(judge_closed("no", "yes"), Wrong);
    }

    #[test]
    fn pick_one_gold() {
        assert_eq!(judge_closed("T2-weighted", "T2"), Correct);
        assert_eq!(judge_closed("t1", "T2"), Wrong);
        assert_eq!(judge_closed("The right side.", "right side"), Correct);
        assert_eq!(judge_closed("right", "right side"), Wrong);
        assert_eq!(judge_closed("One", "one"), Correct);
        assert_eq!(judge_closed("", "lung"), Wrong);
        assert_eq!(judge_closed("lungs", "lung"), Wrong);
    }

    #[test]
    fn scores() {
        assert_eq!(Correct.score(), 1.0);
        assert_eq!(Unparsed.score(), 0.0);
    }
}
