//! The zoo's benchmark table (shaped like the study's: one row per objective, closed accuracy,
//! open recall, per-category scores, the paired test against SFT) and the model cards.

use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::leaderboard::{compare_runs, Comparison};
use medpo_eval::protocol::Protocol;
use medpo_eval::summary::RunSummary;

use super::Plan;

/// How the preference data was made.
#[derive(Clone, Debug, Default)]
pub struct PairCounts {
    pub pairs: usize,
    pub mistakes_found: usize,
    pub mistakes_used: usize,
    pub edits: usize,
    pub roi_fallbacks: usize,
    pub targeted: usize,
    pub targeted_same_answer: usize,
}

pub struct Report<'a> {
    pub plan: &'a Plan,
    pub seed: u64,
    pub generator: &'a str,
    pub sft: &'a RunSummary,
    pub blank: &'a RunSummary,
    /// (label, model id, summary) per variant.
    pub variants: &'a [(String, String, RunSummary)],
    pub pairs: &'a PairCounts,
    pub minutes: f64,
    /// Training runs reused from an interrupted or earlier build in the same work folder.
    pub reused: usize,
    pub quick: bool,
}

const CATEGORIES: &[&str] = &["modality", "organ", "abnormality", "position", "size", "count"];

fn pct(s: &RunSummary, key: &str) -> String {
    match s.metric(key) {
        Some(m) if m.value.is_finite() => {
            if m.ci_low.is_finite() {
                format!("{:.1} [{:.1}, {:.1}]", 100.0 * m.value, 100.0 * m.ci_low, 100.0 * m.ci_high)
            } else {
                format!("{:.1}", 100.0 * m.value)
            }
        }
        _ => "–".into(),
    }
}

fn short(s: &RunSummary, key: &str) -> String {
    match s.metric(key) {
        Some(m) if m.value.is_finite() => format!("{:.1}", 100.0 * m.value),
        _ => "–".into(),
    }
}

/// Wrong closed answers on questions about findings (presence, side, size): the visual
/// misinterpretations the targeted construction is meant to remove.
pub fn misreadings(s: &RunSummary) -> (usize, usize) {
    use medpo_eval::category::Category;
    let items: Vec<_> = s
        .items
        .iter()
        .filter(|i| i.correct.is_some() && matches!(i.category, Category::Abnormality | Category::Position | Category::Size))
        .collect();
    (items.iter().filter(|i| i.correct == Some(false)).count(), items.len())
}

/// Accuracy of always giving each closed question's most frequent answer in this test set
/// (per question text): what a model that ignores the image can reach at best.
pub fn prior_baseline(s: &RunSummary) -> f64 {
    use std::collections::HashMap;
    let mut by_q: HashMap<(&str, String), usize> = HashMap::new();
    let mut n = 0usize;
    for i in s.items.iter().filter(|i| i.correct.is_some()) {
        *by_q.entry((i.question.as_str(), i.gold.trim().to_lowercase())).or_default() += 1;
        n += 1;
    }
    let mut best: HashMap<&str, usize> = HashMap::new();
    for ((q, _), c) in &by_q {
        let b = best.entry(q).or_default();
        *b = (*b).max(*c);
    }
    if n == 0 {
        return f64::NAN;
    }
    best.values().sum::<usize>() as f64 / n as f64
}

