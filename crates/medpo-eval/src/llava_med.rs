//! The seed-compatible scoring rules: LLaVA-Med v1.5's `llava/eval/run_eval_batch.py`, the
//! script behind the numbers the study (and most medical-VLM papers) report. Protocol variant
//! [`LLAVA_MED_PROTOCOL`]; ours stays [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION). Both are
//! computed for every item and reported side by side, so a reader can reproduce published
//! numbers and see how much of them the lenient rules explain.
//!
//! Rules, as the script applies them (ported, not reinterpreted):
//!
//! - **Normalisation** ([`normalize_word`], `eval_metrics/glossary.py`), on lower-cased text:
//!   each of ``; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !`` is deleted when it stands next to
//!   a space somewhere in the text (or when the text holds a digit-comma-digit run), otherwise
//!   replaced by a space; then up to 32 `.` not followed by a digit are deleted (the script
//!   passes `re.UNICODE` as `re.sub`'s `count`); the text is split on whitespace; number words
//!   `none`, `zero` … `ten` become digits (**`none` becomes `0`**, so it is never a "no");
//!   `a`, `an`, `the` are dropped; a fixed list of apostrophe-less contractions gets its
//!   apostrophe back (`dont` → `don't`); words are joined by one space and commas removed.
//!   Apostrophes, colons and hyphens inside words otherwise stay.
//! - **Closed** ([`closed_correct`]): correct when the normalised gold is a **substring** of the
//!   normalised prediction (Python's `gold in prediction`). So gold `no` is matched by
//!   "abnormal", "cannot", "nodule", "know"; gold `yes` by "eyes"; and a prediction that names
//!   both options of a pick-one question is correct. An empty gold matches everything.
//! - **Open recall** ([`open_recall`], `calculate_f1score`'s recall, applied to the already
//!   normalised strings, which it normalises again): with word counts `c` (prediction) and `r`
//!   (gold), `tp = Σ_{w in both} c(w)` (counted **from the prediction**), `fn = Σ_{w only in
//!   gold} r(w)`, recall `= tp / (tp + fn)`; 0 when either side has no words or `tp = 0`. It
//!   lies in [0, 1]: it cannot exceed 1, but a prediction that repeats a gold word raises `tp`
//!   and so outweighs the gold words it misses ("left left kidney" against "left lung" scores
//!   2/3, where clipped token recall scores 1/2).

use std::collections::HashMap;

/// Name of the seed-compatible protocol variant, stored beside the metrics it produced.
pub const LLAVA_MED_PROTOCOL: &str = "llava-med/run_eval_batch";

/// Characters the script strips or turns into spaces (`glossary.punct`).
const PUNCT: [char; 21] =
    [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];

/// `glossary.manual_map`.
const NUMBER_WORDS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// `glossary.contractions`, the entries that can match a lower-cased word (the script's
/// capitalised keys, such as `Im`, never do).
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// Python's `re.search(r"(\d)(\,)(\d)", text)`.
fn has_digit_comma_digit(chars: &[char]) -> bool {
    chars.windows(3).any(|w| w[0].is_numeric() && w[1] == ',' && w[2].is_numeric())
}

/// `glossary.normalize_word` on lower-cased text (the script lower-cases before calling it).
pub fn normalize_word(text: &str) -> String {
    let text = text.to_lowercase();
    let chars: Vec<char> = text.chars().collect();
    let strip_all = has_digit_comma_digit(&chars);
    // Each punctuation mark is decided on the original text, then applied to the running one.
    let mut out = chars.clone();
    for p in PUNCT {
        let beside_space = chars.windows(2).any(|w| (w[0] == p && w[1] == ' ') || (w[0] == ' ' && w[1] == p));
        if beside_space || strip_all {
            out.retain(|&c| c != p);
        } else {
            for c in out.iter_mut().filter(|c| **c == p) {
                *c = ' ';
            }
        }
    }
    // `(?!<=\d)(\.)(?!\d)` with count = re.UNICODE = 32: a `.` not followed by a digit.
    let mut stripped = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in out.iter().enumerate() {
        let next_is_digit = out.get(i + 1).is_some_and(|n| n.is_numeric());
        if c == '.' && !next_is_digit && removed < 32 {
            removed += 1;
            continue;
        }
        stripped.push(c);
    }
    let words: Vec<&str> = stripped
        .split_whitespace()
        .map(|w| NUMBER_WORDS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| *v))
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| CONTRACTIONS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| *v))
        .collect();
    words.join(" ").replace(',', "")
}

