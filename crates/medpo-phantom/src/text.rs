//! The texts of a case: VQA items, the report, and preference pairs whose rejected side is a
//! clinically meaningful edit of the truth.

use serde::{Deserialize, Serialize};

use crate::{BodyRegion, Case, Finding, FindingKind, Modality, Organ, Rng, Side};

/// One VQA item (written in the LLaVA-Med format).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqaItem {
    /// `<case id>-q<k>`.
    pub question_id: String,
    pub image: String,
    pub question: String,
    pub answer: String,
    /// Closed (yes/no) or open.
    pub closed: bool,
    /// The category the question is written for (checked against the evaluation engine's
    /// classifier by the tests).
    pub category: String,
}

/// A preference pair on a case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub id: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub image: String,
    /// The edit that made the rejected side: `laterality_swap`, `wrong_organ`,
    /// `hallucinated_finding`, `missed_finding` or `flipped_answer`.
    pub edit: String,
    /// The region the edit is about (the finding's box), when there is one.
    pub roi: Option<[u32; 4]>,
}

/// The question a report answers (in the report pairs and the SFT conversations).
pub const REPORT_PROMPT: &str = "Describe the findings of this image.";

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn lesions(case: &Case) -> Vec<&Finding> {
    case.findings.iter().filter(|f| matches!(f.kind, FindingKind::Nodule | FindingKind::Mass)).collect()
}

/// Where a finding is, in words: `left lung`, `liver`, `right kidney`, `left hemisphere of the brain`.
pub fn place(f: &Finding) -> String {
    match (f.organ, f.side) {
        (Organ::Brain, Some(s)) => format!("{} hemisphere of the brain", s.word()),
        (o, Some(s)) => format!("{} {}", s.word(), o.word()),
        (o, None) => o.word().to_string(),
    }
}

/// One sentence per finding.
pub fn finding_sentence(f: &Finding) -> String {
    match f.kind {
        FindingKind::Nodule => format!("A small nodule in the {}.", place(f)),
        FindingKind::Mass => format!("A large mass in the {}.", place(f)),
        FindingKind::Effusion => format!("A {} pleural effusion.", f.side.map_or("", |s| s.word())),
        FindingKind::Enlargement => format!("The {} is enlarged.", f.organ.word()),
    }
}

/// The report's finding sentences: findings of one kind in one place make one sentence
/// ("Two small nodules in the right lung."), in the order they first appear.
pub fn finding_groups(case: &Case) -> Vec<(String, Vec<&Finding>)> {
    let mut groups: Vec<((FindingKind, String), Vec<&Finding>)> = Vec::new();
    for f in &case.findings {
        let key = (f.kind, place(f));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(f),
            None => groups.push((key, vec![f])),
        }
    }
    groups
        .into_iter()
        .map(|((kind, place), fs)| {
            let n = fs.len();
            let sentence = match (kind, n) {
                (_, 1) => finding_sentence(fs[0]),
                (FindingKind::Nodule, _) => format!("{} small nodules in the {place}.", number_word(n)),
                _ => format!("{} large masses in the {place}.", number_word(n)),
            };
            (sentence, fs)
        })
        .collect()
}

fn number_word(n: usize) -> &'static str {
    match n {
        2 => "Two",
        3 => "Three",
        _ => "Several",
    }
}

/// The report: the study, the findings, then the pertinent negatives.
pub fn report(case: &Case) -> String {
    let mut s = vec![format!("{}{}.", case.modality.title(), if case.modality == Modality::Ct { format!(" of the {}", case.region.answer()) } else { String::new() })];
    for (sentence, _) in finding_groups(case) {
        s.push(sentence);
    }
    let chest = case.region == BodyRegion::Chest;
    if chest && case.of_kind(FindingKind::Effusion).next().is_none() {
        s.push("No pleural effusion.".into());
    }
    if chest && !case.findings.iter().any(|f| f.kind == FindingKind::Enlargement) {
        s.push("Heart size is normal.".into());
    }
    if case.is_normal() {
        s.push("No abnormality.".into());
    }
    s.join(" ")
}

