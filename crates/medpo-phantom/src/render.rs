//! Anatomy layouts, finding placement and drawing.
//!
//! Each (modality, region) has a layout of organ ellipses, scaled by the case's body size.
//! Findings are placed inside their organ's ellipse and drawn with the modality's contrast:
//! lesions are bright on the X-ray and the CT chest, darker than the liver or kidney on the CT
//! abdomen and bright (T2-hyperintense) on the MRI.

use image::GrayImage;

use crate::{BodyRegion, Case, Finding, FindingKind, Modality, Organ, Rng, Side, SIZE};

/// An axis-aligned ellipse.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ellipse {
    pub cx: f32,
    pub cy: f32,
    pub rx: f32,
    pub ry: f32,
}

impl Ellipse {
    fn new(cx: f32, cy: f32, rx: f32, ry: f32) -> Self {
        Ellipse { cx, cy, rx, ry }
    }
    /// Normalised distance: < 1 inside.
    fn norm(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = ((x - self.cx) / self.rx, (y - self.cy) / self.ry);
        (dx * dx + dy * dy).sqrt()
    }
    /// The pixels its soft edge can touch: (x0, x1, y0, y1), inclusive, inside the image.
    fn pixel_bounds(&self) -> (u32, u32, u32, u32) {
        let lo = |c: f32, r: f32| (c - r - 2.0).floor().max(0.0) as u32;
        let hi = |c: f32, r: f32| (c + r + 2.0).ceil().min(SIZE as f32 - 1.0) as u32;
        (lo(self.cx, self.rx), hi(self.cx, self.rx), lo(self.cy, self.ry), hi(self.cy, self.ry))
    }
    /// Coverage of pixel (x, y) with a soft edge of about `edge` pixels.
    fn coverage(&self, x: f32, y: f32, edge: f32) -> f32 {
        let d = (self.norm(x, y) - 1.0) * self.rx.min(self.ry);
        (0.5 - d / edge.max(0.1)).clamp(0.0, 1.0)
    }
}

/// The organs of one layout (the ones it has).
#[derive(Clone, Debug)]
pub struct Layout {
    pub body: Ellipse,
    /// The lung on the patient's right (image left) and left (image right).
    pub lungs: Option<[Ellipse; 2]>,
    pub heart: Option<Ellipse>,
    pub liver: Option<Ellipse>,
    /// Patient's right, left.
    pub kidneys: Option<[Ellipse; 2]>,
    /// Hemispheres: patient's right, left.
    pub brain: Option<[Ellipse; 2]>,
}

const C: f32 = SIZE as f32 / 2.0;

/// The layout of a modality and region at a body scale (enlarged organs not applied).
pub fn layout(modality: Modality, region: BodyRegion, s: f32) -> Layout {
    let none = Layout { body: Ellipse::new(C, C, 95.0 * s, 100.0 * s), lungs: None, heart: None, liver: None, kidneys: None, brain: None };
    match (modality, region) {
        (Modality::Xray, _) => Layout {
            body: Ellipse::new(C, C + 6.0, 98.0 * s, 104.0 * s),
            lungs: Some([Ellipse::new(C - 42.0 * s, C - 4.0, 31.0 * s, 62.0 * s), Ellipse::new(C + 42.0 * s, C - 4.0, 31.0 * s, 62.0 * s)]),
            heart: Some(Ellipse::new(C + 12.0 * s, C + 30.0 * s, 30.0 * s, 25.0 * s)),
            ..none
        },
        (Modality::Ct, BodyRegion::Chest) => Layout {
            body: Ellipse::new(C, C + 4.0, 100.0 * s, 74.0 * s),
            lungs: Some([Ellipse::new(C - 42.0 * s, C + 2.0, 30.0 * s, 46.0 * s), Ellipse::new(C + 42.0 * s, C + 2.0, 30.0 * s, 46.0 * s)]),
            heart: Some(Ellipse::new(C + 8.0 * s, C - 16.0 * s, 24.0 * s, 20.0 * s)),
            ..none
        },
        (Modality::Ct, _) => Layout {
            body: Ellipse::new(C, C + 4.0, 100.0 * s, 78.0 * s),
            liver: Some(Ellipse::new(C - 36.0 * s, C - 12.0 * s, 44.0 * s, 36.0 * s)),
            kidneys: Some([Ellipse::new(C - 44.0 * s, C + 36.0 * s, 13.0 * s, 19.0 * s), Ellipse::new(C + 44.0 * s, C + 36.0 * s, 13.0 * s, 19.0 * s)]),
            ..none
        },
        (Modality::Mri, _) => Layout {
            body: Ellipse::new(C, C, 88.0 * s, 102.0 * s),
            brain: Some([Ellipse::new(C - 38.0 * s, C, 38.0 * s, 86.0 * s), Ellipse::new(C + 38.0 * s, C, 38.0 * s, 86.0 * s)]),
            ..none
        },
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Right => 0,
        Side::Left => 1,
    }
}

