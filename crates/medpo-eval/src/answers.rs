//! The seed's answer JSONL (written by `model_vqa.py`, read and written here).
//!
//! Each line: `question_id`, `prompt`, `text` (the model's answer), `answer_id`, `model_id`,
//! `answer` (gold), `answer_type` and optionally `metadata`. Only `question_id` and `text`
//! are required when reading; the gold answer always comes from the benchmark file.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bench::{read_jsonl_objects, Fields, QuestionId};
use crate::error::{Error, Result};

/// One line of an answer file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub question_id: QuestionId,
    pub prompt: String,
    /// The model's answer.
    pub text: String,
    pub answer_id: String,
    pub model_id: String,
    /// The gold answer.
    pub answer: String,
    /// As spelled in the benchmark file.
    pub answer_type: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// A deterministic answer id: FNV-1a of model id and question id, as 16 hex digits.
pub fn answer_id(model_id: &str, question_id: &QuestionId) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in model_id.bytes().chain([0u8]).chain(question_id.key().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Reads an answer file. Missing optional fields are filled with empty strings; a duplicate
/// question id is an error.
pub fn read_answers(path: &Path) -> Result<Vec<AnswerRecord>> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, map) in read_jsonl_objects(path)? {
        let f = Fields { path, line, map: &map };
        let question_id = f.question_id(&["question_id"])?;
        let opt = |keys: &[&str]| -> Result<String> {
            match f.first(keys) {
                Some(_) => f.text(keys),
                None => Ok(String::new()),
            }
        };
        let rec = AnswerRecord {
            text: f.text(&["text"])?,
            prompt: opt(&["prompt"])?,
            answer_id: opt(&["answer_id"])?,
            model_id: opt(&["model_id"])?,
            answer: opt(&["answer"])?,
            answer_type: opt(&["answer_type"])?,
            metadata: map.get("metadata").cloned().unwrap_or(serde_json::Value::Null),
            question_id,
        };
        let key = rec.question_id.key();
        if let Some(&first) = seen.get(&key) {
            return Err(Error::DuplicateId {
                path: path.to_path_buf(),
                line,
                first,
                id: key,
            });
        }
        seen.insert(key, line);
        out.push(rec);
    }
    Ok(out)
}

/// Appends records to an answer file (created if absent) and flushes.
pub fn append_answers(path: &Path, records: &[AnswerRecord]) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| Error::Invalid(e.to_string()))?;
        writeln!(w, "{line}").map_err(|e| Error::io(path, e))?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}
