//! Benchmark readers: the seed's LLaVA-Med VQA JSONL and a report-generation format.
//!
//! # VQA files (`*_llavamed_format.jsonl`)
//!
//! One JSON object per line with `question_id`, `image`, `text`, `gpt4_answer` and
//! `answer_type`. The reader is tolerant of the quirks of the real files:
//!
//! - `answer_type` is matched after trimming and ignoring case, so `CLOSED`, `"CLOSED "`,
//!   `Closed`, `OPEN` and `Open` are all accepted; any other value is an error.
//! - `question_id` may be an integer or a string; its key ([`QuestionId::key`]) is its
//!   decimal or string form.
//! - The `<image>` placeholder may be present or absent in `text`; [`VqaItem::question`] has
//!   it removed and [`VqaItem::prompt`] puts it back in front, as the seed's `model_vqa.py`
//!   does.
//! - The gold answer may be a string or a number (`2` in VQA-RAD train); `answer` is accepted
//!   when `gpt4_answer` is absent.
//! - Blank lines, Windows line ends and a leading byte-order mark are accepted.
//!
//! It is strict about real errors: a line that is not JSON, a missing or mistyped field, or
//! a duplicate `question_id` is an error naming the file and the 1-based line number.
//!
//! # Report-generation files
//!
//! For MIMIC-CXR-style and AMBOSS-style sets that users bring themselves: one JSON object
//! per line with an image (`image_path`, `image` or `image_paths`; a string or a list), a gold
//! text (`report`, `caption`, `gold_report` or `gold_caption`), an optional id (`id`,
//! `study_id` or `question_id`; the line number otherwise) and optional `atomic_facts`
//! (a list of strings, used by the NLI judge).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Benchmark names known to `--bench`, with their test files in the data folder.
pub const KNOWN_BENCHMARKS: [(&str, &str); 3] = [
    ("vqa-rad", "VQA_RAD_test_llavamed_format.jsonl"),
    ("slake", "SLAKE_test_llavamed_format.jsonl"),
    ("pathvqa", "pvqa_test_llavamed_format.jsonl"),
];

/// The environment variable that overrides the default VQA data folder.
pub const DATA_DIR_ENV: &str = "MEDPO_VQA_DIR";

/// The VQA data folder: `$MEDPO_VQA_DIR`, else `../shared/data/vqa` relative to the current
/// folder.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("../shared/data/vqa"),
    }
}

/// Resolves a benchmark name (`vqa-rad`, `slake`, `pathvqa`; `pvqa` is an alias) to its file
/// in `data_dir`, or accepts a path to an existing file.
pub fn resolve_benchmark(name_or_path: &str, data_dir: &Path) -> Result<(String, PathBuf)> {
    let lower = name_or_path.to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "pvqa" | "path-vqa" => "pathvqa",
        "vqarad" | "vqa_rad" => "vqa-rad",
        other => other,
    };
    if let Some((name, file)) = KNOWN_BENCHMARKS.iter().find(|(n, _)| *n == canonical) {
        return Ok((name.to_string(), data_dir.join(file)));
    }
    let path = PathBuf::from(name_or_path);
    if path.is_file() {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name_or_path.to_string());
        return Ok((name, path));
    }
    Err(Error::UnknownBenchmark {
        name: name_or_path.to_string(),
        known: KNOWN_BENCHMARKS
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A question id as found in the files: an integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QuestionId {
    Int(i64),
    Str(String),
}

impl QuestionId {
    /// The matching key: the decimal form of an integer, the string itself otherwise.
    pub fn key(&self) -> String {
        self.to_string()
    }

    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => n.as_i64().map(QuestionId::Int),
            Value::String(s) => Some(QuestionId::Str(s.clone())),
            _ => None,
        }
    }
}

impl fmt::Display for QuestionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuestionId::Int(i) => write!(f, "{i}"),
            QuestionId::Str(s) => f.write_str(s),
        }
    }
}

/// Closed (yes/no or pick-one) or open question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum AnswerType {
    Closed,
    Open,
}

