//! Report-generation readers (the seed's inference output and atomic-fact files) and lexical
//! scores.

mod common;

use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::report::{read_report_predictions, score_reports, AtomicFacts};

#[test]
fn seed_outputs_and_facts_are_matched_by_id_or_gold() {
    let dir = common::test_dir("reports");
    let gen = dir.join("mimic_inference.jsonl");
    std::fs::write(
        &gen,
        concat!(
            r#"{"id": 501, "gold_caption": "No effusion. Heart normal.", "caption_generated": "No effusion. Heart normal.", "answer_id": "x", "model_id": "m", "metadata": {}}"#, "\n",
            r#"{"gold_caption": "A rash on the arm.", "caption_generated": "A rash.", "answer_id": "y", "model_id": "m", "metadata": {}}"#, "\n",
        ),
    )
    .unwrap();
    let facts = dir.join("processed_gpt4_responses.json");
    std::fs::write(
        &facts,
        r#"[{"id": 501, "gold_report": "No effusion. Heart normal.", "atomic_facts": ["1. No effusion.", "2. Heart normal."]},
            {"id": "images/1.jpg", "gold_report": "A rash on the arm.", "atomic_facts": ["1. Rash on arm."]}]"#,
    )
    .unwrap();
    let mut preds = read_report_predictions(&gen).unwrap();
    assert_eq!(preds[0].id, "501");
    assert_eq!(preds[1].id, "line-2");
    assert_eq!(AtomicFacts::read(&facts).unwrap().attach(&mut preds), 2);
    assert_eq!(preds[1].atomic_facts, ["1. Rash on arm."]);

    let s = score_reports(&preds, None, &BootstrapConfig { rounds: 100, ..Default::default() });
    let m = |k: &str| s.metrics.iter().find(|m| m.key == k).map(|m| m.value);
    assert_eq!(s.items[0].rouge_l, 1.0);
    assert!(m("report/bleu4").unwrap() > 0.0);
    assert!(m("report/nli_completeness").is_none());

    std::fs::write(&gen, "{\"id\": 1, \"caption_generated\": \"x\"}\n").unwrap();
    let e = read_report_predictions(&gen).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("gold_caption"), "{e}");
}
