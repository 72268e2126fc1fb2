//! Preference data: the seed's LLaVA conversation records and TRL-style JSONL, in and out,
//! and validation with errors that name the record.
//!
//! One in-memory form, [`PreferenceRecord`], covers every method of the seed: a text pair on the
//! same image (DPO, DPO+NLL), the same text on a corrupted image (CoPO: `chosen == rejected`,
//! `rejected_image` set), both (mDPO, MMedPO), and a per-sample weight (MMedPO's
//! `weighted_score`).
//!
//! Formats:
//! - **Seed JSON** (`shared/data/preference-samples`): a JSON array of
//!   `{id, image, rejected_image?, weighted_score?, conversations, rejected_conversations}` with
//!   `conversations = [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]`.
//! - **TRL JSONL**: one `{"prompt", "chosen", "rejected", "images": [..]}` object per line, the
//!   vision form of TRL's DPO datasets. Our extras ride along as `id`, `rejected_images` and
//!   `weight` (TRL ignores unknown columns). On import the conversational form
//!   (`[{"role", "content"}]`, content a string or typed parts) is accepted too.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The placeholder the models' templates replace with image features.
pub const IMAGE_TOKEN: &str = "<image>";

/// Where a record came from, for messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    /// 0-based position in the file.
    pub index: usize,
    /// 1-based line, for JSONL.
    pub line: Option<usize>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}, line {l}", self.file.display()),
            None => write!(f, "{}, record {}", self.file.display(), self.index),
        }
    }
}

/// One preference pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRecord {
    pub id: Option<String>,
    /// The human turn, `<image>` placeholder included where the model needs it.
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    /// Image path, relative to the dataset's images folder (or absolute).
    pub image: Option<String>,
    /// Image of the rejected side (corrupted/noised/cropped), same convention.
    pub rejected_image: Option<String>,
    /// Per-sample weight (the seed's `weighted_score`, MMedPO).
    pub weight: Option<f64>,
    /// Region of interest in `image` (a rater's box or the dataset's lesion box), pixels
    /// `[x0, y0, x1, y1]`, for ROI-restricted noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<[u32; 4]>,
    #[serde(skip)]
    pub source: Source,
}

impl PreferenceRecord {
    /// The record's id, or its position.
    pub fn label(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("#{}", self.source.index))
    }
}

fn record_error(src: &Source, message: impl Into<String>) -> Error {
    let record = match src.line {
        Some(l) => format!("{} (line {l})", src.index),
        None => src.index.to_string(),
    };
    Error::Record {
        file: src.file.clone(),
        record,
        message: message.into(),
    }
}

// ------------------------------------------------------------------------------ seed JSON

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Turn {
    from: String,
    value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SeedRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weighted_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roi: Option<[u32; 4]>,
    conversations: Vec<Turn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected_conversations: Option<Vec<Turn>>,
}

/// (human, assistant) of a single-turn conversation.
fn single_turn<'a>(turns: &'a [Turn], which: &str, src: &Source) -> Result<(&'a str, &'a str)> {
    if turns.len() != 2 {
        return Err(record_error(
            src,
            format!(
                "{which} has {} turns; only single-turn pairs (human, gpt) are supported",
                turns.len()
            ),
        ));
    }
    let human = matches!(turns[0].from.as_str(), "human" | "user");
    let gpt = matches!(turns[1].from.as_str(), "gpt" | "assistant");
    if !human || !gpt {
        return Err(record_error(
            src,
            format!(
                "{which} turns are from `{}`, `{}`; expected `human`, `gpt`",
                turns[0].from, turns[1].from
            ),
        ));
    }
    Ok((&turns[0].value, &turns[1].value))
}

/// Reads a seed file (a JSON array of LLaVA conversation records, or one record).
pub fn load_seed_json(path: &Path) -> Result<Vec<PreferenceRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
    let items = match value {
        Value::Array(a) => a,
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(record_error(
                &Source {
                    file: path.into(),
                    ..Default::default()
                },
                "expected a JSON array of records",
            ))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let src = Source {
                file: path.into(),
                index,
                line: None,
            };
            let r: SeedRecord =
                serde_json::from_value(v).map_err(|e| record_error(&src, e.to_string()))?;
            let (q, chosen) = single_turn(&r.conversations, "conversations", &src)?;
            let rejected_turns = r
                .rejected_conversations
                .as_ref()
                .ok_or_else(|| record_error(&src, "no `rejected_conversations`"))?;
            let (rq, rejected) = single_turn(rejected_turns, "rejected_conversations", &src)?;
            if q != rq {
                return Err(record_error(
                    &src,
                    "the human turns of `conversations` and `rejected_conversations` differ",
                ));
            }
            Ok(PreferenceRecord {
                id: r.id.map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }),
                prompt: q.to_string(),
                chosen: chosen.to_string(),
                rejected: rejected.to_string(),
                image: r.image,
                rejected_image: r.rejected_image,
                weight: r.weighted_score,
                roi: r.roi,
                source: src,
            })
        })
        .collect()
}

