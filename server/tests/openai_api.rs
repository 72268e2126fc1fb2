//! The OpenAI-compatible API through the real router and the tiny fixture models: keys and
//! roles, the model list, whole and streamed completions with an image (PNG and DICOM), usage,
//! logprobs, stop strings, the rate limit, the call log, and every bad input refused in
//! OpenAI's error shape with nothing stored and the server still serving.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use medpo_server::api::openai::{key_hash, new_key};
use common::{config, register_fixture, shared};
use medpo_server::{router, AppState};
use medpo_types::Role;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Env {
    app: axum::Router,
    store: medpo_store::Store,
    key: String,
    key_id: i64,
    _dir: tempfile::TempDir,
}

const MODEL: &str = "llava-med-tiny";

async fn env(role: Role, rate: u32) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), |s| {
        s.max_upload_mb = Some(1);
        s.api_rate_limit = Some(rate);
    });
    let store = medpo_server::open_store(&config).await.unwrap();
    for (name, layout) in [(MODEL, "llava_mistral"), ("huatuogpt-vision-tiny", "llava_qwen2")] {
        register_fixture(&store, name, layout).await;
    }
    let user = store.create_user("script", "unused", role).await.unwrap();
    let (key, prefix, hash) = new_key();
    let k = store.create_api_key(user.id, "test", &prefix, &hash).await.unwrap();
    Env { app: router(AppState::new(config, store.clone())), store, key, key_id: k.id, _dir: dir }
}

async fn send(e: &Env, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = e.app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, axum::body::to_bytes(res.into_body(), 50 << 20).await.unwrap().to_vec())
}

async fn chat_raw(e: &Env, content_type: &str, body: Vec<u8>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", content_type)
        .header("authorization", format!("Bearer {}", e.key))
        .body(Body::from(body))
        .unwrap();
    send(e, req).await
}

async fn chat(e: &Env, body: &Value) -> (StatusCode, Value) {
    let (s, _, b) = chat_raw(e, "application/json", body.to_string().into_bytes()).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn scan_png() -> Vec<u8> {
    std::fs::read(shared().join("fixtures/v1/scan.png")).unwrap()
}

fn ask(image_url: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Is there a nodule in the left lung?"},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]}],
        "max_tokens": 12,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// An OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "{body}");
    let err = &body["error"];
    assert!(err["message"].as_str().unwrap().contains(needle), "{body}");
    assert!(err["type"].is_string() && err.get("param").is_some() && err.get("code").is_some(), "{body}");
}

fn image_tokens() -> usize {
    let cfg = medpo_models::ModelConfig::from_dir(&shared().join("fixtures/v1").join(MODEL), &Default::default()).unwrap();
    cfg.num_image_tokens()
}

#[tokio::test]
async fn keys_roles_and_the_model_list() {
    let e = env(Role::Researcher, 100).await;
    let get = |auth: Option<String>| {
        let mut r = Request::get("/v1/models");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Body::empty()).unwrap()
    };
    let (s, _, b) = send(&e, get(None)).await;
    assert_error(s, &serde_json::from_slice(&b).unwrap(), StatusCode::UNAUTHORIZED, "Authorization: Bearer");
    let (s, _, b) = send(&e, get(Some("Bearer mpo_0000".into()))).await;
    assert_error(s, &serde_json::from_slice(&b).unwrap(), StatusCode::UNAUTHORIZED, "unknown or has been revoked");
    let (s, _, b) = send(&e, get(Some(format!("Bearer {}", e.key)))).await;
    assert_eq!(s, StatusCode::OK);
    let list: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&MODEL), "{list}");
    let m = &list["data"][0];
    assert!(m["object"] == "model" && m["owned_by"].is_string() && m["base"] == "fixture" && m["objective"] == "sft", "{m}");
    // The key is stored hashed, and its use is recorded.
    let (k, _) = e.store.active_api_key(&key_hash(&e.key)).await.unwrap().unwrap();
    assert!(k.last_used_at.is_some());
    assert!(!k.prefix.is_empty() && e.key.starts_with(&k.prefix));
    // Revoked: refused from then on.
    e.store.revoke_api_key(e.key_id, Some(k.user_id)).await.unwrap();
    let (s, _, _) = send(&e, get(Some(format!("Bearer {}", e.key)))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let viewer = env(Role::Viewer, 100).await;
    let (s, _, b) = send(&viewer, get(Some(format!("Bearer {}", viewer.key)))).await;
    assert_error(s, &serde_json::from_slice(&b).unwrap(), StatusCode::FORBIDDEN, "viewer");
}

