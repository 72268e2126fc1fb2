//! The workbench endpoints through the real router and the tiny fixture models: upload
//! (stored once, refusals store nothing), a streamed comparison where one model's checkpoint
//! is broken (its column fails, the other answers, the comparison is stored), the image a
//! model saw, and a vote through `/api/vote`.

use std::path::PathBuf;

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{multipart, shared};
use medpo_server::{router, AppState};
use medpo_types::{CompareEvent, Role};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

struct Env {
    app: axum::Router,
    store: medpo_store::Store,
    cookie: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

async fn env(role: Role) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), |s| s.max_upload_mb = Some(1));
    let store = medpo_server::open_store(&config).await.unwrap();
    let user = store.create_user("rad", "unused", role).await.unwrap();
    let token = "t".repeat(64);
    store.create_session(&hex::encode(Sha256::digest(token.as_bytes())), user.id, "c", 3_600_000).await.unwrap();
    let data = config.data_dir.clone();
    Env { app: router(AppState::new(config, store.clone())), store, cookie: format!("medpo_session={token}"), data, _dir: dir }
}

async fn send(e: &Env, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = e.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    (status, axum::body::to_bytes(res.into_body(), 50 << 20).await.unwrap().to_vec())
}

/// A signed-in JSON POST.
async fn post_json(e: &Env, path: &str, body: &serde_json::Value) -> (StatusCode, Vec<u8>) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("cookie", &e.cookie)
        .body(Body::from(body.to_string()))
        .unwrap();
    send(e, req).await
}

