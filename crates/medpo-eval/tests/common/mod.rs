//! Test helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use medpo_eval::answers::AnswerRecord;
use medpo_eval::bench::{VqaBenchmark, VqaItem};

/// The shared folder: `$MEDPO_SHARED`, else `<CARGO_MANIFEST_DIR>/../../../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("MEDPO_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// The real VQA benchmark files.
pub fn vqa_dir() -> PathBuf {
    shared_dir().join("data/vqa")
}

/// A fresh, empty folder for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medpo-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

/// An answer file for `bench` written by `model`: `f` answers each item.
pub fn answers(bench: &VqaBenchmark, model: &str, f: impl Fn(&VqaItem) -> String) -> Vec<AnswerRecord> {
    bench
        .items
        .iter()
        .map(|it| AnswerRecord {
            question_id: it.question_id.clone(),
            prompt: it.prompt(),
            text: f(it),
            answer_id: String::new(),
            model_id: model.into(),
            answer: it.answer.clone(),
            answer_type: it.raw_answer_type.clone(),
            metadata: serde_json::Value::Null,
        })
        .collect()
}
