//! Snapshot downloads and uploads through the router: TRL JSONL and the LLaVA zip (seed JSON,
//! JSONL, scans), who may download, the zip uploaded back as a new version holding exactly its
//! pairs (images decoded and stored, regions kept), and refusals that name the line and store
//! nothing.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{multipart, shared};
use medpo_server::{router, AppState};
use medpo_store::datasets::ImportedPair;
use medpo_types::{Region, Role};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

struct Env {
    app: axum::Router,
    store: medpo_store::Store,
    _dir: tempfile::TempDir,
}

async fn session(store: &medpo_store::Store, name: &str, role: Role) -> String {
    let user = store.create_user(name, "unused", role).await.unwrap();
    let token = format!("{name:x<64}");
    store.create_session(&hex::encode(Sha256::digest(token.as_bytes())), user.id, "c", 3_600_000).await.unwrap();
    format!("medpo_session={token}")
}

async fn send(e: &Env, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = e.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    (status, axum::body::to_bytes(res.into_body(), 50 << 20).await.unwrap().to_vec())
}

async fn get(e: &Env, uri: &str, cookie: &str) -> (StatusCode, Vec<u8>) {
    send(e, Request::get(uri).header("cookie", cookie).body(Body::empty()).unwrap()).await
}

async fn upload(e: &Env, dataset: i64, name: &str, bytes: &[u8], cookie: &str) -> (StatusCode, serde_json::Value) {
    let (ct, body) = multipart(name, bytes);
    let req = Request::post(format!("/api/datasets/{dataset}/upload")).header("content-type", ct).header("cookie", cookie).body(Body::from(body)).unwrap();
    let (status, body) = send(e, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn snapshots_download_and_upload_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), |_| {});
    let store = medpo_server::open_store(&config).await.unwrap();
    let researcher = session(&store, "res", Role::Researcher).await;
    let viewer = session(&store, "view", Role::Viewer).await;
    let e = Env { app: router(AppState::new(config.clone(), store.clone())), store: store.clone(), _dir: dir };

    // A scan uploaded as the workbench does, and three pairs on it (one with a region).
    let png = std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap();
    let (ct, body) = multipart("scan.png", &png);
    let req = Request::post("/api/scans").header("content-type", ct).header("cookie", &researcher).body(Body::from(body)).unwrap();
    let (status, body) = send(&e, req).await;
    assert_eq!(status, StatusCode::CREATED);
    let scan_id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["scan"]["id"].as_i64().unwrap();
    for (i, q) in ["Is there a nodule?", "Is the heart enlarged?", "Which side?"].iter().enumerate() {
        let region = (i == 0).then_some(Region { x: 2.0, y: 3.0, w: 10.0, h: 8.0 });
        let p = ImportedPair { scan_id: Some(scan_id), question: q.to_string(), chosen: "Yes.".into(), rejected: "No.".into(), region };
        e.store.import_pair(&p).await.unwrap();
    }
    let d = e.store.create_dataset("votes", "", None).await.unwrap();
    let snap = e.store.snapshot_dataset(d.id, "", None).await.unwrap();

    // TRL JSONL: researchers only.
    let uri = format!("/api/snapshots/{}/pairs.jsonl", snap.id);
    assert_eq!(get(&e, &uri, "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&e, &uri, &viewer).await.0, StatusCode::FORBIDDEN);
    let (status, body) = get(&e, &uri, &researcher).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<serde_json::Value> = String::from_utf8(body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["prompt"].as_str().unwrap().starts_with("<image>"));
    assert_eq!(lines[0]["roi"], serde_json::json!([2, 3, 12, 11]));
    assert!(lines[1].get("roi").is_none());
    assert_eq!(get(&e, "/api/snapshots/999/pairs.jsonl", &researcher).await.0, StatusCode::NOT_FOUND);

    // The LLaVA zip: seed JSON, JSONL, README and the scan.
    let (status, zip_bytes) = get(&e, &format!("/api/snapshots/{}/llava.zip", snap.id), &researcher).await;
    assert_eq!(status, StatusCode::OK);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.clone())).unwrap();
    let names: Vec<String> = (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().to_string()).collect();
    assert!(names.contains(&"dataset.json".to_string()) && names.contains(&"dataset.jsonl".to_string()), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("scans/") && n.ends_with(".png")), "{names:?}");
    let seed: serde_json::Value = serde_json::from_reader(zip.by_name("dataset.json").unwrap()).unwrap();
    assert_eq!(seed.as_array().unwrap().len(), 3);
    assert!(seed[0]["conversations"].is_array() && seed[0]["rejected_conversations"].is_array(), "{}", seed[0]);

    // Uploaded back into another dataset: exactly its pairs, the scan found again, the region kept.
    let d2 = e.store.create_dataset("round-trip", "", None).await.unwrap();
    let (status, body) = upload(&e, d2.id, "votes-v1.zip", &zip_bytes, &researcher).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["pair_count"].as_i64(), body["origin"].as_str()), (Some(3), Some("upload")));
    let details = e.store.snapshot_details(body["id"].as_i64().unwrap()).await.unwrap();
    assert!(details.iter().all(|p| p.pair.scan_id == Some(scan_id)), "the same image is the same scan");
    assert_eq!(details[0].pair.region, Some(Region { x: 2.0, y: 3.0, w: 10.0, h: 8.0 }));
    assert_eq!(details[0].pair.question, "Is there a nodule?");

    // Refusals name the line and store nothing.
    let pairs_before = e.store.preference_pairs(1000).await.unwrap().len();
    let bad = "{\"prompt\": \"q1\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"q2\", \"chosen\": \"\", \"rejected\": \"b\"}\n";
    let (status, body) = upload(&e, d2.id, "bad.jsonl", bad.as_bytes(), &researcher).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("bad.jsonl, line 2") && msg.contains("empty chosen"), "{msg}");
    let with_image = "{\"prompt\": \"<image>\\nq\", \"chosen\": \"a\", \"rejected\": \"b\", \"images\": [\"x.png\"]}\n";
    let (status, body) = upload(&e, d2.id, "img.jsonl", with_image.as_bytes(), &researcher).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap().contains(".zip"), "{body}");
    let (status, body) = upload(&e, d2.id, "notes.txt", b"hello", &researcher).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(upload(&e, d2.id, "x.jsonl", bad.as_bytes(), &viewer).await.0, StatusCode::FORBIDDEN);
    assert_eq!(e.store.preference_pairs(1000).await.unwrap().len(), pairs_before, "refused uploads store nothing");
    let versions = e.store.list_datasets().await.unwrap().into_iter().find(|d| d.id == d2.id).unwrap().snapshots.len();
    assert_eq!(versions, 1);

    let audit: Vec<String> = e.store.audit_log(10).await.unwrap().into_iter().map(|a| format!("{}:{}", a.action, a.username)).collect();
    assert!(audit.contains(&"upload:res".to_string()) && audit.contains(&"export:res".to_string()), "{audit:?}");
}