impl AnswerType {
    /// Parses a spelling found in the files, trimmed and ignoring case.
    pub fn parse(raw: &str) -> Option<Self> {
        let t = raw.trim();
        if t.eq_ignore_ascii_case("closed") {
            Some(AnswerType::Closed)
        } else if t.eq_ignore_ascii_case("open") {
            Some(AnswerType::Open)
        } else {
            None
        }
    }

    /// `closed` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerType::Closed => "closed",
            AnswerType::Open => "open",
        }
    }
}

/// One VQA question with its gold answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqaItem {
    pub question_id: QuestionId,
    /// Image path as written in the file, relative to the images folder.
    pub image: String,
    /// The question with `<image>` removed and surrounding whitespace trimmed.
    pub question: String,
    /// The gold answer, as text.
    pub answer: String,
    pub answer_type: AnswerType,
    /// `answer_type` exactly as spelled in the file (written back to answer files).
    pub raw_answer_type: String,
    /// Whether `text` contained `<image>`.
    pub had_image_token: bool,
    /// 1-based line number in the benchmark file.
    pub line: usize,
}

impl VqaItem {
    /// The prompt given to a model, as the seed builds it: `<image>\n` + question.
    pub fn prompt(&self) -> String {
        format!("<image>\n{}", self.question)
    }

    /// The image file inside a user-supplied images folder.
    pub fn image_path(&self, images_dir: &Path) -> PathBuf {
        images_dir.join(&self.image)
    }
}

/// A VQA benchmark file, read.
#[derive(Debug, Clone)]
pub struct VqaBenchmark {
    /// Short name (`vqa-rad`, or the file stem).
    pub name: String,
    pub path: PathBuf,
    pub items: Vec<VqaItem>,
}

impl VqaBenchmark {
    /// Reads a benchmark by name or path (see [`resolve_benchmark`]).
    pub fn load(name_or_path: &str, data_dir: &Path) -> Result<Self> {
        let (name, path) = resolve_benchmark(name_or_path, data_dir)?;
        let items = read_vqa(&path)?;
        Ok(VqaBenchmark { name, path, items })
    }
}

/// Iterates over the non-blank lines of a JSONL file as (1-based line number, object).
pub(crate) fn read_jsonl_objects(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: line_no,
            message: e.to_string(),
        })?;
        match value {
            Value::Object(map) => out.push((line_no, map)),
            other => {
                return Err(Error::Record {
                    path: path.to_path_buf(),
                    line: line_no,
                    message: format!("expected a JSON object, found {}", type_name(&other)),
                })
            }
        }
    }
    Ok(out)
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field access with errors that name the file, line and key.
pub(crate) struct Fields<'a> {
    pub path: &'a Path,
    pub line: usize,
    pub map: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub fn err(&self, message: String) -> Error {
        Error::Record {
            path: self.path.to_path_buf(),
            line: self.line,
            message,
        }
    }

    /// The first present key among `keys`.
    pub fn first<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &Value)> {
        keys.iter()
            .find_map(|k| self.map.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
    }

    fn missing(&self, keys: &[&str]) -> Error {
        let names: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        self.err(format!("missing field {}", names.join(" or ")))
    }

    /// A string field (one of `keys`).
    pub fn string(&self, keys: &[&str]) -> Result<String> {
        match self.first(keys) {
            Some((_, Value::String(s))) => Ok(s.clone()),
            Some((k, v)) => Err(self.err(format!("field `{k}`: expected a string, found {}", type_name(v)))),
            None => Err(self.missing(keys)),
        }
    }

    /// A text field that may also be a number or boolean (gold answers).
    pub fn text(&self, keys: &[&str]) -> Result<String> {
        match self.first(keys) {
            Some((_, Value::String(s))) => Ok(s.clone()),
            Some((_, Value::Number(n))) => Ok(n.to_string()),
            Some((_, Value::Bool(b))) => Ok(b.to_string()),
            Some((k, v)) => Err(self.err(format!("field `{k}`: expected text, found {}", type_name(v)))),
            None => Err(self.missing(keys)),
        }
    }

    /// A question id field.
    pub fn question_id(&self, keys: &[&str]) -> Result<QuestionId> {
        match self.first(keys) {
            Some((k, v)) => QuestionId::from_value(v).ok_or_else(|| {
                self.err(format!("field `{k}`: expected an integer or a string, found {}", type_name(v)))
            }),
            None => Err(self.missing(keys)),
        }
    }

    /// A string or a list of strings.
    pub fn string_list(&self, keys: &[&str]) -> Result<Vec<String>> {
        match self.first(keys) {
            Some((_, Value::String(s))) => Ok(vec![s.clone()]),
            Some((k, Value::Array(a))) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(format!(
                        "field `{k}`: expected a list of strings, found {} in it",
                        type_name(other)
                    ))),
                })
                .collect(),
            Some((k, v)) => Err(self.err(format!(
                "field `{k}`: expected a string or a list of strings, found {}",
                type_name(v)
            ))),
            None => Err(self.missing(keys)),
        }
    }
}