async fn upload(e: &Env, name: &str, bytes: &[u8]) -> (StatusCode, serde_json::Value) {
    let (ct, body) = multipart(name, bytes);
    let req = Request::post("/api/scans").header("content-type", ct).header("cookie", &e.cookie).body(Body::from(body)).unwrap();
    let (status, body) = send(e, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

async fn register(e: &Env, name: &str, path: PathBuf, layout: &str) -> i64 {
    common::register(&e.store, name, &path, layout).await
}

#[tokio::test]
async fn uploads_are_content_addressed_and_refusals_store_nothing() {
    let e = env(Role::Clinician).await;
    let png = std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap();
    let (s1, first) = upload(&e, "scan.png", &png).await;
    assert_eq!(s1, StatusCode::CREATED, "{first}");
    let (s2, second) = upload(&e, "again.png", &png).await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(second["existing"], true);
    assert_eq!(first["scan"]["id"], second["scan"]["id"]);
    let sha = first["scan"]["sha256"].as_str().unwrap();
    assert!(e.data.join("scans").join(&sha[..2]).join(format!("{sha}.png")).is_file());
    // Served to a signed-in user only.
    let url = first["url"].as_str().unwrap().to_string();
    let (st, body) = send(&e, Request::get(&url).header("cookie", &e.cookie).body(Body::empty()).unwrap()).await;
    assert_eq!((st, &body[..4]), (StatusCode::OK, &b"\x89PNG"[..]));
    let (st, _) = send(&e, Request::get(&url).body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let (st, err) = upload(&e, "broken.png", &png[..png.len() / 3]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"].as_str().unwrap().starts_with("broken.png:"), "{err}");
    let (st, err) = upload(&e, "notes.txt", b"just some text").await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{err}");
    let (st, err) = upload(&e, "huge.png", &vec![0u8; (1 << 20) + 10]).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(e.store.recent_scans(10).await.unwrap().len(), 1);
    let files = walk(&e.data.join("scans"));
    assert_eq!(files.len(), 1, "{files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .flat_map(|f| if f.path().is_dir() { walk(&f.path()) } else { vec![f.path()] })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn viewers_cannot_upload() {
    let e = env(Role::Viewer).await;
    let png = std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap();
    let (st, err) = upload(&e, "scan.png", &png).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{err}");
}

#[tokio::test]
async fn a_broken_model_fails_in_its_column_while_the_other_answers() {
    let e = env(Role::Clinician).await;
    let fixtures = shared().join("fixtures/v1");
    let good = register(&e, "llava-med-tiny", fixtures.join("llava-med-tiny"), "llava_mistral").await;
    // A copy of HuatuoGPT-Vision-tiny whose weights file is cut short.
    let broken_dir = e.data.join("broken-huatuo");
    std::fs::create_dir_all(&broken_dir).unwrap();
    for f in std::fs::read_dir(fixtures.join("huatuogpt-vision-tiny")).unwrap().flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), broken_dir.join(f.file_name())).unwrap();
        }
    }
    std::os::unix::fs::symlink(fixtures.join("huatuogpt-vision-tiny/vit"), broken_dir.join("vit")).unwrap();
    let w = broken_dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let broken = register(&e, "huatuo-broken", broken_dir, "llava_qwen2").await;

    let png = std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap();
    let (_, up) = upload(&e, "scan.png", &png).await;
    let scan_id = up["scan"]["id"].as_i64().unwrap();
    let req = serde_json::json!({ "scan_id": scan_id, "question": "What is shown?", "model_ids": [good, broken],
        "settings": { "max_new_tokens": 8 } });
    let (st, body) = post_json(&e, "/api/compare", &req).await;
    assert_eq!(st, StatusCode::OK);
    let events: Vec<CompareEvent> =
        String::from_utf8(body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let CompareEvent::Start { blind: false, columns } = &events[0] else { panic!("{events:?}") };
    assert_eq!(columns[0].model_name.as_deref(), Some("llava-med-tiny"));
    let tokens: String = events
        .iter()
        .filter_map(|ev| match ev {
            CompareEvent::Token { column: 0, text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(events.iter().any(|ev| matches!(ev, CompareEvent::Done { column: 0, tokens: 1..=8, .. })), "{events:?}");
    let err = events
        .iter()
        .find_map(|ev| match ev {
            CompareEvent::Error { column: 1, message } => Some(message.clone()),
            _ => None,
        })
        .expect("column 1 fails");
    assert!(err.contains("huatuo-broken"), "{err}");
    let CompareEvent::Saved { comparison_id, answer_ids } = events.last().unwrap() else { panic!("{events:?}") };
    assert_eq!(answer_ids.len(), 2);
    let c = e.store.comparison(*comparison_id).await.unwrap();
    assert_eq!(c.answers[0].text, tokens.trim());
    assert!(c.answers[0].error.is_none() && c.answers[1].error.is_some());

    // A vote on a failed answer is refused; the image the model saw is its 336x336... crop.
    let vote = serde_json::json!({ "vote": { "comparison_id": comparison_id, "a_position": 0, "b_position": 1, "winner": "a" } });
    let (st, body) = post_json(&e, "/api/vote", &vote).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("failed answer"));
    let (st, seen) = send(
        &e,
        Request::get(format!("/api/scans/{scan_id}/seen/{good}")).header("cookie", &e.cookie).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let img = image::load_from_memory(&seen).unwrap();
    assert_eq!(img.width(), img.height());

    // Blind, the failing column says nothing that names the model or its files.
    let req = serde_json::json!({ "scan_id": scan_id, "question": "Blind?", "model_ids": [good, broken], "blind": true,
        "settings": { "max_new_tokens": 4 } });
    let (st, body) = post_json(&e, "/api/compare", &req).await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("huatuo") && !text.contains("llava") && !text.contains("safetensors"), "{text}");
    assert!(text.contains("\"type\":\"error\""), "{text}");
    e.store.comparison(2).await.unwrap();

    // Fewer than two models, or an unknown one, is refused before anything runs.
    for ids in [serde_json::json!([good]), serde_json::json!([good, 999])] {
        let req = serde_json::json!({ "scan_id": scan_id, "question": "q", "model_ids": ids });
        let (st, _) = post_json(&e, "/api/compare", &req).await;
        assert!(st.is_client_error(), "{st}");
    }
    assert_eq!(e.store.overview().await.unwrap().comparisons, 2);
}
