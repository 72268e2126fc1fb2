//! The eval runner: a model over a VQA benchmark, in batches, resumable.
//!
//! The model is anything implementing [`Answerer`] (the model engine implements it; tests
//! use a fake). The runner:
//!
//! 1. reads the answer file if it exists, and skips every question already answered there
//!    (a truncated last line, left by a crash mid-write, is dropped and rewritten);
//! 2. refuses to resume a file written by another model id;
//! 3. sends the remaining questions in batches of `batch_size`, appending each batch's
//!    answers to the file (the seed's format, flushed) before the next batch, and calls the
//!    progress callback after each;
//! 4. scores the complete answer file ([`score_run`]) and writes the summary JSON.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::answers::{answer_id, append_answers, read_answers, AnswerRecord};
use crate::bench::{VqaBenchmark, VqaItem};
use crate::bootstrap_ci::BootstrapConfig;
use crate::error::{Error, Result};
use crate::score::score_run;
use crate::summary::RunSummary;

/// A model that answers VQA questions.
pub trait Answerer {
    /// One answer per item, in order. Images are at `item.image_path(images_dir)` for the
    /// images folder the answerer was built with.
    fn answer_batch(&mut self, items: &[VqaItem]) -> Result<Vec<String>>;
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Written into every answer line and the summary.
    pub model_id: String,
    pub batch_size: usize,
    /// The seed-format answer JSONL (appended to; resumed from).
    pub answers_path: PathBuf,
    /// Where to write the summary JSON; none: not written.
    pub summary_path: Option<PathBuf>,
    /// Only the first `limit` questions of the benchmark.
    pub limit: Option<usize>,
    pub bootstrap: BootstrapConfig,
}

/// Progress after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Questions answered so far, including those found in the file.
    pub done: usize,
    pub total: usize,
    /// Questions found already answered when the run started.
    pub resumed: usize,
}

/// Drops a last line that lacks its newline (an interrupted write).
fn drop_partial_tail(path: &Path) -> Result<()> {
    let mut f = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(path = %path.display(), dropped_bytes = bytes.len() - keep, "dropping a truncated last answer line");
    f.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Runs `answerer` over `bench` (see the module docs) and returns the scored summary.
pub fn run_eval<A: Answerer + ?Sized>(
    answerer: &mut A,
    bench: &VqaBenchmark,
    cfg: &RunConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunSummary> {
    if cfg.batch_size == 0 {
        return Err(Error::Invalid("batch_size must be at least 1".into()));
    }
    let items: &[VqaItem] = match cfg.limit {
        Some(n) => &bench.items[..n.min(bench.items.len())],
        None => &bench.items,
    };
    drop_partial_tail(&cfg.answers_path)?;
    let existing = if cfg.answers_path.exists() { read_answers(&cfg.answers_path)? } else { Vec::new() };
    if let Some(other) = existing.iter().find(|a| !a.model_id.is_empty() && a.model_id != cfg.model_id) {
        return Err(Error::Invalid(format!(
            "`{}` holds answers of model `{}`, not `{}`: use another --answers file",
            cfg.answers_path.display(),
            other.model_id,
            cfg.model_id
        )));
    }
    let done_ids: std::collections::HashSet<String> = existing.iter().map(|a| a.question_id.key()).collect();
    let todo: Vec<VqaItem> = items.iter().filter(|i| !done_ids.contains(&i.question_id.key())).cloned().collect();
    let resumed = items.len() - todo.len();
    let mut done = resumed;
    tracing::info!(model = %cfg.model_id, bench = %bench.name, total = items.len(), resumed, "eval run");
    progress(Progress { done, total: items.len(), resumed });
    for batch in todo.chunks(cfg.batch_size) {
        let answers = answerer.answer_batch(batch)?;
        if answers.len() != batch.len() {
            return Err(Error::Answerer(format!("{} answers for a batch of {}", answers.len(), batch.len())));
        }
        let records: Vec<AnswerRecord> = batch
            .iter()
            .zip(answers)
            .map(|(it, text)| AnswerRecord {
                question_id: it.question_id.clone(),
                prompt: it.prompt(),
                text,
                answer_id: answer_id(&cfg.model_id, &it.question_id),
                model_id: cfg.model_id.clone(),
                answer: it.answer.clone(),
                answer_type: it.raw_answer_type.clone(),
                metadata: serde_json::json!({}),
            })
            .collect();
        append_answers(&cfg.answers_path, &records)?;
        done += batch.len();
        progress(Progress { done, total: items.len(), resumed });
    }
    // Answers outside this run's items (an earlier run without `limit`) are not scored.
    let wanted: std::collections::HashSet<String> = items.iter().map(|i| i.question_id.key()).collect();
    let all: Vec<AnswerRecord> = read_answers(&cfg.answers_path)?
        .into_iter()
        .filter(|a| wanted.contains(&a.question_id.key()))
        .collect();
    let scored_bench = VqaBenchmark { name: bench.name.clone(), path: bench.path.clone(), items: items.to_vec() };
    let summary = score_run(&scored_bench, &all, &cfg.model_id, &cfg.bootstrap)?;
    if let Some(p) = &cfg.summary_path {
        summary.write_json(p)?;
    }
    Ok(summary)
}
