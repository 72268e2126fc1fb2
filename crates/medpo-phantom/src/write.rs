//! Writes a phantom benchmark to a folder, in the formats the real data uses:
//!
//! ```text
//! images/phantom-00000.png …        the scans (8-bit grey PNG, 224 × 224)
//! cases.jsonl                       ground truth: modality, region, findings with ROI boxes, split
//! vqa_{train,val,test}.jsonl        LLaVA-Med VQA (question_id, image, text, gpt4_answer, answer_type, category)
//! reports_{train,val,test}.jsonl    report generation (id, image, report, atomic_facts)
//! pairs_{train,val,test}.jsonl      TRL preference pairs (prompt, chosen, rejected, images, roi, edit)
//! sft_{train,val,test}.jsonl        LLaVA conversations for supervised fine-tuning
//! manifest.json                     generator version, config, counts and every file's sha256
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::text::{pairs, report, vqa_items};
use crate::{generate, render, Case, Config, Error, Result, Split, GENERATOR_VERSION};

/// What was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub config: Config,
    /// Per split: scans, VQA items, preference pairs.
    pub counts: BTreeMap<String, [usize; 3]>,
    /// File (relative path) → sha256, every file written.
    pub files: BTreeMap<String, String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

struct Lines {
    path: PathBuf,
    buf: Vec<u8>,
}

impl Lines {
    fn new(path: PathBuf) -> Self {
        Lines { path, buf: Vec::new() }
    }
    fn push(&mut self, v: &serde_json::Value) {
        self.buf.extend_from_slice(v.to_string().as_bytes());
        self.buf.push(b'\n');
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Generates the cases of `cfg` and writes everything under `out` (created if missing).
/// `progress(done, total)` is called after each image.
pub fn write_benchmark(out: &Path, cfg: &Config, progress: &mut dyn FnMut(usize, usize)) -> Result<Manifest> {
    let cases = generate(cfg)?;
    let images = out.join("images");
    std::fs::create_dir_all(&images).map_err(io(&images))?;
    let mut files = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        let path = images.join(c.image_name());
        let mut png = Vec::new();
        render::render(c)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::Image { path: path.clone(), message: e.to_string() })?;
        std::fs::write(&path, &png).map_err(io(&path))?;
        files.insert(format!("images/{}", c.image_name()), sha(&png));
        progress(i + 1, cases.len());
    }
    let mut counts = BTreeMap::new();
    let mut all = Lines::new(out.join("cases.jsonl"));
    for c in &cases {
        all.push(&serde_json::to_value(c).map_err(|e| Error::Invalid(e.to_string()))?);
    }
    let mut outputs = vec![all];
    for split in [Split::Train, Split::Val, Split::Test] {
        let of_split: Vec<&Case> = cases.iter().filter(|c| c.split == split).collect();
        let n = split.name();
        let (mut vqa, mut reports, mut prefs, mut sft) = (
            Lines::new(out.join(format!("vqa_{n}.jsonl"))),
            Lines::new(out.join(format!("reports_{n}.jsonl"))),
            Lines::new(out.join(format!("pairs_{n}.jsonl"))),
            Lines::new(out.join(format!("sft_{n}.jsonl"))),
        );
        let (mut n_vqa, mut n_pairs) = (0, 0);
        for c in &of_split {
            let rep = report(c);
            for it in vqa_items(c) {
                n_vqa += 1;
                vqa.push(&serde_json::json!({
                    "question_id": it.question_id,
                    "image": it.image,
                    "text": format!("{}\n<image>", it.question),
                    "gpt4_answer": it.answer,
                    "answer_type": if it.closed { "CLOSED" } else { "OPEN" },
                    "category": it.category,
                }));
                sft.push(&serde_json::json!({
                    "id": it.question_id,
                    "image": it.image,
                    "conversations": [{"from": "human", "value": format!("<image>\n{}", it.question)}, {"from": "gpt", "value": it.answer}],
                }));
            }
            let facts: Vec<String> = rep.split_inclusive('.').skip(1).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            reports.push(&serde_json::json!({"id": c.id, "image": c.image_name(), "report": rep, "atomic_facts": facts}));
            sft.push(&serde_json::json!({
                "id": format!("{}-report", c.id),
                "image": c.image_name(),
                "conversations": [{"from": "human", "value": format!("<image>\n{}", crate::text::REPORT_PROMPT)}, {"from": "gpt", "value": rep}],
            }));
            for p in pairs(c) {
                n_pairs += 1;
                prefs.push(&serde_json::json!({
                    "id": p.id,
                    "prompt": format!("<image>\n{}", p.prompt),
                    "chosen": p.chosen,
                    "rejected": p.rejected,
                    "images": [p.image],
                    "roi": p.roi,
                    "edit": p.edit,
                }));
            }
        }
        counts.insert(n.to_string(), [of_split.len(), n_vqa, n_pairs]);
        outputs.extend([vqa, reports, prefs, sft]);
    }
    for l in &outputs {
        let mut f = std::fs::File::create(&l.path).map_err(io(&l.path))?;
        f.write_all(&l.buf).map_err(io(&l.path))?;
        let name = l.path.strip_prefix(out).unwrap_or(&l.path).display().to_string();
        files.insert(name, sha(&l.buf));
    }
    let manifest = Manifest { generator: GENERATOR_VERSION.into(), config: cfg.clone(), counts, files };
    let path = out.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(manifest)
}