/// Reads a VQA benchmark file (see the module docs for the accepted quirks).
pub fn read_vqa(path: &Path) -> Result<Vec<VqaItem>> {
    let mut items = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, map) in read_jsonl_objects(path)? {
        let f = Fields { path, line, map: &map };
        let question_id = f.question_id(&["question_id"])?;
        let image = f.string(&["image"])?;
        let text = f.string(&["text"])?;
        let answer = f.text(&["gpt4_answer", "answer"])?;
        let raw_answer_type = f.string(&["answer_type"])?;
        let answer_type = AnswerType::parse(&raw_answer_type).ok_or_else(|| {
            f.err(format!(
                "field `answer_type`: expected CLOSED or OPEN (any case, surrounding spaces allowed), found {raw_answer_type:?}"
            ))
        })?;
        let key = question_id.key();
        if let Some(&first) = seen.get(&key) {
            return Err(Error::DuplicateId {
                path: path.to_path_buf(),
                line,
                first,
                id: key,
            });
        }
        seen.insert(key, line);
        items.push(VqaItem {
            question_id,
            image,
            question: text.replace("<image>", "").trim().to_string(),
            had_image_token: text.contains("<image>"),
            answer,
            answer_type,
            raw_answer_type,
            line,
        });
    }
    Ok(items)
}

/// One report-generation item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportItem {
    /// The record's id, or `line-<N>` when it has none.
    pub id: String,
    /// Image paths relative to the images folder.
    pub images: Vec<String>,
    /// The gold report or caption.
    pub report: String,
    /// Gold atomic facts for the NLI judge (may be empty).
    pub atomic_facts: Vec<String>,
}

