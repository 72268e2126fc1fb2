//! The eval runner with a fake answerer: batching, progress, resumability, the seed's answer
//! format, and scoring end to end.

mod common;

use std::path::Path;

use medpo_eval::answers::read_answers;
use medpo_eval::bench::{VqaBenchmark, VqaItem};
use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::runner::{run_eval, Answerer, Progress, RunConfig};
use medpo_eval::summary::RunSummary;
use medpo_eval::{Error, Result, PROTOCOL_VERSION};

const BENCH: &str = concat!(
    r#"{"question_id": 1, "image": "a.jpg", "text": "Is there a fracture?\n<image>", "gpt4_answer": "yes", "answer_type": "CLOSED"}"#, "\n",
    r#"{"question_id": 2, "image": "a.jpg", "text": "Is this an MRI?", "gpt4_answer": "No", "answer_type": "CLOSED "}"#, "\n",
    r#"{"question_id": "q3", "image": "b.jpg", "text": "What organ is shown?", "gpt4_answer": "Left lung", "answer_type": "Open"}"#, "\n",
    r#"{"question_id": 4, "image": "b.jpg", "text": "How many nodules?", "gpt4_answer": "two", "answer_type": "OPEN"}"#, "\n",
    r#"{"question_id": 5, "image": "c.jpg", "text": "Where is the mass?", "gpt4_answer": "right upper lobe", "answer_type": "OPEN"}"#, "\n",
);

/// Answers from a table; fails once at `fail_at` calls to simulate a crash.
struct Fake {
    calls: usize,
    fail_at: Option<usize>,
    seen: Vec<String>,
}

impl Fake {
    fn answer(item: &VqaItem) -> String {
        match item.question_id.key().as_str() {
            "1" => "Yes.".into(),
            "2" => "yes".into(),
            "q3" => "The lung".into(),
            "4" => "2".into(),
            _ => "".into(),
        }
    }
}

impl Answerer for Fake {
    fn answer_batch(&mut self, items: &[VqaItem]) -> Result<Vec<String>> {
        self.calls += 1;
        if self.fail_at == Some(self.calls) {
            return Err(Error::Answerer("GPU fell over".into()));
        }
        self.seen.extend(items.iter().map(|i| i.question_id.key()));
        Ok(items.iter().map(Fake::answer).collect())
    }
}

fn setup(name: &str) -> (std::path::PathBuf, VqaBenchmark) {
    let dir = common::test_dir(name);
    let path = dir.join("bench.jsonl");
    std::fs::write(&path, BENCH).unwrap();
    let bench = VqaBenchmark::load(path.to_str().unwrap(), Path::new(".")).unwrap();
    (dir, bench)
}

fn config(dir: &Path) -> RunConfig {
    RunConfig {
        model_id: "fake-7b".into(),
        batch_size: 2,
        answers_path: dir.join("answers.jsonl"),
        summary_path: Some(dir.join("summary.json")),
        limit: None,
        bootstrap: BootstrapConfig { rounds: 200, ..Default::default() },
    }
}

fn check_scores(s: &RunSummary) {
    let m = |k: &str| s.metric(k).unwrap_or_else(|| panic!("no {k}")).value;
    // Closed: 1 right ("Yes." vs yes), 1 wrong (yes vs No).
    assert_eq!(m("closed/accuracy"), 0.5);
    // Open recall: {left, lung} vs "lung" = ½; {2} vs "2" = 1; {right, upper, lobe} vs "" = 0.
    assert!((m("open/recall") - 0.5).abs() < 1e-12);
    assert!((m("open/exact_match") - 1.0 / 3.0).abs() < 1e-12);
    // Overall: (1 + 0 + ½ + 1 + 0)/5.
    assert!((m("overall/score") - 0.5).abs() < 1e-12);
    assert_eq!(m("category/count/score"), 1.0);
    assert_eq!(s.counts.items, 5);
    assert_eq!(s.protocol_version, PROTOCOL_VERSION);
    for mv in &s.metrics {
        assert!(mv.ci_low <= mv.value + 1e-12 && mv.value <= mv.ci_high + 1e-12, "{mv:?}");
    }
}