fn roi(x: f32, y: f32, rx: f32, ry: f32) -> [u32; 4] {
    let clamp = |v: f32| v.round().clamp(0.0, SIZE as f32 - 1.0) as u32;
    [clamp(x - rx - 2.0), clamp(y - ry - 2.0), clamp(x + rx + 2.0) + 1, clamp(y + ry + 2.0) + 1]
}

/// A lesion (nodule or mass) placed inside `organ`, away from `existing` findings.
fn lesion(kind: FindingKind, organ: Organ, side: Option<Side>, e: Ellipse, existing: &[Finding], r: &mut Rng) -> Option<Finding> {
    let radius = match kind {
        FindingKind::Nodule => r.range(5.0, 8.0),
        _ => r.range(12.0, 17.0),
    };
    for _ in 0..20 {
        let (a, d) = (r.range(0.0, std::f32::consts::TAU), r.range(0.0, 0.55));
        let (x, y) = (e.cx + d * e.rx * a.cos(), e.cy + d * e.ry * a.sin());
        // The whole lesion inside the organ, and apart from other findings.
        if e.norm(x, y) + radius / e.rx.min(e.ry) > 0.95 {
            continue;
        }
        if existing.iter().any(|f| ((f.x - x).powi(2) + (f.y - y).powi(2)).sqrt() < f.radius + radius + 6.0) {
            continue;
        }
        return Some(Finding { kind, organ, side, x, y, radius, roi: roi(x, y, radius, radius) });
    }
    None
}