/// Splits a server-sent event stream into its `data:` payloads.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn completions_with_an_image_whole_and_streamed() {
    let e = env(Role::Clinician, 100).await;
    let url = data_url("image/png", &scan_png());
    let (s, whole) = chat(&e, &ask(&url, json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], MODEL);
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let text = choice["message"]["content"].as_str().unwrap().to_string();
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let usage = &whole["usage"];
    let (p, c) = (usage["prompt_tokens"].as_u64().unwrap() as usize, usage["completion_tokens"].as_u64().unwrap() as usize);
    assert!(p > image_tokens(), "the prompt counts the image's {} tokens: {usage}", image_tokens());
    assert!((1..=12).contains(&c), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap() as usize, p + c);

    // Streamed with the same (greedy) settings: the same text, chunk by chunk.
    let (s, headers, body) =
        chat_raw(&e, "application/json", ask(&url, json!({"stream": true, "stream_options": {"include_usage": true}})).to_string().into_bytes())
            .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String =
        chunks.iter().filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str())).collect();
    assert_eq!(streamed, text);
    let finish = chunks.iter().filter_map(|c| c["choices"].get(0).and_then(|ch| ch["finish_reason"].as_str())).collect::<Vec<_>>();
    assert_eq!(finish, [choice["finish_reason"].as_str().unwrap()]);
    assert_eq!(chunks.last().unwrap()["usage"], *usage, "the usage chunk comes last");

    // DICOM through the same de-identification and windowing as uploads.
    let dcm = std::fs::read(shared().join("data/dicom/CT_small.dcm")).unwrap();
    let (s, body) = chat(&e, &ask(&data_url("application/dicom", &dcm), json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // Every call is logged with its key, model and tokens.
    let calls = e.store.api_calls_of(e.key_id, 10).await.unwrap();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.status == 200 && c.model.as_deref() == Some(MODEL) && c.completion_tokens.unwrap() >= 1));
    assert_eq!(calls[2].prompt_tokens, Some(p as i64));
    // Nothing of the request is kept: no scan, no comparison.
    assert!(e.store.recent_scans(10).await.unwrap().is_empty());
    assert_eq!(e.store.overview().await.unwrap().comparisons, 0);
}

#[tokio::test]
async fn logprobs_and_stop_strings() {
    let e = env(Role::Researcher, 100).await;
    let url = data_url("image/png", &scan_png());
    let (s, body) = chat(&e, &ask(&url, json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 16}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let content = body["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len() as u64, body["usage"]["completion_tokens"].as_u64().unwrap());
    for t in content {
        let lp = t["logprob"].as_f64().unwrap();
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let tops: Vec<f64> = top.iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
        assert!(tops.windows(2).all(|w| w[0] >= w[1]) && tops[0] <= 0.0, "{tops:?}");
        // Greedy decoding picks the most likely token.
        assert!((lp - tops[0]).abs() < 1e-5, "chosen {lp} vs best {}", tops[0]);
    }
    let (_, plain) = chat(&e, &ask(&url, json!({"max_tokens": 16}))).await;
    assert!(plain["choices"][0]["logprobs"].is_null());

    // A stop string cuts the answer before it (never sent), finish_reason "stop".
    let full = plain["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let chars: Vec<char> = full.chars().collect();
    let at = (2..chars.len().saturating_sub(1))
        .find(|&i| !chars[i].is_whitespace() && !chars[i + 1].is_whitespace())
        .unwrap_or_else(|| panic!("the fixture's answer has no two adjacent letters past the start: {full:?}"));
    let stop: String = chars[at..at + 2].iter().collect();
    let want = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let body = ask(&url, json!({"max_tokens": 16, "stop": [stop.clone()], "stream": stream}));
        let (s, _, raw) = chat_raw(&e, "application/json", body.to_string().into_bytes()).await;
        assert_eq!(s, StatusCode::OK);
        let (text, finish) = if stream {
            let chunks: Vec<Value> = sse_data(&raw).iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
            let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
            let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_string)).unwrap();
            (text, finish)
        } else {
            let v: Value = serde_json::from_slice(&raw).unwrap();
            (v["choices"][0]["message"]["content"].as_str().unwrap().to_string(), v["choices"][0]["finish_reason"].as_str().unwrap().to_string())
        };
        assert_eq!(text, want, "stream {stream}, stop {stop:?}");
        assert_eq!(finish, "stop");
    }
}

