//! The OpenAI-compatible NLI judge against a local HTTP server started by the test.

use std::net::TcpListener;
use std::sync::mpsc;

use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::nli::{JudgeConfig, NliJudge, NliLabel, OpenAiJudge};
use medpo_eval::report::{score_reports, ReportPrediction};
use medpo_remote::testing;

/// Serves `replies` (status, body) to successive connections; sends each request (head and
/// body) back on the channel.
fn serve(replies: Vec<(u16, String)>) -> (String, mpsc::Receiver<(String, String)>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let url = testing::serve(move |r| {
        let _ = tx.lock().unwrap().send((r.head.clone(), r.body.clone()));
        replies.get(r.index).map(|(status, body)| testing::json_response(*status, body))
    });
    (url, rx)
}

fn chat_reply(content: &str) -> String {
    serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]}).to_string()
}

/// No retries: the fake server answers a fixed script, one response per connection, so a
/// retried 500 would meet the next item's answer.
fn config(url: String) -> JudgeConfig {
    JudgeConfig { url, model: "judge-model".into(), api_key: Some("sk-test".into()), timeout_s: 10, max_tokens: 1024, retries: 0 }
}

#[test]
fn judge_sends_the_request_and_reads_lower_case_labels() {
    let (url, rx) = serve(vec![(
        200,
        chat_reply(r#"["Entailment", "partial entailment", "Contradiction", "neutral"]"#),
    )]);
    let mut judge = OpenAiJudge::new(config(url));
    let facts: Vec<String> = ["1. No effusion.", "2. Heart size normal.", "3. No pneumothorax.", "4. Clips."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let labels = judge.judge("The lungs are clear. Small pneumothorax.", &facts).unwrap();
    use NliLabel::*;
    assert_eq!(labels, [Entailment, PartialEntailment, Contradiction, Neutral]);
    let (head, body) = rx.recv().unwrap();
    assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
    assert!(head.to_ascii_lowercase().contains("authorization: bearer sk-test"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["model"], "judge-model");
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["messages"][0]["content"], "You are a helpful assistant.");
    assert!(body["messages"][1]["content"].as_str().unwrap().contains("Heart size normal"));
}

#[test]
fn report_scores_with_judge_and_failures() {
    let (url, _rx) = serve(vec![
        (200, chat_reply(r#"["Entailment", "partial entailment", "Contradiction", "neutral"]"#)),
        (200, chat_reply(r#"["Entailment"]"#)), // wrong length: 1 label for 2 facts
        (500, r#"{"error": "overloaded"}"#.into()),
    ]);
    let mut judge = OpenAiJudge::new(config(url));
    let facts = |n: usize| (0..n).map(|i| format!("{}. fact", i + 1)).collect::<Vec<_>>();
    let preds = vec![
        ReportPrediction { id: "1".into(), gold: "the heart is normal".into(), generated: "the heart is normal".into(), atomic_facts: facts(4) },
        ReportPrediction { id: "2".into(), gold: "no effusion".into(), generated: "effusion".into(), atomic_facts: facts(2) },
        ReportPrediction { id: "3".into(), gold: "clear lungs".into(), generated: "clear lungs".into(), atomic_facts: facts(1) },
    ];
    let s = score_reports(&preds, Some(&mut judge), &BootstrapConfig { rounds: 50, ..Default::default() });
    assert_eq!(s.judge_failures, 2);
    let err = s.items[2].judge_error.as_deref().unwrap();
    assert!(err.contains("HTTP 500") && err.contains("overloaded"), "{err}");
    assert!(s.items[1].judge_error.as_deref().unwrap().contains("1 labels for 2 facts"));
    let m = |k: &str| s.metrics.iter().find(|m| m.key == k).unwrap().value;
    // Only item 1 is scored: completeness (1 + 0.5)/4, hallucination 1/4.
    assert_eq!(m("report/nli_completeness"), 0.375);
    assert_eq!(m("report/nli_hallucination"), 0.25);
    assert_eq!(s.items[0].rouge_l, 1.0);
    assert!(m("report/bleu4") >= 0.0);
}

#[test]
fn unreachable_judge_is_an_error_naming_the_url() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut judge = OpenAiJudge::new(config(format!("http://{addr}/v1/chat/completions")));
    let e = judge.judge("x", &["1. y".into()]).unwrap_err().to_string();
    assert!(e.contains(&addr.to_string()), "{e}");
}
