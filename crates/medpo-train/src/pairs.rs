//! Targeted visual-misinterpretation pairs (the seed paper's proposal, reconstructed in
//! `shared/notes/seed-paper.md` §6): for each (image, question, gold answer), retrieve the top-k
//! most similar *other* images by the model's own vision features (cosine), let the model answer
//! the same question on a similar image, and use that answer as the rejected response.
//!
//! One record per (item, neighbour), in the three modes of the authors' runs:
//! - `dpo-only`: (image, gold) ≻ (image, answer given on the similar image) — train with `sigmoid`;
//! - `copo-only`: (image, gold) ≻ (similar image, gold): `chosen == rejected`,
//!   `rejected_image` = the similar image — train with `copo`;
//! - `mixed`: both in one record (`rejected` = the answer on the similar image, `rejected_image`
//!   = the similar image) — train with `mdpo`, whose DPO term reads the text pair and whose CoPO
//!   term reads the image pair.
//!
//! The model side (vision features, generation) is behind [`AnswerOnImage`] and a feature
//! matrix, so this module needs no model engine.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

use crate::data::{PreferenceRecord, Source};
use crate::error::{Error, Result};

/// Which terms the targeted pairs feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetedMode {
    Mixed,
    DpoOnly,
    CopoOnly,
}

const MODES: &[(TargetedMode, &str)] = &[
    (TargetedMode::Mixed, "mixed"),
    (TargetedMode::DpoOnly, "dpo-only"),
    (TargetedMode::CopoOnly, "copo-only"),
];

impl fmt::Display for TargetedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MODES.iter().find(|(m, _)| m == self).expect("in table").1)
    }
}

impl FromStr for TargetedMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MODES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(m, _)| *m)
            .ok_or_else(|| Error::Config {
                key: "mode",
                value: s.into(),
                reason: format!(
                    "valid: {}",
                    MODES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
                ),
            })
    }
}

/// One VQA example.
#[derive(Clone, Debug, PartialEq)]
pub struct VqaItem {
    pub id: String,
    /// Image path (relative to the images folder); items sharing it are never each other's negatives.
    pub image: String,
    pub question: String,
    pub answer: String,
}

/// The model answering a question about an image (greedy, the model's template).
pub trait AnswerOnImage {
    fn answer(&mut self, question: &str, image: &str) -> Result<String>;
}

/// For each row of `features` (N × D, one pooled vision feature per item), the `k` most
/// cosine-similar rows whose `images[j]` differs from `images[i]`, best first (ties: lower index).
pub fn top_k_similar(
    features: &Tensor,
    images: &[String],
    k: usize,
) -> Result<Vec<Vec<(usize, f64)>>> {
    let f = features.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    if f.len() != images.len() {
        return Err(Error::Config {
            key: "features",
            value: format!("{} rows", f.len()),
            reason: format!("need one per item ({})", images.len()),
        });
    }
    let unit: Vec<Vec<f64>> = f
        .iter()
        .map(|r| {
            let n = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            r.iter().map(|x| x / n).collect()
        })
        .collect();
    Ok((0..unit.len())
        .map(|i| {
            let mut s: Vec<(usize, f64)> = (0..unit.len())
                .filter(|&j| images[j] != images[i])
                .map(|j| (j, unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum()))
                .collect();
            s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            s.truncate(k);
            s
        })
        .collect())
}

/// What [`build_targeted_pairs`] made.
#[derive(Clone, Debug, Default)]
pub struct TargetedReport {
    pub records: Vec<PreferenceRecord>,
    /// Neighbours skipped because the model's answer on the similar image equalled the gold answer.
    pub same_answer: usize,
    /// Neighbours skipped because the model's answer on the similar image was empty.
    pub empty_answer: usize,
}

fn normalise(s: &str) -> String {
    s.trim().trim_end_matches('.').to_lowercase()
}