/// Writes records as a seed JSON array (4-space indent, the seed's own layout).
pub fn save_seed_json(path: &Path, records: &[PreferenceRecord]) -> Result<()> {
    let buf = to_seed_json(records).map_err(|e| Error::json(path, e))?;
    std::fs::write(path, buf).map_err(|e| Error::io(path, e))
}

/// The bytes [`save_seed_json`] writes.
pub fn to_seed_json(records: &[PreferenceRecord]) -> serde_json::Result<Vec<u8>> {
    let out: Vec<SeedRecord> = records
        .iter()
        .map(|r| {
            let conv = |a: &str| {
                vec![
                    Turn {
                        from: "human".into(),
                        value: r.prompt.clone(),
                    },
                    Turn {
                        from: "gpt".into(),
                        value: a.to_string(),
                    },
                ]
            };
            SeedRecord {
                id: r.id.clone().map(Value::String),
                image: r.image.clone(),
                rejected_image: r.rejected_image.clone(),
                weighted_score: r.weight,
                roi: r.roi,
                conversations: conv(&r.chosen),
                rejected_conversations: Some(conv(&r.rejected)),
            }
        })
        .collect();
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    out.serialize(&mut ser)?;
    buf.push(b'\n');
    Ok(buf)
}

// ------------------------------------------------------------------------------ TRL JSONL

#[derive(Serialize)]
struct TrlOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    prompt: &'a str,
    chosen: &'a str,
    rejected: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected_images: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roi: Option<[u32; 4]>,
}

/// Text of a TRL field: a string, or a conversational list whose message contents are strings or
/// typed parts (`{"type": "image"}` becomes the `<image>` placeholder).
fn trl_text(v: &Value, field: &str, src: &Source) -> Result<String> {
    fn content(c: &Value) -> Option<String> {
        match c {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("image") => {
                            out.push_str(IMAGE_TOKEN);
                            out.push('\n');
                        }
                        Some("text") => out.push_str(p.get("text")?.as_str()?),
                        _ => return None,
                    }
                }
                Some(out)
            }
            _ => None,
        }
    }
    let bad = || {
        record_error(
            src,
            format!("`{field}` must be a string or a list of {{role, content}} messages"),
        )
    };
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(msgs) => {
            let texts: Option<Vec<String>> =
                msgs.iter().map(|m| content(m.get("content")?)).collect();
            let texts = texts.ok_or_else(bad)?;
            if texts.len() != 1 {
                return Err(record_error(
                    src,
                    format!(
                        "`{field}` has {} messages; only single-turn pairs are supported",
                        texts.len()
                    ),
                ));
            }
            Ok(texts.into_iter().next().expect("one"))
        }
        Value::Null => Err(record_error(src, format!("missing `{field}`"))),
        _ => Err(bad()),
    }
}

fn first_path(v: Option<&Value>, field: &str, src: &Source) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(a)) if a.is_empty() => Ok(None),
        Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(record_error(
                src,
                format!("`{field}` entries must be file paths"),
            )),
        },
        Some(Value::Array(a)) => Err(record_error(
            src,
            format!(
                "`{field}` has {} images; one image per pair is supported",
                a.len()
            ),
        )),
        Some(_) => Err(record_error(
            src,
            format!("`{field}` must be a path or a list of paths"),
        )),
    }
}

