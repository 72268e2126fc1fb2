//! Scoring answer files against the real VQA-RAD test set, and leaderboards with
//! significance against a baseline.

mod common;

use medpo_eval::answers::read_answers;
use medpo_eval::bench::{AnswerType, QuestionId, VqaBenchmark};
use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::leaderboard::{compare_runs, leaderboards};
use medpo_eval::protocol::Protocol;
use medpo_eval::score::score_run;

use common::answers;

fn cfg() -> BootstrapConfig {
    BootstrapConfig { rounds: 300, ..Default::default() }
}

#[test]
fn perfect_and_always_yes_models_on_vqa_rad() {
    let bench = VqaBenchmark::load("vqa-rad", &common::vqa_dir()).unwrap();
    let perfect = score_run(&bench, &answers(&bench, "oracle", |it| format!("{}.", it.answer)), "oracle", &cfg()).unwrap();
    assert_eq!(perfect.metric("closed/accuracy").unwrap().value, 1.0);
    assert_eq!(perfect.metric("open/recall").unwrap().value, 1.0);
    assert_eq!(perfect.metric("open/exact_match").unwrap().value, 1.0);

    let yes = score_run(&bench, &answers(&bench, "yes-man", |_| "Yes".into()), "yes-man", &cfg()).unwrap();
    // 118 of the 272 closed golds are "yes" (any case).
    let acc = yes.metric("closed/accuracy").unwrap();
    assert!((acc.value - 118.0 / 272.0).abs() < 1e-12);
    assert_eq!(acc.n, 272);
    assert!(acc.ci_low < acc.value && acc.value < acc.ci_high);
    assert!(acc.ci_high - acc.ci_low < 0.15);

    let c = compare_runs(&perfect, &yes, &cfg(), Protocol::Medpo).unwrap();
    let m = c.closed_mcnemar.unwrap();
    assert_eq!((m.a_only, m.b_only), (154, 0));
    assert!(m.p_exact < 1e-10);
    assert!(c.overall.p_value < 0.01 && c.overall.ci_low > 0.0);

    let boards = leaderboards(&[yes.clone(), perfect.clone()], Some("yes-man"), &cfg(), Protocol::Medpo).unwrap();
    assert_eq!(boards.len(), 1);
    assert_eq!(boards[0].order, [1, 0]);
    assert!(boards[0].comparisons[0].is_some() && boards[0].comparisons[1].is_none());
}

#[test]
fn seed_answer_file_missing_and_unknown_answers() {
    let dir = common::test_dir("score-seed");
    let bench = VqaBenchmark::load("vqa-rad", &common::vqa_dir()).unwrap();
    // Two lines as the seed's model_vqa.py writes them (shortuuid answer ids, metadata).
    let path = dir.join("answers.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"question_id": 10, "prompt": "<image>\nIs there evidence of an aortic aneurysm?", "text": "Yes, there is.", "answer_id": "LrZ8pmT3", "model_id": "llava-med-v1.5", "answer": "yes", "answer_type": "CLOSED", "metadata": {}}"#, "\n",
            r#"{"question_id": 19, "prompt": "<image>\nHow is the patient oriented?", "text": "The image is posterior-anterior.", "answer_id": "9xk2", "model_id": "llava-med-v1.5", "answer": "Posterior-Anterior", "answer_type": "OPEN", "metadata": {}}"#, "\n",
        ),
    )
    .unwrap();
    let a = read_answers(&path).unwrap();
    let s = score_run(&bench, &a, "llava-med-v1.5", &cfg()).unwrap();
    assert_eq!((s.counts.answered, s.counts.missing), (2, 449));
    let item = s.items.iter().find(|i| i.question_id == QuestionId::Int(19)).unwrap();
    assert_eq!((item.answer_type, item.recall), (AnswerType::Open, Some(1.0)));

    let mut bad = a.clone();
    bad[0].question_id = QuestionId::Int(999_999);
    let e = score_run(&bench, &bad, "m", &cfg()).unwrap_err().to_string();
    assert!(e.contains("999999") && e.contains("wrong --bench"), "{e}");
}