/// Builds the targeted pairs (see the module docs). `features[i]` belongs to `items[i]`.
pub fn build_targeted_pairs(
    items: &[VqaItem],
    features: &Tensor,
    k: usize,
    mode: TargetedMode,
    model: &mut dyn AnswerOnImage,
) -> Result<TargetedReport> {
    let images: Vec<String> = items.iter().map(|i| i.image.clone()).collect();
    let nn = top_k_similar(features, &images, k)?;
    let mut rep = TargetedReport::default();
    for (item, neigh) in items.iter().zip(nn) {
        for (j, sim) in neigh {
            let similar = &items[j].image;
            let prompt = format!(
                "{}\n{}",
                crate::data::IMAGE_TOKEN,
                item.question.replace(crate::data::IMAGE_TOKEN, "").trim()
            );
            let rejected = match mode {
                TargetedMode::CopoOnly => item.answer.clone(),
                TargetedMode::DpoOnly | TargetedMode::Mixed => {
                    let a = model.answer(&item.question, similar)?;
                    if a.trim().is_empty() {
                        rep.empty_answer += 1;
                        continue;
                    }
                    if normalise(&a) == normalise(&item.answer) {
                        rep.same_answer += 1;
                        continue;
                    }
                    a
                }
            };
            tracing::debug!(item = %item.id, similar = %similar, sim, "targeted pair");
            rep.records.push(PreferenceRecord {
                id: Some(format!("{}__vs__{}", item.id, items[j].id)),
                prompt,
                chosen: item.answer.clone(),
                rejected,
                image: Some(item.image.clone()),
                rejected_image: (mode != TargetedMode::DpoOnly).then(|| similar.clone()),
                weight: None,
                roi: None,
                source: Source {
                    file: "targeted".into(),
                    index: rep.records.len(),
                    line: None,
                },
            });
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    struct Echo;
    impl AnswerOnImage for Echo {
        fn answer(&mut self, q: &str, image: &str) -> Result<String> {
            Ok(if image == "c.png" {
                "yes".into()
            } else {
                format!("{q} → seen on {image}")
            })
        }
    }

    fn items() -> (Vec<VqaItem>, Tensor) {
        let it = |id: &str, img: &str, a: &str| VqaItem {
            id: id.into(),
            image: img.into(),
            question: "Is there a nodule?".into(),
            answer: a.into(),
        };
        let items = vec![
            it("0", "a.png", "Yes."),
            it("1", "a.png", "no"),
            it("2", "b.png", "no"),
            it("3", "c.png", "no"),
            it("4", "d.png", "no"),
        ];
        // a·b close, a·c next, d far; item 1 shares item 0's image.
        let f = Tensor::new(
            &[
                [1.0f32, 0.0, 0.0],
                [1.0, 0.05, 0.0],
                [0.9, 0.1, 0.0],
                [0.5, 0.5, 0.0],
                [-1.0, 0.0, 0.2],
            ],
            &Device::Cpu,
        )
        .unwrap();
        (items, f)
    }

    #[test]
    fn retrieval_excludes_same_image_and_ranks_by_cosine() {
        let (items, f) = items();
        let imgs: Vec<String> = items.iter().map(|i| i.image.clone()).collect();
        let nn = top_k_similar(&f, &imgs, 2).unwrap();
        assert_eq!(
            nn[0].iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![2, 3],
            "never item 1 (same image a.png)"
        );
        assert!(nn[0][0].1 > nn[0][1].1);
        assert_eq!(nn[4].len(), 2);
    }

    #[test]
    fn modes_fill_the_right_sides() {
        let (items, f) = items();
        let mixed = build_targeted_pairs(&items, &f, 2, TargetedMode::Mixed, &mut Echo).unwrap();
        let r = &mixed.records[0];
        assert_eq!(
            (
                r.image.as_deref(),
                r.rejected_image.as_deref(),
                r.chosen.as_str()
            ),
            (Some("a.png"), Some("b.png"), "Yes.")
        );
        assert_eq!(r.rejected, "Is there a nodule? → seen on b.png");
        assert!(r.prompt.starts_with("<image>\n"));
        // Item 0's answer on c.png is "yes" = gold "Yes." → not a negative.
        assert!(mixed.same_answer >= 1);
        let dpo = build_targeted_pairs(&items, &f, 2, TargetedMode::DpoOnly, &mut Echo).unwrap();
        assert!(dpo
            .records
            .iter()
            .all(|r| r.rejected_image.is_none() && r.chosen != r.rejected));
        let copo = build_targeted_pairs(&items, &f, 2, TargetedMode::CopoOnly, &mut Echo).unwrap();
        assert_eq!(copo.records.len(), 10);
        assert!(copo.records.iter().all(|r| r.chosen == r.rejected
            && r.rejected_image.is_some()
            && r.rejected_image != r.image));
        assert_eq!(
            "copo-only".parse::<TargetedMode>().unwrap(),
            TargetedMode::CopoOnly
        );
        assert!("both"
            .parse::<TargetedMode>()
            .unwrap_err()
            .to_string()
            .contains("dpo-only"));
    }
}