#[test]
fn runs_in_batches_and_writes_the_seed_format() {
    let (dir, bench) = setup("runner-batches");
    let cfg = config(&dir);
    let mut fake = Fake { calls: 0, fail_at: None, seen: vec![] };
    let mut seen_progress = Vec::new();
    let s = run_eval(&mut fake, &bench, &cfg, &mut |p: Progress| seen_progress.push(p.done)).unwrap();
    assert_eq!(fake.calls, 3);
    assert_eq!(seen_progress, [0, 2, 4, 5]);
    check_scores(&s);
    let answers = read_answers(&cfg.answers_path).unwrap();
    assert_eq!(answers.len(), 5);
    assert_eq!(answers[1].answer_type, "CLOSED ");
    assert_eq!(answers[1].answer, "No");
    assert_eq!(answers[1].prompt, "<image>\nIs this an MRI?");
    assert_eq!(answers[2].model_id, "fake-7b");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&cfg.answers_path).unwrap().lines().nth(2).unwrap()).unwrap();
    for k in ["question_id", "prompt", "text", "answer_id", "model_id", "answer", "answer_type"] {
        assert!(line.get(k).is_some(), "missing {k}");
    }
    assert_eq!(line["question_id"], "q3");
    let stored = RunSummary::read_json(cfg.summary_path.as_ref().unwrap()).unwrap();
    assert_eq!(stored, s);
}

#[test]
fn resumes_after_a_crash_without_repeating_work() {
    let (dir, bench) = setup("runner-resume");
    let cfg = config(&dir);
    let mut fake = Fake { calls: 0, fail_at: Some(2), seen: vec![] };
    let err = run_eval(&mut fake, &bench, &cfg, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("GPU fell over"));
    assert_eq!(read_answers(&cfg.answers_path).unwrap().len(), 2);

    // A crash mid-write leaves half a line; it is dropped and redone.
    let mut text = std::fs::read_to_string(&cfg.answers_path).unwrap();
    text.push_str(r#"{"question_id": "q3", "prompt": "#);
    std::fs::write(&cfg.answers_path, text).unwrap();

    let mut fake = Fake { calls: 0, fail_at: None, seen: vec![] };
    let mut first = None;
    let s = run_eval(&mut fake, &bench, &cfg, &mut |p| {
        first.get_or_insert(p);
    })
    .unwrap();
    assert_eq!(fake.seen, ["q3", "4", "5"]);
    assert_eq!(first.unwrap(), Progress { done: 2, total: 5, resumed: 2 });
    check_scores(&s);

    // Everything answered: nothing is asked again.
    let mut fake = Fake { calls: 0, fail_at: None, seen: vec![] };
    run_eval(&mut fake, &bench, &cfg, &mut |_| {}).unwrap();
    assert_eq!(fake.calls, 0);

    // A shorter run over the same file scores only its own items.
    let short = RunConfig { limit: Some(2), ..cfg.clone() };
    let s = run_eval(&mut fake, &bench, &short, &mut |_| {}).unwrap();
    assert_eq!((s.counts.items, s.counts.answered), (2, 2));
    assert_eq!(s.metric("closed/accuracy").unwrap().value, 0.5);

    // Another model may not append to this file.
    let other = RunConfig { model_id: "other".into(), ..cfg.clone() };
    let e = run_eval(&mut fake, &bench, &other, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("fake-7b"), "{e}");
}

#[test]
fn wrong_answer_count_is_an_error() {
    struct Short;
    impl Answerer for Short {
        fn answer_batch(&mut self, _: &[VqaItem]) -> Result<Vec<String>> {
            Ok(vec!["yes".into()])
        }
    }
    let (dir, bench) = setup("runner-short");
    let e = run_eval(&mut Short, &bench, &config(&dir), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("1 answers for a batch of 2"), "{e}");
}
