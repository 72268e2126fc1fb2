//! Keyword classifier of questions into categories.
//!
//! Rules (protocol `medpo-eval/1`). The question is tokenised with
//! [`answer_tokens`] (lower case, punctuation split,
//! articles dropped, number words as digits). The rules below are tried **in order** and the
//! first that matches decides; a rule matches when the question contains one of its words as
//! a whole token, or one of its phrases as a contiguous run of tokens (phrases are written
//! after normalisation, so "part of the body" is written `part of body`).
//!
//! | # | category | words | phrases |
//! |---|---|---|---|
#![doc = include_str!("category_rules.md")]
//!
//! Before the rules are tried, the anatomical names in [`MASKED_PHRASES`] (`small bowel`,
//! `large bowel`, `small intestine`, `large intestine`) are removed from the question.
//!
//! Whole-token matching keeps `ct` from matching `infarct`. The order puts the specific
//! question kinds (count, colour, modality, plane) before the broad ones (presence), so
//! "How many lesions are there?" is a count question, not a presence question.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::normalize::answer_tokens;

/// A question category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Count,
    Colour,
    Modality,
    Plane,
    Organ,
    Position,
    Size,
    Abnormality,
    Other,
}

/// One rule: a category, its words and its phrases.
pub struct Rule {
    pub category: Category,
    pub words: &'static [&'static str],
    pub phrases: &'static [&'static str],
}

/// The rules, in the order they are tried. [`Category::Other`] has no rule: it is what is left.
pub const RULES: &[Rule] = &[
    Rule {
        category: Category::Count,
        words: &["count", "counts"],
        phrases: &["how many", "number of"],
    },
    Rule {
        category: Category::Colour,
        words: &["color", "colour", "colors", "colours", "colored", "coloured"],
        phrases: &[],
    },
    Rule {
        category: Category::Modality,
        words: &[
            "modality", "modalities", "mri", "mr", "ct", "cta", "radiograph", "radiography",
            "radiographic", "xray", "ultrasound", "sonography", "ultrasonography", "pet",
            "angiogram", "angiography", "mammogram", "mammography", "fluoroscopy", "t1", "t2",
            "flair", "dwi", "adc", "weighted", "weighting", "contrast", "gadolinium", "stain",
            "stained", "staining", "imaging",
        ],
        phrases: &[
            "x ray", "how was this image taken", "how was image taken", "how is this image taken",
            "type of image", "kind of image", "type of scan", "kind of scan",
        ],
    },
    Rule {
        category: Category::Plane,
        words: &[
            "plane", "planes", "axial", "coronal", "sagittal", "transverse", "orientation",
            "oriented", "projection", "pa", "ap",
        ],
        phrases: &["what view", "which view"],
    },
    Rule {
        category: Category::Organ,
        words: &["organ", "organs", "anatomy", "anatomical"],
        phrases: &["body part", "part of body", "which part", "what part", "body region"],
    },
    Rule {
        category: Category::Position,
        words: &[
            "where", "location", "located", "locate", "localized", "position", "positioned",
            "laterality", "bilateral", "unilateral", "quadrant",
        ],
        phrases: &[
            "left or right", "right or left", "which side", "what side", "on left", "on right",
            "in left", "in right", "which lung", "which lobe", "what lobe", "which kidney",
            "which hemisphere",
        ],
    },
    Rule {
        category: Category::Size,
        words: &[
            "size", "sized", "sizes", "big", "bigger", "biggest", "large", "larger", "largest",
            "small", "smaller", "smallest", "enlarged", "enlargement", "dilated", "dilation",
            "diameter", "width", "length", "measure", "measures", "measurement", "cm", "mm",
            "wide", "thick", "thickness", "thickened",
        ],
        phrases: &[],
    },
    Rule {
        category: Category::Abnormality,
        words: &[
            "abnormal", "abnormality", "abnormalities", "normal", "lesion", "lesions", "disease",
            "diseases", "diagnosis", "diagnosed", "pathology", "pathological", "finding",
            "findings", "evidence", "mass", "masses", "tumor", "tumour", "tumors", "tumours",
            "fracture", "fractures", "present", "presence", "absent", "seen", "visible", "show",
            "shows", "showing", "shown", "contain", "contains", "containing", "wrong", "healthy",
            "unhealthy",
        ],
        phrases: &["is there", "are there", "is this", "does this", "does image", "do you see"],
    },
];