/// Draws one finding that fits the layout and is not already there.
pub fn sample_finding(modality: Modality, region: BodyRegion, s: f32, existing: &[Finding], r: &mut Rng) -> Option<Finding> {
    let l = layout(modality, region, s);
    let has = |k: FindingKind| existing.iter().any(|f| f.kind == k);
    let side = if r.chance(0.5) { Side::Left } else { Side::Right };
    match (modality, region) {
        (Modality::Xray, _) | (Modality::Ct, BodyRegion::Chest) => {
            let lungs = l.lungs?;
            match r.below(5) {
                0 | 1 => lesion(FindingKind::Nodule, Organ::Lung, Some(side), lungs[side_index(side)], existing, r),
                2 => lesion(FindingKind::Mass, Organ::Lung, Some(side), lungs[side_index(side)], existing, r),
                3 if !has(FindingKind::Effusion) => {
                    let e = lungs[side_index(side)];
                    let top = e.cy + 0.35 * e.ry;
                    let (x, y, rx, ry) = (e.cx, (top + e.cy + e.ry) / 2.0, e.rx, (e.cy + e.ry - top) / 2.0);
                    Some(Finding { kind: FindingKind::Effusion, organ: Organ::Lung, side: Some(side), x, y, radius: ry, roi: roi(x, y, rx, ry) })
                }
                _ if !has(FindingKind::Enlargement) => {
                    let h = l.heart?;
                    let rx = h.rx * 1.45;
                    Some(Finding { kind: FindingKind::Enlargement, organ: Organ::Heart, side: None, x: h.cx, y: h.cy, radius: rx, roi: roi(h.cx, h.cy, rx, h.ry * 1.15) })
                }
                _ => None,
            }
        }
        (Modality::Ct, _) => match r.below(4) {
            0 | 1 => {
                let kind = if r.chance(0.5) { FindingKind::Nodule } else { FindingKind::Mass };
                lesion(kind, Organ::Liver, None, l.liver?, existing, r)
            }
            2 => lesion(FindingKind::Nodule, Organ::Kidney, Some(side), l.kidneys?[side_index(side)], existing, r),
            _ if !has(FindingKind::Enlargement) => {
                let v = l.liver?;
                let (rx, ry) = (v.rx * 1.3, v.ry * 1.2);
                Some(Finding { kind: FindingKind::Enlargement, organ: Organ::Liver, side: None, x: v.cx, y: v.cy, radius: rx, roi: roi(v.cx, v.cy, rx, ry) })
            }
            _ => None,
        },
        (Modality::Mri, _) => {
            let kind = if r.chance(0.4) { FindingKind::Nodule } else { FindingKind::Mass };
            lesion(kind, Organ::Brain, Some(side), l.brain?[side_index(side)], existing, r)
        }
    }
}

/// A float canvas with soft-edged ellipse painting.
struct Canvas(Vec<f32>);

impl Canvas {
    fn new(v: f32) -> Self {
        Canvas(vec![v; (SIZE * SIZE) as usize])
    }
    /// Paints `value` into the ellipse (clipped by `clip` when given).
    fn fill(&mut self, e: Ellipse, value: f32, clip: Option<&dyn Fn(f32, f32) -> bool>) {
        let (x0, x1, y0, y1) = e.pixel_bounds();
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                if clip.is_some_and(|c| !c(fx, fy)) {
                    continue;
                }
                let a = e.coverage(fx, fy, 1.6);
                if a > 0.0 {
                    let p = &mut self.0[(y * SIZE + x) as usize];
                    *p = *p * (1.0 - a) + value * a;
                }
            }
        }
    }
    /// Adds `delta` inside the ellipse (lesions keep the texture below them).
    fn add(&mut self, e: Ellipse, delta: f32) {
        let (x0, x1, y0, y1) = e.pixel_bounds();
        for y in y0..=y1 {
            for x in x0..=x1 {
                let a = e.coverage(x as f32 + 0.5, y as f32 + 0.5, 1.6);
                self.0[(y * SIZE + x) as usize] += delta * a;
            }
        }
    }
}