/// Reads a report-generation benchmark file (see the module docs).
pub fn read_reports(path: &Path) -> Result<Vec<ReportItem>> {
    let mut items = Vec::new();
    for (line, map) in read_jsonl_objects(path)? {
        let f = Fields { path, line, map: &map };
        let id = match f.first(&["id", "study_id", "question_id"]) {
            Some(_) => f.question_id(&["id", "study_id", "question_id"])?.key(),
            None => format!("line-{line}"),
        };
        let images = f.string_list(&["image_path", "image", "image_paths"])?;
        let report = f.string(&["report", "caption", "gold_report", "gold_caption"])?;
        let atomic_facts = match f.first(&["atomic_facts"]) {
            Some(_) => f.string_list(&["atomic_facts"])?,
            None => Vec::new(),
        };
        items.push(ReportItem {
            id,
            images,
            report,
            atomic_facts,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medpo-eval-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn quirks_are_accepted() {
        let d = tmpdir("quirks");
        let p = write(
            &d,
            "q.jsonl",
            concat!(
                r#"{"question_id": 10, "image": "a.jpg", "text": "Is it?\n<image>", "gpt4_answer": "yes", "answer_type": "CLOSED"}"#, "\n",
                r#"{"question_id": "0", "image": "b/c.jpg", "text": "How many?", "gpt4_answer": 2, "answer_type": "CLOSED "}"#, "\n",
                "\n",
                r#"{"question_id": "train0_3", "image": "d.png", "text": "what?", "gpt4_answer": "x", "answer_type": "Open"}"#, "\n",
            ),
        );
        let items = read_vqa(&p).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].question_id, QuestionId::Int(10));
        assert_eq!(items[0].question, "Is it?");
        assert!(items[0].had_image_token);
        assert_eq!(items[0].prompt(), "<image>\nIs it?");
        assert_eq!(items[1].answer, "2");
        assert_eq!(items[1].answer_type, AnswerType::Closed);
        assert_eq!(items[1].raw_answer_type, "CLOSED ");
        assert!(!items[1].had_image_token);
        assert_eq!(items[2].line, 4);
        assert_eq!(items[2].answer_type, AnswerType::Open);
        assert_eq!(items[1].image_path(Path::new("/imgs")), PathBuf::from("/imgs/b/c.jpg"));

        let p = write(
            &d,
            "bom.jsonl",
            "\u{feff}{\"question_id\": 1, \"image\": \"a\", \"text\": \"t\", \"gpt4_answer\": \"y\", \"answer_type\": \"OPEN\"}\r\n",
        );
        assert_eq!(read_vqa(&p).unwrap().len(), 1);
    }

    #[test]
    fn errors_name_file_and_line() {
        let d = tmpdir("errors");
        let p = write(&d, "bad.jsonl", "{\"question_id\": 1, \"image\": \"a\", \"text\": \"t\", \"gpt4_answer\": \"y\", \"answer_type\": \"OPEN\"}\n{not json\n");
        let e = read_vqa(&p).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl") && e.contains("line 2") && e.contains("invalid JSON"), "{e}");

        let p = write(&d, "missing.jsonl", "{\"question_id\": 1, \"image\": \"a\", \"text\": \"t\", \"answer_type\": \"OPEN\"}\n");
        let e = read_vqa(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("`gpt4_answer`"), "{e}");

        let p = write(&d, "type.jsonl", "{\"question_id\": 1, \"image\": \"a\", \"text\": \"t\", \"gpt4_answer\": \"y\", \"answer_type\": \"MAYBE\"}\n");
        let e = read_vqa(&p).unwrap_err().to_string();
        assert!(e.contains("answer_type") && e.contains("MAYBE"), "{e}");

        let rec = "{\"question_id\": 1, \"image\": \"a\", \"text\": \"t\", \"gpt4_answer\": \"y\", \"answer_type\": \"OPEN\"}\n";
        let p = write(&d, "dup.jsonl", &format!("{rec}{rec}"));
        let e = read_vqa(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("duplicate"), "{e}");
    }

    #[test]
    fn report_format() {
        let d = tmpdir("reports");
        let p = write(
            &d,
            "r.jsonl",
            concat!(
                r#"{"id": 5, "report": "No effusion.", "image_path": ["5.jpg"], "atomic_facts": ["1. No effusion."]}"#, "\n",
                r#"{"image_path": "images/526.jpg", "caption": "A rash."}"#, "\n",
                r#"{"image": "x.jpg"}"#, "\n",
            ),
        );
        let e = read_reports(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("`report`"), "{e}");
        std::fs::write(&p, std::fs::read_to_string(&p).unwrap().lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
        let items = read_reports(&p).unwrap();
        assert_eq!(items[0].id, "5");
        assert_eq!(items[0].atomic_facts.len(), 1);
        assert_eq!(items[1].id, "line-2");
        assert_eq!(items[1].images, ["images/526.jpg"]);
    }

    #[test]
    fn names_resolve() {
        let (n, p) = resolve_benchmark("PVQA", Path::new("/d")).unwrap();
        assert_eq!(n, "pathvqa");
        assert_eq!(p, PathBuf::from("/d/pvqa_test_llavamed_format.jsonl"));
        assert!(resolve_benchmark("nope", Path::new("/d")).is_err());
    }
}
