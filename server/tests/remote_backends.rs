//! Remote OpenAI-compatible backends in Compare and the arena. A second MedPO server (the same
//! router, serving the fixture models on its own loopback port, with its own API key) is the
//! remote of the first: its model is registered from `[[remote]]`, answers stream through
//! into the first server's comparison, and the blind arena draws it. Remotes that break off
//! mid-answer, send garbage or never answer fail their own column only; the local column
//! finishes and the comparison is stored once.

use std::net::TcpListener;
use std::time::{Duration, Instant};

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use medpo_remote::{testing, RemoteConfig};
use common::{register_fixture, shared};
use medpo_server::{router, AppState};
use medpo_types::{CompareEvent, Role};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

struct Server {
    state: AppState,
    store: medpo_store::Store,
    _dir: tempfile::TempDir,
}

async fn server(remotes: Vec<RemoteConfig>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), |_| {});
    config.remotes = remotes;
    let store = medpo_server::open_store(&config).await.unwrap();
    let remotes = config.remotes.clone();
    medpo_server::remote::register_remotes(&store, &remotes).await;
    Server { state: AppState::new(config, store.clone()), store, _dir: dir }
}

async fn register_local(s: &Server, name: &str, layout: &str) -> i64 {
    register_fixture(&s.store, name, layout).await
}

/// Serves a router on a free loopback port; returns its base URL.
async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A second MedPO server serving the fixture `llava-med-tiny`, with a researcher's API key put
/// in a fresh environment variable; returns the server and the variable's name.
async fn peer_with_key() -> (Server, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let remote = server(vec![]).await;
    register_local(&remote, "llava-med-tiny", "llava_mistral").await;
    let owner = remote.store.create_user("service", "unused", Role::Researcher).await.unwrap();
    let (key, prefix, hash) = medpo_server::api::openai::new_key();
    remote.store.create_api_key(owner.id, "front", &prefix, &hash).await.unwrap();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let var = format!("MEDPO_TEST_REMOTE_KEY_{}_{n}", std::process::id());
    std::env::set_var(&var, &key);
    (remote, var)
}

/// A signed-in clinician's cookie on `s`.
async fn clinician(s: &Server) -> String {
    let user = s.store.create_user("rad", "unused", Role::Clinician).await.unwrap();
    let token = "r".repeat(64);
    s.store.create_session(&hex::encode(Sha256::digest(token.as_bytes())), user.id, "c", 3_600_000).await.unwrap();
    format!("medpo_session={token}")
}

async fn upload_scan(app: &axum::Router, cookie: &str) -> i64 {
    let png = std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap();
    let mut body = b"--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.png\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
    body.extend_from_slice(&png);
    body.extend_from_slice(b"\r\n--XB--\r\n");
    let req = Request::post("/api/scans")
        .header("content-type", "multipart/form-data; boundary=XB")
        .header("cookie", cookie)
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap()).unwrap();
    v["scan"]["id"].as_i64().unwrap()
}

async fn compare(app: &axum::Router, cookie: &str, body: serde_json::Value) -> Vec<CompareEvent> {
    let req = Request::post("/api/compare")
        .header("content-type", "application/json")
        .header("cookie", cookie)
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), 10 << 20).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn column_text(events: &[CompareEvent], col: usize) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            CompareEvent::Token { column, text } if *column == col => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn column_error(events: &[CompareEvent], col: usize) -> Option<String> {
    events.iter().find_map(|e| match e {
        CompareEvent::Error { column, message } if *column == col => Some(message.clone()),
        _ => None,
    })
}