/// Reads TRL-style JSONL (blank lines skipped).
pub fn load_trl_jsonl(path: &Path) -> Result<Vec<PreferenceRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let src = Source {
            file: path.into(),
            index: out.len(),
            line: Some(i + 1),
        };
        let v: Value = serde_json::from_str(line).map_err(|e| record_error(&src, e.to_string()))?;
        if !v.is_object() {
            return Err(record_error(&src, "expected a JSON object"));
        }
        let image = first_path(v.get("images").or(v.get("image")), "images", &src)?;
        let rejected_image = first_path(
            v.get("rejected_images").or(v.get("rejected_image")),
            "rejected_images",
            &src,
        )?;
        let weight = match v.get("weight") {
            None | Some(Value::Null) => None,
            Some(w) => Some(
                w.as_f64()
                    .ok_or_else(|| record_error(&src, "`weight` must be a number"))?,
            ),
        };
        let id = match v.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let roi = match v.get("roi") {
            None | Some(Value::Null) => None,
            Some(r) => Some(
                serde_json::from_value::<[u32; 4]>(r.clone())
                    .map_err(|_| record_error(&src, "`roi` must be [x0, y0, x1, y1] in pixels"))?,
            ),
        };
        out.push(PreferenceRecord {
            id,
            roi,
            prompt: trl_text(v.get("prompt").unwrap_or(&Value::Null), "prompt", &src)?,
            chosen: trl_text(v.get("chosen").unwrap_or(&Value::Null), "chosen", &src)?,
            rejected: trl_text(v.get("rejected").unwrap_or(&Value::Null), "rejected", &src)?,
            image,
            rejected_image,
            weight,
            source: src,
        });
    }
    Ok(out)
}

/// Writes TRL-style JSONL (string form).
pub fn save_trl_jsonl(path: &Path, records: &[PreferenceRecord]) -> Result<()> {
    let buf = to_trl_jsonl(records).map_err(|e| Error::json(path, e))?;
    std::fs::write(path, buf).map_err(|e| Error::io(path, e))
}

/// The bytes [`save_trl_jsonl`] writes.
pub fn to_trl_jsonl(records: &[PreferenceRecord]) -> serde_json::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for r in records {
        let o = TrlOut {
            id: r.id.as_deref(),
            prompt: &r.prompt,
            chosen: &r.chosen,
            rejected: &r.rejected,
            images: r.image.as_deref().into_iter().collect(),
            rejected_images: r.rejected_image.as_deref().into_iter().collect(),
            weight: r.weight,
            roi: r.roi,
        };
        serde_json::to_writer(&mut buf, &o)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Dataset formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    SeedJson,
    TrlJsonl,
}

impl Format {
    /// `.jsonl` is TRL JSONL, anything else the seed's JSON.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Format::TrlJsonl,
            _ => Format::SeedJson,
        }
    }
}

/// Loads either format, chosen by extension.
pub fn load(path: &Path) -> Result<Vec<PreferenceRecord>> {
    match Format::from_path(path) {
        Format::TrlJsonl => load_trl_jsonl(path),
        Format::SeedJson => load_seed_json(path),
    }
}

/// Saves either format, chosen by extension.
pub fn save(path: &Path, records: &[PreferenceRecord]) -> Result<()> {
    match Format::from_path(path) {
        Format::TrlJsonl => save_trl_jsonl(path, records),
        Format::SeedJson => save_seed_json(path, records),
    }
}

// ------------------------------------------------------------------------------ validation

/// A problem found in one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    pub source: Source,
    pub id: Option<String>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} (id {id}): {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// What [`validate`] found: errors make a record unusable; warnings were fixed in place.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
    /// The first error as an [`Error`], or `Ok`.
    pub fn into_result(self) -> Result<()> {
        match self.errors.into_iter().next() {
            None => Ok(()),
            Some(i) => Err(record_error(
                &i.source,
                match i.id {
                    Some(id) => format!("(id {id}) {}", i.message),
                    None => i.message,
                },
            )),
        }
    }
}

/// How the model's template wants the placeholder: LLaVA's `preprocess_multimodal` (LLaVA-Med)
/// and HuatuoGPT-Vision's `cli.py` both put `<image>\n` before the question.
pub fn insert_image_token(prompt: &str) -> String {
    format!("{IMAGE_TOKEN}\n{}", prompt.trim_start())
}