/// The VQA items of a case, across the categories.
pub fn vqa_items(case: &Case) -> Vec<VqaItem> {
    let mut r = Rng::new(case.seed ^ 0x51A7_E5ED);
    let mut out: Vec<(String, String, bool, &str)> = Vec::new();
    // Modality.
    out.push(("What imaging modality was used?".into(), case.modality.answer().into(), false, "modality"));
    let asked = if r.chance(0.5) { case.modality } else { [Modality::Xray, Modality::Ct, Modality::Mri][r.below(3) as usize] };
    let q = match asked {
        Modality::Xray => "Is this an x-ray?",
        Modality::Ct => "Is this a CT scan?",
        Modality::Mri => "Is this an MRI?",
    };
    out.push((q.into(), yes_no(asked == case.modality), true, "modality"));
    // Organ.
    out.push(("Which body part is shown in this image?".into(), case.region.answer().into(), false, "organ"));
    // Presence.
    out.push(("Is this image normal?".into(), yes_no(case.is_normal()), true, "abnormality"));
    let kinds: &[FindingKind] = match case.region {
        BodyRegion::Chest => &[FindingKind::Nodule, FindingKind::Mass, FindingKind::Effusion],
        _ => &[FindingKind::Nodule, FindingKind::Mass],
    };
    let present: Vec<FindingKind> = kinds.iter().copied().filter(|k| case.of_kind(*k).next().is_some()).collect();
    let kind = if !present.is_empty() && r.chance(0.5) { present[r.below(present.len() as u64) as usize] } else { kinds[r.below(kinds.len() as u64) as usize] };
    out.push((format!("Is there a {}?", kind.word()), yes_no(present.contains(&kind)), true, "abnormality"));
    // Count.
    let ls = lesions(case);
    out.push(("How many lesions are there?".into(), ls.len().to_string(), false, "count"));
    // Position: the side of a lateralised finding, open and closed.
    let sided: Vec<&Finding> = case.findings.iter().filter(|f| f.side.is_some()).collect();
    if let Some(f) = sided.first() {
        let side = f.side.unwrap_or(Side::Left);
        out.push((format!("Which side is the {} on?", f.kind.word()), side.word().into(), false, "position"));
        let asked = if r.chance(0.5) { side } else { side.other() };
        let organ = if f.organ == Organ::Brain { "hemisphere".to_string() } else { f.organ.word().to_string() };
        out.push((format!("Is the {} located in the {} {organ}?", f.kind.word(), asked.word()), yes_no(asked == side), true, "position"));
    }
    // Size.
    if let Some(f) = ls.iter().max_by(|a, b| a.radius.total_cmp(&b.radius)) {
        out.push(("Is the largest lesion small or large?".into(), f.size_word().into(), false, "size"));
    }
    let enlargeable = match case.region {
        BodyRegion::Chest => Some(Organ::Heart),
        BodyRegion::Abdomen => Some(Organ::Liver),
        BodyRegion::Head => None,
    };
    if let Some(o) = enlargeable {
        let big = case.findings.iter().any(|f| f.kind == FindingKind::Enlargement && f.organ == o);
        out.push((format!("Is the {} enlarged?", o.word()), yes_no(big), true, "size"));
    }
    out.into_iter()
        .enumerate()
        .map(|(k, (question, answer, closed, category))| VqaItem {
            question_id: format!("{}-q{k}", case.id),
            image: case.image_name(),
            question,
            answer,
            closed,
            category: category.into(),
        })
        .collect()
}

/// Replaces the first occurrence of `from` in `text` by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> Option<String> {
    text.find(from).map(|i| format!("{}{to}{}", &text[..i], &text[i + from.len()..]))
}