fn done(events: &[CompareEvent], col: usize) -> bool {
    events.iter().any(|e| matches!(e, CompareEvent::Done { column, .. } if *column == col))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_medpo_server_serves_arena_models() {
    // The remote: a MedPO server with the fixture model and an API key.
    let (remote, var) = peer_with_key().await;
    let key = std::env::var(&var).unwrap();
    let remote_url = listen(router(remote.state.clone())).await;

    let mut cfg = RemoteConfig::new("peer", &format!("{remote_url}/v1"), vec!["llava-med-tiny".into()]);
    cfg.api_key_env = Some(var);
    let front = server(vec![cfg]).await;
    let local = register_local(&front, "huatuogpt-vision-tiny", "llava_qwen2").await;
    let models = front.store.list_models().await.unwrap();
    let peer = models.iter().find(|m| m.name == "peer/llava-med-tiny").expect("the remote model is registered");
    assert_eq!(peer.layout, "remote");
    let app = router(front.state.clone());
    let cookie = clinician(&front).await;
    let scan = upload_scan(&app, &cookie).await;

    let events = compare(
        &app,
        &cookie,
        serde_json::json!({"scan_id": scan, "question": "Is there a nodule?", "model_ids": [local, peer.id],
            "settings": {"max_new_tokens": 8, "temperature": 0.0, "repetition_penalty": 1.0}}),
    )
    .await;
    assert!(done(&events, 0) && done(&events, 1), "{events:?}");
    let through_front = column_text(&events, 1);
    assert!(!through_front.trim().is_empty(), "{events:?}");
    // The same question asked of the remote directly gives the same answer.
    let png = std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap();
    let url = format!("data:image/png;base64,{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png));
    let direct: serde_json::Value = tokio::task::spawn_blocking(move || {
        ureq::post(&format!("{remote_url}/v1/chat/completions"))
            .set("Authorization", &format!("Bearer {key}"))
            .send_json(serde_json::json!({"model": "llava-med-tiny", "max_tokens": 8, "temperature": 0.0, "seed": 0,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Is there a nodule?"},
                    {"type": "image_url", "image_url": {"url": url}}]}]}))
            .unwrap()
            .into_json()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(through_front.trim(), direct["choices"][0]["message"]["content"].as_str().unwrap().trim());
    let CompareEvent::Saved { comparison_id, .. } = events.last().unwrap() else { panic!("{events:?}") };
    let c = front.store.comparison(*comparison_id).await.unwrap();
    assert!(c.answers.iter().all(|a| a.error.is_none()));

    // The blind arena draws from local and remote models alike (here the only two).
    let events = compare(
        &app,
        &cookie,
        serde_json::json!({"scan_id": scan, "question": "Blind?", "blind": true, "settings": {"max_new_tokens": 4}}),
    )
    .await;
    assert!(matches!(events.last(), Some(CompareEvent::Saved { .. })), "{events:?}");
    assert!(done(&events, 0) && done(&events, 1));
    // The remote's own call log shows the front's two calls.
    let (owner, _) = remote.store.user_with_hash("service").await.unwrap().unwrap();
    let remote_calls = remote.store.api_keys_of(owner.id).await.unwrap()[0].last_used_at;
    assert!(remote_calls.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_garbled_and_silent_remotes_fail_their_column_only() {
    // Dies after two pieces of its answer (no [DONE]: the server went away mid-answer).
    let dying = testing::serve(|_| Some(testing::stream(&["The lung", "s are"], false)));
    // Answers 200 with something that is not an OpenAI stream.
    let garbled = testing::serve(|_| Some(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html>502</html>".to_vec()));
    // Accepts and never answers.
    let silent = testing::serve(|_| None);
    let mk = |name: &str, url: &str| {
        let mut c = RemoteConfig::new(name, url, vec!["m".into()]);
        c.timeout_s = 1;
        c.retries = 0;
        c
    };
    let front = server(vec![mk("dying", &dying), mk("garbled", &garbled), mk("silent", &silent)]).await;
    let local = register_local(&front, "llava-med-tiny", "llava_mistral").await;
    let id = |name: &str| {
        let store = front.store.clone();
        let name = name.to_string();
        async move { store.list_models().await.unwrap().into_iter().find(|m| m.name == name).unwrap().id }
    };
    let ids = [local, id("dying/m").await, id("garbled/m").await, id("silent/m").await];
    let app = router(front.state.clone());
    let cookie = clinician(&front).await;
    let scan = upload_scan(&app, &cookie).await;

    let started = Instant::now();
    let events = compare(
        &app,
        &cookie,
        serde_json::json!({"scan_id": scan, "question": "Is there a nodule?", "model_ids": ids, "settings": {"max_new_tokens": 8}}),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "the silent remote is cut off by its timeout");
    assert!(done(&events, 0) && column_error(&events, 0).is_none(), "the local column finishes: {events:?}");
    assert_eq!(column_text(&events, 1), "The lungs are", "what arrived before the break is shown");
    let broke = column_error(&events, 1).unwrap();
    assert!(broke.contains("`dying`") && broke.contains("[DONE]"), "{broke}");
    assert!(column_error(&events, 2).unwrap().contains("not an OpenAI chat completion"), "{events:?}");
    assert!(column_error(&events, 3).unwrap().contains("`silent` did not answer"), "{events:?}");
    let CompareEvent::Saved { comparison_id, answer_ids } = events.last().unwrap() else { panic!("{events:?}") };
    assert_eq!(answer_ids.len(), 4);
    let c = front.store.comparison(*comparison_id).await.unwrap();
    assert!(c.answers[0].error.is_none() && c.answers[1..].iter().all(|a| a.error.is_some()));
    assert_eq!(front.store.overview().await.unwrap().comparisons, 1, "stored once");

    // Blind, the failing columns name nothing.
    let events = compare(
        &app,
        &cookie,
        serde_json::json!({"scan_id": scan, "question": "Blind?", "blind": true, "model_ids": [ids[0], ids[2]],
            "settings": {"max_new_tokens": 4}}),
    )
    .await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("garbled") && text.contains("\"type\":\"error\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_keeps_failing_is_marked_unavailable() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = RemoteConfig::new("gone", &format!("http://127.0.0.1:{port}/v1"), vec!["m".into()]);
    cfg.retries = 1;
    cfg.breaker_failures = 2;
    let front = server(vec![cfg]).await;
    let local = register_local(&front, "llava-med-tiny", "llava_mistral").await;
    let gone = front.store.list_models().await.unwrap().into_iter().find(|m| m.name == "gone/m").unwrap().id;
    let app = router(front.state.clone());
    let cookie = clinician(&front).await;
    let scan = upload_scan(&app, &cookie).await;
    let ask = || serde_json::json!({"scan_id": scan, "question": "q", "model_ids": [local, gone], "settings": {"max_new_tokens": 2}});
    for _ in 0..2 {
        let events = compare(&app, &cookie, ask()).await;
        assert!(column_error(&events, 1).unwrap().contains("`gone` did not answer"), "{events:?}");
    }
    let events = compare(&app, &cookie, ask()).await;
    let e = column_error(&events, 1).unwrap();
    assert!(e.contains("`gone` is unavailable after 2 failed requests"), "{e}");
    assert!(done(&events, 0));
}

/// An admin adds a remote on the Models page (the `add_remote` server function): it is checked,
/// stored, its model registered, and the next comparison streams from it. Others may not add
/// remotes; a remote whose key variable is unset is refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_remote_on_the_models_page() {
    let (remote, var) = peer_with_key().await;
    let remote_url = listen(router(remote.state.clone())).await;

    let front = server(vec![]).await;
    let local = register_local(&front, "huatuogpt-vision-tiny", "llava_qwen2").await;
    let app = router(front.state.clone());
    let session = |name: &'static str, role: Role, token: char| {
        let store = front.store.clone();
        async move {
            let u = store.create_user(name, "unused", role).await.unwrap();
            let t = token.to_string().repeat(64);
            store.create_session(&hex::encode(Sha256::digest(t.as_bytes())), u.id, "c", 3_600_000).await.unwrap();
            format!("medpo_session={t}")
        }
    };
    let admin = session("boss", Role::Admin, 'a').await;
    let researcher = session("res", Role::Researcher, 'b').await;
    let add = |cookie: String, form: String| {
        let app = app.clone();
        async move {
            let req = Request::post("/api/add_remote")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", cookie)
                .body(Body::from(form))
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            (status, String::from_utf8_lossy(&axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap()).into_owned())
        }
    };
    let enc = |s: &str| s.replace(':', "%3A").replace('/', "%2F");
    let form = |name: &str, key_var: &str| {
        format!("name={name}&base_url={}&api_key_env={key_var}&models=llava-med-tiny&timeout_s=30&max_concurrency=2", enc(&format!("{remote_url}/v1")))
    };

    let (st, body) = add(researcher, form("peer", &var)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("only admins"), "{body}");
    let (st, body) = add(admin.clone(), form("broken", "MEDPO_TEST_SURELY_UNSET_VAR")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("MEDPO_TEST_SURELY_UNSET_VAR"), "{body}");
    assert!(front.store.list_remotes().await.unwrap().is_empty(), "a refused remote is not stored");
    let (st, body) = add(admin.clone(), form("peer", &var)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body.contains("peer/llava-med-tiny"), "{body}");
    assert_eq!(front.store.list_remotes().await.unwrap()[0].api_key_env.as_deref(), Some(var.as_str()));

    let peer = front.store.list_models().await.unwrap().into_iter().find(|m| m.name == "peer/llava-med-tiny").unwrap();
    let cookie = clinician(&front).await;
    let scan = upload_scan(&app, &cookie).await;
    let events = compare(
        &app,
        &cookie,
        serde_json::json!({"scan_id": scan, "question": "Is there a nodule?", "model_ids": [local, peer.id], "settings": {"max_new_tokens": 6}}),
    )
    .await;
    assert!(done(&events, 0) && done(&events, 1) && column_error(&events, 1).is_none(), "{events:?}");
    assert!(!column_text(&events, 1).trim().is_empty());
}

/// Serves `app` on a loopback port with every connection in a task set owned by the returned
/// handle: aborting the handle kills the server, listener and open connections at once (as
/// `kill -9` would), mid-answer if an answer is being sent. Each body chunk it sends is held
/// back `per_chunk`, so an answer takes long enough to be cut.
async fn killable(app: axum::Router, per_chunk: Duration) -> (String, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    let app = app.layer(axum::middleware::map_response(move |res: axum::response::Response| async move {
        let (parts, body) = res.into_parts();
        let slow = body.into_data_stream().then(move |chunk| async move {
            tokio::time::sleep(per_chunk).await;
            chunk
        });
        axum::response::Response::from_parts(parts, Body::from_stream(slow))
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else { break };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            connections.spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), handle)
}

/// The second MedPO server is killed while its answer is streaming through the first: that
/// column shows an error, the local column finishes, and the comparison is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_server_killed_mid_answer_fails_its_column_only() {
    use futures::StreamExt;
    let (remote, var) = peer_with_key().await;
    let (remote_url, remote_handle) = killable(router(remote.state.clone()), Duration::from_millis(150)).await;
    let mut cfg = RemoteConfig::new("peer", &format!("{remote_url}/v1"), vec!["llava-med-tiny".into()]);
    cfg.api_key_env = Some(var);
    cfg.retries = 0;
    let front = server(vec![cfg]).await;
    let local = register_local(&front, "huatuogpt-vision-tiny", "llava_qwen2").await;
    let peer = front.store.list_models().await.unwrap().into_iter().find(|m| m.name == "peer/llava-med-tiny").unwrap().id;
    let app = router(front.state.clone());
    let cookie = clinician(&front).await;
    let scan = upload_scan(&app, &cookie).await;

    let body = serde_json::json!({"scan_id": scan, "question": "Is there a nodule?", "model_ids": [local, peer],
        "settings": {"max_new_tokens": 24, "temperature": 0.0, "repetition_penalty": 1.0}});
    let req = Request::post("/api/compare")
        .header("content-type", "application/json")
        .header("cookie", &cookie)
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.into_body().into_data_stream();
    let mut buf = String::new();
    let mut events: Vec<CompareEvent> = Vec::new();
    let mut killed = false;
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            events.push(serde_json::from_str(line.trim()).unwrap());
            if !killed && matches!(events.last(), Some(CompareEvent::Token { column: 1, .. })) {
                // The remote's first token is through: kill it.
                remote_handle.abort();
                killed = true;
            }
        }
    }
    assert!(killed, "the remote never streamed a token: {events:?}");
    assert!(done(&events, 0) && column_error(&events, 0).is_none(), "the local column finishes: {events:?}");
    let err = column_error(&events, 1).expect("the killed remote's column fails");
    assert!(err.contains("`peer`"), "{err}");
    assert!(!done(&events, 1), "{events:?}");
    let CompareEvent::Saved { comparison_id, .. } = events.last().unwrap() else { panic!("{events:?}") };
    let c = front.store.comparison(*comparison_id).await.unwrap();
    assert!(c.answers[0].error.is_none() && c.answers[1].error.is_some());
    assert_eq!(front.store.overview().await.unwrap().comparisons, 1, "stored once");
}
