//! Image negatives for CoPO, mDPO and MMedPO: deterministic by seed, saved as PNG files that the
//! dataset's `rejected_image` then references.
//!
//! - [`NegativeKind::Crop`]: mDPO's hard negative (Wang et al. 2024, arXiv 2406.11839, §3.2): a
//!   random crop keeping at most 20% of the image area (area fraction uniform in
//!   [`CropParams::min_area`, `max_area`], aspect ratio log-uniform in [3/4, 4/3]), resized back
//!   to the original size so the model's preprocessing is unchanged.
//! - [`NegativeKind::RoiNoise`]: CoPO/MMedPO's lesion-region noise (Zhu et al. 2024, arXiv
//!   2412.06141, §3.2): diffusion forward noise at step t, applied **only inside a region of
//!   interest**. The region is the record's `roi` (a rater's box or the dataset's lesion box);
//!   without one, the documented fallback is the central box spanning the middle half of the
//!   width and of the height (25% of the area) — the usual framing of a finding in curated
//!   figures, not a clinical localisation; the CLI reports how many records used it.
//! - [`NegativeKind::Diffusion`]: HA-DPO/POVID-style whole-image forward noise
//!   x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (Ho et al. 2020, arXiv 2006.11239, Eq. 4) on pixels scaled to
//!   [−1, 1], with a linear (DDPM: β from 1e-4 to 0.02) or cosine (Nichol & Dhariwal 2021, arXiv
//!   2102.09672, Eq. 17, s = 0.008, β ≤ 0.999) schedule of T steps; defaults T = 1000, t = 500.
//!
//! Every random draw comes from a ChaCha8 generator seeded by (seed, record key), so a negative
//! depends only on the seed and its record, not on the order records are processed.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::{imageops, ImageFormat, RgbImage};
use serde::{Deserialize, Serialize};

use crate::data::PreferenceRecord;
use crate::error::{Error, Result};
use crate::rng::TrainRng;

/// Which corruption to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeKind {
    Crop,
    RoiNoise,
    Diffusion,
}

const KINDS: &[(NegativeKind, &str)] = &[
    (NegativeKind::Crop, "crop"),
    (NegativeKind::RoiNoise, "roi-noise"),
    (NegativeKind::Diffusion, "diffusion"),
];

impl NegativeKind {
    pub fn name(self) -> &'static str {
        KINDS.iter().find(|(k, _)| *k == self).expect("in table").1
    }
}

impl fmt::Display for NegativeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NegativeKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KINDS
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| Error::Config {
                key: "kind",
                value: s.into(),
                reason: format!(
                    "valid: {}",
                    KINDS.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
                ),
            })
    }
}

/// Noise schedule of the diffusion forward process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    #[default]
    Linear,
    Cosine,
}

impl FromStr for BetaSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(BetaSchedule::Linear),
            "cosine" => Ok(BetaSchedule::Cosine),
            _ => Err(Error::Config {
                key: "schedule",
                value: s.into(),
                reason: "valid: linear, cosine".into(),
            }),
        }
    }
}

/// ᾱ_t = Π_{i ≤ t} (1 − β_i) for t in 1..=T.
pub fn alpha_bar(schedule: BetaSchedule, t: usize, num_steps: usize) -> f64 {
    let tt = num_steps as f64;
    let beta = |i: usize| -> f64 {
        match schedule {
            BetaSchedule::Linear => {
                if num_steps == 1 {
                    1e-4
                } else {
                    1e-4 + (0.02 - 1e-4) * (i - 1) as f64 / (tt - 1.0)
                }
            }
            BetaSchedule::Cosine => {
                let f = |x: f64| {
                    (((x / tt) + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (1.0 - f(i as f64) / f((i - 1) as f64)).min(0.999)
            }
        }
    };
    (1..=t).map(|i| 1.0 - beta(i)).product()
}

/// Crop settings (mDPO).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CropParams {
    pub min_area: f64,
    /// At most this fraction of the image area is kept (mDPO: 0.2).
    pub max_area: f64,
}

impl Default for CropParams {
    fn default() -> Self {
        CropParams {
            min_area: 0.01,
            max_area: 0.2,
        }
    }
}

/// Diffusion forward-noise settings (also used inside the ROI).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffusionParams {
    /// t, 1 ≤ t ≤ num_steps.
    pub step: usize,
    pub num_steps: usize,
    pub schedule: BetaSchedule,
}

impl Default for DiffusionParams {
    fn default() -> Self {
        DiffusionParams {
            step: 500,
            num_steps: 1000,
            schedule: BetaSchedule::Linear,
        }
    }
}

/// Everything that determines a negative.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NegativeSpec {
    pub kind: NegativeKind,
    pub seed: u64,
    pub crop: CropParams,
    pub diffusion: DiffusionParams,
}

