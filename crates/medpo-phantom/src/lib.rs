//! Phantom scans: a deterministic synthetic medical benchmark.
//!
//! Each case is a grey-scale image that looks like a simplified scan of one of three kinds —
//! a chest X-ray-like projection, a CT-like axial slice (chest or abdomen) and an MRI-like head
//! slice with its own contrast — drawn from structured ground truth: the anatomy present and
//! zero or more findings (nodule, mass, pleural effusion, enlargement), each with laterality
//! (the patient's side: the patient's left is on the image's right, as radiologists read),
//! position, size and a region-of-interest box. From the ground truth come VQA items across the
//! evaluation engine's categories (modality, organ, presence, position, size, count; closed
//! yes/no and open), a short report, and preference pairs whose rejected side is a clinically
//! meaningful edit (laterality swap, wrong organ, hallucinated or missed finding).
//!
//! Everything is a function of the seed: [`generate`] with the same [`Config`] gives the same
//! cases, pixels and files, on any machine. Files are written in the formats the real data
//! uses ([`write::write_benchmark`]): LLaVA-Med VQA JSONL, TRL preference JSONL, report JSONL.
//!
//! Phantoms are for exercising and comparing training methods; they are not clinical data.

use serde::{Deserialize, Serialize};

pub mod render;
pub mod rng;
pub mod text;
pub mod write;

pub use rng::Rng;

/// The generator's version, written into every manifest; a change to the drawing, the
/// sampling or the texts changes it.
pub const GENERATOR_VERSION: &str = "medpo-phantom/1";

/// Image side in pixels.
pub const SIZE: u32 = 224;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Xray,
    Ct,
    Mri,
}

impl Modality {
    /// The short answer to "what modality".
    pub fn answer(self) -> &'static str {
        match self {
            Modality::Xray => "x-ray",
            Modality::Ct => "ct",
            Modality::Mri => "mri",
        }
    }
    /// How a report names it.
    pub fn title(self) -> &'static str {
        match self {
            Modality::Xray => "Chest radiograph (PA projection)",
            Modality::Ct => "Axial CT",
            Modality::Mri => "Axial T2-weighted MRI of the head",
        }
    }
}

/// The imaged body region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyRegion {
    Chest,
    Abdomen,
    Head,
}

impl BodyRegion {
    pub fn answer(self) -> &'static str {
        match self {
            BodyRegion::Chest => "chest",
            BodyRegion::Abdomen => "abdomen",
            BodyRegion::Head => "head",
        }
    }
}

/// The patient's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn word(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
    /// +1 for the image's right half (the patient's left), −1 for its left half.
    pub fn image_sign(self) -> f32 {
        match self {
            Side::Left => 1.0,
            Side::Right => -1.0,
        }
    }
}

/// Where a finding sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Organ {
    Lung,
    Heart,
    Liver,
    Kidney,
    Brain,
}

impl Organ {
    pub fn word(self) -> &'static str {
        match self {
            Organ::Lung => "lung",
            Organ::Heart => "heart",
            Organ::Liver => "liver",
            Organ::Kidney => "kidney",
            Organ::Brain => "brain",
        }
    }
    /// Whether the organ is paired (its findings have a side worth asking about).
    pub fn paired(self) -> bool {
        matches!(self, Organ::Lung | Organ::Kidney | Organ::Brain)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A small round opacity (radius ≤ 7 px).
    Nodule,
    /// A large round opacity (radius ≥ 11 px).
    Mass,
    /// Fluid at the base of one lung field.
    Effusion,
    /// An organ larger than normal (the heart, or the liver).
    Enlargement,
}

impl FindingKind {
    pub fn word(self) -> &'static str {
        match self {
            FindingKind::Nodule => "nodule",
            FindingKind::Mass => "mass",
            FindingKind::Effusion => "pleural effusion",
            FindingKind::Enlargement => "enlargement",
        }
    }
}