/// Whether a closed answer is correct under the script's rule: normalised gold ⊂ normalised
/// prediction, as substrings.
pub fn closed_correct(prediction: &str, gold: &str) -> bool {
    normalize_word(prediction).contains(normalize_word(gold).as_str())
}

/// `split_sentence(text, 1)`: word counts of whitespace-split text.
fn word_counts(text: &str) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for w in text.split_whitespace() {
        *m.entry(w).or_default() += 1;
    }
    m
}

/// The script's open-question recall (`calculate_f1score(pred, gold)[2]`).
pub fn open_recall(prediction: &str, gold: &str) -> f64 {
    // run_eval_batch normalises, then calculate_f1score normalises again.
    let (p, g) = (normalize_word(&normalize_word(prediction)), normalize_word(&normalize_word(gold)));
    let (pc, gc) = (word_counts(&p), word_counts(&g));
    if pc.is_empty() || gc.is_empty() {
        return 0.0;
    }
    let tp: usize = pc.iter().filter(|(w, _)| gc.contains_key(*w)).map(|(_, c)| c).sum();
    let fn_: usize = gc.iter().filter(|(w, _)| !pc.contains_key(*w)).map(|(_, c)| c).sum();
    if tp == 0 {
        return 0.0;
    }
    tp as f64 / (tp + fn_) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_the_script() {
        assert_eq!(normalize_word("Yes."), "yes");
        assert_eq!(normalize_word("The left lung!"), "left lung");
        // No space beside the hyphen: it becomes a space; beside a space: deleted.
        assert_eq!(normalize_word("Posterior-Anterior"), "posterior anterior");
        assert_eq!(normalize_word("x-ray - chest"), "xray chest");
        // A digit-comma-digit run deletes every punctuation mark instead.
        assert_eq!(normalize_word("1,000 (approx)"), "1000 approx");
        assert_eq!(normalize_word("None"), "0");
        assert_eq!(normalize_word("two lesions, 1.5 cm."), "2 lesions 1.5 cm");
        assert_eq!(normalize_word("dont know"), "don't know");
        assert_eq!(normalize_word("patient's"), "patient's");
        assert_eq!(normalize_word(""), "");
        // Only 32 periods are stripped.
        assert_eq!(normalize_word(&".".repeat(40)), ".".repeat(8));
    }

    #[test]
    fn closed_is_a_substring_test() {
        assert!(closed_correct("It is abnormal.", "No"));
        assert!(closed_correct("I cannot tell", "no"));
        assert!(closed_correct("There is a nodule", "no"));
        assert!(closed_correct("Yes, both eyes", "yes"));
        assert!(!closed_correct("none", "no"), "none normalises to 0");
        assert!(closed_correct("T1 or T2", "t2"));
        assert!(closed_correct("anything", ""));
        assert!(!closed_correct("yes", "no"));
    }

    #[test]
    fn recall_counts_matches_from_the_prediction() {
        assert_eq!(open_recall("CT", "ct"), 1.0);
        assert_eq!(open_recall("", "ct"), 0.0);
        assert_eq!(open_recall("ct", ""), 0.0);
        // gold {lung, spinal, cord}: 1 match, 2 missed.
        assert!((open_recall("lung", "Lung, Spinal Cord") - 1.0 / 3.0).abs() < 1e-12);
        // A repeated prediction word counts twice: tp 2, fn 1.
        assert!((open_recall("left left kidney", "left lung") - 2.0 / 3.0).abs() < 1e-12);
        // A repeated gold word matched once counts once: tp 1, fn 0.
        assert_eq!(open_recall("left", "left left"), 1.0);
        assert_eq!(open_recall("liver", "the kidney"), 0.0);
    }
}