impl Report<'_> {
    /// A run against SFT, item by item.
    fn compare(&self, s: &RunSummary) -> anyhow::Result<Comparison> {
        Ok(compare_runs(s, self.sft, &BootstrapConfig::default(), Protocol::Medpo)?)
    }

    /// The two "vs SFT" cells of a row.
    fn significance(c: &Comparison) -> String {
        let closed = c
            .closed_mcnemar
            .as_ref()
            .map(|m| format!("{} / {} (p = {:.3})", m.a_only, m.b_only, m.p_exact))
            .unwrap_or_else(|| "–".into());
        let open = c
            .open_recall
            .as_ref()
            .map(|p| format!("{:+.1} (p = {:.3})", 100.0 * p.mean_diff, p.p_value))
            .unwrap_or_else(|| "–".into());
        format!("{closed} | {open}")
    }

    fn row(&self, label: &str, id: &str, s: &RunSummary, sig: &str) -> String {
        let (mis, of) = misreadings(s);
        let mut cells = vec![
            label.to_string(),
            format!("`{id}`"),
            pct(s, "closed/accuracy"),
            pct(s, "open/recall"),
        ];
        cells.extend(CATEGORIES.iter().map(|c| short(s, &format!("category/{c}/score"))));
        cells.push(format!("{mis}/{of}"));
        cells.push(sig.to_string());
        format!("| {} |", cells.join(" | "))
    }

    pub fn markdown(&self) -> anyhow::Result<String> {
        let p = self.plan;
        let d = &p.dims;
        let mut o = String::new();
        o.push_str("# The phantom benchmark: SFT and nine preference objectives, trained here\n\n");
        if self.quick {
            o.push_str("**A `--quick` build (CI): tiny data and a few steps; its numbers mean nothing.**\n\n");
        }
        let reused = if self.reused > 0 {
            format!(" ({} of the 11 training runs reused from an earlier build in the same work folder)", self.reused)
        } else {
            String::new()
        };
        o.push_str(&format!(
            "Written by `medpo zoo build{}` (seed {}) in {:.1} min on this machine{reused}. Every model \
             was trained here, from random weights, by the project's own engines; the data are phantom \
             scans ({}), not patients. **Not for clinical use.**\n\n",
            if self.quick { " --quick" } else { "" },
            self.seed,
            self.minutes,
            self.generator
        ));
        o.push_str(&format!(
            "- **Data**: {} phantom scans (70/15/15 train/val/test, no scan shared), test split: {} \
             questions ({} closed, {} open).\n",
            p.scans, self.sft.counts.items, self.sft.counts.closed, self.sft.counts.open
        ));
        o.push_str(&format!(
            "- **Model** (LLaVA-Med v1.5's family, `llava_mistral` layout): CLIP-style ViT ({}×{} input, \
             patch {}, {} image tokens, width {}, {} layers of which LLaVA reads the second-to-last), \
             `mlp2x_gelu` projector, Mistral-style decoder (width {}, {} layers, {} heads, {} KV heads, \
             SwiGLU {}), a {}-token BPE trained on the benchmark's texts.\n",
            d.image_size, d.image_size, d.patch_size, d.image_tokens(), d.vision_hidden, d.vision_layers,
            d.hidden, d.layers, d.heads, d.kv_heads, d.intermediate, p.vocab
        ));
        o.push_str(&format!(
            "- **SFT**: every weight, the vision tower included, `loss_type = \"sft\"`, {} steps of {} \
             (questions and reports of the train split), AdamW, lr {}, cosine.\n",
            p.sft_steps, p.sft_batch, p.sft_lr
        ));
        let c = self.pairs;
        o.push_str(&format!(
            "- **Preference data** ({} pairs): {} of the SFT model's own wrong answers on {} train questions \
             ({} found) and {} phantom edits (laterality swap, wrong organ, hallucinated or missed finding, \
             flipped answer). Image negatives by the training engine: ROI noise inside the phantom's \
             finding boxes (CoPO, MMedPO; {} records without a box used the central box), crops (mDPO). \
             Targeted: {} visual-misinterpretation pairs (mixed: the SFT model's answer on the most similar \
             train scans as rejected text, that scan as rejected image; {} neighbours where it answered \
             right were skipped).\n",
            c.pairs, c.mistakes_used, p.mistake_items, c.mistakes_found, c.edits, c.roi_fallbacks, c.targeted,
            c.targeted_same_answer
        ));
        o.push_str(&format!(
            "- **Variants**: LoRA r 8 (α 16, every decoder projection) from the SFT model, the same budget for \
             each: {} steps of {}, lr {}, β 0.1, merged for serving.\n",
            p.variant_steps, p.variant_batch, p.variant_lr
        ));
        o.push_str(
            "- **Scoring**: the evaluation engine's `medpo` protocol; 95% bootstrap intervals; against SFT, \
             McNemar on closed items (items fixed / broken, exact p) and a paired bootstrap on open recall.\n\n",
        );
        let mut head = vec!["Model", "Folder", "Closed acc. % [95% CI]", "Open recall % [95% CI]"];
        head.extend(CATEGORIES.iter().copied());
        head.push("Misread findings (closed)");
        head.push("vs SFT: closed fixed / broken (McNemar)");
        head.push("vs SFT: open recall Δ (paired bootstrap)");
        o.push_str(&format!("| {} |\n", head.join(" | ")));
        o.push_str(&format!("|{}\n", "---|".repeat(head.len())));
        o.push_str(&self.row("SFT", "phantom-sft", self.sft, "– | –"));
        o.push('\n');
        let comparisons = self.variants.iter().map(|(_, _, s)| self.compare(s)).collect::<anyhow::Result<Vec<_>>>()?;
        for ((label, id, s), c) in self.variants.iter().zip(&comparisons) {
            o.push_str(&self.row(label, id, s, &Self::significance(c)));
            o.push('\n');
        }
        let blank_sig = Self::significance(&self.compare(self.blank)?);
        o.push_str(&self.row("SFT, images blanked (control)", "phantom-sft", self.blank, &blank_sig));
        o.push_str("\n\n");
        o.push_str(&format!(
            "Answering each closed question with its most frequent answer in the test set (no image) \
             scores {:.1}%: the floor a model that does not look reaches at best.\n\n",
            100.0 * prior_baseline(self.sft)
        ));
        o.push_str(&self.reading(&comparisons));
        Ok(o)
    }

    /// The honest reading, computed from the numbers (`comparisons`: each variant against SFT).
    fn reading(&self, comparisons: &[Comparison]) -> String {
        let acc = |s: &RunSummary| s.metric("closed/accuracy").map(|m| m.value).unwrap_or(f64::NAN);
        let mut o = String::from("## Reading\n\n");
        let (sft, blank) = (acc(self.sft), acc(self.blank));
        o.push_str(&format!(
            "- The SFT model answers {:.1}% of closed questions right; with the image blanked it falls to \
             {:.1}% (the prior-only floor is {:.1}%): it reads the image.\n",
            100.0 * sft,
            100.0 * blank,
            100.0 * prior_baseline(self.sft)
        ));
        let mut better = Vec::new();
        let mut worse = Vec::new();
        let mut same = Vec::new();
        for ((label, _, s), c) in self.variants.iter().zip(comparisons) {
            let sig_closed = c.closed_mcnemar.as_ref().is_some_and(|m| m.p_exact < 0.05);
            let sig_open = c.open_recall.as_ref().is_some_and(|p| p.p_value < 0.05);
            let d = acc(s) - sft;
            let od = c.open_recall.as_ref().map_or(0.0, |p| p.mean_diff);
            if (sig_closed && d > 0.0) || (sig_open && od > 0.0) {
                better.push(label.as_str());
            } else if (sig_closed && d < 0.0) || (sig_open && od < 0.0) {
                worse.push(label.as_str());
            } else {
                same.push(label.as_str());
            }
        }
        let list = |v: &[&str]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        o.push_str(&format!("- Significantly better than SFT (p < 0.05, closed or open): {}.\n", list(&better)));
        o.push_str(&format!("- Significantly worse: {}.\n", list(&worse)));
        o.push_str(&format!("- No significant difference: {}.\n", list(&same)));
        let (m0, n0) = misreadings(self.sft);
        if let Some((_, _, t)) = self.variants.iter().find(|(_, id, _)| id.ends_with("targeted")) {
            let (m1, _) = misreadings(t);
            o.push_str(&format!(
                "- Misread findings (wrong closed answers about presence, side or size): SFT {m0} of {n0}, \
                 after the targeted construction {m1}.\n"
            ));
        }
        let c = self.pairs;
        o.push_str(&format!(
            "- The preference data mostly restate what SFT already knows: it answered {:.1}% of {} train \
             questions right, so only {} of the {} pairs are its own mistakes and the rest are phantom edits \
             of answers it mostly gets right: there is little for a preference objective to fix and much it \
             can unsettle.\n",
            100.0 * (1.0 - c.mistakes_found as f64 / self.plan.mistake_items.max(1) as f64),
            self.plan.mistake_items,
            c.mistakes_used,
            c.pairs
        ));
        o.push_str(&format!(
            "- CoPO and MMedPO learn from ROI-noise negatives: {} of the {} records have no finding box \
             (questions on modality, organ or a normal scan), so their negative is the central box noised, \
             which usually still shows the answer; the image term then pushes down a right answer on an image \
             that supports it (mDPO's crops keep at most a fifth of the scan, so they more often hide it).\n",
            c.roi_fallbacks, c.pairs
        ));
        o.push_str(
            "- These are small models on synthetic scans with one seed: the table shows what each objective \
             does to one SFT model under one budget, not which objective is best for LLaVA-Med-7B.\n",
        );
        o
    }

    /// A model card.
    pub fn card(&self, name: &str, how: &str, s: &RunSummary) -> String {
        format!(
            "# {name}\n\n\
             A small vision-language model of LLaVA-Med v1.5's family (CLIP-style vision tower, `mlp2x_gelu` \
             projector, Mistral-style decoder; `llava_mistral` layout), **trained on phantom scans** \
             ({gen}): synthetic grey-scale images of simplified anatomy with known findings. \
             **Not for clinical use**: it has never seen a patient's image and knows nothing but the phantoms' \
             vocabulary.\n\n\
             - How: {how}; `medpo zoo build` (seed {seed}) regenerates it.\n\
             - Phantom test split: closed accuracy {closed}%, open recall {open}% (95% bootstrap intervals; \
             table in docs/phantom-benchmark.md).\n\
             - Vision tower: `../phantom-clip` (trained with the SFT model, shared by every variant).\n",
            gen = self.generator,
            seed = self.seed,
            closed = pct(s, "closed/accuracy"),
            open = pct(s, "open/recall"),
        )
    }
}