/// Draws a case.
pub fn render(case: &Case) -> GrayImage {
    let s = case.body_scale;
    let mut l = layout(case.modality, case.region, s);
    for f in &case.findings {
        if f.kind == FindingKind::Enlargement {
            match f.organ {
                Organ::Heart => l.heart = l.heart.map(|h| Ellipse { rx: h.rx * 1.45, ry: h.ry * 1.15, ..h }),
                Organ::Liver => l.liver = l.liver.map(|v| Ellipse { rx: v.rx * 1.3, ry: v.ry * 1.2, ..v }),
                _ => {}
            }
        }
    }
    let mut c = Canvas::new(match case.modality {
        Modality::Xray => 18.0,
        _ => 4.0,
    });
    match case.modality {
        Modality::Xray => {
            c.fill(l.body, 150.0, None);
            if let Some(lungs) = l.lungs {
                for e in lungs {
                    c.fill(e, 52.0, None);
                }
            }
            // Spine and the mediastinum between the lungs.
            c.fill(Ellipse::new(C, C + 10.0, 9.0 * s, 100.0 * s), 190.0, None);
            if let Some(h) = l.heart {
                c.fill(h, 172.0, None);
            }
            // The diaphragm under both lungs.
            c.fill(Ellipse::new(C, C + 96.0 * s, 90.0 * s, 26.0 * s), 160.0, None);
        }
        Modality::Ct if case.region == BodyRegion::Chest => {
            c.fill(l.body, 118.0, None);
            if let Some(lungs) = l.lungs {
                for e in lungs {
                    c.fill(e, 14.0, None);
                }
            }
            if let Some(h) = l.heart {
                c.fill(h, 138.0, None);
            }
            c.fill(Ellipse::new(C, C + 52.0 * s, 11.0 * s, 11.0 * s), 235.0, None);
        }
        Modality::Ct => {
            c.fill(l.body, 112.0, None);
            if let Some(v) = l.liver {
                c.fill(v, 150.0, None);
            }
            if let Some(k) = l.kidneys {
                for e in k {
                    c.fill(e, 168.0, None);
                }
            }
            c.fill(Ellipse::new(C, C + 40.0 * s, 11.0 * s, 11.0 * s), 235.0, None);
            c.fill(Ellipse::new(C + 10.0 * s, C + 18.0 * s, 6.0 * s, 6.0 * s), 175.0, None);
        }
        Modality::Mri => {
            c.fill(l.body, 175.0, None); // scalp
            c.fill(Ellipse { rx: l.body.rx - 5.0, ry: l.body.ry - 5.0, ..l.body }, 40.0, None); // skull
            if let Some(b) = l.brain {
                for e in b {
                    c.fill(e, 112.0, None);
                }
                // CSF-filled ventricles, bright on T2.
                for sx in [-1.0f32, 1.0] {
                    c.fill(Ellipse::new(C + sx * 9.0 * s, C - 4.0, 5.0 * s, 22.0 * s), 215.0, None);
                }
            }
            c.fill(Ellipse::new(C, C, 1.5, 86.0 * s), 60.0, None); // falx
        }
    }
    for f in &case.findings {
        match f.kind {
            FindingKind::Nodule | FindingKind::Mass => {
                let e = Ellipse::new(f.x, f.y, f.radius, f.radius * 0.92);
                let delta = match (case.modality, f.organ) {
                    (Modality::Ct, Organ::Liver | Organ::Kidney) => -62.0,
                    (Modality::Mri, _) => 85.0,
                    (Modality::Ct, _) => 120.0,
                    _ => 95.0,
                };
                c.add(e, delta);
            }
            FindingKind::Effusion => {
                let Some(lungs) = l.lungs else { continue };
                let lung = lungs[side_index(f.side.unwrap_or(Side::Right))];
                let top = f.y - f.radius;
                let level = |_: f32, y: f32| y >= top;
                let value = if case.modality == Modality::Xray { 150.0 } else { 105.0 };
                c.fill(lung, value, Some(&level));
            }
            FindingKind::Enlargement => {}
        }
    }
    // Texture: low-frequency shading and fine noise, from the case's own seed.
    let mut r = Rng::new(case.seed);
    let waves: Vec<(f32, f32, f32, f32)> = (0..3).map(|_| (r.range(0.01, 0.05), r.range(0.01, 0.05), r.range(0.0, 6.28), r.range(3.0, 7.0))).collect();
    let mut img = GrayImage::new(SIZE, SIZE);
    for y in 0..SIZE {
        for x in 0..SIZE {
            let v = c.0[(y * SIZE + x) as usize];
            let shade: f32 = waves.iter().map(|(fx, fy, ph, amp)| amp * (fx * x as f32 + fy * y as f32 + ph).sin()).sum();
            let noise = 5.0 * r.normal();
            img.put_pixel(x, y, image::Luma([(v + shade + noise).round().clamp(0.0, 255.0) as u8]));
        }
    }
    img
}