/// A finding that is not in the case, for a hallucination (`None` when every candidate is
/// already there).
fn invented(case: &Case, r: &mut Rng) -> Option<String> {
    let first = if r.chance(0.5) { Side::Left } else { Side::Right };
    let kinds: &[(FindingKind, Organ)] = match case.region {
        BodyRegion::Chest => &[(FindingKind::Effusion, Organ::Lung), (FindingKind::Mass, Organ::Lung)],
        BodyRegion::Abdomen => &[(FindingKind::Nodule, Organ::Kidney)],
        BodyRegion::Head => &[(FindingKind::Mass, Organ::Brain)],
    };
    for side in [first, first.other()] {
        for &(kind, organ) in kinds {
            // Nothing of that kind may already be in that place.
            if !case.findings.iter().any(|f| f.kind == kind && f.organ == organ && f.side == Some(side)) {
                let fake = Finding { kind, organ, side: Some(side), x: 0.0, y: 0.0, radius: 0.0, roi: [0; 4] };
                return Some(finding_sentence(&fake));
            }
        }
    }
    None
}

/// Preference pairs of a case: the report against each applicable edit, and every VQA item
/// against a wrong answer (yes/no flipped, the other side, the other size, another count).
pub fn pairs(case: &Case) -> Vec<PairRecord> {
    let mut r = Rng::new(case.seed ^ 0xED17);
    let image = case.image_name();
    let truth = report(case);
    let mut out = Vec::new();
    let mut push = |edit: &str, prompt: String, chosen: String, rejected: String, roi: Option<[u32; 4]>| {
        if chosen != rejected {
            out.push(PairRecord { id: format!("{}-{edit}-{}", case.id, out.len()), prompt, chosen, rejected, image: image.clone(), edit: edit.into(), roi });
        }
    };
    let describe = REPORT_PROMPT.to_string();
    let groups = finding_groups(case);
    if let Some((sentence, fs)) = groups.iter().find(|(_, fs)| fs[0].side.is_some()) {
        let side = fs[0].side.unwrap_or(Side::Left);
        let swapped = sentence.replace(side.word(), side.other().word());
        if let Some(rej) = replace_once(&truth, sentence, &swapped) {
            push("laterality_swap", describe.clone(), truth.clone(), rej, Some(fs[0].roi));
        }
    }
    if let Some((sentence, fs)) = groups.iter().find(|(_, fs)| matches!(fs[0].kind, FindingKind::Nodule | FindingKind::Mass)) {
        let f = fs[0];
        let wrong = match f.organ {
            Organ::Lung => "liver".to_string(),
            Organ::Liver => "spleen".to_string(),
            Organ::Kidney => "liver".to_string(),
            _ => f.side.map_or("cerebellum".to_string(), |s| format!("{} cerebellar hemisphere", s.word())),
        };
        let edited = sentence.replace(&place(f), &wrong);
        if let Some(rej) = replace_once(&truth, sentence, &edited) {
            push("wrong_organ", describe.clone(), truth.clone(), rej, Some(f.roi));
        }
    }
    if let Some((sentence, fs)) = groups.first() {
        let mut rej = replace_once(&truth, &format!(" {sentence}"), "").unwrap_or_else(|| truth.clone());
        if groups.len() == 1 {
            rej.push_str(" No abnormality.");
        }
        push("missed_finding", describe.clone(), truth.clone(), rej, Some(fs[0].roi));
    }
    if let Some(fake) = invented(case, &mut r) {
        let hallucinated = match replace_once(&truth, " No abnormality.", &format!(" {fake}")) {
            Some(t) => t,
            None => format!("{truth} {fake}"),
        };
        push("hallucinated_finding", describe, truth.clone(), hallucinated, None);
    }
    for it in vqa_items(case) {
        let wrong = match it.answer.as_str() {
            "yes" => "no".to_string(),
            "no" => "yes".to_string(),
            "left" => "right".to_string(),
            "right" => "left".to_string(),
            "small" => "large".to_string(),
            "large" => "small".to_string(),
            a if a.parse::<u32>().is_ok() => (a.parse::<u32>().unwrap_or(0) + 1).to_string(),
            _ => {
                let others: Vec<&str> = match it.category.as_str() {
                    "modality" => vec!["x-ray", "ct", "mri"],
                    _ => vec!["chest", "abdomen", "head"],
                };
                let o: Vec<&str> = others.into_iter().filter(|o| *o != it.answer).collect();
                o[r.below(o.len() as u64) as usize].to_string()
            }
        };
        let roi = case.findings.first().map(|f| f.roi);
        push("flipped_answer", it.question.clone(), it.answer.clone(), wrong, roi);
    }
    out
}