impl NegativeSpec {
    pub fn new(kind: NegativeKind, seed: u64) -> Self {
        NegativeSpec {
            kind,
            seed,
            crop: CropParams::default(),
            diffusion: DiffusionParams::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let c = self.crop;
        if !(0.0 < c.min_area && c.min_area <= c.max_area && c.max_area <= 1.0) {
            return Err(Error::Config {
                key: "crop",
                value: format!("{c:?}"),
                reason: "need 0 < min_area ≤ max_area ≤ 1".into(),
            });
        }
        let d = self.diffusion;
        if !(1 <= d.step && d.step <= d.num_steps) {
            return Err(Error::Config {
                key: "step",
                value: d.step.to_string(),
                reason: format!("need 1 ≤ step ≤ num_steps ({})", d.num_steps),
            });
        }
        Ok(())
    }
}

/// A pixel box `[x0, x1) × [y0, y1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl PixelBox {
    pub fn area(&self) -> u64 {
        (self.x1 - self.x0) as u64 * (self.y1 - self.y0) as u64
    }
    /// The documented ROI fallback: the middle half of the width and of the height.
    pub fn central(w: u32, h: u32) -> Self {
        PixelBox {
            x0: w / 4,
            y0: h / 4,
            x1: (w - w / 4).max(w / 4 + 1),
            y1: (h - h / 4).max(h / 4 + 1),
        }
    }
    fn clamp_to(self, w: u32, h: u32) -> Option<Self> {
        let b = PixelBox {
            x0: self.x0.min(w),
            y0: self.y0.min(h),
            x1: self.x1.min(w),
            y1: self.y1.min(h),
        };
        (b.x0 < b.x1 && b.y0 < b.y1).then_some(b)
    }
}

/// What was done to one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Applied {
    Crop {
        region: PixelBox,
        area_fraction: f64,
    },
    RoiNoise {
        region: PixelBox,
        fallback: bool,
        alpha_bar: f64,
    },
    Diffusion {
        alpha_bar: f64,
    },
}

