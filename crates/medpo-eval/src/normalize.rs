//! Text normalisation and tokenisation, shared by every lexical metric.
//!
//! Rules of protocol `medpo-eval/1` for short VQA answers ([`answer_tokens`]), in order:
//!
//! 1. The literal `<image>` placeholder is removed.
//! 2. Text is lower-cased (Unicode lower case).
//! 3. Apostrophes (`'`, `’`, `‘`, `` ` ``) are deleted, so `patient's` becomes `patients`.
//! 4. A `.` between two digits is kept (`1.5`); a `,` between two digits is deleted (`1,000`
//!    becomes `1000`).
//! 5. Every other character that is not alphanumeric becomes a space, so punctuation and
//!    hyphens split words (`Posterior-Anterior` becomes `posterior anterior`).
//! 6. Text is split on whitespace.
//! 7. The number words `zero` … `twenty` become digits (`two` becomes `2`).
//! 8. The articles `a`, `an` and `the` are dropped.
//!
//! Long-form reports ([`report_tokens`]) use rules 1–6 only: articles and number words stay,
//! as in the usual captioning toolkits.

const NUMBER_WORDS: [&str; 21] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
];
const NUMBER_DIGITS: [&str; 21] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20",
];

/// Rules 1–5: returns the cleaned text, words separated by single or multiple spaces.
fn clean(text: &str) -> String {
    let text = text.replace("<image>", " ");
    let chars: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let mut out = String::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            out.push(c);
            continue;
        }
        if matches!(c, '\'' | '’' | '‘' | '`') {
            continue;
        }
        let between_digits = i > 0
            && i + 1 < chars.len()
            && chars[i - 1].is_ascii_digit()
            && chars[i + 1].is_ascii_digit();
        match c {
            '.' if between_digits => out.push('.'),
            ',' if between_digits => {}
            _ => out.push(' '),
        }
    }
    out
}

/// Tokens of a short VQA answer or question (rules 1–8).
pub fn answer_tokens(text: &str) -> Vec<String> {
    clean(text)
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| match NUMBER_WORDS.iter().position(|n| *n == w) {
            Some(i) => NUMBER_DIGITS[i].to_string(),
            None => w.to_string(),
        })
        .collect()
}

/// The normalised form of a short answer: its [`answer_tokens`] joined by single spaces.
pub fn normalize_answer(text: &str) -> String {
    answer_tokens(text).join(" ")
}

/// Tokens of a long-form report (rules 1–6).
pub fn report_tokens(text: &str) -> Vec<String> {
    clean(text).split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_case_and_articles() {
        assert_eq!(normalize_answer("Yes."), "yes");
        assert_eq!(normalize_answer("  The Left  Lung! "), "left lung");
        assert_eq!(normalize_answer("Posterior-Anterior"), "posterior anterior");
        assert_eq!(normalize_answer("patient's"), "patients");
        assert_eq!(normalize_answer(""), "");
        assert_eq!(normalize_answer("..."), "");
    }

    #[test]
    fn numbers() {
        assert_eq!(answer_tokens("Two lesions, 1.5 cm."), ["2", "lesions", "1.5", "cm"]);
        assert_eq!(normalize_answer("1,000 cells"), "1000 cells");
        assert_eq!(normalize_answer("one"), "1");
    }

    #[test]
    fn image_placeholder() {
        assert_eq!(normalize_answer("Is this CT?\n<image>"), "is this ct");
        assert_eq!(report_tokens("The heart is normal.\n<image>"), ["the", "heart", "is", "normal"]);
    }
}
