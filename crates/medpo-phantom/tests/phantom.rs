//! The phantom benchmark: deterministic by seed, splits disjoint, files readable by the
//! evaluation and training engines, questions in the categories they are written for, findings
//! visible where their boxes say, and every preference edit a real change.

use std::collections::HashSet;

use medpo_phantom::render::render;
use medpo_phantom::text::{pairs, vqa_items};
use medpo_phantom::write::write_benchmark;
use medpo_phantom::{generate, Config, FindingKind, Side, Split, SIZE};

fn cfg(seed: u64) -> Config {
    Config { seed, scans: 60, ..Default::default() }
}

#[test]
fn same_seed_same_files_other_seed_other_files() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ma = write_benchmark(a.path(), &cfg(7), &mut |_, _| {}).unwrap();
    let mb = write_benchmark(b.path(), &cfg(7), &mut |_, _| {}).unwrap();
    let mc = write_benchmark(c.path(), &cfg(8), &mut |_, _| {}).unwrap();
    assert_eq!(ma, mb, "the same seed writes the same bytes");
    assert_ne!(ma.files, mc.files);
    assert_eq!(ma.counts.values().map(|c| c[0]).sum::<usize>(), 60);
    assert!(ma.files.len() > 60 + 10);
}

#[test]
fn splits_share_no_scan() {
    let cases = generate(&Config { scans: 200, ..Default::default() }).unwrap();
    let ids = |s: Split| cases.iter().filter(|c| c.split == s).map(|c| c.image_name()).collect::<HashSet<_>>();
    let (tr, va, te) = (ids(Split::Train), ids(Split::Val), ids(Split::Test));
    assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
    assert_eq!((va.len(), te.len()), (30, 30));
    // Every kind of case reaches the test split.
    let test: Vec<_> = cases.iter().filter(|c| c.split == Split::Test).collect();
    assert!(test.iter().any(|c| c.is_normal()) && test.iter().any(|c| !c.is_normal()));
    assert!(generate(&Config { scans: 2, ..Default::default() }).is_err());
}

#[test]
fn files_are_read_by_the_engines() {
    let d = tempfile::tempdir().unwrap();
    let m = write_benchmark(d.path(), &cfg(1), &mut |_, _| {}).unwrap();
    let vqa = medpo_eval::bench::read_vqa(&d.path().join("vqa_test.jsonl")).unwrap();
    assert_eq!(vqa.len(), m.counts["test"][1]);
    let reports = medpo_eval::bench::read_reports(&d.path().join("reports_test.jsonl")).unwrap();
    assert_eq!(reports.len(), m.counts["test"][0]);
    let mut prefs = medpo_train::data::load(&d.path().join("pairs_train.jsonl")).unwrap();
    assert_eq!(prefs.len(), m.counts["train"][2]);
    let report = medpo_train::data::validate(&mut prefs, Some(&d.path().join("images")));
    assert!(report.is_ok(), "{:?}", report.errors.first());
    for it in &vqa {
        assert!(d.path().join("images").join(&it.image).is_file());
    }
}

#[test]
fn questions_fall_in_their_categories() {
    let cases = generate(&Config { scans: 120, ..Default::default() }).unwrap();
    let mut seen = HashSet::new();
    for c in &cases {
        for it in vqa_items(c) {
            let got = medpo_eval::category::classify(&it.question).to_string();
            assert_eq!(got, it.category, "{:?}", it.question);
            seen.insert(it.category.clone());
        }
    }
    for cat in ["modality", "organ", "abnormality", "position", "size", "count"] {
        assert!(seen.contains(cat), "no `{cat}` question in 120 cases");
    }
}

#[test]
fn findings_are_visible_inside_their_boxes_and_on_their_side() {
    let cases = generate(&Config { scans: 120, ..Default::default() }).unwrap();
    let mut checked = 0;
    for c in cases.iter().filter(|c| !c.is_normal()) {
        let with = render(c);
        let mut plain = c.clone();
        plain.findings.clear();
        let without = render(&plain);
        for f in &c.findings {
            if let Some(side) = f.side {
                // Radiological convention: the patient's left is on the image's right.
                assert_eq!(f.x > SIZE as f32 / 2.0, side == Side::Left, "{} {:?}", c.id, f);
            }
            if f.kind == FindingKind::Enlargement {
                continue;
            }
            let [x0, y0, x1, y1] = f.roi;
            assert!(x0 < x1 && y0 < y1 && x1 <= SIZE && y1 <= SIZE, "{:?}", f.roi);
            let mut diff = 0.0f64;
            for y in y0..y1 {
                for x in x0..x1 {
                    diff += (with.get_pixel(x, y)[0] as f64 - without.get_pixel(x, y)[0] as f64).abs();
                }
            }
            let mean = diff / ((x1 - x0) * (y1 - y0)) as f64;
            assert!(mean > 10.0, "{} {:?}: mean change {mean:.1} inside its box", c.id, f.kind);
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} findings checked");
}

#[test]
fn every_edit_changes_the_answer() {
    let cases = generate(&Config { scans: 120, ..Default::default() }).unwrap();
    let mut edits = HashSet::new();
    for c in &cases {
        for p in pairs(c) {
            assert_ne!(p.chosen, p.rejected, "{}", p.id);
            if p.edit == "laterality_swap" {
                let f = c.findings.iter().find(|f| f.side.is_some()).unwrap();
                let other = f.side.unwrap().other().word();
                assert!(p.rejected.contains(other), "{} / {}", p.chosen, p.rejected);
            }
            if p.edit == "hallucinated_finding" {
                // The invented sentence is new: not one of the true report's sentences.
                let added: Vec<&str> = p.rejected.split(". ").filter(|s| !p.chosen.contains(s)).collect();
                assert!(!added.is_empty(), "{} / {}", p.chosen, p.rejected);
            }
        }
        // A report never repeats a sentence (several findings in one place are counted).
        let rep = medpo_phantom::text::report(c);
        let sentences: Vec<&str> = rep.split(". ").collect();
        assert_eq!(sentences.len(), sentences.iter().collect::<HashSet<_>>().len(), "{rep}");
        for p in pairs(c) {
            edits.insert(p.edit);
        }
    }
    for e in ["laterality_swap", "wrong_organ", "hallucinated_finding", "missed_finding", "flipped_answer"] {
        assert!(edits.contains(e), "no `{e}` pair in 120 cases");
    }
}
