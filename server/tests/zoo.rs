//! The committed phantom model zoo as the server's default models: the models folder
//! `zoo/` is registered with each model's card and lineage (the shared vision tower folder is
//! not a model), and through the OpenAI-compatible API the SFT model and its DPO variant answer
//! phantom chest X-ray questions sensibly (the modality right, yes/no to closed questions,
//! answers from the phantoms' vocabulary) and not identically.

mod common;

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use common::config;
use medpo_server::api::openai::new_key;
use medpo_server::{router, AppState};
use medpo_types::Role;
use serde_json::{json, Value};
use tower::ServiceExt;

fn zoo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../zoo")
}

#[tokio::test]
async fn the_zoo_is_registered_and_answers_phantom_questions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |s| s.models_dir = Some(zoo()));
    let store = medpo_server::open_store(&cfg).await.unwrap();
    let added = medpo_server::discover::register_models_dir(&store, &zoo()).await;
    let mut expected = medpo_cli::zoo::model_folders();
    expected.sort();
    let mut names = added.clone();
    names.sort();
    assert_eq!(names, expected, "registered");
    assert!(!added.iter().any(|n| n == "phantom-clip"), "the tower folder is not a model");
    let models = store.list_models().await.unwrap();
    let sft = models.iter().find(|m| m.name == "phantom-sft").expect("phantom-sft");
    assert_eq!((sft.variant.as_str(), sft.parent_id), ("sft", None));
    for name in expected.iter().filter(|n| *n != "phantom-sft") {
        let m = models.iter().find(|m| &m.name == name).unwrap_or_else(|| panic!("{name}"));
        let v = name.strip_prefix("phantom-").unwrap();
        assert_eq!(m.variant, v);
        assert_eq!(m.parent_id, Some(sft.id), "{v}: parent");
        assert!(m.card.contains("Not for clinical use") && m.card.contains("phantom"), "{v}: card {}", m.card);
    }
    // Registering again adds nothing.
    assert!(medpo_server::discover::register_models_dir(&store, &zoo()).await.is_empty());

    // Phantom chest X-rays the zoo never saw (another seed), with their questions.
    let ph = dir.path().join("phantoms");
    let pcfg = medpo_phantom::Config { seed: 7, scans: 40, ..Default::default() };
    medpo_phantom::write::write_benchmark(&ph, &pcfg, &mut |_, _| {}).unwrap();
    let cases = medpo_phantom::generate(&pcfg).unwrap();
    let xrays: Vec<_> = cases.iter().filter(|c| c.modality == medpo_phantom::Modality::Xray).take(4).collect();
    assert!(!xrays.is_empty());

    let user = store.create_user("script", "unused", Role::Researcher).await.unwrap();
    let (key, prefix, hash) = new_key();
    store.create_api_key(user.id, "test", &prefix, &hash).await.unwrap();
    let app = router(AppState::new(cfg, store.clone()));
    let ask = |model: &str, png: &[u8], q: &str| {
        let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png));
        let body = json!({
            "model": model,
            "temperature": 0.0,
            "max_tokens": 48,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": q},
                {"type": "image_url", "image_url": {"url": url}},
            ]}],
        });
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    // Every word the phantom texts use (answers and reports).
    let mut vocabulary = std::collections::HashSet::new();
    for c in &cases {
        for it in medpo_phantom::text::vqa_items(c) {
            vocabulary.extend(it.answer.split_whitespace().map(str::to_lowercase));
        }
        let report = medpo_phantom::text::report(c);
        vocabulary.extend(report.split_whitespace().map(|s| s.trim_end_matches(['.', ',']).to_lowercase()));
    }
    let mut differ = 0;
    let mut asked = 0;
    for case in &xrays {
        let png = std::fs::read(ph.join("images").join(case.image_name())).unwrap();
        for it in medpo_phantom::text::vqa_items(case) {
            let mut answers = Vec::new();
            for model in ["phantom-sft", "phantom-dpo"] {
                let res = app.clone().oneshot(ask(model, &png, &it.question)).await.unwrap();
                let status = res.status();
                let body: Value = serde_json::from_slice(&axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap()).unwrap();
                assert_eq!(status, StatusCode::OK, "{body}");
                let text = body["choices"][0]["message"]["content"].as_str().unwrap().trim().to_lowercase();
                assert!(!text.is_empty(), "{model}: empty answer to {:?}", it.question);
                for w in text.split_whitespace() {
                    let w = w.trim_end_matches(['.', ',']);
                    assert!(vocabulary.contains(w), "{model}: {w:?} in {text:?} (question {:?}) is not phantom vocabulary", it.question);
                }
                if it.closed {
                    assert!(text == "yes" || text == "no", "{model}: {text:?} to the closed question {:?}", it.question);
                }
                if it.question.starts_with("What imaging modality") {
                    assert_eq!(text, "x-ray", "{model} on a chest X-ray");
                }
                answers.push(text);
            }
            asked += 1;
            differ += usize::from(answers[0] != answers[1]);
        }
    }
    assert!(asked >= 20, "{asked} questions");
    assert!(differ >= 1, "phantom-sft and phantom-dpo gave the same answer to all {asked} questions");
}