#[tokio::test]
async fn bad_inputs_are_refused_in_openai_shape_and_nothing_is_stored() {
    let e = env(Role::Clinician, 1000).await;
    let png = scan_png();
    let mut jpeg = Vec::new();
    image::load_from_memory(&png).unwrap().write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    // A PNG whose header claims 100000 × 100000 pixels (a decompression bomb).
    let mut bomb = png[..33].to_vec();
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    bomb.extend_from_slice(&png[33..]);

    let (s, _, b) = chat_raw(&e, "application/json", b"{\"model\": ".to_vec()).await;
    assert_error(s, &serde_json::from_slice(&b).unwrap(), StatusCode::BAD_REQUEST, "not a valid chat completion request");
    let (s, _, b) = chat_raw(&e, "text/plain", ask("x", json!({})).to_string().into_bytes()).await;
    assert_error(s, &serde_json::from_slice(&b).unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
    let (s, b) = chat(&e, &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "gpt-4o");
    assert_eq!(b["error"]["code"], "model_not_found");
    let (s, b) = chat(&e, &ask(&data_url("image/png", &jpeg), json!({}))).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "says `image/png` but the bytes are JPEG");
    let (s, b) = chat(&e, &ask(&data_url("image/png", &png[..png.len() / 2]), json!({}))).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "could not be used");
    let (s, b) = chat(&e, &ask(&data_url("image/png", &bomb), json!({}))).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "100000");
    let (s, b) = chat(&e, &ask("https://example.org/cxr.png", json!({}))).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "fetches nothing");
    let (s, b) = chat(&e, &ask(&data_url("image/webp", &png), json!({}))).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "image/webp");
    let url = data_url("image/png", &png);
    let two = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]});
    let (s, b) = chat(&e, &two).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "too many images");
    // Over-long: rejected with the token count, never truncated (inside the image or not).
    let long = "Describe every finding in the left lung. ".repeat(600);
    let (s, b) = chat(&e, &json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": long}, {"type": "image_url", "image_url": {"url": url}}]}]}))
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "never truncated");
    assert_eq!(b["error"]["code"], "context_length_exceeded");
    // Larger than the server's body limit (1 MB here).
    let huge = data_url("image/png", &vec![0u8; 2 << 20]);
    let (s, b) = chat(&e, &ask(&huge, json!({}))).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "limit");
    let (s, b) = chat(&e, &ask(&url, json!({"temperature": -1}))).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "temperature");
    assert_eq!(b["error"]["param"], "temperature");

    // Nothing stored, failures logged, and the server still answers.
    assert!(e.store.recent_scans(10).await.unwrap().is_empty());
    assert_eq!(e.store.overview().await.unwrap().comparisons, 0);
    let calls = e.store.api_calls_of(e.key_id, 50).await.unwrap();
    assert!(calls.iter().all(|c| c.status >= 400 && c.error.is_some()), "{calls:?}");
    let (s, b) = chat(&e, &ask(&url, json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn each_key_is_rate_limited() {
    let e = env(Role::Researcher, 2).await;
    let req = || Request::get("/v1/models").header("authorization", format!("Bearer {}", e.key)).body(Body::empty()).unwrap();
    assert_eq!(send(&e, req()).await.0, StatusCode::OK);
    assert_eq!(send(&e, req()).await.0, StatusCode::OK);
    let (s, headers, b) = send(&e, req()).await;
    let body: Value = serde_json::from_slice(&b).unwrap();
    assert_error(s, &body, StatusCode::TOO_MANY_REQUESTS, "2 requests per minute");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
}

/// CRC-32 (PNG chunks).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}