/// Checks every record; fixes what the model's template would fix (a missing `<image>` token is
/// inserted, with a warning) and reports everything else as an error naming file and record.
///
/// `images_dir`: the folder image paths are relative to; when given, every referenced image
/// file must exist.
pub fn validate(records: &mut [PreferenceRecord], images_dir: Option<&Path>) -> Report {
    let mut rep = Report::default();
    let mut seen = HashSet::new();
    for r in records.iter_mut() {
        let (src, id) = (r.source.clone(), r.id.clone());
        let issue = |m: String| Issue {
            source: src.clone(),
            id: id.clone(),
            message: m,
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let bare_prompt = r.prompt.replace(IMAGE_TOKEN, "");
        if bare_prompt.trim().is_empty() {
            errors.push("empty human turn (prompt)".to_string());
        }
        if r.chosen.trim().is_empty() {
            errors.push("empty chosen answer".to_string());
        }
        if r.rejected.trim().is_empty() {
            errors.push("empty rejected answer".to_string());
        }
        for (field, a) in [("chosen", &r.chosen), ("rejected", &r.rejected)] {
            if a.contains(IMAGE_TOKEN) {
                errors.push(format!("the {field} answer contains `{IMAGE_TOKEN}`"));
            }
        }
        let n_tokens = r.prompt.matches(IMAGE_TOKEN).count();
        match (&r.image, n_tokens) {
            (Some(_), 0) => {
                r.prompt = insert_image_token(&r.prompt);
                warnings.push(format!("no `{IMAGE_TOKEN}` token in the human turn; inserted `{IMAGE_TOKEN}\\n` before the question, as the model templates do"));
            }
            (Some(_), 1) => {}
            (Some(_), n) => errors.push(format!("{n} `{IMAGE_TOKEN}` tokens for one image")),
            (None, 0) => {}
            (None, _) => errors.push(format!("`{IMAGE_TOKEN}` token but no image")),
        }
        if r.rejected_image.is_some() && r.image.is_none() {
            errors.push("`rejected_image` without `image`".to_string());
        }
        if let Some(dir) = images_dir {
            for (field, p) in [("image", &r.image), ("rejected_image", &r.rejected_image)] {
                if let Some(p) = p {
                    let full = dir.join(p);
                    if !full.is_file() {
                        errors.push(format!(
                            "{field} `{p}` not found (looked for {})",
                            full.display()
                        ));
                    }
                }
            }
        }
        if let Some([x0, y0, x1, y1]) = r.roi {
            if x0 >= x1 || y0 >= y1 {
                errors.push(format!("roi [{x0}, {y0}, {x1}, {y1}] is empty; give [x0, y0, x1, y1] with x0 < x1, y0 < y1"));
            }
        }
        if let Some(w) = r.weight {
            if !(w.is_finite() && w >= 0.0) {
                errors.push(format!("weight {w} must be a finite number ≥ 0"));
            }
        }
        if let Some(id) = &r.id {
            if !seen.insert(id.clone()) {
                warnings.push(format!("duplicate id `{id}`"));
            }
        }
        rep.errors.extend(errors.into_iter().map(&issue));
        rep.warnings.extend(warnings.into_iter().map(&issue));
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::shared_dir;

    fn samples() -> Vec<PathBuf> {
        let mut v = Vec::new();
        for sub in ["llava-med", "huatuo"] {
            let d = shared_dir().join("data/preference-samples").join(sub);
            for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                v.push(e.unwrap().path());
            }
        }
        v.sort();
        assert_eq!(v.len(), 8, "{v:?}");
        v
    }

    #[test]
    fn imports_every_seed_sample() {
        for p in samples() {
            let recs = load(&p).unwrap();
            assert_eq!(recs.len(), 1, "{}", p.display());
            let r = &recs[0];
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(r.image.as_deref().unwrap().starts_with("images/"));
            assert!(!r.chosen.is_empty() && !r.rejected.is_empty());
            if name.contains("copo") {
                assert_eq!(r.chosen, r.rejected, "CoPO: same text on both sides");
                assert!(r
                    .rejected_image
                    .as_deref()
                    .unwrap()
                    .starts_with("roi_noised_images/"));
            } else {
                assert_ne!(r.chosen, r.rejected);
            }
            if name.contains("mDPO") {
                assert!(r
                    .rejected_image
                    .as_deref()
                    .unwrap()
                    .starts_with("cropped_images/"));
            }
            assert_eq!(r.weight.is_some(), name.contains("MMedPO"), "{name}");
            if name.contains("dpo___") {
                assert!(r.rejected_image.is_none());
            }
        }
        let r =
            &load(&shared_dir().join("data/preference-samples/llava-med/llava-med-IT_MMedPO.json"))
                .unwrap()[0];
        assert_eq!(r.id.as_deref(), Some("16734899_F4"));
        assert!((r.weight.unwrap() - 0.6070594191551208).abs() < 1e-15);
    }

    #[test]
    fn validation_names_the_record_and_inserts_image_tokens() {
        let images = shared_dir().join("data/images");
        for p in samples() {
            let mut recs = load(&p).unwrap();
            let had_token = recs[0].prompt.contains(IMAGE_TOKEN);
            let rep = validate(&mut recs, Some(&images));
            // The seed's images were never released, so each reference is an error naming it.
            let n_images = 1 + recs[0].rejected_image.is_some() as usize;
            assert_eq!(rep.errors.len(), n_images, "{:?}", rep.errors);
            for e in &rep.errors {
                let s = e.to_string();
                assert!(
                    s.contains(p.file_name().unwrap().to_str().unwrap())
                        && s.contains("record 0")
                        && s.contains("not found"),
                    "{s}"
                );
            }
            // Huatuo and the LLaVA-Med MMedPO sample lack the token: inserted with a warning.
            assert_eq!(
                rep.warnings.len(),
                !had_token as usize,
                "{:?}",
                rep.warnings
            );
            assert_eq!(recs[0].prompt.matches(IMAGE_TOKEN).count(), 1);
            if !had_token {
                assert!(recs[0].prompt.starts_with("<image>\n"));
            }
            // Without an images folder only the token is checked.
            assert!(validate(&mut recs, None).is_ok());
        }
        // Present files pass.
        let mut ok = vec![PreferenceRecord {
            id: Some("a".into()),
            prompt: "<image>\nIs there a fracture?".into(),
            chosen: "Yes.".into(),
            rejected: "No.".into(),
            image: Some("synpic42202.jpg".into()),
            rejected_image: Some("xy_chromosome.jpg".into()),
            weight: None,
            roi: None,
            source: Source::default(),
        }];
        let rep = validate(&mut ok, Some(&images));
        assert!(rep.is_ok() && rep.warnings.is_empty(), "{rep:?}");
    }

    #[test]
    fn bad_records_are_reported_with_file_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, r#"[
          {"id": "ok", "image": "a.png", "conversations": [{"from":"human","value":"Q?"},{"from":"gpt","value":"A"}],
           "rejected_conversations": [{"from":"human","value":"Q?"},{"from":"gpt","value":"B"}]},
          {"id": "empty", "conversations": [{"from":"human","value":"Q?"},{"from":"gpt","value":"  "}],
           "rejected_conversations": [{"from":"human","value":"Q?"},{"from":"gpt","value":"B"}]},
          {"id": "notoken", "conversations": [{"from":"human","value":"<image> Q?"},{"from":"gpt","value":"A"}],
           "rejected_conversations": [{"from":"human","value":"<image> Q?"},{"from":"gpt","value":"B"}]}
        ]"#).unwrap();
        let mut recs = load(&p).unwrap();
        let rep = validate(&mut recs, None);
        let errs: Vec<String> = rep.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("bad.json, record 1") && errs[0].contains("empty chosen answer"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("record 2") && errs[1].contains("no image"),
            "{errs:?}"
        );
        assert!(rep
            .into_result()
            .unwrap_err()
            .to_string()
            .contains("bad.json"));

        std::fs::write(
            &p,
            r#"[{"conversations": [{"from":"human","value":"Q?"},{"from":"gpt","value":"A"}]}]"#,
        )
        .unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.json")
                && e.contains("record 0")
                && e.contains("rejected_conversations"),
            "{e}"
        );

        let j = dir.path().join("bad.jsonl");
        std::fs::write(&j, "{\"prompt\":\"Q\",\"chosen\":\"A\",\"rejected\":\"B\"}\n\n{\"prompt\":\"Q\",\"chosen\":\"A\"}\n").unwrap();
        let e = load(&j).unwrap_err().to_string();
        assert!(
            e.contains("bad.jsonl") && e.contains("line 3") && e.contains("rejected"),
            "{e}"
        );
    }

    #[test]
    fn round_trips_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        for p in samples() {
            all.extend(load(&p).unwrap());
        }
        let strip = |v: Vec<PreferenceRecord>| {
            v.into_iter()
                .map(|mut r| {
                    r.source = Source::default();
                    r
                })
                .collect::<Vec<_>>()
        };
        let j = dir.path().join("all.jsonl");
        save(&j, &all).unwrap();
        assert_eq!(strip(load(&j).unwrap()), strip(all.clone()));
        let s = dir.path().join("all.json");
        save(&s, &all).unwrap();
        assert_eq!(strip(load(&s).unwrap()), strip(all.clone()));
        let line = std::fs::read_to_string(&j).unwrap();
        let first: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert!(first["images"].is_array() && first["prompt"].is_string());
        // TRL's conversational form imports to the same text.
        let c = dir.path().join("conv.jsonl");
        std::fs::write(&c, r#"{"prompt":[{"role":"user","content":[{"type":"image"},{"type":"text","text":"Q?"}]}],"chosen":[{"role":"assistant","content":"A"}],"rejected":[{"role":"assistant","content":[{"type":"text","text":"B"}]}],"images":["x.png"]}"#).unwrap();
        let r = &load(&c).unwrap()[0];
        assert_eq!(
            (
                r.prompt.as_str(),
                r.chosen.as_str(),
                r.rejected.as_str(),
                r.image.as_deref()
            ),
            ("<image>\nQ?", "A", "B", Some("x.png"))
        );
    }
}