/// One finding with its ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub organ: Organ,
    /// The patient's side (`None` for the heart and the liver).
    pub side: Option<Side>,
    /// Centre in pixels.
    pub x: f32,
    pub y: f32,
    /// Radius in pixels (for effusion and enlargement: the affected extent's half size).
    pub radius: f32,
    /// Region of interest `[x0, y0, x1, y1]` in pixels, inside the image.
    pub roi: [u32; 4],
}

impl Finding {
    /// `small` or `large` (nodules are small, masses large).
    pub fn size_word(&self) -> &'static str {
        if self.radius <= 8.0 {
            "small"
        } else {
            "large"
        }
    }
}

/// The dataset split of a case; no case (and so no image) is in two splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// One phantom scan and its ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// `phantom-00042`.
    pub id: String,
    pub index: usize,
    pub split: Split,
    pub modality: Modality,
    pub region: BodyRegion,
    /// Per-case seed for the pixels' noise and texture.
    pub seed: u64,
    pub findings: Vec<Finding>,
    /// Anatomy scale jitter (body size), 0.9–1.1.
    pub body_scale: f32,
}

impl Case {
    /// The image file name.
    pub fn image_name(&self) -> String {
        format!("{}.png", self.id)
    }
    pub fn is_normal(&self) -> bool {
        self.findings.is_empty()
    }
    /// Findings of a kind.
    pub fn of_kind(&self, kind: FindingKind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind == kind)
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub seed: u64,
    /// Number of scans.
    pub scans: usize,
    /// Fractions of the scans in the validation and test splits (the rest is train).
    pub val_fraction: f64,
    pub test_fraction: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { seed: 0, scans: 600, val_fraction: 0.15, test_fraction: 0.15 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Image { path: std::path::PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The cases of a configuration, in index order, with their splits.
pub fn generate(cfg: &Config) -> Result<Vec<Case>> {
    if cfg.scans < 3 {
        return Err(Error::Invalid(format!("at least 3 scans are needed (one per split), not {}", cfg.scans)));
    }
    let ok = |f: f64| f.is_finite() && (0.0..1.0).contains(&f);
    if !ok(cfg.val_fraction) || !ok(cfg.test_fraction) || cfg.val_fraction + cfg.test_fraction >= 1.0 {
        return Err(Error::Invalid("val_fraction and test_fraction must be in [0, 1) and sum to less than 1".into()));
    }
    let mut rng = Rng::new(cfg.seed);
    // Splits: a seeded permutation of the indices, so each split mixes every kind of case.
    let mut order: Vec<usize> = (0..cfg.scans).collect();
    rng.shuffle(&mut order);
    let n_test = ((cfg.scans as f64 * cfg.test_fraction).round() as usize).max(1);
    let n_val = ((cfg.scans as f64 * cfg.val_fraction).round() as usize).max(1);
    let mut split = vec![Split::Train; cfg.scans];
    for (pos, &i) in order.iter().enumerate() {
        split[i] = if pos < n_test {
            Split::Test
        } else if pos < n_test + n_val {
            Split::Val
        } else {
            Split::Train
        };
    }
    Ok((0..cfg.scans)
        .map(|i| {
            let mut r = Rng::new(cfg.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)));
            sample_case(i, split[i], &mut r)
        })
        .collect())
}

/// Draws one case: modality and region, then findings that fit them.
fn sample_case(index: usize, split: Split, r: &mut Rng) -> Case {
    let (modality, region) = match r.below(4) {
        0 | 1 => (Modality::Xray, BodyRegion::Chest),
        2 => (Modality::Ct, if r.chance(0.5) { BodyRegion::Chest } else { BodyRegion::Abdomen }),
        _ => (Modality::Mri, BodyRegion::Head),
    };
    let body_scale = 0.9 + 0.2 * r.unit() as f32;
    let mut findings = Vec::new();
    // About a third of the scans are normal.
    if !r.chance(0.33) {
        let n = 1 + r.below(3) as usize; // 1–3 findings drawn; duplicates of a side are dropped
        for _ in 0..n {
            if let Some(f) = render::sample_finding(modality, region, body_scale, &findings, r) {
                findings.push(f);
            }
        }
    }
    Case { id: format!("phantom-{index:05}"), index, split, modality, region, seed: r.next_u64(), findings, body_scale }
}