/// Adds forward noise at ᾱ to the pixels of `region` (all of the image when `None`).
fn noise_region(img: &mut RgbImage, region: Option<PixelBox>, ab: f64, rng: &mut TrainRng) {
    let (w, h) = img.dimensions();
    let r = region.unwrap_or(PixelBox {
        x0: 0,
        y0: 0,
        x1: w,
        y1: h,
    });
    let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
    for y in r.y0..r.y1 {
        for x in r.x0..r.x1 {
            let p = img.get_pixel_mut(x, y);
            for c in 0..3 {
                let x0 = p.0[c] as f64 / 127.5 - 1.0;
                let xt = a * x0 + s * rng.normal();
                p.0[c] = ((xt + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Makes one negative of `img`. `key` (the record id) and the spec's seed fix every draw; `roi`
/// is used by `RoiNoise` only.
pub fn make_negative(
    img: &RgbImage,
    spec: &NegativeSpec,
    roi: Option<[u32; 4]>,
    key: &str,
) -> Result<(RgbImage, Applied)> {
    spec.validate()?;
    let mut rng = TrainRng::for_item(spec.seed, &format!("{}:{key}", spec.kind));
    let (w, h) = img.dimensions();
    match spec.kind {
        NegativeKind::Crop => {
            let total = w as f64 * h as f64;
            // Draw (area, aspect) until the box fits; fall back to a centred box of max_area.
            let mut region = None;
            for _ in 0..20 {
                let area = rng.range(spec.crop.min_area, spec.crop.max_area) * total;
                let ratio = rng.range((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln()).exp();
                let cw = (area * ratio).sqrt().floor() as u32;
                let ch = (area / ratio).sqrt().floor() as u32;
                if cw >= 1 && ch >= 1 && cw <= w && ch <= h {
                    let x0 = rng.below((w - cw + 1) as usize) as u32;
                    let y0 = rng.below((h - ch + 1) as usize) as u32;
                    region = Some(PixelBox {
                        x0,
                        y0,
                        x1: x0 + cw,
                        y1: y0 + ch,
                    });
                    break;
                }
            }
            let region = region.unwrap_or_else(|| {
                let f = spec.crop.max_area.sqrt();
                let (cw, ch) = (
                    ((w as f64 * f) as u32).max(1),
                    ((h as f64 * f) as u32).max(1),
                );
                PixelBox {
                    x0: (w - cw) / 2,
                    y0: (h - ch) / 2,
                    x1: (w - cw) / 2 + cw,
                    y1: (h - ch) / 2 + ch,
                }
            });
            let sub = imageops::crop_imm(
                img,
                region.x0,
                region.y0,
                region.x1 - region.x0,
                region.y1 - region.y0,
            )
            .to_image();
            let out = imageops::resize(&sub, w, h, imageops::FilterType::Triangle);
            Ok((
                out,
                Applied::Crop {
                    region,
                    area_fraction: region.area() as f64 / (w as f64 * h as f64),
                },
            ))
        }
        NegativeKind::RoiNoise => {
            let given = roi.and_then(|[x0, y0, x1, y1]| PixelBox { x0, y0, x1, y1 }.clamp_to(w, h));
            let fallback = given.is_none();
            let region = given.unwrap_or_else(|| PixelBox::central(w, h));
            let d = spec.diffusion;
            let ab = alpha_bar(d.schedule, d.step, d.num_steps);
            let mut out = img.clone();
            noise_region(&mut out, Some(region), ab, &mut rng);
            Ok((
                out,
                Applied::RoiNoise {
                    region,
                    fallback,
                    alpha_bar: ab,
                },
            ))
        }
        NegativeKind::Diffusion => {
            let d = spec.diffusion;
            let ab = alpha_bar(d.schedule, d.step, d.num_steps);
            let mut out = img.clone();
            noise_region(&mut out, None, ab, &mut rng);
            Ok((out, Applied::Diffusion { alpha_bar: ab }))
        }
    }
}

fn safe_stem(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Summary of [`build_negatives`].
#[derive(Clone, Debug, Default)]
pub struct BuildReport {
    pub written: Vec<PathBuf>,
    /// Records whose ROI noise used the central-box fallback.
    pub roi_fallbacks: usize,
}

/// Writes one negative per record with an image to `out_dir/<kind>/<id>.png` and points the
/// record's `rejected_image` at it (relative to `images_dir` when `out_dir` is inside it,
/// otherwise absolute, so the dataset resolves from any working directory). Errors name the
/// record.
pub fn build_negatives(
    records: &mut [PreferenceRecord],
    images_dir: &Path,
    out_dir: &Path,
    spec: &NegativeSpec,
) -> Result<BuildReport> {
    spec.validate()?;
    let dir = out_dir.join(spec.kind.name());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut rep = BuildReport::default();
    let mut used = HashSet::new();
    for (i, r) in records.iter_mut().enumerate() {
        let Some(rel) = r.image.clone() else { continue };
        let src = images_dir.join(&rel);
        let record_err = |m: String| Error::Record {
            file: r.source.file.clone(),
            record: r.source.index.to_string(),
            message: m,
        };
        let img = image::open(&src)
            .map_err(|e| record_err(format!("image `{}`: {e}", src.display())))?
            .to_rgb8();
        let key = r.id.clone().unwrap_or_else(|| rel.clone());
        let (neg, applied) = make_negative(&img, spec, r.roi, &key)?;
        if let Applied::RoiNoise { fallback: true, .. } = applied {
            rep.roi_fallbacks += 1;
        }
        let mut name = safe_stem(&key);
        if !used.insert(name.clone()) {
            name = format!("{name}_{i}");
            used.insert(name.clone());
        }
        let out = dir.join(format!("{name}.png"));
        neg.save_with_format(&out, ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: out.clone(),
                source: e,
            })?;
        r.rejected_image = Some(match out.strip_prefix(images_dir) {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => std::fs::canonicalize(&out)
                .map_err(|e| Error::io(&out, e))?
                .to_string_lossy()
                .into_owned(),
        });
        rep.written.push(out);
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Source;
    use crate::testutil::shared_dir;

    fn image(name: &str) -> RgbImage {
        image::open(shared_dir().join("data/images").join(name))
            .unwrap()
            .to_rgb8()
    }

    #[test]
    fn crop_keeps_at_most_20_percent_and_is_seeded() {
        let img = image("bio_patch.png");
        for seed in 0..8 {
            let spec = NegativeSpec::new(NegativeKind::Crop, seed);
            let (a, applied) = make_negative(&img, &spec, None, "x").unwrap();
            let Applied::Crop {
                area_fraction,
                region,
            } = applied
            else {
                panic!()
            };
            assert!(
                area_fraction <= 0.2 + 1e-9 && area_fraction > 0.0,
                "{area_fraction}"
            );
            assert!(region.x1 <= img.width() && region.y1 <= img.height());
            assert_eq!(a.dimensions(), img.dimensions());
            let (b, _) = make_negative(&img, &spec, None, "x").unwrap();
            assert_eq!(a, b, "same seed, same image");
        }
        let s = NegativeSpec::new(NegativeKind::Crop, 1);
        assert_ne!(
            make_negative(&img, &s, None, "x").unwrap().0,
            make_negative(&img, &NegativeSpec::new(NegativeKind::Crop, 2), None, "x")
                .unwrap()
                .0
        );
    }

    #[test]
    fn roi_noise_stays_inside_the_region() {
        let img = image("bio_patch.png");
        let spec = NegativeSpec::new(NegativeKind::RoiNoise, 3);
        let roi = [40, 30, 120, 90];
        let (out, applied) = make_negative(&img, &spec, Some(roi), "r").unwrap();
        assert!(matches!(
            applied,
            Applied::RoiNoise {
                fallback: false,
                ..
            }
        ));
        let mut changed = 0;
        for (x, y, p) in out.enumerate_pixels() {
            let inside = (40..120).contains(&x) && (30..90).contains(&y);
            if !inside {
                assert_eq!(
                    p,
                    img.get_pixel(x, y),
                    "pixel ({x}, {y}) outside the ROI changed"
                );
            } else if p != img.get_pixel(x, y) {
                changed += 1;
            }
        }
        assert!(changed > 80 * 60 / 2, "only {changed} ROI pixels changed");
        // No ROI: the documented central-box fallback.
        let (out, applied) = make_negative(&img, &spec, None, "r").unwrap();
        let Applied::RoiNoise {
            region,
            fallback: true,
            ..
        } = applied
        else {
            panic!("{applied:?}")
        };
        assert_eq!(region, PixelBox::central(img.width(), img.height()));
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(0, 0));
        assert_eq!(make_negative(&img, &spec, None, "r").unwrap().0, out);
    }

    #[test]
    fn diffusion_schedules_and_noise_level() {
        assert!((alpha_bar(BetaSchedule::Linear, 1, 1000) - (1.0 - 1e-4)).abs() < 1e-15);
        let l = alpha_bar(BetaSchedule::Linear, 1000, 1000);
        assert!(l > 0.0 && l < 1e-4, "{l}");
        assert!(alpha_bar(BetaSchedule::Cosine, 1000, 1000) < 1e-6);
        for s in [BetaSchedule::Linear, BetaSchedule::Cosine] {
            let v: Vec<f64> = (1..=1000)
                .step_by(50)
                .map(|t| alpha_bar(s, t, 1000))
                .collect();
            assert!(v.windows(2).all(|w| w[1] < w[0]), "{s:?} ᾱ decreases");
        }
        // The cosine schedule destroys information more slowly early on.
        assert!(
            alpha_bar(BetaSchedule::Cosine, 250, 1000) > alpha_bar(BetaSchedule::Linear, 250, 1000)
        );
        let img = image("bio_patch.png");
        let mse = |t: usize| {
            let mut spec = NegativeSpec::new(NegativeKind::Diffusion, 9);
            spec.diffusion.step = t;
            let (o, _) = make_negative(&img, &spec, None, "d").unwrap();
            o.as_raw()
                .iter()
                .zip(img.as_raw())
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>()
                / o.as_raw().len() as f64
        };
        let (m10, m300, m900) = (mse(10), mse(300), mse(900));
        assert!(m10 < m300 && m300 < m900, "{m10} {m300} {m900}");
        let mut bad = NegativeSpec::new(NegativeKind::Diffusion, 0);
        bad.diffusion.step = 0;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn build_writes_pngs_the_dataset_references() {
        let dir = tempfile::tempdir().unwrap();
        let images = shared_dir().join("data/images");
        let rec = |id: &str, img: &str| PreferenceRecord {
            id: Some(id.into()),
            prompt: "<image>\nWhat is shown?".into(),
            chosen: "A".into(),
            rejected: "B".into(),
            image: Some(img.into()),
            rejected_image: None,
            weight: None,
            roi: None,
            source: Source {
                file: "mem.json".into(),
                index: 0,
                line: None,
            },
        };
        let mut recs = vec![rec("a/1", "bio_patch.png"), rec("b", "xy_chromosome.jpg")];
        let spec = NegativeSpec::new(NegativeKind::Crop, 11);
        let rep = build_negatives(&mut recs, &images, dir.path(), &spec).unwrap();
        assert_eq!(rep.written.len(), 2);
        for (r, p) in recs.iter().zip(&rep.written) {
            assert_eq!(
                r.rejected_image.as_deref(),
                Some(std::fs::canonicalize(p).unwrap().to_str().unwrap())
            );
            let back = image::open(p).unwrap().to_rgb8();
            assert_eq!(
                back.dimensions(),
                image::open(images.join(r.image.as_ref().unwrap()))
                    .unwrap()
                    .to_rgb8()
                    .dimensions()
            );
        }
        assert!(rep.written[0].ends_with("crop/a_1.png"));
        // Same seed, same bytes.
        let first = std::fs::read(&rep.written[0]).unwrap();
        build_negatives(&mut recs, &images, dir.path(), &spec).unwrap();
        assert_eq!(std::fs::read(&rep.written[0]).unwrap(), first);
        // A missing image names the record.
        let mut bad = vec![rec("c", "nope.png")];
        let e = build_negatives(&mut bad, &images, dir.path(), &spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mem.json") && e.contains("nope.png"), "{e}");
    }
}