/// Anatomical names that contain a size word; they are removed before the rules are tried,
/// so "Is there small bowel obstruction?" is not a size question.
pub const MASKED_PHRASES: &[&str] = &["small bowel", "large bowel", "small intestine", "large intestine"];

/// Every category, in rule order, `Other` last.
pub const ALL: [Category; 9] = [
    Category::Count,
    Category::Colour,
    Category::Modality,
    Category::Plane,
    Category::Organ,
    Category::Position,
    Category::Size,
    Category::Abnormality,
    Category::Other,
];

impl Category {
    /// The category's name as used in metric keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Count => "count",
            Category::Colour => "colour",
            Category::Modality => "modality",
            Category::Plane => "plane",
            Category::Organ => "organ",
            Category::Position => "position",
            Category::Size => "size",
            Category::Abnormality => "abnormality",
            Category::Other => "other",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown category `{s}`: expected one of {}", names.join(", "))
            })
    }
}

/// Word → index of the first rule listing it.
fn word_index() -> &'static HashMap<&'static str, usize> {
    static INDEX: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut m = HashMap::new();
        for (i, r) in RULES.iter().enumerate() {
            for w in r.words {
                m.entry(*w).or_insert(i);
            }
        }
        m
    })
}

/// Index of the first rule matching the tokens.
fn first_rule(tokens: &[String]) -> Option<usize> {
    let by_word = tokens.iter().filter_map(|t| word_index().get(t.as_str()).copied()).min();
    let limit = by_word.unwrap_or(RULES.len());
    let by_phrase = RULES[..limit].iter().position(|r| {
        r.phrases.iter().any(|p| {
            let k = p.split(' ').count();
            tokens.windows(k).any(|w| w.iter().map(String::as_str).eq(p.split(' ')))
        })
    });
    by_phrase.or(by_word)
}

/// Classifies a question (with or without `<image>`).
pub fn classify(question: &str) -> Category {
    let mut tokens = answer_tokens(question);
    for p in MASKED_PHRASES {
        let phrase: Vec<&str> = p.split(' ').collect();
        let mut i = 0;
        while i + phrase.len() <= tokens.len() {
            if tokens[i..i + phrase.len()].iter().zip(&phrase).all(|(t, p)| t == p) {
                tokens.drain(i..i + phrase.len());
            } else {
                i += 1;
            }
        }
    }
    first_rule(&tokens).map_or(Category::Other, |i| RULES[i].category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(classify("How many lesions are there?"), Category::Count);
        assert_eq!(classify("What color is the lesion?"), Category::Colour);
        assert_eq!(classify("What modality is used to take this image?"), Category::Modality);
        assert_eq!(classify("Is this a CT?\n<image>"), Category::Modality);
        assert_eq!(classify("Is there an infarct?"), Category::Abnormality);
        assert_eq!(classify("Is this an axial plane?"), Category::Plane);
        assert_eq!(classify("How is the patient oriented?"), Category::Plane);
        assert_eq!(classify("Which plane is this image taken?"), Category::Plane);
        assert_eq!(classify("Is there a small bowel obstruction?"), Category::Abnormality);
        assert_eq!(classify("Is the lung healthy?"), Category::Abnormality);
        assert_eq!(classify("Which part of the body does this image belong to?"), Category::Organ);
        assert_eq!(classify("What is the largest organ in the picture?"), Category::Organ);
        assert_eq!(classify("Where is the liver?"), Category::Position);
        assert_eq!(classify("Is the lesion on the left or right?"), Category::Position);
        assert_eq!(classify("Is the heart enlarged?"), Category::Size);
        assert_eq!(classify("Is there evidence of an aortic aneurysm?"), Category::Abnormality);
        assert_eq!(classify("how are the histone subunits charged?"), Category::Other);
    }

    /// `MEDPO_BLESS=1 cargo test -p medpo-eval rules_table` rewrites `category_rules.md`.
    #[test]
    fn rules_table_in_docs_matches_code() {
        if std::env::var_os("MEDPO_BLESS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/category_rules.md");
            std::fs::write(path, rules_markdown()).unwrap();
            return;
        }
        assert_eq!(rules_markdown(), include_str!("category_rules.md"));
    }

    /// The docs' rule table, generated from [`RULES`] (kept in `category_rules.md`).
    fn rules_markdown() -> String {
        let mut s = String::new();
        for (i, r) in RULES.iter().enumerate() {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                i + 1,
                r.category,
                r.words.join(", "),
                r.phrases.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
            ));
        }
        s.push_str(&format!("| {} | other | (no rule matched) | |\n", RULES.len() + 1));
        s
    }
}
